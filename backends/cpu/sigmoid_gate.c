/* CPU sigmoid_gate (ela.h "Model ops"): x[m, h, :] *= sigmoid(g[m, h * stride + offset]).
 * Bound: memory. */
#include <math.h>

#include "backend.h"

#define GATE_PAR_ELEMS (1 << 15)

ela_status cpu_sigmoid_gate(void *ctx, const ela_sigmoid_gate_args *a) {
    const cpu_backend *cpu = ctx;
    int threads = a->M * a->H * a->d < GATE_PAR_ELEMS ? 1 : cpu->threads;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t m = 0; m < a->M; m++) {
        const float *g = (const float *)(const void *)cpu_tensor_row(a->g, m);
        for (int h = 0; h < a->H; h++) {
            float gate = 1.0f / (1.0f + expf(-g[(int64_t)h * a->stride + a->offset]));
            float *x = (float *)(void *)(cpu_tensor_data(a->x) + m * a->x->strides[0] +
                                         h * a->x->strides[1]);
            for (int64_t i = 0; i < a->d; i++)
                x[i] *= gate;
        }
    }
    return ELA_OK;
}

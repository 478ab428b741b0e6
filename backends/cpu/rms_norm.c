/* CPU rms_norm (ela.h "Model ops"): y = x / sqrt(mean(x^2) + eps) * w per row of the last dim,
 * f32 math as in HF's LlamaRMSNorm. w is converted to f32 once per call; rows run in parallel
 * when there are enough of them. Bound: memory (one read of x, one write of y). */
#include <math.h>

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define RMS_PAR_ELEMS (1 << 16) /* fewer elements than this: one thread */

ela_status cpu_rms_norm(void *ctx, const ela_rms_norm_args *a) {
    const cpu_backend *cpu = ctx;
    int64_t D = a->D;
    float *w = ela_aligned_alloc((size_t)D * sizeof(float));
    if (!w)
        return ela_fail(ELA_ERR_OOM, "cpu: rms_norm: out of memory for %lld weights", (long long)D);
    (void)ela_convert(cpu_tensor_data(a->w), a->w->dtype, w, ELA_F32, D);
    int threads = a->rows * D < RMS_PAR_ELEMS ? 1 : cpu->threads;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < a->rows; r++) {
        const float *x = (const float *)(const void *)cpu_tensor_row(a->x, r);
        float *y = (float *)(void *)cpu_tensor_row(a->y, r);
        float acc[16] = {0};
        int64_t i = 0;
        for (; i + 16 <= D; i += 16)
            for (int j = 0; j < 16; j++)
                acc[j] += x[i + j] * x[i + j];
        for (; i < D; i++)
            acc[0] += x[i] * x[i];
        float ss = 0.0f;
        for (int j = 0; j < 16; j++)
            ss += acc[j];
        float scale = 1.0f / sqrtf(ss / (float)D + a->eps);
        for (i = 0; i < D; i++)
            y[i] = x[i] * scale * w[i];
    }
    ela_aligned_free(w);
    return ELA_OK;
}

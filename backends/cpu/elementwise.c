/* CPU silu_mul and add (ela.h "Model ops"): out = silu(gate) * up, out = a + b, over rows of the
 * last dim (any rank and strides; out may be an input). Parallel over rows when large.
 * Bound: memory, and expf for silu. */
#include <math.h>

#include "backend.h"

#define EW_PAR_ELEMS (1 << 15)

static ela_status binary(const cpu_backend *cpu, const ela_binary_args *a, int silu) {
    const ela_tensor *t = a->a;
    int64_t inner = t->extents[t->n_dims - 1];
    int64_t rows = a->numel / inner;
    int threads = a->numel < EW_PAR_ELEMS ? 1 : cpu->threads;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = (const float *)(const void *)cpu_tensor_row(a->a, r);
        const float *y = (const float *)(const void *)cpu_tensor_row(a->b, r);
        float *o = (float *)(void *)cpu_tensor_row(a->out, r);
        if (silu)
            for (int64_t i = 0; i < inner; i++)
                o[i] = x[i] / (1.0f + expf(-x[i])) * y[i];
        else
            for (int64_t i = 0; i < inner; i++)
                o[i] = x[i] + y[i];
    }
    return ELA_OK;
}

ela_status cpu_silu_mul(void *ctx, const ela_binary_args *a) { return binary(ctx, a, 1); }
ela_status cpu_add(void *ctx, const ela_binary_args *a) { return binary(ctx, a, 0); }

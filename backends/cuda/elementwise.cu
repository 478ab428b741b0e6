/* CUDA silu_mul and add (ela.h "Model ops"): out = silu(gate) * up = gate / (1 + exp(-gate)) *
 * up, and out = a + b, f32 tensors of equal extents, any rank and strides (innermost packed);
 * out may be an input. The same expressions as the CPU backend (backends/cpu/elementwise.c).
 * Tiling: grid y walks the rows (outer dims decomposed once per block), grid x and the threads
 * the packed innermost dim, one element per thread per pass, so each warp reads 128 contiguous
 * bytes of each input and writes 128 of the output. Bound: memory (12 bytes per element). */
#include "cuda_check.h"
#include "model_ops_device.cuh"

#define EW_THREADS 256

typedef struct {
    const char *a, *b;
    char *o;
    mo_rows ra, rb, ro;
    int64_t rows, inner;
    int silu;
} ew_params;

__global__ void __launch_bounds__(EW_THREADS) elementwise_kernel(const ew_params p) {
    for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
        const float *a = (const float *)(p.a + mo_row_offset(p.ra, r));
        const float *b = (const float *)(p.b + mo_row_offset(p.rb, r));
        float *o = (float *)(p.o + mo_row_offset(p.ro, r));
        for (int64_t i = (int64_t)blockIdx.x * EW_THREADS + threadIdx.x; i < p.inner;
             i += (int64_t)gridDim.x * EW_THREADS) {
            const float x = a[i], y = b[i];
            o[i] = p.silu ? x / (1.0f + expf(-x)) * y : x + y;
        }
    }
}

static ela_status binary(cuda_ctx *ctx, const ela_binary_args *args, int silu) {
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    ew_params p;
    p.a = cuda_tensor_ptr(args->a);
    p.b = cuda_tensor_ptr(args->b);
    p.o = cuda_tensor_ptr(args->out);
    p.rows = mo_rows_of(args->a, &p.ra);
    mo_rows_of(args->b, &p.rb);
    mo_rows_of(args->out, &p.ro);
    p.inner = args->a->extents[args->a->n_dims - 1];
    p.silu = silu;
    int64_t gx = (p.inner + EW_THREADS - 1) / EW_THREADS;
    gx = gx > 4096 ? 4096 : gx;
    const int64_t gy = p.rows > 65535 ? 65535 : p.rows;
    ctx->generation++;
    elementwise_kernel<<<dim3((unsigned)gx, (unsigned)gy), EW_THREADS, 0, ctx->stream>>>(p);
    CUDA_LAUNCHED(silu ? "silu_mul kernel" : "add kernel");
    return ELA_OK;
}

extern "C" ela_status cuda_silu_mul(void *ctx, const ela_binary_args *a) {
    return binary((cuda_ctx *)ctx, a, 1);
}

extern "C" ela_status cuda_add(void *ctx, const ela_binary_args *a) {
    return binary((cuda_ctx *)ctx, a, 0);
}

/* CUDA rms_norm (ela.h "Model ops"): y = x / sqrt(mean(x^2) + eps) * w over the last dim of x
 * (any rank and strides, innermost packed; y may be x), w f32/f16/bf16, f32 math as the CPU
 * backend (backends/cpu/rms_norm.c) and HF's LlamaRMSNorm.
 * Tiling: rows of up to 1024 elements (per-head q_norm / k_norm, small hidden sizes) get one
 * warp each, 8 rows per block; longer rows one block of 8 warps, which add their sums of
 * squares through shared memory. Each thread reads its elements twice (sum, then scale) from
 * L1/L2 and writes them once, so in place is safe. Bound: memory, one read and one write of x. */
#include "cuda_check.h"
#include "model_ops_device.cuh"

#define RMS_THREADS 256
#define RMS_WARPS (RMS_THREADS / 32)

typedef struct {
    const char *x;
    char *y;
    const char *w;
    int wdt;
    mo_rows rx, ry;
    int64_t rows, D;
    float eps;
    int wpr; /* warps per row: 1 or RMS_WARPS */
} rms_params;

__global__ void __launch_bounds__(RMS_THREADS) rms_norm_kernel(const rms_params p) {
    __shared__ float red[RMS_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int rows_per_block = RMS_WARPS / p.wpr;
    const int64_t r = (int64_t)blockIdx.x * rows_per_block + warp / p.wpr;
    const int tid = (warp % p.wpr) * 32 + lane, nth = p.wpr * 32;
    const bool active = r < p.rows;
    const float *x = (const float *)(p.x + (active ? mo_row_offset(p.rx, r) : 0));
    float ss = 0.0f;
    if (active)
        for (int64_t i = tid; i < p.D; i += nth)
            ss += x[i] * x[i];
    ss = mo_warp_sum(ss);
    if (p.wpr > 1) { /* one row per block: all warps take part */
        if (lane == 0)
            red[warp] = ss;
        __syncthreads();
        ss = 0.0f;
        for (int i = 0; i < RMS_WARPS; i++)
            ss += red[i];
    }
    if (!active)
        return;
    const float scale = 1.0f / sqrtf(ss / (float)p.D + p.eps);
    float *y = (float *)(p.y + mo_row_offset(p.ry, r));
    for (int64_t i = tid; i < p.D; i += nth)
        y[i] = x[i] * scale * mo_load(p.w, p.wdt, i);
}

extern "C" ela_status cuda_rms_norm(void *vctx, const ela_rms_norm_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    rms_params p;
    p.x = cuda_tensor_ptr(a->x);
    p.y = cuda_tensor_ptr(a->y);
    p.w = cuda_tensor_ptr(a->w);
    p.wdt = (int)a->w->dtype;
    p.rows = mo_rows_of(a->x, &p.rx);
    mo_rows_of(a->y, &p.ry);
    p.D = a->D;
    p.eps = a->eps;
    p.wpr = p.D <= 1024 ? 1 : RMS_WARPS;
    const int64_t per_block = RMS_WARPS / p.wpr;
    const int64_t blocks = (p.rows + per_block - 1) / per_block;
    if (blocks > 0x7fffffff)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: rms_norm: %lld rows is too many",
                         (long long)p.rows);
    ctx->generation++;
    rms_norm_kernel<<<(unsigned)blocks, RMS_THREADS, 0, ctx->stream>>>(p);
    CUDA_LAUNCHED("rms_norm kernel");
    return ELA_OK;
}

/* CUDA rope (ela.h "Model ops"): rotary position embedding in place on x f32 [M, H, d], row m
 * at position pos[m]; pairs (i, i + n_rot/2) (HF rotate_half) or (2i, 2i + 1) (interleaved);
 * dims >= n_rot untouched. The frequencies come from the core in double (core/ops/rope_freqs.h,
 * the same for every backend) and are passed with the launch; each row's angles
 * pos * inv_freq and their cos/sin (times attn_scale) are computed in double on the device too
 * (positions reach 2^18 and beyond, where an f32 angle is off by 0.01 rad), rounded to f32,
 * and shared by the row's H heads.
 * Tiling: one block per row: its n_rot/2 cos/sin pairs into shared memory, then the block's
 * threads walk the H * n_rot/2 pairs. Bound: memory (x read and written once) plus n_rot/2
 * double-precision sincos per row. */
#include <math.h>
#include <string.h>

#include "cuda_check.h"
#include "model_ops_device.cuh"

#define ROPE_THREADS 256
#define ROPE_PARAM_FREQS 256 /* frequencies passed by value; more go through scratch */

typedef struct {
    char *x;
    const int32_t *pos;
    int64_t s0, s1; /* bytes */
    int64_t M;
    int H, half, interleaved;
    const double *inv_dev; /* [half] in device memory, or NULL: inv below */
    double inv[ROPE_PARAM_FREQS];
    double attn_scale;
} rope_params;

__global__ void __launch_bounds__(ROPE_THREADS) rope_kernel(const rope_params p) {
    extern __shared__ float cs[]; /* cos [half], then sin [half] */
    const int half = p.half;
    for (int64_t m = blockIdx.x; m < p.M; m += gridDim.x) {
        const double pm = (double)p.pos[m];
        for (int i = threadIdx.x; i < half; i += ROPE_THREADS) {
            double s, c;
            sincos(pm * (p.inv_dev ? p.inv_dev[i] : p.inv[i]), &s, &c);
            cs[i] = (float)(c * p.attn_scale);
            cs[half + i] = (float)(s * p.attn_scale);
        }
        __syncthreads();
        char *row = p.x + m * p.s0;
        const int64_t pairs = (int64_t)p.H * half;
        for (int64_t t = threadIdx.x; t < pairs; t += ROPE_THREADS) {
            const int h = (int)(t / half), i = (int)(t - (int64_t)h * half);
            float *v = (float *)(row + h * p.s1);
            const float c = cs[i], s = cs[half + i];
            const int i0 = p.interleaved ? 2 * i : i, i1 = p.interleaved ? 2 * i + 1 : i + half;
            const float x0 = v[i0], x1 = v[i1];
            v[i0] = x0 * c - x1 * s;
            v[i1] = x0 * s + x1 * c;
        }
        __syncthreads(); /* cs is rewritten for the next row */
    }
}

extern "C" ela_status cuda_rope(void *vctx, const ela_rope_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    rope_params p;
    memset(&p, 0, sizeof p);
    p.x = cuda_tensor_ptr(a->x);
    p.pos = (const int32_t *)cuda_tensor_ptr(a->pos);
    p.s0 = a->x->strides[0];
    p.s1 = a->x->strides[1];
    p.M = a->M;
    p.H = a->H;
    p.half = a->p.n_rot / 2;
    p.interleaved = a->p.interleaved;
    p.attn_scale = a->attn_scale;
    const size_t smem = (size_t)p.half * 2 * sizeof(float);
    if (smem > 48 * 1024)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: rope: n_rot %d is above 12288", a->p.n_rot);
    void *scratch = NULL;
    if (p.half <= ROPE_PARAM_FREQS) {
        memcpy(p.inv, a->inv_freq, (size_t)p.half * sizeof(double));
    } else {
        st = cuda_scratch_alloc(ctx, (size_t)p.half * sizeof(double), &scratch);
        if (st == ELA_OK) {
            /* From pageable memory: returns once the host array has been read. */
            cudaError_t err = cudaMemcpyAsync(scratch, a->inv_freq, (size_t)p.half * sizeof(double),
                                              cudaMemcpyHostToDevice, ctx->stream);
            if (err != cudaSuccess)
                st = cuda_fail_err(err, "cudaMemcpyAsync");
        }
        if (st != ELA_OK) {
            if (scratch)
                cuda_scratch_free(ctx, scratch);
            return st;
        }
        p.inv_dev = (const double *)scratch;
    }
    ctx->generation++;
    const int64_t blocks = p.M < 65535 * 16 ? p.M : 65535 * 16;
    rope_kernel<<<(unsigned)blocks, ROPE_THREADS, smem, ctx->stream>>>(p);
    cudaError_t err = cudaGetLastError();
    if (scratch)
        cuda_scratch_free(ctx, scratch);
    if (err != cudaSuccess)
        return cuda_fail_err(err, "rope kernel");
    return ELA_OK;
}

/* CUDA router_eval (op 4: DESIGN.md 4.4, PAPERS.md 1.3): Elastic Attention's router for one
 * layer. One block per KV head does it all in shared memory: boundary pooling of the pre-RoPE
 * keys (thread c owns channel c and adds rows [0, m) then [L - m, L) in the CPU backend's order,
 * m = min(100, L), divisor 2 m), then the Task MLP d -> h -> d and the Router MLP
 * d -> h -> d -> 2 (SiLU between, biases), each linear layer a warp per output row reading its
 * weight row coalesced (any float dtype and row stride per tensor) against the activation in
 * shared memory, f32 accumulation. The two logits per head come back to the host, which
 * decides full = logit 1 > logit 0 (a tie is sparse). Cost: ~200 d key reads and 4 h d + 2 d
 * weight reads per KV head (0.26 M at d = 128, h = 4d), a few microseconds; the call is
 * dominated by its one synchronising readback. */
#include <string.h>

#include "attn_dense_device.cuh"
#include "cuda_check.h"

#define RT_THREADS 256
#define POOL_ROWS 100

typedef struct {
    const char *w, *b;  /* weight [out, in] rows w_s0 bytes apart; bias [out] */
    int64_t w_s0;
    int tw, tb;
} rt_layer;

typedef struct {
    const char *k;
    int64_t k_s0, k_s1;
    int tk, L, d, hid;
    rt_layer layer[5]; /* task 1, task 2, route 1, route 2, route 3 */
    float *z;          /* [hkv][2] */
} rt_params;

/* y[o] = act(b[o] + sum_i W[o, i] x[i]), o < n_out: warp w takes rows w, w + 8, ... */
static __device__ void rt_linear(const rt_layer &ly, const float *x, float *y, int n_in,
                                 int n_out, bool act) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wes = attn_dtype_size(ly.tw), bes = attn_dtype_size(ly.tb);
    for (int o = warp; o < n_out; o += RT_THREADS / 32) {
        const char *row = ly.w + (int64_t)o * ly.w_s0;
        float acc = 0.0f;
        for (int i = lane; i < n_in; i += 32)
            acc += attn_load(row + (int64_t)i * wes, ly.tw) * x[i];
        acc = attn_warp_sum(acc) + attn_load(ly.b + (int64_t)o * bes, ly.tb);
        if (lane == 0)
            y[o] = act ? acc / (1.0f + expf(-acc)) : acc;
    }
    __syncthreads();
}

__global__ void __launch_bounds__(RT_THREADS) router_eval_kernel(const rt_params p) {
    extern __shared__ float rt_smem[];
    const int d = p.d, hid = p.hid, g = blockIdx.x;
    float *x = rt_smem, *h1 = x + d, *t = h1 + hid, *r1 = t + d, *r2 = r1 + hid;
    const int m = p.L < POOL_ROWS ? p.L : POOL_ROWS, kes = attn_dtype_size(p.tk);
    const char *kh = p.k + (int64_t)g * p.k_s0;
    for (int c = threadIdx.x; c < d; c += RT_THREADS) {
        float s = 0.0f;
        for (int part = 0; part < 2; part++) {
            const int64_t j0 = part ? p.L - m : 0;
            for (int64_t j = j0; j < j0 + m; j++)
                s += attn_load(kh + j * p.k_s1 + (int64_t)c * kes, p.tk);
        }
        x[c] = s * (1.0f / (float)(2 * m));
    }
    __syncthreads();
    rt_linear(p.layer[0], x, h1, d, hid, true);
    rt_linear(p.layer[1], h1, t, hid, d, false);
    rt_linear(p.layer[2], t, r1, d, hid, true);
    rt_linear(p.layer[3], r1, r2, hid, d, true);
    rt_linear(p.layer[4], r2, p.z + 2 * g, d, 2, false);
}

extern "C" ela_status cuda_router_eval(void *vctx, const ela_router_eval_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    if (a->L > INT32_MAX || a->d > INT32_MAX / 4 || a->hidden > INT32_MAX / 4 ||
        a->hkv > 65535)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: router_eval: sizes past 2^31 or more than "
                         "65535 KV heads");
    rt_params p;
    memset(&p, 0, sizeof p);
    p.k = cuda_tensor_ptr(a->k_pre);
    p.k_s0 = a->k_pre->strides[0];
    p.k_s1 = a->k_pre->strides[1];
    p.tk = (int)a->k_pre->dtype;
    p.L = (int)a->L, p.d = (int)a->d, p.hid = (int)a->hidden;
    const ela_tensor *w[5] = {a->w.task_w1, a->w.task_w2, a->w.route_w1, a->w.route_w2,
                              a->w.route_w3};
    const ela_tensor *b[5] = {a->w.task_b1, a->w.task_b2, a->w.route_b1, a->w.route_b2,
                              a->w.route_b3};
    for (int i = 0; i < 5; i++) {
        p.layer[i].w = cuda_tensor_ptr(w[i]);
        p.layer[i].w_s0 = w[i]->strides[0];
        p.layer[i].tw = (int)w[i]->dtype;
        p.layer[i].b = cuda_tensor_ptr(b[i]);
        p.layer[i].tb = (int)b[i]->dtype;
    }
    const size_t smem = (3 * (size_t)p.d + 2 * (size_t)p.hid) * sizeof(float);
    if (smem > ctx->props.sharedMemPerBlockOptin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: router_eval: d = %d and hidden width %d need "
                         "%zu bytes of shared memory, %s has %zu per block", p.d, p.hid, smem,
                         ctx->props.name, (size_t)ctx->props.sharedMemPerBlockOptin);
    float z_host[2 * 64];
    float *z = a->hkv <= 64 ? z_host : (float *)malloc((size_t)a->hkv * 2 * sizeof(float));
    if (!z)
        return cuda_fail(ELA_ERR_OOM, "cuda: router_eval: out of host memory");
    void *scratch = NULL;
    cudaError_t err = cudaSuccess;
    if ((st = cuda_scratch_alloc(ctx, (size_t)a->hkv * 2 * sizeof(float), &scratch)) != ELA_OK)
        goto done;
    p.z = (float *)scratch;
    if (smem > 48 * 1024 &&
        (err = cudaFuncSetAttribute(router_eval_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)smem)) != cudaSuccess) {
        st = cuda_fail_err(err, "cudaFuncSetAttribute");
        goto done;
    }
    router_eval_kernel<<<(unsigned)a->hkv, RT_THREADS, smem, ctx->stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess) {
        st = cuda_fail_err(err, "router_eval kernel");
        goto done;
    }
    if ((err = cudaMemcpyAsync(z, p.z, (size_t)a->hkv * 2 * sizeof(float), cudaMemcpyDeviceToHost,
                               ctx->stream)) != cudaSuccess) {
        st = cuda_fail_err(err, "router_eval readback");
        goto done;
    }
    if ((st = cuda_synchronize(ctx)) != ELA_OK)
        goto done;
    for (int g = 0; g < a->hkv; g++) {
        /* class 1 is FULL; a tie (argmax picks the first) is sparse */
        a->full[g] = z[2 * g + 1] > z[2 * g];
        if (a->logits) {
            a->logits[2 * g] = z[2 * g];
            a->logits[2 * g + 1] = z[2 * g + 1];
        }
    }
done:
    if (scratch)
        cuda_scratch_free(ctx, scratch);
    if (z != z_host)
        free(z);
    return st;
}

/* CUDA attn_gather (op 8: DESIGN.md 4.8): attention of each query over the keys an index list
 * names, shared by all heads ([m]) or one list per KV head ([Hkv, m]); LessIsMore's sparse
 * layers and any top-k decode. Any dtype mix, head dim and stride.
 *
 * Tiling: one block of 128 threads per (query row i, KV head g, split s of the list), holding
 * the G query heads of g: their q rows (pre-scaled into the exp2 domain) and f32 accumulators
 * in shared memory. The list goes by in tiles of 32 entries: all threads first copy the tile's
 * K and V rows to shared memory as f32 (every load of the tile in flight at once: the rows are
 * random, so a tile costs about one memory latency), then warp w scores entries w, w + 4, ...
 * (lanes split d, each K row used by all G heads, in chunks of 8 heads), a thread per head runs
 * the online softmax of its 32 scores (keys past the row's position masked when causal), and
 * thread c owns output column c and adds sum_j p_j v[key_j][c] for the G heads. Splits of the
 * list (two tiles or more each) are merged by LSE with attn_dense's merge kernel, so a decode
 * step over a few thousand listed keys spreads over the GPU.
 * Bound: the listed K and V rows, read once per query row: 2 d esize bytes per entry, random
 * rows of 256 bytes at d = 128 bf16 (latency-bound: a few memory latencies per block).
 * Measured (H100, bf16, d 128, Hq 32, Hkv 8, 2048 listed of 128K keys): 88 us with the merge
 * 9 us, against 180 us for dense decode over all keys: latency, not bandwidth, still rules. */
#include <string.h>

#include "attn_dense_device.cuh"
#include "attn_host.h"
#include "cuda_check.h"

#define GA_THREADS 128
#define GA_TILE 32
#define GA_HEADS 8 /* heads per register chunk */

typedef struct {
    cuda_attn_params a;
    const char *idx;    /* i32 lists */
    int64_t idx_s0;     /* bytes between two KV heads' lists; 0: one shared list */
    int64_t m;
} ga_params;

__global__ void __launch_bounds__(GA_THREADS) attn_gather_kernel(const ga_params gp) {
    extern __shared__ float ga_smem[];
    const cuda_attn_params &p = gp.a;
    const int G = p.G, d = p.d;
    float *sq = ga_smem, *sacc = sq + G * d, *sp = sacc + G * d;
    float *sm = sp + G * GA_TILE, *sl = sm + G, *salpha = sl + G;
    float *sk = salpha + G, *sv = sk + GA_TILE * d; /* the tile's K and V rows, f32 */
    int *skey = (int *)(sv + GA_TILE * d);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t i = blockIdx.x / p.hkv;
    const int g = blockIdx.x % p.hkv, s = blockIdx.y;
    const int64_t pos = p.q_pos0 + i;
    const int qes = attn_dtype_size(p.tq), kes = attn_dtype_size(p.tkv);
    const int *list = (const int *)(gp.idx + (int64_t)g * gp.idx_s0);
    const int64_t k0 = (int64_t)s * p.split_keys;
    const int64_t k1 = k0 + p.split_keys < gp.m ? k0 + p.split_keys : gp.m;
    const char *kg = p.k + (int64_t)g * p.k_s0, *vg = p.v + (int64_t)g * p.v_s0;

    for (int e = tid; e < G * d; e += GA_THREADS) {
        const int r = e / d, c = e % d;
        const char *qrow = p.q + i * p.q_s0 + (int64_t)(g * G + r) * p.q_s1;
        sq[e] = attn_load(qrow + (int64_t)c * qes, p.tq) * p.scale_log2;
        sacc[e] = 0.0f;
    }
    for (int r = tid; r < G; r += GA_THREADS) {
        sm[r] = -INFINITY;
        sl[r] = 0.0f;
    }
    for (int64_t j0 = k0; j0 < k1; j0 += GA_TILE) {
        const int nk = k1 - j0 < GA_TILE ? (int)(k1 - j0) : GA_TILE;
        __syncthreads(); /* the last tile's rows, sp and skey are consumed */
        if (tid < nk)
            skey[tid] = list[j0 + tid];
        __syncthreads();
        /* Every listed row of the tile at once: all loads in flight together (a random row per
         * key, so the tile costs about one memory latency, not one per key). */
        for (int e = tid; e < nk * d; e += GA_THREADS) {
            const int j = e / d, c = e % d;
            const int64_t key = skey[j];
            sk[e] = attn_load(kg + key * p.k_s1 + (int64_t)c * kes, p.tkv);
            sv[e] = attn_load(vg + key * p.v_s1 + (int64_t)c * kes, p.tkv);
        }
        __syncthreads();
        for (int jj = warp; jj < nk; jj += GA_THREADS / 32) {
            const bool hidden = skey[jj] > pos;
            for (int r0 = 0; r0 < G; r0 += GA_HEADS) {
                float part[GA_HEADS];
#pragma unroll
                for (int rr = 0; rr < GA_HEADS; rr++)
                    part[rr] = 0.0f;
                for (int c = lane; c < d; c += 32) {
                    const float kv = sk[jj * d + c];
#pragma unroll
                    for (int rr = 0; rr < GA_HEADS; rr++)
                        if (r0 + rr < G)
                            part[rr] += sq[(r0 + rr) * d + c] * kv;
                }
#pragma unroll
                for (int rr = 0; rr < GA_HEADS; rr++)
                    if (r0 + rr < G) { /* uniform over the warp */
                        const float v = attn_warp_sum(part[rr]);
                        if (lane == 0)
                            sp[(r0 + rr) * GA_TILE + jj] = hidden ? -INFINITY : v;
                    }
            }
        }
        __syncthreads();
        for (int r = tid; r < G; r += GA_THREADS) {
            float *pr = sp + r * GA_TILE;
            float mx = -INFINITY;
            for (int j = 0; j < nk; j++)
                mx = fmaxf(mx, pr[j]);
            const float m_old = sm[r], m_new = fmaxf(m_old, mx);
            const float m_use = m_new == -INFINITY ? 0.0f : m_new;
            const float alpha = exp2f(m_old - m_use);
            float sum = 0.0f;
            for (int j = 0; j < nk; j++) {
                pr[j] = exp2f(pr[j] - m_use);
                sum += pr[j];
            }
            sl[r] = sl[r] * alpha + sum;
            sm[r] = m_new;
            salpha[r] = alpha;
        }
        __syncthreads();
        for (int c = tid; c < d; c += GA_THREADS) {
            for (int r0 = 0; r0 < G; r0 += GA_HEADS) {
                float t[GA_HEADS];
#pragma unroll
                for (int rr = 0; rr < GA_HEADS; rr++)
                    t[rr] = 0.0f;
                for (int j = 0; j < nk; j++) {
                    const float vv = sv[j * d + c];
#pragma unroll
                    for (int rr = 0; rr < GA_HEADS; rr++)
                        if (r0 + rr < G)
                            t[rr] += sp[(r0 + rr) * GA_TILE + j] * vv;
                }
#pragma unroll
                for (int rr = 0; rr < GA_HEADS; rr++)
                    if (r0 + rr < G) {
                        float *acc = sacc + (r0 + rr) * d + c;
                        *acc = *acc * salpha[r0 + rr] + t[rr];
                    }
            }
        }
    }
    __syncthreads();
    const int oes = attn_dtype_size(p.to);
    for (int e = tid; e < G * d; e += GA_THREADS) {
        const int r = e / d, c = e % d, h = g * G + r;
        if (p.splits > 1) {
            const int64_t pr = attn_part_row(p, s, h, i);
            p.part_o[pr * d + c] = sacc[e];
            if (c == 0) {
                p.part_ml[pr * 2] = sm[r];
                p.part_ml[pr * 2 + 1] = sl[r];
            }
            continue;
        }
        const float l = sl[r], inv = l > 0.0f ? 1.0f / l : 0.0f;
        attn_store(p.o + i * p.o_s0 + (int64_t)h * p.o_s1 + (int64_t)c * oes, p.to, sacc[e] * inv);
        if (p.lse && c == 0)
            *(float *)(p.lse + i * p.lse_s0 + (int64_t)h * p.lse_s1) = attn_lse(sm[r], l);
    }
}

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

extern "C" ela_status cuda_attn_gather(void *vctx, const ela_attn_gather_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    const ela_attn_dense_args *at = &a->attn;
    if (at->L * at->hkv > INT32_MAX || at->d > INT32_MAX / 8 || at->n > INT32_MAX)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_gather: more than 2^31 (row, KV head) "
                         "pairs or keys");
    ga_params gp;
    memset(&gp, 0, sizeof gp);
    cuda_attn_params_init(at, &gp.a);
    cuda_attn_params *p = &gp.a;
    gp.idx = cuda_tensor_ptr(a->idx);
    gp.idx_s0 = a->per_head ? a->idx->strides[0] : 0;
    gp.m = a->m;
    const size_t smem = ((size_t)2 * p->G * p->d + (size_t)p->G * GA_TILE + 3 * (size_t)p->G +
                         2 * (size_t)GA_TILE * p->d) * sizeof(float) + GA_TILE * sizeof(int);
    if (smem > ctx->props.sharedMemPerBlockOptin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_gather: %d query heads per KV head at "
                         "d = %d need %zu bytes of shared memory, %s has %zu per block", p->G,
                         p->d, smem, ctx->props.name, (size_t)ctx->props.sharedMemPerBlockOptin);
    const int64_t blocks = at->L * at->hkv, fill = 4ll * ctx->props.multiProcessorCount;
    cuda_attn_plan_splits(ctx, p, a->m, blocks >= fill ? 1 : div_up(fill, blocks), GA_TILE,
                          2 * GA_TILE);
    void *part = NULL;
    cudaError_t err = cudaSuccess;
    const char *what = "attn_gather kernel";
    if (p->splits > 1) {
        size_t rows = (size_t)p->splits * (size_t)p->hq * (size_t)p->L;
        if ((st = cuda_scratch_alloc(ctx, rows * ((size_t)p->d + 2) * sizeof(float), &part)) !=
            ELA_OK)
            return st;
        p->part_o = (float *)part;
        p->part_ml = p->part_o + rows * (size_t)p->d;
    }
    ctx->generation++;
    if (smem > 48 * 1024)
        err = cudaFuncSetAttribute(attn_gather_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem);
    if (err == cudaSuccess) {
        attn_gather_kernel<<<dim3((unsigned)blocks, (unsigned)p->splits, 1), GA_THREADS, smem,
                             ctx->stream>>>(gp);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess && p->splits > 1) {
        err = cuda_attn_merge_launch(p, ctx->stream);
        what = "attn_gather merge kernel";
    }
    if (part)
        cuda_scratch_free(ctx, part);
    if (err != cudaSuccess)
        return cuda_fail_err(err, what);
    return ELA_OK;
}

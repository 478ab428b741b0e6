/* CUDA attn_nsa (op 9: DESIGN.md 4.9, PAPERS.md 4.3 steps 6-7): gated attention of SSA models
 * over the key blocks ela_nsa_select lists per query row and KV head, or full causal attention
 * (blocks NULL: attn_dense.cu, then o *= gate in place).
 *
 * Check first: a thread per list entry (row, KV head, slot) flags an entry outside -1 or
 * [0, ceil(n / B)) or equal to an earlier entry of its list; the lowest flagged list is read
 * back (one 4-byte copy and a wait per call) and, when there is one, named as the CPU backend
 * names it, before anything is written.
 * Attention (tiled, CUDA cores; attn_list.cuh, as attn_gather): a block of 128 threads per
 * (query row i, KV head g, split of the keys). The list's blocks that hold a visible key
 * (0 <= b, b B <= t) are compacted into shared memory (any order: the softmax does not care);
 * their keys, numbered e = slot B + offset and cut at t, go by in tiles of 32. o = gate O / l,
 * or 0 for a row that sees no key. With few rows (decode: Hkv blocks) the keys are split over
 * blocks and merged by LSE with attn_dense's merge kernel, the gate applied to each partial.
 * Bound: 2 top B d elements of K and V per (row, KV head): 128 KiB at B 16, top 16, d 128, bf16,
 * mostly L2 hits (neighbouring rows list mostly the same blocks). Tensor cores are left for
 * later; this is the correct tiled kernel. */
#include <stdlib.h>
#include <string.h>

#include "attn_host.h"
#include "attn_list.cuh"
#include "cuda_check.h"

typedef struct {
    cuda_attn_params a;
    const char *blocks, *gate;
    int64_t b_s0, b_s1, b_s2, g_s0, g_s1;
    int B, top;
    int64_t nkb;
} an_params;

/* grid (L * top * hkv / 256): flags[0] = the lowest list (i hkv + g) with a bad entry. */
__global__ void an_check(const an_params p, int64_t entries, unsigned *flag) {
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= entries)
        return;
    const int64_t item = e / p.top, x = e % p.top;
    const int64_t i = item / p.a.hkv, g = item % p.a.hkv;
    const char *list = p.blocks + i * p.b_s0 + g * p.b_s1;
    const int b = *(const int *)(list + x * p.b_s2);
    bool bad = b < -1 || (int64_t)b >= p.nkb;
    for (int64_t y = 0; y < x && !bad && b != -1; y++)
        bad = *(const int *)(list + y * p.b_s2) == b;
    if (bad)
        atomicMin(flag, (unsigned)item);
}

/* grid (L * hkv, splits): split s takes keys [s split_keys, (s + 1) split_keys) of the row's
 * visible blocks' keys, numbered e = slot B + offset. */
__global__ void __launch_bounds__(AL_THREADS) an_attn(const an_params np) {
    extern __shared__ float an_smem[];
    const cuda_attn_params &p = np.a;
    const al_smem sm = al_carve(an_smem, p.G, p.d);
    int *slist = sm.skey + AL_TILE; /* the row's visible blocks, compacted */
    float *gain = (float *)(slist + np.top);
    __shared__ int s_nb;
    const int tid = threadIdx.x;
    const int64_t i = blockIdx.x / p.hkv;
    const int g = blockIdx.x % p.hkv, s = blockIdx.y;
    const int64_t t = p.q_pos0 + i;
    const char *kg = p.k + (int64_t)g * p.k_s0, *vg = p.v + (int64_t)g * p.v_s0;
    al_begin(p, sm, i, g);
    for (int r = tid; r < p.G; r += AL_THREADS)
        gain[r] = np.gate ? *(const float *)(np.gate + i * np.g_s0 + (int64_t)(g * p.G + r) *
                                                           np.g_s1)
                          : 1.0f;
    if (tid == 0) { /* the blocks holding a visible key (entries checked before the launch) */
        const char *list = np.blocks + i * np.b_s0 + (int64_t)g * np.b_s1;
        int nb = 0;
        for (int x = 0; x < np.top; x++) {
            const int b = *(const int *)(list + (int64_t)x * np.b_s2);
            if (b >= 0 && (int64_t)b < np.nkb && (int64_t)b * np.B <= t)
                slist[nb++] = b;
        }
        s_nb = nb;
    }
    __syncthreads();
    const int64_t total = (int64_t)s_nb * np.B, k0 = (int64_t)s * p.split_keys;
    const int64_t k1 = k0 + p.split_keys < total ? k0 + p.split_keys : total;
    for (int64_t e0 = k0; e0 < k1; e0 += AL_TILE) {
        const int nk = k1 - e0 < AL_TILE ? (int)(k1 - e0) : AL_TILE;
        __syncthreads(); /* the last tile's rows, scores and keys are consumed */
        if (tid < nk) {
            const int64_t e = e0 + tid, j = (int64_t)slist[e / np.B] * np.B + e % np.B;
            sm.skey[tid] = j <= t && j < p.n ? (int)j : -1;
        }
        __syncthreads();
        al_tile(p, sm, kg, vg, nk);
    }
    al_finish(p, sm, i, g, s, gain);
}

/* Full mode: o[i, h, :] *= gate[i, h], in place (grid L * hq). */
__global__ void an_gate(const an_params np) {
    const cuda_attn_params &p = np.a;
    const int64_t i = blockIdx.x / p.hq;
    const int h = blockIdx.x % p.hq, oes = attn_dtype_size(p.to);
    const float gamma = *(const float *)(np.gate + i * np.g_s0 + (int64_t)h * np.g_s1);
    char *orow = p.o + i * p.o_s0 + (int64_t)h * p.o_s1;
    for (int c = threadIdx.x; c < p.d; c += blockDim.x)
        attn_store(orow + (int64_t)c * oes, p.to, attn_load(orow + (int64_t)c * oes, p.to) * gamma);
}

/* The CPU backend's message for the first bad entry of list (i, g), read back from the device. */
static ela_status an_report(cuda_ctx *ctx, const an_params *p, int64_t item) {
    const int64_t i = item / p->a.hkv, g = item % p->a.hkv;
    int *host = (int *)malloc((size_t)p->top * sizeof(int));
    if (!host)
        return cuda_fail(ELA_ERR_OOM, "cuda: attn_nsa: out of host memory to report a bad block "
                         "list");
    const char *src = p->blocks + i * p->b_s0 + g * p->b_s1;
    cudaError_t err = cudaMemcpy2DAsync(host, sizeof(int), src, (size_t)p->b_s2, sizeof(int),
                                        (size_t)p->top, cudaMemcpyDeviceToHost, ctx->stream);
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(ctx->stream);
    if (err != cudaSuccess) {
        free(host);
        return cuda_fail_err(err, "cudaMemcpy2DAsync");
    }
    ela_status st = ELA_OK;
    for (int x = 0; x < p->top && st == ELA_OK; x++) {
        const int b = host[x];
        if (b == -1)
            continue;
        if (b < -1 || (int64_t)b >= p->nkb) {
            st = cuda_fail(ELA_ERR_INVALID_ARG, "ela_attn_nsa: tensor blocks[%lld, %lld, %d] = %d "
                           "is out of range (-1 or [0, %lld) for n = %lld, block %d)",
                           (long long)i, (long long)g, x, b, (long long)p->nkb,
                           (long long)p->a.n, p->B);
            break;
        }
        for (int y = 0; y < x; y++)
            if (host[y] == b) {
                st = cuda_fail(ELA_ERR_INVALID_ARG, "ela_attn_nsa: tensor blocks[%lld, %lld, %d] "
                               "= %d repeats a block of the same list", (long long)i,
                               (long long)g, x, b);
                break;
            }
    }
    free(host);
    if (st == ELA_OK) /* the device flagged a list the host finds good: not expected */
        st = cuda_fail(ELA_ERR_BACKEND, "cuda: attn_nsa: list blocks[%lld, %lld] flagged bad by "
                       "the device check but not by the host", (long long)i, (long long)g);
    return st;
}

extern "C" ela_status cuda_attn_nsa(void *vctx, const ela_attn_nsa_args *na) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    const ela_attn_dense_args *at = &na->attn;
    an_params np;
    memset(&np, 0, sizeof np);
    np.B = na->block;
    np.top = na->top;
    np.nkb = (at->n + na->block - 1) / na->block;
    if (na->gate) {
        np.gate = cuda_tensor_ptr(na->gate);
        np.g_s0 = na->gate->strides[0], np.g_s1 = na->gate->strides[1];
    }
    cudaError_t err = cudaSuccess;
    if (!na->blocks) {
        if ((st = cuda_attn_dense(vctx, at)) != ELA_OK || !na->gate)
            return st;
        cuda_attn_params_init(at, &np.a);
        if (at->L * at->hq > INT32_MAX)
            return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_nsa: more than 2^31 query rows");
        an_gate<<<(unsigned)(at->L * at->hq), 128, 0, ctx->stream>>>(np);
        CUDA_LAUNCHED("attn_nsa gate kernel");
        return ELA_OK;
    }
    if (at->L * at->hkv > INT32_MAX || at->L * at->hkv * na->top > ((int64_t)1 << 38) ||
        at->n > INT32_MAX)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_nsa: more than 2^31 (row, KV head) "
                         "pairs or keys");
    cuda_attn_params_init(at, &np.a);
    np.blocks = cuda_tensor_ptr(na->blocks);
    np.b_s0 = na->blocks->strides[0], np.b_s1 = na->blocks->strides[1];
    np.b_s2 = na->blocks->strides[2];
    cuda_attn_params *p = &np.a;
    /* + the compacted list and a gate per head */
    const size_t smem = al_smem_bytes(p->G, p->d, na->top + p->G);
    if (smem > ctx->props.sharedMemPerBlockOptin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_nsa: %d query heads per KV head at d = %d "
                         "with top %d need %zu bytes of shared memory, %s has %zu per block",
                         p->G, p->d, na->top, smem, ctx->props.name,
                         (size_t)ctx->props.sharedMemPerBlockOptin);

    /* The check, before o is written. */
    unsigned *flag = NULL, host_flag = 0xffffffffu;
    if ((st = cuda_scratch_alloc(ctx, sizeof(unsigned), (void **)&flag)) != ELA_OK)
        return st;
    const int64_t entries = at->L * at->hkv * na->top;
    const char *what = "cudaMemsetAsync";
    err = cudaMemsetAsync(flag, 0xff, sizeof(unsigned), ctx->stream);
    if (err == cudaSuccess) {
        an_check<<<(unsigned)((entries + 255) / 256), 256, 0, ctx->stream>>>(np, entries, flag);
        err = cudaGetLastError();
        what = "attn_nsa check kernel";
    }
    if (err == cudaSuccess) {
        err = cudaMemcpyAsync(&host_flag, flag, sizeof(unsigned), cudaMemcpyDeviceToHost,
                              ctx->stream);
        what = "cudaMemcpyAsync";
    }
    if (err == cudaSuccess) {
        err = cudaStreamSynchronize(ctx->stream);
        what = "cudaStreamSynchronize";
    }
    cuda_scratch_free(ctx, flag);
    if (err != cudaSuccess)
        return cuda_fail_err(err, what);
    if (host_flag != 0xffffffffu)
        return an_report(ctx, &np, (int64_t)host_flag);

    /* Few rows (decode): the keys split over blocks, as attn_gather does. */
    const int64_t blocks = at->L * at->hkv, fill = 4ll * ctx->props.multiProcessorCount;
    cuda_attn_plan_splits(ctx, p, (int64_t)na->top * na->block,
                          blocks >= fill ? 1 : (fill + blocks - 1) / blocks, AL_TILE, 2 * AL_TILE);
    void *part = NULL;
    if (p->splits > 1) {
        size_t rows = (size_t)p->splits * (size_t)p->hq * (size_t)p->L;
        if ((st = cuda_scratch_alloc(ctx, rows * ((size_t)p->d + 2) * sizeof(float), &part)) !=
            ELA_OK)
            return st;
        p->part_o = (float *)part;
        p->part_ml = p->part_o + rows * (size_t)p->d;
    }
    ctx->generation++;
    what = "cudaFuncSetAttribute";
    if (smem > 48 * 1024)
        err = cudaFuncSetAttribute(an_attn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem);
    if (err == cudaSuccess) {
        an_attn<<<dim3((unsigned)blocks, (unsigned)p->splits, 1), AL_THREADS, smem,
                  ctx->stream>>>(np);
        err = cudaGetLastError();
        what = "attn_nsa kernel";
    }
    if (err == cudaSuccess && p->splits > 1) {
        err = cuda_attn_merge_launch(p, ctx->stream);
        what = "attn_nsa merge kernel";
    }
    if (part)
        cuda_scratch_free(ctx, part);
    if (err != cudaSuccess)
        return cuda_fail_err(err, what);
    return ELA_OK;
}

/* CUDA attn_gather (op 8: DESIGN.md 4.8): attention of each query over the keys an index list
 * names, shared by all heads ([m]) or one list per KV head ([Hkv, m]); LessIsMore's sparse
 * layers and any top-k decode. Any dtype mix, head dim and stride.
 *
 * Tiling (attn_list.cuh): one block of 128 threads per (query row i, KV head g, split s of
 * the list) over the G query heads of g; the list goes by in tiles of 32 entries (keys past the
 * row's position hidden when causal). Splits of the list (two tiles or more each) are merged by
 * LSE with attn_dense's merge kernel, so a decode step over a few thousand listed keys spreads
 * over the GPU.
 * Bound: the listed K and V rows, read once per query row: 2 d esize bytes per entry, random
 * rows of 256 bytes at d = 128 bf16 (latency-bound: a few memory latencies per block).
 * Measured (H100, bf16, d 128, Hq 32, Hkv 8, 2048 listed of 128K keys): 88 us with the merge
 * 9 us, against 180 us for dense decode over all keys: latency, not bandwidth, still rules. */
#include <string.h>

#include "attn_host.h"
#include "attn_list.cuh"
#include "cuda_check.h"

typedef struct {
    cuda_attn_params a;
    const char *idx;    /* i32 lists */
    int64_t idx_s0;     /* bytes between two KV heads' lists; 0: one shared list */
    int64_t m;
} ga_params;

/* grid (L * hkv, splits) */
__global__ void __launch_bounds__(AL_THREADS) attn_gather_kernel(const ga_params gp) {
    extern __shared__ float ga_smem[];
    const cuda_attn_params &p = gp.a;
    const al_smem sm = al_carve(ga_smem, p.G, p.d);
    const int64_t i = blockIdx.x / p.hkv;
    const int g = blockIdx.x % p.hkv, s = blockIdx.y;
    const int64_t pos = p.q_pos0 + i;
    const int *list = (const int *)(gp.idx + (int64_t)g * gp.idx_s0);
    const int64_t k0 = (int64_t)s * p.split_keys;
    const int64_t k1 = k0 + p.split_keys < gp.m ? k0 + p.split_keys : gp.m;
    const char *kg = p.k + (int64_t)g * p.k_s0, *vg = p.v + (int64_t)g * p.v_s0;
    al_begin(p, sm, i, g);
    for (int64_t j0 = k0; j0 < k1; j0 += AL_TILE) {
        const int nk = k1 - j0 < AL_TILE ? (int)(k1 - j0) : AL_TILE;
        __syncthreads(); /* the last tile's rows, scores and keys are consumed */
        if (threadIdx.x < nk) {
            const int key = list[j0 + threadIdx.x];
            sm.skey[threadIdx.x] = key > pos ? -1 : key; /* causal: past the row's position */
        }
        __syncthreads();
        al_tile(p, sm, kg, vg, nk);
    }
    al_finish(p, sm, i, g, s, NULL);
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
    const size_t smem = al_smem_bytes(p->G, p->d, 0);
    if (smem > ctx->props.sharedMemPerBlockOptin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_gather: %d query heads per KV head at "
                         "d = %d need %zu bytes of shared memory, %s has %zu per block", p->G,
                         p->d, smem, ctx->props.name, (size_t)ctx->props.sharedMemPerBlockOptin);
    const int64_t blocks = at->L * at->hkv, fill = 4ll * ctx->props.multiProcessorCount;
    cuda_attn_plan_splits(ctx, p, a->m, blocks >= fill ? 1 : div_up(fill, blocks), AL_TILE,
                          2 * AL_TILE);
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
        attn_gather_kernel<<<dim3((unsigned)blocks, (unsigned)p->splits, 1), AL_THREADS, smem,
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

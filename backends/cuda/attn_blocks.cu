/* CUDA fused hybrid block-sparse prefill (op 2: DESIGN.md 4.2, PAPERS.md 1.4 and 5.2), the
 * executor of Elastic Attention's per-head DENSE / STREAMING / MASK modes and of XAttention's
 * masks, all heads in one launch.
 *   tensor cores (q, k, v one 16-bit dtype, d 64/128, 16-byte aligned rows, a positive scale):
 *     the tile loop of attn_mma_loop.cuh (the dense prefill's, the same code) with a tile
 *     sequence that visits only the key blocks the head's mode allows. A work item is one
 *     (query block, query head): with q_pos0 a multiple of 128 a 128-row query tile is exactly
 *     one query block M. STREAMING blocks are arithmetic ([0, sink) and (M - local, M]); a MASK
 *     head's row of the mask becomes a bitmap of nkb bits in shared memory at the item's start
 *     (one ballot per 32 blocks) with a prefix max per word, so the next visited block below is
 *     one count-leading-zeros away and skipping costs nothing next to a 64-key tile. The items
 *     go to the GPU as a list, KV head by KV head and within one by estimated cost (visited
 *     64-key tiles; a MASK head counts as dense, its mask being on the device), heaviest first;
 *     the hardware hands blocks out in list order as SMs free up. Key splits (merged by LSE as in attn_dense) only when the
 *     items alone cannot fill the GPU (a short chunk after a long prefix).
 *   generic (anything else, ELA_CUDA_FORCE=generic): the dense generic kernel, one block per
 *     (row, head, split), skipping the 128-key tiles (= blocks) the mode leaves out.
 * Bound: the dense kernels', over the visited tiles only. Measured (H100, bf16, d 128, Hq 32,
 * Hkv 8, L = n = 128K, ncu clocks; the dense kernel 405 ms): XAttention masks at 31% of the
 * causal pairs 143 ms (88% of the dense kernel's rate), xa-ssa (half masks, half streaming,
 * 17%) 78 ms, streaming (sink 1 + local 16 blocks, 3.2%) 15 ms. */
#include <stdlib.h>
#include <string.h>

#include "attn_host.h"
#include "attn_mma_loop.cuh"
#include "cuda_check.h"

#define BLOCK 128 /* ELA_BLOCK == CUDA_MMA_BR */

/* The kernel's shared memory: the tile loop's, then the item's state and the mask bitmap. */
extern __shared__ uint4 blocks_shared[];

struct blocks_state {
    int kind, sink, local; /* ELA_HEAD_*, STREAMING's window */
    int M;                 /* absolute query block */
    int tile0;             /* split start kb / 64 */
    int words;             /* ceil(nkb / 32) */
    int pad[2];
    /* MASK: bits[w] bit b: block 32 w + b is visited (blocks [0, min(M, nkb - 1)]); then
     * [words] ints: the largest visited block <= 32 w + 31, or -1 (a prefix max), so that
     * the next visited block is found without a loop (a loop here costs the tile loop
     * registers it does not have). */
    unsigned bits[1];
};

/* The 64-key tiles of a split that a (query block M, head) item visits, last first. Tile t is
 * keys kb + 64 t .. of the split (kb a multiple of 64), in block (kb / 64 + t) / 2. The state
 * lives in shared memory (registers are the tile loop's). */
template <int D> struct mma_tiles_blocks {
    int n_tiles;
    static __device__ __forceinline__ blocks_state *st() {
        return (blocks_state *)(blocks_shared + (CUDA_MMA_BR + 4 * CUDA_MMA_BC) * D / 8);
    }
    __device__ __forceinline__ void init(int64_t kb, int n) {
        (void)kb; /* the kernel stored kb / 64 in the state */
        n_tiles = n;
    }
    /* The largest visited block <= J (J <= M), or -1. */
    static __device__ __forceinline__ int allowed_le(int J) {
        const blocks_state *s = st();
        const int kind = s->kind;
        if (kind == 1) {
            if (J > s->M - s->local)
                return J;
            return J < s->sink - 1 ? J : s->sink - 1;
        }
        if (kind == 2) {
            const int w = J >> 5;
            const unsigned m = s->bits[w] & (0xffffffffu >> (31 - (J & 31)));
            if (m)
                return w * 32 + 31 - __clz(m);
            return w > 0 ? ((const int *)s->bits)[s->words + w - 1] : -1;
        }
        return J;
    }
    /* The largest visited tile <= t, or -1. */
    __device__ __forceinline__ int from(int t) const {
        if (t < 0)
            return -1;
        const int tile0 = st()->tile0;
        const int J = (tile0 + t) >> 1;
        const int Jv = allowed_le(J);
        if (Jv == J)
            return t;
        /* else the upper tile of block Jv (below tile t), if it lies in this split */
        const int hi = 2 * Jv + 1 - tile0;
        return Jv >= 0 && hi >= 0 ? hi : -1;
    }
    __device__ __forceinline__ int first() const { return from(n_tiles - 1); }
    __device__ __forceinline__ int next(int t) const { return from(t - 1); }
};

template <int D, bool BF>
__global__ void __launch_bounds__(MMA_THREADS, 2) attn_blocks_mma(const cuda_attn_params p) {
    const int item = p.items[blockIdx.x];
    const int h = item % p.hq;
    const int64_t qt = item / p.hq;
    const int *md = p.modes + 4 * h;
    blocks_state *st = mma_tiles_blocks<D>::st();
    const int M = (int)(p.qb0 + qt), kind = md[0];
    if (threadIdx.x == 0) {
        st->kind = kind;
        st->sink = md[1];
        st->local = md[2];
        st->M = M;
        st->tile0 = (int)((int64_t)blockIdx.y * p.split_keys / CUDA_MMA_BC);
    }
    if (kind == 2) {
        const unsigned char *row = p.masks + md[3] * p.mask_s0 + qt * p.mask_s1;
        const int last = M < p.nkb - 1 ? M : p.nkb - 1, words = (p.nkb + 31) / 32;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        for (int J0 = warp * 32; J0 <= last; J0 += MMA_THREADS) {
            const int J = J0 + lane;
            const bool on = J <= last && (J == M || row[J] != 0);
            const unsigned b = __ballot_sync(0xffffffffu, on);
            if (lane == 0)
                st->bits[J0 >> 5] = b;
        }
        if (threadIdx.x == 0)
            st->words = words;
        __syncthreads();
        if (warp == 0) { /* prefix max of each word's top block, 32 words per step */
            int *top_le = (int *)st->bits + words;
            int carry = -1;
            for (int w0 = 0; w0 * 32 <= last; w0 += 32) {
                const int w = w0 + lane;
                const unsigned b = w * 32 <= last ? st->bits[w] : 0u;
                int top = b ? w * 32 + 31 - __clz(b) : -1;
                for (int off = 1; off < 32; off <<= 1) {
                    const int o = __shfl_up_sync(0xffffffffu, top, off);
                    if (lane >= off)
                        top = o > top ? o : top;
                }
                top = carry > top ? carry : top;
                if (w * 32 <= last)
                    top_le[w] = top;
                carry = __shfl_sync(0xffffffffu, top, 31);
            }
        }
    }
    __syncthreads();
    mma_tiles_blocks<D> seq = {0};
    attn_mma_tile<D, BF>(p, blocks_shared, h, qt * CUDA_MMA_BR, (int)blockIdx.y, seq);
}

typedef void (*blocks_kernel)(const cuda_attn_params);
static unsigned blocks_prepared[4]; /* per kernel: devices whose smem limit is raised */

static int blocks_index(int d, int dtype) {
    if (d != 64 && d != 128)
        return -1;
    return (d == 128) * 2 + (dtype == ATTN_BF16);
}

static blocks_kernel blocks_pick(int d, int dtype) {
    switch (blocks_index(d, dtype)) {
    case 0: return attn_blocks_mma<64, false>;
    case 1: return attn_blocks_mma<64, true>;
    case 2: return attn_blocks_mma<128, false>;
    case 3: return attn_blocks_mma<128, true>;
    default: return NULL;
    }
}

extern "C" size_t cuda_attn_blocks_mma_smem(int d, int nkb) {
    return attn_mma_loop_smem(d) + sizeof(blocks_state) + (((size_t)nkb + 127) / 128) * 32;
}

/* The dynamic shared-memory limit raised once per device to all a block may have (the mask
 * bitmap grows with nkb; occupancy follows each launch's own size). */
static cudaError_t blocks_prepare(blocks_kernel k, int d, int dtype) {
    int dev = 0, optin = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (err != cudaSuccess)
        return err;
    return attn_raise_smem((const void *)k, optin, &blocks_prepared[blocks_index(d, dtype)]);
}

extern "C" int cuda_attn_blocks_mma_blocks_per_sm(int d, int dtype, int nkb) {
    blocks_kernel k = blocks_pick(d, dtype);
    int n = 0;
    if (!k || blocks_prepare(k, d, dtype) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, MMA_THREADS,
                                                      cuda_attn_blocks_mma_smem(d, nkb)) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaError_t cuda_attn_blocks_mma_launch(const cuda_attn_params *p, int n_items,
                                                   cudaStream_t stream) {
    blocks_kernel k = blocks_pick(p->d, p->tkv);
    if (!k)
        return cudaErrorInvalidValue;
    cudaError_t err = blocks_prepare(k, p->d, p->tkv);
    if (err != cudaSuccess)
        return err;
    dim3 grid((unsigned)n_items, (unsigned)p->splits, 1);
    k<<<grid, MMA_THREADS, cuda_attn_blocks_mma_smem(p->d, p->nkb), stream>>>(*p);
    return cudaGetLastError();
}

/* ---- host side ------------------------------------------------------------------------------ */
typedef struct {
    int64_t cost;
    int g;    /* KV head */
    int item; /* query tile * hq + head */
} blocks_item;

/* KV head by KV head, heaviest first within each, then by query tile (later first) and head:
 * the blocks in flight together read one KV head's K and V, whose hot blocks (sinks, the
 * neighbouring windows, the blocks masks agree on) then stay in L2 for its G heads and nearby
 * query tiles; the last items of one KV head overlap the heaviest of the next. */
static int cmp_items(const void *x, const void *y) {
    const blocks_item *a = (const blocks_item *)x, *b = (const blocks_item *)y;
    if (a->g != b->g)
        return a->g < b->g ? -1 : 1;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return (a->item < b->item) - (a->item > b->item);
}

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int aligned16(const char *ptr, int64_t s0, int64_t s1) {
    return (((uintptr_t)ptr | (uintptr_t)s0 | (uintptr_t)s1) & 15) == 0;
}

/* 64-key tiles the item of query tile qt and mode md visits, a MASK head counted as dense (its
 * mask is on the device), in O(1): a whole prefill has (L / 128)^2 / 2 blocks per head. */
static int64_t item_tiles(const ela_attn_blocks_args *a, const ela_head_mode *md, int64_t qt) {
    const ela_attn_dense_args *at = &a->attn;
    const int64_t M = a->qb0 + qt;
    int64_t i_end = (qt + 1) * BLOCK < at->L ? (qt + 1) * BLOCK : at->L;
    int64_t kend = at->q_pos0 + i_end < at->n ? at->q_pos0 + i_end : at->n;
    int64_t tiles = div_up(kend, CUDA_MMA_BC);
    if (md->kind != ELA_HEAD_STREAMING)
        return tiles;
    /* blocks [0, nj) that hold keys; visited: [0, sink) and (M - local, nj) */
    int64_t nj = div_up(kend, BLOCK);
    nj = nj < M + 1 ? nj : M + 1;
    int64_t sink = md->sink_blocks < nj ? md->sink_blocks : nj;
    int64_t lo = M - md->local_blocks + 1 > sink ? M - md->local_blocks + 1 : sink;
    int64_t blocks = sink + (nj > lo ? nj - lo : 0);
    return 2 * blocks < tiles ? 2 * blocks : tiles;
}

static int ask_blocks(const cuda_attn_params *p, int d, int dtype) {
    return cuda_attn_blocks_mma_blocks_per_sm(d, dtype, p->nkb);
}

extern "C" ela_status cuda_attn_blocks(void *vctx, const ela_attn_blocks_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    const ela_attn_dense_args *at = &a->attn;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    const int hq = at->hq;
    if (at->d > INT32_MAX / 8 || at->L > INT32_MAX || at->L * hq > INT32_MAX ||
        a->nkb > INT32_MAX / 2)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_blocks: more than 2^31 query rows or "
                         "key blocks (L = %lld, Hq = %d)", (long long)at->L, hq);
    cuda_attn_params p;
    cuda_attn_params_init(at, &p);
    p.qb0 = a->qb0;
    p.nkb = (int)a->nkb;
    if (a->masks) {
        p.masks = (const unsigned char *)cuda_tensor_ptr(a->masks);
        p.mask_s0 = a->masks->strides[0];
        p.mask_s1 = a->masks->strides[1];
    }
    const int64_t nqt = div_up(at->L, BLOCK);
    const int64_t keys = p.q_pos0 + p.L < p.n ? p.q_pos0 + p.L : p.n;
    const int sms = ctx->props.multiProcessorCount;

    int mma = ctx->path == CUDA_PATH_AUTO && cuda_attn_mma_fits(p.d, p.tkv) && p.tq == p.tkv &&
              aligned16(p.k, p.k_s0, p.k_s1) && aligned16(p.v, p.v_s0, p.v_s1) &&
              aligned16(p.q, p.q_s0, p.q_s1) && p.n <= INT32_MAX && p.scale_log2 > 0.0f &&
              nqt * hq <= INT32_MAX &&
              cuda_attn_blocks_mma_smem(p.d, p.nkb) <= ctx->props.sharedMemPerBlockOptin;
    size_t gen_smem = 0;
    blocks_item *items = NULL;
    int *host = NULL;
    int64_t n_items = mma ? nqt * hq : 0;
    if (mma) {
        int per_sm = cuda_attn_occupancy(ctx, 5000 + p.d * 4 + p.tkv, ask_blocks, &p, p.d, p.tkv);
        int64_t fill = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
        int64_t want = n_items >= fill ? 1 : div_up(fill, n_items);
        cuda_attn_plan_splits(ctx, &p, keys, want, CUDA_MMA_BC, 4 * CUDA_MMA_BC);
    } else {
        gen_smem = cuda_attn_generic_smem(p.d);
        if (gen_smem > ctx->props.sharedMemPerBlockOptin)
            return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_blocks: head dim %d needs %zu bytes "
                             "of shared memory, %s has %zu per block", p.d, gen_smem,
                             ctx->props.name, (size_t)ctx->props.sharedMemPerBlockOptin);
        int64_t blocks = p.L * p.hq;
        int64_t want = blocks >= 4ll * sms ? 1 : div_up(4ll * sms, blocks);
        cuda_attn_plan_splits(ctx, &p, keys, want, BLOCK, 4 * BLOCK);
    }

    /* The modes, then the work list, in one scratch upload. */
    const size_t host_ints = (size_t)hq * 4 + (size_t)n_items;
    host = (int *)malloc(host_ints * sizeof(int));
    if (mma)
        items = (blocks_item *)malloc((size_t)n_items * sizeof *items);
    if (!host || (mma && !items)) {
        free(host);
        free(items);
        return cuda_fail(ELA_ERR_OOM, "cuda: attn_blocks: out of host memory for %lld work items",
                         (long long)n_items);
    }
    for (int h = 0; h < hq; h++) {
        const ela_head_mode *md = &a->modes[h];
        host[4 * h] = (int)md->kind;
        host[4 * h + 1] = md->kind == ELA_HEAD_STREAMING ? md->sink_blocks : 0;
        host[4 * h + 2] = md->kind == ELA_HEAD_STREAMING ? md->local_blocks : 1;
        host[4 * h + 3] = md->kind == ELA_HEAD_MASK ? md->mask : 0;
    }
    if (mma) {
        for (int64_t qt = 0; qt < nqt; qt++)
            for (int h = 0; h < hq; h++) {
                blocks_item *it = &items[qt * hq + h];
                it->item = (int)(qt * hq + h);
                it->g = h / (hq / at->hkv);
                it->cost = item_tiles(a, &a->modes[h], qt);
            }
        qsort(items, (size_t)n_items, sizeof *items, cmp_items);
        for (int64_t x = 0; x < n_items; x++)
            host[(size_t)hq * 4 + (size_t)x] = items[x].item;
    }
    free(items);

    void *scratch = NULL, *part = NULL;
    cudaError_t err = cudaSuccess;
    const char *what = "attn_blocks";
    if ((st = cuda_scratch_alloc(ctx, host_ints * sizeof(int), &scratch)) != ELA_OK)
        goto done;
    if ((st = cuda_upload(ctx, scratch, host, host_ints * sizeof(int))) != ELA_OK)
        goto done;
    p.modes = (const int *)scratch;
    p.items = mma ? (const int *)scratch + (size_t)hq * 4 : NULL;
    if (p.splits > 1) {
        size_t rows = (size_t)p.splits * (size_t)p.hq * (size_t)p.L;
        if ((st = cuda_scratch_alloc(ctx, rows * ((size_t)p.d + 2) * sizeof(float), &part)) !=
            ELA_OK)
            goto done;
        p.part_o = (float *)part;
        p.part_ml = p.part_o + rows * (size_t)p.d;
    }
    ctx->generation++;
    if (mma) {
        err = cuda_attn_blocks_mma_launch(&p, (int)n_items, ctx->stream);
        what = "attn_blocks tensor-core kernel";
    } else {
        err = cuda_attn_generic_launch(&p, gen_smem, ctx->stream);
        what = "attn_blocks generic kernel";
    }
    if (err == cudaSuccess && p.splits > 1) {
        err = cuda_attn_merge_launch(&p, ctx->stream);
        what = "attn_blocks merge kernel";
    }
    if (err != cudaSuccess)
        st = cuda_fail_err(err, what);
done:
    if (part)
        cuda_scratch_free(ctx, part);
    if (scratch)
        cuda_scratch_free(ctx, scratch);
    free(host);
    return st;
}

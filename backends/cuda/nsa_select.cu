/* CUDA nsa_select (op 9: DESIGN.md 4.9, PAPERS.md 4.3 steps 2-5): SSA/NSA block selection per
 * query token and KV head, with the CPU backend's arithmetic order where it decides ties and its
 * ranking (group-summed score descending, lower block first; the current block forced first).
 * Two kernels (three on the split path), no wait:
 *   pool: kc[g, c] = mean of the B keys of complete block c (c < nkc = (q_pos0 + L) / B), f32:
 *     a block per (c, g), a thread per column summing the B rows in order and multiplying by
 *     1 / B as the CPU does, so identical key blocks pool to identical bits (exact ties stay
 *     exact). Bound: the keys of complete blocks, read once (a dense step's K bytes).
 *   select: a block of 256 threads per (QR consecutive query rows, KV head g); the R = QR G rows
 *     (row r = query ii, head hh of the group: r = ii G + hh) are pre-scaled by scale log2 e and
 *     sit in shared memory with kc tiles of 64 pooled blocks (rows padded to an odd stride: no
 *     bank conflicts). Z = Q kc^T per tile by 4 x 4 register micro-tiles (thread (tr, tc) owns
 *     rows tr + 16 a, blocks tc + 16 b). Pass 1: each row's online max and sum of exp2 over its
 *     NC = (t + 1) / B complete blocks (4 threads per row) gives lse. Pass 2 recomputes the
 *     tiles (the same arithmetic, so the same z), sums exp2f(z - lse) over the G heads in head
 *     order into s[c] for c < cur = t / B, and one warp per query row inserts the tile's blocks,
 *     ascending, into a sorted list of top - 1 in shared memory (a candidate goes after every
 *     entry it does not beat, so equal scores keep the lower block first, as the CPU's
 *     insertion and qsort order; the list fills up, then only a candidate above its last entry
 *     is inserted). Output: cur, the list, -1 past the kept count.
 *   split path, instead of select where the row tiles alone leave the GPU idle (decode, short
 *     chunks) and z fits 256 MiB: split_scores, a block per (row tile, KV head, tile of 64
 *     pooled blocks), stores the tile's z and each row's (max, sum of exp2) over its visible
 *     blocks; split_pick, a block per (query row, KV head), merges the partials into each
 *     head's lse, and warp w sums s for the 32-block chunks w, w + 8, ... (a lane per block)
 *     and inserts them in order into its own list; warp 0 merges the 8 lists by (score
 *     descending, block ascending), the order the single list would have.
 * Cost: L Hq nkc / 2 d FMAs twice on the one-kernel path (the CPU computes Z once and keeps
 * it), ~1 / B of dense attention's QK; kc of one head is read from L2 by every row tile. */
#include <string.h>

#include "attn_dense_device.cuh"
#include "cuda_check.h"

#define NS_THREADS 256
#define NS_TILE 64         /* pooled blocks per tile */
#define NS_ZLD (NS_TILE + 1)
#define NS_ROWS_TARGET 64  /* query-head rows per block, as the CPU's items */
#define NS_WARPS (NS_THREADS / 32)
#define NS_SPLIT_BYTES ((size_t)256 << 20) /* most scratch of the split path */
#define LOG2E 1.4426950408889634f

typedef struct {
    const char *q, *k;
    int64_t q_s0, q_s1, k_s0, k_s1;
    char *out;
    int64_t o_s0, o_s1, o_s2;
    int tq, tk, d, dpad, G, B, top, K, Kc;
    int64_t L, q_pos0, nkc;
    int QR, RP;        /* query rows per block; R = QR G rounded up to 16 */
    float qscale;      /* scale * log2 e */
    float *kc;         /* [hkv][nkc][d] */
    /* split path: z [L][hq][nkc] and each tile's (max, sum of exp2) [L][hq][ntiles][2] */
    float *zs, *ml;
    int hq, hkv, ntiles;
} ns_params;

/* grid (nkc, hkv) */
__global__ void ns_pool(const ns_params p) {
    const int64_t c = blockIdx.x;
    const int g = blockIdx.y, es = attn_dtype_size(p.tk);
    const char *kb = p.k + (int64_t)g * p.k_s0 + c * p.B * p.k_s1;
    const float inv = 1.0f / (float)p.B;
    for (int x = threadIdx.x; x < p.d; x += blockDim.x) {
        float s = 0.0f;
#pragma unroll 8 /* the loads of 8 rows in flight; the sum stays in row order */
        for (int j = 0; j < p.B; j++)
            s += attn_load(kb + (int64_t)j * p.k_s1 + (int64_t)x * es, p.tk);
        p.kc[((int64_t)g * p.nkc + c) * p.d + x] = s * inv;
    }
}

/* Shared memory of the select kernel, in 4-byte words. */
static size_t ns_smem_words(int RP, int QR, int dpad, int Kc) {
    return (size_t)RP * dpad + (size_t)NS_TILE * dpad + (size_t)RP * NS_ZLD + 3 * (size_t)RP +
           (size_t)QR * NS_TILE + 2 * (size_t)QR * Kc + (size_t)QR;
}

/* Z tile [RP][NS_ZLD] = sQ [RP][dpad] x sK [NS_TILE][dpad]^T. */
static __device__ __forceinline__ void ns_tile_scores(const ns_params &p, const float *sQ,
                                                      const float *sK, float *sZ) {
    const int tid = threadIdx.x, tc = tid & 15, tr = tid >> 4;
    for (int rb = 0; rb < p.RP; rb += 64) {
        const int na = (p.RP - rb) / 16 < 4 ? (p.RP - rb) / 16 : 4;
        float acc[4][4];
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++)
                acc[a][b] = 0.0f;
        const float *qr = sQ + (int64_t)(rb + tr) * p.dpad;
        const float *kr = sK + (int64_t)tc * p.dpad;
        for (int x = 0; x < p.d; x++) {
            float qv[4], kv[4];
#pragma unroll
            for (int a = 0; a < 4; a++)
                qv[a] = a < na ? qr[(int64_t)16 * a * p.dpad + x] : 0.0f;
#pragma unroll
            for (int b = 0; b < 4; b++)
                kv[b] = kr[(int64_t)16 * b * p.dpad + x];
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++)
                    acc[a][b] = fmaf(qv[a], kv[b], acc[a][b]);
        }
#pragma unroll
        for (int a = 0; a < 4; a++)
            if (a < na)
#pragma unroll
                for (int b = 0; b < 4; b++)
                    sZ[(rb + tr + 16 * a) * NS_ZLD + tc + 16 * b] = acc[a][b];
    }
}

/* kc tile [NS_TILE][dpad] of head g from block c0 (zeros past nk). */
static __device__ __forceinline__ void ns_load_tile(const ns_params &p, float *sK, int g,
                                                    int64_t c0, int nk) {
    const float *src = p.kc + ((int64_t)g * p.nkc + c0) * p.d;
    for (int e = threadIdx.x; e < NS_TILE * p.d; e += NS_THREADS) {
        const int j = e / p.d, x = e % p.d;
        sK[j * p.dpad + x] = j < nk ? src[(int64_t)j * p.d + x] : 0.0f;
    }
}

/* Warp-wide insertion of candidate (v, c) into a list sorted by descending score, kept entries
 * [0, kept) of at most K (the caller has checked that v beats the last entry of a full list):
 * it goes after every entry it does not beat, so candidates arriving in ascending block order
 * keep equal scores lower block first. Returns the new count. */
static __device__ __forceinline__ int ns_insert(float *vals, int *idxs, int kept, int K, float v,
                                                int c, int lane) {
    int pos = 0; /* the entries v does not beat: a prefix of the sorted list */
    for (int e0 = 0; e0 < kept; e0 += 32) {
        const int e = e0 + lane;
        const unsigned b = __ballot_sync(0xffffffffu, e < kept && !(v > vals[e]));
        pos += __popc(b);
        if (b != 0xffffffffu)
            break;
    }
    const int last = kept < K ? kept : K - 1; /* [pos, last) move up one */
    for (int hi = last; hi > pos; hi -= 32) {
        const int e = hi - 1 - lane;
        const bool mv = e >= pos;
        float tv = 0.0f;
        int ti = 0;
        if (mv) {
            tv = vals[e];
            ti = idxs[e];
        }
        __syncwarp();
        if (mv) {
            vals[e + 1] = tv;
            idxs[e + 1] = ti;
        }
        __syncwarp();
    }
    __syncwarp(); /* every lane has read the list before lane 0 writes it */
    if (lane == 0) {
        vals[pos] = v;
        idxs[pos] = c;
    }
    __syncwarp();
    return kept < K ? kept + 1 : K;
}

/* Offers the warp's 32 candidates (lane x: score s of block c0 + x where ok) in lane order:
 * one ballot drops those that cannot beat the last entry of a full list (the bar only rises),
 * the rest are checked again and inserted one by one. Returns the new count. */
static __device__ __forceinline__ int ns_offer(float *vals, int *idxs, int kept, int K, float s,
                                               bool ok, int c0, int lane) {
    unsigned left = __ballot_sync(0xffffffffu, ok && (kept < K || s > vals[K - 1]));
    while (left) { /* uniform */
        const int x = __ffs(left) - 1;
        left &= left - 1;
        const float v = __shfl_sync(0xffffffffu, s, x);
        if (kept == K && !(v > vals[K - 1]))
            continue;
        kept = ns_insert(vals, idxs, kept, K, v, c0 + x, lane);
    }
    return kept;
}

/* Q rows of the block's R = nrows G query heads, pre-scaled, zero past R. */
static __device__ __forceinline__ void ns_load_q(const ns_params &p, float *sQ, int g, int64_t i0,
                                                 int R) {
    const int qes = attn_dtype_size(p.tq), G = p.G, d = p.d;
    for (int e = threadIdx.x; e < p.RP * d; e += NS_THREADS) {
        const int r = e / d, x = e % d;
        float v = 0.0f;
        if (r < R)
            v = attn_load(p.q + (i0 + r / G) * p.q_s0 + (int64_t)(g * G + r % G) * p.q_s1 +
                              (int64_t)x * qes, p.tq) * p.qscale;
        sQ[r * p.dpad + x] = v;
    }
}

/* Row r's max and sum of exp2 over the visible columns of a tile (blocks c0 + j < its NC),
 * 4 threads per row; with online = 1 merged into sM, sL, else stored as the tile's partial. */
static __device__ __forceinline__ void ns_tile_softmax(const ns_params &p, const float *sZ,
                                                       float *sM, float *sL, int g, int64_t i0,
                                                       int R, int64_t c0, int nk, bool part) {
    const int tid = threadIdx.x, sub = tid & 3, G = p.G;
    for (int r = tid >> 2; r < p.RP; r += NS_THREADS / 4) { /* uniform per 4 lanes */
        int64_t lim = 0;
        if (r < R) {
            const int64_t nc = (p.q_pos0 + i0 + r / G + 1) / p.B - c0;
            lim = nc < 0 ? 0 : nc > nk ? nk : nc;
        }
        float mx = -INFINITY;
        for (int j = sub; j < lim; j += 4)
            mx = fmaxf(mx, sZ[r * NS_ZLD + j]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_old = part ? -INFINITY : sM[r], m_new = fmaxf(m_old, mx);
        float sum = 0.0f;
        if (m_new != -INFINITY)
            for (int j = sub; j < lim; j += 4)
                sum += exp2f(sZ[r * NS_ZLD + j] - m_new);
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        __syncwarp(); /* the row's 4 lanes have read sM[r] before lane 0 writes it */
        if (sub != 0 || r >= R)
            continue;
        if (part) {
            float *ml = p.ml + (((i0 + r / G) * p.hq + g * G + r % G) * p.ntiles + c0 / NS_TILE) * 2;
            ml[0] = m_new;
            ml[1] = sum;
        } else if (m_new != -INFINITY) {
            sL[r] = sL[r] * exp2f(m_old - m_new) + sum;
            sM[r] = m_new;
        }
    }
}

/* grid (ceil(L / QR), hkv) */
__global__ void __launch_bounds__(NS_THREADS) ns_select(const ns_params p) {
    extern __shared__ float ns_smem[];
    float *sQ = ns_smem, *sK = sQ + p.RP * p.dpad, *sZ = sK + NS_TILE * p.dpad;
    float *sM = sZ + p.RP * NS_ZLD, *sL = sM + p.RP, *sLse = sL + p.RP;
    float *sS = sLse + p.RP, *sVal = sS + p.QR * NS_TILE;
    int *sIdx = (int *)(sVal + p.QR * p.Kc), *sKept = sIdx + p.QR * p.Kc;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = blockIdx.y, G = p.G;
    const int64_t i0 = (int64_t)blockIdx.x * p.QR;
    const int nrows = p.L - i0 < p.QR ? (int)(p.L - i0) : p.QR, R = nrows * G;
    ns_load_q(p, sQ, g, i0, R);
    for (int r = tid; r < p.RP; r += NS_THREADS) {
        sM[r] = -INFINITY;
        sL[r] = 0.0f;
    }
    for (int ii = tid; ii < p.QR; ii += NS_THREADS)
        sKept[ii] = 0;

    /* Pass 1: lse of each row over its complete blocks. */
    const int64_t nc_max = (p.q_pos0 + i0 + nrows) / p.B, cur_max = (p.q_pos0 + i0 + nrows - 1) / p.B;
    for (int64_t c0 = 0; c0 < nc_max && p.K > 0; c0 += NS_TILE) { /* top 1: nothing to rank */
        const int nk = nc_max - c0 < NS_TILE ? (int)(nc_max - c0) : NS_TILE;
        __syncthreads();
        ns_load_tile(p, sK, g, c0, nk);
        __syncthreads();
        ns_tile_scores(p, sQ, sK, sZ);
        __syncthreads();
        ns_tile_softmax(p, sZ, sM, sL, g, i0, R, c0, nk, false);
    }
    __syncthreads();
    for (int r = tid; r < p.RP; r += NS_THREADS)
        sLse[r] = sL[r] > 0.0f ? sM[r] + log2f(sL[r]) : 0.0f;

    /* Pass 2: group sums of the blocks before each row's current one, into the lists. */
    for (int64_t c0 = 0; c0 < cur_max && p.K > 0; c0 += NS_TILE) {
        const int nk = cur_max - c0 < NS_TILE ? (int)(cur_max - c0) : NS_TILE;
        __syncthreads();
        ns_load_tile(p, sK, g, c0, nk);
        __syncthreads();
        ns_tile_scores(p, sQ, sK, sZ);
        __syncthreads();
        for (int e = tid; e < nrows * NS_TILE; e += NS_THREADS) {
            const int ii = e / NS_TILE, j = e % NS_TILE;
            const int64_t cur = (p.q_pos0 + i0 + ii) / p.B;
            float s = 0.0f;
            if (c0 + j < cur)
                for (int hh = 0; hh < G; hh++)
                    s += exp2f(sZ[(ii * G + hh) * NS_ZLD + j] - sLse[ii * G + hh]);
            sS[ii * NS_TILE + j] = s;
        }
        __syncthreads();
        for (int ii = warp; ii < nrows; ii += NS_THREADS / 32) {
            const int64_t cur = (p.q_pos0 + i0 + ii) / p.B;
            const int lim = cur - c0 < nk ? (int)(cur - c0) : nk;
            float *vals = sVal + ii * p.Kc;
            int *idxs = sIdx + ii * p.Kc;
            int kept = sKept[ii];
            for (int j0 = 0; j0 < lim; j0 += 32) {
                const float s = j0 + lane < lim ? sS[ii * NS_TILE + j0 + lane] : 0.0f;
                kept = ns_offer(vals, idxs, kept, p.K, s, j0 + lane < lim, (int)(c0 + j0), lane);
            }
            __syncwarp();
            if (lane == 0)
                sKept[ii] = kept;
            __syncwarp();
        }
    }
    __syncthreads();
    for (int ii = warp; ii < nrows; ii += NS_THREADS / 32) {
        const int64_t i = i0 + ii, cur = (p.q_pos0 + i) / p.B;
        const int kept = sKept[ii];
        char *out = p.out + i * p.o_s0 + (int64_t)g * p.o_s1;
        for (int x = lane; x < p.top; x += 32) {
            const int b = x == 0 ? (int)cur : x - 1 < kept ? sIdx[ii * p.Kc + x - 1] : -1;
            *(int *)(out + (int64_t)x * p.o_s2) = b;
        }
    }
}

/* Split path (few row tiles, e.g. decode): the tiles of pooled blocks spread over the GPU.
 * grid (row tiles, hkv, ntiles): one tile's z for the block's rows into zs, and each row's
 * (max, sum of exp2) over the tile's visible blocks into ml. */
__global__ void __launch_bounds__(NS_THREADS) ns_split_scores(const ns_params p) {
    extern __shared__ float ns_smem[];
    float *sQ = ns_smem, *sK = sQ + p.RP * p.dpad, *sZ = sK + NS_TILE * p.dpad;
    const int g = blockIdx.y, G = p.G;
    const int64_t i0 = (int64_t)blockIdx.x * p.QR, c0 = (int64_t)blockIdx.z * NS_TILE;
    const int nrows = p.L - i0 < p.QR ? (int)(p.L - i0) : p.QR, R = nrows * G;
    const int nk = p.nkc - c0 < NS_TILE ? (int)(p.nkc - c0) : NS_TILE;
    ns_load_q(p, sQ, g, i0, R);
    ns_load_tile(p, sK, g, c0, nk);
    __syncthreads();
    ns_tile_scores(p, sQ, sK, sZ);
    __syncthreads();
    for (int e = threadIdx.x; e < R * NS_TILE; e += NS_THREADS) {
        const int r = e / NS_TILE, j = e % NS_TILE;
        if (j < nk)
            p.zs[((i0 + r / G) * p.hq + g * G + r % G) * p.nkc + c0 + j] = sZ[r * NS_ZLD + j];
    }
    ns_tile_softmax(p, sZ, NULL, NULL, g, i0, R, c0, nk, true);
}

/* grid (L hkv): lse of the G heads from the tiles' partials; warp w ranks the candidates of the
 * 32-block chunks w, w + 8, ... (lanes compute s for a chunk, the warp inserts them in order
 * into its own list); warp 0 merges the 8 lists by (score descending, block ascending). */
__global__ void __launch_bounds__(NS_THREADS) ns_split_pick(const ns_params p) {
    extern __shared__ float ns_smem[];
    float *sLse = ns_smem, *sVal = sLse + p.G;
    int *sIdx = (int *)(sVal + NS_WARPS * p.Kc);
    __shared__ int sKept[NS_WARPS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, G = p.G;
    const int64_t i = blockIdx.x / p.hkv;
    const int g = blockIdx.x % p.hkv;
    const int64_t cur = (p.q_pos0 + i) / p.B;
    const int64_t zrow = i * p.hq + (int64_t)g * G; /* row of head g G */
    for (int hh = tid; hh < G; hh += NS_THREADS) {
        const float *ml = p.ml + (zrow + hh) * p.ntiles * 2;
        float M = -INFINITY, l = 0.0f;
        for (int t = 0; t < p.ntiles; t++)
            M = fmaxf(M, ml[2 * t]);
        if (M != -INFINITY)
            for (int t = 0; t < p.ntiles; t++)
                if (ml[2 * t + 1] > 0.0f)
                    l += ml[2 * t + 1] * exp2f(ml[2 * t] - M);
        sLse[hh] = l > 0.0f ? M + log2f(l) : 0.0f;
    }
    __syncthreads();
    float *vals = sVal + warp * p.Kc;
    int *idxs = sIdx + warp * p.Kc;
    int kept = 0;
    for (int64_t base = (int64_t)warp * 32; base < cur && p.K > 0; base += NS_THREADS) {
        const int64_t c = base + lane;
        float s = 0.0f;
        if (c < cur)
            for (int hh = 0; hh < G; hh++)
                s += exp2f(p.zs[(zrow + hh) * p.nkc + c] - sLse[hh]);
        kept = ns_offer(vals, idxs, kept, p.K, s, c < cur, (int)base, lane);
    }
    __syncwarp();
    if (lane == 0)
        sKept[warp] = kept;
    __syncthreads();
    if (warp != 0)
        return;
    char *out = p.out + i * p.o_s0 + (int64_t)g * p.o_s1;
    int total = 0, head = 0;
    for (int w = 0; w < NS_WARPS; w++)
        total += sKept[w];
    const int n_out = total < p.K ? total : p.K;
    if (lane == 0)
        *(int *)out = (int)cur;
    for (int x = 0; x < n_out; x++) {
        float bv = -1.0f; /* scores are >= 0: -1 marks an exhausted list */
        int bc = 0x7fffffff, bl = lane;
        if (lane < NS_WARPS && head < sKept[lane]) {
            bv = sVal[lane * p.Kc + head];
            bc = sIdx[lane * p.Kc + head];
        }
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            const int oc = __shfl_xor_sync(0xffffffffu, bc, off);
            const int ol = __shfl_xor_sync(0xffffffffu, bl, off);
            if (ov > bv || (ov == bv && oc < bc)) {
                bv = ov;
                bc = oc;
                bl = ol;
            }
        }
        if (lane == bl)
            head++;
        if (lane == 0)
            *(int *)(out + (int64_t)(1 + x) * p.o_s2) = bc;
    }
    for (int x = 1 + n_out + lane; x < p.top; x += 32)
        *(int *)(out + (int64_t)x * p.o_s2) = -1;
}

extern "C" ela_status cuda_nsa_select(void *vctx, const ela_nsa_select_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    if (a->n > INT32_MAX || a->d > 4096 || a->hkv > 65535)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: nsa_select: more than 2^31 keys, a head dim "
                         "above 4096 or more than 65535 KV heads (n = %lld, d = %lld, Hkv = %d)",
                         (long long)a->n, (long long)a->d, a->hkv);
    ns_params p;
    memset(&p, 0, sizeof p);
    p.q = cuda_tensor_ptr(a->q);
    p.k = cuda_tensor_ptr(a->k);
    p.q_s0 = a->q->strides[0], p.q_s1 = a->q->strides[1];
    p.k_s0 = a->k->strides[0], p.k_s1 = a->k->strides[1];
    p.out = cuda_tensor_ptr(a->blocks);
    p.o_s0 = a->blocks->strides[0], p.o_s1 = a->blocks->strides[1];
    p.o_s2 = a->blocks->strides[2];
    p.tq = (int)a->q->dtype, p.tk = (int)a->k->dtype;
    p.d = (int)a->d, p.dpad = p.d | 1, p.G = a->hq / a->hkv, p.B = a->block, p.top = a->top;
    p.K = a->top - 1, p.Kc = p.K > 0 ? p.K : 1;
    p.L = a->L, p.q_pos0 = a->q_pos0;
    p.nkc = (a->q_pos0 + a->L) / a->block;
    p.qscale = a->scale * LOG2E;
    const size_t optin = ctx->props.sharedMemPerBlockOptin;
    p.QR = NS_ROWS_TARGET / p.G > 0 ? NS_ROWS_TARGET / p.G : 1;
    if (p.QR > p.L) /* decode: no idle rows in the micro-tiles */
        p.QR = (int)p.L;
    for (;;) {
        p.RP = (p.QR * p.G + 15) / 16 * 16;
        if (ns_smem_words(p.RP, p.QR, p.dpad, p.Kc) * 4 <= optin || p.QR == 1)
            break;
        p.QR /= 2;
    }
    const size_t smem = ns_smem_words(p.RP, p.QR, p.dpad, p.Kc) * 4;
    if (smem > optin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: nsa_select: %d query heads per KV head at d = "
                         "%d with top %d need %zu bytes of shared memory, %s has %zu per block",
                         p.G, p.d, p.top, smem, ctx->props.name, optin);
    const int64_t row_tiles = (p.L + p.QR - 1) / p.QR;
    if (row_tiles > INT32_MAX)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: nsa_select: %lld query rows are too many",
                         (long long)p.L);

    /* Split path when the row tiles alone leave the GPU idle (decode, short chunks) and z fits
     * the scratch cap; ELA_CUDA_SPLITS=1 and ELA_CUDA_FORCE=generic keep the one-kernel path,
     * ELA_CUDA_SPLITS > 1 takes the split path wherever it fits. */
    p.hq = a->hq, p.hkv = a->hkv;
    p.ntiles = (int)((p.nkc + NS_TILE - 1) / NS_TILE > 65535 ? 0 : (p.nkc + NS_TILE - 1) / NS_TILE);
    const size_t zs_b = (size_t)p.L * p.hq * (size_t)p.nkc * 4;
    const size_t ml_b = (size_t)p.L * p.hq * (size_t)p.ntiles * 8;
    const size_t smem_scores = ((size_t)p.RP * p.dpad + (size_t)NS_TILE * p.dpad +
                                (size_t)p.RP * NS_ZLD) * 4;
    const size_t smem_pick = ((size_t)p.G + 2 * (size_t)NS_WARPS * p.Kc) * 4;
    int split = 0;
    if (ctx->path == CUDA_PATH_AUTO && ctx->force_splits != 1 && p.K > 0 && p.ntiles > 0 &&
        zs_b + ml_b <= NS_SPLIT_BYTES && smem_scores <= optin && smem_pick <= optin &&
        p.L * a->hkv <= INT32_MAX)
        split = ctx->force_splits > 1 || row_tiles * a->hkv < 2ll * ctx->props.multiProcessorCount;

    float *kc = NULL;
    const size_t kc_b = ((size_t)a->hkv * (size_t)p.nkc * (size_t)p.d * 4 + 15) & ~(size_t)15;
    const size_t zs_off = kc_b, ml_off = zs_off + ((zs_b + 15) & ~(size_t)15);
    const size_t scratch_b = split ? ml_off + ml_b : kc_b;
    if (p.nkc > 0 && (st = cuda_scratch_alloc(ctx, scratch_b, (void **)&kc)) != ELA_OK)
        return st;
    p.kc = kc;
    if (split) {
        p.zs = (float *)((char *)kc + zs_off);
        p.ml = (float *)((char *)kc + ml_off);
    }
    ctx->generation++;
    cudaError_t err = cudaSuccess;
    const char *what = "nsa_select pooling kernel";
    if (p.nkc > 0) {
        const int threads = p.d >= 128 ? 128 : (p.d + 31) / 32 * 32;
        ns_pool<<<dim3((unsigned)p.nkc, (unsigned)a->hkv, 1), threads, 0, ctx->stream>>>(p);
        err = cudaGetLastError();
    }
    if (split) {
        if (err == cudaSuccess && smem_scores > 48 * 1024)
            err = cudaFuncSetAttribute(ns_split_scores,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem_scores);
        if (err == cudaSuccess) {
            what = "nsa_select split scores kernel";
            ns_split_scores<<<dim3((unsigned)row_tiles, (unsigned)a->hkv, (unsigned)p.ntiles),
                              NS_THREADS, smem_scores, ctx->stream>>>(p);
            err = cudaGetLastError();
        }
        if (err == cudaSuccess && smem_pick > 48 * 1024)
            err = cudaFuncSetAttribute(ns_split_pick, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem_pick);
        if (err == cudaSuccess) {
            what = "nsa_select split pick kernel";
            ns_split_pick<<<(unsigned)(p.L * a->hkv), NS_THREADS, smem_pick, ctx->stream>>>(p);
            err = cudaGetLastError();
        }
    } else {
        if (err == cudaSuccess && smem > 48 * 1024)
            err = cudaFuncSetAttribute(ns_select, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem);
        if (err == cudaSuccess) {
            what = "nsa_select kernel";
            ns_select<<<dim3((unsigned)row_tiles, (unsigned)a->hkv, 1), NS_THREADS, smem,
                        ctx->stream>>>(p);
            err = cudaGetLastError();
        }
    }
    if (kc)
        cuda_scratch_free(ctx, kc);
    if (err != cudaSuccess)
        return cuda_fail_err(err, what);
    return ELA_OK;
}

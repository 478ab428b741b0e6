/* CUDA XAttention block selection (op 3: DESIGN.md 4.3, PAPERS.md 5.1): antidiagonal stride-S
 * scores, their causal softmax per reduced row, 128x128 block masses, and the threshold
 * selection per query-block row, for the listed query heads, with backends/cpu/xattn_estimate.c's
 * order and tie rule.
 *
 * Reduced query row m of a query block (tokens qb 128 + m S + S-1-i, i < S, zero past L) against
 * reduced key c (tokens c S + i, zero past n) is a dot product of depth S d: with q's rows taken
 * in reverse it is an ordinary GEMM row, and K's reduced rows are S consecutive token rows.
 *   scores, tensor cores (q, k one 16-bit dtype, d a multiple of 64, S <= 16, 16-byte aligned
 *     rows): a persistent kernel, one block of 16 warps per SM; an item is 128 reduced rows
 *     (whole (head, query block) groups of 128 / S rows: several query blocks x the listed heads
 *     of one KV head, so every K tile feeds the group's heads) against the reduced keys they
 *     see, in tiles of 256. Warp (r, c) owns rows 32 r .. +31 x keys 64 c .. +63 (two m16 x
 *     eight n8 mma.sync tiles, f32 accumulators). The depth runs in chunks of 64 (one token's
 *     64 channels), 3 cp.async stages of a 128 x 64 Q chunk and a 256 x 64 K chunk (48 KiB,
 *     XOR-swizzled rows as in the attention kernels). After a tile: mask (reduced causal
 *     c <= row, c < ceil(n / S)), online max per row (the four warps of a row exchange theirs in
 *     shared memory), exp2, and each row's sum per 128-key block (128 / S reduced keys) stored
 *     to the block's slot of scratch together with the row max it is relative to. At the item's
 *     end every row knows its max and sum, and the masses of each (head, query block) are
 *     combined over its rows into A[head, qb, J]: no row of scores and no second pass over
 *     Q K^T. Items go KV head by KV head (the blocks in flight share that head's K through L2),
 *     heaviest first within each.
 *     Bound: L n d / (2 S) multiply-adds per head (1/(2S) of dense attention's QK^T and PV), at
 *     mma.sync speed while L2 feeds 87 flops per byte (each step's 48 KiB for 4 MFLOP); the
 *     128-row Q panel is read once per 256 keys. Measured (H100, bf16, d 128, Hq 32 all listed,
 *     Hkv 8, L = n = 128K, S 16, ncu clocks): 27.9 ms (the selection 2.3 ms more), 1/14.5 of
 *     the dense prefill kernel's 405 ms (the flops are 1/32 of it).
 *   scores, generic (any dtype mix, d, S; ELA_CUDA_FORCE=generic): one block per (listed head,
 *     query block, 16 rows); per 32-key tile the S sub-rows' q and k go through shared memory
 *     as f32; two sweeps (max and sum, then probabilities), block masses added atomically.
 *   selection: one block per (listed head, query block): the masses of blocks [0, min(M,
 *     nkb - 1)], block 0 and the diagonal M first, the others by a bitonic sort of (mass
 *     descending, block ascending) in shared memory, taken while the kept mass is below
 *     threshold x the row total (double, one thread: the CPU's order of additions). */
#include <stdlib.h>
#include <string.h>

#include "attn_dense_mma.cuh"
#include "cuda_check.h"

#define BLOCK 128
#define LOG2E_D 1.4426950408889634
#define XA_WC 4                      /* warps across a tile's keys (64 keys each) */
#define XA_THREADS (128 * XA_WC)     /* 4 x XA_WC warps */
#define XA_ROWS 128                  /* reduced rows per item */
#define XA_COLS (64 * XA_WC)         /* reduced keys per tile */
#define XA_STAGES 3
#define XA_ACH (XA_ROWS * 8)         /* the 128 x 64 16-bit Q chunk of a step, in uint4 */
#define XA_STAGE (XA_ACH + XA_COLS * 8) /* Q chunk, then the XA_COLS x 64 K chunk */
#define XA_MAX_S 16                  /* 128 / S >= 8 reduced keys per block */
#define XA_MAX_BLK (XA_COLS / 8)     /* blocks per key tile */
#define XA_QR (XA_ROWS * 8 / XA_THREADS)  /* Q chunk rows a thread loads per step */
#define XA_KR (XA_COLS * 8 / XA_THREADS)  /* K chunk rows a thread loads per step */
#define GX_RG 16                     /* generic: reduced rows per block */
#define GX_BK 32                     /* generic: reduced keys per tile */
#define GX_THREADS 256
#define SEL_THREADS 256

typedef struct {
    const char *q, *k;
    int64_t q_s0, q_s1, k_s0, k_s1;
    int L, n, d, S, rpb, lg_rpb, nrk, nkb, nqb, qb0, G, tq, tk;
    float sl2;                   /* scale / S * log2(e) */
    const int *heads;            /* [n_heads] query heads of the listed heads */
    const int *glist, *gstart;   /* listed-head indices grouped by KV head; [hkv] starts */
    const int *items;            /* [n_items][5]: g, qb_lo, qb_hi, hs_lo, hs_hi */
    int n_items, ntiles;         /* key tiles of the longest row (mt's row length) */
    int *counter;                /* the persistent kernel's next item */
    float *part, *mt;            /* per CTA: [128][nkb] block sums, [128][ntiles] their max */
    float *A;                    /* [n_heads][nqb][nkb] block masses */
    unsigned char *masks;
    int64_t m_s0, m_s1;
    float threshold;
    unsigned long long *kept;
} xa_params;

/* ---- scores on tensor cores ------------------------------------------------------------------ */
/* Loads of one depth step (tile, sub-row i, channel chunk dc) into a stage. */
static __device__ __forceinline__ void xa_issue(const xa_params &p, uint4 *sA, uint4 *sB,
                                                const char *const (&qptr)[XA_QR],
                                                const int (&qlim)[XA_QR], const char *kg,
                                                int tile, int i, int dc) {
    const int tid = threadIdx.x, c = tid & 7;
#pragma unroll
    for (int j = 0; j < XA_QR; j++) {
        const int r = (tid >> 3) + (XA_THREADS / 8) * j;
        const bool ok = i >= qlim[j];
        cp_async16(&sA[r * 8 + (c ^ (r & 7))], ok ? qptr[j] - (int64_t)i * p.q_s0 + dc * 128 : p.q,
                   ok);
    }
#pragma unroll
    for (int j = 0; j < XA_KR; j++) {
        const int r = (tid >> 3) + (XA_THREADS / 8) * j;
        const int64_t tok = (int64_t)(tile * XA_COLS + r) * p.S + i;
        const bool ok = tok < p.n;
        cp_async16(&sB[r * 8 + (c ^ (r & 7))], ok ? kg + tok * p.k_s1 + dc * 128 + c * 16 : p.k,
                   ok);
    }
    cp_async_commit();
}

template <bool BF>
__global__ void __launch_bounds__(XA_THREADS, 1) xa_scores_mma(const xa_params p) {
    extern __shared__ uint4 xa_smem[];
    __shared__ int s_item;
    uint4 *stages = xa_smem; /* [3][Q chunk, K chunk] */
    int *row_tok = (int *)(xa_smem + XA_STAGES * XA_STAGE);   /* top token, -1: no row */
    int *row_h = row_tok + XA_ROWS, *row_a = row_h + XA_ROWS; /* head; reduced position */
    float *red = (float *)(row_a + XA_ROWS);                  /* [XA_WC][128] */
    float *blk = red + XA_WC * XA_ROWS;                       /* [128][XA_MAX_BLK] */
    float *fin_m = blk + XA_ROWS * XA_MAX_BLK, *fin_l = fin_m + XA_ROWS;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wr = warp / XA_WC, wc = warp % XA_WC;
    const int rpb = p.rpb, lg = p.lg_rpb;
    float *part = p.part + (size_t)blockIdx.x * XA_ROWS * p.nkb;
    float *mts = p.mt + (size_t)blockIdx.x * XA_ROWS * p.ntiles;
    for (int e = tid; e < XA_ROWS * XA_MAX_BLK; e += XA_THREADS)
        blk[e] = 0.0f;

    /* ldmatrix offsets (attn_mma_loop.cuh's, for 64-channel rows: 8 chunks). */
    const int x = lane & 7;
    int off_a[4], off_b[4];
#pragma unroll
    for (int b = 0; b < 4; b++) {
        off_a[b] = (2 * b + (lane >> 4)) ^ x;
        off_b[b] = (2 * b + ((lane >> 3) & 1)) ^ x;
    }
    const int a_row = wr * 32 + (lane & 15);
    const int b_row = wc * 64 + (lane & 7) + ((lane >> 4) << 3);
    const int dpc = p.d / 64, KS = p.S * dpc;

    for (;;) {
        if (tid == 0)
            s_item = atomicAdd(p.counter, 1);
        __syncthreads(); /* also: the last item's combine is done with the row tables */
        const int it = s_item;
        if (it >= p.n_items)
            break;
        const int *ip = p.items + (size_t)it * 5;
        const int g = ip[0], qb_lo = ip[1], qb_hi = ip[2], hs_lo = ip[3], hs_hi = ip[4];
        const int nh = hs_hi - hs_lo;
        if (tid < XA_ROWS) {
            const int r = tid, gi = r >> lg, m = r & (rpb - 1), qb = qb_lo + gi / nh;
            const bool ok = qb < qb_hi && qb * BLOCK + m * p.S < p.L;
            row_tok[r] = ok ? qb * BLOCK + m * p.S + p.S - 1 : -1;
            row_h[r] = ok ? p.heads[p.glist[p.gstart[g] + hs_lo + gi % nh]] : 0;
            row_a[r] = ok ? (p.qb0 + qb) * rpb + m : -1;
        }
        __syncthreads();
        const char *qptr[XA_QR];
        int qlim[XA_QR];
#pragma unroll
        for (int j = 0; j < XA_QR; j++) {
            const int r = (tid >> 3) + (XA_THREADS / 8) * j, tok = row_tok[r];
            qptr[j] = p.q + (int64_t)(tok < 0 ? 0 : tok) * p.q_s0 + (int64_t)row_h[r] * p.q_s1 +
                      (tid & 7) * 16;
            qlim[j] = tok < 0 ? 1 << 30 : tok - p.L + 1; /* sub-rows i >= qlim hold a query */
        }
        const char *kg = p.k + (int64_t)g * p.k_s0;
        const int a_end = (p.qb0 + qb_hi) * rpb; /* past the item's last reduced row */
        const int cend = a_end < p.nrk ? a_end : p.nrk;
        const int n_tiles = (cend + XA_COLS - 1) / XA_COLS, total = n_tiles * KS;

        float acc[2][8][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[mt][nt][e] = 0.0f;
        float m_run[2][2], l_part[2][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                m_run[mt][rr] = -INFINITY;
                l_part[mt][rr] = 0.0f;
            }

        xa_issue(p, stages, stages + XA_ACH, qptr, qlim, kg, 0, 0, 0);
        if (total > 1)
            xa_issue(p, stages + XA_STAGE, stages + XA_STAGE + XA_ACH, qptr, qlim, kg, 1 / KS,
                     (1 % KS) / dpc, (1 % KS) % dpc);
        else
            cp_async_commit();
        for (int step = 0; step < total; step++) {
            cp_async_wait_group<1>();
            __syncthreads(); /* this step's chunks landed; step - 1's stage is free */
            const int nx = step + 2;
            if (nx < total) {
                const int buf = nx % XA_STAGES, k = nx % KS;
                xa_issue(p, stages + buf * XA_STAGE, stages + buf * XA_STAGE + XA_ACH, qptr,
                         qlim, kg, nx / KS, k / dpc, k % dpc);
            } else {
                cp_async_commit(); /* an empty group keeps the count */
            }
            const uint4 *sA = stages + (step % XA_STAGES) * XA_STAGE, *sB = sA + XA_ACH;
#pragma unroll
            for (int ks = 0; ks < 4; ks++) {
                unsigned a[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
                    ldsm_x4(a[mt], sA + (a_row + mt * 16) * 8 + off_a[ks]);
#pragma unroll
                for (int np = 0; np < 4; np++) {
                    unsigned b[4];
                    ldsm_x4(b, sB + (b_row + np * 16) * 8 + off_b[ks]);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        mma16816<BF>(acc[mt][2 * np], a[mt], b[0], b[1]);
                        mma16816<BF>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
                    }
                }
            }
            if (step % KS != KS - 1)
                continue; /* uniform */

            /* The tile's scores are complete: mask, row max (all warps of a row), exp2, each
             * row's sum per block into blk, then to scratch with the max they are relative to. */
            const int tile = step / KS, c0 = tile * XA_COLS;
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                    const int rloc = wr * 32 + mt * 16 + rr * 8 + (lane >> 2);
                    const int ar = row_a[rloc];
                    const int lim = ar < p.nrk - 1 ? ar : p.nrk - 1; /* -1: no row */
                    float mx = -INFINITY;
#pragma unroll
                    for (int nt = 0; nt < 8; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int c = c0 + wc * 64 + nt * 8 + (lane & 3) * 2 + e;
                            float s = acc[mt][nt][2 * rr + e] * p.sl2;
                            s = c <= lim ? s : -INFINITY;
                            acc[mt][nt][2 * rr + e] = s;
                            mx = fmaxf(mx, s);
                        }
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    if ((lane & 3) == 0)
                        red[wc * XA_ROWS + rloc] = mx;
                }
            __syncthreads();
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                    const int rloc = wr * 32 + mt * 16 + rr * 8 + (lane >> 2);
                    float mx = red[rloc];
#pragma unroll
                    for (int w = 1; w < XA_WC; w++)
                        mx = fmaxf(mx, red[w * XA_ROWS + rloc]);
                    const float m_new = fmaxf(m_run[mt][rr], mx);
                    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
                    l_part[mt][rr] *= attn_exp2(m_run[mt][rr] - m_use);
                    m_run[mt][rr] = m_new;
#pragma unroll
                    for (int nt = 0; nt < 8; nt++) {
                        float v = attn_exp2(acc[mt][nt][2 * rr] - m_use) +
                                  attn_exp2(acc[mt][nt][2 * rr + 1] - m_use);
                        l_part[mt][rr] += v;
                        v += __shfl_xor_sync(0xffffffffu, v, 1);
                        v += __shfl_xor_sync(0xffffffffu, v, 2);
                        if ((lane & 3) == 0)
                            atomicAdd(&blk[rloc * XA_MAX_BLK + ((wc * 64 + nt * 8) >> lg)], v);
                    }
                    if (wc == 0 && (lane & 3) == 0 && row_a[rloc] >= 0)
                        mts[rloc * p.ntiles + tile] = m_new;
                }
            __syncthreads();
            const int nb = XA_COLS >> lg, J0 = c0 >> lg;
            for (int e = tid; e < XA_ROWS * nb; e += XA_THREADS) {
                const int r = e / nb, jl = e % nb;
                if (row_a[r] >= 0 && J0 + jl < p.nkb)
                    part[(size_t)r * p.nkb + J0 + jl] = blk[r * XA_MAX_BLK + jl];
                blk[r * XA_MAX_BLK + jl] = 0.0f;
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        acc[mt][nt][e] = 0.0f;
        }
        cp_async_wait_all();

        /* Each row's max and sum, then the (head, query block) masses: A[J] = sum over the
         * group's rows of their block sums, rescaled to the row's final max, over its sum. */
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const int rloc = wr * 32 + mt * 16 + rr * 8 + (lane >> 2);
                float l = l_part[mt][rr];
                l += __shfl_xor_sync(0xffffffffu, l, 1);
                l += __shfl_xor_sync(0xffffffffu, l, 2);
                if ((lane & 3) == 0) {
                    red[wc * XA_ROWS + rloc] = l;
                    if (wc == 0)
                        fin_m[rloc] = m_run[mt][rr];
                }
            }
        __syncthreads();
        if (tid < XA_ROWS) {
            float l = 0.0f;
            for (int w = 0; w < XA_WC; w++)
                l += red[w * XA_ROWS + tid];
            fin_l[tid] = l;
        }
        __syncthreads();
        const int last_hi = p.qb0 + qb_hi - 1 < p.nkb - 1 ? p.qb0 + qb_hi - 1 : p.nkb - 1;
        const int W = last_hi + 1, n_grp = (qb_hi - qb_lo) * nh;
        for (int e = tid; e < n_grp * W; e += XA_THREADS) {
            const int gi = e / W, J = e % W, qb = qb_lo + gi / nh;
            const int last = p.qb0 + qb < p.nkb - 1 ? p.qb0 + qb : p.nkb - 1;
            if (J > last)
                continue;
            const int hi = p.glist[p.gstart[g] + hs_lo + gi % nh];
            const int tt = (J << lg) / XA_COLS;
            float sum = 0.0f;
            for (int m = 0; m < rpb; m++) {
                const int r = gi * rpb + m;
                if (row_a[r] < 0)
                    break; /* rows past L come last in their group */
                sum += part[(size_t)r * p.nkb + J] * exp2f(mts[r * p.ntiles + tt] - fin_m[r]) /
                       fin_l[r];
            }
            p.A[((size_t)hi * p.nqb + qb) * p.nkb + J] = sum;
        }
    }
}

/* ---- scores, generic -------------------------------------------------------------------------- */
static __device__ __forceinline__ float xa_load(const char *ptr, int dt) {
    return attn_load(ptr, dt);
}

/* Rows [rg 16, +16) of (listed head hi, query block qb): grid (nqb * n_rg, n_heads). */
__global__ void __launch_bounds__(GX_THREADS) xa_scores_generic(const xa_params p, int n_rg) {
    extern __shared__ float gx_smem[];
    const int d = p.d, DP = d + 1;
    float *qs = gx_smem, *ks = qs + GX_RG * d, *st = ks + GX_BK * DP;
    float *row_m = st + GX_RG * GX_BK, *row_l = row_m + GX_RG;
    const int tid = threadIdx.x;
    const int hi = blockIdx.y, qb = blockIdx.x / n_rg, rg = blockIdx.x % n_rg;
    const int h = p.heads[hi], g = h / p.G;
    const int m0 = rg * GX_RG;
    int R = p.rpb - m0 < GX_RG ? p.rpb - m0 : GX_RG;
    const int left = p.L - qb * BLOCK, rows = (left + p.S - 1) / p.S; /* rows holding a query */
    if (rows - m0 < R)
        R = rows - m0;
    if (R <= 0)
        return;
    const int a0 = (p.qb0 + qb) * p.rpb + m0; /* reduced position of row 0 */
    const int last_a = a0 + R - 1;
    const int cend = (last_a < p.nrk - 1 ? last_a : p.nrk - 1) + 1;
    const int qes = attn_dtype_size(p.tq), kes = attn_dtype_size(p.tk);
    const char *qh = p.q + (int64_t)h * p.q_s1, *kg = p.k + (int64_t)g * p.k_s0;
    float *A = p.A + ((size_t)hi * p.nqb + qb) * p.nkb;
    if (tid < GX_RG) {
        row_m[tid] = -INFINITY;
        row_l[tid] = 0.0f;
    }
    for (int sweep = 0; sweep < 2; sweep++)
        for (int c0 = 0; c0 < cend; c0 += GX_BK) {
            float acc[2] = {0.0f, 0.0f};
            for (int i = 0; i < p.S; i++) {
                __syncthreads();
                for (int e = tid; e < GX_RG * d; e += GX_THREADS) {
                    const int r = e / d, c = e % d;
                    const int64_t tok = (int64_t)qb * BLOCK + (int64_t)(m0 + r) * p.S + p.S - 1 - i;
                    qs[e] = r < R && tok < p.L ? xa_load(qh + tok * p.q_s0 + (int64_t)c * qes, p.tq)
                                               : 0.0f;
                }
                for (int e = tid; e < GX_BK * d; e += GX_THREADS) {
                    const int j = e / d, c = e % d;
                    const int64_t tok = (int64_t)(c0 + j) * p.S + i;
                    ks[j * DP + c] = tok < p.n ? xa_load(kg + tok * p.k_s1 + (int64_t)c * kes, p.tk)
                                               : 0.0f;
                }
                __syncthreads();
                for (int x = 0; x < 2; x++) {
                    const int o = tid + x * GX_THREADS, r = o / GX_BK, j = o % GX_BK;
                    float s = 0.0f;
                    for (int c = 0; c < d; c++)
                        s += qs[r * d + c] * ks[j * DP + c];
                    acc[x] += s;
                }
            }
            for (int x = 0; x < 2; x++) {
                const int o = tid + x * GX_THREADS;
                st[o] = acc[x] * p.sl2;
            }
            __syncthreads();
            if (sweep == 0) {
                if (tid < R) {
                    const int lim = a0 + tid < p.nrk - 1 ? a0 + tid : p.nrk - 1;
                    const int nv = lim - c0 + 1 < GX_BK ? lim - c0 + 1 : GX_BK;
                    float m = row_m[tid], l = row_l[tid], mx = m;
                    for (int j = 0; j < nv; j++)
                        mx = fmaxf(mx, st[tid * GX_BK + j]);
                    if (nv > 0) {
                        l = m == -INFINITY ? 0.0f : l * exp2f(m - mx);
                        for (int j = 0; j < nv; j++)
                            l += exp2f(st[tid * GX_BK + j] - mx);
                        row_m[tid] = mx;
                        row_l[tid] = l;
                    }
                }
            } else if (tid < GX_BK && c0 + tid < cend) {
                const int c = c0 + tid;
                float sum = 0.0f;
                for (int r = 0; r < R; r++)
                    if (c <= a0 + r)
                        sum += exp2f(st[r * GX_BK + tid] - row_m[r]) / row_l[r];
                atomicAdd(&A[c / p.rpb], sum);
            }
        }
}

/* ---- selection -------------------------------------------------------------------------------- */
/* One block per (query block qb, listed head hi): grid (nqb, n_heads); P (a power of two >=
 * nkb) sort entries in shared memory. */
__global__ void __launch_bounds__(SEL_THREADS) xa_select(const xa_params p, int P) {
    extern __shared__ float sel_smem[];
    float *mass = sel_smem;
    int *blk = (int *)(mass + P);
    unsigned char *keep = (unsigned char *)(blk + P);
    __shared__ double red[SEL_THREADS];
    __shared__ int s_take;
    const int tid = threadIdx.x, qb = blockIdx.x, hi = blockIdx.y;
    const int M = p.qb0 + qb, last = M < p.nkb - 1 ? M : p.nkb - 1;
    const bool diag = M < p.nkb && M != 0;
    const float *A = p.A + ((size_t)hi * p.nqb + qb) * p.nkb;
    double part = 0.0;
    for (int J = tid; J < P; J += SEL_THREADS) {
        const float a = J <= last ? A[J] : 0.0f;
        part += a;
        const bool cand = J >= 1 && J <= last && J != M;
        mass[J] = cand ? a : -1.0f;
        blk[J] = cand ? J : 0x7fffffff;
        keep[J] = 0;
    }
    red[tid] = part;
    __syncthreads();
    for (int s = SEL_THREADS / 2; s > 0; s >>= 1) {
        if (tid < s)
            red[tid] += red[tid + s];
        __syncthreads();
    }
    const double total = red[0];
    /* bitonic sort: heavier first, equal masses lower block first */
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int x = tid; x < P; x += SEL_THREADS) {
                const int y = x ^ j;
                if (y > x) {
                    const float mx = mass[x], my = mass[y];
                    const int jx = blk[x], jy = blk[y];
                    const bool y_first = my > mx || (my == mx && jy < jx);
                    if (y_first == ((x & k) == 0)) {
                        mass[x] = my;
                        mass[y] = mx;
                        blk[x] = jy;
                        blk[y] = jx;
                    }
                }
            }
            __syncthreads();
        }
    if (tid == 0) {
        const double target = (double)p.threshold * total;
        double have = (double)A[0];
        if (diag)
            have += (double)A[M];
        int n = 0;
        while (n < P && blk[n] != 0x7fffffff && have < target) {
            have += (double)mass[n];
            n++;
        }
        s_take = n;
        if (p.kept)
            atomicAdd(p.kept, (unsigned long long)(n + 1 + (diag ? 1 : 0)));
    }
    __syncthreads();
    const int take = s_take;
    for (int x = tid; x < take; x += SEL_THREADS)
        keep[blk[x]] = 1;
    __syncthreads();
    unsigned char *out = p.masks + (int64_t)hi * p.m_s0 + (int64_t)qb * p.m_s1;
    for (int J = tid; J < p.nkb; J += SEL_THREADS)
        out[J] = (unsigned char)(J == 0 || (diag && J == M) || (J < P && keep[J]));
}

/* ---- host side -------------------------------------------------------------------------------- */
typedef struct {
    int64_t cost;
    int e[5];
} xa_item;

/* KV head by KV head (e[0]), heaviest first within each. */
static int cmp_items(const void *x, const void *y) {
    const xa_item *a = (const xa_item *)x, *b = (const xa_item *)y;
    if (a->e[0] != b->e[0])
        return a->e[0] < b->e[0] ? -1 : 1;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return memcmp(a->e, b->e, sizeof a->e);
}

static int aligned16(const char *ptr, int64_t s0, int64_t s1) {
    return (((uintptr_t)ptr | (uintptr_t)s0 | (uintptr_t)s1) & 15) == 0;
}

static unsigned xa_prepared[2]; /* per kernel: devices whose smem limit is raised */

static size_t xa_mma_smem(void) {
    return (size_t)XA_STAGES * XA_STAGE * 16 + 3 * XA_ROWS * sizeof(int) +
           ((XA_WC + 2) * XA_ROWS + XA_ROWS * XA_MAX_BLK) * sizeof(float);
}

extern "C" ela_status cuda_xattn_estimate(void *vctx, const ela_xattn_estimate_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    if (a->n == 0 || a->nkb == 0)
        return ELA_OK; /* no key blocks: nothing to write */
    if (a->n > INT32_MAX / 2 || a->L > INT32_MAX / 2 || a->q_pos0 + a->L > INT32_MAX / 2 ||
        a->d > 4096)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: xattn_estimate: more than 2^30 positions "
                         "or a head dim above 4096");
    xa_params p;
    memset(&p, 0, sizeof p);
    p.q = cuda_tensor_ptr(a->q);
    p.k = cuda_tensor_ptr(a->k);
    p.q_s0 = a->q->strides[0], p.q_s1 = a->q->strides[1];
    p.k_s0 = a->k->strides[0], p.k_s1 = a->k->strides[1];
    p.L = (int)a->L, p.n = (int)a->n, p.d = (int)a->d, p.S = a->stride;
    p.rpb = BLOCK / a->stride;
    while ((1 << p.lg_rpb) < p.rpb)
        p.lg_rpb++;
    p.nrk = (int)((a->n + a->stride - 1) / a->stride);
    p.nkb = (int)a->nkb, p.nqb = (int)a->nqb, p.qb0 = (int)(a->q_pos0 / BLOCK);
    p.G = a->hq / a->hkv;
    p.tq = (int)a->q->dtype, p.tk = (int)a->k->dtype;
    p.sl2 = (float)((double)a->scale / (double)a->stride * LOG2E_D);
    p.threshold = a->threshold;
    p.masks = (unsigned char *)cuda_tensor_ptr(a->masks);
    p.m_s0 = a->masks->strides[0], p.m_s1 = a->masks->strides[1];
    const int hkv = a->hkv, nh = a->n_heads, sms = ctx->props.multiProcessorCount;

    int P = 1;
    while (P < p.nkb)
        P *= 2;
    const size_t sel_smem = (size_t)P * 9;
    const int mma = ctx->path == CUDA_PATH_AUTO && p.tq == p.tk &&
                    (p.tq == ELA_F16 || p.tq == ELA_BF16) && p.d % 64 == 0 &&
                    a->stride <= XA_MAX_S && aligned16(p.q, p.q_s0, p.q_s1) &&
                    aligned16(p.k, p.k_s0, p.k_s1) &&
                    xa_mma_smem() <= ctx->props.sharedMemPerBlockOptin;
    const size_t gx_smem = ((size_t)GX_RG * p.d + (size_t)GX_BK * (p.d + 1) + GX_RG * GX_BK +
                            2 * GX_RG) * sizeof(float);
    if (sel_smem > ctx->props.sharedMemPerBlockOptin ||
        (!mma && gx_smem > ctx->props.sharedMemPerBlockOptin))
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: xattn_estimate: d = %d with %d key blocks "
                         "does not fit %s's %zu bytes of shared memory per block", p.d, p.nkb,
                         ctx->props.name, (size_t)ctx->props.sharedMemPerBlockOptin);

    /* Listed heads grouped by KV head (in list order), then the items: per KV head, runs of
     * query blocks x its listed heads of at most 128 reduced rows. */
    int *ints = (int *)calloc((size_t)nh + (size_t)hkv * 2 + 1, sizeof(int));
    xa_item *items = NULL;
    int n_items = 0;
    if (!ints)
        return cuda_fail(ELA_ERR_OOM, "cuda: xattn_estimate: out of host memory");
    int *glist = ints + 0, *gstart = ints + nh, *gcount = gstart + hkv;
    for (int i = 0; i < nh; i++)
        gcount[a->heads[i] / p.G]++;
    for (int g = 0, at = 0; g < hkv; g++) {
        gstart[g] = at;
        at += gcount[g];
        gcount[g] = 0;
    }
    for (int i = 0; i < nh; i++) {
        const int g = a->heads[i] / p.G;
        glist[gstart[g] + gcount[g]++] = i;
    }
    if (mma) {
        int64_t cap = 0;
        for (int g = 0; g < hkv; g++) {
            if (!gcount[g])
                continue;
            const int hpi = gcount[g] * p.rpb <= XA_ROWS ? gcount[g] : XA_ROWS / p.rpb;
            const int qpi = gcount[g] * p.rpb <= XA_ROWS ? XA_ROWS / (gcount[g] * p.rpb) : 1;
            cap += (int64_t)((p.nqb + qpi - 1) / qpi) * ((gcount[g] + hpi - 1) / hpi);
        }
        items = (xa_item *)malloc((size_t)(cap > 0 ? cap : 1) * sizeof *items);
        if (!items) {
            free(ints);
            return cuda_fail(ELA_ERR_OOM, "cuda: xattn_estimate: out of host memory for %lld "
                             "work items", (long long)cap);
        }
        for (int g = 0; g < hkv; g++) {
            if (!gcount[g])
                continue;
            const int hpi = gcount[g] * p.rpb <= XA_ROWS ? gcount[g] : XA_ROWS / p.rpb;
            const int qpi = gcount[g] * p.rpb <= XA_ROWS ? XA_ROWS / (gcount[g] * p.rpb) : 1;
            for (int qb = 0; qb < p.nqb; qb += qpi)
                for (int hs = 0; hs < gcount[g]; hs += hpi) {
                    xa_item *it = &items[n_items++];
                    it->e[0] = g;
                    it->e[1] = qb;
                    it->e[2] = qb + qpi < p.nqb ? qb + qpi : p.nqb;
                    it->e[3] = hs;
                    it->e[4] = hs + hpi < gcount[g] ? hs + hpi : gcount[g];
                    int64_t cols = (int64_t)(p.qb0 + it->e[2]) * p.rpb;
                    cols = cols < p.nrk ? cols : p.nrk;
                    it->cost = (int64_t)(it->e[2] - qb) * (it->e[4] - hs) * cols;
                }
        }
        qsort(items, (size_t)n_items, sizeof *items, cmp_items);
    }

    /* Scratch: A, the kept counter, the item counter, the lists, then the per-CTA slots. */
    int grid = 0;
    if (mma) {
        const void *kern = p.tq == ELA_BF16 ? (const void *)xa_scores_mma<true>
                                            : (const void *)xa_scores_mma<false>;
        cudaError_t err = attn_raise_smem(kern, (int)xa_mma_smem(), &xa_prepared[p.tq == ELA_BF16]);
        int per_sm = 0;
        if (err == cudaSuccess)
            err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, XA_THREADS,
                                                                 xa_mma_smem());
        if (err != cudaSuccess) {
            free(items);
            free(ints);
            return cuda_fail_err(err, "xattn_estimate tensor-core kernel setup");
        }
        grid = sms * (per_sm > 0 ? per_sm : 1);
        grid = grid < n_items ? grid : n_items;
        p.ntiles = (p.nrk + XA_COLS - 1) / XA_COLS;
    }
    const size_t a_floats = (size_t)nh * p.nqb * p.nkb;
    const size_t list_ints = (size_t)nh * 2 + (size_t)hkv + (size_t)n_items * 5;
    const size_t slot_floats = (size_t)XA_ROWS * ((size_t)p.nkb + (size_t)p.ntiles);
    size_t off_list = a_floats * 4, off_cnt = (off_list + list_ints * 4 + 15) & ~(size_t)15;
    size_t off_slots = (off_cnt + 16 + 255) & ~(size_t)255;
    size_t bytes = off_slots + (size_t)grid * slot_floats * 4;
    int *host = (int *)malloc(list_ints * sizeof(int));
    if (!host) {
        free(items);
        free(ints);
        return cuda_fail(ELA_ERR_OOM, "cuda: xattn_estimate: out of host memory");
    }
    memcpy(host, a->heads, (size_t)nh * sizeof(int));
    memcpy(host + nh, glist, (size_t)nh * sizeof(int));
    memcpy(host + 2 * nh, gstart, (size_t)hkv * sizeof(int));
    for (int x = 0; x < n_items; x++)
        memcpy(host + 2 * nh + hkv + 5 * x, items[x].e, sizeof items[x].e);
    free(items);
    free(ints);

    char *scratch = NULL;
    cudaError_t err = cudaSuccess;
    const char *what = "xattn_estimate";
    unsigned long long kept = 0;
    if ((st = cuda_scratch_alloc(ctx, bytes, (void **)&scratch)) != ELA_OK)
        goto done;
    if ((st = cuda_upload(ctx, scratch + off_list, host, list_ints * sizeof(int))) != ELA_OK)
        goto done;
    p.A = (float *)scratch;
    p.heads = (const int *)(scratch + off_list);
    p.glist = p.heads + nh;
    p.gstart = p.glist + nh;
    p.items = p.gstart + hkv;
    p.n_items = n_items;
    p.kept = (unsigned long long *)(scratch + off_cnt);
    p.counter = (int *)(scratch + off_cnt + 8);
    p.part = (float *)(scratch + off_slots);
    p.mt = p.part + (size_t)grid * XA_ROWS * p.nkb;
    ctx->generation++;
    if ((err = cudaMemsetAsync(scratch + off_cnt, 0, 16, ctx->stream)) != cudaSuccess) {
        st = cuda_fail_err(err, "cudaMemsetAsync");
        goto done;
    }
    if (mma) {
        if (p.tq == ELA_BF16)
            xa_scores_mma<true><<<grid, XA_THREADS, xa_mma_smem(), ctx->stream>>>(p);
        else
            xa_scores_mma<false><<<grid, XA_THREADS, xa_mma_smem(), ctx->stream>>>(p);
        what = "xattn_estimate tensor-core kernel";
    } else {
        if ((err = cudaMemsetAsync(p.A, 0, a_floats * 4, ctx->stream)) != cudaSuccess) {
            st = cuda_fail_err(err, "cudaMemsetAsync");
            goto done;
        }
        if (gx_smem > 48 * 1024 &&
            (err = cudaFuncSetAttribute(xa_scores_generic,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)gx_smem)) != cudaSuccess) {
            st = cuda_fail_err(err, "cudaFuncSetAttribute");
            goto done;
        }
        const int n_rg = (p.rpb + GX_RG - 1) / GX_RG;
        dim3 g2((unsigned)(p.nqb * n_rg), (unsigned)nh, 1);
        xa_scores_generic<<<g2, GX_THREADS, gx_smem, ctx->stream>>>(p, n_rg);
        what = "xattn_estimate generic kernel";
    }
    if ((err = cudaGetLastError()) != cudaSuccess) {
        st = cuda_fail_err(err, what);
        goto done;
    }
    if (!a->kept_blocks)
        p.kept = NULL;
    if (sel_smem > 48 * 1024 &&
        (err = cudaFuncSetAttribute(xa_select, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)sel_smem)) != cudaSuccess) {
        st = cuda_fail_err(err, "cudaFuncSetAttribute");
        goto done;
    }
    xa_select<<<dim3((unsigned)p.nqb, (unsigned)nh, 1), SEL_THREADS, sel_smem, ctx->stream>>>(p, P);
    if ((err = cudaGetLastError()) != cudaSuccess) {
        st = cuda_fail_err(err, "xattn_estimate selection kernel");
        goto done;
    }
    if (a->kept_blocks) {
        if ((err = cudaMemcpyAsync(&kept, p.kept, sizeof kept, cudaMemcpyDeviceToHost,
                                   ctx->stream)) != cudaSuccess) {
            st = cuda_fail_err(err, "xattn_estimate kept-blocks readback");
            goto done;
        }
        if ((st = cuda_synchronize(ctx)) != ELA_OK)
            goto done;
        *a->kept_blocks = (int64_t)kept;
    }
done:
    if (scratch)
        cuda_scratch_free(ctx, scratch);
    free(host);
    return st;
}

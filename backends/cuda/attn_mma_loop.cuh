/* The tensor-core prefill tile loop (FlashAttention-2's forward pass), shared by the dense
 * kernel (attn_dense_mma.cu) and the fused block-sparse executor (attn_blocks.cu): one query
 * tile of CUDA_MMA_BR rows of one head against the 64-key tiles of one key split that a tile
 * sequence names. The dense sequence walks every tile from the last one down; attn_blocks'
 * sequences skip the key blocks a head's mode leaves out. Everything else (loads, masking,
 * online softmax, epilogue) is the same code for both.
 *
 * Tiling: block = 4 warps = 128 query rows (tokens i0 .. i0 + 127 of one query head h) against
 * key tiles of 64 keys of KV head h / G (GQA reads the group's K/V through L2; nothing is
 * repeated in memory). Warp w owns rows 32 w .. 32 w + 31 as two m16 tiles. Shared memory:
 * Q [128][d], K [2][64][d], V [2][64][d] (two tiles in flight), 16-bit, rows of 16-byte chunks
 * XOR-swizzled by row & 7 so ldmatrix and cp.async are free of bank conflicts. Per key tile:
 *   S = Q K^T: mma.sync m16n8k16, A (Q) and B (K) by ldmatrix.x4; each thread holds its
 *     fragment of the warp's 32 x 64 scores (64 floats);
 *   mask (diagonal and last tiles only), row max (tree, then the quad's shuffles), exp2 of the
 *     scaled scores (ex2.approx), P rounded to the input dtype and packed as the next mma's A
 *     fragment (as FA2: the row sum adds the unrounded values; the rounding costs ~1e-3 of
 *     O's relative L2 error with bf16, within the 2e-3 tolerance);
 *   O is rescaled only when a row max moved somewhere in the warp (a vote): past the first
 *     tiles it rarely does;
 *   O += P V: B (V) by ldmatrix.x4.trans; O lives in registers (32 x d per warp: 128 floats per
 *     thread at d = 128).
 * Loads: cp.async (16 bytes, zero-filled past the end): K and V of the next tile of the
 * sequence are issued right after the one barrier of an iteration and land while the current
 * one is computed. */
#ifndef ELA_BACKENDS_CUDA_ATTN_MMA_LOOP_CUH
#define ELA_BACKENDS_CUDA_ATTN_MMA_LOOP_CUH

#include "attn_dense_mma.cuh"

#define MMA_THREADS 128

/* Shared memory of the loop: Q [BR][d] and K, V [2][BC][d], 16-bit. */
static inline size_t attn_mma_loop_smem(int d) {
    return (size_t)(CUDA_MMA_BR + 4 * CUDA_MMA_BC) * (size_t)d * 2;
}

/* Every key tile of the split, last first (the few tiles that need the causal mask first). */
struct mma_tiles_all {
    int n_tiles;
    __device__ __forceinline__ void init(int64_t kb, int n) {
        (void)kb;
        n_tiles = n;
    }
    __device__ __forceinline__ int first() const { return n_tiles - 1; }
    __device__ __forceinline__ int next(int t) const { return t - 1; }
};

/* Rows j0 .. j0 + ROWS - 1 of a tile, 16-byte chunks from global (row j at base + j * stride)
 * to swizzled shared memory; rows at or past `valid_end` are zero-filled and not read. */
template <int D, int ROWS>
static __device__ __forceinline__ void mma_load_tile(uint4 *dst, const char *base, int64_t stride,
                                                     int j0, int valid_end) {
    constexpr int CH = D / 8;
    constexpr int STEP = MMA_THREADS / CH; /* rows per pass of the block */
    const int r0 = threadIdx.x / CH, c = threadIdx.x % CH;
    const char *src = base + (int64_t)(j0 + r0) * stride + c * 16;
#pragma unroll
    for (int it = 0; it < ROWS / STEP; it++) {
        const int r = r0 + it * STEP;
        const bool ok = j0 + r < valid_end;
        cp_async16(&dst[r * CH + (c ^ (r & 7))], ok ? src : base, ok);
        src += STEP * stride;
    }
}

/* Query rows i0 .. i0 + BR - 1 of head h against key split s, visiting the tiles `seq` names
 * (tile t = keys kb + 64 t .. of the split, kb = s * split_keys); writes o and lse (one split)
 * or the split's partial. Uniform over the block: every thread calls it with the same values. */
template <int D, bool BF, class Seq>
static __device__ __forceinline__ void attn_mma_tile(const cuda_attn_params &p, uint4 *smem,
                                                     const int h, const int64_t i0, const int s,
                                                     Seq seq) {
    constexpr int BR = CUDA_MMA_BR, BC = CUDA_MMA_BC;
    constexpr int CH = D / 8;  /* 16-byte chunks per row */
    constexpr int KS = D / 16; /* k-steps of S = Q K^T */
    constexpr int NT = BC / 8; /* n8 tiles of S per m16 tile */
    constexpr int DT = D / 8;  /* n8 tiles of O per m16 tile */
    constexpr int BUF = BC * CH; /* one K or V tile, in 16-byte chunks */
    uint4 *sQ = smem, *sK = sQ + BR * CH, *sV = sK + 2 * BUF; /* K, V: two tiles each */

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = h / p.G;
    const int64_t i_end = i0 + BR < p.L ? i0 + BR : p.L;
    const int64_t pos0 = p.q_pos0 + i0; /* position of the tile's first row */
    const int64_t rows_end = pos0 + (i_end - i0) < p.n ? pos0 + (i_end - i0) : p.n;
    const int64_t kb = (int64_t)s * p.split_keys;
    const int64_t ke = kb + p.split_keys < rows_end ? kb + p.split_keys : rows_end;

    if (kb >= ke) { /* this split lies past every row of the tile (causal) */
        for (int idx = tid; idx < BR; idx += MMA_THREADS) {
            const int64_t i = i0 + idx;
            if (i < p.L) {
                float *ml = p.part_ml + attn_part_row(p, s, h, i) * 2;
                ml[0] = -INFINITY;
                ml[1] = 0.0f;
            }
        }
        return;
    }

    const char *qh = p.q + (int64_t)h * p.q_s1;
    const char *kh = p.k + (int64_t)g * p.k_s0, *vh = p.v + (int64_t)g * p.v_s0;
    mma_load_tile<D, BR>(sQ, qh + i0 * p.q_s0, p.q_s0, 0, (int)(i_end - i0));
    /* From here keys are relative to kb, as ints (the dispatcher keeps n below 2^31). */
    kh += kb * p.k_s1;
    vh += kb * p.v_s1;
    const int nk = (int)(ke - kb);
    seq.init(kb, (nk + BC - 1) / BC);
    int t = seq.first();
    if (t >= 0) {
        mma_load_tile<D, BC>(sK, kh, p.k_s1, t * BC, nk);
        mma_load_tile<D, BC>(sV, vh, p.v_s1, t * BC, nk);
    }
    cp_async_commit();

    float acc_o[2][DT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc_o[mt][dt][e] = 0.0f;
    float m_row[2][2], l_row[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            m_row[mt][rr] = -INFINITY;
            l_row[mt][rr] = 0.0f;
        }
    /* Row (within the tile) of this thread's accumulator entries [mt][.][2 rr + e]. */
    const int row_base = warp * 32 + (lane >> 2);
    /* Last key (relative to kb) row_base sees; rows mt * 16 + rr * 8 further see that many
     * more. Clamped: only comparisons with keys < nk matter. */
    const int64_t last64 = pos0 + row_base - kb;
    const int last0 = last64 > (int64_t)nk + BR ? nk + BR : (int)last64;
    /* First key (relative) that may be masked for some row of the tile. */
    const int64_t mask64 = pos0 - kb + 1;
    const int mask_from = mask64 > nk ? nk : (int)mask64;

    /* ldmatrix addresses. Every row an ldmatrix lane addresses has row & 7 == lane & 7, so its
     * swizzled chunk of logical chunk 8 a + b' (b' < 8) is 8 a + (b' ^ (lane & 7)): four
     * lane-dependent offsets per operand, the rest compile-time constants. */
    const float sl2 = p.scale_log2;
    const int x = lane & 7;
    const uint4 *qa = sQ + (warp * 32 + (lane & 15)) * CH;
    const uint4 *ka = sK + ((lane & 7) + ((lane >> 4) << 3)) * CH;
    const uint4 *va = sV + ((lane & 7) + ((lane >> 3) & 1) * 8) * CH;
    int off_q[4], off_k[4], off_v[4];
#pragma unroll
    for (int b = 0; b < 4; b++) {
        off_q[b] = (2 * b + (lane >> 4)) ^ x;
        off_k[b] = (2 * b + ((lane >> 3) & 1)) ^ x;
        off_v[b] = (2 * b + (lane >> 4)) ^ x;
    }

    int buf = 0;
    while (t >= 0) {
        const int tn = seq.next(t);
        const int j0 = t * BC;
        cp_async_wait_all();
        __syncthreads(); /* tile t landed; every warp is done with the other buffers */
        if (tn >= 0) {   /* the next tile lands while this one is computed */
            mma_load_tile<D, BC>(sK + (buf ^ 1) * BUF, kh, p.k_s1, tn * BC, nk);
            mma_load_tile<D, BC>(sV + (buf ^ 1) * BUF, vh, p.v_s1, tn * BC, nk);
            cp_async_commit();
        }
        const uint4 *kt = ka + buf * BUF, *vt = va + buf * BUF;

        float sacc[2][NT][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sacc[mt][nt][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            unsigned a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                ldsm_x4(a[mt], qa + mt * 16 * CH + 8 * (ks >> 2) + off_q[ks & 3]);
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                unsigned b[4];
                ldsm_x4(b, kt + np * 16 * CH + 8 * (ks >> 2) + off_k[ks & 3]);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma16816<BF>(sacc[mt][2 * np], a[mt], b[0], b[1]);
                    mma16816<BF>(sacc[mt][2 * np + 1], a[mt], b[2], b[3]);
                }
            }
        }

        /* Mask only where a key can lie past a row's position or past the range. */
        const bool need_mask = j0 + BC > mask_from || j0 + BC > nk;
        unsigned pk[2][NT][2];
        float alpha[2][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const int last = last0 + mt * 16 + rr * 8;
                const int lim = last < nk - 1 ? last : nk - 1; /* keys <= lim are seen */
                if (need_mask) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (j0 + nt * 8 + (lane & 3) * 2 + e > lim)
                                sacc[mt][nt][2 * rr + e] = -INFINITY;
                }
                /* Tree reductions: short dependency chains (two warps per scheduler leave
                 * little else to hide them behind). */
                float t8[NT];
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    t8[nt] = fmaxf(sacc[mt][nt][2 * rr], sacc[mt][nt][2 * rr + 1]);
#pragma unroll
                for (int w = NT / 2; w > 0; w >>= 1)
#pragma unroll
                    for (int nt = 0; nt < w; nt++)
                        t8[nt] = fmaxf(t8[nt], t8[nt + w]);
                float mx = t8[0];
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                /* Raw scores (the scale is positive here): max first, then one FFMA and
                 * one ex2 per score. */
                const float m_new = fmaxf(m_row[mt][rr], mx);
                const float m_use = m_new == -INFINITY ? 0.0f : m_new * sl2;
                alpha[mt][rr] = m_new == m_row[mt][rr] ? 1.0f
                                                       : attn_exp2(fmaf(m_row[mt][rr], sl2, -m_use));
                m_row[mt][rr] = m_new;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    const float p0 = attn_exp2(fmaf(sacc[mt][nt][2 * rr], sl2, -m_use));
                    const float p1 = attn_exp2(fmaf(sacc[mt][nt][2 * rr + 1], sl2, -m_use));
                    pk[mt][nt][rr] = pack2<BF>(p0, p1);
                    t8[nt] = p0 + p1;
                }
#pragma unroll
                for (int w = NT / 2; w > 0; w >>= 1)
#pragma unroll
                    for (int nt = 0; nt < w; nt++)
                        t8[nt] += t8[nt + w];
                l_row[mt][rr] = l_row[mt][rr] * alpha[mt][rr] + t8[0];
            }
        }

        /* Rescale O only when some row's max moved (rarely, after the first tiles). */
        if (__any_sync(0xffffffffu, alpha[0][0] != 1.0f || alpha[0][1] != 1.0f ||
                                    alpha[1][0] != 1.0f || alpha[1][1] != 1.0f)) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int dt = 0; dt < DT; dt++) {
                    acc_o[mt][dt][0] *= alpha[mt][0];
                    acc_o[mt][dt][1] *= alpha[mt][0];
                    acc_o[mt][dt][2] *= alpha[mt][1];
                    acc_o[mt][dt][3] *= alpha[mt][1];
                }
        }

#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            unsigned a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                a[mt][0] = pk[mt][2 * kk][0];
                a[mt][1] = pk[mt][2 * kk][1];
                a[mt][2] = pk[mt][2 * kk + 1][0];
                a[mt][3] = pk[mt][2 * kk + 1][1];
            }
#pragma unroll
            for (int dp = 0; dp < DT / 2; dp++) {
                unsigned b[4];
                ldsm_x4_t(b, vt + kk * 16 * CH + 8 * (dp >> 2) + off_v[dp & 3]);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma16816<BF>(acc_o[mt][2 * dp], a[mt], b[0], b[1]);
                    mma16816<BF>(acc_o[mt][2 * dp + 1], a[mt], b[2], b[3]);
                }
            }
        }
        t = tn;
        buf ^= 1;
    }
    cp_async_wait_all(); /* nothing in flight at exit (Q alone when no tile was visited) */

    /* Epilogue: the quad's partial row sums, then o = acc / l (or the split's partial). A row
     * that saw no key gets o = 0 and lse = -inf. */
    const int oes = attn_dtype_size(p.to);
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            float l = l_row[mt][rr];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const int64_t i = i0 + row_base + mt * 16 + rr * 8;
            if (i >= p.L)
                continue;
            const int col0 = (lane & 3) * 2;
            if (p.splits > 1) {
                const int64_t pr = attn_part_row(p, s, h, i);
                float *po = p.part_o + pr * D;
#pragma unroll
                for (int dt = 0; dt < DT; dt++)
                    *(float2 *)(po + dt * 8 + col0) =
                        make_float2(acc_o[mt][dt][2 * rr], acc_o[mt][dt][2 * rr + 1]);
                if ((lane & 3) == 0) {
                    p.part_ml[pr * 2] = m_row[mt][rr] * sl2;
                    p.part_ml[pr * 2 + 1] = l;
                }
                continue;
            }
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            char *orow = p.o + i * p.o_s0 + (int64_t)h * p.o_s1;
#pragma unroll
            for (int dt = 0; dt < DT; dt++)
                attn_store2(orow + (int64_t)(dt * 8 + col0) * oes, p.to,
                            acc_o[mt][dt][2 * rr] * inv, acc_o[mt][dt][2 * rr + 1] * inv);
            if (p.lse && (lane & 3) == 0)
                *(float *)(p.lse + i * p.lse_s0 + (int64_t)h * p.lse_s1) =
                    attn_lse(m_row[mt][rr] * sl2, l);
        }
    }
}

#endif

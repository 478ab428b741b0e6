/* CUDA dense attention, decode on tensor cores (DESIGN.md 4.1; flash-decoding): up to 16 query
 * rows per KV head (L * G <= 16), q, k, v one 16-bit dtype, d 64 or 128, a positive scale.
 * Keys split over the whole GPU; the splits are merged by LSE in attn_dense.cu. Memory bound:
 * each K and V byte is read once for all G query heads of its KV head.
 *
 * Tiling: block = 4 warps = one (key split s, KV head g). The R = L * G query rows of g form one
 * m16 tile (rows past R are zero), held as mma A fragments in registers for the whole split.
 * Each warp streams its own 32-key tiles (tiles w, w + 4, ... of the split) through a private
 * 3-stage cp.async ring in shared memory (K and V, 16 KiB per stage at d = 128), so warps never
 * wait for each other inside the loop. Per tile: S = Q K^T (4 n8 tiles, ldmatrix.x4 of K), mask
 * (range end, causal), online softmax on the 16 x 32 fragment (quad shuffles), P rounded to the
 * dtype, O += P V (ldmatrix.x4.trans of V; O 16 x d in registers). At the end the 4 warps'
 * (m, l, O) are combined through shared memory into one partial row per query row.
 * Per 16 KiB of K and V a warp issues ~64 mma, ~32 ldmatrix and 32 cp.async per lane: far
 * below the instruction budget of HBM speed, so the kernel should run at copy bandwidth
 * (~3 TB/s on an H100): 2 stages in flight = 128 KiB per SM. Measured (H100, bf16, d = 128,
 * 128K keys, Hq 32, Hkv 8): the kernel 181 us = 2.98 TB/s (ncu); a whole call with the merge
 * and a synchronize 0.20 ms = 2.69 TB/s, 1.25x SDPA flash and 1.14x cuDNN. */
#include "attn_dense_mma.cuh"

#define DM_WARPS 4
#define DM_THREADS (DM_WARPS * 32)
#define DM_TK 32    /* keys per tile */
#define DM_STAGES 3 /* ring depth per warp */

template <int D>
static __device__ __forceinline__ void dm_load_tile(uint4 *dst, const char *base, int64_t stride,
                                                    int j0, int nk, int lane) {
    constexpr int CH = D / 8;
    constexpr int STEP = 32 / CH; /* rows per pass of the warp */
    const int r0 = lane / CH, c = lane % CH;
    const char *src = base + (int64_t)(j0 + r0) * stride + c * 16;
#pragma unroll
    for (int it = 0; it < DM_TK / STEP; it++) {
        const int r = r0 + it * STEP;
        const bool ok = j0 + r < nk;
        cp_async16(&dst[r * CH + (c ^ (r & 7))], ok ? src : base, ok);
        src += STEP * stride;
    }
}

/* One 16-bit element pair (a, a + 1) of q as a packed register; rows past R are zero. */
static __device__ __forceinline__ unsigned dm_q_pair(const char *row, int col) {
    if (!row)
        return 0u;
    const unsigned short *p = (const unsigned short *)(row + (int64_t)col * 2);
    return (unsigned)p[0] | ((unsigned)p[1] << 16);
}

template <int D, bool BF>
__global__ void __launch_bounds__(DM_THREADS, 1) attn_dense_decode_mma(const cuda_attn_params p) {
    constexpr int CH = D / 8, KS = D / 16, DT = D / 8, NT = DM_TK / 8;
    constexpr int STAGE = 2 * DM_TK * CH; /* K then V of one tile, 16-byte chunks */
    extern __shared__ uint4 dm_shared[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint4 *ring = dm_shared + warp * DM_STAGES * STAGE;
    const int s = blockIdx.x, g = blockIdx.y;
    const int R = (int)(p.L * p.G);
    const int64_t kb = (int64_t)s * p.split_keys;

    /* Rows g8 = lane / 4 and g8 + 8 of the m16 tile: their q rows and last visible keys. */
    const int gr = lane >> 2, tq = lane & 3;
    const char *qrow[2];
    int last[2];
    const int64_t pos_max = p.q_pos0 + p.L - 1; /* the last row is the latest */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int r = gr + rr * 8;
        if (r < R) {
            const int64_t i = r / p.G;
            const int h = g * p.G + r % p.G;
            qrow[rr] = p.q + i * p.q_s0 + (int64_t)h * p.q_s1;
            const int64_t rel = p.q_pos0 + i - kb;
            last[rr] = rel > INT32_MAX ? INT32_MAX : rel < -1 ? -1 : (int)rel;
        } else {
            qrow[rr] = NULL;
            last[rr] = INT32_MAX;
        }
    }
    const int64_t end = pos_max + 1 < p.n ? pos_max + 1 : p.n;
    const int64_t ke = kb + p.split_keys < end ? kb + p.split_keys : end;
    const int nk = ke > kb ? (int)(ke - kb) : 0;
    const int n_tiles = (nk + DM_TK - 1) / DM_TK;

    /* q as A fragments: a0 (row gr, cols 2tq..), a1 (row gr + 8), a2 / a3 (cols + 8). */
    unsigned qa[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        qa[ks][0] = dm_q_pair(qrow[0], ks * 16 + 2 * tq);
        qa[ks][1] = dm_q_pair(qrow[1], ks * 16 + 2 * tq);
        qa[ks][2] = dm_q_pair(qrow[0], ks * 16 + 2 * tq + 8);
        qa[ks][3] = dm_q_pair(qrow[1], ks * 16 + 2 * tq + 8);
    }

    const char *kh = p.k + (int64_t)g * p.k_s0 + kb * p.k_s1;
    const char *vh = p.v + (int64_t)g * p.v_s0 + kb * p.v_s1;
    /* This warp's tiles: warp, warp + 4, ...; the ring holds the next DM_STAGES - 1 ahead. */
#pragma unroll
    for (int st = 0; st < DM_STAGES - 1; st++) {
        const int tile = warp + st * DM_WARPS;
        if (tile < n_tiles) {
            dm_load_tile<D>(ring + st * STAGE, kh, p.k_s1, tile * DM_TK, nk, lane);
            dm_load_tile<D>(ring + st * STAGE + DM_TK * CH, vh, p.v_s1, tile * DM_TK, nk, lane);
        }
        cp_async_commit();
    }

    const int x = lane & 7;
    int off_k[4], off_v[4];
#pragma unroll
    for (int b = 0; b < 4; b++) {
        off_k[b] = (2 * b + ((lane >> 3) & 1)) ^ x;
        off_v[b] = (2 * b + (lane >> 4)) ^ x;
    }
    const int krow = (lane & 7) + ((lane >> 4) << 3), vrow = (lane & 7) + ((lane >> 3) & 1) * 8;
    const float sl2 = p.scale_log2;

    float acc[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[dt][e] = 0.0f;
    float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.0f, 0.0f};

    int st = 0;
    for (int it = 0; warp + it * DM_WARPS < n_tiles; it++) {
        const int j0 = (warp + it * DM_WARPS) * DM_TK;
        cp_async_wait_group<DM_STAGES - 2>();
        __syncwarp();
        {   /* refill the stage consumed last iteration */
            const int tile = warp + (it + DM_STAGES - 1) * DM_WARPS;
            const int fill = st == 0 ? DM_STAGES - 1 : st - 1;
            if (tile < n_tiles) {
                dm_load_tile<D>(ring + fill * STAGE, kh, p.k_s1, tile * DM_TK, nk, lane);
                dm_load_tile<D>(ring + fill * STAGE + DM_TK * CH, vh, p.v_s1, tile * DM_TK, nk,
                                lane);
            }
            cp_async_commit();
        }
        const uint4 *sk = ring + st * STAGE, *sv = sk + DM_TK * CH;

        float sacc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                sacc[nt][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                unsigned b[4];
                ldsm_x4(b, sk + (np * 16 + krow) * CH + 8 * (ks >> 2) + off_k[ks & 3]);
                mma16816<BF>(sacc[2 * np], qa[ks], b[0], b[1]);
                mma16816<BF>(sacc[2 * np + 1], qa[ks], b[2], b[3]);
            }
        }

        const bool need_mask = j0 + DM_TK > nk || j0 + DM_TK - 1 > min(last[0], last[1]);
        unsigned pk[NT][2];
        float alpha[2];
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const int lim = last[rr] < nk - 1 ? last[rr] : nk - 1;
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    if (need_mask && j0 + nt * 8 + 2 * tq + e > lim)
                        sacc[nt][2 * rr + e] = -INFINITY;
                    mx = fmaxf(mx, sacc[nt][2 * rr + e]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_row[rr], mx);
            const float m_use = m_new == -INFINITY ? 0.0f : m_new * sl2;
            alpha[rr] = m_new == m_row[rr] ? 1.0f : attn_exp2(fmaf(m_row[rr], sl2, -m_use));
            m_row[rr] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                pk[nt][rr] = pack_round<BF>(attn_exp2(fmaf(sacc[nt][2 * rr], sl2, -m_use)),
                                            attn_exp2(fmaf(sacc[nt][2 * rr + 1], sl2, -m_use)),
                                            sum);
            l_row[rr] = l_row[rr] * alpha[rr] + sum;
        }
        if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
                acc[dt][0] *= alpha[0];
                acc[dt][1] *= alpha[0];
                acc[dt][2] *= alpha[1];
                acc[dt][3] *= alpha[1];
            }
        }
#pragma unroll
        for (int kk = 0; kk < DM_TK / 16; kk++) {
            const unsigned a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0],
                                   pk[2 * kk + 1][1]};
#pragma unroll
            for (int dp = 0; dp < DT / 2; dp++) {
                unsigned b[4];
                ldsm_x4_t(b, sv + (kk * 16 + vrow) * CH + 8 * (dp >> 2) + off_v[dp & 3]);
                mma16816<BF>(acc[2 * dp], a, b[0], b[1]);
                mma16816<BF>(acc[2 * dp + 1], a, b[2], b[3]);
            }
        }
        __syncwarp(); /* every lane is done with this stage before it is refilled */
        st = st + 1 == DM_STAGES ? 0 : st + 1;
    }
    cp_async_wait_group<0>();

    /* Combine the warps: (m, l, O) of each row through shared memory (the rings are free). */
    __syncthreads();
    float *s_acc = (float *)dm_shared;         /* [DM_WARPS][16][D] */
    float *s_m = s_acc + DM_WARPS * 16 * D;    /* [DM_WARPS][16], exp2 domain */
    float *s_l = s_m + DM_WARPS * 16;          /* [DM_WARPS][16] */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        float l = l_row[rr];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int r = gr + rr * 8;
        float *dst = s_acc + (warp * 16 + r) * D;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            dst[dt * 8 + 2 * tq] = acc[dt][2 * rr];
            dst[dt * 8 + 2 * tq + 1] = acc[dt][2 * rr + 1];
        }
        if (tq == 0) {
            s_m[warp * 16 + r] = m_row[rr] * sl2;
            s_l[warp * 16 + r] = l;
        }
    }
    __syncthreads();
    const int oes = attn_dtype_size(p.to);
    for (int idx = threadIdx.x; idx < R * D; idx += DM_THREADS) {
        const int r = idx / D, c = idx % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DM_WARPS; w++)
            mx = fmaxf(mx, s_m[w * 16 + r]);
        const float mu = mx == -INFINITY ? 0.0f : mx;
        float lsum = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < DM_WARPS; w++) {
            const float wt = exp2f(s_m[w * 16 + r] - mu);
            lsum += wt * s_l[w * 16 + r];
            o += wt * s_acc[(w * 16 + r) * D + c];
        }
        const int64_t i = r / p.G;
        const int h = g * p.G + r % p.G;
        if (p.splits > 1) {
            const int64_t pr = attn_part_row(p, s, h, i);
            p.part_o[pr * D + c] = o;
            if (c == 0) {
                p.part_ml[pr * 2] = mx;
                p.part_ml[pr * 2 + 1] = lsum;
            }
        } else {
            const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
            attn_store(p.o + i * p.o_s0 + (int64_t)h * p.o_s1 + (int64_t)c * oes, p.to, o * inv);
            if (p.lse && c == 0)
                *(float *)(p.lse + i * p.lse_s0 + (int64_t)h * p.lse_s1) = attn_lse(mx, lsum);
        }
    }
}

typedef void (*dm_kernel)(const cuda_attn_params);
static unsigned dm_prepared[4]; /* per kernel: devices whose smem limit is raised */

static int dm_index(int d, int dtype) {
    if (d != 64 && d != 128)
        return -1;
    return (d == 128) * 2 + (dtype == ATTN_BF16);
}

static dm_kernel dm_pick(int d, int dtype) {
    switch (dm_index(d, dtype)) {
    case 0: return attn_dense_decode_mma<64, false>;
    case 1: return attn_dense_decode_mma<64, true>;
    case 2: return attn_dense_decode_mma<128, false>;
    case 3: return attn_dense_decode_mma<128, true>;
    default: return NULL;
    }
}

static size_t dm_smem(int d) {
    size_t ring = (size_t)DM_WARPS * DM_STAGES * 2 * DM_TK * (size_t)d * 2;
    size_t combine = ((size_t)DM_WARPS * 16 * (size_t)d + 2 * DM_WARPS * 16) * sizeof(float);
    return ring > combine ? ring : combine;
}

extern "C" int cuda_attn_decode_mma_fits(int d, int dtype) {
    return (d == 64 || d == 128) && (dtype == ATTN_F16 || dtype == ATTN_BF16);
}

static cudaError_t dm_prepare(dm_kernel k, int d, int dtype) {
    return attn_raise_smem((const void *)k, (int)dm_smem(d), &dm_prepared[dm_index(d, dtype)]);
}

extern "C" int cuda_attn_decode_mma_blocks_per_sm(int d, int dtype) {
    dm_kernel k = dm_pick(d, dtype);
    int n = 0;
    if (!k || dm_prepare(k, d, dtype) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, DM_THREADS, dm_smem(d)) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaError_t cuda_attn_decode_mma_launch(const cuda_attn_params *p, cudaStream_t stream) {
    dm_kernel k = dm_pick(p->d, p->tkv);
    if (!k || p->hkv > 65535)
        return cudaErrorInvalidValue;
    cudaError_t err = dm_prepare(k, p->d, p->tkv);
    if (err != cudaSuccess)
        return err;
    dim3 grid((unsigned)p->splits, (unsigned)p->hkv, 1);
    k<<<grid, DM_THREADS, dm_smem(p->d), stream>>>(*p);
    return cudaGetLastError();
}

/* CUDA dense attention, decode (DESIGN.md 4.1): few query rows per KV head (L * G <= 32), keys
 * split over the whole GPU (flash-decoding), the splits merged by LSE in attn_dense.cu. Memory
 * bound: each K and V byte is read once, for all G query heads of its KV head at the same time.
 *
 * Tiling: block = 4 warps = one (key split s, KV head g, group of RB query rows); the RB rows
 * are (token i, head h) pairs of KV head g, row r = i * G + (h - g G). A key row of K (d
 * elements, 16-byte chunks) is spread over LPK = d * esize / 16 lanes, so a warp covers
 * KPS = 32 / LPK keys per step; lane owns key slot lane / LPK and columns col .. col + EPL of
 * it, and holds q[r][col ..] (pre-scaled to the exp2 domain) and its own f32 accumulator
 * acc[r][col ..] for every row. Warps take batches of U * KPS keys in turn; per batch: 16-byte
 * loads of U K chunks and U V chunks per lane (the next batch's K is loaded while this batch's
 * softmax and P V run; U = 4, or 2 at RB = 8), partial dots reduced over the LPK lanes of a key with shuffles, one
 * max per batch shared by the warp (so slots never rescale against each other), exp2 weights,
 * acc += p v. At the end the key slots and then the 4 warps are combined (shuffles, shared
 * memory) into one partial row per block.
 * Bound: HBM bandwidth: 2 d esize bytes per key per KV head; on an H100 at 128K keys, 8 KV
 * heads and d = 128 bf16, 512 MiB per call, ~0.18 ms at 3 TB/s. */
#include "attn_dense_device.cuh"

#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)

/* 16-byte load that bypasses L1 and asks L2 for the whole 256-byte line (K and V rows are
 * read once and in full). */
static __device__ __forceinline__ uint4 dec_load(const char *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

template <int KT>
static __device__ __forceinline__ void dec_unpack(const uint4 &x, float *f) {
    const unsigned w[4] = {x.x, x.y, x.z, x.w};
    if (KT == ATTN_F32) {
#pragma unroll
        for (int e = 0; e < 4; e++)
            f[e] = __uint_as_float(w[e]);
    } else if (KT == ATTN_BF16) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            f[2 * e] = __uint_as_float(w[e] << 16);
            f[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
        }
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            __half2 h2 = *(const __half2 *)&w[e];
            float2 f2 = __half22float2(h2);
            f[2 * e] = f2.x;
            f[2 * e + 1] = f2.y;
        }
    }
}

template <int D, int KT, int RB>
__global__ void __launch_bounds__(DEC_THREADS) attn_dense_decode(const cuda_attn_params p) {
    constexpr int ES = KT == ATTN_F32 ? 4 : 2;
    constexpr int EPL = 16 / ES;    /* elements per lane per key */
    constexpr int LPK = D / EPL;    /* lanes per key */
    constexpr int KPS = 32 / LPK;   /* keys per warp step */
    constexpr int U = RB >= 8 ? 2 : 4; /* key steps per batch: registers allow fewer at RB 8 */
    constexpr int BK = U * KPS;        /* keys per warp batch */
    static_assert(LPK >= 1 && LPK <= 32 && 32 % LPK == 0, "head dim and dtype give 1-32 lanes");
    __shared__ float s_m[DEC_WARPS][RB], s_l[DEC_WARPS][RB];
    __shared__ float s_acc[DEC_WARPS][RB][D];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int slot = lane / LPK, col = (lane % LPK) * EPL;
    const int s = blockIdx.x, g = blockIdx.y, rg = blockIdx.z;
    const int64_t R = p.L * p.G;

    /* This lane's slice of each row's q; key positions from here on are relative to the
     * split's first key kb (int: the dispatcher keeps n below 2^31). */
    float q[RB][EPL];
    int last[RB]; /* last key each row sees, relative to kb (may be negative) */
    int64_t pos_max = 0;
    const int64_t kb = (int64_t)s * p.split_keys;
    const int qes = attn_dtype_size(p.tq);
#pragma unroll
    for (int r = 0; r < RB; r++) {
        const int64_t rr = (int64_t)rg * RB + r;
        if (rr < R) {
            const int64_t i = rr / p.G;
            const int h = g * p.G + (int)(rr % p.G);
            const char *qrow = p.q + i * p.q_s0 + (int64_t)h * p.q_s1 + (int64_t)col * qes;
#pragma unroll
            for (int e = 0; e < EPL; e++)
                q[r][e] = attn_load(qrow + e * qes, p.tq) * p.scale_log2;
            const int64_t pos = p.q_pos0 + i;
            pos_max = pos;
            const int64_t rel = pos - kb;
            last[r] = rel > INT32_MAX ? INT32_MAX : rel < -1 ? -1 : (int)rel;
        } else {
#pragma unroll
            for (int e = 0; e < EPL; e++)
                q[r][e] = 0.0f;
            last[r] = INT32_MAX; /* padding row: sees every key, never stored */
        }
    }
    const int64_t end = pos_max + 1 < p.n ? pos_max + 1 : p.n;
    const int64_t ke64 = kb + p.split_keys < end ? kb + p.split_keys : end;
    const int nk = ke64 > kb ? (int)(ke64 - kb) : 0; /* keys of this split: [kb, kb + nk) */

    float m[RB], l[RB], acc[RB][EPL];
#pragma unroll
    for (int r = 0; r < RB; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++)
            acc[r][e] = 0.0f;
    }
    const char *kbase = p.k + (int64_t)g * p.k_s0 + kb * p.k_s1 + (int64_t)col * ES;
    const char *vbase = p.v + (int64_t)g * p.v_s0 + kb * p.v_s1 + (int64_t)col * ES;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);

    uint4 kr[U], vr[U];
    int jb = warp * BK + slot; /* this lane's key in step 0 of its batch */
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int j = jb + u * KPS;
        kr[u] = j < nk ? dec_load(kbase + (int64_t)j * p.k_s1) : zero;
    }
    for (; jb - slot < nk; jb += DEC_WARPS * BK) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = jb + u * KPS;
            vr[u] = j < nk ? dec_load(vbase + (int64_t)j * p.v_s1) : zero;
        }
        float sc[U][RB];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kf[EPL];
            dec_unpack<KT>(kr[u], kf);
            const int j = jb + u * KPS;
#pragma unroll
            for (int r = 0; r < RB; r++) {
                float dot = 0.0f;
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    dot = fmaf(q[r][e], kf[e], dot);
#pragma unroll
                for (int off = LPK / 2; off > 0; off >>= 1)
                    dot += __shfl_xor_sync(0xffffffffu, dot, off);
                sc[u][r] = j < nk && j <= last[r] ? dot : -INFINITY;
            }
        }
        /* The next batch's K, in flight during this batch's softmax and P V. */
        const int jn = jb + DEC_WARPS * BK;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = jn + u * KPS;
            kr[u] = j < nk ? dec_load(kbase + (int64_t)j * p.k_s1) : zero;
        }
#pragma unroll
        for (int r = 0; r < RB; r++) {
            float mx = sc[0][r];
#pragma unroll
            for (int u = 1; u < U; u++)
                mx = fmaxf(mx, sc[u][r]);
#pragma unroll
            for (int off = LPK; off < 32; off <<= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float m_new = fmaxf(m[r], mx);
            const float m_use = m_new == -INFINITY ? 0.0f : m_new;
            const float alpha = attn_exp2(m[r] - m_use);
            m[r] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < U; u++) {
                sc[u][r] = attn_exp2(sc[u][r] - m_use);
                sum += sc[u][r];
            }
            l[r] = l[r] * alpha + sum;
#pragma unroll
            for (int e = 0; e < EPL; e++)
                acc[r][e] *= alpha;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float vf[EPL];
            dec_unpack<KT>(vr[u], vf);
#pragma unroll
            for (int r = 0; r < RB; r++)
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    acc[r][e] = fmaf(sc[u][r], vf[e], acc[r][e]);
        }
    }

    /* Key slots of the warp share m: sum their l and acc. */
#pragma unroll
    for (int r = 0; r < RB; r++) {
#pragma unroll
        for (int off = LPK; off < 32; off <<= 1) {
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], off);
#pragma unroll
            for (int e = 0; e < EPL; e++)
                acc[r][e] += __shfl_xor_sync(0xffffffffu, acc[r][e], off);
        }
    }
    if (slot == 0) {
#pragma unroll
        for (int r = 0; r < RB; r++)
#pragma unroll
            for (int e = 0; e < EPL; e++)
                s_acc[warp][r][col + e] = acc[r][e];
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < RB; r++) {
            s_m[warp][r] = m[r];
            s_l[warp][r] = l[r];
        }
    }
    __syncthreads();

    /* Warps -> one row per (r, column) thread. */
    const int oes = attn_dtype_size(p.to);
    for (int idx = threadIdx.x; idx < RB * D; idx += DEC_THREADS) {
        const int r = idx / D, c = idx % D;
        const int64_t rr = (int64_t)rg * RB + r;
        if (rr >= R)
            continue;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
            mx = fmaxf(mx, s_m[w][r]);
        const float mu = mx == -INFINITY ? 0.0f : mx;
        float lsum = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float wt = exp2f(s_m[w][r] - mu);
            lsum += wt * s_l[w][r];
            o += wt * s_acc[w][r][c];
        }
        const int64_t i = rr / p.G;
        const int h = g * p.G + (int)(rr % p.G);
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

typedef void (*dec_kernel)(const cuda_attn_params);

static int dec_rb(const cuda_attn_params *p) { return p->L * p->G <= 4 ? 4 : 8; }

static dec_kernel dec_pick(const cuda_attn_params *p) {
#define DEC_CASE(D_, KT_, RB_)                                                                   \
    if (p->d == D_ && p->tkv == KT_ && dec_rb(p) == RB_)                                       \
        return attn_dense_decode<D_, KT_, RB_>;
#define DEC_RBS(D_, KT_) DEC_CASE(D_, KT_, 4) DEC_CASE(D_, KT_, 8)
#define DEC_KTS(D_) DEC_RBS(D_, ATTN_F32) DEC_RBS(D_, ATTN_F16) DEC_RBS(D_, ATTN_BF16)
    DEC_KTS(64)
    DEC_KTS(128)
#undef DEC_KTS
#undef DEC_RBS
#undef DEC_CASE
    return NULL;
}

extern "C" int cuda_attn_decode_fits(int d) { return d == 64 || d == 128; }

extern "C" int cuda_attn_decode_row_groups(const cuda_attn_params *p) {
    const int rb = dec_rb(p);
    return (int)((p->L * p->G + rb - 1) / rb);
}

extern "C" int cuda_attn_decode_blocks_per_sm(const cuda_attn_params *p) {
    dec_kernel k = dec_pick(p);
    int n = 0;
    if (!k || cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, DEC_THREADS, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaError_t cuda_attn_decode_launch(const cuda_attn_params *p, cudaStream_t stream) {
    dec_kernel k = dec_pick(p);
    if (!k || p->hkv > 65535)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)p->splits, (unsigned)p->hkv, (unsigned)cuda_attn_decode_row_groups(p));
    k<<<grid, DEC_THREADS, 0, stream>>>(*p);
    return cudaGetLastError();
}

/* Attention of one query row's G heads (one KV head) over a list of keys, a tile of 32 at a
 * time: the body of attn_gather.cu (keys an index list names) and attn_nsa.cu (the keys of the
 * blocks ela_nsa_select lists). A block of AL_THREADS threads per (query row, KV head, split of
 * the list) holds the G q rows (pre-scaled into the exp2 domain) and f32 accumulators in shared
 * memory. Per tile the caller writes the tile's key rows to skey (-1: not visible) and
 * synchronises; al_tile then copies the tile's K and V rows to shared memory as f32 (every load
 * in flight at once: the rows are random, so a tile costs about one memory latency), warp w
 * scores keys w, w + 4, ... (lanes split d, each K row serves the G heads, in chunks of 8), a
 * thread per head runs the online softmax of the tile, and thread c adds column c of P V for
 * the G heads. al_finish writes o (and lse) or, with key splits, the split's partial for
 * attn_dense's LSE merge. */
#ifndef ELA_BACKENDS_CUDA_ATTN_LIST_CUH
#define ELA_BACKENDS_CUDA_ATTN_LIST_CUH

#include "attn_dense_device.cuh"

#define AL_THREADS 128
#define AL_TILE 32
#define AL_HEADS 8 /* heads per register chunk */

typedef struct {
    float *sq, *sacc, *sp, *sm, *sl, *salpha, *sk, *sv;
    int *skey; /* AL_TILE keys; a caller's own ints may follow */
} al_smem;

/* Shared bytes of the layout al_carve makes, plus `extra_ints` after skey. */
static inline size_t al_smem_bytes(int G, int d, int extra_ints) {
    return ((size_t)2 * G * d + (size_t)G * AL_TILE + 3 * (size_t)G + 2 * (size_t)AL_TILE * d) *
               sizeof(float) +
           ((size_t)AL_TILE + (size_t)extra_ints) * sizeof(int);
}

static __device__ __forceinline__ al_smem al_carve(float *base, int G, int d) {
    al_smem s;
    s.sq = base;
    s.sacc = s.sq + G * d;
    s.sp = s.sacc + G * d;
    s.sm = s.sp + G * AL_TILE;
    s.sl = s.sm + G;
    s.salpha = s.sl + G;
    s.sk = s.salpha + G;
    s.sv = s.sk + AL_TILE * d;
    s.skey = (int *)(s.sv + AL_TILE * d);
    return s;
}

/* q rows of row i, KV head g into shared memory; accumulators, maxima and sums reset. */
static __device__ void al_begin(const cuda_attn_params &p, const al_smem &s, int64_t i, int g) {
    const int G = p.G, d = p.d, qes = attn_dtype_size(p.tq);
    for (int e = threadIdx.x; e < G * d; e += AL_THREADS) {
        const int r = e / d, c = e % d;
        const char *qrow = p.q + i * p.q_s0 + (int64_t)(g * G + r) * p.q_s1;
        s.sq[e] = attn_load(qrow + (int64_t)c * qes, p.tq) * p.scale_log2;
        s.sacc[e] = 0.0f;
    }
    for (int r = threadIdx.x; r < G; r += AL_THREADS) {
        s.sm[r] = -INFINITY;
        s.sl[r] = 0.0f;
    }
}

/* One tile of nk keys (skey[0, nk), written and synchronised by the caller; kg, vg: KV head
 * g's K and V). Ends synchronised except for sacc, which only the thread of its column
 * touches. */
static __device__ void al_tile(const cuda_attn_params &p, const al_smem &s, const char *kg,
                               const char *vg, int nk) {
    const int G = p.G, d = p.d, kes = attn_dtype_size(p.tkv);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int e = tid; e < nk * d; e += AL_THREADS) {
        const int j = e / d, c = e % d;
        const int key = s.skey[j];
        float kx = 0.0f, vx = 0.0f;
        if (key >= 0) {
            kx = attn_load(kg + (int64_t)key * p.k_s1 + (int64_t)c * kes, p.tkv);
            vx = attn_load(vg + (int64_t)key * p.v_s1 + (int64_t)c * kes, p.tkv);
        }
        s.sk[e] = kx;
        s.sv[e] = vx;
    }
    __syncthreads();
    for (int jj = warp; jj < nk; jj += AL_THREADS / 32) {
        const bool hidden = s.skey[jj] < 0;
        for (int r0 = 0; r0 < G; r0 += AL_HEADS) {
            float part[AL_HEADS];
#pragma unroll
            for (int rr = 0; rr < AL_HEADS; rr++)
                part[rr] = 0.0f;
            for (int c = lane; c < d; c += 32) {
                const float kv = s.sk[jj * d + c];
#pragma unroll
                for (int rr = 0; rr < AL_HEADS; rr++)
                    if (r0 + rr < G)
                        part[rr] += s.sq[(r0 + rr) * d + c] * kv;
            }
#pragma unroll
            for (int rr = 0; rr < AL_HEADS; rr++)
                if (r0 + rr < G) { /* uniform over the warp */
                    const float v = attn_warp_sum(part[rr]);
                    if (lane == 0)
                        s.sp[(r0 + rr) * AL_TILE + jj] = hidden ? -INFINITY : v;
                }
        }
    }
    __syncthreads();
    for (int r = tid; r < G; r += AL_THREADS) {
        float *pr = s.sp + r * AL_TILE;
        float mx = -INFINITY;
        for (int j = 0; j < nk; j++)
            mx = fmaxf(mx, pr[j]);
        const float m_old = s.sm[r], m_new = fmaxf(m_old, mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = exp2f(m_old - m_use);
        float sum = 0.0f;
        for (int j = 0; j < nk; j++) {
            pr[j] = exp2f(pr[j] - m_use);
            sum += pr[j];
        }
        s.sl[r] = s.sl[r] * alpha + sum;
        s.sm[r] = m_new;
        s.salpha[r] = alpha;
    }
    __syncthreads();
    for (int c = tid; c < d; c += AL_THREADS) {
        for (int r0 = 0; r0 < G; r0 += AL_HEADS) {
            float t[AL_HEADS];
#pragma unroll
            for (int rr = 0; rr < AL_HEADS; rr++)
                t[rr] = 0.0f;
            for (int j = 0; j < nk; j++) {
                const float vv = s.sv[j * d + c];
#pragma unroll
                for (int rr = 0; rr < AL_HEADS; rr++)
                    if (r0 + rr < G)
                        t[rr] += s.sp[(r0 + rr) * AL_TILE + j] * vv;
            }
#pragma unroll
            for (int rr = 0; rr < AL_HEADS; rr++)
                if (r0 + rr < G) {
                    float *acc = s.sacc + (r0 + rr) * d + c;
                    *acc = *acc * s.salpha[r0 + rr] + t[rr];
                }
        }
    }
}

/* Row i's output for the G heads of g: o = gain O / l (0 for a row that saw no key) and lse,
 * or with key splits the split's partial (O scaled by gain, m, l), which the merge turns into
 * the same o. gain: per head of g in shared memory, or NULL for 1 (gain must not change the
 * lse: the gated attn_nsa has none). */
static __device__ void al_finish(const cuda_attn_params &p, const al_smem &s, int64_t i, int g,
                                 int split, const float *gain) {
    const int G = p.G, d = p.d, oes = attn_dtype_size(p.to);
    __syncthreads();
    for (int e = threadIdx.x; e < G * d; e += AL_THREADS) {
        const int r = e / d, c = e % d, h = g * G + r;
        const float f = gain ? gain[r] : 1.0f;
        if (p.splits > 1) {
            const int64_t pr = attn_part_row(p, split, h, i);
            p.part_o[pr * d + c] = s.sacc[e] * f;
            if (c == 0) {
                p.part_ml[pr * 2] = s.sm[r];
                p.part_ml[pr * 2 + 1] = s.sl[r];
            }
            continue;
        }
        const float l = s.sl[r], inv = l > 0.0f ? f / l : 0.0f;
        attn_store(p.o + i * p.o_s0 + (int64_t)h * p.o_s1 + (int64_t)c * oes, p.to, s.sacc[e] * inv);
        if (p.lse && c == 0)
            *(float *)(p.lse + i * p.lse_s0 + (int64_t)h * p.lse_s1) = attn_lse(s.sm[r], l);
    }
}

#endif

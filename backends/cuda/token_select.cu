/* CUDA token_select (op 5: DESIGN.md 4.5, PAPERS.md 2.3): Token Sparse Attention's Dynamic Token
 * Coverage selection over a prompt of L tokens, window w, prefix Lp = L - w, with the CPU
 * backend's semantics (backends/cpu/token_select.c): the same two-pass scoring, double
 * precision from the window mean on, ties to the lower index. Everything runs on the GPU; the
 * only wait is the readback of n_keep (the API returns n_sel).
 * Rows are (query head h, window query i) at position Lp + i, head-major (row h w + i), so KV
 * head g owns rows [g G w, (g + 1) G w). Kernels, in stream order:
 *   stats  (grid: KV head x 64-row block, key split): the score tile of token_tile.cuh over the
 *          causal keys of the split, online softmax: each row's max m and sum l (exp2 domain).
 *   merge  the splits' (m, l) of each row.
 *          With q, k one 16-bit dtype and d 64 or 128, pass 1 is instead attn_dense's tensor-core
 *          prefill over the window rows (q_pos0 = Lp, v = k, o discarded) for its LSE: m = lse
 *          log2(e), l = 1 (~2x the flops of the scores alone, at ~30x the CUDA-core rate).
 *   probs  (grid: KV head x 64-key tile of the prefix): the tile's scores against all G w rows
 *          of the KV head in chunks of 64 rows (bit-identical to pass 1's), P = exp2(S - m) / l,
 *          summed per head in double by the thread owning the key (one writer per (head, key):
 *          no atomics); a_h[j] = sum / w.
 *   pool   avg-pool of each head's a_h (zero padding, divisor pool) and its sum; a non-finite
 *          value raises a flag (inf/NaN in q or k: an error, as on the CPU).
 *   mean   the head mean g[j] and its sum.
 *   cut    one block: the coverage cut without a sort. g / (sum + 1e-8) are non-negative
 *          doubles, so their bits order them; a radix walk over 8-bit digits (histograms of
 *          counts and double sums per bin) finds where the ascending cumulative sum crosses
 *          tau: n_drop0 = the number of smallest values whose cumulative sum stays below tau.
 *          Then n_keep as the CPU computes it (0: dense).
 *   top    one block per head: a radix select (8-bit digits of the normalised pooled scores'
 *          bits) finds the n_keep-th largest value; the values above it and the lowest-index
 *          ones equal to it are written in index order (a block-wide scan over 1024 indices
 *          at a time), then the window; every head keeps 0..L-1 when n_keep is 0.
 * Bound: the scoring passes, each 2 Hq w L d flops, pass 2 (and pass 1 outside the tensor-core
 * case) on CUDA cores (f32 FMAs from shared memory, token_tile.cuh); the selection reads
 * O(Hq Lp) doubles a few times. Measured (H100, bf16, d 128, Hq 32, Hkv 8, `ela bench sparse
 * --policy tsa`): the selection is 7.6% of the tsa prefill at L = 128K (~17 ms), 21.5% at 32K
 * (~4.5 ms); with pass 1 on CUDA cores too it was 12% (~28 ms) and 29% (~7 ms). Pass 2 on the
 * tensor cores is the next step. */
#include <string.h>

#include "attn_host.h"
#include "cuda_check.h"
#include "token_tile.cuh"

#define LOG2E 1.4426950408889634f
#define NORM_EPS 1e-8 /* added to every normalising sum, as the reference code does */
#define TS_SEL_THREADS 1024
/* Static shared memory of ts_probs: operands, P, row addresses. */
#define TS_PROBS_STATIC (4 * (TT_OPERAND_FLOATS + TT_ROWS * TT_LD) + 2 * TT_ROWS * sizeof(void *))

typedef struct {
    const char *q, *k;
    int64_t q_s0, q_s1, k_s0, k_s1;
    int tq, tk, d, hq, hkv, G;
    int64_t L, Lp, w, rows_g, n_rb; /* rows_g = G w rows per KV head; n_rb 64-row blocks */
    float sl2;                      /* scale * log2(e) */
    int64_t split_keys;
    int splits;
    int pool;
    double tau;
    int64_t min_keep;
    float *part;    /* [splits][hq w][2] */
    float *ml;      /* [hq w][2]: final m, l */
    const float *lse; /* [w][hq] natural-log LSE of each row (the tensor-core pass 1) */
    double *score;  /* [hq][Lp]: a_h */
    double *pooled; /* [hq][Lp] */
    double *g;      /* [Lp] */
    double *hsum;   /* [hq] */
    double *gsum;   /* [1] */
    int *flag;      /* [1]: nonzero when a pooled score is not finite */
    long long *n_keep; /* [1]: 0 means dense */
    char *idx;
    int64_t idx_s0, idx_s1;
} ts_params;

/* Address of window row r (head-major index within KV head g), or NULL past the rows. */
static __device__ __forceinline__ const char *ts_qrow(const ts_params &p, int g, int64_t r) {
    if (r >= p.rows_g)
        return NULL;
    const int64_t h = (int64_t)g * p.G + r / p.w, i = r % p.w;
    return p.q + (p.Lp + i) * p.q_s0 + h * p.q_s1;
}

/* grid (hkv * n_rb, splits) */
__global__ void __launch_bounds__(TT_THREADS) ts_stats(const ts_params p) {
    __shared__ float sOp[TT_OPERAND_FLOATS];
    __shared__ const char *sQp[TT_ROWS], *sKp[TT_ROWS];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int g = (int)(blockIdx.x / p.n_rb);
    const int64_t r0 = (int64_t)(blockIdx.x % p.n_rb) * TT_ROWS;
    const int64_t kb = (int64_t)blockIdx.y * p.split_keys;
    const int64_t ke = kb + p.split_keys < p.L ? kb + p.split_keys : p.L;
    if (tid < TT_ROWS)
        sQp[tid] = ts_qrow(p, g, r0 + tid);
    int64_t pos[4];
    float m[4], l[4];
#pragma unroll
    for (int a = 0; a < 4; a++) {
        const int64_t r = r0 + ty + 16 * a;
        pos[a] = r < p.rows_g ? p.Lp + r % p.w : -1; /* rows past the end see nothing */
        m[a] = -INFINITY;
        l[a] = 0.0f;
    }
    const char *kg = p.k + (int64_t)g * p.k_s0;
    for (int64_t j0 = kb; j0 < ke; j0 += TT_ROWS) {
        if (tid < TT_ROWS)
            sKp[tid] = j0 + tid < ke ? kg + (j0 + tid) * p.k_s1 : NULL;
        float acc[4][4];
        tt_scores(acc, sOp, sOp + TT_DK * TT_LD, sQp, p.tq, sKp, p.tk, p.d);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            float s[4], pr[4];
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int64_t j = j0 + tx + 16 * b;
                s[b] = j < ke && j <= pos[a] ? acc[a][b] * p.sl2 : -INFINITY;
            }
            tt_softmax_step(s, m[a], l[a], pr);
        }
        __syncthreads(); /* sKp is rewritten */
    }
#pragma unroll
    for (int a = 0; a < 4; a++) {
        const float lt = tt_row_sum(l[a]);
        const int64_t r = r0 + ty + 16 * a;
        if (tx == 0 && r < p.rows_g) {
            float *out = p.part + ((int64_t)blockIdx.y * p.hq * p.w + g * p.rows_g + r) * 2;
            out[0] = m[a];
            out[1] = lt;
        }
    }
}

/* One thread per row: the splits' partial (m, l) merged. */
__global__ void ts_merge(const ts_params p) {
    const int64_t rows = (int64_t)p.hq * p.w;
    const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows)
        return;
    float mx = -INFINITY;
    for (int s = 0; s < p.splits; s++) {
        const float *pt = p.part + ((int64_t)s * rows + r) * 2;
        if (pt[1] > 0.0f)
            mx = fmaxf(mx, pt[0]);
    }
    float l = 0.0f;
    for (int s = 0; s < p.splits; s++) {
        const float *pt = p.part + ((int64_t)s * rows + r) * 2;
        if (pt[1] > 0.0f)
            l += pt[1] * exp2f(pt[0] - mx);
    }
    p.ml[r * 2] = mx;
    p.ml[r * 2 + 1] = l;
}

/* Pass 1 by attn_dense: each row's LSE; in the exp2 domain m = lse log2(e) and l = 1. */
__global__ void ts_lse_to_ml(const ts_params p) {
    const int64_t rows = (int64_t)p.hq * p.w;
    const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows)
        return;
    const int64_t h = r / p.w, i = r % p.w;
    p.ml[r * 2] = p.lse[i * p.hq + h] * LOG2E;
    p.ml[r * 2 + 1] = 1.0f;
}

/* grid (hkv * n_kt): KV head g, prefix keys [j0, j0 + 64). Dynamic shared memory: G x 64
 * doubles (each head's sums over the key tile). */
__global__ void __launch_bounds__(TT_THREADS) ts_probs(const ts_params p) {
    extern __shared__ double sAcc[]; /* [G][64] */
    __shared__ float sOp[TT_OPERAND_FLOATS];
    __shared__ float sP[TT_ROWS * TT_LD];
    __shared__ const char *sQp[TT_ROWS], *sKp[TT_ROWS];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int g = (int)(blockIdx.x % p.hkv);
    const int64_t j0 = (int64_t)(blockIdx.x / p.hkv) * TT_ROWS;
    const int nk = p.Lp - j0 < TT_ROWS ? (int)(p.Lp - j0) : TT_ROWS;
    const char *kg = p.k + (int64_t)g * p.k_s0;
    if (tid < TT_ROWS)
        sKp[tid] = tid < nk ? kg + (j0 + tid) * p.k_s1 : NULL;
    for (int e = tid; e < p.G * TT_ROWS; e += TT_THREADS)
        sAcc[e] = 0.0;
    for (int64_t b0 = 0; b0 < p.rows_g; b0 += TT_ROWS) {
        if (tid < TT_ROWS)
            sQp[tid] = ts_qrow(p, g, b0 + tid);
        float acc[4][4];
        tt_scores(acc, sOp, sOp + TT_DK * TT_LD, sQp, p.tq, sKp, p.tk, p.d);
        /* Every prefix key is visible to every window row: no mask. */
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int64_t r = b0 + ty + 16 * a;
            float mr = 0.0f, inv = 0.0f;
            if (r < p.rows_g) {
                const float *ml = p.ml + ((int64_t)g * p.rows_g + r) * 2;
                mr = ml[0];
                inv = 1.0f / ml[1];
            }
#pragma unroll
            for (int b = 0; b < 4; b++)
                sP[(ty + 16 * a) * TT_LD + tx + 16 * b] =
                    r < p.rows_g ? exp2f(acc[a][b] * p.sl2 - mr) * inv : 0.0f;
        }
        __syncthreads();
        if (tid < nk) { /* the thread of key tid sums the chunk's rows head by head, in order */
            const int64_t rend = p.rows_g - b0 < TT_ROWS ? p.rows_g - b0 : TT_ROWS;
            int64_t hh = b0 / p.w;
            double run = 0.0;
            for (int64_t r = 0; r < rend; r++) {
                const int64_t hr = (b0 + r) / p.w;
                if (hr != hh) {
                    sAcc[hh * TT_ROWS + tid] += run;
                    run = 0.0;
                    hh = hr;
                }
                run += (double)sP[r * TT_LD + tid];
            }
            sAcc[hh * TT_ROWS + tid] += run;
        }
        __syncthreads(); /* sP and sQp are rewritten */
    }
    for (int e = tid; e < p.G * TT_ROWS; e += TT_THREADS) {
        const int hh = e / TT_ROWS, c = e % TT_ROWS;
        if (c < nk)
            p.score[((int64_t)g * p.G + hh) * p.Lp + j0 + c] = sAcc[e] / (double)p.w;
    }
}

static __device__ __forceinline__ double ts_block_sum(double x, double *red) {
    for (int off = 16; off > 0; off >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, off);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        red[warp] = x;
    __syncthreads();
    double t = 0.0;
    if (threadIdx.x == 0)
        for (int i = 0; i < (int)(blockDim.x >> 5); i++)
            t += red[i];
    return t; /* valid in thread 0 */
}

/* grid (ceil(Lp / 256), hq), 256 threads */
__global__ void ts_pool(const ts_params p) {
    __shared__ double red[8];
    const int h = blockIdx.y;
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t half = (p.pool - 1) / 2;
    const double *x = p.score + (int64_t)h * p.Lp;
    double v = 0.0;
    if (j < p.Lp) {
        const int64_t t0 = j - half < 0 ? 0 : j - half, t1 = j + half + 1 < p.Lp ? j + half + 1 : p.Lp;
        double acc = 0.0;
        for (int64_t t = t0; t < t1; t++)
            acc += x[t];
        v = acc / (double)p.pool;
        p.pooled[(int64_t)h * p.Lp + j] = v;
        if (!isfinite(v))
            atomicOr(p.flag, 1);
    }
    const double t = ts_block_sum(v, red);
    if (threadIdx.x == 0)
        atomicAdd(p.hsum + h, t);
}

/* grid ceil(Lp / 256), 256 threads: the head mean and its sum. */
__global__ void ts_mean(const ts_params p) {
    __shared__ double red[8];
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    double v = 0.0;
    if (j < p.Lp) {
        for (int h = 0; h < p.hq; h++)
            v += p.pooled[(int64_t)h * p.Lp + j];
        v /= (double)p.hq;
        p.g[j] = v;
    }
    const double t = ts_block_sum(v, red);
    if (threadIdx.x == 0)
        atomicAdd(p.gsum, t);
}

/* One block of TS_SEL_THREADS: n_keep from the coverage cut. */
__global__ void __launch_bounds__(TS_SEL_THREADS) ts_cut(const ts_params p) {
    __shared__ unsigned cnt[256];
    __shared__ double bsum[256];
    __shared__ unsigned long long s_prefix;
    __shared__ long long s_count;
    __shared__ double s_sum;
    __shared__ int s_state; /* 0 walking, 1 crossing in bin s_prefix, 2 every match is below tau */
    const int tid = threadIdx.x;
    if (*p.flag) { /* not finite: the host reports the error */
        if (tid == 0)
            *p.n_keep = 0;
        return;
    }
    const double denom = *p.gsum + NORM_EPS;
    unsigned long long prefix = 0ull, mask = 0ull;
    long long count = 0; /* values below the prefix group, and their sum */
    double csum = 0.0;
    int state = 0;
    for (int shift = 56; shift >= 0 && state != 2; shift -= 8) {
        for (int b = tid; b < 256; b += TS_SEL_THREADS) {
            cnt[b] = 0u;
            bsum[b] = 0.0;
        }
        __syncthreads();
        for (int64_t j = tid; j < p.Lp; j += TS_SEL_THREADS) {
            const double x = p.g[j] / denom;
            const unsigned long long bits = (unsigned long long)__double_as_longlong(x);
            if ((bits & mask) == prefix) {
                const int bin = (int)((bits >> shift) & 255ull);
                atomicAdd(&cnt[bin], 1u);
                atomicAdd(&bsum[bin], x);
            }
        }
        __syncthreads();
        if (tid == 0) {
            int b = 0, st = 2;
            for (; b < 256; b++) {
                if (cnt[b] == 0u)
                    continue;
                if (csum + bsum[b] < p.tau) {
                    count += cnt[b];
                    csum += bsum[b];
                } else {
                    st = 1;
                    break;
                }
            }
            s_state = st;
            s_prefix = st == 1 ? prefix | (unsigned long long)b << shift : prefix;
            s_count = count;
            s_sum = csum;
        }
        __syncthreads();
        state = s_state;
        prefix = s_prefix;
        count = s_count;
        csum = s_sum;
        mask |= 255ull << shift;
        __syncthreads(); /* the histograms are cleared next */
    }
    if (tid != 0)
        return;
    long long n0 = count;
    if (state == 1) { /* every value of the final bin equals v: take them while the sum stays
                         below tau */
        const double v = __longlong_as_double((long long)prefix);
        const long long n_eq = cnt[prefix & 255ull];
        long long mm = 0;
        double c = csum;
        while (mm < n_eq && c + v < p.tau) {
            c += v;
            mm++;
        }
        n0 += mm;
    }
    long long n_keep = 0;
    if (n0 > 0) {
        const long long n_drop = n0 + 1;
        n_keep = p.Lp - n_drop > p.min_keep ? p.Lp - n_drop : p.min_keep;
        if (n_keep >= p.Lp)
            n_keep = 0;
    }
    *p.n_keep = n_keep;
}

/* Exclusive prefix sum of x over the block (blockDim.x threads, index order), and the total. */
static __device__ __forceinline__ unsigned ts_block_scan(unsigned x, unsigned *warp_tot,
                                                         unsigned *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned incl = x;
    for (int off = 1; off < 32; off <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off)
            incl += y;
    }
    if (lane == 31)
        warp_tot[warp] = incl;
    __syncthreads();
    unsigned before = incl - x, all = 0u;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
        before += w < warp ? warp_tot[w] : 0u;
        all += warp_tot[w];
    }
    __syncthreads(); /* warp_tot is reused by the next scan */
    *total = all;
    return before;
}

static __device__ __forceinline__ void ts_put(const ts_params &p, int h, int64_t at, int64_t v) {
    *(int *)(p.idx + (int64_t)h * p.idx_s0 + at * p.idx_s1) = (int)v;
}

/* grid hq, TS_SEL_THREADS threads: head h's list. */
__global__ void __launch_bounds__(TS_SEL_THREADS) ts_top(const ts_params p) {
    __shared__ unsigned hist[256];
    __shared__ unsigned warp_tot[TS_SEL_THREADS / 32];
    __shared__ unsigned long long s_prefix;
    __shared__ long long s_need;
    const int tid = threadIdx.x, h = blockIdx.x;
    const long long n_keep = *p.n_keep;
    if (n_keep == 0) {
        for (int64_t j = tid; j < p.L; j += TS_SEL_THREADS)
            ts_put(p, h, j, j);
        return;
    }
    const double *x = p.pooled + (int64_t)h * p.Lp;
    const double denom = p.hsum[h] + NORM_EPS;
    unsigned long long prefix = 0ull, mask = 0ull;
    long long need = n_keep;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += TS_SEL_THREADS)
            hist[b] = 0u;
        __syncthreads();
        for (int64_t j = tid; j < p.Lp; j += TS_SEL_THREADS) {
            const unsigned long long bits = (unsigned long long)__double_as_longlong(x[j] / denom);
            if ((bits & mask) == prefix)
                atomicAdd(&hist[(bits >> shift) & 255ull], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            long long above = 0;
            int b = 255;
            for (; b > 0 && above + hist[b] < need; b--)
                above += hist[b];
            s_prefix = prefix | (unsigned long long)b << shift;
            s_need = need - above;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255ull << shift;
        __syncthreads(); /* hist is cleared next */
    }
    /* prefix: the n_keep-th largest value; need: how many equal to it are kept (the lowest
     * indices). Kept values in index order: position = values above before it + min(equal
     * ones before it, need). */
    const unsigned long long thr = prefix;
    const unsigned long long needu = (unsigned long long)need;
    unsigned long long gt_base = 0u, eq_base = 0u;
    for (int64_t c0 = 0; c0 < p.Lp; c0 += TS_SEL_THREADS) {
        const int64_t j = c0 + tid;
        unsigned gt = 0u, eq = 0u;
        if (j < p.Lp) {
            const unsigned long long bits = (unsigned long long)__double_as_longlong(x[j] / denom);
            gt = bits > thr;
            eq = bits == thr;
        }
        unsigned tot;
        const unsigned ex = ts_block_scan(gt | eq << 16, warp_tot, &tot);
        const unsigned gt_ex = ex & 0xffffu, eq_ex = ex >> 16;
        if (gt) {
            const unsigned long long eq_before = eq_base + eq_ex;
            ts_put(p, h, (int64_t)(gt_base + gt_ex + (eq_before < needu ? eq_before : needu)), j);
        } else if (eq && eq_base + eq_ex < needu) {
            ts_put(p, h, (int64_t)(gt_base + gt_ex + eq_base + eq_ex), j);
        }
        gt_base += tot & 0xffffu;
        eq_base += tot >> 16;
    }
    for (int64_t t = tid; t < p.w; t += TS_SEL_THREADS)
        ts_put(p, h, n_keep + t, p.Lp + t);
}

/* Every head keeps 0..L-1. grid (ceil(L / 256), hq) */
__global__ void ts_dense(const ts_params p) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < p.L)
        ts_put(p, blockIdx.y, j, j);
}

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
static size_t align16(size_t x) { return (x + 15) & ~(size_t)15; }

/* Device memory of ours, or a view of q, dressed as a tensor for cuda_attn_dense (which reads a
 * tensor's device address, dtype and strides only). */
typedef struct {
    cuda_buffer cb;
    ela_buffer eb;
    ela_tensor t;
} ts_view;

static void ts_view_init(ts_view *v, char *ptr, ela_dtype dt, int nd, const int64_t *ext,
                         const int64_t *strides) {
    memset(v, 0, sizeof *v);
    v->cb.ptr = ptr;
    v->cb.size = 0; /* not read */
    v->eb.handle = &v->cb;
    v->eb.refs = 1;
    v->t.buffer = &v->eb;
    v->t.dtype = dt;
    v->t.n_dims = nd;
    for (int i = 0; i < nd; i++) {
        v->t.extents[i] = ext[i];
        v->t.strides[i] = strides[i];
    }
}

/* Pass 1 on the tensor cores: the window rows' attention (causal, q_pos0 = Lp) with v = k and its
 * LSE, which is all pass 1 needs; the output o is discarded. */
static ela_status ts_window_lse(cuda_ctx *ctx, const ela_token_select_args *a, int64_t Lp,
                                char *o_mem, float *lse_mem) {
    const int64_t w = a->p.window, es = a->q->dtype == ELA_F32 ? 4 : 2;
    const int64_t ext[3] = {w, a->hq, a->d}, lext[2] = {w, a->hq};
    const int64_t ostr[3] = {a->hq * a->d * es, a->d * es, es}, lstr[2] = {a->hq * 4, 4};
    ts_view q, o, lse;
    ts_view_init(&q, cuda_tensor_ptr(a->q) + Lp * a->q->strides[0], a->q->dtype, 3, ext,
                 a->q->strides);
    ts_view_init(&o, o_mem, a->q->dtype, 3, ext, ostr);
    ts_view_init(&lse, (char *)lse_mem, ELA_F32, 2, lext, lstr);
    ela_attn_dense_args da;
    memset(&da, 0, sizeof da);
    da.q = &q.t, da.k = a->k, da.v = a->k, da.o = &o.t, da.lse = &lse.t;
    da.L = w, da.n = a->L, da.d = a->d;
    da.hq = a->hq, da.hkv = a->hkv;
    da.causal = 1;
    da.q_pos0 = Lp;
    da.scale = a->scale;
    return cuda_attn_dense(ctx, &da);
}

extern "C" ela_status cuda_token_select(void *vctx, const ela_token_select_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    ts_params p;
    memset(&p, 0, sizeof p);
    p.q = cuda_tensor_ptr(a->q);
    p.k = cuda_tensor_ptr(a->k);
    p.q_s0 = a->q->strides[0], p.q_s1 = a->q->strides[1];
    p.k_s0 = a->k->strides[0], p.k_s1 = a->k->strides[1];
    p.tq = (int)a->q->dtype, p.tk = (int)a->k->dtype;
    p.d = (int)a->d, p.hq = a->hq, p.hkv = a->hkv, p.G = a->hq / a->hkv;
    p.L = a->L;
    p.w = a->p.window;
    p.Lp = a->L - p.w;
    p.sl2 = a->scale * LOG2E;
    p.pool = a->p.pool;
    p.tau = (double)a->p.coverage;
    p.min_keep = a->p.min_keep;
    p.idx = cuda_tensor_ptr(a->idx);
    p.idx_s0 = a->idx->strides[0], p.idx_s1 = a->idx->strides[1];
    ctx->generation++;
    cudaError_t err;
    if (p.Lp <= p.min_keep) { /* L <= min_keep + w: too short to prune */
        ts_dense<<<dim3((unsigned)div_up(p.L, 256), (unsigned)p.hq), 256, 0, ctx->stream>>>(p);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return cuda_fail_err(err, "token_select dense kernel");
        *a->n_sel = a->L;
        return ELA_OK;
    }
    p.rows_g = (int64_t)p.G * p.w;
    p.n_rb = div_up(p.rows_g, TT_ROWS);
    const int64_t rows = (int64_t)p.hq * p.w, n_kt = div_up(p.Lp, TT_ROWS);
    if (a->d > INT32_MAX / 8 || (int64_t)p.hkv * p.n_rb > INT32_MAX || p.hkv * n_kt > INT32_MAX ||
        div_up(p.Lp, 256) > 65535 || p.hq > 65535)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: token_select: L = %lld with %d query heads "
                         "exceeds the grid", (long long)a->L, a->hq);
    const size_t acc_smem = (size_t)p.G * TT_ROWS * sizeof(double);
    if (acc_smem + TS_PROBS_STATIC > ctx->props.sharedMemPerBlockOptin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: token_select: %d query heads per KV head "
                         "need %zu bytes of shared memory, %s has %zu per block", p.G,
                         acc_smem + TS_PROBS_STATIC, ctx->props.name,
                         (size_t)ctx->props.sharedMemPerBlockOptin);
    /* Key splits of pass 1: enough blocks for every SM a few times over. */
    cuda_attn_params sp;
    memset(&sp, 0, sizeof sp);
    const int64_t blocks = (int64_t)p.hkv * p.n_rb, fill = 4ll * ctx->props.multiProcessorCount;
    cuda_attn_plan_splits(ctx, &sp, p.L, blocks >= fill ? 1 : div_up(fill, blocks), TT_ROWS,
                          4 * TT_ROWS);
    p.splits = sp.splits;
    p.split_keys = sp.split_keys;

    /* Scratch: the small results first (zeroed), then the arrays. */
    /* Pass 1 on the tensor cores where attn_dense's prefill kernel runs (its o and LSE take the
     * partials' place); ts_stats otherwise and under ELA_CUDA_FORCE=generic. */
    const ela_dtype tq = a->q->dtype;
    const int mma_stats = ctx->path == CUDA_PATH_AUTO && tq == a->k->dtype &&
                          (tq == ELA_F16 || tq == ELA_BF16) && cuda_attn_mma_fits(p.d, (int)tq) &&
                          a->scale > 0.0f;
    const size_t b_o = align16((size_t)rows * (size_t)p.d * 2), b_lse = align16((size_t)rows * 4);
    size_t b_part = align16((size_t)p.splits * rows * 2 * sizeof(float));
    if (mma_stats && b_part < b_o + b_lse)
        b_part = b_o + b_lse;
    const size_t b_res = 64;
    const size_t b_ml = align16((size_t)rows * 2 * sizeof(float));
    const size_t b_score = align16((size_t)p.hq * p.Lp * sizeof(double));
    const size_t b_g = align16((size_t)p.Lp * sizeof(double));
    const size_t b_hsum = align16((size_t)p.hq * sizeof(double));
    char *scratch = NULL;
    if ((st = cuda_scratch_alloc(ctx, b_res + b_hsum + b_part + b_ml + 2 * b_score + b_g,
                                 (void **)&scratch)) != ELA_OK)
        return st;
    p.n_keep = (long long *)scratch; /* read back with the flag (zero-extended) */
    p.flag = (int *)(scratch + 8);
    p.gsum = (double *)(scratch + 16);
    p.hsum = (double *)(scratch + b_res);
    p.part = (float *)(scratch + b_res + b_hsum);
    p.ml = (float *)((char *)p.part + b_part);
    p.score = (double *)((char *)p.ml + b_ml);
    p.pooled = (double *)((char *)p.score + b_score);
    p.g = (double *)((char *)p.pooled + b_score);
    long long res[2] = {0, 0}; /* n_keep, the non-finite flag word */
    const char *what = "cudaMemsetAsync";
    if ((err = cudaMemsetAsync(scratch, 0, b_res + b_hsum, ctx->stream)) != cudaSuccess)
        goto fail;
    if (mma_stats) {
        p.lse = (const float *)((char *)p.part + b_o);
        if ((st = ts_window_lse(ctx, a, p.Lp, (char *)p.part, (float *)((char *)p.part + b_o))) !=
            ELA_OK) {
            cuda_scratch_free(ctx, scratch);
            return st;
        }
        what = "token_select lse kernel";
        ts_lse_to_ml<<<(unsigned)div_up(rows, 256), 256, 0, ctx->stream>>>(p);
        if ((err = cudaGetLastError()) != cudaSuccess)
            goto fail;
    } else {
        what = "token_select stats kernel";
        ts_stats<<<dim3((unsigned)blocks, (unsigned)p.splits), TT_THREADS, 0, ctx->stream>>>(p);
        if ((err = cudaGetLastError()) != cudaSuccess)
            goto fail;
        what = "token_select merge kernel";
        ts_merge<<<(unsigned)div_up(rows, 256), 256, 0, ctx->stream>>>(p);
        if ((err = cudaGetLastError()) != cudaSuccess)
            goto fail;
    }
    what = "token_select probs kernel";
    if (acc_smem + TS_PROBS_STATIC > 48 * 1024 &&
        (err = cudaFuncSetAttribute(ts_probs, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)acc_smem)) != cudaSuccess)
        goto fail;
    ts_probs<<<(unsigned)(p.hkv * n_kt), TT_THREADS, acc_smem, ctx->stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess)
        goto fail;
    what = "token_select pool kernel";
    ts_pool<<<dim3((unsigned)div_up(p.Lp, 256), (unsigned)p.hq), 256, 0, ctx->stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess)
        goto fail;
    what = "token_select mean kernel";
    ts_mean<<<(unsigned)div_up(p.Lp, 256), 256, 0, ctx->stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess)
        goto fail;
    what = "token_select cut kernel";
    ts_cut<<<1, TS_SEL_THREADS, 0, ctx->stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess)
        goto fail;
    what = "token_select top kernel";
    ts_top<<<(unsigned)p.hq, TS_SEL_THREADS, 0, ctx->stream>>>(p);
    if ((err = cudaGetLastError()) != cudaSuccess)
        goto fail;
    what = "cudaMemcpyAsync";
    if ((err = cudaMemcpyAsync(res, scratch, sizeof res, cudaMemcpyDeviceToHost, ctx->stream)) !=
        cudaSuccess)
        goto fail;
    cuda_scratch_free(ctx, scratch);
    scratch = NULL;
    what = "cudaStreamSynchronize";
    if ((err = cudaStreamSynchronize(ctx->stream)) != cudaSuccess)
        goto fail;
    if (res[1] != 0) /* the flag word */
        return cuda_fail(ELA_ERR_INVALID_ARG, "cuda: token_select: the window scores are not "
                         "finite (tensors q or k hold inf or NaN)");
    *a->n_sel = res[0] > 0 ? res[0] + p.w : a->L;
    return ELA_OK;
fail:
    if (scratch)
        cuda_scratch_free(ctx, scratch);
    return cuda_fail_err(err, what);
}

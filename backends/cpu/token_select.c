/* CPU token_select (DESIGN.md 4.5, PAPERS.md 2.3): Token Sparse Attention's Dynamic Token
 * Coverage selection over a whole prompt of L tokens, window w, prefix Lp = L - w.
 *
 * Scoring runs in two passes over the keys, like the paper's Triton kernel, on the dense
 * attention tile kernels (load_rows, qk, softmax; 64-key tiles). Rows are (query head h, window
 * query i) at position Lp + i, stored head-major (row h * w + i) so the G heads of KV head g own
 * rows [g G w, (g + 1) G w).
 *  1. Stats: work items (KV head, block of <= 64 of its rows) walk the causal keys [0, Lp + i]
 *     with the online softmax and keep each row's max m and sum l (log2 domain).
 *  2. Probabilities: work items (KV head, 64-key tile of the prefix) recompute S for all G w rows
 *     of the KV head against the tile, P = exp2(S - m) / l, and sum each head's w rows into
 *     a_h[j] (double). Each a_h[j] has exactly one writer, so no reduction is needed.
 * Both passes cost about 2 Hq w L d flops each; Q (Hq w rows) is converted to f32 once.
 * Selection then works on [Hq, Lp] doubles: avg-pool (direct sum, zero padding, divisor pool),
 * head mean, normalisation by (sum + 1e-8), one sort of the head-mean distribution for the
 * coverage cut, and per head an O(Lp) quickselect for its top n_keep (ties: lower index first).
 *
 * Precision: the dot products, exp2 and the row sums l are f32 (each probability carries a
 * relative error of about 1e-6, a few 1e-6 with large logits); the window mean, pooling, the
 * normalisations and the cumulative sum are double. Sets therefore equal the float64 reference
 * unless a cut-off (the coverage threshold or a head's n_keep-th score) lies within ~1e-5
 * relative of its neighbour. Non-finite scores (inf/NaN in q or k) are an error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634f
#define BK CPU_ATTN_BK /* keys per tile, and rows per block (R) */
#define NORM_EPS 1e-8  /* added to every normalising sum, as the reference code does */

typedef struct {
    const ela_token_select_args *a;
    const cpu_attn_kernels *kern;
    int64_t L, Lp, w, dp, G, rows_g; /* rows_g = G * w rows per KV head */
    float *Qs;                       /* [Hq * w, dp] f32, pre-scaled by scale * log2(e) */
    float *m, *l;                    /* [Hq * w] softmax max and sum of each row */
    double *score;                   /* [Hq, Lp]: a_h, then pooled, then normalised */
    double *g, *gsorted;             /* [Lp] head mean, and a sorted copy */
    double *hsum;                    /* [Hq] per-head sums of the pooled scores */
} plan;

/* Per-thread scratch. */
typedef struct {
    float *K, *S, *mt, *lt, *alpha;
    double *acc; /* [G, BK] */
    double *row; /* [Lp] */
} scratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Per-thread scratch bytes (a multiple of 64). */
static int64_t scratch_bytes(const plan *p) {
    int64_t floats = BK * p->dp + BK * BK + 3 * BK;
    return round_up(floats * 4, 64) + round_up(p->G * BK * 8, 64) + round_up(p->Lp * 8, 64);
}

static scratch carve(char *base, const plan *p) {
    scratch s;
    s.K = (float *)(void *)base;
    s.S = s.K + BK * p->dp;
    s.mt = s.S + BK * BK;
    s.lt = s.mt + BK;
    s.alpha = s.lt + BK;
    base += round_up((BK * p->dp + BK * BK + 3 * BK) * 4, 64);
    s.acc = (double *)(void *)base;
    base += round_up(p->G * BK * 8, 64);
    s.row = (double *)(void *)base;
    return s;
}

/* Every head keeps every token. */
static void write_dense(const ela_token_select_args *a) {
    char *base = cpu_tensor_data(a->idx);
    for (int h = 0; h < a->hq; h++) {
        int32_t *row = (int32_t *)(void *)(base + h * a->idx->strides[0]);
        for (int64_t j = 0; j < a->L; j++)
            row[j] = (int32_t)j;
    }
    *a->n_sel = a->L;
}

/* Q rows of the window of head h, converted and pre-scaled. */
static void load_window_q(const plan *p, int h) {
    const ela_tensor *q = p->a->q;
    float *dst = p->Qs + (int64_t)h * p->w * p->dp;
    const char *src = cpu_tensor_data(q) + p->Lp * q->strides[0] + h * q->strides[1];
    p->kern->load_rows(dst, p->dp, src, q->strides[0], q->dtype, p->w, p->a->d);
    float qscale = p->a->scale * LOG2E; /* exp2 domain: exp(x) = exp2(x * log2 e) */
    for (int64_t c = 0; c < p->w * p->dp; c++)
        dst[c] *= qscale;
}

/* Key tile [j0, j0 + nk) of KV head g into s->K. */
static void load_k_tile(const plan *p, scratch *s, int g, int64_t j0, int64_t nk) {
    const ela_tensor *k = p->a->k;
    const char *src = cpu_tensor_data(k) + g * k->strides[0] + j0 * k->strides[1];
    p->kern->load_rows(s->K, p->dp, src, k->strides[1], k->dtype, nk, p->a->d);
}

/* Pass 1 on rows [r0, r0 + R) of KV head g (global row r is head r / w, query r % w). */
static void row_stats(const plan *p, scratch *s, int g, int64_t r0, int64_t R) {
    int64_t min_pos = INT64_MAX, end = 0;
    for (int64_t r = r0; r < r0 + R; r++) {
        int64_t pos = p->Lp + r % p->w;
        min_pos = pos < min_pos ? pos : min_pos;
        end = pos + 1 > end ? pos + 1 : end;
        p->m[r] = -INFINITY;
        p->l[r] = 0.0f;
    }
    const float *Q = p->Qs + r0 * p->dp;
    for (int64_t j0 = 0; j0 < end; j0 += BK) {
        int64_t nk = min64(BK, end - j0);
        load_k_tile(p, s, g, j0, nk);
        p->kern->qk(s->S, Q, s->K, R, nk, p->dp);
        if (j0 + nk - 1 > min_pos) { /* the tile crosses some row's diagonal */
            for (int64_t r = 0; r < R; r++) {
                int64_t first_hidden = p->Lp + (r0 + r) % p->w + 1 - j0;
                for (int64_t j = first_hidden < 0 ? 0 : first_hidden; j < nk; j++)
                    s->S[r * BK + j] = -INFINITY;
            }
        }
        p->kern->softmax(s->S, p->m + r0, p->l + r0, s->alpha, R, nk);
    }
}

/* Pass 2 on prefix keys [j0, j0 + nk) of KV head g: a_h[j] = mean over h's window rows of P. */
static void tile_probs(const plan *p, scratch *s, int g, int64_t j0, int64_t nk) {
    load_k_tile(p, s, g, j0, nk);
    memset(s->acc, 0, (size_t)(p->G * BK) * sizeof(double));
    int64_t g0 = (int64_t)g * p->rows_g;
    for (int64_t b0 = 0; b0 < p->rows_g; b0 += BK) {
        int64_t R = min64(BK, p->rows_g - b0), r0 = g0 + b0;
        p->kern->qk(s->S, p->Qs + r0 * p->dp, s->K, R, nk, p->dp);
        /* Every prefix key is visible to every window row: no mask. Starting the softmax step
         * from the row's final max gives P = exp2(S - max(m, max S)); the factor below makes it
         * exp2(S - m) / l even if S came out a rounding step above the pass-1 max. */
        for (int64_t r = 0; r < R; r++) {
            s->mt[r] = p->m[r0 + r];
            s->lt[r] = 0.0f;
        }
        p->kern->softmax(s->S, s->mt, s->lt, s->alpha, R, nk);
        for (int64_t r = 0; r < R; r++) {
            double f = exp2((double)s->mt[r] - (double)p->m[r0 + r]) / (double)p->l[r0 + r];
            double *acc = s->acc + (b0 + r) / p->w * BK;
            const float *P = s->S + r * BK;
            for (int64_t j = 0; j < nk; j++)
                acc[j] += f * (double)P[j];
        }
    }
    for (int64_t hh = 0; hh < p->G; hh++) {
        double *dst = p->score + (g0 / p->w + hh) * p->Lp + j0;
        for (int64_t j = 0; j < nk; j++)
            dst[j] = s->acc[hh * BK + j] / (double)p->w;
    }
}

/* avg_pool1d(kernel pool, stride 1, zero padding (pool - 1) / 2, divisor pool) of head h's
 * scores in place; returns the sum of the pooled row, or NAN when a score is not finite. */
static double pool_head(const plan *p, scratch *s, int h) {
    double *x = p->score + (int64_t)h * p->Lp;
    int64_t Lp = p->Lp, half = (p->a->p.pool - 1) / 2;
    memcpy(s->row, x, (size_t)Lp * sizeof(double));
    double sum = 0.0;
    int finite = 1;
    for (int64_t j = 0; j < Lp; j++) {
        int64_t t0 = j - half < 0 ? 0 : j - half, t1 = j + half + 1 < Lp ? j + half + 1 : Lp;
        double acc = 0.0;
        for (int64_t t = t0; t < t1; t++)
            acc += s->row[t];
        x[j] = acc / (double)p->a->p.pool;
        finite &= isfinite(x[j]) != 0;
        sum += x[j];
    }
    return finite ? sum : NAN;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* Value at position k of x[0..n) sorted ascending (quickselect; reorders x; finite values). */
static double select_kth(double *x, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        double a = x[lo], b = x[lo + (hi - lo) / 2], c = x[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] < pivot)
                i++;
            while (x[j] > pivot)
                j--;
            if (i <= j) {
                double t = x[i];
                x[i] = x[j];
                x[j] = t;
                i++;
                j--;
            }
        }
        /* [lo, j] <= pivot <= [i, hi], and everything strictly between j and i equals it */
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return x[k];
    }
    return x[k];
}

/* Head h: its top n_keep normalised pooled scores (ties: lower index first) and the window,
 * ascending, into idx row h. */
static void select_head(const plan *p, scratch *s, int h, int64_t n_keep) {
    double *x = p->score + (int64_t)h * p->Lp;
    int64_t Lp = p->Lp;
    double denom = p->hsum[h] + NORM_EPS;
    for (int64_t j = 0; j < Lp; j++)
        x[j] /= denom;
    memcpy(s->row, x, (size_t)Lp * sizeof(double));
    double thr = select_kth(s->row, Lp, Lp - n_keep); /* the n_keep-th largest */
    int64_t above = 0;
    for (int64_t j = 0; j < Lp; j++)
        above += x[j] > thr;
    int64_t ties = n_keep - above; /* >= 1: how many scores equal to thr are kept */
    int32_t *out = (int32_t *)(void *)(cpu_tensor_data(p->a->idx) + h * p->a->idx->strides[0]);
    int64_t n = 0;
    for (int64_t j = 0; j < Lp; j++) {
        if (x[j] > thr || (x[j] == thr && ties > 0)) {
            ties -= x[j] == thr;
            out[n++] = (int32_t)j;
        }
    }
    for (int64_t j = Lp; j < p->L; j++)
        out[n++] = (int32_t)j;
}

/* Head-mean distribution, its coverage cut and the resulting n_keep (0 means dense). */
static int64_t coverage_cut(const plan *p) {
    const ela_token_select_args *a = p->a;
    int64_t Lp = p->Lp;
    double gsum = 0.0;
    for (int64_t j = 0; j < Lp; j++) {
        double acc = 0.0;
        for (int h = 0; h < a->hq; h++)
            acc += p->score[(int64_t)h * Lp + j];
        p->g[j] = acc / (double)a->hq;
        gsum += p->g[j];
    }
    for (int64_t j = 0; j < Lp; j++)
        p->gsorted[j] = p->g[j] / (gsum + NORM_EPS);
    qsort(p->gsorted, (size_t)Lp, sizeof(double), cmp_double);
    double tau = (double)a->p.coverage, c = 0.0;
    int64_t n_drop = 0;
    while (n_drop < Lp && (c += p->gsorted[n_drop]) < tau)
        n_drop++;
    if (n_drop == 0)
        return 0; /* nothing to drop */
    n_drop += 1;
    int64_t n_keep = Lp - n_drop > a->p.min_keep ? Lp - n_drop : a->p.min_keep;
    return n_keep >= Lp ? 0 : n_keep;
}

ela_status cpu_token_select(void *ctx, const ela_token_select_args *a) {
    const cpu_backend *cpu = ctx;
    if (a->L - a->p.window <= a->p.min_keep) { /* L <= min_keep + w: too short to prune */
        write_dense(a);
        return ELA_OK;
    }
    plan p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.kern = cpu->attn;
    p.L = a->L;
    p.w = a->p.window;
    p.Lp = a->L - p.w;
    p.dp = round_up(a->d, CPU_ATTN_DPAD);
    p.G = a->hq / a->hkv;
    p.rows_g = p.G * p.w;
    int64_t rows = (int64_t)a->hq * p.w;
    int threads = cpu->threads > 0 ? cpu->threads : 1;

    int64_t b_q = round_up(rows * p.dp * 4, 64), b_ml = round_up(rows * 4, 64);
    int64_t b_score = round_up((int64_t)a->hq * p.Lp * 8, 64), b_g = round_up(p.Lp * 8, 64);
    int64_t b_h = round_up((int64_t)a->hq * 8, 64), b_thread = scratch_bytes(&p);
    int64_t total = b_q + 2 * b_ml + b_score + 2 * b_g + b_h + b_thread * threads;
    char *mem = ela_aligned_alloc((size_t)total);
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: token_select: out of memory for %lld bytes of scores",
                        (long long)total);
    char *cur = mem;
    p.Qs = (float *)(void *)cur;
    cur += b_q;
    p.m = (float *)(void *)cur;
    cur += b_ml;
    p.l = (float *)(void *)cur;
    cur += b_ml;
    p.score = (double *)(void *)cur;
    cur += b_score;
    p.g = (double *)(void *)cur;
    cur += b_g;
    p.gsorted = (double *)(void *)cur;
    cur += b_g;
    p.hsum = (double *)(void *)cur;
    cur += b_h;
    char *thread_mem = cur;

    int64_t n_rb = (p.rows_g + BK - 1) / BK, n_kt = (p.Lp + BK - 1) / BK;
    int64_t n_pass1 = (int64_t)a->hkv * n_rb, n_pass2 = (int64_t)a->hkv * n_kt;
    int64_t n_keep = 0;
    int nonfinite = 0;

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        scratch s = carve(thread_mem + b_thread * tid, &p);
#pragma omp for schedule(static)
        for (int h = 0; h < a->hq; h++)
            load_window_q(&p, h);
        /* Row blocks late in the window see the most keys, but only by w / L: any order works. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_pass1; item++) {
            int g = (int)(item / n_rb);
            int64_t b0 = item % n_rb * BK;
            row_stats(&p, &s, g, (int64_t)g * p.rows_g + b0, min64(BK, p.rows_g - b0));
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t item = 0; item < n_pass2; item++) {
            int g = (int)(item % a->hkv);
            int64_t j0 = item / a->hkv * BK;
            tile_probs(&p, &s, g, j0, min64(BK, p.Lp - j0));
        }
#pragma omp for schedule(dynamic, 1)
        for (int h = 0; h < a->hq; h++) {
            p.hsum[h] = pool_head(&p, &s, h);
            if (isnan(p.hsum[h])) {
#pragma omp atomic write
                nonfinite = 1;
            }
        }
#pragma omp single
        {
            if (!nonfinite)
                n_keep = coverage_cut(&p);
        }
        if (!nonfinite && n_keep > 0) {
#pragma omp for schedule(dynamic, 1)
            for (int h = 0; h < a->hq; h++)
                select_head(&p, &s, h, n_keep);
        }
    }
    ela_aligned_free(mem);
    if (nonfinite)
        return ela_fail(ELA_ERR_INVALID_ARG, "cpu: token_select: the window scores are not "
                        "finite (tensors q or k hold inf or NaN)");
    if (n_keep == 0)
        write_dense(a);
    else
        *a->n_sel = n_keep + p.w;
    return ELA_OK;
}

/* Unit test of ela_decode_select on the "cpu" backend against the float64 reference
 * (tests/ref/decode_select_ref.c): the whole index list (sinks, union order, recent window) must
 * match exactly. Inputs: planted rankings with clear gaps (per-head top lists drawn from a shared
 * pool, so the union deduplicates a lot, and needles in the sink and recent ranges that must not
 * be picked), plain random data with tiny budgets, and exact ties (only the index order breaks
 * them); every dtype, d 64/128/80, GQA 1/4/8, lengths that cut the key chunks anywhere, budget
 * boundaries (K >= n, n = K + 1, K + 5, K = 1..8, recent 0 and 1, non-quarter recent, sinks 0
 * and sinks > recency share), strided views; every SIMD level and several thread counts.
 * Replay with ELA_TEST_SEED, one case with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/decode_select_ref.h"
#include "test_common.h"

/* The op computes logits in f32, the reference in f64 from the same (dtype-rounded) values. An
 * f32 dot product of d terms is off by at most about (d + 2) 2^-24 sum |q_c k_c| scale; inputs
 * are accepted only when every pair of neighbours in each head's top k_mid + 1 is separated by
 * more than twice that (both sides' bound, doubled), so the ranking the op sees is the
 * reference's and the selection must match exactly. */
#define GAP_FACTOR 2.0

enum { DATA_PLANTED, DATA_RANDOM, DATA_TIES, DATA_PERM, DATA_FLAT, DATA_INF, DATA_COUNT };
static const char *const data_names[] = {"planted", "random", "ties", "perm", "flat", "inf"};
enum { LAYOUT_PACKED, LAYOUT_VIEWS, LAYOUT_TOKEN_MAJOR, LAYOUT_COUNT };
static const char *const layout_names[] = {"packed", "views", "token-major"};

#define F_THREADS 1u /* also with ELA_THREADS = 1, 3, 16 */

typedef struct {
    int64_t n, d;
    int hq, hkv;
    int64_t budget;
    float recent;
    int sinks;
    float scale;
    ela_dtype tq, tk;
    int data, layout;
    unsigned flags;
} dcase;

#define MAX_CASES 400
static dcase cases[MAX_CASES];
static int n_cases;

static void add(int64_t n, int64_t d, int hq, int hkv, int64_t budget, float recent, int sinks,
                float scale, ela_dtype tq, ela_dtype tk, int data, int layout, unsigned flags) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    dcase c = {n, d, hq, hkv, budget, recent, sinks, scale, tq, tk, data, layout, flags};
    cases[n_cases++] = c;
}

static void case_str(const dcase *c, char *buf, size_t size) {
    snprintf(buf, size, "n=%lld d=%lld Hq=%d Hkv=%d K=%lld recent=%g sinks=%d scale=%g q=%s k=%s "
             "data=%s layout=%s", (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->budget, (double)c->recent, c->sinks, (double)c->scale,
             ela_dtype_name(c->tq), ela_dtype_name(c->tk), data_names[c->data],
             layout_names[c->layout]);
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    /* 1. Sweep over dtypes x d x GQA on planted data, rotating lengths and budgets. bf16 keys
     * (8-bit mantissa) blur planted rankings deeper than ~100 ranks into near-ties, f16 deeper
     * than ~500, so deep budgets go with the wider dtypes. */
    static const ela_dtype mixes[4][2] = {{ELA_F32, ELA_F32}, {ELA_F16, ELA_F16},
                                          {ELA_BF16, ELA_BF16}, {ELA_F32, ELA_F16}};
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{4, 4}, {8, 2}, {8, 1}};
    static const struct {
        int64_t n, budget;
    } shapes[6] = {{1000, 64}, {4099, 100}, {9001, 64}, {3001, 200}, {700, 512}, {9001, 1024}};
    int idx = 0;
    for (int m = 0; m < 4; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++, idx++) {
                int s = (idx * 5 + m) % 6;
                int64_t budget = shapes[s].budget;
                if (mixes[m][1] == BF16 && budget > 100)
                    budget = 100;
                if (mixes[m][1] == F16 && budget > 512)
                    budget = 512;
                add(shapes[s].n, dims[di], gqa[g][0], gqa[g][1], budget, 0.25f, 4, 0.0f,
                    mixes[m][0], mixes[m][1], DATA_PLANTED, idx % LAYOUT_COUNT,
                    idx % 3 == 0 ? F_THREADS : 0);
            }
    /* 2. Long, many chunks and compactions, every thread count. */
    add(20011, 128, 8, 2, 2048, 0.25f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_VIEWS, F_THREADS);
    add(12011, 128, 32, 8, 256, 0.25f, 4, 0.0f, F16, F16, DATA_PLANTED, LAYOUT_PACKED, F_THREADS);
    add(12345, 64, 16, 2, 64, 0.25f, 4, 0.0f, BF16, BF16, DATA_PLANTED, LAYOUT_TOKEN_MAJOR,
        F_THREADS);
    add(9001, 80, 8, 8, 300, 0.25f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_PACKED, F_THREADS);
    /* Full rankings: the running threshold and the merge of chunks decide every key. */
    add(20011, 128, 8, 2, 2048, 0.25f, 4, 0.0f, F32, F32, DATA_PERM, LAYOUT_PACKED, F_THREADS);
    add(9001, 64, 6, 3, 64, 0.25f, 4, 0.0f, BF16, F32, DATA_PERM, LAYOUT_VIEWS, F_THREADS);
    add(12001, 80, 8, 1, 700, 0.25f, 4, 0.0f, F16, F32, DATA_PERM, LAYOUT_TOKEN_MAJOR, F_THREADS);
    add(3001, 128, 4, 4, 200, 0.25f, 4, 0.0f, F32, F32, DATA_PERM, LAYOUT_PACKED, 0);
    add(777, 64, 8, 2, 40, 0.25f, 4, 0.0f, F32, F32, DATA_PERM, LAYOUT_VIEWS, 0);
    /* k_mid larger than a chunk: every chunk keeps all its keys, the merge selects */
    add(9001, 64, 8, 2, 9000, 0.25f, 4, 0.0f, F32, F32, DATA_PERM, LAYOUT_PACKED, F_THREADS);
    /* 3. Budget boundaries: K >= n (all tokens), K == n, n = K + 1, K + 5, tiny K, recent 0 / 1 /
     * 0.5 / non-quarter, sinks 0 and sinks larger than the recency share, n = 1. */
    for (int64_t b = 1; b <= 8; b++) {
        add(b + 1, 64, 4, 2, b, 0.25f, 4, 0.0f, F32, F32, DATA_RANDOM, LAYOUT_PACKED, 0);
        add(b + 5, 128, 8, 2, b, 0.25f, 4, 0.0f, F16, F16, DATA_RANDOM, LAYOUT_VIEWS, 0);
        add(300, 64, 8, 1, b, 0.25f, b % 3, 0.0f, BF16, BF16, DATA_RANDOM, (int)(b % 3), 0);
        add(300, 128, 4, 4, b, b % 2 ? 0.0f : 1.0f, 1, 0.0f, F32, F16, DATA_RANDOM, LAYOUT_PACKED, 0);
        add(777, 64, 8, 2, b, 0.25f, 0, 0.0f, F32, F32, DATA_TIES, (int)(b % 3), 0);
    }
    add(1, 64, 4, 2, 1, 0.25f, 4, 0.0f, F32, F32, DATA_RANDOM, LAYOUT_PACKED, 0);
    add(1, 64, 4, 2, 5, 0.25f, 4, 0.0f, F16, F16, DATA_RANDOM, LAYOUT_VIEWS, 0);
    add(100, 128, 8, 2, 100, 0.25f, 4, 0.0f, F32, F32, DATA_RANDOM, LAYOUT_PACKED, 0);
    add(100, 128, 8, 2, 5000, 0.25f, 4, 0.0f, BF16, BF16, DATA_RANDOM, LAYOUT_VIEWS, 0);
    add(257, 64, 4, 1, 256, 0.25f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_PACKED, F_THREADS);
    add(261, 128, 8, 2, 256, 0.25f, 4, 0.0f, F16, F16, DATA_PLANTED, LAYOUT_VIEWS, 0);
    add(2049, 64, 8, 2, 2048, 0.25f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_PACKED, F_THREADS);
    add(3000, 128, 8, 2, 200, 0.0f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_PACKED, F_THREADS);
    add(3000, 128, 8, 2, 200, 1.0f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_VIEWS, 0);
    add(3000, 128, 8, 2, 200, 0.5f, 0, 0.0f, F16, F16, DATA_PLANTED, LAYOUT_TOKEN_MAJOR, 0);
    add(3000, 64, 8, 2, 210, 0.1f, 4, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_PACKED, 0);
    add(3000, 64, 8, 2, 77, 0.3f, 30, 0.0f, F32, F32, DATA_PLANTED, LAYOUT_PACKED, 0);
    add(5000, 64, 8, 2, 64, 0.25f, 100, 0.0f, F32, BF16, DATA_PLANTED, LAYOUT_VIEWS, 0);
    /* 4. Exact ties everywhere (one-hot queries, small integer keys: every logit is exact), and
     * an explicit and a negative scale (which reverses the ranking). */
    add(5000, 128, 8, 2, 256, 0.25f, 4, 0.0f, BF16, BF16, DATA_TIES, LAYOUT_PACKED, F_THREADS);
    add(9001, 64, 8, 1, 1000, 0.25f, 4, 0.0f, F16, F16, DATA_TIES, LAYOUT_VIEWS, F_THREADS);
    add(3000, 80, 4, 4, 128, 0.25f, 4, -0.25f, F32, F32, DATA_TIES, LAYOUT_TOKEN_MAJOR, 0);
    add(2000, 64, 8, 2, 16, 0.25f, 4, -0.1f, F32, F32, DATA_RANDOM, LAYOUT_PACKED, 0);
    /* 5. Degenerate logits: all equal, and +-inf (the histogram has no range to cut). */
    add(9001, 64, 8, 2, 256, 0.25f, 4, 0.0f, F16, BF16, DATA_FLAT, LAYOUT_PACKED, F_THREADS);
    add(9001, 64, 8, 2, 1024, 0.25f, 4, 1e3f, F32, F32, DATA_INF, LAYOUT_VIEWS, F_THREADS);
    add(3000, 128, 4, 1, 100, 0.25f, 4, -1e3f, F32, F32, DATA_INF, LAYOUT_PACKED, 0);
    add(3000, 128, 8, 2, 100, 0.25f, 4, 0.05f, F32, F16, DATA_PLANTED, LAYOUT_PACKED, 0);
    /* 6. q8_0 keys (a quantized KV cache): keys are quantized before the reference and the
     * near-tie check see them, so the selection must still match exactly. Like bf16 they blur
     * deep planted rankings, so budgets stay <= 100; ties stay exact (one-hot queries read one
     * dequantized value each, and every block's scale is 3/127). */
    const ela_dtype Q8 = ELA_Q8_0;
    add(4099, 128, 8, 2, 100, 0.25f, 4, 0.0f, F32, Q8, DATA_PLANTED, LAYOUT_VIEWS, F_THREADS);
    add(9001, 64, 8, 1, 64, 0.25f, 4, 0.0f, F32, Q8, DATA_PLANTED, LAYOUT_TOKEN_MAJOR, F_THREADS);
    add(3001, 128, 4, 4, 100, 0.25f, 4, 0.0f, F16, Q8, DATA_PLANTED, LAYOUT_PACKED, 0);
    add(12011, 128, 32, 8, 64, 0.25f, 4, 0.0f, F32, Q8, DATA_PLANTED, LAYOUT_PACKED, F_THREADS);
    add(300, 64, 8, 1, 5, 0.25f, 2, 0.0f, BF16, Q8, DATA_RANDOM, LAYOUT_VIEWS, 0);
    add(5000, 128, 8, 2, 256, 0.25f, 4, 0.0f, F32, Q8, DATA_TIES, LAYOUT_VIEWS, F_THREADS);
}

/* ---- inputs ---------------------------------------------------------------------------------- */
typedef struct {
    float *q, *k;     /* [hq, d], [hkv, n, d], rounded through their dtypes */
    int64_t *idx;     /* reference result */
    int64_t count;
} hdata;

static void hdata_free(hdata *h) {
    free(h->q);
    free(h->k);
    free(h->idx);
    memset(h, 0, sizeof *h);
}

/* Solve M X = I for the G x G Gram matrix (Gauss-Jordan, partial pivoting); 0 or -1. */
static int invert(double *M, double *X, int G) {
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++)
            X[i * G + j] = i == j;
    for (int c = 0; c < G; c++) {
        int piv = c;
        for (int r = c + 1; r < G; r++)
            if (fabs(M[r * G + c]) > fabs(M[piv * G + c]))
                piv = r;
        if (fabs(M[piv * G + c]) < 1e-9)
            return -1;
        for (int j = 0; j < G; j++) {
            double t = M[c * G + j];
            M[c * G + j] = M[piv * G + j];
            M[piv * G + j] = t;
            t = X[c * G + j];
            X[c * G + j] = X[piv * G + j];
            X[piv * G + j] = t;
        }
        double inv = 1.0 / M[c * G + c];
        for (int j = 0; j < G; j++) {
            M[c * G + j] *= inv;
            X[c * G + j] *= inv;
        }
        for (int r = 0; r < G; r++) {
            if (r == c)
                continue;
            double f = M[r * G + c];
            for (int j = 0; j < G; j++) {
                M[r * G + j] -= f * M[c * G + j];
                X[r * G + j] -= f * X[c * G + j];
            }
        }
    }
    return 0;
}

/* Planted data: per query head h of KV group g a target a[h][j] per key j; keys are
 * k_j = sum_h a[h][j] u_h + noise orthogonal to the group's queries, where u_h is the dual basis
 * of the queries (q_h' . u_h = [h == h']), so q_h . k_j = a[h][j] and the logit is scale a[h][j].
 * Each head ranks k_mid + 3 tokens of a shared pool of about 1.5 k_mid candidates at
 * TOP + rank steps; other candidates get [0, TOP - 2); sink and recent tokens get needles above
 * everything for half the heads. DATA_PERM instead ranks every candidate one step apart: head
 * h % 3 == 0 in a random order, 1 ascending with the index (every key beats the running
 * threshold: the most compactions), 2 descending; f32 keys only, as 16-bit keys would blur
 * thousands of levels into near-ties. The queries are rounded to their dtype before the dual
 * basis is built, so only the keys' rounding perturbs the planted logits. Returns 0 or -1. */
#define TOP 20.0
static int make_planted(const dcase *c, test_rng *rng, float *q, float *k) {
    const int64_t n = c->n, d = c->d;
    const int hq = c->hq, G = c->hq / c->hkv;
    int64_t kb = c->budget < n ? c->budget : n, k_mid = 0, n_rec = 0, s = 0;
    if (c->budget < n)
        ref_decode_select_split(kb, c->recent, c->sinks, &k_mid, &n_rec, &s);
    else
        n_rec = n; /* everything is taken: no structure needed */
    const int64_t lo = s, hi = n - n_rec, nc = hi - lo;
    double *a = malloc((size_t)hq * (size_t)n * sizeof *a);
    int64_t *pool = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *pool);
    double *Qd = malloc((size_t)G * (size_t)d * sizeof *Qd), *U = malloc((size_t)G * (size_t)d * sizeof *U);
    double *M = malloc((size_t)G * G * sizeof *M), *X = malloc((size_t)G * G * sizeof *X);
    double *row = malloc((size_t)d * sizeof *row);
    int rc = -1;
    if (!a || !pool || !Qd || !U || !M || !X || !row)
        goto done;
    for (int64_t e = 0; e < (int64_t)hq * n; e++)
        a[e] = test_rng_uniform(rng, 0.0, TOP - 2.0);
    if (c->data == DATA_PERM) {
        for (int h = 0; h < hq; h++) {
            for (int64_t i = 0; i < nc; i++)
                pool[i] = i;
            for (int64_t i = 0; h % 3 == 0 && i + 1 < nc; i++) {
                int64_t r = i + test_rng_below(rng, nc - i), t = pool[i];
                pool[i] = pool[r];
                pool[r] = t;
            }
            for (int64_t i = 0; i < nc; i++)
                a[(int64_t)h * n + lo + i] = (double)(h % 3 == 2 ? nc - i : pool[i]);
            for (int64_t j = 0; j < n; j++)
                if ((j < lo || j >= hi) && test_rng_uniform(rng, 0.0, 1.0) < 0.5)
                    a[(int64_t)h * n + j] = (double)nc + 5.0 + test_rng_uniform(rng, 0.0, 3.0);
        }
        goto build;
    }
    int64_t np = nc < k_mid + k_mid / 2 + 4 + hq ? nc : k_mid + k_mid / 2 + 4 + hq;
    for (int64_t i = 0; i < nc; i++)
        pool[i] = lo + i;
    for (int64_t i = 0; i < np; i++) { /* the pool: a random subset of the candidates */
        int64_t r = i + test_rng_below(rng, nc - i), t = pool[i];
        pool[i] = pool[r];
        pool[r] = t;
    }
    int64_t t_len = np < k_mid + 3 ? np : k_mid + 3;
    for (int h = 0; h < hq; h++) {
        for (int64_t i = 0; i < t_len; i++) { /* shuffle the pool's head; rank i gets step i */
            int64_t r = i + test_rng_below(rng, np - i), t = pool[i];
            pool[i] = pool[r];
            pool[r] = t;
            a[(int64_t)h * n + pool[i]] = TOP + (double)(t_len - i);
        }
        for (int64_t j = 0; j < n; j++)
            if ((j < lo || j >= hi) && test_rng_uniform(rng, 0.0, 1.0) < 0.5)
                a[(int64_t)h * n + j] = TOP + (double)t_len + 5.0 + test_rng_uniform(rng, 0.0, 3.0);
    }
build:
    for (int g = 0; g < c->hkv; g++) {
        for (int64_t e = 0; e < (int64_t)G * d; e++) {
            float qf = (float)test_rng_normal(rng);
            if (test_round_through(&qf, 1, c->tq) != 0)
                goto done;
            Qd[e] = qf;
        }
        for (int i = 0; i < G; i++)
            for (int j = 0; j < G; j++) {
                double dot = 0.0;
                for (int64_t x = 0; x < d; x++)
                    dot += Qd[i * d + x] * Qd[j * d + x];
                M[i * G + j] = dot;
            }
        if (invert(M, X, G) != 0)
            goto done;
        for (int i = 0; i < G; i++)
            for (int64_t x = 0; x < d; x++) {
                double u = 0.0;
                for (int l = 0; l < G; l++)
                    u += X[i * G + l] * Qd[l * d + x];
                U[i * d + x] = u;
            }
        for (int i = 0; i < G; i++)
            for (int64_t x = 0; x < d; x++)
                q[((int64_t)g * G + i) * d + x] = (float)Qd[i * d + x];
        for (int64_t j = 0; j < n; j++) {
            for (int64_t x = 0; x < d; x++) /* uniform: cheaper than normal, variance 1 */
                row[x] = test_rng_uniform(rng, -1.7320508, 1.7320508);
            for (int i = 0; i < G; i++) { /* noise minus its projection: q_i . noise = 0 */
                double dot = 0.0;
                for (int64_t x = 0; x < d; x++)
                    dot += Qd[i * d + x] * row[x];
                for (int64_t x = 0; x < d; x++)
                    row[x] -= dot * U[i * d + x];
            }
            for (int i = 0; i < G; i++) {
                double ai = a[((int64_t)g * G + i) * n + j];
                for (int64_t x = 0; x < d; x++)
                    row[x] += ai * U[i * d + x];
            }
            for (int64_t x = 0; x < d; x++)
                k[((int64_t)g * n + j) * d + x] = (float)row[x];
        }
    }
    rc = 0;
done:
    free(a);
    free(pool);
    free(Qd);
    free(U);
    free(M);
    free(X);
    free(row);
    return rc;
}

/* Ties: one-hot queries (+-1 on one channel per head), keys small integers in [-3, 3]: every
 * logit is scale times an integer, computed exactly by any summation order, so equal logits are
 * equal in the op too and only the index order can break them. */
static void make_ties(const dcase *c, test_rng *rng, float *q, float *k) {
    const int64_t n = c->n, d = c->d;
    for (int64_t e = 0; e < (int64_t)c->hq * d; e++)
        q[e] = 0.0f;
    for (int h = 0; h < c->hq; h++)
        q[(int64_t)h * d + test_rng_below(rng, d)] = test_rng_uniform(rng, 0.0, 1.0) < 0.5 ? -1.0f : 1.0f;
    for (int64_t e = 0; e < (int64_t)c->hkv * n * d; e++)
        k[e] = (float)(test_rng_below(rng, 7) - 3);
}

/* Flat: the ties data with every key component 1, so all of a head's logits are equal and the
 * ranking is the index order. Inf (f32 keys): ties data where ~10% of the keys are 3e38 on every
 * channel; with a scale of 1e3 their logits overflow to +-inf in f32 (all equal there, and all
 * equal in the f64 reference), which the selection must rank like any other value. */
static void make_flat_or_inf(const dcase *c, test_rng *rng, float *q, float *k) {
    make_ties(c, rng, q, k);
    const int64_t n = c->n, d = c->d;
    for (int g = 0; g < c->hkv; g++)
        for (int64_t j = 0; j < n; j++) {
            int big = c->data == DATA_INF && test_rng_uniform(rng, 0.0, 1.0) < 0.1;
            for (int64_t x = 0; x < d; x++) {
                float *kx = &k[((int64_t)g * n + j) * d + x];
                *kx = c->data == DATA_FLAT ? 1.0f : big ? 3e38f : *kx;
            }
        }
}

/* Neighbours in every head's top k_mid + 1 (reference logits over the candidates) are further
 * apart than the op's f32 error allows. */
typedef struct {
    double v;
    int64_t j;
} scored;

static int by_rank(const void *pa, const void *pb) {
    const scored *x = pa, *y = pb;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

static int gaps_ok(const dcase *c, const float *q, const float *k, const double *P) {
    const int64_t n = c->n, d = c->d;
    if (c->budget >= n)
        return 1;
    int64_t k_mid, n_rec, s;
    ref_decode_select_split(c->budget, c->recent, c->sinks, &k_mid, &n_rec, &s);
    const int64_t lo = s, hi = n - n_rec, nc = hi - lo;
    const int G = c->hq / c->hkv;
    const double scale = c->scale != 0.0f ? fabs((double)c->scale) : 1.0 / sqrt((double)d);
    const double gamma = GAP_FACTOR * (double)(d + 2) * 0x1p-24;
    const int64_t want = k_mid + 1 < nc ? k_mid + 1 : nc;
    scored *sc = malloc((size_t)nc * sizeof *sc);
    if (!sc)
        return 0;
    int ok = 1;
    for (int h = 0; h < c->hq && ok; h++) {
        for (int64_t j = lo; j < hi; j++) {
            sc[j - lo].v = P[(int64_t)h * n + j];
            sc[j - lo].j = j;
        }
        qsort(sc, (size_t)nc, sizeof *sc, by_rank);
        for (int64_t r = 0; r + 1 < want && ok; r++) {
            double err = 0.0;
            for (int w = 0; w < 2; w++) {
                const float *kr = k + ((int64_t)(h / G) * n + sc[r + w].j) * d;
                double sum = 0.0;
                for (int64_t x = 0; x < d; x++)
                    sum += fabs((double)q[(int64_t)h * d + x] * kr[x]);
                err += gamma * scale * sum;
            }
            if (sc[r].v - sc[r + 1].v <= err)
                ok = 0;
        }
    }
    free(sc);
    return ok;
}

static int regenerations;

static int hdata_make(const dcase *c, int ci, hdata *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = (int64_t)c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    h->q = malloc((size_t)nq * sizeof *h->q);
    h->k = malloc((size_t)nk * sizeof *h->k);
    h->idx = malloc((size_t)c->n * sizeof *h->idx);
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    double *P = malloc((size_t)c->hq * (size_t)c->n * sizeof *P);
    int rc = -1;
    if (!h->q || !h->k || !h->idx || !qd || !kd || !P)
        goto done;
    for (int attempt = 0; attempt < 40; attempt++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 1000 + (uint64_t)attempt);
        if (c->data == DATA_PLANTED || c->data == DATA_PERM) {
            if (make_planted(c, &rng, h->q, h->k) != 0)
                continue;
        } else if (c->data == DATA_TIES) {
            make_ties(c, &rng, h->q, h->k);
        } else if (c->data == DATA_FLAT || c->data == DATA_INF) {
            make_flat_or_inf(c, &rng, h->q, h->k);
        } else {
            test_fill_normal(&rng, h->q, nq, 1.0f);
            test_fill_normal(&rng, h->k, nk, 1.0f);
        }
        if (test_round_through(h->q, nq, c->tq) != 0 || test_round_through(h->k, nk, c->tk) != 0)
            goto done;
        for (int64_t e = 0; e < nq; e++)
            qd[e] = h->q[e];
        for (int64_t e = 0; e < nk; e++)
            kd[e] = h->k[e];
        if (ref_decode_select(c->hq, c->hkv, c->n, c->d, qd, kd, (double)c->scale, c->budget,
                              c->recent, c->sinks, h->idx, &h->count, P) != 0)
            goto done;
        if (c->data == DATA_TIES || c->data == DATA_FLAT || c->data == DATA_INF ||
            gaps_ok(c, h->q, h->k, P)) {
            rc = 0;
            goto done;
        }
        regenerations++;
    }
done:
    free(qd);
    free(kd);
    free(P);
    return rc;
}

/* ---- device tensors -------------------------------------------------------------------------- */
#define IDX_SENTINEL (-77)
#define IDX_PAD 5 /* i32 entries before and after the idx view */

typedef struct {
    ela_tensor *qbase, *q, *kbase, *k, *ibase, *idx;
    int64_t idx_len;
} dset;

static void dset_free(dset *s) {
    ela_tensor_free(s->q);
    ela_tensor_free(s->qbase);
    ela_tensor_free(s->k);
    ela_tensor_free(s->kbase);
    ela_tensor_free(s->idx);
    ela_tensor_free(s->ibase);
    memset(s, 0, sizeof *s);
}

static ela_status fill(ela_tensor *t, float v) {
    int64_t ne = ela_tensor_numel(t);
    float *f = malloc((size_t)(ne > 0 ? ne : 1) * sizeof *f);
    if (!f)
        return ELA_ERR_OOM;
    for (int64_t i = 0; i < ne; i++)
        f[i] = v;
    ela_status st = ela_tensor_write_f32(t, f, ne);
    free(f);
    return st;
}

static ela_status dset_make(ela_backend *be, const dcase *c, const hdata *h, dset *s) {
    memset(s, 0, sizeof *s);
    ela_status st;
    const int64_t n = c->n, d = c->d, hq = c->hq, hkv = c->hkv;
    /* bytes of a stride of x elements (q8_0 keys: whole blocks; x = 1: one block) */
#define QB(x) test_stride_bytes(c->tq, x)
#define KB(x) test_stride_bytes(c->tk, x)
    int64_t qext[3] = {1, hq, d}, kext[3] = {hkv, n, d};
    s->idx_len = (c->budget < n ? c->budget : n) + (c->layout == LAYOUT_PACKED ? 0 : 3);
    if (c->layout == LAYOUT_PACKED) {
        if ((st = ela_tensor_new(be, c->tq, 3, qext, NULL, &s->q)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tk, 3, kext, NULL, &s->k)) != ELA_OK)
            return st;
    } else if (c->layout == LAYOUT_VIEWS) {
        /* q: heads [2, 2 + hq) of a fused projection [1, hq + 2 hkv + 2, d];
         * k: tokens [3, 3 + n) of a cache [hkv, n + 40, d] whose other tokens are NaN */
        int64_t qb[3] = {1, hq + 2 * hkv + 2, d}, qs[3] = {QB(qb[1] * d), QB(d), QB(1)};
        int64_t cap = n + 40, kb[3] = {hkv, cap, d}, ks[3] = {KB(cap * d), KB(d), KB(1)};
        /* q8_0 turns NaN into 0: a large key there would top every ranking if read */
        float outside = c->tk == ELA_Q8_0 ? 1e4f : NAN;
        if ((st = ela_tensor_new(be, c->tq, 3, qb, NULL, &s->qbase)) != ELA_OK ||
            (st = ela_tensor_view(s->qbase, 3, qext, qs, QB(2 * d), &s->q)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tk, 3, kb, NULL, &s->kbase)) != ELA_OK ||
            (st = fill(s->kbase, outside)) != ELA_OK ||
            (st = ela_tensor_view(s->kbase, 3, kext, ks, KB(3 * d), &s->k)) != ELA_OK)
            return st;
    } else {
        /* k: head-major view of a token-major [n, hkv, d] buffer */
        int64_t kb[3] = {n, hkv, d}, ks[3] = {KB(d), KB(hkv * d), KB(1)};
        if ((st = ela_tensor_new(be, c->tq, 3, qext, NULL, &s->q)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tk, 3, kb, NULL, &s->kbase)) != ELA_OK ||
            (st = ela_tensor_view(s->kbase, 3, kext, ks, 0, &s->k)) != ELA_OK)
            return st;
    }
    /* idx: a view of [IDX_PAD + len + IDX_PAD] filled with the sentinel */
    int64_t ib[1] = {s->idx_len + 2 * IDX_PAD}, ie[1] = {s->idx_len}, is[1] = {4};
    if ((st = ela_tensor_new(be, ELA_I32, 1, ib, NULL, &s->ibase)) != ELA_OK ||
        (st = fill(s->ibase, (float)IDX_SENTINEL)) != ELA_OK ||
        (st = ela_tensor_view(s->ibase, 1, ie, is, IDX_PAD * 4, &s->idx)) != ELA_OK)
        return st;
    if ((st = ela_tensor_write_f32(s->q, h->q, hq * d)) != ELA_OK ||
        (st = ela_tensor_write_f32(s->k, h->k, hkv * n * d)) != ELA_OK)
        return st;
    return ELA_OK;
#undef QB
#undef KB
}

/* ---- backends -------------------------------------------------------------------------------- */
typedef struct {
    const char *level, *threads;
    ela_backend *be;
    double seconds;
    int runs;
} cfg;

#define MAX_CFGS 12
static cfg cfgs[MAX_CFGS];
static int n_cfgs;

static int level_supported(const char *level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    if (strcmp(level, "avx2") == 0)
        return avx2;
    if (strcmp(level, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return strcmp(level, "scalar") == 0;
#else
    return strcmp(level, "scalar") == 0;
#endif
}

static void open_backends(void) {
    static const char *const levels[] = {"scalar", "avx2", "avx512"};
    static const char *const threads[] = {NULL, "1", "3", "16"};
    for (int l = 0; l < 3; l++) {
        if (!level_supported(levels[l]))
            continue;
        for (int t = 0; t < 4; t++) {
            cfg *cf = &cfgs[n_cfgs];
            cf->level = levels[l];
            cf->threads = threads[t];
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", threads[t]);
            CHECK_STATUS(ela_backend_open("cpu", &cf->be), ELA_OK);
            if (cf->be)
                n_cfgs++;
        }
    }
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
}

static void run_on(cfg *cf, const dcase *c, int ci, const hdata *h) {
    char what[256];
    case_str(c, what, sizeof what);
    const char *thr = cf->threads ? cf->threads : "default";
    dset s;
    ela_status st = dset_make(cf->be, c, h, &s);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    if (st == ELA_OK) {
        ela_decode_select_params dp = ela_decode_select_params_default(c->budget);
        dp.recent = c->recent;
        dp.sinks = c->sinks;
        ela_attn_params ap = ela_attn_params_default();
        ap.scale = c->scale;
        int64_t count = -1;
        double t0 = test_now();
        st = ela_decode_select(cf->be, s.q, s.k, &dp, &ap, s.idx, &count);
        cf->seconds += test_now() - t0;
        cf->runs++;
        CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cf->level, thr,
               ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            int64_t nb = s.idx_len + 2 * IDX_PAD;
            int32_t *got = malloc((size_t)nb * sizeof *got);
            CHECK(got != NULL);
            if (got && ela_tensor_read(s.ibase, got, (size_t)nb * 4) == ELA_OK) {
                CHECKF(count == h->count, "case %d [%s] level %s threads %s: count %lld, "
                       "reference %lld", ci, what, cf->level, thr, (long long)count,
                       (long long)h->count);
                int64_t first_bad = -1;
                for (int64_t i = 0; i < h->count && first_bad < 0; i++)
                    if (got[IDX_PAD + i] != h->idx[i])
                        first_bad = i;
                CHECKF(first_bad < 0, "case %d [%s] level %s threads %s: idx[%lld] = %d, reference "
                       "%lld", ci, what, cf->level, thr, (long long)first_bad,
                       first_bad >= 0 ? got[IDX_PAD + first_bad] : 0,
                       first_bad >= 0 ? (long long)h->idx[first_bad] : 0LL);
                int64_t touched = 0;
                for (int64_t i = 0; i < nb; i++)
                    if ((i < IDX_PAD || i >= IDX_PAD + h->count) && got[i] != IDX_SENTINEL)
                        touched++;
                CHECKF(touched == 0, "case %d [%s] level %s threads %s: %lld idx entries outside "
                       "[0, count) were written", ci, what, cf->level, thr, (long long)touched);
            }
            free(got);
        }
    }
    dset_free(&s);
}

/* ---- error paths ----------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_word(ela_last_error(), word), "message \"%s\" does not name '%s'",     \
               ela_last_error(), word);                                                         \
    } while (0)

static void test_errors(ela_backend *be) {
    ela_tensor *q = NULL, *k = NULL, *idx = NULL, *q2 = NULL, *k80 = NULL, *idx_f = NULL;
    ela_tensor *idx2 = NULL, *short_idx = NULL, *q3 = NULL;
    int64_t eq[3] = {1, 8, 64}, ek[3] = {2, 500, 64}, ei[1] = {100}, eq2[3] = {2, 8, 64};
    int64_t ek80[3] = {2, 500, 80}, ei2[2] = {1, 100}, eis[1] = {99}, eq3[3] = {1, 7, 64};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, ei, NULL, &idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq2, NULL, &q2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek80, NULL, &k80), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 1, ei, NULL, &idx_f), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, ei2, NULL, &idx2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, eis, NULL, &short_idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq3, NULL, &q3), ELA_OK);
    if (!q || !k || !idx || !q2 || !k80 || !idx_f || !idx2 || !short_idx || !q3)
        goto done;
    float *zeros = calloc(500 * 2 * 64, sizeof *zeros);
    if (zeros) {
        CHECK_STATUS(ela_tensor_write_f32(q, zeros, 8 * 64), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(k, zeros, 2 * 500 * 64), ELA_OK);
        free(zeros);
    }
    ela_decode_select_params dp = ela_decode_select_params_default(100);
    CHECK(dp.budget == 100 && dp.recent == 0.25f && dp.sinks == 4);
    ela_attn_params ap = ela_attn_params_default();
    int64_t count = 0;
    CHECK_STATUS(ela_decode_select(be, q, k, &dp, &ap, idx, &count), ELA_OK);
    CHECK(count == 100);
    CHECK_STATUS(ela_decode_select(be, q, k, &dp, NULL, idx, &count), ELA_OK);

    CHECK_FAIL(ela_decode_select(NULL, q, k, &dp, &ap, idx, &count), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_decode_select(be, NULL, k, &dp, &ap, idx, &count), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_decode_select(be, q, NULL, &dp, &ap, idx, &count), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_decode_select(be, q2, k, &dp, &ap, idx, &count), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_decode_select(be, q3, k, &dp, &ap, idx, &count), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_decode_select(be, q, k80, &dp, &ap, idx, &count), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_decode_select(be, q, k, NULL, &ap, idx, &count), ELA_ERR_INVALID_ARG, "dparams");
    CHECK_FAIL(ela_decode_select(be, q, k, &dp, &ap, NULL, &count), ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select(be, q, k, &dp, &ap, idx_f, &count), ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select(be, q, k, &dp, &ap, idx2, &count), ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select(be, q, k, &dp, &ap, short_idx, &count), ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select(be, q, k, &dp, &ap, idx, NULL), ELA_ERR_INVALID_ARG, "count");
    {
        ela_decode_select_params bad = dp;
        bad.budget = 0;
        CHECK_FAIL(ela_decode_select(be, q, k, &bad, &ap, idx, &count), ELA_ERR_INVALID_ARG, "budget");
        bad = dp;
        bad.recent = -0.01f;
        CHECK_FAIL(ela_decode_select(be, q, k, &bad, &ap, idx, &count), ELA_ERR_INVALID_ARG, "recent");
        bad.recent = 1.5f;
        CHECK_FAIL(ela_decode_select(be, q, k, &bad, &ap, idx, &count), ELA_ERR_INVALID_ARG, "recent");
        bad.recent = NAN;
        CHECK_FAIL(ela_decode_select(be, q, k, &bad, &ap, idx, &count), ELA_ERR_INVALID_ARG, "recent");
        bad = dp;
        bad.sinks = -1;
        CHECK_FAIL(ela_decode_select(be, q, k, &bad, &ap, idx, &count), ELA_ERR_INVALID_ARG, "sinks");
        ela_attn_params badp = ap;
        badp.scale = NAN;
        CHECK_FAIL(ela_decode_select(be, q, k, &dp, &badp, idx, &count), ELA_ERR_INVALID_ARG, "scale");
        /* a budget above n only needs n entries */
        bad = dp;
        bad.budget = 1000;
        CHECK_FAIL(ela_decode_select(be, q, k, &bad, &ap, idx, &count), ELA_ERR_INVALID_ARG, "idx");
    }
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(idx);
    ela_tensor_free(q2);
    ela_tensor_free(k80);
    ela_tensor_free(idx_f);
    ela_tensor_free(idx2);
    ela_tensor_free(short_idx);
    ela_tensor_free(q3);
}

/* ---- out of memory --------------------------------------------------------------------------- */
static ela_status oom_sequence(const dcase *c, const hdata *h, const char *threads, int check) {
    ela_backend *be = NULL;
    test_setenv("ELA_THREADS", threads);
    ela_status st = ela_backend_open("cpu", &be);
    test_setenv("ELA_THREADS", NULL);
    if (st != ELA_OK)
        return st;
    dset s;
    st = dset_make(be, c, h, &s);
    if (st == ELA_OK) {
        ela_decode_select_params dp = ela_decode_select_params_default(c->budget);
        int64_t count = 0;
        st = ela_decode_select(be, s.q, s.k, &dp, NULL, s.idx, &count);
        if (st == ELA_OK && check) {
            int32_t *got = malloc((size_t)s.idx_len * sizeof *got);
            if (got && ela_tensor_read(s.idx, got, (size_t)s.idx_len * 4) == ELA_OK) {
                int same = count == h->count;
                for (int64_t i = 0; same && i < count; i++)
                    same = got[i] == h->idx[i];
                CHECKF(same, "oom: result differs from the reference (threads %s)",
                       threads ? threads : "default");
            }
            free(got);
        }
    }
    dset_free(&s);
    ela_backend_close(be);
    return st;
}

static void test_oom(void) {
    dcase c = {6000, 64, 8, 2, 128, 0.25f, 4, 0.0f, ELA_F16, ELA_F16, DATA_PLANTED, LAYOUT_VIEWS, 0};
    hdata h;
    CHECK(hdata_make(&c, 9999, &h) == 0);
    static const char *const threads[2] = {"1", "3"};
    for (int t = 0; t < 2; t++) {
        int64_t failures = 0;
        ela_status st = ELA_OK;
        for (int64_t i = 1; i <= 10000; i++) {
            ela_debug_fail_alloc(i);
            st = oom_sequence(&c, &h, threads[t], 0);
            ela_debug_fail_alloc(0);
            if (st == ELA_OK)
                break;
            failures++;
            CHECKF(st == ELA_ERR_OOM, "allocation %lld failed: got %s (%s)", (long long)i,
                   ela_status_str(st), ela_last_error());
            if (st != ELA_ERR_OOM)
                break;
        }
        CHECK(st == ELA_OK);
        CHECKF(failures >= 3, "only %lld allocations seen", (long long)failures);
        printf("oom (threads %s): %lld allocations failed in turn, each ELA_ERR_OOM\n", threads[t],
               (long long)failures);
        CHECK_STATUS(oom_sequence(&c, &h, threads[t], 1), ELA_OK);
    }
    hdata_free(&h);
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    if (n_cfgs == 0)
        return test_summary("test_decode_select");
    {
        ela_dtype t[2] = {ELA_BF16, ELA_F16}, t8[2] = {ELA_F32, ELA_Q8_0};
        CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_DECODE_SELECT, t, 2));
        CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_DECODE_SELECT, t8, 2));
    }
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    double t_ref = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        const dcase *c = &cases[ci];
        if (only_case >= 0) {
            char what[256];
            case_str(c, what, sizeof what);
            printf("case %d: %s\n", ci, what);
        }
        hdata h;
        double t0 = test_now();
        int rc = hdata_make(c, ci, &h);
        t_ref += test_now() - t0;
        char what[256];
        case_str(c, what, sizeof what);
        CHECKF(rc == 0, "case %d [%s]: no input without near-ties, or the reference failed", ci,
               what);
        for (int k = 0; rc == 0 && k < n_cfgs; k++) {
            if (cfgs[k].threads && !(c->flags & F_THREADS))
                continue;
            run_on(&cfgs[k], c, ci, &h);
        }
        hdata_free(&h);
    }
    printf("inputs and reference: %.2f s, %d regenerations for near-ties\n", t_ref, regenerations);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.3f s in ela_decode_select\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs, cfgs[k].seconds);
    if (only_case < 0) {
        test_errors(cfgs[0].be);
        test_oom();
    }
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_decode_select");
}

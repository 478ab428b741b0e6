/* Unit test of ela_decode_select_attend (the fused LessIsMore selection layer) on the "cpu"
 * backend against the float64 references: o against attn_dense_ref (causal, q_pos0 = n - 1)
 * within the dtype's tolerance, and the index list against decode_select_ref exactly (sinks,
 * union order, recent window), on inputs without near-ties. Also: the same list as
 * ela_decode_select and the same o as ela_decode_attention's select layer; f32/f16/bf16 q, K/V
 * and o, d 64/80/128, GQA 1/4/8/16 (row and tiled kernel paths), n not a multiple of 128 or of
 * a tile, budget >= n, tiny budgets, strided views; every SIMD level and several thread counts;
 * argument errors; an out-of-memory loop. Replay with ELA_TEST_SEED, one case with
 * ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_dense_ref.h"
#include "ref/decode_select_ref.h"
#include "test_common.h"

/* Tolerances on the relative L2 error of o (as tests/test_attn_dense.c states them): the
 * reference reads the same dtype-rounded inputs, so f32 accumulation order and exp are left,
 * plus the output rounding: f32 in and out 1e-5; 16-bit in, f32 out 2e-3; 16-bit out 1e-2. */
#define TOL_F32 1e-5
#define TOL_16_IN_F32_OUT 2e-3
#define TOL_16_OUT 1e-2

/* Near-ties (DATA_RANDOM only): the op's f32 logit of a key is off by at most about
 * (d + 2) 2^-24 sum |q_c k_c| scale; neighbours in each head's top k_mid + 1 must be further
 * apart than twice both sides' bound, so the ranking the op sees is the reference's. */
#define GAP_FACTOR 2.0

/* DATA_RANDOM: Gaussian q, k, v (small budgets, near-ties regenerated). DATA_DIGITS: exact
 * logits: each query head has +-1, +-8, +-64, +-512 on four channels and 0 elsewhere, keys are
 * integers in [-3, 3] and the scale a power of two, so every logit is an exact multiple of the
 * scale in any summation order, with 2401 distinct values (balanced base 8) and many exact
 * ties that only the index order breaks: deep rankings compare exactly. */
enum { DATA_RANDOM, DATA_DIGITS };
static const char *const data_names[] = {"random", "digits"};
enum { LAYOUT_PACKED, LAYOUT_VIEWS };

#define F_THREADS 1u /* also with ELA_THREADS = 1, 3, 16 */

typedef struct {
    int64_t n, d;
    int hq, hkv;
    int64_t budget;
    float recent;
    int sinks;
    ela_dtype tq, tkv, to;
    int data, layout;
    unsigned flags;
} dcase;

#define MAX_CASES 128
static dcase cases[MAX_CASES];
static int n_cases;

static void add(int64_t n, int64_t d, int hq, int hkv, int64_t budget, float recent, int sinks,
                ela_dtype tq, ela_dtype tkv, ela_dtype to, int data, int layout, unsigned flags) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    dcase c = {n, d, hq, hkv, budget, recent, sinks, tq, tkv, to, data, layout, flags};
    cases[n_cases++] = c;
}

static void case_str(const dcase *c, char *buf, size_t size) {
    snprintf(buf, size, "n=%lld d=%lld Hq=%d Hkv=%d K=%lld recent=%g sinks=%d q=%s kv=%s o=%s "
             "data=%s layout=%s", (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->budget, (double)c->recent, c->sinks, ela_dtype_name(c->tq),
             ela_dtype_name(c->tkv), ela_dtype_name(c->to), data_names[c->data],
             c->layout == LAYOUT_VIEWS ? "views" : "packed");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    static const ela_dtype mixes[6][3] = {{ELA_F32, ELA_F32, ELA_F32}, {ELA_F16, ELA_F16, ELA_F32},
                                          {ELA_BF16, ELA_BF16, ELA_F32}, {ELA_F16, ELA_F16, ELA_F16},
                                          {ELA_BF16, ELA_BF16, ELA_BF16}, {ELA_F32, ELA_F16, ELA_F32}};
    static const int gqa[4][2] = {{4, 4}, {8, 2}, {8, 1}, {16, 1}}; /* G = 1, 4, 8, 16 */
    static const int64_t dims[3] = {64, 128, 80};
    static const int64_t lens[5] = {1000, 4099, 9001, 3001, 777};
    /* 1. Sweep: dtype mixes x GQA x d, exact (digits) data with deep budgets, lengths rotating. */
    int idx = 0;
    for (int m = 0; m < 6; m++)
        for (int g = 0; g < 4; g++, idx++) {
            int64_t d = dims[idx % 3], n = lens[idx % 5];
            int64_t budget = idx % 2 ? n / 4 : 300;
            add(n, d, gqa[g][0], gqa[g][1], budget, 0.25f, 4, mixes[m][0], mixes[m][1],
                mixes[m][2], DATA_DIGITS, idx % 3 == 1 ? LAYOUT_VIEWS : LAYOUT_PACKED,
                idx % 4 == 0 ? F_THREADS : 0);
        }
    /* 2. Gaussian data (the attention output sees a realistic spread), small budgets. */
    for (int m = 0; m < 6; m++) {
        int g = m % 4;
        add(lens[m % 5] + 37, dims[m % 2], gqa[g][0], gqa[g][1], 8 + 4 * m, 0.25f, 4, mixes[m][0],
            mixes[m][1], mixes[m][2], DATA_RANDOM, m % 2 ? LAYOUT_VIEWS : LAYOUT_PACKED, F_THREADS);
    }
    /* 3. Long: several key chunks per KV head, every thread count. */
    add(20011, 128, 32, 8, 2048, 0.25f, 4, F16, F16, F32, DATA_DIGITS, LAYOUT_PACKED, F_THREADS);
    add(12345, 64, 8, 1, 1024, 0.25f, 4, BF16, BF16, F32, DATA_DIGITS, LAYOUT_VIEWS, F_THREADS);
    add(16411, 128, 8, 2, 24, 0.25f, 4, F32, F32, F32, DATA_RANDOM, LAYOUT_PACKED, F_THREADS);
    /* 4. Budget boundaries: K >= n (all tokens, no selection), K == n, n = K + 1, tiny K, n = 1,
     * recent 0 / 1 / non-quarter, sinks 0 and above the recency share. */
    add(500, 64, 8, 2, 5000, 0.25f, 4, F32, F32, F32, DATA_DIGITS, LAYOUT_PACKED, F_THREADS);
    add(500, 128, 8, 2, 500, 0.25f, 4, F16, F16, F16, DATA_DIGITS, LAYOUT_VIEWS, 0);
    add(501, 128, 8, 2, 500, 0.25f, 4, BF16, BF16, F32, DATA_DIGITS, LAYOUT_PACKED, 0);
    add(1, 64, 4, 2, 2048, 0.25f, 4, F32, F32, F32, DATA_RANDOM, LAYOUT_PACKED, 0);
    add(2, 64, 4, 2, 1, 0.25f, 4, F32, F32, F32, DATA_DIGITS, LAYOUT_PACKED, 0);
    for (int64_t b = 1; b <= 5; b++)
        add(300 + b, 64, 8, 2, b, 0.25f, (int)(b % 3), F32, F16, F32, DATA_DIGITS,
            (int)(b % 2), 0);
    add(3000, 128, 8, 2, 200, 0.0f, 4, F32, F32, F32, DATA_DIGITS, LAYOUT_PACKED, 0);
    add(3000, 128, 8, 2, 200, 1.0f, 4, F32, F32, F32, DATA_DIGITS, LAYOUT_VIEWS, 0);
    add(3000, 64, 8, 2, 210, 0.1f, 4, F16, F16, F32, DATA_DIGITS, LAYOUT_PACKED, 0);
    add(3000, 64, 8, 2, 77, 0.3f, 30, F32, F32, F32, DATA_DIGITS, LAYOUT_PACKED, 0);
    /* a long recent window: with many threads, key chunks that hold no candidate */
    add(3000, 64, 8, 2, 2900, 0.9f, 4, F32, F32, F32, DATA_DIGITS, LAYOUT_PACKED, F_THREADS);
    /* 5. q8_0 K/V (a quantized KV cache), quantized before the references and the near-tie
     * check see them. Gaussian data only: digits logits of q8_0 keys (scale * int8 against
     * +-512 ... +-1) need more than f32's 24 bits, so they would not be exact. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(4136, 128, 8, 2, 24, 0.25f, 4, F32, Q8, F32, DATA_RANDOM, LAYOUT_VIEWS, F_THREADS);
    add(9001, 64, 8, 1, 16, 0.25f, 4, F32, Q8, F32, DATA_RANDOM, LAYOUT_PACKED, F_THREADS);
    add(3001, 128, 16, 4, 12, 0.25f, 4, F32, Q8, F32, DATA_RANDOM, LAYOUT_PACKED, F_THREADS);
    add(1000, 64, 4, 4, 8, 0.25f, 2, F16, Q8, F16, DATA_RANDOM, LAYOUT_VIEWS, 0);
    add(500, 128, 16, 1, 5000, 0.25f, 4, F32, Q8, F32, DATA_RANDOM, LAYOUT_PACKED, 0);
    add(777, 32, 8, 2, 12, 0.25f, 4, BF16, Q8, BF16, DATA_RANDOM, LAYOUT_VIEWS, 0);
}

/* ---- inputs and references ---------------------------------------------------------------- */
typedef struct {
    float *q, *k, *v;  /* [hq, d], [hkv, n, d] x 2, rounded through their dtypes */
    double *o;         /* reference output [hq, d] */
    int64_t *idx;      /* reference selection */
    int64_t count;
    float scale;       /* passed to the op; 0 = 1/sqrt(d) */
} hdata;

static void hdata_free(hdata *h) {
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->o);
    free(h->idx);
    memset(h, 0, sizeof *h);
}

static void make_digits(const dcase *c, test_rng *rng, float *q, float *k) {
    const int64_t n = c->n, d = c->d;
    static const float weights[4] = {1.0f, 8.0f, 64.0f, 512.0f};
    memset(q, 0, (size_t)(c->hq * d) * sizeof *q);
    for (int h = 0; h < c->hq; h++)
        for (int w = 0; w < 4; w++) { /* four distinct channels per head */
            int64_t ch;
            do
                ch = test_rng_below(rng, d);
            while (q[h * d + ch] != 0.0f);
            q[h * d + ch] = test_rng_uniform(rng, 0.0, 1.0) < 0.5 ? -weights[w] : weights[w];
        }
    for (int64_t e = 0; e < (int64_t)c->hkv * n * d; e++)
        k[e] = (float)(test_rng_below(rng, 7) - 3);
}

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

/* Neighbours in every head's top k_mid + 1 over the candidates are further apart than the op's
 * f32 logit error (see GAP_FACTOR). */
static int gaps_ok(const dcase *c, const float *q, const float *k, const double *P, double scale) {
    const int64_t n = c->n, d = c->d;
    if (c->budget >= n)
        return 1;
    int64_t k_mid, n_rec, s;
    ref_decode_select_split(c->budget, c->recent, c->sinks, &k_mid, &n_rec, &s);
    const int64_t lo = s, nc = n - n_rec - lo;
    const int G = c->hq / c->hkv;
    const double gamma = GAP_FACTOR * (double)(d + 2) * 0x1p-24;
    const int64_t want = k_mid + 1 < nc ? k_mid + 1 : nc;
    scored *sc = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *sc);
    if (!sc)
        return 0;
    int ok = 1;
    for (int h = 0; h < c->hq && ok; h++) {
        for (int64_t j = 0; j < nc; j++) {
            sc[j].v = P[(int64_t)h * n + lo + j];
            sc[j].j = lo + j;
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
            ok = sc[r].v - sc[r + 1].v > err;
        }
    }
    free(sc);
    return ok;
}

static int regenerations;

static int hdata_make(const dcase *c, int ci, hdata *h) {
    memset(h, 0, sizeof *h);
    const int64_t n = c->n, d = c->d, nq = (int64_t)c->hq * d, nk = (int64_t)c->hkv * n * d;
    /* digits: a power-of-two scale keeps every logit exact; 1/16 for d = 128 and 80 (whose
     * default 1/sqrt(d) is inexact), the default 1/8 for d = 64 */
    h->scale = c->data == DATA_DIGITS && d != 64 ? 0.0625f : 0.0f;
    const double scale = h->scale != 0.0f ? h->scale : 1.0 / sqrt((double)d);
    h->q = malloc((size_t)nq * sizeof *h->q);
    h->k = malloc((size_t)nk * sizeof *h->k);
    h->v = malloc((size_t)nk * sizeof *h->v);
    h->o = malloc((size_t)nq * sizeof *h->o);
    h->idx = malloc((size_t)n * sizeof *h->idx);
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    double *vd = malloc((size_t)nk * sizeof *vd);
    double *P = malloc((size_t)c->hq * (size_t)n * sizeof *P);
    int rc = -1;
    if (!h->q || !h->k || !h->v || !h->o || !h->idx || !qd || !kd || !vd || !P)
        goto done;
    for (int attempt = 0; attempt < 40; attempt++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 1000 + (uint64_t)attempt);
        if (c->data == DATA_DIGITS) {
            make_digits(c, &rng, h->q, h->k);
        } else {
            test_fill_normal(&rng, h->q, nq, 1.0f);
            test_fill_normal(&rng, h->k, nk, 1.0f);
        }
        test_fill_uniform(&rng, h->v, nk, -1.0f, 1.0f);
        if (test_round_through(h->q, nq, c->tq) != 0 || test_round_through(h->k, nk, c->tkv) != 0 ||
            test_round_through(h->v, nk, c->tkv) != 0)
            goto done;
        for (int64_t e = 0; e < nq; e++)
            qd[e] = h->q[e];
        for (int64_t e = 0; e < nk; e++) {
            kd[e] = h->k[e];
            vd[e] = h->v[e];
        }
        if (ref_decode_select(c->hq, c->hkv, n, d, qd, kd, (double)h->scale, c->budget, c->recent,
                              c->sinks, h->idx, &h->count, P) != 0)
            goto done;
        if (c->data == DATA_DIGITS || gaps_ok(c, h->q, h->k, P, scale)) {
            ref_attn_dense_shape sh = {1, n, d, c->hq, c->hkv, 1, n - 1, (double)h->scale};
            rc = ref_attn_dense(&sh, qd, kd, vd, h->o, NULL) == 0 ? 0 : -1;
            goto done;
        }
        regenerations++;
    }
done:
    free(qd);
    free(kd);
    free(vd);
    free(P);
    return rc;
}

/* ---- device tensors ----------------------------------------------------------------------- */
#define IDX_SENTINEL (-77)
#define IDX_PAD 5 /* i32 entries before and after the idx view */

typedef struct {
    ela_tensor *qbase, *q, *kbase, *k, *vbase, *v, *obase, *o, *ibase, *idx, *idx2;
    int64_t idx_len;
} dset;

static void dset_free(dset *s) {
    ela_tensor *all[] = {s->q, s->qbase, s->k, s->kbase, s->v, s->vbase, s->o, s->obase,
                         s->idx, s->idx2, s->ibase};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        ela_tensor_free(all[i]);
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

/* Packed: plain tensors. Views: q heads [2, 2 + hq) of a fused projection; k, v tokens
 * [3, 3 + n) of NaN-filled caches, v token-major; o heads [1, 1 + hq) of a wider NaN-filled
 * buffer. idx always a view inside sentinels; idx2 another for ela_decode_select. */
static ela_status dset_make(ela_backend *be, const dcase *c, const hdata *h, dset *s) {
    memset(s, 0, sizeof *s);
    ela_status st;
    const int64_t n = c->n, d = c->d, hq = c->hq, hkv = c->hkv;
    /* bytes of a stride of x elements (q8_0 K/V: whole blocks; x = 1: one block) */
#define QB(x) test_stride_bytes(c->tq, x)
#define KB(x) test_stride_bytes(c->tkv, x)
#define OB(x) test_stride_bytes(c->to, x)
    /* q8_0 turns NaN into 0: a large value outside the K/V views poisons the result instead */
    const float kv_outside = c->tkv == ELA_Q8_0 ? 1e4f : NAN;
    int64_t qext[3] = {1, hq, d}, kext[3] = {hkv, n, d};
    s->idx_len = c->budget < n ? c->budget : n;
    if (c->layout == LAYOUT_PACKED) {
        if ((st = ela_tensor_new(be, c->tq, 3, qext, NULL, &s->q)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 3, kext, NULL, &s->k)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 3, kext, NULL, &s->v)) != ELA_OK ||
            (st = ela_tensor_new(be, c->to, 3, qext, NULL, &s->o)) != ELA_OK)
            return st;
    } else {
        int64_t qb[3] = {1, hq + 2 * hkv + 2, d}, qs[3] = {QB(qb[1] * d), QB(d), QB(1)};
        int64_t cap = n + 40, kb[3] = {hkv, cap, d}, ks[3] = {KB(cap * d), KB(d), KB(1)};
        int64_t vb[3] = {cap, hkv, d}, vs[3] = {KB(d), KB(hkv * d), KB(1)};
        int64_t ob[3] = {1, hq + 3, d}, os[3] = {OB(ob[1] * d), OB(d), OB(1)};
        if ((st = ela_tensor_new(be, c->tq, 3, qb, NULL, &s->qbase)) != ELA_OK ||
            (st = ela_tensor_view(s->qbase, 3, qext, qs, QB(2 * d), &s->q)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 3, kb, NULL, &s->kbase)) != ELA_OK ||
            (st = fill(s->kbase, kv_outside)) != ELA_OK ||
            (st = ela_tensor_view(s->kbase, 3, kext, ks, KB(3 * d), &s->k)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 3, vb, NULL, &s->vbase)) != ELA_OK ||
            (st = fill(s->vbase, kv_outside)) != ELA_OK ||
            (st = ela_tensor_view(s->vbase, 3, kext, vs, KB(3 * hkv * d), &s->v)) != ELA_OK ||
            (st = ela_tensor_new(be, c->to, 3, ob, NULL, &s->obase)) != ELA_OK ||
            (st = fill(s->obase, NAN)) != ELA_OK ||
            (st = ela_tensor_view(s->obase, 3, qext, os, OB(d), &s->o)) != ELA_OK)
            return st;
    }
    int64_t ib[1] = {2 * s->idx_len + 3 * IDX_PAD}, ie[1] = {s->idx_len}, is[1] = {4};
    if ((st = ela_tensor_new(be, ELA_I32, 1, ib, NULL, &s->ibase)) != ELA_OK ||
        (st = fill(s->ibase, (float)IDX_SENTINEL)) != ELA_OK ||
        (st = ela_tensor_view(s->ibase, 1, ie, is, IDX_PAD * 4, &s->idx)) != ELA_OK ||
        (st = ela_tensor_view(s->ibase, 1, ie, is, (2 * IDX_PAD + s->idx_len) * 4, &s->idx2)) !=
            ELA_OK)
        return st;
    if ((st = ela_tensor_write_f32(s->q, h->q, hq * d)) != ELA_OK ||
        (st = ela_tensor_write_f32(s->k, h->k, hkv * n * d)) != ELA_OK ||
        (st = ela_tensor_write_f32(s->v, h->v, hkv * n * d)) != ELA_OK)
        return st;
    return ELA_OK;
#undef QB
#undef KB
#undef OB
}

/* ---- backends ----------------------------------------------------------------------------- */
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

static double tolerance(const dcase *c) {
    if (c->to != ELA_F32)
        return TOL_16_OUT;
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

static double worst[3];

static void run_on(cfg *cf, const dcase *c, int ci, const hdata *h) {
    char what[256];
    case_str(c, what, sizeof what);
    const char *thr = cf->threads ? cf->threads : "default";
    const int64_t nq = (int64_t)c->hq * c->d;
    dset s;
    ela_status st = dset_make(cf->be, c, h, &s);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    if (st != ELA_OK) {
        dset_free(&s);
        return;
    }
    ela_decode_select_params dp = ela_decode_select_params_default(c->budget);
    dp.recent = c->recent;
    dp.sinks = c->sinks;
    ela_attn_params ap = ela_attn_params_default();
    ap.scale = h->scale;
    int64_t count = -1, count2 = -1;
    double t0 = test_now();
    st = ela_decode_select_attend(cf->be, s.q, s.k, s.v, s.o, &dp, &ap, s.idx, &count);
    cf->seconds += test_now() - t0;
    cf->runs++;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cf->level, thr,
           ela_status_str(st), ela_last_error());
    if (st == ELA_OK)
        st = ela_decode_select(cf->be, s.q, s.k, &dp, &ap, s.idx2, &count2);
    CHECKF(st == ELA_OK, "case %d: ela_decode_select: %s", ci, ela_last_error());
    const int64_t nb = 2 * s.idx_len + 3 * IDX_PAD;
    int32_t *got = malloc((size_t)nb * sizeof *got);
    float *o = malloc((size_t)nq * sizeof *o);
    CHECK(got && o);
    if (st == ELA_OK && got && o && ela_tensor_read(s.ibase, got, (size_t)nb * 4) == ELA_OK &&
        ela_tensor_read_f32(s.o, o, nq) == ELA_OK) {
        CHECKF(count == h->count && count2 == h->count, "case %d [%s] level %s threads %s: count "
               "%lld (decode_select %lld), reference %lld", ci, what, cf->level, thr,
               (long long)count, (long long)count2, (long long)h->count);
        int64_t bad = -1, bad2 = -1, touched = 0;
        for (int64_t i = 0; i < h->count; i++) {
            if (bad < 0 && got[IDX_PAD + i] != h->idx[i])
                bad = i;
            if (bad2 < 0 && got[2 * IDX_PAD + s.idx_len + i] != got[IDX_PAD + i])
                bad2 = i;
        }
        CHECKF(bad < 0, "case %d [%s] level %s threads %s: idx[%lld] = %d, reference %lld", ci,
               what, cf->level, thr, (long long)bad, bad >= 0 ? got[IDX_PAD + bad] : 0,
               bad >= 0 ? (long long)h->idx[bad] : 0LL);
        CHECKF(bad2 < 0, "case %d [%s] level %s threads %s: idx[%lld] differs from "
               "ela_decode_select's", ci, what, cf->level, thr, (long long)bad2);
        for (int64_t i = 0; i < nb; i++)
            if ((i < IDX_PAD || (i >= IDX_PAD + h->count && i < 2 * IDX_PAD + s.idx_len)) &&
                got[i] != IDX_SENTINEL)
                touched++;
        CHECKF(touched == 0, "case %d [%s] level %s threads %s: %lld idx entries outside "
               "[0, count) were written", ci, what, cf->level, thr, (long long)touched);
        double err = test_rel_l2(h->o, o, nq), tol = tolerance(c);
        int cls = tol == TOL_F32 ? 0 : tol == TOL_16_IN_F32_OUT ? 1 : 2;
        if (err > worst[cls])
            worst[cls] = err;
        CHECKF(err <= tol, "case %d [%s] level %s threads %s: o rel L2 error %.3g > %.0e", ci, what,
               cf->level, thr, err, tol);
    }
    free(got);
    free(o);
    dset_free(&s);
}

/* ela_decode_attention's select layer takes the fused op on the CPU: same o and list. */
static void test_policy_path(ela_backend *be) {
    /* the policy uses the default scale: Gaussian data, whose scale is the default */
    dcase c = {3001, 128, 8, 2, 32, 0.25f, 4, ELA_F16, ELA_F16, ELA_F32, DATA_RANDOM,
               LAYOUT_PACKED, 0};
    hdata h;
    if (hdata_make(&c, 7778, &h) != 0) {
        CHECK(!"policy case: no input without near-ties");
        return;
    }
    dset s;
    ela_status st = dset_make(be, &c, &h, &s);
    CHECK_STATUS(st, ELA_OK);
    ela_decode_policy pol;
    CHECK_STATUS(ela_decode_policy_parse("lessismore:32", &pol), ELA_OK);
    float *o1 = malloc(8 * 128 * sizeof *o1), *o2 = malloc(8 * 128 * sizeof *o2);
    int32_t *i1 = malloc(32 * sizeof *i1), *i2 = malloc(32 * sizeof *i2);
    int64_t n1 = 0, n2 = 0;
    if (st == ELA_OK && o1 && o2 && i1 && i2) {
        CHECK_STATUS(ela_decode_attention(be, &pol, ELA_DECODE_LAYER_SELECT, s.q, s.k, s.v, s.o,
                                          s.idx, &n1), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(s.o, o1, 8 * 128), ELA_OK);
        CHECK_STATUS(ela_tensor_read(s.idx, i1, 32 * 4), ELA_OK);
        CHECK_STATUS(ela_decode_select_attend(be, s.q, s.k, s.v, s.o, &pol.select, NULL, s.idx2,
                                              &n2), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(s.o, o2, 8 * 128), ELA_OK);
        CHECK_STATUS(ela_tensor_read(s.idx2, i2, 32 * 4), ELA_OK);
        CHECK(n1 == 32 && n2 == 32);
        CHECK(memcmp(o1, o2, 8 * 128 * sizeof *o1) == 0);
        CHECK(memcmp(i1, i2, 32 * sizeof *i1) == 0);
        int same = 1;
        for (int i = 0; i < 32; i++)
            same &= i1[i] == h.idx[i];
        CHECK(same);
    }
    free(o1);
    free(o2);
    free(i1);
    free(i2);
    dset_free(&s);
    hdata_free(&h);
}

/* ---- error paths -------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_word(ela_last_error(), word), "message \"%s\" does not name '%s'",     \
               ela_last_error(), word);                                                         \
    } while (0)

static void test_errors(ela_backend *be) {
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *idx = NULL, *q2 = NULL, *vb = NULL;
    ela_tensor *o2 = NULL, *idx_f = NULL, *idx2 = NULL, *short_idx = NULL, *k80 = NULL;
    int64_t eq[3] = {1, 8, 64}, ek[3] = {2, 500, 64}, ei[1] = {100}, eq2[3] = {2, 8, 64};
    int64_t eo2[3] = {1, 4, 64}, ei2[2] = {1, 100}, eis[1] = {99}, ek80[3] = {2, 500, 80};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek, NULL, &v), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq, NULL, &o), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, ei, NULL, &idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq2, NULL, &q2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_BF16, 3, ek, NULL, &vb), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eo2, NULL, &o2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 1, ei, NULL, &idx_f), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, ei2, NULL, &idx2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, eis, NULL, &short_idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek80, NULL, &k80), ELA_OK);
    if (!q || !k || !v || !o || !idx || !q2 || !vb || !o2 || !idx_f || !idx2 || !short_idx || !k80)
        goto done;
    float *zeros = calloc(500 * 2 * 64, sizeof *zeros);
    if (zeros) {
        CHECK_STATUS(ela_tensor_write_f32(q, zeros, 8 * 64), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(k, zeros, 2 * 500 * 64), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(v, zeros, 2 * 500 * 64), ELA_OK);
        free(zeros);
    }
    CHECK(strcmp(ela_op_name(ELA_OP_DECODE_SELECT_ATTEND), "decode_select_attend") == 0);
    {
        ela_dtype t[3] = {ELA_BF16, ELA_F16, ELA_F32}, t8[3] = {ELA_F32, ELA_Q8_0, ELA_F32};
        CHECK(ela_backend_supports(be, ELA_OP_DECODE_SELECT_ATTEND, t, 3));
        CHECK(ela_backend_supports(be, ELA_OP_DECODE_SELECT_ATTEND, t8, 3));
    }
    ela_decode_select_params dp = ela_decode_select_params_default(100);
    ela_attn_params ap = ela_attn_params_default();
    int64_t count = 0;
    CHECK_STATUS(ela_decode_select_attend(be, q, k, v, o, &dp, &ap, idx, &count), ELA_OK);
    CHECK(count == 100);
    CHECK_STATUS(ela_decode_select_attend(be, q, k, v, o, &dp, NULL, idx, &count), ELA_OK);
    ela_decode_select_params bad = dp;
    bad.budget = 1000; /* a budget above n only needs n entries: 500 > 100 */

    CHECK_FAIL(ela_decode_select_attend(NULL, q, k, v, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_decode_select_attend(be, NULL, k, v, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_decode_select_attend(be, q, NULL, v, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, NULL, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "v");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, NULL, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_decode_select_attend(be, q2, k, v, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "o"); /* q [2, 8, 64] vs o [1, 8, 64]: o is named */
    CHECK_FAIL(ela_decode_select_attend(be, q2, k, v, q2, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "q"); /* two query rows */
    CHECK_FAIL(ela_decode_select_attend(be, q, k80, v, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, vb, o, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "v");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o2, &dp, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, NULL, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "sparams");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &dp, &ap, NULL, &count),
               ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &dp, &ap, idx_f, &count),
               ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &dp, &ap, idx2, &count),
               ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &dp, &ap, short_idx, &count),
               ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &bad, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "idx");
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &dp, &ap, idx, NULL),
               ELA_ERR_INVALID_ARG, "count");
    bad = dp;
    bad.budget = 0;
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &bad, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "budget");
    bad = dp;
    bad.recent = 1.5f;
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &bad, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "recent");
    bad.recent = NAN;
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &bad, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "recent");
    bad = dp;
    bad.sinks = -1;
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &bad, &ap, idx, &count),
               ELA_ERR_INVALID_ARG, "sinks");
    ela_attn_params badp = ap;
    badp.scale = INFINITY;
    CHECK_FAIL(ela_decode_select_attend(be, q, k, v, o, &dp, &badp, idx, &count),
               ELA_ERR_INVALID_ARG, "scale");
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(v);
    ela_tensor_free(o);
    ela_tensor_free(idx);
    ela_tensor_free(q2);
    ela_tensor_free(vb);
    ela_tensor_free(o2);
    ela_tensor_free(idx_f);
    ela_tensor_free(idx2);
    ela_tensor_free(short_idx);
    ela_tensor_free(k80);
}

/* ---- out of memory ------------------------------------------------------------------------ */
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
        ela_attn_params ap = ela_attn_params_default();
        ap.scale = h->scale;
        int64_t count = 0;
        st = ela_decode_select_attend(be, s.q, s.k, s.v, s.o, &dp, &ap, s.idx, &count);
        if (st == ELA_OK && check) {
            int32_t *got = malloc((size_t)s.idx_len * sizeof *got);
            float *o = malloc((size_t)(c->hq * c->d) * sizeof *o);
            if (got && o && ela_tensor_read(s.idx, got, (size_t)s.idx_len * 4) == ELA_OK &&
                ela_tensor_read_f32(s.o, o, c->hq * c->d) == ELA_OK) {
                int same = count == h->count;
                for (int64_t i = 0; same && i < count; i++)
                    same = got[i] == h->idx[i];
                CHECKF(same, "oom: selection differs from the reference (threads %s)", threads);
                CHECK(test_rel_l2(h->o, o, c->hq * c->d) <= TOL_16_IN_F32_OUT);
            }
            free(got);
            free(o);
        }
    }
    dset_free(&s);
    ela_backend_close(be);
    return st;
}

static void test_oom(void) {
    dcase c = {6000, 64, 8, 2, 512, 0.25f, 4, ELA_F16, ELA_F16, ELA_F32, DATA_DIGITS,
               LAYOUT_VIEWS, 0};
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
        return test_summary("test_decode_select_attend");
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    double t_ref = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        const dcase *c = &cases[ci];
        char what[256];
        case_str(c, what, sizeof what);
        if (only_case >= 0)
            printf("case %d: %s\n", ci, what);
        hdata h;
        double t0 = test_now();
        int rc = hdata_make(c, ci, &h);
        t_ref += test_now() - t0;
        CHECKF(rc == 0, "case %d [%s]: no input without near-ties, or the reference failed", ci,
               what);
        for (int k = 0; rc == 0 && k < n_cfgs; k++) {
            if (cfgs[k].threads && !(c->flags & F_THREADS))
                continue;
            run_on(&cfgs[k], c, ci, &h);
        }
        hdata_free(&h);
    }
    printf("inputs and references: %.2f s, %d regenerations for near-ties\n", t_ref,
           regenerations);
    printf("worst o rel L2 error: f32 %.2e (tol %.0e), 16-bit in/f32 out %.2e (tol %.0e), "
           "16-bit out %.2e (tol %.0e)\n", worst[0], TOL_F32, worst[1], TOL_16_IN_F32_OUT,
           worst[2], TOL_16_OUT);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.3f s in ela_decode_select_attend\n",
               cfgs[k].level, cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs,
               cfgs[k].seconds);
    if (only_case < 0) {
        test_errors(cfgs[0].be);
        test_policy_path(cfgs[0].be);
        test_oom();
    }
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_decode_select_attend");
}

/* Unit test of ela_attn_token_sparse on the "cpu" backend against the float64 reference
 * (tests/ref/attn_token_sparse_ref.c) on fresh random inputs: per-head index lists (random
 * scattered rows, contiguous runs, TSA-like prefix subsets plus the window, the sets
 * ela_token_select picks), f32/f16/bf16, d 64/128/80, GQA 1/4/8, causal and not, odd and tiny
 * lengths, strided views; the identity list must give exactly ela_attn_dense's output; rows a
 * head did not select must be zero; invalid index lists, argument errors and OOM. The same cases
 * run as ela_token_compress -> ela_attn_dense -> ela_token_decompress (the compressed tensors must
 * hold exactly the selected rows, the result must match the same reference). Every SIMD level the
 * machine has and several thread counts. Replay with ELA_TEST_SEED. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_token_sparse_ref.h"
#include "test_common.h"

/* Tolerances on the relative L2 error over o, as in test_attn_dense.c: the reference sees the
 * rounded inputs, so f32 accumulation is what remains (1e-5 for f32, 2e-3 with 16-bit inputs),
 * and rounding the output to 16 bits costs up to 2^-8 relative (1e-2). */
#define TOL_F32 1e-5
#define TOL_16_IN_F32_OUT 2e-3
#define TOL_16_OUT 1e-2

#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1 /* big cases skip the scalar level */
#else
#define SLOW_BUILD 0
#endif

/* ---- cases ---------------------------------------------------------------------------- */
enum {
    SEL_RANDOM,   /* n_sel rows chosen uniformly: short runs, big gaps */
    SEL_RUNS,     /* runs of 1..40 consecutive rows: multi-row gathers */
    SEL_TSA,      /* a random subset of the prefix plus the last 32 rows, as TSA keeps */
    SEL_IDENTITY, /* 0..L-1 for every head (n_sel = L) */
    SEL_SELECT,   /* whatever ela_token_select picks (window 32, min_keep 64, tau 0.3) */
    SEL_COUNT
};
static const char *const sel_names[] = {"random", "runs", "tsa", "identity", "token_select"};

typedef struct {
    int64_t L, d;
    int hq, hkv;
    int64_t n_sel; /* ignored for SEL_IDENTITY / SEL_SELECT */
    int causal;
    float scale;
    ela_dtype tq, tkv, to;
    int sel, views;
    int big; /* default threads only; slow builds also skip the scalar level */
} ts_case;

#define MAX_CASES 128
static ts_case cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t d, int hq, int hkv, int64_t n_sel, int causal, float scale,
                ela_dtype tq, ela_dtype tkv, ela_dtype to, int sel, int views) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    ts_case c = {L, d, hq, hkv, n_sel, causal, scale, tq, tkv, to, sel, views, 0};
    cases[n_cases++] = c;
}

static void case_str(const ts_case *c, char *buf, size_t size) {
    snprintf(buf, size,
             "L=%lld d=%lld Hq=%d Hkv=%d n_sel=%lld %s scale=%g q=%s kv=%s o=%s sel=%s%s",
             (long long)c->L, (long long)c->d, c->hq, c->hkv, (long long)c->n_sel,
             c->causal ? "causal" : "non-causal", (double)c->scale, ela_dtype_name(c->tq),
             ela_dtype_name(c->tkv), ela_dtype_name(c->to), sel_names[c->sel],
             c->views ? " views" : "");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    static const ela_dtype mixes[4][3] = {
        {ELA_F32, ELA_F32, ELA_F32},
        {ELA_F16, ELA_F16, ELA_F16},
        {ELA_BF16, ELA_BF16, ELA_BF16},
        {ELA_F32, ELA_F16, ELA_F32},
    };
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{3, 3}, {8, 2}, {8, 1}};
    static const struct {
        int64_t L, n_sel;
    } shapes[6] = {{300, 211}, {517, 130}, {129, 65}, {77, 1}, {480, 479}, {200, 64}};
    /* 1. Sweep: dtype mix x d x GQA, rotating shapes, index styles, causality and views. */
    int i = 0;
    for (int m = 0; m < 4; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++, i++)
                add(shapes[i % 6].L, dims[di], gqa[g][0], gqa[g][1], shapes[i % 6].n_sel,
                    i % 7 != 3, 0.0f, mixes[m][0], mixes[m][1], mixes[m][2], i % 3, i % 4 == 1);
    /* 2. Identity lists (n_sel = L): exactly ela_attn_dense. */
    add(300, 64, 8, 2, 300, 1, 0.0f, F32, F32, F32, SEL_IDENTITY, 0);
    add(129, 128, 8, 1, 129, 1, 0.0f, F16, F16, F16, SEL_IDENTITY, 1);
    add(65, 80, 3, 3, 65, 0, 0.0f, BF16, BF16, F32, SEL_IDENTITY, 0);
    /* 3. Tiny lengths and extreme n_sel (0: o is all zeros), a given scale. */
    add(1, 64, 4, 2, 1, 1, 0.0f, F32, F32, F32, SEL_RANDOM, 0);
    add(2, 64, 4, 2, 1, 1, 0.0f, F16, F16, F32, SEL_RANDOM, 1);
    add(5, 128, 8, 1, 3, 0, 0.0f, F32, F32, F32, SEL_RUNS, 0);
    add(150, 64, 4, 1, 0, 1, 0.0f, F32, F32, BF16, SEL_RANDOM, 1);
    add(333, 64, 4, 4, 200, 1, 0.3f, F32, F32, F32, SEL_TSA, 0);
    /* 4. Selections from ela_token_select itself. */
    add(437, 64, 8, 2, 0, 1, 0.0f, F16, F16, F16, SEL_SELECT, 0);
    add(613, 128, 4, 1, 0, 1, 0.0f, F32, F32, F32, SEL_SELECT, 1);
    /* 5. A larger TSA-like case at the defaults' scale. */
    add(2003, 128, 4, 1, 1400, 1, 0.0f, F16, F16, F16, SEL_TSA, 0);
    cases[n_cases - 1].big = 1;
    /* 6. q8_0 K/V (a quantized KV cache): every index style, GQA 1/4/8, views (K and V blocks
     * interleaved token-major), f16/bf16 q and o, the identity list and ela_token_select's. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(300, 64, 8, 2, 211, 1, 0.0f, F32, Q8, F32, SEL_RANDOM, 1);
    add(517, 128, 3, 3, 130, 1, 0.0f, F16, Q8, F16, SEL_RUNS, 0);
    add(200, 32, 8, 1, 64, 0, 0.0f, BF16, Q8, F32, SEL_TSA, 1);
    add(129, 128, 8, 1, 129, 1, 0.0f, F32, Q8, F32, SEL_IDENTITY, 0);
    add(437, 64, 8, 2, 0, 1, 0.0f, F32, Q8, BF16, SEL_SELECT, 1);
    (void)F16;
}

/* ---- inputs ----------------------------------------------------------------------------- */
typedef struct {
    float *q, *k, *v;   /* [L, hq, d], [hkv, L, d] x 2, rounded through their dtypes */
    int32_t *idx;       /* [hq, n_sel] */
    int64_t n_sel;
    double *o;          /* reference [L, hq, d] */
    unsigned char *sel; /* [L, hq]: row selected for that head */
} case_data;

static void case_data_free(case_data *h) {
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->idx);
    free(h->o);
    free(h->sel);
    memset(h, 0, sizeof *h);
}

/* Sorted random subset of size n of [lo, hi) into out (Floyd's algorithm via a mark array). */
static void random_subset(test_rng *rng, unsigned char *mark, int64_t lo, int64_t hi, int64_t n,
                          int32_t *out) {
    memset(mark + lo, 0, (size_t)(hi - lo));
    int64_t range = hi - lo;
    for (int64_t j = range - n; j < range; j++) {
        int64_t t = (int64_t)(test_rng_u64(rng) % (uint64_t)(j + 1));
        if (mark[lo + t])
            t = j;
        mark[lo + t] = 1;
    }
    int64_t c = 0;
    for (int64_t j = lo; j < hi; j++)
        if (mark[j])
            out[c++] = (int32_t)j;
}

/* Index lists of one head. */
static void make_row(const ts_case *c, test_rng *rng, unsigned char *mark, int64_t n_sel,
                     int32_t *row) {
    const int64_t L = c->L;
    if (L < 1)
        return;
    if (c->sel == SEL_IDENTITY || n_sel == L) {
        for (int64_t j = 0; j < L; j++)
            row[j] = (int32_t)j;
    } else if (c->sel == SEL_RUNS) {
        /* Runs of 1..40 rows separated by gaps of 1..20, from a random start, until n_sel. */
        int64_t n = 0;
        while (n < n_sel) {
            memset(mark, 0, (size_t)L);
            for (int64_t j = 0; j < n; j++)
                mark[row[j]] = 1;
            int64_t pos = (int64_t)(test_rng_u64(rng) % (uint64_t)L);
            int64_t len = 1 + (int64_t)(test_rng_u64(rng) % 40);
            for (int64_t t = pos; t < L && t < pos + len && n < n_sel; t++)
                if (!mark[t]) {
                    mark[t] = 1;
                    n++;
                }
            n = 0;
            for (int64_t j = 0; j < L; j++)
                if (mark[j])
                    row[n++] = (int32_t)j;
        }
    } else if (c->sel == SEL_TSA && n_sel > 32 && L - 32 >= n_sel - 32) {
        random_subset(rng, mark, 0, L - 32, n_sel - 32, row);
        for (int64_t j = 0; j < 32; j++)
            row[n_sel - 32 + j] = (int32_t)(L - 32 + j);
    } else {
        random_subset(rng, mark, 0, L, n_sel, row);
    }
}

static int case_data_make(const ts_case *c, int ci, ela_backend *be, case_data *h) {
    memset(h, 0, sizeof *h);
    const int64_t L = c->L, d = c->d, nq = L * c->hq * d, nkv = (int64_t)c->hkv * L * d;
    h->q = malloc((size_t)nq * sizeof *h->q);
    h->k = malloc((size_t)nkv * sizeof *h->k);
    h->v = malloc((size_t)nkv * sizeof *h->v);
    h->idx = malloc((size_t)(c->hq * L) * sizeof *h->idx);
    h->o = malloc((size_t)nq * sizeof *h->o);
    h->sel = calloc((size_t)(L * c->hq), 1);
    unsigned char *mark = calloc((size_t)L, 1);
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nkv * sizeof *kd);
    double *vd = malloc((size_t)nkv * sizeof *vd);
    int rc = -1;
    if (!h->q || !h->k || !h->v || !h->idx || !h->o || !h->sel || !mark || !qd || !kd || !vd)
        goto done;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci);
    test_fill_normal(&rng, h->q, nq, 1.0f);
    test_fill_normal(&rng, h->k, nkv, 1.0f);
    test_fill_normal(&rng, h->v, nkv, 1.0f);
    if (test_round_through(h->q, nq, c->tq) != 0 || test_round_through(h->k, nkv, c->tkv) != 0 ||
        test_round_through(h->v, nkv, c->tkv) != 0)
        goto done;
    if (c->sel == SEL_SELECT) {
        /* The lists ela_token_select picks on these inputs (f32 copies of q, k). */
        ela_tensor *tq = NULL, *tk = NULL, *ti = NULL;
        int64_t qe[3] = {L, c->hq, d}, ke[3] = {c->hkv, L, d}, ie[2] = {c->hq, L};
        ela_tsa_params p = {32, 7, 0.3f, 64};
        int32_t *full = malloc((size_t)(c->hq * L) * sizeof *full);
        ela_status st = full ? ELA_OK : ELA_ERR_OOM;
        if (st == ELA_OK && (st = ela_tensor_new(be, ELA_F32, 3, qe, NULL, &tq)) == ELA_OK &&
            (st = ela_tensor_new(be, ELA_F32, 3, ke, NULL, &tk)) == ELA_OK &&
            (st = ela_tensor_new(be, ELA_I32, 2, ie, NULL, &ti)) == ELA_OK &&
            (st = ela_tensor_write_f32(tq, h->q, nq)) == ELA_OK &&
            (st = ela_tensor_write_f32(tk, h->k, nkv)) == ELA_OK &&
            (st = ela_token_select(be, tq, tk, &p, ti, &h->n_sel)) == ELA_OK &&
            (st = ela_tensor_read(ti, full, (size_t)(c->hq * L) * sizeof *full)) == ELA_OK) {
            for (int hh = 0; hh < c->hq; hh++)
                memcpy(h->idx + hh * h->n_sel, full + hh * L, (size_t)h->n_sel * sizeof *full);
        }
        CHECKF(st == ELA_OK, "case %d: ela_token_select: %s (%s)", ci, ela_status_str(st),
               ela_last_error());
        CHECKF(h->n_sel < L, "case %d: token_select kept everything (%lld)", ci,
               (long long)h->n_sel);
        free(full);
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(ti);
        if (st != ELA_OK)
            goto done;
    } else {
        h->n_sel = c->sel == SEL_IDENTITY ? L : c->n_sel;
        for (int hh = 0; hh < c->hq; hh++)
            make_row(c, &rng, mark, h->n_sel, h->idx + hh * h->n_sel);
    }
    for (int hh = 0; hh < c->hq; hh++)
        for (int64_t i = 0; i < h->n_sel; i++)
            h->sel[(int64_t)h->idx[hh * h->n_sel + i] * c->hq + hh] = 1;
    for (int64_t e = 0; e < nq; e++)
        qd[e] = h->q[e];
    for (int64_t e = 0; e < nkv; e++) {
        kd[e] = h->k[e];
        vd[e] = h->v[e];
    }
    ref_attn_token_sparse_shape s = {L, d, c->hq, c->hkv, c->causal, c->scale};
    rc = ref_attn_token_sparse(&s, qd, kd, vd, h->idx, h->n_sel, h->o);
done:
    free(mark);
    free(qd);
    free(kd);
    free(vd);
    if (rc != 0)
        case_data_free(h);
    return rc;
}

/* ---- device tensors --------------------------------------------------------------------- */
typedef struct {
    ela_tensor *base, *t;
} dev_tensor;

static void dev_free(dev_tensor *x) {
    if (x->t != x->base)
        ela_tensor_free(x->t);
    ela_tensor_free(x->base);
    x->t = x->base = NULL;
}

typedef struct {
    dev_tensor q, k, v, o, idx;
    int64_t o_numel; /* elements of o's base */
} dev_set;

static void dev_set_free(dev_set *s) {
    dev_free(&s->q);
    dev_free(&s->k);
    dev_free(&s->v);
    dev_free(&s->o);
    dev_free(&s->idx);
}

#define OUT_SENTINEL (-7.75f) /* exact in f16 and bf16 */

/* Every element of o's base set to OUT_SENTINEL. */
static ela_status fill_sentinel(const dev_set *s) {
    float *fill = malloc((size_t)s->o_numel * sizeof *fill);
    if (!fill)
        return ELA_ERR_OOM;
    for (int64_t e = 0; e < s->o_numel; e++)
        fill[e] = OUT_SENTINEL;
    ela_status st = ela_tensor_write_f32(s->o.base, fill, s->o_numel);
    free(fill);
    return st;
}

/* Packed, or views: q heads of a fused [L, hq + 2 hkv, d] projection; k, v head-major views of
 * one token-major [L, 2, hkv, d] buffer; o a view of [L, hq + 1, d] skipping head 0; idx
 * columns [2, 2 + n_sel) of [hq, n_sel + 5]. o's base is filled with OUT_SENTINEL. */
static ela_status dev_set_make(ela_backend *be, const ts_case *c, const case_data *h,
                               dev_set *s) {
    memset(s, 0, sizeof *s);
    const int64_t L = c->L, d = c->d, hq = c->hq, hkv = c->hkv, ns = h->n_sel;
    /* bytes of a stride of x elements (q8_0 K/V: whole blocks; x = 1: one block) */
#define QB(x) test_stride_bytes(c->tq, x)
#define KB(x) test_stride_bytes(c->tkv, x)
#define OB(x) test_stride_bytes(c->to, x)
    int64_t qext[3] = {L, hq, d}, kext[3] = {hkv, L, d}, iext[2] = {hq, ns};
    ela_status st;
    if (c->views) {
        int64_t qb[3] = {L, hq + 2 * hkv, d}, kb[4] = {L, 2, hkv, d}, ob[3] = {L, hq + 1, d};
        int64_t ib[2] = {hq, ns + 5};
        int64_t qs[3] = {QB((hq + 2 * hkv) * d), QB(d), QB(1)};
        int64_t ks[3] = {KB(d), KB(2 * hkv * d), KB(1)};
        int64_t os[3] = {OB((hq + 1) * d), OB(d), OB(1)}, is[2] = {(ns + 5) * 4, 4};
        if ((st = ela_tensor_new(be, c->tq, 3, qb, NULL, &s->q.base)) != ELA_OK ||
            (st = ela_tensor_view(s->q.base, 3, qext, qs, 0, &s->q.t)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 4, kb, NULL, &s->k.base)) != ELA_OK ||
            (st = ela_tensor_view(s->k.base, 3, kext, ks, 0, &s->k.t)) != ELA_OK ||
            (st = ela_tensor_view(s->k.base, 3, kext, ks, KB(hkv * d), &s->v.t)) != ELA_OK ||
            (st = ela_tensor_new(be, c->to, 3, ob, NULL, &s->o.base)) != ELA_OK ||
            (st = ela_tensor_view(s->o.base, 3, qext, os, OB(d), &s->o.t)) != ELA_OK ||
            (st = ela_tensor_new(be, ELA_I32, 2, ib, NULL, &s->idx.base)) != ELA_OK ||
            (st = ela_tensor_view(s->idx.base, 2, iext, is, 8, &s->idx.t)) != ELA_OK)
            return st;
        s->o_numel = L * (hq + 1) * d;
        /* v shares k's base: keep one owner of it */
        s->v.base = s->v.t;
    } else {
        int64_t ie_alloc[2] = {hq, ns > 0 ? ns : 1};
        if ((st = ela_tensor_new(be, c->tq, 3, qext, NULL, &s->q.base)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 3, kext, NULL, &s->k.base)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tkv, 3, kext, NULL, &s->v.base)) != ELA_OK ||
            (st = ela_tensor_new(be, c->to, 3, qext, NULL, &s->o.base)) != ELA_OK ||
            (st = ela_tensor_new(be, ELA_I32, 2, ie_alloc, NULL, &s->idx.base)) != ELA_OK)
            return st;
        s->q.t = s->q.base;
        s->k.t = s->k.base;
        s->v.t = s->v.base;
        s->o.t = s->o.base;
        s->idx.t = s->idx.base;
        s->o_numel = L * hq * d;
    }
    st = fill_sentinel(s);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->q.t, h->q, L * hq * d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->k.t, h->k, hkv * L * d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->v.t, h->v, hkv * L * d);
    if (st == ELA_OK && ns > 0) {
        int64_t ni = c->views ? hq * (ns + 5) : hq * ns;
        int32_t *ib = malloc((size_t)ni * sizeof *ib);
        if (!ib)
            return ELA_ERR_OOM;
        for (int64_t e = 0; e < ni; e++)
            ib[e] = -1; /* garbage past n_sel and around the view: must never be read */
        for (int64_t hh = 0; hh < hq; hh++)
            memcpy(ib + hh * (c->views ? ns + 5 : ns) + (c->views ? 2 : 0), h->idx + hh * ns,
                   (size_t)ns * sizeof *ib);
        st = ela_tensor_write(s->idx.base, ib, (size_t)ni * sizeof *ib);
        free(ib);
    }
    return st;
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
} backend_cfg;

#define MAX_CFGS 9
static backend_cfg cfgs[MAX_CFGS];
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
    static const char *const threads[] = {NULL, "1", "3"};
    for (int l = 0; l < 3; l++) {
        if (!level_supported(levels[l]))
            continue;
        for (int t = 0; t < 3; t++) {
            backend_cfg *cfg = &cfgs[n_cfgs];
            cfg->level = levels[l];
            cfg->threads = threads[t];
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", threads[t]);
            CHECK_STATUS(ela_backend_open("cpu", &cfg->be), ELA_OK);
            if (cfg->be)
                n_cfgs++;
        }
    }
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
}

/* ---- running ------------------------------------------------------------------------------ */
static double tolerance(const ts_case *c) {
    if (c->to != ELA_F32)
        return TOL_16_OUT;
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

static double worst[3];

/* o of the view into out [L, hq, d]; the base's elements outside the view counted in *changed
 * when they no longer hold the sentinel. */
static ela_status read_o(const ts_case *c, const dev_set *s, float *out, int64_t *changed) {
    const int64_t L = c->L, hq = c->hq, d = c->d;
    *changed = 0;
    if (!c->views)
        return ela_tensor_read_f32(s->o.t, out, L * hq * d);
    float *all = malloc((size_t)s->o_numel * sizeof *all);
    if (!all)
        return ELA_ERR_OOM;
    ela_status st = ela_tensor_read_f32(s->o.base, all, s->o_numel);
    for (int64_t i = 0; st == ELA_OK && i < L; i++) {
        for (int64_t e = 0; e < d; e++)
            *changed += all[i * (hq + 1) * d + e] != OUT_SENTINEL;
        memcpy(out + i * hq * d, all + i * (hq + 1) * d + d, (size_t)(hq * d) * sizeof *out);
    }
    free(all);
    return st;
}

/* The op composed from its parts: compress, dense attention on [n_sel] rows with one KV head per
 * query head, decompress into s->o. qc/kc/vc must be exactly the selected rows (as read back
 * in f32, the rounded inputs), and the output must meet the reference like the fused op. */
static void run_composed(backend_cfg *cfg, const ts_case *c, int ci, const case_data *h,
                         const dev_set *s, const ela_attn_params *p, const char *what) {
    const int64_t L = c->L, hq = c->hq, d = c->d, ns = h->n_sel, G = c->hq / c->hkv;
    if (ns == 0)
        return;
    ela_tensor *qc = NULL, *kc = NULL, *vc = NULL, *oc = NULL;
    int64_t qe[3] = {ns, hq, d}, ke[3] = {hq, ns, d}, nq = ns * hq * d, no = L * hq * d;
    float *got = malloc((size_t)nq * sizeof *got), *o = malloc((size_t)no * sizeof *o);
    ela_status st = got && o ? ELA_OK : ELA_ERR_OOM;
    if (st == ELA_OK &&
        ((st = ela_tensor_new(cfg->be, c->tq, 3, qe, NULL, &qc)) != ELA_OK ||
         (st = ela_tensor_new(cfg->be, c->tkv, 3, ke, NULL, &kc)) != ELA_OK ||
         (st = ela_tensor_new(cfg->be, c->tkv, 3, ke, NULL, &vc)) != ELA_OK ||
         (st = ela_tensor_new(cfg->be, c->to, 3, qe, NULL, &oc)) != ELA_OK))
        goto done;
    st = ela_token_compress(cfg->be, s->q.t, s->k.t, s->v.t, s->idx.t, ns, qc, kc, vc);
    CHECKF(st == ELA_OK, "case %d [%s] level %s: ela_token_compress: %s (%s)", ci, what,
           cfg->level, ela_status_str(st), ela_last_error());
    if (st != ELA_OK)
        goto done;
    int64_t wrong = 0;
    for (int t = 0; t < 3 && st == ELA_OK; t++) {
        st = ela_tensor_read_f32(t == 0 ? qc : t == 1 ? kc : vc, got, nq);
        const float *src = t == 0 ? h->q : t == 1 ? h->k : h->v;
        for (int64_t hh = 0; st == ELA_OK && hh < hq; hh++)
            for (int64_t i = 0; i < ns; i++) {
                int64_t row = h->idx[hh * ns + i];
                const float *want = t == 0 ? src + (row * hq + hh) * d
                                           : src + ((hh / G) * L + row) * d;
                const float *have = t == 0 ? got + (i * hq + hh) * d : got + (hh * ns + i) * d;
                wrong += memcmp(want, have, (size_t)d * sizeof *want) != 0;
            }
    }
    CHECKF(st == ELA_OK && wrong == 0, "case %d [%s] level %s: %lld compressed rows differ from "
           "the selected rows", ci, what, cfg->level, (long long)wrong);
    if ((st = ela_attn_dense(cfg->be, qc, kc, vc, oc, NULL, p)) != ELA_OK ||
        (st = fill_sentinel(s)) != ELA_OK ||
        (st = ela_token_decompress(cfg->be, oc, s->idx.t, ns, s->o.t)) != ELA_OK)
        goto done;
    int64_t changed = 0;
    CHECK_STATUS(read_o(c, s, o, &changed), ELA_OK);
    double err = test_rel_l2(h->o, o, no), tol = tolerance(c);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < L; i++)
        for (int64_t hh = 0; hh < hq; hh++)
            if (!h->sel[i * hq + hh])
                for (int64_t e = 0; e < d; e++)
                    nonzero += o[(i * hq + hh) * d + e] != 0.0f;
    CHECKF(err <= tol && nonzero == 0 && changed == 0,
           "case %d [%s] level %s composed: rel L2 error %.3g (tol %.0e), %lld unselected values "
           "not 0, %lld elements outside o's view written", ci, what, cfg->level, err, tol,
           (long long)nonzero, (long long)changed);
done:
    CHECKF(st == ELA_OK, "case %d [%s] level %s composed: %s (%s)", ci, what, cfg->level,
           ela_status_str(st), ela_last_error());
    free(got);
    free(o);
    ela_tensor_free(qc);
    ela_tensor_free(kc);
    ela_tensor_free(vc);
    ela_tensor_free(oc);
}

static void run_on(backend_cfg *cfg, const ts_case *c, int ci, const case_data *h) {
    char what[320];
    case_str(c, what, sizeof what);
    const char *thr = cfg->threads ? cfg->threads : "default";
    dev_set s;
    ela_status st = dev_set_make(cfg->be, c, h, &s);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    const int64_t L = c->L, hq = c->hq, d = c->d, no = L * hq * d;
    float *o = malloc((size_t)no * sizeof *o), *od = NULL;
    if (st != ELA_OK || !o)
        goto done;
    ela_attn_params p = ela_attn_params_default();
    p.causal = c->causal;
    p.scale = c->scale;
    double t0 = test_now();
    st = ela_attn_token_sparse(cfg->be, s.q.t, s.k.t, s.v.t, s.idx.t, h->n_sel, s.o.t, &p);
    cfg->seconds += test_now() - t0;
    cfg->runs++;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cfg->level, thr,
           ela_status_str(st), ela_last_error());
    if (st != ELA_OK)
        goto done;
    int64_t changed = 0;
    CHECK_STATUS(read_o(c, &s, o, &changed), ELA_OK);
    double err = test_rel_l2(h->o, o, no), tol = tolerance(c);
    CHECKF(err <= tol, "case %d [%s] level %s threads %s: rel L2 error %.3g > %.0e", ci, what,
           cfg->level, thr, err, tol);
    int cls = tol == TOL_F32 ? 0 : tol == TOL_16_IN_F32_OUT ? 1 : 2;
    worst[cls] = err > worst[cls] ? err : worst[cls];
    /* Rows a head skipped are exactly zero (never the sentinel, never stale). */
    int64_t nonzero = 0;
    for (int64_t i = 0; i < L; i++)
        for (int64_t hh = 0; hh < hq; hh++)
            if (!h->sel[i * hq + hh])
                for (int64_t e = 0; e < d; e++)
                    nonzero += o[(i * hq + hh) * d + e] != 0.0f;
    CHECKF(nonzero == 0 && changed == 0,
           "case %d [%s] level %s threads %s: %lld values of unselected rows are not 0, %lld "
           "elements outside o's view were written", ci, what, cfg->level, thr,
           (long long)nonzero, (long long)changed);
    /* The identity list is dense attention, bit for bit. */
    if (c->sel == SEL_IDENTITY && c->views == 0) {
        od = malloc((size_t)no * sizeof *od);
        CHECK(od != NULL);
        if (od) {
            CHECK_STATUS(ela_attn_dense(cfg->be, s.q.t, s.k.t, s.v.t, s.o.t, NULL, &p), ELA_OK);
            CHECK_STATUS(ela_tensor_read_f32(s.o.t, od, no), ELA_OK);
            CHECKF(memcmp(o, od, (size_t)no * sizeof *o) == 0,
                   "case %d [%s] level %s threads %s: identity lists differ from ela_attn_dense",
                   ci, what, cfg->level, thr);
        }
    }
    run_composed(cfg, c, ci, h, &s, &p, what);
done:
    free(o);
    free(od);
    dev_set_free(&s);
}

/* ---- errors ------------------------------------------------------------------------------- */
#define CHECK_FAIL(call, word)                                                                  \
    do {                                                                                        \
        ela_status got_ = (call);                                                               \
        CHECKF(got_ == ELA_ERR_INVALID_ARG && test_has_word(ela_last_error(), word),            \
               "%s: got %s (\"%s\"), want ELA_ERR_INVALID_ARG naming %s", #call,                \
               ela_status_str(got_), ela_last_error(), word);                                   \
    } while (0)

static void test_errors(ela_backend *be) {
    const int64_t L = 100, d = 64, ns = 40;
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *idx = NULL, *k_short = NULL,
               *idx_f32 = NULL, *idx_u8 = NULL, *idx_1d = NULL, *idx_heads = NULL, *o_bad = NULL;
    int64_t qe[3] = {L, 4, d}, ke[3] = {2, L, d}, ie[2] = {4, ns}, kse[3] = {2, L - 1, d};
    int64_t i1e[1] = {ns}, ihe[2] = {3, ns}, obe[3] = {L, 4, d + 1};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qe, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ke, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ke, NULL, &v), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qe, NULL, &o), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, ie, NULL, &idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, kse, NULL, &k_short), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, ie, NULL, &idx_f32), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_U8, 2, ie, NULL, &idx_u8), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, i1e, NULL, &idx_1d), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, ihe, NULL, &idx_heads), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, obe, NULL, &o_bad), ELA_OK);
    if (!q || !k || !v || !o || !idx || !k_short || !idx_f32 || !idx_u8 || !idx_1d ||
        !idx_heads || !o_bad)
        goto done;
    float *x = malloc((size_t)(L * 4 * d) * sizeof *x);
    int32_t good[4 * 40];
    if (x) {
        for (int64_t e = 0; e < L * 4 * d; e++)
            x[e] = (float)((e * 37) % 11) * 0.1f;
        CHECK_STATUS(ela_tensor_write_f32(q, x, L * 4 * d), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(k, x, 2 * L * d), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(v, x, 2 * L * d), ELA_OK);
        for (int64_t e = 0; e < L * 4 * d; e++)
            x[e] = OUT_SENTINEL;
        CHECK_STATUS(ela_tensor_write_f32(o, x, L * 4 * d), ELA_OK);
    }
    for (int hh = 0; hh < 4; hh++)
        for (int i = 0; i < ns; i++)
            good[hh * ns + i] = 2 * i + (hh & 1);
    CHECK_STATUS(ela_tensor_write(idx, good, sizeof good), ELA_OK);
    ela_attn_params p = ela_attn_params_default();
    CHECK_FAIL(ela_attn_token_sparse(NULL, q, k, v, idx, ns, o, &p), "backend");
    CHECK_FAIL(ela_attn_token_sparse(be, NULL, k, v, idx, ns, o, &p), "q");
    CHECK_FAIL(ela_attn_token_sparse(be, q, NULL, v, idx, ns, o, &p), "k");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, NULL, idx, ns, o, &p), "v");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, ns, NULL, &p), "o");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, NULL, ns, o, &p), "idx");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k_short, v, idx, ns, o, &p), "k");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, ns, o_bad, &p), "o");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx_f32, ns, o, &p), "idx");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx_u8, ns, o, &p), "idx");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx_1d, ns, o, &p), "idx");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx_heads, ns, o, &p), "idx");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, ns + 1, o, &p), "idx"); /* too few cols */
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, -1, o, &p), "n_sel");
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, L + 1, o, &p), "n_sel");
    ela_attn_params bad = p;
    bad.q_pos0 = 5;
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, ns, o, &bad), "q_pos0");
    bad = p;
    bad.scale = NAN;
    CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, ns, o, &bad), "scale");
    /* Index contents: out of range, duplicate, descending; each in a different head. */
    static const struct {
        int head, col, value;
    } broken[] = {{0, 0, -1}, {1, 39, 100}, {2, 5, 8}, {3, 7, 3}, {3, 20, 1000000}};
    for (size_t b = 0; b < sizeof broken / sizeof broken[0]; b++) {
        int32_t rows[4 * 40];
        memcpy(rows, good, sizeof rows);
        rows[broken[b].head * ns + broken[b].col] = broken[b].value;
        CHECK_STATUS(ela_tensor_write(idx, rows, sizeof rows), ELA_OK);
        CHECK_FAIL(ela_attn_token_sparse(be, q, k, v, idx, ns, o, &p), "idx");
    }
    /* A failed call leaves o untouched. */
    if (x) {
        CHECK_STATUS(ela_tensor_read_f32(o, x, L * 4 * d), ELA_OK);
        int64_t touched = 0;
        for (int64_t e = 0; e < L * 4 * d; e++)
            touched += x[e] != OUT_SENTINEL;
        CHECKF(touched == 0, "%lld elements of o written by failed calls", (long long)touched);
    }
    /* ela_token_compress / ela_token_decompress: shapes, dtypes, aliasing, index contents. */
    {
        ela_tensor *qc = NULL, *kc = NULL, *vc = NULL, *kc16 = NULL, *qc_bad = NULL;
        int64_t qce[3] = {ns, 4, d}, kce[3] = {4, ns, d}, kce_bad[3] = {2, ns, d};
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qce, NULL, &qc), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, kce, NULL, &kc), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, kce, NULL, &vc), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, kce, NULL, &kc16), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, kce_bad, NULL, &qc_bad), ELA_OK);
        CHECK_STATUS(ela_tensor_write(idx, good, sizeof good), ELA_OK);
        CHECK_STATUS(ela_token_compress(be, q, k, v, idx, ns, qc, kc, vc), ELA_OK);
        CHECK_FAIL(ela_token_compress(NULL, q, k, v, idx, ns, qc, kc, vc), "backend");
        CHECK_FAIL(ela_token_compress(be, q, k_short, v, idx, ns, qc, kc, vc), "k");
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx, ns, qc_bad, kc, vc), "qc");
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx, ns, qc, kc16, vc), "kc");
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx, ns, qc, kc, NULL), "vc");
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx, ns, qc, kc, kc), "vc");
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx, ns + 1, qc, kc, vc), "qc");
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx_u8, ns, qc, kc, vc), "idx");
        CHECK_FAIL(ela_token_decompress(be, qc, idx, ns, o_bad), "oc");
        CHECK_FAIL(ela_token_decompress(be, kc, idx, ns, o), "oc");
        CHECK_FAIL(ela_token_decompress(be, qc, idx, L + 1, o), "n_sel");
        CHECK_FAIL(ela_token_decompress(NULL, qc, idx, ns, o), "backend");
        int32_t rows[4 * 40];
        memcpy(rows, good, sizeof rows);
        rows[2 * ns + 5] = rows[2 * ns + 4]; /* duplicate */
        CHECK_STATUS(ela_tensor_write(idx, rows, sizeof rows), ELA_OK);
        CHECK_FAIL(ela_token_compress(be, q, k, v, idx, ns, qc, kc, vc), "idx");
        CHECK_FAIL(ela_token_decompress(be, qc, idx, ns, o), "idx");
        ela_tensor_free(qc);
        ela_tensor_free(kc);
        ela_tensor_free(vc);
        ela_tensor_free(kc16);
        ela_tensor_free(qc_bad);
    }
    /* The last column only matters up to n_sel: a broken entry past it is never read. */
    CHECK_STATUS(ela_tensor_write(idx, good, sizeof good), ELA_OK);
    {
        int32_t rows[4 * 40];
        memcpy(rows, good, sizeof rows);
        rows[ns - 1] = -3;
        CHECK_STATUS(ela_tensor_write(idx, rows, sizeof rows), ELA_OK);
        CHECK_STATUS(ela_attn_token_sparse(be, q, k, v, idx, ns - 1, o, &p), ELA_OK);
    }
    free(x);
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(v);
    ela_tensor_free(o);
    ela_tensor_free(idx);
    ela_tensor_free(k_short);
    ela_tensor_free(idx_f32);
    ela_tensor_free(idx_u8);
    ela_tensor_free(idx_1d);
    ela_tensor_free(idx_heads);
    ela_tensor_free(o_bad);
}

/* Every allocation of a call failed in turn: ELA_ERR_OOM each time, then the right result. */
static void test_oom(const ts_case *c, const case_data *h) {
    ela_backend *be = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be), ELA_OK);
    if (!be)
        return;
    dev_set s;
    ela_status st = dev_set_make(be, c, h, &s);
    CHECK_STATUS(st, ELA_OK);
    ela_attn_params p = ela_attn_params_default();
    p.causal = c->causal;
    p.scale = c->scale;
    int64_t failures = 0;
    ela_status r = ELA_ERR_INTERNAL;
    for (int64_t i = 1; st == ELA_OK && i <= 1000; i++) {
        ela_debug_fail_alloc(i);
        r = ela_attn_token_sparse(be, s.q.t, s.k.t, s.v.t, s.idx.t, h->n_sel, s.o.t, &p);
        ela_debug_fail_alloc(0);
        if (r == ELA_OK)
            break;
        failures++;
        CHECKF(r == ELA_ERR_OOM && ela_last_error()[0] != '\0',
               "allocation %lld failed: got %s (\"%s\"), want ELA_ERR_OOM", (long long)i,
               ela_status_str(r), ela_last_error());
        if (r != ELA_ERR_OOM)
            break;
    }
    CHECKF(r == ELA_OK && failures >= 1, "never succeeded, or only %lld allocations seen",
           (long long)failures);
    const int64_t no = c->L * c->hq * c->d;
    float *o = malloc((size_t)no * sizeof *o);
    int64_t changed = 0;
    if (o && r == ELA_OK && read_o(c, &s, o, &changed) == ELA_OK)
        CHECKF(test_rel_l2(h->o, o, no) <= tolerance(c), "result after fault injection is off");
    free(o);
    printf("oom: %lld allocations failed in turn, each ELA_ERR_OOM\n", (long long)failures);
    dev_set_free(&s);
    ela_backend_close(be);
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    if (n_cfgs == 0)
        return test_summary("test_attn_token_sparse");
    double t_ref = 0.0;
    int oom_done = 0;
    for (int ci = 0; ci < n_cases; ci++) {
        const ts_case *c = &cases[ci];
        char what[320];
        case_str(c, what, sizeof what);
        case_data h;
        double t0 = test_now();
        int rc = case_data_make(c, ci, cfgs[0].be, &h);
        t_ref += test_now() - t0;
        CHECKF(rc == 0, "case %d [%s]: building inputs or reference failed", ci, what);
        if (rc != 0)
            continue;
        for (int k = 0; k < n_cfgs; k++) {
            /* Other thread counts on every third case; slow builds run big cases on SIMD. */
            if (cfgs[k].threads && (c->big || ci % 3 != 0))
                continue;
            if (SLOW_BUILD && c->big && strcmp(cfgs[k].level, "scalar") == 0)
                continue;
            run_on(&cfgs[k], c, ci, &h);
        }
        if (!oom_done && h.n_sel > 64 && h.n_sel < c->L) {
            test_oom(c, &h);
            oom_done = 1;
        }
        case_data_free(&h);
    }
    CHECK(oom_done);
    test_errors(cfgs[0].be);
    printf("reference: %.2f s\n", t_ref);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.3f s in ela_attn_token_sparse\n",
               cfgs[k].level, cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs,
               cfgs[k].seconds);
    printf("worst rel L2 error: f32 %.2e (tol %.0e), 16-bit in/f32 out %.2e (tol %.0e), 16-bit "
           "out %.2e (tol %.0e)\n", worst[0], TOL_F32, worst[1], TOL_16_IN_F32_OUT, worst[2],
           TOL_16_OUT);
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_attn_token_sparse");
}

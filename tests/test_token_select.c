/* Unit test of ela_token_select on the "cpu" backend against the float64 reference
 * (tests/ref/token_select_ref.c): the selected index sets must be EXACTLY the reference's.
 * Inputs are structured so the decisions are clear: per head a few planted "needle" keys, a
 * background that decays with age, noise. The reference reports its margin at both cut-offs (the
 * coverage threshold on the cumulative head-mean mass, each head's n_keep-th score); a case whose
 * margin is below MARGIN (a near-tie that f32 rounding could flip) is regenerated with the next
 * random stream, as is one that lands in another regime than the case asks for. Every SIMD
 * level the machine has, several thread counts, f32/f16/bf16, d 64/128/80, GQA 1/4/8, strided
 * views, the dense fallbacks, argument errors and OOM. Replay with ELA_TEST_SEED. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/token_select_ref.h"
#include "test_common.h"

/* The f32 path carries ~1e-6 relative error per probability (dot products, exp2, row sums in
 * f32), a few 1e-6 on the pooled scores at worst; cut-offs closer than 1e-4 relative are treated
 * as near-ties and regenerated. */
#define MARGIN 1e-4
#define MAX_TRIES 40

#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1 /* big cases run on the SIMD levels' default thread count only */
#else
#define SLOW_BUILD 0
#endif

/* ---- cases ---------------------------------------------------------------------------- */
enum { REG_ANY, REG_SHORT, REG_NODROP, REG_MINKEEP, REG_TAU };
static const char *const reg_names[] = {"any", "short (dense)", "nothing dropped (dense)",
                                        "n_keep = min_keep", "n_keep = L - w - n_drop"};

typedef struct {
    const char *name;
    double decay;  /* logit of the oldest key below the newest (background slope) */
    int needles;   /* planted keys per query head */
    double needle; /* their logit boost */
} data_kind;

enum { DATA_NEEDLE, DATA_FLAT, DATA_STEEP, DATA_COUNT };
static const data_kind kinds[DATA_COUNT] = {
    {"needle", 3.0, 6, 5.0},
    {"flat", 0.0, 4, 4.0},
    {"steep", 10.0, 6, 6.0},
};

typedef struct {
    int64_t L, d;
    int hq, hkv;
    int window, pool;
    float coverage;
    int64_t min_keep;
    ela_dtype tq, tk;
    int data, regime, views;
    int big; /* slow builds run it on the SIMD levels with default threads only */
} ts_case;

#define MAX_CASES 128
static ts_case cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t d, int hq, int hkv, int window, int pool, float cov,
                int64_t min_keep, ela_dtype tq, ela_dtype tk, int data, int regime, int views) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    ts_case c = {L, d, hq, hkv, window, pool, cov, min_keep, tq, tk, data, regime, views, 0};
    cases[n_cases++] = c;
}

static void case_str(const ts_case *c, char *buf, size_t size) {
    snprintf(buf, size,
             "L=%lld d=%lld Hq=%d Hkv=%d w=%d pool=%d tau=%g min_keep=%lld q=%s k=%s data=%s "
             "regime=%s%s",
             (long long)c->L, (long long)c->d, c->hq, c->hkv, c->window, c->pool,
             (double)c->coverage, (long long)c->min_keep, ela_dtype_name(c->tq),
             ela_dtype_name(c->tk), kinds[c->data].name, reg_names[c->regime],
             c->views ? " views" : "");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    static const ela_dtype mixes[4][2] = {
        {ELA_F32, ELA_F32}, {ELA_F16, ELA_F16}, {ELA_BF16, ELA_BF16}, {ELA_F32, ELA_F16}};
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{3, 3}, {8, 2}, {8, 1}};
    static const int64_t lengths[4] = {437, 301, 613, 250};
    /* 1. Sweep, small settings (min_keep 64, window 32): every dtype mix x d x GQA, both
     * pruned regimes, rotated over lengths, pools and views. */
    int i = 0;
    for (int m = 0; m < 4; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++, i++) {
                int tau_regime = i % 2;
                int pool = (i % 3 == 2) ? 3 : 7;
                add(lengths[i % 4], dims[di], gqa[g][0], gqa[g][1], 32, pool,
                    tau_regime ? 0.005f : 0.3f, 64, mixes[m][0], mixes[m][1],
                    tau_regime ? DATA_FLAT : DATA_STEEP, tau_regime ? REG_TAU : REG_MINKEEP,
                    i % 5 == 1);
            }
    /* 2. Coverage cut deep in a decaying background (many dropped, n_keep above min_keep). */
    add(517, 64, 4, 2, 32, 7, 0.05f, 64, F32, F32, DATA_NEEDLE, REG_TAU, 0);
    add(517, 128, 8, 2, 32, 7, 0.2f, 64, BF16, BF16, DATA_NEEDLE, REG_TAU, 1);
    add(700, 64, 8, 8, 17, 5, 0.1f, 40, F16, F16, DATA_STEEP, REG_TAU, 0);
    /* 3. pool 1 (no smoothing), a wide pool, window 1, min_keep 0. */
    add(333, 64, 4, 1, 32, 1, 0.01f, 64, F32, F32, DATA_NEEDLE, REG_ANY, 0);
    add(333, 64, 4, 4, 32, 15, 0.01f, 64, F16, F32, DATA_NEEDLE, REG_ANY, 0);
    add(290, 64, 2, 1, 1, 7, 0.2f, 64, F32, F32, DATA_NEEDLE, REG_ANY, 0);
    add(290, 80, 2, 2, 8, 7, 0.3f, 0, F32, F32, DATA_STEEP, REG_ANY, 1);
    /* 4. Dense fallbacks: short (L <= min_keep + w, at the boundary and below), nothing dropped
     * (tiny coverage, coverage 0), tiny L. */
    add(96, 64, 4, 2, 32, 7, 0.3f, 64, F32, F32, DATA_STEEP, REG_SHORT, 0);
    add(97, 64, 4, 2, 32, 7, 0.3f, 64, F16, F16, DATA_STEEP, REG_ANY, 1);
    add(1, 64, 2, 1, 32, 7, 0.005f, 64, F32, F32, DATA_NEEDLE, REG_SHORT, 0);
    add(5, 128, 8, 1, 128, 7, 0.005f, 1024, BF16, BF16, DATA_NEEDLE, REG_SHORT, 1);
    add(400, 64, 4, 2, 32, 7, 1e-7f, 64, F32, F32, DATA_FLAT, REG_NODROP, 0);
    add(400, 128, 4, 1, 32, 7, 0.0f, 64, F16, F16, DATA_NEEDLE, REG_NODROP, 1);
    add(1152, 128, 8, 2, 128, 7, 0.005f, 1024, F16, F16, DATA_STEEP, REG_SHORT, 0);
    /* 5. The defaults (window 128, pool 7, tau 0.005, min_keep 1024) at L ~ 1500-2500. */
    ela_tsa_params def = ela_tsa_params_default();
    add(1999, 128, 8, 2, def.window, def.pool, def.coverage, def.min_keep, F16, F16, DATA_STEEP,
        REG_MINKEEP, 0);
    add(2301, 64, 4, 1, def.window, def.pool, def.coverage, def.min_keep, BF16, BF16, DATA_FLAT,
        REG_TAU, 1);
    cases[n_cases - 1].big = cases[n_cases - 2].big = 1;
    /* 6. q8_0 keys (a quantized KV cache): quantized before the reference computes its scores
     * and margins, so the sets must still match exactly. Both pruned regimes, coverage deep in
     * the background, a dense fallback, views, the defaults. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(437, 64, 8, 2, 32, 7, 0.3f, 64, F32, Q8, DATA_STEEP, REG_MINKEEP, 1);
    add(613, 128, 3, 3, 32, 7, 0.005f, 64, F32, Q8, DATA_FLAT, REG_TAU, 0);
    add(517, 64, 8, 1, 32, 7, 0.05f, 64, F16, Q8, DATA_NEEDLE, REG_TAU, 1);
    add(96, 32, 4, 2, 32, 7, 0.3f, 64, BF16, Q8, DATA_STEEP, REG_SHORT, 0);
    add(1999, 128, 8, 2, def.window, def.pool, def.coverage, def.min_keep, F32, Q8, DATA_STEEP,
        REG_MINKEEP, 0);
    cases[n_cases - 1].big = 1;
    (void)F16;
}

/* ---- inputs ----------------------------------------------------------------------------- */
typedef struct {
    float *q, *k;       /* [L, hq, d], [hkv, L, d] (rounded through their dtypes) */
    int32_t *idx;       /* reference [hq, L] */
    int64_t n_sel;
    ref_token_select_info info;
} case_data;

static void case_data_free(case_data *h) {
    free(h->q);
    free(h->k);
    free(h->idx);
    memset(h, 0, sizeof *h);
}

/* Random inputs of case c from stream `stream`, reference included. 0 or -1. */
static int case_data_make(const ts_case *c, uint64_t stream, case_data *h) {
    memset(h, 0, sizeof *h);
    const int64_t L = c->L, d = c->d, nq = L * c->hq * d, nk = (int64_t)c->hkv * L * d;
    const int G = c->hq / c->hkv;
    const data_kind *kind = &kinds[c->data];
    const double rd = sqrt((double)d);
    h->q = malloc((size_t)nq * sizeof *h->q);
    h->k = malloc((size_t)nk * sizeof *h->k);
    h->idx = malloc((size_t)(c->hq * L) * sizeof *h->idx);
    float *u = malloc((size_t)(c->hq + 1) * (size_t)d * sizeof *u); /* u_h, then v */
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    int rc = -1;
    if (!h->q || !h->k || !h->idx || !u || !qd || !kd)
        goto done;
    test_rng rng;
    test_rng_init(&rng, stream);
    /* Directions: u_h per query head (its needles), v shared (the age of a key). */
    for (int64_t e = 0; e < (c->hq + 1) * d; e++)
        u[e] = test_rng_u64(&rng) & 1 ? 1.0f : -1.0f;
    const float *v = u + c->hq * d;
    /* q[i, h] = noise + u_h + v: logit = q.k / sqrt(d) */
    test_fill_normal(&rng, h->q, nq, 1.0f);
    for (int64_t i = 0; i < L; i++)
        for (int hh = 0; hh < c->hq; hh++)
            for (int64_t e = 0; e < d; e++)
                h->q[(i * c->hq + hh) * d + e] += u[hh * d + e] + v[e];
    /* k[g, j] = noise + age(j) v + needles: age(j) v contributes -decay (1 - j / L) to the
     * logit, a needle of head h adds `needle` for head h. */
    test_fill_normal(&rng, h->k, nk, 0.5f);
    for (int g = 0; g < c->hkv; g++)
        for (int64_t j = 0; j < L; j++) {
            float age = (float)(-kind->decay * (1.0 - (double)j / (double)L) / rd);
            for (int64_t e = 0; e < d; e++)
                h->k[((int64_t)g * L + j) * d + e] += age * v[e];
        }
    int64_t prefix = L - c->window > 1 ? L - c->window : 1;
    for (int hh = 0; hh < c->hq; hh++)
        for (int n = 0; n < kind->needles; n++) {
            int64_t j = (int64_t)(test_rng_u64(&rng) % (uint64_t)prefix);
            float boost = (float)(kind->needle / rd);
            for (int64_t e = 0; e < d; e++)
                h->k[((int64_t)(hh / G) * L + j) * d + e] += boost * u[hh * d + e];
        }
    if (test_round_through(h->q, nq, c->tq) != 0 || test_round_through(h->k, nk, c->tk) != 0)
        goto done;
    for (int64_t e = 0; e < nq; e++)
        qd[e] = h->q[e];
    for (int64_t e = 0; e < nk; e++)
        kd[e] = h->k[e];
    ref_token_select_shape s = {L,         d,          c->hq,       c->hkv, c->window,
                                c->pool,   c->coverage, c->min_keep, 0.0};
    rc = ref_token_select(&s, qd, kd, h->idx, &h->n_sel, &h->info);
done:
    free(u);
    free(qd);
    free(kd);
    if (rc != 0)
        case_data_free(h);
    return rc;
}

static int regime_of(const ts_case *c, const ref_token_select_info *info) {
    if (info->n_drop0 < 0)
        return REG_SHORT;
    if (info->dense)
        return REG_NODROP;
    return info->n_keep == c->min_keep ? REG_MINKEEP : REG_TAU;
}

/* ---- device tensors --------------------------------------------------------------------- */
typedef struct {
    ela_tensor *base, *t; /* t == base when packed */
} dev_tensor;

static void dev_free(dev_tensor *x) {
    if (x->t != x->base)
        ela_tensor_free(x->t);
    ela_tensor_free(x->base);
    x->t = x->base = NULL;
}

typedef struct {
    dev_tensor q, k, idx;
    int64_t idx_cols; /* columns of idx's base (L, or L + 3 for the view) */
} dev_set;

#define IDX_SENTINEL (-5)

static void dev_set_free(dev_set *s) {
    dev_free(&s->q);
    dev_free(&s->k);
    dev_free(&s->idx);
}

/* Packed, or with views: q heads [0, hq) of a fused [L, hq + 2 hkv, d] projection, k a
 * head-major view of a token-major [L, hkv, d] buffer, idx columns [1, L + 1) of [hq, L + 3]. */
static ela_status dev_set_make(ela_backend *be, const ts_case *c, const case_data *h,
                               dev_set *s) {
    memset(s, 0, sizeof *s);
    const int64_t L = c->L, d = c->d, hq = c->hq, hkv = c->hkv;
    int64_t qext[3] = {L, hq, d}, kext[3] = {hkv, L, d}, iext[2] = {hq, L};
    ela_status st;
    s->idx_cols = c->views ? L + 3 : L;
    if (c->views) {
        int64_t qb[3] = {L, hq + 2 * hkv, d}, kb[3] = {L, hkv, d}, ib[2] = {hq, L + 3};
        /* byte strides; q8_0 keys in whole blocks (test_stride_bytes) */
        int64_t qs[3] = {test_stride_bytes(c->tq, (hq + 2 * hkv) * d),
                         test_stride_bytes(c->tq, d), test_stride_bytes(c->tq, 1)};
        int64_t ks[3] = {test_stride_bytes(c->tk, d), test_stride_bytes(c->tk, hkv * d),
                         test_stride_bytes(c->tk, 1)};
        int64_t is[2] = {(L + 3) * 4, 4};
        if ((st = ela_tensor_new(be, c->tq, 3, qb, NULL, &s->q.base)) != ELA_OK ||
            (st = ela_tensor_view(s->q.base, 3, qext, qs, 0, &s->q.t)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tk, 3, kb, NULL, &s->k.base)) != ELA_OK ||
            (st = ela_tensor_view(s->k.base, 3, kext, ks, 0, &s->k.t)) != ELA_OK ||
            (st = ela_tensor_new(be, ELA_I32, 2, ib, NULL, &s->idx.base)) != ELA_OK ||
            (st = ela_tensor_view(s->idx.base, 2, iext, is, 4, &s->idx.t)) != ELA_OK)
            return st;
    } else {
        if ((st = ela_tensor_new(be, c->tq, 3, qext, NULL, &s->q.base)) != ELA_OK ||
            (st = ela_tensor_new(be, c->tk, 3, kext, NULL, &s->k.base)) != ELA_OK ||
            (st = ela_tensor_new(be, ELA_I32, 2, iext, NULL, &s->idx.base)) != ELA_OK)
            return st;
        s->q.t = s->q.base;
        s->k.t = s->k.base;
        s->idx.t = s->idx.base;
    }
    int64_t ni = hq * s->idx_cols;
    int32_t *fill = malloc((size_t)ni * sizeof *fill);
    if (!fill)
        return ELA_ERR_OOM;
    for (int64_t e = 0; e < ni; e++)
        fill[e] = IDX_SENTINEL;
    st = ela_tensor_write(s->idx.base, fill, (size_t)ni * sizeof *fill);
    free(fill);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->q.t, h->q, L * hq * d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->k.t, h->k, hkv * L * d);
    return st;
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
static void run_on(backend_cfg *cfg, const ts_case *c, int ci, const case_data *h) {
    char what[320];
    case_str(c, what, sizeof what);
    const char *thr = cfg->threads ? cfg->threads : "default";
    dev_set s;
    ela_status st = dev_set_make(cfg->be, c, h, &s);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    if (st != ELA_OK) {
        dev_set_free(&s);
        return;
    }
    ela_tsa_params p = {c->window, c->pool, c->coverage, c->min_keep};
    int64_t n_sel = -1;
    double t0 = test_now();
    st = ela_token_select(cfg->be, s.q.t, s.k.t, &p, s.idx.t, &n_sel);
    cfg->seconds += test_now() - t0;
    cfg->runs++;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cfg->level, thr,
           ela_status_str(st), ela_last_error());
    if (st == ELA_OK) {
        CHECKF(n_sel == h->n_sel, "case %d [%s] level %s threads %s: n_sel %lld, reference %lld",
               ci, what, cfg->level, thr, (long long)n_sel, (long long)h->n_sel);
        int64_t cols = s.idx_cols, ni = c->hq * cols;
        int32_t *got = malloc((size_t)ni * sizeof *got);
        CHECK(got != NULL);
        if (got && n_sel == h->n_sel) {
            CHECK_STATUS(ela_tensor_read(s.idx.base, got, (size_t)ni * sizeof *got), ELA_OK);
            int64_t off = c->views ? 1 : 0, wrong = 0, outside = 0, first_h = -1, first_j = -1;
            for (int hh = 0; hh < c->hq; hh++) {
                for (int64_t j = 0; j < n_sel; j++)
                    if (got[hh * cols + off + j] != h->idx[hh * c->L + j] && wrong++ == 0) {
                        first_h = hh;
                        first_j = j;
                    }
                for (int64_t j = 0; j < cols; j++)
                    outside += (j < off || j >= off + c->L) && got[hh * cols + j] != IDX_SENTINEL;
            }
            CHECKF(wrong == 0,
                   "case %d [%s] level %s threads %s: %lld indices differ from the reference, "
                   "first idx[%lld, %lld] = %d, reference %d",
                   ci, what, cfg->level, thr, (long long)wrong, (long long)first_h,
                   (long long)first_j, wrong ? got[first_h * cols + off + first_j] : 0,
                   wrong ? h->idx[first_h * c->L + first_j] : 0);
            CHECKF(outside == 0, "case %d [%s]: %lld elements of idx's base outside the view "
                   "were written", ci, what, (long long)outside);
        }
        free(got);
    }
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
    const int64_t L = 200, d = 64;
    ela_tensor *q = NULL, *k = NULL, *idx = NULL, *k_short = NULL, *idx_f32 = NULL,
               *idx_short = NULL, *idx_3d = NULL, *q_bad = NULL;
    int64_t qe[3] = {L, 4, d}, ke[3] = {2, L, d}, ie[2] = {4, L}, kse[3] = {2, L - 1, d};
    int64_t ise[2] = {4, L - 1}, i3e[3] = {4, L, 1}, qbe[3] = {L, 3, d};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qe, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ke, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, ie, NULL, &idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, kse, NULL, &k_short), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, ie, NULL, &idx_f32), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, ise, NULL, &idx_short), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 3, i3e, NULL, &idx_3d), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qbe, NULL, &q_bad), ELA_OK);
    if (!q || !k || !idx || !k_short || !idx_f32 || !idx_short || !idx_3d || !q_bad)
        goto done;
    float *zeros = calloc((size_t)(L * 4 * d), sizeof *zeros);
    if (zeros) {
        CHECK_STATUS(ela_tensor_write_f32(q, zeros, L * 4 * d), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(k, zeros, 2 * L * d), ELA_OK);
        free(zeros);
    }
    ela_tsa_params p = {32, 7, 0.3f, 64};
    int64_t n_sel = 0;
    CHECK_STATUS(ela_token_select(be, q, k, &p, idx, &n_sel), ELA_OK);
    CHECK_FAIL(ela_token_select(NULL, q, k, &p, idx, &n_sel), "backend");
    CHECK_FAIL(ela_token_select(be, NULL, k, &p, idx, &n_sel), "q");
    CHECK_FAIL(ela_token_select(be, q, NULL, &p, idx, &n_sel), "k");
    CHECK_FAIL(ela_token_select(be, q, k, &p, NULL, &n_sel), "idx");
    CHECK_FAIL(ela_token_select(be, q, k, &p, idx, NULL), "n_sel");
    CHECK_FAIL(ela_token_select(be, q, k_short, &p, idx, &n_sel), "k");
    CHECK_FAIL(ela_token_select(be, q_bad, k, &p, idx, &n_sel), "q");
    CHECK_FAIL(ela_token_select(be, q, k, &p, idx_f32, &n_sel), "idx");
    CHECK_FAIL(ela_token_select(be, q, k, &p, idx_short, &n_sel), "idx");
    CHECK_FAIL(ela_token_select(be, q, k, &p, idx_3d, &n_sel), "idx");
    CHECK_FAIL(ela_token_select(be, q, k, &p, q, &n_sel), "idx");
    ela_tsa_params bad = p;
    bad.window = 0;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "window");
    bad = p;
    bad.pool = 4;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "pool");
    bad.pool = 0;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "pool");
    bad.pool = -3;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "pool");
    bad = p;
    bad.coverage = -0.1f;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "coverage");
    bad.coverage = 1.0f;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "coverage");
    bad.coverage = NAN;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "coverage");
    bad = p;
    bad.min_keep = -1;
    CHECK_FAIL(ela_token_select(be, q, k, &bad, idx, &n_sel), "min_keep");
    /* Non-finite scores cannot be ranked: an error naming q and k, not garbage indices. */
    float *nanrow = malloc((size_t)(L * 4 * d) * sizeof *nanrow);
    if (nanrow) {
        for (int64_t e = 0; e < L * 4 * d; e++)
            nanrow[e] = e == (L - 1) * 4 * d + 3 ? NAN : 0.0f; /* a window row */
        CHECK_STATUS(ela_tensor_write_f32(q, nanrow, L * 4 * d), ELA_OK);
        CHECK_FAIL(ela_token_select(be, q, k, &p, idx, &n_sel), "q");
        free(nanrow);
    }
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(idx);
    ela_tensor_free(k_short);
    ela_tensor_free(idx_f32);
    ela_tensor_free(idx_short);
    ela_tensor_free(idx_3d);
    ela_tensor_free(q_bad);
}

/* Every allocation of a pruning call failed in turn: ELA_ERR_OOM each time, then success with
 * the right sets (the sanitizer build's leak checker sees anything left behind). */
static void test_oom(const ts_case *c, const case_data *h) {
    ela_backend *be = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be), ELA_OK);
    if (!be)
        return;
    dev_set s;
    ela_status st = dev_set_make(be, c, h, &s);
    CHECK_STATUS(st, ELA_OK);
    ela_tsa_params p = {c->window, c->pool, c->coverage, c->min_keep};
    int64_t n_sel = -1, failures = 0;
    for (int64_t i = 1; st == ELA_OK && i <= 1000; i++) {
        ela_debug_fail_alloc(i);
        ela_status r = ela_token_select(be, s.q.t, s.k.t, &p, s.idx.t, &n_sel);
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
    CHECKF(failures >= 1, "only %lld allocations seen", (long long)failures);
    CHECK(n_sel == h->n_sel);
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
        return test_summary("test_token_select");
    double t_ref = 0.0;
    int regenerated = 0, oom_done = 0;
    for (int ci = 0; ci < n_cases; ci++) {
        const ts_case *c = &cases[ci];
        char what[320];
        case_str(c, what, sizeof what);
        case_data h;
        int ok = 0, tries;
        double t0 = test_now();
        for (tries = 0; tries < MAX_TRIES && !ok; tries++) {
            if (case_data_make(c, (uint64_t)ci * 1000 + (uint64_t)tries, &h) != 0) {
                CHECKF(0, "case %d [%s]: building inputs or reference failed", ci, what);
                break;
            }
            ok = h.info.tau_margin >= MARGIN && h.info.topk_margin >= MARGIN &&
                 (c->regime == REG_ANY || regime_of(c, &h.info) == c->regime);
            if (!ok)
                case_data_free(&h);
        }
        t_ref += test_now() - t0;
        regenerated += tries - 1;
        CHECKF(ok, "case %d [%s]: no input in %d tries had clear margins in the wanted regime",
               ci, what, tries);
        if (!ok)
            continue;
        printf("case %2d [%s]: %s, n_sel %lld, n_drop0 %lld, margins tau %.2e top-k %.2e%s\n", ci,
               what, reg_names[regime_of(c, &h.info)], (long long)h.n_sel,
               (long long)h.info.n_drop0, h.info.tau_margin, h.info.topk_margin,
               tries > 1 ? " (regenerated)" : "");
        for (int k = 0; k < n_cfgs; k++) {
            if (SLOW_BUILD && c->big && (cfgs[k].threads || strcmp(cfgs[k].level, "scalar") == 0))
                continue;
            run_on(&cfgs[k], c, ci, &h);
        }
        if (!oom_done && regime_of(c, &h.info) == REG_TAU) {
            test_oom(c, &h);
            oom_done = 1;
        }
        case_data_free(&h);
    }
    CHECK(oom_done);
    test_errors(cfgs[0].be);
    printf("reference: %.2f s, %d inputs regenerated for near-ties or regime\n", t_ref,
           regenerated);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.3f s in ela_token_select\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs, cfgs[k].seconds);
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_token_select");
}

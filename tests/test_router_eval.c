/* Unit test of ela_router_eval on the "cpu" backend against the float64 reference
 * (tests/ref/router_eval_ref.c) on fresh random inputs: L around the 100/200 pooling boundaries,
 * d 64/128/80, hidden 4d and 2d, Hkv 1/2/8, f32/f16/bf16 keys and weights (mixed too), packed
 * keys and views of a token-major projection and of a KV cache, several thread counts; error
 * paths naming the offending tensor; fault injection. Replay with ELA_TEST_SEED. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/router_eval_ref.h"
#include "test_common.h"

/* Logits: the reference is fed exactly the values the op reads (inputs rounded through their
 * dtype first), so the only difference is f32 accumulation over at most 4d terms per layer:
 * 1e-4 relative to the head's logit scale leaves a wide margin above that and catches any
 * wrong row, weight or activation. Decisions must be identical: inputs whose reference margin
 * |z1 - z0| is below MARGIN are regenerated, so f32 noise cannot flip them. */
#define TOL_LOGIT 1e-4
#define MARGIN 1e-3

#define N_WEIGHTS 10
#define MAX_HKV 32
static const char *const weight_names[N_WEIGHTS] = {
    "task_w1", "task_b1", "task_w2", "task_b2", "route_w1",
    "route_b1", "route_w2", "route_b2", "route_w3", "route_b3"};

/* Shape of weight i: rows, cols (0 for a bias). */
static void weight_shape(int i, int64_t d, int64_t hid, int64_t *rows, int64_t *cols) {
    static const int out_is_hid[N_WEIGHTS] = {1, 1, 0, 0, 1, 1, 0, 0, 0, 0};
    static const int in_is_hid[N_WEIGHTS] = {0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    int bias = i % 2 == 1;
    *rows = i >= 8 ? 2 : out_is_hid[i] ? hid : d;
    *cols = bias ? 0 : in_is_hid[i] ? hid : d;
}

enum { LAYOUT_PACKED, LAYOUT_TOKEN_MAJOR, LAYOUT_CACHE, LAYOUT_COUNT };
static const char *const layout_names[] = {"packed", "token-major", "kv-cache"};

typedef struct {
    int64_t L, d, hid;
    int hkv;
    ela_dtype tk, tw;
    int mixed; /* weight i gets dtype (tw + i) % 3 */
    int layout;
} rcase;

static ela_dtype weight_dtype(const rcase *c, int i) {
    return c->mixed ? (ela_dtype)((c->tw + i) % 3) : c->tw;
}

static void case_str(const rcase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld d=%lld hid=%lld Hkv=%d k=%s w=%s%s layout=%s", (long long)c->L,
             (long long)c->d, (long long)c->hid, c->hkv, ela_dtype_name(c->tk),
             ela_dtype_name(c->tw), c->mixed ? "(mixed)" : "", layout_names[c->layout]);
}

/* Host data of one case: f32 values already rounded through their dtypes, and doubles. */
typedef struct {
    float *k, *w[N_WEIGHTS];
    double *kd, *wd[N_WEIGHTS];
    int *full;
    double *logits;
} hdata;

static void hdata_free(hdata *h) {
    free(h->k);
    free(h->kd);
    for (int i = 0; i < N_WEIGHTS; i++) {
        free(h->w[i]);
        free(h->wd[i]);
    }
    free(h->full);
    free(h->logits);
    memset(h, 0, sizeof *h);
}

static int64_t weight_numel(const rcase *c, int i) {
    int64_t rows, cols;
    weight_shape(i, c->d, c->hid, &rows, &cols);
    return cols ? rows * cols : rows;
}

/* Keys: per head a mean vector mu ~ N(0, 1), rows mu + N(0, 1); rows outside both pooling slices
 * get +2 on every channel, the head slice +0.5 and the tail slice -0.5, so pooling any wrong row
 * or dropping the double count moves the logits far beyond the tolerance. Weights N(0, 1/in),
 * biases N(0, 0.5). Regenerated (new draw) until every head's margin exceeds MARGIN. */
static int hdata_make(const rcase *c, int ci, hdata *h) {
    memset(h, 0, sizeof *h);
    const int64_t L = c->L, d = c->d, nk = (int64_t)c->hkv * L * d;
    h->k = malloc((size_t)nk * sizeof *h->k);
    h->kd = malloc((size_t)nk * sizeof *h->kd);
    h->full = malloc((size_t)c->hkv * sizeof *h->full);
    h->logits = malloc((size_t)c->hkv * 2 * sizeof *h->logits);
    if (!h->k || !h->kd || !h->full || !h->logits)
        return -1;
    for (int i = 0; i < N_WEIGHTS; i++) {
        int64_t ne = weight_numel(c, i);
        h->w[i] = malloc((size_t)ne * sizeof(float));
        h->wd[i] = malloc((size_t)ne * sizeof(double));
        if (!h->w[i] || !h->wd[i])
            return -1;
    }
    const int64_t m = L < 100 ? L : 100;
    for (int attempt = 0; attempt < 50; attempt++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 64 + (uint64_t)attempt);
        for (int g = 0; g < c->hkv; g++) {
            float *kh = h->k + (int64_t)g * L * d, mu[128];
            test_fill_normal(&rng, mu, d, 1.0f);
            for (int64_t j = 0; j < L; j++) {
                float off = j < m ? 0.5f : j >= L - m ? -0.5f : 2.0f;
                for (int64_t x = 0; x < d; x++)
                    kh[j * d + x] = mu[x] + off + (float)test_rng_normal(&rng);
            }
        }
        if (test_round_through(h->k, nk, c->tk) != 0)
            return -1;
        for (int64_t i = 0; i < nk; i++)
            h->kd[i] = h->k[i];
        for (int i = 0; i < N_WEIGHTS; i++) {
            int64_t rows, cols, ne = weight_numel(c, i);
            weight_shape(i, d, c->hid, &rows, &cols);
            test_fill_normal(&rng, h->w[i], ne, cols ? (float)(1.0 / sqrt((double)cols)) : 0.5f);
            if (test_round_through(h->w[i], ne, weight_dtype(c, i)) != 0)
                return -1;
            for (int64_t e = 0; e < ne; e++)
                h->wd[i][e] = h->w[i][e];
        }
        ref_router_weights rw = {h->wd[0], h->wd[1], h->wd[2], h->wd[3], h->wd[4],
                                 h->wd[5], h->wd[6], h->wd[7], h->wd[8], h->wd[9]};
        if (ref_router_eval(c->hkv, L, d, c->hid, h->kd, &rw, h->full, h->logits) != 0)
            return -1;
        int ok = 1;
        for (int g = 0; g < c->hkv; g++)
            if (fabs(h->logits[2 * g + 1] - h->logits[2 * g]) <= MARGIN)
                ok = 0;
        if (ok)
            return 0;
    }
    return -1;
}

/* ---- device tensors ---------------------------------------------------------------------- */
typedef struct {
    ela_tensor *kbase, *k, *w[N_WEIGHTS];
} dset;

static void dset_free(dset *s) {
    ela_tensor_free(s->k);
    ela_tensor_free(s->kbase);
    for (int i = 0; i < N_WEIGHTS; i++)
        ela_tensor_free(s->w[i]);
    memset(s, 0, sizeof *s);
}

static ela_status dset_make(ela_backend *be, const rcase *c, const hdata *h, dset *s) {
    memset(s, 0, sizeof *s);
    ela_status st;
    const int64_t L = c->L, d = c->d, hkv = c->hkv, es = (int64_t)ela_dtype_size(c->tk);
    int64_t ext[3] = {hkv, L, d};
    if (c->layout == LAYOUT_PACKED) {
        if ((st = ela_tensor_new(be, c->tk, 3, ext, NULL, &s->k)) != ELA_OK)
            return st;
    } else if (c->layout == LAYOUT_TOKEN_MAJOR) {
        /* [L, Hkv, d] as a projection writes it, viewed head-major */
        int64_t bext[3] = {L, hkv, d}, str[3] = {d * es, hkv * d * es, es};
        if ((st = ela_tensor_new(be, c->tk, 3, bext, NULL, &s->kbase)) != ELA_OK ||
            (st = ela_tensor_view(s->kbase, 3, ext, str, 0, &s->k)) != ELA_OK)
            return st;
    } else {
        /* tokens [5, 5 + L) of a cache [Hkv, L + 9, d] */
        int64_t cap = L + 9, bext[3] = {hkv, cap, d}, str[3] = {cap * d * es, d * es, es};
        if ((st = ela_tensor_new(be, c->tk, 3, bext, NULL, &s->kbase)) != ELA_OK ||
            (st = ela_tensor_view(s->kbase, 3, ext, str, 5 * d * es, &s->k)) != ELA_OK)
            return st;
        float *nanbuf = malloc((size_t)(hkv * cap * d) * sizeof *nanbuf);
        if (!nanbuf)
            return ELA_ERR_OOM;
        for (int64_t i = 0; i < hkv * cap * d; i++)
            nanbuf[i] = NAN; /* tokens outside the view must never be read */
        st = ela_tensor_write_f32(s->kbase, nanbuf, hkv * cap * d);
        free(nanbuf);
        if (st != ELA_OK)
            return st;
    }
    if ((st = ela_tensor_write_f32(s->k, h->k, hkv * L * d)) != ELA_OK)
        return st;
    for (int i = 0; i < N_WEIGHTS; i++) {
        int64_t rows, cols;
        weight_shape(i, d, c->hid, &rows, &cols);
        int64_t wext[2] = {rows, cols};
        if ((st = ela_tensor_new(be, weight_dtype(c, i), cols ? 2 : 1, wext, NULL, &s->w[i])) !=
                ELA_OK ||
            (st = ela_tensor_write_f32(s->w[i], h->w[i], weight_numel(c, i))) != ELA_OK)
            return st;
    }
    return ELA_OK;
}

static ela_router_weights dset_weights(const dset *s) {
    ela_router_weights w = {s->w[0], s->w[1], s->w[2], s->w[3], s->w[4],
                            s->w[5], s->w[6], s->w[7], s->w[8], s->w[9]};
    return w;
}

/* ---- correctness ---------------------------------------------------------------------------- */
typedef struct {
    const char *level, *threads;
    ela_backend *be;
} cfg;

static double worst_err;
static int n_full, n_sparse;

static void run_case(const cfg *cf, const rcase *c, int ci, const hdata *h, int with_logits) {
    char what[160];
    case_str(c, what, sizeof what);
    char thr[48];
    snprintf(thr, sizeof thr, "%s level %s", cf->threads ? cf->threads : "default", cf->level);
    dset s;
    ela_status st = dset_make(cf->be, c, h, &s);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    if (st == ELA_OK) {
        ela_router_weights w = dset_weights(&s);
        int full[MAX_HKV + 1];
        float logits[2 * MAX_HKV];
        for (int g = 0; g <= MAX_HKV; g++)
            full[g] = -1;
        for (int g = 0; g < 2 * MAX_HKV; g++)
            logits[g] = NAN;
        st = ela_router_eval(cf->be, s.k, &w, full, with_logits ? logits : NULL);
        CHECKF(st == ELA_OK, "case %d [%s] threads %s: %s (%s)", ci, what, thr,
               ela_status_str(st), ela_last_error());
        for (int g = 0; st == ELA_OK && g < c->hkv; g++) {
            CHECKF(full[g] == h->full[g], "case %d [%s] threads %s: head %d full=%d, reference %d "
                   "(logits %.6g %.6g)", ci, what, thr, g, full[g], h->full[g],
                   h->logits[2 * g], h->logits[2 * g + 1]);
            if (!with_logits)
                continue;
            double sc = fabs(h->logits[2 * g]) + fabs(h->logits[2 * g + 1]) + 1e-3;
            for (int x = 0; x < 2; x++) {
                double err = fabs((double)logits[2 * g + x] - h->logits[2 * g + x]) / sc;
                CHECKF(err <= TOL_LOGIT, "case %d [%s] threads %s: head %d logit %d = %.8g, "
                       "reference %.8g (rel err %.3g)", ci, what, thr, g, x,
                       (double)logits[2 * g + x], h->logits[2 * g + x], err);
                if (!(err <= worst_err))
                    worst_err = err;
            }
            if (full[g])
                n_full++;
            else
                n_sparse++;
        }
        for (int g = c->hkv; g <= MAX_HKV; g++)
            CHECKF(full[g] == -1, "case %d: full[%d] written past Hkv", ci, g);
    }
    dset_free(&s);
}

#define MAX_CASES 256
static rcase cases[MAX_CASES];
static int n_cases;

static void build_cases(void) {
    static const int64_t Ls[7] = {1, 50, 150, 199, 200, 201, 1000};
    static const int64_t ds[3] = {64, 128, 80};
    static const int hkvs[3] = {1, 2, 8};
    int idx = 0;
    for (int li = 0; li < 7; li++)
        for (int di = 0; di < 3; di++)
            for (int hf = 0; hf < 2; hf++)
                for (int gi = 0; gi < 3; gi++, idx++) {
                    rcase c;
                    c.L = Ls[li];
                    c.d = ds[di];
                    c.hid = (hf ? 2 : 4) * c.d;
                    c.hkv = hkvs[gi];
                    c.tk = (ela_dtype)(idx % 3);
                    c.tw = (ela_dtype)(idx / 3 % 3);
                    c.mixed = idx % 4 == 3;
                    c.layout = (idx + idx / 7) % LAYOUT_COUNT;
                    if (n_cases < MAX_CASES)
                        cases[n_cases++] = c;
                }
    /* Wide enough (Hkv h d >= 4M multiply-adds per layer) that the products split over threads. */
    rcase wide = {300, 128, 1024, 32, ELA_BF16, ELA_F32, 1, LAYOUT_TOKEN_MAJOR};
    cases[n_cases++] = wide;
    rcase wide2 = {1000, 128, 1024, 32, ELA_F16, ELA_F16, 0, LAYOUT_CACHE};
    cases[n_cases++] = wide2;
}

/* ---- error paths ---------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_word(ela_last_error(), word), "message \"%s\" does not name '%s'",     \
               ela_last_error(), word);                                                         \
    } while (0)

static void test_errors(ela_backend *be) {
    rcase c = {150, 64, 256, 2, ELA_F32, ELA_F16, 0, LAYOUT_PACKED};
    hdata h;
    CHECK(hdata_make(&c, 9999, &h) == 0);
    dset s;
    CHECK_STATUS(dset_make(be, &c, &h, &s), ELA_OK);
    ela_router_weights w = dset_weights(&s);
    int full[2];
    float logits[4];
    CHECK_STATUS(ela_router_eval(be, s.k, &w, full, logits), ELA_OK);
    CHECK(full[0] == h.full[0] && full[1] == h.full[1]);

    CHECK_FAIL(ela_router_eval(NULL, s.k, &w, full, logits), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_router_eval(be, NULL, &w, full, logits), ELA_ERR_INVALID_ARG, "k_pre");
    CHECK_FAIL(ela_router_eval(be, s.k, NULL, full, logits), ELA_ERR_INVALID_ARG, "weights");
    CHECK_FAIL(ela_router_eval(be, s.k, &w, NULL, logits), ELA_ERR_INVALID_ARG, "full");

    /* k_pre: wrong rank, wrong dtype */
    ela_tensor *t2 = NULL, *ti = NULL, *tz = NULL;
    int64_t e2[2] = {2, 150 * 64}, e3[3] = {2, 150, 64};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, e2, NULL, &t2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 3, e3, NULL, &ti), ELA_OK);
    CHECK_FAIL(ela_router_eval(be, t2, &w, full, logits), ELA_ERR_INVALID_ARG, "k_pre");
    CHECK_FAIL(ela_router_eval(be, ti, &w, full, logits), ELA_ERR_INVALID_ARG, "k_pre");
    /* k_pre with no tokens */
    int64_t ez[3] = {2, 0, 64};
    if (ela_tensor_new(be, ELA_F32, 3, ez, NULL, &tz) == ELA_OK)
        CHECK_FAIL(ela_router_eval(be, tz, &w, full, logits), ELA_ERR_INVALID_ARG, "k_pre");
    ela_tensor_free(tz);

    /* Each weight: NULL, transposed / wrong length, wrong dtype, wrong rank. */
    for (int i = 0; i < N_WEIGHTS; i++) {
        const ela_tensor **slots[N_WEIGHTS] = {&w.task_w1,  &w.task_b1,  &w.task_w2, &w.task_b2,
                                               &w.route_w1, &w.route_b1, &w.route_w2,
                                               &w.route_b2, &w.route_w3, &w.route_b3};
        const ela_tensor **slot = slots[i];
        const ela_tensor *keep = *slot;
        *slot = NULL;
        CHECK_FAIL(ela_router_eval(be, s.k, &w, full, logits), ELA_ERR_INVALID_ARG,
                   weight_names[i]);
        int64_t rows, cols;
        weight_shape(i, c.d, c.hid, &rows, &cols);
        ela_tensor *bad = NULL, *bad_dt = NULL, *bad_rank = NULL;
        int64_t be_[2] = {cols ? cols : rows + 1, cols ? rows + (i >= 8) : 0};
        if (i == 0) { /* task_w1 sets h: give it a wrong d instead */
            be_[0] = rows;
            be_[1] = cols + 1;
        }
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, cols ? 2 : 1, be_, NULL, &bad), ELA_OK);
        *slot = bad;
        CHECK_FAIL(ela_router_eval(be, s.k, &w, full, logits), ELA_ERR_INVALID_ARG,
                   weight_names[i]);
        int64_t ge[2] = {rows, cols};
        CHECK_STATUS(ela_tensor_new(be, ELA_I32, cols ? 2 : 1, ge, NULL, &bad_dt), ELA_OK);
        *slot = bad_dt;
        CHECK_FAIL(ela_router_eval(be, s.k, &w, full, logits), ELA_ERR_INVALID_ARG,
                   weight_names[i]);
        int64_t re[2] = {cols ? rows * cols : rows, 1};
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, cols ? 1 : 2, re, NULL, &bad_rank), ELA_OK);
        *slot = bad_rank;
        CHECK_FAIL(ela_router_eval(be, s.k, &w, full, logits), ELA_ERR_INVALID_ARG,
                   weight_names[i]);
        *slot = keep;
        ela_tensor_free(bad);
        ela_tensor_free(bad_dt);
        ela_tensor_free(bad_rank);
    }
    /* A hidden width that disagrees between weights: task_w1 [2h, d] makes task_b1 wrong. */
    {
        ela_tensor *wide = NULL;
        int64_t we[2] = {2 * c.hid, c.d};
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, we, NULL, &wide), ELA_OK);
        w.task_w1 = wide;
        CHECK_FAIL(ela_router_eval(be, s.k, &w, full, logits), ELA_ERR_INVALID_ARG, "task_b1");
        w.task_w1 = s.w[0];
        ela_tensor_free(wide);
    }
    /* Weights from another backend instance. */
    {
        ela_backend *other = NULL;
        CHECK_STATUS(ela_backend_open("cpu", &other), ELA_OK);
        ela_tensor *ow = NULL;
        int64_t we[2] = {c.d, c.hid};
        if (other && ela_tensor_new(other, ELA_F32, 2, we, NULL, &ow) == ELA_OK) {
            w.route_w2 = ow;
            CHECK_FAIL(ela_router_eval(be, s.k, &w, full, logits), ELA_ERR_INVALID_ARG,
                       "route_w2");
            w.route_w2 = s.w[6];
        }
        ela_tensor_free(ow);
        ela_backend_close(other);
    }
    /* Still fine afterwards, and logits may be NULL. */
    CHECK_STATUS(ela_router_eval(be, s.k, &w, full, NULL), ELA_OK);
    CHECK(full[0] == h.full[0] && full[1] == h.full[1]);
    ela_tensor_free(t2);
    ela_tensor_free(ti);
    dset_free(&s);
    hdata_free(&h);
}

/* ---- out of memory -------------------------------------------------------------------------- */
static ela_status oom_sequence(const rcase *c, const hdata *h, const char *threads,
                               int check_result) {
    ela_backend *be = NULL;
    test_setenv("ELA_THREADS", threads);
    ela_status st = ela_backend_open("cpu", &be);
    test_setenv("ELA_THREADS", NULL);
    if (st != ELA_OK)
        return st;
    dset s;
    st = dset_make(be, c, h, &s);
    if (st == ELA_OK) {
        ela_router_weights w = dset_weights(&s);
        int full[8];
        float logits[16];
        st = ela_router_eval(be, s.k, &w, full, logits);
        if (st == ELA_OK && check_result)
            for (int g = 0; g < c->hkv; g++)
                CHECKF(full[g] == h->full[g], "oom: head %d decision differs", g);
    }
    dset_free(&s);
    ela_backend_close(be);
    return st;
}

static void test_oom(void) {
    static const char *const threads[2] = {"1", "3"};
    rcase c = {300, 128, 512, 8, ELA_F16, ELA_BF16, 0, LAYOUT_TOKEN_MAJOR};
    hdata h;
    CHECK(hdata_make(&c, 7777, &h) == 0);
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

int main(void) {
    test_seed();
    build_cases();
    /* every SIMD level (key rows and weights are converted by its load_rows), each with the
     * default thread count, 1 and 3 */
    static const char *const levels[3] = {"scalar", "avx2", "avx512"};
    static const char *const threads[3] = {NULL, "1", "3"};
    cfg cfgs[9];
    int n_cfgs = 0;
    for (int l = 0; l < 3; l++) {
        if (!level_supported(levels[l]))
            continue;
        for (int t = 0; t < 3; t++) {
            cfgs[n_cfgs].level = levels[l];
            cfgs[n_cfgs].threads = threads[t];
            cfgs[n_cfgs].be = NULL;
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", threads[t]);
            CHECK_STATUS(ela_backend_open("cpu", &cfgs[n_cfgs].be), ELA_OK);
            if (cfgs[n_cfgs].be)
                n_cfgs++;
        }
    }
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
    if (n_cfgs == 0)
        return test_summary("test_router_eval");
    {
        ela_dtype t[11];
        for (int i = 0; i < 11; i++)
            t[i] = (ela_dtype)(i % 3);
        CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_ROUTER_EVAL, t, 11));
    }

    printf("%d cases\n", n_cases);
    for (int ci = 0; ci < n_cases; ci++) {
        hdata h;
        int rc = hdata_make(&cases[ci], ci, &h);
        CHECKF(rc == 0, "case %d: inputs or reference failed", ci);
        if (rc == 0)
            for (int t = 0; t < n_cfgs; t++)
                run_case(&cfgs[t], &cases[ci], ci, &h, t % 3 != 2 || ci % 2 == 0);
        hdata_free(&h);
    }
    printf("worst logit error %.3g (tol %.0e); decisions: %d full, %d sparse\n", worst_err,
           TOL_LOGIT, n_full, n_sparse);
    CHECK(n_full > 0 && n_sparse > 0);

    test_errors(cfgs[0].be);
    test_oom();
    for (int t = 0; t < n_cfgs; t++)
        ela_backend_close(cfgs[t].be);
    return test_summary("test_router_eval");
}

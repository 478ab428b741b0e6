/* Cross-backend parity of Token Sparse Attention's two ops (DESIGN.md 4.5-4.6, 7): every device
 * of each GPU plugin the build has (tests/test_gpu.h: Vulkan with and without its fallbacks,
 * CUDA on its default, generic and split configurations) against the CPU backend and the float64
 * references (tests/ref/token_select_ref.c, tests/ref/attn_token_sparse_ref.c) on the same
 * random inputs.
 *   token_select: the index lists and n_sel must be identical to the reference's and the CPU's.
 *     Inputs are built as in test_token_select.c (per-head needle keys over a background that
 *     decays with age) and regenerated while the reference reports a near-tie at either cut-off
 *     (coverage threshold, a head's n_keep-th score) or lands in another regime than the case
 *     asks for. Dense fallbacks (L <= min_keep + window, nothing dropped), both pruned regimes,
 *     window 1, pool 1, GQA 1/4/8, d 64/128/80, f32/f16/bf16, strided views, the defaults.
 *   attn_token_sparse: o within the dtype tolerances of the reference and of the CPU's output,
 *     every row a head did not select exactly zero; n_sel = 0 and n_sel = L, lengths not
 *     multiples of 128, several 128-row query tiles, causal and not, scattered / run / TSA-like
 *     lists and the lists token_select picks.
 * A configuration whose backend lacks an op (ela_backend_supports) is skipped for it with one
 * line, one that lacks a case's dtypes (q8_0 keys) for that case. Sizes are small (lavapipe is
 * ~70x slower than the CPU); Vulkan runs under the validation layer. Replay with ELA_TEST_SEED;
 * one op with ELA_TEST_OP=token_select|attn_token_sparse, one case with ELA_TEST_CASE=<index>;
 * ELA_TEST_VERBOSE=1 prints each case's time. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_token_sparse_ref.h"
#include "ref/token_select_ref.h"
#include "test_common.h"
#include "test_gpu.h"

/* A reference cut-off closer than this (relative) is a near-tie f32 scores may resolve either
 * way (the backends carry ~1e-6 relative error per probability): regenerated, as in
 * test_token_select.c. */
#define TS_MARGIN 1e-4
#define MAX_TRIES 40
#define IDX_SENTINEL (-5)
#define OUT_SENTINEL (-7.75f) /* exact in f16 and bf16 */

/* Nonzero when configuration k runs op with these dtypes; prints why not once per op and
 * configuration (op level: the backend lacks the op) or once per case (the dtypes). */
static int op_skipped[GPU_MAX_CFGS][2];

static int cfg_runs(int k, int op_i, ela_op op, const ela_dtype *dt, int n, int ci) {
    if (op_skipped[k][op_i])
        return 0;
    ela_dtype f32s[3] = {ELA_F32, ELA_F32, ELA_F32};
    if (!ela_backend_supports(gpu_cfgs[k].be, op, f32s, n)) {
        op_skipped[k][op_i] = 1;
        printf("%s: skipped on %s (the backend does not support it)\n",
               op_i == 0 ? "token_select" : "attn_token_sparse", gpu_cfgs[k].name);
        return 0;
    }
    if (!ela_backend_supports(gpu_cfgs[k].be, op, dt, n)) {
        printf("%s case %d: skipped on %s (dtypes not supported)\n",
               op_i == 0 ? "token_select" : "attn_token_sparse", ci, gpu_cfgs[k].name);
        return 0;
    }
    return 1;
}

/* ==== token_select =========================================================================== */
enum { REG_ANY, REG_SHORT, REG_NODROP, REG_MINKEEP, REG_TAU };
static const char *const reg_names[] = {"any", "short (dense)", "nothing dropped (dense)",
                                        "n_keep = min_keep", "n_keep = L - w - n_drop"};

typedef struct {
    const char *name;
    double decay;  /* logit of the oldest key below the newest */
    int needles;   /* planted keys per query head */
    double needle; /* their logit boost */
} data_kind;

enum { DATA_NEEDLE, DATA_FLAT, DATA_STEEP };
static const data_kind kinds[3] = {
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
    int data, regime, strided;
} tcase;

static const tcase tcases[] = {
    /* L, d, hq, hkv, w, pool, tau, min_keep, q, k, data, regime, strided */
    {96, 64, 4, 2, 32, 7, 0.3f, 64, ELA_F32, ELA_F32, DATA_STEEP, REG_SHORT, 0},
    {1, 64, 2, 1, 32, 7, 0.005f, 64, ELA_F16, ELA_F16, DATA_NEEDLE, REG_SHORT, 1},
    {437, 64, 8, 2, 32, 7, 0.3f, 64, ELA_F16, ELA_F16, DATA_STEEP, REG_MINKEEP, 0},
    {301, 128, 8, 1, 32, 7, 0.005f, 64, ELA_BF16, ELA_BF16, DATA_FLAT, REG_TAU, 1},
    {613, 80, 3, 3, 32, 3, 0.005f, 64, ELA_F32, ELA_F32, DATA_FLAT, REG_TAU, 0},
    {517, 128, 4, 1, 17, 5, 0.1f, 40, ELA_F32, ELA_F16, DATA_NEEDLE, REG_TAU, 1},
    {400, 64, 4, 2, 32, 7, 1e-7f, 64, ELA_F32, ELA_F32, DATA_FLAT, REG_NODROP, 0},
    {290, 64, 2, 1, 1, 7, 0.2f, 64, ELA_F32, ELA_F32, DATA_NEEDLE, REG_ANY, 0},
    {333, 64, 4, 1, 32, 1, 0.01f, 64, ELA_BF16, ELA_BF16, DATA_NEEDLE, REG_ANY, 0},
    {290, 80, 2, 2, 8, 7, 0.3f, 0, ELA_F16, ELA_F16, DATA_STEEP, REG_ANY, 1},
    {517, 64, 8, 1, 32, 7, 0.05f, 64, ELA_F32, ELA_F32, DATA_NEEDLE, REG_TAU, 0},
    /* the defaults (window 128, pool 7, tau 0.005, min_keep 1024), GQA 8 */
    {1250, 128, 8, 1, 128, 7, 0.005f, 1024, ELA_F16, ELA_F16, DATA_STEEP, REG_MINKEEP, 0},
    /* q8_0 keys: the CPU only (GPUs skip the dtype) */
    {437, 64, 8, 2, 32, 7, 0.3f, 64, ELA_F32, ELA_Q8_0, DATA_STEEP, REG_MINKEEP, 0},
};

static void tcase_str(const tcase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld d=%lld Hq=%d Hkv=%d w=%d pool=%d tau=%g min_keep=%lld q=%s k=%s "
             "data=%s regime=%s%s", (long long)c->L, (long long)c->d, c->hq, c->hkv, c->window,
             c->pool, (double)c->coverage, (long long)c->min_keep, ela_dtype_name(c->tq),
             ela_dtype_name(c->tk), kinds[c->data].name, reg_names[c->regime],
             c->strided ? " strided" : "");
}

static int regime_of(const tcase *c, const ref_token_select_info *info) {
    if (info->n_drop0 < 0)
        return REG_SHORT;
    if (info->dense)
        return REG_NODROP;
    return info->n_keep == c->min_keep ? REG_MINKEEP : REG_TAU;
}

/* Inputs of case c from stream `stream` (rounded through their dtypes) and the reference's
 * selection. q [L, hq, d] = noise + u_h + v; k [hkv, L, d] = noise + age(j) v + needles u_h, so
 * that a key's logit falls with its age and head h's needles stand out. 0 or -1. */
static int ts_make(const tcase *c, uint64_t stream, float *q, float *k, int32_t *idx,
                   int64_t *n_sel, ref_token_select_info *info) {
    const int64_t L = c->L, d = c->d, nq = L * c->hq * d, nk = (int64_t)c->hkv * L * d;
    const int G = c->hq / c->hkv;
    const data_kind *kind = &kinds[c->data];
    const double rd = sqrt((double)d);
    float *u = malloc((size_t)((c->hq + 1) * d) * sizeof *u);
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    int rc = -1;
    if (!u || !qd || !kd)
        goto done;
    test_rng rng;
    test_rng_init(&rng, stream);
    for (int64_t e = 0; e < (c->hq + 1) * d; e++)
        u[e] = test_rng_u64(&rng) & 1 ? 1.0f : -1.0f;
    const float *v = u + c->hq * d;
    test_fill_normal(&rng, q, nq, 1.0f);
    for (int64_t i = 0; i < L; i++)
        for (int h = 0; h < c->hq; h++)
            for (int64_t e = 0; e < d; e++)
                q[(i * c->hq + h) * d + e] += u[h * d + e] + v[e];
    test_fill_normal(&rng, k, nk, 0.5f);
    for (int g = 0; g < c->hkv; g++)
        for (int64_t j = 0; j < L; j++) {
            float age = (float)(-kind->decay * (1.0 - (double)j / (double)L) / rd);
            for (int64_t e = 0; e < d; e++)
                k[((int64_t)g * L + j) * d + e] += age * v[e];
        }
    const int64_t prefix = L - c->window > 1 ? L - c->window : 1;
    for (int h = 0; h < c->hq; h++)
        for (int t = 0; t < kind->needles; t++) {
            int64_t j = test_rng_below(&rng, prefix);
            float boost = (float)(kind->needle / rd);
            for (int64_t e = 0; e < d; e++)
                k[((int64_t)(h / G) * L + j) * d + e] += boost * u[h * d + e];
        }
    if (test_round_through(q, nq, c->tq) != 0 || test_round_through(k, nk, c->tk) != 0)
        goto done;
    for (int64_t e = 0; e < nq; e++)
        qd[e] = q[e];
    for (int64_t e = 0; e < nk; e++)
        kd[e] = k[e];
    ref_token_select_shape s = {L, d, c->hq, c->hkv, c->window, c->pool, c->coverage,
                                c->min_keep, 0.0};
    rc = ref_token_select(&s, qd, kd, idx, n_sel, info);
done:
    free(u);
    free(qd);
    free(kd);
    return rc;
}

static void check_token_select(int ci) {
    const tcase *c = &tcases[ci];
    char what[240];
    tcase_str(c, what, sizeof what);
    const int64_t L = c->L, d = c->d, nq = L * c->hq * d, nk = (int64_t)c->hkv * L * d;
    const int64_t ni = (int64_t)c->hq * L;
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nk * 4);
    int32_t *ref = malloc((size_t)ni * 4), *got = malloc((size_t)ni * 4);
    int32_t *cpu = malloc((size_t)ni * 4);
    if (!q || !k || !ref || !got || !cpu) {
        CHECK(!"out of memory");
        goto done;
    }
    int64_t ref_n = 0, cpu_n = -1;
    ref_token_select_info info;
    int tries = 0, ok = 0;
    for (; tries < MAX_TRIES && !ok; tries++) {
        if (ts_make(c, (uint64_t)ci * 1000 + (uint64_t)tries + 41000, q, k, ref, &ref_n,
                    &info) != 0) {
            CHECKF(0, "token_select case %d [%s]: building inputs or reference failed", ci,
                   what);
            goto done;
        }
        ok = info.tau_margin >= TS_MARGIN && info.topk_margin >= TS_MARGIN &&
             (c->regime == REG_ANY || regime_of(c, &info) == c->regime);
    }
    CHECKF(ok, "token_select case %d [%s]: no input in %d tries had clear margins in the wanted "
           "regime", ci, what, tries);
    if (!ok)
        goto done;
    printf("token_select case %2d: %s, n_sel %lld of %lld, margins tau %.1e top-k %.1e%s\n", ci,
           reg_names[regime_of(c, &info)], (long long)ref_n, (long long)L, info.tau_margin,
           info.topk_margin, tries > 1 ? " (regenerated)" : "");
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_dtype dt[2] = {c->tq, c->tk};
        if (!cfg_runs(kc, 0, ELA_OP_TOKEN_SELECT, dt, 2, ci)) {
            CHECKF(kc > 0, "token_select case %d: the cpu backend must run every case", ci);
            if (kc == 0)
                break;
            continue;
        }
        ela_tensor *tq = NULL, *tk = NULL, *ti = NULL;
        int64_t ix[2] = {c->hq, L};
        ela_status st = gpu_upload_qkv(cfg->be, L, L, d, c->hq, c->hkv, c->tq, c->tk, c->strided,
                                       q, k, NULL, &tq, &tk, NULL);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_I32, 2, ix, c->strided, &ti);
        if (st == ELA_OK) { /* poison: the first n_sel columns of every row must be written */
            for (int64_t e = 0; e < ni; e++)
                got[e] = IDX_SENTINEL;
            st = ela_tensor_write(ti, got, (size_t)ni * 4);
        }
        CHECKF(st == ELA_OK, "token_select case %d [%s] on %s: setup: %s (%s)", ci, what,
               cfg->name, ela_status_str(st), ela_last_error());
        int64_t n_sel = -1;
        if (st == ELA_OK) {
            ela_tsa_params p = {c->window, c->pool, c->coverage, c->min_keep};
            double t0 = test_now();
            st = ela_token_select(cfg->be, tq, tk, &p, ti, &n_sel);
            st = gpu_call_done(cfg, st, t0, "token_select", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read(ti, got, (size_t)ni * 4);
            CHECKF(st == ELA_OK, "token_select case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(ti);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        CHECKF(n_sel == ref_n, "token_select case %d [%s] on %s: n_sel %lld, the reference %lld",
               ci, what, cfg->name, (long long)n_sel, (long long)ref_n);
        if (n_sel != ref_n) {
            if (kc == 0)
                break;
            continue;
        }
        int64_t wrong = 0, fh = -1, fj = -1;
        for (int h = 0; h < c->hq; h++)
            for (int64_t j = 0; j < n_sel; j++)
                if (got[h * L + j] != ref[h * L + j] && wrong++ == 0) {
                    fh = h;
                    fj = j;
                }
        CHECKF(wrong == 0, "token_select case %d [%s] on %s: %lld indices differ from the "
               "reference, first idx[%lld, %lld] = %d, the reference %d", ci, what, cfg->name,
               (long long)wrong, (long long)fh, (long long)fj, wrong ? got[fh * L + fj] : 0,
               wrong ? ref[fh * L + fj] : 0);
        if (kc == 0) {
            memcpy(cpu, got, (size_t)ni * 4);
            cpu_n = n_sel;
            continue;
        }
        wrong = 0;
        for (int h = 0; h < c->hq && cpu_n == n_sel; h++)
            wrong += memcmp(cpu + h * L, got + h * L, (size_t)n_sel * 4) != 0;
        CHECKF(cpu_n == n_sel && wrong == 0, "token_select case %d [%s] on %s: %lld heads' lists "
               "differ from the cpu backend's", ci, what, cfg->name, (long long)wrong);
    }
done:
    free(q);
    free(k);
    free(ref);
    free(got);
    free(cpu);
}

/* ==== attn_token_sparse ====================================================================== */
enum { SEL_RANDOM, SEL_RUNS, SEL_TSA, SEL_IDENTITY, SEL_SELECT };
static const char *const sel_names[] = {"random", "runs", "tsa", "identity", "token_select"};

typedef struct {
    int64_t L, d;
    int hq, hkv;
    int64_t n_sel; /* ignored for SEL_IDENTITY (L) and SEL_SELECT (token_select's) */
    int causal;
    ela_dtype tq, tkv, to;
    int sel, strided;
} acase;

static const acase acases[] = {
    /* L, d, hq, hkv, n_sel, causal, q, kv, o, sel, strided */
    {300, 64, 8, 2, 211, 1, ELA_F16, ELA_F16, ELA_F16, SEL_RANDOM, 0},
    {517, 128, 4, 1, 390, 1, ELA_BF16, ELA_BF16, ELA_F32, SEL_TSA, 1},
    {129, 80, 3, 3, 65, 1, ELA_F32, ELA_F32, ELA_F32, SEL_RUNS, 0},
    {300, 128, 8, 1, 260, 0, ELA_F16, ELA_F16, ELA_BF16, SEL_RUNS, 0},
    {200, 64, 2, 2, 64, 0, ELA_F32, ELA_F16, ELA_F32, SEL_RANDOM, 1},
    {77, 64, 4, 2, 1, 1, ELA_BF16, ELA_BF16, ELA_BF16, SEL_RANDOM, 0},
    {150, 64, 4, 1, 0, 1, ELA_F32, ELA_F32, ELA_BF16, SEL_RANDOM, 1},  /* n_sel = 0 */
    {300, 64, 8, 2, 300, 1, ELA_F16, ELA_F16, ELA_F32, SEL_IDENTITY, 0}, /* n_sel = L */
    {129, 128, 8, 8, 129, 0, ELA_F32, ELA_F32, ELA_F32, SEL_IDENTITY, 1},
    {437, 64, 8, 2, 0, 1, ELA_F16, ELA_F16, ELA_F16, SEL_SELECT, 0},
    {613, 128, 4, 1, 0, 1, ELA_BF16, ELA_BF16, ELA_BF16, SEL_SELECT, 1},
    {700, 128, 8, 2, 555, 1, ELA_BF16, ELA_BF16, ELA_BF16, SEL_TSA, 0}, /* 5 query tiles */
    {333, 80, 4, 4, 200, 0, ELA_BF16, ELA_BF16, ELA_F32, SEL_TSA, 0},
    /* q8_0 K/V: the CPU only (GPUs skip the dtype) */
    {300, 64, 8, 2, 211, 1, ELA_F32, ELA_Q8_0, ELA_F32, SEL_RANDOM, 0},
};

static void acase_str(const acase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld d=%lld Hq=%d Hkv=%d n_sel=%lld %s q=%s kv=%s o=%s sel=%s%s",
             (long long)c->L, (long long)c->d, c->hq, c->hkv, (long long)c->n_sel,
             c->causal ? "causal" : "non-causal", ela_dtype_name(c->tq), ela_dtype_name(c->tkv),
             ela_dtype_name(c->to), sel_names[c->sel], c->strided ? " strided" : "");
}

/* Sorted random subset of n of [lo, hi) into out (mark: scratch of hi bytes). */
static void random_subset(test_rng *rng, unsigned char *mark, int64_t lo, int64_t hi, int64_t n,
                          int32_t *out) {
    memset(mark + lo, 0, (size_t)(hi - lo));
    for (int64_t j = hi - lo - n; j < hi - lo; j++) { /* Floyd */
        int64_t t = test_rng_below(rng, j + 1);
        if (mark[lo + t])
            t = j;
        mark[lo + t] = 1;
    }
    int64_t c = 0;
    for (int64_t j = lo; j < hi; j++)
        if (mark[j])
            out[c++] = (int32_t)j;
}

/* Head lists of n_sel rows of [0, L): scattered, runs of 1..40 rows, or a prefix subset plus the
 * last 32 rows (as TSA keeps its window). */
static void make_list(const acase *c, test_rng *rng, unsigned char *mark, int64_t n_sel,
                      int32_t *row) {
    const int64_t L = c->L;
    if (n_sel == L) {
        for (int64_t j = 0; j < L; j++)
            row[j] = (int32_t)j;
    } else if (c->sel == SEL_RUNS) {
        memset(mark, 0, (size_t)L);
        int64_t n = 0;
        while (n < n_sel) {
            int64_t pos = test_rng_below(rng, L), len = 1 + test_rng_below(rng, 40);
            for (int64_t t = pos; t < L && t < pos + len && n < n_sel; t++)
                if (!mark[t]) {
                    mark[t] = 1;
                    n++;
                }
        }
        n = 0;
        for (int64_t j = 0; j < L; j++)
            if (mark[j])
                row[n++] = (int32_t)j;
    } else if (c->sel == SEL_TSA && n_sel > 32) {
        random_subset(rng, mark, 0, L - 32, n_sel - 32, row);
        for (int64_t j = 0; j < 32; j++)
            row[n_sel - 32 + j] = (int32_t)(L - 32 + j);
    } else {
        random_subset(rng, mark, 0, L, n_sel, row);
    }
}

/* The lists the CPU's token_select picks on q, k (window 32, pool 7, tau 0.3, min_keep 64). */
static ela_status lists_from_select(const acase *c, const float *q, const float *k, int32_t *idx,
                                    int64_t *n_sel) {
    const int64_t L = c->L, d = c->d;
    ela_tensor *tq = NULL, *tk = NULL, *ti = NULL;
    int64_t qe[3] = {L, c->hq, d}, ke[3] = {c->hkv, L, d}, ie[2] = {c->hq, L};
    ela_tsa_params p = {32, 7, 0.3f, 64};
    int32_t *full = malloc((size_t)(c->hq * L) * 4);
    ela_status st = full ? ELA_OK : ELA_ERR_OOM;
    if (st == ELA_OK && (st = ela_tensor_new(gpu_cfgs[0].be, ELA_F32, 3, qe, NULL, &tq)) == ELA_OK &&
        (st = ela_tensor_new(gpu_cfgs[0].be, ELA_F32, 3, ke, NULL, &tk)) == ELA_OK &&
        (st = ela_tensor_new(gpu_cfgs[0].be, ELA_I32, 2, ie, NULL, &ti)) == ELA_OK &&
        (st = ela_tensor_write_f32(tq, q, L * c->hq * d)) == ELA_OK &&
        (st = ela_tensor_write_f32(tk, k, c->hkv * L * d)) == ELA_OK &&
        (st = ela_token_select(gpu_cfgs[0].be, tq, tk, &p, ti, n_sel)) == ELA_OK &&
        (st = ela_tensor_read(ti, full, (size_t)(c->hq * L) * 4)) == ELA_OK) {
        for (int h = 0; h < c->hq; h++)
            memcpy(idx + h * *n_sel, full + h * L, (size_t)*n_sel * 4);
    }
    free(full);
    ela_tensor_free(tq);
    ela_tensor_free(tk);
    ela_tensor_free(ti);
    return st;
}

static void check_token_sparse(int ci) {
    const acase *c = &acases[ci];
    char what[240];
    acase_str(c, what, sizeof what);
    const int64_t L = c->L, d = c->d, nq = L * c->hq * d, nkv = (int64_t)c->hkv * L * d;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci + 42000);
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nkv * 4), *v = malloc((size_t)nkv * 4);
    float *o = malloc((size_t)nq * 4);
    double *ro = malloc((size_t)nq * 8), *co = malloc((size_t)nq * 8);
    double *qd = malloc((size_t)nq * 8), *kd = malloc((size_t)nkv * 8);
    double *vd = malloc((size_t)nkv * 8);
    int32_t *idx = malloc((size_t)(c->hq * L) * 4);
    unsigned char *mark = malloc((size_t)L), *sel = calloc((size_t)(L * c->hq), 1);
    if (!q || !k || !v || !o || !ro || !co || !qd || !kd || !vd || !idx || !mark || !sel) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, q, nq, 1.0f);
    test_fill_normal(&rng, k, nkv, 1.0f);
    test_fill_normal(&rng, v, nkv, 1.0f);
    if (test_round_through(q, nq, c->tq) || test_round_through(k, nkv, c->tkv) ||
        test_round_through(v, nkv, c->tkv)) {
        CHECK(!"rounding failed");
        goto done;
    }
    int64_t n_sel = c->sel == SEL_IDENTITY ? L : c->n_sel;
    if (c->sel == SEL_SELECT) {
        ela_status st = lists_from_select(c, q, k, idx, &n_sel);
        CHECKF(st == ELA_OK && n_sel < L, "attn_token_sparse case %d: token_select on the cpu: "
               "%s (%s), n_sel %lld", ci, ela_status_str(st), ela_last_error(),
               (long long)n_sel);
        if (st != ELA_OK)
            goto done;
    } else {
        for (int h = 0; h < c->hq; h++)
            make_list(c, &rng, mark, n_sel, idx + h * n_sel);
    }
    for (int h = 0; h < c->hq; h++)
        for (int64_t i = 0; i < n_sel; i++)
            sel[(int64_t)idx[h * n_sel + i] * c->hq + h] = 1;
    for (int64_t e = 0; e < nq; e++)
        qd[e] = q[e];
    for (int64_t e = 0; e < nkv; e++) {
        kd[e] = k[e];
        vd[e] = v[e];
    }
    ref_attn_token_sparse_shape s = {L, d, c->hq, c->hkv, c->causal, 0.0};
    if (ref_attn_token_sparse(&s, qd, kd, vd, idx, n_sel, ro) != 0) {
        CHECKF(0, "attn_token_sparse case %d [%s]: reference failed", ci, what);
        goto done;
    }
    const double tol = gpu_tol_out(c->tq, c->tkv, c->to);
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_dtype dt[3] = {c->tq, c->tkv, c->to};
        if (!cfg_runs(kc, 1, ELA_OP_ATTN_TOKEN_SPARSE, dt, 3, ci)) {
            CHECKF(kc > 0, "attn_token_sparse case %d: the cpu backend must run every case", ci);
            if (kc == 0)
                break;
            continue;
        }
        ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL, *ti = NULL;
        int64_t ox[3] = {L, c->hq, d}, ix[2] = {c->hq, n_sel > 0 ? n_sel : 1};
        ela_status st = gpu_upload_qkv(cfg->be, L, L, d, c->hq, c->hkv, c->tq, c->tkv,
                                       c->strided, q, k, v, &tq, &tk, &tv);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, c->to, 3, ox, c->strided, &to);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_I32, 2, ix, c->strided, &ti);
        if (st == ELA_OK && n_sel > 0)
            st = ela_tensor_write(ti, idx, (size_t)(c->hq * n_sel) * 4);
        if (st == ELA_OK) { /* every row must be written: selected ones or zeros */
            for (int64_t e = 0; e < nq; e++)
                o[e] = OUT_SENTINEL;
            st = ela_tensor_write_f32(to, o, nq);
        }
        CHECKF(st == ELA_OK, "attn_token_sparse case %d [%s] on %s: setup: %s (%s)", ci, what,
               cfg->name, ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            ela_attn_params p = ela_attn_params_default();
            p.causal = c->causal;
            double t0 = test_now();
            st = ela_attn_token_sparse(cfg->be, tq, tk, tv, ti, n_sel, to, &p);
            st = gpu_call_done(cfg, st, t0, "attn_token_sparse", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read_f32(to, o, nq);
            CHECKF(st == ELA_OK, "attn_token_sparse case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tv);
        ela_tensor_free(to);
        ela_tensor_free(ti);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        int64_t nonzero = 0, first = -1;
        for (int64_t r = 0; r < L * c->hq; r++)
            if (!sel[r])
                for (int64_t e = 0; e < d; e++)
                    if (o[r * d + e] != 0.0f && nonzero++ == 0)
                        first = r;
        CHECKF(nonzero == 0, "attn_token_sparse case %d [%s] on %s: %lld values of unselected "
               "rows are not 0, first row %lld head %lld (%g)", ci, what, cfg->name,
               (long long)nonzero, (long long)(first / c->hq), (long long)(first % c->hq),
               nonzero ? (double)o[first * d] : 0.0);
        gpu_check_attention(kc, "attn_token_sparse", ci, what, ro, NULL, o, NULL, nq, 0, tol, 0.0,
                            co, NULL);
    }
done:
    free(q);
    free(k);
    free(v);
    free(o);
    free(ro);
    free(co);
    free(qd);
    free(kd);
    free(vd);
    free(idx);
    free(mark);
    free(sel);
}

/* ==== driver ================================================================================= */
int main(void) {
    test_seed();
    const gpu_op_cases ops[] = {
        {"token_select", (int)(sizeof tcases / sizeof tcases[0]), check_token_select},
        {"attn_token_sparse", (int)(sizeof acases / sizeof acases[0]), check_token_sparse},
    };
    return gpu_run_ops("test_backend_parity_tsa", ops, (int)(sizeof ops / sizeof ops[0]));
}

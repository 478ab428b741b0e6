/* attn_gather's trust in index lists decode_select wrote (core/valid_lists.h), on every backend
 * configuration of tests/test_gpu.c. On device memory attn_gather skips its host check of such
 * lists; each case here changes the lists after decode_select in one way the record must notice
 * (a host write, an op writing the bytes, a view that starts elsewhere or runs longer, fewer
 * keys) and requires the gather to refuse the now invalid lists. The first case requires the
 * trusted gather to equal one over a host-written copy of the same lists; the last feeds
 * decode_select non-finite queries and requires valid lists or an error. Replay with
 * ELA_TEST_SEED; one case with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_common.h"
#include "test_gpu.h"

enum { HQ = 8, HKV = 2, D = 64, N = 1000, BUDGET = 256, TSA_L = 64 };

enum { CASE_TRUSTED, CASE_HOST_WRITE, CASE_OP_WRITE, CASE_SHIFTED, CASE_LONGER, CASE_FEWER_KEYS,
       CASE_NONFINITE, CASE_COUNT };

static const char *const case_names[CASE_COUNT] = {
    "trusted lists", "host write", "op write", "shifted view", "longer view", "fewer keys",
    "non-finite query"};

typedef struct {
    ela_tensor *q, *k, *v, *o;
    float *hq, *hk, *hv;
} fixture;

static void fixture_free(fixture *f) {
    ela_tensor_free(f->q);
    ela_tensor_free(f->k);
    ela_tensor_free(f->v);
    ela_tensor_free(f->o);
    free(f->hq);
    free(f->hk);
    free(f->hv);
}

/* Random q [1, HQ, D], k and v [HKV, N, D] (f32) and o on be; q non-finite when asked. */
static ela_status fixture_new(ela_backend *be, int ci, int nonfinite, fixture *f) {
    memset(f, 0, sizeof *f);
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci + 91000);
    const int64_t nq = HQ * D, nkv = (int64_t)HKV * N * D, ox[3] = {1, HQ, D};
    f->hq = malloc(nq * sizeof(float));
    f->hk = malloc((size_t)nkv * sizeof(float));
    f->hv = malloc((size_t)nkv * sizeof(float));
    if (!f->hq || !f->hk || !f->hv)
        return ELA_ERR_OOM;
    test_fill_normal(&rng, f->hq, nq, 1.5f);
    test_fill_normal(&rng, f->hk, nkv, 1.0f);
    test_fill_normal(&rng, f->hv, nkv, 1.0f);
    if (nonfinite) { /* NaN in one head, +inf and -inf in another */
        f->hq[3] = NAN;
        f->hq[D + 1] = INFINITY;
        f->hq[D + 2] = -INFINITY;
    }
    ela_status st = gpu_upload_qkv(be, 1, N, D, HQ, HKV, ELA_F32, ELA_F32, 0, f->hq, f->hk, f->hv,
                                   &f->q, &f->k, &f->v);
    if (st == ELA_OK)
        st = ela_tensor_new(be, ELA_F32, 3, ox, NULL, &f->o);
    return st;
}

/* A 1-D view of m entries of idx starting at entry `first`. */
static ela_status list_view(const ela_tensor *idx, int64_t first, int64_t m, ela_tensor **out) {
    return ela_tensor_view(idx, 1, &m, NULL, first * (int64_t)sizeof(int32_t), out);
}

/* Gather over entries [first, first + m) of idx with keys of k and v (or their first n keys). */
static ela_status gather(ela_backend *be, fixture *f, const ela_tensor *idx, int64_t first,
                         int64_t m, int64_t n) {
    ela_tensor *view = NULL, *k = NULL, *v = NULL;
    const int64_t ext[3] = {HKV, n, D}, str[3] = {(int64_t)N * D * 4, D * 4, 4};
    ela_status st = list_view(idx, first, m, &view);
    if (st == ELA_OK)
        st = ela_tensor_view(f->k, 3, ext, str, 0, &k);
    if (st == ELA_OK)
        st = ela_tensor_view(f->v, 3, ext, str, 0, &v);
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = n - 1;
    if (st == ELA_OK)
        st = ela_attn_gather(be, f->q, k, v, view, f->o, NULL, &p);
    ela_tensor_free(view);
    ela_tensor_free(k);
    ela_tensor_free(v);
    return st;
}

/* Whether entries [0, m) of the host list are distinct keys in [0, n). */
static int list_valid(const int32_t *list, int64_t m, int64_t n) {
    char *seen = calloc((size_t)n, 1);
    int ok = seen != NULL;
    for (int64_t i = 0; ok && i < m; i++) {
        ok = list[i] >= 0 && list[i] < n && !seen[list[i]];
        if (ok)
            seen[list[i]] = 1;
    }
    free(seen);
    return ok;
}

/* Requires the gather to refuse: st must be ELA_ERR_INVALID_ARG naming idx and `reason`. */
static void want_refused(gpu_cfg *cfg, int ci, ela_status st, const char *reason) {
    const char *msg = st == ELA_OK ? "" : ela_last_error();
    CHECKF(st == ELA_ERR_INVALID_ARG && strstr(msg, "idx") && strstr(msg, reason),
           "gather lists case %d [%s] on %s: wanted ELA_ERR_INVALID_ARG (%s), got %s (%s)", ci,
           case_names[ci], cfg->name, reason, ela_status_str(st), msg);
}

/* The trusted gather equals the gather over a host-written copy of the lists. */
static ela_status check_trusted(gpu_cfg *cfg, int ci, fixture *f, const ela_tensor *idx,
                                int64_t count) {
    int32_t *list = malloc((size_t)count * sizeof *list);
    float *o1 = malloc(HQ * D * sizeof *o1), *o2 = malloc(HQ * D * sizeof *o2);
    ela_tensor *copy = NULL, *view = NULL;
    ela_status st = list && o1 && o2 ? ELA_OK : ELA_ERR_OOM;
    if (st == ELA_OK)
        st = list_view(idx, 0, count, &view);
    if (st == ELA_OK)
        st = ela_tensor_read(view, list, (size_t)count * sizeof *list);
    CHECKF(st != ELA_OK || list_valid(list, count, N), "gather lists case %d on %s: decode_select "
           "wrote invalid lists", ci, cfg->name);
    if (st == ELA_OK)
        st = gather(cfg->be, f, idx, 0, count, N);
    if (st == ELA_OK)
        st = ela_tensor_read_f32(f->o, o1, HQ * D);
    if (st == ELA_OK)
        st = ela_tensor_new(cfg->be, ELA_I32, 1, &count, NULL, &copy);
    if (st == ELA_OK)
        st = ela_tensor_write(copy, list, (size_t)count * sizeof *list);
    if (st == ELA_OK)
        st = gather(cfg->be, f, copy, 0, count, N);
    if (st == ELA_OK)
        st = ela_tensor_read_f32(f->o, o2, HQ * D);
    CHECKF(st != ELA_OK || memcmp(o1, o2, HQ * D * sizeof *o1) == 0, "gather lists case %d on "
           "%s: the gather over decode_select's lists differs from one over their copy", ci,
           cfg->name);
    ela_tensor_free(copy);
    ela_tensor_free(view);
    free(list);
    free(o1);
    free(o2);
    return st;
}

/* token_select over a short prompt keeps every token: each of its HQ rows is 0..TSA_L-1, so the
 * HQ * TSA_L entries of idx, read as one list, repeat every key HQ times. */
static ela_status overwrite_by_token_select(ela_backend *be, ela_tensor *idx) {
    const int64_t qx[3] = {TSA_L, HQ, D}, kx[3] = {HKV, TSA_L, D}, ix[2] = {HQ, TSA_L};
    ela_tensor *q = NULL, *k = NULL, *rows = NULL;
    float *zeros = calloc((size_t)TSA_L * HQ * D, sizeof *zeros);
    ela_status st = zeros ? ela_tensor_new(be, ELA_F32, 3, qx, NULL, &q) : ELA_ERR_OOM;
    if (st == ELA_OK)
        st = ela_tensor_new(be, ELA_F32, 3, kx, NULL, &k);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(q, zeros, TSA_L * HQ * D);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(k, zeros, (int64_t)HKV * TSA_L * D);
    if (st == ELA_OK)
        st = ela_tensor_view(idx, 2, ix, NULL, 0, &rows);
    int64_t n_sel = 0;
    ela_tsa_params tp = ela_tsa_params_default();
    if (st == ELA_OK)
        st = ela_token_select(be, q, k, &tp, rows, &n_sel);
    if (st == ELA_OK && n_sel != TSA_L)
        st = ELA_ERR_INTERNAL;
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(rows);
    free(zeros);
    return st;
}

static void check_case(int ci) {
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        double t0 = test_now();
        fixture f;
        ela_tensor *idx = NULL;
        const int64_t slots = ci == CASE_OP_WRITE ? HQ * TSA_L : BUDGET + 1;
        const int64_t budget = ci == CASE_OP_WRITE ? HQ * TSA_L : BUDGET;
        ela_status st = fixture_new(cfg->be, ci, ci == CASE_NONFINITE, &f);
        if (st == ELA_OK)
            st = ela_tensor_new(cfg->be, ELA_I32, 1, &slots, NULL, &idx);
        if (st == ELA_OK && (ci == CASE_SHIFTED || ci == CASE_LONGER)) {
            /* Past the lists: key 1, a sink decode_select always lists at entry 1. */
            ela_tensor *last = NULL;
            const int32_t one = 1;
            if ((st = list_view(idx, BUDGET, 1, &last)) == ELA_OK)
                st = ela_tensor_write(last, &one, sizeof one);
            ela_tensor_free(last);
        }
        int64_t count = 0;
        ela_decode_select_params dp = ela_decode_select_params_default(budget);
        ela_attn_params p = ela_attn_params_default();
        if (st == ELA_OK) {
            st = ela_decode_select(cfg->be, f.q, f.k, &dp, &p, idx, &count);
            if (ci == CASE_NONFINITE && st != ELA_OK) { /* refusing them is fine too */
                printf("%s: decode_select refused non-finite q: %s\n", cfg->name,
                       ela_last_error());
                st = ELA_OK;
                count = 0;
            }
        }
        CHECKF(st == ELA_OK, "gather lists case %d [%s] on %s: setup: %s (%s)", ci,
               case_names[ci], cfg->name, ela_status_str(st), ela_last_error());
        if (st == ELA_OK && count > 0)
            CHECKF(count == budget, "gather lists case %d on %s: count %lld, expected %lld", ci,
                   cfg->name, (long long)count, (long long)budget);
        if (st == ELA_OK && count > 0) {
            switch (ci) {
            case CASE_TRUSTED:
            case CASE_NONFINITE:
                st = check_trusted(cfg, ci, &f, idx, count);
                CHECKF(st == ELA_OK, "gather lists case %d [%s] on %s: %s (%s)", ci,
                       case_names[ci], cfg->name, ela_status_str(st), ela_last_error());
                /* A prefix of valid lists is valid. */
                if (st == ELA_OK)
                    CHECK_STATUS(gather(cfg->be, &f, idx, 0, count / 2, N), ELA_OK);
                break;
            case CASE_HOST_WRITE: { /* entry 5 := entry 1 (key 1) */
                ela_tensor *e5 = NULL;
                const int32_t one = 1;
                if ((st = list_view(idx, 5, 1, &e5)) == ELA_OK)
                    st = ela_tensor_write(e5, &one, sizeof one);
                ela_tensor_free(e5);
                if (st == ELA_OK)
                    want_refused(cfg, ci, gather(cfg->be, &f, idx, 0, count, N), "twice");
                break;
            }
            case CASE_OP_WRITE:
                if ((st = overwrite_by_token_select(cfg->be, idx)) == ELA_OK)
                    want_refused(cfg, ci, gather(cfg->be, &f, idx, 0, count, N), "twice");
                break;
            case CASE_SHIFTED: /* entries 1..BUDGET: key 1 at both ends */
                want_refused(cfg, ci, gather(cfg->be, &f, idx, 1, count, N), "twice");
                break;
            case CASE_LONGER: /* entries 0..BUDGET */
                want_refused(cfg, ci, gather(cfg->be, &f, idx, 0, count + 1, N), "twice");
                break;
            case CASE_FEWER_KEYS: /* the recent keys lie past N / 2 */
                want_refused(cfg, ci, gather(cfg->be, &f, idx, 0, count, N / 2), "outside");
                break;
            default:
                break;
            }
            CHECKF(st == ELA_OK, "gather lists case %d [%s] on %s: %s (%s)", ci, case_names[ci],
                   cfg->name, ela_status_str(st), ela_last_error());
        }
        if (st == ELA_OK)
            st = ela_backend_synchronize(cfg->be);
        cfg->seconds += test_now() - t0;
        cfg->runs++;
        ela_tensor_free(idx);
        fixture_free(&f);
    }
}

int main(void) {
    test_seed();
    const gpu_op_cases ops[] = {{"gather lists", CASE_COUNT, check_case}};
    return gpu_run_ops("test_gather_lists", ops, 1);
}

/* Unit test of ela_attn_gather (DESIGN.md 4.8) on the CPU backend against the float64
 * reference (tests/ref/attn_gather_ref.c): shared and per-KV-head index lists in any order,
 * causal offsets (listed keys past a row are masked), decode with lists long enough to be
 * split over threads, empty lists, every dtype, d 64/128/80, GQA 1/4/8, each SIMD level and
 * 1/3/default threads; the identity list equals ela_attn_dense; argument errors and OOM. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_gather_ref.h"
#include "test_common.h"

/* As in test_attn_dense.c: the reference sees the dtype-rounded inputs, so only f32
 * accumulation and output rounding remain. */
#define TOL_F32 1e-5
#define TOL_16_IN 2e-3
#define TOL_16_OUT 1e-2

typedef struct {
    int64_t L, n, m, d;
    int hq, hkv, causal, per_head;
    int64_t q_pos0;
    ela_dtype kv, out;
} gcase;

/* m distinct keys of [0, n) in random order (Fisher-Yates prefix). */
static void random_list(test_rng *rng, int32_t *out, int64_t m, int64_t n, int32_t *perm) {
    for (int64_t i = 0; i < n; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = 0; i < m; i++) {
        int64_t j = i + (int64_t)(test_rng_u64(rng) % (uint64_t)(n - i));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        out[i] = perm[i];
    }
}

static void run_case(ela_backend *be, const char *cfg, const gcase *c, int ci, int identity) {
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci);
    int lists = c->per_head ? c->hkv : 1;
    int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    float *q = malloc((size_t)nq * sizeof *q), *k = malloc((size_t)nkv * sizeof *k);
    float *v = malloc((size_t)nkv * sizeof *v), *o = malloc((size_t)nq * sizeof *o);
    float *lse = malloc((size_t)(c->L * c->hq) * sizeof *lse);
    int32_t *idx = malloc((size_t)(lists * c->m + 1) * sizeof *idx);
    int32_t *perm = malloc((size_t)c->n * sizeof *perm);
    double *ro = malloc((size_t)nq * sizeof *ro), *rl = malloc((size_t)(c->L * c->hq) * sizeof *rl);
    if (!q || !k || !v || !o || !lse || !idx || !perm || !ro || !rl) {
        CHECK(!"out of memory in the test");
        goto done;
    }
    test_fill_normal(&rng, q, nq, 1.0f);
    test_fill_normal(&rng, k, nkv, 1.0f);
    test_fill_normal(&rng, v, nkv, 1.0f);
    /* q is of the K/V dtype, or f32 beside a q8_0 KV cache (q8_0 is for k and v only) */
    ela_dtype qdt = c->kv == ELA_Q8_0 ? ELA_F32 : c->kv;
    test_round_through(q, nq, qdt);
    test_round_through(k, nkv, c->kv);
    test_round_through(v, nkv, c->kv);
    for (int l = 0; l < lists; l++) {
        if (identity)
            for (int64_t i = 0; i < c->m; i++)
                idx[l * c->m + i] = (int32_t)i;
        else
            random_list(&rng, idx + l * c->m, c->m, c->n, perm);
    }
    ref_attn_dense_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->causal, c->q_pos0, 0.0};
    double *dq = test_to_double(q, nq), *dk = test_to_double(k, nkv), *dv = test_to_double(v, nkv);
    CHECK(dq && dk && dv && ref_attn_gather(&s, idx, lists, c->m, dq, dk, dv, ro, rl) == 0);
    free(dq);
    free(dk);
    free(dv);

    int64_t qs[3] = {c->L, c->hq, c->d}, ks[3] = {c->hkv, c->n, c->d}, ls[2] = {c->L, c->hq};
    int64_t is[2] = {lists, c->m};
    ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL, *tl = NULL, *ti = NULL;
    ela_status st;
    if ((st = ela_tensor_new(be, qdt, 3, qs, NULL, &tq)) == ELA_OK &&
        (st = ela_tensor_new(be, c->kv, 3, ks, NULL, &tk)) == ELA_OK &&
        (st = ela_tensor_new(be, c->kv, 3, ks, NULL, &tv)) == ELA_OK &&
        (st = ela_tensor_new(be, c->out, 3, qs, NULL, &to)) == ELA_OK &&
        (st = ela_tensor_new(be, ELA_F32, 2, ls, NULL, &tl)) == ELA_OK &&
        (st = c->per_head ? ela_tensor_new(be, ELA_I32, 2, is, NULL, &ti)
                          : ela_tensor_new(be, ELA_I32, 1, &is[1], NULL, &ti)) == ELA_OK &&
        (st = ela_tensor_write_f32(tq, q, nq)) == ELA_OK &&
        (st = ela_tensor_write_f32(tk, k, nkv)) == ELA_OK &&
        (st = ela_tensor_write_f32(tv, v, nkv)) == ELA_OK &&
        (st = ela_tensor_write(ti, idx, (size_t)(lists * c->m) * sizeof *idx)) == ELA_OK) {
        ela_attn_params p = ela_attn_params_default();
        p.causal = c->causal;
        p.q_pos0 = c->q_pos0;
        st = ela_attn_gather(be, tq, tk, tv, ti, to, tl, &p);
        if (st == ELA_OK)
            st = ela_tensor_read_f32(to, o, nq);
        if (st == ELA_OK)
            st = ela_tensor_read_f32(tl, lse, c->L * c->hq);
        if (st == ELA_OK && identity && c->m == c->n) { /* the identity list is dense attention */
            float *od = malloc((size_t)nq * sizeof *od);
            ela_tensor *tod = NULL;
            CHECK_STATUS(ela_tensor_new(be, c->out, 3, qs, NULL, &tod), ELA_OK);
            CHECK_STATUS(ela_attn_dense(be, tq, tk, tv, tod, NULL, &p), ELA_OK);
            if (od && tod && ela_tensor_read_f32(tod, od, nq) == ELA_OK) {
                double *dod = test_to_double(od, nq);
                double err = dod ? test_rel_l2(dod, o, nq) : INFINITY;
                CHECKF(err <= 1e-6, "case %d: identity list differs from dense by %.3g", ci, err);
                free(dod);
            }
            free(od);
            ela_tensor_free(tod);
        }
    }
    CHECKF(st == ELA_OK, "case %d [%s]: %s (%s)", ci, cfg, ela_status_str(st), ela_last_error());
    if (st == ELA_OK) {
        double tol = c->out != ELA_F32 ? TOL_16_OUT : c->kv != ELA_F32 ? TOL_16_IN : TOL_F32;
        double err = test_rel_l2(ro, o, nq);
        CHECKF(err <= tol, "case %d [%s] L=%lld n=%lld m=%lld d=%lld hq=%d hkv=%d causal=%d "
               "q_pos0=%lld per_head=%d %s/%s: o error %.3g > %.3g", ci, cfg, (long long)c->L,
               (long long)c->n, (long long)c->m, (long long)c->d, c->hq, c->hkv, c->causal,
               (long long)c->q_pos0, c->per_head, ela_dtype_name(c->kv), ela_dtype_name(c->out),
               err, tol);
        int lse_ok = 1;
        for (int64_t i = 0; i < c->L * c->hq; i++) {
            if (isinf(rl[i]))
                lse_ok &= isinf(lse[i]) && lse[i] < 0;
            else
                lse_ok &= fabs(lse[i] - rl[i]) <= 1e-3 * (1.0 + fabs(rl[i]));
        }
        CHECKF(lse_ok, "case %d [%s]: lse differs from the reference", ci, cfg);
    }
    ela_tensor_free(tq);
    ela_tensor_free(tk);
    ela_tensor_free(tv);
    ela_tensor_free(to);
    ela_tensor_free(tl);
    ela_tensor_free(ti);
done:
    free(q), free(k), free(v), free(o), free(lse), free(idx), free(perm), free(ro), free(rl);
}

static const gcase cases[] = {
    /* L, n, m, d, hq, hkv, causal, per_head, q_pos0, kv, out */
    {1, 5000, 2048, 128, 32, 8, 1, 0, 4999, ELA_F16, ELA_F32},  /* LessIsMore decode, split */
    {1, 3000, 700, 64, 8, 2, 1, 1, 2999, ELA_BF16, ELA_F32},    /* per-KV-head lists */
    {1, 777, 777, 80, 4, 4, 1, 0, 776, ELA_F32, ELA_F32},       /* every key, odd d */
    {1, 900, 300, 128, 8, 1, 1, 0, 450, ELA_F32, ELA_F32},      /* listed keys past the row */
    {3, 1000, 129, 64, 8, 8, 1, 1, 600, ELA_F16, ELA_F16},      /* few rows, causal masks */
    {70, 500, 333, 64, 16, 2, 1, 0, 430, ELA_F32, ELA_F32},     /* many rows: tiled path */
    {33, 400, 64, 128, 4, 1, 0, 1, 0, ELA_BF16, ELA_BF16},      /* not causal */
    {2, 300, 0, 64, 4, 2, 1, 0, 299, ELA_F32, ELA_F32},         /* empty list: o 0, lse -inf */
    {5, 40, 7, 64, 4, 2, 1, 0, 3, ELA_F32, ELA_F32},            /* rows that see no key */
    /* q8_0 K/V (quantized KV cache): decode split, per-KV-head lists, tiled path, f16 out */
    {1, 5000, 2048, 128, 32, 8, 1, 0, 4999, ELA_Q8_0, ELA_F32},
    {1, 3000, 700, 64, 8, 2, 1, 1, 2999, ELA_Q8_0, ELA_F32},
    {70, 500, 333, 64, 16, 2, 1, 0, 430, ELA_Q8_0, ELA_F32},
    {3, 1000, 129, 32, 8, 8, 1, 1, 600, ELA_Q8_0, ELA_F16},
};

static void test_errors(ela_backend *be) {
    int64_t qs[3] = {1, 4, 64}, ks[3] = {2, 50, 64}, m = 4, m2[2] = {3, 4};
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *idx = NULL, *idx2 = NULL, *idxf = NULL;
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qs, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ks, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ks, NULL, &v), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qs, NULL, &o), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, &m, NULL, &idx), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 2, m2, NULL, &idx2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 1, &m, NULL, &idxf), ELA_OK);
    if (!q || !k || !v || !o || !idx || !idx2 || !idxf)
        goto done;
    float *zeros = calloc(6400, sizeof *zeros);
    CHECK(zeros && ela_tensor_write_f32(q, zeros, 256) == ELA_OK &&
          ela_tensor_write_f32(k, zeros, 6400) == ELA_OK &&
          ela_tensor_write_f32(v, zeros, 6400) == ELA_OK);
    free(zeros);
    int32_t good[4] = {0, 10, 49, 3}, out_of_range[4] = {0, 50, 1, 2}, dup[4] = {1, 2, 1, 3};
    int32_t neg[4] = {0, -1, 1, 2};
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = 49;
    CHECK_STATUS(ela_tensor_write(idx, good, sizeof good), ELA_OK);
    CHECK_STATUS(ela_attn_gather(be, q, k, v, idx, o, NULL, &p), ELA_OK);
    CHECK_STATUS(ela_attn_gather(be, q, k, v, NULL, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "idx"));
    CHECK_STATUS(ela_attn_gather(be, q, k, v, idxf, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "idx") && test_has_word(ela_last_error(), "dtype"));
    CHECK_STATUS(ela_attn_gather(be, q, k, v, idx2, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "idx") && test_has_text(ela_last_error(), "[3, 4]"));
    CHECK_STATUS(ela_tensor_write(idx, out_of_range, sizeof good), ELA_OK);
    CHECK_STATUS(ela_attn_gather(be, q, k, v, idx, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "outside") && test_has_text(ela_last_error(), "50"));
    CHECK_STATUS(ela_tensor_write(idx, neg, sizeof good), ELA_OK);
    CHECK_STATUS(ela_attn_gather(be, q, k, v, idx, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tensor_write(idx, dup, sizeof good), ELA_OK);
    CHECK_STATUS(ela_attn_gather(be, q, k, v, idx, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "twice"));
    CHECK_STATUS(ela_attn_gather(be, q, k, NULL, idx, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "v"));
    /* OOM: every allocation the call makes fails in turn, then it succeeds */
    CHECK_STATUS(ela_tensor_write(idx, good, sizeof good), ELA_OK);
    int failures = 0;
    for (int64_t i = 1; i < 50; i++) {
        ela_debug_fail_alloc(i);
        ela_status st = ela_attn_gather(be, q, k, v, idx, o, NULL, &p);
        ela_debug_fail_alloc(0);
        if (st == ELA_OK)
            break;
        CHECK_STATUS(st, ELA_ERR_OOM);
        failures++;
    }
    CHECK(failures >= 1);
done:
    ela_tensor_free(q), ela_tensor_free(k), ela_tensor_free(v), ela_tensor_free(o);
    ela_tensor_free(idx), ela_tensor_free(idx2), ela_tensor_free(idxf);
}

int main(void) {
    test_seed();
    static const char *const levels[] = {"scalar", "avx2", "avx512"};
    static const char *const threads[] = {NULL, "1", "3"};
    int n_cases = (int)(sizeof cases / sizeof cases[0]);
    for (int l = 0; l < 3; l++) {
        for (int t = 0; t < 3; t++) {
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", threads[t]);
            ela_backend *be = NULL;
            if (ela_backend_open("cpu", &be) != ELA_OK) {
                if (t == 0)
                    printf("level %s: not available here, skipped\n", levels[l]);
                break;
            }
            char cfg[64];
            snprintf(cfg, sizeof cfg, "%s, threads %s", levels[l], threads[t] ? threads[t] : "all");
            for (int ci = 0; ci < n_cases; ci++)
                run_case(be, cfg, &cases[ci], ci, 0);
            gcase id = {4, 600, 600, 64, 8, 2, 1, 0, 596, ELA_F32, ELA_F32};
            run_case(be, cfg, &id, n_cases, 1);
            gcase id8 = {1, 600, 600, 128, 8, 2, 1, 0, 599, ELA_Q8_0, ELA_F32};
            run_case(be, cfg, &id8, n_cases + 1, 1);
            if (l == 0 && t == 0)
                test_errors(be);
            ela_backend_close(be);
            printf("%s: %d cases\n", cfg, n_cases + 2);
        }
    }
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
    return test_summary("test_attn_gather");
}

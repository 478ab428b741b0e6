/* Unit test of the policy layer (core/policy): parsing and formatting of policy strings
 * (defaults, every option, bad strings with messages that quote the bad part), and running
 * each policy on the CPU backend in settings where it must equal dense attention exactly
 * (elastic with every head full, streaming whose window covers every key, tsa below its
 * minimum length, lessismore with a budget >= n) or must skip work (sparsity > 0 with a small
 * error on structured inputs); tsa+xattn against the float64 references composed by hand
 * (token_select -> gather -> xattn_estimate -> attn_blocks -> scatter). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_blocks_ref.h"
#include "ref/token_select_ref.h"
#include "ref/xattn_estimate_ref.h"
#include "test_common.h"

#define CHECK_PARSE_FAIL(fn, text, quote)                                                      \
    do {                                                                                       \
        CHECK_STATUS(fn(text, &out), ELA_ERR_INVALID_ARG);                                     \
        CHECKF(test_has_text(ela_last_error(), quote), "message \"%s\" does not quote '%s'",   \
               ela_last_error(), quote);                                                       \
    } while (0)

static void test_prefill_parse(void) {
    ela_prefill_policy out, back;
    CHECK_STATUS(ela_prefill_policy_parse("dense", &out), ELA_OK);
    CHECK(out.kind == ELA_PREFILL_DENSE);
    CHECK_STATUS(ela_prefill_policy_parse("elastic:fa-xa,tau=0.9,sink=128,local=2048", &out),
                 ELA_ERR_INVALID_ARG); /* fa-xa has no streaming heads: sink does not apply */
    CHECK(test_has_text(ela_last_error(), "sink"));
    CHECK_STATUS(ela_prefill_policy_parse("elastic:fa-ssa,sink=256,local=1024,full=0.25", &out),
                 ELA_OK);
    CHECK(out.kind == ELA_PREFILL_ELASTIC && out.full_mode == ELA_HEAD_DENSE &&
          out.sparse_mode == ELA_HEAD_STREAMING && out.sink == 256 && out.local == 1024 &&
          fabsf(out.full_fraction - 0.25f) < 1e-7f);
    CHECK_STATUS(ela_prefill_policy_parse("elastic:xa-ssa,tau=0.8,stride=8", &out), ELA_OK);
    CHECK(out.full_mode == ELA_HEAD_MASK && out.sparse_mode == ELA_HEAD_STREAMING &&
          out.xattn.stride == 8 && fabsf(out.xattn.threshold - 0.8f) < 1e-7f &&
          out.sink == 128 && out.local == 2048);
    CHECK_STATUS(ela_prefill_policy_parse("xattn", &out), ELA_OK);
    CHECK(out.xattn.stride == 16 && fabsf(out.xattn.threshold - 0.9f) < 1e-7f);
    CHECK_STATUS(ela_prefill_policy_parse("tsa,coverage=0.01,window=64,pool=5,min=512", &out),
                 ELA_OK);
    CHECK(out.kind == ELA_PREFILL_TSA && fabsf(out.tsa.coverage - 0.01f) < 1e-7f &&
          out.tsa.window == 64 && out.tsa.pool == 5 && out.tsa.min_keep == 512);
    CHECK_STATUS(ela_prefill_policy_parse("tsa", &out), ELA_OK);
    CHECK(out.tsa.window == 128 && out.tsa.pool == 7 && out.tsa.min_keep == 1024 &&
          fabsf(out.tsa.coverage - 0.005f) < 1e-7f);
    /* format -> parse is the identity, for every name */
    static const char *const all[] = {"dense", "xattn,tau=0.7", "streaming,sink=0,local=4096",
                                      "elastic:fa-xa,full=1", "elastic:fa-ssa",
                                      "elastic:xa-ssa,stride=32", "tsa,pool=9", "tsa+xattn",
                                      "tsa,layers=4-7+9", "xattn,layers=0+2-3+255"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char buf[256];
        CHECK_STATUS(ela_prefill_policy_parse(all[i], &out), ELA_OK);
        int len = ela_prefill_policy_format(&out, buf, sizeof buf);
        CHECK(len > 0 && (size_t)len < sizeof buf);
        CHECK_STATUS(ela_prefill_policy_parse(buf, &back), ELA_OK);
        /* The canonical form spells every field; compared as text because struct padding
         * (copied by the defaults' struct assignments) is unspecified. */
        char again[256];
        ela_prefill_policy_format(&back, again, sizeof again);
        CHECKF(strcmp(buf, again) == 0 && out.kind == back.kind &&
                   out.full_mode == back.full_mode && out.sparse_mode == back.sparse_mode,
               "'%s' -> '%s' parses differently ('%s')", all[i], buf, again);
    }
    /* Layer schedules: given layers, the tsa default of the second half, all otherwise. */
    CHECK_STATUS(ela_prefill_policy_parse("tsa,layers=1-2+5", &out), ELA_OK);
    int got[8], want_given[8] = {0, 1, 1, 0, 0, 1, 0, 0}, want_tsa[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    for (int l = 0; l < 8; l++)
        got[l] = ela_prefill_layer_is_sparse(&out, l, 8);
    CHECK(memcmp(got, want_given, sizeof got) == 0 && !ela_prefill_layer_is_sparse(&out, 5, 5));
    CHECK_STATUS(ela_prefill_policy_parse("tsa", &out), ELA_OK);
    for (int l = 0; l < 8; l++)
        got[l] = ela_prefill_layer_is_sparse(&out, l, 8);
    CHECK(memcmp(got, want_tsa, sizeof got) == 0);
    CHECK_STATUS(ela_prefill_policy_parse("xattn", &out), ELA_OK);
    CHECK(ela_prefill_layer_is_sparse(&out, 0, 8) && ela_prefill_layer_is_sparse(&out, 7, 8) &&
          !ela_prefill_layer_is_sparse(&out, 8, 8) && !ela_prefill_layer_is_sparse(NULL, 0, 8));
    CHECK_STATUS(ela_prefill_policy_parse("dense", &out), ELA_OK);
    CHECK(!ela_prefill_layer_is_sparse(&out, 3, 8));
    /* A set too long to spell in a policy string is cut, not overflowed (ASan watches). */
    ela_prefill_policy wide;
    CHECK_STATUS(ela_prefill_policy_parse("tsa", &wide), ELA_OK);
    wide.layers_given = 1;
    for (int l = 0; l < ELA_MAX_POLICY_LAYERS; l += 2)
        wide.layers.bits[l / 64] |= UINT64_C(1) << (l % 64);
    char wide_text[512];
    int wide_len = ela_prefill_policy_format(&wide, wide_text, sizeof wide_text);
    CHECK(wide_len > 0 && (size_t)wide_len < sizeof wide_text &&
          test_has_text(wide_text, "layers=0+2+4"));
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "tsa,layers=3-1", "layers");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "tsa,layers=256", "layers");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "tsa,layers=1++2", "layers");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "tsa,layers=", "layers");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "dense,layers=1", "layers");
    out.kind = ELA_PREFILL_DENSE;
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "densse", "densse");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "xattn,tau=1.5", "tau");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "xattn,stride=7", "stride");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "xattn,tau", "tau");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "xattn,", "empty");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "streaming,local=0", "local");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "streaming,local=12x", "local");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "tsa,pool=4", "pool");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "dense,tau=0.9", "tau");
    CHECK_PARSE_FAIL(ela_prefill_policy_parse, "elastic:fa-fa", "elastic:fa-fa");
    CHECK(out.kind == ELA_PREFILL_DENSE); /* untouched on failure */
    CHECK_STATUS(ela_prefill_policy_parse(NULL, &out), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_prefill_policy_parse("dense", NULL), ELA_ERR_INVALID_ARG);
}

static void test_decode_parse(void) {
    ela_decode_policy out, back;
    CHECK_STATUS(ela_decode_policy_parse("lessismore:2048", &out), ELA_OK);
    CHECK(out.kind == ELA_DECODE_LESSISMORE && out.select.budget == 2048 &&
          fabsf(out.select.recent - 0.25f) < 1e-7f && out.select.sinks == 4);
    CHECK_STATUS(ela_decode_policy_parse("lessismore:1000,recent=0.5,sinks=0", &out), ELA_OK);
    CHECK(out.select.budget == 1000 && out.select.sinks == 0 &&
          fabsf(out.select.recent - 0.5f) < 1e-7f);
    CHECK_STATUS(ela_decode_policy_parse("nsa,block=64,top=8", &out), ELA_OK);
    CHECK(out.kind == ELA_DECODE_NSA && out.nsa.block == 64 && out.nsa.top == 8);
    static const char *const all[] = {"dense", "lessismore:4096,recent=0.3", "nsa",
                                      "streaming,sink=4,local=1024"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char buf[256];
        CHECK_STATUS(ela_decode_policy_parse(all[i], &out), ELA_OK);
        ela_decode_policy_format(&out, buf, sizeof buf);
        CHECK_STATUS(ela_decode_policy_parse(buf, &back), ELA_OK);
        char again[256];
        ela_decode_policy_format(&back, again, sizeof again);
        CHECKF(strcmp(buf, again) == 0 && out.kind == back.kind, "'%s' -> '%s' parses "
               "differently ('%s')", all[i], buf, again);
    }
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "lessismore", "budget");
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "lessismore:0", "budget");
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "lessismore:2048,top=3", "top");
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "quest:64", "quest");
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "dense:5", "dense");
    /* roles of a 32-layer lessismore schedule */
    CHECK_STATUS(ela_decode_policy_parse("lessismore:64", &out), ELA_OK);
    int n_select = 0;
    for (int l = 0; l < 32; l++)
        n_select += ela_decode_layer_role_of(&out, l, 32) == ELA_DECODE_LAYER_SELECT;
    CHECK(ela_decode_layer_role_of(&out, 0, 32) == ELA_DECODE_LAYER_DENSE &&
          ela_decode_layer_role_of(&out, 2, 32) == ELA_DECODE_LAYER_SELECT &&
          ela_decode_layer_role_of(&out, 12, 32) == ELA_DECODE_LAYER_SELECT &&
          ela_decode_layer_role_of(&out, 3, 32) == ELA_DECODE_LAYER_SPARSE && n_select == 2);
    /* select=: dense before the first selection layer. */
    CHECK_STATUS(ela_decode_policy_parse("lessismore:256,select=5+3", &out), ELA_OK);
    static const ela_decode_layer_role want[8] = {
        ELA_DECODE_LAYER_DENSE,  ELA_DECODE_LAYER_DENSE,  ELA_DECODE_LAYER_DENSE,
        ELA_DECODE_LAYER_SELECT, ELA_DECODE_LAYER_SPARSE, ELA_DECODE_LAYER_SELECT,
        ELA_DECODE_LAYER_SPARSE, ELA_DECODE_LAYER_SPARSE};
    int bad_roles = 0;
    for (int l = 0; l < 8; l++)
        bad_roles += ela_decode_layer_role_of(&out, l, 8) != want[l];
    CHECK(bad_roles == 0 && out.n_select_layers == 2 && out.select_layers[0] == 3);
    char buf[256], again[256];
    ela_decode_policy_format(&out, buf, sizeof buf);
    CHECK(test_has_text(buf, ",select=3+5"));
    CHECK_STATUS(ela_decode_policy_parse(buf, &back), ELA_OK);
    ela_decode_policy_format(&back, again, sizeof again);
    CHECK(strcmp(buf, again) == 0);
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "lessismore:256,select=0-8", "select");
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "lessismore:256,select=x", "select");
    CHECK_PARSE_FAIL(ela_decode_policy_parse, "dense,select=2", "select");
}

/* ---- running policies ------------------------------------------------------------------ */
typedef struct {
    ela_tensor *q, *k, *v, *o_ref, *o;
    int64_t L, n, d;
    int hq, hkv;
} problem;

static void problem_free(problem *p) {
    ela_tensor_free(p->q);
    ela_tensor_free(p->k);
    ela_tensor_free(p->v);
    ela_tensor_free(p->o_ref);
    ela_tensor_free(p->o);
}

/* Random q, k, v with a strong recency bias: component 0 adds 0.04 * j * 8 / sqrt(d) to the
 * logit of key j for every query, so each row's mass sits on its last ~100 keys and the
 * sparse policies, which keep recent keys, lose little. */
static int problem_make(ela_backend *be, problem *p, int64_t L, int64_t n, int hq, int hkv,
                        int64_t d, int stream) {
    memset(p, 0, sizeof *p);
    p->L = L, p->n = n, p->d = d, p->hq = hq, p->hkv = hkv;
    int64_t qs[3] = {L, hq, d}, ks[3] = {hkv, n, d};
    test_rng rng;
    test_rng_init(&rng, (uint64_t)stream);
    float *hq_ = malloc((size_t)(L * hq * d) * sizeof(float));
    float *hk = malloc((size_t)(n * hkv * d) * sizeof(float));
    float *hv = malloc((size_t)(n * hkv * d) * sizeof(float));
    int ok = hq_ && hk && hv;
    if (ok) {
        test_fill_normal(&rng, hq_, L * hq * d, 1.0f);
        test_fill_normal(&rng, hk, n * hkv * d, 1.0f);
        test_fill_normal(&rng, hv, n * hkv * d, 1.0f);
        for (int64_t i = 0; i < L; i++)
            for (int h = 0; h < hq; h++)
                hq_[(i * hq + h) * d] = 8.0f;
        for (int g = 0; g < hkv; g++)
            for (int64_t j = 0; j < n; j++)
                hk[(g * n + j) * d] = 0.04f * (float)j * sqrtf((float)d) / 8.0f;
        ok = ela_tensor_new(be, ELA_F32, 3, qs, NULL, &p->q) == ELA_OK &&
             ela_tensor_new(be, ELA_F32, 3, ks, NULL, &p->k) == ELA_OK &&
             ela_tensor_new(be, ELA_F32, 3, ks, NULL, &p->v) == ELA_OK &&
             ela_tensor_new(be, ELA_F32, 3, qs, NULL, &p->o_ref) == ELA_OK &&
             ela_tensor_new(be, ELA_F32, 3, qs, NULL, &p->o) == ELA_OK &&
             ela_tensor_write_f32(p->q, hq_, L * hq * d) == ELA_OK &&
             ela_tensor_write_f32(p->k, hk, n * hkv * d) == ELA_OK &&
             ela_tensor_write_f32(p->v, hv, n * hkv * d) == ELA_OK;
    }
    free(hq_);
    free(hk);
    free(hv);
    CHECK(ok);
    return ok ? 0 : -1;
}

static double rel_error(const problem *p) {
    int64_t count = p->L * p->hq * p->d;
    float *a = malloc((size_t)count * sizeof(float)), *b = malloc((size_t)count * sizeof(float));
    double err = INFINITY;
    if (a && b && ela_tensor_read_f32(p->o_ref, a, count) == ELA_OK &&
        ela_tensor_read_f32(p->o, b, count) == ELA_OK) {
        double *ref = malloc((size_t)count * sizeof(double));
        if (ref) {
            for (int64_t i = 0; i < count; i++)
                ref[i] = a[i];
            err = test_rel_l2(ref, b, count);
            free(ref);
        }
    }
    free(a);
    free(b);
    return err;
}

static void check_prefill(ela_backend *be, const char *text, int64_t L, int hq, int hkv,
                          double max_err, double min_sparsity, double max_sparsity) {
    problem p;
    if (problem_make(be, &p, L, L, hq, hkv, 64, (int)L * 7 + hq) != 0) {
        problem_free(&p);
        return;
    }
    ela_prefill_policy pol;
    ela_prefill_report rep;
    CHECK_STATUS(ela_prefill_policy_parse(text, &pol), ELA_OK);
    CHECK_STATUS(ela_attn_dense(be, p.q, p.k, p.v, p.o_ref, NULL, NULL), ELA_OK);
    CHECK_STATUS(ela_prefill_attention(be, &pol, p.q, p.k, p.v, p.o, NULL, NULL, NULL, &rep),
                 ELA_OK);
    double err = rel_error(&p);
    CHECKF(err <= max_err, "%s L=%lld: error %.3g > %.3g", text, (long long)L, err, max_err);
    CHECKF(rep.sparsity >= min_sparsity && rep.sparsity <= max_sparsity,
           "%s L=%lld: sparsity %.4f not in [%.4f, %.4f]", text, (long long)L, rep.sparsity,
           min_sparsity, max_sparsity);
    CHECK(rep.hq == hq && rep.select_ms >= 0.0 && rep.attend_ms >= 0.0);
    printf("prefill %-34s L=%5lld hq=%d hkv=%d: error %.2e sparsity %.3f full %d\n", text,
           (long long)L, hq, hkv, err, rep.sparsity, rep.full_kv_heads);
    problem_free(&p);
}

static void test_prefill_run(ela_backend *be) {
    /* exact: every head dense, or windows that cover everything */
    check_prefill(be, "dense", 300, 4, 2, 1e-6, 0.0, 0.0);
    check_prefill(be, "elastic:fa-xa,full=1", 700, 8, 2, 1e-5, 0.0, 0.0);
    check_prefill(be, "elastic:fa-ssa,full=0,sink=128,local=1024", 700, 8, 2, 1e-5, 0.0, 0.0);
    check_prefill(be, "streaming,sink=0,local=1024", 1000, 4, 4, 1e-5, 0.0, 0.0);
    check_prefill(be, "tsa", 1100, 4, 1, 1e-5, 0.0, 0.0); /* L <= 1152: dense */
    /* sparse: work is skipped, the error stays small on recency-biased inputs */
    check_prefill(be, "streaming,sink=128,local=256", 1500, 4, 2, 0.5, 0.5, 0.9);
    check_prefill(be, "elastic:fa-ssa,full=0.5,sink=128,local=256", 1500, 8, 4, 0.5, 0.25, 0.45);
    check_prefill(be, "xattn", 1500, 4, 2, 0.5, 0.01, 1.0);
    check_prefill(be, "elastic:xa-ssa,local=256", 1500, 8, 2, 0.5, 0.2, 1.0);
    /* tsa zeroes the rows a head drops, so its error is the dropped rows' share */
    check_prefill(be, "tsa,coverage=0.05,min=256,window=64", 1500, 4, 2, 1.0, 0.01, 1.0);
    check_prefill(be, "tsa+xattn,coverage=0.05,min=256,window=64", 1500, 4, 2, 1.0, 0.02, 1.0);
    check_prefill(be, "tsa+xattn", 1100, 4, 2, 0.5, 0.01, 1.0); /* short: xattn alone */
    /* errors */
    problem p;
    if (problem_make(be, &p, 200, 200, 2, 1, 64, 3) == 0) {
        ela_prefill_policy pol;
        ela_prefill_policy_parse("xattn", &pol);
        ela_attn_params ap = ela_attn_params_default();
        ap.causal = 0;
        CHECK_STATUS(ela_prefill_attention(be, &pol, p.q, p.k, p.v, p.o, NULL, NULL, &ap, NULL),
                     ELA_ERR_INVALID_ARG);
        CHECK(test_has_word(ela_last_error(), "causal"));
        CHECK_STATUS(ela_prefill_attention(be, NULL, p.q, p.k, p.v, p.o, NULL, NULL, NULL, NULL),
                     ELA_ERR_INVALID_ARG);
        CHECK(test_has_word(ela_last_error(), "policy"));
        ela_prefill_policy_parse("tsa", &pol);
        ap = ela_attn_params_default();
        ap.q_pos0 = 128;
        CHECK_STATUS(ela_prefill_attention(be, &pol, p.q, p.k, p.v, p.o, NULL, NULL, &ap, NULL),
                     ELA_ERR_INVALID_ARG);
    }
    problem_free(&p);
}

/* tsa+xattn on random inputs against the references composed by hand: Token Sparse Attention's
 * selection, each head's rows gathered (its own KV head), XAttention's masks on the compressed
 * sequences, block-sparse attention, zeros for dropped rows. Inputs whose selections are within
 * a near-tie margin are drawn again. */
static int tsa_xattn_reference(const double *q, const double *k, const double *v, int64_t L,
                               int hq, int hkv, int64_t d, double *o, int64_t *n_sel,
                               int64_t *kept_blocks) {
    int32_t *idx = malloc((size_t)(hq * L) * sizeof *idx);
    int64_t nq = L * hq * d;
    double *qc = malloc((size_t)nq * sizeof *qc), *kc = malloc((size_t)nq * sizeof *kc);
    double *vc = malloc((size_t)nq * sizeof *vc), *oc = malloc((size_t)nq * sizeof *oc);
    uint8_t *masks = malloc((size_t)hq * (size_t)((L + 127) / 128) * (size_t)((L + 127) / 128));
    int *heads = malloc((size_t)hq * sizeof *heads);
    ref_head_mode *modes = malloc((size_t)hq * sizeof *modes);
    int rc = -1;
    if (!idx || !qc || !kc || !vc || !oc || !masks || !heads || !modes)
        goto done;
    ref_token_select_shape ts = {L, d, hq, hkv, 64, 7, 0.05, 256, 0.0};
    ref_token_select_info info;
    if (ref_token_select(&ts, q, k, idx, n_sel, &info) != 0)
        goto done;
    rc = 1; /* near-tie: draw again */
    if (info.dense || info.tau_margin < 1e-4 || info.topk_margin < 1e-4)
        goto done;
    int64_t ns = *n_sel, G = hq / hkv;
    for (int h = 0; h < hq; h++) {
        heads[h] = h;
        modes[h] = (ref_head_mode){REF_HEAD_MASK, 0, 0, h};
        for (int64_t i = 0; i < ns; i++) {
            int64_t t = idx[h * L + i];
            memcpy(qc + (i * hq + h) * d, q + (t * hq + h) * d, (size_t)d * sizeof *q);
            memcpy(kc + (h * ns + i) * d, k + ((h / G) * L + t) * d, (size_t)d * sizeof *k);
            memcpy(vc + (h * ns + i) * d, v + ((h / G) * L + t) * d, (size_t)d * sizeof *v);
        }
    }
    ref_xattn_shape xs = {ns, ns, d, hq, hq, 0, 0.0, 16, 0.9};
    double margin = 0.0;
    if (ref_xattn_estimate(&xs, qc, kc, heads, hq, masks, kept_blocks, NULL, &margin) != 0 ||
        margin < 1e-4)
        goto done;
    ref_attn_blocks_shape bs = {ns, ns, d, hq, hq, 0, 0.0, hq};
    if (ref_attn_blocks(&bs, qc, kc, vc, modes, masks, oc, NULL) != 0) {
        rc = -1;
        goto done;
    }
    memset(o, 0, (size_t)nq * sizeof *o);
    for (int h = 0; h < hq; h++)
        for (int64_t i = 0; i < ns; i++)
            memcpy(o + ((int64_t)idx[h * L + i] * hq + h) * d, oc + (i * hq + h) * d,
                   (size_t)d * sizeof *o);
    rc = 0;
done:
    free(idx);
    free(qc);
    free(kc);
    free(vc);
    free(oc);
    free(masks);
    free(heads);
    free(modes);
    return rc;
}

static void test_tsa_xattn(ela_backend *be) {
    const int64_t L = 1500, d = 64;
    const int hq = 4, hkv = 2;
    const int64_t nq = L * hq * d, nk = hkv * L * d;
    float *f = malloc((size_t)(nq + 2 * nk) * sizeof *f), *got = malloc((size_t)nq * sizeof *got);
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    double *vd = malloc((size_t)nk * sizeof *vd), *o = malloc((size_t)nq * sizeof *o);
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *out = NULL;
    int64_t qs[3] = {L, hq, d}, ks[3] = {hkv, L, d}, n_sel = 0, kept = 0;
    if (!f || !got || !qd || !kd || !vd || !o ||
        ela_tensor_new(be, ELA_F32, 3, qs, NULL, &q) != ELA_OK ||
        ela_tensor_new(be, ELA_F32, 3, ks, NULL, &k) != ELA_OK ||
        ela_tensor_new(be, ELA_F32, 3, ks, NULL, &v) != ELA_OK ||
        ela_tensor_new(be, ELA_F32, 3, qs, NULL, &out) != ELA_OK) {
        CHECK(!"setup");
        goto done;
    }
    int rc = 1, tries = 0;
    test_rng rng;
    test_rng_init(&rng, 77);
    for (; rc == 1 && tries < 20; tries++) {
        /* q with a little more spread than k, so rows have favourite keys */
        test_fill_normal(&rng, f, nq, 1.5f);
        test_fill_normal(&rng, f + nq, 2 * nk, 1.0f);
        for (int64_t e = 0; e < nq; e++)
            qd[e] = f[e];
        for (int64_t e = 0; e < nk; e++) {
            kd[e] = f[nq + e];
            vd[e] = f[nq + nk + e];
        }
        rc = tsa_xattn_reference(qd, kd, vd, L, hq, hkv, d, o, &n_sel, &kept);
    }
    CHECKF(rc == 0, "tsa+xattn reference: %s after %d draws", rc == 1 ? "near-ties" : "failed",
           tries);
    if (rc != 0)
        goto done;
    CHECK_STATUS(ela_tensor_write_f32(q, f, nq), ELA_OK);
    CHECK_STATUS(ela_tensor_write_f32(k, f + nq, nk), ELA_OK);
    CHECK_STATUS(ela_tensor_write_f32(v, f + nq + nk, nk), ELA_OK);
    ela_prefill_policy pol;
    ela_prefill_report rep;
    CHECK_STATUS(ela_prefill_policy_parse("tsa+xattn,coverage=0.05,min=256,window=64", &pol),
                 ELA_OK);
    CHECK_STATUS(ela_prefill_attention(be, &pol, q, k, v, out, NULL, NULL, NULL, &rep), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(out, got, nq), ELA_OK);
    double err = test_rel_l2(o, got, nq);
    double want_sparsity = 1.0 - (double)n_sel * (double)(n_sel + 1) / ((double)L * (double)(L + 1));
    CHECKF(err <= 1e-5 && rep.kept_tokens == n_sel && rep.kept_blocks == kept &&
           rep.sparsity > want_sparsity,
           "tsa+xattn: error %.3g, kept %lld tokens (ref %lld), %lld blocks (ref %lld), "
           "sparsity %.4f (tsa alone %.4f)", err, (long long)rep.kept_tokens, (long long)n_sel,
           (long long)rep.kept_blocks, (long long)kept, rep.sparsity, want_sparsity);
    printf("prefill tsa+xattn vs composed references: error %.2e, %lld of %lld tokens, %lld "
           "blocks, sparsity %.3f (%d draws)\n", err, (long long)n_sel, (long long)L,
           (long long)kept, rep.sparsity, tries);
    /* out of memory at every allocation in turn: ELA_ERR_OOM, then the same result */
    int64_t failures = 0;
    ela_status r = ELA_ERR_INTERNAL;
    for (int64_t i = 1; i <= 200; i++) {
        ela_debug_fail_alloc(i);
        r = ela_prefill_attention(be, &pol, q, k, v, out, NULL, NULL, NULL, &rep);
        ela_debug_fail_alloc(0);
        if (r != ELA_ERR_OOM)
            break;
        failures++;
    }
    CHECKF(r == ELA_OK && failures > 0, "tsa+xattn under failing allocations: %s after %lld OOMs",
           ela_status_str(r), (long long)failures);
done:
    free(f);
    free(got);
    free(qd);
    free(kd);
    free(vd);
    free(o);
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(v);
    ela_tensor_free(out);
}

static void test_decode_run(ela_backend *be) {
    problem p;
    int64_t n = 3000;
    if (problem_make(be, &p, 1, n, 8, 2, 64, 11) != 0) {
        problem_free(&p);
        return;
    }
    ela_attn_params ap = ela_attn_params_default();
    ap.q_pos0 = n - 1;
    CHECK_STATUS(ela_attn_dense(be, p.q, p.k, p.v, p.o_ref, NULL, &ap), ELA_OK);
    int64_t cap = 4096, selected = 0;
    ela_tensor *sel = NULL;
    CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, &cap, NULL, &sel), ELA_OK);
    static const struct {
        const char *text;
        double max_err;
    } cases[] = {
        {"dense", 1e-6},
        {"lessismore:4096", 1e-5}, /* budget >= n: every token */
        {"lessismore:512", 0.3},
        {"streaming,sink=3000,local=1", 1e-5},
        {"streaming,sink=16,local=512", 0.5},
        {"nsa,block=16,top=256", 1e-5}, /* 256 blocks of 16 cover all 3000 keys */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ela_decode_policy pol;
        CHECK_STATUS(ela_decode_policy_parse(cases[i].text, &pol), ELA_OK);
        selected = 0;
        CHECK_STATUS(ela_decode_attention(be, &pol, ELA_DECODE_LAYER_SELECT, p.q, p.k, p.v, p.o,
                                          sel, &selected), ELA_OK);
        CHECK_STATUS(ela_decode_attention(be, &pol, ELA_DECODE_LAYER_SPARSE, p.q, p.k, p.v, p.o,
                                          sel, &selected), ELA_OK);
        double err = rel_error(&p);
        CHECKF(err <= cases[i].max_err, "%s: error %.3g > %.3g", cases[i].text, err,
               cases[i].max_err);
        printf("decode  %-34s n=%lld: error %.2e selected %lld\n", cases[i].text, (long long)n,
               err, (long long)selected);
    }
    ela_decode_policy lim;
    ela_decode_policy_parse("lessismore:64", &lim);
    selected = 0;
    CHECK_STATUS(ela_decode_attention(be, &lim, ELA_DECODE_LAYER_SPARSE, p.q, p.k, p.v, p.o, sel,
                                      &selected), ELA_ERR_INVALID_ARG); /* nothing selected yet */
    CHECK_STATUS(ela_decode_attention(be, &lim, ELA_DECODE_LAYER_SELECT, p.q, p.k, p.v, p.o, NULL,
                                      NULL), ELA_ERR_INVALID_ARG);
    ela_tensor_free(sel);
    problem_free(&p);
}

int main(void) {
    test_seed();
    test_prefill_parse();
    test_decode_parse();
    ela_backend *be = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be), ELA_OK);
    if (be) {
        test_prefill_run(be);
        test_tsa_xattn(be);
        test_decode_run(be);
    }
    ela_backend_close(be);
    return test_summary("test_policy");
}

/* Unit test of ela_attn_blocks on the "cpu" backend against the float64 reference
 * (tests/ref/attn_blocks_ref.c) on fresh random inputs: every mode pattern (all DENSE, all
 * STREAMING with overlapping / oversized / minimal windows, all MASK, diagonal-only masks,
 * mixed per head and per KV head), dtype mixes, d 64/128/80, GQA 1/4/8, L not a multiple of
 * 128, chunks (q_pos0 > 0), n above and below the last query, strided tensors, LSE; all-DENSE
 * against ela_attn_dense; errors; OOM. Every SIMD level the machine has and several thread
 * counts. Replay with ELA_TEST_SEED, one case with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_blocks_ref.h"
#include "test_common.h"

/* Tolerances on the relative L2 error over a whole tensor (DESIGN.md 7), as in
 * test_attn_dense.c: the reference reads the same rounded inputs, so f32 in/out leaves only
 * accumulation order (1e-5); 16-bit inputs with f32 output 2e-3; a 16-bit output's own rounding
 * 1e-2. LSE (f32) 1e-5 with f32 inputs, 2e-3 otherwise. all-DENSE against ela_attn_dense: both
 * run the same tiles, so f32 tolerance whatever the inputs. */
#define TOL_F32 1e-5
#define TOL_16_IN_F32_OUT 2e-3
#define TOL_16_OUT 1e-2

#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

enum {
    P_DENSE,     /* every head DENSE (also checked against ela_attn_dense) */
    P_STREAM,    /* every head STREAMING(sink, local) from the case */
    P_STREAM_RND,/* every head STREAMING with its own random sink 0..3, local 1..4 */
    P_MASK,      /* every head MASK, random masks (non-causal entries random too) */
    P_DIAG,      /* every head MASK with all-zero masks: only the diagonal block */
    P_MIXED,     /* each head random among the three kinds */
    P_MIXED_KV,  /* each KV head random, shared by its G query heads (Elastic's routing) */
    P_COUNT
};
static const char *const pattern_names[] = {"dense", "stream", "stream-rnd", "mask",
                                            "diag",  "mixed", "mixed-kv"};

#define F_THREADS 1u /* also with ELA_THREADS = 1, 3, 16 */
#define F_NO_LSE 2u
#define F_STRIDED 4u /* q, k, v, o, lse and masks with padded strides */
#define F_BIG 8u     /* skipped on the scalar level (the SIMD levels run them) */

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;
    ela_dtype tq, tkv, to;
    int pattern;
    int sink, local; /* P_STREAM */
    unsigned flags;
} case_t;

#define MAX_CASES 128
static case_t cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t n, int64_t d, int hq, int hkv, int64_t q_pos0, ela_dtype tq,
                ela_dtype tkv, ela_dtype to, int pattern, int sink, int local, unsigned flags) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    case_t c = {L, n, d, hq, hkv, q_pos0, tq, tkv, to, pattern, sink, local, flags};
    cases[n_cases++] = c;
}

static void case_str(const case_t *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld q=%s kv=%s o=%s %s",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->q_pos0, ela_dtype_name(c->tq), ela_dtype_name(c->tkv),
             ela_dtype_name(c->to), pattern_names[c->pattern]);
    if (c->pattern == P_STREAM) {
        size_t len = strlen(buf);
        snprintf(buf + len, size - len, "(sink %d, local %d)", c->sink, c->local);
    }
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "%s%s", c->flags & F_NO_LSE ? " no-lse" : "",
             c->flags & F_STRIDED ? " strided" : "");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    static const ela_dtype mixes[4][3] = {
        {ELA_F32, ELA_F32, ELA_F32},
        {ELA_F16, ELA_F16, ELA_F16},
        {ELA_BF16, ELA_BF16, ELA_BF16},
        {ELA_F32, ELA_F16, ELA_F32},
    };
    /* L, n, q_pos0: prompt, a chunk (q_pos0 > 0, n = q_pos0 + L), keys beyond the last query,
     * fewer keys than queries (rows past n), one token, exact blocks. */
    static const struct {
        int64_t L, n, q_pos0;
    } shapes[8] = {
        {300, 300, 0}, {200, 456, 256}, {129, 1000, 768}, {300, 200, 0},
        {1, 1, 0},     {128, 384, 256}, {77, 333, 256},   {513, 513, 0},
    };
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{3, 3}, {8, 2}, {8, 1}};
    int idx = 0;
    for (int m = 0; m < 4; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++, idx++) {
                int s = (idx * 3 + m) % 8, pat = (idx + idx / 7) % P_COUNT;
                unsigned flags = (idx % 5 == 2 ? F_NO_LSE : 0) | (idx % 4 == 1 ? F_STRIDED : 0);
                add(shapes[s].L, shapes[s].n, dims[di], gqa[g][0], gqa[g][1], shapes[s].q_pos0,
                    mixes[m][0], mixes[m][1], mixes[m][2], pat, 1 + idx % 3, 1 + idx % 4, flags);
            }
    /* Streaming windows: overlapping sink and local, both beyond M, local = 1, no sink. */
    add(700, 700, 64, 4, 2, 0, F32, F32, F32, P_STREAM, 3, 3, 0);
    add(700, 700, 64, 4, 2, 0, F32, F16, F32, P_STREAM, 10, 20, F_STRIDED);
    add(700, 700, 64, 4, 2, 0, BF16, BF16, F32, P_STREAM, 1, 1, 0);
    add(700, 700, 64, 4, 2, 0, F32, F32, F32, P_STREAM, 0, 1, 0);
    add(300, 1000, 128, 4, 1, 640, F16, F16, F16, P_STREAM, 0, 2, 0);
    add(300, 1000, 128, 4, 1, 640, F32, F32, F32, P_STREAM, 2, 100, 0);
    /* Masks: only the diagonal, random, per KV head, on a chunk. */
    add(700, 700, 128, 8, 2, 0, F32, F32, F32, P_DIAG, 0, 0, F_THREADS);
    add(400, 1040, 64, 8, 8, 640, F32, BF16, F32, P_MASK, 0, 0, 0);
    add(700, 700, 64, 8, 1, 0, F16, F16, F32, P_MIXED_KV, 0, 0, F_THREADS);
    /* All DENSE (also against ela_attn_dense): prompt, chunk, GQA 1/4/8. */
    add(1000, 1000, 128, 4, 1, 0, F32, F16, F32, P_DENSE, 0, 0, F_THREADS);
    add(333, 1101, 64, 8, 2, 768, F32, F32, F32, P_DENSE, 0, 0, F_THREADS | F_STRIDED);
    add(257, 257, 80, 3, 3, 0, BF16, BF16, BF16, P_DENSE, 0, 0, 0);
    /* Larger mixed runs: many items of very different costs under every thread count. */
    add(1700, 1700, 128, 8, 2, 0, F32, F16, F32, P_MIXED, 0, 0, F_THREADS | F_BIG);
    add(1500, 2268, 64, 8, 1, 768, F16, F16, F16, P_MIXED_KV, 0, 0, F_THREADS | F_BIG);
    add(1100, 1100, 64, 4, 4, 0, F32, F32, F32, P_MIXED, 0, 0, F_THREADS | F_STRIDED);
    add(129, 129, 17, 6, 3, 0, F32, F32, F32, P_MIXED, 0, 0, 0);
    add(129, 300, 256, 4, 2, 128, F32, F32, F32, P_MIXED, 0, 0, 0);
    /* q8_0 K/V (a quantized KV cache, d % 32 == 0): every head pattern, prompt and chunk,
     * GQA 1/4/8, strided, f16/bf16 q and o. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(300, 300, 64, 4, 2, 0, F32, Q8, F32, P_MIXED, 0, 0, F_THREADS | F_STRIDED);
    add(200, 456, 128, 8, 1, 256, F32, Q8, F32, P_MIXED_KV, 0, 0, 0);
    add(700, 700, 64, 4, 2, 0, F16, Q8, F16, P_STREAM, 1, 2, 0);
    add(400, 1040, 64, 8, 8, 640, BF16, Q8, F32, P_MASK, 0, 0, F_STRIDED);
    add(513, 513, 128, 8, 2, 0, F32, Q8, BF16, P_DIAG, 0, 0, 0);
    add(333, 1101, 32, 8, 2, 768, F32, Q8, F32, P_DENSE, 0, 0, F_THREADS);
}

/* ---- host data ---------------------------------------------------------------------------- */
typedef struct {
    float *q, *k, *v;
    double *qd, *kd, *vd, *o, *lse;
    ref_head_mode *rmodes;
    ela_head_mode *modes;
    uint8_t *masks;
    int64_t n_masks, nqb, nkb;
} host_t;

static void host_free(host_t *h) {
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->qd);
    free(h->kd);
    free(h->vd);
    free(h->o);
    free(h->lse);
    free(h->rmodes);
    free(h->modes);
    free(h->masks);
    memset(h, 0, sizeof *h);
}

static ela_head_mode random_mode(test_rng *rng, int kind, int mask) {
    ela_head_mode md = {(ela_head_kind)kind, 0, 1, 0};
    if (kind == ELA_HEAD_STREAMING) {
        md.sink_blocks = (int)(test_rng_u64(rng) % 4);
        md.local_blocks = 1 + (int)(test_rng_u64(rng) % 4);
    } else if (kind == ELA_HEAD_MASK) {
        md.mask = mask;
    }
    return md;
}

static int host_make(const case_t *c, int ci, host_t *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    const int G = c->hq / c->hkv;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci + 7000);
    h->q = malloc((size_t)(nq ? nq : 1) * sizeof(float));
    h->k = malloc((size_t)nkv * sizeof(float));
    h->v = malloc((size_t)nkv * sizeof(float));
    h->o = malloc((size_t)(nq ? nq : 1) * sizeof(double));
    h->lse = malloc((size_t)(c->L * c->hq + 1) * sizeof(double));
    h->modes = calloc((size_t)c->hq, sizeof *h->modes);
    h->rmodes = calloc((size_t)c->hq, sizeof *h->rmodes);
    if (!h->q || !h->k || !h->v || !h->o || !h->lse || !h->modes || !h->rmodes)
        return -1;
    test_fill_normal(&rng, h->q, nq, 1.5f);
    test_fill_normal(&rng, h->k, nkv, 1.0f);
    test_fill_normal(&rng, h->v, nkv, 1.0f);
    if (test_round_through(h->q, nq, c->tq) || test_round_through(h->k, nkv, c->tkv) ||
        test_round_through(h->v, nkv, c->tkv))
        return -1;
    h->qd = test_to_double(h->q, nq);
    h->kd = test_to_double(h->k, nkv);
    h->vd = test_to_double(h->v, nkv);
    if (!h->qd || !h->kd || !h->vd)
        return -1;

    /* Modes; MASK heads get masks hq / 2 + 1 masks shared round-robin (so several heads share
     * one mask and one class). */
    h->nqb = (c->L + 127) / 128;
    h->nkb = (c->n + 127) / 128;
    int any_mask = 0;
    int64_t n_masks = c->hq / 2 + 1;
    for (int hh = 0; hh < c->hq; hh++) {
        int mask = hh % (int)n_masks;
        ela_head_mode md = {ELA_HEAD_DENSE, 0, 1, 0};
        switch (c->pattern) {
        case P_STREAM:
            md.kind = ELA_HEAD_STREAMING;
            md.sink_blocks = c->sink;
            md.local_blocks = c->local;
            break;
        case P_STREAM_RND:
            md = random_mode(&rng, ELA_HEAD_STREAMING, 0);
            break;
        case P_MASK:
        case P_DIAG:
            md = random_mode(&rng, ELA_HEAD_MASK, mask);
            break;
        case P_MIXED:
            md = random_mode(&rng, (int)(test_rng_u64(&rng) % 3), mask);
            break;
        case P_MIXED_KV:
            if (hh % G == 0)
                md = random_mode(&rng, (int)(test_rng_u64(&rng) % 3), mask);
            else
                md = h->modes[hh - 1];
            break;
        default:
            break;
        }
        h->modes[hh] = md;
        h->rmodes[hh].kind = (int)md.kind;
        h->rmodes[hh].sink_blocks = md.sink_blocks;
        h->rmodes[hh].local_blocks = md.local_blocks;
        h->rmodes[hh].mask = md.mask;
        any_mask |= md.kind == ELA_HEAD_MASK;
    }
    if (any_mask) {
        h->n_masks = n_masks;
        int64_t nm = n_masks * h->nqb * h->nkb;
        h->masks = malloc((size_t)(nm ? nm : 1));
        if (!h->masks)
            return -1;
        double density = test_rng_uniform(&rng, 0.1, 0.6);
        for (int64_t i = 0; i < nm; i++) /* non-causal entries too: they must be ignored */
            h->masks[i] = c->pattern == P_DIAG ? 0
                          : test_rng_uniform(&rng, 0.0, 1.0) < density
                              ? (uint8_t)(1 + test_rng_u64(&rng) % 255)
                              : 0;
    }
    ref_attn_blocks_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->q_pos0, 0.0, h->n_masks};
    return ref_attn_blocks(&s, h->qd, h->kd, h->vd, h->rmodes, h->masks, h->o, h->lse);
}

/* ---- device tensors -------------------------------------------------------------------------- */
typedef struct {
    ela_tensor *q, *k, *v, *o, *lse, *masks, *o2;
} dev_t_;

static void dev_free(dev_t_ *t) {
    ela_tensor_free(t->q);
    ela_tensor_free(t->k);
    ela_tensor_free(t->v);
    ela_tensor_free(t->o);
    ela_tensor_free(t->lse);
    ela_tensor_free(t->masks);
    ela_tensor_free(t->o2);
    memset(t, 0, sizeof *t);
}

/* 3-dim tensor, packed or with padded strides (pad elements added to each dim's extent). */
static ela_status new3(ela_backend *be, ela_dtype dt, int nd, const int64_t *ext, int strided,
                       ela_tensor **out) {
    if (!strided)
        return ela_tensor_new(be, dt, nd, ext, NULL, out);
    /* last dim packed (one element, or one q8_0 block), others padded by 3 */
    int64_t st[3], acc = (int64_t)ela_dtype_row_bytes(dt, ext[nd - 1]);
    st[nd - 1] = test_stride_bytes(dt, 1);
    for (int i = nd - 2; i >= 0; i--) {
        st[i] = acc;
        acc *= ext[i] + 3;
    }
    return ela_tensor_new(be, dt, nd, ext, st, out);
}

static ela_status dev_make(ela_backend *be, const case_t *c, const host_t *h, dev_t_ *t) {
    memset(t, 0, sizeof *t);
    int sd = (c->flags & F_STRIDED) != 0;
    int64_t eq[3] = {c->L, c->hq, c->d}, ek[3] = {c->hkv, c->n, c->d}, el[2] = {c->L, c->hq};
    ela_status st;
    if ((st = new3(be, c->tq, 3, eq, sd, &t->q)) != ELA_OK ||
        (st = new3(be, c->tkv, 3, ek, sd, &t->k)) != ELA_OK ||
        (st = new3(be, c->tkv, 3, ek, 0, &t->v)) != ELA_OK ||
        (st = new3(be, c->to, 3, eq, sd, &t->o)) != ELA_OK)
        return st;
    if (!(c->flags & F_NO_LSE) && (st = new3(be, ELA_F32, 2, el, sd, &t->lse)) != ELA_OK)
        return st;
    if (h->masks) {
        int64_t em[3] = {h->n_masks, h->nqb, h->nkb};
        if ((st = new3(be, ELA_U8, 3, em, sd, &t->masks)) != ELA_OK ||
            (st = ela_tensor_write(t->masks, h->masks, (size_t)(em[0] * em[1] * em[2]))) != ELA_OK)
            return st;
    }
    if ((st = ela_tensor_write_f32(t->q, h->q, c->L * c->hq * c->d)) != ELA_OK ||
        (st = ela_tensor_write_f32(t->k, h->k, (int64_t)c->hkv * c->n * c->d)) != ELA_OK ||
        (st = ela_tensor_write_f32(t->v, h->v, (int64_t)c->hkv * c->n * c->d)) != ELA_OK)
        return st;
    return ELA_OK;
}

/* ---- backends ---------------------------------------------------------------------------------- */
typedef struct {
    const char *level, *threads;
    ela_backend *be;
    double seconds;
    int runs;
} cfg_t;

#define MAX_CFGS 12
static cfg_t cfgs[MAX_CFGS];
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
            cfg_t *cfg = &cfgs[n_cfgs];
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

/* ---- checks ------------------------------------------------------------------------------------- */
static double tol_o(const case_t *c) {
    if (c->to != ELA_F32)
        return TOL_16_OUT;
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

static double tol_lse(const case_t *c) {
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

/* Relative L2 error of lse over the rows that see keys; rows that see none must be -inf on
 * both sides (+inf error otherwise). */
static double lse_error(const double *ref, const float *got, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isinf(ref[i]) && ref[i] < 0) {
            if (!(isinf(got[i]) && got[i] < 0))
                return INFINITY;
            continue;
        }
        if (!isfinite(got[i]))
            return INFINITY;
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static double worst[3];

static void run_case(cfg_t *cfg, const case_t *c, int ci, const host_t *h) {
    char what[256];
    case_str(c, what, sizeof what);
    const char *thr = cfg->threads ? cfg->threads : "default";
    dev_t_ t;
    ela_status st = dev_make(cfg->be, c, h, &t);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    if (st != ELA_OK) {
        dev_free(&t);
        return;
    }
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c->q_pos0;
    double t0 = test_now();
    st = ela_attn_blocks(cfg->be, t.q, t.k, t.v, t.o, t.lse, h->modes, t.masks, &p);
    cfg->seconds += test_now() - t0;
    cfg->runs++;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cfg->level, thr,
           ela_status_str(st), ela_last_error());
    const int64_t no = c->L * c->hq * c->d, nl = c->L * c->hq;
    float *o = malloc((size_t)(no + 1) * sizeof *o), *lse = malloc((size_t)(nl + 1) * sizeof *lse);
    if (st == ELA_OK && o && lse) {
        CHECK_STATUS(ela_tensor_read_f32(t.o, o, no), ELA_OK);
        double err = test_rel_l2(h->o, o, no), tol = tol_o(c);
        CHECKF(err <= tol, "case %d [%s] level %s threads %s: O rel L2 error %.3g > %.0e", ci, what,
               cfg->level, thr, err, tol);
        int cls = tol == TOL_F32 ? 0 : tol == TOL_16_IN_F32_OUT ? 1 : 2;
        worst[cls] = err > worst[cls] ? err : worst[cls];
        if (t.lse) {
            CHECK_STATUS(ela_tensor_read_f32(t.lse, lse, nl), ELA_OK);
            double el = lse_error(h->lse, lse, nl);
            CHECKF(el <= tol_lse(c), "case %d [%s] level %s threads %s: LSE rel L2 error %.3g",
                   ci, what, cfg->level, thr, el);
        }
    }
    /* All DENSE: the same as ela_attn_dense, f32 output on both sides. */
    if (st == ELA_OK && c->pattern == P_DENSE && o && lse) {
        int64_t eq[3] = {c->L, c->hq, c->d};
        float *o2 = malloc((size_t)(no + 1) * sizeof *o2);
        double *od = malloc((size_t)(no + 1) * sizeof *od);
        ela_tensor *ob = NULL;
        CHECK_STATUS(ela_tensor_new(cfg->be, ELA_F32, 3, eq, NULL, &t.o2), ELA_OK);
        CHECK_STATUS(ela_tensor_new(cfg->be, ELA_F32, 3, eq, NULL, &ob), ELA_OK);
        if (o2 && od && t.o2 && ob) {
            CHECK_STATUS(ela_attn_dense(cfg->be, t.q, t.k, t.v, t.o2, NULL, &p), ELA_OK);
            CHECK_STATUS(ela_attn_blocks(cfg->be, t.q, t.k, t.v, ob, NULL, h->modes, NULL, &p),
                         ELA_OK);
            CHECK_STATUS(ela_tensor_read_f32(t.o2, o2, no), ELA_OK);
            CHECK_STATUS(ela_tensor_read_f32(ob, o, no), ELA_OK);
            for (int64_t i = 0; i < no; i++)
                od[i] = o2[i];
            double err = test_rel_l2(od, o, no);
            CHECKF(err <= TOL_F32, "case %d [%s] level %s threads %s: all-DENSE differs from "
                   "ela_attn_dense by rel L2 %.3g", ci, what, cfg->level, thr, err);
        }
        ela_tensor_free(ob);
        free(o2);
        free(od);
    }
    free(o);
    free(lse);
    dev_free(&t);
}

/* ---- errors -------------------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        ela_status got_ = (call);                                                               \
        CHECKF(got_ == (want) && test_has_word(ela_last_error(), word),                         \
               "%s: got %s (\"%s\"), want %s naming '%s'", #call, ela_status_str(got_),         \
               ela_last_error(), ela_status_str(want), word);                                   \
    } while (0)

static void test_errors(ela_backend *be) {
    const int64_t L = 200, n = 200, d = 64;
    int64_t eq[3] = {L, 4, d}, ek[3] = {2, n, d}, el[2] = {L, 4}, em[3] = {2, 2, 2};
    int64_t em_bad[3] = {2, 3, 2};
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *lse = NULL, *masks = NULL;
    ela_tensor *masks_f32 = NULL, *masks_bad = NULL, *lse_f16 = NULL;
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek, NULL, &v), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, eq, NULL, &o), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, el, NULL, &lse), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 2, el, NULL, &lse_f16), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_U8, 3, em, NULL, &masks), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, em, NULL, &masks_f32), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_U8, 3, em_bad, NULL, &masks_bad), ELA_OK);
    if (!q || !k || !v || !o || !lse || !masks || !masks_f32 || !masks_bad || !lse_f16)
        goto done;
    uint8_t zeros[8] = {0};
    CHECK_STATUS(ela_tensor_write(masks, zeros, 8), ELA_OK);
    ela_head_mode modes[4] = {{ELA_HEAD_DENSE, 0, 1, 0},
                              {ELA_HEAD_STREAMING, 1, 2, 0},
                              {ELA_HEAD_MASK, 0, 1, 1},
                              {ELA_HEAD_MASK, 0, 1, 0}};
    ela_attn_params p = ela_attn_params_default();
    CHECK_STATUS(ela_attn_blocks(be, q, k, v, o, lse, modes, masks, &p), ELA_OK);
    CHECK_STATUS(ela_attn_blocks(be, q, k, v, o, NULL, modes, masks, NULL), ELA_OK);
    CHECK_FAIL(ela_attn_blocks(NULL, q, k, v, o, lse, modes, masks, &p), ELA_ERR_INVALID_ARG,
               "backend");
    CHECK_FAIL(ela_attn_blocks(be, NULL, k, v, o, lse, modes, masks, &p), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, NULL, lse, modes, masks, &p), ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_attn_blocks(be, q, q, v, o, lse, modes, masks, &p), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse_f16, modes, masks, &p), ELA_ERR_INVALID_ARG,
               "lse");
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, NULL, masks, &p), ELA_ERR_INVALID_ARG, "modes");
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, NULL, &p), ELA_ERR_INVALID_ARG, "masks");
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, masks_f32, &p), ELA_ERR_INVALID_ARG,
               "masks");
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, masks_bad, &p), ELA_ERR_INVALID_ARG,
               "masks");
    ela_attn_params bad = p;
    bad.causal = 0;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, masks, &bad), ELA_ERR_INVALID_ARG,
               "causal");
    bad = p;
    bad.q_pos0 = 64;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, masks, &bad), ELA_ERR_INVALID_ARG,
               "q_pos0");
    bad.q_pos0 = -128;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, masks, &bad), ELA_ERR_INVALID_ARG,
               "q_pos0");
    bad = p;
    bad.scale = NAN;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, modes, masks, &bad), ELA_ERR_INVALID_ARG,
               "scale");
    ela_head_mode m2[4];
    memcpy(m2, modes, sizeof m2);
    m2[1].local_blocks = 0;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, m2, masks, &p), ELA_ERR_INVALID_ARG,
               "local_blocks");
    memcpy(m2, modes, sizeof m2);
    m2[1].sink_blocks = -1;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, m2, masks, &p), ELA_ERR_INVALID_ARG,
               "sink_blocks");
    memcpy(m2, modes, sizeof m2);
    m2[2].mask = 2;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, m2, masks, &p), ELA_ERR_INVALID_ARG, "mask");
    m2[2].mask = -1;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, m2, masks, &p), ELA_ERR_INVALID_ARG, "mask");
    memcpy(m2, modes, sizeof m2);
    m2[3].kind = (ela_head_kind)7;
    CHECK_FAIL(ela_attn_blocks(be, q, k, v, o, lse, m2, masks, &p), ELA_ERR_INVALID_ARG, "kind");
    /* No MASK head: masks may be NULL, and L = 0 is a no-op. */
    ela_head_mode dense[4] = {{ELA_HEAD_DENSE, 0, 1, 0}, {ELA_HEAD_DENSE, 0, 1, 0},
                              {ELA_HEAD_STREAMING, 0, 1, 0}, {ELA_HEAD_DENSE, 0, 1, 0}};
    CHECK_STATUS(ela_attn_blocks(be, q, k, v, o, lse, dense, NULL, &p), ELA_OK);
    {
        int64_t e0[3] = {0, 4, d}, e0l[2] = {0, 4};
        ela_tensor *q0 = NULL, *o0 = NULL, *l0 = NULL;
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e0, NULL, &q0), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e0, NULL, &o0), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, e0l, NULL, &l0), ELA_OK);
        if (q0 && o0 && l0)
            CHECK_STATUS(ela_attn_blocks(be, q0, k, v, o0, l0, dense, NULL, &p), ELA_OK);
        ela_tensor_free(q0);
        ela_tensor_free(o0);
        ela_tensor_free(l0);
    }
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(v);
    ela_tensor_free(o);
    ela_tensor_free(lse);
    ela_tensor_free(lse_f16);
    ela_tensor_free(masks);
    ela_tensor_free(masks_f32);
    ela_tensor_free(masks_bad);
}

/* Every allocation of the call failed in turn: ELA_ERR_OOM each time, then the right result. */
static void test_oom(ela_backend *be) {
    case_t c = {300, 456, 64, 8, 2, 128, ELA_F32, ELA_F16, ELA_F32, P_MIXED, 0, 0, 0};
    host_t h;
    dev_t_ t;
    memset(&t, 0, sizeof t);
    if (host_make(&c, 9999, &h) != 0 || dev_make(be, &c, &h, &t) != ELA_OK) {
        CHECK(!"oom setup failed");
        host_free(&h);
        dev_free(&t);
        return;
    }
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c.q_pos0;
    ela_status st = ELA_OK;
    int64_t failures = 0;
    for (int64_t i = 1; i <= 1000; i++) {
        ela_debug_fail_alloc(i);
        st = ela_attn_blocks(be, t.q, t.k, t.v, t.o, t.lse, h.modes, t.masks, &p);
        ela_debug_fail_alloc(0);
        if (st == ELA_OK)
            break;
        failures++;
        CHECKF(st == ELA_ERR_OOM && ela_last_error()[0] != '\0',
               "allocation %lld failed: got %s (%s)", (long long)i, ela_status_str(st),
               ela_last_error());
        if (st != ELA_ERR_OOM)
            break;
    }
    CHECKF(st == ELA_OK && failures >= 3, "oom: %lld failures, final %s", (long long)failures,
           ela_status_str(st));
    int64_t no = c.L * c.hq * c.d;
    float *o = malloc((size_t)no * sizeof *o);
    if (o && st == ELA_OK) {
        CHECK_STATUS(ela_tensor_read_f32(t.o, o, no), ELA_OK);
        double err = test_rel_l2(h.o, o, no);
        CHECKF(err <= TOL_16_IN_F32_OUT, "after fault injection: rel L2 %.3g", err);
    }
    printf("oom: %lld allocations failed in turn, each ELA_ERR_OOM\n", (long long)failures);
    free(o);
    host_free(&h);
    dev_free(&t);
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    if (n_cfgs > 0) {
        for (int a = 0; a < 27; a++) {
            ela_dtype t3[3] = {(ela_dtype)(a % 3), (ela_dtype)(a / 3 % 3), (ela_dtype)(a / 9)};
            CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_ATTN_BLOCKS, t3, 3));
        }
        ela_dtype q8[3] = {ELA_F32, ELA_Q8_0, ELA_F32};
        CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_ATTN_BLOCKS, q8, 3));
    }
    double t_ref = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        const case_t *c = &cases[ci];
        host_t h;
        double t0 = test_now();
        int rc = host_make(c, ci, &h);
        t_ref += test_now() - t0;
        CHECKF(rc == 0, "case %d: building inputs or reference failed", ci);
        for (int k = 0; rc == 0 && k < n_cfgs; k++) {
            if (cfgs[k].threads && !(c->flags & F_THREADS))
                continue;
            if ((c->flags & F_BIG) && strcmp(cfgs[k].level, "scalar") == 0)
                continue;
            /* Slow builds (sanitizers, no optimisation): the scalar level only on small cases. */
            if (SLOW_BUILD && strcmp(cfgs[k].level, "scalar") == 0 &&
                (cfgs[k].threads || c->L * c->n * c->hq > 2000000))
                continue;
            run_case(&cfgs[k], c, ci, &h);
        }
        host_free(&h);
    }
    if (n_cfgs > 0 && only_case < 0) {
        test_errors(cfgs[n_cfgs - 1].be);
        test_oom(cfgs[n_cfgs - 1].be);
    }
    printf("reference: %.2f s\n", t_ref);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.2f s in ela_attn_blocks\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs, cfgs[k].seconds);
    printf("worst rel L2 error of O: f32 %.2e, 16-bit in/f32 out %.2e, 16-bit out %.2e\n",
           worst[0], worst[1], worst[2]);
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_attn_blocks");
}

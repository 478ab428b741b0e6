/* Unit test of ela_attn_nsa on the "cpu" backend against the float64 reference
 * (tests/ref/attn_nsa_ref.c) on fresh random inputs: dtype mixes, d 64/128/80, GQA 1/4/16,
 * block 16/64, top 1/16, prefill, chunks and decode; block lists that are random (with -1
 * holes, future blocks and empty lists), produced by ela_nsa_select, or every block (which must
 * equal gated dense attention, i.e. the op's own full mode); full mode (blocks NULL), gated or
 * not; strided views; every SIMD level and several thread counts. Then error paths (bad block
 * lists leave o untouched) and an allocation-failure loop. Replay with ELA_TEST_SEED, one case
 * with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_nsa_ref.h"
#include "test_common.h"

/* Tolerances on the relative L2 error of o, as in test_attn_dense.c: the reference gets the
 * dtype-rounded inputs, so what is left is f32 accumulation (1e-5), with 16-bit inputs the
 * same plus a looser bound for the kernel's exp on larger scores (2e-3), and the rounding of a
 * 16-bit output (1e-2). The gate is an exact f32 factor in both. */
#define TOL_F32 1e-5
#define TOL_16_IN_F32_OUT 2e-3
#define TOL_16_OUT 1e-2

/* Slow builds (no optimisation, or AddressSanitizer) run the scalar level only on the cheaper
 * cases to stay within the suite's time budget; the SIMD levels still run every case. */
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

enum {
    SRC_RANDOM, /* random distinct blocks, mostly at or before the current one, -1 holes */
    SRC_SELECT, /* the lists ela_nsa_select makes from the same q and k */
    SRC_ALL,    /* every block of k, shuffled (top = ceil(n / B)): gated dense attention */
    SRC_FULL,   /* blocks = NULL: full mode */
    SRC_COUNT
};
static const char *const src_names[] = {"random", "select", "all", "full"};

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0; /* < 0: n - L */
    int block, top; /* top 0 with SRC_ALL: ceil(n / block) */
    ela_dtype tq, tkv, to;
    int src;
    int gated;   /* gate tensor (random in (0, 1)) or NULL */
    int strided; /* q a head slice of a fused projection, k/v views of a cache, o/blocks/gate
                    padded views */
    float scale;
} an_case;

#define MAX_CASES 128
static an_case cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t n, int64_t d, int hq, int hkv, int64_t q_pos0, int block,
                int top, ela_dtype tq, ela_dtype tkv, ela_dtype to, int src, int gated,
                int strided) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    if (src == SRC_ALL)
        top = (int)((n + block - 1) / block);
    an_case c = {L, n, d, hq, hkv, q_pos0 < 0 ? n - L : q_pos0, block, top, tq, tkv, to, src,
                 gated, strided, 0.0f};
    cases[n_cases++] = c;
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    /* dtype mixes x d x GQA, random lists */
    add(450, 450, 64, 8, 2, 0, 16, 16, F32, F32, F32, SRC_RANDOM, 1, 0);
    add(450, 450, 128, 4, 4, 0, 16, 16, F16, F16, F16, SRC_RANDOM, 1, 1);
    add(333, 333, 80, 16, 1, 0, 16, 16, BF16, BF16, BF16, SRC_RANDOM, 0, 0);
    add(300, 700, 64, 32, 2, -1, 16, 16, F32, F16, F32, SRC_RANDOM, 1, 1);
    add(1, 1500, 128, 8, 2, -1, 16, 16, F16, F16, F32, SRC_RANDOM, 1, 0);
    add(200, 900, 64, 16, 1, 650, 64, 16, F32, BF16, F16, SRC_RANDOM, 1, 0);
    add(250, 250, 64, 8, 2, 0, 16, 1, F32, F32, F32, SRC_RANDOM, 1, 0);
    add(1, 1111, 80, 4, 1, -1, 64, 1, BF16, BF16, F32, SRC_RANDOM, 1, 1);
    add(97, 97, 64, 3, 1, 0, 5, 7, F32, F32, F32, SRC_RANDOM, 1, 0);
    add(3, 3, 64, 4, 2, 0, 16, 16, F32, F32, F32, SRC_RANDOM, 1, 0);
    /* the lists of ela_nsa_select */
    add(700, 700, 64, 32, 2, 0, 16, 16, BF16, BF16, BF16, SRC_SELECT, 1, 0);
    add(613, 613, 128, 8, 2, 0, 16, 16, F16, F16, F32, SRC_SELECT, 1, 1);
    add(501, 501, 80, 4, 4, 0, 16, 16, F32, F32, F32, SRC_SELECT, 1, 0);
    add(150, 1300, 64, 16, 1, -1, 64, 16, F32, F16, F32, SRC_SELECT, 0, 0);
    add(400, 400, 64, 8, 2, 0, 16, 1, F32, F32, F32, SRC_SELECT, 1, 1);
    add(1, 3000, 128, 32, 8, -1, 16, 16, F16, F16, F16, SRC_SELECT, 1, 0);
    add(1, 2000, 64, 16, 1, -1, 64, 16, BF16, BF16, F32, SRC_SELECT, 1, 1);
    /* every block: gated dense attention */
    add(400, 400, 64, 8, 2, 0, 16, 0, F32, F32, F32, SRC_ALL, 1, 0);
    add(300, 500, 128, 4, 1, -1, 64, 0, F16, F16, F32, SRC_ALL, 1, 1);
    add(1, 777, 64, 16, 1, -1, 16, 0, F32, F32, F32, SRC_ALL, 0, 0);
    /* full mode, gated and not */
    add(500, 500, 64, 8, 2, 0, 16, 16, F32, F32, F32, SRC_FULL, 1, 0);
    add(200, 800, 128, 16, 1, -1, 16, 16, F16, F16, F16, SRC_FULL, 1, 1);
    add(1, 2000, 80, 4, 4, -1, 16, 16, BF16, BF16, F32, SRC_FULL, 1, 0);
    add(300, 300, 64, 4, 1, 0, 16, 16, F32, F32, BF16, SRC_FULL, 0, 0);
    /* an explicit scale */
    add(257, 600, 64, 8, 2, -1, 16, 16, F32, F32, F32, SRC_SELECT, 1, 0);
    cases[n_cases - 1].scale = 0.3f;
    add(257, 600, 64, 8, 2, -1, 16, 16, F32, F32, F32, SRC_FULL, 1, 0);
    /* q8_0 K/V (a quantized KV cache): random and selected lists, every block, full mode,
     * decode (the row path on SIMD levels, tiles on scalar), strided cache views. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(450, 450, 64, 8, 2, 0, 16, 16, F32, Q8, F32, SRC_RANDOM, 1, 1);
    add(1, 1500, 128, 8, 2, -1, 16, 16, F32, Q8, F32, SRC_RANDOM, 1, 0);
    add(613, 613, 128, 8, 2, 0, 16, 16, F16, Q8, F16, SRC_SELECT, 1, 1);
    add(1, 3000, 128, 32, 8, -1, 16, 16, F32, Q8, F32, SRC_SELECT, 0, 0);
    add(300, 500, 32, 4, 1, -1, 64, 0, BF16, Q8, F32, SRC_ALL, 1, 1);
    add(200, 800, 64, 16, 1, -1, 16, 16, F32, Q8, BF16, SRC_FULL, 1, 0);
    cases[n_cases - 1].scale = 0.3f;
}

static void case_str(const an_case *c, char *buf, size_t size) {
    snprintf(buf, size,
             "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld B=%d S=%d q=%s kv=%s o=%s blocks=%s "
             "%s%s scale=%g",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->q_pos0, c->block, c->top, ela_dtype_name(c->tq),
             ela_dtype_name(c->tkv), ela_dtype_name(c->to), src_names[c->src],
             c->gated ? "gated" : "no-gate", c->strided ? " strided" : "", (double)c->scale);
}

/* Rough multiply-adds of one run: rows x heads x visible keys x d. */
static double case_cost(const an_case *c) {
    double keys = (double)c->q_pos0 + (double)c->L / 2.0;
    if (c->src == SRC_RANDOM || c->src == SRC_SELECT)
        keys = fmin(keys, (double)c->top * c->block);
    return (double)c->L * c->hq * c->d * keys;
}

static double tolerance(const an_case *c) {
    if (c->to != ELA_F32)
        return TOL_16_OUT;
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

/* ---- device tensors --------------------------------------------------------------------- */
typedef struct {
    ela_tensor *base, *t;
    int n_dims;
    int64_t bext[3], ext[3], off;
} dev_tensor;

static void dev_free(dev_tensor *x) {
    if (x->t != x->base)
        ela_tensor_free(x->t);
    ela_tensor_free(x->base);
    x->t = x->base = NULL;
}

#define SENTINEL (-7.75f) /* exact in f16 and bf16 */
#define I32_FILL 0x5eed

/* A view with extents ext of a packed base bext (n_dims 2 or 3), starting `off` elements in;
 * the base is filled with SENTINEL (I32_FILL for i32). */
static ela_status dev_view(ela_backend *be, ela_dtype dt, int n_dims, const int64_t *bext,
                           const int64_t *ext, int64_t off, dev_tensor *x) {
    memset(x, 0, sizeof *x);
    /* byte strides (q8_0 K/V: whole blocks, the innermost one block) */
    int64_t str[3], nb = 1;
    for (int i = n_dims - 1; i >= 0; i--) {
        str[i] = test_stride_bytes(dt, nb);
        nb *= bext[i];
    }
    x->n_dims = n_dims;
    memcpy(x->bext, bext, (size_t)n_dims * sizeof *bext);
    memcpy(x->ext, ext, (size_t)n_dims * sizeof *ext);
    x->off = off;
    ela_status st = ela_tensor_new(be, dt, n_dims, bext, NULL, &x->base);
    if (st != ELA_OK)
        return st;
    if (dt == ELA_I32) {
        int32_t *fill = malloc((size_t)nb * sizeof *fill);
        if (!fill)
            return ELA_ERR_OOM;
        for (int64_t e = 0; e < nb; e++)
            fill[e] = I32_FILL;
        st = ela_tensor_write(x->base, fill, (size_t)nb * sizeof *fill);
        free(fill);
    } else {
        float *fill = malloc((size_t)nb * sizeof *fill);
        if (!fill)
            return ELA_ERR_OOM;
        for (int64_t e = 0; e < nb; e++)
            fill[e] = SENTINEL;
        st = ela_tensor_write_f32(x->base, fill, nb);
        free(fill);
    }
    if (st != ELA_OK)
        return st;
    return ela_tensor_view(x->base, n_dims, ext, str, (int64_t)ela_dtype_row_bytes(dt, off),
                           &x->t);
}

/* Elements of the base outside the view that lost their fill (f32-readable dtypes only). */
static int64_t dev_outside_changed(const dev_tensor *x) {
    int64_t nb = 1, nv = 1, changed = 0;
    for (int i = 0; i < x->n_dims; i++) {
        nb *= x->bext[i];
        nv *= x->ext[i];
    }
    if (nb == nv)
        return 0;
    float *f = malloc((size_t)nb * sizeof *f);
    char *in = calloc((size_t)nb, 1);
    if (!f || !in || ela_tensor_read_f32(x->base, f, nb) != ELA_OK) {
        free(f);
        free(in);
        return -1;
    }
    for (int64_t e = 0; e < nv; e++) {
        int64_t rem = e, off = x->off, stride = 1;
        for (int i = x->n_dims - 1; i >= 0; i--) {
            off += (rem % x->ext[i]) * stride;
            rem /= x->ext[i];
            stride *= x->bext[i];
        }
        in[off] = 1;
    }
    for (int64_t e = 0; e < nb; e++)
        if (!in[e] && f[e] != SENTINEL)
            changed++;
    free(f);
    free(in);
    return changed;
}

typedef struct {
    dev_tensor q, k, v, o, blocks, gate;
} dev_set;

static void dev_set_free(dev_set *s) {
    dev_free(&s->q);
    dev_free(&s->k);
    dev_free(&s->v);
    dev_free(&s->o);
    dev_free(&s->blocks);
    dev_free(&s->gate);
}

/* q, k, v, o, gate (when gated) and an empty blocks tensor (unless SRC_FULL). */
static ela_status dev_set_make(ela_backend *be, const an_case *c, dev_set *s) {
    memset(s, 0, sizeof *s);
    const int64_t L = c->L, n = c->n, d = c->d, hq = c->hq, hkv = c->hkv, top = c->top;
    int64_t eq[3] = {L, hq, d}, ek[3] = {hkv, n, d}, eb[3] = {L, hkv, top}, eg[2] = {L, hq};
    int p = c->strided;
    int64_t bq[3] = {L, hq + 2 * hkv, d}, bk[3] = {hkv, n + 37, d}, bo[3] = {L, hq + 1, d};
    int64_t bb[3] = {L, hkv, top + 3}, bg[2] = {L, hq + 2};
    ela_status st;
    if ((st = dev_view(be, c->tq, 3, p ? bq : eq, eq, 0, &s->q)) != ELA_OK ||
        (st = dev_view(be, c->tkv, 3, p ? bk : ek, ek, p ? 5 * d : 0, &s->k)) != ELA_OK ||
        (st = dev_view(be, c->tkv, 3, p ? bk : ek, ek, p ? 7 * d : 0, &s->v)) != ELA_OK ||
        (st = dev_view(be, c->to, 3, p ? bo : eq, eq, p ? d : 0, &s->o)) != ELA_OK)
        return st;
    if (c->src != SRC_FULL &&
        (st = dev_view(be, ELA_I32, 3, p ? bb : eb, eb, p ? 2 : 0, &s->blocks)) != ELA_OK)
        return st;
    if (c->gated && (st = dev_view(be, ELA_F32, 2, p ? bg : eg, eg, p ? 1 : 0, &s->gate)) != ELA_OK)
        return st;
    return ELA_OK;
}

/* ---- inputs --------------------------------------------------------------------------------- */
typedef struct {
    float *q, *k, *v, *gate; /* rounded through their dtypes */
    int32_t *blocks;         /* [L, hkv, top] or NULL (SRC_FULL, SRC_SELECT until made) */
} case_data;

static void case_data_free(case_data *h) {
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->gate);
    free(h->blocks);
    memset(h, 0, sizeof *h);
}

static void random_lists(const an_case *c, test_rng *rng, int32_t *bl) {
    const int64_t nkb = (c->n + c->block - 1) / c->block;
    for (int64_t i = 0; i < c->L; i++)
        for (int g = 0; g < c->hkv; g++) {
            int32_t *list = bl + (i * c->hkv + g) * c->top;
            int64_t cur = (c->q_pos0 + i) / c->block;
            int empty = test_rng_u64(rng) % 20 == 0; /* a row that sees no key: o = 0 */
            for (int x = 0; x < c->top; x++) {
                list[x] = -1;
                if (empty || test_rng_u64(rng) % 10 == 0)
                    continue;
                for (int tries = 0; tries < 20; tries++) {
                    int64_t b = test_rng_u64(rng) % 4 == 0 ? cur
                                : test_rng_u64(rng) % 8 == 0
                                    ? (int64_t)(test_rng_u64(rng) % (uint64_t)nkb) /* maybe future */
                                    : (int64_t)(test_rng_u64(rng) % (uint64_t)(cur + 1));
                    int dup = 0;
                    for (int y = 0; y < x; y++)
                        dup |= list[y] == b;
                    if (!dup) {
                        list[x] = (int32_t)b;
                        break;
                    }
                }
            }
        }
}

static void all_lists(const an_case *c, test_rng *rng, int32_t *bl) {
    for (int64_t r = 0; r < c->L * c->hkv; r++) {
        int32_t *list = bl + r * c->top;
        for (int x = 0; x < c->top; x++)
            list[x] = x;
        for (int x = c->top - 1; x > 0; x--) { /* shuffle */
            int y = (int)(test_rng_u64(rng) % (uint64_t)(x + 1));
            int32_t tmp = list[x];
            list[x] = list[y];
            list[y] = tmp;
        }
    }
}

static int case_data_make(const an_case *c, int ci, case_data *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci);
    h->q = malloc((size_t)nq * sizeof *h->q);
    h->k = malloc((size_t)nk * sizeof *h->k);
    h->v = malloc((size_t)nk * sizeof *h->v);
    h->gate = malloc((size_t)(c->L * c->hq) * sizeof *h->gate);
    if (c->src == SRC_RANDOM || c->src == SRC_ALL) /* SRC_SELECT: from the first run */
        h->blocks = malloc((size_t)(c->L * c->hkv * c->top) * sizeof *h->blocks);
    if (!h->q || !h->k || !h->v || !h->gate ||
        ((c->src == SRC_RANDOM || c->src == SRC_ALL) && !h->blocks)) {
        case_data_free(h);
        return -1;
    }
    test_fill_normal(&rng, h->q, nq, 1.5f);
    test_fill_normal(&rng, h->k, nk, 1.0f);
    test_fill_normal(&rng, h->v, nk, 1.0f);
    for (int64_t x = 0; x < c->L * c->hq; x++)
        h->gate[x] = c->gated ? (float)test_rng_uniform(&rng, 0.02, 1.0) : 1.0f;
    if (c->src == SRC_RANDOM)
        random_lists(c, &rng, h->blocks);
    else if (c->src == SRC_ALL)
        all_lists(c, &rng, h->blocks);
    if (test_round_through(h->q, nq, c->tq) || test_round_through(h->k, nk, c->tkv) ||
        test_round_through(h->v, nk, c->tkv)) {
        case_data_free(h);
        return -1;
    }
    return 0;
}

/* o of the reference; blocks from h (NULL in full mode, or `override`). */
static double *reference(const an_case *c, const case_data *h, const int32_t *blocks) {
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    double *vd = malloc((size_t)nk * sizeof *vd), *gd = malloc((size_t)(c->L * c->hq) * 8);
    double *od = malloc((size_t)nq * sizeof *od);
    int rc = -1;
    if (qd && kd && vd && gd && od) {
        for (int64_t x = 0; x < nq; x++)
            qd[x] = h->q[x];
        for (int64_t x = 0; x < nk; x++) {
            kd[x] = h->k[x];
            vd[x] = h->v[x];
        }
        for (int64_t x = 0; x < c->L * c->hq; x++)
            gd[x] = h->gate[x];
        ref_nsa_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->q_pos0, c->scale, c->block,
                           c->top};
        rc = ref_attn_nsa(&s, qd, kd, vd, blocks, c->gated ? gd : NULL, od);
    }
    free(qd);
    free(kd);
    free(vd);
    free(gd);
    if (rc != 0) {
        free(od);
        return NULL;
    }
    return od;
}

/* ---- backends ------------------------------------------------------------------------------ */
typedef struct {
    const char *level, *threads;
    ela_backend *be;
    double seconds;
} backend_cfg;

#define MAX_CFGS 8
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
    static const struct {
        const char *level, *threads;
    } want[] = {{"scalar", NULL}, {"avx2", NULL}, {"avx512", NULL},
                {"scalar", "1"},  {"avx2", "3"},  {"avx512", "16"}};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        if (!level_supported(want[w].level))
            continue;
        backend_cfg *cfg = &cfgs[n_cfgs];
        cfg->level = want[w].level;
        cfg->threads = want[w].threads;
        test_setenv("ELA_CPU_LEVEL", cfg->level);
        test_setenv("ELA_THREADS", cfg->threads);
        CHECK_STATUS(ela_backend_open("cpu", &cfg->be), ELA_OK);
        if (cfg->be)
            n_cfgs++;
    }
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
}

/* ---- running --------------------------------------------------------------------------------- */
static double worst[3];
static int tol_class(double tol) { return tol == TOL_F32 ? 0 : tol == TOL_16_IN_F32_OUT ? 1 : 2; }

/* Runs the op on cfg: writes inputs (blocks: `blocks`, or the selection of ela_nsa_select when
 * NULL and SRC_SELECT, returned through *made), reads o into out. */
static ela_status run_op(backend_cfg *cfg, const an_case *c, const case_data *h,
                         const int32_t *blocks, int full, float *out, int32_t *made,
                         int64_t *changed) {
    dev_set s;
    ela_status st = dev_set_make(cfg->be, c, &s);
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    const size_t nb = (size_t)(c->L * c->hkv * c->top) * sizeof(int32_t);
    ela_nsa_params np = {c->block, c->top};
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c->q_pos0;
    p.scale = c->scale;
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s.q.t, h->q, nq);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s.k.t, h->k, nk);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s.v.t, h->v, nk);
    if (st == ELA_OK && c->gated)
        st = ela_tensor_write_f32(s.gate.t, h->gate, c->L * c->hq);
    if (st == ELA_OK && !full && blocks)
        st = ela_tensor_write(s.blocks.t, blocks, nb);
    if (st == ELA_OK && !full && !blocks) {
        st = ela_nsa_select(cfg->be, s.q.t, s.k.t, &np, &p, s.blocks.t);
        if (st == ELA_OK)
            st = ela_tensor_read(s.blocks.t, made, nb);
    }
    if (st == ELA_OK) {
        double t0 = test_now();
        st = ela_attn_nsa(cfg->be, s.q.t, s.k.t, s.v.t, full ? NULL : s.blocks.t,
                          c->gated ? s.gate.t : NULL, s.o.t, &np, &p);
        cfg->seconds += test_now() - t0;
    }
    if (st == ELA_OK)
        st = ela_tensor_read_f32(s.o.t, out, nq);
    if (st == ELA_OK)
        *changed = dev_outside_changed(&s.o);
    dev_set_free(&s);
    return st;
}

static void run_case(const an_case *c, int ci, case_data *h) {
    char what[320];
    case_str(c, what, sizeof what);
    const int64_t nq = c->L * c->hq * c->d;
    float *out = malloc((size_t)nq * sizeof *out), *out_full = malloc((size_t)nq * sizeof *out);
    int32_t *made = NULL;
    double *ref = NULL;
    if (c->src == SRC_SELECT)
        made = malloc((size_t)(c->L * c->hkv * c->top) * sizeof *made);
    CHECK(out && out_full && (c->src != SRC_SELECT || made));
    if (!out || !out_full || (c->src == SRC_SELECT && !made))
        goto done;
    double tol = tolerance(c);
    for (int k = 0; k < n_cfgs; k++) {
        backend_cfg *cfg = &cfgs[k];
        const char *thr = cfg->threads ? cfg->threads : "default";
        if (SLOW_BUILD && case_cost(c) > 2e7 && strcmp(cfg->level, "scalar") == 0)
            continue;
        int full = c->src == SRC_FULL;
        int64_t changed = 0;
        ela_status st = run_op(cfg, c, h, h->blocks, full, out, made, &changed);
        CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cfg->level,
               thr, ela_status_str(st), ela_last_error());
        if (st != ELA_OK)
            continue;
        if (c->src == SRC_SELECT && !h->blocks) { /* the first configuration's selection */
            h->blocks = made;
            made = NULL;
        }
        if (!ref) {
            ref = reference(c, h, full ? NULL : h->blocks);
            CHECKF(ref != NULL, "case %d: reference failed", ci);
            if (!ref)
                goto done;
        }
        double err = test_rel_l2(ref, out, nq);
        CHECKF(err <= tol, "case %d [%s] level %s threads %s: o rel L2 error %.3g > %.0e", ci,
               what, cfg->level, thr, err, tol);
        if (err > worst[tol_class(tol)])
            worst[tol_class(tol)] = err;
        CHECKF(changed == 0, "case %d [%s] level %s threads %s: %lld elements of o's base outside "
               "the view written", ci, what, cfg->level, thr, (long long)changed);
        /* Every block listed: the same as the op's full mode (gated dense attention). */
        if (c->src == SRC_ALL) {
            st = run_op(cfg, c, h, NULL, 1, out_full, NULL, &changed);
            CHECKF(st == ELA_OK, "case %d: full mode: %s (%s)", ci, ela_status_str(st),
                   ela_last_error());
            double* as_ref = malloc((size_t)nq * sizeof *as_ref);
            if (st == ELA_OK && as_ref) {
                for (int64_t x = 0; x < nq; x++)
                    as_ref[x] = out_full[x];
                double e2 = test_rel_l2(as_ref, out, nq);
                CHECKF(e2 <= tol, "case %d [%s] level %s threads %s: all blocks vs full mode: "
                       "rel L2 %.3g > %.0e", ci, what, cfg->level, thr, e2, tol);
            }
            free(as_ref);
        }
    }
    /* The reference itself: every block listed equals no list. */
    if (c->src == SRC_ALL && ref) {
        double *ref_full = reference(c, h, NULL);
        CHECK(ref_full != NULL);
        if (ref_full) {
            double m = 0.0;
            for (int64_t x = 0; x < nq; x++)
                m = fmax(m, fabs(ref_full[x] - ref[x]));
            CHECKF(m < 1e-12, "case %d: reference with all blocks differs from full by %g", ci, m);
        }
        free(ref_full);
    }
done:
    free(ref);
    free(out);
    free(out_full);
    free(made);
}

/* ---- error paths ----------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_word(ela_last_error(), word), "message \"%s\" does not name '%s'",     \
               ela_last_error(), word);                                                         \
    } while (0)

static ela_tensor *new_t(ela_backend *be, ela_dtype dt, int nd, int64_t a, int64_t b, int64_t c) {
    ela_tensor *t = NULL;
    int64_t e[3] = {a, b, c};
    CHECK_STATUS(ela_tensor_new(be, dt, nd, e, NULL, &t), ELA_OK);
    if (t) {
        int64_t n = ela_tensor_numel(t);
        float *z = malloc((size_t)(n ? n : 1) * sizeof *z);
        if (z) {
            for (int64_t x = 0; x < n; x++)
                z[x] = dt == ELA_I32 ? (float)(x % (nd == 3 ? c : b) == 0 ? 0 : -1) : 0.5f;
            CHECK_STATUS(ela_tensor_write_f32(t, z, n), ELA_OK);
        }
        free(z);
    }
    return t;
}

/* Writes list into row (i, g) of bl (top 16), runs the op and expects a failure naming blocks
 * with o left as it was. */
static void check_bad_list(ela_backend *be, ela_tensor *q, ela_tensor *k, ela_tensor *v,
                           ela_tensor *bl, ela_tensor *o, const ela_attn_params *p,
                           const int32_t *list, int64_t i, int g, const char *what) {
    int64_t L = ela_tensor_extent(bl, 0), hkv = ela_tensor_extent(bl, 1), no = ela_tensor_numel(o);
    int32_t *all = malloc((size_t)(L * hkv * 16) * sizeof *all);
    float *before = malloc((size_t)no * sizeof *before), *after = malloc((size_t)no * sizeof *after);
    CHECK(all && before && after);
    if (all && before && after) {
        for (int64_t x = 0; x < L * hkv * 16; x++)
            all[x] = x % 16 == 0 ? (int32_t)((p->q_pos0 + x / (hkv * 16)) / 16) : -1;
        memcpy(all + (i * hkv + g) * 16, list, 16 * sizeof *list);
        CHECK_STATUS(ela_tensor_write(bl, all, (size_t)(L * hkv * 16) * sizeof *all), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(o, before, no), ELA_OK);
        ela_status st = ela_attn_nsa(be, q, k, v, bl, NULL, o, NULL, p);
        CHECKF(st == ELA_ERR_INVALID_ARG, "%s: got %s", what, ela_status_str(st));
        CHECKF(test_has_word(ela_last_error(), "blocks"), "%s: message \"%s\" does not name "
               "blocks", what, ela_last_error());
        CHECK_STATUS(ela_tensor_read_f32(o, after, no), ELA_OK);
        CHECKF(memcmp(before, after, (size_t)no * sizeof *after) == 0, "%s: o was written", what);
    }
    free(all);
    free(before);
    free(after);
}

static void test_errors(ela_backend *be) {
    const int64_t L = 40, n = 100, d = 64;
    ela_tensor *q = new_t(be, ELA_F32, 3, L, 8, d), *k = new_t(be, ELA_F16, 3, 2, n, d);
    ela_tensor *v = new_t(be, ELA_F16, 3, 2, n, d), *o = new_t(be, ELA_F32, 3, L, 8, d);
    ela_tensor *bl = new_t(be, ELA_I32, 3, L, 2, 16), *gate = new_t(be, ELA_F32, 2, L, 8, 0);
    ela_tensor *bl_u8 = new_t(be, ELA_U8, 3, L, 2, 16), *bl_top = new_t(be, ELA_I32, 3, L, 2, 8);
    ela_tensor *bl_2d = new_t(be, ELA_I32, 2, L, 32, 0), *g_f16 = new_t(be, ELA_F16, 2, L, 8, 0);
    ela_tensor *g_shape = new_t(be, ELA_F32, 2, L, 2, 0), *v32 = new_t(be, ELA_F32, 3, 2, n, d);
    ela_nsa_params np = ela_nsa_params_default();
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = n - L;
    CHECK_STATUS(ela_attn_nsa(be, q, k, v, bl, gate, o, &np, &p), ELA_OK);
    CHECK_STATUS(ela_attn_nsa(be, q, k, v, NULL, gate, o, NULL, &p), ELA_OK);
    CHECK_STATUS(ela_attn_nsa(be, q, k, v, bl, NULL, o, NULL, &p), ELA_OK);
    CHECK_FAIL(ela_attn_nsa(NULL, q, k, v, bl, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_attn_nsa(be, NULL, k, v, bl, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_attn_nsa(be, q, NULL, v, bl, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_attn_nsa(be, q, k, NULL, bl, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "v");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, gate, NULL, &np, &p), ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v32, bl, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "v");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl_u8, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl_top, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl_2d, gate, o, &np, &p), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, g_f16, o, &np, &p), ELA_ERR_INVALID_ARG, "gate");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, g_shape, o, &np, &p), ELA_ERR_INVALID_ARG, "gate");
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, NULL, g_shape, o, &np, &p), ELA_ERR_INVALID_ARG, "gate");
    ela_nsa_params bad = np;
    bad.block = 0;
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, gate, o, &bad, &p), ELA_ERR_INVALID_ARG, "block");
    bad = np;
    bad.top = 0;
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, gate, o, &bad, &p), ELA_ERR_INVALID_ARG, "top");
    ela_attn_params bp = p;
    bp.causal = 0;
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, gate, o, &np, &bp), ELA_ERR_INVALID_ARG, "causal");
    bp = p;
    bp.q_pos0 = n - L + 1;
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, gate, o, &np, &bp), ELA_ERR_INVALID_ARG, "q_pos0");
    bp.q_pos0 = -2;
    CHECK_FAIL(ela_attn_nsa(be, q, k, v, bl, gate, o, &np, &bp), ELA_ERR_INVALID_ARG, "q_pos0");
    /* block lists: out of range (ceil(100 / 16) = 7 blocks), below -1, repeated */
    int32_t list[16];
    for (int x = 0; x < 16; x++)
        list[x] = -1;
    list[0] = 3;
    list[5] = 7;
    check_bad_list(be, q, k, v, bl, o, &p, list, 17, 1, "block 7 of 7");
    list[5] = -2;
    check_bad_list(be, q, k, v, bl, o, &p, list, 0, 0, "block -2");
    list[5] = 3;
    check_bad_list(be, q, k, v, bl, o, &p, list, L - 1, 1, "block 3 twice");
    list[5] = 6; /* valid again: the last block, [96, 100), past t for the early rows */
    {
        int32_t *all = malloc((size_t)(L * 2 * 16) * sizeof *all);
        CHECK(all != NULL);
        if (all) {
            for (int64_t x = 0; x < L * 2 * 16; x++)
                all[x] = list[x % 16];
            CHECK_STATUS(ela_tensor_write(bl, all, (size_t)(L * 2 * 16) * sizeof *all), ELA_OK);
            CHECK_STATUS(ela_attn_nsa(be, q, k, v, bl, gate, o, &np, &p), ELA_OK);
        }
        free(all);
    }
    /* L = 0 is a no-op */
    ela_tensor *q0 = new_t(be, ELA_F32, 3, 0, 8, d), *b0 = new_t(be, ELA_I32, 3, 0, 2, 16);
    ela_tensor *g0 = new_t(be, ELA_F32, 2, 0, 8, 0), *o0 = new_t(be, ELA_F32, 3, 0, 8, d);
    CHECK_STATUS(ela_attn_nsa(be, q0, k, v, b0, g0, o0, &np, &p), ELA_OK);
    ela_tensor *all_t[] = {q, k, v, o, bl, gate, bl_u8, bl_top, bl_2d, g_f16, g_shape, v32,
                           q0, b0, g0, o0};
    for (size_t x = 0; x < sizeof all_t / sizeof all_t[0]; x++)
        ela_tensor_free(all_t[x]);
}

/* ---- allocation failures ------------------------------------------------------------------------ */
typedef struct {
    int64_t L, n, d;
    int hq, hkv, full;
} oom_case;

static ela_status oom_sequence(const oom_case *c, const float *qh, const float *kh,
                               const int32_t *bh, const float *gh, float *out) {
    ela_backend *be = NULL;
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *bl = NULL, *gate = NULL;
    ela_status st = ela_backend_open("cpu", &be);
    if (st != ELA_OK)
        goto done;
    int64_t eq[3] = {c->L, c->hq, c->d}, ek[3] = {c->hkv, c->n, c->d}, eb[3] = {c->L, c->hkv, 16};
    int64_t eg[2] = {c->L, c->hq};
    if ((st = ela_tensor_new(be, ELA_F16, 3, eq, NULL, &q)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F16, 3, ek, NULL, &k)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F16, 3, ek, NULL, &v)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F32, 3, eq, NULL, &o)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_I32, 3, eb, NULL, &bl)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F32, 2, eg, NULL, &gate)) != ELA_OK ||
        (st = ela_tensor_write_f32(q, qh, c->L * c->hq * c->d)) != ELA_OK ||
        (st = ela_tensor_write_f32(k, kh, c->hkv * c->n * c->d)) != ELA_OK ||
        (st = ela_tensor_write_f32(v, kh, c->hkv * c->n * c->d)) != ELA_OK ||
        (st = ela_tensor_write(bl, bh, (size_t)(c->L * c->hkv * 16) * sizeof *bh)) != ELA_OK ||
        (st = ela_tensor_write_f32(gate, gh, c->L * c->hq)) != ELA_OK)
        goto done;
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c->n - c->L;
    if ((st = ela_attn_nsa(be, q, k, v, c->full ? NULL : bl, gate, o, NULL, &p)) != ELA_OK)
        goto done;
    st = ela_tensor_read_f32(o, out, c->L * c->hq * c->d);
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(v);
    ela_tensor_free(o);
    ela_tensor_free(bl);
    ela_tensor_free(gate);
    ela_backend_close(be);
    return st;
}

static void test_oom(void) {
    static const oom_case oc[] = {{60, 500, 64, 8, 2, 0}, {60, 500, 64, 8, 2, 1},
                                  {1, 3000, 64, 8, 2, 1}};
    for (size_t ci = 0; ci < sizeof oc / sizeof oc[0]; ci++) {
        const oom_case *c = &oc[ci];
        test_rng rng;
        test_rng_init(&rng, 777 + ci);
        int64_t nq = c->L * c->hq * c->d, nk = c->hkv * c->n * c->d, nb = c->L * c->hkv * 16;
        float *qh = malloc((size_t)nq * 4), *kh = malloc((size_t)nk * 4);
        float *gh = malloc((size_t)(c->L * c->hq) * 4);
        float *out = malloc((size_t)nq * 4), *ok = malloc((size_t)nq * 4);
        int32_t *bh = malloc((size_t)nb * sizeof *bh);
        CHECK(qh && kh && gh && out && ok && bh);
        if (qh && kh && gh && out && ok && bh) {
            test_fill_normal(&rng, qh, nq, 1.0f);
            test_fill_normal(&rng, kh, nk, 1.0f);
            test_fill_uniform(&rng, gh, c->L * c->hq, 0.1f, 1.0f);
            for (int64_t x = 0; x < nb; x++) {
                int64_t t = c->n - c->L + x / (c->hkv * 16), cur = t / 16, slot = x % 16;
                bh[x] = (int32_t)(slot <= cur ? cur - slot : -1);
            }
            CHECK_STATUS(oom_sequence(c, qh, kh, bh, gh, ok), ELA_OK);
            int64_t failures = 0;
            ela_status st = ELA_OK;
            for (int64_t i = 1; i <= 1000; i++) {
                ela_debug_fail_alloc(i);
                st = oom_sequence(c, qh, kh, bh, gh, out);
                ela_debug_fail_alloc(0);
                if (st == ELA_OK)
                    break;
                failures++;
                CHECKF(st == ELA_ERR_OOM, "oom case %zu: allocation %lld failed: got %s (%s)", ci,
                       (long long)i, ela_status_str(st), ela_last_error());
                CHECKF(ela_last_error()[0] != '\0', "allocation %lld: empty message",
                       (long long)i);
                if (st != ELA_ERR_OOM)
                    break;
            }
            CHECKF(st == ELA_OK, "oom case %zu: never succeeded", ci);
            CHECKF(failures >= 6, "oom case %zu: only %lld allocations seen", ci,
                   (long long)failures);
            CHECK(memcmp(out, ok, (size_t)nq * 4) == 0);
            printf("oom %s L=%lld: %lld allocations failed in turn, each ELA_ERR_OOM\n",
                   c->full ? "full  " : "sparse", (long long)c->L, (long long)failures);
        }
        free(qh);
        free(kh);
        free(gh);
        free(out);
        free(ok);
        free(bh);
    }
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    CHECK(n_cfgs > 0);
    if (n_cfgs > 0)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 3; c++) {
                    ela_dtype t[3] = {(ela_dtype)a, (ela_dtype)b, (ela_dtype)c};
                    ela_dtype t8[3] = {(ela_dtype)a, ELA_Q8_0, (ela_dtype)c};
                    CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_ATTN_NSA, t, 3));
                    CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_ATTN_NSA, t8, 3));
                }
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        case_data h;
        int rc = case_data_make(&cases[ci], ci, &h);
        CHECKF(rc == 0, "case %d: building inputs failed", ci);
        if (rc != 0)
            continue;
        run_case(&cases[ci], ci, &h);
        case_data_free(&h);
    }
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %.3f s in ela_attn_nsa\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].seconds);
    printf("worst rel L2 error of o: f32 %.2e (tol %.0e), 16-bit in/f32 out %.2e (tol %.0e), "
           "16-bit out %.2e (tol %.0e)\n", worst[0], TOL_F32, worst[1], TOL_16_IN_F32_OUT,
           worst[2], TOL_16_OUT);
    if (n_cfgs > 0)
        test_errors(cfgs[0].be);
    test_oom();
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_attn_nsa");
}

/* Cross-backend parity of ela_attn_dense (DESIGN.md 7): every Vulkan device (vulkan:N), in its
 * default configuration and with its fallbacks forced (staging copies instead of mapped memory,
 * 16-bit data as 32-bit words, shared memory instead of subgroup shuffles),
 * against the CPU backend and the float64 reference (tests/ref/attn_dense_ref.c) on the same
 * random inputs: f32/f16/bf16 and mixes, d 64/128/80 (and odd ones), GQA 1/4/8, causal with
 * q_pos0 > 0 and not, L and n from {1, 7, 129, 1000}, strided views at odd element offsets.
 * Runs under the Vulkan validation layer (ELA_VK_VALIDATION=1 unless set otherwise), which turns
 * any validation error into a failed call. Prints "skipped: no Vulkan device" and passes only
 * when the machine has no Vulkan device at all. Replay with ELA_TEST_SEED, one case with
 * ELA_TEST_CASE=<index>; ELA_TEST_VERBOSE=1 prints each case's time. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_dense_ref.h"
#include "test_common.h"
#include "test_gpu.h"


/* ---- cases ---------------------------------------------------------------------------------- */
enum {
    LAYOUT_PACKED, /* every tensor packed */
    LAYOUT_QKV,    /* q: view of [L, Hq, 3d] at column d; o: view of [L, Hq+1, d] skipping head 0;
                      lse: view of [L, Hq+3] at column 1 */
    LAYOUT_CACHE,  /* k/v: views of a cache [Hkv, n+64, d] from token 3; o: padded strides */
    LAYOUT_FUSED,  /* q: heads of a token-major [L, Hq+2Hkv, d] projection; k/v: head-major views
                      of one [n, 2, Hkv, d] buffer; o: view of [L, Hq, 2d] */
    LAYOUT_ODD,    /* every tensor a view one element into its base, odd row strides: 16-bit rows
                      start mid-word, f32 ones off the binding alignment */
    LAYOUT_COUNT
};
static const char *const layout_names[] = {"packed", "qkv-view", "kv-cache", "fused-tm", "odd"};

typedef struct {
    int64_t L, n, d;
    int hq, hkv, causal;
    int64_t q_pos0;
    ela_dtype tq, tkv, to;
    int layout, sharp, lse;
} pcase;

#define MAX_CASES 160
static pcase cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t n, int64_t d, int hq, int hkv, int causal, int64_t q_pos0,
                ela_dtype tq, ela_dtype tkv, ela_dtype to, int layout, int sharp, int lse) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    pcase c = {L, n, d, hq, hkv, causal, q_pos0, tq, tkv, to, layout, sharp, lse};
    cases[n_cases++] = c;
}

static void case_str(const pcase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d %s q_pos0=%lld q=%s kv=%s o=%s %s%s%s",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             c->causal ? "causal" : "non-causal", (long long)c->q_pos0, ela_dtype_name(c->tq),
             ela_dtype_name(c->tkv), ela_dtype_name(c->to), layout_names[c->layout],
             c->sharp ? " sharp" : "", c->lse ? "" : " no-lse");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    static const ela_dtype mixes[4][3] = {
        {ELA_F32, ELA_F32, ELA_F32},
        {ELA_F16, ELA_F16, ELA_F16},
        {ELA_BF16, ELA_BF16, ELA_BF16},
        {ELA_F32, ELA_F16, ELA_F32}, /* the model runtime: f32 activations, f16 KV cache */
    };
    /* Prefill, decode (q_pos0 = n - L), rows that see a prefix of the keys, L > n, q_pos0
     * beyond n, one token; none a multiple of a tile. The 1000 x 1000 prefill is added below
     * with few heads: lavapipe is slow. */
    static const struct {
        int64_t L, n, q_pos0; /* q_pos0 < 0: n - L */
    } shapes[7] = {
        {129, 129, 0}, {1, 1000, -1}, {7, 1000, -1}, {129, 1000, 100},
        {1000, 7, 0},  {7, 129, 500}, {1, 1, 0},
    };
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{2, 2}, {8, 2}, {8, 1}}; /* ratios 1, 4, 8 */
    int idx = 0;
    for (int m = 0; m < 4; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++)
                for (int causal = 0; causal < 2; causal++, idx++) {
                    int s = (idx / 2 * 3 + causal * 4 + m) % 7;
                    int64_t L = shapes[s].L, n = shapes[s].n;
                    int64_t q_pos0 = shapes[s].q_pos0 < 0 ? n - L : shapes[s].q_pos0;
                    add(L, n, dims[di], gqa[g][0], gqa[g][1], causal, q_pos0, mixes[m][0],
                        mixes[m][1], mixes[m][2], (idx * 3 + idx / 5) % LAYOUT_COUNT, idx % 3 == 2,
                        idx % 7 != 3);
                }
    /* Every q / kv / o dtype combination on a small odd shape, every layout. */
    idx = 0;
    for (int tq = 0; tq < 3; tq++)
        for (int tkv = 0; tkv < 3; tkv++)
            for (int to = 0; to < 3; to++, idx++)
                add(33, 77, 64, 4, 2, idx % 2, 10, (ela_dtype)tq, (ela_dtype)tkv, (ela_dtype)to,
                    idx % LAYOUT_COUNT, 0, 1);
    /* Long prefill and decode (the key split and its LSE merge), odd and large head dims. */
    add(1000, 1000, 64, 4, 1, 1, 0, F16, F16, F16, LAYOUT_ODD, 0, 1);
    add(1000, 1000, 128, 2, 2, 0, 0, BF16, BF16, F32, LAYOUT_CACHE, 1, 1);
    add(1000, 1000, 80, 8, 1, 1, 0, F32, F32, F32, LAYOUT_PACKED, 0, 1);
    add(1, 4099, 128, 32, 8, 1, 4098, F32, F16, F32, LAYOUT_CACHE, 0, 1);
    add(1, 4099, 128, 8, 1, 0, 0, F32, BF16, BF16, LAYOUT_FUSED, 1, 1);
    add(7, 4099, 64, 8, 2, 1, 4092, F16, F16, F16, LAYOUT_ODD, 0, 1);
    add(129, 300, 256, 4, 2, 1, 20, BF16, BF16, F32, LAYOUT_QKV, 1, 1);
    add(129, 300, 256, 2, 1, 0, 0, F32, F32, F16, LAYOUT_ODD, 0, 1);
    add(129, 129, 17, 6, 3, 1, 0, F32, F32, F32, LAYOUT_QKV, 0, 1);
    add(65, 130, 1, 2, 1, 0, 0, F32, F16, F16, LAYOUT_ODD, 0, 1);
    add(7, 1000, 64, 8, 1, 1, 5000, F32, F32, F32, LAYOUT_PACKED, 0, 1); /* rows past every key */
}

/* ---- host data and reference ------------------------------------------------------------ */
typedef struct {
    float *q, *k, *v;   /* rounded through their dtypes: what the kernels read */
    double *o, *lse;    /* reference */
} case_data;

static void case_data_free(case_data *h) {
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->o);
    free(h->lse);
    memset(h, 0, sizeof *h);
}

static int case_data_make(const pcase *c, int ci, case_data *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    h->q = malloc((size_t)nq * sizeof(float));
    h->k = malloc((size_t)nkv * sizeof(float));
    h->v = malloc((size_t)nkv * sizeof(float));
    h->o = malloc((size_t)nq * sizeof(double));
    h->lse = malloc((size_t)(c->L * c->hq) * sizeof(double));
    double *qd = malloc((size_t)nq * sizeof(double)), *kd = malloc((size_t)nkv * sizeof(double)),
           *vd = malloc((size_t)nkv * sizeof(double));
    int rc = -1;
    if (h->q && h->k && h->v && h->o && h->lse && qd && kd && vd) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci + 7000);
        test_fill_normal(&rng, h->q, nq, c->sharp ? 3.0f : 1.0f);
        test_fill_normal(&rng, h->k, nkv, 1.0f);
        test_fill_normal(&rng, h->v, nkv, 1.0f);
        if (!test_round_through(h->q, nq, c->tq) && !test_round_through(h->k, nkv, c->tkv) &&
            !test_round_through(h->v, nkv, c->tkv)) {
            for (int64_t i = 0; i < nq; i++)
                qd[i] = h->q[i];
            for (int64_t i = 0; i < nkv; i++) {
                kd[i] = h->k[i];
                vd[i] = h->v[i];
            }
            ref_attn_dense_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->causal, c->q_pos0, 0.0};
            rc = ref_attn_dense(&s, qd, kd, vd, h->o, h->lse);
        }
    }
    free(qd);
    free(kd);
    free(vd);
    return rc;
}

/* ---- device tensors ------------------------------------------------------------------------- */
/* A tensor under test, possibly a view into a larger base filled with a sentinel (NaN for inputs,
 * so a read outside the view poisons the result; a finite value for outputs, so a write outside
 * it is caught). */
typedef struct {
    ela_tensor *base, *t;
    int n_dims, base_dims;
    int64_t ext[4], base_ext[4], stride_el[4], offset_el;
    float sentinel;
} dev_tensor;

static int64_t numel(const int64_t *ext, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++)
        p *= ext[i];
    return p;
}

static void dev_free(dev_tensor *x) {
    if (x->t != x->base)
        ela_tensor_free(x->t);
    ela_tensor_free(x->base);
    x->t = x->base = NULL;
}

/* View ext (n_dims, element strides, element offset) of a packed base base_ext (base_dims). */
static ela_status dev_view(ela_backend *be, ela_dtype dt, int base_dims, const int64_t *base_ext,
                           int n_dims, const int64_t *ext, const int64_t *stride_el,
                           int64_t offset_el, float fill, dev_tensor *x) {
    memset(x, 0, sizeof *x);
    x->n_dims = n_dims;
    x->base_dims = base_dims;
    memcpy(x->base_ext, base_ext, sizeof(int64_t) * (size_t)base_dims);
    memcpy(x->ext, ext, sizeof(int64_t) * (size_t)n_dims);
    memcpy(x->stride_el, stride_el, sizeof(int64_t) * (size_t)n_dims);
    x->offset_el = offset_el;
    x->sentinel = fill;
    ela_status st = ela_tensor_new(be, dt, base_dims, base_ext, NULL, &x->base);
    if (st != ELA_OK)
        return st;
    int64_t nb = numel(base_ext, base_dims);
    float *f = malloc((size_t)nb * sizeof *f);
    if (!f)
        return ELA_ERR_OOM;
    for (int64_t i = 0; i < nb; i++)
        f[i] = fill;
    st = ela_tensor_write_f32(x->base, f, nb);
    free(f);
    if (st != ELA_OK)
        return st;
    int64_t strides[4];
    size_t es = ela_dtype_size(dt);
    for (int i = 0; i < n_dims; i++)
        strides[i] = stride_el[i] * (int64_t)es;
    return ela_tensor_view(x->base, n_dims, ext, strides, offset_el * (int64_t)es, &x->t);
}

static ela_status dev_packed(ela_backend *be, ela_dtype dt, int n_dims, const int64_t *ext,
                             dev_tensor *x) {
    memset(x, 0, sizeof *x);
    ela_status st = ela_tensor_new(be, dt, n_dims, ext, NULL, &x->base);
    x->t = x->base;
    return st;
}

/* Base elements outside the view that no longer hold the sentinel; -1 if unreadable. */
static int64_t dev_outside_changed(const dev_tensor *x) {
    if (x->t == x->base)
        return 0;
    int64_t nb = numel(x->base_ext, x->base_dims), changed = 0;
    float *f = malloc((size_t)nb * sizeof *f);
    unsigned char *in = calloc((size_t)nb, 1);
    if (!f || !in || ela_tensor_read_f32(x->base, f, nb) != ELA_OK) {
        free(f);
        free(in);
        return -1;
    }
    int64_t nv = numel(x->ext, x->n_dims);
    for (int64_t e = 0; e < nv; e++) {
        int64_t rem = e, off = x->offset_el;
        for (int i = x->n_dims - 1; i >= 0; i--) {
            off += (rem % x->ext[i]) * x->stride_el[i];
            rem /= x->ext[i];
        }
        if (off >= 0 && off < nb)
            in[off] = 1;
    }
    for (int64_t i = 0; i < nb; i++)
        if (!in[i] && f[i] != x->sentinel)
            changed++;
    free(f);
    free(in);
    return changed;
}

typedef struct {
    dev_tensor q, k, v, o, lse;
} dev_set;

static void dev_set_free(dev_set *s) {
    dev_free(&s->q);
    dev_free(&s->k);
    dev_free(&s->v);
    dev_free(&s->o);
    dev_free(&s->lse);
}

#define OUT_SENTINEL (-7.75f) /* exact in f16 and bf16 */

static ela_status dev_set_make(ela_backend *be, const pcase *c, dev_set *s) {
    memset(s, 0, sizeof *s);
    const int64_t L = c->L, n = c->n, d = c->d, hq = c->hq, hkv = c->hkv;
    const float nan = NAN;
    ela_status st;
    int64_t qx[3] = {L, hq, d}, kx[3] = {hkv, n, d};
    switch (c->layout) {
    case LAYOUT_QKV: {
        int64_t qb[3] = {L, hq, 3 * d}, qs[3] = {hq * 3 * d, 3 * d, 1};
        st = dev_view(be, c->tq, 3, qb, 3, qx, qs, d, nan, &s->q);
        break;
    }
    case LAYOUT_FUSED: {
        int64_t qb[3] = {L, hq + 2 * hkv, d}, qs[3] = {(hq + 2 * hkv) * d, d, 1};
        st = dev_view(be, c->tq, 3, qb, 3, qx, qs, 0, nan, &s->q);
        break;
    }
    case LAYOUT_ODD: {
        int64_t qb[2] = {L, hq * d + 1}, qs[3] = {hq * d + 1, d, 1};
        st = dev_view(be, c->tq, 2, qb, 3, qx, qs, 1, nan, &s->q);
        break;
    }
    default:
        st = dev_packed(be, c->tq, 3, qx, &s->q);
    }
    if (st != ELA_OK)
        return st;

    for (int which = 0; which < 2; which++) {
        dev_tensor *x = which ? &s->v : &s->k;
        if (c->layout == LAYOUT_CACHE) {
            int64_t cap = n + 64 + which * 5;
            int64_t kb[3] = {hkv, cap, d}, ks[3] = {cap * d, d, 1};
            st = dev_view(be, c->tkv, 3, kb, 3, kx, ks, 3 * d, nan, x);
        } else if (c->layout == LAYOUT_FUSED) {
            int64_t kb[4] = {n, 2, hkv, d}, ks[3] = {d, 2 * hkv * d, 1};
            st = dev_view(be, c->tkv, 4, kb, 3, kx, ks, which * hkv * d, nan, x);
        } else if (c->layout == LAYOUT_ODD) {
            /* token stride d + 1, head stride n (d + 1) + 2: rows at every parity */
            int64_t kb[1] = {hkv * (n * (d + 1) + 2) + 1}, ks[3] = {n * (d + 1) + 2, d + 1, 1};
            st = dev_view(be, c->tkv, 1, kb, 3, kx, ks, 1, nan, x);
        } else {
            st = dev_packed(be, c->tkv, 3, kx, x);
        }
        if (st != ELA_OK)
            return st;
    }

    switch (c->layout) {
    case LAYOUT_QKV: {
        int64_t ob[3] = {L, hq + 1, d}, os[3] = {(hq + 1) * d, d, 1};
        st = dev_view(be, c->to, 3, ob, 3, qx, os, d, OUT_SENTINEL, &s->o);
        break;
    }
    case LAYOUT_FUSED: {
        int64_t ob[3] = {L, hq, 2 * d}, os[3] = {hq * 2 * d, 2 * d, 1};
        st = dev_view(be, c->to, 3, ob, 3, qx, os, 0, OUT_SENTINEL, &s->o);
        break;
    }
    case LAYOUT_ODD: {
        /* head stride d + 1 and row stride hq (d + 1) + 1: 16-bit rows start at either half of a
         * word, and their neighbours are sentinel elements that must survive */
        int64_t ob[1] = {L * (hq * (d + 1) + 1) + 1}, os[3] = {hq * (d + 1) + 1, d + 1, 1};
        st = dev_view(be, c->to, 1, ob, 3, qx, os, 1, OUT_SENTINEL, &s->o);
        break;
    }
    case LAYOUT_CACHE: {
        size_t es = ela_dtype_size(c->to);
        int64_t os[3] = {(hq * (d + 5) + 3) * (int64_t)es, (d + 5) * (int64_t)es, (int64_t)es};
        memset(&s->o, 0, sizeof s->o);
        st = ela_tensor_new(be, c->to, 3, qx, os, &s->o.base);
        s->o.t = s->o.base;
        break;
    }
    default:
        st = dev_packed(be, c->to, 3, qx, &s->o);
    }
    if (st != ELA_OK || !c->lse)
        return st;
    int64_t lx[2] = {L, hq};
    if (c->layout == LAYOUT_QKV || c->layout == LAYOUT_ODD) {
        int64_t lb[2] = {L, hq + 3}, ls[2] = {hq + 3, 1};
        return dev_view(be, ELA_F32, 2, lb, 2, lx, ls, 1, OUT_SENTINEL, &s->lse);
    }
    return dev_packed(be, ELA_F32, 2, lx, &s->lse);
}

/* ---- running and checking -------------------------------------------------------------------- */
static double tolerance_o(const pcase *c) {
    if (c->to != ELA_F32)
        return TOL_16_OUT;
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

static double tolerance_lse(const pcase *c) {
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

/* Run case c on cfg; on success o and lse hold the outputs (lse only when c->lse). */
static int run_on(gpu_cfg *cfg, const pcase *c, int ci, const case_data *h, float *o,
                  float *lse) {
    char what[200];
    case_str(c, what, sizeof what);
    dev_set s;
    ela_status st = dev_set_make(cfg->be, c, &s);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s.q.t, h->q, c->L * c->hq * c->d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s.k.t, h->k, (int64_t)c->hkv * c->n * c->d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s.v.t, h->v, (int64_t)c->hkv * c->n * c->d);
    CHECKF(st == ELA_OK, "case %d [%s] on %s: setup: %s (%s)", ci, what, cfg->name,
           ela_status_str(st), ela_last_error());
    int ok = 0;
    if (st == ELA_OK) {
        ela_attn_params p = ela_attn_params_default();
        p.causal = c->causal;
        p.q_pos0 = c->q_pos0;
        double t0 = test_now();
        st = ela_attn_dense(cfg->be, s.q.t, s.k.t, s.v.t, s.o.t, c->lse ? s.lse.t : NULL, &p);
        if (st == ELA_OK)
            st = ela_backend_synchronize(cfg->be);
        cfg->seconds += test_now() - t0;
        cfg->runs++;
        CHECKF(st == ELA_OK, "case %d [%s] on %s: ela_attn_dense: %s (%s)", ci, what, cfg->name,
               ela_status_str(st), ela_last_error());
    }
    if (st == ELA_OK) {
        st = ela_tensor_read_f32(s.o.t, o, c->L * c->hq * c->d);
        if (st == ELA_OK && c->lse)
            st = ela_tensor_read_f32(s.lse.t, lse, c->L * c->hq);
        CHECKF(st == ELA_OK, "case %d [%s] on %s: read: %s (%s)", ci, what, cfg->name,
               ela_status_str(st), ela_last_error());
        int64_t co = dev_outside_changed(&s.o), cl = c->lse ? dev_outside_changed(&s.lse) : 0;
        CHECKF(co == 0 && cl == 0, "case %d [%s] on %s: %lld elements of o's base and %lld of "
               "lse's outside the views changed", ci, what, cfg->name, (long long)co,
               (long long)cl);
        ok = st == ELA_OK;
    }
    dev_set_free(&s);
    return ok;
}

static void check_case(int ci) {
    const pcase *c = &cases[ci];
    char what[200];
    case_str(c, what, sizeof what);
    case_data h;
    if (case_data_make(c, ci, &h) != 0) {
        CHECKF(0, "case %d [%s]: building inputs or reference failed", ci, what);
        case_data_free(&h);
        return;
    }
    const int64_t no = c->L * c->hq * c->d, nl = c->L * c->hq;
    float *o = malloc((size_t)no * sizeof *o), *lse = malloc((size_t)nl * sizeof *lse);
    double *cpu_o = malloc((size_t)no * sizeof *cpu_o);
    double *cpu_lse = malloc((size_t)nl * sizeof *cpu_lse);
    CHECK(o && lse && cpu_o && cpu_lse);
    double tol = tolerance_o(c), tol_l = tolerance_lse(c);
    for (int k = 0; o && lse && cpu_o && cpu_lse && k < gpu_n_cfgs; k++) {
        gpu_cfg *cfg = &gpu_cfgs[k];
        if (!run_on(cfg, c, ci, &h, o, lse)) {
            if (k == 0)
                break; /* no CPU result to compare with */
            continue;
        }
        double err = test_rel_l2(h.o, o, no);
        CHECKF(err <= tol, "case %d [%s] on %s: O rel L2 error %.3g > %.0e against the reference",
               ci, what, cfg->name, err, tol);
        if (err / tol > cfg->worst)
            cfg->worst = err / tol;
        if (c->lse) {
            double el = test_rel_l2(h.lse, lse, nl);
            CHECKF(el <= tol_l, "case %d [%s] on %s: LSE rel L2 error %.3g > %.0e against the "
                   "reference", ci, what, cfg->name, el, tol_l);
            if (el / tol_l > cfg->worst_lse)
                cfg->worst_lse = el / tol_l;
        }
        if (k == 0) {
            for (int64_t i = 0; i < no; i++)
                cpu_o[i] = o[i];
            for (int64_t i = 0; c->lse && i < nl; i++)
                cpu_lse[i] = lse[i];
            continue;
        }
        double ec = test_rel_l2(cpu_o, o, no);
        CHECKF(ec <= tol, "case %d [%s] on %s: O rel L2 error %.3g > %.0e against the cpu backend",
               ci, what, cfg->name, ec, tol);
        if (c->lse) {
            double lc = test_rel_l2(cpu_lse, lse, nl);
            CHECKF(lc <= tol_l, "case %d [%s] on %s: LSE rel L2 error %.3g > %.0e against the cpu "
                   "backend", ci, what, cfg->name, lc, tol_l);
        }
    }
    free(o);
    free(lse);
    free(cpu_o);
    free(cpu_lse);
    case_data_free(&h);
}

/* What the plugin refuses, it refuses by name: unsupported ops and head dims, and a tensor wider
 * than one binding (when the device's limit is small enough to try). */
static void check_refusals(gpu_cfg *cfg) {
    ela_backend *be = cfg->be;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                ela_dtype t[3] = {(ela_dtype)a, (ela_dtype)b, (ela_dtype)c};
                CHECKF(ela_backend_supports(be, ELA_OP_ATTN_DENSE, t, 3), "%s: attn_dense %s/%s/%s",
                       cfg->name, ela_dtype_name(t[0]), ela_dtype_name(t[1]), ela_dtype_name(t[2]));
            }
    int64_t qx[3] = {1, 1, 320}, kx[3] = {1, 4, 320};
    ela_tensor *q = NULL, *k = NULL, *o = NULL;
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qx, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, kx, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qx, NULL, &o), ELA_OK);
    if (q && k && o) {
        CHECK_STATUS(ela_attn_dense(be, q, k, k, o, NULL, NULL), ELA_ERR_UNSUPPORTED);
        CHECKF(test_has_text(ela_last_error(), "256"), "%s: %s", cfg->name, ela_last_error());
        ela_head_mode modes[1] = {{ELA_HEAD_DENSE, 0, 0, 0}};
        CHECK_STATUS(ela_attn_blocks(be, q, k, k, o, NULL, modes, NULL, NULL), ELA_ERR_UNSUPPORTED);
    }
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(o);
    ela_device_info info;
    CHECK_STATUS(ela_backend_device_info(be, &info), ELA_OK);
    const char *mb = strstr(info.details, "max-binding=");
    long limit_mib = mb ? strtol(mb + 12, NULL, 10) : 0;
    if (limit_mib <= 0 || limit_mib > 512)
        return;
    /* K of limit + 1 MiB: allocated (never written), then refused at the op. */
    int64_t n = (limit_mib + 1) * (1 << 20) / (64 * 4);
    int64_t q2[3] = {1, 1, 64}, k2[3] = {1, n, 64};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, q2, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, k2, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, q2, NULL, &o), ELA_OK);
    if (q && k && o) {
        CHECK_STATUS(ela_attn_dense(be, q, k, k, o, NULL, NULL), ELA_ERR_UNSUPPORTED);
        CHECKF(test_has_text(ela_last_error(), "maxStorageBufferRange") &&
                   test_has_word(ela_last_error(), "k"),
               "%s: %s", cfg->name, ela_last_error());
    }
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(o);
}

int main(void) {
    test_seed();
    /* Before the first ela call: the plugin creates its instance once per process. */
    int have = gpu_cfgs_open(ELA_TEST_WANT_VULKAN, ELA_TEST_WANT_CUDA);
    if (!have) {
        gpu_cfgs_close();
        return test_summary("test_backend_parity");
    }
    for (int k = 1; k < gpu_n_cfgs; k++)
        check_refusals(&gpu_cfgs[k]);
    build_cases();
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    const char *verbose_env = getenv("ELA_TEST_VERBOSE");
    int verbose = verbose_env && *verbose_env && strcmp(verbose_env, "0") != 0;
    printf("%d cases, %d configurations\n", n_cases, gpu_n_cfgs);
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        if (only_case >= 0) {
            char what[200];
            case_str(&cases[ci], what, sizeof what);
            printf("case %d: %s\n", ci, what);
        }
        double t0 = test_now();
        check_case(ci);
        if (verbose) {
            char what[200];
            case_str(&cases[ci], what, sizeof what);
            printf("case %3d %6.2f s  %s\n", ci, test_now() - t0, what);
            fflush(stdout);
        }
    }
    gpu_cfgs_report();
    gpu_cfgs_close();
    return test_summary("test_backend_parity");
}

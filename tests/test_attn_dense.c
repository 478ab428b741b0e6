/* Unit test of ela_attn_dense on the "cpu" backend against the float64 reference
 * (tests/ref/attn_dense_ref.c), on fresh random inputs: every dtype mix, d 64/128 and odd ones,
 * GQA 1/4/8, causal offsets, odd lengths, strided views; every SIMD level the machine has
 * (ELA_CPU_LEVEL) and several thread counts (ELA_THREADS). Replay with ELA_TEST_SEED, run one
 * case with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_dense_ref.h"
#include "test_common.h"

/* Tolerances on the relative L2 error over the whole tensor (DESIGN.md 7), stated once.
 * The reference is fed exactly the values the kernel reads (inputs are generated in f32 and
 * rounded through their dtype first), so what is left is f32 accumulation order, the kernel's
 * exp, and the rounding of the output:
 *  - f32 inputs, f32 output: 1e-5 (DESIGN.md).
 *  - f16/bf16 inputs, f32 output: 2e-3, tighter than DESIGN.md's 1e-2 for 16-bit inputs: with
 *    the inputs rounded for the reference too and no output rounding, anything above f32
 *    accumulation noise is a bug, and a tighter bound catches more of them.
 *  - f16/bf16 output: 1e-2 (DESIGN.md): rounding the output alone costs up to 2^-11 (f16)
 *    or 2^-8 (bf16) relative per element.
 * LSE is always f32: 1e-5 with f32 inputs, 2e-3 with any 16-bit input.
 * q8_0 K/V count as 16-bit inputs: the reference reads the dequantized values too, so what
 * is left is the same f32 accumulation (the quantization error itself is the model test's). */
#define TOL_F32 1e-5
#define TOL_16_IN_F32_OUT 2e-3
#define TOL_16_OUT 1e-2

/* Slow builds (no optimisation, or AddressSanitizer) skip the largest cases on the scalar
 * level to stay within the suite's time budget; the SIMD levels still run them. */
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

/* ---- cases ---------------------------------------------------------------------------- */
enum {
    LAYOUT_PACKED,   /* every tensor packed (ela_tensor_new with NULL strides) */
    LAYOUT_QKV,      /* q: view of [L, Hq, 3d] at offset d; o: view of [L, Hq+1, d] skipping
                        head 0; lse: view of [L, Hq+3] at column 1; k/v packed */
    LAYOUT_CACHE,    /* k/v: views of a KV cache [Hkv, capacity, d] (capacity > n) starting at
                        token 3; o: ela_tensor_new with padded strides */
    LAYOUT_FUSED,    /* q: head 0.. of a fused token-major [L, Hq+2Hkv, d] projection output;
                        k/v: head-major views [Hkv, n, d] of one token-major [n, 2, Hkv, d]
                        buffer (token stride > head stride); o: view of [L, Hq, 2d] */
    LAYOUT_ALL,      /* QKV's q/o/lse views with CACHE's k/v */
    LAYOUT_COUNT
};
static const char *const layout_names[] = {"packed", "qkv-view", "kv-cache", "fused-tm", "all-views"};

enum {
    DATA_NORMAL, /* q, k, v ~ N(0, 1): scores ~ N(0, 1) */
    DATA_SHARP,  /* q ~ N(0, 3): peaked softmax rows */
    DATA_RAMP,   /* a component of q.k rising with the key index by ~16 across the row: the
                    running max changes at every tile and early tiles are rescaled to ~e^-16 */
    DATA_COUNT
};
static const char *const data_names[] = {"normal", "sharp", "ramp"};

#define F_THREADS 1u /* also run with ELA_THREADS=1, 3 and 16 */
#define F_BIG 2u     /* skipped on the scalar level in slow builds */
#define F_NO_LSE 4u  /* lse = NULL */

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int causal;
    int64_t q_pos0;
    float scale;
    ela_dtype tq, tkv, to;
    int layout, data;
    unsigned flags;
} attn_case;

#define MAX_CASES 512
static attn_case cases[MAX_CASES];
static int n_cases;

static void add_case(int64_t L, int64_t n, int64_t d, int hq, int hkv, int causal, int64_t q_pos0,
                     float scale, ela_dtype tq, ela_dtype tkv, ela_dtype to, int layout, int data,
                     unsigned flags) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    attn_case c = {L, n, d, hq, hkv, causal, q_pos0, scale, tq, tkv, to, layout, data, flags};
    cases[n_cases++] = c;
}

static void case_str(const attn_case *c, char *buf, size_t size) {
    snprintf(buf, size,
             "L=%lld n=%lld d=%lld Hq=%d Hkv=%d %s q_pos0=%lld scale=%g q=%s kv=%s o=%s "
             "layout=%s data=%s%s",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             c->causal ? "causal" : "non-causal", (long long)c->q_pos0, (double)c->scale,
             ela_dtype_name(c->tq), ela_dtype_name(c->tkv), ela_dtype_name(c->to),
             layout_names[c->layout], data_names[c->data], (c->flags & F_NO_LSE) ? " no-lse" : "");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    /* 1. Sweep: 4 dtype mixes x d {64, 128, 80} x GQA {1, 4, 8} x causal, each on one of a
     * rotation of shapes: prefill, decode (q_pos0 = n - L), rows that see only a prefix of the
     * keys, L > n, q_pos0 beyond n, single token, none a multiple of a tile. */
    static const ela_dtype mixes[4][3] = {
        {ELA_F32, ELA_F32, ELA_F32},
        {ELA_F16, ELA_F16, ELA_F16},
        {ELA_BF16, ELA_BF16, ELA_BF16},
        {ELA_F32, ELA_F16, ELA_F32}, /* the model runtime: f32 activations, f16 KV cache */
    };
    static const struct {
        int64_t L, n, q_pos0; /* q_pos0 < 0: n - L */
    } shapes[8] = {
        {129, 129, 0}, {7, 1000, -1}, {1, 4099, -1}, {129, 1000, 100},
        {1000, 7, 0},  {7, 129, 500}, {1, 1, 0},     {65, 200, 3},
    };
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{3, 3}, {8, 2}, {8, 1}}; /* Hq, Hkv: ratios 1, 4, 8 */
    int idx = 0;
    for (int m = 0; m < 4; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++)
                for (int causal = 0; causal < 2; causal++, idx++) {
                    /* Rotations chosen so every shape meets both causal modes, every dtype mix
                     * and every layout (idx / 2 decouples the shape from the causal bit). */
                    int s = (idx / 2 * 3 + causal * 5 + m) % 8;
                    int layout = (idx * 3 + idx / 5) % LAYOUT_COUNT;
                    int data = (idx / 3 + m) % DATA_COUNT;
                    int64_t L = shapes[s].L, n = shapes[s].n;
                    int64_t q_pos0 = shapes[s].q_pos0 < 0 ? n - L : shapes[s].q_pos0;
                    if (!causal && idx % 4 == 1)
                        q_pos0 = 37; /* ignored when not causal */
                    unsigned flags = idx % 7 == 3 ? F_NO_LSE : 0;
                    add_case(L, n, dims[di], gqa[g][0], gqa[g][1], causal, q_pos0, 0.0f,
                             mixes[m][0], mixes[m][1], mixes[m][2], layout, data, flags);
                }

    /* 2. Every q / kv / o dtype combination on one small odd shape. */
    idx = 0;
    for (int tq = 0; tq < 3; tq++)
        for (int tkv = 0; tkv < 3; tkv++)
            for (int to = 0; to < 3; to++, idx++)
                add_case(33, 77, 64, 4, 2, idx % 2, 10, 0.0f, (ela_dtype)tq, (ela_dtype)tkv,
                         (ela_dtype)to, idx % LAYOUT_COUNT, idx % DATA_COUNT, 0);

    /* 3. Long sequences (few heads where L and n are both large), decode over n with every
     * thread count (the split over n and its LSE merge), odd head dims, explicit scales. */
    add_case(4099, 4099, 64, 4, 1, 1, 0, 0.0f, F32, F32, F32, LAYOUT_PACKED, DATA_NORMAL,
             F_BIG | F_THREADS);
    add_case(4099, 4099, 64, 4, 4, 1, 0, 0.0f, F32, F16, F32, LAYOUT_ALL, DATA_RAMP, F_BIG);
    add_case(1000, 1000, 128, 4, 1, 1, 0, 0.0f, F32, F32, F32, LAYOUT_CACHE, DATA_RAMP, F_THREADS);
    add_case(1000, 4099, 64, 4, 1, 1, 0, 0.0f, F16, F16, F16, LAYOUT_QKV, DATA_SHARP, F_BIG);
    add_case(129, 4099, 96, 4, 4, 1, 4099 - 129, 0.0f, F16, F16, F16, LAYOUT_CACHE, DATA_NORMAL,
             F_THREADS);
    add_case(4099, 129, 64, 4, 1, 0, 0, 0.0f, F32, F32, F32, LAYOUT_FUSED, DATA_SHARP, F_THREADS);
    add_case(4099, 7, 128, 4, 4, 1, 0, 0.0f, F32, F16, F32, LAYOUT_QKV, DATA_NORMAL, 0);
    add_case(7, 4099, 128, 8, 1, 1, 4099 - 7, 0.0f, BF16, BF16, BF16, LAYOUT_CACHE, DATA_NORMAL,
             F_THREADS);
    add_case(1, 4099, 128, 32, 8, 1, 4098, 0.0f, F32, F16, F32, LAYOUT_CACHE, DATA_SHARP,
             F_THREADS);
    add_case(1, 4099, 128, 32, 8, 0, 0, 0.0f, F32, BF16, F32, LAYOUT_FUSED, DATA_RAMP, F_THREADS);
    static const int64_t decode_n[6] = {1, 7, 65, 129, 1000, 4099};
    for (int i = 0; i < 6; i++)
        add_case(1, decode_n[i], 128, 8, 2, 1, decode_n[i] - 1, 0.0f, F32, F32, F32,
                 (LAYOUT_CACHE + i) % LAYOUT_COUNT, i % DATA_COUNT, F_THREADS);
    add_case(7, 1000, 64, 8, 1, 1, 5000, 0.0f, F32, F32, F32, LAYOUT_PACKED, DATA_NORMAL,
             F_THREADS); /* every row past the last key */
    /* 4. Decode on the row path (R = L*G <= 8 rows read K/V in place): GQA 1, 4, 8 x KV dtype
     * f32/f16/bf16 (q f32, as the model runtime has it, or q of the KV dtype), d 64/128/80,
     * key counts around the 64-key tile and long enough to split over threads; then L = 2 with
     * G = 4 (R = 8) and d = 96, and an odd d (17) that takes the tiled path. */
    static const int64_t row_n[6] = {1, 63, 65, 129, 1000, 4099};
    idx = 0;
    for (int g = 0; g < 3; g++)
        for (int t = 0; t < 3; t++)
            for (int di = 0; di < 3; di++, idx++) {
                ela_dtype tkv = (ela_dtype)t, tq = idx % 2 ? tkv : F32;
                int64_t n = row_n[idx % 6];
                int causal = idx % 4 != 3;
                add_case(1, n, dims[di], gqa[g][0], gqa[g][1], causal, causal ? n - 1 : 0, 0.0f,
                         tq, tkv, F32, idx % LAYOUT_COUNT, idx % DATA_COUNT,
                         idx % 3 == 0 ? F_THREADS : 0);
            }
    add_case(2, 1000, 128, 8, 2, 1, 998, 0.0f, F32, F16, F32, LAYOUT_CACHE, DATA_RAMP, F_THREADS);
    add_case(2, 4099, 96, 8, 2, 1, 4097, 0.0f, BF16, BF16, BF16, LAYOUT_FUSED, DATA_SHARP, 0);
    add_case(1, 700, 17, 4, 1, 1, 699, 0.0f, F32, F16, F32, LAYOUT_QKV, DATA_NORMAL, F_THREADS);
    /* Causal prefill with few query groups and >= 1024 keys: with many threads the keys are
     * split, some chunks lie past a whole group (q_pos0 = 0) or past only some of its rows
     * (q_pos0 = 10 moves the diagonal off the 64-key chunk boundaries). */
    add_case(1100, 1100, 64, 1, 1, 1, 0, 0.0f, F32, F32, F32, LAYOUT_PACKED, DATA_NORMAL, F_THREADS);
    add_case(1100, 1110, 64, 1, 1, 1, 10, 0.0f, F32, F16, F16, LAYOUT_CACHE, DATA_RAMP, F_THREADS);
    add_case(129, 300, 256, 4, 2, 1, 0, 0.0f, F32, F32, F32, LAYOUT_ALL, DATA_NORMAL, 0);
    add_case(129, 300, 256, 4, 2, 1, 20, 0.0f, BF16, BF16, F32, LAYOUT_QKV, DATA_SHARP, 0);
    add_case(129, 129, 17, 6, 3, 1, 0, 0.0f, F32, F32, F32, LAYOUT_QKV, DATA_NORMAL, F_THREADS);
    add_case(65, 130, 1, 2, 1, 0, 0, 0.0f, F32, F16, F16, LAYOUT_CACHE, DATA_NORMAL, 0);
    add_case(100, 257, 32, 16, 2, 1, 157, 0.0f, F16, F16, F32, LAYOUT_FUSED, DATA_NORMAL, 0);
    add_case(129, 300, 64, 4, 1, 1, 10, 0.3f, F32, F32, F32, LAYOUT_PACKED, DATA_NORMAL, 0);
    add_case(129, 300, 64, 4, 1, 0, 0, 0.05f, F32, BF16, F32, LAYOUT_CACHE, DATA_SHARP, 0);
    add_case(129, 300, 64, 4, 1, 1, 0, -0.2f, F32, F32, F32, LAYOUT_QKV, DATA_NORMAL, 0);

    /* 5. q8_0 K/V (a quantized KV cache; d a multiple of 32): decode on the row path with GQA
     * 1/4/8, d 64/128, key counts around the tile and long enough to split over threads, every
     * K/V layout (cache views start at token 3, fused views interleave K and V blocks); L = 2
     * with G = 4 (R = 8, still rows); the model's shape; then prefill (tiled path) with f32,
     * f16 and bf16 q and o, d 32 and 256, causal offsets and non-causal. */
    const ela_dtype Q8 = ELA_Q8_0;
    static const int64_t q8_n[5] = {1, 63, 65, 1000, 4099};
    idx = 0;
    for (int g = 0; g < 3; g++)
        for (int di = 0; di < 2; di++, idx++) {
            int64_t n = q8_n[(idx + g) % 5];
            int causal = idx != 4;
            add_case(1, n, dims[di], gqa[g][0], gqa[g][1], causal, causal ? n - 1 : 0, 0.0f,
                     F32, Q8, F32, (idx * 2 + 1) % LAYOUT_COUNT, idx % DATA_COUNT,
                     idx % 2 == 0 ? F_THREADS : 0);
        }
    add_case(2, 1000, 128, 8, 2, 1, 998, 0.0f, F32, Q8, F32, LAYOUT_FUSED, DATA_RAMP, F_THREADS);
    add_case(1, 4099, 128, 32, 8, 1, 4098, 0.0f, F32, Q8, F32, LAYOUT_CACHE, DATA_SHARP,
             F_THREADS);
    add_case(1, 129, 256, 4, 4, 1, 128, 0.0f, F16, Q8, F16, LAYOUT_PACKED, DATA_NORMAL, 0);
    add_case(129, 129, 64, 4, 2, 1, 0, 0.0f, F32, Q8, F32, LAYOUT_CACHE, DATA_RAMP, F_THREADS);
    add_case(300, 300, 128, 4, 1, 1, 0, 0.0f, F16, Q8, F16, LAYOUT_FUSED, DATA_NORMAL, 0);
    add_case(65, 200, 32, 8, 2, 0, 0, 0.0f, BF16, Q8, F32, LAYOUT_ALL, DATA_SHARP, 0);
    add_case(129, 300, 256, 4, 2, 1, 20, 0.0f, F32, Q8, BF16, LAYOUT_QKV, DATA_NORMAL, 0);
    add_case(1100, 1110, 64, 1, 1, 1, 10, 0.0f, F32, Q8, F32, LAYOUT_CACHE, DATA_NORMAL,
             F_THREADS);
}

/* ---- host data -------------------------------------------------------------------------- */
typedef struct {
    float *q, *k, *v;    /* rounded through their dtypes: what the kernel reads */
    double *qd, *kd, *vd; /* the same values for the reference */
    double *o, *lse;      /* reference outputs */
} case_data;

static void case_data_free(case_data *h) {
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->qd);
    free(h->kd);
    free(h->vd);
    free(h->o);
    free(h->lse);
    memset(h, 0, sizeof *h);
}

static int case_data_make(const attn_case *c, int case_index, case_data *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    h->q = malloc((size_t)nq * sizeof(float));
    h->k = malloc((size_t)nkv * sizeof(float));
    h->v = malloc((size_t)nkv * sizeof(float));
    h->o = malloc((size_t)nq * sizeof(double));
    h->lse = malloc((size_t)(c->L * c->hq) * sizeof(double));
    if (!h->q || !h->k || !h->v || !h->o || !h->lse)
        return -1;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)case_index + 1000);
    test_fill_normal(&rng, h->q, nq, c->data == DATA_SHARP ? 3.0f : 1.0f);
    test_fill_normal(&rng, h->k, nkv, 1.0f);
    test_fill_normal(&rng, h->v, nkv, 1.0f);
    if (c->data == DATA_RAMP) {
        /* q[.., 0] = 4 sqrt(d) / 8 and k[g, j, 0] from -4 to 4: the scaled score rises by
         * about 16 * |scale| sqrt(d) / 8 across the keys. */
        for (int64_t r = 0; r < c->L * c->hq; r++)
            h->q[r * c->d] = 0.5f * sqrtf((float)c->d);
        for (int64_t r = 0; r < c->hkv * c->n; r++)
            h->k[r * c->d] = c->n > 1 ? -4.0f + 8.0f * (float)(r % c->n) / (float)(c->n - 1) : 4.0f;
    }
    if (test_round_through(h->q, nq, c->tq) || test_round_through(h->k, nkv, c->tkv) ||
        test_round_through(h->v, nkv, c->tkv))
        return -1;
    h->qd = test_to_double(h->q, nq);
    h->kd = test_to_double(h->k, nkv);
    h->vd = test_to_double(h->v, nkv);
    if (!h->qd || !h->kd || !h->vd)
        return -1;
    ref_attn_dense_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->causal, c->q_pos0, c->scale};
    return ref_attn_dense(&s, h->qd, h->kd, h->vd, h->o, h->lse);
}

/* ---- device tensors by layout ------------------------------------------------------------- */
/* A tensor under test, possibly a view of a bigger base filled with a sentinel. The element
 * strides and offset describe where the view sits in the packed base, so the parts of the
 * base outside the view can be checked afterwards. */
typedef struct {
    ela_tensor *base, *t; /* t == base when not a view */
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

static void dev_tensor_free(dev_tensor *x) {
    if (x->t != x->base)
        ela_tensor_free(x->t);
    ela_tensor_free(x->base);
    x->t = x->base = NULL;
}

/* Packed tensor [e0, e1, e2] (n_dims 2 or 3). */
static ela_status dev_packed(ela_backend *be, ela_dtype dt, int n_dims, int64_t e0, int64_t e1,
                             int64_t e2, dev_tensor *x) {
    memset(x, 0, sizeof *x);
    x->n_dims = x->base_dims = n_dims;
    int64_t e[3] = {e0, e1, e2};
    for (int i = 0; i < n_dims; i++)
        x->ext[i] = x->base_ext[i] = e[i];
    int64_t s = 1;
    for (int i = n_dims - 1; i >= 0; i--) {
        x->stride_el[i] = s;
        s *= e[i];
    }
    ela_status st = ela_tensor_new(be, dt, n_dims, x->ext, NULL, &x->base);
    x->t = x->base;
    return st;
}

/* View ext (n_dims) with element strides and offset into a packed base base_ext (base_dims),
 * the whole base first filled with `fill` (NaN for inputs: reading outside the view poisons
 * the result; a finite sentinel for outputs: writing outside it is caught). */
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
    for (int i = 0; i < n_dims; i++)
        strides[i] = test_stride_bytes(dt, stride_el[i]);
    return ela_tensor_view(x->base, n_dims, ext, strides,
                           (int64_t)ela_dtype_row_bytes(dt, offset_el), &x->t);
}

/* Count base elements outside the view that no longer hold the sentinel. */
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
    int have_lse;
} dev_set;

static void dev_set_free(dev_set *s) {
    dev_tensor_free(&s->q);
    dev_tensor_free(&s->k);
    dev_tensor_free(&s->v);
    dev_tensor_free(&s->o);
    dev_tensor_free(&s->lse);
}

#define OUT_SENTINEL (-7.75f) /* exact in f16 and bf16 */

static ela_status dev_set_make(ela_backend *be, const attn_case *c, dev_set *s) {
    memset(s, 0, sizeof *s);
    const int64_t L = c->L, n = c->n, d = c->d, hq = c->hq, hkv = c->hkv;
    const float nan = NAN;
    ela_status st = ELA_OK;
    int q_qkv = c->layout == LAYOUT_QKV || c->layout == LAYOUT_ALL;
    int kv_cache = c->layout == LAYOUT_CACHE || c->layout == LAYOUT_ALL;
    s->have_lse = !(c->flags & F_NO_LSE);

    /* q */
    if (q_qkv) {
        int64_t be3[3] = {L, hq, 3 * d}, ext[3] = {L, hq, d}, str[3] = {hq * 3 * d, 3 * d, 1};
        st = dev_view(be, c->tq, 3, be3, 3, ext, str, d, nan, &s->q);
    } else if (c->layout == LAYOUT_FUSED) {
        int64_t be3[3] = {L, hq + 2 * hkv, d}, ext[3] = {L, hq, d};
        int64_t str[3] = {(hq + 2 * hkv) * d, d, 1};
        st = dev_view(be, c->tq, 3, be3, 3, ext, str, 0, nan, &s->q);
    } else {
        st = dev_packed(be, c->tq, 3, L, hq, d, &s->q);
    }
    if (st != ELA_OK)
        return st;

    /* k, v */
    /* q8_0 turns a NaN block into zeros: outside the views it holds a large finite value
     * instead, which poisons the result just as well if read. */
    const float kv_fill = c->tkv == ELA_Q8_0 ? 1e4f : nan;
    for (int which = 0; which < 2; which++) {
        dev_tensor *x = which ? &s->v : &s->k;
        if (kv_cache) {
            /* cache [Hkv, capacity, d], view of tokens [3, 3 + n): past-the-end tokens are NaN */
            int64_t cap = n + 3 + 61 + which * 5;
            int64_t be3[3] = {hkv, cap, d}, ext[3] = {hkv, n, d}, str[3] = {cap * d, d, 1};
            st = dev_view(be, c->tkv, 3, be3, 3, ext, str, 3 * d, kv_fill, x);
        } else if (c->layout == LAYOUT_FUSED) {
            /* [n, 2, Hkv, d] token-major; k = [:, 0], v = [:, 1], viewed head-major */
            int64_t be4[4] = {n, 2, hkv, d}, ext[3] = {hkv, n, d}, str[3] = {d, 2 * hkv * d, 1};
            st = dev_view(be, c->tkv, 4, be4, 3, ext, str, which * hkv * d, kv_fill, x);
        } else {
            st = dev_packed(be, c->tkv, 3, hkv, n, d, x);
        }
        if (st != ELA_OK)
            return st;
    }

    /* o */
    if (q_qkv) {
        int64_t be3[3] = {L, hq + 1, d}, ext[3] = {L, hq, d}, str[3] = {(hq + 1) * d, d, 1};
        st = dev_view(be, c->to, 3, be3, 3, ext, str, d, OUT_SENTINEL, &s->o);
    } else if (c->layout == LAYOUT_FUSED) {
        int64_t be3[3] = {L, hq, 2 * d}, ext[3] = {L, hq, d}, str[3] = {hq * 2 * d, 2 * d, 1};
        st = dev_view(be, c->to, 3, be3, 3, ext, str, 0, OUT_SENTINEL, &s->o);
    } else if (c->layout == LAYOUT_CACHE) {
        /* a strided tensor of its own: rows and heads padded */
        memset(&s->o, 0, sizeof s->o);
        size_t es = ela_dtype_size(c->to);
        int64_t ext[3] = {L, hq, d};
        int64_t str[3] = {(hq * (d + 5) + 3) * (int64_t)es, (d + 5) * (int64_t)es, (int64_t)es};
        st = ela_tensor_new(be, c->to, 3, ext, str, &s->o.base);
        s->o.t = s->o.base;
    } else {
        st = dev_packed(be, c->to, 3, L, hq, d, &s->o);
    }
    if (st != ELA_OK)
        return st;

    /* lse */
    if (s->have_lse) {
        if (q_qkv) {
            int64_t be2[2] = {L, hq + 3}, ext[2] = {L, hq}, str[2] = {hq + 3, 1};
            st = dev_view(be, ELA_F32, 2, be2, 2, ext, str, 1, OUT_SENTINEL, &s->lse);
        } else {
            st = dev_packed(be, ELA_F32, 2, L, hq, 0, &s->lse);
        }
        if (st != ELA_OK)
            return st;
    }

    return ELA_OK;
}

static ela_status dev_set_write(dev_set *s, const attn_case *c, const case_data *h) {
    ela_status st = ela_tensor_write_f32(s->q.t, h->q, c->L * c->hq * c->d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->k.t, h->k, (int64_t)c->hkv * c->n * c->d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(s->v.t, h->v, (int64_t)c->hkv * c->n * c->d);
    return st;
}

/* ---- backends ------------------------------------------------------------------------------ */
typedef struct {
    const char *level;   /* ELA_CPU_LEVEL */
    const char *threads; /* ELA_THREADS, NULL = default */
    ela_backend *be;
    double seconds;      /* time inside ela_attn_dense */
    int runs;
} backend_cfg;

#define MAX_CFGS 12
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
    /* 16 threads on a small machine: many more key splits per query group (decode) and chunks
     * of keys that lie past every row of a causal group, or past some of its rows. */
    static const char *const threads[] = {NULL, "1", "3", "16"};
    for (int l = 0; l < 3; l++) {
        if (!level_supported(levels[l])) {
            /* A level the machine lacks is refused, never silently replaced. */
            ela_backend *be = NULL;
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", NULL);
            CHECK_STATUS(ela_backend_open("cpu", &be), ELA_ERR_UNSUPPORTED);
            CHECK(be == NULL);
            ela_backend_close(be);
            printf("level %s: not supported by this CPU (open refused as expected)\n", levels[l]);
            continue;
        }
        for (int t = 0; t < 4; t++) {
            backend_cfg *cfg = &cfgs[n_cfgs];
            cfg->level = levels[l];
            cfg->threads = threads[t];
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", threads[t]);
            CHECK_STATUS(ela_backend_open("cpu", &cfg->be), ELA_OK);
            if (!cfg->be)
                continue;
            CHECK(strcmp(ela_backend_name(cfg->be), "cpu") == 0);
            ela_device_info info;
            CHECK_STATUS(ela_backend_device_info(cfg->be, &info), ELA_OK);
            /* When the details name the SIMD level, it is the forced one. */
            const char *simd = strstr(info.details, "simd=");
            if (simd) {
                size_t len = strlen(levels[l]);
                CHECKF(strncmp(simd + 5, levels[l], len) == 0 &&
                           (simd[5 + len] == ' ' || simd[5 + len] == '\0'),
                       "forced %s, device details say \"%s\"", levels[l], info.details);
            }
            if (t == 0)
                printf("level %s: %s\n", levels[l], info.details);
            n_cfgs++;
        }
    }
    /* On x86 "neon" names a level this CPU cannot run. */
#if defined(__x86_64__)
    {
        ela_backend *be = NULL;
        test_setenv("ELA_CPU_LEVEL", "neon");
        test_setenv("ELA_THREADS", NULL);
        CHECK_STATUS(ela_backend_open("cpu", &be), ELA_ERR_UNSUPPORTED);
        CHECK(be == NULL && test_has_text(ela_last_error(), "neon"));
        ela_backend_close(be);
    }
#endif
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
}

/* ---- running and checking -------------------------------------------------------------------- */
static double tolerance_o(const attn_case *c) {
    if (c->to != ELA_F32)
        return TOL_16_OUT;
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

static double tolerance_lse(const attn_case *c) {
    return c->tq == ELA_F32 && c->tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

/* Worst error seen per tolerance class, printed at the end (how much margin is left). */
static double worst_o[3], worst_lse[3];
static int worst_o_case[3] = {-1, -1, -1};
static int tol_class(double tol) { return tol == TOL_F32 ? 0 : tol == TOL_16_IN_F32_OUT ? 1 : 2; }

static void run_on(backend_cfg *cfg, const attn_case *c, int ci, const case_data *h) {
    char what[256];
    case_str(c, what, sizeof what);
    const char *thr = cfg->threads ? cfg->threads : "default";
    dev_set s;
    ela_status st = dev_set_make(cfg->be, c, &s);
    if (st == ELA_OK)
        st = dev_set_write(&s, c, h);
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: setup: %s (%s)", ci, what, cfg->level,
           thr, ela_status_str(st), ela_last_error());
    if (st != ELA_OK) {
        dev_set_free(&s);
        return;
    }
    ela_attn_params p = ela_attn_params_default();
    p.causal = c->causal;
    p.q_pos0 = c->q_pos0;
    p.scale = c->scale;
    double t0 = test_now();
    st = ela_attn_dense(cfg->be, s.q.t, s.k.t, s.v.t, s.o.t, s.have_lse ? s.lse.t : NULL, &p);
    cfg->seconds += test_now() - t0;
    cfg->runs++;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: ela_attn_dense: %s (%s)", ci, what,
           cfg->level, thr, ela_status_str(st), ela_last_error());
    if (st == ELA_OK) {
        const int64_t no = c->L * c->hq * c->d, nl = c->L * c->hq;
        float *o = malloc((size_t)no * sizeof *o), *lse = malloc((size_t)nl * sizeof *lse);
        CHECK(o && lse);
        if (o && lse) {
            CHECK_STATUS(ela_tensor_read_f32(s.o.t, o, no), ELA_OK);
            double err = test_rel_l2(h->o, o, no), tol = tolerance_o(c);
            CHECKF(err <= tol, "case %d [%s] level %s threads %s: O rel L2 error %.3g > %.0e", ci,
                   what, cfg->level, thr, err, tol);
            if (err > worst_o[tol_class(tol)]) {
                worst_o[tol_class(tol)] = err;
                worst_o_case[tol_class(tol)] = ci;
            }
            if (s.have_lse) {
                CHECK_STATUS(ela_tensor_read_f32(s.lse.t, lse, nl), ELA_OK);
                double el = test_rel_l2(h->lse, lse, nl), tl = tolerance_lse(c);
                CHECKF(el <= tl, "case %d [%s] level %s threads %s: LSE rel L2 error %.3g > %.0e",
                       ci, what, cfg->level, thr, el, tl);
                if (el > worst_lse[tol_class(tl)])
                    worst_lse[tol_class(tl)] = el;
            }
            int64_t changed_o = dev_outside_changed(&s.o);
            int64_t changed_l = s.have_lse ? dev_outside_changed(&s.lse) : 0;
            CHECKF(changed_o == 0 && changed_l == 0,
                   "case %d [%s] level %s threads %s: %lld elements of o's base and %lld of lse's "
                   "base outside the views were written",
                   ci, what, cfg->level, thr, (long long)changed_o, (long long)changed_l);
        }
        free(o);
        free(lse);
    }
    dev_set_free(&s);
}

static void check_supports(void) {
    if (n_cfgs == 0)
        return;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                ela_dtype t[3] = {(ela_dtype)a, (ela_dtype)b, (ela_dtype)c};
                CHECKF(ela_backend_supports(cfgs[0].be, ELA_OP_ATTN_DENSE, t, 3),
                       "q %s kv %s o %s", ela_dtype_name(t[0]), ela_dtype_name(t[1]),
                       ela_dtype_name(t[2]));
            }
    ela_dtype q8[3] = {ELA_F32, ELA_Q8_0, ELA_F32};
    CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_ATTN_DENSE, q8, 3));
}

/* q8_0 is for k and v only, and only in whole blocks: a q8_0 q or o, k and v of different
 * dtypes, a head dim that is not a multiple of 32 and a view that would split blocks are
 * refused with a message naming the tensor (or the extent / stride). */
static void check_q8_errors(void) {
    if (n_cfgs == 0)
        return;
    ela_backend *be = cfgs[0].be;
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *q8 = NULL, *v16 = NULL, *bad = NULL;
    int64_t qs[3] = {3, 4, 64}, ks[3] = {2, 40, 64};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qs, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 3, ks, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 3, ks, NULL, &v), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, qs, NULL, &o), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 3, qs, NULL, &q8), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ks, NULL, &v16), ELA_OK);
    if (!q || !k || !v || !o || !q8 || !v16)
        goto done;
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = 37;
    /* the valid call first, so the failures below are the dtypes' */
    CHECK_STATUS(ela_attn_dense(be, q, k, v, o, NULL, &p), ELA_OK);
    CHECK_STATUS(ela_attn_dense(be, q8, k, v, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "q") && test_has_text(ela_last_error(), "q8_0"));
    CHECK_STATUS(ela_attn_dense(be, q, k, v, q8, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "o") && test_has_text(ela_last_error(), "q8_0"));
    CHECK_STATUS(ela_attn_dense(be, q, k, v16, o, NULL, &p), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "k") && test_has_word(ela_last_error(), "v"));
    /* d = 48: a q8_0 K cannot exist, nor a view of 48 of its 64 columns, nor one whose row
     * stride or offset falls inside a block */
    int64_t k48[3] = {2, 40, 48};
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 3, k48, NULL, &bad), ELA_ERR_INVALID_ARG);
    CHECK(bad == NULL && test_has_text(ela_last_error(), "multiple of 32"));
    int64_t st[3] = {40 * 68, 68, 34};
    CHECK_STATUS(ela_tensor_view(k, 3, k48, st, 0, &bad), ELA_ERR_INVALID_ARG);
    CHECK(bad == NULL && test_has_text(ela_last_error(), "multiple of 32"));
    int64_t k32[3] = {2, 40, 32}, st_mid[3] = {40 * 68, 51, 34};
    CHECK_STATUS(ela_tensor_view(k, 3, k32, st_mid, 0, &bad), ELA_ERR_INVALID_ARG);
    CHECK(bad == NULL && test_has_text(ela_last_error(), "stride"));
    CHECK_STATUS(ela_tensor_view(k, 3, k32, st, 17, &bad), ELA_ERR_INVALID_ARG);
    CHECK(bad == NULL);
    /* a view of the first block of each row is a valid q8_0 K/V of d = 32, which q's d = 64
     * does not match */
    CHECK_STATUS(ela_tensor_view(k, 3, k32, st, 0, &bad), ELA_OK);
    if (bad) {
        CHECK_STATUS(ela_attn_dense(be, q, bad, bad, o, NULL, &p), ELA_ERR_INVALID_ARG);
        CHECK(test_has_word(ela_last_error(), "k"));
    }
done:
    ela_tensor_free(bad);
    ela_tensor_free(v16);
    ela_tensor_free(q8);
    ela_tensor_free(o);
    ela_tensor_free(v);
    ela_tensor_free(k);
    ela_tensor_free(q);
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    check_supports();
    check_q8_errors();
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations%s\n", n_cases, n_cfgs,
           SLOW_BUILD ? " (slow build: big cases skip the scalar level)" : "");
    double t_ref = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        const attn_case *c = &cases[ci];
        if (only_case >= 0) {
            char what[256];
            case_str(c, what, sizeof what);
            printf("case %d: %s\n", ci, what);
        }
        case_data h;
        double t0 = test_now();
        int rc = case_data_make(c, ci, &h);
        t_ref += test_now() - t0;
        CHECKF(rc == 0, "case %d: building inputs or reference failed", ci);
        for (int k = 0; rc == 0 && k < n_cfgs; k++) {
            backend_cfg *cfg = &cfgs[k];
            if (cfg->threads && !(c->flags & F_THREADS))
                continue;
            if (SLOW_BUILD && (c->flags & F_BIG) && strcmp(cfg->level, "scalar") == 0)
                continue;
            run_on(cfg, c, ci, &h);
        }
        case_data_free(&h);
    }
    printf("reference: %.2f s\n", t_ref);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.2f s in ela_attn_dense\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs, cfgs[k].seconds);
    printf("worst rel L2 error of O: f32 %.2e (tol %.0e, case %d), 16-bit in/f32 out %.2e "
           "(tol %.0e, case %d), 16-bit out %.2e (tol %.0e, case %d)\n",
           worst_o[0], TOL_F32, worst_o_case[0], worst_o[1], TOL_16_IN_F32_OUT, worst_o_case[1],
           worst_o[2], TOL_16_OUT, worst_o_case[2]);
    printf("worst rel L2 error of LSE: f32 in %.2e, 16-bit in %.2e\n", worst_lse[0], worst_lse[1]);
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_attn_dense");
}

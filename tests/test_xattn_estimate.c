/* Unit test of ela_xattn_estimate on the "cpu" backend against the float64 reference
 * (tests/ref/xattn_estimate_ref.c): the masks must match EXACTLY. Random inputs with a per-key-
 * block bias (clear mass gaps), regenerated whenever the reference's selection came within 1e-4
 * (relative to the row mass) of a tie; planted "needle" key blocks whose mask is known in
 * advance; strides 1..128, thresholds, chunks (q_pos0 > 0), L and n not multiples of S or 128,
 * head subsets in any order, GQA 1/4/8, dtypes, d 64/128/80; errors; OOM. Every SIMD level and
 * several thread counts. Replay with ELA_TEST_SEED, one case with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/xattn_estimate_ref.h"
#include "test_common.h"

/* A selection whose float64 margin is below this (relative to the row mass) is a near-tie that
 * f32 accumulation may legitimately resolve the other way: such inputs are regenerated. */
#define TIE_MARGIN 1e-4
#define MAX_TRIES 30

#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

enum {
    D_BIASED, /* normal q, k plus a shared direction whose weight varies per key block */
    D_SHARP,  /* normal q (std 3), k: no planted structure */
    D_NEEDLE, /* planted needle key blocks; the mask is known without the reference */
};
static const char *const data_names[] = {"biased", "sharp", "needle"};

enum { H_ALL, H_SUBSET, H_REVERSED }; /* which query heads are listed */
static const char *const heads_names[] = {"all", "subset", "reversed"};

#define F_THREADS 1u
#define F_BIG 2u     /* not on the scalar level */
#define F_STRIDED 4u /* q, k and masks with padded strides */

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;
    ela_dtype tq, tk;
    int stride;
    float threshold;
    int data, heads;
    unsigned flags;
} case_t;

#define MAX_CASES 96
static case_t cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t n, int64_t d, int hq, int hkv, int64_t q_pos0, ela_dtype tq,
                ela_dtype tk, int stride, float threshold, int data, int heads, unsigned flags) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    case_t c = {L, n, d, hq, hkv, q_pos0, tq, tk, stride, threshold, data, heads, flags};
    cases[n_cases++] = c;
}

static void case_str(const case_t *c, char *buf, size_t size) {
    snprintf(buf, size,
             "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld q=%s k=%s S=%d tau=%g data=%s "
             "heads=%s%s",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->q_pos0, ela_dtype_name(c->tq), ela_dtype_name(c->tk), c->stride,
             (double)c->threshold, data_names[c->data], heads_names[c->heads],
             c->flags & F_STRIDED ? " strided" : "");
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    static const ela_dtype mixes[3][2] = {{ELA_F32, ELA_F32}, {ELA_F16, ELA_F16},
                                          {ELA_BF16, ELA_BF16}};
    static const struct {
        int64_t L, n, q_pos0;
    } shapes[6] = {
        {700, 700, 0}, {300, 940, 640}, {1000, 1000, 0}, {333, 1100, 768}, {129, 129, 0},
        {600, 1500, 256}, /* keys beyond the last query */
    };
    static const int64_t dims[3] = {64, 128, 80};
    static const int gqa[3][2] = {{4, 4}, {8, 2}, {8, 1}};
    static const int strides[4] = {16, 8, 16, 4};
    static const float taus[4] = {0.9f, 0.8f, 0.95f, 0.6f};
    int idx = 0;
    for (int m = 0; m < 3; m++)
        for (int di = 0; di < 3; di++)
            for (int g = 0; g < 3; g++, idx++) {
                int s = (idx + m) % 6;
                add(shapes[s].L, shapes[s].n, dims[di], gqa[g][0], gqa[g][1], shapes[s].q_pos0,
                    mixes[m][0], mixes[m][1], strides[idx % 4], taus[(idx / 3) % 4],
                    idx % 7 == 3 ? D_SHARP : D_BIASED, idx % 3, idx % 5 == 1 ? F_STRIDED : 0);
            }
    /* Strides from 1 to 128; odd lengths against them. */
    add(300, 300, 64, 2, 1, 0, F32, F32, 1, 0.9f, D_BIASED, H_ALL, 0);
    add(301, 429, 64, 2, 2, 128, F32, F16, 2, 0.9f, D_BIASED, H_ALL, 0);
    add(777, 777, 64, 4, 2, 0, F16, F16, 32, 0.9f, D_BIASED, H_SUBSET, 0);
    add(777, 777, 64, 4, 2, 0, F32, F32, 64, 0.7f, D_BIASED, H_ALL, 0);
    add(1000, 1000, 64, 4, 1, 0, F32, BF16, 128, 0.9f, D_BIASED, H_REVERSED, 0);
    add(1, 1, 64, 2, 1, 0, F32, F32, 16, 0.9f, D_BIASED, H_ALL, 0);
    add(5, 133, 64, 2, 1, 128, F32, F32, 16, 0.9f, D_BIASED, H_ALL, 0);
    add(131, 1000, 128, 4, 2, 0, F32, F32, 16, 0.9f, D_BIASED, H_ALL, 0); /* n > L */
    add(600, 300, 64, 4, 2, 0, F32, F32, 8, 0.9f, D_BIASED, H_ALL, 0);    /* n < L */
    add(500, 500, 64, 2, 1, 0, F32, F32, 16, 0.05f, D_BIASED, H_ALL, 0);  /* forced blocks only */
    add(500, 500, 17, 3, 3, 0, F32, F32, 16, 0.9f, D_BIASED, H_ALL, 0);
    add(400, 400, 256, 4, 2, 0, F32, F32, 16, 0.9f, D_BIASED, H_ALL, 0);
    /* Needles: the mask is known. */
    add(1500, 1500, 128, 8, 2, 0, F16, F16, 16, 0.9f, D_NEEDLE, H_ALL, F_THREADS);
    add(700, 1340, 64, 4, 1, 640, BF16, BF16, 8, 0.9f, D_NEEDLE, H_SUBSET, 0);
    add(1000, 1000, 128, 4, 4, 0, F32, F32, 16, 0.8f, D_NEEDLE, H_REVERSED, F_STRIDED);
    add(900, 900, 64, 2, 1, 0, F32, F32, 1, 0.9f, D_NEEDLE, H_ALL, 0);
    /* Larger, every thread count. */
    add(3000, 3000, 128, 8, 2, 0, F16, F16, 16, 0.9f, D_BIASED, H_ALL, F_THREADS | F_BIG);
    add(2000, 4048, 128, 8, 8, 2048, BF16, BF16, 8, 0.9f, D_BIASED, H_SUBSET, F_THREADS | F_BIG);
    add(1200, 1200, 64, 8, 1, 0, F32, F32, 16, 0.9f, D_BIASED, H_ALL, F_THREADS | F_STRIDED);
    /* q8_0 keys (a quantized KV cache), quantized before the reference and its margin see them,
     * so the masks must still match exactly: strides 16, 8 and 1, a chunk, strided, a subset. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(777, 777, 64, 4, 2, 0, F32, Q8, 16, 0.9f, D_BIASED, H_ALL, F_THREADS | F_STRIDED);
    add(700, 1340, 128, 4, 1, 640, F16, Q8, 8, 0.9f, D_NEEDLE, H_SUBSET, 0);
    add(300, 300, 32, 2, 1, 0, BF16, Q8, 1, 0.9f, D_BIASED, H_ALL, 0);
    add(1000, 1000, 128, 8, 2, 0, F32, Q8, 16, 0.8f, D_NEEDLE, H_REVERSED, F_THREADS);
}

/* ---- host data ---------------------------------------------------------------------------- */
typedef struct {
    float *q, *k;
    double *qd, *kd;
    int *heads;
    int n_heads;
    int64_t nqb, nkb, kept;
    uint8_t *masks;   /* reference */
    uint8_t *expect;  /* D_NEEDLE: the known mask, else NULL */
    double margin;
    int tries;
} host_t;

static void host_free(host_t *h) {
    free(h->q);
    free(h->k);
    free(h->qd);
    free(h->kd);
    free(h->heads);
    free(h->masks);
    free(h->expect);
    memset(h, 0, sizeof *h);
}

/* Needle blocks: 1 always (so every row from block 2 on sees one), then about 2 more. */
static int is_needle(int64_t J, int64_t nkb) {
    return J == 1 || (nkb > 4 && J == nkb / 2) || (nkb > 6 && J == nkb - 2);
}

static void fill(const case_t *c, test_rng *rng, float *q, float *k) {
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d, d = c->d;
    const int64_t nkb = (c->n + 127) / 128;
    if (c->data == D_SHARP) {
        test_fill_normal(rng, q, nq, 3.0f);
        test_fill_normal(rng, k, nk, 1.0f);
        return;
    }
    /* u: a fixed unit direction (its entries +-1/sqrt(d)). */
    float *u = malloc((size_t)d * sizeof *u);
    if (!u)
        return;
    for (int64_t x = 0; x < d; x++)
        u[x] = (test_rng_u64(rng) & 1 ? 1.0f : -1.0f) / sqrtf((float)d);
    if (c->data == D_BIASED) {
        /* scaled score bias alpha * beta_J / sqrt(d) spans about +-6 */
        test_fill_normal(rng, q, nq, 1.0f);
        test_fill_normal(rng, k, nk, 1.0f);
        for (int64_t r = 0; r < c->L * c->hq; r++) {
            float alpha = (float)test_rng_uniform(rng, 1.0, 2.0) * sqrtf((float)d);
            for (int64_t x = 0; x < d; x++)
                q[r * d + x] += alpha * u[x];
        }
        float *beta = malloc((size_t)(c->hkv * nkb) * sizeof *beta);
        if (!beta) {
            free(u);
            return;
        }
        for (int64_t i = 0; i < c->hkv * nkb; i++)
            beta[i] = (float)test_rng_uniform(rng, -3.0, 3.0) / sqrtf((float)d);
        for (int64_t g = 0; g < c->hkv; g++)
            for (int64_t j = 0; j < c->n; j++)
                for (int64_t x = 0; x < d; x++)
                    k[(g * c->n + j) * d + x] += beta[g * nkb + j / 128] * sqrtf((float)d) * u[x];
        free(beta);
    } else { /* D_NEEDLE: needle keys b u, queries a u, a b / sqrt(d) = 14 */
        float ab = 14.0f * sqrtf((float)d), a = sqrtf(ab), b = sqrtf(ab);
        test_fill_normal(rng, q, nq, 0.1f);
        test_fill_normal(rng, k, nk, 1.0f);
        for (int64_t r = 0; r < c->L * c->hq; r++)
            for (int64_t x = 0; x < d; x++)
                q[r * d + x] += a * u[x];
        for (int64_t g = 0; g < c->hkv; g++)
            for (int64_t j = 0; j < c->n; j++)
                if (is_needle(j / 128, nkb))
                    for (int64_t x = 0; x < d; x++)
                        k[(g * c->n + j) * d + x] = b * u[x] + 0.1f * k[(g * c->n + j) * d + x];
    }
    free(u);
}

static int host_make(const case_t *c, int ci, host_t *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    h->nqb = (c->L + 127) / 128;
    h->nkb = (c->n + 127) / 128;
    h->heads = malloc((size_t)c->hq * sizeof *h->heads);
    h->q = malloc((size_t)(nq ? nq : 1) * sizeof(float));
    h->k = malloc((size_t)nk * sizeof(float));
    h->qd = malloc((size_t)(nq ? nq : 1) * sizeof(double));
    h->kd = malloc((size_t)nk * sizeof(double));
    if (!h->heads || !h->q || !h->k || !h->qd || !h->kd)
        return -1;
    if (c->heads == H_ALL) {
        for (int i = 0; i < c->hq; i++)
            h->heads[h->n_heads++] = i;
    } else if (c->heads == H_REVERSED) {
        for (int i = c->hq - 1; i >= 0; i--)
            h->heads[h->n_heads++] = i;
    } else { /* odd heads, last first, plus head 0 twice at the end */
        for (int i = c->hq - 1; i >= 0; i -= 2)
            h->heads[h->n_heads++] = i;
        if (h->n_heads + 2 <= c->hq) {
            h->heads[h->n_heads++] = 0;
            h->heads[h->n_heads++] = 0;
        }
    }
    int64_t nm = h->n_heads * h->nqb * h->nkb;
    h->masks = malloc((size_t)(nm ? nm : 1));
    if (!h->masks)
        return -1;
    ref_xattn_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->q_pos0, 0.0, c->stride,
                         (double)c->threshold};
    for (h->tries = 1; h->tries <= MAX_TRIES; h->tries++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 1000 + (uint64_t)h->tries + 20000);
        fill(c, &rng, h->q, h->k);
        if (test_round_through(h->q, nq, c->tq) || test_round_through(h->k, nk, c->tk))
            return -1;
        for (int64_t i = 0; i < nq; i++)
            h->qd[i] = h->q[i];
        for (int64_t i = 0; i < nk; i++)
            h->kd[i] = h->k[i];
        if (ref_xattn_estimate(&s, h->qd, h->kd, h->heads, h->n_heads, h->masks, &h->kept, NULL,
                               &h->margin) != 0)
            return -1;
        if (h->margin >= TIE_MARGIN)
            break;
    }
    if (h->tries > MAX_TRIES)
        return -2;
    if (c->data == D_NEEDLE) {
        h->expect = calloc((size_t)(nm ? nm : 1), 1);
        if (!h->expect)
            return -1;
        for (int hi = 0; hi < h->n_heads; hi++)
            for (int64_t I = 0; I < h->nqb; I++) {
                int64_t M = c->q_pos0 / 128 + I;
                uint8_t *row = h->expect + (hi * h->nqb + I) * h->nkb;
                row[0] = 1;
                if (M < h->nkb)
                    row[M] = 1;
                for (int64_t J = 1; J < M && J < h->nkb; J++)
                    row[J] = (uint8_t)is_needle(J, h->nkb);
            }
    }
    return 0;
}

/* ---- backends ------------------------------------------------------------------------------ */
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

/* ---- running ------------------------------------------------------------------------------- */
static ela_status new_tensor(ela_backend *be, ela_dtype dt, const int64_t *ext, int strided,
                             ela_tensor **out) {
    if (!strided)
        return ela_tensor_new(be, dt, 3, ext, NULL, out);
    /* last dim packed (one element, or one q8_0 block), others padded by 5 */
    int64_t st[3], acc = (int64_t)ela_dtype_row_bytes(dt, ext[2]);
    st[2] = test_stride_bytes(dt, 1);
    for (int i = 1; i >= 0; i--) {
        st[i] = acc;
        acc *= ext[i] + 5;
    }
    return ela_tensor_new(be, dt, 3, ext, st, out);
}

/* First differing mask entry, for the failure message. */
static void describe_diff(const host_t *h, const uint8_t *got, const uint8_t *want, char *buf,
                          size_t size) {
    int64_t nm = h->n_heads * h->nqb * h->nkb, diffs = 0, first = -1;
    for (int64_t i = 0; i < nm; i++)
        if ((got[i] != 0) != (want[i] != 0)) {
            diffs++;
            if (first < 0)
                first = i;
        }
    if (first < 0) {
        snprintf(buf, size, "no difference");
        return;
    }
    int64_t J = first % h->nkb, I = first / h->nkb % h->nqb, hi = first / h->nkb / h->nqb;
    snprintf(buf, size, "%lld entries differ, first at head list %lld (head %d), query block %lld, "
             "key block %lld: got %d, want %d", (long long)diffs, (long long)hi, h->heads[hi],
             (long long)I, (long long)J, got[first], want[first]);
}

static void run_case(cfg_t *cfg, const case_t *c, int ci, const host_t *h) {
    char what[256], diff[256];
    case_str(c, what, sizeof what);
    const char *thr = cfg->threads ? cfg->threads : "default";
    int sd = (c->flags & F_STRIDED) != 0;
    int64_t eq[3] = {c->L, c->hq, c->d}, ek[3] = {c->hkv, c->n, c->d};
    int64_t em[3] = {h->n_heads, h->nqb, h->nkb}, nm = em[0] * em[1] * em[2];
    ela_tensor *q = NULL, *k = NULL, *masks = NULL;
    uint8_t *got = malloc((size_t)(nm ? nm : 1));
    ela_status st;
    if ((st = new_tensor(cfg->be, c->tq, eq, sd, &q)) != ELA_OK ||
        (st = new_tensor(cfg->be, c->tk, ek, sd, &k)) != ELA_OK ||
        (st = new_tensor(cfg->be, ELA_U8, em, sd, &masks)) != ELA_OK ||
        (st = ela_tensor_write_f32(q, h->q, c->L * c->hq * c->d)) != ELA_OK ||
        (st = ela_tensor_write_f32(k, h->k, (int64_t)c->hkv * c->n * c->d)) != ELA_OK || !got) {
        CHECKF(0, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st), ela_last_error());
        goto done;
    }
    /* Poison the output: every entry must be written. */
    memset(got, 0xAB, (size_t)nm);
    CHECK_STATUS(ela_tensor_write(masks, got, (size_t)nm), ELA_OK);
    ela_xattn_params xp = ela_xattn_params_default();
    xp.stride = c->stride;
    xp.threshold = c->threshold;
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c->q_pos0;
    int64_t kept = -1;
    double t0 = test_now();
    st = ela_xattn_estimate(cfg->be, q, k, h->heads, h->n_heads, &xp, &p, masks, &kept);
    cfg->seconds += test_now() - t0;
    cfg->runs++;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: %s (%s)", ci, what, cfg->level, thr,
           ela_status_str(st), ela_last_error());
    if (st != ELA_OK)
        goto done;
    CHECK_STATUS(ela_tensor_read(masks, got, (size_t)nm), ELA_OK);
    int bad_values = 0;
    for (int64_t i = 0; i < nm; i++)
        bad_values += got[i] > 1;
    CHECKF(bad_values == 0, "case %d [%s]: %d mask entries are neither 0 nor 1", ci, what,
           bad_values);
    describe_diff(h, got, h->masks, diff, sizeof diff);
    CHECKF(memcmp(got, h->masks, (size_t)nm) == 0,
           "case %d [%s] level %s threads %s: masks differ from the reference (margin %.2e): %s",
           ci, what, cfg->level, thr, h->margin, diff);
    CHECKF(kept == h->kept, "case %d [%s] level %s threads %s: kept_blocks %lld, reference %lld",
           ci, what, cfg->level, thr, (long long)kept, (long long)h->kept);
    if (h->expect) {
        describe_diff(h, got, h->expect, diff, sizeof diff);
        CHECKF(memcmp(got, h->expect, (size_t)nm) == 0,
               "case %d [%s] level %s threads %s: needle masks differ from the planted ones: %s",
               ci, what, cfg->level, thr, diff);
    }
done:
    free(got);
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(masks);
}

/* ---- errors --------------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        ela_status got_ = (call);                                                               \
        CHECKF(got_ == (want) && test_has_word(ela_last_error(), word),                         \
               "%s: got %s (\"%s\"), want %s naming '%s'", #call, ela_status_str(got_),         \
               ela_last_error(), ela_status_str(want), word);                                   \
    } while (0)

static void test_errors(ela_backend *be) {
    int64_t eq[3] = {300, 4, 64}, ek[3] = {2, 300, 64}, em[3] = {2, 3, 3}, em_bad[3] = {2, 3, 4};
    int64_t ek_d[3] = {2, 300, 32}, eq2[2] = {300, 256};
    ela_tensor *q = NULL, *k = NULL, *masks = NULL, *masks_bad = NULL, *masks_f32 = NULL;
    ela_tensor *k_d = NULL, *q2 = NULL;
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, eq, NULL, &q), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek, NULL, &k), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 3, ek_d, NULL, &k_d), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 2, eq2, NULL, &q2), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_U8, 3, em, NULL, &masks), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_U8, 3, em_bad, NULL, &masks_bad), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, em, NULL, &masks_f32), ELA_OK);
    if (!q || !k || !masks || !masks_bad || !masks_f32 || !k_d || !q2)
        goto done;
    {
        float *zero = calloc(300 * 4 * 64, sizeof *zero);
        if (zero) {
            CHECK_STATUS(ela_tensor_write_f32(q, zero, 300 * 4 * 64), ELA_OK);
            CHECK_STATUS(ela_tensor_write_f32(k, zero, 2 * 300 * 64), ELA_OK);
        }
        free(zero);
    }
    int heads[2] = {3, 0}, bad_heads[2] = {0, 4}, neg_heads[2] = {-1, 0};
    ela_xattn_params xp = ela_xattn_params_default();
    ela_attn_params p = ela_attn_params_default();
    CHECK(xp.stride == 16 && xp.threshold == 0.9f);
    int64_t kept = -1;
    CHECK_STATUS(ela_xattn_estimate(be, q, k, heads, 2, &xp, &p, masks, &kept), ELA_OK);
    /* zero inputs: uniform reduced softmax, every row keeps something */
    CHECK(kept >= 2 * 3);
    CHECK_STATUS(ela_xattn_estimate(be, q, k, heads, 2, NULL, NULL, masks, NULL), ELA_OK);
    CHECK_FAIL(ela_xattn_estimate(NULL, q, k, heads, 2, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "backend");
    CHECK_FAIL(ela_xattn_estimate(be, NULL, k, heads, 2, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "q");
    CHECK_FAIL(ela_xattn_estimate(be, q2, k, heads, 2, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "q");
    CHECK_FAIL(ela_xattn_estimate(be, q, NULL, heads, 2, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "k");
    CHECK_FAIL(ela_xattn_estimate(be, q, k_d, heads, 2, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "k");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, NULL, 2, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "heads");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 0, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "n_heads");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, bad_heads, 2, &xp, &p, masks, NULL),
               ELA_ERR_INVALID_ARG, "heads");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, neg_heads, 2, &xp, &p, masks, NULL),
               ELA_ERR_INVALID_ARG, "heads");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &p, NULL, NULL), ELA_ERR_INVALID_ARG,
               "masks");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &p, masks_bad, NULL),
               ELA_ERR_INVALID_ARG, "masks");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &p, masks_f32, NULL),
               ELA_ERR_INVALID_ARG, "masks");
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 1, &xp, &p, masks, NULL), ELA_ERR_INVALID_ARG,
               "masks");
    static const int bad_strides[4] = {0, -16, 3, 256};
    for (int i = 0; i < 4; i++) {
        ela_xattn_params b = xp;
        b.stride = bad_strides[i];
        CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &b, &p, masks, NULL),
                   ELA_ERR_INVALID_ARG, "stride");
    }
    static const float bad_taus[4] = {0.0f, -0.5f, 1.5f, NAN};
    for (int i = 0; i < 4; i++) {
        ela_xattn_params b = xp;
        b.threshold = bad_taus[i];
        CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &b, &p, masks, NULL),
                   ELA_ERR_INVALID_ARG, "threshold");
    }
    ela_attn_params b = p;
    b.q_pos0 = 100;
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &b, masks, NULL), ELA_ERR_INVALID_ARG,
               "q_pos0");
    b.q_pos0 = -128;
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &b, masks, NULL), ELA_ERR_INVALID_ARG,
               "q_pos0");
    b = p;
    b.causal = 0;
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &b, masks, NULL), ELA_ERR_INVALID_ARG,
               "causal");
    b = p;
    b.scale = INFINITY;
    CHECK_FAIL(ela_xattn_estimate(be, q, k, heads, 2, &xp, &b, masks, NULL), ELA_ERR_INVALID_ARG,
               "scale");
    {
        ela_xattn_params one = xp;
        one.threshold = 1.0f; /* the top of the range is valid */
        CHECK_STATUS(ela_xattn_estimate(be, q, k, heads, 2, &one, &p, masks, NULL), ELA_OK);
    }
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(k_d);
    ela_tensor_free(q2);
    ela_tensor_free(masks);
    ela_tensor_free(masks_bad);
    ela_tensor_free(masks_f32);
}

static void test_oom(ela_backend *be) {
    case_t c = {300, 556, 64, 8, 2, 256, ELA_F32, ELA_F16, 8, 0.9f, D_BIASED, H_SUBSET, 0};
    host_t h;
    int rc = host_make(&c, 9999, &h);
    int64_t eq[3] = {c.L, c.hq, c.d}, ek[3] = {c.hkv, c.n, c.d};
    int64_t em[3] = {h.n_heads, h.nqb, h.nkb}, nm = em[0] * em[1] * em[2];
    ela_tensor *q = NULL, *k = NULL, *masks = NULL;
    uint8_t *got = malloc((size_t)nm + 1);
    if (rc != 0 || !got || ela_tensor_new(be, c.tq, 3, eq, NULL, &q) != ELA_OK ||
        ela_tensor_new(be, c.tk, 3, ek, NULL, &k) != ELA_OK ||
        ela_tensor_new(be, ELA_U8, 3, em, NULL, &masks) != ELA_OK ||
        ela_tensor_write_f32(q, h.q, c.L * c.hq * c.d) != ELA_OK ||
        ela_tensor_write_f32(k, h.k, c.hkv * c.n * c.d) != ELA_OK) {
        CHECK(!"oom setup failed");
        goto done;
    }
    ela_xattn_params xp = {c.stride, c.threshold};
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c.q_pos0;
    ela_status st = ELA_OK;
    int64_t failures = 0, kept = 0;
    for (int64_t i = 1; i <= 1000; i++) {
        ela_debug_fail_alloc(i);
        st = ela_xattn_estimate(be, q, k, h.heads, h.n_heads, &xp, &p, masks, &kept);
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
    if (st == ELA_OK) {
        CHECK_STATUS(ela_tensor_read(masks, got, (size_t)nm), ELA_OK);
        CHECK(memcmp(got, h.masks, (size_t)nm) == 0 && kept == h.kept);
    }
    printf("oom: %lld allocations failed in turn, each ELA_ERR_OOM\n", (long long)failures);
done:
    free(got);
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(masks);
    host_free(&h);
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    if (n_cfgs > 0)
        for (int a = 0; a < 9; a++) {
            ela_dtype t2[2] = {(ela_dtype)(a % 3), (ela_dtype)(a / 3)};
            ela_dtype t8[2] = {(ela_dtype)(a % 3), ELA_Q8_0}; /* q8_0 keys */
            CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_XATTN_ESTIMATE, t2, 2));
            CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_XATTN_ESTIMATE, t8, 2));
        }
    double t_ref = 0.0;
    int regenerated = 0;
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        const case_t *c = &cases[ci];
        host_t h;
        double t0 = test_now();
        int rc = host_make(c, ci, &h);
        t_ref += test_now() - t0;
        char what[256];
        case_str(c, what, sizeof what);
        CHECKF(rc == 0, "case %d [%s]: %s", ci, what,
               rc == -2 ? "every generated input was a near-tie" : "building the reference failed");
        if (rc == 0 && h.tries > 1)
            regenerated += h.tries - 1;
        if (only_case >= 0 && rc == 0)
            printf("case %d: %s: margin %.2e after %d tries, %lld kept blocks\n", ci, what,
                   h.margin, h.tries, (long long)h.kept);
        for (int k = 0; rc == 0 && k < n_cfgs; k++) {
            if (cfgs[k].threads && !(c->flags & F_THREADS))
                continue;
            if ((c->flags & F_BIG) && strcmp(cfgs[k].level, "scalar") == 0)
                continue;
            if (SLOW_BUILD && cfgs[k].threads && strcmp(cfgs[k].level, "scalar") == 0)
                continue;
            run_case(&cfgs[k], c, ci, &h);
        }
        host_free(&h);
    }
    if (n_cfgs > 0 && only_case < 0) {
        test_errors(cfgs[n_cfgs - 1].be);
        test_oom(cfgs[n_cfgs - 1].be);
    }
    printf("reference: %.2f s; %d inputs regenerated for near-ties\n", t_ref, regenerated);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %3d runs, %.3f s in ela_xattn_estimate\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].runs, cfgs[k].seconds);
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_xattn_estimate");
}

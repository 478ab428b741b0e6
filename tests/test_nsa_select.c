/* Unit test of ela_nsa_select on the "cpu" backend against the float64 reference
 * (tests/ref/nsa_select_ref.c) on fresh random inputs: q/k dtypes f32/f16/bf16, d 64/128/80,
 * GQA 1/4/16, block 16/64, top 1/16, prefill, chunks (q_pos0 > 0) and decode (L = 1,
 * q_pos0 = n - 1), rows with fewer than top blocks, strided views; every SIMD level the machine
 * has and several thread counts. The selected sets must equal the reference's exactly wherever
 * the reference's cut-off margin is clear; rows with a near-tie at the cut may swap only the
 * near-tied blocks (and every case must be mostly clear rows). Then error paths and an
 * allocation-failure loop. Replay with ELA_TEST_SEED, one case with ELA_TEST_CASE=<index>. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/nsa_select_ref.h"
#include "test_common.h"

/* Two scores closer than this are a near-tie: the kernel's f32 scores (f32 pooled keys, f32 dot
 * products, exp2f) differ from the float64 reference by ~1e-7 relative (measured: a tolerance
 * of 1e-7 lets mismatches through, 3e-7 does not), so an order between them is not decided by
 * the spec's arithmetic. REL_TIE is 100x that; ABS_TIE covers scores so small that f32 exp
 * loses them (not reached by the data below). */
#define REL_TIE 1e-5
#define ABS_TIE 1e-30

static int near_tie(double a, double b) {
    return fabs(a - b) <= REL_TIE * fmax(fabs(a), fabs(b)) + ABS_TIE;
}

enum {
    DATA_NORMAL, /* q, k ~ N(0, 1): pooled scores close to uniform, small gaps */
    DATA_SHARP,  /* q ~ N(0, 4): peaked block distributions */
    DATA_NEEDLE, /* 1 block in 6 carries a planted key direction of random strength that the
                    group's queries share: clear winners, well separated */
    DATA_TIES,   /* k periodic with period B: every block identical, all scores tie exactly, so
                    the order must be the current block, then 0, 1, 2, ... */
    DATA_COUNT
};
static const char *const data_names[] = {"normal", "sharp", "needle", "ties"};

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0; /* < 0: n - L */
    int block, top;
    ela_dtype tq, tk;
    int data;
    int strided; /* q a head slice of a fused projection, k a view of a cache, blocks padded */
    float scale;
} sel_case;

#define MAX_CASES 128
static sel_case cases[MAX_CASES];
static int n_cases;

static void add(int64_t L, int64_t n, int64_t d, int hq, int hkv, int64_t q_pos0, int block,
                int top, ela_dtype tq, ela_dtype tk, int data, int strided) {
    if (n_cases == MAX_CASES) {
        CHECK(!"MAX_CASES too small");
        return;
    }
    sel_case c = {L, n, d, hq, hkv, q_pos0 < 0 ? n - L : q_pos0, block, top, tq, tk, data,
                  strided, 0.0f};
    cases[n_cases++] = c;
}

static void build_cases(void) {
    const ela_dtype F32 = ELA_F32, F16 = ELA_F16, BF16 = ELA_BF16;
    /* Defaults of SSA-1B: B = 16, S = 16, G = 16, d = 64. */
    add(700, 700, 64, 32, 2, 0, 16, 16, F32, F32, DATA_NORMAL, 0);
    add(700, 700, 64, 32, 2, 0, 16, 16, BF16, BF16, DATA_NEEDLE, 1);
    /* GQA 1 / 4 / 16 x d 64 / 128 / 80, prefill with n not a multiple of B */
    add(613, 613, 128, 2, 2, 0, 16, 16, F32, F32, DATA_SHARP, 0);
    add(613, 613, 128, 8, 2, 0, 16, 16, F16, F16, DATA_NORMAL, 1);
    add(613, 613, 80, 16, 1, 0, 16, 16, F32, F16, DATA_NEEDLE, 0);
    add(501, 501, 80, 4, 4, 0, 16, 16, BF16, F32, DATA_SHARP, 1);
    add(777, 777, 64, 4, 1, 0, 16, 16, F16, BF16, DATA_NEEDLE, 0);
    /* chunked prefill (q_pos0 > 0) and decode (L = 1, q_pos0 = n - 1) */
    add(190, 1250, 64, 8, 2, -1, 16, 16, F32, F32, DATA_NORMAL, 1);
    add(130, 1000, 128, 16, 1, 700, 16, 16, F16, F16, DATA_SHARP, 0);
    add(1, 2113, 128, 32, 8, -1, 16, 16, F16, F16, DATA_NORMAL, 0);
    add(1, 4000, 64, 16, 1, -1, 16, 16, F32, F32, DATA_NEEDLE, 1);
    add(1, 1600, 64, 4, 4, -1, 16, 16, BF16, BF16, DATA_SHARP, 0);
    add(1, 15, 64, 4, 1, -1, 16, 16, F32, F32, DATA_NORMAL, 0); /* no complete block */
    add(1, 16, 64, 4, 1, -1, 16, 16, F32, F32, DATA_NORMAL, 0); /* t + 1 = B */
    add(1, 256, 64, 4, 1, -1, 16, 16, F32, F32, DATA_SHARP, 0); /* t + 1 = S B */
    add(1, 257, 64, 4, 1, -1, 16, 16, F32, F32, DATA_SHARP, 0); /* first row with a cut */
    /* block 64, top 1 and 16 */
    add(900, 1400, 64, 8, 2, -1, 64, 16, F32, F32, DATA_NORMAL, 0);
    add(900, 1400, 128, 16, 1, -1, 64, 16, F16, F16, DATA_NEEDLE, 1);
    add(1, 3000, 64, 8, 2, -1, 64, 16, BF16, BF16, DATA_SHARP, 0);
    add(400, 400, 64, 8, 2, 0, 16, 1, F32, F32, DATA_NORMAL, 0);
    add(1, 1111, 128, 4, 1, -1, 64, 1, F16, F16, DATA_NORMAL, 1);
    /* odd settings: top above the block count, block 1, block 5, tiny inputs */
    add(300, 300, 64, 4, 2, 0, 16, 40, F32, F32, DATA_NORMAL, 0);
    add(97, 97, 64, 4, 2, 0, 1, 16, F32, F32, DATA_SHARP, 0);
    add(333, 333, 80, 3, 1, 0, 5, 7, F32, BF16, DATA_NEEDLE, 1);
    add(1, 1, 64, 4, 1, 0, 16, 16, F32, F32, DATA_NORMAL, 0);
    add(5, 5, 64, 4, 4, 0, 16, 16, F16, F16, DATA_NORMAL, 0);
    /* exact ties: lower block first */
    add(300, 300, 64, 8, 2, 0, 16, 16, F32, F32, DATA_TIES, 0);
    add(1, 1000, 128, 4, 1, -1, 16, 16, F16, F16, DATA_TIES, 1);
    add(200, 900, 64, 16, 1, -1, 64, 4, BF16, BF16, DATA_TIES, 0);
    /* an explicit scale */
    add(257, 600, 64, 8, 2, -1, 16, 16, F32, F32, DATA_NORMAL, 0);
    /* q8_0 keys (a quantized KV cache), quantized before the reference scores them: prefill,
     * a chunk, decode, block 64, strided (the view starts 5 tokens into a cache), ties. */
    const ela_dtype Q8 = ELA_Q8_0;
    add(700, 700, 64, 32, 2, 0, 16, 16, F32, Q8, DATA_NORMAL, 1);
    add(130, 1000, 128, 16, 1, 700, 16, 16, F16, Q8, DATA_SHARP, 0);
    add(1, 2113, 128, 32, 8, -1, 16, 16, F32, Q8, DATA_NEEDLE, 1);
    add(900, 1400, 32, 8, 2, -1, 64, 16, BF16, Q8, DATA_NORMAL, 0);
    add(300, 300, 64, 8, 2, 0, 16, 16, F32, Q8, DATA_TIES, 1);
    cases[n_cases - 1].scale = 0.3f;
}

static void case_str(const sel_case *c, char *buf, size_t size) {
    snprintf(buf, size,
             "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld B=%d S=%d q=%s k=%s data=%s%s "
             "scale=%g",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->q_pos0, c->block, c->top, ela_dtype_name(c->tq),
             ela_dtype_name(c->tk), data_names[c->data], c->strided ? " strided" : "",
             (double)c->scale);
}

/* ---- inputs and reference -------------------------------------------------------------- */
typedef struct {
    float *q, *k;     /* values as the kernel will read them (rounded through the dtypes) */
    int32_t *blocks;  /* reference [L, hkv, top] */
    double *scores;   /* reference [L, hkv, cols] */
    int64_t cols;
} case_data;

static void case_data_free(case_data *h) {
    free(h->q);
    free(h->k);
    free(h->blocks);
    free(h->scores);
    memset(h, 0, sizeof *h);
}

static int case_data_make(const sel_case *c, int ci, case_data *h) {
    memset(h, 0, sizeof *h);
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    const int64_t G = c->hq / c->hkv, d = c->d, B = c->block;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci);
    h->q = malloc((size_t)nq * sizeof *h->q);
    h->k = malloc((size_t)nk * sizeof *h->k);
    float *dir = malloc((size_t)(c->hkv * d) * sizeof *dir);
    double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nk * sizeof *kd);
    ref_nsa_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->q_pos0, c->scale, c->block, c->top};
    h->cols = ref_nsa_score_cols(&s);
    h->blocks = malloc((size_t)(c->L * c->hkv * c->top) * sizeof *h->blocks);
    h->scores = malloc((size_t)(c->L * c->hkv * h->cols) * sizeof *h->scores);
    int rc = -1;
    if (!h->q || !h->k || !dir || !qd || !kd || !h->blocks || !h->scores)
        goto done;
    test_fill_normal(&rng, h->q, nq, c->data == DATA_SHARP ? 4.0f : 1.0f);
    test_fill_normal(&rng, h->k, nk, 1.0f);
    if (c->data == DATA_NEEDLE) {
        /* block c of head g holds the direction with strength a (0 for 5 blocks in 6); the
         * group's queries lean towards it, so q.kc ~ a * 0.5 * |dir|^2 sets the order */
        test_fill_normal(&rng, dir, c->hkv * d, 1.0f);
        for (int g = 0; g < c->hkv; g++) {
            for (int64_t b = 0; b * B < c->n; b++) {
                if (test_rng_u64(&rng) % 6 != 0)
                    continue;
                float a = (float)test_rng_uniform(&rng, 0.5, 3.0);
                for (int64_t j = b * B; j < (b + 1) * B && j < c->n; j++)
                    for (int64_t x = 0; x < d; x++)
                        h->k[((int64_t)g * c->n + j) * d + x] += a * dir[g * d + x];
            }
            for (int64_t i = 0; i < c->L; i++)
                for (int64_t hh = 0; hh < G; hh++)
                    for (int64_t x = 0; x < d; x++)
                        h->q[(i * c->hq + g * G + hh) * d + x] += 0.5f * dir[g * d + x];
        }
    } else if (c->data == DATA_TIES) {
        for (int g = 0; g < c->hkv; g++)
            for (int64_t j = B; j < c->n; j++)
                memcpy(h->k + ((int64_t)g * c->n + j) * d, h->k + ((int64_t)g * c->n + j % B) * d,
                       (size_t)d * sizeof(float));
    }
    if (test_round_through(h->q, nq, c->tq) || test_round_through(h->k, nk, c->tk))
        goto done;
    for (int64_t x = 0; x < nq; x++)
        qd[x] = h->q[x];
    for (int64_t x = 0; x < nk; x++)
        kd[x] = h->k[x];
    rc = ref_nsa_select(&s, qd, kd, h->blocks, h->scores);
done:
    free(dir);
    free(qd);
    free(kd);
    if (rc != 0)
        case_data_free(h);
    return rc;
}

/* ---- device tensors --------------------------------------------------------------------- */
typedef struct {
    ela_tensor *base, *t;
} dev_tensor;

static void dev_free(dev_tensor *x) {
    if (x->t != x->base)
        ela_tensor_free(x->t);
    ela_tensor_free(x->base);
    x->t = x->base = NULL;
}

/* A view with extents ext (3 dims) of a packed base bext, starting `off` elements in. */
static ela_status dev_view(ela_backend *be, ela_dtype dt, const int64_t *bext, const int64_t *ext,
                           int64_t off, dev_tensor *x) {
    /* byte strides and offset; q8_0 keys in whole blocks (off and d multiples of 32) */
    int64_t str[3] = {test_stride_bytes(dt, bext[1] * bext[2]), test_stride_bytes(dt, bext[2]),
                      test_stride_bytes(dt, 1)};
    ela_status st = ela_tensor_new(be, dt, 3, bext, NULL, &x->base);
    if (st != ELA_OK)
        return st;
    int64_t nb = bext[0] * bext[1] * bext[2];
    size_t bytes = ela_dtype_row_bytes(dt, nb);
    void *fill = calloc(bytes ? bytes : 1, 1);
    if (!fill)
        return ELA_ERR_OOM;
    if (dt == ELA_I32)
        for (int64_t e = 0; e < nb; e++)
            ((int32_t *)fill)[e] = 0x5eed;
    st = ela_tensor_write(x->base, fill, bytes);
    free(fill);
    if (st != ELA_OK)
        return st;
    return ela_tensor_view(x->base, 3, ext, str, (int64_t)ela_dtype_row_bytes(dt, off), &x->t);
}

typedef struct {
    dev_tensor q, k, blocks;
} dev_set;

static void dev_set_free(dev_set *s) {
    dev_free(&s->q);
    dev_free(&s->k);
    dev_free(&s->blocks);
}

static ela_status dev_set_make(ela_backend *be, const sel_case *c, const case_data *h,
                               dev_set *s) {
    memset(s, 0, sizeof *s);
    const int64_t L = c->L, n = c->n, d = c->d, hq = c->hq, hkv = c->hkv, top = c->top;
    int64_t eq[3] = {L, hq, d}, ek[3] = {hkv, n, d}, eb[3] = {L, hkv, top};
    ela_status st;
    if (c->strided) {
        int64_t bq[3] = {L, hq + 2 * hkv, d}, bk[3] = {hkv, n + 37, d}, bb[3] = {L, hkv, top + 3};
        if ((st = dev_view(be, c->tq, bq, eq, 0, &s->q)) != ELA_OK ||
            (st = dev_view(be, c->tk, bk, ek, 5 * d, &s->k)) != ELA_OK ||
            (st = dev_view(be, ELA_I32, bb, eb, 2, &s->blocks)) != ELA_OK)
            return st;
    } else {
        if ((st = dev_view(be, c->tq, eq, eq, 0, &s->q)) != ELA_OK ||
            (st = dev_view(be, c->tk, ek, ek, 0, &s->k)) != ELA_OK ||
            (st = dev_view(be, ELA_I32, eb, eb, 0, &s->blocks)) != ELA_OK)
            return st;
    }
    if ((st = ela_tensor_write_f32(s->q.t, h->q, L * hq * d)) != ELA_OK)
        return st;
    return ela_tensor_write_f32(s->k.t, h->k, hkv * n * d);
}

/* Elements of the blocks base outside the view that lost their fill value. */
static int64_t blocks_outside_changed(const sel_case *c, const dev_set *s) {
    if (!c->strided)
        return 0;
    int64_t nb = c->L * c->hkv * (c->top + 3), changed = 0;
    int32_t *all = malloc((size_t)nb * sizeof *all);
    if (!all || ela_tensor_read(s->blocks.base, all, (size_t)nb * sizeof *all) != ELA_OK) {
        free(all);
        return -1;
    }
    for (int64_t e = 0; e < nb; e++) {
        int64_t col = e % (c->top + 3);
        if ((col < 2 || col >= 2 + c->top) && all[e] != 0x5eed)
            changed++;
    }
    free(all);
    return changed;
}

/* ---- checking one selection -------------------------------------------------------------- */
typedef struct {
    int64_t rows, clear, near;
} row_stats;

/* Checks the kernel's list against the reference for row i, KV head g. Returns 0 when good. */
static int check_row(const sel_case *c, const case_data *h, const int32_t *got, int64_t i, int g,
                     row_stats *rs, char *why, size_t why_size) {
    const int64_t t = c->q_pos0 + i, cur = t / c->block, top = c->top;
    const int32_t *want = h->blocks + (i * c->hkv + g) * top;
    const double *sc = h->scores + (i * c->hkv + g) * h->cols;
    int64_t kept = top < cur + 1 ? top : cur + 1;
    rs->rows++;
    if (got[0] != cur) {
        snprintf(why, why_size, "first block %d, want the current block %lld", got[0],
                 (long long)cur);
        return 1;
    }
    for (int64_t x = 1; x < top; x++) {
        if (x < kept && (got[x] < 0 || got[x] >= cur)) {
            snprintf(why, why_size, "slot %lld holds %d, not a previous block [0, %lld)",
                     (long long)x, got[x], (long long)cur);
            return 1;
        }
        if (x >= kept && got[x] != -1) {
            snprintf(why, why_size, "slot %lld holds %d past the %lld kept blocks, want -1",
                     (long long)x, got[x], (long long)kept);
            return 1;
        }
        for (int64_t y = 1; y < x && x < kept; y++)
            if (got[y] == got[x]) {
                snprintf(why, why_size, "block %d listed twice", got[x]);
                return 1;
            }
    }
    /* Is the reference's cut clear? (its last kept vs its best dropped, and its order) */
    int clear = 1;
    if (kept < cur + 1) {
        double last = sc[want[kept - 1]], best_dropped = -INFINITY;
        if (kept == 1) /* top 1: only the current block; nothing to compare */
            last = INFINITY;
        char *in = calloc((size_t)(cur > 0 ? cur : 1), 1);
        if (!in)
            return 1;
        for (int64_t x = 1; x < kept; x++)
            in[want[x]] = 1;
        for (int64_t b = 0; b < cur; b++)
            if (!in[b] && sc[b] > best_dropped)
                best_dropped = sc[b];
        free(in);
        if (kept > 1 && near_tie(last, best_dropped) && last != best_dropped)
            clear = 0; /* an exact tie is decided by the spec: lower block first */
    }
    for (int64_t x = 2; x < kept; x++)
        if (near_tie(sc[want[x - 1]], sc[want[x]]) && sc[want[x - 1]] != sc[want[x]])
            clear = 0;
    if (clear) {
        rs->clear++;
        /* Exact: same blocks in the same order (exact ties included: lower block first). */
        for (int64_t x = 0; x < top; x++)
            if (got[x] != want[x]) {
                snprintf(why, why_size, "slot %lld: got block %d, reference %d (score %.9g vs "
                         "%.9g)", (long long)x, got[x], want[x],
                         got[x] >= 0 ? sc[got[x]] : -1.0, want[x] >= 0 ? sc[want[x]] : -1.0);
                return 1;
            }
        return 0;
    }
    rs->near++;
    /* Near-tie: the kernel's list must still be in descending reference order up to near-ties,
     * and no dropped block may beat its last kept block by more than a near-tie. */
    for (int64_t x = 2; x < kept; x++)
        if (sc[got[x - 1]] < sc[got[x]] && !near_tie(sc[got[x - 1]], sc[got[x]])) {
            snprintf(why, why_size, "near-tie row: slot %lld (block %d, %.9g) ranks below slot "
                     "%lld (block %d, %.9g)", (long long)(x - 1), got[x - 1], sc[got[x - 1]],
                     (long long)x, got[x], sc[got[x]]);
            return 1;
        }
    if (kept > 1) {
        double last = sc[got[kept - 1]];
        for (int64_t b = 0; b < cur; b++) {
            int listed = 0;
            for (int64_t x = 1; x < kept; x++)
                listed |= got[x] == b;
            if (!listed && sc[b] > last && !near_tie(sc[b], last)) {
                snprintf(why, why_size, "near-tie row: dropped block %lld (%.9g) beats kept "
                         "block %d (%.9g)", (long long)b, sc[b], got[kept - 1], last);
                return 1;
            }
        }
    }
    return 0;
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
    /* Every level with the default thread count; the scalar level also with 1 and 3 threads
     * and 16 (more threads than items in decode). */
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

static void run_on(backend_cfg *cfg, const sel_case *c, int ci, const case_data *h) {
    char what[256];
    case_str(c, what, sizeof what);
    const char *thr = cfg->threads ? cfg->threads : "default";
    dev_set s;
    ela_status st = dev_set_make(cfg->be, c, h, &s);
    CHECKF(st == ELA_OK, "case %d [%s]: setup: %s (%s)", ci, what, ela_status_str(st),
           ela_last_error());
    int32_t *got = malloc((size_t)(c->L * c->hkv * c->top) * sizeof *got);
    if (st != ELA_OK || !got) {
        free(got);
        dev_set_free(&s);
        return;
    }
    ela_nsa_params np = {c->block, c->top};
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c->q_pos0;
    p.scale = c->scale;
    double t0 = test_now();
    st = ela_nsa_select(cfg->be, s.q.t, s.k.t, &np, &p, s.blocks.t);
    cfg->seconds += test_now() - t0;
    CHECKF(st == ELA_OK, "case %d [%s] level %s threads %s: ela_nsa_select: %s (%s)", ci, what,
           cfg->level, thr, ela_status_str(st), ela_last_error());
    if (st == ELA_OK) {
        CHECK_STATUS(ela_tensor_read(s.blocks.t, got,
                                     (size_t)(c->L * c->hkv * c->top) * sizeof *got),
                     ELA_OK);
        row_stats rs = {0, 0, 0};
        int bad = 0;
        for (int64_t i = 0; i < c->L && bad < 3; i++)
            for (int g = 0; g < c->hkv && bad < 3; g++) {
                char why[256];
                if (check_row(c, h, got + (i * c->hkv + g) * c->top, i, g, &rs, why,
                              sizeof why)) {
                    bad++;
                    CHECKF(0, "case %d [%s] level %s threads %s: row %lld (t = %lld) KV head "
                           "%d: %s", ci, what, cfg->level, thr, (long long)i,
                           (long long)(c->q_pos0 + i), g, why);
                }
            }
        /* Most rows must be checked exactly, or the case says little. */
        CHECKF(rs.near <= 1 + rs.rows / 10, "case %d [%s]: %lld of %lld rows are near-ties", ci, what,
               (long long)rs.near, (long long)rs.rows);
        if (cfg == &cfgs[0] && rs.near)
            printf("case %d: %lld of %lld rows near-tied at the cut (checked up to the tie)\n",
                   ci, (long long)rs.near, (long long)rs.rows);
        int64_t changed = blocks_outside_changed(c, &s);
        CHECKF(changed == 0, "case %d [%s]: %lld elements outside the blocks view written", ci,
               what, (long long)changed);
    }
    free(got);
    dev_set_free(&s);
}

/* ---- error paths ----------------------------------------------------------------------------- */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_word(ela_last_error(), word), "message \"%s\" does not name '%s'",     \
               ela_last_error(), word);                                                         \
    } while (0)

static ela_tensor *new3(ela_backend *be, ela_dtype dt, int64_t a, int64_t b, int64_t c) {
    ela_tensor *t = NULL;
    int64_t e[3] = {a, b, c};
    CHECK_STATUS(ela_tensor_new(be, dt, 3, e, NULL, &t), ELA_OK);
    if (t) {
        int64_t n = a * b * c;
        void *z = calloc((size_t)(n ? n : 1), ela_dtype_size(dt));
        if (z)
            CHECK_STATUS(ela_tensor_write(t, z, (size_t)n * ela_dtype_size(dt)), ELA_OK);
        free(z);
    }
    return t;
}

static void test_errors(ela_backend *be) {
    const int64_t L = 40, n = 100, d = 64;
    ela_tensor *q = new3(be, ELA_F32, L, 8, d), *k = new3(be, ELA_F16, 2, n, d);
    ela_tensor *bl = new3(be, ELA_I32, L, 2, 16);
    ela_tensor *bl_f32 = new3(be, ELA_F32, L, 2, 16), *bl_top = new3(be, ELA_I32, L, 2, 15);
    ela_tensor *bl_hkv = new3(be, ELA_I32, L, 1, 16), *k3 = new3(be, ELA_F16, 3, n, d);
    ela_tensor *k_d = new3(be, ELA_F16, 2, n, 32), *k_u8 = new3(be, ELA_U8, 2, n, d);
    ela_nsa_params np = ela_nsa_params_default();
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = n - L;
    CHECK(np.block == 16 && np.top == 16);
    CHECK_STATUS(ela_nsa_select(be, q, k, &np, &p, bl), ELA_OK);
    CHECK_STATUS(ela_nsa_select(be, q, k, NULL, &p, bl), ELA_OK); /* NULL = defaults */
    CHECK_STATUS(ela_nsa_select(be, q, k, &np, NULL, bl), ELA_OK); /* q_pos0 0 */
    CHECK_FAIL(ela_nsa_select(NULL, q, k, &np, &p, bl), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_nsa_select(be, NULL, k, &np, &p, bl), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_nsa_select(be, q, NULL, &np, &p, bl), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &p, NULL), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &p, bl_f32), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &p, bl_top), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &p, bl_hkv), ELA_ERR_INVALID_ARG, "blocks");
    CHECK_FAIL(ela_nsa_select(be, q, k3, &np, &p, bl), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_nsa_select(be, q, k_d, &np, &p, bl), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_nsa_select(be, q, k_u8, &np, &p, bl), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_nsa_select(be, bl, k, &np, &p, bl), ELA_ERR_INVALID_ARG, "q");
    ela_nsa_params bad = np;
    bad.block = 0;
    CHECK_FAIL(ela_nsa_select(be, q, k, &bad, &p, bl), ELA_ERR_INVALID_ARG, "block");
    bad = np;
    bad.top = 0;
    CHECK_FAIL(ela_nsa_select(be, q, k, &bad, &p, bl), ELA_ERR_INVALID_ARG, "top");
    bad.top = -3;
    CHECK_FAIL(ela_nsa_select(be, q, k, &bad, &p, bl), ELA_ERR_INVALID_ARG, "top");
    ela_attn_params bp = p;
    bp.causal = 0;
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &bp, bl), ELA_ERR_INVALID_ARG, "causal");
    bp = p;
    bp.q_pos0 = -1;
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &bp, bl), ELA_ERR_INVALID_ARG, "q_pos0");
    bp.q_pos0 = n - L + 1; /* the last query's own key is not in k */
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &bp, bl), ELA_ERR_INVALID_ARG, "q_pos0");
    bp = p;
    bp.scale = NAN;
    CHECK_FAIL(ela_nsa_select(be, q, k, &np, &bp, bl), ELA_ERR_INVALID_ARG, "scale");
    /* a tensor of another backend */
    ela_backend *other = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &other), ELA_OK);
    if (other) {
        ela_tensor *bo = new3(other, ELA_I32, L, 2, 16);
        CHECK_FAIL(ela_nsa_select(be, q, k, &np, &p, bo), ELA_ERR_INVALID_ARG, "blocks");
        ela_tensor_free(bo);
        ela_backend_close(other);
    }
    /* L = 0 is a no-op */
    ela_tensor *q0 = new3(be, ELA_F32, 0, 8, d), *b0 = new3(be, ELA_I32, 0, 2, 16);
    CHECK_STATUS(ela_nsa_select(be, q0, k, &np, &p, b0), ELA_OK);
    ela_tensor_free(q0);
    ela_tensor_free(b0);
    ela_tensor *all[] = {q, k, bl, bl_f32, bl_top, bl_hkv, k3, k_d, k_u8};
    for (size_t x = 0; x < sizeof all / sizeof all[0]; x++)
        ela_tensor_free(all[x]);
}

/* ---- allocation failures ------------------------------------------------------------------------ */
/* Open, create, write, select, read, free; the first failing status. */
static ela_status oom_sequence(const float *qh, const float *kh, int32_t *out, int64_t L,
                               int64_t n, int64_t d, int hq, int hkv) {
    ela_backend *be = NULL;
    ela_tensor *q = NULL, *k = NULL, *bl = NULL;
    ela_status st = ela_backend_open("cpu", &be);
    if (st != ELA_OK)
        goto done;
    int64_t eq[3] = {L, hq, d}, ek[3] = {hkv, n, d}, eb[3] = {L, hkv, 16};
    if ((st = ela_tensor_new(be, ELA_F16, 3, eq, NULL, &q)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_BF16, 3, ek, NULL, &k)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_I32, 3, eb, NULL, &bl)) != ELA_OK ||
        (st = ela_tensor_write_f32(q, qh, L * hq * d)) != ELA_OK ||
        (st = ela_tensor_write_f32(k, kh, hkv * n * d)) != ELA_OK)
        goto done;
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = n - L;
    if ((st = ela_nsa_select(be, q, k, NULL, &p, bl)) != ELA_OK)
        goto done;
    st = ela_tensor_read(bl, out, (size_t)(L * hkv * 16) * sizeof *out);
done:
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(bl);
    ela_backend_close(be);
    return st;
}

static void test_oom(void) {
    const int64_t L = 50, n = 400, d = 64;
    const int hq = 8, hkv = 2;
    test_rng rng;
    test_rng_init(&rng, 9999);
    float *qh = malloc((size_t)(L * hq * d) * sizeof *qh), *kh = malloc((size_t)(hkv * n * d) * 4);
    int32_t *out = malloc((size_t)(L * hkv * 16) * sizeof *out);
    int32_t *ok = malloc((size_t)(L * hkv * 16) * sizeof *ok);
    CHECK(qh && kh && out && ok);
    if (qh && kh && out && ok) {
        test_fill_normal(&rng, qh, L * hq * d, 1.0f);
        test_fill_normal(&rng, kh, hkv * n * d, 1.0f);
        CHECK_STATUS(oom_sequence(qh, kh, ok, L, n, d, hq, hkv), ELA_OK);
        int64_t failures = 0;
        ela_status st = ELA_OK;
        for (int64_t i = 1; i <= 1000; i++) {
            ela_debug_fail_alloc(i);
            st = oom_sequence(qh, kh, out, L, n, d, hq, hkv);
            ela_debug_fail_alloc(0);
            if (st == ELA_OK)
                break;
            failures++;
            CHECKF(st == ELA_ERR_OOM, "allocation %lld failed: got %s (%s), want ELA_ERR_OOM",
                   (long long)i, ela_status_str(st), ela_last_error());
            CHECKF(ela_last_error()[0] != '\0', "allocation %lld: empty message", (long long)i);
            if (st != ELA_ERR_OOM)
                break;
        }
        CHECKF(st == ELA_OK, "never succeeded under fault injection");
        CHECKF(failures >= 4, "only %lld allocations seen", (long long)failures);
        CHECK(memcmp(out, ok, (size_t)(L * hkv * 16) * sizeof *ok) == 0);
        printf("oom: %lld allocations failed in turn, each ELA_ERR_OOM\n", (long long)failures);
    }
    free(qh);
    free(kh);
    free(out);
    free(ok);
}

int main(void) {
    test_seed();
    build_cases();
    open_backends();
    CHECK(n_cfgs > 0);
    if (n_cfgs > 0) {
        ela_dtype t[2];
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                t[0] = (ela_dtype)a;
                t[1] = (ela_dtype)b;
                CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_NSA_SELECT, t, 2));
            }
        t[0] = ELA_F32;
        t[1] = ELA_Q8_0;
        CHECK(ela_backend_supports(cfgs[0].be, ELA_OP_NSA_SELECT, t, 2));
    }
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    printf("%d cases, %d backend configurations\n", n_cases, n_cfgs);
    double t_ref = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        if (only_case >= 0 && ci != only_case)
            continue;
        const sel_case *c = &cases[ci];
        case_data h;
        double t0 = test_now();
        int rc = case_data_make(c, ci, &h);
        t_ref += test_now() - t0;
        CHECKF(rc == 0, "case %d: building inputs or reference failed", ci);
        for (int k = 0; rc == 0 && k < n_cfgs; k++)
            run_on(&cfgs[k], c, ci, &h);
        if (rc == 0)
            case_data_free(&h);
    }
    printf("reference: %.2f s\n", t_ref);
    for (int k = 0; k < n_cfgs; k++)
        printf("level %-6s threads %-7s: %.3f s in ela_nsa_select\n", cfgs[k].level,
               cfgs[k].threads ? cfgs[k].threads : "default", cfgs[k].seconds);
    if (n_cfgs > 0)
        test_errors(cfgs[0].be);
    test_oom();
    for (int k = 0; k < n_cfgs; k++)
        ela_backend_close(cfgs[k].be);
    return test_summary("test_nsa_select");
}

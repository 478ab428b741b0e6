/* Cross-backend parity of the SSA/NSA ops and the fused LessIsMore selection layer (DESIGN.md
 * 4.1, 4.7, 4.9; PAPERS.md 3.2, 4.3): every device of each GPU plugin the build has, against
 * the CPU backend and the float64 references in tests/ref/ on the same random inputs.
 *   nsa_select: block lists identical to the reference's and the CPU's, -1 padding and tie order
 *     included (inputs regenerated while a row of the reference has a near-tie at a rank or at
 *     the cut; exact ties from keys periodic in the block, where every backend's scores are
 *     equal and only the order rule decides).
 *   attn_nsa: o within the dtype tolerances of the reference and of the CPU; random lists with
 *     -1 holes, future blocks and empty lists (rows that see no key must be exactly 0), the
 *     lists of ela_nsa_select, full mode (blocks NULL), gated or not; a bad list is refused
 *     (ELA_ERR_INVALID_ARG naming blocks) with o untouched.
 *   decode_select_attend: o against attn_dense's reference (causal, q_pos0 = n - 1) and the CPU,
 *     idx and count identical to the reference's and to the CPU's ela_decode_select (Gaussian
 *     inputs regenerated on near-ties; integer inputs with a power-of-two scale, where every
 *     logit is exact and only the index order breaks ties).
 * f32/f16/bf16, GQA 1/4/8, d 64/128, q_pos0 > 0, lengths not multiples of the block, top above
 * the blocks available, strided views. A configuration whose backend lacks an op (or the dtype
 * mix) is skipped for it with one printed line. Sizes are small: lavapipe is ~70x slower than
 * the CPU. Vulkan runs under the validation layer. Replay with ELA_TEST_SEED; one op with
 * ELA_TEST_OP=<name>, one case with ELA_TEST_CASE=<index>; ELA_TEST_VERBOSE=1 prints each
 * case's time. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_dense_ref.h"
#include "ref/attn_nsa_ref.h"
#include "ref/decode_select_ref.h"
#include "ref/nsa_select_ref.h"
#include "test_common.h"
#include "test_gpu.h"

/* nsa_select: two reference scores closer than this (relative) are a near-tie that f32 may
 * order either way (the CPU test measures ~1e-7 between f32 kernels and the reference; 100x
 * that). decode_select: neighbours in a head's top k_mid + 1 must be further apart than DS_GAP
 * times the f32 error bound of a logit, as in test_backend_parity_sparse.c. */
#define NS_REL_TIE 1e-5
#define DS_GAP 2.0
#define MAX_TRIES 30

/* One line per (op, configuration) the first time the configuration lacks the op. */
enum { OP_SELECT, OP_ATTN, OP_COUNT };
static int skipped[OP_COUNT][GPU_MAX_CFGS];

static int cfg_supports(int kc, int op, ela_op which, const ela_dtype *dt, int n_dt) {
    if (ela_backend_supports(gpu_cfgs[kc].be, which, dt, n_dt))
        return 1;
    CHECKF(kc != 0, "the cpu backend lacks op %d", (int)which);
    if (!skipped[op][kc]) {
        static const char *const names[] = {"nsa_select", "attn_nsa"};
        printf("skipped: %s on %s (not supported for %s/%s%s%s)\n", names[op], gpu_cfgs[kc].name,
               ela_dtype_name(dt[0]), ela_dtype_name(dt[1]), n_dt > 2 ? "/" : "",
               n_dt > 2 ? ela_dtype_name(dt[2]) : "");
        skipped[op][kc] = 1;
    }
    return 0;
}

/* Writes `fill` into every element of an i32 tensor of numel elements. */
static ela_status fill_i32(ela_tensor *t, int64_t numel, int32_t fill) {
    int32_t *x = malloc((size_t)(numel > 0 ? numel : 1) * sizeof *x);
    if (!x)
        return ELA_ERR_OOM;
    for (int64_t e = 0; e < numel; e++)
        x[e] = fill;
    ela_status st = ela_tensor_write(t, x, (size_t)numel * sizeof *x);
    free(x);
    return st;
}

/* ==== nsa_select ============================================================================= */
enum { NS_NORMAL, NS_PLANTED, NS_TIES };
static const char *const ns_names[] = {"normal", "planted", "ties"};

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0; /* < 0: n - L */
    int block, top;
    ela_dtype tq, tk;
    int data, strided;
} scase;

/* NS_NORMAL: Gaussian q and k (few rows, so that an input without near-ties comes within a few
 * tries). NS_PLANTED: block b of KV head g carries a direction the group's queries share, with
 * a strength from a shuffled ladder: well separated scores, many rows. NS_TIES: k periodic with
 * period B, every block identical: all scores of a row tie exactly (current, then 0, 1, ...). */
static const scase scases[] = {
    /* L, n, d, hq, hkv, q_pos0, B, S, q, k, data, strided */
    {200, 200, 64, 4, 1, 0, 16, 4, ELA_F32, ELA_F32, NS_PLANTED, 0},       /* GQA 4 */
    {150, 406, 128, 8, 2, 256, 16, 8, ELA_F16, ELA_F16, NS_PLANTED, 1},    /* q_pos0 > 0 */
    {77, 300, 64, 2, 2, -1, 16, 40, ELA_BF16, ELA_BF16, NS_PLANTED, 0},    /* GQA 1, top > blocks */
    {99, 250, 128, 8, 1, 151, 16, 16, ELA_F32, ELA_BF16, NS_PLANTED, 1},   /* GQA 8 */
    {1, 2000, 128, 8, 1, -1, 16, 16, ELA_BF16, ELA_BF16, NS_NORMAL, 0},    /* decode */
    {1, 1500, 64, 8, 2, -1, 16, 16, ELA_F32, ELA_F32, NS_NORMAL, 1},
    {3, 1111, 128, 4, 4, -1, 64, 4, ELA_F16, ELA_F32, NS_NORMAL, 0},       /* B 64 */
    {120, 500, 64, 8, 2, -1, 64, 3, ELA_F32, ELA_F32, NS_PLANTED, 0},
    {97, 97, 64, 4, 2, 0, 5, 7, ELA_F32, ELA_F32, NS_PLANTED, 0},          /* B 5 */
    {40, 40, 64, 4, 1, 0, 1, 16, ELA_F32, ELA_F16, NS_PLANTED, 0},         /* B 1 */
    {5, 5, 64, 4, 4, 0, 16, 16, ELA_F16, ELA_F16, NS_NORMAL, 0},           /* no complete block */
    {120, 300, 64, 8, 2, -1, 16, 16, ELA_F32, ELA_F32, NS_TIES, 0},        /* exact ties */
    {1, 1000, 128, 4, 1, -1, 16, 16, ELA_F16, ELA_F16, NS_TIES, 1},
    {50, 900, 64, 8, 1, -1, 64, 4, ELA_BF16, ELA_BF16, NS_TIES, 0},
};

static void scase_str(const scase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld B=%d S=%d q=%s k=%s %s%s",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)(c->q_pos0 < 0 ? c->n - c->L : c->q_pos0), c->block, c->top,
             ela_dtype_name(c->tq), ela_dtype_name(c->tk), ns_names[c->data],
             c->strided ? " strided" : "");
}

static int near_tie(double a, double b) {
    return fabs(a - b) <= NS_REL_TIE * fmax(fabs(a), fabs(b)) + 1e-30;
}

/* Whether the reference's list for every row is decided with a margin: neighbouring ranks and
 * the last kept against the best dropped are not near-ties (exact ties count as decided only
 * for NS_TIES, whose scores are exactly equal on every backend). */
static int ns_clear(const scase *c, int64_t q_pos0, const int32_t *want_all, const double *sc_all,
                    int64_t cols, int64_t *near_rows) {
    int64_t near = 0;
    char *in = malloc((size_t)(c->n / c->block + 1));
    if (!in)
        return 0;
    for (int64_t i = 0; i < c->L; i++)
        for (int g = 0; g < c->hkv; g++) {
            const int64_t t = q_pos0 + i, cur = t / c->block;
            const int64_t kept = c->top < cur + 1 ? c->top : cur + 1;
            const int32_t *want = want_all + (i * c->hkv + g) * c->top;
            const double *sc = sc_all + (i * c->hkv + g) * cols;
            int bad = 0;
#define NS_PAIR_BAD(a, b) (c->data == NS_TIES ? (a) != (b) && near_tie(a, b) : near_tie(a, b))
            for (int64_t x = 2; x < kept && !bad; x++)
                bad = NS_PAIR_BAD(sc[want[x - 1]], sc[want[x]]);
            if (!bad && kept > 1 && kept < cur + 1) {
                memset(in, 0, (size_t)cur);
                for (int64_t x = 1; x < kept; x++)
                    in[want[x]] = 1;
                for (int64_t b = 0; b < cur && !bad; b++)
                    if (!in[b])
                        bad = NS_PAIR_BAD(sc[want[kept - 1]], sc[b]);
            }
#undef NS_PAIR_BAD
            near += bad;
        }
    free(in);
    *near_rows = near;
    return near == 0;
}

static void ns_fill(const scase *c, test_rng *rng, float *q, float *k) {
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d, d = c->d;
    const int64_t G = c->hq / c->hkv, B = c->block, nb = (c->n + B - 1) / B;
    test_fill_normal(rng, q, nq, 1.0f);
    test_fill_normal(rng, k, nk, 1.0f);
    if (c->data == NS_TIES) {
        for (int g = 0; g < c->hkv; g++)
            for (int64_t j = B; j < c->n; j++)
                memcpy(k + ((int64_t)g * c->n + j) * d, k + ((int64_t)g * c->n + j % B) * d,
                       (size_t)d * sizeof *k);
        return;
    }
    if (c->data != NS_PLANTED)
        return;
    float *dir = malloc((size_t)d * sizeof *dir);
    int64_t *ladder = malloc((size_t)nb * sizeof *ladder);
    if (!dir || !ladder) {
        free(dir);
        free(ladder);
        return;
    }
    for (int g = 0; g < c->hkv; g++) {
        test_fill_normal(rng, dir, d, 1.0f);
        for (int64_t b = 0; b < nb; b++)
            ladder[b] = b;
        for (int64_t b = nb - 1; b > 0; b--) {
            int64_t r = test_rng_below(rng, b + 1), t = ladder[b];
            ladder[b] = ladder[r];
            ladder[r] = t;
        }
        for (int64_t b = 0; b < nb; b++) {
            const float a = 0.15f * (float)ladder[b];
            for (int64_t j = b * B; j < (b + 1) * B && j < c->n; j++)
                for (int64_t x = 0; x < d; x++)
                    k[((int64_t)g * c->n + j) * d + x] += a * dir[x];
        }
        for (int64_t i = 0; i < c->L; i++)
            for (int64_t hh = 0; hh < G; hh++)
                for (int64_t x = 0; x < d; x++)
                    q[(i * c->hq + g * G + hh) * d + x] += 0.5f * dir[x];
    }
    free(dir);
    free(ladder);
}

static void check_nsa_select(int ci) {
    const scase *c = &scases[ci];
    char what[200];
    scase_str(c, what, sizeof what);
    const int64_t q_pos0 = c->q_pos0 < 0 ? c->n - c->L : c->q_pos0;
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    const int64_t nb = c->L * c->hkv * c->top;
    ref_nsa_shape s = {c->L, c->n, c->d, c->hq, c->hkv, q_pos0, 0.0, c->block, c->top};
    const int64_t cols = ref_nsa_score_cols(&s);
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nk * 4);
    double *qd = malloc((size_t)nq * 8), *kd = malloc((size_t)nk * 8);
    double *scores = malloc((size_t)(c->L * c->hkv * cols) * 8);
    int32_t *want = malloc((size_t)nb * 4), *got = malloc((size_t)nb * 4);
    int32_t *cpu = malloc((size_t)nb * 4);
    if (!q || !k || !qd || !kd || !scores || !want || !got || !cpu) {
        CHECK(!"out of memory");
        goto done;
    }
    int tries = 1;
    int64_t near = 0;
    for (; tries <= MAX_TRIES; tries++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 100 + (uint64_t)tries + 41000);
        ns_fill(c, &rng, q, k);
        if (test_round_through(q, nq, c->tq) || test_round_through(k, nk, c->tk)) {
            CHECK(!"rounding failed");
            goto done;
        }
        for (int64_t e = 0; e < nq; e++)
            qd[e] = q[e];
        for (int64_t e = 0; e < nk; e++)
            kd[e] = k[e];
        if (ref_nsa_select(&s, qd, kd, want, scores) != 0) {
            CHECKF(0, "nsa_select case %d [%s]: reference failed", ci, what);
            goto done;
        }
        if (ns_clear(c, q_pos0, want, scores, cols, &near))
            break;
    }
    CHECKF(tries <= MAX_TRIES, "nsa_select case %d [%s]: every input had near-ties (last: %lld "
           "rows)", ci, what, (long long)near);
    if (tries > MAX_TRIES)
        goto done;
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_dtype dt[2] = {c->tq, c->tk};
        if (!cfg_supports(kc, OP_SELECT, ELA_OP_NSA_SELECT, dt, 2)) {
            if (kc == 0)
                break;
            continue;
        }
        ela_tensor *tq = NULL, *tk = NULL, *tb = NULL;
        int64_t bx[3] = {c->L, c->hkv, c->top};
        ela_status st = gpu_upload_qkv(cfg->be, c->L, c->n, c->d, c->hq, c->hkv, c->tq, c->tk,
                                       c->strided, q, k, NULL, &tq, &tk, NULL);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_I32, 3, bx, c->strided, &tb);
        if (st == ELA_OK) /* poison: every entry must be written */
            st = fill_i32(tb, nb, -77);
        CHECKF(st == ELA_OK, "nsa_select case %d [%s] on %s: setup: %s (%s)", ci, what, cfg->name,
               ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            ela_nsa_params np = {c->block, c->top};
            ela_attn_params p = ela_attn_params_default();
            p.q_pos0 = q_pos0;
            double t0 = test_now();
            st = ela_nsa_select(cfg->be, tq, tk, &np, &p, tb);
            st = gpu_call_done(cfg, st, t0, "nsa_select", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read(tb, got, (size_t)nb * 4);
            CHECKF(st == ELA_OK, "nsa_select case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tb);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        int64_t first = -1;
        for (int64_t e = 0; e < nb && first < 0; e++)
            if (got[e] != want[e])
                first = e;
        if (first >= 0) {
            const int64_t row = first / c->top, i = row / c->hkv, slot = first % c->top;
            const int32_t gb = got[first], wb = want[first];
            const double *sc = scores + row * cols;
            CHECKF(0, "nsa_select case %d [%s] on %s: row %lld (t = %lld) KV head %lld slot %lld: "
                   "block %d, the reference %d (scores %.9g vs %.9g)", ci, what, cfg->name,
                   (long long)i, (long long)(q_pos0 + i), (long long)(row % c->hkv),
                   (long long)slot, gb, wb, gb >= 0 && gb < cols ? sc[gb] : -1.0,
                   wb >= 0 && wb < cols ? sc[wb] : -1.0);
        }
        if (kc == 0)
            memcpy(cpu, got, (size_t)nb * 4);
        else
            CHECKF(memcmp(cpu, got, (size_t)nb * 4) == 0, "nsa_select case %d [%s] on %s: block "
                   "lists differ from the cpu backend's", ci, what, cfg->name);
    }
done:
    free(q);
    free(k);
    free(qd);
    free(kd);
    free(scores);
    free(want);
    free(got);
    free(cpu);
}

/* ==== attn_nsa =============================================================================== */
enum { AN_RANDOM, AN_SELECT, AN_FULL };
static const char *const an_names[] = {"random", "select", "full"};

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0; /* < 0: n - L */
    int block, top;
    ela_dtype tq, tkv, to;
    int src, gated, strided;
} acase;

static const acase acases[] = {
    /* L, n, d, hq, hkv, q_pos0, B, S, q, kv, o, src, gated, strided */
    {150, 150, 64, 4, 1, 0, 16, 4, ELA_F32, ELA_F32, ELA_F32, AN_RANDOM, 1, 0},   /* GQA 4 */
    {60, 500, 128, 8, 2, 440, 16, 16, ELA_F16, ELA_F16, ELA_F16, AN_RANDOM, 1, 1},
    {1, 1500, 128, 8, 1, -1, 16, 16, ELA_BF16, ELA_BF16, ELA_F32, AN_RANDOM, 0, 0}, /* decode */
    {90, 333, 64, 2, 2, -1, 16, 24, ELA_F32, ELA_BF16, ELA_BF16, AN_RANDOM, 1, 0},  /* GQA 1 */
    {97, 97, 64, 4, 2, 0, 5, 7, ELA_F32, ELA_F32, ELA_F32, AN_RANDOM, 1, 1},         /* B 5 */
    {3, 3, 64, 4, 2, 0, 16, 16, ELA_F32, ELA_F32, ELA_F32, AN_RANDOM, 1, 0},
    {130, 400, 64, 8, 1, -1, 16, 16, ELA_F16, ELA_F16, ELA_F32, AN_SELECT, 1, 0},    /* GQA 8 */
    {1, 2000, 128, 8, 2, -1, 16, 16, ELA_BF16, ELA_BF16, ELA_BF16, AN_SELECT, 1, 1},
    {100, 700, 64, 4, 1, -1, 64, 4, ELA_F32, ELA_F32, ELA_F32, AN_SELECT, 0, 0},
    {120, 300, 64, 8, 2, -1, 16, 16, ELA_F32, ELA_F32, ELA_F32, AN_FULL, 1, 0},
    {1, 900, 128, 4, 4, -1, 16, 16, ELA_F16, ELA_F16, ELA_F32, AN_FULL, 1, 1},
    {70, 200, 64, 8, 1, -1, 16, 16, ELA_BF16, ELA_BF16, ELA_BF16, AN_FULL, 0, 0},
};

static void acase_str(const acase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld B=%d S=%d q=%s kv=%s o=%s "
             "blocks=%s %s%s", (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)(c->q_pos0 < 0 ? c->n - c->L : c->q_pos0), c->block, c->top,
             ela_dtype_name(c->tq), ela_dtype_name(c->tkv), ela_dtype_name(c->to),
             an_names[c->src], c->gated ? "gated" : "no-gate", c->strided ? " strided" : "");
}

/* Random lists: distinct blocks, mostly at or before the row's current block, some in its
 * future, -1 holes; one row in 8 gets an empty list or only future blocks (it sees no key). */
static void random_lists(const acase *c, int64_t q_pos0, test_rng *rng, int32_t *bl) {
    const int64_t nkb = (c->n + c->block - 1) / c->block;
    for (int64_t i = 0; i < c->L; i++)
        for (int g = 0; g < c->hkv; g++) {
            int32_t *list = bl + (i * c->hkv + g) * c->top;
            const int64_t cur = (q_pos0 + i) / c->block;
            const int64_t kind = test_rng_below(rng, 8);
            for (int x = 0; x < c->top; x++) {
                int32_t b = -1;
                for (int tries = 0; tries < 8 && b < 0; tries++) {
                    int64_t cand;
                    if (kind == 0)
                        break; /* empty */
                    if (kind == 1) {
                        if (cur + 1 >= nkb)
                            break;
                        cand = cur + 1 + test_rng_below(rng, nkb - cur - 1); /* future only */
                    } else if (test_rng_below(rng, 5) == 0) {
                        if (test_rng_below(rng, 2))
                            break; /* a hole */
                        cand = test_rng_below(rng, nkb);
                    } else {
                        cand = test_rng_below(rng, cur + 1);
                    }
                    int dup = 0;
                    for (int y = 0; y < x; y++)
                        dup |= list[y] == cand;
                    if (!dup)
                        b = (int32_t)cand;
                }
                list[x] = b;
            }
        }
}

/* Runs attn_nsa with a bad list on configuration kc: refused, naming blocks, o untouched. */
static void attn_nsa_bad_lists(int kc, ela_tensor *tq, ela_tensor *tk, ela_tensor *tv,
                               ela_tensor *to, const acase *c, int64_t q_pos0,
                               const int32_t *good) {
    gpu_cfg *cfg = &gpu_cfgs[kc];
    const int64_t nb = c->L * c->hkv * c->top, no = c->L * c->hq * c->d;
    const int64_t nkb = (c->n + c->block - 1) / c->block;
    int32_t *bad = malloc((size_t)nb * 4);
    float *before = malloc((size_t)no * 4), *after = malloc((size_t)no * 4);
    ela_tensor *tb = NULL;
    int64_t bx[3] = {c->L, c->hkv, c->top};
    if (!bad || !before || !after || c->top < 2 || c->L < 2) {
        free(bad);
        free(before);
        free(after);
        return;
    }
    ela_status st = gpu_dev_tensor(cfg->be, ELA_I32, 3, bx, c->strided, &tb);
    if (st == ELA_OK)
        st = ela_tensor_read_f32(to, before, no);
    for (int which = 0; which < 2 && st == ELA_OK; which++) {
        memcpy(bad, good, (size_t)nb * 4);
        const int64_t row = (c->L - 1) * c->hkv + (c->hkv - 1);
        if (which == 0) {
            bad[row * c->top + 1] = (int32_t)nkb; /* out of range */
        } else {
            bad[row * c->top] = 0; /* a repeat */
            bad[row * c->top + 1] = 0;
        }
        st = ela_tensor_write(tb, bad, (size_t)nb * 4);
        if (st != ELA_OK)
            break;
        ela_nsa_params np = {c->block, c->top};
        ela_attn_params p = ela_attn_params_default();
        p.q_pos0 = q_pos0;
        ela_status got = ela_attn_nsa(cfg->be, tq, tk, tv, tb, NULL, to, &np, &p);
        CHECKF(got == ELA_ERR_INVALID_ARG, "attn_nsa on %s: a %s list gave %s, want "
               "ELA_ERR_INVALID_ARG", cfg->name, which ? "repeating" : "out-of-range",
               ela_status_str(got));
        CHECKF(test_has_word(ela_last_error(), "blocks"), "attn_nsa on %s: message \"%s\" does "
               "not name blocks", cfg->name, ela_last_error());
        st = ela_tensor_read_f32(to, after, no);
        if (st == ELA_OK)
            CHECKF(memcmp(before, after, (size_t)no * 4) == 0, "attn_nsa on %s: o written "
                   "despite a bad %s list", cfg->name, which ? "repeating" : "out-of-range");
    }
    CHECKF(st == ELA_OK, "attn_nsa bad lists on %s: %s (%s)", cfg->name, ela_status_str(st),
           ela_last_error());
    ela_tensor_free(tb);
    free(bad);
    free(before);
    free(after);
}

static void check_attn_nsa(int ci) {
    const acase *c = &acases[ci];
    char what[220];
    acase_str(c, what, sizeof what);
    const int64_t q_pos0 = c->q_pos0 < 0 ? c->n - c->L : c->q_pos0;
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    const int64_t nb = c->L * c->hkv * c->top, ng = c->L * c->hq;
    const int has_blocks = c->src != AN_FULL;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci + 42000);
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nkv * 4), *v = malloc((size_t)nkv * 4);
    float *o = malloc((size_t)nq * 4), *gate = malloc((size_t)ng * 4);
    double *ro = malloc((size_t)nq * 8), *co = malloc((size_t)nq * 8), *gd = NULL;
    int32_t *bl = malloc((size_t)nb * 4);
    double *qd = NULL, *kd = NULL, *vd = NULL;
    if (!q || !k || !v || !o || !gate || !ro || !co || !bl) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, q, nq, 1.5f);
    test_fill_normal(&rng, k, nkv, 1.0f);
    test_fill_normal(&rng, v, nkv, 1.0f);
    test_fill_uniform(&rng, gate, ng, 0.05f, 1.0f);
    if (test_round_through(q, nq, c->tq) || test_round_through(k, nkv, c->tkv) ||
        test_round_through(v, nkv, c->tkv)) {
        CHECK(!"rounding failed");
        goto done;
    }
    if (c->src == AN_RANDOM) {
        random_lists(c, q_pos0, &rng, bl);
    } else if (c->src == AN_SELECT) { /* the CPU's selection, the same lists everywhere */
        ela_backend *be = gpu_cfgs[0].be;
        ela_tensor *tq = NULL, *tk = NULL, *tb = NULL;
        int64_t bx[3] = {c->L, c->hkv, c->top};
        ela_status st = gpu_upload_qkv(be, c->L, c->n, c->d, c->hq, c->hkv, c->tq, c->tkv, 0, q, k,
                                       NULL, &tq, &tk, NULL);
        if (st == ELA_OK)
            st = ela_tensor_new(be, ELA_I32, 3, bx, NULL, &tb);
        ela_nsa_params np = {c->block, c->top};
        ela_attn_params p = ela_attn_params_default();
        p.q_pos0 = q_pos0;
        if (st == ELA_OK)
            st = ela_nsa_select(be, tq, tk, &np, &p, tb);
        if (st == ELA_OK)
            st = ela_tensor_read(tb, bl, (size_t)nb * 4);
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tb);
        CHECKF(st == ELA_OK, "attn_nsa case %d: cpu selection: %s (%s)", ci, ela_status_str(st),
               ela_last_error());
        if (st != ELA_OK)
            goto done;
    }
    qd = test_to_double(q, nq);
    kd = test_to_double(k, nkv);
    vd = test_to_double(v, nkv);
    gd = test_to_double(gate, ng);
    ref_nsa_shape s = {c->L, c->n, c->d, c->hq, c->hkv, q_pos0, 0.0, c->block, c->top};
    if (!qd || !kd || !vd || !gd ||
        ref_attn_nsa(&s, qd, kd, vd, has_blocks ? bl : NULL, c->gated ? gd : NULL, ro) != 0) {
        CHECKF(0, "attn_nsa case %d [%s]: reference failed", ci, what);
        goto done;
    }
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_dtype dt[3] = {c->tq, c->tkv, c->to};
        if (!cfg_supports(kc, OP_ATTN, ELA_OP_ATTN_NSA, dt, 3)) {
            if (kc == 0)
                break;
            continue;
        }
        ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL, *tb = NULL, *tg = NULL;
        int64_t ox[3] = {c->L, c->hq, c->d}, bx[3] = {c->L, c->hkv, c->top};
        int64_t gx[2] = {c->L, c->hq};
        ela_status st = gpu_upload_qkv(cfg->be, c->L, c->n, c->d, c->hq, c->hkv, c->tq, c->tkv,
                                       c->strided, q, k, v, &tq, &tk, &tv);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, c->to, 3, ox, c->strided, &to);
        if (st == ELA_OK && has_blocks)
            st = gpu_dev_tensor(cfg->be, ELA_I32, 3, bx, c->strided, &tb);
        if (st == ELA_OK && has_blocks)
            st = ela_tensor_write(tb, bl, (size_t)nb * 4);
        if (st == ELA_OK && c->gated)
            st = gpu_dev_tensor(cfg->be, ELA_F32, 2, gx, c->strided, &tg);
        if (st == ELA_OK && c->gated)
            st = ela_tensor_write_f32(tg, gate, ng);
        if (st == ELA_OK) { /* poison: every element must be written */
            for (int64_t e = 0; e < nq; e++)
                o[e] = 1234.0f;
            st = ela_tensor_write_f32(to, o, nq);
        }
        CHECKF(st == ELA_OK, "attn_nsa case %d [%s] on %s: setup: %s (%s)", ci, what, cfg->name,
               ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            ela_nsa_params np = {c->block, c->top};
            ela_attn_params p = ela_attn_params_default();
            p.q_pos0 = q_pos0;
            double t0 = test_now();
            st = ela_attn_nsa(cfg->be, tq, tk, tv, tb, tg, to, &np, &p);
            st = gpu_call_done(cfg, st, t0, "attn_nsa", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read_f32(to, o, nq);
            CHECKF(st == ELA_OK, "attn_nsa case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        if (st == ELA_OK && has_blocks && ci == 0 && kc > 0)
            attn_nsa_bad_lists(kc, tq, tk, tv, to, c, q_pos0, bl);
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tv);
        ela_tensor_free(to);
        ela_tensor_free(tb);
        ela_tensor_free(tg);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        /* A row that sees no key is exactly 0 (relative L2 would hide a small wrong row). */
        int64_t zero_rows = 0, bad_row = -1;
        for (int64_t r = 0; r < c->L * c->hq; r++) {
            int zero = 1;
            for (int64_t x = 0; x < c->d && zero; x++)
                zero = ro[r * c->d + x] == 0.0;
            if (!zero)
                continue;
            zero_rows++;
            for (int64_t x = 0; x < c->d && bad_row < 0; x++)
                if (o[r * c->d + x] != 0.0f)
                    bad_row = r;
        }
        CHECKF(bad_row < 0, "attn_nsa case %d [%s] on %s: row %lld head %lld sees no key but o "
               "is not 0", ci, what, cfg->name, (long long)(bad_row / c->hq),
               (long long)(bad_row % c->hq));
        if (kc == 0 && c->src == AN_RANDOM)
            CHECKF(zero_rows > 0 || c->L < 8, "attn_nsa case %d: no row without keys", ci);
        gpu_check_attention(kc, "attn_nsa", ci, what, ro, NULL, o, NULL, nq, 0,
                            gpu_tol_out(c->tq, c->tkv, c->to), 0.0, co, NULL);
    }
done:
    free(q);
    free(k);
    free(v);
    free(o);
    free(gate);
    free(ro);
    free(co);
    free(gd);
    free(bl);
    free(qd);
    free(kd);
    free(vd);
}

/* ==== decode_select_attend =================================================================== */
enum { DS_FLOAT, DS_INT };
static const char *const ds_names[] = {"float", "int"};

typedef struct {
    int64_t n, d;
    int hq, hkv;
    int64_t budget;
    float recent;
    int sinks;
    ela_dtype tq, tkv, to;
    int data, strided;
} dcase;

/* DS_FLOAT: Gaussian q, k, v, regenerated while two logits of a head's top k_mid + 1 are closer
 * than DS_GAP error bounds. DS_INT: integer q, k in [-3, 3] and scale 1/8, so every logit is
 * exact on every backend (many ties, broken by the index). */
static const dcase dcases[] = {
    /* n, d, hq, hkv, K, recent, sinks, q, kv, o, data, strided */
    {1000, 64, 4, 4, 24, 0.25f, 4, ELA_F32, ELA_F32, ELA_F32, DS_FLOAT, 0},    /* GQA 1 */
    {1500, 128, 8, 2, 20, 0.25f, 4, ELA_F16, ELA_F16, ELA_F16, DS_FLOAT, 1},   /* GQA 4 */
    {3001, 128, 8, 1, 200, 0.25f, 4, ELA_BF16, ELA_BF16, ELA_F32, DS_INT, 1},  /* GQA 8 */
    {5000, 64, 8, 2, 300, 0.25f, 4, ELA_F16, ELA_F16, ELA_F32, DS_INT, 0},     /* long: splits */
    {4099, 128, 16, 2, 256, 0.1f, 4, ELA_F32, ELA_F16, ELA_F32, DS_INT, 0},
    {300, 64, 4, 2, 5, 0.25f, 4, ELA_F32, ELA_F32, ELA_BF16, DS_INT, 0},       /* sinks > share */
    {100, 64, 8, 2, 5000, 0.25f, 4, ELA_F16, ELA_F16, ELA_F16, DS_INT, 1},     /* K >= n */
    {777, 128, 4, 1, 777, 0.25f, 4, ELA_F32, ELA_F32, ELA_F32, DS_FLOAT, 0},   /* K == n */
};

static void dcase_str(const dcase *c, char *buf, size_t size) {
    snprintf(buf, size, "n=%lld d=%lld Hq=%d Hkv=%d K=%lld recent=%g sinks=%d q=%s kv=%s o=%s "
             "%s%s", (long long)c->n, (long long)c->d, c->hq, c->hkv, (long long)c->budget,
             (double)c->recent, c->sinks, ela_dtype_name(c->tq), ela_dtype_name(c->tkv),
             ela_dtype_name(c->to), ds_names[c->data], c->strided ? " strided" : "");
}

/* The reference ranking's margin, in units of the f32 error bound of a logit. */
static double ds_gap(const dcase *c, const double *logits, const double *q, const double *k) {
    return ref_decode_select_margin(c->hq, c->hkv, c->n, c->d, c->budget, c->recent, c->sinks,
                                    logits, q, k);
}

static void check_decode_select_attend(int ci) {
    const dcase *c = &dcases[ci];
    char what[200];
    dcase_str(c, what, sizeof what);
    const int64_t nq = c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d, n = c->n;
    const int64_t kb = c->budget < n ? c->budget : n;
    const float scale = c->data == DS_INT ? 0.125f : 0.0f;
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nkv * 4), *v = malloc((size_t)nkv * 4);
    float *o = malloc((size_t)nq * 4);
    double *qd = malloc((size_t)nq * 8), *kd = malloc((size_t)nkv * 8), *vd = NULL;
    double *logits = malloc((size_t)(c->hq * n) * 8);
    double *ro = malloc((size_t)nq * 8), *co = malloc((size_t)nq * 8);
    int64_t *ref = malloc((size_t)kb * 8);
    int32_t *got = malloc((size_t)kb * 4), *cpu_sel = malloc((size_t)kb * 4);
    if (!q || !k || !v || !o || !qd || !kd || !logits || !ro || !co || !ref || !got || !cpu_sel) {
        CHECK(!"out of memory");
        goto done;
    }
    int64_t ref_count = 0;
    double gap = 0.0;
    int tries = 1;
    for (; tries <= MAX_TRIES; tries++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 100 + (uint64_t)tries + 43000);
        if (c->data == DS_INT) {
            for (int64_t e = 0; e < nq; e++)
                q[e] = (float)(test_rng_below(&rng, 7) - 3);
            for (int64_t e = 0; e < nkv; e++)
                k[e] = (float)(test_rng_below(&rng, 7) - 3);
        } else {
            test_fill_normal(&rng, q, nq, 1.0f);
            test_fill_normal(&rng, k, nkv, 1.0f);
        }
        test_fill_normal(&rng, v, nkv, 1.0f);
        if (test_round_through(q, nq, c->tq) || test_round_through(k, nkv, c->tkv) ||
            test_round_through(v, nkv, c->tkv)) {
            CHECK(!"rounding failed");
            goto done;
        }
        for (int64_t e = 0; e < nq; e++)
            qd[e] = q[e];
        for (int64_t e = 0; e < nkv; e++)
            kd[e] = k[e];
        if (ref_decode_select(c->hq, c->hkv, n, c->d, qd, kd, scale, c->budget, c->recent,
                              c->sinks, ref, &ref_count, logits) != 0) {
            CHECKF(0, "decode_select_attend case %d [%s]: selection reference failed", ci, what);
            goto done;
        }
        gap = c->data == DS_INT ? INFINITY : ds_gap(c, logits, qd, kd);
        if (gap >= DS_GAP)
            break;
    }
    CHECKF(tries <= MAX_TRIES, "decode_select_attend case %d [%s]: every input was a near-tie",
           ci, what);
    if (tries > MAX_TRIES)
        goto done;
    vd = test_to_double(v, nkv);
    ref_attn_dense_shape s = {1, n, c->d, c->hq, c->hkv, 1, n - 1, scale};
    if (!vd || ref_attn_dense(&s, qd, kd, vd, ro, NULL) != 0) {
        CHECKF(0, "decode_select_attend case %d [%s]: attention reference failed", ci, what);
        goto done;
    }
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        /* every backend runs it: fused, or attn_dense + decode_select composed in the core */
        ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL, *ti = NULL;
        int64_t ox[3] = {1, c->hq, c->d}, ix[1] = {kb};
        ela_status st = gpu_upload_qkv(cfg->be, 1, n, c->d, c->hq, c->hkv, c->tq, c->tkv,
                                       c->strided, q, k, v, &tq, &tk, &tv);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, c->to, 3, ox, c->strided, &to);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_I32, 1, ix, c->strided, &ti);
        if (st == ELA_OK)
            st = fill_i32(ti, kb, -77);
        if (st == ELA_OK) {
            for (int64_t e = 0; e < nq; e++)
                o[e] = 1234.0f;
            st = ela_tensor_write_f32(to, o, nq);
        }
        CHECKF(st == ELA_OK, "decode_select_attend case %d [%s] on %s: setup: %s (%s)", ci, what,
               cfg->name, ela_status_str(st), ela_last_error());
        int64_t count = -1;
        ela_decode_select_params dp = {c->budget, c->recent, c->sinks};
        ela_attn_params p = ela_attn_params_default();
        p.scale = scale;
        if (st == ELA_OK) {
            double t0 = test_now();
            st = ela_decode_select_attend(cfg->be, tq, tk, tv, to, &dp, &p, ti, &count);
            st = gpu_call_done(cfg, st, t0, "decode_select_attend", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read(ti, got, (size_t)kb * 4);
            if (st == ELA_OK)
                st = ela_tensor_read_f32(to, o, nq);
            CHECKF(st == ELA_OK, "decode_select_attend case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        if (st == ELA_OK && kc == 0) { /* the CPU's ela_decode_select, for the lists below */
            ela_tensor *ts = NULL;
            int64_t cnt2 = -1;
            st = ela_tensor_new(cfg->be, ELA_I32, 1, ix, NULL, &ts);
            if (st == ELA_OK)
                st = ela_decode_select(cfg->be, tq, tk, &dp, &p, ts, &cnt2);
            if (st == ELA_OK)
                st = ela_tensor_read(ts, cpu_sel, (size_t)kb * 4);
            ela_tensor_free(ts);
            CHECKF(st == ELA_OK && cnt2 == kb, "decode_select_attend case %d: cpu "
                   "ela_decode_select: %s (%s), count %lld", ci, ela_status_str(st),
                   ela_last_error(), (long long)cnt2);
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
        CHECKF(count == ref_count, "decode_select_attend case %d [%s] on %s: count %lld, the "
               "reference %lld", ci, what, cfg->name, (long long)count, (long long)ref_count);
        int64_t first = -1;
        for (int64_t e = 0; e < kb && first < 0; e++)
            if (got[e] != ref[e])
                first = e;
        CHECKF(first < 0, "decode_select_attend case %d [%s] on %s: idx[%lld] = %d, the reference "
               "%lld (gap %.2e)", ci, what, cfg->name, (long long)first,
               first >= 0 ? got[first] : 0, first >= 0 ? (long long)ref[first] : 0LL, gap);
        CHECKF(memcmp(cpu_sel, got, (size_t)kb * 4) == 0, "decode_select_attend case %d [%s] on "
               "%s: idx differs from the cpu backend's ela_decode_select", ci, what, cfg->name);
        gpu_check_attention(kc, "decode_select_attend", ci, what, ro, NULL, o, NULL, nq, 0,
                            gpu_tol_out(c->tq, c->tkv, c->to), 0.0, co, NULL);
    }
done:
    free(q);
    free(k);
    free(v);
    free(o);
    free(qd);
    free(kd);
    free(vd);
    free(logits);
    free(ro);
    free(co);
    free(ref);
    free(got);
    free(cpu_sel);
}

/* ==== driver ================================================================================= */
int main(void) {
    test_seed();
    const gpu_op_cases ops[] = {
        {"nsa_select", (int)(sizeof scases / sizeof scases[0]), check_nsa_select},
        {"attn_nsa", (int)(sizeof acases / sizeof acases[0]), check_attn_nsa},
        {"decode_select_attend", (int)(sizeof dcases / sizeof dcases[0]),
         check_decode_select_attend},
    };
    return gpu_run_ops("test_backend_parity_nsa", ops, (int)(sizeof ops / sizeof ops[0]));
}

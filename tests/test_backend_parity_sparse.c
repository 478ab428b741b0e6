/* Cross-backend parity of the sparse attention ops (DESIGN.md 4.2-4.8, 7): every device of each
 * GPU plugin the build has, against the CPU backend and the float64 references in tests/ref/
 * on the same random inputs. Vulkan devices (vulkan:N) in their default configuration and with
 * their fallbacks forced (staging copies, 16-bit data as 32-bit words, shared memory instead of
 * subgroup shuffles); CUDA devices (cuda:N) in their default configuration (tensor-core paths),
 * with every op on its simple kernels (ELA_CUDA_FORCE=generic), and with the keys split 5 ways
 * and not at all wherever a kernel can split (ELA_CUDA_SPLITS=5 and 1). attn_blocks and
 * attn_gather outputs within the dtype tolerances; xattn_estimate masks, decode_select index
 * lists and router_eval decisions identical (inputs regenerated while the reference's selection
 * is within a near-tie margin; exact ties where the inputs make every score exact, so that only
 * the tie order decides). f32/f16/bf16, GQA 1/4/8, d 64/128 (and 80), lengths not multiples of
 * 128, q_pos0 > 0, every head kind, strided views at odd element offsets. Sizes are small:
 * lavapipe is ~70x slower than the CPU. Vulkan runs under the validation layer
 * (ELA_VK_VALIDATION=1 unless set otherwise). A plugin the build has (ELA_TEST_WANT_VULKAN,
 * ELA_TEST_WANT_CUDA from CMake) must load; a machine without its devices prints "skipped: no
 * Vulkan device" / "skipped: no CUDA device" and passes. Replay with ELA_TEST_SEED; one op with
 * ELA_TEST_OP=<name>, one case with ELA_TEST_CASE=<index>; ELA_TEST_VERBOSE=1 prints each
 * case's time. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_blocks_ref.h"
#include "ref/attn_gather_ref.h"
#include "ref/decode_select_ref.h"
#include "ref/router_eval_ref.h"
#include "ref/xattn_estimate_ref.h"
#include "test_common.h"
#include "test_gpu.h"

/* Selections: an xattn input whose float64 margin (relative to the row mass) is below this, or a
 * decode_select input with two logits of one head's top k_mid + 1 closer than DS_GAP times the
 * f32 error bound of a logit, is a near-tie that f32 may resolve either way: regenerated. */
#define XA_MARGIN 1e-4
#define DS_GAP 2.0
#define MAX_TRIES 30

/* ==== attn_blocks ============================================================================ */
enum { BP_DENSE, BP_STREAM, BP_MASK, BP_MIXED, BP_MIXED_KV, BP_COUNT };
static const char *const bp_names[] = {"dense", "stream", "mask", "mixed", "mixed-kv"};

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;
    ela_dtype tq, tkv, to;
    int pattern, lse, strided;
} bcase;

static const bcase bcases[] = {
    /* L, n, d, hq, hkv, q_pos0, q, kv, o, pattern, lse, strided */
    {300, 300, 64, 2, 2, 0, ELA_F32, ELA_F32, ELA_F32, BP_MIXED, 1, 0},
    {200, 456, 128, 8, 2, 256, ELA_F16, ELA_F16, ELA_F16, BP_MIXED, 1, 1},
    {129, 1000, 64, 8, 1, 768, ELA_BF16, ELA_BF16, ELA_F32, BP_MIXED_KV, 1, 0},
    {300, 200, 64, 4, 2, 0, ELA_F32, ELA_F16, ELA_F32, BP_MASK, 1, 1},
    {77, 333, 128, 4, 4, 256, ELA_F32, ELA_F32, ELA_F32, BP_STREAM, 0, 0},
    {513, 513, 64, 4, 1, 0, ELA_F16, ELA_F16, ELA_F32, BP_MIXED, 1, 0},
    {1, 1, 64, 2, 1, 0, ELA_F32, ELA_F32, ELA_F32, BP_DENSE, 1, 0},
    {100, 1400, 64, 4, 2, 1280, ELA_F32, ELA_F32, ELA_BF16, BP_DENSE, 1, 1}, /* split pieces */
    {120, 1500, 128, 8, 2, 1280, ELA_BF16, ELA_BF16, ELA_BF16, BP_MIXED, 1, 0},
    /* more than 32 key blocks (two words of a mask bitmap), q_pos0 past them */
    {256, 4700, 128, 4, 2, 4480, ELA_BF16, ELA_BF16, ELA_F32, BP_MIXED, 1, 0},
    {200, 4400, 64, 4, 1, 4224, ELA_F16, ELA_F16, ELA_F16, BP_MASK, 0, 0},
    /* f16 with rows for 64-row workgroups (tensor cores where the device has them) */
    {192, 1984, 128, 8, 2, 1792, ELA_F16, ELA_F16, ELA_F32, BP_STREAM, 1, 0},
    {100, 1400, 64, 4, 2, 1280, ELA_F16, ELA_F16, ELA_F16, BP_DENSE, 1, 1}, /* split pieces */
};

static void bcase_str(const bcase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld q=%s kv=%s o=%s %s%s%s",
             (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->q_pos0, ela_dtype_name(c->tq), ela_dtype_name(c->tkv),
             ela_dtype_name(c->to), bp_names[c->pattern], c->lse ? "" : " no-lse",
             c->strided ? " strided" : "");
}

static ela_head_mode random_mode(test_rng *rng, int kind, int mask) {
    ela_head_mode md = {(ela_head_kind)kind, 0, 1, 0};
    if (kind == ELA_HEAD_STREAMING) {
        md.sink_blocks = (int)test_rng_below(rng, 4);
        md.local_blocks = 1 + (int)test_rng_below(rng, 4);
    } else if (kind == ELA_HEAD_MASK) {
        md.mask = mask;
    }
    return md;
}

static void check_blocks(int ci) {
    const bcase *c = &bcases[ci];
    char what[200];
    bcase_str(c, what, sizeof what);
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    const int64_t nqb = (c->L + 127) / 128, nkb = (c->n + 127) / 128, nl = c->L * c->hq;
    const int G = c->hq / c->hkv;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci + 31000);
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nkv * 4), *v = malloc((size_t)nkv * 4);
    float *o = malloc((size_t)nq * 4), *lse = malloc((size_t)nl * 4);
    double *ro = malloc((size_t)nq * 8), *rl = malloc((size_t)nl * 8);
    double *co = malloc((size_t)nq * 8), *cl = malloc((size_t)nl * 8);
    ela_head_mode *modes = calloc((size_t)c->hq, sizeof *modes);
    ref_head_mode *rmodes = calloc((size_t)c->hq, sizeof *rmodes);
    int64_t n_masks = c->hq;
    uint8_t *masks = malloc((size_t)(n_masks * nqb * nkb));
    double *qd = NULL, *kd = NULL, *vd = NULL;
    if (!q || !k || !v || !o || !lse || !ro || !rl || !co || !cl || !modes || !rmodes || !masks) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, q, nq, 1.5f);
    test_fill_normal(&rng, k, nkv, 1.0f);
    test_fill_normal(&rng, v, nkv, 1.0f);
    if (test_round_through(q, nq, c->tq) || test_round_through(k, nkv, c->tkv) ||
        test_round_through(v, nkv, c->tkv)) {
        CHECK(!"rounding failed");
        goto done;
    }
    for (int64_t e = 0; e < n_masks * nqb * nkb; e++) /* the non-causal part too */
        masks[e] = (uint8_t)(test_rng_below(&rng, 3) == 0 ? 1 + test_rng_below(&rng, 255) : 0);
    for (int h = 0; h < c->hq; h++) {
        int kind = c->pattern == BP_DENSE    ? ELA_HEAD_DENSE
                   : c->pattern == BP_STREAM ? ELA_HEAD_STREAMING
                   : c->pattern == BP_MASK   ? ELA_HEAD_MASK
                                             : (int)test_rng_below(&rng, 3);
        if (c->pattern == BP_MIXED_KV && h % G != 0)
            modes[h] = modes[h - h % G];
        else
            modes[h] = random_mode(&rng, kind, (int)test_rng_below(&rng, n_masks));
        rmodes[h].kind = (int)modes[h].kind;
        rmodes[h].sink_blocks = modes[h].sink_blocks;
        rmodes[h].local_blocks = modes[h].local_blocks;
        rmodes[h].mask = modes[h].mask;
    }
    qd = test_to_double(q, nq);
    kd = test_to_double(k, nkv);
    vd = test_to_double(v, nkv);
    ref_attn_blocks_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->q_pos0, 0.0, n_masks};
    if (!qd || !kd || !vd || ref_attn_blocks(&s, qd, kd, vd, rmodes, masks, ro, rl) != 0) {
        CHECKF(0, "attn_blocks case %d [%s]: reference failed", ci, what);
        goto done;
    }
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL, *tl = NULL, *tm = NULL;
        int64_t ox[3] = {c->L, c->hq, c->d}, lx[2] = {c->L, c->hq}, mx[3] = {n_masks, nqb, nkb};
        ela_status st = gpu_upload_qkv(cfg->be, c->L, c->n, c->d, c->hq, c->hkv, c->tq, c->tkv,
                                   c->strided, q, k, v, &tq, &tk, &tv);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, c->to, 3, ox, c->strided, &to);
        if (st == ELA_OK && c->lse)
            st = gpu_dev_tensor(cfg->be, ELA_F32, 2, lx, c->strided, &tl);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_U8, 3, mx, c->strided, &tm);
        if (st == ELA_OK)
            st = ela_tensor_write(tm, masks, (size_t)(n_masks * nqb * nkb));
        CHECKF(st == ELA_OK, "attn_blocks case %d [%s] on %s: setup: %s (%s)", ci, what, cfg->name,
               ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            ela_attn_params p = ela_attn_params_default();
            p.causal = 1;
            p.q_pos0 = c->q_pos0;
            double t0 = test_now();
            st = ela_attn_blocks(cfg->be, tq, tk, tv, to, tl, modes, tm, &p);
            st = gpu_call_done(cfg, st, t0, "attn_blocks", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read_f32(to, o, nq);
            if (st == ELA_OK && c->lse)
                st = ela_tensor_read_f32(tl, lse, nl);
            CHECKF(st == ELA_OK, "attn_blocks case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tv);
        ela_tensor_free(to);
        ela_tensor_free(tl);
        ela_tensor_free(tm);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        gpu_check_attention(kc, "attn_blocks", ci, what, ro, rl, o, c->lse ? lse : NULL, nq, nl,
                        gpu_tol_out(c->tq, c->tkv, c->to), gpu_tol_lse(c->tq, c->tkv), co, cl);
    }
done:
    free(q);
    free(k);
    free(v);
    free(o);
    free(lse);
    free(ro);
    free(rl);
    free(co);
    free(cl);
    free(modes);
    free(rmodes);
    free(masks);
    free(qd);
    free(kd);
    free(vd);
}

/* ==== attn_gather ============================================================================ */
typedef struct {
    int64_t L, n, d;
    int hq, hkv, causal;
    int64_t q_pos0, m;
    int per_head;
    ela_dtype tq, tkv, to;
    int lse, strided;
} gcase;

static const gcase gcases[] = {
    /* L, n, d, hq, hkv, causal, q_pos0, m, per_head, q, kv, o, lse, strided */
    {1, 1000, 128, 8, 2, 1, 999, 300, 0, ELA_F32, ELA_F16, ELA_F32, 1, 0},  /* decode */
    {1, 3001, 64, 8, 1, 1, 3000, 2000, 1, ELA_F16, ELA_F16, ELA_F16, 1, 1}, /* split + merge */
    {1, 777, 128, 4, 4, 0, 0, 500, 1, ELA_BF16, ELA_BF16, ELA_F32, 0, 0},
    {7, 1000, 64, 8, 2, 1, 500, 900, 0, ELA_F32, ELA_F32, ELA_F32, 1, 1}, /* some entries hidden */
    {33, 300, 128, 2, 2, 1, 10, 77, 1, ELA_F32, ELA_BF16, ELA_BF16, 1, 0},
    {5, 129, 64, 4, 1, 1, 0, 129, 0, ELA_F32, ELA_F32, ELA_F32, 1, 0}, /* rows that see none */
    {2, 4099, 128, 32, 8, 1, 4097, 1024, 1, ELA_F32, ELA_F16, ELA_F32, 1, 0},
    /* 16 rows per KV head (the register decode shader): half the entries past the rows */
    {4, 600, 64, 8, 2, 1, 300, 400, 0, ELA_F16, ELA_F16, ELA_F32, 1, 0},
};

static void gcase_str(const gcase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d %s q_pos0=%lld m=%lld %s q=%s kv=%s "
             "o=%s%s%s", (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             c->causal ? "causal" : "non-causal", (long long)c->q_pos0, (long long)c->m,
             c->per_head ? "per-kv-head" : "shared", ela_dtype_name(c->tq),
             ela_dtype_name(c->tkv), ela_dtype_name(c->to), c->lse ? "" : " no-lse",
             c->strided ? " strided" : "");
}

static void check_gather(int ci) {
    const gcase *c = &gcases[ci];
    char what[220];
    gcase_str(c, what, sizeof what);
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d, nl = c->L * c->hq;
    const int lists = c->per_head ? c->hkv : 1;
    test_rng rng;
    test_rng_init(&rng, (uint64_t)ci + 32000);
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nkv * 4), *v = malloc((size_t)nkv * 4);
    float *o = malloc((size_t)nq * 4), *lse = malloc((size_t)nl * 4);
    double *ro = malloc((size_t)nq * 8), *rl = malloc((size_t)nl * 8);
    double *co = malloc((size_t)nq * 8), *cl = malloc((size_t)nl * 8);
    int32_t *idx = malloc((size_t)(lists * c->m) * 4), *perm = malloc((size_t)c->n * 4);
    double *qd = NULL, *kd = NULL, *vd = NULL;
    if (!q || !k || !v || !o || !lse || !ro || !rl || !co || !cl || !idx || !perm) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, q, nq, 1.5f);
    test_fill_normal(&rng, k, nkv, 1.0f);
    test_fill_normal(&rng, v, nkv, 1.0f);
    if (test_round_through(q, nq, c->tq) || test_round_through(k, nkv, c->tkv) ||
        test_round_through(v, nkv, c->tkv)) {
        CHECK(!"rounding failed");
        goto done;
    }
    for (int li = 0; li < lists; li++) { /* m distinct keys in random order */
        for (int64_t j = 0; j < c->n; j++)
            perm[j] = (int32_t)j;
        for (int64_t j = 0; j < c->m; j++) {
            int64_t r = j + test_rng_below(&rng, c->n - j);
            int32_t t = perm[j];
            perm[j] = perm[r];
            perm[r] = t;
            idx[li * c->m + j] = perm[j];
        }
    }
    qd = test_to_double(q, nq);
    kd = test_to_double(k, nkv);
    vd = test_to_double(v, nkv);
    ref_attn_dense_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->causal, c->q_pos0, 0.0};
    if (!qd || !kd || !vd || ref_attn_gather(&s, idx, lists, c->m, qd, kd, vd, ro, rl) != 0) {
        CHECKF(0, "attn_gather case %d [%s]: reference failed", ci, what);
        goto done;
    }
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL, *tl = NULL, *ti = NULL;
        int64_t ox[3] = {c->L, c->hq, c->d}, lx[2] = {c->L, c->hq};
        int64_t ix[2] = {c->hkv, c->m}, ix1[1] = {c->m};
        ela_status st = gpu_upload_qkv(cfg->be, c->L, c->n, c->d, c->hq, c->hkv, c->tq, c->tkv,
                                   c->strided, q, k, v, &tq, &tk, &tv);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, c->to, 3, ox, c->strided, &to);
        if (st == ELA_OK && c->lse)
            st = gpu_dev_tensor(cfg->be, ELA_F32, 2, lx, c->strided, &tl);
        if (st == ELA_OK)
            st = c->per_head ? gpu_dev_tensor(cfg->be, ELA_I32, 2, ix, c->strided, &ti)
                             : gpu_dev_tensor(cfg->be, ELA_I32, 1, ix1, c->strided, &ti);
        if (st == ELA_OK)
            st = ela_tensor_write(ti, idx, (size_t)(lists * c->m) * 4);
        CHECKF(st == ELA_OK, "attn_gather case %d [%s] on %s: setup: %s (%s)", ci, what, cfg->name,
               ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            ela_attn_params p = ela_attn_params_default();
            p.causal = c->causal;
            p.q_pos0 = c->q_pos0;
            double t0 = test_now();
            st = ela_attn_gather(cfg->be, tq, tk, tv, ti, to, tl, &p);
            st = gpu_call_done(cfg, st, t0, "attn_gather", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read_f32(to, o, nq);
            if (st == ELA_OK && c->lse)
                st = ela_tensor_read_f32(tl, lse, nl);
            CHECKF(st == ELA_OK, "attn_gather case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tv);
        ela_tensor_free(to);
        ela_tensor_free(tl);
        ela_tensor_free(ti);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        gpu_check_attention(kc, "attn_gather", ci, what, ro, rl, o, c->lse ? lse : NULL, nq, nl,
                        gpu_tol_out(c->tq, c->tkv, c->to), gpu_tol_lse(c->tq, c->tkv), co, cl);
    }
done:
    free(q);
    free(k);
    free(v);
    free(o);
    free(lse);
    free(ro);
    free(rl);
    free(co);
    free(cl);
    free(idx);
    free(perm);
    free(qd);
    free(kd);
    free(vd);
}

/* ==== xattn_estimate ========================================================================= */
typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;
    ela_dtype tq, tk;
    int stride;
    float threshold;
    int heads; /* 0 all, 1 a subset in reverse with a repeat, 2 reversed */
    int strided, kept;
    int flat;  /* q = 0: equal scores, so whole blocks tie exactly and only the order "lower
                  block first" decides (deterministic: no margin check) */
} xcase;

static const xcase xcases[] = {
    /* L, n, d, hq, hkv, q_pos0, q, k, S, tau, heads, strided, kept */
    {700, 700, 64, 4, 4, 0, ELA_F32, ELA_F32, 16, 0.9f, 0, 0, 1, 0},
    {300, 940, 128, 8, 2, 640, ELA_F16, ELA_F16, 8, 0.8f, 1, 1, 1, 0},
    {333, 1100, 64, 8, 1, 768, ELA_BF16, ELA_BF16, 16, 0.95f, 2, 0, 0, 0},
    {600, 1500, 128, 4, 2, 256, ELA_F32, ELA_F16, 4, 0.9f, 0, 0, 1, 0}, /* keys past the queries */
    {600, 300, 64, 4, 2, 0, ELA_F32, ELA_F32, 8, 0.9f, 1, 1, 1, 0},    /* rows past the keys */
    {301, 429, 64, 2, 2, 128, ELA_F32, ELA_BF16, 1, 0.9f, 0, 0, 1, 0},
    {1000, 1000, 64, 4, 1, 0, ELA_F16, ELA_F16, 128, 0.7f, 2, 0, 1, 0},
    {500, 500, 64, 2, 1, 0, ELA_F32, ELA_F32, 32, 0.05f, 0, 0, 1, 0},   /* forced blocks only */
    {5, 133, 128, 2, 1, 128, ELA_F32, ELA_F32, 16, 0.9f, 0, 0, 1, 0},
    {700, 1800, 64, 2, 1, 1024, ELA_F32, ELA_F32, 16, 0.53f, 0, 0, 1, 1},
    {500, 1300, 128, 4, 2, 768, ELA_F16, ELA_F16, 8, 0.61f, 1, 1, 1, 1},
    /* several items per KV head; S = 1 and 2 (one and two 128-row groups per item) */
    {1024, 1024, 128, 8, 2, 0, ELA_BF16, ELA_BF16, 16, 0.9f, 0, 0, 1, 0},
    {400, 1000, 64, 4, 1, 640, ELA_F16, ELA_F16, 1, 0.9f, 1, 0, 1, 0},
    {333, 800, 128, 4, 4, 384, ELA_BF16, ELA_BF16, 2, 0.8f, 2, 0, 1, 0},
    /* f16 with several 64-reduced-row workgroups (tensor cores where the device has them) */
    {1500, 2200, 128, 8, 2, 640, ELA_F16, ELA_F16, 16, 0.9f, 0, 0, 1, 0},
    {700, 900, 64, 4, 2, 128, ELA_F16, ELA_F16, 4, 0.85f, 1, 0, 1, 0},
    {600, 700, 64, 2, 1, 0, ELA_F16, ELA_F16, 16, 0.9f, 0, 0, 1, 1},
};

static void xcase_str(const xcase *c, char *buf, size_t size) {
    static const char *const hn[] = {"all", "subset", "reversed"};
    snprintf(buf, size, "L=%lld n=%lld d=%lld Hq=%d Hkv=%d q_pos0=%lld q=%s k=%s S=%d tau=%g "
             "heads=%s%s%s%s", (long long)c->L, (long long)c->n, (long long)c->d, c->hq, c->hkv,
             (long long)c->q_pos0, ela_dtype_name(c->tq), ela_dtype_name(c->tk), c->stride,
             (double)c->threshold, hn[c->heads], c->strided ? " strided" : "",
             c->kept ? " kept" : "", c->flat ? " flat" : "");
}

/* test_xattn_estimate.c's "biased" data: normal q and k plus a shared direction whose weight
 * varies per key block, so block masses differ clearly. */
static void xattn_fill(const xcase *c, test_rng *rng, float *q, float *k) {
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d, d = c->d;
    const int64_t nkb = (c->n + 127) / 128;
    float u[256];
    for (int64_t x = 0; x < d; x++)
        u[x] = (test_rng_u64(rng) & 1 ? 1.0f : -1.0f) / sqrtf((float)d);
    test_fill_normal(rng, q, nq, 1.0f);
    test_fill_normal(rng, k, nk, 1.0f);
    for (int64_t r = 0; r < c->L * c->hq; r++) {
        float alpha = (float)test_rng_uniform(rng, 1.0, 2.0) * sqrtf((float)d);
        for (int64_t x = 0; x < d; x++)
            q[r * d + x] += alpha * u[x];
    }
    for (int64_t g = 0; g < c->hkv; g++)
        for (int64_t J = 0; J < nkb; J++) {
            float beta = (float)test_rng_uniform(rng, -3.0, 3.0);
            for (int64_t j = J * 128; j < c->n && j < J * 128 + 128; j++)
                for (int64_t x = 0; x < d; x++)
                    k[(g * c->n + j) * d + x] += beta * u[x];
        }
}

static void check_xattn(int ci) {
    const xcase *c = &xcases[ci];
    char what[220];
    xcase_str(c, what, sizeof what);
    const int64_t nq = c->L * c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d;
    const int64_t nqb = (c->L + 127) / 128, nkb = (c->n + 127) / 128;
    int heads[64], n_heads = 0;
    if (c->heads == 0)
        for (int i = 0; i < c->hq; i++)
            heads[n_heads++] = i;
    else if (c->heads == 2)
        for (int i = c->hq - 1; i >= 0; i--)
            heads[n_heads++] = i;
    else {
        for (int i = c->hq - 1; i >= 0; i -= 2)
            heads[n_heads++] = i;
        heads[n_heads++] = 0;
        heads[n_heads++] = 0;
    }
    const int64_t nm = n_heads * nqb * nkb;
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nk * 4);
    double *qd = malloc((size_t)nq * 8), *kd = malloc((size_t)nk * 8);
    uint8_t *ref = malloc((size_t)nm), *got = malloc((size_t)nm), *cpu = malloc((size_t)nm);
    if (!q || !k || !qd || !kd || !ref || !got || !cpu) {
        CHECK(!"out of memory");
        goto done;
    }
    ref_xattn_shape s = {c->L, c->n, c->d, c->hq, c->hkv, c->q_pos0, 0.0, c->stride,
                         (double)c->threshold};
    int64_t ref_kept = 0;
    double margin = 0.0;
    int tries = 1;
    for (; tries <= MAX_TRIES; tries++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 100 + (uint64_t)tries + 33000);
        xattn_fill(c, &rng, q, k);
        if (c->flat)
            memset(q, 0, (size_t)nq * sizeof *q);
        if (test_round_through(q, nq, c->tq) || test_round_through(k, nk, c->tk)) {
            CHECK(!"rounding failed");
            goto done;
        }
        for (int64_t i = 0; i < nq; i++)
            qd[i] = q[i];
        for (int64_t i = 0; i < nk; i++)
            kd[i] = k[i];
        if (ref_xattn_estimate(&s, qd, kd, heads, n_heads, ref, &ref_kept, NULL, &margin) != 0) {
            CHECKF(0, "xattn_estimate case %d [%s]: reference failed", ci, what);
            goto done;
        }
        if (margin >= XA_MARGIN || c->flat)
            break;
    }
    CHECKF(tries <= MAX_TRIES, "xattn_estimate case %d [%s]: every input was a near-tie", ci,
           what);
    if (tries > MAX_TRIES)
        goto done;
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_tensor *tq = NULL, *tk = NULL, *tm = NULL;
        int64_t mx[3] = {n_heads, nqb, nkb};
        ela_status st = gpu_upload_qkv(cfg->be, c->L, c->n, c->d, c->hq, c->hkv, c->tq, c->tk,
                                   c->strided, q, k, NULL, &tq, &tk, NULL);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_U8, 3, mx, c->strided, &tm);
        if (st == ELA_OK) { /* poison: every byte must be written */
            memset(got, 0x5a, (size_t)nm);
            st = ela_tensor_write(tm, got, (size_t)nm);
        }
        CHECKF(st == ELA_OK, "xattn_estimate case %d [%s] on %s: setup: %s (%s)", ci, what,
               cfg->name, ela_status_str(st), ela_last_error());
        int64_t kept = -1;
        if (st == ELA_OK) {
            ela_attn_params p = ela_attn_params_default();
            p.q_pos0 = c->q_pos0;
            ela_xattn_params xp = {c->stride, c->threshold};
            double t0 = test_now();
            st = ela_xattn_estimate(cfg->be, tq, tk, heads, n_heads, &xp, &p, tm,
                                    c->kept ? &kept : NULL);
            st = gpu_call_done(cfg, st, t0, "xattn_estimate", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read(tm, got, (size_t)nm);
            CHECKF(st == ELA_OK, "xattn_estimate case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(tm);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        int64_t diff = 0, first = -1;
        for (int64_t e = 0; e < nm; e++)
            if (got[e] != ref[e]) {
                diff++;
                first = first < 0 ? e : first;
            }
        CHECKF(diff == 0, "xattn_estimate case %d [%s] on %s: %lld mask bytes differ from the "
               "reference (margin %.2e), first at head %lld block row %lld col %lld: %d vs %d",
               ci, what, cfg->name, (long long)diff, margin, (long long)(first / (nqb * nkb)),
               (long long)(first / nkb % nqb), (long long)(first % nkb), first >= 0 ? got[first] : 0,
               first >= 0 ? ref[first] : 0);
        if (c->kept)
            CHECKF(kept == ref_kept, "xattn_estimate case %d [%s] on %s: kept_blocks %lld, the "
                   "reference %lld", ci, what, cfg->name, (long long)kept, (long long)ref_kept);
        if (kc == 0)
            memcpy(cpu, got, (size_t)nm);
        else
            CHECKF(memcmp(cpu, got, (size_t)nm) == 0, "xattn_estimate case %d [%s] on %s: masks "
                   "differ from the cpu backend's", ci, what, cfg->name);
    }
done:
    free(q);
    free(k);
    free(qd);
    free(kd);
    free(ref);
    free(got);
    free(cpu);
}

/* ==== decode_select ========================================================================== */
enum { DS_FLOAT, DS_INT, DS_TIES };
static const char *const ds_names[] = {"float", "int", "ties"};

typedef struct {
    int64_t n, d;
    int hq, hkv;
    int64_t budget;
    float recent;
    int sinks;
    ela_dtype tq, tk;
    int data, strided;
} dcase;

/* DS_FLOAT: normal q and k, regenerated while two logits of a head's top k_mid + 1 are closer
 * than twice the f32 error bound. DS_INT: integer q, k in [-3, 3] with scale 1, so every logit
 * is an exact integer on every backend (many ties, broken by the index). DS_TIES: one-hot
 * queries, integer keys, the default scale (one nonzero term: exact too). */
static const dcase dcases[] = {
    /* n, d, hq, hkv, K, recent, sinks, q, k, data, strided */
    {1000, 64, 4, 4, 24, 0.25f, 4, ELA_F32, ELA_F32, DS_FLOAT, 0},
    {1500, 128, 8, 2, 20, 0.25f, 4, ELA_F16, ELA_F16, DS_FLOAT, 1},
    {3001, 128, 8, 2, 200, 0.25f, 4, ELA_F16, ELA_F16, DS_INT, 1},
    {2049, 64, 8, 1, 100, 0.25f, 4, ELA_BF16, ELA_BF16, DS_INT, 0},
    {4099, 128, 32, 8, 256, 0.25f, 4, ELA_F32, ELA_F16, DS_INT, 0},
    {777, 64, 8, 2, 64, 0.25f, 0, ELA_F32, ELA_F32, DS_TIES, 0},
    {5000, 128, 8, 2, 600, 0.25f, 4, ELA_BF16, ELA_BF16, DS_TIES, 1},
    {3000, 64, 8, 2, 210, 0.1f, 4, ELA_F32, ELA_F32, DS_INT, 0},   /* non-quarter recent */
    {300, 64, 4, 2, 5, 0.25f, 4, ELA_F32, ELA_F32, DS_INT, 0},     /* sinks > recency share */
    {300, 128, 4, 4, 7, 1.0f, 1, ELA_F32, ELA_F16, DS_INT, 0},     /* recent 1: no k_mid */
    {100, 64, 8, 2, 5000, 0.25f, 4, ELA_F16, ELA_F16, DS_INT, 1},  /* K >= n: every token */
    {9001, 64, 4, 1, 2400, 0.25f, 4, ELA_F32, ELA_F32, DS_INT, 0}, /* k_mid 1800 */
};

static void dcase_str(const dcase *c, char *buf, size_t size) {
    snprintf(buf, size, "n=%lld d=%lld Hq=%d Hkv=%d K=%lld recent=%g sinks=%d q=%s k=%s %s%s",
             (long long)c->n, (long long)c->d, c->hq, c->hkv, (long long)c->budget,
             (double)c->recent, c->sinks, ela_dtype_name(c->tq), ela_dtype_name(c->tk),
             ds_names[c->data], c->strided ? " strided" : "");
}

/* The reference ranking's margin, in units of the f32 error bound of a logit. */
static double ds_gap(const dcase *c, const double *logits, const double *q, const double *k) {
    return ref_decode_select_margin(c->hq, c->hkv, c->n, c->d, c->budget, c->recent, c->sinks,
                                    logits, q, k);
}

static void check_decode_select(int ci) {
    const dcase *c = &dcases[ci];
    char what[200];
    dcase_str(c, what, sizeof what);
    const int64_t nq = c->hq * c->d, nk = (int64_t)c->hkv * c->n * c->d, n = c->n;
    const int64_t kb = c->budget < n ? c->budget : n;
    float *q = malloc((size_t)nq * 4), *k = malloc((size_t)nk * 4);
    double *qd = malloc((size_t)nq * 8), *kd = malloc((size_t)nk * 8);
    double *logits = malloc((size_t)(c->hq * n) * 8);
    int64_t *ref = malloc((size_t)kb * 8);
    int32_t *got = malloc((size_t)kb * 4), *cpu = malloc((size_t)kb * 4);
    if (!q || !k || !qd || !kd || !logits || !ref || !got || !cpu) {
        CHECK(!"out of memory");
        goto done;
    }
    int64_t ref_count = 0;
    double gap = 0.0;
    int tries = 1;
    for (; tries <= MAX_TRIES; tries++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 100 + (uint64_t)tries + 34000);
        if (c->data == DS_TIES) {
            for (int64_t e = 0; e < nq; e++)
                q[e] = 0.0f;
            for (int h = 0; h < c->hq; h++)
                q[(int64_t)h * c->d + test_rng_below(&rng, c->d)] = test_rng_below(&rng, 2) ? 1.0f : -1.0f;
        }
        for (int64_t e = 0; c->data == DS_INT && e < nq; e++)
            q[e] = (float)(test_rng_below(&rng, 7) - 3);
        for (int64_t e = 0; c->data != DS_FLOAT && e < nk; e++)
            k[e] = (float)(test_rng_below(&rng, 7) - 3);
        if (c->data == DS_FLOAT) {
            test_fill_normal(&rng, q, nq, 1.0f);
            test_fill_normal(&rng, k, nk, 1.0f);
        }
        if (test_round_through(q, nq, c->tq) || test_round_through(k, nk, c->tk)) {
            CHECK(!"rounding failed");
            goto done;
        }
        for (int64_t i = 0; i < nq; i++)
            qd[i] = q[i];
        for (int64_t i = 0; i < nk; i++)
            kd[i] = k[i];
        if (ref_decode_select(c->hq, c->hkv, n, c->d, qd, kd, c->data == DS_INT ? 1.0 : 0.0,
                              c->budget, c->recent, c->sinks, ref, &ref_count, logits) != 0) {
            CHECKF(0, "decode_select case %d [%s]: reference failed", ci, what);
            goto done;
        }
        gap = c->data != DS_FLOAT ? INFINITY : ds_gap(c, logits, qd, kd);
        if (gap >= DS_GAP)
            break;
    }
    CHECKF(tries <= MAX_TRIES, "decode_select case %d [%s]: every input was a near-tie", ci, what);
    if (tries > MAX_TRIES)
        goto done;
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_tensor *tq = NULL, *tk = NULL, *ti = NULL;
        int64_t ix[1] = {kb};
        ela_status st = gpu_upload_qkv(cfg->be, 1, n, c->d, c->hq, c->hkv, c->tq, c->tk, c->strided,
                                   q, k, NULL, &tq, &tk, NULL);
        if (st == ELA_OK)
            st = gpu_dev_tensor(cfg->be, ELA_I32, 1, ix, c->strided, &ti);
        if (st == ELA_OK) { /* poison: every entry must be written */
            for (int64_t i = 0; i < kb; i++)
                got[i] = -77;
            st = ela_tensor_write(ti, got, (size_t)kb * 4);
        }
        CHECKF(st == ELA_OK, "decode_select case %d [%s] on %s: setup: %s (%s)", ci, what,
               cfg->name, ela_status_str(st), ela_last_error());
        int64_t count = -1;
        if (st == ELA_OK) {
            ela_decode_select_params dp = {c->budget, c->recent, c->sinks};
            ela_attn_params p = ela_attn_params_default();
            p.scale = c->data == DS_INT ? 1.0f : 0.0f;
            double t0 = test_now();
            st = ela_decode_select(cfg->be, tq, tk, &dp, &p, ti, &count);
            st = gpu_call_done(cfg, st, t0, "decode_select", ci, what);
        }
        if (st == ELA_OK) {
            st = ela_tensor_read(ti, got, (size_t)kb * 4);
            CHECKF(st == ELA_OK, "decode_select case %d on %s: read: %s", ci, cfg->name,
                   ela_last_error());
        }
        ela_tensor_free(tq);
        ela_tensor_free(tk);
        ela_tensor_free(ti);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        CHECKF(count == ref_count, "decode_select case %d [%s] on %s: count %lld, the reference "
               "%lld", ci, what, cfg->name, (long long)count, (long long)ref_count);
        int64_t first = -1;
        for (int64_t i = 0; i < kb && first < 0; i++)
            if (got[i] != ref[i])
                first = i;
        CHECKF(first < 0, "decode_select case %d [%s] on %s: idx[%lld] = %d, the reference %lld "
               "(gap %.2e)", ci, what, cfg->name, (long long)first, first >= 0 ? got[first] : 0,
               first >= 0 ? (long long)ref[first] : 0LL, gap);
        if (kc == 0)
            memcpy(cpu, got, (size_t)kb * 4);
        else
            CHECKF(memcmp(cpu, got, (size_t)kb * 4) == 0, "decode_select case %d [%s] on %s: "
                   "idx differs from the cpu backend's", ci, what, cfg->name);
    }
done:
    free(q);
    free(k);
    free(qd);
    free(kd);
    free(logits);
    free(ref);
    free(got);
    free(cpu);
}

/* ==== router_eval ============================================================================ */
/* Logits within 1e-4 relative L2 of the reference (f32 accumulation over at most 4d terms per
 * layer, as in test_router_eval.c); decisions identical, inputs regenerated until every head's
 * reference margin |z1 - z0| exceeds 1e-3. */
#define TOL_LOGIT 1e-4
#define ROUTER_MARGIN 1e-3

typedef struct {
    int64_t L, d, hid;
    int hkv;
    ela_dtype tk, tw;
    int mixed, strided; /* mixed: weight i gets dtype (tw + i) % 3 */
} rcase;

static const rcase rcases[] = {
    /* L, d, hid, hkv, k, w, mixed, strided */
    {1000, 128, 512, 8, ELA_F16, ELA_F16, 0, 0},
    {150, 64, 256, 2, ELA_F32, ELA_F32, 0, 1}, /* pooling slices overlap */
    {7, 128, 256, 4, ELA_BF16, ELA_F32, 1, 0},
    {300, 80, 320, 1, ELA_F32, ELA_BF16, 1, 1},
};

static void rcase_str(const rcase *c, char *buf, size_t size) {
    snprintf(buf, size, "L=%lld d=%lld hid=%lld Hkv=%d k=%s w=%s%s%s", (long long)c->L,
             (long long)c->d, (long long)c->hid, c->hkv, ela_dtype_name(c->tk),
             ela_dtype_name(c->tw), c->mixed ? "(mixed)" : "", c->strided ? " strided" : "");
}

/* Rows and columns of weight i (columns 0 for a bias), in ela_router_weights order. */
static void rweight_shape(int i, int64_t d, int64_t hid, int64_t *rows, int64_t *cols) {
    static const int out_is_hid[10] = {1, 1, 0, 0, 1, 1, 0, 0, 0, 0};
    static const int in_is_hid[10] = {0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    *rows = i >= 8 ? 2 : out_is_hid[i] ? hid : d;
    *cols = i % 2 ? 0 : in_is_hid[i] ? hid : d;
}

static void check_router(int ci) {
    const rcase *c = &rcases[ci];
    char what[160];
    rcase_str(c, what, sizeof what);
    const int64_t L = c->L, d = c->d, nk = (int64_t)c->hkv * L * d, m = L < 100 ? L : 100;
    float *k = malloc((size_t)nk * 4), *w[10] = {0};
    double *kd = malloc((size_t)nk * 8), *wd[10] = {0}, ref[64], cpu_z[64];
    int ref_full[32], full[32], cpu_full[32];
    float z[64];
    int ok_alloc = k && kd;
    for (int i = 0; i < 10; i++) {
        int64_t rows, cols;
        rweight_shape(i, d, c->hid, &rows, &cols);
        w[i] = malloc((size_t)(rows * (cols ? cols : 1)) * 4);
        wd[i] = malloc((size_t)(rows * (cols ? cols : 1)) * 8);
        ok_alloc = ok_alloc && w[i] && wd[i];
    }
    if (!ok_alloc) {
        CHECK(!"out of memory");
        goto done;
    }
    int tries = 1;
    for (; tries <= MAX_TRIES; tries++) {
        test_rng rng;
        test_rng_init(&rng, (uint64_t)ci * 100 + (uint64_t)tries + 35000);
        for (int g = 0; g < c->hkv; g++) { /* rows outside the pooled slices far off */
            float mu[256];
            test_fill_normal(&rng, mu, d, 1.0f);
            for (int64_t j = 0; j < L; j++) {
                float off = j < m ? 0.5f : j >= L - m ? -0.5f : 2.0f;
                for (int64_t x = 0; x < d; x++)
                    k[((int64_t)g * L + j) * d + x] = mu[x] + off + (float)test_rng_normal(&rng);
            }
        }
        if (test_round_through(k, nk, c->tk)) {
            CHECK(!"rounding failed");
            goto done;
        }
        for (int64_t e = 0; e < nk; e++)
            kd[e] = k[e];
        for (int i = 0; i < 10; i++) {
            int64_t rows, cols;
            rweight_shape(i, d, c->hid, &rows, &cols);
            int64_t ne = rows * (cols ? cols : 1);
            test_fill_normal(&rng, w[i], ne, cols ? (float)(1.0 / sqrt((double)cols)) : 0.5f);
            if (test_round_through(w[i], ne, c->mixed ? (ela_dtype)((c->tw + i) % 3) : c->tw)) {
                CHECK(!"rounding failed");
                goto done;
            }
            for (int64_t e = 0; e < ne; e++)
                wd[i][e] = w[i][e];
        }
        ref_router_weights rw = {wd[0], wd[1], wd[2], wd[3], wd[4],
                                 wd[5], wd[6], wd[7], wd[8], wd[9]};
        if (ref_router_eval(c->hkv, L, d, c->hid, kd, &rw, ref_full, ref) != 0) {
            CHECKF(0, "router_eval case %d [%s]: reference failed", ci, what);
            goto done;
        }
        int clear = 1;
        for (int g = 0; g < c->hkv; g++)
            clear = clear && fabs(ref[2 * g + 1] - ref[2 * g]) > ROUTER_MARGIN;
        if (clear)
            break;
    }
    CHECKF(tries <= MAX_TRIES, "router_eval case %d [%s]: every input was a near-tie", ci, what);
    if (tries > MAX_TRIES)
        goto done;
    for (int kc = 0; kc < gpu_n_cfgs; kc++) {
        gpu_cfg *cfg = &gpu_cfgs[kc];
        ela_tensor *tk = NULL, *tw[10] = {0};
        int64_t kx[3] = {c->hkv, L, d};
        ela_status st = gpu_dev_tensor(cfg->be, c->tk, 3, kx, c->strided, &tk);
        if (st == ELA_OK)
            st = ela_tensor_write_f32(tk, k, nk);
        for (int i = 0; i < 10 && st == ELA_OK; i++) {
            int64_t rows, cols;
            rweight_shape(i, d, c->hid, &rows, &cols);
            int64_t wx[2] = {rows, cols};
            ela_dtype dt = c->mixed ? (ela_dtype)((c->tw + i) % 3) : c->tw;
            st = gpu_dev_tensor(cfg->be, dt, cols ? 2 : 1, wx, c->strided, &tw[i]);
            if (st == ELA_OK)
                st = ela_tensor_write_f32(tw[i], w[i], rows * (cols ? cols : 1));
        }
        CHECKF(st == ELA_OK, "router_eval case %d [%s] on %s: setup: %s (%s)", ci, what,
               cfg->name, ela_status_str(st), ela_last_error());
        if (st == ELA_OK) {
            ela_router_weights rw = {tw[0], tw[1], tw[2], tw[3], tw[4],
                                     tw[5], tw[6], tw[7], tw[8], tw[9]};
            double t0 = test_now();
            st = ela_router_eval(cfg->be, tk, &rw, full, z);
            st = gpu_call_done(cfg, st, t0, "router_eval", ci, what);
        }
        ela_tensor_free(tk);
        for (int i = 0; i < 10; i++)
            ela_tensor_free(tw[i]);
        if (st != ELA_OK) {
            if (kc == 0)
                break;
            continue;
        }
        double err = test_rel_l2(ref, z, 2 * c->hkv);
        CHECKF(err <= TOL_LOGIT, "router_eval case %d [%s] on %s: logits rel L2 error %.3g > %.0e "
               "against the reference", ci, what, cfg->name, err, TOL_LOGIT);
        for (int g = 0; g < c->hkv; g++)
            CHECKF(full[g] == ref_full[g], "router_eval case %d [%s] on %s: KV head %d full = %d, "
                   "the reference %d", ci, what, cfg->name, g, full[g], ref_full[g]);
        if (kc == 0) {
            for (int e = 0; e < 2 * c->hkv; e++)
                cpu_z[e] = z[e];
            memcpy(cpu_full, full, sizeof full);
            continue;
        }
        double ec = test_rel_l2(cpu_z, z, 2 * c->hkv);
        CHECKF(ec <= TOL_LOGIT, "router_eval case %d [%s] on %s: logits rel L2 error %.3g > %.0e "
               "against the cpu backend", ci, what, cfg->name, ec, TOL_LOGIT);
        CHECKF(memcmp(cpu_full, full, (size_t)c->hkv * sizeof *full) == 0, "router_eval case %d "
               "[%s] on %s: decisions differ from the cpu backend's", ci, what, cfg->name);
    }
done:
    free(k);
    free(kd);
    for (int i = 0; i < 10; i++) {
        free(w[i]);
        free(wd[i]);
    }
}

/* ==== driver ================================================================================= */
int main(void) {
    test_seed();
    const gpu_op_cases ops[] = {
        {"attn_blocks", (int)(sizeof bcases / sizeof bcases[0]), check_blocks},
        {"attn_gather", (int)(sizeof gcases / sizeof gcases[0]), check_gather},
        {"xattn_estimate", (int)(sizeof xcases / sizeof xcases[0]), check_xattn},
        {"decode_select", (int)(sizeof dcases / sizeof dcases[0]), check_decode_select},
        {"router_eval", (int)(sizeof rcases / sizeof rcases[0]), check_router},
    };
    return gpu_run_ops("test_backend_parity_sparse", ops, (int)(sizeof ops / sizeof ops[0]));
}

/* CPU decode_select_attend (DESIGN.md 4.1 + 4.7, PAPERS.md 3.2): a LessIsMore selection layer in
 * one pass over K: the dense decode attention of the query over all n keys and, from the same
 * q.k products, decode_select's token selection.
 *
 * Attention: attn_dense's decode split. A work item is one KV head's G query rows over one key
 * chunk, merged by log-sum-exp (attn_partials.c); chunks as attn_dense cuts them (~4 items
 * per thread) and, when a selection is made, at most LOGIT_FLOATS / G keys, so that a chunk's
 * logits stay in L2. Each 64-key tile runs qk (qk_rows reading K in place for G <= 8, else f32
 * tiles) -> the G rows of raw logits copied to the chunk's logit buffer -> scaled by log2 e ->
 * online softmax -> pv. Q is scaled by `scale` alone (attn_dense folds log2 e into Q) so that
 * the buffer holds exactly the logits decode_select ranks; the softmax input differs from
 * attn_dense's by one rounding.
 * Selection: the items run inside decode_select.c's phase 1 (cpu_decode_select_scored): right
 * after an item, on the same thread, each head's best k_mid of the chunk are cut from the
 * buffer while it is in L2, and the other thread's streaming hides that work. Phases 2-3
 * (merge, union) follow as in decode_select.
 * Bound: K and V read once, as one dense decode step; the logits never leave L2 (per thread
 * G x chunk floats, not Hq x n), against 1.5x the KV bytes for attn_dense followed by
 * decode_select, which reads K again. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn_partials.h"
#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634f
#define MIN_SPLIT_KEYS 512 /* a key chunk below this costs more to merge than it saves */
#define LOGIT_FLOATS 131072 /* a chunk's logits for G heads: 512 KiB, L2-resident */
#define BK CPU_ATTN_BK

typedef struct {
    const ela_attn_dense_args *a;
    const cpu_attn_kernels *kern;
    int64_t G, dp, splits, split_keys;
    int rows_path;
    cpu_attn_rows out;
    float *mem, *partials; /* per-thread scratch, then the chunks' partial results */
    int64_t per_thread;
} plan;

typedef struct {
    float *Q, *O, *K, *V, *S, *m, *l, *alpha;
    const void **krow[2], **vrow[2]; /* row path: this tile's and the next tile's rows */
} scratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t scratch_floats(const plan *p) {
    int64_t R = round_up(p->G, 16);
    int64_t ptr_floats = (int64_t)(sizeof(void *) + sizeof(float) - 1) / (int64_t)sizeof(float);
    return 2 * R * p->dp + 2 * BK * p->dp + R * BK + 3 * R + 4 * BK * ptr_floats;
}

static scratch carve(float *base, const plan *p) {
    int64_t R = round_up(p->G, 16);
    scratch s;
    s.Q = base;
    s.O = s.Q + R * p->dp;
    s.K = s.O + R * p->dp;
    s.V = s.K + BK * p->dp;
    s.S = s.V + BK * p->dp;
    s.m = s.S + R * BK;
    s.l = s.m + R;
    s.alpha = s.l + R;
    const void **rows = (const void **)(void *)(s.alpha + R); /* R is a multiple of 16 */
    for (int b = 0; b < 2; b++) {
        s.krow[b] = rows + (2 * b) * BK;
        s.vrow[b] = rows + (2 * b + 1) * BK;
    }
    return s;
}

static void fill_rows(const void **rows, const char *base, int64_t stride, int64_t j0, int64_t nk) {
    for (int64_t j = 0; j < nk; j++)
        rows[j] = base + (j0 + j) * stride;
}

/* KV head g's G rows over keys [k0, k1): unnormalised O, m, l in the scratch, and when L is
 * not NULL the raw logit of key j for row r at L[r * ldl + j - k0]. */
static void run_chunk(const plan *p, scratch *s, int g, int64_t k0, int64_t k1, float *L,
                      int64_t ldl) {
    const ela_attn_dense_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    const int64_t G = p->G, dp = p->dp, d = a->d;
    const int64_t q1 = a->q->strides[1], k_1 = a->k->strides[1], v_1 = a->v->strides[1];
    const char *kh = cpu_tensor_data(a->k) + g * a->k->strides[0];
    const char *vh = cpu_tensor_data(a->v) + g * a->v->strides[0];

    kern->load_rows(s->Q, dp, cpu_tensor_data(a->q) + (int64_t)g * G * q1, q1, a->q->dtype, G, d);
    for (int64_t c = 0; c < G * dp; c++)
        s->Q[c] *= a->scale; /* as decode_select scales it: the logits must be its logits */
    memset(s->O, 0, (size_t)(G * dp) * sizeof(float));
    for (int64_t r = 0; r < G; r++) {
        s->m[r] = -INFINITY;
        s->l[r] = 0.0f;
    }
    int b = 0;
    int64_t nk = k1 - k0 < BK ? k1 - k0 : BK;
    if (p->rows_path) {
        fill_rows(s->krow[b], kh, k_1, k0, nk);
        fill_rows(s->vrow[b], vh, v_1, k0, nk);
    }
    for (int64_t j0 = k0; j0 < k1; j0 += BK, b ^= 1) {
        int64_t j1 = j0 + BK;
        int64_t nk_next = k1 - j1 < BK ? k1 - j1 : BK;
        if (nk_next < 0)
            nk_next = 0;
        if (p->rows_path) {
            fill_rows(s->krow[b ^ 1], kh, k_1, j1, nk_next);
            fill_rows(s->vrow[b ^ 1], vh, v_1, j1, nk_next);
            kern->qk_rows(s->S, s->Q, G, dp, s->krow[b], nk, d, a->k->dtype, s->krow[b ^ 1],
                          nk_next);
        } else {
            kern->load_rows(s->K, dp, kh + j0 * k_1, k_1, a->k->dtype, nk, d);
            kern->load_rows(s->V, dp, vh + j0 * v_1, v_1, a->v->dtype, nk, d);
            kern->qk(s->S, s->Q, s->K, G, nk, dp);
        }
        for (int64_t r = 0; r < G; r++) {
            float *srow = s->S + r * BK;
            if (L)
                memcpy(L + r * ldl + (j0 - k0), srow, (size_t)nk * sizeof(float));
            for (int64_t j = 0; j < nk; j++)
                srow[j] *= LOG2E; /* the softmax kernel works in the exp2 domain */
        }
        kern->softmax(s->S, s->m, s->l, s->alpha, G, nk);
        if (p->rows_path)
            kern->pv_rows(s->O, s->S, s->alpha, G, dp, s->vrow[b], nk, d, a->v->dtype,
                          s->vrow[b ^ 1], nk_next);
        else
            kern->pv(s->O, s->S, s->V, s->alpha, G, nk, dp);
        nk = nk_next;
    }
}

/* One work item (KV head g, key chunk c = keys [k0, k1)) on thread tid: attention into o (one
 * chunk) or into the partials, logits into L (may be NULL). Also the scorer callback of
 * cpu_decode_select_scored. */
static void run_item(void *user, int tid, int g, int64_t c, int64_t k0, int64_t k1, float *L,
                     int64_t ldl) {
    const plan *p = user;
    scratch s = carve(p->mem + p->per_thread * tid, p);
    run_chunk(p, &s, g, k0, k1, L, ldl);
    if (p->splits == 1) {
        cpu_attn_store_rows(&p->out, s.O, s.m, s.l, g, 0, 1);
        return;
    }
    float *dst = cpu_attn_partial_at(&p->out, p->partials, g, c);
    memcpy(dst, s.O, (size_t)(p->G * p->dp) * sizeof(float));
    memcpy(dst + p->G * p->dp, s.m, (size_t)p->G * sizeof(float));
    memcpy(dst + p->G * p->dp + p->G, s.l, (size_t)p->G * sizeof(float));
}

ela_status cpu_decode_select_attend(void *ctx, const ela_decode_select_attend_args *args) {
    const cpu_backend *cpu = ctx;
    const ela_attn_dense_args *a = &args->attn;
    plan p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.kern = cpu->attn;
    p.G = a->hq / a->hkv;
    p.dp = round_up(a->d, CPU_ATTN_DPAD);
    p.rows_path = p.G <= CPU_ATTN_ROWS_FAST && a->d % CPU_ATTN_DPAD == 0 && p.kern->qk_rows &&
                  p.kern->pv_rows;
    const int select = cpu_decode_select_needs_logits(a->n, &args->p);
    /* Split keys when the KV heads alone cannot keep ~4 items per thread busy, and (to keep a
     * chunk's logits in L2) when a chunk would hold more than LOGIT_FLOATS / G keys. */
    int64_t want = 4 * (int64_t)cpu->threads;
    p.splits = 1;
    if (a->hkv < want) {
        p.splits = (want + a->hkv - 1) / a->hkv;
        int64_t cap = a->n / MIN_SPLIT_KEYS > 1 ? a->n / MIN_SPLIT_KEYS : 1;
        if (p.splits > cap)
            p.splits = cap;
    }
    int64_t max_keys = LOGIT_FLOATS / p.G / BK * BK;
    max_keys = max_keys > MIN_SPLIT_KEYS ? max_keys : MIN_SPLIT_KEYS;
    if (select && p.splits < (a->n + max_keys - 1) / max_keys)
        p.splits = (a->n + max_keys - 1) / max_keys;
    p.split_keys = round_up((a->n + p.splits - 1) / p.splits, BK);
    p.splits = (a->n + p.split_keys - 1) / p.split_keys; /* no empty chunk */
    p.out.a = a;
    p.out.G = p.G;
    p.out.dp = p.dp;
    p.out.R = p.G;
    p.out.splits = p.splits;

    int threads = cpu->threads; /* every thread may run items inside the selection */
    const int64_t n_items = (int64_t)a->hkv * p.splits;
    p.per_thread = round_up(scratch_floats(&p), 16);
    const int64_t partial_floats = p.splits > 1 ? n_items * p.G * (p.dp + 2) : 0;
    p.mem = ela_aligned_alloc((size_t)(p.per_thread * threads + partial_floats) * sizeof(float));
    if (!p.mem)
        return ela_fail(ELA_ERR_OOM, "cpu: decode_select_attend: out of memory for %d thread "
                        "tiles", threads);
    p.partials = p.mem + p.per_thread * threads;

    ela_decode_select_args sel = {a->q, a->k, a->n, a->d, a->hq, a->hkv, a->scale,
                                  args->p, args->idx, args->count};
    ela_status st = ELA_OK;
    if (select) {
        cpu_select_scorer scorer = {run_item, &p, p.split_keys};
        st = cpu_decode_select_scored(cpu, &sel, &scorer);
    } else { /* attention alone; the selection only writes its fixed entries */
        if (n_items < threads)
            threads = (int)n_items;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            int64_t c = item % p.splits, k0 = c * p.split_keys;
            int64_t k1 = k0 + p.split_keys < a->n ? k0 + p.split_keys : a->n;
            run_item(&p, tid, (int)(item / p.splits), c, k0, k1, NULL, 0);
        }
        st = cpu_decode_select_scored(cpu, &sel, NULL);
    }
    if (st == ELA_OK && p.splits > 1)
        for (int g = 0; g < a->hkv; g++) { /* Hkv x G rows of dp floats: not worth threads */
            cpu_attn_merge_group(&p.out, p.partials, g, p.G);
            float *o = cpu_attn_partial_at(&p.out, p.partials, g, 0);
            cpu_attn_store_rows(&p.out, o, o + p.G * p.dp, o + p.G * p.dp + p.G, g, 0, 1);
        }
    ela_aligned_free(p.mem);
    return st;
}

/* CPU dense attention (DESIGN.md 4.1), prefill and decode in one tiled online-softmax driver.
 *
 * Work is cut into groups of R query rows that share one KV head: the G query heads of that KV
 * head times Bq consecutive queries (R ~ 256, so a 64-key tile of K and V is converted to f32
 * once and reused by all R rows). Each group walks its visible keys in 64-key tiles:
 * S = Q K^T -> causal mask -> online softmax -> O = alpha O + P V; nothing of size L x n exists.
 * When there are too few groups to feed every thread (decode: L = 1 gives Hkv groups), each
 * group's keys are split into chunks processed in parallel and merged by their log-sum-exp,
 * so one query still uses every core. Causal prefill groups are scheduled largest first.
 *
 * Row path: when a group has few rows (R <= CPU_ATTN_ROWS_FAST: decode, R = G), converting a
 * tile to f32 (64 KiB of scratch at d = 128, more than L1) and reading it back costs more than
 * the R-row compute, so qk_rows / pv_rows read K and V in place through per-tile arrays of row
 * pointers and are handed the next tile's rows to prefetch. Decode is then bound by the DRAM
 * bandwidth of K and V, each byte read once. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn_partials.h"
#include "attn_tile.h"
#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634f
/* Rows per group: each tile's conversion to f32 is shared by them. At 64 rows converting was
 * ~10% of the time (L2/L3 reads of f16 K and V, f32 stores), at 256 ~3%; with the diagonal
 * tiles in chunks (attn_tile.c) more rows add no masked work. */
#define ROWS_TARGET 256
#define MIN_SPLIT_KEYS 512   /* a key chunk below this costs more to merge than it saves */

typedef struct {
    const ela_attn_dense_args *a;
    const cpu_attn_kernels *kern;
    int64_t G, bq, nqb, dp, R;
    int64_t n_groups, splits, split_keys;
    int rows_path; /* qk_rows/pv_rows instead of f32 tiles (see the file comment) */
    const char *q, *k, *v;
    cpu_attn_rows out; /* what attn_partials.c needs */
} plan;

/* Per-thread scratch, carved from one allocation made before the parallel region. */
typedef struct {
    float *Q, *O, *K, *V, *S, *m, *l, *alpha;
    int64_t *pos;
    const void **krow[2], **vrow[2]; /* row path: this tile's and the next tile's rows */
} scratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t scratch_floats(const plan *p) {
    int64_t R = round_up(p->R, 16);
    int64_t ptr_floats = (int64_t)(sizeof(void *) + sizeof(float) - 1) / (int64_t)sizeof(float);
    return 2 * R * p->dp + 2 * CPU_ATTN_BK * p->dp + R * CPU_ATTN_BK + 3 * R + R * 2 +
           4 * CPU_ATTN_BK * ptr_floats;
}

static scratch carve(float *base, const plan *p) {
    int64_t R = round_up(p->R, 16);
    scratch s;
    s.Q = base;
    s.O = s.Q + R * p->dp;
    s.K = s.O + R * p->dp;
    s.V = s.K + CPU_ATTN_BK * p->dp;
    s.S = s.V + CPU_ATTN_BK * p->dp;
    s.m = s.S + R * CPU_ATTN_BK;
    s.l = s.m + R;
    s.alpha = s.l + R;
    s.pos = (int64_t *)(void *)(s.alpha + R); /* 2 floats per int64, 8-byte aligned */
    const void **rows = (const void **)(void *)(s.pos + R);
    for (int b = 0; b < 2; b++) {
        s.krow[b] = rows + (2 * b) * CPU_ATTN_BK;
        s.vrow[b] = rows + (2 * b + 1) * CPU_ATTN_BK;
    }
    return s;
}

/* Rows of group `grp`: queries [i0, i1) of KV head g; row r = (i - i0) * G + (h - g * G). */
static void group_rows(const plan *p, int64_t grp, int *g, int64_t *i0, int64_t *i1) {
    *g = (int)(grp % p->a->hkv);
    int64_t qb = grp / p->a->hkv;
    *i0 = qb * p->bq;
    *i1 = *i0 + p->bq < p->a->L ? *i0 + p->bq : p->a->L;
}

/* Keys [0, end) that any row of queries [i0, i1) can see. */
static int64_t visible_keys(const plan *p, int64_t i1) {
    if (!p->a->causal)
        return p->a->n;
    int64_t end = p->a->q_pos0 + i1; /* last row's position + 1 */
    return end < p->a->n ? end : p->a->n;
}

/* Causal mask of a tile that crosses the diagonal: row r sees keys up to its position. */
static void mask_tile(scratch *s, int64_t R, int64_t j0, int64_t nk) {
    for (int64_t r = 0; r < R; r++) {
        int64_t first_hidden = s->pos[r] + 1 - j0;
        for (int64_t j = first_hidden < 0 ? 0 : first_hidden; j < nk; j++)
            s->S[r * CPU_ATTN_BK + j] = -INFINITY;
    }
}

/* Row pointers of keys [j0, j0 + nk) of one head (rows `stride` bytes apart). Contiguous keys
 * here; an index set would fill base + idx[j] * stride instead. */
static void fill_rows(const void **rows, const char *base, int64_t stride, int64_t j0, int64_t nk) {
    for (int64_t j = 0; j < nk; j++)
        rows[j] = base + (j0 + j) * stride;
}

/* Row path over keys [k0, k1): per 64-key tile qk_rows -> mask -> softmax -> pv_rows, each
 * kernel handed the next tile's rows (pointer arrays double-buffered) to prefetch. */
static void run_tiles_rows(const plan *p, scratch *s, int64_t R, const char *kh, const char *vh,
                           int64_t k0, int64_t k1, int64_t min_pos) {
    const ela_attn_dense_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    int64_t k_1 = a->k->strides[1], v_1 = a->v->strides[1];
    int b = 0;
    int64_t nk = k1 - k0 < CPU_ATTN_BK ? k1 - k0 : CPU_ATTN_BK;
    fill_rows(s->krow[b], kh, k_1, k0, nk);
    fill_rows(s->vrow[b], vh, v_1, k0, nk);
    for (int64_t j0 = k0; j0 < k1; j0 += CPU_ATTN_BK, b ^= 1) {
        int64_t j1 = j0 + CPU_ATTN_BK;
        int64_t nk_next = k1 - j1 < CPU_ATTN_BK ? k1 - j1 : CPU_ATTN_BK;
        if (nk_next > 0) {
            fill_rows(s->krow[b ^ 1], kh, k_1, j1, nk_next);
            fill_rows(s->vrow[b ^ 1], vh, v_1, j1, nk_next);
        } else {
            nk_next = 0;
        }
        kern->qk_rows(s->S, s->Q, R, p->dp, s->krow[b], nk, a->d, a->k->dtype, s->krow[b ^ 1],
                      nk_next);
        if (a->causal && j0 + nk - 1 > min_pos)
            mask_tile(s, R, j0, nk);
        kern->softmax(s->S, s->m, s->l, s->alpha, R, nk);
        kern->pv_rows(s->O, s->S, s->alpha, R, p->dp, s->vrow[b], nk, a->d, a->v->dtype,
                      s->vrow[b ^ 1], nk_next);
        nk = nk_next;
    }
}

/* Run rows of one group over keys [k0, k1), leaving unnormalised O, m, l in the scratch. */
static void run_chunk(const plan *p, scratch *s, int g, int64_t i0, int64_t i1, int64_t k0,
                      int64_t k1) {
    const ela_attn_dense_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    int64_t R = (i1 - i0) * p->G, dp = p->dp, d = a->d;
    float qscale = a->scale * LOG2E; /* exp2 domain: exp(x) = exp2(x * log2 e) */
    int64_t q0 = a->q->strides[0], q1 = a->q->strides[1];
    int64_t k_0 = a->k->strides[0], k_1 = a->k->strides[1];
    int64_t v_0 = a->v->strides[0], v_1 = a->v->strides[1];

    for (int64_t i = i0; i < i1; i++) {
        float *dst = s->Q + (i - i0) * p->G * dp;
        kern->load_rows(dst, dp, p->q + i * q0 + (int64_t)g * p->G * q1, q1, a->q->dtype, p->G, d);
        for (int64_t c = 0; c < p->G * dp; c++)
            dst[c] *= qscale;
        for (int64_t h = 0; h < p->G; h++)
            s->pos[(i - i0) * p->G + h] = a->q_pos0 + i;
    }
    memset(s->O, 0, (size_t)(R * dp) * sizeof(float));
    for (int64_t r = 0; r < R; r++) {
        s->m[r] = -INFINITY;
        s->l[r] = 0.0f;
    }
    int64_t min_pos = a->q_pos0 + i0;
    const char *kh = p->k + g * k_0, *vh = p->v + g * v_0;
    if (p->rows_path) {
        run_tiles_rows(p, s, R, kh, vh, k0, k1, min_pos);
        return;
    }
    cpu_attn_tile tile = {s->Q, s->K, s->V, s->O, s->S, s->m, s->l, s->alpha, s->pos, R, dp};
    for (int64_t j0 = k0; j0 < k1; j0 += CPU_ATTN_BK) {
        int64_t nk = k1 - j0 < CPU_ATTN_BK ? k1 - j0 : CPU_ATTN_BK;
        kern->load_rows(s->K, dp, kh + j0 * k_1, k_1, a->k->dtype, nk, d);
        kern->load_rows(s->V, dp, vh + j0 * v_1, v_1, a->v->dtype, nk, d);
        cpu_attn_tile_run(kern, &tile, j0, nk, a->causal);
    }
}

static void make_plan(plan *p, const ela_attn_dense_args *a, const cpu_backend *cpu) {
    memset(p, 0, sizeof *p);
    p->a = a;
    p->kern = cpu->attn;
    p->G = a->hq / a->hkv;
    p->bq = ROWS_TARGET / p->G > 0 ? ROWS_TARGET / p->G : 1;
    if (p->bq > a->L)
        p->bq = a->L;
    p->nqb = (a->L + p->bq - 1) / p->bq;
    p->R = p->bq * p->G;
    p->dp = round_up(a->d, CPU_ATTN_DPAD);
    p->rows_path = p->R <= CPU_ATTN_ROWS_FAST && a->d % CPU_ATTN_DPAD == 0 &&
                   p->kern->qk_rows && p->kern->pv_rows;
    p->n_groups = p->nqb * a->hkv;
    /* Split keys only when groups alone cannot keep ~4 items per thread busy. */
    int64_t want = 4 * (int64_t)cpu->threads;
    int64_t max_keys = visible_keys(p, a->L);
    p->splits = 1;
    if (p->n_groups < want) {
        p->splits = (want + p->n_groups - 1) / p->n_groups;
        int64_t cap = max_keys / MIN_SPLIT_KEYS > 1 ? max_keys / MIN_SPLIT_KEYS : 1;
        if (p->splits > cap)
            p->splits = cap;
    }
    p->split_keys = round_up((max_keys + p->splits - 1) / p->splits, CPU_ATTN_BK);
    p->q = cpu_tensor_data(a->q);
    p->k = cpu_tensor_data(a->k);
    p->v = cpu_tensor_data(a->v);
    p->out.a = a;
    p->out.G = p->G;
    p->out.dp = p->dp;
    p->out.R = p->R;
    p->out.splits = p->splits;
}

ela_status cpu_attn_dense(void *ctx, const ela_attn_dense_args *a) {
    const cpu_backend *cpu = ctx;
    plan p;
    make_plan(&p, a, cpu);
    int threads = cpu->threads;
    int64_t n_items = p.n_groups * p.splits;
    if (n_items < threads)
        threads = (int)n_items;
    int64_t per_thread = round_up(scratch_floats(&p), 16);
    int64_t partial_floats = p.splits > 1 ? n_items * p.R * (p.dp + 2) : 0;
    float *mem = ela_aligned_alloc((size_t)(per_thread * threads + partial_floats) * sizeof(float));
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: attn_dense: out of memory for %d thread tiles", threads);
    float *partials = mem + per_thread * threads;

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        scratch s = carve(mem + per_thread * tid, &p);
        /* Items in descending group order: with causal masks the last query blocks cost most. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            int64_t grp = p.n_groups - 1 - item / p.splits, split = item % p.splits;
            int g;
            int64_t i0, i1;
            group_rows(&p, grp, &g, &i0, &i1);
            int64_t end = visible_keys(&p, i1);
            int64_t k0 = split * p.split_keys, k1 = k0 + p.split_keys < end ? k0 + p.split_keys : end;
            int64_t R = (i1 - i0) * p.G;
            if (p.splits == 1) {
                run_chunk(&p, &s, g, i0, i1, 0, end);
                cpu_attn_store_rows(&p.out, s.O, s.m, s.l, g, i0, i1);
                continue;
            }
            float *dst = cpu_attn_partial_at(&p.out, partials, grp, split);
            if (k0 >= k1) { /* causal: this chunk lies past every row of the group */
                memset(dst, 0, (size_t)(p.R * (p.dp + 2)) * sizeof(float));
                continue;
            }
            run_chunk(&p, &s, g, i0, i1, k0, k1);
            memcpy(dst, s.O, (size_t)(R * p.dp) * sizeof(float));
            memcpy(dst + p.R * p.dp, s.m, (size_t)R * sizeof(float));
            memcpy(dst + p.R * p.dp + p.R, s.l, (size_t)R * sizeof(float));
        }
        if (p.splits > 1) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t grp = 0; grp < p.n_groups; grp++) {
                int g;
                int64_t i0, i1;
                group_rows(&p, grp, &g, &i0, &i1);
                cpu_attn_merge_group(&p.out, partials, grp, (i1 - i0) * p.G);
                float *o = cpu_attn_partial_at(&p.out, partials, grp, 0);
                cpu_attn_store_rows(&p.out, o, o + p.R * p.dp, o + p.R * p.dp + p.R, g, i0, i1);
            }
        }
    }
    ela_aligned_free(mem);
    return ELA_OK;
}

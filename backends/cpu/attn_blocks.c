/* CPU fused hybrid block-sparse attention (op 2: DESIGN.md 4.2, PAPERS.md 1.4 and 5.2), the
 * executor of Elastic Attention's per-head DENSE / STREAMING / MASK modes in one parallel pass.
 *
 * Work items: the query heads of one KV head that run the same mode (same kind, same streaming
 * window, same mask) form a class; an item is up to ROWS_TARGET rows = (consecutive queries of
 * one 128-row query block) x (the class's heads), so each 64-key tile of K and V is converted
 * to f32 once for all of them, exactly as in the dense driver (attn_dense.c: the same group
 * size and the same tile runner, attn_tile.c). With every head DENSE the items are the dense
 * driver's groups and the arithmetic is the same. An item walks the key blocks its mode allows
 * (a 128-key block is two 64-key tiles); a skipped block costs one integer test. Items are
 * sorted by cost (rows x visited key tiles) and handed out largest first under dynamic
 * scheduling, so dense heads' long rows start early and cheap streaming items fill the gaps.
 * Bound: the dense driver's, over the visited tiles only. Measured at L = n = 32K, Hq 32, Hkv 8,
 * d 128, f16 on 16 Xeon AVX-512 cores: all DENSE 7.4 s (ela_attn_dense 8.0 s), all
 * STREAMING(1, 16) 0.86 s, half of the KV heads each 3.8 s. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn_tile.h"
#include "backend.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define BLOCK ELA_BLOCK
#define ROWS_TARGET 256 /* rows per item, as in the dense driver */

typedef struct {
    int64_t i0, i1; /* query rows, inside one 128-row block */
    int64_t cost;
    int cls;
} item;

typedef struct {
    const ela_attn_blocks_args *a;
    const cpu_attn_kernels *kern;
    int64_t dp, R; /* padded head dim, most rows of any item */
    /* classes: heads cls_heads[cls_start[c] .. + cls_count[c]) of KV head cls_g[c], all with
     * the mode of head cls_heads[cls_start[c]] */
    int n_cls;
    int *cls_heads, *cls_start, *cls_count, *cls_g;
    const char *q, *k, *v, *masks;
    char *o, *lse;
} plan;

typedef struct {
    float *Q, *O, *K, *V, *S, *m, *l, *alpha;
    int64_t *pos;
} scratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t scratch_floats(const plan *p) {
    int64_t R = round_up(p->R, 16);
    return 2 * R * p->dp + 2 * CPU_ATTN_BK * p->dp + R * CPU_ATTN_BK + 3 * R + 2 * R;
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
    s.pos = (int64_t *)(void *)(s.alpha + R); /* 2 floats per int64; R is a multiple of 16 */
    return s;
}

static int same_mode(const ela_head_mode *x, const ela_head_mode *y) {
    if (x->kind != y->kind)
        return 0;
    if (x->kind == ELA_HEAD_STREAMING)
        return x->sink_blocks == y->sink_blocks && x->local_blocks == y->local_blocks;
    if (x->kind == ELA_HEAD_MASK)
        return x->mask == y->mask;
    return 1;
}

/* Row of the class's mask for absolute query block M (NULL unless MASK). */
static const uint8_t *mask_row(const plan *p, const ela_head_mode *md, int64_t M) {
    if (md->kind != ELA_HEAD_MASK)
        return NULL;
    const ela_tensor *t = p->a->masks;
    return (const uint8_t *)(p->masks + md->mask * t->strides[0] + (M - p->a->qb0) * t->strides[1]);
}

/* Key block J (<= M) is visited by query block M under mode md. */
static int block_allowed(const ela_head_mode *md, const uint8_t *mrow, int64_t M, int64_t J) {
    switch (md->kind) {
    case ELA_HEAD_STREAMING:
        return J < md->sink_blocks || J > M - md->local_blocks;
    case ELA_HEAD_MASK:
        return J == M || mrow[J] != 0;
    default:
        return 1;
    }
}

/* Keys [0, end) that rows up to i1 (exclusive) may see. */
static int64_t key_end(const plan *p, int64_t i1) {
    int64_t end = p->a->attn.q_pos0 + i1;
    return end < p->a->attn.n ? end : p->a->attn.n;
}

/* Runs one item and stores its rows. */
static void run_item(const plan *p, scratch *s, const item *it) {
    const ela_attn_dense_args *a = &p->a->attn;
    const cpu_attn_kernels *kern = p->kern;
    const int *heads = p->cls_heads + p->cls_start[it->cls];
    int64_t gc = p->cls_count[it->cls], g = p->cls_g[it->cls];
    const ela_head_mode *md = &p->a->modes[heads[0]];
    int64_t i0 = it->i0, i1 = it->i1, R = (i1 - i0) * gc, dp = p->dp, d = a->d;
    float qscale = a->scale * LOG2E; /* exp2 domain */
    int64_t q0 = a->q->strides[0], q1 = a->q->strides[1];
    int64_t k_1 = a->k->strides[1], v_1 = a->v->strides[1];

    for (int64_t i = i0; i < i1; i++)
        for (int64_t hh = 0; hh < gc; hh++) {
            int64_t r = (i - i0) * gc + hh;
            kern->load_rows(s->Q + r * dp, dp, p->q + i * q0 + heads[hh] * q1, q1, a->q->dtype, 1,
                            d);
            for (int64_t c = 0; c < dp; c++)
                s->Q[r * dp + c] *= qscale;
            s->pos[r] = a->q_pos0 + i;
        }
    memset(s->O, 0, (size_t)(R * dp) * sizeof(float));
    for (int64_t r = 0; r < R; r++) {
        s->m[r] = -INFINITY;
        s->l[r] = 0.0f;
    }
    int64_t M = (a->q_pos0 + i0) / BLOCK, end = key_end(p, i1);
    int64_t last = M < p->a->nkb - 1 ? M : p->a->nkb - 1;
    const uint8_t *mrow = mask_row(p, md, M);
    const char *kh = p->k + g * a->k->strides[0], *vh = p->v + g * a->v->strides[0];
    cpu_attn_tile tile = {s->Q, s->K, s->V, s->O, s->S, s->m, s->l, s->alpha, s->pos, R, dp};
    for (int64_t J = 0; J <= last; J++) {
        if (!block_allowed(md, mrow, M, J))
            continue;
        for (int64_t j0 = J * BLOCK; j0 < J * BLOCK + BLOCK && j0 < end; j0 += CPU_ATTN_BK) {
            int64_t nk = end - j0 < CPU_ATTN_BK ? end - j0 : CPU_ATTN_BK;
            kern->load_rows(s->K, dp, kh + j0 * k_1, k_1, a->k->dtype, nk, d);
            kern->load_rows(s->V, dp, vh + j0 * v_1, v_1, a->v->dtype, nk, d);
            cpu_attn_tile_run(kern, &tile, j0, nk, 1);
        }
    }

    /* Normalise and store; a row that saw no key (only when n is below its block) gets 0 and
     * lse = -inf, as in attn_gather. */
    ela_dtype odt = a->o->dtype;
    int64_t o0 = a->o->strides[0], o1 = a->o->strides[1];
    for (int64_t i = i0; i < i1; i++)
        for (int64_t hh = 0; hh < gc; hh++) {
            int64_t r = (i - i0) * gc + hh, h = heads[hh];
            const float *src = s->O + r * dp;
            float inv = s->l[r] > 0.0f ? 1.0f / s->l[r] : 0.0f;
            char *dst = p->o + i * o0 + h * o1;
            if (odt == ELA_F32) {
                for (int64_t c = 0; c < d; c++)
                    ((float *)dst)[c] = src[c] * inv;
            } else {
                for (int64_t c = 0; c < d; c++)
                    ((uint16_t *)dst)[c] = odt == ELA_F16 ? ela_f32_to_f16(src[c] * inv)
                                                          : ela_f32_to_bf16(src[c] * inv);
            }
            if (p->lse) {
                float lse = s->l[r] > 0.0f ? (s->m[r] + log2f(s->l[r])) * LN2 : -INFINITY;
                *(float *)(p->lse + i * a->lse->strides[0] + h * a->lse->strides[1]) = lse;
            }
        }
}

/* Groups each KV head's query heads by mode into classes (a class never spans KV heads);
 * cls_of is scratch [hq]. Within a class heads stay in ascending order. */
static void make_classes(plan *p, int *cls_of) {
    const ela_attn_blocks_args *a = p->a;
    int hq = a->attn.hq, G = hq / a->attn.hkv;
    p->n_cls = 0;
    for (int h = 0; h < hq; h++) {
        int g = h / G, c = p->n_cls - 1;
        for (; c >= 0 && p->cls_g[c] == g; c--)
            if (same_mode(&a->modes[p->cls_heads[c]], &a->modes[h])) /* cls_heads[c]: rep */
                break;
        if (c < 0 || p->cls_g[c] != g) {
            c = p->n_cls++;
            p->cls_g[c] = g;
            p->cls_heads[c] = h;
            p->cls_count[c] = 0;
        }
        cls_of[h] = c;
        p->cls_count[c]++;
    }
    for (int c = 0, at = 0; c < p->n_cls; c++) {
        p->cls_start[c] = at;
        at += p->cls_count[c];
    }
    int *fill = p->cls_g + p->n_cls; /* cursor per class; cls_g has room for 2 * hq */
    for (int c = 0; c < p->n_cls; c++)
        fill[c] = p->cls_start[c];
    for (int h = 0; h < hq; h++)
        p->cls_heads[fill[cls_of[h]]++] = h;
}

/* Key tiles an item of rows [i0, i1) of class c visits: its share of the schedule. */
static int64_t item_tiles(const plan *p, int c, int64_t i0, int64_t i1) {
    const ela_attn_blocks_args *a = p->a;
    const ela_head_mode *md = &a->modes[p->cls_heads[p->cls_start[c]]];
    int64_t M = (a->attn.q_pos0 + i0) / BLOCK, end = key_end(p, i1), tiles = 0;
    int64_t last = M < a->nkb - 1 ? M : a->nkb - 1;
    const uint8_t *mrow = mask_row(p, md, M);
    for (int64_t J = 0; J <= last; J++)
        if (block_allowed(md, mrow, M, J)) {
            int64_t k1 = J * BLOCK + BLOCK < end ? J * BLOCK + BLOCK : end;
            tiles += (k1 - J * BLOCK + CPU_ATTN_BK - 1) / CPU_ATTN_BK;
        }
    return tiles;
}

/* Rows per item of a class of gc heads. */
static int64_t rows_per_item(int64_t gc) {
    int64_t bq = ROWS_TARGET / gc;
    return bq < 1 ? 1 : bq > BLOCK ? BLOCK : bq;
}

/* Fills items (or only counts them when items is NULL); returns the count. */
static int64_t make_items(const plan *p, item *items) {
    const ela_attn_blocks_args *a = p->a;
    int64_t n = 0;
    for (int64_t qb = 0; qb < a->nqb; qb++) {
        int64_t b0 = qb * BLOCK, b1 = b0 + BLOCK < a->attn.L ? b0 + BLOCK : a->attn.L;
        for (int c = 0; c < p->n_cls; c++) {
            int64_t bq = rows_per_item(p->cls_count[c]);
            for (int64_t i0 = b0; i0 < b1; i0 += bq, n++) {
                if (!items)
                    continue;
                item *it = &items[n];
                it->i0 = i0;
                it->i1 = i0 + bq < b1 ? i0 + bq : b1;
                it->cls = c;
                /* + 1: the rows' load and store, so empty items still sort by size */
                it->cost = (it->i1 - it->i0) * p->cls_count[c] * (item_tiles(p, c, i0, it->i1) + 1);
            }
        }
    }
    return n;
}

static int cmp_items(const void *x, const void *y) {
    const item *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    if (a->i0 != b->i0)
        return a->i0 < b->i0 ? -1 : 1;
    return (a->cls > b->cls) - (a->cls < b->cls);
}

ela_status cpu_attn_blocks(void *ctx, const ela_attn_blocks_args *a) {
    const cpu_backend *cpu = ctx;
    int hq = a->attn.hq;
    plan p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.kern = cpu->attn;
    p.dp = round_up(a->attn.d, CPU_ATTN_DPAD);
    p.q = cpu_tensor_data(a->attn.q);
    p.k = cpu_tensor_data(a->attn.k);
    p.v = cpu_tensor_data(a->attn.v);
    p.o = cpu_tensor_data(a->attn.o);
    p.lse = a->attn.lse ? cpu_tensor_data(a->attn.lse) : NULL;
    p.masks = a->masks ? cpu_tensor_data(a->masks) : NULL;

    item *items = NULL;
    float *mem = NULL;
    int *ints = ela_calloc((size_t)hq * 6, sizeof(int));
    if (!ints)
        goto oom;
    p.cls_heads = ints;
    p.cls_start = ints + hq;
    p.cls_count = ints + 2 * hq;
    p.cls_g = ints + 3 * hq; /* 2 * hq: classes, then make_classes' cursors */
    make_classes(&p, ints + 5 * hq);
    for (int c = 0; c < p.n_cls; c++) {
        int64_t R = rows_per_item(p.cls_count[c]) * p.cls_count[c];
        if (R > p.R)
            p.R = R;
    }
    int64_t n_items = make_items(&p, NULL);
    items = ela_calloc((size_t)n_items, sizeof *items);
    if (!items)
        goto oom;
    make_items(&p, items);
    qsort(items, (size_t)n_items, sizeof *items, cmp_items);

    int threads = cpu->threads;
    if (n_items < threads)
        threads = (int)n_items;
    int64_t per_thread = round_up(scratch_floats(&p), 16);
    mem = ela_aligned_alloc((size_t)(per_thread * threads) * sizeof(float));
    if (!mem)
        goto oom;

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        scratch s = carve(mem + per_thread * tid, &p);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_items; i++)
            run_item(&p, &s, &items[i]);
    }
    ela_aligned_free(mem);
    ela_free(items);
    ela_free(ints);
    return ELA_OK;
oom:
    ela_free(items);
    ela_free(ints);
    return ela_fail(ELA_ERR_OOM, "cpu: attn_blocks: out of memory for the work list and tiles");
}

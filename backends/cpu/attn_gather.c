/* CPU attn_gather (DESIGN.md 4.8): attention over the keys an index list names, the sparse
 * layers of LessIsMore and any top-k decode.
 *
 * The same work split as the dense driver (attn_dense.c): groups of R query rows sharing a KV
 * head, the list cut into chunks processed in parallel and merged by log-sum-exp when there
 * are too few groups for every thread (decode). A 64-entry tile of the list becomes 64 row
 * pointers into K and V; few rows (decode) use the row kernels, which read those rows in place
 * (prefetching the next tile's), many rows convert the gathered rows into f32 tiles once and
 * use the tiled kernels. Bound: the KV bytes of the listed rows, read once, like dense decode
 * over m keys. */
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
#define ROWS_TARGET 64
#define MIN_SPLIT_KEYS 256
#define BK CPU_ATTN_BK

typedef struct {
    const ela_attn_gather_args *g;
    const ela_attn_dense_args *a;
    const cpu_attn_kernels *kern;
    int64_t G, bq, nqb, dp, R, m;
    int64_t n_groups, splits, split_keys;
    int row_path; /* row kernels read K/V in place */
    const char *q, *k, *v;
    const int32_t *idx;
    int64_t idx_stride; /* elements between the lists of two KV heads (0: shared list) */
    cpu_attn_rows out; /* what attn_partials.c needs */
} plan;

typedef struct {
    float *Q, *O, *K, *V, *S, *m, *l, *alpha;
    int64_t *pos;
    const void **krow, **vrow, **knext, **vnext;
} scratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t scratch_floats(const plan *p) {
    int64_t R = round_up(p->R, 16);
    return 2 * R * p->dp + 2 * BK * p->dp + R * BK + 3 * R + 2 * R + 4 * 2 * BK;
}

static scratch carve(float *base, const plan *p) {
    int64_t R = round_up(p->R, 16);
    scratch s;
    s.Q = base;
    s.O = s.Q + R * p->dp;
    s.K = s.O + R * p->dp;
    s.V = s.K + BK * p->dp;
    s.S = s.V + BK * p->dp;
    s.m = s.S + R * BK;
    s.l = s.m + R;
    s.alpha = s.l + R;
    s.pos = (int64_t *)(void *)(s.alpha + R);               /* 2 floats per int64 */
    s.krow = (const void **)(void *)(s.alpha + R + 2 * R);  /* 2 floats per pointer */
    s.vrow = s.krow + BK;
    s.knext = s.vrow + BK;
    s.vnext = s.knext + BK;
    return s;
}

/* Row pointers of list entries [j0, j0 + nk) of KV head g's list. */
static void tile_rows(const plan *p, int g, int64_t j0, int64_t nk, const void **krow,
                      const void **vrow) {
    const int32_t *list = p->idx + (int64_t)g * p->idx_stride;
    const char *kh = p->k + g * p->a->k->strides[0], *vh = p->v + g * p->a->v->strides[0];
    for (int64_t j = 0; j < nk; j++) {
        krow[j] = kh + list[j0 + j] * p->a->k->strides[1];
        vrow[j] = vh + list[j0 + j] * p->a->v->strides[1];
    }
}

/* Rows of queries [i0, i1) of KV head g over list entries [k0, k1): unnormalised O, m, l. */
static void run_chunk(const plan *p, scratch *s, int g, int64_t i0, int64_t i1, int64_t k0,
                      int64_t k1) {
    const ela_attn_dense_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    int64_t R = (i1 - i0) * p->G, dp = p->dp, d = a->d;
    float qscale = a->scale * LOG2E;
    int64_t q0 = a->q->strides[0], q1 = a->q->strides[1];
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
    const int32_t *list = p->idx + (int64_t)g * p->idx_stride;
    int64_t min_pos = a->q_pos0 + i0;
    int row_path = p->row_path && R <= CPU_ATTN_ROWS_FAST;
    if (k0 < k1)
        tile_rows(p, g, k0, k1 - k0 < BK ? k1 - k0 : BK, s->knext, s->vnext);
    for (int64_t j0 = k0; j0 < k1; j0 += BK) {
        int64_t nk = k1 - j0 < BK ? k1 - j0 : BK;
        const void **t;
        t = s->krow, s->krow = s->knext, s->knext = t; /* this tile's rows were made last step */
        t = s->vrow, s->vrow = s->vnext, s->vnext = t;
        int64_t nn = j0 + BK < k1 ? (k1 - j0 - BK < BK ? k1 - j0 - BK : BK) : 0;
        if (nn > 0)
            tile_rows(p, g, j0 + BK, nn, s->knext, s->vnext);
        if (row_path) {
            kern->qk_rows(s->S, s->Q, R, dp, s->krow, nk, d, a->k->dtype, s->knext, nn);
        } else {
            for (int64_t j = 0; j < nk; j++) {
                kern->load_rows(s->K + j * dp, dp, s->krow[j], 0, a->k->dtype, 1, d);
                kern->load_rows(s->V + j * dp, dp, s->vrow[j], 0, a->v->dtype, 1, d);
            }
            kern->qk(s->S, s->Q, s->K, R, nk, dp);
        }
        if (a->causal) {
            int32_t hi = 0;
            for (int64_t j = 0; j < nk; j++)
                hi = list[j0 + j] > hi ? list[j0 + j] : hi;
            if (hi > min_pos) /* some listed key lies past some row: mask per (row, key) */
                for (int64_t r = 0; r < R; r++)
                    for (int64_t j = 0; j < nk; j++)
                        if (list[j0 + j] > s->pos[r])
                            s->S[r * BK + j] = -INFINITY;
        }
        kern->softmax(s->S, s->m, s->l, s->alpha, R, nk);
        if (row_path)
            kern->pv_rows(s->O, s->S, s->alpha, R, dp, s->vrow, nk, d, a->v->dtype, s->vnext, nn);
        else
            kern->pv(s->O, s->S, s->V, s->alpha, R, nk, dp);
    }
}

static void make_plan(plan *p, const ela_attn_gather_args *g, const cpu_backend *cpu) {
    const ela_attn_dense_args *a = &g->attn;
    memset(p, 0, sizeof *p);
    p->g = g;
    p->a = a;
    p->kern = cpu->attn;
    p->m = g->m;
    p->G = a->hq / a->hkv;
    p->bq = ROWS_TARGET / p->G > 0 ? ROWS_TARGET / p->G : 1;
    if (p->bq > a->L)
        p->bq = a->L;
    p->nqb = (a->L + p->bq - 1) / p->bq;
    p->R = p->bq * p->G;
    p->dp = round_up(a->d, CPU_ATTN_DPAD);
    p->n_groups = p->nqb * a->hkv;
    p->row_path = p->kern->qk_rows && p->kern->pv_rows && a->d % CPU_ATTN_DPAD == 0;
    int64_t want = 4 * (int64_t)cpu->threads;
    p->splits = 1;
    if (p->n_groups < want) {
        p->splits = (want + p->n_groups - 1) / p->n_groups;
        int64_t cap = p->m / MIN_SPLIT_KEYS > 1 ? p->m / MIN_SPLIT_KEYS : 1;
        if (p->splits > cap)
            p->splits = cap;
    }
    p->split_keys = round_up((p->m + p->splits - 1) / p->splits, BK);
    if (p->split_keys == 0)
        p->split_keys = BK;
    p->q = cpu_tensor_data(a->q);
    p->k = cpu_tensor_data(a->k);
    p->v = cpu_tensor_data(a->v);
    p->out.a = a;
    p->out.G = p->G;
    p->out.dp = p->dp;
    p->out.R = p->R;
    p->out.splits = p->splits;
    p->idx = (const int32_t *)(const void *)cpu_tensor_data(g->idx);
    p->idx_stride = g->per_head ? g->idx->strides[0] / (int64_t)sizeof(int32_t) : 0;
}

ela_status cpu_attn_gather(void *ctx, const ela_attn_gather_args *args) {
    const cpu_backend *cpu = ctx;
    plan p;
    make_plan(&p, args, cpu);
    int threads = cpu->threads;
    int64_t n_items = p.n_groups * p.splits;
    if (n_items < threads)
        threads = (int)n_items;
    int64_t per_thread = round_up(scratch_floats(&p), 16);
    int64_t partial_floats = p.splits > 1 ? n_items * p.R * (p.dp + 2) : 0;
    float *mem = ela_aligned_alloc((size_t)(per_thread * threads + partial_floats) * sizeof(float));
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: attn_gather: out of memory for %d thread tiles", threads);
    float *partials = mem + per_thread * threads;

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        scratch s = carve(mem + per_thread * tid, &p);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            int64_t grp = item / p.splits, split = item % p.splits;
            int g = (int)(grp % p.a->hkv);
            int64_t i0 = grp / p.a->hkv * p.bq;
            int64_t i1 = i0 + p.bq < p.a->L ? i0 + p.bq : p.a->L;
            int64_t k0 = split * p.split_keys;
            int64_t k1 = k0 + p.split_keys < p.m ? k0 + p.split_keys : p.m;
            if (k0 > k1)
                k0 = k1;
            int64_t R = (i1 - i0) * p.G;
            run_chunk(&p, &s, g, i0, i1, k0, k1);
            if (p.splits == 1) {
                cpu_attn_store_rows(&p.out, s.O, s.m, s.l, g, i0, i1);
                continue;
            }
            float *dst = cpu_attn_partial_at(&p.out, partials, grp, split);
            memcpy(dst, s.O, (size_t)(R * p.dp) * sizeof(float));
            memcpy(dst + p.R * p.dp, s.m, (size_t)R * sizeof(float));
            memcpy(dst + p.R * p.dp + p.R, s.l, (size_t)R * sizeof(float));
        }
        if (p.splits > 1) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t grp = 0; grp < p.n_groups; grp++) {
                int g = (int)(grp % p.a->hkv);
                int64_t i0 = grp / p.a->hkv * p.bq;
                int64_t i1 = i0 + p.bq < p.a->L ? i0 + p.bq : p.a->L;
                cpu_attn_merge_group(&p.out, partials, grp, (i1 - i0) * p.G);
                float *o = cpu_attn_partial_at(&p.out, partials, grp, 0);
                cpu_attn_store_rows(&p.out, o, o + p.R * p.dp, o + p.R * p.dp + p.R, g, i0, i1);
            }
        }
    }
    ela_aligned_free(mem);
    return ELA_OK;
}

/* CPU attn_token_sparse (DESIGN.md 4.6, PAPERS.md 2.4): per query head h, gather its selected
 * rows idx[h, 0..n_sel) of Q (head h) and of K, V (KV head h / G, read in place: no repeated or
 * gathered copy of the KV exists), causal attention on the compressed sequence, scatter.
 *
 * Work items are (query head, block of 64 compressed query rows); every head has its own index
 * list, so heads of a KV group cannot share tiles (the dense driver shares them across G).
 * An item gathers its Q rows into an f32 tile, then walks compressed keys [0, i1) in 64-key
 * tiles, each gathered from the original rows (runs of consecutive indices are converted with
 * one load_rows call) and run through the dense tile kernels qk -> mask -> softmax -> pv. The
 * mask is in compressed index space (query i' sees keys j' <= i'), which equals the original
 * causality because idx rows are strictly ascending (checked by core/ops/attn_token_sparse.c).
 * Per item that is 2 * 64 * i1 * d flops (qk + pv) against 2 * 64 * i1 * d bytes of K/V tiles,
 * as in the dense driver. The same item also writes zeros to the original rows of head h that
 * lie in the gaps before its selected rows (the last block also after them), so all of o is
 * written once. n_sel == L means every head keeps every row: that is dense attention, run by
 * the dense driver (identical results, shared GQA tiles). */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634f
#define BK CPU_ATTN_BK /* keys per tile, and compressed query rows per item */

typedef struct {
    const ela_attn_token_sparse_args *ta;
    const ela_attn_dense_args *a;
    const cpu_attn_kernels *kern;
    int64_t G, dp, nqb;
} plan;

typedef struct {
    float *Q, *O, *K, *V, *S, *m, *l, *alpha;
} scratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t scratch_floats(const plan *p) { return 4 * BK * p->dp + BK * BK + 3 * BK; }

static scratch carve(float *base, const plan *p) {
    scratch s;
    s.Q = base;
    s.O = s.Q + BK * p->dp;
    s.K = s.O + BK * p->dp;
    s.V = s.K + BK * p->dp;
    s.S = s.V + BK * p->dp;
    s.m = s.S + BK * BK;
    s.l = s.m + BK;
    s.alpha = s.l + BK;
    return s;
}

static const int32_t *idx_row(const plan *p, int h) {
    const ela_tensor *t = p->ta->idx;
    return (const int32_t *)(const void *)(cpu_tensor_data(t) + h * t->strides[0]);
}

/* dst row r (r < n) = src row sel[r] of a [rows, d] slab with row stride `stride`; consecutive
 * indices are converted by one load_rows call. */
static void gather_rows(const plan *p, float *dst, const char *src, int64_t stride,
                        ela_dtype dtype, const int32_t *sel, int64_t n) {
    for (int64_t r = 0; r < n;) {
        int64_t run = 1;
        while (r + run < n && sel[r + run] == sel[r] + run)
            run++;
        p->kern->load_rows(dst + r * p->dp, p->dp, src + sel[r] * stride, stride, dtype, run,
                           p->a->d);
        r += run;
    }
}

/* Original rows [r0, r1) of head h in o set to zero. */
static void zero_rows(const plan *p, int h, int64_t r0, int64_t r1) {
    const ela_tensor *o = p->a->o;
    size_t bytes = (size_t)p->a->d * ela_dtype_size(o->dtype);
    char *base = cpu_tensor_data(o) + h * o->strides[1];
    for (int64_t r = r0; r < r1; r++)
        memset(base + r * o->strides[0], 0, bytes);
}

/* Normalised rows of the item into o at their original positions. */
static void store_rows(const plan *p, const scratch *s, int h, const int32_t *sel, int64_t R) {
    const ela_tensor *o = p->a->o;
    ela_dtype odt = o->dtype;
    char *base = cpu_tensor_data(o) + h * o->strides[1];
    for (int64_t r = 0; r < R; r++) {
        const float *src = s->O + r * p->dp;
        float inv = s->l[r] > 0.0f ? 1.0f / s->l[r] : 0.0f;
        char *dst = base + (int64_t)sel[r] * o->strides[0];
        if (odt == ELA_F32) {
            for (int64_t c = 0; c < p->a->d; c++)
                ((float *)(void *)dst)[c] = src[c] * inv;
        } else {
            for (int64_t c = 0; c < p->a->d; c++)
                ((uint16_t *)(void *)dst)[c] = odt == ELA_F16 ? ela_f32_to_f16(src[c] * inv)
                                                              : ela_f32_to_bf16(src[c] * inv);
        }
    }
}

/* Compressed query rows [i0, i1) of head h. */
static void run_item(const plan *p, scratch *s, int h, int64_t i0, int64_t i1) {
    const ela_attn_dense_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    const int32_t *sel = idx_row(p, h);
    int64_t R = i1 - i0, dp = p->dp, n_sel = p->ta->n_sel;
    int g = (int)(h / p->G);

    /* Zeros first: the gaps before each selected row, and after the last one. */
    for (int64_t i = i0; i < i1; i++)
        zero_rows(p, h, i == 0 ? 0 : sel[i - 1] + 1, sel[i]);
    if (i1 == n_sel)
        zero_rows(p, h, sel[n_sel - 1] + 1, a->L);

    const ela_tensor *q = a->q, *k = a->k, *v = a->v;
    gather_rows(p, s->Q, cpu_tensor_data(q) + h * q->strides[1], q->strides[0], q->dtype,
                sel + i0, R);
    float qscale = a->scale * LOG2E; /* exp2 domain: exp(x) = exp2(x * log2 e) */
    for (int64_t c = 0; c < R * dp; c++)
        s->Q[c] *= qscale;
    memset(s->O, 0, (size_t)(R * dp) * sizeof(float));
    for (int64_t r = 0; r < R; r++) {
        s->m[r] = -INFINITY;
        s->l[r] = 0.0f;
    }
    const char *kh = cpu_tensor_data(k) + g * k->strides[0];
    const char *vh = cpu_tensor_data(v) + g * v->strides[0];
    int64_t end = a->causal ? i1 : n_sel; /* compressed keys any row of the item sees */
    for (int64_t j0 = 0; j0 < end; j0 += BK) {
        int64_t nk = end - j0 < BK ? end - j0 : BK;
        gather_rows(p, s->K, kh, k->strides[1], k->dtype, sel + j0, nk);
        gather_rows(p, s->V, vh, v->strides[1], v->dtype, sel + j0, nk);
        kern->qk(s->S, s->Q, s->K, R, nk, dp);
        if (a->causal && j0 + nk - 1 > i0) { /* the tile crosses the compressed diagonal */
            for (int64_t r = 0; r < R; r++) {
                int64_t first_hidden = i0 + r + 1 - j0;
                for (int64_t j = first_hidden < 0 ? 0 : first_hidden; j < nk; j++)
                    s->S[r * BK + j] = -INFINITY;
            }
        }
        kern->softmax(s->S, s->m, s->l, s->alpha, R, nk);
        kern->pv(s->O, s->S, s->V, s->alpha, R, nk, dp);
    }
    store_rows(p, s, h, sel + i0, R);
}

/* n_sel == 0: no head keeps anything, o is all zeros. */
static void zero_all(const ela_attn_dense_args *a) {
    size_t bytes = (size_t)a->d * ela_dtype_size(a->o->dtype);
    for (int64_t i = 0; i < a->L; i++)
        for (int h = 0; h < a->hq; h++)
            memset(cpu_tensor_data(a->o) + i * a->o->strides[0] + h * a->o->strides[1], 0, bytes);
}

ela_status cpu_attn_token_sparse(void *ctx, const ela_attn_token_sparse_args *ta) {
    const cpu_backend *cpu = ctx;
    const ela_attn_dense_args *a = &ta->attn;
    if (ta->n_sel == a->L) /* strictly ascending in [0, L): every row is the identity */
        return cpu_attn_dense(ctx, a);
    if (ta->n_sel == 0) {
        zero_all(a);
        return ELA_OK;
    }
    plan p;
    p.ta = ta;
    p.a = a;
    p.kern = cpu->attn;
    p.G = a->hq / a->hkv;
    p.dp = round_up(a->d, CPU_ATTN_DPAD);
    p.nqb = (ta->n_sel + BK - 1) / BK;
    int64_t n_items = p.nqb * a->hq;
    int threads = cpu->threads > 0 ? cpu->threads : 1;
    if (n_items < threads)
        threads = (int)n_items;
    int64_t per_thread = round_up(scratch_floats(&p), 16);
    float *mem = ela_aligned_alloc((size_t)(per_thread * threads) * sizeof(float));
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: attn_token_sparse: out of memory for %d thread tiles",
                        threads);

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        scratch s = carve(mem + per_thread * tid, &p);
        /* Causal: later query blocks see more keys, so they go first. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            int64_t qb = p.nqb - 1 - item / a->hq;
            int h = (int)(item % a->hq);
            int64_t i0 = qb * BK, i1 = i0 + BK < ta->n_sel ? i0 + BK : ta->n_sel;
            run_item(&p, &s, h, i0, i1);
        }
    }
    ela_aligned_free(mem);
    return ELA_OK;
}

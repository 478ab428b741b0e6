/* CPU attn_nsa (DESIGN.md 4.9, PAPERS.md 4.3 steps 6-7): gated attention of SSA models.
 *
 * Sparse mode: every query row has its own key set, so a work item is (query row i, KV head g)
 * and its R = G query heads, which share the block list blocks[i, g, :]. The list is sorted
 * (ascending, so adjacent blocks coalesce into one run and the causal cut j <= t only trims the
 * last runs); the visible keys of its blocks (<= top * B, 256 by default) go in 64-key tiles
 * through the dense kernels (qk -> online softmax -> pv). No masking is needed: keys past t are
 * never gathered. With few heads per group (G <= CPU_ATTN_ROWS_FAST) a key serves too few rows
 * to pay for an f32 copy, so the row kernels read the gathered K and V rows in place through
 * arrays of row pointers (the next tile's rows are prefetched meanwhile); with more (SSA-1B:
 * G = 16), or on the scalar level with 16-bit K/V, the keys are packed into f32 tiles, each
 * converted once for the G heads. Each item moves 2 top B d elements of K/V for 4 G top B d
 * FLOPs. Output: o = gate * O / l (o = 0 for a row whose blocks hold no visible key).
 * The block indices are validated here, before anything is written: entries -1 (ignored) or in
 * [0, ceil(n / B)), no block twice in a list.
 * Full mode (blocks NULL): the dense driver, then o *= gate in place. */
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

typedef struct {
    const ela_attn_nsa_args *na;
    const ela_attn_dense_args *a;
    const cpu_attn_kernels *kern;
    int64_t G, dp, Gr, nkb;
    int rows_path; /* qk_rows/pv_rows read K and V in place (see the file comment) */
} plan;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static const int32_t *block_list(const ela_attn_nsa_args *na, int64_t i, int64_t g) {
    return (const int32_t *)(const void *)(cpu_tensor_data(na->blocks) +
                                           i * na->blocks->strides[0] +
                                           g * na->blocks->strides[1]);
}

/* Entries of src[0, top) that are not -1, sorted ascending into dst; returns their count.
 * *bad gets the slot of the first invalid entry (out of range, or a repeat), -1 if none. */
static int64_t sorted_list(const int32_t *src, int64_t top, int64_t nkb, int32_t *dst,
                           int64_t *bad) {
    int64_t cnt = 0;
    *bad = -1;
    for (int64_t x = 0; x < top; x++) {
        int32_t b = src[x];
        if (b == -1)
            continue;
        if (b < -1 || b >= nkb) {
            *bad = x;
            return cnt;
        }
        int64_t pos = cnt++;
        while (pos > 0 && dst[pos - 1] > b) {
            dst[pos] = dst[pos - 1];
            pos--;
        }
        if (pos > 0 && dst[pos - 1] == b) {
            *bad = x;
            return cnt;
        }
        dst[pos] = b;
    }
    return cnt;
}

/* Stores normalised, gated rows of query i, KV head g from O [G, dp], l [G]. */
static void store_rows(const plan *p, const float *O, const float *l, int64_t i, int64_t g) {
    const ela_attn_dense_args *a = p->a;
    const ela_tensor *gt = p->na->gate;
    ela_dtype odt = a->o->dtype;
    for (int64_t hh = 0; hh < p->G; hh++) {
        int64_t h = g * p->G + hh;
        float gamma = gt ? *(const float *)(const void *)(cpu_tensor_data(gt) +
                                                          i * gt->strides[0] + h * gt->strides[1])
                         : 1.0f;
        float f = l[hh] > 0.0f ? gamma / l[hh] : 0.0f;
        const float *src = O + hh * p->dp;
        char *dst = cpu_tensor_data(a->o) + i * a->o->strides[0] + h * a->o->strides[1];
        if (odt == ELA_F32) {
            for (int64_t c = 0; c < a->d; c++)
                ((float *)(void *)dst)[c] = src[c] * f;
        } else if (odt == ELA_F16) {
            for (int64_t c = 0; c < a->d; c++)
                ((uint16_t *)(void *)dst)[c] = ela_f32_to_f16(src[c] * f);
        } else {
            for (int64_t c = 0; c < a->d; c++)
                ((uint16_t *)(void *)dst)[c] = ela_f32_to_bf16(src[c] * f);
        }
    }
}

/* Per-thread scratch (floats): Q, O [Gr, dp]; K, V [BK, dp]; S [Gr, BK]; m, l, alpha [Gr];
 * K and V row pointers [BK] each, twice; the sorted block list [top] as int32. */
#define PTR_FLOATS ((int64_t)((sizeof(void *) + sizeof(float) - 1) / sizeof(float)))
static int64_t scratch_floats(const plan *p) {
    return 2 * p->Gr * p->dp + 2 * CPU_ATTN_BK * p->dp + p->Gr * CPU_ATTN_BK + 3 * p->Gr +
           4 * CPU_ATTN_BK * PTR_FLOATS + round_up(p->na->top, 16);
}

/* Walks the visible keys of a sorted block list: runs of adjacent blocks, cut at t. */
typedef struct {
    const int32_t *list;
    int64_t cnt, x, s0, s1, t, B;
} key_cursor;

/* The next contiguous piece of at most `room` keys into *j0; returns its length (0: done). */
static int64_t cursor_next(key_cursor *c, int64_t room, int64_t *j0) {
    while (c->s0 >= c->s1) {
        if (c->x >= c->cnt)
            return 0;
        int64_t b = c->list[c->x++];
        if (b * c->B > c->t) { /* sorted: this and the remaining blocks lie past t */
            c->x = c->cnt;
            return 0;
        }
        c->s0 = b * c->B;
        c->s1 = c->s0 + c->B;
        while (c->x < c->cnt && c->list[c->x] * c->B == c->s1 && c->s1 <= c->t) {
            c->x++;
            c->s1 += c->B;
        }
        if (c->s1 > c->t + 1)
            c->s1 = c->t + 1;
    }
    int64_t take = c->s1 - c->s0 < room ? c->s1 - c->s0 : room;
    *j0 = c->s0;
    c->s0 += take;
    return take;
}

/* Row path: pointers to the next tile's K and V rows; returns the tile's key count. */
static int64_t next_rows(key_cursor *c, const char *kh, int64_t k1, const char *vh, int64_t v1,
                         const void **krow, const void **vrow) {
    int64_t nk = 0, j0, take;
    while (nk < CPU_ATTN_BK && (take = cursor_next(c, CPU_ATTN_BK - nk, &j0)) > 0)
        for (int64_t j = 0; j < take; j++, nk++) {
            krow[nk] = kh + (j0 + j) * k1;
            vrow[nk] = vh + (j0 + j) * v1;
        }
    return nk;
}

/* Tile path: the next tile's K and V rows converted to f32; returns the tile's key count. */
static int64_t next_tile(const plan *p, key_cursor *c, const char *kh, const char *vh, float *K,
                         float *V) {
    const ela_attn_dense_args *a = p->a;
    int64_t nk = 0, j0, take, k1 = a->k->strides[1], v1 = a->v->strides[1];
    while (nk < CPU_ATTN_BK && (take = cursor_next(c, CPU_ATTN_BK - nk, &j0)) > 0) {
        p->kern->load_rows(K + nk * p->dp, p->dp, kh + j0 * k1, k1, a->k->dtype, take, a->d);
        p->kern->load_rows(V + nk * p->dp, p->dp, vh + j0 * v1, v1, a->v->dtype, take, a->d);
        nk += take;
    }
    return nk;
}

static void run_item(const plan *p, float *mem, int64_t i, int64_t g) {
    const ela_attn_dense_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    int64_t G = p->G, dp = p->dp, d = a->d, BK = CPU_ATTN_BK;
    float *Q = mem, *O = Q + p->Gr * dp, *K = O + p->Gr * dp, *V = K + BK * dp;
    float *S = V + BK * dp, *m = S + p->Gr * BK, *l = m + p->Gr, *alpha = l + p->Gr;
    const void **krow = (const void **)(void *)(alpha + p->Gr), **vrow = krow + BK;
    const void **krow2 = vrow + BK, **vrow2 = krow2 + BK;
    int32_t *list = (int32_t *)(void *)(vrow2 + BK);

    kern->load_rows(Q, dp, cpu_tensor_data(a->q) + i * a->q->strides[0] + g * G * a->q->strides[1],
                    a->q->strides[1], a->q->dtype, G, d);
    float qscale = a->scale * LOG2E; /* exp2 domain, as the softmax kernel expects */
    for (int64_t x = 0; x < G * dp; x++)
        Q[x] *= qscale;
    memset(O, 0, (size_t)(G * dp) * sizeof(float));
    for (int64_t r = 0; r < G; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }

    int64_t bad;
    key_cursor c = {list, 0, 0, 0, 0, a->q_pos0 + i, p->na->block};
    c.cnt = sorted_list(block_list(p->na, i, g), p->na->top, p->nkb, list, &bad);
    const char *kh = cpu_tensor_data(a->k) + g * a->k->strides[0];
    const char *vh = cpu_tensor_data(a->v) + g * a->v->strides[0];
    int64_t k1 = a->k->strides[1], v1 = a->v->strides[1], nk;
    if (p->rows_path) {
        /* double-buffered row pointers: the kernels prefetch the next tile's rows */
        nk = next_rows(&c, kh, k1, vh, v1, krow, vrow);
        while (nk > 0) {
            int64_t nk2 = next_rows(&c, kh, k1, vh, v1, krow2, vrow2);
            kern->qk_rows(S, Q, G, dp, krow, nk, d, a->k->dtype, krow2, nk2);
            kern->softmax(S, m, l, alpha, G, nk);
            kern->pv_rows(O, S, alpha, G, dp, vrow, nk, d, a->v->dtype, vrow2, nk2);
            const void **tk = krow, **tv = vrow;
            krow = krow2;
            vrow = vrow2;
            krow2 = tk;
            vrow2 = tv;
            nk = nk2;
        }
    } else {
        while ((nk = next_tile(p, &c, kh, vh, K, V)) > 0) {
            kern->qk(S, Q, K, G, nk, dp);
            kern->softmax(S, m, l, alpha, G, nk);
            kern->pv(O, S, V, alpha, G, nk, dp);
        }
    }
    store_rows(p, O, l, i, g);
}

/* Checks every block list; on the first bad one (lowest row, head) sets the error. */
static ela_status check_blocks(const plan *p, int threads, int32_t *lists) {
    const ela_attn_nsa_args *na = p->na;
    int64_t n_items = p->a->L * p->a->hkv, first_bad = n_items, per = round_up(na->top, 16);
#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int64_t x = 0; x < n_items; x++) {
            int64_t bad;
            sorted_list(block_list(na, x / p->a->hkv, x % p->a->hkv), na->top, p->nkb,
                        lists + per * tid, &bad);
            if (bad >= 0) {
#pragma omp critical(cpu_attn_nsa_bad)
                if (x < first_bad)
                    first_bad = x;
            }
        }
    }
    if (first_bad == n_items)
        return ELA_OK;
    int64_t i = first_bad / p->a->hkv, g = first_bad % p->a->hkv, bad;
    const int32_t *src = block_list(na, i, g);
    sorted_list(src, na->top, p->nkb, lists, &bad);
    int32_t b = src[bad];
    if (b < -1 || b >= p->nkb)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_nsa: tensor blocks[%lld, %lld, %lld] = %d "
                        "is out of range (-1 or [0, %lld) for n = %lld, block %d)", (long long)i,
                        (long long)g, (long long)bad, (int)b, (long long)p->nkb,
                        (long long)p->a->n, na->block);
    return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_nsa: tensor blocks[%lld, %lld, %lld] = %d "
                    "repeats a block of the same list", (long long)i, (long long)g,
                    (long long)bad, (int)b);
}

/* Full mode: o *= gate, in place, after the dense driver. */
static void gate_in_place(const ela_attn_nsa_args *na, int threads) {
    const ela_attn_dense_args *a = &na->attn;
    const ela_tensor *gt = na->gate;
    ela_dtype odt = a->o->dtype;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < a->L; i++) {
        for (int64_t h = 0; h < a->hq; h++) {
            float gamma = *(const float *)(const void *)(cpu_tensor_data(gt) +
                                                         i * gt->strides[0] + h * gt->strides[1]);
            char *dst = cpu_tensor_data(a->o) + i * a->o->strides[0] + h * a->o->strides[1];
            if (odt == ELA_F32) {
                float *o = (float *)(void *)dst;
                for (int64_t c = 0; c < a->d; c++)
                    o[c] *= gamma;
            } else if (odt == ELA_F16) {
                uint16_t *o = (uint16_t *)(void *)dst;
                for (int64_t c = 0; c < a->d; c++)
                    o[c] = ela_f32_to_f16(ela_f16_to_f32(o[c]) * gamma);
            } else {
                uint16_t *o = (uint16_t *)(void *)dst;
                for (int64_t c = 0; c < a->d; c++)
                    o[c] = ela_f32_to_bf16(ela_bf16_to_f32(o[c]) * gamma);
            }
        }
    }
}

ela_status cpu_attn_nsa(void *ctx, const ela_attn_nsa_args *na) {
    const cpu_backend *cpu = ctx;
    const ela_attn_dense_args *a = &na->attn;
    if (!na->blocks) {
        ela_status st = cpu_attn_dense(ctx, a);
        if (st == ELA_OK && na->gate) {
            int threads = a->L < cpu->threads ? (int)a->L : cpu->threads;
            gate_in_place(na, threads);
        }
        return st;
    }
    plan p;
    p.na = na;
    p.a = a;
    p.kern = cpu->attn;
    p.G = a->hq / a->hkv;
    p.dp = round_up(a->d, CPU_ATTN_DPAD);
    p.Gr = round_up(p.G, 16);
    p.nkb = (a->n + na->block - 1) / na->block;
    /* The scalar level converts f16/bf16 in software: there one f32 copy shared by the G
     * rows beats converting each key once per row (3-4x at G = 4, d = 128). */
    p.rows_path = p.G <= CPU_ATTN_ROWS_FAST && a->d % CPU_ATTN_DPAD == 0 && p.kern->qk_rows &&
                  p.kern->pv_rows && (cpu->level != CPU_LEVEL_SCALAR || a->k->dtype == ELA_F32);
    int64_t n_items = a->L * a->hkv;
    int threads = n_items < cpu->threads ? (int)n_items : cpu->threads;
    int64_t per_thread = round_up(scratch_floats(&p), 16);
    float *mem = ela_aligned_alloc((size_t)(per_thread * threads) * sizeof(float));
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: attn_nsa: out of memory for %d thread tiles", threads);
    /* The validation pass borrows the start of each thread's scratch for its sorted lists. */
    ela_status st = check_blocks(&p, threads, (int32_t *)(void *)mem);
    if (st == ELA_OK) {
#pragma omp parallel num_threads(threads)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            float *scratch = mem + per_thread * tid;
#pragma omp for schedule(dynamic, 4)
            for (int64_t x = 0; x < n_items; x++)
                run_item(&p, scratch, x / a->hkv, x % a->hkv);
        }
    }
    ela_aligned_free(mem);
    return st;
}

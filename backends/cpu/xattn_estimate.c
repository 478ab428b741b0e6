/* CPU XAttention block selection (op 3: DESIGN.md 4.3, PAPERS.md 5.1): antidiagonal stride-S
 * reduction, reduced causal softmax, 128x128 block sums and the threshold selection per
 * query-block row, for the listed query heads.
 *
 * The reduced scores are a GEMM: with reduced query row m = concat(q[mS+S-1], ..., q[mS]) and
 * reduced key row c = concat(k[cS], ..., k[cS+S-1]) (each token row zero-padded to dpad floats,
 * rows past L or n zero), R = Qr Kr^T over a depth of S * dpad floats (padded to Dp, a multiple
 * of 64). It runs on the kernel table's pv (O += P V, outer-product form: per depth step one
 * broadcast of P per row and one load of V per 16 columns, no horizontal reductions) with P =
 * a 64-deep slice of Qr ([slice][row][64]) and V = the same slice of Kr transposed: KrT of a KV
 * head is [64-column tile][Dp][64], so one (slice, tile) block of V is 16 KiB, stays in L1 while
 * every row of the item uses it, and the kernel runs near the FMA peak (the qk form over depth
 * chunks of 64 key rows, which do not fit L1, reached ~60% of it).
 * KrT is built once per KV head (in passes of a few KV heads, ~16 MiB each, so it stays in the
 * last-level cache) and shared by the G query heads and every query block. The scale / S and
 * log2(e) are folded into Qr, so the kernel table's online softmax gives exp2 probabilities.
 * Per row and key block the probability mass is kept as (sum, the row max it is relative to),
 * so no row of R is ever stored: memory is O(rows x key blocks), never L x n.
 *
 * Work items: (KV head, a run of query blocks) carrying every listed head of that KV head, about
 * ROWS_TARGET reduced rows, so each pass over KrT feeds that many rows (f32 KrT from memory
 * would otherwise bound it). Largest first (the last query blocks see the most columns),
 * dynamic. An item's rows are ordered by reduced position (query block, row, head), so the rows
 * that a column tile lies wholly past are a prefix that the tile skips.
 * Bound: L n d / (2 S) FMAs for the causal half, 1 / (2 S) of dense attention's L n d, at the pv
 * kernel's speed, plus one exp2 per reduced score. Measured at L = n = 32K, Hq 32 (all listed),
 * Hkv 8, d 128, f16, S 16 on the 2-core AVX-512 machine: ~1.4 s, ~85% of its FMA peak counting
 * only the causal half (the qk form with 32-row items: 2.0 s).
 *
 * Selection, per head and query block I (absolute M): key block 0 and block M (when M < nkb)
 * are kept and counted first; the other causal blocks are taken in descending mass, equal masses
 * by lower block index first, while the kept mass is below threshold * the row's total. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634
#define BLOCK ELA_BLOCK
#define BK CPU_ATTN_BK
#define SLICE BK                      /* depth per pv call: P's row stride is BK */
/* Rows per item, all in one pass over KrT: each (slice, tile) block of V is then used by 128
 * rows while in L1, which brings KrT's last-level-cache traffic down to ~1 byte per 32 FMAs.
 * Measured at L = n = 32K, Hq 32 (16 listed heads), Hkv 8, d 128, f16, S 16 on the 2-core
 * AVX-512 machine: 128 and 256 rows 0.64 s, 32 rows 0.80 s (the qk form: 1.0 s). */
#define ROWS_TARGET 128               /* reduced rows per item */
#define RG ROWS_TARGET                /* reduced rows per pv call */
#define KR_BUDGET ((int64_t)16 << 20) /* bytes of Kr per pass */

typedef struct {
    int g;                /* KV head */
    int64_t qb_lo, qb_hi; /* query blocks, relative to row 0 */
    int64_t cost;
} xitem;

typedef struct {
    const ela_xattn_estimate_args *a;
    const cpu_attn_kernels *kern;
    int64_t S, rpb, dpad, Dp, nrk, nct, qb0, G;
    float qscale;
    int *hidx;            /* indices into a->heads, grouped by KV head */
    int *gstart, *gcount; /* [hkv]: hidx[gstart[g] .. + gcount[g]) use KV head g */
    int *slot;            /* [hkv]: KV head's Kr slot in the current pass, -1 when absent */
    int64_t rows_max, tgt_max;
    const char *q, *k;
    char *masks;
    float *Kr;            /* current pass, transposed: [slot][column tile][Dp][BK] */
} xplan;

typedef struct {
    float *Qr;      /* [Dp / SLICE][rows][SLICE] */
    float *Sacc, *m, *l, *alpha, *ones; /* [RG x BK], [RG] x 4 */
    float *tmp;     /* [max(BK, S) x dpad]: token rows before they are transposed or sliced */
    float *sJ, *mref;                   /* [RG][nkb] */
    double *A;                          /* [tgt_max][nkb] */
    int64_t *row_a, *row_tgt;           /* [rows_max] */
    struct cand { double mass; int64_t J; } *cand; /* [nkb] */
} xscratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t kr_floats(const xplan *p) { return p->nct * p->Dp * BK; }

static int64_t tmp_floats(const xplan *p) {
    return (BK > p->S ? BK : p->S) * p->dpad + p->Dp;
}

/* Bytes of one thread's scratch, each piece rounded to 64 bytes. */
static int64_t scratch_bytes(const xplan *p) {
    int64_t nkb = p->a->nkb;
    return round_up(p->Dp * p->rows_max * 4, 64) + round_up(RG * BK * 4, 64) +
           4 * round_up(RG * 4, 64) + round_up(tmp_floats(p) * 4, 64) +
           2 * round_up(RG * nkb * 4, 64) +
           round_up(p->tgt_max * nkb * 8, 64) + 2 * round_up(p->rows_max * 8, 64) +
           round_up(nkb * (int64_t)sizeof(struct cand), 64);
}

static xscratch carve(char *base, const xplan *p) {
    int64_t nkb = p->a->nkb;
    xscratch s;
#define TAKE(ptr, bytes)                                                                        \
    do {                                                                                        \
        (ptr) = (void *)base;                                                                   \
        base += round_up((bytes), 64);                                                          \
    } while (0)
    TAKE(s.Qr, p->Dp * p->rows_max * 4);
    TAKE(s.Sacc, RG * BK * 4);
    TAKE(s.m, RG * 4);
    TAKE(s.l, RG * 4);
    TAKE(s.alpha, RG * 4);
    TAKE(s.ones, RG * 4);
    TAKE(s.tmp, tmp_floats(p) * 4);
    TAKE(s.sJ, RG * nkb * 4);
    TAKE(s.mref, RG * nkb * 4);
    TAKE(s.A, p->tgt_max * nkb * 8);
    TAKE(s.row_a, p->rows_max * 8);
    TAKE(s.row_tgt, p->rows_max * 8);
    TAKE(s.cand, nkb * (int64_t)sizeof(struct cand));
#undef TAKE
    for (int64_t r = 0; r < RG; r++)
        s.ones[r] = 1.0f;
    return s;
}

/* Reduced rows of query block qb (relative) that hold at least one query. */
static int64_t block_rows(const xplan *p, int64_t qb) {
    int64_t left = p->a->L - qb * BLOCK, rows = (left + p->S - 1) / p->S;
    return rows < p->rpb ? rows : p->rpb;
}

/* Query blocks per item for a KV head with gc listed heads. */
static int64_t blocks_per_item(const xplan *p, int64_t gc) {
    int64_t qpi = ROWS_TARGET / (gc * p->rpb);
    return qpi < 1 ? 1 : qpi;
}

/* Column tiles [t0, t1) of KV head g's KrT: depth i dpad + c of reduced key column col holds
 * channel c of token col S + i (zero past n, past d and past S dpad). Per sub-row i the tile's
 * 64 tokens (S rows apart) are converted into tmp, then transposed. */
static void fill_kr(const xplan *p, xscratch *s, int g, int64_t t0, int64_t t1) {
    const ela_xattn_estimate_args *a = p->a;
    const int64_t S = p->S, dpad = p->dpad, k1 = a->k->strides[1];
    const char *kh = p->k + g * a->k->strides[0];
    for (int64_t t = t0; t < t1; t++) {
        float *dst = p->Kr + (int64_t)p->slot[g] * kr_floats(p) + t * p->Dp * BK;
        for (int64_t i = 0; i < S; i++) {
            int64_t first = t * BK * S + i; /* token of column 0 */
            int64_t valid = first < a->n ? (a->n - first + S - 1) / S : 0;
            valid = valid > BK ? BK : valid;
            if (valid > 0)
                p->kern->load_rows(s->tmp, dpad, kh + first * k1, S * k1, a->k->dtype, valid,
                                   a->d);
            for (int64_t c = 0; c < dpad; c++) {
                float *row = dst + (i * dpad + c) * BK;
                int64_t col = 0;
                for (; col < valid; col++)
                    row[col] = s->tmp[col * dpad + c];
                for (; col < BK; col++)
                    row[col] = 0.0f;
            }
        }
        memset(dst + S * dpad * BK, 0, (size_t)((p->Dp - S * dpad) * BK) * sizeof(float));
    }
}

/* Qr row r for reduced row m of query block qb, head h: depth i dpad + c holds channel c of
 * query qb*128 + m*S + S-1-i (zero past L), scaled by qscale; sliced into [slice][rows][64]. */
static void load_qr(const xplan *p, xscratch *s, int64_t rows, int64_t r, int64_t qb, int64_t m,
                    int h) {
    const ela_xattn_estimate_args *a = p->a;
    const int64_t q0 = a->q->strides[0], S = p->S, dpad = p->dpad;
    const char *qh = p->q + (int64_t)h * a->q->strides[1];
    int64_t top = qb * BLOCK + m * S + S - 1;  /* query of sub-row 0 */
    int64_t zero = top - (a->L - 1);           /* leading sub-rows past L */
    zero = zero < 0 ? 0 : zero > S ? S : zero;
    float *t = s->tmp;
    memset(t, 0, (size_t)(zero * dpad) * sizeof(float));
    if (zero < S)
        p->kern->load_rows(t + zero * dpad, dpad, qh + (top - zero) * q0, -q0, a->q->dtype,
                           S - zero, a->d);
    memset(t + S * dpad, 0, (size_t)(p->Dp - S * dpad) * sizeof(float));
    for (int64_t x = zero * dpad; x < S * dpad; x++)
        t[x] *= p->qscale;
    for (int64_t sl = 0; sl < p->Dp / SLICE; sl++)
        memcpy(s->Qr + (sl * rows + r) * SLICE, t + sl * SLICE, SLICE * sizeof(float));
}

/* Reduced rows [r0, r1) of the item (all on KV head g): scores against Kr, online softmax,
 * block masses added to s->A[row_tgt]. The rows' row_a ascend, so the rows that see no column
 * of a tile (causal) are a prefix, which the tile skips: only the triangle is computed, to
 * 64-column granularity. */
static void run_rows(const xplan *p, xscratch *s, int g, int64_t rows, int64_t r0, int64_t r1) {
    const cpu_attn_kernels *kern = p->kern;
    int64_t R = r1 - r0, nkb = p->a->nkb, rpb = p->rpb;
    const float *kr = p->Kr + (int64_t)p->slot[g] * kr_floats(p);
    int64_t cend = 0;
    for (int64_t r = r0; r < r1; r++) {
        int64_t e = s->row_a[r] + 1 < p->nrk ? s->row_a[r] + 1 : p->nrk;
        cend = e > cend ? e : cend;
    }
    for (int64_t r = 0; r < R; r++) {
        s->m[r] = -INFINITY;
        s->l[r] = 0.0f;
    }
    int64_t first = 0; /* rows [0, first) see no column >= c0 */
    for (int64_t c0 = 0; c0 < cend; c0 += BK) {
        int64_t nk = cend - c0 < BK ? cend - c0 : BK;
        const float *V = kr + (c0 / BK) * p->Dp * BK; /* the column tile, [Dp][BK] */
        while (first < R && s->row_a[r0 + first] < c0)
            first++;
        const int64_t Rt = R - first; /* >= 1: the last row sees column cend - 1 >= c0 */
        memset(s->Sacc + first * BK, 0, (size_t)(Rt * BK) * sizeof(float));
        for (int64_t sl = 0; sl < p->Dp / SLICE; sl++) /* columns past nk are zero keys */
            kern->pv(s->Sacc + first * BK, s->Qr + (sl * rows + r0 + first) * SLICE,
                     V + sl * SLICE * BK, s->ones, Rt, SLICE, BK);
        for (int64_t r = first; r < R; r++) { /* causal in reduced space: c <= row */
            int64_t nv = s->row_a[r0 + r] - c0 + 1;
            for (int64_t j = nv < 0 ? 0 : nv; j < nk; j++)
                s->Sacc[r * BK + j] = -INFINITY;
        }
        kern->softmax(s->Sacc + first * BK, s->m + first, s->l + first, s->alpha + first, Rt,
                      nk);
        for (int64_t r = first; r < R; r++) {
            int64_t nv = s->row_a[r0 + r] - c0 + 1;
            nv = nv > nk ? nk : nv;
            const float *P = s->Sacc + r * BK;
            float *sJ = s->sJ + r * nkb, *mref = s->mref + r * nkb;
            for (int64_t j = 0; j < nv;) {
                int64_t J = (c0 + j) / rpb, e = (J + 1) * rpb - c0;
                e = e < nv ? e : nv;
                float sum = 0.0f;
                for (; j < e; j++)
                    sum += P[j];
                if (J * rpb < c0) /* block began in the previous tile, relative to its max */
                    sJ[J] = sJ[J] * exp2f(mref[J] - s->m[r]) + sum;
                else
                    sJ[J] = sum;
                mref[J] = s->m[r];
            }
        }
    }
    for (int64_t r = 0; r < R; r++) {
        int64_t last = s->row_a[r0 + r] < p->nrk - 1 ? s->row_a[r0 + r] : p->nrk - 1;
        double inv = 1.0 / (double)s->l[r];
        double *A = s->A + s->row_tgt[r0 + r] * nkb;
        const float *sJ = s->sJ + r * nkb, *mref = s->mref + r * nkb;
        for (int64_t J = 0; J <= last / rpb; J++)
            A[J] += (double)sJ[J] * exp2((double)mref[J] - (double)s->m[r]) * inv;
    }
}

/* The order blocks are taken in: larger mass first, equal masses lower block first. */
static int cand_before(const struct cand *a, const struct cand *b) {
    return a->mass != b->mass ? a->mass > b->mass : a->J < b->J;
}

static void cand_sift(struct cand *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && cand_before(&h[c + 1], &h[c]))
            c++;
        if (!cand_before(&h[c], &h[i]))
            return;
        struct cand t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

/* Threshold selection of one query-block row; writes the mask row, returns kept blocks. */
static int64_t select_row(const xplan *p, xscratch *s, const double *A, int64_t qb, int hi) {
    const ela_xattn_estimate_args *a = p->a;
    int64_t nkb = a->nkb, M = p->qb0 + qb, last = M < nkb - 1 ? M : nkb - 1;
    uint8_t *out = (uint8_t *)(p->masks + hi * a->masks->strides[0] + qb * a->masks->strides[1]);
    memset(out, 0, (size_t)nkb);
    double total = 0.0;
    for (int64_t J = 0; J <= last; J++)
        total += A[J];
    double target = (double)a->threshold * total, have = A[0];
    int64_t kept = 1, nc = 0;
    out[0] = 1;
    if (M < nkb && M != 0) {
        out[M] = 1;
        have += A[M];
        kept++;
    }
    for (int64_t J = 1; J <= last; J++)
        if (J != M) {
            s->cand[nc].mass = A[J];
            s->cand[nc++].J = J;
        }
    /* a heap, popped in order only as far as the threshold needs (rows keep few blocks) */
    struct cand *h = s->cand;
    for (int64_t i = nc / 2 - 1; i >= 0; i--)
        cand_sift(h, nc, i);
    while (nc > 0 && have < target) {
        out[h[0].J] = 1;
        have += h[0].mass;
        kept++;
        h[0] = h[--nc];
        cand_sift(h, nc, 0);
    }
    return kept;
}

/* One item: build its reduced query rows, score them in row groups, select per head and block. */
static int64_t run_item(const xplan *p, xscratch *s, const xitem *it) {
    const ela_xattn_estimate_args *a = p->a;
    int64_t gc = p->gcount[it->g], nkb = a->nkb, rows = 0;
    const int *hl = p->hidx + p->gstart[it->g];
    for (int64_t qb = it->qb_lo; qb < it->qb_hi; qb++)
        rows += gc * block_rows(p, qb);
    int64_t r = 0;
    for (int64_t qb = it->qb_lo; qb < it->qb_hi; qb++) /* row_a ascending: see run_rows */
        for (int64_t m = 0; m < block_rows(p, qb); m++)
            for (int64_t hh = 0; hh < gc; hh++, r++) {
                load_qr(p, s, rows, r, qb, m, a->heads[hl[hh]]);
                s->row_a[r] = (p->qb0 + qb) * p->rpb + m;
                s->row_tgt[r] = (qb - it->qb_lo) * gc + hh;
            }
    memset(s->A, 0, (size_t)((it->qb_hi - it->qb_lo) * gc * nkb) * sizeof(double));
    for (int64_t r0 = 0; r0 < rows; r0 += RG)
        run_rows(p, s, it->g, rows, r0, r0 + RG < rows ? r0 + RG : rows);
    int64_t kept = 0;
    for (int64_t qb = it->qb_lo; qb < it->qb_hi; qb++)
        for (int64_t hh = 0; hh < gc; hh++)
            kept += select_row(p, s, s->A + ((qb - it->qb_lo) * gc + hh) * nkb, qb, hl[hh]);
    return kept;
}

static int cmp_items(const void *x, const void *y) {
    const xitem *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    if (a->g != b->g)
        return a->g < b->g ? -1 : 1;
    return (a->qb_lo > b->qb_lo) - (a->qb_lo < b->qb_lo);
}

/* Items of KV heads [g0, g1) (those with listed heads) into items; returns the count. */
static int64_t make_items(const xplan *p, int g0, int g1, xitem *items) {
    int64_t n = 0;
    for (int g = g0; g < g1; g++) {
        if (p->gcount[g] == 0)
            continue;
        int64_t qpi = blocks_per_item(p, p->gcount[g]);
        for (int64_t qb = 0; qb < p->a->nqb; qb += qpi, n++) {
            xitem *it = &items[n];
            it->g = g;
            it->qb_lo = qb;
            it->qb_hi = qb + qpi < p->a->nqb ? qb + qpi : p->a->nqb;
            it->cost = (it->qb_hi - qb) * p->gcount[g] * p->rpb * (p->qb0 + it->qb_hi) * p->rpb;
        }
    }
    return n;
}

ela_status cpu_xattn_estimate(void *ctx, const ela_xattn_estimate_args *a) {
    const cpu_backend *cpu = ctx;
    xplan p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.kern = cpu->attn;
    p.S = a->stride;
    p.rpb = BLOCK / p.S;
    p.dpad = round_up(a->d, CPU_ATTN_DPAD);
    p.Dp = round_up(p.S * p.dpad, SLICE);
    p.nrk = (a->n + p.S - 1) / p.S;
    p.nct = (p.nrk + BK - 1) / BK;
    p.qb0 = a->q_pos0 / BLOCK;
    p.G = a->hq / a->hkv;
    p.qscale = (float)((double)a->scale / (double)p.S * LOG2E);
    p.q = cpu_tensor_data(a->q);
    p.k = cpu_tensor_data(a->k);
    p.masks = cpu_tensor_data(a->masks);

    int hkv = a->hkv;
    xitem *items = NULL;
    char *mem = NULL;
    int *ints = ela_calloc((size_t)(a->n_heads + 3 * hkv), sizeof(int));
    if (!ints)
        goto oom;
    p.hidx = ints;
    p.gstart = ints + a->n_heads;
    p.gcount = p.gstart + hkv;
    p.slot = p.gcount + hkv;
    for (int i = 0; i < a->n_heads; i++)
        p.gcount[a->heads[i] / p.G]++;
    for (int g = 0, at = 0; g < hkv; g++) {
        p.gstart[g] = at;
        at += p.gcount[g];
        p.gcount[g] = 0;
    }
    for (int i = 0; i < a->n_heads; i++) {
        int g = a->heads[i] / (int)p.G;
        p.hidx[p.gstart[g] + p.gcount[g]++] = i;
    }
    int64_t n_items_max = 0;
    for (int g = 0; g < hkv; g++) {
        if (p.gcount[g] == 0)
            continue;
        int64_t qpi = blocks_per_item(&p, p.gcount[g]);
        int64_t rows = qpi * p.gcount[g] * p.rpb;
        p.rows_max = rows > p.rows_max ? rows : p.rows_max;
        p.tgt_max = qpi * p.gcount[g] > p.tgt_max ? qpi * p.gcount[g] : p.tgt_max;
        n_items_max += (a->nqb + qpi - 1) / qpi;
    }
    /* Passes: consecutive KV heads (with listed heads) whose Kr fits the budget together. */
    int64_t kr_bytes = kr_floats(&p) * (int64_t)sizeof(float);
    int per_pass = (int)(KR_BUDGET / kr_bytes > 1 ? KR_BUDGET / kr_bytes : 1);
    int used = 0;
    for (int g = 0; g < hkv; g++)
        used += p.gcount[g] > 0;
    if (per_pass > used)
        per_pass = used;
    items = ela_calloc((size_t)n_items_max, sizeof *items);
    if (!items)
        goto oom;
    int threads = cpu->threads;
    int64_t per_thread = round_up(scratch_bytes(&p), 64);
    mem = ela_aligned_alloc((size_t)(kr_bytes * per_pass + per_thread * threads));
    if (!mem)
        goto oom;
    p.Kr = (float *)(void *)mem;
    char *thread_mem = mem + kr_bytes * per_pass;

    int64_t kept = 0;
    for (int g0 = 0; g0 < hkv;) {
        int g1 = g0, in_pass = 0;
        for (; g1 < hkv && in_pass < per_pass; g1++) {
            p.slot[g1] = p.gcount[g1] > 0 ? in_pass : -1;
            in_pass += p.gcount[g1] > 0;
        }
        int64_t n_items = make_items(&p, g0, g1, items);
        qsort(items, (size_t)n_items, sizeof *items, cmp_items);
        int64_t fill_chunks = (int64_t)in_pass * ((p.nct + 3) / 4);
#pragma omp parallel num_threads(threads) reduction(+ : kept)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            xscratch s = carve(thread_mem + per_thread * tid, &p);
#pragma omp for schedule(dynamic, 1)
            for (int64_t f = 0; f < fill_chunks; f++) { /* 4 column tiles each */
                int64_t per = (p.nct + 3) / 4, want = f / per, t0 = (f % per) * 4;
                int g = g0;
                for (; g < g1; g++) /* the want-th KV head of the pass */
                    if (p.slot[g] == want)
                        break;
                fill_kr(&p, &s, g, t0, t0 + 4 < p.nct ? t0 + 4 : p.nct);
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < n_items; i++)
                kept += run_item(&p, &s, &items[i]);
        }
        g0 = g1;
    }
    if (a->kept_blocks)
        *a->kept_blocks = kept;
    ela_aligned_free(mem);
    ela_free(items);
    ela_free(ints);
    return ELA_OK;
oom:
    ela_free(items);
    ela_free(ints);
    return ela_fail(ELA_ERR_OOM, "cpu: xattn_estimate: out of memory for the reduced keys and "
                    "thread scratch");
}

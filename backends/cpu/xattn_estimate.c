/* CPU XAttention block selection (op 3: DESIGN.md 4.3, PAPERS.md 5.1): antidiagonal stride-S
 * reduction, reduced causal softmax, 128x128 block sums and the threshold selection per
 * query-block row, for the listed query heads.
 *
 * The reduced scores are a GEMM: with reduced query row m = concat(q[mS+S-1], ..., q[mS]) and
 * reduced key row c = concat(k[cS], ..., k[cS+S-1]) (each token row zero-padded to dpad floats,
 * rows past L or n zero), R = Qr Kr^T over rows of S * dpad floats. Kr of a KV head is simply
 * its keys converted to f32 in order, cut into depth chunks of T tokens so that one chunk of a
 * 64-column tile stays in L2: layout [chunk][reduced key row][T * dpad]. It is built once per KV
 * head (in passes of a few KV heads, ~16 MiB of Kr each, so it stays in the last-level cache)
 * and shared by the G query heads and every query block. The kernel table's qk (tiles of 64
 * reduced columns, summed over the chunks) computes R; the scale / S and log2(e) are folded into
 * Qr, so the kernel table's online softmax gives exp2 probabilities. Per row and key block the
 * probability mass is kept as (sum, the row max it is relative to), so no row of R is ever
 * stored: memory is O(rows x key blocks), never L x n.
 *
 * Work items: (KV head, a run of query blocks) carrying every listed head of that KV head, about
 * ROWS_TARGET reduced rows, so each pass over Kr feeds that many rows (f32 Kr from memory would
 * otherwise bound it). Largest first (the last query blocks see the most columns), dynamic.
 * Bound: L n d / (2 S) FMAs for the causal half, 1 / (2 S) of dense attention's L n d, at the qk
 * kernel's speed, plus one exp2 per reduced score. Measured at L = n = 32K, Hq 32, Hkv 8, d 128,
 * f16, S 16 on 16 Xeon AVX-512 cores: 0.22 s, about half the FMA peak, 3% of ela_attn_dense.
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
/* Measured at L = 32K, Hq 32, Hkv 8, d 128 on 16 Xeon AVX-512 cores: depth 512 with 32 rows
 * beat depth 128/256/2048 (4-30% slower) and 16 or 64 rows (2-35% slower). */
#define DEPTH_TARGET 512              /* floats per depth chunk of a reduced row */
#define ROWS_TARGET 32                /* reduced rows per item */
#define RG 32                         /* reduced rows per qk call */
#define KR_BUDGET ((int64_t)16 << 20) /* bytes of Kr per pass */

typedef struct {
    int g;                /* KV head */
    int64_t qb_lo, qb_hi; /* query blocks, relative to row 0 */
    int64_t cost;
} xitem;

typedef struct {
    const ela_xattn_estimate_args *a;
    const cpu_attn_kernels *kern;
    int64_t S, rpb, dpad, T, nch, Dc, nrk, qb0, G;
    float qscale;
    int *hidx;            /* indices into a->heads, grouped by KV head */
    int *gstart, *gcount; /* [hkv]: hidx[gstart[g] .. + gcount[g]) use KV head g */
    int *slot;            /* [hkv]: KV head's Kr slot in the current pass, -1 when absent */
    int64_t rows_max, tgt_max;
    const char *q, *k;
    char *masks;
    float *Kr;            /* current pass: [slot][chunk][nrk][Dc] */
} xplan;

typedef struct {
    float *Qr;      /* [nch][rows][Dc] */
    float *Sacc, *Stmp, *m, *l, *alpha; /* [RG x BK], [RG x BK], [RG] x 3 */
    float *sJ, *mref;                   /* [RG][nkb] */
    double *A;                          /* [tgt_max][nkb] */
    int64_t *row_a, *row_tgt;           /* [rows_max] */
    struct cand { double mass; int64_t J; } *cand; /* [nkb] */
} xscratch;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static int64_t kr_floats(const xplan *p) { return p->nch * p->nrk * p->Dc; }

/* Bytes of one thread's scratch, each piece rounded to 64 bytes. */
static int64_t scratch_bytes(const xplan *p) {
    int64_t nkb = p->a->nkb;
    return round_up(p->nch * p->rows_max * p->Dc * 4, 64) + 2 * round_up(RG * BK * 4, 64) +
           3 * round_up(RG * 4, 64) + 2 * round_up(RG * nkb * 4, 64) +
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
    TAKE(s.Qr, p->nch * p->rows_max * p->Dc * 4);
    TAKE(s.Sacc, RG * BK * 4);
    TAKE(s.Stmp, RG * BK * 4);
    TAKE(s.m, RG * 4);
    TAKE(s.l, RG * 4);
    TAKE(s.alpha, RG * 4);
    TAKE(s.sJ, RG * nkb * 4);
    TAKE(s.mref, RG * nkb * 4);
    TAKE(s.A, p->tgt_max * nkb * 8);
    TAKE(s.row_a, p->rows_max * 8);
    TAKE(s.row_tgt, p->rows_max * 8);
    TAKE(s.cand, nkb * (int64_t)sizeof(struct cand));
#undef TAKE
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

/* Kr rows [c0, c1) of KV head g into its slot: chunk ch of reduced row c holds tokens
 * cS + ch T .. + T - 1, zero past n. */
static void fill_kr(const xplan *p, int g, int64_t c0, int64_t c1) {
    const ela_xattn_estimate_args *a = p->a;
    float *base = p->Kr + (int64_t)p->slot[g] * kr_floats(p);
    const char *kh = p->k + g * a->k->strides[0];
    int64_t k1 = a->k->strides[1];
    for (int64_t c = c0; c < c1; c++)
        for (int64_t ch = 0; ch < p->nch; ch++) {
            float *dst = base + (ch * p->nrk + c) * p->Dc;
            int64_t t0 = c * p->S + ch * p->T, valid = a->n - t0;
            valid = valid < 0 ? 0 : valid > p->T ? p->T : valid;
            if (valid > 0)
                p->kern->load_rows(dst, p->dpad, kh + t0 * k1, k1, a->k->dtype, valid, a->d);
            if (valid < p->T)
                memset(dst + valid * p->dpad, 0, (size_t)((p->T - valid) * p->dpad) * sizeof(float));
        }
}

/* Qr row r for reduced row m of query block qb, head h: sub-row i holds query
 * qb*128 + m*S + S-1-i (zero past L), scaled by qscale. */
static void load_qr(const xplan *p, float *Qr, int64_t rows, int64_t r, int64_t qb, int64_t m,
                    int h) {
    const ela_xattn_estimate_args *a = p->a;
    int64_t q0 = a->q->strides[0];
    const char *qh = p->q + (int64_t)h * a->q->strides[1];
    int64_t top = qb * BLOCK + m * p->S + p->S - 1; /* query of sub-row 0 */
    for (int64_t ch = 0; ch < p->nch; ch++) {
        float *dst = Qr + (ch * rows + r) * p->Dc;
        int64_t first = top - ch * p->T;                  /* query of the chunk's sub-row 0 */
        int64_t zero = first - (a->L - 1);                /* leading sub-rows past L */
        zero = zero < 0 ? 0 : zero > p->T ? p->T : zero;
        if (zero > 0)
            memset(dst, 0, (size_t)(zero * p->dpad) * sizeof(float));
        if (zero < p->T)
            p->kern->load_rows(dst + zero * p->dpad, p->dpad, qh + (first - zero) * q0, -q0,
                               a->q->dtype, p->T - zero, a->d);
        for (int64_t x = zero * p->dpad; x < p->Dc; x++)
            dst[x] *= p->qscale;
    }
}

/* Reduced rows [r0, r1) of the item (all on KV head g): scores against Kr, online softmax,
 * block masses added to s->A[row_tgt]. */
static void run_rows(const xplan *p, xscratch *s, int g, int64_t rows, int64_t r0, int64_t r1) {
    const cpu_attn_kernels *kern = p->kern;
    int64_t R = r1 - r0, nkb = p->a->nkb, rpb = p->rpb, Dc = p->Dc;
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
    for (int64_t c0 = 0; c0 < cend; c0 += BK) {
        int64_t nk = cend - c0 < BK ? cend - c0 : BK;
        for (int64_t ch = 0; ch < p->nch; ch++) {
            const float *Q = s->Qr + (ch * rows + r0) * Dc, *K = kr + (ch * p->nrk + c0) * Dc;
            if (ch == 0) {
                kern->qk(s->Sacc, Q, K, R, nk, Dc);
                continue;
            }
            kern->qk(s->Stmp, Q, K, R, nk, Dc);
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < nk; j++)
                    s->Sacc[r * BK + j] += s->Stmp[r * BK + j];
        }
        for (int64_t r = 0; r < R; r++) { /* causal in reduced space: c <= row */
            int64_t nv = s->row_a[r0 + r] - c0 + 1;
            for (int64_t j = nv < 0 ? 0 : nv; j < nk; j++)
                s->Sacc[r * BK + j] = -INFINITY;
        }
        kern->softmax(s->Sacc, s->m, s->l, s->alpha, R, nk);
        for (int64_t r = 0; r < R; r++) {
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

static int cmp_cand(const void *x, const void *y) {
    const struct cand *a = x, *b = y;
    if (a->mass != b->mass)
        return a->mass > b->mass ? -1 : 1;
    return (a->J > b->J) - (a->J < b->J);
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
    qsort(s->cand, (size_t)nc, sizeof *s->cand, cmp_cand);
    for (int64_t i = 0; i < nc && have < target; i++) {
        out[s->cand[i].J] = 1;
        have += s->cand[i].mass;
        kept++;
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
    for (int64_t qb = it->qb_lo; qb < it->qb_hi; qb++)
        for (int64_t hh = 0; hh < gc; hh++)
            for (int64_t m = 0; m < block_rows(p, qb); m++, r++) {
                load_qr(p, s->Qr, rows, r, qb, m, a->heads[hl[hh]]);
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
    p.T = 1;
    while (p.T * 2 <= p.S && p.T * 2 * p.dpad <= DEPTH_TARGET)
        p.T *= 2;
    p.nch = p.S / p.T;
    p.Dc = p.T * p.dpad;
    p.nrk = (a->n + p.S - 1) / p.S;
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
        int64_t fill_chunks = (int64_t)in_pass * ((p.nrk + 255) / 256);
#pragma omp parallel num_threads(threads) reduction(+ : kept)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            xscratch s = carve(thread_mem + per_thread * tid, &p);
#pragma omp for schedule(dynamic, 1)
            for (int64_t f = 0; f < fill_chunks; f++) {
                int64_t per = (p.nrk + 255) / 256, want = f / per, c0 = (f % per) * 256;
                int g = g0;
                for (; g < g1; g++) /* the want-th KV head of the pass */
                    if (p.slot[g] == want)
                        break;
                fill_kr(&p, g, c0, c0 + 256 < p.nrk ? c0 + 256 : p.nrk);
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

/* CPU nsa_select (DESIGN.md 4.9, PAPERS.md 4.3 steps 2-5): SSA/NSA block selection per query
 * token and KV head.
 *
 * Two stages. (1) Pooling: the mean of each complete B-key block that any row can reach,
 * kc [Hkv, nkc, dp] in f32 (nkc = (q_pos0 + L) / B), once per call: O(n d Hkv), parallel over
 * blocks. (2) Scoring: work items are (bq consecutive query rows, KV head), R = bq * G query
 * rows sharing the pooled keys of that head (R ~ 64, as in the dense driver). Z = Q kc^T comes
 * from the dense qk kernel in 64-block tiles (Q pre-scaled by scale * log2 e) into a per-thread
 * R x nkc buffer, and every exp2 goes through the dense online-softmax kernel (vectorised):
 * once on a masked copy of each tile for the lse of each head over its NC = (t + 1) / B complete
 * blocks, once on Z itself for P = exp2(z - lse) of the blocks before the current one. The G
 * heads' P summed per query row give s[c]; the current block goes first, then top - 1 more by
 * descending s (ties: lower block first; insertion into a sorted list of top - 1, qsort when
 * top is large). Cost: L * Hq * nkc / 2 * d FMAs for Z, about 1 / (2B) of dense attention's QK
 * + PV; the rest is O(L * Hq * nkc). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define LOG2E 1.4426950408889634f
#define ROWS_TARGET 64               /* query rows per item, as in attn_dense.c */
#define MAX_Z_FLOATS (1 << 20)       /* per-thread Z buffer cap: shrinks bq for very long k */
#define INSERTION_MAX 64             /* top - 1 up to this: insertion into a sorted list */

typedef struct {
    const ela_nsa_select_args *a;
    const cpu_attn_kernels *kern;
    int64_t G, dp, bq, nqb, R, nkc, ldz;
    float *kc;
} plan;

typedef struct {
    float s;
    int32_t c;
} scored;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Descending score, then ascending block: a strict total order on distinct blocks. */
static int scored_cmp(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->s > b->s)
        return -1;
    if (a->s < b->s)
        return 1;
    return (a->c > b->c) - (a->c < b->c);
}

/* Per-thread scratch sizes (floats): Q [R, dp], S [R, BK], Z [ntiles, R, BK] (tile-major, so
 * a tile of Z is a softmax operand in place), m, l, alpha, lse [R], sc [ldz], scored [ldz]. */
static int64_t scratch_floats(const plan *p) {
    int64_t R = round_up(p->R, 16);
    int64_t score = R * p->dp + R * CPU_ATTN_BK + R * p->ldz + 4 * R + p->ldz + 2 * p->ldz;
    int64_t pool = CPU_ATTN_BK * p->dp; /* pool_keys' tile */
    return score > pool ? score : pool;
}

/* kc[g, c] = mean of k rows [c B, (c + 1) B) of KV head g, for c < nkc. */
static void pool_keys(const plan *p, float *tmp, int64_t g, int64_t c) {
    const ela_nsa_select_args *a = p->a;
    const char *kh = cpu_tensor_data(a->k) + g * a->k->strides[0];
    int64_t k1 = a->k->strides[1], B = a->block, dp = p->dp;
    float *dst = p->kc + (g * p->nkc + c) * dp;
    memset(dst, 0, (size_t)dp * sizeof(float));
    for (int64_t j0 = c * B; j0 < (c + 1) * B; j0 += CPU_ATTN_BK) {
        int64_t nk = (c + 1) * B - j0 < CPU_ATTN_BK ? (c + 1) * B - j0 : CPU_ATTN_BK;
        p->kern->load_rows(tmp, dp, kh + j0 * k1, k1, a->k->dtype, nk, a->d);
        for (int64_t j = 0; j < nk; j++)
            for (int64_t x = 0; x < dp; x++)
                dst[x] += tmp[j * dp + x];
    }
    float inv = 1.0f / (float)B;
    for (int64_t x = 0; x < dp; x++)
        dst[x] *= inv;
}

/* Select for query row i (position t) from its group-summed scores sc[0, cur). */
static void select_row(const plan *p, const float *sc, scored *tmp, int64_t t, int32_t *out) {
    const ela_nsa_select_args *a = p->a;
    int64_t cur = t / a->block, K = a->top - 1, kept = 0;
    out[0] = (int32_t)cur;
    if (K > 0 && cur > 0) {
        if (K <= INSERTION_MAX && K < cur) {
            /* tmp[0, kept) sorted by the order of scored_cmp; blocks arrive ascending, so an
             * equal score never moves ahead of an earlier (lower) block. */
            for (int64_t c = 0; c < cur; c++) {
                float v = sc[c];
                if (kept == K && !(v > tmp[K - 1].s))
                    continue;
                int64_t pos = kept < K ? kept++ : K - 1;
                while (pos > 0 && v > tmp[pos - 1].s) {
                    tmp[pos] = tmp[pos - 1];
                    pos--;
                }
                tmp[pos].s = v;
                tmp[pos].c = (int32_t)c;
            }
        } else {
            for (int64_t c = 0; c < cur; c++) {
                tmp[c].s = sc[c];
                tmp[c].c = (int32_t)c;
            }
            qsort(tmp, (size_t)cur, sizeof *tmp, scored_cmp);
            kept = cur < K ? cur : K;
        }
    }
    for (int64_t x = 0; x < kept; x++)
        out[1 + x] = tmp[x].c;
    for (int64_t x = 1 + kept; x < a->top; x++)
        out[x] = -1;
}

/* S[r, j] = -inf for the rows r of queries [i0, i1) with NC <= c0 + j (blocks they do not
 * see as complete), j < nk. */
static void mask_tile(const plan *p, float *S, int64_t i0, int64_t i1, int64_t c0, int64_t nk) {
    const ela_nsa_select_args *a = p->a;
    for (int64_t i = i0; i < i1; i++) {
        int64_t t = a->q_pos0 + i, lim = (t + 1) / a->block;
        if (lim >= c0 + nk)
            continue;
        for (int64_t r = (i - i0) * p->G; r < (i - i0 + 1) * p->G; r++)
            for (int64_t j = lim > c0 ? lim - c0 : 0; j < nk; j++)
                S[r * CPU_ATTN_BK + j] = -INFINITY;
    }
}

/* Rows [i0, i1) of KV head g. Pass 1: Z = Q kc^T tile by tile, and each row's lse over its NC
 * complete blocks by the online softmax kernel on a masked copy. Pass 2: the same kernel on Z
 * itself, started at m = lse, gives P = exp2(z - lse) (z <= lse, so m stays lse) for the blocks
 * before the current one; the G heads' P are summed per query row, which then selects. */
static void run_item(const plan *p, float *scratch, int64_t g, int64_t i0, int64_t i1) {
    const ela_nsa_select_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    int64_t Rr = round_up(p->R, 16), dp = p->dp, G = p->G, B = a->block, BK = CPU_ATTN_BK;
    float *Q = scratch, *S = Q + Rr * dp, *Z = S + Rr * BK, *m = Z + Rr * p->ldz, *l = m + Rr;
    float *alpha = l + Rr, *lse = alpha + Rr, *sc = lse + Rr;
    scored *tmp = (scored *)(void *)(sc + p->ldz);
    int64_t R = (i1 - i0) * G, q0 = a->q->strides[0], q1 = a->q->strides[1];
    const char *qd = cpu_tensor_data(a->q);
    float qscale = a->scale * LOG2E;

    for (int64_t i = i0; i < i1; i++)
        kern->load_rows(Q + (i - i0) * G * dp, dp, qd + i * q0 + g * G * q1, q1, a->q->dtype, G,
                        a->d);
    for (int64_t x = 0; x < R * dp; x++)
        Q[x] *= qscale;
    for (int64_t r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    int64_t nc_max = (a->q_pos0 + i1) / B; /* complete blocks of the last row */
    const float *kch = p->kc + g * p->nkc * dp;
    for (int64_t c0 = 0; c0 < nc_max; c0 += BK) {
        int64_t nk = nc_max - c0 < BK ? nc_max - c0 : BK;
        float *Zt = Z + c0 * R; /* tile c0 / BK: [R, BK] */
        kern->qk(Zt, Q, kch + c0 * dp, R, nk, dp);
        memcpy(S, Zt, (size_t)(R * BK) * sizeof(float));
        mask_tile(p, S, i0, i1, c0, nk);
        kern->softmax(S, m, l, alpha, R, nk);
    }
    for (int64_t r = 0; r < R; r++)
        lse[r] = l[r] > 0.0f ? m[r] + log2f(l[r]) : 0.0f;

    char *bd = cpu_tensor_data(a->blocks);
    /* Pass 2 per query row (sc holds one row's group sums). */
    for (int64_t i = i0; i < i1; i++) {
        int64_t t = a->q_pos0 + i, cur = t / B, r0 = (i - i0) * G;
        for (int64_t c = 0; c < cur; c++)
            sc[c] = 0.0f;
        for (int64_t c0 = 0; c0 < cur; c0 += BK) {
            int64_t nk = cur - c0 < BK ? cur - c0 : BK;
            float *Zt = Z + c0 * R + r0 * BK; /* this row's G heads in tile c0 / BK */
            for (int64_t hh = 0; hh < G; hh++) {
                m[hh] = lse[r0 + hh];
                l[hh] = 0.0f;
            }
            kern->softmax(Zt, m, l, alpha, G, nk);
            for (int64_t hh = 0; hh < G; hh++)
                for (int64_t j = 0; j < nk; j++)
                    sc[c0 + j] += Zt[hh * BK + j];
        }
        int32_t *out = (int32_t *)(void *)(bd + i * a->blocks->strides[0] +
                                           g * a->blocks->strides[1]);
        select_row(p, sc, tmp, t, out);
    }
}

ela_status cpu_nsa_select(void *ctx, const ela_nsa_select_args *a) {
    const cpu_backend *cpu = ctx;
    plan p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.kern = cpu->attn;
    p.G = a->hq / a->hkv;
    p.dp = round_up(a->d, CPU_ATTN_DPAD);
    p.nkc = (a->q_pos0 + a->L) / a->block; /* the validated q_pos0 + L <= n keeps them in k */
    p.ldz = round_up(p.nkc > 0 ? p.nkc : 1, CPU_ATTN_BK);
    p.bq = ROWS_TARGET / p.G > 0 ? ROWS_TARGET / p.G : 1;
    while (p.bq > 1 && p.bq * p.G * p.ldz > MAX_Z_FLOATS)
        p.bq /= 2;
    if (p.bq > a->L)
        p.bq = a->L;
    p.R = p.bq * p.G;
    p.nqb = (a->L + p.bq - 1) / p.bq;

    int64_t n_items = p.nqb * a->hkv, n_pool = a->hkv * p.nkc;
    int threads = cpu->threads;
    if (n_items < threads && n_pool < threads)
        threads = (int)(n_items > n_pool ? n_items : n_pool);
    int64_t per_thread = round_up(scratch_floats(&p), 16);
    int64_t kc_floats = round_up(n_pool * p.dp, 16);
    float *mem = ela_aligned_alloc((size_t)(kc_floats + per_thread * threads) * sizeof(float));
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: nsa_select: out of memory for %lld pooled keys and %d "
                        "thread buffers", (long long)n_pool, threads);
    p.kc = mem;

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *scratch = mem + kc_floats + per_thread * tid;
#pragma omp for schedule(static)
        for (int64_t x = 0; x < n_pool; x++)
            pool_keys(&p, scratch, x / p.nkc, x % p.nkc);
        /* Later rows see more blocks: largest items first. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            int64_t grp = n_items - 1 - item, qb = grp / a->hkv, g = grp % a->hkv;
            int64_t i0 = qb * p.bq, i1 = i0 + p.bq < a->L ? i0 + p.bq : a->L;
            run_item(&p, scratch, g, i0, i1);
        }
    }
    ela_aligned_free(mem);
    return ELA_OK;
}

/* Float64 scalar reference of ela_xattn_estimate (see xattn_estimate_ref.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xattn_estimate_ref.h"

#define BLK 128

typedef struct {
    double mass;
    int64_t J;
} cand;

/* Descending mass, then ascending block index. */
static int cmp_cand(const void *x, const void *y) {
    const cand *a = x, *b = y;
    if (a->mass != b->mass)
        return a->mass > b->mass ? -1 : 1;
    return (a->J > b->J) - (a->J < b->J);
}

int ref_xattn_estimate(const ref_xattn_shape *s, const double *q, const double *k,
                       const int *heads, int n_heads, uint8_t *masks, int64_t *kept, double *mass,
                       double *margin) {
    if (!s || !q || !k || !heads || !masks || s->L < 0 || s->n < 1 || s->d < 1 || s->hq < 1 ||
        s->hkv < 1 || s->hq % s->hkv || s->q_pos0 < 0 || s->q_pos0 % BLK || s->stride < 1 ||
        BLK % s->stride || n_heads < 1)
        return -1;
    const int64_t L = s->L, n = s->n, d = s->d, S = s->stride;
    const int64_t nqb = (L + BLK - 1) / BLK, nkb = (n + BLK - 1) / BLK;
    const int64_t nrq = (L + S - 1) / S, nrk = (n + S - 1) / S, r0 = s->q_pos0 / S, rpb = BLK / S;
    const int G = s->hq / s->hkv;
    const double scale = (s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d)) / (double)S;
    double *A = malloc((size_t)(nqb * nkb + 1) * sizeof *A);
    double *row = malloc((size_t)nrk * sizeof *row);
    cand *cs = malloc((size_t)nkb * sizeof *cs);
    if (!A || !row || !cs) {
        free(A);
        free(row);
        free(cs);
        return -1;
    }
    int64_t n_kept = 0;
    double min_margin = INFINITY;
    for (int hi = 0; hi < n_heads; hi++) {
        const int h = heads[hi];
        if (h < 0 || h >= s->hq) {
            free(A);
            free(row);
            free(cs);
            return -1;
        }
        const double *kh = k + (int64_t)(h / G) * n * d;
        memset(A, 0, (size_t)(nqb * nkb) * sizeof *A);
        for (int64_t m = 0; m < nrq; m++) {
            const int64_t a = r0 + m, cmax = a < nrk - 1 ? a : nrk - 1;
            double mx = -INFINITY;
            for (int64_t c = 0; c <= cmax; c++) {
                double dot = 0.0;
                for (int64_t i = 0; i < S; i++) {
                    int64_t tq = m * S + S - 1 - i, tk = c * S + i;
                    if (tq >= L || tk >= n)
                        continue;
                    for (int64_t x = 0; x < d; x++)
                        dot += q[(tq * s->hq + h) * d + x] * kh[tk * d + x];
                }
                row[c] = dot * scale;
                if (row[c] > mx)
                    mx = row[c];
            }
            double sum = 0.0;
            for (int64_t c = 0; c <= cmax; c++) {
                row[c] = exp(row[c] - mx);
                sum += row[c];
            }
            for (int64_t c = 0; c <= cmax; c++)
                A[(m / rpb) * nkb + c / rpb] += row[c] / sum;
        }
        for (int64_t I = 0; I < nqb; I++) {
            const int64_t M = s->q_pos0 / BLK + I, last = M < nkb - 1 ? M : nkb - 1;
            const double *Ai = A + I * nkb;
            uint8_t *out = masks + ((int64_t)hi * nqb + I) * nkb;
            memset(out, 0, (size_t)nkb);
            double total = 0.0;
            for (int64_t J = 0; J <= last; J++)
                total += Ai[J];
            double target = s->threshold * total, have = Ai[0];
            out[0] = 1;
            if (M < nkb && M != 0) {
                out[M] = 1;
                have += Ai[M];
            }
            int64_t nc = 0;
            for (int64_t J = 1; J <= last; J++)
                if (J != M) {
                    cs[nc].mass = Ai[J];
                    cs[nc++].J = J;
                }
            qsort(cs, (size_t)nc, sizeof *cs, cmp_cand);
            int64_t taken = 0;
            for (; taken < nc; taken++) {
                double gap = fabs(have - target) / total;
                if (gap < min_margin)
                    min_margin = gap;
                if (!(have < target))
                    break;
                out[cs[taken].J] = 1;
                have += cs[taken].mass;
            }
            if (taken > 0 && taken < nc) {
                double gap = (cs[taken - 1].mass - cs[taken].mass) / total;
                if (gap < min_margin)
                    min_margin = gap;
            }
            for (int64_t J = 0; J < nkb; J++)
                n_kept += out[J];
            if (mass)
                memcpy(mass + ((int64_t)hi * nqb + I) * nkb, Ai, (size_t)nkb * sizeof *Ai);
        }
    }
    if (kept)
        *kept = n_kept;
    if (margin)
        *margin = min_margin;
    free(A);
    free(row);
    free(cs);
    return 0;
}

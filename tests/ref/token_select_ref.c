/* Float64 scalar reference of ela_token_select (see token_select_ref.h). Steps as numbered in
 * PAPERS.md 2.3: window scores a_h, avg-pool, head mean, normalisation, coverage cut, n_keep,
 * per-head top n_keep (ties: lower index first) plus the window, ascending. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "token_select_ref.h"

typedef struct {
    double v;
    int64_t j;
} scored;

/* Descending value, then ascending index. */
static int cmp_scored(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->v != b->v)
        return a->v > b->v ? -1 : 1;
    return (a->j > b->j) - (a->j < b->j);
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static void write_dense(const ref_token_select_shape *s, int32_t *idx, int64_t *n_sel) {
    for (int h = 0; h < s->hq; h++)
        for (int64_t j = 0; j < s->L; j++)
            idx[h * s->L + j] = (int32_t)j;
    *n_sel = s->L;
}

int ref_token_select(const ref_token_select_shape *s, const double *q, const double *k,
                     int32_t *idx, int64_t *n_sel, ref_token_select_info *info) {
    if (!s || !q || !k || !idx || !n_sel || s->L < 1 || s->d < 1 || s->hq < 1 || s->hkv < 1 ||
        s->hq % s->hkv != 0 || s->window < 1 || s->pool < 1 || s->pool % 2 == 0 ||
        !(s->coverage >= 0.0 && s->coverage < 1.0) || s->min_keep < 0)
        return -1;
    ref_token_select_info local;
    if (!info)
        info = &local;
    const int64_t L = s->L, d = s->d, w = s->window;
    const int group = s->hq / s->hkv;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d);
    const double tau = s->coverage;
    info->dense = 1;
    info->n_drop0 = -1;
    info->n_keep = L;
    info->tau_margin = INFINITY;
    info->topk_margin = INFINITY;

    /* 1. Skip rule. */
    if (L - w <= s->min_keep) {
        write_dense(s, idx, n_sel);
        return 0;
    }
    const int64_t Lp = L - w;
    double *a = calloc((size_t)(s->hq * Lp), sizeof *a);      /* a_h, then pooled */
    double *pooled = calloc((size_t)Lp, sizeof *pooled);
    double *p = malloc((size_t)L * sizeof *p);
    double *g = calloc((size_t)Lp, sizeof *g);
    scored *order = malloc((size_t)Lp * sizeof *order);
    if (!a || !pooled || !p || !g || !order) {
        free(a);
        free(pooled);
        free(p);
        free(g);
        free(order);
        return -1;
    }

    /* 2. a_h[j] = mean over window queries i (position Lp + i) of softmax_i(j), j < Lp. */
    for (int h = 0; h < s->hq; h++) {
        const double *kh = k + (int64_t)(h / group) * L * d;
        for (int64_t i = Lp; i < L; i++) {
            const double *qi = q + (i * s->hq + h) * d;
            double m = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j <= i; j++) {
                double dot = 0.0;
                for (int64_t c = 0; c < d; c++)
                    dot += qi[c] * kh[j * d + c];
                p[j] = scale * dot;
                m = p[j] > m ? p[j] : m;
            }
            for (int64_t j = 0; j <= i; j++) {
                p[j] = exp(p[j] - m);
                sum += p[j];
            }
            for (int64_t j = 0; j < Lp; j++)
                a[h * Lp + j] += p[j] / sum;
        }
        for (int64_t j = 0; j < Lp; j++)
            a[h * Lp + j] /= (double)w;
    }

    /* 3. avg_pool1d, zero padding counted in the divisor. */
    const int64_t half = (s->pool - 1) / 2;
    for (int h = 0; h < s->hq; h++) {
        double *x = a + h * Lp;
        for (int64_t j = 0; j < Lp; j++) {
            double acc = 0.0;
            for (int64_t t = j - half; t <= j + half; t++)
                if (t >= 0 && t < Lp)
                    acc += x[t];
            pooled[j] = acc / (double)s->pool;
        }
        memcpy(x, pooled, (size_t)Lp * sizeof *x);
    }

    /* 4. Head mean, normalisations. */
    double gsum = 0.0;
    for (int64_t j = 0; j < Lp; j++) {
        for (int h = 0; h < s->hq; h++)
            g[j] += a[h * Lp + j];
        g[j] /= (double)s->hq;
        gsum += g[j];
    }
    for (int64_t j = 0; j < Lp; j++)
        g[j] /= gsum + 1e-8;
    for (int h = 0; h < s->hq; h++) {
        double hs = 0.0;
        for (int64_t j = 0; j < Lp; j++)
            hs += a[h * Lp + j];
        for (int64_t j = 0; j < Lp; j++)
            a[h * Lp + j] /= hs + 1e-8;
    }

    /* 5. Sort ascending, cumulative sum, n_drop = #{c < tau}. c is non-decreasing. */
    qsort(g, (size_t)Lp, sizeof *g, cmp_double);
    int64_t n0 = 0;
    double c = 0.0, c_below = -INFINITY, c_above = INFINITY;
    for (int64_t j = 0; j < Lp; j++) {
        c += g[j];
        if (c < tau) {
            n0++;
            c_below = c;
        } else {
            c_above = c;
            break;
        }
    }
    info->n_drop0 = n0;
    if (tau > 0.0) {
        double lo = tau - c_below, hi = c_above - tau;
        info->tau_margin = (lo < hi ? lo : hi) / tau;
    }
    int64_t n_keep = Lp;
    if (n0 > 0) {
        int64_t n_drop = n0 + 1;
        /* 6. */
        n_keep = Lp - n_drop > s->min_keep ? Lp - n_drop : s->min_keep;
    }
    info->n_keep = n_keep;
    if (n_keep >= Lp) { /* nothing dropped (or every head keeps the whole prefix) */
        info->n_keep = Lp;
        write_dense(s, idx, n_sel);
        goto done;
    }

    /* 7. Per head: top n_keep of its normalised pooled scores, plus the window, ascending. */
    info->dense = 0;
    for (int h = 0; h < s->hq; h++) {
        for (int64_t j = 0; j < Lp; j++) {
            order[j].v = a[h * Lp + j];
            order[j].j = j;
        }
        qsort(order, (size_t)Lp, sizeof *order, cmp_scored);
        double top = order[n_keep - 1].v, next = order[n_keep].v;
        double margin = top > 0.0 ? (top - next) / top : 0.0;
        if (margin < info->topk_margin)
            info->topk_margin = margin;
        int32_t *row = idx + h * L;
        memset(row, 0, (size_t)L * sizeof *row);
        for (int64_t r = 0; r < n_keep; r++)
            row[order[r].j] = 1; /* mark, then list ascending */
        int64_t n = 0;
        for (int64_t j = 0; j < Lp; j++)
            if (row[j])
                row[n++] = (int32_t)j;
        for (int64_t j = Lp; j < L; j++)
            row[n++] = (int32_t)j;
    }
    *n_sel = n_keep + w;

done:
    free(a);
    free(pooled);
    free(p);
    free(g);
    free(order);
    return 0;
}

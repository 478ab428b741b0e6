/* Float64 reference of ela_decode_select (see decode_select_ref.h). */
#include <math.h>
#include <stdlib.h>

#include "decode_select_ref.h"

void ref_decode_select_split(int64_t kb, float recent, int sinks, int64_t *k_mid, int64_t *n_rec,
                             int64_t *sinks_used) {
    double r4 = 4.0 * (double)recent;
    int64_t mid = r4 == floor(r4) ? kb * (4 - (int64_t)r4) / 4
                                  : (int64_t)floor((double)kb * (1.0 - (double)recent) +
                                                   (double)kb * 1e-7);
    if (mid < 0)
        mid = 0;
    if (mid > kb)
        mid = kb;
    int64_t rec = kb - mid, s = sinks;
    if (rec < s)
        s = 0;
    rec -= s;
    *k_mid = mid;
    *n_rec = rec;
    *sinks_used = s;
}

typedef struct {
    double v;
    int64_t j;
} scored;

static int by_rank(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->v != b->v)
        return a->v > b->v ? -1 : 1;
    return a->j < b->j ? -1 : a->j > b->j;
}

int ref_decode_select(int hq, int hkv, int64_t n, int64_t d, const double *q, const double *k,
                      double scale, int64_t budget, float recent, int sinks, int64_t *idx,
                      int64_t *count, double *logits) {
    if (hq < 1 || hkv < 1 || hq % hkv != 0 || n < 1 || d < 1 || !q || !k || budget < 1 ||
        !(recent >= 0.0f && recent <= 1.0f) || sinks < 0 || !idx || !count)
        return -1;
    const int group = hq / hkv;
    if (scale == 0.0)
        scale = 1.0 / sqrt((double)d);
    double *P = malloc((size_t)hq * (size_t)n * sizeof *P);
    if (!P)
        return -1;
    for (int h = 0; h < hq; h++)
        for (int64_t j = 0; j < n; j++) {
            double dot = 0.0;
            for (int64_t c = 0; c < d; c++)
                dot += q[h * d + c] * k[((int64_t)(h / group) * n + j) * d + c];
            P[h * n + j] = scale * dot;
        }
    if (logits)
        for (int64_t e = 0; e < hq * n; e++)
            logits[e] = P[e];
    if (budget >= n) {
        for (int64_t j = 0; j < n; j++)
            idx[j] = j;
        *count = n;
        free(P);
        return 0;
    }
    const int64_t kb = budget;
    int64_t k_mid, n_rec, s;
    ref_decode_select_split(kb, recent, sinks, &k_mid, &n_rec, &s);
    /* candidates [s, n - n_rec); per head sorted by (logit desc, index asc) */
    const int64_t lo = s, hi = n - n_rec, nc = hi - lo;
    scored *rank = malloc((size_t)hq * (size_t)nc * sizeof *rank);
    unsigned char *taken = calloc((size_t)n, 1);
    if (!rank || !taken || nc < k_mid) {
        free(rank);
        free(taken);
        free(P);
        return -1;
    }
    for (int h = 0; h < hq; h++) {
        scored *rh = rank + (int64_t)h * nc;
        for (int64_t j = lo; j < hi; j++) {
            rh[j - lo].v = P[h * n + j];
            rh[j - lo].j = j;
        }
        qsort(rh, (size_t)nc, sizeof *rh, by_rank);
    }
    int64_t o = 0;
    for (int64_t j = 0; j < s; j++)
        idx[o++] = j;
    int64_t u = 0;
    for (int64_t r = 0; r < k_mid && u < k_mid; r++)
        for (int h = 0; h < hq && u < k_mid; h++) {
            int64_t j = rank[(int64_t)h * nc + r].j;
            if (!taken[j]) {
                taken[j] = 1;
                idx[o++] = j;
                u++;
            }
        }
    for (int64_t j = hi; j < n; j++)
        idx[o++] = j;
    *count = o;
    free(rank);
    free(taken);
    free(P);
    return o == kb ? 0 : -1;
}

static int cmp_desc(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a > b ? -1 : a < b;
}

double ref_decode_select_margin(int hq, int hkv, int64_t n, int64_t d, int64_t budget,
                                float recent, int sinks, const double *logits, const double *q,
                                const double *k) {
    int64_t k_mid = 0, n_rec = 0, s = 0;
    if (budget >= n)
        return INFINITY;
    ref_decode_select_split(budget, recent, sinks, &k_mid, &n_rec, &s);
    const int64_t lo = s, nc = n - n_rec - s;
    const int G = hq / hkv;
    double *v = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *v), gap = INFINITY, big = 0.0;
    if (!v)
        return 0.0;
    for (int h = 0; h < hq; h++)
        for (int64_t j = 0; j < n; j++) {
            double sum = 0.0;
            for (int64_t x = 0; x < d; x++)
                sum += fabs(q[h * d + x] * k[((h / G) * n + j) * d + x]);
            big = sum > big ? sum : big;
        }
    double bound = (double)(d + 2) * ldexp(1.0, -24) * big / sqrt((double)d);
    for (int h = 0; h < hq && k_mid > 0; h++) {
        for (int64_t j = 0; j < nc; j++)
            v[j] = logits[(int64_t)h * n + lo + j];
        qsort(v, (size_t)nc, sizeof *v, cmp_desc);
        for (int64_t r = 0; r < k_mid && r + 1 < nc; r++)
            gap = v[r] - v[r + 1] < gap ? v[r] - v[r + 1] : gap;
    }
    free(v);
    return gap / bound;
}

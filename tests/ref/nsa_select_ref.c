/* Float64 scalar reference of ela_nsa_select (see nsa_select_ref.h). For each row i (t =
 * q_pos0 + i) and KV head g: kc[c] = mean of k rows [cB, (c+1)B); for each query head h of the
 * group, lse_h = log sum_{c < NC} exp(scale q_h.kc[c]) with NC = (t+1)/B (0 if NC = 0);
 * s[c] = sum_h exp(scale q_h.kc[c] - lse_h) for c < t/B; blocks = [t/B, then the rest by
 * descending s, ties lower block first], top in total. Selection by repeated arg-max. */
#include <math.h>
#include <stdlib.h>

#include "nsa_select_ref.h"

int64_t ref_nsa_score_cols(const ref_nsa_shape *s) { return s->n / s->block + 1; }

int ref_nsa_select(const ref_nsa_shape *s, const double *q, const double *k, int32_t *blocks,
                   double *scores) {
    if (!s || !q || !k || !blocks || s->L < 0 || s->n < 1 || s->d < 1 || s->hq < 1 ||
        s->hkv < 1 || s->hq % s->hkv != 0 || s->q_pos0 < 0 || s->q_pos0 + s->L > s->n ||
        s->block < 1 || s->top < 1)
        return -1;
    const int64_t L = s->L, n = s->n, d = s->d, B = s->block, nb = n / B;
    const int64_t cols = ref_nsa_score_cols(s);
    const int group = s->hq / s->hkv;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d);
    double *kc = malloc((size_t)(s->hkv * (nb > 0 ? nb : 1) * d) * sizeof *kc);
    double *z = malloc((size_t)(nb > 0 ? nb : 1) * sizeof *z);
    double *sc = malloc((size_t)(nb > 0 ? nb : 1) * sizeof *sc);
    char *taken = malloc((size_t)(nb > 0 ? nb : 1));
    if (!kc || !z || !sc || !taken) {
        free(kc);
        free(z);
        free(sc);
        free(taken);
        return -1;
    }
    /* complete blocks only */
    for (int g = 0; g < s->hkv; g++)
        for (int64_t c = 0; c < nb; c++)
            for (int64_t x = 0; x < d; x++) {
                double sum = 0.0;
                for (int64_t j = c * B; j < (c + 1) * B; j++)
                    sum += k[((int64_t)g * n + j) * d + x];
                kc[((int64_t)g * nb + c) * d + x] = sum / (double)B;
            }
    for (int64_t i = 0; i < L; i++) {
        const int64_t t = s->q_pos0 + i, nc = (t + 1) / B, cur = t / B;
        for (int g = 0; g < s->hkv; g++) {
            for (int64_t c = 0; c < cur; c++)
                sc[c] = 0.0;
            for (int hh = 0; hh < group; hh++) {
                const double *qh = q + (i * s->hq + (int64_t)g * group + hh) * d;
                double m = -INFINITY, sum = 0.0, lse = 0.0;
                for (int64_t c = 0; c < nc; c++) {
                    double dot = 0.0;
                    for (int64_t x = 0; x < d; x++)
                        dot += qh[x] * kc[((int64_t)g * nb + c) * d + x];
                    z[c] = scale * dot;
                    if (z[c] > m)
                        m = z[c];
                }
                for (int64_t c = 0; c < nc; c++)
                    sum += exp(z[c] - m);
                if (nc > 0)
                    lse = m + log(sum);
                for (int64_t c = 0; c < cur; c++)
                    sc[c] += exp(z[c] - lse);
            }
            int32_t *out = blocks + (i * s->hkv + g) * s->top;
            int64_t kept = 0;
            out[kept++] = (int32_t)cur;
            for (int64_t c = 0; c < cur; c++)
                taken[c] = 0;
            while (kept < s->top && kept < cur + 1) {
                int64_t best = -1;
                for (int64_t c = 0; c < cur; c++) /* strict >: ties keep the lower block */
                    if (!taken[c] && (best < 0 || sc[c] > sc[best]))
                        best = c;
                taken[best] = 1;
                out[kept++] = (int32_t)best;
            }
            for (int64_t x = kept; x < s->top; x++)
                out[x] = -1;
            if (scores) {
                double *row = scores + (i * s->hkv + g) * cols;
                for (int64_t c = 0; c < cols; c++)
                    row[c] = c < cur ? sc[c] : c == cur ? INFINITY : NAN;
            }
        }
    }
    free(kc);
    free(z);
    free(sc);
    free(taken);
    return 0;
}

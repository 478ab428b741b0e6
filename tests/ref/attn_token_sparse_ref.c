/* Float64 scalar reference of ela_attn_token_sparse (see attn_token_sparse_ref.h). For each head
 * h and selected row i' (original row idx[h, i']): scores over the selected keys j' <= i' (all
 * of them when not causal), max, exp, normalised weighted sum of V rows; every other row of o
 * is zero for head h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_token_sparse_ref.h"

int ref_attn_token_sparse(const ref_attn_token_sparse_shape *s, const double *q, const double *k,
                          const double *v, const int32_t *idx, int64_t n_sel, double *o) {
    if (!s || !q || !k || !v || !o || (n_sel > 0 && !idx) || s->L < 1 || s->d < 1 ||
        s->hq < 1 || s->hkv < 1 || s->hq % s->hkv != 0 || n_sel < 0 || n_sel > s->L)
        return -1;
    const int64_t L = s->L, d = s->d;
    const int group = s->hq / s->hkv;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d);
    for (int h = 0; h < s->hq; h++)
        for (int64_t i = 0; i < n_sel; i++) {
            int32_t x = idx[h * n_sel + i];
            if (x < 0 || x >= L || (i > 0 && x <= idx[h * n_sel + i - 1]))
                return -1;
        }
    double *w = malloc((size_t)(n_sel > 0 ? n_sel : 1) * sizeof *w);
    if (!w)
        return -1;
    memset(o, 0, (size_t)(L * s->hq * d) * sizeof *o);
    for (int h = 0; h < s->hq; h++) {
        const int32_t *sel = idx + h * n_sel;
        const double *kh = k + (int64_t)(h / group) * L * d, *vh = v + (int64_t)(h / group) * L * d;
        for (int64_t i = 0; i < n_sel; i++) {
            const double *qi = q + ((int64_t)sel[i] * s->hq + h) * d;
            double *oi = o + ((int64_t)sel[i] * s->hq + h) * d;
            int64_t visible = s->causal ? i + 1 : n_sel;
            double m = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < visible; j++) {
                double dot = 0.0;
                for (int64_t c = 0; c < d; c++)
                    dot += qi[c] * kh[(int64_t)sel[j] * d + c];
                w[j] = scale * dot;
                m = w[j] > m ? w[j] : m;
            }
            for (int64_t j = 0; j < visible; j++) {
                w[j] = exp(w[j] - m);
                sum += w[j];
            }
            for (int64_t j = 0; j < visible; j++)
                for (int64_t c = 0; c < d; c++)
                    oi[c] += w[j] * vh[(int64_t)sel[j] * d + c];
            for (int64_t c = 0; c < d; c++)
                oi[c] /= sum;
        }
    }
    free(w);
    return 0;
}

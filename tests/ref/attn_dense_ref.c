/* Float64 scalar reference of ela_attn_dense (see attn_dense_ref.h). For each query row i and
 * head h: scores s_j = scale * q.k_j over the visible keys, m = max s_j, w_j = exp(s_j - m),
 * o = sum w_j v_j / sum w_j, lse = m + log(sum w_j). No tiling, no online rescaling. */
#include <math.h>
#include <stdlib.h>

#include "attn_dense_ref.h"

int ref_attn_dense(const ref_attn_dense_shape *s, const double *q, const double *k, const double *v,
                   double *o, double *lse) {
    if (!s || !q || !o || s->L < 0 || s->n < 0 || s->d < 1 || s->hq < 1 || s->hkv < 1 ||
        s->hq % s->hkv != 0 || (s->n > 0 && (!k || !v)) || (s->causal && s->q_pos0 < 0))
        return -1;
    const int64_t L = s->L, n = s->n, d = s->d;
    const int group = s->hq / s->hkv;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d);
    double *w = malloc((size_t)(n > 0 ? n : 1) * sizeof *w);
    if (!w)
        return -1;
    for (int64_t i = 0; i < L; i++) {
        /* keys [0, visible) are seen by row i */
        int64_t visible = n;
        if (s->causal && s->q_pos0 + i + 1 < n)
            visible = s->q_pos0 + i + 1;
        for (int h = 0; h < s->hq; h++) {
            const double *qi = q + (i * s->hq + h) * d;
            const double *kh = k ? k + (int64_t)(h / group) * n * d : NULL;
            const double *vh = v ? v + (int64_t)(h / group) * n * d : NULL;
            double *oi = o + (i * s->hq + h) * d;
            double m = -INFINITY;
            for (int64_t j = 0; j < visible; j++) {
                double dot = 0.0;
                for (int64_t c = 0; c < d; c++)
                    dot += qi[c] * kh[j * d + c];
                w[j] = scale * dot;
                if (w[j] > m)
                    m = w[j];
            }
            double sum = 0.0;
            for (int64_t j = 0; j < visible; j++) {
                w[j] = exp(w[j] - m);
                sum += w[j];
            }
            for (int64_t c = 0; c < d; c++)
                oi[c] = 0.0;
            for (int64_t j = 0; j < visible; j++)
                for (int64_t c = 0; c < d; c++)
                    oi[c] += w[j] * vh[j * d + c];
            if (visible > 0)
                for (int64_t c = 0; c < d; c++)
                    oi[c] /= sum;
            if (lse)
                lse[i * s->hq + h] = visible > 0 ? m + log(sum) : -INFINITY;
        }
    }
    free(w);
    return 0;
}

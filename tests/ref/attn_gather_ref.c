/* Float64 reference of ela_attn_gather: two passes (max, then sum) per row and head over the
 * listed keys that the row may see. */
#include "ref/attn_gather_ref.h"

#include <math.h>

int ref_attn_gather(const ref_attn_dense_shape *s, const int32_t *idx, int lists, int64_t m,
                    const double *q, const double *k, const double *v, double *o, double *lse) {
    if (s->hq < 1 || s->hkv < 1 || s->hq % s->hkv != 0 || s->d < 1 || (lists != 1 && lists != s->hkv))
        return -1;
    int G = s->hq / s->hkv;
    double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)s->d);
    for (int64_t i = 0; i < s->L; i++) {
        int64_t pos = s->causal ? s->q_pos0 + i : INT64_MAX;
        for (int h = 0; h < s->hq; h++) {
            int g = h / G;
            const int32_t *list = idx + (lists == 1 ? 0 : (int64_t)g * m);
            const double *qi = q + (i * s->hq + h) * s->d;
            double *oi = o + (i * s->hq + h) * s->d;
            double mx = -INFINITY;
            for (int64_t t = 0; t < m; t++) {
                if (list[t] > pos)
                    continue;
                const double *kj = k + ((int64_t)g * s->n + list[t]) * s->d;
                double dot = 0.0;
                for (int64_t c = 0; c < s->d; c++)
                    dot += qi[c] * kj[c];
                mx = fmax(mx, dot * scale);
            }
            for (int64_t c = 0; c < s->d; c++)
                oi[c] = 0.0;
            double sum = 0.0;
            if (mx > -INFINITY) {
                for (int64_t t = 0; t < m; t++) {
                    if (list[t] > pos)
                        continue;
                    const double *kj = k + ((int64_t)g * s->n + list[t]) * s->d;
                    const double *vj = v + ((int64_t)g * s->n + list[t]) * s->d;
                    double dot = 0.0;
                    for (int64_t c = 0; c < s->d; c++)
                        dot += qi[c] * kj[c];
                    double p = exp(dot * scale - mx);
                    sum += p;
                    for (int64_t c = 0; c < s->d; c++)
                        oi[c] += p * vj[c];
                }
                for (int64_t c = 0; c < s->d; c++)
                    oi[c] /= sum;
            }
            if (lse)
                lse[i * s->hq + h] = sum > 0.0 ? mx + log(sum) : -INFINITY;
        }
    }
    return 0;
}

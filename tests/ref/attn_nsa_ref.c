/* Float64 scalar reference of ela_attn_nsa (see attn_nsa_ref.h). Per row i and head h: mark the
 * visible keys (j <= t in a listed block, or every j <= t), scores scale * q.k_j, two-pass
 * softmax (max, then sum), o = gate * sum_j w_j v_j / sum_j w_j. */
#include <math.h>
#include <stdlib.h>

#include "attn_nsa_ref.h"

int ref_attn_nsa(const ref_nsa_shape *s, const double *q, const double *k, const double *v,
                 const int32_t *blocks, const double *gate, double *o) {
    if (!s || !q || !k || !v || !o || s->L < 0 || s->n < 1 || s->d < 1 || s->hq < 1 ||
        s->hkv < 1 || s->hq % s->hkv != 0 || s->q_pos0 < 0 || s->q_pos0 + s->L > s->n ||
        s->block < 1 || s->top < 1)
        return -1;
    const int64_t L = s->L, n = s->n, d = s->d, B = s->block, nkb = (n + B - 1) / B;
    const int group = s->hq / s->hkv;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d);
    char *seen = malloc((size_t)n);
    double *w = malloc((size_t)n * sizeof *w);
    if (!seen || !w) {
        free(seen);
        free(w);
        return -1;
    }
    int rc = 0;
    for (int64_t i = 0; i < L && rc == 0; i++) {
        const int64_t t = s->q_pos0 + i;
        for (int h = 0; h < s->hq && rc == 0; h++) {
            const int g = h / group;
            for (int64_t j = 0; j < n; j++)
                seen[j] = blocks ? 0 : j <= t;
            if (blocks) {
                const int32_t *list = blocks + (i * s->hkv + g) * s->top;
                for (int x = 0; x < s->top; x++) {
                    int32_t b = list[x];
                    if (b == -1)
                        continue;
                    if (b < -1 || b >= nkb || seen[(int64_t)b * B]) { /* range, or a repeat */
                        rc = -1;
                        break;
                    }
                    for (int64_t j = (int64_t)b * B; j < ((int64_t)b + 1) * B && j < n; j++)
                        seen[j] = 2; /* listed; visible when j <= t */
                }
                for (int64_t j = 0; j < n; j++)
                    seen[j] = seen[j] == 2 && j <= t;
            }
            const double *qi = q + (i * s->hq + h) * d;
            double *oi = o + (i * s->hq + h) * d;
            double m = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < n; j++) {
                if (!seen[j])
                    continue;
                double dot = 0.0;
                for (int64_t x = 0; x < d; x++)
                    dot += qi[x] * k[((int64_t)g * n + j) * d + x];
                w[j] = scale * dot;
                if (w[j] > m)
                    m = w[j];
            }
            for (int64_t j = 0; j < n; j++)
                if (seen[j]) {
                    w[j] = exp(w[j] - m);
                    sum += w[j];
                }
            for (int64_t x = 0; x < d; x++)
                oi[x] = 0.0;
            for (int64_t j = 0; j < n; j++)
                if (seen[j])
                    for (int64_t x = 0; x < d; x++)
                        oi[x] += w[j] * v[((int64_t)g * n + j) * d + x];
            double f = sum > 0.0 ? (gate ? gate[i * s->hq + h] : 1.0) / sum : 0.0;
            for (int64_t x = 0; x < d; x++)
                oi[x] *= f;
        }
    }
    free(seen);
    free(w);
    return rc;
}

/* Float64 scalar reference of ela_attn_blocks (see attn_blocks_ref.h): for each row and head,
 * scores over the visible keys, m = max, w = exp(s - m), o = sum w v / sum w, lse = m + log sum w. */
#include <math.h>
#include <stdlib.h>

#include "attn_blocks_ref.h"

int ref_block_visible(const ref_head_mode *md, const uint8_t *mask_row, int64_t M, int64_t J) {
    if (J > M)
        return 0;
    switch (md->kind) {
    case REF_HEAD_DENSE:
        return 1;
    case REF_HEAD_STREAMING:
        return J < md->sink_blocks || J >= M - md->local_blocks + 1;
    case REF_HEAD_MASK:
        return J == M || mask_row[J] != 0;
    default:
        return 0;
    }
}

int ref_attn_blocks(const ref_attn_blocks_shape *s, const double *q, const double *k,
                    const double *v, const ref_head_mode *modes, const uint8_t *masks, double *o,
                    double *lse) {
    if (!s || !q || !k || !v || !modes || !o || s->L < 0 || s->n < 1 || s->d < 1 || s->hq < 1 ||
        s->hkv < 1 || s->hq % s->hkv != 0 || s->q_pos0 < 0 || s->q_pos0 % REF_BLOCK != 0)
        return -1;
    const int64_t L = s->L, n = s->n, d = s->d;
    const int64_t nqb = (L + REF_BLOCK - 1) / REF_BLOCK, nkb = (n + REF_BLOCK - 1) / REF_BLOCK;
    const int group = s->hq / s->hkv;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)d);
    for (int h = 0; h < s->hq; h++)
        if (modes[h].kind == REF_HEAD_MASK &&
            (!masks || modes[h].mask < 0 || modes[h].mask >= s->n_masks))
            return -1;
    double *w = malloc((size_t)n * sizeof *w);
    char *seen = malloc((size_t)n);
    if (!w || !seen) {
        free(w);
        free(seen);
        return -1;
    }
    for (int64_t i = 0; i < L; i++) {
        const int64_t pos = s->q_pos0 + i, M = pos / REF_BLOCK;
        for (int h = 0; h < s->hq; h++) {
            const ref_head_mode *md = &modes[h];
            const uint8_t *mrow = NULL;
            if (md->kind == REF_HEAD_MASK)
                mrow = masks + (md->mask * nqb + (M - s->q_pos0 / REF_BLOCK)) * nkb;
            const double *qi = q + (i * s->hq + h) * d;
            const double *kh = k + (int64_t)(h / group) * n * d;
            const double *vh = v + (int64_t)(h / group) * n * d;
            double *oi = o + (i * s->hq + h) * d;
            double m = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                seen[j] = j <= pos && ref_block_visible(md, mrow, M, j / REF_BLOCK);
                if (!seen[j])
                    continue;
                double dot = 0.0;
                for (int64_t c = 0; c < d; c++)
                    dot += qi[c] * kh[j * d + c];
                w[j] = scale * dot;
                if (w[j] > m)
                    m = w[j];
            }
            double sum = 0.0;
            for (int64_t c = 0; c < d; c++)
                oi[c] = 0.0;
            for (int64_t j = 0; j < n; j++) {
                if (!seen[j])
                    continue;
                w[j] = exp(w[j] - m);
                sum += w[j];
                for (int64_t c = 0; c < d; c++)
                    oi[c] += w[j] * vh[j * d + c];
            }
            if (sum > 0.0)
                for (int64_t c = 0; c < d; c++)
                    oi[c] /= sum;
            if (lse)
                lse[i * s->hq + h] = sum > 0.0 ? m + log(sum) : -INFINITY;
        }
    }
    free(w);
    free(seen);
    return 0;
}

/* Storing and merging the partial results of the CPU attention drivers (attn_partials.h). */
#include "attn_partials.h"

#include <math.h>

#include "backend.h"
#include "core/dtype.h"

#define LN2 0.6931471805599453f

void cpu_attn_store_rows(const cpu_attn_rows *p, const float *O, const float *m, const float *l,
                         int g, int64_t i0, int64_t i1) {
    const ela_attn_dense_args *a = p->a;
    ela_dtype odt = a->o->dtype;
    char *o = cpu_tensor_data(a->o), *lse_base = a->lse ? cpu_tensor_data(a->lse) : NULL;
    int64_t o0 = a->o->strides[0], o1 = a->o->strides[1];
    for (int64_t i = i0; i < i1; i++) {
        for (int64_t hh = 0; hh < p->G; hh++) {
            int64_t r = (i - i0) * p->G + hh, h = (int64_t)g * p->G + hh;
            const float *src = O + r * p->dp;
            float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
            char *dst = o + i * o0 + h * o1;
            if (odt == ELA_F32) {
                for (int64_t c = 0; c < a->d; c++)
                    ((float *)(void *)dst)[c] = src[c] * inv;
            } else {
                for (int64_t c = 0; c < a->d; c++)
                    ((uint16_t *)(void *)dst)[c] = odt == ELA_F16 ? ela_f32_to_f16(src[c] * inv)
                                                                  : ela_f32_to_bf16(src[c] * inv);
            }
            if (lse_base) {
                float lse = l[r] > 0.0f ? (m[r] + log2f(l[r])) * LN2 : -INFINITY;
                *(float *)(void *)(lse_base + i * a->lse->strides[0] + h * a->lse->strides[1]) = lse;
            }
        }
    }
}

float *cpu_attn_partial_at(const cpu_attn_rows *p, float *partials, int64_t grp, int64_t split) {
    return partials + (grp * p->splits + split) * p->R * (p->dp + 2);
}

void cpu_attn_merge_group(const cpu_attn_rows *p, float *partials, int64_t grp, int64_t R) {
    float *dst = cpu_attn_partial_at(p, partials, grp, 0);
    float *dm = dst + p->R * p->dp, *dl = dm + p->R;
    for (int64_t sp = 1; sp < p->splits; sp++) {
        const float *src = cpu_attn_partial_at(p, partials, grp, sp);
        const float *sm = src + p->R * p->dp, *sl = sm + p->R;
        for (int64_t r = 0; r < R; r++) {
            if (sl[r] == 0.0f) /* this chunk saw no key of this row */
                continue;
            float mx = dm[r] > sm[r] ? dm[r] : sm[r];
            float wd = dl[r] > 0.0f ? exp2f(dm[r] - mx) : 0.0f, ws = exp2f(sm[r] - mx);
            float *od = dst + r * p->dp;
            const float *os = src + r * p->dp;
            for (int64_t c = 0; c < p->dp; c++)
                od[c] = od[c] * wd + os[c] * ws;
            dl[r] = dl[r] * wd + sl[r] * ws;
            dm[r] = mx;
        }
    }
}

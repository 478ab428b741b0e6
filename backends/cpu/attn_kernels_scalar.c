/* Portable scalar inner kernels of CPU dense attention (see attn_kernels.h): the reference
 * every SIMD level is tested against and the fallback on CPUs without a SIMD level. */
#include <math.h>

#include "attn_kernels.h"
#include "core/dtype.h"

static void scalar_load_rows(float *dst, int64_t dp, const void *src, int64_t src_stride,
                             ela_dtype dtype, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const char *row = (const char *)src + r * src_stride;
        float *out = dst + r * dp;
        if (dtype == ELA_F32) {
            const float *s = (const float *)row;
            for (int64_t c = 0; c < d; c++)
                out[c] = s[c];
        } else {
            const uint16_t *s = (const uint16_t *)row;
            for (int64_t c = 0; c < d; c++)
                out[c] = dtype == ELA_F16 ? ela_f16_to_f32(s[c]) : ela_bf16_to_f32(s[c]);
        }
        for (int64_t c = d; c < dp; c++)
            out[c] = 0.0f;
    }
}

static void scalar_qk(float *S, const float *Q, const float *K, int64_t R, int64_t nk, int64_t dp) {
    for (int64_t r = 0; r < R; r++) {
        const float *q = Q + r * dp;
        for (int64_t j = 0; j < nk; j++) {
            const float *k = K + j * dp;
            float acc = 0.0f;
            for (int64_t c = 0; c < dp; c++)
                acc += q[c] * k[c];
            S[r * CPU_ATTN_BK + j] = acc;
        }
    }
}

static void scalar_softmax(float *S, float *m, float *l, float *alpha, int64_t R, int64_t nk) {
    for (int64_t r = 0; r < R; r++) {
        float *s = S + r * CPU_ATTN_BK;
        float m_new = m[r];
        for (int64_t j = 0; j < nk; j++)
            m_new = s[j] > m_new ? s[j] : m_new;
        if (m_new == -INFINITY) {
            for (int64_t j = 0; j < CPU_ATTN_BK; j++)
                s[j] = 0.0f;
            alpha[r] = 1.0f;
            continue;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < nk; j++) {
            s[j] = exp2f(s[j] - m_new);
            sum += s[j];
        }
        for (int64_t j = nk; j < CPU_ATTN_BK; j++)
            s[j] = 0.0f;
        alpha[r] = exp2f(m[r] - m_new);
        l[r] = l[r] * alpha[r] + sum;
        m[r] = m_new;
    }
}

static void scalar_pv(float *O, const float *P, const float *V, const float *alpha, int64_t R,
                      int64_t nk, int64_t dp) {
    for (int64_t r = 0; r < R; r++) {
        float *o = O + r * dp;
        const float *p = P + r * CPU_ATTN_BK;
        for (int64_t c = 0; c < dp; c++)
            o[c] *= alpha[r];
        for (int64_t j = 0; j < nk; j++) {
            const float *v = V + j * dp;
            for (int64_t c = 0; c < dp; c++)
                o[c] += p[j] * v[c];
        }
    }
}

static const cpu_attn_kernels scalar_kernels = {
    "scalar", scalar_load_rows, scalar_qk, scalar_softmax, scalar_pv,
};

const cpu_attn_kernels *cpu_attn_kernels_scalar(void) { return &scalar_kernels; }

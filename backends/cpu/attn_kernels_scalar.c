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
        } else if (dtype == ELA_Q8_0) {
            for (int64_t c = 0; c < d; c += ELA_Q8_0_BLOCK)
                ela_q8_0_dequantize_block(
                    (const uint8_t *)row + c / ELA_Q8_0_BLOCK * ELA_Q8_0_BYTES, out + c);
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

/* Row path: sum_c q[c] * row[c] and o[c] += p * row[c] over a row of dtype (the dtype
 * switch is outside the loops; a q8_0 row is dequantized one block at a time). */
static float dot_row(const float *q, const void *row, int64_t d, ela_dtype dtype) {
    float acc = 0.0f;
    if (dtype == ELA_Q8_0) {
        float blk[ELA_Q8_0_BLOCK];
        for (int64_t c = 0; c < d; c += ELA_Q8_0_BLOCK) {
            ela_q8_0_dequantize_block((const uint8_t *)row + c / ELA_Q8_0_BLOCK * ELA_Q8_0_BYTES,
                                      blk);
            for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
                acc += q[c + i] * blk[i];
        }
    } else if (dtype == ELA_F32) {
        const float *k = row;
        for (int64_t c = 0; c < d; c++)
            acc += q[c] * k[c];
    } else if (dtype == ELA_F16) {
        const uint16_t *k = row;
        for (int64_t c = 0; c < d; c++)
            acc += q[c] * ela_f16_to_f32(k[c]);
    } else {
        const uint16_t *k = row;
        for (int64_t c = 0; c < d; c++)
            acc += q[c] * ela_bf16_to_f32(k[c]);
    }
    return acc;
}

static void axpy_row(float *o, float p, const void *row, int64_t d, ela_dtype dtype) {
    if (dtype == ELA_Q8_0) {
        float blk[ELA_Q8_0_BLOCK];
        for (int64_t c = 0; c < d; c += ELA_Q8_0_BLOCK) {
            ela_q8_0_dequantize_block((const uint8_t *)row + c / ELA_Q8_0_BLOCK * ELA_Q8_0_BYTES,
                                      blk);
            for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
                o[c + i] += p * blk[i];
        }
    } else if (dtype == ELA_F32) {
        const float *v = row;
        for (int64_t c = 0; c < d; c++)
            o[c] += p * v[c];
    } else if (dtype == ELA_F16) {
        const uint16_t *v = row;
        for (int64_t c = 0; c < d; c++)
            o[c] += p * ela_f16_to_f32(v[c]);
    } else {
        const uint16_t *v = row;
        for (int64_t c = 0; c < d; c++)
            o[c] += p * ela_bf16_to_f32(v[c]);
    }
}

/* The scalar level does not prefetch (pf serves the SIMD levels' memory-bound decode). */
static void scalar_qk_rows(float *S, const float *Q, int64_t R, int64_t dp,
                           const void *const *krow, int64_t nk, int64_t d, ela_dtype dtype,
                           const void *const *pf, int64_t npf) {
    (void)pf;
    (void)npf;
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < nk; j++)
            S[r * CPU_ATTN_BK + j] = dot_row(Q + r * dp, krow[j], d, dtype);
}

static void scalar_pv_rows(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                           const void *const *vrow, int64_t nk, int64_t d, ela_dtype dtype,
                           const void *const *pf, int64_t npf) {
    (void)pf;
    (void)npf;
    for (int64_t r = 0; r < R; r++) {
        float *o = O + r * dp;
        for (int64_t c = 0; c < d; c++)
            o[c] *= alpha[r];
        for (int64_t j = 0; j < nk; j++)
            axpy_row(o, P[r * CPU_ATTN_BK + j], vrow[j], d, dtype);
    }
}

static const cpu_attn_kernels scalar_kernels = {
    "scalar",       scalar_load_rows, scalar_qk, scalar_softmax, scalar_pv, scalar_qk_rows,
    scalar_pv_rows,
};

const cpu_attn_kernels *cpu_attn_kernels_scalar(void) { return &scalar_kernels; }

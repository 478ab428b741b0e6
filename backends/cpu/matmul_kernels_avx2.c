/* AVX2+FMA+F16C matmul kernels (see matmul_kernels.h for the contract and
 * matmul_kernels_scalar.c for the reference). Built with -mavx2 -mfma -mf16c.
 * f32/f16/bf16: 8 lanes per step; each of the C weight vectors is loaded and converted once
 * and feeds R FMAs; the last K % 8 elements are done in scalar code (nothing past a row is
 * read). q8_0: per 32-block, maddubs(|x|, sign(w, x)) -> madd(1) gives eight int32 partial
 * dot products (|x| <= 127 keeps the int16 pair sums below saturation), converted to f32 and
 * scaled by d_x * d_w. Bound in decode: the DRAM bandwidth of the weights; in prefill with
 * R = C = 4, 16 FMAs per 4 weight + 4 activation loads. */
#include <immintrin.h>
#include <string.h>

#include "core/dtype.h"
#include "matmul_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define AVX2_INLINE static inline __attribute__((always_inline))
#else
#define AVX2_INLINE static inline
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define UNROLL _Pragma("GCC unroll 4")
#else
#define UNROLL
#endif

AVX2_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE __m256 load8(ela_dtype dt, const char *w, int64_t k) {
    if (dt == ELA_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * k)));
    if (dt == ELA_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(w + 2 * k));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps((const float *)(const void *)w + k);
}

AVX2_INLINE float load1(ela_dtype dt, const char *w, int64_t k) {
    uint16_t h;
    if (dt == ELA_F32) {
        float f;
        memcpy(&f, w + 4 * k, 4);
        return f;
    }
    memcpy(&h, w + 2 * k, 2);
    return dt == ELA_F16 ? _cvtsh_ss(h) : ela_bf16_to_f32(h);
}

AVX2_INLINE void tile_body(ela_dtype dt, const float *x, int64_t xs, int R, const char *w,
                           int64_t ws, int C, int64_t K, float *out) {
    __m256 acc[CPU_MM_R][CPU_MM_C];
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_setzero_ps();
    int64_t k = 0;
    const int64_t es = dt == ELA_F32 ? 4 : 2;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[CPU_MM_C];
        if (R <= 2 && (k * es) % 64 == 0) /* decode: once per cache line */
            UNROLL for (int c = 0; c < C; c++)
                _mm_prefetch(w + c * ws + k * es + CPU_MM_PREFETCH, _MM_HINT_T0);
        UNROLL for (int c = 0; c < C; c++)
            wv[c] = load8(dt, w + c * ws, k);
        UNROLL for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_loadu_ps(x + r * xs + k);
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int c = 0; c < C; c++) {
            float s = hsum8(acc[r][c]);
            for (int64_t t = k; t < K; t++)
                s += x[r * xs + t] * load1(dt, w + c * ws, t);
            out[r * CPU_MM_C + c] = s;
        }
}

/* One instance per (R, C) so that the accumulators live in registers. */
#define TILE_CASES(BODY, ...)                                                                   \
    switch ((R - 1) * 4 + (C - 1)) {                                                            \
    case 0: BODY(__VA_ARGS__, 1, 1); break;                                                     \
    case 1: BODY(__VA_ARGS__, 1, 2); break;                                                     \
    case 2: BODY(__VA_ARGS__, 1, 3); break;                                                     \
    case 3: BODY(__VA_ARGS__, 1, 4); break;                                                     \
    case 4: BODY(__VA_ARGS__, 2, 1); break;                                                     \
    case 5: BODY(__VA_ARGS__, 2, 2); break;                                                     \
    case 6: BODY(__VA_ARGS__, 2, 3); break;                                                     \
    case 7: BODY(__VA_ARGS__, 2, 4); break;                                                     \
    case 8: BODY(__VA_ARGS__, 3, 1); break;                                                     \
    case 9: BODY(__VA_ARGS__, 3, 2); break;                                                     \
    case 10: BODY(__VA_ARGS__, 3, 3); break;                                                    \
    case 11: BODY(__VA_ARGS__, 3, 4); break;                                                    \
    case 12: BODY(__VA_ARGS__, 4, 1); break;                                                    \
    case 13: BODY(__VA_ARGS__, 4, 2); break;                                                    \
    case 14: BODY(__VA_ARGS__, 4, 3); break;                                                    \
    default: BODY(__VA_ARGS__, 4, 4); break;                                                    \
    }

#define CALL_TILE(dt, r_, c_) tile_body(dt, x, xs, r_, (const char *)w, ws, c_, K, out)

static void avx2_tile_f32(const float *x, int64_t xs, int R, const void *w, int64_t ws, int C,
                          int64_t K, float *out) {
    TILE_CASES(CALL_TILE, ELA_F32)
}
static void avx2_tile_f16(const float *x, int64_t xs, int R, const void *w, int64_t ws, int C,
                          int64_t K, float *out) {
    TILE_CASES(CALL_TILE, ELA_F16)
}
static void avx2_tile_bf16(const float *x, int64_t xs, int R, const void *w, int64_t ws, int C,
                           int64_t K, float *out) {
    TILE_CASES(CALL_TILE, ELA_BF16)
}

static void avx2_tile(ela_dtype dtype, const float *x, int64_t xs, int R, const void *w,
                      int64_t ws, int C, int64_t K, float *out) {
    if (dtype == ELA_F16)
        avx2_tile_f16(x, xs, R, w, ws, C, K, out);
    else if (dtype == ELA_BF16)
        avx2_tile_bf16(x, xs, R, w, ws, C, K, out);
    else
        avx2_tile_f32(x, xs, R, w, ws, C, K, out);
}

/* ---- q8_0 ------------------------------------------------------------------------------ */
AVX2_INLINE void q8_body(const char *xq, int64_t xqs, int R, const uint8_t *w, int64_t ws, int C,
                         int64_t K, float *out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[CPU_MM_R][CPU_MM_C];
    const float *xd[CPU_MM_R];
    UNROLL for (int r = 0; r < R; r++) {
        xd[r] = (const float *)(const void *)(xq + r * xqs + K);
        UNROLL for (int c = 0; c < C; c++)
            acc[r][c] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < K / ELA_Q8_0_BLOCK; b++) {
        __m256i xv[CPU_MM_R], ax[CPU_MM_R];
        UNROLL for (int r = 0; r < R; r++) {
            xv[r] = _mm256_loadu_si256((const __m256i *)(const void *)(xq + r * xqs + b * 32));
            ax[r] = _mm256_abs_epi8(xv[r]);
        }
        UNROLL for (int c = 0; c < C; c++) {
            const uint8_t *blk = w + c * ws + b * ELA_Q8_0_BYTES;
            if (R <= 2)
                _mm_prefetch((const char *)blk + CPU_MM_PREFETCH, _MM_HINT_T0);
            __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2));
            uint16_t dh;
            memcpy(&dh, blk, 2);
            float dw = _cvtsh_ss(dh);
            UNROLL for (int r = 0; r < R; r++) {
                __m256i p = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(ax[r], _mm256_sign_epi8(wv, xv[r])), ones);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(xd[r][b] * dw),
                                            acc[r][c]);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int c = 0; c < C; c++)
            out[r * CPU_MM_C + c] = hsum8(acc[r][c]);
}

#define CALL_Q8(unused, r_, c_)                                                                 \
    q8_body((const char *)xq, xqs, r_, (const uint8_t *)w, ws, c_, K, out)

static void avx2_tile_q8_0(const void *xq, int64_t xqs, int R, const void *w, int64_t ws, int C,
                           int64_t K, float *out) {
    TILE_CASES(CALL_Q8, 0)
}

/* Exactly ela_q8_0_quantize_qs per block: max |x| ignoring NaNs, d = amax / 127, and roundf
 * (ties away from zero) as trunc(t) + (|t - trunc(t)| >= 0.5 ? sign(t) : 0), which is exact. */
static void avx2_quantize_row(const float *x, int64_t K, void *xq) {
    int8_t *q = xq;
    float *d = (float *)(void *)((char *)xq + K);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < K / ELA_Q8_0_BLOCK; b++) {
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(x + b * 32 + 8 * j);
            __m256 a = _mm256_and_ps(_mm256_and_ps(v[j], abs_mask),
                                     _mm256_cmp_ps(v[j], v[j], _CMP_ORD_Q)); /* NaN -> 0 */
            amax = _mm256_max_ps(amax, a);
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float dd = _mm_cvtss_f32(m4) / 127.0f;
        float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i iv[4];
        for (int j = 0; j < 4; j++) {
            __m256 t = _mm256_mul_ps(v[j], vid);
            t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q)); /* NaN -> 0 */
            __m256 tr = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 frac = _mm256_and_ps(_mm256_sub_ps(t, tr), abs_mask);
            __m256 step = _mm256_or_ps(one, _mm256_and_ps(t, sign_mask));
            tr = _mm256_add_ps(tr, _mm256_and_ps(step, _mm256_cmp_ps(frac, half, _CMP_GE_OQ)));
            iv[j] = _mm256_cvtps_epi32(tr);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]),
                                       _mm256_packs_epi32(iv[2], iv[3]));
        _mm256_storeu_si256((__m256i *)(void *)(q + b * 32), _mm256_permutevar8x32_epi32(p, perm));
        d[b] = dd;
    }
}

static const cpu_matmul_kernels avx2_kernels = {
    "avx2", avx2_tile, avx2_tile_q8_0, avx2_quantize_row,
};

const cpu_matmul_kernels *cpu_matmul_kernels_avx2(void) { return &avx2_kernels; }

/* AVX-512 matmul kernels (see matmul_kernels.h for the contract and matmul_kernels_scalar.c
 * for the reference). Built with -mavx512f/bw/vl/dq -mavx2 -mfma -mf16c.
 * f32/f16/bf16: 16 lanes per step; each of the C weight vectors is loaded and converted once
 * and feeds R FMAs (R * C accumulators in registers); the K % 16 tail is a masked load, so
 * nothing past a row is read. Bound: decode, the DRAM bandwidth of the weights; prefill with
 * R = C = 4, 16 FMAs per 4 conversions and 8 loads.
 * q8_0 with AVX512-VNNI (checked at run time, the function carries its own target attribute):
 * two 32-blocks per zmm. vpdpbusd multiplies unsigned by signed bytes, so the activations are
 * offset to x + 128 (an xor with 0x80) and 128 * sum(w) is subtracted, computed once per weight
 * block by a second vpdpbusd that every activation row shares. The int32 sums are converted and
 * scaled by d_x * d_w, the two blocks' scales broadcast to the two halves of the vector. About
 * 14 cycles per block pair and weight row for M = 1 (27 GFLOP/s on one core), so one core alone
 * is near its share of DRAM bandwidth. Without VNNI, the AVX2 q8_0 kernel runs.
 * Weight rows are prefetched CPU_MM_PREFETCH bytes ahead (f32/f16/bf16: in decode tiles,
 * R <= 2). */
#include <immintrin.h>
#include <string.h>

#include "core/dtype.h"
#include "matmul_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define AVX512_INLINE static inline __attribute__((always_inline))
#else
#define AVX512_INLINE static inline
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define UNROLL _Pragma("GCC unroll 4")
#else
#define UNROLL
#endif

AVX512_INLINE __m512 load16(ela_dtype dt, const char *w, int64_t k) {
    if (dt == ELA_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(w + 2 * k)));
    if (dt == ELA_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(w + 2 * k))),
            16));
    return _mm512_loadu_ps((const float *)(const void *)w + k);
}

AVX512_INLINE __m512 load16_mask(ela_dtype dt, const char *w, int64_t k, __mmask16 m) {
    if (dt == ELA_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + 2 * k));
    if (dt == ELA_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + 2 * k)), 16));
    return _mm512_maskz_loadu_ps(m, (const float *)(const void *)w + k);
}

AVX512_INLINE void tile_body(ela_dtype dt, const float *x, int64_t xs, int R, const char *w,
                             int64_t ws, int C, int64_t K, float *out) {
    __m512 acc[CPU_MM_R][CPU_MM_C];
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    int64_t k = 0;
    const int64_t es = dt == ELA_F32 ? 4 : 2;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[CPU_MM_C];
        if (R <= 2)
            UNROLL for (int c = 0; c < C; c++)
                _mm_prefetch(w + c * ws + k * es + CPU_MM_PREFETCH, _MM_HINT_T0);
        UNROLL for (int c = 0; c < C; c++)
            wv[c] = load16(dt, w + c * ws, k);
        UNROLL for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * xs + k);
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);
        __m512 wv[CPU_MM_C];
        UNROLL for (int c = 0; c < C; c++)
            wv[c] = load16_mask(dt, w + c * ws, k, m);
        UNROLL for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + r * xs + k);
            UNROLL for (int c = 0; c < C; c++)
                acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int c = 0; c < C; c++)
            out[r * CPU_MM_C + c] = _mm512_reduce_add_ps(acc[r][c]);
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

static void avx512_tile_f32(const float *x, int64_t xs, int R, const void *w, int64_t ws, int C,
                            int64_t K, float *out) {
    TILE_CASES(CALL_TILE, ELA_F32)
}
static void avx512_tile_f16(const float *x, int64_t xs, int R, const void *w, int64_t ws, int C,
                            int64_t K, float *out) {
    TILE_CASES(CALL_TILE, ELA_F16)
}
static void avx512_tile_bf16(const float *x, int64_t xs, int R, const void *w, int64_t ws, int C,
                             int64_t K, float *out) {
    TILE_CASES(CALL_TILE, ELA_BF16)
}

static void avx512_tile(ela_dtype dtype, const float *x, int64_t xs, int R, const void *w,
                        int64_t ws, int C, int64_t K, float *out) {
    if (dtype == ELA_F16)
        avx512_tile_f16(x, xs, R, w, ws, C, K, out);
    else if (dtype == ELA_BF16)
        avx512_tile_bf16(x, xs, R, w, ws, C, K, out);
    else
        avx512_tile_f32(x, xs, R, w, ws, C, K, out);
}

/* ---- q8_0 with VNNI ---------------------------------------------------------------------- */
#define VNNI_INLINE static inline __attribute__((always_inline, target("avx512vnni")))

/* Two f16 scales (34 bytes apart) as lanes 0-7 and 8-15; `second` 0 leaves the top half 0. */
VNNI_INLINE __m512 weight_scales(const uint8_t *blk, int second) {
    uint16_t d0, d1 = 0;
    memcpy(&d0, blk, 2);
    if (second)
        memcpy(&d1, blk + ELA_Q8_0_BYTES, 2);
    __m128 s = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)d0 | (uint32_t)d1 << 16)));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                 _mm512_castps128_ps512(s));
}

/* Blocks b and b + 1 (two = 1) or the last block b alone (two = 0) of every tile pair. */
#define Q8_STEP(two)                                                                            \
    do {                                                                                        \
        __m512i xu[CPU_MM_R];                                                                   \
        __m512 sx[CPU_MM_R];                                                                    \
        UNROLL for (int r = 0; r < R; r++) {                                                    \
            /* A single last block: the row's slack makes the 64-byte load safe, and its top  \
             * half meets zero weights and a zero scale. */                                     \
            xu[r] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(xq + r * xqs + b * 32)), \
                                     x80);                                                      \
            __m128 s2 = (two) ? _mm_castsi128_ps(_mm_loadl_epi64(                               \
                                    (const __m128i *)(const void *)(xd[r] + b)))                \
                              : _mm_load_ss(xd[r] + b);                                         \
            sx[r] = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(s2));                  \
        }                                                                                       \
        UNROLL for (int c = 0; c < C; c++) {                                                    \
            const uint8_t *blk = w + c * ws + b * ELA_Q8_0_BYTES;                               \
            _mm_prefetch((const char *)blk + CPU_MM_PREFETCH, _MM_HINT_T0);                     \
            __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 2));          \
            __m256i hi = (two) ? _mm256_loadu_si256((const __m256i *)(const void *)(blk + 36))  \
                               : _mm256_setzero_si256();                                        \
            __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);                 \
            __m512 sw = weight_scales(blk, (two));                                              \
            /* -128 * sum(w) per lane: the offset of x + 128, shared by every activation row */ \
            __m512i ncorr = _mm512_sub_epi32(                                                   \
                _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), x80, wv));  \
            UNROLL for (int r = 0; r < R; r++) {                                                \
                __m512i isum = _mm512_dpbusd_epi32(ncorr, xu[r], wv);                           \
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),                           \
                                            _mm512_mul_ps(sx[r], sw), acc[r][c]);               \
            }                                                                                   \
        }                                                                                       \
    } while (0)

VNNI_INLINE void q8_vnni_body(const char *xq, int64_t xqs, int R, const uint8_t *w, int64_t ws,
                              int C, int64_t K, float *out) {
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const int64_t nb = K / ELA_Q8_0_BLOCK;
    __m512 acc[CPU_MM_R][CPU_MM_C];
    const float *xd[CPU_MM_R];
    UNROLL for (int r = 0; r < R; r++) {
        xd[r] = (const float *)(const void *)(xq + r * xqs + K);
        UNROLL for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    }
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2)
        Q8_STEP(1);
    if (b < nb)
        Q8_STEP(0);
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int c = 0; c < C; c++)
            out[r * CPU_MM_C + c] = _mm512_reduce_add_ps(acc[r][c]);
}

#define CALL_Q8(unused, r_, c_)                                                                 \
    q8_vnni_body((const char *)xq, xqs, r_, (const uint8_t *)w, ws, c_, K, out)

__attribute__((target("avx512vnni"))) static void avx512_tile_q8_0_vnni(
    const void *xq, int64_t xqs, int R, const void *w, int64_t ws, int C, int64_t K, float *out) {
    TILE_CASES(CALL_Q8, 0)
}

static void avx512_tile_q8_0_avx2(const void *xq, int64_t xqs, int R, const void *w, int64_t ws,
                                  int C, int64_t K, float *out) {
    cpu_matmul_kernels_avx2()->tile_q8_0(xq, xqs, R, w, ws, C, K, out);
}

/* Exactly ela_q8_0_quantize_qs per block (see avx2_quantize_row for the rounding). */
static void avx512_quantize_row(const float *x, int64_t K, void *xq) {
    int8_t *q = xq;
    float *d = (float *)(void *)((char *)xq + K);
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512i sign_mask = _mm512_set1_epi32((int)0x80000000u);
    for (int64_t b = 0; b < K / ELA_Q8_0_BLOCK; b++) {
        __m512 v[2], amax = _mm512_setzero_ps();
        for (int j = 0; j < 2; j++) {
            v[j] = _mm512_loadu_ps(x + b * 32 + 16 * j);
            __mmask16 ord = _mm512_cmp_ps_mask(v[j], v[j], _CMP_ORD_Q);
            amax = _mm512_max_ps(amax, _mm512_maskz_mov_ps(ord, _mm512_abs_ps(v[j])));
        }
        float dd = _mm512_reduce_max_ps(amax) / 127.0f;
        float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        for (int j = 0; j < 2; j++) {
            __m512 t = _mm512_mul_ps(v[j], vid);
            t = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, t, _CMP_ORD_Q), t); /* NaN -> 0 */
            __m512 tr = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __mmask16 up =
                _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, tr)), half, _CMP_GE_OQ);
            __m512 step = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_castps_si512(one), _mm512_and_si512(_mm512_castps_si512(t), sign_mask)));
            tr = _mm512_mask_add_ps(tr, up, tr, step);
            _mm_storeu_si128((__m128i *)(void *)(q + b * 32 + 16 * j),
                             _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(tr)));
        }
        d[b] = dd;
    }
}

static const cpu_matmul_kernels avx512_vnni_kernels = {
    "avx512-vnni", avx512_tile, avx512_tile_q8_0_vnni, avx512_quantize_row,
};
static const cpu_matmul_kernels avx512_kernels = {
    "avx512", avx512_tile, avx512_tile_q8_0_avx2, avx512_quantize_row,
};

const cpu_matmul_kernels *cpu_matmul_kernels_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") ? &avx512_vnni_kernels : &avx512_kernels;
}

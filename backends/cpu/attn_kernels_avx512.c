/* AVX-512 inner kernels of CPU dense attention (see attn_kernels.h for the contract and
 * attn_kernels_scalar.c for the reference). Built with -mavx512f/bw/vl/dq -mavx2 -mfma -mf16c;
 * the CPU backend picks this table at run time when the CPU has AVX-512F+BW+VL+DQ. As in the
 * contract, dp (the f32 row length of Q, K, V, O) is a multiple of 16. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attn_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define AVX512_INLINE static inline __attribute__((always_inline))
#else
#define AVX512_INLINE static inline
#endif

#define BK CPU_ATTN_BK

/* Lanes [0, n) of a 16-lane mask, n clamped to [0, 16]. */
AVX512_INLINE __mmask16 lanes16(int64_t n) {
    if (n <= 0)
        return 0;
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

/* ---------------------------------------------------------------------------------------
 * load_rows: 32 elements per step (two ymm of f16/bf16 -> two zmm of f32). The tail of a row
 * is a masked load, so nothing past byte d*size of a row is read (the last row may end at the
 * end of a mapping); [d, dp) is written as zeros. Each step also prefetches (into L2) the same
 * bytes of row r + rows, i.e. of the next tile, which the driver converts after this tile's
 * qk/softmax/pv: in decode that overlaps the DRAM reads of the next tile with this tile's
 * compute (measured on 2 cores: about 1.6x the decode throughput). Prefetches never fault,
 * so rows past the end of the tensor are harmless. (Converting packed rows as one long row
 * is faster from L1 but measured 15% slower in decode, so rows stay separate.)
 * Bound: cvtph2ps + store, about 2 cycles per 16 elements from L1 on Zen 4 (3 with the f32
 * tile in L2); in decode the DRAM bandwidth of the source (K and V are read once).
 * ------------------------------------------------------------------------------------- */
AVX512_INLINE __m512 f16x16_to_f32(__m256i h) { return _mm512_cvtph_ps(h); }

AVX512_INLINE __m512 bf16x16_to_f32(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Prefetch into L2 the line at integer address `at` (it may lie past the end of the source,
 * where a pointer could not point). */
#define PREFETCH_L2(at) _mm_prefetch((const char *)(at), _MM_HINT_T1)

/* q8_0 (see attn_kernels.h): column c of a row lies in the 34-byte block c / 32, whose first
 * two bytes are its f16 scale; 16 int8 -> 16 f32 is pmovsxbd + cvtdq2ps, then one multiply
 * by the broadcast scale (exact, as in the scalar dequantization). */
#define Q8_BYTES 34

AVX512_INLINE const uint8_t *q8_block(const void *row, int64_t c) {
    return (const uint8_t *)row + (c >> 5) * Q8_BYTES;
}

AVX512_INLINE __m512 q8_scale(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return _mm512_cvtph_ps(_mm256_set1_epi16((short)h));
}

/* The 16 int8 at p times the scale s. */
AVX512_INLINE __m512 q8x16_to_f32(const uint8_t *p, __m512 s) {
    __m128i q = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
}

/* Converts row s (uint16_t *) into out up to column d, prefetching the same bytes at `next`;
 * leaves c at the first column >= d. */
#define LOAD_ROW_16BIT(CVT)                                                                 \
    do {                                                                                    \
        for (; c + 32 <= d; c += 32) {                                                      \
            PREFETCH_L2(next + (uintptr_t)(2 * c));                                         \
            __m256i h0 = _mm256_loadu_si256((const __m256i *)(s + c));                      \
            __m256i h1 = _mm256_loadu_si256((const __m256i *)(s + c + 16));                 \
            _mm512_storeu_ps(out + c, CVT(h0));                                             \
            _mm512_storeu_ps(out + c + 16, CVT(h1));                                        \
        }                                                                                   \
        if (c < d)                                                                          \
            PREFETCH_L2(next + (uintptr_t)(2 * c));                                         \
        for (; c < d; c += 16)                                                              \
            _mm512_mask_storeu_ps(out + c, lanes16(dp - c),                                 \
                                  CVT(_mm256_maskz_loadu_epi16(lanes16(d - c), s + c)));    \
    } while (0)

static void avx512_load_rows(float *dst, int64_t dp, const void *src, int64_t src_stride,
                             ela_dtype dtype, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const char *row = (const char *)src + r * src_stride;
        uintptr_t next = (uintptr_t)row + (uintptr_t)(rows * src_stride); /* row r of next tile */
        float *out = dst + r * dp;
        int64_t c = 0;
        if (dtype == ELA_F32) {
            const float *s = (const float *)row;
            for (; c + 32 <= d; c += 32) {
                PREFETCH_L2(next + (uintptr_t)(4 * c));
                PREFETCH_L2(next + (uintptr_t)(4 * c + 64));
                __m512 x0 = _mm512_loadu_ps(s + c);
                __m512 x1 = _mm512_loadu_ps(s + c + 16);
                _mm512_storeu_ps(out + c, x0);
                _mm512_storeu_ps(out + c + 16, x1);
            }
            if (c < d)
                PREFETCH_L2(next + (uintptr_t)(4 * c));
            for (; c < d; c += 16)
                _mm512_mask_storeu_ps(out + c, lanes16(dp - c),
                                      _mm512_maskz_loadu_ps(lanes16(d - c), s + c));
        } else if (dtype == ELA_F16) {
            const uint16_t *s = (const uint16_t *)row;
            LOAD_ROW_16BIT(f16x16_to_f32);
        } else if (dtype == ELA_Q8_0) { /* d % 32 == 0: whole blocks */
            for (; c < d; c += 32) {
                const uint8_t *b = q8_block(row, c);
                uintptr_t nb = next + (uintptr_t)(b - (const uint8_t *)row);
                PREFETCH_L2(nb);
                PREFETCH_L2(nb + Q8_BYTES - 1); /* a block may straddle two lines */
                __m512 sc = q8_scale(b);
                _mm512_storeu_ps(out + c, q8x16_to_f32(b + 2, sc));
                _mm512_storeu_ps(out + c + 16, q8x16_to_f32(b + 18, sc));
            }
        } else {
            const uint16_t *s = (const uint16_t *)row;
            LOAD_ROW_16BIT(bf16x16_to_f32);
        }
        for (; c < dp; c += 16)
            _mm512_mask_storeu_ps(out + c, lanes16(dp - c), _mm512_setzero_ps());
    }
}

/* ---------------------------------------------------------------------------------------
 * qk: S = Q K^T. A tile keeps 16 zmm accumulators acc[i], i = row*NK + key, for one of three
 * shapes (rows x keys) 4x4, 2x8, 1x16; each accumulator holds 16 partial sums over c of one
 * (row, key) dot product. Per 16 columns a 4x4 tile loads 4 Q + 4 K vectors for 16 FMAs (2x8
 * and 1x16, used only for the last R % 4 rows, are load-heavier). After the c loop one
 * transpose-style reduction (reduce16: 16 shuffles, 14 blends, 15 adds) turns the 16
 * accumulators into one vector whose lane i is dot product i, so there is no horizontal sum
 * per (row, key). Keys past nk repeat key nk-1 (valid memory) and are masked off at the
 * store. Bound: FMA peak less the reduction, 45 ops per tile against dp FMAs. Measured at
 * dp = 128: 90-100% of peak on Zen 4 (adds and blends run beside the FMAs), about 75% on
 * Sapphire Rapids (shuffles and blends share ports 0/5 with the FMAs).
 * ------------------------------------------------------------------------------------- */

/* Level 1 of the reduction: [a0+a2, a1+a3, b2+b0, b3+b1] in 128-bit blocks, i.e. 8 partial
 * sums of a in the low half and 8 of b in the high half (1 blend, 1 shuffle, 1 add). */
AVX512_INLINE __m512 fold_halves(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_mask_blend_ps(0xff00, a, b),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 3, 2)));
}

/* Level 2: from [A0 A1 B0 B1] and [C0 C1 D0 D1] (blocks of 4) to [A C B D], each block 4
 * partial sums (1 blend, 1 two-source permute, 1 add). */
AVX512_INLINE __m512 fold_quarters(__m512 ab, __m512 cd) {
    const __m512i idx =
        _mm512_setr_epi32(4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 24, 25, 26, 27);
    return _mm512_add_ps(_mm512_mask_blend_ps(0xf0f0, ab, cd),
                         _mm512_permutex2var_ps(ab, idx, cd));
}

/* Level 3: within each block, from [x0 x1 x2 x3] and [y0 y1 y2 y3] to [x0+x2, x1+x3, y2+y0,
 * y3+y1] (1 blend, 1 in-lane shuffle, 1 add). */
AVX512_INLINE __m512 fold_pairs(__m512 x, __m512 y) {
    return _mm512_add_ps(_mm512_mask_blend_ps(0xcccc, x, y),
                         _mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 3, 2)));
}

/* Lane i of the result is the sum of all 16 lanes of a_i: 16 shuffles, 14 blends, 15 adds
 * (a plain unpack/shuffle tree needs 30 shuffles, and shuffles compete with FMAs for ports).
 * The inputs go in permuted so that the lanes come out in order. */
AVX512_INLINE __m512 reduce16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5,
                              __m512 a6, __m512 a7, __m512 a8, __m512 a9, __m512 a10,
                              __m512 a11, __m512 a12, __m512 a13, __m512 a14, __m512 a15) {
    __m512 w0 = fold_quarters(fold_halves(a0, a8), fold_halves(a4, a12));
    __m512 w1 = fold_quarters(fold_halves(a1, a9), fold_halves(a5, a13));
    __m512 w2 = fold_quarters(fold_halves(a2, a10), fold_halves(a6, a14));
    __m512 w3 = fold_quarters(fold_halves(a3, a11), fold_halves(a7, a15));
    __m512 u0 = fold_pairs(w0, w1), u1 = fold_pairs(w2, w3);
    return _mm512_add_ps(_mm512_shuffle_ps(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
}

#define REDUCE_ACC()                                                                        \
    reduce16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)

#define ZERO16()                                                                            \
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,   \
           a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0,      \
           a15 = a0

/* Row of key j, clamped to the last real key so that tail tiles read valid memory. */
AVX512_INLINE const float *key_row(const float *K, int64_t j, int64_t nk, int64_t dp) {
    return K + (j < nk ? j : nk - 1) * dp;
}

static void qk_tile_4x4(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                        int64_t dp) {
    const float *q0 = Q, *q1 = Q + dp, *q2 = Q + 2 * dp, *q3 = Q + 3 * dp;
    const float *k0 = key_row(K, j0, nk, dp), *k1 = key_row(K, j0 + 1, nk, dp);
    const float *k2 = key_row(K, j0 + 2, nk, dp), *k3 = key_row(K, j0 + 3, nk, dp);
    ZERO16();
    for (int64_t c = 0; c < dp; c += 16) {
        __m512 x0 = _mm512_loadu_ps(q0 + c), x1 = _mm512_loadu_ps(q1 + c);
        __m512 x2 = _mm512_loadu_ps(q2 + c), x3 = _mm512_loadu_ps(q3 + c);
        __m512 y = _mm512_loadu_ps(k0 + c);
        a0 = _mm512_fmadd_ps(x0, y, a0);
        a4 = _mm512_fmadd_ps(x1, y, a4);
        a8 = _mm512_fmadd_ps(x2, y, a8);
        a12 = _mm512_fmadd_ps(x3, y, a12);
        y = _mm512_loadu_ps(k1 + c);
        a1 = _mm512_fmadd_ps(x0, y, a1);
        a5 = _mm512_fmadd_ps(x1, y, a5);
        a9 = _mm512_fmadd_ps(x2, y, a9);
        a13 = _mm512_fmadd_ps(x3, y, a13);
        y = _mm512_loadu_ps(k2 + c);
        a2 = _mm512_fmadd_ps(x0, y, a2);
        a6 = _mm512_fmadd_ps(x1, y, a6);
        a10 = _mm512_fmadd_ps(x2, y, a10);
        a14 = _mm512_fmadd_ps(x3, y, a14);
        y = _mm512_loadu_ps(k3 + c);
        a3 = _mm512_fmadd_ps(x0, y, a3);
        a7 = _mm512_fmadd_ps(x1, y, a7);
        a11 = _mm512_fmadd_ps(x2, y, a11);
        a15 = _mm512_fmadd_ps(x3, y, a15);
    }
    __m512 z = REDUCE_ACC();
    __mmask8 m = (__mmask8)lanes16(nk - j0) & 0xf;
    _mm_mask_storeu_ps(S + j0, m, _mm512_castps512_ps128(z));
    _mm_mask_storeu_ps(S + BK + j0, m, _mm512_extractf32x4_ps(z, 1));
    _mm_mask_storeu_ps(S + 2 * BK + j0, m, _mm512_extractf32x4_ps(z, 2));
    _mm_mask_storeu_ps(S + 3 * BK + j0, m, _mm512_extractf32x4_ps(z, 3));
}

#define QK_2X8(k, acc0, acc1)                                                               \
    do {                                                                                    \
        __m512 y_ = _mm512_loadu_ps(kp##k + c);                                             \
        acc0 = _mm512_fmadd_ps(x0, y_, acc0);                                               \
        acc1 = _mm512_fmadd_ps(x1, y_, acc1);                                               \
    } while (0)

static void qk_tile_2x8(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                        int64_t dp) {
    const float *q0 = Q, *q1 = Q + dp;
    const float *kp0 = key_row(K, j0, nk, dp), *kp1 = key_row(K, j0 + 1, nk, dp);
    const float *kp2 = key_row(K, j0 + 2, nk, dp), *kp3 = key_row(K, j0 + 3, nk, dp);
    const float *kp4 = key_row(K, j0 + 4, nk, dp), *kp5 = key_row(K, j0 + 5, nk, dp);
    const float *kp6 = key_row(K, j0 + 6, nk, dp), *kp7 = key_row(K, j0 + 7, nk, dp);
    ZERO16();
    for (int64_t c = 0; c < dp; c += 16) {
        __m512 x0 = _mm512_loadu_ps(q0 + c), x1 = _mm512_loadu_ps(q1 + c);
        QK_2X8(0, a0, a8);
        QK_2X8(1, a1, a9);
        QK_2X8(2, a2, a10);
        QK_2X8(3, a3, a11);
        QK_2X8(4, a4, a12);
        QK_2X8(5, a5, a13);
        QK_2X8(6, a6, a14);
        QK_2X8(7, a7, a15);
    }
    __m512 z = REDUCE_ACC();
    __mmask8 m = (__mmask8)lanes16(nk - j0);
    _mm256_mask_storeu_ps(S + j0, m, _mm512_castps512_ps256(z));
    _mm256_mask_storeu_ps(S + BK + j0, m, _mm512_extractf32x8_ps(z, 1));
}

#define QK_1X16(k) a##k = _mm512_fmadd_ps(x0, _mm512_loadu_ps(kp##k + c), a##k)

static void qk_tile_1x16(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                         int64_t dp) {
    const float *kp0 = key_row(K, j0, nk, dp), *kp1 = key_row(K, j0 + 1, nk, dp);
    const float *kp2 = key_row(K, j0 + 2, nk, dp), *kp3 = key_row(K, j0 + 3, nk, dp);
    const float *kp4 = key_row(K, j0 + 4, nk, dp), *kp5 = key_row(K, j0 + 5, nk, dp);
    const float *kp6 = key_row(K, j0 + 6, nk, dp), *kp7 = key_row(K, j0 + 7, nk, dp);
    const float *kp8 = key_row(K, j0 + 8, nk, dp), *kp9 = key_row(K, j0 + 9, nk, dp);
    const float *kp10 = key_row(K, j0 + 10, nk, dp), *kp11 = key_row(K, j0 + 11, nk, dp);
    const float *kp12 = key_row(K, j0 + 12, nk, dp), *kp13 = key_row(K, j0 + 13, nk, dp);
    const float *kp14 = key_row(K, j0 + 14, nk, dp), *kp15 = key_row(K, j0 + 15, nk, dp);
    ZERO16();
    for (int64_t c = 0; c < dp; c += 16) {
        __m512 x0 = _mm512_loadu_ps(Q + c);
        QK_1X16(0);
        QK_1X16(1);
        QK_1X16(2);
        QK_1X16(3);
        QK_1X16(4);
        QK_1X16(5);
        QK_1X16(6);
        QK_1X16(7);
        QK_1X16(8);
        QK_1X16(9);
        QK_1X16(10);
        QK_1X16(11);
        QK_1X16(12);
        QK_1X16(13);
        QK_1X16(14);
        QK_1X16(15);
    }
    _mm512_mask_storeu_ps(S + j0, lanes16(nk - j0), REDUCE_ACC());
}

static void avx512_qk(float *S, const float *Q, const float *K, int64_t R, int64_t nk,
                      int64_t dp) {
    int64_t r = 0;
    for (; r + 4 <= R; r += 4)
        for (int64_t j = 0; j < nk; j += 4)
            qk_tile_4x4(S + r * BK, Q + r * dp, K, j, nk, dp);
    if (R - r >= 2) {
        for (int64_t j = 0; j < nk; j += 8)
            qk_tile_2x8(S + r * BK, Q + r * dp, K, j, nk, dp);
        r += 2;
    }
    if (r < R)
        for (int64_t j = 0; j < nk; j += 16)
            qk_tile_1x16(S + r * BK, Q + r * dp, K, j, nk, dp);
}

/* ---------------------------------------------------------------------------------------
 * softmax: a row of S is 4 zmm (BK = 64). exp2(x) = 2^n * p(f), n = round(x), f = x - n in
 * [-1/2, 1/2], p the degree-6 minimax polynomial of 2^f (Cephes exp2f; measured relative
 * error below 8e-8 in f32, 1.3 ulp), 2^n applied by vscalefps, which underflows to denormals
 * and 0 correctly. x is clamped to [-200, 200] first so that exp2(-inf) is exactly 0 and f
 * never becomes NaN.
 * Bound: negligible next to qk and pv (about 20 vector ops per 16 keys).
 * ------------------------------------------------------------------------------------- */
AVX512_INLINE __m512 exp2_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-200.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(200.0f), x);
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static void avx512_softmax(float *S, float *m, float *l, float *alpha, int64_t R, int64_t nk) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __mmask16 m0 = lanes16(nk), m1 = lanes16(nk - 16), m2 = lanes16(nk - 32),
                    m3 = lanes16(nk - 48);
    for (int64_t r = 0; r < R; r++) {
        float *s = S + r * BK;
        /* Lanes past nk (whatever they hold) read as -inf and so come out of exp2 as 0. */
        __m512 x0 = _mm512_mask_loadu_ps(ninf, m0, s);
        __m512 x1 = _mm512_mask_loadu_ps(ninf, m1, s + 16);
        __m512 x2 = _mm512_mask_loadu_ps(ninf, m2, s + 32);
        __m512 x3 = _mm512_mask_loadu_ps(ninf, m3, s + 48);
        float mx =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(x0, x1), _mm512_max_ps(x2, x3)));
        float m_new = mx > m[r] ? mx : m[r];
        if (m_new == -INFINITY) {
            __m512 zero = _mm512_setzero_ps();
            _mm512_storeu_ps(s, zero);
            _mm512_storeu_ps(s + 16, zero);
            _mm512_storeu_ps(s + 32, zero);
            _mm512_storeu_ps(s + 48, zero);
            alpha[r] = 1.0f;
            continue;
        }
        __m512 vm = _mm512_set1_ps(m_new);
        __m512 p0 = exp2_ps(_mm512_sub_ps(x0, vm)), p1 = exp2_ps(_mm512_sub_ps(x1, vm));
        __m512 p2 = exp2_ps(_mm512_sub_ps(x2, vm)), p3 = exp2_ps(_mm512_sub_ps(x3, vm));
        _mm512_storeu_ps(s, p0);
        _mm512_storeu_ps(s + 16, p1);
        _mm512_storeu_ps(s + 32, p2);
        _mm512_storeu_ps(s + 48, p3);
        float sum =
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(p0, p1), _mm512_add_ps(p2, p3)));
        float a = _mm512_cvtss_f32(exp2_ps(_mm512_set1_ps(m[r] - m_new)));
        alpha[r] = a;
        l[r] = l[r] * a + sum;
        m[r] = m_new;
    }
}

/* ---------------------------------------------------------------------------------------
 * pv: O = alpha*O + P V. A tile is NR <= 4 rows x NV <= 4 zmm (64 columns): up to 16
 * accumulators acc[i][v] = O[r0+i][c0+16v..] scaled by alpha on load, then per key j one
 * broadcast of P[r0+i][j] per row and one load of V[j][c0+16v..] per vector, NR*NV FMAs.
 * A full 4x64 tile does 8 loads per 16 FMAs; V is read once per 4 rows. NR and NV are
 * compile-time constants in each instantiation, so unused accumulators vanish.
 * Bound: FMA peak for R >= 4 (the V tile is in L1/L2).
 * ------------------------------------------------------------------------------------- */
#define PV_ROW(i, STMT)                                                                     \
    do {                                                                                    \
        if (NR > (i)) {                                                                     \
            STMT(i, 0);                                                                     \
            if (NV > 1)                                                                     \
                STMT(i, 1);                                                                 \
            if (NV > 2)                                                                     \
                STMT(i, 2);                                                                 \
            if (NV > 3)                                                                     \
                STMT(i, 3);                                                                 \
        }                                                                                   \
    } while (0)
#define PV_ALL(STMT)                                                                        \
    do {                                                                                    \
        PV_ROW(0, STMT);                                                                    \
        PV_ROW(1, STMT);                                                                    \
        PV_ROW(2, STMT);                                                                    \
        PV_ROW(3, STMT);                                                                    \
    } while (0)
#define PV_INIT(i, v) acc##i##v = _mm512_mul_ps(al##i, _mm512_loadu_ps(O + (i) * dp + 16 * (v)))
#define PV_FMA(i, v) acc##i##v = _mm512_fmadd_ps(p##i, y##v, acc##i##v)
#define PV_STORE(i, v) _mm512_storeu_ps(O + (i) * dp + 16 * (v), acc##i##v)

/* O, P, alpha point at row r0 (and O at column c0); V at column c0. */
AVX512_INLINE void pv_tile(float *O, const float *P, const float *V, const float *alpha,
                           int64_t nk, int64_t dp, const int NR, const int NV) {
    __m512 acc00, acc01, acc02, acc03, acc10, acc11, acc12, acc13;
    __m512 acc20, acc21, acc22, acc23, acc30, acc31, acc32, acc33;
    acc00 = acc01 = acc02 = acc03 = acc10 = acc11 = acc12 = acc13 = _mm512_setzero_ps();
    acc20 = acc21 = acc22 = acc23 = acc30 = acc31 = acc32 = acc33 = acc00;
    __m512 al0 = _mm512_set1_ps(alpha[0]);
    __m512 al1 = NR > 1 ? _mm512_set1_ps(alpha[1]) : al0;
    __m512 al2 = NR > 2 ? _mm512_set1_ps(alpha[2]) : al0;
    __m512 al3 = NR > 3 ? _mm512_set1_ps(alpha[3]) : al0;
    PV_ALL(PV_INIT);
    for (int64_t j = 0; j < nk; j++) {
        const float *vj = V + j * dp;
        __m512 y0 = _mm512_loadu_ps(vj);
        __m512 y1 = NV > 1 ? _mm512_loadu_ps(vj + 16) : y0;
        __m512 y2 = NV > 2 ? _mm512_loadu_ps(vj + 32) : y0;
        __m512 y3 = NV > 3 ? _mm512_loadu_ps(vj + 48) : y0;
        __m512 p0 = _mm512_set1_ps(P[j]);
        __m512 p1 = NR > 1 ? _mm512_set1_ps(P[BK + j]) : p0;
        __m512 p2 = NR > 2 ? _mm512_set1_ps(P[2 * BK + j]) : p0;
        __m512 p3 = NR > 3 ? _mm512_set1_ps(P[3 * BK + j]) : p0;
        PV_ALL(PV_FMA);
    }
    PV_ALL(PV_STORE);
}

/* One instantiation per (NR, NV): NR in 1..4, NV in {1, 2, 4}. */
#define PV_NR(NR)                                                                           \
    static void pv_rows##NR(float *O, const float *P, const float *V, const float *alpha,   \
                            int64_t nk, int64_t dp) {                                       \
        int64_t c = 0;                                                                      \
        for (; c + 64 <= dp; c += 64)                                                       \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 4);                                 \
        if (c + 32 <= dp) {                                                                 \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 2);                                 \
            c += 32;                                                                        \
        }                                                                                   \
        if (c < dp)                                                                         \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 1);                                 \
    }
PV_NR(1)
PV_NR(2)
PV_NR(3)
PV_NR(4)

static void avx512_pv(float *O, const float *P, const float *V, const float *alpha, int64_t R,
                      int64_t nk, int64_t dp) {
    int64_t r = 0;
    for (; r + 4 <= R; r += 4)
        pv_rows4(O + r * dp, P + r * BK, V, alpha + r, nk, dp);
    switch (R - r) {
    case 3: pv_rows3(O + r * dp, P + r * BK, V, alpha + r, nk, dp); break;
    case 2: pv_rows2(O + r * dp, P + r * BK, V, alpha + r, nk, dp); break;
    case 1: pv_rows1(O + r * dp, P + r * BK, V, alpha + r, nk, dp); break;
    default: break;
    }
}

/* ---------------------------------------------------------------------------------------
 * Row path (qk_rows, pv_rows): few query rows (decode: R = G), K and V read in place through
 * row pointers and converted in registers, no f32 tile. Per key the work is 2*R*d FMA flops
 * for each of K and V against d*(2 or 4) bytes of each: at R = 4, f16, 2 flops per byte, so
 * the bound is the DRAM bandwidth of K and V (each byte read once), provided the compute of a
 * key hides under the time its bytes take to arrive. Per 16 columns a key costs 1 load +
 * conversion (2 p0/p5 uops for f16/bf16) and R FMAs in qk and again in pv, plus the qk
 * reduction: ~55 p0/p5 cycles at R = 4, d = 128; measured ~25 ns per f16 key from L2 (about
 * 20 GB/s of K+V per core) against ~45 ns per key for its 512 bytes at the 11-12 GB/s per core
 * that DRAM gives here, so the compute fits under the reads with room to spare.
 * qk_rows: tiles of NR rows x NK keys, NR*NK = 16 zmm accumulators (8x2, 4x4, 2x8, 1x16: the
 * tallest shape that fits the rows left), so each K vector is converted once per NR rows;
 * the accumulators are reduced by reduce16 as in qk. pv_rows: tiles of NR rows x NV zmm of
 * columns (4x64 or 8x32 columns: 16 accumulators); per key NV conversions of V, NR broadcasts
 * of P, NR*NV FMAs; each column pass reads its own bytes of V, so V is converted once.
 * Prefetch: a qk tile prefetches (into L2) every line of the pf rows of its keys, a pv pass
 * the same columns of the pf rows of its keys: the driver passes the next tile's rows, so the
 * next 64 keys' K and V (32 KiB at f16, d = 128) are in flight while this tile computes.
 * Without it decode reaches ~40% of the read bandwidth (the hardware prefetchers stop at each
 * 4 KiB page and lag behind 2 streams that are consumed in bursts); prefetching only every
 * 2nd-16th row, 2-4 tiles ahead, or with T0/NTA hints all measured slower.
 * q8_0 (a quantized KV cache): 16 columns cost pmovsxbd + cvtdq2ps + a multiply by the
 * block's scale (3 uops against cvtph2ps's 2) plus the scale itself once per 32 columns and
 * key; measured from L2 at R = 4, d = 128: ~31 ns per key for qk + pv, the same as f16, for
 * 272 bytes of K+V instead of 512, so 2 cores need ~17 GB/s to keep up, about the DRAM's.
 * ------------------------------------------------------------------------------------- */
enum { DT_F32, DT_F16, DT_BF16, DT_Q8 };

/* Columns [c, c+16) of a row of DT, as f32; for q8_0, s is the scale of the block holding them
 * (row_scale), which the callers load once per block and key rather than once per 16 columns. */
AVX512_INLINE __m512 row16(const void *row, int64_t c, const int DT, __m512 s) {
    if (DT == DT_F32)
        return _mm512_loadu_ps((const float *)row + c);
    if (DT == DT_Q8)
        return q8x16_to_f32(q8_block(row, c) + 2 + (c & 31), s);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c));
    return DT == DT_F16 ? f16x16_to_f32(h) : bf16x16_to_f32(h);
}

/* q8_0: the broadcast scale of the block holding column c; other dtypes: unused (zero). */
AVX512_INLINE __m512 row_scale(const void *row, int64_t c, const int DT) {
    return DT == DT_Q8 ? q8_scale(q8_block(row, c)) : _mm512_setzero_ps();
}

/* Byte offset in a row of DT where column c starts (q8_0: its block), or, with `end`, where
 * the bytes of columns [0, c) end (q8_0: past the block holding column c - 1). */
AVX512_INLINE int64_t row_byte(int64_t c, int end, const int DT) {
    if (DT == DT_Q8)
        return (end ? (c + 31) >> 5 : c >> 5) * Q8_BYTES;
    return c * (DT == DT_F32 ? 4 : 2);
}

/* Prefetch into L2 the lines holding bytes [b0, b1) of row (b0 < b1). */
AVX512_INLINE void prefetch_span(const void *row, int64_t b0, int64_t b1) {
    uintptr_t at = ((uintptr_t)row + (uintptr_t)b0) & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)row + (uintptr_t)b1;
    for (; at < end; at += 64)
        PREFETCH_L2(at);
}

AVX512_INLINE const void *row_at(const void *const *rows, int64_t j, int64_t nk) {
    return rows[j < nk ? j : nk - 1]; /* keys past nk repeat the last one (valid memory) */
}

/* Store lane r*NK + k of z to S[r*BK + j0 + k] for r < NR, k < min(NK, nk - j0). The base is
 * shifted so that row r's lanes land at its S row; masked-off lanes are not touched. */
AVX512_INLINE void store_tile(float *S, __m512 z, int64_t j0, int64_t nk, const int NR,
                              const int NK) {
    __mmask16 live = lanes16(nk - j0 < NK ? nk - j0 : NK);
    for (int r = 0; r < NR; r++)
        _mm512_mask_storeu_ps(S + r * (BK - NK) + j0, (__mmask16)(live << (r * NK)), z);
}

#define QKR_FMA(acc, r, y) acc = _mm512_fmadd_ps(_mm512_loadu_ps(Q + (r) * dp + c), y, acc)

/* Rows [0, NR) of Q/S (pointing at the block's first row) x keys [j0, j0 + 16/NR). */
AVX512_INLINE void qkr_tile(float *S, const float *Q, int64_t dp, const void *const *krow,
                            int64_t j0, int64_t nk, int64_t d, const void *const *pf,
                            int64_t npf, const int NR, const int DT) {
    const int NK = 16 / NR;
    const void *k0 = row_at(krow, j0, nk), *k1 = row_at(krow, j0 + 1, nk);
    const void *k2 = k0, *k3 = k0, *k4 = k0, *k5 = k0, *k6 = k0, *k7 = k0, *k8 = k0, *k9 = k0;
    const void *k10 = k0, *k11 = k0, *k12 = k0, *k13 = k0, *k14 = k0, *k15 = k0;
    if (NK >= 4) {
        k2 = row_at(krow, j0 + 2, nk);
        k3 = row_at(krow, j0 + 3, nk);
    }
    if (NK >= 8) {
        k4 = row_at(krow, j0 + 4, nk);
        k5 = row_at(krow, j0 + 5, nk);
        k6 = row_at(krow, j0 + 6, nk);
        k7 = row_at(krow, j0 + 7, nk);
    }
    if (NK >= 16) {
        k8 = row_at(krow, j0 + 8, nk);
        k9 = row_at(krow, j0 + 9, nk);
        k10 = row_at(krow, j0 + 10, nk);
        k11 = row_at(krow, j0 + 11, nk);
        k12 = row_at(krow, j0 + 12, nk);
        k13 = row_at(krow, j0 + 13, nk);
        k14 = row_at(krow, j0 + 14, nk);
        k15 = row_at(krow, j0 + 15, nk);
    }
    ZERO16();
    /* q8_0 walks the columns a block (32) at a time, the scales of up to 8 keys loaded once per
     * block each (at NK = 16 they would not fit the registers beside 16 accumulators). */
    const int64_t CB = DT == DT_Q8 ? 32 : 16;
    for (int64_t cb = 0; cb < d; cb += CB) {
        __m512 s0 = row_scale(k0, cb, DT), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0;
        __m512 s7 = s0;
        if (NK >= 2 && NK <= 8)
            s1 = row_scale(k1, cb, DT);
        if (NK >= 4 && NK <= 8) {
            s2 = row_scale(k2, cb, DT);
            s3 = row_scale(k3, cb, DT);
        }
        if (NK == 8) {
            s4 = row_scale(k4, cb, DT);
            s5 = row_scale(k5, cb, DT);
            s6 = row_scale(k6, cb, DT);
            s7 = row_scale(k7, cb, DT);
        }
        for (int64_t c = cb; c < cb + CB; c += 16) {
            if (NR == 8) { /* acc r*2 + k */
                __m512 y0 = row16(k0, c, DT, s0), y1 = row16(k1, c, DT, s1);
                __m512 x = _mm512_loadu_ps(Q + c);
                a0 = _mm512_fmadd_ps(x, y0, a0);
                a1 = _mm512_fmadd_ps(x, y1, a1);
                x = _mm512_loadu_ps(Q + dp + c);
                a2 = _mm512_fmadd_ps(x, y0, a2);
                a3 = _mm512_fmadd_ps(x, y1, a3);
                x = _mm512_loadu_ps(Q + 2 * dp + c);
                a4 = _mm512_fmadd_ps(x, y0, a4);
                a5 = _mm512_fmadd_ps(x, y1, a5);
                x = _mm512_loadu_ps(Q + 3 * dp + c);
                a6 = _mm512_fmadd_ps(x, y0, a6);
                a7 = _mm512_fmadd_ps(x, y1, a7);
                x = _mm512_loadu_ps(Q + 4 * dp + c);
                a8 = _mm512_fmadd_ps(x, y0, a8);
                a9 = _mm512_fmadd_ps(x, y1, a9);
                x = _mm512_loadu_ps(Q + 5 * dp + c);
                a10 = _mm512_fmadd_ps(x, y0, a10);
                a11 = _mm512_fmadd_ps(x, y1, a11);
                x = _mm512_loadu_ps(Q + 6 * dp + c);
                a12 = _mm512_fmadd_ps(x, y0, a12);
                a13 = _mm512_fmadd_ps(x, y1, a13);
                x = _mm512_loadu_ps(Q + 7 * dp + c);
                a14 = _mm512_fmadd_ps(x, y0, a14);
                a15 = _mm512_fmadd_ps(x, y1, a15);
            } else if (NR == 4) { /* acc r*4 + k */
                __m512 x0 = _mm512_loadu_ps(Q + c), x1 = _mm512_loadu_ps(Q + dp + c);
                __m512 x2 = _mm512_loadu_ps(Q + 2 * dp + c), x3 = _mm512_loadu_ps(Q + 3 * dp + c);
                __m512 y = row16(k0, c, DT, s0);
                a0 = _mm512_fmadd_ps(x0, y, a0);
                a4 = _mm512_fmadd_ps(x1, y, a4);
                a8 = _mm512_fmadd_ps(x2, y, a8);
                a12 = _mm512_fmadd_ps(x3, y, a12);
                y = row16(k1, c, DT, s1);
                a1 = _mm512_fmadd_ps(x0, y, a1);
                a5 = _mm512_fmadd_ps(x1, y, a5);
                a9 = _mm512_fmadd_ps(x2, y, a9);
                a13 = _mm512_fmadd_ps(x3, y, a13);
                y = row16(k2, c, DT, s2);
                a2 = _mm512_fmadd_ps(x0, y, a2);
                a6 = _mm512_fmadd_ps(x1, y, a6);
                a10 = _mm512_fmadd_ps(x2, y, a10);
                a14 = _mm512_fmadd_ps(x3, y, a14);
                y = row16(k3, c, DT, s3);
                a3 = _mm512_fmadd_ps(x0, y, a3);
                a7 = _mm512_fmadd_ps(x1, y, a7);
                a11 = _mm512_fmadd_ps(x2, y, a11);
                a15 = _mm512_fmadd_ps(x3, y, a15);
            } else if (NR == 2) { /* acc r*8 + k */
                __m512 x0 = _mm512_loadu_ps(Q + c), x1 = _mm512_loadu_ps(Q + dp + c);
                __m512 y = row16(k0, c, DT, s0);
                a0 = _mm512_fmadd_ps(x0, y, a0);
                a8 = _mm512_fmadd_ps(x1, y, a8);
                y = row16(k1, c, DT, s1);
                a1 = _mm512_fmadd_ps(x0, y, a1);
                a9 = _mm512_fmadd_ps(x1, y, a9);
                y = row16(k2, c, DT, s2);
                a2 = _mm512_fmadd_ps(x0, y, a2);
                a10 = _mm512_fmadd_ps(x1, y, a10);
                y = row16(k3, c, DT, s3);
                a3 = _mm512_fmadd_ps(x0, y, a3);
                a11 = _mm512_fmadd_ps(x1, y, a11);
                y = row16(k4, c, DT, s4);
                a4 = _mm512_fmadd_ps(x0, y, a4);
                a12 = _mm512_fmadd_ps(x1, y, a12);
                y = row16(k5, c, DT, s5);
                a5 = _mm512_fmadd_ps(x0, y, a5);
                a13 = _mm512_fmadd_ps(x1, y, a13);
                y = row16(k6, c, DT, s6);
                a6 = _mm512_fmadd_ps(x0, y, a6);
                a14 = _mm512_fmadd_ps(x1, y, a14);
                y = row16(k7, c, DT, s7);
                a7 = _mm512_fmadd_ps(x0, y, a7);
                a15 = _mm512_fmadd_ps(x1, y, a15);
            } else { /* acc k */
                __m512 x = _mm512_loadu_ps(Q + c);
                a0 = _mm512_fmadd_ps(x, row16(k0, c, DT, row_scale(k0, c, DT)), a0);
                a1 = _mm512_fmadd_ps(x, row16(k1, c, DT, row_scale(k1, c, DT)), a1);
                a2 = _mm512_fmadd_ps(x, row16(k2, c, DT, row_scale(k2, c, DT)), a2);
                a3 = _mm512_fmadd_ps(x, row16(k3, c, DT, row_scale(k3, c, DT)), a3);
                a4 = _mm512_fmadd_ps(x, row16(k4, c, DT, row_scale(k4, c, DT)), a4);
                a5 = _mm512_fmadd_ps(x, row16(k5, c, DT, row_scale(k5, c, DT)), a5);
                a6 = _mm512_fmadd_ps(x, row16(k6, c, DT, row_scale(k6, c, DT)), a6);
                a7 = _mm512_fmadd_ps(x, row16(k7, c, DT, row_scale(k7, c, DT)), a7);
                a8 = _mm512_fmadd_ps(x, row16(k8, c, DT, row_scale(k8, c, DT)), a8);
                a9 = _mm512_fmadd_ps(x, row16(k9, c, DT, row_scale(k9, c, DT)), a9);
                a10 = _mm512_fmadd_ps(x, row16(k10, c, DT, row_scale(k10, c, DT)), a10);
                a11 = _mm512_fmadd_ps(x, row16(k11, c, DT, row_scale(k11, c, DT)), a11);
                a12 = _mm512_fmadd_ps(x, row16(k12, c, DT, row_scale(k12, c, DT)), a12);
                a13 = _mm512_fmadd_ps(x, row16(k13, c, DT, row_scale(k13, c, DT)), a13);
                a14 = _mm512_fmadd_ps(x, row16(k14, c, DT, row_scale(k14, c, DT)), a14);
                a15 = _mm512_fmadd_ps(x, row16(k15, c, DT, row_scale(k15, c, DT)), a15);
            }
        }
    }
    store_tile(S, REDUCE_ACC(), j0, nk, NR, NK);
    int64_t bytes = row_byte(d, 1, DT);
    for (int64_t j = j0; j < j0 + NK && j < npf; j++)
        prefetch_span(pf[j], 0, bytes);
}

/* Row blocks of 8, then 4, 2, 1 rows; only the first block prefetches. */
AVX512_INLINE void qk_rows_dt(float *S, const float *Q, int64_t R, int64_t dp,
                              const void *const *krow, int64_t nk, int64_t d,
                              const void *const *pf, int64_t npf, const int DT) {
    int64_t r = 0;
    for (; r + 8 <= R; r += 8, npf = 0)
        for (int64_t j = 0; j < nk; j += 2)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 8, DT);
    if (R - r >= 4) {
        for (int64_t j = 0; j < nk; j += 4)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 4, DT);
        r += 4;
        npf = 0;
    }
    if (R - r >= 2) {
        for (int64_t j = 0; j < nk; j += 8)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 2, DT);
        r += 2;
        npf = 0;
    }
    if (r < R)
        for (int64_t j = 0; j < nk; j += 16)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 1, DT);
}

static void qk_rows_f32(float *S, const float *Q, int64_t R, int64_t dp, const void *const *krow,
                        int64_t nk, int64_t d, const void *const *pf, int64_t npf) {
    qk_rows_dt(S, Q, R, dp, krow, nk, d, pf, npf, DT_F32);
}
static void qk_rows_f16(float *S, const float *Q, int64_t R, int64_t dp, const void *const *krow,
                        int64_t nk, int64_t d, const void *const *pf, int64_t npf) {
    qk_rows_dt(S, Q, R, dp, krow, nk, d, pf, npf, DT_F16);
}
static void qk_rows_bf16(float *S, const float *Q, int64_t R, int64_t dp,
                         const void *const *krow, int64_t nk, int64_t d, const void *const *pf,
                         int64_t npf) {
    qk_rows_dt(S, Q, R, dp, krow, nk, d, pf, npf, DT_BF16);
}
/* q8_0 with R in several row blocks (3, 5, 6, 7 rows in qk; 5, 6, 7 in pv): every block would
 * convert each key again, and a q8_0 conversion takes p0/p5 uops the FMAs need. Instead the
 * keys are dequantized once into an f32 stage on the stack (at most Q8_STAGE floats, 32 KiB:
 * L1, so up to 64 keys at d = 128) and the blocks run the f32 kernels on it; the next tile's
 * rows are prefetched while a chunk is staged. Measured at R = 7 (Qwen2.5's G), d = 64, 128:
 * qk + pv 1.55x faster than converting in each block
 * (65 -> 42 ns per key at d = 128). */
#define Q8_STAGE 8192

static int q8_stage_qk(int64_t R, int64_t d) {
    return R < 8 && (R & (R - 1)) != 0 && d * 16 <= Q8_STAGE;
}

/* Dequantizes rows[0, n) (d floats each) into stage, srow[j] = its row j; prefetches
 * pf[0, npf) (q8_0 rows of d elements). */
static void q8_stage_rows(float *stage, const void **srow, const void *const *rows, int64_t n,
                          int64_t d, const void *const *pf, int64_t npf) {
    for (int64_t j = 0; j < n; j++) {
        float *out = stage + j * d;
        srow[j] = out;
        for (int64_t c = 0; c < d; c += 32) {
            const uint8_t *b = q8_block(rows[j], c);
            __m512 sc = q8_scale(b);
            _mm512_store_ps(out + c, q8x16_to_f32(b + 2, sc));
            _mm512_store_ps(out + c + 16, q8x16_to_f32(b + 18, sc));
        }
        if (j < npf)
            prefetch_span(pf[j], 0, row_byte(d, 1, DT_Q8));
    }
    for (int64_t j = n; j < npf; j++)
        prefetch_span(pf[j], 0, row_byte(d, 1, DT_Q8));
}

static void qk_rows_q8(float *S, const float *Q, int64_t R, int64_t dp, const void *const *krow,
                       int64_t nk, int64_t d, const void *const *pf, int64_t npf) {
    if (!q8_stage_qk(R, d)) {
        qk_rows_dt(S, Q, R, dp, krow, nk, d, pf, npf, DT_Q8);
        return;
    }
    _Alignas(64) float stage[Q8_STAGE];
    const void *srow[BK];
    int64_t chunk = Q8_STAGE / d < BK ? Q8_STAGE / d : BK;
    for (int64_t j0 = 0; j0 < nk; j0 += chunk) {
        int64_t n = nk - j0 < chunk ? nk - j0 : chunk;
        /* the last chunk prefetches the next tile's rows */
        q8_stage_rows(stage, srow, krow + j0, n, d, pf, j0 + n == nk ? npf : 0);
        qk_rows_dt(S + j0, Q, R, dp, srow, n, d, NULL, 0, DT_F32);
    }
}

static void avx512_qk_rows(float *S, const float *Q, int64_t R, int64_t dp,
                           const void *const *krow, int64_t nk, int64_t d, ela_dtype dtype,
                           const void *const *pf, int64_t npf) {
    if (!pf)
        npf = 0;
    if (dtype == ELA_F32)
        qk_rows_f32(S, Q, R, dp, krow, nk, d, pf, npf);
    else if (dtype == ELA_F16)
        qk_rows_f16(S, Q, R, dp, krow, nk, d, pf, npf);
    else if (dtype == ELA_Q8_0)
        qk_rows_q8(S, Q, R, dp, krow, nk, d, pf, npf);
    else
        qk_rows_bf16(S, Q, R, dp, krow, nk, d, pf, npf);
}

/* pv_rows tile: rows [0, NR) x columns [c0, c0 + 16*NV), NR <= 8, NR*NV <= 16. */
#define PVR_ROW(i, STMT)                                                                    \
    do {                                                                                    \
        if (NR > (i)) {                                                                     \
            STMT(i, 0);                                                                     \
            if (NV > 1)                                                                     \
                STMT(i, 1);                                                                 \
            if (NV > 2)                                                                     \
                STMT(i, 2);                                                                 \
            if (NV > 3)                                                                     \
                STMT(i, 3);                                                                 \
        }                                                                                   \
    } while (0)
#define PVR_ALL(STMT)                                                                       \
    do {                                                                                    \
        PVR_ROW(0, STMT);                                                                   \
        PVR_ROW(1, STMT);                                                                   \
        PVR_ROW(2, STMT);                                                                   \
        PVR_ROW(3, STMT);                                                                   \
        PVR_ROW(4, STMT);                                                                   \
        PVR_ROW(5, STMT);                                                                   \
        PVR_ROW(6, STMT);                                                                   \
        PVR_ROW(7, STMT);                                                                   \
    } while (0)
#define PVR_INIT(i, v)                                                                      \
    acc##i##v = _mm512_mul_ps(_mm512_set1_ps(alpha[i]), _mm512_loadu_ps(O + (i) * dp + 16 * (v)))
#define PVR_FMA(i, v) acc##i##v = _mm512_fmadd_ps(_mm512_set1_ps(P[(i) * BK + j]), y##v, acc##i##v)
#define PVR_STORE(i, v) _mm512_storeu_ps(O + (i) * dp + 16 * (v), acc##i##v)

/* O points at (row 0, column c0); vrow rows are read from column c0. Tiles of 32 or 64 columns
 * start at a multiple of 32, so for q8_0 (d % 32 == 0) y0/y1 lie in one block and y2/y3 in the
 * next; a 16-column tile lies in one block. */
AVX512_INLINE void pvr_tile(float *O, const float *P, const float *alpha, int64_t dp,
                            const void *const *vrow, int64_t nk, int64_t c0,
                            const void *const *pf, int64_t npf, const int NR, const int NV,
                            const int DT) {
    const int64_t pf0 = row_byte(c0, 0, DT), pf1 = row_byte(c0 + 16 * NV, 1, DT);
    __m512 acc00, acc01, acc02, acc03, acc10, acc11, acc12, acc13, acc20, acc21, acc22, acc23;
    __m512 acc30, acc31, acc32, acc33, acc40, acc41, acc42, acc43, acc50, acc51, acc52, acc53;
    __m512 acc60, acc61, acc62, acc63, acc70, acc71, acc72, acc73;
    acc00 = acc01 = acc02 = acc03 = acc10 = acc11 = acc12 = acc13 = _mm512_setzero_ps();
    acc20 = acc21 = acc22 = acc23 = acc30 = acc31 = acc32 = acc33 = acc00;
    acc40 = acc41 = acc42 = acc43 = acc50 = acc51 = acc52 = acc53 = acc00;
    acc60 = acc61 = acc62 = acc63 = acc70 = acc71 = acc72 = acc73 = acc00;
    PVR_ALL(PVR_INIT);
    for (int64_t j = 0; j < nk; j++) {
        const void *vj = vrow[j];
        __m512 sa = row_scale(vj, c0, DT), sb = NV > 2 ? row_scale(vj, c0 + 32, DT) : sa;
        __m512 y0 = row16(vj, c0, DT, sa);
        __m512 y1 = NV > 1 ? row16(vj, c0 + 16, DT, sa) : y0;
        __m512 y2 = NV > 2 ? row16(vj, c0 + 32, DT, sb) : y0;
        __m512 y3 = NV > 3 ? row16(vj, c0 + 48, DT, sb) : y0;
        if (j < npf)
            prefetch_span(pf[j], pf0, pf1);
        PVR_ALL(PVR_FMA);
    }
    PVR_ALL(PVR_STORE);
}

/* Column passes of 64, 32, 16 columns for NR <= 4 (32, 16 for NR = 8): d % 16 == 0. */
AVX512_INLINE void pvr_block(float *O, const float *P, const float *alpha, int64_t dp,
                             const void *const *vrow, int64_t nk, int64_t d,
                             const void *const *pf, int64_t npf, const int NR, const int DT) {
    int64_t c = 0;
    if (NR <= 4)
        for (; c + 64 <= d; c += 64)
            pvr_tile(O + c, P, alpha, dp, vrow, nk, c, pf, npf, NR, 4, DT);
    for (; c + 32 <= d; c += 32)
        pvr_tile(O + c, P, alpha, dp, vrow, nk, c, pf, npf, NR, 2, DT);
    if (c < d)
        pvr_tile(O + c, P, alpha, dp, vrow, nk, c, pf, npf, NR, 1, DT);
}

/* Row blocks of 8, then 4 and the last 1-3 rows; only the first block prefetches. */
AVX512_INLINE void pv_rows_dt(float *O, const float *P, const float *alpha, int64_t R,
                              int64_t dp, const void *const *vrow, int64_t nk, int64_t d,
                              const void *const *pf, int64_t npf, const int DT) {
    int64_t r = 0;
    for (; r + 8 <= R; r += 8, npf = 0)
        pvr_block(O + r * dp, P + r * BK, alpha + r, dp, vrow, nk, d, pf, npf, 8, DT);
    if (R - r >= 4) {
        pvr_block(O + r * dp, P + r * BK, alpha + r, dp, vrow, nk, d, pf, npf, 4, DT);
        r += 4;
        npf = 0;
    }
    switch (R - r) {
    case 3: pvr_block(O + r * dp, P + r * BK, alpha + r, dp, vrow, nk, d, pf, npf, 3, DT); break;
    case 2: pvr_block(O + r * dp, P + r * BK, alpha + r, dp, vrow, nk, d, pf, npf, 2, DT); break;
    case 1: pvr_block(O + r * dp, P + r * BK, alpha + r, dp, vrow, nk, d, pf, npf, 1, DT); break;
    default: break;
    }
}

static void pv_rows_f32(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                        const void *const *vrow, int64_t nk, int64_t d, const void *const *pf,
                        int64_t npf) {
    pv_rows_dt(O, P, alpha, R, dp, vrow, nk, d, pf, npf, DT_F32);
}
static void pv_rows_f16(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                        const void *const *vrow, int64_t nk, int64_t d, const void *const *pf,
                        int64_t npf) {
    pv_rows_dt(O, P, alpha, R, dp, vrow, nk, d, pf, npf, DT_F16);
}
static void pv_rows_bf16(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                         const void *const *vrow, int64_t nk, int64_t d, const void *const *pf,
                         int64_t npf) {
    pv_rows_dt(O, P, alpha, R, dp, vrow, nk, d, pf, npf, DT_BF16);
}
static void pv_rows_q8(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                       const void *const *vrow, int64_t nk, int64_t d, const void *const *pf,
                       int64_t npf) {
    if (!(R > 4 && R < 8 && d * 16 <= Q8_STAGE)) { /* one row block (or too wide to stage) */
        pv_rows_dt(O, P, alpha, R, dp, vrow, nk, d, pf, npf, DT_Q8);
        return;
    }
    static const float ones[8] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    _Alignas(64) float stage[Q8_STAGE];
    const void *srow[BK];
    int64_t chunk = Q8_STAGE / d < BK ? Q8_STAGE / d : BK;
    for (int64_t j0 = 0; j0 < nk; j0 += chunk) {
        int64_t n = nk - j0 < chunk ? nk - j0 : chunk;
        q8_stage_rows(stage, srow, vrow + j0, n, d, pf, j0 + n == nk ? npf : 0);
        /* alpha rescales O once, with the first chunk */
        pv_rows_dt(O, P + j0, j0 == 0 ? alpha : ones, R, dp, srow, n, d, NULL, 0, DT_F32);
    }
}

static void avx512_pv_rows(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                           const void *const *vrow, int64_t nk, int64_t d, ela_dtype dtype,
                           const void *const *pf, int64_t npf) {
    if (!pf)
        npf = 0;
    if (dtype == ELA_F32)
        pv_rows_f32(O, P, alpha, R, dp, vrow, nk, d, pf, npf);
    else if (dtype == ELA_F16)
        pv_rows_f16(O, P, alpha, R, dp, vrow, nk, d, pf, npf);
    else if (dtype == ELA_Q8_0)
        pv_rows_q8(O, P, alpha, R, dp, vrow, nk, d, pf, npf);
    else
        pv_rows_bf16(O, P, alpha, R, dp, vrow, nk, d, pf, npf);
}

static const cpu_attn_kernels avx512_kernels = {
    "avx512",       avx512_load_rows, avx512_qk, avx512_softmax, avx512_pv, avx512_qk_rows,
    avx512_pv_rows,
};

const cpu_attn_kernels *cpu_attn_kernels_avx512(void) { return &avx512_kernels; }

/* AVX2+FMA+F16C inner kernels of CPU dense attention (see attn_kernels.h for the contract and
 * attn_kernels_scalar.c for the reference). Built with -mavx2 -mfma -mf16c; the CPU backend
 * picks this table at run time on x86-64 CPUs with those features but no AVX-512. As in the
 * contract, dp (the f32 row length of Q, K, V, O) is a multiple of 16 (8 would do here). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attn_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define AVX2_INLINE static inline __attribute__((always_inline))
#else
#define AVX2_INLINE static inline
#endif

#define BK CPU_ATTN_BK

/* All-ones in lanes [0, n) of 8 (n clamped to [0, 8]), for maskload/maskstore/blend. */
AVX2_INLINE __m256i lanes8(int64_t n) {
    int32_t k = n < 0 ? 0 : n > 8 ? 8 : (int32_t)n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---------------------------------------------------------------------------------------
 * load_rows: 8 elements per step (one xmm of f16/bf16 -> one ymm of f32), four steps (64
 * source bytes) per iteration. AVX2 has no masked 16-bit load, so the last < 8 elements of a
 * row go through a zeroed 16-byte buffer: nothing past the end of a row is read. [d, dp) is
 * written as zeros. Each iteration also prefetches (into L2) the same 64 bytes of row
 * r + rows, i.e. of the next tile, which the driver converts after this tile's qk/softmax/pv:
 * in decode that overlaps the DRAM reads of the next tile with this tile's compute.
 * Prefetches never fault, so rows past the end of the tensor are harmless.
 * Bound: cvtph2ps + store from L1/L2; in decode the DRAM bandwidth of the source.
 * ------------------------------------------------------------------------------------- */
AVX2_INLINE __m256 f16x8_to_f32(__m128i h) { return _mm256_cvtph_ps(h); }

AVX2_INLINE __m256 bf16x8_to_f32(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Prefetch into L2 the line at integer address `at` (it may lie past the end of the source,
 * where a pointer could not point). */
#define PREFETCH_L2(at) _mm_prefetch((const char *)(at), _MM_HINT_T1)

/* q8_0 (see attn_kernels.h): column c of a row lies in the 34-byte block c / 32, whose first
 * two bytes are its f16 scale; 8 int8 -> 8 f32 is pmovsxbd + cvtdq2ps, then one multiply by
 * the broadcast scale (exact, as in the scalar dequantization). */
#define Q8_BYTES 34

AVX2_INLINE const uint8_t *q8_block(const void *row, int64_t c) {
    return (const uint8_t *)row + (c >> 5) * Q8_BYTES;
}

AVX2_INLINE __m256 q8_scale(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return _mm256_set1_ps(_cvtsh_ss(h));
}

/* The 8 int8 at p times the scale s. */
AVX2_INLINE __m256 q8x8_to_f32(const uint8_t *p, __m256 s) {
    __m128i q = _mm_loadl_epi64((const __m128i *)(const void *)p);
    return _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
}

/* Converts row s (uint16_t *) into out up to column d, prefetching the same bytes at `next`;
 * leaves c at the first column >= d. */
#define LOAD_ROW_16BIT(CVT)                                                                 \
    do {                                                                                    \
        for (; c + 32 <= d; c += 32) {                                                      \
            PREFETCH_L2(next + (uintptr_t)(2 * c));                                         \
            __m128i h0 = _mm_loadu_si128((const __m128i *)(s + c));                         \
            __m128i h1 = _mm_loadu_si128((const __m128i *)(s + c + 8));                     \
            __m128i h2 = _mm_loadu_si128((const __m128i *)(s + c + 16));                    \
            __m128i h3 = _mm_loadu_si128((const __m128i *)(s + c + 24));                    \
            _mm256_storeu_ps(out + c, CVT(h0));                                             \
            _mm256_storeu_ps(out + c + 8, CVT(h1));                                         \
            _mm256_storeu_ps(out + c + 16, CVT(h2));                                        \
            _mm256_storeu_ps(out + c + 24, CVT(h3));                                        \
        }                                                                                   \
        if (c < d)                                                                          \
            PREFETCH_L2(next + (uintptr_t)(2 * c));                                         \
        for (; c + 8 <= d; c += 8)                                                          \
            _mm256_storeu_ps(out + c, CVT(_mm_loadu_si128((const __m128i *)(s + c))));      \
        if (c < d) {                                                                        \
            uint16_t tmp[8] = {0};                                                          \
            memcpy(tmp, s + c, (size_t)(d - c) * sizeof(uint16_t));                         \
            _mm256_maskstore_ps(out + c, lanes8(dp - c),                                    \
                                CVT(_mm_loadu_si128((const __m128i *)tmp)));                \
            c += 8;                                                                         \
        }                                                                                   \
    } while (0)

static void avx2_load_rows(float *dst, int64_t dp, const void *src, int64_t src_stride,
                           ela_dtype dtype, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const char *row = (const char *)src + r * src_stride;
        uintptr_t next = (uintptr_t)row + (uintptr_t)(rows * src_stride); /* row r of next tile */
        float *out = dst + r * dp;
        int64_t c = 0;
        if (dtype == ELA_F32) {
            const float *s = (const float *)row;
            for (; c + 16 <= d; c += 16) {
                PREFETCH_L2(next + (uintptr_t)(4 * c));
                __m256 x0 = _mm256_loadu_ps(s + c);
                __m256 x1 = _mm256_loadu_ps(s + c + 8);
                _mm256_storeu_ps(out + c, x0);
                _mm256_storeu_ps(out + c + 8, x1);
            }
            if (c < d)
                PREFETCH_L2(next + (uintptr_t)(4 * c));
            /* maskload does not touch masked-off lanes, so it never reads past the row. */
            for (; c < d; c += 8)
                _mm256_maskstore_ps(out + c, lanes8(dp - c),
                                    _mm256_maskload_ps(s + c, lanes8(d - c)));
        } else if (dtype == ELA_F16) {
            const uint16_t *s = (const uint16_t *)row;
            LOAD_ROW_16BIT(f16x8_to_f32);
        } else if (dtype == ELA_Q8_0) { /* d % 32 == 0: whole blocks */
            for (; c < d; c += 32) {
                const uint8_t *b = q8_block(row, c);
                uintptr_t nb = next + (uintptr_t)(b - (const uint8_t *)row);
                PREFETCH_L2(nb);
                PREFETCH_L2(nb + Q8_BYTES - 1); /* a block may straddle two lines */
                __m256 sc = q8_scale(b);
                _mm256_storeu_ps(out + c, q8x8_to_f32(b + 2, sc));
                _mm256_storeu_ps(out + c + 8, q8x8_to_f32(b + 10, sc));
                _mm256_storeu_ps(out + c + 16, q8x8_to_f32(b + 18, sc));
                _mm256_storeu_ps(out + c + 24, q8x8_to_f32(b + 26, sc));
            }
        } else {
            const uint16_t *s = (const uint16_t *)row;
            LOAD_ROW_16BIT(bf16x8_to_f32);
        }
        for (; c < dp; c += 8)
            _mm256_maskstore_ps(out + c, lanes8(dp - c), _mm256_setzero_ps());
    }
}

/* ---------------------------------------------------------------------------------------
 * qk: S = Q K^T. A tile keeps 8 ymm accumulators acc[i], i = row*NK + key, as 2 rows x 4
 * keys (or 1 x 8 for the last odd row); each holds 8 partial sums over c of one dot
 * product. Per 8 columns a 2x4 tile loads 2 Q + 4 K vectors for 8 FMAs. After the c loop a
 * transpose-style reduction (unpack + add within 128-bit lanes, then one cross-lane add;
 * 14 shuffles + 7 adds) gives one ymm whose lane i is dot product i. Keys past nk repeat key
 * nk-1 and are masked off at the store. Bound: FMA peak less the reduction (21 ops per 8
 * dot products against dp/8 FMAs each). Measured 75-80% of peak on Zen 4 at dp = 128 (GCC
 * folds each K load into both of its FMAs: 10 loads per 8 FMAs); a 4x3 tile that keeps K in
 * registers measured only 4% faster at dp = 128 and 20% slower at dp = 64 and R = 2.
 * ------------------------------------------------------------------------------------- */

/* Per 128-bit lane L: [sum a, sum b, sum c, sum d] over the 4 floats of lane L of each input. */
AVX2_INLINE __m256 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    __m256d abd = _mm256_castps_pd(ab), cdd = _mm256_castps_pd(cd);
    return _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(abd, cdd)),
                         _mm256_castpd_ps(_mm256_unpackhi_pd(abd, cdd)));
}

/* Lane i of the result is the sum of all 8 lanes of accumulator i. */
AVX2_INLINE __m256 reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5,
                           __m256 a6, __m256 a7) {
    __m256 v0 = reduce4(a0, a1, a2, a3), v1 = reduce4(a4, a5, a6, a7);
    return _mm256_add_ps(_mm256_permute2f128_ps(v0, v1, 0x20),
                         _mm256_permute2f128_ps(v0, v1, 0x31));
}

AVX2_INLINE const float *key_row(const float *K, int64_t j, int64_t nk, int64_t dp) {
    return K + (j < nk ? j : nk - 1) * dp;
}

static void qk_tile_2x4(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                        int64_t dp) {
    const float *q0 = Q, *q1 = Q + dp;
    const float *k0 = key_row(K, j0, nk, dp), *k1 = key_row(K, j0 + 1, nk, dp);
    const float *k2 = key_row(K, j0 + 2, nk, dp), *k3 = key_row(K, j0 + 3, nk, dp);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    for (int64_t c = 0; c < dp; c += 8) {
        __m256 x0 = _mm256_loadu_ps(q0 + c), x1 = _mm256_loadu_ps(q1 + c);
        __m256 y = _mm256_loadu_ps(k0 + c);
        a0 = _mm256_fmadd_ps(x0, y, a0);
        a4 = _mm256_fmadd_ps(x1, y, a4);
        y = _mm256_loadu_ps(k1 + c);
        a1 = _mm256_fmadd_ps(x0, y, a1);
        a5 = _mm256_fmadd_ps(x1, y, a5);
        y = _mm256_loadu_ps(k2 + c);
        a2 = _mm256_fmadd_ps(x0, y, a2);
        a6 = _mm256_fmadd_ps(x1, y, a6);
        y = _mm256_loadu_ps(k3 + c);
        a3 = _mm256_fmadd_ps(x0, y, a3);
        a7 = _mm256_fmadd_ps(x1, y, a7);
    }
    __m256 z = reduce8(a0, a1, a2, a3, a4, a5, a6, a7);
    if (nk - j0 >= 4) {
        _mm_storeu_ps(S + j0, _mm256_castps256_ps128(z));
        _mm_storeu_ps(S + BK + j0, _mm256_extractf128_ps(z, 1));
    } else {
        __m128i m = _mm256_castsi256_si128(lanes8(nk - j0));
        _mm_maskstore_ps(S + j0, m, _mm256_castps256_ps128(z));
        _mm_maskstore_ps(S + BK + j0, m, _mm256_extractf128_ps(z, 1));
    }
}

#define QK_1X8(k) a##k = _mm256_fmadd_ps(x0, _mm256_loadu_ps(kp##k + c), a##k)

static void qk_tile_1x8(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                        int64_t dp) {
    const float *kp0 = key_row(K, j0, nk, dp), *kp1 = key_row(K, j0 + 1, nk, dp);
    const float *kp2 = key_row(K, j0 + 2, nk, dp), *kp3 = key_row(K, j0 + 3, nk, dp);
    const float *kp4 = key_row(K, j0 + 4, nk, dp), *kp5 = key_row(K, j0 + 5, nk, dp);
    const float *kp6 = key_row(K, j0 + 6, nk, dp), *kp7 = key_row(K, j0 + 7, nk, dp);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    for (int64_t c = 0; c < dp; c += 8) {
        __m256 x0 = _mm256_loadu_ps(Q + c);
        QK_1X8(0);
        QK_1X8(1);
        QK_1X8(2);
        QK_1X8(3);
        QK_1X8(4);
        QK_1X8(5);
        QK_1X8(6);
        QK_1X8(7);
    }
    __m256 z = reduce8(a0, a1, a2, a3, a4, a5, a6, a7);
    if (nk - j0 >= 8)
        _mm256_storeu_ps(S + j0, z);
    else
        _mm256_maskstore_ps(S + j0, lanes8(nk - j0), z);
}

static void avx2_qk(float *S, const float *Q, const float *K, int64_t R, int64_t nk,
                    int64_t dp) {
    int64_t r = 0;
    for (; r + 2 <= R; r += 2)
        for (int64_t j = 0; j < nk; j += 4)
            qk_tile_2x4(S + r * BK, Q + r * dp, K, j, nk, dp);
    if (r < R)
        for (int64_t j = 0; j < nk; j += 8)
            qk_tile_1x8(S + r * BK, Q + r * dp, K, j, nk, dp);
}

/* ---------------------------------------------------------------------------------------
 * softmax: a row of S is 8 ymm (BK = 64). exp2(x) = 2^n * p(f), n = round(x), f = x - n in
 * [-1/2, 1/2], p the degree-6 minimax polynomial of 2^f (Cephes exp2f; measured relative
 * error below 8e-8 in f32, 1.3 ulp); 2^n is built in the exponent field. x is clamped to
 * [-127, 128] first: n = -127 gives a zero scale, so exp2(-inf) and everything below 2^-127
 * is exactly 0 (results under 2^-126 flush to 0 or lose precision; they weigh nothing next
 * to the row max's 1).
 * Bound: negligible next to qk and pv.
 * ------------------------------------------------------------------------------------- */
AVX2_INLINE __m256 exp2_ps(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-127.0f), x);
    x = _mm256_min_ps(_mm256_set1_ps(128.0f), x);
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    e = _mm256_slli_epi32(e, 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2_INLINE float hmax8(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

AVX2_INLINE float hsum8(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

static void avx2_softmax(float *S, float *m, float *l, float *alpha, int64_t R, int64_t nk) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 live[8]; /* all-ones lanes for keys < nk */
    for (int v = 0; v < 8; v++)
        live[v] = _mm256_castsi256_ps(lanes8(nk - 8 * v));
    for (int64_t r = 0; r < R; r++) {
        float *s = S + r * BK;
        /* Lanes past nk (whatever they hold) read as -inf and so come out of exp2 as 0. */
        __m256 x[8];
        __m256 mx = ninf;
        for (int v = 0; v < 8; v++) {
            x[v] = _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + 8 * v), live[v]);
            mx = _mm256_max_ps(mx, x[v]);
        }
        float mr = hmax8(mx);
        float m_new = mr > m[r] ? mr : m[r];
        if (m_new == -INFINITY) {
            for (int v = 0; v < 8; v++)
                _mm256_storeu_ps(s + 8 * v, _mm256_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        __m256 vm = _mm256_set1_ps(m_new), sum = _mm256_setzero_ps();
        for (int v = 0; v < 8; v++) {
            __m256 p = exp2_ps(_mm256_sub_ps(x[v], vm));
            _mm256_storeu_ps(s + 8 * v, p);
            sum = _mm256_add_ps(sum, p);
        }
        float a = _mm256_cvtss_f32(exp2_ps(_mm256_set1_ps(m[r] - m_new)));
        alpha[r] = a;
        l[r] = l[r] * a + hsum8(sum);
        m[r] = m_new;
    }
}

/* ---------------------------------------------------------------------------------------
 * pv: O = alpha*O + P V. A tile is NR <= 4 rows x NV <= 4 ymm (8 columns each), at most 8
 * accumulators acc[i][v] = O[r0+i][c0+8v..] scaled by alpha on load: 4 rows x 16 columns, or
 * 1-2 rows x 32 columns so that a small R still has 4-8 independent FMA chains. Per key j:
 * one broadcast of P[r0+i][j] per row, one load of V[j][c0+8v..] per vector, NR*NV FMAs
 * (4x16: 6 loads per 8 FMAs; V is read once per 4 rows). NR and NV are compile-time
 * constants in each instantiation. Bound: FMA peak for R >= 2 (V is in L1/L2).
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
#define PV_INIT(i, v) acc##i##v = _mm256_mul_ps(al##i, _mm256_loadu_ps(O + (i) * dp + 8 * (v)))
#define PV_FMA(i, v) acc##i##v = _mm256_fmadd_ps(p##i, y##v, acc##i##v)
#define PV_STORE(i, v) _mm256_storeu_ps(O + (i) * dp + 8 * (v), acc##i##v)

/* O, P, alpha point at row r0 (and O at column c0); V at column c0. */
AVX2_INLINE void pv_tile(float *O, const float *P, const float *V, const float *alpha,
                         int64_t nk, int64_t dp, const int NR, const int NV) {
    __m256 acc00, acc01, acc02, acc03, acc10, acc11, acc12, acc13;
    __m256 acc20, acc21, acc22, acc23, acc30, acc31, acc32, acc33;
    acc00 = acc01 = acc02 = acc03 = acc10 = acc11 = acc12 = acc13 = _mm256_setzero_ps();
    acc20 = acc21 = acc22 = acc23 = acc30 = acc31 = acc32 = acc33 = acc00;
    __m256 al0 = _mm256_set1_ps(alpha[0]);
    __m256 al1 = NR > 1 ? _mm256_set1_ps(alpha[1]) : al0;
    __m256 al2 = NR > 2 ? _mm256_set1_ps(alpha[2]) : al0;
    __m256 al3 = NR > 3 ? _mm256_set1_ps(alpha[3]) : al0;
    PV_ALL(PV_INIT);
    for (int64_t j = 0; j < nk; j++) {
        const float *vj = V + j * dp;
        __m256 y0 = _mm256_loadu_ps(vj);
        __m256 y1 = NV > 1 ? _mm256_loadu_ps(vj + 8) : y0;
        __m256 y2 = NV > 2 ? _mm256_loadu_ps(vj + 16) : y0;
        __m256 y3 = NV > 3 ? _mm256_loadu_ps(vj + 24) : y0;
        __m256 p0 = _mm256_broadcast_ss(P + j);
        __m256 p1 = NR > 1 ? _mm256_broadcast_ss(P + BK + j) : p0;
        __m256 p2 = NR > 2 ? _mm256_broadcast_ss(P + 2 * BK + j) : p0;
        __m256 p3 = NR > 3 ? _mm256_broadcast_ss(P + 3 * BK + j) : p0;
        PV_ALL(PV_FMA);
    }
    PV_ALL(PV_STORE);
}

/* One instantiation per NR in 1..4: 32-column tiles for NR <= 2, 16-column tiles for NR >= 3,
 * then the narrower tail (dp is a multiple of 8). */
#define PV_NR(NR)                                                                           \
    static void pv_rows##NR(float *O, const float *P, const float *V, const float *alpha,   \
                            int64_t nk, int64_t dp) {                                       \
        int64_t c = 0;                                                                      \
        if (NR <= 2)                                                                        \
            for (; c + 32 <= dp; c += 32)                                                   \
                pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 4);                             \
        for (; c + 16 <= dp; c += 16)                                                       \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 2);                                 \
        if (c < dp)                                                                         \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 1);                                 \
    }
PV_NR(1)
PV_NR(2)
PV_NR(3)
PV_NR(4)

static void avx2_pv(float *O, const float *P, const float *V, const float *alpha, int64_t R,
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
 * row pointers and converted in registers, no f32 tile; see the AVX-512 file for the bound
 * (DRAM bandwidth of K and V, each byte read once) and the prefetch scheme, which is the same
 * here. A key costs R*d/8 FMAs and d/8 conversions (p0 + p5 each) in each of qk and pv: at
 * R = 4, d = 128, 128 FMAs + 32 conversions, ~80 cycles on 2 FMA ports. Measured ~38 ns per
 * f16 key from L2 on an AVX-512 Xeon (whose 256-bit FMAs have 2 ports) against ~45 ns per key
 * of DRAM reads per core: there this level is compute-bound at about 0.55 of the read
 * bandwidth; CPUs without AVX-512 have less bandwidth per core, or more FP ports.
 * qk_rows: tiles of NR rows x NK keys, NR*NK = 8 ymm accumulators (8x1, 4x2, 2x4, 1x8: the
 * tallest that fits the rows left; Q is a memory operand of the FMAs, so a tile needs only its
 * accumulators and NK converted K vectors in registers), each K vector converted once per NR
 * rows, reduced by reduce8 as in qk. pv_rows: tiles of NR rows x NV ymm of columns (4x16,
 * 2x32, 1x32 or 8x8 columns: <= 8 accumulators); per key NV conversions, NR broadcasts of P,
 * NR*NV FMAs; each column pass reads its own bytes of V, so V is converted once.
 * Prefetch: a qk tile prefetches (into L2) the pf rows of its keys, a pv pass the same columns
 * of the pf rows of its keys: the next tile's K and V arrive while this tile computes.
 * q8_0: 8 columns cost pmovsxbd + cvtdq2ps + a multiply by the block's scale, which is loaded
 * once per 32 columns and key; measured ~49 ns per key (qk + pv, R = 4, d = 128, from L2)
 * against f16's ~46 ns on the same AVX-512 Xeon.
 * ------------------------------------------------------------------------------------- */
enum { DT_F32, DT_F16, DT_BF16, DT_Q8 };

/* Columns [c, c+8) of a row of DT, as f32; for q8_0, s is the scale of the block holding them
 * (row_scale), which the callers load once per block and key rather than once per 8 columns. */
AVX2_INLINE __m256 row8(const void *row, int64_t c, const int DT, __m256 s) {
    if (DT == DT_F32)
        return _mm256_loadu_ps((const float *)row + c);
    if (DT == DT_Q8)
        return q8x8_to_f32(q8_block(row, c) + 2 + (c & 31), s);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    return DT == DT_F16 ? f16x8_to_f32(h) : bf16x8_to_f32(h);
}

/* q8_0: the broadcast scale of the block holding column c; other dtypes: unused (zero). */
AVX2_INLINE __m256 row_scale(const void *row, int64_t c, const int DT) {
    return DT == DT_Q8 ? q8_scale(q8_block(row, c)) : _mm256_setzero_ps();
}

/* Byte offset in a row of DT where column c starts (q8_0: its block), or, with `end`, where
 * the bytes of columns [0, c) end (q8_0: past the block holding column c - 1). */
AVX2_INLINE int64_t row_byte(int64_t c, int end, const int DT) {
    if (DT == DT_Q8)
        return (end ? (c + 31) >> 5 : c >> 5) * Q8_BYTES;
    return c * (DT == DT_F32 ? 4 : 2);
}

/* Prefetch into L2 the lines holding bytes [b0, b1) of row (b0 < b1). */
AVX2_INLINE void prefetch_span(const void *row, int64_t b0, int64_t b1) {
    uintptr_t at = ((uintptr_t)row + (uintptr_t)b0) & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)row + (uintptr_t)b1;
    for (; at < end; at += 64)
        PREFETCH_L2(at);
}

AVX2_INLINE const void *row_at(const void *const *rows, int64_t j, int64_t nk) {
    return rows[j < nk ? j : nk - 1]; /* keys past nk repeat the last one (valid memory) */
}

#define QKR_FMA(acc, r, y) acc = _mm256_fmadd_ps(_mm256_loadu_ps(Q + (r) * dp + c), y, acc)

/* Rows [0, NR) of Q/S (pointing at the block's first row) x keys [j0, j0 + 8/NR). */
AVX2_INLINE void qkr_tile(float *S, const float *Q, int64_t dp, const void *const *krow,
                          int64_t j0, int64_t nk, int64_t d, const void *const *pf,
                          int64_t npf, const int NR, const int DT) {
    const int NK = 8 / NR;
    const void *k0 = row_at(krow, j0, nk), *k1 = k0, *k2 = k0, *k3 = k0, *k4 = k0, *k5 = k0;
    const void *k6 = k0, *k7 = k0;
    if (NK >= 2)
        k1 = row_at(krow, j0 + 1, nk);
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
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    /* q8_0 walks the columns a block (32) at a time, the NK keys' scales loaded once each. */
    const int64_t CB = DT == DT_Q8 ? 32 : 8;
    for (int64_t cb = 0; cb < d; cb += CB) {
        __m256 s0 = row_scale(k0, cb, DT), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0;
        __m256 s7 = s0;
        if (NK >= 2)
            s1 = row_scale(k1, cb, DT);
        if (NK >= 4) {
            s2 = row_scale(k2, cb, DT);
            s3 = row_scale(k3, cb, DT);
        }
        if (NK >= 8) {
            s4 = row_scale(k4, cb, DT);
            s5 = row_scale(k5, cb, DT);
            s6 = row_scale(k6, cb, DT);
            s7 = row_scale(k7, cb, DT);
        }
        for (int64_t c = cb; c < cb + CB; c += 8) {
            if (NR == 8) { /* acc r */
                __m256 y = row8(k0, c, DT, s0);
                QKR_FMA(a0, 0, y);
                QKR_FMA(a1, 1, y);
                QKR_FMA(a2, 2, y);
                QKR_FMA(a3, 3, y);
                QKR_FMA(a4, 4, y);
                QKR_FMA(a5, 5, y);
                QKR_FMA(a6, 6, y);
                QKR_FMA(a7, 7, y);
            } else if (NR == 4) { /* acc r*2 + k */
                __m256 y0 = row8(k0, c, DT, s0), y1 = row8(k1, c, DT, s1);
                QKR_FMA(a0, 0, y0);
                QKR_FMA(a1, 0, y1);
                QKR_FMA(a2, 1, y0);
                QKR_FMA(a3, 1, y1);
                QKR_FMA(a4, 2, y0);
                QKR_FMA(a5, 2, y1);
                QKR_FMA(a6, 3, y0);
                QKR_FMA(a7, 3, y1);
            } else if (NR == 2) { /* acc r*4 + k */
                __m256 x0 = _mm256_loadu_ps(Q + c), x1 = _mm256_loadu_ps(Q + dp + c);
                __m256 y = row8(k0, c, DT, s0);
                a0 = _mm256_fmadd_ps(x0, y, a0);
                a4 = _mm256_fmadd_ps(x1, y, a4);
                y = row8(k1, c, DT, s1);
                a1 = _mm256_fmadd_ps(x0, y, a1);
                a5 = _mm256_fmadd_ps(x1, y, a5);
                y = row8(k2, c, DT, s2);
                a2 = _mm256_fmadd_ps(x0, y, a2);
                a6 = _mm256_fmadd_ps(x1, y, a6);
                y = row8(k3, c, DT, s3);
                a3 = _mm256_fmadd_ps(x0, y, a3);
                a7 = _mm256_fmadd_ps(x1, y, a7);
            } else { /* acc k */
                __m256 x = _mm256_loadu_ps(Q + c);
                a0 = _mm256_fmadd_ps(x, row8(k0, c, DT, s0), a0);
                a1 = _mm256_fmadd_ps(x, row8(k1, c, DT, s1), a1);
                a2 = _mm256_fmadd_ps(x, row8(k2, c, DT, s2), a2);
                a3 = _mm256_fmadd_ps(x, row8(k3, c, DT, s3), a3);
                a4 = _mm256_fmadd_ps(x, row8(k4, c, DT, s4), a4);
                a5 = _mm256_fmadd_ps(x, row8(k5, c, DT, s5), a5);
                a6 = _mm256_fmadd_ps(x, row8(k6, c, DT, s6), a6);
                a7 = _mm256_fmadd_ps(x, row8(k7, c, DT, s7), a7);
            }
        }
    }
    /* Lane r*NK + k of z is S[r][j0 + k]. */
    float z[8];
    _mm256_storeu_ps(z, reduce8(a0, a1, a2, a3, a4, a5, a6, a7));
    int64_t live = nk - j0 < NK ? nk - j0 : NK;
    for (int r = 0; r < NR; r++)
        for (int64_t k = 0; k < live; k++)
            S[r * BK + j0 + k] = z[r * NK + k];
    int64_t bytes = row_byte(d, 1, DT);
    for (int64_t j = j0; j < j0 + NK && j < npf; j++)
        prefetch_span(pf[j], 0, bytes);
}

/* Row blocks of 8, then 4, 2, 1 rows; only the first block prefetches. */
AVX2_INLINE void qk_rows_dt(float *S, const float *Q, int64_t R, int64_t dp,
                            const void *const *krow, int64_t nk, int64_t d,
                            const void *const *pf, int64_t npf, const int DT) {
    int64_t r = 0;
    for (; r + 8 <= R; r += 8, npf = 0)
        for (int64_t j = 0; j < nk; j++)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 8, DT);
    if (R - r >= 4) {
        for (int64_t j = 0; j < nk; j += 2)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 4, DT);
        r += 4;
        npf = 0;
    }
    if (R - r >= 2) {
        for (int64_t j = 0; j < nk; j += 4)
            qkr_tile(S + r * BK, Q + r * dp, dp, krow, j, nk, d, pf, npf, 2, DT);
        r += 2;
        npf = 0;
    }
    if (r < R)
        for (int64_t j = 0; j < nk; j += 8)
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
 * qk + pv 1.2x faster than converting in each block
 * (88 -> 74 ns per key at d = 128). */
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
            __m256 sc = q8_scale(b);
            _mm256_store_ps(out + c, q8x8_to_f32(b + 2, sc));
            _mm256_store_ps(out + c + 8, q8x8_to_f32(b + 10, sc));
            _mm256_store_ps(out + c + 16, q8x8_to_f32(b + 18, sc));
            _mm256_store_ps(out + c + 24, q8x8_to_f32(b + 26, sc));
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

static void avx2_qk_rows(float *S, const float *Q, int64_t R, int64_t dp,
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

/* pv_rows tile: rows [0, NR) x columns [c0, c0 + 8*NV), NR <= 8, NR*NV <= 8. */
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
    acc##i##v = _mm256_mul_ps(_mm256_set1_ps(alpha[i]), _mm256_loadu_ps(O + (i) * dp + 8 * (v)))
#define PVR_FMA(i, v)                                                                       \
    acc##i##v = _mm256_fmadd_ps(_mm256_broadcast_ss(P + (i) * BK + j), y##v, acc##i##v)
#define PVR_STORE(i, v) _mm256_storeu_ps(O + (i) * dp + 8 * (v), acc##i##v)

/* O points at (row 0, column c0); vrow rows are read from column c0. The tile's 8*NV <= 32
 * columns start at a multiple of 8*NV, so for q8_0 (d % 32 == 0) they lie in one block. */
AVX2_INLINE void pvr_tile(float *O, const float *P, const float *alpha, int64_t dp,
                          const void *const *vrow, int64_t nk, int64_t c0, const void *const *pf,
                          int64_t npf, const int NR, const int NV, const int DT) {
    const int64_t pf0 = row_byte(c0, 0, DT), pf1 = row_byte(c0 + 8 * NV, 1, DT);
    __m256 acc00, acc01, acc02, acc03, acc10, acc11, acc12, acc13, acc20, acc21, acc22, acc23;
    __m256 acc30, acc31, acc32, acc33, acc40, acc41, acc42, acc43, acc50, acc51, acc52, acc53;
    __m256 acc60, acc61, acc62, acc63, acc70, acc71, acc72, acc73;
    acc00 = acc01 = acc02 = acc03 = acc10 = acc11 = acc12 = acc13 = _mm256_setzero_ps();
    acc20 = acc21 = acc22 = acc23 = acc30 = acc31 = acc32 = acc33 = acc00;
    acc40 = acc41 = acc42 = acc43 = acc50 = acc51 = acc52 = acc53 = acc00;
    acc60 = acc61 = acc62 = acc63 = acc70 = acc71 = acc72 = acc73 = acc00;
    PVR_ALL(PVR_INIT);
    for (int64_t j = 0; j < nk; j++) {
        const void *vj = vrow[j];
        __m256 sc = row_scale(vj, c0, DT);
        __m256 y0 = row8(vj, c0, DT, sc);
        __m256 y1 = NV > 1 ? row8(vj, c0 + 8, DT, sc) : y0;
        __m256 y2 = NV > 2 ? row8(vj, c0 + 16, DT, sc) : y0;
        __m256 y3 = NV > 3 ? row8(vj, c0 + 24, DT, sc) : y0;
        if (j < npf)
            prefetch_span(pf[j], pf0, pf1);
        PVR_ALL(PVR_FMA);
    }
    PVR_ALL(PVR_STORE);
}

/* Column passes: 16 columns for NR = 3..4, 32 for NR <= 2, 8 for NR = 8 (d % 16 == 0). */
AVX2_INLINE void pvr_block(float *O, const float *P, const float *alpha, int64_t dp,
                           const void *const *vrow, int64_t nk, int64_t d, const void *const *pf,
                           int64_t npf, const int NR, const int DT) {
    int64_t c = 0;
    if (NR <= 2)
        for (; c + 32 <= d; c += 32)
            pvr_tile(O + c, P, alpha, dp, vrow, nk, c, pf, npf, NR, 4, DT);
    if (NR <= 4)
        for (; c + 16 <= d; c += 16)
            pvr_tile(O + c, P, alpha, dp, vrow, nk, c, pf, npf, NR, 2, DT);
    for (; c < d; c += 8)
        pvr_tile(O + c, P, alpha, dp, vrow, nk, c, pf, npf, NR, 1, DT);
}

/* Row blocks of 8, then 4 and the last 1-3 rows; only the first block prefetches. */
AVX2_INLINE void pv_rows_dt(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                            const void *const *vrow, int64_t nk, int64_t d,
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

static void avx2_pv_rows(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
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

static const cpu_attn_kernels avx2_kernels = {
    "avx2", avx2_load_rows, avx2_qk, avx2_softmax, avx2_pv, avx2_qk_rows, avx2_pv_rows,
};

const cpu_attn_kernels *cpu_attn_kernels_avx2(void) { return &avx2_kernels; }

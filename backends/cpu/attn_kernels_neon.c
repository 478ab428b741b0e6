/* NEON inner kernels of CPU dense attention for aarch64 (see attn_kernels.h for the contract
 * and attn_kernels_scalar.c for the reference). NEON is part of every aarch64 CPU, so this
 * table needs no run-time check; f16 goes through vcvt_f32_f16, bf16 through a 16-bit shift,
 * q8_0 (a quantized KV cache) through the scalar dequantization of core/dtype.h. */
#include <arm_neon.h>
#include <math.h>

#include "attn_kernels.h"
#include "core/dtype.h"

#if defined(__GNUC__) || defined(__clang__)
#define NEON_INLINE static inline __attribute__((always_inline))
#else
#define NEON_INLINE static inline
#endif

#define BK CPU_ATTN_BK

/* ---------------------------------------------------------------------------------------
 * load_rows: 8 elements per step (one q register of f16/bf16 -> two of f32); the last < 8
 * elements of a row use the scalar conversions of core/dtype.h (exact, like the vector ones),
 * so nothing past the end of a row is read. [d, dp) is written as zeros.
 * Bound: the source bytes (DRAM in decode).
 * ------------------------------------------------------------------------------------- */
static void neon_load_rows(float *dst, int64_t dp, const void *src, int64_t src_stride,
                           ela_dtype dtype, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const char *row = (const char *)src + r * src_stride;
        float *out = dst + r * dp;
        int64_t c = 0;
        if (dtype == ELA_F32) {
            const float *s = (const float *)row;
            for (; c + 8 <= d; c += 8) {
                vst1q_f32(out + c, vld1q_f32(s + c));
                vst1q_f32(out + c + 4, vld1q_f32(s + c + 4));
            }
            for (; c < d; c++)
                out[c] = s[c];
        } else if (dtype == ELA_F16) {
            const uint16_t *s = (const uint16_t *)row;
            for (; c + 8 <= d; c += 8) {
                float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(s + c));
                vst1q_f32(out + c, vcvt_f32_f16(vget_low_f16(h)));
                vst1q_f32(out + c + 4, vcvt_high_f32_f16(h));
            }
            for (; c < d; c++)
                out[c] = ela_f16_to_f32(s[c]);
        } else if (dtype == ELA_Q8_0) { /* d % 32 == 0; the scalar dequantization (exact) */
            for (; c < d; c += ELA_Q8_0_BLOCK)
                ela_q8_0_dequantize_block(
                    (const uint8_t *)row + c / ELA_Q8_0_BLOCK * ELA_Q8_0_BYTES, out + c);
        } else {
            const uint16_t *s = (const uint16_t *)row;
            for (; c + 8 <= d; c += 8) {
                uint16x8_t h = vld1q_u16(s + c);
                vst1q_f32(out + c, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
                vst1q_f32(out + c + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
            }
            for (; c < d; c++)
                out[c] = ela_bf16_to_f32(s[c]);
        }
        for (; c + 4 <= dp; c += 4)
            vst1q_f32(out + c, vdupq_n_f32(0.0f));
        for (; c < dp; c++)
            out[c] = 0.0f;
    }
}

/* ---------------------------------------------------------------------------------------
 * qk: S = Q K^T. A 4x4 tile (4 rows x 4 keys) keeps 16 accumulators acc[row][key] of 4
 * partial sums each; per 4 columns it loads 4 Q + 4 K vectors for 16 FMAs. Afterwards two
 * levels of pairwise adds (vpaddq, 3 per row) turn a row's 4 accumulators into its 4 dot
 * products, so there is no horizontal sum per (row, key). Rows past a multiple of 4 use 1x4
 * tiles. Keys past nk repeat key nk-1 and are not stored. dp is a multiple of 4.
 * Bound: FMA peak less 12 pairwise adds per 16 dot products.
 * ------------------------------------------------------------------------------------- */
NEON_INLINE const float *key_row(const float *K, int64_t j, int64_t nk, int64_t dp) {
    return K + (j < nk ? j : nk - 1) * dp;
}

NEON_INLINE float32x4_t sum4x4(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d) {
    return vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d));
}

NEON_INLINE void store_keys(float *s, float32x4_t v, int64_t n) {
    if (n >= 4) {
        vst1q_f32(s, v);
        return;
    }
    s[0] = vgetq_lane_f32(v, 0);
    if (n > 1)
        s[1] = vgetq_lane_f32(v, 1);
    if (n > 2)
        s[2] = vgetq_lane_f32(v, 2);
}

#define QK_ROW(r, x)                                                                        \
    do {                                                                                    \
        a##r##0 = vfmaq_f32(a##r##0, x, y0);                                                \
        a##r##1 = vfmaq_f32(a##r##1, x, y1);                                                \
        a##r##2 = vfmaq_f32(a##r##2, x, y2);                                                \
        a##r##3 = vfmaq_f32(a##r##3, x, y3);                                                \
    } while (0)

static void qk_tile_4x4(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                        int64_t dp) {
    const float *k0 = key_row(K, j0, nk, dp), *k1 = key_row(K, j0 + 1, nk, dp);
    const float *k2 = key_row(K, j0 + 2, nk, dp), *k3 = key_row(K, j0 + 3, nk, dp);
    float32x4_t z = vdupq_n_f32(0.0f);
    float32x4_t a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    float32x4_t a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    for (int64_t c = 0; c < dp; c += 4) {
        float32x4_t y0 = vld1q_f32(k0 + c), y1 = vld1q_f32(k1 + c);
        float32x4_t y2 = vld1q_f32(k2 + c), y3 = vld1q_f32(k3 + c);
        float32x4_t x0 = vld1q_f32(Q + c), x1 = vld1q_f32(Q + dp + c);
        float32x4_t x2 = vld1q_f32(Q + 2 * dp + c), x3 = vld1q_f32(Q + 3 * dp + c);
        QK_ROW(0, x0);
        QK_ROW(1, x1);
        QK_ROW(2, x2);
        QK_ROW(3, x3);
    }
    int64_t n = nk - j0;
    store_keys(S + j0, sum4x4(a00, a01, a02, a03), n);
    store_keys(S + BK + j0, sum4x4(a10, a11, a12, a13), n);
    store_keys(S + 2 * BK + j0, sum4x4(a20, a21, a22, a23), n);
    store_keys(S + 3 * BK + j0, sum4x4(a30, a31, a32, a33), n);
}

static void qk_tile_1x4(float *S, const float *Q, const float *K, int64_t j0, int64_t nk,
                        int64_t dp) {
    const float *k0 = key_row(K, j0, nk, dp), *k1 = key_row(K, j0 + 1, nk, dp);
    const float *k2 = key_row(K, j0 + 2, nk, dp), *k3 = key_row(K, j0 + 3, nk, dp);
    float32x4_t z = vdupq_n_f32(0.0f);
    float32x4_t a00 = z, a01 = z, a02 = z, a03 = z;
    for (int64_t c = 0; c < dp; c += 4) {
        float32x4_t y0 = vld1q_f32(k0 + c), y1 = vld1q_f32(k1 + c);
        float32x4_t y2 = vld1q_f32(k2 + c), y3 = vld1q_f32(k3 + c);
        float32x4_t x0 = vld1q_f32(Q + c);
        QK_ROW(0, x0);
    }
    store_keys(S + j0, sum4x4(a00, a01, a02, a03), nk - j0);
}

static void neon_qk(float *S, const float *Q, const float *K, int64_t R, int64_t nk,
                    int64_t dp) {
    int64_t r = 0;
    for (; r + 4 <= R; r += 4)
        for (int64_t j = 0; j < nk; j += 4)
            qk_tile_4x4(S + r * BK, Q + r * dp, K, j, nk, dp);
    for (; r < R; r++)
        for (int64_t j = 0; j < nk; j += 4)
            qk_tile_1x4(S + r * BK, Q + r * dp, K, j, nk, dp);
}

/* ---------------------------------------------------------------------------------------
 * softmax: a row of S is 16 q registers (BK = 64). exp2(x) = 2^n * p(f), n = round(x),
 * f = x - n in [-1/2, 1/2], p the degree-6 minimax polynomial of 2^f (Cephes exp2f; measured
 * relative error below 8e-8 in f32); 2^n is built in the exponent field. x is clamped to
 * [-127, 128] first: n = -127 gives a zero scale, so exp2(-inf) and everything below 2^-127
 * is exactly 0 (results under 2^-126 flush to 0 or lose precision; they weigh nothing next
 * to the row max's 1). Bound: negligible next to qk and pv.
 * ------------------------------------------------------------------------------------- */
NEON_INLINE float32x4_t exp2_f32x4(float32x4_t x) {
    x = vmaxq_f32(x, vdupq_n_f32(-127.0f));
    x = vminq_f32(x, vdupq_n_f32(128.0f));
    float32x4_t n = vrndnq_f32(x);
    float32x4_t f = vsubq_f32(x, n);
    float32x4_t p = vdupq_n_f32(1.535336188319500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.339887440266574e-3f), p, f);
    p = vfmaq_f32(vdupq_n_f32(9.618437357674640e-3f), p, f);
    p = vfmaq_f32(vdupq_n_f32(5.550332471162809e-2f), p, f);
    p = vfmaq_f32(vdupq_n_f32(2.402264791363012e-1f), p, f);
    p = vfmaq_f32(vdupq_n_f32(6.931472028550421e-1f), p, f);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, f);
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static void neon_softmax(float *S, float *m, float *l, float *alpha, int64_t R, int64_t nk) {
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    const int32x4_t lane = {0, 1, 2, 3};
    for (int64_t r = 0; r < R; r++) {
        float *s = S + r * BK;
        /* Lanes past nk (whatever they hold) read as -inf and so come out of exp2 as 0. */
        float32x4_t x[BK / 4];
        float32x4_t mx = ninf;
        for (int v = 0; v < BK / 4; v++) {
            int64_t left = nk - 4 * v;
            int32_t live = left < 0 ? 0 : left > 4 ? 4 : (int32_t)left;
            uint32x4_t keep = vcltq_s32(lane, vdupq_n_s32(live));
            x[v] = vbslq_f32(keep, vld1q_f32(s + 4 * v), ninf);
            mx = vmaxq_f32(mx, x[v]);
        }
        float mr = vmaxvq_f32(mx);
        float m_new = mr > m[r] ? mr : m[r];
        if (m_new == -INFINITY) {
            for (int v = 0; v < BK / 4; v++)
                vst1q_f32(s + 4 * v, vdupq_n_f32(0.0f));
            alpha[r] = 1.0f;
            continue;
        }
        float32x4_t vm = vdupq_n_f32(m_new), sum = vdupq_n_f32(0.0f);
        for (int v = 0; v < BK / 4; v++) {
            float32x4_t p = exp2_f32x4(vsubq_f32(x[v], vm));
            vst1q_f32(s + 4 * v, p);
            sum = vaddq_f32(sum, p);
        }
        float a = vgetq_lane_f32(exp2_f32x4(vdupq_n_f32(m[r] - m_new)), 0);
        alpha[r] = a;
        l[r] = l[r] * a + vaddvq_f32(sum);
        m[r] = m_new;
    }
}

/* ---------------------------------------------------------------------------------------
 * pv: O = alpha*O + P V. A tile is NR <= 4 rows x NV <= 4 q registers (16 columns): up to
 * 16 accumulators acc[i][v] = O[r0+i][c0+4v..] scaled by alpha on load, then per key j one
 * load of V[j][c0+4v..] per vector and NR*NV FMAs by the scalar P[r0+i][j] (vfmaq_n_f32).
 * A full 4x16 tile does 4 V loads + 4 scalar loads per 16 FMAs; V is read once per 4 rows.
 * NR and NV are compile-time constants in each instantiation. Bound: FMA peak for R >= 4.
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
#define PV_INIT(i, v) acc##i##v = vmulq_n_f32(vld1q_f32(O + (i) * dp + 4 * (v)), alpha[i])
#define PV_FMA(i, v) acc##i##v = vfmaq_n_f32(acc##i##v, y##v, p##i)
#define PV_STORE(i, v) vst1q_f32(O + (i) * dp + 4 * (v), acc##i##v)

/* O, P, alpha point at row r0 (and O at column c0); V at column c0. */
NEON_INLINE void pv_tile(float *O, const float *P, const float *V, const float *alpha,
                         int64_t nk, int64_t dp, const int NR, const int NV) {
    float32x4_t acc00, acc01, acc02, acc03, acc10, acc11, acc12, acc13;
    float32x4_t acc20, acc21, acc22, acc23, acc30, acc31, acc32, acc33;
    acc00 = acc01 = acc02 = acc03 = acc10 = acc11 = acc12 = acc13 = vdupq_n_f32(0.0f);
    acc20 = acc21 = acc22 = acc23 = acc30 = acc31 = acc32 = acc33 = acc00;
    PV_ALL(PV_INIT);
    for (int64_t j = 0; j < nk; j++) {
        const float *vj = V + j * dp;
        float32x4_t y0 = vld1q_f32(vj);
        float32x4_t y1 = NV > 1 ? vld1q_f32(vj + 4) : y0;
        float32x4_t y2 = NV > 2 ? vld1q_f32(vj + 8) : y0;
        float32x4_t y3 = NV > 3 ? vld1q_f32(vj + 12) : y0;
        float p0 = P[j];
        float p1 = NR > 1 ? P[BK + j] : p0;
        float p2 = NR > 2 ? P[2 * BK + j] : p0;
        float p3 = NR > 3 ? P[3 * BK + j] : p0;
        PV_ALL(PV_FMA);
    }
    PV_ALL(PV_STORE);
}

/* One instantiation per NR in 1..4; NV = 4 except the last columns when dp % 16 != 0. */
#define PV_NR(NR)                                                                           \
    static void pv_rows##NR(float *O, const float *P, const float *V, const float *alpha,   \
                            int64_t nk, int64_t dp) {                                       \
        int64_t c = 0;                                                                      \
        for (; c + 16 <= dp; c += 16)                                                       \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 4);                                 \
        for (; c < dp; c += 4)                                                              \
            pv_tile(O + c, P, V + c, alpha, nk, dp, NR, 1);                                 \
    }
PV_NR(1)
PV_NR(2)
PV_NR(3)
PV_NR(4)

static void neon_pv(float *O, const float *P, const float *V, const float *alpha, int64_t R,
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

static const cpu_attn_kernels neon_kernels = {
    "neon", neon_load_rows, neon_qk, neon_softmax, neon_pv,
    NULL, /* qk_rows: none yet (untested here), the driver keeps the tiled path */
    NULL, /* pv_rows */
};

const cpu_attn_kernels *cpu_attn_kernels_neon(void) { return &neon_kernels; }

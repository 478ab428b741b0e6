/* Scalar f16/bf16 <-> f32 conversions (round to nearest even) and q8_0 blocks, used by the core
 * and by the portable CPU kernels. Vectorised versions live in the SIMD kernel files. */
#ifndef ELA_CORE_DTYPE_H
#define ELA_CORE_DTYPE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float ela_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) { /* inf / nan */
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) { /* normal */
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) { /* zero */
        bits = sign;
    } else { /* subnormal: value = man * 2^-24 */
        float f = (float)man * 5.9604644775390625e-08f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static inline uint16_t ela_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan (keep nan quiet) */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (ax < 0x33000000u) /* < 2^-25 rounds to zero */
            return (uint16_t)sign;
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 for the half subnormal range */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = ax + 0x0fffu + ((ax >> 13) & 1u); /* round to nearest even at bit 13 */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float ela_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static inline uint16_t ela_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* nan: keep it a nan */
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* q8_0 (GGUF block_q8_0): per 32 elements one f16 scale d then 32 int8 qs; value = d * qs[i].
 * Blocks are 34 bytes, so they (and their scale) sit at any byte alignment. */
#define ELA_Q8_0_BLOCK 32
#define ELA_Q8_0_BYTES 34

/* The int8s of one block from 32 floats exactly as ggml's quantize_row_q8_0_ref: d = max|x| /
 * 127, qs = roundf(x * (1 / d)) (ties away from zero). Returns d in f32. A NaN element becomes
 * 0 (ggml leaves it undefined); an infinite one makes d inf and the block's qs 0. */
static inline float ela_q8_0_quantize_qs(const float *x, int8_t *qs) {
    float amax = 0.0f;
    for (int i = 0; i < ELA_Q8_0_BLOCK; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < ELA_Q8_0_BLOCK; i++) {
        float v = roundf(x[i] * id);
        qs[i] = (int8_t)(isnan(v) ? 0.0f : v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    return d;
}

/* One 34-byte block: the f16 scale, then the int8s. */
static inline void ela_q8_0_quantize_block(const float *x, uint8_t *dst) {
    int8_t qs[ELA_Q8_0_BLOCK];
    uint16_t dh = ela_f32_to_f16(ela_q8_0_quantize_qs(x, qs));
    memcpy(dst, &dh, 2);
    memcpy(dst + 2, qs, ELA_Q8_0_BLOCK);
}

static inline void ela_q8_0_dequantize_block(const uint8_t *src, float *y) {
    uint16_t dh;
    memcpy(&dh, src, 2);
    float d = ela_f16_to_f32(dh);
    for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
        y[i] = d * (float)(int8_t)src[2 + i];
}

#endif

// Shared by the model-op shaders (matmul, matmul_gemv, rms_norm, rope, elementwise, get_rows,
// copy, sigmoid_gate, token_compress): dtype codes and conversions between f32 and the 16-bit
// and q8_0 encodings done in integer arithmetic, so they are exact on every device (the
// built-in unpackHalf2x16 may flush f16 subnormals, packHalf2x16 may not round to nearest even,
// and `/` may be off by 2.5 ulp), and bit for bit what the CPU backend's ela_convert produces.
// Tensors are bound as uint words; q8_0 blocks (34 bytes: f16 scale, 32 int8) sit at any even
// byte offset, so they are read and written by byte offset.

#define MT_F32 0u
#define MT_F16 1u
#define MT_BF16 2u
#define MT_Q8_0 3u

const float TWO_PI = 6.283185307179586;

// f16 bits -> f32, exact for every input (subnormals normalised by hand).
float f16_to_f32(uint h) {
    const uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu)
        return uintBitsToFloat(sign | 0x7f800000u | (m << 13));
    if (e != 0u)
        return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0u)
        return uintBitsToFloat(sign);
    // m * 2^-24 with m's top bit at p: 2^(p - 24) * 1.f
    const uint p = uint(findMSB(m));
    return uintBitsToFloat(sign | ((p + 103u) << 23) | ((m << (23u - p)) & 0x7fffffu));
}

// f32 -> f16 bits, round to nearest even; overflow to inf, NaN stays a quiet NaN.
uint f32_to_f16(float f) {
    const uint x = floatBitsToUint(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
        return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);
    if (ax >= 0x477ff000u)
        return sign | 0x7c00u;
    if (ax < 0x38800000u) { // f16 subnormal or zero
        if (ax < 0x33000000u)
            return sign;
        const uint m = (ax & 0x7fffffu) | 0x800000u, shift = 126u - (ax >> 23);
        uint h = m >> shift;
        const uint rem = m & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (h & 1u) != 0u))
            h++;
        return sign | h;
    }
    return sign | ((ax + 0x0fffu + ((ax >> 13) & 1u) - 0x38000000u) >> 13);
}

float bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

// f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
uint f32_to_bf16(float x) {
    const uint u = floatBitsToUint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// a / b correctly rounded (to nearest even), for finite a, b > 0 whose quotient is a normal
// float: the mantissas divided bit by bit (25 quotient bits, then the remainder as sticky bit).
float div_rn(float a, float b) {
    const uint A = floatBitsToUint(a), B = floatBitsToUint(b);
    int e = int(A >> 23) - int(B >> 23);
    uint ma = (A & 0x7fffffu) | 0x800000u;
    const uint mb = (B & 0x7fffffu) | 0x800000u;
    if (ma < mb) { // quotient in [1, 2)
        ma <<= 1;
        e -= 1;
    }
    uint q = 0u, r = ma;
    for (int i = 0; i < 25; i++) {
        q <<= 1;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r <<= 1;
    }
    const uint round_bit = q & 1u;
    q >>= 1;
    if (round_bit != 0u && (r != 0u || (q & 1u) != 0u))
        q++;
    if (q == 0x1000000u) {
        q >>= 1;
        e += 1;
    }
    return ldexp(float(q), e - 23);
}

// C's roundf: to nearest, ties away from zero (GLSL's round() may go either way on ties).
float round_away(float x) {
    const float t = trunc(x);
    return abs(x - t) >= 0.5 ? t + sign(x) : t;
}

// The byte mask of bytes [lo, hi) of a word (0 <= lo <= hi <= 4).
uint byte_mask(uint lo, uint hi) {
    const uint top = hi >= 4u ? 0xffffffffu : (1u << (8u * hi)) - 1u;
    const uint below = lo >= 4u ? 0xffffffffu : (1u << (8u * lo)) - 1u;
    return top & ~below;
}

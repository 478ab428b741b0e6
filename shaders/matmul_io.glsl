// Shared by matmul.comp and matmul_gemv.comp (backends/vulkan/vk_matmul.c fills the push
// constants): y [M, N] = x [M, K] . w [N, K]^T (+ bias [N]); x, y, bias f32, w f32/f16/bf16/q8_0
// (spec constant WT, declared by the includer). Weights are bound as words and addressed by
// byte (q8_0 rows are 34-byte blocks at any even offset); the f32 tensors by float index.

layout(push_constant) uniform Push {
    uint x_off, x_s;   // floats: x[0, 0] in binding 0, row stride
    uint w_off, w_s;   // bytes: w[0, 0] in binding 1, row stride
    uint y_off, y_s;   // floats: y[0, 0] in binding 3, row stride
    uint b_off;        // floats: bias[0] in binding 2
    uint has_bias;
    uint M, N, K;
} pc;

layout(std430, binding = 0) readonly buffer XF { float x_f[]; };
layout(std430, binding = 0) readonly buffer XF4 { vec4 x_f4[]; };
layout(std430, binding = 1) readonly buffer WU { uint w_u[]; };
layout(std430, binding = 1) readonly buffer WU4 { uvec4 w_u4[]; };
layout(std430, binding = 2) readonly buffer BF { float b_f[]; };
layout(std430, binding = 3) writeonly buffer YF { float y_f[]; };

// The 16 bits at even byte offset p of w.
uint w_half(uint p) {
    const uint v = w_u[p >> 2];
    return (p & 2u) != 0u ? v >> 16 : v & 0xffffu;
}

// The 4 bytes at byte offset p of w (any alignment), little-endian.
uint w_bytes4(uint p) {
    const uint s = (p & 3u) * 8u, v = w_u[p >> 2];
    return s == 0u ? v : (v >> s) | (w_u[(p >> 2) + 1u] << (32u - s));
}

// Element k of the f32/f16/bf16 weight row that starts at byte `row`. The built-in f16
// conversion is enough here (a flushed subnormal weight changes a dot product by < 1e-4 of one
// term).
float w_elem(uint row, uint k) {
    if (WT == MT_F32)
        return uintBitsToFloat(w_u[(row >> 2) + k]);
    const uint h = w_half(row + 2u * k);
    return WT == MT_F16 ? unpackHalf2x16(h).x : bf16_to_f32(h);
}

// The 4 signed bytes of word v as floats.
vec4 i8x4(uint v) {
    const int s = int(v);
    return vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8),
                bitfieldExtract(s, 24, 8));
}

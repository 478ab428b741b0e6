#version 450
// Rotary position embedding (ela.h "Model ops") on Vulkan, in place on x f32 [M, H, d]: pairs
// (i, i + n_rot / 2) (HF) or (2i, 2i + 1) (interleaved) of row m rotated by pos[m] * inv_freq[i].
//
// Angles: the core's frequencies (double) become, on the host (backends/vulkan/vk_rope.c), the
// fractional part of inv_freq / 2 pi as a 64-bit fixed-point number of turns (binding 5, two
// words per frequency). pos * that, modulo 2^32, is the angle in turns to 2^-32 for any position
// (umulExtended keeps the product exact), where an f32 angle at position 2^18 would be off by
// 0.01 rad. The nearest quarter turn is taken off in integer arithmetic, and sin and cos of the
// rest (within pi / 4) come from their Taylor series to degree 11 and 12 (truncation < 1e-11;
// the built-in sin and cos may be off by 2^-11). Times attn_scale (YaRN; 1 otherwise).
// A workgroup per row m (grid-stride): it fills shared cos and sin for up to FCH frequencies,
// then rotates every head's pairs of those frequencies, and so on. Bound: memory (one read and
// write of x), a few dozen instructions per frequency and row.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;

#include "model_io.glsl"

layout(push_constant) uniform Push {
    uint x_off, xs0, xs1;  // floats: x[0, 0, 0] in binding 0, strides of m and h
    uint pos_off;          // i32 elements in binding 1
    uint M, H, half_rot;   // half_rot = n_rot / 2
    uint interleaved;
    uint f_off;            // words: frequency i is (hi, lo) at f_off + 2 i of binding 5
    float attn_scale;
} pc;

layout(std430, binding = 0) buffer XF { float x_f[]; };
layout(std430, binding = 1) readonly buffer PI { int pos_i[]; };
layout(std430, binding = 5) readonly buffer FU { uint f_u[]; };

const uint FCH = 256u;
shared float cs[FCH], sn[FCH];

// (sin, cos) of 2 pi t / 2^32.
vec2 sincos_turns(uint t) {
    const uint k = ((t + 0x20000000u) >> 30) & 3u; // nearest quarter turn
    const int rest = int(t - (k << 30));           // in [-2^29, 2^29): within pi / 4
    const float a = float(rest) * (TWO_PI / 4294967296.0), z = a * a;
    const float s = a * (1.0 + z * (-1.0 / 6.0 + z * (1.0 / 120.0 + z * (-1.0 / 5040.0 +
                        z * (1.0 / 362880.0 + z * (-1.0 / 39916800.0))))));
    const float c = 1.0 + z * (-0.5 + z * (1.0 / 24.0 + z * (-1.0 / 720.0 + z * (1.0 / 40320.0 +
                        z * (-1.0 / 3628800.0 + z * (1.0 / 479001600.0))))));
    if (k == 0u)
        return vec2(s, c);
    if (k == 1u)
        return vec2(c, -s);
    if (k == 2u)
        return vec2(-s, -c);
    return vec2(-c, s);
}

void main() {
    const uint tid = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;
    for (uint m = gl_WorkGroupID.x; m < pc.M; m += gl_NumWorkGroups.x) {
        const uint p = uint(pos_i[pc.pos_off + m]);
        for (uint c0 = 0u; c0 < pc.half_rot; c0 += FCH) {
            const uint cn = min(FCH, pc.half_rot - c0);
            for (uint i = tid; i < cn; i += WG) {
                const uint f = pc.f_off + 2u * (c0 + i);
                uint carry, low;
                umulExtended(p, f_u[f + 1u], carry, low);
                const vec2 sc = sincos_turns(p * f_u[f] + carry);
                sn[i] = sc.x * pc.attn_scale;
                cs[i] = sc.y * pc.attn_scale;
            }
            barrier();
            for (uint t = tid; t < pc.H * cn; t += WG) {
                const uint h = t / cn, i = t - h * cn, fi = c0 + i;
                const uint base = pc.x_off + m * pc.xs0 + h * pc.xs1;
                const uint j0 = base + (pc.interleaved != 0u ? 2u * fi : fi);
                const uint j1 = pc.interleaved != 0u ? j0 + 1u : j0 + pc.half_rot;
                const float x0 = x_f[j0], x1 = x_f[j1];
                x_f[j0] = x0 * cs[i] - x1 * sn[i];
                x_f[j1] = x0 * sn[i] + x1 * cs[i];
            }
            barrier();
        }
    }
}

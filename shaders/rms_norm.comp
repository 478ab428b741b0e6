#version 450
// RMS norm (ela.h "Model ops") on Vulkan: y = x / sqrt(mean(x^2) + eps) * w over rows of the
// last dim, x and y f32 of any rank (up to 3 outer dims, strided; y may be x), w f32/f16/bf16.
// A workgroup per row (grid-stride over rows): each invocation sums the squares of its
// elements (i, i + WG, ...), a shared-memory tree adds the sums, then each invocation writes its
// own elements, so in place needs no more ordering than that. f32 throughout, as the CPU.
// Bound: memory, one read of x for the sum and one read + write for the output (cached).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in; // a power of 2
layout(constant_id = 1) const uint WT = 0u; // dtype of w

#include "model_io.glsl"

layout(push_constant) uniform Push {
    uint x_off, y_off;                  // floats: element [0, ...] in bindings 0 and 3
    uint e1, e2;                        // outer extents 1, 2: row r = (i0 e1 + i1) e2 + i2
    uint xs0, xs1, xs2, ys0, ys1, ys2;  // floats
    uint w_off;                         // elements of w's dtype in binding 1
    uint D, rows;
    float eps;
} pc;

// x and y may be one tensor: neither is declared readonly or writeonly.
layout(std430, binding = 0) buffer XF { float x_f[]; };
layout(std430, binding = 1) readonly buffer WU { uint w_u[]; };
layout(std430, binding = 3) buffer YF { float y_f[]; };

shared float red[gl_WorkGroupSize.x];

float w_at(uint i) {
    const uint e = pc.w_off + i;
    if (WT == MT_F32)
        return uintBitsToFloat(w_u[e]);
    const uint v = w_u[e >> 1], h = (e & 1u) != 0u ? v >> 16 : v & 0xffffu;
    return WT == MT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

void main() {
    const uint tid = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;
    for (uint r = gl_WorkGroupID.x; r < pc.rows; r += gl_NumWorkGroups.x) {
        const uint i2 = r % pc.e2, r1 = r / pc.e2, i1 = r1 % pc.e1, i0 = r1 / pc.e1;
        const uint xb = pc.x_off + i0 * pc.xs0 + i1 * pc.xs1 + i2 * pc.xs2;
        const uint yb = pc.y_off + i0 * pc.ys0 + i1 * pc.ys1 + i2 * pc.ys2;
        float s = 0.0;
        for (uint i = tid; i < pc.D; i += WG) {
            const float v = x_f[xb + i];
            s += v * v;
        }
        red[tid] = s;
        barrier();
        for (uint o = WG / 2u; o > 0u; o >>= 1) {
            if (tid < o)
                red[tid] += red[tid + o];
            barrier();
        }
        const float scale = 1.0 / sqrt(red[0] / float(pc.D) + pc.eps);
        for (uint i = tid; i < pc.D; i += WG)
            y_f[yb + i] = x_f[xb + i] * scale * w_at(i);
        barrier(); // red[0] is read before the next row overwrites it
    }
}

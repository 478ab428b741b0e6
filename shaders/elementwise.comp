#version 450
// silu_mul and add (ela.h "Model ops") on Vulkan: out = silu(a) * b (OP 1) or a + b (OP 0) over
// f32 tensors of equal extents, any rank (up to 3 outer dims) and strides, innermost packed;
// out may be a or b (each element is read, then written, by the same invocation). One element
// per invocation, grid-stride over all of them. Bound: memory (two reads, one write).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 0u;

layout(push_constant) uniform Push {
    uint a_off, b_off, o_off;  // floats: element [0, ...] in bindings 0, 1, 3
    uint inner, e1, e2;        // innermost extent; outer extents 1, 2 (row r = (i0 e1 + i1) e2 + i2)
    uint as0, as1, as2, bs0, bs1, bs2, os0, os1, os2; // floats
    uint total;
} pc;

// out may alias a or b: no readonly / writeonly.
layout(std430, binding = 0) buffer AF { float a_f[]; };
layout(std430, binding = 1) buffer BF { float b_f[]; };
layout(std430, binding = 3) buffer OF { float o_f[]; };

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.total; e += step) {
        const uint r = e / pc.inner, c = e - r * pc.inner;
        const uint i2 = r % pc.e2, r1 = r / pc.e2, i1 = r1 % pc.e1, i0 = r1 / pc.e1;
        const float a = a_f[pc.a_off + i0 * pc.as0 + i1 * pc.as1 + i2 * pc.as2 + c];
        const float b = b_f[pc.b_off + i0 * pc.bs0 + i1 * pc.bs1 + i2 * pc.bs2 + c];
        o_f[pc.o_off + i0 * pc.os0 + i1 * pc.os1 + i2 * pc.os2 + c] =
            OP == 1u ? a / (1.0 + exp(-a)) * b : a + b;
    }
}

#version 450
// attn_nsa's full mode (DESIGN.md 4.9, op attn_nsa, blocks NULL) on Vulkan: after the dense
// attention, o[i, h, :] *= gate[i, h] in place, a workgroup per (row i, head h), an invocation
// per column. 16-bit o is read as words and written back with the per-element atomics of
// attn_io.glsl (no ELA_STORAGE16 variant), rounded to nearest even as the CPU does. The gate is
// a copy in binding 5 (lse_off, lse_s0, lse_s1 = its element offset and strides; rows = L).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;

#include "attn_io.glsl"

float load_o(uint e) {
    if (OT == DT_F32)
        return uintBitsToFloat(o_w[e]);
    return from16(half_of(atomicAdd(o_w[e >> 1], 0u), e), OT); // the other half may be in flight
}

void main() {
    const uint row = pc.base + gl_WorkGroupID.x; // i * Hq + h
    const uint hq = pc.G;                        // the caller passes Hq here
    const uint i = row / hq, h = row % hq;
    const float gate = part[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1];
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    for (uint c = gl_LocalInvocationIndex; c < D; c += gl_WorkGroupSize.x)
        store_o(oe + c, load_o(oe + c) * gate);
}

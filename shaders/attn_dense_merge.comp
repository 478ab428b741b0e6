#version 450
// Dense attention (DESIGN.md 4.1) on Vulkan, second pass of split attention: combines the
// per-split partials (unnormalised O, running max m, sum l, all in the exp2 domain) written
// by attn_dense.comp (and attn_dense_decode.comp, attn_gather.comp) into o and lse, each split
// weighted by exp2(m_s - M) with M the largest m of a split that saw keys. A workgroup per
// (row, KV head): its invocations find M and the weighted sum of l over the splits together
// (a tree in shared memory), put the splits' weights in shared memory WCH at a time, then each
// sums its columns over the splits, reading split after split of contiguous columns (one
// invocation walking every split's m and l alone made decode at 128K keys pay ~2 us per split).
// The bound is reading splits * (d + 2) floats per row, small next to K and V.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in; // a power of two
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint T = 8u; // lanes of the first pass: fixes its padded DP

#include "attn_io.glsl"

const uint DP = (D + 4u * T - 1u) / (4u * T) * 4u * T; // attn_dense.comp's padded row
const uint WG = gl_WorkGroupSize.x;
const uint CPT = (D + WG - 1u) / WG; // columns per invocation
const uint WCH = 256u;               // split weights staged at a time

shared float red[WG];
shared float wts[WCH];

// The workgroup's reduction of x: max (is_max) or sum, returned to every invocation.
float reduce(float x, bool is_max) {
    const uint tid = gl_LocalInvocationIndex;
    red[tid] = x;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (tid < s)
            red[tid] = is_max ? max(red[tid], red[tid + s]) : red[tid] + red[tid + s];
        barrier();
    }
    const float r = red[0];
    barrier(); // read before red is reused
    return r;
}

void main() {
    const uint row = pc.base + gl_WorkGroupID.x, g = gl_WorkGroupID.y;
    if (row >= pc.rows) // uniform over the workgroup
        return;
    const uint tid = gl_LocalInvocationIndex;
    const uint i = row / pc.G, h = g * pc.G + row % pc.G;
    const uint pe = pc.part_off + (g * pc.rows + row) * pc.splits * (DP + 2u);
    float M = NEG_BIG;
    for (uint s = tid; s < pc.splits; s += WG)
        if (part[pe + s * (DP + 2u) + DP + 1u] > 0.0)
            M = max(M, part[pe + s * (DP + 2u) + DP]);
    M = reduce(M, true);
    float lsum = 0.0;
    for (uint s = tid; s < pc.splits; s += WG) {
        const float ls = part[pe + s * (DP + 2u) + DP + 1u];
        if (ls > 0.0)
            lsum += ls * exp2(part[pe + s * (DP + 2u) + DP] - M);
    }
    lsum = reduce(lsum, false);
    float acc[CPT];
    [[unroll]] for (uint c = 0u; c < CPT; c++)
        acc[c] = 0.0;
    for (uint s0 = 0u; s0 < pc.splits; s0 += WCH) {
        const uint ns = min(WCH, pc.splits - s0);
        for (uint s = tid; s < ns; s += WG) {
            const uint ps = pe + (s0 + s) * (DP + 2u);
            wts[s] = part[ps + DP + 1u] > 0.0 ? exp2(part[ps + DP] - M) : 0.0;
        }
        barrier();
        for (uint s = 0u; s < ns; s++) {
            const float w = wts[s];
            const uint ps = pe + (s0 + s) * (DP + 2u);
            if (w != 0.0) // uniform: a split without keys adds nothing
                [[unroll]] for (uint c = 0u; c < CPT; c++) {
                    const uint col = tid + c * WG;
                    if (col < D)
                        acc[c] += part[ps + col] * w;
                }
        }
        barrier(); // the weights are read before the next chunk's
    }
    const float inv = lsum > 0.0 ? 1.0 / lsum : 0.0;
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    [[unroll]] for (uint c = 0u; c < CPT; c++) {
        const uint col = tid + c * WG;
        if (col < D)
            store_o(oe + col, acc[c] * inv);
    }
    if (tid == 0u && pc.has_lse != 0u)
        lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] =
            lsum > 0.0 ? (M + log2(lsum)) * LN2 : uintBitsToFloat(0xff800000u);
}

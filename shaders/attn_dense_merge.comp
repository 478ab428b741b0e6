#version 450
// Dense attention (DESIGN.md 4.1) on Vulkan, second pass of split attention: combines the
// per-split partials (unnormalised O, running max m, sum l, all in the exp2 domain) written
// by attn_dense.comp into o and lse, each split weighted by exp2(m_s - M) with M the largest
// m of a split that saw keys. A workgroup per (row, KV head), its invocations over the d
// columns; the bound is reading splits * (d + 2) floats per row, small next to K and V.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint T = 8u; // lanes of the first pass: fixes its padded DP

#include "attn_io.glsl"

const uint DP = (D + 4u * T - 1u) / (4u * T) * 4u * T; // attn_dense.comp's padded row

void main() {
    const uint row = pc.base + gl_WorkGroupID.x, g = gl_WorkGroupID.y;
    if (row >= pc.rows)
        return;
    const uint i = row / pc.G, h = g * pc.G + row % pc.G;
    const uint pe = pc.part_off + (g * pc.rows + row) * pc.splits * (DP + 2u);
    float M = NEG_BIG;
    for (uint s = 0u; s < pc.splits; s++)
        if (part[pe + s * (DP + 2u) + DP + 1u] > 0.0)
            M = max(M, part[pe + s * (DP + 2u) + DP]);
    float lsum = 0.0;
    for (uint s = 0u; s < pc.splits; s++) {
        const float ls = part[pe + s * (DP + 2u) + DP + 1u];
        if (ls > 0.0)
            lsum += ls * exp2(part[pe + s * (DP + 2u) + DP] - M);
    }
    const float inv = lsum > 0.0 ? 1.0 / lsum : 0.0;
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    for (uint col = gl_LocalInvocationIndex; col < D; col += gl_WorkGroupSize.x) {
        float acc = 0.0;
        for (uint s = 0u; s < pc.splits; s++) {
            const uint ps = pe + s * (DP + 2u);
            if (part[ps + DP + 1u] > 0.0)
                acc += part[ps + col] * exp2(part[ps + DP] - M);
        }
        store_o(oe + col, acc * inv);
    }
    if (gl_LocalInvocationIndex == 0u && pc.has_lse != 0u)
        lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] =
            lsum > 0.0 ? (M + log2(lsum)) * LN2 : uintBitsToFloat(0xff800000u);
}

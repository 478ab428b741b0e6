#version 450
// Fused hybrid block-sparse prefill (DESIGN.md 4.2) on Vulkan, second pass: combines the pieces
// of an item whose key blocks attn_blocks.comp split over several workgroups (unnormalised O,
// running max m and sum l in the exp2 domain, one slot of BR rows per piece) into o and lse,
// each piece weighted by exp2(m_p - M) with M the largest m of a piece that saw keys. A
// workgroup per merge entry (one item's BR rows), its invocations over the d columns; the bound
// is reading pieces * (d + 2) floats per row.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint T = 8u;   // lanes of the first pass: fixes its padded DP
layout(constant_id = 7) const uint BR = 16u; // rows per slot of the first pass

#include "attn_io.glsl"
#include "attn_blocks_list.glsl"

const uint DP = (D + 4u * T - 1u) / (4u * T) * 4u * T;

void main() {
    const uint e = part_u[HDR_MERGES] + 8u * (pc.base + gl_WorkGroupID.x);
    const uint cls = part_u[e], qb = part_u[e + 1u], row0 = part_u[e + 2u];
    const uint slot0 = part_u[e + 3u], pieces = part_u[e + 4u];
    const BlockClass cl = load_class(cls);
    const uint L = part_u[HDR_L];
    const uint nrows = min(BLOCK, L - qb * BLOCK) * cl.gc;
    for (uint rl = 0u; rl < BR && row0 + rl < nrows; rl++) {
        const uint r = row0 + rl;
        const uint i = qb * BLOCK + r / cl.gc;
        const uint h = part_u[part_u[HDR_HEADS] + cl.head0 + r % cl.gc];
        float Mx = NEG_BIG;
        for (uint p = 0u; p < pieces; p++) {
            const uint pe = pc.part_off + ((slot0 + p) * BR + rl) * (DP + 2u);
            if (part[pe + DP + 1u] > 0.0)
                Mx = max(Mx, part[pe + DP]);
        }
        float lsum = 0.0;
        for (uint p = 0u; p < pieces; p++) {
            const uint pe = pc.part_off + ((slot0 + p) * BR + rl) * (DP + 2u);
            if (part[pe + DP + 1u] > 0.0)
                lsum += part[pe + DP + 1u] * exp2(part[pe + DP] - Mx);
        }
        const float inv = lsum > 0.0 ? 1.0 / lsum : 0.0;
        const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
        for (uint col = gl_LocalInvocationIndex; col < D; col += gl_WorkGroupSize.x) {
            float acc = 0.0;
            for (uint p = 0u; p < pieces; p++) {
                const uint pe = pc.part_off + ((slot0 + p) * BR + rl) * (DP + 2u);
                if (part[pe + DP + 1u] > 0.0)
                    acc += part[pe + col] * exp2(part[pe + DP] - Mx);
            }
            store_o(oe + col, acc * inv);
        }
        if (gl_LocalInvocationIndex == 0u && pc.has_lse != 0u)
            lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] =
                lsum > 0.0 ? (Mx + log2(lsum)) * LN2 : uintBitsToFloat(0xff800000u);
    }
}

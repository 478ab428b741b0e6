#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan: the key splits'
// partial (m, l) of each window row merged into its final max and sum (one invocation a row).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;

#include "token_select.glsl"

void main() {
    const uint rows = HQ * W;
    const uint r = (pc.base + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationIndex;
    if (r >= rows)
        return;
    float mx = NEG_BIG;
    for (uint s = 0u; s < pc.splits; s++) {
        const uint at = pc.part_off + (s * rows + r) * 2u;
        if (uintBitsToFloat(part_u[at + 1u]) > 0.0)
            mx = max(mx, uintBitsToFloat(part_u[at]));
    }
    float l = 0.0;
    for (uint s = 0u; s < pc.splits; s++) {
        const uint at = pc.part_off + (s * rows + r) * 2u;
        const float ls = uintBitsToFloat(part_u[at + 1u]);
        if (ls > 0.0)
            l += ls * exp2(uintBitsToFloat(part_u[at]) - mx);
    }
    part_u[pc.ml_off + 2u * r] = floatBitsToUint(mx);
    part_u[pc.ml_off + 2u * r + 1u] = floatBitsToUint(l);
}

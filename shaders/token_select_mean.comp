#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan: the head mean
// g[j] of the pooled scores, one invocation per key.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;

#include "token_select.glsl"

void main() {
    const uint j = (pc.base + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationIndex;
    if (j >= LP)
        return;
    float sum = 0.0, comp = 0.0;
    for (uint h = 0u; h < HQ; h++)
        kahan_add(sum, comp, uintBitsToFloat(part_u[pc.pooled_off + h * LP + j]));
    part_u[pc.g_off + j] = floatBitsToUint(sum / float(HQ));
}

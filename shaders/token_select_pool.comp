#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan: avg-pool of each
// head's window scores a_h (width POOL, zero padding counted in the divisor, as avg_pool1d), one
// invocation per (head, key); a value that is not finite (inf or NaN in q or k) raises the flag
// the host turns into an error. Grid: (keys / WG, Hq).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;

#include "token_select.glsl"

void main() {
    const uint h = gl_WorkGroupID.y;
    const uint j = (pc.base + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationIndex;
    if (j >= LP)
        return;
    const uint half_w = (POOL - 1u) / 2u;
    const uint t0 = j >= half_w ? j - half_w : 0u, t1 = min(j + half_w + 1u, LP);
    float acc = 0.0;
    for (uint t = t0; t < t1; t++)
        acc += uintBitsToFloat(part_u[pc.score_off + h * LP + t]);
    const float v = acc / float(POOL);
    part_u[pc.pooled_off + h * LP + j] = floatBitsToUint(v);
    if (isnan(v) || isinf(v))
        atomicOr(part_u[RES_FLAG], 1u);
}

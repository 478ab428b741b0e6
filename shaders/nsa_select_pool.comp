#version 450
// SSA/NSA block selection (DESIGN.md 4.9, PAPERS.md 4.3, op nsa_select) on Vulkan, pass 1: the
// mean of each complete B-key block, kc[g, c] = (sum of its B rows, in order) * (1 / B) in f32
// into binding 5, c < nkc = (q_pos0 + L) / B. A workgroup per (block c, KV head g), an
// invocation per column; identical key blocks pool to identical bits, so exact ties survive.
// Bound: the keys of the complete blocks, read once.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;

// nkc pooled blocks per head, hkv, o_s2 (blocks' innermost stride), kc_off (float offset of kc
// in binding 5), s_off (of the scores), i_start (first query row of this dispatch)
#define ELA_PUSH_EXTRA uint nkc, hkv, o_s2, kc_off, s_off, i_start;
#include "attn_io.glsl"

void main() {
    const uint c = pc.base + gl_WorkGroupID.x, g = gl_WorkGroupID.y;
    const uint B = pc.split_keys; // the block size
    const float inv = 1.0 / float(B);
    const uint kb = pc.k_off + g * pc.k_s0 + c * B * pc.k_s1;
    for (uint x = gl_LocalInvocationIndex; x < D; x += gl_WorkGroupSize.x) {
        float s = 0.0;
        for (uint j = 0u; j < B; j++)
            s += load_k(kb + j * pc.k_s1 + x);
        part[pc.kc_off + (g * pc.nkc + c) * D + x] = s * inv;
    }
}

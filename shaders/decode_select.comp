#version 450
// LessIsMore selection (DESIGN.md 4.7, PAPERS.md 3.2, op decode_select) on Vulkan, pass 1 of 4:
// the raw logits q . k * scale of every candidate key for the G query heads of a KV head, as
// ordered bits into binding 5 (pass 2, decode_select_topk.comp, selects each head's top k_mid;
// pass 3 sorts them; pass 4 forms the rank-major union).
// A workgroup takes BK consecutive candidates of one KV head per tile: K rows staged in shared
// memory as f32 (coalesced), q of the G heads (pre-scaled, as the CPU backend does) in shared
// memory too, then each invocation forms G x BK dot products. Workgroups of KV head 0 also reset
// `first` for their keys. Bound: reading K once (Hkv n d elements), half a dense decode step.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint GMAX = 8u; // query heads per KV head (shared q rows)
layout(constant_id = 3) const uint BK = 32u;  // keys per tile
layout(constant_id = 7) const uint TILES = 8u; // tiles per workgroup

#include "decode_select.glsl"

const uint DP4 = (D + 3u) / 4u;
const uint WG = gl_WorkGroupSize.x;

shared vec4 qs[GMAX * DP4];
// K rows padded by one vec4: the invocations of a warp read BK different rows at the same
// column, which without the pad would all fall into one bank.
const uint KP4 = DP4 + 1u;
shared vec4 ks[BK * KP4];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint g = gl_WorkGroupID.y;
    const uint c_begin = (pc.base + gl_WorkGroupID.x) * BK * TILES;
    for (uint e = tid; e < pc.G * DP4; e += WG) {
        const uint hh = e / DP4, c4 = e % DP4;
        const uint qe = pc.q_off + (g * pc.G + hh) * pc.q_s1 + 4u * c4;
        vec4 x = vec4(0.0);
        for (uint k = 0u; k < 4u; k++)
            if (4u * c4 + k < D)
                x[k] = load_q(qe + k) * pc.scale_log2e;
        qs[e] = x;
    }
    for (uint t = 0u; t < TILES; t++) {
        const uint c0 = c_begin + t * BK;
        if (c0 >= NCAND) // uniform
            break;
        const uint nk = min(BK, NCAND - c0);
        barrier();
        [[dont_unroll]] for (uint e = tid; e < BK * DP4; e += WG) {
            const uint j = e / DP4, c4 = e % DP4;
            vec4 x = vec4(0.0);
            if (j < nk) {
                const uint ke = pc.k_off + g * pc.k_s0 + (LO + c0 + j) * pc.k_s1 + 4u * c4;
                if (pc.kv_vec4 != 0u && 4u * c4 + 3u < D) {
                    x = load_k4(ke);
                } else {
                    for (uint k = 0u; k < 4u; k++)
                        if (4u * c4 + k < D)
                            x[k] = load_k(ke + k);
                }
            }
            ks[j * KP4 + c4] = x;
        }
        barrier();
        for (uint o = tid; o < pc.G * nk; o += WG) {
            const uint hh = o / nk, j = o % nk;
            float p = 0.0;
            uint c4 = 0u;
            [[dont_unroll]] for (; c4 + 4u <= DP4; c4 += 4u) // 4 at a time
                p += dot(qs[hh * DP4 + c4], ks[j * KP4 + c4]) +
                     dot(qs[hh * DP4 + c4 + 1u], ks[j * KP4 + c4 + 1u]) +
                     dot(qs[hh * DP4 + c4 + 2u], ks[j * KP4 + c4 + 2u]) +
                     dot(qs[hh * DP4 + c4 + 3u], ks[j * KP4 + c4 + 3u]);
            [[dont_unroll]] for (; c4 < DP4; c4++)
                p += dot(qs[hh * DP4 + c4], ks[j * KP4 + c4]);
            part_u[pc.part_off + (g * pc.G + hh) * NCAND + c0 + j] = ord_of(p);
        }
        if (g == 0u)
            for (uint j = tid; j < nk; j += WG)
                part_u[pc.first_off + c0 + j] = 0xffffffffu;
    }
}

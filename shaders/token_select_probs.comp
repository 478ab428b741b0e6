#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan, pass 2: a_h[j],
// the mean over head h's window rows of their softmax probability of prefix key j.
//
// A workgroup owns WG prefix keys of KV head g, one per invocation, and walks the G w window
// rows of g in blocks of R (q rows and their (m, l) in shared memory): the invocation scores its
// key against the block's rows, P = exp2(s - m) / l, and adds P to its running sum for the row's
// head (a compensated f32 sum), written out as a_h[j] = sum / w when the head changes: each
// (head, key) has one writer. Every prefix key is visible to every window row (no mask).
// Bound: K rows read once per R rows, as pass 1 (token_select_stats.comp).
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint R = 8u;

#include "token_select.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint D4 = (D + 3u) / 4u;

shared vec4 qs[R * D4];
shared float sm[R];
shared float sinv[R];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint wid = pc.base + gl_WorkGroupID.x;
    const uint g = wid % HKV;
    const uint j = (wid / HKV) * WG + tid;
    const bool valid = j < LP;
    const uint kr = pc.k_off + g * pc.k_s0 + (valid ? j : 0u) * pc.k_s1;
    uint cur = 0u; // head slot (within g) of the running sum
    float sum = 0.0, comp = 0.0;
    for (uint r0 = 0u; r0 < pc.rows; r0 += R) {
        barrier(); // the last block's rows are consumed
        for (uint e = tid; e < R * D4; e += WG) {
            const uint r = e / D4, c = 4u * (e % D4);
            vec4 x = vec4(0.0);
            if (r0 + r < pc.rows) {
                const uint qe = q_row(g, r0 + r) + c;
                for (uint k = 0u; k < 4u; k++)
                    if (c + k < D)
                        x[k] = load_q(qe + k);
            }
            qs[e] = x * pc.scale_log2e;
        }
        for (uint r = tid; r < R; r += WG) {
            const uint row = g * pc.rows + r0 + r;
            sm[r] = r0 + r < pc.rows ? uintBitsToFloat(part_u[pc.ml_off + 2u * row]) : 0.0;
            sinv[r] = r0 + r < pc.rows ? 1.0 / uintBitsToFloat(part_u[pc.ml_off + 2u * row + 1u])
                                       : 0.0;
        }
        barrier();
        if (!valid)
            continue;
        float s[R];
        for (uint r = 0u; r < R; r++)
            s[r] = 0.0;
        for (uint c4 = 0u; c4 < D4; c4++) {
            vec4 kx = vec4(0.0);
            if (pc.kv_vec4 != 0u) {
                kx = load_k4(kr + 4u * c4);
            } else {
                for (uint k = 0u; k < 4u; k++)
                    if (4u * c4 + k < D)
                        kx[k] = load_k(kr + 4u * c4 + k);
            }
            for (uint r = 0u; r < R; r++)
                s[r] += dot(qs[r * D4 + c4], kx);
        }
        for (uint r = 0u; r < R && r0 + r < pc.rows; r++) {
            const uint hh = (r0 + r) / W;
            if (hh != cur) {
                part_u[pc.score_off + (g * pc.G + cur) * LP + j] = floatBitsToUint(sum / float(W));
                sum = 0.0;
                comp = 0.0;
                cur = hh;
            }
            kahan_add(sum, comp, exp2(s[r] - sm[r]) * sinv[r]);
        }
    }
    if (valid)
        part_u[pc.score_off + (g * pc.G + cur) * LP + j] = floatBitsToUint(sum / float(W));
}

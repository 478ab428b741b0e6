#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan, pass 1: each
// window row's softmax max m and sum l over its causal keys, per key split.
//
// A workgroup owns R window rows of KV head g (their q rows in shared memory as f32, scaled into
// the exp2 domain) and the keys of one split; invocation t takes keys t, t + WG, ...: it reads a
// key's row once and scores it against the R rows, keeping its own running (m, l) per row
// (online softmax, one key at a time). The WG partial (m, l) of a row are merged through shared
// memory at the end into the split's partial (binding 5). Bound: each K row read once per R
// rows: Hkv L d (G w / R) elements.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint R = 8u; // rows per workgroup

#include "token_select.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint D4 = (D + 3u) / 4u;

shared vec4 qs[R * D4];
shared float red_m[R * WG];
shared float red_l[R * WG];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint wid = pc.base + gl_WorkGroupID.x;
    const uint g = wid / pc.n_rb, r0 = (wid % pc.n_rb) * R;
    const uint kb = gl_WorkGroupID.y * pc.split_keys;
    const uint ke = min(kb + pc.split_keys, pc.n);
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
    barrier();
    float m[R], l[R];
    uint last[R]; // last key a row sees (its position); rows past the end see none
    for (uint r = 0u; r < R; r++) {
        m[r] = NEG_BIG;
        l[r] = 0.0;
        last[r] = r0 + r < pc.rows ? LP + (r0 + r) % W : 0u;
    }
    const uint kbase = pc.k_off + g * pc.k_s0;
    for (uint j = kb + tid; j < ke; j += WG) {
        float s[R];
        for (uint r = 0u; r < R; r++)
            s[r] = 0.0;
        const uint kr = kbase + j * pc.k_s1;
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
        for (uint r = 0u; r < R; r++) {
            if (r0 + r >= pc.rows || j > last[r])
                continue;
            if (s[r] > m[r]) {
                l[r] = l[r] * exp2(m[r] - s[r]) + 1.0;
                m[r] = s[r];
            } else {
                l[r] += exp2(s[r] - m[r]);
            }
        }
    }
    for (uint r = 0u; r < R; r++) {
        red_m[r * WG + tid] = m[r];
        red_l[r * WG + tid] = l[r];
    }
    barrier();
    if (tid < R && r0 + tid < pc.rows) {
        float mx = NEG_BIG;
        for (uint t = 0u; t < WG; t++)
            mx = max(mx, red_m[tid * WG + t]);
        float sum = 0.0;
        for (uint t = 0u; t < WG; t++)
            sum += red_l[tid * WG + t] * exp2(red_m[tid * WG + t] - mx);
        const uint at = pc.part_off + (gl_WorkGroupID.y * HQ * W + g * pc.rows + r0 + tid) * 2u;
        part_u[at] = floatBitsToUint(mx);
        part_u[at + 1u] = floatBitsToUint(sum);
    }
}

#version 450
// Token-sparse attention (DESIGN.md 4.6, op attn_token_sparse) on Vulkan, fused: per query head
// h, attention among its selected rows idx[h, 0..n_sel) (Q of head h, K and V of KV head h / G,
// gathered by index in the shader; nothing is copied), causal in the compressed order (the lists
// are strictly ascending, so that is the original causality), scattered into o; every row a
// head did not select is written as zero.
//
// A workgroup owns BR compressed rows of one query head (T lanes per row split d, as
// attn_gather.comp) and walks the head's list in tiles of BC entries: their original rows into
// shared memory, then those K and V rows gathered as f32, scores, the exp2-domain online softmax
// and P V (attn_gather.comp's loop with per-head lists and compressed-index visibility). The
// workgroup also zeroes the original rows of head h in the gaps before its rows (the last one:
// after them too), so o is written exactly once. n_sel = 0: each workgroup zeroes BR rows.
// The list lives in binding 5 (a copy made by backends/vulkan/vk_attn_token_sparse.c).
// Bound: K and V rows read once per workgroup of BR rows: 2 n_sel^2 d / BR elements per head.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif
#ifdef ELA_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint T = 8u;
layout(constant_id = 3) const uint BC = 32u;

// list entry i of head h: part_u[idx_off + h idx_s0 + i idx_s1]; pc.n: L; pc.rows: n_sel;
// pc.q_pos0: 1 when causal
#define ELA_PUSH_EXTRA uint idx_off, idx_s0, idx_s1;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

const uint DT4 = (D + 4u * T - 1u) / (4u * T);
const uint DP4 = DT4 * T;
const uint BR = gl_WorkGroupSize.x / T;
const uint WG = gl_WorkGroupSize.x;

shared vec4 ks[BC * DP4];
shared vec4 vs[BC * DP4];
shared float ss[BR * BC];
shared uint kpos[BC];
#ifndef ELA_SUBGROUP
shared float red[WG * BC];
#endif

uint sel(uint h, uint i) { return part_u[pc.idx_off + h * pc.idx_s0 + i * pc.idx_s1]; }

// Original rows [lo, hi) of head h set to zero by the whole workgroup.
void zero_rows(uint h, uint lo, uint hi) {
    for (uint e = gl_LocalInvocationIndex; e < (hi - lo) * D; e += WG)
        store_o(pc.o_off + (lo + e / D) * pc.o_s0 + h * pc.o_s1 + e % D, 0.0);
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint tile = pc.base + gl_WorkGroupID.x, h = gl_WorkGroupID.y, g = h / pc.G;
    const uint n_sel = pc.rows;
    if (n_sel == 0u) {
        zero_rows(h, tile * BR, min(tile * BR + BR, pc.n));
        return;
    }
    const uint i0 = tile * BR, i1 = min(i0 + BR, n_sel);
    for (uint i = i0; i < i1; i++) // uniform
        zero_rows(h, i == 0u ? 0u : sel(h, i - 1u) + 1u, sel(h, i));
    if (i1 == n_sel)
        zero_rows(h, sel(h, n_sel - 1u) + 1u, pc.n);

#ifdef ELA_SUBGROUP
    const uint flat_id = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    const uint flat_id = tid;
#endif
    const uint lane = flat_id % T, row_local = flat_id / T;
    const uint i = i0 + row_local; // compressed row
    const bool valid = i < n_sel;
    const uint orig = valid ? sel(h, i) : 0u;
    const bool causal = pc.q_pos0 != 0u;
    const uint k_end = causal ? i1 : n_sel; // compressed keys any row of the workgroup sees

    vec4 qr[DT4], acc[DT4];
    const uint qe = pc.q_off + orig * pc.q_s0 + h * pc.q_s1;
    for (uint c = 0u; c < DT4; c++) {
        const uint col = 4u * (lane + T * c);
        vec4 x = vec4(0.0);
        for (uint k = 0u; k < 4u; k++)
            if (valid && col + k < D)
                x[k] = load_q(qe + col + k);
        qr[c] = x * pc.scale_log2e;
        acc[c] = vec4(0.0);
    }
    float m = NEG_BIG, l = 0.0;
    const uint kbase = pc.k_off + g * pc.k_s0, vbase = pc.v_off + g * pc.v_s0;
    const uint srow = row_local * BC;

    for (uint kt = 0u; kt < k_end; kt += BC) {
        const uint nk = min(BC, k_end - kt);
        barrier();
        for (uint j = tid; j < nk; j += WG)
            kpos[j] = sel(h, kt + j);
        barrier();
        for (uint e = tid; e < BC * DP4; e += WG) {
            const uint j = e / DP4, col = 4u * (e % DP4);
            vec4 kx = vec4(0.0), vx = vec4(0.0);
            if (j < nk) {
                const uint key = kpos[j];
                const uint ke = kbase + key * pc.k_s1 + col;
                const uint ve = vbase + key * pc.v_s1 + col;
                if (pc.kv_vec4 != 0u) {
                    if (col < D) {
                        kx = load_k4(ke);
                        vx = load_v4(ve);
                    }
                } else {
                    for (uint k = 0u; k < 4u; k++)
                        if (col + k < D) {
                            kx[k] = load_k(ke + k);
                            vx[k] = load_v(ve + k);
                        }
                }
            }
            ks[e] = kx;
            vs[e] = vx;
        }
        barrier();
        for (uint j = 0u; j < nk; j++) {
            float p = 0.0;
            for (uint c = 0u; c < DT4; c++)
                p += dot(qr[c], ks[j * DP4 + lane + T * c]);
#ifdef ELA_SUBGROUP
            for (uint o = T / 2u; o > 0u; o >>= 1)
                p += subgroupShuffleXor(p, o);
            if (lane == 0u)
                ss[srow + j] = p;
#else
            red[(row_local * T + lane) * BC + j] = p;
#endif
        }
#ifndef ELA_SUBGROUP
        barrier();
        for (uint j = lane; j < nk; j += T) {
            float p = 0.0;
            for (uint t = 0u; t < T; t++)
                p += red[(row_local * T + t) * BC + j];
            ss[srow + j] = p;
        }
#endif
        barrier();
        if (valid) {
            // keys kt + j <= i are visible when causal (compressed order), all otherwise
            const uint nvis = causal ? (i >= kt ? min(nk, i - kt + 1u) : 0u) : nk;
            float mt = m;
            for (uint j = 0u; j < nvis; j++)
                mt = max(mt, ss[srow + j]);
            const float alpha = exp2(m - mt);
            l *= alpha;
            for (uint c = 0u; c < DT4; c++)
                acc[c] *= alpha;
            for (uint j = 0u; j < nvis; j++) {
                const float p = exp2(ss[srow + j] - mt);
                l += p;
                for (uint c = 0u; c < DT4; c++)
                    acc[c] += p * vs[j * DP4 + lane + T * c];
            }
            m = mt;
        }
    }

    if (!valid)
        return;
    const float inv = l > 0.0 ? 1.0 / l : 0.0;
    const uint oe = pc.o_off + orig * pc.o_s0 + h * pc.o_s1;
    for (uint c = 0u; c < DT4; c++) {
        const uint col = 4u * (lane + T * c);
        for (uint k = 0u; k < 4u; k++)
            if (col + k < D)
                store_o(oe + col + k, acc[c][k] * inv);
    }
}

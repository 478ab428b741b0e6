#version 450
// Fused hybrid block-sparse prefill (DESIGN.md 4.2, op attn_blocks) on Vulkan: attn_dense.comp's
// tiling and exp2-domain online softmax, walking only the 128-key blocks each head's mode allows.
//
// Work list (built by backends/vulkan/vk_attn_blocks.c, uploaded into binding 5 with the class
// table, the heads and a copy of the block masks): an item is BR rows of one class (the query
// heads of one KV head g that share a mode) inside one 128-query block qb, row r = (i - 128 qb)
// * gc + hh for query i and the class's head hh, and a range [jb0, jb1) of key blocks. Items are
// sorted by cost, largest first, so dense heads' long rows start early and cheap streaming or
// sparse-mask items fill the gaps; a long range is cut into pieces that write unnormalised
// partials (O, m, l) to slot `slot`, combined by attn_blocks_merge.comp.
// Within an item, as in attn_dense.comp: T lanes per row hold q (pre-scaled by scale log2 e) and
// O in registers, DT4 vec4 column groups each; a tile of BC keys of an allowed block is staged
// in shared memory as f32; scores are summed across the T lanes by subgroup shuffles
// (ELA_SUBGROUP) or shared memory. A skipped block costs one uniform test (and one mask byte).
// Bound: attn_dense.comp's over the visited blocks only.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif
#ifdef ELA_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;   // head dim, 1..256
layout(constant_id = 2) const uint T = 8u;     // lanes per row (divides the subgroup size)
layout(constant_id = 3) const uint BC = 32u;   // keys per tile

#include "attn_io.glsl"
#include "attn_blocks_list.glsl"

const uint DT4 = (D + 4u * T - 1u) / (4u * T);
const uint DP4 = DT4 * T;
const uint DP = 4u * DP4;
const uint BR = gl_WorkGroupSize.x / T;

shared vec4 ks[BC * DP4];
shared vec4 vs[BC * DP4];
shared float ss[BR * BC];
#ifndef ELA_SUBGROUP
shared float red[gl_WorkGroupSize.x * BC];
#endif

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint tid = gl_LocalInvocationIndex;
#ifdef ELA_SUBGROUP
    const uint flat_id = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    const uint flat_id = tid;
#endif
    const uint lane = flat_id % T, row_local = flat_id / T;

    const BlockItem it = load_item(pc.base + gl_WorkGroupID.x);
    const BlockClass cl = load_class(it.cls);
    const uint L = part_u[HDR_L], qb0 = part_u[HDR_QB0], nkb = part_u[HDR_NKB];
    const uint b0 = it.qb * BLOCK;
    const uint nrows = min(BLOCK, L - b0) * cl.gc;
    const uint r = it.row0 + row_local;
    const bool valid = r < nrows;
    const uint i = b0 + (valid ? r / cl.gc : 0u);
    const uint h = part_u[part_u[HDR_HEADS] + cl.head0 + (valid ? r % cl.gc : 0u)];
    const uint M = qb0 + it.qb;
    const uint vis = valid ? min(pc.q_pos0 + i + 1u, pc.n) : 0u;
    const uint i_last = b0 + (min(it.row0 + BR, nrows) - 1u) / cl.gc;
    const uint wg_vis = min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint jend = min(it.jb1, min(M, nkb - 1u) + 1u);

    vec4 qr[DT4], acc[DT4];
    const uint qe = pc.q_off + i * pc.q_s0 + h * pc.q_s1;
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
    const uint kbase = pc.k_off + cl.g * pc.k_s0, vbase = pc.v_off + cl.g * pc.v_s0;
    const uint srow = row_local * BC;

    for (uint J = it.jb0; J < jend; J++) {
        if (!block_allowed(cl, M, it.qb, J)) // uniform: the item's mode and block
            continue;
        const uint k_begin = J * BLOCK, k_end = min(k_begin + BLOCK, wg_vis);
        const uint row_end = min(vis, k_end);
        for (uint kt = k_begin; kt < k_end; kt += BC) {
            const uint nk = min(BC, k_end - kt);
            barrier();
            for (uint e = tid; e < BC * DP4; e += WG) {
                const uint j = e / DP4, col = 4u * (e % DP4);
                vec4 kx = vec4(0.0), vx = vec4(0.0);
                if (j < nk) {
                    const uint ke = kbase + (kt + j) * pc.k_s1 + col;
                    const uint ve = vbase + (kt + j) * pc.v_s1 + col;
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
            if (kt < row_end) {
                const uint jn = min(nk, row_end - kt);
                float mt = m;
                for (uint j = 0u; j < jn; j++)
                    mt = max(mt, ss[srow + j]);
                const float alpha = exp2(m - mt);
                l *= alpha;
                for (uint c = 0u; c < DT4; c++)
                    acc[c] *= alpha;
                for (uint j = 0u; j < jn; j++) {
                    const float p = exp2(ss[srow + j] - mt);
                    l += p;
                    for (uint c = 0u; c < DT4; c++)
                        acc[c] += p * vs[j * DP4 + lane + T * c];
                }
                m = mt;
            }
        }
    }

    if (!valid)
        return;
    if (it.slot != NO_SLOT) {
        const uint pe = pc.part_off + (it.slot * BR + row_local) * (DP + 2u);
        for (uint c = 0u; c < DT4; c++)
            for (uint k = 0u; k < 4u; k++)
                part[pe + 4u * (lane + T * c) + k] = acc[c][k];
        if (lane == 0u) {
            part[pe + DP] = m;
            part[pe + DP + 1u] = l;
        }
        return;
    }
    const float inv = l > 0.0 ? 1.0 / l : 0.0;
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    for (uint c = 0u; c < DT4; c++) {
        const uint col = 4u * (lane + T * c);
        for (uint k = 0u; k < 4u; k++)
            if (col + k < D)
                store_o(oe + col + k, acc[c][k] * inv);
    }
    if (lane == 0u && pc.has_lse != 0u)
        lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] = l > 0.0 ? (m + log2(l)) * LN2
                                                                     : uintBitsToFloat(0xff800000u);
}

#version 450
// Attention over an index set (DESIGN.md 4.8, op attn_gather) on Vulkan: attn_dense.comp's
// tiling over the keys a list names instead of a key range, first pass of split decode.
//
// A workgroup owns BR rows of KV head g (row r = i * G + hh, as in attn_dense.comp) and walks
// list entries [z * split_keys, (z + 1) * split_keys) of g's list (the shared list, or g's own):
// per tile of BC entries it reads their key positions into shared memory, then gathers those K
// and V rows, converted to f32, into shared memory; scores, the exp2-domain online softmax and
// P V follow attn_dense.comp, except that visibility is per (row, entry): causal rows see the
// listed keys at or before their position, in any list order. With splits > 1 it writes
// unnormalised partials that attn_dense_merge.comp combines (the same layout). The list lives in
// binding 5 (a copy made by backends/vulkan/vk_attn_gather.c) before the partials.
// Bound: each listed K/V row is read once per workgroup of BR rows: decode reads m rows of K and
// V per KV head, like dense decode over m keys (rows scattered, so whole-row bursts).
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
layout(constant_id = 7) const uint SPLIT = 0u;

#define ELA_PUSH_EXTRA uint idx_off, idx_s0; // list entry e of KV head g: idx_off + g idx_s0 + e
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

const uint DT4 = (D + 4u * T - 1u) / (4u * T);
const uint DP4 = DT4 * T;
const uint DP = 4u * DP4;
const uint BR = gl_WorkGroupSize.x / T;

shared vec4 ks[BC * DP4];
shared vec4 vs[BC * DP4];
shared float ss[BR * BC];
shared uint kpos[BC];
#ifndef ELA_SUBGROUP
shared float red[gl_WorkGroupSize.x * BC];
#endif

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint tid = gl_LocalInvocationIndex;
    const uint g = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
#ifdef ELA_SUBGROUP
    const uint flat_id = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    const uint flat_id = tid;
#endif
    const uint lane = flat_id % T, row_local = flat_id / T;
    const uint row = (pc.base + gl_WorkGroupID.x) * BR + row_local;
    const bool valid = row < pc.rows;
    const uint i = valid ? row / pc.G : 0u;
    const uint h = g * pc.G + (valid ? row % pc.G : 0u);
    const uint pos = pc.q_pos0 + i; // sees listed keys <= pos (not causal: q_pos0 = n)
    const uint k_begin = split * pc.split_keys;
    const uint k_end = min(k_begin + pc.split_keys, pc.n); // pc.n: list length m
    const uint list = pc.idx_off + g * pc.idx_s0;

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
    const uint kbase = pc.k_off + g * pc.k_s0, vbase = pc.v_off + g * pc.v_s0;
    const uint srow = row_local * BC;

    for (uint kt = k_begin; kt < k_end; kt += BC) {
        const uint nk = min(BC, k_end - kt);
        barrier();
        for (uint j = tid; j < nk; j += WG)
            kpos[j] = part_u[list + kt + j];
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
            float mt = m;
            for (uint j = 0u; j < nk; j++)
                if (kpos[j] <= pos)
                    mt = max(mt, ss[srow + j]);
            const float alpha = exp2(m - mt);
            l *= alpha;
            for (uint c = 0u; c < DT4; c++)
                acc[c] *= alpha;
            for (uint j = 0u; j < nk; j++) {
                if (kpos[j] > pos)
                    continue;
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
    if (SPLIT != 0u) {
        const uint pe = pc.part_off + ((g * pc.rows + row) * pc.splits + split) * (DP + 2u);
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

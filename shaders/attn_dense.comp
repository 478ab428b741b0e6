#version 450
// Dense attention (DESIGN.md 4.1, op attn_dense) on Vulkan: tiled flash attention, online
// softmax in the exp2 domain, f32 accumulation; prefill and the first pass of split decode.
//
// Tiling. A workgroup (WG = BR * T invocations) owns BR rows of one KV head g, where row
// r = i * G + hh is query i of query head g * G + hh: the G heads that share K/V read each
// tile once. It walks one key range: all keys the rows see (splits = 1), or split z's
// [z * split_keys, (z + 1) * split_keys) when the rows alone give too few workgroups (decode,
// short prefill over long keys); then it writes unnormalised partials (O, m, l) that
// attn_dense_merge.comp combines by their log-sum-exp.
// Each row is owned by T lanes: lane t holds the vec4 column groups t, t + T, ... of q
// (pre-scaled by scale * log2 e) and of the O accumulator in registers, DT4 = d / (4 T) of
// each (8 vec4 at d = 256). Per tile of BC keys the workgroup stages K and V, converted to
// f32, in shared memory; each lane forms partial dots over its columns, summed across the T
// lanes by subgroupShuffleXor (ELA_SUBGROUP; T divides the subgroup) or through shared memory,
// into a score row ss[BC] per query row; then the row's max over its visible keys, the
// rescale, and P V. Shared memory: 2 * BC * DP + BR * BC floats (+ WG * BC for the shared
// reduction); the host picks BC from maxComputeSharedMemorySize. No private array is indexed
// dynamically, so nothing spills to scratch (and software rasterisers compile it quickly).
// Bound: per workgroup K and V are read once (2 n d elements per BR rows) and each (row, key)
// costs 4 d FMAs from shared memory: decode is bound by reading K/V, prefill by the FMA loop
// (no matrix units on this path).
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
layout(constant_id = 7) const uint SPLIT = 0u; // 1: write partials instead of o and lse

#include "attn_io.glsl"

const uint DT4 = (D + 4u * T - 1u) / (4u * T); // vec4 column groups per lane
const uint DP4 = DT4 * T;                      // vec4 groups per padded row
const uint DP = 4u * DP4;                      // d padded to 4 T columns
const uint BR = gl_WorkGroupSize.x / T;

shared vec4 ks[BC * DP4];
shared vec4 vs[BC * DP4];
shared float ss[BR * BC]; // scores of the tile, one row per query row
#ifndef ELA_SUBGROUP
shared float red[gl_WorkGroupSize.x * BC]; // per-lane partial dots [row][lane][key]
#endif

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint tid = gl_LocalInvocationIndex;
    const uint g = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
#ifdef ELA_SUBGROUP
    // Rows from subgroup ids, so a row's T lanes share a subgroup whatever the layout.
    const uint flat_id = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    const uint flat_id = tid;
#endif
    const uint lane = flat_id % T, row_local = flat_id / T;
    const uint row0 = (pc.base + gl_WorkGroupID.x) * BR;
    const uint row = row0 + row_local;
    const bool valid = row < pc.rows;
    const uint i = valid ? row / pc.G : 0u;
    const uint h = g * pc.G + (valid ? row % pc.G : 0u);
    // Keys this row sees, and the keys any row of the workgroup sees.
    const uint vis = valid ? min(pc.q_pos0 + i + 1u, pc.n) : 0u;
    const uint i_last = (min(row0 + BR, pc.rows) - 1u) / pc.G;
    const uint wg_vis = min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint k_begin = split * pc.split_keys;
    const uint k_end = min(k_begin + pc.split_keys, wg_vis);
    const uint row_end = min(vis, k_end); // this row uses keys [k_begin, row_end)

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
        barrier(); // the previous tile and its scores are consumed
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

        // Scores of this tile: S = Q K^T for the row's keys (every lane, uniform control flow).
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
        barrier(); // scores visible to every lane of the row

        if (kt < row_end) { // at least one key of this tile is visible to the row
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

    if (SPLIT != 0u) {
        if (!valid)
            return;
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
    if (!valid)
        return;
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

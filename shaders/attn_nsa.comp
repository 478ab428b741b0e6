#version 450
// Gated attention of SSA models over listed key blocks (DESIGN.md 4.9, PAPERS.md 4.3 steps 6-7,
// op attn_nsa) on Vulkan: attn_gather.comp's tiling over the keys of one block list.
//
// A workgroup owns BR query heads of KV head g for one query row i (t = q_pos0 + i): heads
// chunk * BR + r, r < BR, of the G that share the list blocks[i, g, :]. One invocation compacts
// the list's blocks that hold a visible key (0 <= b, b B <= t; the host has checked the list)
// into shared memory; their keys, numbered e = slot B + offset and cut at t, go by in tiles of
// BC: key positions into shared memory, the K and V rows gathered as f32 into shared memory,
// then scores, the exp2-domain online softmax and P V as in attn_gather.comp (T lanes per row).
// o = gate O / l, or 0 for a row that sees no key. The block list and the gate (f32 [L, Hq])
// are copies in binding 5 (backends/vulkan/vk_attn_nsa.c).
// Bound: 2 top B d elements of K and V per (row, KV head chunk), gathered in whole rows.
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
layout(constant_id = 7) const uint TOPC = 16u; // list capacity: top

// Push fields of attn_io.glsl used here with their own meaning: lse_off, lse_s0, lse_s1 = the
// gate's element offset and strides in binding 5, has_lse = a gate is given, split_keys = the
// block size B, splits = top, rows = L. Own fields: the block list copy (element offset and
// strides in binding 5), nkb = ceil(n / B), chunks = head chunks per KV head.
#define ELA_PUSH_EXTRA uint bl_off, bl_s0, bl_s1, bl_s2, nkb, chunks;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

const uint DT4 = (D + 4u * T - 1u) / (4u * T);
const uint DP4 = DT4 * T;
const uint DP = 4u * DP4;
const uint BR = gl_WorkGroupSize.x / T;
const uint HIDDEN = 0xffffffffu;

shared vec4 ks[BC * DP4];
shared vec4 vs[BC * DP4];
shared float ss[BR * BC];
shared uint kpos[BC];
shared uint slist[TOPC];
shared uint s_nb;
#ifndef ELA_SUBGROUP
shared float red[gl_WorkGroupSize.x * BC];
#endif

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint tid = gl_LocalInvocationIndex;
    const uint g = gl_WorkGroupID.y;
#ifdef ELA_SUBGROUP
    const uint flat_id = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    const uint flat_id = tid;
#endif
    const uint lane = flat_id % T, row_local = flat_id / T;
    const uint item = pc.base + gl_WorkGroupID.x; // i * chunks + chunk
    const uint i = item / pc.chunks, hh = (item % pc.chunks) * BR + row_local;
    const bool valid = hh < pc.G;
    const uint h = g * pc.G + (valid ? hh : 0u);
    const uint t = pc.q_pos0 + i, B = pc.split_keys;

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
    if (tid == 0u) {
        const uint lb = pc.bl_off + i * pc.bl_s0 + g * pc.bl_s1;
        uint nb = 0u;
        for (uint x = 0u; x < pc.splits; x++) {
            const int b = int(part_u[lb + x * pc.bl_s2]);
            if (b >= 0 && uint(b) < pc.nkb && uint(b) * B <= t)
                slist[nb++] = uint(b);
        }
        s_nb = nb;
    }
    barrier();
    float m = NEG_BIG, l = 0.0;
    const uint kbase = pc.k_off + g * pc.k_s0, vbase = pc.v_off + g * pc.v_s0;
    const uint srow = row_local * BC;
    const uint total = s_nb * B;

    for (uint kt = 0u; kt < total; kt += BC) {
        const uint nk = min(BC, total - kt);
        barrier();
        for (uint j = tid; j < nk; j += WG) {
            const uint e = kt + j, key = slist[e / B] * B + e % B;
            kpos[j] = key <= t ? key : HIDDEN;
        }
        barrier();
        for (uint e = tid; e < BC * DP4; e += WG) {
            const uint j = e / DP4, col = 4u * (e % DP4);
            vec4 kx = vec4(0.0), vx = vec4(0.0);
            if (j < nk && kpos[j] != HIDDEN) {
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
            for (uint u = 0u; u < T; u++)
                p += red[(row_local * T + u) * BC + j];
            ss[srow + j] = p;
        }
#endif
        barrier();
        if (valid) {
            float mt = m;
            for (uint j = 0u; j < nk; j++)
                if (kpos[j] != HIDDEN)
                    mt = max(mt, ss[srow + j]);
            const float alpha = exp2(m - mt);
            l *= alpha;
            for (uint c = 0u; c < DT4; c++)
                acc[c] *= alpha;
            for (uint j = 0u; j < nk; j++) {
                if (kpos[j] == HIDDEN)
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
    const float gate = pc.has_lse != 0u ? part[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] : 1.0;
    const float f = l > 0.0 ? gate / l : 0.0;
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    for (uint c = 0u; c < DT4; c++) {
        const uint col = 4u * (lane + T * c);
        for (uint k = 0u; k < 4u; k++)
            if (col + k < D)
                store_o(oe + col + k, acc[c][k] * f);
    }
}

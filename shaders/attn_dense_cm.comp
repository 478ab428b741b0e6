#version 450
// Dense attention (DESIGN.md 4.1, op attn_dense) on tensor cores through NV cooperative matrices
// (VK_NV_cooperative_matrix, 16x16x16, f16 operands, f32 accumulation): flash attention for f16
// q, k and v, head dims a multiple of 16 up to 256. The same rows, key ranges, exp2-domain
// online softmax and split partials as attn_dense.comp (whose merge pass combines the splits),
// so the two paths are interchangeable; the host picks this one where the device has the
// extension (vk_attn_dense.c). The tile loop is attn_cm_tile.glsl's: 64 or 128 rows of one KV head per
// workgroup (row r = i * G + hh, as in attn_dense.comp: the G heads sharing K/V read each tile
// once) over tiles of BC keys of [k_begin, k_end).
// Bound: per workgroup K and V are read once per 64 rows; the tensor cores do 4 d FMAs per
// (row, key); S and P make one round trip through shared memory per tile.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

layout(local_size_x_id = 0) in;                // 128 or 256: 4 or 8 32-lane subgroups
layout(constant_id = 1) const uint D = 128u;   // head dim, a multiple of 16, <= 256
layout(constant_id = 2) const uint T = 8u;     // the merge pass's lanes: fixes the partial pitch
layout(constant_id = 3) const uint BC = 32u;   // keys per tile: 32 or 64
layout(constant_id = 7) const uint SPLIT = 0u; // 1: write partials instead of o and lse

#include "attn_io.glsl"

uint cm_q_elem(uint r) {
    const uint row = (pc.base + gl_WorkGroupID.x) * (gl_WorkGroupSize.x / 2u) + r;
    const uint g = gl_WorkGroupID.y;
    return row < pc.rows ? pc.q_off + (row / pc.G) * pc.q_s0 + (g * pc.G + row % pc.G) * pc.q_s1
                         : 0xffffffffu;
}

#include "attn_cm_tile.glsl"

void main() {
    const uint g = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
    const uint row0 = (pc.base + gl_WorkGroupID.x) * BR;
    cm_begin(g);
    const uint row = row0 + cm_sg * RS + cm_r;
    const bool valid = row < pc.rows;
    const uint i = valid ? row / pc.G : 0u;
    const uint h = g * pc.G + (valid ? row % pc.G : 0u);
    const uint vis = valid ? min(pc.q_pos0 + i + 1u, pc.n) : 0u;
    const uint i_last = (min(row0 + BR, pc.rows) - 1u) / pc.G;
    const uint wg_vis = min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint k_begin = split * pc.split_keys;
    const uint k_end = min(k_begin + pc.split_keys, wg_vis);
    const uint row_end = min(vis, k_end); // this row uses keys [k_begin, row_end)

    if (k_begin < k_end)
        cm_fetch(k_begin, min(BC, k_end - k_begin));
    for (uint kt = k_begin; kt < k_end; kt += BC) {
        const uint nk = min(BC, k_end - kt), next = kt + BC;
        cm_tile(nk, kt < row_end ? min(nk, row_end - kt) : 0u, next,
                next < k_end ? min(BC, k_end - next) : 0u);
    }

    // Normalise (split partials stay unnormalised) and write out 16 columns at a time: two
    // lanes per row, 8 columns each.
    cm_finish(SPLIT == 0u);
    const uint pe = pc.part_off + ((g * pc.rows + row) * pc.splits + split) * (DP + 2u);
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    for (uint c = 0u; c < D16; c++) {
        float x[8];
        cm_out_chunk(c, x);
        if (valid)
            for (uint t = 0u; t < 8u; t++) {
                const uint col = 16u * c + 8u * cm_half + t;
                if (SPLIT != 0u)
                    part[pe + col] = x[t];
                else
                    store_o(oe + col, x[t]);
            }
    }
    if (!valid || cm_half != 0u)
        return;
    if (SPLIT != 0u) {
        part[pe + DP] = cm_m;
        part[pe + DP + 1u] = cm_l;
    } else if (pc.has_lse != 0u) {
        lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] =
            cm_l > 0.0 ? (cm_m + log2(cm_l)) * LN2 : uintBitsToFloat(0xff800000u);
    }
}

#version 450
// Dense attention (DESIGN.md 4.1, op attn_dense) on tensor cores through NV cooperative matrices
// (VK_NV_cooperative_matrix, 16x16x16, f16 operands, f32 accumulation): flash attention for f16
// q, k and v, head dims a multiple of 16 up to 256. The same rows, key ranges, exp2-domain
// online softmax and split partials as attn_dense.comp (whose merge pass combines the splits),
// so the two paths are interchangeable; the host picks this one where the device has the
// extension (vk_attn_dense.c). The tile loop is attn_cm_tile.glsl's: 64 or 128 rows of one KV head per
// workgroup (row r = i * G + hh, as in attn_dense.comp: the G heads sharing K/V read each tile
// once) over tiles of BC keys of [k_begin, k_end).
// Bound: per workgroup K and V are read once per 64 or 128 rows; the tensor cores do 4 d FMAs
// per (row, key); the softmax stays in registers.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require

layout(local_size_x_id = 0) in;                // 128 or 256: 4 or 8 32-lane subgroups
layout(constant_id = 1) const uint D = 128u;   // head dim, a multiple of 16, <= 256
layout(constant_id = 2) const uint T = 8u;     // the merge pass's lanes: fixes the partial pitch
layout(constant_id = 3) const uint BC = 32u;   // keys per tile: 32 or 64
layout(constant_id = 7) const uint SPLIT = 0u; // 1: write partials instead of o and lse

#include "attn_io.glsl"

// The workgroup's first row; row r = i * G + hh is query i of head g * G + hh.
uint wg_row0() { return (pc.base + gl_WorkGroupID.x) * (gl_WorkGroupSize.x / 2u); }

#include "attn_cm_tile.glsl"

uint cm_q_elem(uint r) {
    const uint row = wg_row0() + r;
    const uint g = gl_WorkGroupID.y;
    return row < pc.rows ? pc.q_off + (row / pc.G) * pc.q_s0 + (g * pc.G + row % pc.G) * pc.q_s1
                         : 0xffffffffu;
}

uint cm_row_vis(uint r) {
    const uint row = wg_row0() + r;
    return row < pc.rows ? min(pc.q_pos0 + row / pc.G + 1u, pc.n) : 0u;
}

// Where the row's split partial starts in binding 5.
uint part_elem(uint row) {
    return pc.part_off +
           ((gl_WorkGroupID.y * pc.rows + row) * pc.splits + gl_WorkGroupID.z) * (DP + 2u);
}

void cm_out(uint r, uint col, float x) {
    const uint row = wg_row0() + r;
    if (row >= pc.rows)
        return;
    if (SPLIT != 0u) {
        part[part_elem(row) + col] = x;
    } else {
        const uint h = gl_WorkGroupID.y * pc.G + row % pc.G;
        store_o(pc.o_off + (row / pc.G) * pc.o_s0 + h * pc.o_s1 + col, x);
    }
}

void cm_out_stats(uint r, float m, float l) {
    const uint row = wg_row0() + r;
    if (row >= pc.rows)
        return;
    const uint i = row / pc.G, h = gl_WorkGroupID.y * pc.G + row % pc.G;
    if (SPLIT != 0u) {
        const uint pe = part_elem(row);
        part[pe + DP] = m;
        part[pe + DP + 1u] = l;
    } else if (pc.has_lse != 0u) {
        lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] =
            l > 0.0 ? (m + log2(l)) * LN2 : uintBitsToFloat(0xff800000u);
    }
}

void main() {
    const uint g = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
    const uint row0 = wg_row0();
    cm_begin(g);
    const uint i_last = (min(row0 + BR, pc.rows) - 1u) / pc.G;
    const uint wg_vis = min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint k_begin = split * pc.split_keys;
    const uint k_end = min(k_begin + pc.split_keys, wg_vis);

    if (k_begin < k_end)
        cm_fetch(k_begin, min(BC, k_end - k_begin));
    for (uint kt = k_begin; kt < k_end; kt += BC) {
        const uint nk = min(BC, k_end - kt), next = kt + BC;
        cm_tile(kt, nk, next, next < k_end ? min(BC, k_end - next) : 0u);
    }
    cm_finish(SPLIT == 0u); // split partials stay unnormalised
}

#version 450
// Fused hybrid block-sparse prefill (DESIGN.md 4.2, op attn_blocks) on tensor cores through NV
// cooperative matrices: attn_blocks.comp's work list (attn_blocks_list.glsl: items of BR = 64
// rows of one class inside one 128-query block, a range of key blocks, an optional partial
// slot) with attn_cm_tile.glsl's tile loop over the key blocks the class's mode allows, for f16
// q, k and v, head dims a multiple of 16 up to 256. Row r of an item is query i = 128 qb +
// r / gc of the class's head r % gc. The host (vk_attn_blocks.c) picks it where attn_dense
// takes attn_dense_cm.comp; attn_blocks_merge.comp combines split pieces as for the FMA path.
// Bound: attn_dense_cm.comp's over the visited blocks only.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require

layout(local_size_x_id = 0) in;                // 128: four 32-lane subgroups
layout(constant_id = 1) const uint D = 128u;   // head dim, a multiple of 16, <= 256
layout(constant_id = 2) const uint T = 8u;     // the merge pass's lanes: fixes the partial pitch
layout(constant_id = 3) const uint BC = 32u;   // keys per tile (divides 128)

#include "attn_io.glsl"
#include "attn_blocks_list.glsl"

// The item and class of this workgroup, and the rows they hold.
BlockItem g_it;
BlockClass g_cl;
uint g_b0, g_nrows;

#include "attn_cm_tile.glsl"

uint cm_q_elem(uint r) {
    const uint row = g_it.row0 + r;
    if (row >= g_nrows)
        return 0xffffffffu;
    const uint i = g_b0 + row / g_cl.gc;
    const uint h = part_u[part_u[HDR_HEADS] + g_cl.head0 + row % g_cl.gc];
    return pc.q_off + i * pc.q_s0 + h * pc.q_s1;
}

uint cm_row_vis(uint r) {
    const uint row = g_it.row0 + r;
    return row < g_nrows ? min(pc.q_pos0 + g_b0 + row / g_cl.gc + 1u, pc.n) : 0u;
}

void cm_out(uint r, uint col, float x) {
    const uint row = g_it.row0 + r;
    if (row >= g_nrows)
        return;
    if (g_it.slot != NO_SLOT) {
        part[pc.part_off + (g_it.slot * BR + r) * (DP + 2u) + col] = x;
    } else {
        const uint h = part_u[part_u[HDR_HEADS] + g_cl.head0 + row % g_cl.gc];
        store_o(pc.o_off + (g_b0 + row / g_cl.gc) * pc.o_s0 + h * pc.o_s1 + col, x);
    }
}

void cm_out_stats(uint r, float m, float l) {
    const uint row = g_it.row0 + r;
    if (row >= g_nrows)
        return;
    if (g_it.slot != NO_SLOT) {
        const uint pe = pc.part_off + (g_it.slot * BR + r) * (DP + 2u);
        part[pe + DP] = m;
        part[pe + DP + 1u] = l;
    } else if (pc.has_lse != 0u) {
        const uint h = part_u[part_u[HDR_HEADS] + g_cl.head0 + row % g_cl.gc];
        lse_f[pc.lse_off + (g_b0 + row / g_cl.gc) * pc.lse_s0 + h * pc.lse_s1] =
            l > 0.0 ? (m + log2(l)) * LN2 : uintBitsToFloat(0xff800000u);
    }
}

// The first tile at or after key kt (within key block J0 onwards) that the item visits, as its
// start; k_stop when none is left. Uniform.
uint next_tile(uint kt, uint M, uint jend, uint wg_vis, uint k_stop) {
    for (uint J = kt / BLOCK; J < jend; J++) {
        const uint k_begin = max(J * BLOCK, kt), k_end = min(J * BLOCK + BLOCK, wg_vis);
        if (k_begin < k_end && block_allowed(g_cl, M, g_it.qb, J))
            return k_begin;
    }
    return k_stop;
}

void main() {
    g_it = load_item(pc.base + gl_WorkGroupID.x);
    g_cl = load_class(g_it.cls);
    const uint L = part_u[HDR_L], qb0 = part_u[HDR_QB0], nkb = part_u[HDR_NKB];
    g_b0 = g_it.qb * BLOCK;
    g_nrows = min(BLOCK, L - g_b0) * g_cl.gc;
    cm_begin(g_cl.g);

    const uint M = qb0 + g_it.qb;
    const uint i_last = g_b0 + (min(g_it.row0 + BR, g_nrows) - 1u) / g_cl.gc;
    const uint wg_vis = min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint jend = min(g_it.jb1, min(M, nkb - 1u) + 1u);
    // Keys the item may visit: [k_first, k_stop); tiles never cross a block (BC divides 128).
    const uint k_stop = min(jend * BLOCK, wg_vis);

    uint kt = next_tile(g_it.jb0 * BLOCK, M, jend, wg_vis, k_stop);
    if (kt < k_stop)
        cm_fetch(kt, min(BC, min(kt / BLOCK * BLOCK + BLOCK, wg_vis) - kt));
    while (kt < k_stop) {
        const uint blk_end = min(kt / BLOCK * BLOCK + BLOCK, wg_vis);
        const uint nk = min(BC, blk_end - kt);
        const uint next = next_tile(kt + nk, M, jend, wg_vis, k_stop);
        const uint next_nk = next < k_stop
                                 ? min(BC, min(next / BLOCK * BLOCK + BLOCK, wg_vis) - next)
                                 : 0u;
        cm_tile(kt, nk, next, next_nk);
        kt = next;
    }
    cm_finish(g_it.slot == NO_SLOT);
}

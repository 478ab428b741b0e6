#version 450
// Checks once per device the accumulator layout that attn_cm_tile.glsl's register softmax
// needs (vk_cm_layout.c): in a 16 x 16 f32 cooperative matrix at subgroup scope, every lane
// holds elements of at most two rows, the four lanes of a quad hold the same two rows (in the
// same order), and between them all 16 elements of each. Writes 1 to word 0 when every lane
// agrees, else 0, and the elements per lane to word 1. One 32-lane subgroup.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require

layout(local_size_x = 32) in;
layout(std430, binding = 0) buffer Result { uint result[]; };

shared float rows_tab[256];

void main() {
    for (uint e = gl_LocalInvocationIndex; e < 256u; e += 32u)
        rows_tab[e] = float(e / 16u);
    barrier();
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> rows;
    coopMatLoadNV(rows, rows_tab, 0u, 16u, false);
    const uint ra = uint(rows[0]);
    uint rb = ra, na = 0u, nb = 0u;
    bool ok = true;
    for (int e = 0; e < rows.length(); e++) {
        const uint r = uint(rows[e]);
        if (r != ra && rb == ra)
            rb = r;
        ok = ok && (r == ra || r == rb);
        na += r == ra ? 1u : 0u;
        nb += r == rb && rb != ra ? 1u : 0u;
    }
    for (uint x = 1u; x <= 2u; x *= 2u) {
        ok = ok && subgroupShuffleXor(ra, x) == ra && subgroupShuffleXor(rb, x) == rb;
        na += subgroupShuffleXor(na, x);
        nb += subgroupShuffleXor(nb, x);
    }
    ok = ok && na == 16u && (rb == ra || nb == 16u);
    ok = subgroupAll(ok);
    if (gl_LocalInvocationIndex == 0u) {
        result[0] = ok ? 1u : 0u;
        result[1] = uint(rows.length());
    }
}

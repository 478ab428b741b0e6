#version 450
// Token Sparse Attention's gather and scatter (ela.h token_compress / token_decompress, PAPERS.md
// 2.4) on Vulkan: raw row copies between the full sequence and each query head's compressed
// one (the core checked every index list: strictly ascending, in [0, L)); q8_0 rows too.
//   gather (MODE 0):  dst row (h, i) <- src row (idx[h][i], h / G), i < n_sel
//   scatter (MODE 1): dst row (h, t) <- src row (i, h) where idx[h][i] == t (binary search over
//                     the ascending list), zeros where t is not listed; every row of dst is
//                     written once, so no separate zeroing pass.
// A destination word per unit (copy_io.glsl: a row may start mid-word), grid-stride over
// heads x rows x units. Bound: memory.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0u;

#include "model_io.glsl"
#include "copy_io.glsl"

layout(push_constant) uniform Push {
    uint s_off, s_row, s_head;  // bytes: source row 0 of head 0 in binding 0, strides
    uint d_off, d_row, d_head;  // bytes: destination, binding 3
    uint idx_off, idx_s;        // i32 elements: list of head h at idx_off + h idx_s, binding 1
    uint rows;                  // destination rows per head (gather: n_sel; scatter: L)
    uint n_sel, G;              // listed rows; query heads per source head (gather)
    uint row_bytes, units;      // bytes per row; destination words per row (an upper bound)
    uint total;                 // heads * rows * units
} pc;

layout(std430, binding = 1) readonly buffer II { int idx_i[]; };

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.total; e += step) {
        const uint t = e / pc.units, u = e - t * pc.units, h = t / pc.rows, i = t - h * pc.rows;
        const uint db = pc.d_off + i * pc.d_row + h * pc.d_head, w = (db >> 2) + u;
        const uint list = pc.idx_off + h * pc.idx_s;
        if (MODE == 0u) {
            const uint sel = uint(idx_i[list + i]);
            copy_word(w, db, pc.row_bytes, pc.s_off + sel * pc.s_row + (h / pc.G) * pc.s_head);
            continue;
        }
        uint lo = 0u, hi = pc.n_sel; // first entry >= i
        while (lo < hi) {
            const uint mid = (lo + hi) / 2u;
            if (uint(idx_i[list + mid]) < i)
                lo = mid + 1u;
            else
                hi = mid;
        }
        if (lo < pc.n_sel && uint(idx_i[list + lo]) == i) {
            copy_word(w, db, pc.row_bytes, pc.s_off + lo * pc.s_row + h * pc.s_head);
        } else {
            const uint a = max(db, 4u * w), b = min(db + pc.row_bytes, 4u * w + 4u);
            if (a < b)
                d_store(w, 0u, byte_mask(a - 4u * w, b - 4u * w));
        }
    }
}

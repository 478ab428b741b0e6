#version 450
// LessIsMore selection (DESIGN.md 4.7, op decode_select) on Vulkan, pass 3: sorts each query
// head's k_mid selected candidates by (logit descending, index ascending) into top[h][rank] and
// records each key's first appearance rank * Hq + h (atomicMin) for the union. A workgroup per
// head: a bitonic sort of P entries (a power of two >= k_mid) in shared memory, or, when k_mid
// exceeds what shared memory holds (P = 0), each entry's rank counted against all the others
// in global memory (O(k_mid^2) compares, for very large budgets only).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint P = 1024u; // 0: counting ranks

#include "decode_select.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint PS = P > 0u ? P : 1u;

shared uint so[PS];
shared uint sj[PS];

void place(uint h, uint rank, uint key) {
    part_u[pc.top_off + h * K_MID + rank] = key;
    atomicMin(part_u[pc.first_off + key - LO], rank * HQ + h);
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint h = gl_WorkGroupID.x;
    const uint sb = pc.sel_off + h * K_MID * 2u;
    if (P == 0u) {
        for (uint e = tid; e < K_MID; e += WG) {
            const uint oe = part_u[sb + 2u * e], je = part_u[sb + 2u * e + 1u];
            uint rank = 0u;
            for (uint f = 0u; f < K_MID; f++)
                rank += ranks_before(part_u[sb + 2u * f], part_u[sb + 2u * f + 1u], oe, je) ? 1u
                                                                                           : 0u;
            place(h, rank, je);
        }
        return;
    }
    for (uint e = tid; e < PS; e += WG) {
        so[e] = e < K_MID ? part_u[sb + 2u * e] : 0u; // padding ranks last
        sj[e] = e < K_MID ? part_u[sb + 2u * e + 1u] : 0xffffffffu;
    }
    for (uint k = 2u; k <= PS; k <<= 1)
        for (uint j = k >> 1; j > 0u; j >>= 1) {
            barrier();
            for (uint x = tid; x < PS; x += WG) {
                const uint y = x ^ j;
                if (y > x) {
                    const bool up = (x & k) == 0u;
                    const uint ox = so[x], oy = so[y], jx = sj[x], jy = sj[y];
                    if (ranks_before(oy, jy, ox, jx) == up) {
                        so[x] = oy;
                        so[y] = ox;
                        sj[x] = jy;
                        sj[y] = jx;
                    }
                }
            }
        }
    barrier();
    for (uint r = tid; r < K_MID; r += WG)
        place(h, r, sj[r]);
}

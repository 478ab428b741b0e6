#version 450
// XAttention block estimate (DESIGN.md 4.3, op xattn_estimate) on Vulkan, second pass: the
// threshold selection of one query-block row of one listed head per workgroup, in the order of
// the CPU backend and the reference. Sums the first pass's block masses over its row groups
// (A[J], J <= last = min(M, nkb - 1)), keeps block 0 and the diagonal M (when < nkb), then the
// other causal blocks by descending mass, equal masses lower block first (a bitonic sort of
// (mass, J) in shared memory, P entries, a power of two >= nkb), while the kept mass is below
// threshold * the row's total. Writes the u8 mask row (binding 3, bytes set with word atomics so
// neighbours outside the row are never touched) and the kept count (binding 5, for
// kept_blocks). Bound: O(P log^2 P) shared-memory steps per row, small next to the first pass.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint P = 256u; // sort entries, a power of two >= nkb

#define ELA_PUSH_EXTRA uint heads_off, counts_off, nkb, nqb, n_rg; float threshold;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

const uint WG = gl_WorkGroupSize.x;

shared float mass[P];
shared uint blk[P];
shared uint keep[(P + 31u) / 32u];
shared float red[WG];
shared uint taken;

// (mass, block) order of the selection: a before b when heavier, or as heavy and lower.
bool before(float ma, uint ja, float mb, uint jb) {
    return ma > mb || (ma == mb && ja < jb);
}

void set_byte(uint e, uint v) {
    const uint sh = (e & 3u) * 8u;
    atomicAnd(o_w[e >> 2], ~(0xffu << sh));
    if (v != 0u)
        atomicOr(o_w[e >> 2], v << sh);
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint I = pc.base + gl_WorkGroupID.x, hi = gl_WorkGroupID.y;
    const uint M = pc.q_pos0 / 128u + I;
    const uint last = min(M, pc.nkb - 1u);
    const uint in0 = pc.part_off + (hi * pc.nqb + I) * pc.n_rg * pc.nkb;
    const bool diag = M < pc.nkb && M != 0u;

    // Block masses; candidates J in [1, last] other than M, the rest sort last.
    float part_total = 0.0;
    for (uint J = tid; J < P; J += WG) {
        float a = 0.0;
        if (J <= last)
            for (uint r = 0u; r < pc.n_rg; r++)
                a += part[in0 + r * pc.nkb + J];
        part_total += a;
        const bool cand = J >= 1u && J <= last && J != M;
        mass[J] = cand ? a : -1.0;
        blk[J] = cand ? J : 0xffffffffu;
    }
    for (uint w = tid; w < (P + 31u) / 32u; w += WG)
        keep[w] = 0u;
    red[tid] = part_total;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (tid < s)
            red[tid] += red[tid + s];
        barrier();
    }
    const float total = red[0];
    // Forced blocks' mass, read before the sort reorders the arrays.
    float have = 0.0, have_diag = 0.0;
    for (uint r = 0u; r < pc.n_rg; r++) {
        have += part[in0 + r * pc.nkb];
        have_diag += diag ? part[in0 + r * pc.nkb + M] : 0.0;
    }
    have += have_diag;

    // Bitonic sort, `before` first.
    for (uint k = 2u; k <= P; k <<= 1)
        for (uint j = k >> 1; j > 0u; j >>= 1) {
            barrier();
            for (uint x = tid; x < P; x += WG) {
                const uint y = x ^ j;
                if (y > x) {
                    const bool up = (x & k) == 0u; // this run sorts in `before` order
                    const float mx = mass[x], my = mass[y];
                    const uint jx = blk[x], jy = blk[y];
                    if (before(my, jy, mx, jx) == up) {
                        mass[x] = my;
                        mass[y] = mx;
                        blk[x] = jy;
                        blk[y] = jx;
                    }
                }
            }
        }
    barrier();

    // Take candidates in order while the kept mass is below the target (one invocation: the
    // order of the additions is the reference's).
    if (tid == 0u) {
        const float target = pc.threshold * total;
        uint n = 0u;
        for (uint x = 0u; x < P && blk[x] != 0xffffffffu && have < target; x++) {
            keep[blk[x] >> 5] |= 1u << (blk[x] & 31u);
            have += mass[x];
            n++;
        }
        keep[0] |= 1u;
        if (diag)
            keep[M >> 5] |= 1u << (M & 31u);
        taken = n + (diag ? 2u : 1u);
    }
    barrier();
    const uint row = pc.o_off + hi * pc.o_s0 + I * pc.o_s1;
    for (uint J = tid; J < pc.nkb; J += WG)
        set_byte(row + J, (keep[J >> 5] >> (J & 31u)) & 1u);
    if (tid == 0u)
        part_u[pc.counts_off + hi * pc.nqb + I] = taken;
}

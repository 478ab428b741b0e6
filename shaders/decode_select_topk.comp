#version 450
// LessIsMore selection (DESIGN.md 4.7, op decode_select) on Vulkan, pass 2: each query head's
// top k_mid candidates (logit descending, index ascending), unsorted, into sel. A workgroup per
// head: a radix select over the ordered logit bits (four 8-bit digits, a shared histogram each)
// finds the k_mid-th largest value thr and how many of the values equal to it are needed; then
// one pass in index order writes every candidate above thr (any slot) and the first `need`
// equal ones (the lowest indices: a per-chunk prefix count, only in chunks that hold any).
// Bound: five passes over the head's ncand logits (L2-resident), one workgroup per head.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in; // a power of two

#include "decode_select.glsl"

const uint WG = gl_WorkGroupSize.x;

// HC copies of the histogram, invocation t counting into copy t % HC: the first digit (sign and
// high exponent bits) puts nearly every logit into one or two bins, and one shared counter per
// bin would serialise the whole workgroup on its atomics.
const uint HC = 8u;
shared uint hist[HC * 256u];
shared uint s_prefix, s_need, s_above, s_eq, s_scan[WG];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint h = gl_WorkGroupID.x;
    const uint lb = pc.part_off + h * NCAND;
    uint prefix = 0u, mask = 0u, need = K_MID;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (uint b = tid; b < HC * 256u; b += WG)
            hist[b] = 0u;
        barrier();
        for (uint c = tid; c < NCAND; c += WG) {
            const uint o = part_u[lb + c];
            if ((o & mask) == prefix)
                atomicAdd(hist[(tid % HC) * 256u + ((o >> uint(shift)) & 255u)], 1u);
        }
        barrier();
        for (uint b = tid; b < 256u; b += WG)
            for (uint x = 1u; x < HC; x++)
                hist[b] += hist[x * 256u + b];
        barrier();
        if (tid == 0u) {
            uint above = 0u, dg = 255u;
            for (; dg > 0u && above + hist[dg] < need; dg--)
                above += hist[dg];
            s_prefix = prefix | (dg << uint(shift));
            s_need = need - above;
        }
        barrier();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << uint(shift);
        barrier();
    }
    // prefix: the k_mid-th largest value; need: how many entries equal to it are taken.
    const uint thr = prefix, above_total = K_MID - need;
    if (tid == 0u)
        s_above = 0u;
    uint eq_base = 0u;
    const uint sb = pc.sel_off + h * K_MID * 2u;
    for (uint c0 = 0u; c0 < NCAND; c0 += WG) {
        if (tid == 0u)
            s_eq = 0u;
        barrier();
        const uint c = c0 + tid;
        const uint o = c < NCAND ? part_u[lb + c] : 0u;
        const bool gt = c < NCAND && o > thr, eq = c < NCAND && o == thr;
        if (gt) {
            const uint slot = atomicAdd(s_above, 1u);
            part_u[sb + 2u * slot] = o;
            part_u[sb + 2u * slot + 1u] = LO + c;
        }
        if (eq)
            atomicAdd(s_eq, 1u);
        barrier();
        const uint n_eq = s_eq;
        barrier(); // s_eq read by all before the next chunk resets it
        if (n_eq == 0u || eq_base >= need) // uniform
            continue;
        // Inclusive prefix count of `eq` over the chunk (Hillis-Steele).
        s_scan[tid] = eq ? 1u : 0u;
        barrier();
        for (uint off = 1u; off < WG; off <<= 1) {
            const uint add = tid >= off ? s_scan[tid - off] : 0u;
            barrier();
            s_scan[tid] += add;
            barrier();
        }
        const uint before = s_scan[tid] - (eq ? 1u : 0u);
        if (eq && eq_base + before < need) {
            const uint slot = above_total + eq_base + before;
            part_u[sb + 2u * slot] = o;
            part_u[sb + 2u * slot + 1u] = LO + c;
        }
        eq_base += n_eq;
    }
}

#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan: head h's index
// list, one workgroup per head. n_keep == 0: every token 0..L-1. Otherwise its top n_keep
// pooled scores (ties: lower index first) and the window, ascending: a radix select over the
// scores' bits (non-negative floats: the bits order them; four 8-bit digits, HC histogram copies
// against atomic contention) finds the n_keep-th largest value thr and how many values equal to
// it are kept; then, WG indices at a time in index order, a value above thr goes to position
// (values above before it) + min(equal ones before it, need), the first `need` equal ones
// likewise (a workgroup prefix sum of both counts, packed in one word). The ranking needs no
// normalisation: dividing a head's scores by their sum keeps their order.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in; // a power of two, at most 65535

#include "token_select.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint HC = 8u;
shared uint hist[HC * 256u];
shared uint s_prefix, s_need;
shared uint scan[WG];

void put(uint h, uint at, uint v) { o_w[pc.o_off + h * pc.o_s0 + at * pc.o_s1] = v; }

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint h = pc.base + gl_WorkGroupID.x;
    const uint n_keep = part_u[RES_N_KEEP];
    if (n_keep == 0u) {
        for (uint j = tid; j < pc.n; j += WG)
            put(h, j, j);
        return;
    }
    const uint xb = pc.pooled_off + h * LP;
    uint prefix = 0u, mask = 0u, need = n_keep;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (uint b = tid; b < HC * 256u; b += WG)
            hist[b] = 0u;
        barrier();
        for (uint j = tid; j < LP; j += WG) {
            const uint o = part_u[xb + j];
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
    const uint thr = prefix;
    uint gt_base = 0u, eq_base = 0u;
    for (uint c0 = 0u; c0 < LP; c0 += WG) {
        const uint j = c0 + tid;
        const uint o = j < LP ? part_u[xb + j] : 0u;
        const uint gt = j < LP && o > thr ? 1u : 0u, eq = j < LP && o == thr ? 1u : 0u;
        const uint mine = gt | (eq << 16);
        scan[tid] = mine;
        barrier();
        for (uint off = 1u; off < WG; off <<= 1) { // inclusive prefix sum (Hillis-Steele)
            const uint add = tid >= off ? scan[tid - off] : 0u;
            barrier();
            scan[tid] += add;
            barrier();
        }
        const uint ex = scan[tid] - mine, total = scan[WG - 1u];
        barrier(); // scan is rewritten by the next chunk
        const uint gt_ex = ex & 0xffffu, eq_before = eq_base + (ex >> 16);
        if (gt != 0u)
            put(h, gt_base + gt_ex + min(eq_before, need), j);
        else if (eq != 0u && eq_before < need)
            put(h, gt_base + gt_ex + eq_before, j);
        gt_base += total & 0xffffu;
        eq_base += total >> 16;
    }
    for (uint t = tid; t < W; t += WG)
        put(h, n_keep + t, LP + t);
}

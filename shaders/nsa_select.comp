#version 450
// SSA/NSA block selection (DESIGN.md 4.9, PAPERS.md 4.3, op nsa_select) on Vulkan, pass 2: the
// block list of one query row (t = q_pos0 + i) and KV head g per workgroup, from the pooled
// keys of nsa_select_pool.comp. The G query rows (pre-scaled by scale log2 e) sit in shared
// memory. (1) Each head's lse over its NC = (t + 1) / B complete blocks: an invocation per
// block, heads in register chunks of 8, online max and sum reduced over the workgroup.
// (2) s[c] = sum over the G heads (in order) of exp2(z - lse) for the blocks c < cur = t / B,
// into this row's slot of the scores in binding 5. (3) A radix select over the bits of s
// (non-negative, so ordered as unsigned; four 8-bit digits, a shared histogram each) finds the
// kept = min(top - 1, cur)-th largest value; the blocks above it and the lowest-index ones equal
// to it (a prefix count in block order) are collected, and each one's rank by (score
// descending, block ascending) is counted against the others: the CPU backend's order, exact
// ties lower block first. Output: cur, the ranked blocks, -1 past them.
// Bound: z is computed twice, 2 G nkc d FMAs per row (the pooled keys from L2), then five
// passes over the row's cur scores.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in; // a power of two
layout(constant_id = 1) const uint D = 128u;
layout(constant_id = 2) const uint GS = 4u;  // query heads per KV head
layout(constant_id = 3) const uint KC = 15u; // list capacity: max(top - 1, 1)

#define ELA_PUSH_EXTRA uint nkc, hkv, o_s2, kc_off, s_off, i_start;
#include "attn_io.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint HC = 8u; // heads per register chunk

shared float sq[GS * D];
shared float red_m[WG * HC];
shared float red_l[WG * HC];
shared float s_lse[GS];
shared uint hist[256];
shared uint s_prefix, s_need, s_above, s_eq, s_scan[WG];
shared uint coll_c[KC];
shared float coll_s[KC];

// z of heads hc .. hc + 7 against pooled block c of head g.
void scores(uint hc, uint g, uint c, out float z[HC]) {
    for (uint r = 0u; r < HC; r++)
        z[r] = 0.0;
    const uint kb = pc.kc_off + (g * pc.nkc + c) * D;
    for (uint x = 0u; x < D; x++) {
        const float kv = part[kb + x];
        for (uint r = 0u; r < HC; r++)
            if (hc + r < GS)
                z[r] += sq[(hc + r) * D + x] * kv;
    }
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint g = gl_WorkGroupID.y;
    const uint i = pc.i_start + pc.base + gl_WorkGroupID.x;
    const uint B = pc.split_keys, top = pc.splits;
    const uint t = pc.q_pos0 + i, cur = t / B, nc = (t + 1u) / B;
    const uint kept = min(top - 1u, cur);
    const uint ob = pc.o_off + i * pc.o_s0 + g * pc.o_s1;

    for (uint e = tid; e < GS * D; e += WG) {
        const uint hh = e / D, x = e % D;
        sq[e] = load_q(pc.q_off + i * pc.q_s0 + (g * GS + hh) * pc.q_s1 + x) * pc.scale_log2e;
    }
    barrier();
    if (kept > 0u) { // uniform
        // (1) lse of each head over its complete blocks
        for (uint hc = 0u; hc < GS; hc += HC) {
            float m[HC], l[HC], z[HC];
            for (uint r = 0u; r < HC; r++) {
                m[r] = NEG_BIG;
                l[r] = 0.0;
            }
            for (uint c = tid; c < nc; c += WG) {
                scores(hc, g, c, z);
                for (uint r = 0u; r < HC; r++) {
                    if (z[r] > m[r]) {
                        l[r] = l[r] * exp2(m[r] - z[r]) + 1.0;
                        m[r] = z[r];
                    } else {
                        l[r] += exp2(z[r] - m[r]);
                    }
                }
            }
            for (uint r = 0u; r < HC; r++) {
                red_m[tid * HC + r] = m[r];
                red_l[tid * HC + r] = l[r];
            }
            barrier();
            if (tid < HC && hc + tid < GS) {
                float M = NEG_BIG, L = 0.0;
                for (uint w = 0u; w < WG; w++)
                    if (red_l[w * HC + tid] > 0.0)
                        M = max(M, red_m[w * HC + tid]);
                for (uint w = 0u; w < WG; w++)
                    if (red_l[w * HC + tid] > 0.0)
                        L += red_l[w * HC + tid] * exp2(red_m[w * HC + tid] - M);
                s_lse[hc + tid] = L > 0.0 ? M + log2(L) : 0.0;
            }
            barrier();
        }
        // (2) group-summed probabilities of the candidates
        const uint sb = pc.s_off + ((i - pc.i_start) * pc.hkv + g) * pc.nkc;
        for (uint c = tid; c < cur; c += WG) {
            float s = 0.0, z[HC];
            for (uint hc = 0u; hc < GS; hc += HC) {
                scores(hc, g, c, z);
                for (uint r = 0u; r < HC; r++)
                    if (hc + r < GS)
                        s += exp2(z[r] - s_lse[hc + r]);
            }
            part[sb + c] = s;
        }
        memoryBarrierBuffer();
        barrier();
        // (3) radix select of the kept-th largest score
        uint prefix = 0u, mask = 0u, need = kept;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (uint b = tid; b < 256u; b += WG)
                hist[b] = 0u;
            barrier();
            for (uint c = tid; c < cur; c += WG) {
                const uint o = floatBitsToUint(part[sb + c]);
                if ((o & mask) == prefix)
                    atomicAdd(hist[(o >> uint(shift)) & 255u], 1u);
            }
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
        const uint thr = prefix, n_above = kept - need;
        if (tid == 0u)
            s_above = 0u;
        uint eq_base = 0u;
        for (uint c0 = 0u; c0 < cur; c0 += WG) {
            if (tid == 0u)
                s_eq = 0u;
            barrier();
            const uint c = c0 + tid;
            const float v = c < cur ? part[sb + c] : 0.0;
            const uint o = floatBitsToUint(v);
            const bool gt = c < cur && o > thr, eq = c < cur && o == thr;
            if (gt) {
                const uint slot = atomicAdd(s_above, 1u);
                coll_c[slot] = c;
                coll_s[slot] = v;
            }
            if (eq)
                atomicAdd(s_eq, 1u);
            barrier();
            const uint n_eq = s_eq;
            barrier(); // s_eq read by all before the next chunk resets it
            if (n_eq == 0u || eq_base >= need) // uniform
                continue;
            s_scan[tid] = eq ? 1u : 0u; // inclusive prefix count (Hillis-Steele)
            barrier();
            for (uint off = 1u; off < WG; off <<= 1) {
                const uint add = tid >= off ? s_scan[tid - off] : 0u;
                barrier();
                s_scan[tid] += add;
                barrier();
            }
            const uint before = s_scan[tid] - (eq ? 1u : 0u);
            if (eq && eq_base + before < need) {
                coll_c[n_above + eq_base + before] = c;
                coll_s[n_above + eq_base + before] = v;
            }
            eq_base += n_eq;
        }
        barrier();
        for (uint e = tid; e < kept; e += WG) {
            const float se = coll_s[e];
            const uint ce = coll_c[e];
            uint rank = 0u;
            for (uint f = 0u; f < kept; f++) {
                const float sf = coll_s[f];
                rank += sf > se || (sf == se && coll_c[f] < ce) ? 1u : 0u;
            }
            o_w[ob + (1u + rank) * pc.o_s2] = ce;
        }
    }
    if (tid == 0u)
        o_w[ob] = cur;
    for (uint x = 1u + kept + tid; x < top; x += WG)
        o_w[ob + x * pc.o_s2] = 0xffffffffu;
}

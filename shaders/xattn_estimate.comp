#version 450
// XAttention block estimate (DESIGN.md 4.3, PAPERS.md 5.1, op xattn_estimate) on Vulkan, first
// pass: antidiagonal stride-S reduced scores, their causal softmax per reduced row, and the
// rows' probability mass summed per 128-key block. xattn_estimate_select.comp then selects.
//
// Reduced query row m (relative; absolute a = q_pos0 / S + m) against reduced key c <= a:
//   s(m, c) = scale / S * sum_{i < S} q[m S + S - 1 - i] . k[c S + i]   (rows past L or n zero)
// A workgroup owns RG reduced rows of one listed head inside one 128-query block I (rows of the
// block beyond RG go to further workgroups, rg) and sweeps reduced keys [0, min(a_last, nrk - 1)]
// in tiles of BK twice: first the rows' running max and sum (exp2 domain), then the
// probabilities p = exp2(s - m) / l summed per key block. A tile's scores: for each of the S
// antidiagonal offsets i, the RG query tokens and BK key tokens it pairs are staged in shared
// memory as f32 and each invocation accumulates its OPI (row, key) dots. Block sums go to the
// workgroup's own slice of binding 5 ([head][I][rg][nkb] floats); the invocation J % WG owns
// block J, so its read-modify-writes need no atomics. Bound: 2 (RG BK) S d FMAs per tile from
// shared memory, L n d / S per head over the causal half: 1/S of a dense attention's QK^T.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;  // head dim
layout(constant_id = 2) const uint RG = 8u;   // reduced rows per workgroup
layout(constant_id = 3) const uint BK = 32u;  // reduced keys per tile

#define ELA_PUSH_EXTRA uint heads_off, counts_off, nkb, nqb, n_rg; float threshold;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };
// The stride is a push constant, not a specialization constant: a constant S lets the compiler
// unroll the antidiagonal loop with the barriers inside, which software rasterisers then take
// tens of seconds to compile.
#define S pc.split_keys

const uint DP4 = (D + 3u) / 4u;
const uint WG = gl_WorkGroupSize.x;
const uint OPI = (RG * BK + WG - 1u) / WG; // (row, key) outputs per invocation

shared vec4 qs[RG * DP4];
// K rows padded by one vec4: the invocations of a warp read BK different rows at the same
// column, which without the pad would all fall into one bank.
const uint KP4 = DP4 + 1u;
shared vec4 ks[BK * KP4];
shared float st[RG * BK];
shared float row_m[RG], row_l[RG];
shared float col[BK];

// Scores of reduced rows [m0, m0 + R) against reduced keys [c0, c0 + BK) into st, scaled to the
// exp2 domain. Uniform control flow (barriers inside).
void scores(uint h, uint g, uint m0, uint R, uint c0) {
    const uint tid = gl_LocalInvocationIndex;
    float acc[OPI];
    for (uint x = 0u; x < OPI; x++)
        acc[x] = 0.0;
    for (uint i = 0u; i < S; i++) {
        barrier();
        [[dont_unroll]] for (uint e = tid; e < (RG + BK) * DP4; e += WG) {
            const bool is_q = e < RG * DP4;
            const uint rr = is_q ? e / DP4 : (e - RG * DP4) / DP4, c4 = e % DP4;
            vec4 x = vec4(0.0);
            if (is_q) {
                const uint tq = (m0 + rr) * S + S - 1u - i;
                if (rr < R && tq < pc.rows) {
                    const uint qe = pc.q_off + tq * pc.q_s0 + h * pc.q_s1 + 4u * c4;
                    for (uint k = 0u; k < 4u; k++)
                        if (4u * c4 + k < D)
                            x[k] = load_q(qe + k);
                }
                qs[e] = x;
            } else {
                const uint tk = (c0 + rr) * S + i;
                if (tk < pc.n) {
                    const uint ke = pc.k_off + g * pc.k_s0 + tk * pc.k_s1 + 4u * c4;
                    if (pc.kv_vec4 != 0u && 4u * c4 + 3u < D) {
                        x = load_k4(ke);
                    } else {
                        for (uint k = 0u; k < 4u; k++)
                            if (4u * c4 + k < D)
                                x[k] = load_k(ke + k);
                    }
                }
                ks[rr * KP4 + c4] = x;
            }
        }
        barrier();
        for (uint x = 0u; x < OPI; x++) {
            const uint o = tid + x * WG;
            if (o < RG * BK) {
                const uint r = o / BK, j = o % BK;
                float p = 0.0;
                uint c4 = 0u;
                [[dont_unroll]] for (; c4 + 4u <= DP4; c4 += 4u) // 4 at a time
                    p += dot(qs[r * DP4 + c4], ks[j * KP4 + c4]) +
                         dot(qs[r * DP4 + c4 + 1u], ks[j * KP4 + c4 + 1u]) +
                         dot(qs[r * DP4 + c4 + 2u], ks[j * KP4 + c4 + 2u]) +
                         dot(qs[r * DP4 + c4 + 3u], ks[j * KP4 + c4 + 3u]);
                [[dont_unroll]] for (; c4 < DP4; c4++)
                    p += dot(qs[r * DP4 + c4], ks[j * KP4 + c4]);
                acc[x] += p;
            }
        }
    }
    for (uint x = 0u; x < OPI; x++) {
        const uint o = tid + x * WG;
        if (o < RG * BK)
            st[o] = acc[x] * pc.scale_log2e;
    }
    barrier();
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint hi = gl_WorkGroupID.y;
    const uint wx = pc.base + gl_WorkGroupID.x;
    const uint I = pc.nqb - 1u - wx / pc.n_rg, rg = wx % pc.n_rg; // costly blocks first
    const uint h = part_u[pc.heads_off + hi], g = h / pc.G;
    const uint RPB = 128u / S; // reduced rows (and keys) per 128-token block
    const uint nrq = (pc.rows + S - 1u) / S, nrk = (pc.n + S - 1u) / S, r0 = pc.q_pos0 / S;
    const uint m0 = I * RPB + rg * RG;
    const uint m1 = min(min(m0 + RG, (I + 1u) * RPB), nrq);
    const uint R = m1 > m0 ? m1 - m0 : 0u;
    const uint M = pc.q_pos0 / 128u + I;
    const uint last = min(M, pc.nkb - 1u);
    const uint out0 = pc.part_off + ((hi * pc.nqb + I) * pc.n_rg + rg) * pc.nkb;
    for (uint J = tid; J <= last; J += WG)
        part[out0 + J] = 0.0;
    if (R == 0u) // uniform
        return;
    const uint cend = min(r0 + m1 - 1u, nrk - 1u) + 1u; // reduced keys the last row sees

    if (tid < RG) {
        row_m[tid] = NEG_BIG;
        row_l[tid] = 0.0;
    }
    // Sweep 0: each row's max and sum over its causal reduced keys. Sweep 1: the probabilities,
    // summed over the rows per key, then per block. (One loop, so `scores` is inlined once.)
    for (uint sweep = 0u; sweep < 2u; sweep++)
        for (uint c0 = 0u; c0 < cend; c0 += BK) {
            scores(h, g, m0, R, c0);
            if (sweep == 0u) {
                if (tid < R) {
                    const uint cmax = min(r0 + m0 + tid, nrk - 1u); // this row's last key
                    const uint nv = cmax >= c0 ? min(BK, cmax - c0 + 1u) : 0u;
                    const float m = row_m[tid];
                    float mt = m;
                    for (uint j = 0u; j < nv; j++)
                        mt = max(mt, st[tid * BK + j]);
                    float l = row_l[tid] * exp2(m - mt);
                    for (uint j = 0u; j < nv; j++)
                        l += exp2(st[tid * BK + j] - mt);
                    row_m[tid] = mt;
                    row_l[tid] = l;
                }
                continue;
            }
            if (tid < BK) {
                float sum = 0.0;
                const uint c = c0 + tid;
                for (uint r = 0u; r < R; r++)
                    if (c <= min(r0 + m0 + r, nrk - 1u))
                        sum += exp2(st[r * BK + tid] - row_m[r]) / row_l[r];
                col[tid] = sum;
            }
            barrier();
            const uint nk = min(BK, cend - c0);
            for (uint J = c0 / RPB; J * RPB < c0 + nk; J++) {
                if (J % WG != tid)
                    continue;
                const uint j0 = max(J * RPB, c0) - c0, j1 = min((J + 1u) * RPB, c0 + nk) - c0;
                float sum = 0.0;
                for (uint j = j0; j < j1; j++)
                    sum += col[j];
                part[out0 + J] += sum;
            }
        }
}

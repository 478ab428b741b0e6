#version 450
// XAttention block estimate (DESIGN.md 4.3, PAPERS.md 5.1, op xattn_estimate) on tensor cores
// through NV cooperative matrices: xattn_estimate.comp's first pass (the same reduced scores,
// causal softmax per reduced row and probability mass per 128-key block, into the same layout
// with one row group) for f16 q and k, d a multiple of 16, strides S that divide 32.
//
// Reduced query row m (relative; absolute a = q_pos0 / S + m) against reduced key c <= a:
//   s(m, c) = scale / S * sum_{i < S} q[m S + S - 1 - i] . k[c S + i]   (rows past L or n zero)
// A workgroup (four 32-lane subgroups) owns 64 reduced rows of one listed head: the whole
// query blocks [I0, I0 + 64 / RPB) (RPB = 128 / S reduced rows per block). It sweeps the
// reduced keys its last row sees in tiles of 64 twice, first for each row's max and sum (exp2
// domain), then for the probabilities exp2(s - m) / l, summed per (query block, key block):
// a key block (RPB <= 32 reduced keys) lies inside one tile, so each sum is written once. A
// tile's scores accumulate over the S antidiagonal offsets i: the 64 query tokens and 64 key
// tokens offset i pairs are staged in shared memory as f16 (each invocation loads the next
// offset's share into registers while the current one multiplies) and each subgroup multiplies
// its 16 rows by the 64 keys (D / 16 x 4 matrix products per offset).
// Shared memory: 128 (D / 2 + 4) words of staged rows, which the 64 x 68 float scores reuse.
// Bound: the tensor cores' 64 x 64 x D S FMAs per tile and sweep, L n d / S per head over the
// causal half (1/S of a dense attention's QK^T, twice).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

layout(local_size_x_id = 0) in;              // 128: four 32-lane subgroups
layout(constant_id = 1) const uint D = 128u; // head dim, a multiple of 16

#define ELA_PUSH_EXTRA uint heads_off, counts_off, nkb, nqb, n_rg; float threshold;
#include "attn_io.glsl"
// pc.v_off (no v here): 1 when every q row starts at a multiple of 4 elements (vector loads)
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };
#define S pc.split_keys

#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

const uint RS = 16u;        // reduced rows per subgroup
const uint BR = 64u;        // reduced rows per workgroup
const uint BK = 64u;        // reduced keys per tile
const uint D16 = D / 16u;
const uint KS = D / 2u + 4u; // words per staged row (padded by 16 bytes)
const uint SS = BK + 4u;     // floats per score row
const uint WGS = 128u;       // invocations
const uint NP = (BR + BK) * (D / 4u) / WGS; // pieces of 4 halves per invocation per offset

// The rows of one offset (Q rows, then K rows, f16 pairs); after the offsets, the scores as
// float bits (BR x SS words).
const uint ROOM = (BR + BK) * KS > BR * SS ? (BR + BK) * KS : BR * SS;
shared uint rows_s[ROOM];

layout(std430, binding = 0) readonly buffer QW2 { uvec2 q_w2[]; };
uint pair_q(uint e) { return packFloat2x16(f16vec2(q_h[e], q_h[e + 1u])); }
uint pair_k(uint e) { return packFloat2x16(f16vec2(k_h[e], k_h[e + 1u])); }

// This invocation's pieces of the rows of offset i, loaded ahead of their use.
uvec2 pre[NP];
void fetch(uint h, uint g, uint m0, uint c0, uint i) {
    for (uint f = 0u; f < NP; f++) {
        const uint e = gl_LocalInvocationIndex + f * WGS;
        const uint rr = e / (D / 4u), col = 4u * (e % (D / 4u));
        uvec2 x = uvec2(0u);
        if (rr < BR) {
            const uint tq = (m0 + rr) * S + S - 1u - i;
            if (tq < pc.rows) {
                const uint qe = pc.q_off + tq * pc.q_s0 + h * pc.q_s1 + col;
                x = pc.v_off != 0u ? q_w2[qe >> 2] : uvec2(pair_q(qe), pair_q(qe + 2u));
            }
        } else {
            const uint tk = (c0 + rr - BR) * S + i;
            if (tk < pc.n) {
                const uint ke = pc.k_off + g * pc.k_s0 + tk * pc.k_s1 + col;
                x = pc.kv_vec4 != 0u ? k_w2[ke >> 2] : uvec2(pair_k(ke), pair_k(ke + 2u));
            }
        }
        pre[f] = x;
    }
}

// Scores of the workgroup's rows [m0, m0 + 64) against reduced keys [c0, c0 + 64), scaled to
// the exp2 domain, as float bits into rows_s (row r at r SS). Uniform control flow.
void scores(uint h, uint g, uint m0, uint c0) {
    const uint tid = gl_LocalInvocationIndex, sg = gl_SubgroupID;
    MAT_C acc[BK / 16u];
    for (uint kk = 0u; kk < BK / 16u; kk++)
        acc[kk] = MAT_C(0.0);
    fetch(h, g, m0, c0, 0u);
    for (uint i = 0u; i < S; i++) {
        barrier(); // the previous offset's rows (or the previous tile's scores) are consumed
        for (uint f = 0u; f < NP; f++) {
            const uint e = tid + f * WGS, at = (e / (D / 4u)) * KS + 2u * (e % (D / 4u));
            rows_s[at] = pre[f].x;
            rows_s[at + 1u] = pre[f].y;
        }
        barrier();
        if (i + 1u < S) // the next offset's rows load while this one multiplies
            fetch(h, g, m0, c0, i + 1u);
        for (uint c = 0u; c < D16; c++) {
            MAT_A qa;
            coopMatLoadNV(qa, rows_s, sg * RS * KS + c * 8u, KS, false);
            for (uint kk = 0u; kk < BK / 16u; kk++) {
                MAT_A kb;
                coopMatLoadNV(kb, rows_s, (BR + kk * 16u) * KS + c * 8u, KS, true);
                acc[kk] = coopMatMulAddNV(qa, kb, acc[kk]);
            }
        }
    }
    barrier(); // every subgroup is done with the rows: the scores take their room
    for (uint kk = 0u; kk < BK / 16u; kk++) {
        for (int e = 0; e < acc[kk].length(); e++)
            acc[kk][e] *= pc.scale_log2e;
        coopMatStoreNV(acc[kk], rows_s, sg * RS * SS + kk * 16u, SS, false);
    }
    barrier();
}

float score(uint r, uint j) { return uintBitsToFloat(rows_s[r * SS + j]); }

void main() {
    const uint tid = gl_LocalInvocationIndex, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint hi = gl_WorkGroupID.y;
    const uint h = part_u[pc.heads_off + hi], g = h / pc.G;
    const uint RPB = 128u / S; // reduced rows (and keys) per 128-token block
    const uint nrq = (pc.rows + S - 1u) / S, nrk = (pc.n + S - 1u) / S, r0 = pc.q_pos0 / S;
    const uint n_wg = (nrq + BR - 1u) / BR;
    const uint wx = n_wg - 1u - (pc.base + gl_WorkGroupID.x); // costly rows first
    const uint m0 = wx * BR, m1 = min(m0 + BR, nrq);
    const uint I0 = m0 / RPB, n_ib = (m1 - m0 + RPB - 1u) / RPB;
    const uint cend = min(r0 + m1 - 1u, nrk - 1u) + 1u; // reduced keys the last row sees
    // This lane's row in the softmax: two lanes per row, 32 keys each.
    const uint rl = sg * RS + (lane >> 1u), half_id = lane & 1u;
    const uint m = m0 + rl;
    const uint cmax = m < m1 ? min(r0 + m, nrk - 1u) : 0u; // the row's last key
    const bool row_ok = m < m1;
    float row_m = NEG_BIG, row_l = 0.0;
    // Causal key blocks past the tiles (rows cut short by L or keys by n) hold no mass.
    const uint jc = (cend + RPB - 1u) / RPB;
    for (uint x = tid; x < n_ib * pc.nkb; x += gl_WorkGroupSize.x) {
        const uint I = I0 + x / pc.nkb, J = x % pc.nkb;
        if (J >= jc && J <= pc.q_pos0 / 128u + I)
            part[pc.part_off + (hi * pc.nqb + I) * pc.nkb + J] = 0.0;
    }

    for (uint sweep = 0u; sweep < 2u; sweep++)
        for (uint c0 = 0u; c0 < cend; c0 += BK) {
            scores(h, g, m0, c0);
            // This lane's half of its row's keys in the tile, visible or not.
            const uint j0 = half_id * (BK / 2u);
            if (sweep == 0u) {
                float mt = row_m;
                for (uint j = 0u; j < BK / 2u; j++)
                    if (row_ok && c0 + j0 + j <= cmax)
                        mt = max(mt, score(rl, j0 + j));
                mt = max(mt, subgroupShuffleXor(mt, 1u));
                float l = 0.0;
                for (uint j = 0u; j < BK / 2u; j++)
                    if (row_ok && c0 + j0 + j <= cmax)
                        l += exp2(score(rl, j0 + j) - mt);
                l += subgroupShuffleXor(l, 1u);
                row_l = row_l * exp2(row_m - mt) + l;
                row_m = mt;
                continue;
            }
            const float inv = row_l > 0.0 ? 1.0 / row_l : 0.0;
            for (uint j = 0u; j < BK / 2u; j++) {
                const bool vis = row_ok && c0 + j0 + j <= cmax;
                rows_s[rl * SS + j0 + j] =
                    floatBitsToUint(vis ? exp2(score(rl, j0 + j) - row_m) * inv : 0.0);
            }
            barrier();
            // Mass per (query block I0 + ib, key block J) of the tile: each once.
            const uint nk = min(BK, cend - c0), J0 = c0 / RPB, n_jb = (nk + RPB - 1u) / RPB;
            for (uint x = tid; x < n_ib * n_jb; x += gl_WorkGroupSize.x) {
                const uint ib = x / n_jb, J = J0 + x % n_jb;
                const uint I = I0 + ib;
                if (J >= pc.nkb || J > pc.q_pos0 / 128u + I)
                    continue;
                float sum = 0.0;
                for (uint r = ib * RPB; r < min((ib + 1u) * RPB, m1 - m0); r++)
                    for (uint c = J * RPB; c < min((J + 1u) * RPB, c0 + nk); c++)
                        sum += score(r, c - c0);
                part[pc.part_off + (hi * pc.nqb + I) * pc.nkb + J] = sum;
            }
        }
}

#version 450
// Dense attention (DESIGN.md 4.1, op attn_dense) on tensor cores through NV cooperative matrices
// (VK_NV_cooperative_matrix, 16x16x16, f16 operands, f32 accumulation): flash attention for f16
// q, k and v, head dims a multiple of 16 up to 256. The same rows, key ranges, exp2-domain
// online softmax and split partials as attn_dense.comp (whose merge pass combines the splits),
// so the two paths are interchangeable; the host picks this one where the device has the
// extension (vk_attn_dense.c).
//
// Tiling. A workgroup is four 32-lane subgroups over 64 rows of one KV head (row r = i * G + hh,
// as in attn_dense.comp: the G heads sharing K/V read each tile once); subgroup s owns rows
// 16 s .. 16 s + 15. Q is staged through shared memory once and kept as D / 16 A matrices; O
// is D / 16 accumulator matrices. Per tile of BC keys the workgroup stages K and V in shared
// memory (f16 pairs as 32-bit words); each subgroup forms its 16 x BC scores S = Q K^T (K read
// column-major, i.e. as K^T) and stores them to its shared slice; two lanes per row take the
// row's max over its visible keys, write P = exp2(S * scale log2 e - m) as f16 and the row's
// rescale factor; O is rescaled element-wise and O += P V accumulates in the matrices. Which
// row an accumulator element belongs to is the implementation's layout: a matrix loaded from a
// table of row numbers, of the same type as O, says it for every element.
// Shared memory: 2 BC (D / 2 + 4) words (K, V; the Q staging reuses them, so BC >= 32) plus
// per subgroup 16 (BC + 4) floats (S; at the end the output chunks), 16 (BC + 8) halves (P)
// and 16 floats (factors). Every row is padded by 16 bytes, so that the 16 rows a matrix load
// or store touches, and the rows the softmax lanes read, fall in different banks.
// Bound: per workgroup K and V are read once per 64 rows; the tensor cores do 4 d FMAs per
// (row, key); S and P make one round trip through shared memory per tile. Each invocation
// loads its share of the next K/V tile into registers before the current tile's matrix work.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

layout(local_size_x_id = 0) in;                // 128: four 32-lane subgroups
layout(constant_id = 1) const uint D = 128u;   // head dim, a multiple of 16, <= 256
layout(constant_id = 2) const uint T = 8u;     // the merge pass's lanes: fixes the partial pitch
layout(constant_id = 3) const uint BC = 32u;   // keys per tile: 32 or 64
layout(constant_id = 7) const uint SPLIT = 0u; // 1: write partials instead of o and lse

#include "attn_io.glsl"

#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

const uint SUBGROUPS = 4u;
const uint RS = 16u;               // rows per subgroup
const uint BR = SUBGROUPS * RS;    // rows per workgroup
const uint D16 = D / 16u;
const uint BC16 = BC / 16u;
const uint HALF_BC = BC / 2u;      // keys per lane in the softmax (two lanes per row)
const uint DP = (D + 4u * T - 1u) / (4u * T) * 4u * T; // attn_dense.comp's partial row pitch
const uint KS = D / 2u + 4u; // words per staged K, V or Q row
const uint SS = BC + 4u;     // floats per score row
const uint PS = BC + 8u;     // halves per probability row
const uint OS = 20u;         // floats per row of an output chunk

shared uint kvs[2u * BC * KS];         // K tile, then V tile (f16 pairs); Q before the tiles
shared float ss[SUBGROUPS * RS * SS];  // per subgroup: scores; at the end, output chunks
shared float16_t ps[SUBGROUPS * RS * PS]; // per subgroup: probabilities
shared float fs[SUBGROUPS * RS];       // per row: the rescale factor, then 1 / l

// Two f16 from a 16-bit binding at element e (no alignment needed), as one word.
uint pair_k(uint e) { return packFloat2x16(f16vec2(k_h[e], k_h[e + 1u])); }
uint pair_v(uint e) { return packFloat2x16(f16vec2(v_h[e], v_h[e + 1u])); }

// This invocation's share of the K and V tile of keys [kt, kt + nk): PF pieces of 4 halves
// each (zero past nk), into registers, so that they load while the previous tile computes.
const uint PF = BC * D / 4u / gl_WorkGroupSize.x;
void fetch_tile(uint kt, uint nk, uint kbase, uint vbase, out uvec2 kr[PF], out uvec2 vr[PF]) {
    for (uint f = 0u; f < PF; f++) {
        const uint e = gl_LocalInvocationIndex + f * gl_WorkGroupSize.x;
        const uint j = e / (D / 4u), col = 4u * (e % (D / 4u));
        kr[f] = uvec2(0u);
        vr[f] = uvec2(0u);
        if (j < nk) {
            const uint ke = kbase + (kt + j) * pc.k_s1 + col;
            const uint ve = vbase + (kt + j) * pc.v_s1 + col;
            if (pc.kv_vec4 != 0u) {
                kr[f] = k_w2[ke >> 2];
                vr[f] = v_w2[ve >> 2];
            } else {
                kr[f] = uvec2(pair_k(ke), pair_k(ke + 2u));
                vr[f] = uvec2(pair_v(ve), pair_v(ve + 2u));
            }
        }
    }
}

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint tid = gl_LocalInvocationIndex;
    const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint g = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
    const uint row0 = (pc.base + gl_WorkGroupID.x) * BR;
    // The row this lane works on in the softmax and the output: two lanes per row.
    const uint r = lane >> 1u, half_id = lane & 1u;
    const uint row = row0 + sg * RS + r;
    const bool valid = row < pc.rows;
    const uint i = valid ? row / pc.G : 0u;
    const uint h = g * pc.G + (valid ? row % pc.G : 0u);
    const uint vis = valid ? min(pc.q_pos0 + i + 1u, pc.n) : 0u;
    const uint i_last = (min(row0 + BR, pc.rows) - 1u) / pc.G;
    const uint wg_vis = min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint k_begin = split * pc.split_keys;
    const uint k_end = min(k_begin + pc.split_keys, wg_vis);
    const uint row_end = min(vis, k_end); // this row uses keys [k_begin, row_end)
    const uint DW = D / 2u; // words of a row's data
    const uint sbase = sg * RS * SS, srow = sbase + r * SS, j0 = half_id * HALF_BC;
    const uint pbase = sg * RS * PS, prow = pbase + r * PS;

    // The workgroup's Q rows (zero past the last row), then this subgroup's 16 as matrices;
    // and a table of row numbers, loaded as an accumulator: the row of each of its elements.
    for (uint e = tid; e < BR * DW; e += WG) {
        const uint qrow = row0 + e / DW, col = 2u * (e % DW), at = (e / DW) * KS + e % DW;
        uint w = 0u;
        if (qrow < pc.rows) {
            const uint qe = pc.q_off + (qrow / pc.G) * pc.q_s0 + (g * pc.G + qrow % pc.G) * pc.q_s1;
            w = packFloat2x16(f16vec2(q_h[qe + col], q_h[qe + col + 1u]));
        }
        kvs[at] = w;
    }
    for (uint e = lane; e < RS * 16u; e += 32u)
        ss[sbase + e] = float(e / 16u);
    barrier();
    MAT_A qa[D16];
    for (uint c = 0u; c < D16; c++)
        coopMatLoadNV(qa[c], kvs, sg * RS * KS + c * 8u, KS, false);
    MAT_C rows_of;
    coopMatLoadNV(rows_of, ss, sbase, 16u, false);
    MAT_C oa[D16];
    for (uint c = 0u; c < D16; c++)
        oa[c] = MAT_C(0.0);
    float m = NEG_BIG, l = 0.0;
    const uint kbase = pc.k_off + g * pc.k_s0, vbase = pc.v_off + g * pc.v_s0;

    uvec2 kr[PF], vr[PF];
    if (k_begin < k_end)
        fetch_tile(k_begin, min(BC, k_end - k_begin), kbase, vbase, kr, vr);
    for (uint kt = k_begin; kt < k_end; kt += BC) {
        const uint nk = min(BC, k_end - kt);
        barrier(); // Q and the row table, or the previous tile, are consumed
        for (uint f = 0u; f < PF; f++) {
            const uint e = tid + f * WG, at = (e / (D / 4u)) * KS + 2u * (e % (D / 4u));
            kvs[at] = kr[f].x;
            kvs[at + 1u] = kr[f].y;
            kvs[BC * KS + at] = vr[f].x;
            kvs[BC * KS + at + 1u] = vr[f].y;
        }
        barrier();
        if (kt + BC < k_end) // the next tile's loads are in flight while this one computes
            fetch_tile(kt + BC, min(BC, k_end - kt - BC), kbase, vbase, kr, vr);

        // S = Q K^T, 16 keys at a time.
        for (uint kk = 0u; kk < BC16; kk++) {
            MAT_C acc = MAT_C(0.0);
            for (uint c = 0u; c < D16; c++) {
                MAT_A kb;
                coopMatLoadNV(kb, kvs, kk * 16u * KS + c * 8u, KS, true);
                acc = coopMatMulAddNV(qa[c], kb, acc);
            }
            coopMatStoreNV(acc, ss, sbase + kk * 16u, SS, false);
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // Online softmax of the row's visible keys [kt, kt + jn): this lane's half of them.
        const uint jn = kt < row_end ? min(nk, row_end - kt) : 0u;
        float mt = m;
        for (uint j = 0u; j < HALF_BC; j++)
            if (j0 + j < jn)
                mt = max(mt, ss[srow + j0 + j] * pc.scale_log2e);
        mt = max(mt, subgroupShuffleXor(mt, 1u));
        const float alpha = exp2(m - mt);
        float sum = 0.0;
        for (uint j = 0u; j < HALF_BC; j++) {
            float16_t p = float16_t(0.0);
            if (j0 + j < jn)
                p = float16_t(exp2(ss[srow + j0 + j] * pc.scale_log2e - mt));
            ps[prow + j0 + j] = p;
            sum += float(p); // l sums the rounded weights P V uses
        }
        sum += subgroupShuffleXor(sum, 1u);
        l = l * alpha + sum;
        m = mt;
        if (half_id == 0u)
            fs[sg * RS + r] = alpha;
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // O = alpha O + P V.
        MAT_A pa[BC16];
        for (uint kk = 0u; kk < BC16; kk++)
            coopMatLoadNV(pa[kk], ps, pbase + kk * 16u, PS, false);
        MAT_C factor; // each element's row's alpha
        for (int e = 0; e < factor.length(); e++)
            factor[e] = fs[sg * RS + uint(rows_of[e])];
        for (uint c = 0u; c < D16; c++) {
            for (int e = 0; e < oa[c].length(); e++)
                oa[c][e] *= factor[e];
            for (uint kk = 0u; kk < BC16; kk++) {
                MAT_A vb;
                coopMatLoadNV(vb, kvs, BC * KS + kk * 16u * KS + c * 8u, KS, false);
                oa[c] = coopMatMulAddNV(pa[kk], vb, oa[c]);
            }
        }
    }

    // Normalise (split partials stay unnormalised) and write out one 16-column chunk at a time
    // through the subgroup's slice: two lanes per row, 8 columns each.
    subgroupBarrier();
    if (half_id == 0u)
        fs[sg * RS + r] = SPLIT != 0u ? 1.0 : (l > 0.0 ? 1.0 / l : 0.0);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    MAT_C factor;
    for (int e = 0; e < factor.length(); e++)
        factor[e] = fs[sg * RS + uint(rows_of[e])];
    const uint pe = pc.part_off + ((g * pc.rows + row) * pc.splits + split) * (DP + 2u);
    const uint oe = pc.o_off + i * pc.o_s0 + h * pc.o_s1;
    for (uint c = 0u; c < D16; c++) {
        for (int e = 0; e < oa[c].length(); e++)
            oa[c][e] *= factor[e];
        coopMatStoreNV(oa[c], ss, sbase, OS, false);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        if (valid)
            for (uint t = 0u; t < 8u; t++) {
                const uint col = 16u * c + 8u * half_id + t;
                const float x = ss[sbase + r * OS + 8u * half_id + t];
                if (SPLIT != 0u)
                    part[pe + col] = x;
                else
                    store_o(oe + col, x);
            }
        subgroupMemoryBarrierShared();
        subgroupBarrier(); // read before the next chunk overwrites it
    }
    if (!valid || half_id != 0u)
        return;
    if (SPLIT != 0u) {
        part[pe + DP] = m;
        part[pe + DP + 1u] = l;
    } else if (pc.has_lse != 0u) {
        lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] = l > 0.0 ? (m + log2(l)) * LN2
                                                                     : uintBitsToFloat(0xff800000u);
    }
}

// The flash-attention tile loop on tensor cores (NV cooperative matrices, 16x16x16, f16 operands,
// f32 accumulation), shared by attn_dense_cm.comp (a key range) and attn_blocks_cm.comp (the
// key blocks a head's mode allows).
//
// A workgroup is four or eight 32-lane subgroups over BR = 64 or 128 query rows of one KV head;
// subgroup s owns rows 16 s .. 16 s + 15. Q is staged through shared memory once (2 BC rows at a
// time, in the K/V room) and kept as D / 16 A matrices;
// O is D / 16 accumulator matrices. Per tile of BC keys the workgroup stages K and V in shared
// memory (f16 pairs as 32-bit words); each subgroup forms its 16 x BC scores S = Q K^T (K read
// column-major, i.e. as K^T) and stores them to its shared slice; two lanes per row take the
// row's max over its visible keys, write P = exp2(S * scale log2 e - m) as f16 and the row's
// rescale factor; O is rescaled element-wise and O += P V accumulates in the matrices. Which
// row an accumulator element belongs to is the implementation's layout: a matrix loaded from a
// table of row numbers, of the same type as O, says it for every element.
// Shared memory: 2 BC (D / 2 + 4) words (K, V; the Q staging reuses them) plus
// per subgroup 16 (BC + 4) floats (S; at the end the output chunks), 16 (BC + 8) halves (P)
// and 16 floats (factors). Every row is padded by 16 bytes, so that the 16 rows a matrix load
// or store touches, and the rows the softmax lanes read, fall in different banks.
// Each invocation loads its share of the next K/V tile into registers before the current
// tile's matrix work.
//
// The including shader enables the extensions (16-bit storage and arithmetic, NV cooperative
// matrices, memory scope semantics, subgroup basic and shuffle) and defines, before the
// include: attn_io.glsl, D, T, BC (specialization constants 1-3), a workgroup of 128 or 256
// invocations, and `uint cm_q_elem(uint r)`: the element of q row r of the workgroup (0 ..
// BR - 1) in binding 0, or CM_NO_ROW past the last row. Then it calls cm_begin(), cm_tile() per
// tile, cm_finish() and cm_out_chunk() per 16 output columns.

#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

const uint SUBGROUPS = gl_WorkGroupSize.x / 32u; // 4 or 8
const uint RS = 16u;               // rows per subgroup
const uint BR = SUBGROUPS * RS;    // rows per workgroup: 64 or 128
const uint QCH = 2u * BC < BR ? 2u * BC : BR; // Q rows staged at a time in the K/V room
const uint D16 = D / 16u;
const uint BC16 = BC / 16u;
const uint HALF_BC = BC / 2u;      // keys per lane in the softmax (two lanes per row)
const uint DP = (D + 4u * T - 1u) / (4u * T) * 4u * T; // attn_dense.comp's partial row pitch
const uint KS = D / 2u + 4u; // words per staged K, V or Q row
const uint SS = BC + 4u;     // floats per score row
const uint PS = BC + 8u;     // halves per probability row
const uint OS = 20u;         // floats per row of an output chunk
const uint CM_NO_ROW = 0xffffffffu;

shared uint kvs[2u * BC * KS];         // K tile, then V tile (f16 pairs); Q before the tiles
shared float ss[SUBGROUPS * RS * SS];  // per subgroup: scores; at the end, output chunks
shared float16_t ps[SUBGROUPS * RS * PS]; // per subgroup: probabilities
shared float fs[SUBGROUPS * RS];       // per row: the rescale factor, then 1 / l

// Two f16 from a 16-bit binding at element e (no alignment needed), as one word.
uint pair_k(uint e) { return packFloat2x16(f16vec2(k_h[e], k_h[e + 1u])); }
uint pair_v(uint e) { return packFloat2x16(f16vec2(v_h[e], v_h[e + 1u])); }

const uint PIECES = BC * D / 4u; // pieces of 4 halves per tile of K (and of V)
const uint PF = (PIECES + SUBGROUPS * 32u - 1u) / (SUBGROUPS * 32u); // per invocation

// The workgroup's state: this lane's row in the softmax and output (two lanes per row), the
// Q and O matrices, the row table, the row's running max and sum, the next tile's registers.
uint cm_sg, cm_r, cm_half, cm_sbase, cm_srow, cm_pbase, cm_prow, cm_kbase, cm_vbase;
MAT_A cm_qa[D16];
MAT_C cm_oa[D16];
MAT_C cm_rows_of;
float cm_m, cm_l;
uvec2 cm_kr[PF], cm_vr[PF];

// Starts loading the K and V of keys [kt, kt + nk) (zero past nk) into this invocation's
// registers; cm_tile stores them.
void cm_fetch(uint kt, uint nk) {
    for (uint f = 0u; f < PF; f++) {
        const uint e = gl_LocalInvocationIndex + f * gl_WorkGroupSize.x;
        const uint j = e / (D / 4u), col = 4u * (e % (D / 4u));
        cm_kr[f] = uvec2(0u);
        cm_vr[f] = uvec2(0u);
        if (e < PIECES && j < nk) {
            const uint ke = cm_kbase + (kt + j) * pc.k_s1 + col;
            const uint ve = cm_vbase + (kt + j) * pc.v_s1 + col;
            if (pc.kv_vec4 != 0u) {
                cm_kr[f] = k_w2[ke >> 2];
                cm_vr[f] = v_w2[ve >> 2];
            } else {
                cm_kr[f] = uvec2(pair_k(ke), pair_k(ke + 2u));
                cm_vr[f] = uvec2(pair_v(ve), pair_v(ve + 2u));
            }
        }
    }
}

// Q of the workgroup's rows as matrices, O zero, keys of KV head g.
void cm_begin(uint g) {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationIndex;
    const uint lane = gl_SubgroupInvocationID;
    cm_sg = gl_SubgroupID;
    cm_r = lane >> 1u;
    cm_half = lane & 1u;
    cm_sbase = cm_sg * RS * SS;
    cm_srow = cm_sbase + cm_r * SS;
    cm_pbase = cm_sg * RS * PS;
    cm_prow = cm_pbase + cm_r * PS;
    cm_kbase = pc.k_off + g * pc.k_s0;
    cm_vbase = pc.v_off + g * pc.v_s0;
    const uint DW = D / 2u; // words of a row's data
    // Q through the K/V room, QCH rows at a time.
    for (uint r0 = 0u; r0 < BR; r0 += QCH) {
        barrier(); // the previous chunk's rows are loaded
        for (uint e = tid; e < QCH * DW; e += WG) {
            const uint qe = cm_q_elem(r0 + e / DW), col = 2u * (e % DW);
            kvs[(e / DW) * KS + e % DW] =
                qe == CM_NO_ROW ? 0u : packFloat2x16(f16vec2(q_h[qe + col], q_h[qe + col + 1u]));
        }
        barrier();
        const uint mine = cm_sg * RS; // this subgroup's first row
        if (mine >= r0 && mine < r0 + QCH)
            for (uint c = 0u; c < D16; c++)
                coopMatLoadNV(cm_qa[c], kvs, (mine - r0) * KS + c * 8u, KS, false);
    }
    for (uint e = lane; e < RS * 16u; e += 32u)
        ss[cm_sbase + e] = float(e / 16u);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    coopMatLoadNV(cm_rows_of, ss, cm_sbase, 16u, false);
    for (uint c = 0u; c < D16; c++)
        cm_oa[c] = MAT_C(0.0);
    cm_m = NEG_BIG;
    cm_l = 0.0;
}

// One tile of keys [kt, kt + nk), already fetched; this lane's row sees its first jn. Fetches
// keys [next, next + next_nk) for the following tile (next_nk 0: none). Uniform control flow.
void cm_tile(uint nk, uint jn, uint next, uint next_nk) {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationIndex;
    barrier(); // Q and the row table, or the previous tile, are consumed
    for (uint f = 0u; f < PF; f++) {
        const uint e = tid + f * WG, at = (e / (D / 4u)) * KS + 2u * (e % (D / 4u));
        if (e >= PIECES)
            break;
        kvs[at] = cm_kr[f].x;
        kvs[at + 1u] = cm_kr[f].y;
        kvs[BC * KS + at] = cm_vr[f].x;
        kvs[BC * KS + at + 1u] = cm_vr[f].y;
    }
    barrier();
    if (next_nk > 0u) // the next tile's loads are in flight while this one computes
        cm_fetch(next, next_nk);

    // S = Q K^T, 16 keys at a time.
    for (uint kk = 0u; kk < BC16; kk++) {
        MAT_C acc = MAT_C(0.0);
        for (uint c = 0u; c < D16; c++) {
            MAT_A kb;
            coopMatLoadNV(kb, kvs, kk * 16u * KS + c * 8u, KS, true);
            acc = coopMatMulAddNV(cm_qa[c], kb, acc);
        }
        coopMatStoreNV(acc, ss, cm_sbase + kk * 16u, SS, false);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();

    // Online softmax of the row's visible keys [0, jn) of the tile: this lane's half of them.
    const uint j0 = cm_half * HALF_BC;
    float mt = cm_m;
    for (uint j = 0u; j < HALF_BC; j++)
        if (j0 + j < jn)
            mt = max(mt, ss[cm_srow + j0 + j] * pc.scale_log2e);
    mt = max(mt, subgroupShuffleXor(mt, 1u));
    const float alpha = exp2(cm_m - mt);
    float sum = 0.0;
    for (uint j = 0u; j < HALF_BC; j++) {
        float16_t p = float16_t(0.0);
        if (j0 + j < jn)
            p = float16_t(exp2(ss[cm_srow + j0 + j] * pc.scale_log2e - mt));
        ps[cm_prow + j0 + j] = p;
        sum += float(p); // l sums the rounded weights P V uses
    }
    sum += subgroupShuffleXor(sum, 1u);
    cm_l = cm_l * alpha + sum;
    cm_m = mt;
    if (cm_half == 0u)
        fs[cm_sg * RS + cm_r] = alpha;
    subgroupMemoryBarrierShared();
    subgroupBarrier();

    // O = alpha O + P V.
    MAT_A pa[BC16];
    for (uint kk = 0u; kk < BC16; kk++)
        coopMatLoadNV(pa[kk], ps, cm_pbase + kk * 16u, PS, false);
    MAT_C factor; // each element's row's alpha
    for (int e = 0; e < factor.length(); e++)
        factor[e] = fs[cm_sg * RS + uint(cm_rows_of[e])];
    for (uint c = 0u; c < D16; c++) {
        for (int e = 0; e < cm_oa[c].length(); e++)
            cm_oa[c][e] *= factor[e];
        for (uint kk = 0u; kk < BC16; kk++) {
            MAT_A vb;
            coopMatLoadNV(vb, kvs, BC * KS + kk * 16u * KS + c * 8u, KS, false);
            cm_oa[c] = coopMatMulAddNV(pa[kk], vb, cm_oa[c]);
        }
    }
}

// Scales O by 1 / l (normalise) or leaves it (unnormalised partials).
void cm_finish(bool normalise) {
    subgroupBarrier();
    if (cm_half == 0u)
        fs[cm_sg * RS + cm_r] = !normalise ? 1.0 : (cm_l > 0.0 ? 1.0 / cm_l : 0.0);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    MAT_C factor;
    for (int e = 0; e < factor.length(); e++)
        factor[e] = fs[cm_sg * RS + uint(cm_rows_of[e])];
    for (uint c = 0u; c < D16; c++)
        for (int e = 0; e < cm_oa[c].length(); e++)
            cm_oa[c][e] *= factor[e];
}

// Output columns 16 c .. 16 c + 15 of this lane's row, 8 of them (from column 16 c + 8 half),
// into x; every lane of the subgroup calls it for the same c.
void cm_out_chunk(uint c, out float x[8]) {
    coopMatStoreNV(cm_oa[c], ss, cm_sbase, OS, false);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint t = 0u; t < 8u; t++)
        x[t] = ss[cm_sbase + cm_r * OS + 8u * cm_half + t];
    subgroupMemoryBarrierShared();
    subgroupBarrier(); // read before the next chunk overwrites it
}

// The flash-attention tile loop on tensor cores (NV cooperative matrices, 16x16x16, f16 operands,
// f32 accumulation), shared by attn_dense_cm.comp (a key range) and attn_blocks_cm.comp (the
// key blocks a head's mode allows).
//
// A workgroup is four or eight 32-lane subgroups over BR = 64 or 128 query rows of one KV head;
// subgroup s owns rows 16 s .. 16 s + 15. Q is staged through shared memory once (in the K/V
// room) and kept as D / 16 A matrices; O is D / 16 accumulator matrices. Per tile of BC keys the
// workgroup stages K and V in shared memory (f16 pairs as 32-bit words); each subgroup takes
// them 16 keys at a time: S = Q K^T (K read column-major, i.e. as K^T) in an accumulator, the
// online softmax on it in registers (P = exp2(S * scale log2 e - m) in place, converted to an
// f16 A matrix), O += P V. No score or probability goes through shared memory; the rare O
// rescale (lazy: see cm_chunk) does.
//
// Which row and column an accumulator element holds is the implementation's layout: matrices
// loaded from tables of row and column numbers, of the same type as S and O, say it for every
// element. A row's max and sum are reduced over the lanes that hold it with two shuffles (lane
// xor 1, xor 2): this needs the layout that cm_layout.comp checks once per device (every lane
// holds elements of at most two rows, and all lanes holding a row are the four lanes of its
// quad, which hold the same two rows; NVIDIA's mma fragments); the host uses these shaders only
// where the check passed (vk_ctx.cm_quad).
//
// Shared memory: 2 BC (D / 2 + 4) words (K, V; the Q staging reuses them), the 2 x 256
// float tables, and per subgroup a 16 x 20 float O staging and 16 rescale factors. Rows are padded by 16 bytes so that the 16 rows a matrix load touches fall in
// different banks. Each invocation loads its share of the next K/V tile into registers before
// the current tile's matrix work.
//
// The including shader enables the extensions (16-bit storage and arithmetic, NV cooperative
// matrices, memory scope semantics, subgroup basic and shuffle) and defines, before the
// include: attn_io.glsl, D, T, BC (specialization constants 1-3) and a workgroup of 128 or 256
// invocations; anywhere, these four for row r of the workgroup (0 .. BR - 1):
//   cm_q_elem   its q row's first element in binding 0, CM_NO_ROW past the last row;
//   cm_row_vis  the keys it sees: [0, vis) (0 past the last row);
//   cm_out, cm_out_stats  store its results (called for rows past the last too: they skip).
// Then it calls cm_begin(), cm_tile() per tile and cm_finish().

uint cm_q_elem(uint r);
uint cm_row_vis(uint r);
void cm_out(uint r, uint col, float x);
void cm_out_stats(uint r, float m, float l);

// Elements of a 16 x 16 accumulator per lane: 256 over 32 lanes (cm_layout.comp checks it).
const uint CM_LEN = 8u;

#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

const uint SUBGROUPS = gl_WorkGroupSize.x / 32u; // 4 or 8
const uint RS = 16u;               // rows per subgroup
const uint BR = SUBGROUPS * RS;    // rows per workgroup: 64 or 128
const uint QCH = 2u * BC < BR ? 2u * BC : BR; // Q rows staged at a time in the K/V room
const uint D16 = D / 16u;
const uint BC16 = BC / 16u;
const uint DP = (D + 4u * T - 1u) / (4u * T) * 4u * T; // attn_dense.comp's partial row pitch
const uint KS = D / 2u + 4u; // words per staged K, V or Q row
const uint CM_NO_ROW = 0xffffffffu;
const float RESCALE_AT = 8.0; // log2 units

shared uint kvs[2u * BC * KS]; // K tile, then V tile (f16 pairs); Q before the tiles
shared float cm_tab[512];      // 16 x 16 row numbers, then column numbers
const uint OS = 20u;           // floats per row of an O matrix staged for rescaling
shared float cm_os[SUBGROUPS * 16u * OS]; // per subgroup: an O matrix being rescaled
shared float cm_fac[SUBGROUPS * 16u];     // per subgroup row: its rescale factor

// Two f16 from a 16-bit binding at element e (no alignment needed), as one word.
uint pair_k(uint e) { return packFloat2x16(f16vec2(k_h[e], k_h[e + 1u])); }
uint pair_v(uint e) { return packFloat2x16(f16vec2(v_h[e], v_h[e + 1u])); }

const uint PIECES = BC * D / 4u; // pieces of 4 halves per tile of K (and of V)
const uint PF = (PIECES + SUBGROUPS * 32u - 1u) / (SUBGROUPS * 32u); // per invocation

// The workgroup's state: this lane's two rows (a and b, within the subgroup; equal when it
// holds one), their visible keys, running max and sum; per element, whether it is row a's (1)
// and its column; the Q and O matrices; the next tile's registers.
uint cm_sg, cm_ra, cm_rb, cm_visa, cm_visb, cm_kbase, cm_vbase;
float cm_ma, cm_mb, cm_la, cm_lb;
uint cm_isa, cm_cols; // per element: bit e, row a's; bits 4 e .. 4 e + 3, its column
MAT_A cm_qa[D16];
MAT_C cm_oa[D16];
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

// Q of the workgroup's rows as matrices, O zero, keys of KV head g; the element tables.
void cm_begin(uint g) {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationIndex;
    cm_sg = gl_SubgroupID;
    cm_kbase = pc.k_off + g * pc.k_s0;
    cm_vbase = pc.v_off + g * pc.v_s0;
    for (uint e = tid; e < 256u; e += WG) {
        cm_tab[e] = float(e / 16u);
        cm_tab[256u + e] = float(e % 16u);
    }
    const uint DW = D / 2u; // words of a row's data
    // Q through the K/V room, QCH rows at a time (the first barrier also orders the tables).
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
    MAT_C rows;
    coopMatLoadNV(rows, cm_tab, 0u, 16u, false);
    MAT_C cols;
    coopMatLoadNV(cols, cm_tab, 256u, 16u, false);
    cm_ra = uint(rows[0]);
    cm_isa = 0u;
    cm_cols = 0u;
    cm_rb = cm_ra;
    for (uint e = 0u; e < CM_LEN; e++) {
        const uint r = uint(rows[e]);
        cm_rb = r != cm_ra ? r : cm_rb;
        cm_isa |= r == cm_ra ? 1u << e : 0u;
        cm_cols |= uint(cols[e]) << (4u * e);
    }
    cm_visa = cm_row_vis(cm_sg * RS + cm_ra);
    cm_visb = cm_row_vis(cm_sg * RS + cm_rb);
    for (uint c = 0u; c < D16; c++)
        cm_oa[c] = MAT_C(0.0);
    cm_ma = NEG_BIG;
    cm_mb = NEG_BIG;
    cm_la = 0.0;
    cm_lb = 0.0;
}

// The max (or sum) of x over the four lanes of this lane's quad.
float quad_max(float x) {
    x = max(x, subgroupShuffleXor(x, 1u));
    return max(x, subgroupShuffleXor(x, 2u));
}
float quad_sum(float x) {
    x += subgroupShuffleXor(x, 1u);
    return x + subgroupShuffleXor(x, 2u);
}

// Keys kk 16 .. kk 16 + 15 of the staged tile: row a sees the first ja of them, row b jb.
// One 16-key chunk at a time (no arrays of matrices: indexed in a loop, the driver kept them in
// memory and larger tiles ran slower per key).
void cm_chunk(uint kk, uint ja, uint jb) {
    // S = Q K^T.
    MAT_C s = MAT_C(0.0);
    for (uint c = 0u; c < D16; c++) {
        MAT_A kb;
        coopMatLoadNV(kb, kvs, kk * 16u * KS + c * 8u, KS, true);
        s = coopMatMulAddNV(cm_qa[c], kb, s);
    }

    // The rows' maxima over their visible keys.
    float ma = NEG_BIG, mb = NEG_BIG;
    for (uint e = 0u; e < CM_LEN; e++) {
        const uint j = bitfieldExtract(cm_cols, 4 * int(e), 4);
        const float x = s[e] * pc.scale_log2e;
        if ((cm_isa & (1u << e)) != 0u) {
            if (j < ja)
                ma = max(ma, x);
        } else if (j < jb) {
            mb = max(mb, x);
        }
    }
    ma = quad_max(ma);
    mb = quad_max(mb);
    // Lazy rescaling: a row keeps its reference max until a score passes it by RESCALE_AT
    // (P stays below 2^RESCALE_AT, well inside f16), so O, whose element-wise rescale costs as
    // much as the P V products, is rescaled only where some row's max jumps (rarely past the
    // first keys). A row with no key yet takes its first max for free (O and l are still 0).
    const bool grow_a = ma > cm_ma + RESCALE_AT, grow_b = mb > cm_mb + RESCALE_AT;
    ma = grow_a ? ma : cm_ma;
    mb = grow_b ? mb : cm_mb;
    const float alpha_a = exp2(cm_ma - ma), alpha_b = exp2(cm_mb - mb);
    const bool rescale = subgroupAny((grow_a && cm_ma > NEG_BIG) || (grow_b && cm_mb > NEG_BIG));

    // P, and l sums the rounded weights P V uses.
    float suma = 0.0, sumb = 0.0;
    for (uint e = 0u; e < CM_LEN; e++) {
        const uint j = bitfieldExtract(cm_cols, 4 * int(e), 4);
        const bool is_a = (cm_isa & (1u << e)) != 0u;
        const float x = s[e] * pc.scale_log2e;
        const float p = j < (is_a ? ja : jb) ? float(float16_t(exp2(x - (is_a ? ma : mb)))) : 0.0;
        s[e] = p;
        if (is_a)
            suma += p;
        else
            sumb += p;
    }
    const MAT_A pa = MAT_A(s);
    cm_la = cm_la * alpha_a + quad_sum(suma);
    cm_lb = cm_lb * alpha_b + quad_sum(sumb);
    cm_ma = ma;
    cm_mb = mb;

    // O = alpha O. Through shared memory: element access on the O matrices, even in a branch
    // never taken, made the products 1.8x slower on an H100.
    if (rescale) {
        const uint lane = gl_SubgroupInvocationID, ob = cm_sg * 16u * OS;
        if ((lane & 3u) == 0u) {
            cm_fac[cm_sg * 16u + cm_ra] = alpha_a;
            cm_fac[cm_sg * 16u + cm_rb] = alpha_b; // the same row when the lane holds one
        }
        for (uint c = 0u; c < D16; c++) {
            coopMatStoreNV(cm_oa[c], cm_os, ob, OS, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            const uint r = lane >> 1u, at = ob + r * OS + 8u * (lane & 1u);
            const float f = cm_fac[cm_sg * 16u + r];
            for (uint t = 0u; t < 8u; t++)
                cm_os[at + t] *= f;
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            coopMatLoadNV(cm_oa[c], cm_os, ob, OS, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier(); // loaded before the next matrix overwrites it
        }
    }

    // O += P V.
    for (uint c = 0u; c < D16; c++) {
        MAT_A vb;
        coopMatLoadNV(vb, kvs, BC * KS + kk * 16u * KS + c * 8u, KS, false);
        cm_oa[c] = coopMatMulAddNV(pa, vb, cm_oa[c]);
    }
}

// One tile of keys [kt, kt + nk), already fetched; each row sees those below its vis. Fetches
// keys [next, next + next_nk) for the following tile (next_nk 0: none). Uniform control flow.
void cm_tile(uint kt, uint nk, uint next, uint next_nk) {
    const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationIndex;
    barrier(); // Q, or the previous tile, is consumed
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
    const uint ja = kt < cm_visa ? min(nk, cm_visa - kt) : 0u;
    const uint jb = kt < cm_visb ? min(nk, cm_visb - kt) : 0u;
    for (uint kk = 0u; kk < BC16; kk++) // a chunk no row of the subgroup sees adds nothing
        if (subgroupAny(ja > 16u * kk || jb > 16u * kk))
            cm_chunk(kk, ja > 16u * kk ? ja - 16u * kk : 0u, jb > 16u * kk ? jb - 16u * kk : 0u);
}

// Scales O by 1 / l (normalise) or leaves it (unnormalised partials) and hands every element
// to cm_out, each row's max and sum to cm_out_stats (from the first lane of each quad).
void cm_finish(bool normalise) {
    const float fa = !normalise ? 1.0 : (cm_la > 0.0 ? 1.0 / cm_la : 0.0);
    const float fb = !normalise ? 1.0 : (cm_lb > 0.0 ? 1.0 / cm_lb : 0.0);
    const uint r0 = cm_sg * RS;
    for (uint c = 0u; c < D16; c++)
        for (uint e = 0u; e < CM_LEN; e++) {
            const bool is_a = (cm_isa & (1u << e)) != 0u;
            cm_out(r0 + (is_a ? cm_ra : cm_rb), 16u * c + bitfieldExtract(cm_cols, 4 * int(e), 4),
                   cm_oa[c][e] * (is_a ? fa : fb));
        }
    if ((gl_SubgroupInvocationID & 3u) != 0u)
        return;
    cm_out_stats(r0 + cm_ra, cm_ma, cm_la);
    if (cm_rb != cm_ra)
        cm_out_stats(r0 + cm_rb, cm_mb, cm_lb);
}

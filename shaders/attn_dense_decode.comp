#version 450
// Dense attention (DESIGN.md 4.1, op attn_dense) on Vulkan for few query rows per KV head
// (decode: L * G <= 16): flash-decoding with K and V read straight into registers, no shared
// staging and no barrier per tile, so the loop is bound by memory bandwidth alone.
//
// A workgroup (NSG subgroups) owns RB rows of KV head g (row r = i * G + hh, as in
// attn_dense.comp) and key split z. A key row (d elements, 16-byte chunks) is spread over LPK
// lanes of a subgroup: lane t of a key slot holds chunks t, t + LPK, ... (NCH chunks), so one
// subgroup reads KPS = subgroup size / LPK whole keys per step, each lane one 16-byte load per
// chunk. Lanes keep their columns of every row's q (pre-scaled to the exp2 domain) and their
// own online-softmax state (m, l, O columns) per row; subgroups take batches of U steps in
// turn. Per batch: V of the batch and K of the next batch are loaded while this batch's scores
// (partial dots summed over the LPK lanes of a key by subgroupShuffleXor), softmax and P V run.
// At the end the key slots of a subgroup are merged by shuffles, the subgroups through shared
// memory, and the workgroup writes o and lse, or partials for attn_dense_merge.comp in
// attn_dense.comp's layout.
// With GATHER, key number j is list entry j (attn_gather, DESIGN.md 4.8): its position is read
// from the list in binding 5 (copied there ahead of the partials), K/V rows are read at that
// position, and a row sees the entry when the position is at most its own (pc.n: entries).
// With LOGITS (decode_select_attend: one query row per head, LessIsMore's selection layer), the
// scores also go out as the selection's candidate logits: q is scaled by the raw scale as
// decode_select.comp scales it, each candidate key's q . k of every head is written as ordered
// bits at off_a + h ncand + key - lo, workgroups of KV head 0 reset `first` (off_b) for their
// candidates, and the softmax takes the score times log2(e).
// Needs subgroup shuffles over LPK lanes (LPK divides the subgroup), d * element size a
// multiple of 16 bytes and K/V rows on 16-byte boundaries; the host falls back to
// attn_dense.comp (attn_gather.comp) otherwise.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128u;   // head dim
layout(constant_id = 2) const uint LPK = 16u;  // lanes per key (a power of two <= subgroup)
layout(constant_id = 3) const uint RB = 4u;    // query rows per workgroup
layout(constant_id = 7) const uint SPLIT = 0u; // 1: write partials instead of o and lse
layout(constant_id = 8) const uint NSG = 4u;   // subgroups per workgroup
layout(constant_id = 9) const uint U = 4u;     // key steps per batch
layout(constant_id = 10) const uint GATHER = 0u; // 1: keys are list entries
layout(constant_id = 11) const uint LOGITS = 0u; // 1: also the candidates' logits

// GATHER: entry j of KV head g at off_a + g off_b + j. LOGITS: candidates [lo, lo + ncand),
// ordered logits at off_a, `first` at off_b, q scaled by raw_scale (float bits).
#define ELA_PUSH_EXTRA uint off_a, off_b, ncand, lo, raw_scale;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };
#include "logit_order.glsl"

const uint ES = KT == DT_F32 ? 4u : 2u;           // bytes per K/V element
const uint VEC = 16u / ES;                        // elements per 16-byte chunk
const uint V4 = VEC / 4u;                         // vec4 per chunk
const uint CHUNKS = D / VEC;                      // chunks per key row
const uint NCH = (CHUNKS + LPK - 1u) / LPK;       // chunks per lane per key
const uint NV = NCH * V4;                         // vec4 per lane per key
const uint DP = (D + 31u) / 32u * 32u;            // attn_dense.comp's partial pitch (T = 8)

shared float s_m[NSG * RB], s_l[NSG * RB];
shared float s_acc[NSG * RB * D];

// vec4 number h (0 .. V4 - 1) of a 16-byte chunk of k or v.
vec4 chunk4(uvec4 w, uint h) {
    if (KT == DT_F32)
        return uintBitsToFloat(w);
    const uvec2 x = h == 0u ? w.xy : w.zw;
    if (KT == DT_F16)
        return vec4(unpackHalf2x16(x.x), unpackHalf2x16(x.y));
    return uintBitsToFloat(uvec4(x.x << 16, x.x & 0xffff0000u, x.y << 16, x.y & 0xffff0000u));
}

// Column of element e of vec4 number v (0 .. NV - 1) of lane t.
uint column(uint v, uint e, uint t) {
    const uint c = v / V4;
    return (c * LPK + t) * VEC + (v % V4) * 4u + e;
}

void main() {
    const uint sg = gl_SubgroupID, sl = gl_SubgroupInvocationID;
    const uint kps = gl_SubgroupSize / LPK;
    const uint slot = sl / LPK, t = sl % LPK;
    const uint g = gl_WorkGroupID.y, split = gl_WorkGroupID.z;
    const uint row0 = (pc.base + gl_WorkGroupID.x) * RB;

    // Rows, their q columns and the last key each sees.
    vec4 q[RB * NV];
    uint vis[RB];
    [[unroll]] for (uint r = 0u; r < RB; r++) {
        const uint row = row0 + r;
        const bool valid = row < pc.rows;
        const uint i = valid ? row / pc.G : 0u, h = g * pc.G + (valid ? row % pc.G : 0u);
        // One past the last key position the row sees.
        vis[r] = !valid ? 0u : GATHER != 0u ? pc.q_pos0 + i + 1u : min(pc.q_pos0 + i + 1u, pc.n);
        const uint qe = pc.q_off + i * pc.q_s0 + h * pc.q_s1;
        [[unroll]] for (uint v = 0u; v < NV; v++) {
            vec4 x = vec4(0.0);
            [[unroll]] for (uint e = 0u; e < 4u; e++) {
                const uint col = column(v, e, t);
                if (valid && col < D)
                    x[e] = load_q(qe + col);
            }
            q[r * NV + v] = x * (LOGITS != 0u ? uintBitsToFloat(pc.raw_scale) : pc.scale_log2e);
        }
    }
    const uint i_last = (min(row0 + RB, pc.rows) - 1u) / pc.G;
    const uint wg_vis = GATHER != 0u ? pc.n : min(pc.q_pos0 + i_last + 1u, pc.n);
    const uint k_begin = split * pc.split_keys;
    const uint k_end = min(k_begin + pc.split_keys, wg_vis);
    const uint list = pc.off_a + g * pc.off_b;

    float m[RB], l[RB];
    vec4 acc[RB * NV];
    [[unroll]] for (uint r = 0u; r < RB; r++) {
        m[r] = NEG_BIG;
        l[r] = 0.0;
    }
    [[unroll]] for (uint v = 0u; v < RB * NV; v++)
        acc[v] = vec4(0.0);

    // uvec4 indices of this lane's chunk 0 in key row 0 of the head.
    const uint kb4 = (pc.k_off + g * pc.k_s0) / VEC + t, ks4 = pc.k_s1 / VEC;
    const uint vb4 = (pc.v_off + g * pc.v_s0) / VEC + t, vs4 = pc.v_s1 / VEC;
    const uint batch = U * kps, stride = NSG * batch;

    uvec4 kr[U * NCH], vr[U * NCH];
    uint kp[U]; // key positions of this lane's keys in the batch (GATHER: from the list)
    uint j0 = k_begin + sg * batch + slot; // this lane's key in step 0 of its batch
    [[unroll]] for (uint u = 0u; u < U; u++) {
        const uint j = j0 + u * kps;
        kp[u] = GATHER != 0u && j < k_end ? part_u[list + j] : j;
        [[unroll]] for (uint c = 0u; c < NCH; c++)
            kr[u * NCH + c] = j < k_end && c * LPK + t < CHUNKS
                                  ? k_w4[kb4 + kp[u] * ks4 + c * LPK]
                                  : uvec4(0u);
    }
    for (; j0 - slot < k_end; j0 += stride) {
        [[unroll]] for (uint u = 0u; u < U; u++)
            [[unroll]] for (uint c = 0u; c < NCH; c++) {
                const uint j = j0 + u * kps;
                vr[u * NCH + c] = j < k_end && c * LPK + t < CHUNKS
                                      ? v_w4[vb4 + kp[u] * vs4 + c * LPK]
                                      : uvec4(0u);
            }
        // Scores of the batch's U keys of this slot, summed over the key's LPK lanes.
        float s[U * RB];
        [[unroll]] for (uint u = 0u; u < U; u++)
            [[unroll]] for (uint r = 0u; r < RB; r++) {
                float p = 0.0;
                [[unroll]] for (uint v = 0u; v < NV; v++)
                    p += dot(q[r * NV + v], chunk4(kr[u * NCH + v / V4], v % V4));
                [[unroll]] for (uint o = LPK / 2u; o > 0u; o >>= 1)
                    p += subgroupShuffleXor(p, o);
                if (LOGITS != 0u) {
                    const uint c = kp[u] - pc.lo; // wraps below lo
                    if (t == 0u && j0 + u * kps < k_end && c < pc.ncand && row0 + r < pc.rows)
                        part_u[pc.off_a + (g * pc.G + row0 + r) * pc.ncand + c] = ord_of(p);
                    if (g == 0u && r == 0u && t == 0u && j0 + u * kps < k_end && c < pc.ncand)
                        part_u[pc.off_b + c] = 0xffffffffu;
                    p *= LOG2E;
                }
                s[u * RB + r] = p;
            }
        // Which rows see which of the batch's keys.
        bool seen[U * RB];
        [[unroll]] for (uint u = 0u; u < U; u++)
            [[unroll]] for (uint r = 0u; r < RB; r++)
                seen[u * RB + r] = j0 + u * kps < k_end && kp[u] < vis[r];
        // The next batch's K, in flight during this batch's softmax and P V.
        const uint jn = j0 + stride;
        [[unroll]] for (uint u = 0u; u < U; u++) {
            const uint j = jn + u * kps;
            kp[u] = GATHER != 0u && j < k_end ? part_u[list + j] : j;
            [[unroll]] for (uint c = 0u; c < NCH; c++)
                kr[u * NCH + c] = j < k_end && c * LPK + t < CHUNKS
                                      ? k_w4[kb4 + kp[u] * ks4 + c * LPK]
                                      : uvec4(0u);
        }
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            float mt = m[r];
            [[unroll]] for (uint u = 0u; u < U; u++)
                if (seen[u * RB + r])
                    mt = max(mt, s[u * RB + r]);
            const float alpha = exp2(m[r] - mt);
            m[r] = mt;
            l[r] *= alpha;
            [[unroll]] for (uint v = 0u; v < NV; v++)
                acc[r * NV + v] *= alpha;
            [[unroll]] for (uint u = 0u; u < U; u++)
                s[u * RB + r] = seen[u * RB + r] ? exp2(s[u * RB + r] - mt) : 0.0;
        }
        [[unroll]] for (uint u = 0u; u < U; u++)
            [[unroll]] for (uint v = 0u; v < NV; v++) {
                const vec4 x = chunk4(vr[u * NCH + v / V4], v % V4);
                [[unroll]] for (uint r = 0u; r < RB; r++)
                    acc[r * NV + v] += s[u * RB + r] * x;
            }
        [[unroll]] for (uint u = 0u; u < U; u++)
            [[unroll]] for (uint r = 0u; r < RB; r++)
                l[r] += s[u * RB + r];
    }

    // Merge the key slots of the subgroup (lanes t, t + LPK, ... hold the same columns).
    for (uint o = LPK; o < gl_SubgroupSize; o <<= 1)
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            const float mo = subgroupShuffleXor(m[r], o), lo = subgroupShuffleXor(l[r], o);
            const float mm = max(m[r], mo), a = exp2(m[r] - mm), b = exp2(mo - mm);
            m[r] = mm;
            l[r] = l[r] * a + lo * b;
            [[unroll]] for (uint v = 0u; v < NV; v++)
                acc[r * NV + v] = acc[r * NV + v] * a + subgroupShuffleXor(acc[r * NV + v], o) * b;
        }
    if (slot == 0u)
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            if (t == 0u) {
                s_m[sg * RB + r] = m[r];
                s_l[sg * RB + r] = l[r];
            }
            [[unroll]] for (uint v = 0u; v < NV; v++)
                [[unroll]] for (uint e = 0u; e < 4u; e++) {
                    const uint col = column(v, e, t);
                    if (col < D)
                        s_acc[(sg * RB + r) * D + col] = acc[r * NV + v][e];
                }
        }
    barrier();

    // Merge the subgroups: invocations over (row, column).
    for (uint x = gl_LocalInvocationIndex; x < RB * D; x += gl_WorkGroupSize.x) {
        const uint r = x / D, col = x % D, row = row0 + r;
        if (row >= pc.rows)
            continue;
        float mm = NEG_BIG;
        for (uint w = 0u; w < NSG; w++)
            mm = max(mm, s_m[w * RB + r]);
        float lsum = 0.0, o = 0.0;
        for (uint w = 0u; w < NSG; w++) {
            const float f = exp2(s_m[w * RB + r] - mm);
            lsum += s_l[w * RB + r] * f;
            o += s_acc[(w * RB + r) * D + col] * f;
        }
        const uint i = row / pc.G, h = g * pc.G + row % pc.G;
        if (SPLIT != 0u) {
            const uint pe = pc.part_off + ((g * pc.rows + row) * pc.splits + split) * (DP + 2u);
            part[pe + col] = o;
            if (col == 0u) {
                part[pe + DP] = mm;
                part[pe + DP + 1u] = lsum;
            }
            continue;
        }
        store_o(pc.o_off + i * pc.o_s0 + h * pc.o_s1 + col, lsum > 0.0 ? o / lsum : 0.0);
        if (col == 0u && pc.has_lse != 0u)
            lse_f[pc.lse_off + i * pc.lse_s0 + h * pc.lse_s1] =
                lsum > 0.0 ? (mm + log2(lsum)) * LN2 : uintBitsToFloat(0xff800000u);
    }
}

#version 450
// Matmul for few activation rows (ela.h "Model ops", decode: M <= 8) on Vulkan: y [M, N] =
// x [M, K] . w [N, K]^T (+ bias), w f32/f16/bf16/q8_0, f32 accumulation. Memory-bound GEMV.
//
// Tiling: LPR consecutive lanes (a power of 2, at most the subgroup size) own one weight row, a
// workgroup owns gl_WorkGroupSize.x / LPR rows. Lane l of a row reads its 16-byte pieces l,
// l + LPR, ... (WVEC: rows start on 16 bytes; 4 f32 or 8 f16/bf16 values each, so a subgroup
// of 32 lanes streams 512 contiguous bytes per step) and keeps one f32 sum per activation row
// (NM of them); what is left of the row after whole pieces goes element by element. q8_0 rows
// (34-byte blocks at any even offset) are walked in quads: lane l takes int8 quads l, l + LPR,
// ... (8 per block, 4 bytes at a 2-byte alignment: at most two word loads) and the block's f16
// scale. The activations come through the caches (every row of the workgroup reads them). The
// LPR partial sums are added with subgroup shuffles (ELA_SUBGROUP) or through shared memory.
// Bound: weight bytes / memory bandwidth (N K {4, 2, 2, 1.0625} bytes), the activations and y
// are M (K + N) floats.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint LPR = 32u;  // lanes per weight row
layout(constant_id = 2) const uint NM = 1u;    // activation rows (1..8)
layout(constant_id = 3) const uint WT = 0u;    // weight dtype (MT_*)
layout(constant_id = 4) const uint WVEC = 0u;  // 1: every weight row starts on 16 bytes
layout(constant_id = 5) const uint XVEC = 0u;  // 1: every x row starts on a multiple of 4 floats

#include "model_io.glsl"
#include "matmul_io.glsl"

const uint ROWS = gl_WorkGroupSize.x / LPR;
#ifndef ELA_SUBGROUP
shared float red[gl_WorkGroupSize.x * NM];
#endif

// x[m, k .. k + 3], k a multiple of 4.
vec4 x4(uint m, uint k) {
    const uint e = pc.x_off + m * pc.x_s + k;
    if (XVEC != 0u)
        return x_f4[e >> 2];
    return vec4(x_f[e], x_f[e + 1u], x_f[e + 2u], x_f[e + 3u]);
}

void main() {
    const uint tid = gl_LocalInvocationIndex, lane = tid % LPR;
    const uint n = gl_WorkGroupID.x * ROWS + tid / LPR;
    const bool live = n < pc.N;
    const uint row = pc.w_off + n * pc.w_s; // bytes
    float acc[NM];
    for (uint m = 0u; m < NM; m++)
        acc[m] = 0.0;
    if (live) {
        if (WT == MT_Q8_0) {
            const uint quads = pc.K / 4u;
            for (uint q = lane; q < quads; q += LPR) {
                const uint blk = row + (q >> 3) * 34u;
                const float d = unpackHalf2x16(w_half(blk)).x;
                const vec4 wq = i8x4(w_bytes4(blk + 2u + 4u * (q & 7u)));
                for (uint m = 0u; m < NM; m++)
                    acc[m] += d * dot(wq, x4(m, 4u * q));
            }
        } else {
            const uint E = WT == MT_F32 ? 4u : 8u; // values per 16-byte piece
            const uint pieces = WVEC != 0u ? pc.K / E : 0u;
            for (uint j = lane; j < pieces; j += LPR) {
                const uvec4 v = w_u4[(row >> 4) + j];
                if (WT == MT_F32) {
                    const vec4 w = uintBitsToFloat(v);
                    for (uint m = 0u; m < NM; m++)
                        acc[m] += dot(w, x4(m, 4u * j));
                } else {
                    vec4 lo, hi;
                    if (WT == MT_F16) {
                        lo = vec4(unpackHalf2x16(v.x), unpackHalf2x16(v.y));
                        hi = vec4(unpackHalf2x16(v.z), unpackHalf2x16(v.w));
                    } else {
                        lo = uintBitsToFloat(uvec4(v.x << 16, v.x & 0xffff0000u, v.y << 16,
                                                   v.y & 0xffff0000u));
                        hi = uintBitsToFloat(uvec4(v.z << 16, v.z & 0xffff0000u, v.w << 16,
                                                   v.w & 0xffff0000u));
                    }
                    for (uint m = 0u; m < NM; m++)
                        acc[m] += dot(lo, x4(m, 8u * j)) + dot(hi, x4(m, 8u * j + 4u));
                }
            }
            for (uint k = pieces * E + lane; k < pc.K; k += LPR) {
                const float w = w_elem(row, k);
                for (uint m = 0u; m < NM; m++)
                    acc[m] += w * x_f[pc.x_off + m * pc.x_s + k];
            }
        }
    }
#ifdef ELA_SUBGROUP
    for (uint o = LPR / 2u; o > 0u; o >>= 1)
        for (uint m = 0u; m < NM; m++)
            acc[m] += subgroupShuffleXor(acc[m], o);
#else
    for (uint m = 0u; m < NM; m++)
        red[tid * NM + m] = acc[m];
    barrier();
    if (lane == 0u)
        for (uint m = 0u; m < NM; m++) {
            float s = 0.0;
            for (uint l = 0u; l < LPR; l++)
                s += red[(tid + l) * NM + m];
            acc[m] = s;
        }
#endif
    if (live && lane == 0u) {
        const float b = pc.has_bias != 0u ? b_f[pc.b_off + n] : 0.0;
        for (uint m = 0u; m < NM; m++)
            y_f[pc.y_off + m * pc.y_s + n] = acc[m] + b;
    }
}

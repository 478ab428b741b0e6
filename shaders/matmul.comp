#version 450
// Matmul for many activation rows (ela.h "Model ops", prefill: M > 8) on Vulkan: y [M, N] =
// x [M, K] . w [N, K]^T (+ bias), w f32/f16/bf16/q8_0 converted to f32 on its way into shared
// memory, f32 accumulation.
//
// Tiling: a workgroup of 256 invocations owns a 64 x 64 tile of y (workgroup x: 64 weight rows,
// y: 64 activation rows) and walks K in steps of 32: it stages the 64 x 32 slices of x and of w
// in shared memory k-major (each slice's column of 64 values as 16 vec4, 16 KiB in all), then
// invocation (tx, ty) of the 16 x 16 grid adds the 4 x 4 outer products of x rows ty*4..+3 and
// w rows tx*4..+3 per k: two vec4 shared loads per 16 FMAs. Staging puts consecutive
// invocations on consecutive rows of a slice (conflict-free shared stores); a q8_0 slice is one
// 34-byte block per weight row, read by 4 invocations (8 int8 each, and the scale). Rows and
// K past the edges stage zeros.
// Bound: FMA issue; each weight element is read ceil(M / 64) times, each x element
// ceil(N / 64) times.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 256) in;
layout(constant_id = 3) const uint WT = 0u; // weight dtype (MT_*)

#include "model_io.glsl"
#include "matmul_io.glsl"

const uint BM = 64u, BN = 64u, BK = 32u;
shared vec4 xs[BK * BM / 4u]; // [k][m / 4]
shared vec4 ws[BK * BN / 4u]; // [k][n / 4]

void main() {
    const uint tid = gl_LocalInvocationIndex, tx = tid % 16u, ty = tid / 16u;
    const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
    vec4 acc[4] = vec4[4](vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    for (uint k0 = 0u; k0 < pc.K; k0 += BK) {
        // x slice: invocation -> row r = id % 64, k = id / 64
        for (uint i = 0u; i < BM * BK / 256u; i++) {
            const uint id = tid + 256u * i, r = id % BM, k = id / BM;
            const float v = m0 + r < pc.M && k0 + k < pc.K
                                ? x_f[pc.x_off + (m0 + r) * pc.x_s + k0 + k] : 0.0;
            xs[k * (BM / 4u) + r / 4u][r % 4u] = v;
        }
        if (WT == MT_Q8_0) { // K is a multiple of 32: the slice is block k0 / 32 of each row
            const uint r = tid / 4u, part = tid % 4u;
            float d = 0.0;
            uint lo = 0u, hi = 0u;
            if (n0 + r < pc.N) {
                const uint blk = pc.w_off + (n0 + r) * pc.w_s + (k0 / 32u) * 34u;
                d = unpackHalf2x16(w_half(blk)).x;
                lo = w_bytes4(blk + 2u + 8u * part);
                hi = w_bytes4(blk + 6u + 8u * part);
            }
            const vec4 a = d * i8x4(lo), b = d * i8x4(hi);
            for (uint j = 0u; j < 4u; j++) {
                ws[(8u * part + j) * (BN / 4u) + r / 4u][r % 4u] = a[j];
                ws[(8u * part + 4u + j) * (BN / 4u) + r / 4u][r % 4u] = b[j];
            }
        } else {
            for (uint i = 0u; i < BN * BK / 256u; i++) {
                const uint id = tid + 256u * i, r = id % BN, k = id / BN;
                const float v = n0 + r < pc.N && k0 + k < pc.K
                                    ? w_elem(pc.w_off + (n0 + r) * pc.w_s, k0 + k) : 0.0;
                ws[k * (BN / 4u) + r / 4u][r % 4u] = v;
            }
        }
        barrier();
        for (uint k = 0u; k < BK; k++) {
            const vec4 a = xs[k * (BM / 4u) + ty], b = ws[k * (BN / 4u) + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        barrier();
    }
    for (uint i = 0u; i < 4u; i++) {
        const uint m = m0 + ty * 4u + i;
        if (m >= pc.M)
            continue;
        for (uint j = 0u; j < 4u; j++) {
            const uint n = n0 + tx * 4u + j;
            if (n < pc.N)
                y_f[pc.y_off + m * pc.y_s + n] =
                    acc[i][j] + (pc.has_bias != 0u ? b_f[pc.b_off + n] : 0.0);
        }
    }
}

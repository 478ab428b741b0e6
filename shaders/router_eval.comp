#version 450
// Elastic Attention router (DESIGN.md 4.4, PAPERS.md 1.3, op router_eval) on Vulkan: one
// workgroup per KV head pools the pre-RoPE keys over rows [0, m) and [L - m, L) (m = min(100,
// L), overlap counted twice), then runs the Task MLP d -> h -> d (SiLU) and the Router MLP
// d -> h -> d -> 2 (SiLU, SiLU) with every activation in shared memory, an invocation per output
// row of each layer (its dot product over the weight row in f32). The ten weights and biases
// are copies in binding 5 (backends/vulkan/vk_router_eval.c), each with its element offset, row
// stride and dtype in a header; the logits go to binding 5 for the host's decision.
// Bound: about 4 h d multiply-adds and 200 d key elements per KV head: microseconds.
#extension GL_GOOGLE_include_directive : require
#ifdef ELA_STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint DMAX = 128u; // d
layout(constant_id = 2) const uint HMAX = 512u; // hidden width

#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

// shared activations: x [d], h1 [h], t [d], r1 [h], r2 [d], z [2]
const uint X = 0u, H1 = DMAX, TT = DMAX + HMAX, R1 = 2u * DMAX + HMAX, R2 = 2u * DMAX + 2u * HMAX,
           Z = 3u * DMAX + 2u * HMAX;
shared float act[3u * DMAX + 2u * HMAX + 2u];

// Element e of weight tensor w (header words 3 w: element offset, row stride, dtype).
float weight(uint w, uint e) {
    const uint x = part_u[3u * w] + e, dt = part_u[3u * w + 2u];
    if (dt == DT_F32)
        return uintBitsToFloat(part_u[x]);
    return from16(half_of(part_u[x >> 1], x), dt);
}

// act[out + o] = f(b[o] + sum_i W[o, i] act[in + i]) for o < n_out; silu when `silu` != 0.
void linear(uint w, uint in_at, uint n_in, uint out_at, uint n_out, bool silu) {
    const uint rs = part_u[3u * w + 1u];
    for (uint o = gl_LocalInvocationIndex; o < n_out; o += gl_WorkGroupSize.x) {
        float acc = 0.0;
        for (uint i = 0u; i < n_in; i++)
            acc += weight(w, o * rs + i) * act[in_at + i];
        acc += weight(w + 1u, o);
        act[out_at + o] = silu ? acc / (1.0 + exp(-acc)) : acc;
    }
    barrier();
}

void main() {
    const uint g = gl_WorkGroupID.x, tid = gl_LocalInvocationIndex;
    const uint L = pc.rows, d = pc.n, hid = pc.G;
    const uint m = min(100u, L);
    for (uint c = tid; c < d; c += gl_WorkGroupSize.x) {
        float s = 0.0;
        for (uint part = 0u; part < 2u; part++) {
            const uint j0 = part == 0u ? 0u : L - m;
            for (uint j = j0; j < j0 + m; j++)
                s += load_k(pc.k_off + g * pc.k_s0 + j * pc.k_s1 + c);
        }
        act[X + c] = s / float(2u * m);
    }
    barrier();
    linear(0u, X, d, H1, hid, true);   // task_w1, task_b1
    linear(2u, H1, hid, TT, d, false); // task_w2, task_b2
    linear(4u, TT, d, R1, hid, true);  // route_w1, route_b1
    linear(6u, R1, hid, R2, d, true);  // route_w2, route_b2
    linear(8u, R2, d, Z, 2u, false);   // route_w3, route_b3
    if (tid < 2u)
        part[pc.part_off + 2u * g + tid] = act[Z + tid];
}

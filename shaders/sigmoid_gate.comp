#version 450
// SSA's output gate (ela.h "Model ops", PAPERS.md 4.3) on Vulkan: x f32 [M, H, d] in place,
// row (m, h) times sigmoid(g[m, h * stride + offset]). One element per invocation, grid-stride;
// each recomputes its row's sigmoid (one exp, cheaper than sharing it). Bound: memory.
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push {
    uint x_off, xs0, xs1;  // floats: x[0, 0, 0] in binding 0, strides of m and h
    uint g_off, gs0;       // floats: g[0, 0] in binding 1, row stride
    uint H, d, stride, offset;
    uint total;            // M H d
} pc;

layout(std430, binding = 0) buffer XF { float x_f[]; };
layout(std430, binding = 1) readonly buffer GF { float g_f[]; };

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.total; e += step) {
        const uint i = e % pc.d, t = e / pc.d, h = t % pc.H, m = t / pc.H;
        const float g = g_f[pc.g_off + m * pc.gs0 + h * pc.stride + pc.offset];
        x_f[pc.x_off + m * pc.xs0 + h * pc.xs1 + i] *= 1.0 / (1.0 + exp(-g));
    }
}

#version 450
// get_rows (ela.h "Model ops", the token embedding) on Vulkan: out [M, D] f32 = rows ids[m] of
// table [V, D] f32/f16/bf16/q8_0, converted exactly as the CPU's ela_convert (integer f16
// widening, q8_0 scale * int8 in one f32 multiply), written as bits. The table may be bound in
// pieces of rows [r0, r1) (a device's largest binding, e.g. lavapipe's 128 MiB, below the
// table): each dispatch writes the rows whose id falls in its piece. One element per
// invocation, grid-stride. Bound: memory (M D elements).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TT = 0u; // table dtype (MT_*)

#include "model_io.glsl"

layout(push_constant) uniform Push {
    uint t_off, t_s;     // bytes: row r0 of the table in binding 0, row stride
    uint ids_off;        // i32 elements in binding 1
    uint o_off, o_s;     // floats: out[0, 0] in binding 3, row stride
    uint D, r0, r1;
    uint total;          // M D
} pc;

layout(std430, binding = 0) readonly buffer TU { uint t_u[]; };
layout(std430, binding = 1) readonly buffer II { int ids_i[]; };
layout(std430, binding = 3) writeonly buffer OU { uint o_u[]; };

uint t_half(uint p) { // p even
    const uint v = t_u[p >> 2];
    return (p & 2u) != 0u ? v >> 16 : v & 0xffffu;
}

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.total; e += step) {
        const uint m = e / pc.D, c = e - m * pc.D;
        const uint id = uint(ids_i[pc.ids_off + m]);
        if (id < pc.r0 || id >= pc.r1)
            continue;
        const uint row = pc.t_off + (id - pc.r0) * pc.t_s;
        uint bits;
        if (TT == MT_F32) {
            bits = t_u[(row >> 2) + c];
        } else if (TT == MT_Q8_0) {
            const uint blk = row + (c >> 5) * 34u, p = blk + 2u + (c & 31u);
            const int q = int(t_u[p >> 2] << (24u - 8u * (p & 3u))) >> 24;
            bits = floatBitsToUint(f16_to_f32(t_half(blk)) * float(q));
        } else {
            const uint h = t_half(row + 2u * c);
            bits = TT == MT_F16 ? floatBitsToUint(f16_to_f32(h)) : h << 16;
        }
        o_u[pc.o_off + m * pc.o_s + c] = bits;
    }
}

#version 450
// LessIsMore selection (DESIGN.md 4.7, op decode_select) on Vulkan, pass 4: the output list.
// Sinks 0 .. sinks-1, then the rank-major union (rank outer, head inner) of the heads' sorted
// top lists, the first k_mid distinct keys: entry e = rank * Hq + h is a key's first appearance
// exactly when first[key] == e (pass 3), and its place in the union is the number of first
// appearances before it, a running prefix count over chunks of the entries in e order. Then the
// n_rec recent keys ascending. One workgroup; i32 output in binding 3 (element offset o_off,
// stride o_s0). Bound: Hq k_mid entries read once, stopping when the union is full.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in; // a power of two

#include "decode_select.glsl"

const uint WG = gl_WorkGroupSize.x;

shared uint s_scan[WG];

void put(uint at, uint key) { o_w[pc.o_off + at * pc.o_s0] = key; }

void main() {
    const uint tid = gl_LocalInvocationIndex;
    for (uint j = tid; j < LO; j += WG)
        put(j, j);
    for (uint j = tid; j < pc.n_rec; j += WG)
        put(LO + K_MID + j, pc.n - pc.n_rec + j);
    const uint E = HQ * K_MID;
    uint taken = 0u;
    for (uint e0 = 0u; e0 < E && taken < K_MID; e0 += WG) { // uniform
        const uint e = e0 + tid;
        uint key = 0u;
        bool first = false;
        if (e < E) {
            const uint r = e / HQ, h = e % HQ;
            key = part_u[pc.top_off + h * K_MID + r];
            first = part_u[pc.first_off + key - LO] == e;
        }
        s_scan[tid] = first ? 1u : 0u;
        barrier();
        for (uint off = 1u; off < WG; off <<= 1) {
            const uint add = tid >= off ? s_scan[tid - off] : 0u;
            barrier();
            s_scan[tid] += add;
            barrier();
        }
        const uint at = taken + s_scan[tid] - (first ? 1u : 0u);
        if (first && at < K_MID)
            put(LO + at, key);
        taken += s_scan[WG - 1u];
        barrier();
    }
}

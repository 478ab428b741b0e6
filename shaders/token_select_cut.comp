#version 450
// Token Sparse Attention's selection (DESIGN.md 4.5, op token_select) on Vulkan: the coverage cut
// and n_keep, in one workgroup, without a sort. The CPU sorts the head-mean distribution
// g / (sum g + 1e-8) ascending and drops values while their cumulative sum stays below tau:
// n_drop0 = #{k : c_k < tau}. Here, with the sums compared against tau (sum g + 1e-8) instead:
// g >= 0, so its bits order it; a bisection over those bits finds the smallest value v whose
// "sum of every value <= v" reaches tau (31 workgroup-wide sums), then n_drop0 = the values
// below v plus as many copies of v as keep the sum below tau. Sums are compensated per
// invocation and tree-reduced (~1e-6 relative; the CPU's double sums are matched wherever the
// cut lies further than that from tau, which the tests ensure). n_keep = max(Lp - n_drop0 - 1,
// min_keep), 0 (dense) when nothing is dropped or n_keep >= Lp.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in; // a power of two

#include "token_select.glsl"

const uint WG = gl_WorkGroupSize.x;
shared float red[WG];
shared uint redn[WG];

float wg_sum(float x) {
    const uint tid = gl_LocalInvocationIndex;
    red[tid] = x;
    barrier();
    for (uint off = WG / 2u; off > 0u; off >>= 1) {
        if (tid < off)
            red[tid] += red[tid + off];
        barrier();
    }
    const float total = red[0];
    barrier();
    return total;
}

uint wg_count(uint x) {
    const uint tid = gl_LocalInvocationIndex;
    redn[tid] = x;
    barrier();
    for (uint off = WG / 2u; off > 0u; off >>= 1) {
        if (tid < off)
            redn[tid] += redn[tid + off];
        barrier();
    }
    const uint total = redn[0];
    barrier();
    return total;
}

// Sum of the values whose bits are <= t.
float mass_upto(uint t) {
    float s = 0.0, c = 0.0;
    for (uint j = gl_LocalInvocationIndex; j < LP; j += WG) {
        const uint b = part_u[pc.g_off + j];
        if (b <= t)
            kahan_add(s, c, uintBitsToFloat(b));
    }
    return wg_sum(s - c);
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    if (part_u[RES_FLAG] != 0u) { // not finite: the host reports the error
        if (tid == 0u)
            part_u[RES_N_KEEP] = 0u;
        return;
    }
    const float total = mass_upto(0xffffffffu);
    const float tau = TAU * (total + 1e-8);
    uint n0 = 0u;
    if (TAU <= 0.0) {
        n0 = 0u;
    } else if (total < tau) {
        n0 = LP; // everything lies below tau
    } else {
        uint lo = 0u, hi = 0x7f7fffffu; // mass_upto(hi) = total >= tau
        while (lo < hi) {                // uniform: every invocation has the same sums
            const uint mid = lo + (hi - lo) / 2u;
            if (mass_upto(mid) >= tau)
                hi = mid;
            else
                lo = mid + 1u;
        }
        float s = 0.0, c = 0.0;
        uint below = 0u, equal = 0u;
        for (uint j = tid; j < LP; j += WG) {
            const uint b = part_u[pc.g_off + j];
            if (b < lo) {
                kahan_add(s, c, uintBitsToFloat(b));
                below++;
            }
            equal += b == lo ? 1u : 0u;
        }
        const float mass_below = wg_sum(s - c);
        below = wg_count(below);
        equal = wg_count(equal);
        // below: every one of them is dropped (their cumulative sum stays below tau); of the
        // `equal` copies of v, those that keep it below tau.
        const float v = uintBitsToFloat(lo);
        uint take = 0u;
        float cum = mass_below;
        while (take < equal && cum + v < tau) {
            cum += v;
            take++;
        }
        n0 = below + take;
    }
    if (tid != 0u)
        return;
    uint n_keep = 0u;
    if (n0 > 0u) {
        const uint n_drop = n0 + 1u;
        n_keep = LP > n_drop && LP - n_drop > MIN_KEEP ? LP - n_drop : MIN_KEEP;
        if (n_keep >= LP)
            n_keep = 0u;
    }
    part_u[RES_N_KEEP] = n_keep;
}

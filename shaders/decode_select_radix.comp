#version 450
// LessIsMore selection (DESIGN.md 4.7, op decode_select) on Vulkan, pass 2: each query head's
// top k_mid candidates (logit descending, index ascending), unsorted, into sel, spread over
// chunks of CHUNK candidates so that every head keeps many workgroups busy. A radix select over
// the ordered logit bits in three digits (bits 31-21, 20-10, 9-0), each a histogram pass over
// the chunks (HIST: the candidates that match the digits found so far, counted per digit value
// into the head's global histogram) and a pick pass per head (PICK: the digit value at which
// the count from the top reaches k_mid, and how many values above it are already in); the three
// digits give the k_mid-th largest value thr and `need`, how many values equal to it are taken.
// COUNT counts each chunk's values equal to thr; COLLECT writes every value above thr (slot by
// a per-head counter) and, in index order, the first `need` equal ones (the lowest indices: the
// equal values of earlier chunks plus a prefix count within the chunk). Words at pc.radix_off:
//   hist [Hq][2048] (zero before the first HIST; PICK clears it), state [Hq][4] (prefix, mask,
//   need, above), eq [Hq][chunks], count [Hq].
// Bound: four reads of the Hq x ncand ordered logits (L2-resident), spread over the device.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;                 // a power of two
layout(constant_id = 1) const uint PHASE = 0u;  // 0 HIST, 1 PICK, 2 COUNT, 3 COLLECT
layout(constant_id = 2) const uint CHUNK = 4096u; // candidates per workgroup (HIST, COUNT, COLLECT)

#include "decode_select.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint BINS = 2048u;
const uint HC = 2u; // histogram copies: invocation t counts into copy t % HC

shared uint s_hist[HC * BINS];
shared uint s_scan[WG];
shared uint s_word;

uint n_chunks() { return (NCAND + CHUNK - 1u) / CHUNK; }
uint hist_at(uint h) { return pc.radix_off + h * BINS; }
uint state_at(uint h) { return pc.radix_off + HQ * BINS + 4u * h; }
uint eq_at(uint h) { return pc.radix_off + HQ * (BINS + 4u) + h * n_chunks(); }
uint count_at(uint h) { return pc.radix_off + HQ * (BINS + 4u + n_chunks()) + h; }

uint digit_shift(uint level) { return level == 0u ? 21u : level == 1u ? 10u : 0u; }
uint digit_bins(uint level) { return level < 2u ? 2048u : 1024u; }

// Inclusive prefix sum of x over the workgroup, and the workgroup's total (every invocation
// calls it).
uint scan_incl(uint x, out uint total) {
    const uint tid = gl_LocalInvocationIndex;
    s_scan[tid] = x;
    barrier();
    for (uint off = 1u; off < WG; off <<= 1) {
        const uint add = tid >= off ? s_scan[tid - off] : 0u;
        barrier();
        s_scan[tid] += add;
        barrier();
    }
    const uint r = s_scan[tid];
    total = s_scan[WG - 1u];
    barrier();
    return r;
}

void hist_pass(uint h, uint chunk) {
    const uint tid = gl_LocalInvocationIndex;
    const uint shift = digit_shift(pc.level), nb = digit_bins(pc.level);
    const uint prefix = pc.level == 0u ? 0u : part_u[state_at(h)];
    const uint mask = pc.level == 0u ? 0u : part_u[state_at(h) + 1u];
    for (uint b = tid; b < HC * BINS; b += WG)
        s_hist[b] = 0u;
    barrier();
    const uint lb = pc.part_off + h * NCAND, c1 = min(chunk * CHUNK + CHUNK, NCAND);
    for (uint c = chunk * CHUNK + tid; c < c1; c += WG) {
        const uint o = part_u[lb + c];
        if ((o & mask) == prefix)
            atomicAdd(s_hist[(tid % HC) * BINS + ((o >> shift) & (nb - 1u))], 1u);
    }
    barrier();
    for (uint b = tid; b < nb; b += WG) {
        uint x = 0u;
        for (uint k = 0u; k < HC; k++)
            x += s_hist[k * BINS + b];
        if (x != 0u)
            atomicAdd(part_u[hist_at(h) + b], x);
    }
}

void pick_pass(uint h) {
    const uint tid = gl_LocalInvocationIndex;
    const uint shift = digit_shift(pc.level), nb = digit_bins(pc.level);
    const uint per = nb / WG; // bins per invocation, from the top: t owns [nb - (t+1) per, nb - t per)
    const uint need = pc.level == 0u ? K_MID : part_u[state_at(h) + 2u];
    const uint above = pc.level == 0u ? 0u : part_u[state_at(h) + 3u];
    const uint top = nb - tid * per;
    uint sum = 0u;
    for (uint b = 0u; b < per; b++)
        sum += part_u[hist_at(h) + top - 1u - b];
    uint total;
    const uint incl = scan_incl(sum, total), excl = incl - sum;
    if (excl < need && incl >= need) { // this invocation's bins hold the crossing
        uint cum = excl, b = 0u;
        for (; b + 1u < per && cum + part_u[hist_at(h) + top - 1u - b] < need; b++)
            cum += part_u[hist_at(h) + top - 1u - b];
        const uint dg = top - 1u - b;
        const uint prefix = pc.level == 0u ? 0u : part_u[state_at(h)];
        const uint mask = pc.level == 0u ? 0u : part_u[state_at(h) + 1u];
        part_u[state_at(h)] = prefix | (dg << shift);
        part_u[state_at(h) + 1u] = mask | ((nb - 1u) << shift);
        part_u[state_at(h) + 2u] = need - cum;
        part_u[state_at(h) + 3u] = above + cum;
    }
    if (tid == 0u && pc.level == 0u)
        part_u[count_at(h)] = 0u;
    barrier(); // every invocation has read the histogram
    for (uint b = tid; b < nb; b += WG)
        part_u[hist_at(h) + b] = 0u;
}

void count_pass(uint h, uint chunk) {
    const uint tid = gl_LocalInvocationIndex;
    const uint thr = part_u[state_at(h)];
    const uint lb = pc.part_off + h * NCAND, c1 = min(chunk * CHUNK + CHUNK, NCAND);
    uint n = 0u;
    for (uint c = chunk * CHUNK + tid; c < c1; c += WG)
        n += part_u[lb + c] == thr ? 1u : 0u;
    uint total;
    scan_incl(n, total);
    if (tid == 0u)
        part_u[eq_at(h) + chunk] = total;
}

void collect_pass(uint h, uint chunk) {
    const uint tid = gl_LocalInvocationIndex;
    const uint thr = part_u[state_at(h)], need = part_u[state_at(h) + 2u];
    const uint above_total = part_u[state_at(h) + 3u];
    if (tid == 0u) {
        uint before = 0u;
        for (uint k = 0u; k < chunk; k++)
            before += part_u[eq_at(h) + k];
        s_word = before;
    }
    barrier();
    uint eq_base = s_word;
    const uint lb = pc.part_off + h * NCAND, sb = pc.sel_off + h * K_MID * 2u;
    const uint c1 = min(chunk * CHUNK + CHUNK, NCAND);
    for (uint c0 = chunk * CHUNK; c0 < c1; c0 += WG) { // uniform
        const uint c = c0 + tid;
        const uint o = c < c1 ? part_u[lb + c] : 0u;
        if (c < c1 && o > thr) {
            const uint slot = atomicAdd(part_u[count_at(h)], 1u);
            part_u[sb + 2u * slot] = o;
            part_u[sb + 2u * slot + 1u] = LO + c;
        }
        const bool eq = c < c1 && o == thr;
        uint n_eq;
        const uint incl = scan_incl(eq ? 1u : 0u, n_eq);
        const uint before = incl - (eq ? 1u : 0u);
        if (eq && eq_base + before < need) {
            const uint slot = above_total + eq_base + before;
            part_u[sb + 2u * slot] = o;
            part_u[sb + 2u * slot + 1u] = LO + c;
        }
        eq_base += n_eq;
    }
}

void main() {
    const uint x = pc.base + gl_WorkGroupID.x, h = gl_WorkGroupID.y;
    if (PHASE == 0u)
        hist_pass(h, x);
    else if (PHASE == 1u)
        pick_pass(x);
    else if (PHASE == 2u)
        count_pass(h, x);
    else
        collect_pass(h, x);
}

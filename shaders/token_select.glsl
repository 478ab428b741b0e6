// Shared by the token_select shaders (DESIGN.md 4.5, Token Sparse Attention's selection): the
// push constants as backends/vulkan/vk_token_select.c fills them (attn_io.glsl's struct, fields
// the op has no use for carrying its sizes) and the layout of binding 5 (the op's scratch, in
// 32-bit words). Window rows are (query head h, window query i) at position Lp + i, head-major
// (row h w + i): KV head g owns rows [g G w, (g + 1) G w). Scores live in the exp2 domain.
//   q: binding 0 (q_off, q_s0, q_s1)   k: binding 1 (k_off, k_s0, k_s1)
//   idx: binding 3 as o_w (o_off, o_s0, o_s1)
//   pc.rows: G w (rows per KV head)   pc.G   pc.n: L   pc.split_keys, pc.splits: pass 1's keys
//   pc.part_off: partials [splits][Hq w][2] (m, l)   pc.scale_log2e: scale * log2(e)
// Scratch words 0..3: n_keep (0: dense), the non-finite flag, unused.
#define ELA_PUSH_EXTRA uint ml_off, score_off, pooled_off, g_off, n_rb, n_kt;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

#define W pc.v_off         // window
#define LP pc.v_s0         // prefix length L - w
#define POOL pc.v_s1       // odd avg-pool width
#define MIN_KEEP pc.lse_off // clamped to Lp
#define HQ pc.lse_s0
#define HKV pc.lse_s1
#define TAU uintBitsToFloat(pc.has_lse)
#define RES_N_KEEP 0u
#define RES_FLAG 1u
// ml [Hq w][2]: each row's final max and sum; score, pooled [Hq][Lp] f32; g [Lp] f32.

// Element index of window row r of KV head g in q.
uint q_row(uint g, uint r) {
    const uint h = g * pc.G + r / W, i = r % W;
    return pc.q_off + (LP + i) * pc.q_s0 + h * pc.q_s1;
}

// Compensated (Kahan) sum: f32 with about twice its precision, for long sums of probabilities
// whose cut-offs are compared at 1e-4 relative (the CPU sums them in double). `precise` keeps
// the compiler from reassociating the compensation away.
void kahan_add(inout float s, inout float c, float x) {
    precise float y = x - c;
    precise float t = s + y;
    precise float nc = (t - s) - y;
    c = nc;
    s = t;
}

// Shared by the decode_select shaders (DESIGN.md 4.7, LessIsMore): the push constants beyond
// attn_io.glsl's and the layout of binding 5, as backends/vulkan/vk_decode_select.c fills them.
// Candidates are keys [lo, lo + ncand) (lo = the sinks); a scored candidate is its logit as
// ordered bits (a larger uint is a larger float: NaN ranks as -inf, -0 as +0) and its key index.
// The ranking is (logit descending, index ascending), the CPU backend's and the reference's.
//   pc.rows: Hq   pc.G: query heads per KV head   pc.n: keys   pc.split_keys: k_mid
//   pc.splits: ncand   pc.has_lse: lo   pc.part_off: ord [Hq][ncand]   pc.scale_log2e: scale
#define ELA_PUSH_EXTRA uint sel_off, top_off, first_off, n_rec, radix_off, level;
#include "attn_io.glsl"
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };
#include "logit_order.glsl"
// sel [Hq][k_mid][2] (ord, key) of each head's top k_mid, unsorted; top [Hq][k_mid] the sorted
// keys; first [ncand] the first (rank * Hq + head) at which each candidate appears in a top list;
// at radix_off decode_select_radix.comp's words (its level in pc.level).

#define HQ pc.rows
#define K_MID pc.split_keys
#define NCAND pc.splits
#define LO pc.has_lse

// (ord a, key a) ranks before (ord b, key b)
bool ranks_before(uint oa, uint ja, uint ob, uint jb) {
    return oa > ob || (oa == ob && ja < jb);
}

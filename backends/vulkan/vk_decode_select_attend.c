/* Vulkan backend: decode_select_attend (DESIGN.md 4.1 + 4.7, PAPERS.md 3.2), a LessIsMore
 * selection layer: the dense decode attention of the query over all n keys (vk_attn_dense.c,
 * split over the keys and merged by LSE) and decode_select's token selection
 * (vk_decode_select.c), recorded back to back into the same command stream and submitted
 * together, with no wait in between. Composed rather than fused: the selection reads K a second
 * time (1.5x a dense step's KV bytes, not 1x); the results are those of the two ops bit for
 * bit. */
#include "vk_sparse.h"

ela_status vk_decode_select_attend(void *vctx, const ela_decode_select_attend_args *a) {
    ela_status st = vk_attn_dense(vctx, &a->attn);
    if (st != ELA_OK)
        return st;
    ela_decode_select_args s;
    s.q = a->attn.q;
    s.k = a->attn.k;
    s.n = a->attn.n;
    s.d = a->attn.d;
    s.hq = a->attn.hq;
    s.hkv = a->attn.hkv;
    s.scale = a->attn.scale;
    s.p = a->p;
    s.idx = a->idx;
    s.count = a->count;
    return vk_decode_select(vctx, &s);
}

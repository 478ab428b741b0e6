/* CUDA decode_select_attend (DESIGN.md 4.1 + 4.7, PAPERS.md 3.2): a LessIsMore selection layer,
 * the dense decode attention of the query over all n keys and decode_select's token selection.
 *
 * Composed, not fused: the dense decode step (attn_dense.cu's split-K flash-decoding, tensor
 * cores where they apply) and decode_select.cu's three kernels go on the context's one stream
 * back to back, with no wait between them and none after. Fusing would mean the decode kernels
 * (attn_dense_decode*.cu) also storing each raw logit q.k * scale; theirs are scores with log2 e
 * folded into a 16-bit q fragment on the tensor-core path, which do not rank as decode_select's
 * f32 logits (and the CPU's) do, so the selection reads K a second time: 1.5x the KV bytes of a
 * dense step instead of 1x (decode_select.cu measures its logits pass at 159 us over 128K bf16
 * keys, Hq 32, Hkv 8, against 180 us for the dense step). The op still saves the caller's second
 * validation and dispatch, and its results are those of the two ops bit for bit. */
#include "cuda_check.h"

extern "C" ela_status cuda_decode_select_attend(void *vctx, const ela_decode_select_attend_args *a) {
    ela_status st = cuda_attn_dense(vctx, &a->attn);
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
    return cuda_decode_select(vctx, &s);
}

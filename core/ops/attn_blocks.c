/* attn_blocks (DESIGN.md 4.2, PAPERS.md 1.4 and 5.2): the fused hybrid block-sparse prefill.
 * Validates the attention tensors through op_check.c, then the per-head modes and the block
 * masks (u8 [n_masks, nqb, nkb]), naming the offending head, field or tensor; calls the backend. */
#include "core/error.h"
#include "core/ops/op_check.h"

#define OP "attn_blocks"

/* Checks modes[0..hq) and returns in *any_mask whether some head is MASK. */
static ela_status check_modes(const ela_head_mode *modes, int hq, int64_t n_masks,
                              int have_masks, int *any_mask) {
    *any_mask = 0;
    for (int h = 0; h < hq; h++) {
        const ela_head_mode *m = &modes[h];
        switch (m->kind) {
        case ELA_HEAD_DENSE:
            break;
        case ELA_HEAD_STREAMING:
            if (m->sink_blocks < 0)
                return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": modes[%d].sink_blocks is %d, "
                                "must be >= 0", h, m->sink_blocks);
            if (m->local_blocks < 1)
                return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": modes[%d].local_blocks is %d, "
                                "must be >= 1 (the diagonal block)", h, m->local_blocks);
            break;
        case ELA_HEAD_MASK:
            *any_mask = 1;
            if (!have_masks)
                return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": tensor masks is NULL but "
                                "modes[%d] is ELA_HEAD_MASK", h);
            if (m->mask < 0 || m->mask >= n_masks)
                return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": modes[%d].mask is %d, outside "
                                "the %lld masks of tensor masks", h, m->mask, (long long)n_masks);
            break;
        default:
            return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": modes[%d].kind is %d, not an "
                            "ela_head_kind", h, (int)m->kind);
        }
    }
    return ELA_OK;
}

ela_status ela_attn_blocks(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                           const ela_tensor *v, ela_tensor *o, ela_tensor *lse,
                           const ela_head_mode *modes, const ela_tensor *masks,
                           const ela_attn_params *params) {
    ela_attn_blocks_args a;
    ela_status st = op_check_attention(OP, be, q, k, v, o, lse, params, &a.attn);
    if (st != ELA_OK)
        return st;
    if (!a.attn.causal)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": params->causal is 0; the block-sparse "
                        "executor is causal only");
    if (a.attn.q_pos0 % ELA_BLOCK != 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": q_pos0 is %lld, must be a multiple of "
                        "the %d-token block", (long long)a.attn.q_pos0, ELA_BLOCK);
    if (!modes)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": modes is NULL (one per query head)");
    a.modes = modes;
    a.masks = masks;
    a.qb0 = a.attn.q_pos0 / ELA_BLOCK;
    a.nqb = (a.attn.L + ELA_BLOCK - 1) / ELA_BLOCK;
    a.nkb = (a.attn.n + ELA_BLOCK - 1) / ELA_BLOCK;
    int64_t n_masks = 0;
    if (masks) {
        if ((st = op_check_tensor(OP, be, masks, "masks", 3, 1u << ELA_U8,
                                  "[n_masks, nqb, nkb]")) != ELA_OK)
            return st;
        n_masks = masks->extents[0];
        int64_t want[3] = {n_masks, a.nqb, a.nkb};
        if ((st = op_check_shape(OP, "masks", masks, "[n_masks, ceil(L / 128), ceil(n / 128)]",
                                 want)) != ELA_OK)
            return st;
    }
    int any_mask;
    if ((st = check_modes(modes, a.attn.hq, n_masks, masks != NULL, &any_mask)) != ELA_OK)
        return st;
    if (!any_mask)
        a.masks = NULL; /* nothing reads it */
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_ATTN_BLOCKS, be->iface->attn_blocks != NULL, dtypes,
                               3)) != ELA_OK)
        return st;
    if (a.attn.L == 0)
        return ELA_OK;
    return be->iface->attn_blocks(be->ctx, &a);
}

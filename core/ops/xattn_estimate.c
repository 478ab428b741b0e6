/* xattn_estimate (DESIGN.md 4.3, PAPERS.md 5.1): XAttention's antidiagonal block selection.
 * Validates q, k, the head list, the stride / threshold / position parameters and the masks
 * tensor (u8 [n_heads, nqb, nkb]), naming the offending argument, then calls the backend. */
#include "core/error.h"
#include "core/ops/op_check.h"

#define OP "xattn_estimate"

ela_xattn_params ela_xattn_params_default(void) {
    ela_xattn_params p = {16, 0.9f};
    return p;
}

ela_status ela_xattn_estimate(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                              const int *heads, int n_heads, const ela_xattn_params *xparams,
                              const ela_attn_params *params, ela_tensor *masks,
                              int64_t *kept_blocks) {
    ela_xattn_estimate_args a = {0};
    ela_status st;
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": backend is NULL");
    if ((st = op_check_qk(OP, be, q, k, &a.L, &a.n, &a.d, &a.hq, &a.hkv)) != ELA_OK)
        return st;
    if (!heads)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": heads is NULL");
    if (n_heads < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": n_heads is %d, must be >= 1", n_heads);
    for (int i = 0; i < n_heads; i++)
        if (heads[i] < 0 || heads[i] >= a.hq)
            return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": heads[%d] is %d, outside the %d "
                            "query heads of q", i, heads[i], a.hq);
    ela_xattn_params xp = xparams ? *xparams : ela_xattn_params_default();
    if (xp.stride < 1 || ELA_BLOCK % xp.stride != 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": stride is %d, must divide %d", xp.stride,
                        ELA_BLOCK);
    if (!(xp.threshold > 0.0f && xp.threshold <= 1.0f))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": threshold is %g, must be in (0, 1]",
                        (double)xp.threshold);
    ela_attn_params p = params ? *params : ela_attn_params_default();
    if (!p.causal)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": params->causal is 0; the estimate is "
                        "causal only");
    if (p.q_pos0 < 0 || p.q_pos0 % ELA_BLOCK != 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": q_pos0 is %lld, must be a non-negative "
                        "multiple of %d", (long long)p.q_pos0, ELA_BLOCK);
    if ((st = op_resolve_scale(OP, p.scale, a.d, &a.scale)) != ELA_OK)
        return st;
    a.nqb = (a.L + ELA_BLOCK - 1) / ELA_BLOCK;
    a.nkb = (a.n + ELA_BLOCK - 1) / ELA_BLOCK;
    if ((st = op_check_tensor(OP, be, masks, "masks", 3, 1u << ELA_U8, "[n_heads, nqb, nkb]")) !=
        ELA_OK)
        return st;
    int64_t want[3] = {n_heads, a.nqb, a.nkb};
    if ((st = op_check_shape(OP, "masks", masks, "[n_heads, ceil(L / 128), ceil(n / 128)]",
                             want)) != ELA_OK)
        return st;
    a.q = q;
    a.k = k;
    a.q_pos0 = p.q_pos0;
    a.heads = heads;
    a.n_heads = n_heads;
    a.stride = xp.stride;
    a.threshold = xp.threshold;
    a.masks = masks;
    a.kept_blocks = kept_blocks;
    ela_dtype dtypes[2] = {q->dtype, k->dtype};
    if ((st = op_check_backend(be, ELA_OP_XATTN_ESTIMATE, be->iface->xattn_estimate != NULL,
                               dtypes, 2)) != ELA_OK)
        return st;
    if (kept_blocks)
        *kept_blocks = 0;
    if (a.L == 0)
        return ELA_OK;
    return be->iface->xattn_estimate(be->ctx, &a);
}

/* attn_nsa (DESIGN.md 4.9, PAPERS.md 4.3 steps 6-7): gated attention of SSA models over the
 * blocks chosen by ela_nsa_select, or full causal attention when blocks is NULL. Validates the
 * attention quartet, the optional i32 block lists [L, Hkv, top] and f32 gate [L, Hq], then calls
 * the backend. The block indices themselves (range, distinctness) are data: the backend checks
 * them where it reads them (the CPU backend before any output is written). */
#include <stdint.h>

#include "core/error.h"
#include "core/ops/op_check.h"

#define NSA_MAX_PARAM (1 << 20) /* as in nsa_select.c */

ela_status ela_attn_nsa(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                        const ela_tensor *v, const ela_tensor *blocks, const ela_tensor *gate,
                        ela_tensor *o, const ela_nsa_params *nparams,
                        const ela_attn_params *params) {
    static const char op[] = "attn_nsa";
    ela_status st;
    ela_attn_nsa_args a = {0};
    if ((st = op_check_attention(op, be, q, k, v, o, NULL, params, &a.attn)) != ELA_OK)
        return st;
    if (!a.attn.causal)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: causal is 0, but the op is always causal",
                        op);
    if (a.attn.q_pos0 > a.attn.n - a.attn.L)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_%s: q_pos0 + L = %lld + %lld exceeds n = %lld (k must hold the key "
                        "of every query position)", op, (long long)a.attn.q_pos0,
                        (long long)a.attn.L, (long long)a.attn.n);
    ela_nsa_params np = nparams ? *nparams : ela_nsa_params_default();
    if (np.block < 1 || np.block > NSA_MAX_PARAM)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: block is %d, must be in [1, %d]", op,
                        np.block, NSA_MAX_PARAM);
    if (np.top < 1 || np.top > NSA_MAX_PARAM)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: top is %d, must be in [1, %d]", op, np.top,
                        NSA_MAX_PARAM);
    if ((a.attn.n + np.block - 1) / np.block > INT32_MAX)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: block %d gives more blocks than an i32 index "
                        "holds for n = %lld", op, np.block, (long long)a.attn.n);
    if (blocks) {
        int64_t want[3] = {a.attn.L, a.attn.hkv, np.top};
        if ((st = op_check_tensor(op, be, blocks, "blocks", 3, 1u << ELA_I32, "[L, Hkv, top]")) !=
                ELA_OK ||
            (st = op_check_shape(op, "blocks", blocks, "[L, Hkv, top]", want)) != ELA_OK)
            return st;
    }
    if (gate) {
        int64_t want[2] = {a.attn.L, a.attn.hq};
        if ((st = op_check_tensor(op, be, gate, "gate", 2, 1u << ELA_F32, "[L, Hq]")) != ELA_OK ||
            (st = op_check_shape(op, "gate", gate, "[L, Hq]", want)) != ELA_OK)
            return st;
    }
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_ATTN_NSA, be->iface->attn_nsa != NULL, dtypes, 3)) !=
        ELA_OK)
        return st;
    if (a.attn.L == 0)
        return ELA_OK;
    a.blocks = blocks;
    a.gate = gate;
    a.block = np.block;
    a.top = np.top;
    return be->iface->attn_nsa(be->ctx, &a);
}

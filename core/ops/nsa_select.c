/* nsa_select (DESIGN.md 4.9, PAPERS.md 4.3): SSA/NSA block selection per query token and KV
 * head. Validates q/k, the i32 output [L, Hkv, top], the block parameters and the positions
 * (every query's own key must be in k), then calls the backend. */
#include <stdint.h>

#include "core/error.h"
#include "core/ops/op_check.h"

#define NSA_MAX_PARAM (1 << 20) /* block and top: far above any trained setting (16, 64) */

ela_nsa_params ela_nsa_params_default(void) {
    ela_nsa_params p = {16, 16};
    return p;
}

ela_status ela_nsa_select(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                          const ela_nsa_params *nparams, const ela_attn_params *params,
                          ela_tensor *blocks) {
    static const char op[] = "nsa_select";
    ela_status st;
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: backend is NULL", op);
    ela_nsa_select_args a = {0};
    if ((st = op_check_qk(op, be, q, k, &a.L, &a.n, &a.d, &a.hq, &a.hkv)) != ELA_OK ||
        (st = op_check_tensor(op, be, blocks, "blocks", 3, 1u << ELA_I32, "[L, Hkv, top]")) !=
            ELA_OK)
        return st;
    ela_nsa_params np = nparams ? *nparams : ela_nsa_params_default();
    if (np.block < 1 || np.block > NSA_MAX_PARAM)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: block is %d, must be in [1, %d]", op,
                        np.block, NSA_MAX_PARAM);
    if (np.top < 1 || np.top > NSA_MAX_PARAM)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: top is %d, must be in [1, %d]", op, np.top,
                        NSA_MAX_PARAM);
    if ((a.n + np.block - 1) / np.block > INT32_MAX)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: block %d gives more blocks than an i32 index "
                        "holds for n = %lld", op, np.block, (long long)a.n);
    ela_attn_params p = params ? *params : ela_attn_params_default();
    if (!p.causal)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: causal is 0, but the op is always causal",
                        op);
    if (p.q_pos0 < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: q_pos0 is %lld, must be >= 0", op,
                        (long long)p.q_pos0);
    if (p.q_pos0 > a.n - a.L)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_%s: q_pos0 + L = %lld + %lld exceeds n = %lld (k must hold the key "
                        "of every query position)", op, (long long)p.q_pos0, (long long)a.L,
                        (long long)a.n);
    if ((st = op_resolve_scale(op, p.scale, a.d, &a.scale)) != ELA_OK)
        return st;
    int64_t want[3] = {a.L, a.hkv, np.top};
    if ((st = op_check_shape(op, "blocks", blocks, "[L, Hkv, top]", want)) != ELA_OK)
        return st;
    ela_dtype dtypes[2] = {q->dtype, k->dtype};
    if ((st = op_check_backend(be, ELA_OP_NSA_SELECT, be->iface->nsa_select != NULL, dtypes, 2)) !=
        ELA_OK)
        return st;
    if (a.L == 0)
        return ELA_OK;
    a.q = q;
    a.k = k;
    a.q_pos0 = p.q_pos0;
    a.block = np.block;
    a.top = np.top;
    a.blocks = blocks;
    return be->iface->nsa_select(be->ctx, &a);
}

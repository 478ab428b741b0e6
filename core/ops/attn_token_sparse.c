/* attn_token_sparse (DESIGN.md 4.6, PAPERS.md 2.4): Token Sparse Attention's gather -> causal
 * attention on the compressed sequence -> scatter. The index lists are checked once here
 * (core/ops/token_indices.h), so backends can trust them. */
#include "core/error.h"
#include "core/ops/op_check.h"
#include "core/ops/token_indices.h"

ela_status ela_attn_token_sparse(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                                 const ela_tensor *v, const ela_tensor *idx, int64_t n_sel,
                                 ela_tensor *o, const ela_attn_params *params) {
    static const char op[] = "attn_token_sparse";
    ela_attn_token_sparse_args a;
    ela_status st = op_check_attention(op, be, q, k, v, o, NULL, params, &a.attn);
    if (st != ELA_OK)
        return st;
    if (a.attn.n != a.attn.L) {
        int64_t want[3] = {a.attn.hkv, a.attn.L, a.attn.d};
        return op_shape_mismatch(op, "k", k, "[Hkv, L, d] with q's L (the same tokens)", want);
    }
    if (a.attn.causal && a.attn.q_pos0 != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_%s: q_pos0 is %lld, must be 0 (queries and keys are the same L "
                        "tokens, indexed by idx)", op, (long long)a.attn.q_pos0);
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_ATTN_TOKEN_SPARSE, be->iface->attn_token_sparse != NULL,
                               dtypes, 3)) != ELA_OK)
        return st;
    if ((st = op_check_token_indices(op, be, idx, a.attn.hq, n_sel, a.attn.L)) != ELA_OK)
        return st;
    a.idx = idx;
    a.n_sel = n_sel;
    return be->iface->attn_token_sparse(be->ctx, &a);
}

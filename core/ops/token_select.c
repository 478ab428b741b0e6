/* token_select (DESIGN.md 4.5, PAPERS.md 2.3): Token Sparse Attention's Dynamic Token Coverage
 * selection. Validates q, k, the TSA parameters and the index output, then calls the backend,
 * which also decides the dense fallbacks (they depend on the scores). */
#include <math.h>

#include "core/error.h"
#include "core/ops/op_check.h"

ela_tsa_params ela_tsa_params_default(void) {
    ela_tsa_params p = {128, 7, 0.005f, 1024};
    return p;
}

ela_status ela_token_select(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                            const ela_tsa_params *tparams, ela_tensor *idx, int64_t *n_sel) {
    static const char op[] = "token_select";
    ela_token_select_args a;
    ela_status st;
    int64_t n;
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: backend is NULL", op);
    if ((st = op_check_qk(op, be, q, k, &a.L, &n, &a.d, &a.hq, &a.hkv)) != ELA_OK)
        return st;
    if (n != a.L) {
        int64_t want[3] = {a.hkv, a.L, a.d};
        return op_shape_mismatch(op, "k", k, "[Hkv, L, d] with q's L (the whole prompt)", want);
    }
    if (a.L > INT32_MAX)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: L = %lld does not fit the i32 tensor idx",
                        op, (long long)a.L);
    if ((st = op_check_tensor(op, be, idx, "idx", 2, 1u << ELA_I32, "[Hq, L]")) != ELA_OK)
        return st;
    int64_t want_idx[2] = {a.hq, a.L};
    if ((st = op_check_shape(op, "idx", idx, "[Hq, L]", want_idx)) != ELA_OK)
        return st;
    if (!n_sel)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: n_sel is NULL", op);

    a.p = tparams ? *tparams : ela_tsa_params_default();
    if (a.p.window < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: window is %d, must be >= 1", op,
                        a.p.window);
    if (a.p.pool < 1 || a.p.pool % 2 == 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: pool is %d, must be odd and >= 1", op,
                        a.p.pool);
    if (!(a.p.coverage >= 0.0f && a.p.coverage < 1.0f)) /* also refuses NaN */
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: coverage is %g, must be in [0, 1)", op,
                        (double)a.p.coverage);
    if (a.p.min_keep < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: min_keep is %lld, must be >= 0", op,
                        (long long)a.p.min_keep);
    if ((st = op_resolve_scale(op, 0.0f, a.d, &a.scale)) != ELA_OK)
        return st;
    a.q = q;
    a.k = k;
    a.idx = idx;
    a.n_sel = n_sel;
    ela_dtype dtypes[2] = {q->dtype, k->dtype};
    if ((st = op_check_backend(be, ELA_OP_TOKEN_SELECT, be->iface->token_select != NULL, dtypes,
                               2)) != ELA_OK)
        return st;
    return be->iface->token_select(be->ctx, &a);
}

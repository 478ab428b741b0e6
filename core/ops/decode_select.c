/* decode_select (DESIGN.md 4.7, PAPERS.md 3.2): LessIsMore's token selection for one decode
 * query. Validates q [1, Hq, d], k [Hkv, n, d], the budget parameters and the i32 index output,
 * naming the offending tensor or parameter, then calls the backend (which splits the budget as
 * ela.h states). */
#include <stdint.h>

#include "core/error.h"
#include "core/ops/op_check.h"

#define OP "decode_select"

ela_decode_select_params ela_decode_select_params_default(int64_t budget) {
    ela_decode_select_params p = {budget, 0.25f, 4};
    return p;
}

ela_status ela_decode_select(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                             const ela_decode_select_params *dparams,
                             const ela_attn_params *params, ela_tensor *idx, int64_t *count) {
    ela_status st;
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": backend is NULL");
    ela_decode_select_args a = {0};
    int64_t L = 0;
    if ((st = op_check_qk(OP, be, q, k, &L, &a.n, &a.d, &a.hq, &a.hkv)) != ELA_OK)
        return st;
    if (L != 1) {
        int64_t want[3] = {1, a.hq, a.d};
        return op_shape_mismatch(OP, "q", q, "[1, Hq, d] (one decode query)", want);
    }
    if (a.n > INT32_MAX)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": tensor k has %lld keys; i32 indices "
                        "allow at most 2^31 - 1", (long long)a.n);
    if (!dparams)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": dparams is NULL (the budget is required)");
    a.p = *dparams;
    if (a.p.budget < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": budget is %lld, must be >= 1",
                        (long long)a.p.budget);
    if (!(a.p.recent >= 0.0f && a.p.recent <= 1.0f)) /* also refuses NaN */
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": recent is %g, must be in [0, 1]",
                        (double)a.p.recent);
    if (a.p.sinks < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": sinks is %d, must be >= 0", a.p.sinks);
    /* Only the scale is used: the query is the newest token and sees all n keys. */
    ela_attn_params p = params ? *params : ela_attn_params_default();
    if ((st = op_resolve_scale(OP, p.scale, a.d, &a.scale)) != ELA_OK)
        return st;
    if ((st = op_check_tensor(OP, be, idx, "idx", 1, 1u << ELA_I32, "[>= min(budget, n)]")) != ELA_OK)
        return st;
    int64_t kb = a.p.budget < a.n ? a.p.budget : a.n;
    if (idx->extents[0] < kb) {
        int64_t want[1] = {kb};
        return op_shape_mismatch(OP, "idx", idx, "at least [min(budget, n)]", want);
    }
    if (!count)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": output count is NULL");
    a.q = q;
    a.k = k;
    a.idx = idx;
    a.count = count;
    ela_dtype dtypes[2] = {q->dtype, k->dtype};
    if ((st = op_check_backend(be, ELA_OP_DECODE_SELECT, be->iface->decode_select != NULL, dtypes,
                               2)) != ELA_OK)
        return st;
    return be->iface->decode_select(be->ctx, &a);
}

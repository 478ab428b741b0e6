/* decode_select_attend (DESIGN.md 4.1 + 4.7, PAPERS.md 3.2): a LessIsMore selection layer as one
 * op, the dense decode attention and the token selection from one pass over K. Validates like
 * attn_dense (the q/k/v/o quartet, op_check_attention) with one query row, and like
 * decode_select (budget parameters, i32 index output, count), then calls the backend. */
#include <stdint.h>

#include "core/error.h"
#include "core/ops/op_check.h"

#define OP "decode_select_attend"

ela_status ela_decode_select_attend(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                                    const ela_tensor *v, ela_tensor *o,
                                    const ela_decode_select_params *sparams,
                                    const ela_attn_params *params, ela_tensor *idx,
                                    int64_t *count) {
    ela_status st;
    ela_decode_select_attend_args a = {0};
    /* Only the scale of params counts: the query is the newest token and sees all n keys, so
     * causal or not, q_pos0 = n - 1 is the same attention. */
    ela_attn_params p = params ? *params : ela_attn_params_default();
    p.causal = 0;
    p.q_pos0 = 0;
    if ((st = op_check_attention(OP, be, q, k, v, o, NULL, &p, &a.attn)) != ELA_OK)
        return st;
    if (a.attn.L != 1) {
        int64_t want[3] = {1, a.attn.hq, a.attn.d};
        return op_shape_mismatch(OP, "q", q, "[1, Hq, d] (one decode query)", want);
    }
    a.attn.causal = 1;
    a.attn.q_pos0 = a.attn.n - 1;
    /* decode_select's checks, with the same messages */
    if (a.attn.n > INT32_MAX)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": tensor k has %lld keys; i32 indices "
                        "allow at most 2^31 - 1", (long long)a.attn.n);
    if (!sparams)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": sparams is NULL (the budget is required)");
    a.p = *sparams;
    if (a.p.budget < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": budget is %lld, must be >= 1",
                        (long long)a.p.budget);
    if (!(a.p.recent >= 0.0f && a.p.recent <= 1.0f)) /* also refuses NaN */
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": recent is %g, must be in [0, 1]",
                        (double)a.p.recent);
    if (a.p.sinks < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": sinks is %d, must be >= 0", a.p.sinks);
    if ((st = op_check_tensor(OP, be, idx, "idx", 1, 1u << ELA_I32, "[>= min(budget, n)]")) != ELA_OK)
        return st;
    int64_t kb = a.p.budget < a.attn.n ? a.p.budget : a.attn.n;
    if (idx->extents[0] < kb) {
        int64_t want[1] = {kb};
        return op_shape_mismatch(OP, "idx", idx, "at least [min(budget, n)]", want);
    }
    if (!count)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": output count is NULL");
    a.idx = idx;
    a.count = count;
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_DECODE_SELECT_ATTEND,
                               be->iface->decode_select_attend != NULL, dtypes, 3)) != ELA_OK)
        return st;
    return be->iface->decode_select_attend(be->ctx, &a);
}

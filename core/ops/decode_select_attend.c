/* decode_select_attend (DESIGN.md 4.1 + 4.7, PAPERS.md 3.2): a LessIsMore selection layer as one
 * op, the dense decode attention and the token selection from one pass over K. Validates like
 * attn_dense (the q/k/v/o quartet, op_check_attention) with one query row, and like
 * decode_select (budget parameters, i32 index output, count), then calls the backend's fused
 * kernel, or where it has none for these dtypes runs attn_dense and decode_select (which reads
 * K again): the composition lives here once, not in every backend. */
#include <stdint.h>

#include "core/error.h"
#include "core/ops/model_op_check.h"
#include "core/ops/op_check.h"
#include "core/valid_lists.h"

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
    if ((st = op_check_decode_select(OP, be, a.attn.n, sparams, "sparams", idx, count,
                                     &a.p)) != ELA_OK)
        return st;
    a.idx = idx;
    a.count = count;
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if (be->iface->decode_select_attend &&
        ela_backend_supports(be, ELA_OP_DECODE_SELECT_ATTEND, dtypes, 3)) {
        /* o written over idx would spoil the lists: no record then. */
        if ((st = be->iface->decode_select_attend(be->ctx, &a)) == ELA_OK &&
            !op_tensors_overlap(o, idx))
            valid_lists_record(idx, *count, a.attn.n);
        return st;
    }
    ela_attn_params pd = p;
    pd.causal = 1;
    pd.q_pos0 = a.attn.n - 1;
    if ((st = ela_attn_dense(be, q, k, v, o, NULL, &pd)) != ELA_OK)
        return st;
    return ela_decode_select(be, q, k, sparams, &pd, idx, count);
}

/* decode_select (DESIGN.md 4.7, PAPERS.md 3.2): LessIsMore's token selection for one decode
 * query. Validates q [1, Hq, d], k [Hkv, n, d], the budget parameters and the i32 index output,
 * naming the offending tensor or parameter, then calls the backend (which splits the budget as
 * ela.h states). */
#include <stdint.h>

#include "core/error.h"
#include "core/ops/op_check.h"
#include "core/valid_lists.h"

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
    if ((st = op_check_decode_select(OP, be, a.n, dparams, "dparams", idx, count, &a.p)) !=
        ELA_OK)
        return st;
    /* Only the scale is used: the query is the newest token and sees all n keys. */
    ela_attn_params p = params ? *params : ela_attn_params_default();
    if ((st = op_resolve_scale(OP, p.scale, a.d, &a.scale)) != ELA_OK)
        return st;
    a.q = q;
    a.k = k;
    a.idx = idx;
    a.count = count;
    ela_dtype dtypes[2] = {q->dtype, k->dtype};
    if ((st = op_check_backend(be, ELA_OP_DECODE_SELECT, be->iface->decode_select != NULL, dtypes,
                               2)) != ELA_OK)
        return st;
    if ((st = be->iface->decode_select(be->ctx, &a)) == ELA_OK)
        valid_lists_record(idx, *count, a.n);
    return st;
}

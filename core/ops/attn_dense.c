/* attn_dense (DESIGN.md 4.1): validates shapes, dtypes, strides and head ratios through the
 * shared checks of op_check.c, naming the offending tensor, then calls the backend. */
#include "core/ops/op_check.h"

ela_attn_params ela_attn_params_default(void) {
    ela_attn_params p = {1, 0, 0.0f};
    return p;
}

ela_status ela_attn_dense(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                          const ela_tensor *v, ela_tensor *o, ela_tensor *lse,
                          const ela_attn_params *params) {
    ela_attn_dense_args a;
    ela_status st = op_check_attention("attn_dense", be, q, k, v, o, lse, params, &a);
    if (st != ELA_OK)
        return st;
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_ATTN_DENSE, be->iface->attn_dense != NULL, dtypes,
                               3)) != ELA_OK)
        return st;
    if (a.L == 0)
        return ELA_OK;
    return be->iface->attn_dense(be->ctx, &a);
}

/* sigmoid_gate (ela.h "Model ops"): SSA's per-head output gate, x [M, H, d] in place times
 * sigmoid of one column of g per head. */
#include "core/error.h"
#include "core/ops/model_op_check.h"

ela_status ela_sigmoid_gate(ela_backend *be, ela_tensor *x, const ela_tensor *g, int stride,
                            int offset) {
    static const char op[] = "sigmoid_gate";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_sigmoid_gate: backend is NULL");
    ela_status st;
    if ((st = op_check_tensor(op, be, x, "x", 3, 1u << ELA_F32, "[M, H, d]")) != ELA_OK ||
        (st = op_check_tensor(op, be, g, "g", 2, 1u << ELA_F32, "[M, >= H * stride]")) != ELA_OK)
        return st;
    if (stride < 1 || offset < 0 || offset >= stride)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_sigmoid_gate: stride %d and offset %d must "
                        "satisfy 0 <= offset < stride", stride, offset);
    if (x->extents[1] > 1 << 20)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_sigmoid_gate: tensor x has %lld heads, above "
                        "2^20", (long long)x->extents[1]);
    ela_sigmoid_gate_args a = {x, g, x->extents[0], x->extents[2], (int)x->extents[1], stride,
                               offset};
    if (g->extents[0] != a.M || g->extents[1] < (int64_t)a.H * stride) {
        int64_t want[2] = {a.M, (int64_t)a.H * stride};
        return op_shape_mismatch(op, "g", g, "[M, >= H * stride] with x's M and H", want);
    }
    if ((st = op_check_alias(op, "x", x, "g", g, 0)) != ELA_OK)
        return st;
    ela_dtype dtypes[2] = {x->dtype, g->dtype};
    if ((st = op_check_backend(be, ELA_OP_SIGMOID_GATE, be->iface->sigmoid_gate != NULL, dtypes,
                               2)) != ELA_OK)
        return st;
    if (a.M == 0 || a.H == 0 || a.d == 0)
        return ELA_OK;
    return be->iface->sigmoid_gate(be->ctx, &a);
}

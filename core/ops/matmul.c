/* matmul (ela.h "Model ops"): y [M, N] = x [M, K] . w [N, K]^T (+ bias [N]), the linear layers
 * of the model. Validates dtypes, shapes, packing and aliasing, then calls the backend. */
#include "core/error.h"
#include "core/ops/model_op_check.h"

#define Q8_0_BIT (1u << ELA_Q8_0)

ela_status ela_matmul(ela_backend *be, const ela_tensor *x, const ela_tensor *w,
                      const ela_tensor *bias, ela_tensor *y) {
    static const char op[] = "matmul";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_matmul: backend is NULL");
    ela_status st;
    if ((st = op_check_tensor(op, be, x, "x", 2, 1u << ELA_F32, "[M, K]")) != ELA_OK ||
        (st = op_check_tensor(op, be, w, "w", 2, OP_FLOAT_DTYPES | Q8_0_BIT, "[N, K]")) != ELA_OK ||
        (st = op_check_tensor(op, be, y, "y", 2, 1u << ELA_F32, "[M, N]")) != ELA_OK ||
        (bias && (st = op_check_tensor(op, be, bias, "bias", 1, 1u << ELA_F32, "[N]")) != ELA_OK))
        return st;
    ela_matmul_args a = {x, w, bias, y, x->extents[0], w->extents[0], x->extents[1]};
    int64_t w_want[2] = {a.N, a.K}, y_want[2] = {a.M, a.N};
    if ((st = op_check_shape(op, "w", w, "[N, K] with x's K", w_want)) != ELA_OK ||
        (st = op_check_shape(op, "y", y, "[M, N]", y_want)) != ELA_OK ||
        (bias && (st = op_check_shape(op, "bias", bias, "[N]", &a.N)) != ELA_OK))
        return st;
    if ((st = op_check_alias(op, "y", y, "x", x, 0)) != ELA_OK ||
        (st = op_check_alias(op, "y", y, "w", w, 0)) != ELA_OK ||
        (bias && (st = op_check_alias(op, "y", y, "bias", bias, 0)) != ELA_OK))
        return st;
    ela_dtype dtypes[3] = {x->dtype, w->dtype, y->dtype};
    if ((st = op_check_backend(be, ELA_OP_MATMUL, be->iface->matmul != NULL, dtypes, 3)) != ELA_OK)
        return st;
    if (a.M == 0 || a.N == 0)
        return ELA_OK;
    return be->iface->matmul(be->ctx, &a);
}

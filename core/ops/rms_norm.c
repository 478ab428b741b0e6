/* rms_norm (ela.h "Model ops"): y = x / sqrt(mean(x^2) + eps) * w over the last dim of x, which
 * may have any rank (per-head q_norm / k_norm on [M, H, d]). Validates, then calls the backend. */
#include <math.h>

#include "core/error.h"
#include "core/ops/model_op_check.h"

ela_status ela_rms_norm(ela_backend *be, const ela_tensor *x, const ela_tensor *w, float eps,
                        ela_tensor *y) {
    static const char op[] = "rms_norm";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rms_norm: backend is NULL");
    if (!x)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rms_norm: tensor x is NULL");
    ela_status st;
    int nd = x->n_dims;
    if ((st = op_check_tensor(op, be, x, "x", nd, 1u << ELA_F32, "[..., D]")) != ELA_OK ||
        (st = op_check_tensor(op, be, y, "y", nd, 1u << ELA_F32, "like x")) != ELA_OK ||
        (st = op_check_tensor(op, be, w, "w", 1, OP_FLOAT_DTYPES, "[D]")) != ELA_OK)
        return st;
    ela_rms_norm_args a = {x, w, y, 0, x->extents[nd - 1], eps};
    if ((st = op_check_like(op, "y", y, "x", x)) != ELA_OK ||
        (st = op_check_shape(op, "w", w, "[D] with x's last extent", &a.D)) != ELA_OK)
        return st;
    if (!isfinite(eps) || eps < 0.0f)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rms_norm: eps is %g, must be finite and >= 0",
                        (double)eps);
    if ((st = op_check_alias(op, "y", y, "x", x, 1)) != ELA_OK ||
        (st = op_check_alias(op, "y", y, "w", w, 0)) != ELA_OK)
        return st;
    ela_dtype dtypes[3] = {x->dtype, w->dtype, y->dtype};
    if ((st = op_check_backend(be, ELA_OP_RMS_NORM, be->iface->rms_norm != NULL, dtypes, 3)) !=
        ELA_OK)
        return st;
    a.rows = a.D > 0 ? ela_tensor_numel(x) / a.D : 0;
    if (a.rows == 0 || a.D == 0)
        return ELA_OK;
    return be->iface->rms_norm(be->ctx, &a);
}

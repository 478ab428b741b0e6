/* silu_mul and add (ela.h "Model ops"): out = silu(gate) * up and out = a + b over f32 tensors
 * of equal extents (any rank and strides, innermost packed); out may be one of the inputs. */
#include "core/error.h"
#include "core/ops/model_op_check.h"

static ela_status binary(ela_backend *be, ela_op kind, const char *op, const char *a_name,
                         const char *b_name, const ela_tensor *a, const ela_tensor *b,
                         ela_tensor *out) {
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: backend is NULL", op);
    if (!a)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s is NULL", op, a_name);
    ela_status st;
    int nd = a->n_dims;
    if ((st = op_check_tensor(op, be, a, a_name, nd, 1u << ELA_F32, "[..., F]")) != ELA_OK ||
        (st = op_check_tensor(op, be, b, b_name, nd, 1u << ELA_F32, "[..., F]")) != ELA_OK ||
        (st = op_check_tensor(op, be, out, "out", nd, 1u << ELA_F32, "[..., F]")) != ELA_OK)
        return st;
    if ((st = op_check_like(op, b_name, b, a_name, a)) != ELA_OK ||
        (st = op_check_like(op, "out", out, a_name, a)) != ELA_OK)
        return st;
    if ((st = op_check_alias(op, "out", out, a_name, a, 1)) != ELA_OK ||
        (st = op_check_alias(op, "out", out, b_name, b, 1)) != ELA_OK)
        return st;
    ela_dtype dtypes[3] = {a->dtype, b->dtype, out->dtype};
    ela_status (*fn)(void *, const ela_binary_args *) =
        kind == ELA_OP_ADD ? be->iface->add : be->iface->silu_mul;
    if ((st = op_check_backend(be, kind, fn != NULL, dtypes, 3)) != ELA_OK)
        return st;
    ela_binary_args args = {a, b, out, ela_tensor_numel(a)};
    if (args.numel == 0)
        return ELA_OK;
    return fn(be->ctx, &args);
}

ela_status ela_silu_mul(ela_backend *be, const ela_tensor *gate, const ela_tensor *up,
                        ela_tensor *out) {
    return binary(be, ELA_OP_SILU_MUL, "silu_mul", "gate", "up", gate, up, out);
}

ela_status ela_add(ela_backend *be, const ela_tensor *a, const ela_tensor *b, ela_tensor *out) {
    return binary(be, ELA_OP_ADD, "add", "a", "b", a, b, out);
}

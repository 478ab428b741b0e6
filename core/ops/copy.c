/* copy (ela.h "Model ops"): dst = src with dtype conversion between f32/f16/bf16/q8_0 (q8_0 as
 * in ggml's quantize_row_q8_0_ref), same extents, any strides; appends keys and values to a KV
 * cache view. */
#include "core/error.h"
#include "core/ops/model_op_check.h"

#define COPY_DTYPES (OP_FLOAT_DTYPES | (1u << ELA_Q8_0))

ela_status ela_copy(ela_backend *be, const ela_tensor *src, ela_tensor *dst) {
    static const char op[] = "copy";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_copy: backend is NULL");
    if (!src)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_copy: tensor src is NULL");
    ela_status st;
    int nd = src->n_dims;
    if ((st = op_check_tensor(op, be, src, "src", nd, COPY_DTYPES, "[...]")) != ELA_OK ||
        (st = op_check_tensor(op, be, dst, "dst", nd, COPY_DTYPES, "like src")) != ELA_OK)
        return st;
    if ((st = op_check_like(op, "dst", dst, "src", src)) != ELA_OK)
        return st;
    /* dst == src (same memory and dtype) is a no-op; any other sharing is an error. */
    if ((st = op_check_alias(op, "dst", dst, "src", src, 1)) != ELA_OK)
        return st;
    ela_dtype dtypes[2] = {src->dtype, dst->dtype};
    if ((st = op_check_backend(be, ELA_OP_COPY, be->iface->copy != NULL, dtypes, 2)) != ELA_OK)
        return st;
    if (ela_tensor_numel(src) == 0 || op_tensors_overlap(dst, src)) /* empty, or dst is src */
        return ELA_OK;
    ela_copy_args a = {src, dst};
    return be->iface->copy(be->ctx, &a);
}

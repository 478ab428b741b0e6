/* Shared checks of the model ops (see model_op_check.h). */
#include "core/ops/model_op_check.h"

#include <stdio.h>

#include "core/error.h"

/* Bytes [*lo, *hi) of the buffer that t's elements touch; lo == hi when t is empty. */
static void byte_range(const ela_tensor *t, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)t->offset;
    *hi = *lo + ela_tensor_span(t);
}

int op_tensors_overlap(const ela_tensor *a, const ela_tensor *b) {
    if (!a || !b || a->buffer != b->buffer)
        return 0;
    int64_t alo, ahi, blo, bhi;
    byte_range(a, &alo, &ahi);
    byte_range(b, &blo, &bhi);
    return alo < ahi && blo < bhi && alo < bhi && blo < ahi;
}

static int same_view(const ela_tensor *a, const ela_tensor *b) {
    if (a == b)
        return 1;
    if (a->buffer != b->buffer || a->offset != b->offset || a->dtype != b->dtype ||
        a->n_dims != b->n_dims)
        return 0;
    for (int i = 0; i < a->n_dims; i++)
        if (a->extents[i] != b->extents[i] || a->strides[i] != b->strides[i])
            return 0;
    return 1;
}

ela_status op_check_alias(const char *op, const char *out_name, const ela_tensor *out,
                          const char *in_name, const ela_tensor *in, int allow_same) {
    if (allow_same && same_view(out, in))
        return ELA_OK;
    if (op_tensors_overlap(out, in))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s overlaps tensor %s in memory%s", op,
                        out_name, in_name,
                        allow_same ? " (it may be that very tensor, or separate memory)" : "");
    return ELA_OK;
}

ela_status op_check_like(const char *op, const char *name, const ela_tensor *t,
                         const char *ref_name, const ela_tensor *ref) {
    if (t->n_dims != ref->n_dims)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s has %d dims, tensor %s has %d", op,
                        name, t->n_dims, ref_name, ref->n_dims);
    char what[64];
    snprintf(what, sizeof what, "%s's extents", ref_name);
    return op_check_shape(op, name, t, what, ref->extents);
}

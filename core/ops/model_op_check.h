/* Argument checks shared by the model ops (matmul, rms_norm, rope, silu_mul, add, get_rows,
 * copy): aliasing between outputs and inputs, and tensors of any rank with equal extents.
 * Like op_check.h, every message names the op and the offending tensor. */
#ifndef ELA_CORE_OPS_MODEL_OP_CHECK_H
#define ELA_CORE_OPS_MODEL_OP_CHECK_H

#include "core/ops/op_check.h"

/* Nonzero when a and b share bytes of one buffer (judged by the byte ranges their elements
 * span, so two interleaved strided views count as overlapping). */
int op_tensors_overlap(const ela_tensor *a, const ela_tensor *b);

/* out may be `in` itself (the same memory, dtype, extents and strides) when allow_same; else it
 * must not overlap in. */
ela_status op_check_alias(const char *op, const char *out_name, const ela_tensor *out,
                          const char *in_name, const ela_tensor *in, int allow_same);

/* t has ref's rank and extents (dtype and strides may differ); the error names both. */
ela_status op_check_like(const char *op, const char *name, const ela_tensor *t,
                         const char *ref_name, const ela_tensor *ref);

#endif

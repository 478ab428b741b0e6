/* Argument checks shared by the op files in core/ops: each names the op and the offending
 * tensor in its message (DESIGN.md 6), so every op validates the same way. */
#ifndef ELA_CORE_OPS_OP_CHECK_H
#define ELA_CORE_OPS_OP_CHECK_H

#include "core/backend_iface.h"

/* t is present, lives on be, has n_dims dims, one of the dtypes in `allowed` (a bit per
 * ela_dtype, OP_FLOAT_DTYPES for f32/f16/bf16) and a packed innermost dim. `layout` names the
 * expected shape in the message, e.g. "[L, Hq, d]". */
#define OP_FLOAT_DTYPES ((1u << ELA_F32) | (1u << ELA_F16) | (1u << ELA_BF16))
/* K and V of the attention ops (a KV cache) may also be q8_0, with d a multiple of 32. */
#define OP_KV_DTYPES (OP_FLOAT_DTYPES | (1u << ELA_Q8_0))
ela_status op_check_tensor(const char *op, const ela_backend *be, const ela_tensor *t,
                           const char *name, int n_dims, unsigned allowed, const char *layout);

/* The error for a tensor whose extents are not `want` (n_dims values, as in t). */
ela_status op_shape_mismatch(const char *op, const char *name, const ela_tensor *t,
                             const char *expect, const int64_t *want);

/* Checks t has exactly the extents in want (t->n_dims values); the error names `expect`. */
ela_status op_check_shape(const char *op, const char *name, const ela_tensor *t,
                          const char *expect, const int64_t *want);

/* The attention quartet shared by attn_dense and the sparse attention ops: q, o [L, Hq, d]
 * f32/f16/bf16, k, v [Hkv, n, d] of one dtype, f32/f16/bf16 or q8_0 (OP_KV_DTYPES), optional
 * lse f32 [L, Hq], params (NULL = defaults). Fills *a with sizes and the resolved scale
 * (1/sqrt(d) when 0); q_pos0 is 0 when not causal. */
ela_status op_check_attention(const char *op, const ela_backend *be, const ela_tensor *q,
                              const ela_tensor *k, const ela_tensor *v, ela_tensor *o,
                              ela_tensor *lse, const ela_attn_params *params,
                              ela_attn_dense_args *a);

/* q [L, Hq, d] (f32/f16/bf16) and k [Hkv, n, d] (OP_KV_DTYPES) alone (selection ops): sizes
 * into the out parameters. */
ela_status op_check_qk(const char *op, const ela_backend *be, const ela_tensor *q,
                       const ela_tensor *k, int64_t *L, int64_t *n, int64_t *d, int *hq, int *hkv);

/* The backend implements the op (its iface entry is non-NULL) and accepts these dtypes; else
 * ELA_ERR_UNSUPPORTED naming backend, op and dtypes. */
ela_status op_check_backend(const ela_backend *be, ela_op op, int implemented,
                            const ela_dtype *dtypes, int n_dtypes);

/* The first `cols` entries of each of the `rows` rows of the i32 index tensor idx ([rows, >=
 * cols], or 1-D [>= cols] with rows 1) as packed host memory: in place when the backend's
 * memory is host memory, else one copy. *copy is what the caller frees (ela_free; NULL when
 * in place); *stride is the row stride in elements. */
ela_status op_host_indices(const char *op, const ela_backend *be, const ela_tensor *idx,
                           int64_t rows, int64_t cols, const int32_t **host, int64_t *stride,
                           int32_t **copy);

/* LessIsMore's selection arguments (decode_select, decode_select_attend): n fits i32 indices,
 * params (named `params_name` in messages) present with budget >= 1, recent in [0, 1],
 * sinks >= 0; idx i32 [>= min(budget, n)]; count not NULL. Copies params to *out. */
ela_status op_check_decode_select(const char *op, const ela_backend *be, int64_t n,
                                  const ela_decode_select_params *params, const char *params_name,
                                  const ela_tensor *idx, const int64_t *count,
                                  ela_decode_select_params *out);

/* scale resolved: 0 means 1/sqrt(d); a non-finite scale is an error. */
ela_status op_resolve_scale(const char *op, float scale, int64_t d, float *out);

#endif

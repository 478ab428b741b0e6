/* Argument checks shared by every op in core/ops (see op_check.h). */
#include "op_check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/valid_lists.h"

static const char *const op_names[ELA_OP_COUNT] = {
    "attn_dense",   "attn_blocks",   "xattn_estimate", "router_eval", "token_select",
    "attn_token_sparse", "decode_select", "attn_gather", "nsa_select", "attn_nsa",
    "matmul",       "rms_norm",      "rope",           "silu_mul",    "add",
    "get_rows",     "copy",          "decode_select_attend",
};

const char *ela_op_name(ela_op op) {
    return (int)op >= 0 && op < ELA_OP_COUNT ? op_names[op] : "?";
}

ela_status op_check_tensor(const char *op, const ela_backend *be, const ela_tensor *t,
                           const char *name, int n_dims, unsigned allowed, const char *layout) {
    if (!t)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s is NULL", op, name);
    if (t->buffer->backend != be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s lives on backend '%s', not on '%s'",
                        op, name, t->buffer->backend->name, be->name);
    /* The op may write t: whatever was known of the index lists under it no longer holds. */
    valid_lists_forget(t);
    if (t->n_dims != n_dims)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s has %d dims, expected %d %s", op,
                        name, t->n_dims, n_dims, layout);
    if ((int)t->dtype < 0 || t->dtype >= ELA_DTYPE_COUNT || !(allowed & (1u << t->dtype)))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s has unsupported dtype %s", op, name,
                        ela_dtype_name(t->dtype));
    /* Packed: consecutive elements, or for block dtypes (q8_0) consecutive blocks. */
    size_t unit = ela_dtype_row_bytes(t->dtype, ela_dtype_block(t->dtype));
    if (t->strides[n_dims - 1] != (int64_t)unit)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_%s: tensor %s must be packed in its last dim (stride %lld bytes, "
                        "expected %zu)", op, name, (long long)t->strides[n_dims - 1], unit);
    return ELA_OK;
}

/* "[a, b, c]" of n values into buf. */
static const char *format_dims(char *buf, size_t size, const int64_t *x, int n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "[", (long long)x[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

ela_status op_shape_mismatch(const char *op, const char *name, const ela_tensor *t,
                             const char *expect, const int64_t *want) {
    char got_s[128], want_s[128];
    return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s is %s, expected %s = %s", op, name,
                    format_dims(got_s, sizeof got_s, t->extents, t->n_dims), expect,
                    format_dims(want_s, sizeof want_s, want, t->n_dims));
}

ela_status op_check_shape(const char *op, const char *name, const ela_tensor *t,
                          const char *expect, const int64_t *want) {
    for (int i = 0; i < t->n_dims; i++)
        if (t->extents[i] != want[i])
            return op_shape_mismatch(op, name, t, expect, want);
    return ELA_OK;
}

ela_status op_resolve_scale(const char *op, float scale, int64_t d, float *out) {
    if (!isfinite(scale))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: scale is not finite", op);
    *out = scale == 0.0f ? 1.0f / sqrtf((float)d) : scale;
    return ELA_OK;
}

/* q and o are activations: a q8_0 one gets a message that says where q8_0 is accepted. */
static ela_status check_activation(const char *op, const ela_backend *be, const ela_tensor *t,
                                   const char *name) {
    if (t && t->dtype == ELA_Q8_0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s is q8_0; q8_0 is accepted for k "
                        "and v only (a quantized KV cache), %s must be f32, f16 or bf16", op, name,
                        name);
    return op_check_tensor(op, be, t, name, 3, OP_FLOAT_DTYPES, "[L, Hq, d]");
}

ela_status op_check_qk(const char *op, const ela_backend *be, const ela_tensor *q,
                       const ela_tensor *k, int64_t *L, int64_t *n, int64_t *d, int *hq, int *hkv) {
    ela_status st;
    if ((st = check_activation(op, be, q, "q")) != ELA_OK ||
        (st = op_check_tensor(op, be, k, "k", 3, OP_KV_DTYPES, "[Hkv, n, d]")) != ELA_OK)
        return st;
    if (q->extents[1] > 1 << 20 || k->extents[0] > 1 << 20)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: head count above 2^20", op);
    *L = q->extents[0];
    *hq = (int)q->extents[1];
    *d = q->extents[2];
    *hkv = (int)k->extents[0];
    *n = k->extents[1];
    if (*hq < 1 || *d < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor q [%lld, %d, %lld] has no heads or zero "
                        "head dim", op, (long long)*L, *hq, (long long)*d);
    if (*hkv < 1 || *n < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor k [%d, %lld, %lld] has no KV heads or "
                        "no keys (n >= 1 is required)", op, *hkv, (long long)*n,
                        (long long)k->extents[2]);
    if (k->extents[2] != *d) {
        int64_t want[3] = {*hkv, *n, *d};
        return op_shape_mismatch(op, "k", k, "[Hkv, n, d] with q's d", want);
    }
    if (*hq % *hkv != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_%s: tensor q has %d heads, not a multiple of k's %d KV heads", op, *hq,
                        *hkv);
    /* Tensors keep q8_0 rows whole blocks (tensor.c), so this holds for any k that exists; the
     * kernels rely on it, hence the check where they are called. */
    if (k->dtype == ELA_Q8_0 && *d % ELA_Q8_0_BLOCK != 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor k is q8_0 with head dim d = %lld, "
                        "not a multiple of the q8_0 block of %d", op, (long long)*d,
                        ELA_Q8_0_BLOCK);
    return ELA_OK;
}

ela_status op_check_attention(const char *op, const ela_backend *be, const ela_tensor *q,
                              const ela_tensor *k, const ela_tensor *v, ela_tensor *o,
                              ela_tensor *lse, const ela_attn_params *params,
                              ela_attn_dense_args *a) {
    ela_status st;
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: backend is NULL", op);
    if ((st = check_activation(op, be, q, "q")) != ELA_OK ||
        (st = op_check_tensor(op, be, k, "k", 3, OP_KV_DTYPES, "[Hkv, n, d]")) != ELA_OK ||
        (st = op_check_tensor(op, be, v, "v", 3, OP_KV_DTYPES, "[Hkv, n, d]")) != ELA_OK ||
        (st = check_activation(op, be, o, "o")) != ELA_OK ||
        (lse && (st = op_check_tensor(op, be, lse, "lse", 2, 1u << ELA_F32, "[L, Hq]")) != ELA_OK))
        return st;
    ela_attn_params p = params ? *params : ela_attn_params_default();
    ela_attn_dense_args args = {q, k, v, o, lse, 0, 0, 0, 0, 0, p.causal != 0, p.q_pos0, p.scale};
    if ((st = op_check_qk(op, be, q, k, &args.L, &args.n, &args.d, &args.hq, &args.hkv)) != ELA_OK)
        return st;
    int64_t kv_shape[3] = {args.hkv, args.n, args.d}, q_shape[3] = {args.L, args.hq, args.d};
    if ((st = op_check_shape(op, "v", v, "k's shape", kv_shape)) != ELA_OK ||
        (st = op_check_shape(op, "o", o, "q's shape", q_shape)) != ELA_OK ||
        (lse && (st = op_check_shape(op, "lse", lse, "[L, Hq]", q_shape)) != ELA_OK))
        return st;
    if (k->dtype != v->dtype)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensors k (%s) and v (%s) must have the same "
                        "dtype", op, ela_dtype_name(k->dtype), ela_dtype_name(v->dtype));
    if (args.causal && args.q_pos0 < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: q_pos0 is %lld, must be >= 0", op,
                        (long long)args.q_pos0);
    if (!args.causal)
        args.q_pos0 = 0;
    if ((st = op_resolve_scale(op, args.scale, args.d, &args.scale)) != ELA_OK)
        return st;
    *a = args;
    return ELA_OK;
}

ela_status op_check_backend(const ela_backend *be, ela_op op, int implemented,
                            const ela_dtype *dtypes, int n_dtypes) {
    if (!implemented)
        return ela_fail(ELA_ERR_UNSUPPORTED, "backend '%s' does not implement %s", be->name,
                        ela_op_name(op));
    if (be->iface->supports && !be->iface->supports(be->ctx, op, dtypes, n_dtypes)) {
        char list[96] = "";
        size_t used = 0;
        for (int i = 0; i < n_dtypes && used < sizeof list; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? "/" : "",
                                     ela_dtype_name(dtypes[i]));
        return ela_fail(ELA_ERR_UNSUPPORTED, "backend '%s' cannot run %s with dtypes %s", be->name,
                        ela_op_name(op), list);
    }
    return ELA_OK;
}

ela_status op_host_indices(const char *op, const ela_backend *be, const ela_tensor *idx,
                           int64_t rows, int64_t cols, const int32_t **host, int64_t *stride,
                           int32_t **copy) {
    *copy = NULL;
    *host = NULL;
    *stride = idx->n_dims == 2 ? idx->strides[0] / (int64_t)sizeof(int32_t) : cols;
    if (rows == 0 || cols == 0)
        return ELA_OK;
    void *base = be->iface->buffer_host_ptr ? be->iface->buffer_host_ptr(be->ctx, idx->buffer->handle)
                                            : NULL;
    if (base && (idx->n_dims == 1 || idx->strides[0] % (int64_t)sizeof(int32_t) == 0)) {
        *host = (const int32_t *)(const void *)((const char *)base + idx->offset);
        return ELA_OK;
    }
    int64_t ext[2] = {rows, cols};
    ela_tensor *view = NULL;
    ela_status st = idx->n_dims == 2 ? ela_tensor_view(idx, 2, ext, idx->strides, 0, &view)
                                     : ela_tensor_view(idx, 1, &ext[1], NULL, 0, &view);
    if (st != ELA_OK)
        return st;
    *copy = ela_calloc((size_t)(rows * cols), sizeof(int32_t));
    if (!*copy) {
        ela_tensor_free(view);
        return ela_fail(ELA_ERR_OOM, "ela_%s: out of host memory to check tensor idx", op);
    }
    st = ela_tensor_read(view, *copy, (size_t)(rows * cols) * sizeof(int32_t));
    ela_tensor_free(view);
    if (st != ELA_OK) {
        ela_free(*copy);
        *copy = NULL;
        return st;
    }
    *host = *copy;
    *stride = cols;
    return ELA_OK;
}

ela_status op_check_decode_select(const char *op, const ela_backend *be, int64_t n,
                                  const ela_decode_select_params *params, const char *params_name,
                                  const ela_tensor *idx, const int64_t *count,
                                  ela_decode_select_params *out) {
    if (n > INT32_MAX)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor k has %lld keys; i32 indices allow "
                        "at most 2^31 - 1", op, (long long)n);
    if (!params)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: %s is NULL (the budget is required)", op,
                        params_name);
    if (params->budget < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: budget is %lld, must be >= 1", op,
                        (long long)params->budget);
    if (!(params->recent >= 0.0f && params->recent <= 1.0f)) /* also refuses NaN */
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: recent is %g, must be in [0, 1]", op,
                        (double)params->recent);
    if (params->sinks < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: sinks is %d, must be >= 0", op,
                        params->sinks);
    ela_status st = op_check_tensor(op, be, idx, "idx", 1, 1u << ELA_I32, "[>= min(budget, n)]");
    if (st != ELA_OK)
        return st;
    int64_t kb = params->budget < n ? params->budget : n;
    if (idx->extents[0] < kb) {
        int64_t want[1] = {kb};
        return op_shape_mismatch(op, "idx", idx, "at least [min(budget, n)]", want);
    }
    if (!count)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: output count is NULL", op);
    *out = *params;
    return ELA_OK;
}

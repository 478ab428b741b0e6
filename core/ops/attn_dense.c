/* attn_dense (DESIGN.md 4.1): validates shapes, dtypes, strides and head ratios, naming the
 * offending tensor, then hands the checked arguments to the backend. */
#include <math.h>
#include <stddef.h>

#include "core/backend_iface.h"
#include "core/error.h"

ela_attn_params ela_attn_params_default(void) {
    ela_attn_params p = {1, 0, 0.0f};
    return p;
}

static int is_float_dtype(ela_dtype t) { return t == ELA_F32 || t == ELA_F16 || t == ELA_BF16; }

/* Common checks of one tensor argument: present, on this backend, rank, packed innermost dim. */
static ela_status check_tensor(const ela_backend *be, const ela_tensor *t, const char *name,
                               int n_dims, const char *layout) {
    if (!t)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: tensor %s is NULL", name);
    if (t->buffer->backend != be)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_attn_dense: tensor %s lives on backend '%s', not on '%s'", name,
                        t->buffer->backend->name, be->name);
    if (t->n_dims != n_dims)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: tensor %s has %d dims, expected %d %s",
                        name, t->n_dims, n_dims, layout);
    if (!is_float_dtype(t->dtype))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: tensor %s has unsupported dtype %s",
                        name, ela_dtype_name(t->dtype));
    if (t->strides[n_dims - 1] != (int64_t)ela_dtype_size(t->dtype))
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_attn_dense: tensor %s must be packed in its last dim (stride %lld bytes, "
                        "expected %zu)", name, (long long)t->strides[n_dims - 1],
                        ela_dtype_size(t->dtype));
    return ELA_OK;
}

static ela_status shape_mismatch(const char *name, const ela_tensor *t, const char *expect,
                                 int64_t a, int64_t b, int64_t c) {
    if (t->n_dims == 2)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_attn_dense: tensor %s is [%lld, %lld], expected %s = [%lld, %lld]", name,
                        (long long)t->extents[0], (long long)t->extents[1], expect, (long long)a,
                        (long long)b);
    return ela_fail(ELA_ERR_INVALID_ARG,
                    "ela_attn_dense: tensor %s is [%lld, %lld, %lld], expected %s = [%lld, %lld, %lld]",
                    name, (long long)t->extents[0], (long long)t->extents[1],
                    (long long)t->extents[2], expect, (long long)a, (long long)b, (long long)c);
}

ela_status ela_attn_dense(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                          const ela_tensor *v, ela_tensor *o, ela_tensor *lse,
                          const ela_attn_params *params) {
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: backend is NULL");
    ela_status st;
    if ((st = check_tensor(be, q, "q", 3, "[L, Hq, d]")) != ELA_OK ||
        (st = check_tensor(be, k, "k", 3, "[Hkv, n, d]")) != ELA_OK ||
        (st = check_tensor(be, v, "v", 3, "[Hkv, n, d]")) != ELA_OK ||
        (st = check_tensor(be, o, "o", 3, "[L, Hq, d]")) != ELA_OK ||
        (lse && (st = check_tensor(be, lse, "lse", 2, "[L, Hq]")) != ELA_OK))
        return st;
    ela_attn_params p = params ? *params : ela_attn_params_default();

    ela_attn_dense_args a = {q, k, v, o, lse, 0, 0, 0, 0, 0, p.causal != 0, p.q_pos0, p.scale};
    a.L = q->extents[0];
    a.d = q->extents[2];
    a.hkv = (int)k->extents[0];
    a.n = k->extents[1];
    if (q->extents[1] > 1 << 20 || k->extents[0] > 1 << 20)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: head count above 2^20");
    a.hq = (int)q->extents[1];
    if (a.hq < 1 || a.d < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: tensor q [%lld, %d, %lld] has no heads "
                        "or zero head dim", (long long)a.L, a.hq, (long long)a.d);
    if (a.hkv < 1 || a.n < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: tensor k [%d, %lld, %lld] has no KV "
                        "heads or no keys (n >= 1 is required)", a.hkv, (long long)a.n,
                        (long long)k->extents[2]);
    if (k->extents[2] != a.d)
        return shape_mismatch("k", k, "[Hkv, n, d] with q's d", a.hkv, a.n, a.d);
    if (v->extents[0] != a.hkv || v->extents[1] != a.n || v->extents[2] != a.d)
        return shape_mismatch("v", v, "k's shape", a.hkv, a.n, a.d);
    if (a.hq % a.hkv != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_attn_dense: tensor q has %d heads, not a multiple of k's %d KV heads",
                        a.hq, a.hkv);
    if (o->extents[0] != a.L || o->extents[1] != a.hq || o->extents[2] != a.d)
        return shape_mismatch("o", o, "q's shape", a.L, a.hq, a.d);
    if (lse && (lse->extents[0] != a.L || lse->extents[1] != a.hq))
        return shape_mismatch("lse", lse, "[L, Hq]", a.L, a.hq, 0);
    if (lse && lse->dtype != ELA_F32)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: tensor lse has dtype %s, expected f32",
                        ela_dtype_name(lse->dtype));
    if (k->dtype != v->dtype)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_attn_dense: tensors k (%s) and v (%s) must have the same dtype",
                        ela_dtype_name(k->dtype), ela_dtype_name(v->dtype));
    if (a.causal && a.q_pos0 < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: q_pos0 is %lld, must be >= 0",
                        (long long)a.q_pos0);
    if (!a.causal)
        a.q_pos0 = 0;
    if (!isfinite(a.scale))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_attn_dense: scale is not finite");
    if (a.scale == 0.0f)
        a.scale = 1.0f / sqrtf((float)a.d);

    if (!be->iface->attn_dense)
        return ela_fail(ELA_ERR_UNSUPPORTED, "backend '%s' does not implement attn_dense", be->name);
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if (be->iface->supports && !be->iface->supports(be->ctx, ELA_OP_ATTN_DENSE, dtypes, 3))
        return ela_fail(ELA_ERR_UNSUPPORTED, "backend '%s' cannot run attn_dense with q %s, k/v %s, o %s",
                        be->name, ela_dtype_name(q->dtype), ela_dtype_name(k->dtype),
                        ela_dtype_name(o->dtype));
    if (a.L == 0)
        return ELA_OK;
    return be->iface->attn_dense(be->ctx, &a);
}

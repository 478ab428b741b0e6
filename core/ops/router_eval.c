/* router_eval (DESIGN.md 4.4, PAPERS.md 1.3): Elastic Attention's per-layer router. Validates
 * k_pre [Hkv, L, d] and every one of the ten weight tensors (PyTorch Linear layout, hidden width
 * read from task_w1), naming the offending tensor, then calls the backend. */
#include "core/error.h"
#include "core/ops/op_check.h"

#define OP "router_eval"

/* One weight: present, on be, float dtype, 2-D [rows, cols] or (cols == 0) 1-D [rows]. */
static ela_status check_weight(const ela_backend *be, const ela_tensor *t, const char *name,
                               int64_t rows, int64_t cols, const char *expect) {
    ela_status st;
    int n_dims = cols > 0 ? 2 : 1;
    if ((st = op_check_tensor(OP, be, t, name, n_dims, OP_FLOAT_DTYPES, expect)) != ELA_OK)
        return st;
    int64_t want[2] = {rows, cols};
    return op_check_shape(OP, name, t, expect, want);
}

ela_status ela_router_eval(ela_backend *be, const ela_tensor *k_pre,
                           const ela_router_weights *w, int *full, float *logits) {
    ela_status st;
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": backend is NULL");
    if ((st = op_check_tensor(OP, be, k_pre, "k_pre", 3, OP_FLOAT_DTYPES, "[Hkv, L, d]")) != ELA_OK)
        return st;
    if (!w)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": weights is NULL");
    if (!full)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_" OP ": output full is NULL");
    ela_router_eval_args a = {k_pre, k_pre->extents[1], k_pre->extents[2], 0,
                              (int)k_pre->extents[0], *w, full, logits};
    if (k_pre->extents[0] < 1 || k_pre->extents[0] > 1 << 20 || a.L < 1 || a.d < 1)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_" OP ": tensor k_pre [%lld, %lld, %lld] needs 1 to 2^20 KV heads, "
                        "L >= 1 tokens and d >= 1",
                        (long long)k_pre->extents[0], (long long)a.L, (long long)a.d);

    /* The hidden width comes from task_w1's first dim; every other weight must agree. */
    if ((st = op_check_tensor(OP, be, w->task_w1, "task_w1", 2, OP_FLOAT_DTYPES, "[h, d]")) != ELA_OK)
        return st;
    a.hidden = w->task_w1->extents[0];
    if (a.hidden < 1) {
        int64_t want[2] = {1, a.d};
        return op_shape_mismatch(OP, "task_w1", w->task_w1, "[h >= 1, d]", want);
    }
    const int64_t d = a.d, h = a.hidden;
    if ((st = check_weight(be, w->task_w1, "task_w1", h, d, "[h, d]")) != ELA_OK ||
        (st = check_weight(be, w->task_b1, "task_b1", h, 0, "[h]")) != ELA_OK ||
        (st = check_weight(be, w->task_w2, "task_w2", d, h, "[d, h]")) != ELA_OK ||
        (st = check_weight(be, w->task_b2, "task_b2", d, 0, "[d]")) != ELA_OK ||
        (st = check_weight(be, w->route_w1, "route_w1", h, d, "[h, d]")) != ELA_OK ||
        (st = check_weight(be, w->route_b1, "route_b1", h, 0, "[h]")) != ELA_OK ||
        (st = check_weight(be, w->route_w2, "route_w2", d, h, "[d, h]")) != ELA_OK ||
        (st = check_weight(be, w->route_b2, "route_b2", d, 0, "[d]")) != ELA_OK ||
        (st = check_weight(be, w->route_w3, "route_w3", 2, d, "[2, d]")) != ELA_OK ||
        (st = check_weight(be, w->route_b3, "route_b3", 2, 0, "[2]")) != ELA_OK)
        return st;

    ela_dtype dtypes[11] = {k_pre->dtype,        w->task_w1->dtype,  w->task_b1->dtype,
                            w->task_w2->dtype,   w->task_b2->dtype,  w->route_w1->dtype,
                            w->route_b1->dtype,  w->route_w2->dtype, w->route_b2->dtype,
                            w->route_w3->dtype,  w->route_b3->dtype};
    if ((st = op_check_backend(be, ELA_OP_ROUTER_EVAL, be->iface->router_eval != NULL, dtypes,
                               11)) != ELA_OK)
        return st;
    return be->iface->router_eval(be->ctx, &a);
}

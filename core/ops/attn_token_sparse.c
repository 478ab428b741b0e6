/* attn_token_sparse (DESIGN.md 4.6, PAPERS.md 2.4): Token Sparse Attention's gather -> causal
 * attention on the compressed sequence -> scatter. Validates the attention tensors and the index
 * lists' contents here, once for every backend, so backends can trust idx: each row must be
 * strictly ascending (sorted, distinct) and inside [0, L). */
#include <stdint.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/ops/op_check.h"

/* Row h of idx (n_sel entries, i32) is strictly ascending in [0, L). */
static ela_status check_row(const char *op, const int32_t *row, int h, int64_t n_sel, int64_t L) {
    int64_t prev = -1;
    for (int64_t i = 0; i < n_sel; i++) {
        int64_t x = row[i];
        if (x < 0 || x >= L)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_%s: tensor idx[%d, %lld] = %lld is outside [0, L = %lld)", op, h,
                            (long long)i, (long long)x, (long long)L);
        if (x <= prev)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_%s: tensor idx row %d is not strictly ascending at column %lld "
                            "(%lld after %lld): indices must be sorted and distinct", op, h,
                            (long long)i, (long long)x, (long long)prev);
        prev = x;
    }
    return ELA_OK;
}

/* Reads idx's first n_sel columns on the host: in place when the backend's memory is host memory
 * (the CPU), else through one copy (the selection ops' callers read n_sel back anyway, so the
 * transfer adds no synchronisation a TSA layer did not already have). */
static ela_status check_indices(const char *op, const ela_backend *be, const ela_tensor *idx,
                                int hq, int64_t n_sel, int64_t L) {
    if (n_sel == 0)
        return ELA_OK;
    void *host = be->iface->buffer_host_ptr ? be->iface->buffer_host_ptr(be->ctx,
                                                                       idx->buffer->handle)
                                            : NULL;
    if (host) {
        const char *base = (const char *)host + idx->offset;
        for (int h = 0; h < hq; h++) {
            const int32_t *row = (const int32_t *)(const void *)(base + h * idx->strides[0]);
            ela_status st = check_row(op, row, h, n_sel, L);
            if (st != ELA_OK)
                return st;
        }
        return ELA_OK;
    }
    /* A device tensor: copy a view of the used columns. */
    int64_t ext[2] = {hq, n_sel};
    ela_tensor *view = NULL;
    int32_t *rows = NULL;
    ela_status st = ela_tensor_view(idx, 2, ext, idx->strides, 0, &view);
    if (st != ELA_OK)
        return st;
    rows = ela_calloc((size_t)hq * (size_t)n_sel, sizeof *rows);
    if (!rows) {
        st = ela_fail(ELA_ERR_OOM, "ela_%s: out of host memory to check tensor idx", op);
        goto done;
    }
    if ((st = ela_tensor_read(view, rows, (size_t)hq * (size_t)n_sel * sizeof *rows)) != ELA_OK)
        goto done;
    for (int h = 0; h < hq && st == ELA_OK; h++)
        st = check_row(op, rows + (int64_t)h * n_sel, h, n_sel, L);
done:
    ela_free(rows);
    ela_tensor_free(view);
    return st;
}

ela_status ela_attn_token_sparse(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                                 const ela_tensor *v, const ela_tensor *idx, int64_t n_sel,
                                 ela_tensor *o, const ela_attn_params *params) {
    static const char op[] = "attn_token_sparse";
    ela_attn_token_sparse_args a;
    ela_status st = op_check_attention(op, be, q, k, v, o, NULL, params, &a.attn);
    if (st != ELA_OK)
        return st;
    if (a.attn.n != a.attn.L) {
        int64_t want[3] = {a.attn.hkv, a.attn.L, a.attn.d};
        return op_shape_mismatch(op, "k", k, "[Hkv, L, d] with q's L (the same tokens)", want);
    }
    if (a.attn.causal && a.attn.q_pos0 != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_%s: q_pos0 is %lld, must be 0 (queries and keys are the same L "
                        "tokens, indexed by idx)", op, (long long)a.attn.q_pos0);
    if ((st = op_check_tensor(op, be, idx, "idx", 2, 1u << ELA_I32, "[Hq, >= n_sel]")) != ELA_OK)
        return st;
    if (n_sel < 0 || n_sel > a.attn.L)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: n_sel is %lld, must be in [0, L = %lld]", op,
                        (long long)n_sel, (long long)a.attn.L);
    if (idx->extents[0] != a.attn.hq || idx->extents[1] < n_sel) {
        int64_t want[2] = {a.attn.hq, n_sel};
        return op_shape_mismatch(op, "idx", idx, "[Hq, >= n_sel]", want);
    }
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_ATTN_TOKEN_SPARSE, be->iface->attn_token_sparse != NULL,
                               dtypes, 3)) != ELA_OK)
        return st;
    if ((st = check_indices(op, be, idx, a.attn.hq, n_sel, a.attn.L)) != ELA_OK)
        return st;
    a.idx = idx;
    a.n_sel = n_sel;
    return be->iface->attn_token_sparse(be->ctx, &a);
}

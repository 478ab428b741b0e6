/* attn_gather (DESIGN.md 4.8): attention of each query over the keys listed in an index set,
 * shared by all heads ([m]) or one per KV head ([Hkv, m]), as LessIsMore's sparse layers and any
 * top-k decode use it. The indices are checked here once for every backend: inside [0, n) and
 * distinct (any order); on the host, unless they are device memory that decode_select wrote and
 * nothing touched since (core/valid_lists.h): reading them back would stall the GPU per layer. */
#include <stdint.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/ops/model_op_check.h"
#include "core/ops/op_check.h"
#include "core/valid_lists.h"

/* Every row of the host index lists is in [0, n) and distinct (a bitmap of n bits per row). */
static ela_status check_lists(const char *op, const int32_t *lists, int64_t stride, int64_t rows,
                              int64_t m, int64_t n) {
    uint8_t *seen = ela_calloc((size_t)(n + 7) / 8, 1);
    if (!seen)
        return ela_fail(ELA_ERR_OOM, "ela_%s: out of host memory to check tensor idx", op);
    ela_status st = ELA_OK;
    for (int64_t r = 0; r < rows && st == ELA_OK; r++) {
        const int32_t *row = lists + r * stride;
        for (int64_t i = 0; i < m && st == ELA_OK; i++) {
            int64_t x = row[i];
            if (x < 0 || x >= n)
                st = ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor idx[%lld, %lld] = %lld is outside "
                              "[0, n = %lld)", op, (long long)r, (long long)i, (long long)x,
                              (long long)n);
            else if (seen[x >> 3] & (1u << (x & 7)))
                st = ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor idx row %lld lists key %lld twice",
                              op, (long long)r, (long long)x);
            else
                seen[x >> 3] |= (uint8_t)(1u << (x & 7));
        }
        for (int64_t i = 0; i < m; i++) /* clear only what was set */
            if (row[i] >= 0 && row[i] < n)
                seen[row[i] >> 3] = 0;
    }
    ela_free(seen);
    return st;
}

ela_status ela_attn_gather(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                           const ela_tensor *v, const ela_tensor *idx, ela_tensor *o,
                           ela_tensor *lse, const ela_attn_params *params) {
    static const char op[] = "attn_gather";
    /* A copy: the checks below forget the record, as they would for any op taking idx. */
    ela_valid_lists known = {0, 0, 0};
    if (idx && idx->buffer)
        known = idx->buffer->valid;
    ela_attn_gather_args a;
    ela_status st = op_check_attention(op, be, q, k, v, o, lse, params, &a.attn);
    if (st != ELA_OK)
        return st;
    if (!idx)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor idx is NULL", op);
    a.per_head = idx->n_dims == 2;
    if ((st = op_check_tensor(op, be, idx, "idx", a.per_head ? 2 : 1, 1u << ELA_I32,
                              "[m] or [Hkv, m]")) != ELA_OK)
        return st;
    a.idx = idx;
    a.m = idx->extents[idx->n_dims - 1];
    if (a.per_head && idx->extents[0] != a.attn.hkv) {
        int64_t want[2] = {a.attn.hkv, a.m};
        return op_shape_mismatch(op, "idx", idx, "[Hkv, m]", want);
    }
    ela_dtype dtypes[3] = {q->dtype, k->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_ATTN_GATHER, be->iface->attn_gather != NULL, dtypes,
                               3)) != ELA_OK)
        return st;
    int on_device = !be->iface->buffer_host_ptr ||
                    !be->iface->buffer_host_ptr(be->ctx, idx->buffer->handle);
    if (!(on_device && valid_lists_cover(&known, idx, a.m, a.attn.n))) {
        const int32_t *lists;
        int32_t *copy;
        int64_t stride, rows = a.per_head ? a.attn.hkv : 1;
        if ((st = op_host_indices(op, be, idx, rows, a.m, &lists, &stride, &copy)) != ELA_OK)
            return st;
        st = a.m > 0 ? check_lists(op, lists, stride, rows, a.m, a.attn.n) : ELA_OK;
        ela_free(copy);
        if (st != ELA_OK)
            return st;
        known.offset = idx->offset;
        known.count = a.m;
        known.n = a.attn.n;
    }
    /* Only o and lse are written: the lists stay valid unless they share bytes. */
    if (!a.per_head && !op_tensors_overlap(o, idx) && !op_tensors_overlap(lse, idx))
        idx->buffer->valid = known;
    return a.attn.L == 0 ? ELA_OK : be->iface->attn_gather(be->ctx, &a);
}

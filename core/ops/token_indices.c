/* Checks of Token Sparse Attention's index lists (core/ops/token_indices.h). */
#include "core/ops/token_indices.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/ops/op_check.h"

/* Row h of idx (n_sel entries) is strictly ascending in [0, L). */
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

ela_status op_check_token_indices(const char *op, const ela_backend *be, const ela_tensor *idx,
                                  int hq, int64_t n_sel, int64_t L) {
    ela_status st = op_check_tensor(op, be, idx, "idx", 2, 1u << ELA_I32, "[Hq, >= n_sel]");
    if (st != ELA_OK)
        return st;
    if (n_sel < 0 || n_sel > L)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: n_sel is %lld, must be in [0, L = %lld]", op,
                        (long long)n_sel, (long long)L);
    if (idx->extents[0] != hq || idx->extents[1] < n_sel) {
        int64_t want[2] = {hq, n_sel};
        return op_shape_mismatch(op, "idx", idx, "[Hq, >= n_sel]", want);
    }
    if (n_sel == 0)
        return ELA_OK;
    const int32_t *rows = NULL;
    int32_t *copy = NULL;
    int64_t stride = 0;
    if ((st = op_host_indices(op, be, idx, hq, n_sel, &rows, &stride, &copy)) != ELA_OK)
        return st;
    for (int h = 0; h < hq && st == ELA_OK; h++)
        st = check_row(op, rows + (int64_t)h * stride, h, n_sel, L);
    ela_free(copy);
    return st;
}

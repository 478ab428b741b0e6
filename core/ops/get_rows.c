/* get_rows (ela.h "Model ops"): out [M, D] f32 = table [V, D] rows ids[M] (the token
 * embedding). Every id is checked against V on the host before the backend runs; the runtime's
 * entry skips reading them back (it checked them before writing them). */
#include "core/alloc.h"
#include "core/error.h"
#include "core/ops/model_op_check.h"
#include "core/ops/runtime_ops.h"

/* check_ids: read the ids back and check them (the public op); 0 for the runtime, which checked
 * them on the host before writing them (core/ops/runtime_ops.h). */
static ela_status get_rows_run(ela_backend *be, const ela_tensor *table, const ela_tensor *ids,
                               ela_tensor *out, int check_ids) {
    static const char op[] = "get_rows";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_get_rows: backend is NULL");
    ela_status st;
    if ((st = op_check_tensor(op, be, table, "table", 2, OP_FLOAT_DTYPES | (1u << ELA_Q8_0),
                              "[V, D]")) != ELA_OK ||
        (st = op_check_tensor(op, be, ids, "ids", 1, 1u << ELA_I32, "[M]")) != ELA_OK ||
        (st = op_check_tensor(op, be, out, "out", 2, 1u << ELA_F32, "[M, D]")) != ELA_OK)
        return st;
    ela_get_rows_args a = {table, ids, out, table->extents[0], table->extents[1], ids->extents[0]};
    int64_t want[2] = {a.M, a.D};
    if ((st = op_check_shape(op, "out", out, "[M, D] with ids' M and table's D", want)) != ELA_OK)
        return st;
    if ((st = op_check_alias(op, "out", out, "table", table, 0)) != ELA_OK ||
        (st = op_check_alias(op, "out", out, "ids", ids, 0)) != ELA_OK)
        return st;
    ela_dtype dtypes[3] = {table->dtype, ids->dtype, out->dtype};
    if ((st = op_check_backend(be, ELA_OP_GET_ROWS, be->iface->get_rows != NULL, dtypes, 3)) !=
        ELA_OK)
        return st;
    if (a.M == 0)
        return ELA_OK;
    if (!check_ids)
        return be->iface->get_rows(be->ctx, &a);
    const int32_t *id = NULL;
    int32_t *copy = NULL;
    int64_t stride = 0;
    if ((st = op_host_indices(op, be, ids, 1, a.M, &id, &stride, &copy)) != ELA_OK)
        return st;
    for (int64_t m = 0; m < a.M; m++)
        if (id[m] < 0 || id[m] >= a.V) {
            st = ela_fail(ELA_ERR_INVALID_ARG, "ela_get_rows: tensor ids[%lld] is %d, outside the "
                          "table's [0, %lld)", (long long)m, (int)id[m], (long long)a.V);
            break;
        }
    ela_free(copy);
    if (st != ELA_OK)
        return st;
    return be->iface->get_rows(be->ctx, &a);
}

ela_status ela_get_rows(ela_backend *be, const ela_tensor *table, const ela_tensor *ids,
                        ela_tensor *out) {
    return get_rows_run(be, table, ids, out, 1);
}

ela_status op_get_rows_host_checked(ela_backend *be, const ela_tensor *table,
                                    const ela_tensor *ids, ela_tensor *out) {
    return get_rows_run(be, table, ids, out, 0);
}

/* Vulkan backend: get_rows (ela.h "Model ops", the token embedding), the host side of
 * shaders/get_rows.comp. The ids stay on the device (the core checked them), so a table wider
 * than one binding (a 151936 x 896 f16 embedding is 272 MB, lavapipe binds 128 MiB) is bound in
 * pieces of whole rows, one dispatch per piece, each writing the rows whose id it holds. */
#include <string.h>

#include "vk_model.h"

/* Mirrors `Push` in shaders/get_rows.comp. */
typedef struct {
    uint32_t t_off, t_s, ids_off, o_off, o_s, D, r0, r1, total;
} gr_push;

ela_status vk_get_rows(void *vctx, const ela_get_rows_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "get_rows";
    const uint64_t V = (uint64_t)a->V, D = (uint64_t)a->D, total = (uint64_t)a->M * D;
    const uint64_t ts = (uint64_t)a->table->strides[0];
    const uint64_t row = a->table->dtype == ELA_Q8_0 ? D / 32 * 34 : D * vk_mt_unit(a->table->dtype);
    if (total > UINT32_MAX || V > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: get_rows: sizes exceed 32-bit indices");
    if (total == 0)
        return ELA_OK;
    const uint64_t limit = vk_mt_bind_limit(ctx);
    uint64_t piece = row > limit ? 0 : ts ? (limit - row) / ts + 1 : V;
    if (piece == 0)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: get_rows: one row of table (%llu bytes) "
                       "exceeds %s's largest binding", (unsigned long long)row,
                       ctx->phys->info.name);
    vk_mt_bind bi, bo;
    ela_status st;
    if ((st = vk_mt_bind_tensor(ctx, a->ids, op, "ids", &bi)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->out, op, "out", &bo)) != ELA_OK)
        return st;
    const uint32_t spec[2] = {VK_MT_WG, vk_mt_code(a->table->dtype)};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "get_rows", spec, 2, &pipe)) != ELA_OK)
        return st;
    for (uint64_t r0 = 0; r0 < V; r0 += piece) {
        const uint64_t r1 = V - r0 < piece ? V : r0 + piece;
        vk_mt_bind bt;
        if ((st = vk_mt_bind_range(ctx, a->table, r0 * ts, (r1 - 1) * ts + row, op, "table",
                                   &bt)) != ELA_OK)
            return st;
        gr_push push = {bt.byte, (uint32_t)ts, bi.byte / 4, bo.byte / 4,
                        (uint32_t)(a->out->strides[0] / 4), (uint32_t)D, (uint32_t)r0,
                        (uint32_t)r1, (uint32_t)total};
        VkDescriptorBufferInfo infos[VK_BINDINGS] = {bt.info, bi.info, {0}, bo.info};
        if ((st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push,
                                 vk_mt_groups(ctx, total, VK_MT_WG), 1)) != ELA_OK)
            return st;
    }
    return vk_op_done(ctx, op);
}

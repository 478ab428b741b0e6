/* Vulkan backend: rms_norm (ela.h "Model ops"), the host side of shaders/rms_norm.comp: x as rows
 * of its last dim (any rank up to 4, strided), a workgroup per row sized to the row (a power of
 * 2 from 32 to 256 invocations). Activations fit a binding; a tensor that does not is refused
 * by name. */
#include <string.h>

#include "vk_model.h"

/* Mirrors `Push` in shaders/rms_norm.comp. */
typedef struct {
    uint32_t x_off, y_off, e1, e2, xs0, xs1, xs2, ys0, ys1, ys2, w_off, D, rows;
    float eps;
} rms_push;

ela_status vk_rms_norm(void *vctx, const ela_rms_norm_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "rms_norm";
    if (a->rows > UINT32_MAX || a->D > UINT32_MAX / 4)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: rms_norm: %lld rows of %lld exceed 32-bit "
                       "indices", (long long)a->rows, (long long)a->D);
    vk_mt_bind bx, by, bw;
    ela_status st;
    if ((st = vk_mt_bind_tensor(ctx, a->x, op, "x", &bx)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->y, op, "y", &by)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->w, op, "w", &bw)) != ELA_OK)
        return st;
    vk_mt_rows rx, ry;
    vk_mt_rows_of(a->x, &rx);
    vk_mt_rows_of(a->y, &ry);
    uint32_t wg = 32;
    while (wg < 256 && wg < (uint64_t)a->D)
        wg *= 2;
    const uint32_t spec[2] = {wg, vk_mt_code(a->w->dtype)};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "rms_norm", spec, 2, &pipe)) != ELA_OK)
        return st;
    rms_push push = {bx.byte / 4, by.byte / 4, rx.e1, rx.e2,
                     (uint32_t)(rx.s[0] / 4), (uint32_t)(rx.s[1] / 4), (uint32_t)(rx.s[2] / 4),
                     (uint32_t)(ry.s[0] / 4), (uint32_t)(ry.s[1] / 4), (uint32_t)(ry.s[2] / 4),
                     bw.byte / (uint32_t)vk_mt_unit(a->w->dtype), (uint32_t)a->D,
                     (uint32_t)a->rows, a->eps};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bx.info, bw.info, {0}, by.info};
    if ((st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push,
                             vk_mt_groups(ctx, (uint64_t)a->rows, 1), 1)) != ELA_OK)
        return st;
    return vk_op_done(ctx, op);
}

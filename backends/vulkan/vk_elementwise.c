/* Vulkan backend: silu_mul and add (ela.h "Model ops"), the host side of
 * shaders/elementwise.comp: a, b and out as rows of their last dim (any rank up to 4, each its
 * own strides), one element per invocation. Activations fit a binding; a tensor that does not is
 * refused by name. */
#include "vk_model.h"

/* Mirrors `Push` in shaders/elementwise.comp. */
typedef struct {
    uint32_t a_off, b_off, o_off, inner, e1, e2;
    uint32_t as[3], bs[3], os[3];
    uint32_t total;
} ew_push;

static ela_status binary(vk_ctx *ctx, const ela_binary_args *a, uint32_t kind, const char *op) {
    if (a->numel > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: %s: %lld elements exceed 32-bit indices", op,
                       (long long)a->numel);
    vk_mt_bind ba, bb, bo;
    ela_status st;
    if ((st = vk_mt_bind_tensor(ctx, a->a, op, kind ? "gate" : "a", &ba)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->b, op, kind ? "up" : "b", &bb)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->out, op, "out", &bo)) != ELA_OK)
        return st;
    vk_mt_rows ra, rb, ro;
    vk_mt_rows_of(a->a, &ra);
    vk_mt_rows_of(a->b, &rb);
    vk_mt_rows_of(a->out, &ro);
    ew_push push;
    push.a_off = ba.byte / 4;
    push.b_off = bb.byte / 4;
    push.o_off = bo.byte / 4;
    push.inner = (uint32_t)a->a->extents[a->a->n_dims - 1];
    push.e1 = ra.e1;
    push.e2 = ra.e2;
    for (int i = 0; i < 3; i++) {
        push.as[i] = (uint32_t)(ra.s[i] / 4);
        push.bs[i] = (uint32_t)(rb.s[i] / 4);
        push.os[i] = (uint32_t)(ro.s[i] / 4);
    }
    push.total = (uint32_t)a->numel;
    const uint32_t spec[2] = {VK_MT_WG, kind};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "elementwise", spec, 2, &pipe)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {ba.info, bb.info, {0}, bo.info};
    if ((st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push,
                             vk_mt_groups(ctx, (uint64_t)a->numel, VK_MT_WG), 1)) != ELA_OK)
        return st;
    return vk_op_done(ctx, op);
}

ela_status vk_silu_mul(void *ctx, const ela_binary_args *a) {
    return binary(ctx, a, 1, "silu_mul");
}

ela_status vk_add(void *ctx, const ela_binary_args *a) { return binary(ctx, a, 0, "add"); }

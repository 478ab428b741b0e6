/* Vulkan backend: sigmoid_gate (ela.h "Model ops", SSA's output gate), the host side of
 * shaders/sigmoid_gate.comp: x [M, H, d] in place, one element per invocation. */
#include "vk_model.h"

/* Mirrors `Push` in shaders/sigmoid_gate.comp. */
typedef struct {
    uint32_t x_off, xs0, xs1, g_off, gs0, H, d, stride, offset, total;
} gate_push;

ela_status vk_sigmoid_gate(void *vctx, const ela_sigmoid_gate_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "sigmoid_gate";
    const uint64_t total = (uint64_t)a->M * (uint64_t)a->H * (uint64_t)a->d;
    if (total > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: sigmoid_gate: %llu elements exceed 32-bit "
                       "indices", (unsigned long long)total);
    vk_mt_bind bx, bg;
    ela_status st;
    if ((st = vk_mt_bind_tensor(ctx, a->x, op, "x", &bx)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->g, op, "g", &bg)) != ELA_OK)
        return st;
    gate_push push = {bx.byte / 4, (uint32_t)(a->x->strides[0] / 4),
                      (uint32_t)(a->x->strides[1] / 4), bg.byte / 4,
                      (uint32_t)(a->g->strides[0] / 4), (uint32_t)a->H, (uint32_t)a->d,
                      (uint32_t)a->stride, (uint32_t)a->offset, (uint32_t)total};
    const uint32_t spec[1] = {VK_MT_WG};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "sigmoid_gate", spec, 1, &pipe)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bx.info, bg.info};
    if ((st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push,
                             vk_mt_groups(ctx, total, VK_MT_WG), 1)) != ELA_OK)
        return st;
    return vk_op_done(ctx, op);
}

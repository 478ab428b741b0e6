/* Vulkan backend: the cooperative-matrix accumulator layout check (shaders/cm_layout.comp),
 * run once when a device with NV cooperative matrices opens. The tensor-core attention shaders
 * (attn_cm_tile.glsl) reduce a row's max and sum over the four lanes of a quad in registers;
 * VK_NV_cooperative_matrix leaves the layout to the implementation, so where the check fails
 * attention takes the FMA shaders instead (vk_ctx.cm_quad = 0). */
#include "vk_model.h"

ela_status vk_cm_layout_check(vk_ctx *ctx) {
    ctx->cm_quad = 0;
    if (!ctx->coopmat)
        return ELA_OK;
    VkPipeline pipe;
    void *handle = NULL;
    uint32_t result[2] = {0, 0}, push = 0, no_spec[1] = {0};
    ela_status st = vk_pipeline_get(ctx, "cm_layout", no_spec, 0, &pipe);
    if (st == ELA_OK)
        st = vk_buffer_alloc(ctx, sizeof result, &handle);
    if (st == ELA_OK) {
        vk_buffer *b = handle;
        VkDescriptorBufferInfo infos[VK_BINDINGS] = {{b->buf, 0, sizeof result}};
        if ((st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push, 1, 1)) == ELA_OK &&
            (st = vk_op_done(ctx, "cm_layout")) == ELA_OK)
            st = vk_buffer_read(ctx, handle, 0, result, sizeof result);
    }
    vk_buffer_free(ctx, handle);
    ctx->cm_quad = st == ELA_OK && result[0] == 1 && result[1] == 8;
    return st;
}

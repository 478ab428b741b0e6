/* Vulkan backend: the command stream. Ops and uploads only record into one command buffer, each
 * as a group ordered after the previous one by a full compute/transfer barrier; the buffer is
 * submitted and waited for when the host needs results (a read, a mapped write, a free, the
 * staging buffer or descriptor pool running out) or at ela_backend_synchronize. So a sequence
 * of ops costs one submission, and a returned op has not necessarily run yet. */
#include <stdio.h>
#include <string.h>

#include "vk_backend.h"

static const VkPipelineStageFlags all_stages =
    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;

static void full_barrier(vk_ctx *ctx) {
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                       VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    vkf.CmdPipelineBarrier(ctx->cmd, all_stages, all_stages, 0, 1, &mb, 0, NULL, 0, NULL);
}

static ela_status begin(vk_ctx *ctx) {
    if (ctx->recording)
        return ELA_OK;
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    VkResult r = vkf.BeginCommandBuffer(ctx->cmd, &bi);
    if (r != VK_SUCCESS)
        return vk_fail_result(r, "vkBeginCommandBuffer");
    ctx->recording = 1;
    ctx->groups = 0;
    vk_profile_batch_begin(ctx);
    return ELA_OK;
}

static ela_status group_begin(vk_ctx *ctx) {
    ela_status st = begin(ctx);
    if (st != ELA_OK)
        return st;
    if (ctx->groups > 0)
        full_barrier(ctx);
    ctx->groups++;
    return ELA_OK;
}

ela_status vk_copies_close(vk_ctx *ctx) {
    if (ctx->n_copies == 0)
        return ELA_OK;
    ela_status st = group_begin(ctx);
    if (st != ELA_OK)
        return st;
    vkf.CmdCopyBuffer(ctx->cmd, ctx->staging.buf, ctx->copy_dst, (uint32_t)ctx->n_copies,
                      ctx->copies);
    vk_profile_mark_copy(ctx);
    ctx->n_copies = 0;
    return ELA_OK;
}

ela_status vk_group_begin(vk_ctx *ctx) {
    ela_status st = vk_copies_close(ctx); /* pending uploads come first */
    return st != ELA_OK ? st : group_begin(ctx);
}

void vk_group_barrier(vk_ctx *ctx) { full_barrier(ctx); }

ela_status vk_validation_check(vk_ctx *ctx, const char *when) {
    char msg[512];
    uint64_t n = vk_validation_errors(msg, sizeof msg);
    if (n == ctx->validation_seen)
        return ELA_OK;
    uint64_t fresh = n - ctx->validation_seen;
    ctx->validation_seen = n;
    return vk_fail(ELA_ERR_BACKEND, "vulkan: %llu validation error%s while %s; last: %s",
                   (unsigned long long)fresh, fresh == 1 ? "" : "s", when, msg);
}

ela_status vk_flush(vk_ctx *ctx) {
    ela_status st = vk_copies_close(ctx);
    if (st != ELA_OK || !ctx->recording)
        return st;
    /* Make the results visible to host reads of mapped memory after the fence. */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkf.CmdPipelineBarrier(ctx->cmd, all_stages, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0,
                           NULL);
    ctx->recording = 0;
    VkResult r = vkf.EndCommandBuffer(ctx->cmd);
    if (r == VK_SUCCESS) {
        VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO};
        si.commandBufferCount = 1;
        si.pCommandBuffers = &ctx->cmd;
        r = vkf.QueueSubmit(ctx->queue, 1, &si, ctx->fence);
        if (r == VK_SUCCESS) {
            r = vkf.WaitForFences(ctx->dev, 1, &ctx->fence, VK_TRUE, UINT64_MAX);
            vkf.ResetFences(ctx->dev, 1, &ctx->fence);
            if (r == VK_SUCCESS)
                vk_profile_collect(ctx);
        }
    }
    /* Whatever happened, start the next batch from a clean state. */
    vkf.ResetCommandBuffer(ctx->cmd, 0);
    vkf.ResetDescriptorPool(ctx->dev, ctx->desc_pool, 0);
    ctx->sets_used = 0;
    ctx->staging_used = 0;
    ctx->scratch_used = 0;
    ctx->groups = 0;
    if (r != VK_SUCCESS)
        return vk_fail_result(r, r == VK_ERROR_DEVICE_LOST ? "the device was lost running the "
                                                             "submitted ops" : "submitting ops");
    return vk_validation_check(ctx, "running the submitted ops");
}

ela_status vk_synchronize(void *vctx) { return vk_flush(vctx); }

ela_status vk_op_reserve(vk_ctx *ctx, VkDeviceSize scratch_bytes, VkDescriptorSet *set,
                         VkDeviceSize *scratch_off) {
    ela_status st;
    VkDeviceSize need = (scratch_bytes + ctx->align - 1) / ctx->align * ctx->align;
    if (ctx->sets_used == VK_MAX_SETS || ctx->scratch_used + need > ctx->scratch.size) {
        if ((st = vk_flush(ctx)) != ELA_OK)
            return st;
    }
    if (need > ctx->scratch.size) {
        /* Nothing is in flight after the flush: grow to the next power of two. */
        VkDeviceSize size = ctx->scratch.size;
        while (size < need)
            size *= 2;
        vk_buffer bigger;
        if ((st = vk_buffer_create(ctx, size, ctx->mem_device, 0, &bigger)) != ELA_OK)
            return st;
        vk_buffer_destroy(ctx, &ctx->scratch);
        ctx->scratch = bigger;
    }
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = ctx->desc_pool;
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &ctx->set_layout;
    VkResult r = vkf.AllocateDescriptorSets(ctx->dev, &ai, set);
    if (r != VK_SUCCESS)
        return vk_fail_result(r, "vkAllocateDescriptorSets");
    ctx->sets_used++;
    *scratch_off = ctx->scratch_used;
    ctx->scratch_used += need;
    ctx->generation++;
    return ELA_OK;
}

ela_status vk_op_done(vk_ctx *ctx, const char *op) {
    char when[64];
    snprintf(when, sizeof when, "recording %s", op);
    return vk_validation_check(ctx, when);
}

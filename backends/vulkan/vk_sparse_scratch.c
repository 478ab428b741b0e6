/* Vulkan backend: what the sparse op encoders share (vk_sparse.h). An op's small inputs that
 * have no binding of their own (work lists built on the host, block masks, index lists) go into
 * its scratch range: host data through the staging buffer, tensors by a device copy recorded in
 * the stream, so nothing waits for the device. */
#include <stdio.h>
#include <string.h>

#include "vk_sparse.h"

VkDeviceSize vk_scratch_tensor_plan(vk_ctx *ctx, const ela_tensor *t, VkDeviceSize at,
                                    vk_scratch_tensor *out) {
    (void)ctx;
    const vk_buffer *b = t->buffer->handle;
    size_t es = vk_dtype_size(t->dtype);
    uint64_t span = es;
    for (int i = 0; i < t->n_dims; i++)
        span += t->extents[i] > 0 ? (uint64_t)(t->extents[i] - 1) * (uint64_t)t->strides[i] : 0;
    /* Whole words around the tensor, inside its buffer (buffers are multiples of 16 bytes). */
    VkDeviceSize lo = (VkDeviceSize)t->offset & ~(VkDeviceSize)3;
    VkDeviceSize hi = ((VkDeviceSize)t->offset + span + 3) & ~(VkDeviceSize)3;
    if (hi > b->size)
        hi = b->size;
    memset(out, 0, sizeof *out);
    out->copy.src = b->buf;
    out->copy.src_off = lo;
    out->copy.dst_off = at;
    out->copy.bytes = hi - lo;
    out->elem = (uint32_t)((at + ((VkDeviceSize)t->offset - lo)) / es);
    for (int i = 0; i < 4; i++) {
        int used = i < t->n_dims && t->extents[i] > 1;
        out->stride[i] = used ? (uint32_t)(t->strides[i] / (int64_t)es) : 0u;
    }
    return (hi - lo + 15) & ~(VkDeviceSize)15;
}

ela_status vk_sparse_begin(vk_ctx *ctx, VkDeviceSize scratch_bytes, const void *host,
                           VkDeviceSize host_bytes, const vk_scratch_copy *copies, int n_copies,
                           VkDescriptorSet *set, VkDeviceSize *scratch_off) {
    ela_status st;
    VkDeviceSize host_room = (host_bytes + 15) & ~(VkDeviceSize)15;
    if (host_room > ctx->staging.size)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: a work list of %llu bytes exceeds the %llu-byte "
                       "staging buffer", (unsigned long long)host_bytes,
                       (unsigned long long)ctx->staging.size);
    if (host_room > ctx->staging.size - ctx->staging_used && (st = vk_flush(ctx)) != ELA_OK)
        return st;
    /* May flush too, which only frees staging. */
    if ((st = vk_op_reserve(ctx, scratch_bytes, set, scratch_off)) != ELA_OK)
        return st;
    if ((st = vk_copies_close(ctx)) != ELA_OK) /* its regions lie below staging_used */
        return st;
    VkDeviceSize src = ctx->staging_used;
    if (host_bytes > 0) {
        memcpy((char *)ctx->staging.map + src, host, (size_t)host_bytes);
        ctx->staging_used += host_room;
    }
    if ((st = vk_group_begin(ctx)) != ELA_OK)
        return st;
    int copied = 0;
    if (host_bytes > 0) {
        VkBufferCopy c = {src, *scratch_off, host_bytes};
        vkf.CmdCopyBuffer(ctx->cmd, ctx->staging.buf, ctx->scratch.buf, 1, &c);
        copied = 1;
    }
    for (int i = 0; i < n_copies; i++) {
        if (copies[i].bytes == 0)
            continue;
        VkBufferCopy c = {copies[i].src_off, *scratch_off + copies[i].dst_off, copies[i].bytes};
        vkf.CmdCopyBuffer(ctx->cmd, copies[i].src, ctx->scratch.buf, 1, &c);
        copied = 1;
    }
    if (copied) {
        vk_profile_mark_copy(ctx);
        vk_group_barrier(ctx);
    }
    return ELA_OK;
}

ela_status vk_sparse_readback(vk_ctx *ctx, VkDeviceSize off, VkDeviceSize bytes,
                              const void **host) {
    ela_status st;
    if (bytes > ctx->staging.size)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: a readback of %llu bytes exceeds the staging "
                       "buffer", (unsigned long long)bytes);
    /* Staging is only free once everything recorded so far (uploads included) has run. */
    if ((st = vk_flush(ctx)) != ELA_OK)
        return st;
    if ((st = vk_group_begin(ctx)) != ELA_OK)
        return st;
    VkBufferCopy c = {off, 0, bytes};
    vkf.CmdCopyBuffer(ctx->cmd, ctx->scratch.buf, ctx->staging.buf, 1, &c);
    vk_profile_mark_copy(ctx);
    ctx->generation++; /* staging no longer holds a readback window */
    ctx->win_buf = NULL;
    if ((st = vk_flush(ctx)) != ELA_OK)
        return st;
    *host = ctx->staging.map;
    return ELA_OK;
}

void vk_sparse_dispatch(vk_ctx *ctx, vk_attn_push *push, uint32_t count, uint32_t y, uint32_t z) {
    uint32_t max_x = ctx->phys->props.limits.maxComputeWorkGroupCount[0];
    for (uint32_t base = 0; base < count; base += max_x) {
        push->base = base;
        vkf.CmdPushConstants(ctx->cmd, ctx->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof *push,
                             push);
        vkf.CmdDispatch(ctx->cmd, count - base < max_x ? count - base : max_x, y, z);
        vk_profile_mark(ctx);
    }
}

const char *vk_variant(const vk_ctx *ctx, const char *base, int has_sg, int has_16, char *buf,
                       size_t size) {
    int sg = has_sg && ctx->subgroup, s16 = has_16 && ctx->storage16;
    snprintf(buf, size, "%s%s%s%s", base, sg || s16 ? "_" : "", sg ? "sg" : "", s16 ? "16" : "");
    return buf;
}

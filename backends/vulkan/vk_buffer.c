/* Vulkan backend: buffers and host transfers. One VkBuffer with its own memory per ela buffer.
 * On UMA devices (every device-local memory type host-visible and coherent: integrated GPUs,
 * lavapipe) buffers stay mapped and transfers are memcpy after the command stream is drained.
 * Otherwise uploads go through a staging buffer as batched copies recorded into the stream
 * (no wait), and readbacks copy a window of up to the staging size around the request, so the
 * core's row-by-row reads of a strided tensor cost one submit, not one per row. */
#include <stdlib.h>
#include <string.h>

#include "vk_backend.h"

ela_status vk_buffer_create(vk_ctx *ctx, VkDeviceSize bytes, uint32_t mem_type, int map,
                            vk_buffer *out) {
    memset(out, 0, sizeof *out);
    /* Round up so 16-bit tensors read and written as 32-bit words never leave the buffer. */
    VkDeviceSize size = (bytes + 15) & ~(VkDeviceSize)15;
    if (size == 0)
        size = 16;
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bci.size = size;
    bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    VkResult r = vkf.CreateBuffer(ctx->dev, &bci, NULL, &out->buf);
    if (r != VK_SUCCESS)
        return vk_fail_result(r, "vkCreateBuffer");
    VkMemoryRequirements req;
    vkf.GetBufferMemoryRequirements(ctx->dev, out->buf, &req);
    if (!(req.memoryTypeBits & (1u << mem_type))) {
        vk_buffer_destroy(ctx, out);
        return vk_fail(ELA_ERR_BACKEND, "vulkan: storage buffers cannot live in memory type %u",
                       mem_type);
    }
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    mai.allocationSize = req.size;
    mai.memoryTypeIndex = mem_type;
    if ((r = vkf.AllocateMemory(ctx->dev, &mai, NULL, &out->mem)) != VK_SUCCESS) {
        vk_buffer_destroy(ctx, out);
        return vk_fail_result(r, "vkAllocateMemory");
    }
    if ((r = vkf.BindBufferMemory(ctx->dev, out->buf, out->mem, 0)) != VK_SUCCESS) {
        vk_buffer_destroy(ctx, out);
        return vk_fail_result(r, "vkBindBufferMemory");
    }
    if (map) {
        if ((r = vkf.MapMemory(ctx->dev, out->mem, 0, VK_WHOLE_SIZE, 0, &out->map)) != VK_SUCCESS) {
            vk_buffer_destroy(ctx, out);
            return vk_fail_result(r, "vkMapMemory");
        }
    }
    out->size = size;
    return ELA_OK;
}

void vk_buffer_destroy(vk_ctx *ctx, vk_buffer *b) {
    if (b->map)
        vkf.UnmapMemory(ctx->dev, b->mem);
    if (b->buf)
        vkf.DestroyBuffer(ctx->dev, b->buf, NULL);
    if (b->mem)
        vkf.FreeMemory(ctx->dev, b->mem, NULL);
    memset(b, 0, sizeof *b);
}

ela_status vk_buffer_alloc(void *vctx, size_t bytes, void **handle) {
    vk_ctx *ctx = vctx;
    if (bytes > ctx->phys->max_alloc)
        return vk_fail(ELA_ERR_UNSUPPORTED,
                       "vulkan: a buffer of %zu bytes exceeds %s's largest allocation "
                       "(maxMemoryAllocationSize %llu bytes)", bytes, ctx->phys->info.name,
                       (unsigned long long)ctx->phys->max_alloc);
    vk_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return vk_fail(ELA_ERR_OOM, "vulkan: out of host memory");
    ela_status st = vk_buffer_create(ctx, bytes, ctx->mem_device, ctx->uma, b);
    if (st != ELA_OK) {
        free(b);
        return st;
    }
    *handle = b;
    return ELA_OK;
}

void vk_buffer_free(void *vctx, void *handle) {
    vk_ctx *ctx = vctx;
    vk_buffer *b = handle;
    if (!b)
        return;
    /* Recorded commands may still use it; the core has no way to hear an error here, and a
     * failed flush leaves nothing in flight either. */
    if (ctx->recording || ctx->n_copies)
        vk_flush(ctx);
    if (ctx->win_buf == b)
        ctx->win_buf = NULL;
    vk_buffer_destroy(ctx, b);
    free(b);
}

void *vk_buffer_host_ptr(void *ctx, void *handle) {
    (void)ctx;
    (void)handle;
    return NULL; /* device memory: the core goes through write/read, which order with the stream */
}

ela_status vk_buffer_write(void *vctx, void *handle, size_t offset, const void *src, size_t bytes) {
    vk_ctx *ctx = vctx;
    vk_buffer *b = handle;
    if (offset > b->size || bytes > b->size - offset)
        return vk_fail(ELA_ERR_INTERNAL, "vulkan: write of %zu bytes at %zu past a %llu-byte "
                       "buffer", bytes, offset, (unsigned long long)b->size);
    if (bytes == 0)
        return ELA_OK;
    ctx->generation++;
    if (b->map) {
        if (ctx->recording || ctx->n_copies) { /* recorded work may read or write it */
            ela_status st = vk_flush(ctx);
            if (st != ELA_OK)
                return st;
        }
        memcpy((char *)b->map + offset, src, bytes);
        return ELA_OK;
    }
    const char *s = src;
    while (bytes > 0) {
        VkDeviceSize room = ctx->staging.size - ctx->staging_used;
        if (room < 16) {
            ela_status st = vk_flush(ctx);
            if (st != ELA_OK)
                return st;
            continue;
        }
        size_t chunk = bytes < room ? bytes : (size_t)room;
        /* A region overlapping the batch (e.g. a view written after its base was filled) or
         * another destination starts a new batch, so copies land in call order. */
        int overlap = ctx->n_copies && offset < ctx->copy_hi && offset + chunk > ctx->copy_lo;
        if (ctx->n_copies && (ctx->copy_dst != b->buf || overlap ||
                              ctx->n_copies == VK_MAX_COPY_REGIONS)) {
            ela_status st = vk_copies_close(ctx);
            if (st != ELA_OK)
                return st;
        }
        memcpy((char *)ctx->staging.map + ctx->staging_used, s, chunk);
        VkBufferCopy *c = &ctx->copies[ctx->n_copies++];
        c->srcOffset = ctx->staging_used;
        c->dstOffset = offset;
        c->size = chunk;
        if (ctx->n_copies == 1) {
            ctx->copy_dst = b->buf;
            ctx->copy_lo = offset;
            ctx->copy_hi = offset + chunk;
        } else {
            if (offset < ctx->copy_lo)
                ctx->copy_lo = offset;
            if (offset + chunk > ctx->copy_hi)
                ctx->copy_hi = offset + chunk;
        }
        /* Keep staging offsets 16-byte aligned for the next region. */
        ctx->staging_used = (ctx->staging_used + chunk + 15) & ~(VkDeviceSize)15;
        if (ctx->staging_used > ctx->staging.size)
            ctx->staging_used = ctx->staging.size;
        s += chunk;
        offset += chunk;
        bytes -= chunk;
    }
    return ELA_OK;
}

ela_status vk_buffer_read(void *vctx, void *handle, size_t offset, void *dst, size_t bytes) {
    vk_ctx *ctx = vctx;
    vk_buffer *b = handle;
    if (offset > b->size || bytes > b->size - offset)
        return vk_fail(ELA_ERR_INTERNAL, "vulkan: read of %zu bytes at %zu past a %llu-byte buffer",
                       bytes, offset, (unsigned long long)b->size);
    if (bytes == 0)
        return ELA_OK;
    ela_status st;
    if (b->map) {
        if ((ctx->recording || ctx->n_copies) && (st = vk_flush(ctx)) != ELA_OK)
            return st;
        memcpy(dst, (const char *)b->map + offset, bytes);
        return ELA_OK;
    }
    char *d = dst;
    while (bytes > 0) {
        if (ctx->win_buf == b && ctx->win_gen == ctx->generation && offset >= ctx->win_off &&
            offset < ctx->win_off + ctx->win_len) {
            size_t have = (size_t)(ctx->win_off + ctx->win_len - offset);
            size_t n = bytes < have ? bytes : have;
            memcpy(d, (const char *)ctx->staging.map + (offset - ctx->win_off), n);
            d += n;
            offset += n;
            bytes -= n;
            continue;
        }
        /* Drain the stream (pending uploads use the staging buffer), then copy a window
         * starting at the request into staging. */
        if ((ctx->recording || ctx->n_copies) && (st = vk_flush(ctx)) != ELA_OK)
            return st;
        VkDeviceSize len = b->size - offset;
        if (len > ctx->staging.size)
            len = ctx->staging.size;
        if ((st = vk_group_begin(ctx)) != ELA_OK)
            return st;
        VkBufferCopy c = {offset, 0, len};
        vkf.CmdCopyBuffer(ctx->cmd, b->buf, ctx->staging.buf, 1, &c);
        vk_profile_mark_copy(ctx);
        if ((st = vk_flush(ctx)) != ELA_OK)
            return st;
        ctx->win_buf = b;
        ctx->win_off = offset;
        ctx->win_len = len;
        ctx->win_gen = ctx->generation;
    }
    return ELA_OK;
}

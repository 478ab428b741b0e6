/* Vulkan backend: what the model-op encoders share (vk_model.h): dtype codes, binding byte ranges
 * of tensors (q8_0 has no element size, so the model ops address their tensors by byte), rows of
 * a strided tensor, and one dispatch per command group with its own descriptor set. */
#include <string.h>

#include "vk_model.h"

uint32_t vk_mt_code(ela_dtype dt) {
    switch (dt) {
    case ELA_F16: return VK_MT_F16;
    case ELA_BF16: return VK_MT_BF16;
    case ELA_Q8_0: return VK_MT_Q8_0;
    default: return VK_MT_F32;
    }
}

uint64_t vk_mt_unit(ela_dtype dt) {
    switch (dt) {
    case ELA_F32: case ELA_I32: return 4;
    case ELA_F16: case ELA_BF16: return 2;
    case ELA_U8: return 1;
    case ELA_Q8_0: return 34;
    default: return 0;
    }
}

uint64_t vk_mt_span(const ela_tensor *t) {
    uint64_t span = vk_mt_unit(t->dtype);
    for (int i = 0; i < t->n_dims; i++) {
        int64_t steps = t->extents[i];
        if (steps == 0)
            return 0;
        if (i == t->n_dims - 1 && t->dtype == ELA_Q8_0)
            steps /= 32;
        span += (uint64_t)(steps - 1) * (uint64_t)t->strides[i];
    }
    return span;
}

uint64_t vk_mt_bind_limit(const vk_ctx *ctx) {
    uint64_t lim = ctx->phys->props.limits.maxStorageBufferRange;
    return lim > 2 * ctx->align ? lim - 2 * ctx->align : 0;
}

ela_status vk_mt_bind_range(vk_ctx *ctx, const ela_tensor *t, uint64_t lo, uint64_t hi,
                            const char *op, const char *name, vk_mt_bind *out) {
    memset(out, 0, sizeof *out);
    if (hi <= lo) {
        out->info.buffer = ctx->dummy.buf;
        out->info.offset = 0;
        out->info.range = VK_WHOLE_SIZE;
        return ELA_OK;
    }
    const vk_buffer *b = t->buffer->handle;
    VkDeviceSize start = t->offset + lo, base = start / ctx->align * ctx->align;
    VkDeviceSize range = (t->offset + hi - base + 3) & ~(VkDeviceSize)3;
    if (base >= b->size)
        return vk_fail(ELA_ERR_INTERNAL, "vulkan: %s: tensor %s starts past its buffer", op, name);
    if (range > b->size - base)
        range = b->size - base;
    uint64_t limit = ctx->phys->props.limits.maxStorageBufferRange;
    if (range > limit)
        return vk_fail(ELA_ERR_UNSUPPORTED,
                       "vulkan: %s: tensor %s needs %llu bytes in one binding, more than %s "
                       "binds at once (maxStorageBufferRange %llu bytes)", op, name,
                       (unsigned long long)range, ctx->phys->info.name,
                       (unsigned long long)limit);
    out->info.buffer = b->buf;
    out->info.offset = base;
    out->info.range = range;
    out->byte = (uint32_t)(start - base);
    return ELA_OK;
}

ela_status vk_mt_bind_tensor(vk_ctx *ctx, const ela_tensor *t, const char *op, const char *name,
                             vk_mt_bind *out) {
    return vk_mt_bind_range(ctx, t, 0, vk_mt_span(t), op, name, out);
}

ela_status vk_mt_dispatch(vk_ctx *ctx, VkPipeline pipe, const VkDescriptorBufferInfo *infos,
                          const void *push, uint32_t push_bytes, uint32_t gx, uint32_t gy) {
    const uint32_t *max = ctx->phys->props.limits.maxComputeWorkGroupCount;
    if (gx == 0 || gy == 0)
        return ELA_OK;
    if (gx > max[0] || gy > max[1])
        return vk_fail(ELA_ERR_INTERNAL, "vulkan: a grid of %u x %u workgroups exceeds %s's "
                       "%u x %u", gx, gy, ctx->phys->info.name, max[0], max[1]);
    VkDescriptorSet set;
    VkDeviceSize unused = 0;
    ela_status st = vk_op_reserve(ctx, 0, &set, &unused);
    if (st != ELA_OK)
        return st;
    VkDescriptorBufferInfo all[VK_BINDINGS];
    for (int i = 0; i < VK_BINDINGS; i++) {
        all[i] = infos[i];
        if (all[i].buffer == VK_NULL_HANDLE) {
            all[i].buffer = ctx->dummy.buf;
            all[i].offset = 0;
            all[i].range = VK_WHOLE_SIZE;
        }
    }
    vk_set_write(ctx, set, all);
    if ((st = vk_group_begin(ctx)) != ELA_OK)
        return st;
    vk_bind_pipeline(ctx, pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vkf.CmdPushConstants(ctx->cmd, ctx->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
    vkf.CmdDispatch(ctx->cmd, gx, gy, 1);
    vk_profile_mark(ctx);
    return ELA_OK;
}

uint32_t vk_mt_groups(const vk_ctx *ctx, uint64_t units, uint32_t wg) {
    uint64_t groups = (units + wg - 1) / wg;
    /* A CPU device (lavapipe) runs a workgroup per core at a time; more only add overhead. */
    uint64_t cap = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 64 : 65535;
    if (cap > ctx->phys->props.limits.maxComputeWorkGroupCount[0])
        cap = ctx->phys->props.limits.maxComputeWorkGroupCount[0];
    if (groups > cap)
        groups = cap;
    return groups ? (uint32_t)groups : 1u;
}

void vk_mt_rows_of(const ela_tensor *t, vk_mt_rows *out) {
    memset(out, 0, sizeof *out);
    int outer = t->n_dims - 1; /* 0..3 */
    for (int i = 0; i < 3; i++)
        out->ext[i] = 1;
    for (int i = 0; i < outer; i++) {
        out->ext[3 - outer + i] = (uint64_t)t->extents[i];
        out->s[3 - outer + i] = t->strides[i];
    }
    out->e1 = (uint32_t)out->ext[1];
    out->e2 = (uint32_t)out->ext[2];
    out->rows = out->ext[0] * out->ext[1] * out->ext[2];
}

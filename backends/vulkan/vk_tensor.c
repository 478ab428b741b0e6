/* Vulkan backend: a tensor as a shader binds it. The descriptor covers the tensor's bytes from
 * its offset rounded down to minStorageBufferOffsetAlignment, and the shader addresses elements
 * from there with 32-bit element offsets and strides (push constants). A tensor wider than
 * maxStorageBufferRange (lavapipe: 128 MiB) cannot be bound and is refused by name. */
#include "vk_backend.h"

size_t vk_dtype_size(ela_dtype dt) {
    switch (dt) {
    case ELA_F32: return 4;
    case ELA_F16: return 2;
    case ELA_BF16: return 2;
    case ELA_I32: return 4;
    case ELA_U8: return 1;
    default: return 0;
    }
}

/* Bytes from the first element to one past the last (the core's ela_tensor_span, which a
 * plugin cannot call). */
static uint64_t span_of(const ela_tensor *t, size_t es) {
    uint64_t span = es;
    for (int i = 0; i < t->n_dims; i++) {
        if (t->extents[i] == 0)
            return 0;
        span += (uint64_t)(t->extents[i] - 1) * (uint64_t)t->strides[i];
    }
    return span;
}

ela_status vk_bind_tensor(vk_ctx *ctx, const ela_tensor *t, const char *op, const char *name,
                          vk_tensor_binding *out) {
    const vk_buffer *b = t->buffer->handle;
    size_t es = vk_dtype_size(t->dtype);
    if (es == 0)
        return vk_fail(ELA_ERR_INVALID_ARG, "vulkan: %s: tensor %s has an unknown dtype", op, name);
    uint64_t span = span_of(t, es);
    VkDeviceSize start = t->offset, base = start / ctx->align * ctx->align;
    VkDeviceSize range = (start + (span ? span : es) - base + 3) & ~(VkDeviceSize)3;
    if (base >= b->size)
        return vk_fail(ELA_ERR_INTERNAL, "vulkan: %s: tensor %s starts past its buffer", op, name);
    if (range > b->size - base)
        range = b->size - base;
    uint64_t limit = ctx->phys->props.limits.maxStorageBufferRange;
    if (range > limit)
        return vk_fail(ELA_ERR_UNSUPPORTED,
                       "vulkan: %s: tensor %s spans %llu bytes, more than %s binds at once "
                       "(maxStorageBufferRange %llu bytes); split it (e.g. a paged KV cache)",
                       op, name, (unsigned long long)range, ctx->phys->info.name,
                       (unsigned long long)limit);
    out->info.buffer = b->buf;
    out->info.offset = base;
    out->info.range = range;
    out->elem = (uint32_t)((start - base) / es);
    for (int i = 0; i < 4; i++) {
        int used = i < t->n_dims && t->extents[i] > 1;
        out->stride[i] = used ? (uint32_t)(t->strides[i] / (int64_t)es) : 0u;
    }
    return ELA_OK;
}

uint32_t vk_vec4_rows(int64_t d, const vk_tensor_binding *k, const vk_tensor_binding *v) {
    uint32_t bits = k->elem | k->stride[0] | k->stride[1];
    if (v)
        bits |= v->elem | v->stride[0] | v->stride[1];
    return d % 4 == 0 && bits % 4 == 0;
}

/* Vulkan backend: the model ops (ela.h "Model ops": matmul, rms_norm, rope, silu_mul, add,
 * get_rows, copy, sigmoid_gate; and token_compress / token_decompress) and what their encoders
 * share: dtype codes of shaders/model_io.glsl, binding a byte range of a tensor (q8_0 included),
 * and recording one dispatch with its own descriptor set. Ops that can meet a tensor wider than
 * the device's largest binding (maxStorageBufferRange, 128 MiB on lavapipe) bind it in pieces,
 * one dispatch per piece. */
#ifndef ELA_BACKENDS_VULKAN_VK_MODEL_H
#define ELA_BACKENDS_VULKAN_VK_MODEL_H

#include "vk_backend.h"

/* dtype codes of shaders/model_io.glsl (MT_*) */
#define VK_MT_F32 0u
#define VK_MT_F16 1u
#define VK_MT_BF16 2u
#define VK_MT_Q8_0 3u

/* Workgroup size of the element-wise shaders (grid-stride loops). */
#define VK_MT_WG 256u

/* The MT_* code of a float or q8_0 dtype (i32 tensors are bound as f32-sized words). */
uint32_t vk_mt_code(ela_dtype dt);

/* Bytes of one step of the innermost dim: the element, or the q8_0 block (34). */
uint64_t vk_mt_unit(ela_dtype dt);

/* Bytes from element [0, ...] to one past the last (0 for an empty tensor), q8_0 included. */
uint64_t vk_mt_span(const ela_tensor *t);

/* A byte range of a tensor's buffer as a descriptor. */
typedef struct {
    VkDescriptorBufferInfo info;
    uint32_t byte; /* byte offset of the range's first byte (tensor offset + lo) in the binding */
} vk_mt_bind;

/* Bind bytes [offset + lo, offset + hi) of t's buffer (lo, hi relative to element [0, ...]),
 * the start rounded down to the device's offset alignment and the end up to a word.
 * ELA_ERR_UNSUPPORTED naming op and tensor when the range exceeds maxStorageBufferRange; an
 * empty range binds the context's dummy buffer. */
ela_status vk_mt_bind_range(vk_ctx *ctx, const ela_tensor *t, uint64_t lo, uint64_t hi,
                            const char *op, const char *name, vk_mt_bind *out);

/* The whole tensor. */
ela_status vk_mt_bind_tensor(vk_ctx *ctx, const ela_tensor *t, const char *op, const char *name,
                             vk_mt_bind *out);

/* Largest range a binding may have (maxStorageBufferRange) minus the alignment slack a range
 * start may need. */
uint64_t vk_mt_bind_limit(const vk_ctx *ctx);

/* Records one dispatch as a command group: a fresh descriptor set with `infos` (VK_BINDINGS
 * entries; a VK_NULL_HANDLE buffer binds the dummy), the push constants, gx x gy workgroups. */
ela_status vk_mt_dispatch(vk_ctx *ctx, VkPipeline pipe, const VkDescriptorBufferInfo *infos,
                          const void *push, uint32_t push_bytes, uint32_t gx, uint32_t gy);

/* Workgroups for a grid-stride loop over `units` items, VK_MT_WG per workgroup, capped at the
 * device's grid (and at a few per core on CPU devices, where more only cost). */
uint32_t vk_mt_groups(const vk_ctx *ctx, uint64_t units, uint32_t wg);

/* A tensor of up to 4 dims as rows of its innermost dim: the outer dims (padded to 3 in front
 * with extent 1) and their byte strides. */
typedef struct {
    uint64_t rows;
    uint64_t ext[3];      /* extents of outer dims 0, 1, 2 */
    uint32_t e1, e2;      /* ext[1], ext[2] as the shaders take them */
    int64_t s[3];         /* byte strides of outer dims 0, 1, 2 (0 where padded) */
} vk_mt_rows;
void vk_mt_rows_of(const ela_tensor *t, vk_mt_rows *out);

ela_status vk_matmul(void *ctx, const ela_matmul_args *args);
ela_status vk_rms_norm(void *ctx, const ela_rms_norm_args *args);
ela_status vk_rope(void *ctx, const ela_rope_args *args);
ela_status vk_silu_mul(void *ctx, const ela_binary_args *args);
ela_status vk_add(void *ctx, const ela_binary_args *args);
ela_status vk_get_rows(void *ctx, const ela_get_rows_args *args);
ela_status vk_copy(void *ctx, const ela_copy_args *args);
ela_status vk_sigmoid_gate(void *ctx, const ela_sigmoid_gate_args *args);
ela_status vk_token_compress(void *ctx, const ela_token_compress_args *args);
ela_status vk_token_decompress(void *ctx, const ela_token_decompress_args *args);

#endif

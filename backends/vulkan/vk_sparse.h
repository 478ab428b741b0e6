/* Vulkan backend: the sparse attention ops (DESIGN.md 4.2-4.8: attn_blocks, xattn_estimate,
 * router_eval, decode_select, attn_gather) and what their encoders share:
 * one op's scratch filled with host data (work lists) and with device copies of small tensors
 * (block masks, index lists), so every sparse shader still fits the plugin's six bindings
 * (shaders/attn_io.glsl), and the push constants the attention shaders share. */
#ifndef ELA_BACKENDS_VULKAN_VK_SPARSE_H
#define ELA_BACKENDS_VULKAN_VK_SPARSE_H

#include "vk_backend.h"

#define VK_LOG2E 1.4426950408889634f

/* Mirrors `Push` in shaders/attn_io.glsl, with room for a shader's own fields
 * (ELA_PUSH_EXTRA: up to 6 words). */
typedef struct {
    uint32_t q_off, q_s0, q_s1;
    uint32_t k_off, k_s0, k_s1;
    uint32_t v_off, v_s0, v_s1;
    uint32_t o_off, o_s0, o_s1;
    uint32_t lse_off, lse_s0, lse_s1;
    uint32_t rows, G, n, q_pos0, split_keys, splits, has_lse, part_off, base, kv_vec4;
    float scale_log2e;
    uint32_t extra[6];
} vk_attn_push;
_Static_assert(sizeof(vk_attn_push) == 128, "push constants are limited to 128 bytes");

/* A device-to-device copy into the op's scratch (dst relative to the op's scratch offset). */
typedef struct {
    VkBuffer src;
    VkDeviceSize src_off, dst_off, bytes;
} vk_scratch_copy;

/* A tensor copied into scratch as whole 32-bit words: the copy to record and where its element
 * [0, ...] lands, in elements of its dtype from the start of the scratch binding. */
typedef struct {
    vk_scratch_copy copy;
    uint32_t elem;       /* element offset within the op's scratch binding */
    uint32_t stride[4];  /* element strides (0 for extent-1 dims) */
} vk_scratch_tensor;

/* Plan the copy of tensor t (dtype size es) to scratch byte offset `at` (a multiple of 16, from
 * the op's scratch start); returns the bytes it occupies there (a multiple of 16). */
VkDeviceSize vk_scratch_tensor_plan(vk_ctx *ctx, const ela_tensor *t, VkDeviceSize at,
                                    vk_scratch_tensor *out);

/* Takes a descriptor set and `scratch_bytes` of scratch (*scratch_off) for one op, uploads
 * host[0, host_bytes) to its start through staging, records the device copies, and leaves a
 * command group begun (with a barrier after the copies) so the caller binds and dispatches.
 * Flushes first when staging or scratch lacks room. Pipelines must be created before. */
ela_status vk_sparse_begin(vk_ctx *ctx, VkDeviceSize scratch_bytes, const void *host,
                           VkDeviceSize host_bytes, const vk_scratch_copy *copies, int n_copies,
                           VkDescriptorSet *set, VkDeviceSize *scratch_off);

/* Records a copy of scratch bytes [off, off + bytes) into staging and flushes; *host then points
 * at them in the mapped staging buffer, valid until the next recorded command. */
ela_status vk_sparse_readback(vk_ctx *ctx, VkDeviceSize off, VkDeviceSize bytes,
                              const void **host);

/* Push constants, then `count` workgroups along x in pieces the device accepts (push->base is
 * each piece's first). */
void vk_sparse_dispatch(vk_ctx *ctx, vk_attn_push *push, uint32_t count, uint32_t y, uint32_t z);

static inline uint32_t vk_div_up(uint64_t a, uint64_t b) { return (uint32_t)((a + b - 1) / b); }
static inline uint32_t vk_dtype_code(ela_dtype dt) {
    return dt == ELA_F16 ? 1u : dt == ELA_BF16 ? 2u : 0u;
}
/* Name of the variant of shader stem `base` for this context: "<base>", "<base>_sg", "<base>_16"
 * or "<base>_sg16" (subgroup and/or storage16), into buf. */
const char *vk_variant(const vk_ctx *ctx, const char *base, int has_sg, int has_16, char *buf,
                       size_t size);

ela_status vk_attn_blocks(void *ctx, const ela_attn_blocks_args *args);
ela_status vk_attn_gather(void *ctx, const ela_attn_gather_args *args);

/* Keys per tile of the cooperative-matrix attention shaders (attn_cm_tile.glsl) for a's dtypes
 * and head dim over `rows` rows, and their rows per workgroup (*br: 64 or 128, a 32-lane
 * subgroup per 16), or 0 when they cannot run it: NV cooperative matrices, f16 q, k and v, d a
 * multiple of 16 up to 256 whose tiles fit shared memory, 64 rows at least (vk_attn_dense.c). */
uint32_t vk_attn_cm_shape(const vk_ctx *ctx, const ela_attn_dense_args *a, uint64_t rows,
                          uint32_t *br);

/* The register decode shader (shaders/attn_dense_decode.comp) for the ops built on it: dense
 * decode, attn_gather (GATHER) and decode_select_attend (LOGITS). A plan: workgroup shape, row
 * tiles, key splits, the partials' scratch bytes. */
typedef struct {
    uint32_t T, BR, WG, DP, BC;
    int cm;     /* the cooperative-matrix shader */
    int decode; /* attn_dense_decode.comp: BR rows, LPK lanes per key, U key steps per batch */
    uint32_t LPK, U, NSG;
    uint32_t rows, tiles, splits, split_keys;
    VkDeviceSize scratch_bytes;
} vk_attn_plan;
/* Plans it over `keys` keys (or list entries); *fits = 0 when its shape does not fit the call
 * (few rows per KV head, subgroup shuffles, 16-byte K/V rows; vk_attn_dense.c). */
ela_status vk_attn_decode_plan(const vk_ctx *ctx, const ela_attn_dense_args *a,
                               const vk_tensor_binding *bk, const vk_tensor_binding *bv,
                               uint64_t keys, vk_attn_plan *p, int *fits);
/* Its pipelines for the mode, and the merge's when the plan splits. */
ela_status vk_attn_decode_pipelines(vk_ctx *ctx, const ela_attn_dense_args *a,
                                    const vk_attn_plan *p, int gather, int logits,
                                    VkPipeline *main_pipe, VkPipeline *merge_pipe);
/* Records a plan's attention pass (any of the dense shaders) and the split merge with the op's
 * descriptor set bound; sets the plan's fields of push (rows, split_keys, splits), the caller
 * the rest. */
void vk_attn_record(vk_ctx *ctx, const vk_attn_plan *p, vk_attn_push *push,
                           uint32_t hkv, VkPipeline main_pipe, VkPipeline merge_pipe);
ela_status vk_xattn_estimate(void *ctx, const ela_xattn_estimate_args *args);
ela_status vk_router_eval(void *ctx, const ela_router_eval_args *args);
ela_status vk_decode_select(void *ctx, const ela_decode_select_args *args);
ela_status vk_decode_select_attend(void *ctx, const ela_decode_select_attend_args *args);
/* Token Sparse Attention: vk_token_select.c, vk_attn_token_sparse.c */
ela_status vk_token_select(void *ctx, const ela_token_select_args *args);
ela_status vk_attn_token_sparse(void *ctx, const ela_attn_token_sparse_args *args);
/* SSA/NSA: vk_nsa_select.c, vk_attn_nsa.c */
ela_status vk_nsa_select(void *ctx, const ela_nsa_select_args *args);
ela_status vk_attn_nsa(void *ctx, const ela_attn_nsa_args *args);

#endif

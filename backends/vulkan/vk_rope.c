/* Vulkan backend: rope (ela.h "Model ops"), the host side of shaders/rope.comp. The core's
 * frequencies (double, after scaling and freq_factors) become fixed-point turns on the host:
 * frac(inv_freq / 2 pi) * 2^64 as two words per frequency, uploaded into the op's scratch with
 * each call; the shader multiplies them by the integer position exactly, so angles keep their
 * precision at any position (see the shader). A workgroup per token row. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vk_model.h"
#include "vk_sparse.h"

/* Mirrors `Push` in shaders/rope.comp. */
typedef struct {
    uint32_t x_off, xs0, xs1, pos_off, M, H, half_rot, interleaved, f_off;
    float attn_scale;
} rope_push;

ela_status vk_rope(void *vctx, const ela_rope_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "rope";
    const uint32_t half = (uint32_t)(a->p.n_rot / 2);
    if (a->M > UINT32_MAX || (uint64_t)a->H * half > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: rope: sizes exceed 32-bit indices");
    vk_mt_bind bx, bp;
    ela_status st;
    if ((st = vk_mt_bind_tensor(ctx, a->x, op, "x", &bx)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, a->pos, op, "pos", &bp)) != ELA_OK)
        return st;
    const uint32_t wg = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 64u : 128u;
    const uint32_t spec[1] = {wg};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "rope", spec, 1, &pipe)) != ELA_OK)
        return st;
    /* Frequency i as a 64-bit fraction of a turn, (high word, low word). */
    const size_t bytes = 8u * (size_t)half;
    uint32_t *turns = malloc(bytes);
    if (!turns)
        return vk_fail(ELA_ERR_OOM, "vulkan: rope: out of host memory for %u frequencies", half);
    for (uint32_t i = 0; i < half; i++) {
        double t = a->inv_freq[i] / 6.283185307179586476925;
        t -= floor(t);
        uint64_t fixed = (uint64_t)ldexp(t, 64);
        turns[2 * i] = (uint32_t)(fixed >> 32);
        turns[2 * i + 1] = (uint32_t)fixed;
    }
    VkDescriptorSet set;
    VkDeviceSize at = 0;
    st = vk_sparse_begin(ctx, bytes, turns, bytes, NULL, 0, &set, &at);
    free(turns);
    if (st != ELA_OK)
        return st;
    VkDescriptorBufferInfo infos[VK_BINDINGS];
    memset(infos, 0, sizeof infos);
    infos[0] = bx.info;
    infos[1] = bp.info;
    infos[5].buffer = ctx->scratch.buf;
    infos[5].offset = at;
    infos[5].range = bytes;
    for (int i = 0; i < VK_BINDINGS; i++)
        if (infos[i].buffer == VK_NULL_HANDLE) {
            infos[i].buffer = ctx->dummy.buf;
            infos[i].range = VK_WHOLE_SIZE;
        }
    vk_set_write(ctx, set, infos);
    rope_push push = {bx.byte / 4, (uint32_t)(a->x->strides[0] / 4),
                      (uint32_t)(a->x->strides[1] / 4), bp.byte / 4, (uint32_t)a->M,
                      (uint32_t)a->H, half, (uint32_t)a->p.interleaved, 0, a->attn_scale};
    vk_bind_pipeline(ctx, pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vkf.CmdPushConstants(ctx->cmd, ctx->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof push, &push);
    vkf.CmdDispatch(ctx->cmd, vk_mt_groups(ctx, (uint64_t)a->M, 1), 1, 1);
    vk_profile_mark(ctx);
    return vk_op_done(ctx, op);
}

/* Vulkan backend: token-sparse attention (DESIGN.md 4.6, PAPERS.md 2.4), the host side of
 * shaders/attn_token_sparse.comp: fused, one dispatch, the per-head index lists gathered in the
 * shader (Q of each head, K and V of its KV head, read in place) and the unselected rows zeroed
 * by the same workgroups. BR compressed rows of one head per workgroup (T lanes per row, as
 * attn_gather); the lists are copied into the op's scratch (they have no binding of their own).
 * n_sel == L (every list is the identity) is dense attention: vk_attn_dense. */
#include <string.h>

#include "vk_sparse.h"

#define MAX_WG 128
#define LANES 8
#define MAX_D 256
#define MAX_BC 32

ela_status vk_attn_token_sparse(void *vctx, const ela_attn_token_sparse_args *ta) {
    vk_ctx *ctx = vctx;
    const char *op = "attn_token_sparse";
    const ela_attn_dense_args *a = &ta->attn;
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (ta->n_sel == a->L) /* strictly ascending in [0, L): every list is the identity */
        return vk_attn_dense(vctx, a);
    if (a->d > MAX_D)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_token_sparse supports head dims up to "
                       "%d, got %lld", MAX_D, (long long)a->d);
    if (a->L > INT32_MAX || a->L * a->hq > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_token_sparse: more than 2^31 (row, "
                       "head) pairs (L = %lld, Hq = %d)", (long long)a->L, a->hq);
    vk_tensor_binding bq, bk, bv, bo;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->v, op, "v", &bv)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->o, op, "o", &bo)) != ELA_OK)
        return st;

    const uint32_t n_sel = (uint32_t)ta->n_sel;
    const int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t T = LANES, br_max = MAX_WG / T, BR = cpu ? 1 : br_max;
    while (BR < br_max && BR < (n_sel ? n_sel : 1))
        BR *= 2;
    const uint32_t WG = BR * T;
    const uint32_t DP = vk_div_up((uint64_t)a->d, 4u * T) * 4u * T;
    const uint64_t per_key = 4ull * (2ull * DP + BR + 1 + (ctx->subgroup ? 0 : WG));
    uint64_t bc = vk_attn_tile_keys(ctx, per_key, 0, MAX_BC);
    if (bc < 1 || WG > lim->maxComputeWorkGroupSize[0] || WG > lim->maxComputeWorkGroupInvocations)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_token_sparse: d = %lld does not fit "
                       "%s's shared memory or workgroup size", (long long)a->d,
                       ctx->phys->info.name);
    if ((uint32_t)a->hq > lim->maxComputeWorkGroupCount[1])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_token_sparse: %d query heads exceed "
                       "%s's workgroup grid", a->hq, ctx->phys->info.name);
    /* The lists' copy (n_sel = 0: nothing to read, a word of scratch to bind). */
    vk_scratch_tensor it;
    memset(&it, 0, sizeof it);
    VkDeviceSize scratch_bytes = 16;
    if (n_sel > 0)
        scratch_bytes = vk_scratch_tensor_plan(ctx, ta->idx, 0, &it);
    if (scratch_bytes > lim->maxStorageBufferRange)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_token_sparse: index lists of %llu bytes "
                       "are more than %s binds at once", (unsigned long long)scratch_bytes,
                       ctx->phys->info.name);

    uint32_t spec[7] = {WG, (uint32_t)a->d, T, (uint32_t)bc, vk_dtype_code(a->q->dtype),
                        vk_dtype_code(a->k->dtype), vk_dtype_code(a->o->dtype)};
    char nm[40];
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, vk_variant(ctx, "attn_token_sparse", 1, 1, nm, sizeof nm), spec,
                              7, &pipe)) != ELA_OK)
        return st;
    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, NULL, 0, &it.copy, n_sel > 0, &set,
                              &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, bv.info, bo.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    uint32_t kv_vec4 = vk_vec4_rows(a->d, &bk, &bv);
    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        bv.elem, bv.stride[0], bv.stride[1],
        bo.elem, bo.stride[0], bo.stride[1],
        0, 0, 0,
        n_sel, (uint32_t)(a->hq / a->hkv), (uint32_t)a->L, a->causal ? 1u : 0u, 0, 0, 0, 0, 0,
        kv_vec4, a->scale * VK_LOG2E,
        {it.elem, it.stride[0], it.stride[1], 0, 0, 0},
    };
    vk_bind_pipeline(ctx, pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    /* n_sel = 0: each workgroup zeroes BR rows of its head. */
    vk_sparse_dispatch(ctx, &push, vk_div_up(n_sel ? n_sel : (uint64_t)a->L, BR), (uint32_t)a->hq,
                       1);
    return vk_op_done(ctx, op);
}

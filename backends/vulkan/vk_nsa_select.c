/* Vulkan backend: SSA/NSA block selection (DESIGN.md 4.9, PAPERS.md 4.3 steps 2-5), the host
 * side of shaders/nsa_select_pool.comp (mean-pooled complete key blocks into scratch) and
 * shaders/nsa_select.comp (a workgroup per query row and KV head: lse, group-summed scores into
 * scratch, radix select and ranking), in one command group without a wait. The scores take
 * nkc floats per (row, KV head); rows go in chunks whose scores fit the scratch cap, the chunks'
 * dispatches separated by barriers (they reuse one region). */
#include <string.h>

#include "vk_sparse.h"

#define WG_POOL 64
#define WG_MAX 128
#define WG_MIN 32
#define HC 8                               /* heads per register chunk (nsa_select.comp) */
#define SCORES_CAP ((VkDeviceSize)64 << 20) /* scratch for one chunk's scores */

/* Shared bytes of nsa_select.comp (its `shared` declarations). */
static uint64_t select_shared(uint64_t wg, uint64_t G, uint64_t d, uint64_t kc) {
    return 4 * (G * d + 2 * wg * HC + G + 256 + 4 + wg + 2 * kc);
}

ela_status vk_nsa_select(void *vctx, const ela_nsa_select_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "nsa_select";
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (a->n > INT32_MAX || a->q_pos0 + a->L > INT32_MAX || a->top > (1 << 16))
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: nsa_select: more than 2^31 keys or a top "
                       "above 65536 (n = %lld, top %d)", (long long)a->n, a->top);
    vk_tensor_binding bq, bk, bo;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->blocks, op, "blocks", &bo)) != ELA_OK)
        return st;
    const uint64_t G = (uint64_t)(a->hq / a->hkv), d = (uint64_t)a->d, hkv = (uint64_t)a->hkv;
    const uint64_t nkc = (uint64_t)((a->q_pos0 + a->L) / a->block);
    const uint64_t kc_cap = a->top > 1 ? (uint64_t)a->top - 1 : 1;
    uint32_t wg = WG_MAX;
    while (wg > WG_MIN && (wg > lim->maxComputeWorkGroupInvocations ||
                           wg > lim->maxComputeWorkGroupSize[0] ||
                           select_shared(wg, G, d, kc_cap) > lim->maxComputeSharedMemorySize))
        wg /= 2;
    uint32_t wg_pool = WG_POOL;
    while (wg_pool > 1 && (wg_pool > lim->maxComputeWorkGroupInvocations ||
                           wg_pool > lim->maxComputeWorkGroupSize[0]))
        wg_pool /= 2;
    if (wg > lim->maxComputeWorkGroupInvocations || wg > lim->maxComputeWorkGroupSize[0] ||
        select_shared(wg, G, d, kc_cap) > lim->maxComputeSharedMemorySize)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: nsa_select: %llu query heads per KV head at "
                       "d = %llu with top %d do not fit %s's shared memory or workgroup size",
                       (unsigned long long)G, (unsigned long long)d, a->top,
                       ctx->phys->info.name);
    /* Scratch: kc [hkv][nkc][d], then the scores of `chunk` rows [chunk][hkv][nkc]. */
    const VkDeviceSize kc_bytes = (4 * hkv * nkc * d + 15) & ~(VkDeviceSize)15;
    const VkDeviceSize row_bytes = 4 * hkv * (nkc > 0 ? nkc : 1);
    VkDeviceSize cap = lim->maxStorageBufferRange > kc_bytes ? lim->maxStorageBufferRange - kc_bytes
                                                             : 0;
    cap = cap < SCORES_CAP ? cap : SCORES_CAP;
    if (cap < row_bytes || hkv > lim->maxComputeWorkGroupCount[1])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: nsa_select: %llu pooled blocks of %llu KV "
                       "heads are more than %s binds at once", (unsigned long long)nkc,
                       (unsigned long long)hkv, ctx->phys->info.name);
    uint64_t chunk = cap / row_bytes;
    if (chunk > (uint64_t)a->L)
        chunk = (uint64_t)a->L;
    const VkDeviceSize scratch_bytes = kc_bytes + chunk * row_bytes;

    uint32_t spec_pool[6] = {wg_pool, (uint32_t)d, 0, 0, vk_dtype_code(a->q->dtype),
                             vk_dtype_code(a->k->dtype)};
    uint32_t spec_sel[6] = {wg, (uint32_t)d, (uint32_t)G, (uint32_t)kc_cap,
                            vk_dtype_code(a->q->dtype), vk_dtype_code(a->k->dtype)};
    char nm[40], pnm[40];
    VkPipeline pool = VK_NULL_HANDLE, sel;
    if ((nkc > 0 &&
         (st = vk_pipeline_get(ctx, vk_variant(ctx, "nsa_select_pool", 0, 1, pnm, sizeof pnm),
                               spec_pool, 6, &pool)) != ELA_OK) ||
        (st = vk_pipeline_get(ctx, vk_variant(ctx, "nsa_select", 0, 1, nm, sizeof nm), spec_sel,
                              6, &sel)) != ELA_OK)
        return st;

    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, NULL, 0, NULL, 0, &set, &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, dummy, bo.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        0, 0, 0,
        bo.elem, bo.stride[0], bo.stride[1],
        0, 0, 0,
        (uint32_t)a->L, (uint32_t)G, (uint32_t)a->n, (uint32_t)a->q_pos0, (uint32_t)a->block,
        (uint32_t)a->top, 0, 0, 0, 0, a->scale * VK_LOG2E,
        {(uint32_t)nkc, (uint32_t)hkv, bo.stride[2], 0, (uint32_t)(kc_bytes / 4), 0},
    };
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    if (nkc > 0) {
        vk_bind_pipeline(ctx, pool);
        vk_sparse_dispatch(ctx, &push, (uint32_t)nkc, (uint32_t)hkv, 1);
        vk_group_barrier(ctx);
    }
    vk_bind_pipeline(ctx, sel);
    for (uint64_t i0 = 0; i0 < (uint64_t)a->L; i0 += chunk) {
        const uint64_t rows = (uint64_t)a->L - i0 < chunk ? (uint64_t)a->L - i0 : chunk;
        if (i0 > 0)
            vk_group_barrier(ctx); /* the previous chunk's scores are consumed */
        push.extra[5] = (uint32_t)i0;
        vk_sparse_dispatch(ctx, &push, (uint32_t)rows, (uint32_t)hkv, 1);
    }
    return vk_op_done(ctx, op);
}

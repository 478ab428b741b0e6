/* Vulkan backend: LessIsMore's token selection for one decode query (DESIGN.md 4.7, PAPERS.md
 * 3.2), the host side of shaders/decode_select*.comp: logits of every candidate (pass 1), each
 * head's top k_mid by radix select (2), sorted by bitonic sort (3), the rank-major union and the
 * output list (4), all in one command group without a wait; the count is known on the host.
 * The budget split is the CPU backend's (integer when 4 recent is an integer). */
#include <string.h>

#include "vk_sparse.h"

#define WG_LOGITS 64
#define MAX_BK 32
#define TILES 8
#define WG_SELECT 256

/* backends/cpu/decode_select.c's split_mid: k_mid = floor(K (1 - recent)). The values are
 * non-negative, so truncation is the floor (the plugin does not link libm). */
static int64_t split_mid(int64_t kb, float recent) {
    double r4 = 4.0 * (double)recent;
    int64_t mid;
    if (r4 == (double)(int64_t)r4)
        mid = kb * (4 - (int64_t)r4) / 4;
    else
        mid = (int64_t)((double)kb * (1.0 - (double)recent) + (double)kb * 1e-7);
    return mid < 0 ? 0 : mid > kb ? kb : mid;
}

ela_status vk_decode_select(void *vctx, const ela_decode_select_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "decode_select";
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    vk_tensor_binding bq, bk, bi;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->idx, op, "idx", &bi)) != ELA_OK)
        return st;
    const int64_t n = a->n;
    int64_t kb, k_mid = 0, n_rec = 0, sinks;
    if (a->p.budget >= n) { /* every token: written as "sinks" */
        kb = n;
        sinks = n;
    } else {
        kb = a->p.budget;
        k_mid = split_mid(kb, a->p.recent);
        n_rec = kb - k_mid;
        sinks = a->p.sinks;
        if (n_rec < sinks)
            sinks = 0;
        n_rec -= sinks;
    }
    const int64_t ncand = k_mid > 0 ? n - n_rec - sinks : 0;
    const uint64_t hq = (uint64_t)a->hq, G = (uint64_t)(a->hq / a->hkv);
    const uint64_t ord_w = hq * (uint64_t)ncand, sel_w = 2 * hq * (uint64_t)k_mid;
    const uint64_t top_w = hq * (uint64_t)k_mid, first_w = (uint64_t)ncand;
    VkDeviceSize scratch_bytes = 4 * (ord_w + sel_w + top_w + first_w + 4);
    if (scratch_bytes > lim->maxStorageBufferRange || hq * (uint64_t)k_mid > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: decode_select: %llu heads x %lld keys need "
                       "%llu bytes of logits, more than %s binds at once", (unsigned long long)hq,
                       (long long)n, (unsigned long long)scratch_bytes, ctx->phys->info.name);

    uint32_t wg = WG_SELECT;
    while (wg > lim->maxComputeWorkGroupInvocations || wg > lim->maxComputeWorkGroupSize[0])
        wg /= 2;
    const uint32_t DP = vk_div_up((uint64_t)a->d, 4) * 4;
    uint32_t BK = MAX_BK;
    /* q rows and K rows (padded by 4 floats) */
    while (BK > 1 && 4ull * (G * DP + BK * (DP + 4)) > lim->maxComputeSharedMemorySize)
        BK /= 2;
    if (4ull * (G * DP + BK * (DP + 4)) > lim->maxComputeSharedMemorySize)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: decode_select: %llu query heads per KV head "
                       "at d = %lld do not fit %s's shared memory", (unsigned long long)G,
                       (long long)a->d, ctx->phys->info.name);
    uint32_t P = 1;
    while (P < (uint64_t)k_mid)
        P *= 2;
    if (8ull * P > lim->maxComputeSharedMemorySize)
        P = 0; /* counting ranks in global memory */

    uint32_t spec1[8] = {WG_LOGITS, (uint32_t)a->d, (uint32_t)G, BK, vk_dtype_code(a->q->dtype),
                         vk_dtype_code(a->k->dtype), 0, TILES};
    uint32_t spec_wg[1] = {wg}, spec_sort[2] = {wg, P};
    char nm[40];
    VkPipeline logits = VK_NULL_HANDLE, topk = VK_NULL_HANDLE, sort = VK_NULL_HANDLE, uni;
    if ((k_mid > 0 &&
         ((st = vk_pipeline_get(ctx, vk_variant(ctx, "decode_select", 0, 1, nm, sizeof nm), spec1,
                                8, &logits)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, "decode_select_topk", spec_wg, 1, &topk)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, "decode_select_sort", spec_sort, 2, &sort)) != ELA_OK)) ||
        (st = vk_pipeline_get(ctx, "decode_select_union", spec_wg, 1, &uni)) != ELA_OK)
        return st;

    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, NULL, 0, NULL, 0, &set, &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, dummy, bi.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    uint32_t kv_vec4 = vk_vec4_rows(a->d, &bk, NULL);
    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        0, 0, 0,
        bi.elem, bi.stride[0], 0,
        0, 0, 0,
        (uint32_t)hq, (uint32_t)G, (uint32_t)n, 0, (uint32_t)k_mid, (uint32_t)ncand,
        (uint32_t)sinks, 0, 0, kv_vec4, a->scale,
        {(uint32_t)ord_w, (uint32_t)(ord_w + sel_w), (uint32_t)(ord_w + sel_w + top_w),
         (uint32_t)n_rec, 0, 0},
    };
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    if (k_mid > 0) {
        vk_bind_pipeline(ctx, logits);
        vk_sparse_dispatch(ctx, &push, vk_div_up((uint64_t)ncand, (uint64_t)BK * TILES),
                           (uint32_t)a->hkv, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, topk);
        vk_sparse_dispatch(ctx, &push, (uint32_t)hq, 1, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, sort);
        vk_sparse_dispatch(ctx, &push, (uint32_t)hq, 1, 1);
        vk_group_barrier(ctx);
    }
    vk_bind_pipeline(ctx, uni);
    vk_sparse_dispatch(ctx, &push, 1, 1, 1);
    if ((st = vk_op_done(ctx, op)) != ELA_OK)
        return st;
    *a->count = kb;
    return ELA_OK;
}

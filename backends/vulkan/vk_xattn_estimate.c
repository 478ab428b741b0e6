/* Vulkan backend: XAttention block selection (DESIGN.md 4.3, PAPERS.md 5.1), the host side of
 * shaders/xattn_estimate.comp (reduced scores, softmax, per-block mass; on tensor cores
 * xattn_estimate_cm.comp) and xattn_estimate_select.comp (threshold selection per query-block
 * row). Sizes the first pass's
 * row groups and key tiles to the shared memory, puts the head list, the per-row-group block
 * masses and the kept counts in the op's scratch, and reads the counts back only when the
 * caller asks for kept_blocks (a wait for the device). */
#include <string.h>

#include "vk_sparse.h"

#define BLOCK ELA_BLOCK
#define WG_SCORES 64   /* invocations of the first pass: (row, key) outputs, OPI each */
#define OUTPUTS 256    /* RG x BK outputs per tile */
#define MAX_BK 64
#define MAX_RG 16
#define WG_SELECT 256
#define CM_ROWS 64 /* xattn_estimate_cm.comp: reduced rows per workgroup */
#define CM_KEYS 64 /* its reduced keys per tile */
#define CM_WG 128  /* its four 32-lane subgroups */

ela_status vk_xattn_estimate(void *vctx, const ela_xattn_estimate_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "xattn_estimate";
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (a->n > INT32_MAX || a->L > INT32_MAX || a->q_pos0 + a->L > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: xattn_estimate: more than 2^31 positions");
    vk_tensor_binding bq, bk, bm;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->masks, op, "masks", &bm)) != ELA_OK)
        return st;
    if (a->n == 0 || a->nkb == 0)
        return ELA_OK; /* no key blocks: nothing to write */

    const uint32_t S = (uint32_t)a->stride, rpb = BLOCK / S;
    const uint32_t DP = vk_div_up((uint64_t)a->d, 4) * 4;
    uint32_t RG = rpb < MAX_RG ? rpb : MAX_RG, n_rg = vk_div_up(rpb, RG);
    /* Tensor cores (xattn_estimate_cm.comp): 64 reduced rows per workgroup, whole query blocks,
     * key blocks inside 64-key tiles. */
    const uint64_t cm_rows = (CM_ROWS + CM_KEYS) * ((uint64_t)a->d / 2 + 4),
                   cm_scores = CM_ROWS * (CM_KEYS + 4);
    const int cm = ctx->coopmat && a->q->dtype == ELA_F16 && a->k->dtype == ELA_F16 &&
                   a->d % 16 == 0 && S >= 4 && BLOCK % S == 0 &&
                   4 * (cm_rows > cm_scores ? cm_rows : cm_scores) <=
                       lim->maxComputeSharedMemorySize;
    if (cm)
        n_rg = 1;
    uint32_t BK = OUTPUTS / RG < MAX_BK ? OUTPUTS / RG : MAX_BK;
    uint64_t shared = 0;
    for (; BK >= 1; BK /= 2) {
        /* q and K rows (K padded by 4 floats), scores, row stats, column sums */
        shared = 4ull * ((uint64_t)RG * DP + (uint64_t)BK * (DP + 4) + (uint64_t)RG * BK +
                         2ull * RG + BK);
        if (shared <= lim->maxComputeSharedMemorySize)
            break;
    }
    uint32_t P = 1;
    while (P < (uint32_t)a->nkb)
        P *= 2;
    uint32_t wg2 = WG_SELECT;
    while (wg2 > lim->maxComputeWorkGroupInvocations || wg2 > lim->maxComputeWorkGroupSize[0])
        wg2 /= 2;
    uint64_t shared2 = 8ull * P + 4ull * ((P + 31) / 32) + 4ull * wg2 + 4;
    if (BK < 1 || shared2 > lim->maxComputeSharedMemorySize)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: xattn_estimate: d = %lld with %lld key blocks "
                       "does not fit %s's %u bytes of shared memory", (long long)a->d,
                       (long long)a->nkb, ctx->phys->info.name, lim->maxComputeSharedMemorySize);

    const uint64_t nh = (uint64_t)a->n_heads, nqb = (uint64_t)a->nqb, nkb = (uint64_t)a->nkb;
    uint64_t heads_words = (nh + 3) & ~3ull;
    uint64_t part_words = nh * nqb * n_rg * nkb;
    uint64_t counts_words = nh * nqb;
    VkDeviceSize scratch_bytes = 4 * (heads_words + part_words + counts_words);
    if (scratch_bytes > lim->maxStorageBufferRange || nqb * n_rg > UINT32_MAX ||
        nh > lim->maxComputeWorkGroupCount[1])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: xattn_estimate: %lld heads x %lld x %lld "
                       "blocks need %llu bytes of block masses, more than %s binds at once",
                       (long long)nh, (long long)nqb, (long long)nkb,
                       (unsigned long long)scratch_bytes, ctx->phys->info.name);

    uint32_t spec1[6] = {cm ? CM_WG : WG_SCORES, (uint32_t)a->d, RG, BK,
                         vk_dtype_code(a->q->dtype), vk_dtype_code(a->k->dtype)};
    uint32_t spec2[2] = {wg2, P};
    char nm[40];
    VkPipeline scores, select;
    if ((st = vk_pipeline_get(ctx, cm ? "xattn_estimate_cm"
                                      : vk_variant(ctx, "xattn_estimate", 0, 1, nm, sizeof nm),
                              spec1, cm ? 2 : 6, &scores)) != ELA_OK ||
        (st = vk_pipeline_get(ctx, "xattn_estimate_select", spec2, 2, &select)) != ELA_OK)
        return st;

    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, a->heads, 4 * nh, NULL, 0, &set,
                              &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, dummy, bm.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    float scale_log2e = (float)((double)a->scale / (double)S * 1.4426950408889634);
    uint32_t threshold;
    memcpy(&threshold, &a->threshold, sizeof threshold);
    uint32_t kv_vec4 = vk_vec4_rows(a->d, &bk, NULL);
    /* The cooperative-matrix pass reads q 4 halves at a time where rows allow (v_off: no v). */
    uint32_t q_vec4 = cm && a->d % 4 == 0 && (bq.elem | bq.stride[0] | bq.stride[1]) % 4 == 0;
    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        q_vec4, 0, 0,
        bm.elem, bm.stride[0], bm.stride[1],
        0, 0, 0,
        (uint32_t)a->L, (uint32_t)(a->hq / a->hkv), (uint32_t)a->n, (uint32_t)a->q_pos0, S, 0, 0,
        (uint32_t)heads_words, 0, kv_vec4, scale_log2e,
        {0, (uint32_t)(heads_words + part_words), (uint32_t)nkb, (uint32_t)nqb, n_rg, threshold},
    };
    vk_bind_pipeline(ctx, scores);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    uint32_t nrq = vk_div_up((uint64_t)a->L, S);
    vk_sparse_dispatch(ctx, &push, cm ? vk_div_up(nrq, CM_ROWS) : (uint32_t)(nqb * n_rg),
                       (uint32_t)nh, 1);
    vk_group_barrier(ctx);
    vk_bind_pipeline(ctx, select);
    vk_sparse_dispatch(ctx, &push, (uint32_t)nqb, (uint32_t)nh, 1);
    if ((st = vk_op_done(ctx, op)) != ELA_OK || !a->kept_blocks)
        return st;
    const void *counts;
    if ((st = vk_sparse_readback(ctx, scratch_off + 4 * (heads_words + part_words),
                                 4 * counts_words, &counts)) != ELA_OK)
        return st;
    int64_t kept = 0;
    for (uint64_t i = 0; i < counts_words; i++)
        kept += ((const uint32_t *)counts)[i];
    *a->kept_blocks = kept;
    return ELA_OK;
}

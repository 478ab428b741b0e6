/* Vulkan backend: Token Sparse Attention's selection (DESIGN.md 4.5, PAPERS.md 2.3), the host side
 * of shaders/token_select_*.comp, with the CPU backend's semantics (backends/cpu/token_select.c):
 * pass 1 (stats: each window row's softmax max and sum, per key split), merge, pass 2 (probs:
 * the window mean a_h of each prefix key), pool, head mean, the coverage cut (cut: n_keep) and
 * each head's top n_keep plus the window (top), in one command group; the only wait is the
 * readback of n_keep and the non-finite flag, since the API returns n_sel. Vulkan offers no
 * doubles here (shaderFloat64 is optional): the sums the CPU keeps in double are compensated
 * f32 sums (shaders/token_select.glsl), close enough that the sets equal the CPU's wherever a
 * cut-off is further than ~1e-5 relative from its neighbour. */
#include <string.h>

#include "vk_sparse.h"

#define WG_PASS 64  /* pass 1 and 2 workgroups */
#define WG_ELEM 256 /* merge, pool, mean */
#define WG_SELECT 256
#define MAX_R 8     /* window rows per pass-1/2 workgroup */
#define MAX_D 256
#define MIN_SPLIT_KEYS 64
#define MAX_SPLITS 64

static uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

ela_status vk_token_select(void *vctx, const ela_token_select_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "token_select";
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (a->d > MAX_D)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: token_select supports head dims up to %d, "
                       "got %lld", MAX_D, (long long)a->d);
    if (a->L > INT32_MAX || (int64_t)a->hq * a->L > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: token_select: more than 2^31 (head, token) "
                       "pairs (L = %lld, Hq = %d)", (long long)a->L, a->hq);
    vk_tensor_binding bq, bk, bi;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->idx, op, "idx", &bi)) != ELA_OK)
        return st;

    const uint32_t L = (uint32_t)a->L, w = (uint32_t)a->p.window, hq = (uint32_t)a->hq;
    const uint32_t hkv = (uint32_t)a->hkv, G = hq / hkv;
    const int dense = a->L - a->p.window <= a->p.min_keep; /* too short to prune */
    const uint32_t Lp = dense ? 0u : L - w;
    const uint32_t min_keep = a->p.min_keep < (int64_t)Lp ? (uint32_t)a->p.min_keep : Lp;
    const int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;

    uint32_t wg_sel = WG_SELECT, wg_elem = WG_ELEM, wg_pass = WG_PASS;
    while (wg_sel > lim->maxComputeWorkGroupInvocations || wg_sel > lim->maxComputeWorkGroupSize[0])
        wg_sel /= 2;
    while (wg_elem > lim->maxComputeWorkGroupInvocations ||
           wg_elem > lim->maxComputeWorkGroupSize[0])
        wg_elem /= 2;
    while (wg_pass > lim->maxComputeWorkGroupInvocations ||
           wg_pass > lim->maxComputeWorkGroupSize[0])
        wg_pass /= 2;
    /* Pass 1 keeps R rows' q in shared memory (f32) and every invocation's partial (m, l). */
    const uint64_t d4 = vk_div_up((uint64_t)a->d, 4);
    uint32_t R = MAX_R;
    while (R > 1 && 16ull * R * d4 + 8ull * R * wg_pass > lim->maxComputeSharedMemorySize)
        R /= 2;
    if (16ull * R * d4 + 8ull * R * wg_pass > lim->maxComputeSharedMemorySize ||
        4ull * (8 * 256 + wg_sel + 2) > lim->maxComputeSharedMemorySize) /* top's histograms */
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: token_select: d = %lld does not fit %s's "
                       "shared memory", (long long)a->d, ctx->phys->info.name);

    const uint64_t rows = (uint64_t)hq * w, rows_g = (uint64_t)G * w;
    const uint32_t n_rb = vk_div_up(rows_g, R), n_kt = vk_div_up(Lp ? Lp : 1, wg_pass);
    /* Key splits of pass 1 so that the GPU has enough workgroups. */
    uint64_t wgs = (uint64_t)hkv * n_rb, target = cpu ? 32 : 512, splits = 1;
    if (!dense && wgs < target) {
        splits = (target + wgs - 1) / wgs;
        uint64_t cap = L / MIN_SPLIT_KEYS > 1 ? L / MIN_SPLIT_KEYS : 1;
        splits = splits > cap ? cap : splits;
        splits = splits > MAX_SPLITS ? MAX_SPLITS : splits;
    }
    const uint32_t split_keys = vk_div_up(vk_div_up(L, splits), wg_pass) * wg_pass;
    const uint32_t n_splits = vk_div_up(L, split_keys);

    /* Scratch words: results [4], partials, (m, l), a_h, pooled, g. */
    const uint64_t part_off = 4, ml_off = part_off + (dense ? 0 : 2ull * n_splits * rows);
    const uint64_t score_off = ml_off + (dense ? 0 : 2 * rows);
    const uint64_t pooled_off = score_off + (uint64_t)hq * Lp;
    const uint64_t g_off = pooled_off + (uint64_t)hq * Lp, words = g_off + Lp;
    const VkDeviceSize scratch_bytes = 4 * words;
    if (scratch_bytes > lim->maxStorageBufferRange || words > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: token_select: L = %lld with %d query heads "
                       "needs %llu bytes of scores, more than %s binds at once", (long long)a->L,
                       a->hq, (unsigned long long)scratch_bytes, ctx->phys->info.name);
    if ((uint64_t)hkv * n_rb > UINT32_MAX || n_splits > lim->maxComputeWorkGroupCount[1] ||
        hq > lim->maxComputeWorkGroupCount[1])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: token_select: %d query heads exceed %s's "
                       "workgroup grid", a->hq, ctx->phys->info.name);

    uint32_t spec_pass[7] = {wg_pass, (uint32_t)a->d, R, 0, vk_dtype_code(a->q->dtype),
                             vk_dtype_code(a->k->dtype), 0};
    uint32_t spec_elem[1] = {wg_elem}, spec_sel[1] = {wg_sel};
    char n1[48], n2[48];
    VkPipeline stats = VK_NULL_HANDLE, merge = VK_NULL_HANDLE, probs = VK_NULL_HANDLE;
    VkPipeline pool = VK_NULL_HANDLE, mean = VK_NULL_HANDLE, cut = VK_NULL_HANDLE, top;
    if ((!dense &&
         ((st = vk_pipeline_get(ctx, vk_variant(ctx, "token_select_stats", 0, 1, n1, sizeof n1),
                                spec_pass, 7, &stats)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, vk_variant(ctx, "token_select_probs", 0, 1, n2, sizeof n2),
                                spec_pass, 7, &probs)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, "token_select_merge", spec_elem, 1, &merge)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, "token_select_pool", spec_elem, 1, &pool)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, "token_select_mean", spec_elem, 1, &mean)) != ELA_OK ||
          (st = vk_pipeline_get(ctx, "token_select_cut", spec_sel, 1, &cut)) != ELA_OK)) ||
        (st = vk_pipeline_get(ctx, "token_select_top", spec_sel, 1, &top)) != ELA_OK)
        return st;

    const uint32_t zeros[4] = {0, 0, 0, 0}; /* n_keep 0 (dense until the cut says otherwise) */
    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, zeros, sizeof zeros, NULL, 0, &set,
                              &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, dummy, bi.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    uint32_t kv_vec4 = vk_vec4_rows(a->d, &bk, NULL);
    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        w, Lp, (uint32_t)a->p.pool,
        bi.elem, bi.stride[0], bi.stride[1],
        min_keep, hq, hkv,
        (uint32_t)rows_g, G, L, 0, split_keys, n_splits, float_bits(a->p.coverage),
        (uint32_t)part_off, 0, kv_vec4, a->scale * VK_LOG2E,
        {(uint32_t)ml_off, (uint32_t)score_off, (uint32_t)pooled_off, (uint32_t)g_off, n_rb,
         n_kt},
    };
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    if (!dense) {
        vk_bind_pipeline(ctx, stats);
        vk_sparse_dispatch(ctx, &push, (uint32_t)(hkv * n_rb), n_splits, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, merge);
        vk_sparse_dispatch(ctx, &push, vk_div_up(rows, wg_elem), 1, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, probs);
        vk_sparse_dispatch(ctx, &push, hkv * n_kt, 1, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, pool);
        vk_sparse_dispatch(ctx, &push, vk_div_up(Lp, wg_elem), hq, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, mean);
        vk_sparse_dispatch(ctx, &push, vk_div_up(Lp, wg_elem), 1, 1);
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, cut);
        vk_sparse_dispatch(ctx, &push, 1, 1, 1);
        vk_group_barrier(ctx);
    }
    vk_bind_pipeline(ctx, top);
    vk_sparse_dispatch(ctx, &push, hq, 1, 1);
    if ((st = vk_op_done(ctx, op)) != ELA_OK)
        return st;
    if (dense) {
        *a->n_sel = a->L;
        return ELA_OK;
    }
    const void *host = NULL;
    if ((st = vk_sparse_readback(ctx, scratch_off, 8, &host)) != ELA_OK)
        return st;
    uint32_t res[2];
    memcpy(res, host, sizeof res);
    if (res[1] != 0)
        return vk_fail(ELA_ERR_INVALID_ARG, "vulkan: token_select: the window scores are not "
                       "finite (tensors q or k hold inf or NaN)");
    *a->n_sel = res[0] > 0 ? (int64_t)res[0] + w : a->L;
    return ELA_OK;
}

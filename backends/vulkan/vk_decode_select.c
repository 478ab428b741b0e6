/* Vulkan backend: LessIsMore's token selection for one decode query (DESIGN.md 4.7, PAPERS.md
 * 3.2), the host side of shaders/decode_select*.comp: logits of every candidate (pass 1), each
 * head's top k_mid by a radix select spread over chunks of candidates (2:
 * decode_select_radix.comp, 8 dispatches), sorted by bitonic sort (3), the rank-major union and
 * the output list (4), all in one command group without a wait; the count is known on the host.
 * The budget split is the CPU backend's (integer when 4 recent is an integer).
 * decode_select_attend (a selection layer) takes pass 1 from the register decode shader in its
 * LOGITS mode: the dense attention's scores are the logits, so K is read once. */
#include <string.h>

#include "vk_sparse.h"

#define WG_LOGITS 64
#define MAX_BK 32
#define TILES 8
#define WG_SELECT 1024
#define RADIX_CHUNK 4096 /* candidates per workgroup of decode_select_radix.comp */
#define RADIX_BINS 2048  /* its histogram bins per head (11-bit digits) */
#define WG_SELECT_CPU 256

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

/* The selection's budget split, scratch layout (4-byte words from the op's scratch start: ord
 * [Hq][ncand], sel [Hq][k_mid][2], top [Hq][k_mid], first [ncand]) and passes 2-4. */
typedef struct {
    int64_t kb, k_mid, n_rec, sinks, ncand;
    uint64_t ord_w, sel_w, top_w, first_w, radix_w, hist_w;
    VkDeviceSize bytes;
    VkPipeline radix[4], sort, uni; /* radix: HIST, PICK, COUNT, COLLECT */
} select_plan;

static ela_status plan_select(vk_ctx *ctx, int64_t n, int hq, const ela_decode_select_params *dp,
                              select_plan *s) {
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    memset(s, 0, sizeof *s);
    if (dp->budget >= n) { /* every token: written as "sinks" */
        s->kb = n;
        s->sinks = n;
    } else {
        s->kb = dp->budget;
        s->k_mid = split_mid(s->kb, dp->recent);
        s->n_rec = s->kb - s->k_mid;
        s->sinks = dp->sinks;
        if (s->n_rec < s->sinks)
            s->sinks = 0;
        s->n_rec -= s->sinks;
    }
    s->ncand = s->k_mid > 0 ? n - s->n_rec - s->sinks : 0;
    s->ord_w = (uint64_t)hq * (uint64_t)s->ncand;
    s->sel_w = 2 * (uint64_t)hq * (uint64_t)s->k_mid;
    s->top_w = (uint64_t)hq * (uint64_t)s->k_mid;
    s->first_w = (uint64_t)s->ncand;
    /* decode_select_radix.comp's words: histograms, states, equal counts per chunk, counters */
    uint64_t chunks = ((uint64_t)s->ncand + RADIX_CHUNK - 1) / RADIX_CHUNK;
    s->hist_w = s->k_mid > 0 ? (uint64_t)hq * RADIX_BINS : 0;
    s->radix_w = s->k_mid > 0 ? (uint64_t)hq * (RADIX_BINS + 4 + chunks + 1) : 0;
    s->bytes = 4 * (s->ord_w + s->sel_w + s->top_w + s->first_w + s->radix_w + 4);
    if (s->bytes > lim->maxStorageBufferRange || (uint64_t)hq * (uint64_t)s->k_mid > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: decode_select: %d heads x %lld keys need "
                       "%llu bytes of logits, more than %s binds at once", hq, (long long)n,
                       (unsigned long long)s->bytes, ctx->phys->info.name);
    /* Passes 2-4 run a workgroup per head (or one in all): on a GPU as wide as it goes. */
    uint32_t wg = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? WG_SELECT_CPU
                                                                             : WG_SELECT;
    while (wg > lim->maxComputeWorkGroupInvocations || wg > lim->maxComputeWorkGroupSize[0])
        wg /= 2;
    uint32_t P = 1;
    while (P < (uint64_t)s->k_mid)
        P *= 2;
    if (8ull * P > lim->maxComputeSharedMemorySize)
        P = 0; /* counting ranks in global memory */
    uint32_t spec_wg[1] = {wg}, spec_sort[2] = {wg, P};
    ela_status st;
    for (uint32_t phase = 0; s->k_mid > 0 && phase < 4; phase++) {
        uint32_t spec_radix[3] = {wg, phase, RADIX_CHUNK};
        if ((st = vk_pipeline_get(ctx, "decode_select_radix", spec_radix, 3, &s->radix[phase])) !=
            ELA_OK)
            return st;
    }
    if (s->k_mid > 0 &&
        (st = vk_pipeline_get(ctx, "decode_select_sort", spec_sort, 2, &s->sort)) != ELA_OK)
        return st;
    return vk_pipeline_get(ctx, "decode_select_union", spec_wg, 1, &s->uni);
}

/* The passes' push constants (decode_select.glsl's meaning of the shared fields). */
static vk_attn_push select_push(const select_plan *s, const vk_tensor_binding *bq,
                                const vk_tensor_binding *bk, const vk_tensor_binding *bi,
                                int hq, int hkv, int64_t n, uint32_t kv_vec4, float scale) {
    vk_attn_push push = {
        bq->elem, bq->stride[0], bq->stride[1],
        bk->elem, bk->stride[0], bk->stride[1],
        0, 0, 0,
        bi->elem, bi->stride[0], 0,
        0, 0, 0,
        (uint32_t)hq, (uint32_t)(hq / hkv), (uint32_t)n, 0, (uint32_t)s->k_mid,
        (uint32_t)s->ncand, (uint32_t)s->sinks, 0, 0, kv_vec4, scale,
        {(uint32_t)s->ord_w, (uint32_t)(s->ord_w + s->sel_w),
         (uint32_t)(s->ord_w + s->sel_w + s->top_w), (uint32_t)s->n_rec,
         (uint32_t)(s->ord_w + s->sel_w + s->top_w + s->first_w), 0},
    };
    return push;
}

/* Zeroes the radix histograms (before the logits pass, whose barrier orders it). */
static void clear_radix(vk_ctx *ctx, const select_plan *s, VkDeviceSize scratch_off) {
    if (s->hist_w == 0)
        return;
    VkDeviceSize at = scratch_off + 4 * (s->ord_w + s->sel_w + s->top_w + s->first_w);
    vkf.CmdFillBuffer(ctx->cmd, ctx->scratch.buf, at, 4 * s->hist_w, 0);
    vk_profile_mark_copy(ctx);
}

/* Passes 2-4 after the logits (the caller's barrier before them), with the set bound. */
static void record_select(vk_ctx *ctx, const select_plan *s, vk_attn_push *push, int hq) {
    if (s->k_mid > 0) {
        uint32_t chunks = vk_div_up((uint64_t)s->ncand, RADIX_CHUNK);
        for (uint32_t level = 0; level < 3; level++) { /* HIST, PICK per digit */
            push->extra[5] = level;
            vk_bind_pipeline(ctx, s->radix[0]);
            vk_sparse_dispatch(ctx, push, chunks, (uint32_t)hq, 1);
            vk_group_barrier(ctx);
            vk_bind_pipeline(ctx, s->radix[1]);
            vk_sparse_dispatch(ctx, push, (uint32_t)hq, 1, 1);
            vk_group_barrier(ctx);
        }
        for (int phase = 2; phase < 4; phase++) { /* COUNT, COLLECT */
            vk_bind_pipeline(ctx, s->radix[phase]);
            vk_sparse_dispatch(ctx, push, chunks, (uint32_t)hq, 1);
            vk_group_barrier(ctx);
        }
        vk_bind_pipeline(ctx, s->sort);
        vk_sparse_dispatch(ctx, push, (uint32_t)hq, 1, 1);
        vk_group_barrier(ctx);
    }
    vk_bind_pipeline(ctx, s->uni);
    vk_sparse_dispatch(ctx, push, 1, 1, 1);
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
    select_plan s;
    if ((st = plan_select(ctx, a->n, a->hq, &a->p, &s)) != ELA_OK)
        return st;
    const uint64_t G = (uint64_t)(a->hq / a->hkv);
    const uint32_t DP = vk_div_up((uint64_t)a->d, 4) * 4;
    uint32_t BK = MAX_BK;
    /* q rows and K rows (padded by 4 floats) */
    while (BK > 1 && 4ull * (G * DP + BK * (DP + 4)) > lim->maxComputeSharedMemorySize)
        BK /= 2;
    if (4ull * (G * DP + BK * (DP + 4)) > lim->maxComputeSharedMemorySize)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: decode_select: %llu query heads per KV head "
                       "at d = %lld do not fit %s's shared memory", (unsigned long long)G,
                       (long long)a->d, ctx->phys->info.name);
    uint32_t spec1[8] = {WG_LOGITS, (uint32_t)a->d, (uint32_t)G, BK, vk_dtype_code(a->q->dtype),
                         vk_dtype_code(a->k->dtype), 0, TILES};
    char nm[40];
    VkPipeline logits = VK_NULL_HANDLE;
    if (s.k_mid > 0 &&
        (st = vk_pipeline_get(ctx, vk_variant(ctx, "decode_select", 0, 1, nm, sizeof nm), spec1, 8,
                              &logits)) != ELA_OK)
        return st;

    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, s.bytes, NULL, 0, NULL, 0, &set, &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, dummy, bi.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, s.bytes}};
    vk_set_write(ctx, set, infos);
    vk_attn_push push = select_push(&s, &bq, &bk, &bi, a->hq, a->hkv, a->n,
                                    vk_vec4_rows(a->d, &bk, NULL), a->scale);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    clear_radix(ctx, &s, scratch_off);
    if (s.k_mid > 0) {
        vk_bind_pipeline(ctx, logits);
        vk_sparse_dispatch(ctx, &push, vk_div_up((uint64_t)s.ncand, (uint64_t)BK * TILES),
                           (uint32_t)a->hkv, 1);
        vk_group_barrier(ctx);
    }
    record_select(ctx, &s, &push, a->hq);
    if ((st = vk_op_done(ctx, op)) != ELA_OK)
        return st;
    *a->count = s.kb;
    return ELA_OK;
}

/* The two ops one after the other: shapes the fused path does not take. */
static ela_status select_attend_apart(vk_ctx *ctx, const ela_decode_select_attend_args *a) {
    ela_status st = vk_attn_dense(ctx, &a->attn);
    if (st != ELA_OK)
        return st;
    ela_decode_select_args d = {a->attn.q, a->attn.k, a->attn.n, a->attn.d, a->attn.hq,
                                a->attn.hkv, a->attn.scale, a->p, a->idx, a->count};
    return vk_decode_select(ctx, &d);
}

ela_status vk_decode_select_attend(void *vctx, const ela_decode_select_attend_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "decode_select_attend";
    const ela_attn_dense_args *at = &a->attn;
    vk_tensor_binding bq, bk, bv, bo, bi;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, at->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, at->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, at->v, op, "v", &bv)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, at->o, op, "o", &bo)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->idx, op, "idx", &bi)) != ELA_OK)
        return st;
    select_plan s;
    vk_attn_plan p;
    int fits = 0;
    if ((st = plan_select(ctx, at->n, at->hq, &a->p, &s)) != ELA_OK ||
        (s.k_mid > 0 &&
         (st = vk_attn_decode_plan(ctx, at, &bk, &bv, (uint64_t)at->n, &p, &fits)) != ELA_OK))
        return st;
    if (!fits || at->n > INT32_MAX)
        return select_attend_apart(ctx, a);
    VkPipeline main_pipe, merge_pipe;
    if ((st = vk_attn_decode_pipelines(ctx, at, &p, 0, 1, &main_pipe, &merge_pipe)) != ELA_OK)
        return st;
    /* One scratch range for both sets: the selection's words, then the attention partials. */
    VkDeviceSize part_at = (s.bytes + 15) & ~(VkDeviceSize)15, bytes = part_at + p.scratch_bytes;
    if (bytes > ctx->phys->props.limits.maxStorageBufferRange)
        return select_attend_apart(ctx, a);
    /* Two descriptor sets (the attention writes o and the union idx through binding 3): room for
     * both first, so that taking the second cannot flush the first away. */
    if (ctx->sets_used + 2 > VK_MAX_SETS && (st = vk_flush(ctx)) != ELA_OK)
        return st;
    VkDescriptorSet sel_set, attn_set;
    VkDeviceSize scratch_off = 0, unused = 0;
    if ((st = vk_sparse_begin(ctx, bytes, NULL, 0, NULL, 0, &sel_set, &scratch_off)) != ELA_OK ||
        (st = vk_op_reserve(ctx, 0, &attn_set, &unused)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo scratch = {ctx->scratch.buf, scratch_off, bytes};
    VkDescriptorBufferInfo sel_infos[VK_BINDINGS] = {bq.info, bk.info, dummy, bi.info, dummy,
                                                     scratch};
    VkDescriptorBufferInfo attn_infos[VK_BINDINGS] = {bq.info, bk.info, bv.info, bo.info, dummy,
                                                      scratch};
    vk_set_write(ctx, sel_set, sel_infos);
    vk_set_write(ctx, attn_set, attn_infos);
    vk_attn_push sp = select_push(&s, &bq, &bk, &bi, at->hq, at->hkv, at->n,
                                  vk_vec4_rows(at->d, &bk, NULL), at->scale);
    uint32_t raw_scale;
    memcpy(&raw_scale, &at->scale, sizeof raw_scale);
    vk_attn_push ap = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        bv.elem, bv.stride[0], bv.stride[1],
        bo.elem, bo.stride[0], bo.stride[1],
        0, 0, 0,
        0, (uint32_t)(at->hq / at->hkv), (uint32_t)at->n, (uint32_t)at->q_pos0, 0, 0, 0,
        (uint32_t)(part_at / 4), 0, vk_vec4_rows(at->d, &bk, &bv), at->scale * VK_LOG2E,
        {0, sp.extra[2], (uint32_t)s.ncand, (uint32_t)s.sinks, raw_scale, 0},
    };
    clear_radix(ctx, &s, scratch_off);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1,
                              &attn_set, 0, NULL);
    vk_attn_record(ctx, &p, &ap, (uint32_t)at->hkv, main_pipe, merge_pipe);
    vk_group_barrier(ctx);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1,
                              &sel_set, 0, NULL);
    record_select(ctx, &s, &sp, at->hq);
    if ((st = vk_op_done(ctx, op)) != ELA_OK)
        return st;
    *a->count = s.kb;
    return ELA_OK;
}

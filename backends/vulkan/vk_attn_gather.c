/* Vulkan backend: attention over an index set (DESIGN.md 4.8), the host side of
 * shaders/attn_gather.comp. The same plan as dense attention (vk_attn_dense.c): BR rows of a KV
 * head per workgroup, and the list split over workgroups when the rows alone give too few
 * (decode: G rows per KV head), merged by LSE with attn_dense_merge.comp. The index list is
 * copied into the op's scratch ahead of the partials (it has no binding of its own). */
#include <string.h>

#include "vk_sparse.h"

#define MAX_WG 128
#define LANES 8
#define MERGE_WG 64
#define MAX_D 256
#define MAX_BC 32
#define MIN_SPLIT_KEYS 256
#define MAX_SPLITS 64

/* Push constants of a gather: the tensors, the list (at it) and the partials after it. */
static vk_attn_push gather_push(const ela_attn_gather_args *ga, const vk_tensor_binding *bq,
                                const vk_tensor_binding *bk, const vk_tensor_binding *bv,
                                const vk_tensor_binding *bo, const vk_tensor_binding *bl,
                                const vk_scratch_tensor *it, VkDeviceSize list_room) {
    const ela_attn_dense_args *a = &ga->attn;
    /* Not causal: every row sees every listed key, as a row past the last key would. */
    uint32_t q_pos0 = a->causal ? (uint32_t)a->q_pos0 : (uint32_t)a->n;
    vk_attn_push push = {
        bq->elem, bq->stride[0], bq->stride[1],
        bk->elem, bk->stride[0], bk->stride[1],
        bv->elem, bv->stride[0], bv->stride[1],
        bo->elem, bo->stride[0], bo->stride[1],
        bl ? bl->elem : 0, bl ? bl->stride[0] : 0, bl ? bl->stride[1] : 0,
        0, (uint32_t)(a->hq / a->hkv), (uint32_t)ga->m, q_pos0, 0, 0, bl != NULL,
        (uint32_t)(list_room / 4), 0, vk_vec4_rows(a->d, bk, bv), a->scale * VK_LOG2E,
        {it->elem, ga->per_head ? it->stride[0] : 0, 0, 0, 0, 0},
    };
    return push;
}

/* The op's scratch (the list copy, then the partials) and descriptor set, bound; a command
 * group begun with the copy recorded. */
static ela_status gather_begin(vk_ctx *ctx, const vk_tensor_binding *bq,
                               const vk_tensor_binding *bk, const vk_tensor_binding *bv,
                               const vk_tensor_binding *bo, const vk_tensor_binding *bl,
                               const vk_scratch_tensor *it, VkDeviceSize scratch_bytes) {
    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    ela_status st = vk_sparse_begin(ctx, scratch_bytes, NULL, 0, &it->copy, 1, &set, &scratch_off);
    if (st != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq->info, bk->info, bv->info, bo->info,
                                                 bl ? bl->info : dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    return ELA_OK;
}

/* Decode-shaped calls on the register decode shader (GATHER), which reads K/V rows straight
 * into registers: on an H100 a 2048-entry decode gather (Hq 32, Hkv 8, d 128) took 138 us on
 * attn_gather.comp (32-invocation workgroups, too few loads in flight) and a LessIsMore sparse
 * layer ~35 us of a 32-layer schedule on this one. *taken = 0: the shape does not fit, the
 * caller runs attn_gather.comp. */
static ela_status gather_decode(vk_ctx *ctx, const ela_attn_gather_args *ga,
                                const vk_tensor_binding *bq, const vk_tensor_binding *bk,
                                const vk_tensor_binding *bv, const vk_tensor_binding *bo,
                                const vk_tensor_binding *bl, int *taken) {
    const ela_attn_dense_args *a = &ga->attn;
    vk_attn_plan p;
    ela_status st = vk_attn_decode_plan(ctx, a, bk, bv, (uint64_t)ga->m, &p, taken);
    if (st != ELA_OK || !*taken)
        return st;
    /* The list goes to scratch ahead of the partials (binding 5 is the shader's only one). */
    vk_scratch_tensor it;
    VkDeviceSize list_room = vk_scratch_tensor_plan(ctx, ga->idx, 0, &it);
    VkDeviceSize scratch_bytes = list_room + p.scratch_bytes;
    if (scratch_bytes > ctx->phys->props.limits.maxStorageBufferRange)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_gather: an index list of %llu bytes is "
                       "more than %s binds at once", (unsigned long long)list_room,
                       ctx->phys->info.name);
    VkPipeline main_pipe, merge_pipe;
    if ((st = vk_attn_decode_pipelines(ctx, a, &p, 1, 0, &main_pipe, &merge_pipe)) != ELA_OK)
        return st;
    if ((st = gather_begin(ctx, bq, bk, bv, bo, bl, &it, scratch_bytes)) != ELA_OK)
        return st;
    vk_attn_push push = gather_push(ga, bq, bk, bv, bo, bl, &it, list_room);
    vk_attn_record(ctx, &p, &push, (uint32_t)a->hkv, main_pipe, merge_pipe);
    return vk_op_done(ctx, "attn_gather");
}

ela_status vk_attn_gather(void *vctx, const ela_attn_gather_args *ga) {
    vk_ctx *ctx = vctx;
    const char *op = "attn_gather";
    const ela_attn_dense_args *a = &ga->attn;
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (a->d > MAX_D)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_gather supports head dims up to %d, "
                       "got %lld", MAX_D, (long long)a->d);
    if (a->n > INT32_MAX || ga->m > INT32_MAX || a->L * (a->hq / a->hkv) > INT32_MAX ||
        a->q_pos0 + a->L > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_gather: more than 2^31 keys, entries or "
                       "rows");
    vk_tensor_binding bq, bk, bv, bo, bl;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->v, op, "v", &bv)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->o, op, "o", &bo)) != ELA_OK ||
        (a->lse && (st = vk_bind_tensor(ctx, a->lse, op, "lse", &bl)) != ELA_OK))
        return st;

    const int G = a->hq / a->hkv;
    int taken = 0;
    if ((st = gather_decode(ctx, ga, &bq, &bk, &bv, &bo, a->lse ? &bl : NULL, &taken)) !=
            ELA_OK ||
        taken)
        return st;
    const uint32_t rows = (uint32_t)(a->L * G), m = (uint32_t)ga->m;
    const int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t T = LANES, br_max = MAX_WG / T, BR = cpu ? 1 : br_max;
    while (BR < br_max && BR < rows)
        BR *= 2;
    uint32_t WG = BR * T;
    uint32_t DP = vk_div_up((uint64_t)a->d, 4u * T) * 4u * T;
    uint64_t per_key = 4ull * (2ull * DP + BR + 1 + (ctx->subgroup ? 0 : WG));
    uint64_t bc = vk_attn_tile_keys(ctx, per_key, 0, MAX_BC);
    if (bc < 1 || WG > lim->maxComputeWorkGroupSize[0] || WG > lim->maxComputeWorkGroupInvocations)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_gather: d = %lld does not fit %s's "
                       "shared memory or workgroup size", (long long)a->d, ctx->phys->info.name);
    uint32_t tiles = vk_div_up(rows, BR);
    uint64_t target = cpu ? 32 : 256, wgs = (uint64_t)tiles * (uint64_t)a->hkv, splits = 1;
    if (wgs < target) {
        splits = (target + wgs - 1) / wgs;
        uint64_t cap = m / MIN_SPLIT_KEYS > 1 ? m / MIN_SPLIT_KEYS : 1;
        splits = splits > cap ? cap : splits;
        splits = splits > MAX_SPLITS ? MAX_SPLITS : splits;
    }
    /* The list copy, then partials; both in one binding. */
    vk_scratch_tensor it;
    VkDeviceSize list_room = vk_scratch_tensor_plan(ctx, ga->idx, 0, &it);
    uint64_t per_split = (uint64_t)a->hkv * rows * (DP + 2u) * 4u;
    uint64_t room = lim->maxStorageBufferRange > list_room ? lim->maxStorageBufferRange - list_room
                                                           : 0;
    if (room < per_split && splits > 1)
        splits = 1;
    else if (splits > 1 && splits > room / per_split)
        splits = room / per_split;
    uint32_t split_keys = vk_div_up(vk_div_up(m ? m : 1, splits), (uint32_t)bc) * (uint32_t)bc;
    uint32_t n_splits = vk_div_up(m ? m : 1, split_keys);
    VkDeviceSize part_bytes = n_splits > 1 ? (VkDeviceSize)per_split * n_splits : 0;
    VkDeviceSize scratch_bytes = list_room + part_bytes;
    if (scratch_bytes > lim->maxStorageBufferRange)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_gather: an index list of %llu bytes is "
                       "more than %s binds at once", (unsigned long long)list_room,
                       ctx->phys->info.name);
    if ((uint32_t)a->hkv > lim->maxComputeWorkGroupCount[1] ||
        n_splits > lim->maxComputeWorkGroupCount[2])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_gather: %d KV heads exceed %s's "
                       "workgroup grid", a->hkv, ctx->phys->info.name);

    uint32_t split = n_splits > 1;
    uint32_t spec[8] = {WG, (uint32_t)a->d, T, (uint32_t)bc, vk_dtype_code(a->q->dtype),
                        vk_dtype_code(a->k->dtype), vk_dtype_code(a->o->dtype), split};
    uint32_t mspec[8] = {MERGE_WG, (uint32_t)a->d, T, 0, 0, 0, vk_dtype_code(a->o->dtype), 0};
    char nm[40], mnm[40];
    VkPipeline main_pipe, merge_pipe = VK_NULL_HANDLE;
    if ((st = vk_pipeline_get(ctx, vk_variant(ctx, "attn_gather", 1, 1, nm, sizeof nm), spec, 8,
                              &main_pipe)) != ELA_OK ||
        (split && (st = vk_pipeline_get(ctx, vk_variant(ctx, "attn_dense_merge", 0, 1, mnm,
                                                        sizeof mnm), mspec, 8, &merge_pipe)) !=
                      ELA_OK))
        return st;

    if ((st = gather_begin(ctx, &bq, &bk, &bv, &bo, a->lse ? &bl : NULL, &it, scratch_bytes)) !=
        ELA_OK)
        return st;
    vk_attn_push push = gather_push(ga, &bq, &bk, &bv, &bo, a->lse ? &bl : NULL, &it, list_room);
    push.rows = rows;
    push.split_keys = split_keys;
    push.splits = n_splits;
    vk_bind_pipeline(ctx, main_pipe);
    vk_sparse_dispatch(ctx, &push, tiles, (uint32_t)a->hkv, n_splits);
    if (split) {
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, merge_pipe);
        vk_sparse_dispatch(ctx, &push, rows, (uint32_t)a->hkv, 1);
    }
    return vk_op_done(ctx, op);
}

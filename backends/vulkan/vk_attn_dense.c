/* Vulkan backend: dense attention (DESIGN.md 4.1), the host side of shaders/attn_dense.comp
 * and attn_dense_merge.comp. Picks the tiling (rows per workgroup from the row count, the key
 * tile from the shared memory limit, shuffles or shared memory to sum a row's 8 lanes) and
 * splits the keys over workgroups when the query rows alone give too few (decode: L * G rows
 * per KV head), merging the splits by LSE in a second dispatch so one query still spreads over
 * the whole device. With NV cooperative matrices (vk_ctx.coopmat), f16 q, k and v with head
 * dims a multiple of 16 run on tensor cores (shaders/attn_dense_cm.comp: 64 or 128 rows per
 * workgroup, the same partials and merge; where vk_cm_layout.c found the lane layout it
 * needs) once there are rows enough to fill its workgroups.
 * Decode (at most DEC_MAX_ROWS rows per KV head) runs shaders/attn_dense_decode.comp where
 * subgroup shuffles are available and K/V rows are 16-byte aligned: keys straight into
 * registers, no shared tiles, the same partials and merge.
 * Records into the stream (vk_submit.c). */
#include <string.h>

#include "vk_sparse.h"

#define MAX_WG 128        /* invocations per attention workgroup: BR rows x LANES */
#define LANES 8           /* lanes per query row: d / 8 columns of q and O each */
#define MERGE_WG 64       /* invocations per merge workgroup, over the d columns */
#define MAX_D 256         /* largest head dim (registers per lane: d / T for q and O) */
#define MAX_BC 32         /* keys per tile: the per-lane score array */
#define MIN_SPLIT_KEYS 256 /* a split below this costs more to merge than it saves */
#define MAX_SPLITS 1024
/* The cooperative-matrix shaders' keys per tile, at most (fewer where shared memory is short):
 * on an H100 (d 128, 32K causal) 64-key tiles ran at 61 TFLOP/s, 32 at 56, 16 at 54. */
#define CM_BC_MAX 64
#define DEC_MAX_ROWS 16 /* rows per KV head up to which decode uses attn_dense_decode.comp */
#define DEC_NSG 4       /* its subgroups per workgroup */
#define DEC_MAX_LPK 16  /* its lanes per key row at most (and half the subgroup) */
#define DEC_REGS 64     /* its q (and O) floats per lane: rows per workgroup x elements */

static uint32_t div_up(uint64_t a, uint64_t b) { return (uint32_t)((a + b - 1) / b); }

static ela_status plan_splits(const vk_ctx *ctx, const ela_attn_dense_args *a, uint64_t keys,
                              vk_attn_plan *p);

/* Shared bytes of the cooperative-matrix shaders (attn_cm_tile.glsl) with bc keys per tile and
 * br rows per workgroup: K and V tiles in f16, rows padded by 16 bytes as the shader pads them,
 * the two 16 x 16 element tables, per 16 rows an O matrix (rows padded to 20 floats) and the
 * rows' rescale factors. */
static uint64_t cm_shared_bytes(uint64_t d, uint64_t bc, uint64_t br) {
    return 2 * bc * (d * 2 + 16) + 2048 + br / 16 * (16 * 20 + 16) * 4;
}

uint32_t vk_attn_cm_shape(const vk_ctx *ctx, const ela_attn_dense_args *a, uint64_t rows,
                          uint32_t *br) {
    if (!ctx->cm_quad || a->q->dtype != ELA_F16 || a->k->dtype != ELA_F16 ||
        a->v->dtype != ELA_F16 || a->d % 16 != 0 || a->d > MAX_D || rows < 64)
        return 0;
    uint64_t smem = ctx->phys->props.limits.maxComputeSharedMemorySize;
    uint32_t bc = ctx->cm_keys ? ctx->cm_keys : CM_BC_MAX;
    /* 128 rows (eight subgroups) share each K/V tile among twice the rows. */
    *br = ctx->cm_wide && rows >= 128 ? 128 : 64;
    while (bc > 16 && cm_shared_bytes((uint64_t)a->d, bc, *br) > smem)
        bc /= 2;
    return cm_shared_bytes((uint64_t)a->d, bc, *br) <= smem ? bc : 0;
}

/* The decode shader's shape, or 0 when it cannot run this call: it needs subgroup shuffles,
 * few rows, d * element size a multiple of 16 bytes and K/V rows on 16-byte boundaries. A key
 * row of `chunks` 16-byte pieces spreads over LPK lanes (a power of two, at most half the
 * subgroup, so that every device runs the merge of a subgroup's key slots),
 * and a workgroup takes as many rows as DEC_REGS floats of q per lane allow. */
static int decode_shape(const vk_ctx *ctx, const ela_attn_dense_args *a,
                        const vk_tensor_binding *bk, const vk_tensor_binding *bv, vk_attn_plan *p) {
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    uint32_t vec = a->k->dtype == ELA_F32 ? 4 : 8; /* elements per 16 bytes */
    uint32_t align = bk->elem | bk->stride[0] | bk->stride[1] | bv->elem | bv->stride[0] |
                     bv->stride[1];
    if (!ctx->decode || p->rows > DEC_MAX_ROWS || a->d % vec != 0 || align % vec != 0)
        return 0;
    uint32_t sg = ctx->phys->subgroup_size, chunks = (uint32_t)a->d / vec;
    p->LPK = 1;
    while (2 * p->LPK <= DEC_MAX_LPK && 4 * p->LPK <= sg && 2 * p->LPK <= chunks)
        p->LPK *= 2;
    uint32_t epl = div_up(chunks, p->LPK) * vec;
    p->BR = epl < DEC_REGS ? DEC_REGS / epl : 1;
    if (p->BR > p->rows)
        p->BR = p->rows;
    /* Key steps in flight: fewer where rows take the registers; two on a CPU device, where
     * nothing is in flight and each step is compile time (lavapipe). */
    int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    p->U = cpu || p->BR > 4 ? 2 : 4;
    p->NSG = DEC_NSG;
    while (p->NSG > 1 && (p->NSG * sg > lim->maxComputeWorkGroupInvocations ||
                          p->NSG * sg > lim->maxComputeWorkGroupSize[0]))
        p->NSG /= 2;
    p->WG = p->NSG * sg;
    uint64_t shared = 4ull * p->NSG * p->BR * ((uint64_t)a->d + 2);
    if (p->WG > lim->maxComputeWorkGroupInvocations || shared > lim->maxComputeSharedMemorySize)
        return 0;
    p->decode = 1;
    p->T = LANES; /* the merge's partial pitch is attn_dense.comp's */
    p->DP = div_up((uint64_t)a->d, 4u * p->T) * 4u * p->T;
    p->BC = p->U * (sg / p->LPK); /* keys per subgroup batch: splits are multiples of it */
    return 1;
}

static ela_status make_plan(const vk_ctx *ctx, const ela_attn_dense_args *a,
                            const vk_tensor_binding *bk, const vk_tensor_binding *bv,
                            uint32_t q_pos0, vk_attn_plan *p) {
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    memset(p, 0, sizeof *p);
    int G = a->hq / a->hkv;
    p->rows = (uint32_t)(a->L * G);
    p->T = LANES;
    /* Keys the last row sees: no workgroup goes further. */
    uint64_t keys = (uint64_t)q_pos0 + (uint64_t)a->L < (uint64_t)a->n ? q_pos0 + (uint64_t)a->L
                                                                       : (uint64_t)a->n;
    if (decode_shape(ctx, a, bk, bv, p))
        return plan_splits(ctx, a, keys, p);
    p->BC = vk_attn_cm_shape(ctx, a, p->rows, &p->BR);
    if (p->BC) {
        p->cm = 1;
        p->WG = 2 * p->BR; /* a 32-lane subgroup per 16 rows */
        p->DP = div_up((uint64_t)a->d, 4u * p->T) * 4u * p->T; /* the merge's partial pitch */
        return plan_splits(ctx, a, keys, p);
    }
    /* Rows per workgroup: MAX_WG / T. A CPU device (lavapipe) runs every invocation, so there
     * it shrinks to the rows there are (decode: G); a GPU keeps all 128 invocations, which load
     * the K/V tiles (on an H100, decode with 16-row workgroups ran twice as fast as with 4). */
    int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t br_max = MAX_WG / p->T, br_min = cpu ? 1 : br_max;
    p->BR = br_min;
    while (p->BR < br_max && p->BR < p->rows)
        p->BR *= 2;
    p->WG = p->BR * p->T;
    p->DP = div_up((uint64_t)a->d, 4u * p->T) * 4u * p->T; /* shaders: vec4 columns per lane */
    /* Shared floats per key of a tile: K and V rows, a score per row, and the per-lane partial
     * dots when they are summed through shared memory. */
    uint64_t per_key = 4ull * (2ull * p->DP + p->BR + (ctx->subgroup ? 0 : p->WG));
    uint64_t bc = vk_attn_tile_keys(ctx, per_key, 0, MAX_BC);
    if (bc < 1)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_dense: d = %lld needs %llu bytes of "
                       "shared memory, %s has %u", (long long)a->d, (unsigned long long)per_key,
                       ctx->phys->info.name, lim->maxComputeSharedMemorySize);
    p->BC = (uint32_t)bc;
    if (p->WG > lim->maxComputeWorkGroupSize[0] || p->WG > lim->maxComputeWorkGroupInvocations)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: %s runs fewer than %u invocations per "
                       "workgroup", ctx->phys->info.name, p->WG);
    return plan_splits(ctx, a, keys, p);
}

/* Row tiles, splits of the `keys` keys (or list entries) and the partials' scratch for the
 * workgroup shape in p. */
static ela_status plan_splits(const vk_ctx *ctx, const ela_attn_dense_args *a, uint64_t keys,
                              vk_attn_plan *p) {
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    p->tiles = div_up(p->rows, p->BR);
    if (keys == 0)
        keys = 1;
    /* Enough workgroups to fill the device: a few per core on a CPU device, about two per SM on
     * a GPU (Vulkan does not report the SM count; on an H100, 16-32 splits x 8 KV heads beat
     * both fewer and 64-256 splits at 32K keys). */
    uint64_t target = cpu ? 32 : 256;
    uint64_t wgs = (uint64_t)p->tiles * (uint64_t)a->hkv;
    uint64_t splits = 1;
    if (wgs < target || ctx->force_splits) {
        splits = ctx->force_splits ? ctx->force_splits : (target + wgs - 1) / wgs;
        uint64_t cap = keys / MIN_SPLIT_KEYS > 1 ? keys / MIN_SPLIT_KEYS : 1;
        if (splits > cap && !ctx->force_splits)
            splits = cap;
        if (splits > MAX_SPLITS)
            splits = MAX_SPLITS;
    }
    /* Partials must fit one binding. */
    uint64_t per_split = (uint64_t)a->hkv * p->rows * (p->DP + 2u) * 4u;
    uint64_t max_splits = lim->maxStorageBufferRange / per_split;
    if (splits > max_splits)
        splits = max_splits > 1 ? max_splits : 1;
    p->split_keys = div_up(div_up(keys, splits), p->BC) * p->BC;
    p->splits = div_up(keys, p->split_keys);
    if (p->splits > 1)
        p->scratch_bytes = (VkDeviceSize)per_split * p->splits;
    if ((uint32_t)a->hkv > lim->maxComputeWorkGroupCount[1] ||
        p->splits > lim->maxComputeWorkGroupCount[2])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_dense: %d KV heads exceed %s's "
                       "workgroup grid", a->hkv, ctx->phys->info.name);
    return ELA_OK;
}

/* The split merge's pipeline when the plan splits the keys (else VK_NULL_HANDLE). */
static ela_status merge_pipeline(vk_ctx *ctx, const ela_attn_dense_args *a, const vk_attn_plan *p,
                                 VkPipeline *merge_pipe) {
    uint32_t mspec[8] = {MERGE_WG, (uint32_t)a->d, p->T, 0, 0, 0, vk_dtype_code(a->o->dtype), 0};
    *merge_pipe = VK_NULL_HANDLE;
    if (p->splits <= 1)
        return ELA_OK;
    return vk_pipeline_get(ctx, ctx->storage16 ? "attn_dense_merge_16" : "attn_dense_merge",
                           mspec, 8, merge_pipe);
}

ela_status vk_attn_dense(void *vctx, const ela_attn_dense_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "attn_dense";
    if (a->d > MAX_D)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_dense supports head dims up to %d, "
                       "got %lld", MAX_D, (long long)a->d);
    if (a->n > INT32_MAX || a->L * (a->hq / a->hkv) > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_dense: more than 2^31 keys or query "
                       "rows");
    vk_tensor_binding bq, bk, bv, bo, bl;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->v, op, "v", &bv)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->o, op, "o", &bo)) != ELA_OK ||
        (a->lse && (st = vk_bind_tensor(ctx, a->lse, op, "lse", &bl)) != ELA_OK))
        return st;
    /* Not causal: every row sees every key, the same as a query past the last key. */
    uint32_t q_pos0 = !a->causal || a->q_pos0 >= a->n ? (uint32_t)a->n : (uint32_t)a->q_pos0;
    vk_attn_plan p;
    if ((st = make_plan(ctx, a, &bk, &bv, q_pos0, &p)) != ELA_OK)
        return st;

    /* Pipelines first: creating one can fail, and nothing is recorded yet. */
    uint32_t split = p.splits > 1;
    VkPipeline main_pipe, merge_pipe;
    if (p.decode) {
        st = vk_attn_decode_pipelines(ctx, a, &p, 0, 0, &main_pipe, &merge_pipe);
    } else {
        uint32_t spec[8] = {p.WG, (uint32_t)a->d, p.T, p.BC, vk_dtype_code(a->q->dtype),
                            vk_dtype_code(a->k->dtype), vk_dtype_code(a->o->dtype), split};
        const char *name = p.cm          ? "attn_dense_cm"
                           : ctx->subgroup ? (ctx->storage16 ? "attn_dense_sg16" : "attn_dense_sg")
                                           : (ctx->storage16 ? "attn_dense_16" : "attn_dense");
        if ((st = vk_pipeline_get(ctx, name, spec, 8, &main_pipe)) == ELA_OK)
            st = merge_pipeline(ctx, a, &p, &merge_pipe);
    }
    if (st != ELA_OK)
        return st;

    VkDescriptorSet set;
    VkDeviceSize part_at = 0;
    if ((st = vk_op_reserve(ctx, p.scratch_bytes, &set, &part_at)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, bv.info, bo.info};
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    infos[4] = a->lse ? bl.info : dummy;
    if (split) {
        VkDescriptorBufferInfo part = {ctx->scratch.buf, part_at, p.scratch_bytes};
        infos[5] = part;
    } else {
        infos[5] = dummy;
    }
    vk_set_write(ctx, set, infos);

    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        bv.elem, bv.stride[0], bv.stride[1],
        bo.elem, bo.stride[0], bo.stride[1],
        a->lse ? bl.elem : 0, a->lse ? bl.stride[0] : 0, a->lse ? bl.stride[1] : 0,
        0, (uint32_t)(a->hq / a->hkv), (uint32_t)a->n, q_pos0, 0, 0,
        a->lse != NULL, 0, 0, vk_vec4_rows(a->d, &bk, &bv), a->scale * VK_LOG2E, {0},
    };
    if ((st = vk_group_begin(ctx)) != ELA_OK)
        return st;
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vk_attn_record(ctx, &p, &push, (uint32_t)a->hkv, main_pipe, merge_pipe);
    return vk_op_done(ctx, op);
}

ela_status vk_attn_decode_plan(const vk_ctx *ctx, const ela_attn_dense_args *a,
                               const vk_tensor_binding *bk, const vk_tensor_binding *bv,
                               uint64_t keys, vk_attn_plan *p, int *fits) {
    memset(p, 0, sizeof *p);
    p->rows = (uint32_t)(a->L * (a->hq / a->hkv));
    *fits = decode_shape(ctx, a, bk, bv, p);
    return *fits ? plan_splits(ctx, a, keys, p) : ELA_OK;
}

ela_status vk_attn_decode_pipelines(vk_ctx *ctx, const ela_attn_dense_args *a,
                                    const vk_attn_plan *p, int gather, int logits,
                                    VkPipeline *main_pipe, VkPipeline *merge_pipe) {
    uint32_t split = p->splits > 1;
    uint32_t spec[12] = {p->WG, (uint32_t)a->d, p->LPK, p->BR, vk_dtype_code(a->q->dtype),
                         vk_dtype_code(a->k->dtype), vk_dtype_code(a->o->dtype), split, p->NSG, p->U,
                         (uint32_t)gather, (uint32_t)logits};
    ela_status st = vk_pipeline_get(ctx, ctx->storage16 ? "attn_dense_decode_16"
                                                        : "attn_dense_decode",
                                    spec, 12, main_pipe);
    return st != ELA_OK ? st : merge_pipeline(ctx, a, p, merge_pipe);
}

void vk_attn_record(vk_ctx *ctx, const vk_attn_plan *p, vk_attn_push *push,
                           uint32_t hkv, VkPipeline main_pipe, VkPipeline merge_pipe) {
    push->rows = p->rows;
    push->split_keys = p->split_keys;
    push->splits = p->splits;
    vk_bind_pipeline(ctx, main_pipe);
    vk_sparse_dispatch(ctx, push, p->tiles, hkv, p->splits);
    if (p->splits > 1) {
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, merge_pipe);
        vk_sparse_dispatch(ctx, push, p->rows, hkv, 1);
    }
}

/* Vulkan backend: the fused hybrid block-sparse prefill (DESIGN.md 4.2), the host side of
 * shaders/attn_blocks.comp and attn_blocks_merge.comp. Groups each KV head's query heads by
 * mode into classes (as backends/cpu/attn_blocks.c does), cuts every (class, query block) into
 * tiles of BR rows, estimates each tile's key blocks from its mode (a MASK head's mask lives on
 * the device, so it counts as dense), splits the long ones into pieces of at most CH blocks when
 * the tiles alone give too few workgroups (chunked prefill after a long prefix), and sorts the
 * items largest first: the device starts the dense heads' long rows early and fills the gaps
 * with cheap streaming and sparse items. The list, the class table and a copy of the masks go
 * into the op's scratch; one dispatch runs the items, a second merges split pieces. */
#include <stdlib.h>
#include <string.h>

#include "vk_sparse.h"

#define MAX_WG 128
#define LANES 8
#define MERGE_WG 64
#define MAX_D 256
#define MAX_BC 32
#define BLOCK ELA_BLOCK
#define HDR_WORDS 16
#define MIN_SPLIT_BLOCKS 2
#define NO_SLOT 0xffffffffu

typedef struct {
    uint32_t w[8];
} words8;

typedef struct {
    int64_t cost;
    words8 e; /* class, qb, row0, jb0, jb1, slot */
} item;

typedef struct {
    int n_cls;
    int *cls_of;   /* [hq] */
    int *cls_rep;  /* [hq] a head of the class (its mode) */
    int *cls_g, *cls_count, *cls_start; /* [hq] */
    uint32_t *heads; /* [hq] grouped by class */
} classes;

static int same_mode(const ela_head_mode *x, const ela_head_mode *y) {
    if (x->kind != y->kind)
        return 0;
    if (x->kind == ELA_HEAD_STREAMING)
        return x->sink_blocks == y->sink_blocks && x->local_blocks == y->local_blocks;
    if (x->kind == ELA_HEAD_MASK)
        return x->mask == y->mask;
    return 1;
}

/* Each KV head's query heads grouped by mode (a class never spans KV heads); heads ascending
 * within a class. cursor is scratch [hq]. */
static void make_classes(const ela_attn_blocks_args *a, classes *c, int *cursor) {
    int hq = a->attn.hq, G = hq / a->attn.hkv;
    c->n_cls = 0;
    for (int h = 0; h < hq; h++) {
        int g = h / G, k = c->n_cls - 1;
        for (; k >= 0 && c->cls_g[k] == g; k--)
            if (same_mode(&a->modes[c->cls_rep[k]], &a->modes[h]))
                break;
        if (k < 0 || c->cls_g[k] != g) {
            k = c->n_cls++;
            c->cls_g[k] = g;
            c->cls_rep[k] = h;
            c->cls_count[k] = 0;
        }
        c->cls_of[h] = k;
        c->cls_count[k]++;
    }
    for (int k = 0, at = 0; k < c->n_cls; k++) {
        c->cls_start[k] = at;
        cursor[k] = at;
        at += c->cls_count[k];
    }
    for (int h = 0; h < hq; h++)
        c->heads[cursor[c->cls_of[h]]++] = (uint32_t)h;
}

/* Key blocks a class's tile of query block M visits, estimated (MASK as dense): blocks
 * [0, nj) hold keys the rows may see. */
static int64_t est_blocks(const ela_head_mode *md, int64_t M, int64_t nj) {
    if (md->kind != ELA_HEAD_STREAMING)
        return nj;
    int64_t n = 0;
    for (int64_t J = 0; J < nj; J++)
        n += J < md->sink_blocks || J + md->local_blocks > M;
    return n;
}

static int cmp_items(const void *x, const void *y) {
    const item *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return memcmp(&a->e, &b->e, sizeof a->e);
}

ela_status vk_attn_blocks(void *vctx, const ela_attn_blocks_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "attn_blocks";
    const ela_attn_dense_args *at = &a->attn;
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (at->d > MAX_D)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_blocks supports head dims up to %d, "
                       "got %lld", MAX_D, (long long)at->d);
    if (at->n > INT32_MAX || at->L > INT32_MAX || at->q_pos0 + at->L > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_blocks: more than 2^31 keys or "
                       "positions");
    vk_tensor_binding bq, bk, bv, bo, bl;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, at->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, at->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, at->v, op, "v", &bv)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, at->o, op, "o", &bo)) != ELA_OK ||
        (at->lse && (st = vk_bind_tensor(ctx, at->lse, op, "lse", &bl)) != ELA_OK))
        return st;

    const int hq = at->hq;
    const int64_t L = at->L, n = at->n, q_pos0 = at->q_pos0, nqb = a->nqb, nkb = a->nkb;
    const int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t *host = NULL;
    item *items = NULL;
    int *ints = calloc((size_t)hq * 6, sizeof(int));
    uint32_t *heads = calloc((size_t)hq, sizeof(uint32_t));
    if (!ints || !heads) {
        st = vk_fail(ELA_ERR_OOM, "vulkan: attn_blocks: out of host memory");
        goto done;
    }
    classes c = {0, ints, ints + hq, ints + 2 * hq, ints + 3 * hq, ints + 4 * hq, heads};
    make_classes(a, &c, ints + 5 * hq);

    /* Tiling, as attn_dense's: on tensor cores (attn_blocks_cm.comp) 64 or 128 rows per
     * workgroup once there are rows enough; else T lanes per row, BR rows, and a CPU device
     * shrinks BR to the rows a class has in one block. */
    uint32_t T = LANES, br_max = MAX_WG / T, BR = br_max;
    uint32_t cm_br = 0, cm_bc = vk_attn_cm_shape(ctx, at, (uint64_t)L, &cm_br);
    if (cm_bc)
        BR = cm_br;
    else if (cpu) {
        int64_t most = 0;
        for (int k = 0; k < c.n_cls; k++)
            most = (L < BLOCK ? L : BLOCK) * c.cls_count[k] > most ? (L < BLOCK ? L : BLOCK) *
                   c.cls_count[k] : most;
        for (BR = 1; BR < br_max && BR < most; BR *= 2)
            ;
    }
    uint32_t WG = cm_bc ? 2 * BR : BR * T; /* tensor cores: a 32-lane subgroup per 16 rows */
    uint32_t DP = vk_div_up((uint64_t)at->d, 4u * T) * 4u * T;
    uint64_t per_key = 4ull * (2ull * DP + BR + (ctx->subgroup ? 0 : WG));
    uint64_t bc = cm_bc ? cm_bc : vk_attn_tile_keys(ctx, per_key, 0, MAX_BC);
    if (bc < 1 || WG > lim->maxComputeWorkGroupSize[0] || WG > lim->maxComputeWorkGroupInvocations) {
        st = vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_blocks: d = %lld does not fit %s's shared "
                     "memory or workgroup size", (long long)at->d, ctx->phys->info.name);
        goto done;
    }

    /* Tiles and their estimated blocks; then the piece length CH. */
    int64_t n_tiles = 0, total_est = 0;
    for (int64_t qb = 0; qb < nqb; qb++) {
        int64_t b0 = qb * BLOCK, nq = L - b0 < BLOCK ? L - b0 : BLOCK, M = q_pos0 / BLOCK + qb;
        int64_t kend = q_pos0 + b0 + nq < n ? q_pos0 + b0 + nq : n;
        int64_t last = M < nkb - 1 ? M : nkb - 1, nj = (kend + BLOCK - 1) / BLOCK;
        nj = nj < last + 1 ? nj : last + 1;
        for (int k = 0; k < c.n_cls; k++) {
            int64_t tiles = vk_div_up((uint64_t)(nq * c.cls_count[k]), BR);
            n_tiles += tiles;
            total_est += tiles * est_blocks(&a->modes[c.cls_rep[k]], M, nj);
        }
    }
    int64_t target = cpu ? 32 : 512;
    int64_t CH = (total_est + target - 1) / target;
    if (CH < MIN_SPLIT_BLOCKS)
        CH = MIN_SPLIT_BLOCKS;
    if (n_tiles >= target) /* enough workgroups without splitting */
        CH = INT64_MAX;
    /* Items, in two passes: the first counts them (and the merges), the second fills them. */
    int64_t n_items = 0, n_merges = 0, n_slots = 0;
    size_t cls_off = HDR_WORDS, heads_off = cls_off + 8 * (size_t)c.n_cls;
    size_t items_off = heads_off + (((size_t)hq + 3) & ~(size_t)3), merges_off = 0, words = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            merges_off = items_off + 8 * (size_t)n_items;
            words = merges_off + 8 * (size_t)n_merges;
            items = malloc((size_t)(n_items ? n_items : 1) * sizeof *items);
            host = calloc(words, sizeof *host);
            if (!items || !host) {
                st = vk_fail(ELA_ERR_OOM, "vulkan: attn_blocks: out of host memory for %lld "
                             "work items", (long long)n_items);
                goto done;
            }
        }
        n_items = n_merges = n_slots = 0;
        for (int64_t qb = 0; qb < nqb; qb++) {
            int64_t b0 = qb * BLOCK, nq = L - b0 < BLOCK ? L - b0 : BLOCK, M = q_pos0 / BLOCK + qb;
            int64_t kend = q_pos0 + b0 + nq < n ? q_pos0 + b0 + nq : n;
            int64_t last = M < nkb - 1 ? M : nkb - 1, nj = (kend + BLOCK - 1) / BLOCK;
            nj = nj < last + 1 ? nj : last + 1;
            for (int k = 0; k < c.n_cls; k++) {
                int64_t rows = nq * c.cls_count[k];
                int64_t est = est_blocks(&a->modes[c.cls_rep[k]], M, nj);
                /* pieces of `per` consecutive key blocks each over [0, nj) */
                int64_t pieces = est > CH ? (est + CH - 1) / CH : 1;
                if (pieces > nj)
                    pieces = nj > 1 ? nj : 1;
                int64_t per = (nj + pieces - 1) / (pieces ? pieces : 1);
                if (pieces > 1)
                    pieces = (nj + per - 1) / per;
                for (int64_t r0 = 0; r0 < rows; r0 += BR) {
                    int64_t tr = rows - r0 < BR ? rows - r0 : BR;
                    for (int64_t p = 0; pass == 1 && p < pieces; p++) {
                        item *it = &items[n_items + p];
                        int64_t j0 = p * per, j1 = j0 + per < nj ? j0 + per : nj;
                        memset(it, 0, sizeof *it);
                        it->e.w[0] = (uint32_t)k;
                        it->e.w[1] = (uint32_t)qb;
                        it->e.w[2] = (uint32_t)r0;
                        it->e.w[3] = pieces > 1 ? (uint32_t)j0 : 0u;
                        /* one piece: every block up to the diagonal (the shader clips) */
                        it->e.w[4] = pieces > 1 ? (uint32_t)j1 : (uint32_t)(last + 1);
                        it->e.w[5] = pieces > 1 ? (uint32_t)(n_slots + p) : NO_SLOT;
                        it->cost = tr * ((est + pieces - 1) / pieces) + 1;
                    }
                    n_items += pieces;
                    if (pieces > 1) {
                        if (pass == 1) {
                            uint32_t *me = host + merges_off + 8 * (size_t)n_merges;
                            me[0] = (uint32_t)k;
                            me[1] = (uint32_t)qb;
                            me[2] = (uint32_t)r0;
                            me[3] = (uint32_t)n_slots;
                            me[4] = (uint32_t)pieces;
                        }
                        n_merges++;
                        n_slots += pieces;
                    }
                }
            }
        }
    }
    qsort(items, (size_t)n_items, sizeof *items, cmp_items);

    /* Pipelines before anything is recorded. */
    uint32_t spec[8] = {WG, (uint32_t)at->d, T, (uint32_t)bc, vk_dtype_code(at->q->dtype),
                        vk_dtype_code(at->k->dtype), vk_dtype_code(at->o->dtype), 0};
    uint32_t mspec[8] = {MERGE_WG, (uint32_t)at->d, T, 0, 0, 0, vk_dtype_code(at->o->dtype), BR};
    char nm[40], mnm[40];
    VkPipeline main_pipe, merge_pipe = VK_NULL_HANDLE;
    if ((st = vk_pipeline_get(ctx, cm_bc ? "attn_blocks_cm"
                                         : vk_variant(ctx, "attn_blocks", 1, 1, nm, sizeof nm),
                              spec, 8, &main_pipe)) != ELA_OK ||
        (n_merges && (st = vk_pipeline_get(ctx, vk_variant(ctx, "attn_blocks_merge", 0, 1, mnm,
                                                           sizeof mnm), mspec, 8, &merge_pipe)) !=
                         ELA_OK))
        goto done;

    /* Scratch: the list (host words), the mask copy, the partials. */
    VkDeviceSize host_bytes = words * 4, list_room = (host_bytes + 15) & ~(VkDeviceSize)15;
    vk_scratch_tensor mt;
    VkDeviceSize mask_room = 0;
    if (a->masks)
        mask_room = vk_scratch_tensor_plan(ctx, a->masks, list_room, &mt);
    VkDeviceSize part_at = list_room + mask_room;
    VkDeviceSize part_bytes = (VkDeviceSize)n_slots * BR * (DP + 2u) * 4u;
    VkDeviceSize scratch_bytes = part_at + part_bytes;
    if (scratch_bytes > lim->maxStorageBufferRange) {
        st = vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_blocks: the work list and partials need "
                     "%llu bytes, more than %s binds at once", (unsigned long long)scratch_bytes,
                     ctx->phys->info.name);
        goto done;
    }
    host[0] = (uint32_t)L;
    host[1] = (uint32_t)(q_pos0 / BLOCK);
    host[2] = (uint32_t)nkb;
    host[3] = (uint32_t)cls_off;
    host[4] = (uint32_t)heads_off;
    host[5] = (uint32_t)items_off;
    host[6] = (uint32_t)merges_off;
    host[7] = a->masks ? mt.elem : 0;
    host[8] = a->masks ? mt.stride[0] : 0;
    host[9] = a->masks ? mt.stride[1] : 0;
    for (int k = 0; k < c.n_cls; k++) {
        const ela_head_mode *md = &a->modes[c.cls_rep[k]];
        uint32_t *ce = host + cls_off + 8 * (size_t)k;
        ce[0] = (uint32_t)c.cls_g[k];
        ce[1] = (uint32_t)c.cls_count[k];
        ce[2] = (uint32_t)md->kind;
        ce[3] = md->kind == ELA_HEAD_STREAMING ? (uint32_t)md->sink_blocks : 0;
        ce[4] = md->kind == ELA_HEAD_STREAMING ? (uint32_t)md->local_blocks : 0;
        ce[5] = md->kind == ELA_HEAD_MASK ? (uint32_t)md->mask : 0;
        ce[6] = (uint32_t)c.cls_start[k];
    }
    memcpy(host + heads_off, heads, (size_t)hq * sizeof *heads);
    for (int64_t x = 0; x < n_items; x++)
        memcpy(host + items_off + 8 * (size_t)x, items[x].e.w, sizeof items[x].e.w);

    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, host, host_bytes, a->masks ? &mt.copy : NULL,
                              a->masks ? 1 : 0, &set, &scratch_off)) != ELA_OK)
        goto done;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bq.info, bk.info, bv.info, bo.info,
                                                 at->lse ? bl.info : dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    uint32_t kv_vec4 = vk_vec4_rows(at->d, &bk, &bv);
    vk_attn_push push = {
        bq.elem, bq.stride[0], bq.stride[1],
        bk.elem, bk.stride[0], bk.stride[1],
        bv.elem, bv.stride[0], bv.stride[1],
        bo.elem, bo.stride[0], bo.stride[1],
        at->lse ? bl.elem : 0, at->lse ? bl.stride[0] : 0, at->lse ? bl.stride[1] : 0,
        0, 0, (uint32_t)n, (uint32_t)q_pos0, 0, 0, at->lse != NULL, (uint32_t)(part_at / 4), 0,
        kv_vec4, at->scale * VK_LOG2E, {0},
    };
    vk_bind_pipeline(ctx, main_pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vk_sparse_dispatch(ctx, &push, (uint32_t)n_items, 1, 1);
    if (n_merges) {
        vk_group_barrier(ctx);
        vk_bind_pipeline(ctx, merge_pipe);
        vk_sparse_dispatch(ctx, &push, (uint32_t)n_merges, 1, 1);
    }
    st = vk_op_done(ctx, op);
done:
    free(host);
    free(items);
    free(heads);
    free(ints);
    return st;
}

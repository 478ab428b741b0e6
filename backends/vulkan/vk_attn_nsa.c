/* Vulkan backend: gated attention of SSA models (DESIGN.md 4.9, PAPERS.md 4.3 steps 6-7), the
 * host side of shaders/attn_nsa.comp (attention over the keys of each row's listed blocks) and
 * shaders/attn_nsa_gate.comp (full mode: vk_attn_dense.c, then o *= gate in place). The block
 * lists are read back and checked here before anything is recorded (one wait per call: entries
 * -1 or in [0, ceil(n / B)), no block twice in a list; the first bad one named as the CPU backend
 * names it), then copied with the gate into the op's scratch. Workgroups: a query row and a
 * chunk of up to 16 of the G heads that share its list. */
#include <stdlib.h>
#include <string.h>

#include "vk_sparse.h"

#define MAX_WG 128
#define LANES 8
#define MAX_D 256
#define MAX_BC 32
#define GATE_WG 64

/* Reads the block lists and checks them (backends/cpu/attn_nsa.c's rule and message). */
static ela_status check_lists(vk_ctx *ctx, const ela_attn_nsa_args *na, int64_t nkb) {
    const ela_tensor *t = na->blocks;
    const int64_t L = t->extents[0], hkv = t->extents[1], top = t->extents[2];
    int64_t span = 4;
    for (int i = 0; i < 3; i++)
        span += (t->extents[i] - 1) * t->strides[i];
    char *host = malloc((size_t)span);
    if (!host)
        return vk_fail(ELA_ERR_OOM, "vulkan: attn_nsa: out of host memory to check %lld bytes of "
                       "block lists", (long long)span);
    ela_status st = vk_buffer_read(ctx, t->buffer->handle, t->offset, host, (size_t)span);
    for (int64_t i = 0; i < L && st == ELA_OK; i++)
        for (int64_t g = 0; g < hkv && st == ELA_OK; g++) {
            const char *list = host + i * t->strides[0] + g * t->strides[1];
            for (int64_t x = 0; x < top && st == ELA_OK; x++) {
                int32_t b;
                memcpy(&b, list + x * t->strides[2], 4);
                if (b == -1)
                    continue;
                if (b < -1 || b >= nkb) {
                    st = vk_fail(ELA_ERR_INVALID_ARG, "ela_attn_nsa: tensor blocks[%lld, %lld, "
                                 "%lld] = %d is out of range (-1 or [0, %lld) for n = %lld, block "
                                 "%d)", (long long)i, (long long)g, (long long)x, (int)b,
                                 (long long)nkb, (long long)na->attn.n, na->block);
                    break;
                }
                for (int64_t y = 0; y < x; y++) {
                    int32_t c;
                    memcpy(&c, list + y * t->strides[2], 4);
                    if (c == b) {
                        st = vk_fail(ELA_ERR_INVALID_ARG, "ela_attn_nsa: tensor blocks[%lld, %lld, "
                                     "%lld] = %d repeats a block of the same list", (long long)i,
                                     (long long)g, (long long)x, (int)b);
                        break;
                    }
                }
            }
        }
    free(host);
    return st;
}

/* Full mode: o *= gate after the dense attention. */
static ela_status gate_pass(vk_ctx *ctx, const ela_attn_nsa_args *na) {
    const char *op = "attn_nsa";
    const ela_attn_dense_args *a = &na->attn;
    vk_tensor_binding bo;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->o, op, "o", &bo)) != ELA_OK)
        return st;
    if (a->L * a->hq > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_nsa: more than 2^32 query rows");
    vk_scratch_tensor gt;
    VkDeviceSize gate_room = vk_scratch_tensor_plan(ctx, na->gate, 0, &gt);
    uint32_t wg = GATE_WG;
    while (wg > 1 && wg > ctx->phys->props.limits.maxComputeWorkGroupInvocations)
        wg /= 2;
    uint32_t spec[7] = {wg, (uint32_t)a->d, 0, 0, 0, 0, vk_dtype_code(a->o->dtype)};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "attn_nsa_gate", spec, 7, &pipe)) != ELA_OK)
        return st;
    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, gate_room, NULL, 0, &gt.copy, 1, &set, &scratch_off)) !=
        ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {dummy, dummy, dummy, bo.info, dummy,
                                                 {ctx->scratch.buf, scratch_off, gate_room}};
    vk_set_write(ctx, set, infos);
    vk_attn_push push;
    memset(&push, 0, sizeof push);
    push.o_off = bo.elem;
    push.o_s0 = bo.stride[0];
    push.o_s1 = bo.stride[1];
    push.lse_off = gt.elem;
    push.lse_s0 = gt.stride[0];
    push.lse_s1 = gt.stride[1];
    push.rows = (uint32_t)a->L;
    push.G = (uint32_t)a->hq;
    vk_bind_pipeline(ctx, pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vk_sparse_dispatch(ctx, &push, (uint32_t)(a->L * a->hq), 1, 1);
    return vk_op_done(ctx, op);
}

ela_status vk_attn_nsa(void *vctx, const ela_attn_nsa_args *na) {
    vk_ctx *ctx = vctx;
    const char *op = "attn_nsa";
    const ela_attn_dense_args *a = &na->attn;
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (a->d > MAX_D)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_nsa supports head dims up to %d, got "
                       "%lld", MAX_D, (long long)a->d);
    if (a->n > INT32_MAX || a->q_pos0 + a->L > INT32_MAX || (int64_t)na->top * na->block > INT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_nsa: more than 2^31 keys or rows");
    ela_status st;
    if (!na->blocks) {
        if ((st = vk_attn_dense(vctx, a)) != ELA_OK || !na->gate)
            return st;
        return gate_pass(ctx, na);
    }
    const int64_t nkb = (a->n + na->block - 1) / na->block;
    if ((st = check_lists(ctx, na, nkb)) != ELA_OK)
        return st;
    vk_tensor_binding bq, bk, bv, bo;
    if ((st = vk_bind_tensor(ctx, a->q, op, "q", &bq)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->k, op, "k", &bk)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->v, op, "v", &bv)) != ELA_OK ||
        (st = vk_bind_tensor(ctx, a->o, op, "o", &bo)) != ELA_OK)
        return st;

    const uint32_t G = (uint32_t)(a->hq / a->hkv), T = LANES, br_max = MAX_WG / T;
    uint32_t BR = 1;
    while (BR < br_max && BR < G)
        BR *= 2;
    const uint32_t WG = BR * T, chunks = (G + BR - 1) / BR;
    const uint32_t DP = vk_div_up((uint64_t)a->d, 4u * T) * 4u * T;
    const uint64_t fixed = 4ull * ((uint64_t)na->top + 1);
    const uint64_t per_key = 4ull * (2ull * DP + BR + 1 + (ctx->subgroup ? 0 : WG));
    uint64_t bc = vk_attn_tile_keys(ctx, per_key, fixed, MAX_BC);
    if (bc < 1 || WG > lim->maxComputeWorkGroupSize[0] || WG > lim->maxComputeWorkGroupInvocations)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_nsa: d = %lld with top %d does not fit "
                       "%s's shared memory or workgroup size", (long long)a->d, na->top,
                       ctx->phys->info.name);
    if ((uint64_t)a->L * chunks > UINT32_MAX || (uint32_t)a->hkv > lim->maxComputeWorkGroupCount[1])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_nsa: %lld rows of %d KV heads exceed "
                       "%s's workgroup grid", (long long)a->L, a->hkv, ctx->phys->info.name);
    /* Scratch: the block lists, then the gate. */
    vk_scratch_copy copies[2];
    vk_scratch_tensor bt, gt;
    memset(&gt, 0, sizeof gt);
    VkDeviceSize scratch_bytes = vk_scratch_tensor_plan(ctx, na->blocks, 0, &bt);
    copies[0] = bt.copy;
    int n_copies = 1;
    if (na->gate) {
        scratch_bytes += vk_scratch_tensor_plan(ctx, na->gate, scratch_bytes, &gt);
        copies[n_copies++] = gt.copy;
    }
    if (scratch_bytes > lim->maxStorageBufferRange)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: attn_nsa: block lists of %llu bytes are more "
                       "than %s binds at once", (unsigned long long)scratch_bytes,
                       ctx->phys->info.name);

    uint32_t spec[8] = {WG, (uint32_t)a->d, T, (uint32_t)bc, vk_dtype_code(a->q->dtype),
                        vk_dtype_code(a->k->dtype), vk_dtype_code(a->o->dtype),
                        (uint32_t)na->top};
    char nm[40];
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, vk_variant(ctx, "attn_nsa", 1, 1, nm, sizeof nm), spec, 8,
                              &pipe)) != ELA_OK)
        return st;
    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, NULL, 0, copies, n_copies, &set,
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
        gt.elem, gt.stride[0], gt.stride[1],
        (uint32_t)a->L, G, (uint32_t)a->n, (uint32_t)a->q_pos0, (uint32_t)na->block,
        (uint32_t)na->top, na->gate != NULL, 0, 0, kv_vec4, a->scale * VK_LOG2E,
        {bt.elem, bt.stride[0], bt.stride[1], bt.stride[2], (uint32_t)nkb, chunks},
    };
    vk_bind_pipeline(ctx, pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vk_sparse_dispatch(ctx, &push, (uint32_t)(a->L * chunks), (uint32_t)a->hkv, 1);
    return vk_op_done(ctx, op);
}

/* Vulkan backend: Elastic Attention's router (DESIGN.md 4.4, PAPERS.md 1.3), the host side of
 * shaders/router_eval.comp. The ten weights and biases are copied into the op's scratch (they
 * have no bindings of their own) behind a header naming each one's offset, row stride and dtype;
 * the pre-RoPE keys are bound in place. The decision goes to host arrays, so the op waits for
 * the device and reads the [Hkv, 2] logits back. */
#include <string.h>

#include "vk_sparse.h"

#define WG 256
#define HDR_WORDS 32

ela_status vk_router_eval(void *vctx, const ela_router_eval_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "router_eval";
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    if (a->L > UINT32_MAX / 2 || a->d > 65536 || a->hidden > 65536)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: router_eval: sizes beyond 32-bit indices");
    uint64_t shared = 4ull * (3ull * (uint64_t)a->d + 2ull * (uint64_t)a->hidden + 2);
    if (shared > lim->maxComputeSharedMemorySize)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: router_eval: d = %lld and hidden width %lld "
                       "need %llu bytes of shared memory, %s has %u", (long long)a->d,
                       (long long)a->hidden, (unsigned long long)shared, ctx->phys->info.name,
                       lim->maxComputeSharedMemorySize);
    vk_tensor_binding bk;
    ela_status st;
    if ((st = vk_bind_tensor(ctx, a->k_pre, op, "k_pre", &bk)) != ELA_OK)
        return st;
    const ela_tensor *w[10] = {a->w.task_w1,  a->w.task_b1,  a->w.task_w2,  a->w.task_b2,
                               a->w.route_w1, a->w.route_b1, a->w.route_w2, a->w.route_b2,
                               a->w.route_w3, a->w.route_b3};
    uint32_t hdr[HDR_WORDS];
    memset(hdr, 0, sizeof hdr);
    vk_scratch_copy copies[10];
    VkDeviceSize at = 4 * HDR_WORDS;
    for (int i = 0; i < 10; i++) {
        vk_scratch_tensor t;
        at += vk_scratch_tensor_plan(ctx, w[i], at, &t);
        copies[i] = t.copy;
        hdr[3 * i] = t.elem;
        hdr[3 * i + 1] = w[i]->n_dims == 2 ? (uint32_t)(w[i]->strides[0] /
                                                        (int64_t)vk_dtype_size(w[i]->dtype)) : 0;
        hdr[3 * i + 2] = vk_dtype_code(w[i]->dtype);
    }
    const VkDeviceSize out_at = at, scratch_bytes = at + 8ull * (uint64_t)a->hkv;
    if (scratch_bytes > lim->maxStorageBufferRange ||
        (uint32_t)a->hkv > lim->maxComputeWorkGroupCount[0])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: router_eval: weights of %llu bytes or %d KV "
                       "heads exceed %s's limits", (unsigned long long)at, a->hkv,
                       ctx->phys->info.name);
    uint32_t wg = WG;
    while (wg > lim->maxComputeWorkGroupInvocations || wg > lim->maxComputeWorkGroupSize[0])
        wg /= 2;
    /* constant 5 is KT, the dtype of binding 1 (shaders/attn_io.glsl) */
    uint32_t spec[6] = {wg, (uint32_t)a->d, (uint32_t)a->hidden, 0, 0,
                        vk_dtype_code(a->k_pre->dtype)};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "router_eval", spec, 6, &pipe)) != ELA_OK)
        return st;
    VkDescriptorSet set;
    VkDeviceSize scratch_off = 0;
    if ((st = vk_sparse_begin(ctx, scratch_bytes, hdr, sizeof hdr, copies, 10, &set,
                              &scratch_off)) != ELA_OK)
        return st;
    VkDescriptorBufferInfo dummy = {ctx->dummy.buf, 0, VK_WHOLE_SIZE};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {dummy, bk.info, dummy, dummy, dummy,
                                                 {ctx->scratch.buf, scratch_off, scratch_bytes}};
    vk_set_write(ctx, set, infos);
    vk_attn_push push;
    memset(&push, 0, sizeof push);
    push.k_off = bk.elem;
    push.k_s0 = bk.stride[0];
    push.k_s1 = bk.stride[1];
    push.rows = (uint32_t)a->L;
    push.n = (uint32_t)a->d;
    push.G = (uint32_t)a->hidden;
    push.part_off = (uint32_t)(out_at / 4);
    vk_bind_pipeline(ctx, pipe);
    vkf.CmdBindDescriptorSets(ctx->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->layout, 0, 1, &set, 0,
                              NULL);
    vk_sparse_dispatch(ctx, &push, (uint32_t)a->hkv, 1, 1);
    if ((st = vk_op_done(ctx, op)) != ELA_OK)
        return st;
    const void *out;
    if ((st = vk_sparse_readback(ctx, scratch_off + out_at, 8ull * (uint64_t)a->hkv, &out)) !=
        ELA_OK)
        return st;
    const float *z = out;
    for (int g = 0; g < a->hkv; g++) {
        a->full[g] = z[2 * g + 1] > z[2 * g]; /* class 1 is FULL; a tie is sparse */
        if (a->logits) {
            a->logits[2 * g] = z[2 * g];
            a->logits[2 * g + 1] = z[2 * g + 1];
        }
    }
    return ELA_OK;
}

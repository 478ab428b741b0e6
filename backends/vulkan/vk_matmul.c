/* Vulkan backend: matmul (ela.h "Model ops"), the host side of shaders/matmul_gemv.comp (M <= 8:
 * decode, memory-bound) and shaders/matmul.comp (M > 8: prefill, 64 x 64 tiles). Picks the
 * kernel, its lanes per weight row (the subgroup size up to 32, so shuffles add a row's sums),
 * the vector-load variants the alignment of x and w allows, and cuts the operands into pieces
 * that each fit one binding (lavapipe binds at most 128 MiB: a Qwen2.5 0.5B embedding used as
 * lm_head is 272 MB in f16), one dispatch per piece. */
#include <string.h>

#include "vk_model.h"

#define GEMV_MAX_M 8
#define GEMM_TILE 64

/* Mirrors `Push` in shaders/matmul_io.glsl. */
typedef struct {
    uint32_t x_off, x_s, w_off, w_s, y_off, y_s, b_off, has_bias, M, N, K;
} mm_push;

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Rows of a tensor with row stride `stride` and `row` bytes of data per row that fit `limit`
 * bytes (at least 0). */
static uint64_t rows_fitting(uint64_t limit, uint64_t stride, uint64_t row) {
    if (row > limit)
        return 0;
    return stride == 0 ? UINT64_MAX : (limit - row) / stride + 1;
}

ela_status vk_matmul(void *vctx, const ela_matmul_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "matmul";
    const VkPhysicalDeviceLimits *lim = &ctx->phys->props.limits;
    const uint64_t M = (uint64_t)a->M, N = (uint64_t)a->N, K = (uint64_t)a->K;
    const uint64_t xs = (uint64_t)a->x->strides[0], ws = (uint64_t)a->w->strides[0],
                   ys = (uint64_t)a->y->strides[0];
    const uint32_t wt = vk_mt_code(a->w->dtype);
    const uint64_t w_row = wt == VK_MT_Q8_0 ? K / 32 * 34 : K * vk_mt_unit(a->w->dtype);
    const uint64_t limit = vk_mt_bind_limit(ctx);
    if (K > UINT32_MAX / 4)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: matmul: K = %llu exceeds 32-bit offsets",
                       (unsigned long long)K);
    const int gemv = M <= GEMV_MAX_M;
    const int cpu = ctx->phys->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    /* GEMV: LPR lanes per weight row; shuffles need them inside one subgroup. */
    uint32_t lpr = ctx->subgroup ? (ctx->phys->subgroup_size < 32 ? ctx->phys->subgroup_size : 32)
                                 : (cpu ? 8u : 32u);
    uint32_t wg = cpu ? 64u : 128u;
    if (wg > lim->maxComputeWorkGroupInvocations || wg > lim->maxComputeWorkGroupSize[0] ||
        256u > lim->maxComputeWorkGroupInvocations || 256u > lim->maxComputeWorkGroupSize[0])
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: matmul: %s runs fewer than 256 invocations "
                       "per workgroup", ctx->phys->info.name);
    if (lpr > wg)
        lpr = wg;
    const uint64_t rows_per_group = gemv ? wg / lpr : GEMM_TILE;

    /* Pieces: weight rows [n0, n0 + n_piece), activation rows [m0, m0 + m_piece), so that w, x,
     * y and bias each fit a binding and the grid the device's workgroup counts. */
    uint64_t n_piece = min_u64(N, rows_fitting(limit, ws, w_row));
    n_piece = min_u64(n_piece, limit / 4);
    n_piece = min_u64(n_piece, (uint64_t)lim->maxComputeWorkGroupCount[0] * rows_per_group);
    uint64_t m_piece = min_u64(M, rows_fitting(limit, xs, K * 4));
    m_piece = min_u64(m_piece, rows_fitting(limit, ys, n_piece * 4));
    if (!gemv)
        m_piece = min_u64(m_piece, (uint64_t)lim->maxComputeWorkGroupCount[1] * GEMM_TILE);
    if (n_piece == 0 || m_piece == 0)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: matmul: one row of x, w or y exceeds %s's "
                       "largest binding (%u bytes)", ctx->phys->info.name,
                       lim->maxStorageBufferRange);

    ela_status st;
    for (uint64_t m0 = 0; m0 < M; m0 += m_piece) {
        const uint64_t mc = min_u64(m_piece, M - m0);
        for (uint64_t n0 = 0; n0 < N; n0 += n_piece) {
            const uint64_t nc = min_u64(n_piece, N - n0);
            vk_mt_bind bx, bw, by, bb;
            memset(&bb, 0, sizeof bb);
            /* K = 0: nothing of x or w is read (y = bias): both bind the dummy. */
            const uint64_t x_hi = K ? (m0 + mc - 1) * xs + K * 4 : 0;
            const uint64_t w_hi = K ? (n0 + nc - 1) * ws + w_row : 0;
            if ((st = vk_mt_bind_range(ctx, a->x, m0 * xs, x_hi, op, "x", &bx)) != ELA_OK ||
                (st = vk_mt_bind_range(ctx, a->w, n0 * ws, w_hi, op, "w", &bw)) != ELA_OK ||
                (st = vk_mt_bind_range(ctx, a->y, m0 * ys + n0 * 4,
                                       (m0 + mc - 1) * ys + (n0 + nc) * 4, op, "y", &by)) !=
                    ELA_OK ||
                (a->bias && (st = vk_mt_bind_range(ctx, a->bias, n0 * 4, (n0 + nc) * 4, op,
                                                   "bias", &bb)) != ELA_OK))
                return st;
            mm_push push = {bx.byte / 4, (uint32_t)(xs / 4), bw.byte, (uint32_t)ws,
                            by.byte / 4, (uint32_t)(ys / 4), bb.byte / 4, a->bias != NULL,
                            (uint32_t)mc, (uint32_t)nc, (uint32_t)K};
            VkPipeline pipe;
            uint32_t gx, gy;
            if (gemv) {
                const uint32_t wvec = wt != VK_MT_Q8_0 && bw.byte % 16 == 0 &&
                                      (ws % 16 == 0 || nc == 1);
                const uint32_t xvec = bx.byte % 16 == 0 && (xs % 16 == 0 || mc == 1);
                const uint32_t spec[6] = {wg, lpr, (uint32_t)mc, wt, wvec, xvec};
                st = vk_pipeline_get(ctx, ctx->subgroup ? "matmul_gemv_sg" : "matmul_gemv", spec,
                                     6, &pipe);
                gx = (uint32_t)((nc + rows_per_group - 1) / rows_per_group);
                gy = 1;
            } else {
                const uint32_t spec[4] = {0, 0, 0, wt};
                st = vk_pipeline_get(ctx, "matmul", spec, 4, &pipe);
                gx = (uint32_t)((nc + GEMM_TILE - 1) / GEMM_TILE);
                gy = (uint32_t)((mc + GEMM_TILE - 1) / GEMM_TILE);
            }
            VkDescriptorBufferInfo infos[VK_BINDINGS] = {bx.info, bw.info, bb.info, by.info};
            if (st != ELA_OK ||
                (st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push, gx, gy)) != ELA_OK)
                return st;
        }
    }
    return vk_op_done(ctx, op);
}

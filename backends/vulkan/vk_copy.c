/* Vulkan backend: copy (ela.h "Model ops"), the host side of shaders/copy.comp: src and dst as
 * rows of their last dim (any rank up to 4, each its own strides), a work unit per destination
 * element, word or q8_0 block (the same dtype: a raw word). When src or dst is wider than one
 * binding (keys appended to a view of a large KV cache), the outermost dim is cut into pieces
 * that fit, one dispatch per piece. */
#include <string.h>

#include "vk_model.h"

/* Mirrors `Push` in shaders/copy.comp. */
typedef struct {
    uint32_t s_off, d_off, inner, e1, e2;
    uint32_t ss[3], ds[3];
    uint32_t units, total;
} copy_push;

/* Work units of a row of `inner` elements (shaders/copy.comp). */
static uint64_t units_per_row(ela_dtype sdt, ela_dtype ddt, uint64_t inner) {
    if (sdt == ddt) { /* destination words a row of raw bytes can touch, at any alignment */
        uint64_t nb = ddt == ELA_Q8_0 ? inner / 32 * 34 : inner * vk_mt_unit(ddt);
        return (nb + 6) / 4;
    }
    switch (ddt) {
    case ELA_F32: return inner;
    case ELA_Q8_0: return inner / 32;
    default: return (2 * inner + 5) / 4; /* words of 2 * inner bytes at an even offset */
    }
}

ela_status vk_copy(void *vctx, const ela_copy_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "copy";
    const ela_tensor *s = a->src, *d = a->dst;
    vk_mt_rows rs, rd;
    vk_mt_rows_of(s, &rs);
    vk_mt_rows_of(d, &rd);
    const uint64_t inner = (uint64_t)s->extents[s->n_dims - 1];
    const uint64_t units = units_per_row(s->dtype, d->dtype, inner);
    if (rs.rows * units > UINT32_MAX || inner > UINT32_MAX / 4 || rs.rows > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: copy: %llu rows of %llu exceed 32-bit "
                       "indices", (unsigned long long)rs.rows, (unsigned long long)inner);
    /* Pieces along the outermost outer dim k with more than one index (the shader's row
     * decomposition still holds for a piece: only dim k's range shrinks). */
    int k = 0;
    while (k < 2 && rs.ext[k] == 1)
        k++;
    const uint64_t ext = rs.ext[k], per = rs.rows / ext; /* rows per index of dim k */
    const uint64_t sk = (uint64_t)rs.s[k], dk = (uint64_t)rd.s[k];
    /* Bytes of one index of dim k, then how many indices fit a binding. */
    const uint64_t s_rest = vk_mt_span(s) - (ext - 1) * sk;
    const uint64_t d_rest = vk_mt_span(d) - (ext - 1) * dk;
    const uint64_t limit = vk_mt_bind_limit(ctx);
    uint64_t piece = ext;
    if (s_rest > limit || d_rest > limit)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: copy: one slice of tensor %s (%llu bytes) "
                       "exceeds %s's largest binding", s_rest > limit ? "src" : "dst",
                       (unsigned long long)(s_rest > d_rest ? s_rest : d_rest),
                       ctx->phys->info.name);
    if (sk > 0 && (limit - s_rest) / sk + 1 < piece)
        piece = (limit - s_rest) / sk + 1;
    if (dk > 0 && (limit - d_rest) / dk + 1 < piece)
        piece = (limit - d_rest) / dk + 1;

    const uint32_t spec[3] = {VK_MT_WG, vk_mt_code(s->dtype), vk_mt_code(d->dtype)};
    VkPipeline pipe;
    ela_status st = vk_pipeline_get(ctx, "copy", spec, 3, &pipe);
    if (st != ELA_OK)
        return st;
    for (uint64_t i0 = 0; i0 < ext; i0 += piece) {
        const uint64_t i1 = ext - i0 < piece ? ext : i0 + piece;
        vk_mt_bind bs, bd;
        if ((st = vk_mt_bind_range(ctx, s, i0 * sk, (i1 - 1) * sk + s_rest, op, "src", &bs)) !=
                ELA_OK ||
            (st = vk_mt_bind_range(ctx, d, i0 * dk, (i1 - 1) * dk + d_rest, op, "dst", &bd)) !=
                ELA_OK)
            return st;
        copy_push push;
        push.s_off = bs.byte;
        push.d_off = bd.byte;
        push.inner = (uint32_t)inner;
        push.e1 = rs.e1;
        push.e2 = rs.e2;
        for (int i = 0; i < 3; i++) {
            push.ss[i] = (uint32_t)rs.s[i];
            push.ds[i] = (uint32_t)rd.s[i];
        }
        push.units = (uint32_t)units;
        push.total = (uint32_t)((i1 - i0) * per * units);
        VkDescriptorBufferInfo infos[VK_BINDINGS] = {bs.info, {0}, {0}, bd.info};
        if ((st = vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push,
                                 vk_mt_groups(ctx, push.total, VK_MT_WG), 1)) != ELA_OK)
            return st;
    }
    return vk_op_done(ctx, op);
}

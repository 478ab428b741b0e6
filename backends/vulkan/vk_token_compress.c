/* Vulkan backend: token_compress / token_decompress (ela.h, Token Sparse Attention's gather and
 * scatter), the host side of shaders/token_compress.comp: raw row copies (any dtype, q8_0 rows
 * too) driven by the index lists on the device; the decompress writes every row of o, zeros
 * where a head's list skips it. */
#include "vk_model.h"

/* Mirrors `Push` in shaders/token_compress.comp. */
typedef struct {
    uint32_t s_off, s_row, s_head, d_off, d_row, d_head, idx_off, idx_s;
    uint32_t rows, n_sel, G, row_bytes, units, total;
} tc_push;

/* One tensor's copy: mode 0 gathers dst row (h, i) from src row (idx[h][i], h / G), mode 1
 * scatters src row (i, h) to dst row (h, idx[h][i]) and zeroes the rest. Strides in bytes. */
static ela_status copy_rows(vk_ctx *ctx, uint32_t mode, const ela_tensor *src, const char *sname,
                            int64_t s_row, int64_t s_head, ela_tensor *dst, const char *dname,
                            int64_t d_row, int64_t d_head, const ela_tensor *idx, int64_t rows,
                            int64_t n_sel, int hq, int G, int64_t d, const char *op) {
    const uint64_t row_bytes = src->dtype == ELA_Q8_0 ? (uint64_t)d / 32 * 34
                                                      : (uint64_t)d * vk_mt_unit(src->dtype);
    const uint64_t units = (row_bytes + 6) / 4, total = (uint64_t)hq * (uint64_t)rows * units;
    if (total > UINT32_MAX)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: %s: %d heads x %lld rows exceed 32-bit "
                       "indices", op, hq, (long long)rows);
    if (total == 0)
        return ELA_OK;
    vk_mt_bind bs, bd, bi;
    ela_status st;
    if ((st = vk_mt_bind_tensor(ctx, src, op, sname, &bs)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, dst, op, dname, &bd)) != ELA_OK ||
        (st = vk_mt_bind_tensor(ctx, idx, op, "idx", &bi)) != ELA_OK)
        return st;
    const uint32_t spec[2] = {VK_MT_WG, mode};
    VkPipeline pipe;
    if ((st = vk_pipeline_get(ctx, "token_compress", spec, 2, &pipe)) != ELA_OK)
        return st;
    tc_push push = {bs.byte, (uint32_t)s_row, (uint32_t)s_head, bd.byte, (uint32_t)d_row,
                    (uint32_t)d_head, bi.byte / 4,
                    idx->n_dims == 2 ? (uint32_t)(idx->strides[0] / 4) : 0u, (uint32_t)rows,
                    (uint32_t)n_sel, (uint32_t)G, (uint32_t)row_bytes, (uint32_t)units,
                    (uint32_t)total};
    VkDescriptorBufferInfo infos[VK_BINDINGS] = {bs.info, bi.info, {0}, bd.info};
    return vk_mt_dispatch(ctx, pipe, infos, &push, sizeof push, vk_mt_groups(ctx, total, VK_MT_WG),
                          1);
}

ela_status vk_token_compress(void *vctx, const ela_token_compress_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "token_compress";
    const int G = a->hq / a->hkv;
    ela_status st;
    /* q [L, Hq, d] -> qc [n_sel, Hq, d]; k, v [Hkv, L, d] -> kc, vc [Hq, n_sel, d] */
    if ((st = copy_rows(ctx, 0, a->q, "q", a->q->strides[0], a->q->strides[1], a->qc, "qc",
                        a->qc->strides[0], a->qc->strides[1], a->idx, a->n_sel, a->n_sel, a->hq,
                        1, a->d, op)) != ELA_OK ||
        (st = copy_rows(ctx, 0, a->k, "k", a->k->strides[1], a->k->strides[0], a->kc, "kc",
                        a->kc->strides[1], a->kc->strides[0], a->idx, a->n_sel, a->n_sel, a->hq,
                        G, a->d, op)) != ELA_OK ||
        (st = copy_rows(ctx, 0, a->v, "v", a->v->strides[1], a->v->strides[0], a->vc, "vc",
                        a->vc->strides[1], a->vc->strides[0], a->idx, a->n_sel, a->n_sel, a->hq,
                        G, a->d, op)) != ELA_OK)
        return st;
    return vk_op_done(ctx, op);
}

ela_status vk_token_decompress(void *vctx, const ela_token_decompress_args *a) {
    vk_ctx *ctx = vctx;
    const char *op = "token_decompress";
    /* oc [n_sel, Hq, d] -> o [L, Hq, d] */
    ela_status st = copy_rows(ctx, 1, a->oc, "oc", a->oc->strides[0], a->oc->strides[1], a->o,
                              "o", a->o->strides[0], a->o->strides[1], a->idx, a->L, a->n_sel,
                              a->hq, 1, a->d, op);
    return st != ELA_OK ? st : vk_op_done(ctx, op);
}

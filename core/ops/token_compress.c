/* token_compress / token_decompress (ela.h, PAPERS.md 2.4): Token Sparse Attention's gather and
 * scatter as ops of their own, so a policy can run any prefill op between them (tsa+xattn).
 * Both are plain copies: every output has its source's dtype. */
#include "core/error.h"
#include "core/ops/model_op_check.h"
#include "core/ops/token_indices.h"

#define KV_DTYPES (OP_FLOAT_DTYPES | (1u << ELA_Q8_0))

/* out exists on be with src's dtype and the extents want (3 dims); `layout` names them. */
static ela_status check_copy_out(const char *op, const ela_backend *be, const ela_tensor *out,
                                 const char *name, const ela_tensor *src, const char *src_name,
                                 const char *layout, const int64_t *want) {
    ela_status st = op_check_tensor(op, be, out, name, 3, 1u << src->dtype, layout);
    if (st == ELA_ERR_INVALID_ARG && out && out->dtype != src->dtype)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor %s must have %s's dtype (%s), not %s",
                        op, name, src_name, ela_dtype_name(src->dtype),
                        ela_dtype_name(out->dtype));
    if (st != ELA_OK)
        return st;
    return op_check_shape(op, name, out, layout, want);
}

ela_status ela_token_compress(ela_backend *be, const ela_tensor *q, const ela_tensor *k,
                              const ela_tensor *v, const ela_tensor *idx, int64_t n_sel,
                              ela_tensor *qc, ela_tensor *kc, ela_tensor *vc) {
    static const char op[] = "token_compress";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: backend is NULL", op);
    ela_token_compress_args a = {q, k, v, idx, qc, kc, vc, 0, n_sel, 0, 0, 0};
    int64_t n = 0;
    ela_status st = op_check_qk(op, be, q, k, &a.L, &n, &a.d, &a.hq, &a.hkv);
    if (st != ELA_OK)
        return st;
    if (n != a.L) {
        int64_t want[3] = {a.hkv, a.L, a.d};
        return op_shape_mismatch(op, "k", k, "[Hkv, L, d] with q's L (the same tokens)", want);
    }
    if ((st = op_check_tensor(op, be, v, "v", 3, KV_DTYPES, "[Hkv, L, d]")) != ELA_OK ||
        (st = op_check_like(op, "v", v, "k", k)) != ELA_OK)
        return st;
    if (ela_dtype_row_bytes(k->dtype, a.d) == 0 || ela_dtype_row_bytes(v->dtype, a.d) == 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: head dim %lld is not a whole number of %s "
                        "blocks", op, (long long)a.d,
                        ela_dtype_name(ela_dtype_row_bytes(k->dtype, a.d) ? v->dtype : k->dtype));
    if (n_sel < 0 || n_sel > a.L)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: n_sel is %lld, must be in [0, L = %lld]", op,
                        (long long)n_sel, (long long)a.L);
    int64_t want_q[3] = {n_sel, a.hq, a.d}, want_kv[3] = {a.hq, n_sel, a.d};
    if ((st = check_copy_out(op, be, qc, "qc", q, "q", "[n_sel, Hq, d]", want_q)) != ELA_OK ||
        (st = check_copy_out(op, be, kc, "kc", k, "k", "[Hq, n_sel, d]", want_kv)) != ELA_OK ||
        (st = check_copy_out(op, be, vc, "vc", v, "v", "[Hq, n_sel, d]", want_kv)) != ELA_OK)
        return st;
    const ela_tensor *outs[3] = {qc, kc, vc}, *ins[4] = {q, k, v, idx};
    static const char *const out_names[3] = {"qc", "kc", "vc"}, *const in_names[4] = {"q", "k", "v",
                                                                                     "idx"};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++)
            if ((st = op_check_alias(op, out_names[i], outs[i], in_names[j], ins[j], 0)) != ELA_OK)
                return st;
        for (int j = 0; j < i; j++)
            if ((st = op_check_alias(op, out_names[i], outs[i], out_names[j], outs[j], 0)) != ELA_OK)
                return st;
    }
    ela_dtype dtypes[3] = {q->dtype, k->dtype, v->dtype};
    if ((st = op_check_backend(be, ELA_OP_TOKEN_COMPRESS, be->iface->token_compress != NULL, dtypes,
                               3)) != ELA_OK ||
        (st = op_check_token_indices(op, be, idx, a.hq, n_sel, a.L)) != ELA_OK)
        return st;
    return n_sel == 0 ? ELA_OK : be->iface->token_compress(be->ctx, &a);
}

ela_status ela_token_decompress(ela_backend *be, const ela_tensor *oc, const ela_tensor *idx,
                                int64_t n_sel, ela_tensor *o) {
    static const char op[] = "token_decompress";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: backend is NULL", op);
    ela_status st = op_check_tensor(op, be, o, "o", 3, OP_FLOAT_DTYPES, "[L, Hq, d]");
    if (st != ELA_OK)
        return st;
    ela_token_decompress_args a = {oc, idx, o, o->extents[0], n_sel, o->extents[2],
                                   (int)o->extents[1]};
    if (o->extents[1] < 1 || o->extents[1] > 1 << 20)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: tensor o has %lld heads, must be in [1, 2^20]",
                        op, (long long)o->extents[1]);
    if (n_sel < 0 || n_sel > a.L)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_%s: n_sel is %lld, must be in [0, L = %lld]", op,
                        (long long)n_sel, (long long)a.L);
    int64_t want[3] = {n_sel, a.hq, a.d};
    if ((st = check_copy_out(op, be, oc, "oc", o, "o", "[n_sel, Hq, d]", want)) != ELA_OK ||
        (st = op_check_alias(op, "o", o, "oc", oc, 0)) != ELA_OK ||
        (st = op_check_alias(op, "o", o, "idx", idx, 0)) != ELA_OK)
        return st;
    ela_dtype dtypes[2] = {oc->dtype, o->dtype};
    if ((st = op_check_backend(be, ELA_OP_TOKEN_DECOMPRESS, be->iface->token_decompress != NULL,
                               dtypes, 2)) != ELA_OK ||
        (st = op_check_token_indices(op, be, idx, a.hq, n_sel, a.L)) != ELA_OK)
        return st;
    return be->iface->token_decompress(be->ctx, &a);
}

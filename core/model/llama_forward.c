/* The decoder of Llama-family models (Llama 2/3/3.1, Mistral, Qwen2/2.5, Qwen3), written
 * top to bottom like llama2.c but through ela's ops so every backend runs it (DESIGN.md 5):
 *   x = embed(ids)
 *   per layer: xn = rmsnorm(x); q, k, v = xn W (+ bias); [q_norm, k_norm]; rope(q, k);
 *              cache <- k, v; o = attention under the context's policy; x += o Wo;
 *              xn = rmsnorm(x); x += (silu(xn Wg) * (xn Wu)) Wd
 *   logits = rmsnorm(x) Wlm
 * Attention reads the whole cache (positions [0, p0 + n)); prefill chunks go through the
 * prefill policy, single tokens through the decode policy with LessIsMore's layer roles. */
#include <string.h>

#include "core/error.h"
#include "core/model/context.h"
#include "core/ops/runtime_ops.h"

/* Packed [rows, width] prefix of a packed [R, width] scratch tensor, viewed with `n_dims`
 * extents (the product of extents[1..] is the width). */
static ela_status prefix(const ela_tensor *t, int n_dims, const int64_t *extents, ela_tensor **out) {
    return ela_tensor_view(t, n_dims, extents, NULL, 0, out);
}

/* Tokens [t0, t0 + n) of a cache [Hkv, cap, d]. */
static ela_status cache_view(const ela_tensor *cache, int64_t t0, int64_t n, ela_tensor **out) {
    int64_t ext[3] = {ela_tensor_extent(cache, 0), n, ela_tensor_extent(cache, 2)};
    int64_t str[3] = {ela_tensor_stride(cache, 0), ela_tensor_stride(cache, 1),
                      ela_tensor_stride(cache, 2)};
    return ela_tensor_view(cache, 3, ext, str, t0 * str[1], out);
}

/* The chunk's first n pre-RoPE keys [Hkv, n, d] (the router pools them, PAPERS.md 1.3). */
static ela_status k_pre_view(const ela_context *ctx, int64_t n, ela_tensor **out) {
    return cache_view(ctx->chunk.k_pre, 0, n, out);
}

/* A token-major projection [n, H * d] seen head-major as [H, n, d]. */
static ela_status head_major(const ela_tensor *t, int64_t n, int h, int64_t d, ela_tensor **out) {
    int64_t ext[3] = {h, n, d};
    int64_t str[3] = {d * 4, (int64_t)h * d * 4, 4};
    return ela_tensor_view(t, 3, ext, str, 0, out);
}

/* Adds one layer's report of a chunk at [p0, p0 + n) to the context's prefill report; the
 * sparsity is averaged over layers and chunks weighted by their dense causal work. */
static double causal_pairs(int64_t p0, int64_t n) {
    return (double)n * (double)p0 + (double)n * (double)(n + 1) / 2.0;
}

/* A layer or chunk that ran dense skipped nothing: it counts in the achieved sparsity. */
static void report_dense(ela_context *ctx, int64_t p0, int64_t n) {
    ctx->report_pairs += causal_pairs(p0, n);
    ctx->report.sparsity = ctx->report_skipped / ctx->report_pairs;
}

static void report_add(ela_context *ctx, const ela_prefill_report *r, int64_t p0, int64_t n) {
    ela_prefill_report *sum = &ctx->report;
    double pairs = causal_pairs(p0, n);
    sum->hq = r->hq;
    memcpy(sum->head_mode, r->head_mode, sizeof sum->head_mode);
    sum->full_kv_heads += r->full_kv_heads;
    sum->kept_blocks += r->kept_blocks;
    sum->causal_blocks += r->causal_blocks;
    sum->kept_tokens += r->kept_tokens;
    sum->select_ms += r->select_ms;
    sum->attend_ms += r->attend_ms;
    ctx->report_pairs += pairs;
    ctx->report_skipped += pairs * r->sparsity;
    sum->sparsity = ctx->report_skipped / ctx->report_pairs;
}

typedef struct {
    ela_tensor *x, *xn, *tmp, *q, *k, *v, *attn, *gate, *up, *pos;
    ela_tensor *q3, *k3, *k_heads, *v_heads, *o3;
} chunk_views;

static void views_free(chunk_views *cv) {
    ela_tensor **all[] = {&cv->x, &cv->xn, &cv->tmp, &cv->q, &cv->k, &cv->v, &cv->attn,
                          &cv->gate, &cv->up, &cv->pos, &cv->q3, &cv->k3, &cv->k_heads,
                          &cv->v_heads, &cv->o3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        ela_tensor_free(*all[i]);
        *all[i] = NULL;
    }
}

static ela_status views_make(ela_context *ctx, int64_t n, chunk_views *cv) {
    const ela_model_info *mi = &ctx->model->info;
    const context_scratch *s = &ctx->chunk;
    int64_t d = mi->head_dim, hq = mi->n_heads, hkv = mi->n_kv_heads;
    int64_t e_hidden[2] = {n, mi->hidden}, e_q[2] = {n, hq * d}, e_kv[2] = {n, hkv * d};
    int64_t e_ffn[2] = {n, mi->ffn}, e_q3[3] = {n, hq, d}, e_k3[3] = {n, hkv, d};
    ela_status st;
    memset(cv, 0, sizeof *cv);
    if ((st = prefix(s->x, 2, e_hidden, &cv->x)) != ELA_OK ||
        (st = prefix(s->xn, 2, e_hidden, &cv->xn)) != ELA_OK ||
        (st = prefix(s->tmp, 2, e_hidden, &cv->tmp)) != ELA_OK ||
        (st = prefix(s->q, 2, e_q, &cv->q)) != ELA_OK ||
        (st = prefix(s->k, 2, e_kv, &cv->k)) != ELA_OK ||
        (st = prefix(s->v, 2, e_kv, &cv->v)) != ELA_OK ||
        (st = prefix(s->attn, 2, e_q, &cv->attn)) != ELA_OK ||
        (st = prefix(s->gate, 2, e_ffn, &cv->gate)) != ELA_OK ||
        (st = prefix(s->up, 2, e_ffn, &cv->up)) != ELA_OK ||
        (st = prefix(s->pos, 1, &n, &cv->pos)) != ELA_OK ||
        (st = prefix(s->q, 3, e_q3, &cv->q3)) != ELA_OK ||
        (st = prefix(s->k, 3, e_k3, &cv->k3)) != ELA_OK ||
        (st = head_major(s->k, n, (int)hkv, d, &cv->k_heads)) != ELA_OK ||
        (st = head_major(s->v, n, (int)hkv, d, &cv->v_heads)) != ELA_OK ||
        (st = prefix(s->attn, 3, e_q3, &cv->o3)) != ELA_OK)
        views_free(cv);
    return st;
}

/* Attention of one layer for the chunk's n rows at positions [p0, p0 + n). */
static ela_status layer_attention(ela_context *ctx, int layer, int64_t p0, int64_t n,
                                  chunk_views *cv) {
    ela_backend *be = ctx->model->backend;
    const model_layer *w = &ctx->model->layers[layer];
    ela_tensor *k_all = NULL, *v_all = NULL, *k_pre = NULL;
    ela_status st;
    if ((st = cache_view(ctx->k_cache[layer], 0, p0 + n, &k_all)) != ELA_OK ||
        (st = cache_view(ctx->v_cache[layer], 0, p0 + n, &v_all)) != ELA_OK)
        goto done;
    if (n == 1) {
        ela_decode_layer_role role =
            ela_decode_layer_role_of(&ctx->params.decode, layer, ctx->model->info.n_layers);
        st = ela_decode_attention(be, &ctx->params.decode, role, cv->q3, k_all, v_all, cv->o3,
                                  ctx->selection, &ctx->selected);
        goto done;
    }
    ela_attn_params ap = ela_attn_params_default();
    ap.q_pos0 = p0;
    /* Block policies need chunks that start on a block, Token Sparse Attention a whole prompt
     * from position 0; a chunk after cached tokens that does not qualify runs dense (exact,
     * just not sparse). */
    ela_prefill_kind kind = ctx->params.prefill.kind;
    int tsa = kind == ELA_PREFILL_TSA || kind == ELA_PREFILL_TSA_XATTN;
    if (!ela_prefill_layer_is_sparse(&ctx->params.prefill, layer, ctx->model->info.n_layers) ||
        p0 % ELA_BLOCK != 0 || (tsa && p0 != 0)) {
        st = ela_attn_dense(be, cv->q3, k_all, v_all, cv->o3, NULL, &ap);
        if (st == ELA_OK)
            report_dense(ctx, p0, n);
        goto done;
    }
    const ela_router_weights *router = w->router.task_w1 ? &w->router : NULL;
    if (router && ctx->chunk.k_pre && (st = k_pre_view(ctx, n, &k_pre)) != ELA_OK)
        goto done;
    ela_prefill_report r;
    memset(&r, 0, sizeof r);
    st = ela_prefill_attention(be, &ctx->params.prefill, cv->q3, k_all, v_all, cv->o3, k_pre,
                               router, &ap, &r);
    if (st == ELA_OK)
        report_add(ctx, &r, p0, n);
done:
    ela_tensor_free(k_pre);
    ela_tensor_free(v_all);
    ela_tensor_free(k_all);
    return st;
}

/* SSA's output gate (PAPERS.md 4.3), in full and sparse attention alike: head h's output
 * times sigmoid(xn . g_proj^T)[h, 1]. The projection [n, 3 Hq] borrows the FFN gate scratch,
 * which is free until the MLP (3 Hq is far below ffn in every SSA model). */
static ela_status output_gate(ela_context *ctx, int layer, int64_t n, chunk_views *cv) {
    ela_backend *be = ctx->model->backend;
    int64_t ext[2] = {n, 3 * (int64_t)ctx->model->info.n_heads};
    ela_tensor *g = NULL;
    ela_status st = prefix(ctx->chunk.gate, 2, ext, &g);
    if (st == ELA_OK &&
        (st = ela_matmul(be, cv->xn, ctx->model->layers[layer].g_proj, NULL, g)) == ELA_OK)
        st = ela_sigmoid_gate(be, cv->o3, g, 3, 1);
    ela_tensor_free(g);
    return st;
}

static ela_status layer_forward(ela_context *ctx, int layer, int64_t p0, int64_t n,
                                chunk_views *cv) {
    ela_backend *be = ctx->model->backend;
    const ela_model_info *mi = &ctx->model->info;
    const model_layer *w = &ctx->model->layers[layer];
    ela_tensor *k_dst = NULL, *v_dst = NULL, *k_pre = NULL;
    ela_status st;
    if ((st = ela_rms_norm(be, cv->x, w->attn_norm, mi->norm_eps, cv->xn)) != ELA_OK ||
        (st = ela_matmul(be, cv->xn, w->wq, w->bq, cv->q)) != ELA_OK ||
        (st = ela_matmul(be, cv->xn, w->wk, w->bk, cv->k)) != ELA_OK ||
        (st = ela_matmul(be, cv->xn, w->wv, w->bv, cv->v)) != ELA_OK)
        goto done;
    if (w->q_norm && (st = ela_rms_norm(be, cv->q3, w->q_norm, mi->norm_eps, cv->q3)) != ELA_OK)
        goto done;
    if (w->k_norm && (st = ela_rms_norm(be, cv->k3, w->k_norm, mi->norm_eps, cv->k3)) != ELA_OK)
        goto done;
    /* The router pools keys before RoPE (PAPERS.md 1.3). */
    if (n > 1 && w->router.task_w1 && ctx->chunk.k_pre &&
        ((st = k_pre_view(ctx, n, &k_pre)) != ELA_OK ||
         (st = ela_copy(be, cv->k_heads, k_pre)) != ELA_OK))
        goto done;
    /* positions p0 + i, written by chunk_upload: no read-back check (a GPU sync) */
    if ((st = op_rope_host_checked(be, cv->q3, cv->pos, &mi->rope)) != ELA_OK ||
        (st = op_rope_host_checked(be, cv->k3, cv->pos, &mi->rope)) != ELA_OK)
        goto done;
    if ((st = cache_view(ctx->k_cache[layer], p0, n, &k_dst)) != ELA_OK ||
        (st = cache_view(ctx->v_cache[layer], p0, n, &v_dst)) != ELA_OK ||
        (st = ela_copy(be, cv->k_heads, k_dst)) != ELA_OK ||
        (st = ela_copy(be, cv->v_heads, v_dst)) != ELA_OK)
        goto done;
    if ((st = layer_attention(ctx, layer, p0, n, cv)) != ELA_OK ||
        (w->g_proj && (st = output_gate(ctx, layer, n, cv)) != ELA_OK))
        goto done;
    if ((st = ela_matmul(be, cv->attn, w->wo, NULL, cv->tmp)) != ELA_OK ||
        (st = ela_add(be, cv->x, cv->tmp, cv->x)) != ELA_OK)
        goto done;
    if ((st = ela_rms_norm(be, cv->x, w->ffn_norm, mi->norm_eps, cv->xn)) != ELA_OK ||
        (st = ela_matmul(be, cv->xn, w->w_gate, NULL, cv->gate)) != ELA_OK ||
        (st = ela_matmul(be, cv->xn, w->w_up, NULL, cv->up)) != ELA_OK ||
        (st = ela_silu_mul(be, cv->gate, cv->up, cv->gate)) != ELA_OK ||
        (st = ela_matmul(be, cv->gate, w->w_down, NULL, cv->tmp)) != ELA_OK ||
        (st = ela_add(be, cv->x, cv->tmp, cv->x)) != ELA_OK)
        goto done;
done:
    ela_tensor_free(k_pre);
    ela_tensor_free(v_dst);
    ela_tensor_free(k_dst);
    return st;
}

ela_status llama_forward(ela_context *ctx, int64_t p0, int64_t n) {
    if (n < 1 || n > ctx->chunk.rows || p0 + n > ctx->n_ctx)
        return ela_fail(ELA_ERR_INTERNAL, "llama_forward: %lld rows at %lld do not fit",
                        (long long)n, (long long)p0);
    ela_backend *be = ctx->model->backend;
    chunk_views cv;
    ela_tensor *ids = NULL;
    ela_status st = views_make(ctx, n, &cv);
    if (st != ELA_OK)
        return st;
    if ((st = prefix(ctx->chunk.ids, 1, &n, &ids)) != ELA_OK ||
        (st = op_get_rows_host_checked(be, ctx->model->tok_embd, ids, cv.x)) != ELA_OK)
        goto done;
    for (int l = 0; l < ctx->model->info.n_layers && st == ELA_OK; l++)
        if ((st = layer_drift_begin(ctx)) == ELA_OK &&
            (st = layer_forward(ctx, l, p0, n, &cv)) == ELA_OK)
            st = layer_drift_end(ctx, l, n);
done:
    ela_tensor_free(ids);
    views_free(&cv);
    return st;
}

ela_status llama_logits(ela_context *ctx, int64_t r0, int64_t m, float *out) {
    ela_backend *be = ctx->model->backend;
    const ela_model_info *mi = &ctx->model->info;
    ela_tensor *x = NULL, *xn = NULL, *logits = NULL;
    int64_t ext[2] = {m, mi->hidden}, ext_l[2] = {m, mi->vocab};
    int64_t row = ela_tensor_stride(ctx->chunk.x, 0);
    ela_status st;
    if ((st = ela_tensor_view(ctx->chunk.x, 2, ext, NULL, r0 * row, &x)) != ELA_OK ||
        (st = prefix(ctx->chunk.xn, 2, ext, &xn)) != ELA_OK ||
        (st = prefix(ctx->logits, 2, ext_l, &logits)) != ELA_OK ||
        (st = ela_rms_norm(be, x, ctx->model->out_norm, mi->norm_eps, xn)) != ELA_OK ||
        (st = ela_matmul(be, xn, ctx->model->lm_head, NULL, logits)) != ELA_OK)
        goto done;
    st = ela_tensor_read_f32(logits, out, m * mi->vocab);
done:
    ela_tensor_free(logits);
    ela_tensor_free(xn);
    ela_tensor_free(x);
    return st;
}

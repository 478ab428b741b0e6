/* Contexts (ela.h "Contexts"): the KV cache [Hkv, n_ctx, d] per layer, the scratch of one
 * prefill chunk, and ela_context_eval, which feeds tokens through llama_forward in chunks. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/model/context.h"

ela_context_params ela_context_params_default(void) {
    ela_context_params p;
    memset(&p, 0, sizeof p);
    p.kv_dtype = ELA_F16;
    ela_prefill_policy_parse("dense", &p.prefill);
    ela_decode_policy_parse("dense", &p.decode);
    return p;
}

static void scratch_free(context_scratch *s) {
    ela_tensor **all[] = {&s->x, &s->xn, &s->tmp, &s->q, &s->k, &s->v, &s->k_pre,
                          &s->attn, &s->gate, &s->up, &s->ids, &s->pos};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        ela_tensor_free(*all[i]);
        *all[i] = NULL;
    }
}

static ela_status new2(ela_backend *be, ela_dtype dt, int64_t a, int64_t b, ela_tensor **out) {
    int64_t ext[2] = {a, b};
    return ela_tensor_new(be, dt, 2, ext, NULL, out);
}

static ela_status scratch_new(ela_backend *be, const ela_model_info *mi, int64_t rows,
                              int with_k_pre, context_scratch *s) {
    int64_t qw = (int64_t)mi->n_heads * mi->head_dim, kw = (int64_t)mi->n_kv_heads * mi->head_dim;
    ela_status st;
    memset(s, 0, sizeof *s);
    s->rows = rows;
    if ((st = new2(be, ELA_F32, rows, mi->hidden, &s->x)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, mi->hidden, &s->xn)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, mi->hidden, &s->tmp)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, qw, &s->q)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, kw, &s->k)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, kw, &s->v)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, qw, &s->attn)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, mi->ffn, &s->gate)) != ELA_OK ||
        (st = new2(be, ELA_F32, rows, mi->ffn, &s->up)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_I32, 1, &rows, NULL, &s->ids)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_I32, 1, &rows, NULL, &s->pos)) != ELA_OK)
        goto fail;
    if (with_k_pre) {
        int64_t ext[3] = {mi->n_kv_heads, rows, mi->head_dim};
        if ((st = ela_tensor_new(be, ELA_F32, 3, ext, NULL, &s->k_pre)) != ELA_OK)
            goto fail;
    }
    return ELA_OK;
fail:
    scratch_free(s);
    return st;
}

void ela_context_free(ela_context *ctx) {
    if (!ctx)
        return;
    int n_layers = ctx->model->info.n_layers;
    for (int l = 0; l < n_layers; l++) {
        if (ctx->k_cache)
            ela_tensor_free(ctx->k_cache[l]);
        if (ctx->v_cache)
            ela_tensor_free(ctx->v_cache[l]);
    }
    ela_free(ctx->k_cache);
    ela_free(ctx->v_cache);
    scratch_free(&ctx->chunk);
    ela_tensor_free(ctx->logits);
    ela_tensor_free(ctx->selection);
    ela_free(ctx->drift_in);
    ela_free(ctx->drift_out);
    ela_free(ctx->drift_sum);
    ela_free(ctx);
}

static int has_router(const ela_model *m) {
    for (int l = 0; l < m->info.n_layers; l++)
        if (m->layers[l].router.task_w1)
            return 1;
    return 0;
}

ela_status ela_context_new(ela_model *model, const ela_context_params *params,
                           ela_context **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_new: out is NULL");
    *out = NULL;
    if (!model)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_new: model is NULL");
    ela_context_params p = params ? *params : ela_context_params_default();
    const ela_model_info *mi = &model->info;
    if (p.n_ctx < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_new: n_ctx is negative (%lld)",
                        (long long)p.n_ctx);
    if (p.n_ctx == 0) {
        p.n_ctx = mi->max_positions > 0 && mi->max_positions < 8192 ? mi->max_positions : 8192;
        if (mi->sliding_window > 0 && p.n_ctx > mi->sliding_window)
            p.n_ctx = mi->sliding_window;
    }
    if (mi->sliding_window > 0 && p.n_ctx > mi->sliding_window)
        return ela_fail(ELA_ERR_UNSUPPORTED, "ela_context_new: n_ctx %lld exceeds the model's "
                        "sliding attention window of %lld tokens; windowed attention is not "
                        "implemented, so contexts are limited to the window",
                        (long long)p.n_ctx, (long long)mi->sliding_window);
    if (p.kv_dtype != ELA_F16 && p.kv_dtype != ELA_BF16 && p.kv_dtype != ELA_F32 &&
        p.kv_dtype != ELA_Q8_0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_new: kv_dtype %s: the KV cache is f16, "
                        "bf16, f32 or q8_0", ela_dtype_name(p.kv_dtype));
    /* A q8_0 cache row is whole 32-element blocks (appended with ela_copy, read in place). */
    if (p.kv_dtype == ELA_Q8_0 && mi->head_dim % 32 != 0)
        return ela_fail(ELA_ERR_UNSUPPORTED, "ela_context_new: kv_dtype q8_0 needs a head dim "
                        "that is a multiple of 32; this model's is %d", (int)mi->head_dim);
    if (p.prefill_chunk == 0)
        p.prefill_chunk = 2048;
    if (p.prefill_chunk < 0 || p.prefill_chunk % ELA_BLOCK != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_context_new: prefill_chunk %lld is not a positive multiple of %d",
                        (long long)p.prefill_chunk, ELA_BLOCK);
    int64_t n_ctx = (p.n_ctx + ELA_BLOCK - 1) / ELA_BLOCK * ELA_BLOCK;
    int64_t rows = p.prefill_chunk < n_ctx ? p.prefill_chunk : n_ctx;

    ela_backend *be = model->backend;
    const ela_dtype q8_attn[3] = {ELA_F32, ELA_Q8_0, ELA_F32}; /* q, k/v, o */
    if (p.kv_dtype == ELA_Q8_0 && !ela_backend_supports(be, ELA_OP_ATTN_DENSE, q8_attn, 3))
        return ela_fail(ELA_ERR_UNSUPPORTED, "ela_context_new: backend '%s' cannot read a q8_0 "
                        "KV cache (kv_dtype f16 or bf16 can)", ela_backend_name(be));
    ela_status st;
    ela_context *ctx = ela_calloc(1, sizeof *ctx);
    if (!ctx)
        return ela_fail(ELA_ERR_OOM, "ela_context_new: out of host memory");
    ctx->model = model;
    ctx->params = p;
    ctx->n_ctx = n_ctx;
    ctx->k_cache = ela_calloc((size_t)mi->n_layers, sizeof *ctx->k_cache);
    ctx->v_cache = ela_calloc((size_t)mi->n_layers, sizeof *ctx->v_cache);
    if (!ctx->k_cache || !ctx->v_cache) {
        st = ela_fail(ELA_ERR_OOM, "ela_context_new: out of host memory");
        goto fail;
    }
    int64_t cache_ext[3] = {mi->n_kv_heads, n_ctx, mi->head_dim};
    for (int l = 0; l < mi->n_layers; l++)
        if ((st = ela_tensor_new(be, p.kv_dtype, 3, cache_ext, NULL, &ctx->k_cache[l])) != ELA_OK ||
            (st = ela_tensor_new(be, p.kv_dtype, 3, cache_ext, NULL, &ctx->v_cache[l])) != ELA_OK)
            goto fail;
    int with_k_pre = p.prefill.kind == ELA_PREFILL_ELASTIC && has_router(model);
    if ((st = scratch_new(be, mi, rows, with_k_pre, &ctx->chunk)) != ELA_OK ||
        (st = new2(be, ELA_F32, CONTEXT_LOGIT_ROWS, mi->vocab, &ctx->logits)) != ELA_OK)
        goto fail;
    if (p.record_drift) {
        size_t floats = (size_t)rows * (size_t)mi->hidden;
        ctx->drift_in = ela_calloc(floats, sizeof(float));
        ctx->drift_out = ela_calloc(floats, sizeof(float));
        ctx->drift_sum = ela_calloc((size_t)mi->n_layers, sizeof(double));
        if (!ctx->drift_in || !ctx->drift_out || !ctx->drift_sum) {
            st = ela_fail(ELA_ERR_OOM, "ela_context_new: out of host memory for record_drift");
            goto fail;
        }
    }
    if (p.decode.kind == ELA_DECODE_LESSISMORE) {
        int64_t budget = p.decode.select.budget;
        if ((st = ela_tensor_new(be, ELA_I32, 1, &budget, NULL, &ctx->selection)) != ELA_OK)
            goto fail;
    }
    *out = ctx;
    return ELA_OK;
fail:
    ela_context_free(ctx);
    return st;
}

void ela_context_reset(ela_context *ctx) {
    if (!ctx)
        return;
    ctx->n_past = 0;
    ctx->selected = 0;
}

int64_t ela_context_n_past(const ela_context *ctx) { return ctx ? ctx->n_past : 0; }

ela_status ela_context_last_report(const ela_context *ctx, ela_prefill_report *out) {
    if (!ctx || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_last_report: NULL argument");
    if (!ctx->report_valid)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_last_report: no prefill has run");
    *out = ctx->report;
    return ELA_OK;
}

/* Writes ids and positions of one chunk into the scratch tensors. */
static ela_status chunk_upload(ela_context *ctx, const int32_t *ids, int64_t p0, int64_t m) {
    ela_tensor *ids_v = NULL, *pos_v = NULL;
    int32_t *pos = ela_calloc((size_t)m, sizeof *pos);
    ela_status st = ELA_OK;
    if (!pos)
        return ela_fail(ELA_ERR_OOM, "ela_context_eval: out of host memory");
    for (int64_t i = 0; i < m; i++)
        pos[i] = (int32_t)(p0 + i);
    if ((st = ela_tensor_view(ctx->chunk.ids, 1, &m, NULL, 0, &ids_v)) != ELA_OK ||
        (st = ela_tensor_view(ctx->chunk.pos, 1, &m, NULL, 0, &pos_v)) != ELA_OK ||
        (st = ela_tensor_write(ids_v, ids, (size_t)m * sizeof(int32_t))) != ELA_OK ||
        (st = ela_tensor_write(pos_v, pos, (size_t)m * sizeof(int32_t))) != ELA_OK)
        goto done;
done:
    ela_tensor_free(pos_v);
    ela_tensor_free(ids_v);
    ela_free(pos);
    return st;
}

ela_status ela_context_eval(ela_context *ctx, const int32_t *ids, int64_t n, float *logits,
                            int all_logits,
                            void (*progress)(int64_t done, int64_t total, void *user),
                            void *user) {
    if (!ctx || !ids)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_eval: NULL %s", !ctx ? "context" : "ids");
    if (n < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_eval: n is %lld, must be >= 1",
                        (long long)n);
    if (n > ctx->n_ctx - ctx->n_past)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_context_eval: %lld tokens do not fit: %lld of n_ctx %lld are in use",
                        (long long)n, (long long)ctx->n_past, (long long)ctx->n_ctx);
    int64_t vocab = ctx->model->info.vocab;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_context_eval: token %lld is id %d, outside the vocabulary [0, %lld)",
                            (long long)i, ids[i], (long long)vocab);
    ela_prefill_kind kind = ctx->params.prefill.kind;
    if ((kind == ELA_PREFILL_TSA || kind == ELA_PREFILL_TSA_XATTN) && ctx->n_past == 0 &&
        n > ctx->chunk.rows)
        return ela_fail(ELA_ERR_UNSUPPORTED,
                        "ela_context_eval: Token Sparse Attention selects over the whole prompt: "
                        "%lld tokens need prefill_chunk >= %lld (it is %lld)", (long long)n,
                        (long long)((n + ELA_BLOCK - 1) / ELA_BLOCK * ELA_BLOCK),
                        (long long)ctx->chunk.rows);
    if (ctx->drift_sum) {
        memset(ctx->drift_sum, 0, (size_t)ctx->model->info.n_layers * sizeof *ctx->drift_sum);
        ctx->drift_tokens = 0;
    }
    if (n > 1) {
        memset(&ctx->report, 0, sizeof ctx->report);
        ctx->report_pairs = ctx->report_skipped = 0.0;
        ctx->report_valid = 1;
    }
    ela_status st = ELA_OK;
    int64_t done = 0;
    while (done < n) {
        int64_t m = n - done < ctx->chunk.rows ? n - done : ctx->chunk.rows;
        if ((st = chunk_upload(ctx, ids + done, ctx->n_past, m)) != ELA_OK ||
            (st = llama_forward(ctx, ctx->n_past, m)) != ELA_OK)
            return st; /* the cache keeps the chunks that completed */
        if (logits && all_logits) {
            for (int64_t r = 0; r < m && st == ELA_OK; r += CONTEXT_LOGIT_ROWS) {
                int64_t rows = m - r < CONTEXT_LOGIT_ROWS ? m - r : CONTEXT_LOGIT_ROWS;
                st = llama_logits(ctx, r, rows, logits + (done + r) * vocab);
            }
        } else if (logits && done + m == n) {
            st = llama_logits(ctx, m - 1, 1, logits);
        }
        if (st != ELA_OK)
            return st;
        ctx->n_past += m;
        done += m;
        if (progress && n > 1)
            progress(done, n, user);
    }
    return ELA_OK;
}

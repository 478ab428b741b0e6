/* ela_generate: prefill the prompt, then sample and decode one token at a time until
 * max_tokens, the tokenizer's EOS or a caller's stop id, streaming each token's text. */
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/model/context.h"
#include "core/model/sampler.h"

ela_generate_params ela_generate_params_default(void) {
    ela_generate_params p;
    memset(&p, 0, sizeof p);
    p.top_p = 1.0f;
    p.max_tokens = 128;
    return p;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int is_stop(const ela_context *ctx, const ela_generate_params *p, int32_t id, int *eos) {
    const ela_tokenizer *tok = ctx->model->tokenizer;
    *eos = tok && id == ela_tokenizer_eos(tok);
    if (*eos)
        return 1;
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop[i] == id)
            return 1;
    return 0;
}

/* Passes the token's text to the caller; returns nonzero when the caller wants to stop. */
static int emit(const ela_context *ctx, const ela_generate_params *p, int32_t id) {
    if (!p->on_token)
        return 0;
    char buf[256];
    size_t len = 0;
    const ela_tokenizer *tok = ctx->model->tokenizer;
    if (!tok || ela_token_piece(tok, id, buf, sizeof buf, &len) != ELA_OK || len > sizeof buf)
        len = 0;
    return p->on_token(id, buf, len, p->user);
}

ela_status ela_generate(ela_context *ctx, const int32_t *prompt, int64_t n_prompt,
                        const ela_generate_params *params, ela_generate_stats *stats) {
    if (!ctx || (!prompt && n_prompt > 0))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_generate: NULL %s", !ctx ? "context" : "prompt");
    ela_generate_params p = params ? *params : ela_generate_params_default();
    if (p.max_tokens < 0 || p.n_stop < 0 || (p.n_stop > 0 && !p.stop) || p.top_k < 0 ||
        p.temperature < 0.0f)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_generate: bad parameters (max_tokens %lld, "
                        "n_stop %d, top_k %d, temperature %g)", (long long)p.max_tokens, p.n_stop,
                        p.top_k, (double)p.temperature);
    if (n_prompt < 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_generate: empty prompt (to continue a cached "
                        "sequence, pass its next token)");
    ela_generate_stats s;
    memset(&s, 0, sizeof s);
    s.prompt_tokens = n_prompt;
    int64_t vocab = ctx->model->info.vocab;
    float *logits = ela_calloc((size_t)vocab, sizeof *logits);
    if (!logits)
        return ela_fail(ELA_ERR_OOM, "ela_generate: out of host memory for logits");
    uint64_t rng = p.seed;
    ela_status st = ELA_OK;
    double t0 = now_ms();
    st = ela_context_eval(ctx, prompt, n_prompt, logits, 0, p.on_progress, p.user);
    s.prefill_ms = now_ms() - t0;
    double t1 = now_ms();
    for (int64_t i = 0; st == ELA_OK && i < p.max_tokens; i++) {
        int32_t id;
        if ((st = sampler_sample(logits, vocab, &p, &rng, &id)) != ELA_OK)
            break;
        int eos = 0;
        if (is_stop(ctx, &p, id, &eos)) {
            s.stopped_by_eos = eos;
            break;
        }
        s.generated_tokens++;
        if (emit(ctx, &p, id) || i + 1 == p.max_tokens)
            break;
        if (ctx->n_past >= ctx->n_ctx)
            break; /* the context is full: stop as if max_tokens were reached */
        st = ela_context_eval(ctx, &id, 1, logits, 0, NULL, NULL);
    }
    s.decode_ms = now_ms() - t1;
    ela_free(logits);
    if (stats)
        *stats = s;
    return st;
}

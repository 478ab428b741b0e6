/* A sequence's state (ela.h "Contexts"): the KV cache and the scratch tensors of one prefill
 * chunk, all on the model's backend. context.c owns it; llama_forward.c runs layers on it. */
#ifndef ELA_MODEL_CONTEXT_H
#define ELA_MODEL_CONTEXT_H

#include "core/model/model.h"

/* Scratch for up to `rows` tokens; each tensor is packed [rows, width]. */
typedef struct {
    int64_t rows;
    ela_tensor *x;      /* [rows, hidden] residual stream */
    ela_tensor *xn;     /* [rows, hidden] normalised input of a sublayer */
    ela_tensor *tmp;    /* [rows, hidden] sublayer output before the residual add */
    ela_tensor *q;      /* [rows, Hq * d] */
    ela_tensor *k, *v;  /* [rows, Hkv * d] */
    ela_tensor *k_pre;  /* [Hkv, rows, d] pre-RoPE keys for the router (models with routers) */
    ela_tensor *attn;   /* [rows, Hq * d] attention output */
    ela_tensor *gate, *up; /* [rows, ffn] */
    ela_tensor *ids;    /* i32 [rows] */
    ela_tensor *pos;    /* i32 [rows] */
} context_scratch;

#define CONTEXT_LOGIT_ROWS 64 /* rows of logits computed at once (vocab can be 150K wide) */

struct ela_context {
    ela_model *model;
    ela_context_params params;
    int64_t n_ctx;       /* capacity in tokens (a multiple of ELA_BLOCK) */
    int64_t n_past;
    ela_tensor **k_cache, **v_cache; /* [n_layers] of [Hkv, n_ctx, d] in params.kv_dtype */
    context_scratch chunk;           /* prefill chunk */
    ela_tensor *logits;              /* [CONTEXT_LOGIT_ROWS, vocab] f32 */
    ela_tensor *selection;           /* i32 [budget]: LessIsMore's token set, or NULL */
    int64_t selected;
    ela_prefill_report report;       /* summed over the last prefill */
    double report_pairs, report_skipped; /* dense causal work and the part skipped */
    int report_valid;
    /* record_drift: the residual stream around one layer, and the sums per layer */
    float *drift_in, *drift_out; /* [chunk.rows * hidden] */
    double *drift_sum;           /* [n_layers] sum over tokens of |out - in| / |in| */
    int64_t drift_tokens;
};

/* Runs the decoder over the `n` tokens already written to chunk.ids / chunk.pos at positions
 * [p0, p0 + n) (n <= chunk.rows), appending their keys and values to the cache; leaves the
 * final hidden states in chunk.x. */
ela_status llama_forward(ela_context *ctx, int64_t p0, int64_t n);

/* record_drift: copy the residual stream before a layer runs (begin), then add the layer's
 * drift over the chunk's n rows (end); no-ops when drift is not recorded. */
ela_status layer_drift_begin(ela_context *ctx);
ela_status layer_drift_end(ela_context *ctx, int layer, int64_t n);

/* Logits of rows [r0, r0 + m) of chunk.x (m <= CONTEXT_LOGIT_ROWS) into host out [m, vocab]. */
ela_status llama_logits(ela_context *ctx, int64_t r0, int64_t m, float *out);

#endif

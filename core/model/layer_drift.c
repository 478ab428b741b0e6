/* Representation drift per decoder layer (ela.h ela_context_layer_drift; PAPERS.md 2.5):
 * Token Sparse Attention profiles which layers change the residual stream least and makes
 * those sparse. The stream is read back to the host around each layer, so this is for
 * profiling runs only (ela_context_params.record_drift). */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/model/context.h"

/* The whole scratch (reads must cover a tensor); rows past n are ignored. */
static size_t stream_bytes(const ela_context *ctx) {
    return (size_t)ctx->chunk.rows * (size_t)ctx->model->info.hidden * sizeof(float);
}

ela_status layer_drift_begin(ela_context *ctx) {
    if (!ctx->drift_sum)
        return ELA_OK;
    return ela_tensor_read(ctx->chunk.x, ctx->drift_in, stream_bytes(ctx));
}

ela_status layer_drift_end(ela_context *ctx, int layer, int64_t n) {
    if (!ctx->drift_sum)
        return ELA_OK;
    int64_t hidden = ctx->model->info.hidden;
    ela_status st = ela_tensor_read(ctx->chunk.x, ctx->drift_out, stream_bytes(ctx));
    if (st != ELA_OK)
        return st;
    double sum = 0.0;
    for (int64_t t = 0; t < n; t++) {
        const float *in = ctx->drift_in + t * hidden, *out = ctx->drift_out + t * hidden;
        double diff = 0.0, norm = 0.0;
        for (int64_t i = 0; i < hidden; i++) {
            double d = (double)out[i] - (double)in[i];
            diff += d * d;
            norm += (double)in[i] * (double)in[i];
        }
        sum += norm > 0.0 ? sqrt(diff / norm) : 0.0;
    }
    ctx->drift_sum[layer] += sum;
    if (layer == 0)
        ctx->drift_tokens += n;
    return ELA_OK;
}

ela_status ela_context_layer_drift(const ela_context *ctx, double *drift, int n) {
    if (!ctx || !drift)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_layer_drift: NULL argument");
    int layers = ctx->model->info.n_layers;
    if (!ctx->drift_sum)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_layer_drift: the context was made "
                                             "without record_drift");
    if (n < layers)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_layer_drift: room for %d values, the "
                                             "model has %d layers", n, layers);
    if (ctx->drift_tokens == 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_context_layer_drift: nothing evaluated yet");
    for (int l = 0; l < layers; l++)
        drift[l] = ctx->drift_sum[l] / (double)ctx->drift_tokens;
    return ELA_OK;
}

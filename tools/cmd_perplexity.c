/* `ela perplexity` (issue 4): perplexity of a model on a text file, in windows of --ctx
 * tokens, each scored on all of its tokens but the first (no BOS added), under any prefill
 * policy, so the cost of a sparse policy in model quality shows as a perplexity change. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_args.h"
#include "cli_model.h"

static const char usage[] =
    "usage: ela perplexity -m MODEL -f FILE [--ctx N] [--windows W] [--prefill-policy P]\n"
    "                      [--kv-dtype T] [--chunk N] [--backend B] [--router FILE]\n"
    "  --ctx N        tokens per window (default 512)\n"
    "  --windows W    score at most W windows (default: all that fit the text)\n";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* -log softmax(logits)[target], in double. */
static double nll(const float *logits, int64_t vocab, int32_t target)
{
    double mx = logits[0];
    for (int64_t i = 1; i < vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - mx);
    return log(sum) + mx - (double)logits[target];
}

int cmd_perplexity(int argc, char **argv)
{
    const char *model_path = NULL, *file = NULL, *backend = NULL, *prefill = "dense", *kv = "f16";
    const char *router = NULL;
    int64_t n_ctx = 512, windows = 0, chunk = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *arg = argv[i];
        int r;
#define OPT(name) ((r = cli_option(argc, argv, &i, name, &v)) != 0)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (OPT("-m") || OPT("--model")) {
            if (r > 0) { model_path = v; continue; }
        } else if (OPT("-f") || OPT("--file")) {
            if (r > 0) { file = v; continue; }
        } else if (OPT("--ctx")) {
            if (r > 0 && cli_parse_i64(v, 2, INT64_C(1) << 30, &n_ctx) == 0) continue;
        } else if (OPT("--windows")) {
            if (r > 0 && cli_parse_i64(v, 1, INT64_C(1) << 30, &windows) == 0) continue;
        } else if (OPT("--chunk")) {
            if (r > 0 && cli_parse_i64(v, 128, INT64_C(1) << 24, &chunk) == 0) continue;
        } else if (OPT("--prefill-policy")) {
            if (r > 0) { prefill = v; continue; }
        } else if (OPT("--kv-dtype")) {
            if (r > 0) { kv = v; continue; }
        } else if (OPT("--router")) {
            if (r > 0) { router = v; continue; }
        } else if (OPT("--backend")) {
            if (r > 0) { backend = v; continue; }
        } else {
            return cli_usage_error(usage, "perplexity: unknown argument '%s'", argv[i]);
        }
#undef OPT
        return cli_usage_error(usage, "perplexity: bad or missing value for %s%s%s", arg,
                                      v ? ": " : "", v ? v : "");
    }
    if (!model_path || !file)
        return cli_usage_error(usage, "perplexity: -m MODEL and -f FILE are required");
    ela_context_params cp = ela_context_params_default();
    if (ela_prefill_policy_parse(prefill, &cp.prefill) != ELA_OK ||
        ela_dtype_parse(kv, &cp.kv_dtype) != ELA_OK)
        return cli_usage_error(usage, "perplexity: %s", ela_last_error());
    cp.n_ctx = n_ctx;
    cp.prefill_chunk = chunk;

    char *text = NULL;
    size_t len = 0;
    if (cli_read_file(file, &text, &len))
        return CLI_EXIT_FAIL;
    ela_backend *be = NULL;
    ela_model *model = NULL;
    ela_context *ctx = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    int rc = CLI_EXIT_FAIL;
    ela_status st;
    if (cli_load_model(model_path, backend, router, &be, &model) != ELA_OK)
        goto done;
    const ela_tokenizer *tok = ela_model_tokenizer(model);
    if (!tok) {
        cli_note("perplexity: the model has no tokenizer");
        goto done;
    }
    int64_t n_ids = 0;
    if ((st = ela_tokenize(tok, text, len, 0, NULL, 0, &n_ids)) != ELA_OK ||
        !(ids = malloc((size_t)(n_ids + 1) * sizeof *ids)) ||
        (st = ela_tokenize(tok, text, len, 0, ids, n_ids, &n_ids)) != ELA_OK) {
        cli_fail(ids ? st : ELA_ERR_OOM);
        goto done;
    }
    int64_t n_windows = n_ids / n_ctx;
    if (windows > 0 && windows < n_windows)
        n_windows = windows;
    if (n_windows < 1) {
        cli_note("perplexity: the text has %lld tokens, fewer than --ctx %lld", (long long)n_ids,
                 (long long)n_ctx);
        goto done;
    }
    ela_model_info info;
    ela_model_get_info(model, &info);
    if ((st = ela_context_new(model, &cp, &ctx)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    logits = malloc((size_t)(n_ctx * info.vocab) * sizeof *logits);
    if (!logits) {
        cli_note("perplexity: out of memory for %lld x %lld logits", (long long)n_ctx,
                 (long long)info.vocab);
        goto done;
    }
    double total = 0.0, t0 = now_ms();
    int64_t scored = 0;
    for (int64_t w = 0; w < n_windows; w++) {
        ela_context_reset(ctx);
        const int32_t *win = ids + w * n_ctx;
        if ((st = ela_context_eval(ctx, win, n_ctx, logits, 1, NULL, NULL)) != ELA_OK) {
            cli_fail(st);
            goto done;
        }
        for (int64_t t = 0; t + 1 < n_ctx; t++)
            total += nll(logits + t * info.vocab, info.vocab, win[t + 1]);
        scored += n_ctx - 1;
        cli_progress("windows", w + 1, n_windows);
    }
    double ms = now_ms() - t0;
    printf("perplexity %.4f over %lld tokens (%lld windows of %lld, policy %s)\n",
           exp(total / (double)scored), (long long)scored, (long long)n_windows,
           (long long)n_ctx, prefill);
    fprintf(stderr, "%.1f tokens/s, peak memory %.1f MiB\n",
            1e3 * (double)(n_windows * n_ctx) / ms, cli_peak_rss_mib());
    rc = CLI_EXIT_OK;
done:
    free(logits);
    ela_context_free(ctx);
    ela_model_free(model);
    ela_backend_close(be);
    free(ids);
    free(text);
    return rc;
}

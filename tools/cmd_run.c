/* `ela run` (DESIGN.md 1, issue 4): load a model, tokenize a prompt, prefill under a sparse
 * policy, decode and stream the generated text (only that) to stdout; prompt and generation
 * speed and peak memory go to stderr, so scripts can use stdout as is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_args.h"
#include "cli_model.h"

static const char usage[] =
    "usage: ela run -m MODEL (-p TEXT | -f FILE) [options]\n"
    "  -m MODEL               HF directory (config.json, *.safetensors, tokenizer.json) or .gguf\n"
    "  -p TEXT | -f FILE      the prompt\n"
    "  -n N                   tokens to generate (default 128)\n"
    "  --prefill-policy P     dense | xattn | streaming | elastic:fa-xa | ... (default dense)\n"
    "  --decode-policy P      dense | lessismore:K | nsa | streaming (default dense)\n"
    "  --temp T               temperature; 0 is greedy (default 0)\n"
    "  --top-k K  --top-p P   sampling filters (default off)\n"
    "  --seed S               sampling seed (default 0)\n"
    "  --ctx N                context length in tokens (default: prompt + n, rounded up)\n"
    "  --router FILE          Elastic Attention router weights (safetensors) for elastic:*\n"
    "  --kv-dtype T           f16 (default), bf16, f32 or q8_0 (CPU, head dim a multiple of 32)\n"
    "  --chunk N              prefill chunk, a multiple of 128 (default 2048; tsa, tsa+xattn\n"
    "                         and elastic:*: the whole prompt)\n"
    "  --backend B            cpu, vulkan, cuda, auto (default: ELA_BACKEND, else auto)\n"
    "  --no-special           do not add the tokenizer's BOS\n";

typedef struct {
    const char *model, *prompt, *file, *backend;
    int64_t n_gen, ctx, chunk, top_k, seed;
    double temp, top_p;
    const char *prefill, *decode, *kv, *router;
    int no_special;
} run_opts;

static int parse_opts(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_gen = 128;
    o->top_p = 1.0;
    o->prefill = "dense";
    o->decode = "dense";
    o->kv = "f16";
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *arg = argv[i];
        int r;
#define OPT(name) ((r = cli_option(argc, argv, &i, name, &v)) != 0)
        if (strcmp(argv[i], "--no-special") == 0) {
            o->no_special = 1;
            continue;
        }
        if (OPT("--router")) {
            if (r > 0) { o->router = v; continue; }
        } else if (OPT("-m") || OPT("--model")) {
            if (r > 0) { o->model = v; continue; }
        } else if (OPT("-p") || OPT("--prompt")) {
            if (r > 0) { o->prompt = v; continue; }
        } else if (OPT("-f") || OPT("--file")) {
            if (r > 0) { o->file = v; continue; }
        } else if (OPT("-n")) {
            if (r > 0 && cli_parse_i64(v, 0, INT64_C(1) << 30, &o->n_gen) == 0) continue;
        } else if (OPT("--ctx")) {
            if (r > 0 && cli_parse_i64(v, 1, INT64_C(1) << 32, &o->ctx) == 0) continue;
        } else if (OPT("--chunk")) {
            if (r > 0 && cli_parse_i64(v, 128, INT64_C(1) << 24, &o->chunk) == 0) continue;
        } else if (OPT("--top-k")) {
            if (r > 0 && cli_parse_i64(v, 0, INT64_C(1) << 30, &o->top_k) == 0) continue;
        } else if (OPT("--seed")) {
            if (r > 0 && cli_parse_i64(v, 0, INT64_MAX, &o->seed) == 0) continue;
        } else if (OPT("--temp")) {
            if (r > 0 && cli_parse_f64(v, 0.0, 100.0, &o->temp) == 0) continue;
        } else if (OPT("--top-p")) {
            if (r > 0 && cli_parse_f64(v, 0.0, 1.0, &o->top_p) == 0) continue;
        } else if (OPT("--prefill-policy")) {
            if (r > 0) { o->prefill = v; continue; }
        } else if (OPT("--decode-policy")) {
            if (r > 0) { o->decode = v; continue; }
        } else if (OPT("--kv-dtype")) {
            if (r > 0) { o->kv = v; continue; }
        } else if (OPT("--backend")) {
            if (r > 0) { o->backend = v; continue; }
        } else {
            return cli_usage_error(usage, "run: unknown argument '%s'", argv[i]);
        }
#undef OPT
        return cli_usage_error(usage, "run: bad or missing value for %s%s%s", arg,
                                      v ? ": " : "", v ? v : "");
    }
    if (!o->model)
        return cli_usage_error(usage, "run: -m MODEL is required");
    if (!o->prompt == !o->file)
        return cli_usage_error(usage, "run: give exactly one of -p TEXT and -f FILE");
    return 0;
}

static int print_token(int32_t id, const char *piece, size_t len, void *user)
{
    (void)id;
    (void)user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void prefill_progress(int64_t done, int64_t total, void *user)
{
    (void)user;
    cli_progress("prefill", done, total);
}

int cmd_run(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    run_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc;
    ela_context_params cp = ela_context_params_default();
    ela_status st;
    if ((st = ela_prefill_policy_parse(o.prefill, &cp.prefill)) != ELA_OK ||
        (st = ela_decode_policy_parse(o.decode, &cp.decode)) != ELA_OK ||
        (st = ela_dtype_parse(o.kv, &cp.kv_dtype)) != ELA_OK)
        return cli_usage_error(usage, "run: %s", ela_last_error());

    char *text = NULL;
    size_t text_len = 0;
    if (o.file) {
        if (cli_read_file(o.file, &text, &text_len))
            return CLI_EXIT_FAIL;
    } else {
        text_len = strlen(o.prompt);
    }
    const char *prompt_text = o.file ? text : o.prompt;

    ela_backend *be = NULL;
    ela_model *model = NULL;
    ela_context *ctx = NULL;
    int32_t *ids = NULL;
    rc = CLI_EXIT_FAIL;
    if (cli_load_model(o.model, o.backend, o.router, &be, &model) != ELA_OK)
        goto done;
    const ela_tokenizer *tok = ela_model_tokenizer(model);
    if (!tok) {
        cli_note("run: the model has no tokenizer (tokenizer.json or GGUF tokenizer metadata)");
        goto done;
    }
    int64_t n_ids = 0;
    if ((st = ela_tokenize(tok, prompt_text, text_len, !o.no_special, NULL, 0, &n_ids)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    ids = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof *ids);
    if (!ids || (st = ela_tokenize(tok, prompt_text, text_len, !o.no_special, ids, n_ids,
                                   &n_ids)) != ELA_OK) {
        cli_fail(ids ? st : ELA_ERR_OOM);
        goto done;
    }
    if (n_ids < 1) {
        cli_note("run: the prompt is empty");
        goto done;
    }
    ela_model_info info;
    ela_model_get_info(model, &info);
    cp.n_ctx = o.ctx ? o.ctx : n_ids + o.n_gen;
    cp.prefill_chunk = cli_prefill_chunk(&cp.prefill, o.chunk, n_ids);
    if (info.max_positions > 0 && cp.n_ctx > info.max_positions)
        cli_note("run: context of %lld tokens exceeds the model's %lld positions",
                 (long long)cp.n_ctx, (long long)info.max_positions);
    if (n_ids + o.n_gen > cp.n_ctx)
        cli_note("run: prompt (%lld tokens) + -n %lld exceed --ctx %lld: generation stops when "
                 "the context is full", (long long)n_ids, (long long)o.n_gen, (long long)cp.n_ctx);
    if ((st = ela_context_new(model, &cp, &ctx)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    ela_generate_params gp = ela_generate_params_default();
    gp.temperature = (float)o.temp;
    gp.top_k = (int)o.top_k;
    gp.top_p = (float)o.top_p;
    gp.seed = (uint64_t)o.seed;
    gp.max_tokens = o.n_gen;
    gp.on_token = print_token;
    gp.on_progress = prefill_progress;
    ela_generate_stats stats;
    st = ela_generate(ctx, ids, n_ids, &gp, &stats);
    fputc('\n', stdout);
    fflush(stdout);
    if (st != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    fprintf(stderr, "prompt: %lld tokens in %.1f ms (%.1f tokens/s)\n",
            (long long)stats.prompt_tokens, stats.prefill_ms,
            stats.prefill_ms > 0 ? 1e3 * (double)stats.prompt_tokens / stats.prefill_ms : 0.0);
    fprintf(stderr, "generated: %lld tokens in %.1f ms (%.2f tokens/s)%s\n",
            (long long)stats.generated_tokens, stats.decode_ms,
            stats.decode_ms > 0 ? 1e3 * (double)stats.generated_tokens / stats.decode_ms : 0.0,
            stats.stopped_by_eos ? ", stopped at EOS" : "");
    ela_prefill_report rep;
    if (cp.prefill.kind != ELA_PREFILL_DENSE && ela_context_last_report(ctx, &rep) == ELA_OK)
        fprintf(stderr, "prefill policy %s: sparsity %.3f, select %.1f ms, attend %.1f ms\n",
                o.prefill, rep.sparsity, rep.select_ms, rep.attend_ms);
    fprintf(stderr, "peak memory: %.1f MiB\n", cli_peak_rss_mib());
    rc = CLI_EXIT_OK;
done:
    ela_context_free(ctx);
    ela_model_free(model);
    ela_backend_close(be);
    free(ids);
    free(text);
    return rc;
}

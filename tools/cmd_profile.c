/* `ela profile` (issue 7): the layer schedule of Token Sparse Attention (PAPERS.md 2.5) for a
 * model. One forward pass over a single-needle prompt (tools/train/TASKS.md, needle at --depth)
 * records each decoder layer's representation drift |h_out - h_in| / |h_in|; normalised to sum
 * to 1, the layers at or below the --delta quantile change the stream least and are the ones
 * Token Sparse Attention makes sparse. Prints the table and the policy string (`tsa,layers=`);
 * tools/layer_schedule.sh adds LessIsMore's selection layers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_json.h"
#include "cli.h"
#include "cli_args.h"
#include "cli_model.h"
#include "niah_tasks.h"

static const char usage[] =
    "usage: ela profile -m MODEL [options]\n"
    "  -m MODEL        HF directory or .gguf\n"
    "  --text FILE     haystack text, one paragraph per line (default: haystack.txt beside "
    "MODEL)\n"
    "  --ctx N         prompt length in tokens (default 8192; the paper uses 128K)\n"
    "  --depth D       needle depth in [0, 1] (default 0.5)\n"
    "  --delta Q       quantile of the normalised drift at or below which a layer is sparse\n"
    "                  (default 0.5: the low-drift half)\n"
    "  --seed S        seed of the prompt (default 0)\n"
    "  --backend B     cpu, vulkan, cuda, auto\n"
    "  --json FILE     write drift per layer and the schedule as JSON\n";

typedef struct {
    const char *model, *text, *backend, *json;
    int64_t ctx, seed;
    double depth, delta;
} profile_opts;

static int parse_opts(int argc, char **argv, profile_opts *o, int *help)
{
    memset(o, 0, sizeof *o);
    o->ctx = 8192;
    o->depth = 0.5;
    o->delta = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *arg = argv[i];
        int r;
#define OPT(name) ((r = cli_option(argc, argv, &i, name, &v)) != 0)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            *help = 1;
            return CLI_EXIT_OK;
        }
        if (OPT("-m") || OPT("--model")) {
            if (r > 0) { o->model = v; continue; }
        } else if (OPT("--text")) {
            if (r > 0) { o->text = v; continue; }
        } else if (OPT("--ctx")) {
            if (r > 0 && cli_parse_i64(v, 256, INT64_C(1) << 24, &o->ctx) == 0) continue;
        } else if (OPT("--seed")) {
            if (r > 0 && cli_parse_i64(v, 0, INT64_MAX, &o->seed) == 0) continue;
        } else if (OPT("--depth")) {
            if (r > 0 && cli_parse_f64(v, 0.0, 1.0, &o->depth) == 0) continue;
        } else if (OPT("--delta")) {
            if (r > 0 && cli_parse_f64(v, 0.0, 1.0, &o->delta) == 0) continue;
        } else if (OPT("--backend")) {
            if (r > 0) { o->backend = v; continue; }
        } else if (OPT("--json")) {
            if (r > 0) { o->json = v; continue; }
        } else {
            return cli_usage_error(usage, "profile: unknown argument '%s'", argv[i]);
        }
#undef OPT
        return cli_usage_error(usage, "profile: bad or missing value for %s%s%s", arg,
                                      v ? ": " : "", v ? v : "");
    }
    if (!o->model)
        return cli_usage_error(usage, "profile: -m MODEL is required");
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* numpy's default quantile: linear interpolation between the order statistics. */
static double quantile(const double *v, int n, double q)
{
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return 0.0;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double pos = q * (n - 1);
    int lo = (int)pos;
    double r = lo + 1 < n ? s[lo] + (pos - lo) * (s[lo + 1] - s[lo]) : s[lo];
    free(s);
    return r;
}

static int write_json(const profile_opts *o, const double *drift, const int *sparse, int n,
                      double thr, const char *policy, int64_t n_tokens)
{
    FILE *f = fopen(o->json, "w");
    if (!f) {
        cli_note("profile: cannot write %s", o->json);
        return -1;
    }
    fputs("{\n\"run\": ", f);
    bench_json j;
    bench_json_begin(&j, f);
    bench_json_str(&j, "bench", "profile");
    bench_json_str(&j, "model", o->model);
    bench_json_int(&j, "ctx", o->ctx);
    bench_json_int(&j, "prompt_tokens", n_tokens);
    bench_json_num(&j, "depth", o->depth);
    bench_json_num(&j, "delta", o->delta);
    bench_json_num(&j, "threshold", thr);
    bench_json_str(&j, "prefill_policy", policy);
    int bad = bench_json_end(&j);
    fputs(",\n\"layers\": [\n", f);
    for (int l = 0; l < n; l++) {
        if (l)
            fputs(",\n", f);
        bench_json_begin(&j, f);
        bench_json_int(&j, "layer", l);
        bench_json_num(&j, "drift", drift[l]);
        bench_json_int(&j, "sparse", sparse[l]);
        bad |= bench_json_end(&j);
    }
    fputs("]\n}\n", f);
    bad |= ferror(f) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        cli_note("profile: writing %s failed", o->json);
        remove(o->json);
    }
    return bad ? -1 : 0;
}

int cmd_profile(int argc, char **argv)
{
    profile_opts o;
    int help = 0, rc = parse_opts(argc, argv, &o, &help);
    if (rc || help)
        return rc;
    rc = CLI_EXIT_FAIL;
    ela_backend *be = NULL;
    ela_model *model = NULL;
    ela_context *ctx = NULL;
    niah_haystack *hay = NULL;
    niah_sample smp;
    memset(&smp, 0, sizeof smp);
    char *text = NULL, *text_path = NULL, err[512];
    size_t text_len = 0;
    double *drift = NULL;
    int *sparse = NULL;
    if (!(text_path = o.text ? strdup(o.text) : niah_default_text_path(o.model)) ||
        cli_read_file(text_path, &text, &text_len) ||
        cli_load_model(o.model, o.backend, NULL, &be, &model) != ELA_OK)
        goto done;
    ela_model_info mi;
    ela_model_get_info(model, &mi);
    const ela_tokenizer *tok = ela_model_tokenizer(model);
    if (!tok) {
        cli_note("profile: %s has no tokenizer", o.model);
        goto done;
    }
    if (niah_haystack_new(tok, text, text_len, &hay, err, sizeof err) != ELA_OK ||
        niah_sample_make(hay, NIAH_SINGLE, o.ctx, o.depth,
                         niah_sample_seed((uint64_t)o.seed, NIAH_SINGLE, o.ctx, o.depth, 0), &smp,
                         err, sizeof err) != ELA_OK) {
        cli_note("profile: %s", err);
        goto done;
    }
    ela_context_params cp = ela_context_params_default();
    cp.n_ctx = o.ctx;
    cp.prefill_chunk = (o.ctx + 127) / 128 * 128;
    cp.record_drift = 1;
    int n = mi.n_layers;
    drift = calloc((size_t)n, sizeof *drift);
    sparse = calloc((size_t)n, sizeof *sparse);
    if (!drift || !sparse) {
        cli_note("profile: out of memory");
        goto done;
    }
    ela_status st;
    if ((st = ela_context_new(model, &cp, &ctx)) != ELA_OK ||
        (st = ela_context_eval(ctx, smp.ids, smp.n_ids, NULL, 0, NULL, NULL)) != ELA_OK ||
        (st = ela_context_layer_drift(ctx, drift, n)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    double total = 0.0;
    for (int l = 0; l < n; l++)
        total += drift[l];
    for (int l = 0; l < n && total > 0.0; l++)
        drift[l] /= total;
    double thr = quantile(drift, n, o.delta);
    for (int l = 0; l < n; l++)
        sparse[l] = drift[l] <= thr;
    /* The schedule as the policy string the prefill policy parses (ela_prefill_policy_format). */
    ela_prefill_policy tsa;
    char policy[512];
    ela_prefill_policy_parse("tsa", &tsa);
    tsa.layers_given = 1;
    for (int l = 0; l < n && l < ELA_MAX_POLICY_LAYERS; l++)
        if (sparse[l])
            tsa.layers.bits[l / 64] |= UINT64_C(1) << (l % 64);
    ela_prefill_policy_format(&tsa, policy, sizeof policy);
    printf("layer drift (%lld-token single-needle prompt, needle at depth %g; normalised to sum "
           "1)\nlayer    drift  tsa\n", (long long)smp.n_ids, o.depth);
    for (int l = 0; l < n; l++)
        printf("%5d  %7.4f  %s\n", l, drift[l], sparse[l] ? "sparse" : "dense");
    printf("threshold %.4f (quantile %g)\nprefill policy: %s\n", thr, o.delta, policy);
    if (o.json && write_json(&o, drift, sparse, n, thr, policy, smp.n_ids) != 0)
        goto done;
    rc = CLI_EXIT_OK;
done:
    free(drift);
    free(sparse);
    niah_sample_free(&smp);
    niah_haystack_free(hay);
    ela_context_free(ctx);
    ela_model_free(model);
    ela_backend_close(be);
    free(text);
    free(text_path);
    return rc;
}

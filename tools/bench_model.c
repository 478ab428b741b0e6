/* `ela bench model` (issue 4): prompt and decode speed of a whole model on random token ids,
 * with the bytes each decoded token reads (every weight matrix once, plus the KV cache) and
 * that traffic over the machine's read bandwidth measured in the same run between decode
 * steps, so a drifting shared host is seen by both sides. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_json.h"
#include "cli.h"
#include "cli_args.h"
#include "cli_model.h"
#include "membw.h"

static const char usage[] =
    "usage: ela bench model -m MODEL [--prompt N] [--gen N] [--kv-dtype T] [--backend B]\n"
    "                       [--prefill-policy P] [--decode-policy P] [--json FILE]\n"
    "  --prompt N   prompt tokens (random ids; default 128)\n"
    "  --gen N      decoded tokens timed (default 32)\n";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Bytes of n weights of a dtype (q8_0: 34 bytes per 32). */
static double weight_bytes(ela_dtype dt, double n)
{
    if (dt == ELA_Q8_0)
        return n * 34.0 / 32.0;
    return n * (double)ela_dtype_size(dt);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench_model(int argc, char **argv)
{
    const char *model_path = NULL, *backend = NULL, *kv = "f16", *json = NULL;
    const char *prefill = "dense", *decode = "dense";
    int64_t n_prompt = 128, n_gen = 32;
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
        } else if (OPT("--prompt")) {
            if (r > 0 && cli_parse_i64(v, 1, INT64_C(1) << 24, &n_prompt) == 0) continue;
        } else if (OPT("--gen")) {
            if (r > 0 && cli_parse_i64(v, 1, INT64_C(1) << 20, &n_gen) == 0) continue;
        } else if (OPT("--kv-dtype")) {
            if (r > 0) { kv = v; continue; }
        } else if (OPT("--prefill-policy")) {
            if (r > 0) { prefill = v; continue; }
        } else if (OPT("--decode-policy")) {
            if (r > 0) { decode = v; continue; }
        } else if (OPT("--backend")) {
            if (r > 0) { backend = v; continue; }
        } else if (OPT("--json")) {
            if (r > 0) { json = v; continue; }
        } else {
            return cli_usage_error(usage, "bench model: unknown argument '%s'", argv[i]);
        }
#undef OPT
        return cli_usage_error(usage, "bench model: bad or missing value for %s%s%s", arg,
                                      v ? ": " : "", v ? v : "");
    }
    if (!model_path)
        return cli_usage_error(usage, "bench model: -m MODEL is required");
    ela_context_params cp = ela_context_params_default();
    if (ela_dtype_parse(kv, &cp.kv_dtype) != ELA_OK ||
        ela_prefill_policy_parse(prefill, &cp.prefill) != ELA_OK ||
        ela_decode_policy_parse(decode, &cp.decode) != ELA_OK)
        return cli_usage_error(usage, "bench model: %s", ela_last_error());
    cp.n_ctx = n_prompt + n_gen + 1;

    ela_backend *be = NULL;
    ela_model *model = NULL;
    ela_context *ctx = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    double *step_ms = NULL, *bw = NULL;
    membw_probe *probe = NULL;
    int rc = CLI_EXIT_FAIL;
    ela_status st;
    if (cli_load_model(model_path, backend, NULL, &be, &model) != ELA_OK)
        goto done;
    ela_model_info mi;
    ela_model_get_info(model, &mi);
    if ((st = ela_context_new(model, &cp, &ctx)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    ids = malloc((size_t)(n_prompt + n_gen) * sizeof *ids);
    logits = malloc((size_t)mi.vocab * sizeof *logits);
    step_ms = calloc((size_t)n_gen, sizeof *step_ms);
    bw = calloc((size_t)n_gen, sizeof *bw);
    if (!ids || !logits || !step_ms || !bw) {
        cli_note("bench model: out of memory");
        goto done;
    }
    srand(1);
    for (int64_t i = 0; i < n_prompt + n_gen; i++)
        ids[i] = (int32_t)(rand() % mi.vocab);
    int on_cpu = strncmp(ela_backend_name(be), "cpu", 3) == 0;
    if (on_cpu && membw_probe_new(MEMBW_READ, cli_threads(NULL), membw_default_bytes(), &probe))
        probe = NULL;

    double t0 = now_ms();
    if ((st = ela_context_eval(ctx, ids, n_prompt, logits, 0, NULL, NULL)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    double prompt_ms = now_ms() - t0;
    for (int64_t i = 0; i < n_gen; i++) {
        double t = now_ms();
        if ((st = ela_context_eval(ctx, &ids[n_prompt + i], 1, logits, 0, NULL, NULL)) != ELA_OK) {
            cli_fail(st);
            goto done;
        }
        step_ms[i] = now_ms() - t;
        if (probe)
            bw[i] = membw_probe_pass(probe);
    }
    /* Bytes per decoded token: every layer's matrices, the LM head, one embedding row, and
     * the keys and values cached so far (at the middle of the timed steps). */
    int64_t d = mi.head_dim, qd = (int64_t)mi.n_heads * d, kd = (int64_t)mi.n_kv_heads * d;
    double per_layer = (double)mi.hidden * (double)(qd + 2 * kd) + (double)qd * (double)mi.hidden +
                       3.0 * (double)mi.ffn * (double)mi.hidden;
    double wbytes = weight_bytes(mi.weight_dtype, per_layer * mi.n_layers +
                                                      (double)mi.vocab * (double)mi.hidden);
    double kv_tokens = (double)n_prompt + (double)n_gen / 2.0;
    double kvbytes = 2.0 * mi.n_layers * kv_tokens * weight_bytes(cp.kv_dtype, (double)kd);
    qsort(step_ms, (size_t)n_gen, sizeof *step_ms, cmp_double);
    double med_ms = step_ms[n_gen / 2];
    double gbps = (wbytes + kvbytes) / (med_ms * 1e6);
    double membw = 0.0;
    if (probe) {
        qsort(bw, (size_t)n_gen, sizeof *bw, cmp_double);
        membw = bw[n_gen / 2];
    }
    printf("model %s (%s, %d layers, hidden %lld, weights %s, %.0fM params) on %s\n", model_path,
           mi.arch, mi.n_layers, (long long)mi.hidden, ela_dtype_name(mi.weight_dtype),
           (double)mi.n_params / 1e6, ela_backend_name(be));
    printf("%-10s %10s %12s %12s %10s %10s %8s\n", "phase", "tokens", "ms", "tokens/s",
           "MB/token", "GB/s", "bw_frac");
    printf("%-10s %10lld %12.1f %12.1f\n", "prompt", (long long)n_prompt, prompt_ms,
           1e3 * (double)n_prompt / prompt_ms);
    printf("%-10s %10lld %12.2f %12.2f %10.1f %10.2f", "decode", (long long)n_gen, med_ms,
           1e3 / med_ms, (wbytes + kvbytes) / 1e6, gbps);
    if (membw > 0)
        printf(" %8.3f   (read bandwidth %.2f GB/s, median of %lld passes between steps)\n",
               gbps / membw, membw, (long long)n_gen);
    else
        printf("\n");
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            cli_note("bench model: cannot write %s", json);
            goto done;
        }
        bench_json j;
        bench_json_begin(&j, f);
        bench_json_str(&j, "bench", "model");
        bench_json_str(&j, "model", model_path);
        bench_json_str(&j, "arch", mi.arch);
        bench_json_str(&j, "backend", ela_backend_name(be));
        bench_json_str(&j, "weights", ela_dtype_name(mi.weight_dtype));
        bench_json_str(&j, "kv_dtype", kv);
        bench_json_int(&j, "prompt_tokens", n_prompt);
        bench_json_num(&j, "prompt_ms", prompt_ms);
        bench_json_num(&j, "prompt_tokens_per_s", 1e3 * (double)n_prompt / prompt_ms);
        bench_json_int(&j, "gen_tokens", n_gen);
        bench_json_num(&j, "decode_ms_median", med_ms);
        bench_json_num(&j, "decode_tokens_per_s", 1e3 / med_ms);
        bench_json_num(&j, "bytes_per_token", wbytes + kvbytes);
        bench_json_num(&j, "decode_gbps", gbps);
        bench_json_num(&j, "membw_gbps", membw);
        bench_json_num(&j, "bw_fraction", membw > 0 ? gbps / membw : 0.0);
        int bad = bench_json_end(&j);
        fclose(f);
        if (bad) {
            cli_note("bench model: writing %s failed", json);
            goto done;
        }
    }
    rc = CLI_EXIT_OK;
done:
    membw_probe_free(probe);
    free(bw);
    free(step_ms);
    free(logits);
    free(ids);
    ela_context_free(ctx);
    ela_model_free(model);
    ela_backend_close(be);
    return rc;
}

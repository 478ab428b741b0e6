/* `ela eval niah` (issue 7): RULER-style needle tasks (tools/train/TASKS.md, built by
 * niah_tasks.c) over real text at several context lengths and depths, answered greedily by a
 * model under a prefill and a decode policy and scored by exact match; prints accuracy per
 * task, length and depth with the achieved prefill sparsity and speed, and writes JSON. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_json.h"
#include "cli.h"
#include "cli_args.h"
#include "cli_model.h"
#include "niah_tasks.h"

static const char usage[] =
    "usage: ela eval niah -m MODEL [options]\n"
    "  -m MODEL               HF directory (config.json, *.safetensors, tokenizer.json) or .gguf\n"
    "  --text FILE            haystack text, one paragraph per line\n"
    "                         (default: haystack.txt in the model's directory)\n"
    "  --ctx N1,N2,...        context lengths in tokens (default 4096,8192,16384,32768)\n"
    "  --depths D1,D2,...     needle depths in [0, 1], or a range A..B (default 0..1)\n"
    "  --depth-steps N        evenly spaced points of a range A..B (default 5)\n"
    "  --tasks T1,T2,...      single,multikey,multivalue,passkey,vartrack (default: all)\n"
    "  --samples N            samples per task, ctx and depth (default 1)\n"
    "  --seed S               seed of the generated tasks (default 0)\n"
    "  --prefill-policy P     dense | xattn | streaming | elastic:fa-xa | ... (default dense)\n"
    "  --decode-policy P      dense | lessismore:K | nsa | streaming (default dense)\n"
    "  --router FILE          Elastic Attention router weights (safetensors) for elastic:*\n"
    "  --kv-dtype T           f16 (default), bf16, f32 or q8_0 (CPU, head dim a multiple of 32)\n"
    "  --chunk N              prefill chunk, a multiple of 128 (default 2048; tsa and elastic\n"
    "                         policies: the largest ctx, so they see the whole prompt)\n"
    "  --backend B            cpu, vulkan, cuda, auto (default: ELA_BACKEND, else auto)\n"
    "  --json FILE            write the results, every sample and the policies as JSON\n"
    "  --min-accuracy PCT     exit with status 3 when the overall accuracy is below PCT\n"
    "Each sample: greedy decoding of at most 48 tokens up to the first newline or EOS; correct\n"
    "when that text, spaces trimmed, equals the answer.\n";

#define EXIT_BELOW_MIN 3 /* ran fine, but scored below --min-accuracy (for CI) */
#define MAX_CTX 16
#define MAX_DEPTHS 101
#define DEFAULT_CTX "4096,8192,16384,32768"

typedef struct {
    const char *model, *text, *backend, *json, *prefill, *decode, *kv, *router;
    double min_accuracy; /* percent; 0 = no check */
    int64_t ctx[MAX_CTX];
    int n_ctx;
    double depth[MAX_DEPTHS];
    int n_depths;
    niah_task task[NIAH_N_TASKS];
    int n_tasks;
    int64_t samples, seed, chunk;
} niah_opts;

/* One (task, ctx, depth) cell of the table. */
typedef struct {
    int64_t correct, total, prompt_tokens, decode_steps;
    double sparsity_sum, prefill_s, decode_s;
} cell;

typedef struct {
    int task;
    int64_t ctx, sample, n_prompt, n_paragraphs, generated_tokens, decode_steps;
    double depth, sparsity, prefill_s, decode_s;
    uint64_t seed;
    int correct;
    char expected[NIAH_TEXT_MAX];
    char *generated;
} record;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Splits a comma list into at most max items of at most 63 bytes; -1 on an empty item or
 * too many. */
static int split_list(const char *s, char items[][64], int max)
{
    int n = 0;
    for (const char *p = s;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0 || len >= 64 || n == max)
            return -1;
        memcpy(items[n], p, len);
        items[n++][len] = '\0';
        if (!c)
            return n;
        p = c + 1;
    }
}

static int parse_ctx_list(const char *s, niah_opts *o)
{
    char items[MAX_CTX][64];
    int n = split_list(s, items, MAX_CTX);
    if (n < 0)
        return cli_usage_error(usage, "eval niah: --ctx '%s' is not a list of at most %d lengths",
                               s, MAX_CTX);
    for (int i = 0; i < n; i++) {
        if (cli_parse_i64(items[i], 1, INT64_C(1) << 26, &o->ctx[i]))
            return cli_usage_error(usage, "eval niah: --ctx: '%s' is not a length in tokens",
                                   items[i]);
        for (int j = 0; j < i; j++)
            if (o->ctx[j] == o->ctx[i])
                return cli_usage_error(usage, "eval niah: --ctx lists %s twice", items[i]);
    }
    o->n_ctx = n;
    return 0;
}

static int parse_tasks(const char *s, niah_opts *o)
{
    char items[NIAH_N_TASKS][64];
    int n = split_list(s, items, NIAH_N_TASKS);
    if (n < 0)
        return cli_usage_error(usage, "eval niah: --tasks '%s' is not a list of at most %d tasks",
                               s, NIAH_N_TASKS);
    for (int i = 0; i < n; i++) {
        if (niah_task_parse(items[i], &o->task[i]))
            return cli_usage_error(usage, "eval niah: unknown task '%s' (tasks: single, multikey, "
                                   "multivalue, passkey, vartrack)", items[i]);
        for (int j = 0; j < i; j++)
            if (o->task[j] == o->task[i])
                return cli_usage_error(usage, "eval niah: --tasks lists %s twice", items[i]);
    }
    o->n_tasks = n;
    return 0;
}

/* "a..b" split into `steps` evenly spaced points, or a list "d1,d2,...". */
static int parse_depths(const char *s, int64_t steps, niah_opts *o)
{
    const char *dots = strstr(s, "..");
    if (dots) {
        char a[64], b[64];
        size_t la = (size_t)(dots - s), lb = strlen(dots + 2);
        double lo, hi;
        if (la == 0 || la >= sizeof a || lb == 0 || lb >= sizeof b)
            return cli_usage_error(usage, "eval niah: --depths '%s' is not a range A..B", s);
        memcpy(a, s, la);
        a[la] = '\0';
        memcpy(b, dots + 2, lb + 1);
        if (cli_parse_f64(a, 0.0, 1.0, &lo) || cli_parse_f64(b, 0.0, 1.0, &hi) || lo > hi)
            return cli_usage_error(usage, "eval niah: --depths '%s': a range A..B needs "
                                   "0 <= A <= B <= 1", s);
        if (lo == hi) {
            o->depth[0] = lo;
            o->n_depths = 1;
            return 0;
        }
        if (steps < 2)
            return cli_usage_error(usage, "eval niah: --depth-steps %lld: a range needs at least "
                                   "2 points", (long long)steps);
        for (int64_t i = 0; i < steps; i++)
            o->depth[i] = i + 1 == steps ? hi : lo + (hi - lo) * (double)i / (double)(steps - 1);
        o->n_depths = (int)steps;
        return 0;
    }
    char items[MAX_DEPTHS][64];
    int n = split_list(s, items, MAX_DEPTHS);
    if (n < 0)
        return cli_usage_error(usage, "eval niah: --depths '%s' is not a list of at most %d "
                               "depths or a range A..B", s, MAX_DEPTHS);
    for (int i = 0; i < n; i++) {
        if (cli_parse_f64(items[i], 0.0, 1.0, &o->depth[i]))
            return cli_usage_error(usage, "eval niah: --depths: '%s' is not a depth in [0, 1]",
                                   items[i]);
        for (int j = 0; j < i; j++)
            if (o->depth[j] == o->depth[i])
                return cli_usage_error(usage, "eval niah: --depths lists %s twice", items[i]);
    }
    o->n_depths = n;
    return 0;
}

static int parse_opts(int argc, char **argv, niah_opts *o, int *help)
{
    memset(o, 0, sizeof *o);
    o->prefill = "dense";
    o->decode = "dense";
    o->kv = "f16";
    o->samples = 1;
    const char *ctx = DEFAULT_CTX, *depths = "0..1", *tasks = NULL;
    int64_t steps = 5;
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
            if (r > 0) { ctx = v; continue; }
        } else if (OPT("--depths")) {
            if (r > 0) { depths = v; continue; }
        } else if (OPT("--depth-steps")) {
            if (r > 0 && cli_parse_i64(v, 1, MAX_DEPTHS, &steps) == 0) continue;
        } else if (OPT("--tasks")) {
            if (r > 0) { tasks = v; continue; }
        } else if (OPT("--samples")) {
            if (r > 0 && cli_parse_i64(v, 1, 1000000, &o->samples) == 0) continue;
        } else if (OPT("--seed")) {
            if (r > 0 && cli_parse_i64(v, 0, INT64_MAX, &o->seed) == 0) continue;
        } else if (OPT("--chunk")) {
            if (r > 0 && cli_parse_i64(v, 128, INT64_C(1) << 26, &o->chunk) == 0) continue;
        } else if (OPT("--prefill-policy")) {
            if (r > 0) { o->prefill = v; continue; }
        } else if (OPT("--decode-policy")) {
            if (r > 0) { o->decode = v; continue; }
        } else if (OPT("--kv-dtype")) {
            if (r > 0) { o->kv = v; continue; }
        } else if (OPT("--backend")) {
            if (r > 0) { o->backend = v; continue; }
        } else if (OPT("--router")) {
            if (r > 0) { o->router = v; continue; }
        } else if (OPT("--json")) {
            if (r > 0) { o->json = v; continue; }
        } else if (OPT("--min-accuracy")) {
            if (r > 0 && cli_parse_f64(v, 0.0, 100.0, &o->min_accuracy) == 0) continue;
        } else {
            return cli_usage_error(usage, "eval niah: unknown argument '%s'", argv[i]);
        }
#undef OPT
        return cli_usage_error(usage, "eval niah: bad or missing value for %s%s%s", arg,
                               v ? ": " : "", v ? v : "");
    }
    if (!o->model)
        return cli_usage_error(usage, "eval niah: -m MODEL is required");
    int rc;
    if ((rc = parse_ctx_list(ctx, o)) || (rc = parse_depths(depths, steps, o)))
        return rc;
    if (tasks) {
        if ((rc = parse_tasks(tasks, o)))
            return rc;
    } else {
        for (int t = 0; t < NIAH_N_TASKS; t++)
            o->task[t] = (niah_task)t;
        o->n_tasks = NIAH_N_TASKS;
    }
    return 0;
}

/* ---- generation ------------------------------------------------------------------------ */
#define GEN_CAP (NIAH_ANSWER_BUDGET * 256 + 1) /* ela_generate passes pieces of <= 256 bytes */

typedef struct {
    char text[GEN_CAP];
    size_t len;
} gen_buf;

static int on_token(int32_t id, const char *piece, size_t len, void *user)
{
    (void)id;
    gen_buf *g = user;
    if (len > GEN_CAP - 1 - g->len)
        len = GEN_CAP - 1 - g->len;
    memcpy(g->text + g->len, piece, len);
    g->len += len;
    g->text[g->len] = '\0';
    return memchr(piece, '\n', len) != NULL; /* the answer ends at its line */
}

/* The text before the first newline, as valid UTF-8 (a random model can cut a character in
 * two): each invalid byte becomes U+FFFD. malloc'd. */
static char *answer_text(const char *s, size_t len)
{
    const char *nl = memchr(s, '\n', len);
    if (nl)
        len = (size_t)(nl - s);
    char *out = malloc(len * 3 + 1), *w = out;
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = p[i] < 0x80 ? 1 : (p[i] >> 5) == 6 ? 2 : (p[i] >> 4) == 14 ? 3
                 : (p[i] >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + n <= len && !(n == 2 && p[i] < 0xc2);
        for (size_t k = 1; ok && k < n; k++)
            ok = (p[i + k] >> 6) == 2;
        if (ok && n == 3) {
            unsigned cp = (p[i] & 15u) << 12 | (p[i + 1] & 63u) << 6 | (p[i + 2] & 63u);
            ok = cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff);
        } else if (ok && n == 4) {
            unsigned cp = (p[i] & 7u) << 18 | (p[i + 1] & 63u) << 12 | (p[i + 2] & 63u) << 6 |
                          (p[i + 3] & 63u);
            ok = cp >= 0x10000 && cp <= 0x10ffff;
        }
        if (ok) {
            memcpy(w, p + i, n);
            w += n;
            i += n;
        } else {
            memcpy(w, "\xef\xbf\xbd", 3);
            w += 3;
            i++;
        }
    }
    *w = '\0';
    return out;
}

/* ---- output ---------------------------------------------------------------------------- */
static void cell_add(cell *to, const cell *c)
{
    to->correct += c->correct;
    to->total += c->total;
    to->prompt_tokens += c->prompt_tokens;
    to->decode_steps += c->decode_steps;
    to->sparsity_sum += c->sparsity_sum;
    to->prefill_s += c->prefill_s;
    to->decode_s += c->decode_s;
}

static double pct(const cell *c)
{
    return c->total ? 100.0 * (double)c->correct / (double)c->total : 0.0;
}

static double rate(int64_t n, double s) { return s > 0 ? (double)n / s : 0.0; }

/* cells[(t * n_ctx + c) * n_depths + d] */
static void sum_row(const niah_opts *o, const cell *cells, int t, int c, cell *row,
                    cell *per_depth)
{
    memset(row, 0, sizeof *row);
    for (int d = 0; d < o->n_depths; d++) {
        cell dc;
        memset(&dc, 0, sizeof dc);
        for (int ti = 0; ti < o->n_tasks; ti++)
            if (t < 0 || ti == t)
                cell_add(&dc, &cells[((size_t)ti * o->n_ctx + c) * o->n_depths + d]);
        per_depth[d] = dc;
        cell_add(row, &dc);
    }
}

static void print_row(const niah_opts *o, const char *name, int64_t ctx, const cell *row,
                      const cell *per_depth)
{
    char frac[32];
    snprintf(frac, sizeof frac, "%lld/%lld", (long long)row->correct, (long long)row->total);
    printf("%-11s %6lld %9s %6.1f%%", name, (long long)ctx, frac, pct(row));
    for (int d = 0; d < o->n_depths; d++)
        printf(" %7.1f", pct(&per_depth[d]));
    printf(" %9.3f %13.1f %12.1f\n", row->total ? row->sparsity_sum / (double)row->total : 0.0,
           rate(row->prompt_tokens, row->prefill_s), rate(row->decode_steps, row->decode_s));
}

static void print_table(const niah_opts *o, const cell *cells, const char *prefill,
                        const char *decode)
{
    cell *pd = calloc((size_t)o->n_depths, sizeof *pd);
    if (!pd)
        return;
    printf("needle suite: prefill %s, decode %s; accuracy %% per depth\n", prefill, decode);
    printf("%-11s %6s %9s %7s", "task", "ctx", "correct", "acc");
    for (int d = 0; d < o->n_depths; d++) {
        char h[32];
        snprintf(h, sizeof h, "d=%.4g", o->depth[d]);
        printf(" %7s", h);
    }
    printf(" %9s %13s %12s\n", "sparsity", "prefill tok/s", "decode tok/s");
    cell row;
    for (int t = 0; t < o->n_tasks; t++)
        for (int c = 0; c < o->n_ctx; c++) {
            sum_row(o, cells, t, c, &row, pd);
            print_row(o, niah_task_name(o->task[t]), o->ctx[c], &row, pd);
        }
    for (int c = 0; c < o->n_ctx; c++) {
        sum_row(o, cells, -1, c, &row, pd);
        print_row(o, "all", o->ctx[c], &row, pd);
    }
    fflush(stdout);
    free(pd);
}

static void json_cell(FILE *f, const char *task, int64_t ctx, const double *depth,
                      const cell *c)
{
    bench_json j;
    bench_json_begin(&j, f);
    bench_json_str(&j, "task", task);
    bench_json_int(&j, "ctx", ctx);
    if (depth)
        bench_json_num(&j, "depth", *depth);
    else
        bench_json_null(&j, "depth"); /* all depths */
    bench_json_int(&j, "correct", c->correct);
    bench_json_int(&j, "total", c->total);
    bench_json_num(&j, "accuracy", c->total ? (double)c->correct / (double)c->total : 0.0);
    bench_json_num(&j, "sparsity", c->total ? c->sparsity_sum / (double)c->total : 0.0);
    bench_json_num(&j, "prefill_tokens_per_s", rate(c->prompt_tokens, c->prefill_s));
    bench_json_num(&j, "decode_tokens_per_s", rate(c->decode_steps, c->decode_s));
    bench_json_end(&j);
}

static int write_json(FILE *f, const niah_opts *o, const char *text_path, const char *backend,
                      const char *prefill, const char *decode, int64_t n_paragraphs,
                      const cell *cells, const record *rec, int64_t n_rec, double wall_s)
{
    fputs("{\n\"run\": ", f);
    bench_json j;
    bench_json_begin(&j, f);
    bench_json_str(&j, "bench", "niah");
    bench_json_str(&j, "version", ela_version());
    bench_json_str(&j, "model", o->model);
    bench_json_str(&j, "text", text_path);
    bench_json_int(&j, "text_paragraphs", n_paragraphs);
    bench_json_str(&j, "backend", backend);
    bench_json_str(&j, "prefill_policy", prefill);
    bench_json_str(&j, "decode_policy", decode);
    bench_json_str(&j, "router", o->router); /* NULL: none given */
    bench_json_str(&j, "kv_dtype", o->kv);
    char list[MAX_DEPTHS * 24];
    size_t w = 0;
    for (int c = 0; c < o->n_ctx; c++)
        w += (size_t)snprintf(list + w, sizeof list - w, "%s%lld", c ? "," : "",
                              (long long)o->ctx[c]);
    bench_json_str(&j, "ctx", list);
    w = 0;
    for (int d = 0; d < o->n_depths; d++)
        w += (size_t)snprintf(list + w, sizeof list - w, "%s%.17g", d ? "," : "", o->depth[d]);
    bench_json_str(&j, "depths", list);
    w = 0;
    for (int t = 0; t < o->n_tasks; t++)
        w += (size_t)snprintf(list + w, sizeof list - w, "%s%s", t ? "," : "",
                              niah_task_name(o->task[t]));
    bench_json_str(&j, "tasks", list);
    bench_json_int(&j, "seed", o->seed);
    bench_json_int(&j, "samples", o->samples);
    bench_json_int(&j, "answer_budget", NIAH_ANSWER_BUDGET);
    bench_json_num(&j, "wall_s", wall_s);
    bench_json_num(&j, "peak_rss_mib", cli_peak_rss_mib());
    bench_json_end(&j);
    fputs(",\n\"results\": [\n", f);
    cell *pd = calloc((size_t)o->n_depths, sizeof *pd);
    if (!pd)
        return -1;
    cell row;
    int first = 1;
    for (int t = 0; t <= o->n_tasks; t++) /* t = n_tasks: "all" */
        for (int c = 0; c < o->n_ctx; c++) {
            int all = t == o->n_tasks;
            sum_row(o, cells, all ? -1 : t, c, &row, pd);
            const char *name = all ? "all" : niah_task_name(o->task[t]);
            fputs(first ? "" : ",\n", f);
            first = 0;
            json_cell(f, name, o->ctx[c], NULL, &row);
            for (int d = 0; d < o->n_depths; d++) {
                fputs(",\n", f);
                json_cell(f, name, o->ctx[c], &o->depth[d], &pd[d]);
            }
        }
    free(pd);
    fputs("],\n\"samples\": [\n", f);
    for (int64_t i = 0; i < n_rec; i++) {
        const record *r = &rec[i];
        char seed[24];
        snprintf(seed, sizeof seed, "0x%016llx", (unsigned long long)r->seed);
        bench_json_begin(&j, f);
        bench_json_str(&j, "task", niah_task_name((niah_task)r->task));
        bench_json_int(&j, "ctx", r->ctx);
        bench_json_num(&j, "depth", r->depth);
        bench_json_int(&j, "sample", r->sample);
        bench_json_str(&j, "seed", seed);
        bench_json_int(&j, "n_prompt_tokens", r->n_prompt);
        bench_json_int(&j, "n_paragraphs", r->n_paragraphs);
        bench_json_str(&j, "expected", r->expected);
        bench_json_str(&j, "generated", r->generated);
        bench_json_int(&j, "correct", r->correct);
        bench_json_num(&j, "sparsity", r->sparsity);
        bench_json_num(&j, "prefill_s", r->prefill_s);
        bench_json_num(&j, "decode_s", r->decode_s);
        bench_json_int(&j, "generated_tokens", r->generated_tokens);
        bench_json_end(&j);
        if (i + 1 < n_rec)
            fputs(",\n", f);
    }
    fputs("]\n}\n", f);
    return fflush(f) != 0 || ferror(f) ? -1 : 0;
}

/* ---- the command ----------------------------------------------------------------------- */
int cmd_eval_niah(int argc, char **argv)
{
    niah_opts o;
    int help = 0, rc = parse_opts(argc, argv, &o, &help);
    if (rc || help)
        return rc;
    ela_context_params cp = ela_context_params_default();
    if (ela_prefill_policy_parse(o.prefill, &cp.prefill) != ELA_OK ||
        ela_decode_policy_parse(o.decode, &cp.decode) != ELA_OK ||
        ela_dtype_parse(o.kv, &cp.kv_dtype) != ELA_OK)
        return cli_usage_error(usage, "eval niah: %s", ela_last_error());
    int64_t max_ctx = 0;
    for (int c = 0; c < o.n_ctx; c++)
        max_ctx = o.ctx[c] > max_ctx ? o.ctx[c] : max_ctx;
    cp.n_ctx = max_ctx;
    /* tsa and the Elastic router see the whole prompt only in one chunk (the question is at
     * its end) */
    cp.prefill_chunk = cli_prefill_chunk(&cp.prefill, o.chunk, max_ctx);
    char prefill_canon[512], decode_canon[512];
    ela_prefill_policy_format(&cp.prefill, prefill_canon, sizeof prefill_canon);
    ela_decode_policy_format(&cp.decode, decode_canon, sizeof decode_canon);

    char *text_path = NULL, *text = NULL, err[512] = "";
    size_t text_len = 0;
    FILE *json = NULL;
    ela_backend *be = NULL;
    ela_model *model = NULL;
    ela_context *ctx = NULL;
    niah_haystack *hay = NULL;
    cell *cells = NULL;
    record *rec = NULL;
    gen_buf *gen = NULL;
    int64_t n_rec = 0;
    niah_sample smp;
    memset(&smp, 0, sizeof smp);
    rc = CLI_EXIT_FAIL;

    /* Everything that can fail fast does, before the model loads and the long run starts. */
    if (!(text_path = o.text ? strdup(o.text) : niah_default_text_path(o.model))) {
        cli_note("eval niah: out of memory");
        goto done;
    }
    if (access(text_path, R_OK) != 0) {
        if (o.text)
            cli_note("eval niah: cannot read the haystack text %s: %s", text_path, strerror(errno));
        else
            cli_note("eval niah: no haystack text: %s: %s (give one with --text FILE)", text_path,
                     strerror(errno));
        goto done;
    }
    if (cli_read_file(text_path, &text, &text_len))
        goto done;
    if (o.json && !(json = fopen(o.json, "w"))) {
        cli_note("eval niah: cannot write %s: %s", o.json, strerror(errno));
        goto done;
    }
    if (cli_load_model(o.model, o.backend, o.router, &be, &model) != ELA_OK)
        goto done;
    const ela_tokenizer *tok = ela_model_tokenizer(model);
    if (!tok) {
        cli_note("eval niah: the model has no tokenizer (tokenizer.json or GGUF tokenizer "
                 "metadata)");
        goto done;
    }
    ela_status st;
    if ((st = niah_haystack_new(tok, text, text_len, &hay, err, sizeof err)) != ELA_OK) {
        cli_note("eval niah: %s: %s", text_path, err);
        rc = st == ELA_ERR_INVALID_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto done;
    }
    ela_model_info info;
    ela_model_get_info(model, &info);
    if (info.max_positions > 0 && max_ctx > info.max_positions)
        cli_note("eval niah: ctx %lld exceeds the model's %lld positions", (long long)max_ctx,
                 (long long)info.max_positions);
    /* Every sample once before the model runs (milliseconds each), so a ctx too small for a
     * task's question fails now, not hours in. */
    for (int t = 0; t < o.n_tasks; t++)
        for (int c = 0; c < o.n_ctx; c++)
            for (int d = 0; d < o.n_depths; d++)
                for (int64_t i = 0; i < o.samples; i++) {
                    uint64_t seed = niah_sample_seed((uint64_t)o.seed, o.task[t], o.ctx[c],
                                                     o.depth[d], i);
                    if ((st = niah_sample_make(hay, o.task[t], o.ctx[c], o.depth[d], seed, &smp,
                                               err, sizeof err)) != ELA_OK) {
                        cli_note("eval niah: %s", err);
                        rc = st == ELA_ERR_INVALID_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
                        goto done;
                    }
                    niah_sample_free(&smp);
                }

    if ((st = ela_context_new(model, &cp, &ctx)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    int64_t per_cell = o.samples, n_cells = (int64_t)o.n_tasks * o.n_ctx * o.n_depths;
    int64_t total = n_cells * per_cell;
    if (!(cells = calloc((size_t)n_cells, sizeof *cells)) ||
        !(rec = calloc((size_t)total, sizeof *rec)) || !(gen = malloc(sizeof *gen))) {
        cli_note("eval niah: out of memory for %lld samples", (long long)total);
        goto done;
    }
    int tty = isatty(fileno(stderr));
    double t_start = now_s();
    ela_generate_params gp = ela_generate_params_default();
    gp.max_tokens = NIAH_ANSWER_BUDGET;
    gp.on_token = on_token;
    gp.user = gen;
    for (int t = 0; t < o.n_tasks; t++)
        for (int c = 0; c < o.n_ctx; c++) {
            double t_cell = now_s();
            cell sum;
            memset(&sum, 0, sizeof sum);
            char label[48];
            snprintf(label, sizeof label, "%-10s ctx %-7lld", niah_task_name(o.task[t]),
                     (long long)o.ctx[c]);
            for (int d = 0; d < o.n_depths; d++)
                for (int64_t i = 0; i < o.samples; i++) {
                    record *r = &rec[n_rec];
                    r->task = o.task[t];
                    r->ctx = o.ctx[c];
                    r->depth = o.depth[d];
                    r->sample = i;
                    r->seed = niah_sample_seed((uint64_t)o.seed, o.task[t], o.ctx[c], o.depth[d],
                                               i);
                    if ((st = niah_sample_make(hay, o.task[t], o.ctx[c], o.depth[d], r->seed,
                                               &smp, err, sizeof err)) != ELA_OK) {
                        cli_note("eval niah: %s", err);
                        goto done;
                    }
                    ela_context_reset(ctx);
                    gen->len = 0;
                    gen->text[0] = '\0';
                    ela_generate_stats gs;
                    if ((st = ela_generate(ctx, smp.ids, smp.n_ids, &gp, &gs)) != ELA_OK) {
                        cli_fail(st);
                        goto done;
                    }
                    ela_prefill_report rep;
                    r->sparsity = ela_context_last_report(ctx, &rep) == ELA_OK ? rep.sparsity : 0.0;
                    r->n_prompt = smp.n_ids;
                    r->n_paragraphs = smp.n_paragraphs;
                    r->prefill_s = gs.prefill_ms * 1e-3;
                    r->decode_s = gs.decode_ms * 1e-3;
                    r->generated_tokens = gs.generated_tokens;
                    /* Decode steps: every generated token but the last runs one, unless EOS
                     * (not counted as generated) came after it. */
                    r->decode_steps = gs.stopped_by_eos ? gs.generated_tokens
                                      : gs.generated_tokens > 0 ? gs.generated_tokens - 1 : 0;
                    r->correct = niah_score(gen->text, gen->len, smp.answer);
                    snprintf(r->expected, sizeof r->expected, "%s", smp.answer);
                    r->generated = answer_text(gen->text, gen->len);
                    niah_sample_free(&smp);
                    n_rec++;
                    if (!r->generated) {
                        cli_note("eval niah: out of memory");
                        goto done;
                    }
                    cell *ce = &cells[((size_t)t * o.n_ctx + c) * o.n_depths + d];
                    cell one = {.correct = r->correct, .total = 1, .prompt_tokens = r->n_prompt,
                                .decode_steps = r->decode_steps, .sparsity_sum = r->sparsity,
                                .prefill_s = r->prefill_s, .decode_s = r->decode_s};
                    cell_add(ce, &one);
                    cell_add(&sum, &one);
                    cli_progress(label, (int64_t)(d * o.samples + i + 1),
                                 (int64_t)o.n_depths * o.samples);
                }
            if (!tty)
                cli_note("niah: %s ctx %lld: %lld/%lld correct (%.1f%%), sparsity %.3f, prefill "
                         "%.0f tok/s, decode %.1f tok/s, %.1f s",
                         niah_task_name(o.task[t]), (long long)o.ctx[c], (long long)sum.correct,
                         (long long)sum.total, pct(&sum), sum.sparsity_sum / (double)sum.total,
                         rate(sum.prompt_tokens, sum.prefill_s),
                         rate(sum.decode_steps, sum.decode_s), now_s() - t_cell);
        }
    print_table(&o, cells, prefill_canon, decode_canon);
    if (json) {
        int bad = write_json(json, &o, text_path, ela_backend_name(be), prefill_canon,
                             decode_canon, niah_haystack_count(hay), cells, rec, n_rec,
                             now_s() - t_start);
        bad |= fclose(json) != 0;
        json = NULL;
        if (bad) {
            cli_note("eval niah: writing %s failed", o.json);
            remove(o.json);
            goto done;
        }
    }
    rc = CLI_EXIT_OK;
    cell all = {0};
    for (int64_t i = 0; i < (int64_t)o.n_tasks * o.n_ctx * o.n_depths; i++)
        cell_add(&all, &cells[i]);
    if (pct(&all) < o.min_accuracy) {
        cli_note("niah: accuracy %.1f%% is below --min-accuracy %g%%", pct(&all), o.min_accuracy);
        rc = EXIT_BELOW_MIN;
    }
done:
    if (json) { /* the run failed: leave no half-written file behind */
        fclose(json);
        remove(o.json);
    }
    for (int64_t i = 0; i < n_rec; i++)
        free(rec[i].generated);
    free(rec);
    free(cells);
    free(gen);
    niah_sample_free(&smp);
    niah_haystack_free(hay);
    ela_context_free(ctx);
    ela_model_free(model);
    ela_backend_close(be);
    free(text);
    free(text_path);
    return rc;
}

/* Command line of `ela bench attn` (see bench_attn.h): defaults, strict parsing and the
 * checks that make a run meaningful (hq a multiple of hkv, causal q <= n, sizes that fit). */
#include <stdio.h>
#include <string.h>

#include "bench_attn.h"
#include "cli.h"
#include "cli_args.h"

const char bench_attn_usage[] =
    "usage: ela bench attn [options]\n"
    "  --backend NAME     cpu, vulkan, vulkan:1, cuda, auto (default: $ELA_BACKEND, else auto)\n"
    "  --mode M           decode or prefill (default decode)\n"
    "  --n KEYS           keys per KV head (default 16384)\n"
    "  --q QUERIES        query rows (default 1 for decode, n for prefill)\n"
    "  --hq H             query heads (default 32)\n"
    "  --hkv H            KV heads; hq must be a multiple (default 8)\n"
    "  --d D              head dim (default 128)\n"
    "  --dtype T          dtype of q, k and v: f32, f16, bf16 (default f16), or q8_0: k and v\n"
    "                     q8_0 (a quantized KV cache; d a multiple of 32), q f32\n"
    "  --kv-dtype T       dtype of k and v alone (f32, f16, bf16, q8_0; default --dtype)\n"
    "  --odtype T         dtype of o (default f32 for decode: the step's output is tiny and\n"
    "                     feeds the f32 projection; --dtype for prefill, like activations)\n"
    "  --causal 0|1       query row i sits at position n - q + i (default 1)\n"
    "  --iters N          timed calls (default: as many as fit in ~2 s, at least 3)\n"
    "  --warmup N         untimed calls first (default: at least 1, until 0.25 s passed)\n"
    "  --membw 0|1        measure host memory read bandwidth in the same run, interleaved\n"
    "                     with the timed calls (default 1 for decode on a CPU backend, else\n"
    "                     0: a GPU's own bandwidth is not what the host probe measures)\n"
    "  --membw-mib M      bandwidth probe buffer (default 1024, at most 1/4 of RAM)\n"
    "  --peak 0|1         measure the CPU's f32 FMA peak in the same run (default 1 for\n"
    "                     prefill on a CPU backend, else 0)\n"
    "  --json FILE        also write the results as one JSON object ('-': stdout)\n"
    "Q and O are [q, hq, d], K and V [hkv, n, d], packed; inputs uniform in [-1, 1), fixed\n"
    "seed. FLOPs = 4 d hq (visible query-key pairs); bytes = K + V + Q read + O written.\n"
    "GFLOP/s and GB/s use the median call; bw_fraction = GB/s / best probe pass;\n"
    "peak_fraction = GFLOP/s / FMA peak.\n";

/* Integer option with a range; the message names the option and the bad text. */
static int int_opt(const char *name, const char *text, int64_t min, int64_t max, int64_t *out)
{
    if (cli_parse_i64(text, min, max, out) == 0)
        return CLI_EXIT_OK;
    return cli_usage_error(bench_attn_usage,
                           "bench attn: %s wants an integer in [%lld, %lld], got '%s'", name,
                           (long long)min, (long long)max, text);
}

/* f32, f16, bf16, and q8_0 where `q8` (k and v only). */
static int dtype_opt(const char *name, const char *text, int q8, ela_dtype *out)
{
    if (strcmp(text, "f32") == 0)
        *out = ELA_F32;
    else if (strcmp(text, "f16") == 0)
        *out = ELA_F16;
    else if (strcmp(text, "bf16") == 0)
        *out = ELA_BF16;
    else if (q8 && strcmp(text, "q8_0") == 0)
        *out = ELA_Q8_0;
    else
        return cli_usage_error(bench_attn_usage, "bench attn: %s wants f32, f16, bf16%s, got '%s'",
                               name, q8 ? " or q8_0" : "", text);
    return CLI_EXIT_OK;
}

/* Bytes of a packed [a, b, c] tensor of `esize`-byte elements, as a double so it cannot
 * overflow; the caller compares it with a sane bound. */
static double tensor_bytes(int64_t a, int64_t b, int64_t c, int esize)
{
    return (double)a * (double)b * (double)c * (double)esize;
}

static int check(const bench_attn_opts *o)
{
    if (o->hq % o->hkv != 0)
        return cli_usage_error(bench_attn_usage,
                               "bench attn: --hq %d is not a multiple of --hkv %d", o->hq,
                               o->hkv);
    if (o->kv_dtype == ELA_Q8_0 && o->d % 32 != 0)
        return cli_usage_error(bench_attn_usage,
                               "bench attn: q8_0 k and v need --d a multiple of 32, got %d", o->d);
    if (o->causal && o->q > o->n)
        return cli_usage_error(bench_attn_usage,
                               "bench attn: causal needs --q <= --n (queries sit at positions "
                               "n - q .. n - 1), got q %lld > n %lld",
                               (long long)o->q, (long long)o->n);
    const double limit = 0x1p50; /* 1 PiB: far beyond any device, still exact in int64 */
    double kv = tensor_bytes(o->hkv, o->n, o->d, 4);
    double qo = tensor_bytes(o->q, o->hq, o->d, 4);
    if (kv > limit || qo > limit)
        return cli_usage_error(bench_attn_usage, "bench attn: tensors too large (%.3g bytes)",
                               kv > qo ? kv : qo);
    return CLI_EXIT_OK;
}

int bench_attn_parse(int argc, char **argv, bench_attn_opts *o, int *help)
{
    memset(o, 0, sizeof(*o));
    o->decode = 1;
    o->n = 16384;
    o->q = -1; /* set from the mode below */
    o->hq = 32;
    o->hkv = 8;
    o->d = 128;
    o->dtype = ELA_F16;
    int kv_given = 0;
    o->causal = 1;
    o->warmup = -1;
    o->membw = -1;
    o->peak = -1;
    int odtype_given = 0;
    *help = 0;

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int64_t x = 0;
        int rc = CLI_EXIT_OK, hit = 0;
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(bench_attn_usage, stdout);
            *help = 1;
            return CLI_EXIT_OK;
        }
#define BENCH_OPT(name) ((hit = cli_option(argc, argv, &i, name, &v)) != 0)
        if (BENCH_OPT("--backend")) {
            if (hit > 0)
                o->backend = v;
        } else if (BENCH_OPT("--mode")) {
            if (hit > 0 && strcmp(v, "decode") == 0)
                o->decode = 1;
            else if (hit > 0 && strcmp(v, "prefill") == 0)
                o->decode = 0;
            else if (hit > 0)
                rc = cli_usage_error(bench_attn_usage,
                                     "bench attn: --mode wants decode or prefill, got '%s'", v);
        } else if (BENCH_OPT("--n")) {
            if (hit > 0 && (rc = int_opt("--n", v, 1, INT64_C(1) << 40, &x)) == CLI_EXIT_OK)
                o->n = x;
        } else if (BENCH_OPT("--q")) {
            if (hit > 0 && (rc = int_opt("--q", v, 1, INT64_C(1) << 40, &x)) == CLI_EXIT_OK)
                o->q = x;
        } else if (BENCH_OPT("--hq")) {
            if (hit > 0 && (rc = int_opt("--hq", v, 1, 65536, &x)) == CLI_EXIT_OK)
                o->hq = (int)x;
        } else if (BENCH_OPT("--hkv")) {
            if (hit > 0 && (rc = int_opt("--hkv", v, 1, 65536, &x)) == CLI_EXIT_OK)
                o->hkv = (int)x;
        } else if (BENCH_OPT("--d")) {
            if (hit > 0 && (rc = int_opt("--d", v, 1, 65536, &x)) == CLI_EXIT_OK)
                o->d = (int)x;
        } else if (BENCH_OPT("--dtype")) {
            if (hit > 0)
                rc = dtype_opt("--dtype", v, 1, &o->dtype);
        } else if (BENCH_OPT("--kv-dtype")) {
            if (hit > 0 && (rc = dtype_opt("--kv-dtype", v, 1, &o->kv_dtype)) == CLI_EXIT_OK)
                kv_given = 1;
        } else if (BENCH_OPT("--odtype")) {
            if (hit > 0 && (rc = dtype_opt("--odtype", v, 0, &o->odtype)) == CLI_EXIT_OK)
                odtype_given = 1;
        } else if (BENCH_OPT("--causal")) {
            if (hit > 0 && (rc = int_opt("--causal", v, 0, 1, &x)) == CLI_EXIT_OK)
                o->causal = (int)x;
        } else if (BENCH_OPT("--iters")) {
            if (hit > 0 && (rc = int_opt("--iters", v, 1, 100000000, &x)) == CLI_EXIT_OK)
                o->iters = x;
        } else if (BENCH_OPT("--warmup")) {
            if (hit > 0 && (rc = int_opt("--warmup", v, 0, 100000000, &x)) == CLI_EXIT_OK)
                o->warmup = x;
        } else if (BENCH_OPT("--membw-mib")) {
            if (hit > 0 && (rc = int_opt("--membw-mib", v, 64, 1 << 20, &x)) == CLI_EXIT_OK)
                o->membw_mib = x;
        } else if (BENCH_OPT("--membw")) {
            if (hit > 0 && (rc = int_opt("--membw", v, 0, 1, &x)) == CLI_EXIT_OK)
                o->membw = (int)x;
        } else if (BENCH_OPT("--peak")) {
            if (hit > 0 && (rc = int_opt("--peak", v, 0, 1, &x)) == CLI_EXIT_OK)
                o->peak = (int)x;
        } else if (BENCH_OPT("--json")) {
            if (hit > 0 && *v == '\0')
                rc = cli_usage_error(bench_attn_usage, "bench attn: --json wants a file name");
            else if (hit > 0)
                o->json = v;
        } else {
            return cli_usage_error(bench_attn_usage, "bench attn: unknown argument '%s'", arg);
        }
#undef BENCH_OPT
        if (hit < 0)
            return cli_usage_error(bench_attn_usage, "bench attn: %s needs a value", arg);
        if (rc != CLI_EXIT_OK)
            return rc;
    }

    if (o->q < 0)
        o->q = o->decode ? 1 : o->n;
    if (!kv_given)
        o->kv_dtype = o->dtype;
    if (o->dtype == ELA_Q8_0) /* q8_0 is a KV cache dtype: q stays f32, as in the runtime */
        o->dtype = ELA_F32;
    if (!odtype_given)
        o->odtype = o->decode ? ELA_F32 : o->dtype;
    return check(o);
}

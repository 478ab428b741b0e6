/* The ela command-line tool (DESIGN.md section 1): `ela info`, `ela bench attn|sparse|membw`,
 * `ela --version`, `ela help`. Dispatches to one cmd_* per file; exit 0 on success, 1 when
 * the library fails, 2 on a wrong command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "usage: ela <command> [options]\n"
    "commands:\n"
    "  run -m M -p TEXT     generate text with a model (ela run --help for options)\n"
    "  perplexity -m M -f F perplexity of a model on a text file (ela perplexity --help)\n"
    "  tokenize ...         token ids of a text (ela tokenize --help)\n"
    "  eval niah -m M       needle-in-a-haystack suite (ela eval niah --help)\n"
    "  profile -m M         per-layer drift: Token Sparse Attention's layers (ela profile --help)\n"
    "  info                 version, backends and devices, which backend opens by default\n"
    "  bench attn [opts]    time dense attention (ela bench attn --help for options)\n"
    "  bench sparse [opts]  a sparse policy against dense attention (ela bench sparse --help)\n"
    "  bench membw [opts]   measure memory bandwidth (ela bench membw --help)\n"
    "  bench model [opts]   prompt and decode speed of a model (ela bench model --help)\n"
    "  help                 this message\n"
    "  --version            print the version\n"
    "environment: ELA_BACKEND (default backend), ELA_THREADS (CPU threads),\n"
    "             ELA_PLUGIN_PATH (directories with backend plugins)\n";

static const char bench_usage[] =
    "usage: ela bench attn [options]   (ela bench attn --help)\n"
    "       ela bench sparse [options] (ela bench sparse --help)\n"
    "       ela bench membw [options]  (ela bench membw --help)\n"
    "       ela bench model [options]  (ela bench model --help)\n";

static const char eval_usage[] =
    "usage: ela eval niah -m MODEL [options] (ela eval niah --help)\n";

static int is_help(const char *arg)
{
    return strcmp(arg, "help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static int cmd_bench(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(bench_usage, "bench: which benchmark?");
    if (is_help(argv[1])) {
        fputs(bench_usage, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "attn") == 0)
        return cmd_bench_attn(argc - 1, argv + 1);
    if (strcmp(argv[1], "sparse") == 0)
        return cmd_bench_sparse(argc - 1, argv + 1);
    if (strcmp(argv[1], "membw") == 0)
        return cmd_bench_membw(argc - 1, argv + 1);
    if (strcmp(argv[1], "model") == 0)
        return cmd_bench_model(argc - 1, argv + 1);
    return cli_usage_error(bench_usage, "bench: unknown benchmark '%s'", argv[1]);
}

static int cmd_eval(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(eval_usage, "eval: which evaluation?");
    if (is_help(argv[1])) {
        fputs(eval_usage, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "niah") == 0)
        return cmd_eval_niah(argc - 1, argv + 1);
    return cli_usage_error(eval_usage, "eval: unknown evaluation '%s'", argv[1]);
}

/* OpenMP threads that spin at the end of each parallel region hold their core while a worker
 * preempted by another process waits for it: a decode step runs hundreds of regions, and one
 * busy process on a 2-core machine made it 20-60x slower (1.7 s instead of 35-80 ms per token
 * for a 0.5B model). Sleeping waiters cost a few microseconds per region instead. libgomp reads
 * OMP_WAIT_POLICY once, when it is loaded, so the tool sets it and re-executes itself; a policy
 * the user set is kept. */
static void prefer_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): run on with the default policy */
}

int main(int argc, char **argv)
{
    prefer_passive_openmp(argv);
    if (argc < 2)
        return cli_usage_error(usage, "no command given");
    const char *cmd = argv[1];
    if (is_help(cmd)) {
        if (argc > 2)
            return cli_usage_error(usage, "help takes no arguments");
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
        if (argc > 2)
            return cli_usage_error(usage, "%s takes no arguments", cmd);
        const char *lib = ela_version();
        if (strcmp(lib, ELA_VERSION_STRING) == 0)
            printf("ela %s\n", lib);
        else
            printf("ela %s (library), built against ela.h %s\n", lib, ELA_VERSION_STRING);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "perplexity") == 0)
        return cmd_perplexity(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "profile") == 0)
        return cmd_profile(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    return cli_usage_error(usage, "unknown command '%s'", cmd);
}

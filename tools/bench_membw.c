/* `ela bench membw`: the memory bandwidth probe on its own, with its cross-checks: the read
 * kernel ela bench attn uses, the same sum for the baseline ISA, and memcpy (read + write),
 * run interleaved pass by pass so a drifting shared host affects all three alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_json.h"
#include "cli.h"
#include "cli_args.h"
#include "membw.h"

static const char usage[] =
    "usage: ela bench membw [options]\n"
    "  --mib M        buffer per probe in MiB, three probes at once (default 1024, at most\n"
    "                 1/4 of RAM)\n"
    "  --threads T    threads (default: ELA_THREADS, else all cores, as the CPU backend)\n"
    "  --reps R       timed passes per kernel (default 10)\n"
    "  --json FILE    also write the results as one JSON object ('-': stdout)\n"
    "Kernels: read (the probe of ela bench attn: AVX2 when present), read-portable (the\n"
    "same sum for the baseline ISA), memcpy (bytes read + bytes written). GB/s = 1e9 B/s.\n";

#define N_KINDS 3

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Writes the results to f (opened before the run) and closes it unless it is stdout. */
static int write_json(FILE *f, const char *path, int threads, int64_t reps, size_t bytes,
                      membw_probe *const *probes, const double *best, const double *median)
{
    static const char *const keys[N_KINDS] = {"read", "read_portable", "copy"};
    bench_json j;
    char key[64];
    bench_json_begin(&j, f);
    bench_json_str(&j, "bench", "membw");
    bench_json_str(&j, "version", ela_version());
    bench_json_int(&j, "threads", threads);
    bench_json_int(&j, "reps", reps);
    bench_json_int(&j, "bytes", (int64_t)bytes);
    bench_json_num(&j, "membw_gbps", best[0]);
    bench_json_str(&j, "membw_kernel", membw_probe_kernel(probes[0]));
    for (int k = 0; k < N_KINDS; k++) {
        snprintf(key, sizeof(key), "%s_gbps", keys[k]);
        bench_json_num(&j, key, best[k]);
        snprintf(key, sizeof(key), "%s_gbps_median", keys[k]);
        bench_json_num(&j, key, median[k]);
    }
    int bad = bench_json_end(&j) != 0;
    if (f != stdout && fclose(f) != 0)
        bad = 1;
    if (bad) {
        fprintf(stderr, "ela: cannot write %s\n", path);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

int cmd_bench_membw(int argc, char **argv)
{
    int64_t mib = 0, threads = 0, reps = 10;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int hit;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if ((hit = cli_option(argc, argv, &i, "--mib", &v)) > 0) {
            if (cli_parse_i64(v, 64, 1 << 20, &mib) != 0)
                return cli_usage_error(usage, "bench membw: --mib wants 64..1048576, got '%s'", v);
        } else if (hit == 0 && (hit = cli_option(argc, argv, &i, "--threads", &v)) > 0) {
            if (cli_parse_i64(v, 1, 65536, &threads) != 0)
                return cli_usage_error(usage, "bench membw: --threads wants 1..65536, got '%s'", v);
        } else if (hit == 0 && (hit = cli_option(argc, argv, &i, "--reps", &v)) > 0) {
            if (cli_parse_i64(v, 1, 1000, &reps) != 0)
                return cli_usage_error(usage, "bench membw: --reps wants 1..1000, got '%s'", v);
        } else if (hit == 0 && (hit = cli_option(argc, argv, &i, "--json", &v)) > 0) {
            if (!*v)
                return cli_usage_error(usage, "bench membw: --json wants a file name");
            json = v;
        } else if (hit == 0) {
            return cli_usage_error(usage, "bench membw: unknown argument '%s'", argv[i]);
        }
        if (hit < 0)
            return cli_usage_error(usage, "bench membw: %s needs a value", argv[i]);
    }
    const char *threads_from = "--threads";
    if (threads == 0)
        threads = cli_threads(&threads_from);
    size_t bytes = mib ? (size_t)mib << 20 : membw_default_bytes();

    FILE *f = NULL;
    if (json) {
        f = strcmp(json, "-") == 0 ? stdout : fopen(json, "w");
        if (!f) {
            perror(json);
            return CLI_EXIT_FAIL;
        }
    }
    static const char *const names[N_KINDS] = {"read", "read-portable", "memcpy"};
    membw_probe *probes[N_KINDS] = {NULL, NULL, NULL};
    double *gbps = malloc((size_t)(N_KINDS * reps) * sizeof(double));
    double best[N_KINDS], median[N_KINDS];
    int rc = CLI_EXIT_FAIL;
    if (!gbps) {
        cli_note("out of host memory");
        goto done;
    }
    cli_note("bench membw: %.0f MiB per probe, %d threads (%s), %lld passes each",
             (double)bytes / (1 << 20), (int)threads, threads_from, (long long)reps);
    for (int k = 0; k < N_KINDS; k++) {
        if (membw_probe_new((membw_kind)k, (int)threads, bytes, &probes[k]) != 0) {
            cli_note("cannot allocate %.0f MiB for the %s probe (try --mib)",
                     (double)bytes / (1 << 20), names[k]);
            goto done;
        }
        membw_probe_pass(probes[k]); /* untimed: page tables, thread pool */
    }
    for (int64_t r = 0; r < reps; r++)
        for (int k = 0; k < N_KINDS; k++)
            gbps[k * reps + r] = membw_probe_pass(probes[k]);

    printf("ela %s, memory bandwidth, %d threads, %.0f MiB per probe, %lld passes each\n",
           ela_version(), (int)threads, (double)bytes / (1 << 20), (long long)reps);
    printf("%-14s %-9s %12s %12s\n", "probe", "kernel", "best GB/s", "median GB/s");
    for (int k = 0; k < N_KINDS; k++) {
        double *g = gbps + k * reps;
        qsort(g, (size_t)reps, sizeof(double), cmp_double);
        best[k] = g[reps - 1];
        median[k] = reps % 2 ? g[reps / 2] : 0.5 * (g[reps / 2 - 1] + g[reps / 2]);
        printf("%-14s %-9s %12.2f %12.2f\n", names[k], membw_probe_kernel(probes[k]), best[k],
               median[k]);
    }
    fflush(stdout);
    rc = f ? write_json(f, json, (int)threads, reps, bytes, probes, best, median) : CLI_EXIT_OK;
    f = NULL; /* closed by write_json */
done:
    if (f && f != stdout)
        fclose(f);
    for (int k = N_KINDS - 1; k >= 0; k--)
        membw_probe_free(probes[k]);
    free(gbps);
    return rc;
}

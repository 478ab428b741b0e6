/* `ela bench attn` (DESIGN.md section 8): times ela_attn_dense + synchronize on random
 * inputs and reports median/min time, GFLOP/s, GB/s and the fraction of a baseline measured
 * in the same run: memory read bandwidth for decode (probe passes interleaved with the
 * calls), the f32 FMA peak for prefill (CPU backends). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_attn.h"
#include "bench_fill.h"
#include "bench_json.h"
#include "cli.h"
#include "fmapeak.h"
#include "membw.h"
#include "timer.h"

#define AUTO_SECONDS 2.0     /* --iters default: time this much attention... */
#define AUTO_MIN_ITERS 3     /* ...with at least this many calls */
#define AUTO_MAX_ITERS 1000000
#define WARMUP_SECONDS 0.25  /* --warmup default: at least 1 call, until this much passed */
#define WARMUP_MAX_CALLS 1000
#define PROBE_INTERVAL 0.25  /* seconds of benchmark between two bandwidth probe passes */
#define SLOW_CALL 1.0        /* calls longer than this get a progress line each */
#define PEAK_SECONDS 0.5     /* FMA peak probe */

typedef struct {
    double *v;
    int64_t n, cap;
} series;

static int series_push(series *s, double x)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 256;
        double *v = realloc(s->v, (size_t)cap * sizeof(double));
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts s; the median of an even count is the mean of the two middle values. */
static double series_median(series *s)
{
    qsort(s->v, (size_t)s->n, sizeof(double), cmp_double);
    return s->n % 2 ? s->v[s->n / 2] : 0.5 * (s->v[s->n / 2 - 1] + s->v[s->n / 2]);
}

/* Visible (query, key) pairs: query row i at position q_pos0 + i = n - L + i sees keys
 * 0 .. n - L + i when causal, so sum_i (n - L + i + 1) = L (n - L) + L (L + 1) / 2. */
static double visible_pairs(const bench_attn_opts *o)
{
    double L = (double)o->q, n = (double)o->n;
    return o->causal ? L * (n - L) + L * (L + 1.0) / 2.0 : L * n;
}

static double mib(double bytes)
{
    return bytes / (1024.0 * 1024.0);
}

/* One timed call: the op and a synchronize, so asynchronous backends are timed fully. */
static ela_status timed_call(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                             const ela_tensor *v, ela_tensor *o, const ela_attn_params *p,
                             double *seconds)
{
    double t0 = timer_now();
    ela_status st = ela_attn_dense(backend, q, k, v, o, NULL, p);
    if (st == ELA_OK)
        st = ela_backend_synchronize(backend);
    *seconds = timer_now() - t0;
    return st;
}

typedef struct {
    const char *backend, *device, *mode;
    double ms, ms_min, gflops, gbps, flops, bytes;
    double membw, membw_median; /* best and median probe pass; 0 when not measured */
    double bw_fraction;         /* gbps / membw (best pass: the strict ratio) */
    double bw_fraction_median;  /* gbps / membw_median: less sensitive to a drifting host */
    const char *membw_kernel;
    double peak_gflops, peak_fraction; /* 0 when not measured */
    const char *peak_kernel;
    int64_t membw_passes, iters, warmup, q_pos0;
    int threads;
} bench_result;

static void print_table(const bench_attn_opts *o, const bench_result *r)
{
    char dt[24]; /* "f16", or q's and K/V's dtypes when they differ: "f32/q8_0" */
    if (o->kv_dtype == o->dtype)
        snprintf(dt, sizeof dt, "%s", ela_dtype_name(o->dtype));
    else
        snprintf(dt, sizeof dt, "%s/%s", ela_dtype_name(o->dtype), ela_dtype_name(o->kv_dtype));
    printf("%-10s %-7s %8s %8s %4s %4s %4s %-8s %-5s %6s %7s %10s %10s %10s %9s %10s %8s\n",
           "backend", "mode", "n", "q", "hq", "hkv", "d", "dtype", "o", "causal", "iters",
           "ms(med)", "ms(min)", "GFLOP/s", "GB/s", "membwGB/s", "bw_frac");
    printf("%-10s %-7s %8lld %8lld %4d %4d %4d %-8s %-5s %6d %7lld %10.4f %10.4f %10.2f "
           "%9.2f ",
           r->backend, r->mode, (long long)o->n, (long long)o->q, o->hq, o->hkv, o->d,
           dt, ela_dtype_name(o->odtype), o->causal, (long long)r->iters,
           r->ms, r->ms_min, r->gflops, r->gbps);
    if (r->membw > 0)
        printf("%10.2f %8.3f\n", r->membw, r->bw_fraction);
    else
        printf("%10s %8s\n", "-", "-");
}

/* Writes the results to f (opened before the run, so a bad path fails in a second, not
 * after the benchmark) and closes it unless it is stdout. */
static int write_json(FILE *f, const char *path, const bench_attn_opts *o, const bench_result *r)
{
    bench_json j;
    bench_json_begin(&j, f);
    bench_json_str(&j, "bench", "attn_dense");
    bench_json_str(&j, "version", ela_version());
    bench_json_str(&j, "backend", r->backend);
    bench_json_str(&j, "device", r->device);
    bench_json_str(&j, "mode", r->mode);
    bench_json_int(&j, "n", o->n);
    bench_json_int(&j, "q", o->q);
    bench_json_int(&j, "hq", o->hq);
    bench_json_int(&j, "hkv", o->hkv);
    bench_json_int(&j, "d", o->d);
    bench_json_str(&j, "dtype", ela_dtype_name(o->dtype));
    bench_json_str(&j, "kv_dtype", ela_dtype_name(o->kv_dtype));
    bench_json_str(&j, "odtype", ela_dtype_name(o->odtype));
    bench_json_int(&j, "causal", o->causal);
    bench_json_int(&j, "q_pos0", r->q_pos0);
    bench_json_int(&j, "iters", r->iters);
    bench_json_int(&j, "warmup", r->warmup);
    bench_json_num(&j, "ms", r->ms);
    bench_json_num(&j, "ms_min", r->ms_min);
    bench_json_num(&j, "flops", r->flops);
    bench_json_num(&j, "bytes", r->bytes);
    bench_json_num(&j, "gflops", r->gflops);
    bench_json_num(&j, "gbps", r->gbps);
    if (r->membw > 0) {
        bench_json_num(&j, "membw_gbps", r->membw);
        bench_json_num(&j, "membw_gbps_median", r->membw_median);
        bench_json_str(&j, "membw_kernel", r->membw_kernel);
        bench_json_int(&j, "membw_passes", r->membw_passes);
        bench_json_num(&j, "bw_fraction", r->bw_fraction);
        bench_json_num(&j, "bw_fraction_median", r->bw_fraction_median);
    } else {
        bench_json_null(&j, "membw_gbps");
        bench_json_null(&j, "bw_fraction");
    }
    if (r->peak_gflops > 0) {
        bench_json_num(&j, "fma_peak_gflops", r->peak_gflops);
        bench_json_str(&j, "fma_peak_kernel", r->peak_kernel);
        bench_json_num(&j, "peak_fraction", r->peak_fraction);
    } else {
        bench_json_null(&j, "fma_peak_gflops");
        bench_json_null(&j, "peak_fraction");
    }
    bench_json_int(&j, "threads", r->threads);
    int bad = bench_json_end(&j) != 0;
    if (f != stdout && fclose(f) != 0)
        bad = 1;
    if (bad) {
        fprintf(stderr, "ela: cannot write %s\n", path);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* Probe pass when PROBE_INTERVAL has passed since the last one (or `force`). */
static int maybe_probe(membw_probe *probe, series *bw, double *last, int force)
{
    if (!probe || (!force && timer_now() - *last < PROBE_INTERVAL))
        return 0;
    int rc = series_push(bw, membw_probe_pass(probe));
    *last = timer_now();
    return rc;
}

int cmd_bench_attn(int argc, char **argv)
{
    bench_attn_opts o;
    int help = 0;
    int rc = bench_attn_parse(argc, argv, &o, &help);
    if (rc != CLI_EXIT_OK || help)
        return rc;

    ela_backend *backend = NULL;
    ela_tensor *tq = NULL, *tk = NULL, *tv = NULL, *to = NULL;
    float *scratch = NULL;
    membw_probe *probe = NULL;
    FILE *json = NULL;
    series times = {0}, bw = {0};
    bench_result r;
    memset(&r, 0, sizeof(r));
    ela_status st = ELA_OK;
    rc = CLI_EXIT_FAIL;

    const int64_t L = o.q, n = o.n;
    const char *threads_from = NULL;
    r.threads = cli_threads(&threads_from);
    r.mode = o.decode ? "decode" : "prefill";
    r.q_pos0 = o.causal ? n - L : 0;

    if (o.json) {
        json = strcmp(o.json, "-") == 0 ? stdout : fopen(o.json, "w");
        if (!json) {
            perror(o.json);
            return CLI_EXIT_FAIL;
        }
    }
    cli_note("bench attn: opening backend %s", o.backend ? o.backend : "(ELA_BACKEND or auto)");
    if ((st = ela_backend_open(o.backend, &backend)) != ELA_OK)
        goto lib_fail;
    ela_device_info dev;
    if ((st = ela_backend_device_info(backend, &dev)) != ELA_OK)
        goto lib_fail;
    r.backend = ela_backend_name(backend);
    r.device = dev.name;
    const ela_dtype dtypes[3] = {o.dtype, o.kv_dtype, o.odtype};
    if (!ela_backend_supports(backend, ELA_OP_ATTN_DENSE, dtypes, 3)) {
        fprintf(stderr, "ela: %s: backend %s does not run attn_dense with q %s, k/v %s, o %s\n",
                ela_status_str(ELA_ERR_UNSUPPORTED), r.backend, ela_dtype_name(o.dtype),
                ela_dtype_name(o.kv_dtype), ela_dtype_name(o.odtype));
        goto done;
    }

    const int64_t qshape[3] = {L, o.hq, o.d}, kvshape[3] = {o.hkv, n, o.d};
    const double esize = (double)ela_dtype_size(o.dtype);
    const double kv_row = (double)ela_dtype_row_bytes(o.kv_dtype, o.d); /* q8_0: 34 per 32 */
    const double kv_bytes = 2.0 * (double)o.hkv * (double)n * kv_row;
    const double q_bytes = (double)L * o.hq * o.d * esize;
    const double o_bytes = (double)L * o.hq * o.d * (double)ela_dtype_size(o.odtype);
    r.bytes = kv_bytes + q_bytes + o_bytes;
    r.flops = 4.0 * o.d * o.hq * visible_pairs(&o);
    cli_note("bench attn: %s, %s: allocating and filling %.1f MiB (K+V %.1f MiB)", r.backend,
             dev.name, mib(r.bytes), mib(kv_bytes));
    if ((st = ela_tensor_new(backend, o.dtype, 3, qshape, NULL, &tq)) != ELA_OK ||
        (st = ela_tensor_new(backend, o.kv_dtype, 3, kvshape, NULL, &tk)) != ELA_OK ||
        (st = ela_tensor_new(backend, o.kv_dtype, 3, kvshape, NULL, &tv)) != ELA_OK ||
        (st = ela_tensor_new(backend, o.odtype, 3, qshape, NULL, &to)) != ELA_OK)
        goto lib_fail;
    scratch = malloc((size_t)BENCH_FILL_SCRATCH * sizeof(float));
    if (!scratch) {
        cli_note("out of host memory for the input staging buffer");
        goto done;
    }
    if ((st = bench_fill_uniform(tq, 1, scratch, BENCH_FILL_SCRATCH)) != ELA_OK ||
        (st = bench_fill_uniform(tk, 2, scratch, BENCH_FILL_SCRATCH)) != ELA_OK ||
        (st = bench_fill_uniform(tv, 3, scratch, BENCH_FILL_SCRATCH)) != ELA_OK)
        goto lib_fail;
    free(scratch);
    scratch = NULL;

    ela_attn_params params = ela_attn_params_default();
    params.causal = o.causal;
    params.q_pos0 = r.q_pos0;
    params.scale = 0.0f;

    double last_probe = 0;
    if (o.membw < 0)
        o.membw = o.decode && dev.kind == ELA_DEVICE_CPU;
    else if (o.membw && dev.kind != ELA_DEVICE_CPU)
        cli_note("bench attn: note: the probe measures host memory, not %s's", dev.name);
    if (o.membw) {
        size_t bytes = o.membw_mib ? (size_t)o.membw_mib << 20 : membw_default_bytes();
        cli_note("bench attn: memory bandwidth probe: %.0f MiB, %d threads (%s)", mib((double)bytes),
                 r.threads, threads_from);
        if (membw_probe_new(MEMBW_READ, r.threads, bytes, &probe) != 0) {
            cli_note("cannot allocate %.0f MiB for the bandwidth probe (try --membw-mib or "
                     "--membw 0)", mib((double)bytes));
            goto done;
        }
        membw_probe_pass(probe); /* untimed: page tables, thread pool */
        r.membw_kernel = membw_probe_kernel(probe);
    }

    if (o.peak < 0)
        o.peak = !o.decode && dev.kind == ELA_DEVICE_CPU;
    if (o.peak) {
        fmapeak_result fr;
        cli_note("bench attn: f32 FMA peak probe: %d threads (%s)", r.threads, threads_from);
        if (fmapeak_measure(r.threads, PEAK_SECONDS, &fr) == 0) {
            r.peak_gflops = fr.gflops;
            r.peak_kernel = fr.kernel;
        }
    }

    double t, spent = 0;
    int64_t warm = 0;
    cli_note("bench attn: warmup");
    while (o.warmup >= 0 ? warm < o.warmup
                         : warm < 1 || (spent < WARMUP_SECONDS && warm < WARMUP_MAX_CALLS)) {
        if ((st = timed_call(backend, tq, tk, tv, to, &params, &t)) != ELA_OK)
            goto lib_fail;
        spent += t;
        warm++;
        if (t > SLOW_CALL)
            cli_note("bench attn: warmup call %lld: %.1f ms", (long long)warm, 1e3 * t);
    }
    r.warmup = warm;

    if (o.iters)
        cli_note("bench attn: timing %lld calls", (long long)o.iters);
    else
        cli_note("bench attn: timing ~%.0f s of calls (at least %d)", AUTO_SECONDS, AUTO_MIN_ITERS);
    if (maybe_probe(probe, &bw, &last_probe, 1) != 0)
        goto oom;
    spent = 0;
    while (o.iters ? times.n < o.iters
                   : times.n < AUTO_MIN_ITERS || (spent < AUTO_SECONDS && times.n < AUTO_MAX_ITERS)) {
        if ((st = timed_call(backend, tq, tk, tv, to, &params, &t)) != ELA_OK)
            goto lib_fail;
        spent += t;
        if (series_push(&times, t) != 0 || maybe_probe(probe, &bw, &last_probe, 0) != 0)
            goto oom;
        if (t > SLOW_CALL)
            cli_note("bench attn: call %lld: %.1f ms", (long long)times.n, 1e3 * t);
    }
    if (maybe_probe(probe, &bw, &last_probe, 1) != 0)
        goto oom;

    const double med = series_median(&times);
    r.iters = times.n;
    r.ms = 1e3 * med;
    r.ms_min = 1e3 * times.v[0];
    r.gflops = r.flops / med * 1e-9;
    r.gbps = r.bytes / med * 1e-9;
    if (probe) {
        r.membw_median = series_median(&bw);
        r.membw = bw.v[bw.n - 1];
        r.membw_passes = bw.n;
        r.bw_fraction = r.gbps / r.membw;
        r.bw_fraction_median = r.gbps / r.membw_median;
    }
    if (r.peak_gflops > 0)
        r.peak_fraction = r.gflops / r.peak_gflops;
    printf("ela %s, %s (%s), %d threads\n", ela_version(), r.backend, dev.name, r.threads);
    print_table(&o, &r);
    if (probe)
        printf("memory read bandwidth: best %.2f GB/s, median %.2f GB/s (%lld %s passes of "
               "%.0f MiB between the calls); GB/s / median pass = %.3f\n",
               r.membw, r.membw_median, (long long)r.membw_passes, r.membw_kernel,
               mib((double)membw_probe_bytes(probe)), r.bw_fraction_median);
    if (r.peak_gflops > 0)
        printf("f32 FMA peak: %.1f GFLOP/s (%s, %d threads); GFLOP/s / peak = %.3f\n",
               r.peak_gflops, r.peak_kernel, r.threads, r.peak_fraction);
    fflush(stdout);
    rc = json ? write_json(json, o.json, &o, &r) : CLI_EXIT_OK;
    json = NULL; /* closed by write_json */
    goto done;

oom:
    cli_note("out of host memory for the timing records");
    goto done;
lib_fail:
    rc = cli_fail(st);
done:
    free(bw.v);
    free(times.v);
    membw_probe_free(probe);
    free(scratch);
    ela_tensor_free(to);
    ela_tensor_free(tv);
    ela_tensor_free(tk);
    ela_tensor_free(tq);
    ela_backend_close(backend);
    if (json && json != stdout)
        fclose(json); /* failed run: leave an empty file rather than a stale one */
    return rc;
}

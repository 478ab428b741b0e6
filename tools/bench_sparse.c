/* `ela bench sparse` (issue: sparse ops bench): runs a prefill or decode policy and our dense
 * attention on the same structured inputs, alternating calls so both see the same machine
 * state, for each --n, and prints per length: time of both, speedup, achieved sparsity, the
 * relative L2 error of the sparse output against the dense one and the share of the policy's
 * time spent routing/estimating/selecting. Decode runs a whole layer schedule (n_layers
 * layers, roles from ela_decode_layer_role_of) and also reports a sparse layer alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_json.h"
#include "bench_sparse.h"
#include "cli.h"
#include "cli_args.h"
#include "timer.h"

#define MAX_LENGTHS 16

static const char usage[] =
    "usage: ela bench sparse --policy P [options]\n"
    "  --policy P         prefill policy (dense, xattn, streaming, elastic:fa-xa, elastic:fa-ssa,\n"
    "                     elastic:xa-ssa, tsa, tsa+xattn; options as in\n"
    "                     'elastic:fa-xa,tau=0.9,full=0.5') or, with --mode decode, a decode\n"
    "                     policy (lessismore:2048, nsa, streaming)\n"
    "  --mode M           prefill (default) or decode\n"
    "  --n N[,N...]       key lengths (default 8192); prefill runs L = n queries\n"
    "  --hq H --hkv H --d D   heads and head dim (default 32, 8, 128)\n"
    "  --dtype T          f32, f16, bf16 for q, k, v (default f16)\n"
    "  --iters N          timed calls of each side per length (default 1 prefill, 5 decode)\n"
    "  --layers N         decode: layers in the simulated schedule (default 32)\n"
    "  --backend NAME     backend (default $ELA_BACKEND, else auto)\n"
    "  --json FILE        write the results as JSON ('-': stdout)\n"
    "Inputs: locality features, planted needle keys and attention sinks (see\n"
    "tools/bench_sparse_input.c). speedup = dense ms / policy ms; error = ||o - o_dense|| /\n"
    "||o_dense||; select = share of the policy's time spent choosing what to attend.\n";

typedef struct {
    const char *policy, *backend, *json;
    int decode;
    int64_t n[MAX_LENGTHS];
    int n_lengths;
    int hq, hkv, d, layers;
    ela_dtype dtype;
    int64_t iters;
} opts;

typedef struct {
    int64_t n;
    double dense_ms, policy_ms, speedup, sparsity, error, select_share;
    double layer_speedup; /* decode: one sparse layer against one dense layer */
    double layer_ms[3];   /* decode: a dense, a select and a sparse layer, each waited for */
    int full_kv_heads;
    int64_t kept_tokens;
} row;

static int parse_lengths(const char *s, opts *o) {
    char buf[256];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    o->n_lengths = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (o->n_lengths == MAX_LENGTHS || cli_parse_i64(tok, 1, INT64_C(1) << 24, &o->n[o->n_lengths]))
            return -1;
        o->n_lengths++;
    }
    return o->n_lengths > 0 ? 0 : -1;
}

/* An integer option in [1, 4096]: 1 when argv[*i] was it, 0 when not, -1 (after the usage
 * message) when its value is bad. */
static int int_opt(int argc, char **argv, int *i, const char *name, int *out) {
    const char *val = NULL;
    int64_t x;
    int r = cli_option(argc, argv, i, name, &val);
    if (r == 0)
        return 0;
    if (r < 0 || cli_parse_i64(val, 1, 4096, &x)) {
        cli_usage_error(usage, "bench sparse: %s wants an integer in [1, 4096]", name);
        return -1;
    }
    *out = (int)x;
    return 1;
}

static int parse(int argc, char **argv, opts *o, int *help) {
    memset(o, 0, sizeof *o);
    o->n[0] = 8192;
    o->n_lengths = 1;
    o->hq = 32, o->hkv = 8, o->d = 128, o->layers = 32;
    o->dtype = ELA_F16;
    o->iters = -1;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        int r;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            *help = 1;
            return CLI_EXIT_OK;
        }
#define OPT(name) ((r = cli_option(argc, argv, &i, name, &val)) != 0)
        if (OPT("--policy")) {
            if (r < 0) return cli_usage_error(usage, "bench sparse: --policy needs a value");
            o->policy = val;
        } else if (OPT("--mode")) {
            if (r < 0 || (strcmp(val, "prefill") && strcmp(val, "decode")))
                return cli_usage_error(usage, "bench sparse: --mode wants prefill or decode");
            o->decode = strcmp(val, "decode") == 0;
        } else if (OPT("--n")) {
            if (r < 0 || parse_lengths(val, o))
                return cli_usage_error(usage, "bench sparse: --n wants lengths like 8192,16384");
        } else if ((r = int_opt(argc, argv, &i, "--hq", &o->hq)) != 0 ||
                   (r = int_opt(argc, argv, &i, "--hkv", &o->hkv)) != 0 ||
                   (r = int_opt(argc, argv, &i, "--d", &o->d)) != 0 ||
                   (r = int_opt(argc, argv, &i, "--layers", &o->layers)) != 0) {
            if (r < 0)
                return CLI_EXIT_USAGE;
        } else if (OPT("--dtype")) {
            if (r < 0 || ela_dtype_parse(val, &o->dtype) != ELA_OK || o->dtype > ELA_BF16)
                return cli_usage_error(usage, "bench sparse: --dtype wants f32, f16 or bf16");
        } else if (OPT("--iters")) {
            if (r < 0 || cli_parse_i64(val, 1, 1000000, &o->iters))
                return cli_usage_error(usage, "bench sparse: --iters wants a positive integer");
        } else if (OPT("--backend")) {
            if (r < 0) return cli_usage_error(usage, "bench sparse: --backend needs a value");
            o->backend = val;
        } else if (OPT("--json")) {
            if (r < 0) return cli_usage_error(usage, "bench sparse: --json needs a file");
            o->json = val;
        } else {
            return cli_usage_error(usage, "bench sparse: unknown option '%s'", argv[i]);
        }
#undef OPT
    }
    if (!o->policy)
        return cli_usage_error(usage, "bench sparse: --policy is required");
    if (o->hq % o->hkv != 0)
        return cli_usage_error(usage, "bench sparse: --hq %d is not a multiple of --hkv %d",
                               o->hq, o->hkv);
    if (o->iters < 0)
        o->iters = o->decode ? 5 : 1;
    return CLI_EXIT_OK;
}

static double rel_l2(const float *ref, const float *got, int64_t count) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < count; i++) {
        double e = (double)got[i] - (double)ref[i];
        num += e * e;
        den += (double)ref[i] * (double)ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int64_t n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Reads o into host f32 (for errors). */
static ela_status read_all(const ela_tensor *t, float **out) {
    int64_t count = ela_tensor_numel(t);
    *out = malloc((size_t)count * sizeof(float));
    if (!*out)
        return ELA_ERR_OOM;
    return ela_tensor_read_f32(t, *out, count);
}

/* A GPU clocks down while the host fills the inputs: its calls are warmed up until
 * WARMUP_SECONDS have passed (at least once each) before any is timed; otherwise the first dense
 * call runs cold (on an H100 through Vulkan, a 32K dense prefill read 345 ms in place of 219).
 * The CPU gets none: a 32K dense prefill takes most of a minute there. */
#define WARMUP_SECONDS 0.25

static int wants_warmup(const ela_backend *be) {
    return strcmp(ela_backend_name(be), "cpu") != 0;
}

static ela_status run_prefill(ela_backend *be, const opts *o, const ela_prefill_policy *pol,
                              int64_t n, row *res) {
    int64_t qs[3] = {n, o->hq, o->d}, ks[3] = {o->hkv, n, o->d};
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *od = NULL, *os = NULL;
    float *ref = NULL, *got = NULL;
    double *td = calloc((size_t)o->iters, sizeof *td), *tp = calloc((size_t)o->iters, sizeof *tp);
    double *sel = calloc((size_t)o->iters, sizeof *sel);
    ela_status st = td && tp && sel ? ELA_OK : ELA_ERR_OOM;
    if (st == ELA_OK) st = ela_tensor_new(be, o->dtype, 3, qs, NULL, &q);
    if (st == ELA_OK) st = ela_tensor_new(be, o->dtype, 3, ks, NULL, &k);
    if (st == ELA_OK) st = ela_tensor_new(be, o->dtype, 3, ks, NULL, &v);
    if (st == ELA_OK) st = ela_tensor_new(be, ELA_F32, 3, qs, NULL, &od);
    if (st == ELA_OK) st = ela_tensor_new(be, ELA_F32, 3, qs, NULL, &os);
    if (st == ELA_OK) st = bench_sparse_fill(q, k, v, 0, 42);
    ela_prefill_policy dense_pol;
    ela_prefill_policy_parse("dense", &dense_pol);
    ela_prefill_report rep;
    memset(&rep, 0, sizeof rep);
    for (double w0 = timer_now(); st == ELA_OK && wants_warmup(be);) {
        st = ela_prefill_attention(be, &dense_pol, q, k, v, od, NULL, NULL, NULL, NULL);
        if (st == ELA_OK)
            st = ela_prefill_attention(be, pol, q, k, v, os, NULL, NULL, NULL, &rep);
        if (timer_now() - w0 >= WARMUP_SECONDS)
            break;
    }
    for (int64_t it = 0; it < o->iters && st == ELA_OK; it++) {
        cli_note("bench sparse: n = %lld, call %lld/%lld: dense", (long long)n, (long long)it + 1,
                 (long long)o->iters);
        double t0 = timer_now();
        st = ela_prefill_attention(be, &dense_pol, q, k, v, od, NULL, NULL, NULL, NULL);
        double t1 = timer_now();
        if (st != ELA_OK)
            break;
        cli_note("bench sparse: n = %lld, call %lld/%lld: %s (dense took %.1f s)", (long long)n,
                 (long long)it + 1, (long long)o->iters, o->policy, t1 - t0);
        st = ela_prefill_attention(be, pol, q, k, v, os, NULL, NULL, NULL, &rep);
        double t2 = timer_now();
        td[it] = (t1 - t0) * 1e3;
        tp[it] = (t2 - t1) * 1e3;
        sel[it] = rep.select_ms;
    }
    if (st == ELA_OK) st = read_all(od, &ref);
    if (st == ELA_OK) st = read_all(os, &got);
    if (st == ELA_OK) {
        res->n = n;
        res->dense_ms = median(td, o->iters);
        res->policy_ms = median(tp, o->iters);
        res->speedup = res->dense_ms / res->policy_ms;
        res->sparsity = rep.sparsity;
        res->select_share = median(sel, o->iters) / res->policy_ms;
        res->error = rel_l2(ref, got, ela_tensor_numel(od));
        res->full_kv_heads = rep.full_kv_heads;
        res->kept_tokens = rep.kept_tokens;
        res->layer_speedup = res->speedup;
    }
    free(ref); free(got); free(td); free(tp); free(sel);
    ela_tensor_free(q); ela_tensor_free(k); ela_tensor_free(v);
    ela_tensor_free(od); ela_tensor_free(os);
    return st;
}

/* Decode: one query at position n - 1. Times a dense layer, a select layer and a sparse layer
 * (each the median of iters calls, alternating, each waited for), then the schedule of o->layers
 * layers as a model runs it: all enqueued, one wait at the end (a wait per layer would add the
 * device's round trip to every layer), dense and policy schedules alternating. */
static ela_status run_decode(ela_backend *be, const opts *o, const ela_decode_policy *pol,
                             int64_t n, row *res) {
    int64_t qs[3] = {1, o->hq, o->d}, ks[3] = {o->hkv, n, o->d};
    int64_t cap = pol->kind == ELA_DECODE_LESSISMORE ? pol->select.budget : 1;
    ela_tensor *q = NULL, *k = NULL, *v = NULL, *od = NULL, *os = NULL, *sel_idx = NULL;
    float *ref = NULL, *got = NULL;
    double *t[5]; /* dense, select, sparse layer; dense, policy schedule */
    for (int r = 0; r < 5; r++)
        t[r] = calloc((size_t)o->iters, sizeof(double));
    ela_status st = t[0] && t[1] && t[2] && t[3] && t[4] ? ELA_OK : ELA_ERR_OOM;
    if (st == ELA_OK) st = ela_tensor_new(be, o->dtype, 3, qs, NULL, &q);
    if (st == ELA_OK) st = ela_tensor_new(be, o->dtype, 3, ks, NULL, &k);
    if (st == ELA_OK) st = ela_tensor_new(be, o->dtype, 3, ks, NULL, &v);
    if (st == ELA_OK) st = ela_tensor_new(be, ELA_F32, 3, qs, NULL, &od);
    if (st == ELA_OK) st = ela_tensor_new(be, ELA_F32, 3, qs, NULL, &os);
    if (st == ELA_OK) st = ela_tensor_new(be, ELA_I32, 1, &cap, NULL, &sel_idx);
    if (st == ELA_OK) st = bench_sparse_fill(q, k, v, n - 1, 42);
    ela_decode_policy dense_pol;
    ela_decode_policy_parse("dense", &dense_pol);
    int64_t selected = 0;
    /* warm-up: one of each (a GPU: until WARMUP_SECONDS), and a selection for the sparse
     * layers */
    for (double w0 = timer_now(); st == ELA_OK;) {
        st = ela_decode_attention(be, &dense_pol, ELA_DECODE_LAYER_DENSE, q, k, v, od, NULL, NULL);
        if (st == ELA_OK)
            st = ela_decode_attention(be, pol, ELA_DECODE_LAYER_SELECT, q, k, v, os, sel_idx,
                                      &selected);
        if (st == ELA_OK)
            st = ela_backend_synchronize(be);
        if (!wants_warmup(be) || timer_now() - w0 >= WARMUP_SECONDS)
            break;
    }
    for (int64_t it = 0; it < o->iters && st == ELA_OK; it++) {
        double t0 = timer_now();
        st = ela_decode_attention(be, &dense_pol, ELA_DECODE_LAYER_DENSE, q, k, v, od, NULL, NULL);
        if (st == ELA_OK) st = ela_backend_synchronize(be);
        double t1 = timer_now();
        if (st == ELA_OK)
            st = ela_decode_attention(be, pol, ELA_DECODE_LAYER_SELECT, q, k, v, os, sel_idx,
                                      &selected);
        if (st == ELA_OK) st = ela_backend_synchronize(be);
        double t2 = timer_now();
        if (st == ELA_OK)
            st = ela_decode_attention(be, pol, ELA_DECODE_LAYER_SPARSE, q, k, v, os, sel_idx,
                                      &selected);
        if (st == ELA_OK) st = ela_backend_synchronize(be);
        double t3 = timer_now();
        t[0][it] = (t1 - t0) * 1e3;
        t[1][it] = (t2 - t1) * 1e3;
        t[2][it] = (t3 - t2) * 1e3;
    }
    for (int64_t it = 0; it < o->iters && st == ELA_OK; it++) {
        for (int side = 0; side < 2 && st == ELA_OK; side++) {
            double t0 = timer_now();
            for (int l = 0; l < o->layers && st == ELA_OK; l++)
                st = side ? ela_decode_attention(be, pol, ela_decode_layer_role_of(pol, l, o->layers),
                                                 q, k, v, os, sel_idx, &selected)
                          : ela_decode_attention(be, &dense_pol, ELA_DECODE_LAYER_DENSE, q, k, v,
                                                 od, NULL, NULL);
            if (st == ELA_OK) st = ela_backend_synchronize(be);
            t[3 + side][it] = (timer_now() - t0) * 1e3;
        }
    }
    if (st == ELA_OK) st = read_all(od, &ref);
    if (st == ELA_OK) st = read_all(os, &got); /* the sparse layer's output */
    if (st == ELA_OK) {
        double dense = median(t[0], o->iters), select = median(t[1], o->iters);
        double sparse = median(t[2], o->iters);
        double layers_sum = 0.0; /* the schedule from the single-layer times */
        int n_select = 0, n_sparse = 0;
        for (int l = 0; l < o->layers; l++) {
            ela_decode_layer_role role = ela_decode_layer_role_of(pol, l, o->layers);
            layers_sum += role == ELA_DECODE_LAYER_DENSE ? dense
                          : role == ELA_DECODE_LAYER_SELECT ? select : sparse;
            n_select += role == ELA_DECODE_LAYER_SELECT;
            n_sparse += role == ELA_DECODE_LAYER_SPARSE;
        }
        res->n = n;
        res->dense_ms = median(t[3], o->iters);
        res->policy_ms = median(t[4], o->iters);
        res->speedup = res->dense_ms / res->policy_ms;
        res->layer_speedup = dense / sparse;
        res->layer_ms[0] = dense;
        res->layer_ms[1] = select;
        res->layer_ms[2] = sparse;
        res->kept_tokens = pol->kind == ELA_DECODE_LESSISMORE ? selected : 0;
        res->sparsity = n_sparse * (1.0 - (res->kept_tokens ? (double)res->kept_tokens / n : 0.0)) /
                        o->layers;
        res->select_share = n_select * (select - dense) / layers_sum;
        res->error = rel_l2(ref, got, ela_tensor_numel(od));
    }
    free(ref); free(got);
    for (int r = 0; r < 5; r++)
        free(t[r]);
    ela_tensor_free(q); ela_tensor_free(k); ela_tensor_free(v);
    ela_tensor_free(od); ela_tensor_free(os); ela_tensor_free(sel_idx);
    return st;
}

static int write_json(const opts *o, const char *canon, const ela_backend *be, const row *rows,
                      int n_rows) {
    FILE *f = strcmp(o->json, "-") == 0 ? stdout : fopen(o->json, "w");
    if (!f) {
        cli_note("cannot write %s", o->json);
        return CLI_EXIT_FAIL;
    }
    fputs("[\n", f);
    for (int i = 0; i < n_rows; i++) {
        bench_json j;
        bench_json_begin(&j, f);
        bench_json_str(&j, "bench", "sparse");
        bench_json_str(&j, "version", ela_version());
        bench_json_str(&j, "backend", ela_backend_name(be));
        bench_json_str(&j, "mode", o->decode ? "decode" : "prefill");
        bench_json_str(&j, "policy", canon);
        bench_json_int(&j, "n", rows[i].n);
        bench_json_int(&j, "hq", o->hq);
        bench_json_int(&j, "hkv", o->hkv);
        bench_json_int(&j, "d", o->d);
        bench_json_str(&j, "dtype", ela_dtype_name(o->dtype));
        bench_json_int(&j, "iters", o->iters);
        if (o->decode)
            bench_json_int(&j, "layers", o->layers);
        bench_json_num(&j, "dense_ms", rows[i].dense_ms);
        bench_json_num(&j, "policy_ms", rows[i].policy_ms);
        bench_json_num(&j, "speedup", rows[i].speedup);
        if (o->decode) {
            bench_json_num(&j, "sparse_layer_speedup", rows[i].layer_speedup);
            bench_json_num(&j, "dense_layer_ms", rows[i].layer_ms[0]);
            bench_json_num(&j, "select_layer_ms", rows[i].layer_ms[1]);
            bench_json_num(&j, "sparse_layer_ms", rows[i].layer_ms[2]);
        }
        bench_json_num(&j, "sparsity", rows[i].sparsity);
        bench_json_num(&j, "rel_l2_error", rows[i].error);
        bench_json_num(&j, "select_share", rows[i].select_share);
        bench_json_int(&j, "kept_tokens", rows[i].kept_tokens);
        bench_json_int(&j, "full_kv_heads", rows[i].full_kv_heads);
        bench_json_end(&j);
        if (i + 1 < n_rows)
            fputs(",\n", f);
    }
    fputs("]\n", f);
    int bad = ferror(f) != 0;
    if (f != stdout && fclose(f) != 0)
        bad = 1;
    return bad ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cmd_bench_sparse(int argc, char **argv) {
    opts o;
    int help = 0;
    int rc = parse(argc, argv, &o, &help);
    if (rc != CLI_EXIT_OK || help)
        return rc;
    ela_prefill_policy ppol;
    ela_decode_policy dpol;
    char canon[256];
    ela_status st = o.decode ? ela_decode_policy_parse(o.policy, &dpol)
                             : ela_prefill_policy_parse(o.policy, &ppol);
    if (st != ELA_OK)
        return cli_usage_error(usage, "bench sparse: %s", ela_last_error());
    if (o.decode)
        ela_decode_policy_format(&dpol, canon, sizeof canon);
    else
        ela_prefill_policy_format(&ppol, canon, sizeof canon);
    ela_backend *be = NULL;
    if ((st = ela_backend_open(o.backend, &be)) != ELA_OK)
        return cli_fail(st);
    row rows[MAX_LENGTHS];
    memset(rows, 0, sizeof rows);
    int n_rows = 0;
    printf("ela %s, %s, %s %s, hq %d hkv %d d %d %s\n", ela_version(), ela_backend_name(be),
           o.decode ? "decode" : "prefill", canon, o.hq, o.hkv, o.d, ela_dtype_name(o.dtype));
    printf("%8s %12s %12s %8s %9s %10s %8s %6s\n", "n", "dense_ms", "policy_ms", "speedup",
           "sparsity", "rel_l2", "select", "kept");
    for (int i = 0; i < o.n_lengths; i++) {
        st = o.decode ? run_decode(be, &o, &dpol, o.n[i], &rows[n_rows])
                      : run_prefill(be, &o, &ppol, o.n[i], &rows[n_rows]);
        if (st != ELA_OK)
            break;
        const row *r = &rows[n_rows++];
        printf("%8lld %12.3f %12.3f %7.2fx %9.4f %10.2e %7.1f%% %6lld\n", (long long)r->n,
               r->dense_ms, r->policy_ms, r->speedup, r->sparsity, r->error,
               100.0 * r->select_share, (long long)r->kept_tokens);
        if (o.decode)
            printf("%8s one layer, waited for: dense %.3f ms, select %.3f ms, sparse %.3f ms "
                   "(%.2fx dense)\n", "", r->layer_ms[0], r->layer_ms[1], r->layer_ms[2],
                   r->layer_speedup);
        fflush(stdout);
    }
    rc = st == ELA_OK ? CLI_EXIT_OK : cli_fail(st);
    if (rc == CLI_EXIT_OK && o.json)
        rc = write_json(&o, canon, be, rows, n_rows);
    ela_backend_close(be);
    return rc;
}

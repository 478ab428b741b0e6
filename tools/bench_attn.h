/* `ela bench attn`: options (bench_attn_opts.c) and the timed run (bench_attn.c) of dense
 * attention, decode or prefill, against the memory bandwidth (decode) or FMA peak (prefill)
 * measured in the same run. */
#ifndef ELA_TOOLS_BENCH_ATTN_H
#define ELA_TOOLS_BENCH_ATTN_H

#include <stdint.h>

#include "ela.h"

typedef struct {
    const char *backend; /* NULL: ELA_BACKEND, else "auto" */
    int decode;          /* 1: --mode decode, 0: prefill */
    int64_t n;           /* keys per KV head */
    int64_t q;           /* query rows L */
    int hq, hkv, d;
    ela_dtype dtype;    /* q (and k, v unless kv_dtype says otherwise) */
    ela_dtype kv_dtype; /* k, v: --kv-dtype, else --dtype (q8_0: k, v q8_0 and q f32) */
    ela_dtype odtype;   /* o */
    int causal;
    int64_t iters;     /* 0: as many as fit in ~2 s, at least 3 */
    int64_t warmup;    /* -1: at least 1, until 0.25 s have passed */
    int membw;         /* host read bandwidth probe: 1, 0, -1 = decode on a CPU device */
    int64_t membw_mib; /* probe buffer; 0: membw_default_bytes() */
    int peak;          /* FMA peak probe: 1, 0, -1 = prefill on a CPU device */
    const char *json;  /* NULL: no JSON; "-": stdout */
} bench_attn_opts;

extern const char bench_attn_usage[];

/* Parse argv (argv[0] = "attn") into *o with defaults filled in and values checked.
 * Returns CLI_EXIT_OK (with *help set when --help was printed and nothing should run), or
 * CLI_EXIT_USAGE after printing the problem and the usage to stderr. */
int bench_attn_parse(int argc, char **argv, bench_attn_opts *o, int *help);

#endif

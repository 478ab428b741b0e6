/* Tiny JSON writer for the ela benchmarks (tools/): one flat object of string, integer,
 * number and null fields, written in order to a FILE. Strings are escaped per RFC 8259. */
#ifndef ELA_TOOLS_BENCH_JSON_H
#define ELA_TOOLS_BENCH_JSON_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    int n_fields; /* fields written so far: decides the separating comma */
} bench_json;

void bench_json_begin(bench_json *j, FILE *f);                      /* writes "{" */
void bench_json_str(bench_json *j, const char *key, const char *v); /* NULL writes null */
void bench_json_int(bench_json *j, const char *key, int64_t v);
void bench_json_num(bench_json *j, const char *key, double v);      /* NaN/inf write null */
void bench_json_null(bench_json *j, const char *key);
/* Writes "}\n" and flushes; returns 0, or -1 when any write to the stream failed. */
int bench_json_end(bench_json *j);

#endif

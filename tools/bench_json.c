/* Tiny JSON writer (see bench_json.h): the benchmark result files of `ela bench`.
 * Keys and string values are escaped; non-finite numbers become null (JSON has no NaN). */
#include "bench_json.h"

#include <inttypes.h>
#include <math.h>

static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", (unsigned)*p);
            else
                fputc(*p, f); /* UTF-8 bytes pass through unchanged */
        }
    }
    fputc('"', f);
}

static void put_key(bench_json *j, const char *key)
{
    fputs(j->n_fields++ ? ",\n  " : "\n  ", j->f);
    put_string(j->f, key);
    fputs(": ", j->f);
}

void bench_json_begin(bench_json *j, FILE *f)
{
    j->f = f;
    j->n_fields = 0;
    fputc('{', f);
}

void bench_json_str(bench_json *j, const char *key, const char *v)
{
    put_key(j, key);
    if (v)
        put_string(j->f, v);
    else
        fputs("null", j->f);
}

void bench_json_int(bench_json *j, const char *key, int64_t v)
{
    put_key(j, key);
    fprintf(j->f, "%" PRId64, v);
}

void bench_json_num(bench_json *j, const char *key, double v)
{
    put_key(j, key);
    if (isfinite(v) && v == floor(v) && fabs(v) < 0x1p53)
        fprintf(j->f, "%.0f", v); /* exact counts (flops, bytes) stay exact */
    else if (isfinite(v))
        fprintf(j->f, "%.9g", v);
    else
        fputs("null", j->f);
}

void bench_json_null(bench_json *j, const char *key)
{
    put_key(j, key);
    fputs("null", j->f);
}

int bench_json_end(bench_json *j)
{
    fputs(j->n_fields ? "\n}\n" : "}\n", j->f);
    if (fflush(j->f) != 0 || ferror(j->f))
        return -1;
    return 0;
}

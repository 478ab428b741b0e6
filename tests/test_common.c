/* Shared unit-test helpers (see test_common.h). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_common.h"

int test_failures;
int test_checks;

void test_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    test_failures++;
    fprintf(stderr, "%s:%d: CHECK failed: %s", file, line, cond);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(stderr);
}

int test_summary(const char *name) {
    printf("%s: %d checks, %d failed (seed %llu)\n", name, test_checks, test_failures,
           (unsigned long long)test_seed());
    fflush(stdout);
    return test_failures ? 1 : 0;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t test_seed(void) {
    static int have;
    static uint64_t seed;
    if (have)
        return seed;
    const char *env = getenv("ELA_TEST_SEED");
    if (env && *env) {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t mix = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
                       ((uint64_t)getpid() << 32);
        seed = splitmix64(&mix) % 1000000000000ull; /* short enough to copy by hand */
    }
    have = 1;
    printf("seed: %llu (replay with ELA_TEST_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

void test_rng_init(test_rng *rng, uint64_t stream) {
    uint64_t x = test_seed() ^ (stream * 0xd1342543de82ef95ull);
    rng->state = splitmix64(&x);
}

uint64_t test_rng_u64(test_rng *rng) { return splitmix64(&rng->state); }

int64_t test_rng_below(test_rng *rng, int64_t n) {
    return (int64_t)(test_rng_u64(rng) % (uint64_t)n);
}

double *test_to_double(const float *x, int64_t n) {
    double *y = malloc((size_t)(n > 0 ? n : 1) * sizeof *y);
    for (int64_t i = 0; y && i < n; i++)
        y[i] = x[i];
    return y;
}

double test_rng_uniform(test_rng *rng, double lo, double hi) {
    double u = (double)(test_rng_u64(rng) >> 11) * 0x1.0p-53; /* [0, 1) */
    return lo + (hi - lo) * u;
}

double test_rng_normal(test_rng *rng) {
    /* Box-Muller; 1 - u keeps the log argument in (0, 1]. */
    double u1 = 1.0 - test_rng_uniform(rng, 0.0, 1.0);
    double u2 = test_rng_uniform(rng, 0.0, 1.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void test_fill_uniform(test_rng *rng, float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)test_rng_uniform(rng, lo, hi);
}

void test_fill_normal(test_rng *rng, float *x, int64_t n, float stddev) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(stddev * test_rng_normal(rng));
}

int test_to_dtype(const float *x, int64_t n, ela_dtype dtype, void *dst) {
    return ela_convert(x, ELA_F32, dst, dtype, n) == ELA_OK ? 0 : -1;
}

int test_round_through(float *x, int64_t n, ela_dtype dtype) {
    if (dtype == ELA_F32 || n == 0)
        return 0;
    size_t bytes = ela_dtype_row_bytes(dtype, n); /* 0: n is not whole blocks */
    void *tmp = bytes ? malloc(bytes) : NULL;
    if (!tmp)
        return -1;
    int rc = ela_convert(x, ELA_F32, tmp, dtype, n) == ELA_OK &&
                     ela_convert(tmp, dtype, x, ELA_F32, n) == ELA_OK
                 ? 0
                 : -1;
    free(tmp);
    return rc;
}

int test_q8_0_round(float *x, int64_t n) { return test_round_through(x, n, ELA_Q8_0); }

int64_t test_stride_bytes(ela_dtype dtype, int64_t elems) {
    if (elems == 1)
        return (int64_t)ela_dtype_row_bytes(dtype, ela_dtype_block(dtype));
    return (int64_t)ela_dtype_row_bytes(dtype, elems);
}

double test_rel_l2(const double *ref, const float *got, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i]))
            return INFINITY;
        double e = (double)got[i] - ref[i];
        num += e * e;
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static int is_word_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

static int match_at(const char *s, const char *needle) {
    for (; *needle; s++, needle++)
        if (tolower((unsigned char)*s) != tolower((unsigned char)*needle))
            return 0;
    return 1;
}

int test_has_text(const char *msg, const char *needle) {
    if (!msg || !needle)
        return 0;
    size_t len = strlen(needle), mlen = strlen(msg);
    for (size_t i = 0; i + len <= mlen; i++)
        if (match_at(msg + i, needle))
            return 1;
    return 0;
}

int test_has_word(const char *msg, const char *word) {
    if (!msg || !word || !*word)
        return 0;
    size_t len = strlen(word), mlen = strlen(msg);
    for (size_t i = 0; i + len <= mlen; i++) {
        if (!match_at(msg + i, word))
            continue;
        if (i > 0 && is_word_char(msg[i - 1]))
            continue;
        if (is_word_char(msg[i + len]))
            continue;
        return 1;
    }
    return 0;
}

void test_setenv(const char *name, const char *value) {
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

double test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

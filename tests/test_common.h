/* Helpers shared by the unit tests: a seeded generator (fresh seed per run, printed, replayable
 * with ELA_TEST_SEED), rounding host data through a dtype, relative L2 error, and CHECK macros
 * that print file:line and the failing condition and count failures instead of aborting. */
#ifndef ELA_TESTS_TEST_COMMON_H
#define ELA_TESTS_TEST_COMMON_H

#include <stdint.h>

#include "ela.h"

/* ---- failures ------------------------------------------------------------------------- */
extern int test_failures;
extern int test_checks;

void test_fail(const char *file, int line, const char *cond, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* CHECK(cond): count a failure (with file:line and the condition) when cond is false. */
#define CHECK(cond)                                                                             \
    do {                                                                                        \
        test_checks++;                                                                          \
        if (!(cond))                                                                            \
            test_fail(__FILE__, __LINE__, #cond, NULL);                                         \
    } while (0)

/* CHECKF(cond, fmt, ...): the same with a printf-style note (the values involved). */
#define CHECKF(cond, ...)                                                                       \
    do {                                                                                        \
        test_checks++;                                                                          \
        if (!(cond))                                                                            \
            test_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                  \
    } while (0)

/* CHECK_STATUS(call, want): the call returns want; on mismatch prints both status names and
 * ela_last_error(). Evaluates to nothing; the status is not kept. */
#define CHECK_STATUS(call, want)                                                                \
    do {                                                                                        \
        ela_status check_got_ = (call);                                                         \
        ela_status check_want_ = (want);                                                        \
        test_checks++;                                                                          \
        if (check_got_ != check_want_)                                                          \
            test_fail(__FILE__, __LINE__, #call, "got %s, want %s (last error: \"%s\")",        \
                      ela_status_str(check_got_), ela_status_str(check_want_),                  \
                      ela_last_error());                                                        \
    } while (0)

/* Print a one-line summary and return the process exit code (0 when nothing failed). */
int test_summary(const char *name);

/* ---- random inputs -------------------------------------------------------------------- */
/* The run's base seed: ELA_TEST_SEED if set (decimal or 0x hex), else fresh from the clock and
 * pid. Printed on first use as "seed: N (replay with ELA_TEST_SEED=N)". */
uint64_t test_seed(void);

typedef struct {
    uint64_t state;
} test_rng;

/* Seed from the run's base seed and a stream number (e.g. the case index), so one case can be
 * replayed alone with the same data. */
void test_rng_init(test_rng *rng, uint64_t stream);
uint64_t test_rng_u64(test_rng *rng);
int64_t test_rng_below(test_rng *rng, int64_t n);            /* [0, n), n > 0 */
double test_rng_uniform(test_rng *rng, double lo, double hi); /* [lo, hi) */
double test_rng_normal(test_rng *rng);                        /* mean 0, variance 1 */
void test_fill_uniform(test_rng *rng, float *x, int64_t n, float lo, float hi);
void test_fill_normal(test_rng *rng, float *x, int64_t n, float stddev);
/* A malloc'ed float64 copy of x[0 .. n) for the references (NULL when out of memory). */
double *test_to_double(const float *x, int64_t n);

/* ---- dtypes and errors ---------------------------------------------------------------- */
/* Round x in place through dtype (f32 -> dtype -> f32 with ela_convert), so a reference fed
 * with x sees exactly the values a kernel reading dtype sees. For q8_0, n is a multiple of 32
 * and each 32 consecutive values share one block (the rows of a K or V [Hkv, n, d] with
 * d % 32 == 0): x becomes the dequantized values. Returns 0, or -1 on failure. */
int test_round_through(float *x, int64_t n, ela_dtype dtype);
/* The same for q8_0 alone: quantize x (n % 32 == 0) and dequantize it back in place. */
int test_q8_0_round(float *x, int64_t n);
/* Bytes spanned by a stride of `elems` elements of dtype, for tensor views: elements times the
 * size, for q8_0 whole blocks (elems a multiple of 32) of 34 bytes, and for elems == 1 (the
 * packed innermost stride) one block. 0 when elems is not whole blocks. */
int64_t test_stride_bytes(ela_dtype dtype, int64_t elems);
/* x (f32) converted to packed dtype bytes in dst (numel * ela_dtype_size). 0 or -1. */
int test_to_dtype(const float *x, int64_t n, ela_dtype dtype, void *dst);

/* ||got - ref||_2 / ||ref||_2 (absolute when ref is 0); +inf when any value is not finite,
 * so a NaN never passes a `err <= tol` check. */
double test_rel_l2(const double *ref, const float *got, int64_t n);

/* Nonzero when msg contains word as a whole word (neighbours not letters, digits or '_'),
 * ignoring case: test_has_word("q has 2 dims", "q") but not test_has_word("Hq", "q"). */
int test_has_word(const char *msg, const char *word);
/* Nonzero when msg contains needle, ignoring case. */
int test_has_text(const char *msg, const char *needle);

/* Environment variables through POSIX setenv/unsetenv (value NULL unsets). */
void test_setenv(const char *name, const char *value);

/* Monotonic seconds, for timings printed by the tests. */
double test_now(void);

#endif

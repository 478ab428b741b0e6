/* Unit test of the SIMD inner kernels of CPU dense attention (backends/cpu/attn_kernels_*.c):
 * every SIMD level this CPU supports is compared with the scalar table (attn_kernels_scalar.c)
 * on fresh random inputs for each shape; the row-path kernels (qk_rows, pv_rows) of every
 * level, scalar included, against a float64 reference. Exit status 0 on pass, 1 with messages
 * on failure. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* mmap / MAP_ANONYMOUS for the guard page after each input */
#endif

#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__clang__)
#include <cpuid.h>
#endif

#include "backends/cpu/attn_kernels.h"
#include "core/dtype.h"

#define BK CPU_ATTN_BK

/* Tolerances, against the scalar table.
 * - load_rows: exact (bitwise), every conversion is exact for non-NaN inputs.
 * - qk, pv: f32 accumulation in another order (and FMA instead of mul+add), so the error is
 *   relative to the sum of the magnitudes of the terms, sum |q*k| (qk) and |alpha*o| +
 *   sum |p*v| (pv), not to the result, which may cancel to near 0.
 * - softmax: P and alpha are single exp2 results: relative 2e-6 (the polynomial is within
 *   2e-7, exp2f within 1 ulp). Results below FLT_MIN may flush to 0 (AVX2/NEON) where exp2f
 *   gives a denormal, hence an absolute floor of FLT_MIN. Masked keys give exactly 0; m is
 *   exact (a max). l sums up to 64 such terms in another order: relative 1e-5. */
#define TOL_DOT 1e-5
#define TOL_EXP2 2e-6
#define TOL_SUM 1e-5
#define MAX_REPORTS 20

static int n_fail;

#define FAIL(...)                                                                           \
    do {                                                                                    \
        if (n_fail++ < MAX_REPORTS) {                                                       \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                            \
        }                                                                                   \
    } while (0)

/* A fault inside a kernel (reading past the end of a fenced input) is a failure with a name. */
static const char *volatile current_case = "setup";

static void on_fault(int sig) {
    (void)sig;
    fputs("FAIL: crashed (SIGSEGV/SIGBUS) in ", stderr);
    fputs(current_case, stderr);
    fputs(": most likely a read past the end of an input\n", stderr);
    _Exit(1);
}

/* ---- random numbers (splitmix64) ---------------------------------------------------- */
static uint64_t rng_state;

static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0); }

static float rng_range(float lo, float hi) { return lo + (float)rng_unit() * (hi - lo); }

static void fill_range(float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_range(lo, hi);
}

/* A random bit pattern that is not a NaN (infinities, denormals and zeros included). */
static uint32_t rand_bits_f32(void) {
    for (;;) {
        uint32_t b = (uint32_t)rng_u64();
        if ((b & 0x7fffffffu) <= 0x7f800000u)
            return b;
    }
}

static uint16_t rand_bits_16(ela_dtype dtype) {
    uint32_t exp_mask = dtype == ELA_F16 ? 0x7c00u : 0x7f80u;
    for (;;) {
        uint16_t b = (uint16_t)rng_u64();
        if ((b & exp_mask) != exp_mask || (b & 0x7fffu) == exp_mask) /* finite, or +-inf */
            return b;
    }
}

/* ---- buffers with guard zones ------------------------------------------------------- */
#define GUARD 32
static const uint32_t guard_bits = 0x7fc0dead; /* a NaN that no kernel writes */

/* n floats with GUARD guard floats on each side. */
static float *guarded_alloc(int64_t n) {
    float *p = malloc((size_t)(n + 2 * GUARD) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (int64_t i = 0; i < GUARD; i++) {
        memcpy(p + i, &guard_bits, 4);
        memcpy(p + GUARD + n + i, &guard_bits, 4);
    }
    return p + GUARD;
}

static int guard_ok(const float *x, int64_t n) {
    for (int64_t i = 0; i < GUARD; i++)
        if (memcmp(x - GUARD + i, &guard_bits, 4) || memcmp(x + n + i, &guard_bits, 4))
            return 0;
    return 1;
}

static void guarded_free(float *x) {
    if (x)
        free(x - GUARD);
}

/* Read-only inputs end flush against an unmapped page, so that a kernel reading past the end
 * (a key or value row >= nk, a source byte past the last row) faults. Falls back to malloc
 * where mmap is not at hand. */
#if defined(__linux__)
static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }
#endif

static void *fenced_alloc(size_t bytes) {
#if defined(__linux__)
    size_t page = page_size(), body = (bytes + page - 1) / page * page;
    unsigned char *base = mmap(NULL, body + page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base != MAP_FAILED) {
        if (mprotect(base + body, page, PROT_NONE) == 0)
            return base + body - bytes;
        munmap(base, body + page);
    }
    fprintf(stderr, "mmap failed\n");
    exit(2);
#else
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
#endif
}

static void fenced_free(void *p, size_t bytes) {
#if defined(__linux__)
    size_t page = page_size(), body = (bytes + page - 1) / page * page;
    munmap((unsigned char *)p + bytes - body, body + page);
#else
    (void)bytes;
    free(p);
#endif
}

static float *fenced_floats(int64_t n) { return fenced_alloc((size_t)n * sizeof(float)); }
static void fenced_free_floats(float *p, int64_t n) { fenced_free(p, (size_t)n * sizeof(float)); }

/* ---- load_rows ---------------------------------------------------------------------- */
/* Local names and sizes, so that the test needs no more of libela than the kernel tables. */
static const char *dtype_name(ela_dtype dt) {
    return dt == ELA_F32 ? "f32" : dt == ELA_F16 ? "f16" : dt == ELA_BF16 ? "bf16" : "q8_0";
}

/* Bytes of d elements of dt (q8_0: d a multiple of 32, whole 34-byte blocks). */
static int64_t dt_bytes(ela_dtype dt, int64_t d) {
    if (dt == ELA_Q8_0)
        return d / ELA_Q8_0_BLOCK * ELA_Q8_0_BYTES;
    return d * (dt == ELA_F32 ? 4 : 2);
}

/* q8_0 row of d elements (d % 32 == 0) at dst: per block 32 values uniform in [lo, hi) scaled
 * by a random power of two in [2^-6, 2^6] (so blocks differ in scale), quantized as ggml does.
 * Their dequantized values (what a kernel must read) go to val (may be NULL). */
static void q8_row(uint8_t *dst, int64_t d, float lo, float hi, float *val) {
    for (int64_t b = 0; b < d / ELA_Q8_0_BLOCK; b++) {
        float x[ELA_Q8_0_BLOCK];
        float mult = ldexpf(1.0f, (int)(rng_u64() % 13) - 6);
        for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
            x[i] = mult * rng_range(lo, hi);
        ela_q8_0_quantize_block(x, dst + b * ELA_Q8_0_BYTES);
        if (val)
            ela_q8_0_dequantize_block(dst + b * ELA_Q8_0_BYTES, val + b * ELA_Q8_0_BLOCK);
    }
}

/* load_rows of q8_0 against the scalar table, bitwise (scale * int8 is exact in f32): typical
 * quantized rows, and arbitrary bytes (any f16 scale bits but NaN: infinities, denormals, zeros;
 * any int8, -128 included). Strides pad rows by whole blocks. */
static void test_load_rows_q8(const cpu_attn_kernels *ref, const cpu_attn_kernels *k,
                              int64_t *n_cases) {
    static const int64_t ds[] = {32, 64, 96, 128, 256};
    static const int64_t rowss[] = {1, 2, 3, 5, 17};
    static const int64_t extras[] = {0, 1, 3}; /* stride padding, in blocks */
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++)
        for (size_t b = 0; b < sizeof rowss / sizeof rowss[0]; b++)
            for (size_t e = 0; e < sizeof extras / sizeof extras[0]; e++) {
                int64_t d = ds[a], rows = rowss[b];
                int64_t stride = dt_bytes(ELA_Q8_0, d) + extras[e] * ELA_Q8_0_BYTES;
                int64_t dp = d + CPU_ATTN_DPAD * (int64_t)((a + b + e) % 2);
                size_t bytes = (size_t)((rows - 1) * stride + dt_bytes(ELA_Q8_0, d));
                uint8_t *src = fenced_alloc(bytes);
                memset(src, 0xff, bytes);
                int arbitrary = (a + b + e) % 3 == 0;
                float *val = malloc((size_t)(rows * d) * sizeof(float));
                if (!val) {
                    fprintf(stderr, "out of memory\n");
                    exit(2);
                }
                for (int64_t r = 0; r < rows; r++) {
                    uint8_t *row = src + r * stride;
                    if (!arbitrary) {
                        q8_row(row, d, -4.0f, 4.0f, val + r * d);
                        continue;
                    }
                    for (int64_t i = 0; i < dt_bytes(ELA_Q8_0, d); i++)
                        row[i] = (uint8_t)rng_u64();
                    for (int64_t blk = 0; blk < d / ELA_Q8_0_BLOCK; blk++) {
                        uint16_t h = rand_bits_16(ELA_F16);
                        memcpy(row + blk * ELA_Q8_0_BYTES, &h, 2);
                    }
                }
                int64_t n = rows * dp;
                float *want = guarded_alloc(n), *got = guarded_alloc(n);
                memset(want, 0xff, (size_t)n * 4);
                memset(got, 0xff, (size_t)n * 4);
                ref->load_rows(want, dp, src, stride, ELA_Q8_0, rows, d);
                k->load_rows(got, dp, src, stride, ELA_Q8_0, rows, d);
                (*n_cases)++;
                /* the reference itself: core/dtype.h's dequantization, zeros in [d, dp) */
                for (int64_t i = 0; i < n; i++) {
                    float w = i % dp < d ? val[i / dp * d + i % dp] : 0.0f;
                    if (!arbitrary && memcmp(&w, want + i, 4)) {
                        FAIL("%s load_rows q8_0 d=%lld dp=%lld: [%lld][%lld] = %a, want %a",
                             ref->name, (long long)d, (long long)dp, (long long)(i / dp),
                             (long long)(i % dp), want[i], w);
                        break;
                    }
                }
                if (!guard_ok(got, n))
                    FAIL("%s load_rows q8_0 d=%lld dp=%lld rows=%lld: wrote outside dst", k->name,
                         (long long)d, (long long)dp, (long long)rows);
                for (int64_t i = 0; i < n; i++) {
                    /* every NaN is as good as another (inf * 0 in either) */
                    if (memcmp(want + i, got + i, 4) && !(isnan(want[i]) && isnan(got[i]))) {
                        FAIL("%s load_rows q8_0 d=%lld dp=%lld rows=%lld stride=%lld%s: "
                             "[%lld][%lld] = %a, want %a",
                             k->name, (long long)d, (long long)dp, (long long)rows,
                             (long long)stride, arbitrary ? " (arbitrary bytes)" : "",
                             (long long)(i / dp), (long long)(i % dp), got[i], want[i]);
                        break;
                    }
                }
                guarded_free(want);
                guarded_free(got);
                fenced_free(src, bytes);
                free(val);
            }
}

static void test_load_rows(const cpu_attn_kernels *ref, const cpu_attn_kernels *k,
                           int64_t *n_cases) {
    static const int64_t ds[] = {1,  3,  8,   15,  16,  17,  31,  32,  33, 48,
                                 64, 80, 100, 127, 128, 130, 200, 255, 256};
    static const int64_t rowss[] = {1, 2, 3, 5, 17};
    static const int64_t extras[] = {0, 1, 5, 16}; /* stride padding, in elements */
    static const ela_dtype dtypes[] = {ELA_F32, ELA_F16, ELA_BF16};
    for (size_t t = 0; t < sizeof dtypes / sizeof dtypes[0]; t++) {
        ela_dtype dt = dtypes[t];
        int64_t es = dt == ELA_F32 ? 4 : 2;
        for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++) {
            int64_t d = ds[a];
            for (size_t b = 0; b < sizeof rowss / sizeof rowss[0]; b++) {
                int64_t rows = rowss[b];
                for (size_t e = 0; e < sizeof extras / sizeof extras[0]; e++) {
                    int64_t stride = (d + extras[e]) * es;
                    int64_t dp0 = (d + CPU_ATTN_DPAD - 1) / CPU_ATTN_DPAD * CPU_ATTN_DPAD;
                    for (int64_t dp = dp0; dp <= dp0 + CPU_ATTN_DPAD; dp += CPU_ATTN_DPAD) {
                        size_t bytes = (size_t)((rows - 1) * stride + d * es);
                        unsigned char *src = fenced_alloc(bytes);
                        for (int64_t r = 0; r < rows; r++) {
                            unsigned char *row = src + r * stride;
                            for (int64_t c = 0; c < d; c++) {
                                /* Half typical values (through core/dtype.h), half
                                 * arbitrary bit patterns (denormals, zeros, infinities). */
                                int typical = rng_u64() & 1;
                                float x = rng_range(-4.0f, 4.0f);
                                if (dt == ELA_F32) {
                                    uint32_t v = rand_bits_f32();
                                    if (typical)
                                        memcpy(&v, &x, 4);
                                    memcpy(row + 4 * c, &v, 4);
                                } else {
                                    uint16_t v = !typical      ? rand_bits_16(dt)
                                                 : dt == ELA_F16 ? ela_f32_to_f16(x)
                                                                 : ela_f32_to_bf16(x);
                                    memcpy(row + 2 * c, &v, 2);
                                }
                            }
                        }
                        int64_t n = rows * dp;
                        float *want = guarded_alloc(n), *got = guarded_alloc(n);
                        memset(want, 0xff, (size_t)n * 4);
                        memset(got, 0xff, (size_t)n * 4);
                        ref->load_rows(want, dp, src, stride, dt, rows, d);
                        k->load_rows(got, dp, src, stride, dt, rows, d);
                        (*n_cases)++;
                        if (!guard_ok(got, n))
                            FAIL("%s load_rows %s d=%lld dp=%lld rows=%lld: wrote outside dst",
                                 k->name, dtype_name(dt), (long long)d, (long long)dp,
                                 (long long)rows);
                        for (int64_t i = 0; i < n; i++) {
                            if (memcmp(want + i, got + i, 4)) {
                                FAIL("%s load_rows %s d=%lld dp=%lld rows=%lld stride=%lld: "
                                     "[%lld][%lld] = %a, want %a",
                                     k->name, dtype_name(dt), (long long)d, (long long)dp,
                                     (long long)rows, (long long)stride, (long long)(i / dp),
                                     (long long)(i % dp), got[i], want[i]);
                                break;
                            }
                        }
                        guarded_free(want);
                        guarded_free(got);
                        fenced_free(src, bytes);
                    }
                }
            }
        }
    }
}

/* ---- qk ----------------------------------------------------------------------------- */
static const int64_t Rs[] = {1, 2, 3, 4, 5, 7, 8, 13, 16, 33, 64};
static const int64_t nks[] = {1, 5, 16, 17, 63, 64};
static const int64_t dps[] = {16, 32, 64, 128, 256};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const float s_sentinel = 1234.5f;

static void test_qk(const cpu_attn_kernels *ref, const cpu_attn_kernels *k, int64_t *n_cases) {
    for (size_t a = 0; a < COUNT(Rs); a++)
        for (size_t b = 0; b < COUNT(nks); b++)
            for (size_t c = 0; c < COUNT(dps); c++) {
                int64_t R = Rs[a], nk = nks[b], dp = dps[c];
                float *Q = fenced_floats(R * dp), *K = fenced_floats(nk * dp);
                float *want = guarded_alloc(R * BK), *got = guarded_alloc(R * BK);
                float scale = (a + b + c) % 3 == 0 ? 10.0f : 1.0f;
                fill_range(Q, R * dp, -scale, scale);
                fill_range(K, nk * dp, -1.0f, 1.0f);
                for (int64_t i = 0; i < R * BK; i++)
                    want[i] = got[i] = s_sentinel;
                ref->qk(want, Q, K, R, nk, dp);
                k->qk(got, Q, K, R, nk, dp);
                (*n_cases)++;
                if (!guard_ok(got, R * BK))
                    FAIL("%s qk R=%lld nk=%lld dp=%lld: wrote outside S", k->name, (long long)R,
                         (long long)nk, (long long)dp);
                int reported = 0;
                for (int64_t r = 0; r < R && !reported; r++)
                    for (int64_t j = 0; j < BK && !reported; j++) {
                        float g = got[r * BK + j], w = want[r * BK + j];
                        double mag = 0.0;
                        for (int64_t x = 0; j < nk && x < dp; x++)
                            mag += fabs((double)Q[r * dp + x] * K[j * dp + x]);
                        int ok = j < nk ? fabs((double)g - w) <= TOL_DOT * mag + 1e-30
                                        : g == s_sentinel;
                        if (!ok) {
                            FAIL("%s qk R=%lld nk=%lld dp=%lld: S[%lld][%lld] = %.9g, want %.9g%s",
                                 k->name, (long long)R, (long long)nk, (long long)dp,
                                 (long long)r, (long long)j, g, w,
                                 j < nk ? "" : " (past nk: must be left alone)");
                            reported = 1;
                        }
                    }
                fenced_free_floats(Q, R * dp);
                fenced_free_floats(K, nk * dp);
                guarded_free(want);
                guarded_free(got);
            }
}

/* ---- softmax ------------------------------------------------------------------------ */
static int close_exp2(float got, float want) {
    return fabs((double)got - want) <= TOL_EXP2 * fabs((double)want) + FLT_MIN;
}

static void check_softmax(const cpu_attn_kernels *ref, const cpu_attn_kernels *k, const float *S0,
                          const float *m0, const float *l0, int64_t R, int64_t nk,
                          const char *what) {
    float *Sw = guarded_alloc(R * BK), *Sg = guarded_alloc(R * BK);
    float *mw = guarded_alloc(R), *mg = guarded_alloc(R), *lw = guarded_alloc(R);
    float *lg = guarded_alloc(R), *aw = guarded_alloc(R), *ag = guarded_alloc(R);
    memcpy(Sw, S0, (size_t)(R * BK) * 4);
    memcpy(Sg, S0, (size_t)(R * BK) * 4);
    memcpy(mw, m0, (size_t)R * 4);
    memcpy(mg, m0, (size_t)R * 4);
    memcpy(lw, l0, (size_t)R * 4);
    memcpy(lg, l0, (size_t)R * 4);
    for (int64_t r = 0; r < R; r++)
        aw[r] = ag[r] = NAN;
    ref->softmax(Sw, mw, lw, aw, R, nk);
    k->softmax(Sg, mg, lg, ag, R, nk);
    if (!guard_ok(Sg, R * BK) || !guard_ok(mg, R) || !guard_ok(lg, R) || !guard_ok(ag, R))
        FAIL("%s softmax %s R=%lld nk=%lld: wrote outside its arrays", k->name, what,
             (long long)R, (long long)nk);
    for (int64_t r = 0; r < R; r++) {
        char where[160];
        snprintf(where, sizeof where, "%s softmax %s R=%lld nk=%lld row %lld (m0=%g)", k->name,
                 what, (long long)R, (long long)nk, (long long)r, m0[r]);
        if (!(mg[r] == mw[r] || (isnan(mg[r]) && isnan(mw[r]))))
            FAIL("%s: m = %.9g, want %.9g", where, mg[r], mw[r]);
        if (!close_exp2(ag[r], aw[r]))
            FAIL("%s: alpha = %.9g, want %.9g", where, ag[r], aw[r]);
        if (!(fabs((double)lg[r] - lw[r]) <= TOL_SUM * fabs((double)lw[r]) + FLT_MIN))
            FAIL("%s: l = %.9g, want %.9g", where, lg[r], lw[r]);
        for (int64_t j = 0; j < BK; j++) {
            float g = Sg[r * BK + j], w = Sw[r * BK + j], s = S0[r * BK + j];
            int must_be_zero = j >= nk || s == -INFINITY;
            int ok = must_be_zero ? g == 0.0f : close_exp2(g, w);
            if (!ok) {
                FAIL("%s: P[%lld] = %.9g, want %.9g (S = %.9g)", where, (long long)j, g, w, s);
                break;
            }
        }
    }
    float *bufs[] = {Sw, Sg, mw, mg, lw, lg, aw, ag};
    for (size_t i = 0; i < COUNT(bufs); i++)
        guarded_free(bufs[i]);
}

static void test_softmax(const cpu_attn_kernels *ref, const cpu_attn_kernels *k, int64_t *n_cases) {
    for (size_t a = 0; a < COUNT(Rs); a++)
        for (size_t b = 0; b < COUNT(nks); b++) {
            int64_t R = Rs[a], nk = nks[b];
            float *S = guarded_alloc(R * BK), *m = guarded_alloc(R), *l = guarded_alloc(R);
            for (int64_t r = 0; r < R; r++) {
                /* Row kinds: 0 normal, m = -inf (first tile); 1 normal, finite m below or
                 * above the row max; 2 fully masked, m = -inf; 3 fully masked, finite m. */
                int kind = (int)((r + a + b) % 4);
                int full_mask = kind >= 2;
                for (int64_t j = 0; j < BK; j++) {
                    float v;
                    if (j >= nk) { /* past nk: garbage the kernel must ignore and zero */
                        uint64_t u = rng_u64() % 4;
                        v = u == 0 ? NAN : u == 1 ? INFINITY : u == 2 ? 1e30f : -1e30f;
                    } else if (full_mask || rng_unit() < 0.2) {
                        v = -INFINITY;
                    } else if (rng_unit() < 0.1) {
                        v = rng_range(-170.0f, -110.0f); /* underflow region of exp2 */
                    } else {
                        v = rng_range(-30.0f, 8.0f);
                    }
                    S[r * BK + j] = v;
                }
                if (kind == 0 || kind == 2) {
                    m[r] = -INFINITY;
                    l[r] = 0.0f;
                } else {
                    m[r] = rng_range(-20.0f, 20.0f);
                    l[r] = rng_range(0.5f, 100.0f);
                }
            }
            check_softmax(ref, k, S, m, l, R, nk, "random");
            (*n_cases)++;
            guarded_free(S);
            guarded_free(m);
            guarded_free(l);
        }

    /* Sweep of exp2 over [-160, 0]: rows whose max is 0, all keys live. */
    const int64_t R = 64, n_sweep = 40;
    float *S = guarded_alloc(R * BK), *m = guarded_alloc(R), *l = guarded_alloc(R);
    for (int64_t it = 0; it < n_sweep; it++) {
        for (int64_t r = 0; r < R; r++) {
            for (int64_t j = 0; j < BK; j++)
                S[r * BK + j] =
                    -160.0f * (float)((it * R + r) * BK + j) / (float)(n_sweep * R * BK);
            S[r * BK + rng_u64() % BK] = 0.0f;
            m[r] = -INFINITY;
            l[r] = 0.0f;
        }
        check_softmax(ref, k, S, m, l, R, BK, "exp2 sweep");
        (*n_cases)++;
    }
    guarded_free(S);
    guarded_free(m);
    guarded_free(l);
}

/* ---- pv ----------------------------------------------------------------------------- */
static void test_pv(const cpu_attn_kernels *ref, const cpu_attn_kernels *k, int64_t *n_cases) {
    for (size_t a = 0; a < COUNT(Rs); a++)
        for (size_t b = 0; b < COUNT(nks); b++)
            for (size_t c = 0; c < COUNT(dps); c++) {
                int64_t R = Rs[a], nk = nks[b], dp = dps[c];
                float *P = fenced_floats(R * BK), *V = fenced_floats(nk * dp);
                float *alpha = guarded_alloc(R), *O0 = guarded_alloc(R * dp);
                float *want = guarded_alloc(R * dp), *got = guarded_alloc(R * dp);
                for (int64_t r = 0; r < R; r++) {
                    for (int64_t j = 0; j < BK; j++) /* past nk: NaN, must not be read */
                        P[r * BK + j] = j >= nk              ? NAN
                                        : rng_unit() < 0.15 ? 0.0f
                                                            : rng_range(0.0f, 1.0f);
                    uint64_t u = rng_u64() % 4;
                    alpha[r] = u == 0 ? 0.0f : u == 1 ? 1.0f : rng_range(0.0f, 1.0f);
                }
                fill_range(V, nk * dp, -1.0f, 1.0f);
                fill_range(O0, R * dp, -4.0f, 4.0f);
                memcpy(want, O0, (size_t)(R * dp) * 4);
                memcpy(got, O0, (size_t)(R * dp) * 4);
                ref->pv(want, P, V, alpha, R, nk, dp);
                k->pv(got, P, V, alpha, R, nk, dp);
                (*n_cases)++;
                if (!guard_ok(got, R * dp))
                    FAIL("%s pv R=%lld nk=%lld dp=%lld: wrote outside O", k->name, (long long)R,
                         (long long)nk, (long long)dp);
                int reported = 0;
                for (int64_t r = 0; r < R && !reported; r++)
                    for (int64_t x = 0; x < dp && !reported; x++) {
                        double mag = fabs((double)alpha[r] * O0[r * dp + x]);
                        for (int64_t j = 0; j < nk; j++)
                            mag += fabs((double)P[r * BK + j] * V[j * dp + x]);
                        float g = got[r * dp + x], w = want[r * dp + x];
                        if (!(fabs((double)g - w) <= TOL_DOT * mag + 1e-30)) {
                            FAIL("%s pv R=%lld nk=%lld dp=%lld: O[%lld][%lld] = %.9g, want %.9g",
                                 k->name, (long long)R, (long long)nk, (long long)dp,
                                 (long long)r, (long long)x, g, w);
                            reported = 1;
                        }
                    }
                fenced_free_floats(P, R * BK);
                fenced_free_floats(V, nk * dp);
                float *bufs[] = {alpha, O0, want, got};
                for (size_t i = 0; i < COUNT(bufs); i++)
                    guarded_free(bufs[i]);
            }
}

/* ---- qk_rows / pv_rows (row path) ------------------------------------------------------ */
/* Every level, scalar included, against a float64 reference of the same function (the row
 * kernels have no older twin to compare with). K/V rows lie in one fenced buffer, `stride`
 * elements apart, in shuffled order (as a gathered index set would be), the last row in
 * memory ending at the fence: a read past d elements of that row faults. */
static const int64_t rows_Rs[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16};
static const int64_t rows_nks[] = {1, 2, 5, 16, 17, 31, 63, 64};
static const int64_t rows_ds[] = {16, 32, 64, 80, 128, 256};
static const ela_dtype rows_dtypes[] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};

/* The row kernels take q8_0 rows of whole blocks only: d % 32 == 0. */
static int rows_case_ok(ela_dtype dt, int64_t d) { return dt != ELA_Q8_0 || d % 32 == 0; }

typedef struct {
    unsigned char *buf;
    size_t bytes;
    const void **row;  /* row[j], j < nk: key j's row (shuffled over the buffer) */
    const void **pf;   /* prefetch list: the rows again, in another order */
    float *val;        /* val[j*d + c]: the value the kernel must read, as f32 */
    int64_t nk, d;
} row_set;

static void row_set_make(row_set *rs, int64_t nk, int64_t d, ela_dtype dt, int64_t extra,
                         float lo, float hi) {
    /* extra pads rows by that many elements; q8_0 by extra / 8 whole blocks */
    int64_t stride = dt == ELA_Q8_0 ? dt_bytes(dt, d) + extra / 8 * ELA_Q8_0_BYTES
                                    : dt_bytes(dt, d + extra);
    rs->nk = nk;
    rs->d = d;
    rs->bytes = (size_t)((nk - 1) * stride + dt_bytes(dt, d));
    rs->buf = fenced_alloc(rs->bytes);
    rs->row = malloc((size_t)nk * sizeof(void *));
    rs->pf = malloc((size_t)nk * sizeof(void *));
    rs->val = malloc((size_t)(nk * d) * sizeof(float));
    int64_t *perm = malloc((size_t)nk * sizeof(int64_t));
    if (!rs->row || !rs->pf || !rs->val || !perm) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (int64_t j = 0; j < nk; j++)
        perm[j] = j;
    for (int64_t j = nk - 1; j > 0; j--) { /* Fisher-Yates */
        int64_t i = (int64_t)(rng_u64() % (uint64_t)(j + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memset(rs->buf, 0xff, rs->bytes); /* padding between rows: NaN in every dtype */
    for (int64_t j = 0; j < nk; j++) {
        unsigned char *row = rs->buf + perm[j] * stride;
        rs->row[j] = row;
        rs->pf[nk - 1 - j] = row;
        if (dt == ELA_Q8_0) {
            q8_row(row, d, lo, hi, rs->val + j * d);
            continue;
        }
        for (int64_t c = 0; c < d; c++) {
            float x = rng_range(lo, hi);
            if (dt == ELA_F32) {
                memcpy(row + 4 * c, &x, 4);
            } else {
                uint16_t h = dt == ELA_F16 ? ela_f32_to_f16(x) : ela_f32_to_bf16(x);
                memcpy(row + 2 * c, &h, 2);
                x = dt == ELA_F16 ? ela_f16_to_f32(h) : ela_bf16_to_f32(h);
            }
            rs->val[j * d + c] = x;
        }
    }
    free(perm);
}

static void row_set_free(row_set *rs) {
    fenced_free(rs->buf, rs->bytes);
    free(rs->row);
    free(rs->pf);
    free(rs->val);
}

/* The prefetch list of a case: none, part of the rows or all of them (never read). */
static int64_t pick_npf(int64_t nk, const void *const **pf, const row_set *rs) {
    switch (rng_u64() % 3) {
    case 0: *pf = NULL; return 0;
    case 1: *pf = rs->pf; return 1 + (int64_t)(rng_u64() % (uint64_t)nk);
    default: *pf = rs->pf; return nk;
    }
}

static void test_qk_rows(const cpu_attn_kernels *k, int64_t *n_cases) {
    for (size_t t = 0; t < COUNT(rows_dtypes); t++)
        for (size_t a = 0; a < COUNT(rows_Rs); a++)
            for (size_t b = 0; b < COUNT(rows_nks); b++)
                for (size_t c = 0; c < COUNT(rows_ds); c++) {
                    ela_dtype dt = rows_dtypes[t];
                    int64_t R = rows_Rs[a], nk = rows_nks[b], d = rows_ds[c];
                    int64_t dp = d + CPU_ATTN_DPAD * (int64_t)((a + b) % 2);
                    if (!rows_case_ok(dt, d))
                        continue;
                    row_set ks;
                    row_set_make(&ks, nk, d, dt, (int64_t)((a + c) % 3) * 8, -1.0f, 1.0f);
                    float *Q = fenced_floats(R * dp), *S = guarded_alloc(R * BK);
                    float scale = (a + b + c) % 3 == 0 ? 10.0f : 1.0f;
                    fill_range(Q, R * dp, -scale, scale);
                    for (int64_t i = 0; i < R * BK; i++)
                        S[i] = s_sentinel;
                    const void *const *pf;
                    int64_t npf = pick_npf(nk, &pf, &ks);
                    k->qk_rows(S, Q, R, dp, ks.row, nk, d, dt, pf, npf);
                    (*n_cases)++;
                    if (!guard_ok(S, R * BK))
                        FAIL("%s qk_rows %s R=%lld nk=%lld d=%lld: wrote outside S", k->name,
                             dtype_name(dt), (long long)R, (long long)nk, (long long)d);
                    int reported = 0;
                    for (int64_t r = 0; r < R && !reported; r++)
                        for (int64_t j = 0; j < BK && !reported; j++) {
                            double want = 0.0, mag = 0.0;
                            for (int64_t x = 0; j < nk && x < d; x++) {
                                double term = (double)Q[r * dp + x] * ks.val[j * d + x];
                                want += term;
                                mag += fabs(term);
                            }
                            float g = S[r * BK + j];
                            int ok = j < nk ? fabs((double)g - want) <= TOL_DOT * mag + 1e-30
                                            : g == s_sentinel;
                            if (!ok) {
                                FAIL("%s qk_rows %s R=%lld nk=%lld d=%lld dp=%lld npf=%lld: "
                                     "S[%lld][%lld] = %.9g, want %.9g%s",
                                     k->name, dtype_name(dt), (long long)R, (long long)nk,
                                     (long long)d, (long long)dp, (long long)npf, (long long)r,
                                     (long long)j, g, j < nk ? want : (double)s_sentinel,
                                     j < nk ? "" : " (past nk: must be left alone)");
                                reported = 1;
                            }
                        }
                    fenced_free_floats(Q, R * dp);
                    guarded_free(S);
                    row_set_free(&ks);
                }
}

static void test_pv_rows(const cpu_attn_kernels *k, int64_t *n_cases) {
    for (size_t t = 0; t < COUNT(rows_dtypes); t++)
        for (size_t a = 0; a < COUNT(rows_Rs); a++)
            for (size_t b = 0; b < COUNT(rows_nks); b++)
                for (size_t c = 0; c < COUNT(rows_ds); c++) {
                    ela_dtype dt = rows_dtypes[t];
                    int64_t R = rows_Rs[a], nk = rows_nks[b], d = rows_ds[c];
                    int64_t dp = d + CPU_ATTN_DPAD * (int64_t)((a + c) % 2);
                    if (!rows_case_ok(dt, d))
                        continue;
                    row_set vs;
                    row_set_make(&vs, nk, d, dt, (int64_t)((b + c) % 3) * 8, -1.0f, 1.0f);
                    float *P = fenced_floats(R * BK), *alpha = guarded_alloc(R);
                    float *O0 = guarded_alloc(R * dp), *O = guarded_alloc(R * dp);
                    for (int64_t r = 0; r < R; r++) {
                        for (int64_t j = 0; j < BK; j++) /* past nk: NaN, must not be read */
                            P[r * BK + j] = j >= nk              ? NAN
                                            : rng_unit() < 0.15 ? 0.0f
                                                                : rng_range(0.0f, 1.0f);
                        uint64_t u = rng_u64() % 4;
                        alpha[r] = u == 0 ? 0.0f : u == 1 ? 1.0f : rng_range(0.0f, 1.0f);
                    }
                    fill_range(O0, R * dp, -4.0f, 4.0f);
                    for (int64_t r = 0; r < R; r++) /* columns [d, dp): must be left alone */
                        for (int64_t x = d; x < dp; x++)
                            O0[r * dp + x] = s_sentinel;
                    memcpy(O, O0, (size_t)(R * dp) * 4);
                    const void *const *pf;
                    int64_t npf = pick_npf(nk, &pf, &vs);
                    k->pv_rows(O, P, alpha, R, dp, vs.row, nk, d, dt, pf, npf);
                    (*n_cases)++;
                    if (!guard_ok(O, R * dp))
                        FAIL("%s pv_rows %s R=%lld nk=%lld d=%lld: wrote outside O", k->name,
                             dtype_name(dt), (long long)R, (long long)nk, (long long)d);
                    int reported = 0;
                    for (int64_t r = 0; r < R && !reported; r++)
                        for (int64_t x = 0; x < dp && !reported; x++) {
                            double want = (double)alpha[r] * O0[r * dp + x];
                            double mag = fabs(want);
                            for (int64_t j = 0; x < d && j < nk; j++) {
                                double term = (double)P[r * BK + j] * vs.val[j * d + x];
                                want += term;
                                mag += fabs(term);
                            }
                            float g = O[r * dp + x];
                            int ok = x < d ? fabs((double)g - want) <= TOL_DOT * mag + 1e-30
                                           : g == s_sentinel;
                            if (!ok) {
                                FAIL("%s pv_rows %s R=%lld nk=%lld d=%lld dp=%lld npf=%lld: "
                                     "O[%lld][%lld] = %.9g, want %.9g%s",
                                     k->name, dtype_name(dt), (long long)R, (long long)nk,
                                     (long long)d, (long long)dp, (long long)npf, (long long)r,
                                     (long long)x, g, x < d ? want : (double)s_sentinel,
                                     x < d ? "" : " (past d: must be left alone)");
                                reported = 1;
                            }
                        }
                    fenced_free_floats(P, R * BK);
                    float *bufs[] = {alpha, O0, O};
                    for (size_t i = 0; i < COUNT(bufs); i++)
                        guarded_free(bufs[i]);
                    row_set_free(&vs);
                }
}

/* Runs the row-kernel tests on one table; a table without them (NULL) is reported as such. */
static void test_rows_level(const cpu_attn_kernels *k) {
    if (!k->qk_rows || !k->pv_rows) {
        if (k->qk_rows || k->pv_rows)
            FAIL("%s: qk_rows and pv_rows must be both set or both NULL", k->name);
        printf("%-8s qk_rows/pv_rows: none (tiled path only)\n", k->name);
        return;
    }
    int64_t nq = 0, np = 0;
    int before = n_fail;
    static char name[64]; /* current_case points here after we return */
    snprintf(name, sizeof name, "%s qk_rows", k->name);
    current_case = name;
    test_qk_rows(k, &nq);
    snprintf(name, sizeof name, "%s pv_rows", k->name);
    current_case = name;
    test_pv_rows(k, &np);
    printf("%-8s qk_rows %lld, pv_rows %lld cases: %s\n", k->name, (long long)nq,
           (long long)np, n_fail == before ? "ok" : "FAILED");
}

/* ---- main --------------------------------------------------------------------------- */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#if defined(__clang__) /* clang's __builtin_cpu_supports has no "f16c" before clang 16 */
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#else
static int cpu_has_f16c(void) { return __builtin_cpu_supports("f16c"); }
#endif
#endif

int main(void) {
    const cpu_attn_kernels *levels[4];
    int n_levels = 0;
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
        levels[n_levels++] = cpu_attn_kernels_avx2();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        levels[n_levels++] = cpu_attn_kernels_avx512();
#endif
#if defined(__aarch64__)
    levels[n_levels++] = cpu_attn_kernels_neon();
#endif
    const char *seed_env = getenv("ELA_TEST_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 0x5eedull;
    rng_state = seed;
    signal(SIGSEGV, on_fault);
#if defined(SIGBUS)
    signal(SIGBUS, on_fault);
#endif
    const cpu_attn_kernels *ref = cpu_attn_kernels_scalar();
    test_rows_level(ref);
    for (int i = 0; i < n_levels; i++)
        test_rows_level(levels[i]);
    if (n_levels == 0 && !n_fail) {
        printf("test_cpu_kernels: no SIMD level on this CPU, scalar row kernels passed\n");
        return 0;
    }
    for (int i = 0; i < n_levels; i++) {
        const cpu_attn_kernels *k = levels[i];
        int64_t nl = 0, nq = 0, ns = 0, np = 0;
        int before = n_fail;
        char name[64];
        snprintf(name, sizeof name, "%s load_rows", k->name);
        current_case = name;
        test_load_rows(ref, k, &nl);
        test_load_rows_q8(ref, k, &nl);
        snprintf(name, sizeof name, "%s qk", k->name);
        test_qk(ref, k, &nq);
        snprintf(name, sizeof name, "%s softmax", k->name);
        test_softmax(ref, k, &ns);
        snprintf(name, sizeof name, "%s pv", k->name);
        test_pv(ref, k, &np);
        printf("%-8s load_rows %lld, qk %lld, softmax %lld, pv %lld cases: %s\n", k->name,
               (long long)nl, (long long)nq, (long long)ns, (long long)np,
               n_fail == before ? "ok" : "FAILED");
    }
    if (n_fail) {
        fprintf(stderr,
                "test_cpu_kernels: %d failure(s) (seed 0x%llx; set ELA_TEST_SEED to vary)\n",
                n_fail, (unsigned long long)seed);
        return 1;
    }
    printf("test_cpu_kernels: all passed (seed 0x%llx)\n", (unsigned long long)seed);
    return 0;
}

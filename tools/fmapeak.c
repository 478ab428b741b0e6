/* FMA throughput probe (see fmapeak.h). Each thread runs FMAPEAK_ACC independent chains
 * a = a * m + c (enough to cover FMA latency x ports on current x86 and Arm cores), so the
 * loop is bound by FMA issue alone: 2 * lanes * FMAPEAK_ACC flops per iteration. */
#include "fmapeak.h"

#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FMAPEAK_X86 1
#include <immintrin.h>
#else
#define FMAPEAK_X86 0
#endif

#include "timer.h"

#define FMAPEAK_ACC 12

static volatile float fmapeak_sink;

/* Chains converge to c / (1 - m) = 0.01: finite, never denormal, never constant-folded. */
static const float FMA_M = 0.9999f, FMA_C = 0.000001f;

/* Portable chains of 8 lanes; the compiler vectorises and contracts them at -O3 where the
 * target has FMA (-ffp-contract=fast is GCC's default outside ISO mode). */
static float chains_portable(int64_t iters)
{
    float a[FMAPEAK_ACC][8];
    for (int k = 0; k < FMAPEAK_ACC; k++)
        for (int l = 0; l < 8; l++)
            a[k][l] = (float)(k * 8 + l) * 1e-3f;
    for (int64_t i = 0; i < iters; i++)
        for (int k = 0; k < FMAPEAK_ACC; k++)
            for (int l = 0; l < 8; l++)
                a[k][l] = a[k][l] * FMA_M + FMA_C;
    float s = 0;
    for (int k = 0; k < FMAPEAK_ACC; k++)
        for (int l = 0; l < 8; l++)
            s += a[k][l];
    return s;
}

#if FMAPEAK_X86
__attribute__((target("avx2,fma"))) static float chains_avx2(int64_t iters)
{
    const __m256 m = _mm256_set1_ps(FMA_M), c = _mm256_set1_ps(FMA_C);
    __m256 a[FMAPEAK_ACC];
    for (int k = 0; k < FMAPEAK_ACC; k++)
        a[k] = _mm256_set1_ps((float)k * 1e-3f);
    for (int64_t i = 0; i < iters; i++) {
        a[0] = _mm256_fmadd_ps(a[0], m, c);
        a[1] = _mm256_fmadd_ps(a[1], m, c);
        a[2] = _mm256_fmadd_ps(a[2], m, c);
        a[3] = _mm256_fmadd_ps(a[3], m, c);
        a[4] = _mm256_fmadd_ps(a[4], m, c);
        a[5] = _mm256_fmadd_ps(a[5], m, c);
        a[6] = _mm256_fmadd_ps(a[6], m, c);
        a[7] = _mm256_fmadd_ps(a[7], m, c);
        a[8] = _mm256_fmadd_ps(a[8], m, c);
        a[9] = _mm256_fmadd_ps(a[9], m, c);
        a[10] = _mm256_fmadd_ps(a[10], m, c);
        a[11] = _mm256_fmadd_ps(a[11], m, c);
    }
    __m256 s = a[0];
    for (int k = 1; k < FMAPEAK_ACC; k++)
        s = _mm256_add_ps(s, a[k]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[7];
}

__attribute__((target("avx512f"))) static float chains_avx512(int64_t iters)
{
    const __m512 m = _mm512_set1_ps(FMA_M), c = _mm512_set1_ps(FMA_C);
    __m512 a[FMAPEAK_ACC];
    for (int k = 0; k < FMAPEAK_ACC; k++)
        a[k] = _mm512_set1_ps((float)k * 1e-3f);
    for (int64_t i = 0; i < iters; i++) {
        a[0] = _mm512_fmadd_ps(a[0], m, c);
        a[1] = _mm512_fmadd_ps(a[1], m, c);
        a[2] = _mm512_fmadd_ps(a[2], m, c);
        a[3] = _mm512_fmadd_ps(a[3], m, c);
        a[4] = _mm512_fmadd_ps(a[4], m, c);
        a[5] = _mm512_fmadd_ps(a[5], m, c);
        a[6] = _mm512_fmadd_ps(a[6], m, c);
        a[7] = _mm512_fmadd_ps(a[7], m, c);
        a[8] = _mm512_fmadd_ps(a[8], m, c);
        a[9] = _mm512_fmadd_ps(a[9], m, c);
        a[10] = _mm512_fmadd_ps(a[10], m, c);
        a[11] = _mm512_fmadd_ps(a[11], m, c);
    }
    __m512 s = a[0];
    for (int k = 1; k < FMAPEAK_ACC; k++)
        s = _mm512_add_ps(s, a[k]);
    return _mm512_reduce_add_ps(s);
}
#endif

typedef enum { KERNEL_PORTABLE, KERNEL_AVX2, KERNEL_AVX512 } fmapeak_kernel;

static fmapeak_kernel pick_kernel(void)
{
#if FMAPEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return KERNEL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return KERNEL_AVX2;
#endif
    return KERNEL_PORTABLE;
}

static float run_chains(fmapeak_kernel kernel, int64_t iters)
{
#if FMAPEAK_X86
    if (kernel == KERNEL_AVX512)
        return chains_avx512(iters);
    if (kernel == KERNEL_AVX2)
        return chains_avx2(iters);
#endif
    (void)kernel;
    return chains_portable(iters);
}

/* One pass on `threads` threads; returns seconds and sets *team to the threads that ran
 * (OpenMP may grant fewer than asked; without OpenMP it is 1). */
static double pass(fmapeak_kernel kernel, int threads, int64_t iters, int *team)
{
    float total = 0;
    int ran = 0;
    double t0 = timer_now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : total, ran)
#endif
    {
        total += run_chains(kernel, iters);
        ran += 1;
    }
    double t = timer_now() - t0;
    fmapeak_sink = total;
    *team = ran;
    (void)threads;
    return t;
}

int fmapeak_measure(int threads, double seconds, fmapeak_result *out)
{
    if (!out || threads < 1 || !(seconds > 0))
        return -1;
    const fmapeak_kernel kernel = pick_kernel();
    const int lanes = kernel == KERNEL_AVX512 ? 16 : 8;
    /* Grow a pass to >= 20 ms so fork/join and timer costs vanish. */
    int64_t iters = 1 << 14;
    int team = 1;
    double t = pass(kernel, threads, iters, &team);
    while (t < 0.02 && iters < (INT64_C(1) << 40)) {
        iters *= 2;
        t = pass(kernel, threads, iters, &team);
    }
    double best = 0, spent = 0; /* best GFLOP/s */
    for (int r = 0; r < 3 || spent < seconds; r++) {
        t = pass(kernel, threads, iters, &team);
        spent += t;
        double g = 2.0 * lanes * FMAPEAK_ACC * (double)iters * team / t * 1e-9;
        if (g > best)
            best = g;
    }
    out->gflops = best;
    out->threads = team;
    out->kernel = kernel == KERNEL_AVX512 ? "avx512" : kernel == KERNEL_AVX2 ? "avx2" : "portable";
    return 0;
}

/* Memory bandwidth probe (see membw.h): each OpenMP thread streams over its own contiguous
 * slice of a huge, pre-touched, huge-page-advised buffer; best of several passes.
 * The read kernel keeps 8 independent 256-bit accumulators so it never limits the loads. */
#include "membw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define MEMBW_X86 1
#include <immintrin.h>
#else
#define MEMBW_X86 0
#endif

#include "timer.h"

#define MEMBW_BLOCK 256 /* bytes per kernel iteration; slices are whole blocks */
#define MEMBW_ALIGN ((size_t)2 << 20)

/* Keeps the sums alive so the compiler cannot drop the reads. */
static volatile uint64_t membw_sink;

/* Sum of n64 64-bit words (n64 a multiple of 32), eight independent accumulators of 4 lanes
 * each, so at -O3 the compiler emits SSE2 adds with no loop-carried latency chain. */
static uint64_t read_portable(const uint64_t *p, size_t n64)
{
    uint64_t acc[32] = {0};
    for (size_t i = 0; i < n64; i += 32) {
        for (int k = 0; k < 32; k++)
            acc[k] += p[i + (size_t)k];
    }
    uint64_t s = 0;
    for (int k = 0; k < 32; k++)
        s += acc[k];
    return s;
}

#if MEMBW_X86
/* The same sum with explicit AVX2 loads: 8 loads of 32 bytes (4 cache lines) per iteration. */
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint64_t *p, size_t n64)
{
    const __m256i *v = (const __m256i *)(const void *)p;
    size_t nv = n64 / 4;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < nv; i += 8) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + i + 0));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + i + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + i + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + i + 3));
        a4 = _mm256_add_epi64(a4, _mm256_load_si256(v + i + 4));
        a5 = _mm256_add_epi64(a5, _mm256_load_si256(v + i + 5));
        a6 = _mm256_add_epi64(a6, _mm256_load_si256(v + i + 6));
        a7 = _mm256_add_epi64(a7, _mm256_load_si256(v + i + 7));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    a4 = _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7));
    a0 = _mm256_add_epi64(a0, a4);
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)(void *)lanes, a0);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

static int have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

size_t membw_default_bytes(void)
{
    size_t want = (size_t)1 << 30;
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
        double quarter = (double)pages * (double)page / 4.0;
        if ((double)want > quarter)
            want = (size_t)quarter;
    }
    if (want < ((size_t)64 << 20))
        want = (size_t)64 << 20;
    return want / MEMBW_BLOCK * MEMBW_BLOCK;
}

/* Huge-page-advised buffer: 4 KiB pages would add a TLB miss every 4 KiB of the stream and
 * under-measure what a kernel reading large, huge-page-backed KV pages can reach. */
static void *buf_alloc(size_t bytes)
{
    size_t size = (bytes + MEMBW_ALIGN - 1) / MEMBW_ALIGN * MEMBW_ALIGN;
    void *p = aligned_alloc(MEMBW_ALIGN, size);
#ifdef MADV_HUGEPAGE
    if (p)
        madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

/* Slice [*lo, *hi) in bytes of thread t out of T over nblocks blocks. */
static void slice(size_t nblocks, int t, int T, size_t *lo, size_t *hi)
{
    *lo = nblocks * (size_t)t / (size_t)T * MEMBW_BLOCK;
    *hi = nblocks * (size_t)(t + 1) / (size_t)T * MEMBW_BLOCK;
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The team actually running (OpenMP may grant fewer threads than asked): slicing by it
 * keeps every byte of the buffer read exactly once per pass. */
static int team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Write every page (first touch places it on the reading thread's node) with nonzero data:
 * a never-written buffer reads from the shared zero page and measures nothing. */
static void touch(unsigned char *buf, size_t nblocks, int threads)
{
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        size_t lo, hi;
        slice(nblocks, thread_id(), team_size(), &lo, &hi);
        uint64_t *w = (uint64_t *)(void *)(buf + lo);
        size_t n = (hi - lo) / sizeof(uint64_t);
        for (size_t i = 0; i < n; i++)
            w[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
    }
    (void)threads;
}

struct membw_probe {
    membw_kind kind;
    int use_avx2;
    int threads;
    size_t nblocks; /* per buffer */
    unsigned char *src;
    unsigned char *dst; /* MEMBW_COPY only */
};

int membw_probe_new(membw_kind kind, int threads, size_t bytes, membw_probe **out)
{
    if (!out || threads < 1 || kind < MEMBW_READ || kind > MEMBW_COPY)
        return -1;
    *out = NULL;
    /* A copy moves each byte twice: split the budget so both buffers fit in `bytes`. */
    size_t span = kind == MEMBW_COPY ? bytes / 2 : bytes;
    size_t nblocks = span / MEMBW_BLOCK;
    if (nblocks < (size_t)threads)
        return -1;
    membw_probe *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->kind = kind;
    p->threads = threads;
    p->nblocks = nblocks;
#if MEMBW_X86
    p->use_avx2 = kind == MEMBW_READ && have_avx2();
#endif
    p->src = buf_alloc(nblocks * MEMBW_BLOCK);
    if (kind == MEMBW_COPY && p->src)
        p->dst = buf_alloc(nblocks * MEMBW_BLOCK);
    if (!p->src || (kind == MEMBW_COPY && !p->dst)) {
        membw_probe_free(p);
        return -1;
    }
    touch(p->src, nblocks, threads);
    if (p->dst)
        touch(p->dst, nblocks, threads);
    *out = p;
    return 0;
}

void membw_probe_free(membw_probe *probe)
{
    if (!probe)
        return;
    free(probe->dst);
    free(probe->src);
    free(probe);
}

const char *membw_probe_kernel(const membw_probe *probe)
{
    return probe->kind == MEMBW_COPY ? "memcpy" : probe->use_avx2 ? "avx2" : "portable";
}

size_t membw_probe_bytes(const membw_probe *probe)
{
    return probe->nblocks * MEMBW_BLOCK * (probe->kind == MEMBW_COPY ? 2 : 1);
}

double membw_probe_pass(membw_probe *probe)
{
    const membw_kind kind = probe->kind;
    const int use_avx2 = probe->use_avx2, threads = probe->threads;
    const size_t nblocks = probe->nblocks;
    const unsigned char *src = probe->src;
    unsigned char *dst = probe->dst;
    uint64_t total = 0;
    double t0 = timer_now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : total)
#endif
    {
        size_t lo, hi;
        slice(nblocks, thread_id(), team_size(), &lo, &hi);
        const uint64_t *w = (const uint64_t *)(const void *)(src + lo);
        size_t n64 = (hi - lo) / sizeof(uint64_t);
        if (kind == MEMBW_COPY) {
            memcpy(dst + lo, src + lo, hi - lo);
            total += dst[lo];
        }
#if MEMBW_X86
        else if (use_avx2)
            total += read_avx2(w, n64);
#endif
        else
            total += read_portable(w, n64);
    }
    double t = timer_now() - t0;
    membw_sink = total;
    (void)use_avx2;
    (void)threads;
    return (double)membw_probe_bytes(probe) / t * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int membw_measure(membw_kind kind, int threads, size_t bytes, int reps, membw_result *out)
{
    if (!out || reps < 1 || reps > 1000)
        return -1;
    membw_probe *p = NULL;
    double *gbps = malloc((size_t)reps * sizeof(double));
    if (!gbps || membw_probe_new(kind, threads, bytes, &p) != 0) {
        free(gbps);
        return -1;
    }
    membw_probe_pass(p); /* untimed: page tables, thread pool start */
    for (int r = 0; r < reps; r++)
        gbps[r] = membw_probe_pass(p);
    qsort(gbps, (size_t)reps, sizeof(double), cmp_double);
    out->gbps = gbps[reps - 1];
    out->gbps_median = gbps[reps / 2];
    out->bytes = membw_probe_bytes(p);
    out->threads = threads;
    out->reps = reps;
    out->kernel = membw_probe_kernel(p);
    membw_probe_free(p);
    free(gbps);
    return 0;
}

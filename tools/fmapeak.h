/* FMA throughput probe for the ela benchmarks: the baseline that `ela bench attn --mode
 * prefill` divides by on a CPU (DESIGN.md section 8: report GFLOP/s vs the machine's FMA
 * peak). f32 fused multiply-adds on all threads, widest vector ISA this CPU runs. */
#ifndef ELA_TOOLS_FMAPEAK_H
#define ELA_TOOLS_FMAPEAK_H

typedef struct {
    double gflops;      /* best pass: 2 flops per f32 lane per FMA, 1e9 per second */
    int threads;
    const char *kernel; /* "avx512", "avx2", "portable" */
} fmapeak_result;

/* About `seconds` of passes (at least 3) on `threads` threads; keeps the best.
 * Returns 0, or -1 on a bad argument. */
int fmapeak_measure(int threads, double seconds, fmapeak_result *out);

#endif

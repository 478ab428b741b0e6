/* Memory bandwidth probe for the ela benchmarks: the baseline that `ela bench attn --mode
 * decode` divides by (DESIGN.md section 8: decode must reach >= 70% of measured read
 * bandwidth). Multi-threaded (OpenMP) streaming passes over a buffer far larger than the LLC. */
#ifndef ELA_TOOLS_MEMBW_H
#define ELA_TOOLS_MEMBW_H

#include <stddef.h>

typedef enum {
    MEMBW_READ = 0,      /* fastest read (sum) kernel this CPU runs: AVX2 when present */
    MEMBW_READ_PORTABLE, /* the same sum written for the baseline ISA, compiler-vectorised */
    MEMBW_COPY           /* memcpy between two buffers; counts bytes read + bytes written */
} membw_kind;

/* An allocated, touched buffer ready for timed passes. Keeping it across a benchmark lets
 * the caller interleave probe passes with the measured work: on a shared (virtualised)
 * host the available bandwidth drifts by 2x within seconds, and a ratio is only fair when
 * both sides saw the same conditions. */
typedef struct membw_probe membw_probe;

/* Default buffer size: 1 GiB (>= 8x any current LLC but 3D V-cache parts), at most a quarter
 * of physical memory, at least 64 MiB. */
size_t membw_default_bytes(void);

/* Allocate `bytes` (split in two for MEMBW_COPY) and touch it with the same `threads` and
 * partition the passes use. Returns 0, or -1 when out of memory or an argument is bad. */
int membw_probe_new(membw_kind kind, int threads, size_t bytes, membw_probe **out);
void membw_probe_free(membw_probe *probe); /* NULL is a no-op */
/* One timed pass; returns its bandwidth in GB/s (1e9 bytes per second). */
double membw_probe_pass(membw_probe *probe);
const char *membw_probe_kernel(const membw_probe *probe); /* "avx2", "portable", "memcpy" */
size_t membw_probe_bytes(const membw_probe *probe);       /* moved per pass */

typedef struct {
    double gbps;        /* best pass */
    double gbps_median; /* median pass */
    size_t bytes;       /* bytes moved per pass (read + written for MEMBW_COPY) */
    int threads;
    int reps;
    const char *kernel;
} membw_result;

/* One-shot measurement: new probe, one untimed pass, `reps` timed passes, free. */
int membw_measure(membw_kind kind, int threads, size_t bytes, int reps, membw_result *out);

#endif

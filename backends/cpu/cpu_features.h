/* CPU feature detection and the SIMD level the CPU backend runs at, chosen once per backend
 * open (ELA_CPU_LEVEL=scalar|neon|avx2|avx512 forces one, e.g. to test each in turn). */
#ifndef ELA_CPU_FEATURES_H
#define ELA_CPU_FEATURES_H

#include "attn_kernels.h"
#include "ela.h"

typedef enum { CPU_LEVEL_SCALAR, CPU_LEVEL_NEON, CPU_LEVEL_AVX2, CPU_LEVEL_AVX512 } cpu_level;

typedef struct {
    char model[128];    /* "AMD EPYC 9654 96-Core Processor" */
    char features[160]; /* space-separated features ela uses, e.g. "avx2 fma f16c avx512f" */
    int level_ok[4];    /* indexed by cpu_level: nonzero when this CPU (and OS) can run it */
    cpu_level best;
} cpu_info;

/* Detect once; cheap to call again. */
const cpu_info *cpu_detect(void);
const char *cpu_level_name(cpu_level level);
/* The level to run at: ELA_CPU_LEVEL if set (error when unknown or not supported here),
 * else the best the CPU has. */
ela_status cpu_level_choose(cpu_level *out);
const cpu_attn_kernels *cpu_level_kernels(cpu_level level);
/* Worker threads: ELA_THREADS if set (error when not a positive integer), else all cores. */
ela_status cpu_thread_count(int *out);

#endif

/* The thread count the ela CPU backend uses, as the tools report it and give to the memory
 * bandwidth probe (so the probe and the measured kernel run on the same threads). Mirrors
 * the backend's rule; an ELA_THREADS the backend rejects makes the backend fail to open. */
#include <stdlib.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "cli_args.h"

int cli_threads(const char **source)
{
    const char *env = getenv("ELA_THREADS");
    int64_t n = 0;
    if (env && cli_parse_i64(env, 1, 65536, &n) == 0) {
        if (source)
            *source = "ELA_THREADS";
        return (int)n;
    }
#ifdef _OPENMP
    /* The CPU backend's default (backends/cpu/cpu_features.c): every processor OpenMP may
     * use, OMP_NUM_THREADS notwithstanding. */
    if (source)
        *source = "cores";
    return omp_get_num_procs();
#else
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (source)
        *source = "cores";
    return cores > 0 ? (int)cores : 1;
#endif
}

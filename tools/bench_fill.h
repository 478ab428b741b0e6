/* Deterministic random inputs for the ela benchmarks: fills a packed backend tensor with
 * uniform values in [-1, 1) from a fixed seed, through the caller's host staging buffer. */
#ifndef ELA_TOOLS_BENCH_FILL_H
#define ELA_TOOLS_BENCH_FILL_H

#include <stdint.h>

#include "ela.h"

/* Staging buffer size (floats) that bench_fill_uniform works best with: 16 MiB. */
#define BENCH_FILL_SCRATCH ((int64_t)1 << 22)

/* `t` must be packed row-major (as from ela_tensor_new with NULL strides). It is written
 * through views of whole innermost rows, at most scratch_count elements at a time, so
 * `scratch` must hold at least one innermost row (ELA_ERR_INVALID_ARG otherwise, with no
 * library message). The same seed gives the same values on every backend and dtype
 * (before rounding to the dtype). */
ela_status bench_fill_uniform(ela_tensor *t, uint64_t seed, float *scratch,
                              int64_t scratch_count);

#endif

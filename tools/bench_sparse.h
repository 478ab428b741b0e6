/* `ela bench sparse`: a prefill or decode policy against our dense attention on the same
 * structured inputs (bench_sparse_input.c), reporting speedup, sparsity, error and the share
 * of time spent selecting. */
#ifndef ELA_TOOLS_BENCH_SPARSE_H
#define ELA_TOOLS_BENCH_SPARSE_H

#include <stdint.h>

#include "ela.h"

/* Fills q [L, Hq, d] (rows at positions q_pos0 + i), k and v [Hkv, n, d], packed, with the
 * structured inputs described in bench_sparse_input.c. */
ela_status bench_sparse_fill(ela_tensor *q, ela_tensor *k, ela_tensor *v, int64_t q_pos0,
                             uint64_t seed);

#endif

/* Float64 scalar reference of ela_attn_nsa (include/ela.h, PAPERS.md 4.3 steps 6-7): for each
 * query row i (t = q_pos0 + i) and query head h, exact softmax attention over the keys j <= t
 * (j < n) of the blocks listed in blocks[i, h / G, :] (all keys j <= t when blocks is NULL),
 * multiplied by gate[i, h]. */
#ifndef ELA_TESTS_REF_ATTN_NSA_REF_H
#define ELA_TESTS_REF_ATTN_NSA_REF_H

#include <stdint.h>

#include "nsa_select_ref.h"

/* q, o: packed [L, hq, d]; k, v: packed [hkv, n, d]; blocks: packed [L, hkv, top] (entries -1
 * ignored, others in [0, ceil(n / block)) and distinct per list) or NULL; gate: packed [L, hq]
 * or NULL (1). A row whose blocks hold no visible key gets o = 0. Returns 0, or -1 when the
 * shape or a block list is invalid or memory runs out. */
int ref_attn_nsa(const ref_nsa_shape *s, const double *q, const double *k, const double *v,
                 const int32_t *blocks, const double *gate, double *o);

#endif

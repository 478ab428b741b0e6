/* One key tile of the CPU attention drivers (attn_dense.c, attn_blocks.c). */
#ifndef ELA_CPU_ATTN_TILE_H
#define ELA_CPU_ATTN_TILE_H

#include <stdint.h>

#include "attn_kernels.h"

/* A driver's rows and the tile in its scratch: R rows of q (pre-scaled, dp floats each), their
 * O accumulators, online-softmax state and positions (ascending with the row), and the f32 K
 * and V of the tile's keys. */
typedef struct {
    const float *Q, *K, *V;
    float *O, *S, *m, *l, *alpha;
    const int64_t *pos;
    int64_t R, dp;
} cpu_attn_tile;

/* S = Q K^T -> causal mask (causal: a row sees keys up to its position) -> online softmax ->
 * O = alpha O + P V for keys j0 .. j0 + nk - 1 of the tile. */
void cpu_attn_tile_run(const cpu_attn_kernels *kern, const cpu_attn_tile *t, int64_t j0,
                       int64_t nk, int causal);

#endif

/* Float64 scalar reference of ela_attn_blocks (include/ela.h, DESIGN.md 4.2, PAPERS.md 1.4):
 * causal softmax attention where each query head sees only the 128-key blocks its mode allows
 * (DENSE every block, STREAMING sink + local blocks, MASK the blocks its mask keeps plus the
 * diagonal). Written to be obviously right, not fast: one key at a time, two passes per row. */
#ifndef ELA_TESTS_REF_ATTN_BLOCKS_REF_H
#define ELA_TESTS_REF_ATTN_BLOCKS_REF_H

#include <stdint.h>

#define REF_BLOCK 128

enum { REF_HEAD_DENSE = 0, REF_HEAD_STREAMING = 1, REF_HEAD_MASK = 2 }; /* as ela_head_kind */

typedef struct {
    int kind;
    int sink_blocks, local_blocks; /* STREAMING */
    int mask;                      /* MASK: index into masks' first dim */
} ref_head_mode;

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0; /* multiple of REF_BLOCK */
    double scale;   /* 0 means 1/sqrt(d) */
    int64_t n_masks;
} ref_attn_blocks_shape;

/* Key block J is visible to absolute query block M of a head in mode md; mask_row is that
 * head's mask row for M (nkb bytes) or NULL unless MASK. Causal: J > M is never visible. */
int ref_block_visible(const ref_head_mode *md, const uint8_t *mask_row, int64_t M, int64_t J);

/* q, o packed [L, hq, d]; k, v packed [hkv, n, d]; modes [hq]; masks packed u8
 * [n_masks, nqb, nkb] (nqb = ceil(L / 128), nkb = ceil(n / 128)) or NULL; lse [L, hq] or NULL.
 * Row i (position q_pos0 + i) of head h sees key j when j <= q_pos0 + i, j < n and j's block
 * is visible; a row that sees nothing gets o = 0, lse = -inf. Returns 0, or -1 on bad input. */
int ref_attn_blocks(const ref_attn_blocks_shape *s, const double *q, const double *k,
                    const double *v, const ref_head_mode *modes, const uint8_t *masks, double *o,
                    double *lse);

#endif

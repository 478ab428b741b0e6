/* Float64 scalar reference of ela_nsa_select (include/ela.h, PAPERS.md 4.3 steps 2-5): SSA/NSA
 * block selection per query token and KV head, straight from the spec: mean-pooled complete
 * blocks, per-head softmax over the NC = (t + 1) / B complete blocks, group-summed probabilities
 * of the blocks before the current one, current block first, then by descending score (ties:
 * lower block first). No tiling, no sharing of work between rows. */
#ifndef ELA_TESTS_REF_NSA_SELECT_REF_H
#define ELA_TESTS_REF_NSA_SELECT_REF_H

#include <stdint.h>

typedef struct {
    int64_t L;      /* query rows */
    int64_t n;      /* keys; q_pos0 + L <= n */
    int64_t d;      /* head dim */
    int hq, hkv;    /* query heads, KV heads (hq % hkv == 0) */
    int64_t q_pos0; /* position of query row 0 */
    double scale;   /* softmax scale; 0 means 1/sqrt(d) */
    int block, top; /* B >= 1, S >= 1 */
} ref_nsa_shape;

/* Number of score columns ref_nsa_select writes per (row, KV head): n / block + 1. */
int64_t ref_nsa_score_cols(const ref_nsa_shape *s);

/* q: packed [L, hq, d]; k: packed [hkv, n, d]. blocks: packed [L, hkv, top], kept blocks as
 * in ela.h, -1 past the kept count. scores (optional, NULL to skip): packed
 * [L, hkv, ref_nsa_score_cols]: the group-summed score s[c] of each candidate c < t / B,
 * +inf for the current block t / B (forced), NaN past it. Returns 0, or -1 when the shape is
 * invalid or memory runs out. */
int ref_nsa_select(const ref_nsa_shape *s, const double *q, const double *k, int32_t *blocks,
                   double *scores);

#endif

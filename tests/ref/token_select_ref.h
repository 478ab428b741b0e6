/* Float64 scalar reference of ela_token_select (include/ela.h, PAPERS.md 2.3): Token Sparse
 * Attention's Dynamic Token Coverage selection, written straight from the spec (no tiling, no
 * online softmax). It also reports how far the inputs are from a near-tie at each cut-off, so a
 * test can tell a decision that f32 rounding may flip from a real difference. */
#ifndef ELA_TESTS_REF_TOKEN_SELECT_REF_H
#define ELA_TESTS_REF_TOKEN_SELECT_REF_H

#include <stdint.h>

typedef struct {
    int64_t L, d;     /* tokens (queries and keys), head dim */
    int hq, hkv;      /* query heads, KV heads (hq % hkv == 0) */
    int window, pool; /* w >= 1, odd pool >= 1 */
    double coverage;  /* tau in [0, 1) */
    int64_t min_keep; /* >= 0 */
    double scale;     /* softmax scale; 0 means 1/sqrt(d) */
} ref_token_select_shape;

typedef struct {
    int dense;          /* every head keeps 0..L-1 */
    int64_t n_drop0;    /* #{c < tau} (before the +1); -1 when dense because L is short */
    int64_t n_keep;     /* kept prefix tokens per head; L - w (or L when short) when dense */
    /* Relative distance of tau from the cumulative sums around it:
     * min(tau - c[n_drop0 - 1], c[n_drop0] - tau) / tau over the sides that exist; +inf when
     * L is short or tau is 0 (nothing can be dropped then). */
    double tau_margin;
    /* Min over heads of (v[n_keep - 1] - v[n_keep]) / v[n_keep - 1] with v a head's normalised
     * pooled scores sorted descending (0 when they tie); +inf when dense. */
    double topk_margin;
} ref_token_select_info;

/* q: packed [L, hq, d]; k: packed [hkv, L, d]. idx: packed [hq, L] i32, first *n_sel columns
 * written. info may be NULL. Returns 0, or -1 when the shape is invalid or memory runs out. */
int ref_token_select(const ref_token_select_shape *s, const double *q, const double *k,
                     int32_t *idx, int64_t *n_sel, ref_token_select_info *info);

#endif

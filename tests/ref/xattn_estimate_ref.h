/* Float64 scalar reference of ela_xattn_estimate (include/ela.h, DESIGN.md 4.3, PAPERS.md 5.1):
 * XAttention's antidiagonal block selection, computed straight from the definition with one
 * reduced score at a time. Also reports how close the selection came to a tie, so tests can
 * skip inputs where float rounding could legitimately flip a block. */
#ifndef ELA_TESTS_REF_XATTN_ESTIMATE_REF_H
#define ELA_TESTS_REF_XATTN_ESTIMATE_REF_H

#include <stdint.h>

typedef struct {
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;  /* multiple of 128 */
    double scale;    /* 0 means 1/sqrt(d); the reduced scores use scale / stride */
    int stride;      /* S, divides 128 */
    double threshold;
} ref_xattn_shape;

/* q packed [L, hq, d]; k packed [hkv, n, d]; heads [n_heads]. Writes masks (packed u8
 * [n_heads, nqb, nkb], 1 kept / 0) and, when not NULL: *kept (kept causal blocks over all
 * heads), mass (packed [n_heads, nqb, nkb], the block sums A[I, J]) and *margin: the smallest,
 * over every head and query block, of (a) |cumulative mass - threshold * row mass| at each
 * comparison the greedy selection made and (b) the mass gap between the last block taken and
 * the first block left, both divided by the row mass. Returns 0, or -1 on bad input.
 *
 * Definition: reduced query row m (queries mS .. mS+S-1 of the chunk, absolute reduced row
 * q_pos0 / S + m) and reduced key column c: R[m, c] = sum_{i<S} q[mS+S-1-i] . k[cS+i], rows
 * past L or n being zero; softmax over c <= min(abs row, ceil(n/S) - 1) of R * scale / S;
 * A[I, J] = sum of the probabilities with m in query block I and c in key block J. For query
 * block I (absolute M = q_pos0 / 128 + I): key block 0 and block M (when M < nkb) are kept and
 * their mass counted first; the other causal blocks J < min(M, nkb) are taken by descending
 * mass, equal masses by lower J first, while the kept mass is < threshold * sum_J A[I, J]. */
int ref_xattn_estimate(const ref_xattn_shape *s, const double *q, const double *k,
                       const int *heads, int n_heads, uint8_t *masks, int64_t *kept, double *mass,
                       double *margin);

#endif

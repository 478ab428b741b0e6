/* Float64 scalar reference of ela_decode_select (include/ela.h, PAPERS.md 3.2): LessIsMore's
 * rank-major union of per-head top-k with sinks and a recency window. Straight from the spec:
 * all logits, a full sort per head, the union walked rank by rank. */
#ifndef ELA_TESTS_REF_DECODE_SELECT_REF_H
#define ELA_TESTS_REF_DECODE_SELECT_REF_H

#include <stdint.h>

/* The budget split for K_b = min(n, budget) < n (ela.h): k_mid = floor(K_b (1 - recent)),
 * exact in integers when 4 recent is an integer, else in double with an allowance of K_b 1e-7;
 * n_rec = K_b - k_mid; sinks' = 0 when n_rec < sinks, else sinks, taken out of n_rec. */
void ref_decode_select_split(int64_t kb, float recent, int sinks, int64_t *k_mid, int64_t *n_rec,
                             int64_t *sinks_used);

/* q: packed [hq, d]; k: packed [hkv, n, d]; scale 0 means 1/sqrt(d). Writes idx[0..*count) and
 * *count = min(budget, n); logits (optional, packed [hq, n]) gets scale * q_h . k_{h/G, j} for
 * every key. Ranking per head: logit descending, then index ascending. Returns 0, or -1 on bad
 * arguments or allocation failure. */
int ref_decode_select(int hq, int hkv, int64_t n, int64_t d, const double *q, const double *k,
                      double scale, int64_t budget, float recent, int sinks, int64_t *idx,
                      int64_t *count, double *logits);

/* How clear the reference's ranking is: the smallest gap between neighbours in a head's top
 * k_mid + 1 candidate logits (packed [hq, n], as ref_decode_select writes them), in units of
 * the f32 error bound of a logit, (d + 2) 2^-24 max_j sum_c |q_c k_c| / sqrt(d); +inf when
 * nothing is ranked (budget >= n), 0 when out of memory. */
double ref_decode_select_margin(int hq, int hkv, int64_t n, int64_t d, int64_t budget,
                                float recent, int sinks, const double *logits, const double *q,
                                const double *k);

#endif

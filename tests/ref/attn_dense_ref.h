/* Float64 scalar reference of ela_attn_dense (include/ela.h, DESIGN.md 4.1): exact softmax
 * attention, causal with an absolute query offset or not, GQA, optional log-sum-exp. Written to
 * be obviously right, not fast: two passes (max, then sum) per query row and head. */
#ifndef ELA_TESTS_REF_ATTN_DENSE_REF_H
#define ELA_TESTS_REF_ATTN_DENSE_REF_H

#include <stdint.h>

typedef struct {
    int64_t L;      /* query rows */
    int64_t n;      /* keys */
    int64_t d;      /* head dim */
    int hq, hkv;    /* query heads, KV heads (hq % hkv == 0) */
    int causal;     /* nonzero: row i (position q_pos0 + i) sees keys j <= q_pos0 + i */
    int64_t q_pos0; /* ignored when not causal */
    double scale;   /* softmax scale; 0 means 1/sqrt(d) */
} ref_attn_dense_shape;

/* q: packed [L, hq, d]; k, v: packed [hkv, n, d]; o: packed [L, hq, d]; lse: packed [L, hq]
 * natural-log sum of exp of the scaled scores, or NULL. A row that sees no key (only possible
 * with n = 0) gets o = 0 and lse = -inf. Returns 0, or -1 when the shape is invalid. */
int ref_attn_dense(const ref_attn_dense_shape *s, const double *q, const double *k, const double *v,
                   double *o, double *lse);

#endif

/* Float64 scalar reference of ela_attn_token_sparse (include/ela.h, PAPERS.md 2.4): per query
 * head, attention among its selected rows (compressed causal mask), scattered into an output
 * whose other rows are zero for that head. Written to be obviously right, not fast. */
#ifndef ELA_TESTS_REF_ATTN_TOKEN_SPARSE_REF_H
#define ELA_TESTS_REF_ATTN_TOKEN_SPARSE_REF_H

#include <stdint.h>

typedef struct {
    int64_t L, d;  /* tokens (queries and keys), head dim */
    int hq, hkv;   /* query heads, KV heads (hq % hkv == 0) */
    int causal;    /* nonzero: selected row i' sees selected keys j' <= i' */
    double scale;  /* softmax scale; 0 means 1/sqrt(d) */
} ref_attn_token_sparse_shape;

/* q: packed [L, hq, d]; k, v: packed [hkv, L, d]; idx: packed [hq, n_sel] i32, each row strictly
 * ascending in [0, L); o: packed [L, hq, d]. Returns 0, or -1 when the shape or idx is invalid
 * or memory runs out. */
int ref_attn_token_sparse(const ref_attn_token_sparse_shape *s, const double *q, const double *k,
                          const double *v, const int32_t *idx, int64_t n_sel, double *o);

#endif

/* Float64 reference of ela_attn_gather (include/ela.h, DESIGN.md 4.8): each query row attends
 * to the keys its head's index list names (one list shared by all heads, or one per KV head),
 * and when causal only to those at or before its position. Obviously right, not fast. */
#ifndef ELA_TESTS_REF_ATTN_GATHER_REF_H
#define ELA_TESTS_REF_ATTN_GATHER_REF_H

#include <stdint.h>

#include "ref/attn_dense_ref.h"

/* s: the shape as for ref_attn_dense; idx: packed [lists, m] with lists 1 (shared) or s->hkv
 * (per KV head). q, k, v, o, lse packed as in ref_attn_dense; lse may be NULL. A row that sees
 * no key gets o = 0 and lse = -inf. Returns 0, or -1 for an invalid shape. */
int ref_attn_gather(const ref_attn_dense_shape *s, const int32_t *idx, int lists, int64_t m,
                    const double *q, const double *k, const double *v, double *o, double *lse);

#endif

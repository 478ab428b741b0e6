/* Float64 scalar reference of ela_router_eval (include/ela.h, PAPERS.md 1.3): boundary pooling
 * of pre-RoPE keys, Task MLP, Router MLP, full = logit 1 > logit 0. Straight from the spec. */
#ifndef ELA_TESTS_REF_ROUTER_EVAL_REF_H
#define ELA_TESTS_REF_ROUTER_EVAL_REF_H

#include <stdint.h>

/* Weights of one layer, PyTorch Linear layout (weight [out, in] row-major, bias [out]). */
typedef struct {
    const double *task_w1, *task_b1; /* [hid, d], [hid] */
    const double *task_w2, *task_b2; /* [d, hid], [d] */
    const double *route_w1, *route_b1; /* [hid, d], [hid] */
    const double *route_w2, *route_b2; /* [d, hid], [d] */
    const double *route_w3, *route_b3; /* [2, d], [2] */
} ref_router_weights;

/* k_pre: packed [hkv, L, d]. Writes full[hkv] (1 = FULL attention) and logits[hkv, 2] (may be
 * NULL). Returns 0, or -1 on bad sizes or allocation failure. */
int ref_router_eval(int hkv, int64_t L, int64_t d, int64_t hid, const double *k_pre,
                    const ref_router_weights *w, int *full, double *logits);

#endif

/* Token sampling for ela_generate (DESIGN.md 5): greedy, or temperature -> top-k -> top-p
 * (nucleus) -> a draw from a seeded generator, in that order as in HF transformers' logits
 * warpers. Deterministic for a given seed. */
#include "core/model/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"

/* splitmix64: small, fast, and a good stream from any seed (including 0). */
static uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *state) { return (double)(next_u64(state) >> 11) * 0x1.0p-53; }

int32_t sampler_argmax(const float *logits, int64_t vocab) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return (int32_t)best;
}

typedef struct {
    float logit;
    int32_t id;
} candidate;

/* Descending logit; equal logits by ascending id so the order is total. */
static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

ela_status sampler_sample(const float *logits, int64_t vocab, const ela_generate_params *p,
                          uint64_t *rng, int32_t *out) {
    if (p->temperature <= 0.0f) {
        *out = sampler_argmax(logits, vocab);
        return ELA_OK;
    }
    candidate *c = ela_calloc((size_t)vocab, sizeof *c);
    if (!c)
        return ela_fail(ELA_ERR_OOM, "ela_generate: out of host memory for sampling");
    int64_t n = vocab;
    for (int64_t i = 0; i < vocab; i++) {
        c[i].logit = logits[i] / p->temperature;
        c[i].id = (int32_t)i;
    }
    qsort(c, (size_t)n, sizeof *c, by_logit_desc);
    if (p->top_k > 0 && p->top_k < n)
        n = p->top_k;
    /* Softmax over the survivors, from the largest logit for stability. */
    double total = 0.0;
    double *prob = ela_calloc((size_t)n, sizeof *prob);
    if (!prob) {
        ela_free(c);
        return ela_fail(ELA_ERR_OOM, "ela_generate: out of host memory for sampling");
    }
    for (int64_t i = 0; i < n; i++) {
        prob[i] = exp((double)c[i].logit - (double)c[0].logit);
        total += prob[i];
    }
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        /* Keep the smallest prefix whose mass reaches top_p (always at least one token). */
        double mass = 0.0;
        int64_t keep = 0;
        while (keep < n) {
            mass += prob[keep] / total;
            keep++;
            if (mass >= p->top_p)
                break;
        }
        n = keep;
        total = 0.0;
        for (int64_t i = 0; i < n; i++)
            total += prob[i];
    }
    double r = next_unit(rng) * total, acc = 0.0;
    int32_t pick = c[n - 1].id;
    for (int64_t i = 0; i < n; i++) {
        acc += prob[i];
        if (r < acc) {
            pick = c[i].id;
            break;
        }
    }
    ela_free(prob);
    ela_free(c);
    *out = pick;
    return ELA_OK;
}

/* Token sampling (core/model/sampler.c), used by ela_generate. */
#ifndef ELA_MODEL_SAMPLER_H
#define ELA_MODEL_SAMPLER_H

#include <stdint.h>

#include "ela.h"

/* Index of the largest logit (the first one on ties). */
int32_t sampler_argmax(const float *logits, int64_t vocab);

/* One token from logits [vocab] under p's temperature / top_k / top_p; *rng is the generator
 * state (seeded from p->seed) and advances by one draw. */
ela_status sampler_sample(const float *logits, int64_t vocab, const ela_generate_params *p,
                          uint64_t *rng, int32_t *out);

#endif

/* RoPE frequencies of ela_rope_params (linear, Llama 3.1 and YaRN scaling, GGUF freq_factors),
 * computed once in the core for every backend, in double as HF transformers does in float32
 * and llama.cpp in float: positions reach 2^18 and more, where f32 angles drift. */
#ifndef ELA_CORE_OPS_ROPE_FREQS_H
#define ELA_CORE_OPS_ROPE_FREQS_H

#include "ela.h"

/* inv[i], i < n_rot / 2 (p->n_rot resolved, > 0): the angle per position of pair i.
 * *attn_scale: the factor cos and sin are multiplied by (1 unless YaRN). */
void rope_inv_freqs(const ela_rope_params *p, double *inv, double *attn_scale);

#endif

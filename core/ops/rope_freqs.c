/* RoPE frequencies (core/ops/rope_freqs.h), from HF transformers' modeling_rope_utils. */
#include "core/ops/rope_freqs.h"

#include <math.h>

void rope_inv_freqs(const ela_rope_params *p, double *inv, double *attn_scale) {
    int half = p->n_rot / 2;
    const double two_pi = 6.283185307179586476925286766559;
    *attn_scale = 1.0;
    for (int i = 0; i < half; i++) {
        double f = pow((double)p->theta, -2.0 * i / (double)p->n_rot);
        if (p->scaling == ELA_ROPE_SCALING_LINEAR) {
            f /= (double)p->factor;
        } else if (p->scaling == ELA_ROPE_SCALING_LLAMA3) {
            double old = (double)p->original_max_position, lo = p->low_freq_factor,
                   hi = p->high_freq_factor, factor = p->factor;
            double wavelen = two_pi / f;
            if (wavelen < old / hi) {
                /* high frequency: unchanged */
            } else if (wavelen > old / lo) {
                f /= factor;
            } else {
                double smooth = (old / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }
        }
        if (p->freq_factors)
            f /= (double)p->freq_factors[i];
        inv[i] = f;
    }
}

/* RoPE frequencies (core/ops/rope_freqs.h), from HF transformers' modeling_rope_utils. */
#include "core/ops/rope_freqs.h"

#include <math.h>

/* YaRN: per pair i, base^(-2i/n) kept ("extrapolated") where the pair turns more than
 * beta_fast times over the original window, divided by factor ("interpolated") where fewer
 * than beta_slow, linearly mixed between. The ramp's ends are pair indices: the pair whose
 * frequency turns `rot` times in `orig` positions is n ln(orig / (2 pi rot)) / (2 ln base). */
static void yarn(const ela_rope_params *p, double *inv, double *attn_scale) {
    const double two_pi = 6.283185307179586476925286766559;
    int n = p->n_rot, half = n / 2;
    double base = p->theta, factor = p->factor, orig = (double)p->original_max_position;
    double fast = p->beta_fast > 0.0f ? p->beta_fast : 32.0;
    double slow = p->beta_slow > 0.0f ? p->beta_slow : 1.0;
    double lo = n * log(orig / (two_pi * fast)) / (2.0 * log(base));
    double hi = n * log(orig / (two_pi * slow)) / (2.0 * log(base));
    if (!p->no_truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = lo > 0.0 ? lo : 0.0;
    hi = hi < n - 1 ? hi : n - 1;
    if (lo == hi)
        hi += 0.001;
    for (int i = 0; i < half; i++) {
        double f = pow(base, -2.0 * i / (double)n);
        double ramp = ((double)i - lo) / (hi - lo); /* 0: keep, 1: interpolate */
        ramp = ramp < 0.0 ? 0.0 : ramp > 1.0 ? 1.0 : ramp;
        inv[i] = f * (1.0 - ramp) + f / factor * ramp;
    }
    *attn_scale = p->attn_factor > 0.0f ? p->attn_factor
                  : factor <= 1.0       ? 1.0
                                        : 0.1 * log(factor) + 1.0;
}

void rope_inv_freqs(const ela_rope_params *p, double *inv, double *attn_scale) {
    int half = p->n_rot / 2;
    const double two_pi = 6.283185307179586476925286766559;
    *attn_scale = 1.0;
    if (p->scaling == ELA_ROPE_SCALING_YARN)
        yarn(p, inv, attn_scale);
    for (int i = 0; i < half; i++) {
        double f = p->scaling == ELA_ROPE_SCALING_YARN
                       ? inv[i]
                       : pow((double)p->theta, -2.0 * i / (double)p->n_rot);
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

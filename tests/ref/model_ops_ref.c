/* Float64 references of the model ops (see model_ops_ref.h). */
#include "model_ops_ref.h"

#include <math.h>

void ref_matmul(const float *x, const float *w, const float *bias, int64_t M, int64_t N,
                int64_t K, double *y) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? (double)bias[n] : 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)x[m * K + k] * (double)w[n * K + k];
            y[m * N + n] = s;
        }
}

double ref_f16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static double block_scale(const uint8_t *blk) {
    return ref_f16_value((uint16_t)(blk[0] | blk[1] << 8)); /* little-endian f16 */
}

void ref_q8_0_dequantize(const uint8_t *blocks, int64_t n, float *out) {
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = blocks + b * 34;
        float d = (float)block_scale(blk);
        for (int i = 0; i < 32; i++)
            out[b * 32 + i] = d * (float)(int8_t)blk[2 + i];
    }
}

void ref_q8_0_quantize(const float *x, int64_t n, int8_t *q, float *d) {
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++)
            if (fabsf(x[b * 32 + i]) > amax)
                amax = fabsf(x[b * 32 + i]);
        float db = amax / 127.0f;
        float id = db != 0.0f ? 1.0f / db : 0.0f;
        for (int i = 0; i < 32; i++)
            q[b * 32 + i] = (int8_t)roundf(x[b * 32 + i] * id);
        d[b] = db;
    }
}

void ref_matmul_q8_0(const float *x, const uint8_t *w, int64_t w_row_bytes, const float *bias,
                     int64_t M, int64_t N, int64_t K, double *y) {
    int8_t q[32];
    float dx;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? (double)bias[n] : 0.0;
            for (int64_t b = 0; b < K / 32; b++) {
                ref_q8_0_quantize(x + m * K + b * 32, 32, q, &dx);
                const uint8_t *blk = w + n * w_row_bytes + b * 34;
                int64_t isum = 0;
                for (int i = 0; i < 32; i++)
                    isum += (int64_t)q[i] * (int8_t)blk[2 + i];
                s += (double)dx * block_scale(blk) * (double)isum;
            }
            y[m * N + n] = s;
        }
}

void ref_rms_norm(const float *x, const float *w, int64_t rows, int64_t D, double eps, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++)
            ss += (double)x[r * D + i] * (double)x[r * D + i];
        double scale = 1.0 / sqrt(ss / (double)D + eps);
        for (int64_t i = 0; i < D; i++)
            y[r * D + i] = (double)x[r * D + i] * scale * (double)w[i];
    }
}

/* HF's find_correction_dim: the dimension whose pair turns `rotations` times in max_pos. */
static double yarn_correction_dim(double rotations, int dim, double base, double max_pos) {
    const double pi = 3.14159265358979323846;
    return dim * log(max_pos / (rotations * 2.0 * pi)) / (2.0 * log(base));
}

double ref_rope_inv_freq(const ref_rope_params *p, double *inv) {
    const double pi = 3.14159265358979323846;
    double attn = 1.0, low = 0.0, high = 0.0;
    if (p->scaling == REF_ROPE_YARN) {
        double fast = p->beta_fast != 0.0 ? p->beta_fast : 32.0;
        double slow = p->beta_slow != 0.0 ? p->beta_slow : 1.0;
        low = yarn_correction_dim(fast, p->n_rot, p->theta, p->original_max_position);
        high = yarn_correction_dim(slow, p->n_rot, p->theta, p->original_max_position);
        if (p->truncate) {
            low = floor(low);
            high = ceil(high);
        }
        low = fmax(low, 0.0);
        high = fmin(high, (double)(p->n_rot - 1));
        if (low == high)
            high += 0.001;
        attn = p->attn_factor != 0.0 ? p->attn_factor
               : p->factor <= 1.0    ? 1.0
                                     : 0.1 * log(p->factor) + 1.0;
    }
    for (int i = 0; i < p->n_rot / 2; i++) {
        double f = 1.0 / pow(p->theta, (double)(2 * i) / (double)p->n_rot);
        if (p->scaling == REF_ROPE_YARN) {
            double ramp = fmin(fmax(((double)i - low) / (high - low), 0.0), 1.0);
            double extrapolation = 1.0 - ramp; /* HF's inv_freq_extrapolation_factor */
            f = f / p->factor * (1.0 - extrapolation) + f * extrapolation;
        } else if (p->scaling == REF_ROPE_LINEAR) {
            f = f / p->factor;
        } else if (p->scaling == REF_ROPE_LLAMA3) {
            double low_freq_wavelen = p->original_max_position / p->low_freq_factor;
            double high_freq_wavelen = p->original_max_position / p->high_freq_factor;
            double wavelen = 2.0 * pi / f;
            if (wavelen > low_freq_wavelen) {
                f = f / p->factor;
            } else if (!(wavelen < high_freq_wavelen)) { /* medium frequency */
                double smooth = (p->original_max_position / wavelen - p->low_freq_factor) /
                                (p->high_freq_factor - p->low_freq_factor);
                f = (1.0 - smooth) * f / p->factor + smooth * f;
            }
        }
        if (p->freq_factors)
            f /= (double)p->freq_factors[i];
        inv[i] = f;
    }
    return attn;
}

void ref_rope(const float *x, const int32_t *pos, int64_t M, int64_t H, int64_t d,
              const ref_rope_params *p, double *y) {
    double inv[4096];
    int half = p->n_rot / 2;
    double scale = ref_rope_inv_freq(p, inv);
    for (int64_t m = 0; m < M; m++)
        for (int64_t h = 0; h < H; h++) {
            const float *v = x + (m * H + h) * d;
            double *o = y + (m * H + h) * d;
            for (int64_t i = 0; i < d; i++)
                o[i] = v[i];
            for (int i = 0; i < half; i++) {
                double a = (double)pos[m] * inv[i], c = cos(a) * scale, s = sin(a) * scale;
                int i0 = p->interleaved ? 2 * i : i, i1 = p->interleaved ? 2 * i + 1 : i + half;
                o[i0] = (double)v[i0] * c - (double)v[i1] * s;
                o[i1] = (double)v[i0] * s + (double)v[i1] * c;
            }
        }
}

void ref_silu_mul(const float *gate, const float *up, int64_t n, double *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = (double)gate[i] / (1.0 + exp(-(double)gate[i])) * (double)up[i];
}

void ref_add(const float *a, const float *b, int64_t n, double *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = (double)a[i] + (double)b[i];
}

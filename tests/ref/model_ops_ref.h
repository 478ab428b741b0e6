/* Float64 scalar references of the model ops (include/ela.h "Model ops"): matmul (f32-valued
 * weights, and q8_0 blocks with q8_0-quantized activations as ggml computes them), rms_norm,
 * rope (HF rotate_half or interleaved pairs; linear and Llama 3.1 scaling as HF transformers'
 * _compute_llama3_parameters), silu_mul, add, and the q8_0 block format itself. Written to be
 * obviously right, not fast. All arrays are packed row-major. */
#ifndef ELA_TESTS_REF_MODEL_OPS_REF_H
#define ELA_TESTS_REF_MODEL_OPS_REF_H

#include <stdint.h>

/* y [M, N] = x [M, K] . w [N, K]^T + bias [N] (bias may be NULL). */
void ref_matmul(const float *x, const float *w, const float *bias, int64_t M, int64_t N,
                int64_t K, double *y);

/* Exact value of an f16 bit pattern. */
double ref_f16_value(uint16_t h);

/* q8_0 blocks (34 bytes: f16 scale d, then 32 int8 q; value d * q), n a multiple of 32, to
 * floats d * q computed in f32 (exactly what a kernel computes). */
void ref_q8_0_dequantize(const uint8_t *blocks, int64_t n, float *out);

/* ggml's quantize_row_q8_0_ref on n (a multiple of 32) floats, keeping each scale in f32:
 * d = max|x| / 127 (f32), q = roundf(x * (1 / d)) (0 when d is 0). */
void ref_q8_0_quantize(const float *x, int64_t n, int8_t *q, float *d);

/* y [M, N] = x . w^T + bias as the q8_0 matmul computes it: x quantized per 32-block with
 * ref_q8_0_quantize, w [N] rows of K / 32 blocks (w_row_bytes apart), each block product
 * d_x * d_w * sum(q_x * q_w) in float64. */
void ref_matmul_q8_0(const float *x, const uint8_t *w, int64_t w_row_bytes, const float *bias,
                     int64_t M, int64_t N, int64_t K, double *y);

/* y [rows, D] = x / sqrt(mean(x^2) + eps) * w [D]. */
void ref_rms_norm(const float *x, const float *w, int64_t rows, int64_t D, double eps, double *y);

enum { REF_ROPE_NONE = 0, REF_ROPE_LINEAR = 1, REF_ROPE_LLAMA3 = 2, REF_ROPE_YARN = 3 };

typedef struct {
    double theta;
    int n_rot;       /* even, >= 2 */
    int interleaved; /* 0: pairs (i, i + n_rot/2); 1: pairs (2i, 2i + 1) */
    int scaling;     /* REF_ROPE_* */
    double factor, low_freq_factor, high_freq_factor;
    double original_max_position;
    const float *freq_factors; /* [n_rot / 2] divisors applied after scaling, or NULL */
    /* YaRN, as HF transformers' _compute_yarn_parameters (factor, original_max_position too):
     * beta_fast, beta_slow (0: 32, 1), attention factor (0: 0.1 ln(factor) + 1), truncate. */
    double beta_fast, beta_slow, attn_factor;
    int truncate;
} ref_rope_params;

/* The n_rot / 2 inverse frequencies after scaling (linear scaling divides them by factor, which
 * is the same as dividing positions). Returns the factor cos and sin are multiplied by. */
double ref_rope_inv_freq(const ref_rope_params *p, double *inv);

/* y [M, H, d] = x rotated: row m at position pos[m]; dims >= n_rot copied. n_rot <= 8192. */
void ref_rope(const float *x, const int32_t *pos, int64_t M, int64_t H, int64_t d,
              const ref_rope_params *p, double *y);

/* out = silu(gate) * up = gate / (1 + exp(-gate)) * up, and out = a + b. */
void ref_silu_mul(const float *gate, const float *up, int64_t n, double *out);
void ref_add(const float *a, const float *b, int64_t n, double *out);

#endif

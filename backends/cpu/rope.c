/* CPU rope (ela.h "Model ops"): rotary position embedding in place on x [M, H, d]. The
 * frequencies (with linear or Llama 3.1 scaling, as HF transformers' _compute_llama3_parameters)
 * are computed once per call in double; each row's angles pos * inv_freq and their sin/cos are
 * computed in double too (positions reach 2^18 and more, where an f32 angle would be off by
 * 0.01 rad), then shared by all H heads of the row. Pairs are (i, i + n_rot/2) (HF rotate_half)
 * or (2i, 2i + 1) (interleaved); dims >= n_rot are left alone. */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define ROPE_PAR_ROWS 4 /* fewer rows than this: one thread */

static void inv_freqs(const ela_rope_params *p, double *inv) {
    int half = p->n_rot / 2;
    const double two_pi = 6.283185307179586476925286766559;
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

ela_status cpu_rope(void *ctx, const ela_rope_args *a) {
    const cpu_backend *cpu = ctx;
    int half = a->p.n_rot / 2;
    int threads = a->M < ROPE_PAR_ROWS ? 1 : cpu->threads;
    if (threads > a->M)
        threads = (int)a->M;
    /* inv_freq [half] doubles, then per thread cos and sin [half] floats each */
    size_t bytes =
        (size_t)half * sizeof(double) + (size_t)threads * 2 * (size_t)half * sizeof(float);
    double *inv = ela_aligned_alloc(bytes);
    if (!inv)
        return ela_fail(ELA_ERR_OOM, "cpu: rope: out of memory for %d frequencies", half);
    float *tables = (float *)(void *)(inv + half);
    inv_freqs(&a->p, inv);
    const int32_t *pos = (const int32_t *)(const void *)cpu_tensor_data(a->pos);
    char *x = cpu_tensor_data(a->x);
    int64_t s0 = a->x->strides[0], s1 = a->x->strides[1];
    int interleaved = a->p.interleaved;
#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *cs = tables + (size_t)tid * 2 * (size_t)half, *sn = cs + half;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < a->M; m++) {
            double p = (double)pos[m];
            for (int i = 0; i < half; i++) {
                double ang = p * inv[i];
                cs[i] = (float)cos(ang);
                sn[i] = (float)sin(ang);
            }
            for (int h = 0; h < a->H; h++) {
                float *v = (float *)(void *)(x + m * s0 + h * s1);
                if (interleaved) {
                    for (int i = 0; i < half; i++) {
                        float x0 = v[2 * i], x1 = v[2 * i + 1];
                        v[2 * i] = x0 * cs[i] - x1 * sn[i];
                        v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
                    }
                } else {
                    for (int i = 0; i < half; i++) {
                        float x0 = v[i], x1 = v[i + half];
                        v[i] = x0 * cs[i] - x1 * sn[i];
                        v[i + half] = x0 * sn[i] + x1 * cs[i];
                    }
                }
            }
        }
    }
    ela_aligned_free(inv);
    return ELA_OK;
}

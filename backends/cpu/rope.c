/* CPU rope (ela.h "Model ops"): rotary position embedding in place on x [M, H, d]. The
 * frequencies come from the core (core/ops/rope_freqs.h, double); each row's angles
 * pos * inv_freq and their sin/cos (times attn_scale) are computed in double too (positions
 * reach 2^18 and more, where an f32 angle would be off by 0.01 rad), then shared by all H heads
 * of the row. Pairs are (i, i + n_rot/2) (HF rotate_half)
 * or (2i, 2i + 1) (interleaved); dims >= n_rot are left alone. */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define ROPE_PAR_ROWS 4 /* fewer rows than this: one thread */

ela_status cpu_rope(void *ctx, const ela_rope_args *a) {
    const cpu_backend *cpu = ctx;
    int half = a->p.n_rot / 2;
    int threads = a->M < ROPE_PAR_ROWS ? 1 : cpu->threads;
    if (threads > a->M)
        threads = (int)a->M;
    /* per thread cos and sin [half] floats each */
    float *tables = ela_aligned_alloc((size_t)threads * 2 * (size_t)half * sizeof(float));
    if (!tables)
        return ela_fail(ELA_ERR_OOM, "cpu: rope: out of memory for %d frequencies", half);
    const double *inv = a->inv_freq, scale = a->attn_scale;
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
                cs[i] = (float)(cos(ang) * scale);
                sn[i] = (float)(sin(ang) * scale);
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
    ela_aligned_free(tables);
    return ELA_OK;
}

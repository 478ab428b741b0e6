/* CPU router_eval (DESIGN.md 4.4, PAPERS.md 1.3): Elastic Attention's router for one layer.
 * Boundary pooling of the pre-RoPE keys, Task MLP d -> h -> d, Router MLP d -> h -> d -> 2.
 *
 * Cost: the pooling reads 2 min(100, L) rows per KV head (about 200 d elements, independent of
 * L) and the MLPs are 4 h d + 2 d multiply-adds per KV head (0.26 M at d = 128, h = 4d), so the
 * whole op is a few hundred microseconds on one core. The matrix-vector products run all Hkv
 * vectors against each weight row, so each weight row is converted to f32 once (by the SIMD
 * level's load_rows, as are the pooled key rows) and read from L1 by every head; output rows
 * are split over threads only when there is enough work to pay for waking them. Everything
 * accumulates in f32. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define POOL_ROWS 100             /* first and last rows pooled (PAPERS.md 1.3) */
#define LANES 8                   /* partial sums per dot product */
#define PARALLEL_MIN_MACS 4000000 /* ~1 ms on one core: below it waking threads costs more */

static float silu(float x) { return x / (1.0f + expf(-x)); }

static int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

/* y[v, o] = act(b[o] + sum_i W[o, i] x[v, i]) for v < nv vectors, o < n_out; W [n_out, n_in]
 * (row stride from the tensor), b [n_out]. Weight rows and the bias are converted to f32 by the
 * SIMD level's load_rows. `row` is per-thread scratch of threads * round16(n_in) floats, `bias`
 * round16(n_out) floats. */
static void linear(const cpu_attn_kernels *kern, const ela_tensor *W, const ela_tensor *b,
                   const float *x, float *y, int64_t nv, int64_t n_in, int64_t n_out, int act,
                   float *row, float *bias, int threads) {
    const char *wd = cpu_tensor_data(W);
    const int64_t ws = W->strides[0], dpi = round16(n_in);
    kern->load_rows(bias, round16(n_out), cpu_tensor_data(b), 0, b->dtype, 1, n_out);
    int use = nv * n_in * n_out >= PARALLEL_MIN_MACS ? threads : 1;
#pragma omp parallel for num_threads(use) schedule(static) if (use > 1)
    for (int64_t o = 0; o < n_out; o++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *r = row + (int64_t)tid * dpi;
        kern->load_rows(r, dpi, wd + o * ws, ws, W->dtype, 1, n_in);
        for (int64_t v = 0; v < nv; v++) {
            const float *xv = x + v * n_in;
            /* LANES independent partial sums: the compiler keeps them in one vector register */
            float part[LANES] = {0.0f};
            int64_t i = 0;
            for (; i + LANES <= n_in; i += LANES)
                for (int l = 0; l < LANES; l++)
                    part[l] += r[i + l] * xv[i + l];
            float acc = bias[o];
            for (; i < n_in; i++)
                acc += r[i] * xv[i];
            for (int l = 0; l < LANES; l++)
                acc += part[l];
            y[v * n_out + o] = act ? silu(acc) : acc;
        }
    }
}

ela_status cpu_router_eval(void *ctx, const ela_router_eval_args *a) {
    const cpu_backend *cpu = ctx;
    const cpu_attn_kernels *kern = cpu->attn;
    const int64_t L = a->L, d = a->d, hid = a->hidden, hkv = a->hkv;
    int threads = cpu->threads;
    const int64_t width = round16(d > hid ? d : hid), dpd = round16(d);
    const int64_t m = L < POOL_ROWS ? L : POOL_ROWS;
    /* x [hkv, d], h1 [hkv, hid], t [hkv, d], r1 [hkv, hid], r2 [hkv, d], z [hkv, 2], a bias,
     * then either m converted key rows or one converted weight row per thread. */
    int64_t acts = hkv * (3 * d + 2 * hid + 2) + width;
    int64_t rows = m * dpd > threads * width ? m * dpd : threads * width;
    float *mem = ela_aligned_alloc((size_t)(acts + rows) * sizeof(float));
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: router_eval: out of memory for %lld activations",
                        (long long)acts);
    float *x = mem, *h1 = x + hkv * d, *t = h1 + hkv * hid, *r1 = t + hkv * d;
    float *r2 = r1 + hkv * hid, *z = r2 + hkv * d, *bias = z + hkv * 2, *row = bias + width;

    /* Boundary pooling: rows [0, m) and [L - m, L), m = min(100, L); rows in both slices (L < 200)
     * are added twice, so the divisor is always 2 m. */
    const char *kd = cpu_tensor_data(a->k_pre);
    const int64_t s0 = a->k_pre->strides[0], s1 = a->k_pre->strides[1];
    for (int64_t g = 0; g < hkv; g++) {
        float *xg = x + g * d;
        memset(xg, 0, (size_t)d * sizeof(float));
        for (int64_t part = 0; part < 2; part++) {
            int64_t j0 = part ? L - m : 0;
            kern->load_rows(row, dpd, kd + g * s0 + j0 * s1, s1, a->k_pre->dtype, m, d);
            for (int64_t j = 0; j < m; j++)
                for (int64_t c = 0; c < d; c++)
                    xg[c] += row[j * dpd + c];
        }
        float inv = 1.0f / (float)(2 * m);
        for (int64_t c = 0; c < d; c++)
            xg[c] *= inv;
    }

    const ela_router_weights *w = &a->w;
    linear(kern, w->task_w1, w->task_b1, x, h1, hkv, d, hid, 1, row, bias, threads);
    linear(kern, w->task_w2, w->task_b2, h1, t, hkv, hid, d, 0, row, bias, threads);
    linear(kern, w->route_w1, w->route_b1, t, r1, hkv, d, hid, 1, row, bias, threads);
    linear(kern, w->route_w2, w->route_b2, r1, r2, hkv, hid, d, 1, row, bias, threads);
    linear(kern, w->route_w3, w->route_b3, r2, z, hkv, d, 2, 0, row, bias, threads);

    for (int64_t g = 0; g < hkv; g++) {
        /* class 1 is FULL; a tie (argmax picks the first) is sparse */
        a->full[g] = z[2 * g + 1] > z[2 * g];
        if (a->logits) {
            a->logits[2 * g] = z[2 * g];
            a->logits[2 * g + 1] = z[2 * g + 1];
        }
    }
    ela_aligned_free(mem);
    return ELA_OK;
}

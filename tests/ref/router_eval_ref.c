/* Float64 reference of ela_router_eval (see router_eval_ref.h). Per KV head: x = mean of the
 * concatenation of rows [0, m) and [L - m, L), m = min(100, L) (2 m rows, overlap counted twice);
 * t = W2 silu(W1 x + b1) + b2; z = R3 silu(R2 silu(R1 t + rb1) + rb2) + rb3; full = z1 > z0. */
#include <math.h>
#include <stdlib.h>

#include "router_eval_ref.h"

static double silu(double x) { return x / (1.0 + exp(-x)); }

/* y = act(W x + b), W [n_out, n_in]. */
static void linear(const double *W, const double *b, const double *x, double *y, int64_t n_in,
                   int64_t n_out, int act) {
    for (int64_t o = 0; o < n_out; o++) {
        double acc = b[o];
        for (int64_t i = 0; i < n_in; i++)
            acc += W[o * n_in + i] * x[i];
        y[o] = act ? silu(acc) : acc;
    }
}

int ref_router_eval(int hkv, int64_t L, int64_t d, int64_t hid, const double *k_pre,
                    const ref_router_weights *w, int *full, double *logits) {
    if (hkv < 1 || L < 1 || d < 1 || hid < 1 || !k_pre || !w || !full)
        return -1;
    double *x = malloc((size_t)(3 * d + 2 * hid) * sizeof *x);
    if (!x)
        return -1;
    double *h1 = x + d, *t = h1 + hid, *r1 = t + d, *r2 = r1 + hid, z[2];
    const int64_t m = L < 100 ? L : 100;
    for (int g = 0; g < hkv; g++) {
        const double *kh = k_pre + (int64_t)g * L * d;
        for (int64_t c = 0; c < d; c++) {
            double sum = 0.0;
            for (int64_t j = 0; j < m; j++) /* head slice */
                sum += kh[j * d + c];
            for (int64_t j = L - m; j < L; j++) /* tail slice */
                sum += kh[j * d + c];
            x[c] = sum / (double)(2 * m);
        }
        linear(w->task_w1, w->task_b1, x, h1, d, hid, 1);
        linear(w->task_w2, w->task_b2, h1, t, hid, d, 0);
        linear(w->route_w1, w->route_b1, t, r1, d, hid, 1);
        linear(w->route_w2, w->route_b2, r1, r2, hid, d, 1);
        linear(w->route_w3, w->route_b3, r2, z, d, 2, 0);
        full[g] = z[1] > z[0];
        if (logits) {
            logits[2 * g] = z[0];
            logits[2 * g + 1] = z[1];
        }
    }
    free(x);
    return 0;
}

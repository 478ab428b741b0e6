/* CUDA sigmoid_gate (ela.h "Model ops"): x[m, h, :] *= sigmoid(g[m, h * stride + offset]), SSA's
 * output gate. Tiling: grid y walks the (row, head) pairs, x and the threads the head's d
 * elements. Bound: memory. */
#include "cuda_check.h"

#define SG_THREADS 128

typedef struct {
    char *x;
    const char *g;
    int64_t xs0, xs1, gs0; /* bytes */
    int64_t M, d;
    int H, stride, offset;
} sg_params;

__global__ void __launch_bounds__(SG_THREADS) sigmoid_gate_kernel(const sg_params p) {
    for (int64_t t = blockIdx.y; t < p.M * p.H; t += gridDim.y) {
        const int64_t m = t / p.H;
        const int h = (int)(t - m * p.H);
        const float gl = ((const float *)(p.g + m * p.gs0))[(int64_t)h * p.stride + p.offset];
        const float gate = 1.0f / (1.0f + expf(-gl));
        float *x = (float *)(p.x + m * p.xs0 + h * p.xs1);
        for (int64_t i = (int64_t)blockIdx.x * SG_THREADS + threadIdx.x; i < p.d;
             i += (int64_t)gridDim.x * SG_THREADS)
            x[i] *= gate;
    }
}

extern "C" ela_status cuda_sigmoid_gate(void *vctx, const ela_sigmoid_gate_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    sg_params p = {cuda_tensor_ptr(a->x), cuda_tensor_ptr(a->g), a->x->strides[0],
                   a->x->strides[1], a->g->strides[0], a->M, a->d, a->H, a->stride, a->offset};
    int64_t gx = (p.d + SG_THREADS - 1) / SG_THREADS;
    gx = gx > 64 ? 64 : gx;
    const int64_t pairs = p.M * p.H, gy = pairs > 65535 ? 65535 : pairs;
    ctx->generation++;
    sigmoid_gate_kernel<<<dim3((unsigned)gx, (unsigned)gy), SG_THREADS, 0, ctx->stream>>>(p);
    CUDA_LAUNCHED("sigmoid_gate kernel");
    return ELA_OK;
}

/* CUDA get_rows (ela.h "Model ops"): out [M, D] f32 = table [V, D] rows ids[M] (i32, checked
 * against V by the core), the table f32/f16/bf16 widened or q8_0 dequantized (d * q in f32,
 * bit-exact with the CPU). The token embedding.
 * Tiling: grid y walks the ids, grid x and the threads the D columns, one element per thread
 * per pass (coalesced reads of the table row, writes of the output row). Bound: memory. */
#include "cuda_check.h"
#include "model_ops_device.cuh"

#define GR_THREADS 256

typedef struct {
    const char *table;
    const int32_t *ids;
    char *out;
    int64_t ts, os; /* row strides, bytes */
    int64_t M, D;
    int tdt;
} gr_params;

__global__ void __launch_bounds__(GR_THREADS) get_rows_kernel(const gr_params p) {
    for (int64_t m = blockIdx.y; m < p.M; m += gridDim.y) {
        const char *row = p.table + (int64_t)p.ids[m] * p.ts;
        float *o = (float *)(p.out + m * p.os);
        for (int64_t i = (int64_t)blockIdx.x * GR_THREADS + threadIdx.x; i < p.D;
             i += (int64_t)gridDim.x * GR_THREADS)
            o[i] = mo_load(row, p.tdt, i);
    }
}

extern "C" ela_status cuda_get_rows(void *vctx, const ela_get_rows_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    if (a->D == 0)
        return ELA_OK;
    gr_params p;
    p.table = cuda_tensor_ptr(a->table);
    p.ids = (const int32_t *)cuda_tensor_ptr(a->ids);
    p.out = cuda_tensor_ptr(a->out);
    p.ts = a->table->strides[0];
    p.os = a->out->strides[0];
    p.M = a->M;
    p.D = a->D;
    p.tdt = (int)a->table->dtype;
    int64_t gx = (p.D + GR_THREADS - 1) / GR_THREADS;
    gx = gx > 4096 ? 4096 : gx;
    const int64_t gy = p.M > 65535 ? 65535 : p.M;
    ctx->generation++;
    get_rows_kernel<<<dim3((unsigned)gx, (unsigned)gy), GR_THREADS, 0, ctx->stream>>>(p);
    CUDA_LAUNCHED("get_rows kernel");
    return ELA_OK;
}

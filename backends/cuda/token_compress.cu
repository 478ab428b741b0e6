/* CUDA token_compress / token_decompress (ela.h): Token Sparse Attention's gather and scatter
 * as row copies between the full sequence and each query head's compressed one (the core
 * checked every index list). Tiling: grid y walks (head, row) pairs, x and the threads the row's
 * bytes in 4-byte words when the rows and their bases allow it (f32/f16/bf16 rows of even d
 * at aligned offsets), bytes otherwise (q8_0 rows are 34-byte blocks; views at odd offsets).
 * Bound: memory. */
#include "cuda_check.h"

#define TC_THREADS 128

/* Bytes of one row of d elements (q8_0: whole 34-byte blocks of 32; the core checked d). */
static int64_t row_bytes_of(ela_dtype dt, int64_t d) {
    return dt == ELA_Q8_0 ? d / 32 * 34 : dt == ELA_F32 ? 4 * d : 2 * d;
}

typedef struct {
    const char *src;
    char *dst;
    const int32_t *idx;     /* row h of the index lists at idx + h * idx_stride */
    int64_t idx_stride;     /* elements */
    int64_t src_row, src_head, dst_row, dst_head; /* byte strides of a row and a head */
    int64_t rows, row_bytes, G; /* rows per head, bytes per row, query heads per source head */
    int hq, scatter;        /* scatter: dst row idx[h][i] <- src row i (else the reverse) */
} tc_params;

__global__ void __launch_bounds__(TC_THREADS) copy_rows_kernel(const tc_params p) {
    const int64_t pairs = (int64_t)p.hq * p.rows;
    const bool words = ((uintptr_t)p.src | (uintptr_t)p.dst | (uint64_t)p.row_bytes |
                        (uint64_t)p.src_row | (uint64_t)p.dst_row | (uint64_t)p.src_head |
                        (uint64_t)p.dst_head) % 4 == 0;
    for (int64_t t = blockIdx.y; t < pairs; t += gridDim.y) {
        const int h = (int)(t / p.rows);
        const int64_t i = t - (int64_t)h * p.rows;
        const int64_t sel = p.idx[h * p.idx_stride + i];
        const int64_t s_row = p.scatter ? i : sel, d_row = p.scatter ? sel : i;
        const char *s = p.src + s_row * p.src_row + (h / p.G) * p.src_head;
        char *d = p.dst + d_row * p.dst_row + h * p.dst_head;
        if (words) {
            for (int64_t w = (int64_t)blockIdx.x * TC_THREADS + threadIdx.x; w < p.row_bytes / 4;
                 w += (int64_t)gridDim.x * TC_THREADS)
                ((uint32_t *)d)[w] = ((const uint32_t *)s)[w];
        } else {
            for (int64_t b = (int64_t)blockIdx.x * TC_THREADS + threadIdx.x; b < p.row_bytes;
                 b += (int64_t)gridDim.x * TC_THREADS)
                d[b] = s[b];
        }
    }
}

/* Rows of o's head h that its list skips are zero: one pass zeroes every row, then the scatter
 * overwrites the selected ones (same stream, so in order). */
__global__ void __launch_bounds__(TC_THREADS) zero_rows_kernel(char *o, int64_t row, int64_t head,
                                                               int64_t L, int hq,
                                                               int64_t row_bytes) {
    for (int64_t t = blockIdx.y; t < (int64_t)hq * L; t += gridDim.y) {
        char *d = o + (t % L) * row + (t / L) * head;
        for (int64_t b = (int64_t)blockIdx.x * TC_THREADS + threadIdx.x; b < row_bytes;
             b += (int64_t)gridDim.x * TC_THREADS)
            d[b] = 0;
    }
}

static ela_status launch(cuda_ctx *ctx, const tc_params *p) {
    int64_t gx = (p->row_bytes / 4 + TC_THREADS - 1) / TC_THREADS;
    gx = gx < 1 ? 1 : gx > 64 ? 64 : gx;
    const int64_t pairs = (int64_t)p->hq * p->rows;
    const int64_t gy = pairs > 65535 ? 65535 : pairs;
    if (gy == 0)
        return ELA_OK;
    copy_rows_kernel<<<dim3((unsigned)gx, (unsigned)gy), TC_THREADS, 0, ctx->stream>>>(*p);
    CUDA_LAUNCHED("token copy kernel");
    return ELA_OK;
}

extern "C" ela_status cuda_token_compress(void *vctx, const ela_token_compress_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    ctx->generation++;
    const ela_tensor *src[3] = {a->q, a->k, a->v};
    ela_tensor *dst[3] = {a->qc, a->kc, a->vc};
    for (int t = 0; t < 3 && st == ELA_OK; t++) {
        tc_params p;
        p.src = cuda_tensor_ptr(src[t]);
        p.dst = cuda_tensor_ptr(dst[t]);
        p.idx = (const int32_t *)cuda_tensor_ptr(a->idx);
        p.idx_stride = a->idx->strides[0] / 4;
        /* q [L, Hq, d] -> qc [n_sel, Hq, d]; k, v [Hkv, L, d] -> [Hq, n_sel, d] */
        p.src_row = t == 0 ? src[t]->strides[0] : src[t]->strides[1];
        p.src_head = t == 0 ? src[t]->strides[1] : src[t]->strides[0];
        p.dst_row = t == 0 ? dst[t]->strides[0] : dst[t]->strides[1];
        p.dst_head = t == 0 ? dst[t]->strides[1] : dst[t]->strides[0];
        p.rows = a->n_sel;
        p.row_bytes = row_bytes_of(src[t]->dtype, a->d);
        p.G = t == 0 ? 1 : a->hq / a->hkv;
        p.hq = a->hq;
        p.scatter = 0;
        st = launch(ctx, &p);
    }
    return st;
}

extern "C" ela_status cuda_token_decompress(void *vctx, const ela_token_decompress_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    ctx->generation++;
    const int64_t row_bytes = row_bytes_of(a->o->dtype, a->d);
    const int64_t pairs = (int64_t)a->hq * a->L;
    if (pairs > 0) {
        int64_t gx = (row_bytes + TC_THREADS - 1) / TC_THREADS;
        gx = gx < 1 ? 1 : gx > 64 ? 64 : gx;
        zero_rows_kernel<<<dim3((unsigned)gx, (unsigned)(pairs > 65535 ? 65535 : pairs)),
                           TC_THREADS, 0, ctx->stream>>>(cuda_tensor_ptr(a->o), a->o->strides[0],
                                                         a->o->strides[1], a->L, a->hq,
                                                         row_bytes);
        CUDA_LAUNCHED("token zero kernel");
    }
    tc_params p;
    p.src = cuda_tensor_ptr(a->oc);
    p.dst = cuda_tensor_ptr(a->o);
    p.idx = (const int32_t *)cuda_tensor_ptr(a->idx);
    p.idx_stride = a->idx->strides[0] / 4;
    p.src_row = a->oc->strides[0];
    p.src_head = a->oc->strides[1];
    p.dst_row = a->o->strides[0];
    p.dst_head = a->o->strides[1];
    p.rows = a->n_sel;
    p.row_bytes = row_bytes;
    p.G = 1;
    p.hq = a->hq;
    p.scatter = 1;
    return launch(ctx, &p);
}

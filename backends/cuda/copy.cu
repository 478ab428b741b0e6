/* CUDA copy (ela.h "Model ops"): dst = src converted between f32/f16/bf16/q8_0, same extents,
 * any rank and strides (innermost packed), e.g. new keys [Hkv, n, d] appended to a KV cache
 * view [Hkv, cap, d] at a position offset. Bit-exact with the CPU backend (ela_convert):
 * f16/bf16 rounded to nearest even; q8_0 quantized as ggml's quantize_row_q8_0_ref (d = max|x|
 * / 127, q = roundf(x / d) with ties away from zero, d stored as f16) and dequantized as d * q in
 * f32; a copy between equal dtypes moves the bytes.
 * Tiling: grid y walks the rows (outer dims decomposed once per block), grid x and the threads
 * the packed innermost dim, one element per thread (for equal dtypes, one 16-byte word where
 * every row is 16-byte aligned, else one 2-byte word). For a
 * q8_0 destination a warp is one block of 32 elements: max|x| by shuffles, lane 0 writes the
 * scale, every lane its int8. Bound: memory. */
#include "cuda_check.h"
#include "model_ops_device.cuh"

#define COPY_THREADS 256

typedef struct {
    const char *src;
    char *dst;
    mo_rows rs, rd;
    int64_t rows, inner; /* inner: elements per row; when same, 2-byte words (16-byte ones
                            when vec) */
    int sdt, ddt, same, vec;
} copy_params;

__global__ void __launch_bounds__(COPY_THREADS) copy_kernel(const copy_params p) {
    const int lane = threadIdx.x & 31;
    for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
        const char *s = p.src + mo_row_offset(p.rs, r);
        char *d = p.dst + mo_row_offset(p.rd, r);
        /* inner is a multiple of 32 when q8_0 is involved, so a warp's 32 lanes are all in
         * range or all out: the shuffles below always see the full warp. */
        for (int64_t i = (int64_t)blockIdx.x * COPY_THREADS + threadIdx.x; i < p.inner;
             i += (int64_t)gridDim.x * COPY_THREADS) {
            if (p.same) {
                if (p.vec)
                    ((uint4 *)d)[i] = ((const uint4 *)s)[i];
                else
                    ((unsigned short *)d)[i] = ((const unsigned short *)s)[i];
                continue;
            }
            const float v = mo_load(s, p.sdt, i);
            if (p.ddt != MO_Q8_0) {
                mo_store(d, p.ddt, i, v);
                continue;
            }
            /* A NaN element drops out of the max, as on the CPU. */
            const float amax = mo_warp_max(isnan(v) ? 0.0f : fabsf(v));
            const float dq = amax / 127.0f;
            const float id = dq != 0.0f ? 1.0f / dq : 0.0f;
            const float q = roundf(v * id);
            const float qc = isnan(q) ? 0.0f : q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            char *blk = d + (i >> 5) * MO_Q8_BYTES;
            if (lane == 0)
                *(__half *)blk = __float2half_rn(dq);
            blk[2 + lane] = (char)(signed char)qc;
        }
    }
}

extern "C" ela_status cuda_copy(void *vctx, const ela_copy_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    copy_params p;
    p.src = cuda_tensor_ptr(a->src);
    p.dst = cuda_tensor_ptr(a->dst);
    p.rows = mo_rows_of(a->src, &p.rs);
    mo_rows_of(a->dst, &p.rd);
    p.sdt = (int)a->src->dtype;
    p.ddt = (int)a->dst->dtype;
    p.same = p.sdt == p.ddt;
    const int64_t n = a->src->extents[a->src->n_dims - 1];
    if (p.same) {
        const int64_t bytes =
            p.sdt == MO_Q8_0 ? n / 32 * MO_Q8_BYTES : n * (p.sdt == MO_F32 ? 4 : 2);
        /* 16-byte words when every row starts 16-byte aligned and is a multiple of 16 long */
        int64_t align = (int64_t)((uintptr_t)p.src | (uintptr_t)p.dst) | bytes;
        for (int i = 0; i < p.rs.n; i++)
            align |= p.rs.str[i] | p.rd.str[i];
        p.vec = (align & 15) == 0;
        p.inner = p.vec ? bytes / 16 : bytes / 2;
    } else {
        p.vec = 0;
        p.inner = n;
    }
    if (p.rows == 0 || p.inner == 0)
        return ELA_OK;
    int64_t gx = (p.inner + COPY_THREADS - 1) / COPY_THREADS;
    gx = gx > 4096 ? 4096 : gx;
    const int64_t gy = p.rows > 65535 ? 65535 : p.rows;
    ctx->generation++;
    copy_kernel<<<dim3((unsigned)gx, (unsigned)gy), COPY_THREADS, 0, ctx->stream>>>(p);
    CUDA_LAUNCHED("copy kernel");
    return ELA_OK;
}

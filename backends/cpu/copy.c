/* CPU copy (ela.h "Model ops"): dst = src converted between f32/f16/bf16/q8_0, row by row of the
 * last dim (any rank and strides), e.g. new keys [Hkv, n, d] into a KV cache view
 * [Hkv, cap, d] at a position offset. q8_0 rows are quantized or dequantized block by block as
 * ela_convert does. Parallel over rows when large. Bound: memory. */
#include "backend.h"

#define COPY_PAR_ELEMS (1 << 15)

ela_status cpu_copy(void *ctx, const ela_copy_args *a) {
    const cpu_backend *cpu = ctx;
    const ela_tensor *s = a->src;
    int64_t inner = s->extents[s->n_dims - 1];
    int64_t numel = ela_tensor_numel(s);
    int64_t rows = numel / inner;
    int threads = numel < COPY_PAR_ELEMS ? 1 : cpu->threads;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        (void)ela_convert(cpu_tensor_row(a->src, r), a->src->dtype, cpu_tensor_row(a->dst, r),
                          a->dst->dtype, inner);
    return ELA_OK;
}

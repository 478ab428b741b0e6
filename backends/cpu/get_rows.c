/* CPU get_rows (ela.h "Model ops"): out[m] = table[ids[m]] converted to f32 (f16/bf16 widened,
 * q8_0 dequantized). The core checked every id against V. Bound: memory. */
#include "backend.h"

#define GR_PAR_ELEMS (1 << 15)

ela_status cpu_get_rows(void *ctx, const ela_get_rows_args *a) {
    const cpu_backend *cpu = ctx;
    const int32_t *ids = (const int32_t *)(const void *)cpu_tensor_data(a->ids);
    const char *table = cpu_tensor_data(a->table);
    char *out = cpu_tensor_data(a->out);
    int threads = a->M * a->D < GR_PAR_ELEMS ? 1 : cpu->threads;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t m = 0; m < a->M; m++)
        (void)ela_convert(table + ids[m] * a->table->strides[0], a->table->dtype,
                          out + m * a->out->strides[0], ELA_F32, a->D);
    return ELA_OK;
}

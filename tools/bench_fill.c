/* Random tensor fill (see bench_fill.h). A 128K-token KV cache is GiBs: the packed tensor is
 * written through 2-D views [rows, innermost extent] of a few MiB each, so the f32 staging
 * buffer stays small whatever the shape. */
#include "bench_fill.h"

/* splitmix64: a fast, well-mixed stream that is identical on every platform. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

ela_status bench_fill_uniform(ela_tensor *t, uint64_t seed, float *buf, int64_t scratch_count)
{
    int nd = ela_tensor_n_dims(t);
    if (nd < 1 || nd > ELA_MAX_DIMS)
        return ELA_ERR_INVALID_ARG;
    const int64_t last = ela_tensor_extent(t, nd - 1);
    const int64_t rows = ela_tensor_numel(t) / (last > 0 ? last : 1);
    const int64_t row_bytes = (int64_t)ela_dtype_row_bytes(ela_tensor_dtype(t), last); /* q8_0 too */
    if (last < 1 || scratch_count < last)
        return ELA_ERR_INVALID_ARG;
    int64_t chunk_rows = scratch_count / last;
    if (chunk_rows > rows)
        chunk_rows = rows;

    uint64_t state = seed;
    ela_status st = ELA_OK;
    for (int64_t r0 = 0; r0 < rows && st == ELA_OK; r0 += chunk_rows) {
        int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
        int64_t count = nr * last;
        for (int64_t i = 0; i < count; i++)
            buf[i] = (float)((double)(splitmix64(&state) >> 11) * 0x1p-52 - 1.0);
        ela_tensor *view = NULL;
        int64_t vext[2] = {nr, last};
        st = ela_tensor_view(t, 2, vext, NULL, r0 * row_bytes, &view);
        if (st == ELA_OK)
            st = ela_tensor_write_f32(view, buf, count);
        ela_tensor_free(view);
    }
    return st;
}

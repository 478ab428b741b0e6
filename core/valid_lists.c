/* Records of index lists known valid (see valid_lists.h). */
#include "core/valid_lists.h"

void valid_lists_record(const ela_tensor *idx, int64_t count, int64_t n) {
    ela_valid_lists rec = {idx->offset, count > 0 ? count : 0, n};
    idx->buffer->valid = rec;
}

void valid_lists_forget(const ela_tensor *t) {
    if (!t || !t->buffer)
        return;
    ela_valid_lists *rec = &t->buffer->valid;
    if (rec->count == 0)
        return;
    uint64_t lo = t->offset, hi = lo + (uint64_t)ela_tensor_span(t);
    uint64_t rlo = rec->offset, rhi = rlo + (uint64_t)rec->count * sizeof(int32_t);
    if (lo < rhi && rlo < hi)
        rec->count = 0;
}

int valid_lists_cover(const ela_valid_lists *known, const ela_tensor *idx, int64_t m, int64_t n) {
    return known->count > 0 && idx->n_dims == 1 && idx->offset == known->offset &&
           m <= known->count && known->n <= n;
}

/* CPU token_compress / token_decompress (ela.h): row copies between the full sequence and the
 * per-query-head compressed ones. Work items are (head, chunk of rows) so both threads stay busy
 * when there are few heads. Bound: memory. */
#include <string.h>

#include "backend.h"

#define ROWS_PER_ITEM 512

static const int32_t *idx_row(const ela_tensor *idx, int h) {
    return (const int32_t *)(const void *)(cpu_tensor_data(idx) + h * idx->strides[0]);
}

ela_status cpu_token_compress(void *ctx, const ela_token_compress_args *a) {
    const cpu_backend *cpu = ctx;
    const char *q = cpu_tensor_data(a->q), *k = cpu_tensor_data(a->k), *v = cpu_tensor_data(a->v);
    char *qc = cpu_tensor_data(a->qc), *kc = cpu_tensor_data(a->kc), *vc = cpu_tensor_data(a->vc);
    size_t qb = ela_dtype_row_bytes(a->q->dtype, a->d), kb = ela_dtype_row_bytes(a->k->dtype, a->d),
           vb = ela_dtype_row_bytes(a->v->dtype, a->d);
    int G = a->hq / a->hkv;
    int64_t chunks = (a->n_sel + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM;
#pragma omp parallel for num_threads(cpu->threads) schedule(static)
    for (int64_t item = 0; item < (int64_t)a->hq * chunks; item++) {
        int h = (int)(item / chunks);
        int64_t i0 = item % chunks * ROWS_PER_ITEM;
        int64_t i1 = i0 + ROWS_PER_ITEM < a->n_sel ? i0 + ROWS_PER_ITEM : a->n_sel;
        const int32_t *sel = idx_row(a->idx, h);
        const char *ks = k + (h / G) * a->k->strides[0], *vs = v + (h / G) * a->v->strides[0];
        char *kd = kc + h * a->kc->strides[0], *vd = vc + h * a->vc->strides[0];
        for (int64_t i = i0; i < i1; i++) {
            int64_t t = sel[i];
            memcpy(qc + i * a->qc->strides[0] + h * a->qc->strides[1],
                   q + t * a->q->strides[0] + h * a->q->strides[1], qb);
            memcpy(kd + i * a->kc->strides[1], ks + t * a->k->strides[1], kb);
            memcpy(vd + i * a->vc->strides[1], vs + t * a->v->strides[1], vb);
        }
    }
    return ELA_OK;
}

/* Each item owns the original rows [t0, t1) of one head: selected ones get their compressed
 * row, the rest zeros, so every row of o is written exactly once. */
ela_status cpu_token_decompress(void *ctx, const ela_token_decompress_args *a) {
    const cpu_backend *cpu = ctx;
    const char *oc = cpu_tensor_data(a->oc);
    char *o = cpu_tensor_data(a->o);
    size_t rb = ela_dtype_row_bytes(a->o->dtype, a->d);
    int64_t chunks = (a->L + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM;
#pragma omp parallel for num_threads(cpu->threads) schedule(static)
    for (int64_t item = 0; item < (int64_t)a->hq * chunks; item++) {
        int h = (int)(item / chunks);
        int64_t t0 = item % chunks * ROWS_PER_ITEM;
        int64_t t1 = t0 + ROWS_PER_ITEM < a->L ? t0 + ROWS_PER_ITEM : a->L;
        const int32_t *sel = idx_row(a->idx, h);
        /* first selected entry at or after t0 (rows are ascending) */
        int64_t lo = 0, hi = a->n_sel;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (sel[mid] < t0)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (int64_t t = t0, i = lo; t < t1; t++) {
            char *dst = o + t * a->o->strides[0] + h * a->o->strides[1];
            if (i < a->n_sel && sel[i] == t) {
                memcpy(dst, oc + i * a->oc->strides[0] + h * a->oc->strides[1], rb);
                i++;
            } else {
                memset(dst, 0, rb);
            }
        }
    }
    return ELA_OK;
}

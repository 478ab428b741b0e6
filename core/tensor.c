/* Tensors: creation in backend memory, views, host transfers with strides and conversion.
 * All sizes are checked for overflow: extents and strides come from callers and files.
 * Block dtypes (q8_0: 32 elements in 34 bytes): extents still count elements, the innermost
 * extent must be a whole number of blocks, and the innermost stride is the distance between
 * blocks (34 when packed). Every stride and view offset is a multiple of the unit (element or
 * block) size, so a view always starts on a block boundary. Internally the innermost dim is
 * walked in units (blocks) of unit_bytes. */
#include <string.h>

#include "alloc.h"
#include "backend_iface.h"
#include "error.h"
#include "tensor.h"
#include "valid_lists.h"

/* a*b + c in int64 without overflow; returns 0 on overflow. */
static int mul_add_ok(int64_t a, int64_t b, int64_t c, int64_t *out) {
    if (a < 0 || b < 0 || c < 0)
        return 0;
    if (a != 0 && b > (INT64_MAX - c) / a)
        return 0;
    *out = a * b + c;
    return 1;
}

/* Bytes of one element, or of one block for block dtypes; 0 for an unknown dtype. */
static int64_t unit_bytes(ela_dtype dtype) {
    return (int64_t)ela_dtype_row_bytes(dtype, ela_dtype_block(dtype));
}

/* Steps along dim i: its extent, in blocks for the innermost dim. */
static int64_t units(const ela_tensor *t, int i) {
    return i == t->n_dims - 1 ? t->extents[i] / ela_dtype_block(t->dtype) : t->extents[i];
}

int64_t ela_tensor_span(const ela_tensor *t) {
    int64_t span = unit_bytes(t->dtype);
    for (int i = 0; i < t->n_dims; i++) {
        if (t->extents[i] == 0)
            return 0;
        span += (units(t, i) - 1) * t->strides[i];
    }
    return span;
}

/* Fills t's shape from the arguments after checking them; computes the span in bytes. */
static ela_status describe(ela_tensor *t, ela_dtype dtype, int n_dims, const int64_t *extents,
                           const int64_t *strides, int64_t *span_out, const char *fn) {
    int64_t es = unit_bytes(dtype), block = ela_dtype_block(dtype);
    if (es == 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s: unknown dtype %d", fn, (int)dtype);
    if (n_dims < 1 || n_dims > ELA_MAX_DIMS)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s: n_dims is %d, must be 1..%d", fn, n_dims,
                        ELA_MAX_DIMS);
    if (!extents)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s: extents is NULL", fn);
    if (extents[n_dims - 1] % block != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "%s: innermost extent %lld is not a multiple of %lld, the block of dtype "
                        "%s", fn, (long long)extents[n_dims - 1], (long long)block,
                        ela_dtype_name(dtype));
    t->dtype = dtype;
    t->n_dims = n_dims;
    int64_t packed = es, span = es;
    int empty = 0;
    for (int i = n_dims - 1; i >= 0; i--) {
        if (extents[i] < 0)
            return ela_fail(ELA_ERR_INVALID_ARG, "%s: extent %d is negative (%lld)", fn, i,
                            (long long)extents[i]);
        int64_t stride = packed, count = i == n_dims - 1 ? extents[i] / block : extents[i];
        if (strides) {
            stride = strides[i];
            if (stride <= 0 || stride % es != 0)
                return ela_fail(ELA_ERR_INVALID_ARG,
                                "%s: stride %d is %lld bytes; must be a positive multiple of the "
                                "%s %s size %lld", fn, i, (long long)stride,
                                ela_dtype_name(dtype), block > 1 ? "block" : "element",
                                (long long)es);
        }
        t->extents[i] = extents[i];
        t->strides[i] = stride;
        empty |= extents[i] == 0;
        if (count > 0 && !mul_add_ok(count - 1, stride, span, &span))
            return ela_fail(ELA_ERR_INVALID_ARG, "%s: tensor size overflows", fn);
        /* An empty dim still advances packed strides, so they stay positive and distinct. */
        if (!mul_add_ok(count > 0 ? count : 1, packed, 0, &packed))
            return ela_fail(ELA_ERR_INVALID_ARG, "%s: tensor size overflows", fn);
    }
    *span_out = empty ? 0 : span;
    return ELA_OK;
}

/* Different elements must not share memory: with dims ordered by stride, each stride must
 * reach past everything the smaller-strided dims cover. */
static int overlaps(const ela_tensor *t) {
    int order[ELA_MAX_DIMS];
    for (int i = 0; i < t->n_dims; i++) {
        if (t->extents[i] == 0)
            return 0; /* no elements, nothing to overlap */
        order[i] = i;
    }
    for (int i = 1; i < t->n_dims; i++) /* insertion sort by ascending stride */
        for (int j = i; j > 0 && t->strides[order[j]] < t->strides[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    int64_t covered = unit_bytes(t->dtype);
    for (int i = 0; i < t->n_dims; i++) {
        int dim = order[i];
        if (units(t, dim) <= 1)
            continue;
        if (t->strides[dim] < covered)
            return 1;
        covered = t->strides[dim] * units(t, dim);
    }
    return 0;
}

ela_status ela_tensor_new(ela_backend *backend, ela_dtype dtype, int n_dims,
                          const int64_t *extents, const int64_t *strides, ela_tensor **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_new: out is NULL");
    *out = NULL;
    if (!backend)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_new: backend is NULL");
    ela_tensor shape;
    int64_t span = 0;
    ela_status st = describe(&shape, dtype, n_dims, extents, strides, &span, "ela_tensor_new");
    if (st != ELA_OK)
        return st;
    if (overlaps(&shape))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_new: strides make elements overlap");

    ela_tensor *t = ela_calloc(1, sizeof *t);
    ela_buffer *buf = ela_calloc(1, sizeof *buf);
    if (!t || !buf) {
        st = ela_fail(ELA_ERR_OOM, "ela_tensor_new: out of host memory");
        goto fail;
    }
    *t = shape;
    st = backend->iface->buffer_alloc(backend->ctx, (size_t)(span > 0 ? span : 1), &buf->handle);
    if (st != ELA_OK)
        goto fail;
    buf->backend = backend;
    buf->size = (size_t)span;
    buf->refs = 1;
    t->buffer = buf;
    t->offset = 0;
    *out = t;
    return ELA_OK;
fail:
    ela_free(buf);
    ela_free(t);
    return st;
}

ela_status ela_tensor_view(const ela_tensor *base, int n_dims, const int64_t *extents,
                           const int64_t *strides, int64_t offset, ela_tensor **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_view: out is NULL");
    *out = NULL;
    if (!base)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_view: base is NULL");
    ela_tensor shape;
    int64_t span = 0;
    ela_status st = describe(&shape, base->dtype, n_dims, extents, strides, &span, "ela_tensor_view");
    if (st != ELA_OK)
        return st;
    int64_t es = unit_bytes(base->dtype);
    int64_t start = (int64_t)base->offset + offset;
    if (offset % es != 0)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_tensor_view: offset %lld is not a multiple of the %s %s size %lld",
                        (long long)offset, ela_dtype_name(base->dtype),
                        ela_dtype_block(base->dtype) > 1 ? "block" : "element", (long long)es);
    if (start < 0 || span > (int64_t)base->buffer->size - start)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_tensor_view: view [%lld, %lld) runs past its base buffer of %zu bytes",
                        (long long)start, (long long)(start + span), base->buffer->size);
    ela_tensor *t = ela_calloc(1, sizeof *t);
    if (!t)
        return ela_fail(ELA_ERR_OOM, "ela_tensor_view: out of host memory");
    *t = shape;
    t->buffer = base->buffer;
    t->offset = (size_t)start;
    t->buffer->refs++;
    *out = t;
    return ELA_OK;
}

void ela_tensor_free(ela_tensor *t) {
    if (!t)
        return;
    ela_buffer *buf = t->buffer;
    if (--buf->refs == 0) {
        if (!buf->borrowed)
            buf->backend->iface->buffer_free(buf->backend->ctx, buf->handle);
        else if (buf->release)
            buf->release(buf->release_user);
        ela_free(buf);
    }
    ela_free(t);
}

int64_t ela_tensor_numel(const ela_tensor *t) {
    if (!t)
        return 0;
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++)
        n *= t->extents[i];
    return n;
}

ela_dtype ela_tensor_dtype(const ela_tensor *t) { return t ? t->dtype : ELA_F32; }
int ela_tensor_n_dims(const ela_tensor *t) { return t ? t->n_dims : 0; }
int64_t ela_tensor_extent(const ela_tensor *t, int dim) {
    return t && dim >= 0 && dim < t->n_dims ? t->extents[dim] : 0;
}
int64_t ela_tensor_stride(const ela_tensor *t, int dim) {
    return t && dim >= 0 && dim < t->n_dims ? t->strides[dim] : 0;
}

/* Copies packed host data to (to_tensor) or from the tensor's strided memory, one packed
 * innermost row per backend call (the whole tensor at once when it is packed). */
static ela_status transfer(const ela_tensor *t, void *host, int to_tensor) {
    const ela_backend *be = t->buffer->backend;
    int64_t es = unit_bytes(t->dtype);
    int64_t numel = ela_tensor_numel(t) / ela_dtype_block(t->dtype); /* in units */
    if (numel == 0)
        return ELA_OK;
    /* Merge packed inner dims into one run; a strided innermost dim leaves runs of 1. */
    int64_t run = 1, expect = es;
    int outer = t->n_dims;
    for (int i = t->n_dims - 1; i >= 0 && t->strides[i] == expect; i--) {
        run *= units(t, i);
        expect *= units(t, i);
        outer = i;
    }
    size_t run_bytes = (size_t)(run * es);
    int64_t idx[ELA_MAX_DIMS] = {0};
    char *h = host;
    char *base = be->iface->buffer_host_ptr(be->ctx, t->buffer->handle);
    if (to_tensor)
        valid_lists_forget(t);
    for (int64_t done = 0; done < numel; done += run) {
        int64_t off = (int64_t)t->offset;
        for (int i = 0; i < outer; i++)
            off += idx[i] * t->strides[i];
        ela_status st = ELA_OK;
        if (base) {
            if (to_tensor)
                memcpy(base + off, h, run_bytes);
            else
                memcpy(h, base + off, run_bytes);
        } else if (to_tensor) {
            st = be->iface->buffer_write(be->ctx, t->buffer->handle, (size_t)off, h, run_bytes);
        } else {
            st = be->iface->buffer_read(be->ctx, t->buffer->handle, (size_t)off, h, run_bytes);
        }
        if (st != ELA_OK)
            return st;
        h += run_bytes;
        for (int i = outer - 1; i >= 0; i--) { /* advance the outer index */
            if (++idx[i] < units(t, i))
                break;
            idx[i] = 0;
        }
    }
    return ELA_OK;
}

/* count: bytes (raw) or values (f32) the caller passed. */
static ela_status check_transfer(const ela_tensor *t, const void *host, int64_t count, int raw,
                                 const char *fn) {
    if (!t)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s: tensor is NULL", fn);
    if (!host && ela_tensor_numel(t) > 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s: host pointer is NULL", fn);
    int64_t numel = ela_tensor_numel(t);
    int64_t want = raw ? (int64_t)ela_dtype_row_bytes(t->dtype, numel) : numel;
    if (count != want)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s: got %lld %s, the tensor holds %lld (%lld elements)",
                        fn, (long long)count, raw ? "bytes" : "values", (long long)want,
                        (long long)numel);
    return ELA_OK;
}

ela_status ela_tensor_write(ela_tensor *t, const void *src, size_t bytes) {
    ela_status st = check_transfer(t, src, (int64_t)bytes, 1, "ela_tensor_write");
    return st != ELA_OK ? st : transfer(t, (void *)src, 1);
}

ela_status ela_tensor_read(const ela_tensor *t, void *dst, size_t bytes) {
    ela_status st = check_transfer(t, dst, (int64_t)bytes, 1, "ela_tensor_read");
    return st != ELA_OK ? st : transfer(t, dst, 0);
}

ela_status ela_tensor_write_f32(ela_tensor *t, const float *src, int64_t count) {
    ela_status st = check_transfer(t, src, count, 0, "ela_tensor_write_f32");
    if (st != ELA_OK || t->dtype == ELA_F32)
        return st != ELA_OK ? st : transfer(t, (void *)src, 1);
    void *tmp = ela_aligned_alloc(ela_dtype_row_bytes(t->dtype, count));
    if (!tmp)
        return ela_fail(ELA_ERR_OOM, "ela_tensor_write_f32: out of host memory for %lld values",
                        (long long)count);
    st = ela_convert(src, ELA_F32, tmp, t->dtype, count);
    if (st == ELA_OK)
        st = transfer(t, tmp, 1);
    ela_aligned_free(tmp);
    return st;
}

ela_status ela_tensor_read_f32(const ela_tensor *t, float *dst, int64_t count) {
    ela_status st = check_transfer(t, dst, count, 0, "ela_tensor_read_f32");
    if (st != ELA_OK || t->dtype == ELA_F32)
        return st != ELA_OK ? st : transfer(t, dst, 0);
    void *tmp = ela_aligned_alloc(ela_dtype_row_bytes(t->dtype, count));
    if (!tmp)
        return ela_fail(ELA_ERR_OOM, "ela_tensor_read_f32: out of host memory for %lld values",
                        (long long)count);
    st = transfer(t, tmp, 0);
    if (st == ELA_OK)
        st = ela_convert(tmp, t->dtype, dst, ELA_F32, count);
    ela_aligned_free(tmp);
    return st;
}

ela_status ela_tensor_wrap_host(ela_backend *backend, void *ptr, size_t bytes, ela_dtype dtype,
                                int n_dims, const int64_t *extents, void (*release)(void *),
                                void *release_user, ela_tensor **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_wrap_host: out is NULL");
    *out = NULL;
    if (!backend || (!ptr && bytes))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tensor_wrap_host: NULL backend or memory");
    if (backend->iface != ela_cpu_backend_iface())
        return ela_fail(ELA_ERR_UNSUPPORTED,
                        "ela_tensor_wrap_host: backend %s cannot use host memory in place",
                        backend->name);
    ela_tensor shape;
    int64_t span = 0;
    ela_status st = describe(&shape, dtype, n_dims, extents, NULL, &span, "ela_tensor_wrap_host");
    if (st != ELA_OK)
        return st;
    if ((uint64_t)span > bytes)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_tensor_wrap_host: shape needs %lld bytes, memory has %zu",
                        (long long)span, bytes);
    ela_tensor *t = ela_calloc(1, sizeof *t);
    ela_buffer *buf = ela_calloc(1, sizeof *buf);
    if (!t || !buf) {
        ela_free(buf);
        ela_free(t);
        return ela_fail(ELA_ERR_OOM, "ela_tensor_wrap_host: out of host memory");
    }
    *t = shape;
    buf->backend = backend;
    buf->handle = ptr;
    buf->size = bytes;
    buf->refs = 1;
    buf->borrowed = 1;
    buf->release = release;
    buf->release_user = release_user;
    t->buffer = buf;
    t->offset = 0;
    *out = t;
    return ELA_OK;
}

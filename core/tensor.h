/* Tensor and buffer descriptors shared by the core and every backend (plugins included).
 * A tensor is a reference-counted backend buffer + byte offset + dtype + extents + strides. */
#ifndef ELA_CORE_TENSOR_H
#define ELA_CORE_TENSOR_H

#include <stdint.h>

#include "ela.h"

/* Bytes [offset, offset + 4 count) of a buffer hold i32 keys, distinct and in [0, n), as an op
 * wrote them; count 0: nothing known (see core/valid_lists.h). */
typedef struct {
    size_t offset;
    int64_t count, n;
} ela_valid_lists;

typedef struct ela_buffer {
    ela_backend *backend; /* owner; the buffer is freed through its iface */
    void *handle;         /* backend's own handle (host pointer for the CPU) */
    size_t size;          /* bytes */
    int refs;             /* tensors (and views) that hold it */
    /* Borrowed host memory (a memory-mapped model file): never given to the backend's
     * buffer_free; release(release_user), when set, runs once the last tensor lets go. */
    int borrowed;
    void (*release)(void *release_user);
    void *release_user;
    ela_valid_lists valid;
} ela_buffer;

struct ela_tensor {
    ela_buffer *buffer;
    size_t offset; /* bytes from the buffer start to element [0, 0, ...] */
    ela_dtype dtype;
    int n_dims;
    int64_t extents[ELA_MAX_DIMS]; /* outermost first */
    int64_t strides[ELA_MAX_DIMS]; /* bytes */
};

/* Bytes from the first to one past the last element (0 for an empty tensor). */
int64_t ela_tensor_span(const ela_tensor *t);

/* A tensor over host memory ela does not own, on a backend whose buffers are host memory (the
 * CPU). The memory must outlive the tensor and its views; when the last of them is freed,
 * release(release_user) is called (release may be NULL). Checks the shape against `bytes`. */
ela_status ela_tensor_wrap_host(ela_backend *backend, void *ptr, size_t bytes, ela_dtype dtype,
                                int n_dims, const int64_t *extents, void (*release)(void *),
                                void *release_user, ela_tensor **out);

#endif

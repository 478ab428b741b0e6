/* CUDA backend: buffers, host transfers and per-op scratch, all in the order of the context's
 * stream. Buffers come from a stream-ordered pool (cudaMallocAsync; plain cudaMalloc where the
 * device has no pools). Small writes (the core writes a strided tensor one packed row at a
 * time) are copied into a pinned ring and sent from there without waiting; large ones go
 * straight from the caller's memory. Reads copy a window of up to CUDA_WINDOW_BYTES around the
 * request into pinned memory, so row-by-row reads of a strided tensor cost one round trip;
 * large reads stream through the same pinned window in halves. */
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"

char *cuda_tensor_ptr(const ela_tensor *t) {
    const cuda_buffer *b = t->buffer->handle;
    return (char *)b->ptr + t->offset;
}

static ela_status device_alloc(cuda_ctx *ctx, size_t bytes, void **out) {
    *out = NULL;
    /* At least 16 bytes, so an empty tensor still has an address the kernels may be given. */
    size_t size = bytes < 16 ? 16 : bytes;
    if (ctx->pool)
        CUDA_TRY(cudaMallocFromPoolAsync(out, size, ctx->pool, ctx->stream));
    else
        CUDA_TRY(cudaMalloc(out, size));
    return ELA_OK;
}

static void device_free(cuda_ctx *ctx, void *ptr) {
    if (!ptr)
        return;
    if (ctx->pool)
        cudaFreeAsync(ptr, ctx->stream);
    else
        cudaFree(ptr);
    (void)cudaGetLastError(); /* nothing to report a failed free to */
}

ela_status cuda_scratch_alloc(cuda_ctx *ctx, size_t bytes, void **out) {
    return device_alloc(ctx, bytes, out);
}

void cuda_scratch_free(cuda_ctx *ctx, void *ptr) { device_free(ctx, ptr); }

ela_status cuda_buffer_alloc(void *vctx, size_t bytes, void **handle) {
    cuda_ctx *ctx = vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    cuda_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return cuda_fail(ELA_ERR_OOM, "cuda: out of host memory");
    if ((st = device_alloc(ctx, bytes, &b->ptr)) != ELA_OK) {
        free(b);
        if (st == ELA_ERR_OOM)
            return cuda_fail(ELA_ERR_OOM, "cuda: out of device memory for a buffer of %zu bytes "
                             "on %s", bytes, ctx->props.name);
        return st;
    }
    b->size = bytes;
    *handle = b;
    return ELA_OK;
}

void cuda_buffer_free(void *vctx, void *handle) {
    cuda_ctx *ctx = vctx;
    cuda_buffer *b = handle;
    if (!b)
        return;
    if (cuda_use(ctx) == ELA_OK)
        device_free(ctx, b->ptr); /* stream-ordered: work already enqueued still sees it */
    if (ctx->win_buf == b)
        ctx->win_buf = NULL;
    ctx->generation++;
    free(b);
}

void *cuda_buffer_host_ptr(void *ctx, void *handle) {
    (void)ctx;
    (void)handle;
    return NULL; /* device memory: the core goes through write/read, ordered with the stream */
}

ela_status cuda_synchronize(void *vctx) {
    cuda_ctx *ctx = vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    ctx->staging_used = 0; /* every upload from the ring has landed */
    return ELA_OK;
}

ela_status cuda_buffer_write(void *vctx, void *handle, size_t offset, const void *src,
                             size_t bytes) {
    cuda_ctx *ctx = vctx;
    cuda_buffer *b = handle;
    if (offset > b->size || bytes > b->size - offset)
        return cuda_fail(ELA_ERR_INTERNAL, "cuda: write of %zu bytes at %zu past a %zu-byte buffer",
                         bytes, offset, b->size);
    if (bytes == 0)
        return ELA_OK;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    return cuda_upload(ctx, (char *)b->ptr + offset, src, bytes);
}

ela_status cuda_upload(cuda_ctx *ctx, void *dst, const void *src, size_t bytes) {
    ela_status st;
    if (bytes == 0)
        return ELA_OK;
    ctx->generation++;
    if (bytes > CUDA_STAGING_BYTES / 4) {
        /* From pageable memory the call returns once src has been consumed; the copy stays in
         * stream order. */
        CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream));
        return ELA_OK;
    }
    if (ctx->staging_used + bytes > CUDA_STAGING_BYTES) {
        /* The ring is full of copies that may not have run yet: wait for them. */
        if ((st = cuda_synchronize(ctx)) != ELA_OK)
            return st;
    }
    unsigned char *slot = ctx->staging + ctx->staging_used;
    memcpy(slot, src, bytes);
    CUDA_TRY(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, ctx->stream));
    ctx->staging_used = (ctx->staging_used + bytes + 15) & ~(size_t)15;
    return ELA_OK;
}

ela_status cuda_buffer_read(void *vctx, void *handle, size_t offset, void *dst, size_t bytes) {
    cuda_ctx *ctx = vctx;
    cuda_buffer *b = handle;
    if (offset > b->size || bytes > b->size - offset)
        return cuda_fail(ELA_ERR_INTERNAL, "cuda: read of %zu bytes at %zu past a %zu-byte buffer",
                         bytes, offset, b->size);
    if (bytes == 0)
        return ELA_OK;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    if (ctx->win_buf == b && ctx->win_gen == ctx->generation && offset >= ctx->win_off &&
        offset + bytes <= ctx->win_off + ctx->win_len) {
        memcpy(dst, ctx->win + (offset - ctx->win_off), bytes);
        return ELA_OK;
    }
    if (bytes > CUDA_WINDOW_BYTES / 4) {
        /* Through the pinned window, half a window at a time, the next half landing while the
         * last is copied out: a copy into pageable memory ran at ~1.3 GB/s on the H100 host
         * (32 MiB of XAttention masks took ~24 ms), pinned ones at tens of GB/s. */
        const char *src = (const char *)b->ptr + offset;
        const size_t half = CUDA_WINDOW_BYTES / 2;
        ctx->win_buf = NULL;
        size_t len = bytes < half ? bytes : half;
        CUDA_TRY(cudaMemcpyAsync(ctx->win, src, len, cudaMemcpyDeviceToHost, ctx->stream));
        for (size_t done = 0, slot = 0; done < bytes; slot ^= 1) {
            if ((st = cuda_synchronize(ctx)) != ELA_OK)
                return st;
            const size_t next = done + len;
            size_t next_len = bytes - next < half ? bytes - next : half;
            if (next < bytes)
                CUDA_TRY(cudaMemcpyAsync(ctx->win + (slot ^ 1) * half, src + next, next_len,
                                         cudaMemcpyDeviceToHost, ctx->stream));
            memcpy((char *)dst + done, ctx->win + slot * half, len);
            done = next;
            len = next_len;
        }
        return ELA_OK;
    }
    size_t len = b->size - offset < CUDA_WINDOW_BYTES ? b->size - offset : CUDA_WINDOW_BYTES;
    ctx->win_buf = NULL;
    CUDA_TRY(cudaMemcpyAsync(ctx->win, (const char *)b->ptr + offset, len, cudaMemcpyDeviceToHost,
                             ctx->stream));
    if ((st = cuda_synchronize(ctx)) != ELA_OK)
        return st;
    ctx->win_buf = b;
    ctx->win_off = offset;
    ctx->win_len = len;
    ctx->win_gen = ctx->generation;
    memcpy(dst, ctx->win, bytes);
    return ELA_OK;
}

/* Internal declarations of the CUDA backend plugin (DESIGN.md 3): an open device (cuda_ctx),
 * its buffers and staging, the ops' host entry points. Shared by the C host files and the .cu
 * files (extern "C"). Never linked against libela: errors go through the host API. */
#ifndef ELA_BACKENDS_CUDA_CUDA_BACKEND_H
#define ELA_BACKENDS_CUDA_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "core/backend_iface.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CUDA_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CUDA_PRINTF(f, a)
#endif

/* ---- errors (cuda_plugin.c; the CUDA_TRY macros are in cuda_check.h) ---------------------- */
/* Report through the host's ela_set_error and return status. */
ela_status cuda_fail(ela_status status, const char *fmt, ...) CUDA_PRINTF(2, 3);

/* The plugin's one exported symbol. */
ELA_API const ela_backend_iface *ela_plugin_init(const ela_host_api *host);

/* ---- an open device ------------------------------------------------------------------------ */
/* Which attention path a context may take (ELA_CUDA_FORCE at open, for tests): every path
 * handles every case, the fast ones only where their conditions hold. */
typedef enum {
    CUDA_PATH_AUTO = 0,   /* tensor-core prefill / split-K decode where they apply */
    CUDA_PATH_GENERIC = 1 /* the simple kernel for everything */
} cuda_path;

#define CUDA_STAGING_BYTES (8u << 20) /* pinned upload ring */
#define CUDA_WINDOW_BYTES (8u << 20)  /* pinned readback window */

typedef struct {
    void *ptr;   /* device memory */
    size_t size; /* bytes asked for */
} cuda_buffer;

typedef struct cuda_ctx {
    int device;
    struct cudaDeviceProp props;
    cudaStream_t stream;     /* every op and transfer of this context, in order */
    cudaMemPool_t pool;      /* stream-ordered allocations; NULL: plain cudaMalloc */
    cuda_path path;
    int force_splits;        /* ELA_CUDA_SPLITS: key splits where a kernel can split (0: plan) */

    /* Uploads: small writes are copied into a pinned ring and sent from there, so the core's
     * row-by-row writes of a strided tensor do not each wait for the device. */
    unsigned char *staging;
    size_t staging_used;

    /* Readback window: win holds [win_off, win_off + win_len) of win_buf as of win_gen. */
    unsigned char *win;
    const cuda_buffer *win_buf;
    size_t win_off, win_len;
    uint64_t win_gen;
    uint64_t generation;     /* bumped whenever device memory may change */

    /* Resident blocks per SM of the kernels planned so far (key -> value; 0 = free slot). */
    int occ_key[16], occ_val[16];
} cuda_ctx;

/* Make ctx's device current on this thread (the current device is per host thread). */
ela_status cuda_use(cuda_ctx *ctx);

/* ---- buffers (cuda_buffer.c) --------------------------------------------------------------- */
ela_status cuda_buffer_alloc(void *ctx, size_t bytes, void **handle);
void cuda_buffer_free(void *ctx, void *handle);
void *cuda_buffer_host_ptr(void *ctx, void *handle);
ela_status cuda_buffer_write(void *ctx, void *handle, size_t offset, const void *src, size_t bytes);
ela_status cuda_buffer_read(void *ctx, void *handle, size_t offset, void *dst, size_t bytes);
ela_status cuda_synchronize(void *ctx);
/* Device scratch in stream order (freed with cuda_scratch_free after the kernels that use it
 * are enqueued). */
ela_status cuda_scratch_alloc(cuda_ctx *ctx, size_t bytes, void **out);
void cuda_scratch_free(cuda_ctx *ctx, void *ptr);
/* Copy host memory to device memory in stream order; src may be reused once this returns
 * (small copies go through the pinned staging ring). The device must be current. */
ela_status cuda_upload(cuda_ctx *ctx, void *dst, const void *src, size_t bytes);
/* Device address of a tensor's element [0, 0, ...]. */
char *cuda_tensor_ptr(const ela_tensor *t);

/* ---- ops ----------------------------------------------------------------------------------- */
ela_status cuda_attn_dense(void *ctx, const ela_attn_dense_args *args);
/* Sparse attention ops, one file each (the CPU kernels' stems): attn_blocks.cu,
 * xattn_estimate.cu, router_eval.cu, attn_gather.cu, decode_select.cu. */
ela_status cuda_attn_blocks(void *ctx, const ela_attn_blocks_args *args);
ela_status cuda_xattn_estimate(void *ctx, const ela_xattn_estimate_args *args);
ela_status cuda_router_eval(void *ctx, const ela_router_eval_args *args);
ela_status cuda_attn_gather(void *ctx, const ela_attn_gather_args *args);
ela_status cuda_decode_select(void *ctx, const ela_decode_select_args *args);
/* Token Sparse Attention: token_select.cu, attn_token_sparse.cu. */
ela_status cuda_token_select(void *ctx, const ela_token_select_args *args);
ela_status cuda_attn_token_sparse(void *ctx, const ela_attn_token_sparse_args *args);
/* SSA/NSA: nsa_select.cu, attn_nsa.cu. */
ela_status cuda_nsa_select(void *ctx, const ela_nsa_select_args *args);
ela_status cuda_attn_nsa(void *ctx, const ela_attn_nsa_args *args);
/* Model ops, one file each: matmul.cu (+ matmul_gemv.cu, matmul_mma.cu), rms_norm.cu, rope.cu,
 * elementwise.cu (silu_mul, add), get_rows.cu, copy.cu. */
ela_status cuda_matmul(void *ctx, const ela_matmul_args *args);
ela_status cuda_rms_norm(void *ctx, const ela_rms_norm_args *args);
ela_status cuda_rope(void *ctx, const ela_rope_args *args);
ela_status cuda_silu_mul(void *ctx, const ela_binary_args *args);
ela_status cuda_add(void *ctx, const ela_binary_args *args);
ela_status cuda_get_rows(void *ctx, const ela_get_rows_args *args);
ela_status cuda_sigmoid_gate(void *ctx, const ela_sigmoid_gate_args *args);
ela_status cuda_token_compress(void *ctx, const ela_token_compress_args *args);
ela_status cuda_token_decompress(void *ctx, const ela_token_decompress_args *args);
ela_status cuda_copy(void *ctx, const ela_copy_args *args);

#ifdef __cplusplus
}
#endif

#endif

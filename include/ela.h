/* ela: Elastic Long-context Attention. The whole public C API.
 * Backends (cpu built in; vulkan, cuda as plugins) are opened by name at run time; every
 * call returns an ela_status and leaves a message for ela_last_error() when it fails. */
#ifndef ELA_H
#define ELA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ELA_VERSION_MAJOR 0
#define ELA_VERSION_MINOR 1
#define ELA_VERSION_PATCH 0
#define ELA_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define ELA_API __attribute__((visibility("default")))
#else
#define ELA_API
#endif

/* ---------------------------------------------------------------------------------------
 * Status and errors
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_OK = 0,
    ELA_ERR_INVALID_ARG = 1, /* wrong shape, stride, dtype combination, NULL pointer, bad name */
    ELA_ERR_UNSUPPORTED = 2, /* the backend cannot run this op or dtype (never a silent fallback) */
    ELA_ERR_OOM = 3,         /* host or device memory exhausted */
    ELA_ERR_FORMAT = 4,      /* corrupt or truncated file */
    ELA_ERR_IO = 5,          /* file cannot be opened or read */
    ELA_ERR_UNAVAILABLE = 6, /* backend or device not present on this machine */
    ELA_ERR_BACKEND = 7,     /* the driver or device reported a failure */
    ELA_ERR_INTERNAL = 8     /* a bug in ela: please report it */
} ela_status;

/* Short constant name of a status ("ELA_ERR_OOM"); never NULL. */
ELA_API const char *ela_status_str(ela_status status);
/* Message of the last failed call on this thread ("" when none). Valid until the next ela call
 * on the same thread fails. Successful calls leave it unchanged. */
ELA_API const char *ela_last_error(void);
/* Library version string, e.g. "0.1.0". */
ELA_API const char *ela_version(void);

/* ---------------------------------------------------------------------------------------
 * Data types
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_F32 = 0,
    ELA_F16 = 1,  /* IEEE binary16 */
    ELA_BF16 = 2, /* bfloat16, round-to-nearest-even on conversion */
    ELA_DTYPE_COUNT
} ela_dtype;

ELA_API size_t ela_dtype_size(ela_dtype dtype);     /* 0 for an unknown dtype */
ELA_API const char *ela_dtype_name(ela_dtype dtype); /* "f32", "f16", "bf16", "?" */
/* Parse "f32" / "f16" / "bf16". */
ELA_API ela_status ela_dtype_parse(const char *name, ela_dtype *out);
/* Convert n packed elements between dtypes (same dtype copies). */
ELA_API ela_status ela_convert(const void *src, ela_dtype src_dtype, void *dst, ela_dtype dst_dtype,
                               int64_t n);

/* ---------------------------------------------------------------------------------------
 * Backends and devices
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_DEVICE_CPU = 0,
    ELA_DEVICE_DISCRETE_GPU = 1,
    ELA_DEVICE_INTEGRATED_GPU = 2,
    ELA_DEVICE_VIRTUAL_GPU = 3,
    ELA_DEVICE_SOFTWARE = 4 /* e.g. lavapipe: usable by name, never picked by "auto" */
} ela_device_kind;

#define ELA_MAX_DEVICES 8

typedef struct {
    char name[128];        /* "AMD EPYC 9654", "NVIDIA H100 80GB HBM3" */
    ela_device_kind kind;
    uint64_t memory_bytes; /* device-local memory (host RAM for the CPU) */
    char details[256];     /* free text: CPU features and threads, driver version, ... */
} ela_device_info;

typedef struct {
    char name[16];     /* "cpu", "vulkan", "cuda" */
    int available;     /* nonzero when at least one device can be opened */
    char reason[256];  /* why not available ("" when available) */
    int n_devices;
    ela_device_info devices[ELA_MAX_DEVICES];
} ela_backend_info;

/* Every backend ela knows of, available or not. Fills up to `capacity` entries and sets
 * *count to the number of known backends (which may exceed capacity). Plugins are looked up
 * next to libela and in the directories of ELA_PLUGIN_PATH (':'-separated). */
ELA_API ela_status ela_backend_list(ela_backend_info *out, int capacity, int *count);

typedef struct ela_backend ela_backend;

/* Open a backend: "auto", "cpu", "vulkan", "vulkan:1", "cuda", "cuda:0". NULL or "" reads the
 * ELA_BACKEND environment variable, then falls back to "auto". "auto" picks CUDA, then a
 * discrete Vulkan GPU, then an integrated one, then the CPU. */
ELA_API ela_status ela_backend_open(const char *name, ela_backend **out);
ELA_API void ela_backend_close(ela_backend *backend); /* NULL is a no-op */
/* Name with device index, e.g. "cpu", "vulkan:0". */
ELA_API const char *ela_backend_name(const ela_backend *backend);
ELA_API ela_status ela_backend_device_info(const ela_backend *backend, ela_device_info *out);
/* Wait until all work submitted to the backend has finished. */
ELA_API ela_status ela_backend_synchronize(ela_backend *backend);

typedef enum {
    ELA_OP_ATTN_DENSE = 0,
    ELA_OP_COUNT
} ela_op;

/* Nonzero when the backend can run `op` with these input dtypes (q, k/v, o for attention). */
ELA_API int ela_backend_supports(const ela_backend *backend, ela_op op, const ela_dtype *dtypes,
                                 int n_dtypes);

/* ---------------------------------------------------------------------------------------
 * Tensors: a backend buffer + byte offset + dtype + up to 4 extents + byte strides.
 * Extents and strides are given outermost first, e.g. Q is [L, Hq, d].
 * ------------------------------------------------------------------------------------- */
#define ELA_MAX_DIMS 4

typedef struct ela_tensor ela_tensor;

/* New tensor in backend memory, uninitialised. strides (bytes, outermost first) may be NULL
 * for a packed row-major layout; given strides must be positive and non-overlapping. */
ELA_API ela_status ela_tensor_new(ela_backend *backend, ela_dtype dtype, int n_dims,
                                  const int64_t *extents, const int64_t *strides,
                                  ela_tensor **out);
/* A view of base's memory (same dtype and backend) starting `offset` bytes after base's first
 * element; NULL strides means packed. The view keeps the memory alive: base may be freed first. */
ELA_API ela_status ela_tensor_view(const ela_tensor *base, int n_dims, const int64_t *extents,
                                   const int64_t *strides, int64_t offset, ela_tensor **out);
ELA_API void ela_tensor_free(ela_tensor *tensor); /* NULL is a no-op */

/* Copy packed row-major host data in the tensor's own dtype to or from the tensor (which may be
 * strided). bytes must equal numel * dtype size. */
ELA_API ela_status ela_tensor_write(ela_tensor *tensor, const void *src, size_t bytes);
ELA_API ela_status ela_tensor_read(const ela_tensor *tensor, void *dst, size_t bytes);
/* The same with conversion from/to float; count must equal numel. */
ELA_API ela_status ela_tensor_write_f32(ela_tensor *tensor, const float *src, int64_t count);
ELA_API ela_status ela_tensor_read_f32(const ela_tensor *tensor, float *dst, int64_t count);

ELA_API ela_dtype ela_tensor_dtype(const ela_tensor *tensor);
ELA_API int ela_tensor_n_dims(const ela_tensor *tensor);
ELA_API int64_t ela_tensor_extent(const ela_tensor *tensor, int dim); /* 0 when out of range */
ELA_API int64_t ela_tensor_stride(const ela_tensor *tensor, int dim); /* bytes */
ELA_API int64_t ela_tensor_numel(const ela_tensor *tensor);

/* ---------------------------------------------------------------------------------------
 * Attention ops. Q and O are [L, Hq, d]; K and V are [Hkv, n, d]; query head h uses KV head
 * h / (Hq / Hkv). The innermost dimension must be packed; other strides are free.
 * ------------------------------------------------------------------------------------- */
typedef struct {
    int causal;     /* nonzero: query row i (position q_pos0 + i) sees keys j <= q_pos0 + i */
    int64_t q_pos0; /* absolute position of query row 0; >= 0; ignored when not causal */
    float scale;    /* softmax scale; 0 means 1/sqrt(d) */
} ela_attn_params;

/* causal = 1, q_pos0 = 0, scale = 0 (1/sqrt(d)). */
ELA_API ela_attn_params ela_attn_params_default(void);

/* Exact softmax attention. q: f32/f16/bf16; k and v: one dtype among f32/f16/bf16; o:
 * f32/f16/bf16; lse (optional, NULL to skip): f32 [L, Hq], natural-log sum of exp of the
 * scaled scores. Accumulation is f32. Causal rows must see at least one key (n >= 1). */
ELA_API ela_status ela_attn_dense(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                  const ela_tensor *v, ela_tensor *o, ela_tensor *lse,
                                  const ela_attn_params *params);

/* ---------------------------------------------------------------------------------------
 * Testing hooks
 * ------------------------------------------------------------------------------------- */
/* Make the n-th host allocation made by ela from now on fail (n >= 1), so tests can check
 * that ELA_ERR_OOM comes back with nothing leaked; n = 0 disables. Process-wide. */
ELA_API void ela_debug_fail_alloc(int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* ELA_H */

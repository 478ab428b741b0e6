/* The backend interface: a plain struct of function pointers, one per buffer operation and
 * one per op (DESIGN.md section 3). The CPU backend is linked into libela; Vulkan and CUDA are
 * plugins (libela-<name>.so) that export ela_plugin_init and return their iface from it. */
#ifndef ELA_CORE_BACKEND_IFACE_H
#define ELA_CORE_BACKEND_IFACE_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"
#include "tensor.h"

/* Bumped whenever this header changes shape; a plugin built against another version is
 * refused with a message, never loaded. */
#define ELA_BACKEND_API_VERSION 1u

/* Services libela lends to a plugin (plugins never link libela themselves, so a statically
 * linked application and its plugins share one error state). */
typedef struct {
    uint32_t api_version;
    void (*set_error)(const char *fmt, ...);
} ela_host_api;

/* Arguments of attn_dense after core/ops/attn_dense.c validated them. */
typedef struct {
    const ela_tensor *q; /* [L, Hq, d] */
    const ela_tensor *k; /* [Hkv, n, d] */
    const ela_tensor *v; /* [Hkv, n, d] */
    ela_tensor *o;       /* [L, Hq, d] */
    ela_tensor *lse;     /* [L, Hq] f32, or NULL */
    int64_t L, n, d;
    int hq, hkv;
    int causal;
    int64_t q_pos0;
    float scale;
} ela_attn_dense_args;

typedef struct ela_backend_iface {
    uint32_t api_version; /* ELA_BACKEND_API_VERSION */
    const char *name;     /* "cpu", "vulkan", "cuda" */
    int priority;         /* "auto" prefers higher: cuda 300, vulkan 200, cpu 0 */

    /* Devices present. With none, return ELA_ERR_UNAVAILABLE and say why via set_error. */
    ela_status (*list_devices)(ela_device_info *out, int capacity, int *count);
    ela_status (*open)(int device, void **ctx);
    void (*close)(void *ctx);

    ela_status (*buffer_alloc)(void *ctx, size_t bytes, void **handle);
    void (*buffer_free)(void *ctx, void *handle);
    /* Host address of a host-visible buffer (the CPU's), NULL otherwise. */
    void *(*buffer_host_ptr)(void *ctx, void *handle);
    ela_status (*buffer_write)(void *ctx, void *handle, size_t offset, const void *src, size_t bytes);
    ela_status (*buffer_read)(void *ctx, void *handle, size_t offset, void *dst, size_t bytes);
    ela_status (*synchronize)(void *ctx);

    /* Nonzero when the op runs with these dtypes; NULL op entries are never supported. */
    int (*supports)(void *ctx, ela_op op, const ela_dtype *dtypes, int n_dtypes);

    /* Ops: NULL means unsupported (the core answers ELA_ERR_UNSUPPORTED naming both). */
    ela_status (*attn_dense)(void *ctx, const ela_attn_dense_args *args);
} ela_backend_iface;

/* The one symbol a plugin exports. Returns NULL (after host->set_error) when the plugin cannot
 * work at all, e.g. its driver library is missing. */
typedef const ela_backend_iface *(*ela_plugin_init_fn)(const ela_host_api *host);
#define ELA_PLUGIN_INIT_SYMBOL "ela_plugin_init"

/* An open backend as the core sees it. */
struct ela_backend {
    const ela_backend_iface *iface;
    void *ctx;
    int device;
    char name[32]; /* "cpu", "vulkan:0" */
    ela_device_info device_info;
};

/* The built-in CPU backend. */
const ela_backend_iface *ela_cpu_backend_iface(void);

#endif

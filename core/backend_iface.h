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
#define ELA_BACKEND_API_VERSION 5u

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

/* The sparse ops' arguments after core/ops/<op>.c validated them: shapes agree, dtypes are
 * supported, scale is resolved (never 0), positions are absolute. Field meanings follow the
 * public functions in ela.h of the same name. */
typedef struct {
    ela_attn_dense_args attn;    /* q, k, v, o, lse, sizes, causal (always 1), q_pos0, scale */
    const ela_head_mode *modes;  /* [hq], validated: sink/local >= 0, mask in range */
    const ela_tensor *masks;     /* u8 [n_masks, nqb, nkb] or NULL */
    int64_t qb0;                 /* absolute query block of row 0: q_pos0 / 128 */
    int64_t nqb, nkb;            /* query blocks the rows touch, key blocks ceil(n / 128) */
} ela_attn_blocks_args;

typedef struct {
    const ela_tensor *q, *k;     /* [L, Hq, d], [Hkv, n, d] */
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;              /* multiple of 128 */
    float scale;                 /* 1/sqrt(d) unless given; the op divides it by stride */
    const int *heads;            /* [n_heads] query heads, each in [0, hq) */
    int n_heads;
    int stride;
    float threshold;
    ela_tensor *masks;           /* u8 [n_heads, nqb, nkb] */
    int64_t nqb, nkb;
    int64_t *kept_blocks;        /* may be NULL */
} ela_xattn_estimate_args;

typedef struct {
    const ela_tensor *k_pre;     /* [Hkv, L, d] */
    int64_t L, d, hidden;        /* hidden: the MLPs' inner width */
    int hkv;
    ela_router_weights w;        /* all ten present, shapes checked */
    int *full;                   /* host [hkv] */
    float *logits;               /* host [hkv, 2] or NULL */
} ela_router_eval_args;

typedef struct {
    const ela_tensor *q, *k;     /* [L, Hq, d], [Hkv, L, d] */
    int64_t L, d;
    int hq, hkv;
    float scale;
    ela_tsa_params p;            /* validated: window >= 1, pool odd >= 1, coverage in [0, 1) */
    ela_tensor *idx;             /* i32 [hq, L] */
    int64_t *n_sel;
} ela_token_select_args;

typedef struct {
    ela_attn_dense_args attn;    /* k, v are [Hkv, L, d] with n == L; causal as given */
    const ela_tensor *idx;       /* i32 [hq, >= n_sel] */
    int64_t n_sel;
} ela_attn_token_sparse_args;

typedef struct {
    const ela_tensor *q, *k;     /* [1, Hq, d], [Hkv, n, d] */
    int64_t n, d;
    int hq, hkv;
    float scale;
    ela_decode_select_params p;  /* validated: budget >= 1, recent in [0, 1], sinks >= 0 */
    ela_tensor *idx;             /* i32 [>= min(budget, n)] */
    int64_t *count;
} ela_decode_select_args;

/* token_compress / token_decompress: idx rows checked (strictly ascending in [0, L)). */
typedef struct {
    const ela_tensor *q, *k, *v; /* [L, Hq, d], [Hkv, L, d] x 2 */
    const ela_tensor *idx;       /* i32 [Hq, >= n_sel] */
    ela_tensor *qc, *kc, *vc;    /* [n_sel, Hq, d], [Hq, n_sel, d] x 2 */
    int64_t L, n_sel, d;
    int hq, hkv;
} ela_token_compress_args;

typedef struct {
    const ela_tensor *oc;        /* [n_sel, Hq, d] */
    const ela_tensor *idx;       /* i32 [Hq, >= n_sel] */
    ela_tensor *o;               /* [L, Hq, d] */
    int64_t L, n_sel, d;
    int hq;
} ela_token_decompress_args;

typedef struct {
    ela_attn_dense_args attn;    /* L = 1, lse NULL, causal 1, q_pos0 = n - 1 */
    ela_decode_select_params p;  /* validated as for decode_select */
    ela_tensor *idx;             /* i32 [>= min(budget, n)] */
    int64_t *count;
} ela_decode_select_attend_args;

typedef struct {
    ela_attn_dense_args attn;
    const ela_tensor *idx;       /* i32 [m] (shared) or [hkv, m] (per KV head) */
    int64_t m;
    int per_head;                /* idx is [hkv, m] */
} ela_attn_gather_args;

typedef struct {
    const ela_tensor *q, *k;     /* [L, Hq, d], [Hkv, n, d] */
    int64_t L, n, d;
    int hq, hkv;
    int64_t q_pos0;
    float scale;
    int block, top;
    ela_tensor *blocks;          /* i32 [L, hkv, top] */
} ela_nsa_select_args;

typedef struct {
    ela_attn_dense_args attn;    /* causal (always 1) */
    const ela_tensor *blocks;    /* i32 [L, hkv, top] or NULL (full attention) */
    const ela_tensor *gate;      /* f32 [L, hq] or NULL */
    int block, top;
} ela_attn_nsa_args;

/* Model ops (ela.h "Model ops"), validated: shapes agree, innermost dims packed. */
typedef struct {
    const ela_tensor *x, *w, *bias; /* [M, K] f32, [N, K], [N] f32 or NULL */
    ela_tensor *y;                  /* [M, N] f32 */
    int64_t M, N, K;
} ela_matmul_args;

typedef struct {
    const ela_tensor *x, *w; /* x viewed as [rows, D] (its outer dims flattened), w [D] */
    ela_tensor *y;
    int64_t rows, D;
    float eps;
} ela_rms_norm_args;

typedef struct {
    ela_tensor *x;          /* f32 [M, H, d] */
    const ela_tensor *pos;  /* i32 [M] */
    int64_t M, d;
    int H;
    ela_rope_params p;      /* n_rot resolved (never 0) */
    /* Computed once by the core (core/ops/rope_freqs.h), so every backend rotates by the same
     * angles: host array [n_rot / 2] of frequencies after scaling and freq_factors, and the
     * factor cos and sin are multiplied by (YaRN's attention scaling; 1 otherwise). */
    const double *inv_freq;
    float attn_scale;
} ela_rope_args;

typedef struct {
    const ela_tensor *a, *b; /* silu_mul: a = gate, b = up; add: a + b; same extents, f32 */
    ela_tensor *out;
    int64_t numel;
} ela_binary_args;

typedef struct {
    ela_tensor *x;          /* f32 [M, H, d], gated in place */
    const ela_tensor *g;    /* f32 [M, >= H * stride] */
    int64_t M, d;
    int H, stride, offset;
} ela_sigmoid_gate_args;

typedef struct {
    const ela_tensor *table, *ids; /* [V, D], i32 [M] (host-checked in range) */
    ela_tensor *out;               /* f32 [M, D] */
    int64_t V, D, M;
} ela_get_rows_args;

typedef struct {
    const ela_tensor *src;
    ela_tensor *dst; /* same extents */
} ela_copy_args;

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
    ela_status (*attn_blocks)(void *ctx, const ela_attn_blocks_args *args);
    ela_status (*xattn_estimate)(void *ctx, const ela_xattn_estimate_args *args);
    ela_status (*router_eval)(void *ctx, const ela_router_eval_args *args);
    ela_status (*token_select)(void *ctx, const ela_token_select_args *args);
    ela_status (*attn_token_sparse)(void *ctx, const ela_attn_token_sparse_args *args);
    ela_status (*decode_select)(void *ctx, const ela_decode_select_args *args);
    ela_status (*attn_gather)(void *ctx, const ela_attn_gather_args *args);
    ela_status (*nsa_select)(void *ctx, const ela_nsa_select_args *args);
    ela_status (*attn_nsa)(void *ctx, const ela_attn_nsa_args *args);
    /* attn_dense (decode) + decode_select in one pass over K; NULL: the core's callers run both */
    ela_status (*decode_select_attend)(void *ctx, const ela_decode_select_attend_args *args);
    /* Token Sparse Attention's gather and scatter (tsa+xattn composes them with other ops) */
    ela_status (*token_compress)(void *ctx, const ela_token_compress_args *args);
    ela_status (*token_decompress)(void *ctx, const ela_token_decompress_args *args);

    ela_status (*matmul)(void *ctx, const ela_matmul_args *args);
    ela_status (*rms_norm)(void *ctx, const ela_rms_norm_args *args);
    ela_status (*rope)(void *ctx, const ela_rope_args *args);
    ela_status (*silu_mul)(void *ctx, const ela_binary_args *args);
    ela_status (*add)(void *ctx, const ela_binary_args *args);
    ela_status (*get_rows)(void *ctx, const ela_get_rows_args *args);
    ela_status (*copy)(void *ctx, const ela_copy_args *args);
    ela_status (*sigmoid_gate)(void *ctx, const ela_sigmoid_gate_args *args);
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

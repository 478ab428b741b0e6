/* The built-in CPU backend: host memory buffers, one device (this machine), the SIMD level and
 * thread count fixed at open, and the op table. Kernels live in one file per op. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "core/alloc.h"
#include "core/backend_iface.h"
#include "core/error.h"

static ela_status cpu_list_devices(ela_device_info *out, int capacity, int *count) {
    *count = 1;
    if (capacity < 1)
        return ELA_OK;
    const cpu_info *ci = cpu_detect();
    int threads = 1;
    const char *threads_note = "";
    if (cpu_thread_count(&threads) != ELA_OK)
        threads_note = " (ELA_THREADS invalid)";
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ci->model);
    out->kind = ELA_DEVICE_CPU;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    out->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    cpu_level level = ci->best;
    if (cpu_level_choose(&level) != ELA_OK)
        level = ci->best;
    snprintf(out->details, sizeof out->details, "simd=%s features=[%s] threads=%d%s openmp=%s openblas=%s",
             cpu_level_name(level), ci->features, threads, threads_note,
#ifdef _OPENMP
             "yes",
#else
             "no",
#endif
#ifdef ELA_HAVE_OPENBLAS
             "yes"
#else
             "no"
#endif
    );
    return ELA_OK;
}

static ela_status cpu_open(int device, void **ctx) {
    if (device != 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "cpu: no device %d", device);
    cpu_level level;
    int threads;
    ela_status st = cpu_level_choose(&level);
    if (st == ELA_OK)
        st = cpu_thread_count(&threads);
    if (st != ELA_OK)
        return st;
    cpu_backend *cpu = ela_calloc(1, sizeof *cpu);
    if (!cpu)
        return ela_fail(ELA_ERR_OOM, "cpu: out of host memory");
    cpu->level = level;
    cpu->attn = cpu_level_kernels(level);
    cpu->threads = threads;
    *ctx = cpu;
    return ELA_OK;
}

static void cpu_close(void *ctx) { ela_free(ctx); }

static ela_status cpu_buffer_alloc(void *ctx, size_t bytes, void **handle) {
    (void)ctx;
    *handle = ela_aligned_alloc(bytes);
    if (!*handle)
        return ela_fail(ELA_ERR_OOM, "cpu: cannot allocate %zu bytes", bytes);
    return ELA_OK;
}

static void cpu_buffer_free(void *ctx, void *handle) {
    (void)ctx;
    ela_aligned_free(handle);
}

static void *cpu_buffer_host_ptr(void *ctx, void *handle) {
    (void)ctx;
    return handle;
}

static ela_status cpu_buffer_write(void *ctx, void *handle, size_t offset, const void *src,
                                   size_t bytes) {
    (void)ctx;
    memcpy((char *)handle + offset, src, bytes);
    return ELA_OK;
}

static ela_status cpu_buffer_read(void *ctx, void *handle, size_t offset, void *dst, size_t bytes) {
    (void)ctx;
    memcpy(dst, (const char *)handle + offset, bytes);
    return ELA_OK;
}

static ela_status cpu_synchronize(void *ctx) {
    (void)ctx; /* every CPU op has finished when it returns */
    return ELA_OK;
}

static const ela_backend_iface cpu_iface;

/* The ops that read a KV cache take q8_0 K and V (core/ops allows q8_0 for k and v only). */
static int cpu_reads_kv(ela_op op) {
    return op == ELA_OP_ATTN_DENSE || op == ELA_OP_ATTN_BLOCKS || op == ELA_OP_XATTN_ESTIMATE ||
           op == ELA_OP_TOKEN_SELECT || op == ELA_OP_ATTN_TOKEN_SPARSE ||
           op == ELA_OP_DECODE_SELECT || op == ELA_OP_ATTN_GATHER || op == ELA_OP_NSA_SELECT ||
           op == ELA_OP_ATTN_NSA || op == ELA_OP_DECODE_SELECT_ATTEND;
}

/* Every float dtype for every op the iface implements; besides them q8_0 weights, tables and
 * copies (matmul, get_rows, copy, token_compress) and i32 ids and positions (get_rows, rope). */
static int cpu_supports(void *ctx, ela_op op, const ela_dtype *dtypes, int n_dtypes) {
    (void)ctx;
    unsigned allowed = (1u << ELA_F32) | (1u << ELA_F16) | (1u << ELA_BF16);
    if (op == ELA_OP_MATMUL || op == ELA_OP_GET_ROWS || op == ELA_OP_COPY ||
        op == ELA_OP_TOKEN_COMPRESS || cpu_reads_kv(op))
        allowed |= 1u << ELA_Q8_0;
    if (op == ELA_OP_GET_ROWS || op == ELA_OP_ROPE)
        allowed |= 1u << ELA_I32;
    for (int i = 0; i < n_dtypes; i++)
        if ((int)dtypes[i] < 0 || dtypes[i] >= ELA_DTYPE_COUNT || !(allowed & (1u << dtypes[i])))
            return 0;
    const ela_backend_iface *f = &cpu_iface;
    switch (op) {
    case ELA_OP_ATTN_DENSE: return f->attn_dense != NULL;
    case ELA_OP_ATTN_BLOCKS: return f->attn_blocks != NULL;
    case ELA_OP_XATTN_ESTIMATE: return f->xattn_estimate != NULL;
    case ELA_OP_ROUTER_EVAL: return f->router_eval != NULL;
    case ELA_OP_TOKEN_SELECT: return f->token_select != NULL;
    case ELA_OP_ATTN_TOKEN_SPARSE: return f->attn_token_sparse != NULL;
    case ELA_OP_DECODE_SELECT: return f->decode_select != NULL;
    case ELA_OP_ATTN_GATHER: return f->attn_gather != NULL;
    case ELA_OP_NSA_SELECT: return f->nsa_select != NULL;
    case ELA_OP_ATTN_NSA: return f->attn_nsa != NULL;
    case ELA_OP_MATMUL: return f->matmul != NULL;
    case ELA_OP_RMS_NORM: return f->rms_norm != NULL;
    case ELA_OP_ROPE: return f->rope != NULL;
    case ELA_OP_SILU_MUL: return f->silu_mul != NULL;
    case ELA_OP_ADD: return f->add != NULL;
    case ELA_OP_GET_ROWS: return f->get_rows != NULL;
    case ELA_OP_COPY: return f->copy != NULL;
    case ELA_OP_DECODE_SELECT_ATTEND: return f->decode_select_attend != NULL;
    case ELA_OP_TOKEN_COMPRESS: return f->token_compress != NULL;
    case ELA_OP_TOKEN_DECOMPRESS: return f->token_decompress != NULL;
    case ELA_OP_SIGMOID_GATE: return f->sigmoid_gate != NULL;
    default: return 0;
    }
}

static const ela_backend_iface cpu_iface = {
    .api_version = ELA_BACKEND_API_VERSION,
    .name = "cpu",
    .priority = 0,
    .list_devices = cpu_list_devices,
    .open = cpu_open,
    .close = cpu_close,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_host_ptr = cpu_buffer_host_ptr,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .synchronize = cpu_synchronize,
    .supports = cpu_supports,
    .attn_dense = cpu_attn_dense,
    .attn_blocks = cpu_attn_blocks,
    .xattn_estimate = cpu_xattn_estimate,
    .router_eval = cpu_router_eval,
    .token_select = cpu_token_select,
    .attn_token_sparse = cpu_attn_token_sparse,
    .decode_select = cpu_decode_select,
    .attn_gather = cpu_attn_gather,
    .nsa_select = cpu_nsa_select,
    .attn_nsa = cpu_attn_nsa,
    .decode_select_attend = cpu_decode_select_attend,
    .token_compress = cpu_token_compress,
    .token_decompress = cpu_token_decompress,
    .matmul = cpu_matmul,
    .rms_norm = cpu_rms_norm,
    .rope = cpu_rope,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .get_rows = cpu_get_rows,
    .copy = cpu_copy,
    .sigmoid_gate = cpu_sigmoid_gate,
};

const ela_backend_iface *ela_cpu_backend_iface(void) { return &cpu_iface; }

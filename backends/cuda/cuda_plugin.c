/* CUDA backend plugin (DESIGN.md 3): the iface libela loads from libela-cuda.so through
 * ela_plugin_init, device listing, open/close, supports() and the op table (dense attention, the
 * sparse ops attn_blocks, xattn_estimate, router_eval, attn_gather, decode_select, and the model
 * ops; the others are NULL and refused by the core). The CUDA runtime is
 * linked statically and finds the driver itself on first use, so loading never fails for want
 * of a GPU: list_devices then answers ELA_ERR_UNAVAILABLE with cudaGetDeviceCount's reason.
 * Environment (read at open, for tests): ELA_CUDA_FORCE=generic runs every attention call (and
 * the sparse ops) on the simple kernels; ELA_CUDA_SPLITS=N splits the keys N ways wherever a
 * kernel can split.
 * An open backend is used by one thread at a time; each has its own stream. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"

static const ela_host_api *host;

ela_status cuda_fail(ela_status status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (host)
        host->set_error("%s", msg);
    return status;
}

ela_status cuda_fail_err(cudaError_t err, const char *what) {
    (void)cudaGetLastError();
    /* `what` is the call's source text: name the function, not its arguments. */
    int len = 0;
    while (what[len] && what[len] != '(' && len < 64)
        len++;
    ela_status st = ELA_ERR_BACKEND;
    if (err == cudaErrorMemoryAllocation)
        st = ELA_ERR_OOM;
    else if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
             err == cudaErrorInvalidDevice)
        st = ELA_ERR_UNAVAILABLE;
    return cuda_fail(st, "cuda: %.*s: %s (%s)", len, what, cudaGetErrorString(err),
                     cudaGetErrorName(err));
}

ela_status cuda_use(cuda_ctx *ctx) {
    CUDA_TRY(cudaSetDevice(ctx->device));
    return ELA_OK;
}

static void device_info(int dev, const struct cudaDeviceProp *p, ela_device_info *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%.127s", p->name);
    out->kind = p->integrated ? ELA_DEVICE_INTEGRATED_GPU : ELA_DEVICE_DISCRETE_GPU;
    out->memory_bytes = (uint64_t)p->totalGlobalMem;
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(out->details, sizeof out->details,
             "sm_%d%d, %d SMs, %d MiB L2, %zu KiB shared/block, driver %d.%d, runtime %d.%d, "
             "device %d",
             p->major, p->minor, p->multiProcessorCount, p->l2CacheSize >> 20,
             p->sharedMemPerBlockOptin >> 10, drv / 1000, drv % 1000 / 10, rt / 1000,
             rt % 1000 / 10, dev);
}

static ela_status cuda_list_devices(ela_device_info *out, int capacity, int *count) {
    int n = 0;
    *count = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return cuda_fail(ELA_ERR_UNAVAILABLE, "no CUDA device: cudaGetDeviceCount: %s (%s)",
                         cudaGetErrorString(err), cudaGetErrorName(err));
    }
    if (n <= 0)
        return cuda_fail(ELA_ERR_UNAVAILABLE, "no CUDA device: cudaGetDeviceCount found none");
    for (int i = 0; i < n && i < capacity; i++) {
        struct cudaDeviceProp p;
        CUDA_TRY(cudaGetDeviceProperties(&p, i));
        device_info(i, &p, &out[i]);
    }
    *count = n;
    return ELA_OK;
}

static void cuda_close(void *vctx) {
    cuda_ctx *ctx = vctx;
    if (!ctx)
        return;
    /* Nothing can report an error from here: do what can be done. */
    if (cudaSetDevice(ctx->device) == cudaSuccess && ctx->stream)
        cudaStreamSynchronize(ctx->stream);
    if (ctx->staging)
        cudaFreeHost(ctx->staging);
    if (ctx->win)
        cudaFreeHost(ctx->win);
    if (ctx->pool)
        cudaMemPoolDestroy(ctx->pool);
    if (ctx->stream)
        cudaStreamDestroy(ctx->stream);
    (void)cudaGetLastError();
    free(ctx);
}

static ela_status cuda_open(int device, void **out) {
    int n = 0;
    CUDA_TRY(cudaGetDeviceCount(&n));
    if (device < 0 || device >= n)
        return cuda_fail(ELA_ERR_INVALID_ARG, "cuda: no device %d (%d present)", device, n);
    cuda_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return cuda_fail(ELA_ERR_OOM, "cuda: out of host memory");
    ela_status st = ELA_OK;
    ctx->device = device;
    const char *force = getenv("ELA_CUDA_FORCE");
    if (force && strcmp(force, "generic") == 0)
        ctx->path = CUDA_PATH_GENERIC;
    const char *splits = getenv("ELA_CUDA_SPLITS");
    if (splits && *splits) {
        long v = strtol(splits, NULL, 10);
        ctx->force_splits = v > 0 && v <= 256 ? (int)v : 0;
    }
    CUDA_GOTO(cudaSetDevice(device), st, fail);
    CUDA_GOTO(cudaGetDeviceProperties(&ctx->props, device), st, fail);
    if (ctx->props.major < 8) {
        st = cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: %s is sm_%d%d; the plugin is built for sm_80 "
                       "and newer", ctx->props.name, ctx->props.major, ctx->props.minor);
        goto fail;
    }
    CUDA_GOTO(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), st, fail);
    int pools = 0;
    CUDA_GOTO(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device), st, fail);
    if (pools) {
        /* An own pool that keeps up to 1 GiB of freed memory cached across synchronizations,
         * so per-call scratch costs no driver call in steady state. */
        struct cudaMemPoolProps pp;
        memset(&pp, 0, sizeof pp);
        pp.allocType = cudaMemAllocationTypePinned;
        pp.handleTypes = cudaMemHandleTypeNone;
        pp.location.type = cudaMemLocationTypeDevice;
        pp.location.id = device;
        CUDA_GOTO(cudaMemPoolCreate(&ctx->pool, &pp), st, fail);
        uint64_t keep = 1ull << 30;
        CUDA_GOTO(cudaMemPoolSetAttribute(ctx->pool, cudaMemPoolAttrReleaseThreshold, &keep), st,
                  fail);
    }
    CUDA_GOTO(cudaMallocHost((void **)&ctx->staging, CUDA_STAGING_BYTES), st, fail);
    CUDA_GOTO(cudaMallocHost((void **)&ctx->win, CUDA_WINDOW_BYTES), st, fail);
    *out = ctx;
    return ELA_OK;
fail:
    cuda_close(ctx);
    return st;
}

/* The float dtypes for every op in the table; besides them q8_0 weights, tables and copies
 * (matmul, get_rows, copy, token_compress) and i32 ids and positions (get_rows, rope), as the CPU backend. */
static int cuda_supports(void *ctx, ela_op op, const ela_dtype *dtypes, int n_dtypes) {
    (void)ctx;
    unsigned allowed = (1u << ELA_F32) | (1u << ELA_F16) | (1u << ELA_BF16);
    if (op == ELA_OP_MATMUL || op == ELA_OP_GET_ROWS || op == ELA_OP_COPY ||
        op == ELA_OP_TOKEN_COMPRESS)
        allowed |= 1u << ELA_Q8_0;
    if (op == ELA_OP_GET_ROWS || op == ELA_OP_ROPE)
        allowed |= 1u << ELA_I32;
    for (int i = 0; i < n_dtypes; i++)
        if ((int)dtypes[i] < 0 || dtypes[i] >= ELA_DTYPE_COUNT || !(allowed & (1u << dtypes[i])))
            return 0;
    switch (op) {
    case ELA_OP_ATTN_DENSE:
    case ELA_OP_ATTN_BLOCKS:
    case ELA_OP_XATTN_ESTIMATE:
    case ELA_OP_ROUTER_EVAL:
    case ELA_OP_ATTN_GATHER:
    case ELA_OP_DECODE_SELECT:
    case ELA_OP_TOKEN_SELECT:
    case ELA_OP_ATTN_TOKEN_SPARSE:
    case ELA_OP_NSA_SELECT:
    case ELA_OP_ATTN_NSA:
    case ELA_OP_MATMUL:
    case ELA_OP_RMS_NORM:
    case ELA_OP_ROPE:
    case ELA_OP_SILU_MUL:
    case ELA_OP_ADD:
    case ELA_OP_GET_ROWS:
    case ELA_OP_COPY:
    case ELA_OP_SIGMOID_GATE:
    case ELA_OP_TOKEN_COMPRESS:
    case ELA_OP_TOKEN_DECOMPRESS: return 1;
    default: return 0;
    }
}

static const ela_backend_iface cuda_iface = {
    .api_version = ELA_BACKEND_API_VERSION,
    .name = "cuda",
    .priority = 300,
    .list_devices = cuda_list_devices,
    .open = cuda_open,
    .close = cuda_close,
    .buffer_alloc = cuda_buffer_alloc,
    .buffer_free = cuda_buffer_free,
    .buffer_host_ptr = cuda_buffer_host_ptr,
    .buffer_write = cuda_buffer_write,
    .buffer_read = cuda_buffer_read,
    .synchronize = cuda_synchronize,
    .supports = cuda_supports,
    .attn_dense = cuda_attn_dense,
    .attn_blocks = cuda_attn_blocks,
    .xattn_estimate = cuda_xattn_estimate,
    .router_eval = cuda_router_eval,
    .attn_gather = cuda_attn_gather,
    .decode_select = cuda_decode_select,
    .token_select = cuda_token_select,
    .attn_token_sparse = cuda_attn_token_sparse,
    .nsa_select = cuda_nsa_select,
    .attn_nsa = cuda_attn_nsa,
    .matmul = cuda_matmul,
    .rms_norm = cuda_rms_norm,
    .rope = cuda_rope,
    .silu_mul = cuda_silu_mul,
    .add = cuda_add,
    .get_rows = cuda_get_rows,
    .copy = cuda_copy,
    .sigmoid_gate = cuda_sigmoid_gate,
    .token_compress = cuda_token_compress,
    .token_decompress = cuda_token_decompress,
};

const ela_backend_iface *ela_plugin_init(const ela_host_api *h) {
    /* A host of another API version may lay ela_host_api out differently: do not call into it,
     * return the iface and let the registry refuse it by version with its own message. */
    if (!h || h->api_version != ELA_BACKEND_API_VERSION)
        return &cuda_iface;
    host = h;
    return &cuda_iface;
}

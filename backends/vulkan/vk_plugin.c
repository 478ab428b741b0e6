/* Vulkan backend plugin (DESIGN.md 3): the iface libela loads from libela-vulkan.so through
 * ela_plugin_init, device listing, open/close, supports() and the op table.
 * Environment: ELA_VK_VALIDATION=1 (or =sync) runs under VK_LAYER_KHRONOS_validation and turns
 * every validation error into ELA_ERR_BACKEND from the call that caused it; ELA_VK_DISABLE=
 * uma,storage16,subgroup switches features off to exercise the fallbacks; ELA_VK_LOADER names
 * another Vulkan loader library. Ops record into a command buffer that is submitted when the
 * host needs results or at ela_backend_synchronize (vk_submit.c). An open backend is used by one
 * thread at a time; separate backends (vulkan:0 opened twice) are independent. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vk_backend.h"
#include "vk_model.h"
#include "vk_sparse.h"

static const ela_host_api *host;

ela_status vk_fail(ela_status status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (host)
        host->set_error("%s", msg);
    return status;
}

const char *vk_result_str(VkResult r) {
    switch (r) {
#define CASE(x) case x: return #x;
    CASE(VK_SUCCESS)
    CASE(VK_NOT_READY)
    CASE(VK_TIMEOUT)
    CASE(VK_INCOMPLETE)
    CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
    CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    CASE(VK_ERROR_INITIALIZATION_FAILED)
    CASE(VK_ERROR_DEVICE_LOST)
    CASE(VK_ERROR_MEMORY_MAP_FAILED)
    CASE(VK_ERROR_LAYER_NOT_PRESENT)
    CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    CASE(VK_ERROR_FEATURE_NOT_PRESENT)
    CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    CASE(VK_ERROR_TOO_MANY_OBJECTS)
    CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    CASE(VK_ERROR_FRAGMENTED_POOL)
    CASE(VK_ERROR_OUT_OF_POOL_MEMORY)
#undef CASE
    default: return "VK_ERROR_UNKNOWN";
    }
}

ela_status vk_fail_result(VkResult r, const char *what) {
    int oom = r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ||
              r == VK_ERROR_OUT_OF_POOL_MEMORY;
    return vk_fail(oom ? ELA_ERR_OOM : ELA_ERR_BACKEND, "vulkan: %s: %s", what, vk_result_str(r));
}

static ela_status vk_list_devices(ela_device_info *out, int capacity, int *count) {
    const vk_physical *devs;
    int n = 0;
    *count = 0;
    ela_status st = vk_system(&devs, &n);
    if (st != ELA_OK)
        return st;
    for (int i = 0; i < n && i < capacity; i++)
        out[i] = devs[i].info;
    *count = n;
    return ELA_OK;
}

static ela_status vk_open(int device, void **ctx) {
    vk_ctx *c = NULL;
    ela_status st = vk_device_open(device, &c);
    if (st == ELA_OK)
        *ctx = c;
    return st;
}

static void vk_close(void *ctx) { vk_device_close(ctx); }

static int vk_supports(void *ctx, ela_op op, const ela_dtype *dtypes, int n_dtypes) {
    (void)ctx;
    unsigned allowed = (1u << ELA_F32) | (1u << ELA_F16) | (1u << ELA_BF16);
    /* The model ops and the token copies read q8_0 weights, tables and KV rows (and copy
     * writes them); rope and get_rows take i32 positions and ids. */
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
    case ELA_OP_ATTN_GATHER:
    case ELA_OP_XATTN_ESTIMATE:
    case ELA_OP_DECODE_SELECT:
    case ELA_OP_DECODE_SELECT_ATTEND:
    case ELA_OP_TOKEN_SELECT:
    case ELA_OP_ATTN_TOKEN_SPARSE:
    case ELA_OP_NSA_SELECT:
    case ELA_OP_ATTN_NSA:
    case ELA_OP_ROUTER_EVAL:
    case ELA_OP_MATMUL:
    case ELA_OP_RMS_NORM:
    case ELA_OP_ROPE:
    case ELA_OP_SILU_MUL:
    case ELA_OP_ADD:
    case ELA_OP_GET_ROWS:
    case ELA_OP_COPY:
    case ELA_OP_SIGMOID_GATE:
    case ELA_OP_TOKEN_COMPRESS:
    case ELA_OP_TOKEN_DECOMPRESS:
        return 1;
    default:
        return 0;
    }
}

static const ela_backend_iface vk_iface = {
    .api_version = ELA_BACKEND_API_VERSION,
    .name = "vulkan",
    .priority = 200,
    .list_devices = vk_list_devices,
    .open = vk_open,
    .close = vk_close,
    .buffer_alloc = vk_buffer_alloc,
    .buffer_free = vk_buffer_free,
    .buffer_host_ptr = vk_buffer_host_ptr,
    .buffer_write = vk_buffer_write,
    .buffer_read = vk_buffer_read,
    .synchronize = vk_synchronize,
    .supports = vk_supports,
    .attn_dense = vk_attn_dense,
    .attn_blocks = vk_attn_blocks,
    .xattn_estimate = vk_xattn_estimate,
    .router_eval = vk_router_eval,
    .decode_select = vk_decode_select,
    .decode_select_attend = vk_decode_select_attend,
    .token_select = vk_token_select,
    .attn_token_sparse = vk_attn_token_sparse,
    .nsa_select = vk_nsa_select,
    .attn_nsa = vk_attn_nsa,
    .attn_gather = vk_attn_gather,
    .token_compress = vk_token_compress,
    .token_decompress = vk_token_decompress,
    .matmul = vk_matmul,
    .rms_norm = vk_rms_norm,
    .rope = vk_rope,
    .silu_mul = vk_silu_mul,
    .add = vk_add,
    .get_rows = vk_get_rows,
    .copy = vk_copy,
    .sigmoid_gate = vk_sigmoid_gate,
};

const ela_backend_iface *ela_plugin_init(const ela_host_api *h) {
    /* A host of another API version may lay ela_host_api out differently: do not call into it,
     * return the iface and let the registry refuse it by version with its own message. */
    if (!h || h->api_version != ELA_BACKEND_API_VERSION)
        return &vk_iface;
    host = h;
    if (vk_loader_open() != ELA_OK)
        return NULL; /* "no Vulkan loader: ..." was reported */
    return &vk_iface;
}

/* Vulkan backend: the key tile of the FMA attention shaders (attn_dense, attn_blocks,
 * attn_gather, attn_token_sparse, attn_nsa), which stage BC keys of K and V in shared memory. */
#include "vk_backend.h"

/* A GPU's tiles take at most this fraction of its shared memory, so that several workgroups
 * share an SM: on an H100 through the NVIDIA driver (48 KiB limit, d 128, f16, Hq 32, Hkv 8),
 * dense attention with 32-key tiles (35 KB) ran decode at 128K keys at 0.22 TB/s and prefill at
 * 32K at 4.7 TFLOP/s, with 16 keys at 0.38 and 7.6, with 8 keys at 0.37 and 11.4. */
#define GPU_SHARED_SHARE 4

uint32_t vk_attn_tile_keys(const vk_ctx *ctx, uint64_t per_key, uint64_t fixed, uint32_t max_bc) {
    uint64_t smem = ctx->phys->props.limits.maxComputeSharedMemorySize;
    if (smem <= fixed || per_key == 0)
        return 0;
    uint64_t bc = (smem - fixed) / per_key;
    if (bc == 0)
        return 0;
    /* A CPU device (lavapipe) takes the largest tile; a GPU a share, a power of two. */
    if (ctx->phys->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU) {
        uint64_t room = smem / GPU_SHARED_SHARE;
        uint64_t share = room > fixed ? (room - fixed) / per_key : 0;
        bc = share < bc ? (share > 1 ? share : 1) : bc;
        if (bc > max_bc)
            bc = max_bc;
        while ((bc & (bc - 1)) != 0)
            bc &= bc - 1;
    }
    return (uint32_t)(bc > max_bc ? max_bc : bc);
}

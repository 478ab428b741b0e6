/* Vulkan backend: the SPIR-V of every shader variant, compiled from the .comp files in shaders/
 * by glslang at build time and embedded by embed_spirv.cmake into the generated
 * vk_shaders_spv.c. */
#ifndef ELA_BACKENDS_VULKAN_VK_SHADERS_H
#define ELA_BACKENDS_VULKAN_VK_SHADERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;     /* variant: "attn_dense_sg16" = attn_dense.comp with ELA_SUBGROUP and
                             ELA_STORAGE16 */
    const uint32_t *code;
    size_t words;
} vk_spirv;

extern const vk_spirv vk_spirv_table[];
extern const int vk_spirv_count;

#endif

/* Vulkan backend: compute pipelines. Every op shares one descriptor set layout (VK_BINDINGS
 * storage buffers, shaders/attn_io.glsl) and one pipeline layout with 128 bytes of push
 * constants; a pipeline is a shader variant plus specialization constants (head dim, dtypes,
 * tile sizes), created on first use and kept for the life of the context. */
#include <stdlib.h>
#include <string.h>

#include "vk_backend.h"
#include "vk_shaders.h"

#define PUSH_BYTES 128

ela_status vk_pipelines_init(vk_ctx *ctx) {
    VkDescriptorSetLayoutBinding b[VK_BINDINGS];
    for (uint32_t i = 0; i < VK_BINDINGS; i++) {
        memset(&b[i], 0, sizeof b[i]);
        b[i].binding = i;
        b[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        b[i].descriptorCount = 1;
        b[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    lci.bindingCount = VK_BINDINGS;
    lci.pBindings = b;
    VkResult r = vkf.CreateDescriptorSetLayout(ctx->dev, &lci, NULL, &ctx->set_layout);
    if (r != VK_SUCCESS)
        return vk_fail_result(r, "vkCreateDescriptorSetLayout");

    VkPushConstantRange range = {VK_SHADER_STAGE_COMPUTE_BIT, 0, PUSH_BYTES};
    VkPipelineLayoutCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pci.setLayoutCount = 1;
    pci.pSetLayouts = &ctx->set_layout;
    pci.pushConstantRangeCount = 1;
    pci.pPushConstantRanges = &range;
    if ((r = vkf.CreatePipelineLayout(ctx->dev, &pci, NULL, &ctx->layout)) != VK_SUCCESS)
        return vk_fail_result(r, "vkCreatePipelineLayout");

    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, VK_MAX_SETS * VK_BINDINGS};
    VkDescriptorPoolCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dci.maxSets = VK_MAX_SETS;
    dci.poolSizeCount = 1;
    dci.pPoolSizes = &ps;
    if ((r = vkf.CreateDescriptorPool(ctx->dev, &dci, NULL, &ctx->desc_pool)) != VK_SUCCESS)
        return vk_fail_result(r, "vkCreateDescriptorPool");

    ctx->modules = calloc((size_t)vk_spirv_count, sizeof *ctx->modules);
    if (!ctx->modules)
        return vk_fail(ELA_ERR_OOM, "vulkan: out of host memory");
    return ELA_OK;
}

void vk_pipelines_destroy(vk_ctx *ctx) {
    if (!ctx->dev)
        return;
    for (int i = 0; i < ctx->n_pipes; i++)
        vkf.DestroyPipeline(ctx->dev, ctx->pipes[i].pipeline, NULL);
    free(ctx->pipes);
    ctx->pipes = NULL;
    ctx->n_pipes = ctx->cap_pipes = 0;
    for (int i = 0; ctx->modules && i < vk_spirv_count; i++)
        if (ctx->modules[i])
            vkf.DestroyShaderModule(ctx->dev, ctx->modules[i], NULL);
    free(ctx->modules);
    ctx->modules = NULL;
    if (ctx->desc_pool)
        vkf.DestroyDescriptorPool(ctx->dev, ctx->desc_pool, NULL);
    if (ctx->layout)
        vkf.DestroyPipelineLayout(ctx->dev, ctx->layout, NULL);
    if (ctx->set_layout)
        vkf.DestroyDescriptorSetLayout(ctx->dev, ctx->set_layout, NULL);
    ctx->desc_pool = VK_NULL_HANDLE;
    ctx->layout = VK_NULL_HANDLE;
    ctx->set_layout = VK_NULL_HANDLE;
}

static ela_status module_get(vk_ctx *ctx, const char *name, int *index) {
    for (int i = 0; i < vk_spirv_count; i++) {
        if (strcmp(vk_spirv_table[i].name, name) != 0)
            continue;
        if (!ctx->modules[i]) {
            VkShaderModuleCreateInfo mci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
            mci.codeSize = vk_spirv_table[i].words * 4;
            mci.pCode = vk_spirv_table[i].code;
            VkResult r = vkf.CreateShaderModule(ctx->dev, &mci, NULL, &ctx->modules[i]);
            if (r != VK_SUCCESS)
                return vk_fail_result(r, "vkCreateShaderModule");
        }
        *index = i;
        return ELA_OK;
    }
    return vk_fail(ELA_ERR_INTERNAL, "vulkan: no embedded shader named %s", name);
}

ela_status vk_pipeline_get(vk_ctx *ctx, const char *name, const uint32_t *spec, int n_spec,
                           VkPipeline *out) {
    if (n_spec > VK_MAX_SPEC)
        return vk_fail(ELA_ERR_INTERNAL, "vulkan: %d specialization constants (max %d)", n_spec,
                       VK_MAX_SPEC);
    int shader = 0;
    ela_status st = module_get(ctx, name, &shader);
    if (st != ELA_OK)
        return st;
    for (int i = 0; i < ctx->n_pipes; i++) {
        const vk_pipeline_entry *e = &ctx->pipes[i];
        if (e->shader == shader && e->n_spec == n_spec &&
            memcmp(e->spec, spec, sizeof *spec * (size_t)n_spec) == 0) {
            *out = e->pipeline;
            return ELA_OK;
        }
    }
    if (ctx->n_pipes == ctx->cap_pipes) {
        int cap = ctx->cap_pipes ? 2 * ctx->cap_pipes : 16;
        vk_pipeline_entry *p = realloc(ctx->pipes, sizeof *p * (size_t)cap);
        if (!p)
            return vk_fail(ELA_ERR_OOM, "vulkan: out of host memory");
        ctx->pipes = p;
        ctx->cap_pipes = cap;
    }
    VkSpecializationMapEntry map[VK_MAX_SPEC];
    for (int i = 0; i < n_spec; i++) {
        map[i].constantID = (uint32_t)i;
        map[i].offset = (uint32_t)(i * 4);
        map[i].size = 4;
    }
    VkSpecializationInfo si = {(uint32_t)n_spec, map, sizeof *spec * (size_t)n_spec, spec};
    VkComputePipelineCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = ctx->modules[shader];
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = &si;
    ci.layout = ctx->layout;
    VkPipeline pipe;
    VkResult r = vkf.CreateComputePipelines(ctx->dev, VK_NULL_HANDLE, 1, &ci, NULL, &pipe);
    if (r != VK_SUCCESS)
        return vk_fail_result(r, "vkCreateComputePipelines");
    vk_pipeline_entry *e = &ctx->pipes[ctx->n_pipes++];
    e->shader = shader;
    e->n_spec = n_spec;
    memcpy(e->spec, spec, sizeof *spec * (size_t)n_spec);
    e->pipeline = pipe;
    *out = pipe;
    return ELA_OK;
}

void vk_set_write(vk_ctx *ctx, VkDescriptorSet set, const VkDescriptorBufferInfo *infos) {
    VkWriteDescriptorSet w[VK_BINDINGS];
    for (uint32_t i = 0; i < VK_BINDINGS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
        w[i].dstSet = set;
        w[i].dstBinding = i;
        w[i].descriptorCount = 1;
        w[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        w[i].pBufferInfo = &infos[i];
    }
    vkf.UpdateDescriptorSets(ctx->dev, VK_BINDINGS, w, 0, NULL);
}

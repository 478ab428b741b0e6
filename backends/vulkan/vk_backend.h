/* Internal declarations of the Vulkan backend plugin (DESIGN.md 3): the function table loaded
 * from libvulkan.so.1 at run time, the process-wide instance and device list, an open device
 * (vk_ctx), its buffers, command stream, pipelines, and the ops. Never linked against libela
 * or libvulkan: errors go through the host API, Vulkan through the dlopen'ed loader. */
#ifndef ELA_BACKENDS_VULKAN_VK_BACKEND_H
#define ELA_BACKENDS_VULKAN_VK_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include "core/backend_iface.h"

#if defined(__GNUC__) || defined(__clang__)
#define VK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VK_PRINTF(f, a)
#endif

/* ---- errors (vk_plugin.c) ----------------------------------------------------------------- */
/* Report through the host's ela_set_error and return status. */
ela_status vk_fail(ela_status status, const char *fmt, ...) VK_PRINTF(2, 3);
/* A VkResult as a short name ("VK_ERROR_OUT_OF_DEVICE_MEMORY"). */
const char *vk_result_str(VkResult r);
/* ELA_ERR_OOM for the out-of-memory results, else ELA_ERR_BACKEND, with "vulkan: <what>: <res>". */
ela_status vk_fail_result(VkResult r, const char *what);

/* The plugin's one exported symbol. */
ELA_API const ela_backend_iface *ela_plugin_init(const ela_host_api *host);

/* ---- loader (vk_loader.c) ----------------------------------------------------------------- */
/* Loader-level functions (no instance needed). */
#define VK_GLOBAL_FUNCS(X)                                                                       \
    X(CreateInstance)                                                                            \
    X(EnumerateInstanceVersion)                                                                  \
    X(EnumerateInstanceLayerProperties)                                                          \
    X(EnumerateInstanceExtensionProperties)

/* Instance and device functions, all fetched with vkGetInstanceProcAddr (the loader's
 * trampolines dispatch to whichever device a handle belongs to). */
#define VK_INSTANCE_FUNCS(X)                                                                     \
    X(DestroyInstance)                                                                           \
    X(EnumeratePhysicalDevices)                                                                  \
    X(GetPhysicalDeviceProperties)                                                               \
    X(GetPhysicalDeviceProperties2)                                                              \
    X(GetPhysicalDeviceFeatures2)                                                                \
    X(GetPhysicalDeviceMemoryProperties)                                                         \
    X(GetPhysicalDeviceQueueFamilyProperties)                                                    \
    X(CreateDevice)                                                                              \
    X(DestroyDevice)                                                                             \
    X(GetDeviceQueue)                                                                            \
    X(CreateBuffer)                                                                              \
    X(DestroyBuffer)                                                                             \
    X(GetBufferMemoryRequirements)                                                               \
    X(AllocateMemory)                                                                            \
    X(FreeMemory)                                                                                \
    X(BindBufferMemory)                                                                          \
    X(MapMemory)                                                                                 \
    X(UnmapMemory)                                                                               \
    X(CreateCommandPool)                                                                         \
    X(DestroyCommandPool)                                                                        \
    X(AllocateCommandBuffers)                                                                    \
    X(BeginCommandBuffer)                                                                        \
    X(EndCommandBuffer)                                                                          \
    X(ResetCommandBuffer)                                                                        \
    X(CmdCopyBuffer)                                                                             \
    X(CmdFillBuffer)                                                                             \
    X(CmdPipelineBarrier)                                                                        \
    X(CmdBindPipeline)                                                                           \
    X(CmdBindDescriptorSets)                                                                     \
    X(CmdPushConstants)                                                                          \
    X(CmdDispatch)                                                                               \
    X(QueueSubmit)                                                                               \
    X(CreateFence)                                                                               \
    X(DestroyFence)                                                                              \
    X(WaitForFences)                                                                             \
    X(ResetFences)                                                                               \
    X(CreateShaderModule)                                                                        \
    X(DestroyShaderModule)                                                                       \
    X(CreateComputePipelines)                                                                    \
    X(DestroyPipeline)                                                                           \
    X(CreatePipelineLayout)                                                                      \
    X(DestroyPipelineLayout)                                                                     \
    X(CreateDescriptorSetLayout)                                                                 \
    X(DestroyDescriptorSetLayout)                                                                \
    X(CreateDescriptorPool)                                                                      \
    X(DestroyDescriptorPool)                                                                     \
    X(AllocateDescriptorSets)                                                                    \
    X(ResetDescriptorPool)                                                                       \
    X(UpdateDescriptorSets)                                                                      \
    X(EnumerateDeviceExtensionProperties)                                                        \
    X(CreateQueryPool)                                                                           \
    X(DestroyQueryPool)                                                                          \
    X(CmdResetQueryPool)                                                                         \
    X(CmdWriteTimestamp)                                                                         \
    X(GetQueryPoolResults)

/* Present only with the validation layer (VK_EXT_debug_utils) or a device extension
 * (VK_NV_cooperative_matrix); may stay NULL. */
#define VK_OPTIONAL_FUNCS(X)                                                                     \
    X(CreateDebugUtilsMessengerEXT)                                                              \
    X(DestroyDebugUtilsMessengerEXT)                                                             \
    X(GetPhysicalDeviceCooperativeMatrixPropertiesNV)

typedef struct {
    PFN_vkGetInstanceProcAddr GetInstanceProcAddr;
#define VK_DECLARE(name) PFN_vk##name name;
    VK_GLOBAL_FUNCS(VK_DECLARE)
    VK_INSTANCE_FUNCS(VK_DECLARE)
    VK_OPTIONAL_FUNCS(VK_DECLARE)
#undef VK_DECLARE
} vk_funcs;

extern vk_funcs vkf;

/* dlopen libvulkan.so.1 and fetch the global functions; ELA_ERR_UNAVAILABLE ("no Vulkan
 * loader: ...") when it is missing. Idempotent. */
ela_status vk_loader_open(void);
/* Fetch instance and device functions for `instance`; names the first one missing. */
ela_status vk_loader_instance(VkInstance instance);

/* ---- instance and devices (vk_device.c) --------------------------------------------------- */
/* Capabilities of one physical device, decided once at enumeration. */
typedef struct {
    VkPhysicalDevice pd;
    ela_device_info info;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem;
    uint32_t queue_family;          /* a family with compute */
    uint32_t timestamp_bits;        /* its timestampValidBits (0: no timestamps) */
    uint32_t subgroup_size;         /* 0 when subgroup shuffles cannot be used in compute */
    int subgroup_vote;              /* subgroupAny / subgroupAll in compute */
    int storage16;                  /* storageBuffer16BitAccess */
    /* VK_NV_cooperative_matrix with 16x16x16 f16 x f16 -> f32 at subgroup scope, 32-lane
     * subgroups, shaderFloat16 and the Vulkan memory model: the tensor-core attention path */
    int coopmat;
    uint64_t max_alloc;             /* maxMemoryAllocationSize */
} vk_physical;

/* Create the instance and list devices once per process (thread-safe); devices are sorted
 * discrete, integrated, virtual, other, CPU. Returns the error again on every call if it
 * failed. */
ela_status vk_system(const vk_physical **devs, int *count);
/* Validation errors counted since the process started (ELA_VK_VALIDATION), and the last
 * message (copied into buf). */
uint64_t vk_validation_errors(char *buf, size_t size);

/* ---- an open device ----------------------------------------------------------------------- */
typedef struct {
    VkBuffer buf;
    VkDeviceMemory mem;
    void *map;        /* host address when the memory is mapped (UMA devices), else NULL */
    VkDeviceSize size; /* bytes of the VkBuffer (the request rounded up to 16) */
} vk_buffer;

#define VK_MAX_SPEC 12 /* specialization constants per pipeline */

typedef struct {
    int shader;             /* index into vk_spirv_table */
    uint32_t spec[VK_MAX_SPEC];
    int n_spec;
    VkPipeline pipeline;
} vk_pipeline_entry;

#define VK_MAX_COPY_REGIONS 256
#define VK_MAX_SETS 128      /* descriptor sets per submission */
#define VK_BINDINGS 6        /* storage buffers per op: see shaders/attn_io.glsl */

typedef struct vk_ctx {
    const vk_physical *phys;
    VkDevice dev;
    VkQueue queue;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;

    /* Feature switches after ELA_VK_DISABLE. */
    int uma;        /* device buffers are host-visible + coherent and mapped */
    int storage16;  /* shaders read and write 16-bit types directly */
    int subgroup;   /* subgroup shuffles (over >= 8 lanes) can be used in compute */
    int coopmat;    /* NV cooperative matrices (vk_physical.coopmat) are enabled */
    int decode;     /* decode attention keeps K/V in registers (attn_dense_decode.comp) */
    int cm_wide;    /* cooperative-matrix attention may take 128 rows per workgroup */
    int cm_quad;    /* coopmat, and its accumulators keep a row within a quad of lanes, as the
                     * tensor-core attention shaders need (vk_cm_layout.c) */
    uint32_t cm_keys;      /* ELA_VK_CM_KEYS: keys per tile of the tensor-core attention (16,
                            * 32 or 64; tuning), 0: the most that fit */
    uint32_t force_splits; /* ELA_VK_SPLITS: key splits of dense attention (tests, tuning) */
    uint32_t mem_device, mem_staging; /* memory type indices */
    VkDeviceSize align;               /* storage buffer offset alignment, >= 16 */

    /* Command stream: commands are recorded until something needs their results. */
    int recording;        /* cmd is in the recording state */
    int groups;           /* command groups recorded (ops, copy batches) since begin */
    uint64_t generation;  /* bumped whenever device memory may change */

    /* Staging: host-visible buffer for uploads (batched copies) and readbacks. */
    vk_buffer staging;
    VkDeviceSize staging_used;
    VkBuffer copy_dst;    /* current upload batch: one destination, non-overlapping regions */
    VkBufferCopy copies[VK_MAX_COPY_REGIONS];
    int n_copies;
    VkDeviceSize copy_lo, copy_hi;
    /* Readback window: staging holds [win_off, win_off + win_len) of win_buf as of win_gen. */
    const vk_buffer *win_buf;
    VkDeviceSize win_off, win_len;
    uint64_t win_gen;

    /* Device-local scratch for an op's temporaries (attention partials), reset per submit. */
    vk_buffer scratch;
    VkDeviceSize scratch_used;
    vk_buffer dummy;      /* bound to unused bindings */

    /* Pipelines. */
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkDescriptorPool desc_pool;
    int sets_used;
    VkShaderModule *modules; /* [vk_spirv_count], created on first use */
    vk_pipeline_entry *pipes;
    int n_pipes, cap_pipes;

    uint64_t validation_seen;

    /* ELA_VK_PROFILE (vk_profile.c): a timestamp after every dispatch, GPU time per shader. */
    VkQueryPool prof_pool;
    uint32_t prof_used;   /* timestamps written into the current batch */
    int prof_bound;       /* shader of the bound pipeline, -1 unknown */
    int *prof_label;      /* [VK_PROFILE_QUERIES]: shader whose dispatch each timestamp ends */
    double *prof_ms;      /* [vk_spirv_count] */
    uint64_t *prof_calls; /* [vk_spirv_count] */
    double prof_other_ms; /* buffer copies (uploads, list copies, readbacks) */
} vk_ctx;

ela_status vk_device_open(int device, vk_ctx **out);
/* Sets ctx->cm_quad by running shaders/cm_layout.comp once (vk_cm_layout.c). */
ela_status vk_cm_layout_check(vk_ctx *ctx);
void vk_device_close(vk_ctx *ctx);

/* ---- buffers (vk_buffer.c) ---------------------------------------------------------------- */
ela_status vk_buffer_create(vk_ctx *ctx, VkDeviceSize bytes, uint32_t mem_type, int map,
                            vk_buffer *out);
void vk_buffer_destroy(vk_ctx *ctx, vk_buffer *b);
ela_status vk_buffer_alloc(void *ctx, size_t bytes, void **handle);
void vk_buffer_free(void *ctx, void *handle);
void *vk_buffer_host_ptr(void *ctx, void *handle);
ela_status vk_buffer_write(void *ctx, void *handle, size_t offset, const void *src, size_t bytes);
ela_status vk_buffer_read(void *ctx, void *handle, size_t offset, void *dst, size_t bytes);

/* ---- profile (vk_profile.c) --------------------------------------------------------------- */
#define VK_PROFILE_QUERIES 2048 /* timestamps per batch; dispatches past them go unmeasured */
/* With ELA_VK_PROFILE=1 (and timestamps on the queue): the query pool and tables. */
ela_status vk_profile_open(vk_ctx *ctx);
/* Prints the table (stderr) and frees it all. */
void vk_profile_close(vk_ctx *ctx);
/* At the start of a command buffer: reset the pool, write the batch's first timestamp. */
void vk_profile_batch_begin(vk_ctx *ctx);
/* Bind a compute pipeline (noting its shader when profiling). */
void vk_bind_pipeline(vk_ctx *ctx, VkPipeline pipe);
/* After a dispatch: a timestamp labelled with the bound shader; after a buffer copy: one
 * labelled as copies. */
void vk_profile_mark(vk_ctx *ctx);
void vk_profile_mark_copy(vk_ctx *ctx);
/* After the batch's fence: adds its timestamps' differences to the tables. */
void vk_profile_collect(vk_ctx *ctx);

/* ---- command stream (vk_submit.c) --------------------------------------------------------- */
/* Start a command group: begin recording if needed, and order it after the previous group
 * with a full compute/transfer memory barrier. */
ela_status vk_group_begin(vk_ctx *ctx);
/* Barrier between two dispatches of one group (the second reads what the first wrote). */
void vk_group_barrier(vk_ctx *ctx);
/* Record the pending upload batch, if any, as one group. */
ela_status vk_copies_close(vk_ctx *ctx);
/* Submit everything recorded and wait; resets staging, scratch and descriptor sets. Reports
 * validation errors (ELA_VK_VALIDATION) as ELA_ERR_BACKEND. */
ela_status vk_flush(vk_ctx *ctx);
ela_status vk_synchronize(void *ctx);
/* Resources of one op, taken before it records: a descriptor set and `scratch_bytes` of
 * scratch at *scratch_off (may flush first to make room). */
ela_status vk_op_reserve(vk_ctx *ctx, VkDeviceSize scratch_bytes, VkDescriptorSet *set,
                         VkDeviceSize *scratch_off);
/* After an op has recorded: counts validation errors reported while recording. */
ela_status vk_op_done(vk_ctx *ctx, const char *op);
/* ELA_ERR_BACKEND when the validation layer reported an error since the last check. */
ela_status vk_validation_check(vk_ctx *ctx, const char *when);

/* ---- pipelines (vk_pipeline.c) ------------------------------------------------------------ */
ela_status vk_pipelines_init(vk_ctx *ctx);
void vk_pipelines_destroy(vk_ctx *ctx);
/* The compute pipeline of shader `name` (see vk_shaders.h) with spec constants 0..n_spec-1,
 * created on first use and cached for the life of the context. */
ela_status vk_pipeline_get(vk_ctx *ctx, const char *name, const uint32_t *spec, int n_spec,
                           VkPipeline *out);
/* Write the set's VK_BINDINGS storage buffer descriptors. */
void vk_set_write(vk_ctx *ctx, VkDescriptorSet set, const VkDescriptorBufferInfo *infos);

/* ---- ops ---------------------------------------------------------------------------------- */
/* A tensor as a shader sees it: the bound range of its buffer and element offset/strides. */
typedef struct {
    VkDescriptorBufferInfo info;
    uint32_t elem;        /* element index of element [0, 0, ...] within the binding */
    uint32_t stride[4];   /* element strides (0 for extent-1 dims) */
} vk_tensor_binding;

size_t vk_dtype_size(ela_dtype dt);
ela_status vk_bind_tensor(vk_ctx *ctx, const ela_tensor *t, const char *op, const char *name,
                          vk_tensor_binding *out);
/* 1 when the [Hkv, n, d] rows of k (and of v, unless NULL) all start on a multiple of 4
 * elements and d % 4 == 0, so shaders load 4 columns as one vector (bindings are 16-byte
 * aligned: 16 bytes for f32, 8 for 16-bit data); the push constants' kv_vec4. */
uint32_t vk_vec4_rows(int64_t d, const vk_tensor_binding *k, const vk_tensor_binding *v);
/* Keys per shared K/V tile of the FMA attention shaders, per_key shared bytes each after
 * `fixed` bytes of other shared data: as many as fit, at most max_bc; on a GPU at most a
 * quarter of the shared memory and a power of two (several workgroups per SM: vk_attn_tile.c).
 * 0 when not even one key fits. */
uint32_t vk_attn_tile_keys(const vk_ctx *ctx, uint64_t per_key, uint64_t fixed, uint32_t max_bc);

ela_status vk_attn_dense(void *ctx, const ela_attn_dense_args *args);

#endif

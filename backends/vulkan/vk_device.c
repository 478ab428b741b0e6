/* Vulkan backend: the process-wide instance (with the validation layer and a message counter
 * when ELA_VK_VALIDATION is set), the device list (discrete before integrated before CPU
 * devices such as lavapipe, which are ELA_DEVICE_SOFTWARE so "auto" never picks them), and
 * opening one device: queue, command buffer, memory types and the feature switches. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_backend.h"

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

static struct {
    pthread_once_t once;
    ela_status status;
    char error[256];
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    int n;
    vk_physical devs[ELA_MAX_DEVICES];
} sys = {.once = PTHREAD_ONCE_INIT};

/* Validation messages: counted from the layer's threads, read by any context. */
static atomic_uint_fast64_t validation_count;
static pthread_mutex_t validation_lock = PTHREAD_MUTEX_INITIALIZER;
static char validation_last[512];

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                 void *user) {
    (void)user;
    if ((severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) &&
        (type & (VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                 VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT))) {
        pthread_mutex_lock(&validation_lock);
        snprintf(validation_last, sizeof validation_last, "%s",
                 data && data->pMessage ? data->pMessage : "(no message)");
        pthread_mutex_unlock(&validation_lock);
        atomic_fetch_add(&validation_count, 1);
    }
    return VK_FALSE; /* never abort the call */
}

uint64_t vk_validation_errors(char *buf, size_t size) {
    uint64_t n = atomic_load(&validation_count);
    if (buf && size) {
        pthread_mutex_lock(&validation_lock);
        snprintf(buf, size, "%s", validation_last);
        pthread_mutex_unlock(&validation_lock);
    }
    return n;
}

static void sys_fail(ela_status st, const char *fmt, ...) VK_PRINTF(2, 3);
static void sys_fail(ela_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sys.status = st;
    vsnprintf(sys.error, sizeof sys.error, fmt, ap);
    va_end(ap);
}

static int has_layer(const char *name) {
    uint32_t n = 0;
    if (vkf.EnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkLayerProperties *props = calloc(n, sizeof *props);
    int found = 0;
    if (props && vkf.EnumerateInstanceLayerProperties(&n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].layerName, name) == 0;
    free(props);
    return found;
}

static int has_instance_ext(const char *layer, const char *name) {
    uint32_t n = 0;
    if (vkf.EnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkExtensionProperties *props = calloc(n, sizeof *props);
    int found = 0;
    if (props && vkf.EnumerateInstanceExtensionProperties(layer, &n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].extensionName, name) == 0;
    free(props);
    return found;
}

static ela_device_kind kind_of(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return ELA_DEVICE_DISCRETE_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return ELA_DEVICE_INTEGRATED_GPU;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return ELA_DEVICE_VIRTUAL_GPU;
    default: return ELA_DEVICE_SOFTWARE; /* CPU (lavapipe, swiftshader) and "other" */
    }
}

static int kind_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 4;
    default: return 3;
    }
}

static int has_device_ext(VkPhysicalDevice pd, const char *name) {
    uint32_t n = 0;
    if (vkf.EnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkExtensionProperties *props = calloc(n, sizeof *props);
    int found = 0;
    if (props && vkf.EnumerateDeviceExtensionProperties(pd, NULL, &n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].extensionName, name) == 0;
    free(props);
    return found;
}

/* The tensor-core attention path (shaders/attn_dense_cm.comp) needs NV cooperative matrices
 * of 16x16x16 with f16 A and B and f32 C and D at subgroup scope, 32-lane subgroups (its lane
 * layout) with vote operations, 16-bit storage, shaderFloat16 (f16 in shared memory) and the
 * Vulkan memory model at device scope (the extension's GLSL requires the model; enabling it without device scope
 * makes every other shader's device-scope barrier invalid); Vulkan 1.2 for the feature
 * structures. */
static int describe_coopmat(VkPhysicalDevice pd, const vk_physical *d) {
    if (d->props.apiVersion < VK_API_VERSION_1_2 || d->subgroup_size != 32 ||
        !d->subgroup_vote || !d->storage16 ||
        !vkf.GetPhysicalDeviceCooperativeMatrixPropertiesNV ||
        !has_device_ext(pd, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME))
        return 0;
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES, .pNext = &cm};
    VkPhysicalDeviceVulkanMemoryModelFeatures mm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES, .pNext = &f16};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &mm};
    vkf.GetPhysicalDeviceFeatures2(pd, &f2);
    if (!cm.cooperativeMatrix || !f16.shaderFloat16 || !mm.vulkanMemoryModel ||
        !mm.vulkanMemoryModelDeviceScope)
        return 0;
    uint32_t n = 0;
    if (vkf.GetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkCooperativeMatrixPropertiesNV *props = calloc(n, sizeof *props);
    int found = 0;
    for (uint32_t i = 0; props && i < n; i++)
        props[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    if (props && vkf.GetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) {
            const VkCooperativeMatrixPropertiesNV *c = &props[i];
            found = c->MSize == 16 && c->NSize == 16 && c->KSize == 16 &&
                    c->AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                    c->BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                    c->CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
                    c->DType == VK_COMPONENT_TYPE_FLOAT32_NV && c->scope == VK_SCOPE_SUBGROUP_NV;
        }
    free(props);
    return found;
}

/* Fill d from pd; 0 when the device cannot run ela (Vulkan < 1.1 or no compute queue). */
static int describe(VkPhysicalDevice pd, vk_physical *d) {
    memset(d, 0, sizeof *d);
    d->pd = pd;
    vkf.GetPhysicalDeviceProperties(pd, &d->props);
    if (d->props.apiVersion < VK_API_VERSION_1_1)
        return 0;

    /* Chains: driver properties only where the device has Vulkan 1.2. */
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &sg};
    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, .pNext = &m3};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    p2.pNext = d->props.apiVersion >= VK_API_VERSION_1_2 ? (void *)&drv : (void *)&m3;
    vkf.GetPhysicalDeviceProperties2(pd, &p2);
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &s16};
    vkf.GetPhysicalDeviceFeatures2(pd, &f2);
    vkf.GetPhysicalDeviceMemoryProperties(pd, &d->mem);

    uint32_t nq = 0;
    vkf.GetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16)
        nq = 16;
    vkf.GetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    int found = 0;
    for (uint32_t i = 0; i < nq && !found; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            d->queue_family = i;
            d->timestamp_bits = qf[i].timestampValidBits;
            found = 1;
        }
    if (!found)
        return 0;

    const VkSubgroupFeatureFlags need = VK_SUBGROUP_FEATURE_BASIC_BIT |
                                        VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    if ((sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
        (sg.supportedOperations & need) == need && sg.subgroupSize >= 2 && sg.subgroupSize <= 128)
        d->subgroup_size = sg.subgroupSize;
    d->subgroup_vote = (sg.supportedOperations & VK_SUBGROUP_FEATURE_VOTE_BIT) != 0;
    d->storage16 = s16.storageBuffer16BitAccess != VK_FALSE;
    d->coopmat = describe_coopmat(pd, d);
    d->max_alloc = m3.maxMemoryAllocationSize ? m3.maxMemoryAllocationSize : (1ull << 30);

    ela_device_info *info = &d->info;
    snprintf(info->name, sizeof info->name, "%.127s", d->props.deviceName);
    info->kind = kind_of(d->props.deviceType);
    for (uint32_t h = 0; h < d->mem.memoryHeapCount; h++)
        if ((d->mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            d->mem.memoryHeaps[h].size > info->memory_bytes)
            info->memory_bytes = d->mem.memoryHeaps[h].size;
    uint32_t v = d->props.apiVersion;
    char driver[96] = "";
    if (d->props.apiVersion >= VK_API_VERSION_1_2)
        snprintf(driver, sizeof driver, " driver=%.32s %.48s", drv.driverName, drv.driverInfo);
    snprintf(info->details, sizeof info->details,
             "vulkan=%u.%u.%u%s subgroup=%u%s fp16-storage=%s%s shared=%u KiB "
             "max-binding=%llu MiB",
             VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v), VK_API_VERSION_PATCH(v), driver,
             sg.subgroupSize, d->subgroup_size ? "" : " (no shuffle: fallback)",
             d->storage16 ? "yes" : "no", d->coopmat ? " coopmat=nv" : "",
             d->props.limits.maxComputeSharedMemorySize / 1024,
             (unsigned long long)(d->props.limits.maxStorageBufferRange >> 20));
    return 1;
}

static void sys_init(void) {
    sys.status = vk_loader_open();
    if (sys.status != ELA_OK) {
        /* vk_fail already reported the reason; keep it for later calls. */
        snprintf(sys.error, sizeof sys.error, "no Vulkan loader");
        return;
    }
    uint32_t version = VK_API_VERSION_1_0;
    if (vkf.EnumerateInstanceVersion)
        vkf.EnumerateInstanceVersion(&version);
    if (version < VK_API_VERSION_1_1) {
        sys_fail(ELA_ERR_UNAVAILABLE, "the Vulkan loader supports only Vulkan 1.0; ela needs 1.1");
        return;
    }

    const char *val = getenv("ELA_VK_VALIDATION");
    int validate = val && *val && strcmp(val, "0") != 0;
    const char *layers[1] = {VALIDATION_LAYER};
    const char *exts[2];
    uint32_t n_exts = 0;
    VkValidationFeatureEnableEXT sync_enable =
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    VkValidationFeaturesEXT features = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mci.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                          VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
    mci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mci.pfnUserCallback = on_message;
    if (validate) {
        if (!has_layer(VALIDATION_LAYER)) {
            sys_fail(ELA_ERR_UNAVAILABLE, "ELA_VK_VALIDATION is set but the %s layer is not "
                     "installed (apt-get install vulkan-validationlayers)", VALIDATION_LAYER);
            return;
        }
        if (!has_instance_ext(NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) &&
            !has_instance_ext(VALIDATION_LAYER, VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
            sys_fail(ELA_ERR_UNAVAILABLE, "ELA_VK_VALIDATION is set but %s is missing",
                     VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
            return;
        }
        exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
        /* ELA_VK_VALIDATION=sync adds synchronization validation (hazards between commands). */
        if (strcmp(val, "sync") == 0) {
            if (!has_instance_ext(VALIDATION_LAYER, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME)) {
                sys_fail(ELA_ERR_UNAVAILABLE, "ELA_VK_VALIDATION=sync but the layer lacks %s",
                         VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
                return;
            }
            exts[n_exts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
            features.enabledValidationFeatureCount = 1;
            features.pEnabledValidationFeatures = &sync_enable;
            mci.pNext = &features;
        }
    }
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "ela";
    app.pEngineName = "ela";
    app.apiVersion = version >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : version;
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ici.pApplicationInfo = &app;
    ici.enabledLayerCount = validate ? 1 : 0;
    ici.ppEnabledLayerNames = layers;
    ici.enabledExtensionCount = n_exts;
    ici.ppEnabledExtensionNames = exts;
    ici.pNext = validate ? &mci : NULL; /* also catches messages of vkCreateInstance itself */
    VkResult r = vkf.CreateInstance(&ici, NULL, &sys.instance);
    if (r != VK_SUCCESS) {
        if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
            sys_fail(ELA_ERR_UNAVAILABLE, "no Vulkan driver (vkCreateInstance: %s)",
                     vk_result_str(r));
        else
            sys_fail(ELA_ERR_BACKEND, "vkCreateInstance failed: %s", vk_result_str(r));
        sys.instance = VK_NULL_HANDLE;
        return;
    }
    if ((sys.status = vk_loader_instance(sys.instance)) != ELA_OK) {
        sys_fail(ELA_ERR_UNAVAILABLE, "the Vulkan loader lacks Vulkan 1.1 functions");
        return;
    }
    if (validate) { /* counting nothing would pass silently: fail instead */
        mci.pNext = NULL;
        if (!vkf.CreateDebugUtilsMessengerEXT ||
            vkf.CreateDebugUtilsMessengerEXT(sys.instance, &mci, NULL, &sys.messenger) !=
                VK_SUCCESS) {
            sys_fail(ELA_ERR_UNAVAILABLE, "ELA_VK_VALIDATION is set but no debug messenger "
                     "could be created");
            return;
        }
    }

    uint32_t n = 0;
    r = vkf.EnumeratePhysicalDevices(sys.instance, &n, NULL);
    VkPhysicalDevice *pds = n ? calloc(n, sizeof *pds) : NULL;
    if (r == VK_SUCCESS && n && pds)
        r = vkf.EnumeratePhysicalDevices(sys.instance, &n, pds);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        free(pds);
        sys_fail(ELA_ERR_BACKEND, "vkEnumeratePhysicalDevices failed: %s", vk_result_str(r));
        return;
    }
    /* Stable insertion by kind rank: discrete, integrated, virtual, other, CPU. */
    for (uint32_t i = 0; i < n && pds; i++) {
        vk_physical d;
        if (!describe(pds[i], &d))
            continue;
        int at = sys.n < ELA_MAX_DEVICES ? sys.n : ELA_MAX_DEVICES - 1;
        if (sys.n == ELA_MAX_DEVICES &&
            kind_rank(d.props.deviceType) >= kind_rank(sys.devs[at].props.deviceType))
            continue;
        int rank = kind_rank(d.props.deviceType);
        while (at > 0 && kind_rank(sys.devs[at - 1].props.deviceType) > rank) {
            sys.devs[at] = sys.devs[at - 1];
            at--;
        }
        sys.devs[at] = d;
        if (sys.n < ELA_MAX_DEVICES)
            sys.n++;
    }
    free(pds);
    if (sys.n == 0) {
        if (n == 0)
            sys_fail(ELA_ERR_UNAVAILABLE, "no Vulkan device");
        else
            sys_fail(ELA_ERR_UNAVAILABLE, "no Vulkan 1.1 device with a compute queue (%u "
                     "older or graphics-only)", n);
        return;
    }
    sys.status = ELA_OK;
}

ela_status vk_system(const vk_physical **devs, int *count) {
    pthread_once(&sys.once, sys_init);
    if (sys.status != ELA_OK) {
        /* The loader's own reason was reported when it failed; later calls repeat ours. */
        if (strcmp(sys.error, "no Vulkan loader") != 0)
            vk_fail(sys.status, "%s", sys.error);
        else
            vk_loader_open(); /* reports the dlopen reason again */
        return sys.status;
    }
    *devs = sys.devs;
    *count = sys.n;
    return ELA_OK;
}

/* ELA_VK_DISABLE: comma-separated features to switch off for testing the fallbacks:
 * uma (use staging copies), storage16 (16-bit data as 32-bit words), subgroup (one lane per
 * query row, no shuffles), coopmat (no cooperative matrices: attention on the FMA path),
 * decode (decode attention on the tiled shader instead of attn_dense_decode.comp), cm128 (the
 * cooperative-matrix attention shaders at 64 rows per workgroup, not 128). */
static int disabled(const char *feature) {
    const char *env = getenv("ELA_VK_DISABLE");
    size_t len = strlen(feature);
    for (const char *p = env; p && *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, feature, len) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* A memory type among `bits` with all of `want`; -1 when none. */
static int find_memory(const vk_physical *p, uint32_t bits, VkMemoryPropertyFlags want) {
    for (uint32_t i = 0; i < p->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (p->mem.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

/* Memory types: device buffers in DEVICE_LOCAL memory; when every device-local type is also
 * host-visible and coherent (integrated GPUs, lavapipe) they are mapped and written directly.
 * Staging in HOST_VISIBLE | HOST_COHERENT, cached when possible (readbacks). */
static ela_status choose_memory(vk_ctx *ctx) {
    const vk_physical *p = ctx->phys;
    const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                       VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    int uma = 1, any_local = 0;
    for (uint32_t i = 0; i < p->mem.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = p->mem.memoryTypes[i].propertyFlags;
        if (f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) {
            any_local = 1;
            if ((f & host) != host)
                uma = 0;
        }
    }
    uma = uma && any_local && !disabled("uma");
    int dev = find_memory(p, ~0u, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | (uma ? host : 0));
    if (dev < 0)
        dev = find_memory(p, ~0u, 0);
    int stg = find_memory(p, ~0u, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (stg < 0)
        stg = find_memory(p, ~0u, host);
    if (dev < 0 || stg < 0)
        return vk_fail(ELA_ERR_UNSUPPORTED, "vulkan: %s has no host-visible coherent memory",
                       p->info.name);
    ctx->uma = uma;
    ctx->mem_device = (uint32_t)dev;
    ctx->mem_staging = (uint32_t)stg;
    return ELA_OK;
}

#define STAGING_BYTES (16u << 20)
#define SCRATCH_BYTES (1u << 20)

ela_status vk_device_open(int device, vk_ctx **out) {
    const vk_physical *devs = NULL;
    int n = 0;
    ela_status st = vk_system(&devs, &n);
    if (st != ELA_OK)
        return st;
    if (device < 0 || device >= n)
        return vk_fail(ELA_ERR_INVALID_ARG, "vulkan: no device %d (%d present)", device, n);
    vk_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return vk_fail(ELA_ERR_OOM, "vulkan: out of host memory");
    ctx->phys = &devs[device];
    const vk_physical *p = ctx->phys;
    ctx->storage16 = p->storage16 && !disabled("storage16");
    /* Attention sums a row's 8 lanes with subgroup shuffles when 8 lanes fit a subgroup. */
    ctx->subgroup = p->subgroup_size >= 8 && !disabled("subgroup");
    ctx->coopmat = p->coopmat && ctx->storage16 && ctx->subgroup && !disabled("coopmat");
    ctx->decode = ctx->subgroup && !disabled("decode");
    ctx->cm_wide = !disabled("cm128");
    const char *cm_keys = getenv("ELA_VK_CM_KEYS");
    ctx->cm_keys = cm_keys && (!strcmp(cm_keys, "16") || !strcmp(cm_keys, "32") ||
                               !strcmp(cm_keys, "64")) ? (uint32_t)atoi(cm_keys) : 0;
    const char *splits = getenv("ELA_VK_SPLITS");
    ctx->force_splits = splits && atoi(splits) > 0 ? (uint32_t)atoi(splits) : 0;
    /* Bindings start 16-byte aligned (or more, as the device asks): vector loads in shaders. */
    ctx->align = p->props.limits.minStorageBufferOffsetAlignment;
    if (ctx->align < 16)
        ctx->align = 16;
    ctx->validation_seen = vk_validation_errors(NULL, 0);

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qci.queueFamilyIndex = p->queue_family;
    qci.queueCount = 1;
    qci.pQueuePriorities = &prio;
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    s16.storageBuffer16BitAccess = ctx->storage16 ? VK_TRUE : VK_FALSE;
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &s16};
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci;
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES, .pNext = &cm};
    VkPhysicalDeviceVulkanMemoryModelFeatures mm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES, .pNext = &f16};
    const char *cm_ext = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
    if (ctx->coopmat) {
        cm.cooperativeMatrix = VK_TRUE;
        f16.shaderFloat16 = VK_TRUE;
        mm.vulkanMemoryModel = VK_TRUE;
        /* With the memory model on, the other shaders' device-scope barriers and atomics need
         * this too (VUID-RuntimeSpirv-vulkanMemoryModel-06265). */
        mm.vulkanMemoryModelDeviceScope = VK_TRUE;
        s16.pNext = &mm;
        dci.enabledExtensionCount = 1;
        dci.ppEnabledExtensionNames = &cm_ext;
    }
    VkResult r = vkf.CreateDevice(p->pd, &dci, NULL, &ctx->dev);
    if (r != VK_SUCCESS) {
        free(ctx);
        return vk_fail_result(r, "vkCreateDevice");
    }
    vkf.GetDeviceQueue(ctx->dev, p->queue_family, 0, &ctx->queue);

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pci.queueFamilyIndex = p->queue_family;
    if ((r = vkf.CreateCommandPool(ctx->dev, &pci, NULL, &ctx->pool)) != VK_SUCCESS) {
        st = vk_fail_result(r, "vkCreateCommandPool");
        goto fail;
    }
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = ctx->pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    if ((r = vkf.AllocateCommandBuffers(ctx->dev, &cai, &ctx->cmd)) != VK_SUCCESS) {
        st = vk_fail_result(r, "vkAllocateCommandBuffers");
        goto fail;
    }
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((r = vkf.CreateFence(ctx->dev, &fci, NULL, &ctx->fence)) != VK_SUCCESS) {
        st = vk_fail_result(r, "vkCreateFence");
        goto fail;
    }
    if ((st = choose_memory(ctx)) != ELA_OK ||
        (st = vk_buffer_create(ctx, STAGING_BYTES, ctx->mem_staging, 1, &ctx->staging)) != ELA_OK ||
        (st = vk_buffer_create(ctx, SCRATCH_BYTES, ctx->mem_device, 0, &ctx->scratch)) != ELA_OK ||
        (st = vk_buffer_create(ctx, 256, ctx->mem_device, 0, &ctx->dummy)) != ELA_OK ||
        (st = vk_pipelines_init(ctx)) != ELA_OK || (st = vk_profile_open(ctx)) != ELA_OK ||
        (st = vk_cm_layout_check(ctx)) != ELA_OK)
        goto fail;
    if ((st = vk_validation_check(ctx, "opening the device")) != ELA_OK)
        goto fail;
    *out = ctx;
    return ELA_OK;
fail:
    vk_device_close(ctx);
    return st;
}

void vk_device_close(vk_ctx *ctx) {
    if (!ctx)
        return;
    if (ctx->recording)
        vk_flush(ctx); /* nothing may be in flight while its resources go */
    vk_profile_close(ctx);
    vk_pipelines_destroy(ctx);
    vk_buffer_destroy(ctx, &ctx->dummy);
    vk_buffer_destroy(ctx, &ctx->scratch);
    vk_buffer_destroy(ctx, &ctx->staging);
    if (ctx->fence)
        vkf.DestroyFence(ctx->dev, ctx->fence, NULL);
    if (ctx->pool)
        vkf.DestroyCommandPool(ctx->dev, ctx->pool, NULL);
    if (ctx->dev)
        vkf.DestroyDevice(ctx->dev, NULL);
    free(ctx);
}

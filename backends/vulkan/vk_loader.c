/* Vulkan backend: the Vulkan loader (libvulkan.so.1) opened with dlopen at run time and its
 * functions fetched through vkGetInstanceProcAddr, so the plugin loads on machines without
 * Vulkan and reports "no Vulkan loader" instead of failing to link. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "vk_backend.h"

vk_funcs vkf;
static void *loader;

ela_status vk_loader_open(void) {
    if (loader)
        return ELA_OK;
    /* ELA_VK_LOADER lets a test or an unusual install point at another loader. */
    const char *names[] = {"libvulkan.so.1", "libvulkan.so"};
    size_t n_names = sizeof names / sizeof names[0];
    const char *env = getenv("ELA_VK_LOADER");
    if (env && *env) {
        names[0] = env;
        n_names = 1;
    }
    char err[256] = "";
    void *dl = NULL;
    for (size_t i = 0; i < n_names && !dl; i++) {
        dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        const char *e = dl ? NULL : dlerror();
        if (e && !err[0])
            snprintf(err, sizeof err, "%s", e); /* the first name's reason is the useful one */
    }
    if (!dl)
        return vk_fail(ELA_ERR_UNAVAILABLE, "no Vulkan loader: %s",
                       err[0] ? err : "libvulkan.so.1 not found");
    *(void **)&vkf.GetInstanceProcAddr = dlsym(dl, "vkGetInstanceProcAddr");
    if (!vkf.GetInstanceProcAddr) {
        dlclose(dl);
        return vk_fail(ELA_ERR_UNAVAILABLE, "no Vulkan loader: libvulkan.so.1 has no "
                       "vkGetInstanceProcAddr");
    }
#define VK_LOAD(name) vkf.name = (PFN_vk##name)vkf.GetInstanceProcAddr(NULL, "vk" #name);
    VK_GLOBAL_FUNCS(VK_LOAD)
#undef VK_LOAD
    if (!vkf.CreateInstance || !vkf.EnumerateInstanceExtensionProperties ||
        !vkf.EnumerateInstanceLayerProperties) {
        dlclose(dl);
        return vk_fail(ELA_ERR_UNAVAILABLE, "no Vulkan loader: libvulkan.so.1 lacks "
                       "vkCreateInstance");
    }
    /* vkEnumerateInstanceVersion is absent from 1.0 loaders; callers check for NULL. */
    loader = dl; /* kept for the life of the process, like the plugin itself */
    return ELA_OK;
}

ela_status vk_loader_instance(VkInstance instance) {
#define VK_LOAD(name)                                                                            \
    vkf.name = (PFN_vk##name)vkf.GetInstanceProcAddr(instance, "vk" #name);                      \
    if (!vkf.name)                                                                               \
        return vk_fail(ELA_ERR_UNAVAILABLE, "vulkan: the loader has no vk" #name                 \
                       " (Vulkan 1.1 is required)");
    VK_INSTANCE_FUNCS(VK_LOAD)
#undef VK_LOAD
#define VK_LOAD_OPT(name) vkf.name = (PFN_vk##name)vkf.GetInstanceProcAddr(instance, "vk" #name);
    VK_OPTIONAL_FUNCS(VK_LOAD_OPT)
#undef VK_LOAD_OPT
    return ELA_OK;
}

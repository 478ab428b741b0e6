/* Backend registry: the built-in CPU backend plus plugins (libela-<name>.so) loaded with dlopen
 * from ELA_PLUGIN_PATH or libela's own directory; listing, "auto" selection and open/close.
 * A missing plugin, driver or device is a normal outcome reported as a reason, not an error. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "backend_iface.h"
#include "error.h"

typedef struct {
    const char *name;
    const ela_backend_iface *iface; /* NULL when unavailable */
    char reason[256];               /* why iface is NULL */
} backend_slot;

static backend_slot slots[] = {{"cuda", NULL, ""}, {"vulkan", NULL, ""}, {"cpu", NULL, ""}};
enum { N_SLOTS = sizeof slots / sizeof slots[0] };
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static const ela_host_api host_api = {ELA_BACKEND_API_VERSION, ela_set_error};

/* Directory holding libela itself (or the executable it is linked into). */
static void own_directory(char *dir, size_t len) {
    Dl_info info;
    dir[0] = '\0';
    if (dladdr((void *)&ela_backend_list, &info) && info.dli_fname) {
        snprintf(dir, len, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, len, ".");
    }
}

/* Long paths may be cut short: the reason is for people to read. */
static void set_reason(backend_slot *slot, const char *fmt, ...) ELA_PRINTF(2, 3);
static void set_reason(backend_slot *slot, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(slot->reason, sizeof slot->reason, fmt, ap);
    va_end(ap);
}

/* Try dir/libela-<name>.so: 1 when a file was there (loaded or not, reason set), 0 if absent. */
static int try_plugin(backend_slot *slot, const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/libela-%s.so", dir, slot->name);
    if (access(path, F_OK) != 0)
        return 0;
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        set_reason(slot, "cannot load %s: %s", path, dlerror());
        return 1;
    }
    ela_plugin_init_fn init;
    *(void **)&init = dlsym(dl, ELA_PLUGIN_INIT_SYMBOL);
    if (!init) {
        set_reason(slot, "%s has no %s entry point", path,
                 ELA_PLUGIN_INIT_SYMBOL);
        dlclose(dl);
        return 1;
    }
    const ela_backend_iface *iface = init(&host_api);
    if (!iface) {
        set_reason(slot, "%s", ela_last_error());
        dlclose(dl);
        return 1;
    }
    if (iface->api_version != ELA_BACKEND_API_VERSION) {
        set_reason(slot, "%s was built for backend API %u, this libela has API %u: rebuild the plugin",
                 path, iface->api_version, ELA_BACKEND_API_VERSION);
        dlclose(dl);
        return 1;
    }
    slot->iface = iface; /* plugins stay loaded for the life of the process */
    slot->reason[0] = '\0';
    return 1;
}

static void load_plugin(backend_slot *slot) {
    char searched[512] = "";
    const char *env = getenv("ELA_PLUGIN_PATH");
    if (env && *env) {
        char *copy = strdup(env);
        for (char *save = NULL, *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir;
             dir = strtok_r(NULL, ":", &save)) {
            if (try_plugin(slot, dir)) {
                free(copy);
                return;
            }
            size_t used = strlen(searched);
            snprintf(searched + used, sizeof searched - used, "%s%s", used ? ", " : "", dir);
        }
        free(copy);
    }
    char dir[512];
    own_directory(dir, sizeof dir);
    if (dir[0]) {
        if (try_plugin(slot, dir))
            return;
        size_t used = strlen(searched);
        snprintf(searched + used, sizeof searched - used, "%s%s", used ? ", " : "", dir);
    }
    set_reason(slot, "plugin libela-%s.so not found (searched %s)",
             slot->name, searched[0] ? searched : "nowhere: set ELA_PLUGIN_PATH");
}

static void load_all(void) {
    for (int i = 0; i < N_SLOTS; i++) {
        if (strcmp(slots[i].name, "cpu") == 0)
            slots[i].iface = ela_cpu_backend_iface();
        else
            load_plugin(&slots[i]);
    }
}

static backend_slot *find_slot(const char *name, size_t len) {
    pthread_once(&load_once, load_all);
    for (int i = 0; i < N_SLOTS; i++)
        if (strlen(slots[i].name) == len && strncmp(slots[i].name, name, len) == 0)
            return &slots[i];
    return NULL;
}

/* Devices of a loaded slot; on failure the reason goes to `reason`. */
static int slot_devices(const backend_slot *slot, ela_device_info *devs, char *reason, size_t len) {
    if (!slot->iface) {
        snprintf(reason, len, "%s", slot->reason);
        return 0;
    }
    int n = 0;
    if (slot->iface->list_devices(devs, ELA_MAX_DEVICES, &n) != ELA_OK || n <= 0) {
        snprintf(reason, len, "%s", n <= 0 && ela_last_error()[0] ? ela_last_error() : "no device");
        return 0;
    }
    return n < ELA_MAX_DEVICES ? n : ELA_MAX_DEVICES;
}

ela_status ela_backend_list(ela_backend_info *out, int capacity, int *count) {
    if (!count || (capacity > 0 && !out))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_backend_list: NULL %s", count ? "out" : "count");
    pthread_once(&load_once, load_all);
    /* cpu first in listings; slots[] is in "auto" preference order. */
    int order[N_SLOTS], k = 0;
    for (int i = N_SLOTS - 1; i >= 0; i--)
        order[k++] = i;
    for (int i = 0; i < N_SLOTS && i < capacity; i++) {
        const backend_slot *slot = &slots[order[i]];
        ela_backend_info *info = &out[i];
        memset(info, 0, sizeof *info);
        snprintf(info->name, sizeof info->name, "%s", slot->name);
        info->n_devices = slot_devices(slot, info->devices, info->reason, sizeof info->reason);
        info->available = info->n_devices > 0;
        if (info->available)
            info->reason[0] = '\0';
    }
    *count = N_SLOTS;
    return ELA_OK;
}

static int device_score(const backend_slot *slot, const ela_device_info *dev) {
    static const int kind_bonus[] = {0, 50, 25, 10, -1000};
    int kind = (int)dev->kind;
    return slot->iface->priority + (kind >= 0 && kind <= 4 ? kind_bonus[kind] : -1000);
}

static ela_status open_device(backend_slot *slot, int device, const ela_device_info *info,
                              ela_backend **out) {
    ela_backend *be = ela_calloc(1, sizeof *be);
    if (!be)
        return ela_fail(ELA_ERR_OOM, "ela_backend_open: out of host memory");
    be->iface = slot->iface;
    be->device = device;
    be->device_info = *info;
    if (strcmp(slot->name, "cpu") == 0)
        snprintf(be->name, sizeof be->name, "cpu");
    else
        snprintf(be->name, sizeof be->name, "%s:%d", slot->name, device);
    ela_status st = slot->iface->open(device, &be->ctx);
    if (st != ELA_OK) {
        ela_free(be);
        return st;
    }
    *out = be;
    return ELA_OK;
}

static ela_status open_auto(ela_backend **out) {
    pthread_once(&load_once, load_all);
    backend_slot *best = NULL;
    int best_dev = 0, best_score = -1;
    ela_device_info devs[ELA_MAX_DEVICES], best_info;
    char reason[256];
    for (int i = 0; i < N_SLOTS; i++) {
        int n = slot_devices(&slots[i], devs, reason, sizeof reason);
        for (int d = 0; d < n; d++) {
            int score = device_score(&slots[i], &devs[d]);
            if (score > best_score) {
                best = &slots[i], best_dev = d, best_score = score, best_info = devs[d];
            }
        }
    }
    if (!best)
        return ela_fail(ELA_ERR_UNAVAILABLE, "no backend has a usable device");
    return open_device(best, best_dev, &best_info, out);
}

ela_status ela_backend_open(const char *name, ela_backend **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_backend_open: out is NULL");
    *out = NULL;
    if (!name || !*name) {
        name = getenv("ELA_BACKEND");
        if (!name || !*name)
            name = "auto";
    }
    if (strcmp(name, "auto") == 0)
        return open_auto(out);

    const char *colon = strchr(name, ':');
    size_t len = colon ? (size_t)(colon - name) : strlen(name);
    backend_slot *slot = find_slot(name, len);
    if (!slot)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "unknown backend '%s' (expected auto, cpu, vulkan[:N] or cuda[:N])", name);
    int device = 0;
    if (colon) {
        char *end = NULL;
        long v = strtol(colon + 1, &end, 10);
        if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || v > 1000)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "bad device index in backend name '%s' (expected %.*s:N, N >= 0)",
                            name, (int)len, name);
        device = (int)v;
    }
    ela_device_info devs[ELA_MAX_DEVICES];
    char reason[256];
    int n = slot_devices(slot, devs, reason, sizeof reason);
    if (n == 0)
        return ela_fail(ELA_ERR_UNAVAILABLE, "backend '%s' is unavailable: %s", slot->name, reason);
    if (device >= n)
        return ela_fail(ELA_ERR_INVALID_ARG, "backend '%s' has %d device%s; '%s' asks for device %d",
                        slot->name, n, n == 1 ? "" : "s", name, device);
    return open_device(slot, device, &devs[device], out);
}

void ela_backend_close(ela_backend *be) {
    if (!be)
        return;
    be->iface->close(be->ctx);
    ela_free(be);
}

const char *ela_backend_name(const ela_backend *be) { return be ? be->name : "(null)"; }

ela_status ela_backend_device_info(const ela_backend *be, ela_device_info *out) {
    if (!be || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_backend_device_info: NULL %s",
                        be ? "out" : "backend");
    *out = be->device_info;
    return ELA_OK;
}

ela_status ela_backend_synchronize(ela_backend *be) {
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_backend_synchronize: backend is NULL");
    return be->iface->synchronize(be->ctx);
}

int ela_backend_supports(const ela_backend *be, ela_op op, const ela_dtype *dtypes, int n_dtypes) {
    if (!be || (n_dtypes > 0 && !dtypes) || (int)op < 0 || op >= ELA_OP_COUNT)
        return 0;
    return be->iface->supports && be->iface->supports(be->ctx, op, dtypes, n_dtypes);
}

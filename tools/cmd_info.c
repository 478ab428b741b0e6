/* `ela info` (DESIGN.md sections 1 and 3): the library version, every backend ela knows of
 * with its devices or the reason it is unavailable, and which backend the default name
 * (ELA_BACKEND, else "auto") opens. A default that does not open is reported, not fatal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] = "usage: ela info\n";

static const char *kind_name(ela_device_kind kind)
{
    switch (kind) {
    case ELA_DEVICE_CPU: return "cpu";
    case ELA_DEVICE_DISCRETE_GPU: return "discrete gpu";
    case ELA_DEVICE_INTEGRATED_GPU: return "integrated gpu";
    case ELA_DEVICE_VIRTUAL_GPU: return "virtual gpu";
    case ELA_DEVICE_SOFTWARE: return "software";
    }
    return "unknown";
}

static void print_device(int index, const ela_device_info *dev)
{
    printf("    device %d: %s\n", index, dev->name);
    printf("      kind:    %s\n", kind_name(dev->kind));
    printf("      memory:  %.1f GiB\n", (double)dev->memory_bytes / (1024.0 * 1024.0 * 1024.0));
    if (dev->details[0])
        printf("      details: %s\n", dev->details);
}

/* The backend list, growing the array when the library knows more than we guessed. */
static ela_status list_backends(ela_backend_info **out, int *count)
{
    int capacity = 4;
    for (;;) {
        ela_backend_info *list = calloc((size_t)capacity, sizeof(*list));
        if (!list) {
            fprintf(stderr, "ela: out of memory\n");
            return ELA_ERR_OOM;
        }
        int n = 0;
        ela_status st = ela_backend_list(list, capacity, &n);
        if (st != ELA_OK) {
            free(list);
            return st;
        }
        if (n <= capacity) {
            *out = list;
            *count = n;
            return ELA_OK;
        }
        free(list);
        capacity = n;
    }
}

static void print_default_backend(void)
{
    const char *env = getenv("ELA_BACKEND");
    const char *name = env && *env ? env : "auto";
    printf("default backend (%s%s): ", env && *env ? "ELA_BACKEND=" : "", name);
    ela_backend *backend = NULL;
    ela_status st = ela_backend_open(NULL, &backend);
    if (st != ELA_OK) {
        printf("does not open: %s: %s\n", ela_status_str(st), ela_last_error());
        return;
    }
    ela_device_info dev;
    if (ela_backend_device_info(backend, &dev) == ELA_OK)
        printf("opens %s (%s)\n", ela_backend_name(backend), dev.name);
    else
        printf("opens %s\n", ela_backend_name(backend));
    ela_backend_close(backend);
}

int cmd_info(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        return cli_usage_error(usage, "info: unexpected argument '%s'", argv[1]);
    }
    const char *threads_from = NULL;
    int threads = cli_threads(&threads_from);
    printf("ela %s\n", ela_version());
    printf("cpu threads: %d (%s)\n", threads, threads_from);

    ela_backend_info *list = NULL;
    int count = 0;
    ela_status st = list_backends(&list, &count);
    if (st != ELA_OK)
        return cli_fail(st);
    printf("backends:\n");
    for (int b = 0; b < count; b++) {
        const ela_backend_info *info = &list[b];
        if (info->available)
            printf("  %s: available, %d device%s\n", info->name, info->n_devices,
                   info->n_devices == 1 ? "" : "s");
        else
            printf("  %s: unavailable: %s\n", info->name,
                   info->reason[0] ? info->reason : "(no reason given)");
        int n_dev = info->n_devices < ELA_MAX_DEVICES ? info->n_devices : ELA_MAX_DEVICES;
        for (int i = 0; i < n_dev; i++)
            print_device(i, &info->devices[i]);
    }
    free(list);
    print_default_backend();
    return CLI_EXIT_OK;
}

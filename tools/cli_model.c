/* Model loading, text files and progress bars for the model commands (see cli_model.h). */
#include "cli_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"

void cli_progress(const char *label, int64_t done, int64_t total)
{
    if (!isatty(fileno(stderr)) || total <= 0)
        return;
    const int width = 30;
    int filled = (int)(done * width / total);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : ' ';
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %lld/%lld", label, bar, (long long)done, (long long)total);
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

static void load_progress(float fraction, void *user)
{
    (void)user;
    cli_progress("loading", (int64_t)(fraction * 1000.0f + 0.5f), 1000);
}

ela_status cli_load_model(const char *path, const char *backend_name, const char *router_path,
                          ela_backend **be, ela_model **model)
{
    *be = NULL;
    *model = NULL;
    ela_status st = ela_backend_open(backend_name, be);
    if (st != ELA_OK) {
        cli_fail(st);
        return st;
    }
    ela_model_params mp = ela_model_params_default();
    mp.progress = load_progress;
    mp.router_path = router_path;
    st = ela_model_load(path, *be, &mp, model);
    if (st != ELA_OK) {
        cli_fail(st);
        ela_backend_close(*be);
        *be = NULL;
    }
    return st;
}

int cli_read_file(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_note("cannot open %s: %s", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n + 1 < cap)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        cli_note("cannot read %s: %s", path, buf ? "read error" : "out of memory");
        free(buf);
        return 1;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

double cli_peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

int64_t cli_prefill_chunk(const ela_prefill_policy *policy, int64_t chunk, int64_t tokens) {
    ela_prefill_kind k = policy->kind;
    if (chunk || (k != ELA_PREFILL_TSA && k != ELA_PREFILL_TSA_XATTN && k != ELA_PREFILL_ELASTIC))
        return chunk;
    return (tokens + ELA_BLOCK - 1) / ELA_BLOCK * ELA_BLOCK;
}

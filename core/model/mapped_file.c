/* Read-only mmap of model files (POSIX) and small path helpers (core/model/mapped_file.h). */
#define _POSIX_C_SOURCE 200809L
#include "mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../alloc.h"
#include "../error.h"

static const uint8_t empty_file[1];

ela_status mapped_file_open(const char *path, mapped_file **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "mapped_file_open: out is NULL");
    *out = NULL;
    if (!path || !path[0])
        return ela_fail(ELA_ERR_INVALID_ARG, "mapped_file_open: empty path");
    size_t plen = strlen(path);
    mapped_file *f = ela_calloc(1, sizeof *f);
    char *copy = ela_calloc(plen + 1, 1);
    if (!f || !copy) {
        ela_free(copy);
        ela_free(f);
        return ela_fail(ELA_ERR_OOM, "out of memory opening %s", path);
    }
    memcpy(copy, path, plen);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        ela_free(copy);
        ela_free(f);
        return ela_fail(ELA_ERR_IO, "cannot open %s: %s", path, strerror(e));
    }
    struct stat sb;
    ela_status st = ELA_OK;
    if (fstat(fd, &sb) != 0) {
        st = ela_fail(ELA_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = ela_fail(ELA_ERR_IO, "%s is not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        st = ela_fail(ELA_ERR_IO, "%s is too large to map", path);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    if (f->size == 0) {
        f->data = empty_file;
    } else {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            st = ela_fail(errno == ENOMEM ? ELA_ERR_OOM : ELA_ERR_IO, "cannot map %s: %s", path,
                          strerror(errno));
            goto fail;
        }
        f->data = p;
    }
    close(fd);
    f->path = copy;
    *out = f;
    return ELA_OK;
fail:
    close(fd);
    ela_free(copy);
    ela_free(f);
    return st;
}

void mapped_file_close(mapped_file *f) {
    if (!f)
        return;
    if (f->size > 0)
        munmap((void *)f->data, f->size);
    ela_free(f->path);
    ela_free(f);
}

char *mapped_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = ela_calloc(a + b + 2, 1);
    if (!s)
        return NULL;
    memcpy(s, dir, a);
    size_t n = a;
    if (a > 0 && dir[a - 1] != '/')
        s[n++] = '/';
    memcpy(s + n, name, b);
    return s;
}

int mapped_path_is_dir(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int mapped_path_exists(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0;
}

/* Read-only memory-mapped files for the model loaders (DESIGN.md 5), and the description of a
 * tensor found in one, shared by the safetensors and GGUF parsers. The mapping backs the
 * weights on the CPU backend, so it lives as long as the model. */
#ifndef ELA_MODEL_MAPPED_FILE_H
#define ELA_MODEL_MAPPED_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

typedef struct {
    char *path;          /* owned copy, for messages */
    const uint8_t *data; /* size bytes, read-only; not NULL even when size is 0 */
    size_t size;
} mapped_file;

/* Open and map a regular file. ELA_ERR_IO naming the path and the system's reason. */
ela_status mapped_file_open(const char *path, mapped_file **out);
void mapped_file_close(mapped_file *f); /* NULL is a no-op */

/* dir + "/" + name in a new ela_calloc'd string; NULL when out of memory. */
char *mapped_path_join(const char *dir, const char *name);
/* 1 when path is a directory, 0 otherwise (missing included). */
int mapped_path_is_dir(const char *path);
/* 1 when path exists (anything), 0 otherwise. */
int mapped_path_exists(const char *path);

/* A tensor inside a mapped file, as a parser found it (checked against the file's size). */
typedef struct {
    const char *name;     /* NUL-terminated */
    int supported;        /* 1 when dtype is valid; 0 when ela has no dtype for the file's type */
    ela_dtype dtype;
    char type_name[16];   /* the file's own name of the type: "BF16", "I64", "q4_K", "type 99" */
    int n_dims;           /* 0..ELA_MAX_DIMS (0 is a scalar) */
    int64_t extents[ELA_MAX_DIMS]; /* outermost first */
    const uint8_t *data;  /* in the mapping; NULL when unsupported and of unknown size */
    size_t bytes;
    const char *file;     /* path of the file holding it */
} file_tensor;

#endif

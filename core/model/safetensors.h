/* safetensors reader (DESIGN.md 5): one file, or a model directory holding model.safetensors or
 * a sharded set described by model.safetensors.index.json. Every header field, shape and data
 * offset is checked against the file before use; the tensors point into the mapped files. */
#ifndef ELA_MODEL_SAFETENSORS_H
#define ELA_MODEL_SAFETENSORS_H

#include "mapped_file.h"

#define SAFETENSORS_MAX_HEADER ((uint64_t)100 << 20) /* 100 MB of JSON header at most */

typedef struct safetensors safetensors;

/* One .safetensors file. ELA_ERR_IO when it cannot be read, ELA_ERR_FORMAT naming the file and
 * the field when it is corrupt, ELA_ERR_UNSUPPORTED for tensors of more than 4 dims. Tensors of
 * dtypes ela has no use for are listed with supported = 0. */
ela_status safetensors_open_file(const char *path, safetensors **out);
/* A model directory: model.safetensors.index.json when present (each shard opened once; a
 * tensor must appear in one shard only, the one the index names), else model.safetensors. */
ela_status safetensors_open_dir(const char *dir, safetensors **out);
void safetensors_free(safetensors *st); /* NULL is a no-op */

int64_t safetensors_count(const safetensors *st);
const file_tensor *safetensors_at(const safetensors *st, int64_t i); /* NULL when out of range */
const file_tensor *safetensors_find(const safetensors *st, const char *name); /* NULL: absent */
int safetensors_n_files(const safetensors *st);

#endif

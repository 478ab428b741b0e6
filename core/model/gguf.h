/* GGUF reader (DESIGN.md 5): versions 2 and 3, every metadata value type, tensor infos and the
 * aligned data section, all checked against the file size. Tensors point into the mapped file;
 * metadata is looked up by key with typed getters. Spec: github.com/ggml-org/ggml docs/gguf.md. */
#ifndef ELA_MODEL_GGUF_H
#define ELA_MODEL_GGUF_H

#include "mapped_file.h"

typedef enum {
    GGUF_TYPE_U8 = 0,
    GGUF_TYPE_I8 = 1,
    GGUF_TYPE_U16 = 2,
    GGUF_TYPE_I16 = 3,
    GGUF_TYPE_U32 = 4,
    GGUF_TYPE_I32 = 5,
    GGUF_TYPE_F32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_U64 = 10,
    GGUF_TYPE_I64 = 11,
    GGUF_TYPE_F64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* ggml tensor types ela reads (others are listed as unsupported). */
#define GGML_TYPE_F32 0
#define GGML_TYPE_F16 1
#define GGML_TYPE_Q8_0 8
#define GGML_TYPE_BF16 30

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_KV 1000000      /* metadata entries */
#define GGUF_MAX_TENSORS 1000000

typedef struct gguf_file gguf_file;

/* Open and parse. ELA_ERR_IO when unreadable, ELA_ERR_FORMAT naming the field when corrupt,
 * ELA_ERR_UNSUPPORTED for GGUF versions other than 2 and 3. */
ela_status gguf_open(const char *path, gguf_file **out);
void gguf_free(gguf_file *g); /* NULL is a no-op */

const char *gguf_path(const gguf_file *g);
uint32_t gguf_version(const gguf_file *g);
uint64_t gguf_alignment(const gguf_file *g);

int64_t gguf_tensor_count(const gguf_file *g);
const file_tensor *gguf_tensor_at(const gguf_file *g, int64_t i);
const file_tensor *gguf_find_tensor(const gguf_file *g, const char *name); /* NULL: absent */

int64_t gguf_kv_count(const gguf_file *g);
const char *gguf_kv_key(const gguf_file *g, int64_t i);
gguf_type gguf_kv_type(const gguf_file *g, int64_t i);
int64_t gguf_find_key(const gguf_file *g, const char *key); /* -1: absent */
int gguf_has(const gguf_file *g, const char *key);

/* Typed getters: ELA_OK, or ELA_ERR_FORMAT naming the key when it is absent or of another
 * type. gguf_get_int takes any integer type (a u64 above INT64_MAX is an error);
 * gguf_get_float takes f32, f64 and integers. Strings are NUL-terminated copies owned by g
 * (a string holding a NUL byte is cut there; *len is the full length). */
ela_status gguf_get_int(const gguf_file *g, const char *key, int64_t *out);
ela_status gguf_get_float(const gguf_file *g, const char *key, double *out);
ela_status gguf_get_bool(const gguf_file *g, const char *key, int *out);
ela_status gguf_get_string(const gguf_file *g, const char *key, const char **out, size_t *len);

/* An array of numbers or bools: element type, count and the packed little-endian data. */
ela_status gguf_get_array(const gguf_file *g, const char *key, gguf_type *elem, int64_t *n,
                          const uint8_t **data);
/* Element i of such an array as an integer (integer and bool types) or a double (any). */
int64_t gguf_array_int(gguf_type elem, const uint8_t *data, int64_t i);
double gguf_array_float(gguf_type elem, const uint8_t *data, int64_t i);

/* An array of strings copied out NUL-terminated: strs[i] has lens[i] bytes. Free with
 * gguf_strings_free. */
typedef struct {
    int64_t n;
    const char **strs;
    size_t *lens;
    char *pool;
} gguf_strings;
ela_status gguf_get_strings(const gguf_file *g, const char *key, gguf_strings *out);
void gguf_strings_free(gguf_strings *s);

const char *gguf_type_name(gguf_type t); /* "u8", ..., "array", "?" */

#endif

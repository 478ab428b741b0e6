/* GGUF parser (core/model/gguf.h). Layout: "GGUF", u32 version, u64 tensor count, u64 kv count,
 * the kv pairs (u64-length strings, u32 value types, arrays of u32 type + u64 count + items),
 * tensor infos (name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset),
 * padding to general.alignment, then the data section the offsets point into. One pass checks
 * every length against the bytes left; names and strings are then copied into one pool. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../error.h"

typedef struct {
    const uint8_t *key; /* in the mapping, then in the pool (NUL-terminated) */
    size_t key_len;
    gguf_type type;
    gguf_type elem;      /* arrays */
    uint64_t n;          /* arrays: element count */
    const uint8_t *data; /* scalar bytes, string bytes, or the first array element */
    size_t bytes;        /* string length; array payload bytes */
    const char *str;     /* strings: NUL-terminated copy in the pool */
} gguf_kv;

struct gguf_file {
    mapped_file *file;
    uint32_t version;
    uint64_t alignment;
    gguf_kv *kv;
    int64_t n_kv;
    gguf_kv **kv_sorted; /* sorted by key */
    file_tensor *tensors;
    const uint8_t **tensor_names; /* in the mapping until the pool is built */
    size_t *tensor_name_lens;
    uint64_t *tensor_offsets;
    int64_t n_tensors;
    const file_tensor **tensors_sorted;
    char *pool;
};

/* ---- reading with bounds ---------------------------------------------------------------- */
typedef struct {
    const uint8_t *d;
    uint64_t size, pos;
    const char *path;
    const char *item_kind; /* "key" / "tensor" / NULL: what is being read, for messages */
    const uint8_t *item;
    size_t item_len;
} reader;

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static ela_status truncated(const reader *r, const char *field) {
    if (r->item_kind && r->item)
        return ela_fail(ELA_ERR_FORMAT, "%s: truncated at byte %llu reading %s of %s %.*s", r->path,
                        (unsigned long long)r->pos, field, r->item_kind,
                        (int)(r->item_len > 200 ? 200 : r->item_len), (const char *)r->item);
    return ela_fail(ELA_ERR_FORMAT, "%s: truncated at byte %llu reading %s", r->path,
                    (unsigned long long)r->pos, field);
}

static ela_status bad(const reader *r, const char *what) {
    if (r->item_kind && r->item)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s %.*s: %s", r->path, r->item_kind,
                        (int)(r->item_len > 200 ? 200 : r->item_len), (const char *)r->item, what);
    return ela_fail(ELA_ERR_FORMAT, "%s: %s", r->path, what);
}

static ela_status rd_uint(reader *r, int bytes, uint64_t *out, const char *field) {
    *out = 0;
    if ((uint64_t)bytes > r->size - r->pos)
        return truncated(r, field);
    *out = le(r->d + r->pos, bytes);
    r->pos += (uint64_t)bytes;
    return ELA_OK;
}

static ela_status rd_bytes(reader *r, uint64_t n, const uint8_t **out, const char *field) {
    *out = NULL;
    if (n > r->size - r->pos)
        return truncated(r, field);
    *out = r->d + r->pos;
    r->pos += n;
    return ELA_OK;
}

static ela_status rd_string(reader *r, const uint8_t **s, size_t *len, const char *field) {
    uint64_t n = 0;
    *s = NULL;
    *len = 0;
    ela_status st = rd_uint(r, 8, &n, field);
    if (st != ELA_OK)
        return st;
    if ((st = rd_bytes(r, n, s, field)) != ELA_OK)
        return st;
    *len = (size_t)n;
    return ELA_OK;
}

static const size_t scalar_size[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

const char *gguf_type_name(gguf_type t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? type_names[t] : "?";
}

#define GGUF_MAX_ARRAY_DEPTH 4

/* One value of type `type` (an array element or a kv value); checks and skips it. Nested
 * arrays are walked (bounded depth) but not offered by the getters. */
static ela_status skip_value(reader *r, uint32_t type, int depth) {
    ela_status st;
    if (type >= GGUF_TYPE_COUNT)
        return bad(r, "unknown value type");
    if (type == GGUF_TYPE_STRING) {
        const uint8_t *s;
        size_t n;
        return rd_string(r, &s, &n, "a string");
    }
    if (type == GGUF_TYPE_ARRAY) {
        uint64_t elem = 0, n = 0;
        if ((st = rd_uint(r, 4, &elem, "an array type")) != ELA_OK ||
            (st = rd_uint(r, 8, &n, "an array length")) != ELA_OK)
            return st;
        if (elem >= GGUF_TYPE_COUNT)
            return bad(r, "array of an unknown value type");
        if (elem != GGUF_TYPE_STRING && elem != GGUF_TYPE_ARRAY) {
            const uint8_t *p;
            if (n > (r->size - r->pos) / scalar_size[elem])
                return truncated(r, "array items");
            return rd_bytes(r, n * scalar_size[elem], &p, "array items");
        }
        if (depth + 1 >= GGUF_MAX_ARRAY_DEPTH)
            return bad(r, "arrays nested too deeply");
        /* Each item takes at least 8 bytes, so the loop is bounded by the file size. */
        if (n > (r->size - r->pos) / 8)
            return truncated(r, "array items");
        for (uint64_t i = 0; i < n; i++)
            if ((st = skip_value(r, (uint32_t)elem, depth + 1)) != ELA_OK)
                return st;
        return ELA_OK;
    }
    const uint8_t *p = NULL;
    if ((st = rd_bytes(r, scalar_size[type], &p, "a value")) != ELA_OK)
        return st;
    if (type == GGUF_TYPE_BOOL && *p > 1)
        return bad(r, "bool value is neither 0 nor 1");
    return ELA_OK;
}

static ela_status read_kv(reader *r, gguf_kv *kv) {
    ela_status st;
    uint64_t type;
    r->item_kind = NULL;
    if ((st = rd_string(r, &kv->key, &kv->key_len, "a metadata key")) != ELA_OK)
        return st;
    r->item_kind = "key";
    r->item = kv->key;
    r->item_len = kv->key_len;
    if (kv->key_len == 0 || memchr(kv->key, 0, kv->key_len))
        return bad(r, "a metadata key is empty or holds a NUL byte");
    if ((st = rd_uint(r, 4, &type, "the value type")) != ELA_OK)
        return st;
    if (type >= GGUF_TYPE_COUNT)
        return bad(r, "unknown value type");
    kv->type = (gguf_type)type;
    uint64_t start = r->pos;
    if (type == GGUF_TYPE_STRING) {
        if ((st = rd_string(r, &kv->data, &kv->bytes, "the string value")) != ELA_OK)
            return st;
        return ELA_OK;
    }
    if (type == GGUF_TYPE_ARRAY) {
        uint64_t elem = 0, n = 0;
        if ((st = rd_uint(r, 4, &elem, "the array type")) != ELA_OK ||
            (st = rd_uint(r, 8, &n, "the array length")) != ELA_OK)
            return st;
        r->pos = start;
        if ((st = skip_value(r, GGUF_TYPE_ARRAY, 0)) != ELA_OK)
            return st;
        kv->elem = (gguf_type)elem;
        kv->n = n;
        kv->data = r->d + start + 12;
        kv->bytes = (size_t)(r->pos - start - 12);
        return ELA_OK;
    }
    if ((st = skip_value(r, (uint32_t)type, 0)) != ELA_OK)
        return st;
    kv->data = r->d + start;
    kv->bytes = scalar_size[type];
    return ELA_OK;
}

/* ---- ggml tensor types ------------------------------------------------------------------ */
typedef struct {
    const char *name;
    int64_t block;      /* elements per block; 0: not a type this table knows */
    int64_t block_size; /* bytes per block */
    int supported;
    ela_dtype dtype;
} ggml_type_info;

/* Block sizes from ggml's type_traits; ids without an entry were removed from ggml. */
static const ggml_type_info ggml_types[] = {
    [0] = {"f32", 1, 4, 1, ELA_F32},          [1] = {"f16", 1, 2, 1, ELA_F16},
    [2] = {"q4_0", 32, 18, 0, ELA_F32},       [3] = {"q4_1", 32, 20, 0, ELA_F32},
    [6] = {"q5_0", 32, 22, 0, ELA_F32},       [7] = {"q5_1", 32, 24, 0, ELA_F32},
    [8] = {"q8_0", 32, 34, 1, ELA_Q8_0},      [9] = {"q8_1", 32, 36, 0, ELA_F32},
    [10] = {"q2_K", 256, 84, 0, ELA_F32},     [11] = {"q3_K", 256, 110, 0, ELA_F32},
    [12] = {"q4_K", 256, 144, 0, ELA_F32},    [13] = {"q5_K", 256, 176, 0, ELA_F32},
    [14] = {"q6_K", 256, 210, 0, ELA_F32},    [15] = {"q8_K", 256, 292, 0, ELA_F32},
    [16] = {"iq2_xxs", 256, 66, 0, ELA_F32},  [17] = {"iq2_xs", 256, 74, 0, ELA_F32},
    [18] = {"iq3_xxs", 256, 98, 0, ELA_F32},  [19] = {"iq1_s", 256, 50, 0, ELA_F32},
    [20] = {"iq4_nl", 32, 18, 0, ELA_F32},    [21] = {"iq3_s", 256, 110, 0, ELA_F32},
    [22] = {"iq2_s", 256, 82, 0, ELA_F32},    [23] = {"iq4_xs", 256, 136, 0, ELA_F32},
    [24] = {"i8", 1, 1, 0, ELA_F32},          [25] = {"i16", 1, 2, 0, ELA_F32},
    [26] = {"i32", 1, 4, 0, ELA_F32},         [27] = {"i64", 1, 8, 0, ELA_F32},
    [28] = {"f64", 1, 8, 0, ELA_F32},         [29] = {"iq1_m", 256, 56, 0, ELA_F32},
    [30] = {"bf16", 1, 2, 1, ELA_BF16},       [34] = {"tq1_0", 256, 54, 0, ELA_F32},
    [35] = {"tq2_0", 256, 66, 0, ELA_F32},    [39] = {"mxfp4", 32, 17, 0, ELA_F32},
};
#define N_GGML_TYPES ((uint32_t)(sizeof ggml_types / sizeof ggml_types[0]))

static ela_status read_tensor_info(reader *r, gguf_file *g, int64_t i) {
    ela_status st;
    file_tensor *t = &g->tensors[i];
    uint64_t n_dims, type, ne[ELA_MAX_DIMS];
    r->item_kind = NULL;
    if ((st = rd_string(r, &g->tensor_names[i], &g->tensor_name_lens[i], "a tensor name")) != ELA_OK)
        return st;
    r->item_kind = "tensor";
    r->item = g->tensor_names[i];
    r->item_len = g->tensor_name_lens[i];
    if (r->item_len == 0 || memchr(r->item, 0, r->item_len))
        return bad(r, "a tensor name is empty or holds a NUL byte");
    if ((st = rd_uint(r, 4, &n_dims, "n_dims")) != ELA_OK)
        return st;
    if (n_dims < 1 || n_dims > ELA_MAX_DIMS)
        return bad(r, "n_dims is not 1 to 4");
    uint64_t numel = 1;
    for (uint64_t k = 0; k < n_dims; k++) {
        if ((st = rd_uint(r, 8, &ne[k], "ne")) != ELA_OK)
            return st;
        if (ne[k] > (uint64_t)INT64_MAX || (ne[k] != 0 && numel > (uint64_t)INT64_MAX / ne[k]))
            return bad(r, "ne overflows");
        numel *= ne[k];
    }
    if ((st = rd_uint(r, 4, &type, "the ggml type")) != ELA_OK ||
        (st = rd_uint(r, 8, &g->tensor_offsets[i], "the data offset")) != ELA_OK)
        return st;
    if (type >= N_GGML_TYPES || ggml_types[type].block == 0)
        return bad(r, "invalid ggml type");
    const ggml_type_info *ti = &ggml_types[type];
    t->n_dims = (int)n_dims;
    for (uint64_t k = 0; k < n_dims; k++)
        t->extents[n_dims - 1 - k] = (int64_t)ne[k]; /* ne[0] is the innermost */
    t->supported = ti->supported;
    t->dtype = ti->dtype;
    snprintf(t->type_name, sizeof t->type_name, "%s", ti->name);
    if (ne[0] % (uint64_t)ti->block != 0)
        return bad(r, "ne[0] is not a multiple of the type's block");
    uint64_t rows = ne[0] ? numel / ne[0] : 0;
    uint64_t row_bytes = ne[0] / (uint64_t)ti->block * (uint64_t)ti->block_size;
    if (rows != 0 && row_bytes > (uint64_t)INT64_MAX / rows)
        return bad(r, "tensor size overflows");
    t->bytes = (size_t)(rows * row_bytes);
    if ((uint64_t)t->bytes != rows * row_bytes)
        return bad(r, "tensor size overflows");
    return ELA_OK;
}

/* ---- lookups ---------------------------------------------------------------------------- */
static int cmp_kv(const void *a, const void *b) {
    const gguf_kv *x = *(gguf_kv *const *)a, *y = *(gguf_kv *const *)b;
    return strcmp((const char *)x->key, (const char *)y->key);
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp((*(const file_tensor *const *)a)->name, (*(const file_tensor *const *)b)->name);
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Copies keys, string values and tensor names into one pool; sorts both lookup indices and
 * refuses repeated keys and names; checks data offsets and overlaps. */
static ela_status finish(gguf_file *g, uint64_t data_start) {
    const char *path = g->file->path;
    size_t total = 1;
    for (int64_t i = 0; i < g->n_kv; i++) {
        total += g->kv[i].key_len + 1;
        if (g->kv[i].type == GGUF_TYPE_STRING)
            total += g->kv[i].bytes + 1;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        total += g->tensor_name_lens[i] + 1;
    /* total is bounded by the file size plus one byte per item, so it cannot overflow. */
    g->pool = ela_calloc(total, 1);
    gguf_kv **ks = ela_calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *ks);
    g->tensors_sorted = ela_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(file_tensor *));
    range *ranges = ela_calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *ranges);
    g->kv_sorted = ks;
    ela_status st = ELA_OK;
    if (!g->pool || !ks || !g->tensors_sorted || !ranges) {
        st = ela_fail(ELA_ERR_OOM, "out of memory reading %s", path);
        goto done;
    }
    char *p = g->pool;
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        memcpy(p, kv->key, kv->key_len);
        kv->key = (const uint8_t *)p;
        p += kv->key_len + 1;
        if (kv->type == GGUF_TYPE_STRING) {
            memcpy(p, kv->data, kv->bytes);
            kv->str = p;
            p += kv->bytes + 1;
        }
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        memcpy(p, g->tensor_names[i], g->tensor_name_lens[i]);
        g->tensors[i].name = p;
        p += g->tensor_name_lens[i] + 1;
    }
    for (int64_t i = 0; i < g->n_kv; i++)
        ks[i] = &g->kv[i];
    qsort(ks, (size_t)g->n_kv, sizeof *ks, cmp_kv);
    for (int64_t i = 1; i < g->n_kv; i++)
        if (strcmp((const char *)ks[i]->key, (const char *)ks[i - 1]->key) == 0) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: metadata key %s appears twice", path,
                          (const char *)ks[i]->key);
            goto done;
        }
    for (int64_t i = 0; i < g->n_tensors; i++)
        g->tensors_sorted[i] = &g->tensors[i];
    qsort(g->tensors_sorted, (size_t)g->n_tensors, sizeof *g->tensors_sorted, cmp_tensor);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (strcmp(g->tensors_sorted[i]->name, g->tensors_sorted[i - 1]->name) == 0) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: tensor %s appears twice", path,
                          g->tensors_sorted[i]->name);
            goto done;
        }

    uint64_t data_size = data_start <= g->file->size ? g->file->size - data_start : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        file_tensor *t = &g->tensors[i];
        uint64_t off = g->tensor_offsets[i];
        if (off % g->alignment != 0) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: data offset %llu is not a multiple of the "
                          "alignment %llu", path, t->name, (unsigned long long)off,
                          (unsigned long long)g->alignment);
            goto done;
        }
        if (data_start > g->file->size || off > data_size || t->bytes > data_size - off) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: data [%llu, +%zu) runs past the end of "
                          "the data section (%llu bytes)", path, t->name, (unsigned long long)off,
                          t->bytes, (unsigned long long)data_size);
            goto done;
        }
        t->data = g->file->data + data_start + off;
        t->file = path;
        ranges[i].begin = off;
        ranges[i].end = off + t->bytes;
        ranges[i].name = t->name;
    }
    qsort(ranges, (size_t)g->n_tensors, sizeof *ranges, cmp_range);
    uint64_t max_end = 0;
    const range *last = NULL;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const range *rg = &ranges[i];
        if (rg->end == rg->begin)
            continue;
        if (last && rg->begin < max_end) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: tensors %s and %s overlap", path, last->name,
                          rg->name);
            goto done;
        }
        max_end = rg->end;
        last = rg;
    }
done:
    ela_free(ranges);
    return st;
}

ela_status gguf_open(const char *path, gguf_file **out) {
    if (!out || !path)
        return ela_fail(ELA_ERR_INVALID_ARG, "gguf_open: NULL argument");
    *out = NULL;
    gguf_file *g = ela_calloc(1, sizeof *g);
    if (!g)
        return ela_fail(ELA_ERR_OOM, "out of memory reading %s", path);
    ela_status st = mapped_file_open(path, &g->file);
    if (st != ELA_OK) {
        ela_free(g);
        return st;
    }
    reader r = {.d = g->file->data, .size = g->file->size, .path = g->file->path};
    uint64_t magic, version, n_tensors, n_kv;
    if ((st = rd_uint(&r, 4, &magic, "the magic")) != ELA_OK)
        goto fail;
    if (memcmp(g->file->data, "GGUF", 4) != 0) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: bad magic (not a GGUF file)", path);
        goto fail;
    }
    if ((st = rd_uint(&r, 4, &version, "the version")) != ELA_OK)
        goto fail;
    if (version != 2 && version != 3) {
        st = ela_fail(ELA_ERR_UNSUPPORTED, "%s: GGUF version %llu (ela reads versions 2 and 3)",
                      path, (unsigned long long)version);
        goto fail;
    }
    g->version = (uint32_t)version;
    if ((st = rd_uint(&r, 8, &n_tensors, "the tensor count")) != ELA_OK ||
        (st = rd_uint(&r, 8, &n_kv, "the metadata count")) != ELA_OK)
        goto fail;
    /* Every kv takes at least 13 bytes and every tensor info 32, so larger counts are lies. */
    if (n_kv > GGUF_MAX_KV || n_kv > (r.size - r.pos) / 13) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: metadata count %llu is more than the file can hold",
                      path, (unsigned long long)n_kv);
        goto fail;
    }
    if (n_tensors > GGUF_MAX_TENSORS || n_tensors > (r.size - r.pos) / 32) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: tensor count %llu is more than the file can hold",
                      path, (unsigned long long)n_tensors);
        goto fail;
    }
    g->kv = ela_calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = ela_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    g->tensor_names = ela_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensor_names);
    g->tensor_name_lens = ela_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof(size_t));
    g->tensor_offsets = ela_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof(uint64_t));
    if (!g->kv || !g->tensors || !g->tensor_names || !g->tensor_name_lens || !g->tensor_offsets) {
        st = ela_fail(ELA_ERR_OOM, "out of memory reading %s", path);
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((st = read_kv(&r, &g->kv[i])) != ELA_OK)
            goto fail;
        g->n_kv++;
    }
    r.item_kind = NULL;
    /* general.alignment: a power of two; 32 when absent. */
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        if (kv->key_len == 17 && memcmp(kv->key, "general.alignment", 17) == 0) {
            if (kv->type != GGUF_TYPE_U32 && kv->type != GGUF_TYPE_U64 &&
                kv->type != GGUF_TYPE_I32 && kv->type != GGUF_TYPE_I64) {
                st = ela_fail(ELA_ERR_FORMAT, "%s: general.alignment is a %s, not an integer",
                              path, gguf_type_name(kv->type));
                goto fail;
            }
            uint64_t a = le(kv->data, (int)kv->bytes);
            if (a == 0 || (a & (a - 1)) != 0 || a > ((uint64_t)1 << 30)) {
                st = ela_fail(ELA_ERR_FORMAT, "%s: general.alignment %llu is not a power of two "
                              "up to 2^30", path, (unsigned long long)a);
                goto fail;
            }
            g->alignment = a;
        }
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((st = read_tensor_info(&r, g, (int64_t)i)) != ELA_OK)
            goto fail;
        g->n_tensors++;
    }
    uint64_t data_start = r.pos + (g->alignment - r.pos % g->alignment) % g->alignment;
    if (n_tensors > 0 && data_start > r.size) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: the data section would start at byte %llu, past the end "
                      "of the file (%llu bytes)", path, (unsigned long long)data_start,
                      (unsigned long long)r.size);
        goto fail;
    }
    if ((st = finish(g, data_start)) != ELA_OK)
        goto fail;
    *out = g;
    return ELA_OK;
fail:
    gguf_free(g);
    return st;
}

void gguf_free(gguf_file *g) {
    if (!g)
        return;
    mapped_file_close(g->file);
    ela_free(g->kv);
    ela_free(g->kv_sorted);
    ela_free(g->tensors);
    ela_free(g->tensor_names);
    ela_free(g->tensor_name_lens);
    ela_free(g->tensor_offsets);
    ela_free(g->tensors_sorted);
    ela_free(g->pool);
    ela_free(g);
}

const char *gguf_path(const gguf_file *g) { return g ? g->file->path : ""; }
uint32_t gguf_version(const gguf_file *g) { return g ? g->version : 0; }
uint64_t gguf_alignment(const gguf_file *g) { return g ? g->alignment : 0; }
int64_t gguf_tensor_count(const gguf_file *g) { return g ? g->n_tensors : 0; }
int64_t gguf_kv_count(const gguf_file *g) { return g ? g->n_kv : 0; }

const file_tensor *gguf_tensor_at(const gguf_file *g, int64_t i) {
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const file_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    if (!g || !name)
        return NULL;
    int64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors_sorted[mid]->name, name);
        if (c == 0)
            return g->tensors_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *gguf_kv_key(const gguf_file *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? (const char *)g->kv[i].key : NULL;
}

gguf_type gguf_kv_type(const gguf_file *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? g->kv[i].type : GGUF_TYPE_COUNT;
}

int64_t gguf_find_key(const gguf_file *g, const char *key) {
    if (!g || !key)
        return -1;
    gguf_kv *const *ks = g->kv_sorted;
    int64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp((const char *)ks[mid]->key, key);
        if (c == 0)
            return ks[mid] - g->kv;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int gguf_has(const gguf_file *g, const char *key) { return gguf_find_key(g, key) >= 0; }

static const gguf_kv *lookup(const gguf_file *g, const char *key, ela_status *st) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) {
        *st = ela_fail(ELA_ERR_FORMAT, "%s: metadata key %s is missing", gguf_path(g),
                       key ? key : "(null)");
        return NULL;
    }
    return &g->kv[i];
}

static ela_status wrong_type(const gguf_file *g, const gguf_kv *kv, const char *want) {
    const char *t = gguf_type_name(kv->type);
    if (kv->type == GGUF_TYPE_ARRAY)
        return ela_fail(ELA_ERR_FORMAT, "%s: metadata key %s is an array of %s, not %s",
                        gguf_path(g), (const char *)kv->key, gguf_type_name(kv->elem), want);
    return ela_fail(ELA_ERR_FORMAT, "%s: metadata key %s is a %s, not %s", gguf_path(g),
                    (const char *)kv->key, t, want);
}

static int is_int_type(gguf_type t) {
    return t == GGUF_TYPE_U8 || t == GGUF_TYPE_I8 || t == GGUF_TYPE_U16 || t == GGUF_TYPE_I16 ||
           t == GGUF_TYPE_U32 || t == GGUF_TYPE_I32 || t == GGUF_TYPE_U64 || t == GGUF_TYPE_I64;
}

int64_t gguf_array_int(gguf_type elem, const uint8_t *data, int64_t i) {
    if ((unsigned)elem >= GGUF_TYPE_COUNT || scalar_size[elem] == 0)
        return 0;
    size_t sz = scalar_size[elem];
    uint64_t v = le(data + (size_t)i * sz, (int)sz);
    switch (elem) {
    case GGUF_TYPE_I8: return (int8_t)v;
    case GGUF_TYPE_I16: return (int16_t)v;
    case GGUF_TYPE_I32: return (int32_t)v;
    case GGUF_TYPE_I64: return (int64_t)v;
    case GGUF_TYPE_U64: return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
    case GGUF_TYPE_F32: {
        uint32_t b = (uint32_t)v;
        float f;
        memcpy(&f, &b, 4);
        return (int64_t)f;
    }
    case GGUF_TYPE_F64: {
        double f;
        memcpy(&f, &v, 8);
        return (int64_t)f;
    }
    default: return (int64_t)v;
    }
}

double gguf_array_float(gguf_type elem, const uint8_t *data, int64_t i) {
    if ((unsigned)elem >= GGUF_TYPE_COUNT || scalar_size[elem] == 0)
        return 0;
    size_t sz = scalar_size[elem];
    uint64_t v = le(data + (size_t)i * sz, (int)sz);
    if (elem == GGUF_TYPE_F32) {
        uint32_t b = (uint32_t)v;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (elem == GGUF_TYPE_F64) {
        double f;
        memcpy(&f, &v, 8);
        return f;
    }
    if (elem == GGUF_TYPE_U64)
        return (double)v;
    return (double)gguf_array_int(elem, data, i);
}

ela_status gguf_get_int(const gguf_file *g, const char *key, int64_t *out) {
    ela_status st = ELA_OK;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv)
        return st;
    if (!is_int_type(kv->type))
        return wrong_type(g, kv, "an integer");
    if (kv->type == GGUF_TYPE_U64 && le(kv->data, 8) > (uint64_t)INT64_MAX)
        return ela_fail(ELA_ERR_FORMAT, "%s: metadata key %s is too large", gguf_path(g), key);
    *out = gguf_array_int(kv->type, kv->data, 0);
    return ELA_OK;
}

ela_status gguf_get_float(const gguf_file *g, const char *key, double *out) {
    ela_status st = ELA_OK;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_TYPE_F32 && kv->type != GGUF_TYPE_F64 && !is_int_type(kv->type))
        return wrong_type(g, kv, "a number");
    *out = gguf_array_float(kv->type, kv->data, 0);
    return ELA_OK;
}

ela_status gguf_get_bool(const gguf_file *g, const char *key, int *out) {
    ela_status st = ELA_OK;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_TYPE_BOOL)
        return wrong_type(g, kv, "a bool");
    *out = kv->data[0] != 0;
    return ELA_OK;
}

ela_status gguf_get_string(const gguf_file *g, const char *key, const char **out, size_t *len) {
    ela_status st = ELA_OK;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_TYPE_STRING)
        return wrong_type(g, kv, "a string");
    *out = kv->str;
    if (len)
        *len = kv->bytes;
    return ELA_OK;
}

ela_status gguf_get_array(const gguf_file *g, const char *key, gguf_type *elem, int64_t *n,
                          const uint8_t **data) {
    ela_status st = ELA_OK;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_TYPE_ARRAY || kv->elem == GGUF_TYPE_STRING || kv->elem == GGUF_TYPE_ARRAY)
        return wrong_type(g, kv, "an array of numbers");
    *elem = kv->elem;
    *n = (int64_t)kv->n;
    *data = kv->data;
    return ELA_OK;
}

ela_status gguf_get_strings(const gguf_file *g, const char *key, gguf_strings *out) {
    memset(out, 0, sizeof *out);
    ela_status st = ELA_OK;
    const gguf_kv *kv = lookup(g, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_TYPE_ARRAY || kv->elem != GGUF_TYPE_STRING)
        return wrong_type(g, kv, "an array of strings");
    /* The parse checked every length, so this walk stays inside kv->bytes. */
    size_t n = (size_t)kv->n, total = 0, pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = (size_t)le(kv->data + pos, 8);
        pos += 8 + len;
        total += len + 1;
    }
    out->strs = ela_calloc(n ? n : 1, sizeof *out->strs);
    out->lens = ela_calloc(n ? n : 1, sizeof *out->lens);
    out->pool = ela_calloc(total ? total : 1, 1);
    if (!out->strs || !out->lens || !out->pool) {
        gguf_strings_free(out);
        return ela_fail(ELA_ERR_OOM, "out of memory reading %s of %s", key, gguf_path(g));
    }
    char *p = out->pool;
    pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = (size_t)le(kv->data + pos, 8);
        memcpy(p, kv->data + pos + 8, len);
        out->strs[i] = p;
        out->lens[i] = len;
        p += len + 1;
        pos += 8 + len;
    }
    out->n = (int64_t)n;
    return ELA_OK;
}

void gguf_strings_free(gguf_strings *s) {
    if (!s)
        return;
    ela_free((void *)s->strs);
    ela_free(s->lens);
    ela_free(s->pool);
    memset(s, 0, sizeof *s);
}

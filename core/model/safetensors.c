/* safetensors files and sharded directories (core/model/safetensors.h). Layout: u64 LE header
 * length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__},
 * then the data section; offsets are relative to its start. */
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../error.h"
#include "json.h"

struct safetensors {
    mapped_file **files;
    json_doc **docs; /* one header per file; tensor names point into it */
    int n_files, cap_files;
    file_tensor *tensors;
    int64_t n, cap;
    const file_tensor **by_name; /* sorted by name, built once every file is read */
};

typedef struct {
    const char *name;
    int supported;
    ela_dtype dtype;
    int64_t size; /* bytes per element */
} st_dtype;

static const st_dtype dtypes[] = {
    {"F32", 1, ELA_F32, 4},     {"F16", 1, ELA_F16, 2},     {"BF16", 1, ELA_BF16, 2},
    {"F64", 0, ELA_F32, 8},     {"I64", 0, ELA_F32, 8},     {"U64", 0, ELA_F32, 8},
    {"I32", 0, ELA_F32, 4},     {"U32", 0, ELA_F32, 4},     {"I16", 0, ELA_F32, 2},
    {"U16", 0, ELA_F32, 2},     {"I8", 0, ELA_F32, 1},      {"U8", 0, ELA_F32, 1},
    {"BOOL", 0, ELA_F32, 1},    {"F8_E4M3", 0, ELA_F32, 1}, {"F8_E5M2", 0, ELA_F32, 1},
    {"F8_E8M0", 0, ELA_F32, 1},
};

static ela_status oom(const char *what) {
    return ela_fail(ELA_ERR_OOM, "out of memory reading %s", what);
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static ela_status add_file(safetensors *st, mapped_file *f) {
    if (st->n_files == st->cap_files) {
        int cap = st->cap_files ? st->cap_files * 2 : 4;
        mapped_file **nf = ela_realloc(st->files, (size_t)cap, sizeof *nf);
        if (!nf)
            return oom(f->path);
        st->files = nf;
        json_doc **nd = ela_realloc(st->docs, (size_t)cap, sizeof *nd);
        if (!nd)
            return oom(f->path);
        st->docs = nd;
        st->cap_files = cap;
    }
    st->files[st->n_files] = f;
    st->docs[st->n_files] = NULL;
    st->n_files++;
    return ELA_OK;
}

/* Sorting helpers: qsort has no context argument, so the arrays sorted hold what they compare. */
typedef struct {
    uint64_t begin, end;
    const char *name;
} st_range;

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* One tensor entry of a header. */
static ela_status parse_tensor(const char *path, const json_member *m, const uint8_t *data,
                               uint64_t data_size, file_tensor *t, st_range *range) {
    const char *name = m->key;
    if (m->key_len == 0 || strlen(name) != m->key_len)
        return ela_fail(ELA_ERR_FORMAT, "%s: a tensor name is empty or holds a NUL byte", path);
    const json_value *v = &m->value;
    if (v->kind != JSON_OBJECT)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: entry is not an object", path, name);
    const json_value *dt = json_get(v, "dtype");
    const json_value *shape = json_get(v, "shape");
    const json_value *offs = json_get(v, "data_offsets");
    if (!dt || dt->kind != JSON_STRING)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: dtype is missing or not a string", path, name);
    if (!shape || shape->kind != JSON_ARRAY)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: shape is missing or not an array", path, name);
    if (!offs || offs->kind != JSON_ARRAY || offs->len != 2)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: data_offsets is not an array of two offsets",
                        path, name);
    memset(t, 0, sizeof *t);
    t->name = name;
    t->file = path;
    int64_t esize = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strcmp(dt->str, dtypes[i].name) == 0) {
            t->supported = dtypes[i].supported;
            t->dtype = dtypes[i].dtype;
            esize = dtypes[i].size;
        }
    }
    /* An unknown dtype is kept (unsupported, size unchecked) so that a checkpoint with an
     * exotic extra tensor still loads; using it is ELA_ERR_UNSUPPORTED. */
    size_t tn = dt->len < sizeof t->type_name - 1 ? dt->len : sizeof t->type_name - 1;
    memcpy(t->type_name, dt->str, tn);
    t->type_name[tn] = '\0';
    for (size_t i = 0; i < tn; i++)
        if ((unsigned char)t->type_name[i] < 0x20 || (unsigned char)t->type_name[i] >= 0x7f)
            t->type_name[i] = '?';

    if (shape->len > ELA_MAX_DIMS)
        return ela_fail(ELA_ERR_UNSUPPORTED, "%s: tensor %s has %zu dims; ela supports up to %d",
                        path, name, shape->len, ELA_MAX_DIMS);
    t->n_dims = (int)shape->len;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < t->n_dims; i++) {
        int64_t e;
        if (!json_as_int(&shape->items[i], &e) || e < 0)
            return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer",
                            path, name, i);
        t->extents[i] = e;
        if (e != 0 && numel > UINT64_MAX / (uint64_t)e)
            overflow = 1;
        else
            numel *= (uint64_t)e;
    }
    int64_t begin, end;
    if (!json_as_int(&offs->items[0], &begin) || !json_as_int(&offs->items[1], &end) || begin < 0 ||
        end < begin)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: data_offsets are not two ordered "
                        "non-negative integers", path, name);
    if ((uint64_t)end > data_size)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: data_offsets [%lld, %lld] run past the data "
                        "section of %llu bytes", path, name, (long long)begin, (long long)end,
                        (unsigned long long)data_size);
    uint64_t span = (uint64_t)(end - begin);
    if (esize > 0) {
        int mismatch = overflow || numel > UINT64_MAX / (uint64_t)esize ||
                       numel * (uint64_t)esize != span;
        if (t->n_dims == 0)
            mismatch = span != (uint64_t)esize; /* a scalar holds one element */
        if (mismatch)
            return ela_fail(ELA_ERR_FORMAT, "%s: tensor %s: shape and dtype %s need %s bytes, "
                            "data_offsets [%lld, %lld] hold %llu", path, name, t->type_name,
                            overflow ? "too many" : "a different number of", (long long)begin,
                            (long long)end, (unsigned long long)span);
    }
    t->data = data + begin;
    t->bytes = (size_t)span;
    range->begin = (uint64_t)begin;
    range->end = (uint64_t)end;
    range->name = name;
    return ELA_OK;
}

/* Parses the header of st->files[fi] and appends its tensors. */
static ela_status parse_file(safetensors *st, int fi) {
    const mapped_file *f = st->files[fi];
    const char *path = f->path;
    if (f->size < 8)
        return ela_fail(ELA_ERR_FORMAT, "%s: %zu bytes is too short for the header length field",
                        path, f->size);
    uint64_t hlen = le64(f->data);
    if (hlen > f->size - 8)
        return ela_fail(ELA_ERR_FORMAT, "%s: header length %llu runs past the end of the file "
                        "(%zu bytes)", path, (unsigned long long)hlen, f->size);
    if (hlen > SAFETENSORS_MAX_HEADER)
        return ela_fail(ELA_ERR_FORMAT, "%s: header length %llu is more than the %llu bytes allowed",
                        path, (unsigned long long)hlen, (unsigned long long)SAFETENSORS_MAX_HEADER);
    ela_status s = json_parse((const char *)f->data + 8, (size_t)hlen, path, &st->docs[fi]);
    if (s != ELA_OK)
        return s;
    const json_value *root = json_root(st->docs[fi]);
    if (root->kind != JSON_OBJECT)
        return ela_fail(ELA_ERR_FORMAT, "%s: header is not a JSON object", path);
    const uint8_t *data = f->data + 8 + hlen;
    uint64_t data_size = f->size - 8 - hlen;

    size_t count = 0;
    for (size_t i = 0; i < root->len; i++)
        count += strcmp(root->members[i].key, "__metadata__") != 0;
    if (st->n + (int64_t)count > st->cap) {
        int64_t cap = st->cap ? st->cap : 64;
        while (cap < st->n + (int64_t)count)
            cap *= 2;
        file_tensor *nt = ela_realloc(st->tensors, (size_t)cap, sizeof *nt);
        if (!nt)
            return oom(path);
        st->tensors = nt;
        st->cap = cap;
    }
    st_range *ranges = ela_calloc(count ? count : 1, sizeof *ranges);
    if (!ranges)
        return oom(path);
    size_t k = 0;
    for (size_t i = 0; i < root->len; i++) {
        const json_member *m = &root->members[i];
        if (strcmp(m->key, "__metadata__") == 0)
            continue;
        if ((s = parse_tensor(path, m, data, data_size, &st->tensors[st->n + (int64_t)k],
                              &ranges[k])) != ELA_OK)
            goto done;
        k++;
    }
    /* Tensors may not share bytes (empty ones cover nothing). */
    qsort(ranges, count, sizeof *ranges, cmp_range);
    uint64_t max_end = 0;
    const st_range *last = NULL;
    for (size_t i = 0; i < count; i++) {
        const st_range *r = &ranges[i];
        if (r->end == r->begin)
            continue;
        if (last && r->begin < max_end) {
            s = ela_fail(ELA_ERR_FORMAT, "%s: tensors %s and %s overlap (data_offsets [%llu, %llu] "
                         "and [%llu, %llu])", path, last->name, r->name,
                         (unsigned long long)last->begin, (unsigned long long)last->end,
                         (unsigned long long)r->begin, (unsigned long long)r->end);
            goto done;
        }
        max_end = r->end;
        last = r;
    }
    st->n += (int64_t)count;
done:
    ela_free(ranges);
    return s;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const file_tensor *const *)a)->name, (*(const file_tensor *const *)b)->name);
}

/* Sorts the name index and refuses a name that appears twice. */
static ela_status build_index(safetensors *st, const char *what) {
    st->by_name = ela_calloc(st->n ? (size_t)st->n : 1, sizeof *st->by_name);
    if (!st->by_name)
        return oom(what);
    for (int64_t i = 0; i < st->n; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_by_name);
    for (int64_t i = 1; i < st->n; i++) {
        const file_tensor *x = st->by_name[i - 1], *y = st->by_name[i];
        if (strcmp(x->name, y->name) == 0)
            return ela_fail(ELA_ERR_FORMAT, "tensor %s appears twice (in %s and %s)", x->name,
                            x->file, y->file);
    }
    return ELA_OK;
}

static ela_status open_one(safetensors *st, const char *path) {
    mapped_file *f = NULL;
    ela_status s = mapped_file_open(path, &f);
    if (s != ELA_OK)
        return s;
    if ((s = add_file(st, f)) != ELA_OK) {
        mapped_file_close(f);
        return s;
    }
    return parse_file(st, st->n_files - 1);
}

ela_status safetensors_open_file(const char *path, safetensors **out) {
    if (!out || !path)
        return ela_fail(ELA_ERR_INVALID_ARG, "safetensors_open_file: NULL argument");
    *out = NULL;
    safetensors *st = ela_calloc(1, sizeof *st);
    if (!st)
        return oom(path);
    ela_status s = open_one(st, path);
    if (s == ELA_OK)
        s = build_index(st, path);
    if (s != ELA_OK) {
        safetensors_free(st);
        return s;
    }
    *out = st;
    return ELA_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard is a plain file name beside the index: no directories, nothing hidden. */
static int shard_name_ok(const json_value *v) {
    if (v->kind != JSON_STRING || v->len == 0 || strlen(v->str) != v->len || v->str[0] == '.')
        return 0;
    return strchr(v->str, '/') == NULL && strchr(v->str, '\\') == NULL;
}

static ela_status open_sharded(safetensors *st, const char *dir, const char *index_path) {
    mapped_file *f = NULL;
    json_doc *doc = NULL;
    const char **shards = NULL;
    char *path = NULL;
    ela_status s = mapped_file_open(index_path, &f);
    if (s != ELA_OK)
        return s;
    if ((s = json_parse((const char *)f->data, f->size, index_path, &doc)) != ELA_OK)
        goto done;
    const json_value *map = json_get(json_root(doc), "weight_map");
    if (!map || map->kind != JSON_OBJECT) {
        s = ela_fail(ELA_ERR_FORMAT, "%s: weight_map is missing or not an object", index_path);
        goto done;
    }
    shards = ela_calloc(map->len ? map->len : 1, sizeof *shards);
    if (!shards) {
        s = oom(index_path);
        goto done;
    }
    for (size_t i = 0; i < map->len; i++) {
        const json_value *v = &map->members[i].value;
        if (!shard_name_ok(v)) {
            s = ela_fail(ELA_ERR_FORMAT, "%s: weight_map entry for %s is not a plain shard file "
                         "name", index_path, map->members[i].key);
            goto done;
        }
        shards[i] = v->str;
    }
    qsort(shards, map->len, sizeof *shards, cmp_str_ptr);
    for (size_t i = 0; i < map->len; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0)
            continue; /* every shard is opened once */
        if (!(path = mapped_path_join(dir, shards[i]))) {
            s = oom(index_path);
            goto done;
        }
        if ((s = open_one(st, path)) != ELA_OK)
            goto done;
        ela_free(path);
        path = NULL;
    }
    if ((s = build_index(st, index_path)) != ELA_OK)
        goto done;
    /* Every tensor the index names must sit in the shard it names. */
    for (size_t i = 0; i < map->len; i++) {
        const json_member *m = &map->members[i];
        const file_tensor *t = safetensors_find(st, m->key);
        const char *file = t ? strrchr(t->file, '/') : NULL;
        file = file ? file + 1 : t ? t->file : NULL;
        if (!t || strcmp(file, m->value.str) != 0) {
            s = ela_fail(ELA_ERR_FORMAT, "%s: weight_map puts tensor %s in %s, %s", index_path,
                         m->key, m->value.str, t ? "but it is in another shard" :
                         "which does not hold it");
            goto done;
        }
    }
done:
    ela_free(path);
    ela_free(shards);
    json_free(doc);
    mapped_file_close(f);
    return s;
}

ela_status safetensors_open_dir(const char *dir, safetensors **out) {
    if (!out || !dir)
        return ela_fail(ELA_ERR_INVALID_ARG, "safetensors_open_dir: NULL argument");
    *out = NULL;
    char *index = mapped_path_join(dir, "model.safetensors.index.json");
    char *single = mapped_path_join(dir, "model.safetensors");
    safetensors *st = NULL;
    ela_status s = ELA_OK;
    if (!index || !single) {
        s = oom(dir);
    } else if (mapped_path_exists(index)) {
        if (!(st = ela_calloc(1, sizeof *st)))
            s = oom(dir);
        else if ((s = open_sharded(st, dir, index)) != ELA_OK) {
            safetensors_free(st);
            st = NULL;
        }
    } else if (mapped_path_exists(single)) {
        s = safetensors_open_file(single, &st);
    } else {
        s = ela_fail(ELA_ERR_IO, "%s has neither model.safetensors nor "
                     "model.safetensors.index.json", dir);
    }
    ela_free(index);
    ela_free(single);
    *out = st;
    return s;
}

void safetensors_free(safetensors *st) {
    if (!st)
        return;
    for (int i = 0; i < st->n_files; i++) {
        json_free(st->docs[i]);
        mapped_file_close(st->files[i]);
    }
    ela_free(st->files);
    ela_free(st->docs);
    ela_free(st->tensors);
    ela_free(st->by_name);
    ela_free(st);
}

int64_t safetensors_count(const safetensors *st) { return st ? st->n : 0; }
int safetensors_n_files(const safetensors *st) { return st ? st->n_files : 0; }

const file_tensor *safetensors_at(const safetensors *st, int64_t i) {
    return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const file_tensor *safetensors_find(const safetensors *st, const char *name) {
    if (!st || !name || !st->by_name)
        return NULL;
    int64_t lo = 0, hi = st->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0)
            return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

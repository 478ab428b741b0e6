/* Special-token index (core/model/tok_specials.h). */
#include "core/model/tok_specials.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct {
    uint8_t first;
    uint64_t len;
    int32_t id;
} entry;

static int entry_cmp(const void *pa, const void *pb) {
    const entry *a = pa, *b = pb;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : (a->id > b->id);
}

ela_status tok_specials_build(tok_specials *s, const uint8_t *text, const uint64_t *off,
                              const uint8_t *flags, unsigned flag, int64_t n_vocab) {
    int64_t n = 0;
    for (int64_t i = 0; i < n_vocab; i++)
        n += (flags[i] & flag) && off[i + 1] > off[i];
    entry *e = ela_calloc((size_t)n + 1, sizeof *e);
    s->ids = ela_calloc((size_t)n + 1, sizeof *s->ids);
    if (!e || !s->ids) {
        ela_free(e);
        return ela_fail(ELA_ERR_OOM, "tokenizer: out of memory for %lld special tokens",
                        (long long)n);
    }
    int64_t k = 0;
    for (int64_t i = 0; i < n_vocab; i++)
        if ((flags[i] & flag) && off[i + 1] > off[i])
            e[k++] = (entry){text[off[i]], off[i + 1] - off[i], (int32_t)i};
    qsort(e, (size_t)n, sizeof *e, entry_cmp);
    for (int64_t j = 0, b = 0; b <= 256; b++) {
        while (j < n && e[j].first < b)
            j++;
        s->first[b] = j;
    }
    for (int64_t j = 0; j < n; j++)
        s->ids[j] = e[j].id;
    ela_free(e);
    return ELA_OK;
}

void tok_specials_free(tok_specials *s) {
    ela_free(s->ids);
    s->ids = NULL;
}

int32_t tok_specials_at(const tok_specials *s, const uint8_t *text, const uint64_t *off,
                        const uint8_t *str, size_t n, size_t i, size_t *len) {
    for (int64_t k = s->first[str[i]]; k < s->first[str[i] + 1]; k++) {
        int32_t id = s->ids[k];
        size_t l = (size_t)(off[id + 1] - off[id]);
        if (l <= n - i && memcmp(str + i, text + off[id], l) == 0) {
            *len = l;
            return id;
        }
    }
    return -1;
}

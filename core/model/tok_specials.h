/* Special tokens of both tokenizers (tokenizer.c, tokenizer_spm.c), matched as whole strings in
 * the raw text, leftmost-longest: their ids sorted by (first byte, length descending, id) and
 * indexed by first byte. Token texts are given as a vocabulary's `text + off[id]` arrays. */
#ifndef ELA_CORE_MODEL_TOK_SPECIALS_H
#define ELA_CORE_MODEL_TOK_SPECIALS_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

typedef struct {
    int32_t *ids;      /* special ids in match order */
    int64_t first[257]; /* ids[first[b], first[b + 1]) start with byte b */
} tok_specials;

/* The ids of n_vocab whose flags have `flag` and whose text is not empty. ELA_ERR_OOM (with a
 * message) when memory runs out. */
ela_status tok_specials_build(tok_specials *s, const uint8_t *text, const uint64_t *off,
                              const uint8_t *flags, unsigned flag, int64_t n_vocab);
void tok_specials_free(tok_specials *s);

/* Nonzero when some special token starts with byte b. */
static inline int tok_specials_start(const tok_specials *s, uint8_t b) {
    return s->first[b] != s->first[b + 1];
}

/* The longest special token at str[i] (str has n bytes), its length in *len; -1 if none. */
int32_t tok_specials_at(const tok_specials *s, const uint8_t *text, const uint64_t *off,
                        const uint8_t *str, size_t n, size_t i, size_t *len);

#endif

/* The BPE machinery both tokenizers share (byte-level in tokenizer.c, SentencePiece-style in
 * tokenizer_spm.c): the merge table (pair of token ids -> rank and merged id, open addressing)
 * and the merge loop over one word (symbols as a linked list, candidate merges in a heap by
 * rank, ties to the leftmost, stale candidates skipped as HF tokenizers does). */
#ifndef ELA_CORE_MODEL_BPE_MERGE_H
#define ELA_CORE_MODEL_BPE_MERGE_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

typedef struct {
    uint64_t key; /* left << 32 | right; UINT64_MAX: empty */
    int32_t rank, id;
} bpe_pair;

typedef struct {
    bpe_pair *slots;
    uint64_t mask;
} bpe_pairs;

/* A power of two of at least 16 and twice n: the size of an open-addressing table for n keys. */
uint64_t bpe_table_size(uint64_t n);

/* Room for n pairs, all empty; 0 on success, -1 out of memory (nothing to free then). */
int bpe_pairs_alloc(bpe_pairs *p, uint64_t n);
void bpe_pairs_free(bpe_pairs *p);
/* Insert, or overwrite the rank and id of a pair already there (HF keeps a repeated merge's
 * last rank). The table must have room. */
void bpe_pairs_put(bpe_pairs *p, int32_t a, int32_t b, int32_t rank, int32_t id);
const bpe_pair *bpe_pairs_find(const bpe_pairs *p, int32_t a, int32_t b);

typedef struct {
    int32_t rank, pos, id;
} bpe_candidate;

/* One word's symbols, reused across words of one ela_tokenize call. */
typedef struct {
    int32_t *sym, *prev, *next;
    bpe_candidate *heap;
    size_t cap;
} bpe_word;

/* Room for a word of len symbols (ELA_ERR_OOM naming ela_tokenize otherwise). */
ela_status bpe_word_reserve(bpe_word *w, size_t len);
void bpe_word_free(bpe_word *w);
/* Merges the n symbols in w->sym[0, n) by the table until no pair merges; the result is left
 * along w->next from 0 (merged-away symbols are -1). */
void bpe_word_merge(bpe_word *w, int32_t n, const bpe_pairs *pairs);

#endif

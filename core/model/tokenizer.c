/* Byte-level BPE tokenizer (DESIGN.md 5): tokenizer_build from a tokenizer_spec and the public
 * ela_tokenize / ela_token_piece. Encoding follows Hugging Face tokenizers step by step: added
 * (special) tokens are cut out of the raw text first (leftmost, then longest), each remaining
 * segment is NFC-normalized when configured, split by the pre-tokenizer regex
 * (tokenizer_pretok.c), and each piece is BPE-merged from its bytes: repeatedly the adjacent
 * pair of lowest merge rank, leftmost among equals (HF's priority queue, kept here as a binary
 * heap so a long word costs O(n log n)). Tokens are held as the raw bytes they stand for (the
 * inverse of GPT-2's byte-to-unicode map), so BPE works on bytes and never builds the
 * byte-level string. */
#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../error.h"
#include "bpe_merge.h"
#include "tok_specials.h"
#include "tokenizer_internal.h"
#include "tokenizer_spm.h"

#define FLAG_SPECIAL 1u /* matched as a whole in the raw input; piece is its text */
#define FLAG_TEXT 2u    /* not in the byte-level alphabet: piece is its text, BPE never makes it */

#define CACHE_MAX_WORD 256 /* pieces longer than this are not cached (as HF's BPE cache) */

struct ela_tokenizer {
    int64_t n_vocab;
    uint8_t *pieces;      /* bytes of every token back to back */
    uint64_t *piece_off;  /* [n_vocab + 1] */
    uint8_t *flags;       /* [n_vocab] FLAG_* */
    int32_t *vocab;       /* open addressing over (piece, FLAG_TEXT); -1 empty */
    uint64_t vocab_mask;
    bpe_pairs pairs;
    int32_t byte_id[256];
    tok_specials specials; /* matched as a whole in the raw input */
    tokenizer_pre pre;
    int nfc, ignore_merges, add_bos;
    int32_t bos, eos;
    tokenizer_spm *spm;   /* SentencePiece-style: encoding and pieces are its (tokenizer_spm.c) */
};

/* ---- hashing ------------------------------------------------------------------------- */
static uint64_t hash_bytes(const uint8_t *p, size_t n, unsigned flag) {
    uint64_t h = 0xcbf29ce484222325ull ^ (flag * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static inline const uint8_t *piece_of(const ela_tokenizer *t, int32_t id, size_t *len) {
    *len = (size_t)(t->piece_off[id + 1] - t->piece_off[id]);
    return t->pieces + t->piece_off[id];
}

/* Id of the non-special token with these piece bytes and FLAG_TEXT bit, or -1. */
static int32_t vocab_find(const ela_tokenizer *t, const uint8_t *p, size_t n, unsigned text) {
    uint64_t h = hash_bytes(p, n, text);
    for (uint64_t i = h & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab[i];
        if (id < 0)
            return -1;
        size_t len;
        const uint8_t *q = piece_of(t, id, &len);
        if (len == n && (t->flags[id] & FLAG_TEXT) == text && memcmp(p, q, n) == 0)
            return id;
    }
}

/* ---- GPT-2 byte-to-unicode map ------------------------------------------------------- */
/* Bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF stand for themselves; the other 68 map to U+0100...
 * in byte order. cp_to_byte[cp] for cp < 0x144, -1 elsewhere. */
static void byte_level_inverse(int16_t cp_to_byte[0x144]) {
    for (int i = 0; i < 0x144; i++)
        cp_to_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_to_byte[self ? b : 0x100 + extra++] = (int16_t)b;
    }
}

/* Raw bytes of byte-level text into out (room for n); returns their count, or SIZE_MAX when a
 * character is outside the alphabet (or the text is not UTF-8). */
static size_t byte_level_decode(const int16_t *cp_to_byte, const char *text, size_t n,
                                uint8_t *out) {
    const uint8_t *s = (const uint8_t *)text;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += tok_utf8_decode(s, n, i, &cp);
        if (cp >= 0x144 || cp_to_byte[cp] < 0)
            return SIZE_MAX;
        out[m++] = (uint8_t)cp_to_byte[cp];
    }
    return m;
}

/* ---- build --------------------------------------------------------------------------- */
void ela_tokenizer_free(ela_tokenizer *tok) {
    if (!tok)
        return;
    tokenizer_spm_free(tok->spm);
    tok_specials_free(&tok->specials);
    bpe_pairs_free(&tok->pairs);
    ela_free(tok->vocab);
    ela_free(tok->flags);
    ela_free(tok->piece_off);
    ela_free(tok->pieces);
    ela_free(tok);
}

/* Id of a token given as byte-level text (as merges name them), or -1. */
static int32_t resolve(const ela_tokenizer *t, const int16_t *cp_to_byte, const char *text,
                       size_t n, uint8_t *scratch) {
    size_t m = byte_level_decode(cp_to_byte, text, n, scratch);
    if (m != SIZE_MAX)
        return vocab_find(t, scratch, m, 0);
    return vocab_find(t, (const uint8_t *)text, n, FLAG_TEXT);
}

static ela_status build_merges(ela_tokenizer *t, const tokenizer_spec *spec,
                               const int16_t *cp_to_byte) {
    size_t max_len = 0;
    for (int64_t k = 0; k < spec->n_merges; k++) {
        if (!spec->merges[k])
            return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_build: merges[%lld] is NULL",
                            (long long)k);
        if (spec->merge_lens[k] > max_len)
            max_len = spec->merge_lens[k];
    }
    /* scratch: [0, max_len] the merged text, then room for decoding any text to raw bytes */
    uint8_t *scratch = ela_calloc(max_len + 1, 2);
    if (!scratch)
        return ela_fail(ELA_ERR_OOM, "tokenizer_build: out of memory for the merges");
    ela_status st = ELA_OK;
    for (int64_t k = 0; k < spec->n_merges && st == ELA_OK; k++) {
        const char *m = spec->merges[k];
        size_t n = spec->merge_lens[k];
        int32_t a = -1, b = -1;
        size_t split = 0;
        /* "left right": byte-level tokens hold no U+0020, but take the first split that
         * names two tokens in case some text token does. */
        for (size_t p = 0; p < n && (a < 0 || b < 0); p++) {
            if (m[p] != ' ')
                continue;
            split = p;
            a = resolve(t, cp_to_byte, m, p, scratch + max_len + 1);
            b = a < 0 ? -1 : resolve(t, cp_to_byte, m + p + 1, n - p - 1, scratch + max_len + 1);
        }
        if (a < 0 || b < 0) {
            st = ela_fail(ELA_ERR_FORMAT,
                          "tokenizer: merge %lld \"%.*s\" does not name two tokens of the "
                          "vocabulary",
                          (long long)k, (int)(n > 200 ? 200 : n), m);
            break;
        }
        /* The merged token, named by the two texts back to back (as HF looks it up). */
        memcpy(scratch, m, split);
        memcpy(scratch + split, m + split + 1, n - split - 1);
        int32_t id = resolve(t, cp_to_byte, (const char *)scratch, n - 1,
                             scratch + max_len + 1);
        if (id < 0) {
            st = ela_fail(ELA_ERR_FORMAT,
                          "tokenizer: merge %lld \"%.*s\": the merged token is not in the "
                          "vocabulary",
                          (long long)k, (int)(n > 200 ? 200 : n), m);
            break;
        }
        /* A repeated pair keeps its last rank (HF collects the merges into a map). */
        bpe_pairs_put(&t->pairs, a, b, (int32_t)k, id);
    }
    ela_free(scratch);
    return st;
}

ela_status tokenizer_build(const tokenizer_spec *spec, ela_tokenizer **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_build: out is NULL");
    *out = NULL;
    if (!spec || !spec->tokens || !spec->token_lens)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_build: spec, tokens or token_lens is NULL");
    if (spec->n_vocab <= 0 || spec->n_vocab > INT32_MAX)
        return ela_fail(ELA_ERR_FORMAT, "tokenizer: vocabulary size %lld out of range",
                        (long long)spec->n_vocab);
    if (spec->n_merges < 0 || spec->n_merges > INT32_MAX ||
        (spec->n_merges > 0 && (!spec->merges || !spec->merge_lens)))
        return ela_fail(ELA_ERR_FORMAT, "tokenizer: bad merge list (%lld merges)",
                        (long long)spec->n_merges);
    if (spec->pre != TOKENIZER_PRE_LLAMA3 && spec->pre != TOKENIZER_PRE_QWEN2 &&
        spec->pre != TOKENIZER_PRE_GPT2)
        return ela_fail(ELA_ERR_UNSUPPORTED, "tokenizer_build: unknown pre-tokenizer %d",
                        (int)spec->pre);
    if (spec->bos < -1 || spec->bos >= spec->n_vocab || spec->eos < -1 ||
        spec->eos >= spec->n_vocab)
        return ela_fail(ELA_ERR_FORMAT, "tokenizer: bos %d or eos %d outside the vocabulary",
                        (int)spec->bos, (int)spec->eos);
    size_t n = (size_t)spec->n_vocab, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!spec->tokens[i] && spec->token_lens[i])
            return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_build: tokens[%zu] is NULL", i);
        if (spec->token_lens[i] > SIZE_MAX / 2 - total)
            return ela_fail(ELA_ERR_FORMAT, "tokenizer: token texts too long");
        total += spec->token_lens[i];
    }

    ela_status st = ELA_ERR_OOM;
    ela_tokenizer *t = ela_calloc(1, sizeof(*t));
    if (!t)
        goto oom;
    t->n_vocab = spec->n_vocab;
    t->pre = spec->pre;
    t->nfc = spec->nfc != 0;
    t->ignore_merges = spec->ignore_merges != 0;
    t->bos = spec->bos;
    t->eos = spec->eos;
    t->add_bos = spec->add_bos != 0 && spec->bos >= 0;
    t->vocab_mask = bpe_table_size(n) - 1;
    if (!(t->pieces = ela_calloc(total + 1, 1)) ||
        !(t->piece_off = ela_calloc(n + 1, sizeof(uint64_t))) ||
        !(t->flags = ela_calloc(n, 1)) ||
        !(t->vocab = ela_calloc(t->vocab_mask + 1, sizeof(int32_t))) ||
        bpe_pairs_alloc(&t->pairs, (uint64_t)spec->n_merges) != 0)
        goto oom;
    memset(t->vocab, 0xFF, (t->vocab_mask + 1) * sizeof(int32_t));

    /* Pieces: raw bytes of byte-level tokens, text of special and out-of-alphabet ones. */
    int16_t cp_to_byte[0x144];
    byte_level_inverse(cp_to_byte);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *text = spec->tokens[i];
        size_t len = spec->token_lens[i];
        t->piece_off[i] = off;
        if (spec->special && spec->special[i]) {
            t->flags[i] = FLAG_SPECIAL;
        } else {
            size_t m = byte_level_decode(cp_to_byte, text, len, t->pieces + off);
            if (m != SIZE_MAX) {
                off += m;
                continue;
            }
            t->flags[i] = FLAG_TEXT;
        }
        if (len)
            memcpy(t->pieces + off, text, len);
        off += len;
    }
    t->piece_off[n] = off;

    /* Vocabulary hash of the non-special tokens; the first of equal pieces wins. */
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *p = piece_of(t, (int32_t)i, &len);
        if ((t->flags[i] & FLAG_SPECIAL) || len == 0)
            continue;
        unsigned text = t->flags[i] & FLAG_TEXT;
        uint64_t h = hash_bytes(p, len, text) & t->vocab_mask;
        int dup = 0;
        while (t->vocab[h] >= 0 && !dup) {
            size_t l2;
            const uint8_t *q = piece_of(t, t->vocab[h], &l2);
            dup = l2 == len && (t->flags[t->vocab[h]] & FLAG_TEXT) == text &&
                  memcmp(p, q, len) == 0;
            h = (h + 1) & t->vocab_mask;
        }
        if (!dup)
            t->vocab[h] = (int32_t)i;
    }
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        if ((t->byte_id[b] = vocab_find(t, &byte, 1, 0)) < 0) {
            st = ela_fail(ELA_ERR_FORMAT, "tokenizer: no token for byte 0x%02X in the vocabulary",
                          b);
            goto fail;
        }
    }

    if ((st = build_merges(t, spec, cp_to_byte)) != ELA_OK)
        goto fail;

    if ((st = tok_specials_build(&t->specials, t->pieces, t->piece_off, t->flags, FLAG_SPECIAL,
                                 t->n_vocab)) != ELA_OK)
        goto oom;
    *out = t;
    return ELA_OK;

oom:
    st = ela_fail(ELA_ERR_OOM, "tokenizer_build: out of memory (%lld tokens, %lld merges)",
                  (long long)spec->n_vocab, (long long)spec->n_merges);
fail:
    ela_tokenizer_free(t);
    return st;
}

/* ---- encode -------------------------------------------------------------------------- */
typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, n_ids; /* key_len UINT32_MAX: empty */
} cache_slot;

/* Scratch of one ela_tokenize call. */
typedef struct {
    const ela_tokenizer *t;
    int32_t *ids;
    int64_t capacity, count;
    bpe_word w; /* BPE of one word: symbols over byte positions */
    /* cache of words seen in this call: keys and ids in arenas */
    cache_slot *cache;
    uint64_t cache_mask, cache_used;
    uint8_t *keys;
    size_t keys_len, keys_cap;
    int32_t *cids;
    size_t cids_len, cids_cap;
} encoder;

static inline void emit(encoder *e, int32_t id) {
    if (e->count < e->capacity)
        e->ids[e->count] = id;
    e->count++;
}

/* BPE of one pre-token's bytes: the tokens are left in e->w.sym[] along e->w.next from 0. */
static ela_status merge_bytes(encoder *e, const uint8_t *w, size_t len) {
    if (len > (size_t)INT32_MAX / 4)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tokenize: a %zu-byte word is too long", len);
    ela_status st = bpe_word_reserve(&e->w, len);
    if (st != ELA_OK)
        return st;
    for (size_t i = 0; i < len; i++)
        e->w.sym[i] = e->t->byte_id[w[i]];
    bpe_word_merge(&e->w, (int32_t)len, &e->t->pairs);
    return ELA_OK;
}

static ela_status cache_grow(encoder *e) {
    uint64_t size = e->cache ? (e->cache_mask + 1) * 2 : 1024;
    cache_slot *c = ela_calloc(size, sizeof(cache_slot));
    if (!c)
        return ela_fail(ELA_ERR_OOM, "ela_tokenize: out of memory for the word cache");
    for (uint64_t i = 0; i < size; i++)
        c[i].key_len = UINT32_MAX;
    if (e->cache) {
        for (uint64_t i = 0; i <= e->cache_mask; i++) {
            if (e->cache[i].key_len == UINT32_MAX)
                continue;
            uint64_t j = e->cache[i].hash & (size - 1);
            while (c[j].key_len != UINT32_MAX)
                j = (j + 1) & (size - 1);
            c[j] = e->cache[i];
        }
        ela_free(e->cache);
    }
    e->cache = c;
    e->cache_mask = size - 1;
    return ELA_OK;
}

static ela_status arena_reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return ELA_OK;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    void *q = ela_realloc(*p, c, elem);
    if (!q)
        return ela_fail(ELA_ERR_OOM, "ela_tokenize: out of memory for the word cache");
    *p = q;
    *cap = c;
    return ELA_OK;
}

/* Encode one pre-token (raw bytes). */
static ela_status encode_word(encoder *e, const uint8_t *w, size_t len) {
    const ela_tokenizer *t = e->t;
    if (len == 1) {
        emit(e, t->byte_id[w[0]]);
        return ELA_OK;
    }
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, w, len, 0);
        if (id >= 0) {
            emit(e, id);
            return ELA_OK;
        }
    }
    int cacheable = len <= CACHE_MAX_WORD;
    uint64_t h = 0, slot = 0;
    ela_status st;
    if (cacheable) {
        if (!e->cache && (st = cache_grow(e)) != ELA_OK)
            return st;
        h = hash_bytes(w, len, 0);
        for (slot = h & e->cache_mask; e->cache[slot].key_len != UINT32_MAX;
             slot = (slot + 1) & e->cache_mask) {
            const cache_slot *c = &e->cache[slot];
            if (c->hash == h && c->key_len == len && memcmp(e->keys + c->key_off, w, len) == 0) {
                for (uint32_t k = 0; k < c->n_ids; k++)
                    emit(e, e->cids[c->ids_off + k]);
                return ELA_OK;
            }
        }
    }
    if ((st = merge_bytes(e, w, len)) != ELA_OK)
        return st;
    if (cacheable && e->keys_len + len < UINT32_MAX && e->cids_len + len < UINT32_MAX) {
        void *keys = e->keys, *cids = e->cids;
        if ((st = arena_reserve(&keys, &e->keys_cap, e->keys_len + len, 1)) != ELA_OK)
            return st;
        e->keys = keys;
        if ((st = arena_reserve(&cids, &e->cids_cap, e->cids_len + len, sizeof(int32_t))) !=
            ELA_OK)
            return st;
        e->cids = cids;
        cache_slot c = {h, (uint32_t)e->keys_len, (uint32_t)len, (uint32_t)e->cids_len, 0};
        memcpy(e->keys + e->keys_len, w, len);
        e->keys_len += len;
        for (int32_t i = 0; i >= 0; i = e->w.next[i]) {
            e->cids[e->cids_len + c.n_ids++] = e->w.sym[i];
            emit(e, e->w.sym[i]);
        }
        e->cids_len += c.n_ids;
        e->cache[slot] = c;
        if (++e->cache_used * 2 > e->cache_mask)
            return cache_grow(e);
        return ELA_OK;
    }
    for (int32_t i = 0; i >= 0; i = e->w.next[i])
        emit(e, e->w.sym[i]);
    return ELA_OK;
}

/* A stretch of text between special tokens: normalize, split, BPE. */
static ela_status encode_segment(encoder *e, const uint8_t *s, size_t n) {
    uint8_t *norm = NULL;
    ela_status st;
    if (e->t->nfc) {
        size_t nlen;
        if ((st = tok_nfc(s, n, &norm, &nlen)) != ELA_OK)
            return st;
        if (norm) {
            s = norm;
            n = nlen;
        }
    }
    st = ELA_OK;
    for (size_t i = 0; i < n && st == ELA_OK;) {
        size_t j = tok_pretok_next(e->t->pre, s, n, i);
        st = encode_word(e, s + i, j - i);
        i = j;
    }
    ela_free(norm);
    return st;
}

ela_status ela_tokenize(const ela_tokenizer *tok, const char *text, size_t len, int add_special,
                        int32_t *ids, int64_t capacity, int64_t *n_ids) {
    if (!tok || !n_ids || (!text && len) || capacity < 0 || (!ids && capacity > 0))
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_tokenize: %s", !tok ? "tok is NULL" : !n_ids ? "n_ids is NULL"
                                          : (!text && len) ? "text is NULL"
                                          : capacity < 0 ? "capacity is negative"
                                                         : "ids is NULL with capacity > 0");
    if (tok->spm)
        return tokenizer_spm_encode(tok->spm, text, len, add_special && tok->add_bos ? tok->bos : -1,
                                    ids, capacity, n_ids);
    encoder e;
    memset(&e, 0, sizeof(e));
    e.t = tok;
    e.ids = ids;
    e.capacity = capacity;
    if (add_special && tok->add_bos)
        emit(&e, tok->bos);
    const uint8_t *s = (const uint8_t *)text;
    ela_status st = ELA_OK;
    size_t seg = 0;
    int have_specials = tok->specials.first[256] > 0;
    for (size_t i = 0; i < len && st == ELA_OK && have_specials;) {
        if (!tok_specials_start(&tok->specials, s[i])) {
            i++;
            continue;
        }
        size_t l;
        int32_t id = tok_specials_at(&tok->specials, tok->pieces, tok->piece_off, s, len, i, &l);
        if (id < 0) {
            i++;
            continue;
        }
        if (i > seg)
            st = encode_segment(&e, s + seg, i - seg);
        emit(&e, id);
        i += l;
        seg = i;
    }
    if (st == ELA_OK && seg < len)
        st = encode_segment(&e, s + seg, len - seg);
    bpe_word_free(&e.w);
    ela_free(e.cache);
    ela_free(e.keys);
    ela_free(e.cids);
    if (st == ELA_OK)
        *n_ids = e.count;
    return st;
}

/* ---- queries ------------------------------------------------------------------------- */
ela_status ela_token_piece(const ela_tokenizer *tok, int32_t id, char *buf, size_t capacity,
                           size_t *len) {
    if (!tok || !len || (!buf && capacity))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_token_piece: %s",
                        !tok ? "tok is NULL" : !len ? "len is NULL" : "buf is NULL");
    if (id < 0 || id >= tok->n_vocab)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_token_piece: id %d outside the vocabulary [0, %lld)",
                        (int)id, (long long)tok->n_vocab);
    if (tok->spm)
        return tokenizer_spm_piece(tok->spm, id, buf, capacity, len);
    size_t l;
    const uint8_t *p = piece_of(tok, id, &l);
    if (buf && capacity)
        memcpy(buf, p, l < capacity ? l : capacity);
    *len = l;
    return ELA_OK;
}

ela_status tokenizer_wrap_spm(tokenizer_spm *spm, int64_t n_vocab, int32_t bos, int32_t eos,
                              int add_bos, ela_tokenizer **out) {
    ela_tokenizer *t = ela_calloc(1, sizeof(*t));
    if (!t) {
        tokenizer_spm_free(spm);
        return ela_fail(ELA_ERR_OOM, "tokenizer: out of memory");
    }
    t->spm = spm;
    t->n_vocab = n_vocab;
    t->bos = bos;
    t->eos = eos;
    t->add_bos = add_bos && bos >= 0;
    *out = t;
    return ELA_OK;
}

int64_t ela_tokenizer_vocab_size(const ela_tokenizer *tok) { return tok ? tok->n_vocab : 0; }
int32_t ela_tokenizer_bos(const ela_tokenizer *tok) { return tok ? tok->bos : -1; }
int32_t ela_tokenizer_eos(const ela_tokenizer *tok) { return tok ? tok->eos : -1; }

ela_status tokenizer_set_bos_eos(ela_tokenizer *tok, int32_t bos, int32_t eos) {
    if (!tok || bos < -1 || bos >= tok->n_vocab || eos < -1 || eos >= tok->n_vocab)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_set_bos_eos: bos %d or eos %d outside the "
                        "vocabulary", (int)bos, (int)eos);
    tok->bos = bos;
    tok->eos = eos;
    if (bos < 0)
        tok->add_bos = 0;
    return ELA_OK;
}

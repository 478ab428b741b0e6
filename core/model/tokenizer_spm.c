/* SentencePiece-style BPE tokenizer (DESIGN.md 5; Llama 2, Mistral 7B v0.1, TinyLlama):
 * tokenizer_spm_build from a tokenizer_spm_spec, and the encoding and pieces that ela_tokenize
 * and ela_token_piece forward here (tokenizer.c). Encoding follows Hugging Face tokenizers (BPE
 * with byte_fallback under a Prepend/Replace normalizer or a Metaspace pre-tokenizer) and
 * llama.cpp's SPM tokenizer (which follows SentencePiece): added tokens are cut out of the raw
 * text first (leftmost, then longest); each stretch between them gets its "▁" prefix and its
 * spaces written as "▁"; its characters are looked up in the vocabulary (one outside it becomes
 * its byte tokens, or unk); then adjacent symbols merge, the pair of best priority first and
 * the leftmost among equals (a binary heap, O(n log n) for a whole book in one stretch). The
 * priority is HF's merge rank, or for SentencePiece scores the rank of the merged token's score
 * (equal scores share a rank, so position decides, as in SentencePiece and llama.cpp). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../error.h"
#include "bpe_merge.h"
#include "tok_specials.h"
#include "tokenizer_internal.h"
#include "tokenizer_spm.h"

#define FLAG_SPECIAL 1u /* matched as a whole in the raw text; piece is its text */
#define FLAG_BYTE 2u    /* <0xNN>: piece is the byte */

static const uint8_t space_mark[3] = {0xE2, 0x96, 0x81}; /* U+2581 */

struct tokenizer_spm {
    int64_t n_vocab;
    uint8_t *text;       /* token texts back to back */
    uint64_t *off;       /* [n_vocab + 1] */
    uint8_t *flags;      /* [n_vocab] FLAG_* */
    uint8_t *byte_val;   /* [n_vocab] the byte of a FLAG_BYTE token */
    int32_t *vocab;      /* open addressing over the texts of non-special tokens; -1 empty */
    uint64_t vocab_mask;
    bpe_pairs pairs;
    int32_t byte_id[256];
    tok_specials specials; /* matched as a whole in the raw text */
    spm_prefix prefix;
    int split, byte_fallback, fuse_unk;
    int words; /* no token has a ▁ after another character: BPE word by word */
    int32_t unk;
};

/* ---- tables -------------------------------------------------------------------------- */
static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static inline const uint8_t *text_of(const tokenizer_spm *t, int32_t id, size_t *len) {
    *len = (size_t)(t->off[id + 1] - t->off[id]);
    return t->text + t->off[id];
}

/* Id of the non-special token with this text, or -1. */
static int32_t vocab_find(const tokenizer_spm *t, const uint8_t *p, size_t n) {
    for (uint64_t i = hash_bytes(p, n) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab[i];
        if (id < 0)
            return -1;
        size_t len;
        const uint8_t *q = text_of(t, id, &len);
        if (len == n && memcmp(p, q, n) == 0)
            return id;
    }
}

/* 0-255 when the text is exactly "<0xNN>" (upper-case hex, as HF and llama.cpp spell it). */
static int byte_token_value(const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    const char *hi = memchr(hex, s[3], 16), *lo = memchr(hex, s[4], 16);
    if (!hi || !lo)
        return -1;
    return (int)(hi - hex) * 16 + (int)(lo - hex);
}

void tokenizer_spm_free(tokenizer_spm *t) {
    if (!t)
        return;
    tok_specials_free(&t->specials);
    bpe_pairs_free(&t->pairs);
    ela_free(t->vocab);
    ela_free(t->byte_val);
    ela_free(t->flags);
    ela_free(t->off);
    ela_free(t->text);
    ela_free(t);
}

/* ---- build --------------------------------------------------------------------------- */
/* HF merges "left right": the first space that splits it into two tokens. */
static ela_status pairs_from_merges(tokenizer_spm *t, const tokenizer_spm_spec *spec,
                                    uint8_t *scratch) {
    for (int64_t k = 0; k < spec->n_merges; k++) {
        const char *m = spec->merges[k];
        size_t n = spec->merge_lens[k];
        if (!m)
            return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_build: merges[%lld] is NULL",
                            (long long)k);
        int32_t a = -1, b = -1;
        size_t split = 0;
        for (size_t p = 0; p < n && (a < 0 || b < 0); p++) {
            if (m[p] != ' ')
                continue;
            split = p;
            a = vocab_find(t, (const uint8_t *)m, p);
            b = a < 0 ? -1 : vocab_find(t, (const uint8_t *)m + p + 1, n - p - 1);
        }
        if (a < 0 || b < 0)
            return ela_fail(ELA_ERR_FORMAT,
                            "%s: merge %lld \"%.*s\" does not name two tokens of the vocabulary",
                            spec->what, (long long)k, (int)(n > 200 ? 200 : n), m);
        memcpy(scratch, m, split);
        memcpy(scratch + split, m + split + 1, n - split - 1);
        int32_t id = vocab_find(t, scratch, n - 1);
        if (id < 0)
            return ela_fail(ELA_ERR_FORMAT,
                            "%s: merge %lld \"%.*s\": the merged token is not in the vocabulary",
                            spec->what, (long long)k, (int)(n > 200 ? 200 : n), m);
        bpe_pairs_put(&t->pairs, a, b, (int32_t)k, id);
    }
    return ELA_OK;
}

typedef struct {
    float score;
    int32_t id;
} scored;

static int scored_cmp(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : (a->id > b->id);
}

/* A normal token that a merge can make: looked up by its text (the first of equal texts). */
static int mergeable(const tokenizer_spm *t, const tokenizer_spm_spec *spec, int32_t id) {
    size_t len;
    const uint8_t *p = text_of(t, id, &len);
    int type = spec->types ? spec->types[id] : SPM_NORMAL;
    return (type == SPM_NORMAL || type == SPM_UNUSED) && !t->flags[id] && len > 1 &&
           vocab_find(t, p, len) == id;
}

/* SentencePiece: every split of a normal token into two tokens merges into it, ranked by the
 * token's score (highest first; equal scores share a rank). */
static void pairs_from_scores(tokenizer_spm *t, const scored *order, int64_t n_order) {
    int32_t rank = -1;
    for (int64_t k = 0; k < n_order; k++) {
        if (k == 0 || order[k].score != order[k - 1].score)
            rank++;
        int32_t id = order[k].id;
        size_t len;
        const uint8_t *p = text_of(t, id, &len);
        for (size_t s = 0; s < len;) {
            uint32_t cp;
            s += tok_utf8_decode(p, len, s, &cp);
            if (s >= len)
                break;
            int32_t a = vocab_find(t, p, s), b = a < 0 ? -1 : vocab_find(t, p + s, len - s);
            if (a >= 0 && b >= 0)
                bpe_pairs_put(&t->pairs, a, b, rank, id);
        }
    }
}

static ela_status check_spec(const tokenizer_spm_spec *spec) {
    if (!spec || !spec->tokens || !spec->token_lens || !spec->what || !spec->tokens_field)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_build: spec, tokens, token_lens, "
                        "what or tokens_field is NULL");
    if (spec->n_vocab <= 0 || spec->n_vocab > INT32_MAX)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s: vocabulary size %lld out of range", spec->what,
                        spec->tokens_field, (long long)spec->n_vocab);
    if (!spec->scores && (spec->n_merges < 0 || spec->n_merges > INT32_MAX ||
                          (spec->n_merges > 0 && (!spec->merges || !spec->merge_lens))))
        return ela_fail(ELA_ERR_FORMAT, "%s: bad merge list (%lld merges)", spec->what,
                        (long long)spec->n_merges);
    if (spec->prefix < SPM_PREFIX_NONE || spec->prefix > SPM_PREFIX_META_FIRST)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_build: unknown prefix mode %d",
                        (int)spec->prefix);
    const int32_t ids[3] = {spec->unk, spec->bos, spec->eos};
    static const char *const names[3] = {"unk", "bos", "eos"};
    for (int i = 0; i < 3; i++)
        if (ids[i] < -1 || ids[i] >= spec->n_vocab)
            return ela_fail(ELA_ERR_FORMAT, "%s: %s id %d outside the %lld tokens", spec->what,
                            names[i], (int)ids[i], (long long)spec->n_vocab);
    return ELA_OK;
}

ela_status tokenizer_spm_build(const tokenizer_spm_spec *spec, ela_tokenizer **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_build: out is NULL");
    *out = NULL;
    ela_status st = check_spec(spec);
    if (st != ELA_OK)
        return st;
    size_t n = (size_t)spec->n_vocab, total = 0, max_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (!spec->tokens[i] && spec->token_lens[i])
            return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_build: tokens[%zu] is NULL", i);
        if (spec->token_lens[i] > SIZE_MAX / 2 - total)
            return ela_fail(ELA_ERR_FORMAT, "%s: %s: token texts too long", spec->what,
                            spec->tokens_field);
        total += spec->token_lens[i];
    }
    for (int64_t k = 0; !spec->scores && k < spec->n_merges; k++)
        if (spec->merge_lens[k] > max_len)
            max_len = spec->merge_lens[k];
    if (spec->scores)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(spec->scores[i]))
                return ela_fail(ELA_ERR_FORMAT, "%s: score %zu of token \"%.*s\" is not a finite "
                                "number", spec->what, i, (int)(spec->token_lens[i] > 100 ? 100 :
                                spec->token_lens[i]), spec->tokens[i] ? spec->tokens[i] : "");

    tokenizer_spm *t = ela_calloc(1, sizeof(*t));
    scored *order = NULL;
    uint8_t *scratch = NULL;
    if (!t)
        goto oom;
    t->n_vocab = spec->n_vocab;
    t->prefix = spec->prefix;
    t->split = spec->split != 0;
    t->byte_fallback = spec->byte_fallback != 0;
    t->fuse_unk = spec->fuse_unk != 0;
    t->unk = spec->unk;
    t->vocab_mask = bpe_table_size(n) - 1;
    if (!(t->text = ela_calloc(total + 1, 1)) || !(t->off = ela_calloc(n + 1, sizeof(uint64_t))) ||
        !(t->flags = ela_calloc(n, 1)) || !(t->byte_val = ela_calloc(n, 1)) ||
        !(t->vocab = ela_calloc(t->vocab_mask + 1, sizeof(int32_t))) ||
        !(scratch = ela_calloc(max_len + 1, 1)))
        goto oom;
    memset(t->vocab, 0xFF, (t->vocab_mask + 1) * sizeof(int32_t));
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;

    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = spec->token_lens[i];
        int type = spec->types ? spec->types[i] : SPM_NORMAL;
        t->off[i] = off;
        if (len)
            memcpy(t->text + off, spec->tokens[i], len);
        off += len;
        int byte = byte_token_value(spec->tokens[i], len);
        if ((type == SPM_UNKNOWN || type == SPM_CONTROL || type == SPM_USER) && len) {
            t->flags[i] = FLAG_SPECIAL;
        } else if (byte >= 0) {
            t->flags[i] = FLAG_BYTE;
            t->byte_val[i] = (uint8_t)byte;
            if (t->byte_id[byte] < 0)
                t->byte_id[byte] = (int32_t)i;
        }
    }
    t->off[n] = off;
    /* The text hash: every non-special token, the first of equal texts wins. */
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *p = text_of(t, (int32_t)i, &len);
        if ((t->flags[i] & FLAG_SPECIAL) || len == 0 || vocab_find(t, p, len) >= 0)
            continue;
        uint64_t h = hash_bytes(p, len) & t->vocab_mask;
        while (t->vocab[h] >= 0)
            h = (h + 1) & t->vocab_mask;
        t->vocab[h] = (int32_t)i;
    }
    for (int b = 0; b < 256 && spec->byte_fallback; b++)
        if (t->byte_id[b] < 0) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: %s has no byte token <0x%02X> (byte fallback "
                          "needs all 256)", spec->what, spec->tokens_field, b);
            goto fail;
        }

    /* Merge pairs: HF's ranked merges, or every two-token split of each scored token. */
    uint64_t n_pairs = (uint64_t)(spec->scores ? 0 : spec->n_merges);
    int64_t n_order = 0;
    if (spec->scores) {
        if (!(order = ela_calloc(n, sizeof(scored))))
            goto oom;
        for (size_t i = 0; i < n; i++) {
            if (!mergeable(t, spec, (int32_t)i))
                continue;
            size_t len;
            const uint8_t *p = text_of(t, (int32_t)i, &len);
            for (size_t s = 0; s < len;) { /* splits: characters - 1 */
                uint32_t cp;
                s += tok_utf8_decode(p, len, s, &cp);
                n_pairs += s < len;
            }
            order[n_order].score = spec->scores[i];
            order[n_order].id = (int32_t)i;
            n_order++;
        }
        qsort(order, (size_t)n_order, sizeof(scored), scored_cmp);
    }
    if (bpe_pairs_alloc(&t->pairs, n_pairs) != 0)
        goto oom;
    if (spec->scores)
        pairs_from_scores(t, order, n_order);
    else if ((st = pairs_from_merges(t, spec, scratch)) != ELA_OK)
        goto fail;
    if (tok_specials_build(&t->specials, t->text, t->off, t->flags, FLAG_SPECIAL, t->n_vocab) !=
        ELA_OK)
        goto oom;
    /* In Llama 2 / Mistral vocabularies ▁ only starts a token ("▁the", "▁▁▁"), so no merge
     * crosses into a ▁ that follows another character: the stretch can be cut there and each
     * word merged alone, with the same result as merging the whole stretch at once (the merges
     * of separate words never interact) in small, cache-resident heaps. */
    t->words = vocab_find(t, space_mark, 3) >= 0;
    for (size_t i = 0; i < n && t->words; i++) {
        size_t len;
        const uint8_t *p = text_of(t, (int32_t)i, &len);
        for (size_t k = 1; k + 3 <= len && !(t->flags[i] & FLAG_SPECIAL) && t->words; k++)
            t->words = !(memcmp(p + k, space_mark, 3) == 0 &&
                         (k < 3 || memcmp(p + k - 3, space_mark, 3) != 0));
    }
    ela_free(order);
    ela_free(scratch);
    return tokenizer_wrap_spm(t, spec->n_vocab, spec->bos, spec->eos, spec->add_bos, out);

oom:
    st = ela_fail(ELA_ERR_OOM, "%s: out of memory for the tokenizer (%lld tokens)", spec->what,
                  (long long)spec->n_vocab);
fail:
    ela_free(order);
    ela_free(scratch);
    tokenizer_spm_free(t);
    return st;
}

/* ---- encode -------------------------------------------------------------------------- */
typedef struct {
    const tokenizer_spm *t;
    int32_t *ids;
    int64_t capacity, count;
    uint8_t *norm;              /* the stretch with its prefix and spaces as ▁ */
    size_t norm_cap;
    bpe_word w;                 /* symbols of one word */
} spm_encoder;

static inline void emit(spm_encoder *e, int32_t id) {
    if (e->count < e->capacity)
        e->ids[e->count] = id;
    e->count++;
}

/* BPE of one word (normalized bytes): characters to symbols, merge, emit. */
static ela_status encode_word(spm_encoder *e, const uint8_t *w, size_t len) {
    const tokenizer_spm *t = e->t;
    if (len > (size_t)INT32_MAX / 4)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tokenize: a %zu-byte stretch of text is too "
                        "long", len);
    ela_status st = bpe_word_reserve(&e->w, len);
    if (st != ELA_OK)
        return st;
    int32_t *sym = e->w.sym, n = 0;
    int last_unk = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = tok_utf8_decode(w, len, i, &cp);
        int32_t id = vocab_find(t, w + i, l);
        if (id >= 0) {
            sym[n++] = id;
            last_unk = 0;
        } else if (t->byte_fallback) {
            for (size_t k = 0; k < l; k++)
                sym[n++] = t->byte_id[w[i + k]];
            last_unk = 0;
        } else if (t->unk >= 0) { /* without an unk token HF drops the character */
            if (!(t->fuse_unk && last_unk))
                sym[n++] = t->unk;
            last_unk = 1;
        }
        i += l;
    }
    bpe_word_merge(&e->w, n, &t->pairs);
    for (int32_t i = n ? 0 : -1; i >= 0; i = e->w.next[i])
        emit(e, sym[i]);
    return ELA_OK;
}

static int starts_with_space(const uint8_t *s, size_t n) {
    return (n >= 1 && s[0] == ' ') || (n >= 3 && memcmp(s, space_mark, 3) == 0);
}

/* A stretch between added tokens: prefix, spaces as ▁, words (Metaspace split), BPE. */
static ela_status encode_segment(spm_encoder *e, const uint8_t *s, size_t n, int at_start) {
    if (n == 0)
        return ELA_OK;
    const tokenizer_spm *t = e->t;
    int prefix = t->prefix == SPM_PREFIX_ALWAYS ||
                 (t->prefix == SPM_PREFIX_META_ALWAYS && !starts_with_space(s, n)) ||
                 (t->prefix == SPM_PREFIX_META_FIRST && at_start && !starts_with_space(s, n));
    if (n > (SIZE_MAX - 3) / 3)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tokenize: text of %zu bytes too long", n);
    size_t need = 3 * n + 3, m = 0;
    if (need > e->norm_cap) {
        uint8_t *norm = ela_realloc(e->norm, need, 1);
        if (!norm)
            return ela_fail(ELA_ERR_OOM, "ela_tokenize: out of memory for %zu bytes of text", n);
        e->norm = norm;
        e->norm_cap = need;
    }
    if (prefix) {
        memcpy(e->norm, space_mark, 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(e->norm + m, space_mark, 3);
            m += 3;
        } else {
            e->norm[m++] = s[i];
        }
    }
    if (!t->split && !t->words)
        return encode_word(e, e->norm, m);
    /* Words: Metaspace split (MergedWithNext) starts one at every ▁, the cut of t->words at
     * every ▁ after another character. The bytes of ▁ always decode as ▁ where they appear. */
    ela_status st = ELA_OK;
    size_t start = 0;
    const uint8_t *u = e->norm;
    for (size_t i = 1; i + 3 <= m && st == ELA_OK; i++) {
        if (memcmp(u + i, space_mark, 3) == 0 &&
            (t->split || i < 3 || memcmp(u + i - 3, space_mark, 3) != 0)) {
            st = encode_word(e, u + start, i - start);
            start = i;
        }
    }
    return st == ELA_OK ? encode_word(e, u + start, m - start) : st;
}

ela_status tokenizer_spm_encode(const tokenizer_spm *t, const char *text, size_t len,
                                int32_t bos, int32_t *ids, int64_t capacity, int64_t *n_ids) {
    spm_encoder e;
    memset(&e, 0, sizeof(e));
    e.t = t;
    e.ids = ids;
    e.capacity = capacity;
    if (bos >= 0)
        emit(&e, bos);
    const uint8_t *s = (const uint8_t *)text;
    ela_status st = ELA_OK;
    size_t seg = 0;
    for (size_t i = 0; i < len && st == ELA_OK && t->specials.first[256] > 0;) {
        size_t l;
        int32_t id = !tok_specials_start(&t->specials, s[i])
                         ? -1
                         : tok_specials_at(&t->specials, t->text, t->off, s, len, i, &l);
        if (id < 0) {
            i++;
            continue;
        }
        st = encode_segment(&e, s + seg, i - seg, seg == 0);
        emit(&e, id);
        i += l;
        seg = i;
    }
    if (st == ELA_OK && seg < len)
        st = encode_segment(&e, s + seg, len - seg, seg == 0);
    ela_free(e.norm);
    bpe_word_free(&e.w);
    if (st == ELA_OK)
        *n_ids = e.count;
    return st;
}

/* Bytes a token stands for: ▁ as a space, a byte token as its byte, special text as is. */
ela_status tokenizer_spm_piece(const tokenizer_spm *t, int32_t id, char *buf, size_t capacity,
                               size_t *len) {
    size_t n, m = 0;
    const uint8_t *p = text_of(t, id, &n);
    if (t->flags[id] & FLAG_BYTE) {
        if (capacity)
            buf[0] = (char)t->byte_val[id];
        *len = 1;
        return ELA_OK;
    }
    for (size_t i = 0; i < n; m++) {
        char c = (char)p[i];
        size_t step = 1;
        if (!(t->flags[id] & FLAG_SPECIAL) && i + 3 <= n && memcmp(p + i, space_mark, 3) == 0) {
            c = ' ';
            step = 3;
        }
        if (m < capacity)
            buf[m] = c;
        i += step;
    }
    *len = m;
    return ELA_OK;
}

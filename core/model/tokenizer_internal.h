/* Private pieces of the byte-level BPE tokenizer (DESIGN.md 5) shared by tokenizer.c,
 * tokenizer_pretok.c, unicode_nfc.c and the unit test: strict UTF-8 decoding, the split
 * regexes as hand-written matchers, NFC normalization.
 *
 * Invalid UTF-8: each byte that does not start a well-formed sequence (stray continuation
 * bytes, truncated or overlong sequences, surrogates, > U+10FFFF) is one code point of its own,
 * TOK_BAD_BYTE + byte, of category "other" (not a letter, number or space) with combining
 * class 0 and no decomposition. NFC leaves it untouched, the split regexes treat it like
 * punctuation, and BPE encodes it as its byte token, so every input byte is encoded and the
 * pieces of the ids concatenate back to the input. (Hugging Face tokenizers never see invalid
 * UTF-8: a Rust String cannot hold it.) */
#ifndef ELA_MODEL_TOKENIZER_INTERNAL_H
#define ELA_MODEL_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define TOK_BAD_BYTE 0x110000u

/* Decode the code point at s[i] (i < n); returns its length in bytes (1..4). */
static inline size_t tok_utf8_decode(const uint8_t *s, size_t n, size_t i, uint32_t *cp) {
    uint32_t c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t left = n - i;
    if (c >= 0xC2 && c <= 0xDF) {
        if (left >= 2 && (s[i + 1] & 0xC0) == 0x80) {
            *cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3Fu);
            return 2;
        }
    } else if (c >= 0xE0 && c <= 0xEF) {
        if (left >= 3 && (s[i + 1] & 0xC0) == 0x80 && (s[i + 2] & 0xC0) == 0x80) {
            uint32_t v = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
            if (v >= 0x800 && (v < 0xD800 || v > 0xDFFF)) {
                *cp = v;
                return 3;
            }
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        if (left >= 4 && (s[i + 1] & 0xC0) == 0x80 && (s[i + 2] & 0xC0) == 0x80 &&
            (s[i + 3] & 0xC0) == 0x80) {
            uint32_t v = ((c & 0x07) << 18) | ((s[i + 1] & 0x3Fu) << 12) |
                         ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
            if (v >= 0x10000 && v <= 0x10FFFF) {
                *cp = v;
                return 4;
            }
        }
    }
    *cp = TOK_BAD_BYTE + c;
    return 1;
}

/* UNICODE_LETTER / NUMBER / SPACE / OTHER (unicode_tables.h) of a code point. */
int tok_unicode_class(uint32_t cp);

/* End (byte offset, > i) of the split regex's match that starts at s[i], i < n. The matches
 * tile the text: the next one starts where this one ends. */
size_t tok_pretok_next(tokenizer_pre pre, const uint8_t *s, size_t n, size_t i);

/* NFC of s[0, n): *out is NULL when s is already in NFC (the quick check says so), else a new
 * buffer of *out_len bytes for ela_free. ELA_ERR_OOM only. */
ela_status tok_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len);

#endif

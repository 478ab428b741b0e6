/* The tokenizer's split regexes (DESIGN.md 5) as hand-written matchers: each function returns
 * the end of the match the regex engine of Hugging Face tokenizers (Oniguruma; leftmost-first
 * alternation, greedy quantifiers with backtracking) finds at a position. \s is Unicode
 * White_Space, \p{L} / \p{N} the general categories L* / N* (unicode_tables.c).
 *
 *   Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   Qwen2:   the same with \p{N} (one digit)
 *   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * Every code point matches some alternative, so the matches tile the text (Split "Isolated"
 * then has no gaps to emit). */
#include "tokenizer_internal.h"
#include "unicode_tables.h"

/* ASCII classes, the common case. */
static const uint8_t ascii_class[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, /* \t \n \v \f \r */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* space */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, /* 0-9 */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* A-Z */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* a-z */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
};

int tok_unicode_class(uint32_t cp) {
    if (cp < 128)
        return ascii_class[cp];
    if (cp >= TOK_BAD_BYTE)
        return UNICODE_OTHER;
    return unicode_range_lookup(unicode_class_ranges, unicode_class_ranges_count, cp);
}

/* Class of the code point at s[i] (i < n) and its length in bytes. */
static inline int class_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    if (s[i] < 0x80) {
        *len = 1;
        return ascii_class[s[i]];
    }
    uint32_t cp;
    *len = tok_utf8_decode(s, n, i, &cp);
    return tok_unicode_class(cp);
}

/* End of the run of code points of class `k` starting at i (at most `max` of them). */
static size_t scan_class(const uint8_t *s, size_t n, size_t i, int k, size_t max) {
    size_t count = 0;
    while (i < n && count < max) {
        size_t len;
        if (class_at(s, n, i, &len) != k)
            break;
        i += len;
        count++;
    }
    return i;
}

static inline int is_crlf(uint8_t b) { return b == '\r' || b == '\n'; }

static inline int lower_ascii(uint8_t b) { return (b >= 'A' && b <= 'Z') ? b + 32 : b; }

/* Length after the apostrophe at s[i] of a contraction 's 't 're 've 'm 'll 'd (0: none).
 * Case-insensitive (Llama 3, Qwen2) folds like the regex engines do: also U+017F (long s) for
 * s; no other code point folds to these letters. */
static size_t contraction(const uint8_t *s, size_t n, size_t i, int ignore_case) {
    if (i + 1 >= n)
        return 0;
    int a = ignore_case ? lower_ascii(s[i + 1]) : s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (ignore_case && s[i + 1] == 0xC5 && i + 2 < n && s[i + 2] == 0xBF)
        return 3; /* 'ſ */
    if (i + 2 >= n)
        return 0;
    int b = ignore_case ? lower_ascii(s[i + 2]) : s[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* \s+(?!\S) | \s+ at i (s[i] is a space): the whole run when it reaches the end of the text or
 * is one code point long, else the run less its last code point (which then starts the next
 * match, e.g. " word"). `crlf_end` receives the end of the run's last \r or \n (0: none), for
 * Llama 3's \s*[\r\n]+. */
static size_t space_run(const uint8_t *s, size_t n, size_t i, size_t *crlf_end) {
    size_t j = i, last = i;
    *crlf_end = 0;
    while (j < n) {
        size_t len;
        if (class_at(s, n, j, &len) != UNICODE_SPACE)
            break;
        if (is_crlf(s[j]))
            *crlf_end = j + 1;
        last = j;
        j += len;
    }
    if (j == n || last == i)
        return j;
    return last;
}

static size_t next_llama3(const uint8_t *s, size_t n, size_t i, size_t max_digits) {
    size_t len;
    int k = class_at(s, n, i, &len);
    /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
    if (s[i] == '\'') {
        size_t c = contraction(s, n, i, 1);
        if (c)
            return i + c;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (k == UNICODE_LETTER)
        return scan_class(s, n, i, UNICODE_LETTER, SIZE_MAX);
    if (k != UNICODE_NUMBER && !is_crlf(s[i]) && i + len < n) {
        size_t len2;
        if (class_at(s, n, i + len, &len2) == UNICODE_LETTER)
            return scan_class(s, n, i + len, UNICODE_LETTER, SIZE_MAX);
    }
    /* \p{N}{1,3} or \p{N} */
    if (k == UNICODE_NUMBER)
        return scan_class(s, n, i, UNICODE_NUMBER, max_digits);
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    size_t start = SIZE_MAX;
    if (k == UNICODE_OTHER) {
        start = i;
    } else if (s[i] == ' ' && i + 1 < n) {
        size_t len2;
        if (class_at(s, n, i + 1, &len2) == UNICODE_OTHER)
            start = i + 1;
    }
    if (start != SIZE_MAX) {
        size_t j = scan_class(s, n, start, UNICODE_OTHER, SIZE_MAX);
        while (j < n && is_crlf(s[j]))
            j++;
        return j;
    }
    /* s[i] is a space: \s*[\r\n]+ ends after the run's last \r or \n (backtracking from the
     * greedy \s*); else \s+(?!\S) | \s+ */
    size_t crlf_end, end = space_run(s, n, i, &crlf_end);
    return crlf_end ? crlf_end : end;
}

static size_t next_gpt2(const uint8_t *s, size_t n, size_t i) {
    size_t len;
    int k = class_at(s, n, i, &len);
    if (s[i] == '\'') {
        size_t c = contraction(s, n, i, 0);
        if (c)
            return i + c;
    }
    /* ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+' */
    size_t start = i;
    if (s[i] == ' ' && i + 1 < n) {
        size_t len2;
        int k2 = class_at(s, n, i + 1, &len2);
        if (k2 != UNICODE_SPACE) {
            k = k2;
            start = i + 1;
        }
    }
    if (k != UNICODE_SPACE)
        return scan_class(s, n, start, k, SIZE_MAX);
    size_t crlf_end;
    return space_run(s, n, i, &crlf_end);
}

size_t tok_pretok_next(tokenizer_pre pre, const uint8_t *s, size_t n, size_t i) {
    switch (pre) {
    case TOKENIZER_PRE_LLAMA3: return next_llama3(s, n, i, 3);
    case TOKENIZER_PRE_QWEN2: return next_llama3(s, n, i, 1);
    case TOKENIZER_PRE_GPT2: return next_gpt2(s, n, i);
    }
    return n; /* unreachable: tokenizer_build checks `pre` */
}

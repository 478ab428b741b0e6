/* Hugging Face tokenizer.json to a tokenizer_spec (DESIGN.md 5), and ela_tokenizer_load.
 * Supported: model BPE over GPT-2's byte-level alphabet (merges as "a b" strings or [a, b]
 * pairs, ignore_merges), added tokens, normalizer none or NFC, pre-tokenizer
 * Sequence[Split(known regex, Isolated), ByteLevel(use_regex false)] or ByteLevel(use_regex
 * true) alone (GPT-2), post-processor ByteLevel and/or TemplateProcessing adding a BOS. Any
 * other setting that changes the ids is ELA_ERR_UNSUPPORTED quoting it, never ignored.
 * SentencePiece-style files (byte_fallback, ▁ for spaces: Llama 2, Mistral) share the vocabulary,
 * merges, added tokens and post-processor reading here and go on in tokenizer_spm_files.c.
 * ela_tokenizer_load also takes a model directory (tokenizer.json, with the BOS/EOS of the
 * tokenizer_config.json beside it) and GGUF files (tokenizer_gguf.c). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../alloc.h"
#include "../error.h"
#include "gguf.h"
#include "json.h"
#include "tokenizer_internal.h"
#include "tokenizer_spm.h"

/* The split regexes ela implements (tokenizer_pretok.c), exactly as tokenizer.json holds them. */
static const struct {
    const char *regex;
    tokenizer_pre pre;
} known_regex[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     TOKENIZER_PRE_LLAMA3},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     TOKENIZER_PRE_QWEN2},
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
     TOKENIZER_PRE_GPT2},
};

static int is_kind(const json_value *v, json_kind kind) { return v && v->kind == kind; }
static int is_null(const json_value *v) { return !v || v->kind == JSON_NULL; }

static int str_is(const json_value *v, const char *s) {
    return is_kind(v, JSON_STRING) && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

static const char *type_of(const json_value *v) {
    const json_value *t = json_get(v, "type");
    return is_kind(t, JSON_STRING) ? t->str : "(no type)";
}

static ela_status unsupported(const char *what, const char *field, const char *detail) {
    return ela_fail(ELA_ERR_UNSUPPORTED, "%s: %s %s is not supported by ela's tokenizer", what,
                    field, detail);
}

/* ---- normalizer, pre-tokenizer, post-processor ---------------------------------------- */
static ela_status parse_normalizer(const json_value *n, const char *what, int *nfc) {
    *nfc = 0;
    if (is_null(n))
        return ELA_OK;
    if (str_is(json_get(n, "type"), "NFC")) {
        *nfc = 1;
        return ELA_OK;
    }
    if (str_is(json_get(n, "type"), "Sequence")) {
        const json_value *list = json_get(n, "normalizers");
        if (!is_kind(list, JSON_ARRAY))
            return ela_fail(ELA_ERR_FORMAT, "%s: normalizer.normalizers is not an array", what);
        for (size_t i = 0; i < list->len; i++) {
            if (!str_is(json_get(&list->items[i], "type"), "NFC") || *nfc)
                return unsupported(what, "normalizer", type_of(&list->items[i]));
            *nfc = 1;
        }
        return ELA_OK;
    }
    return unsupported(what, "normalizer", type_of(n));
}

static ela_status check_byte_level(const json_value *b, const char *what, int want_regex) {
    if (json_get_bool(b, "add_prefix_space", 0))
        return unsupported(what, "pre_tokenizer ByteLevel", "with add_prefix_space true");
    if (json_get_bool(b, "use_regex", 1) != want_regex)
        return unsupported(what, "pre_tokenizer ByteLevel",
                           want_regex ? "with use_regex false (and no Split)"
                                      : "with use_regex true after a Split");
    return ELA_OK;
}

static ela_status parse_pre_tokenizer(const json_value *p, const char *what, tokenizer_pre *pre) {
    if (is_null(p))
        return unsupported(what, "pre_tokenizer", "null (not byte-level BPE)");
    if (str_is(json_get(p, "type"), "ByteLevel")) {
        *pre = TOKENIZER_PRE_GPT2;
        return check_byte_level(p, what, 1);
    }
    const json_value *list = json_get(p, "pretokenizers");
    if (!str_is(json_get(p, "type"), "Sequence") || !is_kind(list, JSON_ARRAY) || list->len != 2 ||
        !str_is(json_get(&list->items[0], "type"), "Split") ||
        !str_is(json_get(&list->items[1], "type"), "ByteLevel")) {
        if (str_is(json_get(p, "type"), "Sequence"))
            return unsupported(what, "pre_tokenizer",
                               "Sequence other than [Split, ByteLevel]");
        return unsupported(what, "pre_tokenizer", type_of(p));
    }
    const json_value *split = &list->items[0];
    const json_value *regex = json_get(json_get(split, "pattern"), "Regex");
    if (!is_kind(regex, JSON_STRING))
        return unsupported(what, "pre_tokenizer Split", "without a Regex pattern");
    if (!str_is(json_get(split, "behavior"), "Isolated") || json_get_bool(split, "invert", 0))
        return unsupported(what, "pre_tokenizer Split", "other than behavior Isolated, invert false");
    size_t k = 0;
    while (k < sizeof(known_regex) / sizeof(known_regex[0]) && !str_is(regex, known_regex[k].regex))
        k++;
    if (k == sizeof(known_regex) / sizeof(known_regex[0]))
        return ela_fail(ELA_ERR_UNSUPPORTED,
                        "%s: pre_tokenizer Split regex \"%.300s\" is not one ela implements "
                        "(Llama 3, Qwen2, GPT-2)",
                        what, regex->str);
    *pre = known_regex[k].pre;
    return check_byte_level(&list->items[1], what, 0);
}

/* TemplateProcessing: only "single": [SpecialToken BOS?, Sequence A] changes what we encode. */
static ela_status parse_template(const json_value *p, const char *what, int64_t n_vocab,
                                 int32_t *bos) {
    const json_value *single = json_get(p, "single");
    if (!is_kind(single, JSON_ARRAY))
        return ela_fail(ELA_ERR_FORMAT, "%s: post_processor.single is not an array", what);
    size_t n = single->len;
    if (n < 1 || n > 2 || !is_kind(json_get(&single->items[n - 1], "Sequence"), JSON_OBJECT) ||
        (n == 2 && !is_kind(json_get(&single->items[0], "SpecialToken"), JSON_OBJECT)))
        return unsupported(what, "post_processor TemplateProcessing",
                           "other than [SpecialToken, Sequence A] or [Sequence A]");
    if (n == 1)
        return ELA_OK;
    const json_value *name = json_get(json_get(&single->items[0], "SpecialToken"), "id");
    const json_value *entry = json_get(json_get(p, "special_tokens"), is_kind(name, JSON_STRING)
                                                                           ? name->str
                                                                           : "");
    const json_value *ids = json_get(entry, "ids");
    int64_t id;
    if (!is_kind(ids, JSON_ARRAY) || ids->len != 1 || !json_as_int(&ids->items[0], &id) ||
        id < 0 || id >= n_vocab)
        return ela_fail(ELA_ERR_FORMAT,
                        "%s: post_processor.special_tokens has no single valid id for \"%s\"",
                        what, is_kind(name, JSON_STRING) ? name->str : "?");
    *bos = (int32_t)id;
    return ELA_OK;
}

static ela_status parse_post_processor(const json_value *p, const char *what, int64_t n_vocab,
                                       int32_t *bos, int depth) {
    if (is_null(p) || str_is(json_get(p, "type"), "ByteLevel"))
        return ELA_OK; /* ByteLevel post-processing only trims offsets */
    if (str_is(json_get(p, "type"), "TemplateProcessing"))
        return parse_template(p, what, n_vocab, bos);
    const json_value *list = json_get(p, "processors");
    if (str_is(json_get(p, "type"), "Sequence") && is_kind(list, JSON_ARRAY) && depth < 4) {
        for (size_t i = 0; i < list->len; i++) {
            ela_status st = parse_post_processor(&list->items[i], what, n_vocab, bos, depth + 1);
            if (st != ELA_OK)
                return st;
        }
        return ELA_OK;
    }
    return unsupported(what, "post_processor", type_of(p));
}

static ela_status check_model(const json_value *model, const char *what) {
    if (!is_kind(model, JSON_OBJECT))
        return ela_fail(ELA_ERR_FORMAT, "%s: no \"model\" object", what);
    const json_value *type = json_get(model, "type");
    if (type && !str_is(type, "BPE"))
        return unsupported(what, "model type", is_kind(type, JSON_STRING) ? type->str : "?");
    const json_value *dropout = json_get(model, "dropout");
    if (!is_null(dropout) && !(is_kind(dropout, JSON_NUMBER) && dropout->number == 0.0))
        return unsupported(what, "model.dropout", "other than null");
    static const char *const empty_fields[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_value *v = json_get(model, empty_fields[i]);
        if (!is_null(v) && !str_is(v, ""))
            return unsupported(what, empty_fields[i], "other than null or \"\"");
    }
    if (!is_kind(json_get(model, "vocab"), JSON_OBJECT))
        return ela_fail(ELA_ERR_FORMAT, "%s: model.vocab is not an object", what);
    if (!is_kind(json_get(model, "merges"), JSON_ARRAY))
        return ela_fail(ELA_ERR_FORMAT, "%s: model.merges is not an array", what);
    return ELA_OK;
}

/* ---- tokenizer.json ------------------------------------------------------------------ */
typedef struct {
    const char **tokens;
    size_t *token_lens;
    uint8_t *special;
    const char **merges;
    size_t *merge_lens;
    char *pair_text; /* "a b" texts of merges given as [a, b] pairs */
} spec_arrays;

static void free_arrays(spec_arrays *a) {
    ela_free(a->tokens);
    ela_free(a->token_lens);
    ela_free(a->special);
    ela_free(a->merges);
    ela_free(a->merge_lens);
    ela_free(a->pair_text);
}

static ela_status read_merges(const json_value *list, const char *what, spec_arrays *a) {
    size_t pair_bytes = 0;
    for (size_t i = 0; i < list->len; i++) {
        const json_value *m = &list->items[i];
        if (is_kind(m, JSON_STRING))
            continue;
        if (!is_kind(m, JSON_ARRAY) || m->len != 2 || !is_kind(&m->items[0], JSON_STRING) ||
            !is_kind(&m->items[1], JSON_STRING))
            return ela_fail(ELA_ERR_FORMAT,
                            "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", what, i);
        pair_bytes += m->items[0].len + m->items[1].len + 1; /* bounded by the file size */
    }
    if (!(a->merges = ela_calloc(list->len + 1, sizeof(char *))) ||
        !(a->merge_lens = ela_calloc(list->len + 1, sizeof(size_t))) ||
        !(a->pair_text = ela_calloc(pair_bytes + 1, 1)))
        return ela_fail(ELA_ERR_OOM, "%s: out of memory for %zu merges", what, list->len);
    size_t off = 0;
    for (size_t i = 0; i < list->len; i++) {
        const json_value *m = &list->items[i];
        if (is_kind(m, JSON_STRING)) {
            a->merges[i] = m->str;
            a->merge_lens[i] = m->len;
            continue;
        }
        /* [a, b]: tokens may then hold spaces; byte-level ones never do (U+0020 maps to Ġ). */
        char *dst = a->pair_text + off;
        memcpy(dst, m->items[0].str, m->items[0].len);
        dst[m->items[0].len] = ' ';
        memcpy(dst + m->items[0].len + 1, m->items[1].str, m->items[1].len);
        a->merges[i] = dst;
        a->merge_lens[i] = m->items[0].len + m->items[1].len + 1;
        off += a->merge_lens[i];
    }
    return ELA_OK;
}

static ela_status check_added(const json_value *t, size_t i, const char *what, int64_t *id) {
    const json_value *content = json_get(t, "content");
    if (!json_get_int(t, "id", id) || *id < 0 || *id >= INT32_MAX || !is_kind(content, JSON_STRING))
        return ela_fail(ELA_ERR_FORMAT, "%s: added_tokens[%zu] has no valid id and content", what,
                        i);
    static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
    for (int f = 0; f < 3; f++)
        if (json_get_bool(t, flags[f], 0))
            return ela_fail(ELA_ERR_UNSUPPORTED,
                            "%s: added token \"%.100s\" has %s true, which ela's tokenizer does "
                            "not support",
                            what, content->str, flags[f]);
    return ELA_OK;
}

ela_status tokenizer_from_json(const char *text, size_t len, const char *what, ela_tokenizer **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_from_json: out is NULL");
    *out = NULL;
    if (!text || !what)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_from_json: text or what is NULL");
    json_doc *doc = NULL;
    spec_arrays a = {0};
    ela_status st = json_parse(text, len, what, &doc);
    if (st != ELA_OK)
        return st;
    const json_value *root = json_root(doc);
    const json_value *model = json_get(root, "model");
    const json_value *added = json_get(root, "added_tokens");
    tokenizer_spec spec = {0};
    spec.bos = spec.eos = -1;
    if (!is_kind(root, JSON_OBJECT)) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: not a JSON object", what);
        goto done;
    }
    /* SentencePiece-style (Llama 2, Mistral): same vocabulary, merges and added tokens,
     * its own normalization (tokenizer_spm_files.c). */
    int spm = tokenizer_spm_json_match(root);
    if ((st = check_model(model, what)) != ELA_OK ||
        (!spm && (st = parse_normalizer(json_get(root, "normalizer"), what, &spec.nfc)) != ELA_OK) ||
        (!spm && (st = parse_pre_tokenizer(json_get(root, "pre_tokenizer"), what, &spec.pre)) !=
                     ELA_OK))
        goto done;
    if (!is_null(added) && !is_kind(added, JSON_ARRAY)) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: added_tokens is not an array", what);
        goto done;
    }
    const json_value *vocab = json_get(model, "vocab");
    size_t n_added = is_kind(added, JSON_ARRAY) ? added->len : 0;

    /* Vocabulary size: the largest id + 1, within reach of the entry count (ids are dense in
     * real files; the bound keeps a corrupt id from sizing huge arrays). */
    int64_t max_id = -1, id;
    for (size_t i = 0; i < vocab->len; i++) {
        if (!json_as_int(&vocab->members[i].value, &id) || id < 0 || id >= INT32_MAX) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: model.vocab[\"%.100s\"] is not a valid id", what,
                          vocab->members[i].key);
            goto done;
        }
        max_id = id > max_id ? id : max_id;
    }
    for (size_t i = 0; i < n_added; i++) {
        if ((st = check_added(&added->items[i], i, what, &id)) != ELA_OK)
            goto done;
        max_id = id > max_id ? id : max_id;
    }
    int64_t n_vocab = max_id + 1;
    if (n_vocab == 0 || (uint64_t)n_vocab > 2 * ((uint64_t)vocab->len + n_added) + 1024) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: token id %lld out of range for %zu tokens", what,
                      (long long)max_id, vocab->len + n_added);
        goto done;
    }
    if (!(a.tokens = ela_calloc((size_t)n_vocab, sizeof(char *))) ||
        !(a.token_lens = ela_calloc((size_t)n_vocab, sizeof(size_t))) ||
        !(a.special = ela_calloc((size_t)n_vocab, 1))) {
        st = ela_fail(ELA_ERR_OOM, "%s: out of memory for %lld tokens", what, (long long)n_vocab);
        goto done;
    }
    for (size_t i = 0; i < vocab->len; i++) {
        const json_member *m = &vocab->members[i];
        json_as_int(&m->value, &id);
        if (a.tokens[id]) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: model.vocab gives id %lld to \"%.100s\" and \"%.100s\"",
                          what, (long long)id, a.tokens[id], m->key);
            goto done;
        }
        a.tokens[id] = m->key;
        a.token_lens[id] = m->key_len;
    }
    /* Added tokens (special or not) are matched whole in the raw text, before normalization;
     * one with the id of a vocabulary entry takes its place. */
    for (size_t i = 0; i < n_added; i++) {
        const json_value *content = json_get(&added->items[i], "content");
        json_get_int(&added->items[i], "id", &id);
        if (content->len == 0) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: added_tokens[%zu] has empty content", what, i);
            goto done;
        }
        a.tokens[id] = content->str;
        a.token_lens[id] = content->len;
        a.special[id] = 1;
    }
    if ((st = read_merges(json_get(model, "merges"), what, &a)) != ELA_OK)
        goto done;
    if ((st = parse_post_processor(json_get(root, "post_processor"), what, n_vocab, &spec.bos,
                                   0)) != ELA_OK)
        goto done;
    spec.add_bos = spec.bos >= 0;
    spec.n_vocab = n_vocab;
    spec.tokens = a.tokens;
    spec.token_lens = a.token_lens;
    spec.special = a.special;
    spec.n_merges = (int64_t)json_get(model, "merges")->len;
    spec.merges = a.merges;
    spec.merge_lens = a.merge_lens;
    spec.ignore_merges = json_get_bool(model, "ignore_merges", 0);
    st = spm ? tokenizer_spm_from_json(root, what, &spec, out) : tokenizer_build(&spec, out);

done:
    free_arrays(&a);
    json_free(doc);
    return st;
}

/* ---- files --------------------------------------------------------------------------- */
/* Id of a token named by its text as tokenizer_config.json writes it: an added token's
 * content, else a vocabulary token. -1 when none. */
static int32_t find_token(const ela_tokenizer *tok, const char *text, size_t len) {
    char buf[256];
    for (int32_t id = 0; id < (int32_t)ela_tokenizer_vocab_size(tok); id++) {
        size_t l;
        if (ela_token_piece(tok, id, buf, sizeof(buf), &l) == ELA_OK && l == len &&
            l <= sizeof(buf) && memcmp(buf, text, len) == 0)
            return id;
    }
    return -1;
}

/* bos_token / eos_token of tokenizer_config.json: a string or {"content": string}. */
static ela_status config_token(const json_value *cfg, const char *key, const char *what,
                               const ela_tokenizer *tok, int32_t *id) {
    const json_value *v = json_get(cfg, key);
    if (is_kind(v, JSON_OBJECT))
        v = json_get(v, "content");
    if (is_null(v))
        return ELA_OK;
    if (!is_kind(v, JSON_STRING))
        return ela_fail(ELA_ERR_FORMAT, "%s: %s is not a string", what, key);
    *id = find_token(tok, v->str, v->len);
    if (*id < 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s \"%.100s\" is not a token of the tokenizer", what,
                        key, v->str);
    return ELA_OK;
}

/* BOS/EOS from the tokenizer_config.json beside tokenizer.json, when there is one. */
static ela_status apply_config(ela_tokenizer *tok, const char *dir) {
    size_t n = strlen(dir);
    char *path = ela_calloc(n + 32, 1);
    if (!path)
        return ela_fail(ELA_ERR_OOM, "ela_tokenizer_load: out of memory");
    snprintf(path, n + 32, "%s%stokenizer_config.json", dir, n ? "/" : "");
    struct stat sb;
    ela_status st = ELA_OK;
    mapped_file *f = NULL;
    json_doc *doc = NULL;
    if (stat(path, &sb) != 0)
        goto done;
    if ((st = mapped_file_open(path, &f)) != ELA_OK ||
        (st = json_parse((const char *)f->data, f->size, path, &doc)) != ELA_OK)
        goto done;
    int32_t bos = ela_tokenizer_bos(tok), eos = ela_tokenizer_eos(tok);
    if ((st = config_token(json_root(doc), "bos_token", path, tok, &bos)) != ELA_OK ||
        (st = config_token(json_root(doc), "eos_token", path, tok, &eos)) != ELA_OK)
        goto done;
    st = tokenizer_set_bos_eos(tok, bos, eos);
done:
    json_free(doc);
    mapped_file_close(f);
    ela_free(path);
    return st;
}

/* 1 when the file starts with the GGUF magic. */
static int is_gguf(const char *path) {
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

static ela_status load_gguf(const char *path, ela_tokenizer **out) {
    gguf_file *g = NULL;
    ela_status st = gguf_open(path, &g);
    if (st == ELA_OK && (st = tokenizer_from_gguf(g, out)) == ELA_OK && !*out)
        st = ela_fail(ELA_ERR_FORMAT, "ela_tokenizer_load: %s has no tokenizer.ggml metadata",
                      path);
    gguf_free(g);
    return st;
}

ela_status ela_tokenizer_load(const char *path, ela_tokenizer **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_tokenizer_load: path is NULL");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ela_fail(ELA_ERR_IO, "ela_tokenizer_load: cannot open %s", path);
    if (!S_ISDIR(sb.st_mode) && is_gguf(path))
        return load_gguf(path, out);
    size_t n = strlen(path);
    char *file = ela_calloc(n + 32, 1), *dir = ela_calloc(n + 1, 1);
    mapped_file *f = NULL;
    ela_tokenizer *tok = NULL;
    ela_status st;
    if (!file || !dir) {
        st = ela_fail(ELA_ERR_OOM, "ela_tokenizer_load: out of memory");
        goto done;
    }
    if (S_ISDIR(sb.st_mode)) {
        snprintf(file, n + 32, "%s/tokenizer.json", path);
        memcpy(dir, path, n);
        if (stat(file, &sb) != 0) {
            st = ela_fail(ELA_ERR_IO, "ela_tokenizer_load: no tokenizer.json in %s", path);
            goto done;
        }
    } else {
        memcpy(file, path, n);
        const char *slash = strrchr(path, '/');
        if (slash)
            memcpy(dir, path, (size_t)(slash - path) + (slash == path));
    }
    if ((st = mapped_file_open(file, &f)) != ELA_OK ||
        (st = tokenizer_from_json((const char *)f->data, f->size, file, &tok)) != ELA_OK)
        goto done;
    if (!dir[0])
        dir[0] = '.';
    if ((st = apply_config(tok, dir)) != ELA_OK)
        goto done;
    *out = tok;
    tok = NULL;
done:
    ela_tokenizer_free(tok);
    mapped_file_close(f);
    ela_free(dir);
    ela_free(file);
    return st;
}

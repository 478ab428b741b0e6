/* SentencePiece-style BPE from files (DESIGN.md 5): the tokenizer.json of a Llama 2 / Mistral
 * style model (model BPE with byte_fallback and <0xNN> tokens under a normalizer
 * Sequence[Prepend("▁"), Replace(" ", "▁")], or the newer Metaspace pre-tokenizer with its
 * prepend_scheme and split) and GGUF metadata with tokenizer.ggml.model "llama" (tokens, scores,
 * token types, as llama.cpp's converter writes a SentencePiece model: no merges, merge priority
 * from the scores). Settings that would change the ids and are not implemented are
 * ELA_ERR_UNSUPPORTED quoting them; the decoder (Replace/ByteFallback/Fuse/Strip) only shapes
 * text, which ela_token_piece gives per token (▁ as a space, byte tokens as bytes). */
#include <math.h>
#include <string.h>

#include "../alloc.h"
#include "../error.h"
#include "gguf.h"
#include "tokenizer_spm.h"

#define SPACE_MARK "\xE2\x96\x81" /* U+2581 */

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

/* ---- tokenizer.json ------------------------------------------------------------------ */
static int spm_normalizer(const json_value *n) {
    return str_is(json_get(n, "type"), "Prepend") || str_is(json_get(n, "type"), "Replace");
}

int tokenizer_spm_json_match(const json_value *root) {
    const json_value *norm = json_get(root, "normalizer"), *list = json_get(norm, "normalizers");
    if (json_get_bool(json_get(root, "model"), "byte_fallback", 0) ||
        str_is(json_get(json_get(root, "pre_tokenizer"), "type"), "Metaspace") ||
        spm_normalizer(norm))
        return 1;
    for (size_t i = 0; str_is(json_get(norm, "type"), "Sequence") && is_kind(list, JSON_ARRAY) &&
                       i < list->len; i++)
        if (spm_normalizer(&list->items[i]))
            return 1;
    return 0;
}

/* One normalizer step: Prepend("▁") or Replace(String " " -> "▁"). */
static ela_status normalizer_step(const json_value *n, const char *what, int *prepend,
                                  int *replace) {
    if (str_is(json_get(n, "type"), "Prepend")) {
        if (!str_is(json_get(n, "prepend"), SPACE_MARK) || *prepend)
            return unsupported(what, "normalizer Prepend", "other than one Prepend(\"▁\")");
        *prepend = 1;
        return ELA_OK;
    }
    if (str_is(json_get(n, "type"), "Replace")) {
        if (!str_is(json_get(json_get(n, "pattern"), "String"), " ") ||
            !str_is(json_get(n, "content"), SPACE_MARK) || *replace)
            return unsupported(what, "normalizer Replace", "other than one Replace(\" \", \"▁\")");
        *replace = 1;
        return ELA_OK;
    }
    return unsupported(what, "normalizer", type_of(n));
}

/* The prefix and split: legacy normalizer with no pre-tokenizer, or Metaspace alone. */
static ela_status parse_spm_style(const json_value *root, const char *what, spm_prefix *prefix,
                                  int *split) {
    const json_value *norm = json_get(root, "normalizer"), *pre = json_get(root, "pre_tokenizer");
    int prepend = 0, replace = 0;
    ela_status st = ELA_OK;
    if (str_is(json_get(norm, "type"), "Sequence")) {
        const json_value *list = json_get(norm, "normalizers");
        if (!is_kind(list, JSON_ARRAY))
            return ela_fail(ELA_ERR_FORMAT, "%s: normalizer.normalizers is not an array", what);
        for (size_t i = 0; i < list->len && st == ELA_OK; i++)
            st = normalizer_step(&list->items[i], what, &prepend, &replace);
    } else if (!is_null(norm)) {
        st = normalizer_step(norm, what, &prepend, &replace);
    }
    if (st != ELA_OK)
        return st;
    *split = 0;
    if (is_null(pre)) {
        if (!replace)
            return unsupported(what, "a SentencePiece-style tokenizer",
                               "with neither Replace(\" \", \"▁\") nor a Metaspace pre_tokenizer");
        *prefix = prepend ? SPM_PREFIX_ALWAYS : SPM_PREFIX_NONE;
        return ELA_OK;
    }
    if (!str_is(json_get(pre, "type"), "Metaspace"))
        return unsupported(what, "pre_tokenizer", type_of(pre));
    if (prepend || replace)
        return unsupported(what, "pre_tokenizer Metaspace", "after a Prepend/Replace normalizer");
    const json_value *rep = json_get(pre, "replacement");
    if (is_null(rep))
        rep = json_get(pre, "str_rep");
    if (!str_is(rep, SPACE_MARK))
        return unsupported(what, "pre_tokenizer Metaspace", "with a replacement other than \"▁\"");
    const json_value *scheme = json_get(pre, "prepend_scheme");
    if (str_is(scheme, "always"))
        *prefix = SPM_PREFIX_META_ALWAYS;
    else if (str_is(scheme, "first"))
        *prefix = SPM_PREFIX_META_FIRST;
    else if (str_is(scheme, "never"))
        *prefix = SPM_PREFIX_NONE;
    else if (is_null(scheme)) /* older files: add_prefix_space */
        *prefix = json_get_bool(pre, "add_prefix_space", 1) ? SPM_PREFIX_META_ALWAYS
                                                            : SPM_PREFIX_NONE;
    else
        return unsupported(what, "pre_tokenizer Metaspace prepend_scheme",
                           is_kind(scheme, JSON_STRING) ? scheme->str : "?");
    *split = json_get_bool(pre, "split", 1);
    return ELA_OK;
}

ela_status tokenizer_spm_from_json(const json_value *root, const char *what,
                                   const tokenizer_spec *base, ela_tokenizer **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_from_json: out is NULL");
    *out = NULL;
    if (!root || !what || !base)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_from_json: NULL argument");
    const json_value *model = json_get(root, "model"), *added = json_get(root, "added_tokens");
    tokenizer_spm_spec spec;
    memset(&spec, 0, sizeof spec);
    ela_status st = parse_spm_style(root, what, &spec.prefix, &spec.split);
    if (st != ELA_OK)
        return st;
    if (json_get_bool(model, "ignore_merges", 0))
        return unsupported(what, "model.ignore_merges", "true with byte_fallback or ▁ spaces");
    /* An added token matched after normalization would cut the text after the prefix went on;
     * ela cuts the raw text (as HF does for normalized: false, the Llama 2 / Mistral files). */
    for (size_t i = 0; is_kind(added, JSON_ARRAY) && i < added->len; i++) {
        const json_value *a = &added->items[i];
        if (json_get_bool(a, "normalized", !json_get_bool(a, "special", 0)))
            return ela_fail(ELA_ERR_UNSUPPORTED, "%s: added token \"%.100s\" has normalized true, "
                            "which ela's SentencePiece-style tokenizer does not support", what,
                            json_get_string(a, "content") ? json_get_string(a, "content") : "?");
    }
    spec.unk = -1;
    const json_value *unk = json_get(model, "unk_token");
    if (!is_null(unk)) {
        for (int64_t i = 0; is_kind(unk, JSON_STRING) && i < base->n_vocab && spec.unk < 0; i++)
            if (base->token_lens[i] == unk->len && base->tokens[i] &&
                memcmp(base->tokens[i], unk->str, unk->len) == 0)
                spec.unk = (int32_t)i;
        if (spec.unk < 0)
            return ela_fail(ELA_ERR_FORMAT, "%s: model.unk_token is not a token of the vocabulary",
                            what);
    }
    uint8_t *types = ela_calloc((size_t)base->n_vocab, 1);
    if (!types)
        return ela_fail(ELA_ERR_OOM, "%s: out of memory for %lld tokens", what,
                        (long long)base->n_vocab);
    for (int64_t i = 0; i < base->n_vocab; i++)
        types[i] = base->special && base->special[i] ? SPM_CONTROL : SPM_NORMAL;
    spec.what = what;
    spec.tokens_field = "model.vocab";
    spec.n_vocab = base->n_vocab;
    spec.tokens = base->tokens;
    spec.token_lens = base->token_lens;
    spec.types = types;
    spec.n_merges = base->n_merges;
    spec.merges = base->merges;
    spec.merge_lens = base->merge_lens;
    spec.byte_fallback = json_get_bool(model, "byte_fallback", 0);
    spec.fuse_unk = json_get_bool(model, "fuse_unk", 0);
    spec.bos = base->bos;
    spec.eos = base->eos;
    spec.add_bos = base->add_bos;
    st = tokenizer_spm_build(&spec, out);
    ela_free(types);
    return st;
}

/* ---- GGUF ---------------------------------------------------------------------------- */
/* An optional token id; *id keeps its default when the key is absent. */
static ela_status gguf_id(const gguf_file *g, const char *key, int64_t n_vocab, int32_t *id) {
    int64_t x;
    if (!gguf_has(g, key)) {
        if (*id >= n_vocab)
            *id = -1;
        return ELA_OK;
    }
    ela_status st = gguf_get_int(g, key, &x);
    if (st != ELA_OK)
        return st;
    if (x < 0 || x >= n_vocab)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s %lld is outside the %lld tokens", gguf_path(g),
                        key, (long long)x, (long long)n_vocab);
    *id = (int32_t)x;
    return ELA_OK;
}

static ela_status gguf_flag(const gguf_file *g, const char *key, int *value) {
    return gguf_has(g, key) ? gguf_get_bool(g, key, value) : ELA_OK;
}

/* A numeric array of one entry per token. */
static ela_status per_token_array(const gguf_file *g, const char *key, int64_t n_vocab, int real,
                                  gguf_type *elem, const uint8_t **data) {
    int64_t n;
    ela_status st = gguf_get_array(g, key, elem, &n, data);
    if (st != ELA_OK)
        return st;
    int ok = real ? (*elem == GGUF_TYPE_F32 || *elem == GGUF_TYPE_F64)
                  : (*elem != GGUF_TYPE_F32 && *elem != GGUF_TYPE_F64 && *elem != GGUF_TYPE_BOOL);
    if (!ok)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s is an array of %s, not of %s", gguf_path(g), key,
                        gguf_type_name(*elem), real ? "floats" : "integers");
    if (n != n_vocab)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s has %lld entries for %lld tokens", gguf_path(g),
                        key, (long long)n, (long long)n_vocab);
    return ELA_OK;
}

ela_status tokenizer_spm_from_gguf(const gguf_file *g, ela_tokenizer **out) {
    if (!out || !g)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_spm_from_gguf: NULL argument");
    *out = NULL;
    const char *path = gguf_path(g);
    gguf_strings tokens;
    memset(&tokens, 0, sizeof tokens);
    float *scores = NULL;
    uint8_t *types = NULL;
    tokenizer_spm_spec spec;
    memset(&spec, 0, sizeof spec);
    ela_status st = gguf_get_strings(g, "tokenizer.ggml.tokens", &tokens);
    if (st != ELA_OK)
        goto done;
    if (tokens.n < 1) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: tokenizer.ggml.tokens is empty", path);
        goto done;
    }
    /* Without scores every merge would tie: refuse rather than tokenize wrongly. */
    if (!gguf_has(g, "tokenizer.ggml.scores")) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: tokenizer.ggml.scores is missing (a SentencePiece "
                      "vocabulary merges by score)", path);
        goto done;
    }
    gguf_type elem;
    const uint8_t *data;
    if ((st = per_token_array(g, "tokenizer.ggml.scores", tokens.n, 1, &elem, &data)) != ELA_OK)
        goto done;
    if (!(scores = ela_calloc((size_t)tokens.n, sizeof(float))) ||
        !(types = ela_calloc((size_t)tokens.n, 1))) {
        st = ela_fail(ELA_ERR_OOM, "%s: out of memory for the tokenizer", path);
        goto done;
    }
    for (int64_t i = 0; i < tokens.n; i++) {
        scores[i] = (float)gguf_array_float(elem, data, i);
        if (!isfinite(scores[i])) {
            st = ela_fail(ELA_ERR_FORMAT, "%s: tokenizer.ggml.scores[%lld] is not a finite number",
                          path, (long long)i);
            goto done;
        }
    }
    memset(types, SPM_NORMAL, (size_t)tokens.n);
    if (gguf_has(g, "tokenizer.ggml.token_type")) {
        if ((st = per_token_array(g, "tokenizer.ggml.token_type", tokens.n, 0, &elem, &data)) !=
            ELA_OK)
            goto done;
        for (int64_t i = 0; i < tokens.n; i++) {
            int64_t type = gguf_array_int(elem, data, i);
            if (type < 0 || type > SPM_BYTE) {
                st = ela_fail(ELA_ERR_FORMAT, "%s: tokenizer.ggml.token_type[%lld] is %lld, not a "
                              "token type (0-6)", path, (long long)i, (long long)type);
                goto done;
            }
            types[i] = type == 0 ? SPM_NORMAL : (uint8_t)type;
        }
    }
    /* llama.cpp's defaults for a SentencePiece vocabulary: <unk> 0, <s> 1, </s> 2, BOS added,
     * a space put before the text. */
    int add_bos = 1, add_eos = 0, add_space = 1;
    spec.unk = 0;
    spec.bos = 1;
    spec.eos = 2;
    if ((st = gguf_id(g, "tokenizer.ggml.unknown_token_id", tokens.n, &spec.unk)) != ELA_OK ||
        (st = gguf_id(g, "tokenizer.ggml.bos_token_id", tokens.n, &spec.bos)) != ELA_OK ||
        (st = gguf_id(g, "tokenizer.ggml.eos_token_id", tokens.n, &spec.eos)) != ELA_OK ||
        (st = gguf_flag(g, "tokenizer.ggml.add_bos_token", &add_bos)) != ELA_OK ||
        (st = gguf_flag(g, "tokenizer.ggml.add_eos_token", &add_eos)) != ELA_OK ||
        (st = gguf_flag(g, "tokenizer.ggml.add_space_prefix", &add_space)) != ELA_OK)
        goto done;
    if (add_eos) {
        st = ela_fail(ELA_ERR_UNSUPPORTED, "%s: tokenizer.ggml.add_eos_token true is not supported "
                      "by ela's tokenizer", path);
        goto done;
    }
    spec.what = path;
    spec.tokens_field = "tokenizer.ggml.tokens";
    spec.n_vocab = tokens.n;
    spec.tokens = tokens.strs;
    spec.token_lens = tokens.lens;
    spec.types = types;
    spec.scores = scores;
    spec.prefix = add_space ? SPM_PREFIX_ALWAYS : SPM_PREFIX_NONE;
    spec.byte_fallback = 1; /* llama.cpp writes characters outside the vocabulary as bytes */
    spec.add_bos = add_bos;
    st = tokenizer_spm_build(&spec, out);
done:
    ela_free(types);
    ela_free(scores);
    gguf_strings_free(&tokens);
    return st;
}

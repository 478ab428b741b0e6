/* GGUF tokenizer metadata (tokenizer.ggml.*, as llama.cpp's converter writes it) to a
 * tokenizer (DESIGN.md 5). Byte-level BPE ("gpt2") here; SentencePiece BPE ("llama": scores,
 * no merges) in tokenizer_spm_files.c. For "gpt2" the split regex comes from
 * tokenizer.ggml.pre, which names the pre-tokenizer of the tokenizer.json it was made from
 * (llama-bpe: Llama 3, which also sets ignore_merges; qwen2: Qwen2/2.5/3, which also
 * normalizes to NFC; gpt-2/default: GPT-2). Control and user-defined tokens (token_type 3, 4)
 * are the added tokens matched whole in the text. */
#include <string.h>

#include "../alloc.h"
#include "../error.h"
#include "gguf.h"
#include "tokenizer_spm.h"

static ela_status opt_id(const gguf_file *g, const char *key, int64_t n_vocab, int32_t *id) {
    int64_t x;
    *id = -1;
    if (!gguf_has(g, key))
        return ELA_OK;
    ela_status st = gguf_get_int(g, key, &x);
    if (st != ELA_OK)
        return st;
    if (x < 0 || x >= n_vocab)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s %lld is outside the %lld tokens", gguf_path(g),
                        key, (long long)x, (long long)n_vocab);
    *id = (int32_t)x;
    return ELA_OK;
}

ela_status tokenizer_from_gguf(const gguf_file *g, ela_tokenizer **out) {
    if (!out || !g)
        return ela_fail(ELA_ERR_INVALID_ARG, "tokenizer_from_gguf: NULL argument");
    *out = NULL;
    const char *path = gguf_path(g), *model, *pre = "default";
    if (!gguf_has(g, "tokenizer.ggml.model"))
        return ELA_OK;
    ela_status st = gguf_get_string(g, "tokenizer.ggml.model", &model, NULL);
    if (st != ELA_OK)
        return st;
    if (strcmp(model, "llama") == 0) /* SentencePiece BPE (tokenizer_spm_files.c) */
        return tokenizer_spm_from_gguf(g, out);
    if (strcmp(model, "gpt2") != 0)
        return ela_fail(ELA_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model '%.64s' is not supported (ela reads byte-level "
                        "BPE, 'gpt2', and SentencePiece BPE, 'llama')",
                        path, model);
    tokenizer_spec spec;
    memset(&spec, 0, sizeof spec);
    if (gguf_has(g, "tokenizer.ggml.pre") &&
        (st = gguf_get_string(g, "tokenizer.ggml.pre", &pre, NULL)) != ELA_OK)
        return st;
    if (strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0) {
        spec.pre = TOKENIZER_PRE_LLAMA3;
        spec.ignore_merges = 1;
    } else if (strcmp(pre, "qwen2") == 0) {
        spec.pre = TOKENIZER_PRE_QWEN2;
        spec.nfc = 1;
    } else if (strcmp(pre, "gpt-2") == 0 || strcmp(pre, "default") == 0) {
        spec.pre = TOKENIZER_PRE_GPT2;
    } else {
        return ela_fail(ELA_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.pre '%.64s' is not supported (llama-bpe, qwen2, "
                        "gpt-2)",
                        path, pre);
    }
    gguf_strings tokens, merges;
    memset(&tokens, 0, sizeof tokens);
    memset(&merges, 0, sizeof merges);
    uint8_t *special = NULL;
    if ((st = gguf_get_strings(g, "tokenizer.ggml.tokens", &tokens)) != ELA_OK ||
        (st = gguf_get_strings(g, "tokenizer.ggml.merges", &merges)) != ELA_OK)
        goto done;
    if (tokens.n < 1) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: tokenizer.ggml.tokens is empty", path);
        goto done;
    }
    if (gguf_has(g, "tokenizer.ggml.token_type")) {
        gguf_type elem;
        int64_t n;
        const uint8_t *data;
        if ((st = gguf_get_array(g, "tokenizer.ggml.token_type", &elem, &n, &data)) != ELA_OK)
            goto done;
        if (n != tokens.n) {
            st = ela_fail(ELA_ERR_FORMAT,
                          "%s: tokenizer.ggml.token_type has %lld entries for %lld tokens", path,
                          (long long)n, (long long)tokens.n);
            goto done;
        }
        if (!(special = ela_calloc((size_t)n, 1))) {
            st = ela_fail(ELA_ERR_OOM, "%s: out of memory for the tokenizer", path);
            goto done;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t type = gguf_array_int(elem, data, i);
            special[i] = type == 3 || type == 4; /* control, user-defined */
        }
    }
    spec.n_vocab = tokens.n;
    spec.tokens = tokens.strs;
    spec.token_lens = tokens.lens;
    spec.special = special;
    spec.n_merges = merges.n;
    spec.merges = merges.strs;
    spec.merge_lens = merges.lens;
    int add_bos = 0;
    if ((st = opt_id(g, "tokenizer.ggml.bos_token_id", tokens.n, &spec.bos)) != ELA_OK ||
        (st = opt_id(g, "tokenizer.ggml.eos_token_id", tokens.n, &spec.eos)) != ELA_OK ||
        (gguf_has(g, "tokenizer.ggml.add_bos_token") &&
         (st = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos)) != ELA_OK))
        goto done;
    spec.add_bos = add_bos;
    st = tokenizer_build(&spec, out);
done:
    ela_free(special);
    gguf_strings_free(&merges);
    gguf_strings_free(&tokens);
    return st;
}

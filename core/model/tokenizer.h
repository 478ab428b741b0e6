/* Byte-level BPE tokenizer internals (DESIGN.md 5): the public ela_tokenize* functions in
 * ela.h sit on top. tokenizer.json (tokenizer_json.c) and GGUF metadata (model loader) both
 * describe the vocabulary as a tokenizer_spec and build the tokenizer from it. */
#ifndef ELA_MODEL_TOKENIZER_H
#define ELA_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

/* Pre-tokenizer split patterns ela knows (the regexes of the HF tokenizers, hand-matched). */
typedef enum {
    TOKENIZER_PRE_LLAMA3 = 0, /* Llama 3: letters, digits in groups of up to 3, ... */
    TOKENIZER_PRE_QWEN2 = 1,  /* Qwen2/2.5/3: as Llama 3 but single digits */
    TOKENIZER_PRE_GPT2 = 2    /* GPT-2: 's|'t|... | ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
} tokenizer_pre;

typedef struct {
    int64_t n_vocab;
    const char *const *tokens;     /* [n_vocab] token text in the byte-level alphabet (GPT-2's
                                      byte-to-unicode map), as in tokenizer.json / GGUF */
    const size_t *token_lens;      /* [n_vocab] bytes of each token text */
    const uint8_t *special;        /* [n_vocab] nonzero: special/added token matched as a whole
                                      in the input before splitting (may be NULL) */
    int64_t n_merges;
    const char *const *merges;     /* [n_merges] "left right", highest priority first */
    const size_t *merge_lens;
    tokenizer_pre pre;
    int nfc;                       /* apply Unicode NFC before splitting */
    int32_t bos, eos;              /* -1 when absent */
    int add_bos;                   /* prepend bos when add_special is requested */
    int ignore_merges;             /* a pre-token that is itself a token is emitted as is,
                                      without merging (tokenizer.json model.ignore_merges;
                                      Llama 3 sets it, GGUF pre "llama-bpe") */
} tokenizer_spec;

/* Build a tokenizer from a spec (copies everything it needs). ELA_ERR_FORMAT when tokens or
 * merges are inconsistent (a merge naming an unknown token, a missing byte token, ...). */
ela_status tokenizer_build(const tokenizer_spec *spec, ela_tokenizer **out);

/* Set the BOS/EOS ids (from config.json, generation_config.json or GGUF metadata); -1 for
 * none (a tokenizer without BOS adds none). ELA_ERR_INVALID_ARG outside the vocabulary. */
ela_status tokenizer_set_bos_eos(ela_tokenizer *tok, int32_t bos, int32_t eos);

/* Parse a tokenizer.json held in memory; `what` names it in errors. */
ela_status tokenizer_from_json(const char *text, size_t len, const char *what, ela_tokenizer **out);

/* The tokenizer.ggml.* metadata of an open GGUF file (tokenizer_gguf.c); *out is NULL (and
 * ELA_OK) when the file has none. */
typedef struct gguf_file gguf_file;
ela_status tokenizer_from_gguf(const gguf_file *g, ela_tokenizer **out);

#endif

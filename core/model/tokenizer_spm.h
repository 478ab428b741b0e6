/* SentencePiece-style BPE tokenizers (Llama 2, Mistral 7B v0.1, TinyLlama; DESIGN.md 5): spaces
 * written as U+2581 "▁", a "▁" put before the text, BPE over characters, characters outside
 * the vocabulary as <0xNN> byte tokens. tokenizer_spm.c builds and runs one;
 * tokenizer_spm_files.c reads it from tokenizer.json (called by tokenizer_json.c) and from GGUF
 * tokenizer.ggml.model "llama" (called by tokenizer_gguf.c); tokenizer.c forwards ela_tokenize
 * and ela_token_piece to it. */
#ifndef ELA_MODEL_TOKENIZER_SPM_H
#define ELA_MODEL_TOKENIZER_SPM_H

#include "json.h"
#include "tokenizer.h"

typedef struct tokenizer_spm tokenizer_spm;

/* Where the "▁" goes before a stretch of text between added tokens (spaces always become ▁). */
typedef enum {
    SPM_PREFIX_NONE = 0,
    SPM_PREFIX_ALWAYS = 1,      /* before every stretch, even one starting with a space: HF's
                                   legacy normalizer Prepend("▁"), llama.cpp's add_space_prefix */
    SPM_PREFIX_META_ALWAYS = 2, /* HF Metaspace prepend_scheme "always": unless it starts with ▁ */
    SPM_PREFIX_META_FIRST = 3   /* Metaspace "first": the same, only for the stretch at offset 0 */
} spm_prefix;

/* Token types, SentencePiece's (and GGUF tokenizer.ggml.token_type's) numbering. Unknown,
 * control and user-defined tokens are matched as a whole in the raw text; the others are
 * looked up by their text, and a text "<0xNN>" is the byte token of 0xNN. */
enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER = 4, SPM_UNUSED = 5, SPM_BYTE = 6 };

typedef struct {
    const char *what;          /* file, for messages */
    const char *tokens_field;  /* the field holding the tokens, for messages */
    int64_t n_vocab;
    const char *const *tokens; /* [n_vocab] token texts, "▁" for spaces */
    const size_t *token_lens;
    const uint8_t *types;      /* [n_vocab] SPM_* */
    /* Merge priority: scores != NULL: SentencePiece's, every split of a normal token into two
     * tokens merges, the token of highest score first, leftmost among equal scores (GGUF,
     * as llama.cpp); else HF's ranked merges "left right", lowest rank first. */
    const float *scores;
    int64_t n_merges;
    const char *const *merges;
    const size_t *merge_lens;
    spm_prefix prefix;
    int split;                 /* Metaspace split: BPE each "▁word" on its own */
    int byte_fallback;         /* characters outside the vocabulary as their byte tokens (all
                                  256 must exist), else as unk */
    int fuse_unk;              /* consecutive unknown characters give one unk */
    int32_t unk, bos, eos;     /* -1: none */
    int add_bos;
} tokenizer_spm_spec;

/* Build (copies what it needs). ELA_ERR_FORMAT naming the field for inconsistent input. */
ela_status tokenizer_spm_build(const tokenizer_spm_spec *spec, ela_tokenizer **out);

/* tokenizer_spm.c, for tokenizer.c. */
void tokenizer_spm_free(tokenizer_spm *spm);
ela_status tokenizer_spm_encode(const tokenizer_spm *spm, const char *text, size_t len,
                                int32_t bos, int32_t *ids, int64_t capacity, int64_t *n_ids);
ela_status tokenizer_spm_piece(const tokenizer_spm *spm, int32_t id, char *buf, size_t capacity,
                               size_t *len);
/* tokenizer.c: an ela_tokenizer that forwards to spm (owned from then on, freed on failure). */
ela_status tokenizer_wrap_spm(tokenizer_spm *spm, int64_t n_vocab, int32_t bos, int32_t eos,
                              int add_bos, ela_tokenizer **out);

/* tokenizer_spm_files.c. Nonzero when a tokenizer.json describes a SentencePiece-style BPE
 * (byte_fallback, a Prepend/Replace normalizer or a Metaspace pre-tokenizer). */
int tokenizer_spm_json_match(const json_value *root);
/* The rest of such a tokenizer.json: `base` holds what tokenizer_json.c read (tokens, added
 * tokens as special, merges, BOS from the post-processor). */
ela_status tokenizer_spm_from_json(const json_value *root, const char *what,
                                   const tokenizer_spec *base, ela_tokenizer **out);
ela_status tokenizer_spm_from_gguf(const gguf_file *g, ela_tokenizer **out);

#endif

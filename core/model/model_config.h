/* Model configuration (DESIGN.md 5): an HF config.json or a GGUF file's metadata to
 * ela_model_info (architecture, sizes, norm epsilon, RoPE), every value checked. */
#ifndef ELA_MODEL_MODEL_CONFIG_H
#define ELA_MODEL_MODEL_CONFIG_H

#include "ela.h"
#include "gguf.h"
#include "json.h"

/* config.json (already parsed; `what` names it in messages). Architectures llama, mistral,
 * qwen2, qwen3 (model_type, else architectures[0]); other ones are ELA_ERR_UNSUPPORTED.
 * *tied receives tie_word_embeddings (default 0). Missing or bad fields are ELA_ERR_FORMAT
 * naming the key. Leaves weight_dtype, has_router, has_gate and n_params for the loader. */
ela_status model_config_from_json(const json_value *cfg, const char *what, ela_model_info *out,
                                  int *tied);

/* general.architecture and the <arch>.* keys; the vocabulary size from <arch>.vocab_size, the
 * tokenizer's token list or token_embd.weight. Llama 3.1's rope_freqs.weight tensor is turned
 * back into llama3 scaling parameters when it matches them. */
ela_status model_config_from_gguf(const gguf_file *g, ela_model_info *out);

/* Range and consistency checks shared by both (heads divide, head_dim even, ...). */
ela_status model_config_check(const ela_model_info *info, const char *what);

#endif

/* The loaded model as the runtime sees it (DESIGN.md 5): configuration, weights as backend
 * tensors (on the CPU they borrow the memory-mapped file), the tokenizer. Filled by
 * model_load.c from safetensors or GGUF; read by the forward pass (llama_forward.c). */
#ifndef ELA_MODEL_MODEL_H
#define ELA_MODEL_MODEL_H

#include "ela.h"

/* One decoder layer. Matrices are PyTorch Linear layout [out, in]; vectors [n]. Optional
 * weights are NULL when the architecture or checkpoint has none. */
typedef struct {
    ela_tensor *attn_norm;          /* [hidden] */
    ela_tensor *wq, *wk, *wv;       /* [Hq*d, hidden], [Hkv*d, hidden], [Hkv*d, hidden] */
    ela_tensor *bq, *bk, *bv;       /* Qwen2: [Hq*d], [Hkv*d], [Hkv*d] */
    ela_tensor *q_norm, *k_norm;    /* Qwen3: [d], applied per head before RoPE */
    ela_tensor *wo;                 /* [hidden, Hq*d] */
    ela_tensor *ffn_norm;           /* [hidden] */
    ela_tensor *w_gate, *w_up;      /* [ffn, hidden] */
    ela_tensor *w_down;             /* [hidden, ffn] */
    ela_tensor *g_proj;             /* SSA gate: [3*Hq, hidden] (PAPERS.md 4), or NULL */
    ela_router_weights router;      /* Elastic router (PAPERS.md 1.9); all NULL when absent */
} model_layer;

typedef struct model_files model_files; /* mapped files backing the weights (model_load.c) */

struct ela_model {
    ela_model_info info;
    ela_backend *backend;           /* not owned */
    ela_tensor *tok_embd;           /* [vocab, hidden] */
    ela_tensor *out_norm;           /* [hidden] */
    ela_tensor *lm_head;            /* [vocab, hidden]; the same pointer as tok_embd when tied */
    model_layer *layers;            /* [n_layers] */
    ela_tokenizer *tokenizer;       /* owned; NULL when the model came without one */
    model_files *files;
};

#endif

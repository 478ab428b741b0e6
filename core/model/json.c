/* Recursive-descent JSON parser into an arena (core/model/json.h). Arrays and objects are
 * collected in a scratch stack shared by all nesting levels, then copied to the arena once
 * their size is known, so a document costs one arena plus one scratch buffer. */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../error.h"

#define JSON_MAX_DEPTH 256
#define ARENA_CHUNK ((size_t)1 << 20)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
} arena_chunk;

struct json_doc {
    arena_chunk *chunks;
    json_value root;
};

typedef struct {
    const char *p, *end, *begin;
    const char *what;
    json_doc *doc;
    /* Scratch stack of members; arrays use the value field only. */
    json_member *stack;
    size_t stack_len, stack_cap;
    ela_status oom;
} parser;

static void *arena_alloc(parser *ps, size_t bytes) {
    bytes = (bytes + 15) & ~(size_t)15;
    arena_chunk *c = ps->doc->chunks;
    if (!c || c->size - c->used < bytes) {
        size_t size = bytes > ARENA_CHUNK ? bytes : ARENA_CHUNK;
        arena_chunk *n = ela_calloc(1, sizeof(arena_chunk) + size);
        if (!n)
            return NULL;
        n->size = size;
        /* A big one-off block goes behind the current chunk so its free space stays in use. */
        if (c && size > ARENA_CHUNK) {
            n->next = c->next;
            c->next = n;
        } else {
            n->next = c;
            ps->doc->chunks = n;
        }
        c = n;
    }
    void *r = c->data + c->used;
    c->used += bytes;
    return r;
}

static ela_status fail_at(parser *ps, const char *msg) {
    int64_t line = 1, col = 1;
    for (const char *q = ps->begin; q < ps->p && q < ps->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return ela_fail(ELA_ERR_FORMAT, "%s: invalid JSON at line %lld, column %lld: %s", ps->what,
                    (long long)line, (long long)col, msg);
}

static ela_status oom(void) { return ela_fail(ELA_ERR_OOM, "out of memory parsing JSON"); }

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *dst, unsigned cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At the opening quote. The decoded string is never longer than its escaped form. */
static ela_status parse_string(parser *ps, const char **out, size_t *out_len) {
    const char *s = ++ps->p;
    const char *q = s;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end)
        return fail_at(ps, "unterminated string");
    char *dst = arena_alloc(ps, (size_t)(q - s) + 1);
    if (!dst)
        return oom();
    size_t n = 0;
    while (ps->p < q) {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20)
            return fail_at(ps, "control character in string");
        if (c != '\\') {
            dst[n++] = (char)c;
            ps->p++;
            continue;
        }
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': dst[n++] = '"'; break;
        case '\\': dst[n++] = '\\'; break;
        case '/': dst[n++] = '/'; break;
        case 'b': dst[n++] = '\b'; break;
        case 'f': dst[n++] = '\f'; break;
        case 'n': dst[n++] = '\n'; break;
        case 'r': dst[n++] = '\r'; break;
        case 't': dst[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (q - ps->p < 4 || !hex4(ps->p, &cp))
                return fail_at(ps, "bad \\u escape");
            ps->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (q - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' && hex4(ps->p + 2, &lo) &&
                    lo >= 0xDC00 && lo < 0xE000) {
                    ps->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else {
                    cp = 0xFFFD; /* lone high surrogate */
                }
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                cp = 0xFFFD; /* lone low surrogate */
            }
            n += put_utf8(dst + n, cp);
            break;
        }
        default:
            ps->p -= 2;
            return fail_at(ps, "bad escape");
        }
    }
    dst[n] = '\0';
    ps->p = q + 1;
    *out = dst;
    *out_len = n;
    return ELA_OK;
}

/* The value of a number already checked against the JSON grammar. Numbers of at most 19
 * significant digits with a small exponent are converted exactly here (Clinger's fast path:
 * an integer below 2^53 times or over an exact power of ten rounds once); the rest go through
 * strtod with '.' replaced by the C library locale's decimal point, since strtod follows
 * LC_NUMERIC and an application may have set a locale that writes 0,5. */
static ela_status to_double(parser *ps, const char *s, size_t n, double *out) {
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = s, *end = s + n;
    int neg = *p == '-';
    p += neg;
    uint64_t mant = 0;
    int digits = 0;
    int64_t exp10 = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (mant == 0 && *p == '0')
            continue;
        if (digits < 19)
            mant = mant * 10 + (uint64_t)(*p - '0');
        else
            exp10++;
        digits++;
    }
    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            if (mant == 0 && *p == '0') {
                exp10--;
                continue;
            }
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                exp10--;
            }
            digits++;
        }
    }
    int64_t e = 0;
    int big_exp = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = p < end && *p == '-';
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        for (; p < end; p++) {
            if (e < 100000)
                e = e * 10 + (*p - '0');
            else
                big_exp = 1;
        }
        e = eneg ? -e : e;
    }
    if (!big_exp && digits <= 19 && mant <= ((uint64_t)1 << 53)) {
        int64_t x = exp10 + e;
        if (mant == 0) {
            *out = neg ? -0.0 : 0.0;
            return ELA_OK;
        }
        if (x >= -22 && x <= 22) {
            double d = (double)mant;
            d = x < 0 ? d / pow10[-x] : d * pow10[x];
            *out = neg ? -d : d;
            return ELA_OK;
        }
    }
    const char *dp = localeconv()->decimal_point;
    size_t dpl = dp && dp[0] ? strlen(dp) : 1;
    char small[128];
    char *buf = small;
    if (n + dpl + 1 > sizeof small && !(buf = arena_alloc(ps, n + dpl + 1)))
        return oom();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && dp && dp[0]) {
            memcpy(buf + k, dp, dpl);
            k += dpl;
        } else {
            buf[k++] = s[i];
        }
    }
    buf[k] = '\0';
    *out = strtod(buf, NULL);
    return ELA_OK;
}

/* A number by the JSON grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static ela_status parse_number(parser *ps, json_value *v) {
    const char *s = ps->p;
    const char *q = s;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9')
        return fail_at(ps, "bad number");
    if (*q == '0')
        q++;
    else
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || *q < '0' || *q > '9')
            return fail_at(ps, "bad number");
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || *q < '0' || *q > '9')
            return fail_at(ps, "bad number");
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    v->kind = JSON_NUMBER;
    ela_status st = to_double(ps, s, (size_t)(q - s), &v->number);
    ps->p = q;
    return st;
}

static ela_status push(parser *ps, const json_member *m) {
    if (ps->stack_len == ps->stack_cap) {
        size_t cap = ps->stack_cap ? ps->stack_cap * 2 : 256;
        json_member *n = ela_realloc(ps->stack, cap, sizeof *n);
        if (!n)
            return oom();
        ps->stack = n;
        ps->stack_cap = cap;
    }
    ps->stack[ps->stack_len++] = *m;
    return ELA_OK;
}

static ela_status parse_value(parser *ps, json_value *v, int depth);

/* Arrays and objects share one body: members are pushed on the scratch stack from `base` and
 * copied out once the closing bracket is seen. */
static ela_status parse_container(parser *ps, json_value *v, int depth, int is_object) {
    if (depth >= JSON_MAX_DEPTH)
        return fail_at(ps, "nested too deeply");
    char close = is_object ? '}' : ']';
    size_t base = ps->stack_len;
    ela_status st = ELA_OK;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
    } else {
        for (;;) {
            json_member m;
            memset(&m, 0, sizeof m);
            skip_ws(ps);
            if (is_object) {
                if (ps->p >= ps->end || *ps->p != '"') {
                    st = fail_at(ps, "expected a string key");
                    goto done;
                }
                if ((st = parse_string(ps, &m.key, &m.key_len)) != ELA_OK)
                    goto done;
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') {
                    st = fail_at(ps, "expected ':'");
                    goto done;
                }
                ps->p++;
            }
            if ((st = parse_value(ps, &m.value, depth + 1)) != ELA_OK)
                goto done;
            if ((st = push(ps, &m)) != ELA_OK)
                goto done;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == close) {
                ps->p++;
                break;
            }
            st = fail_at(ps, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
            goto done;
        }
    }
    size_t n = ps->stack_len - base;
    v->kind = is_object ? JSON_OBJECT : JSON_ARRAY;
    v->len = n;
    if (n > 0) {
        if (is_object) {
            v->members = arena_alloc(ps, n * sizeof(json_member));
            if (!v->members) {
                st = oom();
                goto done;
            }
            memcpy(v->members, ps->stack + base, n * sizeof(json_member));
        } else {
            v->items = arena_alloc(ps, n * sizeof(json_value));
            if (!v->items) {
                st = oom();
                goto done;
            }
            for (size_t i = 0; i < n; i++)
                v->items[i] = ps->stack[base + i].value;
        }
    }
done:
    ps->stack_len = base;
    return st;
}

static int literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

static ela_status parse_value(parser *ps, json_value *v, int depth) {
    memset(v, 0, sizeof *v);
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail_at(ps, "unexpected end of input");
    switch (*ps->p) {
    case '{': return parse_container(ps, v, depth, 1);
    case '[': return parse_container(ps, v, depth, 0);
    case '"':
        v->kind = JSON_STRING;
        return parse_string(ps, &v->str, &v->len);
    case 't':
        if (!literal(ps, "true"))
            return fail_at(ps, "bad literal");
        v->kind = JSON_BOOL;
        v->boolean = 1;
        return ELA_OK;
    case 'f':
        if (!literal(ps, "false"))
            return fail_at(ps, "bad literal");
        v->kind = JSON_BOOL;
        return ELA_OK;
    case 'n':
        if (!literal(ps, "null"))
            return fail_at(ps, "bad literal");
        v->kind = JSON_NULL;
        return ELA_OK;
    default: return parse_number(ps, v);
    }
}

ela_status json_parse(const char *text, size_t len, const char *what, json_doc **out) {
    if (!out || (!text && len))
        return ela_fail(ELA_ERR_INVALID_ARG, "json_parse: NULL argument");
    *out = NULL;
    json_doc *doc = ela_calloc(1, sizeof *doc);
    if (!doc)
        return oom();
    parser ps = {.p = text, .end = text + len, .begin = text, .what = what ? what : "JSON",
                 .doc = doc};
    ela_status st = parse_value(&ps, &doc->root, 0);
    if (st == ELA_OK) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            st = fail_at(&ps, "trailing characters after the value");
    }
    ela_free(ps.stack);
    if (st != ELA_OK) {
        json_free(doc);
        return st;
    }
    *out = doc;
    return ELA_OK;
}

void json_free(json_doc *doc) {
    if (!doc)
        return;
    arena_chunk *c = doc->chunks;
    while (c) {
        arena_chunk *next = c->next;
        ela_free(c);
        c = next;
    }
    ela_free(doc);
}

const json_value *json_root(const json_doc *doc) { return doc ? &doc->root : NULL; }

const json_value *json_get(const json_value *v, const char *key) {
    if (!v || v->kind != JSON_OBJECT || !key)
        return NULL;
    size_t klen = strlen(key);
    for (size_t i = v->len; i-- > 0;) {
        const json_member *m = &v->members[i];
        if (m->key_len == klen && memcmp(m->key, key, klen) == 0)
            return &m->value;
    }
    return NULL;
}

const char *json_get_string(const json_value *obj, const char *key) {
    const json_value *v = json_get(obj, key);
    return v && v->kind == JSON_STRING ? v->str : NULL;
}

double json_get_number(const json_value *obj, const char *key, double fallback) {
    const json_value *v = json_get(obj, key);
    return v && v->kind == JSON_NUMBER ? v->number : fallback;
}

int json_as_int(const json_value *v, int64_t *out) {
    if (!v || v->kind != JSON_NUMBER || !isfinite(v->number) || v->number != floor(v->number) ||
        v->number < -9.2e18 || v->number > 9.2e18)
        return 0;
    *out = (int64_t)v->number;
    return 1;
}

int json_get_int(const json_value *obj, const char *key, int64_t *out) {
    return json_as_int(json_get(obj, key), out);
}

int json_get_bool(const json_value *obj, const char *key, int fallback) {
    const json_value *v = json_get(obj, key);
    return v && v->kind == JSON_BOOL ? v->boolean : fallback;
}

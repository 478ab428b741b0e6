/* The JSON reader behind config.json, tokenizer.json and safetensors headers (core/model/json.c):
 * values and escapes (\u with surrogate pairs, lone surrogates, \u0000), numbers against strtod
 * (fresh random ones each run), the nesting limit, trailing garbage, error positions, a
 * truncation sweep and random mutations (never a crash), a locale with a decimal comma, and
 * fault injection (ELA_ERR_OOM with nothing leaked). */
#define _POSIX_C_SOURCE 200809L
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model/json.h"
#include "test_common.h"

#define CHECK_FAIL(call, want, text)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_text(ela_last_error(), text), "message \"%s\" does not name '%s'",     \
               ela_last_error(), text);                                                         \
    } while (0)

static json_doc *parse(const char *text) {
    json_doc *d = NULL;
    ela_status st = json_parse(text, strlen(text), "test.json", &d);
    CHECKF(st == ELA_OK, "parse %s: %s (%s)", text, ela_status_str(st), ela_last_error());
    return d;
}

/* A string value equals want (len bytes). */
static void check_string(const char *json, const char *want, size_t len) {
    json_doc *d = parse(json);
    const json_value *v = json_root(d);
    CHECKF(v && v->kind == JSON_STRING && v->len == len && memcmp(v->str, want, len) == 0 &&
               v->str[len] == '\0',
           "%s: got %zu bytes", json, v ? v->len : 0);
    json_free(d);
}

static void bad(const char *json, const char *text) {
    json_doc *d = NULL;
    CHECK_FAIL(json_parse(json, strlen(json), "bad.json", &d), ELA_ERR_FORMAT, text);
    CHECKF(test_has_text(ela_last_error(), "bad.json"), "message \"%s\" lacks the file name",
           ela_last_error());
    CHECK(d == NULL);
}

static void test_values(void) {
    json_doc *d = parse(" {\"a\": [1, -2.5, true, false, null, \"x\", {}, []], \"b\": {\"c\": 3},"
                        " \"a\": 7, \"e\": \"\"}\n");
    const json_value *r = json_root(d);
    CHECK(r && r->kind == JSON_OBJECT && r->len == 4);
    if (r && r->len == 4) {
        const json_value *a = &r->members[0].value;
        CHECK(strcmp(r->members[0].key, "a") == 0 && a->kind == JSON_ARRAY && a->len == 8);
        if (a->len == 8) {
            CHECK(a->items[0].kind == JSON_NUMBER && a->items[0].number == 1);
            CHECK(a->items[1].number == -2.5);
            CHECK(a->items[2].kind == JSON_BOOL && a->items[2].boolean == 1);
            CHECK(a->items[3].kind == JSON_BOOL && a->items[3].boolean == 0);
            CHECK(a->items[4].kind == JSON_NULL);
            CHECK(a->items[5].kind == JSON_STRING && strcmp(a->items[5].str, "x") == 0);
            CHECK(a->items[6].kind == JSON_OBJECT && a->items[6].len == 0);
            CHECK(a->items[7].kind == JSON_ARRAY && a->items[7].len == 0);
        }
        /* a repeated key: json_get gives the last one */
        int64_t i = 0;
        CHECK(json_get_int(r, "a", &i) == 1 && i == 7);
        const json_value *b = json_get(r, "b");
        CHECK(b && json_get_int(b, "c", &i) == 1 && i == 3);
        CHECK(json_get(r, "zz") == NULL && json_get(b, NULL) == NULL && json_get(NULL, "a") == NULL);
        CHECK(json_get(&r->members[0].value, "a") == NULL); /* not an object */
        CHECK(json_get_string(r, "e") && json_get_string(r, "e")[0] == '\0');
        CHECK(json_get_string(r, "b") == NULL);
        CHECK(json_get_number(r, "a", -1) == 7 && json_get_number(r, "e", -1) == -1);
        CHECK(json_get_bool(r, "a", 5) == 5 && json_get_int(r, "e", &i) == 0);
    }
    json_free(d);
    d = parse("{\"t\": true, \"f\": false, \"x\": 3.5, \"big\": 1e19, \"neg\": -9e18}");
    r = json_root(d);
    int64_t i;
    CHECK(json_get_bool(r, "t", 0) == 1 && json_get_bool(r, "f", 1) == 0);
    CHECK(json_get_int(r, "x", &i) == 0 && json_get_int(r, "big", &i) == 0);
    CHECK(json_get_int(r, "neg", &i) == 1 && i == -9000000000000000000ll);
    json_free(d);
    struct {
        const char *text;
        int64_t want;
    } ints[] = {{"123", 123}, {"-7", -7}, {"0", 0}, {"1e2", 100}, {"-0", 0}, {"2.0", 2}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        d = parse(ints[k].text);
        CHECKF(d && json_as_int(json_root(d), &i) && i == ints[k].want, "%s", ints[k].text);
        json_free(d);
    }
    d = parse("2.5");
    CHECK(d && !json_as_int(json_root(d), &i));
    json_free(d);
    CHECK(json_root(NULL) == NULL);
    json_free(NULL);
    d = NULL;
    CHECK_FAIL(json_parse(NULL, 3, "x", &d), ELA_ERR_INVALID_ARG, "NULL");
    CHECK_FAIL(json_parse("1", 1, "x", NULL), ELA_ERR_INVALID_ARG, "NULL");
    bad("", "end of input");
    bad("  \n\t ", "end of input");
    bad("{} x", "trailing");
    bad("[1] ]", "trailing");
    bad("{\"a\" 1}", "':'");
    bad("{a: 1}", "string key");
    bad("{\"a\": 1,}", "string key");
    bad("[1,]", "number");
    bad("[1 2]", "','");
    bad("tru", "literal");
    bad("nul", "literal");
    bad("True", "number");
    bad("\xef\xbb\xbf{}", "number"); /* a byte-order mark is not JSON */
    /* the position of the error */
    json_doc *e = NULL;
    const char *txt = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    CHECK_STATUS(json_parse(txt, strlen(txt), "pos.json", &e), ELA_ERR_FORMAT);
    CHECKF(test_has_text(ela_last_error(), "line 3, column 8"), "position: %s", ela_last_error());
}

static void test_strings(void) {
    check_string("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8);
    check_string("\"\\u0041\\u00e9\\u00E9\\u20ac\"", "A\xc3\xa9\xc3\xa9\xe2\x82\xac", 8);
    check_string("\"\\ud83d\\ude00!\"", "\xf0\x9f\x98\x80!", 5);       /* surrogate pair */
    check_string("\"\\uD834\\uDD1E\"", "\xf0\x9d\x84\x9e", 4);          /* upper-case hex */
    check_string("\"\\ud800x\"", "\xef\xbf\xbdx", 4);                   /* lone high */
    check_string("\"\\udc00\"", "\xef\xbf\xbd", 3);                     /* lone low */
    check_string("\"\\ud800\\u0041\"", "\xef\xbf\xbd" "A", 4);          /* high + non-low */
    check_string("\"\\ud800\\ud800\\udc00\"", "\xef\xbf\xbd\xf0\x90\x80\x80", 7);
    check_string("\"a\\u0000b\"", "a\0b", 3);                           /* NUL kept, length */
    check_string("\"\\u007f\\u0080\\u07ff\\u0800\\uffff\"",
                 "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 11);
    check_string("\"h\xc3\xa9llo \xe4\xb8\xad\"", "h\xc3\xa9llo \xe4\xb8\xad", 10); /* raw UTF-8 */
    check_string("\"\"", "", 0);
    bad("\"abc", "unterminated");
    bad("\"abc\\\"", "unterminated");
    bad("\"a\\x\"", "bad escape");
    bad("\"a\\u12G4\"", "\\u");
    bad("\"a\\u12\"", "\\u");
    bad("\"a\nb\"", "control character");
    bad("\"a\tb\"", "control character");
    /* keys decode the same way */
    json_doc *d = parse("{\"k\\u00e9y\": 1}");
    CHECK(d && json_get(json_root(d), "k\xc3\xa9y") != NULL);
    json_free(d);
}

static void test_numbers(void) {
    struct {
        const char *text;
        double want;
    } ok[] = {
        {"0", 0},           {"-0", -0.0},        {"1", 1},
        {"-12", -12},       {"1.5", 1.5},        {"1e-05", 1e-05},
        {"2.5E+3", 2500},   {"-2.5e-3", -0.0025}, {"500000.0", 500000},
        {"0.02", 0.02},     {"1e22", 1e22},      {"1e23", 1e23},
        {"1e-7", 1e-7},     {"123456789012345678", 123456789012345678.0},
        {"9007199254740993", 9007199254740993.0}, {"0.1e1", 1},
        {"1e999", HUGE_VAL}, {"-1e999", -HUGE_VAL}, {"1e-999", 0},
        {"0e999999999999999999999", 0},
        {"3.141592653589793238462643383279502884197169399375105820974944592307816406286", 3.141592653589793},
        {"0.000000000000000000000000000000000000000000000000000000000000000000000000000001", 1e-78},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        json_doc *d = parse(ok[i].text);
        const json_value *v = json_root(d);
        double want = strtod(ok[i].text, NULL);
        CHECKF(v && v->kind == JSON_NUMBER && memcmp(&v->number, &want, sizeof want) == 0 &&
                   (isinf(want) || fabs(want - ok[i].want) <= 1e-15 * fabs(want)),
               "%s: got %.17g, want %.17g", ok[i].text, v ? v->number : 0.0, want);
        json_free(d);
    }
    const char *bads[] = {"-", "1.", ".5", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "01",
                          "-01", "1.e5", "--1", "1E-"};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        json_doc *d = NULL;
        ela_status st = json_parse(bads[i], strlen(bads[i]), "n.json", &d);
        CHECKF(st == ELA_ERR_FORMAT && d == NULL, "%s: %s", bads[i], ela_status_str(st));
    }
    /* Random numbers written with %.17g (and shorter) parse to what strtod gives. */
    test_rng rng;
    test_rng_init(&rng, 1);
    int64_t mismatches = 0;
    for (int i = 0; i < 20000; i++) {
        char text[64];
        double x;
        uint64_t bits = test_rng_u64(&rng);
        switch (i % 4) {
        case 0: memcpy(&x, &bits, 8); break; /* any double */
        case 1: x = (double)(int64_t)(bits >> (bits % 64)) * (bits & 1 ? 1 : -1); break;
        case 2: x = test_rng_uniform(&rng, -1e6, 1e6); break;
        default: x = test_rng_normal(&rng) * pow(10, (double)(int)(bits % 40) - 20); break;
        }
        if (!isfinite(x))
            continue;
        snprintf(text, sizeof text, i % 3 == 0 ? "%.17g" : i % 3 == 1 ? "%.6g" : "%.10e", x);
        json_doc *d = NULL;
        if (json_parse(text, strlen(text), "r.json", &d) != ELA_OK) {
            CHECKF(0, "%s did not parse: %s", text, ela_last_error());
            continue;
        }
        double want = strtod(text, NULL), got = json_root(d)->number;
        if (memcmp(&got, &want, 8) != 0 && mismatches++ < 5)
            CHECKF(0, "%s: got %.17g, strtod %.17g", text, got, want);
        json_free(d);
    }
    CHECKF(mismatches == 0, "%lld random numbers differ from strtod", (long long)mismatches);
}

/* strtod follows LC_NUMERIC; an application with a decimal-comma locale must still read 0.5. */
static void test_locale(void) {
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "ru_RU.UTF-8"};
    const char *set = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !set; i++)
        if (setlocale(LC_NUMERIC, names[i]))
            set = names[i];
    if (!set || strcmp(localeconv()->decimal_point, ".") == 0) {
        setlocale(LC_NUMERIC, "C");
        printf("locale: skipped (no decimal-comma locale installed)\n");
        return;
    }
    const char *texts[] = {"0.5", "1e-5", "3.14159265358979323846264338327950288", "1.5e300"};
    double want[] = {0.5, 1e-5, 3.141592653589793, 1.5e300};
    for (int i = 0; i < 4; i++) {
        json_doc *d = parse(texts[i]);
        CHECKF(d && json_root(d)->number == want[i], "locale %s: %s read as %.17g", set, texts[i],
               d ? json_root(d)->number : 0.0);
        json_free(d);
    }
    setlocale(LC_NUMERIC, "C");
    printf("locale: numbers read the same under %s\n", set);
}

static void test_nesting(void) {
    /* 256 levels parse, 257 do not; a huge depth fails without recursing that deep */
    for (int depth = 255; depth <= 257; depth++) {
        char *s = malloc((size_t)depth * 2 + 1);
        for (int i = 0; i < depth; i++) {
            s[i] = '[';
            s[depth * 2 - 1 - i] = ']';
        }
        s[depth * 2] = '\0';
        json_doc *d = NULL;
        ela_status st = json_parse(s, (size_t)depth * 2, "deep.json", &d);
        if (depth <= 256)
            CHECKF(st == ELA_OK, "depth %d: %s", depth, ela_last_error());
        else
            CHECKF(st == ELA_ERR_FORMAT && test_has_text(ela_last_error(), "nested too deeply"),
                   "depth %d: %s", depth, ela_status_str(st));
        json_free(d);
        free(s);
    }
    size_t n = 1000000;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++)
        s[i] = '[';
    json_doc *d = NULL;
    CHECK_FAIL(json_parse(s, n, "deep.json", &d), ELA_ERR_FORMAT, "nested too deeply");
    free(s);
    /* objects nest too */
    char buf[4096];
    size_t k = 0;
    for (int i = 0; i < 300; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "{\"a\":");
    CHECK_FAIL(json_parse(buf, k, "deep.json", &d), ELA_ERR_FORMAT, "nested too deeply");
}

/* A document with a bit of everything, for the sweeps and the OOM loop. */
static const char *sample =
    "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"hidden_size\": 4096,\n"
    "  \"rms_norm_eps\": 1e-05,\n  \"rope_scaling\": {\"factor\": 8.0, \"rope_type\": \"llama3\"},\n"
    "  \"eos_token_id\": [128001, 128008, 128009],\n  \"tie_word_embeddings\": false,\n"
    "  \"bos\": null,\n  \"text\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\n\",\n"
    "  \"nested\": [[1, [2, [3, {\"x\": -0.5e-3}]]], {}, []]\n}";

static void test_sweeps(void) {
    size_t n = strlen(sample);
    json_doc *d = parse(sample);
    json_free(d);
    int64_t bad_prefix = 0;
    for (size_t len = 0; len < n; len++) {
        d = NULL;
        ela_status st = json_parse(sample, len, "t.json", &d);
        if (st != ELA_ERR_FORMAT || d != NULL) {
            if (bad_prefix++ < 5)
                CHECKF(0, "prefix %zu: %s", len, ela_status_str(st));
            json_free(d);
        }
    }
    CHECKF(bad_prefix == 0, "%lld prefixes parsed", (long long)bad_prefix);
    /* Random byte mutations: any result but a crash; a failure is FORMAT with a message. */
    test_rng rng;
    test_rng_init(&rng, 2);
    char *m = malloc(n);
    int64_t ok = 0, other = 0;
    static const char special[] = "\"\\{}[],:0-e.u \x01\xff\xc3";
    for (int r = 0; r < 5000; r++) {
        memcpy(m, sample, n);
        int edits = 1 + (int)(test_rng_u64(&rng) % 3);
        for (int e = 0; e < edits; e++) {
            uint64_t k = test_rng_u64(&rng);
            m[k % n] = k & 256 ? (char)(k >> 16) : special[(k >> 16) % (sizeof special - 1)];
        }
        d = NULL;
        ela_status st = json_parse(m, n, "t.json", &d);
        if (st == ELA_OK)
            ok++;
        else if (st != ELA_ERR_FORMAT || d != NULL || !ela_last_error()[0])
            other++;
        json_free(d);
    }
    CHECKF(other == 0, "%lld mutations gave a status other than OK or FORMAT", (long long)other);
    printf("sweeps: %zu prefixes, 5000 mutations (%lld still parse)\n", n, (long long)ok);
    free(m);
}

/* Fault injection: every allocation of a parse fails in turn. The large document needs more
 * than one arena chunk (a string over 1 MB) and a growing scratch stack. */
static void oom_loop(const char *what, const char *text, size_t len) {
    int64_t failures = 0;
    ela_status st = ELA_OK;
    for (int64_t i = 1; i <= 10000; i++) {
        json_doc *d = NULL;
        ela_debug_fail_alloc(i);
        st = json_parse(text, len, what, &d);
        ela_debug_fail_alloc(0);
        if (st == ELA_OK) {
            json_free(d);
            break;
        }
        failures++;
        CHECKF(st == ELA_ERR_OOM && d == NULL, "%s: allocation %lld: %s", what, (long long)i,
               ela_status_str(st));
        if (st != ELA_ERR_OOM)
            break;
    }
    CHECKF(st == ELA_OK && failures >= 2, "%s: %lld failures, last %s", what, (long long)failures,
           ela_status_str(st));
    printf("oom %-6s: %lld allocations failed in turn, each ELA_ERR_OOM\n", what,
           (long long)failures);
}

static void test_large_and_oom(void) {
    oom_loop("sample", sample, strlen(sample));
    /* [ "<1.5 MB of x>", 0, 1, ..., 99999, "<3 MB with escapes>" ] */
    size_t cap = 8u << 20, k = 0;
    char *s = malloc(cap);
    s[k++] = '[';
    s[k++] = '"';
    memset(s + k, 'x', 1500000);
    k += 1500000;
    s[k++] = '"';
    for (int i = 0; i < 100000; i++)
        k += (size_t)snprintf(s + k, cap - k, ",%d", i);
    k += (size_t)snprintf(s + k, cap - k, ",\"");
    for (int i = 0; i < 500000; i++)
        k += (size_t)snprintf(s + k, cap - k, "\\u00e9");
    k += (size_t)snprintf(s + k, cap - k, "\"]");
    json_doc *d = NULL;
    CHECK_STATUS(json_parse(s, k, "large.json", &d), ELA_OK);
    const json_value *r = json_root(d);
    CHECK(r && r->kind == JSON_ARRAY && r->len == 100002);
    if (r && r->len == 100002) {
        CHECK(r->items[0].kind == JSON_STRING && r->items[0].len == 1500000 &&
              r->items[0].str[1499999] == 'x');
        int64_t v;
        CHECK(json_as_int(&r->items[12346], &v) && v == 12345);
        CHECK(r->items[100001].len == 1000000 && memcmp(r->items[100001].str, "\xc3\xa9", 2) == 0);
    }
    json_free(d);
    oom_loop("large", s, k);
    free(s);
}

int main(void) {
    test_seed();
    test_values();
    test_strings();
    test_numbers();
    test_locale();
    test_nesting();
    test_sweeps();
    test_large_and_oom();
    return test_summary("json");
}

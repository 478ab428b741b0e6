/* BPE merge table and merge loop (core/model/bpe_merge.h). */
#include "core/model/bpe_merge.h"

#include "core/alloc.h"
#include "core/error.h"

static uint64_t hash_pair(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

uint64_t bpe_table_size(uint64_t n) {
    uint64_t size = 16;
    while (size < 2 * n)
        size <<= 1;
    return size;
}

int bpe_pairs_alloc(bpe_pairs *p, uint64_t n) {
    p->mask = bpe_table_size(n) - 1;
    p->slots = ela_calloc(p->mask + 1, sizeof *p->slots);
    if (!p->slots)
        return -1;
    for (uint64_t i = 0; i <= p->mask; i++)
        p->slots[i].key = UINT64_MAX;
    return 0;
}

void bpe_pairs_free(bpe_pairs *p) {
    ela_free(p->slots);
    p->slots = NULL;
}

void bpe_pairs_put(bpe_pairs *p, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t i = hash_pair(key) & p->mask;
    while (p->slots[i].key != UINT64_MAX && p->slots[i].key != key)
        i = (i + 1) & p->mask;
    p->slots[i].key = key;
    p->slots[i].rank = rank;
    p->slots[i].id = id;
}

const bpe_pair *bpe_pairs_find(const bpe_pairs *p, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t i = hash_pair(key) & p->mask;; i = (i + 1) & p->mask) {
        if (p->slots[i].key == key)
            return &p->slots[i];
        if (p->slots[i].key == UINT64_MAX)
            return NULL;
    }
}

ela_status bpe_word_reserve(bpe_word *w, size_t len) {
    if (len <= w->cap)
        return ELA_OK;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < len)
        cap *= 2;
    int32_t *sym = ela_realloc(w->sym, cap, sizeof(int32_t));
    if (sym)
        w->sym = sym;
    int32_t *prev = ela_realloc(w->prev, cap, sizeof(int32_t));
    if (prev)
        w->prev = prev;
    int32_t *next = ela_realloc(w->next, cap, sizeof(int32_t));
    if (next)
        w->next = next;
    /* each merge pushes at most two candidates after the first n - 1 */
    bpe_candidate *heap = ela_realloc(w->heap, cap, 3 * sizeof(bpe_candidate));
    if (heap)
        w->heap = heap;
    if (!sym || !prev || !next || !heap)
        return ela_fail(ELA_ERR_OOM, "ela_tokenize: out of memory for a %zu-byte word", len);
    w->cap = cap;
    return ELA_OK;
}

void bpe_word_free(bpe_word *w) {
    ela_free(w->sym);
    ela_free(w->prev);
    ela_free(w->next);
    ela_free(w->heap);
    w->sym = w->prev = w->next = NULL;
    w->heap = NULL;
    w->cap = 0;
}

static inline int before(const bpe_candidate *a, const bpe_candidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_candidate *h, size_t *n, bpe_candidate v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&v, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

static bpe_candidate heap_pop(bpe_candidate *h, size_t *n) {
    bpe_candidate top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &v))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

/* The pair starting at symbol pos, when it merges, as a candidate. */
static void push_pair(bpe_word *w, size_t *nh, const bpe_pairs *pairs, int32_t pos) {
    const bpe_pair *m = bpe_pairs_find(pairs, w->sym[pos], w->sym[w->next[pos]]);
    if (m) {
        bpe_candidate v = {m->rank, pos, m->id};
        heap_push(w->heap, nh, v);
    }
}

void bpe_word_merge(bpe_word *w, int32_t n, const bpe_pairs *pairs) {
    for (int32_t i = 0; i < n; i++) {
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < n ? i + 1 : -1;
    }
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        push_pair(w, &nh, pairs, i);
    while (nh) {
        bpe_candidate top = heap_pop(w->heap, &nh);
        int32_t pos = top.pos, right = w->next[pos];
        /* Stale: merged away (sym -1), no right neighbour any more, or the pair there now
         * makes another token (HF's checks). */
        if (w->sym[pos] < 0 || right < 0)
            continue;
        const bpe_pair *m = bpe_pairs_find(pairs, w->sym[pos], w->sym[right]);
        if (!m || m->id != top.id)
            continue;
        w->sym[pos] = top.id;
        w->sym[right] = -1;
        w->next[pos] = w->next[right];
        if (w->next[pos] >= 0)
            w->prev[w->next[pos]] = pos;
        if (w->prev[pos] >= 0)
            push_pair(w, &nh, pairs, w->prev[pos]);
        if (w->next[pos] >= 0)
            push_pair(w, &nh, pairs, pos);
    }
}

/* CPU decode_select (DESIGN.md 4.7, PAPERS.md 3.2): LessIsMore's unified top-k selection for one
 * decode query, without materialising the [Hq, n] logits; and the same selection with phase 1's
 * scoring done by a caller (cpu_decode_select_scored: the fused selection layer,
 * decode_select_attend.c, attends while it scores).
 *
 * Phase 1 (parallel over KV head x key chunk): the G query heads of a KV head score the chunk's
 * candidate keys 64 at a time with the attention kernels (qk_rows reading K in place, or
 * load_rows + qk on f32 tiles), so K is read once, as in a dense decode step, and the G heads
 * share each row. The chunk's logits (G x at most CHUNK_FLOATS / G, in a per-thread buffer) are
 * then cut to each head's best k_mid by a histogram selection (chunk_top). Memory is
 * O(Hq chunks k_mid + threads CHUNK_FLOATS), not O(Hq n). With a caller's scorer an item is its
 * KV head x chunk of [0, n), scored into the same buffer by the callback, whose candidates
 * are then cut the same way.
 * Phase 2 (parallel over query heads): the chunks' survivors are merged by a quickselect and
 * the k_mid winners radix-sorted by (logit descending, index ascending). Phase 3 (serial): the
 * rank-major union, with a bitmap of taken tokens.
 * The bound: phase 1 reads Hkv n d elements of K once, half the bytes of a dense decode step;
 * the selection adds two streaming passes over each head's n logits (in cache), a
 * quickselect over a bin of them, and O(chunks k_mid) per head to merge. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"

#define MIN_CHUNK_KEYS 2048   /* a chunk smaller than this is not worth its merge */
#define CHUNK_FLOATS 131072   /* per-thread logit buffer: G x chunk length floats (512 KiB) */
#define HIST_BINS 2048        /* histogram bins of one chunk's logits */
#define SAMPLE_MAX 2048       /* logits sampled to guess a chunk's top-k threshold */

/* A scored key as one integer whose order is the ranking: the logit's bits made monotonic in
 * the high half, 2^32 - 1 - index in the low half, so a larger key has the higher logit or, on
 * equal logits, the lower index. Integer compares are cheaper than (float, index) pairs and let
 * the final sort be a radix sort. Logits are made canonical first: NaN ranks as -inf, -0 as +0
 * (the ranking compares values, and -0 == +0). */
typedef uint64_t ent;

/* The logit's bits made monotonic: a larger uint32 is a larger float (canonical v). */
static inline uint32_t ord_of_bits(uint32_t b) {
    return b ^ ((uint32_t)-(int32_t)(b >> 31) | 0x80000000u);
}

static inline uint32_t ord_bits(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return ord_of_bits(b);
}

/* The float whose ordered bits are o. */
static inline float float_of_ord(uint32_t o) {
    uint32_t b = (o & 0x80000000u) ? o & 0x7fffffffu : ~o;
    float v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static inline ent ent_of(uint32_t ord, int64_t j) {
    return (uint64_t)ord << 32 | (uint32_t)(0xffffffffu - (uint32_t)j);
}

static inline int32_t ent_index(ent e) { return (int32_t)(0xffffffffu - (uint32_t)e); }

static inline void swap_ent(ent *a, ent *b) {
    ent t = *a;
    *a = *b;
    *b = t;
}

/* Heapsort of a[0..n), largest first: the fallback that bounds quickselect at O(n log n) on
 * adversarial inputs. Min-heap, so the root is the smallest and goes last. */
static void sift_down(ent *a, int64_t n, int64_t i) {
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && a[c + 1] < a[c])
            c++;
        if (a[i] <= a[c])
            return;
        swap_ent(&a[i], &a[c]);
        i = c;
    }
}

static void heap_sort(ent *a, int64_t n) {
    for (int64_t i = n / 2 - 1; i >= 0; i--)
        sift_down(a, n, i);
    for (int64_t e = n - 1; e > 0; e--) {
        swap_ent(&a[0], &a[e]);
        sift_down(a, e, 0);
    }
}

static void insertion_sort(ent *a, int64_t n) {
    for (int64_t i = 1; i < n; i++) {
        ent x = a[i];
        int64_t j = i;
        for (; j > 0 && x > a[j - 1]; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

/* Partition a[lo..hi] (keys are distinct) around the median of three, larger keys first;
 * returns the pivot's final position. Branch-free Lomuto: the compare only moves an index, so
 * random data costs no mispredicted branches. */
static int64_t partition(ent *a, int64_t lo, int64_t hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] > a[lo])
        swap_ent(&a[mid], &a[lo]);
    if (a[hi] > a[lo])
        swap_ent(&a[hi], &a[lo]);
    if (a[mid] > a[hi])
        swap_ent(&a[mid], &a[hi]); /* a[hi] is now the median */
    ent pivot = a[hi];
    int64_t first = lo;
    for (int64_t i = lo; i < hi; i++) {
        ent x = a[i];
        int64_t larger = x > pivot;
        a[i] = a[first];
        a[first] = x;
        first += larger;
    }
    swap_ent(&a[first], &a[hi]);
    return first;
}

static int depth_limit(int64_t n) {
    int d = 8;
    while (n > 1) {
        n >>= 1;
        d += 2;
    }
    return d;
}

/* Reorder a[0..n) so that a[0..k) are its k largest keys, the k-th largest at a[k - 1] and the
 * others in no order (nth_element), 0 < k < n. */
static void select_top(ent *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, t = k - 1;
    int depth = depth_limit(n);
    while (hi - lo > 16) {
        if (--depth < 0) {
            heap_sort(a + lo, hi - lo + 1);
            return;
        }
        int64_t p = partition(a, lo, hi);
        if (t < p)
            hi = p - 1;
        else if (t > p)
            lo = p + 1;
        else
            return;
    }
    insertion_sort(a + lo, hi - lo + 1);
}

/* Sort a[0..n) largest first: LSD radix sort on the bytes of the logit half (complemented, so
 * ascending digits give descending keys), skipping bytes equal in every key, then the (rare)
 * runs of equal logits are ordered by index. tmp holds n keys. */
static void sort_desc(ent *a, ent *tmp, int64_t n) {
    ent *src = a, *dst = tmp;
    for (int shift = 32; n >= 64 && shift < 64; shift += 8) {
        int64_t hist[256] = {0};
        for (int64_t i = 0; i < n; i++)
            hist[(~src[i] >> shift) & 255]++;
        if (hist[(~src[0] >> shift) & 255] == n)
            continue; /* every key has this byte */
        int64_t sum = 0;
        for (int b = 0; b < 256; b++) {
            int64_t c = hist[b];
            hist[b] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++)
            dst[hist[(~src[i] >> shift) & 255]++] = src[i];
        ent *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, (size_t)n * sizeof *a);
    if (n < 64) {
        insertion_sort(a, n);
        return;
    }
    /* runs of equal logits, by index: insertion sort when short, heapsort when long (a cache of
     * identical keys must not cost k_mid^2) */
    for (int64_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && a[j] >> 32 == a[i] >> 32; j++)
            ;
        if (j - i > 32)
            heap_sort(a + i, j - i);
        else if (j - i > 1)
            insertion_sort(a + i, j - i);
    }
}

/* The budget split of ela.h: k_mid = floor(K_b (1 - recent)). When 4 recent is an integer
 * (0, 0.25, 0.5, 0.75, 1: exact in float) the floor is taken in integers, so it equals the
 * reference's int(K_b * 0.75) for every K_b; otherwise in double with an allowance of K_b 1e-7
 * for recent being the nearest float to a decimal (its error is below K_b 6e-8), so that e.g.
 * recent = 0.1 gives floor(0.9 K_b), not one less. */
static int64_t split_mid(int64_t kb, float recent) {
    double r4 = 4.0 * (double)recent;
    int64_t mid;
    if (r4 == floor(r4))
        mid = kb * (4 - (int64_t)r4) / 4;
    else
        mid = (int64_t)floor((double)kb * (1.0 - (double)recent) + (double)kb * 1e-7);
    return mid < 0 ? 0 : mid > kb ? kb : mid;
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct {
    const ela_decode_select_args *a;
    const cpu_attn_kernels *kern;
    const cpu_select_scorer *scorer; /* the caller scores phase 1's chunks, or NULL: we do */
    int64_t G, dp;
    int rows_path;
    int64_t lo, hi, k_mid;       /* candidates [lo, hi) */
    int64_t chunks, chunk_len;
    int64_t slot;                /* min(k_mid, chunk_len): entries a chunk keeps per head */
    ent *buf;                    /* [hq][chunks][slot] each chunk's best, per head */
    int64_t *cnt;                /* [hq][chunks] entries held (min(k_mid, chunk keys)) */
    int32_t *top;                /* [hq][k_mid] each head's ranking */
} plan;

/* Per-thread scratch. */
typedef struct {
    float *Q;      /* [G][dp], scaled */
    float *S;      /* [G][BK] */
    float *K;      /* [BK][dp], tiled path */
    float *L;      /* [G][chunk_len] the chunk's logits, canonical (raw from a scorer) */
    uint32_t *lo, *hi;   /* [G] their range, as ordered bits */
    uint16_t *bins;      /* [chunk_len] histogram bin of each logit of one head */
    uint32_t *hist;      /* [HIST_BINS] */
    ent *cand;     /* [max(chunk_len, chunks * slot)]: a bin's keys, then phase 2's merge */
    ent *tmp;      /* [k_mid], the radix sort's other buffer */
    const void **krow; /* [2][BK] row pointers: this tile, the next (prefetch) */
    ent *sample;   /* [SAMPLE_MAX] */
} scratch;

/* Ordered bits of v made canonical (NaN -> -inf, -0 -> +0). */
static inline uint32_t canon_ord(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b = (b & 0x7fffffffu) > 0x7f800000u ? 0xff800000u : b;
    b = b == 0x80000000u ? 0u : b;
    return ord_of_bits(b);
}

/* The best k of the m logits L[0..m) (any floats, k < m) as chunk_top gives them, by a guessed
 * threshold: a jittered sample of s <= SAMPLE_MAX logits is cut at the rank where about
 * k + k/4 + 64 of the m would lie above, then one pass keeps every logit >= that threshold t
 * (a vectorised compare into flags, whose 8-flag words are mostly 0 and skipped whole) and a
 * quickselect takes the best k of the few kept. Exact whenever at least k
 * pass: a logit below t is beaten by all of them. Returns k, or -1 when the guess kept fewer
 * than k (or the sample is too small to guess from), for the histogram path to redo it.
 * cand holds m entries, sample SAMPLE_MAX. */
static int64_t chunk_top_sampled(const float *L, int64_t m, int64_t k0, int64_t k, ent *out,
                                 ent *cand, ent *sample) {
    int64_t ns = m / 8 < SAMPLE_MAX ? m / 8 : SAMPLE_MAX;
    int64_t r = (k + k / 4 + 64) * ns / m + 1; /* rank of the threshold in the sample */
    if (ns < 64 || r >= ns)
        return -1;
    /* one key at a random offset in each of ns equal strata (a fixed stride could alias with
     * periodic logits); ascending, so the hardware prefetcher follows */
    const uint64_t step = ((uint64_t)m << 32) / (uint64_t)ns; /* stratum width, 32.32 fixed */
    uint64_t x = (uint64_t)k0 * 0x9e3779b97f4a7c15ull + (uint64_t)m;
    for (int64_t i = 0; i < ns; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int64_t j = (int64_t)(((uint64_t)i * step + (x >> 40) * (step >> 24)) >> 32);
        j = j < m ? j : m - 1;
        sample[i] = ent_of(canon_ord(L[j]), k0 + j);
    }
    select_top(sample, ns, r);
    uint32_t t = (uint32_t)(sample[r - 1] >> 32);
    if (t <= ord_bits(-INFINITY))
        return -1; /* a float compare would drop NaNs (canonical -inf) that reach t */
    const float tf = float_of_ord(t);
    int64_t cnt = 0;
    uint8_t pass[256];
    for (int64_t j0 = 0; j0 < m; j0 += 256) {
        const int64_t nb = m - j0 < 256 ? m - j0 : 256;
        const float *blk = L + j0;
        for (int64_t j = 0; j < nb; j++) /* vectorised compare */
            pass[j] = blk[j] >= tf;
        for (int64_t j = nb; j < 256; j++)
            pass[j] = 0;
        for (int64_t w = 0; w < nb; w += 8) { /* 8 flags at a time; few words hold one */
            uint64_t word;
            memcpy(&word, pass + w, sizeof word);
            if (!word)
                continue;
            for (int64_t j = w; j < w + 8; j++) { /* branch-free: cand[cnt] is scratch until kept */
                cand[cnt] = ent_of(canon_ord(blk[j]), k0 + j0 + j);
                cnt += pass[j];
            }
        }
    }
    if (cnt < k)
        return -1;
    if (cnt > k)
        select_top(cand, cnt, k);
    memcpy(out, cand, (size_t)k * sizeof *out);
    return k;
}

/* The best k of the m canonical logits L[0..m) (key k0 + j for L[j]; their range [lo, hi] was
 * taken while they were written) into out, as entries in no order; returns min(k, m).
 * Histogram selection: a vectorised pass computes each logit's bin among HIST_BINS equal-width
 * bins over the range, one counts them, one emits every key in a bin above the one that holds
 * the k-th best and gathers that bin's keys (branch-free: both stores always happen, only the
 * counts move), from which a quickselect takes the rest. Near the bulk of the logits a bin
 * holds ~m / HIST_BINS keys, and neighbouring keys rarely share a counter, so the increments
 * seldom wait on each other. */
static int64_t chunk_top(const float *L, int64_t m, int64_t k0, int64_t k, float lo, float hi,
                         ent *out, ent *cand, uint32_t *hist, uint16_t *bins) {
    if (m <= k) {
        for (int64_t j = 0; j < m; j++)
            out[j] = ent_of(ord_bits(L[j]), k0 + j);
        return m;
    }
    int64_t j;
    float inv = (float)HIST_BINS / (hi - lo);
    if (!(hi > lo) || !isfinite(lo) || !isfinite(hi) || !isfinite(inv) || inv == 0.0f) {
        /* all equal, infinities or a range too wide for bins: plain quickselect */
        for (j = 0; j < m; j++)
            cand[j] = ent_of(ord_bits(L[j]), k0 + j);
        select_top(cand, m, k);
        memcpy(out, cand, (size_t)k * sizeof *out);
        return k;
    }
    /* bins in a loop of their own, which vectorises: (v - lo) inv rounds monotonically in v, so
     * the bins are ordered like the logits; the top one is clamped */
    for (j = 0; j < m; j++) {
        int32_t b = (int32_t)((L[j] - lo) * inv);
        bins[j] = (uint16_t)(b < HIST_BINS - 1 ? b : HIST_BINS - 1);
    }
    memset(hist, 0, HIST_BINS * sizeof *hist);
    for (j = 0; j < m; j++)
        hist[bins[j]]++;
    int64_t above = 0, cut = HIST_BINS - 1;
    for (; cut > 0 && above + hist[cut] < k; cut--)
        above += hist[cut];
    int64_t o = 0, nc = 0;
    for (j = 0; j < m; j++) {
        int64_t b = bins[j];
        ent e = ent_of(ord_bits(L[j]), k0 + j);
        out[o] = e; /* o <= above < k: in range even when not kept */
        o += b > cut;
        cand[nc] = e; /* nc <= hist[cut] <= m */
        nc += b == cut;
    }
    int64_t need = k - o; /* 1 <= need <= nc */
    if (nc > need)
        select_top(cand, nc, need);
    memcpy(out + o, cand, (size_t)need * sizeof *out);
    return k;
}

/* dst[0..m) = src made canonical (NaN -> -inf, -0 -> +0) and their range widened into *lo, *hi
 * (ordered bits). In integers: float compares would keep the loop from vectorising. */
static void canon_range(float *dst, const float *src, int64_t m, uint32_t *lo_io,
                        uint32_t *hi_io) {
    uint32_t lo = *lo_io, hi = *hi_io;
    for (int64_t j = 0; j < m; j++) {
        uint32_t b;
        memcpy(&b, &src[j], sizeof b);
        b = (b & 0x7fffffffu) > 0x7f800000u ? 0xff800000u : b;
        b = b == 0x80000000u ? 0u : b;
        memcpy(&dst[j], &b, sizeof b);
        uint32_t o = ord_of_bits(b);
        lo = o < lo ? o : lo;
        hi = o > hi ? o : hi;
    }
    *lo_io = lo;
    *hi_io = hi;
}

/* Logits of keys [j0, min(j0 + 64, end)) for the G heads of the item into its rows of L
 * (key j at column j - k0), canonical: NaN -> -inf, -0 -> +0, and their running range into
 * s->lo, s->hi. The next tile of the same stream is handed to the kernel to prefetch. */
static void score_tile(const plan *p, scratch *s, const char *kh, int64_t ks, int64_t k0,
                       int64_t j0, int64_t end) {
    const cpu_attn_kernels *kern = p->kern;
    const ela_decode_select_args *a = p->a;
    const int64_t G = p->G, dp = p->dp, d = a->d;
    const int64_t nk = end - j0 < CPU_ATTN_BK ? end - j0 : CPU_ATTN_BK;
    if (p->rows_path) {
        const void **cur = s->krow, **next = s->krow + CPU_ATTN_BK;
        int64_t nn = end - (j0 + nk) < CPU_ATTN_BK ? end - (j0 + nk) : CPU_ATTN_BK;
        for (int64_t j = 0; j < nk; j++)
            cur[j] = kh + (j0 + j) * ks;
        for (int64_t j = 0; j < nn; j++)
            next[j] = kh + (j0 + nk + j) * ks;
        kern->qk_rows(s->S, s->Q, G, dp, (const void *const *)cur, nk, d, a->k->dtype,
                      (const void *const *)next, nn);
    } else {
        kern->load_rows(s->K, dp, kh + j0 * ks, ks, a->k->dtype, nk, d);
        kern->qk(s->S, s->Q, s->K, G, nk, dp);
    }
    for (int64_t r = 0; r < G; r++)
        canon_range(s->L + r * p->chunk_len + (j0 - k0), s->S + r * CPU_ATTN_BK, nk, &s->lo[r],
                    &s->hi[r]);
}

/* Head h's best k_mid of the m canonical logits L (key k0 + j at L[j], range [lo, hi] as
 * ordered bits) into its slot of chunk c in p->buf: by a guessed threshold, else histogram. */
static void keep_best(const plan *p, scratch *s, int64_t h, int64_t c, const float *L, int64_t m,
                      int64_t k0, uint32_t lo, uint32_t hi) {
    ent *out = p->buf + (h * p->chunks + c) * p->slot;
    int64_t got = m > p->k_mid ? chunk_top_sampled(L, m, k0, p->k_mid, out, s->cand, s->sample)
                               : -1;
    if (got < 0)
        got = chunk_top(L, m, k0, p->k_mid, float_of_ord(lo), float_of_ord(hi), out, s->cand,
                        s->hist, s->bins);
    p->cnt[h * p->chunks + c] = got;
}

/* Phase 1 item: KV head g, chunk c: the chunk's logits for the G heads, then each head's best
 * k_mid of them into its slot of p->buf. */
static void score_chunk(const plan *p, scratch *s, int g, int64_t c) {
    const ela_decode_select_args *a = p->a;
    const cpu_attn_kernels *kern = p->kern;
    const int64_t G = p->G, dp = p->dp, d = a->d;
    const int64_t k0 = p->lo + c * p->chunk_len;
    const int64_t k1 = k0 + p->chunk_len < p->hi ? k0 + p->chunk_len : p->hi;
    const char *qd = cpu_tensor_data(a->q), *kh = cpu_tensor_data(a->k) + g * a->k->strides[0];
    const int64_t ks = a->k->strides[1];

    kern->load_rows(s->Q, dp, qd + (int64_t)g * G * a->q->strides[1], a->q->strides[1],
                    a->q->dtype, G, d);
    for (int64_t e = 0; e < G * dp; e++)
        s->Q[e] *= a->scale;
    for (int64_t r = 0; r < G; r++) {
        s->lo[r] = UINT32_MAX;
        s->hi[r] = 0;
    }

    /* Two streams, the chunk's halves, a tile of each in turn: one sequential stream per core
     * is latency-bound (measured ~6 GB/s per core, ~60% of what dense decode's K and V streams
     * reach); two keep twice the misses in flight. */
    const int64_t km = k0 + round_up((k1 - k0 + 1) / 2, CPU_ATTN_BK);
    const int64_t ends[2] = {km < k1 ? km : k1, k1};
    for (int64_t t = 0; k0 + t * CPU_ATTN_BK < ends[0]; t++)
        for (int half = 0; half < 2; half++) {
            const int64_t j0 = (half ? ends[0] : k0) + t * CPU_ATTN_BK, end = ends[half];
            if (j0 >= end)
                continue;
            score_tile(p, s, kh, ks, k0, j0, end);
        }
    for (int64_t r = 0; r < G; r++)
        keep_best(p, s, (int64_t)g * G + r, c, s->L + r * p->chunk_len, k1 - k0, k0, s->lo[r],
                  s->hi[r]);
}

/* Phase 1 item with a caller's scorer: KV head g, keys [c chunk_len, ...) of [0, n), which the
 * callback attends to and scores into s->L; then each head's best of the chunk's candidates.
 * The guessed threshold reads the raw logits; only when it fails are they made canonical (in
 * place) for the histogram. */
static void scored_chunk(const plan *p, scratch *s, int tid, int g, int64_t c) {
    const int64_t k0 = c * p->chunk_len;
    const int64_t k1 = k0 + p->chunk_len < p->a->n ? k0 + p->chunk_len : p->a->n;
    p->scorer->score(p->scorer->user, tid, g, c, k0, k1, s->L, p->chunk_len);
    const int64_t c0 = k0 > p->lo ? k0 : p->lo, c1 = k1 < p->hi ? k1 : p->hi;
    for (int64_t r = 0; r < p->G; r++) {
        const int64_t h = (int64_t)g * p->G + r;
        if (c1 <= c0) { /* no candidate in this chunk (sinks or recent keys only) */
            p->cnt[h * p->chunks + c] = 0;
            continue;
        }
        float *L = s->L + r * p->chunk_len + (c0 - k0);
        ent *out = p->buf + (h * p->chunks + c) * p->slot;
        int64_t got = c1 - c0 > p->k_mid
                          ? chunk_top_sampled(L, c1 - c0, c0, p->k_mid, out, s->cand, s->sample)
                          : -1;
        if (got < 0) {
            uint32_t lo = UINT32_MAX, hi = 0;
            canon_range(L, L, c1 - c0, &lo, &hi);
            got = chunk_top(L, c1 - c0, c0, p->k_mid, float_of_ord(lo), float_of_ord(hi), out,
                            s->cand, s->hist, s->bins);
        }
        p->cnt[h * p->chunks + c] = got;
    }
}

/* Phase 2 item: query head h's ranking, top k_mid sorted best first, into p->top. */
static void rank_head(const plan *p, scratch *s, int64_t h) {
    int64_t m = 0;
    for (int64_t c = 0; c < p->chunks; c++) {
        int64_t n_in = p->cnt[h * p->chunks + c];
        memcpy(s->cand + m, p->buf + (h * p->chunks + c) * p->slot, (size_t)n_in * sizeof(ent));
        m += n_in;
    }
    if (m > p->k_mid)
        select_top(s->cand, m, p->k_mid);
    sort_desc(s->cand, s->tmp, p->k_mid);
    int32_t *top = p->top + h * p->k_mid;
    for (int64_t r = 0; r < p->k_mid; r++)
        top[r] = ent_index(s->cand[r]);
}

/* The budget split of ela.h for K_b = budget < n: k_mid, the recent tokens and the sinks. */
static void split_budget(int64_t kb, const ela_decode_select_params *dp, int64_t *k_mid,
                         int64_t *n_rec, int64_t *sinks) {
    *k_mid = split_mid(kb, dp->recent);
    *n_rec = kb - *k_mid;
    *sinks = dp->sinks;
    if (*n_rec < *sinks)
        *sinks = 0;
    *n_rec -= *sinks;
}

int cpu_decode_select_needs_logits(int64_t n, const ela_decode_select_params *dp) {
    if (dp->budget >= n)
        return 0;
    int64_t k_mid, n_rec, sinks;
    split_budget(dp->budget, dp, &k_mid, &n_rec, &sinks);
    return k_mid > 0;
}

/* The whole selection; scorer NULL: phase 1 scores K itself. */
static ela_status select_run(const cpu_backend *cpu, const ela_decode_select_args *a,
                             const cpu_select_scorer *scorer) {
    const int64_t n = a->n;
    int32_t *out = (int32_t *)(void *)cpu_tensor_data(a->idx);
    const int64_t os = a->idx->strides[0] / (int64_t)sizeof(int32_t);
    if (a->p.budget >= n) { /* every token */
        for (int64_t j = 0; j < n; j++)
            out[j * os] = (int32_t)j;
        *a->count = n;
        return ELA_OK;
    }
    const int64_t kb = a->p.budget;
    int64_t k_mid, n_rec, sinks;
    split_budget(kb, &a->p, &k_mid, &n_rec, &sinks);
    /* Candidates [sinks, n - n_rec) hold n - kb + k_mid >= k_mid + 1 keys since kb < n. */
    for (int64_t j = 0; j < sinks; j++)
        out[j * os] = (int32_t)j;
    for (int64_t j = 0; j < n_rec; j++)
        out[(sinks + k_mid + j) * os] = (int32_t)(n - n_rec + j);
    *a->count = kb;
    if (k_mid == 0)
        return ELA_OK;

    plan p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.kern = cpu->attn;
    p.scorer = scorer;
    p.G = a->hq / a->hkv;
    p.dp = round_up(a->d, CPU_ATTN_DPAD);
    p.rows_path = p.G <= CPU_ATTN_ROWS_FAST && a->d % CPU_ATTN_DPAD == 0 && p.kern->qk_rows;
    p.lo = sinks;
    p.hi = n - n_rec;
    p.k_mid = k_mid;
    const int64_t ncand = p.hi - p.lo;
    /* Chunks: ~4 items per thread, none shorter than MIN_CHUNK_KEYS (each adds up to k_mid
     * entries to its heads' merge) nor longer than the per-thread logit buffer allows. A
     * scorer brings its own chunks of [0, n). */
    int threads = cpu->threads;
    const int64_t hq = a->hq, G = p.G, dp = p.dp;
    if (scorer) {
        p.chunk_len = scorer->chunk_keys;
        p.chunks = (n + p.chunk_len - 1) / p.chunk_len;
    } else {
        int64_t max_len = round_up(CHUNK_FLOATS / G > MIN_CHUNK_KEYS ? CHUNK_FLOATS / G
                                                                      : MIN_CHUNK_KEYS, CPU_ATTN_BK);
        int64_t chunks = (4 * (int64_t)threads + a->hkv - 1) / a->hkv;
        if (chunks > ncand / MIN_CHUNK_KEYS)
            chunks = ncand / MIN_CHUNK_KEYS;
        if (chunks < (ncand + max_len - 1) / max_len)
            chunks = (ncand + max_len - 1) / max_len;
        if (chunks < 1)
            chunks = 1;
        p.chunk_len = round_up((ncand + chunks - 1) / chunks, CPU_ATTN_BK);
        p.chunks = (ncand + p.chunk_len - 1) / p.chunk_len;
    }
    p.slot = k_mid < p.chunk_len ? k_mid : p.chunk_len;
    int64_t n_items = (int64_t)a->hkv * p.chunks;
    int64_t most_items = n_items > hq ? n_items : hq;
    if (most_items < threads)
        threads = (int)most_items;

    /* One allocation: chunk results, counts, rankings, bitmap, then per-thread scratch (the
     * scoring buffers Q, S, K only when we score K). */
    int64_t n_cand = p.chunk_len > p.chunks * p.slot ? p.chunk_len : p.chunks * p.slot;
    const int64_t score_floats =
        scorer ? 0 : G * dp + G * CPU_ATTN_BK + (p.rows_path ? 0 : CPU_ATTN_BK * dp);
    size_t sz_buf = (size_t)(hq * p.chunks * p.slot) * sizeof(ent);
    size_t sz_cnt = (size_t)(hq * p.chunks) * sizeof(int64_t);
    size_t sz_top = (size_t)(hq * k_mid) * sizeof(int32_t);
    size_t sz_seen = (size_t)((n + 63) / 64) * sizeof(uint64_t);
    size_t sz_front = (size_t)(score_floats + G * p.chunk_len + HIST_BINS + 2 * G) *
                          sizeof(float) +
                      (size_t)p.chunk_len * sizeof(uint16_t);
    size_t sz_thread = (size_t)round_up((int64_t)sz_front, 64) +
                       (size_t)(n_cand + k_mid + SAMPLE_MAX) * sizeof(ent) +
                       2 * CPU_ATTN_BK * sizeof(void *);
    size_t off_cnt = (size_t)round_up((int64_t)sz_buf, 64);
    size_t off_top = off_cnt + (size_t)round_up((int64_t)sz_cnt, 64);
    size_t off_seen = off_top + (size_t)round_up((int64_t)sz_top, 64);
    size_t off_thr = off_seen + (size_t)round_up((int64_t)sz_seen, 64);
    size_t per_thread = (size_t)round_up((int64_t)sz_thread, 64);
    char *mem = ela_aligned_alloc(off_thr + per_thread * (size_t)threads);
    if (!mem)
        return ela_fail(ELA_ERR_OOM, "cpu: decode_select: out of memory for %lld chunk results "
                        "and %d thread buffers", (long long)(hq * p.chunks * p.slot), threads);
    p.buf = (ent *)(void *)mem;
    p.cnt = (int64_t *)(void *)(mem + off_cnt);
    p.top = (int32_t *)(void *)(mem + off_top);
    uint64_t *seen = (uint64_t *)(void *)(mem + off_seen);
    memset(seen, 0, sz_seen);

#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        char *base = mem + off_thr + per_thread * (size_t)tid;
        scratch s;
        s.Q = (float *)(void *)base;
        s.S = s.Q + (scorer ? 0 : G * dp);
        s.K = s.S + (scorer ? 0 : G * CPU_ATTN_BK);
        s.L = s.Q + score_floats;
        s.hist = (uint32_t *)(void *)(s.L + G * p.chunk_len);
        s.lo = s.hist + HIST_BINS;
        s.hi = s.lo + G;
        s.bins = (uint16_t *)(void *)(s.hi + G);
        s.cand = (ent *)(void *)(base + round_up((int64_t)sz_front, 64));
        s.tmp = s.cand + n_cand;
        s.sample = s.tmp + k_mid;
        s.krow = (const void **)(void *)(s.sample + SAMPLE_MAX);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < n_items; item++) {
            if (scorer)
                scored_chunk(&p, &s, tid, (int)(item / p.chunks), item % p.chunks);
            else
                score_chunk(&p, &s, (int)(item / p.chunks), item % p.chunks);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t h = 0; h < hq; h++)
            rank_head(&p, &s, h);
    }

    /* Rank-major union: rank r outer, head h inner, first k_mid distinct tokens. */
    int64_t u = 0;
    for (int64_t r = 0; r < k_mid && u < k_mid; r++)
        for (int64_t h = 0; h < hq && u < k_mid; h++) {
            int32_t t = p.top[h * k_mid + r];
            uint64_t bit = 1ull << (t & 63);
            if (seen[t >> 6] & bit)
                continue;
            seen[t >> 6] |= bit;
            out[(sinks + u) * os] = t;
            u++;
        }
    ela_aligned_free(mem);
    return ELA_OK;
}

ela_status cpu_decode_select(void *ctx, const ela_decode_select_args *a) {
    return select_run(ctx, a, NULL);
}

ela_status cpu_decode_select_scored(const cpu_backend *cpu, const ela_decode_select_args *a,
                                    const cpu_select_scorer *scorer) {
    return select_run(cpu, a, scorer);
}

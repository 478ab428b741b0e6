/* Structured inputs for `ela bench sparse`: attention that sparse methods can find, unlike
 * uniform noise, where every key matters about equally. Each token carries
 *  - locality features: pairs (A cos(w p), A sin(w p)) at F frequencies, shared by q and k,
 *    so q_p . k_j has a bonus A^2 sum cos(w (p - j)) that peaks near the diagonal;
 *  - a needle direction per KV head: every query has it, a few planted keys have it strongly;
 *  - an attention sink: keys 0-3 share a direction every query has;
 *  - small Gaussian noise everywhere.
 * With d = 128 (scale 1/sqrt(128)) the logits reach ~11 near the diagonal, ~8.5 on a needle and
 * ~5.7 on a sink against ~0 +- 0.25 elsewhere: peaked rows, as in trained models, so that a
 * sparse method that finds the right keys loses little.
 * V is uniform in [-1, 1). The same seed gives the same inputs on every backend. */
#include <math.h>
#include <stdlib.h>

#include "bench_sparse.h"

#define FEATURES 8        /* locality frequency pairs */
#define LOCAL_AMP 4.0f    /* A: up to A^2 F = 128 of q.k near the diagonal */
#define NEEDLE_Q 8.0f     /* query component on its head's needle direction */
#define NEEDLE_K 12.0f    /* planted key component: q.k += 96 */
#define NEEDLES 8         /* planted keys per KV head */
#define SINK_AMP 8.0f     /* q.k += 64 for the first 4 keys */
#define NOISE 0.5f

typedef struct {
    uint64_t s;
} rng64;

static uint64_t next_u64(rng64 *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(rng64 *r) { return (float)((next_u64(r) >> 40) * (1.0 / 16777216.0)); }

static float gauss(rng64 *r) {
    float u = uniform(r) + 1e-7f, v = uniform(r);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* Frequencies log-spaced from one turn per 8 tokens to one per 8192. */
static float freq(int f) { return 6.2831853f / (8.0f * powf(1024.0f, (float)f / (FEATURES - 1))); }

/* Dims: [0, 2F) locality, 2F sink, 2F + 1 + g needle of KV head g (mod the rest), noise. */
static void fill_row(float *x, int64_t d, int64_t pos, int g, int is_query, int needle,
                     rng64 *r) {
    for (int64_t c = 0; c < d; c++)
        x[c] = NOISE * gauss(r);
    int64_t room = d - 2 * FEATURES - 1;
    for (int f = 0; f < FEATURES && 2 * f + 1 < d; f++) {
        x[2 * f] += LOCAL_AMP * cosf(freq(f) * (float)pos);
        x[2 * f + 1] += LOCAL_AMP * sinf(freq(f) * (float)pos);
    }
    if (room <= 0)
        return;
    x[2 * FEATURES] += is_query || pos < 4 ? SINK_AMP : 0.0f;
    float *nd = &x[2 * FEATURES + 1 + g % room];
    *nd += is_query ? NEEDLE_Q : needle ? NEEDLE_K : 0.0f;
}

static int is_needle(int64_t j, int g, int64_t n, uint64_t seed) {
    rng64 r = {seed ^ (0x51ed27u * (uint64_t)(g + 1))};
    for (int i = 0; i < NEEDLES; i++)
        if ((int64_t)(next_u64(&r) % (uint64_t)n) == j)
            return 1;
    return 0;
}

/* Writes rows [r0, r0 + rows) of a packed tensor from host through a view. */
static ela_status write_rows(ela_tensor *t, int64_t r0, int64_t rows, const float *host) {
    int nd = ela_tensor_n_dims(t);
    int64_t ext[4], row_elems = 1;
    for (int i = 0; i < nd; i++)
        ext[i] = ela_tensor_extent(t, i);
    for (int i = 1; i < nd; i++)
        row_elems *= ext[i];
    ext[0] = rows;
    ela_tensor *view = NULL;
    int64_t off = r0 * ela_tensor_stride(t, 0);
    ela_status st = ela_tensor_view(t, nd, ext, NULL, off, &view);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(view, host, rows * row_elems);
    ela_tensor_free(view);
    return st;
}

#define CHUNK_ROWS 256

ela_status bench_sparse_fill(ela_tensor *q, ela_tensor *k, ela_tensor *v, int64_t q_pos0,
                             uint64_t seed) {
    int64_t L = ela_tensor_extent(q, 0), hq = ela_tensor_extent(q, 1), d = ela_tensor_extent(q, 2);
    int64_t hkv = ela_tensor_extent(k, 0), n = ela_tensor_extent(k, 1);
    int64_t G = hq / hkv;
    float *buf = malloc((size_t)(CHUNK_ROWS * hq * d) * sizeof(float));
    if (!buf)
        return ELA_ERR_OOM;
    ela_status st = ELA_OK;
    for (int64_t i0 = 0; i0 < L && st == ELA_OK; i0 += CHUNK_ROWS) {
        int64_t rows = L - i0 < CHUNK_ROWS ? L - i0 : CHUNK_ROWS;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t h = 0; h < hq; h++) {
                rng64 r = {seed * 31 + (uint64_t)((i0 + i) * hq + h)};
                fill_row(buf + (i * hq + h) * d, d, q_pos0 + i0 + i, (int)(h / G), 1, 0, &r);
            }
        st = write_rows(q, i0, rows, buf);
    }
    /* K and V: one KV head at a time, through [1, rows, d] views of the head */
    for (int64_t g = 0; g < hkv && st == ELA_OK; g++) {
        for (int64_t j0 = 0; j0 < n && st == ELA_OK; j0 += CHUNK_ROWS) {
            int64_t rows = n - j0 < CHUNK_ROWS ? n - j0 : CHUNK_ROWS;
            int64_t ext[3] = {1, rows, d};
            int64_t off = g * ela_tensor_stride(k, 0) + j0 * ela_tensor_stride(k, 1);
            for (int64_t j = 0; j < rows; j++) {
                rng64 r = {~seed * 17 + (uint64_t)(g * n + j0 + j)};
                fill_row(buf + j * d, d, j0 + j, (int)g, 0, is_needle(j0 + j, (int)g, n, seed), &r);
            }
            ela_tensor *view = NULL;
            st = ela_tensor_view(k, 3, ext, (const int64_t[3]){ela_tensor_stride(k, 0),
                                 ela_tensor_stride(k, 1), ela_tensor_stride(k, 2)}, off, &view);
            if (st == ELA_OK)
                st = ela_tensor_write_f32(view, buf, rows * d);
            ela_tensor_free(view);
            for (int64_t j = 0; j < rows * d; j++) {
                rng64 r = {seed + 7 * (uint64_t)((g * n + j0) * d + j)};
                buf[j] = 2.0f * uniform(&r) - 1.0f;
            }
            off = g * ela_tensor_stride(v, 0) + j0 * ela_tensor_stride(v, 1);
            if (st == ELA_OK)
                st = ela_tensor_view(v, 3, ext, (const int64_t[3]){ela_tensor_stride(v, 0),
                                     ela_tensor_stride(v, 1), ela_tensor_stride(v, 2)}, off, &view);
            if (st == ELA_OK)
                st = ela_tensor_write_f32(view, buf, rows * d);
            ela_tensor_free(view);
        }
    }
    free(buf);
    return st;
}

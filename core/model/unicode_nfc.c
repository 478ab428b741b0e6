/* Unicode NFC normalization for the tokenizer (DESIGN.md 5; Qwen's tokenizer.json normalizer).
 * UAX #15: a quick check first (most text is already NFC: then nothing is copied); otherwise
 * canonical decomposition (tables of unicode_tables.c, Hangul algorithmic), canonical
 * ordering of combining marks, canonical composition. Invalid UTF-8 bytes stay as they are
 * (tokenizer_internal.h). */
#include <string.h>

#include "../alloc.h"
#include "../error.h"
#include "tokenizer_internal.h"
#include "unicode_tables.h"

#define S_BASE 0xAC00u
#define L_BASE 0x1100u
#define V_BASE 0x1161u
#define T_BASE 0x11A7u
#define L_COUNT 19u
#define V_COUNT 21u
#define T_COUNT 28u
#define N_COUNT (V_COUNT * T_COUNT)
#define S_COUNT (L_COUNT * N_COUNT)

static int ccc(uint32_t cp) {
    if (cp < 0x300 || cp >= TOK_BAD_BYTE)
        return 0;
    return unicode_range_lookup(unicode_ccc_ranges, unicode_ccc_ranges_count, cp);
}

static int nfc_qc(uint32_t cp) {
    if (cp < 0x300 || cp >= TOK_BAD_BYTE)
        return 0;
    return unicode_range_lookup(unicode_nfc_qc_ranges, unicode_nfc_qc_ranges_count, cp);
}

/* Index of cp in the decomposition table, or -1. */
static int decomp_index(uint32_t cp) {
    int lo = 0, hi = unicode_decomp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (cp < unicode_decomp[mid][0])
            hi = mid - 1;
        else if (cp > unicode_decomp[mid][0])
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

/* Primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    int lo = 0, hi = unicode_comp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        const uint32_t *e = unicode_comp[mid];
        if (a < e[0] || (a == e[0] && b < e[1]))
            hi = mid - 1;
        else if (a > e[0] || b > e[1])
            lo = mid + 1;
        else
            return e[2];
    }
    return 0;
}

/* Append the full canonical decomposition of cp to out (room for unicode_decomp_max). */
static size_t decompose(uint32_t cp, uint32_t *out) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE, t = s % T_COUNT;
        out[0] = L_BASE + s / N_COUNT;
        out[1] = V_BASE + (s % N_COUNT) / T_COUNT;
        if (t == 0)
            return 2;
        out[2] = T_BASE + t;
        return 3;
    }
    int k = cp < 0xC0 || cp >= TOK_BAD_BYTE ? -1 : decomp_index(cp);
    if (k < 0) {
        out[0] = cp;
        return 1;
    }
    size_t m = decompose(unicode_decomp[k][1], out);
    if (unicode_decomp[k][2])
        m += decompose(unicode_decomp[k][2], out + m);
    return m;
}

static size_t utf8_encode(uint32_t cp, uint8_t *o) {
    if (cp >= TOK_BAD_BYTE) {
        o[0] = (uint8_t)(cp - TOK_BAD_BYTE);
        return 1;
    }
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* UAX #15 quick check: 1 when s is certainly NFC already. */
static int quick_check_yes(const uint8_t *s, size_t n) {
    int last = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            last = 0;
            i++;
            continue;
        }
        uint32_t cp;
        i += tok_utf8_decode(s, n, i, &cp);
        int c = ccc(cp);
        if ((last > c && c != 0) || nfc_qc(cp) != 0)
            return 0;
        last = c;
    }
    return 1;
}

/* A text can be cut before a code point of class 0 that never composes with what precedes it
 * (NFC_QC Yes): NFC of the pieces is then NFC of the whole. */
static int boundary_before(uint32_t cp) { return ccc(cp) == 0 && nfc_qc(cp) == 0; }

/* Canonical ordering of a run of marks (all classes nonzero): a stable sort by class,
 * insertion for short runs, counting sort (classes are < 256) for long ones so that a
 * pathological run of marks costs O(n). */
static void order_marks(uint32_t *c, size_t n, uint32_t *tmp) {
    if (n <= 32) {
        for (size_t j = 1; j < n; j++) {
            uint32_t v = c[j];
            int cv = ccc(v);
            size_t k = j;
            while (k > 0 && ccc(c[k - 1]) > cv) {
                c[k] = c[k - 1];
                k--;
            }
            c[k] = v;
        }
        return;
    }
    size_t start[257] = {0};
    for (size_t j = 0; j < n; j++)
        start[ccc(c[j]) + 1]++;
    for (int k = 0; k < 256; k++)
        start[k + 1] += start[k];
    for (size_t j = 0; j < n; j++)
        tmp[start[ccc(c[j])]++] = c[j];
    memcpy(c, tmp, n * sizeof(uint32_t));
}

/* NFC of the code points in[0, n_in) into cps (room for n_in * unicode_decomp_max, and as
 * much in tmp); returns how many it holds. */
static size_t normalize_chunk(uint32_t *cps, const uint32_t *in, size_t n_in, uint32_t *tmp) {
    size_t m = 0;
    for (size_t i = 0; i < n_in; i++)
        m += decompose(in[i], cps + m);
    for (size_t a = 0; a < m;) {
        if (ccc(cps[a]) == 0) {
            a++;
            continue;
        }
        size_t b = a + 1;
        while (b < m && ccc(cps[b]) != 0)
            b++;
        order_marks(cps + a, b - a, tmp);
        a = b;
    }
    /* Canonical composition (the UAX #15 sample algorithm). */
    size_t w = 0, starter = SIZE_MAX;
    int last_class = 0;
    for (size_t j = 0; j < m; j++) {
        uint32_t cp = cps[j];
        int c = ccc(cp);
        if (starter != SIZE_MAX && (last_class < c || last_class == 0)) {
            uint32_t comp = compose(cps[starter], cp);
            if (comp) {
                cps[starter] = comp;
                continue;
            }
        }
        /* last_class 0 means the starter is the code point just written (nothing blocks);
         * marks before the first starter compose with nothing (starter == SIZE_MAX). */
        if (c == 0)
            starter = w;
        last_class = c;
        cps[w++] = cp;
    }
    return w;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = ela_realloc(*p, c, elem);
    if (!q)
        return 0;
    *p = q;
    *cap = c;
    return 1;
}

ela_status tok_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = n;
    if (quick_check_yes(s, n))
        return ELA_OK;
    /* Chunk by chunk between boundaries: chunks already in NFC are copied, the others go
     * through decomposition and composition in a scratch sized to the chunk. */
    uint8_t *o = NULL;
    uint32_t *cps = NULL, *in = NULL, *tmp = NULL;
    size_t o_cap = 0, cps_cap = 0, in_cap = 0, tmp_cap = 0, w = 0;
    if (!grow((void **)&o, &o_cap, n + n / 4 + 16, 1))
        goto oom;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t j = i + tok_utf8_decode(s, n, i, &cp), count = 1;
        if (cp < 0x80 && (j == n || s[j] < 0x80)) {
            if (w == o_cap && !grow((void **)&o, &o_cap, w + 1, 1))
                goto oom;
            o[w++] = (uint8_t)cp; /* ASCII followed by ASCII: a chunk of its own */
            i = j;
            continue;
        }
        while (j < n) {
            size_t l = tok_utf8_decode(s, n, j, &cp);
            if (boundary_before(cp))
                break;
            j += l;
            count++;
        }
        if (quick_check_yes(s + i, j - i)) {
            if (!grow((void **)&o, &o_cap, w + (j - i), 1))
                goto oom;
            memcpy(o + w, s + i, j - i);
            w += j - i;
            i = j;
            continue;
        }
        size_t room = count * (size_t)unicode_decomp_max;
        if (!grow((void **)&in, &in_cap, count, sizeof(uint32_t)) ||
            !grow((void **)&cps, &cps_cap, room, sizeof(uint32_t)) ||
            !grow((void **)&tmp, &tmp_cap, room, sizeof(uint32_t)))
            goto oom;
        for (size_t k = 0; i < j; k++)
            i += tok_utf8_decode(s, n, i, &in[k]);
        size_t m = normalize_chunk(cps, in, count, tmp);
        if (!grow((void **)&o, &o_cap, w + 4 * m, 1))
            goto oom;
        for (size_t k = 0; k < m; k++)
            w += utf8_encode(cps[k], o + w);
    }
    ela_free(tmp);
    ela_free(in);
    ela_free(cps);
    *out = o;
    *out_len = w;
    return ELA_OK;
oom:
    ela_free(tmp);
    ela_free(in);
    ela_free(cps);
    ela_free(o);
    return ela_fail(ELA_ERR_OOM, "tokenizer: out of memory normalizing %zu bytes to NFC", n);
}

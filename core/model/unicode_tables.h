/* Unicode tables of the tokenizer (DESIGN.md 5), generated into unicode_tables.c by
 * tools/gen_unicode_tables.py: classes for the split regexes (tokenizer_pretok.c) and the
 * NFC data (unicode_nfc.c). Range tables are sorted {lo, hi << 8 | value} pairs. */
#ifndef ELA_MODEL_UNICODE_TABLES_H
#define ELA_MODEL_UNICODE_TABLES_H

#include <stdint.h>

enum { UNICODE_OTHER = 0, UNICODE_LETTER = 1, UNICODE_NUMBER = 2, UNICODE_SPACE = 3 };

extern const char unicode_tables_version[];
extern const int unicode_decomp_max; /* longest full canonical decomposition, code points */

extern const uint32_t unicode_class_ranges[][2];
extern const int unicode_class_ranges_count;
extern const uint32_t unicode_ccc_ranges[][2];
extern const int unicode_ccc_ranges_count;
extern const uint32_t unicode_nfc_qc_ranges[][2]; /* 1 No, 2 Maybe */
extern const int unicode_nfc_qc_ranges_count;
extern const uint32_t unicode_decomp[][3];        /* {cp, first, second or 0}, sorted by cp */
extern const int unicode_decomp_count;
extern const uint32_t unicode_comp[][3];          /* {first, second, composite}, sorted */
extern const int unicode_comp_count;

/* The value of cp in a range table, 0 when no range holds it (binary search). */
static inline int unicode_range_lookup(const uint32_t (*t)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (cp < t[mid][0])
            hi = mid - 1;
        else if (cp > (t[mid][1] >> 8))
            lo = mid + 1;
        else
            return (int)(t[mid][1] & 0xFF);
    }
    return 0;
}

#endif

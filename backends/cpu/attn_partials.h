/* Output side shared by the CPU attention drivers (attn_dense.c, attn_gather.c): normalising
 * and storing a group's rows (o, optional LSE) and merging key-split partials by log-sum-exp.
 * A group is the G query heads of one KV head times consecutive queries; row r of the group
 * is query (r / G), head (g * G + r % G); m is in the log2 domain. */
#ifndef ELA_CPU_ATTN_PARTIALS_H
#define ELA_CPU_ATTN_PARTIALS_H

#include "core/backend_iface.h"

typedef struct {
    const ela_attn_dense_args *a; /* o, lse, d */
    int64_t G, dp, R;             /* heads per group, f32 row length, rows per full group */
    int64_t splits;               /* key chunks per group */
} cpu_attn_rows;

/* Normalise rows and store O (and LSE) of queries [i0, i1) of KV head g; a row that saw no
 * key (l = 0) gets o = 0 and lse = -inf. */
void cpu_attn_store_rows(const cpu_attn_rows *p, const float *O, const float *m, const float *l,
                         int g, int64_t i0, int64_t i1);
/* Partial results of (group, split): O [R, dp], then m [R], l [R]. */
float *cpu_attn_partial_at(const cpu_attn_rows *p, float *partials, int64_t grp, int64_t split);
/* Merge the splits of one group (R rows used) into split 0's slot; splits that saw no key of
 * a row are skipped. */
void cpu_attn_merge_group(const cpu_attn_rows *p, float *partials, int64_t grp, int64_t R);

#endif

/* The per-query-head token index lists of Token Sparse Attention (idx i32 [Hq, >= n_sel]),
 * checked once for every op that reads them (attn_token_sparse, token_compress,
 * token_decompress), so backends can trust them. */
#ifndef ELA_CORE_OPS_TOKEN_INDICES_H
#define ELA_CORE_OPS_TOKEN_INDICES_H

#include "core/backend_iface.h"

/* idx is an i32 [hq, >= n_sel] tensor on be, 0 <= n_sel <= L, and each row's first n_sel
 * entries are strictly ascending (sorted, distinct) inside [0, L). Reads the rows on the host:
 * in place on host memory, else one copy (the selection's caller reads n_sel back anyway, so
 * the transfer adds no synchronisation a TSA layer did not already have). */
ela_status op_check_token_indices(const char *op, const ela_backend *be, const ela_tensor *idx,
                                  int hq, int64_t n_sel, int64_t L);

#endif

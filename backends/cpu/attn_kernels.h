/* Inner kernels of CPU dense attention (backends/cpu/attn_dense.c), one table per SIMD level.
 * Tiled path: the driver converts each 64-key tile of K and V to f32 once, then runs
 * qk -> softmax -> pv on R query rows that share the KV head. Row path (decode, few rows):
 * qk_rows / pv_rows read K and V rows in place through an array of row pointers. Every level
 * computes the same function.
 * Source dtypes: f32, f16, bf16, and q8_0 (a quantized KV cache: d a multiple of 32, a row is
 * d/32 blocks of 34 bytes, each an f16 scale and 32 int8; value = scale * int8, computed in
 * f32, which is exact: an 11-bit scale times an 8-bit integer fits the 24-bit mantissa). */
#ifndef ELA_CPU_ATTN_KERNELS_H
#define ELA_CPU_ATTN_KERNELS_H

#include <stdint.h>

#include "ela.h"

#define CPU_ATTN_BK 64   /* keys per tile; row stride of S/P */
#define CPU_ATTN_DPAD 16 /* head dim is padded to a multiple of this in f32 tiles */
#define CPU_ATTN_ROWS_FAST 8 /* the row path (qk_rows/pv_rows) is used for R up to this */

typedef struct {
    const char *name;
    /* dst[r*dp + c] = (float)src[r][c] for c < d, 0 for d <= c < dp; rows of src are
     * src_stride bytes apart and packed inside; dtype f32/f16/bf16, or q8_0 with d % 32 == 0. */
    void (*load_rows)(float *dst, int64_t dp, const void *src, int64_t src_stride, ela_dtype dtype,
                      int64_t rows, int64_t d);
    /* S[r*BK + j] = sum_{c<dp} Q[r*dp + c] * K[j*dp + c] for r < R, j < nk <= BK. */
    void (*qk)(float *S, const float *Q, const float *K, int64_t R, int64_t nk, int64_t dp);
    /* One online-softmax step in the log2 domain (Q was pre-scaled by scale*log2(e)).
     * For each row r over S[r*BK + j], j < nk (-INFINITY marks a masked key):
     *   m_new = max(m[r], max_j S);
     *   if m_new == -INFINITY: P = 0, alpha[r] = 1, m and l unchanged;
     *   else P = exp2(S - m_new), alpha[r] = exp2(m[r] - m_new), l[r] = l[r]*alpha[r] + sum P,
     *   m[r] = m_new.
     * P overwrites S; entries nk <= j < BK are set to 0. */
    void (*softmax)(float *S, float *m, float *l, float *alpha, int64_t R, int64_t nk);
    /* O[r*dp + c] = alpha[r]*O[r*dp + c] + sum_{j<nk} P[r*BK + j] * V[j*dp + c], c < dp. */
    void (*pv)(float *O, const float *P, const float *V, const float *alpha, int64_t R, int64_t nk,
               int64_t dp);

    /* Row path: for few query rows (R <= CPU_ATTN_ROWS_FAST) a key is used by too few rows to
     * pay for converting it into an f32 tile, so these read key j's row in place at krow[j] /
     * vrow[j] (d elements of dtype f32/f16/bf16/q8_0, converted in registers; q8_0 needs
     * d % 32 == 0, its row is d/32 whole blocks). Rows are pointers so
     * that the same kernels serve a contiguous tile (krow[j] = base + (j0 + j) * stride), a
     * gathered index set (DESIGN.md 4.8: base + idx[j] * stride) or a paged cache.
     * d is a multiple of CPU_ATTN_DPAD; Q and O rows are dp >= d floats apart; any R >= 1
     * (rows beyond CPU_ATTN_ROWS_FAST are done in further blocks that re-read K/V from cache).
     * pf[0..npf) (pf may be NULL, npf 0): rows the next call will read (the next tile's), of
     * the same dtype and d; prefetched into L2 while this call computes (the rows themselves
     * are never read, so they need not be valid memory).
     * NULL entries (a level without them) make the driver use the tiled path.
     * qk_rows: S[r*BK + j] = sum_{c<d} Q[r*dp + c] * krow[j][c], r < R, 1 <= nk <= BK;
     *          entries nk <= j < BK are left alone. */
    void (*qk_rows)(float *S, const float *Q, int64_t R, int64_t dp, const void *const *krow,
                    int64_t nk, int64_t d, ela_dtype dtype, const void *const *pf, int64_t npf);
    /* pv_rows: O[r*dp + c] = alpha[r]*O[r*dp + c] + sum_{j<nk} P[r*BK + j] * vrow[j][c], c < d;
     *          O[r*dp + c] for d <= c < dp is left alone, P[r*BK + j] for j >= nk not read. */
    void (*pv_rows)(float *O, const float *P, const float *alpha, int64_t R, int64_t dp,
                    const void *const *vrow, int64_t nk, int64_t d, ela_dtype dtype,
                    const void *const *pf, int64_t npf);
} cpu_attn_kernels;

const cpu_attn_kernels *cpu_attn_kernels_scalar(void);
#if defined(__x86_64__) || defined(_M_X64)
const cpu_attn_kernels *cpu_attn_kernels_avx2(void);
const cpu_attn_kernels *cpu_attn_kernels_avx512(void);
#endif
#if defined(__aarch64__)
const cpu_attn_kernels *cpu_attn_kernels_neon(void);
#endif

#endif

/* Host helpers of the CUDA attention ops (attn_dense.cu), shared by attn_blocks.cu and
 * attn_gather.cu: the kernels' arguments from validated op arguments, key-split planning and a
 * per-context occupancy cache. */
#ifndef ELA_BACKENDS_CUDA_ATTN_HOST_H
#define ELA_BACKENDS_CUDA_ATTN_HOST_H

#include "attn_dense_kernels.h"
#include "cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The kernels' arguments of one attention call, one split; causality folded into q_pos0. */
void cuda_attn_params_init(const ela_attn_dense_args *a, cuda_attn_params *p);
/* Splits of `keys` keys into pieces of a multiple of `align`: about `want`, each at least
 * `min_keys` long (ELA_CUDA_SPLITS overrides want and the minimum). Sets splits, split_keys. */
void cuda_attn_plan_splits(const cuda_ctx *ctx, cuda_attn_params *p, int64_t keys, int64_t want,
                           int64_t align, int64_t min_keys);
/* Resident blocks per SM of a kernel, asked once per context and key. */
int cuda_attn_occupancy(cuda_ctx *ctx, int key, int (*ask)(const cuda_attn_params *, int, int),
                        const cuda_attn_params *p, int d, int dtype);

#ifdef __cplusplus
}
#endif

#endif

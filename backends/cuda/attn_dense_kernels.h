/* CUDA dense attention (DESIGN.md 4.1): the arguments every attention kernel of the plugin takes
 * and the launchers attn_dense.cu chooses between. Kernels: attn_dense_mma.cu (tensor-core
 * prefill), attn_dense_decode.cu (split-K decode), attn_dense_generic.cu (any dtype, head dim
 * and stride), attn_dense_decode_mma.cu (tensor-core decode), and the LSE merge of key splits in
 * attn_dense.cu. */
#ifndef ELA_BACKENDS_CUDA_ATTN_DENSE_KERNELS_H
#define ELA_BACKENDS_CUDA_ATTN_DENSE_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Plain data, passed by value to every kernel. Strides are in bytes; dtypes are ela_dtype
 * values (0 f32, 1 f16, 2 bf16). Causality is folded into q_pos0: a non-causal call gets
 * q_pos0 = n, so every row "sits past" every key and no key is masked. */
typedef struct {
    const char *q, *k, *v; /* element [0, 0, 0] of each */
    char *o;
    char *lse;             /* NULL: not wanted */
    int64_t q_s0, q_s1, k_s0, k_s1, v_s0, v_s1, o_s0, o_s1, lse_s0, lse_s1;
    int tq, tkv, to;
    int64_t L, n, q_pos0;
    int d, hq, hkv, G;
    float scale_log2;      /* softmax scale * log2(e): scores live in the exp2 domain */
    /* Key splits: split s covers keys [s * split_keys, (s + 1) * split_keys). With splits > 1
     * the kernels write unnormalised partials, merged by cuda_attn_merge_launch:
     * part_o f32 [splits, hq, L, d], part_ml f32 [splits, hq, L, 2] (running max in the exp2
     * domain, sum of exp2). */
    int splits;
    int64_t split_keys;
    float *part_o, *part_ml;
    /* attn_blocks (attn_blocks.cu) only; NULL modes: every causal key (attn_dense). modes:
     * [hq] x {kind, sink_blocks, local_blocks, mask} (ela_head_mode's fields, ELA_HEAD_*);
     * masks: u8 [n_masks, nqb, nkb] with byte strides mask_s0, mask_s1; qb0: absolute query
     * block of row 0 (q_pos0 / 128, unclamped). items: the tensor-core kernel's work list,
     * item = query tile * hq + head, heaviest first. */
    const int *modes;
    const unsigned char *masks;
    int64_t mask_s0, mask_s1, qb0;
    int nkb;
    const int *items;
} cuda_attn_params;

/* Tensor-core prefill (attn_dense_mma.cu): q, k, v one 16-bit dtype, d 64 or 128, rows of q, k
 * and v 16-byte aligned. Query tiles of CUDA_MMA_BR rows; key splits must be multiples of
 * CUDA_MMA_BC. */
#define CUDA_MMA_BR 128
#define CUDA_MMA_BC 64
int cuda_attn_mma_fits(int d, int dtype);
cudaError_t cuda_attn_mma_launch(const cuda_attn_params *p, cudaStream_t stream);
/* Resident blocks of the kernel per SM (for split planning); 0 if unknown. */
int cuda_attn_mma_blocks_per_sm(int d, int dtype);

/* Split-K decode (attn_dense_decode.cu): L * G <= CUDA_DECODE_MAX_ROWS, d 64 or 128, k and v one
 * dtype with 16-byte aligned rows; q and o any dtype and stride. Key splits must be multiples
 * of CUDA_DECODE_SPLIT_ALIGN. */
#define CUDA_DECODE_MAX_ROWS 32
#define CUDA_DECODE_SPLIT_ALIGN 64
int cuda_attn_decode_fits(int d);
cudaError_t cuda_attn_decode_launch(const cuda_attn_params *p, cudaStream_t stream);
int cuda_attn_decode_blocks_per_sm(const cuda_attn_params *p);
/* Row groups of one KV head the decode kernel runs as separate blocks. */
int cuda_attn_decode_row_groups(const cuda_attn_params *p);

/* Tensor-core decode (attn_dense_decode_mma.cu): L * G <= CUDA_DECODE_MMA_MAX_ROWS, q, k, v one
 * 16-bit dtype, d 64 or 128, a positive scale, k and v rows 16-byte aligned; q and o any
 * stride. Key splits in multiples of CUDA_DECODE_MMA_SPLIT_ALIGN. */
#define CUDA_DECODE_MMA_MAX_ROWS 16
#define CUDA_DECODE_MMA_SPLIT_ALIGN 128
int cuda_attn_decode_mma_fits(int d, int dtype);
cudaError_t cuda_attn_decode_mma_launch(const cuda_attn_params *p, cudaStream_t stream);
int cuda_attn_decode_mma_blocks_per_sm(int d, int dtype);

/* Generic kernel (attn_dense_generic.cu): one block per (query row, head, split). Needs
 * cuda_attn_generic_smem(d) bytes of shared memory. */
size_t cuda_attn_generic_smem(int d);
cudaError_t cuda_attn_generic_launch(const cuda_attn_params *p, size_t smem, cudaStream_t stream);

/* Tensor-core attn_blocks (attn_blocks.cu, the loop of attn_mma_loop.cuh): the conditions of
 * cuda_attn_mma_fits; q_pos0 a multiple of 128 so that a query tile is one query block. Grid:
 * (items, splits). Shared memory: the dense kernel's plus a bitmap of nkb bits. */
cudaError_t cuda_attn_blocks_mma_launch(const cuda_attn_params *p, int n_items,
                                        cudaStream_t stream);
int cuda_attn_blocks_mma_blocks_per_sm(int d, int dtype, int nkb);
size_t cuda_attn_blocks_mma_smem(int d, int nkb);

/* Merge the splits' partials into o and lse (attn_dense.cu). */
cudaError_t cuda_attn_merge_launch(const cuda_attn_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

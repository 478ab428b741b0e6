/* CUDA matmul (ela.h "Model ops", y [M, N] = x [M, K] . w [N, K]^T + bias): the kernels
 * matmul.cu chooses between and their arguments.
 *   matmul_gemv.cu  decode, M <= CUDA_GEMV_MAX_M: memory-bound GEMV, every weight dtype.
 *   matmul_mma.cu   prefill with f16/bf16/q8_0 weights: tensor cores (mma.sync m16n8k16) on
 *                   activations split into two 16-bit halves (matmul_split in matmul.cu).
 *   matmul.cu       prefill with f32 weights: a tiled CUDA-core kernel; the activation split;
 *                   packing of unaligned operands; the dispatch. */
#ifndef ELA_BACKENDS_CUDA_MATMUL_KERNELS_H
#define ELA_BACKENDS_CUDA_MATMUL_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- GEMV (matmul_gemv.cu) ----------------------------------------------------------------- */
#define CUDA_GEMV_MAX_M 8
#define CUDA_GEMV_WARPS 4   /* warps per block, splitting K between them */
#define CUDA_GEMV_MAX_RW 4  /* weight rows per block */

typedef struct {
    const float *x;     /* [M, >= K] rows 16-byte aligned (xs a multiple of 4) */
    int64_t xs;         /* floats between activation rows */
    const char *w;      /* element [0, 0] of w */
    int64_t ws;         /* bytes between weight rows */
    const float *bias;  /* [N] or NULL */
    float *y;
    int64_t ys;         /* floats between output rows */
    int64_t N, K;
    int M;              /* 1 .. CUDA_GEMV_MAX_M */
    int rw;             /* weight rows per block, 1 .. CUDA_GEMV_MAX_RW */
    int wdt;            /* ela_dtype of w: f32, f16, bf16, q8_0 */
    int vec;            /* f32/f16/bf16: w rows 16-byte aligned and K a multiple of 16 bytes'
                           worth of elements (16-byte weight loads); else element loads */
} cuda_gemv_params;

cudaError_t cuda_gemv_launch(const cuda_gemv_params *p, cudaStream_t stream);

/* ---- tensor-core prefill (matmul_mma.cu) ----------------------------------------------------- */
#define CUDA_MMA_TILE_M 128
#define CUDA_MMA_TILE_N 128
#define CUDA_MMA_TILE_K 32

typedef struct {
    /* Activations split by matmul_split: x[m][k] = (hi[m][k] + lo[m][k]) * rscale[m], hi and lo
     * f16 (for f16 and q8_0 weights) or bf16 (bf16 weights), packed [M, ka], ka = K rounded up
     * to CUDA_MMA_TILE_K, zero past K. */
    const void *a_hi, *a_lo;
    const float *rscale; /* [M] */
    int64_t ka;
    const char *w;       /* f16/bf16: rows 16-byte aligned, K a multiple of 8; q8_0: any */
    const char *w_end;   /* one past the last byte of w's last row */
    int64_t ws;          /* bytes between weight rows */
    const float *bias;   /* [N] or NULL */
    float *y;
    int64_t ys;          /* floats between output rows */
    int64_t M, N, K;
    int wdt;             /* f16, bf16 or q8_0 */
} cuda_mma_params;

cudaError_t cuda_mma_launch(const cuda_mma_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

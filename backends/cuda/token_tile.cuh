/* The score tile of the CUDA Token Sparse Attention kernels (token_select.cu, attn_token_sparse.cu):
 * S = Q K^T for 64 rows against 64 keys, each row given by its own address (window queries of
 * several heads, or rows gathered by an index list), any float dtype, any head dim, f32 FMAs.
 *
 * Tiling: 256 threads as 16 x 16; thread (ty, tx) owns rows ty + 16 a and keys tx + 16 b
 * (a, b < 4) in registers. The head dim goes by in chunks of 32: every thread converts 8
 * elements of Q and 8 of K to f32 into shared memory, stored transposed ([column][row], row
 * stride 65: the stores of a warp, one row's 32 columns, hit 32 banks), then 32 x 16 FMAs.
 * Reads of the compute loop: two rows of Q per warp (broadcasts) and 16 consecutive keys.
 * Bound: about 4 FMAs per shared-memory load (a simple kernel, far below the tensor cores);
 * the same (row, key) pair always sums its products in the same order, so two passes over
 * the same tile give bit-identical scores. */
#ifndef ELA_BACKENDS_CUDA_TOKEN_TILE_CUH
#define ELA_BACKENDS_CUDA_TOKEN_TILE_CUH

#include "attn_dense_device.cuh"

#define TT_THREADS 256
#define TT_ROWS 64 /* rows and keys of a tile */
#define TT_DK 32   /* head-dim chunk */
#define TT_LD 65   /* row stride of the transposed chunks */

/* Shared memory of one tile's operands: two [TT_DK][TT_LD] f32 chunks (also used as one
 * [TT_ROWS][TT_LD] tile by the callers once the scores are in registers). */
#define TT_OPERAND_FLOATS (2 * TT_DK * TT_LD)

/* acc[a][b] = dot(row ty + 16 a, key tx + 16 b) over d; a NULL row or key reads as zeros.
 * qp, kp: shared arrays of TT_ROWS row addresses. Starts with a barrier (the caller's writes
 * of qp / kp and earlier reads of sA / sB are ordered before the loads). */
static __device__ __forceinline__ void tt_scores(float (&acc)[4][4], float *sA, float *sB,
                                                 const char *const *qp, int tq,
                                                 const char *const *kp, int tk, int d) {
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int qes = attn_dtype_size(tq), kes = attn_dtype_size(tk);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++)
            acc[a][b] = 0.0f;
    for (int c0 = 0; c0 < d; c0 += TT_DK) {
        __syncthreads();
        for (int e = tid; e < TT_ROWS * TT_DK; e += TT_THREADS) {
            const int r = e / TT_DK, c = e % TT_DK, col = c0 + c;
            const char *qr = qp[r], *kr = kp[r];
            sA[c * TT_LD + r] = qr && col < d ? attn_load(qr + (int64_t)col * qes, tq) : 0.0f;
            sB[c * TT_LD + r] = kr && col < d ? attn_load(kr + (int64_t)col * kes, tk) : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < TT_DK; kk++) {
            float x[4], y[4];
#pragma unroll
            for (int a = 0; a < 4; a++) {
                x[a] = sA[kk * TT_LD + ty + 16 * a];
                y[a] = sB[kk * TT_LD + tx + 16 * a];
            }
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++)
                    acc[a][b] = fmaf(x[a], y[b], acc[a][b]);
        }
    }
}

/* Max and sum over the 16 threads that share a row (tx = lane & 15). */
static __device__ __forceinline__ float tt_row_max(float x) {
    for (int off = 8; off > 0; off >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}

static __device__ __forceinline__ float tt_row_sum(float x) {
    for (int off = 8; off > 0; off >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

/* One online-softmax step of a row: s[b] its masked scores (exp2 domain, -inf when hidden),
 * m the running max (shared by the row's 16 threads), l this thread's running partial sum.
 * Writes p[b] = exp2(s[b] - m_new) and returns the factor earlier sums are scaled by. */
static __device__ __forceinline__ float tt_softmax_step(const float (&s)[4], float &m, float &l,
                                                        float (&p)[4]) {
    float mx = fmaxf(fmaxf(s[0], s[1]), fmaxf(s[2], s[3]));
    mx = tt_row_max(mx);
    const float m_new = fmaxf(m, mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(m - m_use); /* m = -inf: 0 */
    float sum = 0.0f;
#pragma unroll
    for (int b = 0; b < 4; b++) {
        p[b] = exp2f(s[b] - m_use);
        sum += p[b];
    }
    l = l * alpha + sum;
    m = m_new;
    return alpha;
}

#endif

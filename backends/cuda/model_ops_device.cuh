/* Helpers shared by the CUDA model ops (ela.h "Model ops": matmul, rms_norm, rope, silu_mul,
 * add, get_rows, copy): the rows of a tensor of any rank (outer dims decomposed exactly as the
 * CPU backend's cpu_tensor_row), element loads and stores of f32/f16/bf16 (round to nearest
 * even, as core/dtype.h) and q8_0 blocks (GGUF block_q8_0: f16 scale, then 32 int8). */
#ifndef ELA_BACKENDS_CUDA_MODEL_OPS_DEVICE_CUH
#define ELA_BACKENDS_CUDA_MODEL_OPS_DEVICE_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "core/tensor.h"

#define MO_F32 0  /* ELA_F32 */
#define MO_F16 1  /* ELA_F16 */
#define MO_BF16 2 /* ELA_BF16 */
#define MO_Q8_0 5 /* ELA_Q8_0 */
#define MO_Q8_BYTES 34

/* The outer dims of a tensor (all but the innermost), innermost of them first, so row r sits
 * at sum_i (r_i * str[i]) with r = r_0 + ext[0] * (r_1 + ext[1] * r_2). */
typedef struct {
    int n;
    int64_t ext[ELA_MAX_DIMS - 1];
    int64_t str[ELA_MAX_DIMS - 1];
} mo_rows;

/* Host side: the outer dims of t, and the number of rows they make. */
static inline int64_t mo_rows_of(const ela_tensor *t, mo_rows *out) {
    int64_t rows = 1;
    out->n = t->n_dims - 1;
    for (int i = 0; i < ELA_MAX_DIMS - 1; i++) {
        out->ext[i] = 1;
        out->str[i] = 0;
    }
    for (int j = 0, i = t->n_dims - 2; i >= 0; i--, j++) {
        out->ext[j] = t->extents[i];
        out->str[j] = t->strides[i];
        rows *= t->extents[i];
    }
    return rows;
}

/* Byte offset of row r. */
static __device__ __forceinline__ int64_t mo_row_offset(const mo_rows &g, int64_t r) {
    int64_t off = 0;
#pragma unroll
    for (int i = 0; i < ELA_MAX_DIMS - 1; i++) {
        if (i < g.n) {
            off += (r % g.ext[i]) * g.str[i];
            r /= g.ext[i];
        }
    }
    return off;
}

/* Element i of a packed row of dtype dt (f32/f16/bf16/q8_0) as f32. */
static __device__ __forceinline__ float mo_load(const char *row, int dt, int64_t i) {
    if (dt == MO_F32)
        return ((const float *)row)[i];
    if (dt == MO_F16)
        return __half2float(__ushort_as_half(((const unsigned short *)row)[i]));
    if (dt == MO_BF16)
        return __uint_as_float((unsigned)((const unsigned short *)row)[i] << 16);
    /* q8_0: value d * q computed in f32, exactly as ela_q8_0_dequantize_block */
    const char *blk = row + (i >> 5) * MO_Q8_BYTES;
    float d = __half2float(__ushort_as_half(*(const unsigned short *)blk));
    return d * (float)(signed char)blk[2 + (i & 31)];
}

/* Store x into element i of a packed f32/f16/bf16 row. */
static __device__ __forceinline__ void mo_store(char *row, int dt, int64_t i, float x) {
    if (dt == MO_F32)
        ((float *)row)[i] = x;
    else if (dt == MO_F16)
        ((__half *)row)[i] = __float2half_rn(x);
    else
        ((__nv_bfloat16 *)row)[i] = __float2bfloat16_rn(x);
}

static __device__ __forceinline__ float mo_warp_sum(float x) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

static __device__ __forceinline__ float mo_warp_max(float x) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}

#endif

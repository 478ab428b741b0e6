/* Device helpers shared by the CUDA attention kernels: element loads and stores in any of the
 * three float dtypes (f16/bf16 rounded to nearest even, as the CPU backend does), the fast exp2,
 * and the row output (final o and lse, or a split's partial). */
#ifndef ELA_BACKENDS_CUDA_ATTN_DENSE_DEVICE_CUH
#define ELA_BACKENDS_CUDA_ATTN_DENSE_DEVICE_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "attn_dense_kernels.h"

#define ATTN_F32 0
#define ATTN_F16 1
#define ATTN_BF16 2
#define ATTN_LN2 0.6931471805599453f

static __device__ __forceinline__ int attn_dtype_size(int dt) { return dt == ATTN_F32 ? 4 : 2; }

static __device__ __forceinline__ float attn_load(const char *p, int dt) {
    if (dt == ATTN_F32)
        return *(const float *)p;
    unsigned short bits = *(const unsigned short *)p;
    if (dt == ATTN_F16)
        return __half2float(__ushort_as_half(bits));
    return __uint_as_float((unsigned)bits << 16);
}

static __device__ __forceinline__ void attn_store(char *p, int dt, float x) {
    if (dt == ATTN_F32)
        *(float *)p = x;
    else if (dt == ATTN_F16)
        *(__half *)p = __float2half_rn(x);
    else
        *(__nv_bfloat16 *)p = __float2bfloat16_rn(x);
}

/* Two adjacent elements; one 4- or 8-byte store when the address allows. */
static __device__ __forceinline__ void attn_store2(char *p, int dt, float x, float y) {
    if (dt == ATTN_F32) {
        if (((uintptr_t)p & 7) == 0) {
            *(float2 *)p = make_float2(x, y);
            return;
        }
    } else if (((uintptr_t)p & 3) == 0) {
        if (dt == ATTN_F16)
            *(__half2 *)p = __floats2half2_rn(x, y);
        else
            *(__nv_bfloat162 *)p = __floats2bfloat162_rn(x, y);
        return;
    }
    attn_store(p, dt, x);
    attn_store(p + attn_dtype_size(dt), dt, y);
}

/* 2^x, about 2 ulp; 2^-inf = 0. */
static __device__ __forceinline__ float attn_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

static __device__ __forceinline__ float attn_warp_sum(float x) {
    for (int off = 16; off > 0; off >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

static __device__ __forceinline__ float attn_warp_max(float x) {
    for (int off = 16; off > 0; off >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}

/* Address of the partial output of (split s, head h, row i). */
static __device__ __forceinline__ int64_t attn_part_row(const cuda_attn_params &p, int s, int h,
                                                        int64_t i) {
    return ((int64_t)s * p.hq + h) * p.L + i;
}

/* attn_blocks: key block J (<= M) is visited by head h's rows of absolute query block M under
 * its mode (backends/cpu/attn_blocks.c's block_allowed). p.modes is non-NULL. */
static __device__ __forceinline__ bool attn_block_allowed(const cuda_attn_params &p, int h,
                                                          int64_t M, int64_t J) {
    const int *md = p.modes + 4 * h;
    if (md[0] == 1) /* ELA_HEAD_STREAMING */
        return J < md[1] || J > M - md[2];
    if (md[0] == 2) /* ELA_HEAD_MASK */
        return J == M || p.masks[md[3] * p.mask_s0 + (M - p.qb0) * p.mask_s1 + J] != 0;
    return true;
}

/* lse of a row from its running max (exp2 domain) and sum: ln(sum exp(score)). */
static __device__ __forceinline__ float attn_lse(float m, float l) {
    return l > 0.0f ? (m + log2f(l)) * ATTN_LN2 : -INFINITY;
}

#endif

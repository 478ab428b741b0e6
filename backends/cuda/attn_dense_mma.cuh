/* Tensor-core building blocks shared by the CUDA attention kernels (attn_dense_mma.cu,
 * attn_dense_decode_mma.cu): cp.async with zero fill, ldmatrix, mma.sync m16n8k16 with f32
 * accumulators, and rounding P to the 16-bit input dtype. Shared-memory tiles are rows of
 * 16-byte chunks, chunk c of row r stored at c ^ (r & 7) (conflict-free ldmatrix and cp.async). */
#ifndef ELA_BACKENDS_CUDA_ATTN_DENSE_MMA_CUH
#define ELA_BACKENDS_CUDA_ATTN_DENSE_MMA_CUH

#include "attn_dense_device.cuh"

static __device__ __forceinline__ unsigned smem_u32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}

static __device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}

static __device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::);
}

/* Wait until at most N of this thread's committed groups are still in flight. */
template <int N> static __device__ __forceinline__ void cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* cudaFuncSetAttribute once per kernel and device (the attribute is per device context). */
static inline cudaError_t attn_raise_smem(const void *kernel, int bytes, unsigned *done_mask) {
    int dev = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err != cudaSuccess)
        return err;
    const unsigned bit = dev < 32 ? 1u << dev : 0u;
    if (bit && (__atomic_load_n(done_mask, __ATOMIC_ACQUIRE) & bit))
        return cudaSuccess;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (err == cudaSuccess && bit)
        __atomic_fetch_or(done_mask, bit, __ATOMIC_RELEASE);
    return err;
}

static __device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

static __device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

/* c += a b for one m16n8k16 tile, f32 accumulators. */
template <bool BF>
static __device__ __forceinline__ void mma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                                unsigned b1) {
    if (BF)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Round (x, y) to the 16-bit dtype and pack them (x low). */
template <bool BF> static __device__ __forceinline__ unsigned pack2(float x, float y) {
    if (BF) {
        __nv_bfloat162 b = __floats2bfloat162_rn(x, y);
        return *(unsigned *)&b;
    }
    __half2 hv = __floats2half2_rn(x, y);
    return *(unsigned *)&hv;
}

/* Round (x, y) to the 16-bit dtype, pack (x low), and give back the rounded values' sum. */
template <bool BF>
static __device__ __forceinline__ unsigned pack_round(float x, float y, float &sum) {
    if (BF) {
        __nv_bfloat162 b = __floats2bfloat162_rn(x, y);
        float2 f = __bfloat1622float2(b);
        sum += f.x + f.y;
        return *(unsigned *)&b;
    }
    __half2 hv = __floats2half2_rn(x, y);
    float2 f = __half22float2(hv);
    sum += f.x + f.y;
    return *(unsigned *)&hv;
}

#endif

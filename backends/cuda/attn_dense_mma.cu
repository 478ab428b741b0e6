/* CUDA dense attention, tensor-core prefill (DESIGN.md 4.1; FlashAttention-2's forward pass):
 * q, k, v one 16-bit dtype (f16 or bf16), d 64 or 128, a positive scale, f32 accumulation, online
 * softmax in registers, causal tiles above the diagonal never visited. Any o dtype and stride;
 * lse optional; key splits (partials merged in attn_dense.cu) when the query tiles are too few.
 * The tile loop (tiling, loads, softmax, epilogue) is attn_mma_loop.cuh, shared with the fused
 * block-sparse executor (attn_blocks.cu); this file runs it over every key tile of the split.
 * Grid: (query head, query tile, split), the heaviest query tiles (the last) first. Two blocks
 * per SM (registers: 255 per thread; shared memory 96 KiB at d = 128).
 * Bound: tensor-core throughput. 4 d flops per visible (row, key) pair; mma.sync on an H100
 * peaks near 2/3 of the wgmma rate (~650 of 989 TFLOP/s bf16). Measured (H100 SXM, bf16,
 * d = 128, Hq 32, Hkv 8, causal): 383 TFLOP/s at 32K, 388 at 128K, 1.07-1.12x PyTorch SDPA's
 * flash backend (FA2) in the same run; cuDNN reaches ~600 with wgmma, which this kernel
 * cannot: the next step is a wgmma/TMA variant for sm_90a. */
#include "attn_mma_loop.cuh"

template <int D, bool BF>
__global__ void __launch_bounds__(MMA_THREADS, 2) attn_dense_mma(const cuda_attn_params p) {
    extern __shared__ uint4 mma_shared[];
    const int64_t i0 = (int64_t)(gridDim.y - 1 - blockIdx.y) * CUDA_MMA_BR; /* heaviest first */
    mma_tiles_all all = {0};
    attn_mma_tile<D, BF>(p, mma_shared, (int)blockIdx.x, i0, (int)blockIdx.z, all);
}

typedef void (*mma_kernel)(const cuda_attn_params);
static unsigned mma_prepared[4]; /* per kernel: devices whose smem limit is raised */

static int mma_index(int d, int dtype) {
    if (d != 64 && d != 128)
        return -1;
    return (d == 128) * 2 + (dtype == ATTN_BF16);
}

static mma_kernel mma_pick(int d, int dtype) {
    switch (mma_index(d, dtype)) {
    case 0: return attn_dense_mma<64, false>;
    case 1: return attn_dense_mma<64, true>;
    case 2: return attn_dense_mma<128, false>;
    case 3: return attn_dense_mma<128, true>;
    default: return NULL;
    }
}

static size_t mma_smem(int d) { return attn_mma_loop_smem(d); }

extern "C" int cuda_attn_mma_fits(int d, int dtype) {
    return (d == 64 || d == 128) && (dtype == ATTN_F16 || dtype == ATTN_BF16);
}

static cudaError_t mma_prepare(mma_kernel k, int d, int dtype) {
    return attn_raise_smem((const void *)k, (int)mma_smem(d), &mma_prepared[mma_index(d, dtype)]);
}

extern "C" int cuda_attn_mma_blocks_per_sm(int d, int dtype) {
    mma_kernel k = mma_pick(d, dtype);
    int n = 0;
    if (!k || mma_prepare(k, d, dtype) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, MMA_THREADS, mma_smem(d)) !=
            cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaError_t cuda_attn_mma_launch(const cuda_attn_params *p, cudaStream_t stream) {
    mma_kernel k = mma_pick(p->d, p->tkv);
    if (!k)
        return cudaErrorInvalidValue;
    cudaError_t err = mma_prepare(k, p->d, p->tkv);
    if (err != cudaSuccess)
        return err;
    dim3 grid((unsigned)p->hq, (unsigned)((p->L + CUDA_MMA_BR - 1) / CUDA_MMA_BR),
              (unsigned)p->splits);
    k<<<grid, MMA_THREADS, mma_smem(p->d), stream>>>(*p);
    return cudaGetLastError();
}

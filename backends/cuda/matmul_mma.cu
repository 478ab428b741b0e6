/* CUDA matmul, prefill (ela.h "Model ops"; M > 8): y [M, N] = x . w^T + bias on tensor cores
 * (mma.sync m16n8k16, f32 accumulation) for f16, bf16 and q8_0 weights.
 *
 * Precision: the weights are exact in the operand type (f16/bf16 as stored; a q8_0 block's
 * int8 are exact in f16 and its scale is applied to the f32 partial sums of that block). The f32
 * activations are not: matmul.cu splits each into hi + lo, both in the operand type (f16 rows
 * scaled by a power of two so that their max sits in [2^14, 2^15), away from f16 underflow),
 * and each tile runs two products, hi . w and lo . w. That keeps 22 bits of every activation
 * for f16 and q8_0 (f32 results to ~1e-6) and 16 for bf16 (~5e-6) for twice the tensor work,
 * where a single 16-bit rounding would cost 3e-4 (f16) to 2e-3 (bf16) per layer.
 *
 * Tiling: 128 x 128 outputs per block of 8 warps (2 x 4, 64 x 32 each: 4 x 4 m16n8 tiles, 64
 * f32 accumulators per thread), K in tiles of 32 (one q8_0 block) through a 3-stage cp.async
 * ring: hi, lo [128][32] and w [128][32] (f16/bf16, 16-byte chunks XOR-swizzled by row so the
 * fragment reads are conflict-free) or the raw q8_0 bytes of 128 blocks (9 aligned words each,
 * rows 40 bytes apart). Fragments are read with 8-byte (16-bit operands) or 2-byte (int8)
 * loads in a k order permuted within each k16 step (thread c4 holds k = 4c4..4c4+3 where the
 * mma expects 2c4, 2c4+1, 2c4+8, 2c4+9): A and B use the same order, so the products are
 * unchanged and no ldmatrix is needed.
 * Bound: tensor throughput at 2 products per k16 (about half of mma.sync's f16 peak); shared
 * memory supplies 40 8-byte fragment loads per 64 mma per warp. Measured on an H100 (M = 2048,
 * [14336 x 4096]): 147 TFLOP/s of output (f16, bf16), 75 (q8_0), where cuBLAS runs single
 * 16-bit products at 760-800: what is left is ldmatrix, deeper pipelining and wgmma (sm_90a),
 * and for q8_0 a cheaper int8 -> f16 path. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "matmul_kernels.h"

#define TM CUDA_MMA_TILE_M
#define TN CUDA_MMA_TILE_N
#define TK CUDA_MMA_TILE_K
#define MMA_THREADS 256
#define STAGES 3
#define A_BYTES (TM * TK * 2)     /* one of hi, lo */
#define B_BYTES (TN * TK * 2)     /* 16-bit weights; q8_0 uses TN * 40 */
#define Q8_ROW 40                 /* bytes between raw q8_0 rows in shared memory */
#define STAGE_BYTES (2 * A_BYTES + B_BYTES)

#define DT_F16 1
#define DT_BF16 2
#define DT_Q8_0 5

static __device__ __forceinline__ unsigned smem_addr(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared; src_bytes 0 fills zeros. */
static __device__ __forceinline__ void cp16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes));
}

static __device__ __forceinline__ void cp4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes));
}

static __device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }

template <int N>
static __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

/* Byte offset of 16-byte chunk c (0-3) of row r in a [rows][32] 16-bit tile. */
static __device__ __forceinline__ int swz(int r, int c) { return r * 64 + ((c ^ (r & 3)) << 4); }

/* The 4 16-bit values k = 16s + 4c4 .. +3 of row r: a 2-word fragment piece. */
static __device__ __forceinline__ uint2 frag16(const char *tile, int r, int s, int c4) {
    const int c = 2 * s + (c4 >> 1);
    return *(const uint2 *)(tile + swz(r, c) + ((c4 & 1) << 3));
}

template <int BT>
static __device__ __forceinline__ void mma16816(float *d, const unsigned *a, const unsigned *b) {
    if (BT == DT_BF16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
                     "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Four int8 (a word) to two f16 pairs, exactly: 1024 + (q + 128) as f16 bits, minus 1152. */
static __device__ __forceinline__ void q8x4_to_h2(unsigned q, unsigned *h) {
    const unsigned v = q ^ 0x80808080u;
    const __half2 bias = __halves2half2(__ushort_as_half(0x6480), __ushort_as_half(0x6480));
    unsigned t0 = __byte_perm(v, 0x64646464u, 0x5140), t1 = __byte_perm(v, 0x64646464u, 0x7362);
    __half2 h0 = __hsub2(*(__half2 *)&t0, bias), h1 = __hsub2(*(__half2 *)&t1, bias);
    h[0] = *(unsigned *)&h0;
    h[1] = *(unsigned *)&h1;
}

/* Address of q8_0 block kt of weight row n (its first byte). */
static __device__ __forceinline__ const char *q8_block(const cuda_mma_params &p, int64_t n,
                                                       int64_t kt) {
    return p.w + n * p.ws + kt * 34;
}

/* One stage: A tiles (hi, lo) rows m0.., k-tile kt; B rows n0... */
template <int BT>
static __device__ __forceinline__ void load_stage(const cuda_mma_params &p, char *st, int64_t m0,
                                                  int64_t n0, int64_t kt) {
    const int tid = threadIdx.x;
    char *a_hi = st, *a_lo = st + A_BYTES, *bt = st + 2 * A_BYTES;
    const int64_t k0 = kt * TK;
#pragma unroll
    for (int i = 0; i < TM * 4 / MMA_THREADS; i++) {
        const int id = tid + i * MMA_THREADS, r = id >> 2, c = id & 3;
        const bool ok = m0 + r < p.M;
        const int64_t off = ((ok ? m0 + r : 0) * p.ka + k0 + c * 8) * 2;
        cp16(a_hi + swz(r, c), (const char *)p.a_hi + off, ok ? 16 : 0);
        cp16(a_lo + swz(r, c), (const char *)p.a_lo + off, ok ? 16 : 0);
    }
    if (BT != DT_Q8_0) {
#pragma unroll
        for (int i = 0; i < TN * 4 / MMA_THREADS; i++) {
            const int id = tid + i * MMA_THREADS, r = id >> 2, c = id & 3;
            const int64_t k = k0 + c * 8;
            const bool ok = n0 + r < p.N && k < p.K;
            const char *src = ok ? p.w + (n0 + r) * p.ws + k * 2 : p.w;
            cp16(bt + swz(r, c), src, ok ? 16 : 0);
        }
    } else {
        /* 9 aligned words cover the 34 bytes of each block (which start 2-byte aligned); the
         * last may run 2 bytes into the next block, except past the end of the weights, where
         * those 2 bytes are read alone (cp.async reads whole words). */
        for (int id = tid; id < TN * 9; id += MMA_THREADS) {
            const int r = id / 9, j = id - r * 9;
            const bool ok = n0 + r < p.N;
            const char *blk = q8_block(p, ok ? n0 + r : 0, kt);
            const char *word = (const char *)((uintptr_t)blk & ~(uintptr_t)3) + 4 * j;
            char *dst = bt + r * Q8_ROW + 4 * j;
            if (ok && word + 4 > p.w_end)
                *(unsigned *)dst = *(const unsigned short *)word;
            else
                cp4(dst, ok ? word : p.w, ok ? 4 : 0);
        }
    }
}

template <int BT>
/* Two blocks per SM for the 16-bit weights (at most 128 registers: 16 warps to hide the
 * fragment loads and mma latencies); one for q8_0, whose per-block partial sums need more. */
__global__ void __launch_bounds__(MMA_THREADS, BT == DT_Q8_0 ? 1 : 2)
    matmul_mma(const cuda_mma_params p) {
    extern __shared__ float4 smem4[];
    char *smem = (char *)smem4;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int g = lane >> 2, c4 = lane & 3;
    const int64_t m0 = (int64_t)blockIdx.y * TM, n0 = (int64_t)blockIdx.x * TN;
    const int64_t KT = (p.K + TK - 1) / TK;

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < KT)
            load_stage<BT>(p, smem + s * STAGE_BYTES, m0, n0, s);
        cp_commit();
    }

    for (int64_t kt = 0; kt < KT; kt++) {
        cp_wait<STAGES - 2>();
        __syncthreads();
        {
            const int64_t nk = kt + STAGES - 1;
            if (nk < KT)
                load_stage<BT>(p, smem + (int)(nk % STAGES) * STAGE_BYTES, m0, n0, nk);
            cp_commit();
        }
        const char *st = smem + (int)(kt % STAGES) * STAGE_BYTES;
        const char *a_hi = st, *a_lo = st + A_BYTES, *bt = st + 2 * A_BYTES;

        /* B fragments of the whole k-tile: [s][ni][2]; for q8_0 also the scales of this
         * thread's output columns. */
        unsigned bf[2][4][2];
        float dsc[4][2];
        if (BT != DT_Q8_0) {
#pragma unroll
            for (int s = 0; s < 2; s++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
                    const uint2 v = frag16(bt, wn * 32 + ni * 8 + g, s, c4);
                    bf[s][ni][0] = v.x;
                    bf[s][ni][1] = v.y;
                }
        } else {
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int r = wn * 32 + ni * 8 + g;
                const int64_t nr = n0 + r < p.N ? n0 + r : 0;
                const int shift = (int)((uintptr_t)q8_block(p, nr, kt) & 2);
                const unsigned short *raw = (const unsigned short *)(bt + r * Q8_ROW + shift);
#pragma unroll
                for (int s = 0; s < 2; s++) {
                    const int k = 16 * s + 4 * c4; /* int8 k .. k+3 at bytes 2 + k */
                    const unsigned q = (unsigned)raw[1 + k / 2] | ((unsigned)raw[2 + k / 2] << 16);
                    q8x4_to_h2(q, bf[s][ni]);
                }
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int rc = wn * 32 + ni * 8 + 2 * c4 + e;
                    const int64_t nc = n0 + rc < p.N ? n0 + rc : 0;
                    const int sh = (int)((uintptr_t)q8_block(p, nc, kt) & 2);
                    const unsigned short d = *(const unsigned short *)(bt + rc * Q8_ROW + sh);
                    dsc[ni][e] = __half2float(__ushort_as_half(d));
                }
            }
        }

#pragma unroll
        for (int mi = 0; mi < 4; mi++) {
            const int r = wm * 64 + mi * 16 + g;
            unsigned ah[2][4], al[2][4];
#pragma unroll
            for (int s = 0; s < 2; s++) {
                const uint2 h0 = frag16(a_hi, r, s, c4), h1 = frag16(a_hi, r + 8, s, c4);
                const uint2 l0 = frag16(a_lo, r, s, c4), l1 = frag16(a_lo, r + 8, s, c4);
                ah[s][0] = h0.x, ah[s][1] = h1.x, ah[s][2] = h0.y, ah[s][3] = h1.y;
                al[s][0] = l0.x, al[s][1] = l1.x, al[s][2] = l0.y, al[s][3] = l1.y;
            }
            if (BT != DT_Q8_0) {
#pragma unroll
                for (int s = 0; s < 2; s++)
#pragma unroll
                    for (int ni = 0; ni < 4; ni++) {
                        mma16816<BT>(acc[mi][ni], ah[s], bf[s][ni]);
                        mma16816<BT>(acc[mi][ni], al[s], bf[s][ni]);
                    }
            } else {
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
                    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int s = 0; s < 2; s++) {
                        mma16816<DT_F16>(t, ah[s], bf[s][ni]);
                        mma16816<DT_F16>(t, al[s], bf[s][ni]);
                    }
                    acc[mi][ni][0] += dsc[ni][0] * t[0];
                    acc[mi][ni][1] += dsc[ni][1] * t[1];
                    acc[mi][ni][2] += dsc[ni][0] * t[2];
                    acc[mi][ni][3] += dsc[ni][1] * t[3];
                }
            }
        }
    }
    cp_wait<0>();

    /* y = acc * rscale[row] + bias[col] */
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t row = m0 + wm * 64 + mi * 16 + g + 8 * h;
            if (row >= p.M)
                continue;
            const float rs = p.rscale[row];
            float *yr = p.y + row * p.ys;
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int64_t col = n0 + wn * 32 + ni * 8 + 2 * c4 + e;
                    if (col < p.N)
                        yr[col] = acc[mi][ni][2 * h + e] * rs + (p.bias ? p.bias[col] : 0.0f);
                }
        }
}

template <int BT>
static cudaError_t launch_bt(const cuda_mma_params *p, cudaStream_t stream) {
    const size_t smem = (size_t)STAGES * STAGE_BYTES;
    /* Set on every launch: the attribute is per device, and setting it costs no device work. */
    cudaError_t err = cudaFuncSetAttribute(matmul_mma<BT>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess)
        return err;
    const dim3 grid((unsigned)((p->N + TN - 1) / TN), (unsigned)((p->M + TM - 1) / TM));
    matmul_mma<BT><<<grid, MMA_THREADS, smem, stream>>>(*p);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_mma_launch(const cuda_mma_params *p, cudaStream_t stream) {
    if ((p->N + TN - 1) / TN > 0x7fffffff || (p->M + TM - 1) / TM > 65535)
        return cudaErrorInvalidValue;
    switch (p->wdt) {
    case DT_F16: return launch_bt<DT_F16>(p, stream);
    case DT_BF16: return launch_bt<DT_BF16>(p, stream);
    case DT_Q8_0: return launch_bt<DT_Q8_0>(p, stream);
    default: return cudaErrorInvalidValue;
    }
}

/* CUDA matmul, decode (ela.h "Model ops"; M <= 8 activation rows): y [M, N] = x [M, K] .
 * w [N, K]^T + bias as a memory-bound GEMV over weights f32/f16/bf16/q8_0, f32 accumulation.
 *
 * Tiling: a block of 4 warps owns rw (1-4) weight rows; its warps split K between them (warp w
 * takes pieces or chunks w, w + 4, ...) and add their partial sums through shared memory at the
 * end, so even a few hundred rows keep every SM streaming. At most 128 registers (168 for
 * M > 4): 4 blocks (16 warps) per SM. Each lane keeps rw x M accumulators.
 *   f32/f16/bf16 (16-byte aligned rows): a step is 4 16-byte loads per lane per row (512
 *     contiguous bytes per warp instruction), issued for all rw rows before any is used; loads
 *     bypass L1 (read once). The activations come from global memory through L1, where they
 *     stay (every block of the SM reads them): one float4 per 4 elements per activation row,
 *     shared by the rw weight rows.
 *   q8_0 (34-byte blocks at 2-byte alignment): a warp streams a chunk of 16 blocks of each of
 *     its rows with 16-byte loads of the chunk's aligned span (1-2 per lane per row), stages
 *     them in shared memory (2.2 KB per warp) and loads the next chunk while it computes: 8
 *     lanes per block, lane t owns int8 4t..4t+3 (read as two 2-byte words) and the block's
 *     f16 scale; int8 -> f32 exactly through the 2^23 magic number; sum(q * x) per 4
 *     elements is scaled by d once.
 *   element path (weights not 16-byte aligned, only in tests): one element per lane per load.
 * Bound: weight bytes / HBM bandwidth (N * K * {4, 2, 1.0625} bytes); aim >= 70% of it for
 * N, K >= 4096 at M = 1. With M = 8 the activation reads and FMAs grow 8x per weight byte.
 * Measured on an H100 SXM (HBM3, 3.35 TB/s peak; ela_copy moves 2.9-3.0 TB/s read + write),
 * M = 1, weights cycling through 256 MB so they come from HBM (test_model_ops_gpu with
 * ELA_TEST_BENCH=1): [4096 x 4096] / [14336 x 4096] f16 2.1 / 2.8 TB/s, bf16 2.1 / 2.8, f32
 * 2.5 / 2.9, q8_0 1.3 / 1.8 (cuBLAS through PyTorch, f16, same run: 0.6 / 2.2). q8_0 is short
 * of the bound: about 4 instructions per weight byte (two 2-byte shared loads and the scale per
 * 4 int8, 2 per int8 to f32, the FMAs) against 0.8 for f16; M = 8 runs at 1.2-1.8 TB/s. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "matmul_kernels.h"

#define GEMV_THREADS (CUDA_GEMV_WARPS * 32)
#define GEMV_PJ 4 /* 16-byte pieces per lane per row per step */
#define Q8_CHUNK 16  /* q8_0 blocks per row per warp chunk (544 bytes) */
#define Q8_PIECES 35 /* 16-byte pieces covering a chunk at any 2-byte offset */

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_Q8_0 5

/* A weight load that is used once: keep it out of L1 so the activations stay there. */
static __device__ __forceinline__ uint4 ldg_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* 8 f16 or bf16 (one 16-byte piece), or 4 f32, to floats. */
template <int WT>
static __device__ __forceinline__ void piece_to_f32(const uint4 v, float *f) {
    const unsigned u[4] = {v.x, v.y, v.z, v.w};
    if (WT == DT_F32) {
#pragma unroll
        for (int i = 0; i < 4; i++)
            f[i] = __uint_as_float(u[i]);
    } else if (WT == DT_F16) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 t = __half22float2(*(const __half2 *)&u[i]);
            f[2 * i] = t.x;
            f[2 * i + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = __uint_as_float(u[i] << 16);
            f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        }
    }
}

/* Four int8 (a little-endian word) to floats, exactly: 2^23 + (q + 128) as a float's bits,
 * minus 2^23 + 128. */
static __device__ __forceinline__ void q8x4_to_f32(unsigned q, float *f) {
    const unsigned v = q ^ 0x80808080u;
    f[0] = __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7650)) - 8388736.0f;
    f[1] = __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7651)) - 8388736.0f;
    f[2] = __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7652)) - 8388736.0f;
    f[3] = __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7653)) - 8388736.0f;
}

/* 16 bytes at a 16-byte aligned addr, of which only those before `end` (even) are read. */
static __device__ __forceinline__ uint4 load_piece(const char *addr, const char *end) {
    if (addr + 16 <= end)
        return ldg_stream(addr);
    unsigned h[8];
#pragma unroll
    for (int i = 0; i < 8; i++)
        h[i] = addr + 2 * i < end ? __ldg((const unsigned short *)addr + i) : 0u;
    return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

/* Chunk c (blocks Q8_CHUNK * c ...) of each row as 16-byte pieces lane, lane + 32 of its
 * aligned span. */
static __device__ __forceinline__ void q8_load(const char *const *wrow, const bool *row_ok,
                                               int64_t c, int64_t nblk, int lane,
                                               uint4 (*v)[2]) {
    const int64_t cb0 = c * Q8_CHUNK, cnb = nblk - cb0 < Q8_CHUNK ? nblk - cb0 : Q8_CHUNK;
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_MAX_RW; r++) {
        const char *start = wrow[r] + cb0 * 34, *end = start + cnb * 34;
        const char *a0 = (const char *)((uintptr_t)start & ~(uintptr_t)15);
        const int np = (int)((end - a0 + 15) >> 4);
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int pc = lane + 32 * q;
            v[r][q] = row_ok[r] && pc < np ? load_piece(a0 + 16 * pc, end) : make_uint4(0, 0, 0, 0);
        }
    }
}

static __device__ __forceinline__ float elem_f32(const char *row, int wt, int64_t k) {
    if (wt == DT_F32)
        return ((const float *)row)[k];
    const unsigned short h = ((const unsigned short *)row)[k];
    return wt == DT_F16 ? __half2float(__ushort_as_half(h)) : __uint_as_float((unsigned)h << 16);
}

template <int WT, int MR>
__global__ void __launch_bounds__(GEMV_THREADS, MR == 8 ? 3 : 4)
    matmul_gemv(const cuda_gemv_params p) {
    __shared__ float red[CUDA_GEMV_WARPS][CUDA_GEMV_MAX_RW][MR];
    /* q8_0: each warp's staged rows */
    __shared__ uint4 q8s[WT == DT_Q8_0 ? CUDA_GEMV_WARPS * CUDA_GEMV_MAX_RW * Q8_PIECES : 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t n0 = (int64_t)blockIdx.x * p.rw;
    const int M = p.M;
    float acc[CUDA_GEMV_MAX_RW][MR];
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
#pragma unroll
        for (int m = 0; m < MR; m++)
            acc[r][m] = 0.0f;
    bool row_ok[CUDA_GEMV_MAX_RW];
    const char *wrow[CUDA_GEMV_MAX_RW];
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_MAX_RW; r++) {
        row_ok[r] = r < p.rw && n0 + r < p.N;
        wrow[r] = p.w + (row_ok[r] ? n0 + r : 0) * p.ws;
    }

    if (WT == DT_Q8_0) {
        /* Chunks of Q8_CHUNK blocks per row; warp w takes chunks w, w + 4, ... Each lane loads
         * pieces lane, lane + 32 of the chunk's 16-byte-aligned span, stores them to the warp's
         * shared rows and, while it computes on them, already has the next chunk's loads in
         * flight. */
        const int g = lane >> 3, t = lane & 7;
        const int64_t nblk = p.K / 32;
        uint4 *sw = q8s + warp * (CUDA_GEMV_MAX_RW * Q8_PIECES);
        uint4 v[CUDA_GEMV_MAX_RW][2];
        int64_t c = warp;
        if (c * Q8_CHUNK < nblk)
            q8_load(wrow, row_ok, c, nblk, lane, v);
        for (; c * Q8_CHUNK < nblk; c += CUDA_GEMV_WARPS) {
#pragma unroll
            for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
#pragma unroll
                for (int q = 0; q < 2; q++)
                    if (lane + 32 * q < Q8_PIECES)
                        sw[r * Q8_PIECES + lane + 32 * q] = v[r][q];
            __syncwarp();
            const int64_t cb0 = c * Q8_CHUNK;
            if ((c + CUDA_GEMV_WARPS) * Q8_CHUNK < nblk)
                q8_load(wrow, row_ok, c + CUDA_GEMV_WARPS, nblk, lane, v);
            const int cnb = (int)(nblk - cb0 < Q8_CHUNK ? nblk - cb0 : Q8_CHUNK);
            const unsigned short *rows[CUDA_GEMV_MAX_RW]; /* block 0 of the chunk, per row */
#pragma unroll
            for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
                rows[r] = (const unsigned short *)((const char *)(sw + r * Q8_PIECES) +
                                                   ((uintptr_t)(wrow[r] + cb0 * 34) & 15));
#pragma unroll
            for (int st = 0; st < Q8_CHUNK / 4; st++) {
                const int b = 4 * st + g;
                if (b >= cnb)
                    continue;
                float wf[CUDA_GEMV_MAX_RW][4], d[CUDA_GEMV_MAX_RW];
#pragma unroll
                for (int r = 0; r < CUDA_GEMV_MAX_RW; r++) {
                    const unsigned short *blk = rows[r] + b * 17;
                    q8x4_to_f32((unsigned)blk[1 + 2 * t] | ((unsigned)blk[2 + 2 * t] << 16), wf[r]);
                    d[r] = __half2float(__ushort_as_half(blk[0]));
                }
#pragma unroll
                for (int m = 0; m < MR; m++) {
                    if (m >= M)
                        break;
                    const float4 xv =
                        __ldg((const float4 *)(p.x + m * p.xs + (cb0 + b) * 32 + 4 * t));
#pragma unroll
                    for (int r = 0; r < CUDA_GEMV_MAX_RW; r++) {
                        const float part =
                            wf[r][0] * xv.x + wf[r][1] * xv.y + wf[r][2] * xv.z + wf[r][3] * xv.w;
                        acc[r][m] += d[r] * part;
                    }
                }
            }
            __syncwarp(); /* the rows are rewritten for the next chunk */
        }
    } else if (p.vec) {
        const int E = WT == DT_F32 ? 4 : 8; /* elements per 16-byte piece */
        const int ES = WT == DT_F32 ? 4 : 2;
        /* A step is 4 x GEMV_PJ warp-pieces of 32 * E elements; warp w takes pieces w, w + 4,
         * ..., so a short K still spreads over the block's warps. */
        const int64_t step = (int64_t)CUDA_GEMV_WARPS * GEMV_PJ * 32 * E;
        for (int64_t s = 0; s < p.K; s += step) {
            uint4 wv[CUDA_GEMV_MAX_RW][GEMV_PJ];
#pragma unroll
            for (int j = 0; j < GEMV_PJ; j++) {
                const int64_t e = s + (int64_t)((j * CUDA_GEMV_WARPS + warp) * 32 + lane) * E;
#pragma unroll
                for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
                    wv[r][j] = row_ok[r] && e < p.K ? ldg_stream(wrow[r] + e * ES)
                                                    : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int j = 0; j < GEMV_PJ; j++) {
                const int64_t e = s + (int64_t)((j * CUDA_GEMV_WARPS + warp) * 32 + lane) * E;
                if (e >= p.K)
                    continue;
                float wf[CUDA_GEMV_MAX_RW][8];
#pragma unroll
                for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
                    piece_to_f32<WT>(wv[r][j], wf[r]);
#pragma unroll
                for (int m = 0; m < MR; m++) {
                    if (m >= M)
                        break;
                    const float *xr = p.x + m * p.xs + e;
                    float xv[8];
                    const float4 x0 = __ldg((const float4 *)xr);
                    xv[0] = x0.x, xv[1] = x0.y, xv[2] = x0.z, xv[3] = x0.w;
                    if (E == 8) {
                        const float4 x1 = __ldg((const float4 *)xr + 1);
                        xv[4] = x1.x, xv[5] = x1.y, xv[6] = x1.z, xv[7] = x1.w;
                    }
#pragma unroll
                    for (int r = 0; r < CUDA_GEMV_MAX_RW; r++) {
                        float part = 0.0f;
#pragma unroll
                        for (int i = 0; i < E; i++)
                            part += wf[r][i] * xv[i];
                        acc[r][m] += part;
                    }
                }
            }
        }
    } else {
        for (int64_t k = warp * 32 + lane; k < p.K; k += CUDA_GEMV_WARPS * 32) {
            float wf[CUDA_GEMV_MAX_RW];
#pragma unroll
            for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
                wf[r] = row_ok[r] ? elem_f32(wrow[r], WT, k) : 0.0f;
#pragma unroll
            for (int m = 0; m < MR; m++) {
                if (m >= M)
                    break;
                const float xv = __ldg(p.x + m * p.xs + k);
#pragma unroll
                for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
                    acc[r][m] += wf[r] * xv;
            }
        }
    }

    /* Lanes, then the block's warps. */
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_MAX_RW; r++)
#pragma unroll
        for (int m = 0; m < MR; m++) {
            float v = acc[r][m];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, off);
            if (lane == 0)
                red[warp][r][m] = v;
        }
    __syncthreads();
    const int r = threadIdx.x / MR, m = threadIdx.x % MR;
    if (r < p.rw && m < M && n0 + r < p.N) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < CUDA_GEMV_WARPS; w++)
            v += red[w][r][m];
        if (p.bias)
            v += p.bias[n0 + r];
        p.y[m * p.ys + n0 + r] = v;
    }
}

template <int WT>
static cudaError_t launch_dt(const cuda_gemv_params *p, cudaStream_t stream) {
    const unsigned blocks = (unsigned)((p->N + p->rw - 1) / p->rw);
    if (p->M <= 1)
        matmul_gemv<WT, 1><<<blocks, GEMV_THREADS, 0, stream>>>(*p);
    else if (p->M <= 2)
        matmul_gemv<WT, 2><<<blocks, GEMV_THREADS, 0, stream>>>(*p);
    else if (p->M <= 4)
        matmul_gemv<WT, 4><<<blocks, GEMV_THREADS, 0, stream>>>(*p);
    else
        matmul_gemv<WT, 8><<<blocks, GEMV_THREADS, 0, stream>>>(*p);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_gemv_launch(const cuda_gemv_params *p, cudaStream_t stream) {
    if (p->M < 1 || p->M > CUDA_GEMV_MAX_M || p->rw < 1 || p->rw > CUDA_GEMV_MAX_RW ||
        (p->N + p->rw - 1) / p->rw > 0x7fffffff)
        return cudaErrorInvalidValue;
    switch (p->wdt) {
    case DT_F32: return launch_dt<DT_F32>(p, stream);
    case DT_F16: return launch_dt<DT_F16>(p, stream);
    case DT_BF16: return launch_dt<DT_BF16>(p, stream);
    case DT_Q8_0: return launch_dt<DT_Q8_0>(p, stream);
    default: return cudaErrorInvalidValue;
    }
}

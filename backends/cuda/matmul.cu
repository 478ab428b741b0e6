/* CUDA matmul (ela.h "Model ops"): y [M, N] = x [M, K] . w [N, K]^T (+ bias), x, y f32, w f32,
 * f16, bf16 or q8_0. Picks the kernel (matmul_kernels.h) and prepares its operands:
 *   M <= 8            GEMV (matmul_gemv.cu), every weight dtype, memory-bound;
 *   M > 8, w 16-bit or q8_0: tensor cores (matmul_mma.cu) on activations split into hi + lo
 *                     16-bit halves by matmul_split below;
 *   M > 8, w f32      matmul_f32_tiled below: 64 x 64 outputs per block of 256 threads, each
 *                     thread 4 x 4 in registers, K in steps of 16 through shared memory; bound by
 *                     FMA issue (a few TFLOP/s: f32 weights are the fixtures' and tests' dtype,
 *                     not a serving one).
 * Operands the fast kernels cannot read directly (activation rows off 16-byte alignment, 16-bit
 * weight rows off 16-byte alignment, seen in tests' strided views) are first packed into stream
 * scratch. matmul_split: one block per activation row: its max |x| (f16 only), then hi =
 * round(x * s), lo = round(x * s - hi), s a power of two; one read of x, two 16-bit writes. */
#include <string.h>

#include "cuda_check.h"
#include "matmul_kernels.h"
#include "model_ops_device.cuh"

#define SPLIT_THREADS 256
#define FT 64 /* f32 tile */
#define FK 16
#define PACK_THREADS 256

/* ---- activation split for the tensor-core path --------------------------------------------- */
template <int AT>
__global__ void __launch_bounds__(SPLIT_THREADS)
    matmul_split(const float *x, int64_t xs, int64_t K, int64_t ka, void *hi, void *lo,
                 float *rscale) {
    __shared__ float red[SPLIT_THREADS / 32];
    const int64_t m = blockIdx.x;
    const float *row = x + m * xs;
    float s = 1.0f;
    if (AT == MO_F16) {
        float amax = 0.0f;
        for (int64_t k = threadIdx.x; k < K; k += SPLIT_THREADS)
            amax = fmaxf(amax, fabsf(row[k]));
        amax = mo_warp_max(amax);
        if ((threadIdx.x & 31) == 0)
            red[threadIdx.x >> 5] = amax;
        __syncthreads();
        amax = red[0];
        for (int i = 1; i < SPLIT_THREADS / 32; i++)
            amax = fmaxf(amax, red[i]);
        if (amax > 0.0f && amax <= 3.402823466e38f) {
            int e;
            frexpf(amax, &e); /* amax in [2^(e-1), 2^e): scaled max in [2^14, 2^15) */
            int sh = 15 - e;
            sh = sh < -100 ? -100 : sh > 100 ? 100 : sh;
            s = ldexpf(1.0f, sh);
        }
    }
    for (int64_t k = threadIdx.x; k < ka; k += SPLIT_THREADS) {
        const float v = k < K ? row[k] * s : 0.0f;
        if (AT == MO_F16) {
            const __half h = __float2half_rn(v);
            ((__half *)hi)[m * ka + k] = h;
            ((__half *)lo)[m * ka + k] = __float2half_rn(v - __half2float(h));
        } else {
            const __nv_bfloat16 h = __float2bfloat16_rn(v);
            ((__nv_bfloat16 *)hi)[m * ka + k] = h;
            ((__nv_bfloat16 *)lo)[m * ka + k] = __float2bfloat16_rn(v - __bfloat162float(h));
        }
    }
    if (threadIdx.x == 0)
        rscale[m] = 1.0f / s;
}

/* ---- f32 weights, M > 8 ---------------------------------------------------------------------- */
__global__ void __launch_bounds__(256)
    matmul_f32_tiled(const float *x, int64_t xs, const char *w, int64_t ws, const float *bias,
                     float *y, int64_t ys, int64_t M, int64_t N, int64_t K) {
    __shared__ __align__(16) float as[FK][FT + 4];
    __shared__ __align__(16) float bs[FK][FT + 4];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t m0 = (int64_t)blockIdx.y * FT, n0 = (int64_t)blockIdx.x * FT;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            acc[i][j] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += FK) {
#pragma unroll
        for (int i = 0; i < FT * FK / 256; i++) {
            const int id = tid + i * 256, r = id >> 4, k = id & 15;
            const bool kin = k0 + k < K;
            as[k][r] = m0 + r < M && kin ? x[(m0 + r) * xs + k0 + k] : 0.0f;
            bs[k][r] = n0 + r < N && kin ? ((const float *)(w + (n0 + r) * ws))[k0 + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < FK; k++) {
            const float4 a = *(const float4 *)&as[k][ty * 4];
            const float4 b = *(const float4 *)&bs[k][tx * 4];
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int64_t m = m0 + ty * 4 + i;
        if (m >= M)
            continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t n = n0 + tx * 4 + j;
            if (n < N)
                y[m * ys + n] = acc[i][j] + (bias ? bias[n] : 0.0f);
        }
    }
}

/* ---- small kernels --------------------------------------------------------------------------- */
/* dst [rows, cols] packed (element size es: 2 or 4 bytes), zero past `valid` columns. */
__global__ void __launch_bounds__(PACK_THREADS)
    matmul_pack(const char *src, int64_t ss, char *dst, int64_t rows, int64_t cols, int64_t valid,
                int es) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t c = (int64_t)blockIdx.x * PACK_THREADS + threadIdx.x; c < cols;
             c += (int64_t)gridDim.x * PACK_THREADS) {
            if (es == 4)
                ((float *)(dst + r * cols * 4))[c] = c < valid ? ((const float *)(src + r * ss))[c]
                                                               : 0.0f;
            else
                ((unsigned short *)(dst + r * cols * 2))[c] =
                    c < valid ? ((const unsigned short *)(src + r * ss))[c] : (unsigned short)0;
        }
}

/* K = 0: y = bias (or 0). */
__global__ void matmul_fill(const float *bias, float *y, int64_t ys, int64_t M, int64_t N) {
    for (int64_t m = blockIdx.y; m < M; m += gridDim.y)
        for (int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; n < N;
             n += (int64_t)gridDim.x * blockDim.x)
            y[m * ys + n] = bias ? bias[n] : 0.0f;
}

/* ---- host ------------------------------------------------------------------------------------ */
static int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

static dim3 grid2(int64_t cols, int64_t rows, int threads) {
    int64_t gx = (cols + threads - 1) / threads;
    gx = gx < 1 ? 1 : gx > 4096 ? 4096 : gx;
    const int64_t gy = rows < 1 ? 1 : rows > 65535 ? 65535 : rows;
    return dim3((unsigned)gx, (unsigned)gy);
}

/* Packed copy of [rows, cols_valid] (row stride ss bytes) into new scratch [rows, cols]. */
static ela_status pack(cuda_ctx *ctx, const char *src, int64_t ss, int64_t rows, int64_t cols,
                       int64_t valid, int es, void **out) {
    ela_status st = cuda_scratch_alloc(ctx, (size_t)(rows * cols * es), out);
    if (st != ELA_OK)
        return st;
    matmul_pack<<<grid2(cols, rows, PACK_THREADS), PACK_THREADS, 0, ctx->stream>>>(
        src, ss, (char *)*out, rows, cols, valid, es);
    CUDA_LAUNCHED("matmul pack kernel");
    return ELA_OK;
}

extern "C" ela_status cuda_matmul(void *vctx, const ela_matmul_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    const int wdt = (int)a->w->dtype;
    const float *x = (const float *)cuda_tensor_ptr(a->x);
    int64_t xs = a->x->strides[0] / 4;
    const char *w = cuda_tensor_ptr(a->w);
    const int64_t ws = a->w->strides[0];
    const float *bias = a->bias ? (const float *)cuda_tensor_ptr(a->bias) : NULL;
    float *y = (float *)cuda_tensor_ptr(a->y);
    const int64_t ys = a->y->strides[0] / 4;
    const int64_t M = a->M, N = a->N, K = a->K;
    ctx->generation++;

    if (K == 0) {
        matmul_fill<<<grid2(N, M, 256), 256, 0, ctx->stream>>>(bias, y, ys, M, N);
        CUDA_LAUNCHED("matmul fill kernel");
        return ELA_OK;
    }
    void *xpack = NULL, *wpack = NULL, *split = NULL;
    cudaError_t err = cudaSuccess;
    const char *what = "";
    if (M <= CUDA_GEMV_MAX_M) {
        if ((((uintptr_t)x) & 15) || (xs & 3)) {
            const int64_t kp = round_up(K, 4);
            if ((st = pack(ctx, (const char *)x, xs * 4, M, kp, K, 4, &xpack)) != ELA_OK)
                return st;
            x = (const float *)xpack;
            xs = kp;
        }
        cuda_gemv_params p;
        memset(&p, 0, sizeof p);
        p.x = x, p.xs = xs, p.w = w, p.ws = ws, p.bias = bias, p.y = y, p.ys = ys;
        p.N = N, p.K = K, p.M = (int)M, p.wdt = wdt;
        /* Four rows per block keep each activation load for four weight rows; fewer when N is
         * small, so that blocks still cover the SMs several times. */
        p.rw = N >= 2048 ? 4 : N >= 512 ? 2 : 1;
        const int64_t per_piece = wdt == ELA_F32 ? 4 : 8;
        p.vec = wdt != ELA_Q8_0 && (((uintptr_t)w) & 15) == 0 && (ws & 15) == 0 &&
                K % per_piece == 0;
        if ((N + p.rw - 1) / p.rw > 0x7fffffff) {
            st = cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: matmul: N = %lld weight rows is too many",
                           (long long)N);
            goto done;
        }
        err = cuda_gemv_launch(&p, ctx->stream);
        what = "matmul GEMV kernel";
    } else if (wdt == ELA_F32) {
        if ((M + FT - 1) / FT > 65535 || (N + FT - 1) / FT > 0x7fffffff) {
            st = cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: matmul: M = %lld rows is too many",
                           (long long)M);
            goto done;
        }
        const dim3 grid((unsigned)((N + FT - 1) / FT), (unsigned)((M + FT - 1) / FT));
        matmul_f32_tiled<<<grid, 256, 0, ctx->stream>>>(x, xs, w, ws, bias, y, ys, M, N, K);
        err = cudaGetLastError();
        what = "matmul f32 tiled kernel";
    } else {
        if ((M + CUDA_MMA_TILE_M - 1) / CUDA_MMA_TILE_M > 65535 || M > 0x7fffffff) {
            st = cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: matmul: M = %lld rows is too many",
                           (long long)M);
            goto done;
        }
        const int64_t ka = round_up(K, CUDA_MMA_TILE_K);
        const size_t half_bytes = (size_t)round_up(M * ka * 2, 256);
        if ((st = cuda_scratch_alloc(ctx, 2 * half_bytes + (size_t)M * 4, &split)) != ELA_OK)
            goto done;
        cuda_mma_params p;
        memset(&p, 0, sizeof p);
        p.a_hi = split;
        p.a_lo = (char *)split + half_bytes;
        p.rscale = (const float *)((char *)split + 2 * half_bytes);
        p.ka = ka;
        p.w = w, p.ws = ws, p.bias = bias, p.y = y, p.ys = ys;
        p.M = M, p.N = N, p.K = K, p.wdt = wdt;
        if (wdt == ELA_BF16)
            matmul_split<MO_BF16><<<(unsigned)M, SPLIT_THREADS, 0, ctx->stream>>>(
                x, xs, K, ka, (void *)p.a_hi, (void *)p.a_lo, (float *)p.rscale);
        else
            matmul_split<MO_F16><<<(unsigned)M, SPLIT_THREADS, 0, ctx->stream>>>(
                x, xs, K, ka, (void *)p.a_hi, (void *)p.a_lo, (float *)p.rscale);
        if ((err = cudaGetLastError()) != cudaSuccess) {
            what = "matmul split kernel";
            goto done;
        }
        if (wdt != ELA_Q8_0 && ((((uintptr_t)w) & 15) || (ws & 15) || K % 8)) {
            const int64_t kp = round_up(K, 8);
            if ((st = pack(ctx, w, ws, N, kp, K, 2, &wpack)) != ELA_OK)
                goto done;
            p.w = (const char *)wpack;
            p.ws = kp * 2;
        }
        p.w_end = p.w + (N - 1) * p.ws +
                  (wdt == ELA_Q8_0 ? K / 32 * 34 : K * (int64_t)(wdt == ELA_F32 ? 4 : 2));
        err = cuda_mma_launch(&p, ctx->stream);
        what = "matmul tensor-core kernel";
    }
done:
    if (split)
        cuda_scratch_free(ctx, split);
    if (wpack)
        cuda_scratch_free(ctx, wpack);
    if (xpack)
        cuda_scratch_free(ctx, xpack);
    if (st != ELA_OK)
        return st;
    if (err != cudaSuccess)
        return cuda_fail_err(err, what);
    return ELA_OK;
}

/* CUDA decode_select (op 7: DESIGN.md 4.7, PAPERS.md 3.2): LessIsMore's unified top-k selection
 * for one decode query, with the CPU backend's budget split and ranking (logit descending,
 * index ascending; NaN ranks as -inf, -0 as +0), in three kernels and no wait:
 *   logits: the G query rows of a KV head (q * scale in f32, as the CPU computes them) in
 *     shared memory; a thread per candidate key reading its K row in 16-byte pieces (16-bit K,
 *     aligned rows), else a warp per key (lanes split d); each logit stored as ordered bits (a
 *     larger uint32 is a larger float) into [Hq][ncand rounded up to 4]. Bound: Hkv n d K
 *     elements, half a dense decode step.
 *   top: one block of 1024 threads per query head: a radix select over the ordered bits (four
 *     8-bit digits, four entries per 16-byte load, warp-aggregated shared histograms) finds
 *     the k_mid-th largest value; every
 *     candidate above it and the lowest-index ones equal to it (a block-wide prefix count in
 *     index order) go to shared memory as 64-bit keys (bits << 32 | ~index), which a bitonic
 *     sort puts in rank order; rank r of head h becomes top[h][r], and atomicMin records each
 *     key's first appearance r Hq + h. When k_mid keys do not fit shared memory (or under
 *     ELA_CUDA_FORCE=generic), the keys go to scratch and each one's rank is counted against the
 *     others (O(k_mid^2), huge budgets only).
 *   union: one block: sinks 0 .. sinks-1, then the rank-major union (rank outer, head inner,
 *     the first k_mid distinct keys: an entry r Hq + h is taken exactly when it is its key's
 *     first appearance, placed by a running prefix count), then the recent keys ascending.
 * Measured (H100, bf16, d 128, Hq 32, Hkv 8, n = 128K, K = 2048, ncu clocks): logits 159 us
 * (1.6 TB/s of K), top 245 us, union 41 us; a dense decode step is 180 us. */
#include <string.h>

#include "attn_dense_device.cuh"
#include "cuda_check.h"

#define DS_LOGIT_THREADS 128
#define DS_KEYS 256 /* candidate keys per logits block */
#define DS_TOP_THREADS 1024
#define DS_SMEM_KEYS 16384 /* most k_mid sorted in shared memory (128 KiB) */

typedef struct {
    const char *q, *k;
    int64_t q_s1, k_s0, k_s1;
    int tq, tk, d, G, hq;
    float scale;
    int64_t n, lo, ncand, ncp, k_mid, n_rec, sinks, P; /* ncp: ncand rounded up to 4 */
    unsigned *ord;            /* [hq][ncp], zero past ncand (ranks below every logit) */
    unsigned long long *sel;  /* [hq][k_mid] (keys that do not fit shared memory) */
    int *top;                 /* [hq][k_mid] */
    unsigned *first;          /* [ncand], 0xffffffff: none */
    char *out;                /* i32 list, out_s0 bytes apart */
    int64_t out_s0;
} ds_params;

static __device__ __forceinline__ unsigned ds_ord(float v) {
    unsigned b = __float_as_uint(v);
    if ((b & 0x7fffffffu) > 0x7f800000u)
        b = 0xff800000u; /* NaN -> -inf */
    if (b == 0x80000000u)
        b = 0u; /* -0 -> +0 */
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

/* grid (ceil(ncand / DS_KEYS), hkv) */
__global__ void __launch_bounds__(DS_LOGIT_THREADS) ds_logits(const ds_params p) {
    extern __shared__ float ds_q[]; /* [G][d] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = blockIdx.y, G = p.G, d = p.d;
    const int qes = attn_dtype_size(p.tq), kes = attn_dtype_size(p.tk);
    for (int e = tid; e < G * d; e += DS_LOGIT_THREADS) {
        const int r = e / d, c = e % d;
        ds_q[e] = attn_load(p.q + (int64_t)(g * G + r) * p.q_s1 + (int64_t)c * qes, p.tq) * p.scale;
    }
    __syncthreads();
    const int64_t c0 = (int64_t)blockIdx.x * DS_KEYS;
    const char *kg = p.k + (int64_t)g * p.k_s0;
    for (int jj = warp; jj < DS_KEYS; jj += DS_LOGIT_THREADS / 32) {
        const int64_t c = c0 + jj;
        if (c >= p.ncand)
            break;
        const char *krow = kg + (p.lo + c) * p.k_s1;
        for (int r0 = 0; r0 < G; r0 += 8) {
            float part[8];
#pragma unroll
            for (int rr = 0; rr < 8; rr++)
                part[rr] = 0.0f;
            for (int x = lane; x < d; x += 32) {
                const float kv = attn_load(krow + (int64_t)x * kes, p.tk);
#pragma unroll
                for (int rr = 0; rr < 8; rr++)
                    if (r0 + rr < G)
                        part[rr] += ds_q[(r0 + rr) * d + x] * kv;
            }
#pragma unroll
            for (int rr = 0; rr < 8; rr++)
                if (r0 + rr < G) { /* uniform over the warp */
                    const float v = attn_warp_sum(part[rr]);
                    if (lane == 0)
                        p.ord[(int64_t)(g * G + r0 + rr) * p.ncp + c] = ds_ord(v);
                }
        }
    }
}

/* 16-bit K with 16-byte aligned rows, d a multiple of 8: a thread per candidate key reads its
 * row in 16-byte pieces and dots it with the G query rows (shared memory, broadcast), 8 heads
 * per pass; no shuffles, and the ordered logits of consecutive keys are stored together.
 * grid (ceil(ncand / DS_ROW_THREADS), hkv). */
#define DS_ROW_THREADS 256
template <bool BF>
__global__ void __launch_bounds__(DS_ROW_THREADS) ds_logits_rows(const ds_params p) {
    extern __shared__ float ds_qr[]; /* [G][d] */
    const int g = blockIdx.y, G = p.G, d = p.d;
    const int qes = attn_dtype_size(p.tq);
    for (int e = threadIdx.x; e < G * d; e += DS_ROW_THREADS) {
        const int r = e / d, c = e % d;
        ds_qr[e] = attn_load(p.q + (int64_t)(g * G + r) * p.q_s1 + (int64_t)c * qes, p.tq) * p.scale;
    }
    __syncthreads();
    const int64_t c = (int64_t)blockIdx.x * DS_ROW_THREADS + threadIdx.x;
    if (c >= p.ncand)
        return;
    const uint4 *row = (const uint4 *)(p.k + (int64_t)g * p.k_s0 + (p.lo + c) * p.k_s1);
    for (int r0 = 0; r0 < G; r0 += 8) {
        float acc[8];
#pragma unroll
        for (int rr = 0; rr < 8; rr++)
            acc[rr] = 0.0f;
#pragma unroll 4
        for (int x8 = 0; x8 < d / 8; x8++) {
            const uint4 v = row[x8];
            const unsigned w[4] = {v.x, v.y, v.z, v.w};
            float f[8];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (BF) {
                    f[2 * e] = __uint_as_float(w[e] << 16);
                    f[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
                } else {
                    const float2 h2 = __half22float2(*(const __half2 *)&w[e]);
                    f[2 * e] = h2.x;
                    f[2 * e + 1] = h2.y;
                }
            }
#pragma unroll
            for (int rr = 0; rr < 8; rr++)
                if (r0 + rr < G) {
                    const float *qr = ds_qr + (r0 + rr) * d + x8 * 8;
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[rr] += qr[e] * f[e];
                }
        }
#pragma unroll
        for (int rr = 0; rr < 8; rr++)
            if (r0 + rr < G)
                p.ord[(int64_t)(g * G + r0 + rr) * p.ncp + c] = ds_ord(acc[rr]);
    }
}

static __device__ __forceinline__ unsigned long long ds_key(unsigned o, int64_t j) {
    return (unsigned long long)o << 32 | (unsigned)(0xffffffffu - (unsigned)j);
}

static __device__ __forceinline__ int ds_index(unsigned long long key) {
    return (int)(0xffffffffu - (unsigned)key);
}

/* grid (hq): head h's top k_mid, sorted, into top[h] and first[]. */
__global__ void __launch_bounds__(DS_TOP_THREADS) ds_top(const ds_params p) {
    extern __shared__ unsigned long long ds_keys[]; /* [P] when the keys fit */
    __shared__ unsigned hist[256];
    __shared__ unsigned s_prefix, s_need, s_above, s_warp[DS_TOP_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, h = blockIdx.x;
    const uint4 *ord4 = (const uint4 *)(p.ord + (int64_t)h * p.ncp);
    const int64_t nv = p.ncp / 4; /* four ordered logits per load (zeros past ncand) */
    const bool in_smem = p.P > 0;
    unsigned long long *keys = in_smem ? ds_keys : p.sel + (int64_t)h * p.k_mid;

    unsigned prefix = 0u, mask = 0u, need = (unsigned)p.k_mid;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += DS_TOP_THREADS)
            hist[b] = 0u;
        __syncthreads();
        for (int64_t c4 = tid; c4 < nv; c4 += DS_TOP_THREADS) {
            const uint4 v = ord4[c4];
            const unsigned o4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const unsigned o = o4[e];
                if ((o & mask) == prefix) {
                    const unsigned bin = (o >> shift) & 255u;
                    const unsigned act = __activemask();
                    const unsigned same = __match_any_sync(act, bin);
                    if ((__ffs(same) - 1) == lane) /* one add per distinct bin of the warp */
                        atomicAdd(&hist[bin], (unsigned)__popc(same));
                }
            }
        }
        __syncthreads();
        if (tid == 0) {
            unsigned above = 0u, dg = 255u;
            for (; dg > 0u && above + hist[dg] < need; dg--)
                above += hist[dg];
            s_prefix = prefix | (dg << shift);
            s_need = need - above;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
    }
    /* prefix: the k_mid-th largest value (never 0: zeros are padding, below every logit);
     * need: how many entries equal to it are taken (the lowest indices); the others above it
     * are k_mid - need. */
    const unsigned thr = prefix, n_above = (unsigned)p.k_mid - need;
    if (tid == 0)
        s_above = 0u;
    __syncthreads();
    unsigned eq_base = 0u;
    for (int64_t b0 = 0; b0 < nv; b0 += DS_TOP_THREADS) { /* 4 entries per thread, in order */
        const int64_t c4 = b0 + tid;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (c4 < nv)
            v = ord4[c4];
        const unsigned o4[4] = {v.x, v.y, v.z, v.w};
        unsigned n_eq = 0u;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            if (o4[e] > thr)
                keys[atomicAdd(&s_above, 1u)] = ds_key(o4[e], p.lo + 4 * c4 + e);
            n_eq += o4[e] == thr;
        }
        /* exclusive prefix of n_eq over the threads, in index order */
        unsigned incl = n_eq;
        for (int off = 1; off < 32; off <<= 1) {
            const unsigned y = __shfl_up_sync(0xffffffffu, incl, off);
            if (lane >= off)
                incl += y;
        }
        if (lane == 31)
            s_warp[warp] = incl;
        __syncthreads();
        unsigned before = incl - n_eq, chunk = 0u;
        for (int w = 0; w < DS_TOP_THREADS / 32; w++) {
            const unsigned x = s_warp[w];
            before += w < warp ? x : 0u;
            chunk += x;
        }
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (o4[e] == thr) {
                if (eq_base + before < need)
                    keys[n_above + eq_base + before] = ds_key(o4[e], p.lo + 4 * c4 + e);
                before++;
            }
        eq_base += chunk;
        __syncthreads(); /* s_warp is rewritten by the next chunk */
    }
    __syncthreads();
    if (in_smem) {
        for (int64_t e = p.k_mid + tid; e < p.P; e += DS_TOP_THREADS)
            keys[e] = 0ull; /* padding ranks last */
        for (int64_t k = 2; k <= p.P; k <<= 1)
            for (int64_t j = k >> 1; j > 0; j >>= 1) {
                __syncthreads();
                for (int64_t x = tid; x < p.P; x += DS_TOP_THREADS) {
                    const int64_t y = x ^ j;
                    if (y > x) {
                        const unsigned long long kx = keys[x], ky = keys[y];
                        /* descending runs where (x & k) == 0 */
                        if ((ky > kx) == ((x & k) == 0)) {
                            keys[x] = ky;
                            keys[y] = kx;
                        }
                    }
                }
            }
        __syncthreads();
        for (int64_t r = tid; r < p.k_mid; r += DS_TOP_THREADS) {
            const int key = ds_index(keys[r]);
            p.top[(int64_t)h * p.k_mid + r] = key;
            atomicMin(&p.first[key - p.lo], (unsigned)(r * p.hq + h));
        }
        return;
    }
    __threadfence_block();
    __syncthreads();
    for (int64_t e = tid; e < p.k_mid; e += DS_TOP_THREADS) {
        const unsigned long long ke = keys[e];
        int64_t rank = 0;
        for (int64_t f = 0; f < p.k_mid; f++)
            rank += keys[f] > ke;
        const int key = ds_index(ke);
        p.top[(int64_t)h * p.k_mid + rank] = key;
        atomicMin(&p.first[key - p.lo], (unsigned)(rank * p.hq + h));
    }
}

static __device__ __forceinline__ void ds_put(const ds_params &p, int64_t at, int64_t key) {
    *(int *)(p.out + at * p.out_s0) = (int)key;
}

/* One block: the output list. */
__global__ void __launch_bounds__(DS_TOP_THREADS) ds_union(const ds_params p) {
    __shared__ unsigned s_warp[DS_TOP_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int64_t j = tid; j < p.sinks; j += DS_TOP_THREADS)
        ds_put(p, j, j);
    for (int64_t j = tid; j < p.n_rec; j += DS_TOP_THREADS)
        ds_put(p, p.sinks + p.k_mid + j, p.n - p.n_rec + j);
    const int64_t E = (int64_t)p.hq * p.k_mid;
    int64_t taken = 0;
    for (int64_t e0 = 0; e0 < E && taken < p.k_mid; e0 += DS_TOP_THREADS) { /* uniform */
        const int64_t e = e0 + tid;
        int key = 0;
        bool first = false;
        if (e < E) {
            const int64_t r = e / p.hq, h = e % p.hq;
            key = p.top[h * p.k_mid + r];
            first = p.first[key - p.lo] == (unsigned)e;
        }
        const unsigned bal = __ballot_sync(0xffffffffu, first);
        if (lane == 0)
            s_warp[warp] = (unsigned)__popc(bal);
        __syncthreads();
        int64_t before = 0, chunk = 0;
        for (int w = 0; w < DS_TOP_THREADS / 32; w++) {
            before += w < warp ? s_warp[w] : 0u;
            chunk += s_warp[w];
        }
        before += __popc(bal & ((1u << lane) - 1u));
        if (first && taken + before < p.k_mid)
            ds_put(p, p.sinks + taken + before, key);
        taken += chunk;
        __syncthreads();
    }
}

/* Every key 0 .. n-1 (budget >= n). */
__global__ void ds_all(const ds_params p) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < p.n)
        ds_put(p, j, j);
}

/* backends/cpu/decode_select.c's split_mid: k_mid = floor(K (1 - recent)); integer when 4 recent
 * is an integer, else in double with an allowance of K 1e-7 (values are non-negative, so the
 * truncation is the floor). */
static int64_t split_mid(int64_t kb, float recent) {
    double r4 = 4.0 * (double)recent;
    int64_t mid;
    if (r4 == (double)(int64_t)r4)
        mid = kb * (4 - (int64_t)r4) / 4;
    else
        mid = (int64_t)((double)kb * (1.0 - (double)recent) + (double)kb * 1e-7);
    return mid < 0 ? 0 : mid > kb ? kb : mid;
}

extern "C" ela_status cuda_decode_select(void *vctx, const ela_decode_select_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    if (a->n > INT32_MAX || (int64_t)a->hq * a->p.budget > INT32_MAX)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: decode_select: more than 2^31 keys or "
                         "ranked entries (n = %lld, Hq = %d, budget %lld)", (long long)a->n, a->hq,
                         (long long)a->p.budget);
    ds_params p;
    memset(&p, 0, sizeof p);
    p.q = cuda_tensor_ptr(a->q);
    p.k = cuda_tensor_ptr(a->k);
    p.q_s1 = a->q->strides[1];
    p.k_s0 = a->k->strides[0], p.k_s1 = a->k->strides[1];
    p.tq = (int)a->q->dtype, p.tk = (int)a->k->dtype;
    p.d = (int)a->d, p.G = a->hq / a->hkv, p.hq = a->hq;
    p.scale = a->scale;
    p.n = a->n;
    p.out = cuda_tensor_ptr(a->idx);
    p.out_s0 = a->idx->strides[0];
    ctx->generation++;
    cudaError_t err;
    if (a->p.budget >= a->n) { /* every token */
        ds_all<<<(unsigned)((a->n + 255) / 256), 256, 0, ctx->stream>>>(p);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return cuda_fail_err(err, "decode_select kernel");
        *a->count = a->n;
        return ELA_OK;
    }
    const int64_t kb = a->p.budget;
    p.k_mid = split_mid(kb, a->p.recent);
    p.n_rec = kb - p.k_mid;
    p.sinks = a->p.sinks;
    if (p.n_rec < p.sinks)
        p.sinks = 0;
    p.n_rec -= p.sinks;
    p.lo = p.sinks;
    p.ncand = p.k_mid > 0 ? a->n - p.n_rec - p.sinks : 0;
    p.ncp = (p.ncand + 3) / 4 * 4;
    p.P = 1;
    while (p.P < p.k_mid)
        p.P *= 2;
    size_t top_smem = (size_t)p.P * 8;
    if (p.k_mid > DS_SMEM_KEYS || top_smem > ctx->props.sharedMemPerBlockOptin ||
        ctx->path == CUDA_PATH_GENERIC) {
        p.P = 0; /* ranks counted in scratch */
        top_smem = 0;
    }
    const size_t q_smem = (size_t)p.G * p.d * sizeof(float);
    if (q_smem > ctx->props.sharedMemPerBlockOptin)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: decode_select: %d query heads per KV head at "
                         "d = %d do not fit %s's shared memory", p.G, p.d, ctx->props.name);

    /* Scratch: ord, sel (only without shared-memory sort), top, first. */
    const size_t ord_b = (size_t)p.hq * p.ncp * 4, sel_b = p.P ? 0 : (size_t)p.hq * p.k_mid * 8;
    const size_t top_b = (size_t)p.hq * p.k_mid * 4, first_b = (size_t)p.ncand * 4;
    const size_t off_sel = (ord_b + 15) & ~(size_t)15, off_top = off_sel + sel_b;
    const size_t off_first = (off_top + top_b + 15) & ~(size_t)15;
    char *scratch = NULL;
    if ((st = cuda_scratch_alloc(ctx, off_first + first_b, (void **)&scratch)) != ELA_OK)
        return st;
    p.ord = (unsigned *)scratch;
    p.sel = (unsigned long long *)(scratch + off_sel);
    p.top = (int *)(scratch + off_top);
    p.first = (unsigned *)(scratch + off_first);
    const char *what = "decode_select";
    if (p.k_mid > 0) {
        if ((err = cudaMemsetAsync(p.first, 0xff, first_b, ctx->stream)) != cudaSuccess) {
            what = "cudaMemsetAsync";
            goto fail;
        }
        if (p.ncp != p.ncand && (err = cudaMemsetAsync(p.ord, 0, ord_b, ctx->stream)) !=
                                    cudaSuccess) {
            what = "cudaMemsetAsync";
            goto fail;
        }
        const void *kern = (const void *)ds_logits;
        if (ctx->path == CUDA_PATH_AUTO && (p.tk == ELA_F16 || p.tk == ELA_BF16) && p.d % 8 == 0 &&
            (((uintptr_t)p.k | (uintptr_t)p.k_s0 | (uintptr_t)p.k_s1) & 15) == 0)
            kern = p.tk == ELA_BF16 ? (const void *)ds_logits_rows<true>
                                    : (const void *)ds_logits_rows<false>;
        if (q_smem > 48 * 1024 &&
            (err = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)q_smem)) != cudaSuccess)
            goto fail;
        if (kern == (const void *)ds_logits)
            ds_logits<<<dim3((unsigned)((p.ncand + DS_KEYS - 1) / DS_KEYS), (unsigned)a->hkv, 1),
                        DS_LOGIT_THREADS, q_smem, ctx->stream>>>(p);
        else if (p.tk == ELA_BF16)
            ds_logits_rows<true><<<dim3((unsigned)((p.ncand + DS_ROW_THREADS - 1) /
                                                   DS_ROW_THREADS), (unsigned)a->hkv, 1),
                                   DS_ROW_THREADS, q_smem, ctx->stream>>>(p);
        else
            ds_logits_rows<false><<<dim3((unsigned)((p.ncand + DS_ROW_THREADS - 1) /
                                                    DS_ROW_THREADS), (unsigned)a->hkv, 1),
                                    DS_ROW_THREADS, q_smem, ctx->stream>>>(p);
        what = "decode_select logits kernel";
        if ((err = cudaGetLastError()) != cudaSuccess)
            goto fail;
        if (top_smem > 48 * 1024 &&
            (err = cudaFuncSetAttribute(ds_top, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)top_smem)) != cudaSuccess)
            goto fail;
        ds_top<<<(unsigned)p.hq, DS_TOP_THREADS, top_smem, ctx->stream>>>(p);
        what = "decode_select top-k kernel";
        if ((err = cudaGetLastError()) != cudaSuccess)
            goto fail;
    }
    ds_union<<<1, DS_TOP_THREADS, 0, ctx->stream>>>(p);
    what = "decode_select union kernel";
    if ((err = cudaGetLastError()) != cudaSuccess)
        goto fail;
    cuda_scratch_free(ctx, scratch);
    *a->count = kb;
    return ELA_OK;
fail:
    cuda_scratch_free(ctx, scratch);
    return cuda_fail_err(err, what);
}

/* CUDA dense attention (DESIGN.md 4.1): picks the kernel for a call and plans its key splits,
 * and merges the splits by their log-sum-exp (flash-decoding's second pass).
 *   decode  (attn_dense_decode_mma.cu, tensor cores): L * G <= 16 rows per KV head, q/k/v one
 *           16-bit dtype, d 64/128, K/V rows 16-byte aligned, scale > 0; keys split so every SM
 *           holds one block; each K/V byte read once for the G heads.
 *   decode  (attn_dense_decode.cu, CUDA cores): the other decodes with L * G <= 32 rows per KV
 *           head, d 64/128, K/V rows 16-byte aligned (f32 q with a 16-bit cache, f32 K/V).
 *   mma     (attn_dense_mma.cu): q, k, v one 16-bit dtype, d 64/128, rows 16-byte aligned,
 *           scale > 0;
 *           tensor cores; keys split only when the query tiles alone cannot fill the GPU.
 *   generic (attn_dense_generic.cu): everything else, and everything under ELA_CUDA_FORCE.
 * Merge kernel: one block per (query row, head); thread c owns column c; reads every split's
 * partial row once: splits * (d + 2) * 4 bytes per row, negligible next to K and V. */
#include <math.h>
#include <string.h>

#include "attn_dense_device.cuh"
#include "attn_host.h"
#include "cuda_check.h"

#define LOG2E 1.4426950408889634f
#define MERGE_THREADS 128
#define MAX_SPLITS 256

/* One block per (query row i, head h): the splits' weights exp2(m_s - M) go to shared memory,
 * then thread c sums column c over the splits (partial rows are contiguous in c: coalesced). */
__global__ void __launch_bounds__(MERGE_THREADS) attn_dense_merge(const cuda_attn_params p) {
    __shared__ float s_w[MAX_SPLITS];
    __shared__ float s_red[MERGE_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row = blockIdx.x; /* i * hq + h */
    const int64_t i = row / p.hq;
    const int h = row % p.hq;
    float mx = -INFINITY;
    for (int s = tid; s < p.splits; s += MERGE_THREADS) {
        const float *ml = p.part_ml + attn_part_row(p, s, h, i) * 2;
        if (ml[1] > 0.0f)
            mx = fmaxf(mx, ml[0]);
    }
    mx = attn_warp_max(mx);
    if (lane == 0)
        s_red[warp] = mx;
    __syncthreads();
    mx = s_red[0];
    for (int w = 1; w < MERGE_THREADS / 32; w++)
        mx = fmaxf(mx, s_red[w]);
    __syncthreads(); /* s_red is reused below */
    float l = 0.0f;
    for (int s = tid; s < p.splits; s += MERGE_THREADS) {
        const float *ml = p.part_ml + attn_part_row(p, s, h, i) * 2;
        const float w = ml[1] > 0.0f ? exp2f(ml[0] - mx) : 0.0f;
        s_w[s] = w;
        l += w * (ml[1] > 0.0f ? ml[1] : 0.0f);
    }
    l = attn_warp_sum(l);
    if (lane == 0)
        s_red[warp] = l;
    __syncthreads();
    l = 0.0f;
    for (int w = 0; w < MERGE_THREADS / 32; w++)
        l += s_red[w];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    char *orow = p.o + i * p.o_s0 + (int64_t)h * p.o_s1;
    const int oes = attn_dtype_size(p.to);
    const int64_t split_stride = (int64_t)p.hq * p.L * p.d; /* floats between two splits */
    for (int c = tid; c < p.d; c += MERGE_THREADS) {
        const float *src = p.part_o + attn_part_row(p, 0, h, i) * p.d + c;
        float acc = 0.0f;
#pragma unroll 8
        for (int s = 0; s < p.splits; s++)
            if (s_w[s] > 0.0f) /* a split that saw no key of this row may hold no partial */
                acc += s_w[s] * src[s * split_stride];
        attn_store(orow + (int64_t)c * oes, p.to, acc * inv);
    }
    if (p.lse && tid == 0)
        *(float *)(p.lse + i * p.lse_s0 + (int64_t)h * p.lse_s1) = attn_lse(mx, l);
}

extern "C" cudaError_t cuda_attn_merge_launch(const cuda_attn_params *p, cudaStream_t stream) {
    if (p->splits > MAX_SPLITS)
        return cudaErrorInvalidValue;
    attn_dense_merge<<<(unsigned)(p->L * p->hq), MERGE_THREADS, 0, stream>>>(*p);
    return cudaGetLastError();
}

/* ---- host side ------------------------------------------------------------------------------ */
static int aligned16(const char *ptr, int64_t s0, int64_t s1) {
    return (((uintptr_t)ptr | (uintptr_t)s0 | (uintptr_t)s1) & 15) == 0;
}

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Splits of `keys` keys into pieces of a multiple of `align`: about `want`, each at least
 * `min_keys` long (ELA_CUDA_SPLITS overrides want and the minimum). Sets p->splits and
 * p->split_keys. */
extern "C" void cuda_attn_plan_splits(const cuda_ctx *ctx, cuda_attn_params *p, int64_t keys,
                                      int64_t want, int64_t align, int64_t min_keys) {
    if (ctx->force_splits > 0) {
        want = ctx->force_splits;
        min_keys = align;
    }
    int64_t cap = keys / min_keys;
    if (want > cap)
        want = cap;
    if (want > MAX_SPLITS)
        want = MAX_SPLITS;
    if (want < 1)
        want = 1;
    p->split_keys = div_up(div_up(keys, want), align) * align;
    p->splits = (int)div_up(keys, p->split_keys);
    if (p->splits <= 1) {
        p->splits = 1;
        p->split_keys = div_up(keys > 0 ? keys : 1, align) * align;
    }
}

typedef enum { PATH_GENERIC, PATH_MMA, PATH_DECODE, PATH_DECODE_MMA } attn_path;

/* Resident blocks per SM of a kernel, asked once per context (key: path, d, dtype, rows). */
extern "C" int cuda_attn_occupancy(cuda_ctx *ctx, int key,
                                   int (*ask)(const cuda_attn_params *, int, int),
                                   const cuda_attn_params *p, int d, int dtype) {
    int i = 0;
    for (; i < 16 && ctx->occ_key[i]; i++)
        if (ctx->occ_key[i] == key)
            return ctx->occ_val[i];
    int v = ask(p, d, dtype);
    if (i < 16 && v > 0) {
        ctx->occ_key[i] = key;
        ctx->occ_val[i] = v;
    }
    return v;
}

static int ask_mma(const cuda_attn_params *p, int d, int dtype) {
    (void)p;
    return cuda_attn_mma_blocks_per_sm(d, dtype);
}
static int ask_decode_mma(const cuda_attn_params *p, int d, int dtype) {
    (void)p;
    return cuda_attn_decode_mma_blocks_per_sm(d, dtype);
}
static int ask_decode(const cuda_attn_params *p, int d, int dtype) {
    (void)d;
    (void)dtype;
    return cuda_attn_decode_blocks_per_sm(p);
}

/* The kernels' arguments for one attention call (no splits yet); causality folded into q_pos0. */
extern "C" void cuda_attn_params_init(const ela_attn_dense_args *a, cuda_attn_params *p) {
    memset(p, 0, sizeof *p);
    p->q = cuda_tensor_ptr(a->q);
    p->k = cuda_tensor_ptr(a->k);
    p->v = cuda_tensor_ptr(a->v);
    p->o = cuda_tensor_ptr(a->o);
    p->lse = a->lse ? cuda_tensor_ptr(a->lse) : NULL;
    p->q_s0 = a->q->strides[0], p->q_s1 = a->q->strides[1];
    p->k_s0 = a->k->strides[0], p->k_s1 = a->k->strides[1];
    p->v_s0 = a->v->strides[0], p->v_s1 = a->v->strides[1];
    p->o_s0 = a->o->strides[0], p->o_s1 = a->o->strides[1];
    if (a->lse)
        p->lse_s0 = a->lse->strides[0], p->lse_s1 = a->lse->strides[1];
    p->tq = (int)a->q->dtype, p->tkv = (int)a->k->dtype, p->to = (int)a->o->dtype;
    p->L = a->L, p->n = a->n;
    p->d = (int)a->d, p->hq = a->hq, p->hkv = a->hkv, p->G = a->hq / a->hkv;
    /* Not causal: every row sits past every key. A causal row past the last key sees them all
     * too, so positions beyond n change nothing and are clamped (no overflow below). */
    p->q_pos0 = !a->causal || a->q_pos0 > a->n ? a->n : a->q_pos0;
    p->scale_log2 = a->scale * LOG2E;
    p->splits = 1;
}

extern "C" ela_status cuda_attn_dense(void *vctx, const ela_attn_dense_args *a) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    cuda_attn_params p;
    cuda_attn_params_init(a, &p);
    if (a->d > INT32_MAX / 8 || a->L > INT32_MAX || a->L * a->hq > INT32_MAX)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_dense: more than 2^31 query rows "
                         "(L = %lld, Hq = %d)", (long long)a->L, a->hq);
    /* Keys any row sees: [0, keys). */
    const int64_t keys = p.q_pos0 + p.L < p.n ? p.q_pos0 + p.L : p.n;
    const int sms = ctx->props.multiProcessorCount;
    const int kv16 = aligned16(p.k, p.k_s0, p.k_s1) && aligned16(p.v, p.v_s0, p.v_s1);
    const int64_t rows_per_kv = p.L * p.G;

    attn_path path = PATH_GENERIC;
    if (ctx->path == CUDA_PATH_AUTO) {
        const int small = p.n <= INT32_MAX && p.hkv <= 65535 && kv16;
        if (small && rows_per_kv <= CUDA_DECODE_MMA_MAX_ROWS && p.tq == p.tkv &&
            cuda_attn_decode_mma_fits(p.d, p.tkv) && p.scale_log2 > 0.0f)
            path = PATH_DECODE_MMA;
        else if (small && cuda_attn_decode_fits(p.d) && rows_per_kv <= CUDA_DECODE_MAX_ROWS)
            path = PATH_DECODE;
        else if (cuda_attn_mma_fits(p.d, p.tkv) && p.tq == p.tkv && kv16 &&
                 aligned16(p.q, p.q_s0, p.q_s1) && div_up(p.L, CUDA_MMA_BR) <= 65535 &&
                 p.n <= INT32_MAX && p.scale_log2 > 0.0f)
            path = PATH_MMA;
    }

    size_t gen_smem = 0;
    if (path == PATH_DECODE_MMA) {
        /* One wave: every SM holds its blocks once (each warp streams its own tiles, so a
         * block is never starved), no partial second wave. */
        int per_sm = cuda_attn_occupancy(ctx, 1000 + p.d * 4 + p.tkv, ask_decode_mma, &p, p.d, p.tkv);
        int64_t want = (int64_t)sms * (per_sm > 0 ? per_sm : 1) / p.hkv;
        cuda_attn_plan_splits(ctx, &p, keys, want, CUDA_DECODE_MMA_SPLIT_ALIGN, 512);
    } else if (path == PATH_DECODE) {
        /* Enough blocks for every SM to hold its fill a few times over (the last wave is
         * short), each split at least 256 keys so its fixed costs stay small. */
        int per_sm = cuda_attn_occupancy(ctx, 2000 + p.d * 4 + p.tkv + 1000 * (rows_per_kv > 4), ask_decode,
                               &p, p.d, p.tkv);
        int64_t blocks = (int64_t)p.hkv * cuda_attn_decode_row_groups(&p);
        int64_t want = div_up(4ll * sms * (per_sm > 0 ? per_sm : 2), blocks);
        cuda_attn_plan_splits(ctx, &p, keys, want, CUDA_DECODE_SPLIT_ALIGN, 256);
    } else if (path == PATH_MMA) {
        int per_sm = cuda_attn_occupancy(ctx, 4000 + p.d * 4 + p.tkv, ask_mma, &p, p.d, p.tkv);
        int64_t blocks = (int64_t)p.hq * div_up(p.L, CUDA_MMA_BR);
        int64_t fill = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
        int64_t want = blocks >= fill ? 1 : div_up(fill, blocks);
        cuda_attn_plan_splits(ctx, &p, keys, want, CUDA_MMA_BC, 4 * CUDA_MMA_BC);
    } else {
        gen_smem = cuda_attn_generic_smem(p.d);
        if (gen_smem > ctx->props.sharedMemPerBlockOptin)
            return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_dense: head dim %d needs %zu bytes "
                             "of shared memory, %s has %zu per block", p.d, gen_smem,
                             ctx->props.name, (size_t)ctx->props.sharedMemPerBlockOptin);
        int64_t blocks = p.L * p.hq;
        int64_t want = blocks >= 4ll * sms ? 1 : div_up(4ll * sms, blocks);
        cuda_attn_plan_splits(ctx, &p, keys, want, 128, 512);
    }

    void *scratch = NULL;
    if (p.splits > 1) {
        size_t rows = (size_t)p.splits * (size_t)p.hq * (size_t)p.L;
        if ((st = cuda_scratch_alloc(ctx, rows * ((size_t)p.d + 2) * sizeof(float), &scratch)) !=
            ELA_OK)
            return st;
        p.part_o = (float *)scratch;
        p.part_ml = p.part_o + rows * (size_t)p.d;
    }
    ctx->generation++;
    cudaError_t err;
    const char *what;
    if (path == PATH_DECODE_MMA) {
        err = cuda_attn_decode_mma_launch(&p, ctx->stream);
        what = "attn_dense tensor-core decode kernel";
    } else if (path == PATH_DECODE) {
        err = cuda_attn_decode_launch(&p, ctx->stream);
        what = "attn_dense decode kernel";
    } else if (path == PATH_MMA) {
        err = cuda_attn_mma_launch(&p, ctx->stream);
        what = "attn_dense tensor-core kernel";
    } else {
        err = cuda_attn_generic_launch(&p, gen_smem, ctx->stream);
        what = "attn_dense generic kernel";
    }
    if (err == cudaSuccess && p.splits > 1) {
        err = cuda_attn_merge_launch(&p, ctx->stream);
        what = "attn_dense merge kernel";
    }
    if (scratch)
        cuda_scratch_free(ctx, scratch);
    if (err != cudaSuccess)
        return cuda_fail_err(err, what);
    return ELA_OK;
}

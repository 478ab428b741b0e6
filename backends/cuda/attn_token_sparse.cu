/* CUDA attn_token_sparse (op 6: DESIGN.md 4.6, PAPERS.md 2.4): per query head h, attention among
 * its selected rows idx[h, 0..n_sel) of Q (head h) and K, V (KV head h / G), causal in the
 * compressed order (the lists are strictly ascending, checked by the core), scattered into o;
 * rows a head did not select are zero. Two paths, each for every case it is given:
 *   fused (any dtype mix, head dim <= 256, any stride; every call under ELA_CUDA_FORCE=generic):
 *     one block per (query head, 64 compressed query rows), the heaviest (last) tiles first.
 *     Q, K and V rows are gathered by index inside the kernel (row addresses in shared memory,
 *     token_tile.cuh's score tile), online softmax per row, P (64 x 64) through shared memory
 *     into O += P V with V in 64-column chunks; thread (ty, tx) owns rows ty + 16 a and
 *     columns 64 c + tx + 16 b of O in registers (64 floats at d = 256). The block also zeroes
 *     the original rows of head h in the gaps before its rows (the last block: after them too),
 *     so o is written exactly once. Bound: CUDA-core FMAs, 4 d flops per visible (row, key).
 *   tensor cores (q, k, v one 16-bit dtype, d 64 or 128, scale > 0): the selected rows are
 *     gathered into compressed tensors (q [n_sel, Hc, d], k and v [Hc, n_sel, d]: one KV head
 *     per query head, as ela_token_compress makes them) for a chunk of Hc query heads at a time
 *     (a multiple of G, at most TSA_CHUNK_BYTES of scratch), attn_dense's tensor-core prefill
 *     runs on them (cuda_attn_dense: key splits and merge included), and a scatter kernel
 *     writes each compressed output row to its original row and zeroes the gaps. Not fused:
 *     the gather and scatter move 2 n_sel d bytes per head and tensor, in exchange for the
 *     tensor-core loop of attn_mma_loop.cuh, which reads its tiles from contiguous rows.
 *     Measured (H100, bf16, d 128, Hq 32, Hkv 8, L = 128K, 72% of the tokens kept, 52% of the
 *     causal pairs): the tsa prefill took 224 ms against 358 ms dense, selection included.
 * n_sel == L (every list is the identity) is dense attention: cuda_attn_dense directly. */
#include <string.h>

#include "attn_host.h"
#include "cuda_check.h"
#include "token_tile.cuh"

#define TSA_MAX_D 256
#define TSA_CHUNK_BYTES ((size_t)256 << 20)
#define TSA_COPY_THREADS 128

typedef struct {
    cuda_attn_params a; /* pointers, strides, dtypes, sizes, scale_log2 (q_pos0 unused) */
    const char *idx;
    int64_t idx_s0, idx_s1; /* bytes */
    int64_t n_sel;
    int causal;
} tsa_params;

static __device__ __forceinline__ int64_t tsa_sel(const tsa_params &t, int h, int64_t i) {
    return *(const int *)(t.idx + (int64_t)h * t.idx_s0 + i * t.idx_s1);
}

/* Original rows [lo, hi) of head h in o set to zero (the block's threads over the elements). */
static __device__ __forceinline__ void tsa_zero_rows(const cuda_attn_params &p, int h, int64_t lo,
                                                     int64_t hi) {
    const int oes = attn_dtype_size(p.to);
    for (int64_t e = threadIdx.x; e < (hi - lo) * p.d; e += blockDim.x) {
        const int64_t r = lo + e / p.d;
        const int c = (int)(e % p.d);
        attn_store(p.o + r * p.o_s0 + (int64_t)h * p.o_s1 + (int64_t)c * oes, p.to, 0.0f);
    }
}

/* grid (n_qt * hq): item = tile from the last * hq + head. */
__global__ void __launch_bounds__(TT_THREADS) tsa_fused(const tsa_params t) {
    __shared__ float sOp[TT_OPERAND_FLOATS]; /* Q/K chunks, then the V tile [64][TT_LD] */
    __shared__ float sP[TT_ROWS * TT_LD];
    __shared__ const char *sQp[TT_ROWS], *sKp[TT_ROWS];
    __shared__ int64_t sRow[TT_ROWS], sKey[TT_ROWS]; /* original rows of the tile's Q and keys */
    const cuda_attn_params &p = t.a;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t n_qt = (t.n_sel + TT_ROWS - 1) / TT_ROWS;
    const int h = (int)(blockIdx.x % p.hq), g = h / p.G;
    const int64_t i0 = (n_qt - 1 - blockIdx.x / p.hq) * TT_ROWS;
    const int64_t i1 = i0 + TT_ROWS < t.n_sel ? i0 + TT_ROWS : t.n_sel;
    const int R = (int)(i1 - i0);

    for (int64_t i = i0; i < i1; i++) /* uniform: the gaps before the tile's rows */
        tsa_zero_rows(p, h, i == 0 ? 0 : tsa_sel(t, h, i - 1) + 1, tsa_sel(t, h, i));
    if (i1 == t.n_sel)
        tsa_zero_rows(p, h, tsa_sel(t, h, t.n_sel - 1) + 1, p.L);

    if (tid < TT_ROWS) {
        sRow[tid] = tid < R ? tsa_sel(t, h, i0 + tid) : -1;
        sQp[tid] = tid < R ? p.q + sRow[tid] * p.q_s0 + (int64_t)h * p.q_s1 : NULL;
    }
    const char *kg = p.k + (int64_t)g * p.k_s0, *vg = p.v + (int64_t)g * p.v_s0;
    const int kes = attn_dtype_size(p.tkv);
    const int64_t end = t.causal ? i1 : t.n_sel; /* compressed keys any row of the tile sees */
    float m[4], l[4], acc_o[4][16];
#pragma unroll
    for (int a = 0; a < 4; a++) {
        m[a] = -INFINITY;
        l[a] = 0.0f;
#pragma unroll
        for (int cb = 0; cb < 16; cb++)
            acc_o[a][cb] = 0.0f;
    }
    for (int64_t j0 = 0; j0 < end; j0 += TT_ROWS) {
        if (tid < TT_ROWS) {
            const int64_t j = j0 + tid;
            sKey[tid] = j < end ? tsa_sel(t, h, j) : -1;
            sKp[tid] = j < end ? kg + sKey[tid] * p.k_s1 : NULL;
        }
        float s_acc[4][4];
        tt_scores(s_acc, sOp, sOp + TT_DK * TT_LD, sQp, p.tq, sKp, p.tkv, p.d);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int64_t i = i0 + ty + 16 * a; /* compressed row */
            float s[4], pr[4];
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int64_t j = j0 + tx + 16 * b;
                const bool seen = ty + 16 * a < R && j < end && (!t.causal || j <= i);
                s[b] = seen ? s_acc[a][b] * p.scale_log2 : -INFINITY;
            }
            const float alpha = tt_softmax_step(s, m[a], l[a], pr);
#pragma unroll
            for (int cb = 0; cb < 16; cb++)
                acc_o[a][cb] *= alpha;
#pragma unroll
            for (int b = 0; b < 4; b++)
                sP[(ty + 16 * a) * TT_LD + tx + 16 * b] = pr[b];
        }
        __syncthreads(); /* P complete; the operand chunks are free for V */
#pragma unroll
        for (int vc = 0; vc < TSA_MAX_D / 64; vc++) {
            if (vc * 64 >= p.d)
                break; /* uniform */
            for (int e = tid; e < TT_ROWS * 64; e += TT_THREADS) {
                const int j = e / 64, col = vc * 64 + e % 64;
                sOp[j * TT_LD + e % 64] =
                    sKey[j] >= 0 && col < p.d
                        ? attn_load(vg + sKey[j] * p.v_s1 + (int64_t)col * kes, p.tkv)
                        : 0.0f;
            }
            __syncthreads();
#pragma unroll 4
            for (int jj = 0; jj < TT_ROWS; jj++) {
                float pv[4], vv[4];
#pragma unroll
                for (int a = 0; a < 4; a++) {
                    pv[a] = sP[(ty + 16 * a) * TT_LD + jj];
                    vv[a] = sOp[jj * TT_LD + tx + 16 * a];
                }
#pragma unroll
                for (int a = 0; a < 4; a++)
#pragma unroll
                    for (int bb = 0; bb < 4; bb++)
                        acc_o[a][vc * 4 + bb] = fmaf(pv[a], vv[bb], acc_o[a][vc * 4 + bb]);
            }
            __syncthreads(); /* the V tile is rewritten (next chunk, or the next scores) */
        }
    }
    const int oes = attn_dtype_size(p.to);
#pragma unroll
    for (int a = 0; a < 4; a++) {
        const float lt = tt_row_sum(l[a]);
        const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
        if (ty + 16 * a >= R)
            continue;
        char *orow = p.o + sRow[ty + 16 * a] * p.o_s0 + (int64_t)h * p.o_s1;
#pragma unroll
        for (int cb = 0; cb < 16; cb++) {
            const int col = (cb >> 2) * 64 + tx + 16 * (cb & 3);
            if (col < p.d)
                attn_store(orow + (int64_t)col * oes, p.to, acc_o[a][cb] * inv);
        }
    }
}

/* n_sel == 0: every row of every head is zero. grid (ceil(L * hq / 8)), 8 rows per block. */
__global__ void __launch_bounds__(TSA_COPY_THREADS) tsa_zero_all(const cuda_attn_params p) {
    const int64_t pairs = p.L * p.hq;
    for (int64_t r = (int64_t)blockIdx.x * 8; r < pairs && r < ((int64_t)blockIdx.x + 1) * 8; r++)
        tsa_zero_rows(p, (int)(r % p.hq), r / p.hq, r / p.hq + 1);
}

/* ---- the tensor-core path: gather, attn_dense, scatter ---------------------------------- */
typedef struct {
    tsa_params t;
    int h0, hc;            /* query heads [h0, h0 + hc) of this chunk */
    char *qc, *kc, *vc;    /* [n_sel, hc, d], [hc, n_sel, d] x 2, q's 16-bit dtype */
    char *oc;              /* [n_sel, hc, d], o's dtype */
} tsa_chunk;

/* grid (pairs of this chunk's heads and compressed rows): one row of q, k and v each. */
__global__ void __launch_bounds__(TSA_COPY_THREADS) tsa_gather(const tsa_chunk c) {
    const cuda_attn_params &p = c.t.a;
    const int64_t pairs = (int64_t)c.hc * c.t.n_sel;
    for (int64_t e = blockIdx.x; e < pairs; e += gridDim.x) {
        const int hh = (int)(e / c.t.n_sel);
        const int64_t i = e % c.t.n_sel;
        const int h = c.h0 + hh, g = h / p.G;
        const int64_t row = tsa_sel(c.t, h, i);
        const unsigned short *sq = (const unsigned short *)(p.q + row * p.q_s0 + (int64_t)h * p.q_s1);
        const unsigned short *sk = (const unsigned short *)(p.k + (int64_t)g * p.k_s0 + row * p.k_s1);
        const unsigned short *sv = (const unsigned short *)(p.v + (int64_t)g * p.v_s0 + row * p.v_s1);
        unsigned short *dq = (unsigned short *)c.qc + (i * c.hc + hh) * p.d;
        unsigned short *dk = (unsigned short *)c.kc + ((int64_t)hh * c.t.n_sel + i) * p.d;
        unsigned short *dv = (unsigned short *)c.vc + ((int64_t)hh * c.t.n_sel + i) * p.d;
        for (int x = threadIdx.x; x < p.d; x += TSA_COPY_THREADS) {
            dq[x] = sq[x];
            dk[x] = sk[x];
            dv[x] = sv[x];
        }
    }
}

/* grid (pairs of this chunk's heads and compressed rows): compressed row i of head h to its
 * original row, and zeros over the gap before it (and after it, for the last one). */
__global__ void __launch_bounds__(TSA_COPY_THREADS) tsa_scatter(const tsa_chunk c) {
    const cuda_attn_params &p = c.t.a;
    const int64_t pairs = (int64_t)c.hc * c.t.n_sel;
    const int oes = attn_dtype_size(p.to);
    for (int64_t e = blockIdx.x; e < pairs; e += gridDim.x) {
        const int hh = (int)(e / c.t.n_sel);
        const int64_t i = e % c.t.n_sel;
        const int h = c.h0 + hh;
        const int64_t row = tsa_sel(c.t, h, i);
        tsa_zero_rows(p, h, i == 0 ? 0 : tsa_sel(c.t, h, i - 1) + 1, row);
        if (i == c.t.n_sel - 1)
            tsa_zero_rows(p, h, row + 1, p.L);
        const char *src = c.oc + (i * c.hc + hh) * p.d * oes;
        char *dst = p.o + row * p.o_s0 + (int64_t)h * p.o_s1;
        for (int x = threadIdx.x; x < p.d; x += TSA_COPY_THREADS) {
            if (oes == 4)
                ((float *)dst)[x] = ((const float *)src)[x];
            else
                ((unsigned short *)dst)[x] = ((const unsigned short *)src)[x];
        }
    }
}

/* A device allocation of ours dressed as a tensor, so the compressed problem can go through
 * cuda_attn_dense (which reads a tensor's device address, dtype and strides only). */
typedef struct {
    cuda_buffer cb;
    ela_buffer eb;
    ela_tensor t;
} tsa_view;

static void tsa_view_init(tsa_view *v, char *ptr, ela_dtype dt, int64_t e0, int64_t e1,
                          int64_t e2) {
    const int64_t es = dt == ELA_F32 ? 4 : 2;
    memset(v, 0, sizeof *v);
    v->cb.ptr = ptr;
    v->cb.size = (size_t)(e0 * e1 * e2 * es);
    v->eb.handle = &v->cb;
    v->eb.size = v->cb.size;
    v->eb.refs = 1;
    v->t.buffer = &v->eb;
    v->t.dtype = dt;
    v->t.n_dims = 3;
    v->t.extents[0] = e0, v->t.extents[1] = e1, v->t.extents[2] = e2;
    v->t.strides[2] = es, v->t.strides[1] = e2 * es, v->t.strides[0] = e1 * e2 * es;
}

static unsigned grid_of(int64_t pairs) {
    return (unsigned)(pairs < 1 ? 1 : pairs > (1ll << 30) ? 1ll << 30 : pairs);
}

static ela_status run_compressed(cuda_ctx *ctx, const ela_attn_token_sparse_args *ta,
                                 const tsa_params *t) {
    const ela_attn_dense_args *a = &ta->attn;
    const int64_t n_sel = ta->n_sel, d = a->d;
    const int G = a->hq / a->hkv;
    const size_t oes = a->o->dtype == ELA_F32 ? 4 : 2;
    const size_t per_head = (size_t)n_sel * (size_t)d * (3 * 2 + oes);
    int hc = (int)(TSA_CHUNK_BYTES / per_head) / G * G;
    hc = hc < G ? G : hc > a->hq ? a->hq : hc;
    const size_t b16 = ((size_t)n_sel * hc * d * 2 + 15) & ~(size_t)15;
    char *scratch = NULL;
    ela_status st = cuda_scratch_alloc(ctx, 3 * b16 + (size_t)n_sel * hc * d * oes,
                                       (void **)&scratch);
    if (st != ELA_OK)
        return st;
    tsa_chunk c;
    c.t = *t;
    c.qc = scratch;
    c.kc = scratch + b16;
    c.vc = scratch + 2 * b16;
    c.oc = scratch + 3 * b16;
    for (int h0 = 0; h0 < a->hq && st == ELA_OK; h0 += hc) {
        c.h0 = h0;
        c.hc = a->hq - h0 < hc ? a->hq - h0 : hc;
        const int64_t pairs = (int64_t)c.hc * n_sel;
        tsa_gather<<<grid_of(pairs), TSA_COPY_THREADS, 0, ctx->stream>>>(c);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) {
            st = cuda_fail_err(err, "attn_token_sparse gather kernel");
            break;
        }
        tsa_view q, k, v, o;
        tsa_view_init(&q, c.qc, a->q->dtype, n_sel, c.hc, d);
        tsa_view_init(&k, c.kc, a->k->dtype, c.hc, n_sel, d);
        tsa_view_init(&v, c.vc, a->v->dtype, c.hc, n_sel, d);
        tsa_view_init(&o, c.oc, a->o->dtype, n_sel, c.hc, d);
        ela_attn_dense_args da;
        memset(&da, 0, sizeof da);
        da.q = &q.t, da.k = &k.t, da.v = &v.t, da.o = &o.t, da.lse = NULL;
        da.L = n_sel, da.n = n_sel, da.d = d;
        da.hq = c.hc, da.hkv = c.hc;
        da.causal = a->causal;
        da.q_pos0 = 0;
        da.scale = a->scale;
        if ((st = cuda_attn_dense(ctx, &da)) != ELA_OK)
            break;
        tsa_scatter<<<grid_of(pairs), TSA_COPY_THREADS, 0, ctx->stream>>>(c);
        if ((err = cudaGetLastError()) != cudaSuccess)
            st = cuda_fail_err(err, "attn_token_sparse scatter kernel");
    }
    cuda_scratch_free(ctx, scratch);
    return st;
}

extern "C" ela_status cuda_attn_token_sparse(void *vctx, const ela_attn_token_sparse_args *ta) {
    cuda_ctx *ctx = (cuda_ctx *)vctx;
    ela_status st = cuda_use(ctx);
    if (st != ELA_OK)
        return st;
    const ela_attn_dense_args *a = &ta->attn;
    if (ta->n_sel == a->L) /* strictly ascending in [0, L): every list is the identity */
        return cuda_attn_dense(ctx, a);
    tsa_params t;
    memset(&t, 0, sizeof t);
    cuda_attn_params_init(a, &t.a);
    t.idx = cuda_tensor_ptr(ta->idx);
    t.idx_s0 = ta->idx->strides[0], t.idx_s1 = ta->idx->strides[1];
    t.n_sel = ta->n_sel;
    t.causal = a->causal;
    if (a->L * a->hq > INT32_MAX || a->d > INT32_MAX / 8)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_token_sparse: more than 2^31 (row, "
                         "head) pairs (L = %lld, Hq = %d)", (long long)a->L, a->hq);
    ctx->generation++;
    cudaError_t err;
    if (ta->n_sel == 0) {
        tsa_zero_all<<<grid_of((a->L * a->hq + 7) / 8), TSA_COPY_THREADS, 0, ctx->stream>>>(t.a);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return cuda_fail_err(err, "attn_token_sparse zero kernel");
        return ELA_OK;
    }
    const ela_dtype tq = a->q->dtype;
    if (ctx->path == CUDA_PATH_AUTO && tq == a->k->dtype && tq == a->v->dtype &&
        (tq == ELA_F16 || tq == ELA_BF16) && cuda_attn_mma_fits((int)a->d, (int)tq) &&
        a->scale > 0.0f && ta->n_sel <= INT32_MAX)
        return run_compressed(ctx, ta, &t);
    if (a->d > TSA_MAX_D)
        return cuda_fail(ELA_ERR_UNSUPPORTED, "cuda: attn_token_sparse: head dim %lld (at most "
                         "%d)", (long long)a->d, TSA_MAX_D);
    const int64_t items = (ta->n_sel + TT_ROWS - 1) / TT_ROWS * a->hq;
    tsa_fused<<<(unsigned)items, TT_THREADS, 0, ctx->stream>>>(t);
    if ((err = cudaGetLastError()) != cudaSuccess)
        return cuda_fail_err(err, "attn_token_sparse kernel");
    return ELA_OK;
}

/* CUDA dense attention, the generic kernel (DESIGN.md 4.1): every case the CPU backend accepts
 * (f32/f16/bf16 in any mix, any head dim that fits shared memory, any strides and element
 * offsets), so the backend never refuses what the CPU runs. Simple and exact rather than fast.
 *
 * Tiling: one block of 128 threads per (query row i, query head h, key split s). The row's q
 * (pre-scaled into the exp2 domain) and its f32 output accumulator live in shared memory,
 * [d] floats each. Keys go by in tiles of 128: warp w scores keys w, w + 4, ... of the tile
 * (lanes split d, shuffle sum, so K rows are read coalesced), the block takes the tile max,
 * turns scores into exp2 weights in shared memory and rescales the accumulator; then thread t
 * owns output columns t, t + 128, ... and adds sum_j p_j v[j][c] (V rows read coalesced).
 * Only keys the row sees are visited (the causal end is exact), so no score is masked. For
 * attn_blocks (p.modes set) a key tile is one 128-key block (splits are multiples of 128) and
 * the blocks the head's mode leaves out are skipped.
 * Bound: K and V are read once per query row and head, d * (2 esize) bytes per key, from L2
 * for the G heads of a group; about 1/G of memory bandwidth, far below the fast paths. */
#include "attn_dense_device.cuh"

#define GEN_THREADS 128
#define GEN_TILE 128

__global__ void __launch_bounds__(GEN_THREADS) attn_dense_generic(const cuda_attn_params p) {
    extern __shared__ float gen_smem[];
    const int d = p.d;
    float *sq = gen_smem, *sacc = sq + d, *sp = sacc + d;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row = blockIdx.x; /* i * hq + h < 2^31 (the dispatcher checks) */
    const int64_t i = row / p.hq;
    const int h = row % p.hq, g = h / p.G, s = blockIdx.y;
    const int qes = attn_dtype_size(p.tq), kes = attn_dtype_size(p.tkv);

    const int64_t pos = p.q_pos0 + i;
    const int64_t end = pos + 1 < p.n ? pos + 1 : p.n; /* keys this row sees: [0, end) */
    const int64_t kb = (int64_t)s * p.split_keys;
    const int64_t ke = kb + p.split_keys < end ? kb + p.split_keys : end;

    const char *qrow = p.q + i * p.q_s0 + (int64_t)h * p.q_s1;
    for (int c = tid; c < d; c += GEN_THREADS) {
        sq[c] = attn_load(qrow + (int64_t)c * qes, p.tq) * p.scale_log2;
        sacc[c] = 0.0f;
    }
    __syncthreads();
    const char *kh = p.k + (int64_t)g * p.k_s0, *vh = p.v + (int64_t)g * p.v_s0;
    float m = -INFINITY, l = 0.0f;
    const int64_t M = p.qb0 + i / GEN_TILE; /* attn_blocks: q_pos0 % 128 == 0 */
    for (int64_t j0 = kb; j0 < ke; j0 += GEN_TILE) {
        if (p.modes && !attn_block_allowed(p, h, M, j0 / GEN_TILE))
            continue; /* uniform over the block */
        const int nk = ke - j0 < GEN_TILE ? (int)(ke - j0) : GEN_TILE;
        for (int jj = warp; jj < nk; jj += GEN_THREADS / 32) {
            const char *krow = kh + (j0 + jj) * p.k_s1;
            float dot = 0.0f;
            for (int c = lane; c < d; c += 32)
                dot += sq[c] * attn_load(krow + (int64_t)c * kes, p.tkv);
            dot = attn_warp_sum(dot);
            if (lane == 0)
                sp[jj] = dot;
        }
        __syncthreads();
        /* Tile max: each warp reduces the tile, warp 0's answer is everyone's. */
        float mx = -INFINITY;
        for (int jj = lane; jj < nk; jj += 32)
            mx = fmaxf(mx, sp[jj]);
        mx = attn_warp_max(mx);
        const float m_new = fmaxf(m, mx); /* finite: every visited key is visible */
        const float alpha = exp2f(m - m_new);
        __syncthreads(); /* every warp has read sp */
        if (tid < nk)
            sp[tid] = exp2f(sp[tid] - m_new);
        __syncthreads();
        float sum = 0.0f;
        for (int jj = lane; jj < nk; jj += 32)
            sum += sp[jj];
        sum = attn_warp_sum(sum);
        l = l * alpha + sum;
        m = m_new;
        for (int c = tid; c < d; c += GEN_THREADS) {
            float acc = sacc[c] * alpha;
            const char *vcol = vh + j0 * p.v_s1 + (int64_t)c * kes;
            for (int jj = 0; jj < nk; jj++)
                acc += sp[jj] * attn_load(vcol + jj * p.v_s1, p.tkv);
            sacc[c] = acc;
        }
        __syncthreads(); /* sp is rewritten by the next tile */
    }
    if (p.splits > 1) {
        const int64_t pr = attn_part_row(p, s, h, i);
        for (int c = tid; c < d; c += GEN_THREADS)
            p.part_o[pr * d + c] = sacc[c];
        if (tid == 0) {
            p.part_ml[pr * 2] = m;
            p.part_ml[pr * 2 + 1] = l;
        }
        return;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    char *orow = p.o + i * p.o_s0 + (int64_t)h * p.o_s1;
    const int oes = attn_dtype_size(p.to);
    for (int c = tid; c < d; c += GEN_THREADS)
        attn_store(orow + (int64_t)c * oes, p.to, sacc[c] * inv);
    if (p.lse && tid == 0)
        *(float *)(p.lse + i * p.lse_s0 + (int64_t)h * p.lse_s1) = attn_lse(m, l);
}

extern "C" size_t cuda_attn_generic_smem(int d) {
    return (2 * (size_t)d + GEN_TILE) * sizeof(float);
}

extern "C" cudaError_t cuda_attn_generic_launch(const cuda_attn_params *p, size_t smem,
                                                cudaStream_t stream) {
    if (smem > 48 * 1024) {
        cudaError_t err = cudaFuncSetAttribute(attn_dense_generic,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               (int)smem);
        if (err != cudaSuccess)
            return err;
    }
    dim3 grid((unsigned)(p->L * p->hq), (unsigned)p->splits, 1);
    attn_dense_generic<<<grid, GEN_THREADS, smem, stream>>>(*p);
    return cudaGetLastError();
}

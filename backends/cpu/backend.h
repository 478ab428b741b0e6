/* CPU backend state shared by its op files. */
#ifndef ELA_CPU_BACKEND_H
#define ELA_CPU_BACKEND_H

#include "attn_kernels.h"
#include "core/backend_iface.h"
#include "cpu_features.h"

typedef struct {
    cpu_level level;
    const cpu_attn_kernels *attn;
    int threads;
} cpu_backend;

/* Host address of a tensor's first element. */
static inline char *cpu_tensor_data(const ela_tensor *t) {
    return (char *)t->buffer->handle + t->offset;
}

/* Host address of row r of t seen as [rows, last extent]: r is split over the outer dims. */
static inline char *cpu_tensor_row(const ela_tensor *t, int64_t r) {
    char *p = cpu_tensor_data(t);
    for (int i = t->n_dims - 2; i >= 0; i--) {
        p += (r % t->extents[i]) * t->strides[i];
        r /= t->extents[i];
    }
    return p;
}

/* One function per op, each in backends/cpu/<op>.c. */
ela_status cpu_attn_dense(void *ctx, const ela_attn_dense_args *args);
ela_status cpu_attn_blocks(void *ctx, const ela_attn_blocks_args *args);
ela_status cpu_xattn_estimate(void *ctx, const ela_xattn_estimate_args *args);
ela_status cpu_router_eval(void *ctx, const ela_router_eval_args *args);
ela_status cpu_token_select(void *ctx, const ela_token_select_args *args);
ela_status cpu_attn_token_sparse(void *ctx, const ela_attn_token_sparse_args *args);
ela_status cpu_decode_select(void *ctx, const ela_decode_select_args *args);
ela_status cpu_attn_gather(void *ctx, const ela_attn_gather_args *args);
ela_status cpu_nsa_select(void *ctx, const ela_nsa_select_args *args);
ela_status cpu_attn_nsa(void *ctx, const ela_attn_nsa_args *args);
ela_status cpu_decode_select_attend(void *ctx, const ela_decode_select_attend_args *args);
ela_status cpu_matmul(void *ctx, const ela_matmul_args *args);
ela_status cpu_rms_norm(void *ctx, const ela_rms_norm_args *args);
ela_status cpu_rope(void *ctx, const ela_rope_args *args);
ela_status cpu_silu_mul(void *ctx, const ela_binary_args *args);
ela_status cpu_add(void *ctx, const ela_binary_args *args);
ela_status cpu_get_rows(void *ctx, const ela_get_rows_args *args);
ela_status cpu_copy(void *ctx, const ela_copy_args *args);
ela_status cpu_token_compress(void *ctx, const ela_token_compress_args *args);
ela_status cpu_token_decompress(void *ctx, const ela_token_decompress_args *args);
ela_status cpu_sigmoid_gate(void *ctx, const ela_sigmoid_gate_args *args);

/* decode_select.c's selection with phase 1's scoring done by the caller (decode_select_attend.c
 * attends while it scores). The selection cuts [0, n) into chunks of chunk_keys keys (a multiple
 * of CPU_ATTN_BK) and, per KV head g and chunk c, calls score() on one of at most cpu->threads
 * threads (tid in [0, cpu->threads)), which must visit keys [k0, k1) and write
 * L[r * ldl + j - k0] = scale q_{g G + r} . k_j for r < G (any floats: NaN ranks as -inf).
 * Every (g, c) is called exactly once, unless nothing is left to rank
 * (cpu_decode_select_needs_logits is 0), when none is. Result: as cpu_decode_select, which a
 * NULL scorer runs. */
typedef struct {
    void (*score)(void *user, int tid, int g, int64_t c, int64_t k0, int64_t k1, float *L,
                  int64_t ldl);
    void *user;
    int64_t chunk_keys;
} cpu_select_scorer;
int cpu_decode_select_needs_logits(int64_t n, const ela_decode_select_params *p);
ela_status cpu_decode_select_scored(const cpu_backend *cpu, const ela_decode_select_args *a,
                                    const cpu_select_scorer *scorer);

#endif

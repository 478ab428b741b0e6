/* Inner kernels of the CPU matmul (backends/cpu/matmul.c), one table per SIMD level, chosen at
 * run time like attn_kernels.h. A tile is R <= 4 activation rows times C <= 4 weight rows: all
 * R*C dot products run at once, so each weight vector loaded (and converted) feeds R FMAs and
 * each activation vector C FMAs. Decode (M = 1) is one activation row against weight rows
 * streamed from DRAM; prefill re-uses every weight row for 4 activation rows per load.
 *
 * q8_0 weights are multiplied with activations quantized to q8_0 once per call (as ggml does):
 * integer dot products per 32-block, then scaled by both blocks' scales. The activation row
 * layout is [K int8 values][K/32 f32 scales]: the int8s of consecutive blocks are contiguous so
 * that one vector load covers two blocks. Each scale is d = max|x| / 127 of its block kept in
 * f32 (ggml keeps it in f16), the int8s are roundf(x / d) exactly as ela_q8_0_quantize_block. */
#ifndef ELA_CPU_MATMUL_KERNELS_H
#define ELA_CPU_MATMUL_KERNELS_H

#include <stdint.h>

#include "cpu_features.h"
#include "ela.h"

/* Decode (few activation rows) streams each weight row from DRAM once; the kernels prefetch
 * every row this many bytes ahead. Measured on the random Qwen2.5-0.5B-shaped q8_0 model
 * (ela bench model, 2 pinned cores of a Xeon): decode at 0.55-0.61 of the read bandwidth with
 * 1 KiB, 0.65-0.68 with 2 KiB, 0.75-0.80 with 4 KiB, no better beyond (6-16 KiB). The rows are
 * short (K = 896: 952 bytes in q8_0), so the hardware prefetchers alone start too late. */
#define CPU_MM_PREFETCH 4096

#define CPU_MM_R 4 /* activation rows per tile */
#define CPU_MM_C 4 /* weight rows per tile */

/* Bytes of one quantized activation row of K (a multiple of 32) values, padded to 64 bytes
 * plus 64 bytes of slack so that two-block vector loads may run past the last block. */
static inline int64_t cpu_mm_q8_row_bytes(int64_t K) {
    return (K + K / 32 * 4 + 63) / 64 * 64 + 64;
}

typedef struct {
    const char *name;
    /* out[r * CPU_MM_C + c] = sum_{k < K} x[r * xs + k] * w_c[k] for r < R, c < C, where w_c
     * (dtype f32/f16/bf16, packed) starts ws bytes after w_{c-1}; 1 <= R <= 4, 1 <= C <= 4,
     * K >= 1. Nothing past the K-th element of a row is read. */
    void (*tile)(ela_dtype dtype, const float *x, int64_t xs, int R, const void *w, int64_t ws,
                 int C, int64_t K, float *out);
    /* The same for q8_0 weight rows (K / 32 blocks of 34 bytes) against quantized activation
     * rows xq + r * xqs (the layout above). */
    void (*tile_q8_0)(const void *xq, int64_t xqs, int R, const void *w, int64_t ws, int C,
                      int64_t K, float *out);
    /* One row of K floats (K a multiple of 32) into the quantized activation layout. */
    void (*quantize_row)(const float *x, int64_t K, void *xq);
} cpu_matmul_kernels;

const cpu_matmul_kernels *cpu_matmul_kernels_scalar(void);
#if defined(__x86_64__) || defined(_M_X64)
const cpu_matmul_kernels *cpu_matmul_kernels_avx2(void);
/* With AVX512-VNNI (checked at run time) q8_0 uses vpdpbusd; without it, the AVX2 q8_0 kernel. */
const cpu_matmul_kernels *cpu_matmul_kernels_avx512(void);
#endif

/* The table for a level (scalar for levels without their own, e.g. neon). */
const cpu_matmul_kernels *cpu_matmul_kernels_for(cpu_level level);

#endif

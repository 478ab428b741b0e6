/* Portable matmul kernels (see matmul_kernels.h): the reference every SIMD level is tested
 * against, and what runs on CPUs without one. Four f32 partial sums per dot product so that
 * the compiler may keep them in one vector register. */
#include <string.h>

#include "core/dtype.h"
#include "matmul_kernels.h"

static float load_w(ela_dtype dtype, const void *w, int64_t k) {
    switch (dtype) {
    case ELA_F16: return ela_f16_to_f32(((const uint16_t *)w)[k]);
    case ELA_BF16: return ela_bf16_to_f32(((const uint16_t *)w)[k]);
    default: return ((const float *)w)[k];
    }
}

static void scalar_tile(ela_dtype dtype, const float *x, int64_t xs, int R, const void *w,
                        int64_t ws, int C, int64_t K, float *out) {
    for (int c = 0; c < C; c++) {
        const void *wc = (const char *)w + c * ws;
        for (int r = 0; r < R; r++) {
            const float *xr = x + r * xs;
            float s[4] = {0, 0, 0, 0};
            int64_t k = 0;
            for (; k + 4 <= K; k += 4)
                for (int j = 0; j < 4; j++)
                    s[j] += xr[k + j] * load_w(dtype, wc, k + j);
            for (; k < K; k++)
                s[0] += xr[k] * load_w(dtype, wc, k);
            out[r * CPU_MM_C + c] = (s[0] + s[1]) + (s[2] + s[3]);
        }
    }
}

static void scalar_tile_q8_0(const void *xq, int64_t xqs, int R, const void *w, int64_t ws,
                             int C, int64_t K, float *out) {
    int64_t nb = K / ELA_Q8_0_BLOCK;
    for (int c = 0; c < C; c++) {
        const uint8_t *wc = (const uint8_t *)w + c * ws;
        for (int r = 0; r < R; r++) {
            const int8_t *xr = (const int8_t *)((const char *)xq + r * xqs);
            const float *xd = (const float *)(const void *)((const char *)xr + K);
            float s = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = wc + b * ELA_Q8_0_BYTES;
                uint16_t dh;
                memcpy(&dh, blk, 2);
                int32_t isum = 0;
                for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
                    isum += (int32_t)xr[b * ELA_Q8_0_BLOCK + i] * (int32_t)(int8_t)blk[2 + i];
                s += (float)isum * (xd[b] * ela_f16_to_f32(dh));
            }
            out[r * CPU_MM_C + c] = s;
        }
    }
}

static void scalar_quantize_row(const float *x, int64_t K, void *xq) {
    int8_t *q = xq;
    float *d = (float *)(void *)((char *)xq + K);
    for (int64_t b = 0; b < K / ELA_Q8_0_BLOCK; b++)
        d[b] = ela_q8_0_quantize_qs(x + b * ELA_Q8_0_BLOCK, q + b * ELA_Q8_0_BLOCK);
}

static const cpu_matmul_kernels scalar_kernels = {
    "scalar", scalar_tile, scalar_tile_q8_0, scalar_quantize_row,
};

const cpu_matmul_kernels *cpu_matmul_kernels_scalar(void) { return &scalar_kernels; }

const cpu_matmul_kernels *cpu_matmul_kernels_for(cpu_level level) {
    switch (level) {
#if defined(__x86_64__) || defined(_M_X64)
    case CPU_LEVEL_AVX2: return cpu_matmul_kernels_avx2();
    case CPU_LEVEL_AVX512: return cpu_matmul_kernels_avx512();
#endif
    default: return cpu_matmul_kernels_scalar();
    }
}

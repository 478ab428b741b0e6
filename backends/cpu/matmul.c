/* CPU matmul (ela.h "Model ops"): y [M, N] = x [M, K] . w [N, K]^T (+ bias), weights f32, f16,
 * bf16 or q8_0, activations and output f32.
 *
 * Work: tiles of 4 activation rows x 4 weight rows (matmul_kernels.h), all 16 dot products in
 * registers. Threads share the weight rows in chunks of up to 64 (dynamic schedule: on a shared
 * machine cores run at different speeds), so in decode (M = 1) each weight byte is read from
 * DRAM once, by one thread, and the op is bound by memory bandwidth. In prefill the activation
 * rows are cut into blocks of MB rows that fit in L2 (MM_L2_BYTES); inside a block every group
 * of 4 weight rows (L1) serves each group of 4 activation rows, so the weights are read from
 * memory ceil(M / MB) times and each weight vector load feeds 4 FMAs.
 * q8_0 weights: the activations are quantized to q8_0 once per call (matmul_kernels.h) and the
 * dot products are int8 (VNNI / maddubs). That quantization costs about 2^-8 relative error
 * per activation (stated and bounded in tests/test_model_ops.c).
 * f32 weights with M >= MM_BLAS_MIN_M go to OpenBLAS sgemm when ela is built with it and
 * OpenBLAS runs a kernel at least as wide as ours (see blas_is_fast).
 * Measured on 2 cores of a Xeon with AVX-512 (VNNI), one thread, on-CPU time: f16 prefill
 * [512 x 4096] x [4096 x 4096] about 90 GFLOP/s (OpenBLAS sgemm on f32 with its SkylakeX
 * kernels: about 90-100); decode reads the weights at about the bandwidth of tools/membw.c. */
#include <limits.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef ELA_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "backend.h"
#include "core/alloc.h"
#include "core/error.h"
#include "matmul_kernels.h"

#define MM_L2_BYTES (1024 << 10) /* activation rows per block: this many bytes of them */
#define MM_CHUNK_GROUPS 16      /* at most this many weight-row groups of 4 per chunk */
#define MM_BLAS_MIN_M 32
#define MM_SERIAL_WORK (1 << 18) /* below this many multiply-adds one thread does it all */

typedef struct {
    const cpu_matmul_kernels *kern;
    ela_dtype wdt;
    const float *x;
    int64_t xs; /* floats */
    const char *xq;
    int64_t xqs; /* bytes */
    const char *w;
    int64_t ws; /* bytes */
    float *y;
    int64_t ys; /* floats */
    const float *bias;
    int64_t M, N, K;
} mm_plan;

/* Rows [m0, m1) of the activations against weight-row groups [g0, g1). */
static void mm_block(const mm_plan *p, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
    float out[CPU_MM_R * CPU_MM_C];
    for (int64_t g = g0; g < g1; g++) {
        int64_t n = g * CPU_MM_C;
        int C = (int)(p->N - n < CPU_MM_C ? p->N - n : CPU_MM_C);
        const char *w = p->w + n * p->ws;
        for (int64_t m = m0; m < m1; m += CPU_MM_R) {
            int R = (int)(m1 - m < CPU_MM_R ? m1 - m : CPU_MM_R);
            if (p->wdt == ELA_Q8_0)
                p->kern->tile_q8_0(p->xq + m * p->xqs, p->xqs, R, w, p->ws, C, p->K, out);
            else
                p->kern->tile(p->wdt, p->x + m * p->xs, p->xs, R, w, p->ws, C, p->K, out);
            for (int r = 0; r < R; r++) {
                float *yr = p->y + (m + r) * p->ys + n;
                for (int c = 0; c < C; c++)
                    yr[c] = out[r * CPU_MM_C + c] + (p->bias ? p->bias[n + c] : 0.0f);
            }
        }
    }
}

#ifdef ELA_HAVE_OPENBLAS
static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* OpenBLAS picks its kernels from cpuid; on a CPU it does not know (seen on virtual machines
 * with recent Xeons) it falls back to a generic SSE3 core ("Prescott"), 3-5x slower than our
 * own AVX2/AVX-512 kernels. Use it at those levels only when it runs an AVX2 or wider core
 * (OPENBLAS_CORETYPE=SkylakeX forces one). */
static int blas_is_fast(cpu_level level) {
    if (level != CPU_LEVEL_AVX2 && level != CPU_LEVEL_AVX512)
        return 1;
    static const char *const wide[] = {"haswell", "zen", "skylakex", "cooperlake",
                                       "sapphirerapids"};
    const char *core = openblas_get_corename();
    for (size_t i = 0; core && i < sizeof wide / sizeof wide[0]; i++)
        if (strncasecmp(core, wide[i], strlen(wide[i])) == 0)
            return 1;
    return 0;
}

/* y = x w^T (+ bias) through sgemm; 0 when the sizes do not fit its int arguments. */
static int mm_blas(const mm_plan *p, int threads) {
    int64_t ldx = p->xs > p->K ? p->xs : p->K, ldw = p->ws / 4 > p->K ? p->ws / 4 : p->K;
    int64_t ldy = p->ys > p->N ? p->ys : p->N;
    if (!fits_int(p->M) || !fits_int(p->N) || !fits_int(p->K) || !fits_int(ldx) ||
        !fits_int(ldw) || !fits_int(ldy))
        return 0;
    if (p->bias)
        for (int64_t m = 0; m < p->M; m++)
            memcpy(p->y + m * p->ys, p->bias, (size_t)p->N * sizeof(float));
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p->M, (int)p->N, (int)p->K, 1.0f,
                p->x, (int)ldx, (const float *)(const void *)p->w, (int)ldw,
                p->bias ? 1.0f : 0.0f, p->y, (int)ldy);
    return 1;
}
#endif

ela_status cpu_matmul(void *ctx, const ela_matmul_args *a) {
    const cpu_backend *cpu = ctx;
    mm_plan p;
    p.kern = cpu_matmul_kernels_for(cpu->level);
    p.wdt = a->w->dtype;
    p.x = (const float *)(const void *)cpu_tensor_data(a->x);
    p.xs = a->x->strides[0] / (int64_t)sizeof(float);
    p.xq = NULL;
    p.xqs = 0;
    p.w = cpu_tensor_data(a->w);
    p.ws = a->w->strides[0];
    p.y = (float *)(void *)cpu_tensor_data(a->y);
    p.ys = a->y->strides[0] / (int64_t)sizeof(float);
    p.bias = a->bias ? (const float *)(const void *)cpu_tensor_data(a->bias) : NULL;
    p.M = a->M;
    p.N = a->N;
    p.K = a->K;
    if (p.K == 0) {
        for (int64_t m = 0; m < p.M; m++)
            for (int64_t n = 0; n < p.N; n++)
                p.y[m * p.ys + n] = p.bias ? p.bias[n] : 0.0f;
        return ELA_OK;
    }
    double work = (double)p.M * (double)p.N * (double)p.K;
    int threads = work < MM_SERIAL_WORK ? 1 : cpu->threads;
#ifdef ELA_HAVE_OPENBLAS
    if (p.wdt == ELA_F32 && p.M >= MM_BLAS_MIN_M && blas_is_fast(cpu->level) &&
        mm_blas(&p, threads))
        return ELA_OK;
#endif
    char *xq = NULL;
    if (p.wdt == ELA_Q8_0) {
        p.xqs = cpu_mm_q8_row_bytes(p.K);
        xq = ela_aligned_alloc((size_t)(p.M * p.xqs));
        if (!xq)
            return ela_fail(ELA_ERR_OOM, "cpu: matmul: out of memory for %lld quantized "
                            "activation rows", (long long)p.M);
        p.xq = xq;
#pragma omp parallel for num_threads(threads) if (p.M * p.K >= (1 << 16))
        for (int64_t m = 0; m < p.M; m++)
            p.kern->quantize_row(p.x + m * p.xs, p.K, xq + m * p.xqs);
    }
    int64_t row_bytes = p.wdt == ELA_Q8_0 ? p.xqs : p.K * (int64_t)sizeof(float);
    int64_t mb = MM_L2_BYTES / row_bytes / CPU_MM_R * CPU_MM_R;
    if (mb < CPU_MM_R)
        mb = CPU_MM_R;
    int64_t groups = (p.N + CPU_MM_C - 1) / CPU_MM_C;
    int64_t per_chunk = groups / (4 * (int64_t)threads); /* >= 4 chunks per thread */
    per_chunk = per_chunk < 1 ? 1 : per_chunk > MM_CHUNK_GROUPS ? MM_CHUNK_GROUPS : per_chunk;
    int64_t chunks = (groups + per_chunk - 1) / per_chunk;
    if (threads > chunks)
        threads = (int)chunks;
#pragma omp parallel num_threads(threads)
    for (int64_t m0 = 0; m0 < p.M; m0 += mb) {
        int64_t m1 = p.M - m0 < mb ? p.M : m0 + mb;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < chunks; ch++) {
            int64_t g1 = (ch + 1) * per_chunk;
            mm_block(&p, m0, m1, ch * per_chunk, g1 < groups ? g1 : groups);
        }
    }
    ela_aligned_free(xq);
    return ELA_OK;
}

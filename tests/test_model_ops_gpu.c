/* The model ops (ela.h "Model ops") and Token Sparse Attention's row copies on every GPU device
 * the build has a plugin for (labels `cuda` and `vulkan`, DESIGN.md 7): one case list run on
 * each CUDA device (cuda:N) and each Vulkan device (vulkan:N, in its default configuration and
 * with its fallbacks forced: staging copies, 16-bit data as words, shared memory instead of
 * subgroup shuffles), against the float64 references of tests/ref/model_ops_ref.c and against
 * the CPU backend on the same random inputs, on the kinds of cases of test_model_ops.c: matmul
 * with f32/f16/bf16/q8_0 weights at M from 1 to 300 (the GEMV and the tensor-core or tiled
 * prefill kernels, and each side of the M = 8 switch), odd N and K, bias or not, strided views
 * (which the kernels must pack or read element-wise), aligned shapes that take the 16-byte and
 * cp.async paths; rms_norm 2-D to 4-D, short and long rows, in place; rope in both pair styles
 * with every scaling and with freq_factors at positions up to 3e5, and an n_rot whose
 * frequencies do not fit the launch; silu_mul and add in place; sigmoid_gate; get_rows of every
 * table dtype; copy between every dtype pair into a strided KV-cache view; token_compress and
 * token_decompress of every dtype (bytes equal to the CPU's). Outputs that are views of a larger
 * tensor must leave the rest of it untouched. On devices whose largest storage binding is small
 * (lavapipe: 128 MiB), views spanning more than one binding (rows far apart), which the Vulkan
 * encoders must bind in pieces. Then the models of tests/data/models (Llama f32, Qwen2 f16,
 * Qwen3 bf16; HF and GGUF; Llama q8_0) loaded onto each device in its default configuration,
 * with their logits against PyTorch's as in test_model.c (chunked prefill, then decode, f32 and
 * f16 caches; greedy tokens). Sizes stay small: lavapipe is ~70x slower than the CPU.
 * Vulkan runs under the validation layer (ELA_VK_VALIDATION=1 unless set otherwise), where any
 * validation error fails the op that caused it. A plugin the build has (ELA_TEST_WANT_VULKAN,
 * ELA_TEST_WANT_CUDA from CMake) must load; a machine without its devices prints "skipped: no
 * Vulkan device" / "skipped: no CUDA device" and passes. Replay with ELA_TEST_SEED;
 * ELA_TEST_VERBOSE=1 prints every case's error; ELA_TEST_ONLY=matmul,copy,... runs only those
 * parts ("ops": every op, no models). ELA_TEST_BENCH=1 runs no test but times matmul on
 * Llama-3-8B's shapes (GEMV weight bandwidth, prefill TFLOP/s) against the device's copy
 * bandwidth measured in the same run. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/model_ops_ref.h"
#include "test_common.h"

/* Tolerances, relative L2 against the float64 reference (which reads exactly the rounded
 * weights and q8_0 blocks the kernels read):
 * - f32 math: the GEMV (every weight dtype, f32 activations, q8_0 dequantized in registers),
 *   the f32 tiled kernel, rms_norm, rope (sin/cos in double on both sides), silu_mul, add:
 *   only f32 accumulation order differs: 1e-5.
 * - tensor-core prefill with f16 and q8_0 weights: activations split into two f16 halves keep
 *   22 bits, so again f32 accumulation only: 1e-5. With bf16 weights the halves keep 16 bits
 *   (2^-16 relative per activation, ~5e-6 on a dot product): 3e-5.
 * - get_rows and copy are exact (bytes compared).
 * Against the CPU backend: the sum of both sides' bounds, except matmul with q8_0 weights,
 * where the CPU quantizes the activations to q8_0 (test_model_ops.c: up to 2e-2 per case). */
#define TOL 1e-5
#define TOL_MMA_BF16 3e-5
#define TOL_CPU_Q8 2e-2
/* Model logits against PyTorch: as test_model.c. */
#define TOL_KV_F32 2e-4
#define TOL_KV_F16 1e-2
#define TOL_Q8_0 5e-2

#ifndef ELA_TEST_WANT_VULKAN
#define ELA_TEST_WANT_VULKAN 0
#endif
#ifndef ELA_TEST_WANT_CUDA
#define ELA_TEST_WANT_CUDA 0
#endif

/* Devices under test: each opened configuration with its label ("vulkan:0 default"); models
 * and timings run on the default ones (primary); max_binding_mib is a Vulkan device's
 * maxStorageBufferRange (0: unknown or large). */
#define MAX_DEVS (2 * 2 * ELA_MAX_DEVICES)
static ela_backend *cpu, *devs[MAX_DEVS];
static char dev_label[MAX_DEVS][64];
static int dev_primary[MAX_DEVS];
static uint64_t dev_max_binding_mib[MAX_DEVS];
static int n_devs, verbose;

/* The label of a device under test ("cpu" for the CPU backend). */
static const char *name_of(const ela_backend *be) {
    for (int d = 0; d < n_devs; d++)
        if (devs[d] == be)
            return dev_label[d];
    return ela_backend_name(be);
}

/* ---- tensors that are views into a padded parent (as test_model_ops.c) -------------------- */
typedef struct {
    ela_tensor *parent, *view;
    ela_dtype dt;
    int nd;
    int64_t pext[4], start[4], ext[4];
    unsigned char *before;
    size_t bytes;
} sub_t;

static void sub_free(sub_t *s) {
    ela_tensor_free(s->view);
    ela_tensor_free(s->parent);
    free(s->before);
    memset(s, 0, sizeof *s);
}

static int sub_new(ela_backend *be, ela_dtype dt, int nd, const int64_t *ext, int padded,
                   sub_t *s) {
    memset(s, 0, sizeof *s);
    int64_t blk = ela_dtype_block(dt);
    s->dt = dt;
    s->nd = nd;
    for (int i = 0; i < nd; i++) {
        int64_t unit = i == nd - 1 ? blk : 1;
        s->ext[i] = ext[i];
        s->start[i] = padded ? unit : 0;
        s->pext[i] = ext[i] + (padded ? 2 * unit : 0);
    }
    if (ela_tensor_new(be, dt, nd, s->pext, NULL, &s->parent) != ELA_OK)
        return -1;
    int64_t off = 0, strides[4];
    for (int i = 0; i < nd; i++) {
        strides[i] = ela_tensor_stride(s->parent, i);
        off += (i == nd - 1 ? s->start[i] / blk : s->start[i]) * strides[i];
    }
    if (ela_tensor_view(s->parent, nd, s->ext, strides, off, &s->view) != ELA_OK)
        return -1;
    s->bytes = ela_dtype_row_bytes(dt, ela_tensor_numel(s->parent));
    s->before = malloc(s->bytes ? s->bytes : 1);
    if (!s->before)
        return -1;
    for (size_t i = 0; i < s->bytes; i++)
        s->before[i] = (unsigned char)(0xa5 ^ (i * 7));
    if (dt == ELA_F32)
        for (size_t i = 0; i < s->bytes / 4; i++) {
            float f = 12345.0f + (float)(i % 97);
            memcpy(s->before + 4 * i, &f, 4);
        }
    return ela_tensor_write(s->parent, s->before, s->bytes) == ELA_OK ? 0 : -1;
}

static int sub_outside_intact(const sub_t *s) {
    unsigned char *now = malloc(s->bytes ? s->bytes : 1);
    if (!now || ela_tensor_read(s->parent, now, s->bytes) != ELA_OK) {
        free(now);
        return 0;
    }
    int64_t blk = ela_dtype_block(s->dt);
    int64_t unit = (int64_t)ela_dtype_row_bytes(s->dt, blk);
    int64_t units = (int64_t)s->bytes / unit;
    int ok = 1;
    for (int64_t u = 0; u < units && ok; u++) {
        int64_t rem = u, inside = 1;
        for (int i = s->nd - 1; i >= 0; i--) {
            int64_t n = i == s->nd - 1 ? s->pext[i] / blk : s->pext[i];
            int64_t idx = rem % n, st = i == s->nd - 1 ? s->start[i] / blk : s->start[i];
            int64_t ex = i == s->nd - 1 ? s->ext[i] / blk : s->ext[i];
            rem /= n;
            inside &= idx >= st && idx < st + ex;
        }
        if (!inside)
            ok = memcmp(now + u * unit, s->before + u * unit, (size_t)unit) == 0;
    }
    free(now);
    return ok;
}

static float *fmalloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }
static double *dmalloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(double)); }

/* Packed bytes of n values in dt; q8_0 from the reference quantizer. */
static void *to_bytes(const float *x, int64_t n, ela_dtype dt) {
    size_t bytes = ela_dtype_row_bytes(dt, n);
    unsigned char *out = malloc(bytes ? bytes : 1);
    if (!out)
        return NULL;
    if (dt != ELA_Q8_0) {
        ela_convert(x, ELA_F32, out, dt, n);
        return out;
    }
    int8_t q[32];
    float d;
    for (int64_t b = 0; b < n / 32; b++) {
        ref_q8_0_quantize(x + 32 * b, 32, q, &d);
        uint16_t h;
        ela_convert(&d, ELA_F32, &h, ELA_F16, 1);
        memcpy(out + 34 * b, &h, 2);
        memcpy(out + 34 * b + 2, q, 32);
    }
    return out;
}

/* The float values a tensor of dt holding `bytes` has. */
static void values_of(const void *bytes, int64_t n, ela_dtype dt, float *out) {
    if (dt == ELA_Q8_0)
        ref_q8_0_dequantize(bytes, n, out);
    else
        ela_convert(bytes, dt, out, ELA_F32, n);
}

/* rel L2 of got against another float result. */
static double rel_l2_f(const float *ref, const float *got, int64_t n) {
    double *r = dmalloc(n);
    if (!r)
        return INFINITY;
    for (int64_t i = 0; i < n; i++)
        r[i] = ref[i];
    double e = test_rel_l2(r, got, n);
    free(r);
    return e;
}

static void report(const char *what, double err, double tol) {
    if (verbose)
        printf("  %-60s rel L2 %.2e (bound %.0e)\n", what, err, tol);
}

/* ---- matmul -------------------------------------------------------------------------------- */
static double mm_tolerance(ela_dtype wdt, int64_t M) {
    return M > 8 && wdt == ELA_BF16 ? TOL_MMA_BF16 : TOL;
}

/* Runs y = x w^T + b on `be` with views (padded or not); got [M, N]; 0 on success. */
static int run_matmul(ela_backend *be, ela_dtype wdt, const float *x, const void *wbytes,
                      const float *bias, int64_t M, int64_t N, int64_t K, int padded, float *got,
                      int *intact) {
    sub_t tx, tw, ty, tb;
    memset(&tx, 0, sizeof tx);
    memset(&tw, 0, sizeof tw);
    memset(&ty, 0, sizeof ty);
    memset(&tb, 0, sizeof tb);
    int64_t ex[2] = {M, K}, ew[2] = {N, K}, ey[2] = {M, N};
    int rc = -1;
    if (sub_new(be, ELA_F32, 2, ex, padded, &tx) || sub_new(be, wdt, 2, ew, padded, &tw) ||
        sub_new(be, ELA_F32, 2, ey, padded, &ty) || sub_new(be, ELA_F32, 1, &N, padded, &tb))
        goto done;
    if (ela_tensor_write_f32(tx.view, x, M * K) != ELA_OK ||
        ela_tensor_write(tw.view, wbytes, ela_dtype_row_bytes(wdt, N * K)) != ELA_OK ||
        (bias && ela_tensor_write_f32(tb.view, bias, N) != ELA_OK))
        goto done;
    ela_status st = ela_matmul(be, tx.view, tw.view, bias ? tb.view : NULL, ty.view);
    CHECKF(st == ELA_OK, "matmul on %s: %s", name_of(be), ela_last_error());
    if (st != ELA_OK || ela_tensor_read_f32(ty.view, got, M * N) != ELA_OK)
        goto done;
    *intact = sub_outside_intact(&ty);
    rc = 0;
done:
    sub_free(&tx);
    sub_free(&tw);
    sub_free(&ty);
    sub_free(&tb);
    return rc;
}

static void check_matmul(ela_dtype wdt, int64_t M, int64_t N, int64_t K, int use_bias, int padded,
                         uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    float *x = fmalloc(M * K), *w = fmalloc(N * K), *bias = fmalloc(N), *wf = fmalloc(N * K);
    float *got = fmalloc(M * N), *want_cpu = fmalloc(M * N);
    double *ref = dmalloc(M * N);
    void *wbytes = NULL;
    char what[160];
    snprintf(what, sizeof what, "matmul %s M=%lld N=%lld K=%lld bias=%d padded=%d",
             ela_dtype_name(wdt), (long long)M, (long long)N, (long long)K, use_bias, padded);
    if (!x || !w || !bias || !wf || !got || !want_cpu || !ref) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, x, M * K, 1.0f);
    test_fill_normal(&rng, w, N * K, 0.5f);
    test_fill_normal(&rng, bias, N, 1.0f);
    if (!(wbytes = to_bytes(w, N * K, wdt))) {
        CHECK(!"out of memory");
        goto done;
    }
    values_of(wbytes, N * K, wdt, wf);
    ref_matmul(x, wf, use_bias ? bias : NULL, M, N, K, ref);
    int intact = 0;
    if (run_matmul(cpu, wdt, x, wbytes, use_bias ? bias : NULL, M, N, K, padded, want_cpu,
                   &intact)) {
        CHECKF(0, "%s: CPU run failed", what);
        goto done;
    }
    const double tol = mm_tolerance(wdt, M);
    const double tol_cpu = wdt == ELA_Q8_0 ? TOL_CPU_Q8 : tol + TOL;
    for (int d = 0; d < n_devs; d++) {
        intact = 0;
        if (run_matmul(devs[d], wdt, x, wbytes, use_bias ? bias : NULL, M, N, K, padded, got,
                       &intact)) {
            CHECKF(0, "%s: %s run failed", what, name_of(devs[d]));
            continue;
        }
        double err = test_rel_l2(ref, got, M * N), err_cpu = rel_l2_f(want_cpu, got, M * N);
        report(what, err, tol);
        CHECKF(err <= tol, "%s on %s: rel L2 %.3g against float64 (bound %.0e)", what,
               name_of(devs[d]), err, tol);
        CHECKF(err_cpu <= tol_cpu, "%s on %s: rel L2 %.3g against the CPU (bound %.0e)", what,
               name_of(devs[d]), err_cpu, tol_cpu);
        CHECKF(intact, "%s on %s: wrote outside y", what, name_of(devs[d]));
    }
done:
    free(wbytes);
    free(x);
    free(w);
    free(bias);
    free(wf);
    free(got);
    free(want_cpu);
    free(ref);
}

static void test_matmul(void) {
    static const ela_dtype dts[4] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};
    static const int64_t Ms[7] = {1, 3, 8, 9, 17, 130, 300};
    static const int64_t nk_float[2][2] = {{37, 67}, {9, 200}}, nk_q8[2][2] = {{37, 64}, {9, 224}};
    uint64_t stream = 1000;
    for (int d = 0; d < 4; d++) {
        for (int m = 0; m < 7; m++)
            for (int s = 0; s < 2; s++) {
                const int64_t *nk = dts[d] == ELA_Q8_0 ? nk_q8[s] : nk_float[s];
                check_matmul(dts[d], Ms[m], nk[0], nk[1], (m + s) % 2, (m + d + s) % 2, stream++);
            }
        const int q8 = dts[d] == ELA_Q8_0;
        /* Decode over many blocks; aligned rows (16-byte loads, cp.async tiles) with tails in
         * M and N; K past several tensor-core k-tiles and GEMV steps. */
        check_matmul(dts[d], 1, 1030, q8 ? 320 : 333, 1, 0, stream++);
        check_matmul(dts[d], 1, 2050, 1024, 0, 0, stream++);
        check_matmul(dts[d], 4, 300, 2048, 1, 0, stream++);
        check_matmul(dts[d], 8, 64, 4096, 0, 1, stream++);
        check_matmul(dts[d], 200, 260, 512, 1, 0, stream++);
        check_matmul(dts[d], 130, 101, q8 ? 8192 : 4100, d % 2, 1, stream++);
        check_matmul(dts[d], 257, 384, 1024, 0, 0, stream++);
    }
}

/* ---- rms_norm ------------------------------------------------------------------------------ */
static void check_rms_norm(int nd, const int64_t *ext, ela_dtype wdt, int mode, float eps,
                           uint64_t stream) {
    /* mode 0: separate y; 1: in place; 2: padded views for x and y */
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t numel = 1, D = ext[nd - 1];
    for (int i = 0; i < nd; i++)
        numel *= ext[i];
    float *x = fmalloc(numel), *w = fmalloc(D), *got = fmalloc(numel), *cpu_y = fmalloc(numel);
    double *ref = dmalloc(numel);
    char what[160];
    snprintf(what, sizeof what, "rms_norm %dD rows of %lld, w %s, mode %d", nd, (long long)D,
             ela_dtype_name(wdt), mode);
    if (!x || !w || !got || !cpu_y || !ref) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, x, numel, 2.0f);
    test_fill_normal(&rng, w, D, 1.0f);
    test_round_through(w, D, wdt);
    ref_rms_norm(x, w, numel / D, D, eps, ref);
    for (int b = -1; b < n_devs; b++) {
        ela_backend *be = b < 0 ? cpu : devs[b];
        float *out = b < 0 ? cpu_y : got;
        sub_t tx, ty, tw;
        memset(&ty, 0, sizeof ty);
        if (sub_new(be, ELA_F32, nd, ext, mode == 2, &tx) ||
            (mode != 1 && sub_new(be, ELA_F32, nd, ext, mode == 2, &ty)) ||
            sub_new(be, wdt, 1, &D, 0, &tw)) {
            CHECK(!"tensor setup failed");
            sub_free(&tx);
            sub_free(&ty);
            goto done;
        }
        ela_tensor *y = mode == 1 ? tx.view : ty.view;
        CHECK_STATUS(ela_tensor_write_f32(tx.view, x, numel), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(tw.view, w, D), ELA_OK);
        CHECK_STATUS(ela_rms_norm(be, tx.view, tw.view, eps, y), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(y, out, numel), ELA_OK);
        if (b >= 0) {
            double err = test_rel_l2(ref, got, numel), err_cpu = rel_l2_f(cpu_y, got, numel);
            report(what, err, TOL);
            CHECKF(err <= TOL && err_cpu <= 2 * TOL, "%s on %s: rel L2 %.3g (CPU %.3g)", what,
                   name_of(be), err, err_cpu);
            if (mode == 2)
                CHECKF(sub_outside_intact(&ty), "%s: wrote outside y", what);
        }
        sub_free(&tx);
        sub_free(&ty);
        sub_free(&tw);
    }
done:
    free(x);
    free(w);
    free(got);
    free(cpu_y);
    free(ref);
}

static void test_rms_norm(void) {
    static const int64_t shapes[7][4] = {{1, 7},   {5, 64},       {3, 4, 33},  {20, 4099},
                                         {2, 2, 3, 16}, {300, 32, 128}, {2, 8192}};
    static const int nds[7] = {2, 2, 3, 2, 4, 3, 2};
    uint64_t stream = 2000;
    for (int s = 0; s < 7; s++)
        for (int mode = 0; mode < 3; mode++)
            check_rms_norm(nds[s], shapes[s], (ela_dtype)((s + mode) % 3), mode,
                           s % 2 ? 1e-6f : 1e-5f, stream++);
}

/* ---- rope ---------------------------------------------------------------------------------- */
static void check_rope(int64_t M, int64_t H, int64_t d, int n_rot, int interleaved,
                       ela_rope_scaling scaling, int with_factors, int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t numel = M * H * d;
    float *x = fmalloc(numel), *got = fmalloc(numel), *cpu_y = fmalloc(numel);
    double *ref = dmalloc(numel);
    int32_t *pos = malloc((size_t)M * sizeof(int32_t));
    static float factors[8192];
    char what[160];
    snprintf(what, sizeof what, "rope M=%lld H=%lld d=%lld n_rot=%d interleaved=%d scaling=%d "
             "factors=%d padded=%d", (long long)M, (long long)H, (long long)d, n_rot, interleaved,
             (int)scaling, with_factors, padded);
    if (!x || !got || !cpu_y || !ref || !pos) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, x, numel, 1.0f);
    static const int32_t fixed[] = {0, 1, 199999, 200000, 262143, 131071};
    for (int64_t m = 0; m < M; m++)
        pos[m] = m < 6 ? fixed[m] : (int32_t)(test_rng_u64(&rng) % 300000);
    ela_rope_params p = {scaling == ELA_ROPE_SCALING_LLAMA3 ? 500000.0f : 10000.0f, n_rot,
                         interleaved, scaling, scaling == ELA_ROPE_SCALING_LINEAR ? 4.0f : 8.0f,
                         1.0f, 4.0f, 8192, NULL, 0.0f, 0.0f, 0.0f, 0};
    if (scaling == ELA_ROPE_SCALING_YARN) { /* Qwen2.5's 4x over 32K */
        p.theta = 1000000.0f;
        p.factor = 4.0f;
        p.original_max_position = 32768;
    }
    ref_rope_params rp = {p.theta, n_rot ? n_rot : (int)d, interleaved, (int)scaling, p.factor,
                          p.low_freq_factor, p.high_freq_factor, (double)p.original_max_position,
                          NULL, 0.0, 0.0, 0.0, 1};
    if (with_factors) {
        for (int i = 0; i < rp.n_rot / 2; i++)
            factors[i] = (float)test_rng_uniform(&rng, 1.0, 8.0);
        p.freq_factors = rp.freq_factors = factors;
    }
    ref_rope(x, pos, M, H, d, &rp, ref);
    int64_t ext[3] = {M, H, d};
    for (int b = -1; b < n_devs; b++) {
        ela_backend *be = b < 0 ? cpu : devs[b];
        float *out = b < 0 ? cpu_y : got;
        sub_t tx;
        ela_tensor *tp = NULL;
        if (sub_new(be, ELA_F32, 3, ext, padded, &tx) ||
            ela_tensor_new(be, ELA_I32, 1, &M, NULL, &tp) != ELA_OK) {
            CHECK(!"tensor setup failed");
            sub_free(&tx);
            goto done;
        }
        CHECK_STATUS(ela_tensor_write_f32(tx.view, x, numel), ELA_OK);
        CHECK_STATUS(ela_tensor_write(tp, pos, (size_t)M * sizeof(int32_t)), ELA_OK);
        CHECK_STATUS(ela_rope(be, tx.view, tp, &p), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(tx.view, out, numel), ELA_OK);
        if (b >= 0) {
            double err = test_rel_l2(ref, got, numel), err_cpu = rel_l2_f(cpu_y, got, numel);
            int64_t bad_tail = 0;
            for (int64_t r = 0; r < M * H; r++)
                for (int64_t i = rp.n_rot; i < d; i++)
                    bad_tail += got[r * d + i] != x[r * d + i];
            report(what, err, TOL);
            CHECKF(err <= TOL && err_cpu <= 2 * TOL && bad_tail == 0,
                   "%s on %s: rel L2 %.3g (CPU %.3g), %lld unrotated dims changed", what,
                   name_of(be), err, err_cpu, (long long)bad_tail);
            if (padded)
                CHECKF(sub_outside_intact(&tx), "%s: wrote outside x", what);
        }
        sub_free(&tx);
        ela_tensor_free(tp);
    }
done:
    free(x);
    free(got);
    free(cpu_y);
    free(ref);
    free(pos);
}

static void test_rope(void) {
    uint64_t stream = 3000;
    static const int64_t dims[4][2] = {{64, 0}, {128, 64}, {10, 6}, {640, 600}};
    for (int k = 0; k < 4; k++)
        for (int style = 0; style < 2; style++)
            for (int sc = 0; sc < 5; sc++) /* 3: no scaling, per-frequency factors; 4: YaRN */
                check_rope(k == 1 ? 9 : k == 3 ? 3 : 6, 3, dims[k][0], (int)dims[k][1], style,
                           sc == 4 ? ELA_ROPE_SCALING_YARN : (ela_rope_scaling)(sc % 3), sc == 3,
                           (k + style + sc) % 2, stream++);
    /* Llama 3.1 at 128K-class positions with its GGUF rope_freqs, many rows and heads. */
    check_rope(200, 32, 128, 0, 1, ELA_ROPE_SCALING_NONE, 1, 0, stream++);
    check_rope(200, 8, 128, 0, 0, ELA_ROPE_SCALING_LLAMA3, 0, 1, stream++);
}

/* ---- silu_mul and add ---------------------------------------------------------------------- */
static void check_binary(int is_add, int nd, const int64_t *ext, int mode, uint64_t stream) {
    /* mode 0: separate out; 1: out = a; 2: out = b; 3: padded views everywhere */
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= ext[i];
    float *a = fmalloc(n), *b = fmalloc(n), *got = fmalloc(n), *cpu_y = fmalloc(n);
    double *ref = dmalloc(n);
    char what[160];
    snprintf(what, sizeof what, "%s %dD mode %d", is_add ? "add" : "silu_mul", nd, mode);
    if (!a || !b || !got || !cpu_y || !ref) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, a, n, 3.0f);
    test_fill_normal(&rng, b, n, 1.0f);
    if (is_add)
        ref_add(a, b, n, ref);
    else
        ref_silu_mul(a, b, n, ref);
    for (int k = -1; k < n_devs; k++) {
        ela_backend *be = k < 0 ? cpu : devs[k];
        float *res = k < 0 ? cpu_y : got;
        sub_t ta, tb, to;
        memset(&to, 0, sizeof to);
        if (sub_new(be, ELA_F32, nd, ext, mode == 3, &ta) ||
            sub_new(be, ELA_F32, nd, ext, mode == 3, &tb) ||
            ((mode == 0 || mode == 3) && sub_new(be, ELA_F32, nd, ext, mode == 3, &to))) {
            CHECK(!"tensor setup failed");
            goto done;
        }
        ela_tensor *out = mode == 1 ? ta.view : mode == 2 ? tb.view : to.view;
        CHECK_STATUS(ela_tensor_write_f32(ta.view, a, n), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(tb.view, b, n), ELA_OK);
        if (is_add)
            CHECK_STATUS(ela_add(be, ta.view, tb.view, out), ELA_OK);
        else
            CHECK_STATUS(ela_silu_mul(be, ta.view, tb.view, out), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(out, res, n), ELA_OK);
        if (k >= 0) {
            double err = test_rel_l2(ref, got, n), err_cpu = rel_l2_f(cpu_y, got, n);
            report(what, err, TOL);
            CHECKF(err <= TOL && err_cpu <= 2 * TOL, "%s on %s: rel L2 %.3g (CPU %.3g)", what,
                   name_of(be), err, err_cpu);
            if (mode == 3)
                CHECKF(sub_outside_intact(&to), "%s: wrote outside out", what);
        }
        sub_free(&ta);
        sub_free(&tb);
        sub_free(&to);
    }
done:
    free(a);
    free(b);
    free(got);
    free(cpu_y);
    free(ref);
}

static void test_binary(void) {
    static const int64_t shapes[4][3] = {{3, 37}, {2, 3, 129}, {40, 1001}, {70000, 3}};
    static const int nds[4] = {2, 3, 2, 2};
    uint64_t stream = 4000;
    for (int s = 0; s < 4; s++)
        for (int mode = 0; mode < 4; mode++)
            for (int op = 0; op < 2; op++)
                check_binary(op, nds[s], shapes[s], mode, stream++);
}

/* ---- get_rows ------------------------------------------------------------------------------ */
static void check_get_rows(ela_dtype dt, int64_t V, int64_t D, int64_t M, int padded,
                           uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    float *table = fmalloc(V * D), *vals = fmalloc(V * D), *got = fmalloc(M * D);
    int32_t *ids = malloc((size_t)M * sizeof(int32_t));
    void *bytes = NULL;
    if (!table || !vals || !got || !ids) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, table, V * D, 1.0f);
    for (int64_t m = 0; m < M; m++)
        ids[m] = m == 0   ? (int32_t)(V - 1)
                 : m == 1 ? 0
                          : (int32_t)(test_rng_u64(&rng) % (uint64_t)V);
    if (!(bytes = to_bytes(table, V * D, dt))) {
        CHECK(!"out of memory");
        goto done;
    }
    values_of(bytes, V * D, dt, vals);
    int64_t et[2] = {V, D}, eo[2] = {M, D};
    for (int k = 0; k < n_devs; k++) {
        sub_t tt, to;
        ela_tensor *ti = NULL;
        if (sub_new(devs[k], dt, 2, et, padded, &tt) ||
            sub_new(devs[k], ELA_F32, 2, eo, padded, &to) ||
            ela_tensor_new(devs[k], ELA_I32, 1, &M, NULL, &ti) != ELA_OK) {
            CHECK(!"tensor setup failed");
            goto done;
        }
        CHECK_STATUS(ela_tensor_write(tt.view, bytes, ela_dtype_row_bytes(dt, V * D)), ELA_OK);
        CHECK_STATUS(ela_tensor_write(ti, ids, (size_t)M * sizeof(int32_t)), ELA_OK);
        CHECK_STATUS(ela_get_rows(devs[k], tt.view, ti, to.view), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(to.view, got, M * D), ELA_OK);
        int64_t bad = 0;
        for (int64_t m = 0; m < M; m++)
            bad += memcmp(got + m * D, vals + ids[m] * D, (size_t)D * sizeof(float)) != 0;
        CHECKF(bad == 0, "get_rows %s D=%lld M=%lld on %s: %lld rows wrong", ela_dtype_name(dt),
               (long long)D, (long long)M, name_of(devs[k]), (long long)bad);
        CHECKF(sub_outside_intact(&to), "get_rows %s: wrote outside out", ela_dtype_name(dt));
        sub_free(&tt);
        sub_free(&to);
        ela_tensor_free(ti);
    }
done:
    free(bytes);
    free(table);
    free(vals);
    free(got);
    free(ids);
}

static void test_get_rows(void) {
    uint64_t stream = 5000;
    for (int d = 0; d < 4; d++) {
        ela_dtype dt = d == 3 ? ELA_Q8_0 : (ela_dtype)d;
        check_get_rows(dt, 50, 64, 9, d % 2, stream++);
        check_get_rows(dt, 50, 64, 600, (d + 1) % 2, stream++);
        check_get_rows(dt, 7, dt == ELA_Q8_0 ? 96 : 13, 1, 1, stream++);
        check_get_rows(dt, 1000, 4096, 70, 0, stream++);
    }
}

/* ---- copy ---------------------------------------------------------------------------------- */
/* src [Hkv, n, d] (padded or not) -> cache [Hkv, cap, d] rows [pos, pos + n); the result must
 * be the CPU backend's bytes (ela_convert) exactly. */
static void check_copy(ela_dtype sdt, ela_dtype ddt, int64_t hkv, int64_t n, int64_t d,
                       int64_t cap, int64_t pos, int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t numel = hkv * n * d;
    float *x = fmalloc(numel), *vals = fmalloc(numel);
    void *sbytes = NULL, *want = NULL, *got = NULL;
    size_t dbytes = ela_dtype_row_bytes(ddt, numel);
    got = malloc(dbytes ? dbytes : 1);
    want = malloc(dbytes ? dbytes : 1);
    if (!x || !vals || !got || !want) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, x, numel, 1.5f);
    if (!(sbytes = to_bytes(x, numel, sdt))) {
        CHECK(!"out of memory");
        goto done;
    }
    int64_t es[3] = {hkv, n, d}, ec[3] = {hkv, cap, d};
    for (int k = -1; k < n_devs; k++) {
        ela_backend *be = k < 0 ? cpu : devs[k];
        sub_t ts, tc;
        ela_tensor *dst = NULL;
        if (sub_new(be, sdt, 3, es, padded, &ts) || sub_new(be, ddt, 3, ec, 0, &tc)) {
            CHECK(!"tensor setup failed");
            goto done;
        }
        int64_t strides[3] = {ela_tensor_stride(tc.view, 0), ela_tensor_stride(tc.view, 1),
                              ela_tensor_stride(tc.view, 2)};
        CHECK_STATUS(ela_tensor_view(tc.view, 3, es, strides, pos * strides[1], &dst), ELA_OK);
        tc.start[1] = pos;
        tc.ext[1] = n;
        CHECK_STATUS(ela_tensor_write(ts.view, sbytes, ela_dtype_row_bytes(sdt, numel)), ELA_OK);
        if (dst) {
            CHECK_STATUS(ela_copy(be, ts.view, dst), ELA_OK);
            CHECK_STATUS(ela_tensor_read(dst, k < 0 ? want : got, dbytes), ELA_OK);
        }
        if (k >= 0) {
            CHECKF(memcmp(got, want, dbytes) == 0, "copy %s -> %s [%lld, %lld, %lld] padded=%d "
                   "on %s: bytes differ from the CPU's", ela_dtype_name(sdt), ela_dtype_name(ddt),
                   (long long)hkv, (long long)n, (long long)d, padded, name_of(be));
            CHECKF(sub_outside_intact(&tc), "copy %s -> %s: wrote outside the appended rows",
                   ela_dtype_name(sdt), ela_dtype_name(ddt));
        }
        ela_tensor_free(dst);
        sub_free(&ts);
        sub_free(&tc);
    }
    /* And the CPU's bytes are the reference conversion (as test_model_ops.c checks there). */
    values_of(sbytes, numel, sdt, vals);
    void *ref = sdt == ddt ? NULL : to_bytes(vals, numel, ddt);
    CHECKF(memcmp(want, ref ? ref : sbytes, dbytes) == 0, "copy %s -> %s: CPU bytes differ from "
           "the reference conversion", ela_dtype_name(sdt), ela_dtype_name(ddt));
    free(ref);
done:
    free(x);
    free(vals);
    free(sbytes);
    free(want);
    free(got);
}

static void test_copy(void) {
    static const ela_dtype dts[4] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};
    uint64_t stream = 6000;
    for (int s = 0; s < 4; s++)
        for (int d = 0; d < 4; d++) {
            check_copy(dts[s], dts[d], 2, 5, 64, 16, 7, (s + d) % 2, stream++);
            check_copy(dts[s], dts[d], 4, 130, 128, 300, 41, (s + d + 1) % 2, stream++);
            check_copy(dts[s], dts[d], 8, 600, 128, 2048, 1000, 0, stream++);
            if (dts[s] != ELA_Q8_0 && dts[d] != ELA_Q8_0)
                check_copy(dts[s], dts[d], 3, 5, 13, 9, 4, 1, stream++);
        }
}

/* ---- sigmoid_gate ------------------------------------------------------------------------ */
/* x [M, H, d] times sigmoid(g[m, h * stride + offset]), g [M, H * stride + 2] (the last columns
 * must be ignored); float64 reference and the CPU backend. */
static void check_sigmoid_gate(int64_t M, int64_t H, int64_t d, int stride, int offset,
                               int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    const int64_t gw = H * stride + 2, nx = M * H * d;
    float *x = fmalloc(nx), *g = fmalloc(M * gw), *got = fmalloc(nx), *cpu_y = fmalloc(nx);
    double *ref = dmalloc(nx);
    char what[160];
    snprintf(what, sizeof what, "sigmoid_gate M=%lld H=%lld d=%lld stride %d offset %d padded=%d",
             (long long)M, (long long)H, (long long)d, stride, offset, padded);
    if (!x || !g || !got || !cpu_y || !ref) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, x, nx, 1.0f);
    test_fill_normal(&rng, g, M * gw, 3.0f);
    for (int64_t m = 0; m < M; m++)
        for (int64_t h = 0; h < H; h++) {
            double gate = 1.0 / (1.0 + exp(-(double)g[m * gw + h * stride + offset]));
            for (int64_t i = 0; i < d; i++)
                ref[(m * H + h) * d + i] = (double)x[(m * H + h) * d + i] * gate;
        }
    int64_t ex[3] = {M, H, d}, eg[2] = {M, gw};
    for (int k = -1; k < n_devs; k++) {
        ela_backend *be = k < 0 ? cpu : devs[k];
        float *out = k < 0 ? cpu_y : got;
        sub_t tx, tg;
        if (sub_new(be, ELA_F32, 3, ex, padded, &tx) || sub_new(be, ELA_F32, 2, eg, padded, &tg)) {
            CHECK(!"tensor setup failed");
            sub_free(&tx);
            goto done;
        }
        CHECK_STATUS(ela_tensor_write_f32(tx.view, x, nx), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(tg.view, g, M * gw), ELA_OK);
        CHECK_STATUS(ela_sigmoid_gate(be, tx.view, tg.view, stride, offset), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(tx.view, out, nx), ELA_OK);
        if (k >= 0) {
            double err = test_rel_l2(ref, got, nx), err_cpu = rel_l2_f(cpu_y, got, nx);
            report(what, err, TOL);
            CHECKF(err <= TOL && err_cpu <= 2 * TOL, "%s on %s: rel L2 %.3g (CPU %.3g)", what,
                   name_of(be), err, err_cpu);
            if (padded)
                CHECKF(sub_outside_intact(&tx), "%s on %s: wrote outside x", what, name_of(be));
        }
        sub_free(&tx);
        sub_free(&tg);
    }
done:
    free(x);
    free(g);
    free(got);
    free(cpu_y);
    free(ref);
}

static void test_sigmoid_gate(void) {
    uint64_t stream = 4500;
    check_sigmoid_gate(5, 4, 16, 3, 1, 0, stream++);
    check_sigmoid_gate(3, 7, 33, 3, 2, 1, stream++);
    check_sigmoid_gate(1, 14, 64, 1, 0, 1, stream++);
    check_sigmoid_gate(130, 8, 128, 3, 0, 0, stream++);
}

/* ---- token_compress / token_decompress ---------------------------------------------------- */
/* Random strictly ascending lists: row h of idx [hq, n_sel] (the last `window` rows always). */
static void make_lists(test_rng *rng, int hq, int64_t L, int64_t n_sel, int32_t *idx) {
    unsigned char *pick = malloc((size_t)L);
    if (!pick)
        return;
    for (int h = 0; h < hq; h++) {
        memset(pick, 0, (size_t)L);
        int64_t have = 0;
        while (have < n_sel) {
            int64_t t = (int64_t)(test_rng_u64(rng) % (uint64_t)L);
            if (!pick[t]) {
                pick[t] = 1;
                have++;
            }
        }
        int64_t j = 0;
        for (int64_t t = 0; t < L; t++)
            if (pick[t])
                idx[(int64_t)h * n_sel + j++] = (int32_t)t;
    }
    free(pick);
}

/* token_compress of q [L, Hq, d] and k, v [Hkv, L, d] (dtype kdt) by random lists, then
 * token_decompress of the compressed q as an output: every byte equal to the CPU's (plain row
 * copies), and nothing outside the outputs touched. */
static void check_token_copy(ela_dtype qdt, ela_dtype kdt, int hq, int hkv, int64_t L,
                             int64_t n_sel, int64_t d, int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    const int64_t nq = L * hq * d, nk = (int64_t)hkv * L * d;
    const int64_t nqc = n_sel * hq * d, nkc = (int64_t)hq * n_sel * d;
    float *q = fmalloc(nq), *k = fmalloc(nk), *v = fmalloc(nk);
    int32_t *idx = malloc((size_t)(hq * n_sel > 0 ? hq * n_sel : 1) * sizeof(int32_t));
    void *qb = NULL, *kb = NULL, *vb = NULL;
    const size_t qcb = ela_dtype_row_bytes(qdt, nqc), kcb = ela_dtype_row_bytes(kdt, nkc),
                 ob = ela_dtype_row_bytes(qdt, nq);
    unsigned char *want[4] = {malloc(qcb + 1), malloc(kcb + 1), malloc(kcb + 1), malloc(ob + 1)};
    unsigned char *got = malloc((ob > kcb ? (ob > qcb ? ob : qcb) : (kcb > qcb ? kcb : qcb)) + 1);
    char what[160];
    snprintf(what, sizeof what, "token_compress q %s kv %s hq=%d hkv=%d L=%lld n_sel=%lld d=%lld "
             "padded=%d", ela_dtype_name(qdt), ela_dtype_name(kdt), hq, hkv, (long long)L,
             (long long)n_sel, (long long)d, padded);
    if (!q || !k || !v || !idx || !want[0] || !want[1] || !want[2] || !want[3] || !got) {
        CHECK(!"out of memory");
        goto done;
    }
    test_fill_normal(&rng, q, nq, 1.0f);
    test_fill_normal(&rng, k, nk, 1.0f);
    test_fill_normal(&rng, v, nk, 1.0f);
    make_lists(&rng, hq, L, n_sel, idx);
    if (!(qb = to_bytes(q, nq, qdt)) || !(kb = to_bytes(k, nk, kdt)) || !(vb = to_bytes(v, nk, kdt))) {
        CHECK(!"out of memory");
        goto done;
    }
    int64_t eq[3] = {L, hq, d}, ek[3] = {hkv, L, d}, eqc[3] = {n_sel, hq, d},
            ekc[3] = {hq, n_sel, d}, ei[2] = {hq, n_sel};
    for (int b = -1; b < n_devs; b++) {
        ela_backend *be = b < 0 ? cpu : devs[b];
        sub_t tq, tk, tv, ti, tqc, tkc, tvc, to;
        sub_t *all[8] = {&tq, &tk, &tv, &ti, &tqc, &tkc, &tvc, &to};
        for (int i = 0; i < 8; i++)
            memset(all[i], 0, sizeof *all[i]);
        if (sub_new(be, qdt, 3, eq, padded, &tq) || sub_new(be, kdt, 3, ek, padded, &tk) ||
            sub_new(be, kdt, 3, ek, padded, &tv) || sub_new(be, ELA_I32, 2, ei, padded, &ti) ||
            sub_new(be, qdt, 3, eqc, padded, &tqc) || sub_new(be, kdt, 3, ekc, padded, &tkc) ||
            sub_new(be, kdt, 3, ekc, padded, &tvc) || sub_new(be, qdt, 3, eq, padded, &to)) {
            CHECK(!"tensor setup failed");
            for (int i = 0; i < 8; i++)
                sub_free(all[i]);
            goto done;
        }
        CHECK_STATUS(ela_tensor_write(tq.view, qb, ela_dtype_row_bytes(qdt, nq)), ELA_OK);
        CHECK_STATUS(ela_tensor_write(tk.view, kb, ela_dtype_row_bytes(kdt, nk)), ELA_OK);
        CHECK_STATUS(ela_tensor_write(tv.view, vb, ela_dtype_row_bytes(kdt, nk)), ELA_OK);
        CHECK_STATUS(ela_tensor_write(ti.view, idx, (size_t)(hq * n_sel) * sizeof(int32_t)),
                     ELA_OK);
        CHECK_STATUS(ela_token_compress(be, tq.view, tk.view, tv.view, ti.view, n_sel, tqc.view,
                                        tkc.view, tvc.view), ELA_OK);
        CHECK_STATUS(ela_token_decompress(be, tqc.view, ti.view, n_sel, to.view), ELA_OK);
        const ela_tensor *outs[4] = {tqc.view, tkc.view, tvc.view, to.view};
        const sub_t *subs[4] = {&tqc, &tkc, &tvc, &to};
        const size_t sizes[4] = {qcb, kcb, kcb, ob};
        static const char *const names[4] = {"qc", "kc", "vc", "o"};
        for (int i = 0; i < 4; i++) {
            unsigned char *dst = b < 0 ? want[i] : got;
            CHECK_STATUS(ela_tensor_read(outs[i], dst, sizes[i]), ELA_OK);
            if (b < 0)
                continue;
            CHECKF(memcmp(got, want[i], sizes[i]) == 0, "%s on %s: %s differs from the CPU's", what,
                   name_of(be), names[i]);
            if (padded)
                CHECKF(sub_outside_intact(subs[i]), "%s on %s: wrote outside %s", what,
                       name_of(be), names[i]);
        }
        for (int i = 0; i < 8; i++)
            sub_free(all[i]);
    }
done:
    free(q);
    free(k);
    free(v);
    free(idx);
    free(qb);
    free(kb);
    free(vb);
    for (int i = 0; i < 4; i++)
        free(want[i]);
    free(got);
}

static void test_token_copy(void) {
    uint64_t stream = 7000;
    static const ela_dtype dts[3] = {ELA_F32, ELA_F16, ELA_BF16};
    for (int i = 0; i < 3; i++) {
        check_token_copy(dts[i], dts[i], 4, 2, 50, 17, 64, i % 2, stream++);
        check_token_copy(dts[i], dts[(i + 1) % 3], 3, 1, 9, 9, 13, 1, stream++);
        check_token_copy(dts[i], ELA_Q8_0, 8, 2, 70, 33, 32, (i + 1) % 2, stream++);
    }
    check_token_copy(ELA_F16, ELA_Q8_0, 4, 4, 300, 129, 128, 0, stream++);
    check_token_copy(ELA_F32, ELA_F16, 2, 1, 5, 0, 16, 1, stream++); /* nothing selected */
}

/* ---- tensors wider than one binding --------------------------------------------------------- */
/* A [rows, inner] view of dt whose rows lie `gap` elements apart in a parent [rows, gap]: its
 * span passes a small device binding while its data stays small (only the view is written). */
static ela_tensor *wide_view(ela_backend *be, ela_dtype dt, int64_t rows, int64_t inner,
                             int64_t gap, ela_tensor **parent) {
    int64_t pe[2] = {rows, gap}, ve[2] = {rows, inner};
    ela_tensor *view = NULL;
    *parent = NULL;
    if (ela_tensor_new(be, dt, 2, pe, NULL, parent) != ELA_OK)
        return NULL;
    int64_t strides[2] = {ela_tensor_stride(*parent, 0), ela_tensor_stride(*parent, 1)};
    if (ela_tensor_view(*parent, 2, ve, strides, 0, &view) != ELA_OK)
        return NULL;
    return view;
}

/* On a device that binds at most 256 MiB, tensors spanning ~1.4 of its binding: weights (matmul
 * GEMV and tiled), activations and outputs (matmul in pieces of rows), a table (get_rows), a
 * cache (copy, f16 and q8_0), each against the float64 reference / reference conversion; an op
 * that binds its tensor whole (rms_norm) must refuse it by name. */
static void check_wide(int d, uint64_t stream) {
    ela_backend *be = devs[d];
    const int64_t bind = (int64_t)(dev_max_binding_mib[d] << 20);
    /* Row strides of 0.7 binding (3 weight rows span 1.4) and of 1.4 / 19 binding (20 rows of
     * activations), in elements. */
    const int64_t gap16 = bind * 7 / 10 / 2 / 32 * 32, gap_q8 = bind * 7 / 10 / 34 * 32;
    const int64_t gap32 = bind * 14 / 10 / 19 / 4;
    test_rng rng;
    test_rng_init(&rng, stream);
    const int64_t K = 64, N = 3;
    float x[20 * 64], w[3 * 64], got[20 * 3], table_out[5 * 64], vals[3 * 64];
    double ref[20 * 3];
    test_fill_normal(&rng, x, 20 * K, 1.0f);
    test_fill_normal(&rng, w, N * K, 0.5f);
    static const ela_dtype wdts[2] = {ELA_F16, ELA_Q8_0};
    for (int wi = 0; wi < 2; wi++) {
        ela_dtype wdt = wdts[wi];
        void *wb = to_bytes(w, N * K, wdt);
        ela_tensor *wp = NULL;
        ela_tensor *wv = wb ? wide_view(be, wdt, N, K, wdt == ELA_Q8_0 ? gap_q8 : gap16, &wp)
                            : NULL;
        if (!wv) {
            CHECKF(0, "wide %s weights on %s: setup failed: %s", ela_dtype_name(wdt), name_of(be),
                   ela_last_error());
            free(wb);
            ela_tensor_free(wp);
            continue;
        }
        CHECK_STATUS(ela_tensor_write(wv, wb, ela_dtype_row_bytes(wdt, N * K)), ELA_OK);
        values_of(wb, N * K, wdt, vals);
        for (int mi = 0; mi < 2; mi++) {
            const int64_t M = mi ? 20 : 2;
            int64_t ex[2] = {M, K}, ey[2] = {M, N};
            ela_tensor *tx = NULL, *ty = NULL;
            CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, ex, NULL, &tx), ELA_OK);
            CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, ey, NULL, &ty), ELA_OK);
            if (tx && ty) {
                CHECK_STATUS(ela_tensor_write_f32(tx, x, M * K), ELA_OK);
                ela_status st = ela_matmul(be, tx, wv, NULL, ty);
                CHECKF(st == ELA_OK, "wide %s weights, M=%lld on %s: %s", ela_dtype_name(wdt),
                       (long long)M, name_of(be), ela_last_error());
                if (st == ELA_OK && ela_tensor_read_f32(ty, got, M * N) == ELA_OK) {
                    ref_matmul(x, vals, NULL, M, N, K, ref);
                    double err = test_rel_l2(ref, got, M * N);
                    CHECKF(err <= TOL, "wide %s weights, M=%lld on %s: rel L2 %.3g",
                           ela_dtype_name(wdt), (long long)M, name_of(be), err);
                }
            }
            ela_tensor_free(tx);
            ela_tensor_free(ty);
        }
        /* get_rows from the same rows as a table */
        int32_t ids[5] = {2, 0, 1, 2, 1};
        int64_t five = 5, eo[2] = {5, K};
        ela_tensor *ti = NULL, *to = NULL;
        CHECK_STATUS(ela_tensor_new(be, ELA_I32, 1, &five, NULL, &ti), ELA_OK);
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, eo, NULL, &to), ELA_OK);
        if (ti && to) {
            CHECK_STATUS(ela_tensor_write(ti, ids, sizeof ids), ELA_OK);
            CHECK_STATUS(ela_get_rows(be, wv, ti, to), ELA_OK);
            CHECK_STATUS(ela_tensor_read_f32(to, table_out, 5 * K), ELA_OK);
            int bad = 0;
            for (int m = 0; m < 5; m++)
                bad += memcmp(table_out + m * K, vals + ids[m] * K, (size_t)K * 4) != 0;
            CHECKF(bad == 0, "wide %s table on %s: %d rows wrong", ela_dtype_name(wdt),
                   name_of(be), bad);
        }
        ela_tensor_free(ti);
        ela_tensor_free(to);
        /* copy f32 rows into the wide rows (a cache whose heads lie far apart) */
        int64_t es[2] = {N, K};
        ela_tensor *ts = NULL;
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, es, NULL, &ts), ELA_OK);
        if (ts) {
            float *src = w; /* any values */
            CHECK_STATUS(ela_tensor_write_f32(ts, src, N * K), ELA_OK);
            CHECK_STATUS(ela_copy(be, ts, wv), ELA_OK);
            size_t nb = ela_dtype_row_bytes(wdt, N * K);
            unsigned char *back = malloc(nb);
            void *expect = to_bytes(src, N * K, wdt);
            if (back && expect && ela_tensor_read(wv, back, nb) == ELA_OK)
                CHECKF(memcmp(back, expect, nb) == 0, "wide copy f32 -> %s on %s: bytes differ",
                       ela_dtype_name(wdt), name_of(be));
            free(back);
            free(expect);
        }
        ela_tensor_free(ts);
        ela_tensor_free(wv);
        ela_tensor_free(wp);
        free(wb);
    }
    /* x and y with rows far apart: matmul in pieces of activation rows (tiled kernel) */
    {
        const int64_t M = 20;
        ela_tensor *xp = NULL, *yp = NULL, *tw = NULL;
        ela_tensor *xv = wide_view(be, ELA_F32, M, K, gap32, &xp);
        ela_tensor *yv = wide_view(be, ELA_F32, M, N, gap32, &yp);
        int64_t ew[2] = {N, K};
        CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, ew, NULL, &tw), ELA_OK);
        CHECKF(xv && yv, "wide activations on %s: setup failed: %s", name_of(be),
               ela_last_error());
        if (xv && yv && tw) {
            CHECK_STATUS(ela_tensor_write_f32(xv, x, M * K), ELA_OK);
            CHECK_STATUS(ela_tensor_write_f32(tw, w, N * K), ELA_OK);
            ela_status st = ela_matmul(be, xv, tw, NULL, yv);
            CHECKF(st == ELA_OK, "wide activations on %s: %s", name_of(be), ela_last_error());
            if (st == ELA_OK && ela_tensor_read_f32(yv, got, M * N) == ELA_OK) {
                ref_matmul(x, w, NULL, M, N, K, ref);
                double err = test_rel_l2(ref, got, M * N);
                CHECKF(err <= TOL, "wide activations on %s: rel L2 %.3g", name_of(be), err);
            }
            /* rms_norm binds its rows at once: refused, naming the op and the tensor */
            int64_t ek = K;
            ela_tensor *tn = NULL;
            CHECK_STATUS(ela_tensor_new(be, ELA_F32, 1, &ek, NULL, &tn), ELA_OK);
            if (tn) {
                CHECK_STATUS(ela_tensor_write_f32(tn, w, K), ELA_OK);
                CHECK_STATUS(ela_rms_norm(be, xv, tn, 1e-5f, xv), ELA_ERR_UNSUPPORTED);
                CHECKF(test_has_word(ela_last_error(), "x") &&
                           test_has_text(ela_last_error(), "rms_norm"),
                       "wide rms_norm on %s: message \"%s\"", name_of(be), ela_last_error());
            }
            ela_tensor_free(tn);
        }
        ela_tensor_free(xv);
        ela_tensor_free(yv);
        ela_tensor_free(xp);
        ela_tensor_free(yp);
        ela_tensor_free(tw);
    }
}

static void test_wide(void) {
    for (int d = 0; d < n_devs; d++) {
        if (dev_max_binding_mib[d] == 0 || dev_max_binding_mib[d] > 256)
            continue;
        printf("%s: tensors wider than its %llu MiB binding\n", name_of(devs[d]),
               (unsigned long long)dev_max_binding_mib[d]);
        check_wide(d, 8000 + (uint64_t)d);
    }
}

/* ---- the models of tests/data/models against PyTorch ----------------------------------------- */
#define N_TOKENS 300
#define N_PROMPT 40
#define N_GREEDY 24

static void *read_file(const char *dir, const char *name, size_t *size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s/%s", ELA_TEST_DATA_DIR, dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static double rel_l2_logits(const float *a, const float *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        if (!isfinite(d))
            return INFINITY;
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num / (den > 0 ? den : 1.0));
}

static ela_context *new_context(ela_model *m, ela_dtype kv) {
    ela_context_params cp = ela_context_params_default();
    cp.n_ctx = 512;
    cp.kv_dtype = kv;
    cp.prefill_chunk = 128;
    ela_context *ctx = NULL;
    ela_status st = ela_context_new(m, &cp, &ctx);
    CHECKF(st == ELA_OK, "ela_context_new: %s", ela_last_error());
    return ctx;
}

static void check_model(ela_backend *be, const char *name, const char *file, double q8_tol) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/%s/%s", ELA_TEST_DATA_DIR, name, file);
    size_t n_tok = 0, n_logit = 0, n_greedy = 0;
    int32_t *tokens = read_file(name, "tokens.i32", &n_tok);
    float *want = read_file(name, "logits.f32", &n_logit);
    int32_t *greedy = read_file(name, "greedy.i32", &n_greedy);
    ela_model *m = NULL;
    float *got = NULL;
    CHECKF(tokens && want && greedy, "%s: fixture files missing", name);
    if (!tokens || !want || !greedy)
        goto done;
    ela_status st = ela_model_load(dir, be, NULL, &m);
    CHECKF(st == ELA_OK, "%s %s on %s: ela_model_load: %s", name, file, name_of(be),
           ela_last_error());
    if (st != ELA_OK)
        goto done;
    ela_model_info info;
    ela_model_get_info(m, &info);
    int64_t vocab = info.vocab;
    CHECKF(n_tok == N_TOKENS * 4 && n_logit == (size_t)(N_TOKENS * vocab) * 4 &&
               n_greedy == N_GREEDY * 4, "%s: fixture sizes", name);
    got = malloc((size_t)(N_TOKENS * vocab) * sizeof *got);
    if (!got)
        goto done;
    const ela_dtype kv_dtypes[2] = {ELA_F32, ELA_F16};
    const double tols[2] = {q8_tol > 0 ? q8_tol : TOL_KV_F32, q8_tol > 0 ? q8_tol : TOL_KV_F16};
    for (int kvi = 0; kvi < 2; kvi++) {
        ela_context *ctx = new_context(m, kv_dtypes[kvi]);
        if (!ctx)
            continue;
        st = ela_context_eval(ctx, tokens, N_TOKENS, got, 1, NULL, NULL);
        CHECKF(st == ELA_OK, "%s: eval: %s", name, ela_last_error());
        double err = rel_l2_logits(got, want, N_TOKENS * vocab);
        printf("%-6s %-17s %s kv %-4s prefill rel L2 %.2e\n", name,
               file[0] ? file : "(safetensors)", name_of(be),
               ela_dtype_name(kv_dtypes[kvi]), err);
        CHECKF(err < tols[kvi], "%s %s kv %s: prefill logits rel L2 %.3e > %.1e", name, file,
               ela_dtype_name(kv_dtypes[kvi]), err, tols[kvi]);

        ela_context_reset(ctx);
        st = ela_context_eval(ctx, tokens, 200, got, 1, NULL, NULL);
        for (int64_t t = 200; t < N_TOKENS && st == ELA_OK; t++)
            st = ela_context_eval(ctx, &tokens[t], 1, got + t * vocab, 0, NULL, NULL);
        CHECKF(st == ELA_OK, "%s: decode: %s", name, ela_last_error());
        err = rel_l2_logits(got + 200 * vocab, want + 200 * vocab, 100 * vocab);
        printf("%-6s %-17s %s kv %-4s decode  rel L2 %.2e\n", name,
               file[0] ? file : "(safetensors)", name_of(be),
               ela_dtype_name(kv_dtypes[kvi]), err);
        CHECKF(err < tols[kvi], "%s %s kv %s: decode logits rel L2 %.3e > %.1e", name, file,
               ela_dtype_name(kv_dtypes[kvi]), err, tols[kvi]);

        if (kvi == 0 && q8_tol == 0) {
            ela_context_reset(ctx);
            int32_t out[N_GREEDY];
            int n_out = 0;
            float *logits = malloc((size_t)vocab * sizeof *logits);
            st = logits ? ela_context_eval(ctx, tokens, N_PROMPT, logits, 0, NULL, NULL)
                        : ELA_ERR_OOM;
            for (int i = 0; i < N_GREEDY && st == ELA_OK; i++) {
                int32_t best = 0;
                for (int64_t v = 1; v < vocab; v++)
                    if (logits[v] > logits[best])
                        best = (int32_t)v;
                out[n_out++] = best;
                st = ela_context_eval(ctx, &best, 1, logits, 0, NULL, NULL);
            }
            free(logits);
            CHECKF(n_out == N_GREEDY && memcmp(out, greedy, sizeof out) == 0,
                   "%s %s: greedy continuation differs from transformers", name, file);
        }
        ela_context_free(ctx);
    }
done:
    free(got);
    ela_model_free(m);
    free(tokens);
    free(want);
    free(greedy);
}

static void test_models(void) {
    const char *const names[3] = {"llama", "qwen2", "qwen3"};
    for (int d = 0; d < n_devs; d++) {
        if (!dev_primary[d])
            continue;
        for (int i = 0; i < 3; i++) {
            check_model(devs[d], names[i], "", 0);
            check_model(devs[d], names[i], "model.gguf", 0);
        }
        check_model(devs[d], "llama", "model-q8_0.gguf", TOL_Q8_0);
    }
}

/* ---- timings (ELA_TEST_BENCH=1) -------------------------------------------------------------- */
/* Mean ms per matmul over `iters` calls issued back to back (one synchronization at the end,
 * so launch costs overlap the kernels), cycling through n_w copies of the weights so that
 * they come from HBM, not from L2. */
static double time_matmul(ela_backend *be, ela_tensor *x, ela_tensor **w, int n_w, ela_tensor *y,
                          int iters) {
    for (int i = 0; i < 3; i++)
        if (ela_matmul(be, x, w[i % n_w], NULL, y) != ELA_OK)
            return -1.0;
    ela_backend_synchronize(be);
    double t0 = test_now();
    for (int i = 0; i < iters; i++)
        if (ela_matmul(be, x, w[i % n_w], NULL, y) != ELA_OK)
            return -1.0;
    ela_backend_synchronize(be);
    return (test_now() - t0) * 1e3 / iters;
}

/* Host costs the model runtime pays per op on this backend: small ops back to back, and with
 * a 4-byte read of device memory (what core/ops/rope.c and get_rows.c do with their indices)
 * after each. */
static void bench_host_costs(ela_backend *be) {
    int64_t e[2] = {1, 896};
    ela_tensor *a = NULL, *i32 = NULL;
    int64_t one = 1;
    if (ela_tensor_new(be, ELA_F32, 2, e, NULL, &a) != ELA_OK ||
        ela_tensor_new(be, ELA_I32, 1, &one, NULL, &i32) != ELA_OK) {
        ela_tensor_free(a);
        return;
    }
    float zeros[896] = {0};
    int32_t v = 0;
    ela_tensor_write_f32(a, zeros, 896);
    ela_tensor_write(i32, &v, 4);
    ela_backend_synchronize(be);
    const int n = 2000;
    double t0 = test_now();
    for (int i = 0; i < n; i++)
        ela_add(be, a, a, a);
    ela_backend_synchronize(be);
    double per_op = (test_now() - t0) * 1e6 / n;
    t0 = test_now();
    for (int i = 0; i < n / 4; i++) {
        ela_add(be, a, a, a);
        ela_tensor_read(i32, &v, 4);
    }
    double per_pair = (test_now() - t0) * 1e6 / (n / 4);
    printf("host costs on %s: %.1f us per small op issued back to back, %.1f us per op followed "
           "by a 4-byte read of device memory\n", name_of(be), per_op, per_pair);
    ela_tensor_free(a);
    ela_tensor_free(i32);
}

/* The GEMV's weight bandwidth and the prefill's throughput on Llama-3-8B's shapes, with the
 * device's copy bandwidth measured in the same run (ela_copy f16 -> f16 of 512 MiB: bytes read
 * plus written) as the baseline. */
static void bench(ela_backend *be) {
    const int64_t big = 256ll << 20; /* f16 elements: 512 MiB */
    int64_t ec[2] = {big / 4096, 4096};
    ela_tensor *a = NULL, *b = NULL;
    double copy_gbps = 0.0;
    if (ela_tensor_new(be, ELA_F16, 2, ec, NULL, &a) == ELA_OK &&
        ela_tensor_new(be, ELA_F16, 2, ec, NULL, &b) == ELA_OK) {
        double best = 1e30;
        for (int i = 0; i < 10; i++) {
            ela_backend_synchronize(be);
            double t0 = test_now();
            ela_copy(be, a, b);
            ela_backend_synchronize(be);
            double t = test_now() - t0;
            best = t < best ? t : best;
        }
        copy_gbps = 2.0 * (double)big * 2.0 / best / 1e9;
    }
    ela_tensor_free(a);
    ela_tensor_free(b);
    bench_host_costs(be);
    printf("bench on %s: device copy (ela_copy f16 -> f16, 512 MiB) %.0f GB/s read + write\n",
           name_of(be), copy_gbps);
    printf("%-6s %6s %6s %6s %10s %10s %10s %10s\n", "w", "M", "N", "K", "ms", "GB/s", "vs copy",
           "TFLOP/s");
    static const ela_dtype dts[4] = {ELA_F16, ELA_BF16, ELA_Q8_0, ELA_F32};
    static const int64_t shapes[2][2] = {{4096, 4096}, {14336, 4096}};
    static const int64_t Ms[5] = {1, 8, 128, 512, 2048};
    for (int d = 0; d < 4; d++)
        for (int s = 0; s < 2; s++)
            for (int mi = 0; mi < 5; mi++) {
                const int64_t M = Ms[mi], N = shapes[s][0], K = shapes[s][1];
                if (dts[d] == ELA_F32 && M > 8)
                    continue;
                int64_t ex[2] = {M, K}, ew[2] = {N, K}, ey[2] = {M, N};
                ela_tensor *x = NULL, *w = NULL, *y = NULL;
                if (ela_tensor_new(be, ELA_F32, 2, ex, NULL, &x) != ELA_OK ||
                    ela_tensor_new(be, dts[d], 2, ew, NULL, &w) != ELA_OK ||
                    ela_tensor_new(be, ELA_F32, 2, ey, NULL, &y) != ELA_OK) {
                    printf("bench: allocation failed: %s\n", ela_last_error());
                } else {
                    /* Weights: random bytes as a q8_0 / 16-bit pattern (timing only). */
                    size_t wb = ela_dtype_row_bytes(dts[d], N * K);
                    unsigned char *host = malloc(wb);
                    if (host) {
                        for (size_t i = 0; i < wb; i++)
                            host[i] = (unsigned char)((i * 2654435761u) >> 13);
                        if (dts[d] == ELA_F16 || dts[d] == ELA_BF16)
                            for (size_t i = 1; i < wb; i += 2)
                                host[i] &= 0x3b; /* small finite values */
                        if (dts[d] == ELA_F32)
                            for (size_t i = 3; i < wb; i += 4)
                                host[i] = 0x3c;
                        if (dts[d] == ELA_Q8_0)
                            for (size_t i = 0; i + 1 < wb; i += 34)
                                host[i + 1] = 0x20; /* a small f16 scale */
                        ela_tensor_write(w, host, wb);
                        free(host);
                    }
                    /* Copies past the L2 (50 MB on an H100): 256 MB of weights in all. */
                    ela_tensor *ws[8] = {w};
                    int n_w = 1;
                    while (n_w < 8 && (double)n_w * (double)wb < 256e6 &&
                           ela_tensor_new(be, dts[d], 2, ew, NULL, &ws[n_w]) == ELA_OK) {
                        ela_copy(be, w, ws[n_w]);
                        n_w++;
                    }
                    float *xv = fmalloc(M * K);
                    if (xv) {
                        test_rng rng;
                        test_rng_init(&rng, 77);
                        test_fill_normal(&rng, xv, M * K, 1.0f);
                        ela_tensor_write_f32(x, xv, M * K);
                        free(xv);
                    }
                    double ms = time_matmul(be, x, ws, n_w, y, M >= 512 ? 20 : 200);
                    double gbps = (double)wb / (ms * 1e6);
                    double tflops = 2.0 * (double)M * (double)N * (double)K / (ms * 1e9);
                    printf("%-6s %6lld %6lld %6lld %10.4f %10.1f %10.3f %10.1f\n",
                           ela_dtype_name(dts[d]), (long long)M, (long long)N, (long long)K, ms,
                           gbps, copy_gbps > 0 ? gbps / copy_gbps : 0.0, tflops);
                    for (int i = 1; i < n_w; i++)
                        ela_tensor_free(ws[i]);
                }
                ela_tensor_free(x);
                ela_tensor_free(w);
                ela_tensor_free(y);
            }
}

/* ---- backends ------------------------------------------------------------------------------- */
/* Opens `name` with one environment variable set while it opens (the plugins read their switches
 * at open) as the configuration "<name> <label>". */
static void open_dev(const char *name, const ela_device_info *info, const char *var,
                     const char *value, const char *label, int primary) {
    if (n_devs == MAX_DEVS) {
        CHECK(!"MAX_DEVS too small");
        return;
    }
    if (var)
        test_setenv(var, value);
    ela_status st = ela_backend_open(name, &devs[n_devs]);
    if (var)
        test_setenv(var, NULL);
    CHECKF(st == ELA_OK, "open %s %s (%s): %s (%s)", name, label, info->name, ela_status_str(st),
           ela_last_error());
    if (st != ELA_OK)
        return;
    snprintf(dev_label[n_devs], sizeof dev_label[n_devs], "%s %s", name, label);
    dev_primary[n_devs] = primary;
    /* Vulkan devices report "max-binding=N MiB" in their details. */
    const char *mb = strstr(info->details, "max-binding=");
    dev_max_binding_mib[n_devs] = mb ? strtoull(mb + 12, NULL, 10) : 0;
    n_devs++;
}

/* Every device of `plugin`, which the build has; a machine without devices (the reason starts
 * with `none`) is skipped, any other reason (a plugin that fails to load) fails. */
static void open_plugin(const ela_backend_info *list, int n, const char *plugin, const char *none,
                        const char *kind) {
    const ela_backend_info *be = NULL;
    for (int i = 0; i < n && i < 8; i++)
        if (strcmp(list[i].name, plugin) == 0)
            be = &list[i];
    CHECKF(be != NULL, "ela_backend_list has no %s entry", plugin);
    if (!be)
        return;
    if (!be->available) {
        int skip = strncmp(be->reason, none, strlen(none)) == 0;
        CHECKF(skip, "%s is unavailable for a reason other than a missing device: %s%s", plugin,
               be->reason, test_has_text(be->reason, "validation")
                               ? " (install vulkan-validationlayers or set ELA_VK_VALIDATION=0)"
                               : "");
        if (skip)
            printf("skipped: no %s device (%s)\n", kind, be->reason);
        return;
    }
    for (int dev = 0; dev < be->n_devices; dev++) {
        const ela_device_info *info = &be->devices[dev];
        char name[32];
        snprintf(name, sizeof name, "%s:%d", plugin, dev);
        printf("%s: %s [%s]\n", name, info->name, info->details);
        open_dev(name, info, NULL, NULL, "default", 1);
        if (strcmp(plugin, "vulkan") == 0)
            open_dev(name, info, "ELA_VK_DISABLE", "uma,storage16,subgroup",
                     "staging+words+shared", 0);
    }
}

static int open_backends(void) {
    CHECK_STATUS(ela_backend_open("cpu", &cpu), ELA_OK);
    if (!cpu)
        return 0;
    ela_backend_info list[8];
    int n = 0;
    CHECK_STATUS(ela_backend_list(list, 8, &n), ELA_OK);
    if (ELA_TEST_WANT_CUDA)
        open_plugin(list, n, "cuda", "no CUDA device", "CUDA");
    if (ELA_TEST_WANT_VULKAN)
        open_plugin(list, n, "vulkan", "no Vulkan", "Vulkan");
    return n_devs > 0;
}

/* ELA_TEST_ONLY: a comma-separated list of parts (matmul, rms_norm, rope, elementwise,
 * sigmoid_gate, get_rows, copy, token_copy, wide, models; "ops" for all but the models); unset
 * runs everything. */
static int wanted(const char *part, int is_op) {
    const char *only = getenv("ELA_TEST_ONLY");
    if (!only || !*only)
        return 1;
    return strstr(only, part) != NULL || (is_op && strstr(only, "ops") != NULL);
}

/* Runs one part and prints its time. */
static void part(const char *name, int is_op, void (*fn)(void)) {
    if (!wanted(name, is_op))
        return;
    double t0 = test_now();
    fn();
    printf("%-12s %7.1f s\n", name, test_now() - t0);
}

int main(void) {
    test_seed();
    const char *v = getenv("ELA_TEST_VERBOSE");
    verbose = v && *v && strcmp(v, "0") != 0;
    const char *b = getenv("ELA_TEST_BENCH");
    const int timing = b && *b && strcmp(b, "0") != 0;
    /* The validation layer checks every test run; timings run without it unless asked. */
    const char *val = getenv("ELA_VK_VALIDATION");
    if (!val || !*val)
        test_setenv("ELA_VK_VALIDATION", timing ? "0" : "1");
    if (timing) { /* timings only */
        if (open_backends())
            for (int d = 0; d < n_devs; d++)
                if (dev_primary[d])
                    bench(devs[d]);
    } else if (open_backends()) {
        printf("validation: ELA_VK_VALIDATION=%s\n", getenv("ELA_VK_VALIDATION"));
        /* Every device answers for the dtypes of every op. */
        ela_dtype mm[3] = {ELA_F32, ELA_Q8_0, ELA_F32}, gr[3] = {ELA_Q8_0, ELA_I32, ELA_F32};
        ela_dtype rope_dt[2] = {ELA_F32, ELA_I32}, rms_q8[3] = {ELA_F32, ELA_Q8_0, ELA_F32};
        ela_dtype tc[3] = {ELA_F16, ELA_Q8_0, ELA_Q8_0}, cp[2] = {ELA_BF16, ELA_Q8_0};
        for (int d = 0; d < n_devs; d++) {
            CHECKF(ela_backend_supports(devs[d], ELA_OP_MATMUL, mm, 3), "%s", dev_label[d]);
            CHECKF(ela_backend_supports(devs[d], ELA_OP_GET_ROWS, gr, 3), "%s", dev_label[d]);
            CHECKF(ela_backend_supports(devs[d], ELA_OP_ROPE, rope_dt, 2), "%s", dev_label[d]);
            CHECKF(ela_backend_supports(devs[d], ELA_OP_COPY, cp, 2), "%s", dev_label[d]);
            CHECKF(ela_backend_supports(devs[d], ELA_OP_TOKEN_COMPRESS, tc, 3), "%s",
                   dev_label[d]);
            CHECKF(!ela_backend_supports(devs[d], ELA_OP_RMS_NORM, rms_q8, 3), "%s",
                   dev_label[d]);
        }
        double t0 = test_now();
        part("matmul", 1, test_matmul);
        part("rms_norm", 1, test_rms_norm);
        part("rope", 1, test_rope);
        part("elementwise", 1, test_binary);
        part("sigmoid_gate", 1, test_sigmoid_gate);
        part("get_rows", 1, test_get_rows);
        part("copy", 1, test_copy);
        part("token_copy", 1, test_token_copy);
        part("wide", 1, test_wide);
        printf("ops: %.1f s\n", test_now() - t0);
        part("models", 0, test_models);
        printf("ops and models: %.1f s\n", test_now() - t0);
    } else {
        printf("skipped: no GPU device\n");
    }
    for (int d = 0; d < n_devs; d++)
        ela_backend_close(devs[d]);
    ela_backend_close(cpu);
    return test_summary("test_model_ops_gpu");
}

/* Unit test of the model ops (ela.h "Model ops") on the CPU backend at every SIMD level it can
 * run (ELA_CPU_LEVEL) and several thread counts (ELA_THREADS), against the float64 references
 * in tests/ref/model_ops_ref.c on fresh random inputs: matmul with f32/f16/bf16/q8_0 weights,
 * M in {1, 3, 17, 130}, odd N and K (K a multiple of 32 for q8_0), bias or not, strided views;
 * rms_norm (2-D and per-head 3-D, in place); rope (both pair styles, every scaling, positions
 * up to 2^18); silu_mul and add (in place); get_rows of every table dtype; copy between every
 * dtype pair into a strided KV-cache view at a position offset. Outputs that are views of a
 * larger tensor must leave the rest of it untouched. Then the error paths and an OOM loop.
 * Replay with ELA_TEST_SEED. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/model_ops_ref.h"
#include "test_common.h"

/* Tolerances, relative L2 against the float64 reference:
 * - f32 math, and 16-bit weights: the reference reads the same rounded weights, so only the
 *   f32 accumulation differs (K <= 4096 terms): 1e-5.
 * - q8_0 weights: against a reference that quantizes the activations exactly as the kernels
 *   do (ggml's q8_0 with an f32 scale) and dequantizes the same weight blocks, only f32
 *   accumulation of the per-block products differs: 1e-5. Against f32 (unquantized)
 *   activations the quantization of x costs up to 1/254 of each block's max|x| per element:
 *   with max|x| about 2.2 sigma over 32 normal values the expected relative error is
 *   2.2 / 127 / sqrt(12) = 5e-3 (measured over all cases and printed). A case with only 9
 *   outputs scatters around that, so each case is bounded by 2e-2.
 * - rope: sin/cos in double on both sides, f32 rotation: 1e-5 (and dims >= n_rot exact).
 * - get_rows and copy are exact (they only convert). */
#define TOL 1e-5
#define TOL_Q8_ACT 2e-2

static double worst_q8_act_err, q8_err2_sum, q8_ref2_sum; /* vs f32 activations */

/* ---- backends ------------------------------------------------------------------------------- */
typedef struct {
    const char *level, *threads;
    ela_backend *be;
} backend_cfg;

static backend_cfg cfgs[12];
static int n_cfgs;

static int level_supported(const char *level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    if (strcmp(level, "avx2") == 0)
        return avx2;
    if (strcmp(level, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return strcmp(level, "scalar") == 0;
#else
    return strcmp(level, "scalar") == 0;
#endif
}

static void open_backends(void) {
    static const char *const levels[] = {"scalar", "avx2", "avx512"};
    static const char *const threads[] = {NULL, "1", "3"};
    for (int l = 0; l < 3; l++) {
        if (!level_supported(levels[l])) {
            printf("level %s: not supported by this CPU, skipped\n", levels[l]);
            continue;
        }
        for (int t = 0; t < 3; t++) {
            backend_cfg *c = &cfgs[n_cfgs];
            c->level = levels[l];
            c->threads = threads[t];
            test_setenv("ELA_CPU_LEVEL", levels[l]);
            test_setenv("ELA_THREADS", threads[t]);
            CHECK_STATUS(ela_backend_open("cpu", &c->be), ELA_OK);
            if (c->be)
                n_cfgs++;
        }
    }
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);
}

/* ---- tensors that are views into a padded parent ---------------------------------------- */
/* view = parent[start_i : start_i + ext_i] per dim; when padded, every dim of the parent is
 * longer (by 2 elements, or 2 blocks innermost) and the view starts 1 in (1 block innermost),
 * so the view has non-packed outer strides and a nonzero offset. The parent's other memory is
 * filled with a sentinel that outputs must leave alone. */
typedef struct {
    ela_tensor *parent, *view;
    ela_dtype dt;
    int nd;
    int64_t pext[4], start[4], ext[4];
    unsigned char *before; /* the parent's bytes after the sentinel fill */
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
    int64_t numel = ela_tensor_numel(s->parent);
    s->bytes = ela_dtype_row_bytes(dt, numel);
    s->before = malloc(s->bytes ? s->bytes : 1);
    if (!s->before)
        return -1;
    for (size_t i = 0; i < s->bytes; i++)
        s->before[i] = (unsigned char)(0xa5 ^ (i * 7));
    if (dt == ELA_F32) /* a finite sentinel, so an f32 parent stays readable */
        for (size_t i = 0; i < s->bytes / 4; i++) {
            float f = 12345.0f + (float)(i % 97);
            memcpy(s->before + 4 * i, &f, 4);
        }
    return ela_tensor_write(s->parent, s->before, s->bytes) == ELA_OK ? 0 : -1;
}

/* Nonzero when the parent's bytes outside the view are still the sentinel. */
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

static void fill_normal(test_rng *rng, float *x, int64_t n, float sd) {
    test_fill_normal(rng, x, n, sd);
}

static float *fmalloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }
static double *dmalloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(double)); }

/* Round n floats through a float dtype (f32 -> dtype -> f32); the conversions themselves are
 * tested exhaustively in test_tensor. */
static void round_through(float *x, int64_t n, ela_dtype dt) {
    if (dt == ELA_F32 || n == 0)
        return;
    uint16_t *tmp = malloc((size_t)n * 2);
    if (!tmp)
        return;
    ela_convert(x, ELA_F32, tmp, dt, n);
    ela_convert(tmp, dt, x, ELA_F32, n);
    free(tmp);
}

/* Packed bytes of n values in dt: float dtypes through ela_convert, q8_0 built from the
 * reference quantizer (scale rounded to f16 as the block stores it). */
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

/* ---- matmul -------------------------------------------------------------------------------- */
static void check_matmul(const backend_cfg *cfg, ela_dtype wdt, int64_t M, int64_t N, int64_t K,
                         int use_bias, int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    float *x = fmalloc(M * K), *w = fmalloc(N * K), *bias = fmalloc(N), *got = fmalloc(M * N);
    float *wf = fmalloc(N * K);
    double *ref = dmalloc(M * N), *ref2 = dmalloc(M * N);
    sub_t tx, tw, ty, tb;
    memset(&tx, 0, sizeof tx);
    memset(&tw, 0, sizeof tw);
    memset(&ty, 0, sizeof ty);
    memset(&tb, 0, sizeof tb);
    void *wbytes = NULL;
    if (!x || !w || !bias || !got || !wf || !ref || !ref2) {
        CHECK(!"out of memory");
        goto done;
    }
    fill_normal(&rng, x, M * K, 1.0f);
    fill_normal(&rng, w, N * K, 0.5f);
    fill_normal(&rng, bias, N, 1.0f);
    wbytes = to_bytes(w, N * K, wdt);
    if (!wbytes) {
        CHECK(!"out of memory");
        goto done;
    }
    int64_t ex[2] = {M, K}, ew[2] = {N, K}, ey[2] = {M, N};
    if (sub_new(cfg->be, ELA_F32, 2, ex, padded, &tx) ||
        sub_new(cfg->be, wdt, 2, ew, padded, &tw) ||
        sub_new(cfg->be, ELA_F32, 2, ey, padded, &ty) ||
        sub_new(cfg->be, ELA_F32, 1, &N, padded, &tb)) {
        CHECK(!"tensor setup failed");
        goto done;
    }
    CHECK_STATUS(ela_tensor_write_f32(tx.view, x, M * K), ELA_OK);
    CHECK_STATUS(ela_tensor_write(tw.view, wbytes, ela_dtype_row_bytes(wdt, N * K)), ELA_OK);
    CHECK_STATUS(ela_tensor_write_f32(tb.view, bias, N), ELA_OK);
    CHECK_STATUS(ela_matmul(cfg->be, tx.view, tw.view, use_bias ? tb.view : NULL, ty.view), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(ty.view, got, M * N), ELA_OK);
    double err;
    if (wdt == ELA_Q8_0) {
        ref_matmul_q8_0(x, wbytes, K / 32 * 34, use_bias ? bias : NULL, M, N, K, ref);
        err = test_rel_l2(ref, got, M * N);
        ref_q8_0_dequantize(wbytes, N * K, wf);
        ref_matmul(x, wf, use_bias ? bias : NULL, M, N, K, ref2);
        double err2 = test_rel_l2(ref2, got, M * N);
        for (int64_t i = 0; i < M * N; i++) {
            q8_err2_sum += ((double)got[i] - ref2[i]) * ((double)got[i] - ref2[i]);
            q8_ref2_sum += ref2[i] * ref2[i];
        }
        if (err2 > worst_q8_act_err)
            worst_q8_act_err = err2;
        CHECKF(err2 <= TOL_Q8_ACT, "%s/%s matmul q8_0 M=%lld N=%lld K=%lld: error %.3g against "
               "f32 activations", cfg->level, cfg->threads ? cfg->threads : "default",
               (long long)M, (long long)N, (long long)K, err2);
    } else {
        memcpy(wf, w, (size_t)(N * K) * sizeof(float));
        round_through(wf, N * K, wdt);
        ref_matmul(x, wf, use_bias ? bias : NULL, M, N, K, ref);
        err = test_rel_l2(ref, got, M * N);
    }
    CHECKF(err <= TOL, "%s/%s matmul %s M=%lld N=%lld K=%lld bias=%d padded=%d: rel L2 %.3g",
           cfg->level, cfg->threads ? cfg->threads : "default", ela_dtype_name(wdt), (long long)M,
           (long long)N, (long long)K, use_bias, padded, err);
    CHECKF(sub_outside_intact(&ty), "%s matmul %s: wrote outside y", cfg->level,
           ela_dtype_name(wdt));
done:
    sub_free(&tx);
    sub_free(&tw);
    sub_free(&ty);
    sub_free(&tb);
    free(wbytes);
    free(x);
    free(w);
    free(bias);
    free(got);
    free(wf);
    free(ref);
    free(ref2);
}

static void test_matmul(void) {
    static const ela_dtype dts[4] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};
    static const int64_t Ms[4] = {1, 3, 17, 130};
    /* (N, K): odd for the float dtypes; 2 and 7 blocks (an odd block count) for q8_0 */
    static const int64_t nk_float[2][2] = {{37, 67}, {9, 200}}, nk_q8[2][2] = {{37, 64}, {9, 224}};
    uint64_t stream = 1000;
    for (int c = 0; c < n_cfgs; c++) {
        for (int d = 0; d < 4; d++)
            for (int m = 0; m < 4; m++)
                for (int s = 0; s < 2; s++) {
                    const int64_t *nk = dts[d] == ELA_Q8_0 ? nk_q8[s] : nk_float[s];
                    check_matmul(&cfgs[c], dts[d], Ms[m], nk[0], nk[1], (m + s) % 2,
                                 (m + d + s) % 2, stream++);
                }
        /* Decode across many weight-row chunks, and (default threads only) a prefill that
         * spans several activation blocks and threads. */
        for (int d = 0; d < 4; d++) {
            check_matmul(&cfgs[c], dts[d], 1, 1030, dts[d] == ELA_Q8_0 ? 320 : 333, 1, 0, stream++);
            if (!cfgs[c].threads) /* rows of 16 KiB and more: 2-3 blocks of activation rows */
                check_matmul(&cfgs[c], dts[d], 130, 101, dts[d] == ELA_Q8_0 ? 8192 : 4100, d % 2,
                             1, stream++);
        }
    }
    printf("matmul q8_0 against f32 activations: relative L2 error %.3g over all cases, worst "
           "case %.3g (bound %.0e)\n", q8_ref2_sum > 0 ? sqrt(q8_err2_sum / q8_ref2_sum) : 0.0,
           worst_q8_act_err, TOL_Q8_ACT);
}

/* ---- rms_norm ------------------------------------------------------------------------------ */
static void check_rms_norm(const backend_cfg *cfg, int nd, const int64_t *ext, ela_dtype wdt,
                           int mode, float eps, uint64_t stream) {
    /* mode 0: separate y; 1: in place (y = x); 2: padded views for x and y */
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t numel = 1, D = ext[nd - 1];
    for (int i = 0; i < nd; i++)
        numel *= ext[i];
    float *x = fmalloc(numel), *w = fmalloc(D), *got = fmalloc(numel);
    double *ref = dmalloc(numel);
    sub_t tx, ty, tw;
    memset(&tx, 0, sizeof tx);
    memset(&ty, 0, sizeof ty);
    memset(&tw, 0, sizeof tw);
    if (!x || !w || !got || !ref) {
        CHECK(!"out of memory");
        goto done;
    }
    fill_normal(&rng, x, numel, 2.0f);
    fill_normal(&rng, w, D, 1.0f);
    round_through(w, D, wdt);
    if (sub_new(cfg->be, ELA_F32, nd, ext, mode == 2, &tx) ||
        (mode != 1 && sub_new(cfg->be, ELA_F32, nd, ext, mode == 2, &ty)) ||
        sub_new(cfg->be, wdt, 1, &D, 0, &tw)) {
        CHECK(!"tensor setup failed");
        goto done;
    }
    ela_tensor *y = mode == 1 ? tx.view : ty.view;
    CHECK_STATUS(ela_tensor_write_f32(tx.view, x, numel), ELA_OK);
    CHECK_STATUS(ela_tensor_write_f32(tw.view, w, D), ELA_OK);
    CHECK_STATUS(ela_rms_norm(cfg->be, tx.view, tw.view, eps, y), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(y, got, numel), ELA_OK);
    ref_rms_norm(x, w, numel / D, D, eps, ref);
    double err = test_rel_l2(ref, got, numel);
    CHECKF(err <= TOL, "%s rms_norm %dD last %lld w %s mode %d: rel L2 %.3g", cfg->level, nd,
           (long long)D, ela_dtype_name(wdt), mode, err);
    if (mode == 2)
        CHECKF(sub_outside_intact(&ty), "%s rms_norm: wrote outside y", cfg->level);
done:
    sub_free(&tx);
    sub_free(&ty);
    sub_free(&tw);
    free(x);
    free(w);
    free(got);
    free(ref);
}

static void test_rms_norm(void) {
    static const int64_t shapes[5][4] = {{1, 7}, {5, 64}, {3, 4, 33}, {20, 4099}, {2, 2, 3, 16}};
    static const int nds[5] = {2, 2, 3, 2, 4};
    uint64_t stream = 2000;
    for (int c = 0; c < n_cfgs; c++)
        for (int s = 0; s < 5; s++)
            for (int mode = 0; mode < 3; mode++)
                check_rms_norm(&cfgs[c], nds[s], shapes[s], (ela_dtype)((s + mode) % 3), mode,
                               s % 2 ? 1e-6f : 1e-5f, stream++);
}

/* ---- rope ---------------------------------------------------------------------------------- */
static void check_rope(const backend_cfg *cfg, int64_t M, int64_t H, int64_t d, int n_rot,
                       int interleaved, ela_rope_scaling scaling, int with_factors, int padded,
                       uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t numel = M * H * d;
    float *x = fmalloc(numel), *got = fmalloc(numel);
    double *ref = dmalloc(numel);
    int32_t *pos = malloc((size_t)M * sizeof(int32_t));
    sub_t tx;
    memset(&tx, 0, sizeof tx);
    ela_tensor *tp = NULL;
    if (!x || !got || !ref || !pos) {
        CHECK(!"out of memory");
        goto done;
    }
    fill_normal(&rng, x, numel, 1.0f);
    static const int32_t fixed[] = {0, 1, 199999, 200000, 262143, 131071};
    for (int64_t m = 0; m < M; m++)
        pos[m] = m < 6 ? fixed[m] : (int32_t)(test_rng_u64(&rng) % 300000);
    ela_rope_params p = {scaling == ELA_ROPE_SCALING_LLAMA3 ? 500000.0f : 10000.0f, n_rot,
                         interleaved, scaling, scaling == ELA_ROPE_SCALING_LINEAR ? 4.0f : 8.0f,
                         1.0f, 4.0f, 8192, NULL, 0.0f, 0.0f, 0.0f, 0};
    if (scaling == ELA_ROPE_SCALING_YARN) { /* Qwen2.5's 4x over 32K; odd betas on some rows */
        p.theta = 1000000.0f;
        p.factor = 4.0f;
        p.original_max_position = 32768;
        if (stream % 2) {
            p.beta_fast = 16.0f;
            p.beta_slow = 2.0f;
            p.attn_factor = 1.3f;
            p.no_truncate = 1;
        }
    }
    ref_rope_params rp = {p.theta, n_rot ? n_rot : (int)d, interleaved, (int)scaling, p.factor,
                          p.low_freq_factor, p.high_freq_factor, (double)p.original_max_position,
                          NULL, p.beta_fast, p.beta_slow, p.attn_factor, !p.no_truncate};
    float factors[4096];
    if (with_factors) { /* GGUF rope_freqs: per-frequency divisors in [1, 8] */
        for (int i = 0; i < rp.n_rot / 2; i++)
            factors[i] = (float)test_rng_uniform(&rng, 1.0, 8.0);
        p.freq_factors = rp.freq_factors = factors;
    }
    int64_t ext[3] = {M, H, d};
    if (sub_new(cfg->be, ELA_F32, 3, ext, padded, &tx) ||
        ela_tensor_new(cfg->be, ELA_I32, 1, &M, NULL, &tp) != ELA_OK) {
        CHECK(!"tensor setup failed");
        goto done;
    }
    CHECK_STATUS(ela_tensor_write_f32(tx.view, x, numel), ELA_OK);
    CHECK_STATUS(ela_tensor_write(tp, pos, (size_t)M * sizeof(int32_t)), ELA_OK);
    CHECK_STATUS(ela_rope(cfg->be, tx.view, tp, &p), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(tx.view, got, numel), ELA_OK);
    ref_rope(x, pos, M, H, d, &rp, ref);
    double err = test_rel_l2(ref, got, numel);
    int64_t bad_tail = 0;
    for (int64_t r = 0; r < M * H; r++)
        for (int64_t i = rp.n_rot; i < d; i++)
            bad_tail += got[r * d + i] != x[r * d + i];
    CHECKF(err <= TOL && bad_tail == 0,
           "%s rope d=%lld n_rot=%d interleaved=%d scaling=%d padded=%d: rel L2 %.3g, %lld "
           "unrotated dims changed", cfg->level, (long long)d, rp.n_rot, interleaved, (int)scaling,
           padded, err, (long long)bad_tail);
    if (padded)
        CHECKF(sub_outside_intact(&tx), "%s rope: wrote outside x", cfg->level);
done:
    sub_free(&tx);
    ela_tensor_free(tp);
    free(x);
    free(got);
    free(ref);
    free(pos);
}

/* Llama 3.1's frequencies at a few indices (theta 500000, factor 8, low 1, high 4, original
 * 8192, head dim 128), as HF transformers computes them (float64 here): index 0 is high
 * frequency (unchanged), 63 low (divided by 8), 30 in the smooth band (wavelength between
 * 8192 / 4 and 8192). */
static void test_rope_llama3_freqs(void) {
    ref_rope_params rp = {500000.0, 128, 0, REF_ROPE_LLAMA3, 8.0, 1.0, 4.0, 8192.0, NULL, 0, 0,
                          0, 0};
    double inv[64];
    ref_rope_inv_freq(&rp, inv);
    double base30 = pow(500000.0, -60.0 / 128.0), base63 = pow(500000.0, -126.0 / 128.0);
    double wav30 = 2 * 3.14159265358979323846 / base30;
    double smooth = (8192.0 / wav30 - 1.0) / 3.0;
    CHECK(inv[0] == 1.0);
    CHECK(fabs(inv[63] - base63 / 8.0) <= 1e-15 * base63);
    CHECKF(wav30 > 2048.0 && wav30 < 8192.0, "index 30 wavelength %g", wav30);
    CHECK(fabs(inv[30] - ((1 - smooth) * base30 / 8.0 + smooth * base30)) <= 1e-15 * base30);
}

static void test_rope(void) {
    uint64_t stream = 3000;
    static const int64_t dims[3][2] = {{64, 0}, {128, 64}, {10, 6}}; /* d, n_rot (0 = d) */
    for (int c = 0; c < n_cfgs; c++)
        for (int k = 0; k < 3; k++)
            for (int style = 0; style < 2; style++)
                for (int sc = 0; sc < 6; sc++) /* 3: no scaling + per-frequency factors */
                    check_rope(&cfgs[c], k == 1 ? 9 : 6, 3, dims[k][0], (int)dims[k][1], style,
                               sc == 3 ? ELA_ROPE_SCALING_NONE
                                       : (ela_rope_scaling)(sc < 3 ? sc : ELA_ROPE_SCALING_YARN),
                               sc == 3, (k + style + sc) % 2, stream++);
}

/* ---- silu_mul and add ------------------------------------------------------------------------ */
static void check_binary(const backend_cfg *cfg, int is_add, int nd, const int64_t *ext, int mode,
                         uint64_t stream) {
    /* mode 0: separate out; 1: out = a (gate); 2: out = b (up); 3: padded views everywhere */
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= ext[i];
    float *a = fmalloc(n), *b = fmalloc(n), *got = fmalloc(n);
    double *ref = dmalloc(n);
    sub_t ta, tb, to;
    memset(&ta, 0, sizeof ta);
    memset(&tb, 0, sizeof tb);
    memset(&to, 0, sizeof to);
    if (!a || !b || !got || !ref) {
        CHECK(!"out of memory");
        goto done;
    }
    fill_normal(&rng, a, n, 3.0f);
    fill_normal(&rng, b, n, 1.0f);
    if (sub_new(cfg->be, ELA_F32, nd, ext, mode == 3, &ta) ||
        sub_new(cfg->be, ELA_F32, nd, ext, mode == 3, &tb) ||
        ((mode == 0 || mode == 3) && sub_new(cfg->be, ELA_F32, nd, ext, mode == 3, &to))) {
        CHECK(!"tensor setup failed");
        goto done;
    }
    ela_tensor *out = mode == 1 ? ta.view : mode == 2 ? tb.view : to.view;
    CHECK_STATUS(ela_tensor_write_f32(ta.view, a, n), ELA_OK);
    CHECK_STATUS(ela_tensor_write_f32(tb.view, b, n), ELA_OK);
    if (is_add) {
        CHECK_STATUS(ela_add(cfg->be, ta.view, tb.view, out), ELA_OK);
        ref_add(a, b, n, ref);
    } else {
        CHECK_STATUS(ela_silu_mul(cfg->be, ta.view, tb.view, out), ELA_OK);
        ref_silu_mul(a, b, n, ref);
    }
    CHECK_STATUS(ela_tensor_read_f32(out, got, n), ELA_OK);
    double err = test_rel_l2(ref, got, n);
    CHECKF(err <= TOL, "%s %s %dD mode %d: rel L2 %.3g", cfg->level, is_add ? "add" : "silu_mul",
           nd, mode, err);
    if (mode == 3)
        CHECKF(sub_outside_intact(&to), "%s %s: wrote outside out", cfg->level,
               is_add ? "add" : "silu_mul");
done:
    sub_free(&ta);
    sub_free(&tb);
    sub_free(&to);
    free(a);
    free(b);
    free(got);
    free(ref);
}

static void test_binary(void) {
    static const int64_t shapes[3][3] = {{3, 37}, {2, 3, 129}, {40, 1001}};
    static const int nds[3] = {2, 3, 2};
    uint64_t stream = 4000;
    for (int c = 0; c < n_cfgs; c++)
        for (int s = 0; s < 3; s++)
            for (int mode = 0; mode < 4; mode++)
                for (int op = 0; op < 2; op++)
                    check_binary(&cfgs[c], op, nds[s], shapes[s], mode, stream++);
}

/* ---- sigmoid_gate ---------------------------------------------------------------------- */
/* x [M, H, d] times sigmoid(g[m, h * stride + offset]) against float64; g is [M, H * stride + 2]
 * (columns past H * stride must be ignored). */
static void check_sigmoid_gate(const backend_cfg *cfg, int64_t M, int64_t H, int64_t d,
                               int stride, int offset, int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t gw = H * stride + 2, nx = M * H * d;
    float *x = fmalloc(nx), *g = fmalloc(M * gw), *got = fmalloc(nx);
    sub_t tx, tg;
    memset(&tx, 0, sizeof tx);
    memset(&tg, 0, sizeof tg);
    int64_t ex[3] = {M, H, d}, eg[2] = {M, gw};
    if (!x || !g || !got || sub_new(cfg->be, ELA_F32, 3, ex, padded, &tx) ||
        sub_new(cfg->be, ELA_F32, 2, eg, padded, &tg)) {
        CHECK(!"setup failed");
        goto done;
    }
    fill_normal(&rng, x, nx, 1.0f);
    fill_normal(&rng, g, M * gw, 3.0f);
    CHECK_STATUS(ela_tensor_write_f32(tx.view, x, nx), ELA_OK);
    CHECK_STATUS(ela_tensor_write_f32(tg.view, g, M * gw), ELA_OK);
    CHECK_STATUS(ela_sigmoid_gate(cfg->be, tx.view, tg.view, stride, offset), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(tx.view, got, nx), ELA_OK);
    double worst = 0.0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t h = 0; h < H; h++) {
            double gate = 1.0 / (1.0 + exp(-(double)g[m * gw + h * stride + offset]));
            for (int64_t i = 0; i < d; i++) {
                int64_t e = (m * H + h) * d + i;
                double want = (double)x[e] * gate;
                worst = fmax(worst, fabs(got[e] - want) / (fabs(want) + 1e-30));
            }
        }
    CHECKF(worst < 1e-6, "%s sigmoid_gate M=%lld H=%lld d=%lld stride %d offset %d: relative "
           "error %.3g", cfg->level, (long long)M, (long long)H, (long long)d, stride, offset,
           worst);
    CHECKF(sub_outside_intact(&tx), "%s sigmoid_gate: wrote outside x", cfg->level);
done:
    sub_free(&tx);
    sub_free(&tg);
    free(x);
    free(g);
    free(got);
}

static void test_sigmoid_gate(void) {
    uint64_t stream = 4500;
    for (int c = 0; c < n_cfgs; c++) {
        check_sigmoid_gate(&cfgs[c], 5, 4, 16, 3, 1, 0, stream++);
        check_sigmoid_gate(&cfgs[c], 67, 7, 33, 3, 2, 1, stream++);
        check_sigmoid_gate(&cfgs[c], 300, 32, 64, 1, 0, 1, stream++); /* threaded */
        check_sigmoid_gate(&cfgs[c], 1, 3, 8, 5, 4, 0, stream++);
    }
    ela_backend *be = cfgs[0].be;
    ela_tensor *x = NULL, *g = NULL, *g_narrow = NULL, *g16 = NULL;
    int64_t ex[3] = {4, 3, 8}, eg[2] = {4, 9}, en[2] = {4, 8};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ex, NULL, &x), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, eg, NULL, &g), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 2, en, NULL, &g_narrow), ELA_OK);
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 2, eg, NULL, &g16), ELA_OK);
    CHECK_STATUS(ela_sigmoid_gate(be, x, g, 3, 1), ELA_OK);
    struct {
        ela_backend *be;
        ela_tensor *x, *g;
        int stride, offset;
        const char *word;
    } bad[] = {{NULL, x, g, 3, 1, "backend"},     {be, NULL, g, 3, 1, "x"},
               {be, x, NULL, 3, 1, "g"},          {be, x, g_narrow, 3, 1, "g"},
               {be, x, g16, 3, 1, "g"},           {be, x, g, 3, 3, "offset"},
               {be, x, g, 0, 0, "stride"},        {be, x, g, 3, -1, "offset"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(ela_sigmoid_gate(bad[i].be, bad[i].x, bad[i].g, bad[i].stride,
                                      bad[i].offset), ELA_ERR_INVALID_ARG);
        CHECKF(test_has_word(ela_last_error(), bad[i].word), "case %zu: \"%s\" does not name %s",
               i, ela_last_error(), bad[i].word);
    }
    ela_tensor *xv = NULL; /* g overlapping x */
    int64_t ev[2] = {4, 9};
    CHECK_STATUS(ela_tensor_view(x, 2, ev, NULL, 0, &xv), ELA_OK);
    CHECK_STATUS(ela_sigmoid_gate(be, x, xv, 3, 1), ELA_ERR_INVALID_ARG);
    ela_tensor_free(xv);
    ela_tensor_free(x);
    ela_tensor_free(g);
    ela_tensor_free(g_narrow);
    ela_tensor_free(g16);
}

/* ---- get_rows ------------------------------------------------------------------------------ */
static void check_get_rows(const backend_cfg *cfg, ela_dtype dt, int64_t V, int64_t D, int64_t M,
                           int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    float *table = fmalloc(V * D), *vals = fmalloc(V * D), *got = fmalloc(M * D);
    int32_t *ids = malloc((size_t)M * sizeof(int32_t));
    void *bytes = NULL;
    sub_t tt, to;
    memset(&tt, 0, sizeof tt);
    memset(&to, 0, sizeof to);
    ela_tensor *ti = NULL;
    if (!table || !vals || !got || !ids) {
        CHECK(!"out of memory");
        goto done;
    }
    fill_normal(&rng, table, V * D, 1.0f);
    for (int64_t m = 0; m < M; m++)
        ids[m] = m == 0   ? (int32_t)(V - 1)
                 : m == 1 ? 0
                          : (int32_t)(test_rng_u64(&rng) % (uint64_t)V);
    bytes = to_bytes(table, V * D, dt);
    if (!bytes) {
        CHECK(!"out of memory");
        goto done;
    }
    /* what the table holds, as f32 */
    if (dt == ELA_Q8_0)
        ref_q8_0_dequantize(bytes, V * D, vals);
    else
        ela_convert(bytes, dt, vals, ELA_F32, V * D);
    int64_t et[2] = {V, D}, eo[2] = {M, D};
    if (sub_new(cfg->be, dt, 2, et, padded, &tt) || sub_new(cfg->be, ELA_F32, 2, eo, padded, &to) ||
        ela_tensor_new(cfg->be, ELA_I32, 1, &M, NULL, &ti) != ELA_OK) {
        CHECK(!"tensor setup failed");
        goto done;
    }
    CHECK_STATUS(ela_tensor_write(tt.view, bytes, ela_dtype_row_bytes(dt, V * D)), ELA_OK);
    CHECK_STATUS(ela_tensor_write(ti, ids, (size_t)M * sizeof(int32_t)), ELA_OK);
    CHECK_STATUS(ela_get_rows(cfg->be, tt.view, ti, to.view), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(to.view, got, M * D), ELA_OK);
    int64_t bad = 0;
    for (int64_t m = 0; m < M; m++)
        bad += memcmp(got + m * D, vals + ids[m] * D, (size_t)D * sizeof(float)) != 0;
    CHECKF(bad == 0, "%s get_rows %s D=%lld M=%lld: %lld rows wrong", cfg->level,
           ela_dtype_name(dt), (long long)D, (long long)M, (long long)bad);
    CHECKF(sub_outside_intact(&to), "%s get_rows: wrote outside out", cfg->level);
done:
    sub_free(&tt);
    sub_free(&to);
    ela_tensor_free(ti);
    free(bytes);
    free(table);
    free(vals);
    free(got);
    free(ids);
}

static void test_get_rows(void) {
    uint64_t stream = 5000;
    for (int c = 0; c < n_cfgs; c++)
        for (int d = 0; d < 4; d++) {
            ela_dtype dt = d == 3 ? ELA_Q8_0 : (ela_dtype)d;
            check_get_rows(&cfgs[c], dt, 50, 64, 9, d % 2, stream++);
            check_get_rows(&cfgs[c], dt, 50, 64, 600, (d + 1) % 2, stream++);
            check_get_rows(&cfgs[c], dt, 7, dt == ELA_Q8_0 ? 96 : 13, 1, 1, stream++);
        }
}

/* ---- copy ---------------------------------------------------------------------------------- */
/* src [Hkv, n, d] (padded or not) -> dst = cache [Hkv, cap, d] rows [pos, pos + n). */
static void check_copy(const backend_cfg *cfg, ela_dtype sdt, ela_dtype ddt, int64_t hkv, int64_t n,
                       int64_t d, int64_t cap, int64_t pos, int padded, uint64_t stream) {
    test_rng rng;
    test_rng_init(&rng, stream);
    int64_t numel = hkv * n * d;
    float *x = fmalloc(numel), *vals = fmalloc(numel);
    void *sbytes = NULL, *want = NULL, *got = NULL;
    size_t dbytes = ela_dtype_row_bytes(ddt, numel);
    sub_t ts, tc;
    memset(&ts, 0, sizeof ts);
    memset(&tc, 0, sizeof tc);
    ela_tensor *dst = NULL;
    got = malloc(dbytes ? dbytes : 1);
    if (!x || !vals || !got) {
        CHECK(!"out of memory");
        goto done;
    }
    fill_normal(&rng, x, numel, 1.5f);
    sbytes = to_bytes(x, numel, sdt);
    if (!sbytes) {
        CHECK(!"out of memory");
        goto done;
    }
    if (sdt == ELA_Q8_0)
        ref_q8_0_dequantize(sbytes, numel, vals);
    else
        ela_convert(sbytes, sdt, vals, ELA_F32, numel);
    want = sdt == ddt ? NULL : to_bytes(vals, numel, ddt);
    int64_t es[3] = {hkv, n, d}, ec[3] = {hkv, cap, d};
    if (sub_new(cfg->be, sdt, 3, es, padded, &ts) || sub_new(cfg->be, ddt, 3, ec, 0, &tc)) {
        CHECK(!"tensor setup failed");
        goto done;
    }
    /* The cache's rows [pos, pos + n) of every head, as a view: what the runtime appends to. */
    int64_t strides[3] = {ela_tensor_stride(tc.view, 0), ela_tensor_stride(tc.view, 1),
                          ela_tensor_stride(tc.view, 2)};
    CHECK_STATUS(ela_tensor_view(tc.view, 3, es, strides, pos * strides[1], &dst), ELA_OK);
    if (!dst)
        goto done;
    /* restrict the untouched-check to outside the appended rows */
    tc.start[1] = pos;
    tc.ext[1] = n;
    CHECK_STATUS(ela_tensor_write(ts.view, sbytes, ela_dtype_row_bytes(sdt, numel)), ELA_OK);
    CHECK_STATUS(ela_copy(cfg->be, ts.view, dst), ELA_OK);
    CHECK_STATUS(ela_tensor_read(dst, got, dbytes), ELA_OK);
    CHECKF(memcmp(got, want ? want : sbytes, dbytes) == 0, "%s copy %s -> %s [%lld, %lld, %lld] "
           "padded=%d: bytes differ", cfg->level, ela_dtype_name(sdt), ela_dtype_name(ddt),
           (long long)hkv, (long long)n, (long long)d, padded);
    CHECKF(sub_outside_intact(&tc), "%s copy %s -> %s: wrote outside the appended rows",
           cfg->level, ela_dtype_name(sdt), ela_dtype_name(ddt));
done:
    ela_tensor_free(dst);
    sub_free(&ts);
    sub_free(&tc);
    free(x);
    free(vals);
    free(sbytes);
    free(want);
    free(got);
}

static void test_copy(void) {
    static const ela_dtype dts[4] = {ELA_F32, ELA_F16, ELA_BF16, ELA_Q8_0};
    uint64_t stream = 6000;
    for (int c = 0; c < n_cfgs; c++)
        for (int s = 0; s < 4; s++)
            for (int d = 0; d < 4; d++) {
                check_copy(&cfgs[c], dts[s], dts[d], 2, 5, 64, 16, 7, (s + d) % 2, stream++);
                check_copy(&cfgs[c], dts[s], dts[d], 4, 130, 128, 300, 41, (s + d + 1) % 2,
                           stream++);
                if (dts[s] != ELA_Q8_0 && dts[d] != ELA_Q8_0)
                    check_copy(&cfgs[c], dts[s], dts[d], 3, 5, 13, 9, 4, 1, stream++);
            }
}

/* ---- errors -------------------------------------------------------------------------------- */
static ela_tensor *mk(ela_backend *be, ela_dtype dt, int nd, int64_t a, int64_t b, int64_t c) {
    int64_t ext[3] = {a, b, c};
    ela_tensor *t = NULL;
    CHECK_STATUS(ela_tensor_new(be, dt, nd, ext, NULL, &t), ELA_OK);
    size_t bytes = t ? ela_dtype_row_bytes(dt, ela_tensor_numel(t)) : 0;
    void *zero = calloc(1, bytes ? bytes : 1);
    if (t && zero)
        CHECK_STATUS(ela_tensor_write(t, zero, bytes), ELA_OK); /* defined contents */
    free(zero);
    return t;
}

/* The call fails with `want` and its message names every word in `words` (NULL-terminated). */
#define CHECK_ERR(call, want, ...)                                                              \
    do {                                                                                        \
        const char *const words_[] = {__VA_ARGS__, NULL};                                       \
        CHECK_STATUS(call, want);                                                               \
        for (int w_ = 0; words_[w_]; w_++)                                                      \
            CHECKF(test_has_word(ela_last_error(), words_[w_]), "message \"%s\" lacks \"%s\"",  \
                   ela_last_error(), words_[w_]);                                               \
    } while (0)

static void test_errors(ela_backend *be) {
    const ela_status BAD = ELA_ERR_INVALID_ARG;
    ela_backend *be2 = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be2), ELA_OK);
    ela_tensor *x = mk(be, ELA_F32, 2, 4, 64, 0), *w = mk(be, ELA_F16, 2, 8, 64, 0);
    ela_tensor *wq = mk(be, ELA_Q8_0, 2, 8, 64, 0), *y = mk(be, ELA_F32, 2, 4, 8, 0);
    ela_tensor *bias = mk(be, ELA_F32, 1, 8, 0, 0), *b7 = mk(be, ELA_F32, 1, 7, 0, 0);
    ela_tensor *x3 = mk(be, ELA_F32, 3, 4, 2, 64), *xh = mk(be, ELA_F16, 2, 4, 64, 0);
    ela_tensor *wi = mk(be, ELA_I32, 2, 8, 64, 0), *w65 = mk(be, ELA_F32, 2, 8, 65, 0);
    ela_tensor *y9 = mk(be, ELA_F32, 2, 4, 9, 0);
    ela_tensor *x_other = be2 ? mk(be2, ELA_F32, 2, 4, 64, 0) : NULL;
    ela_tensor *bh = mk(be, ELA_F16, 1, 8, 0, 0);
    ela_tensor *xs = NULL, *yx = NULL, *sq = mk(be, ELA_F32, 2, 8, 8, 0), *sq1 = NULL, *sq2 = NULL;
    ela_tensor *w8 = mk(be, ELA_F32, 2, 8, 8, 0), *n8 = mk(be, ELA_F32, 1, 8, 0, 0);
    /* x with a strided last dim: every other float of [4, 128] */
    int64_t e_s[2] = {4, 64}, s_s[2] = {512, 8};
    ela_tensor *wide = mk(be, ELA_F32, 2, 4, 128, 0);
    CHECK_STATUS(ela_tensor_view(wide, 2, e_s, s_s, 0, &xs), ELA_OK);
    /* y that is part of x's memory: the first 8 columns of x */
    int64_t e_y[2] = {4, 8}, s_y[2] = {256, 4};
    CHECK_STATUS(ela_tensor_view(x, 2, e_y, s_y, 0, &yx), ELA_OK);
    /* rows 0..6 and rows 1..7 of sq: the same shape, partly the same memory */
    int64_t e_q[2] = {7, 8};
    CHECK_STATUS(ela_tensor_view(sq, 2, e_q, NULL, 0, &sq1), ELA_OK);
    CHECK_STATUS(ela_tensor_view(sq, 2, e_q, NULL, 32, &sq2), ELA_OK);

    /* matmul */
    CHECK_ERR(ela_matmul(NULL, x, w, NULL, y), BAD, "backend");
    CHECK_ERR(ela_matmul(be, NULL, w, NULL, y), BAD, "x");
    CHECK_ERR(ela_matmul(be, x, NULL, NULL, y), BAD, "w");
    CHECK_ERR(ela_matmul(be, x, w, NULL, NULL), BAD, "y");
    CHECK_ERR(ela_matmul(be, x3, w, NULL, y), BAD, "x");
    CHECK_ERR(ela_matmul(be, xh, w, NULL, y), BAD, "x", "f16");
    CHECK_ERR(ela_matmul(be, x, wi, NULL, y), BAD, "w", "i32");
    CHECK_ERR(ela_matmul(be, x, w65, NULL, y), BAD, "w");
    CHECK_ERR(ela_matmul(be, x, w, NULL, y9), BAD, "y");
    CHECK_ERR(ela_matmul(be, x, w, b7, y), BAD, "bias");
    CHECK_ERR(ela_matmul(be, x, w, bh, y), BAD, "bias", "f16");
    CHECK_ERR(ela_matmul(be, xs, w, NULL, y), BAD, "x", "packed");
    CHECK_ERR(ela_matmul(be, x, w, NULL, yx), BAD, "y", "x", "overlaps");
    CHECK_ERR(ela_matmul(be, sq1, w8, NULL, sq2), BAD, "y", "x", "overlaps");
    CHECK_ERR(ela_matmul(be, x, w, NULL, x), BAD, "y");
    if (x_other)
        CHECK_ERR(ela_matmul(be, x_other, w, NULL, y), BAD, "x");
    CHECK_STATUS(ela_matmul(be, x, wq, bias, y), ELA_OK);
    CHECK_STATUS(ela_matmul(be, x, w, bias, y), ELA_OK);

    /* rms_norm */
    ela_tensor *n64 = mk(be, ELA_F32, 1, 64, 0, 0), *n63 = mk(be, ELA_F32, 1, 63, 0, 0);
    ela_tensor *nq = mk(be, ELA_Q8_0, 1, 64, 0, 0), *x2 = mk(be, ELA_F32, 2, 4, 64, 0);
    CHECK_ERR(ela_rms_norm(NULL, x, n64, 1e-5f, x), BAD, "backend");
    CHECK_ERR(ela_rms_norm(be, NULL, n64, 1e-5f, x), BAD, "x");
    CHECK_ERR(ela_rms_norm(be, x, NULL, 1e-5f, x), BAD, "w");
    CHECK_ERR(ela_rms_norm(be, x, n64, 1e-5f, NULL), BAD, "y");
    CHECK_ERR(ela_rms_norm(be, x, n63, 1e-5f, x), BAD, "w");
    CHECK_ERR(ela_rms_norm(be, x, nq, 1e-5f, x), BAD, "w", "q8_0");
    CHECK_ERR(ela_rms_norm(be, x, n64, -1.0f, x), BAD, "eps");
    CHECK_ERR(ela_rms_norm(be, x, n64, NAN, x), BAD, "eps");
    CHECK_ERR(ela_rms_norm(be, x, n64, 1e-5f, x3), BAD, "y");
    CHECK_ERR(ela_rms_norm(be, x, n64, 1e-5f, y), BAD, "y");
    CHECK_ERR(ela_rms_norm(be, xh, n64, 1e-5f, xh), BAD, "x", "f16");
    CHECK_ERR(ela_rms_norm(be, sq1, n8, 1e-5f, sq2), BAD, "y", "x", "overlaps");
    CHECK_STATUS(ela_rms_norm(be, sq1, n8, 1e-5f, sq1), ELA_OK);
    CHECK_STATUS(ela_rms_norm(be, x, n64, 1e-5f, x2), ELA_OK);
    CHECK_STATUS(ela_rms_norm(be, x, n64, 1e-5f, x), ELA_OK);
    CHECK_STATUS(ela_rms_norm(be, x3, n64, 0.0f, x3), ELA_OK);

    /* rope */
    ela_tensor *pos = mk(be, ELA_I32, 1, 4, 0, 0), *pos5 = mk(be, ELA_I32, 1, 5, 0, 0);
    ela_tensor *posf = mk(be, ELA_F32, 1, 4, 0, 0);
    int32_t pv[4] = {0, 5, -3, 9}, pok[4] = {0, 1, 2, 3};
    CHECK_STATUS(ela_tensor_write(pos, pv, sizeof pv), ELA_OK);
    ela_rope_params rp = {10000.0f, 0, 0, ELA_ROPE_SCALING_NONE, 1.0f, 1.0f, 4.0f, 8192, NULL,
                          0.0f, 0.0f, 0.0f, 0};
    CHECK_ERR(ela_rope(NULL, x3, pos, &rp), BAD, "backend");
    CHECK_ERR(ela_rope(be, NULL, pos, &rp), BAD, "x");
    CHECK_ERR(ela_rope(be, x3, NULL, &rp), BAD, "pos");
    CHECK_ERR(ela_rope(be, x3, pos, NULL), BAD, "params");
    CHECK_ERR(ela_rope(be, x, pos, &rp), BAD, "x");
    CHECK_ERR(ela_rope(be, x3, pos5, &rp), BAD, "pos");
    CHECK_ERR(ela_rope(be, x3, posf, &rp), BAD, "pos", "f32");
    CHECK_ERR(ela_rope(be, x3, pos, &rp), BAD, "pos");
    CHECKF(test_has_text(ela_last_error(), "pos[2]") && test_has_text(ela_last_error(), "-3"),
           "message \"%s\"", ela_last_error());
    CHECK_STATUS(ela_tensor_write(pos, pok, sizeof pok), ELA_OK);
    ela_rope_params bad = rp;
    bad.theta = 0.0f;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "theta");
    bad = rp;
    bad.n_rot = 7;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "n_rot");
    bad.n_rot = 66;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "n_rot");
    bad.n_rot = -2;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "n_rot");
    bad = rp;
    bad.interleaved = 2;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "interleaved");
    bad = rp;
    bad.scaling = (ela_rope_scaling)7;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "scaling");
    bad = rp;
    bad.scaling = ELA_ROPE_SCALING_LINEAR;
    bad.factor = 0.0f;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "factor");
    bad.scaling = ELA_ROPE_SCALING_LLAMA3;
    bad.factor = 8.0f;
    bad.low_freq_factor = 4.0f;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "low_freq_factor");
    bad.low_freq_factor = 1.0f;
    bad.original_max_position = 0;
    CHECK_ERR(ela_rope(be, x3, pos, &bad), BAD, "original_max_position");
    CHECK_STATUS(ela_rope(be, x3, pos, &rp), ELA_OK);
    rp.interleaved = 1;
    rp.n_rot = 32;
    CHECK_STATUS(ela_rope(be, x3, pos, &rp), ELA_OK);

    /* silu_mul, add */
    CHECK_ERR(ela_silu_mul(NULL, x, x2, x), BAD, "backend");
    CHECK_ERR(ela_silu_mul(be, NULL, x2, x), BAD, "gate");
    CHECK_ERR(ela_silu_mul(be, x, NULL, x), BAD, "up");
    CHECK_ERR(ela_silu_mul(be, x, x2, NULL), BAD, "out");
    CHECK_ERR(ela_silu_mul(be, x, y, x), BAD, "up");
    CHECK_ERR(ela_silu_mul(be, x, x3, x), BAD, "up");
    CHECK_ERR(ela_silu_mul(be, x, xh, x), BAD, "up", "f16");
    CHECK_ERR(ela_add(be, sq1, sq1, sq2), BAD, "out", "overlaps");
    CHECK_ERR(ela_add(be, x, x2, yx), BAD, "out");
    CHECK_ERR(ela_add(be, x, xs, x2), BAD, "b", "packed");
    CHECK_STATUS(ela_silu_mul(be, x, x2, x2), ELA_OK);
    CHECK_STATUS(ela_add(be, x, x2, x), ELA_OK);
    CHECK_STATUS(ela_add(be, x, x, x), ELA_OK);

    /* get_rows */
    ela_tensor *table = mk(be, ELA_Q8_0, 2, 10, 64, 0), *ids = mk(be, ELA_I32, 1, 4, 0, 0);
    ela_tensor *ids2 = mk(be, ELA_I32, 2, 2, 2, 0), *tabi = mk(be, ELA_I32, 2, 10, 64, 0);
    int32_t idv[4] = {1, 9, 10, 0}, idn[4] = {1, -1, 2, 0};
    CHECK_STATUS(ela_tensor_write(ids, idv, sizeof idv), ELA_OK);
    CHECK_ERR(ela_get_rows(NULL, table, ids, x), BAD, "backend");
    CHECK_ERR(ela_get_rows(be, NULL, ids, x), BAD, "table");
    CHECK_ERR(ela_get_rows(be, table, NULL, x), BAD, "ids");
    CHECK_ERR(ela_get_rows(be, table, ids, NULL), BAD, "out");
    CHECK_ERR(ela_get_rows(be, tabi, ids, x), BAD, "table", "i32");
    CHECK_ERR(ela_get_rows(be, table, ids2, x), BAD, "ids");
    CHECK_ERR(ela_get_rows(be, table, ids, y), BAD, "out");
    CHECK_ERR(ela_get_rows(be, table, ids, x), BAD, "ids");
    CHECKF(test_has_text(ela_last_error(), "ids[2]") && test_has_text(ela_last_error(), "10"),
           "message \"%s\"", ela_last_error());
    CHECK_STATUS(ela_tensor_write(ids, idn, sizeof idn), ELA_OK);
    CHECK_ERR(ela_get_rows(be, table, ids, x), BAD, "ids");
    CHECKF(test_has_text(ela_last_error(), "ids[1]"), "message \"%s\"", ela_last_error());
    idv[2] = 3;
    CHECK_STATUS(ela_tensor_write(ids, idv, sizeof idv), ELA_OK);
    CHECK_STATUS(ela_get_rows(be, table, ids, x), ELA_OK);

    /* copy */
    CHECK_ERR(ela_copy(NULL, x, x2), BAD, "backend");
    CHECK_ERR(ela_copy(be, NULL, x2), BAD, "src");
    CHECK_ERR(ela_copy(be, x, NULL), BAD, "dst");
    CHECK_ERR(ela_copy(be, x, y), BAD, "dst");
    CHECK_ERR(ela_copy(be, x, x3), BAD, "dst");
    CHECK_ERR(ela_copy(be, x, tabi), BAD, "dst");
    CHECK_ERR(ela_copy(be, sq1, sq2), BAD, "dst", "overlaps");
    CHECK_ERR(ela_copy(be, xs, x2), BAD, "src", "packed");
    ela_tensor *xq = mk(be, ELA_Q8_0, 2, 4, 64, 0);
    CHECK_STATUS(ela_copy(be, x, xq), ELA_OK);
    CHECK_STATUS(ela_copy(be, xq, xh), ELA_OK);
    CHECK_STATUS(ela_copy(be, x, x), ELA_OK);

    /* Every op's dtypes are ones the backend says it supports. */
    ela_dtype mm[3] = {ELA_F32, ELA_Q8_0, ELA_F32}, gr[3] = {ELA_Q8_0, ELA_I32, ELA_F32};
    ela_dtype rope_dt[2] = {ELA_F32, ELA_I32}, rms_q8[3] = {ELA_F32, ELA_Q8_0, ELA_F32};
    CHECK(ela_backend_supports(be, ELA_OP_MATMUL, mm, 3));
    CHECK(ela_backend_supports(be, ELA_OP_GET_ROWS, gr, 3));
    CHECK(ela_backend_supports(be, ELA_OP_ROPE, rope_dt, 2));
    CHECK(!ela_backend_supports(be, ELA_OP_RMS_NORM, rms_q8, 3));
    CHECK(ela_backend_supports(be, ELA_OP_ATTN_DENSE, mm, 3)); /* q8_0 K/V: a quantized cache */

    ela_tensor *all[] = {x, w, wq, y, bias, b7, x3, xh, wi, w65, y9,
                         x_other, bh, xs, yx, sq, sq2, wide, n64, n63, nq, x2, sq1, w8,
                         n8, pos, pos5, posf, table, ids, ids2, tabi, xq};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ela_tensor_free(all[i]);
    ela_backend_close(be2);
}

/* ---- out of memory ------------------------------------------------------------------------- */
static void test_oom(ela_backend *be) {
    ela_tensor *x = mk(be, ELA_F32, 2, 3, 64, 0), *wq = mk(be, ELA_Q8_0, 2, 5, 64, 0);
    ela_tensor *y = mk(be, ELA_F32, 2, 3, 5, 0), *n64 = mk(be, ELA_BF16, 1, 64, 0, 0);
    ela_tensor *x3 = mk(be, ELA_F32, 3, 3, 2, 64), *pos = mk(be, ELA_I32, 1, 3, 0, 0);
    ela_tensor *ids = mk(be, ELA_I32, 1, 3, 0, 0), *cq = mk(be, ELA_Q8_0, 2, 3, 64, 0);
    if (!x || !wq || !y || !n64 || !x3 || !pos || !ids || !cq)
        goto done;
    test_rng rng;
    test_rng_init(&rng, 7000);
    float v[6 * 64];
    fill_normal(&rng, v, 6 * 64, 1.0f);
    int32_t p[3] = {0, 100000, 7}, id[3] = {4, 0, 2};
    ela_tensor_write_f32(x, v, 3 * 64);
    ela_tensor_write_f32(wq, v, 5 * 64);
    ela_tensor_write_f32(n64, v, 64);
    ela_tensor_write_f32(x3, v, 6 * 64);
    ela_tensor_write(pos, p, sizeof p);
    ela_tensor_write(ids, id, sizeof id);
    ela_rope_params rp = {10000.0f, 0, 0, ELA_ROPE_SCALING_LLAMA3, 8.0f, 1.0f, 4.0f, 8192, NULL,
                          0.0f, 0.0f, 0.0f, 0};
    for (int op = 0; op < 5; op++) {
        int64_t failures = 0;
        ela_status st = ELA_OK;
        for (int64_t i = 1; i <= 100; i++) {
            ela_debug_fail_alloc(i);
            switch (op) {
            case 0: st = ela_matmul(be, x, wq, NULL, y); break;
            case 1: st = ela_rms_norm(be, x3, n64, 1e-5f, x3); break;
            case 2: st = ela_rope(be, x3, pos, &rp); break;
            case 3: st = ela_get_rows(be, wq, ids, x); break;
            default: st = ela_copy(be, x, cq); break;
            }
            ela_debug_fail_alloc(0);
            if (st == ELA_OK)
                break;
            failures++;
            CHECKF(st == ELA_ERR_OOM && ela_last_error()[0] != '\0',
                   "op %d, allocation %lld failed: got %s (%s)", op, (long long)i,
                   ela_status_str(st), ela_last_error());
            if (st != ELA_ERR_OOM)
                break;
        }
        CHECKF(st == ELA_OK, "op %d never succeeded", op);
        if (op < 3)
            CHECKF(failures >= 1, "op %d: no allocation was failed", op);
    }
done:
    ela_tensor_free(x);
    ela_tensor_free(wq);
    ela_tensor_free(y);
    ela_tensor_free(n64);
    ela_tensor_free(x3);
    ela_tensor_free(pos);
    ela_tensor_free(ids);
    ela_tensor_free(cq);
}

int main(void) {
    test_seed();
    open_backends();
    double t0 = test_now();
    test_matmul();
    printf("matmul: %.1f s\n", test_now() - t0);
    test_rms_norm();
    test_rope_llama3_freqs();
    test_rope();
    test_binary();
    test_sigmoid_gate();
    test_get_rows();
    test_copy();
    printf("all ops: %.1f s on %d backend configurations\n", test_now() - t0, n_cfgs);
    if (n_cfgs > 0) {
        test_errors(cfgs[0].be);
        test_oom(cfgs[0].be);
    }
    for (int c = 0; c < n_cfgs; c++)
        ela_backend_close(cfgs[c].be);
    return test_summary("test_model_ops");
}

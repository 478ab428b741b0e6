/* Unit test of dtypes and tensors: ela_convert between f32, f16 and bf16 against an independent
 * rounding done in double arithmetic (nearest-even, subnormals, overflow, inf/nan; every f16 and
 * bf16 value, and f32 values around every rounding boundary), and tensors on the "cpu" backend:
 * getters, write/read with strides, views (offsets, views of views, transposes, outliving their
 * base), write_f32/read_f32 conversion; q8_0 blocks (GGUF's block_q8_0) against ggml's reference
 * quantizer written out here, and q8_0 tensors (block strides, views at block boundaries). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_common.h"

/* ---- independent conversions -------------------------------------------------------------- */
static float f32_from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

/* Exact value of an f16 bit pattern. */
static double f16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* Exact value of a bf16 bit pattern. */
static double bf16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v = e == 255 ? (m ? NAN : INFINITY) : e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

/* Round a (|x|, exact in double) to a binary format with `mbits` stored mantissa bits, minimum
 * normal exponent emin and bias: nearest, ties to even (nearbyint in the default rounding mode),
 * overflow to inf. Returns the bits without the sign. */
static uint16_t round_to_format(double a, int mbits, int emin, int bias, uint16_t inf_bits) {
    if (isinf(a))
        return inf_bits;
    if (a < ldexp(1.0, emin)) /* subnormal range: multiples of 2^(emin - mbits) */
        return (uint16_t)nearbyint(ldexp(a, mbits - emin)); /* may carry into the smallest normal */
    int e;
    frexp(a, &e);
    int E = e - 1; /* a in [2^E, 2^(E+1)) */
    double q = nearbyint(ldexp(a, mbits - E)); /* in [2^mbits, 2^(mbits+1)] */
    long bits = ((long)(E + bias) << mbits) + (long)q - (1L << mbits); /* q = 2^(mbits+1) carries */
    return bits >= inf_bits ? inf_bits : (uint16_t)bits;
}

static uint16_t ref_f16_bits(double x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (isnan(x))
        return 0x7e00;
    return sign | round_to_format(fabs(x), 10, -14, 15, 0x7c00);
}

static uint16_t ref_bf16_bits(double x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (isnan(x))
        return 0x7fc0;
    return sign | round_to_format(fabs(x), 7, -126, 127, 0x7f80);
}

static int f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }
static int bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f); }

/* ---- conversions ----------------------------------------------------------------------------- */
static void test_convert_table(void) {
    static const struct {
        float x;
        uint16_t f16, bf16;
    } t[] = {
        {0.0f, 0x0000, 0x0000},
        {-0.0f, 0x8000, 0x8000},
        {1.0f, 0x3c00, 0x3f80},
        {-2.0f, 0xc000, 0xc000},
        {0.5f, 0x3800, 0x3f00},
        {65504.0f, 0x7bff, 0x4780},          /* f16 max; bf16 rounds it up to 2^16 */
        {0x1p-14f, 0x0400, 0x3880},          /* smallest normal f16 */
        {0x1p-24f, 0x0001, 0x3380},          /* smallest subnormal f16 */
        {0x1.ff8p-15f, 0x03ff, 0x3880},      /* largest subnormal f16 (1023 * 2^-24) */
        {1.0f + 0x1p-11f, 0x3c00, 0x3f80},   /* halfway 1 .. 1+2^-10: to even (down) */
        {1.0f + 0x3p-11f, 0x3c02, 0x3f80},   /* halfway 1+2^-10 .. 1+2^-9: to even (up) */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01, 0x3f80}, /* just above halfway */
        {1.0f + 0x1p-8f, 0x3c04, 0x3f80},    /* bf16: halfway 1 .. 1+2^-7, to even (down) */
        {1.0f + 0x3p-8f, 0x3c0c, 0x3f82},    /* bf16: halfway, to even (up) */
        {0x1p-25f, 0x0000, 0x3300},          /* halfway 0 .. 2^-24: to even (zero) */
        {0x1.8p-25f, 0x0001, 0x3340},        /* above halfway */
        {0x3p-25f, 0x0002, 0x33c0},          /* halfway 1 .. 2 units of 2^-24: to even (2) */
        {0x1p-26f, 0x0000, 0x3280},
        {65519.0f, 0x7bff, 0x4780},          /* below the f16 overflow threshold 65520 */
        {65520.0f, 0x7c00, 0x4780},          /* halfway to 2^16: to even = inf */
        {1e10f, 0x7c00, 0x5015},
        {-1e10f, 0xfc00, 0xd015},
        {INFINITY, 0x7c00, 0x7f80},
        {-INFINITY, 0xfc00, 0xff80},
        {0x1p-149f, 0x0000, 0x0000},         /* f32 subnormal: f16 zero; bf16 rounds to zero */
        {0x1p-133f, 0x0000, 0x0001},         /* smallest bf16 subnormal */
        {-0x1p-126f, 0x8000, 0x8080},        /* smallest f32 normal */
        {3.4028234e38f, 0x7c00, 0x7f80},     /* f32 max: bf16 overflows to inf */
        {0x1.fep127f, 0x7c00, 0x7f7f},       /* bf16 max */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint16_t h = 0, b = 0;
        CHECK_STATUS(ela_convert(&t[i].x, ELA_F32, &h, ELA_F16, 1), ELA_OK);
        CHECK_STATUS(ela_convert(&t[i].x, ELA_F32, &b, ELA_BF16, 1), ELA_OK);
        /* The table itself is checked against the independent rounding. */
        CHECKF(ref_f16_bits(t[i].x) == t[i].f16 && ref_bf16_bits(t[i].x) == t[i].bf16,
               "table row %zu (%a): ref f16 %04x bf16 %04x", i, (double)t[i].x,
               ref_f16_bits(t[i].x), ref_bf16_bits(t[i].x));
        CHECKF(h == t[i].f16, "%a -> f16 %04x, want %04x", (double)t[i].x, h, t[i].f16);
        CHECKF(b == t[i].bf16, "%a -> bf16 %04x, want %04x", (double)t[i].x, b, t[i].bf16);
    }
    float nan = NAN;
    uint16_t h, b;
    CHECK_STATUS(ela_convert(&nan, ELA_F32, &h, ELA_F16, 1), ELA_OK);
    CHECK_STATUS(ela_convert(&nan, ELA_F32, &b, ELA_BF16, 1), ELA_OK);
    CHECKF(f16_is_nan(h) && bf16_is_nan(b), "nan -> f16 %04x, bf16 %04x", h, b);
    /* A NaN whose payload lies only in the low bits must stay a NaN, not become inf. */
    float snan = f32_from_bits(0x7f800001u), nsnan = f32_from_bits(0xff800100u);
    CHECK_STATUS(ela_convert(&snan, ELA_F32, &h, ELA_F16, 1), ELA_OK);
    CHECK_STATUS(ela_convert(&snan, ELA_F32, &b, ELA_BF16, 1), ELA_OK);
    CHECKF(f16_is_nan(h) && bf16_is_nan(b), "0x7f800001 -> f16 %04x, bf16 %04x", h, b);
    CHECK_STATUS(ela_convert(&nsnan, ELA_F32, &b, ELA_BF16, 1), ELA_OK);
    CHECKF(bf16_is_nan(b), "0xff800100 -> bf16 %04x", b);
}

/* Every f16 and bf16 value to f32 (exact), back (identity), and to the other 16-bit type. */
static void test_convert_exhaustive16(void) {
    uint16_t *src = malloc(65536 * 2), *back = malloc(65536 * 2), *other = malloc(65536 * 2);
    float *f = malloc(65536 * sizeof *f);
    if (!src || !back || !other || !f) {
        CHECK(!"out of memory");
        goto done;
    }
    for (int i = 0; i < 65536; i++)
        src[i] = (uint16_t)i;
    for (int pass = 0; pass < 2; pass++) {
        ela_dtype dt = pass ? ELA_BF16 : ELA_F16, ot = pass ? ELA_F16 : ELA_BF16;
        CHECK_STATUS(ela_convert(src, dt, f, ELA_F32, 65536), ELA_OK);
        CHECK_STATUS(ela_convert(f, ELA_F32, back, dt, 65536), ELA_OK);
        CHECK_STATUS(ela_convert(src, dt, other, ot, 65536), ELA_OK);
        int64_t bad_value = 0, bad_back = 0, bad_other = 0;
        for (int i = 0; i < 65536; i++) {
            double want = pass ? bf16_value(src[i]) : f16_value(src[i]);
            int nan = isnan(want);
            if (nan ? !isnan(f[i]) : (double)f[i] != want || !signbit(f[i]) != !signbit(want)) {
                if (bad_value++ < 5)
                    fprintf(stderr, "%s %04x -> f32 %a, want %a\n", ela_dtype_name(dt), i,
                            (double)f[i], want);
            }
            int back_ok = nan ? (pass ? bf16_is_nan(back[i]) : f16_is_nan(back[i])) : back[i] == src[i];
            if (!back_ok && bad_back++ < 5)
                fprintf(stderr, "%s %04x -> f32 -> %04x\n", ela_dtype_name(dt), i, back[i]);
            uint16_t want_other = pass ? ref_f16_bits(want) : ref_bf16_bits(want);
            int other_ok = nan ? (pass ? f16_is_nan(other[i]) : bf16_is_nan(other[i]))
                               : other[i] == want_other;
            if (!other_ok && bad_other++ < 5)
                fprintf(stderr, "%s %04x -> %s %04x, want %04x\n", ela_dtype_name(dt), i,
                        ela_dtype_name(ot), other[i], want_other);
        }
        CHECKF(bad_value == 0, "%s -> f32: %lld wrong", ela_dtype_name(dt), (long long)bad_value);
        CHECKF(bad_back == 0, "%s -> f32 -> %s: %lld not the identity", ela_dtype_name(dt),
               ela_dtype_name(dt), (long long)bad_back);
        CHECKF(bad_other == 0, "%s -> %s: %lld wrong", ela_dtype_name(dt), ela_dtype_name(ot),
               (long long)bad_other);
    }
done:
    free(src);
    free(back);
    free(other);
    free(f);
}

/* f32 -> f16/bf16 on values around every rounding boundary: each sign and exponent, the top
 * mantissa bits swept, the bits below each format's rounding position at 0, 1, half - 1, half,
 * half + 1, all ones and random; denser where f16 results are subnormal; plus random patterns. */
static void test_convert_f32_sweep(void) {
    enum { CHUNK = 1 << 16 };
    float *x = malloc(CHUNK * sizeof *x);
    uint16_t *h = malloc(CHUNK * 2), *b = malloc(CHUNK * 2);
    if (!x || !h || !b) {
        CHECK(!"out of memory");
        goto done;
    }
    test_rng rng;
    test_rng_init(&rng, 77);
    int64_t total = 0, bad_h = 0, bad_b = 0;
    int fill = 0;
    static const uint32_t low13[] = {0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff};
    static const uint32_t low16[] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff};
    for (int phase = 0; phase < 4; phase++) {
        int64_t count = phase == 0 ? 512LL * 1024 * 7   /* sign, exponent, top 10 bits, low13 */
                        : phase == 1 ? 512LL * 128 * 7  /* sign, exponent, top 7 bits, low16 */
                        : phase == 2 ? 2LL * 14 * 32768 * 2 /* f16-subnormal exponents, top 15 bits */
                                     : 1LL << 21;           /* random bit patterns */
        for (int64_t i = 0; i < count; i++) {
            uint32_t bits;
            uint32_t r = (uint32_t)test_rng_u64(&rng);
            if (phase == 0) {
                uint32_t se = (uint32_t)(i / (1024 * 7)), top = (uint32_t)(i / 7 % 1024);
                int k = (int)(i % 7);
                bits = (se << 23) | (top << 13) | (k < 6 ? low13[k] : (r & 0x1fff));
            } else if (phase == 1) {
                uint32_t se = (uint32_t)(i / (128 * 7)), top = (uint32_t)(i / 7 % 128);
                int k = (int)(i % 7);
                bits = (se << 23) | (top << 16) | (k < 6 ? low16[k] : (r & 0xffff));
            } else if (phase == 2) {
                uint32_t s = (uint32_t)(i / (14 * 32768 * 2)), e = 100 + (uint32_t)(i / (32768 * 2) % 14);
                uint32_t top = (uint32_t)(i / 2 % 32768);
                bits = (s << 31) | (e << 23) | (top << 8) | (i % 2 ? (r & 0xff) : 0);
            } else {
                bits = r;
            }
            x[fill++] = f32_from_bits(bits);
            if (fill < CHUNK && i != count - 1)
                continue;
            CHECK_STATUS(ela_convert(x, ELA_F32, h, ELA_F16, fill), ELA_OK);
            CHECK_STATUS(ela_convert(x, ELA_F32, b, ELA_BF16, fill), ELA_OK);
            for (int j = 0; j < fill; j++) {
                double v = x[j];
                int nan = isnan(v);
                uint16_t wh = ref_f16_bits(v), wb = ref_bf16_bits(v);
                if (nan ? !f16_is_nan(h[j]) : h[j] != wh) {
                    if (bad_h++ < 5)
                        fprintf(stderr, "f32 %08x (%a) -> f16 %04x, want %04x\n", f32_bits(x[j]), v,
                                h[j], wh);
                }
                if (nan ? !bf16_is_nan(b[j]) : b[j] != wb) {
                    if (bad_b++ < 5)
                        fprintf(stderr, "f32 %08x (%a) -> bf16 %04x, want %04x\n", f32_bits(x[j]), v,
                                b[j], wb);
                }
            }
            total += fill;
            fill = 0;
        }
    }
    CHECKF(bad_h == 0, "f32 -> f16: %lld of %lld wrong", (long long)bad_h, (long long)total);
    CHECKF(bad_b == 0, "f32 -> bf16: %lld of %lld wrong", (long long)bad_b, (long long)total);
    printf("f32 -> f16/bf16: %lld values checked\n", (long long)total);
done:
    free(x);
    free(h);
    free(b);
}

/* Every length 0..100 at misaligned addresses (vector bodies and tails), and same-dtype copies. */
static void test_convert_lengths(void) {
    enum { N = 100 };
    float src[N + 3], f[N + 3];
    uint16_t h[N + 3], hh[N + 3];
    test_rng rng;
    test_rng_init(&rng, 78);
    for (int i = 0; i < N + 3; i++)
        src[i] = (float)test_rng_normal(&rng) * 100.0f;
    int bad = 0;
    for (int n = 0; n <= N; n++)
        for (int dt = 1; dt <= 2; dt++) {
            memset(h, 0xee, sizeof h);
            CHECK_STATUS(ela_convert(src + 1, ELA_F32, h + 1, (ela_dtype)dt, n), ELA_OK);
            for (int i = 0; i < n; i++)
                bad += h[1 + i] != (dt == 1 ? ref_f16_bits(src[1 + i]) : ref_bf16_bits(src[1 + i]));
            bad += h[0] != 0xeeee || h[1 + n] != 0xeeee; /* nothing written outside */
            memset(f, 0, sizeof f);
            CHECK_STATUS(ela_convert(h + 1, (ela_dtype)dt, f + 3, ELA_F32, n), ELA_OK);
            for (int i = 0; i < n; i++)
                bad += (double)f[3 + i] != (dt == 1 ? f16_value(h[1 + i]) : bf16_value(h[1 + i]));
            CHECK_STATUS(ela_convert(h + 1, (ela_dtype)dt, hh, (ela_dtype)dt, n), ELA_OK);
            bad += n > 0 && memcmp(hh, h + 1, (size_t)n * 2) != 0;
        }
    CHECKF(bad == 0, "%d mismatches", bad);
    float copy[N];
    CHECK_STATUS(ela_convert(src, ELA_F32, copy, ELA_F32, N), ELA_OK);
    CHECK(memcmp(copy, src, sizeof copy) == 0);
}

/* ---- tensors ------------------------------------------------------------------------------------ */
static void check_shape(const ela_tensor *t, ela_dtype dt, int n_dims, const int64_t *ext,
                        const int64_t *strides) {
    CHECK(ela_tensor_dtype(t) == dt);
    CHECK(ela_tensor_n_dims(t) == n_dims);
    int64_t numel = 1;
    for (int i = 0; i < n_dims; i++) {
        CHECKF(ela_tensor_extent(t, i) == ext[i], "extent %d: %lld, want %lld", i,
               (long long)ela_tensor_extent(t, i), (long long)ext[i]);
        CHECKF(ela_tensor_stride(t, i) == strides[i], "stride %d: %lld, want %lld", i,
               (long long)ela_tensor_stride(t, i), (long long)strides[i]);
        numel *= ext[i];
    }
    CHECK(ela_tensor_numel(t) == numel);
    CHECK(ela_tensor_extent(t, -1) == 0 && ela_tensor_extent(t, n_dims) == 0 &&
          ela_tensor_extent(t, ELA_MAX_DIMS) == 0);
}

static void packed_strides(int n_dims, const int64_t *ext, size_t es, int64_t *out) {
    int64_t s = (int64_t)es;
    for (int i = n_dims - 1; i >= 0; i--) {
        out[i] = s;
        s *= ext[i];
    }
}

static void random_bytes(test_rng *rng, void *dst, size_t n) {
    unsigned char *p = dst;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)test_rng_u64(rng);
}

/* Byte offset of flat (row-major) element e of a tensor with these extents and strides. */
static int64_t elem_offset(int n_dims, const int64_t *ext, const int64_t *strides, int64_t e) {
    int64_t off = 0;
    for (int i = n_dims - 1; i >= 0; i--) {
        off += (e % ext[i]) * strides[i];
        e /= ext[i];
    }
    return off;
}

static void test_tensor_packed_and_strided(ela_backend *be) {
    test_rng rng;
    test_rng_init(&rng, 90);
    static const int64_t shapes[4][4] = {{7}, {3, 5}, {2, 3, 7}, {2, 3, 4, 5}};
    for (int dt = 0; dt < ELA_DTYPE_COUNT; dt++) {
        size_t es = ela_dtype_size((ela_dtype)dt);
        if (ela_dtype_block((ela_dtype)dt) != 1)
            continue; /* block dtypes: test_q8_0_tensors */
        for (int nd = 1; nd <= 4; nd++) {
            const int64_t *ext = shapes[nd - 1];
            int64_t numel = 1, packed[4], padded[4];
            for (int i = 0; i < nd; i++)
                numel *= ext[i];
            packed_strides(nd, ext, es, packed);
            /* padded: each dim's stride leaves a gap of 1..3 elements past the inner dims */
            int64_t s = (int64_t)es;
            for (int i = nd - 1; i >= 0; i--) {
                padded[i] = s;
                s = s * ext[i] + (int64_t)es * (1 + i % 3);
            }
            size_t bytes = (size_t)numel * es;
            unsigned char *data = malloc(bytes), *back = malloc(bytes);
            if (!data || !back) {
                CHECK(!"out of memory");
                free(data);
                free(back);
                continue;
            }
            random_bytes(&rng, data, bytes);
            for (int strided = 0; strided < 2; strided++) {
                ela_tensor *t = NULL;
                CHECK_STATUS(ela_tensor_new(be, (ela_dtype)dt, nd, ext, strided ? padded : NULL, &t),
                             ELA_OK);
                if (!t)
                    continue;
                check_shape(t, (ela_dtype)dt, nd, ext, strided ? padded : packed);
                CHECK_STATUS(ela_tensor_write(t, data, bytes), ELA_OK);
                memset(back, 0, bytes);
                CHECK_STATUS(ela_tensor_read(t, back, bytes), ELA_OK);
                CHECKF(memcmp(data, back, bytes) == 0, "%s %dD %s: read != written",
                       ela_dtype_name((ela_dtype)dt), nd, strided ? "strided" : "packed");
                /* Where the elements are: a flat view over the whole span sees each element at
                 * its stride offsets. */
                int64_t span = (int64_t)es;
                const int64_t *st = strided ? padded : packed;
                for (int i = 0; i < nd; i++)
                    span += (ext[i] - 1) * st[i];
                ela_tensor *flat = NULL;
                int64_t flat_ext[1] = {span / (int64_t)es};
                CHECK_STATUS(ela_tensor_view(t, 1, flat_ext, NULL, 0, &flat), ELA_OK);
                unsigned char *raw = malloc((size_t)span);
                if (flat && raw) {
                    CHECK_STATUS(ela_tensor_read(flat, raw, (size_t)span), ELA_OK);
                    int ok = 1;
                    for (int64_t e = 0; e < numel; e++)
                        ok &= memcmp(raw + elem_offset(nd, ext, st, e), data + e * (int64_t)es, es) == 0;
                    CHECKF(ok, "%s %dD %s: elements not at their strides", ela_dtype_name((ela_dtype)dt),
                           nd, strided ? "strided" : "packed");
                }
                free(raw);
                ela_tensor_free(flat);
                ela_tensor_free(t);
            }
            free(data);
            free(back);
        }
    }
    /* Empty tensors. */
    ela_tensor *t = NULL;
    int64_t e0[2] = {3, 0};
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 2, e0, NULL, &t), ELA_OK);
    CHECK(ela_tensor_numel(t) == 0);
    uint16_t dummy = 0;
    CHECK_STATUS(ela_tensor_write(t, &dummy, 0), ELA_OK);
    CHECK_STATUS(ela_tensor_read(t, &dummy, 0), ELA_OK);
    CHECK_STATUS(ela_tensor_read_f32(t, NULL, 0), ELA_OK);
    ela_tensor_free(t);
}

static void test_views(ela_backend *be) {
    /* base [4, 6, 8] f32 holding its own flat index */
    enum { A = 4, B = 6, C = 8, NB = A * B * C };
    int64_t ext[3] = {A, B, C};
    float idx[NB], got[NB];
    for (int i = 0; i < NB; i++)
        idx[i] = (float)i;
    ela_tensor *base = NULL, *v1 = NULL, *v2 = NULL, *vt = NULL;
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, ext, NULL, &base), ELA_OK);
    if (!base)
        return;
    CHECK_STATUS(ela_tensor_write(base, idx, sizeof idx), ELA_OK);

    /* v1 = base[:, :, 2:5] */
    int64_t e1[3] = {A, B, 3}, s1[3] = {B * C * 4, C * 4, 4};
    CHECK_STATUS(ela_tensor_view(base, 3, e1, s1, 2 * 4, &v1), ELA_OK);
    if (v1) {
        check_shape(v1, ELA_F32, 3, e1, s1);
        CHECK_STATUS(ela_tensor_read(v1, got, A * B * 3 * 4), ELA_OK);
        int ok = 1;
        for (int a = 0; a < A; a++)
            for (int b = 0; b < B; b++)
                for (int c = 0; c < 3; c++)
                    ok &= got[(a * B + b) * 3 + c] == (float)((a * B + b) * C + 2 + c);
        CHECK(ok);
        /* v2 = v1[1::2, 1:, :] : a view of a view, its offset counted from v1's first element */
        int64_t e2[3] = {2, B - 1, 3}, s2[3] = {2 * B * C * 4, C * 4, 4};
        CHECK_STATUS(ela_tensor_view(v1, 3, e2, s2, (B * C + C) * 4, &v2), ELA_OK);
        if (v2) {
            CHECK_STATUS(ela_tensor_read(v2, got, 2 * (B - 1) * 3 * 4), ELA_OK);
            ok = 1;
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < B - 1; b++)
                    for (int c = 0; c < 3; c++)
                        ok &= got[(a * (B - 1) + b) * 3 + c] ==
                              (float)(((1 + 2 * a) * B + 1 + b) * C + 2 + c);
            CHECK(ok);
        }
    }
    /* vt = base transposed to [C, B, A] */
    int64_t et[3] = {C, B, A}, st[3] = {4, C * 4, B * C * 4};
    CHECK_STATUS(ela_tensor_view(base, 3, et, st, 0, &vt), ELA_OK);
    if (vt) {
        CHECK_STATUS(ela_tensor_read(vt, got, sizeof got), ELA_OK);
        int ok = 1;
        for (int c = 0; c < C; c++)
            for (int b = 0; b < B; b++)
                for (int a = 0; a < A; a++)
                    ok &= got[(c * B + b) * A + a] == (float)((a * B + b) * C + c);
        CHECK(ok);
    }
    /* Writing through v2 changes exactly its elements of base. */
    if (v2) {
        float minus[2 * (B - 1) * 3];
        for (int i = 0; i < 2 * (B - 1) * 3; i++)
            minus[i] = -1.0f - (float)i;
        CHECK_STATUS(ela_tensor_write(v2, minus, sizeof minus), ELA_OK);
        CHECK_STATUS(ela_tensor_read(base, got, sizeof got), ELA_OK);
        int ok = 1;
        for (int a = 0; a < A; a++)
            for (int b = 0; b < B; b++)
                for (int c = 0; c < C; c++) {
                    int i = (a * B + b) * C + c;
                    int in = (a == 1 || a == 3) && b >= 1 && c >= 2 && c < 5;
                    float want = in ? -1.0f - (float)((((a - 1) / 2) * (B - 1) + b - 1) * 3 + c - 2)
                                    : (float)i;
                    ok &= got[i] == want;
                }
        CHECK(ok);
    }
    /* Views keep the memory alive after the base is freed. */
    ela_tensor_free(base);
    ela_tensor_free(v1);
    if (vt) {
        CHECK_STATUS(ela_tensor_read(vt, got, sizeof got), ELA_OK);
        CHECK(got[1] == (float)(B * C)); /* vt[0, 0, 1] = base[1, 0, 0] */
        CHECK_STATUS(ela_tensor_write(vt, idx, sizeof idx), ELA_OK);
    }
    ela_tensor_free(vt);
    ela_tensor_free(v2);
}

static void test_f32_transfers(ela_backend *be) {
    test_rng rng;
    test_rng_init(&rng, 91);
    enum { R = 5, CC = 13, W = 20 };
    float vals[R * CC], got[R * CC];
    for (int i = 0; i < R * CC; i++)
        vals[i] = (float)(test_rng_normal(&rng) * 10.0);
    vals[0] = 65536.0f; /* overflows f16 */
    vals[1] = 1.0f + 0x1p-11f;
    vals[2] = 0x1p-20f; /* f16 subnormal */
    for (int dt = 0; dt < ELA_DTYPE_COUNT; dt++) {
        size_t es = ela_dtype_size((ela_dtype)dt);
        if (ela_dtype_block((ela_dtype)dt) != 1)
            continue; /* block dtypes: test_q8_0_tensors */
        /* a [R, CC] view of a [R, W] tensor at column 3 */
        ela_tensor *base = NULL, *v = NULL;
        int64_t eb[2] = {R, W}, ev[2] = {R, CC}, sv[2] = {W * (int64_t)es, (int64_t)es};
        CHECK_STATUS(ela_tensor_new(be, (ela_dtype)dt, 2, eb, NULL, &base), ELA_OK);
        if (!base)
            continue;
        CHECK_STATUS(ela_tensor_view(base, 2, ev, sv, 3 * (int64_t)es, &v), ELA_OK);
        if (v) {
            CHECK_STATUS(ela_tensor_write_f32(v, vals, R * CC), ELA_OK);
            unsigned char raw[R * CC * 4], want_raw[R * CC * 4];
            CHECK_STATUS(ela_tensor_read(v, raw, R * CC * es), ELA_OK);
            CHECK_STATUS(ela_convert(vals, ELA_F32, want_raw, (ela_dtype)dt, R * CC), ELA_OK);
            CHECKF(memcmp(raw, want_raw, R * CC * es) == 0, "%s: write_f32 != convert + write",
                   ela_dtype_name((ela_dtype)dt));
            CHECK_STATUS(ela_tensor_read_f32(v, got, R * CC), ELA_OK);
            int ok = 1;
            for (int i = 0; i < R * CC; i++) {
                double want = dt == ELA_F32 ? vals[i]
                              : dt == ELA_F16 ? f16_value(ref_f16_bits(vals[i]))
                              : dt == ELA_BF16 ? bf16_value(ref_bf16_bits(vals[i]))
                              : dt == ELA_I32 ? nearbyint((double)vals[i])
                                              : fmin(255.0, fmax(0.0, nearbyint((double)vals[i])));
                ok &= (double)got[i] == want;
            }
            CHECKF(ok, "%s: read_f32 after write_f32", ela_dtype_name((ela_dtype)dt));
            CHECK(dt != ELA_F16 || isinf(got[0]));
        }
        ela_tensor_free(v);
        ela_tensor_free(base);
    }
}

/* ---- q8_0 ------------------------------------------------------------------------------------ */
/* ggml's quantize_row_q8_0_ref, written out: d = max|x| / 127 in f32, q = roundf(x * (1/d)),
 * the block stores d as f16. */
static void ref_q8_0_block(const float *x, unsigned char *blk) {
    float amax = 0.0f;
    for (int i = 0; i < 32; i++)
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = ref_f16_bits(d);
    blk[0] = (unsigned char)(h & 0xff);
    blk[1] = (unsigned char)(h >> 8);
    for (int i = 0; i < 32; i++)
        blk[2 + i] = (unsigned char)(int8_t)roundf(x[i] * id);
}

static float ref_q8_0_value(const unsigned char *blk, int i) {
    return (float)f16_value((uint16_t)(blk[0] | blk[1] << 8)) * (float)(int8_t)blk[2 + i];
}

static void test_q8_0_dtype(void) {
    CHECK(ela_dtype_block(ELA_Q8_0) == 32 && ela_dtype_block(ELA_F32) == 1 &&
          ela_dtype_block(ELA_U8) == 1 && ela_dtype_block(ELA_DTYPE_COUNT) == 0 &&
          ela_dtype_block((ela_dtype)-1) == 0);
    CHECK(ela_dtype_size(ELA_Q8_0) == 0);
    CHECK(ela_dtype_row_bytes(ELA_Q8_0, 64) == 68 && ela_dtype_row_bytes(ELA_Q8_0, 4096) == 4352);
    CHECK(ela_dtype_row_bytes(ELA_Q8_0, 33) == 0 && ela_dtype_row_bytes(ELA_Q8_0, -32) == 0);
    CHECK(ela_dtype_row_bytes(ELA_F16, 3) == 6 && ela_dtype_row_bytes(ELA_DTYPE_COUNT, 1) == 0);
    CHECK(ela_dtype_row_bytes(ELA_Q8_0, INT64_MAX / 32 * 32) == 0 ||
          ela_dtype_row_bytes(ELA_Q8_0, INT64_MAX / 32 * 32) == (size_t)(INT64_MAX / 32) * 34u);
    CHECK(strcmp(ela_dtype_name(ELA_Q8_0), "q8_0") == 0);
    ela_dtype out = ELA_F32;
    CHECK_STATUS(ela_dtype_parse("q8_0", &out), ELA_OK);
    CHECK(out == ELA_Q8_0);
}

static void test_q8_0_convert(void) {
    enum { NB = 64, N = NB * 32 };
    test_rng rng;
    test_rng_init(&rng, 95);
    float *x = malloc(N * sizeof *x), *back = malloc(N * sizeof *back);
    float *tmp = malloc(N * sizeof *tmp);
    unsigned char *q = malloc(NB * 34), *want = malloc(NB * 34), *q2 = malloc(NB * 34);
    uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
    if (!x || !back || !tmp || !q || !want || !q2 || !h || !h2) {
        CHECK(!"out of memory");
        goto done;
    }
    for (int b = 0; b < NB; b++) {
        double scale = ldexp(1.0, (int)(test_rng_u64(&rng) % 40) - 20); /* 2^-20 .. 2^19 */
        for (int i = 0; i < 32; i++)
            x[b * 32 + i] = (float)(test_rng_normal(&rng) * scale);
    }
    for (int i = 0; i < 32; i++) /* block 0 all zero; block 1 one nonzero */
        x[i] = 0.0f, x[32 + i] = i == 5 ? -3.0f : 0.0f;
    /* block 2: max 127 makes d = 1 exactly, so the +-(k + 0.5) values are ties: roundf goes away
     * from zero (0.5 -> 1, 2.5 -> 3, -2.5 -> -3; round-to-even would give 0, 2 and -2) */
    for (int i = 0; i < 32; i++)
        x[64 + i] = i == 0 ? 127.0f : (float)((i % 2 ? 1 : -1) * (i / 2 + 0.5));
    CHECK_STATUS(ela_convert(x, ELA_F32, q, ELA_Q8_0, N), ELA_OK);
    for (int b = 0; b < NB; b++)
        ref_q8_0_block(x + 32 * b, want + 34 * b);
    int bad = 0;
    for (int b = 0; b < NB; b++)
        if (memcmp(q + 34 * b, want + 34 * b, 34) != 0 && bad++ < 3)
            fprintf(stderr, "q8_0 block %d differs from ggml's reference\n", b);
    CHECKF(bad == 0, "f32 -> q8_0: %d of %d blocks differ", bad, NB);
    CHECK((int8_t)q[2 * 34 + 2 + 1] == 1 && (int8_t)q[2 * 34 + 2 + 5] == 3 &&
          (int8_t)q[2 * 34 + 2 + 4] == -3 && (int8_t)q[2 * 34 + 2 + 2] == -2);
    CHECK(q[0] == 0 && q[1] == 0 && (int8_t)q[34 + 2 + 5] == -127);
    /* q8_0 -> f32 is d * q exactly; -> f16 / bf16 is that value rounded */
    CHECK_STATUS(ela_convert(q, ELA_Q8_0, back, ELA_F32, N), ELA_OK);
    bad = 0;
    for (int i = 0; i < N; i++)
        bad += back[i] != ref_q8_0_value(q + 34 * (i / 32), i % 32);
    CHECKF(bad == 0, "q8_0 -> f32: %d values wrong", bad);
    for (int dt = ELA_F16; dt <= ELA_BF16; dt++) {
        CHECK_STATUS(ela_convert(q, ELA_Q8_0, h, (ela_dtype)dt, N), ELA_OK);
        CHECK_STATUS(ela_convert(back, ELA_F32, h2, (ela_dtype)dt, N), ELA_OK);
        CHECKF(memcmp(h, h2, N * 2) == 0, "q8_0 -> %s", ela_dtype_name((ela_dtype)dt));
        /* and back: dt -> q8_0 is dt -> f32 -> q8_0 */
        CHECK_STATUS(ela_convert(h, (ela_dtype)dt, q2, ELA_Q8_0, N), ELA_OK);
        CHECK_STATUS(ela_convert(h, (ela_dtype)dt, tmp, ELA_F32, N), ELA_OK);
        for (int b = 0; b < NB; b++)
            ref_q8_0_block(tmp + 32 * b, want + 34 * b);
        CHECKF(memcmp(q2, want, NB * 34) == 0, "%s -> q8_0", ela_dtype_name((ela_dtype)dt));
    }
    CHECK_STATUS(ela_convert(q, ELA_Q8_0, q2, ELA_Q8_0, N), ELA_OK);
    CHECK(memcmp(q, q2, NB * 34) == 0);
    /* A NaN element becomes 0 and leaves the rest of its block alone. */
    x[64 + 3] = NAN;
    CHECK_STATUS(ela_convert(x + 64, ELA_F32, q2, ELA_Q8_0, 32), ELA_OK);
    CHECK(q2[2 + 3] == 0 && memcmp(q2, q + 68, 2 + 3) == 0 && memcmp(q2 + 6, q + 68 + 6, 28) == 0);
    /* Whole blocks only. */
    CHECK_STATUS(ela_convert(x, ELA_F32, q2, ELA_Q8_0, 33), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "q8_0"));
    CHECK_STATUS(ela_convert(q, ELA_Q8_0, x, ELA_F32, 48), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_convert(NULL, ELA_F32, NULL, ELA_Q8_0, 0), ELA_OK);
done:
    free(x);
    free(back);
    free(tmp);
    free(q);
    free(want);
    free(q2);
    free(h);
    free(h2);
}

/* Blocks of a q8_0 tensor where its strides say (read back through a flat view of the span),
 * raw write/read with padded strides, gaps between blocks, views at block boundaries, f32
 * transfers, empty tensors and the errors of the block convention. */
static void test_q8_0_tensors(ela_backend *be) {
    test_rng rng;
    test_rng_init(&rng, 96);
    /* shape, strides (bytes; 0 = packed) */
    static const struct {
        int nd;
        int64_t ext[3], strides[3];
    } cases[] = {
        {1, {96}, {0}},
        {2, {3, 64}, {0}},
        {2, {3, 64}, {102, 34}},          /* one spare block per row */
        {2, {3, 64}, {6 * 34, 68}},       /* a gap after every block */
        {3, {2, 3, 96}, {0}},
        {3, {2, 3, 96}, {13 * 34, 3 * 34 + 34, 34}},
        {3, {2, 3, 32}, {34, 3 * 34 * 2, 2 * 34}}, /* outer dims transposed */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int nd = cases[c].nd;
        const int64_t *ext = cases[c].ext;
        int packed = cases[c].strides[0] == 0;
        int64_t numel = 1;
        for (int i = 0; i < nd; i++)
            numel *= ext[i];
        int64_t nblocks = numel / 32, st[3];
        size_t bytes = (size_t)nblocks * 34;
        unsigned char *data = malloc(bytes), *back = malloc(bytes), *raw = NULL;
        if (!data || !back) {
            CHECK(!"out of memory");
            free(data);
            free(back);
            continue;
        }
        random_bytes(&rng, data, bytes);
        ela_tensor *t = NULL, *flat = NULL;
        CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, nd, ext, packed ? NULL : cases[c].strides, &t),
                     ELA_OK);
        if (!t)
            goto next;
        int64_t s = 34;
        for (int i = nd - 1; i >= 0; i--) {
            st[i] = packed ? s : cases[c].strides[i];
            s *= i == nd - 1 ? ext[i] / 32 : ext[i];
        }
        check_shape(t, ELA_Q8_0, nd, ext, st);
        CHECK_STATUS(ela_tensor_write(t, data, bytes), ELA_OK);
        memset(back, 0, bytes);
        CHECK_STATUS(ela_tensor_read(t, back, bytes), ELA_OK);
        CHECKF(memcmp(data, back, bytes) == 0, "q8_0 case %zu: read != written", c);
        /* every block at its stride offset, seen through a flat [span / 34 * 32] view */
        int64_t span = 34;
        for (int i = 0; i < nd; i++)
            span += ((i == nd - 1 ? ext[i] / 32 : ext[i]) - 1) * st[i];
        int64_t flat_ext = span / 34 * 32;
        CHECK_STATUS(ela_tensor_view(t, 1, &flat_ext, NULL, 0, &flat), ELA_OK);
        raw = malloc((size_t)span);
        if (flat && raw) {
            CHECK_STATUS(ela_tensor_read(flat, raw, (size_t)span), ELA_OK);
            int ok = 1;
            int64_t bext[3];
            for (int i = 0; i < nd; i++)
                bext[i] = i == nd - 1 ? ext[i] / 32 : ext[i];
            for (int64_t b = 0; b < nblocks; b++)
                ok &= memcmp(raw + elem_offset(nd, bext, st, b), data + 34 * b, 34) == 0;
            CHECKF(ok, "q8_0 case %zu: blocks not at their strides", c);
        }
        /* f32 transfers quantize and dequantize like ela_convert */
        float *vals = malloc((size_t)numel * sizeof *vals);
        float *got = malloc((size_t)numel * sizeof *got);
        if (vals && got) {
            test_fill_normal(&rng, vals, numel, 3.0f);
            CHECK_STATUS(ela_tensor_write_f32(t, vals, numel), ELA_OK);
            CHECK_STATUS(ela_tensor_read(t, back, bytes), ELA_OK);
            CHECK_STATUS(ela_convert(vals, ELA_F32, data, ELA_Q8_0, numel), ELA_OK);
            CHECKF(memcmp(data, back, bytes) == 0, "q8_0 case %zu: write_f32 != convert + write",
                   c);
            CHECK_STATUS(ela_tensor_read_f32(t, got, numel), ELA_OK);
            int ok = 1;
            for (int64_t i = 0; i < numel; i++)
                ok &= got[i] == ref_q8_0_value(data + 34 * (i / 32), (int)(i % 32));
            CHECKF(ok, "q8_0 case %zu: read_f32", c);
            CHECK_STATUS(ela_tensor_read_f32(t, got, numel - 1), ELA_ERR_INVALID_ARG);
        }
        free(vals);
        free(got);
        CHECK_STATUS(ela_tensor_read(t, back, bytes - 1), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write(t, data, (size_t)numel), ELA_ERR_INVALID_ARG);
    next:
        free(raw);
        ela_tensor_free(flat);
        ela_tensor_free(t);
        free(data);
        free(back);
    }

    /* Views start on block boundaries: base [4, 128] (4 blocks per row, rows 136 bytes). */
    ela_tensor *base = NULL, *v = NULL;
    int64_t eb[2] = {4, 128}, ev[2] = {4, 64}, sv[2] = {136, 34};
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 2, eb, NULL, &base), ELA_OK);
    if (base) {
        unsigned char all[4 * 136], part[4 * 68];
        random_bytes(&rng, all, sizeof all);
        CHECK_STATUS(ela_tensor_write(base, all, sizeof all), ELA_OK);
        CHECK_STATUS(ela_tensor_view(base, 2, ev, sv, 2 * 34, &v), ELA_OK); /* blocks 2, 3 */
        if (v) {
            CHECK_STATUS(ela_tensor_read(v, part, sizeof part), ELA_OK);
            int ok = 1;
            for (int r = 0; r < 4; r++)
                ok &= memcmp(part + 68 * r, all + 136 * r + 68, 68) == 0;
            CHECK(ok);
        }
        ela_tensor_free(v);
        v = NULL;
        CHECK_STATUS(ela_tensor_view(base, 2, ev, sv, 17, &v), ELA_ERR_INVALID_ARG);
        CHECK(v == NULL && test_has_word(ela_last_error(), "offset") &&
              test_has_word(ela_last_error(), "block"));
        int64_t e48[2] = {4, 48};
        CHECK_STATUS(ela_tensor_view(base, 2, e48, sv, 0, &v), ELA_ERR_INVALID_ARG);
        CHECK(test_has_word(ela_last_error(), "q8_0"));
        int64_t e5[2] = {5, 64};
        /* past the end of the base */
        CHECK_STATUS(ela_tensor_view(base, 2, e5, sv, 0, &v), ELA_ERR_INVALID_ARG);
        int64_t s_bad[2] = {136, 4};
        CHECK_STATUS(ela_tensor_view(base, 2, ev, s_bad, 0, &v), ELA_ERR_INVALID_ARG);
    }
    ela_tensor_free(base);

    /* The block convention's errors. */
    ela_tensor *t = (ela_tensor *)1;
    int64_t e48[2] = {3, 48}, e64[2] = {3, 64};
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 2, e48, NULL, &t), ELA_ERR_INVALID_ARG);
    CHECK(t == NULL && test_has_word(ela_last_error(), "q8_0") &&
          test_has_word(ela_last_error(), "32"));
    int64_t s_notblock[2] = {100, 34}, s_inner[2] = {102, 32}, s_overlap[2] = {34, 34};
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 2, e64, s_notblock, &t), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "stride") && test_has_word(ela_last_error(), "34"));
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 2, e64, s_inner, &t), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 2, e64, s_overlap, &t), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "overlap"));
    /* Empty q8_0 tensors. */
    int64_t z0[2] = {0, 32}, z1[2] = {2, 0};
    for (int k = 0; k < 2; k++) {
        CHECK_STATUS(ela_tensor_new(be, ELA_Q8_0, 2, k ? z1 : z0, NULL, &t), ELA_OK);
        CHECK(ela_tensor_numel(t) == 0);
        CHECK_STATUS(ela_tensor_write(t, NULL, 0), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(t, NULL, 0), ELA_OK);
        ela_tensor_free(t);
    }
}

int main(void) {
    test_seed();
    test_convert_table();
    test_convert_exhaustive16();
    test_convert_f32_sweep();
    test_convert_lengths();
    test_q8_0_dtype();
    test_q8_0_convert();
    ela_backend *be = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be), ELA_OK);
    if (be) {
        test_tensor_packed_and_strided(be);
        test_views(be);
        test_f32_transfers(be);
        test_q8_0_tensors(be);
    }
    ela_backend_close(be);
    return test_summary("test_tensor");
}

/* Public dtype helpers: sizes, names, parsing and packed conversions between the float dtypes
 * (f32/f16/bf16), the index dtypes (i32 index lists, u8 block masks) and q8_0 blocks (GGUF
 * weights, quantized KV cache). */
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "error.h"

size_t ela_dtype_size(ela_dtype dtype) {
    switch (dtype) {
    case ELA_F32: return 4;
    case ELA_F16: return 2;
    case ELA_BF16: return 2;
    case ELA_I32: return 4;
    case ELA_U8: return 1;
    default: return 0; /* unknown, or a block dtype (q8_0) */
    }
}

int64_t ela_dtype_block(ela_dtype dtype) {
    if (dtype == ELA_Q8_0)
        return ELA_Q8_0_BLOCK;
    return ela_dtype_size(dtype) != 0 ? 1 : 0;
}

size_t ela_dtype_row_bytes(ela_dtype dtype, int64_t n) {
    int64_t block = ela_dtype_block(dtype);
    if (block == 0 || n < 0 || n % block != 0)
        return 0;
    size_t unit = dtype == ELA_Q8_0 ? ELA_Q8_0_BYTES : ela_dtype_size(dtype);
    uint64_t blocks = (uint64_t)(n / block);
    if (blocks > (uint64_t)SIZE_MAX / unit)
        return 0;
    return (size_t)blocks * unit;
}

const char *ela_dtype_name(ela_dtype dtype) {
    switch (dtype) {
    case ELA_F32: return "f32";
    case ELA_F16: return "f16";
    case ELA_BF16: return "bf16";
    case ELA_I32: return "i32";
    case ELA_U8: return "u8";
    case ELA_Q8_0: return "q8_0";
    default: return "?";
    }
}

ela_status ela_dtype_parse(const char *name, ela_dtype *out) {
    if (!name || !out)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_dtype_parse: NULL argument");
    for (int t = 0; t < ELA_DTYPE_COUNT; t++) {
        if (strcmp(name, ela_dtype_name((ela_dtype)t)) == 0) {
            *out = (ela_dtype)t;
            return ELA_OK;
        }
    }
    return ela_fail(ELA_ERR_INVALID_ARG,
                    "unknown dtype '%s' (expected f32, f16, bf16, i32, u8 or q8_0)", name);
}

static float load_as_f32(const void *src, ela_dtype dtype, int64_t i) {
    switch (dtype) {
    case ELA_F16: return ela_f16_to_f32(((const uint16_t *)src)[i]);
    case ELA_BF16: return ela_bf16_to_f32(((const uint16_t *)src)[i]);
    case ELA_I32: return (float)((const int32_t *)src)[i];
    case ELA_U8: return (float)((const uint8_t *)src)[i];
    default: return ((const float *)src)[i];
    }
}

/* Integer dtypes take x rounded to nearest (ties to even) and saturated; NaN becomes 0.
 * (2147483520 is the largest float below 2^31.) */
static float round_clamp(float x, float lo, float hi) {
    if (isnan(x))
        return 0.0f;
    x = nearbyintf(x);
    return x < lo ? lo : x > hi ? hi : x;
}

static void store_from_f32(void *dst, ela_dtype dtype, int64_t i, float x) {
    switch (dtype) {
    case ELA_F16: ((uint16_t *)dst)[i] = ela_f32_to_f16(x); break;
    case ELA_BF16: ((uint16_t *)dst)[i] = ela_f32_to_bf16(x); break;
    case ELA_I32: ((int32_t *)dst)[i] = (int32_t)round_clamp(x, -2147483648.0f, 2147483520.0f); break;
    case ELA_U8: ((uint8_t *)dst)[i] = (uint8_t)round_clamp(x, 0.0f, 255.0f); break;
    default: ((float *)dst)[i] = x; break;
    }
}

/* Conversions with q8_0 on one side go through one block of 32 floats at a time. */
static void convert_q8_0(const void *src, ela_dtype src_dtype, void *dst, ela_dtype dst_dtype,
                         int64_t n) {
    float buf[ELA_Q8_0_BLOCK];
    for (int64_t b = 0; b < n / ELA_Q8_0_BLOCK; b++) {
        int64_t e0 = b * ELA_Q8_0_BLOCK;
        if (src_dtype == ELA_Q8_0)
            ela_q8_0_dequantize_block((const uint8_t *)src + b * ELA_Q8_0_BYTES, buf);
        else
            for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
                buf[i] = load_as_f32(src, src_dtype, e0 + i);
        if (dst_dtype == ELA_Q8_0)
            ela_q8_0_quantize_block(buf, (uint8_t *)dst + b * ELA_Q8_0_BYTES);
        else
            for (int i = 0; i < ELA_Q8_0_BLOCK; i++)
                store_from_f32(dst, dst_dtype, e0 + i, buf[i]);
    }
}

ela_status ela_convert(const void *src, ela_dtype src_dtype, void *dst, ela_dtype dst_dtype,
                       int64_t n) {
    if (n < 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_convert: negative count %lld", (long long)n);
    if (n > 0 && (!src || !dst))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_convert: NULL %s", src ? "dst" : "src");
    if (ela_dtype_block(src_dtype) == 0 || ela_dtype_block(dst_dtype) == 0)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_convert: unknown dtype %d",
                        ela_dtype_block(src_dtype) == 0 ? (int)src_dtype : (int)dst_dtype);
    if (src_dtype == ELA_Q8_0 || dst_dtype == ELA_Q8_0) {
        if (n % ELA_Q8_0_BLOCK != 0)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_convert: %lld elements is not a whole number of q8_0 blocks of %d",
                            (long long)n, ELA_Q8_0_BLOCK);
        if (src_dtype == dst_dtype && n > 0)
            memmove(dst, src, ela_dtype_row_bytes(src_dtype, n));
        else if (src_dtype != dst_dtype)
            convert_q8_0(src, src_dtype, dst, dst_dtype, n);
        return ELA_OK;
    }
    if (n == 0)
        return ELA_OK;
    if (src_dtype == dst_dtype) {
        memmove(dst, src, (size_t)n * ela_dtype_size(src_dtype));
        return ELA_OK;
    }
    for (int64_t i = 0; i < n; i++)
        store_from_f32(dst, dst_dtype, i, load_as_f32(src, src_dtype, i));
    return ELA_OK;
}

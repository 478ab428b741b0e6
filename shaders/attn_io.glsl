// Shared by the attention shaders: the six storage-buffer bindings of the Vulkan backend's
// descriptor set layout, the push constants (backends/vulkan/vk_attn_dense.c fills the same
// struct), dtype codes, and element loads/stores of f32/f16/bf16 tensors by element index
// within their binding. With ELA_STORAGE16 (storageBuffer16BitAccess) 16-bit elements are read
// and written directly; without it they are unpacked from 32-bit words and written with two
// atomics on their word, so a neighbour outside the tensor (or another lane's element) is
// never touched.

#define DT_F32 0u
#define DT_F16 1u
#define DT_BF16 2u

layout(constant_id = 4) const uint QT = 0u; // dtype of q
layout(constant_id = 5) const uint KT = 0u; // dtype of k and v
layout(constant_id = 6) const uint OT = 0u; // dtype of o

// Element offsets (`*_off`) and strides are in elements of the tensor's dtype, relative to the
// start of its binding; q, o are [L, Hq, d], k, v are [Hkv, n, d], lse is [L, Hq].
layout(push_constant) uniform Push {
    uint q_off, q_s0, q_s1;
    uint k_off, k_s0, k_s1;
    uint v_off, v_s0, v_s1;
    uint o_off, o_s0, o_s1;
    uint lse_off, lse_s0, lse_s1;
    uint rows;        // L * G: rows of one KV head, row r = i * G + (h - g * G)
    uint G;           // query heads per KV head
    uint n;           // keys
    uint q_pos0;      // position of query 0, clamped to n; n when not causal (all keys visible)
    uint split_keys;  // keys per split (a multiple of the key tile)
    uint splits;      // key splits; > 1: partials in binding 5, merged by attn_dense_merge
    uint has_lse;
    uint part_off;    // float offset of the partials in binding 5
    uint base;        // first row tile (attn_dense) or row (merge) of this dispatch
    uint kv_vec4;     // 1: every k and v row starts at an element index that is a multiple of 4
                      // and d % 4 == 0: 4 columns load as one vector (uvec4 or uvec2)
    float scale_log2e;
#ifdef ELA_PUSH_EXTRA
    ELA_PUSH_EXTRA // a shader's own fields after the shared ones (128 bytes in all)
#endif
} pc;

layout(std430, binding = 0) readonly buffer QW { uint q_w[]; };
layout(std430, binding = 1) readonly buffer KW { uint k_w[]; };
layout(std430, binding = 2) readonly buffer VW { uint v_w[]; };
layout(std430, binding = 3) buffer OW { uint o_w[]; };
layout(std430, binding = 4) writeonly buffer LSE { float lse_f[]; };
layout(std430, binding = 5) buffer PART { float part[]; };
// The same k and v as 4 f32 (uvec4) or 4 16-bit elements (uvec2) per entry.
layout(std430, binding = 1) readonly buffer KW4 { uvec4 k_w4[]; };
layout(std430, binding = 2) readonly buffer VW4 { uvec4 v_w4[]; };
layout(std430, binding = 1) readonly buffer KW2 { uvec2 k_w2[]; };
layout(std430, binding = 2) readonly buffer VW2 { uvec2 v_w2[]; };
#ifdef ELA_STORAGE16
layout(std430, binding = 0) readonly buffer QH { float16_t q_h[]; };
layout(std430, binding = 0) readonly buffer QB { uint16_t q_b[]; };
layout(std430, binding = 1) readonly buffer KH { float16_t k_h[]; };
layout(std430, binding = 1) readonly buffer KB { uint16_t k_b[]; };
layout(std430, binding = 2) readonly buffer VH { float16_t v_h[]; };
layout(std430, binding = 2) readonly buffer VB { uint16_t v_b[]; };
layout(std430, binding = 3) writeonly buffer OH { float16_t o_h[]; };
layout(std430, binding = 3) writeonly buffer OB { uint16_t o_b[]; };
#endif

float bf16_to_f32(uint bits) { return uintBitsToFloat(bits << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
uint f32_to_bf16(float x) {
    uint u = floatBitsToUint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// The 16-bit element e of a little-endian word array.
uint half_of(uint word, uint e) { return (e & 1u) != 0u ? word >> 16 : word & 0xffffu; }

float from16(uint bits, uint dt) {
    return dt == DT_F16 ? unpackHalf2x16(bits).x : bf16_to_f32(bits);
}

float load_q(uint e) {
    if (QT == DT_F32)
        return uintBitsToFloat(q_w[e]);
#ifdef ELA_STORAGE16
    return QT == DT_F16 ? float(q_h[e]) : bf16_to_f32(uint(q_b[e]));
#else
    return from16(half_of(q_w[e >> 1], e), QT);
#endif
}

float load_k(uint e) {
    if (KT == DT_F32)
        return uintBitsToFloat(k_w[e]);
#ifdef ELA_STORAGE16
    return KT == DT_F16 ? float(k_h[e]) : bf16_to_f32(uint(k_b[e]));
#else
    return from16(half_of(k_w[e >> 1], e), KT);
#endif
}

float load_v(uint e) {
    if (KT == DT_F32)
        return uintBitsToFloat(v_w[e]);
#ifdef ELA_STORAGE16
    return KT == DT_F16 ? float(v_h[e]) : bf16_to_f32(uint(v_b[e]));
#else
    return from16(half_of(v_w[e >> 1], e), KT);
#endif
}

vec4 from16x4(uvec2 w, uint dt) {
    if (dt == DT_F16)
        return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
    return uintBitsToFloat(uvec4(w.x << 16, w.x & 0xffff0000u, w.y << 16, w.y & 0xffff0000u));
}

// Elements e .. e + 3 of k / v, e a multiple of 4 (pc.kv_vec4).
vec4 load_k4(uint e) {
    return KT == DT_F32 ? uintBitsToFloat(k_w4[e >> 2]) : from16x4(k_w2[e >> 2], KT);
}

vec4 load_v4(uint e) {
    return KT == DT_F32 ? uintBitsToFloat(v_w4[e >> 2]) : from16x4(v_w2[e >> 2], KT);
}

void store_o(uint e, float x) {
    if (OT == DT_F32) {
        o_w[e] = floatBitsToUint(x);
        return;
    }
#ifdef ELA_STORAGE16
    if (OT == DT_F16)
        o_h[e] = float16_t(x);
    else
        o_b[e] = uint16_t(f32_to_bf16(x));
#else
    uint bits = OT == DT_F16 ? packHalf2x16(vec2(x, 0.0)) & 0xffffu : f32_to_bf16(x);
    uint shift = (e & 1u) * 16u;
    // Only this invocation writes these 16 bits: clearing then setting them is race-free
    // even while another invocation does the same to the other half of the word.
    atomicAnd(o_w[e >> 1], ~(0xffffu << shift));
    atomicOr(o_w[e >> 1], bits << shift);
#endif
}

// Scores and maxima live in the exp2 domain (q pre-scaled by scale * log2 e); a row's LSE in
// natural log is (m + log2 l) * ln 2.
const float LN2 = 0.6931471805599453;
const float LOG2E = 1.4426950408889634;
// Running max before any key: finite, so exp2(NEG_BIG - m) is 0 without inf - inf.
const float NEG_BIG = -3.0e38;

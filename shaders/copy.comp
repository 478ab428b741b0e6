#version 450
// copy (ela.h "Model ops") on Vulkan: dst = src converted between f32/f16/bf16/q8_0, equal
// extents, any rank (up to 3 outer dims) and strides, innermost packed: how the runtime appends
// keys and values to a KV cache view. Bytes equal the CPU's ela_convert: f16/bf16 rounding,
// f16 widening and the q8_0 quantizer (d = max|x| / 127 and 1 / d correctly rounded, roundf,
// f16 scale) are done in integer arithmetic where the built-ins may differ (model_io.glsl).
//
// Work units, grid-stride over rows x units: the same dtype copies raw bytes, a destination
// word per unit (copy_io.glsl); an f32 destination takes one element per unit; an f16/bf16 one
// a word (two elements; the row's end words only partly); q8_0 a 34-byte block (its 32 values
// quantized by one invocation). Bound: memory.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ST = 0u; // source dtype (MT_*)
layout(constant_id = 2) const uint DT = 0u; // destination dtype

#include "model_io.glsl"
#include "copy_io.glsl"

layout(push_constant) uniform Push {
    uint s_off, d_off;                  // bytes: element [0, ...] in bindings 0 and 3
    uint inner, e1, e2;                 // innermost extent, outer extents 1 and 2
    uint ss0, ss1, ss2, ds0, ds1, ds2;  // bytes; row r = (i0 e1 + i1) e2 + i2
    uint units;                         // work units per row
    uint total;                         // rows * units
} pc;

uint row_bytes(uint dt) {
    return dt == MT_Q8_0 ? pc.inner / 32u * 34u : pc.inner * (dt == MT_F32 ? 4u : 2u);
}

// Element k of the source row starting at byte sb, as f32 (exactly the CPU's value).
float s_val(uint sb, uint k) {
    if (ST == MT_F32)
        return uintBitsToFloat(s_u[(sb >> 2) + k]);
    if (ST == MT_Q8_0) {
        const uint blk = sb + (k >> 5) * 34u;
        const int q = int(s_bytes(blk + 2u + (k & 31u), 1u) << 24) >> 24;
        return f16_to_f32(s_bytes(blk, 2u)) * float(q);
    }
    const uint h = s_bytes(sb + 2u * k, 2u);
    return ST == MT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Block u of the source row at sb quantized into the 34 bytes at destination byte db.
void store_q8_0(uint sb, uint u, uint db) {
    float v[32];
    float amax = 0.0;
    for (uint j = 0u; j < 32u; j++) {
        v[j] = s_val(sb, 32u * u + j);
        const float a = abs(v[j]);
        amax = a > amax ? a : amax; // a NaN never wins, as in the CPU's loop
    }
    float d = 0.0;
    if (isinf(amax))
        d = amax;
    else if (amax >= 1.0e-35) // the quotient is a normal float: correctly rounded
        d = div_rn(amax, 127.0);
    else if (amax > 0.0)
        d = amax / 127.0;
    const float id = d == 0.0 || isinf(d) ? 0.0 : div_rn(1.0, d);
    uint qw[8];
    for (uint j = 0u; j < 8u; j++)
        qw[j] = 0u;
    for (uint j = 0u; j < 32u; j++) {
        const float r = round_away(v[j] * id);
        const float c = isnan(r) ? 0.0 : clamp(r, -127.0, 127.0);
        qw[j >> 2] |= (uint(int(c)) & 0xffu) << (8u * (j & 3u));
    }
    const uint scale = f32_to_f16(d);
    for (uint w = db >> 2; w <= (db + 33u) >> 2; w++) {
        uint bits = 0u, mask = 0u;
        for (uint b = 0u; b < 4u; b++) {
            const uint p = 4u * w + b;
            if (p < db || p >= db + 34u)
                continue;
            const uint j = p - db;
            const uint byte_ = j < 2u ? (scale >> (8u * j)) & 0xffu
                                      : (qw[(j - 2u) >> 2] >> (8u * ((j - 2u) & 3u))) & 0xffu;
            bits |= byte_ << (8u * b);
            mask |= 0xffu << (8u * b);
        }
        d_store(w, bits, mask);
    }
}

void main() {
    const uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.total; e += step) {
        const uint r = e / pc.units, u = e - r * pc.units;
        const uint i2 = r % pc.e2, r1 = r / pc.e2, i1 = r1 % pc.e1, i0 = r1 / pc.e1;
        const uint sb = pc.s_off + i0 * pc.ss0 + i1 * pc.ss1 + i2 * pc.ss2;
        const uint db = pc.d_off + i0 * pc.ds0 + i1 * pc.ds1 + i2 * pc.ds2;
        if (ST == DT) {
            copy_word((db >> 2) + u, db, row_bytes(DT), sb);
        } else if (DT == MT_F32) {
            d_u[(db >> 2) + u] = floatBitsToUint(s_val(sb, u));
        } else if (DT == MT_Q8_0) {
            store_q8_0(sb, u, db + 34u * u);
        } else { // f16 / bf16: destination word w holds elements k0 and k0 + 1 (db is even)
            const uint w = (db >> 2) + u;
            const int k0 = (int(4u * w) - int(db)) / 2;
            uint bits = 0u, mask = 0u;
            for (int j = 0; j < 2; j++) {
                const int k = k0 + j;
                if (k < 0 || k >= int(pc.inner))
                    continue;
                const float x = s_val(sb, uint(k));
                bits |= (DT == MT_F16 ? f32_to_f16(x) : f32_to_bf16(x)) << (16 * j);
                mask |= 0xffffu << (16 * j);
            }
            if (mask != 0u)
                d_store(w, bits, mask);
        }
    }
}

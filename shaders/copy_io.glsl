// Shared by copy.comp and token_compress.comp: a source bound as words and read by byte offset,
// and a destination written a word at a time, where a word only partly inside the destination
// (a row starting or ending mid-word, a q8_0 block's ends) is updated with atomics on just its
// own bytes, so neighbours written by other invocations, or outside the tensor, stay intact.

layout(std430, binding = 0) readonly buffer SU { uint s_u[]; };
layout(std430, binding = 3) buffer DU { uint d_u[]; };

// n (1..4) bytes at byte offset p of the source, little-endian in the low bits; reads only the
// words holding them.
uint s_bytes(uint p, uint n) {
    const uint sh = (p & 3u) * 8u;
    uint v = s_u[p >> 2] >> sh;
    if ((p & 3u) + n > 4u)
        v |= s_u[(p >> 2) + 1u] << (32u - sh);
    return n >= 4u ? v : v & ((1u << (8u * n)) - 1u);
}

// The bytes of word w of the destination selected by mask become those of bits.
void d_store(uint w, uint bits, uint mask) {
    if (mask == 0xffffffffu) {
        d_u[w] = bits;
        return;
    }
    atomicAnd(d_u[w], ~mask);
    atomicOr(d_u[w], bits & mask);
}

// Copies the bytes of destination word w that fall in [db, db + nb) from the source bytes at
// sb + (the same offset): one unit of a raw row copy.
void copy_word(uint w, uint db, uint nb, uint sb) {
    const uint lo = max(db, 4u * w), hi = min(db + nb, 4u * w + 4u);
    if (lo >= hi)
        return;
    const uint bits = s_bytes(sb + (lo - db), hi - lo) << (8u * (lo - 4u * w));
    d_store(w, bits, byte_mask(lo - 4u * w, hi - 4u * w));
}

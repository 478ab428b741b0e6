// A logit as ordered bits for LessIsMore's selection (decode_select*.comp and the LOGITS mode of
// attn_dense_decode.comp): a larger uint is a larger float; NaN ranks as -inf, -0 as +0.
uint ord_of(float x) {
    uint b = floatBitsToUint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u)
        b = 0xff800000u; // NaN -> -inf
    if (b == 0x80000000u)
        b = 0u; // -0 -> +0
    return (b & 0x80000000u) != 0u ? ~b : b | 0x80000000u;
}


// The work list of attn_blocks.comp and attn_blocks_merge.comp, as backends/vulkan/vk_attn_blocks.c
// lays it out at the start of binding 5 (words): a header, the class table (8 words per class:
// KV head, head count, kind, sink blocks, local blocks, mask index, first head), the heads of
// every class in order, the items (8 words: class, query block, first row, key blocks
// [jb0, jb1), partial slot or NO_SLOT), the merge entries (8 words: class, query block, first
// row, first slot, pieces) and a word-aligned copy of the u8 block masks.
layout(std430, binding = 5) buffer PARTU { uint part_u[]; };

#define BLOCK 128u
#define NO_SLOT 0xffffffffu
// header words
#define HDR_L 0u        // query rows
#define HDR_QB0 1u      // absolute query block of row 0 (q_pos0 / 128)
#define HDR_NKB 2u      // key blocks
#define HDR_CLASSES 3u  // word offset of the class table
#define HDR_HEADS 4u    // word offset of the heads
#define HDR_ITEMS 5u    // word offset of the items
#define HDR_MERGES 6u   // word offset of the merge entries
#define HDR_MASK 7u     // byte offset of masks[0, 0, 0] in the binding
#define HDR_MASK_S0 8u  // byte strides of the masks
#define HDR_MASK_S1 9u

#define KIND_DENSE 0u
#define KIND_STREAMING 1u
#define KIND_MASK 2u

struct BlockClass {
    uint g, gc, kind, sink, local, mask, head0;
};

struct BlockItem {
    uint cls, qb, row0, jb0, jb1, slot;
};

BlockClass load_class(uint c) {
    const uint e = part_u[HDR_CLASSES] + 8u * c;
    return BlockClass(part_u[e], part_u[e + 1u], part_u[e + 2u], part_u[e + 3u], part_u[e + 4u],
                      part_u[e + 5u], part_u[e + 6u]);
}

BlockItem load_item(uint x) {
    const uint e = part_u[HDR_ITEMS] + 8u * x;
    return BlockItem(part_u[e], part_u[e + 1u], part_u[e + 2u], part_u[e + 3u], part_u[e + 4u],
                     part_u[e + 5u]);
}

// Key block J (<= M) is visited by absolute query block M (relative qb) under the class's mode.
bool block_allowed(BlockClass cl, uint M, uint qb, uint J) {
    if (cl.kind == KIND_STREAMING)
        return J < cl.sink || J + cl.local > M;
    if (cl.kind == KIND_MASK) {
        if (J == M)
            return true;
        const uint b = part_u[HDR_MASK] + cl.mask * part_u[HDR_MASK_S0] + qb * part_u[HDR_MASK_S1] + J;
        return ((part_u[b >> 2] >> ((b & 3u) * 8u)) & 0xffu) != 0u;
    }
    return true;
}

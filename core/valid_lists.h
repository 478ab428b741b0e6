/* Index lists known valid without looking at them (DESIGN.md 4.8). attn_gather refuses lists
 * with a key outside [0, n) or a key twice; on a GPU, looking means reading the lists back, a
 * stall of the whole queue on every sparse decode layer. decode_select (fused or not) writes
 * lists that are valid by construction, so it records them on their buffer; every host write
 * into the buffer and every op that takes a tensor over the recorded bytes (op_check_tensor sees
 * each tensor of each op) forgets the record. One record per buffer: the latest. */
#ifndef ELA_CORE_VALID_LISTS_H
#define ELA_CORE_VALID_LISTS_H

#include <stdint.h>

#include "core/tensor.h"

/* idx's first `count` i32 entries are distinct keys in [0, n). idx is packed in its last dim. */
void valid_lists_record(const ela_tensor *idx, int64_t count, int64_t n);

/* Forgets the record of t's buffer when t's bytes overlap it (t may be NULL). */
void valid_lists_forget(const ela_tensor *t);

/* Whether the 1-D list idx of m entries, read as keys of an n-key tensor, lies inside what
 * `known` (a copy of idx's buffer record) vouches for: same start, m <= count, n >= known n. */
int valid_lists_cover(const ela_valid_lists *known, const ela_tensor *idx, int64_t m, int64_t n);

#endif

/* One key tile of the CPU attention drivers. A tile that crosses the diagonal goes in chunks of
 * DIAG_ROWS rows, each over the keys its last row sees, so groups of many rows (which convert
 * each K/V tile to f32 once for more rows) compute no more of the masked triangle than small
 * ones: at n = 32K, Hq 8, Hkv 2, 1 thread AVX-512, 256-row groups with chunks ran
 * attn_blocks in 1.45 s against 1.68 s with 64-row groups. */
#include <math.h>

#include "attn_tile.h"

#define DIAG_ROWS 16

/* Rows [r0, r0 + rc) over the first nk keys of the tile. */
static void run_rows(const cpu_attn_kernels *kern, const cpu_attn_tile *t, int64_t j0, int64_t r0,
                     int64_t rc, int64_t nk, int causal) {
    float *S = t->S + r0 * CPU_ATTN_BK;
    kern->qk(S, t->Q + r0 * t->dp, t->K, rc, nk, t->dp);
    if (causal && j0 + nk - 1 > t->pos[r0])
        for (int64_t r = 0; r < rc; r++) {
            int64_t first_hidden = t->pos[r0 + r] + 1 - j0;
            for (int64_t j = first_hidden < 0 ? 0 : first_hidden; j < nk; j++)
                S[r * CPU_ATTN_BK + j] = -INFINITY;
        }
    kern->softmax(S, t->m + r0, t->l + r0, t->alpha + r0, rc, nk);
    kern->pv(t->O + r0 * t->dp, S, t->V, t->alpha + r0, rc, nk, t->dp);
}

void cpu_attn_tile_run(const cpu_attn_kernels *kern, const cpu_attn_tile *t, int64_t j0,
                       int64_t nk, int causal) {
    if (!causal || t->R == 0 || j0 + nk - 1 <= t->pos[0]) { /* every row sees every key */
        run_rows(kern, t, j0, 0, t->R, nk, 0);
        return;
    }
    /* A chunk that sees no key of the tile keeps its m, l and O, as masked keys would. */
    for (int64_t r0 = 0; r0 < t->R; r0 += DIAG_ROWS) {
        int64_t rc = t->R - r0 < DIAG_ROWS ? t->R - r0 : DIAG_ROWS;
        int64_t nkc = t->pos[r0 + rc - 1] + 1 - j0;
        nkc = nkc < nk ? nkc : nk;
        if (nkc > 0)
            run_rows(kern, t, j0, r0, rc, nkc, 1);
    }
}

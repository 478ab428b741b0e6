/* Running a policy for one layer (include/ela.h "Policies"): composes the sparse ops of
 * core/ops into the prefill methods (dense, XAttention, streaming, Elastic's three hybrids,
 * Token Sparse Attention) and the decode methods (dense, LessIsMore, NSA, streaming), and
 * reports what each did. Composition lives here, never in a backend's kernels. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/backend_iface.h"
#include "core/error.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Dense causal (query, key) pairs of rows at positions [p0, p0 + L). */
static double causal_pairs(int64_t p0, int64_t L) {
    return (double)L * (double)p0 + (double)L * (double)(L + 1) / 2.0;
}

/* Pairs of the diagonal key block M that rows [r0, r1) of query block M see: row t sees keys
 * [128 M, min(t + 1, e)) with e = min(n, 128 M + 128). */
static double diagonal_pairs(int64_t M, int64_t r0, int64_t r1, int64_t n) {
    int64_t s = M * ELA_BLOCK, e = n < s + ELA_BLOCK ? n : s + ELA_BLOCK;
    if (e <= s)
        return 0.0;
    int64_t mid = r1 < e ? r1 : e; /* rows [r0, mid) see t + 1 - s keys, the rest e - s */
    double pairs = 0.0;
    if (mid > r0)
        pairs += ((double)(r0 + 1 - s) + (double)(mid - s)) * (double)(mid - r0) / 2.0;
    if (r1 > mid && r1 > r0)
        pairs += (double)(r1 - (mid > r0 ? mid : r0)) * (double)(e - s);
    return pairs;
}

/* Nonzero bytes among p[0, n), eight at a time: a byte's top bit is set in
 * ((w & 0x7f..) + 0x7f..) | w exactly when the byte is nonzero. */
static int64_t nonzero_bytes(const uint8_t *p, int64_t n) {
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7full, top = 0x8080808080808080ull;
    int64_t count = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        count += __builtin_popcountll((((w & low7) + low7) | w) & top);
    }
    for (; i < n; i++)
        count += p[i] != 0;
    return count;
}

/* Sparsity and block counts of a block-mode plan (modes per query head, masks read back). Per
 * (head, query block) it counts the kept key blocks before the diagonal (each seen whole by
 * every row; only the last key block can be short) and adds the diagonal's triangle, so the
 * cost is one pass over the mask rows (O(heads * nqb * nkb) byte tests), not over rows. */
static void block_stats(const ela_head_mode *modes, int hq, const uint8_t *masks, int64_t nqb,
                        int64_t nkb, int64_t q_pos0, int64_t L, int64_t n,
                        ela_prefill_report *r) {
    double kept_pairs = 0.0;
    int64_t kept_blocks = 0, causal_blocks = 0;
    int64_t qb0 = q_pos0 / ELA_BLOCK, last = nkb - 1;
    int64_t last_keys = n - last * ELA_BLOCK; /* keys of the last key block, 1..128 */
    for (int64_t qb = 0; qb < nqb; qb++) {
        int64_t M = qb0 + qb;
        int64_t r0 = M * ELA_BLOCK > q_pos0 ? M * ELA_BLOCK : q_pos0;
        int64_t r1 = (M + 1) * ELA_BLOCK < q_pos0 + L ? (M + 1) * ELA_BLOCK : q_pos0 + L;
        int64_t lim = M < nkb ? M : nkb; /* key blocks strictly before the diagonal */
        int diag = M < nkb;
        double diag_pairs = diagonal_pairs(M, r0, r1, n), rows = (double)(r1 - r0);
        for (int h = 0; h < hq; h++) {
            const ela_head_mode *m = &modes[h];
            int64_t kept = 0; /* kept blocks J < lim */
            int last_kept = 0; /* the short last key block is among them */
            if (m->kind == ELA_HEAD_DENSE) {
                kept = lim;
                last_kept = last < lim;
            } else if (m->kind == ELA_HEAD_STREAMING) {
                /* J < sink_blocks or J > M - local_blocks, inside [0, lim) */
                int64_t a = m->sink_blocks < lim ? m->sink_blocks : lim;
                int64_t b = M - m->local_blocks + 1; /* first local block */
                b = b < a ? a : b;
                kept = a + (lim > b ? lim - b : 0);
                last_kept = last < lim && (last < m->sink_blocks || last >= b);
            } else {
                const uint8_t *row = masks + ((int64_t)m->mask * nqb + qb) * nkb;
                kept = nonzero_bytes(row, lim);
                last_kept = last < lim && row[last] != 0;
            }
            causal_blocks += lim + diag;
            kept_blocks += kept + diag;
            double keys = (double)kept * ELA_BLOCK - (last_kept ? ELA_BLOCK - last_keys : 0);
            kept_pairs += rows * keys + (diag ? diag_pairs : 0.0);
        }
    }
    r->kept_blocks = kept_blocks;
    r->causal_blocks = causal_blocks;
    r->sparsity = 1.0 - kept_pairs / (causal_pairs(q_pos0, L) * hq);
}

/* KV head g is "full" in the fraction policy when it is one of round(f * hkv) heads spread
 * evenly: g * k / hkv crosses an integer. */
static int fraction_full(int g, int hkv, float f) {
    int k = (int)lrintf(f * (float)hkv);
    return (int64_t)(g + 1) * k / hkv != (int64_t)g * k / hkv;
}

/* Block-mode policies: xattn, streaming, elastic. */
static ela_status run_blocks(ela_backend *be, const ela_prefill_policy *pol, const ela_tensor *q,
                             const ela_tensor *k, const ela_tensor *v, ela_tensor *o,
                             const ela_tensor *k_pre, const ela_router_weights *router,
                             const ela_attn_params *params, ela_prefill_report *r) {
    int64_t L = ela_tensor_extent(q, 0), n = ela_tensor_extent(k, 1);
    int hq = (int)ela_tensor_extent(q, 1), hkv = (int)ela_tensor_extent(k, 0);
    if (hkv < 1 || hq < 1 || hq % hkv != 0 || hq > (1 << 20))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_prefill_attention: q has %d heads, k %d", hq,
                        hkv);
    int G = hq / hkv;
    ela_status st = ELA_OK;
    double t0 = now_ms();
    int *full = ela_calloc((size_t)hkv, sizeof *full);
    int *mask_heads = ela_calloc((size_t)hq, sizeof *mask_heads);
    ela_head_mode *modes = ela_calloc((size_t)hq, sizeof *modes);
    uint8_t *host_masks = NULL;
    ela_tensor *masks = NULL;
    if (!full || !mask_heads || !modes) {
        st = ela_fail(ELA_ERR_OOM, "ela_prefill_attention: out of host memory");
        goto done;
    }
    if (pol->kind == ELA_PREFILL_ELASTIC) {
        if (router)
            st = ela_router_eval(be, k_pre ? k_pre : k, router, full, NULL);
        else
            for (int g = 0; g < hkv; g++)
                full[g] = fraction_full(g, hkv, pol->full_fraction);
        if (st != ELA_OK)
            goto done;
    }
    int n_mask = 0;
    int sink_blocks = (int)ceil_div(pol->sink, ELA_BLOCK);
    int local_blocks = (int)ceil_div(pol->local, ELA_BLOCK);
    for (int h = 0; h < hq; h++) {
        ela_head_kind kind = pol->kind == ELA_PREFILL_XATTN       ? ELA_HEAD_MASK
                             : pol->kind == ELA_PREFILL_STREAMING ? ELA_HEAD_STREAMING
                             : full[h / G]                        ? pol->full_mode
                                                                  : pol->sparse_mode;
        modes[h].kind = kind;
        modes[h].sink_blocks = sink_blocks;
        modes[h].local_blocks = local_blocks;
        if (kind == ELA_HEAD_MASK) {
            modes[h].mask = n_mask;
            mask_heads[n_mask++] = h;
        }
        if (h < ELA_REPORT_MAX_HEADS)
            r->head_mode[h] = (uint8_t)kind;
    }
    for (int g = 0; g < hkv; g++)
        r->full_kv_heads += full[g] != 0;
    int64_t q_pos0 = params->q_pos0;
    int64_t nqb = ceil_div(q_pos0 + L, ELA_BLOCK) - q_pos0 / ELA_BLOCK, nkb = ceil_div(n, ELA_BLOCK);
    if (n_mask > 0) {
        int64_t shape[3] = {n_mask, nqb, nkb};
        if ((st = ela_tensor_new(be, ELA_U8, 3, shape, NULL, &masks)) != ELA_OK ||
            (st = ela_xattn_estimate(be, q, k, mask_heads, n_mask, &pol->xattn, params, masks,
                                     NULL)) != ELA_OK)
            goto done;
        size_t bytes = (size_t)(n_mask * nqb * nkb);
        host_masks = ela_calloc(bytes, 1);
        if (!host_masks) {
            st = ela_fail(ELA_ERR_OOM, "ela_prefill_attention: out of host memory for masks");
            goto done;
        }
        if ((st = ela_tensor_read(masks, host_masks, bytes)) != ELA_OK)
            goto done;
    }
    double t1 = now_ms();
    st = ela_attn_blocks(be, q, k, v, o, NULL, modes, masks, params);
    if (st == ELA_OK)
        st = ela_backend_synchronize(be);
    double t2 = now_ms();
    r->select_ms = t1 - t0;
    r->attend_ms = t2 - t1;
    if (st == ELA_OK)
        block_stats(modes, hq, host_masks, nqb, nkb, q_pos0, L, n, r);
done:
    ela_free(host_masks);
    ela_tensor_free(masks);
    ela_free(modes);
    ela_free(mask_heads);
    ela_free(full);
    return st;
}

/* TSA selects over a whole prompt: no chunked prefill. */
static ela_status check_whole_prompt(const ela_tensor *q, const ela_tensor *k,
                                     const ela_attn_params *params) {
    if (params->q_pos0 != 0 || ela_tensor_extent(k, 1) != ela_tensor_extent(q, 0))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_prefill_attention: tsa selects over a whole "
                        "prompt (q_pos0 = 0 and n = L); chunked prefill is not supported");
    return ELA_OK;
}

static ela_status run_tsa(ela_backend *be, const ela_prefill_policy *pol, const ela_tensor *q,
                          const ela_tensor *k, const ela_tensor *v, ela_tensor *o,
                          const ela_attn_params *params, ela_prefill_report *r) {
    int64_t L = ela_tensor_extent(q, 0);
    int hq = (int)ela_tensor_extent(q, 1);
    ela_status st = check_whole_prompt(q, k, params);
    if (st != ELA_OK)
        return st;
    double t0 = now_ms();
    ela_tensor *idx = NULL;
    int64_t shape[2] = {hq, L}, n_sel = 0;
    st = ela_tensor_new(be, ELA_I32, 2, shape, NULL, &idx);
    if (st == ELA_OK)
        st = ela_token_select(be, q, k, &pol->tsa, idx, &n_sel);
    double t1 = now_ms();
    if (st == ELA_OK)
        st = n_sel == L ? ela_attn_dense(be, q, k, v, o, NULL, params)
                        : ela_attn_token_sparse(be, q, k, v, idx, n_sel, o, params);
    if (st == ELA_OK)
        st = ela_backend_synchronize(be);
    double t2 = now_ms();
    ela_tensor_free(idx);
    if (st != ELA_OK)
        return st;
    r->select_ms = t1 - t0;
    r->attend_ms = t2 - t1;
    r->kept_tokens = n_sel;
    r->sparsity = 1.0 - causal_pairs(0, n_sel) / causal_pairs(0, L);
    for (int h = 0; h < hq && h < ELA_REPORT_MAX_HEADS; h++)
        r->head_mode[h] = ELA_HEAD_DENSE;
    return ELA_OK;
}

/* tsa+xattn (PAPERS.md 2.4, 2.6): Token Sparse Attention's selection and compression, then
 * XAttention (estimate + block-sparse attention) on every head's compressed sequence, then
 * decompression. The compressed tensors give each query head its own KV head (Hkv = Hq), so
 * XAttention's blocks are 128 compressed tokens, as in the authors' composition. */
static ela_status run_tsa_xattn(ela_backend *be, const ela_prefill_policy *pol,
                                const ela_tensor *q, const ela_tensor *k, const ela_tensor *v,
                                ela_tensor *o, const ela_attn_params *params,
                                ela_prefill_report *r) {
    int64_t L = ela_tensor_extent(q, 0), d = ela_tensor_extent(q, 2);
    int hq = (int)ela_tensor_extent(q, 1);
    ela_prefill_policy xpol = *pol;
    xpol.kind = ELA_PREFILL_XATTN;
    ela_status st = check_whole_prompt(q, k, params);
    if (st != ELA_OK)
        return st;
    double t0 = now_ms();
    ela_tensor *idx = NULL, *qc = NULL, *kc = NULL, *vc = NULL, *oc = NULL;
    int64_t shape[2] = {hq, L}, n_sel = 0;
    st = ela_tensor_new(be, ELA_I32, 2, shape, NULL, &idx);
    if (st == ELA_OK)
        st = ela_token_select(be, q, k, &pol->tsa, idx, &n_sel);
    if (st != ELA_OK)
        goto done;
    if (n_sel == L) { /* nothing dropped: XAttention on the whole prompt */
        double t1 = now_ms();
        st = run_blocks(be, &xpol, q, k, v, o, NULL, NULL, params, r);
        r->select_ms += t1 - t0;
        goto done;
    }
    int64_t qs[3] = {n_sel, hq, d}, ks[3] = {hq, n_sel, d};
    if ((st = ela_tensor_new(be, ela_tensor_dtype(q), 3, qs, NULL, &qc)) != ELA_OK ||
        (st = ela_tensor_new(be, ela_tensor_dtype(k), 3, ks, NULL, &kc)) != ELA_OK ||
        (st = ela_tensor_new(be, ela_tensor_dtype(v), 3, ks, NULL, &vc)) != ELA_OK ||
        (st = ela_tensor_new(be, ela_tensor_dtype(o), 3, qs, NULL, &oc)) != ELA_OK ||
        (st = ela_token_compress(be, q, k, v, idx, n_sel, qc, kc, vc)) != ELA_OK ||
        (st = ela_backend_synchronize(be)) != ELA_OK)
        goto done;
    double t1 = now_ms();
    ela_prefill_report sub;
    memset(&sub, 0, sizeof sub);
    if ((st = run_blocks(be, &xpol, qc, kc, vc, oc, NULL, NULL, params, &sub)) != ELA_OK)
        goto done;
    double t2 = now_ms();
    if ((st = ela_token_decompress(be, oc, idx, n_sel, o)) != ELA_OK ||
        (st = ela_backend_synchronize(be)) != ELA_OK)
        goto done;
    double t3 = now_ms();
    memcpy(r->head_mode, sub.head_mode, sizeof r->head_mode);
    r->kept_blocks = sub.kept_blocks; /* blocks of compressed tokens */
    r->causal_blocks = sub.causal_blocks;
    r->select_ms = t1 - t0 + sub.select_ms;
    r->attend_ms = sub.attend_ms + (t3 - t2);
    r->kept_tokens = n_sel;
    /* the compressed plan skipped sub.sparsity of its own causal pairs */
    r->sparsity = 1.0 - (1.0 - sub.sparsity) * causal_pairs(0, n_sel) / causal_pairs(0, L);
done:
    ela_tensor_free(oc);
    ela_tensor_free(vc);
    ela_tensor_free(kc);
    ela_tensor_free(qc);
    ela_tensor_free(idx);
    return st;
}

ela_status ela_prefill_attention(ela_backend *be, const ela_prefill_policy *pol,
                                 const ela_tensor *q, const ela_tensor *k, const ela_tensor *v,
                                 ela_tensor *o, const ela_tensor *k_pre,
                                 const ela_router_weights *router, const ela_attn_params *params,
                                 ela_prefill_report *report) {
    if (!be || !pol || !q || !k || !v || !o)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_prefill_attention: NULL %s",
                        !be ? "backend" : !pol ? "policy" : !q ? "q" : !k ? "k" : !v ? "v" : "o");
    ela_attn_params p = params ? *params : ela_attn_params_default();
    if (!p.causal)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_prefill_attention: prefill policies are causal");
    ela_prefill_report r;
    memset(&r, 0, sizeof r);
    int hq = (int)ela_tensor_extent(q, 1);
    r.hq = hq < ELA_REPORT_MAX_HEADS ? hq : ELA_REPORT_MAX_HEADS;
    r.kept_tokens = ela_tensor_extent(q, 0);
    ela_status st;
    switch (pol->kind) {
    case ELA_PREFILL_DENSE: {
        double t0 = now_ms();
        st = ela_attn_dense(be, q, k, v, o, NULL, &p);
        if (st == ELA_OK)
            st = ela_backend_synchronize(be);
        r.attend_ms = now_ms() - t0;
        break;
    }
    case ELA_PREFILL_XATTN:
    case ELA_PREFILL_STREAMING:
    case ELA_PREFILL_ELASTIC:
        st = run_blocks(be, pol, q, k, v, o, k_pre, router, &p, &r);
        break;
    case ELA_PREFILL_TSA:
        st = run_tsa(be, pol, q, k, v, o, &p, &r);
        break;
    case ELA_PREFILL_TSA_XATTN:
        st = run_tsa_xattn(be, pol, q, k, v, o, &p, &r);
        break;
    default:
        st = ela_fail(ELA_ERR_INVALID_ARG, "ela_prefill_attention: unknown policy kind %d",
                      (int)pol->kind);
        break;
    }
    if (st == ELA_OK && report)
        *report = r;
    return st;
}

/* ---- decode ----------------------------------------------------------------------------- */

ela_decode_layer_role ela_decode_layer_role_of(const ela_decode_policy *pol, int layer,
                                               int n_layers) {
    if (!pol || pol->kind == ELA_DECODE_DENSE)
        return ELA_DECODE_LAYER_DENSE;
    if (pol->kind != ELA_DECODE_LESSISMORE)
        return ELA_DECODE_LAYER_SPARSE;
    if (pol->n_select_layers > 0) {
        if (layer < pol->select_layers[0])
            return ELA_DECODE_LAYER_DENSE;
        for (int i = 0; i < pol->n_select_layers && i < ELA_MAX_SELECT_LAYERS; i++)
            if (layer == pol->select_layers[i])
                return ELA_DECODE_LAYER_SELECT;
        return ELA_DECODE_LAYER_SPARSE;
    }
    if (layer < 2)
        return ELA_DECODE_LAYER_DENSE;
    int correction = n_layers * 3 / 8;
    if (layer == 2 || (layer == correction && correction > 2))
        return ELA_DECODE_LAYER_SELECT;
    return ELA_DECODE_LAYER_SPARSE;
}

/* Streaming decode: the first `sink` and the last `local` of n tokens, as one index list. */
static ela_status run_streaming_decode(ela_backend *be, const ela_decode_policy *pol,
                                       const ela_tensor *q, const ela_tensor *k,
                                       const ela_tensor *v, ela_tensor *o) {
    int64_t n = ela_tensor_extent(k, 1);
    int64_t sink = pol->sink < n ? pol->sink : n;
    int64_t local = pol->local < n - sink ? pol->local : n - sink;
    int64_t m = sink + local;
    int32_t *host = ela_calloc((size_t)m, sizeof *host);
    if (!host)
        return ela_fail(ELA_ERR_OOM, "ela_decode_attention: out of host memory");
    for (int64_t i = 0; i < sink; i++)
        host[i] = (int32_t)i;
    for (int64_t i = 0; i < local; i++)
        host[sink + i] = (int32_t)(n - local + i);
    ela_tensor *idx = NULL;
    ela_status st = ela_tensor_new(be, ELA_I32, 1, &m, NULL, &idx);
    if (st == ELA_OK)
        st = ela_tensor_write(idx, host, (size_t)m * sizeof *host);
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = n - 1;
    if (st == ELA_OK)
        st = ela_attn_gather(be, q, k, v, idx, o, NULL, &p);
    ela_tensor_free(idx);
    ela_free(host);
    return st;
}

ela_status ela_decode_attention(ela_backend *be, const ela_decode_policy *pol,
                                ela_decode_layer_role role, const ela_tensor *q,
                                const ela_tensor *k, const ela_tensor *v, ela_tensor *o,
                                ela_tensor *selection, int64_t *selected) {
    if (!be || !pol || !q || !k || !v || !o)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_decode_attention: NULL %s",
                        !be ? "backend" : !pol ? "policy" : !q ? "q" : !k ? "k" : !v ? "v" : "o");
    int64_t n = ela_tensor_extent(k, 1);
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = n - 1;
    switch (pol->kind) {
    case ELA_DECODE_DENSE:
        return ela_attn_dense(be, q, k, v, o, NULL, &p);
    case ELA_DECODE_STREAMING:
        return run_streaming_decode(be, pol, q, k, v, o);
    case ELA_DECODE_NSA: {
        int hkv = (int)ela_tensor_extent(k, 0);
        int64_t shape[3] = {1, hkv, pol->nsa.top};
        ela_tensor *blocks = NULL;
        ela_status st = ela_tensor_new(be, ELA_I32, 3, shape, NULL, &blocks);
        if (st == ELA_OK)
            st = ela_nsa_select(be, q, k, &pol->nsa, &p, blocks);
        if (st == ELA_OK)
            st = ela_attn_nsa(be, q, k, v, blocks, NULL, o, &pol->nsa, &p);
        ela_tensor_free(blocks);
        return st;
    }
    case ELA_DECODE_LESSISMORE:
        break;
    default:
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_decode_attention: unknown policy kind %d",
                        (int)pol->kind);
    }
    if (role == ELA_DECODE_LAYER_DENSE)
        return ela_attn_dense(be, q, k, v, o, NULL, &p);
    if (!selection || !selected)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_decode_attention: lessismore needs the "
                        "selection tensor and count");
    if (role == ELA_DECODE_LAYER_SELECT) {
        /* One pass over K where the backend fuses the layer (ela_decode_select_attend runs the
         * two ops where it does not). */
        return ela_decode_select_attend(be, q, k, v, o, &pol->select, &p, selection, selected);
    }
    if (*selected < 1 || *selected > ela_tensor_extent(selection, 0))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_decode_attention: sparse layer before any "
                        "selection layer (selected = %lld)", (long long)*selected);
    ela_tensor *set = NULL;
    int64_t extent = *selected, stride = (int64_t)sizeof(int32_t);
    ela_status st = ela_tensor_view(selection, 1, &extent, &stride, 0, &set);
    if (st == ELA_OK)
        st = ela_attn_gather(be, q, k, v, set, o, NULL, &p);
    ela_tensor_free(set);
    return st;
}

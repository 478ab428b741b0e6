/* ela: Elastic Long-context Attention. The whole public C API.
 * Backends (cpu built in; vulkan, cuda as plugins) are opened by name at run time; every
 * call returns an ela_status and leaves a message for ela_last_error() when it fails. */
#ifndef ELA_H
#define ELA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ELA_VERSION_MAJOR 0
#define ELA_VERSION_MINOR 1
#define ELA_VERSION_PATCH 0
#define ELA_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define ELA_API __attribute__((visibility("default")))
#else
#define ELA_API
#endif

/* ---------------------------------------------------------------------------------------
 * Status and errors
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_OK = 0,
    ELA_ERR_INVALID_ARG = 1, /* wrong shape, stride, dtype combination, NULL pointer, bad name */
    ELA_ERR_UNSUPPORTED = 2, /* the backend cannot run this op or dtype (never a silent fallback) */
    ELA_ERR_OOM = 3,         /* host or device memory exhausted */
    ELA_ERR_FORMAT = 4,      /* corrupt or truncated file */
    ELA_ERR_IO = 5,          /* file cannot be opened or read */
    ELA_ERR_UNAVAILABLE = 6, /* backend or device not present on this machine */
    ELA_ERR_BACKEND = 7,     /* the driver or device reported a failure */
    ELA_ERR_INTERNAL = 8     /* a bug in ela: please report it */
} ela_status;

/* Short constant name of a status ("ELA_ERR_OOM"); never NULL. */
ELA_API const char *ela_status_str(ela_status status);
/* Message of the last failed call on this thread ("" when none). Valid until the next ela call
 * on the same thread fails. Successful calls leave it unchanged. */
ELA_API const char *ela_last_error(void);
/* Library version string, e.g. "0.1.0". */
ELA_API const char *ela_version(void);

/* ---------------------------------------------------------------------------------------
 * Data types
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_F32 = 0,
    ELA_F16 = 1,  /* IEEE binary16 */
    ELA_BF16 = 2, /* bfloat16, round-to-nearest-even on conversion */
    ELA_I32 = 3,  /* index lists (token or block indices); from float: rounded, saturated */
    ELA_U8 = 4,   /* block masks (0 = skip, nonzero = keep); from float: rounded, saturated */
    ELA_Q8_0 = 5, /* weights and KV cache: blocks of 32 int8 after one f16 scale (34 bytes), as in
                     GGUF; the innermost extent must be a multiple of 32 */
    ELA_DTYPE_COUNT
} ela_dtype;

/* Bytes per element; 0 for an unknown dtype and for block dtypes (q8_0). */
ELA_API size_t ela_dtype_size(ela_dtype dtype);
/* Elements per block: 32 for q8_0, 1 for the others (0 when unknown). */
ELA_API int64_t ela_dtype_block(ela_dtype dtype);
/* Bytes of n packed elements; 0 when unknown or n is not a multiple of the block. */
ELA_API size_t ela_dtype_row_bytes(ela_dtype dtype, int64_t n);
ELA_API const char *ela_dtype_name(ela_dtype dtype); /* "f32", ..., "u8", "q8_0", "?" */
/* Parse "f32" / "f16" / "bf16" / "i32" / "u8" / "q8_0". */
ELA_API ela_status ela_dtype_parse(const char *name, ela_dtype *out);
/* Convert n packed elements between dtypes (same dtype copies). */
ELA_API ela_status ela_convert(const void *src, ela_dtype src_dtype, void *dst, ela_dtype dst_dtype,
                               int64_t n);

/* ---------------------------------------------------------------------------------------
 * Backends and devices
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_DEVICE_CPU = 0,
    ELA_DEVICE_DISCRETE_GPU = 1,
    ELA_DEVICE_INTEGRATED_GPU = 2,
    ELA_DEVICE_VIRTUAL_GPU = 3,
    ELA_DEVICE_SOFTWARE = 4 /* e.g. lavapipe: usable by name, never picked by "auto" */
} ela_device_kind;

#define ELA_MAX_DEVICES 8

typedef struct {
    char name[128];        /* "AMD EPYC 9654", "NVIDIA H100 80GB HBM3" */
    ela_device_kind kind;
    uint64_t memory_bytes; /* device-local memory (host RAM for the CPU) */
    char details[256];     /* free text: CPU features and threads, driver version, ... */
} ela_device_info;

typedef struct {
    char name[16];     /* "cpu", "vulkan", "cuda" */
    int available;     /* nonzero when at least one device can be opened */
    char reason[256];  /* why not available ("" when available) */
    int n_devices;
    ela_device_info devices[ELA_MAX_DEVICES];
} ela_backend_info;

/* Every backend ela knows of, available or not. Fills up to `capacity` entries and sets
 * *count to the number of known backends (which may exceed capacity). Plugins are looked up
 * next to libela and in the directories of ELA_PLUGIN_PATH (':'-separated). */
ELA_API ela_status ela_backend_list(ela_backend_info *out, int capacity, int *count);

typedef struct ela_backend ela_backend;

/* Open a backend: "auto", "cpu", "vulkan", "vulkan:1", "cuda", "cuda:0". NULL or "" reads the
 * ELA_BACKEND environment variable, then falls back to "auto". "auto" picks CUDA, then a
 * discrete Vulkan GPU, then an integrated one, then the CPU. */
ELA_API ela_status ela_backend_open(const char *name, ela_backend **out);
ELA_API void ela_backend_close(ela_backend *backend); /* NULL is a no-op */
/* Name with device index, e.g. "cpu", "vulkan:0". */
ELA_API const char *ela_backend_name(const ela_backend *backend);
ELA_API ela_status ela_backend_device_info(const ela_backend *backend, ela_device_info *out);
/* Wait until all work submitted to the backend has finished. */
ELA_API ela_status ela_backend_synchronize(ela_backend *backend);

typedef enum {
    ELA_OP_ATTN_DENSE = 0,
    ELA_OP_ATTN_BLOCKS,
    ELA_OP_XATTN_ESTIMATE,
    ELA_OP_ROUTER_EVAL,
    ELA_OP_TOKEN_SELECT,
    ELA_OP_ATTN_TOKEN_SPARSE,
    ELA_OP_DECODE_SELECT,
    ELA_OP_ATTN_GATHER,
    ELA_OP_NSA_SELECT,
    ELA_OP_ATTN_NSA,
    ELA_OP_MATMUL,
    ELA_OP_RMS_NORM,
    ELA_OP_ROPE,
    ELA_OP_SILU_MUL,
    ELA_OP_ADD,
    ELA_OP_GET_ROWS,
    ELA_OP_COPY,
    ELA_OP_DECODE_SELECT_ATTEND, /* ela_decode_select_attend */
    ELA_OP_TOKEN_COMPRESS,       /* ela_token_compress */
    ELA_OP_TOKEN_DECOMPRESS,     /* ela_token_decompress */
    ELA_OP_SIGMOID_GATE,         /* ela_sigmoid_gate */
    ELA_OP_COUNT
} ela_op;

/* "attn_dense", "attn_blocks", ...; "?" for an unknown op. */
ELA_API const char *ela_op_name(ela_op op);

/* Nonzero when the backend can run `op` with these input dtypes (q, k/v, o for attention). */
ELA_API int ela_backend_supports(const ela_backend *backend, ela_op op, const ela_dtype *dtypes,
                                 int n_dtypes);

/* ---------------------------------------------------------------------------------------
 * Tensors: a backend buffer + byte offset + dtype + up to 4 extents + byte strides.
 * Extents and strides are given outermost first, e.g. Q is [L, Hq, d].
 * ------------------------------------------------------------------------------------- */
#define ELA_MAX_DIMS 4

typedef struct ela_tensor ela_tensor;

/* New tensor in backend memory, uninitialised. strides (bytes, outermost first) may be NULL
 * for a packed row-major layout; given strides must be positive and non-overlapping. */
ELA_API ela_status ela_tensor_new(ela_backend *backend, ela_dtype dtype, int n_dims,
                                  const int64_t *extents, const int64_t *strides,
                                  ela_tensor **out);
/* A view of base's memory (same dtype and backend) starting `offset` bytes after base's first
 * element; NULL strides means packed. The view keeps the memory alive: base may be freed first. */
ELA_API ela_status ela_tensor_view(const ela_tensor *base, int n_dims, const int64_t *extents,
                                   const int64_t *strides, int64_t offset, ela_tensor **out);
ELA_API void ela_tensor_free(ela_tensor *tensor); /* NULL is a no-op */

/* Copy packed row-major host data in the tensor's own dtype to or from the tensor (which may be
 * strided). bytes must equal numel * dtype size. */
ELA_API ela_status ela_tensor_write(ela_tensor *tensor, const void *src, size_t bytes);
ELA_API ela_status ela_tensor_read(const ela_tensor *tensor, void *dst, size_t bytes);
/* The same with conversion from/to float; count must equal numel. */
ELA_API ela_status ela_tensor_write_f32(ela_tensor *tensor, const float *src, int64_t count);
ELA_API ela_status ela_tensor_read_f32(const ela_tensor *tensor, float *dst, int64_t count);

ELA_API ela_dtype ela_tensor_dtype(const ela_tensor *tensor);
ELA_API int ela_tensor_n_dims(const ela_tensor *tensor);
ELA_API int64_t ela_tensor_extent(const ela_tensor *tensor, int dim); /* 0 when out of range */
ELA_API int64_t ela_tensor_stride(const ela_tensor *tensor, int dim); /* bytes */
ELA_API int64_t ela_tensor_numel(const ela_tensor *tensor);

/* ---------------------------------------------------------------------------------------
 * Attention ops. Q and O are [L, Hq, d]; K and V are [Hkv, n, d]; query head h uses KV head
 * h / (Hq / Hkv). The innermost dimension must be packed; other strides are free.
 * ------------------------------------------------------------------------------------- */
typedef struct {
    int causal;     /* nonzero: query row i (position q_pos0 + i) sees keys j <= q_pos0 + i */
    int64_t q_pos0; /* absolute position of query row 0; >= 0; ignored when not causal */
    float scale;    /* softmax scale; 0 means 1/sqrt(d) */
} ela_attn_params;

/* causal = 1, q_pos0 = 0, scale = 0 (1/sqrt(d)). */
ELA_API ela_attn_params ela_attn_params_default(void);

/* Exact softmax attention. q: f32/f16/bf16; k and v: one dtype among f32/f16/bf16; o:
 * f32/f16/bf16; lse (optional, NULL to skip): f32 [L, Hq], natural-log sum of exp of the
 * scaled scores. Accumulation is f32. Causal rows must see at least one key (n >= 1). */
ELA_API ela_status ela_attn_dense(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                  const ela_tensor *v, ela_tensor *o, ela_tensor *lse,
                                  const ela_attn_params *params);

/* ---------------------------------------------------------------------------------------
 * Sparse attention ops (DESIGN.md 4, PAPERS.md). All are causal with absolute positions like
 * ela_attn_dense, take the same Q/K/V layouts, accept f32/f16/bf16 data with f32 accumulation,
 * and use 128-token blocks. Index lists are i32 tensors, block masks u8 tensors (nonzero =
 * keep). Small per-head settings are host arrays; everything large is a tensor.
 * ------------------------------------------------------------------------------------- */
#define ELA_BLOCK 128 /* tokens per sparse block, as in Block-Sparse-Attention */

typedef enum {
    ELA_HEAD_DENSE = 0,     /* every causal key */
    ELA_HEAD_STREAMING = 1, /* sink blocks + local blocks (Elastic's E-SSA) */
    ELA_HEAD_MASK = 2       /* the key blocks its block mask keeps (XAttention, any mask) */
} ela_head_kind;

typedef struct {
    ela_head_kind kind;
    int sink_blocks;  /* STREAMING: key blocks [0, sink_blocks) */
    int local_blocks; /* STREAMING: key blocks [M - local_blocks + 1, M] for query block M (>= 1) */
    int mask;         /* MASK: index into the masks tensor's first dim */
} ela_head_mode;

/* Fused hybrid block-sparse prefill (op 2): one pass over (query block, head) work items where
 * each query head runs its own mode. Query row i sits at position q_pos0 + i; its absolute
 * query block is M = (q_pos0 + i) / 128, and key block J holds keys [128 J, 128 J + 128).
 * A row sees key j when j <= its position and j's block is allowed: DENSE all blocks <= M,
 * STREAMING blocks J < sink_blocks or M - local_blocks < J <= M, MASK blocks J <= M with
 * masks[mask, M - q_pos0 / 128, J] != 0 (the diagonal block J = M is always kept, so no row is
 * empty). modes: host array [Hq]. masks: u8 [n_masks, nqb, nkb] with nqb = number of absolute
 * query blocks the rows touch, nkb = ceil(n / 128); NULL when no head is MASK. params->causal
 * must be 1 and params->q_pos0 a multiple of 128 (so nqb = ceil(L / 128)). lse as in
 * ela_attn_dense (may be NULL); a row that sees no key (only when n ends before its block) gets
 * o = 0, lse = -inf. */
ELA_API ela_status ela_attn_blocks(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                   const ela_tensor *v, ela_tensor *o, ela_tensor *lse,
                                   const ela_head_mode *modes, const ela_tensor *masks,
                                   const ela_attn_params *params);

typedef struct {
    int stride;      /* antidiagonal stride S; divides 128; default 16 */
    float threshold; /* kept block mass per query-block row, tau in (0, 1]; default 0.9 */
} ela_xattn_params;

ELA_API ela_xattn_params ela_xattn_params_default(void); /* stride 16, threshold 0.9 */

/* XAttention block selection (op 3, PAPERS.md 5.1) for the query heads listed in `heads`
 * (host array [n_heads]; mask i belongs to head heads[i]). Antidiagonal stride-S reduction of Q
 * and K (zero rows past the end), reduced causal softmax with scale 1/(sqrt(d) S), 128x128
 * block sums, key block 0 and the diagonal block (when < nkb) always kept, then blocks by
 * descending mass (equal masses: lower block first) until the kept mass reaches threshold * row
 * mass. masks: u8 [n_heads, nqb, nkb] as in ela_attn_blocks, written 1 (kept) or 0. Causal;
 * q_pos0 from params must be a multiple of 128.
 * kept_blocks (optional, may be NULL): total kept causal blocks over all heads, for reports. */
ELA_API ela_status ela_xattn_estimate(ela_backend *backend, const ela_tensor *q,
                                      const ela_tensor *k, const int *heads, int n_heads,
                                      const ela_xattn_params *xparams,
                                      const ela_attn_params *params, ela_tensor *masks,
                                      int64_t *kept_blocks);

/* Elastic Attention router weights of one layer (PAPERS.md 1.3), PyTorch Linear layout
 * (weight [out, in], bias [out]), f32/f16/bf16. Task MLP d -> h -> d (SiLU between), Router
 * MLP d -> h -> d -> 2 (SiLU between each); h is read from the weights (4d in the paper). */
typedef struct {
    const ela_tensor *task_w1, *task_b1, *task_w2, *task_b2;
    const ela_tensor *route_w1, *route_b1, *route_w2, *route_b2, *route_w3, *route_b3;
} ela_router_weights;

/* Router decision (op 4): k_pre is [Hkv, L, d] pre-RoPE keys (any strides, packed last dim,
 * e.g. a view of a token-major [L, Hkv, d] projection). Pools the mean of rows [0, min(100,L))
 * and [L - min(100,L), L) (overlap counted twice), runs both MLPs and writes, per KV head,
 * full[h] = 1 when logit 1 > logit 0 (class 1 is FULL; a tie is sparse). full: host [Hkv];
 * logits: host [Hkv, 2] or NULL. */
ELA_API ela_status ela_router_eval(ela_backend *backend, const ela_tensor *k_pre,
                                   const ela_router_weights *weights, int *full, float *logits);

typedef struct {
    int window;        /* observation window w: last w queries score, always kept; default 128 */
    int pool;          /* odd avg-pool width over the scores; default 7 */
    float coverage;    /* tau: head-mean mass that may be dropped; default 0.005 */
    int64_t min_keep;  /* m: lower bound on kept prefix tokens; default 1024 */
} ela_tsa_params;

ELA_API ela_tsa_params ela_tsa_params_default(void); /* 128, 7, 0.005, 1024 */

/* Token Sparse Attention selection (op 5, PAPERS.md 2.3) over a whole prompt: q [L, Hq, d],
 * k [Hkv, L, d] (n == L, positions 0..L-1). Writes per query head its sorted kept token indices
 * to idx (i32 [Hq, L], first *n_sel columns valid) and *n_sel = L' (equal for all heads).
 * Dense (every head keeps 0..L-1, *n_sel = L) when L <= min_keep + window or nothing is
 * dropped. Softmax scale 1/sqrt(d); inf/NaN scores (from q or k) are ELA_ERR_INVALID_ARG. */
ELA_API ela_status ela_token_select(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                    const ela_tsa_params *tparams, ela_tensor *idx,
                                    int64_t *n_sel);

/* Token-sparse attention (op 6): for each query head h, gather rows idx[h, 0..n_sel) of Q (head
 * h) and of K, V (KV head h / G), causal attention among them (idx sorted ascending, so the
 * compressed causal mask is the original one), scatter into o; rows of o not selected for head
 * h are zero. q, o [L, Hq, d]; k, v [Hkv, L, d]; idx i32 [Hq, >= n_sel], each row's first n_sel
 * entries strictly ascending in [0, L) (checked: ELA_ERR_INVALID_ARG); 0 <= n_sel <= L (0: o is
 * all zero). Causal needs params->q_pos0 = 0; not causal, each selected row sees all of its
 * head's selected keys. */
ELA_API ela_status ela_attn_token_sparse(ela_backend *backend, const ela_tensor *q,
                                         const ela_tensor *k, const ela_tensor *v,
                                         const ela_tensor *idx, int64_t n_sel, ela_tensor *o,
                                         const ela_attn_params *params);

/* Token-sparse compression and decompression on their own (PAPERS.md 2.4), so that any prefill
 * op can attend over the compressed sequences (the tsa+xattn policy runs XAttention on them).
 * Compress: per query head h, qc[i, h] = q[idx[h, i], h] and kc[h, i] = k[idx[h, i], h / G],
 * vc likewise, i < n_sel: each query head gets its own KV head, so the compressed tensors are
 * ordinary attention inputs with Hkv = Hq whose compressed causal order is the original one.
 * q [L, Hq, d]; k, v [Hkv, L, d]; qc [n_sel, Hq, d]; kc, vc [Hq, n_sel, d]; each output has its
 * source's dtype (a plain copy). idx as in ela_attn_token_sparse (checked the same way). */
ELA_API ela_status ela_token_compress(ela_backend *backend, const ela_tensor *q,
                                      const ela_tensor *k, const ela_tensor *v,
                                      const ela_tensor *idx, int64_t n_sel, ela_tensor *qc,
                                      ela_tensor *kc, ela_tensor *vc);
/* Decompress: o [L, Hq, d] is zero except o[idx[h, i], h] = oc[i, h] for i < n_sel; oc
 * [n_sel, Hq, d] with o's dtype. */
ELA_API ela_status ela_token_decompress(ela_backend *backend, const ela_tensor *oc,
                                        const ela_tensor *idx, int64_t n_sel, ela_tensor *o);

typedef struct {
    int64_t budget;  /* K: tokens kept per step */
    float recent;    /* share of K kept as the most recent tokens; default 0.25 */
    int sinks;       /* first tokens always kept, taken out of the recent share; default 4 */
} ela_decode_select_params;

ELA_API ela_decode_select_params ela_decode_select_params_default(int64_t budget);

/* LessIsMore selection (op 7, PAPERS.md 3.2) for one decode query: q [1, Hq, d], k [Hkv, n, d]
 * (all n keys visible; of params only the scale is used). Raw logits q.k * scale per query head;
 * k_mid = floor(K (1 - recent)), n_rec = K - k_mid with `sinks` taken out of it (sinks = 0 when
 * n_rec < sinks); per-head top k_mid over [sinks, n - n_rec) ranked by logit descending, ties to
 * the lower index; rank-major union over heads (rank outer, head inner) of the first k_mid
 * distinct tokens. idx (i32 [>= min(K, n)]) gets sinks, then the union in union order, then the
 * recent tokens ascending; *count = min(K, n) (all of 0..n-1 when K >= n). The floor is exact
 * (integer arithmetic) when 4 recent is an integer, e.g. int(K * 0.75) for the default 0.25;
 * other values are taken as the decimal they approximate: floor(K (1 - recent) + K 1e-7) in
 * double, so recent = 0.1f gives floor(0.9 K). */
ELA_API ela_status ela_decode_select(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                     const ela_decode_select_params *dparams,
                                     const ela_attn_params *params, ela_tensor *idx,
                                     int64_t *count);

/* A LessIsMore selection layer in one pass over K (ops 1 and 7 fused): o = the dense attention
 * of the decode query over all n keys, as ela_attn_dense with causal = 1 and q_pos0 = n - 1, and
 * idx, *count = the selection ela_decode_select makes for the same q and k. q, o [1, Hq, d];
 * k, v [Hkv, n, d]; dtypes as in ela_attn_dense; sparams, idx and count as in
 * ela_decode_select; of params (may be NULL) only the scale is used. On a backend without a
 * fused kernel for these dtypes (ela_backend_supports with ELA_OP_DECODE_SELECT_ATTEND and
 * dtypes q, k, o is 0) the op runs ela_attn_dense, then ela_decode_select (K read twice). */
ELA_API ela_status ela_decode_select_attend(ela_backend *backend, const ela_tensor *q,
                                            const ela_tensor *k, const ela_tensor *v,
                                            ela_tensor *o,
                                            const ela_decode_select_params *sparams,
                                            const ela_attn_params *params, ela_tensor *idx,
                                            int64_t *count);

/* Attention over an index set (op 8): each query row sees only the keys listed in idx (and,
 * when causal, only those <= its position). idx: i32 [m] shared by all heads, or [Hkv, m] one
 * list per KV head; entries in [0, n), distinct, any order. q, o [L, Hq, d]; k, v [Hkv, n, d];
 * lse as in ela_attn_dense. A row that sees no key gets o = 0, lse = -inf. */
ELA_API ela_status ela_attn_gather(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                   const ela_tensor *v, const ela_tensor *idx, ela_tensor *o,
                                   ela_tensor *lse, const ela_attn_params *params);

typedef struct {
    int block; /* tokens per selection block; default 16 */
    int top;   /* blocks kept per token and KV head; default 16 */
} ela_nsa_params;

ELA_API ela_nsa_params ela_nsa_params_default(void); /* block 16, top 16 */

/* SSA/NSA block selection (op 9, PAPERS.md 4.3): for query row i at t = q_pos0 + i and KV head
 * g, score complete mean-pooled key blocks c < floor(t / block) by their softmax probability
 * (over the NC = floor((t + 1) / block) complete blocks, per query head) summed over the G heads
 * of the group; the current block floor(t / block) is forced first. blocks: i32 [L, Hkv, top],
 * kept block indices by descending score (ties: lower block first), -1 past the kept count.
 * Causal only; every query's own key must be in k (q_pos0 + L <= n). */
ELA_API ela_status ela_nsa_select(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                  const ela_nsa_params *nparams, const ela_attn_params *params,
                                  ela_tensor *blocks);

/* Gated attention of SSA models (op 9): o[i, h] = gate[i, h] * attention of row i over the keys
 * of the blocks listed in blocks[i, h / G] (block size from nparams), causal; blocks NULL means
 * full causal attention ("full" inference mode, still gated). gate: f32 [L, Hq], the sigmoid
 * already applied; NULL means 1. blocks: i32 [L, Hkv, top] as ela_nsa_select writes it; entries
 * -1 are ignored, the others must be distinct and in [0, ceil(n / block)) (checked before o is
 * written); a row whose blocks hold no key <= its position gets o = 0. q_pos0 + L <= n. */
ELA_API ela_status ela_attn_nsa(ela_backend *backend, const ela_tensor *q, const ela_tensor *k,
                                const ela_tensor *v, const ela_tensor *blocks,
                                const ela_tensor *gate, ela_tensor *o,
                                const ela_nsa_params *nparams, const ela_attn_params *params);

/* ---------------------------------------------------------------------------------------
 * Policies (DESIGN.md 4, core/policy): which sparse method a context runs, parsed from one
 * string such as "elastic:fa-xa,tau=0.9,sink=128,local=2048" or "lessismore:2048".
 *
 * Prefill: dense | xattn | streaming | elastic:fa-xa | elastic:fa-ssa | elastic:xa-ssa | tsa |
 * tsa+xattn, with options (defaults from PAPERS.md):
 *   stride=16 tau=0.9            XAttention stride and kept-mass threshold (xattn, *-xa, xa-*)
 *   sink=128 local=2048          streaming window in tokens, rounded up to 128-token blocks
 *   full=F                       elastic without router weights: fraction of KV heads run as
 *                                "full" (spread evenly over the heads); default 0.5
 *   coverage=0.005 window=128 pool=7 min=1024   Token Sparse Attention (tsa, tsa+xattn)
 *   layers=A-B+C                 the layers that run the method, the others dense (layer
 *                                schedule, `ela profile`); default all, tsa: the second half
 *                                of the layers (PAPERS.md 2.5)
 * Decode: dense | lessismore:K | nsa | streaming, with options
 *   recent=0.25 sinks=4          LessIsMore recency share and sink tokens
 *   select=A+B                   LessIsMore selection layers, increasing; layers before the
 *                                first are dense; default 2 and n_layers*3/8
 *   block=16 top=16              NSA selection
 *   sink=128 local=2048          streaming decode: the first `sink` and last `local` tokens
 * ------------------------------------------------------------------------------------- */
typedef enum {
    ELA_PREFILL_DENSE = 0,
    ELA_PREFILL_XATTN,
    ELA_PREFILL_STREAMING,
    ELA_PREFILL_ELASTIC, /* router picks per KV head between full_mode and sparse_mode */
    ELA_PREFILL_TSA,
    ELA_PREFILL_TSA_XATTN
} ela_prefill_kind;

#define ELA_MAX_POLICY_LAYERS 256 /* layer schedules name layers [0, 256) */
#define ELA_MAX_SELECT_LAYERS 8

/* A set of layers, bit l of bits[l / 64] for layer l. */
typedef struct {
    uint64_t bits[ELA_MAX_POLICY_LAYERS / 64];
} ela_layer_set;

typedef struct {
    ela_prefill_kind kind;
    ela_head_kind full_mode;   /* elastic: mode of router-"full" heads (DENSE or MASK) */
    ela_head_kind sparse_mode; /* elastic: mode of the other heads (MASK or STREAMING) */
    int64_t sink, local;       /* streaming window, tokens */
    float full_fraction;       /* elastic without router weights */
    ela_xattn_params xattn;
    ela_tsa_params tsa;
    int layers_given;          /* 0: the default layers (all; tsa: the second half) */
    ela_layer_set layers;      /* layers=: the layers that run the method, the others dense */
} ela_prefill_policy;

typedef enum {
    ELA_DECODE_DENSE = 0,
    ELA_DECODE_LESSISMORE,
    ELA_DECODE_NSA,
    ELA_DECODE_STREAMING
} ela_decode_kind;

typedef struct {
    ela_decode_kind kind;
    ela_decode_select_params select; /* lessismore (budget = K) */
    ela_nsa_params nsa;
    int64_t sink, local;             /* streaming */
    int n_select_layers;             /* lessismore select=: 0 = default (2 and n_layers*3/8) */
    int select_layers[ELA_MAX_SELECT_LAYERS]; /* increasing */
} ela_decode_policy;

/* Parse a policy string; on error ELA_ERR_INVALID_ARG quoting the bad part, *out untouched. */
ELA_API ela_status ela_prefill_policy_parse(const char *text, ela_prefill_policy *out);
ELA_API ela_status ela_decode_policy_parse(const char *text, ela_decode_policy *out);
/* Canonical string with every option spelled out ("elastic:fa-xa,stride=16,tau=0.9,..."),
 * which parses back to the same policy. Returns the length it needed (snprintf-style). */
ELA_API int ela_prefill_policy_format(const ela_prefill_policy *policy, char *buf, size_t size);
ELA_API int ela_decode_policy_format(const ela_decode_policy *policy, char *buf, size_t size);

/* What a prefill policy did, for reports and benchmarks. */
#define ELA_REPORT_MAX_HEADS 256
typedef struct {
    int hq;                                   /* query heads reported (<= ELA_REPORT_MAX_HEADS) */
    uint8_t head_mode[ELA_REPORT_MAX_HEADS];  /* ela_head_kind each query head ran */
    int full_kv_heads;                        /* elastic: KV heads routed to full_mode */
    int64_t kept_blocks, causal_blocks;       /* block policies: kept / all causal blocks */
    int64_t kept_tokens;                      /* tsa: tokens each head kept (L when dense) */
    double sparsity;      /* fraction of the dense causal (query, key) pairs skipped */
    double select_ms;     /* routing, estimation and selection */
    double attend_ms;     /* attention itself */
} ela_prefill_report;

/* 1 when layer `layer` of n_layers runs the policy's method in prefill, 0 when it runs dense
 * (a dense policy, or a layer outside layers= / the tsa default of the second half). */
ELA_API int ela_prefill_layer_is_sparse(const ela_prefill_policy *policy, int layer,
                                        int n_layers);

/* Prefill attention of one layer under a policy: q, o [L, Hq, d], k, v [Hkv, n, d] as in
 * ela_attn_dense (causal; chunks need q_pos0 a multiple of 128 for block policies). Elastic
 * routes with `router` on k_pre ([Hkv, L, d] pre-RoPE keys; NULL means k) or, when router is
 * NULL, runs the fraction policy->full_fraction of KV heads (spread evenly) in full_mode.
 * report may be NULL. */
ELA_API ela_status ela_prefill_attention(ela_backend *backend, const ela_prefill_policy *policy,
                                         const ela_tensor *q, const ela_tensor *k,
                                         const ela_tensor *v, ela_tensor *o,
                                         const ela_tensor *k_pre,
                                         const ela_router_weights *router,
                                         const ela_attn_params *params,
                                         ela_prefill_report *report);

/* A decode layer's part in a decode policy (LessIsMore's schedule: dense layers, selection
 * layers that attend densely and choose the token set, sparse layers that use the last set). */
typedef enum {
    ELA_DECODE_LAYER_DENSE = 0,
    ELA_DECODE_LAYER_SELECT = 1,
    ELA_DECODE_LAYER_SPARSE = 2
} ela_decode_layer_role;

/* Role of layer `layer` of n_layers under the policy: lessismore: the selection layers (select=,
 * default 2 and n_layers * 3 / 8, i.e. 12 of 32-36, PAPERS.md 3.3) select, the layers before the
 * first of them are dense, the rest sparse; dense and streaming policies: every layer the same
 * (streaming layers count as SPARSE). */
ELA_API ela_decode_layer_role ela_decode_layer_role_of(const ela_decode_policy *policy, int layer,
                                                       int n_layers);

/* Decode attention of one layer: q, o [1, Hq, d]; k, v [Hkv, n, d] hold every cached token (the
 * query is the last, position n - 1). `selection` (i32 [>= budget]) and *selected carry the
 * LessIsMore token set from a SELECT layer to the SPARSE layers after it; they are unused by
 * the other policies (may be NULL). */
ELA_API ela_status ela_decode_attention(ela_backend *backend, const ela_decode_policy *policy,
                                        ela_decode_layer_role role, const ela_tensor *q,
                                        const ela_tensor *k, const ela_tensor *v, ela_tensor *o,
                                        ela_tensor *selection, int64_t *selected);

/* ---------------------------------------------------------------------------------------
 * Model ops: the dense layers around attention (DESIGN.md 5). Activations are f32; weights
 * f32/f16/bf16/q8_0. Row-major, innermost dimension packed; other strides free.
 * ------------------------------------------------------------------------------------- */
/* y [M, N] = x [M, K] . w [N, K]^T (+ bias [N] when not NULL). x, y, bias f32; w f32/f16/bf16/
 * q8_0 (q8_0: K a multiple of 32). y must not overlap x. */
ELA_API ela_status ela_matmul(ela_backend *backend, const ela_tensor *x, const ela_tensor *w,
                              const ela_tensor *bias, ela_tensor *y);
/* y [M, D] = x / sqrt(mean(x^2) + eps) * w, per row; x, y f32 (y may be x); w [D] f32/f16/bf16.
 * Works on [M, H, d] too with w [d] (per-head q_norm / k_norm): the last extent is the row. */
ELA_API ela_status ela_rms_norm(ela_backend *backend, const ela_tensor *x, const ela_tensor *w,
                                float eps, ela_tensor *y);

typedef enum {
    ELA_ROPE_SCALING_NONE = 0,
    ELA_ROPE_SCALING_LINEAR = 1, /* positions divided by factor */
    ELA_ROPE_SCALING_LLAMA3 = 2, /* Llama 3.1: per-frequency smooth interpolation */
    ELA_ROPE_SCALING_YARN = 3    /* YaRN (Qwen2.5/3 long context): ramp between the two, and
                                    cos/sin scaled by the attention factor */
} ela_rope_scaling;

typedef struct {
    float theta;         /* base, e.g. 10000 or 500000 */
    int n_rot;           /* rotated dims (even, <= d); 0 means d */
    int interleaved;     /* 0: rotate halves (HF, "neox"); 1: rotate pairs (2i, 2i+1) (GGUF llama) */
    ela_rope_scaling scaling;
    float factor;                   /* linear and llama3 */
    float low_freq_factor, high_freq_factor; /* llama3 */
    int64_t original_max_position;  /* llama3 */
    /* Optional host array [n_rot / 2]: frequency i is divided by freq_factors[i] (> 0) after
     * any scaling, as llama.cpp applies a GGUF `rope_freqs.weight`. NULL: none. Must stay
     * valid while the params are in use. */
    const float *freq_factors;
    /* YaRN (as HF transformers' _compute_yarn_parameters; also uses factor and
     * original_max_position): pairs rotating fewer than beta_slow times over the original
     * window are interpolated (divided by factor), more than beta_fast times kept, a linear
     * ramp between; 0 means the defaults 32 and 1. attn_factor multiplies cos and sin; 0 means
     * 0.1 ln(factor) + 1. no_truncate: 1 keeps the ramp's ends unrounded (HF truncate=false). */
    float beta_fast, beta_slow, attn_factor;
    int no_truncate;
} ela_rope_params;

/* In place: x f32 [M, H, d]; row m is at position pos (i32 [M], values >= 0). */
ELA_API ela_status ela_rope(ela_backend *backend, ela_tensor *x, const ela_tensor *pos,
                            const ela_rope_params *params);
/* out [M, F] = silu(gate) * up, all f32; out may be gate or up. */
ELA_API ela_status ela_silu_mul(ela_backend *backend, const ela_tensor *gate, const ela_tensor *up,
                                ela_tensor *out);
/* out = a + b, f32, same shapes; out may be a or b. */
ELA_API ela_status ela_add(ela_backend *backend, const ela_tensor *a, const ela_tensor *b,
                           ela_tensor *out);
/* SSA's output gate (PAPERS.md 4.3): x f32 [M, H, d] in place, row (m, h) multiplied by
 * sigmoid(g[m, h * stride + offset]); g f32 [M, >= H * stride], 0 <= offset < stride (SSA:
 * g = x_in . g_proj^T viewed as [M, H, 3], stride 3, offset 1). */
ELA_API ela_status ela_sigmoid_gate(ela_backend *backend, ela_tensor *x, const ela_tensor *g,
                                    int stride, int offset);
/* out [M, D] f32 = table [V, D] (f32/f16/bf16/q8_0) rows ids (i32 [M], each in [0, V)). */
ELA_API ela_status ela_get_rows(ela_backend *backend, const ela_tensor *table,
                                const ela_tensor *ids, ela_tensor *out);
/* dst = src with dtype conversion (f32/f16/bf16 to f32/f16/bf16/q8_0); same extents, any
 * strides (innermost packed). Used to append keys and values to a KV cache. */
ELA_API ela_status ela_copy(ela_backend *backend, const ela_tensor *src, ela_tensor *dst);

/* ---------------------------------------------------------------------------------------
 * Tokenizer: byte-level BPE (GPT-2 style: Llama 3, Qwen) and SentencePiece-style BPE (Llama 2,
 * Mistral: byte fallback, "▁" for spaces, merges ranked by score in GGUF) from tokenizer.json
 * or GGUF metadata (DESIGN.md 5).
 * ------------------------------------------------------------------------------------- */
typedef struct ela_tokenizer ela_tokenizer;

/* path: a tokenizer.json, a GGUF file, or a model directory holding tokenizer.json. */
ELA_API ela_status ela_tokenizer_load(const char *path, ela_tokenizer **out);
ELA_API void ela_tokenizer_free(ela_tokenizer *tok); /* NULL is a no-op */
ELA_API int64_t ela_tokenizer_vocab_size(const ela_tokenizer *tok);
/* Special ids, -1 when the tokenizer has none. */
ELA_API int32_t ela_tokenizer_bos(const ela_tokenizer *tok);
ELA_API int32_t ela_tokenizer_eos(const ela_tokenizer *tok);
/* Encode `len` bytes of UTF-8 (invalid bytes are encoded as their byte tokens). add_special:
 * prepend BOS where the tokenizer's post-processor does. Special-token text in the input
 * ("<|im_start|>") becomes its id. Writes up to `capacity` ids and sets *n_ids to the number
 * the text needs (call with capacity 0 to size the buffer). */
ELA_API ela_status ela_tokenize(const ela_tokenizer *tok, const char *text, size_t len,
                                int add_special, int32_t *ids, int64_t capacity, int64_t *n_ids);
/* Bytes of one token (special tokens as their text); *len is set to the length even when it
 * exceeds capacity. A token may end in the middle of a UTF-8 character. */
ELA_API ela_status ela_token_piece(const ela_tokenizer *tok, int32_t id, char *buf,
                                   size_t capacity, size_t *len);

/* ---------------------------------------------------------------------------------------
 * Models: Llama 2/3/3.1, Qwen2/2.5, Qwen3, Mistral from an HF directory (safetensors) or GGUF.
 * ------------------------------------------------------------------------------------- */
typedef struct ela_model ela_model;

typedef struct {
    /* Called during loading with fraction done in [0, 1]; may be NULL. */
    void (*progress)(float fraction, void *user);
    void *user;
    /* Elastic Attention router weights in a separate safetensors file, or NULL to read them
     * from the checkpoint when it has them. */
    const char *router_path;
} ela_model_params;

ELA_API ela_model_params ela_model_params_default(void);

typedef struct {
    char arch[32];            /* "llama", "qwen2", "qwen3", "mistral" */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int64_t hidden, ffn, vocab;
    int64_t max_positions;    /* from the config; 0 when unknown */
    /* Sliding attention window in tokens (Mistral 7B v0.1; Qwen2 with use_sliding_window), 0
     * when none. Windowed attention is not implemented: contexts are limited to the window,
     * inside which it equals full causal attention. */
    int64_t sliding_window;
    float norm_eps;
    ela_rope_params rope;
    ela_dtype weight_dtype;   /* dtype of most weight matrices */
    int has_router;           /* Elastic Attention router weights present */
    int has_gate;             /* SSA g_proj gate present */
    int64_t n_params;
} ela_model_info;

/* Load a model onto a backend (weights stay memory-mapped on the CPU; other backends get a
 * copy). A corrupt or truncated file is ELA_ERR_FORMAT naming the field or tensor. */
ELA_API ela_status ela_model_load(const char *path, ela_backend *backend,
                                  const ela_model_params *params, ela_model **out);
ELA_API void ela_model_free(ela_model *model); /* NULL is a no-op */
ELA_API ela_status ela_model_get_info(const ela_model *model, ela_model_info *out);
/* The model's tokenizer (owned by the model), NULL when it came without one. */
ELA_API const ela_tokenizer *ela_model_tokenizer(const ela_model *model);

/* ---------------------------------------------------------------------------------------
 * Contexts: a KV cache and scratch for one sequence, with its attention policies.
 * ------------------------------------------------------------------------------------- */
typedef struct ela_context ela_context;

typedef struct {
    int64_t n_ctx;                /* tokens the cache holds; 0 means min(model max, 8192) */
    ela_dtype kv_dtype;           /* ELA_F16 (default), ELA_BF16, ELA_Q8_0 */
    ela_prefill_policy prefill;   /* default dense */
    ela_decode_policy decode;     /* default dense */
    int64_t prefill_chunk;        /* tokens per prefill step, a multiple of 128; 0: 2048 */
    int record_drift;             /* keep each layer's drift (ela_context_layer_drift); slower */
} ela_context_params;

ELA_API ela_context_params ela_context_params_default(void);
ELA_API ela_status ela_context_new(ela_model *model, const ela_context_params *params,
                                   ela_context **out);
ELA_API void ela_context_free(ela_context *ctx); /* NULL is a no-op */
/* Forget every cached token. */
ELA_API void ela_context_reset(ela_context *ctx);
ELA_API int64_t ela_context_n_past(const ela_context *ctx);

/* Run n tokens after the cached ones (prefill in chunks when n > 1, decode when n == 1).
 * logits (may be NULL): f32 [vocab] of the last token, or [n, vocab] of every token when
 * all_logits is nonzero (perplexity). `progress` (may be NULL) is called after every prefill
 * chunk with tokens done and total. Fails with ELA_ERR_INVALID_ARG, caching nothing, when the
 * tokens do not fit the context or an id is outside the vocabulary. */
ELA_API ela_status ela_context_eval(ela_context *ctx, const int32_t *ids, int64_t n, float *logits,
                                    int all_logits,
                                    void (*progress)(int64_t done, int64_t total, void *user),
                                    void *user);
/* What the last prefill under a sparse policy did, summed over its layers and chunks
 * (kept_blocks, causal_blocks, kept_tokens, select/attend ms; sparsity over all of them). */
/* Representation drift of every decoder layer over the tokens of the last ela_context_eval
 * (Token Sparse Attention's layer profile, PAPERS.md 2.5): drift[l] = mean over those tokens of
 * |h_out - h_in| / |h_in|, h the residual stream before and after layer l. Needs
 * record_drift in the context's params; drift has room for n >= n_layers values. */
ELA_API ela_status ela_context_layer_drift(const ela_context *ctx, double *drift, int n);
ELA_API ela_status ela_context_last_report(const ela_context *ctx, ela_prefill_report *out);

typedef struct {
    float temperature;       /* 0: greedy */
    int top_k;               /* 0: off */
    float top_p;             /* 1: off */
    uint64_t seed;
    int64_t max_tokens;      /* tokens to generate */
    const int32_t *stop;     /* extra stop ids besides the tokenizer's EOS; may be NULL */
    int n_stop;
    /* Called with each generated token and its text; return nonzero to stop. May be NULL. */
    int (*on_token)(int32_t id, const char *piece, size_t len, void *user);
    /* Called during prefill with tokens done and total. May be NULL. */
    void (*on_progress)(int64_t done, int64_t total, void *user);
    void *user;
} ela_generate_params;

ELA_API ela_generate_params ela_generate_params_default(void); /* greedy, 128 tokens */

typedef struct {
    int64_t prompt_tokens, generated_tokens;
    double prefill_ms, decode_ms;
    int stopped_by_eos;
} ela_generate_stats;

/* Prefill the prompt (after any cached tokens), then sample until max_tokens, EOS or a stop
 * id. stats may be NULL. */
ELA_API ela_status ela_generate(ela_context *ctx, const int32_t *prompt, int64_t n_prompt,
                                const ela_generate_params *params, ela_generate_stats *stats);

/* ---------------------------------------------------------------------------------------
 * Testing hooks
 * ------------------------------------------------------------------------------------- */
/* Make the n-th host allocation made by ela from now on fail (n >= 1), so tests can check
 * that ELA_ERR_OOM comes back with nothing leaked; n = 0 disables. Process-wide. */
ELA_API void ela_debug_fail_alloc(int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* ELA_H */

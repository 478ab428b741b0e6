/* rope (ela.h "Model ops"): rotary position embedding in place on x [M, H, d], row m at position
 * pos[m]; HF rotate_half or interleaved pairs, with linear or Llama 3.1 frequency scaling.
 * Validates the parameters and every position (>= 0) on the host, then calls the backend; the
 * runtime's entry skips reading the positions back (it wrote them). */
#include <math.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/ops/model_op_check.h"
#include "core/ops/rope_freqs.h"
#include "core/ops/runtime_ops.h"

static ela_status check_params(const ela_rope_params *p, int64_t d, ela_rope_params *out) {
    ela_rope_params r = *p;
    if (!isfinite(r.theta) || r.theta <= 0.0f)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params theta is %g, must be > 0",
                        (double)r.theta);
    if (r.n_rot == 0)
        r.n_rot = d > (int64_t)1 << 30 ? 1 << 30 : (int)d;
    if (r.n_rot < 0 || r.n_rot % 2 != 0 || r.n_rot > d)
        return ela_fail(ELA_ERR_INVALID_ARG,
                        "ela_rope: params n_rot is %d (from %d), must be even, >= 0 and <= d = "
                        "%lld",
                        r.n_rot, p->n_rot, (long long)d);
    if (r.interleaved != 0 && r.interleaved != 1)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params interleaved is %d, must be 0 or 1",
                        r.interleaved);
    if (r.scaling != ELA_ROPE_SCALING_NONE && r.scaling != ELA_ROPE_SCALING_LINEAR &&
        r.scaling != ELA_ROPE_SCALING_LLAMA3 && r.scaling != ELA_ROPE_SCALING_YARN)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params scaling is %d, not an "
                        "ela_rope_scaling", (int)r.scaling);
    if (r.scaling != ELA_ROPE_SCALING_NONE && (!isfinite(r.factor) || r.factor <= 0.0f))
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params factor is %g, must be > 0",
                        (double)r.factor);
    if (r.scaling == ELA_ROPE_SCALING_LLAMA3) {
        /* HF divides by (high - low) and by both factors. */
        if (!isfinite(r.low_freq_factor) || !isfinite(r.high_freq_factor) ||
            r.low_freq_factor <= 0.0f || r.high_freq_factor <= r.low_freq_factor)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_rope: params low_freq_factor %g and high_freq_factor %g must "
                            "satisfy 0 < low < high", (double)r.low_freq_factor,
                            (double)r.high_freq_factor);
        if (r.original_max_position <= 0)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_rope: params original_max_position is %lld, must be > 0",
                            (long long)r.original_max_position);
    }
    if (r.scaling == ELA_ROPE_SCALING_YARN) {
        if (r.original_max_position <= 0)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "ela_rope: params original_max_position is %lld, must be > 0",
                            (long long)r.original_max_position);
        if (!isfinite(r.beta_fast) || !isfinite(r.beta_slow) || !isfinite(r.attn_factor) ||
            r.beta_fast < 0.0f || r.beta_slow < 0.0f || r.attn_factor < 0.0f)
            return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params beta_fast %g, beta_slow %g and "
                            "attn_factor %g must be >= 0 (0: the default)", (double)r.beta_fast,
                            (double)r.beta_slow, (double)r.attn_factor);
    }
    for (int i = 0; r.freq_factors && i < r.n_rot / 2; i++)
        if (!isfinite(r.freq_factors[i]) || r.freq_factors[i] <= 0.0f)
            return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params freq_factors[%d] is %g, must "
                            "be > 0", i, (double)r.freq_factors[i]);
    *out = r;
    return ELA_OK;
}

/* The backend's call with the frequencies filled in (on the stack for head dims up to 512:
 * this runs twice per layer and decoded token). */
static ela_status rope_call(ela_backend *be, ela_rope_args *a) {
    double stack_inv[256];
    int half = a->p.n_rot / 2;
    double *inv = half <= 256 ? stack_inv : ela_calloc((size_t)half, sizeof *inv);
    if (!inv)
        return ela_fail(ELA_ERR_OOM, "ela_rope: out of host memory for %d frequencies", half);
    double scale = 1.0;
    rope_inv_freqs(&a->p, inv, &scale);
    a->inv_freq = inv;
    a->attn_scale = (float)scale;
    ela_status st = be->iface->rope(be->ctx, a);
    if (inv != stack_inv)
        ela_free(inv);
    return st;
}

/* check_pos: read the positions back and check them (the public op); 0 for the runtime, which
 * wrote them itself (core/ops/runtime_ops.h). */
static ela_status rope_run(ela_backend *be, ela_tensor *x, const ela_tensor *pos,
                           const ela_rope_params *params, int check_pos) {
    static const char op[] = "rope";
    if (!be)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: backend is NULL");
    ela_status st;
    if ((st = op_check_tensor(op, be, x, "x", 3, 1u << ELA_F32, "[M, H, d]")) != ELA_OK ||
        (st = op_check_tensor(op, be, pos, "pos", 1, 1u << ELA_I32, "[M]")) != ELA_OK)
        return st;
    if (!params)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: params is NULL");
    ela_rope_args a = {x, pos, x->extents[0], x->extents[2], 0, *params, NULL, 1.0f};
    if (x->extents[1] > 1 << 20)
        return ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: tensor x has %lld heads, above 2^20",
                        (long long)x->extents[1]);
    a.H = (int)x->extents[1];
    if ((st = op_check_shape(op, "pos", pos, "[M] with x's M", &a.M)) != ELA_OK ||
        (st = check_params(params, a.d, &a.p)) != ELA_OK ||
        (st = op_check_alias(op, "x", x, "pos", pos, 0)) != ELA_OK)
        return st;
    ela_dtype dtypes[2] = {x->dtype, pos->dtype};
    if ((st = op_check_backend(be, ELA_OP_ROPE, be->iface->rope != NULL, dtypes, 2)) != ELA_OK)
        return st;
    if (a.M == 0)
        return ELA_OK;
    if (!check_pos)
        return a.H == 0 || a.p.n_rot == 0 ? ELA_OK : rope_call(be, &a);
    const int32_t *p = NULL;
    int32_t *copy = NULL;
    int64_t stride = 0;
    if ((st = op_host_indices(op, be, pos, 1, a.M, &p, &stride, &copy)) != ELA_OK)
        return st;
    for (int64_t m = 0; m < a.M; m++)
        if (p[m] < 0) {
            st = ela_fail(ELA_ERR_INVALID_ARG, "ela_rope: tensor pos[%lld] is %d, must be >= 0",
                          (long long)m, (int)p[m]);
            break;
        }
    ela_free(copy);
    if (st != ELA_OK || a.H == 0 || a.p.n_rot == 0)
        return st;
    return rope_call(be, &a);
}

ela_status ela_rope(ela_backend *be, ela_tensor *x, const ela_tensor *pos,
                    const ela_rope_params *params) {
    return rope_run(be, x, pos, params, 1);
}

ela_status op_rope_host_checked(ela_backend *be, ela_tensor *x, const ela_tensor *pos,
                                const ela_rope_params *params) {
    return rope_run(be, x, pos, params, 0);
}

/* Backend configurations and device tensors for the cross-backend tests
 * (test_gpu.h). */
#define _POSIX_C_SOURCE 200809L
#include "test_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_common.h"

gpu_cfg gpu_cfgs[GPU_MAX_CFGS];
int gpu_n_cfgs;

/* Opens `name` (e.g. "cuda:0") with one environment variable set while it opens
 * (the plugins read their switches at open), as configuration `label`. */
static void open_cfg(const char *name, const ela_device_info *info, const char *var,
                     const char *value, const char *label) {
    if (gpu_n_cfgs == GPU_MAX_CFGS) {
        CHECK(!"GPU_MAX_CFGS too small");
        return;
    }
    if (var)
        test_setenv(var, value);
    gpu_cfg *cfg = &gpu_cfgs[gpu_n_cfgs];
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "%s %s", name, label);
    ela_status st = ela_backend_open(name, &cfg->be);
    if (var)
        test_setenv(var, NULL);
    CHECKF(st == ELA_OK, "open %s (%s): %s (%s)", cfg->name, info->name, ela_status_str(st),
           ela_last_error());
    if (st == ELA_OK)
        gpu_n_cfgs++;
}

/* Every device of `plugin` in each configuration; a machine without devices
 * (the reason starts with `none`) is skipped. */
static void open_plugin(const ela_backend_info *list, int n, const char *plugin, const char *none,
                        const char *kind) {
    const ela_backend_info *be = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].name, plugin) == 0)
            be = &list[i];
    CHECKF(be != NULL, "ela_backend_list has no %s entry", plugin);
    if (!be)
        return;
    if (!be->available) {
        /* Only a missing loader, driver or device is a machine without the GPU;
         * anything else (a plugin that fails to load, a missing validation layer)
         * is a failure: this test is built with the plugin. */
        int skip = strncmp(be->reason, none, strlen(none)) == 0;
        CHECKF(skip, "%s is unavailable for a reason other than a missing device: %s%s", plugin,
               be->reason,
               strstr(be->reason, "VALIDATION")
                   ? " (install vulkan-validationlayers or set ELA_VK_VALIDATION=0)"
                   : "");
        if (skip)
            printf("skipped: no %s device (%s)\n", kind, be->reason);
        return;
    }
    for (int dev = 0; dev < be->n_devices; dev++) {
        const ela_device_info *info = &be->devices[dev];
        char name[32];
        snprintf(name, sizeof name, "%s:%d", plugin, dev);
        printf("%s: %s [%s]\n", name, info->name, info->details);
        if (strcmp(plugin, "vulkan") == 0) {
            open_cfg(name, info, NULL, NULL, "default");
            open_cfg(name, info, "ELA_VK_DISABLE", "uma,storage16,subgroup",
                     "staging+words+shared");
        } else {
            open_cfg(name, info, NULL, NULL, "default");
            open_cfg(name, info, "ELA_CUDA_FORCE", "generic", "generic");
            open_cfg(name, info, "ELA_CUDA_SPLITS", "5", "splits=5");
            open_cfg(name, info, "ELA_CUDA_SPLITS", "1", "splits=1");
        }
    }
}

int gpu_cfgs_open(int want_vulkan, int want_cuda) {
    const char *val = getenv("ELA_VK_VALIDATION");
    if (!val || !*val)
        test_setenv("ELA_VK_VALIDATION", "1");
    memset(&gpu_cfgs[0], 0, sizeof gpu_cfgs[0]);
    gpu_n_cfgs = 0;
    CHECK_STATUS(ela_backend_open("cpu", &gpu_cfgs[0].be), ELA_OK);
    if (!gpu_cfgs[0].be)
        return 0;
    snprintf(gpu_cfgs[0].name, sizeof gpu_cfgs[0].name, "cpu");
    gpu_n_cfgs = 1;
    ela_backend_info list[8];
    int n = 0;
    CHECK_STATUS(ela_backend_list(list, 8, &n), ELA_OK);
    n = n < 8 ? n : 8;
    if (want_vulkan)
        open_plugin(list, n, "vulkan", "no Vulkan", "Vulkan");
    if (want_cuda)
        open_plugin(list, n, "cuda", "no CUDA device", "CUDA");
    if (want_vulkan)
        printf("validation: ELA_VK_VALIDATION=%s\n", getenv("ELA_VK_VALIDATION"));
    return gpu_n_cfgs > 1;
}

void gpu_cfgs_report(void) {
    for (int k = 0; k < gpu_n_cfgs; k++) {
        const gpu_cfg *c = &gpu_cfgs[k];
        printf("%-36s %4d runs %8.2f s  worst error/tolerance %.2f", c->name, c->runs, c->seconds,
               c->worst);
        if (c->worst_lse > 0.0)
            printf(" (lse %.2f)", c->worst_lse);
        printf("\n");
    }
}

ela_status gpu_call_done(gpu_cfg *cfg, ela_status st, double t0, const char *op, int ci,
                         const char *what) {
    if (st == ELA_OK)
        st = ela_backend_synchronize(cfg->be);
    cfg->seconds += test_now() - t0;
    cfg->runs++;
    CHECKF(st == ELA_OK, "%s case %d [%s] on %s: %s (%s)", op, ci, what, cfg->name,
           ela_status_str(st), ela_last_error());
    return st;
}

int gpu_run_ops(const char *test, const gpu_op_cases *ops, int n_ops) {
    if (!gpu_cfgs_open(ELA_TEST_WANT_VULKAN, ELA_TEST_WANT_CUDA)) {
        gpu_cfgs_close();
        return test_summary(test);
    }
    const char *only_op = getenv("ELA_TEST_OP");
    const char *only = getenv("ELA_TEST_CASE");
    int only_case = only && *only ? atoi(only) : -1;
    const char *verbose_env = getenv("ELA_TEST_VERBOSE");
    int verbose = verbose_env && *verbose_env && strcmp(verbose_env, "0") != 0;
    for (int x = 0; x < n_ops; x++) {
        if (only_op && *only_op && strcmp(only_op, ops[x].name) != 0)
            continue;
        double t_op = test_now();
        for (int ci = 0; ci < ops[x].count; ci++) {
            if (only_case >= 0 && ci != only_case)
                continue;
            double t0 = test_now();
            ops[x].check(ci);
            if (verbose)
                printf("%s case %2d %6.2f s\n", ops[x].name, ci, test_now() - t0);
        }
        printf("%-18s %2d cases %7.2f s\n", ops[x].name, ops[x].count, test_now() - t_op);
    }
    gpu_cfgs_report();
    gpu_cfgs_close();
    return test_summary(test);
}

void gpu_cfgs_close(void) {
    for (int k = 0; k < gpu_n_cfgs; k++)
        ela_backend_close(gpu_cfgs[k].be);
    gpu_n_cfgs = 0;
}

ela_status gpu_dev_tensor(ela_backend *be, ela_dtype dt, int nd, const int64_t *ext, int strided,
                          ela_tensor **out) {
    *out = NULL;
    if (!strided)
        return ela_tensor_new(be, dt, nd, ext, NULL, out);
    int64_t es = (int64_t)ela_dtype_size(dt), se[4], strides[4], span = 1;
    se[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--)
        se[i] = se[i + 1] * ext[i + 1] + (i == nd - 2 ? 3 : 1);
    for (int i = 0; i < nd; i++) {
        span += (ext[i] - 1) * se[i];
        strides[i] = se[i] * es;
    }
    int64_t be_ext[1] = {span + 2};
    ela_tensor *base = NULL;
    ela_status st = ela_tensor_new(be, dt, 1, be_ext, NULL, &base);
    if (st == ELA_OK) {
        int64_t nb = be_ext[0];
        if (dt == ELA_F32 || dt == ELA_F16 || dt == ELA_BF16) {
            float *f = malloc((size_t)nb * sizeof *f);
            for (int64_t i = 0; f && i < nb; i++)
                f[i] = 1e4f;
            st = f ? ela_tensor_write_f32(base, f, nb) : ELA_ERR_OOM;
            free(f);
        } else {
            unsigned char *b = malloc((size_t)(nb * es));
            if (b)
                memset(b, 0xff, (size_t)(nb * es));
            st = b ? ela_tensor_write(base, b, (size_t)(nb * es)) : ELA_ERR_OOM;
            free(b);
        }
    }
    if (st == ELA_OK)
        st = ela_tensor_view(base, nd, ext, strides, es, out);
    ela_tensor_free(base);
    return st;
}

/* ---- attention outputs
 * ----------------------------------------------------------------- */
double gpu_tol_out(ela_dtype tq, ela_dtype tkv, ela_dtype to) {
    if (to != ELA_F32)
        return TOL_16_OUT;
    return tq == ELA_F32 && tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

double gpu_tol_lse(ela_dtype tq, ela_dtype tkv) {
    return tq == ELA_F32 && tkv == ELA_F32 ? TOL_F32 : TOL_16_IN_F32_OUT;
}

/* Uploads q, k (and v when given) host f32 data to new tensors on be. */
ela_status gpu_upload_qkv(ela_backend *be, int64_t L, int64_t n, int64_t d, int hq, int hkv,
                          ela_dtype tq, ela_dtype tkv, int strided, const float *q, const float *k,
                          const float *v, ela_tensor **tq_out, ela_tensor **tk_out,
                          ela_tensor **tv_out) {
    int64_t qx[3] = {L, hq, d}, kx[3] = {hkv, n, d};
    ela_status st = gpu_dev_tensor(be, tq, 3, qx, strided, tq_out);
    if (st == ELA_OK)
        st = gpu_dev_tensor(be, tkv, 3, kx, strided, tk_out);
    if (st == ELA_OK && v)
        st = gpu_dev_tensor(be, tkv, 3, kx, strided, tv_out);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(*tq_out, q, L * hq * d);
    if (st == ELA_OK)
        st = ela_tensor_write_f32(*tk_out, k, (int64_t)hkv * n * d);
    if (st == ELA_OK && v)
        st = ela_tensor_write_f32(*tv_out, v, (int64_t)hkv * n * d);
    return st;
}

/* Relative L2 error of an LSE, whose rows that see no key are -inf in both
 * (else +inf). The norm it is relative to is at least 1 per element: an LSE
 * near 0 (one key, a score near 0) carries the f32 rounding of the score, not
 * of its own size. */
double gpu_lse_err(const double *ref, const float *got, int64_t n) {
    double num = 0.0, den = 0.0, count = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isinf(ref[i]) && ref[i] < 0) {
            if (!(isinf(got[i]) && got[i] < 0))
                return INFINITY;
            continue;
        }
        if (!isfinite(got[i]))
            return INFINITY;
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
        count += 1.0;
    }
    den = den > count ? den : count;
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

/* Compares one attention output (o, lse) of config k with the reference and the
 * CPU's (kept in cpu_o / cpu_lse when k == 0). */
void gpu_check_attention(int k, const char *op, int ci, const char *what, const double *ref_o,
                         const double *ref_lse, const float *o, const float *lse, int64_t no,
                         int64_t nl, double tol, double tol_l, double *cpu_o, double *cpu_lse) {
    gpu_cfg *cfg = &gpu_cfgs[k];
    double err = test_rel_l2(ref_o, o, no);
    CHECKF(err <= tol, "%s case %d [%s] on %s: O rel L2 error %.3g > %.0e against the reference",
           op, ci, what, cfg->name, err, tol);
    if (err / tol > cfg->worst)
        cfg->worst = err / tol;
    if (lse) {
        double el = gpu_lse_err(ref_lse, lse, nl);
        CHECKF(el <= tol_l,
               "%s case %d [%s] on %s: LSE rel L2 error %.3g > %.0e against the "
               "reference",
               op, ci, what, cfg->name, el, tol_l);
        if (el / tol_l > cfg->worst)
            cfg->worst = el / tol_l;
    }
    if (k == 0) {
        for (int64_t i = 0; i < no; i++)
            cpu_o[i] = o[i];
        for (int64_t i = 0; lse && i < nl; i++)
            cpu_lse[i] = lse[i];
        return;
    }
    double ec = test_rel_l2(cpu_o, o, no);
    CHECKF(ec <= tol,
           "%s case %d [%s] on %s: O rel L2 error %.3g > %.0e against the cpu "
           "backend",
           op, ci, what, cfg->name, ec, tol);
    if (lse) {
        double lc = gpu_lse_err(cpu_lse, lse, nl);
        CHECKF(lc <= tol_l,
               "%s case %d [%s] on %s: LSE rel L2 error %.3g > %.0e against the cpu "
               "backend",
               op, ci, what, cfg->name, lc, tol_l);
    }
}

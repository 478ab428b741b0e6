/* Shared by the cross-backend tests: the list of backend configurations to
 * compare (the CPU first, then every device of each GPU plugin the build has,
 * each in its default configuration and with its fallbacks or kernel choices
 * forced), and device tensors laid out as packed or as strided views at odd
 * element offsets. */
#ifndef ELA_TESTS_TEST_GPU_H
#define ELA_TESTS_TEST_GPU_H

#include "ela.h"

/* The plugins a test wants, from CMake (the plugins the build has). */
#ifndef ELA_TEST_WANT_VULKAN
#define ELA_TEST_WANT_VULKAN 1
#endif
#ifndef ELA_TEST_WANT_CUDA
#define ELA_TEST_WANT_CUDA 0
#endif

typedef struct {
    char name[64]; /* "cpu", "vulkan:0 default", "cuda:0 generic", ... */
    ela_backend *be;
    double seconds;   /* time spent in this configuration's calls */
    int runs;         /* cases run on it */
    double worst;     /* worst error / tolerance against the reference */
    double worst_lse; /* the same for an LSE output, where a test keeps it apart */
} gpu_cfg;

#define GPU_MAX_CFGS (1 + 6 * ELA_MAX_DEVICES)
extern gpu_cfg gpu_cfgs[GPU_MAX_CFGS];
extern int gpu_n_cfgs;

/* Opens gpu_cfgs[0] = "cpu", then every device of the wanted plugins: Vulkan in
 * its default configuration and with every fallback forced
 * (ELA_VK_DISABLE=uma,storage16,subgroup: staging copies, 16-bit data as 32-bit
 * words, shared memory instead of subgroup shuffles); CUDA in its default
 * configuration, with every op on its simple kernels (ELA_CUDA_FORCE=generic)
 * and with the keys split 5 ways and not at all wherever a kernel can split
 * (ELA_CUDA_SPLITS=5 and 1). Sets ELA_VK_VALIDATION=1 unless the environment
 * sets it. A wanted plugin must load; one whose machine has no device prints
 * "skipped: no <kind> device (<reason>)". Returns 1 when at least one GPU
 * configuration is open, else 0 (the caller then only reports and closes). */
int gpu_cfgs_open(int want_vulkan, int want_cuda);
/* After an op call on configuration cfg that returned st and started at t0 (test_now()):
 * waits for the device, counts the time and the run, and checks the status, naming op, case ci
 * and `what`. Returns the status after the wait. */
ela_status gpu_call_done(gpu_cfg *cfg, ela_status st, double t0, const char *op, int ci,
                         const char *what);

/* One op's cases: check(ci) runs case ci on every configuration. */
typedef struct {
    const char *name;
    int count;
    void (*check)(int ci);
} gpu_op_cases;

/* The whole test: opens the configurations, runs every case of each op (one op with
 * ELA_TEST_OP=<name>, one case with ELA_TEST_CASE=<index>; ELA_TEST_VERBOSE=1 prints each
 * case's time), reports and closes them; returns test_summary(test). */
int gpu_run_ops(const char *test, const gpu_op_cases *ops, int n_ops);

/* One line per configuration: runs, seconds, worst error / tolerance. */
void gpu_cfgs_report(void);
void gpu_cfgs_close(void);

/* A packed tensor, or (strided) a view one element into a 1-D base with every
 * row stride padded by a few elements, so 16-bit rows start mid-word and u8
 * rows anywhere in a word. The base is filled with a finite filler (1e4, or
 * 0xff bytes) so that a read outside the view shows. */
ela_status gpu_dev_tensor(ela_backend *be, ela_dtype dt, int nd, const int64_t *ext, int strided,
                          ela_tensor **out);

/* ---- attention outputs
 * ------------------------------------------------------------------ */
/* Tolerances on the relative L2 error (the references read exactly the rounded
 * inputs): f32 1e-5; 16-bit inputs with f32 output 2e-3 (accumulation noise);
 * 16-bit output 1e-2 (its own rounding). LSE (f32): 1e-5 with f32 inputs, 2e-3
 * otherwise. A GPU against the CPU backend uses the same bounds. */
#define TOL_F32 1e-5
#define TOL_16_IN_F32_OUT 2e-3
#define TOL_16_OUT 1e-2
double gpu_tol_out(ela_dtype tq, ela_dtype tkv, ela_dtype to);
double gpu_tol_lse(ela_dtype tq, ela_dtype tkv);

/* Uploads q [L, hq, d], k and (when v is given) v [hkv, n, d] from host f32
 * data to new tensors on be (gpu_dev_tensor layouts). */
ela_status gpu_upload_qkv(ela_backend *be, int64_t L, int64_t n, int64_t d, int hq, int hkv,
                          ela_dtype tq, ela_dtype tkv, int strided, const float *q, const float *k,
                          const float *v, ela_tensor **tq_out, ela_tensor **tk_out,
                          ela_tensor **tv_out);

/* Relative L2 error of an LSE; rows that see no key must be -inf in both (else
 * +inf). */
double gpu_lse_err(const double *ref, const float *got, int64_t n);

/* Checks one attention output (o [no], optional lse [nl]) of configuration k
 * against the reference and, for k > 0, against the CPU's (which k == 0 stores
 * in cpu_o / cpu_lse); records the worst error / tolerance. */
void gpu_check_attention(int k, const char *op, int ci, const char *what, const double *ref_o,
                         const double *ref_lse, const float *o, const float *lse, int64_t no,
                         int64_t nl, double tol, double tol_l, double *cpu_o, double *cpu_lse);

#endif

/* Checked CUDA calls for the CUDA backend plugin: every runtime call goes through CUDA_TRY or
 * CUDA_GOTO, which turn a failure into an ela_status (ELA_ERR_OOM for allocation failures,
 * ELA_ERR_UNAVAILABLE for a missing driver or device, ELA_ERR_BACKEND otherwise) with the CUDA
 * error string in the message ("cuda: cudaMemcpyAsync: an illegal memory access ..."). */
#ifndef ELA_BACKENDS_CUDA_CUDA_CHECK_H
#define ELA_BACKENDS_CUDA_CUDA_CHECK_H

#include "cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Report err from `what` through the host and return the matching status. Clears the
 * thread's last (non-sticky) CUDA error so it is not reported twice. */
ela_status cuda_fail_err(cudaError_t err, const char *what);

#ifdef __cplusplus
}
#endif

/* Return from the calling function on failure. */
#define CUDA_TRY(call)                                                                          \
    do {                                                                                        \
        cudaError_t cuda_try_err_ = (call);                                                     \
        if (cuda_try_err_ != cudaSuccess)                                                       \
            return cuda_fail_err(cuda_try_err_, #call);                                         \
    } while (0)

/* Set `st` and jump to `label` on failure (functions with a cleanup path). */
#define CUDA_GOTO(call, st, label)                                                              \
    do {                                                                                        \
        cudaError_t cuda_try_err_ = (call);                                                     \
        if (cuda_try_err_ != cudaSuccess) {                                                     \
            (st) = cuda_fail_err(cuda_try_err_, #call);                                         \
            goto label;                                                                         \
        }                                                                                       \
    } while (0)

/* After a kernel launch: launch configuration errors show up here, faults at the next sync. */
#define CUDA_LAUNCHED(what)                                                                     \
    do {                                                                                        \
        cudaError_t cuda_try_err_ = cudaGetLastError();                                         \
        if (cuda_try_err_ != cudaSuccess)                                                       \
            return cuda_fail_err(cuda_try_err_, what);                                          \
    } while (0)

#endif

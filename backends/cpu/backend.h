/* CPU backend state shared by its op files. */
#ifndef ELA_CPU_BACKEND_H
#define ELA_CPU_BACKEND_H

#include "attn_kernels.h"
#include "core/backend_iface.h"
#include "cpu_features.h"

typedef struct {
    cpu_level level;
    const cpu_attn_kernels *attn;
    int threads;
} cpu_backend;

/* Host address of a tensor's first element. */
static inline char *cpu_tensor_data(const ela_tensor *t) {
    return (char *)t->buffer->handle + t->offset;
}

ela_status cpu_attn_dense(void *ctx, const ela_attn_dense_args *args);

#endif

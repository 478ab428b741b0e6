/* Entries of model ops for the runtime (core/model), which writes the index tensors itself from
 * values it checked on the host: the same argument checks as the public ops, minus reading the
 * indices back from the backend, which on a GPU is a device synchronisation per call (two per
 * layer per decoded token for RoPE). */
#ifndef ELA_CORE_OPS_RUNTIME_OPS_H
#define ELA_CORE_OPS_RUNTIME_OPS_H

#include "core/backend_iface.h"

/* ela_rope whose positions the caller guarantees are >= 0. */
ela_status op_rope_host_checked(ela_backend *be, ela_tensor *x, const ela_tensor *pos,
                                const ela_rope_params *params);
/* ela_get_rows whose ids the caller guarantees are inside [0, V). */
ela_status op_get_rows_host_checked(ela_backend *be, const ela_tensor *table,
                                    const ela_tensor *ids, ela_tensor *out);

#endif

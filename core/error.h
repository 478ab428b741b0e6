/* Thread-local error message behind ela_last_error(); internal to libela.
 * Plugins reach ela_set_error through ela_host_api (core/backend_iface.h). */
#ifndef ELA_CORE_ERROR_H
#define ELA_CORE_ERROR_H

#include "ela.h"

#if defined(__GNUC__) || defined(__clang__)
#define ELA_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ELA_PRINTF(f, a)
#endif

/* Record a message for ela_last_error(); printf-style. */
void ela_set_error(const char *fmt, ...) ELA_PRINTF(1, 2);
/* Record a message and return status, for `return ela_fail(ELA_ERR_..., "...")`. */
ela_status ela_fail(ela_status status, const char *fmt, ...) ELA_PRINTF(2, 3);

#endif

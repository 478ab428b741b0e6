/* Status names and the thread-local message behind ela_last_error(). The library never
 * prints: every failure leaves its explanation here for the caller. */
#include <stdarg.h>
#include <stdio.h>

#include "error.h"

static _Thread_local char last_error[1024];

static void set_error_v(const char *fmt, va_list ap) {
    vsnprintf(last_error, sizeof last_error, fmt, ap);
}

void ela_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error_v(fmt, ap);
    va_end(ap);
}

ela_status ela_fail(ela_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error_v(fmt, ap);
    va_end(ap);
    return status;
}

const char *ela_last_error(void) { return last_error; }

const char *ela_status_str(ela_status status) {
    switch (status) {
    case ELA_OK: return "ELA_OK";
    case ELA_ERR_INVALID_ARG: return "ELA_ERR_INVALID_ARG";
    case ELA_ERR_UNSUPPORTED: return "ELA_ERR_UNSUPPORTED";
    case ELA_ERR_OOM: return "ELA_ERR_OOM";
    case ELA_ERR_FORMAT: return "ELA_ERR_FORMAT";
    case ELA_ERR_IO: return "ELA_ERR_IO";
    case ELA_ERR_UNAVAILABLE: return "ELA_ERR_UNAVAILABLE";
    case ELA_ERR_BACKEND: return "ELA_ERR_BACKEND";
    case ELA_ERR_INTERNAL: return "ELA_ERR_INTERNAL";
    }
    return "ELA_ERR_UNKNOWN";
}

const char *ela_version(void) { return ELA_VERSION_STRING; }

/* Error and progress reporting of the ela command-line tool (see cli.h): library failures
 * exit 1 with the status name and ela_last_error(); command-line mistakes exit 2 with usage. */
#include <stdarg.h>
#include <stdio.h>

#include "cli.h"

int cli_fail(ela_status status)
{
    const char *msg = ela_last_error();
    if (msg && *msg)
        fprintf(stderr, "ela: %s: %s\n", ela_status_str(status), msg);
    else
        fprintf(stderr, "ela: %s\n", ela_status_str(status));
    return CLI_EXIT_FAIL;
}

int cli_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ela: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(usage, stderr);
    return CLI_EXIT_USAGE;
}

void cli_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ela: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
}

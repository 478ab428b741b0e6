/* Command-line argument helpers of the ela tool: strict number parsing (no trailing garbage,
 * no silent overflow) and "--name VALUE" / "--name=VALUE" options. */
#ifndef ELA_TOOLS_CLI_ARGS_H
#define ELA_TOOLS_CLI_ARGS_H

#include <stdint.h>

/* A decimal integer with an optional sign and nothing else (no spaces, no "12x"), within
 * [min, max]. Returns 0, or -1 (leaving *out unchanged). */
int cli_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* A decimal number (strtod syntax, nothing after it) within [min, max]; NaN is refused.
 * Returns 0, or -1 (leaving *out unchanged). */
int cli_parse_f64(const char *s, double min, double max, double *out);

/* When argv[*i] is option `name` ("--n"), as "--n VALUE" or "--n=VALUE": sets *value,
 * moves *i to the option's last argument and returns 1. Returns -1 when the value is
 * missing (no next argument, or it is another "--option"), 0 when argv[*i] is another
 * argument. */
int cli_option(int argc, char **argv, int *i, const char *name, const char **value);

#endif

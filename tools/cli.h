/* Shared pieces of the ela command-line tool (tools/ela.c dispatches to the cmd_* entry
 * points): exit codes, error reporting, the thread count the library will use. */
#ifndef ELA_TOOLS_CLI_H
#define ELA_TOOLS_CLI_H

#include "ela.h"

#if defined(__GNUC__) || defined(__clang__)
#define CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CLI_PRINTF(fmt, args)
#endif

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1  /* the library (or the machine) failed */
#define CLI_EXIT_USAGE 2 /* the command line is wrong */

/* Subcommands; argv[0] is the subcommand's own name ("info", "attn", ...). Return an exit
 * code. */
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_eval_niah(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_bench_attn(int argc, char **argv);
int cmd_bench_sparse(int argc, char **argv);
int cmd_bench_membw(int argc, char **argv);
int cmd_bench_model(int argc, char **argv);

/* "ela: <ela_status_str>: <ela_last_error()>" on stderr; returns CLI_EXIT_FAIL. */
int cli_fail(ela_status status);
/* "ela: <printf message>" then `usage` on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *usage, const char *fmt, ...) CLI_PRINTF(2, 3);
/* "ela: <printf message>" on stderr (progress and non-library failures). */
void cli_note(const char *fmt, ...) CLI_PRINTF(1, 2);

/* Threads the CPU backend runs on: ELA_THREADS when it is a positive integer, else the
 * processors available to the process (omp_get_num_procs, or sysconf without OpenMP).
 * *source (optional) is set to "ELA_THREADS" or "cores". */
int cli_threads(const char **source);

#endif

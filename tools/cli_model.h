/* Model loading and progress display shared by `ela run`, `ela perplexity` and `ela eval`:
 * open a backend, load a model with a progress bar on a terminal, read a text file. */
#ifndef ELA_TOOLS_CLI_MODEL_H
#define ELA_TOOLS_CLI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ela.h"

/* Opens `backend_name` (NULL: ELA_BACKEND or auto) and loads the model at `path` onto it, with
 * Elastic Attention router weights from `router_path` (NULL: those in the checkpoint, if any),
 * drawing a progress bar on stderr when it is a terminal. On failure prints the error and
 * returns its status, leaving both outputs NULL. */
ela_status cli_load_model(const char *path, const char *backend_name, const char *router_path,
                          ela_backend **be, ela_model **model);

/* The prefill chunk for a context: `chunk` when given (nonzero); else, for policies that must
 * see the whole prompt in one chunk (tsa and tsa+xattn select over it, the Elastic router pools
 * its first and last keys), `tokens` rounded up to a block; else 0 (the library's default). */
int64_t cli_prefill_chunk(const ela_prefill_policy *policy, int64_t chunk, int64_t tokens);

/* Reads a whole file into a NUL-terminated malloc'd buffer; prints the error and returns
 * nonzero on failure. */
int cli_read_file(const char *path, char **text, size_t *len);

/* Progress bar on stderr when it is a terminal ("label [#####     ] done/total"); a final call
 * with done == total ends the line. Prints nothing when stderr is not a terminal. */
void cli_progress(const char *label, int64_t done, int64_t total);

/* Peak resident memory of the process in MiB (getrusage). */
double cli_peak_rss_mib(void);

#endif

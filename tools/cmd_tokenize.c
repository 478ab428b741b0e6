/* `ela tokenize` (issue 4): the token ids of a text, on one line separated by spaces, for
 * checking against other tokenizers. The tokenizer comes from a tokenizer.json (or a directory
 * holding one) or from a model (its tokenizer.json or GGUF metadata). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_args.h"
#include "cli_model.h"

static const char usage[] =
    "usage: ela tokenize (--tokenizer FILE|DIR | -m MODEL) (-f TEXTFILE | -p TEXT) [--no-special]\n"
    "  --tokenizer P  a tokenizer.json, or a directory holding one\n"
    "  -m MODEL       a model directory or GGUF file (loads the model)\n"
    "  -f FILE        the text to encode, byte for byte\n"
    "  -p TEXT        the text on the command line\n"
    "  --no-special   do not add the BOS the tokenizer's post-processor adds\n"
    "prints the ids on one line, separated by spaces\n";

int cmd_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *model_path = NULL, *file = NULL, *prompt = NULL;
    int add_special = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(argv[i], "--no-special") == 0) {
            add_special = 0;
            continue;
        }
        const char **dst = NULL;
        if ((r = cli_option(argc, argv, &i, "--tokenizer", &v)) != 0)
            dst = &tok_path;
        else if ((r = cli_option(argc, argv, &i, "-m", &v)) != 0 ||
                 (r = cli_option(argc, argv, &i, "--model", &v)) != 0)
            dst = &model_path;
        else if ((r = cli_option(argc, argv, &i, "-f", &v)) != 0 ||
                 (r = cli_option(argc, argv, &i, "--file", &v)) != 0)
            dst = &file;
        else if ((r = cli_option(argc, argv, &i, "-p", &v)) != 0 ||
                 (r = cli_option(argc, argv, &i, "--prompt", &v)) != 0)
            dst = &prompt;
        if (!dst)
            return cli_usage_error(usage, "tokenize: unknown argument '%s'", argv[i]);
        if (r < 0)
            return cli_usage_error(usage, "tokenize: %s needs a value", argv[i]);
        *dst = v;
    }
    if (!tok_path == !model_path)
        return cli_usage_error(usage, "tokenize: give one of --tokenizer and -m");
    if (!file == !prompt)
        return cli_usage_error(usage, "tokenize: give one of -f and -p");

    char *text = NULL;
    size_t len = 0;
    if (file) {
        if (cli_read_file(file, &text, &len) != 0)
            return CLI_EXIT_FAIL;
    } else {
        len = strlen(prompt);
    }
    const char *input = file ? text : prompt;

    int rc = CLI_EXIT_FAIL;
    ela_tokenizer *own = NULL;
    ela_backend *be = NULL;
    ela_model *model = NULL;
    const ela_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    ela_status st;
    if (tok_path) {
        if ((st = ela_tokenizer_load(tok_path, &own)) != ELA_OK) {
            cli_fail(st);
            goto done;
        }
        tok = own;
    } else {
        if (cli_load_model(model_path, NULL, NULL, &be, &model) != ELA_OK)
            goto done;
        if (!(tok = ela_model_tokenizer(model))) {
            cli_note("tokenize: the model %s has no tokenizer", model_path);
            goto done;
        }
    }
    int64_t n = 0;
    if ((st = ela_tokenize(tok, input, len, add_special, NULL, 0, &n)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    if (!(ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1)))) {
        cli_note("tokenize: out of memory for %lld ids", (long long)n);
        goto done;
    }
    if ((st = ela_tokenize(tok, input, len, add_special, ids, n, &n)) != ELA_OK) {
        cli_fail(st);
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    rc = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
    free(ids);
    ela_tokenizer_free(own);
    ela_model_free(model);
    ela_backend_close(be);
    free(text);
    return rc;
}

/* libFuzzer target for the model file parsers (DESIGN.md 7): the first input byte picks what the
 * rest is fed to: 0 a GGUF file through ela_model_load, 1 model.safetensors beside a fixed tiny
 * config.json through ela_model_load, 2 json_parse, 3 config.json text through
 * model_config_from_json. Any status is fine; crashes, sanitizer reports and leaks are not.
 *
 * Build (clang; not part of the CMake build):
 *   CC=clang cmake -S . -B build-fuzz -DELA_SANITIZE=ON -DELA_VULKAN=OFF -DELA_CUDA=OFF \
 *     -DELA_BUILD_TESTS=OFF -DELA_BUILD_TOOLS=OFF -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link
 *   cmake --build build-fuzz --target ela_static
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -I. \
 *     tests/fuzz/fuzz_model_files.c build-fuzz/lib/libela.a -lm -fopenmp -o fuzz_model_files
 * Seeds: ELA_FUZZ_CORPUS=corpus ./build/bin/test_model_files writes one file per mode; then
 *   ./fuzz_model_files corpus -max_len=65536 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/model/json.h"
#include "core/model/model_config.h"
#include "ela.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The config of the test's small model (tests/test_model_files.c, small_cfg). */
static const char small_config[] =
    "{\n  \"architectures\": [\"Qwen2ForCausalLM\"],\n  \"model_type\": \"qwen2\",\n"
    "  \"hidden_size\": 32,\n  \"intermediate_size\": 16,\n  \"num_hidden_layers\": 1,\n"
    "  \"num_attention_heads\": 2,\n  \"num_key_value_heads\": 1,\n  \"head_dim\": 4,\n"
    "  \"vocab_size\": 16,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 500000.0,\n"
    "  \"max_position_embeddings\": 4096,\n  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\"\n}\n";

static char root[256], gguf_file_path[300], hf_dir[300], st_path[330];
static ela_backend *cpu;

static void write_file(const char *path, const void *d, size_t n) {
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (n && fwrite(d, 1, n, f) != n)
        abort();
    fclose(f);
}

static void init(void) {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(root, sizeof root, "%s/ela_fuzz_XXXXXX", base);
    if (!mkdtemp(root) || ela_backend_open("cpu", &cpu) != ELA_OK)
        abort();
    snprintf(gguf_file_path, sizeof gguf_file_path, "%s/m.gguf", root);
    snprintf(hf_dir, sizeof hf_dir, "%s/hf", root);
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", hf_dir);
    mkdir(hf_dir, 0700);
    char cfg[330];
    snprintf(cfg, sizeof cfg, "%s/config.json", hf_dir);
    write_file(cfg, small_config, strlen(small_config));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!cpu)
        init();
    if (size < 1)
        return 0;
    int mode = data[0] % 4;
    data++;
    size--;
    ela_model *m = NULL;
    json_doc *doc = NULL;
    switch (mode) {
    case 0:
        write_file(gguf_file_path, data, size);
        if (ela_model_load(gguf_file_path, cpu, NULL, &m) == ELA_OK)
            ela_model_free(m);
        break;
    case 1:
        write_file(st_path, data, size);
        if (ela_model_load(hf_dir, cpu, NULL, &m) == ELA_OK)
            ela_model_free(m);
        break;
    case 2:
        if (json_parse((const char *)data, size, "fuzz.json", &doc) == ELA_OK)
            json_free(doc);
        break;
    default:
        if (json_parse((const char *)data, size, "config.json", &doc) == ELA_OK) {
            ela_model_info info;
            int tied;
            (void)model_config_from_json(json_root(doc), "config.json", &info, &tied);
            json_free(doc);
        }
        break;
    }
    return 0;
}

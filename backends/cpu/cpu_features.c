/* CPU feature detection (x86 cpuid through the compiler's builtins, NEON on aarch64) and the
 * run-time choice of SIMD level and thread count for the CPU backend. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.h"
#include "cpu_features.h"

static cpu_info info;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static void append_feature(const char *name) {
    size_t used = strlen(info.features);
    snprintf(info.features + used, sizeof info.features - used, "%s%s", used ? " " : "", name);
}

static void read_model_name(void) {
    snprintf(info.model, sizeof info.model, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        /* "model name" on x86, "Model" or "Hardware" on some ARM kernels */
        if (strncmp(line, "model name", 10) == 0 || strncmp(line, "Model", 5) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t')
                    colon++;
                colon[strcspn(colon, "\n")] = '\0';
                snprintf(info.model, sizeof info.model, "%s", colon);
                break;
            }
        }
    }
    fclose(f);
}

static void detect(void) {
    read_model_name();
    info.level_ok[CPU_LEVEL_SCALAR] = 1;
    info.best = CPU_LEVEL_SCALAR;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    /* The compiler's cpu_supports also checks that the OS saves the AVX/AVX-512 state. */
    int avx2 = __builtin_cpu_supports("avx2"), fma = __builtin_cpu_supports("fma");
    int f16c = 0;
#if defined(__clang__) || __GNUC__ >= 11
    f16c = __builtin_cpu_supports("f16c");
#else
    f16c = avx2; /* every AVX2 CPU has F16C */
#endif
    int avx512f = __builtin_cpu_supports("avx512f"), avx512bw = __builtin_cpu_supports("avx512bw");
    int avx512vl = __builtin_cpu_supports("avx512vl"), avx512dq = __builtin_cpu_supports("avx512dq");
    if (avx2) append_feature("avx2");
    if (fma) append_feature("fma");
    if (f16c) append_feature("f16c");
    if (avx512f) append_feature("avx512f");
    if (avx512bw) append_feature("avx512bw");
    if (avx512vl) append_feature("avx512vl");
    if (avx512dq) append_feature("avx512dq");
    info.level_ok[CPU_LEVEL_AVX2] = avx2 && fma && f16c;
    info.level_ok[CPU_LEVEL_AVX512] = info.level_ok[CPU_LEVEL_AVX2] && avx512f && avx512bw &&
                                      avx512vl && avx512dq;
    info.best = info.level_ok[CPU_LEVEL_AVX512] ? CPU_LEVEL_AVX512
                : info.level_ok[CPU_LEVEL_AVX2] ? CPU_LEVEL_AVX2 : CPU_LEVEL_SCALAR;
#elif defined(__aarch64__)
    append_feature("neon"); /* Advanced SIMD is mandatory on AArch64 */
    info.level_ok[CPU_LEVEL_NEON] = 1;
    info.best = CPU_LEVEL_NEON;
#endif
    if (!info.features[0])
        append_feature("none");
}

const cpu_info *cpu_detect(void) {
    pthread_once(&detect_once, detect);
    return &info;
}

static const char *const level_names[] = {"scalar", "neon", "avx2", "avx512"};

const char *cpu_level_name(cpu_level level) { return level_names[level]; }

ela_status cpu_level_choose(cpu_level *out) {
    const cpu_info *ci = cpu_detect();
    const char *want = getenv("ELA_CPU_LEVEL");
    if (!want || !*want) {
        *out = ci->best;
        return ELA_OK;
    }
    for (int l = 0; l < 4; l++) {
        if (strcmp(want, level_names[l]) != 0)
            continue;
        if (!ci->level_ok[l])
            return ela_fail(ELA_ERR_UNSUPPORTED,
                            "cpu: ELA_CPU_LEVEL=%s but this CPU or build cannot run it (has: %s)",
                            want, ci->features);
        *out = (cpu_level)l;
        return ELA_OK;
    }
    return ela_fail(ELA_ERR_INVALID_ARG,
                    "cpu: unknown ELA_CPU_LEVEL '%s' (expected scalar, neon, avx2 or avx512)", want);
}

const cpu_attn_kernels *cpu_level_kernels(cpu_level level) {
    switch (level) {
#if defined(__x86_64__)
    case CPU_LEVEL_AVX2: return cpu_attn_kernels_avx2();
    case CPU_LEVEL_AVX512: return cpu_attn_kernels_avx512();
#endif
#if defined(__aarch64__)
    case CPU_LEVEL_NEON: return cpu_attn_kernels_neon();
#endif
    default: return cpu_attn_kernels_scalar();
    }
}

ela_status cpu_thread_count(int *out) {
    const char *env = getenv("ELA_THREADS");
    if (env && *env) {
        char *end = NULL;
        long v = strtol(env, &end, 10);
        if (*end != '\0' || v < 1 || v > 4096)
            return ela_fail(ELA_ERR_INVALID_ARG,
                            "cpu: ELA_THREADS='%s' is not a thread count between 1 and 4096", env);
        *out = (int)v;
        return ELA_OK;
    }
#ifdef _OPENMP
    *out = omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    *out = n > 0 ? (int)n : 1;
#endif
    return ELA_OK;
}

/* Error paths through the public API (DESIGN.md 6): every bad argument comes back as the right
 * ela_status with an ela_last_error() message naming the culprit (tensor, backend, name); the
 * backend list; and fault injection (ela_debug_fail_alloc) failing every allocation in turn
 * around open + tensors + ela_attn_dense, each failure ELA_ERR_OOM with nothing leaked (the
 * sanitizer build's leak checker tells). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/attn_dense_ref.h"
#include "test_common.h"

/* The call fails with `want` and the message names `word` (a whole word, any case). */
#define CHECK_FAIL(call, want, word)                                                            \
    do {                                                                                        \
        CHECK_STATUS(call, want);                                                               \
        CHECKF(test_has_word(ela_last_error(), word), "message \"%s\" does not name '%s'",     \
               ela_last_error(), word);                                                         \
    } while (0)

static ela_backend *open_cpu(void) {
    ela_backend *be = NULL;
    CHECK_STATUS(ela_backend_open("cpu", &be), ELA_OK);
    return be;
}

static ela_tensor *new3(ela_backend *be, ela_dtype dt, int64_t a, int64_t b, int64_t c) {
    ela_tensor *t = NULL;
    int64_t e[3] = {a, b, c};
    CHECK_STATUS(ela_tensor_new(be, dt, 3, e, NULL, &t), ELA_OK);
    return t;
}

static ela_tensor *new2(ela_backend *be, ela_dtype dt, int64_t a, int64_t b) {
    ela_tensor *t = NULL;
    int64_t e[2] = {a, b};
    CHECK_STATUS(ela_tensor_new(be, dt, 2, e, NULL, &t), ELA_OK);
    return t;
}

static void fill_zero(ela_tensor *t) {
    int64_t n = ela_tensor_numel(t);
    float *z = calloc((size_t)(n ? n : 1), sizeof *z);
    CHECK(z != NULL);
    if (z)
        CHECK_STATUS(ela_tensor_write_f32(t, z, n), ELA_OK);
    free(z);
}

/* ---- status strings, versions, dtypes --------------------------------------------------- */
static void test_status_and_dtypes(void) {
    static const struct {
        ela_status s;
        const char *name;
    } names[] = {
        {ELA_OK, "ELA_OK"},
        {ELA_ERR_INVALID_ARG, "ELA_ERR_INVALID_ARG"},
        {ELA_ERR_UNSUPPORTED, "ELA_ERR_UNSUPPORTED"},
        {ELA_ERR_OOM, "ELA_ERR_OOM"},
        {ELA_ERR_FORMAT, "ELA_ERR_FORMAT"},
        {ELA_ERR_IO, "ELA_ERR_IO"},
        {ELA_ERR_UNAVAILABLE, "ELA_ERR_UNAVAILABLE"},
        {ELA_ERR_BACKEND, "ELA_ERR_BACKEND"},
        {ELA_ERR_INTERNAL, "ELA_ERR_INTERNAL"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECKF(strcmp(ela_status_str(names[i].s), names[i].name) == 0, "%d -> %s", (int)names[i].s,
               ela_status_str(names[i].s));
    CHECK(ela_status_str((ela_status)99) != NULL && ela_status_str((ela_status)99)[0] != '\0');
    CHECK(ela_status_str((ela_status)-1) != NULL);
    CHECK(strcmp(ela_version(), ELA_VERSION_STRING) == 0);

    CHECK(ela_dtype_size(ELA_F32) == 4 && ela_dtype_size(ELA_F16) == 2 && ela_dtype_size(ELA_BF16) == 2);
    CHECK(ela_dtype_size(ELA_DTYPE_COUNT) == 0 && ela_dtype_size((ela_dtype)-1) == 0);
    CHECK(strcmp(ela_dtype_name(ELA_DTYPE_COUNT), "?") == 0);
    for (int t = 0; t < ELA_DTYPE_COUNT; t++) {
        ela_dtype out = ELA_DTYPE_COUNT;
        CHECK_STATUS(ela_dtype_parse(ela_dtype_name((ela_dtype)t), &out), ELA_OK);
        CHECK(out == (ela_dtype)t);
    }
    static const char *const bad[] = {"f64", "F32", "", "f16 ", "bf", "float"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ela_dtype out = ELA_F16;
        CHECK_STATUS(ela_dtype_parse(bad[i], &out), ELA_ERR_INVALID_ARG);
        CHECK(out == ELA_F16); /* untouched on failure */
        if (bad[i][0])
            CHECKF(test_has_text(ela_last_error(), bad[i]), "message \"%s\" does not quote '%s'",
                   ela_last_error(), bad[i]);
    }
    ela_dtype out;
    CHECK_STATUS(ela_dtype_parse(NULL, &out), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_dtype_parse("f32", NULL), ELA_ERR_INVALID_ARG);

    float f[2] = {1, 2};
    uint16_t h[2];
    CHECK_STATUS(ela_convert(f, ELA_F32, h, ELA_F16, -1), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_convert(NULL, ELA_F32, h, ELA_F16, 2), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_convert(f, ELA_F32, NULL, ELA_F16, 2), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_convert(f, (ela_dtype)7, h, ELA_F16, 2), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_convert(f, ELA_F32, h, ELA_DTYPE_COUNT, 2), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_convert(NULL, ELA_F32, NULL, ELA_F16, 0), ELA_OK);
}

/* ---- last error: thread-local, kept by successful calls ------------------------------------- */
static void *thread_main(void *arg) {
    int *ok = arg;
    *ok = ela_last_error()[0] == '\0'; /* a fresh thread has no message */
    ela_dtype out;
    *ok &= ela_dtype_parse("thread-dtype", &out) == ELA_ERR_INVALID_ARG;
    *ok &= test_has_text(ela_last_error(), "thread-dtype");
    return NULL;
}

static void test_last_error(void) {
    ela_dtype out;
    CHECK_STATUS(ela_dtype_parse("main-dtype", &out), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "main-dtype"));
    CHECK_STATUS(ela_dtype_parse("f16", &out), ELA_OK);
    CHECKF(test_has_text(ela_last_error(), "main-dtype"), "a successful call changed it to \"%s\"",
           ela_last_error());
    pthread_t th;
    int ok = 0;
    CHECK(pthread_create(&th, NULL, thread_main, &ok) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(ok);
    CHECKF(test_has_text(ela_last_error(), "main-dtype"), "another thread's failure changed it to \"%s\"",
           ela_last_error());
}

/* ---- backends --------------------------------------------------------------------------- */
static void test_backend_list(void) {
    int count = -1;
    CHECK_STATUS(ela_backend_list(NULL, 0, &count), ELA_OK);
    CHECK(count >= 3);
    CHECK_STATUS(ela_backend_list(NULL, 4, &count), ELA_ERR_INVALID_ARG);
    ela_backend_info one[1];
    CHECK_STATUS(ela_backend_list(one, 4, NULL), ELA_ERR_INVALID_ARG);

    enum { CAP = 8 };
    ela_backend_info *list = calloc(CAP, sizeof *list);
    if (!list) {
        CHECK(!"out of memory");
        return;
    }
    CHECK_STATUS(ela_backend_list(list, CAP, &count), ELA_OK);
    CHECK(count >= 3 && count <= CAP);
    int seen_cpu = 0, seen_vulkan = 0, seen_cuda = 0;
    for (int i = 0; i < count && i < CAP; i++) {
        const ela_backend_info *b = &list[i];
        CHECK(memchr(b->name, '\0', sizeof b->name) != NULL && memchr(b->reason, '\0', sizeof b->reason) != NULL);
        CHECK(b->n_devices >= 0 && b->n_devices <= ELA_MAX_DEVICES);
        if (b->available) {
            CHECKF(b->n_devices >= 1 && b->reason[0] == '\0', "%s: available with %d devices, reason \"%s\"",
                   b->name, b->n_devices, b->reason);
        } else {
            CHECKF(b->n_devices == 0 && b->reason[0] != '\0', "%s: unavailable, %d devices, reason \"%s\"",
                   b->name, b->n_devices, b->reason);
        }
        for (int d = 0; d < b->n_devices; d++)
            CHECK(b->devices[d].name[0] != '\0' && memchr(b->devices[d].details, '\0', sizeof b->devices[d].details));
        if (strcmp(b->name, "cpu") == 0) {
            seen_cpu++;
            CHECK(b->available && b->n_devices >= 1);
            CHECK(b->n_devices < 1 || (b->devices[0].kind == ELA_DEVICE_CPU && b->devices[0].memory_bytes > 0));
        } else if (strcmp(b->name, "vulkan") == 0 || strcmp(b->name, "cuda") == 0) {
            seen_vulkan += b->name[0] == 'v';
            seen_cuda += b->name[0] == 'c';
            /* Without its plugin the backend is listed, unavailable, with a reason; opening it is
             * ELA_ERR_UNAVAILABLE with that reason. */
            ela_backend *be = NULL;
            char name[32];
            snprintf(name, sizeof name, "%s", b->name);
            if (!b->available) {
                printf("%s: unavailable: %s\n", b->name, b->reason);
                CHECK_FAIL(ela_backend_open(name, &be), ELA_ERR_UNAVAILABLE, name);
                CHECK(be == NULL);
                snprintf(name, sizeof name, "%s:0", b->name);
                CHECK_STATUS(ela_backend_open(name, &be), ELA_ERR_UNAVAILABLE);
                CHECK(be == NULL);
            } else {
                printf("%s: available, %d device(s)\n", b->name, b->n_devices);
                CHECK_STATUS(ela_backend_open(name, &be), ELA_OK);
                ela_backend_close(be);
            }
        }
    }
    CHECK(seen_cpu == 1 && seen_vulkan == 1 && seen_cuda == 1);

    /* A short array: count still says how many exist; nothing past capacity is written. */
    memset(list, 0x5a, CAP * sizeof *list);
    CHECK_STATUS(ela_backend_list(list, 1, &count), ELA_OK);
    CHECK(count >= 3 && list[0].name[0] != 0x5a);
    unsigned char *rest = (unsigned char *)&list[1];
    int untouched = 1;
    for (size_t i = 0; i < (CAP - 1) * sizeof *list; i++)
        untouched &= rest[i] == 0x5a;
    CHECK(untouched);
    free(list);
}

static void test_backend_open(void) {
    ela_backend *be = NULL;
    test_setenv("ELA_BACKEND", NULL);
    test_setenv("ELA_CPU_LEVEL", NULL);
    test_setenv("ELA_THREADS", NULL);

    CHECK_FAIL(ela_backend_open("nosuch", &be), ELA_ERR_INVALID_ARG, "nosuch");
    CHECK(be == NULL);
    CHECK_FAIL(ela_backend_open("cpu:7", &be), ELA_ERR_INVALID_ARG, "cpu");
    CHECK(be == NULL && test_has_text(ela_last_error(), "7"));
    CHECK_FAIL(ela_backend_open("vulkan:x", &be), ELA_ERR_INVALID_ARG, "vulkan");
    CHECK(be == NULL && test_has_text(ela_last_error(), "vulkan:x"));
    CHECK_STATUS(ela_backend_open("cpu:", &be), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_backend_open("cpu:-1", &be), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_backend_open("cpu:0x", &be), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_backend_open("cpux", &be), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_backend_open(":0", &be), ELA_ERR_INVALID_ARG);
    CHECK(be == NULL);
    CHECK_STATUS(ela_backend_open("cpu", NULL), ELA_ERR_INVALID_ARG);

    CHECK_STATUS(ela_backend_open("cpu:0", &be), ELA_OK);
    CHECK(be && strcmp(ela_backend_name(be), "cpu") == 0);
    ela_backend_close(be);
    be = NULL;

    /* NULL and "" read ELA_BACKEND, then fall back to auto (the CPU when no GPU plugin works). */
    CHECK_STATUS(ela_backend_open(NULL, &be), ELA_OK);
    CHECK(be != NULL);
    ela_backend_close(be);
    be = NULL;
    CHECK_STATUS(ela_backend_open("auto", &be), ELA_OK);
    CHECK(be != NULL);
    ela_backend_close(be);
    be = NULL;
    test_setenv("ELA_BACKEND", "cpu");
    CHECK_STATUS(ela_backend_open("", &be), ELA_OK);
    CHECK(be && strcmp(ela_backend_name(be), "cpu") == 0);
    ela_backend_close(be);
    be = NULL;
    test_setenv("ELA_BACKEND", "nosuch-env");
    CHECK_FAIL(ela_backend_open(NULL, &be), ELA_ERR_INVALID_ARG, "nosuch-env");
    CHECK(be == NULL);
    test_setenv("ELA_BACKEND", NULL);

    /* CPU backend settings from the environment are checked at open. */
    test_setenv("ELA_CPU_LEVEL", "bogus");
    CHECK_FAIL(ela_backend_open("cpu", &be), ELA_ERR_INVALID_ARG, "ELA_CPU_LEVEL");
    CHECK(be == NULL && test_has_text(ela_last_error(), "bogus"));
    test_setenv("ELA_CPU_LEVEL", NULL);
    static const char *const bad_threads[] = {"0", "-2", "abc", "4x", "100000"};
    for (size_t i = 0; i < sizeof bad_threads / sizeof bad_threads[0]; i++) {
        test_setenv("ELA_THREADS", bad_threads[i]);
        CHECK_FAIL(ela_backend_open("cpu", &be), ELA_ERR_INVALID_ARG, "ELA_THREADS");
        CHECK(be == NULL);
    }
    test_setenv("ELA_THREADS", NULL);

    ela_device_info info;
    CHECK_FAIL(ela_backend_device_info(NULL, &info), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_backend_synchronize(NULL), ELA_ERR_INVALID_ARG, "backend");
    be = open_cpu();
    if (be) {
        CHECK_STATUS(ela_backend_device_info(be, NULL), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_backend_device_info(be, &info), ELA_OK);
        CHECK(info.kind == ELA_DEVICE_CPU && info.name[0] != '\0');
        CHECK_STATUS(ela_backend_synchronize(be), ELA_OK);
        ela_dtype ok3[3] = {ELA_F32, ELA_F16, ELA_F32}, bad3[3] = {ELA_F32, (ela_dtype)9, ELA_F32};
        CHECK(ela_backend_supports(be, ELA_OP_ATTN_DENSE, ok3, 3));
        CHECK(!ela_backend_supports(be, ELA_OP_ATTN_DENSE, bad3, 3));
        CHECK(!ela_backend_supports(be, ELA_OP_COUNT, ok3, 3));
        CHECK(!ela_backend_supports(NULL, ELA_OP_ATTN_DENSE, ok3, 3));
    }
    ela_backend_close(be);
    ela_backend_close(NULL);
}

/* ---- tensors ------------------------------------------------------------------------------ */
static void test_tensor_errors(void) {
    ela_backend *be = open_cpu();
    if (!be)
        return;
    ela_tensor *t = (ela_tensor *)1;
    int64_t e3[3] = {4, 5, 6};
    CHECK_STATUS(ela_tensor_new(NULL, ELA_F32, 3, e3, NULL, &t), ELA_ERR_INVALID_ARG);
    CHECK(t == NULL);
    CHECK(test_has_word(ela_last_error(), "backend"));
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e3, NULL, NULL), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tensor_new(be, (ela_dtype)5, 3, e3, NULL, &t), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "dtype"));
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 0, e3, NULL, &t), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, ELA_MAX_DIMS + 1, e3, NULL, &t), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "n_dims"));
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, NULL, NULL, &t), ELA_ERR_INVALID_ARG);
    int64_t neg[3] = {4, -1, 6};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, neg, NULL, &t), ELA_ERR_INVALID_ARG);
    int64_t s_zero[3] = {120, 0, 4}, s_neg[3] = {120, -24, 4}, s_odd[3] = {120, 24, 2};
    int64_t s_overlap[3] = {60, 24, 4}, s_dup[3] = {120, 4, 4};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e3, s_zero, &t), ELA_ERR_INVALID_ARG);
    CHECK(test_has_word(ela_last_error(), "stride"));
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e3, s_neg, &t), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e3, s_odd, &t), ELA_ERR_INVALID_ARG);
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e3, s_overlap, &t), ELA_ERR_INVALID_ARG);
    CHECK(test_has_text(ela_last_error(), "overlap"));
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, e3, s_dup, &t), ELA_ERR_INVALID_ARG);
    int64_t huge[3] = {INT64_MAX / 2, 4, 4};
    CHECK_STATUS(ela_tensor_new(be, ELA_F32, 3, huge, NULL, &t), ELA_ERR_INVALID_ARG);
    CHECK(t == NULL);

    ela_tensor *base = new3(be, ELA_F16, 4, 5, 6); /* 240 bytes */
    if (base) {
        ela_tensor *v = (ela_tensor *)1;
        int64_t ve[2] = {4, 6};
        CHECK_STATUS(ela_tensor_view(NULL, 2, ve, NULL, 0, &v), ELA_ERR_INVALID_ARG);
        CHECK(v == NULL && test_has_word(ela_last_error(), "base"));
        CHECK_STATUS(ela_tensor_view(base, 2, ve, NULL, 0, NULL), ELA_ERR_INVALID_ARG);
        int64_t ok_str[2] = {60, 2};
        CHECK_STATUS(ela_tensor_view(base, 2, ve, ok_str, 0, &v), ELA_OK); /* [:, 0, :] */
        ela_tensor_free(v);
        CHECK_STATUS(ela_tensor_view(base, 2, ve, ok_str, 48, &v), ELA_OK); /* [:, 4, :] */
        ela_tensor_free(v);
        /* One element too far, by offset, by stride and by extent. */
        CHECK_STATUS(ela_tensor_view(base, 2, ve, ok_str, 62, &v), ELA_ERR_INVALID_ARG);
        CHECK(v == NULL && test_has_text(ela_last_error(), "past"));
        int64_t far_str[2] = {80, 2}, ve5[2] = {5, 6}; /* spans 252 and 252 bytes */
        CHECK_STATUS(ela_tensor_view(base, 2, ve, far_str, 0, &v), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_view(base, 2, ve5, ok_str, 0, &v), ELA_ERR_INVALID_ARG);
        int64_t all[1] = {120}, one_more[1] = {121};
        CHECK_STATUS(ela_tensor_view(base, 1, all, NULL, 0, &v), ELA_OK);
        ela_tensor_free(v);
        CHECK_STATUS(ela_tensor_view(base, 1, one_more, NULL, 0, &v), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_view(base, 1, all, NULL, 2, &v), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_view(base, 1, all, NULL, -2, &v), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_view(base, 2, ve, ok_str, 1, &v), ELA_ERR_INVALID_ARG); /* misaligned */
        CHECK_STATUS(ela_tensor_view(base, 0, ve, NULL, 0, &v), ELA_ERR_INVALID_ARG);
        int64_t bad_str[2] = {60, 0};
        CHECK_STATUS(ela_tensor_view(base, 2, ve, bad_str, 0, &v), ELA_ERR_INVALID_ARG);
        CHECK(v == NULL);

        /* Transfers must match the element count exactly. */
        uint16_t buf16[121] = {0};
        float buf32[121] = {0};
        CHECK_STATUS(ela_tensor_write(base, buf16, 240), ELA_OK);
        CHECK_STATUS(ela_tensor_write(base, buf16, 242), ELA_ERR_INVALID_ARG);
        CHECK(test_has_word(ela_last_error(), "bytes") || test_has_word(ela_last_error(), "242"));
        CHECK_STATUS(ela_tensor_write(base, buf16, 238), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write(base, buf16, 480), ELA_ERR_INVALID_ARG); /* f32 size */
        CHECK_STATUS(ela_tensor_write(base, buf16, 0), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write(base, NULL, 240), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write(NULL, buf16, 240), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_read(base, buf16, 240), ELA_OK);
        CHECK_STATUS(ela_tensor_read(base, buf16, 241), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_read(base, NULL, 240), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_read(NULL, buf16, 240), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write_f32(base, buf32, 120), ELA_OK);
        CHECK_STATUS(ela_tensor_write_f32(base, buf32, 121), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write_f32(base, buf32, 240), ELA_ERR_INVALID_ARG); /* bytes, not count */
        CHECK_STATUS(ela_tensor_write_f32(base, buf32, -1), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_write_f32(NULL, buf32, 120), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_read_f32(base, buf32, 120), ELA_OK);
        CHECK_STATUS(ela_tensor_read_f32(base, buf32, 119), ELA_ERR_INVALID_ARG);
        CHECK_STATUS(ela_tensor_read_f32(base, NULL, 120), ELA_ERR_INVALID_ARG);
    }
    ela_tensor_free(base);
    ela_tensor_free(NULL);
    ela_backend_close(be);
}

/* ---- attn_dense argument checks ---------------------------------------------------------- */
enum { MAX_SCRATCH = 48 };

/* Keep t for freeing at the end of the test; the capacity is checked, never overrun. */
static ela_tensor *keep(ela_tensor **scratch, int *ns, ela_tensor *t) {
    CHECK(*ns < MAX_SCRATCH);
    if (*ns < MAX_SCRATCH)
        scratch[(*ns)++] = t;
    return t;
}

static void test_attn_errors(void) {
    ela_backend *be = open_cpu(), *other = open_cpu();
    if (!be || !other) {
        ela_backend_close(be);
        ela_backend_close(other);
        return;
    }
    const int64_t L = 5, n = 9, d = 16;
    const int hq = 4, hkv = 2;
    ela_tensor *q = new3(be, ELA_F32, L, hq, d), *k = new3(be, ELA_F16, hkv, n, d);
    ela_tensor *v = new3(be, ELA_F16, hkv, n, d), *o = new3(be, ELA_F32, L, hq, d);
    ela_tensor *lse = new2(be, ELA_F32, L, hq);
    ela_tensor *scratch[MAX_SCRATCH] = {0};
    int ns = 0;
#define KEEP(expr) keep(scratch, &ns, (expr))
    if (!q || !k || !v || !o || !lse)
        goto done;
    fill_zero(q);
    fill_zero(k);
    fill_zero(v);
    ela_attn_params p = ela_attn_params_default();
    CHECK(p.causal == 1 && p.q_pos0 == 0 && p.scale == 0.0f);
    CHECK_STATUS(ela_attn_dense(be, q, k, v, o, lse, &p), ELA_OK);
    CHECK_STATUS(ela_attn_dense(be, q, k, v, o, NULL, &p), ELA_OK);

    /* NULL pointers. */
    CHECK_FAIL(ela_attn_dense(NULL, q, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "backend");
    CHECK_FAIL(ela_attn_dense(be, NULL, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_attn_dense(be, q, NULL, v, o, lse, &p), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_attn_dense(be, q, k, NULL, o, lse, &p), ELA_ERR_INVALID_ARG, "v");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, NULL, lse, &p), ELA_ERR_INVALID_ARG, "o");
    /* params NULL is taken as ela_attn_params_default() (as implemented; include/ela.h does
     * not say). */
    CHECK_STATUS(ela_attn_dense(be, q, k, v, o, lse, NULL), ELA_OK);

    /* Wrong number of dims. */
    ela_tensor *q2 = KEEP(new2(be, ELA_F32, L, hq * d));
    CHECK_FAIL(ela_attn_dense(be, q2, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "q");
    ela_tensor *k4 = NULL;
    int64_t e4[4] = {1, hkv, n, d};
    CHECK_STATUS(ela_tensor_new(be, ELA_F16, 4, e4, NULL, &k4), ELA_OK);
    KEEP(k4);
    CHECK_FAIL(ela_attn_dense(be, q, k4, v, o, lse, &p), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, q2, lse, &p), ELA_ERR_INVALID_ARG, "o");
    ela_tensor *lse3 = KEEP(new3(be, ELA_F32, L, hq, 1));
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o, lse3, &p), ELA_ERR_INVALID_ARG, "lse");

    /* Mismatched head dim, head counts, dtypes, shapes. */
    ela_tensor *k32 = KEEP(new3(be, ELA_F16, hkv, n, 32)), *v32 = KEEP(new3(be, ELA_F16, hkv, n, 32));
    CHECK_FAIL(ela_attn_dense(be, q, k32, v32, o, lse, &p), ELA_ERR_INVALID_ARG, "k");
    CHECK_FAIL(ela_attn_dense(be, q, k, v32, o, lse, &p), ELA_ERR_INVALID_ARG, "v");
    ela_tensor *q6 = KEEP(new3(be, ELA_F32, L, 6, d)), *o6 = KEEP(new3(be, ELA_F32, L, 6, d));
    ela_tensor *k4h = KEEP(new3(be, ELA_F16, 4, n, d)), *v4h = KEEP(new3(be, ELA_F16, 4, n, d));
    ela_tensor *lse6 = KEEP(new2(be, ELA_F32, L, 6));
    CHECK_STATUS(ela_attn_dense(be, q6, k4h, v4h, o6, lse6, &p), ELA_ERR_INVALID_ARG);
    CHECKF(test_has_word(ela_last_error(), "q") || test_has_word(ela_last_error(), "k"),
           "message \"%s\" names neither q nor k", ela_last_error());
    CHECK(test_has_text(ela_last_error(), "6") && test_has_text(ela_last_error(), "4"));
    ela_tensor *v32f = KEEP(new3(be, ELA_F32, hkv, n, d));
    CHECK_FAIL(ela_attn_dense(be, q, k, v32f, o, lse, &p), ELA_ERR_INVALID_ARG, "v");
    CHECK(test_has_word(ela_last_error(), "k"));
    ela_tensor *v_n = KEEP(new3(be, ELA_F16, hkv, n + 1, d)), *v_h = KEEP(new3(be, ELA_F16, 1, n, d));
    CHECK_FAIL(ela_attn_dense(be, q, k, v_n, o, lse, &p), ELA_ERR_INVALID_ARG, "v");
    CHECK_FAIL(ela_attn_dense(be, q, k, v_h, o, lse, &p), ELA_ERR_INVALID_ARG, "v");
    ela_tensor *lse_t = KEEP(new2(be, ELA_F32, hq, L)), *lse_h = KEEP(new2(be, ELA_F16, L, hq));
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o, lse_t, &p), ELA_ERR_INVALID_ARG, "lse");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o, lse_h, &p), ELA_ERR_INVALID_ARG, "lse");
    ela_tensor *o_d = KEEP(new3(be, ELA_F32, L, hq, d + 1)), *o_l = KEEP(new3(be, ELA_F32, L + 1, hq, d));
    ela_tensor *o_h = KEEP(new3(be, ELA_F32, L, hq / 2, d));
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o_d, lse, &p), ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o_l, lse, &p), ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o_h, lse, &p), ELA_ERR_INVALID_ARG, "o");

    /* q_pos0 must be >= 0 when causal, and is ignored otherwise. */
    p.q_pos0 = -1;
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "q_pos0");
    p.causal = 0;
    CHECK_STATUS(ela_attn_dense(be, q, k, v, o, lse, &p), ELA_OK);
    p = ela_attn_params_default();
    /* The scale must be finite (as implemented; include/ela.h does not say). */
    p.scale = NAN;
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "scale");
    p.scale = INFINITY;
    CHECK_STATUS(ela_attn_dense(be, q, k, v, o, lse, &p), ELA_ERR_INVALID_ARG);
    p = ela_attn_params_default();

    /* n = 0: no keys, causal or not. */
    ela_tensor *k0 = KEEP(new3(be, ELA_F16, hkv, 0, d)), *v0 = KEEP(new3(be, ELA_F16, hkv, 0, d));
    if (k0 && v0) {
        CHECK_FAIL(ela_attn_dense(be, q, k0, v0, o, lse, &p), ELA_ERR_INVALID_ARG, "k");
        p.causal = 0;
        CHECK_FAIL(ela_attn_dense(be, q, k0, v0, o, lse, &p), ELA_ERR_INVALID_ARG, "k");
        p = ela_attn_params_default();
    }
    /* L = 0 is a valid empty call. */
    ela_tensor *qe = KEEP(new3(be, ELA_F32, 0, hq, d)), *oe = KEEP(new3(be, ELA_F32, 0, hq, d));
    ela_tensor *lsee = KEEP(new2(be, ELA_F32, 0, hq));
    CHECK_STATUS(ela_attn_dense(be, qe, k, v, oe, lsee, &p), ELA_OK);

    /* Innermost stride not packed: views with a stride of 2 elements in the last dim. */
    ela_tensor *wide_q = KEEP(new3(be, ELA_F32, L, hq, 2 * d)), *wide_k = KEEP(new3(be, ELA_F16, hkv, n, 2 * d));
    ela_tensor *wide_l = KEEP(new2(be, ELA_F32, L, 2 * hq));
    if (wide_q && wide_k && wide_l) {
        ela_tensor *qs = NULL, *ks = NULL, *os = NULL, *ls = NULL;
        int64_t eq[3] = {L, hq, d}, sq[3] = {hq * 2 * d * 4, 2 * d * 4, 8};
        int64_t ek[3] = {hkv, n, d}, sk[3] = {n * 2 * d * 2, 2 * d * 2, 4};
        int64_t el[2] = {L, hq}, sl[2] = {2 * hq * 4, 8};
        CHECK_STATUS(ela_tensor_view(wide_q, 3, eq, sq, 0, &qs), ELA_OK);
        CHECK_STATUS(ela_tensor_view(wide_k, 3, ek, sk, 0, &ks), ELA_OK);
        CHECK_STATUS(ela_tensor_view(wide_q, 3, eq, sq, 4, &os), ELA_OK);
        CHECK_STATUS(ela_tensor_view(wide_l, 2, el, sl, 0, &ls), ELA_OK);
        KEEP(qs);
        KEEP(ks);
        KEEP(os);
        KEEP(ls);
        CHECK_FAIL(ela_attn_dense(be, qs, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "q");
        CHECK(test_has_text(ela_last_error(), "packed") || test_has_text(ela_last_error(), "stride"));
        CHECK_FAIL(ela_attn_dense(be, q, ks, v, o, lse, &p), ELA_ERR_INVALID_ARG, "k");
        CHECK_FAIL(ela_attn_dense(be, q, k, ks, o, lse, &p), ELA_ERR_INVALID_ARG, "v");
        CHECK_FAIL(ela_attn_dense(be, q, k, v, os, lse, &p), ELA_ERR_INVALID_ARG, "o");
        CHECK_FAIL(ela_attn_dense(be, q, k, v, o, ls, &p), ELA_ERR_INVALID_ARG, "lse");
    }

    /* Tensors of another backend instance (even of the same kind) are refused. */
    ela_tensor *q_other = KEEP(new3(other, ELA_F32, L, hq, d)), *o_other = KEEP(new3(other, ELA_F32, L, hq, d));
    ela_tensor *lse_other = KEEP(new2(other, ELA_F32, L, hq));
    CHECK_FAIL(ela_attn_dense(be, q_other, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "q");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o_other, lse, &p), ELA_ERR_INVALID_ARG, "o");
    CHECK_FAIL(ela_attn_dense(be, q, k, v, o, lse_other, &p), ELA_ERR_INVALID_ARG, "lse");
    CHECK_FAIL(ela_attn_dense(other, q, k, v, o, lse, &p), ELA_ERR_INVALID_ARG, "q");
done:
    for (int i = 0; i < ns; i++)
        ela_tensor_free(scratch[i]);
#undef KEEP
    ela_tensor_free(q);
    ela_tensor_free(k);
    ela_tensor_free(v);
    ela_tensor_free(o);
    ela_tensor_free(lse);
    ela_backend_close(be);
    ela_backend_close(other);
}

/* ---- out of memory -------------------------------------------------------------------------- */
typedef struct {
    const char *what;
    const char *threads; /* ELA_THREADS or NULL */
    int64_t L, n, d;
    int hq, hkv;
} oom_case;

/* Open, create, write, run, read, free: the first failing status (or ELA_OK). On success, the
 * output is compared with the reference. Frees everything it created either way. */
static ela_status oom_sequence(const oom_case *c, const float *qh, const float *kh,
                               const float *vh, const double *o_ref, int check_result) {
    ela_backend *be = NULL;
    ela_tensor *q = NULL, *kv_base = NULL, *k = NULL, *v = NULL, *o = NULL, *lse = NULL;
    float *out = NULL;
    const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
    test_setenv("ELA_THREADS", c->threads);
    ela_status st = ela_backend_open("cpu", &be);
    test_setenv("ELA_THREADS", NULL);
    if (st != ELA_OK)
        goto done;
    int64_t eq[3] = {c->L, c->hq, c->d}, ekv[3] = {c->hkv, c->n, c->d};
    int64_t ecache[4] = {2, c->hkv, c->n + 5, c->d};
    int64_t skv[3] = {(c->n + 5) * c->d * 2, c->d * 2, 2};
    if ((st = ela_tensor_new(be, ELA_F16, 3, eq, NULL, &q)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F16, 4, ecache, NULL, &kv_base)) != ELA_OK ||
        (st = ela_tensor_view(kv_base, 3, ekv, skv, 0, &k)) != ELA_OK ||
        (st = ela_tensor_view(kv_base, 3, ekv, skv, c->hkv * (c->n + 5) * c->d * 2, &v)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F32, 3, eq, NULL, &o)) != ELA_OK ||
        (st = ela_tensor_new(be, ELA_F32, 2, eq, NULL, &lse)) != ELA_OK)
        goto done;
    ela_tensor_free(kv_base); /* the views keep the memory alive */
    kv_base = NULL;
    if ((st = ela_tensor_write_f32(q, qh, nq)) != ELA_OK ||
        (st = ela_tensor_write_f32(k, kh, nkv)) != ELA_OK ||
        (st = ela_tensor_write_f32(v, vh, nkv)) != ELA_OK)
        goto done;
    ela_attn_params p = ela_attn_params_default();
    p.q_pos0 = c->n - c->L;
    if ((st = ela_attn_dense(be, q, k, v, o, lse, &p)) != ELA_OK)
        goto done;
    out = malloc((size_t)nq * sizeof *out);
    if (!out) {
        st = ELA_ERR_INTERNAL;
        goto done;
    }
    if ((st = ela_tensor_read_f32(o, out, nq)) != ELA_OK)
        goto done;
    if (check_result) {
        double err = test_rel_l2(o_ref, out, nq);
        CHECKF(err <= 2e-3, "%s: after fault injection the result is off: rel L2 %.3g", c->what, err);
    }
done:
    free(out);
    ela_tensor_free(lse);
    ela_tensor_free(o);
    ela_tensor_free(v);
    ela_tensor_free(k);
    ela_tensor_free(kv_base);
    ela_tensor_free(q);
    ela_backend_close(be);
    return st;
}

static void test_oom(void) {
    static const oom_case cases[] = {
        {"prefill", NULL, 33, 77, 64, 4, 2},
        {"prefill, 1 thread", "1", 33, 77, 64, 4, 2},
        {"decode", NULL, 1, 1000, 128, 8, 2},
        {"decode, 3 threads", "3", 1, 1000, 128, 8, 2},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const oom_case *c = &cases[ci];
        const int64_t nq = c->L * c->hq * c->d, nkv = (int64_t)c->hkv * c->n * c->d;
        float *qh = malloc((size_t)nq * sizeof *qh), *kh = malloc((size_t)nkv * sizeof *kh);
        float *vh = malloc((size_t)nkv * sizeof *vh);
        double *qd = malloc((size_t)nq * sizeof *qd), *kd = malloc((size_t)nkv * sizeof *kd);
        double *vd = malloc((size_t)nkv * sizeof *vd), *od = malloc((size_t)nq * sizeof *od);
        if (!qh || !kh || !vh || !qd || !kd || !vd || !od) {
            CHECK(!"out of memory");
            goto next;
        }
        test_rng rng;
        test_rng_init(&rng, 500 + ci);
        test_fill_normal(&rng, qh, nq, 1.0f);
        test_fill_normal(&rng, kh, nkv, 1.0f);
        test_fill_normal(&rng, vh, nkv, 1.0f);
        CHECK(test_round_through(qh, nq, ELA_F16) == 0 && test_round_through(kh, nkv, ELA_F16) == 0 &&
              test_round_through(vh, nkv, ELA_F16) == 0);
        for (int64_t i = 0; i < nq; i++)
            qd[i] = qh[i];
        for (int64_t i = 0; i < nkv; i++) {
            kd[i] = kh[i];
            vd[i] = vh[i];
        }
        ref_attn_dense_shape s = {c->L, c->n, c->d, c->hq, c->hkv, 1, c->n - c->L, 0.0};
        CHECK(ref_attn_dense(&s, qd, kd, vd, od, NULL) == 0);

        int64_t i, failures = 0;
        ela_status st = ELA_OK;
        for (i = 1; i <= 100000; i++) {
            ela_debug_fail_alloc(i);
            st = oom_sequence(c, qh, kh, vh, od, 0);
            ela_debug_fail_alloc(0);
            if (st == ELA_OK)
                break;
            failures++;
            CHECKF(st == ELA_ERR_OOM, "%s: allocation %lld failed: got %s (%s), want ELA_ERR_OOM",
                   c->what, (long long)i, ela_status_str(st), ela_last_error());
            CHECKF(ela_last_error()[0] != '\0', "%s: allocation %lld: empty message", c->what,
                   (long long)i);
            if (st != ELA_ERR_OOM)
                break;
        }
        CHECKF(st == ELA_OK, "%s: never succeeded", c->what);
        CHECKF(failures >= 3, "%s: only %lld allocations seen", c->what, (long long)failures);
        printf("oom %-18s: %lld allocations failed in turn, each ELA_ERR_OOM\n", c->what,
               (long long)failures);
        /* And with no fault the result is right. */
        CHECK_STATUS(oom_sequence(c, qh, kh, vh, od, 1), ELA_OK);
    next:
        free(qh);
        free(kh);
        free(vh);
        free(qd);
        free(kd);
        free(vd);
        free(od);
    }
}

int main(void) {
    CHECKF(ela_last_error()[0] == '\0', "before any call: \"%s\"", ela_last_error());
    test_seed();
    test_status_and_dtypes();
    test_last_error();
    test_backend_list();
    test_backend_open();
    test_tensor_errors();
    test_attn_errors();
    test_oom();
    return test_summary("test_errors");
}

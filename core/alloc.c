/* Host allocation with a fault-injection countdown (ela_debug_fail_alloc), so tests can fail
 * every allocation in turn and check that ELA_ERR_OOM comes back with nothing leaked. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"
#include "ela.h"

static atomic_llong fail_countdown; /* 0: off; k > 0: the k-th allocation from now fails */

void ela_debug_fail_alloc(int64_t n) { atomic_store(&fail_countdown, n > 0 ? n : 0); }

static int injected_failure(void) {
    long long cur = atomic_load(&fail_countdown);
    while (cur > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &cur, cur - 1))
            return cur == 1;
    }
    return 0;
}

void *ela_calloc(size_t n, size_t size) {
    if (injected_failure())
        return NULL;
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *ela_aligned_alloc(size_t size) {
    if (injected_failure())
        return NULL;
    if (size > SIZE_MAX - 64)
        return NULL;
    size_t rounded = (size + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}

void *ela_realloc(void *p, size_t n, size_t size) {
    if (injected_failure())
        return NULL;
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    size_t bytes = n * size;
    return realloc(p, bytes ? bytes : 1);
}

void ela_free(void *p) { free(p); }
void ela_aligned_free(void *p) { free(p); }

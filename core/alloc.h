/* Host allocation for libela: every allocation goes through here so that the fault-injection
 * hook (ela_debug_fail_alloc) can fail the i-th one and tests can check the OOM paths. */
#ifndef ELA_CORE_ALLOC_H
#define ELA_CORE_ALLOC_H

#include <stddef.h>

/* Like calloc(n, size) but overflow-checked; NULL on failure (caller reports ELA_ERR_OOM). */
void *ela_calloc(size_t n, size_t size);
/* 64-byte aligned, uninitialised; size rounded up to a multiple of 64. Free with ela_free. */
void *ela_aligned_alloc(size_t size);
/* Like realloc, overflow-checked on n * size; on failure p is left untouched. */
void *ela_realloc(void *p, size_t n, size_t size);
void ela_free(void *p);
/* Free memory from ela_aligned_alloc. */
void ela_aligned_free(void *p);

#endif

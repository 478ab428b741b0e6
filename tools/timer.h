/* Monotonic wall clock for the ela tools' benchmarks (tools/, DESIGN.md section 8).
 * Needs POSIX clock_gettime; tools are built with _GNU_SOURCE. */
#ifndef ELA_TOOLS_TIMER_H
#define ELA_TOOLS_TIMER_H

#include <time.h>

/* Seconds since an arbitrary fixed point; only differences mean anything. */
static inline double timer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif

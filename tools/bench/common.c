/* SPDX-License-Identifier: MIT */
/* bench/common.c: awbench's helpers shared by every module (bench.h). */
#include "config.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

double
bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void
bench_die(const char *what, int rc)
{
    fprintf(stderr, "awbench: %s: %s\n", what, aw_strerror(rc));
    exit(1);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

uint64_t
bench_rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

size_t
bench_heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

struct event_base *
bench_raw_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

/* SPDX-License-Identifier: MIT */
/* bench/bench.h: what awbench's modules share: the registration of a
 * module's benchmarks (a table the driver, tools/awbench.c, concatenates
 * in a fixed order), the timing and error helpers, and the raw libevent
 * baselines that several modules measure against. */
#ifndef AWBENCH_BENCH_H
#define AWBENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "await.h"

/* One figure: ours() measured next to raw() (NULL: no baseline) in the
 * same rounds; target is printed as it is. */
struct bench {
    const char *name;
    const char *unit;
    double (*ours)(void);
    double (*raw)(void);
    const char *target;
};

/* A module's benchmarks, in the order they are run and printed. */
struct bench_module {
    const struct bench *benches;
    size_t n;
};

#define BENCH_MODULE(var, table)                                             \
    const struct bench_module var = {table, sizeof(table) / sizeof(table[0])}

/* The modules, one per file of tools/bench/. */
extern const struct bench_module bench_loop_module;     /* loop.c */
extern const struct bench_module bench_future_module;   /* future.c */
extern const struct bench_module bench_task_module;     /* task.c */
extern const struct bench_module bench_sync_module;     /* sync.c */
extern const struct bench_module bench_net_module;      /* net.c */
extern const struct bench_module bench_multiloop_module; /* multiloop.c */
extern const struct bench_module bench_executor_module; /* executor.c */

/* ---- helpers (common.c) ---------------------------------------------------- */

/* Seconds on the monotonic clock. */
double bench_now(void);
/* Print "awbench: what: aw_strerror(rc)" and exit 1. */
void bench_die(const char *what, int rc);
/* A xorshift generator: the same sequence on every run. */
uint64_t bench_rng(void);
/* Bytes of the heap in use (mallinfo2). */
size_t bench_heap_in_use(void);
/* A libevent base without locks, with precise timers: the strictest floor
 * for the raw baselines, even though libawait's own bases are created
 * thread-aware. */
struct event_base *bench_raw_base(void);

/* ---- baselines shared between modules ------------------------------------- */

/* loop.c: ns per raw libevent callback, each activating the next: the
 * floor for every figure that is a chain of loop passes. */
double raw_call_soon(void);

/* net.c: echo_1k's pieces.  The client: 10 raw bufferevents on base,
 * each sending 1 KiB to 127.0.0.1:port and waiting for it back, for 2
 * seconds; returns requests per second, *requests (when not NULL) how
 * many.  The server: on_client of aw_start_server (arg: the loop), one
 * task per connection echoing 1 KiB requests. */
double bench_echo_clients(struct event_base *base, int port,
                          long *requests);
void bench_echo_on_client(aw_stream *s, void *arg);

#endif /* AWBENCH_BENCH_H */

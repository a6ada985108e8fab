/* SPDX-License-Identifier: MIT */
/* bench/bench.h: what awbench's modules share: the registration of a
 * module's benchmarks (a table the driver, tools/awbench.c, concatenates
 * in a fixed order), the timing and error helpers, and the raw libevent
 * baselines that several modules measure against. */
#ifndef AWBENCH_BENCH_H
#define AWBENCH_BENCH_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
extern const struct bench_module bench_http_module;     /* http.c */
extern const struct bench_module bench_pipeline_module; /* pipeline.c */
extern const struct bench_module bench_proc_module;     /* proc.c */
extern const struct bench_module bench_udp_module;      /* udp.c */
extern const struct bench_module bench_tls_module;      /* tls.c */

/* ---- helpers (common.c) ---------------------------------------------------- */

/* Seconds on the monotonic clock. */
double bench_now(void);
/* Print "awbench: what: aw_strerror(rc)" and exit 1. */
void bench_die(const char *what, int rc);
/* A xorshift generator: the same sequence on every run. */
uint64_t bench_rng(void);
/* Bytes of the heap in use (mallinfo2). */
size_t bench_heap_in_use(void);
/* CPU seconds (user and system) of the calling thread. */
double bench_thread_cpu(void);
/* Pin the calling thread to cpu (its mask before in *old when not NULL):
 * 1, or 0 when there is one CPU or it could not be done. */
int bench_pin_to(int cpu, cpu_set_t *old);
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

/* ---- servers measured against a load client in another process ---------- */

/* The load: conns connections, each sending req (req_len bytes) and
 * waiting for resp_len bytes back, over and over (common.c). */
struct bench_load {
    const char *req;
    size_t req_len;
    size_t resp_len;
    int conns;
};

/* One measure of a server: the client, forked and pinned to the second
 * CPU (the server to the first) when there are two, warms up, then
 * writes 'S' on its control pipe, and 'E' with the count of its
 * round trips at the end.  The server watches fd and passes each wake-up
 * to bench_window_read().  With AWBENCH_WINDOW_CTL set (a fifo, as
 * perf stat --control takes it, or /dev/null for strace; see
 * tools/rr-syscalls.sh), "enable" and "disable" are written to it at the
 * window's ends (waiting for perf's "ack" when AWBENCH_WINDOW_ACK is
 * set), and the round trips of the window are said on standard error. */
struct bench_window {
    int fd;        /* the client's control pipe, read end */
    pid_t pid;     /* the client */
    int done;      /* 1 once 'E' came */
    long requests; /* round trips in the window (the client's count) */
    double t0, t1, cpu0, cpu1;
    int pinned;
    cpu_set_t old_mask;
};

/* Fork ld's client against 127.0.0.1:port (the server listens already). */
void bench_load_start(struct bench_window *w, const struct bench_load *ld,
                      int port);
/* Read what the client said (fd readable): 1 once the window ended. */
int bench_window_read(struct bench_window *w);
/* After the window: wait for the client (its connections are closed),
 * undo the pinning; *rps and *per_cpu (requests per CPU-second of the
 * calling thread, the server) when not NULL. */
void bench_load_end(struct bench_window *w, double *rps, double *per_cpu);

/* A libawait server on 127.0.0.1 (any port) calling on_client(s, loop). */
aw_server *bench_aw_server(aw_loop *loop, aw_client_fn on_client);
/* Cancel every task of the loop and run until they are gone. */
void bench_end_tasks(aw_loop *loop);
/* A server's task for client s: a zeroed frame of size bytes whose first
 * member is the aw_stream * (set to s), run by fn on loop.  The frame
 * holds s's reference; both go when the task ends. */
void bench_spawn_client(aw_loop *loop, aw_stream *s, aw_task_fn fn,
                        size_t size);
/* Serve ld's client with a libawait server: a fresh loop, on_client's
 * tasks; rps and per_cpu as bench_load_end's. */
void bench_aw_serve(const struct bench_load *ld, aw_client_fn on_client,
                    double *rps, double *per_cpu);

/* http.c: the HTTP exchange every HTTP server and client of awbench
 * uses (a request of a few headers; a fixed response of 13 bytes). */
extern const char bench_http_req[];
extern const char bench_http_resp[];
size_t bench_http_req_len(void);
size_t bench_http_resp_len(void);

/* uv.c: raw libuv servers serving ld's client for one window (as
 * bench_aw_serve).  0, or -1 when awbench was built without libuv. */
enum bench_uv_kind { BENCH_UV_HTTP, BENCH_UV_ECHO };
int bench_uv_serve(enum bench_uv_kind kind, const struct bench_load *ld,
                   double *rps, double *per_cpu);

#endif /* AWBENCH_BENCH_H */

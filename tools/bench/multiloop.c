/* SPDX-License-Identifier: MIT */
/* bench/multiloop.c: one loop per core (issue 14).  echo_1k's server run
 * by 2 loops in 2 threads, both listening on one port with SO_REUSEPORT,
 * against the same server on 1 loop in 1 thread; the same client (echo_1k's,
 * on a raw libevent base in the calling thread) in both.  Each server
 * loop's life is an aw_run() whose main task starts the server, says it
 * listens, and serves until the client's thread stops it with
 * aw_loop_call_soon_threadsafe().
 *
 * multiloop_echo: total requests per second (on 2 cores the client takes
 * one: reported, not targeted).  multiloop_cpu: requests per CPU-second of
 * the server threads (getrusage RUSAGE_THREAD): the ratio says whether
 * the loops share anything on the hot path. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <sys/time.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

#define MAX_LOOPS 2

struct server_loop {
    int port; /* 0 for the first: the system's pick, then shared */
    sem_t *ready;
    pthread_t thread;
    aw_loop *loop;     /* set before ready is posted */
    aw_future *stop;   /* on loop, settled by stop_cb */
    aw_server *srv;
    double cpu;        /* seconds of CPU while serving */
    int rc;
};

static int
stop_cb(aw_loop *loop, void *arg)
{
    struct server_loop *s = arg;

    (void)loop;
    return aw_future_set_result(s->stop, NULL, NULL);
}

static AW_TASK(serve_main, struct server_loop *s)
{
    void *srv = NULL;
    aw_loop *loop = aw_task_loop(AW_SELF());

    AW_BEGIN();
    AW_AWAIT(aw_start_server(loop, "127.0.0.1", s->port,
                             bench_echo_on_client, loop,
                             AW_SERVER_REUSE_PORT, 0),
             &srv);
    aw_future_take_result(AW_AWAITED(), &srv, NULL);
    s->srv = srv;
    s->port = aw_server_port(s->srv);
    s->loop = loop;
    if ((s->stop = aw_future_new(loop)) == NULL)
        AW_RAISE(-ENOMEM, NULL);
    s->cpu = bench_thread_cpu();
    sem_post(s->ready);
    AW_AWAIT(aw_future_ref(s->stop), NULL);
    s->cpu = bench_thread_cpu() - s->cpu;
    AW_FINALLY();
    aw_future_unref(s->stop);
    aw_server_free(s->srv);
    AW_END();
}

static void *
server_thread(void *arg)
{
    struct server_loop *s = arg;

    s->rc = aw_run(serve_main, s, NULL, 0, NULL);
    if (s->rc != 0)
        sem_post(s->ready); /* the waiter sees rc */
    return NULL;
}

/* Serve with n loops; the client runs here.  *rps: requests per second;
 * *per_cpu: requests per CPU-second of the server threads. */
static void
multiloop_run(int n, double *rps, double *per_cpu)
{
    struct server_loop s[MAX_LOOPS] = {{0}};
    struct event_base *base;
    sem_t ready;
    long requests = 0;
    double cpu = 0;
    int i;

    sem_init(&ready, 0, 0);
    for (i = 0; i < n; i++) {
        s[i].port = i == 0 ? 0 : s[0].port;
        s[i].ready = &ready;
        if (pthread_create(&s[i].thread, NULL, server_thread, &s[i]) != 0)
            bench_die("pthread_create", -EAGAIN);
        while (sem_wait(&ready) != 0)
            ;
        if (s[i].rc != 0)
            bench_die("multiloop server", s[i].rc);
    }
    base = bench_raw_base();
    *rps = bench_echo_clients(base, s[0].port, &requests);
    event_base_loop(base, EVLOOP_NONBLOCK); /* the clients' last words */
    event_base_free(base);
    for (i = 0; i < n; i++) {
        int rc = aw_loop_call_soon_threadsafe(s[i].loop, stop_cb, &s[i]);

        if (rc != 0)
            bench_die("call_soon_threadsafe", rc);
    }
    for (i = 0; i < n; i++) {
        pthread_join(s[i].thread, NULL);
        if (s[i].rc != 0)
            bench_die("multiloop server", s[i].rc);
        cpu += s[i].cpu;
    }
    sem_destroy(&ready);
    *per_cpu = (double)requests / cpu;
}

/* multiloop_cpu's figures come from multiloop_echo's runs when both run
 * (the same rounds, in order); alone, it makes its own. */
static double cpu_fig[2][100];
static int cpu_put[2], cpu_got[2];

static double
multiloop_side(int loops, int want_cpu)
{
    int side = loops == 1;
    double rps, per_cpu;

    if (want_cpu && cpu_got[side] < cpu_put[side])
        return cpu_fig[side][cpu_got[side]++];
    multiloop_run(loops, &rps, &per_cpu);
    if (!want_cpu && cpu_put[side] < 100)
        cpu_fig[side][cpu_put[side]++] = per_cpu;
    return want_cpu ? per_cpu : rps;
}

static double
bench_multiloop_echo(void)
{
    return multiloop_side(2, 0);
}

static double
one_loop_echo(void)
{
    return multiloop_side(1, 0);
}

static double
bench_multiloop_cpu(void)
{
    return multiloop_side(2, 1);
}

static double
one_loop_cpu(void)
{
    return multiloop_side(1, 1);
}

static const struct bench benches[] = {
    {"multiloop_echo", "req/s", bench_multiloop_echo, one_loop_echo,
     "(vs 1 loop)"},
    {"multiloop_cpu", "req/cpu-s", bench_multiloop_cpu, one_loop_cpu,
     "ratio >= 0.9 (vs 1 loop)"},
};

BENCH_MODULE(bench_multiloop_module, benches);

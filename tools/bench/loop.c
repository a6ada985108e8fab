/* SPDX-License-Identifier: MIT */
/* bench/loop.c: awbench's loop figures: call_soon chains, 1,000,000
 * timers, the bytes of a pending timer, call_soon_threadsafe from another
 * thread; and raw_call_soon, the floor other modules compare chains of
 * loop passes with. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "await.h"
#include "bench.h"

/* ---- call_soon: a chain of callbacks, each scheduling the next ------- */

#define CHAIN_N 1000000

static long chain_left;

static int
chain_cb(aw_loop *loop, void *arg)
{
    if (--chain_left == 0)
        return aw_loop_stop(loop);
    return aw_loop_call_soon(loop, chain_cb, arg, NULL);
}

static double
bench_call_soon(void)
{
    aw_loop *loop;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    chain_left = CHAIN_N;
    t0 = bench_now();
    aw_loop_call_soon(loop, chain_cb, NULL, NULL);
    aw_loop_run_forever(loop);
    t1 = bench_now();
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (t1 - t0) * 1e9 / CHAIN_N;
}

static void
raw_chain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct event *ev = arg;

    (void)fd;
    (void)what;
    if (--chain_left > 0)
        event_active(ev, EV_TIMEOUT, 0);
}

double
raw_call_soon(void)
{
    struct event_base *base = bench_raw_base();
    struct event *ev;
    double t0, t1;

    ev = event_new(base, -1, 0, raw_chain_cb, event_self_cbarg());
    chain_left = CHAIN_N;
    t0 = bench_now();
    event_active(ev, EV_TIMEOUT, 0);
    event_base_dispatch(base);
    t1 = bench_now();
    event_free(ev);
    event_base_free(base);
    return (t1 - t0) * 1e9 / CHAIN_N;
}

/* ---- timers_1m: 1,000,000 timers with scattered deadlines, all fired ---- */

#define TIMERS_N 1000000
#define TIMER_SPREAD 0.010 /* deadlines spread over 10 ms */

static long timers_left;
static double *timer_delays;

static void
make_delays(void)
{
    long i;

    if (timer_delays != NULL)
        return;
    timer_delays = malloc(TIMERS_N * sizeof(*timer_delays));
    for (i = 0; i < TIMERS_N; i++)
        timer_delays[i] = (double)(bench_rng() % 1000000) * (TIMER_SPREAD / 1e6);
}

static int
timer_fired_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    if (--timers_left == 0)
        return aw_loop_stop(loop);
    return 0;
}

static double
bench_timers(void)
{
    aw_loop *loop;
    double t0, t1;
    long i;
    int rc;

    make_delays();
    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    timers_left = TIMERS_N;
    t0 = bench_now();
    for (i = 0; i < TIMERS_N; i++)
        if ((rc = aw_loop_call_later(loop, timer_delays[i], timer_fired_cb,
                                     NULL, NULL)) != 0)
            bench_die("call_later", rc);
    aw_loop_run_forever(loop);
    t1 = bench_now();
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (t1 - t0) * 1e9 / TIMERS_N;
}

static void
raw_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (--timers_left == 0)
        event_base_loopbreak(arg);
}

static double
raw_timers(void)
{
    struct event_base *base;
    struct event *evs;
    size_t evsize = event_get_struct_event_size();
    double t0, t1;
    long i;

    make_delays();
    base = bench_raw_base();
    /* The kindest floor for libevent: the events are preallocated. */
    evs = calloc(TIMERS_N, evsize);
    timers_left = TIMERS_N;
    t0 = bench_now();
    for (i = 0; i < TIMERS_N; i++) {
        struct event *ev = (struct event *)((char *)evs + (size_t)i * evsize);
        double d = timer_delays[i];
        struct timeval tv;

        tv.tv_sec = (time_t)d;
        tv.tv_usec = (suseconds_t)((d - (double)tv.tv_sec) * 1e6);
        evtimer_assign(ev, base, raw_timer_cb, base);
        evtimer_add(ev, &tv);
    }
    event_base_dispatch(base);
    t1 = bench_now();
    free(evs);
    event_base_free(base);
    return (t1 - t0) * 1e9 / TIMERS_N;
}

/* ---- timer_bytes: memory per pending timer ------------------------------- */

static int
never_cb(aw_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    return 0;
}

static double
bench_timer_bytes(void)
{
    aw_loop *loop;
    aw_handle **handles;
    size_t before, after;
    long i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    /* Allocated before the measurement: the caller's array, not ours. */
    handles = malloc(TIMERS_N * sizeof(*handles));
    before = bench_heap_in_use();
    for (i = 0; i < TIMERS_N; i++)
        if ((rc = aw_loop_call_later(loop, 1000 + (double)(bench_rng() % 1000),
                                     never_cb, NULL, &handles[i])) != 0)
            bench_die("call_later", rc);
    after = bench_heap_in_use();
    for (i = 0; i < TIMERS_N; i++) {
        aw_handle_cancel(handles[i]);
        aw_handle_unref(handles[i]);
    }
    free(handles);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (double)(after - before) / TIMERS_N;
}

/* ---- threadsafe_calls: calls per second from one other thread ---------- */

#define TS_N 2000000

static long ts_left;

static int
ts_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    if (--ts_left == 0)
        return aw_loop_stop(loop);
    return 0;
}

static void *
ts_producer(void *arg)
{
    aw_loop *loop = arg;
    long i;

    for (i = 0; i < TS_N; i++)
        while (aw_loop_call_soon_threadsafe(loop, ts_cb, NULL) != 0)
            ;
    return NULL;
}

static double
bench_threadsafe(void)
{
    aw_loop *loop;
    pthread_t t;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    ts_left = TS_N;
    t0 = bench_now();
    pthread_create(&t, NULL, ts_producer, loop);
    aw_loop_run_forever(loop);
    t1 = bench_now();
    pthread_join(t, NULL);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return TS_N / (t1 - t0);
}

/* The raw libevent way: a locked queue and event_active() on a base made
 * thread-aware with evthread_use_pthreads(). */
struct raw_ts {
    pthread_mutex_t lock;
    long queued;
    struct event *ev;
};

static void
raw_ts_cb(evutil_socket_t fd, short what, void *arg)
{
    struct raw_ts *q = arg;
    long n;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&q->lock);
    n = q->queued;
    q->queued = 0;
    pthread_mutex_unlock(&q->lock);
    ts_left -= n;
    if (ts_left == 0)
        event_base_loopbreak(event_get_base(q->ev));
}

static void *
raw_ts_producer(void *arg)
{
    struct raw_ts *q = arg;
    long i;

    for (i = 0; i < TS_N; i++) {
        pthread_mutex_lock(&q->lock);
        q->queued++;
        pthread_mutex_unlock(&q->lock);
        event_active(q->ev, EV_READ, 0);
    }
    return NULL;
}

static double
raw_threadsafe(void)
{
    struct event_base *base;
    struct raw_ts q;
    pthread_t t;
    double t0, t1;
    struct timeval forever = {100000, 0};

    evthread_use_pthreads();
    base = event_base_new();
    pthread_mutex_init(&q.lock, NULL);
    q.queued = 0;
    /* Pending on a far timeout, so that the base has an event to wait on. */
    q.ev = event_new(base, -1, EV_PERSIST, raw_ts_cb, &q);
    event_add(q.ev, &forever);
    ts_left = TS_N;
    t0 = bench_now();
    pthread_create(&t, NULL, raw_ts_producer, &q);
    event_base_dispatch(base);
    t1 = bench_now();
    pthread_join(t, NULL);
    event_free(q.ev);
    event_base_free(base);
    pthread_mutex_destroy(&q.lock);
    return TS_N / (t1 - t0);
}

static const struct bench benches[] = {
    {"call_soon", "ns", bench_call_soon, raw_call_soon, "ratio <= 2.0"},
    {"timers_1m", "ns", bench_timers, raw_timers, "ratio <= 0.5"},
    {"timer_bytes", "bytes", bench_timer_bytes, NULL, "<= 64"},
    {"threadsafe_calls", "calls/s", bench_threadsafe, raw_threadsafe,
     ">= 1000000"},
};

BENCH_MODULE(bench_loop_module, benches);

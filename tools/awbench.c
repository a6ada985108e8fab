/* awbench.c: libawait's benchmarks.  Each figure is measured next to raw
 * libevent doing the same work in the same run (rounds alternate between
 * the two; the median of each side is kept) and reported as a ratio.
 *
 *   awbench [--json] [--rounds N] [--only NAME]
 */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "await.h"

static int rounds = 5;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
die(const char *what, int rc)
{
    fprintf(stderr, "awbench: %s: %s\n", what, aw_strerror(rc));
    exit(1);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

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
        die("loop", rc);
    chain_left = CHAIN_N;
    t0 = now();
    aw_loop_call_soon(loop, chain_cb, NULL, NULL);
    aw_loop_run_forever(loop);
    t1 = now();
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
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

/* The raw baselines run on bases without locks: the strictest floor, even
 * though libawait's own bases are created thread-aware. */
static struct event_base *
raw_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

static double
raw_call_soon(void)
{
    struct event_base *base = raw_base();
    struct event *ev;
    double t0, t1;

    ev = event_new(base, -1, 0, raw_chain_cb, event_self_cbarg());
    chain_left = CHAIN_N;
    t0 = now();
    event_active(ev, EV_TIMEOUT, 0);
    event_base_dispatch(base);
    t1 = now();
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
        timer_delays[i] = (double)(rng() % 1000000) * (TIMER_SPREAD / 1e6);
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
        die("loop", rc);
    timers_left = TIMERS_N;
    t0 = now();
    for (i = 0; i < TIMERS_N; i++)
        if ((rc = aw_loop_call_later(loop, timer_delays[i], timer_fired_cb,
                                     NULL, NULL)) != 0)
            die("call_later", rc);
    aw_loop_run_forever(loop);
    t1 = now();
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
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
    base = raw_base();
    /* The kindest floor for libevent: the events are preallocated. */
    evs = calloc(TIMERS_N, evsize);
    timers_left = TIMERS_N;
    t0 = now();
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
    t1 = now();
    free(evs);
    event_base_free(base);
    return (t1 - t0) * 1e9 / TIMERS_N;
}

/* ---- timer_bytes: memory per pending timer ------------------------------- */

static size_t
heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

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
        die("loop", rc);
    /* Allocated before the measurement: the caller's array, not ours. */
    handles = malloc(TIMERS_N * sizeof(*handles));
    before = heap_in_use();
    for (i = 0; i < TIMERS_N; i++)
        if ((rc = aw_loop_call_later(loop, 1000 + (double)(rng() % 1000),
                                     never_cb, NULL, &handles[i])) != 0)
            die("call_later", rc);
    after = heap_in_use();
    for (i = 0; i < TIMERS_N; i++) {
        aw_handle_cancel(handles[i]);
        aw_handle_unref(handles[i]);
    }
    free(handles);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
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
        die("loop", rc);
    ts_left = TS_N;
    t0 = now();
    pthread_create(&t, NULL, ts_producer, loop);
    aw_loop_run_forever(loop);
    t1 = now();
    pthread_join(t, NULL);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
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
    t0 = now();
    pthread_create(&t, NULL, raw_ts_producer, &q);
    event_base_dispatch(base);
    t1 = now();
    pthread_join(t, NULL);
    event_free(q.ev);
    event_base_free(base);
    pthread_mutex_destroy(&q.lock);
    return TS_N / (t1 - t0);
}

/* ---- the table ------------------------------------------------------------ */

struct bench {
    const char *name;
    const char *unit;
    double (*ours)(void);
    double (*raw)(void); /* NULL: no baseline */
    const char *target;
};

static const struct bench benches[] = {
    {"call_soon", "ns", bench_call_soon, raw_call_soon, "ratio <= 2.0"},
    {"timers_1m", "ns", bench_timers, raw_timers, "ratio <= 0.5"},
    {"timer_bytes", "bytes", bench_timer_bytes, NULL, "<= 64"},
    {"threadsafe_calls", "calls/s", bench_threadsafe, raw_threadsafe,
     ">= 1000000"},
};

int
main(int argc, char **argv)
{
    const char *only = NULL;
    int json = 0, first = 1, i;
    size_t b;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr,
                    "usage: awbench [--json] [--rounds N] [--only NAME]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 100)
        rounds = 5;
    if (json)
        printf("{");
    else
        printf("%-18s %14s %14s %8s %-9s %s\n", "benchmark", "libawait",
               "libevent", "ratio", "unit", "target");
    for (b = 0; b < sizeof(benches) / sizeof(benches[0]); b++) {
        const struct bench *bn = &benches[b];
        double ours[100], raw[100], v, base = NAN;
        int r;

        if (only != NULL && strcmp(only, bn->name) != 0)
            continue;
        for (r = 0; r < rounds; r++) {
            ours[r] = bn->ours();
            if (bn->raw != NULL)
                raw[r] = bn->raw();
        }
        v = median(ours, rounds);
        if (bn->raw != NULL)
            base = median(raw, rounds);
        if (json) {
            printf("%s\n  \"%s\": {\"value\": %.3f, \"unit\": \"%s\", ",
                   first ? "" : ",", bn->name, v, bn->unit);
            if (bn->raw != NULL)
                printf("\"baseline\": %.3f, \"ratio\": %.4f}", base, v / base);
            else
                printf("\"baseline\": null, \"ratio\": null}");
        } else if (bn->raw != NULL) {
            printf("%-18s %14.1f %14.1f %8.3f %-9s %s\n", bn->name, v, base,
                   v / base, bn->unit, bn->target);
        } else {
            printf("%-18s %14.1f %14s %8s %-9s %s\n", bn->name, v, "-", "-",
                   bn->unit, bn->target);
        }
        fflush(stdout);
        first = 0;
    }
    if (json)
        printf("\n}\n");
    return 0;
}

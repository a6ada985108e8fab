/* SPDX-License-Identifier: MIT */
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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
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

/* ---- future_resolve: create, add a done callback, resolve, run it ------- */

#define RESOLVE_N 1000000

static long resolve_left;

static int resolve_step(aw_future *f, void *arg);

static void
resolve_next(aw_loop *loop)
{
    aw_future *f = aw_future_new(loop);
    int rc;

    if (f == NULL)
        die("future", -ENOMEM);
    if ((rc = aw_future_add_done_callback(f, resolve_step, loop)) != 0)
        die("add_done_callback", rc);
    aw_future_set_result_int(f, resolve_left);
    aw_future_unref(f); /* the scheduled callbacks keep it until they ran */
}

static int
resolve_step(aw_future *f, void *arg)
{
    (void)f;
    if (--resolve_left == 0)
        return aw_loop_stop(arg);
    resolve_next(arg);
    return 0;
}

static double
bench_future_resolve(void)
{
    aw_loop *loop;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    resolve_left = RESOLVE_N;
    t0 = now();
    resolve_next(loop);
    aw_loop_run_forever(loop);
    t1 = now();
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / RESOLVE_N;
}

/* ---- future_bytes: memory per pending future ------------------------------ */

#define FUTB_N 1000000

static double
bench_future_bytes(void)
{
    aw_future **fs = malloc(FUTB_N * sizeof(*fs));
    size_t before, after;
    aw_loop *loop;
    long i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    before = heap_in_use();
    for (i = 0; i < FUTB_N; i++)
        if ((fs[i] = aw_future_new(loop)) == NULL)
            die("future", -ENOMEM);
    after = heap_in_use();
    for (i = 0; i < FUTB_N; i++)
        aw_future_unref(fs[i]);
    free(fs);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (double)(after - before) / FUTB_N;
}

/* ---- gather: children resolved from callbacks ------------------------------ */

static int
resolve_child_cb(aw_loop *loop, void *arg)
{
    (void)loop;
    return aw_future_set_result_int(arg, 1);
}

/* ns per child: n children created, gathered, each resolved by its own
 * callback, the gather awaited and freed (with its children).  One gather
 * runs untimed first, so that every size is timed with the loop's pools
 * warm. */
static double
gather_per_child(long n, long reps)
{
    aw_future **kids = malloc((size_t)n * sizeof(*kids));
    aw_loop *loop;
    double t0 = 0, t1;
    long r, i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    for (r = -1; r < reps; r++) {
        if (r == 0)
            t0 = now();
        aw_future *g;

        for (i = 0; i < n; i++) {
            if ((kids[i] = aw_future_new(loop)) == NULL)
                die("future", -ENOMEM);
            if ((rc = aw_loop_call_soon(loop, resolve_child_cb, kids[i],
                                        NULL)) != 0)
                die("call_soon", rc);
        }
        g = aw_gather(loop, (size_t)n, kids, 0);
        if ((rc = aw_loop_run_until_complete(loop, g)) != 0)
            die("gather", rc);
        aw_future_unref(g);
    }
    t1 = now();
    free(kids);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / ((double)n * (double)reps);
}

static double
bench_gather_100k(void)
{
    return gather_per_child(100000, 1);
}

static double
bench_gather_1k(void)
{
    return gather_per_child(1000, 100);
}

static double
bench_gather_flatness(void)
{
    return gather_per_child(100000, 1) / gather_per_child(1000, 100);
}

/* Raw libevent: n events created, each activated; their callbacks count
 * down and the last breaks the loop; all freed. */
static long raw_gather_left;

static void
raw_gather_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (--raw_gather_left == 0)
        event_base_loopbreak(arg);
}

static double
raw_gather_100k(void)
{
    const long n = 100000;
    struct event_base *base = raw_base();
    struct event **evs = malloc((size_t)n * sizeof(*evs));
    double t0, t1;
    long i;

    t0 = now();
    raw_gather_left = n;
    for (i = 0; i < n; i++) {
        evs[i] = event_new(base, -1, 0, raw_gather_cb, base);
        event_active(evs[i], EV_TIMEOUT, 0);
    }
    event_base_dispatch(base);
    for (i = 0; i < n; i++)
        event_free(evs[i]);
    t1 = now();
    free(evs);
    event_base_free(base);
    return (t1 - t0) * 1e9 / n;
}

/* ---- then_chain_1m: a chain of 1,000,000 then steps ------------------------- */

#define THEN_N 1000000

static aw_future *
then_step(aw_future *settled, void *arg)
{
    intptr_t v = 0;

    (void)arg;
    aw_future_result_int(settled, &v);
    return aw_future_resolved_int(aw_future_loop(settled), v + 1);
}

/* Build a chain of THEN_N steps, resolve its root, run it to the end
 * (each step freed as it goes); returns the seconds it took. */
static double
then_chain_once(aw_loop *loop)
{
    aw_future *root, *f;
    double t0, t1;
    intptr_t v = 0;
    long i;
    int rc;

    t0 = now();
    root = aw_future_new(loop);
    f = aw_future_ref(root);
    for (i = 0; i < THEN_N; i++)
        f = aw_then(f, then_step, NULL);
    aw_future_set_result_int(root, 0);
    aw_future_unref(root);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        die("then chain", rc);
    aw_future_result_int(f, &v);
    aw_future_unref(f);
    t1 = now();
    if (v != THEN_N) {
        fprintf(stderr, "awbench: then_chain_1m ended with %ld\n", (long)v);
        exit(1);
    }
    return t1 - t0;
}

/* Timed: the second chain on one loop, its pools warm from the first (a
 * daemon's loop lives long); then_chain_cold times a fresh loop's. */
static double
bench_then_chain(void)
{
    aw_loop *loop;
    double t;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    then_chain_once(loop);
    t = then_chain_once(loop);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return t * 1e9 / THEN_N;
}

static double
bench_then_chain_cold(void)
{
    aw_loop *loop;
    double t;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    t = then_chain_once(loop);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return t * 1e9 / THEN_N;
}

/* ---- task_await: a task awaiting futures that callbacks resolve -------- */

#define AWAIT_N 1000000

struct await_frame {
    long left;
};

static int
resolve_cb(aw_loop *loop, void *arg)
{
    (void)loop;
    aw_future_set_result_int(arg, 1);
    aw_future_unref(arg);
    return 0;
}

static aw_future *
resolved_soon(aw_loop *loop)
{
    aw_future *f = aw_future_new(loop);
    int rc;

    if (f == NULL)
        die("future", -ENOMEM);
    if ((rc = aw_loop_call_soon(loop, resolve_cb, aw_future_ref(f), NULL)) !=
        0)
        die("call_soon", rc);
    return f;
}

static AW_TASK(await_task, struct await_frame *f)
{
    AW_BEGIN();
    while (f->left-- > 0)
        AW_AWAIT(resolved_soon(aw_task_loop(AW_SELF())), NULL);
    AW_END();
}

static double
bench_task_await(void)
{
    struct await_frame frame = {AWAIT_N};
    aw_loop *loop;
    aw_task *t;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    t0 = now();
    t = aw_task_new(loop, await_task, &frame, NULL);
    if ((rc = aw_loop_run_until_complete(loop, t)) != 0)
        die("task_await", rc);
    t1 = now();
    aw_future_unref(t);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / AWAIT_N;
}

/* ---- task_spawn: empty tasks spawned, run and freed ---------------------- */

#define SPAWN_N 1000000
#define SPAWN_BATCH 10000

static long spawn_left;

static AW_TASK(empty_task, void *unused)
{
    (void)unused;
    AW_BEGIN();
    if (--spawn_left == 0)
        aw_loop_stop(aw_task_loop(AW_SELF()));
    AW_END();
}

static double
bench_task_spawn(void)
{
    aw_loop *loop;
    double t0, t1;
    long b, i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    t0 = now();
    for (b = 0; b < SPAWN_N / SPAWN_BATCH; b++) {
        spawn_left = SPAWN_BATCH;
        for (i = 0; i < SPAWN_BATCH; i++) {
            aw_task *t = aw_task_new(loop, empty_task, NULL, NULL);

            if (!aw_is_task(t))
                die("task", -ENOMEM);
            aw_future_unref(t); /* the loop runs it to its end */
        }
        aw_loop_run_forever(loop);
    }
    t1 = now();
    if (aw_all_tasks(loop, NULL, 0) != 0)
        die("task_spawn: tasks left", -EINVAL);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / SPAWN_N;
}

/* The raw libevent counterpart of a spawned task: an event created,
 * activated, run and freed. */
static void
raw_spawn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_free(arg); /* the base returns once it has no event left */
    spawn_left--;
}

static double
raw_task_spawn(void)
{
    struct event_base *base = raw_base();
    double t0, t1;
    long b, i;

    t0 = now();
    for (b = 0; b < SPAWN_N / SPAWN_BATCH; b++) {
        spawn_left = SPAWN_BATCH;
        for (i = 0; i < SPAWN_BATCH; i++) {
            struct event *ev = event_new(base, -1, 0, raw_spawn_cb,
                                         event_self_cbarg());

            event_active(ev, EV_TIMEOUT, 0);
        }
        event_base_dispatch(base);
    }
    t1 = now();
    event_base_free(base);
    return (t1 - t0) * 1e9 / SPAWN_N;
}

/* ---- task_bytes: memory per task pending on its own sleep --------------- */

#define TASKB_N 1000000

static AW_TASK(sleeping_task, void *unused)
{
    (void)unused;
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 1000 + (double)(rng() % 1000)),
             NULL);
    AW_END();
}

static double
bench_task_bytes(void)
{
    aw_loop *loop;
    size_t before, after;
    aw_task **ts;
    long i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    ts = malloc(TASKB_N * sizeof(*ts));
    before = heap_in_use();
    for (i = 0; i < TASKB_N; i++) {
        ts[i] = aw_task_new(loop, sleeping_task, NULL, NULL);
        if (!aw_is_task(ts[i]))
            die("task", -ENOMEM);
    }
    /* One pass runs every first step: each task waits on its sleep. */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    after = heap_in_use();
    for (i = 0; i < TASKB_N; i++) {
        aw_future_cancel(ts[i], NULL);
        aw_future_unref(ts[i]);
    }
    free(ts);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (double)(after - before) / TASKB_N;
}

/* ---- cancel_storm: 100,000 tasks cancelled at random awaits ------------- */

#define STORM_N 100000

struct storm_frame {
    aw_future *own;
    unsigned kind;
};

static void
storm_free(void *p)
{
    struct storm_frame *s = p;

    aw_future_unref(s->own);
}

static AW_TASK(storm_task, struct storm_frame *s)
{
    AW_BEGIN();
    for (;;) {
        if (s->kind % 3 == 0)
            AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 100), NULL);
        else if (s->kind % 3 == 1)
            AW_AWAIT(aw_future_ref(s->own), NULL);
        else
            AW_YIELD();
        s->kind = (unsigned)rng();
    }
    AW_END();
}

static double
bench_cancel_storm(void)
{
    static struct storm_frame frames[STORM_N];
    aw_loop *loop;
    aw_task **ts;
    double t0, t1;
    long i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    ts = malloc(STORM_N * sizeof(*ts));
    for (i = 0; i < STORM_N; i++) {
        frames[i].own = aw_future_new(loop);
        frames[i].kind = (unsigned)rng();
        ts[i] = aw_task_new(loop, storm_task, &frames[i], storm_free);
        if (!aw_is_task(ts[i]))
            die("task", -ENOMEM);
    }
    for (i = 0; i < 3; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t0 = now();
    for (i = 0; i < STORM_N; i++)
        if ((rc = aw_future_cancel(ts[i], NULL)) != 0)
            die("cancel", rc);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t1 = now();
    for (i = 0; i < STORM_N; i++) {
        if (!aw_future_cancelled(ts[i]))
            die("cancel_storm: a task was not cancelled", -EINVAL);
        aw_future_unref(ts[i]);
    }
    free(ts);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / STORM_N;
}

/* Raw libevent: as many pending timer events, each deleted and freed. */
static void
raw_storm_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static double
raw_cancel_storm(void)
{
    struct event_base *base = raw_base();
    struct event **evs = malloc(STORM_N * sizeof(*evs));
    struct timeval tv = {100, 0};
    double t0, t1;
    long i;

    for (i = 0; i < STORM_N; i++) {
        evs[i] = evtimer_new(base, raw_storm_cb, NULL);
        evtimer_add(evs[i], &tv);
    }
    t0 = now();
    for (i = 0; i < STORM_N; i++) {
        event_del(evs[i]);
        event_free(evs[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    t1 = now();
    free(evs);
    event_base_free(base);
    return (t1 - t0) * 1e9 / STORM_N;
}

/* ---- lock_uncontended: acquire (a future) and release, no waiter ------- */

#define LOCK_N 10000000

static double
bench_lock_uncontended(void)
{
    aw_loop *loop;
    aw_lock *lock;
    double t0, t1;
    long i;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    lock = aw_lock_new(loop);
    t0 = now();
    for (i = 0; i < LOCK_N; i++) {
        aw_future *f = aw_lock_acquire(lock);

        if ((rc = aw_future_error(f)) != 0) /* reading it takes the lock */
            die("acquire", rc);
        aw_lock_release(lock);
        aw_future_unref(f);
    }
    t1 = now();
    aw_lock_free(lock);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / LOCK_N;
}

/* ---- queue_handoff: a producer and a consumer task, a queue of 64 -------- */

#define HANDOFF_N 1000000

struct handoff {
    aw_queue *q;
    long i;
    void *item;
    long sum;
};

static AW_TASK(handoff_producer, struct handoff *h)
{
    AW_BEGIN();
    for (h->i = 1; h->i <= HANDOFF_N; h->i++)
        AW_AWAIT(aw_queue_put(h->q, (void *)(intptr_t)h->i), NULL);
    AW_END();
}

static AW_TASK(handoff_consumer, struct handoff *h)
{
    AW_BEGIN();
    for (h->i = 0; h->i < HANDOFF_N; h->i++) {
        AW_AWAIT(aw_queue_get(h->q), &h->item);
        h->sum += (long)(intptr_t)h->item;
    }
    AW_END();
}

static double
bench_queue_handoff(void)
{
    struct handoff p = {0}, c = {0};
    aw_task *tp, *tc;
    aw_loop *loop;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    p.q = c.q = aw_queue_new(loop, AW_QUEUE_FIFO, 64, NULL, NULL);
    t0 = now();
    tp = aw_task_new(loop, handoff_producer, &p, NULL);
    tc = aw_task_new(loop, handoff_consumer, &c, NULL);
    if ((rc = aw_loop_run_until_complete(loop, tc)) != 0)
        die("queue_handoff", rc);
    t1 = now();
    if (c.sum != (long)HANDOFF_N * (HANDOFF_N + 1) / 2) {
        fprintf(stderr, "awbench: queue_handoff lost items\n");
        exit(1);
    }
    aw_loop_run_until_complete(loop, tp);
    aw_future_unref(tp);
    aw_future_unref(tc);
    aw_queue_free(p.q);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / HANDOFF_N;
}

/* ---- semaphore_contended: 100 tasks, a semaphore of 10 ------------------- */

#define SEM_TASKS 100
#define SEM_ROUNDS 10000

static aw_semaphore *bench_sem;

static AW_TASK(sem_task, long *done)
{
    AW_BEGIN();
    for (*done = 0; *done < SEM_ROUNDS; (*done)++) {
        AW_AWAIT(aw_semaphore_acquire(bench_sem), NULL);
        aw_semaphore_release(bench_sem);
    }
    AW_END();
}

static double
bench_semaphore_contended(void)
{
    static long done[SEM_TASKS];
    aw_future *ts[SEM_TASKS], *all;
    aw_loop *loop;
    double t0, t1;
    int rc, i;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    bench_sem = aw_semaphore_new(loop, 10);
    t0 = now();
    for (i = 0; i < SEM_TASKS; i++)
        ts[i] = aw_task_new(loop, sem_task, &done[i], NULL);
    all = aw_gather(loop, SEM_TASKS, ts, 0);
    if ((rc = aw_loop_run_until_complete(loop, all)) != 0)
        die("semaphore_contended", rc);
    t1 = now();
    aw_future_unref(all);
    aw_semaphore_free(bench_sem);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (t1 - t0) * 1e9 / ((double)SEM_TASKS * SEM_ROUNDS);
}

/* ---- networking: echo_1k, stream_mb_s, conn_bytes ------------------------ */

#define ECHO_CONNS 10
#define ECHO_SIZE 1024
#define ECHO_SECONDS 2.0
#define STREAM_TOTAL ((size_t)1 << 30)
#define CONNB_N 10000

static char echo_payload[ECHO_SIZE];
static long echo_count;

/* The client, the same for both servers: raw bufferevents, each sending
 * 1 KiB and waiting for it back, over and over. */
static void
echo_client_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);

    (void)arg;
    while (evbuffer_get_length(in) >= ECHO_SIZE) {
        evbuffer_drain(in, ECHO_SIZE);
        echo_count++;
        bufferevent_write(bev, echo_payload, ECHO_SIZE);
    }
}

static void
echo_client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED)
        bufferevent_write(bev, echo_payload, ECHO_SIZE);
}

static void
break_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Run ECHO_CONNS clients against port on base for ECHO_SECONDS: requests
 * per second. */
static double
echo_clients(struct event_base *base, int port)
{
    struct bufferevent *c[ECHO_CONNS];
    struct sockaddr_in sin;
    struct timeval tv = {0, 0};
    struct event *stop;
    double t0, t1;
    int i;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    for (i = 0; i < ECHO_CONNS; i++) {
        c[i] = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(c[i], echo_client_read, NULL, echo_client_event,
                          NULL);
        bufferevent_enable(c[i], EV_READ | EV_WRITE);
        bufferevent_socket_connect(c[i], (struct sockaddr *)&sin,
                                   sizeof(sin));
    }
    tv.tv_usec = (suseconds_t)(ECHO_SECONDS * 1e6) % 1000000;
    tv.tv_sec = (time_t)ECHO_SECONDS;
    stop = evtimer_new(base, break_cb, base);
    evtimer_add(stop, &tv);
    echo_count = 0;
    t0 = now();
    event_base_dispatch(base);
    t1 = now();
    event_free(stop);
    for (i = 0; i < ECHO_CONNS; i++)
        bufferevent_free(c[i]);
    return echo_count / (t1 - t0);
}

struct echo_handler {
    aw_stream *s;
    aw_bytes *req;
};

static void
echo_handler_free(void *p)
{
    struct echo_handler *h = p;

    aw_stream_unref(h->s);
    free(h);
}

static AW_TASK(echo_handler_task, struct echo_handler *h)
{
    AW_BEGIN();
    for (;;) {
        AW_AWAIT(aw_stream_readexactly(h->s, ECHO_SIZE), &h->req);
        aw_stream_write(h->s, aw_bytes_data(h->req), ECHO_SIZE);
        AW_AWAIT(aw_stream_drain(h->s), NULL);
    }
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
echo_on_client(aw_stream *s, void *arg)
{
    struct echo_handler *h = calloc(1, sizeof(*h));

    h->s = s;
    aw_future_unref(aw_task_new(arg, echo_handler_task, h,
                                echo_handler_free));
}

static aw_server *
bench_server(aw_loop *loop, aw_client_fn fn)
{
    aw_future *f = aw_start_server(loop, "127.0.0.1", 0, fn, loop, 0, 0);
    void *srv = NULL;
    int rc;

    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        die("start_server", rc);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    return srv;
}

/* Cancel every task of the loop and run until they are gone. */
static void
end_tasks(aw_loop *loop)
{
    aw_task *ts[64];
    size_t i, n = aw_all_tasks(loop, ts, 64);

    for (i = 0; i < n && i < 64; i++)
        aw_future_cancel(ts[i], NULL);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
}

static double
bench_echo_1k(void)
{
    aw_loop *loop;
    aw_server *srv;
    double rps;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    srv = bench_server(loop, echo_on_client);
    /* The clients run on the loop's own base, beside the server. */
    rps = echo_clients(aw_loop_get_base(loop), aw_server_port(srv));
    aw_server_close(srv);
    end_tasks(loop);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return rps;
}

static void
raw_echo_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev),
                        bufferevent_get_input(bev));
}

static void
raw_echo_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void
raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
           int len, void *arg)
{
    struct bufferevent *bev =
        bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);

    (void)l;
    (void)sa;
    (void)len;
    bufferevent_setcb(bev, raw_echo_read, NULL, raw_echo_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static struct evconnlistener *
raw_listener(struct event_base *base, evconnlistener_cb cb, int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct evconnlistener *l;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l = evconnlistener_new_bind(base, cb, base,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                (struct sockaddr *)&sin, sizeof(sin));
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return l;
}

static double
raw_echo_1k(void)
{
    struct event_base *base = raw_base();
    struct evconnlistener *l;
    double rps;
    int port;

    l = raw_listener(base, raw_accept, &port);
    rps = echo_clients(base, port);
    evconnlistener_free(l);
    event_base_loop(base, EVLOOP_NONBLOCK); /* the servers see the EOFs */
    event_base_free(base);
    return rps;
}

/* stream_mb_s: STREAM_TOTAL bytes from a client stream (writes of 64 KiB,
 * each followed by drain) to a server task reading them. */
static size_t stream_got;

struct sink_handler {
    aw_stream *s;
    aw_bytes *chunk;
};

static AW_TASK(sink_task, struct sink_handler *h)
{
    AW_BEGIN();
    for (;;) {
        AW_AWAIT(aw_stream_read(h->s, 1 << 16), &h->chunk);
        if (aw_bytes_len(h->chunk) == 0)
            break;
        stream_got += aw_bytes_len(h->chunk);
    }
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
sink_on_client(aw_stream *s, void *arg)
{
    struct sink_handler *h = calloc(1, sizeof(*h));

    h->s = s;
    aw_future_unref(aw_task_new(arg, sink_task, h, echo_handler_free));
}

struct pump {
    aw_stream *s;
    size_t sent;
};

static AW_TASK(pump_task, struct pump *p)
{
    static char chunk[1 << 16];

    AW_BEGIN();
    while (p->sent < STREAM_TOTAL) {
        aw_stream_write(p->s, chunk, sizeof(chunk));
        p->sent += sizeof(chunk);
        AW_AWAIT(aw_stream_drain(p->s), NULL);
    }
    aw_stream_write_eof(p->s);
    AW_END();
}

static double
bench_stream_mb_s(void)
{
    struct pump p = {NULL, 0};
    aw_loop *loop;
    aw_server *srv;
    aw_future *f;
    aw_task *t;
    void *s = NULL;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    srv = bench_server(loop, sink_on_client);
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        die("open_connection", rc);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    p.s = s;
    stream_got = 0;
    t0 = now();
    t = aw_task_new(loop, pump_task, &p, NULL);
    while (stream_got < STREAM_TOTAL)
        aw_loop_run_once(loop, 0);
    t1 = now();
    aw_loop_run_until_complete(loop, t);
    aw_future_unref(t);
    aw_stream_close(p.s);
    aw_stream_unref(p.s);
    aw_server_close(srv);
    end_tasks(loop);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (double)STREAM_TOTAL / (t1 - t0) / 1e6;
}

/* Raw: a writer bufferevent refilled to 64 KiB whenever its output
 * drains below 64 KiB (the same flow control), a reader bufferevent
 * draining its input. */
static size_t raw_sent, raw_got;

static void
raw_writer_cb(struct bufferevent *bev, void *arg)
{
    static char chunk[1 << 16];

    (void)arg;
    if (raw_sent < STREAM_TOTAL) {
        bufferevent_write(bev, chunk, sizeof(chunk));
        raw_sent += sizeof(chunk);
    }
}

static void
raw_writer_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & BEV_EVENT_CONNECTED)
        raw_writer_cb(bev, arg);
}

/* The reader takes the data out, 64 KiB at a time, as the stream's
 * reader does (without the allocation of a bytes object). */
static void
raw_reader_cb(struct bufferevent *bev, void *arg)
{
    static char chunk[1 << 16];
    struct evbuffer *in = bufferevent_get_input(bev);
    int n;

    while ((n = evbuffer_remove(in, chunk, sizeof(chunk))) > 0)
        raw_got += (size_t)n;
    if (raw_got >= STREAM_TOTAL)
        event_base_loopbreak(arg);
}

static struct bufferevent *raw_reader;

static void
raw_sink_accept(struct evconnlistener *l, evutil_socket_t fd,
                struct sockaddr *sa, int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    raw_reader = bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(raw_reader, raw_reader_cb, NULL, NULL, arg);
    bufferevent_enable(raw_reader, EV_READ);
}

static double
raw_stream_mb_s(void)
{
    struct event_base *base = raw_base();
    struct evconnlistener *l;
    struct bufferevent *w;
    struct sockaddr_in sin;
    double t0, t1;
    int port;

    l = raw_listener(base, raw_sink_accept, &port);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    w = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(w, NULL, raw_writer_cb, raw_writer_event, NULL);
    /* Called when the output is under 16 KiB, as the stream's drain. */
    bufferevent_setwatermark(w, EV_WRITE, 16 * 1024, 0);
    bufferevent_enable(w, EV_WRITE);
    raw_sent = raw_got = 0;
    t0 = now();
    bufferevent_socket_connect(w, (struct sockaddr *)&sin, sizeof(sin));
    event_base_dispatch(base);
    t1 = now();
    bufferevent_free(w);
    if (raw_reader != NULL)
        bufferevent_free(raw_reader);
    raw_reader = NULL;
    evconnlistener_free(l);
    event_base_free(base);
    return (double)STREAM_TOTAL / (t1 - t0) / 1e6;
}

/* conn_bytes: the server's heap per idle connection (transport,
 * bufferevent, stream, buffers, and a task awaiting a line), with
 * CONNB_N clients held open by a child process. */
static long connb_clients;

static int idle_rc;

static AW_TASK(idle_task, struct echo_handler *h)
{
    AW_BEGIN();
    connb_clients++;
    AW_TRY_AWAIT(idle_rc, aw_stream_readline(h->s), &h->req);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
idle_on_client(aw_stream *s, void *arg)
{
    struct echo_handler *h = calloc(1, sizeof(*h));

    h->s = s;
    aw_future_unref(aw_task_new(arg, idle_task, h, echo_handler_free));
}

static double
bench_conn_bytes(void)
{
    struct rlimit rl;
    aw_loop *loop;
    aw_server *srv;
    size_t before, after;
    long want = CONNB_N, i;
    int rc, port, sync[2];
    pid_t child;
    char c;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < want + 64) {
        want = (long)rl.rlim_cur - 64;
        fprintf(stderr, "awbench: conn_bytes: only %ld connections (file "
                "limit)\n", want);
    }
    if ((rc = aw_loop_new(&loop)) != 0)
        die("loop", rc);
    srv = bench_server(loop, idle_on_client);
    port = aw_server_port(srv);
    if (pipe(sync) != 0)
        die("pipe", -errno);
    child = fork();
    if (child == 0) {
        /* The clients: connect, then hold on until told. */
        struct sockaddr_in sin;

        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons((unsigned short)port);
        for (i = 0; i < want; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);

            if (fd < 0 ||
                connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
                _exit(1);
        }
        if (read(sync[0], &c, 1) < 0)
            _exit(1);
        _exit(0);
    }
    connb_clients = 0;
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    before = heap_in_use();
    while (connb_clients < want)
        aw_loop_run_once(loop, 0);
    after = heap_in_use();
    if (write(sync[1], "x", 1) != 1)
        die("write", -errno);
    waitpid(child, NULL, 0);
    close(sync[0]);
    close(sync[1]);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
    aw_server_close(srv);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        die("free", rc);
    return (double)(after - before) / (double)want;
}

/* ---- the table ------------------------------------------------------------ */

struct bench {
    const char *name;
    const char *unit;
    double (*ours)(void);
    double (*raw)(void); /* NULL: no baseline */
    const char *target;
};

double bench_executor_rtt(void), raw_executor_rtt(void),
    bench_executor_jobs(void); /* tools/bench/executor.c */
static const struct bench benches[] = {
    {"call_soon", "ns", bench_call_soon, raw_call_soon, "ratio <= 2.0"},
    {"timers_1m", "ns", bench_timers, raw_timers, "ratio <= 0.5"},
    {"timer_bytes", "bytes", bench_timer_bytes, NULL, "<= 64"},
    {"threadsafe_calls", "calls/s", bench_threadsafe, raw_threadsafe,
     ">= 1000000"},
    {"future_resolve", "ns", bench_future_resolve, raw_call_soon,
     "ratio <= 6"},
    {"future_bytes", "bytes", bench_future_bytes, NULL, "<= 64"},
    {"gather_100k", "ns", bench_gather_100k, raw_gather_100k, "<= 300"},
    {"gather_1k", "ns", bench_gather_1k, NULL, "(per child, 1k)"},
    {"gather_flatness", "x", bench_gather_flatness, NULL, "<= 1.5"},
    {"then_chain_1m", "ns", bench_then_chain, raw_call_soon, "<= 150"},
    {"then_chain_cold", "ns", bench_then_chain_cold, raw_call_soon,
     "(fresh loop)"},
    {"task_await", "ns", bench_task_await, raw_call_soon, "ratio <= 10"},
    {"task_spawn", "ns", bench_task_spawn, raw_task_spawn, "<= 300"},
    {"task_bytes", "bytes", bench_task_bytes, NULL, "<= 256"},
    {"cancel_storm", "ns", bench_cancel_storm, raw_cancel_storm, "<= 1000"},
    {"lock_uncontended", "ns", bench_lock_uncontended, NULL, "<= 30"},
    {"queue_handoff", "ns", bench_queue_handoff, raw_call_soon, "<= 300"},
    {"semaphore_contended", "ns", bench_semaphore_contended, raw_call_soon,
     "<= 500"},
    {"echo_1k", "req/s", bench_echo_1k, raw_echo_1k, "ratio >= 0.9"},
    {"stream_mb_s", "MB/s", bench_stream_mb_s, raw_stream_mb_s,
     "ratio >= 0.9"},
    {"conn_bytes", "bytes", bench_conn_bytes, NULL, "<= 4096"},
    {"executor_rtt", "ns", bench_executor_rtt, raw_executor_rtt, "ratio <= 1.5"},
    {"executor_jobs", "jobs/s", bench_executor_jobs, NULL, ">= 1000000"},
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
        else if (strcmp(argv[i], "--help") == 0) {
            printf("Usage: awbench [--json] [--rounds N] [--only NAME]\n"
                   "libawait's benchmarks, each next to raw libevent doing "
                   "the same work.\n"
                   "\n"
                   "  --json       one JSON object instead of a table\n"
                   "  --rounds N   rounds per benchmark (default 5; the "
                   "median is kept)\n"
                   "  --only NAME  run one benchmark\n"
                   "  --help       display this help and exit\n"
                   "  --version    output version information and exit\n"
                   "\n"
                   "Report bugs to: "
                   "https://github.com/libawait/libawait/issues\n");
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("awbench (libawait) %s\n"
                   "Copyright (c) 2026 The libawait authors\n"
                   "License MIT: <https://opensource.org/licenses/MIT>.\n"
                   "This is free software: you are free to change and "
                   "redistribute it.\n",
                   AW_VERSION_STRING);
            return 0;
        } else {
            fprintf(stderr,
                    "Usage: awbench [--json] [--rounds N] [--only NAME]\n"
                    "Try 'awbench --help' for more information.\n");
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
            if (getenv("AWBENCH_SIDE") == NULL ||
                strcmp(getenv("AWBENCH_SIDE"), "raw") != 0)
                ours[r] = bn->ours();
            else
                ours[r] = NAN;
            /* AWBENCH_SIDE=ours|raw runs one side (for profiling). */
            if (bn->raw != NULL && (getenv("AWBENCH_SIDE") == NULL ||
                                    strcmp(getenv("AWBENCH_SIDE"), "ours") != 0))
                raw[r] = bn->raw();
            else
                raw[r] = NAN;
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
            printf("%-18s %14.*f %14s %8s %-9s %s\n", bn->name,
                   v < 10 ? 3 : 1, v, "-", "-", bn->unit, bn->target);
        }
        fflush(stdout);
        first = 0;
    }
    if (json)
        printf("\n}\n");
    return 0;
}

/* SPDX-License-Identifier: MIT */
/* bench/task.c: awbench's task figures: awaiting futures, spawning empty
 * tasks, the bytes of a sleeping task, cancelling 100,000 tasks at
 * random awaits. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

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
        bench_die("future", -ENOMEM);
    if ((rc = aw_loop_call_soon(loop, resolve_cb, aw_future_ref(f), NULL)) !=
        0)
        bench_die("call_soon", rc);
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
        bench_die("loop", rc);
    t0 = bench_now();
    t = aw_task_new(loop, await_task, &frame, NULL);
    if ((rc = aw_loop_run_until_complete(loop, t)) != 0)
        bench_die("task_await", rc);
    t1 = bench_now();
    aw_future_unref(t);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
        bench_die("loop", rc);
    t0 = bench_now();
    for (b = 0; b < SPAWN_N / SPAWN_BATCH; b++) {
        spawn_left = SPAWN_BATCH;
        for (i = 0; i < SPAWN_BATCH; i++) {
            aw_task *t = aw_task_new(loop, empty_task, NULL, NULL);

            if (!aw_is_task(t))
                bench_die("task", -ENOMEM);
            aw_future_unref(t); /* the loop runs it to its end */
        }
        aw_loop_run_forever(loop);
    }
    t1 = bench_now();
    if (aw_all_tasks(loop, NULL, 0) != 0)
        bench_die("task_spawn: tasks left", -EINVAL);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
    struct event_base *base = bench_raw_base();
    double t0, t1;
    long b, i;

    t0 = bench_now();
    for (b = 0; b < SPAWN_N / SPAWN_BATCH; b++) {
        spawn_left = SPAWN_BATCH;
        for (i = 0; i < SPAWN_BATCH; i++) {
            struct event *ev = event_new(base, -1, 0, raw_spawn_cb,
                                         event_self_cbarg());

            event_active(ev, EV_TIMEOUT, 0);
        }
        event_base_dispatch(base);
    }
    t1 = bench_now();
    event_base_free(base);
    return (t1 - t0) * 1e9 / SPAWN_N;
}

/* ---- task_bytes: memory per task pending on its own sleep --------------- */

#define TASKB_N 1000000

static AW_TASK(sleeping_task, void *unused)
{
    (void)unused;
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 1000 + (double)(bench_rng() % 1000)),
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
        bench_die("loop", rc);
    ts = malloc(TASKB_N * sizeof(*ts));
    before = bench_heap_in_use();
    for (i = 0; i < TASKB_N; i++) {
        ts[i] = aw_task_new(loop, sleeping_task, NULL, NULL);
        if (!aw_is_task(ts[i]))
            bench_die("task", -ENOMEM);
    }
    /* One pass runs every first step: each task waits on its sleep. */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    after = bench_heap_in_use();
    for (i = 0; i < TASKB_N; i++) {
        aw_future_cancel(ts[i], NULL);
        aw_future_unref(ts[i]);
    }
    free(ts);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
        s->kind = (unsigned)bench_rng();
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
        bench_die("loop", rc);
    ts = malloc(STORM_N * sizeof(*ts));
    for (i = 0; i < STORM_N; i++) {
        frames[i].own = aw_future_new(loop);
        frames[i].kind = (unsigned)bench_rng();
        ts[i] = aw_task_new(loop, storm_task, &frames[i], storm_free);
        if (!aw_is_task(ts[i]))
            bench_die("task", -ENOMEM);
    }
    for (i = 0; i < 3; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t0 = bench_now();
    for (i = 0; i < STORM_N; i++)
        if ((rc = aw_future_cancel(ts[i], NULL)) != 0)
            bench_die("cancel", rc);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t1 = bench_now();
    for (i = 0; i < STORM_N; i++) {
        if (!aw_future_cancelled(ts[i]))
            bench_die("cancel_storm: a task was not cancelled", -EINVAL);
        aw_future_unref(ts[i]);
    }
    free(ts);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
    struct event_base *base = bench_raw_base();
    struct event **evs = malloc(STORM_N * sizeof(*evs));
    struct timeval tv = {100, 0};
    double t0, t1;
    long i;

    for (i = 0; i < STORM_N; i++) {
        evs[i] = evtimer_new(base, raw_storm_cb, NULL);
        evtimer_add(evs[i], &tv);
    }
    t0 = bench_now();
    for (i = 0; i < STORM_N; i++) {
        event_del(evs[i]);
        event_free(evs[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    t1 = bench_now();
    free(evs);
    event_base_free(base);
    return (t1 - t0) * 1e9 / STORM_N;
}

static const struct bench benches[] = {
    {"task_await", "ns", bench_task_await, raw_call_soon, "ratio <= 10"},
    {"task_spawn", "ns", bench_task_spawn, raw_task_spawn, "<= 300"},
    {"task_bytes", "bytes", bench_task_bytes, NULL, "<= 256"},
    {"cancel_storm", "ns", bench_cancel_storm, raw_cancel_storm, "<= 1000"},
};

BENCH_MODULE(bench_task_module, benches);

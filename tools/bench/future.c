/* SPDX-License-Identifier: MIT */
/* bench/future.c: awbench's future figures: resolving with a done
 * callback, the bytes of a pending future, gather (per child, and its
 * flatness from 1,000 to 100,000 children), chains of then steps. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

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
        bench_die("future", -ENOMEM);
    if ((rc = aw_future_add_done_callback(f, resolve_step, loop)) != 0)
        bench_die("add_done_callback", rc);
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
        bench_die("loop", rc);
    resolve_left = RESOLVE_N;
    t0 = bench_now();
    resolve_next(loop);
    aw_loop_run_forever(loop);
    t1 = bench_now();
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
        bench_die("loop", rc);
    before = bench_heap_in_use();
    for (i = 0; i < FUTB_N; i++)
        if ((fs[i] = aw_future_new(loop)) == NULL)
            bench_die("future", -ENOMEM);
    after = bench_heap_in_use();
    for (i = 0; i < FUTB_N; i++)
        aw_future_unref(fs[i]);
    free(fs);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
        bench_die("loop", rc);
    for (r = -1; r < reps; r++) {
        if (r == 0)
            t0 = bench_now();
        aw_future *g;

        for (i = 0; i < n; i++) {
            if ((kids[i] = aw_future_new(loop)) == NULL)
                bench_die("future", -ENOMEM);
            if ((rc = aw_loop_call_soon(loop, resolve_child_cb, kids[i],
                                        NULL)) != 0)
                bench_die("call_soon", rc);
        }
        g = aw_gather(loop, (size_t)n, kids, 0);
        if ((rc = aw_loop_run_until_complete(loop, g)) != 0)
            bench_die("gather", rc);
        aw_future_unref(g);
    }
    t1 = bench_now();
    free(kids);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
    struct event_base *base = bench_raw_base();
    struct event **evs = malloc((size_t)n * sizeof(*evs));
    double t0, t1;
    long i;

    t0 = bench_now();
    raw_gather_left = n;
    for (i = 0; i < n; i++) {
        evs[i] = event_new(base, -1, 0, raw_gather_cb, base);
        event_active(evs[i], EV_TIMEOUT, 0);
    }
    event_base_dispatch(base);
    for (i = 0; i < n; i++)
        event_free(evs[i]);
    t1 = bench_now();
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

    t0 = bench_now();
    root = aw_future_new(loop);
    f = aw_future_ref(root);
    for (i = 0; i < THEN_N; i++)
        f = aw_then(f, then_step, NULL);
    aw_future_set_result_int(root, 0);
    aw_future_unref(root);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("then chain", rc);
    aw_future_result_int(f, &v);
    aw_future_unref(f);
    t1 = bench_now();
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
        bench_die("loop", rc);
    then_chain_once(loop);
    t = then_chain_once(loop);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return t * 1e9 / THEN_N;
}

static double
bench_then_chain_cold(void)
{
    aw_loop *loop;
    double t;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    t = then_chain_once(loop);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return t * 1e9 / THEN_N;
}

static const struct bench benches[] = {
    {"future_resolve", "ns", bench_future_resolve, raw_call_soon,
     "ratio <= 6"},
    {"future_bytes", "bytes", bench_future_bytes, NULL, "<= 64"},
    {"gather_100k", "ns", bench_gather_100k, raw_gather_100k, "<= 300"},
    {"gather_1k", "ns", bench_gather_1k, NULL, "(per child, 1k)"},
    {"gather_flatness", "x", bench_gather_flatness, NULL, "<= 1.5"},
    {"then_chain_1m", "ns", bench_then_chain, raw_call_soon, "<= 150"},
    {"then_chain_cold", "ns", bench_then_chain_cold, raw_call_soon,
     "(fresh loop)"},
};

BENCH_MODULE(bench_future_module, benches);

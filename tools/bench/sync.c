/* SPDX-License-Identifier: MIT */
/* bench/sync.c: awbench's figures for the synchronisation primitives and
 * queues: an uncontended lock, a producer/consumer hand-off through a
 * queue, a contended semaphore. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "await.h"
#include "bench.h"

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
        bench_die("loop", rc);
    lock = aw_lock_new(loop);
    t0 = bench_now();
    for (i = 0; i < LOCK_N; i++) {
        aw_future *f = aw_lock_acquire(lock);

        if ((rc = aw_future_error(f)) != 0) /* reading it takes the lock */
            bench_die("acquire", rc);
        aw_lock_release(lock);
        aw_future_unref(f);
    }
    t1 = bench_now();
    aw_lock_free(lock);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
        bench_die("loop", rc);
    p.q = c.q = aw_queue_new(loop, AW_QUEUE_FIFO, 64, NULL, NULL);
    t0 = bench_now();
    tp = aw_task_new(loop, handoff_producer, &p, NULL);
    tc = aw_task_new(loop, handoff_consumer, &c, NULL);
    if ((rc = aw_loop_run_until_complete(loop, tc)) != 0)
        bench_die("queue_handoff", rc);
    t1 = bench_now();
    if (c.sum != (long)HANDOFF_N * (HANDOFF_N + 1) / 2) {
        fprintf(stderr, "awbench: queue_handoff lost items\n");
        exit(1);
    }
    aw_loop_run_until_complete(loop, tp);
    aw_future_unref(tp);
    aw_future_unref(tc);
    aw_queue_free(p.q);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
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
        bench_die("loop", rc);
    bench_sem = aw_semaphore_new(loop, 10);
    t0 = bench_now();
    for (i = 0; i < SEM_TASKS; i++)
        ts[i] = aw_task_new(loop, sem_task, &done[i], NULL);
    all = aw_gather(loop, SEM_TASKS, ts, 0);
    if ((rc = aw_loop_run_until_complete(loop, all)) != 0)
        bench_die("semaphore_contended", rc);
    t1 = bench_now();
    aw_future_unref(all);
    aw_semaphore_free(bench_sem);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (t1 - t0) * 1e9 / ((double)SEM_TASKS * SEM_ROUNDS);
}

static const struct bench benches[] = {
    {"lock_uncontended", "ns", bench_lock_uncontended, NULL, "<= 30"},
    {"queue_handoff", "ns", bench_queue_handoff, raw_call_soon, "<= 300"},
    {"semaphore_contended", "ns", bench_semaphore_contended, raw_call_soon,
     "<= 500"},
};

BENCH_MODULE(bench_sync_module, benches);

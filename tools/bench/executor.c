/* SPDX-License-Identifier: MIT */
/* bench/executor.c: awbench's executor figures.  executor_rtt: ns per job
 * round trip (submit, run in a worker, result back on the loop), next to
 * a raw pthread worker that writes an eventfd a libevent base reads;
 * executor_jobs: jobs per second for 1,000,000 empty jobs through 4
 * workers, fed from one loop. */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <sys/eventfd.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

/* The same work on both sides: nothing, returning its argument. */
static void *
empty_job(void *arg, int *err)
{
    (void)err;
    return arg;
}

/* ---- executor_rtt ----------------------------------------------------------- */

#define RTT_N 20000

struct rtt {
    aw_loop *loop;
    aw_executor *ex;
    long left;
};

static int
rtt_step(aw_future *f, void *arg)
{
    struct rtt *r = arg;
    aw_future *next;

    aw_future_unref(f);
    if (--r->left == 0)
        return aw_loop_stop(r->loop);
    next = aw_loop_run_in_executor(r->loop, r->ex, empty_job, NULL, NULL,
                                   NULL);
    return aw_future_add_done_callback(next, rtt_step, r);
}

static double
bench_executor_rtt(void)
{
    aw_executor_options o = {1, "awbench", 0};
    struct rtt r;
    aw_future *f;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&r.loop)) != 0)
        bench_die("loop", rc);
    if ((rc = aw_executor_new(&r.ex, &o)) != 0)
        bench_die("executor", rc);
    r.left = RTT_N;
    t0 = bench_now();
    f = aw_loop_run_in_executor(r.loop, r.ex, empty_job, NULL, NULL, NULL);
    aw_future_add_done_callback(f, rtt_step, &r);
    aw_loop_run_forever(r.loop);
    t1 = bench_now();
    aw_executor_shutdown(r.ex, 1, 0);
    aw_executor_free(r.ex);
    aw_loop_run_once(r.loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(r.loop)) != 0)
        bench_die("free", rc);
    return (t1 - t0) * 1e9 / RTT_N;
}

/* The raw way: one job slot under a mutex and a condition variable; the
 * worker runs the job and writes an eventfd the base reads. */
struct raw_rtt {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int has_job, quit;
    void *job_arg, *result;
    int efd;
    long left;
    struct event_base *base;
};

static void *
raw_worker(void *arg)
{
    struct raw_rtt *r = arg;
    uint64_t one = 1;
    void *a;
    int err = 0;

    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->has_job && !r->quit)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->quit) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        r->has_job = 0;
        a = r->job_arg;
        pthread_mutex_unlock(&r->mu);
        a = empty_job(a, &err);
        pthread_mutex_lock(&r->mu);
        r->result = a;
        pthread_mutex_unlock(&r->mu);
        if (write(r->efd, &one, sizeof(one)) < 0)
            abort();
    }
}

static void
raw_post(struct raw_rtt *r)
{
    pthread_mutex_lock(&r->mu);
    r->has_job = 1;
    r->job_arg = NULL;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void
raw_rtt_cb(evutil_socket_t fd, short what, void *arg)
{
    struct raw_rtt *r = arg;
    uint64_t n;

    (void)what;
    if (read(fd, &n, sizeof(n)) < 0)
        return;
    if (--r->left == 0) {
        event_base_loopbreak(r->base);
        return;
    }
    raw_post(r);
}

static double
raw_executor_rtt(void)
{
    struct raw_rtt r = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        0, 0, NULL, NULL, -1, RTT_N, NULL};
    struct event *ev;
    pthread_t t;
    double t0, t1;

    r.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r.base = event_base_new();
    ev = event_new(r.base, r.efd, EV_READ | EV_PERSIST, raw_rtt_cb, &r);
    event_add(ev, NULL);
    pthread_create(&t, NULL, raw_worker, &r);
    t0 = bench_now();
    raw_post(&r);
    event_base_dispatch(r.base);
    t1 = bench_now();
    pthread_mutex_lock(&r.mu);
    r.quit = 1;
    pthread_cond_signal(&r.cv);
    pthread_mutex_unlock(&r.mu);
    pthread_join(t, NULL);
    event_free(ev);
    event_base_free(r.base);
    close(r.efd);
    return (t1 - t0) * 1e9 / RTT_N;
}

/* ---- executor_jobs ----------------------------------------------------------- */

#define JOBS_N 1000000
#define JOBS_WINDOW 8192

struct jobs {
    aw_loop *loop;
    aw_executor *ex;
    long to_submit, left;
};

static int jobs_done(aw_future *f, void *arg);

static void
jobs_submit(struct jobs *j)
{
    aw_future *f = aw_loop_run_in_executor(j->loop, j->ex, empty_job, NULL,
                                           NULL, NULL);

    j->to_submit--;
    if (aw_future_add_done_callback(f, jobs_done, j) != 0)
        bench_die("add_done_callback", -ENOMEM);
}

static int
jobs_done(aw_future *f, void *arg)
{
    struct jobs *j = arg;

    aw_future_unref(f);
    if (--j->left == 0)
        return aw_loop_stop(j->loop);
    if (j->to_submit > 0)
        jobs_submit(j);
    return 0;
}

static double
bench_executor_jobs(void)
{
    aw_executor_options o = {4, "awbench", 0};
    struct jobs j;
    double t0, t1;
    int rc, i;

    if ((rc = aw_loop_new(&j.loop)) != 0)
        bench_die("loop", rc);
    if ((rc = aw_executor_new(&j.ex, &o)) != 0)
        bench_die("executor", rc);
    j.to_submit = j.left = JOBS_N;
    t0 = bench_now();
    for (i = 0; i < JOBS_WINDOW; i++)
        jobs_submit(&j);
    aw_loop_run_forever(j.loop);
    t1 = bench_now();
    aw_executor_shutdown(j.ex, 1, 0);
    aw_executor_free(j.ex);
    aw_loop_run_once(j.loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(j.loop)) != 0)
        bench_die("free", rc);
    return JOBS_N / (t1 - t0);
}

static const struct bench benches[] = {
    {"executor_rtt", "ns", bench_executor_rtt, raw_executor_rtt,
     "ratio <= 1.5"},
    {"executor_jobs", "jobs/s", bench_executor_jobs, NULL, ">= 1000000"},
};

BENCH_MODULE(bench_executor_module, benches);

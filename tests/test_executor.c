/* SPDX-License-Identifier: MIT */
/* test_executor.c: the thread pool (run_in_executor, to_thread,
 * ThreadPoolExecutor's shutdown) and aw_run (asyncio.run).  Jobs that must
 * stay running wait on a gate the test opens; nothing depends on timing. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* ---- jobs ------------------------------------------------------------------ */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;
static int gate_entered; /* jobs that reached the gate */

static atomic_int ran;             /* jobs whose fn ran */
static atomic_int args_destroyed;  /* arg_destroy calls */
static atomic_int results_destroyed;

/* A counter's value (a function, so that failures print its name). */
static int
count(atomic_int *c)
{
    return atomic_load(c);
}

static void
gate_reset(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = 0;
    gate_entered = 0;
    pthread_mutex_unlock(&gate_mu);
    atomic_store(&ran, 0);
    atomic_store(&args_destroyed, 0);
    atomic_store(&results_destroyed, 0);
}

static void
gate_release(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

/* Wait until n jobs are at the gate. */
static void
gate_wait_entered(int n)
{
    pthread_mutex_lock(&gate_mu);
    while (gate_entered < n)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

static void
nap(void)
{
    struct timespec ts = {0, 1000000};

    nanosleep(&ts, NULL);
}

/* Wait (in this thread) until a counter reaches n. */
static void
wait_count(atomic_int *c, int n)
{
    int i;

    for (i = 0; i < 20000 && atomic_load(c) < n; i++)
        nap();
    ck_assert_int_ge(count(c), n);
}

/* Wait until the workers of executors freed without waiting have ended
 * and given their memory back. */
static void
wait_allocations(long n)
{
    int i;

    for (i = 0; i < 20000 && aw_test_live_allocations() != n; i++)
        nap();
    ck_assert_int_eq(aw_test_live_allocations(), n);
}

static void
count_arg(void *arg)
{
    (void)arg;
    atomic_fetch_add(&args_destroyed, 1);
}

static void
free_result(void *p)
{
    atomic_fetch_add(&results_destroyed, 1);
    free(p);
}

/* Returns its arg as an integer result. */
static void *
int_job(void *arg, int *err)
{
    (void)err;
    atomic_fetch_add(&ran, 1);
    return arg;
}

/* Returns a malloc'd copy of "done". */
static void *
str_job(void *arg, int *err)
{
    (void)arg;
    (void)err;
    atomic_fetch_add(&ran, 1);
    return strdup("done");
}

/* Fails with the code in arg. */
static void *
fail_job(void *arg, int *err)
{
    atomic_fetch_add(&ran, 1);
    *err = (int)(intptr_t)arg;
    return strdup("dropped with the error");
}

/* Waits at the gate, then returns a malloc'd string. */
static void *
gated_job(void *arg, int *err)
{
    (void)arg;
    (void)err;
    pthread_mutex_lock(&gate_mu);
    gate_entered++;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    atomic_fetch_add(&ran, 1);
    return strdup("gated");
}

static aw_executor *
new_executor(int workers)
{
    aw_executor_options o;
    aw_executor *ex;

    memset(&o, 0, sizeof(o));
    o.max_workers = workers;
    o.thread_name_prefix = "tpool";
    ck_assert_int_eq(aw_executor_new(&ex, &o), 0);
    return ex;
}

/* Run the loop until f settles. */
static void
settle(aw_loop *l, aw_future *f)
{
    int i;

    for (i = 0; i < 100000 && !aw_future_done(f); i++)
        aw_loop_run_once(l, 0);
    ck_assert(aw_future_done(f));
}

/* ---- results ----------------------------------------------------------------- */

/* asyncio's test_run_in_executor: the result reaches the future on the
 * loop; an error code fails it; AW_ECANCELLED cancels it. */
START_TEST(run_in_executor_result_error_and_int)
{
    aw_executor *ex = new_executor(2);
    aw_future *s, *i, *e, *c;
    void *v;
    intptr_t n;

    gate_reset();
    s = aw_loop_run_in_executor(loop, ex, str_job, NULL, count_arg,
                                free_result);
    i = aw_loop_run_in_executor(loop, ex, int_job, (void *)(intptr_t)42, NULL,
                                NULL);
    e = aw_loop_run_in_executor(loop, ex, fail_job, (void *)(intptr_t)-EIO,
                                NULL, free_result);
    c = aw_loop_run_in_executor(loop, ex, fail_job,
                                (void *)(intptr_t)AW_ECANCELLED, NULL,
                                free_result);
    settle(loop, s);
    settle(loop, i);
    settle(loop, e);
    settle(loop, c);
    ck_assert_int_eq(aw_future_result(s, &v), 0);
    ck_assert_str_eq(v, "done");
    ck_assert_int_eq(aw_future_result_int(i, &n), 0);
    ck_assert_int_eq(n, 42);
    ck_assert_int_eq(aw_future_error(e), -EIO);
    ck_assert(aw_future_cancelled(c));
    /* The results that came with an error are destroyed. */
    ck_assert_int_eq(count(&results_destroyed), 2);
    ck_assert_int_eq(count(&args_destroyed), 1);
    aw_future_unref(s);
    ck_assert_int_eq(count(&results_destroyed), 3);
    aw_future_unref(i);
    aw_future_unref(e);
    aw_future_unref(c);
    ck_assert_uint_eq(aw_loop_executor_jobs(loop), 0);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    aw_executor_free(ex);
}
END_TEST

/* ---- cancellation -------------------------------------------------------------- */

/* A job cancelled before a worker took it never runs; its arg is
 * destroyed at once. */
START_TEST(cancel_before_start)
{
    aw_executor *ex = new_executor(1);
    aw_future *a, *b;

    gate_reset();
    a = aw_loop_run_in_executor(loop, ex, gated_job, NULL, NULL, free_result);
    b = aw_loop_run_in_executor(loop, ex, int_job, NULL, count_arg, NULL);
    gate_wait_entered(1); /* the one worker holds a */
    ck_assert_int_eq(aw_future_cancel(b, NULL), 0);
    ck_assert(aw_future_cancelled(b));
    ck_assert_int_eq(count(&args_destroyed), 1);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_QUEUED), 0);
    gate_release();
    settle(loop, a);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    ck_assert_int_eq(count(&ran), 1); /* a only */
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_COMPLETED), 1);
    aw_future_unref(a);
    aw_future_unref(b);
    aw_executor_free(ex);
}
END_TEST

/* A running job cannot be interrupted: its future ends cancelled at
 * once, the loop no longer counts it, and its result is destroyed when
 * it returns. */
START_TEST(cancel_while_running)
{
    aw_executor *ex = new_executor(1);
    aw_future *a;

    gate_reset();
    a = aw_loop_run_in_executor(loop, ex, gated_job, NULL, count_arg,
                                free_result);
    gate_wait_entered(1);
    ck_assert_uint_eq(aw_loop_executor_jobs(loop), 1);
    ck_assert_int_eq(aw_future_cancel(a, "enough"), 0);
    ck_assert(aw_future_cancelled(a));
    ck_assert_uint_eq(aw_loop_executor_jobs(loop), 0);
    aw_future_unref(a);
    gate_release();
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    ck_assert_int_eq(count(&ran), 1);
    ck_assert_int_eq(count(&results_destroyed), 1);
    ck_assert_int_eq(count(&args_destroyed), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_executor_free(ex);
}
END_TEST

/* Cancelling a job's future after it settled does nothing. */
START_TEST(cancel_after_done)
{
    aw_executor *ex = new_executor(1);
    aw_future *a;
    void *v;

    gate_reset();
    a = aw_loop_run_in_executor(loop, ex, str_job, NULL, NULL, free_result);
    settle(loop, a);
    ck_assert_int_eq(aw_future_cancel(a, NULL), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_result(a, &v), 0);
    ck_assert_str_eq(v, "done");
    aw_future_unref(a);
    ck_assert_int_eq(count(&results_destroyed), 1);
    aw_executor_shutdown(ex, 1, 0);
    aw_executor_free(ex);
}
END_TEST

/* A job that finished while the loop did not run, cancelled before the
 * loop took it back: the future stays cancelled, the result is
 * destroyed on the loop. */
START_TEST(cancel_after_finish_before_handed_back)
{
    aw_executor *ex = new_executor(1);
    aw_future *a;

    gate_reset();
    a = aw_loop_run_in_executor(loop, ex, str_job, NULL, NULL, free_result);
    while (aw_executor_stat(ex, AW_EXECUTOR_COMPLETED) < 1)
        nap();
    ck_assert_int_eq(aw_future_cancel(a, NULL), 0);
    ck_assert_uint_eq(aw_loop_executor_jobs(loop), 1); /* on its way */
    while (aw_loop_executor_jobs(loop) > 0)
        aw_loop_run_once(loop, 0);
    ck_assert(aw_future_cancelled(a));
    ck_assert_int_eq(count(&results_destroyed), 1);
    aw_future_unref(a);
    aw_executor_shutdown(ex, 1, 0);
    aw_executor_free(ex);
}
END_TEST

/* Releasing the only reference to a queued job's future cancels it. */
START_TEST(released_future_cancels_queued_job)
{
    aw_executor *ex = new_executor(1);
    aw_future *a, *b;

    gate_reset();
    a = aw_loop_run_in_executor(loop, ex, gated_job, NULL, NULL, free_result);
    b = aw_loop_run_in_executor(loop, ex, int_job, NULL, count_arg, NULL);
    gate_wait_entered(1);
    aw_future_unref(b);
    ck_assert_int_eq(count(&args_destroyed), 1);
    gate_release();
    settle(loop, a);
    aw_future_unref(a);
    aw_executor_shutdown(ex, 1, 0);
    ck_assert_int_eq(count(&ran), 1);
    aw_executor_free(ex);
}
END_TEST

struct awaiter {
    aw_executor *ex;
    int rc;
};

static AW_TASK(await_job, struct awaiter *w)
{
    AW_BEGIN();
    AW_TRY_AWAIT(w->rc,
                 aw_loop_run_in_executor(aw_task_loop(AW_SELF()), w->ex,
                                         gated_job, NULL, NULL, free_result),
                 NULL);
    AW_END();
}

/* A task awaiting a job is cancelled like at any await: the job's
 * future is cancelled with it and the task goes on at once. */
START_TEST(task_awaiting_job_cancelled)
{
    struct awaiter w = {new_executor(1), 0};
    aw_task *t;

    gate_reset();
    t = aw_task_new(loop, await_job, &w, NULL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* the task submits its job */
    gate_wait_entered(1);
    ck_assert_int_eq(aw_future_cancel(t, NULL), 0);
    settle(loop, t);
    ck_assert_int_eq(w.rc, AW_ECANCELLED);
    ck_assert_uint_eq(aw_loop_executor_jobs(loop), 0);
    aw_future_unref(t);
    gate_release();
    aw_executor_shutdown(w.ex, 1, 0);
    ck_assert_int_eq(count(&results_destroyed), 1);
    aw_executor_free(w.ex);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------------- */

/* shutdown(wait, no cancel): the queued jobs still run; wait returns
 * after all. */
START_TEST(shutdown_wait_runs_queued_jobs)
{
    aw_executor *ex = new_executor(1);
    aw_future *f[3];
    int i;

    gate_reset();
    f[0] = aw_loop_run_in_executor(loop, ex, gated_job, NULL, NULL,
                                   free_result);
    for (i = 1; i < 3; i++)
        f[i] = aw_loop_run_in_executor(loop, ex, str_job, NULL, count_arg,
                                       free_result);
    gate_wait_entered(1);
    gate_release();
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    ck_assert_int_eq(count(&ran), 3);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WORKERS), 0);
    for (i = 0; i < 3; i++) {
        settle(loop, f[i]);
        ck_assert_int_eq(aw_future_state(f[i]), AW_FUTURE_DONE);
        aw_future_unref(f[i]);
    }
    /* Nothing new after a shutdown. */
    f[0] = aw_loop_run_in_executor(loop, ex, int_job, NULL, count_arg, NULL);
    ck_assert_int_eq(aw_future_error(f[0]), AW_ECLOSED);
    ck_assert_int_eq(count(&args_destroyed), 3);
    aw_future_unref(f[0]);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 1), 0); /* again: fine */
    aw_executor_free(ex);
}
END_TEST

/* shutdown(no wait, cancel_futures): the queued jobs end cancelled on
 * their loop and never run; the running one finishes and delivers. */
START_TEST(shutdown_cancel_futures_without_wait)
{
    aw_executor *ex = new_executor(1);
    aw_future *f[3];
    int i;

    gate_reset();
    f[0] = aw_loop_run_in_executor(loop, ex, gated_job, NULL, NULL,
                                   free_result);
    for (i = 1; i < 3; i++)
        f[i] = aw_loop_run_in_executor(loop, ex, int_job, NULL, count_arg,
                                       NULL);
    gate_wait_entered(1);
    ck_assert_int_eq(aw_executor_shutdown(ex, 0, 1), 0);
    settle(loop, f[1]);
    settle(loop, f[2]);
    ck_assert(aw_future_cancelled(f[1]));
    ck_assert(aw_future_cancelled(f[2]));
    ck_assert_int_eq(count(&args_destroyed), 2);
    ck_assert(!aw_future_done(f[0]));
    gate_release();
    settle(loop, f[0]);
    ck_assert_int_eq(aw_future_state(f[0]), AW_FUTURE_DONE);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    ck_assert_int_eq(count(&ran), 1);
    for (i = 0; i < 3; i++)
        aw_future_unref(f[i]);
    aw_executor_free(ex);
}
END_TEST

/* Opens the gate once the executor's queue is empty: with every worker
 * held at the gate, that is once the shutdown cancelled the queue. */
static void *
open_when_queue_empty(void *arg)
{
    aw_executor *ex = arg;

    while (aw_executor_stat(ex, AW_EXECUTOR_QUEUED) > 0)
        nap();
    gate_release();
    return NULL;
}

/* shutdown(wait, cancel_futures) in one call: the queued job ends
 * cancelled, the running ones are waited for. */
START_TEST(shutdown_wait_and_cancel_futures)
{
    aw_executor *ex = new_executor(2);
    aw_future *f[3];
    pthread_t opener;
    int i;

    gate_reset();
    for (i = 0; i < 2; i++)
        f[i] = aw_loop_run_in_executor(loop, ex, gated_job, NULL, NULL,
                                       free_result);
    f[2] = aw_loop_run_in_executor(loop, ex, int_job, NULL, count_arg, NULL);
    gate_wait_entered(2);
    ck_assert_int_eq(pthread_create(&opener, NULL, open_when_queue_empty, ex),
                     0);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 1), 0);
    pthread_join(opener, NULL);
    ck_assert_int_eq(count(&ran), 2);
    for (i = 0; i < 3; i++)
        settle(loop, f[i]);
    ck_assert_int_eq(aw_future_state(f[0]), AW_FUTURE_DONE);
    ck_assert_int_eq(aw_future_state(f[1]), AW_FUTURE_DONE);
    ck_assert(aw_future_cancelled(f[2]));
    ck_assert_int_eq(count(&args_destroyed), 1);
    for (i = 0; i < 3; i++)
        aw_future_unref(f[i]);
    aw_executor_free(ex);
}
END_TEST

/* Executor calls refuse bad input. */
START_TEST(executor_bad_arguments)
{
    aw_executor_options o;
    aw_executor *ex;
    aw_future *f;

    gate_reset();
    memset(&o, 0, sizeof(o));
    o.max_workers = -1;
    ck_assert_int_eq(aw_executor_new(NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_executor_new(&ex, &o), -EINVAL);
    ck_assert_ptr_null(ex);
    ck_assert_int_eq(aw_executor_shutdown(NULL, 1, 1), -EINVAL);
    aw_executor_free(NULL);
    ck_assert_uint_eq(aw_executor_stat(NULL, AW_EXECUTOR_WORKERS), 0);
    ck_assert_ptr_null(aw_to_thread(NULL, int_job, NULL, count_arg, NULL));
    ck_assert_int_eq(count(&args_destroyed), 1);
    f = aw_to_thread(loop, NULL, NULL, count_arg, NULL);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    ck_assert_int_eq(count(&args_destroyed), 2);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_shutdown_default_executor(NULL, 0), -EINVAL);
    ck_assert_int_eq(aw_loop_shutdown_default_executor(loop, 0), 0);
    ck_assert_int_eq(aw_loop_cancel_executor_jobs(NULL), -EINVAL);
    ck_assert_uint_eq(aw_loop_executor_jobs(NULL), 0);
}
END_TEST

/* Workers start as jobs arrive, up to max_workers, named PREFIX_N. */
static void *
name_job(void *arg, int *err)
{
    char *name = malloc(16);

    (void)arg;
    (void)err;
    pthread_getname_np(pthread_self(), name, 16);
    return name;
}

START_TEST(workers_lazy_bounded_and_named)
{
    aw_executor *ex = new_executor(3);
    aw_future *f[6], *n;
    void *v;
    int i;

    gate_reset();
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WORKERS), 0);
    n = aw_loop_run_in_executor(loop, ex, name_job, NULL, NULL, free);
    settle(loop, n);
    ck_assert_int_eq(aw_future_result(n, &v), 0);
    ck_assert_str_eq(v, "tpool_0");
    aw_future_unref(n);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WORKERS), 1);
    for (i = 0; i < 6; i++)
        f[i] = aw_loop_run_in_executor(loop, ex, gated_job, NULL, NULL,
                                       free_result);
    gate_wait_entered(3);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WORKERS), 3);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_QUEUED), 3);
    gate_release();
    for (i = 0; i < 6; i++) {
        settle(loop, f[i]);
        aw_future_unref(f[i]);
    }
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WORKERS), 3);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_SUBMITTED), 7);
    aw_executor_shutdown(ex, 1, 0);
    aw_executor_free(ex);
}
END_TEST

/* The default executor: made on first use; a loop that used it closes
 * (aw_loop_close() == 0) once its jobs are back, without
 * aw_loop_shutdown_default_executor(): the close shuts it down, without
 * waiting, and its idle workers end by themselves. */
START_TEST(loop_with_default_executor_closes_once_jobs_done)
{
    long before = aw_test_live_allocations();
    aw_loop *l2;
    aw_future *f;
    void *v;

    gate_reset();
    ck_assert_int_eq(aw_loop_new(&l2), 0);
    f = aw_to_thread(l2, str_job, NULL, NULL, free_result);
    settle(l2, f);
    ck_assert_int_eq(aw_future_result(f, &v), 0);
    ck_assert_str_eq(v, "done");
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_close(l2), 0);
    ck_assert_int_eq(aw_loop_free(l2), 0);
    wait_allocations(before); /* the workers ended, the pool is gone */
}
END_TEST

/* aw_loop_shutdown_default_executor still shuts it down on demand (here
 * waiting for its workers); to_thread then makes a new one. */
START_TEST(to_thread_default_executor)
{
    aw_future *f;
    void *v;

    gate_reset();
    f = aw_to_thread(loop, str_job, NULL, NULL, free_result);
    settle(loop, f);
    ck_assert_int_eq(aw_future_result(f, &v), 0);
    ck_assert_str_eq(v, "done");
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_shutdown_default_executor(loop, 1), 0);
    f = aw_to_thread(loop, int_job, (void *)(intptr_t)5, NULL, NULL);
    settle(loop, f);
    ck_assert_int_eq(aw_future_error(f), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_shutdown_default_executor(loop, 1), 0);
    ck_assert_int_eq(count(&ran), 2);
}
END_TEST

/* ---- a bounded queue: backpressure ------------------------------------------- */

static pthread_mutex_t runs_mu = PTHREAD_MUTEX_INITIALIZER;
static int runs[16], nruns; /* the args of the jobs, in the order run */

/* Waits at the gate, records its arg, returns it as an integer. */
static void *
ordered_job(void *arg, int *err)
{
    (void)err;
    pthread_mutex_lock(&gate_mu);
    gate_entered++;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    pthread_mutex_lock(&runs_mu);
    if (nruns < 16)
        runs[nruns++] = (int)(intptr_t)arg;
    pthread_mutex_unlock(&runs_mu);
    atomic_fetch_add(&ran, 1);
    return arg;
}

static aw_executor *
new_bounded_executor(int workers, size_t maxsize)
{
    aw_executor_options o;
    aw_executor *ex;

    memset(&o, 0, sizeof(o));
    o.max_workers = workers;
    o.maxsize = maxsize;
    ck_assert_int_eq(aw_executor_new(&ex, &o), 0);
    pthread_mutex_lock(&runs_mu);
    nruns = 0;
    pthread_mutex_unlock(&runs_mu);
    return ex;
}

/* Submit job i (arg i) from the test loop. */
static aw_future *
submit_ordered(aw_executor *ex, int i)
{
    return aw_loop_run_in_executor(loop, ex, ordered_job,
                                   (void *)(intptr_t)i, count_arg, NULL);
}

static void
assert_runs(const int *want, int n)
{
    int i;

    pthread_mutex_lock(&runs_mu);
    ck_assert_int_eq(nruns, n);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(runs[i], want[i]);
    pthread_mutex_unlock(&runs_mu);
}

/* maxsize 2, one worker held at the gate: two jobs fill the queue, the
 * next ones wait for room with their futures pending; once the gate
 * opens they all get in, first come first served, and each delivers
 * its result once. */
START_TEST(bounded_queue_backpressure)
{
    aw_executor *ex = new_bounded_executor(1, 2);
    static const int want[] = {0, 1, 2, 3, 4, 5};
    aw_future *f[6];
    intptr_t v;
    int i;

    gate_reset();
    f[0] = submit_ordered(ex, 0);
    gate_wait_entered(1);
    for (i = 1; i < 6; i++)
        f[i] = submit_ordered(ex, i);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_QUEUED), 2);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAITING), 3);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_SUBMITTED), 3);
    ck_assert_uint_eq(aw_loop_executor_jobs(loop), 6);
    for (i = 0; i < 6; i++)
        ck_assert(!aw_future_done(f[i]));
    gate_release();
    for (i = 0; i < 6; i++) {
        settle(loop, f[i]);
        ck_assert_int_eq(aw_future_result_int(f[i], &v), 0);
        ck_assert_int_eq(v, i);
        aw_future_unref(f[i]);
    }
    assert_runs(want, 6);
    ck_assert_int_eq(count(&args_destroyed), 6);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_SUBMITTED), 6);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAITING), 0);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    aw_executor_free(ex);
}
END_TEST

/* Cancelling a job waiting for room removes it (it never runs, its arg
 * is destroyed at once); cancelling a queued job makes room for the
 * next one waiting. */
START_TEST(bounded_queue_cancel_while_waiting_for_room)
{
    aw_executor *ex = new_bounded_executor(1, 1);
    static const int want[] = {0, 3};
    aw_future *f[4];
    int i;

    gate_reset();
    f[0] = submit_ordered(ex, 0);
    gate_wait_entered(1);
    for (i = 1; i < 4; i++)
        f[i] = submit_ordered(ex, i); /* 1 queued; 2, 3 wait */
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAITING), 2);
    ck_assert_int_eq(aw_future_cancel(f[2], NULL), 0);
    ck_assert(aw_future_cancelled(f[2]));
    ck_assert_int_eq(count(&args_destroyed), 1);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAITING), 1);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_QUEUED), 1);
    aw_future_unref(f[1]); /* releasing a queued job cancels it: room */
    ck_assert_int_eq(count(&args_destroyed), 2);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAITING), 0);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_QUEUED), 1);
    gate_release();
    settle(loop, f[0]);
    settle(loop, f[3]);
    ck_assert_int_eq(aw_future_error(f[3]), 0);
    assert_runs(want, 2);
    aw_future_unref(f[0]);
    aw_future_unref(f[2]);
    aw_future_unref(f[3]);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    ck_assert_int_eq(count(&args_destroyed), 4);
    aw_executor_free(ex);
}
END_TEST

/* A shutdown fails the jobs waiting for room with AW_ECLOSED (never
 * accepted: they never run, their args are destroyed on the loop); the
 * queued and the running ones still run. */
START_TEST(bounded_queue_shutdown_with_jobs_waiting_for_room)
{
    aw_executor *ex = new_bounded_executor(1, 1);
    static const int want[] = {0, 1};
    aw_future *f[4];
    int i;

    gate_reset();
    f[0] = submit_ordered(ex, 0);
    gate_wait_entered(1);
    for (i = 1; i < 4; i++)
        f[i] = submit_ordered(ex, i);
    ck_assert_int_eq(aw_executor_shutdown(ex, 0, 0), 0);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAITING), 0);
    settle(loop, f[2]);
    settle(loop, f[3]);
    ck_assert_int_eq(aw_future_error(f[2]), AW_ECLOSED);
    ck_assert_int_eq(aw_future_error(f[3]), AW_ECLOSED);
    ck_assert_ptr_nonnull(aw_future_message(f[3]));
    ck_assert_int_eq(count(&args_destroyed), 2);
    gate_release();
    settle(loop, f[0]);
    settle(loop, f[1]);
    ck_assert_int_eq(aw_future_error(f[0]), 0);
    ck_assert_int_eq(aw_future_error(f[1]), 0);
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    assert_runs(want, 2);
    ck_assert_int_eq(count(&args_destroyed), 4);
    for (i = 0; i < 4; i++)
        aw_future_unref(f[i]);
    aw_executor_free(ex);
}
END_TEST

/* ---- a loop closed while a job runs ---------------------------------------- */

/* An exception handler that counts the reports naming executor jobs. */
static void
count_job_reports(aw_loop *l, const aw_exception_context *ctx, void *arg)
{
    (void)l;
    if (ctx->message != NULL &&
        strstr(ctx->message, "1 executor jobs still running") != NULL)
        (*(int *)arg)++;
}

START_TEST(loop_closed_while_job_runs)
{
    aw_executor *ex = new_executor(1);
    aw_loop *l2;
    aw_future *f;
    int named = 0;

    gate_reset();
    ck_assert_int_eq(aw_loop_new(&l2), 0);
    aw_loop_set_exception_handler(l2, count_job_reports, &named);
    f = aw_loop_run_in_executor(l2, ex, gated_job, NULL, count_arg,
                                free_result);
    gate_wait_entered(1);
    /* Wanted and running: the loop reports it busy, names the job, never
     * waits. */
    ck_assert_int_eq(aw_loop_close(l2), AW_EBUSY);
    ck_assert_int_eq(named, 1);
    /* Given up: the loop closes while the worker still runs it. */
    aw_future_cancel(f, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_free(l2), 0);
    gate_release();
    ck_assert_int_eq(aw_executor_shutdown(ex, 1, 0), 0);
    ck_assert_int_eq(count(&results_destroyed), 1);
    ck_assert_int_eq(count(&args_destroyed), 1);
    aw_executor_free(ex);
}
END_TEST

/* ---- many loops, one pool ------------------------------------------------------ */

#define NLOOPS 4

struct loop_thread {
    aw_executor *ex;
    int n;
    int base;
    unsigned char *seen; /* results seen, by job */
    int done, dupes, wrong;
};

static int
job_done(aw_future *f, void *arg)
{
    struct loop_thread *lt = arg;
    intptr_t v;

    if (aw_future_result_int(f, &v) != 0 || v < lt->base ||
        v >= lt->base + lt->n) {
        lt->wrong++;
    } else if (lt->seen[v - lt->base]++) {
        lt->dupes++;
    }
    lt->done++;
    return 0;
}

static int
loop_thread_run(aw_loop *l, struct loop_thread *lt, aw_future **fs)
{
    int i;

    for (i = 0; i < lt->n; i++) {
        fs[i] = aw_loop_run_in_executor(l, lt->ex, int_job,
                                        (void *)(intptr_t)(lt->base + i),
                                        NULL, NULL);
        if (aw_future_add_done_callback(fs[i], job_done, lt) != 0)
            return -1;
        if (i % 1024 == 1023)
            aw_loop_run_once(l, AW_RUN_NOWAIT);
    }
    while (lt->done < lt->n)
        aw_loop_run_once(l, 0);
    for (i = 0; i < lt->n; i++)
        aw_future_unref(fs[i]);
    return 0;
}

static void *
loop_thread_keep(void *arg)
{
    struct loop_thread *lt = arg;
    aw_future **fs = malloc((size_t)lt->n * sizeof(*fs));
    aw_loop *l;

    if (fs == NULL || aw_loop_new(&l) != 0) {
        free(fs);
        return NULL;
    }
    if (loop_thread_run(l, lt, fs) != 0)
        lt->wrong++;
    if (aw_loop_free(l) != 0)
        lt->wrong++;
    free(fs);
    return NULL;
}

START_TEST(many_loops_share_one_pool_each_result_once)
{
    int total = aw_test_slow() ? 4000 : 100000, i, k;
    aw_executor *ex = new_executor(4);
    struct loop_thread lt[NLOOPS];
    pthread_t th[NLOOPS];

    gate_reset();
    for (i = 0; i < NLOOPS; i++) {
        memset(&lt[i], 0, sizeof(lt[i]));
        lt[i].ex = ex;
        lt[i].n = total / NLOOPS;
        lt[i].base = i * lt[i].n;
        lt[i].seen = calloc((size_t)lt[i].n, 1);
        ck_assert_int_eq(pthread_create(&th[i], NULL, loop_thread_keep,
                                        &lt[i]),
                         0);
    }
    for (i = 0; i < NLOOPS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(lt[i].done, lt[i].n);
        ck_assert_int_eq(lt[i].dupes, 0);
        ck_assert_int_eq(lt[i].wrong, 0);
        for (k = 0; k < lt[i].n; k++)
            ck_assert_int_eq(lt[i].seen[k], 1);
        free(lt[i].seen);
    }
    ck_assert_int_eq(count(&ran), total);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_COMPLETED),
                      (size_t)total);
    aw_executor_shutdown(ex, 1, 0);
    aw_executor_free(ex);
}
END_TEST

/* ---- one wake-up per batch -------------------------------------------------- */

static int
count_settled(aw_future *f, void *arg)
{
    (void)f;
    (*(int *)arg)++;
    return 0;
}

/* Many jobs finishing while the loop does not run come back with one
 * wake-up, handed back in one pass. */
START_TEST(one_wakeup_per_batch)
{
    int n = 64, i, settled = 0;
    aw_executor *ex = new_executor(1);
    aw_future *f[64];

    gate_reset();
    for (i = 0; i < n; i++) {
        f[i] = aw_loop_run_in_executor(loop, ex, int_job,
                                       (void *)(intptr_t)i, NULL, NULL);
        aw_future_add_done_callback(f[i], count_settled, &settled);
    }
    while (aw_executor_stat(ex, AW_EXECUTOR_COMPLETED) < (size_t)n)
        nap();
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAKEUPS), 1);
    while (settled < n)
        aw_loop_run_once(loop, 0);
    ck_assert_uint_eq(aw_executor_stat(ex, AW_EXECUTOR_WAKEUPS), 1);
    for (i = 0; i < n; i++) {
        intptr_t v;

        ck_assert_int_eq(aw_future_result_int(f[i], &v), 0);
        ck_assert_int_eq(v, i);
        aw_future_unref(f[i]);
    }
    aw_executor_shutdown(ex, 1, 0);
    aw_executor_free(ex);
}
END_TEST

/* ---- cross-loop calls ------------------------------------------------------- */

/* A loop running in a thread of its own until stopped. */
struct peer {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    aw_loop *loop; /* published once made */
    int ready;
    int no_free;   /* close only: the test frees it */
    int close_rc;
};

static int
peer_stop_cb(aw_loop *l, void *arg)
{
    (void)arg;
    return aw_loop_stop(l);
}

static void *
peer_main(void *arg)
{
    struct peer *p = arg;
    aw_loop *l;

    if (aw_loop_new(&l) != 0)
        l = NULL;
    pthread_mutex_lock(&p->mu);
    p->loop = l;
    p->ready = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (l == NULL)
        return NULL;
    aw_loop_run_forever(l);
    p->close_rc = p->no_free ? aw_loop_close(l) : aw_loop_free(l);
    return NULL;
}

static aw_loop *
peer_start(struct peer *p, int no_free)
{
    memset(p, 0, sizeof(*p));
    p->no_free = no_free;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    ck_assert_int_eq(pthread_create(&p->th, NULL, peer_main, p), 0);
    pthread_mutex_lock(&p->mu);
    while (!p->ready)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    ck_assert_ptr_nonnull(p->loop);
    return p->loop;
}

static void
peer_stop(struct peer *p)
{
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(p->loop, peer_stop_cb, NULL),
                     0);
    pthread_join(p->th, NULL);
    ck_assert_int_eq(p->close_rc, 0);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

static aw_future *
remote_str(aw_loop *target, void *arg)
{
    (void)arg;
    return aw_future_resolved(target, strdup("from the peer"), free_result);
}

static aw_future *
remote_fail(aw_loop *target, void *arg)
{
    (void)arg;
    return aw_future_failed(target, -EIO, "disk on fire");
}

static aw_future *
remote_echo(aw_loop *target, void *arg)
{
    return aw_future_resolved_int(target, (intptr_t)arg);
}

static AW_TASK(remote_int_task, void *unused)
{
    AW_BEGIN();
    AW_RETURN_INT(42);
    AW_END();
}

static atomic_int remote_started, remote_finally;
static aw_task *sleeper_self; /* the target's thread only */

/* Sleeps until cancelled. */
static AW_TASK(remote_sleeper, void *unused)
{
    AW_BEGIN();
    sleeper_self = AW_SELF();
    atomic_fetch_add(&remote_started, 1);
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 3600), NULL);
    AW_FINALLY();
    atomic_fetch_add(&remote_finally, 1);
    AW_END();
}

struct bounce {
    aw_loop *back;
    intptr_t v;
};

/* Runs on the peer and calls the calling loop back. */
static AW_TASK(bounce_task, struct bounce *b)
{
    AW_BEGIN();
    AW_AWAIT_INT(aw_loop_run_threadsafe(aw_task_loop(AW_SELF()), b->back,
                                        remote_echo, (void *)(intptr_t)7,
                                        NULL),
                 &b->v);
    AW_RETURN_INT(b->v + 1);
    AW_END();
}

/* asyncio's run_coroutine_threadsafe tests (test_run_coroutine_threadsafe,
 * _with_exception): a result with its destructor, an integer, an error
 * with its message come back from a loop in another thread; and a task
 * there that calls the first loop back. */
START_TEST(run_threadsafe_result_crosses_both_ways)
{
    struct peer p;
    aw_loop *b = peer_start(&p, 0);
    struct bounce bo = {loop, 0};
    aw_future *s, *e, *i, *r;
    intptr_t v;
    void *str;

    gate_reset();
    s = aw_loop_run_threadsafe(loop, b, remote_str, NULL, count_arg);
    e = aw_loop_run_threadsafe(loop, b, remote_fail, NULL, NULL);
    i = aw_loop_run_task_threadsafe(loop, b, remote_int_task, NULL, NULL);
    r = aw_loop_run_task_threadsafe(loop, b, bounce_task, &bo, NULL);
    settle(loop, s);
    settle(loop, e);
    settle(loop, i);
    settle(loop, r);
    ck_assert_int_eq(aw_future_result(s, &str), 0);
    ck_assert_str_eq(str, "from the peer");
    ck_assert_int_eq(count(&args_destroyed), 0); /* fn took it */
    ck_assert_int_eq(aw_future_error(e), -EIO);
    ck_assert_str_eq(aw_future_message(e), "disk on fire");
    ck_assert_int_eq(aw_future_result_int(i, &v), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(aw_future_result_int(r, &v), 0);
    ck_assert_int_eq(v, 8);
    ck_assert_int_eq(count(&results_destroyed), 0);
    aw_future_unref(s); /* the result crossed with its destructor */
    ck_assert_int_eq(count(&results_destroyed), 1);
    aw_future_unref(e);
    aw_future_unref(i);
    aw_future_unref(r);
    peer_stop(&p);
}
END_TEST

/* Cancelling the caller's future cancels the task on the other loop
 * (its cleanup runs); a call cancelled before it started never runs
 * (its arg is destroyed). */
START_TEST(run_threadsafe_cancel_from_calling_loop)
{
    struct peer p;
    aw_loop *b = peer_start(&p, 0), *c;
    aw_future *f;

    gate_reset();
    atomic_store(&remote_started, 0);
    atomic_store(&remote_finally, 0);
    f = aw_loop_run_task_threadsafe(loop, b, remote_sleeper, NULL, NULL);
    wait_count(&remote_started, 1);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    ck_assert(aw_future_cancelled(f));
    wait_count(&remote_finally, 1);
    aw_future_unref(f);
    peer_stop(&p);
    /* Before it started: c does not run until after the cancel. */
    ck_assert_int_eq(aw_loop_new(&c), 0);
    f = aw_loop_run_threadsafe(loop, c, remote_str, NULL, count_arg);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    aw_future_unref(f);
    aw_loop_run_once(c, AW_RUN_NOWAIT);
    ck_assert_int_eq(count(&args_destroyed), 1);
    ck_assert_int_eq(aw_loop_free(c), 0);
    aw_loop_run_once(loop, 0); /* the outcome, dropped */
    ck_assert_int_eq(count(&results_destroyed), 0);
}
END_TEST

static int
cancel_sleeper(aw_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    return aw_future_cancel(sleeper_self, "from the target");
}

/* Cancelling the task on the target's side ends the caller's future
 * cancelled. */
START_TEST(run_threadsafe_cancel_from_target_loop)
{
    struct peer p;
    aw_loop *b = peer_start(&p, 0);
    aw_future *f;

    gate_reset();
    atomic_store(&remote_started, 0);
    atomic_store(&remote_finally, 0);
    f = aw_loop_run_task_threadsafe(loop, b, remote_sleeper, NULL, NULL);
    wait_count(&remote_started, 1);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(b, cancel_sleeper, NULL), 0);
    settle(loop, f);
    ck_assert(aw_future_cancelled(f));
    ck_assert_int_eq(count(&remote_finally), 1);
    aw_future_unref(f);
    peer_stop(&p);
}
END_TEST

/* A loop run by aw_run() in a thread: its main task waits for a promise
 * that the test settles (from its own thread), publishing its loop and
 * the promise first.  With `call`, it calls a sleeper on call_target
 * from a child task and leaves it running when it ends. */
struct runner {
    pthread_t th;
    int rc;
    aw_loop *call_target;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    aw_loop *loop;
    aw_promise *promise;
    aw_future *fut;
};

static AW_TASK(runner_child, struct runner *rn)
{
    AW_BEGIN();
    AW_AWAIT(aw_loop_run_task_threadsafe(aw_task_loop(AW_SELF()),
                                         rn->call_target, remote_sleeper,
                                         NULL, NULL),
             NULL);
    AW_END();
}

static AW_TASK(runner_main, struct runner *rn)
{
    AW_BEGIN();
    {
        aw_loop *l = aw_task_loop(AW_SELF());
        aw_promise *pr;

        if (rn->call_target != NULL)
            aw_future_unref(aw_task_new(l, runner_child, rn, NULL));
        rn->fut = aw_loop_create_promise(l, &pr);
        pthread_mutex_lock(&rn->mu);
        rn->loop = l;
        rn->promise = pr;
        pthread_cond_broadcast(&rn->cv);
        pthread_mutex_unlock(&rn->mu);
    }
    AW_AWAIT(rn->fut, NULL);
    AW_END();
}

static void *
runner_thread(void *arg)
{
    struct runner *rn = arg;

    rn->rc = aw_run(runner_main, rn, NULL, 0, NULL);
    return NULL;
}

static void
runner_start(struct runner *rn, aw_loop *call_target)
{
    memset(rn, 0, sizeof(*rn));
    rn->call_target = call_target;
    pthread_mutex_init(&rn->mu, NULL);
    pthread_cond_init(&rn->cv, NULL);
    ck_assert_int_eq(pthread_create(&rn->th, NULL, runner_thread, rn), 0);
    pthread_mutex_lock(&rn->mu);
    while (rn->promise == NULL)
        pthread_cond_wait(&rn->cv, &rn->mu);
    pthread_mutex_unlock(&rn->mu);
}

/* End the runner's main task and its aw_run. */
static void
runner_end(struct runner *rn)
{
    ck_assert_int_eq(aw_promise_set_result_int_threadsafe(rn->promise, 0), 0);
    pthread_join(rn->th, NULL);
    ck_assert_int_eq(rn->rc, 0);
    pthread_mutex_destroy(&rn->mu);
    pthread_cond_destroy(&rn->cv);
}

/* The target loop closes first: a call to a closed loop fails with
 * AW_ECLOSED at once (fn never runs, arg destroyed); a call running on a
 * loop that aw_run() tears down fails with AW_ECLOSED and says so. */
START_TEST(run_threadsafe_target_loop_closed_first)
{
    struct peer p;
    struct runner rn;
    aw_loop *b = peer_start(&p, 1);
    aw_future *f;

    gate_reset();
    atomic_store(&remote_started, 0);
    atomic_store(&remote_finally, 0);
    peer_stop(&p); /* closed, not freed */
    f = aw_loop_run_threadsafe(loop, b, remote_str, NULL, count_arg);
    ck_assert_int_eq(aw_future_error(f), AW_ECLOSED);
    ck_assert_ptr_nonnull(strstr(aw_future_message(f), "closed"));
    ck_assert_int_eq(count(&args_destroyed), 1);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_free(b), 0);

    runner_start(&rn, NULL);
    f = aw_loop_run_task_threadsafe(loop, rn.loop, remote_sleeper, NULL,
                                    NULL);
    wait_count(&remote_started, 1);
    runner_end(&rn); /* aw_run cancels the sleeper and closes the loop */
    ck_assert_int_eq(count(&remote_finally), 1);
    settle(loop, f);
    ck_assert_int_eq(aw_future_error(f), AW_ECLOSED);
    ck_assert_ptr_nonnull(strstr(aw_future_message(f), "closed"));
    aw_future_unref(f);
}
END_TEST

/* The calling loop closes first: aw_run() on it cancels the task that
 * awaits the call, which cancels the call's task on the target (this
 * test's loop); that task's outcome then finds the caller gone and is
 * dropped.  Both loops close cleanly. */
START_TEST(run_threadsafe_calling_loop_closed_first)
{
    struct runner rn;
    int i;

    gate_reset();
    atomic_store(&remote_started, 0);
    atomic_store(&remote_finally, 0);
    runner_start(&rn, loop);
    for (i = 0; i < 100000 && count(&remote_started) < 1; i++)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(count(&remote_started), 1);
    runner_end(&rn); /* its loop is closed and freed */
    for (i = 0; i < 100000 && count(&remote_finally) < 1; i++)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(count(&remote_finally), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}
END_TEST

struct trips {
    int n, done, dupes, wrong;
    unsigned char *seen;
};

static int
trip_done(aw_future *f, void *arg)
{
    struct trips *t = arg;
    intptr_t v;

    if (aw_future_result_int(f, &v) != 0 || v < 0 || v >= t->n)
        t->wrong++;
    else if (t->seen[v]++)
        t->dupes++;
    t->done++;
    return 0;
}

/* 10,000 calls to a loop in another thread and back: each result comes
 * back once, to its own future. */
START_TEST(run_threadsafe_round_trips_each_delivered_once)
{
    struct peer p;
    aw_loop *b = peer_start(&p, 0);
    struct trips t = {aw_test_slow() ? 1000 : 10000, 0, 0, 0, NULL};
    aw_future **f = calloc((size_t)t.n, sizeof(*f));
    int i;

    t.seen = calloc((size_t)t.n, 1);
    for (i = 0; i < t.n; i++) {
        f[i] = aw_loop_run_threadsafe(loop, b, remote_echo,
                                      (void *)(intptr_t)i, NULL);
        ck_assert_int_eq(aw_future_add_done_callback(f[i], trip_done, &t), 0);
        if (i % 512 == 511)
            aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    while (t.done < t.n)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(t.dupes, 0);
    ck_assert_int_eq(t.wrong, 0);
    for (i = 0; i < t.n; i++) {
        ck_assert_int_eq(t.seen[i], 1);
        aw_future_unref(f[i]);
    }
    free(t.seen);
    free(f);
    peer_stop(&p);
}
END_TEST

/* ---- promises: settled from another thread ----------------------------------- */

struct settler {
    aw_promise *p[6];
    aw_promise *closed; /* its loop is closed before the settle */
    int rc[7];
    int einval;
};

static void *
settle_from_thread(void *arg)
{
    struct settler *st = arg;

    st->einval = aw_promise_set_error_threadsafe(st->p[2], 0, "no");
    st->rc[0] = aw_promise_set_result_threadsafe(st->p[0],
                                                 strdup("from a thread"),
                                                 free_result);
    st->rc[1] = aw_promise_set_result_int_threadsafe(st->p[1], 42);
    st->rc[2] = aw_promise_set_error_threadsafe(st->p[2], -EIO, "broken");
    st->rc[3] = aw_promise_cancel_threadsafe(st->p[3], "stop");
    st->rc[4] = aw_promise_set_result_threadsafe(st->p[4], strdup("unread"),
                                                 free_result);
    aw_promise_free_threadsafe(st->p[5]);
    st->rc[6] = aw_promise_set_result_threadsafe(st->closed, strdup("late"),
                                                 free_result);
    return NULL;
}

/* A future settled from a plain pthread through its promise: a result
 * with its destructor, an integer, an error, a cancellation; a promise
 * whose future was released (the result is destroyed); a promise freed
 * unsettled (AW_ECLOSED); a promise whose loop closed meanwhile (the
 * loop closed, the settle returns AW_ECLOSED and destroys the result). */
START_TEST(promise_settled_from_plain_pthread)
{
    struct settler st;
    aw_future *f[6], *fc;
    aw_loop *l2;
    pthread_t th;
    intptr_t v;
    void *str;
    int i;

    gate_reset();
    memset(&st, 0, sizeof(st));
    for (i = 0; i < 6; i++)
        ck_assert_ptr_nonnull(f[i] = aw_loop_create_promise(loop, &st.p[i]));
    ck_assert_int_eq(aw_promise_cancelled_threadsafe(st.p[4]), 0);
    aw_future_unref(f[4]);
    ck_assert_int_eq(aw_promise_cancelled_threadsafe(st.p[4]), 1);
    ck_assert_int_eq(aw_loop_new(&l2), 0);
    fc = aw_loop_create_promise(l2, &st.closed);
    aw_future_unref(fc);
    ck_assert_int_eq(aw_loop_free(l2), 0); /* the promise does not hold it */
    ck_assert_int_eq(pthread_create(&th, NULL, settle_from_thread, &st), 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(st.einval, -EINVAL);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(st.rc[i], 0);
    ck_assert_int_eq(st.rc[6], AW_ECLOSED);
    ck_assert_int_eq(count(&results_destroyed), 1); /* "late" */
    ck_assert(!aw_future_done(f[0])); /* settled on the loop, later */
    for (i = 0; i < 6; i++)
        if (i != 4)
            settle(loop, f[i]);
    ck_assert_int_eq(count(&results_destroyed), 2); /* "unread" */
    ck_assert_int_eq(aw_future_result(f[0], &str), 0);
    ck_assert_str_eq(str, "from a thread");
    ck_assert_int_eq(aw_future_result_int(f[1], &v), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(aw_future_error(f[2]), -EIO);
    ck_assert_str_eq(aw_future_message(f[2]), "broken");
    ck_assert(aw_future_cancelled(f[3]));
    ck_assert_int_eq(aw_future_error(f[5]), AW_ECLOSED);
    for (i = 0; i < 6; i++)
        if (i != 4)
            aw_future_unref(f[i]);
    ck_assert_int_eq(count(&results_destroyed), 3);
    ck_assert_ptr_null(aw_loop_create_promise(loop, NULL));
    ck_assert_int_eq(aw_promise_set_result_threadsafe(NULL, NULL, NULL),
                     -EINVAL);
    aw_promise_free_threadsafe(NULL);
}
END_TEST

/* ---- aw_run -------------------------------------------------------------------- */

static int child_finally_ran;

static AW_TASK(sleeper, void *unused)
{
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 3600), NULL);
    AW_FINALLY();
    child_finally_ran++;
    AW_END();
}

struct main_frame {
    int outcome; /* 0: return 42; else raise it */
    int spawn;
    int signal;
};

static AW_TASK(main_task, struct main_frame *m)
{
    AW_BEGIN();
    if (m->spawn) {
        aw_task *c = aw_task_new(aw_task_loop(AW_SELF()), sleeper, NULL,
                                 NULL);
        aw_future_unref(c); /* the loop keeps it */
    }
    if (m->signal) {
        kill(getpid(), m->signal);
        AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 3600), NULL);
    }
    AW_YIELD();
    if (m->outcome != 0)
        AW_RAISE(m->outcome, "failed on purpose");
    AW_RETURN_INT(42);
    AW_END();
}

/* asyncio's test_asyncio_run_return and test_asyncio_run_only_coro:
 * the main task's result comes back; leftover tasks are cancelled and
 * awaited (their cleanup runs). */
START_TEST(run_returns_main_outcome_and_cancels_leftovers)
{
    struct main_frame m = {0, 1, 0};
    intptr_t r = 0;

    child_finally_ran = 0;
    ck_assert_int_eq(aw_run(main_task, &m, NULL, 0, &r), 0);
    ck_assert_int_eq(r, 42);
    ck_assert_int_eq(child_finally_ran, 1);
    m.outcome = -EIO;
    ck_assert_int_eq(aw_run(main_task, &m, NULL, 0, &r), -EIO);
    ck_assert_int_eq(child_finally_ran, 2);
    ck_assert_int_eq(aw_run(NULL, NULL, NULL, 0, NULL), -EINVAL);
}
END_TEST

/* AW_RUN_HANDLE_SIGNALS: SIGTERM cancels the main task. */
START_TEST(run_signal_cancels_main)
{
    struct main_frame m = {0, 0, SIGTERM};

    ck_assert_int_eq(aw_run(main_task, &m, NULL, AW_RUN_HANDLE_SIGNALS,
                            NULL),
                     AW_ECANCELLED);
}
END_TEST

static int nested_rc;
static int frames_freed;

static void
free_frame(void *p)
{
    (void)p;
    frames_freed++;
}

static int
nested_run(aw_loop *l, void *arg)
{
    (void)arg;
    nested_rc = aw_run(main_task, NULL, free_frame, 0, NULL);
    return aw_loop_stop(l);
}

/* asyncio's test_asyncio_run_from_running_loop: refused, frame
 * released. */
START_TEST(run_inside_running_loop_refused)
{
    frames_freed = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, nested_run, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(nested_rc, AW_ERUNNING);
    ck_assert_int_eq(frames_freed, 1);
}
END_TEST

struct jobs_frame {
    aw_future *held; /* a job future the main task leaves behind */
    int rc;
};

static AW_TASK(main_with_jobs, struct jobs_frame *j)
{
    AW_BEGIN();
    j->held = aw_to_thread(aw_task_loop(AW_SELF()), gated_job, NULL, NULL,
                           free_result);
    AW_AWAIT(aw_to_thread(aw_task_loop(AW_SELF()), str_job, NULL, NULL,
                          free_result),
             NULL);
    AW_RETURN_INT(7);
    AW_FINALLY();
    AW_END();
}

static void
free_jobs_frame(void *p)
{
    struct jobs_frame *j = p;

    aw_future_unref(j->held);
}

/* aw_run with a job still running in the default executor: cancelled,
 * not waited for; the worker ends later and leaks nothing. */
START_TEST(run_with_job_still_running)
{
    long before = aw_test_live_allocations();
    struct jobs_frame j = {NULL, 0};
    intptr_t r = 0;

    gate_reset();
    ck_assert_int_eq(aw_run(main_with_jobs, &j, free_jobs_frame, 0, &r), 0);
    ck_assert_int_eq(r, 7);
    gate_release();
    wait_count(&results_destroyed, 2);
    wait_allocations(before);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("executor");
    TCase *tc = aw_test_tcase("executor");

    tcase_add_test(tc, run_in_executor_result_error_and_int);
    tcase_add_test(tc, cancel_before_start);
    tcase_add_test(tc, cancel_while_running);
    tcase_add_test(tc, cancel_after_done);
    tcase_add_test(tc, cancel_after_finish_before_handed_back);
    tcase_add_test(tc, released_future_cancels_queued_job);
    tcase_add_test(tc, task_awaiting_job_cancelled);
    tcase_add_test(tc, shutdown_wait_runs_queued_jobs);
    tcase_add_test(tc, shutdown_cancel_futures_without_wait);
    tcase_add_test(tc, shutdown_wait_and_cancel_futures);
    tcase_add_test(tc, executor_bad_arguments);
    tcase_add_test(tc, workers_lazy_bounded_and_named);
    tcase_add_test(tc, to_thread_default_executor);
    tcase_add_test(tc, loop_with_default_executor_closes_once_jobs_done);
    tcase_add_test(tc, bounded_queue_backpressure);
    tcase_add_test(tc, bounded_queue_cancel_while_waiting_for_room);
    tcase_add_test(tc, bounded_queue_shutdown_with_jobs_waiting_for_room);
    tcase_add_test(tc, loop_closed_while_job_runs);
    tcase_add_test(tc, many_loops_share_one_pool_each_result_once);
    tcase_add_test(tc, one_wakeup_per_batch);
    tcase_add_test(tc, run_threadsafe_result_crosses_both_ways);
    tcase_add_test(tc, run_threadsafe_cancel_from_calling_loop);
    tcase_add_test(tc, run_threadsafe_cancel_from_target_loop);
    tcase_add_test(tc, run_threadsafe_target_loop_closed_first);
    tcase_add_test(tc, run_threadsafe_calling_loop_closed_first);
    tcase_add_test(tc, run_threadsafe_round_trips_each_delivered_once);
    tcase_add_test(tc, promise_settled_from_plain_pthread);
    tcase_add_test(tc, run_returns_main_outcome_and_cancels_leftovers);
    tcase_add_test(tc, run_signal_cancels_main);
    tcase_add_test(tc, run_inside_running_loop_refused);
    tcase_add_test(tc, run_with_job_still_running);
    suite_add_tcase(s, tc);
    return s;
}

/* SPDX-License-Identifier: MIT */
/* await/executor.h: blocking work in a thread pool (concurrent.futures'
 * ThreadPoolExecutor, asyncio's run_in_executor and to_thread), futures
 * that cross loops and threads (run_coroutine_threadsafe, wrap_future),
 * and aw_run(), asyncio.run: the whole life of a program's loop in one
 * call. */
#ifndef AWAIT_EXECUTOR_H
#define AWAIT_EXECUTOR_H

#include <stdint.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"
#include "await/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * An executor is a pool of worker threads that run blocking functions
 * (file I/O, getaddrinfo, hashing, a database client).  It is the one
 * libawait object shared between threads: any thread may submit to it and
 * any number of loops may share it.  A job's outcome comes back as a
 * future on the loop that submitted it.  The worker never touches that
 * loop's objects: finished jobs are handed to the loop through its
 * thread-safe queue, one wake-up for all the jobs of that loop that
 * finished since the last one (a batch), not one per job.
 *
 * Ownership, in one sentence: the job owns `arg` (arg_destroy(arg) runs
 * once, after fn on the worker thread, or on the loop's thread when the
 * job is cancelled before it ran), and the job's future owns fn's result
 * (result_destroy(result) when the future is freed, unless it was taken);
 * a result nobody can receive any more (its future was cancelled while
 * the job ran) is destroyed with result_destroy on the worker thread as
 * soon as fn returns.
 *
 * Memory of the executor and of its jobs comes from the library's
 * allocator (aw_replace_allocator), from several threads: an allocator
 * given there must be thread-safe once executors are used.
 */
typedef struct aw_executor aw_executor;

/*
 * aw_blocking_fn - a blocking function run by a worker thread.  Returns
 * its result, or sets *err (0 on entry) to a negative code: the future
 * then fails with it (AW_ECANCELLED: ends cancelled), and a result
 * returned with it is destroyed.  For an integer result, return
 * (void *)(intptr_t)n with a NULL result_destroy and read it with
 * aw_future_result_int() or AW_AWAIT_INT().  It must not use any loop
 * object; it may call aw_loop_call_soon_threadsafe().
 */
typedef void *(*aw_blocking_fn)(void *arg, int *err);

/* Options of aw_executor_new(); all zero gives Python's defaults. */
typedef struct aw_executor_options {
    /* Worker threads at most; 0: min(32, online CPUs + 4) (Python's). */
    int max_workers;
    /* Threads are named PREFIX_N (pthread_setname_np; the kernel keeps 15
     * bytes); NULL: "aw-worker".  Copied. */
    const char *thread_name_prefix;
    /* Jobs waiting for a worker at most (a bounded queue, for
     * backpressure); 0: unbounded.  A job submitted while the queue is
     * full waits for room: its future stays pending, and the job enters
     * the queue, in the order submitted, when a worker takes a job or a
     * queued job is cancelled (see aw_loop_run_in_executor()). */
    size_t maxsize;
} aw_executor_options;

/*
 * aw_executor_new - create a thread pool (concurrent.futures'
 * ThreadPoolExecutor).  options may be NULL (the defaults).  Workers are
 * started as jobs arrive, while none is idle, up to max_workers.  Stores
 * the executor in *exp (the caller owns it: end it with
 * aw_executor_free()) and returns 0; -EINVAL for a NULL exp or a negative
 * max_workers; -ENOMEM.
 * Thread-safe.
 */
AW_EXTERN int aw_executor_new(aw_executor **exp,
                              const aw_executor_options *options);

/*
 * aw_loop_run_in_executor - run fn(arg, &err) in a worker of ex, or of
 * the loop's default executor when ex is NULL (asyncio's
 * loop.run_in_executor).  Returns the future of the job on loop, with a
 * reference for the caller; it settles on loop with fn's result (owned
 * by the future, destroyed with result_destroy, which may be NULL), or
 * fails with the code fn set.  Jobs start in the order submitted.
 *
 * Backpressure: with options.maxsize set and the queue full, the job
 * waits for room (AW_EXECUTOR_WAITING) and its future simply stays
 * pending longer (awaiting it is how a producer slows down); jobs
 * waiting for room enter the queue first come, first served, from every
 * loop.  Cancelling the future of a job waiting for room removes it (it
 * never runs, arg is destroyed); a shutdown of the executor fails it
 * with AW_ECLOSED (it was not accepted yet, like a submission after the
 * shutdown; arg destroyed on its loop).
 *
 * Cancelling the future (aw_future_cancel, or cancelling a task that
 * awaits it) takes effect at once: a job no worker took yet never runs
 * (arg is destroyed); a running job cannot be interrupted, so it runs to
 * its end and its result is destroyed on the worker thread.  Releasing
 * the last reference to a pending job's future cancels the job in the
 * same way: nobody could read its outcome (keep the future to keep the
 * job).
 *
 * Returns NULL (and arg destroyed) for a NULL or closed loop; a failed
 * future (arg destroyed, fn never called) for a NULL fn (-EINVAL), an
 * executor shut down (AW_ECLOSED), a worker that could not be started
 * while none runs (-EAGAIN), or out of memory (-ENOMEM).  Call it from
 * the loop's thread.
 */
AW_EXTERN aw_future *aw_loop_run_in_executor(aw_loop *loop, aw_executor *ex,
                                             aw_blocking_fn fn, void *arg,
                                             aw_destroy_fn arg_destroy,
                                             aw_destroy_fn result_destroy);

/*
 * aw_to_thread - asyncio.to_thread: aw_loop_run_in_executor() on the
 * loop's default executor.  The default executor is created on first use
 * with the default options (threads named "aw-default_N") and belongs to
 * the loop: aw_loop_shutdown_default_executor() releases it, and closing
 * the loop does so itself (without waiting) once the loop's jobs are
 * back.
 */
AW_EXTERN aw_future *aw_to_thread(aw_loop *loop, aw_blocking_fn fn,
                                  void *arg, aw_destroy_fn arg_destroy,
                                  aw_destroy_fn result_destroy);

/*
 * aw_loop_shutdown_default_executor - shut the loop's default executor
 * down and release it (asyncio's shutdown_default_executor): its queued
 * jobs still run and deliver their outcome, its threads end once the
 * queue is empty.  With wait, returns once they have ended (as
 * aw_executor_shutdown(ex, 1, 0): a running job is waited for, however
 * long it blocks); without, returns at once.  aw_loop_close() does the
 * same without waiting, so a loop whose jobs are all back closes without
 * this call; make it to wait for the threads, or to get a new default
 * executor on the next aw_to_thread().  Returns 0 (also when the loop has
 * no default executor); -EINVAL for NULL.  Call it from the loop's
 * thread.
 */
AW_EXTERN int aw_loop_shutdown_default_executor(aw_loop *loop, int wait);

/*
 * aw_loop_cancel_executor_jobs - cancel every job submitted from loop
 * whose future is still pending, in any executor (what aw_run does at
 * the end).  Returns how many were cancelled, or -EINVAL.  Call it from
 * the loop's thread.
 */
AW_EXTERN int aw_loop_cancel_executor_jobs(aw_loop *loop);

/*
 * aw_loop_executor_jobs - how many jobs submitted from loop have not
 * been handed back to it yet (queued, running, or finished and waiting
 * for the loop's next pass); a job cancelled while it runs no longer
 * counts.  While it is not 0 the loop cannot close: aw_loop_close()
 * reports how many ("N executor jobs still running or queued") and
 * returns AW_EBUSY.
 */
AW_EXTERN size_t aw_loop_executor_jobs(aw_loop *loop);

/*
 * aw_executor_shutdown - no new job is accepted (submissions fail with
 * AW_ECLOSED); with cancel_futures, the jobs no worker took yet are
 * cancelled (their futures end cancelled on their loops, their args are
 * destroyed there); with wait, returns once every worker thread has ended,
 * i.e. after the running jobs (and, without cancel_futures, the queued
 * ones) have finished: never call it with wait from a loop whose jobs
 * need that loop to finish.  (concurrent.futures' shutdown(wait,
 * cancel_futures).)  Calling it again is harmless.  Returns 0; -EINVAL
 * for NULL; -EDEADLK when waiting from one of the executor's own workers.
 * Thread-safe.
 */
AW_EXTERN int aw_executor_shutdown(aw_executor *ex, int wait,
                                   int cancel_futures);

/*
 * aw_executor_free - shut the executor down without waiting (as
 * aw_executor_shutdown(ex, 0, 0)) and release it.  Queued jobs still run
 * and deliver; the memory goes when the last worker thread ends, so this
 * never blocks on a worker.  Accepts NULL.  Thread-safe, once.
 */
AW_EXTERN void aw_executor_free(aw_executor *ex);

enum aw_executor_stat {
    AW_EXECUTOR_WORKERS = 1, /* threads started and not ended */
    AW_EXECUTOR_IDLE,        /* threads waiting for a job */
    AW_EXECUTOR_QUEUED,      /* jobs waiting for a worker */
    AW_EXECUTOR_SUBMITTED,   /* jobs accepted in the queue, since creation */
    AW_EXECUTOR_COMPLETED,   /* jobs a worker ran to their end */
    AW_EXECUTOR_WAKEUPS,     /* loop wake-ups made to hand jobs back */
    AW_EXECUTOR_WAITING      /* jobs waiting for room in a bounded queue */
};

/* aw_executor_stat - one of the counters above; 0 for NULL or an unknown
 * name.  Thread-safe. */
AW_EXTERN size_t aw_executor_stat(aw_executor *ex, int which);

/* ---- cross-loop calls and cross-thread futures ------------------------------ */

/*
 * aw_remote_fn - what aw_loop_run_threadsafe() runs on the target loop,
 * in the target's thread: returns a future of target (a task,
 * aw_future_resolved(), any future), whose reference the call takes and
 * whose outcome crosses back; NULL counts as out of memory.  fn owns arg
 * once called (the call's arg_destroy is then not called).
 */
typedef aw_future *(*aw_remote_fn)(aw_loop *target, void *arg);

/*
 * aw_loop_run_threadsafe - run fn(target, arg) on the loop target, which
 * runs in another thread (or this one), and get the outcome of the future
 * fn returns as a future on loop (asyncio's run_coroutine_threadsafe and
 * wrap_future in one).  Returns that future with a reference for the
 * caller.  Call it from loop's thread; target must stay allocated until
 * the call returns (as for aw_loop_call_soon_threadsafe(), which carries
 * the call there).
 *
 * The outcome crosses: a result moves with its destructor (taken out of
 * the target's future), an integer result as it is, an error as its code
 * and a copy of its message, a cancellation as a cancellation.  A result
 * that nobody can receive any more is destroyed with its destructor on
 * the thread that finds so, which may be either loop's: destructors of
 * results that cross must not care which thread runs them.
 *
 * Cancellation crosses both ways.  Cancelling the future on loop (or
 * releasing its last reference while it is pending) ends it cancelled at
 * once and cancels the target's future ("cancelled by the calling
 * loop"), or, when fn has not run yet, keeps fn from running (arg is
 * destroyed on the target).  A target future cancelled on the target's
 * side ends loop's future cancelled.
 *
 * Loops closing.  A target closed when the call is made: a future failed
 * with AW_ECLOSED ("the target loop is closed").  A target torn down by
 * aw_run() while the call waits to start or runs (aw_run cancels it):
 * AW_ECLOSED ("the target loop was closing", "... closed before the call
 * ended").  A target that merely closes cannot while the call runs there
 * (aw_loop_close() returns AW_EBUSY and names "calls of other loops").
 * The calling loop can close as soon as its future is gone (which
 * cancelled the call): what the target still sends is then dropped.
 *
 * Returns NULL (and arg destroyed) for a NULL or closed loop; a failed
 * future (arg destroyed, fn never called) for a NULL target or fn
 * (-EINVAL), a closed target (AW_ECLOSED), or out of memory (-ENOMEM).
 */
AW_EXTERN aw_future *aw_loop_run_threadsafe(aw_loop *loop, aw_loop *target,
                                            aw_remote_fn fn, void *arg,
                                            aw_destroy_fn arg_destroy);

/*
 * aw_loop_run_task_threadsafe - aw_loop_run_threadsafe() for a task:
 * aw_task_new(target, main, frame, frame_free) on the target, its
 * outcome on loop.  The frame is the task's (frame_free runs on the
 * target once it ended), or is released with frame_free when the task
 * never starts.
 */
AW_EXTERN aw_future *aw_loop_run_task_threadsafe(aw_loop *loop,
                                                 aw_loop *target,
                                                 aw_task_fn main, void *frame,
                                                 aw_destroy_fn frame_free);

/*
 * A promise: the one handle by which a thread that is not the loop's (a C
 * library's own thread, a plain pthread) settles a future of the loop,
 * once (what asyncio does with a concurrent.futures.Future and
 * wrap_future, or call_soon_threadsafe(fut.set_result, value)).  The
 * settle crosses to the loop through aw_loop_call_soon_threadsafe(): the
 * future settles there, on a later pass, never in the settling thread.
 * The promise references no loop object: the loop may drop the future,
 * and then close, before the settle comes; the settle is then dropped
 * (its result destroyed, in the settling thread when the loop has closed).
 */
typedef struct aw_promise aw_promise;

/*
 * aw_loop_create_promise - a pending future on loop, returned with a
 * reference for the caller, and in *promisep its promise, for the
 * settling thread.  The future can be awaited, chained, cancelled or
 * released like any other; cancelling or releasing it while pending
 * tells the promise (aw_promise_cancelled_threadsafe()).  Returns NULL
 * (and *promisep NULL) for a NULL promisep, a NULL or closed loop, or out
 * of memory.  Call it from loop's thread.
 */
AW_EXTERN aw_future *aw_loop_create_promise(aw_loop *loop,
                                            aw_promise **promisep);

/*
 * aw_promise_set_result_threadsafe - settle the promise's future with
 * result, which it then owns (destroy(result) when the future is freed;
 * destroy may be NULL).  Takes the promise: use it no more.  Returns 0
 * when sent (the future may still have been dropped meanwhile: the result
 * is then destroyed); AW_ECLOSED when the loop has closed (result
 * destroyed); -EINVAL for a NULL promise (result untouched).  From any
 * thread.
 */
AW_EXTERN int aw_promise_set_result_threadsafe(aw_promise *promise,
                                               void *result,
                                               aw_destroy_fn destroy);

/* aw_promise_set_result_int_threadsafe - the same for an integer
 * result. */
AW_EXTERN int aw_promise_set_result_int_threadsafe(aw_promise *promise,
                                                   intptr_t result);

/*
 * aw_promise_set_error_threadsafe - fail the promise's future with a
 * negative code and a message (copied; may be NULL).  Takes the promise.
 * Returns as aw_promise_set_result_threadsafe(); -EINVAL also, promise
 * untouched, for a code that is not negative or is AW_ECANCELLED (use
 * aw_promise_cancel_threadsafe()).  From any thread.
 */
AW_EXTERN int aw_promise_set_error_threadsafe(aw_promise *promise, int code,
                                              const char *msg);

/* aw_promise_cancel_threadsafe - cancel the promise's future, with a
 * message (copied; may be NULL).  Takes the promise.  Returns as
 * aw_promise_set_result_threadsafe().  From any thread. */
AW_EXTERN int aw_promise_cancel_threadsafe(aw_promise *promise,
                                           const char *msg);

/* aw_promise_free_threadsafe - give the promise up without settling:
 * its future fails with AW_ECLOSED ("the promise was freed without
 * settling its future"), so that nothing waits for it forever.  Accepts
 * NULL.  From any thread. */
AW_EXTERN void aw_promise_free_threadsafe(aw_promise *promise);

/* aw_promise_cancelled_threadsafe - 1 once the promise's future was
 * cancelled or released on its loop (nobody waits for the outcome any
 * more: the work may stop), else 0 (also for NULL).  From any thread,
 * before the promise is taken. */
AW_EXTERN int aw_promise_cancelled_threadsafe(const aw_promise *promise);

/* ---- asyncio.run ------------------------------------------------------------ */

enum aw_run_main_flags {
    /* SIGINT and SIGTERM cancel the main task; the handlers are then
     * removed, so that a second signal acts as if none were set. */
    AW_RUN_HANDLE_SIGNALS = 1
};

/*
 * aw_run - asyncio.run: create a loop, run the task main(task, frame) on
 * it to its end, cancel the tasks still pending and wait for them, cancel
 * the executor jobs of the loop still pending and take back those that
 * finished, shut the default executor down, close and free the loop.
 * Once the main task has ended, calls of other loops
 * (aw_loop_run_threadsafe()) no longer start on the loop and those
 * running are cancelled: their callers get AW_ECLOSED.  The
 * task owns frame (frame_free(frame), when not NULL, once it has ended;
 * also when aw_run fails before starting it).  Returns the main task's
 * outcome: 0 with its integer result in *result (when result is not
 * NULL), its error code when it failed, AW_ECANCELLED when it was
 * cancelled (by a signal with AW_RUN_HANDLE_SIGNALS).  Also: -EINVAL for
 * a NULL main; AW_ERUNNING when a loop already runs in this thread; the
 * errors of aw_loop_new(); AW_EBUSY when the loop could not be closed
 * (objects of the loop were still referenced: reported, and the loop is
 * then left allocated).  Jobs that were running when their futures were
 * cancelled are not waited for.
 */
AW_EXTERN int aw_run(aw_task_fn main, void *frame, aw_destroy_fn frame_free,
                     int flags, intptr_t *result);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_EXECUTOR_H */

/* SPDX-License-Identifier: MIT */
/* test_sync.c: Lock, Event, Condition, Semaphore, BoundedSemaphore and
 * Barrier, after CPython's test_asyncio/test_locks.py where it applies. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* What the test tasks share. */
static struct {
    aw_lock *lock;
    aw_semaphore *sem;
    aw_event *event;
    aw_condition *cond;
    aw_barrier *barrier;
    aw_future *go;
    aw_task *victim;
    int ready;
} ctx;

static void
reset(void)
{
    memset(&order, 0, sizeof(order));
    memset(&ctx, 0, sizeof(ctx));
}

struct fr {
    int id;
    int rc;
    int rounds;
    intptr_t index;
    void *p;
};

static struct fr *
frame(int id)
{
    struct fr *f = calloc(1, sizeof(*f));

    ck_assert_ptr_nonnull(f);
    f->id = id;
    return f;
}

static aw_task *
spawn(aw_task_fn fn, int id)
{
    aw_task *t = aw_task_new(loop, fn, frame(id), free);

    ck_assert(aw_is_task(t));
    return t;
}

/* Run until every task has ended. */
static void
drain(void)
{
    int guard = 0;

    while (aw_all_tasks(loop, NULL, 0) > 0 && guard++ < 100000)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), 0);
}

static void
unref_all(aw_task **t, int n)
{
    int i;

    for (i = 0; i < n; i++)
        aw_future_unref(t[i]);
}

/* ---- Lock ------------------------------------------------------------------- */

static AW_TASK(locker, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(ctx.lock), NULL);
    record(f->id);
    AW_YIELD();
    record(f->id * 10);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0);
    AW_END();
}

START_TEST(lock_fifo_fairness)
{
    static const int want[] = {1, 10, 2, 20, 3, 30};
    aw_task *t[3];
    int i;

    reset();
    ctx.lock = aw_lock_new(loop);
    for (i = 0; i < 3; i++)
        t[i] = spawn(locker, i + 1);
    drain();
    assert_order(want, 6);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    unref_all(t, 3);
    aw_lock_free(ctx.lock);
}
END_TEST

static AW_TASK(holder, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(ctx.lock), NULL);
    AW_AWAIT(aw_future_ref(ctx.go), NULL);
    f->rc = aw_lock_release(ctx.lock);
    /* In the same step: the lock is granted to the victim, which is
     * cancelled before it resumes. */
    if (ctx.victim != NULL)
        aw_future_cancel(ctx.victim, NULL);
    AW_END();
}

static AW_TASK(release_other, struct fr *f)
{
    AW_BEGIN();
    f->rc = aw_lock_release(ctx.lock);
    record(f->rc);
    AW_END();
}

START_TEST(lock_release_errors)
{
    aw_task *h, *o;

    reset();
    ctx.lock = aw_lock_new(loop);
    ctx.go = aw_future_new(loop);
    ck_assert_int_eq(aw_lock_release(ctx.lock), AW_EINVALSTATE);
    h = spawn(holder, 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 1);
    o = spawn(release_other, 2);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(order.items[0], -EPERM); /* not the owner */
    ck_assert_int_eq(aw_lock_release(ctx.lock), -EPERM); /* nor a callback */
    ck_assert_int_eq(aw_lock_try_acquire(ctx.lock), AW_EBUSY);
    aw_future_set_result_int(ctx.go, 1);
    drain();
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    ck_assert_int_eq(aw_lock_try_acquire(ctx.lock), 0);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0);
    ck_assert_int_eq(aw_lock_release(NULL), -EINVAL);
    aw_future_unref(h);
    aw_future_unref(o);
    aw_future_unref(ctx.go);
    aw_lock_free(ctx.lock);
}
END_TEST

START_TEST(lock_waiter_cancelled_before_grant)
{
    static const int want[] = {2, 20};
    aw_future *mine;
    aw_task *t[2];

    reset();
    ctx.lock = aw_lock_new(loop);
    mine = aw_lock_acquire(ctx.lock); /* held by this callback code */
    ck_assert_int_eq(aw_future_error(mine), 0);
    t[0] = spawn(locker, 1);
    t[1] = spawn(locker, 2);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_cancel(t[0], NULL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0);
    drain();
    ck_assert_int_eq(aw_future_cancelled(t[0]), 1);
    assert_order(want, 2);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    aw_future_unref(mine);
    unref_all(t, 2);
    aw_lock_free(ctx.lock);
}
END_TEST

START_TEST(lock_waiter_cancelled_after_grant_loses_no_wakeup)
{
    static const int want[] = {3, 30};
    aw_task *h, *t[2];

    reset();
    ctx.lock = aw_lock_new(loop);
    ctx.go = aw_future_new(loop);
    h = spawn(holder, 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t[0] = spawn(locker, 2);
    t[1] = spawn(locker, 3);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ctx.victim = t[0];
    aw_future_set_result_int(ctx.go, 1);
    drain();
    /* The victim got the lock and was cancelled before it resumed: the
     * lock went on to the next waiter rather than being lost. */
    ck_assert_int_eq(aw_future_cancelled(t[0]), 1);
    assert_order(want, 2);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    aw_future_unref(h);
    unref_all(t, 2);
    aw_future_unref(ctx.go);
    aw_lock_free(ctx.lock);
}
END_TEST

static int
on_locked(aw_future *f, void *arg)
{
    (void)arg;
    record(aw_future_error(f) == 0 ? 1 : -1);
    return aw_lock_release(ctx.lock);
}

START_TEST(lock_from_callbacks)
{
    aw_future *a, *b;

    reset();
    ctx.lock = aw_lock_new(loop);
    a = aw_lock_acquire(ctx.lock);
    b = aw_lock_acquire(ctx.lock);
    ck_assert_int_eq(aw_future_done(a), 1);
    ck_assert_int_eq(aw_future_done(b), 0);
    aw_future_add_done_callback(b, on_locked, NULL);
    aw_future_error(a);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(order.items[0], 1);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    aw_future_unref(a);
    aw_future_unref(b);
    /* A grant dropped unread gives the lock back. */
    aw_future_unref(aw_lock_acquire(ctx.lock));
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    aw_lock_free(ctx.lock);
}
END_TEST

/* ---- freeing while futures are held ------------------------------------------------- */

/* A task that frees the lock in its cleanup, after handing it on. */
static AW_TASK(lock_freer, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(ctx.lock), NULL);
    AW_YIELD();
    f->rc = aw_lock_release(ctx.lock); /* granted to the next waiter */
    AW_FINALLY();
    aw_lock_free(ctx.lock);
    AW_END();
}

static AW_TASK(lock_after_free, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(ctx.lock), NULL);
    record(f->id);
    f->rc = aw_lock_release(ctx.lock); /* the lock is gone */
    record(f->rc);
    AW_END();
}

START_TEST(lock_freed_in_finally_after_grant)
{
    static const int want[] = {2, -EINVAL};
    aw_task *a, *b;

    reset();
    ctx.lock = aw_lock_new(loop);
    a = spawn(lock_freer, 1);
    b = spawn(lock_after_free, 2);
    drain();
    assert_order(want, 2);
    ck_assert_int_eq(aw_future_error(a), 0);
    ck_assert_int_eq(aw_future_error(b), 0);
    aw_future_unref(a);
    aw_future_unref(b);
}
END_TEST

/* ---- a task that ends holding a lock --------------------------------------------- */

static int forgot_line; /* the line of forgetful's acquire await */

/* Takes the lock (f->id 1: with aw_lock_try_acquire) and returns with
 * it. */
static AW_TASK(forgetful, struct fr *f)
{
    AW_BEGIN();
    if (f->id == 1) {
        ck_assert_int_eq(aw_lock_try_acquire(ctx.lock), 0);
        forgot_line = __LINE__ + 1;
        AW_YIELD();
    } else {
        forgot_line = __LINE__ + 1;
        AW_AWAIT(aw_lock_acquire(ctx.lock), NULL);
    }
    record(f->id);
    AW_END();
}

/* The report names the task and the await that took the lock. */
static void
assert_forgot_report(const char *name, int tried)
{
    char where[64];

    snprintf(where, sizeof(where), "test_sync.c:%d", forgot_line);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.code, AW_EINVALSTATE);
    ck_assert_msg(strstr(cap.message, name) != NULL, "%s", cap.message);
    ck_assert_msg(strstr(cap.message, where) != NULL, "%s", cap.message);
    ck_assert_int_eq(strstr(cap.message, "try_acquire") != NULL, tried);
}

/* A task that returns still holding a lock (taken at once, handed over
 * by a release, or with try_acquire) is reported once, by name and the
 * await that took it, and the lock goes on to the next waiter (asyncio
 * leaves it locked for good). */
START_TEST(task_ending_with_lock_reported_and_released)
{
    static const int want[] = {2, 5, 50, 3, 1, 6, 60};
    aw_future *mine;
    aw_task *t[6];

    reset();
    capture_reports();
    ctx.lock = aw_lock_new(loop);

    /* Free: taken at once, then the waiter gets it. */
    t[0] = spawn(forgetful, 2);
    ck_assert_int_eq(aw_task_set_name(t[0], "forgetful-2"), 0);
    t[1] = spawn(locker, 5);
    drain();
    assert_forgot_report("forgetful-2", 0);

    /* Held by this callback code: handed over on release. */
    cap.calls = 0;
    mine = aw_lock_acquire(ctx.lock);
    ck_assert_int_eq(aw_future_error(mine), 0);
    t[2] = spawn(forgetful, 3);
    ck_assert_int_eq(aw_task_set_name(t[2], "forgetful-3"), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0);
    drain();
    assert_forgot_report("forgetful-3", 0);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);

    /* With try_acquire. */
    cap.calls = 0;
    t[3] = spawn(forgetful, 1);
    ck_assert_int_eq(aw_task_set_name(t[3], "forgetful-1"), 0);
    t[4] = spawn(locker, 6);
    drain();
    assert_forgot_report("forgetful-1", 1);
    assert_order(want, 7);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);

    /* A task that releases reports nothing. */
    cap.calls = 0;
    t[5] = spawn(locker, 7);
    drain();
    ck_assert_int_eq(cap.calls, 0);
    aw_future_unref(mine);
    unref_all(t, 6);
    aw_lock_free(ctx.lock);
}
END_TEST

/* Out of memory for the task's record of what it holds: no report, and
 * nothing to let the lock go with (it stays the ended task's). */
START_TEST(task_ending_with_lock_out_of_memory_unreported)
{
    aw_task *t;

    reset();
    capture_reports();
    ctx.lock = aw_lock_new(loop);
    t = spawn(forgetful, 2);
    aw_test_fail_allocation(1); /* the task's extra, at its acquire */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_test_fail_allocation(0);
    drain();
    ck_assert_int_eq(aw_future_error(t), 0);
    ck_assert_int_eq(cap.calls, 0);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 1);
    aw_future_unref(t);
    aw_lock_free(ctx.lock);
}
END_TEST

/* A task that ends after the lock it held was freed (or handed on, or
 * given back unread) reports nothing. */
START_TEST(task_ending_after_lock_freed_reports_nothing)
{
    aw_task *a, *b, *h, *t[2];

    reset();
    capture_reports();
    ctx.lock = aw_lock_new(loop);
    a = spawn(lock_freer, 1);
    b = spawn(lock_after_free, 2);
    drain();
    ck_assert_msg(cap.calls == 0, "%s", cap.message);
    aw_future_unref(a);
    aw_future_unref(b);

    /* Granted, then cancelled before it resumed: given back unread. */
    ctx.lock = aw_lock_new(loop);
    ctx.go = aw_future_new(loop);
    h = spawn(holder, 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t[0] = spawn(locker, 2);
    t[1] = spawn(locker, 3);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ctx.victim = t[0];
    aw_future_set_result_int(ctx.go, 1);
    drain();
    ck_assert_int_eq(aw_future_cancelled(t[0]), 1);
    ck_assert_msg(cap.calls == 0, "%s", cap.message);
    ck_assert_int_eq(aw_lock_locked(ctx.lock), 0);
    aw_future_unref(h);
    unref_all(t, 2);
    aw_future_unref(ctx.go);
    aw_lock_free(ctx.lock);
}
END_TEST

START_TEST(lock_free_then_release_futures)
{
    aw_future *fast, *held, *granted, *waiting;

    /* Freed first: every kind of future it gave is released after. */
    ctx.lock = aw_lock_new(loop);
    fast = aw_lock_acquire(ctx.lock); /* the lock's own grant */
    held = aw_lock_acquire(ctx.lock);
    granted = aw_lock_acquire(ctx.lock);
    waiting = aw_lock_acquire(ctx.lock);
    ck_assert_int_eq(aw_future_error(fast), 0);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0); /* to held */
    ck_assert_int_eq(aw_future_error(held), 0);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0); /* to granted */
    ck_assert_int_eq(aw_future_done(granted), 1);
    aw_lock_free(ctx.lock);
    ck_assert_int_eq(aw_future_cancelled(waiting), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(fast);
    aw_future_unref(granted); /* unread: nothing to hand on */
    aw_future_unref(waiting);
    aw_future_unref(held); /* the last: the lock's memory goes */
}
END_TEST

START_TEST(lock_release_futures_then_free)
{
    aw_future *fast, *held, *waiting;

    ctx.lock = aw_lock_new(loop);
    fast = aw_lock_acquire(ctx.lock);
    held = aw_lock_acquire(ctx.lock);
    waiting = aw_lock_acquire(ctx.lock);
    ck_assert_int_eq(aw_future_error(fast), 0);
    ck_assert_int_eq(aw_lock_release(ctx.lock), 0);
    ck_assert_int_eq(aw_future_error(held), 0);
    aw_future_unref(fast);
    aw_future_unref(held);
    aw_future_unref(waiting);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_lock_free(ctx.lock);
}
END_TEST

/* A freed lock keeps its memory for the futures, and takes nothing new. */
START_TEST(lock_freed_refuses_new_operations)
{
    aw_future *held, *again;

    ctx.lock = aw_lock_new(loop);
    held = aw_lock_acquire(ctx.lock);
    aw_lock_free(ctx.lock);
    again = aw_lock_acquire(ctx.lock);
    ck_assert_int_eq(aw_future_error(again), -EINVAL);
    ck_assert_int_eq(aw_lock_try_acquire(ctx.lock), -EINVAL);
    ck_assert_int_eq(aw_lock_release(ctx.lock), -EINVAL);
    aw_lock_free(ctx.lock); /* a second free: nothing */
    aw_future_unref(again);
    aw_future_unref(held);
}
END_TEST

/* Drop old (NULL: none) and hold l again, from this callback code. */
static aw_future *
relock(aw_lock *l, aw_future *old)
{
    aw_future *f;

    aw_future_unref(old);
    f = aw_lock_acquire(l);
    ck_assert_int_eq(aw_future_error(f), 0);
    return f;
}

START_TEST(condition_free_then_release_futures)
{
    aw_lock *lock;
    aw_future *hold, *done, *w1, *w2;

    /* Over a lock of the caller's: condition freed, then lock, then
     * the futures. */
    lock = aw_lock_new(loop);
    ctx.cond = aw_condition_new(loop, lock);
    hold = relock(lock, NULL);
    done = aw_condition_wait(ctx.cond); /* lock let go */
    hold = relock(lock, hold);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, 1), 1);
    ck_assert_int_eq(aw_lock_release(lock), 0); /* done re-acquires */
    ck_assert_int_eq(aw_future_error(done), 0);
    ck_assert_int_eq(aw_lock_release(lock), 0);
    hold = relock(lock, hold);
    w1 = aw_condition_wait(ctx.cond); /* waits for a notify */
    hold = relock(lock, hold);
    w2 = aw_condition_wait(ctx.cond);
    hold = relock(lock, hold);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, 1), 1); /* w1 queued */
    aw_condition_free(ctx.cond);
    aw_lock_free(lock);
    ck_assert_int_eq(aw_future_cancelled(w1), 1);
    ck_assert_int_eq(aw_future_cancelled(w2), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(done);
    aw_future_unref(w1);
    aw_future_unref(w2);
    aw_future_unref(hold);
}
END_TEST

START_TEST(condition_release_futures_then_free)
{
    aw_future *hold, *done, *w;

    ctx.cond = aw_condition_new(loop, NULL);
    hold = relock(aw_condition_lock(ctx.cond), NULL);
    done = aw_condition_wait(ctx.cond);
    hold = relock(aw_condition_lock(ctx.cond), hold);
    aw_condition_notify_all(ctx.cond);
    aw_lock_release(aw_condition_lock(ctx.cond));
    ck_assert_int_eq(aw_future_error(done), 0); /* held again */
    w = aw_condition_wait(ctx.cond); /* lets go, waits for a notify */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(w);
    aw_future_unref(done);
    aw_future_unref(hold);
    /* The lock is released by nobody: freeing is still fine. */
    aw_condition_free(ctx.cond);
    /* A lock freed first, its condition after. */
    {
        aw_lock *lock = aw_lock_new(loop);
        aw_condition *c = aw_condition_new(loop, lock);

        aw_lock_free(lock);
        w = aw_condition_wait(c);
        ck_assert_int_eq(aw_future_error(w), -EINVAL);
        aw_future_unref(w);
        aw_condition_free(c);
    }
}
END_TEST

START_TEST(semaphore_free_then_release_futures)
{
    aw_future *read, *granted, *waiting;

    ctx.sem = aw_semaphore_new_bounded(loop, 1);
    read = aw_semaphore_acquire(ctx.sem);
    granted = aw_semaphore_acquire(ctx.sem);
    waiting = aw_semaphore_acquire(ctx.sem);
    ck_assert_int_eq(aw_future_error(read), 0);
    ck_assert_int_eq(aw_semaphore_release(ctx.sem), 0); /* to granted */
    aw_semaphore_free(ctx.sem);
    ck_assert_int_eq(aw_future_cancelled(waiting), 1);
    ck_assert_int_eq(aw_semaphore_release(ctx.sem), -EINVAL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(granted); /* unread: nothing to give back to */
    aw_future_unref(waiting);
    aw_future_unref(read);
}
END_TEST

START_TEST(semaphore_release_futures_then_free)
{
    aw_future *read, *waiting;

    ctx.sem = aw_semaphore_new(loop, 1);
    read = aw_semaphore_acquire(ctx.sem);
    waiting = aw_semaphore_acquire(ctx.sem);
    ck_assert_int_eq(aw_future_error(read), 0);
    aw_future_unref(read);
    aw_future_unref(waiting);
    aw_semaphore_free(ctx.sem);
}
END_TEST

START_TEST(event_and_barrier_free_then_release_futures)
{
    aw_future *done, *pending, *b1, *b2, *b3;

    ctx.event = aw_event_new(loop);
    done = aw_event_wait(ctx.event);
    aw_event_set(ctx.event);
    aw_event_clear(ctx.event);
    pending = aw_event_wait(ctx.event);
    ctx.barrier = aw_barrier_new(loop, 2);
    b1 = aw_barrier_wait(ctx.barrier);
    b2 = aw_barrier_wait(ctx.barrier); /* both through */
    b3 = aw_barrier_wait(ctx.barrier);
    aw_event_free(ctx.event);
    aw_barrier_free(ctx.barrier);
    ck_assert_int_eq(aw_future_cancelled(pending), 1);
    ck_assert_int_eq(aw_future_cancelled(b3), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_future_error(done), 0);
    ck_assert_int_eq(aw_future_error(b1), 0);
    aw_future_unref(done);
    aw_future_unref(pending);
    aw_future_unref(b1);
    aw_future_unref(b2);
    aw_future_unref(b3);
}
END_TEST

START_TEST(event_and_barrier_release_futures_then_free)
{
    aw_future *done, *pending, *b1, *b2;

    ctx.event = aw_event_new(loop);
    done = aw_event_wait(ctx.event);
    aw_event_set(ctx.event);
    aw_event_clear(ctx.event);
    pending = aw_event_wait(ctx.event);
    ctx.barrier = aw_barrier_new(loop, 2);
    b1 = aw_barrier_wait(ctx.barrier);
    b2 = aw_barrier_wait(ctx.barrier);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(done);
    aw_future_unref(pending);
    aw_future_unref(b1);
    aw_future_unref(b2);
    aw_event_free(ctx.event);
    aw_barrier_free(ctx.barrier);
}
END_TEST

/* ---- Event ----------------------------------------------------------------------- */

static AW_TASK(event_waiter, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_event_wait(ctx.event), NULL);
    record(f->id);
    AW_END();
}

START_TEST(event_set_wakes_every_waiter)
{
    static const int want[] = {1, 2, 3, 4};
    aw_task *t[4];
    int i;

    reset();
    ctx.event = aw_event_new(loop);
    for (i = 0; i < 3; i++)
        t[i] = spawn(event_waiter, i + 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(order.n, 0);
    ck_assert_int_eq(aw_event_is_set(ctx.event), 0);
    aw_event_set(ctx.event);
    ck_assert_int_eq(aw_event_is_set(ctx.event), 1);
    t[3] = spawn(event_waiter, 4); /* set already: goes through */
    drain();
    assert_order(want, 4);
    aw_event_clear(ctx.event);
    ck_assert_int_eq(aw_event_is_set(ctx.event), 0);
    unref_all(t, 4);
    aw_event_free(ctx.event);
}
END_TEST

START_TEST(free_cancels_waiters)
{
    aw_future *e, *l, *s, *b, *held;

    reset();
    ctx.event = aw_event_new(loop);
    ctx.lock = aw_lock_new(loop);
    ctx.sem = aw_semaphore_new(loop, 0);
    ctx.barrier = aw_barrier_new(loop, 2);
    e = aw_event_wait(ctx.event);
    held = aw_lock_acquire(ctx.lock);
    l = aw_lock_acquire(ctx.lock);
    s = aw_semaphore_acquire(ctx.sem);
    b = aw_barrier_wait(ctx.barrier);
    aw_event_free(ctx.event);
    aw_lock_free(ctx.lock);
    aw_semaphore_free(ctx.sem);
    aw_barrier_free(ctx.barrier);
    ck_assert_int_eq(aw_future_cancelled(e), 1);
    ck_assert_int_eq(aw_future_cancelled(l), 1);
    ck_assert_int_eq(aw_future_cancelled(s), 1);
    ck_assert_int_eq(aw_future_cancelled(b), 1);
    aw_future_unref(e);
    aw_future_unref(held); /* its lock is gone: nothing to give back */
    aw_future_unref(l);
    aw_future_unref(s);
    aw_future_unref(b);
}
END_TEST

/* ---- Semaphore ------------------------------------------------------------------- */

static AW_TASK(sem_user, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_semaphore_acquire(ctx.sem), NULL);
    record(f->id);
    AW_YIELD();
    AW_YIELD();
    record(-f->id);
    aw_semaphore_release(ctx.sem);
    AW_END();
}

START_TEST(semaphore_fifo_and_value)
{
    static const int want[] = {1, 2, -1, -2, 3, 4, -3, -4};
    aw_task *t[4];
    int i;

    reset();
    ctx.sem = aw_semaphore_new(loop, 2);
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), 2);
    for (i = 0; i < 4; i++)
        t[i] = spawn(sem_user, i + 1);
    drain();
    assert_order(want, 8);
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), 2);
    ck_assert_int_eq(aw_semaphore_try_acquire(ctx.sem), 0);
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), 1);
    ck_assert_int_eq(aw_semaphore_release(ctx.sem), 0);
    ck_assert_int_eq(aw_semaphore_release(ctx.sem), 0); /* unbounded */
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), 3);
    unref_all(t, 4);
    aw_semaphore_free(ctx.sem);
    ck_assert_ptr_null(aw_semaphore_new(loop, -1));
}
END_TEST

START_TEST(bounded_semaphore_release_beyond_bound)
{
    aw_semaphore *s = aw_semaphore_new_bounded(loop, 1);

    ck_assert_int_eq(aw_semaphore_release(s), AW_ELIMIT);
    ck_assert_int_eq(aw_semaphore_try_acquire(s), 0);
    ck_assert_int_eq(aw_semaphore_try_acquire(s), AW_EBUSY);
    ck_assert_int_eq(aw_semaphore_release(s), 0);
    ck_assert_int_eq(aw_semaphore_release(s), AW_ELIMIT);
    ck_assert_int_eq(aw_semaphore_value(s), 1);
    aw_semaphore_free(s);
}
END_TEST

START_TEST(semaphore_cancelled_after_grant_loses_no_wakeup)
{
    aw_future *a, *b, *c;

    reset();
    ctx.sem = aw_semaphore_new(loop, 1);
    a = aw_semaphore_acquire(ctx.sem);
    ck_assert_int_eq(aw_future_error(a), 0);
    b = aw_semaphore_acquire(ctx.sem);
    c = aw_semaphore_acquire(ctx.sem);
    ck_assert_int_eq(aw_semaphore_release(ctx.sem), 0); /* granted to b */
    ck_assert_int_eq(aw_future_done(b), 1);
    ck_assert_int_eq(aw_future_cancel(b, NULL), AW_EINVALSTATE);
    aw_future_unref(b); /* unread: the unit goes on to c */
    ck_assert_int_eq(aw_future_done(c), 1);
    ck_assert_int_eq(aw_future_error(c), 0);
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), 0);
    aw_semaphore_release(ctx.sem);
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(a);
    aw_future_unref(c);
    aw_semaphore_free(ctx.sem);
}
END_TEST

START_TEST(semaphore_release_at_int_max_overflows)
{
    aw_semaphore *s = aw_semaphore_new(loop, INT_MAX);
    aw_semaphore *b = aw_semaphore_new_bounded(loop, INT_MAX);

    ck_assert_int_eq(aw_semaphore_release(s), -EOVERFLOW);
    ck_assert_int_eq(aw_semaphore_value(s), INT_MAX); /* unchanged */
    ck_assert_int_eq(aw_semaphore_try_acquire(s), 0);
    ck_assert_int_eq(aw_semaphore_release(s), 0);
    ck_assert_int_eq(aw_semaphore_release(s), -EOVERFLOW);
    ck_assert_int_eq(aw_semaphore_release(b), AW_ELIMIT);
    ck_assert_int_eq(aw_semaphore_value(b), INT_MAX);
    aw_semaphore_free(s);
    aw_semaphore_free(b);
}
END_TEST

/* ---- Condition -------------------------------------------------------------------- */

static AW_TASK(cond_waiter, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(aw_condition_lock(ctx.cond)), NULL);
    AW_TRY_AWAIT(f->rc, aw_condition_wait(ctx.cond), NULL);
    record(f->rc == 0 ? f->id : -f->id);
    /* Held again on every outcome. */
    ck_assert_int_eq(aw_lock_release(aw_condition_lock(ctx.cond)), 0);
    AW_END();
}

static AW_TASK(notifier, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(aw_condition_lock(ctx.cond)), NULL);
    f->rc = f->id == 0 ? aw_condition_notify_all(ctx.cond)
                       : aw_condition_notify(ctx.cond, f->id);
    record(100 + f->rc);
    aw_lock_release(aw_condition_lock(ctx.cond));
    AW_END();
}

START_TEST(condition_notify_and_notify_all)
{
    static const int want[] = {101, 1, 102, 2, 3};
    aw_task *t[3], *n1, *n2;
    int i;

    reset();
    ctx.cond = aw_condition_new(loop, NULL);
    for (i = 0; i < 3; i++)
        t[i] = spawn(cond_waiter, i + 1);

    for (i = 0; i < 5; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(order.n, 0);
    n1 = spawn(notifier, 1);
    for (i = 0; i < 5; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    n2 = spawn(notifier, 0);
    drain();
    assert_order(want, 5);
    unref_all(t, 3);
    aw_future_unref(n1);
    aw_future_unref(n2);
    aw_condition_free(ctx.cond);
}
END_TEST

static int
ready_pred(void *arg)
{
    return *(int *)arg >= 3;
}

static AW_TASK(pred_waiter, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(aw_condition_lock(ctx.cond)), NULL);
    AW_AWAIT(aw_condition_wait_for(ctx.cond, ready_pred, &ctx.ready), NULL);
    record(ctx.ready);
    aw_lock_release(aw_condition_lock(ctx.cond));
    AW_END();
}

static AW_TASK(bumper, struct fr *f)
{
    AW_BEGIN();
    for (f->rounds = 0; f->rounds < 4; f->rounds++) {
        AW_AWAIT(aw_lock_acquire(aw_condition_lock(ctx.cond)), NULL);
        ctx.ready++;
        aw_condition_notify_all(ctx.cond);
        aw_lock_release(aw_condition_lock(ctx.cond));
        AW_YIELD();
    }
    AW_END();
}

START_TEST(condition_wait_for_predicate)
{
    aw_task *w, *b;

    reset();
    ctx.cond = aw_condition_new(loop, NULL);
    w = spawn(pred_waiter, 1);
    b = spawn(bumper, 2);
    drain();
    ck_assert_int_eq(order.n, 1);
    ck_assert_int_eq(order.items[0], 3); /* woke when true, not before */
    aw_future_unref(w);
    aw_future_unref(b);
    aw_condition_free(ctx.cond);
}
END_TEST

START_TEST(condition_wait_cancelled_reacquires_lock)
{
    aw_task *t;

    reset();
    ctx.cond = aw_condition_new(loop, NULL);
    t = spawn(cond_waiter, 5);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_lock_locked(aw_condition_lock(ctx.cond)), 0);
    aw_future_cancel(t, NULL);
    drain();
    ck_assert_int_eq(order.items[0], -5); /* and it released the lock */
    ck_assert_int_eq(aw_lock_locked(aw_condition_lock(ctx.cond)), 0);
    aw_future_unref(t);
    aw_condition_free(ctx.cond);
}
END_TEST

/* A wait cancelled by callback code ends cancelled holding the lock; its
 * future dropped unread gives the lock on rather than keeping it. */
START_TEST(condition_wait_cancelled_dropped_unread_releases_lock)
{
    aw_future *hold, *w, *next;

    ctx.cond = aw_condition_new(loop, NULL);
    hold = relock(aw_condition_lock(ctx.cond), NULL);
    w = aw_condition_wait(ctx.cond);
    ck_assert_int_eq(aw_future_cancel(w, NULL), 0);
    ck_assert_int_eq(aw_future_cancelled(w), 1); /* lock taken back */
    next = aw_lock_acquire(aw_condition_lock(ctx.cond));
    ck_assert_int_eq(aw_future_done(next), 0);
    aw_future_unref(w);
    ck_assert_int_eq(aw_future_done(next), 1);
    ck_assert_int_eq(aw_future_error(next), 0);
    ck_assert_int_eq(aw_lock_release(aw_condition_lock(ctx.cond)), 0);
    ck_assert_int_eq(aw_lock_locked(aw_condition_lock(ctx.cond)), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(next);
    aw_future_unref(hold);
    aw_condition_free(ctx.cond);
}
END_TEST

START_TEST(condition_wait_without_lock_refused)
{
    aw_future *w;

    ctx.cond = aw_condition_new(loop, NULL);
    w = aw_condition_wait(ctx.cond);
    ck_assert_int_eq(aw_future_error(w), -EPERM);
    aw_future_unref(w);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, -1), -EINVAL);
    aw_condition_free(ctx.cond);
}
END_TEST

/* ---- Barrier ------------------------------------------------------------------------ */

static AW_TASK(barrier_party, struct fr *f)
{
    AW_BEGIN();
    for (f->rounds = 0; f->rounds < 3; f->rounds++) {
        AW_AWAIT_INT(aw_barrier_wait(ctx.barrier), &f->index);
        record((int)f->index);
    }
    AW_END();
}

START_TEST(barrier_n_tasks_several_rounds)
{
    aw_task *t[3];
    int i, r, seen;

    reset();
    ctx.barrier = aw_barrier_new(loop, 3);
    ck_assert_int_eq(aw_barrier_parties(ctx.barrier), 3);
    for (i = 0; i < 3; i++)
        t[i] = spawn(barrier_party, i);
    drain();
    ck_assert_int_eq(order.n, 9);
    for (r = 0; r < 3; r++) {
        seen = 0;
        for (i = 0; i < 3; i++)
            seen |= 1 << order.items[r * 3 + i];
        ck_assert_int_eq(seen, 7); /* indices 0, 1, 2 each round */
    }
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 0);
    unref_all(t, 3);
    aw_barrier_free(ctx.barrier);
}
END_TEST

START_TEST(barrier_abort_and_reset)
{
    aw_barrier *b = aw_barrier_new(loop, 3);
    aw_future *w1 = aw_barrier_wait(b), *w2;

    ck_assert_int_eq(aw_barrier_n_waiting(b), 1);
    ck_assert_int_eq(aw_barrier_reset(b), 0);
    ck_assert_int_eq(aw_future_error(w1), AW_EBROKEN);
    aw_future_unref(w1);
    w1 = aw_barrier_wait(b);
    ck_assert_int_eq(aw_barrier_abort(b), 0);
    ck_assert_int_eq(aw_barrier_broken(b), 1);
    ck_assert_int_eq(aw_future_error(w1), AW_EBROKEN);
    w2 = aw_barrier_wait(b);
    ck_assert_int_eq(aw_future_error(w2), AW_EBROKEN);
    aw_future_unref(w1);
    aw_future_unref(w2);
    aw_barrier_reset(b);
    ck_assert_int_eq(aw_barrier_broken(b), 0);
    /* A waiter cancelled leaves the barrier. */
    w1 = aw_barrier_wait(b);
    aw_future_cancel(w1, NULL);
    ck_assert_int_eq(aw_barrier_n_waiting(b), 0);
    aw_future_unref(w1);
    aw_barrier_free(b);
    ck_assert_ptr_null(aw_barrier_new(loop, 0));
}
END_TEST

START_TEST(barrier_parties_at_int_max)
{
    aw_barrier *b = aw_barrier_new(loop, INT_MAX);
    aw_future *w = aw_barrier_wait(b);

    ck_assert_int_eq(aw_barrier_parties(b), INT_MAX);
    ck_assert_int_eq(aw_barrier_n_waiting(b), 1);
    ck_assert_int_eq(aw_future_done(w), 0);
    aw_barrier_free(b);
    aw_future_unref(w);
    ck_assert_ptr_null(aw_barrier_new(loop, INT_MIN));
}
END_TEST

/* ---- Barrier, after asyncio's BarrierTests ------------------------------------------ */

/* What the parties share (asyncio's closures). */
static struct {
    aw_barrier *b2;
    int n;          /* parties: asyncio's self.N */
    int count;      /* parties past their first wait */
    int rewait;
    int r1, r2, r3; /* asyncio's results1, results2, results3 */
} bx;

static void
bx_start(int n)
{
    reset();
    memset(&bx, 0, sizeof(bx));
    bx.n = n;
    ctx.barrier = aw_barrier_new(loop, n);
    ck_assert_ptr_nonnull(ctx.barrier);
}

/* n parties of fn run to their end; each ends without error. */
static void
run_parties(aw_task_fn fn, int n)
{
    aw_task *t[8];
    int i;

    ck_assert_int_le(n, 8);
    for (i = 0; i < n; i++)
        t[i] = spawn(fn, i + 1);
    drain();
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(aw_future_error(t[i]), 0);
        aw_future_unref(t[i]);
    }
}

/* order holds each of 0 .. n-1 once. */
static void
assert_indices(int n)
{
    int i, seen = 0;

    ck_assert_int_eq(order.n, n);
    for (i = 0; i < n; i++)
        seen |= 1 << order.items[i];
    ck_assert_int_eq(seen, (1 << n) - 1);
}

static void
bx_end(int broken)
{
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 0);
    ck_assert_int_eq(aw_barrier_broken(ctx.barrier), broken);
    aw_barrier_free(ctx.barrier);
    aw_barrier_free(bx.b2);
}

/* Waits once (twice with bx.rewait), recording its last index. */
static AW_TASK(barrier_waiter, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT_INT(aw_barrier_wait(ctx.barrier), &f->index);
    bx.r1++;
    if (bx.rewait) {
        AW_AWAIT_INT(aw_barrier_wait(ctx.barrier), &f->index);
        bx.r2++;
    }
    record((int)f->index);
    AW_END();
}

START_TEST(barrier_parties)
{
    ck_assert_ptr_null(aw_barrier_new(loop, 0));
    ck_assert_ptr_null(aw_barrier_new(loop, -4));
    bx_start(5);
    ck_assert_int_eq(aw_barrier_parties(ctx.barrier), 5);
    bx_end(0);
}
END_TEST

START_TEST(barrier_context_manager)
{
    bx_start(3);
    run_parties(barrier_waiter, 3);
    assert_indices(3);
    bx_end(0);
}
END_TEST

START_TEST(barrier_filling_one_task)
{
    static const int want[] = {0};

    bx_start(1);
    run_parties(barrier_waiter, 1);
    assert_order(want, 1);
    bx_end(0);
}
END_TEST

START_TEST(barrier_filling_one_task_twice)
{
    static const int want[] = {0, 0};
    aw_task *t1, *t2;

    bx_start(1);
    t1 = spawn(barrier_waiter, 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 0);
    t2 = spawn(barrier_waiter, 2);
    drain();
    assert_order(want, 2);
    ck_assert_int_eq(aw_future_error(t1), 0);
    ck_assert_int_eq(aw_future_error(t2), 0);
    aw_future_unref(t1);
    aw_future_unref(t2);
    bx_end(0);
}
END_TEST

START_TEST(barrier_filling_task_by_task)
{
    aw_task *t[3];
    int i;

    bx_start(3);
    for (i = 0; i < 3; i++) {
        t[i] = spawn(barrier_waiter, i + 1);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        if (i < 2)
            ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), i + 1);
    }
    drain();
    assert_indices(3);
    unref_all(t, 3);
    bx_end(0);
}
END_TEST

START_TEST(barrier_filling_tasks_wait_twice)
{
    bx_start(5);
    bx.rewait = 1;
    run_parties(barrier_waiter, 5);
    ck_assert_int_eq(bx.r1, 5);
    ck_assert_int_eq(bx.r2, 5);
    bx_end(0);
}
END_TEST

START_TEST(barrier_filling_tasks_check_return_value)
{
    bx_start(5);
    bx.rewait = 1;
    run_parties(barrier_waiter, 5);
    assert_indices(5); /* the second round's */
    bx_end(0);
}
END_TEST

/* asyncio's test_draining_state, from callback code: the parties a round
 * released are in the barrier until they read their index (or drop
 * their future); arrivals meanwhile wait, uncounted, and enter once the
 * last has left. */
START_TEST(barrier_draining_state)
{
    aw_future *w[3], *x, *y, *z;
    intptr_t i;
    int k;

    bx_start(3);
    for (k = 0; k < 3; k++)
        w[k] = aw_barrier_wait(ctx.barrier);
    ck_assert_int_eq(aw_future_done(w[0]) + aw_future_done(w[2]), 2);
    x = aw_barrier_wait(ctx.barrier); /* nobody has left */
    ck_assert_int_eq(aw_future_done(x), 0);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 0);
    for (k = 0; k < 2; k++) {
        ck_assert_int_eq(aw_future_result_int(w[k], &i), 0);
        ck_assert_int_eq(i, k);
    }
    y = aw_barrier_wait(ctx.barrier); /* the last has not left */
    ck_assert_int_eq(aw_future_done(y), 0);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 0);
    ck_assert_int_eq(aw_future_result_int(w[2], &i), 0);
    ck_assert_int_eq(i, 2);
    /* All have left: x and y enter, z fills the round. */
    z = aw_barrier_wait(ctx.barrier);
    ck_assert_int_eq(aw_future_result_int(x, &i), 0);
    ck_assert_int_eq(i, 0);
    ck_assert_int_eq(aw_future_result_int(y, &i), 0);
    ck_assert_int_eq(i, 1);
    unref_all(w, 3);
    /* z has not read its index: dropping the futures is leaving too. */
    aw_future_unref(w[0] = aw_barrier_wait(ctx.barrier));
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 0);
    aw_future_unref(x);
    aw_future_unref(y);
    aw_future_unref(z);
    w[0] = aw_barrier_wait(ctx.barrier);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 1);
    aw_future_cancel(w[0], NULL);
    aw_future_unref(w[0]);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    bx_end(0);
}
END_TEST

static AW_TASK(draining_blocker, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    if (bx.rewait > 0) {
        /* Waits again at once: blocked until the others have left. */
        bx.rewait--;
        AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    } else {
        AW_AWAIT(aw_barrier_wait(bx.b2), NULL);
        AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    }
    (void)f;
    AW_END();
}

START_TEST(barrier_blocking_tasks_while_draining)
{
    bx_start(5);
    bx.rewait = 2;
    bx.b2 = aw_barrier_new(loop, 5 - 2);
    run_parties(draining_blocker, 5);
    ck_assert_int_eq(aw_barrier_n_waiting(bx.b2), 0);
    bx_end(0);
}
END_TEST

START_TEST(barrier_filling_tasks_cancel_one)
{
    aw_task *t[4];
    int i;

    bx_start(3);
    t[0] = spawn(barrier_waiter, 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 1);
    t[1] = spawn(barrier_waiter, 2);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 2);
    aw_future_cancel(t[0], NULL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 1);
    ck_assert_int_eq(aw_future_cancelled(t[0]), 1);
    t[2] = spawn(barrier_waiter, 3);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 2);
    t[3] = spawn(barrier_waiter, 4);
    drain();
    for (i = 1; i < 4; i++)
        ck_assert_int_eq(aw_future_error(t[i]), 0);
    ck_assert_int_eq(bx.r1, 3);
    unref_all(t, 4);
    bx_end(0);
}
END_TEST

START_TEST(reset_barrier)
{
    bx_start(1);
    ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
    bx_end(0);
}
END_TEST

static AW_TASK(broken_counter, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
    ck_assert_int_eq(f->rc, AW_EBROKEN);
    bx.r1++;
    AW_END();
}

START_TEST(reset_barrier_while_tasks_waiting)
{
    aw_task *t[4];
    int i;

    bx_start(5);
    for (i = 0; i < 4; i++)
        t[i] = spawn(broken_counter, i + 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), 4);
    ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
    drain();
    ck_assert_int_eq(bx.r1, 4);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(aw_future_error(t[i]), 0);
    unref_all(t, 4);
    bx_end(0);
}
END_TEST

/* The third party to leave resets: the two still in break. */
static AW_TASK(half_drainer, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
    if (f->rc == AW_EBROKEN)
        bx.r1++;
    else if (++bx.count == bx.n - bx.n / 2)
        ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
    AW_END();
}

START_TEST(reset_barrier_when_tasks_half_draining)
{
    bx_start(5);
    run_parties(half_drainer, 5);
    ck_assert_int_eq(bx.r1, 5 / 2);
    bx_end(0);
}
END_TEST

static AW_TASK(reset_half_blocking, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
    if (f->rc == AW_EBROKEN) {
        bx.r1++; /* still in when reset: broken, and waits again */
        AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    } else if (++bx.count > bx.n / 2) {
        ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
        AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    } else {
        /* Blocked while the others drain: the reset does not break it. */
        AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
        if (f->rc == AW_EBROKEN)
            bx.r2++;
    }
    AW_END();
}

START_TEST(reset_barrier_when_tasks_half_draining_half_blocking)
{
    bx_start(5);
    run_parties(reset_half_blocking, 5);
    ck_assert_int_eq(bx.r1, 5 / 2);
    ck_assert_int_eq(bx.r2, 0);
    bx_end(0);
}
END_TEST

static AW_TASK(rewaiter, struct fr *f)
{
    AW_BEGIN();
    if (f->id > 0) {
        AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
        if (f->rc == AW_EBROKEN)
            bx.r1++;
    }
    AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    bx.r2++;
    AW_END();
}

START_TEST(reset_barrier_while_tasks_waiting_and_waiting_again)
{
    aw_task *t[5];
    int i;

    bx_start(5);
    for (i = 0; i < 4; i++)
        t[i] = spawn(rewaiter, i + 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    t[4] = spawn(rewaiter, 0); /* waits once */
    drain();
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(aw_future_error(t[i]), 0);
    ck_assert_int_eq(bx.r1, 4);
    ck_assert_int_eq(bx.r2, 5);
    unref_all(t, 5);
    bx_end(0);
}
END_TEST

static AW_TASK(reset_while_draining, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    if (++bx.count == bx.n) {
        /* The last to leave: the others already wait for the next
         * round, and the reset does not break them. */
        ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
        AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    } else {
        AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
        if (f->rc == 0)
            bx.r1++;
        else
            bx.r2++;
    }
    AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
    bx.r3++;
    AW_END();
}

START_TEST(reset_barrier_while_tasks_draining)
{
    bx_start(5);
    run_parties(reset_while_draining, 5);
    ck_assert_int_eq(bx.r1, 4);
    ck_assert_int_eq(bx.r2, 0);
    ck_assert_int_eq(bx.r3, 5);
    bx_end(0);
}
END_TEST

START_TEST(abort_barrier)
{
    bx_start(1);
    ck_assert_int_eq(aw_barrier_abort(ctx.barrier), 0);
    bx_end(1);
}
END_TEST

static AW_TASK(abort_half_blocking, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
    if (f->rc == AW_EBROKEN) {
        bx.r1++; /* had not left when aborted */
    } else if (++bx.count > bx.n / 2) {
        ck_assert_int_eq(aw_barrier_abort(ctx.barrier), 0);
    } else {
        /* Blocked while the others drain: the abort breaks it. */
        AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
        if (f->rc == AW_EBROKEN)
            bx.r2++;
    }
    AW_END();
}

START_TEST(abort_barrier_when_tasks_half_draining_half_blocking)
{
    bx_start(5);
    run_parties(abort_half_blocking, 5);
    ck_assert_int_eq(bx.r1, 5 / 2);
    ck_assert_int_eq(bx.r2, 5 - 5 / 2 - 1);
    bx_end(1);
}
END_TEST

/* Index n/2 fails (asyncio's RuntimeError) and aborts. */
static AW_TASK(abort_on_failure, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), &f->p);
    if (f->rc == 0 && (intptr_t)f->p == bx.n / 2) {
        ck_assert_int_eq(aw_barrier_abort(ctx.barrier), 0);
    } else {
        if (f->rc == 0) {
            AW_TRY_AWAIT(f->rc, aw_barrier_wait(ctx.barrier), NULL);
        }
        if (f->rc == 0)
            bx.r1++;
        else if (f->rc == AW_EBROKEN)
            bx.r2++;
    }
    if (bx.b2 != NULL) {
        /* Everyone has left the first barrier before the reset, and
         * nobody enters it again before. */
        AW_AWAIT_INT(aw_barrier_wait(bx.b2), &f->index);
        if (f->index == bx.n / 2)
            ck_assert_int_eq(aw_barrier_reset(ctx.barrier), 0);
        AW_AWAIT(aw_barrier_wait(bx.b2), NULL);
        AW_AWAIT(aw_barrier_wait(ctx.barrier), NULL);
        bx.r3++;
    }
    AW_END();
}

START_TEST(abort_barrier_when_exception)
{
    bx_start(5);
    run_parties(abort_on_failure, 5);
    ck_assert_int_eq(bx.r1, 0);
    ck_assert_int_eq(bx.r2, 4);
    bx_end(1);
}
END_TEST

START_TEST(abort_barrier_when_exception_then_resetting)
{
    bx_start(5);
    bx.b2 = aw_barrier_new(loop, 5);
    run_parties(abort_on_failure, 5);
    ck_assert_int_eq(bx.r1, 0);
    ck_assert_int_eq(bx.r2, 4);
    ck_assert_int_eq(bx.r3, 5);
    bx_end(0);
}
END_TEST

/* ---- a grant handed to a waiter cancelled before it resumed --------------------------- */

/* One primitive, driven the same way for each point of cancellation. */
struct grantee {
    void (*setup)(void);      /* made, and held by this callback code */
    aw_future *(*pre)(void);  /* awaited first by the waiter, or NULL */
    aw_future *(*wait)(void); /* what the waiter awaits */
    void (*give)(void);       /* hand it to the first waiter */
    void (*after)(void);      /* the waiter is done with it */
    void (*check)(void);      /* it is free again */
    void (*teardown)(void);
};

static void
lk_setup(void)
{
    ctx.lock = aw_lock_new(loop);
    ck_assert_int_eq(aw_lock_try_acquire(ctx.lock), 0);
}
static aw_future *lk_wait(void) { return aw_lock_acquire(ctx.lock); }
static void lk_give(void) { ck_assert_int_eq(aw_lock_release(ctx.lock), 0); }
static void lk_check(void) { ck_assert_int_eq(aw_lock_locked(ctx.lock), 0); }
static void lk_teardown(void) { aw_lock_free(ctx.lock); }

static void
sem_setup(void)
{
    ctx.sem = aw_semaphore_new(loop, 0);
}
static void
bsem_setup(void)
{
    ctx.sem = aw_semaphore_new_bounded(loop, 1);
    ck_assert_int_eq(aw_semaphore_try_acquire(ctx.sem), 0);
}
static aw_future *sem_wait(void) { return aw_semaphore_acquire(ctx.sem); }
static void sem_give(void) { ck_assert_int_eq(aw_semaphore_release(ctx.sem), 0); }
static void sem_check(void) { ck_assert_int_eq(aw_semaphore_value(ctx.sem), 1); }
static void sem_teardown(void) { aw_semaphore_free(ctx.sem); }

static void
cond_setup(void)
{
    ctx.cond = aw_condition_new(loop, NULL);
}
static aw_future *
cond_pre(void)
{
    return aw_lock_acquire(aw_condition_lock(ctx.cond));
}
static aw_future *cond_wait_(void) { return aw_condition_wait(ctx.cond); }
static void
cond_give(void)
{
    /* Both notified; the first re-acquires the lock. */
    ck_assert_int_eq(aw_lock_try_acquire(aw_condition_lock(ctx.cond)), 0);
    ck_assert_int_eq(aw_condition_notify_all(ctx.cond), 2);
    ck_assert_int_eq(aw_lock_release(aw_condition_lock(ctx.cond)), 0);
}
static void
cond_after(void)
{
    ck_assert_int_eq(aw_lock_release(aw_condition_lock(ctx.cond)), 0);
}
static void
cond_check(void)
{
    ck_assert_int_eq(aw_lock_locked(aw_condition_lock(ctx.cond)), 0);
}
static void cond_teardown(void) { aw_condition_free(ctx.cond); }

static const struct grantee grantees[] = {
    {lk_setup, NULL, lk_wait, lk_give, lk_give, lk_check, lk_teardown},
    {sem_setup, NULL, sem_wait, sem_give, sem_give, sem_check, sem_teardown},
    {bsem_setup, NULL, sem_wait, sem_give, sem_give, sem_check,
     sem_teardown},
    {cond_setup, cond_pre, cond_wait_, cond_give, cond_after, cond_check,
     cond_teardown},
};
static const struct grantee *gk;

static AW_TASK(grantee_task, struct fr *f)
{
    AW_BEGIN();
    if (gk->pre != NULL)
        AW_AWAIT(gk->pre(), NULL);
    AW_AWAIT(gk->wait(), NULL);
    record(f->id);
    gk->after();
    AW_END();
}

/* Hands over and cancels the victim in the same step. */
static AW_TASK(give_and_cancel, struct fr *f)
{
    AW_BEGIN();
    if (f->id == 0) {
        gk->give();
        aw_future_cancel(ctx.victim, NULL);
    } else {
        aw_future_cancel(ctx.victim, NULL);
        gk->give();
    }
    AW_END();
}

enum point {
    GRANTED_THEN_CANCELLED, /* from outside, before the waiter runs */
    SAME_STEP,              /* the giver cancels it in the same step */
    CANCEL_THEN_GIVE,       /* the giver cancels first, then gives */
    POINTS
};

static void
grant_cancel_run(const struct grantee *k, enum point pt)
{
    static const int want[] = {2};
    aw_task *t[2], *giver = NULL;
    int i;

    reset();
    gk = k;
    k->setup();
    t[0] = spawn(grantee_task, 1);
    t[1] = spawn(grantee_task, 2);
    for (i = 0; i < 4; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT); /* both waiting */
    ctx.victim = t[0];
    if (pt == GRANTED_THEN_CANCELLED) {
        k->give();
        aw_future_cancel(t[0], NULL);
    } else {
        giver = spawn(give_and_cancel, pt == SAME_STEP ? 0 : 1);
    }
    drain();
    ck_assert_msg(aw_future_cancelled(t[0]), "point %d", pt);
    assert_order(want, 1); /* the next waiter got it: nothing lost */
    k->check();
    unref_all(t, 2);
    aw_future_unref(giver);
    k->teardown();
}

/* From callback code: the grant future dropped unread. */
static void
grant_dropped_run(const struct grantee *k)
{
    aw_future *pre[2] = {NULL, NULL}, *w[2];
    int i;

    gk = k;
    k->setup();
    for (i = 0; i < 2; i++) {
        if (k->pre != NULL) {
            pre[i] = k->pre();
            ck_assert_int_eq(aw_future_error(pre[i]), 0);
        }
        w[i] = k->wait();
        ck_assert_int_eq(aw_future_done(w[i]), 0);
    }
    k->give();
    ck_assert_int_eq(aw_future_done(w[0]), 1);
    aw_future_unref(w[0]); /* unread: it goes on to w[1] */
    ck_assert_int_eq(aw_future_done(w[1]), 1);
    ck_assert_int_eq(aw_future_error(w[1]), 0);
    k->after();
    k->check();
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(w[1]);
    aw_future_unref(pre[0]);
    aw_future_unref(pre[1]);
    k->teardown();
}

START_TEST(lock_grant_cancelled_before_resume_goes_to_next)
{
    int pt;

    for (pt = 0; pt < POINTS; pt++)
        grant_cancel_run(&grantees[0], (enum point)pt);
    grant_dropped_run(&grantees[0]);
}
END_TEST

START_TEST(semaphore_grant_cancelled_before_resume_goes_to_next)
{
    int pt;

    for (pt = 0; pt < POINTS; pt++)
        grant_cancel_run(&grantees[1], (enum point)pt);
    grant_dropped_run(&grantees[1]);
}
END_TEST

START_TEST(bounded_semaphore_grant_cancelled_before_resume_goes_to_next)
{
    int pt;

    for (pt = 0; pt < POINTS; pt++)
        grant_cancel_run(&grantees[2], (enum point)pt);
    grant_dropped_run(&grantees[2]);
}
END_TEST

START_TEST(condition_reacquire_cancelled_before_resume_goes_to_next)
{
    /* Not CANCEL_THEN_GIVE: a wait cancelled before its notify
     * re-acquires the lock itself (condition_wait_cancelled_reacquires_lock). */
    grant_cancel_run(&grantees[3], GRANTED_THEN_CANCELLED);
    grant_cancel_run(&grantees[3], SAME_STEP);
    grant_dropped_run(&grantees[3]);
}
END_TEST

/* ---- bad input ---------------------------------------------------------------------- */

static int
never(void *arg)
{
    (void)arg;
    return 0;
}

/* Every public call of sync.h with NULL, a closed loop, out-of-range
 * values: an error code, no crash, the object unchanged. */
START_TEST(sync_bad_arguments)
{
    aw_loop *other, *closed;
    aw_lock *l, *foreign;
    aw_future *f;

    ck_assert_int_eq(aw_loop_new(&closed), 0);
    ck_assert_int_eq(aw_loop_close(closed), 0);
    ck_assert_ptr_null(aw_lock_new(NULL));
    ck_assert_ptr_null(aw_lock_new(closed));
    ck_assert_ptr_null(aw_event_new(NULL));
    ck_assert_ptr_null(aw_event_new(closed));
    ck_assert_ptr_null(aw_semaphore_new(NULL, 1));
    ck_assert_ptr_null(aw_semaphore_new(closed, 1));
    ck_assert_ptr_null(aw_semaphore_new(loop, INT_MIN));
    ck_assert_ptr_null(aw_semaphore_new_bounded(NULL, 1));
    ck_assert_ptr_null(aw_semaphore_new_bounded(loop, -1));
    ck_assert_ptr_null(aw_condition_new(NULL, NULL));
    ck_assert_ptr_null(aw_condition_new(closed, NULL));
    ck_assert_ptr_null(aw_barrier_new(NULL, 1));
    ck_assert_ptr_null(aw_barrier_new(closed, 1));
    ck_assert_ptr_null(aw_barrier_new(loop, -3));
    ck_assert_int_eq(aw_loop_free(closed), 0);

    /* A condition over another loop's lock. */
    ck_assert_int_eq(aw_loop_new(&other), 0);
    foreign = aw_lock_new(other);
    ck_assert_ptr_null(aw_condition_new(loop, foreign));
    aw_lock_free(foreign);
    ck_assert_int_eq(aw_loop_free(other), 0);

    aw_lock_free(NULL);
    aw_event_free(NULL);
    aw_semaphore_free(NULL);
    aw_condition_free(NULL);
    aw_barrier_free(NULL);

    ck_assert_ptr_null(aw_lock_acquire(NULL));
    ck_assert_int_eq(aw_lock_try_acquire(NULL), -EINVAL);
    ck_assert_int_eq(aw_lock_release(NULL), -EINVAL);
    ck_assert_int_eq(aw_lock_locked(NULL), 0);

    ck_assert_int_eq(aw_event_set(NULL), -EINVAL);
    ck_assert_int_eq(aw_event_clear(NULL), -EINVAL);
    ck_assert_int_eq(aw_event_is_set(NULL), 0);
    ck_assert_ptr_null(aw_event_wait(NULL));

    ck_assert_ptr_null(aw_semaphore_acquire(NULL));
    ck_assert_int_eq(aw_semaphore_try_acquire(NULL), -EINVAL);
    ck_assert_int_eq(aw_semaphore_release(NULL), -EINVAL);
    ck_assert_int_eq(aw_semaphore_value(NULL), -EINVAL);

    ck_assert_ptr_null(aw_condition_lock(NULL));
    ck_assert_ptr_null(aw_condition_wait(NULL));
    ck_assert_ptr_null(aw_condition_wait_for(NULL, never, NULL));
    ck_assert_int_eq(aw_condition_notify(NULL, 1), -EINVAL);
    ck_assert_int_eq(aw_condition_notify_all(NULL), -EINVAL);

    ck_assert_ptr_null(aw_barrier_wait(NULL));
    ck_assert_int_eq(aw_barrier_reset(NULL), -EINVAL);
    ck_assert_int_eq(aw_barrier_abort(NULL), -EINVAL);
    ck_assert_int_eq(aw_barrier_broken(NULL), 0);
    ck_assert_int_eq(aw_barrier_n_waiting(NULL), -EINVAL);
    ck_assert_int_eq(aw_barrier_parties(NULL), -EINVAL);

    /* A condition: a NULL predicate, a negative count, no lock held. */
    ctx.cond = aw_condition_new(loop, NULL);
    l = aw_condition_lock(ctx.cond);
    f = aw_condition_wait_for(ctx.cond, NULL, NULL);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_condition_wait_for(ctx.cond, never, NULL);
    ck_assert_int_eq(aw_future_error(f), -EPERM); /* lock not held */
    aw_future_unref(f);
    ck_assert_int_eq(aw_lock_try_acquire(l), 0);
    f = aw_condition_wait(ctx.cond);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, -1), -EINVAL);
    ck_assert_int_eq(aw_future_done(f), 0); /* still waiting */
    ck_assert_int_eq(aw_lock_locked(l), 0);  /* the wait let go */
    aw_future_unref(f);
    aw_condition_free(ctx.cond);
}
END_TEST

/* Freed, kept in memory by a future still held: nothing new is taken. */
START_TEST(freed_primitives_refuse_new_operations)
{
    aw_future *e, *s, *b, *c, *hold, *f;
    aw_condition *cond;

    ctx.event = aw_event_new(loop);
    ctx.sem = aw_semaphore_new(loop, 0);
    ctx.barrier = aw_barrier_new(loop, 2);
    cond = aw_condition_new(loop, NULL);
    e = aw_event_wait(ctx.event);
    s = aw_semaphore_acquire(ctx.sem);
    b = aw_barrier_wait(ctx.barrier);
    hold = relock(aw_condition_lock(cond), NULL);
    c = aw_condition_wait(cond);
    aw_event_free(ctx.event);
    aw_semaphore_free(ctx.sem);
    aw_barrier_free(ctx.barrier);
    aw_condition_free(cond);
    ck_assert_int_eq(aw_event_set(ctx.event), -EINVAL);
    ck_assert_int_eq(aw_event_clear(ctx.event), -EINVAL);
    f = aw_event_wait(ctx.event);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_semaphore_try_acquire(ctx.sem), -EINVAL);
    ck_assert_int_eq(aw_semaphore_value(ctx.sem), -EINVAL);
    f = aw_semaphore_acquire(ctx.sem);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_barrier_reset(ctx.barrier), -EINVAL);
    ck_assert_int_eq(aw_barrier_abort(ctx.barrier), -EINVAL);
    ck_assert_int_eq(aw_barrier_n_waiting(ctx.barrier), -EINVAL);
    f = aw_barrier_wait(ctx.barrier);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_condition_notify(cond, 1), -EINVAL);
    ck_assert_ptr_null(aw_condition_lock(cond));
    f = aw_condition_wait(cond);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(e);
    aw_future_unref(s);
    aw_future_unref(b);
    aw_future_unref(c);
    aw_future_unref(hold);
}
END_TEST

/* notify by a task that does not hold the lock its owner holds. */
static AW_TASK(lock_keeper, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_lock_acquire(aw_condition_lock(ctx.cond)), NULL);
    AW_AWAIT(aw_future_ref(ctx.go), NULL);
    aw_lock_release(aw_condition_lock(ctx.cond));
    (void)f;
    AW_END();
}

static AW_TASK(bad_notifier, struct fr *f)
{
    AW_BEGIN();
    record(aw_condition_notify(ctx.cond, 1));
    record(aw_condition_notify_all(ctx.cond));
    (void)f;
    AW_END();
}

START_TEST(condition_notify_by_other_task_refused)
{
    static const int want[] = {-EPERM, -EPERM};
    aw_task *k, *n;

    reset();
    ctx.cond = aw_condition_new(loop, NULL);
    ctx.go = aw_future_new(loop);
    k = spawn(lock_keeper, 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    n = spawn(bad_notifier, 2);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    assert_order(want, 2);
    aw_future_set_result_int(ctx.go, 1);
    drain();
    aw_future_unref(k);
    aw_future_unref(n);
    aw_future_unref(ctx.go);
    aw_condition_free(ctx.cond);
}
END_TEST

/* notify and notify_all by a task that holds nothing: refused. */
static AW_TASK(unheld_notifier, struct fr *f)
{
    AW_BEGIN();
    record(aw_condition_notify(ctx.cond, 1));
    record(aw_condition_notify_all(ctx.cond));
    (void)f;
    AW_END();
}

/* asyncio's test_notify_unacquired: notify without the lock held fails,
 * whoever calls (callback code, a task that holds nothing, callback code
 * while a task holds it), and wakes nobody. */
START_TEST(notify_unacquired)
{
    static const int want[] = {-EPERM, -EPERM};
    aw_future *hold, *w;
    aw_task *t;
    aw_lock *l;

    reset();
    ctx.cond = aw_condition_new(loop, NULL);
    l = aw_condition_lock(ctx.cond);
    /* Nobody holds it. */
    ck_assert_int_eq(aw_condition_notify(ctx.cond, 1), -EPERM);
    ck_assert_int_eq(aw_condition_notify_all(ctx.cond), -EPERM);
    t = spawn(unheld_notifier, 1);
    drain();
    assert_order(want, 2);
    aw_future_unref(t);

    /* A waiter, then the lock held by a task: callback code may not. */
    hold = relock(l, NULL);
    w = aw_condition_wait(ctx.cond);
    ck_assert_int_eq(aw_lock_locked(l), 0);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, 1), -EPERM);
    ck_assert_int_eq(aw_condition_notify_all(ctx.cond), -EPERM);
    ctx.go = aw_future_new(loop);
    t = spawn(lock_keeper, 2);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_lock_locked(l), 1);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, 1), -EPERM);
    ck_assert_int_eq(aw_condition_notify_all(ctx.cond), -EPERM);
    aw_future_set_result_int(ctx.go, 1);
    drain();
    aw_future_unref(t);
    aw_future_unref(ctx.go);
    ck_assert_int_eq(aw_future_done(w), 0); /* nobody was woken */

    /* Held by this callback code: it may. */
    ck_assert_int_eq(aw_lock_try_acquire(l), 0);
    ck_assert_int_eq(aw_condition_notify(ctx.cond, 1), 1);
    ck_assert_int_eq(aw_lock_release(l), 0);
    ck_assert_int_eq(aw_future_error(w), 0);
    ck_assert_int_eq(aw_lock_release(l), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(w);
    aw_future_unref(hold);
    aw_condition_free(ctx.cond);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = aw_test_tcase("sync");

    tcase_add_test(tc, lock_fifo_fairness);
    tcase_add_test(tc, lock_release_errors);
    tcase_add_test(tc, lock_waiter_cancelled_before_grant);
    tcase_add_test(tc, lock_waiter_cancelled_after_grant_loses_no_wakeup);
    tcase_add_test(tc, lock_from_callbacks);
    tcase_add_test(tc, lock_freed_in_finally_after_grant);
    tcase_add_test(tc, task_ending_with_lock_reported_and_released);
    tcase_add_test(tc, task_ending_after_lock_freed_reports_nothing);
    tcase_add_test(tc, task_ending_with_lock_out_of_memory_unreported);
    tcase_add_test(tc, lock_free_then_release_futures);
    tcase_add_test(tc, lock_release_futures_then_free);
    tcase_add_test(tc, lock_freed_refuses_new_operations);
    tcase_add_test(tc, condition_free_then_release_futures);
    tcase_add_test(tc, condition_release_futures_then_free);
    tcase_add_test(tc, semaphore_free_then_release_futures);
    tcase_add_test(tc, semaphore_release_futures_then_free);
    tcase_add_test(tc, event_and_barrier_free_then_release_futures);
    tcase_add_test(tc, event_and_barrier_release_futures_then_free);
    tcase_add_test(tc, event_set_wakes_every_waiter);
    tcase_add_test(tc, free_cancels_waiters);
    tcase_add_test(tc, semaphore_fifo_and_value);
    tcase_add_test(tc, bounded_semaphore_release_beyond_bound);
    tcase_add_test(tc, semaphore_cancelled_after_grant_loses_no_wakeup);
    tcase_add_test(tc, semaphore_release_at_int_max_overflows);
    tcase_add_test(tc, condition_notify_and_notify_all);
    tcase_add_test(tc, condition_wait_for_predicate);
    tcase_add_test(tc, condition_wait_cancelled_reacquires_lock);
    tcase_add_test(tc, condition_wait_without_lock_refused);
    tcase_add_test(tc, notify_unacquired);
    tcase_add_test(tc, condition_wait_cancelled_dropped_unread_releases_lock);
    tcase_add_test(tc, barrier_n_tasks_several_rounds);
    tcase_add_test(tc, barrier_abort_and_reset);
    tcase_add_test(tc, barrier_parties_at_int_max);
    tcase_add_test(tc, barrier_parties);
    tcase_add_test(tc, barrier_context_manager);
    tcase_add_test(tc, barrier_filling_one_task);
    tcase_add_test(tc, barrier_filling_one_task_twice);
    tcase_add_test(tc, barrier_filling_task_by_task);
    tcase_add_test(tc, barrier_filling_tasks_wait_twice);
    tcase_add_test(tc, barrier_filling_tasks_check_return_value);
    tcase_add_test(tc, barrier_draining_state);
    tcase_add_test(tc, barrier_blocking_tasks_while_draining);
    tcase_add_test(tc, barrier_filling_tasks_cancel_one);
    tcase_add_test(tc, reset_barrier);
    tcase_add_test(tc, reset_barrier_while_tasks_waiting);
    tcase_add_test(tc, reset_barrier_when_tasks_half_draining);
    tcase_add_test(tc, reset_barrier_when_tasks_half_draining_half_blocking);
    tcase_add_test(tc, reset_barrier_while_tasks_waiting_and_waiting_again);
    tcase_add_test(tc, reset_barrier_while_tasks_draining);
    tcase_add_test(tc, abort_barrier);
    tcase_add_test(tc, abort_barrier_when_tasks_half_draining_half_blocking);
    tcase_add_test(tc, abort_barrier_when_exception);
    tcase_add_test(tc, abort_barrier_when_exception_then_resetting);
    tcase_add_test(tc, sync_bad_arguments);
    tcase_add_test(tc, freed_primitives_refuse_new_operations);
    tcase_add_test(tc, condition_notify_by_other_task_refused);
    tcase_add_test(tc, lock_grant_cancelled_before_resume_goes_to_next);
    tcase_add_test(tc, semaphore_grant_cancelled_before_resume_goes_to_next);
    tcase_add_test(tc,
                   bounded_semaphore_grant_cancelled_before_resume_goes_to_next);
    tcase_add_test(tc,
                   condition_reacquire_cancelled_before_resume_goes_to_next);
    suite_add_tcase(s, tc);
    return s;
}

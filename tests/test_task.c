/* SPDX-License-Identifier: MIT */
/* test_task.c: tasks, after CPython's test_asyncio/test_tasks.py,
 * test_taskgroups.py and test_timeouts.py where they apply. */
#include "config.h"

#define _GNU_SOURCE 1
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static int cleanups, frames_freed;

static void
reset(void)
{
    memset(&order, 0, sizeof(order));
    cleanups = 0;
    frames_freed = 0;
}

/* The frame every test task uses. */
struct fr {
    aw_future *in;   /* what to await (taken at the first await) */
    aw_future *in2;
    intptr_t value;
    int rc, rc2;
    double delay;
    void *p;
    aw_timeout *to, *to2;
    aw_task_group *g;
    int id;
};

static void
free_frame(void *p)
{
    struct fr *f = p;

    frames_freed++;
    aw_future_unref(f->in);
    aw_future_unref(f->in2);
    free(f);
}

/* For tests that read the frame after the task ended: the task releases
 * what it holds, the test frees it. */
static void
keep_frame(void *p)
{
    struct fr *f = p;

    frames_freed++;
    aw_future_unref(f->in);
    aw_future_unref(f->in2);
    f->in = f->in2 = NULL;
}

static struct fr *
frame(aw_future *in)
{
    struct fr *f = calloc(1, sizeof(*f));

    ck_assert_ptr_nonnull(f);
    f->in = in;
    return f;
}

/* Take the frame's future for an await (the task takes it over). */
static aw_future *
take(aw_future **slot)
{
    aw_future *f = *slot;

    *slot = NULL;
    return f;
}

static aw_task *
spawn(aw_task_fn fn, struct fr *f)
{
    aw_task *t = aw_task_new(loop, fn, f, free_frame);

    ck_assert_ptr_nonnull(t);
    ck_assert(aw_is_task(t));
    return t;
}

static aw_task *
spawn_keep(aw_task_fn fn, struct fr *f)
{
    aw_task *t = aw_task_new(loop, fn, f, keep_frame);

    ck_assert(aw_is_task(t));
    return t;
}

static int
settle_cb(aw_loop *l, void *arg)
{
    (void)l;
    return aw_future_set_result_int(arg, 5);
}

static void
run(aw_future *f)
{
    aw_loop_run_until_complete(loop, f);
    ck_assert(aw_future_done(f));
}

/* ---- awaiting ----------------------------------------------------------------- */

static AW_TASK(add_one, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT_INT(take(&f->in), &f->value);
    AW_RETURN_INT(f->value + 1);
    AW_END();
}

START_TEST(await_result)
{
    aw_future *in = aw_future_new(loop);
    aw_task *t = spawn(add_one, frame(aw_future_ref(in)));
    intptr_t v = 0;

    reset();
    ck_assert_int_eq(aw_loop_call_soon(loop, settle_cb, in, NULL), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, t), 0);
    ck_assert_int_eq(aw_future_result_int(t, &v), 0);
    ck_assert_int_eq(v, 6);
    ck_assert_int_eq(frames_freed, 1);
    aw_future_unref(t);
    aw_future_unref(in);
}
END_TEST

static AW_TASK(with_cleanup, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT_INT(take(&f->in), &f->value);
    record(1); /* not reached on error */
    AW_RETURN_INT(f->value);
    AW_FINALLY();
    cleanups++;
    AW_END();
}

START_TEST(await_error_propagates)
{
    aw_task *t;

    reset();
    t = spawn(with_cleanup, frame(aw_future_failed(loop, -EPIPE, "gone %d",
                                                   3)));
    ck_assert_int_eq(aw_loop_run_until_complete(loop, t), -EPIPE);
    ck_assert_int_eq(aw_future_state(t), AW_FUTURE_FAILED);
    ck_assert_str_eq(aw_future_message(t), "gone 3");
    ck_assert_int_eq(order.n, 0);
    ck_assert_int_eq(cleanups, 1);
    aw_future_unref(t);
}
END_TEST

static AW_TASK(try_await, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, take(&f->in), NULL);
    record(f->rc);
    AW_RETURN_INT(7);
    AW_END();
}

START_TEST(try_await_sees_error)
{
    aw_task *t;

    reset();
    capture_reports();
    t = spawn(try_await, frame(aw_future_failed(loop, -EPIPE, NULL)));
    ck_assert_int_eq(aw_loop_run_until_complete(loop, t), 0);
    ck_assert_int_eq(order.items[0], -EPIPE);
    aw_future_unref(t);
    ck_assert_int_eq(cap.calls, 0); /* the error was read */
}
END_TEST

START_TEST(cleanup_runs_on_each_outcome)
{
    aw_task *t;
    aw_future *in = aw_future_new(loop);

    reset();
    t = spawn(with_cleanup, frame(aw_future_resolved_int(loop, 4)));
    run(t);
    ck_assert_int_eq(cleanups, 1);
    ck_assert_int_eq(aw_future_error(t), 0);
    aw_future_unref(t);
    t = spawn(with_cleanup, frame(aw_future_failed(loop, -EIO, NULL)));
    run(t);
    ck_assert_int_eq(cleanups, 2);
    ck_assert_int_eq(aw_future_error(t), -EIO);
    aw_future_unref(t);
    t = spawn(with_cleanup, frame(aw_future_ref(in)));
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_future_cancel(t, "stop"), 0);
    ck_assert_int_eq(aw_future_cancelled(in), 1); /* the await cancelled */
    run(t);
    ck_assert_int_eq(cleanups, 3);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_str_eq(aw_future_message(t), "stop");
    aw_future_unref(t);
    aw_future_unref(in);
    ck_assert_int_eq(frames_freed, 3);
}
END_TEST

static int destroyed;

static void
count_destroy(void *p)
{
    (void)p;
    destroyed++;
}

static AW_TASK(return_ptr, struct fr *f)
{
    static int payload;

    AW_BEGIN();
    AW_YIELD();
    AW_RETURN(&payload, count_destroy);
    AW_END();
}

START_TEST(return_value)
{
    aw_task *t = spawn(return_ptr, frame(NULL));
    void *p = NULL;

    destroyed = 0;
    run(t);
    ck_assert_int_eq(aw_future_result(t, &p), 0);
    ck_assert_ptr_nonnull(p);
    aw_future_unref(t);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

static AW_TASK(parent_of, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT_INT(spawn(add_one, frame(take(&f->in))), &f->value);
    AW_RETURN_INT(f->value * 10);
    AW_END();
}

START_TEST(nested_tasks_awaiting_tasks)
{
    aw_task *t = spawn(parent_of, frame(aw_future_resolved_int(loop, 1)));
    intptr_t v = 0;

    run(t);
    ck_assert_int_eq(aw_future_result_int(t, &v), 0);
    ck_assert_int_eq(v, 20);
    aw_future_unref(t);
}
END_TEST

static int
log_soon(aw_loop *l, void *arg)
{
    (void)l;
    record((int)(intptr_t)arg);
    return 0;
}

static AW_TASK(settled_await, struct fr *f)
{
    AW_BEGIN();
    record(1);
    aw_loop_call_soon(aw_task_loop(AW_SELF()), log_soon, (void *)2, NULL);
    AW_AWAIT(aw_future_resolved_int(aw_task_loop(AW_SELF()), 0), NULL);
    record(3);
    AW_END();
}

/* Awaiting a settled future goes on at once, as asyncio does: no pass of
 * the loop in between. */
START_TEST(await_settled_future_continues_at_once)
{
    static const int want[] = {1, 3, 2};
    aw_task *t;

    reset();
    t = spawn(settled_await, frame(NULL));
    ck_assert_int_eq(order.n, 0); /* not run inside aw_task_new */
    run(t);
    ck_assert_int_ge(order.n, 2);
    assert_order(want, order.n < 3 ? order.n : 3);
    aw_future_unref(t);
}
END_TEST

static AW_TASK(many_settled_awaits, struct fr *f)
{
    AW_BEGIN();
    aw_loop_call_soon(aw_task_loop(AW_SELF()), log_soon, (void *)-1, NULL);
    for (f->id = 0; f->id < 200; f->id++) {
        AW_AWAIT(aw_future_resolved_int(aw_task_loop(AW_SELF()), 0), NULL);
        if (order.n == 0)
            f->value = f->id + 1; /* settled awaits before the other ran */
    }
    AW_END();
}

/* Unlike asyncio, a budget bounds it: after 64 settled awaits in a row the
 * task yields one pass, so that it cannot starve the loop. */
START_TEST(settled_await_budget_yields)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    reset();
    t = spawn_keep(many_settled_awaits, f);
    run(t);
    ck_assert_int_eq(order.n, 1); /* the other callback ran meanwhile */
    ck_assert_int_eq((int)f->value, 64);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(awaits_null, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(NULL, NULL);
    AW_END();
}

START_TEST(await_null_fails_task)
{
    aw_task *t = spawn(awaits_null, frame(NULL));

    run(t);
    ck_assert_int_eq(aw_future_error(t), -EINVAL);
    aw_future_unref(t);
}
END_TEST

/* ---- cancellation --------------------------------------------------------------- */

static AW_TASK(sleeper, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), f->delay), NULL);
    record(f->id);
    AW_FINALLY();
    cleanups++;
    AW_END();
}

START_TEST(cancel_while_sleeping)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    reset();
    f->delay = 10;
    t = spawn(sleeper, f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_future_cancel(t, NULL), 0);
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_int_eq(order.n, 0);
    ck_assert_int_eq(cleanups, 1);
    aw_future_unref(t); /* the sleep's timer was cancelled too */
}
END_TEST

START_TEST(cancel_while_awaiting_task)
{
    aw_future *in = aw_future_new(loop);
    aw_task *t = spawn(parent_of, frame(aw_future_ref(in)));

    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_future_cancel(t, "down"), 0);
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_int_eq(aw_future_cancelled(in), 1); /* the child's await */
    ck_assert_int_eq(aw_future_cancel(t, NULL), AW_EINVALSTATE);
    aw_future_unref(t);
    aw_future_unref(in);
}
END_TEST

START_TEST(cancel_before_first_step)
{
    aw_task *t;

    reset();
    t = spawn(with_cleanup, frame(aw_future_resolved_int(loop, 1)));
    ck_assert_int_eq(aw_future_cancel(t, "early"), 0);
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_str_eq(aw_future_message(t), "early");
    ck_assert_int_eq(cleanups, 0); /* the body never ran */
    ck_assert_int_eq(frames_freed, 1);
    aw_future_unref(t);
}
END_TEST

START_TEST(cancel_after_done_is_noop)
{
    aw_task *t = spawn(add_one, frame(aw_future_resolved_int(loop, 1)));

    run(t);
    ck_assert_int_eq(aw_future_cancel(t, NULL), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_cancelled(t), 0);
    ck_assert_int_eq(aw_task_cancelling(t), 0);
    aw_future_unref(t);
}
END_TEST

START_TEST(cancellation_handled_and_swallowed)
{
    aw_future *in = aw_future_new(loop);
    aw_task *t = spawn(try_await, frame(aw_future_ref(in)));
    intptr_t v = 0;

    reset();
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_cancel(t, NULL);
    run(t);
    ck_assert_int_eq(order.items[0], AW_ECANCELLED);
    ck_assert_int_eq(aw_future_cancelled(t), 0);
    ck_assert_int_eq(aw_future_result_int(t, &v), 0);
    ck_assert_int_eq(v, 7);
    ck_assert_int_eq(aw_task_cancelling(t), 1);
    aw_future_unref(t);
    aw_future_unref(in);
}
END_TEST

static AW_TASK(cancels_itself, struct fr *f)
{
    AW_BEGIN();
    /* Cancelled while running: nothing awaited to cancel, so the next
     * await is, even of a settled future. */
    ck_assert_int_eq(aw_future_cancel(AW_SELF(), "self"), 0);
    AW_AWAIT(aw_future_resolved_int(aw_task_loop(AW_SELF()), 1), NULL);
    record(1);
    AW_FINALLY();
    cleanups++;
    AW_END();
}

START_TEST(cancel_while_running_hits_next_await)
{
    aw_task *t;

    reset();
    t = spawn(cancels_itself, frame(NULL));
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_str_eq(aw_future_message(t), "self");
    ck_assert_int_eq(order.n, 0);
    ck_assert_int_eq(cleanups, 1);
    aw_future_unref(t);
}
END_TEST

static AW_TASK(shielded, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_shield(take(&f->in)), NULL);
    AW_END();
}

START_TEST(shield_keeps_inner_running)
{
    aw_future *in = aw_future_new(loop);
    aw_task *t = spawn(shielded, frame(aw_future_ref(in)));

    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_cancel(t, NULL);
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_int_eq(aw_future_done(in), 0);
    aw_future_set_result_int(in, 1);
    aw_future_unref(t);
    aw_future_unref(in);
}
END_TEST

START_TEST(uncancel_counts)
{
    aw_future *in = aw_future_new(loop);
    aw_task *t = spawn(try_await, frame(aw_future_ref(in)));

    ck_assert_int_eq(aw_future_cancel(t, NULL), 0);
    ck_assert_int_eq(aw_future_cancel(t, NULL), 0);
    ck_assert_int_eq(aw_task_cancelling(t), 2);
    ck_assert_int_eq(aw_task_uncancel(t), 1);
    run(t);
    ck_assert_int_eq(aw_task_uncancel(t), 0);
    ck_assert_int_eq(aw_task_uncancel(t), 0);
    ck_assert_int_eq(aw_task_uncancel(in), -EINVAL);
    aw_future_unref(t);
    aw_future_unref(in);
}
END_TEST

/* ---- task groups ---------------------------------------------------------------- */

static AW_TASK(fail_after, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), f->delay), NULL);
    if (f->rc == AW_ECANCELLED && f->value != 0)
        AW_RAISE((int)f->value, "failed while cancelled");
    if (f->rc != 0)
        AW_RAISE(f->rc, NULL);
    if (f->value != 0)
        AW_RAISE((int)f->value, "child %d failed", f->id);
    record(f->id);
    AW_END();
}

static struct fr *
child(int id, double delay, int code)
{
    struct fr *f = frame(NULL);

    f->id = id;
    f->delay = delay;
    f->value = code;
    return f;
}

START_TEST(group_waits_for_all)
{
    aw_task_group *g = aw_task_group_new(loop, NULL);
    aw_future *w;
    size_t n = 0;

    reset();
    ck_assert_int_eq(aw_task_group_spawn(g, fail_after, child(1, 0.02, 0),
                                         free_frame, NULL),
                     0);
    ck_assert_int_eq(aw_task_group_spawn(g, fail_after, child(2, 0.001, 0),
                                         free_frame, NULL),
                     0);
    w = aw_task_group_wait(g);
    run(w);
    ck_assert_int_eq(aw_future_error(w), 0);
    ck_assert_int_eq(order.n, 2);
    aw_task_group_children(g, &n);
    ck_assert_int_eq(n, 0); /* released as they ended */
    aw_future_unref(w);
    aw_task_group_free(g);
}
END_TEST

static AW_TASK(group_parent, struct fr *f)
{
    AW_BEGIN();
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->g, fail_after, child(1, 0.005, -EIO), free_frame,
                        NULL);
    aw_task_group_spawn(f->g, fail_after, child(2, 10, -EPIPE), free_frame,
                        NULL);
    aw_task_group_spawn(f->g, fail_after, child(3, 10, 0), free_frame, NULL);
    /* The parent's own work is interrupted by the failure. */
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    AW_TRY_AWAIT(f->rc2, aw_task_group_wait(f->g), NULL);
    AW_END();
}

START_TEST(group_failure_cancels_siblings_collects_errors)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(group_parent, f);
    aw_task *const *c;
    size_t n = 0;
    aw_future *w;

    reset();
    run(t);
    ck_assert_int_eq(aw_future_error(t), 0);
    ck_assert_int_eq(f->rc, -EIO);  /* not AW_ECANCELLED */
    ck_assert_int_eq(f->rc2, -EIO); /* the first error */
    ck_assert_int_eq(aw_task_cancelling(t), 0);
    c = aw_task_group_children(f->g, &n);
    ck_assert_int_eq(n, 2); /* the cancelled third was released */
    ck_assert_int_eq(aw_future_error(c[0]), -EIO);
    ck_assert_int_eq(aw_future_error(c[1]), -EPIPE); /* collected too */
    w = aw_task_group_wait(f->g);
    ck_assert_ptr_nonnull(strstr(aw_future_message(w), "2 of 3"));
    aw_future_unref(w);
    ck_assert_int_eq(aw_task_group_spawn(f->g, fail_after, child(4, 0, 0),
                                         free_frame, NULL),
                     AW_ESHUTDOWN);
    aw_task_group_free(f->g);
    free(f);
    aw_future_unref(t);
}
END_TEST

static AW_TASK(group_waiter, struct fr *f)
{
    AW_BEGIN();
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->g, fail_after, child(1, 10, 0), free_frame, NULL);
    aw_task_group_spawn(f->g, fail_after, child(2, 10, 0), free_frame, NULL);
    AW_AWAIT(aw_task_group_wait(f->g), NULL);
    AW_FINALLY();
    aw_task_group_free(f->g);
    AW_END();
}

START_TEST(group_cancelled_from_outside)
{
    aw_task *t = spawn(group_waiter, frame(NULL));
    aw_task *kids[8];
    size_t i, n;

    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    n = aw_all_tasks(loop, kids, 8);
    ck_assert_int_eq(n, 3);
    for (i = 0; i < n; i++)
        aw_future_ref(kids[i]);
    aw_future_cancel(t, "outside");
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
    for (i = 0; i < n; i++) {
        if (kids[i] != t)
            ck_assert_int_eq(aw_future_cancelled(kids[i]), 1);
        aw_future_unref(kids[i]);
    }
    aw_future_unref(t);
}
END_TEST

/* A child whose clean-up after a cancellation takes a while. */
static AW_TASK(slow_to_cancel, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.01), NULL);
    record(f->id);
    AW_END();
}

static AW_TASK(group_of_slow_children, struct fr *f)
{
    AW_BEGIN();
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->g, slow_to_cancel, child(1, 0, 0), free_frame,
                        NULL);
    aw_task_group_spawn(f->g, slow_to_cancel, child(2, 0, 0), free_frame,
                        NULL);
    AW_AWAIT(aw_task_group_wait(f->g), NULL);
    AW_FINALLY();
    record(3); /* the parent goes on only once its children have ended */
    aw_task_group_free(f->g);
    AW_END();
}

/* asyncio's TaskGroup: a cancelled parent waits for its children. */
START_TEST(group_cancelled_parent_waits_for_children)
{
    aw_task *t = spawn(group_of_slow_children, frame(NULL));
    const int want[] = {1, 2, 3};

    reset();
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), 3);
    aw_future_cancel(t, "outside");
    run(t);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_str_eq(aw_future_message(t), "outside");
    assert_order(want, 3);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), 0);
    aw_future_unref(t);
}
END_TEST

/* ---- timeouts ---------------------------------------------------------------------- */

static AW_TASK(timed, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), f->delay);
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 0.05), NULL);
    f->rc2 = aw_timeout_exit(f->to);
    f->to = NULL;
    AW_END();
}

START_TEST(timeout_expires_and_is_catchable)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    f->delay = 0.005;
    t = spawn_keep(timed, f);
    run(t);
    ck_assert_int_eq(f->rc, AW_ETIMEDOUT);
    ck_assert_int_eq(f->rc2, AW_ETIMEDOUT);
    ck_assert_int_eq(aw_future_error(t), 0);
    ck_assert_int_eq(aw_task_cancelling(t), 0);
    aw_future_unref(t);
    free(f);

    f = frame(NULL);
    f->delay = 1;
    t = spawn_keep(timed, f);
    run(t);
    ck_assert_int_eq(f->rc, 0);
    ck_assert_int_eq(f->rc2, 0);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(timeout_uncaught, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), 0.005);
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    AW_END();
}

START_TEST(timeout_uncaught_fails_task)
{
    aw_task *t = spawn(timeout_uncaught, frame(NULL));

    run(t);
    ck_assert_int_eq(aw_future_error(t), AW_ETIMEDOUT);
    aw_future_unref(t); /* the open scope was closed with the task */
}
END_TEST

static AW_TASK(timeout_moved, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), 0.01);
    ck_assert_int_eq(aw_timeout_reschedule_in(f->to, 5), 0);
    ck_assert(aw_timeout_when(f->to) > aw_loop_time(aw_task_loop(AW_SELF())) + 4);
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 0.03), NULL);
    ck_assert_int_eq(aw_timeout_reschedule(f->to, aw_loop_time(aw_task_loop(AW_SELF())) + 0.005), 0);
    AW_TRY_AWAIT(f->rc2, aw_sleep(aw_task_loop(AW_SELF()), 5), NULL);
    ck_assert_int_eq(aw_timeout_reschedule(f->to, 1), AW_EINVALSTATE);
    ck_assert_int_eq(aw_timeout_reschedule_in(f->to, 1), AW_EINVALSTATE);
    ck_assert_int_eq(aw_timeout_reschedule(NULL, 1), -EINVAL);
    aw_timeout_exit(f->to);
    AW_END();
}

START_TEST(timeout_moved_while_open)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(timeout_moved, f);

    run(t);
    ck_assert_int_eq(f->rc, 0); /* moved later: did not expire */
    ck_assert_int_eq(f->rc2, AW_ETIMEDOUT); /* moved sooner: expired */
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(nested_timeouts, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), f->delay);      /* outer */
    f->to2 = aw_timeout_enter(AW_SELF(), 0.3 - f->delay); /* inner */
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 5), NULL);
    f->value = aw_timeout_expired(f->to) * 10 + aw_timeout_expired(f->to2);
    aw_timeout_exit(f->to2);
    aw_timeout_exit(f->to);
    AW_END();
}

START_TEST(nested_timeouts_inner_and_outer)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    f->delay = 0.005; /* the outer expires */
    t = spawn_keep(nested_timeouts, f);
    run(t);
    ck_assert_int_eq(f->rc, AW_ETIMEDOUT);
    ck_assert_int_eq(f->value, 10);
    aw_future_unref(t);
    free(f);

    f = frame(NULL);
    f->delay = 0.295; /* the inner expires */
    t = spawn_keep(nested_timeouts, f);
    run(t);
    ck_assert_int_eq(f->rc, AW_ETIMEDOUT);
    ck_assert_int_eq(f->value, 1);
    ck_assert_int_eq(aw_task_cancelling(t), 0);
    aw_future_unref(t);
    free(f);
}
END_TEST

START_TEST(outside_cancel_wins_over_timeout)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    f->delay = 5;
    t = spawn_keep(timed, f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_cancel(t, NULL);
    run(t);
    ck_assert_int_eq(f->rc, AW_ECANCELLED);
    ck_assert_int_eq(f->rc2, 0);
    aw_future_unref(t);
    free(f);
}
END_TEST

/* ---- the rest ------------------------------------------------------------------------- */

static aw_future *
step_add(aw_future *settled, void *arg)
{
    intptr_t v = 0;

    aw_future_result_int(settled, &v);
    return aw_future_resolved_int(aw_future_loop(settled), v + (intptr_t)arg);
}

static aw_future *
step_fail(aw_future *settled, void *arg)
{
    (void)arg;
    return aw_future_failed(aw_future_loop(settled), -EBADMSG, NULL);
}

START_TEST(chain_form_task)
{
    aw_then_fn steps[] = {step_add, step_add, step_add};
    aw_then_fn bad[] = {step_add, step_fail, step_add};
    aw_task *t = aw_task_chain(loop, 3, steps, (void *)2);
    intptr_t v = 0;

    ck_assert(aw_is_task(t));
    run(t);
    ck_assert_int_eq(aw_future_result_int(t, &v), 0);
    ck_assert_int_eq(v, 6);
    aw_future_unref(t);
    t = aw_task_chain(loop, 3, bad, (void *)2);
    run(t);
    ck_assert_int_eq(aw_future_error(t), -EBADMSG);
    aw_future_unref(t);
    t = aw_task_chain(loop, 0, NULL, NULL);
    run(t);
    ck_assert_int_eq(aw_future_error(t), 0);
    aw_future_unref(t);
}
END_TEST

static AW_TASK(who_am_i, struct fr *f)
{
    AW_BEGIN();
    f->p = aw_current_task(aw_task_loop(AW_SELF()));
    f->value = (intptr_t)aw_all_tasks(aw_task_loop(AW_SELF()), NULL, 0);
    AW_END();
}

START_TEST(current_task_and_all_tasks)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(who_am_i, f), *u;
    aw_task *all[4];

    u = spawn(who_am_i, frame(NULL));
    ck_assert_ptr_null(aw_current_task(loop));
    ck_assert_int_eq(aw_all_tasks(loop, all, 1), 2);
    ck_assert(all[0] == t || all[0] == u);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_ptr_eq(f->p, t);
    ck_assert_int_eq(f->value, 2);
    ck_assert_int_eq(aw_all_tasks(loop, all, 4), 0);
    ck_assert_int_eq(aw_task_set_name(t, "worker-1"), 0);
    ck_assert_str_eq(aw_task_name(t), "worker-1");
    ck_assert_str_eq(aw_task_name(u), "Task-2");
    ck_assert_int_eq(aw_task_set_user(t, f), 0);
    ck_assert_ptr_eq(aw_task_user(t), f);
    aw_future_unref(t);
    aw_future_unref(u);
    free(f);
}
END_TEST

static int dump_line;

static AW_TASK(stuck, struct fr *f)
{
    AW_BEGIN();
    dump_line = __LINE__ + 1;
    AW_AWAIT(take(&f->in), NULL);
    AW_END();
}

START_TEST(pending_task_reported_and_dumped)
{
    aw_future *in = aw_future_new(loop);
    aw_task *t = spawn(stuck, frame(aw_future_ref(in)));
    char *buf = NULL, want[64];
    size_t size = 0;
    FILE *mem;

    capture_reports();
    aw_task_set_name(t, "stuck-one");
    mem = open_memstream(&buf, &size);
    ck_assert_int_eq(aw_task_dump(loop, mem), 1);
    fclose(mem);
    ck_assert_ptr_nonnull(strstr(buf, "stuck-one: not started"));
    free(buf);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    mem = open_memstream(&buf, &size);
    ck_assert_int_eq(aw_task_dump(loop, mem), 1);
    fclose(mem);
    snprintf(want, sizeof(want), "test_task.c:%d", dump_line);
    ck_assert_ptr_nonnull(strstr(buf, want));
    free(buf);
    /* The loop does not close with it pending, and names it. */
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    ck_assert_int_ge(cap.calls, 2);
    aw_future_unref(t); /* the loop still holds it */
    aw_future_set_result_int(in, 0);
    aw_future_unref(in);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), 0);
}
END_TEST

START_TEST(failed_task_nobody_read_is_reported)
{
    aw_task *t;

    capture_reports();
    t = spawn(with_cleanup, frame(aw_future_failed(loop, -EIO, "lost")));
    aw_future_unref(t); /* fire and forget: the loop still runs it */
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), 0);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_ptr_nonnull(strstr(cap.message, "lost"));
}
END_TEST

static AW_TASK(switch_misuse, struct fr *f)
{
    AW_BEGIN();
    switch (f->id) {
    case 0:
        AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0), NULL);
        break;
    default:
        break;
    }
    AW_END();
}

START_TEST(await_inside_switch_detected)
{
    aw_task *t = spawn(switch_misuse, frame(NULL));

    capture_reports();
    run(t);
    ck_assert_int_eq(aw_future_error(t), -EINVAL);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_ptr_nonnull(strstr(cap.message, "switch"));
    aw_future_unref(t);
}
END_TEST

/* Tasks awaiting a mix of things, cancelled at random points. */
static AW_TASK(storm_task, struct fr *f)
{
    AW_BEGIN();
    for (;;) {
        switch_point:
        if (f->id % 3 == 0)
            AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
        else if (f->id % 3 == 1)
            AW_AWAIT(aw_shield(aw_future_ref(f->in)), NULL); /* shared */
        else if (f->id % 2 == 0)
            AW_AWAIT(aw_future_ref(f->in2), NULL); /* its own */
        else
            AW_YIELD();
        f->id += 1 + (int)(f->value % 5);
        f->value = f->value * 1103515245 + 12345;
        if (0)
            goto switch_point;
    }
    AW_FINALLY();
    cleanups++;
    AW_END();
}

START_TEST(tasks_cancelled_at_random_awaits_leak_nothing)
{
    int n = aw_test_slow() ? 2000 : 100000, i, steps;
    aw_future *in = aw_future_new(loop);
    aw_task **ts = malloc((size_t)n * sizeof(*ts));

    reset();
    ck_assert_ptr_nonnull(ts);
    srand(7);
    for (i = 0; i < n; i++) {
        struct fr *f = frame(NULL);

        f->in = aw_future_ref(in);
        f->in2 = aw_future_new(loop);
        f->id = rand();
        f->value = rand();
        ts[i] = spawn(storm_task, f);
    }
    for (steps = rand() % 5 + 1; steps > 0; steps--)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(aw_future_cancel(ts[i], NULL), 0);
        if (i % 1000 == 999)
            aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(aw_future_cancelled(ts[i]), 1);
        aw_future_unref(ts[i]);
    }
    ck_assert_int_eq(cleanups, n);
    ck_assert_int_eq(frames_freed, n);
    free(ts);
    aw_future_unref(in);
}
END_TEST

START_TEST(sleep_result_and_bad_arguments)
{
    aw_future *s = aw_sleep_result(loop, 0.001, &cap);
    void *p = NULL;
    aw_then_fn none[1] = {NULL};

    run(s);
    ck_assert_int_eq(aw_future_result(s, &p), 0);
    ck_assert_ptr_eq(p, &cap);
    aw_future_unref(s);
    s = aw_sleep(loop, NAN);
    ck_assert_int_eq(aw_future_error(s), -EINVAL);
    aw_future_unref(s);
    s = aw_sleep(loop, INFINITY);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_future_cancel(s, NULL), 0);
    aw_future_unref(s);
    ck_assert_ptr_null(aw_sleep(NULL, 1));
    ck_assert_ptr_null(aw_task_new(NULL, add_one, NULL, NULL));
    ck_assert_ptr_null(aw_task_new(loop, NULL, NULL, NULL));
    s = aw_task_chain(loop, 1, none, NULL);
    ck_assert_int_eq(aw_future_error(s), -EINVAL);
    aw_future_unref(s);
    s = aw_future_new(loop);
    ck_assert_int_eq(aw_is_task(s), 0);
    ck_assert_ptr_null(aw_task_name(s));
    ck_assert_int_eq(aw_task_set_name(s, "x"), -EINVAL);
    ck_assert_int_eq(aw_task_cancelling(s), -EINVAL);
    ck_assert_ptr_null(aw_timeout_enter(s, 1));
    ck_assert_ptr_null(aw_task_group_new(loop, s));
    ck_assert_int_eq(aw_timeout_exit(NULL), -EINVAL);
    ck_assert_int_eq(aw_task_dump(NULL, stdout), -EINVAL);
    ck_assert_int_eq(aw_task_group_spawn(NULL, add_one, NULL, NULL, NULL),
                     -EINVAL);
    aw_task_group_free(NULL);
    aw_future_unref(s);
}
END_TEST

START_TEST(task_allocation_failures_leak_nothing)
{
    int k, done = 0;

    capture_reports();
    for (k = 1; k <= 30; k++) {
        aw_task *t;

        aw_test_fail_allocation(k);
        t = aw_task_new(loop, parent_of, frame(aw_future_resolved_int(loop, 1)),
                        free_frame);
        aw_test_fail_allocation(0);
        if (aw_is_task(t)) {
            run(t);
            done += aw_future_error(t) == 0;
        }
        aw_future_unref(t);
        while (aw_all_tasks(loop, NULL, 0) > 0)
            aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    ck_assert_int_gt(done, 0);
}
END_TEST

/* ---- misuse and asyncio's cancellation rules ------------------------------------------- */

static AW_TASK(await_self, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_future_ref(AW_SELF()), NULL);
    AW_END();
}

/* The await takes the reference it is given, even to the task itself:
 * without that the task is never freed and the loop does not close. */
START_TEST(await_self_releases_reference)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(await_self, f);

    run(t);
    ck_assert_int_eq(f->rc, -EINVAL);
    ck_assert_int_eq(aw_future_error(t), 0);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(enter_for_other, struct fr *f)
{
    AW_BEGIN();
    f->p = aw_timeout_enter((aw_task *)f->in2, 1); /* not running: NULL */
    f->in2 = NULL;
    AW_END();
}

/* task.h: a scope is only for the task running now; anything else gets
 * NULL (before, the scope was returned and freed under the caller when
 * that task ended). */
START_TEST(timeout_enter_refused_unless_running)
{
    aw_task *idle = spawn(try_await, frame(aw_future_new(loop)));
    struct fr *f = frame(NULL);
    aw_task *t;

    ck_assert_ptr_null(aw_timeout_enter(idle, 1));    /* not started */
    ck_assert_ptr_null(aw_timeout_enter_at(idle, 1)); /* from outside */
    f->in2 = idle; /* borrowed by the task below */
    t = spawn_keep(enter_for_other, f);
    run(t);
    ck_assert_ptr_null(f->p);
    ck_assert_ptr_null(aw_timeout_enter(t, 1)); /* done */
    aw_future_cancel(idle, NULL);
    run(idle);
    aw_future_unref(idle);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(cancel_self_then_return, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0), NULL);
    f->rc = aw_future_cancel(AW_SELF(), "at end");
    AW_RETURN_INT(12);
    AW_END();
}

/* asyncio test_cancel_at_end: cancelled after its last await, the task
 * ends cancelled, not with its return value. */
START_TEST(cancel_at_end)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(cancel_self_then_return, f);

    run(t);
    ck_assert_int_eq(f->rc, 0);
    ck_assert_int_eq(aw_future_cancelled(t), 1);
    ck_assert_str_eq(aw_future_message(t), "at end");
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(cancel_self_uncancel_return, struct fr *f)
{
    AW_BEGIN();
    aw_future_cancel(AW_SELF(), NULL);
    f->rc = aw_task_uncancel(AW_SELF());
    AW_RETURN_INT(12);
    AW_END();
}

/* asyncio 3.13: uncancel() down to zero withdraws the pending cancel. */
START_TEST(uncancel_to_zero_withdraws_cancel_at_end)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(cancel_self_uncancel_return, f);
    intptr_t v = 0;

    run(t);
    ck_assert_int_eq(f->rc, 0);
    ck_assert_int_eq(aw_future_result_int(t, &v), 0);
    ck_assert_int_eq(v, 12);
    aw_future_unref(t);
    free(f);
}
END_TEST

/* A parent that first caught a cancellation from outside (and did not
 * withdraw it: its count stays 1), then runs a group whose child fails. */
static AW_TASK(group_parent_after_cancel, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    f->value = aw_task_cancelling(AW_SELF());
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->g, fail_after, child(1, 0.002, -EIO), free_frame,
                        NULL);
    aw_task_group_spawn(f->g, fail_after, child(2, 10, 0), free_frame, NULL);
    AW_TRY_AWAIT(f->rc2, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    AW_TRY_AWAIT(f->id, aw_task_group_wait(f->g), NULL);
    f->delay = aw_task_cancelling(AW_SELF());
    AW_FINALLY();
    aw_task_group_free(f->g);
    f->g = NULL;
    AW_END();
}

/* asyncio 3.12+ TaskGroup: the group withdraws the cancellation it made
 * of its parent (uncancel), and the body's await gets the child's error
 * even when the task had caught a cancellation before. */
START_TEST(group_uncancels_parent_and_reports_child_error)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(group_parent_after_cancel, f);

    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_cancel(t, NULL);
    run(t);
    ck_assert_int_eq(aw_future_error(t), 0);
    ck_assert_int_eq(f->rc, AW_ECANCELLED);
    ck_assert_int_eq(f->value, 1);
    ck_assert_int_eq(f->rc2, -EIO); /* not AW_ECANCELLED */
    ck_assert_int_eq(f->id, -EIO);
    ck_assert(f->delay == 1.0); /* the group's own cancel withdrawn */
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(group_alone_parent, struct fr *f)
{
    AW_BEGIN();
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->g, fail_after, child(1, 0.002, -EIO), free_frame,
                        NULL);
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    f->value = aw_task_cancelling(AW_SELF());
    AW_TRY_AWAIT(f->rc2, aw_task_group_wait(f->g), NULL);
    f->delay = aw_task_cancelling(AW_SELF());
    AW_FINALLY();
    aw_task_group_free(f->g);
    f->g = NULL;
    AW_END();
}

START_TEST(group_cancel_of_parent_withdrawn)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(group_alone_parent, f);

    run(t);
    ck_assert_int_eq(f->rc, -EIO);
    ck_assert_int_eq(f->value, 0); /* the only child ended: withdrawn */
    ck_assert_int_eq(f->rc2, -EIO);
    ck_assert(f->delay == 0.0);
    ck_assert_int_eq(aw_task_cancelling(t), 0);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(nested_groups_parent, struct fr *f)
{
    AW_BEGIN();
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->g, fail_after, child(1, 0.02, -EPIPE),
                        free_frame, NULL);
    f->p = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(f->p, fail_after, child(2, 0.002, -EIO), free_frame,
                        NULL);
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    AW_TRY_AWAIT(f->rc2, aw_task_group_wait(f->p), NULL);
    aw_task_group_free(f->p);
    f->p = NULL;
    AW_TRY_AWAIT(f->id, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    AW_TRY_AWAIT(f->value, aw_task_group_wait(f->g), NULL);
    f->delay = aw_task_cancelling(AW_SELF());
    AW_FINALLY();
    aw_task_group_free(f->p);
    aw_task_group_free(f->g);
    AW_END();
}

/* Nested groups each report their own children's errors, and nothing is
 * reported as never retrieved. */
START_TEST(nested_groups_report_their_own_errors)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    capture_reports();
    t = spawn_keep(nested_groups_parent, f);
    run(t);
    ck_assert_int_eq(aw_future_error(t), 0);
    ck_assert_int_eq(f->rc, -EIO);  /* the inner group's child */
    ck_assert_int_eq(f->rc2, -EIO);
    ck_assert_int_eq(f->id, -EPIPE); /* the outer group's child */
    ck_assert_int_eq((int)f->value, -EPIPE);
    ck_assert(f->delay == 0.0);
    aw_future_unref(t);
    free(f);
    ck_assert_int_eq(cap.calls, 0);
}
END_TEST

static AW_TASK(timeout_after_caught_cancel, struct fr *f)
{
    AW_BEGIN();
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    f->to = aw_timeout_enter(AW_SELF(), 0.002);
    AW_TRY_AWAIT(f->rc2, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    f->id = aw_timeout_exit(f->to);
    f->to = NULL;
    AW_END();
}

/* After a task caught a cancellation (its count stays 1), an expiring
 * timeout is still AW_ETIMEDOUT, at the await and at exit. */
START_TEST(timeout_after_caught_cancellation)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(timeout_after_caught_cancel, f);

    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_cancel(t, NULL);
    run(t);
    ck_assert_int_eq(f->rc, AW_ECANCELLED);
    ck_assert_int_eq(f->rc2, AW_ETIMEDOUT);
    ck_assert_int_eq(f->id, AW_ETIMEDOUT);
    ck_assert_int_eq(aw_task_cancelling(t), 1);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(nested_busy, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), 0.02);   /* outer */
    f->to2 = aw_timeout_enter(AW_SELF(), 0.002); /* inner */
    /* The loop is busy past both deadlines. */
    {
        double until = aw_loop_time(aw_task_loop(AW_SELF())) + 0.03;

        while (aw_loop_time(aw_task_loop(AW_SELF())) < until)
            ;
    }
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 1), NULL);
    f->rc2 = aw_timeout_exit(f->to2);
    f->to2 = NULL;
    /* The outer deadline still holds: this is interrupted too. */
    AW_TRY_AWAIT(f->id, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    f->value = aw_timeout_exit(f->to);
    f->to = NULL;
    AW_END();
}

/* asyncio test_nested_timeouts_loop_busy. */
START_TEST(nested_timeouts_loop_busy)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(nested_busy, f);
    double t0 = aw_loop_time(loop);

    run(t);
    ck_assert_int_eq(f->rc, AW_ETIMEDOUT);
    ck_assert_int_eq(f->rc2, AW_ETIMEDOUT);
    ck_assert_int_eq(f->id, AW_ETIMEDOUT);
    ck_assert_int_eq((int)f->value, AW_ETIMEDOUT);
    ck_assert_int_eq(aw_future_error(t), 0); /* not cancelled at the end */
    ck_assert_int_eq(aw_task_cancelling(t), 0);
    ck_assert(aw_loop_time(loop) - t0 < 5);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(fails_now, struct fr *f)
{
    AW_BEGIN();
    (void)f;
    AW_RAISE(-EIO, NULL);
    AW_END();
}

/* asyncio names unnamed tasks Task-1, Task-2, ...; here per loop.  A task
 * that failed keeps its name. */
START_TEST(unnamed_tasks_numbered_per_loop)
{
    aw_task *a = spawn(who_am_i, frame(NULL));
    aw_task *b = spawn(fails_now, frame(NULL));
    aw_task *c = spawn(who_am_i, frame(NULL));
    aw_loop *other;
    aw_task *d;

    ck_assert_str_eq(aw_task_name(a), "Task-1");
    run(b);
    ck_assert_int_eq(aw_future_error(b), -EIO);
    ck_assert_str_eq(aw_task_name(b), "Task-2");
    ck_assert_str_eq(aw_task_name(c), "Task-3");
    ck_assert_int_eq(aw_loop_new(&other), 0);
    d = aw_task_new(other, who_am_i, frame(NULL), free_frame);
    ck_assert_str_eq(aw_task_name(d), "Task-1");
    aw_future_cancel(d, NULL);
    aw_loop_run_until_complete(other, d);
    aw_future_unref(d);
    ck_assert_int_eq(aw_loop_free(other), 0);
    run(c);
    aw_future_unref(a);
    aw_future_unref(b);
    aw_future_unref(c);
}
END_TEST

static int taken_destroyed;

static void
count_taken(void *p)
{
    (void)p;
    taken_destroyed++;
}

static AW_TASK(takes, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT_TAKE(take(&f->in), &f->p);
    f->value = taken_destroyed; /* the future was released: still 0 */
    AW_AWAIT_TAKE(take(&f->in2), &f->p); /* shared: refused */
    AW_FINALLY();
    AW_END();
}

/* AW_AWAIT_TAKE hands the task the result with its reference: releasing
 * the future does not destroy it.  A shared result cannot be taken. */
START_TEST(await_take_hands_over_result)
{
    struct fr *f = frame(aw_future_resolved(loop, &taken_destroyed,
                                            count_taken));
    aw_future *src = aw_future_resolved(loop, f, count_taken), *in[1];
    aw_task *t;

    taken_destroyed = 0;
    in[0] = aw_future_ref(src);
    f->in2 = aw_race(loop, 1, in); /* its result is src's, shared */
    t = spawn_keep(takes, f);
    run(t);
    ck_assert_int_eq(aw_future_error(t), AW_EINVALSTATE);
    ck_assert_ptr_nonnull(strstr(aw_future_message(t), "cannot be taken"));
    ck_assert_int_eq((int)f->value, 0);
    ck_assert_ptr_eq(f->p, &taken_destroyed); /* ours now */
    ck_assert_int_eq(taken_destroyed, 0);
    aw_future_unref(src); /* destroys its own result, not ours */
    ck_assert_int_eq(taken_destroyed, 1);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(quick_child, struct fr *f)
{
    AW_BEGIN();
    (void)f;
    AW_END();
}

static AW_TASK(long_lived_group, struct fr *f)
{
    AW_BEGIN();
    f->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    for (f->id = 0; f->id < (int)f->value; f->id++) {
        if (f->id == 1000)
            f->rc = (int)aw_test_live_allocations();
        aw_task_group_spawn(f->g, quick_child, NULL, NULL,
                            (aw_task **)&f->in);
        AW_AWAIT(take(&f->in), NULL);
    }
    f->rc2 = (int)aw_test_live_allocations();
    AW_AWAIT(aw_task_group_wait(f->g), NULL);
    AW_FINALLY();
    aw_task_group_free(f->g);
    AW_END();
}

/* A group releases each child once it has ended: a long-lived group
 * running a million short children one after another stays the size it
 * had after the first thousand. */
START_TEST(group_releases_children_as_they_end)
{
    struct fr *f = frame(NULL);
    aw_task *t;

    f->value = aw_test_slow() ? 20000 : 1000000;
    t = spawn_keep(long_lived_group, f);
    run(t);
    ck_assert_int_eq(aw_future_error(t), 0);
    ck_assert_int_eq(f->rc2, f->rc); /* no allocation kept per child */
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(reschedule_absolute, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), AW_NO_TIMEOUT); /* no deadline yet */
    ck_assert(isinf(aw_timeout_when(f->to)));
    f->delay = aw_loop_time(aw_task_loop(AW_SELF())) + 0.005;
    ck_assert_int_eq(aw_timeout_reschedule(f->to, f->delay), 0);
    ck_assert(aw_timeout_when(f->to) == f->delay); /* absolute, as given */
    ck_assert_int_eq(aw_timeout_reschedule(f->to, NAN), -EINVAL);
    ck_assert(aw_timeout_when(f->to) == f->delay);
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    f->rc2 = aw_timeout_exit(f->to);
    f->to = aw_timeout_enter(AW_SELF(), 10);
    /* A time already past: expired on the next pass. */
    ck_assert_int_eq(aw_timeout_reschedule(f->to, 0), 0);
    AW_TRY_AWAIT(f->id, aw_sleep(aw_task_loop(AW_SELF()), 10), NULL);
    aw_timeout_exit(f->to);
    f->to = NULL;
    AW_END();
}

/* asyncio's Timeout.reschedule takes an absolute loop time. */
START_TEST(timeout_reschedule_takes_loop_time)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(reschedule_absolute, f);

    run(t);
    ck_assert_int_eq(f->rc, AW_ETIMEDOUT);
    ck_assert_int_eq(f->rc2, AW_ETIMEDOUT);
    ck_assert_int_eq(f->id, AW_ETIMEDOUT);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(slow_step, struct fr *f)
{
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0), NULL);
    {
        double until = aw_loop_time(aw_task_loop(AW_SELF())) + 0.02;

        while (aw_loop_time(aw_task_loop(AW_SELF())) < until)
            ;
    }
    f->id = __LINE__ + 1;
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0), NULL);
    AW_END();
}

/* Debug mode: a slow callback that was a task step is reported by the
 * task's name and the await it went on to, not by a code address. */
START_TEST(slow_step_report_names_task)
{
    struct fr *f = frame(NULL);
    aw_task *t = spawn_keep(slow_step, f);
    char where[64];

    ck_assert_int_eq(aw_task_set_name(t, "slowpoke"), 0);
    ck_assert_int_eq(aw_loop_set_debug(loop, 1), 0);
    ck_assert_int_eq(aw_loop_set_slow_callback_duration(loop, 0.01), 0);
    capture_reports();
    run(t);
    ck_assert_int_ge(cap.calls, 1);
    ck_assert_ptr_nonnull(strstr(cap.message, "task slowpoke"));
    snprintf(where, sizeof(where), "test_task.c:%d", f->id);
    ck_assert_msg(strstr(cap.message, where) != NULL, "%s", cap.message);
    aw_future_unref(t);
    free(f);
}
END_TEST

static AW_TASK(timeout_in_past, struct fr *f)
{
    AW_BEGIN();
    f->to = aw_timeout_enter(AW_SELF(), f->delay);
    AW_TRY_AWAIT(f->rc, aw_sleep(aw_task_loop(AW_SELF()), 0), NULL);
    f->rc2 = aw_timeout_exit(f->to);
    f->to = NULL;
    AW_END();
}

/* asyncio test_timeout_in_the_past_sleep_zero: timeout(-11) has expired:
 * even a sleep(0) under it times out.  "No timeout" is AW_NO_TIMEOUT. */
START_TEST(timeout_in_the_past_sleep_zero)
{
    const double delays[] = {-11, 0, -INFINITY, AW_NO_TIMEOUT};
    const int want[] = {AW_ETIMEDOUT, AW_ETIMEDOUT, AW_ETIMEDOUT, 0};
    size_t i;

    for (i = 0; i < 4; i++) {
        struct fr *f = frame(NULL);
        aw_task *t;

        f->delay = delays[i];
        t = spawn_keep(timeout_in_past, f);
        run(t);
        ck_assert_int_eq(f->rc, want[i]);
        ck_assert_int_eq(f->rc2, want[i]);
        aw_future_unref(t);
        free(f);
    }
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("task");
    TCase *tc = aw_test_tcase("task");

    tcase_add_test(tc, await_result);
    tcase_add_test(tc, await_error_propagates);
    tcase_add_test(tc, try_await_sees_error);
    tcase_add_test(tc, cleanup_runs_on_each_outcome);
    tcase_add_test(tc, return_value);
    tcase_add_test(tc, nested_tasks_awaiting_tasks);
    tcase_add_test(tc, await_settled_future_continues_at_once);
    tcase_add_test(tc, settled_await_budget_yields);
    tcase_add_test(tc, await_null_fails_task);
    tcase_add_test(tc, cancel_while_sleeping);
    tcase_add_test(tc, cancel_while_awaiting_task);
    tcase_add_test(tc, cancel_before_first_step);
    tcase_add_test(tc, cancel_after_done_is_noop);
    tcase_add_test(tc, cancellation_handled_and_swallowed);
    tcase_add_test(tc, cancel_while_running_hits_next_await);
    tcase_add_test(tc, shield_keeps_inner_running);
    tcase_add_test(tc, uncancel_counts);
    tcase_add_test(tc, group_waits_for_all);
    tcase_add_test(tc, group_failure_cancels_siblings_collects_errors);
    tcase_add_test(tc, group_cancelled_from_outside);
    tcase_add_test(tc, group_cancelled_parent_waits_for_children);
    tcase_add_test(tc, timeout_expires_and_is_catchable);
    tcase_add_test(tc, timeout_uncaught_fails_task);
    tcase_add_test(tc, timeout_moved_while_open);
    tcase_add_test(tc, nested_timeouts_inner_and_outer);
    tcase_add_test(tc, outside_cancel_wins_over_timeout);
    tcase_add_test(tc, chain_form_task);
    tcase_add_test(tc, current_task_and_all_tasks);
    tcase_add_test(tc, pending_task_reported_and_dumped);
    tcase_add_test(tc, failed_task_nobody_read_is_reported);
    tcase_add_test(tc, await_inside_switch_detected);
    tcase_add_test(tc, tasks_cancelled_at_random_awaits_leak_nothing);
    tcase_add_test(tc, sleep_result_and_bad_arguments);
    tcase_add_test(tc, task_allocation_failures_leak_nothing);
    tcase_add_test(tc, await_self_releases_reference);
    tcase_add_test(tc, timeout_enter_refused_unless_running);
    tcase_add_test(tc, cancel_at_end);
    tcase_add_test(tc, uncancel_to_zero_withdraws_cancel_at_end);
    tcase_add_test(tc, group_uncancels_parent_and_reports_child_error);
    tcase_add_test(tc, group_cancel_of_parent_withdrawn);
    tcase_add_test(tc, nested_groups_report_their_own_errors);
    tcase_add_test(tc, timeout_after_caught_cancellation);
    tcase_add_test(tc, nested_timeouts_loop_busy);
    tcase_add_test(tc, unnamed_tasks_numbered_per_loop);
    tcase_add_test(tc, await_take_hands_over_result);
    tcase_add_test(tc, group_releases_children_as_they_end);
    tcase_add_test(tc, timeout_reschedule_takes_loop_time);
    tcase_add_test(tc, slow_step_report_names_task);
    tcase_add_test(tc, timeout_in_the_past_sleep_zero);
    suite_add_tcase(s, tc);
    return s;
}

/* SPDX-License-Identifier: MIT */
/* test_future.c: futures, chaining and the combinators, after CPython's
 * test_asyncio/test_futures.py and the gather/wait/wait_for/shield/
 * as_completed tests of test_tasks.py where they apply. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static int
log_done(aw_future *f, void *arg)
{
    (void)f;
    record((int)(intptr_t)arg);
    return 0;
}

static int
log_soon(aw_loop *l, void *arg)
{
    (void)l;
    record((int)(intptr_t)arg);
    return 0;
}

/* A future settled by a timer after `delay` seconds: with `value`, or with
 * the error `code` when it is not 0. */
struct later {
    aw_future *f;
    intptr_t value;
    int code;
};

static int
later_cb(aw_loop *l, void *arg)
{
    struct later *t = arg;

    (void)l;
    if (t->code != 0)
        aw_future_set_error(t->f, t->code, "later %d", (int)t->value);
    else
        aw_future_set_result_int(t->f, t->value);
    aw_future_unref(t->f);
    free(t);
    return 0;
}

static aw_future *
later(double delay, intptr_t value, int code)
{
    struct later *t = malloc(sizeof(*t));
    aw_future *f = aw_future_new(loop);

    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(f);
    t->f = aw_future_ref(f);
    t->value = value;
    t->code = code;
    ck_assert_int_eq(aw_loop_call_later(loop, delay, later_cb, t, NULL), 0);
    return f;
}

static int destroyed;

static void
count_destroy(void *ptr)
{
    (void)ptr;
    destroyed++;
}

static intptr_t
int_result(aw_future *f)
{
    intptr_t v = -1;

    ck_assert_int_eq(aw_future_result_int(f, &v), 0);
    return v;
}

static void
run(aw_future *f)
{
    aw_loop_run_until_complete(loop, f);
    ck_assert(aw_future_done(f));
}

static int
stop_when_done(aw_future *f, void *arg)
{
    (void)f;
    (void)arg;
    return aw_loop_stop(loop);
}

/* Run until f settles without reading its outcome. */
static void
wait_settled(aw_future *f)
{
    ck_assert_int_eq(aw_future_add_done_callback(f, stop_when_done, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert(aw_future_done(f));
}

static void
reset(void)
{
    memset(&order, 0, sizeof(order));
    destroyed = 0;
}

/* ---- the future ------------------------------------------------------------- */

START_TEST(future_initial_state_pending)
{
    aw_future *f = aw_future_new(loop);
    void *p = &p;

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_future_state(f), AW_FUTURE_PENDING);
    ck_assert_int_eq(aw_future_done(f), 0);
    ck_assert_int_eq(aw_future_cancelled(f), 0);
    ck_assert_ptr_eq(aw_future_loop(f), loop);
    ck_assert_ptr_null(aw_future_message(f));
    aw_future_unref(f);
}
END_TEST

START_TEST(result_of_pending_is_invalid_state)
{
    aw_future *f = aw_future_new(loop);
    void *p = &p;
    intptr_t i = 7;

    ck_assert_int_eq(aw_future_result(f, &p), AW_EINVALSTATE);
    ck_assert_ptr_eq(p, &p);
    ck_assert_int_eq(aw_future_result_int(f, &i), AW_EINVALSTATE);
    ck_assert_int_eq(i, 7);
    ck_assert_int_eq(aw_future_error(f), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_take_result(f, &p, NULL), AW_EINVALSTATE);
    aw_future_unref(f);
}
END_TEST

START_TEST(set_result_destroyed_once_on_free)
{
    aw_future *f = aw_future_new(loop);
    static int payload;
    void *p = NULL;

    reset();
    ck_assert_int_eq(aw_future_set_result(f, &payload, count_destroy), 0);
    ck_assert_int_eq(aw_future_state(f), AW_FUTURE_DONE);
    ck_assert_int_eq(aw_future_result(f, &p), 0);
    ck_assert_ptr_eq(p, &payload);
    ck_assert_int_eq(aw_future_error(f), 0);
    aw_future_ref(f);
    aw_future_unref(f);
    ck_assert_int_eq(destroyed, 0);
    aw_future_unref(f);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

START_TEST(set_result_int_shortcut)
{
    aw_future *f = aw_future_new(loop);

    ck_assert_int_eq(aw_future_set_result_int(f, -42), 0);
    ck_assert_int_eq(int_result(f), -42);
    aw_future_unref(f);
    f = aw_future_resolved_int(loop, 9);
    ck_assert_int_eq(int_result(f), 9);
    aw_future_unref(f);
}
END_TEST

START_TEST(set_twice_is_invalid_state)
{
    aw_future *f = aw_future_new(loop);
    static int a, b;
    void *p = NULL;

    reset();
    ck_assert_int_eq(aw_future_set_result(f, &a, NULL), 0);
    ck_assert_int_eq(aw_future_set_result(f, &b, count_destroy),
                     AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_set_result_int(f, 1), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_set_error(f, -EIO, "no"), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_cancel(f, NULL), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_result(f, &p), 0);
    ck_assert_ptr_eq(p, &a);
    aw_future_unref(f);
    ck_assert_int_eq(destroyed, 0); /* b stayed the caller's */
}
END_TEST

START_TEST(set_error_with_message)
{
    aw_future *f = aw_future_new(loop);
    void *p = &p;

    ck_assert_int_eq(aw_future_set_error(f, -ECONNRESET, "peer %s:%d",
                                         "example", 80),
                     0);
    ck_assert_int_eq(aw_future_state(f), AW_FUTURE_FAILED);
    ck_assert_int_eq(aw_future_done(f), 1);
    ck_assert_int_eq(aw_future_cancelled(f), 0);
    ck_assert_int_eq(aw_future_result(f, &p), -ECONNRESET);
    ck_assert_ptr_eq(p, &p);
    ck_assert_int_eq(aw_future_error(f), -ECONNRESET);
    ck_assert_str_eq(aw_future_message(f), "peer example:80");
    aw_future_unref(f);
}
END_TEST

START_TEST(set_error_rejects_non_errors)
{
    aw_future *f = aw_future_new(loop);

    ck_assert_int_eq(aw_future_set_error(f, 0, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_set_error(f, 5, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_set_error(f, AW_ECANCELLED, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_state(f), AW_FUTURE_PENDING);
    ck_assert_int_eq(aw_future_set_error(f, AW_ETIMEDOUT, NULL), 0);
    ck_assert_ptr_null(aw_future_message(f));
    ck_assert_int_eq(aw_future_error(f), AW_ETIMEDOUT);
    aw_future_unref(f);
}
END_TEST

START_TEST(cancel_with_message)
{
    aw_future *f = aw_future_new(loop);

    ck_assert_int_eq(aw_future_cancel(f, "shutting down"), 0);
    ck_assert_int_eq(aw_future_state(f), AW_FUTURE_CANCELLED);
    ck_assert_int_eq(aw_future_cancelled(f), 1);
    ck_assert_int_eq(aw_future_done(f), 1);
    ck_assert_str_eq(aw_future_message(f), "shutting down");
    ck_assert_int_eq(aw_future_result(f, NULL), AW_ECANCELLED);
    ck_assert_int_eq(aw_future_error(f), AW_ECANCELLED);
    ck_assert_int_eq(aw_future_cancel(f, "again"), AW_EINVALSTATE);
    ck_assert_str_eq(aw_future_message(f), "shutting down");
    ck_assert_int_eq(aw_future_set_result_int(f, 1), AW_EINVALSTATE);
    aw_future_unref(f);

    f = aw_future_resolved_int(loop, 1);
    ck_assert_int_eq(aw_future_cancel(f, NULL), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_cancelled(f), 0);
    aw_future_unref(f);
}
END_TEST

START_TEST(take_result_moves_ownership)
{
    aw_future *f = aw_future_new(loop);
    static int payload;
    aw_destroy_fn d = NULL;
    void *p = NULL;

    reset();
    aw_future_set_result(f, &payload, count_destroy);
    ck_assert_int_eq(aw_future_take_result(f, &p, &d), 0);
    ck_assert_ptr_eq(p, &payload);
    ck_assert_ptr_eq((void *)d, (void *)count_destroy);
    ck_assert_int_eq(aw_future_take_result(f, &p, &d), AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_result(f, &p), 0);
    ck_assert_ptr_null(p);
    aw_future_unref(f);
    ck_assert_int_eq(destroyed, 0);
    d(&payload);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

START_TEST(callbacks_run_in_order_added)
{
    aw_future *f = aw_future_new(loop);
    static const int want[] = {1, 2, 3, 4};
    int i;

    reset();
    for (i = 1; i <= 4; i++)
        ck_assert_int_eq(aw_future_add_done_callback(f, log_done,
                                                     (void *)(intptr_t)i),
                         0);
    aw_future_set_result_int(f, 0);
    run(f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want, 4);
    aw_future_unref(f);
}
END_TEST

START_TEST(callbacks_scheduled_not_called)
{
    aw_future *f = aw_future_new(loop);
    static const int want[] = {1, 2};

    reset();
    aw_future_add_done_callback(f, log_done, (void *)1);
    aw_future_set_result_int(f, 0);
    ck_assert_int_eq(order.n, 0); /* not inside set_result */
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(order.n, 1);
    /* Added to a settled future: scheduled, not called. */
    aw_future_add_done_callback(f, log_done, (void *)2);
    ck_assert_int_eq(order.n, 1);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want, 2);
    aw_future_unref(f);
}
END_TEST

START_TEST(callback_added_after_settle_runs_after_earlier_calls)
{
    aw_future *f = aw_future_new(loop);
    static const int want[] = {1, 10, 2};

    reset();
    aw_future_add_done_callback(f, log_done, (void *)1);
    aw_future_set_result_int(f, 0);
    aw_loop_call_soon(loop, log_soon, (void *)10, NULL);
    aw_future_add_done_callback(f, log_done, (void *)2);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want, 3);
    aw_future_unref(f);
}
END_TEST

START_TEST(remove_done_callback)
{
    aw_future *f = aw_future_new(loop);
    static const int want[] = {2, 3};

    reset();
    aw_future_add_done_callback(f, log_done, (void *)1);
    aw_future_add_done_callback(f, log_done, (void *)2);
    aw_future_add_done_callback(f, log_done, (void *)1);
    aw_future_add_done_callback(f, log_done, (void *)3);
    ck_assert_int_eq(aw_future_remove_done_callback(f, log_done, (void *)1),
                     2);
    ck_assert_int_eq(aw_future_remove_done_callback(f, log_done, (void *)9),
                     0);
    aw_future_set_result_int(f, 0);
    /* Once settled its callbacks are scheduled: none can be removed. */
    ck_assert_int_eq(aw_future_remove_done_callback(f, log_done, (void *)2),
                     0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want, 2);
    aw_future_unref(f);
}
END_TEST

START_TEST(remove_every_callback_then_settle)
{
    aw_future *f = aw_future_new(loop);

    reset();
    aw_future_add_done_callback(f, log_done, (void *)1);
    ck_assert_int_eq(aw_future_remove_done_callback(f, log_done, (void *)1),
                     1);
    aw_future_set_result_int(f, 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(order.n, 0);
    aw_future_unref(f);
}
END_TEST

/* Not static: named in reports through the dynamic symbol table. */
int failing_done(aw_future *f, void *arg);

int
failing_done(aw_future *f, void *arg)
{
    (void)f;
    (void)arg;
    return -EPIPE;
}

START_TEST(done_callback_failure_reported)
{
    aw_future *f = aw_future_new(loop);

    capture_reports();
    aw_future_add_done_callback(f, failing_done, NULL);
    aw_future_set_result_int(f, 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.code, -EPIPE);
    ck_assert_ptr_nonnull(strstr(cap.message, "failing_done"));
    aw_future_unref(f);
}
END_TEST

START_TEST(unretrieved_error_reported_on_free)
{
    aw_future *f;

    capture_reports();
    f = aw_future_new(loop);
    aw_future_set_error(f, -EIO, "disk on fire");
    aw_future_unref(f);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.code, -EIO);
    ck_assert_ptr_nonnull(strstr(cap.message, "never retrieved"));
    ck_assert_ptr_nonnull(strstr(cap.message, "disk on fire"));

    /* Read, it is not reported; nor is a cancellation. */
    f = aw_future_failed(loop, -EIO, NULL);
    ck_assert_int_eq(aw_future_error(f), -EIO);
    aw_future_unref(f);
    f = aw_future_new(loop);
    aw_future_set_error(f, -EIO, NULL);
    ck_assert_int_eq(aw_future_result(f, NULL), -EIO);
    aw_future_unref(f);
    f = aw_future_new(loop);
    aw_future_cancel(f, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(cap.calls, 1);
}
END_TEST

START_TEST(unref_pending_future_drops_its_callbacks)
{
    aw_future *f = aw_future_new(loop);

    reset();
    aw_future_add_done_callback(f, log_done, (void *)1);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(order.n, 0);
}
END_TEST

START_TEST(failed_constructor_codes)
{
    aw_future *f = aw_future_failed(loop, 3, "not an error");

    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_future_failed(loop, AW_ECANCELLED, "stop %d", 1);
    ck_assert_int_eq(aw_future_cancelled(f), 1);
    ck_assert_str_eq(aw_future_message(f), "stop 1");
    aw_future_unref(f);
}
END_TEST

START_TEST(run_until_complete_returns_outcome)
{
    aw_future *f = later(0.001, 5, 0);

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(int_result(f), 5);
    /* Already settled: returns its outcome after one iteration. */
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);

    f = later(0.001, 0, -ETIMEDOUT);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -ETIMEDOUT);
    aw_future_unref(f); /* the run read the error: not reported */
}
END_TEST

static int
stop_loop(aw_loop *l, void *arg)
{
    (void)arg;
    return aw_loop_stop(l);
}

START_TEST(run_until_complete_stopped_early)
{
    aw_future *f = aw_future_new(loop);

    capture_reports();
    aw_loop_call_soon(loop, stop_loop, NULL, NULL);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_EINVALSTATE);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.code, AW_EINVALSTATE);
    /* Its stop callback was removed: settling does not stop a later run. */
    aw_future_set_result_int(f, 1);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_run_until_complete(NULL, NULL), -EINVAL);
}
END_TEST

/* A loop that will not close says why, naming what is alive by kind. */
START_TEST(loop_close_busy_while_future_alive)
{
    aw_future *f = aw_future_new(loop), *in[2], *g;

    in[0] = aw_future_new(loop);
    in[1] = aw_future_new(loop);
    g = aw_gather(loop, 2, in, 0);
    aw_test_reports[0] = '\0';
    aw_loop_set_exception_handler(loop, aw_test_log_reports, NULL);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    ck_assert_ptr_nonnull(strstr(aw_test_reports, "3 plain futures still referenced"));
    ck_assert_ptr_nonnull(strstr(aw_test_reports, "1 gather future still referenced"));
    ck_assert_ptr_nonnull(strstr(aw_test_reports, "4 objects still referenced"));
    aw_future_cancel(g, NULL);
    aw_future_unref(g);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
}
END_TEST

/* ---- chaining ------------------------------------------------------------------ */

static aw_future *
add_one(aw_future *settled, void *arg)
{
    intptr_t v = 0;

    ck_assert_int_eq(aw_future_result_int(settled, &v), 0);
    if (arg != NULL)
        record((int)v);
    return aw_future_resolved_int(aw_future_loop(settled), v + 1);
}

static aw_future *
must_not_run(aw_future *settled, void *arg)
{
    (void)settled;
    (void)arg;
    ck_abort_msg("a skipped step ran");
    return NULL;
}

static aw_future *
recover(aw_future *settled, void *arg)
{
    int code = aw_future_error(settled);

    (void)arg;
    record(code);
    return aw_future_resolved_int(aw_future_loop(settled), 100);
}

static aw_future *
fail_step(aw_future *settled, void *arg)
{
    (void)arg;
    return aw_future_failed(aw_future_loop(settled), -EPROTO, "step failed");
}

static int
note_finally(aw_future *settled, void *arg)
{
    record(aw_future_state(settled));
    return (int)(intptr_t)arg;
}

START_TEST(then_runs_on_result)
{
    aw_future *f = aw_future_new(loop);
    aw_future *c = aw_then(aw_then(aw_future_ref(f), add_one, NULL), add_one,
                           NULL);

    ck_assert_int_eq(aw_future_state(c), AW_FUTURE_PENDING);
    aw_future_set_result_int(f, 1);
    run(c);
    ck_assert_int_eq(int_result(c), 3);
    aw_future_unref(c);
    aw_future_unref(f);
}
END_TEST

START_TEST(then_step_not_called_synchronously)
{
    aw_future *c;

    reset();
    c = aw_then(aw_future_resolved_int(loop, 1), add_one, (void *)1);
    ck_assert_int_eq(order.n, 0);
    ck_assert_int_eq(aw_future_done(c), 0);
    run(c);
    ck_assert_int_eq(order.n, 1);
    ck_assert_int_eq(int_result(c), 2);
    aw_future_unref(c);
}
END_TEST

START_TEST(errors_skip_then_until_catch)
{
    aw_future *c;

    reset();
    c = aw_then(aw_future_resolved_int(loop, 1), fail_step, NULL);
    c = aw_then(c, must_not_run, NULL);
    c = aw_then(c, must_not_run, NULL);
    c = aw_catch(c, recover, NULL);
    c = aw_then(c, add_one, NULL);
    run(c);
    ck_assert_int_eq(int_result(c), 101);
    ck_assert_int_eq(order.n, 1);
    ck_assert_int_eq(order.items[0], -EPROTO);
    aw_future_unref(c);
}
END_TEST

START_TEST(error_passes_through_then_with_message)
{
    aw_future *c;

    capture_reports();
    c = aw_then(aw_future_failed(loop, -EPROTO, "bad frame %d", 7),
                must_not_run, NULL);
    run(c);
    ck_assert_int_eq(aw_future_error(c), -EPROTO);
    ck_assert_str_eq(aw_future_message(c), "bad frame 7");
    aw_future_unref(c);
    ck_assert_int_eq(cap.calls, 0); /* handed on, then read: no report */
}
END_TEST

START_TEST(catch_passes_result_and_cancellation)
{
    aw_future *f = aw_future_new(loop);
    aw_future *c = aw_catch(aw_future_resolved_int(loop, 4), must_not_run,
                            NULL);

    run(c);
    ck_assert_int_eq(int_result(c), 4);
    aw_future_unref(c);
    c = aw_catch(aw_future_ref(f), must_not_run, NULL);
    aw_future_cancel(f, "bye");
    run(c);
    ck_assert_int_eq(aw_future_cancelled(c), 1);
    ck_assert_str_eq(aw_future_message(c), "bye");
    aw_future_unref(c);
    aw_future_unref(f);
}
END_TEST

START_TEST(finally_runs_on_every_outcome)
{
    aw_future *f, *c;
    static const int want[] = {AW_FUTURE_DONE, AW_FUTURE_FAILED,
                               AW_FUTURE_CANCELLED};

    reset();
    c = aw_finally(aw_future_resolved_int(loop, 8), note_finally, NULL);
    run(c);
    ck_assert_int_eq(int_result(c), 8);
    aw_future_unref(c);

    c = aw_finally(aw_future_failed(loop, -EIO, "x"), note_finally, NULL);
    run(c);
    ck_assert_int_eq(aw_future_error(c), -EIO);
    ck_assert_str_eq(aw_future_message(c), "x");
    aw_future_unref(c);

    f = aw_future_new(loop);
    c = aw_finally(aw_future_ref(f), note_finally, NULL);
    aw_future_cancel(f, NULL);
    run(c);
    ck_assert_int_eq(aw_future_cancelled(c), 1);
    aw_future_unref(c);
    aw_future_unref(f);
    assert_order(want, 3);
}
END_TEST

START_TEST(finally_error_replaces_outcome)
{
    aw_future *c = aw_finally(aw_future_resolved_int(loop, 8), note_finally,
                              (void *)(intptr_t)-ENOSPC);

    reset();
    run(c);
    ck_assert_int_eq(aw_future_error(c), -ENOSPC);
    aw_future_unref(c);
}
END_TEST

static aw_future *
return_pending(aw_future *settled, void *arg)
{
    (void)settled;
    return aw_future_ref(arg);
}

START_TEST(then_flattens_returned_future)
{
    aw_future *inner = aw_future_new(loop);
    aw_future *c = aw_then(aw_future_resolved_int(loop, 0), return_pending,
                           inner);

    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_future_done(c), 0); /* follows inner */
    aw_future_set_result_int(inner, 77);
    run(c);
    ck_assert_int_eq(int_result(c), 77); /* the value, not a future */
    aw_future_unref(c);
    aw_future_unref(inner);
}
END_TEST

START_TEST(then_shares_result_of_held_future)
{
    aw_future *inner = aw_future_new(loop);
    aw_future *c = aw_then(aw_future_resolved_int(loop, 0), return_pending,
                           inner);
    static int payload;
    void *p = NULL;

    reset();
    aw_future_set_result(inner, &payload, count_destroy);
    run(c);
    ck_assert_int_eq(aw_future_result(c, &p), 0);
    ck_assert_ptr_eq(p, &payload);
    /* Shared with inner, which the test still holds: cannot be taken. */
    ck_assert_int_eq(aw_future_take_result(c, &p, NULL), AW_EINVALSTATE);
    aw_future_unref(inner);
    ck_assert_int_eq(destroyed, 0);
    aw_future_unref(c);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

static aw_future *
return_null(aw_future *settled, void *arg)
{
    (void)settled;
    (void)arg;
    return NULL;
}

START_TEST(then_bad_steps_fail_the_chain)
{
    aw_future *c = aw_then(aw_future_resolved_int(loop, 0), NULL, NULL);

    ck_assert_int_eq(aw_future_error(c), -EINVAL);
    aw_future_unref(c);
    c = aw_then(aw_future_resolved_int(loop, 0), return_null, NULL);
    run(c);
    ck_assert_int_eq(aw_future_error(c), -EINVAL);
    aw_future_unref(c);
    ck_assert_ptr_null(aw_then(NULL, add_one, NULL));
    ck_assert_ptr_null(aw_catch(NULL, add_one, NULL));
    ck_assert_ptr_null(aw_finally(NULL, note_finally, NULL));
}
END_TEST

static int
log_state(aw_future *f, void *arg)
{
    (void)arg;
    record(aw_future_state(f));
    return 0;
}

START_TEST(cancel_chain_cancels_upstream_it_holds_alone)
{
    aw_future *f = aw_future_new(loop), *a, *b;
    static const int want[] = {AW_FUTURE_CANCELLED};

    reset();
    aw_future_add_done_callback(f, log_state, NULL);
    a = aw_then(f, must_not_run, NULL); /* f: held by the chain alone */
    b = aw_then(aw_future_ref(a), must_not_run, NULL);
    ck_assert_int_eq(aw_future_cancel(b, "stop"), 0);
    ck_assert_int_eq(aw_future_cancelled(b), 1);
    /* a is held by the test too: left alone, and so is f. */
    ck_assert_int_eq(aw_future_done(a), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(order.n, 0);
    aw_future_unref(b);
    b = aw_then(a, must_not_run, NULL); /* now b alone holds a */
    ck_assert_int_eq(aw_future_cancel(b, "stop"), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want, 1); /* f was cancelled, through a */
    aw_future_unref(b);
}
END_TEST

START_TEST(cancel_chain_leaves_shared_upstream)
{
    aw_future *f = aw_future_new(loop);
    aw_future *c = aw_then(aw_future_ref(f), must_not_run, NULL);

    ck_assert_int_eq(aw_future_cancel(c, NULL), 0);
    ck_assert_int_eq(aw_future_done(f), 0);
    aw_future_set_result_int(f, 1);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    aw_future_unref(c);
    aw_future_unref(f);
}
END_TEST

static aw_future *
cancel_own_chain(aw_future *settled, void *arg)
{
    aw_future **chain = arg;

    aw_future_cancel(*chain, "from the step");
    aw_future_unref(*chain); /* drops the test's reference, in the step */
    *chain = NULL;
    return aw_future_resolved_int(aw_future_loop(settled), 1);
}

START_TEST(step_may_cancel_and_drop_its_chain)
{
    static aw_future *c;
    aw_future *keep;

    c = aw_then(aw_future_resolved_int(loop, 0), cancel_own_chain, &c);
    keep = aw_finally(aw_future_ref(c), note_finally, NULL);
    reset();
    run(keep);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(aw_future_cancelled(keep), 1);
    aw_future_unref(keep);
}
END_TEST

struct chain_probe {
    aw_loop *l;
    long steps;
    long bad_frees;
    uintptr_t stack_lo, stack_hi;
};

static struct chain_probe probe;

static aw_future *
probe_step(aw_future *settled, void *arg)
{
    volatile char here;
    uintptr_t sp = (uintptr_t)&here;
    intptr_t v = 0;

    (void)arg;
    aw_future_result_int(settled, &v);
    if (probe.stack_lo == 0 || sp < probe.stack_lo)
        probe.stack_lo = sp;
    if (sp > probe.stack_hi)
        probe.stack_hi = sp;
    /* The results of all but the last two steps are freed by now. */
    if (destroyed < probe.steps - 1)
        probe.bad_frees++;
    probe.steps++;
    return aw_future_resolved(probe.l, (void *)(v + 1), count_destroy);
}

static aw_future *
probe_first(aw_future *settled, void *arg)
{
    (void)arg;
    (void)settled;
    probe.steps++;
    return aw_future_resolved(probe.l, (void *)1, count_destroy);
}

START_TEST(chain_of_1m_steps_constant_stack_frees_as_it_goes)
{
    long n = aw_test_slow() ? 20000 : 1000000, i;
    aw_future *root = aw_future_new(loop), *c;
    void *p = NULL;

    reset();
    memset(&probe, 0, sizeof(probe));
    probe.l = loop;
    c = aw_then(aw_future_ref(root), probe_first, NULL);
    for (i = 1; i < n; i++)
        c = aw_then(c, probe_step, NULL);
    aw_future_set_result_int(root, 0);
    aw_future_unref(root);
    run(c);
    ck_assert_int_eq(probe.steps, n);
    ck_assert_int_eq(aw_future_result(c, &p), 0);
    ck_assert_int_eq((intptr_t)p, n);
    ck_assert_int_eq(probe.bad_frees, 0);
    ck_assert_msg(probe.stack_hi - probe.stack_lo < 4096,
                  "the stack moved %lu bytes",
                  (unsigned long)(probe.stack_hi - probe.stack_lo));
    ck_assert_int_eq(destroyed, n - 1);
    aw_future_unref(c);
    ck_assert_int_eq(destroyed, n);
}
END_TEST

START_TEST(drop_and_cancel_long_pending_chain)
{
    long n = aw_test_slow() ? 20000 : 1000000, i;
    aw_future *c = aw_future_new(loop), *d;

    for (i = 0; i < n; i++)
        c = aw_then(c, must_not_run, NULL);
    /* Cancelling the end cancels every step it alone holds: no
     * recursion, whatever the length. */
    ck_assert_int_eq(aw_future_cancel(c, NULL), 0);
    aw_future_unref(c);
    d = aw_future_new(loop);
    for (i = 0; i < n; i++)
        d = aw_then(d, must_not_run, NULL);
    aw_future_unref(d); /* freeing it releases the whole chain */
}
END_TEST

/* ---- combinators ------------------------------------------------------------------ */

static aw_future *const *
inputs_of(aw_future *g, size_t *n)
{
    void *p = NULL;

    ck_assert_int_eq(aw_future_result(g, &p), 0);
    ck_assert_ptr_eq(aw_combinator_inputs(g, n), p);
    return p;
}

START_TEST(gather_results_in_order_given)
{
    aw_future *in[3], *g;
    aw_future *const *out;
    size_t n = 0;

    in[0] = later(0.03, 0, 0);
    in[1] = later(0.01, 1, 0);
    in[2] = later(0.02, 2, 0);
    g = aw_gather(loop, 3, in, 0);
    run(g);
    out = inputs_of(g, &n);
    ck_assert_int_eq(n, 3);
    ck_assert_ptr_eq(out[0], in[0]);
    ck_assert_int_eq(int_result(out[0]), 0);
    ck_assert_int_eq(int_result(out[1]), 1);
    ck_assert_int_eq(int_result(out[2]), 2);
    aw_future_unref(g);
}
END_TEST

START_TEST(gather_first_failure_fails_others_go_on)
{
    aw_future *in[3], *g, *slow;

    capture_reports();
    in[0] = later(0.001, 0, 0);
    in[1] = later(0.005, 1, -EHOSTUNREACH);
    slow = later(0.02, 2, -EIO);
    in[2] = aw_future_ref(slow);
    g = aw_gather(loop, 3, in, 0);
    run(g);
    ck_assert_int_eq(aw_future_error(g), -EHOSTUNREACH);
    ck_assert_str_eq(aw_future_message(g), "later 1");
    ck_assert_int_eq(aw_future_done(slow), 0); /* not cancelled */
    wait_settled(slow);
    aw_future_unref(g);
    aw_future_unref(slow);
    /* The gather looked at every child's error (asyncio): no report. */
    ck_assert_int_eq(cap.calls, 0);
}
END_TEST

START_TEST(gather_return_errors_collects_every_outcome)
{
    aw_future *in[3], *g, *c;
    aw_future *const *out;
    size_t n = 0;

    in[0] = later(0.001, 0, -EIO);
    c = aw_future_new(loop);
    in[1] = aw_future_ref(c);
    in[2] = later(0.002, 2, 0);
    aw_future_cancel(c, NULL);
    aw_future_unref(c);
    g = aw_gather(loop, 3, in, AW_GATHER_RETURN_ERRORS);
    run(g);
    out = inputs_of(g, &n);
    ck_assert_int_eq(aw_future_error(out[0]), -EIO);
    ck_assert_int_eq(aw_future_cancelled(out[1]), 1);
    ck_assert_int_eq(int_result(out[2]), 2);
    aw_future_unref(g);

    in[0] = later(0.001, 0, -EIO);
    g = aw_all_settled(loop, 1, in);
    run(g);
    out = inputs_of(g, &n);
    ck_assert_int_eq(aw_future_error(out[0]), -EIO);
    aw_future_unref(g);
}
END_TEST

START_TEST(gather_child_cancelled_fails_gather)
{
    aw_future *in[2], *g, *c = aw_future_new(loop);

    in[0] = aw_future_ref(c);
    in[1] = later(0.001, 1, 0);
    g = aw_gather(loop, 2, in, 0);
    aw_future_cancel(c, NULL);
    run(g);
    /* asyncio: the gather is not cancelled, it fails with the
     * cancellation. */
    ck_assert_int_eq(aw_future_cancelled(g), 0);
    ck_assert_int_eq(aw_future_error(g), AW_ECANCELLED);
    aw_future_unref(c);
    run(in[1]);
    aw_future_unref(g);
}
END_TEST

START_TEST(gather_cancel_cancels_children)
{
    aw_future *in[2], *g, *a = aw_future_new(loop), *b;

    b = aw_future_resolved_int(loop, 1);
    in[0] = aw_future_ref(a);
    in[1] = aw_future_ref(b);
    g = aw_gather(loop, 2, in, 0);
    ck_assert_int_eq(aw_future_cancel(g, "enough"), 0);
    ck_assert_int_eq(aw_future_cancelled(g), 1);
    ck_assert_int_eq(aw_future_cancelled(a), 1);
    ck_assert_str_eq(aw_future_message(a), "enough");
    ck_assert_int_eq(aw_future_cancelled(b), 0);
    ck_assert_int_eq(aw_future_cancel(g, NULL), AW_EINVALSTATE);
    aw_future_unref(g);
    aw_future_unref(a);
    aw_future_unref(b);
}
END_TEST

START_TEST(gather_empty_duplicates_and_settled_inputs)
{
    aw_future *in[3], *g, *f;
    aw_future *const *out;
    size_t n = 9;

    g = aw_gather(loop, 0, NULL, 0);
    out = inputs_of(g, &n);
    ck_assert_int_eq(n, 0);
    (void)out;
    aw_future_unref(g);

    f = aw_future_new(loop);
    in[0] = aw_future_ref(f);
    in[1] = aw_future_resolved_int(loop, 5);
    in[2] = aw_future_ref(f); /* the same future twice */
    g = aw_gather(loop, 3, in, 0);
    aw_future_set_result_int(f, 6);
    run(g);
    out = inputs_of(g, &n);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(int_result(out[0]), 6);
    ck_assert_int_eq(int_result(out[1]), 5);
    ck_assert_ptr_eq(out[2], out[0]);
    aw_future_unref(g);
    aw_future_unref(f);

    /* Every input settled already: the gather settles with them. */
    in[0] = aw_future_resolved_int(loop, 1);
    in[1] = aw_future_failed(loop, -EIO, NULL);
    g = aw_gather(loop, 2, in, 0);
    ck_assert_int_eq(aw_future_error(g), -EIO);
    aw_future_unref(g);
}
END_TEST

START_TEST(combinators_reject_bad_inputs)
{
    aw_future *in[2], *g;

    capture_reports();
    in[0] = aw_future_new(loop);
    in[1] = NULL;
    g = aw_gather(loop, 2, in, 0);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g); /* in[0] was released with it */
    g = aw_gather(loop, 2, NULL, 0);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g);
    in[0] = aw_future_new(loop);
    g = aw_gather(loop, 1, in, 0x40);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g);
    g = aw_any(loop, 0, NULL);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g);
    g = aw_wait(loop, 0, NULL, AW_ALL_COMPLETED, AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g);
    in[0] = aw_future_new(loop);
    g = aw_wait(loop, 1, in, 99, AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g);
    in[0] = aw_future_new(loop);
    g = aw_wait(loop, 1, in, AW_ALL_COMPLETED, NAN);
    ck_assert_int_eq(aw_future_error(g), -EINVAL);
    aw_future_unref(g);
    in[0] = aw_future_new(loop);
    ck_assert_ptr_null(aw_gather(NULL, 1, in, 0));
    ck_assert_int_eq(cap.calls, 0);
}
END_TEST

START_TEST(any_first_success_cancels_others)
{
    aw_future *in[3], *a, *slow;

    in[0] = later(0.001, 0, -EIO);
    in[1] = later(0.005, 1, 0);
    slow = aw_future_new(loop);
    in[2] = aw_future_ref(slow);
    a = aw_any(loop, 3, in);
    run(a);
    ck_assert_int_eq(int_result(a), 1);
    ck_assert_int_eq(aw_future_cancelled(slow), 1);
    aw_future_unref(a);
    aw_future_unref(slow);
}
END_TEST

START_TEST(any_fails_only_when_all_fail)
{
    aw_future *in[2], *a;
    aw_future *const *out;
    size_t n = 0;

    in[0] = later(0.001, 0, -EIO);
    in[1] = later(0.002, 1, -ENOENT);
    a = aw_any(loop, 2, in);
    run(a);
    ck_assert_int_eq(aw_future_error(a), -ENOENT);
    ck_assert_ptr_nonnull(strstr(aw_future_message(a), "later 0"));
    ck_assert_ptr_nonnull(strstr(aw_future_message(a), "later 1"));
    out = aw_combinator_inputs(a, &n);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(aw_future_error(out[0]), -EIO);
    ck_assert_int_eq(aw_future_error(out[1]), -ENOENT);
    aw_future_unref(a);
}
END_TEST

START_TEST(race_settles_like_first_settled)
{
    aw_future *in[2], *r, *slow;

    in[0] = later(0.02, 0, 0);
    in[1] = later(0.001, 1, -EAGAIN);
    slow = aw_future_ref(in[0]);
    r = aw_race(loop, 2, in);
    run(r);
    ck_assert_int_eq(aw_future_error(r), -EAGAIN);
    ck_assert_int_eq(aw_future_done(slow), 0); /* goes on */
    run(slow);
    aw_future_unref(slow);
    aw_future_unref(r);

    r = aw_race(loop, 0, NULL); /* never settles */
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_future_done(r), 0);
    ck_assert_int_eq(aw_future_cancel(r, NULL), 0);
    aw_future_unref(r);
}
END_TEST

static aw_wait_sets *
sets_of(aw_future *w)
{
    void *p = NULL;

    ck_assert_int_eq(aw_future_result(w, &p), 0);
    ck_assert_ptr_nonnull(p);
    return p;
}

START_TEST(wait_first_completed)
{
    aw_future *in[2], *w, *a = later(0.001, 0, 0), *b = later(0.05, 1, 0);
    aw_wait_sets *s;

    in[0] = aw_future_ref(b);
    in[1] = aw_future_ref(a);
    w = aw_wait(loop, 2, in, AW_FIRST_COMPLETED, AW_NO_TIMEOUT);
    run(w);
    s = sets_of(w);
    ck_assert_int_eq(s->ndone, 1);
    ck_assert_ptr_eq(s->done[0], a);
    ck_assert_int_eq(s->npending, 1);
    ck_assert_ptr_eq(s->pending[0], b);
    ck_assert_int_eq(aw_future_cancelled(b), 0); /* never cancelled */
    aw_future_unref(w);
    run(b);
    aw_future_unref(a);
    aw_future_unref(b);
}
END_TEST

START_TEST(wait_first_error)
{
    aw_future *in[3], *w, *slow = later(0.05, 2, 0);
    aw_wait_sets *s;

    in[0] = later(0.001, 0, 0);
    in[1] = later(0.005, 1, -EIO);
    in[2] = aw_future_ref(slow);
    w = aw_wait(loop, 3, in, AW_FIRST_ERROR, AW_NO_TIMEOUT);
    run(w);
    s = sets_of(w);
    ck_assert_int_eq(s->ndone, 2);
    ck_assert_int_eq(aw_future_error(s->done[1]), -EIO);
    ck_assert_int_eq(s->npending, 1);
    aw_future_unref(w);
    run(slow);
    aw_future_unref(slow);

    /* No error: waits for all. */
    in[0] = later(0.001, 0, 0);
    in[1] = later(0.002, 1, 0);
    w = aw_wait(loop, 2, in, AW_FIRST_ERROR, AW_NO_TIMEOUT);
    run(w);
    ck_assert_int_eq(sets_of(w)->ndone, 2);
    aw_future_unref(w);
}
END_TEST

START_TEST(wait_all_completed_and_duplicates)
{
    aw_future *in[3], *w, *a = later(0.002, 0, 0);
    aw_wait_sets *s;

    in[0] = aw_future_ref(a);
    in[1] = later(0.001, 1, -EIO);
    in[2] = aw_future_ref(a); /* given twice: appears once */
    w = aw_wait(loop, 3, in, AW_ALL_COMPLETED, AW_NO_TIMEOUT);
    run(w);
    s = sets_of(w);
    ck_assert_int_eq(s->ndone, 2);
    ck_assert_int_eq(s->npending, 0);
    ck_assert_ptr_eq(s->done[0], a);
    ck_assert_int_eq(aw_future_error(s->done[1]), -EIO);
    aw_future_unref(w);
    aw_future_unref(a);
}
END_TEST

START_TEST(wait_timeout_gives_pending_set)
{
    aw_future *in[2], *w, *f = aw_future_new(loop);
    aw_wait_sets *s;

    in[0] = aw_future_ref(f);
    in[1] = aw_future_resolved_int(loop, 1);
    w = aw_wait(loop, 2, in, AW_ALL_COMPLETED, 0.01);
    run(w);
    s = sets_of(w);
    ck_assert_int_eq(s->ndone, 1);
    ck_assert_int_eq(s->npending, 1);
    ck_assert_ptr_eq(s->pending[0], f);
    ck_assert_int_eq(aw_future_done(f), 0);
    aw_future_unref(w);
    aw_future_unref(f);

    /* FIRST_COMPLETED with a settled input: at once. */
    in[0] = aw_future_new(loop);
    in[1] = aw_future_resolved_int(loop, 1);
    w = aw_wait(loop, 2, in, AW_FIRST_COMPLETED, 10);
    ck_assert_int_eq(aw_future_done(w), 1);
    aw_future_unref(w);
}
END_TEST

START_TEST(as_completed_order)
{
    aw_future *in[3], *n, *got;
    aw_as_completed *it;
    intptr_t want[] = {1, 2, 0};
    void *p;
    int i;

    in[0] = later(0.03, 0, 0);
    in[1] = later(0.001, 1, 0);
    in[2] = later(0.015, 2, 0);
    it = aw_as_completed_new(loop, 3, in, AW_NO_TIMEOUT);
    ck_assert_ptr_nonnull(it);
    for (i = 0; i < 3; i++) {
        n = aw_as_completed_next(it);
        run(n);
        ck_assert_int_eq(aw_future_result(n, &p), 0);
        got = p;
        ck_assert_int_eq(int_result(got), want[i]);
        aw_future_unref(n);
    }
    n = aw_as_completed_next(it);
    ck_assert_int_eq(aw_future_error(n), AW_EEMPTY);
    aw_future_unref(n);
    aw_as_completed_free(it);
}
END_TEST

START_TEST(as_completed_settled_first_and_timeout)
{
    aw_future *in[3], *n1, *n2, *n3, *f = aw_future_new(loop);
    aw_as_completed *it;
    void *p;

    in[0] = aw_future_ref(f);
    in[1] = aw_future_resolved_int(loop, 7);
    in[2] = aw_future_ref(f); /* once only */
    it = aw_as_completed_new(loop, 3, in, 0.01);
    n1 = aw_as_completed_next(it);
    ck_assert_int_eq(aw_future_done(n1), 0); /* given its input once awaited */
    run(n1);
    ck_assert_int_eq(aw_future_result(n1, &p), 0);
    ck_assert_int_eq(int_result(p), 7);
    n2 = aw_as_completed_next(it);
    run(n2);
    ck_assert_int_eq(aw_future_error(n2), AW_ETIMEDOUT);
    n3 = aw_as_completed_next(it);
    ck_assert_int_eq(aw_future_error(n3), AW_EEMPTY);
    aw_future_unref(n1);
    aw_future_unref(n2);
    aw_future_unref(n3);
    aw_as_completed_free(it);
    ck_assert_int_eq(aw_future_done(f), 0);
    aw_future_unref(f);

    /* Freed with a future still to come: that future is cancelled. */
    in[0] = aw_future_new(loop);
    it = aw_as_completed_new(loop, 1, in, AW_NO_TIMEOUT);
    n1 = aw_as_completed_next(it);
    aw_as_completed_free(it);
    ck_assert_int_eq(aw_future_cancelled(n1), 1);
    aw_future_unref(n1);
}
END_TEST

START_TEST(wait_for_result_before_timeout)
{
    aw_future *w = aw_wait_for(later(0.001, 3, 0), 5);

    run(w);
    ck_assert_int_eq(int_result(w), 3);
    aw_future_unref(w);
}
END_TEST

START_TEST(wait_for_timeout_cancels)
{
    aw_future *f = aw_future_new(loop);
    aw_future *w = aw_wait_for(aw_future_ref(f), 0.01);

    run(w);
    ck_assert_int_eq(aw_future_error(w), AW_ETIMEDOUT);
    ck_assert_int_eq(aw_future_cancelled(f), 1);
    aw_future_unref(w);
    aw_future_unref(f);
}
END_TEST

static int
resolve_soon(aw_loop *l, void *arg)
{
    (void)l;
    return aw_future_set_result_int(arg, 11);
}

START_TEST(wait_for_keeps_late_result)
{
    aw_future *f = aw_future_new(loop), *w;

    /* f settles in the pass where the timeout fires, before it: the
     * timeout cannot cancel it, and the result is not lost. */
    ck_assert_int_eq(aw_loop_call_soon(loop, resolve_soon, f, NULL), 0);
    w = aw_wait_for(aw_future_ref(f), 0);
    run(w);
    ck_assert_int_eq(int_result(w), 11);
    aw_future_unref(w);
    aw_future_unref(f);
}
END_TEST

START_TEST(wait_for_cancel_cancels_inner)
{
    aw_future *f = aw_future_new(loop);
    aw_future *w = aw_wait_for(aw_future_ref(f), 10);

    ck_assert_int_eq(aw_future_cancel(w, "outside"), 0);
    ck_assert_int_eq(aw_future_cancelled(f), 1);
    run(w);
    ck_assert_int_eq(aw_future_cancelled(w), 1);
    ck_assert_str_eq(aw_future_message(w), "outside");
    ck_assert_int_eq(aw_future_cancel(w, NULL), AW_EINVALSTATE);
    aw_future_unref(w);
    aw_future_unref(f);
}
END_TEST

START_TEST(wait_for_without_timeout_is_the_future)
{
    aw_future *f = aw_future_new(loop);

    ck_assert_ptr_eq(aw_wait_for(f, AW_NO_TIMEOUT), f);
    ck_assert_ptr_eq(aw_wait_for(f, INFINITY), f);
    f = aw_wait_for(f, NAN);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_ptr_null(aw_wait_for(NULL, 1));
}
END_TEST

START_TEST(shield_outer_cancel_leaves_inner)
{
    aw_future *f = aw_future_new(loop);
    aw_future *s = aw_shield(aw_future_ref(f));

    ck_assert_ptr_ne(s, f);
    ck_assert_int_eq(aw_future_cancel(s, NULL), 0);
    ck_assert_int_eq(aw_future_cancelled(s), 1);
    ck_assert_int_eq(aw_future_done(f), 0);
    aw_future_unref(s);
    aw_future_set_result_int(f, 1);
    aw_future_unref(f);

    f = aw_future_new(loop);
    s = aw_shield(aw_future_ref(f));
    aw_future_set_result_int(f, 12);
    run(s);
    ck_assert_int_eq(int_result(s), 12);
    aw_future_unref(s);
    aw_future_unref(f);

    f = aw_future_resolved_int(loop, 1);
    ck_assert_ptr_eq(aw_shield(f), f);
    aw_future_unref(f);
}
END_TEST

/* ---- bad input and memory ---------------------------------------------------------- */

START_TEST(bad_arguments_return_einval)
{
    aw_future *f = aw_future_new(loop);

    ck_assert_ptr_null(aw_future_new(NULL));
    ck_assert_ptr_null(aw_future_resolved_int(NULL, 1));
    ck_assert_ptr_null(aw_future_failed(NULL, -EIO, NULL));
    ck_assert_int_eq(aw_future_set_result(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_set_result_int(NULL, 0), -EINVAL);
    ck_assert_int_eq(aw_future_set_error(NULL, -EIO, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_cancel(NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_state(NULL), -EINVAL);
    ck_assert_int_eq(aw_future_done(NULL), 0);
    ck_assert_int_eq(aw_future_result(NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_error(NULL), -EINVAL);
    ck_assert_int_eq(aw_future_take_result(f, NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_add_done_callback(NULL, log_done, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_future_add_done_callback(f, NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_future_remove_done_callback(f, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(aw_future_ref(NULL));
    aw_future_unref(NULL);
    ck_assert_ptr_null(aw_combinator_inputs(f, NULL));
    ck_assert_ptr_null(aw_as_completed_next(NULL));
    aw_as_completed_free(NULL);
    /* A chain or combinator is settled by what it waits for. */
    {
        aw_future *c = aw_then(aw_future_ref(f), add_one, NULL);

        ck_assert_int_eq(aw_future_set_result_int(c, 1), -EINVAL);
        ck_assert_int_eq(aw_future_state(c), AW_FUTURE_PENDING);
        aw_future_unref(c);
    }
    aw_future_unref(f);
}
END_TEST

START_TEST(out_of_memory_gives_shared_failed_future)
{
    aw_future *f, *g, *in[2];

    reset();
    aw_test_fail_allocation(1);
    ck_assert_ptr_null(aw_future_new(loop));
    aw_test_fail_allocation(1);
    f = aw_future_resolved(loop, &f, count_destroy);
    ck_assert_int_eq(destroyed, 1); /* the result was released */
    ck_assert_int_eq(aw_future_error(f), -ENOMEM);
    aw_future_ref(f);
    aw_future_unref(f);
    aw_future_unref(f);
    /* Chaining on it works, and the error flows down. */
    g = aw_then(f, must_not_run, NULL);
    run(g);
    ck_assert_int_eq(aw_future_error(g), -ENOMEM);
    aw_future_unref(g);
    /* A combinator failing to allocate releases its inputs. */
    in[0] = aw_future_new(loop);
    in[1] = aw_future_resolved_int(loop, 1);
    aw_test_fail_allocation(1); /* its first allocation, whichever */
    g = aw_gather(loop, 2, in, 0);
    ck_assert_int_eq(aw_future_error(g), -ENOMEM);
    aw_future_unref(g);
    aw_test_fail_allocation(0);
}
END_TEST

static aw_future *
sum_inputs(aw_future *settled, void *arg)
{
    aw_future *const *in;
    intptr_t sum = 0, v;
    size_t n = 0, i;

    (void)arg;
    in = aw_combinator_inputs(settled, &n);
    for (i = 0; i < n; i++)
        if (aw_future_result_int(in[i], &v) == 0)
            sum += v;
    return aw_future_resolved_int(aw_future_loop(settled), sum);
}

START_TEST(allocation_failures_anywhere_leak_nothing)
{
    int k, completed = 0;

    capture_reports();
    /* Fail the k-th allocation of a whole scenario, for each k: every
     * path ends settled, and the fixture checks that nothing leaked. */
    for (k = 1; k <= 40; k++) {
        aw_future *in[3], *a, *g;
        intptr_t v = 0;

        reset();
        aw_test_fail_allocation(k);
        a = aw_future_new(loop);
        in[0] = a != NULL ? aw_future_ref(a) : aw_future_resolved_int(loop, 2);
        in[1] = aw_future_resolved_int(loop, 1);
        in[2] = aw_future_resolved_int(loop, 4);
        g = aw_gather(loop, 3, in, 0);
        g = aw_then(g, sum_inputs, NULL);
        g = aw_finally(g, note_finally, NULL);
        if (a != NULL) {
            aw_future_set_result_int(a, 2);
            aw_future_unref(a);
        }
        if (aw_loop_run_until_complete(loop, g) == 0) {
            ck_assert_int_eq(aw_future_result_int(g, &v), 0);
            ck_assert_int_eq(v, 7);
            completed++;
        } else {
            aw_future_error(g);
        }
        aw_future_unref(g);
        aw_test_fail_allocation(0);
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    }
    ck_assert_int_gt(completed, 0);
}
END_TEST

/* ---- decided outcomes -------------------------------------------------------- */

static aw_future *decided_target;
static int decided_rc;

static int
cancel_target(aw_future *f, void *arg)
{
    (void)f;
    (void)arg;
    decided_rc = aw_future_cancel(decided_target, NULL);
    return 0;
}

/* asyncio test_cancel_gather_1: once every child is done, cancelling the
 * gather does nothing and says so, even before it was told. */
START_TEST(cancel_gather_1)
{
    aw_future *child = aw_future_new(loop), *in[1], *g;
    aw_future **items;
    size_t n = 0;

    /* Runs before the gather hears of the child: its callback is first. */
    ck_assert_int_eq(aw_future_add_done_callback(child, cancel_target, NULL),
                     0);
    in[0] = aw_future_ref(child);
    g = aw_gather(loop, 1, in, 0);
    decided_target = g;
    decided_rc = 1;
    ck_assert_int_eq(aw_future_set_result_int(child, 42), 0);
    run(g);
    ck_assert_int_eq(decided_rc, AW_EINVALSTATE);
    ck_assert_int_eq(aw_future_cancelled(g), 0);
    ck_assert_int_eq(aw_future_result(g, (void **)&items), 0);
    (void)aw_combinator_inputs(g, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(int_result(items[0]), 42);
    aw_future_unref(g);
    aw_future_unref(child);
}
END_TEST

/* The same for race, any, wait and wait_for: an outcome fixed by inputs
 * that settled is kept. */
START_TEST(cancel_refused_once_outcome_decided)
{
    aw_future *child, *in[2], *f;
    int which;

    for (which = 0; which < 4; which++) {
        child = aw_future_new(loop);
        ck_assert_int_eq(
            aw_future_add_done_callback(child, cancel_target, NULL), 0);
        in[0] = aw_future_ref(child);
        in[1] = aw_future_new(loop);
        switch (which) {
        case 0:
            f = aw_race(loop, 2, in);
            break;
        case 1:
            f = aw_any(loop, 2, in);
            break;
        case 2:
            f = aw_wait(loop, 2, in, AW_FIRST_COMPLETED, AW_NO_TIMEOUT);
            break;
        default:
            aw_future_unref(in[1]);
            f = aw_wait_for(in[0], 10);
            in[1] = NULL;
            break;
        }
        decided_target = f;
        decided_rc = 1;
        ck_assert_int_eq(aw_future_set_result_int(child, 7), 0);
        run(f);
        ck_assert_int_eq(decided_rc, AW_EINVALSTATE);
        ck_assert_int_eq(aw_future_error(f), 0);
        if (in[1] != NULL) {
            aw_future_cancel(in[1], NULL);
            aw_future_unref(in[1]);
        }
        aw_future_unref(f);
        aw_future_unref(child);
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    }
}
END_TEST

static aw_future *really_b;

static int
set_a(aw_loop *l, void *arg)
{
    (void)l;
    return aw_future_set_result_int(arg, 1);
}

static int
set_b_later(aw_loop *l, void *arg)
{
    (void)arg;
    /* Runs in the pass in which the wait hears of a. */
    return aw_loop_call_soon(l, set_a, really_b, NULL);
}

/* asyncio test_wait_really_done: an input done by the time the waiter
 * runs is in the done set, even if the wait heard of another first. */
START_TEST(wait_really_done)
{
    aw_future *a = aw_future_new(loop), *b = aw_future_new(loop);
    aw_future *in[2], *w;
    aw_wait_sets *s;

    really_b = b;
    in[0] = aw_future_ref(b);
    in[1] = aw_future_ref(a);
    w = aw_wait(loop, 2, in, AW_FIRST_COMPLETED, AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_loop_call_soon(loop, set_a, a, NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, set_b_later, NULL, NULL), 0);
    run(w);
    ck_assert_int_eq(aw_future_result(w, (void **)&s), 0);
    ck_assert_int_eq(s->ndone, 2);
    ck_assert_int_eq(s->npending, 0);
    aw_future_unref(w);
    aw_future_unref(a);
    aw_future_unref(b);
}
END_TEST

/* ---- references taken on every path ------------------------------------------- */

static aw_future *
tracked(void)
{
    return aw_future_resolved(loop, &destroyed, count_destroy);
}

static aw_future *
never_step(aw_future *settled, void *arg)
{
    (void)arg;
    return aw_future_ref(settled);
}

/* Each call documented to take over the caller's reference releases it on
 * its error paths too: the input's result is destroyed once the returned
 * future goes, and the loop closes. */
START_TEST(taking_calls_release_input_on_error)
{
    aw_future *in[2], *r;
    aw_loop *other;
    int i;

    ck_assert_int_eq(aw_loop_new(&other), 0);
    for (i = 0; i < 11; i++) {
        reset();
        in[0] = tracked();
        in[1] = NULL;
        switch (i) {
        case 0:
            r = aw_then(in[0], NULL, NULL);
            break;
        case 1:
            r = aw_catch(in[0], NULL, NULL);
            break;
        case 2:
            r = aw_finally(in[0], NULL, NULL);
            break;
        case 3:
            r = aw_gather(loop, 2, in, 0); /* a NULL input */
            break;
        case 4:
            r = aw_gather(loop, 1, in, 0x100); /* unknown flags */
            break;
        case 5:
            r = aw_wait(loop, 1, in, 99, AW_NO_TIMEOUT); /* unknown mode */
            break;
        case 6:
            r = aw_wait(loop, 1, in, AW_FIRST_COMPLETED, NAN);
            break;
        case 7:
            r = aw_wait_for(in[0], NAN);
            break;
        case 8:
            in[1] = aw_future_new(other); /* of another loop */
            r = aw_race(loop, 2, in);
            break;
        case 9:
            r = aw_then(in[0], never_step, NULL);
            aw_future_cancel(r, NULL); /* before the step ran */
            break;
        default:
            ck_assert_ptr_null(aw_as_completed_new(loop, 1, in, NAN));
            r = NULL;
            break;
        }
        if (r != NULL) {
            ck_assert_int_ne(aw_future_error(r), 0);
            aw_future_unref(r);
        }
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
        ck_assert_msg(destroyed == 1, "call %d kept its input", i);
    }
    ck_assert_int_eq(aw_loop_free(other), 0);
}
END_TEST

/* ---- timeouts already past ---------------------------------------------------- */

/* asyncio test_wait_for_timeout_less_then_0_or_0: a timeout of 0 or less
 * has expired: the input is cancelled and the wait fails with
 * AW_ETIMEDOUT; a future already done is its own outcome. */
START_TEST(wait_for_timeout_less_then_0_or_0)
{
    const double timeouts[] = {0, -1, -INFINITY};
    aw_future *in, *w;
    size_t i;

    for (i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        in = aw_future_new(loop);
        w = aw_wait_for(aw_future_ref(in), timeouts[i]);
        ck_assert_ptr_ne(w, in);
        run(w);
        ck_assert_int_eq(aw_future_error(w), AW_ETIMEDOUT);
        ck_assert_int_eq(aw_future_cancelled(in), 1);
        aw_future_unref(w);
        aw_future_unref(in);
    }
    in = aw_future_resolved_int(loop, 5);
    w = aw_wait_for(aw_future_ref(in), 0);
    ck_assert_ptr_eq(w, in); /* done: its own outcome */
    ck_assert_int_eq(int_result(w), 5);
    aw_future_unref(w);
    aw_future_unref(in);
}
END_TEST

/* aw_wait and aw_as_completed: a timeout already past expires on the
 * next pass, not never. */
START_TEST(wait_and_as_completed_timeout_in_the_past)
{
    aw_future *in[1], *w, *n;
    aw_as_completed *it;
    aw_wait_sets *s;

    in[0] = aw_future_new(loop);
    w = aw_wait(loop, 1, in, AW_ALL_COMPLETED, -1);
    run(w);
    ck_assert_int_eq(aw_future_result(w, (void **)&s), 0);
    ck_assert_int_eq(s->npending, 1);
    aw_future_unref(w);

    in[0] = aw_future_new(loop);
    it = aw_as_completed_new(loop, 1, in, -5);
    n = aw_as_completed_next(it);
    run(n);
    ck_assert_int_eq(aw_future_error(n), AW_ETIMEDOUT);
    aw_future_unref(n);
    aw_as_completed_free(it);
}
END_TEST

/* asyncio test_as_completed_reverse_wait: the futures as_completed hands
 * out are interchangeable: the first one awaited gets the first input to
 * finish, whatever order they were handed out in; also for inputs that
 * finished before anything was awaited. */
START_TEST(as_completed_reverse_wait)
{
    aw_future *in[2], *n[2];
    aw_as_completed *it;
    void *p;
    int round;

    for (round = 0; round < 2; round++) {
        if (round == 0) {
            in[0] = later(0.002, 1, 0); /* 'a' finishes first */
            in[1] = later(0.02, 2, 0);
        } else {
            in[0] = aw_future_resolved_int(loop, 1);
            in[1] = aw_future_resolved_int(loop, 2);
        }
        it = aw_as_completed_new(loop, 2, in, AW_NO_TIMEOUT);
        n[0] = aw_as_completed_next(it);
        n[1] = aw_as_completed_next(it);
        run(n[1]); /* awaited first: gets the first to finish */
        ck_assert_int_eq(aw_future_result(n[1], &p), 0);
        ck_assert_int_eq(int_result(p), 1);
        ck_assert_int_eq(aw_future_done(n[0]), 0);
        run(n[0]);
        ck_assert_int_eq(aw_future_result(n[0], &p), 0);
        ck_assert_int_eq(int_result(p), 2);
        aw_future_unref(n[0]);
        aw_future_unref(n[1]);
        aw_as_completed_free(it);
    }
}
END_TEST

/* A future handed out and cancelled by its holder gives its turn back: the
 * input goes to the next one awaited. */
START_TEST(as_completed_cancelled_turn_given_back)
{
    aw_future *in[1], *a, *b;
    aw_as_completed *it;
    void *p;

    in[0] = later(0.002, 9, 0);
    it = aw_as_completed_new(loop, 1, in, AW_NO_TIMEOUT);
    a = aw_as_completed_next(it);
    ck_assert_int_eq(aw_future_cancel(a, NULL), 0);
    b = aw_as_completed_next(it);
    ck_assert_int_eq(aw_future_error(b), AW_EINVALSTATE); /* pending */
    run(b);
    ck_assert_int_eq(aw_future_result(b, &p), 0);
    ck_assert_int_eq(int_result(p), 9);
    aw_future_unref(a);
    aw_future_unref(b);
    aw_as_completed_free(it);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("future");
    TCase *tc = aw_test_tcase("future");

    tcase_add_test(tc, future_initial_state_pending);
    tcase_add_test(tc, result_of_pending_is_invalid_state);
    tcase_add_test(tc, set_result_destroyed_once_on_free);
    tcase_add_test(tc, set_result_int_shortcut);
    tcase_add_test(tc, set_twice_is_invalid_state);
    tcase_add_test(tc, set_error_with_message);
    tcase_add_test(tc, set_error_rejects_non_errors);
    tcase_add_test(tc, cancel_with_message);
    tcase_add_test(tc, take_result_moves_ownership);
    tcase_add_test(tc, callbacks_run_in_order_added);
    tcase_add_test(tc, callbacks_scheduled_not_called);
    tcase_add_test(tc, callback_added_after_settle_runs_after_earlier_calls);
    tcase_add_test(tc, remove_done_callback);
    tcase_add_test(tc, remove_every_callback_then_settle);
    tcase_add_test(tc, done_callback_failure_reported);
    tcase_add_test(tc, unretrieved_error_reported_on_free);
    tcase_add_test(tc, unref_pending_future_drops_its_callbacks);
    tcase_add_test(tc, failed_constructor_codes);
    tcase_add_test(tc, run_until_complete_returns_outcome);
    tcase_add_test(tc, run_until_complete_stopped_early);
    tcase_add_test(tc, loop_close_busy_while_future_alive);
    tcase_add_test(tc, then_runs_on_result);
    tcase_add_test(tc, then_step_not_called_synchronously);
    tcase_add_test(tc, errors_skip_then_until_catch);
    tcase_add_test(tc, error_passes_through_then_with_message);
    tcase_add_test(tc, catch_passes_result_and_cancellation);
    tcase_add_test(tc, finally_runs_on_every_outcome);
    tcase_add_test(tc, finally_error_replaces_outcome);
    tcase_add_test(tc, then_flattens_returned_future);
    tcase_add_test(tc, then_shares_result_of_held_future);
    tcase_add_test(tc, then_bad_steps_fail_the_chain);
    tcase_add_test(tc, cancel_chain_cancels_upstream_it_holds_alone);
    tcase_add_test(tc, cancel_chain_leaves_shared_upstream);
    tcase_add_test(tc, step_may_cancel_and_drop_its_chain);
    tcase_add_test(tc, chain_of_1m_steps_constant_stack_frees_as_it_goes);
    tcase_add_test(tc, drop_and_cancel_long_pending_chain);
    tcase_add_test(tc, gather_results_in_order_given);
    tcase_add_test(tc, gather_first_failure_fails_others_go_on);
    tcase_add_test(tc, gather_return_errors_collects_every_outcome);
    tcase_add_test(tc, gather_child_cancelled_fails_gather);
    tcase_add_test(tc, gather_cancel_cancels_children);
    tcase_add_test(tc, gather_empty_duplicates_and_settled_inputs);
    tcase_add_test(tc, combinators_reject_bad_inputs);
    tcase_add_test(tc, any_first_success_cancels_others);
    tcase_add_test(tc, any_fails_only_when_all_fail);
    tcase_add_test(tc, race_settles_like_first_settled);
    tcase_add_test(tc, wait_first_completed);
    tcase_add_test(tc, wait_first_error);
    tcase_add_test(tc, wait_all_completed_and_duplicates);
    tcase_add_test(tc, wait_timeout_gives_pending_set);
    tcase_add_test(tc, as_completed_order);
    tcase_add_test(tc, as_completed_settled_first_and_timeout);
    tcase_add_test(tc, wait_for_result_before_timeout);
    tcase_add_test(tc, wait_for_timeout_cancels);
    tcase_add_test(tc, wait_for_keeps_late_result);
    tcase_add_test(tc, wait_for_cancel_cancels_inner);
    tcase_add_test(tc, wait_for_without_timeout_is_the_future);
    tcase_add_test(tc, shield_outer_cancel_leaves_inner);
    tcase_add_test(tc, bad_arguments_return_einval);
    tcase_add_test(tc, out_of_memory_gives_shared_failed_future);
    tcase_add_test(tc, allocation_failures_anywhere_leak_nothing);
    tcase_add_test(tc, cancel_gather_1);
    tcase_add_test(tc, cancel_refused_once_outcome_decided);
    tcase_add_test(tc, wait_really_done);
    tcase_add_test(tc, taking_calls_release_input_on_error);
    tcase_add_test(tc, wait_for_timeout_less_then_0_or_0);
    tcase_add_test(tc, wait_and_as_completed_timeout_in_the_past);
    tcase_add_test(tc, as_completed_reverse_wait);
    tcase_add_test(tc, as_completed_cancelled_turn_given_back);
    suite_add_tcase(s, tc);
    return s;
}

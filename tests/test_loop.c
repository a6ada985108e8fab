/* SPDX-License-Identifier: MIT */
/* test_loop.c: the event loop's behaviour, after CPython's
 * test_asyncio/test_base_events.py and test_events.py where they apply. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

struct entry {
    int id;
    int stop; /* stop the loop after recording */
};

static int
record_cb(aw_loop *l, void *arg)
{
    struct entry *e = arg;

    record(e->id);
    if (e->stop)
        aw_loop_stop(l);
    return 0;
}

static int
stop_cb(aw_loop *l, void *arg)
{
    (void)arg;
    return aw_loop_stop(l);
}

/* ---- call_soon ---------------------------------------------------------- */

START_TEST(call_soon_fifo)
{
    struct entry e[5] = {{1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 1}};
    const int want[] = {1, 2, 3, 4, 5};
    int i;

    order.n = 0;
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &e[i], NULL), 0);
    ck_assert_int_eq(order.n, 0); /* never run inside call_soon */
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 5);
}
END_TEST

static struct entry next_b = {2, 0};

static int
schedule_b_cb(aw_loop *l, void *arg)
{
    record_cb(l, arg);
    ck_assert_int_eq(aw_loop_call_soon(l, record_cb, &next_b, NULL), 0);
    return aw_loop_stop(l);
}

/* asyncio: a callback scheduled during a pass runs on the next pass, and
 * stop() lets the current pass finish. */
START_TEST(call_soon_next_pass_rule)
{
    struct entry a = {1, 0}, c = {3, 0};
    const int first[] = {1, 3}, second[] = {1, 3, 2};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, schedule_b_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &c, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(first, 2);
    ck_assert_int_eq(aw_loop_call_soon(loop, stop_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(second, 3);
}
END_TEST

/* ---- timers ------------------------------------------------------------- */

START_TEST(call_later_deadline_order)
{
    struct entry e[4] = {{1, 0}, {2, 0}, {3, 0}, {4, 1}};
    const int want[] = {1, 2, 3, 4};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_later(loop, 0.03, record_cb, &e[2], NULL),
                     0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0.01, record_cb, &e[0], NULL),
                     0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0.04, record_cb, &e[3], NULL),
                     0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0.02, record_cb, &e[1], NULL),
                     0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 4);
}
END_TEST

START_TEST(call_at_ties_in_scheduling_order)
{
    struct entry e[6] = {{1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}, {6, 1}};
    const int want[] = {1, 2, 3, 4, 5, 6};
    double when = aw_loop_time(loop) + 0.01;
    int i;

    order.n = 0;
    for (i = 0; i < 6; i++)
        ck_assert_int_eq(aw_loop_call_at(loop, when, record_cb, &e[i], NULL),
                         0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 6);
}
END_TEST

static double fired_at;

static int
note_time_cb(aw_loop *l, void *arg)
{
    (void)arg;
    fired_at = aw_loop_time(l);
    return aw_loop_stop(l);
}

START_TEST(call_later_waits_its_delay)
{
    double t0 = aw_loop_time(loop);

    ck_assert_int_eq(aw_loop_call_later(loop, 0.05, note_time_cb, NULL, NULL),
                     0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_msg(fired_at - t0 >= 0.05, "fired after %f s", fired_at - t0);
    ck_assert(aw_loop_time(loop) >= fired_at);
}
END_TEST

/* asyncio appends due timers behind the callbacks already ready. */
START_TEST(call_later_zero_runs_after_call_soon)
{
    struct entry a = {1, 0}, b = {2, 1}, c = {3, 0};
    const int want[] = {1, 3, 2};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0, record_cb, &b, NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &c, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 3);
}
END_TEST

START_TEST(cancelled_timers_purged_and_never_run)
{
    static struct entry e[1000];
    aw_handle *h[1000];
    double when = aw_loop_time(loop) + 0.01;
    int i;

    order.n = 0;
    for (i = 0; i < 1000; i++) {
        e[i].id = i;
        e[i].stop = 0;
        ck_assert_int_eq(
            aw_loop_call_at(loop, when + i * 1e-6, record_cb, &e[i], &h[i]),
            0);
    }
    /* Cancel all but every 100th: most of the heap is cancelled. */
    for (i = 0; i < 1000; i++)
        if (i % 100 != 0)
            ck_assert_int_eq(aw_handle_cancel(h[i]), 0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0.05, stop_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(order.n, 10);
    for (i = 0; i < 10; i++)
        ck_assert_int_eq(order.items[i], i * 100);
    for (i = 0; i < 1000; i++)
        aw_handle_unref(h[i]);
}
END_TEST

/* ---- handles ------------------------------------------------------------ */

START_TEST(handle_cancel_before_run)
{
    struct entry a = {1, 0}, b = {2, 1};
    const int want[] = {2};
    aw_handle *h, *t;

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, &h), 0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0.001, record_cb, &a, &t), 0);
    ck_assert_int_eq(aw_loop_call_later(loop, 0.01, record_cb, &b, NULL), 0);
    ck_assert_int_eq(aw_handle_cancel(h), 0);
    ck_assert_int_eq(aw_handle_cancel(t), 0);
    ck_assert(aw_handle_cancelled(h));
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 1);
    aw_handle_unref(h);
    aw_handle_unref(t);
}
END_TEST

START_TEST(handle_cancel_after_run_or_twice_is_noop)
{
    struct entry a = {1, 1};
    aw_handle *h, *t;

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, &h), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(order.n, 1);
    ck_assert_int_eq(aw_handle_cancel(h), AW_EINVALSTATE);
    ck_assert(!aw_handle_cancelled(h));
    ck_assert_int_eq(aw_loop_call_later(loop, 5, record_cb, &a, &t), 0);
    ck_assert_int_eq(aw_handle_cancel(t), 0);
    ck_assert_int_eq(aw_handle_cancel(t), AW_EINVALSTATE);
    ck_assert_int_eq(aw_handle_cancel(NULL), -EINVAL);
    aw_handle_unref(h);
    aw_handle_unref(t);
    aw_handle_unref(NULL);
}
END_TEST

/* ---- running and stopping ------------------------------------------------ */

START_TEST(stop_from_callback)
{
    struct entry a = {1, 1}, b = {2, 0};
    const int want[] = {1, 2};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert(!aw_loop_is_running(loop));
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &b, NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, stop_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 2);
}
END_TEST

static int
reschedule_b_cb(aw_loop *l, void *arg)
{
    record_cb(l, arg);
    return aw_loop_call_soon(l, record_cb, &next_b, NULL);
}

/* asyncio: stop() before run_forever() runs one iteration, then stops. */
START_TEST(stop_before_run_runs_one_iteration)
{
    struct entry a = {1, 0};
    const int want[] = {1}, want2[] = {1, 2};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, reschedule_b_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_stop(loop), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 1);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want2, 2);
}
END_TEST

static int nested_rc, other_rc;

static int
nested_run_cb(aw_loop *l, void *arg)
{
    aw_loop *other = arg;

    nested_rc = aw_loop_run_forever(l);
    other_rc = aw_loop_run_forever(other);
    ck_assert_ptr_eq(aw_get_running_loop(), l);
    ck_assert(aw_loop_is_running(l));
    return aw_loop_stop(l);
}

START_TEST(run_while_running_refused)
{
    aw_loop *other;

    ck_assert_int_eq(aw_loop_new(&other), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, nested_run_cb, other, NULL), 0);
    ck_assert_ptr_null(aw_get_running_loop());
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(nested_rc, AW_ERUNNING);
    ck_assert_int_eq(other_rc, AW_ERUNNING);
    ck_assert_ptr_null(aw_get_running_loop());
    ck_assert_int_eq(aw_loop_free(other), 0);
}
END_TEST

static int close_rc;

static int
close_inside_cb(aw_loop *l, void *arg)
{
    (void)arg;
    close_rc = aw_loop_close(l);
    return aw_loop_stop(l);
}

START_TEST(close_with_pending_work_reports_busy)
{
    struct entry a = {1, 1};
    aw_handle *h;
    int fds[2];

    capture_reports();
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.code, AW_EBUSY);
    ck_assert_ptr_nonnull(strstr(cap.message, "1 callbacks"));
    ck_assert(!aw_loop_is_closed(loop));
    /* The loop is untouched and still works. */
    order.n = 0;
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(order.n, 1);

    /* A pending timer, a reader, a held handle: each keeps it open. */
    ck_assert_int_eq(aw_loop_call_later(loop, 10, record_cb, &a, &h), 0);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    ck_assert_int_eq(aw_handle_cancel(h), 0);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY); /* handle still held */
    aw_handle_unref(h);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[0], stop_cb, NULL), 0);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    ck_assert_int_eq(aw_loop_remove_reader(loop, fds[0]), 1);
    close(fds[0]);
    close(fds[1]);

    /* Closing from inside a callback is refused too. */
    ck_assert_int_eq(aw_loop_call_soon(loop, close_inside_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(close_rc, AW_ERUNNING);

    ck_assert_int_eq(aw_loop_close(loop), 0);
    ck_assert(aw_loop_is_closed(loop));
    ck_assert_int_eq(aw_loop_close(loop), 0);
}
END_TEST

START_TEST(calls_on_closed_loop_refused)
{
    struct entry a = {1, 0};
    int fds[2];

    ck_assert_int_eq(aw_loop_close(loop), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), AW_ECLOSED);
    ck_assert_int_eq(aw_loop_call_later(loop, 1, record_cb, &a, NULL),
                     AW_ECLOSED);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(loop, record_cb, &a),
                     AW_ECLOSED);
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[0], record_cb, &a),
                     AW_ECLOSED);
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, SIGUSR2, record_cb, &a),
                     AW_ECLOSED);
    ck_assert_int_eq(aw_loop_run_forever(loop), AW_ECLOSED);
    ck_assert_int_eq(aw_loop_run_once(loop, 0), AW_ECLOSED);
    ck_assert_int_eq(aw_loop_stop(loop), AW_ECLOSED);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

START_TEST(run_once_runs_ready_callbacks)
{
    struct entry a = {1, 0}, b = {2, 0};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &b, NULL), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, 0), 0);
    ck_assert_int_eq(order.n, 2);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, 42), -EINVAL);
}
END_TEST

/* ---- starvation bound ---------------------------------------------------- */

static long spins;

static int
spin_cb(aw_loop *l, void *arg)
{
    spins++;
    return aw_loop_call_soon(l, spin_cb, arg, (aw_handle **)arg);
}

struct spin_stop {
    aw_handle *spinner;
    long spins_seen;
};

static int
reader_stops_spinner_cb(aw_loop *l, void *arg)
{
    struct spin_stop *s = arg;

    s->spins_seen = spins;
    aw_handle_cancel(s->spinner);
    return aw_loop_stop(l);
}

static int
spin_handle_cb(aw_loop *l, void *arg)
{
    struct spin_stop *s = arg;

    spins++;
    aw_handle_unref(s->spinner);
    return aw_loop_call_soon(l, spin_handle_cb, s, &s->spinner);
}

/* A callback that reschedules itself forever must not starve I/O. */
START_TEST(io_not_starved_by_callback_chain)
{
    struct spin_stop s = {NULL, 0};
    int fds[2];

    spins = 0;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    ck_assert_int_eq(aw_loop_call_soon(loop, spin_handle_cb, &s, &s.spinner),
                     0);
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[0], reader_stops_spinner_cb,
                                        &s),
                     0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_msg(s.spins_seen <= 64, "I/O waited for %ld passes",
                  s.spins_seen);
    aw_handle_unref(s.spinner);
    ck_assert_int_eq(aw_loop_remove_reader(loop, fds[0]), 1);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

START_TEST(timers_not_starved_by_callback_chain)
{
    struct spin_stop s = {NULL, 0};

    spins = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, spin_handle_cb, &s, &s.spinner),
                     0);
    ck_assert_int_eq(
        aw_loop_call_later(loop, 0.02, reader_stops_spinner_cb, &s, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert(s.spins_seen > 0);
    aw_handle_unref(s.spinner);
    (void)spin_cb;
}
END_TEST

/* ---- file descriptors ----------------------------------------------------- */

struct io_state {
    int fd;
    int reads, writes;
    char buf[16];
};

static int
on_readable(aw_loop *l, void *arg)
{
    struct io_state *st = arg;
    ssize_t n = read(st->fd, st->buf, sizeof(st->buf) - 1);

    ck_assert_int_gt(n, 0);
    st->buf[n] = '\0';
    st->reads++;
    return aw_loop_stop(l);
}

static int
on_writable(aw_loop *l, void *arg)
{
    struct io_state *st = arg;

    st->writes++;
    ck_assert_int_eq(write(st->fd, "ping", 4), 4);
    ck_assert_int_eq(aw_loop_remove_writer(l, st->fd), 1);
    return 0;
}

START_TEST(reader_and_writer_on_socketpair)
{
    struct io_state r = {0}, w = {0};
    int fds[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    r.fd = fds[0];
    w.fd = fds[1];
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[0], on_readable, &r), 0);
    ck_assert_int_eq(aw_loop_add_writer(loop, fds[1], on_writable, &w), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(w.writes, 1);
    ck_assert_int_eq(r.reads, 1);
    ck_assert_str_eq(r.buf, "ping");
    ck_assert_int_eq(aw_loop_remove_writer(loop, fds[1]), 0);
    ck_assert_int_eq(aw_loop_remove_reader(loop, fds[0]), 1);
    ck_assert_int_eq(aw_loop_remove_reader(loop, fds[0]), 0);
    /* A reader can be added again after removal. */
    ck_assert_int_eq(write(fds[1], "pong", 4), 4);
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[0], on_readable, &r), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_str_eq(r.buf, "pong");
    ck_assert_int_eq(aw_loop_remove_reader(loop, fds[0]), 1);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

START_TEST(fd_watchers_reject_bad_fds)
{
    struct io_state st = {0};
    int fds[2], file;
    char path[] = "/tmp/awtestXXXXXX";

    ck_assert_int_eq(aw_loop_add_reader(loop, -1, on_readable, &st), -EBADF);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    close(fds[0]);
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[0], on_readable, &st),
                     -EBADF);
    ck_assert_int_eq(aw_loop_add_writer(loop, fds[0], on_readable, &st),
                     -EBADF);
    ck_assert_int_eq(aw_loop_add_reader(loop, fds[1], NULL, &st), -EINVAL);
    ck_assert_int_eq(aw_loop_add_reader(NULL, fds[1], on_readable, &st),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_remove_reader(loop, -1), -EBADF);
    ck_assert_int_eq(aw_loop_remove_reader(loop, 100000), 0);
    file = mkstemp(path);
    ck_assert_int_ge(file, 0);
    unlink(path);
    ck_assert_int_eq(aw_loop_add_reader(loop, file, on_readable, &st), -EPERM);
    close(file);
    close(fds[1]);
    /* The loop still works. */
    ck_assert_int_eq(aw_loop_call_soon(loop, stop_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
}
END_TEST

/* select() cannot watch an fd of FD_SETSIZE or more: on that backend such
 * an fd is refused (-EMFILE) instead of aborting in libevent; the others
 * watch it. */
START_TEST(fd_beyond_select_limit)
{
    const char *method = event_base_get_method(aw_loop_get_base(loop));
    struct io_state st = {0};
    struct rlimit rl;
    int fds[2], high = FD_SETSIZE + 10;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur <= (rlim_t)high) {
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_cur <= (rlim_t)high || setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return; /* cannot open such an fd here */
    }
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    ck_assert_int_eq(dup2(fds[0], high), high);
    st.fd = high;
    if (strcmp(method, "select") == 0) {
        ck_assert_int_eq(aw_loop_add_reader(loop, high, on_readable, &st),
                         -EMFILE);
        ck_assert_int_eq(aw_loop_add_writer(loop, high, on_readable, &st),
                         -EMFILE);
    } else {
        ck_assert_int_eq(write(fds[1], "big", 3), 3);
        ck_assert_int_eq(aw_loop_add_reader(loop, high, on_readable, &st), 0);
        ck_assert_int_eq(aw_loop_run_forever(loop), 0);
        ck_assert_str_eq(st.buf, "big");
        ck_assert_int_eq(aw_loop_remove_reader(loop, high), 1);
    }
    close(high);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* ---- signals --------------------------------------------------------------- */

static int signals_seen;

static int
on_signal(aw_loop *l, void *arg)
{
    (void)arg;
    signals_seen++;
    return aw_loop_stop(l);
}

static int
raise_cb(aw_loop *l, void *arg)
{
    (void)l;
    raise(*(int *)arg);
    return 0;
}

START_TEST(signal_handler_delivery)
{
    int sig = SIGUSR1;

    signals_seen = 0;
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, SIGUSR1, on_signal, NULL),
                     0);
    ck_assert_int_eq(aw_loop_call_soon(loop, raise_cb, &sig, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(signals_seen, 1);
    /* Delivered again: the handler stays until removed. */
    ck_assert_int_eq(aw_loop_call_soon(loop, raise_cb, &sig, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(signals_seen, 2);
    ck_assert_int_eq(aw_loop_remove_signal_handler(loop, SIGUSR1), 1);
    ck_assert_int_eq(aw_loop_remove_signal_handler(loop, SIGUSR1), 0);
}
END_TEST

START_TEST(signal_handler_rejects_bad_signals)
{
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, 0, on_signal, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, -3, on_signal, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, 100000, on_signal, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, SIGKILL, on_signal, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, SIGSTOP, on_signal, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_add_signal_handler(loop, SIGUSR1, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_remove_signal_handler(loop, 0), -EINVAL);
    ck_assert_int_eq(aw_loop_remove_signal_handler(loop, SIGUSR2), 0);
}
END_TEST

/* ---- threads --------------------------------------------------------------- */

#define TS_THREADS 4

struct ts_producer {
    pthread_t thread;
    int index;
    long calls;
    long next_expected; /* checked on the loop thread: per-thread order */
    long received;
    long out_of_order;
};

static struct ts_producer producers[TS_THREADS];
static long ts_total, ts_expected;

struct ts_token {
    struct ts_producer *p;
    long seq;
};

static int
ts_cb(aw_loop *l, void *arg)
{
    struct ts_token *tok = arg;
    struct ts_producer *p = tok->p;

    if (tok->seq != p->next_expected)
        p->out_of_order++;
    p->next_expected = tok->seq + 1;
    p->received++;
    free(tok);
    if (++ts_total == ts_expected)
        return aw_loop_stop(l);
    return 0;
}

static void *
ts_thread(void *arg)
{
    struct ts_producer *p = arg;
    long i;

    for (i = 0; i < p->calls; i++) {
        struct ts_token *tok = malloc(sizeof(*tok));

        tok->p = p;
        tok->seq = i;
        ck_assert_int_eq(aw_loop_call_soon_threadsafe(loop, ts_cb, tok), 0);
    }
    return NULL;
}

START_TEST(call_soon_threadsafe_4_threads_exactly_once)
{
    long per_thread = aw_test_slow() ? 10000 : 100000;
    int i;

    ts_total = 0;
    ts_expected = per_thread * TS_THREADS;
    for (i = 0; i < TS_THREADS; i++) {
        memset(&producers[i], 0, sizeof(producers[i]));
        producers[i].index = i;
        producers[i].calls = per_thread;
        ck_assert_int_eq(pthread_create(&producers[i].thread, NULL, ts_thread,
                                        &producers[i]),
                         0);
    }
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    for (i = 0; i < TS_THREADS; i++) {
        pthread_join(producers[i].thread, NULL);
        ck_assert_int_eq(producers[i].received, per_thread);
        ck_assert_int_eq(producers[i].out_of_order, 0);
    }
    ck_assert_int_eq(ts_total, ts_expected);
}
END_TEST

/* asyncio appends call_soon and call_soon_threadsafe to one queue: from
 * the loop's thread, the order of the calls is the order they run in. */
static int
mixed_soon_cb(aw_loop *l, void *arg)
{
    static struct entry e[4] = {{1, 0}, {2, 0}, {3, 0}, {4, 1}};

    (void)arg;
    ck_assert_int_eq(aw_loop_call_soon(l, record_cb, &e[0], NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(l, record_cb, &e[1]), 0);
    ck_assert_int_eq(aw_loop_call_soon(l, record_cb, &e[2], NULL), 0);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(l, record_cb, &e[3]), 0);
    return 0;
}

START_TEST(call_soon_threadsafe_in_loop_thread_keeps_fifo)
{
    static struct entry early = {9, 0};
    const int want[] = {1, 9, 2, 3, 4};

    order.n = 0;
    /* Queued under the lock before the run: it joins the ready queue when
     * the loop wakes, at the latest before the next thread-safe call from
     * this thread (calls from one thread run in the order made). */
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(loop, record_cb, &early),
                     0);
    ck_assert_int_eq(aw_loop_call_soon(loop, mixed_soon_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 5);
}
END_TEST

static void *
late_wake_thread(void *arg)
{
    struct timespec ts = {0, 50 * 1000 * 1000};

    nanosleep(&ts, NULL);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(loop, note_time_cb, arg), 0);
    return NULL;
}

/* The loop sleeps with nothing to do but a far timer; the thread-safe call
 * must wake it at once. */
START_TEST(call_soon_threadsafe_wakes_sleeping_loop)
{
    pthread_t t;
    aw_handle *far;
    double t0 = aw_loop_time(loop);

    ck_assert_int_eq(aw_loop_call_later(loop, 30, stop_cb, NULL, &far), 0);
    ck_assert_int_eq(pthread_create(&t, NULL, late_wake_thread, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    pthread_join(t, NULL);
    ck_assert_msg(fired_at - t0 < 10, "woke after %f s", fired_at - t0);
    ck_assert_int_eq(aw_handle_cancel(far), 0);
    aw_handle_unref(far);
}
END_TEST

static int wrong_thread_rc;

static void *
wrong_thread(void *arg)
{
    (void)arg;
    wrong_thread_rc = aw_loop_call_soon(loop, stop_cb, NULL, NULL);
    aw_loop_call_soon_threadsafe(loop, stop_cb, NULL);
    return NULL;
}

static int
start_wrong_thread_cb(aw_loop *l, void *arg)
{
    pthread_t *t = arg;

    (void)l;
    ck_assert_int_eq(pthread_create(t, NULL, wrong_thread, NULL), 0);
    return 0;
}

START_TEST(debug_mode_refuses_call_soon_from_other_thread)
{
    pthread_t t;

    ck_assert_int_eq(aw_loop_set_debug(loop, 1), 0);
    ck_assert(aw_loop_get_debug(loop));
    ck_assert_int_eq(aw_loop_call_soon(loop, start_wrong_thread_cb, &t, NULL),
                     0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(wrong_thread_rc, AW_EWRONGTHREAD);
}
END_TEST

/* Two loops on one event_base run on one thread: a callback of the one
 * may schedule on the other, which runs (it is not a wrong thread). */
static int sharing_rc = 1;

static int
call_soon_on_other_cb(aw_loop *l, void *arg)
{
    (void)l;
    sharing_rc = aw_loop_call_soon(arg, stop_cb, NULL, NULL);
    if (sharing_rc != 0)
        aw_loop_stop(arg);
    return 0;
}

START_TEST(debug_mode_accepts_loops_sharing_a_thread)
{
    aw_loop *b = NULL;

    ck_assert_int_eq(aw_loop_set_debug(loop, 1), 0);
    ck_assert_int_eq(aw_loop_new_with_base(&b, aw_loop_get_base(loop)), 0);
    ck_assert_int_eq(aw_loop_set_debug(b, 1), 0);
    ck_assert_int_eq(aw_loop_call_soon(b, call_soon_on_other_cb, loop, NULL),
                     0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(sharing_rc, 0);
    ck_assert_int_eq(aw_loop_free(b), 0);
}
END_TEST

/* ---- exception handler and debug mode ---------------------------------- */

/* Not static: exported (-export-dynamic) so that reports can name it. */
int aw_test_failing_callback(aw_loop *l, void *arg);
int aw_test_slow_callback(aw_loop *l, void *arg);

int
aw_test_failing_callback(aw_loop *l, void *arg)
{
    (void)arg;
    aw_loop_stop(l);
    return -EIO;
}

START_TEST(exception_handler_receives_callback_failure)
{
    int token;

    capture_reports();
    ck_assert_int_eq(
        aw_loop_call_soon(loop, aw_test_failing_callback, &token, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.code, -EIO);
    ck_assert(cap.callback == aw_test_failing_callback);
    ck_assert_msg(strstr(cap.message, "aw_test_failing_callback") != NULL,
                  "message: %s", cap.message);
    /* NULL restores the default handler (which prints to stderr). */
    ck_assert_int_eq(aw_loop_set_exception_handler(loop, NULL, NULL), 0);
    ck_assert_int_eq(
        aw_loop_call_soon(loop, aw_test_failing_callback, &token, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(aw_loop_set_exception_handler(NULL, NULL, NULL), -EINVAL);
}
END_TEST

/* The context applications fill in grows without breaking old binaries: a
 * leading size, checked (issue 12). */
START_TEST(exception_context_size_checked)
{
    struct {
        aw_exception_context ctx;
        int newer_field;
    } bigger;
    aw_exception_context ctx;
    int token;

    capture_reports();
    memset(&ctx, 0, sizeof(ctx));
    ctx.message = "size not set";
    ck_assert_int_eq(aw_loop_call_exception_handler(loop, &ctx), -EINVAL);
    ctx.size = offsetof(aw_exception_context, duration);
    ck_assert_int_eq(aw_loop_call_exception_handler(loop, &ctx), -EINVAL);
    ck_assert(!AW_EXCEPTION_CONTEXT_HAS(&ctx, duration));
    ck_assert(AW_EXCEPTION_CONTEXT_HAS(&ctx, callback_arg));
    ck_assert_int_eq(aw_loop_call_exception_handler(loop, NULL), -EINVAL);
    ck_assert_int_eq(aw_loop_call_exception_handler(NULL, &ctx), -EINVAL);
    ck_assert_int_eq(cap.calls, 0);
    /* The default handler ignores a context of a wrong size, too. */
    aw_loop_default_exception_handler(loop, &ctx);
    aw_loop_default_exception_handler(loop, NULL);
    ctx.size = sizeof(ctx);
    ctx.message = "sized";
    ctx.code = -EIO;
    ck_assert_int_eq(aw_loop_call_exception_handler(loop, &ctx), 0);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_uint_eq(cap.size, sizeof(ctx));
    ck_assert_str_eq(cap.message, "sized");
    ck_assert(AW_EXCEPTION_CONTEXT_HAS(&ctx, duration));
    /* A newer, larger context is passed on as it is. */
    memset(&bigger, 0, sizeof(bigger));
    bigger.ctx.size = sizeof(bigger);
    bigger.ctx.message = "from a newer header";
    ck_assert_int_eq(aw_loop_call_exception_handler(loop, &bigger.ctx), 0);
    ck_assert_int_eq(cap.calls, 2);
    ck_assert_uint_eq(cap.size, sizeof(bigger));
    /* The library's own reports carry the size. */
    ck_assert_int_eq(
        aw_loop_call_soon(loop, aw_test_failing_callback, &token, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(cap.calls, 3);
    ck_assert_uint_eq(cap.size, sizeof(aw_exception_context));
}
END_TEST

int
aw_test_slow_callback(aw_loop *l, void *arg)
{
    struct timespec ts = {0, 30 * 1000 * 1000};

    (void)arg;
    nanosleep(&ts, NULL);
    return aw_loop_stop(l);
}

START_TEST(debug_mode_reports_slow_callback)
{

    capture_reports();
    /* Not in debug mode: no report. */
    ck_assert_int_eq(aw_loop_set_slow_callback_duration(loop, 0.01), 0);
    ck_assert_int_eq(
        aw_loop_call_soon(loop, aw_test_slow_callback, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(cap.calls, 0);
    ck_assert_int_eq(aw_loop_set_debug(loop, 1), 0);
    ck_assert_int_eq(
        aw_loop_call_soon(loop, aw_test_slow_callback, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert(cap.duration >= 0.01);
    ck_assert_uint_eq(cap.size, sizeof(aw_exception_context));
    ck_assert(cap.callback == aw_test_slow_callback);
    ck_assert_msg(strstr(cap.message, "aw_test_slow_callback") != NULL &&
                      strstr(cap.message, "took") != NULL,
                  "message: %s", cap.message);
    ck_assert_int_eq(aw_loop_set_slow_callback_duration(loop, -1), -EINVAL);
    ck_assert_int_eq(aw_loop_set_slow_callback_duration(loop, NAN), -EINVAL);
}
END_TEST

START_TEST(callback_name_falls_back_to_address)
{
    char buf[128];

    aw_callback_name(stop_cb, buf, sizeof(buf)); /* static: not exported */
    ck_assert_msg(strstr(buf, "0x") != NULL && strstr(buf, "test_loop") != NULL,
                  "name: %s", buf);
    aw_callback_name(aw_test_slow_callback, buf, sizeof(buf));
    ck_assert_str_eq(buf, "aw_test_slow_callback");
    aw_callback_name(NULL, buf, sizeof(buf));
    ck_assert_str_eq(buf, "(null)");
}
END_TEST

/* ---- adopting a libevent base -------------------------------------------- */

static int adopted_runs;

static int
adopted_cb(aw_loop *l, void *arg)
{
    (void)arg;
    adopted_runs++;
    ck_assert_ptr_eq(aw_get_running_loop(), l);
    return 0;
}

static void
libevent_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    adopted_runs += 100;
    aw_loop_stop(arg); /* breaks libevent's own dispatch */
}

START_TEST(adopt_external_event_base)
{
    struct event_base *base = event_base_new();
    struct event *ev;
    struct timeval tv = {0, 20000};
    aw_loop *adopted;

    ck_assert_ptr_nonnull(base);
    ck_assert_int_eq(aw_loop_new_with_base(&adopted, base), 0);
    ck_assert_ptr_eq(aw_loop_get_base(adopted), base);
    ev = evtimer_new(base, libevent_timer_cb, adopted);
    evtimer_add(ev, &tv);
    adopted_runs = 0;
    ck_assert_int_eq(aw_loop_call_soon(adopted, adopted_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_call_later(adopted, 0.001, adopted_cb, NULL, NULL),
                     0);
    /* libevent's own dispatch drives the loop's callbacks and timers. */
    ck_assert_int_eq(event_base_dispatch(base), 0);
    ck_assert_int_eq(adopted_runs, 102);
    ck_assert_int_eq(aw_loop_free(adopted), 0);
    event_free(ev);
    /* The base is still the application's, and still works. */
    ck_assert_int_eq(event_base_loop(base, EVLOOP_NONBLOCK), 1);
    event_base_free(base);
    ck_assert_int_eq(aw_loop_new_with_base(&adopted, NULL), -EINVAL);
}
END_TEST

/* ---- every call in every state ----------------------------------------- */

/* The states a loop can be in when a call is made (asyncio's
 * test_base_events covers the same calls one by one). */
enum loop_state {
    ST_NEVER_RUN,
    ST_BETWEEN_RUNS,
    ST_STOP_PENDING,           /* stop() called before any run */
    ST_STOP_PENDING_AFTER_RUN, /* stop() called between runs */
    ST_RUNNING,                /* from a callback */
    ST_STOPPING,               /* from a callback, after stop() */
    ST_CLOSED,
    ST_CLOSED_AFTER_RUN,
    ST_COUNT
};

struct state_probe {
    enum loop_state st;
    int fds[2];
    int threadsafe_ran;
    struct captured reports;
};

static int
count_threadsafe_cb(aw_loop *l, void *arg)
{
    struct state_probe *p = arg;

    (void)l;
    p->threadsafe_ran++;
    return 0;
}

static int
never_cb(aw_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    ck_abort_msg("a cancelled or refused callback ran");
    return 0;
}

/* A handle just scheduled: its calls work in every state. */
static void
check_handle(aw_handle *h)
{
    ck_assert(!aw_handle_cancelled(h));
    ck_assert_ptr_eq(aw_handle_ref(h), h);
    aw_handle_unref(h);
    ck_assert_int_eq(aw_handle_cancel(h), 0);
    ck_assert(aw_handle_cancelled(h));
    ck_assert_int_eq(aw_handle_cancel(h), AW_EINVALSTATE);
    aw_handle_unref(h);
}

/* Every call that leaves the state as it is. */
static void
exercise_calls(aw_loop *l, struct state_probe *p)
{
    int closed = p->st == ST_CLOSED || p->st == ST_CLOSED_AFTER_RUN;
    int running = p->st == ST_RUNNING || p->st == ST_STOPPING;
    int want = closed ? AW_ECLOSED : 0;
    aw_exception_context ctx;
    struct event_base *base;
    aw_handle *h = NULL;
    aw_loop *other;
    char name[64];
    double t;

    ck_assert_ptr_nonnull(aw_loop_get_base(l));
    ck_assert_int_eq(aw_loop_is_closed(l), closed);
    ck_assert_int_eq(aw_loop_is_running(l), running);
    ck_assert_ptr_eq(aw_get_running_loop(), running ? l : NULL);
    t = aw_loop_time(l);
    ck_assert(t > 0 && aw_loop_time(l) >= t);

    /* Another loop can be made and freed whatever this one does. */
    ck_assert_int_eq(aw_loop_new(&other), 0);
    ck_assert_int_eq(aw_loop_free(other), 0);
    base = event_base_new();
    ck_assert_int_eq(aw_loop_new_with_base(&other, base), 0);
    ck_assert_int_eq(aw_loop_free(other), 0);
    event_base_free(base);

    ck_assert_int_eq(aw_loop_call_soon(l, never_cb, NULL, &h), want);
    if (!closed)
        check_handle(h);
    ck_assert_int_eq(aw_loop_call_later(l, 10, never_cb, NULL, &h), want);
    if (!closed)
        check_handle(h);
    ck_assert_int_eq(aw_loop_call_at(l, t + 10, never_cb, NULL, &h), want);
    if (!closed)
        check_handle(h);
    ck_assert_int_eq(aw_loop_call_later(l, NAN, never_cb, NULL, NULL),
                     closed ? AW_ECLOSED : -EINVAL);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(l, count_threadsafe_cb, p),
                     want);
    ck_assert_int_eq(aw_handle_cancel(NULL), -EINVAL);

    ck_assert_int_eq(aw_loop_add_reader(l, p->fds[0], never_cb, NULL), want);
    ck_assert_int_eq(aw_loop_remove_reader(l, p->fds[0]), closed ? want : 1);
    ck_assert_int_eq(aw_loop_remove_reader(l, p->fds[0]), want);
    ck_assert_int_eq(aw_loop_add_writer(l, p->fds[1], never_cb, NULL), want);
    ck_assert_int_eq(aw_loop_remove_writer(l, p->fds[1]), closed ? want : 1);
    ck_assert_int_eq(aw_loop_remove_writer(l, p->fds[1]), want);
    ck_assert_int_eq(aw_loop_add_signal_handler(l, SIGUSR2, never_cb, NULL),
                     want);
    ck_assert_int_eq(aw_loop_remove_signal_handler(l, SIGUSR2),
                     closed ? want : 1);
    ck_assert_int_eq(aw_loop_remove_signal_handler(l, SIGUSR2), want);

    ck_assert_int_eq(aw_loop_set_debug(l, 1), want);
    ck_assert_int_eq(aw_loop_get_debug(l), !closed);
    ck_assert_int_eq(aw_loop_set_debug(l, 0), want);
    ck_assert_int_eq(aw_loop_get_debug(l), 0);
    ck_assert_int_eq(aw_loop_set_slow_callback_duration(l, 0.5), want);
    /* Closed, the handler set before closing keeps receiving reports. */
    ck_assert_int_eq(aw_loop_set_exception_handler(l, capture_handler,
                                                   &p->reports),
                     want);
    memset(&ctx, 0, sizeof(ctx));
    ctx.size = sizeof(ctx);
    ctx.message = "a report in every state";
    p->reports.calls = 0;
    ck_assert_int_eq(aw_loop_call_exception_handler(l, &ctx), 0);
    ck_assert_int_eq(p->reports.calls, 1);
    ck_assert_str_eq(p->reports.message, "a report in every state");
    aw_callback_name(never_cb, name, sizeof(name));
    ck_assert(name[0] != '\0');
}

/* The calls that change the state, last. */
static void
exercise_run_calls(aw_loop *l, struct state_probe *p)
{
    switch (p->st) {
    case ST_RUNNING:
    case ST_STOPPING:
        ck_assert_int_eq(aw_loop_run_forever(l), AW_ERUNNING);
        ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), AW_ERUNNING);
        ck_assert_int_eq(aw_loop_close(l), AW_ERUNNING);
        ck_assert_int_eq(aw_loop_free(l), AW_ERUNNING);
        ck_assert_int_eq(aw_loop_stop(l), 0);
        break;
    case ST_CLOSED:
    case ST_CLOSED_AFTER_RUN:
        ck_assert_int_eq(aw_loop_run_forever(l), AW_ECLOSED);
        ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), AW_ECLOSED);
        ck_assert_int_eq(aw_loop_stop(l), AW_ECLOSED);
        ck_assert_int_eq(aw_loop_close(l), 0);
        break;
    default:
        /* The thread-safe call keeps the loop open until it has run. */
        ck_assert_int_eq(aw_loop_close(l), AW_EBUSY);
        ck_assert_int_eq(aw_loop_free(l), AW_EBUSY);
        ck_assert_int_eq(aw_loop_stop(l), 0);
        ck_assert_int_eq(aw_loop_stop(l), 0);
        /* A pending stop: one iteration, then the run returns. */
        ck_assert_int_eq(aw_loop_run_forever(l), 0);
        ck_assert_int_eq(aw_test_run_until(l, &p->threadsafe_ran, 5), 1);
        ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), 0);
        ck_assert_int_eq(aw_loop_close(l), 0);
        ck_assert_int_eq(aw_loop_close(l), 0);
        ck_assert(aw_loop_is_closed(l));
        ck_assert_int_eq(aw_loop_stop(l), AW_ECLOSED);
        break;
    }
}

static int
exercise_cb(aw_loop *l, void *arg)
{
    struct state_probe *p = arg;

    if (p->st == ST_STOPPING)
        ck_assert_int_eq(aw_loop_stop(l), 0);
    exercise_calls(l, p);
    exercise_run_calls(l, p);
    return aw_loop_stop(l);
}

static int
nothing_cb(aw_loop *l, void *arg)
{
    (void)l;
    (void)arg;
    return 0;
}

static void
exercise_state(enum loop_state st)
{
    struct state_probe p;
    aw_loop *l;

    memset(&p, 0, sizeof(p));
    p.st = st;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p.fds), 0);
    ck_assert_int_eq(aw_loop_new(&l), 0);
    if (st == ST_BETWEEN_RUNS || st == ST_STOP_PENDING_AFTER_RUN ||
        st == ST_CLOSED_AFTER_RUN) {
        ck_assert_int_eq(aw_loop_call_soon(l, nothing_cb, NULL, NULL), 0);
        ck_assert_int_eq(aw_loop_call_soon(l, stop_cb, NULL, NULL), 0);
        ck_assert_int_eq(aw_loop_run_forever(l), 0);
        ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), 0);
    }
    if (st == ST_STOP_PENDING || st == ST_STOP_PENDING_AFTER_RUN)
        ck_assert_int_eq(aw_loop_stop(l), 0);
    if (st == ST_CLOSED || st == ST_CLOSED_AFTER_RUN) {
        ck_assert_int_eq(
            aw_loop_set_exception_handler(l, capture_handler, &p.reports), 0);
        ck_assert_int_eq(aw_loop_close(l), 0);
    }
    if (st == ST_RUNNING || st == ST_STOPPING) {
        ck_assert_int_eq(aw_loop_call_soon(l, exercise_cb, &p, NULL), 0);
        ck_assert_int_eq(aw_loop_run_forever(l), 0);
        ck_assert(!aw_loop_is_running(l));
        ck_assert_int_eq(aw_test_run_until(l, &p.threadsafe_ran, 5), 1);
    } else {
        exercise_calls(l, &p);
        exercise_run_calls(l, &p);
    }
    ck_assert_int_eq(aw_loop_free(l), 0);
    close(p.fds[0]);
    close(p.fds[1]);
}

/* Every call of loop.h in every state of the loop returns its documented
 * code, and none crashes or leaks (the fixture counts allocations). */
START_TEST(every_call_in_every_state)
{
    exercise_state((enum loop_state)_i);
}
END_TEST

/* The crash: stop between runs went into libevent's
 * event_base_get_running_event(), undefined outside a callback. */
START_TEST(stop_between_runs_then_run_one_iteration)
{
    struct entry a = {1, 0};
    const int want[] = {1}, want2[] = {1, 2};

    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, stop_cb, NULL, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(aw_loop_stop(loop), 0);
    ck_assert_int_eq(aw_loop_call_soon(loop, reschedule_b_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    assert_order(want, 1);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want2, 2);
}
END_TEST

static void
break_dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ck_assert_int_eq(aw_loop_stop(arg), 0); /* breaks libevent's dispatch */
}

/* The same after libevent's own dispatch of an adopted base: a stop from
 * outside any callback is for the next run. */
START_TEST(stop_after_libevent_dispatch_of_adopted_base)
{
    struct event_base *base = event_base_new();
    struct timeval tv = {0, 1000};
    struct entry a = {1, 0};
    const int want[] = {1};
    aw_loop *adopted;

    ck_assert_int_eq(aw_loop_new_with_base(&adopted, base), 0);
    ck_assert_int_eq(event_base_once(base, -1, EV_TIMEOUT, break_dispatch_cb,
                                     adopted, &tv),
                     0);
    ck_assert_int_eq(event_base_dispatch(base), 0);
    ck_assert_int_eq(aw_loop_stop(adopted), 0);
    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(adopted, reschedule_b_cb, &a, NULL),
                     0);
    ck_assert_int_eq(aw_loop_run_forever(adopted), 0);
    assert_order(want, 1);
    ck_assert_int_eq(aw_loop_run_once(adopted, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(aw_loop_free(adopted), 0);
    event_base_free(base);
}
END_TEST

/* A deadline too far to arm (call_later(1e300), call_at(1e300), DBL_MAX,
 * INFINITY) is never, and the loop sleeps: overflowing the timeval made
 * the libevent timer fire at once, each iteration, at 100% CPU.  Counted
 * in iterations, not time: a 20 ms libevent timer of the base's own (the
 * far timer stays the loop's earliest) must end the wait within a handful
 * of them. */
static void
set_flag_event_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(volatile int *)arg = 1;
}

static void
check_far_timer_sleeps(int use_call_at, double value)
{
    struct timeval tv = {0, 20000};
    volatile int fired = 0;
    aw_handle *far;
    double t0 = aw_loop_time(loop), want;
    int iterations = 0;

    if (use_call_at) {
        ck_assert_int_eq(aw_loop_call_at(loop, value, never_cb, NULL, &far),
                         0);
        want = value;
    } else {
        ck_assert_int_eq(
            aw_loop_call_later(loop, value, never_cb, NULL, &far), 0);
        want = t0 + value;
    }
    ck_assert_msg(aw_handle_when(far) >= want &&
                      aw_handle_when(far) <= want + (aw_loop_time(loop) - t0),
                  "when %g, asked %g", aw_handle_when(far), want);
    ck_assert_int_eq(event_base_once(aw_loop_get_base(loop), -1, EV_TIMEOUT,
                                     set_flag_event_cb, (void *)&fired, &tv),
                     0);
    while (!fired) {
        ck_assert_int_eq(aw_loop_run_once(loop, 0), 0);
        ck_assert_msg(++iterations < 50, "the loop spins: %d iterations",
                      iterations);
    }
    ck_assert(!aw_handle_cancelled(far));
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY); /* still pending */
    ck_assert_int_eq(aw_handle_cancel(far), 0);
    ck_assert(isnan(aw_handle_when(far))); /* no longer pending */
    aw_handle_unref(far);
}

START_TEST(huge_delay_is_never_and_loop_sleeps)
{
    capture_reports();
    check_far_timer_sleeps(0, 1e300);
    check_far_timer_sleeps(1, 1e300);
    check_far_timer_sleeps(0, DBL_MAX);
    check_far_timer_sleeps(1, DBL_MAX);
    check_far_timer_sleeps(0, INFINITY);
    check_far_timer_sleeps(1, INFINITY);
    /* Still 2^63 seconds too far for a time_t. */
    check_far_timer_sleeps(0, 9.3e18);
    ck_assert(isnan(aw_handle_when(NULL)));
}
END_TEST

/* aw_sleep arms its timer with aw_loop_call_later: the same clamp. */
START_TEST(sleep_huge_delay_lets_loop_sleep)
{
    struct timeval tv = {0, 20000};
    volatile int fired = 0;
    aw_future *f = aw_sleep(loop, 1e300);
    int iterations = 0;

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(event_base_once(aw_loop_get_base(loop), -1, EV_TIMEOUT,
                                     set_flag_event_cb, (void *)&fired, &tv),
                     0);
    while (!fired) {
        ck_assert_int_eq(aw_loop_run_once(loop, 0), 0);
        ck_assert_msg(++iterations < 50, "the loop spins: %d iterations",
                      iterations);
    }
    ck_assert(!aw_future_done(f));
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
}
END_TEST

START_TEST(nan_deadline_refused)
{
    aw_handle *h = NULL;

    ck_assert_int_eq(aw_loop_call_later(loop, NAN, never_cb, NULL, &h),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_call_at(loop, NAN, never_cb, NULL, &h), -EINVAL);
    ck_assert_ptr_null(h);
    ck_assert_int_eq(aw_loop_call_soon(loop, never_cb, NULL, &h), 0);
    ck_assert(isnan(aw_handle_when(h))); /* not a timer */
    ck_assert_int_eq(aw_handle_cancel(h), 0);
    aw_handle_unref(h);
}
END_TEST

/* make check-backends runs the suite with libevent's EVENT_NOEPOLL /
 * EVENT_NOPOLL and names the backend it expects: the loop's base uses it. */
START_TEST(backend_is_the_expected_one)
{
    const char *want = getenv("AW_TEST_EXPECT_BACKEND");
    const char *got = event_base_get_method(aw_loop_get_base(loop));

    ck_assert_ptr_nonnull(got);
    if (want != NULL && want[0] != '\0')
        ck_assert_str_eq(got, want);
}
END_TEST

/* ---- bad input ------------------------------------------------------------ */

START_TEST(bad_arguments_return_einval)
{
    struct entry a = {1, 1};
    aw_handle *h = NULL;

    ck_assert_int_eq(aw_loop_new(NULL), -EINVAL);
    ck_assert_int_eq(aw_loop_call_soon(NULL, record_cb, &a, NULL), -EINVAL);
    ck_assert_int_eq(aw_loop_call_soon(loop, NULL, &a, &h), -EINVAL);
    ck_assert_ptr_null(h);
    ck_assert_int_eq(aw_loop_call_later(loop, NAN, record_cb, &a, &h), -EINVAL);
    ck_assert_int_eq(aw_loop_call_at(loop, NAN, record_cb, &a, &h), -EINVAL);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(NULL, record_cb, &a),
                     -EINVAL);
    ck_assert_int_eq(aw_loop_call_soon_threadsafe(loop, NULL, &a), -EINVAL);
    ck_assert_int_eq(aw_loop_run_forever(NULL), -EINVAL);
    ck_assert_int_eq(aw_loop_stop(NULL), -EINVAL);
    ck_assert_int_eq(aw_loop_close(NULL), -EINVAL);
    ck_assert_int_eq(aw_loop_free(NULL), 0);
    ck_assert_int_eq(aw_loop_set_debug(NULL, 1), -EINVAL);
    ck_assert_ptr_null(aw_loop_get_base(NULL));
    ck_assert_ptr_null(h);
    /* call_at in the past runs at once; the loop still works. */
    order.n = 0;
    ck_assert_int_eq(aw_loop_call_at(loop, 0, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(order.n, 1);
}
END_TEST

START_TEST(allocation_failure_leaves_loop_working)
{
    struct entry a = {1, 1};
    aw_loop *l;
    long n, before = aw_test_live_allocations();
    int rc;

    /* Fail each allocation of aw_loop_new in turn: -ENOMEM, no leak. */
    for (n = 1;; n++) {
        aw_test_fail_allocation(n);
        rc = aw_loop_new(&l);
        aw_test_fail_allocation(0);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_int_eq(aw_test_live_allocations(), before);
    }
    ck_assert_int_gt(n, 1);
    ck_assert_int_eq(aw_loop_free(l), 0);
    /* The first call_soon needs a slab of handles. */
    aw_test_fail_allocation(1);
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), -ENOMEM);
    aw_test_fail_allocation(1);
    ck_assert_int_eq(aw_loop_call_later(loop, 0, record_cb, &a, NULL),
                     -ENOMEM);
    aw_test_fail_allocation(0);
    order.n = 0;
    ck_assert_int_eq(aw_loop_call_soon(loop, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_run_forever(loop), 0);
    ck_assert_int_eq(order.n, 1);
}
END_TEST

/* asyncio test_call_later_negative_delays: a delay already past runs on
 * the next pass, in the order of the deadlines; so does call_at with a
 * deadline long past. */
START_TEST(call_later_negative_delays)
{
    struct entry a = {1, 1}, b = {2, 1}, c = {3, 1};
    const int want[] = {3, 2, 1};

    memset(&order, 0, sizeof(order));
    ck_assert_int_eq(aw_loop_call_later(loop, -1, record_cb, &a, NULL), 0);
    ck_assert_int_eq(aw_loop_call_later(loop, -2, record_cb, &b, NULL), 0);
    ck_assert_int_eq(aw_loop_call_at(loop, -INFINITY, record_cb, &c, NULL),
                     0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    assert_order(want, 3);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = aw_test_tcase("loop");

    tcase_add_test(tc, call_soon_fifo);
    tcase_add_test(tc, call_soon_next_pass_rule);
    tcase_add_test(tc, call_later_deadline_order);
    tcase_add_test(tc, call_at_ties_in_scheduling_order);
    tcase_add_test(tc, call_later_waits_its_delay);
    tcase_add_test(tc, call_later_zero_runs_after_call_soon);
    tcase_add_test(tc, cancelled_timers_purged_and_never_run);
    tcase_add_test(tc, handle_cancel_before_run);
    tcase_add_test(tc, handle_cancel_after_run_or_twice_is_noop);
    tcase_add_test(tc, stop_from_callback);
    tcase_add_test(tc, stop_before_run_runs_one_iteration);
    tcase_add_test(tc, run_while_running_refused);
    tcase_add_test(tc, close_with_pending_work_reports_busy);
    tcase_add_test(tc, calls_on_closed_loop_refused);
    tcase_add_test(tc, run_once_runs_ready_callbacks);
    tcase_add_test(tc, io_not_starved_by_callback_chain);
    tcase_add_test(tc, timers_not_starved_by_callback_chain);
    tcase_add_test(tc, reader_and_writer_on_socketpair);
    tcase_add_test(tc, fd_watchers_reject_bad_fds);
    tcase_add_test(tc, fd_beyond_select_limit);
    tcase_add_test(tc, signal_handler_delivery);
    tcase_add_test(tc, signal_handler_rejects_bad_signals);
    tcase_add_test(tc, call_soon_threadsafe_4_threads_exactly_once);
    tcase_add_test(tc, call_soon_threadsafe_wakes_sleeping_loop);
    tcase_add_test(tc, call_soon_threadsafe_in_loop_thread_keeps_fifo);
    tcase_add_test(tc, debug_mode_refuses_call_soon_from_other_thread);
    tcase_add_test(tc, debug_mode_accepts_loops_sharing_a_thread);
    tcase_add_test(tc, exception_handler_receives_callback_failure);
    tcase_add_test(tc, exception_context_size_checked);
    tcase_add_test(tc, debug_mode_reports_slow_callback);
    tcase_add_test(tc, callback_name_falls_back_to_address);
    tcase_add_test(tc, adopt_external_event_base);
    tcase_add_loop_test(tc, every_call_in_every_state, 0, ST_COUNT);
    tcase_add_test(tc, stop_between_runs_then_run_one_iteration);
    tcase_add_test(tc, stop_after_libevent_dispatch_of_adopted_base);
    tcase_add_test(tc, huge_delay_is_never_and_loop_sleeps);
    tcase_add_test(tc, sleep_huge_delay_lets_loop_sleep);
    tcase_add_test(tc, nan_deadline_refused);
    tcase_add_test(tc, backend_is_the_expected_one);
    tcase_add_test(tc, bad_arguments_return_einval);
    tcase_add_test(tc, allocation_failure_leaves_loop_working);
    tcase_add_test(tc, call_later_negative_delays);
    suite_add_tcase(s, tc);
    return s;
}

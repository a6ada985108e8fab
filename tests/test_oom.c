/* SPDX-License-Identifier: MIT */
/* test_oom.c: the allocation-failure sweep.  Each scenario (a loop with
 * timers, futures and gather, tasks, a task group, a queue, a loopback
 * stream round trip) runs once to count its allocations, then once per
 * allocation with that one failing (through aw_replace_allocator, in
 * runner.c): no crash, no leak, and the loop closes once the scenario has
 * cleaned up, whatever failed. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "testutil.h"

/* ---- the driver ------------------------------------------------------------ */

/* The index of the allocation failing in this run, and what went wrong. */
static long failing;
static int hung;

static void
quiet_handler(aw_loop *l, const aw_exception_context *ctx, void *arg)
{
    (void)l;
    (void)ctx;
    (void)arg; /* "never retrieved" reports are expected here */
}

/* A scenario that hangs is a failure, not a test timeout: a libevent timer
 * of the base's own (it allocates nothing of ours) stops the loop. */
struct watchdog {
    struct event *ev;
    aw_loop *loop;
    int fired;
};

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    struct watchdog *w = arg;

    (void)fd;
    (void)what;
    w->fired = 1;
    aw_loop_stop(w->loop);
}

/* Run until f settles (or the watchdog fires); f stays the caller's. */
static int
drive(aw_loop *l, aw_future *f)
{
    struct watchdog w = {NULL, l, 0};
    struct timeval tv = {2, 0};
    int rc;

    if (f == NULL)
        return -EINVAL;
    w.ev = evtimer_new(aw_loop_get_base(l), watchdog_cb, &w);
    ck_assert_ptr_nonnull(w.ev);
    evtimer_add(w.ev, &tv);
    rc = aw_loop_run_until_complete(l, f);
    event_free(w.ev);
    hung |= w.fired;
    return rc;
}

typedef void (*scenario_fn)(aw_loop *l);

/* What a program does at exit (asyncio.run's shutdown): cancel the tasks
 * left, let them end, let closing connections go, and close the loop. */
static int
shut_down(aw_loop *l)
{
    aw_task *tasks[64];
    size_t i, n = aw_all_tasks(l, tasks, 64);
    int k, rc;

    for (i = 0; i < n && i < 64; i++)
        aw_future_cancel(tasks[i], NULL);
    for (k = 0; k < 1000 && aw_all_tasks(l, NULL, 0) > 0; k++)
        ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), 0);
    for (k = 0; (rc = aw_loop_close(l)) == AW_EBUSY && k < 100; k++)
        ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), 0);
    return rc;
}

/* One run of the scenario with allocation fail_at failing (0: none): how
 * it went into *why (NULL when well) and the allocations it made.  A loop
 * that does not close is left unfreed (its memory counts as leaked). */
static long
run_scenario(scenario_fn scenario, long fail_at, const char **why)
{
    long live = aw_test_live_allocations(), total = aw_test_allocations();
    aw_loop *l = NULL;
    int rc;

    failing = fail_at;
    hung = 0;
    *why = NULL;
    aw_test_fail_allocation(fail_at);
    rc = aw_loop_new(&l);
    if (rc == 0) {
        ck_assert_int_eq(aw_loop_set_exception_handler(l, quiet_handler, NULL),
                         0);
        scenario(l);
        if (shut_down(l) != 0)
            *why = "the loop does not close";
        else
            ck_assert_int_eq(aw_loop_free(l), 0);
    } else {
        ck_assert_int_eq(rc, -ENOMEM);
    }
    aw_test_fail_allocation(0);
    if (hung)
        *why = "the scenario hangs";
    else if (*why == NULL && aw_test_live_allocations() != live)
        *why = "memory leaks";
    return aw_test_allocations() - total;
}

/* Every allocation of the scenario fails in turn.  AW_TEST_OOM_EXPLORE
 * set: report every failing index on stderr instead of stopping at the
 * first (with AW_TEST_FAIL_BACKTRACE, the failing allocation's stack). */
static void
sweep(scenario_fn scenario)
{
    const char *why;
    long n = run_scenario(scenario, 0, &why), i;
    int explore = getenv("AW_TEST_OOM_EXPLORE") != NULL, failures = 0;

    ck_assert_msg(why == NULL, "the clean run: %s", why);
    ck_assert_int_gt(n, 1);
    if (explore)
        fprintf(stderr, "%ld allocations\n", n);
    for (i = 1; i <= n; i++) {
        if (getenv("AW_TEST_OOM_INDEX") != NULL &&
            atol(getenv("AW_TEST_OOM_INDEX")) != i)
            continue;
        run_scenario(scenario, i, &why);
        if (why == NULL)
            continue;
        ck_assert_msg(explore, "allocation %ld of %ld failing: %s", i, n,
                      why);
        fprintf(stderr, "allocation %ld of %ld failing: %s\n", i, n, why);
        failures++;
    }
    ck_assert_int_eq(failures, 0);
}

/* ---- loop: callbacks, timers, a thread-safe call, a reader ------------------- */

struct loop_run {
    int fd;
    int ran, expected;
};

static int
count_cb(aw_loop *l, void *arg)
{
    struct loop_run *r = arg;

    (void)l;
    r->ran++;
    return 0;
}

static int
read_once_cb(aw_loop *l, void *arg)
{
    struct loop_run *r = arg;
    char c;

    ck_assert_int_eq(read(r->fd, &c, 1), 1);
    ck_assert_int_eq(aw_loop_remove_reader(l, r->fd), 1);
    r->ran++;
    return 0;
}

static void
scenario_loop(aw_loop *l)
{
    struct loop_run r = {-1, 0, 0};
    aw_handle *soon = NULL, *later = NULL, *never = NULL;
    int fds[2], passes = 0;

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    r.fd = fds[0];
    r.expected += aw_loop_call_soon(l, count_cb, &r, &soon) == 0;
    r.expected += aw_loop_call_soon(l, count_cb, &r, NULL) == 0;
    r.expected += aw_loop_call_later(l, 0.001, count_cb, &r, &later) == 0;
    r.expected += aw_loop_call_at(l, aw_loop_time(l) + 0.002, count_cb, &r,
                                  NULL) == 0;
    if (aw_loop_call_later(l, 10, count_cb, &r, &never) == 0)
        ck_assert_int_eq(aw_handle_cancel(never), 0);
    r.expected += aw_loop_call_soon_threadsafe(l, count_cb, &r) == 0;
    r.expected += aw_loop_add_reader(l, fds[0], read_once_cb, &r) == 0;
    while (r.ran < r.expected) {
        ck_assert_int_eq(aw_loop_run_once(l, 0), 0);
        if (++passes == 10000) {
            hung = 1;
            break;
        }
    }
    aw_handle_unref(soon);
    aw_handle_unref(later);
    aw_handle_unref(never);
    close(fds[0]);
    close(fds[1]);
}

START_TEST(oom_sweep_loop)
{
    sweep(scenario_loop);
}
END_TEST

/* ---- futures: settle, gather, then, sleep ------------------------------------ */

static int
settle_cb(aw_loop *l, void *arg)
{
    (void)l;
    aw_future_set_result_int(arg, 7);
    return 0;
}

static aw_future *
then_step(aw_future *settled, void *arg)
{
    (void)arg;
    return aw_future_resolved_int(aw_future_loop(settled), 42);
}

static void
scenario_futures(aw_loop *l)
{
    aw_future *a = aw_future_new(l), *b = aw_future_new(l), *in[3], *chain;
    size_t n = 0;

    if (a != NULL) {
        in[n++] = aw_future_ref(a);
        if (aw_loop_call_soon(l, settle_cb, a, NULL) != 0)
            aw_future_set_result_int(a, 7);
    }
    if (b != NULL) {
        in[n++] = aw_future_ref(b);
        aw_future_set_result_int(b, 8); /* settled before the gather */
    }
    in[n++] = aw_sleep(l, 0.001);
    chain = aw_then(aw_gather(l, n, in, 0), then_step, NULL);
    drive(l, chain);
    aw_future_unref(chain);
    aw_future_unref(a);
    aw_future_unref(b);
}

static aw_future *
catch_step(aw_future *settled, void *arg)
{
    (void)arg;
    return aw_future_resolved_int(aw_future_loop(settled), 1);
}

static int
finally_step(aw_future *settled, void *arg)
{
    (void)settled;
    (void)arg;
    return 0;
}

/* More of the future layer: a failure with a message caught, a finally
 * step, a wait_for that times out, and a gather too large for the pools. */
#define MANY 40

static void
scenario_futures_more(aw_loop *l)
{
    aw_future *in[MANY], *chain, *slow, *wf;
    size_t i;

    chain = aw_finally(
        aw_catch(aw_future_failed(l, -EIO, "failed %d", 1), catch_step, NULL),
        finally_step, NULL);
    drive(l, chain);
    aw_future_unref(chain);
    slow = aw_future_new(l);
    if (slow != NULL) {
        wf = aw_wait_for(aw_future_ref(slow), 0.001);
        drive(l, wf);
        aw_future_unref(wf);
        aw_future_unref(slow);
    }
    for (i = 0; i < MANY; i++)
        in[i] = aw_sleep_result(l, 0.0005 * (double)(i % 3), NULL);
    chain = aw_gather(l, MANY, in, AW_GATHER_RETURN_ERRORS);
    drive(l, chain);
    aw_future_unref(chain);
}

START_TEST(oom_sweep_futures_more)
{
    sweep(scenario_futures_more);
}
END_TEST

START_TEST(oom_sweep_futures)
{
    sweep(scenario_futures);
}
END_TEST

/* ---- tasks: await, return, cancel ------------------------------------------- */

struct adder {
    aw_future *in;
    intptr_t value;
};

static aw_future *
take(aw_future **slot)
{
    aw_future *f = *slot;

    *slot = NULL;
    return f;
}

static void
adder_free(void *p)
{
    struct adder *a = p;

    aw_future_unref(a->in);
    free(a);
}

static AW_TASK(adder_task, struct adder *a)
{
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.001), NULL);
    AW_AWAIT_INT(take(&a->in), &a->value);
    AW_RETURN_INT(a->value + 1);
    AW_END();
}

static AW_TASK(sleeper_task, void *unused)
{
    (void)unused;
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 3600), NULL);
    AW_END();
}

static void
scenario_tasks(aw_loop *l)
{
    struct adder *a = calloc(1, sizeof(*a));
    aw_future *in = aw_future_new(l);
    aw_task *t, *sleeper;

    a->in = in != NULL ? aw_future_ref(in) : aw_future_resolved_int(l, 1);
    t = aw_task_new(l, adder_task, a, adder_free);
    if (in != NULL && aw_loop_call_soon(l, settle_cb, in, NULL) != 0)
        aw_future_set_result_int(in, 7);
    drive(l, t);
    aw_future_unref(t);
    aw_future_unref(in);

    sleeper = aw_task_new(l, sleeper_task, NULL, NULL);
    ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), 0);
    aw_future_cancel(sleeper, NULL);
    drive(l, sleeper);
    aw_future_unref(sleeper);
}

START_TEST(oom_sweep_tasks)
{
    sweep(scenario_tasks);
}
END_TEST

/* ---- a task group: children, one fails ---------------------------------------- */

static AW_TASK(child_ok, void *unused)
{
    (void)unused;
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.001), NULL);
    AW_END();
}

static AW_TASK(child_fails, void *unused)
{
    (void)unused;
    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.0005), NULL);
    AW_RAISE(-EIO, "child fails");
    AW_END();
}

struct parent {
    aw_task_group *group;
    int rc;
};

static AW_TASK(parent_task, struct parent *p)
{
    AW_BEGIN();
    p->group = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    if (p->group == NULL)
        AW_RAISE(-ENOMEM, "no group");
    aw_task_group_spawn(p->group, child_ok, NULL, NULL, NULL);
    aw_task_group_spawn(p->group, child_fails, NULL, NULL, NULL);
    aw_task_group_spawn(p->group, child_ok, NULL, NULL, NULL);
    AW_TRY_AWAIT(p->rc, aw_task_group_wait(p->group), NULL);
    AW_FINALLY();
    aw_task_group_free(p->group);
    p->group = NULL;
    AW_END();
}

static void
scenario_group(aw_loop *l)
{
    aw_task *t = aw_task_new(l, parent_task, calloc(1, sizeof(struct parent)),
                             free);

    drive(l, t);
    aw_future_unref(t);
}

START_TEST(oom_sweep_task_group)
{
    sweep(scenario_group);
}
END_TEST

/* ---- a bounded queue between two tasks ---------------------------------------- */

#define QUEUE_ITEMS 5

struct queue_end {
    aw_queue *q;
    int i;
    void *item;
};

static AW_TASK(producer_task, struct queue_end *e)
{
    AW_BEGIN();
    for (e->i = 1; e->i <= QUEUE_ITEMS; e->i++)
        AW_AWAIT(aw_queue_put(e->q, (void *)(intptr_t)e->i), NULL);
    AW_END();
}

static AW_TASK(consumer_task, struct queue_end *e)
{
    AW_BEGIN();
    for (;;) {
        AW_AWAIT(aw_queue_get(e->q), &e->item); /* ends at the shutdown */
        aw_queue_task_done(e->q);
    }
    AW_END();
}

static void
scenario_queue(aw_loop *l)
{
    struct queue_end *pe = calloc(1, sizeof(*pe)), *ce = calloc(1, sizeof(*ce));
    aw_queue *q = aw_queue_new(l, AW_QUEUE_FIFO, 2, NULL, NULL);
    aw_task *producer, *consumer;

    if (q == NULL) {
        free(pe);
        free(ce);
        return;
    }
    pe->q = ce->q = q;
    consumer = aw_task_new(l, consumer_task, ce, free);
    if (aw_future_error(consumer) == -ENOMEM) {
        /* No consumer: the producer would wait for room forever. */
        aw_future_unref(consumer);
        free(pe);
        aw_queue_free(q);
        return;
    }
    producer = aw_task_new(l, producer_task, pe, free);
    drive(l, producer);
    /* Whatever the producer managed: the consumer drains, then ends. */
    aw_queue_shutdown(q, 0);
    drive(l, consumer);
    aw_future_unref(producer);
    aw_future_unref(consumer);
    aw_queue_free(q);
}

START_TEST(oom_sweep_queue)
{
    sweep(scenario_queue);
}
END_TEST

/* ---- a loopback stream round trip -------------------------------------------- */

struct echo {
    aw_stream *s;
    aw_bytes *line;
};

static void
echo_free(void *p)
{
    struct echo *e = p;

    if (e->s != NULL) {
        aw_stream_close(e->s);
        aw_stream_unref(e->s);
    }
    aw_bytes_free(e->line);
    free(e);
}

static AW_TASK(echo_task, struct echo *e)
{
    AW_BEGIN();
    AW_AWAIT(aw_stream_readline(e->s), NULL);
    aw_future_take_result(AW_AWAITED(), (void **)&e->line, NULL);
    if (aw_stream_write(e->s, aw_bytes_data(e->line), aw_bytes_len(e->line)) <
        0)
        AW_RAISE(-EIO, "echo write failed");
    AW_AWAIT(aw_stream_drain(e->s), NULL);
    AW_END();
}

static void
on_client(aw_stream *s, void *arg)
{
    struct echo *e = calloc(1, sizeof(*e));

    (void)arg;
    e->s = s;
    aw_future_unref(aw_task_new(aw_transport_loop(aw_stream_transport(s)),
                                echo_task, e, echo_free));
}

struct client {
    int port;
    aw_stream *s;
    aw_bytes *line;
};

static void
client_free(void *p)
{
    struct client *c = p;

    if (c->s != NULL) {
        aw_stream_close(c->s);
        aw_stream_unref(c->s);
    }
    aw_bytes_free(c->line);
    free(c);
}

static AW_TASK(client_task, struct client *c)
{
    AW_BEGIN();
    AW_AWAIT(aw_open_connection(aw_task_loop(AW_SELF()), "127.0.0.1",
                                c->port),
             NULL);
    aw_future_take_result(AW_AWAITED(), (void **)&c->s, NULL);
    if (aw_stream_write(c->s, "ping\n", 5) < 0)
        AW_RAISE(-EIO, "write failed");
    AW_AWAIT(aw_stream_readline(c->s), NULL);
    aw_future_take_result(AW_AWAITED(), (void **)&c->line, NULL);
    if (aw_bytes_len(c->line) != 5)
        AW_RAISE(AW_EINCOMPLETE, "short echo");
    aw_stream_close(c->s);
    AW_AWAIT(aw_stream_wait_closed(c->s), NULL);
    AW_END();
}

static void
scenario_stream(aw_loop *l)
{
    aw_future *f = aw_start_server(l, "127.0.0.1", 0, on_client, NULL, 0, 0);
    struct client *c;
    aw_server *srv = NULL;
    aw_task *t;

    if (drive(l, f) == 0)
        aw_future_take_result(f, (void **)&srv, NULL);
    aw_future_unref(f);
    if (srv == NULL)
        return;
    c = calloc(1, sizeof(*c));
    c->port = aw_server_port(srv);
    t = aw_task_new(l, client_task, c, client_free);
    drive(l, t);
    aw_future_unref(t);
    aw_server_close(srv);
    f = aw_server_wait_closed(srv);
    drive(l, f);
    aw_future_unref(f);
    aw_server_free(srv);
}

START_TEST(oom_sweep_stream)
{
    sweep(scenario_stream);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("oom");
    TCase *tc = aw_test_tcase("oom");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, oom_sweep_loop);
    tcase_add_test(tc, oom_sweep_futures);
    tcase_add_test(tc, oom_sweep_futures_more);
    tcase_add_test(tc, oom_sweep_tasks);
    tcase_add_test(tc, oom_sweep_task_group);
    tcase_add_test(tc, oom_sweep_queue);
    tcase_add_test(tc, oom_sweep_stream);
    suite_add_tcase(s, tc);
    return s;
}

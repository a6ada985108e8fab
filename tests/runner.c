/* SPDX-License-Identifier: MIT */
/* runner.c: the one Check runner, linked into every module's test program:
 * installs the counting allocator, runs the module's suite and prints TAP
 * for automake's tap driver. */
#include "config.h"

#include <execinfo.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

aw_loop *loop;

char aw_test_reports[4096];

void
aw_test_log_reports(aw_loop *l, const aw_exception_context *ctx, void *arg)
{
    size_t n = strlen(aw_test_reports);

    (void)l;
    (void)arg;
    snprintf(aw_test_reports + n, sizeof(aw_test_reports) - n, "%s\n",
             ctx->message);
}

static atomic_long live_allocations;
static atomic_long total_allocations; /* calls, the failed ones too */
static atomic_long fail_countdown;
static long setup_allocations;

static int
should_fail(void)
{
    long n;

    atomic_fetch_add(&total_allocations, 1);
    n = atomic_load(&fail_countdown);

    while (n > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1)) {
            if (n == 1 && getenv("AW_TEST_FAIL_BACKTRACE") != NULL) {
                /* Where the failing allocation is made (addr2line -f). */
                void *frames[16];

                backtrace_symbols_fd(frames, backtrace(frames, 16), 2);
            }
            return n == 1;
        }
    }
    return 0;
}

static void *
count_malloc(size_t size)
{
    void *p = should_fail() ? NULL : malloc(size);

    if (p != NULL)
        atomic_fetch_add(&live_allocations, 1);
    return p;
}

static void *
count_calloc(size_t n, size_t size)
{
    void *p = should_fail() ? NULL : calloc(n, size);

    if (p != NULL)
        atomic_fetch_add(&live_allocations, 1);
    return p;
}

static void *
count_realloc(void *old, size_t size)
{
    void *p;

    if (should_fail())
        return NULL;
    p = realloc(old, size);
    if (p != NULL && old == NULL)
        atomic_fetch_add(&live_allocations, 1);
    return p;
}

static void
count_free(void *p)
{
    if (p != NULL)
        atomic_fetch_sub(&live_allocations, 1);
    free(p);
}

long
aw_test_live_allocations(void)
{
    return atomic_load(&live_allocations);
}

long
aw_test_allocations(void)
{
    return atomic_load(&total_allocations);
}

void
aw_test_fail_allocation(long n)
{
    atomic_store(&fail_countdown, n);
}

int
aw_test_slow(void)
{
    return getenv("AW_TEST_SLOW") != NULL;
}

int
aw_test_long(void)
{
    return getenv("AW_TEST_LONG") != NULL;
}

struct aw_test_log order;
struct captured cap;

void
record(int id)
{
    if (order.n < AW_TEST_LOG_MAX)
        order.items[order.n++] = id;
}

void
assert_order(const int *want, int n)
{
    int i;

    ck_assert_int_eq(order.n, n);
    for (i = 0; i < n; i++)
        ck_assert_msg(order.items[i] == want[i], "item %d: got %d, want %d",
                      i, order.items[i], want[i]);
}

void
capture_handler(aw_loop *l, const aw_exception_context *ctx, void *arg)
{
    struct captured *c = arg;

    (void)l;
    c->calls++;
    c->size = ctx->size;
    c->code = ctx->code;
    c->duration = ctx->duration;
    c->callback = ctx->callback;
    snprintf(c->message, sizeof(c->message), "%s", ctx->message);
}

void
capture_reports(void)
{
    memset(&cap, 0, sizeof(cap));
    ck_assert_int_eq(aw_loop_set_exception_handler(loop, capture_handler, &cap),
                     0);
}

static void
loop_setup(void)
{
    memset(&order, 0, sizeof(order));
    memset(&cap, 0, sizeof(cap));
    aw_test_fail_allocation(0);
    setup_allocations = aw_test_live_allocations();
    ck_assert_int_eq(aw_loop_new(&loop), 0);
}

static void
loop_teardown(void)
{
    aw_test_fail_allocation(0);
    ck_assert_msg(aw_loop_free(loop) == 0,
                  "the test's loop did not close: work left outstanding");
    loop = NULL;
    ck_assert_int_eq(aw_test_live_allocations(), setup_allocations);
}

TCase *
aw_test_tcase(const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, loop_setup, loop_teardown);
    tcase_set_timeout(tc, 30);
    return tc;
}

struct poll_state {
    volatile int *flag;
    double deadline;
    aw_handle *next; /* the pending poll, cancelled when the run ends */
};

static int
poll_cb(aw_loop *l, void *arg)
{
    struct poll_state *ps = arg;

    aw_handle_unref(ps->next);
    ps->next = NULL;
    if (*ps->flag || aw_loop_time(l) >= ps->deadline)
        return aw_loop_stop(l);
    return aw_loop_call_later(l, 0.001, poll_cb, ps, &ps->next);
}

aw_bytes *
await_bytes(aw_future *f, int want_rc)
{
    void *b = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), want_rc);
    if (want_rc == 0)
        ck_assert_int_eq(aw_future_take_result(f, &b, NULL), 0);
    aw_future_unref(f);
    return b;
}

int
aw_test_run_until(aw_loop *l, volatile int *flag, double seconds)
{
    struct poll_state ps = {flag, aw_loop_time(l) + seconds, NULL};

    ck_assert_int_eq(aw_loop_call_soon(l, poll_cb, &ps, &ps.next), 0);
    ck_assert_int_eq(aw_loop_run_forever(l), 0);
    if (ps.next != NULL) {
        aw_handle_cancel(ps.next);
        aw_handle_unref(ps.next);
    }
    return *flag;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    if (aw_replace_allocator(count_malloc, count_realloc, count_calloc,
                             count_free) != 0) {
        fprintf(stderr, "cannot install the counting allocator\n");
        return 99;
    }
    sr = srunner_create(aw_test_suite());
    srunner_set_tap(sr, "-");
    srunner_run_all(sr, CK_SILENT);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

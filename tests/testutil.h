/* SPDX-License-Identifier: MIT */
/* testutil.h: what every test file shares: the per-test loop fixture, the
 * counting allocator that finds leaks and fails chosen allocations, and
 * helpers to run the loop with a deadline. */
#ifndef AWAIT_TESTUTIL_H
#define AWAIT_TESTUTIL_H

#include <check.h>
#include <stddef.h>

#include "await.h"

/* The loop the fixture creates for each test; teardown closes and frees it
 * and fails the test if that does not succeed or memory leaked. */
extern aw_loop *loop;

/* Each test file defines its suite. */
Suite *aw_test_suite(void);

/* An exception handler that appends each report's message and a newline
 * to aw_test_reports (the test clears it first): for tests of what the
 * loop reports. */
extern char aw_test_reports[4096];
void aw_test_log_reports(aw_loop *l, const aw_exception_context *ctx,
                         void *arg);

/* A TCase with the loop fixture and a timeout fit for the run (longer
 * under valgrind). */
TCase *aw_test_tcase(const char *name);

/* Allocations made through libawait's allocator and not yet freed. */
long aw_test_live_allocations(void);

/* Allocation calls made through libawait's allocator so far (those made
 * to fail included): an allocation-failure sweep counts a clean run. */
long aw_test_allocations(void);

/* Make the n-th allocation from now fail (1 = the next); 0 disables. */
void aw_test_fail_allocation(long n);

/* Non-zero when the suite runs under valgrind (set by check-valgrind):
 * tests scale heavy loops down. */
int aw_test_slow(void);

/* Non-zero for `make check-long`: tests take the issues' full sizes. */
int aw_test_long(void);

/* Run the loop until *flag becomes non-zero or `seconds` pass; returns the
 * flag.  Uses a timer to stop the loop. */
int aw_test_run_until(aw_loop *l, volatile int *flag, double seconds);

/* Run the fixture's loop until f (a read) settles with want_rc; its bytes
 * (NULL unless want_rc is 0), which the caller then owns.  Releases f. */
aw_bytes *await_bytes(aw_future *f, int want_rc);

/* ---- what happened, in order ---------------------------------------- */

#define AW_TEST_LOG_MAX 64

/* The ids record() appended; cleared before each test. */
extern struct aw_test_log {
    int n;
    int items[AW_TEST_LOG_MAX];
} order;

/* Append id to order (past AW_TEST_LOG_MAX ids, drop it). */
void record(int id);

/* Fail unless order holds exactly the n ids of want, in that order. */
void assert_order(const int *want, int n);

/* ---- the loop's reports ------------------------------------------------ */

/* What an exception handler was told last, and how many times. */
struct captured {
    int calls;
    size_t size; /* the context's size field */
    int code;
    double duration;
    aw_callback_fn callback;
    char message[512];
};

/* capture_reports()'s; cleared before each test. */
extern struct captured cap;

/* An exception handler that stores into the struct captured at arg. */
void capture_handler(aw_loop *l, const aw_exception_context *ctx, void *arg);

/* Clear cap and send the test loop's reports there. */
void capture_reports(void);

#endif /* AWAIT_TESTUTIL_H */

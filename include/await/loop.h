/* SPDX-License-Identifier: MIT */
/* await/loop.h: the event loop, asyncio's loop.* on a libevent event_base:
 * a ready queue of callbacks, a timer heap, fd and signal watchers, a
 * thread-safe wake-up, an exception handler and a debug mode. */
#ifndef AWAIT_LOOP_H
#define AWAIT_LOOP_H

#include "await/core.h"

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

/* A loop.  Opaque; belongs to the thread that runs it. */
typedef struct aw_loop aw_loop;

/* A scheduled callback (asyncio's Handle / TimerHandle).  Opaque. */
typedef struct aw_handle aw_handle;

/*
 * aw_callback_fn - a callback the loop runs.  Return 0 on success; a
 * negative error code is this callback's failure (an exception escaping an
 * asyncio callback) and is reported through the loop's exception handler as
 * "Exception in callback NAME".  The loop keeps running either way.
 */
typedef int (*aw_callback_fn)(aw_loop *loop, void *arg);

/*
 * What the exception handler receives (asyncio's context dict).  `size` and
 * `message` are always set; the rest are 0/NULL when they do not apply.
 * The struct grows at the end without breaking old binaries: `size` is
 * sizeof(aw_exception_context) as the code that filled it in was compiled,
 * and a handler reads a field only when AW_EXCEPTION_CONTEXT_HAS() says the
 * context has it.  To pass one to aw_loop_call_exception_handler(), zero
 * it, set `size` to sizeof(aw_exception_context), then the fields.
 */
typedef struct aw_exception_context {
    size_t size;             /* sizeof(aw_exception_context) of its maker */
    const char *message;     /* what happened, one line */
    int code;                /* the error code, or 0 */
    aw_callback_fn callback; /* the callback concerned */
    void *callback_arg;      /* and its argument */
    double duration;         /* seconds, for slow-callback reports */
} aw_exception_context;

/* AW_EXCEPTION_CONTEXT_HAS - non-zero when the context (a pointer) holds
 * `field`, a member name of aw_exception_context. */
#define AW_EXCEPTION_CONTEXT_HAS(context, field)                             \
    ((context)->size >= offsetof(aw_exception_context, field) +               \
                            sizeof((context)->field))

typedef void (*aw_exception_handler_fn)(aw_loop *loop,
                                        const aw_exception_context *context,
                                        void *arg);

/* ---- creation and lifetime -------------------------------------------- */

/*
 * aw_loop_new - create a loop with an event_base of its own.
 * On success stores the loop in *loopp (the caller owns it; end it with
 * aw_loop_close() and aw_loop_free()) and returns 0.  Returns -EINVAL for a
 * NULL loopp, -ENOMEM, or -EIO when libevent cannot create a base.
 * The base has no lock of its own (EVENT_BASE_FLAG_NOLOCK): one loop, one
 * thread; other threads reach the loop with aw_loop_call_soon_threadsafe().
 * Creating a loop turns on libevent's thread support (evthread_use_pthreads).
 */
AW_EXTERN int aw_loop_new(aw_loop **loopp);

/*
 * aw_loop_new_with_base - create a loop on an existing event_base, so that a
 * libevent daemon can move over one module at a time.  The base stays the
 * caller's: the loop never frees it, and it must outlive the loop.  The base
 * may be run with libevent's own event_base_dispatch(); the loop keeps one
 * internal event registered on it (its thread-safe wake-up), so such a
 * dispatch ends with event_base_loopexit()/loopbreak() or aw_loop_stop().
 * Returns as aw_loop_new(), and -EINVAL for a NULL base.
 * struct event_base crosses the ABI here and in aw_loop_get_base():
 * libevent's SONAME (libevent_core-2.1.so.7) is part of libawait's, and a
 * program using these two must be built against the libevent libawait
 * was built with.
 */
AW_EXTERN int aw_loop_new_with_base(aw_loop **loopp, struct event_base *base);

/* aw_loop_get_base - the loop's event_base (owned by the loop, or adopted).
 * NULL for a NULL loop. */
AW_EXTERN struct event_base *aw_loop_get_base(aw_loop *loop);

/*
 * aw_loop_close - close the loop (asyncio's close).  Returns 0 when the loop
 * is closed, and is then a no-op if called again.  Frees nothing and returns
 * AW_EBUSY, after reporting what is outstanding through the exception
 * handler, while callbacks, timers, readers, writers, signal handlers or
 * handles the caller still references exist: cancel or finish them and
 * close again.  Returns AW_ERUNNING when called while the loop runs.
 * On a closed loop: the calls that return a code return AW_ECLOSED (to
 * schedule, watch, run, stop, or change a setting) except aw_loop_close()
 * (0) and aw_loop_free() (frees it); the calls that only look
 * (aw_loop_is_closed, aw_loop_is_running, aw_loop_get_debug, aw_loop_time,
 * aw_loop_get_base: the base lives until aw_loop_free) answer as usual, and
 * aw_loop_call_exception_handler() still reaches the handler set before
 * the close.  No handle of a closed loop can exist (close waits for them).
 */
AW_EXTERN int aw_loop_close(aw_loop *loop);

/*
 * aw_loop_free - close the loop if still open, then free it (and its base,
 * unless adopted).  Accepts NULL.  Returns 0, or the error of
 * aw_loop_close() (AW_EBUSY, AW_ERUNNING), in which case nothing is freed.
 */
AW_EXTERN int aw_loop_free(aw_loop *loop);

/* aw_loop_is_closed - 1 when closed, 0 when open. */
AW_EXTERN int aw_loop_is_closed(const aw_loop *loop);

/* ---- running ------------------------------------------------------------ */

/*
 * aw_get_running_loop - the loop running in the calling thread, or NULL
 * (asyncio's get_running_loop, without the exception).  A loop counts as
 * running inside aw_loop_run_*() and inside any of its callbacks, also when
 * its base is driven by libevent's own dispatch.
 */
AW_EXTERN aw_loop *aw_get_running_loop(void);

/*
 * aw_loop_run_forever - run until aw_loop_stop() (asyncio's run_forever).
 * Returns 0 after a stop; AW_ERUNNING when this loop, or another loop in
 * this thread, is already running (libevent is not re-entrant);
 * AW_ECLOSED on a closed loop; -EIO when libevent fails.
 */
AW_EXTERN int aw_loop_run_forever(aw_loop *loop);

enum aw_run_flags {
    AW_RUN_NOWAIT = 1 /* poll without blocking */
};

/*
 * aw_loop_run_once - one iteration, for embedding the loop in another main
 * loop: wait for I/O or the next timer (not at all with AW_RUN_NOWAIT, nor
 * when callbacks are ready), then run what became ready.  Returns 0, or
 * the errors of aw_loop_run_forever().
 */
AW_EXTERN int aw_loop_run_once(aw_loop *loop, int flags);

/*
 * aw_loop_stop - stop the loop (asyncio's stop): the callbacks of the pass
 * under way still run, those they schedule wait for the next run.  Called
 * while the loop is not running (never run, or between runs), the next
 * aw_loop_run_*() does one iteration and stops.  When the base is driven by
 * libevent's own dispatch, the dispatch is broken with
 * event_base_loopbreak(); a stop from an application's libevent callback
 * (not the loop's) is also kept for the next aw_loop_run_*(), as libevent
 * cannot tell that callback from a call between runs.  Safe in every
 * state.  Returns 0, or AW_ECLOSED / -EINVAL.
 */
AW_EXTERN int aw_loop_stop(aw_loop *loop);

/* aw_loop_is_running - 1 while inside aw_loop_run_*(), else 0. */
AW_EXTERN int aw_loop_is_running(const aw_loop *loop);

/*
 * aw_loop_time - the loop's clock: monotonic seconds, as a double
 * (asyncio's loop.time()).  Deadlines for aw_loop_call_at() use it.
 */
AW_EXTERN double aw_loop_time(const aw_loop *loop);

/* ---- scheduling callbacks ---------------------------------------------- */

/*
 * aw_loop_call_soon - run fn(loop, arg) on a later pass of the loop
 * (asyncio's call_soon).  Callbacks run in the order scheduled; one
 * scheduled while a pass runs waits for the next pass.  Never runs fn from
 * inside this call.
 * If handlep is not NULL, *handlep gets a handle with a reference taken,
 * for aw_handle_cancel(); release it with aw_handle_unref().  Pass NULL
 * when you will not cancel.  Returns 0; -EINVAL for a NULL loop or fn;
 * AW_ECLOSED; -ENOMEM.  On failure fn is never called.
 */
AW_EXTERN int aw_loop_call_soon(aw_loop *loop, aw_callback_fn fn, void *arg,
                                aw_handle **handlep);

/*
 * aw_loop_call_later - run fn(loop, arg) after `delay` seconds (asyncio's
 * call_later).  Timers run in deadline order, equal deadlines in the order
 * scheduled; a timer that falls due is queued behind the callbacks already
 * ready.  A delay of INFINITY, or one so large that the deadline is
 * beyond any clock, is never: the timer stays pending (and keeps the loop
 * from closing) until cancelled, and the loop sleeps meanwhile.  A
 * negative delay runs on the next pass, as asyncio does.  -EINVAL for a
 * NaN delay; else as call_soon.
 */
AW_EXTERN int aw_loop_call_later(aw_loop *loop, double delay,
                                 aw_callback_fn fn, void *arg,
                                 aw_handle **handlep);

/*
 * aw_loop_call_at - run fn(loop, arg) at loop time `when` (asyncio's
 * call_at); a deadline in the past runs on the next pass; INFINITY is
 * never.  -EINVAL for NaN or -INFINITY; else as aw_loop_call_later().
 */
AW_EXTERN int aw_loop_call_at(aw_loop *loop, double when, aw_callback_fn fn,
                              void *arg, aw_handle **handlep);

/*
 * aw_loop_call_soon_threadsafe - schedule fn(loop, arg) from any thread and
 * wake the loop if it sleeps (asyncio's call_soon_threadsafe).  Calls from
 * one thread run in the order made.  Made from the loop's own thread while
 * it runs (from a callback), the call joins the ready queue as
 * aw_loop_call_soon() does, in FIFO order with it; from another thread, or
 * between runs, it is queued under a lock and joins the ready queue when
 * the loop wakes.  No handle: such a call cannot be cancelled.  Thread-safe: the one loop call that is.  Returns 0, -EINVAL,
 * AW_ECLOSED, or -ENOMEM.
 */
AW_EXTERN int aw_loop_call_soon_threadsafe(aw_loop *loop, aw_callback_fn fn,
                                           void *arg);

/*
 * aw_handle_cancel - cancel a scheduled callback (asyncio's Handle.cancel).
 * Returns 0 when it was pending and now will not run; AW_EINVALSTATE, with
 * no other effect, when it already ran, is running, or was cancelled;
 * -EINVAL for NULL.
 */
AW_EXTERN int aw_handle_cancel(aw_handle *handle);

/* aw_handle_when - a pending timer's deadline in loop time (asyncio's
 * TimerHandle.when): the `when` given to aw_loop_call_at(), or the loop
 * time plus the delay given to aw_loop_call_later() (INFINITY for never).
 * NaN once the timer is due, has run or was cancelled, for a handle of
 * aw_loop_call_soon() and for NULL.  Linear in the number of timers
 * pending: meant for debugging and tests, not for every timer. */
AW_EXTERN double aw_handle_when(const aw_handle *handle);

/* aw_handle_cancelled - 1 if the handle was cancelled, else 0. */
AW_EXTERN int aw_handle_cancelled(const aw_handle *handle);

/* aw_handle_ref - take another reference; returns handle. */
AW_EXTERN aw_handle *aw_handle_ref(aw_handle *handle);

/* aw_handle_unref - drop a reference.  Accepts NULL.  Dropping it does not
 * cancel the callback. */
AW_EXTERN void aw_handle_unref(aw_handle *handle);

/* ---- file descriptors and signals --------------------------------------- */

/*
 * aw_loop_add_reader - call fn(loop, arg) whenever fd is readable (asyncio's
 * add_reader), until aw_loop_remove_reader().  A reader already on fd is
 * replaced.  Remove the reader before closing the fd.  Returns 0; -EBADF
 * for a closed or negative fd; -EPERM for a regular file or directory
 * (epoll cannot watch them); -EMFILE for an fd of FD_SETSIZE or more when
 * libevent's backend is select (EVENT_NOEPOLL and EVENT_NOPOLL set), which
 * cannot watch it; -EINVAL; AW_ECLOSED; -ENOMEM.
 */
AW_EXTERN int aw_loop_add_reader(aw_loop *loop, int fd, aw_callback_fn fn,
                                 void *arg);

/* aw_loop_remove_reader - stop watching fd for reading.  Returns 1 when a
 * reader was removed, 0 when there was none, or a negative code. */
AW_EXTERN int aw_loop_remove_reader(aw_loop *loop, int fd);

/* aw_loop_add_writer / aw_loop_remove_writer - the same for writability. */
AW_EXTERN int aw_loop_add_writer(aw_loop *loop, int fd, aw_callback_fn fn,
                                 void *arg);
AW_EXTERN int aw_loop_remove_writer(aw_loop *loop, int fd);

/*
 * aw_loop_add_signal_handler - call fn(loop, arg) on the loop each time
 * signal `signum` arrives (asyncio's add_signal_handler); the handler runs
 * as an ordinary callback, not in signal context.  A handler already set for
 * signum is replaced.  Returns 0; -EINVAL for a number out of range or a
 * signal that cannot be caught (SIGKILL, SIGSTOP); AW_ECLOSED; -ENOMEM.
 * libevent delivers signals to one event_base at a time: use signal
 * handlers on one loop of the process.
 */
AW_EXTERN int aw_loop_add_signal_handler(aw_loop *loop, int signum,
                                         aw_callback_fn fn, void *arg);

/* aw_loop_remove_signal_handler - restore the signal's previous
 * disposition.  Returns 1 if a handler was removed, 0 if none, or a
 * negative code. */
AW_EXTERN int aw_loop_remove_signal_handler(aw_loop *loop, int signum);

/* ---- errors and debugging ---------------------------------------------- */

/*
 * aw_loop_set_exception_handler - replace the handler that receives what
 * the loop reports: failed callbacks, slow callbacks in debug mode, work
 * outstanding at close (asyncio's set_exception_handler).  NULL restores
 * the default, which prints one line to stderr.  Returns 0, -EINVAL, or
 * AW_ECLOSED.
 */
AW_EXTERN int aw_loop_set_exception_handler(aw_loop *loop,
                                            aw_exception_handler_fn fn,
                                            void *arg);

/*
 * aw_loop_call_exception_handler - report context through the loop's
 * current handler (asyncio's call_exception_handler).  Returns 0; -EINVAL,
 * with no report, for a NULL loop or context, or a context whose size is
 * smaller than the first aw_exception_context (size and the five fields
 * after it: a size not set).  A larger size, from a newer header, is
 * accepted: the fields this library does not know are left to the handler.
 */
AW_EXTERN int aw_loop_call_exception_handler(
    aw_loop *loop, const aw_exception_context *context);

/* aw_loop_default_exception_handler - the default: one line to stderr
 * (nothing for a NULL context or one of a wrong size). */
AW_EXTERN void aw_loop_default_exception_handler(
    aw_loop *loop, const aw_exception_context *context);

/*
 * aw_loop_set_debug - debug mode (asyncio's set_debug): every callback is
 * timed and one that runs for at least the slow-callback duration (0.1 s
 * by default) is reported, named; scheduling from a thread that is not the
 * running loop's returns AW_EWRONGTHREAD.  Returns 0, -EINVAL, or
 * AW_ECLOSED.
 */
AW_EXTERN int aw_loop_set_debug(aw_loop *loop, int enabled);
AW_EXTERN int aw_loop_get_debug(const aw_loop *loop);

/* aw_loop_set_slow_callback_duration - the debug-mode threshold, seconds.
 * -EINVAL for a negative or NaN value; AW_ECLOSED. */
AW_EXTERN int aw_loop_set_slow_callback_duration(aw_loop *loop,
                                                 double seconds);

/*
 * aw_callback_name - write a printable name for a callback into buf: the
 * symbol name when the dynamic linker knows it, else "ADDR (object+OFFSET)"
 * for addr2line.  Returns buf.  Thread-safe.
 */
AW_EXTERN const char *aw_callback_name(aw_callback_fn fn, char *buf,
                                       size_t size);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_LOOP_H */

/* SPDX-License-Identifier: MIT */
/* await/future.h: futures (asyncio.Future) and promise chaining
 * (then/catch/finally), plus the combinators: gather, all-settled, any,
 * race, wait, as-completed, wait_for and shield. */
#ifndef AWAIT_FUTURE_H
#define AWAIT_FUTURE_H

#include <math.h>
#include <stdint.h>

#include "await/core.h"
#include "await/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A future is pending, then exactly once: done with a result, failed with
 * an error (a negative code and a message), or cancelled (with an optional
 * message).  It belongs to one loop and is used from that loop's thread.
 *
 * Ownership, in one sentence: a function that returns a future hands the
 * caller one reference, released with aw_future_unref(); a function that
 * takes a future as its input (then/catch/finally, the combinators,
 * wait_for, shield, and a task's await) takes over the caller's reference
 * to it, so that `aw_then(aw_sleep(...), ...)` leaks nothing: call
 * aw_future_ref() first to keep using it.
 *
 * Done callbacks never run inside the call that adds them or settles the
 * future: they are scheduled on the loop's ready queue, in the order added
 * (asyncio's call_soon semantics).
 */
typedef struct aw_future aw_future;

/* Destroys a result when its future is freed (unless it was taken). */
typedef void (*aw_destroy_fn)(void *ptr);

/* A done callback.  `future` is borrowed for the call.  A negative return
 * is reported through the loop's exception handler. */
typedef int (*aw_done_fn)(aw_future *future, void *arg);

enum aw_future_state {
    AW_FUTURE_PENDING = 0,
    AW_FUTURE_DONE,      /* settled with a result */
    AW_FUTURE_FAILED,    /* settled with an error */
    AW_FUTURE_CANCELLED  /* settled by cancellation */
};

/* ---- creating and releasing --------------------------------------------- */

/* aw_future_new - a pending future on loop.  Returns NULL when loop is
 * NULL or closed, or when memory runs out. */
AW_EXTERN aw_future *aw_future_new(aw_loop *loop);

/*
 * aw_future_resolved / _resolved_int / _failed - a future already settled.
 * They never return NULL for an open loop: out of memory, they return a
 * future failed with -ENOMEM (a shared one; its references are free), and
 * aw_future_resolved destroys the result it was given.  They return NULL
 * for a NULL or closed loop.  aw_future_failed: code must be negative
 * (else the future fails with -EINVAL); AW_ECANCELLED gives a cancelled
 * future, which lets a chain step pass a cancellation on; fmt may be NULL.
 */
AW_EXTERN aw_future *aw_future_resolved(aw_loop *loop, void *result,
                                        aw_destroy_fn destroy);
AW_EXTERN aw_future *aw_future_resolved_int(aw_loop *loop, intptr_t result);
AW_EXTERN aw_future *aw_future_failed(aw_loop *loop, int code,
                                      const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* aw_future_ref - take another reference; returns future. */
AW_EXTERN aw_future *aw_future_ref(aw_future *future);

/*
 * aw_future_unref - drop a reference; the last one frees the future and
 * destroys its result.  A failed future whose error nobody read is then
 * reported through the exception handler (asyncio's "Future exception was
 * never retrieved").  Whoever will settle a future holds a reference to
 * it: a pending future whose last reference goes can never settle, so it
 * is freed with its done callbacks, which never run.  Accepts NULL.
 */
AW_EXTERN void aw_future_unref(aw_future *future);

/* aw_future_loop - the loop the future belongs to. */
AW_EXTERN aw_loop *aw_future_loop(const aw_future *future);

/* ---- settling -------------------------------------------------------------- */

/*
 * aw_future_set_result - settle with a result (asyncio's set_result).  The
 * future owns `result` and calls destroy(result) when freed, unless it is
 * taken.  Returns 0; AW_EINVALSTATE if already settled, in which case
 * nothing changes and the caller still owns result; -EINVAL for NULL, or
 * for a future settled by what it waits for (a chain, a combinator).
 */
AW_EXTERN int aw_future_set_result(aw_future *future, void *result,
                                   aw_destroy_fn destroy);

/* aw_future_set_result_int - the same for a small integer result. */
AW_EXTERN int aw_future_set_result_int(aw_future *future, intptr_t result);

/*
 * aw_future_set_error - settle with an error (asyncio's set_exception):
 * a negative code and a printf-style message (fmt may be NULL).  -EINVAL
 * for a code that is not negative, or AW_ECANCELLED (use
 * aw_future_cancel); AW_EINVALSTATE if already settled.
 */
AW_EXTERN int aw_future_set_error(aw_future *future, int code,
                                  const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/*
 * aw_future_cancel - cancel (asyncio's cancel(msg)).  A pending plain
 * future becomes cancelled at once.  A chained future (aw_then & co.)
 * also cancels the future its step waits on when the chain holds the only
 * reference to it; a combinator cancels its pending inputs; aw_shield's
 * outer future never cancels its inner one.  Returns 0; AW_EINVALSTATE,
 * with no effect, when the future is already settled; -EINVAL for NULL.
 * msg may be NULL.
 */
AW_EXTERN int aw_future_cancel(aw_future *future, const char *msg);

/* ---- reading -------------------------------------------------------------- */

/* aw_future_state - one of enum aw_future_state. */
AW_EXTERN int aw_future_state(const aw_future *future);

/* aw_future_done - 1 when settled in any way, else 0 (asyncio's done). */
AW_EXTERN int aw_future_done(const aw_future *future);

/* aw_future_cancelled - 1 when cancelled, else 0. */
AW_EXTERN int aw_future_cancelled(const aw_future *future);

/*
 * aw_future_result - the outcome (asyncio's result).  Returns 0 with the
 * result in *result (still owned by the future; result may be NULL); the
 * error code when failed; AW_ECANCELLED when cancelled; AW_EINVALSTATE
 * while pending.  Reading marks the error as retrieved.
 */
AW_EXTERN int aw_future_result(aw_future *future, void **result);

/* aw_future_result_int - the same for an integer result. */
AW_EXTERN int aw_future_result_int(aw_future *future, intptr_t *result);

/*
 * aw_future_take_result - move the result out: *result and *destroy get the
 * pointer and its destructor, which the caller now owns (destroy may be
 * NULL when the caller knows how to release it); the future keeps NULL.
 * Errors as aw_future_result(); AW_EINVALSTATE too when the result was
 * already taken or is shared with a future that others still hold.
 */
AW_EXTERN int aw_future_take_result(aw_future *future, void **result,
                                    aw_destroy_fn *destroy);

/*
 * aw_future_error - the error code of a settled future (asyncio's
 * exception()): 0 for a result, the code for an error, AW_ECANCELLED when
 * cancelled; AW_EINVALSTATE while pending.  Marks the error retrieved.
 */
AW_EXTERN int aw_future_error(aw_future *future);

/* aw_future_message - the error or cancellation message, or NULL.  Owned
 * by the future. */
AW_EXTERN const char *aw_future_message(const aw_future *future);

/* ---- done callbacks -------------------------------------------------------- */

/*
 * aw_future_add_done_callback - call fn(future, arg) once the future is
 * settled (asyncio's add_done_callback); on a settled future it is
 * scheduled at once.  Returns 0; -EINVAL; -ENOMEM (fn is then never
 * called).
 */
AW_EXTERN int aw_future_add_done_callback(aw_future *future, aw_done_fn fn,
                                          void *arg);

/*
 * aw_future_remove_done_callback - remove every callback equal to
 * (fn, arg) that has not been scheduled yet; returns how many (asyncio's
 * remove_done_callback).  Once the future is settled its callbacks are
 * scheduled and none can be removed.
 */
AW_EXTERN int aw_future_remove_done_callback(aw_future *future, aw_done_fn fn,
                                             void *arg);

/*
 * aw_loop_run_until_complete - run the loop until future settles (asyncio's
 * run_until_complete).  Does not take the reference.  Returns 0 when the
 * future has a result, its error code when it failed, AW_ECANCELLED when
 * cancelled, AW_EINVALSTATE (reported) if the loop was stopped before the
 * future settled, and the errors of aw_loop_run_forever().
 */
AW_EXTERN int aw_loop_run_until_complete(aw_loop *loop, aw_future *future);

/* ---- chaining ------------------------------------------------------------- */

/*
 * A step of a chain.  `settled` is the upstream future, borrowed for the
 * call (read it with aw_future_result()).  Return the future the chain
 * follows; the chain takes over its reference.  Return a settled one
 * (aw_future_resolved(), aw_future_failed()) for a plain value, or one
 * still pending to wait for it: the chain never holds a future of a
 * future.  Returning NULL fails the chain with -EINVAL.
 */
typedef aw_future *(*aw_then_fn)(aw_future *settled, void *arg);

/*
 * aw_then - when `future` has a result, run fn and follow what it returns;
 * when it failed or was cancelled, pass that on without running fn.
 * aw_catch - when `future` failed (not when cancelled: cancellation is not
 * an error to swallow), run fn and follow what it returns; pass a result
 * or a cancellation on untouched.
 * Both take over the reference to `future` and return the chained future.
 * Steps run from the ready queue, never by recursion, so a chain of any
 * length runs in constant C stack, freeing its steps as it goes.
 * Returns NULL only when future is NULL; out of memory or with a NULL fn
 * the returned future is failed (-ENOMEM, -EINVAL) and fn never runs.
 */
AW_EXTERN aw_future *aw_then(aw_future *future, aw_then_fn fn, void *arg);
AW_EXTERN aw_future *aw_catch(aw_future *future, aw_then_fn fn, void *arg);

/*
 * aw_finally - run fn(settled, arg) whatever the outcome, then pass the
 * outcome on; a negative return from fn replaces it with that error.
 * Ownership and errors as aw_then().
 */
typedef int (*aw_finally_fn)(aw_future *settled, void *arg);
AW_EXTERN aw_future *aw_finally(aw_future *future, aw_finally_fn fn,
                                void *arg);

/* ---- combinators ------------------------------------------------------------ */

/*
 * Every combinator takes over the references to the n futures in `futures`
 * (the array itself stays the caller's), may be given the same future more
 * than once, and returns a new future (NULL only for a NULL loop).  When
 * its result is an array of the inputs (`aw_future *const *`, n entries,
 * in the order given), the combinator's future owns the array and the
 * references in it: read each input's outcome from there.
 */

enum aw_gather_flags {
    AW_GATHER_RETURN_ERRORS = 1 /* collect every outcome; never fail */
};

/*
 * aw_gather - asyncio's gather / Promise.all: result is the array of
 * inputs once all have a result.  On the first failure (or cancellation)
 * of an input the gather fails with its code and message, and the other
 * inputs go on (asyncio).  With AW_GATHER_RETURN_ERRORS it waits for all
 * and succeeds with every outcome in the array.  Cancelling the gather
 * cancels every pending input.  n == 0: a result with an empty array.
 */
AW_EXTERN aw_future *aw_gather(aw_loop *loop, size_t n, aw_future **futures,
                               int flags);

/* aw_all_settled - Promise.allSettled: aw_gather() with
 * AW_GATHER_RETURN_ERRORS. */
AW_EXTERN aw_future *aw_all_settled(aw_loop *loop, size_t n,
                                    aw_future **futures);

/*
 * aw_any - Promise.any: the result of the first input to succeed (shared
 * with that input); the others still pending are cancelled.  Fails only
 * when every input failed, with the code of the last failure and a message
 * listing each input's error; aw_combinator_inputs() then gives every
 * input to read each error.  n == 0 fails at once with -EINVAL.
 */
AW_EXTERN aw_future *aw_any(aw_loop *loop, size_t n, aw_future **futures);

/*
 * aw_race - Promise.race: settles like the first input to settle (result,
 * error or cancellation); the others go on.  Cancelling a pending race
 * cancels its inputs.  n == 0 never settles (as Promise.race([])), so it
 * can only be cancelled.
 */
AW_EXTERN aw_future *aw_race(aw_loop *loop, size_t n, aw_future **futures);

/*
 * aw_combinator_inputs - the inputs of any combinator future, in the order
 * given (n entries, stored in *n), borrowed; NULL for another future.
 * Lets aw_any's caller read every error and aw_race's the others.
 */
AW_EXTERN aw_future *const *aw_combinator_inputs(const aw_future *future,
                                                 size_t *n);

/*
 * AW_NO_TIMEOUT - the timeout that never expires (INFINITY), for
 * aw_wait(), aw_wait_for(), aw_as_completed_new() and aw_timeout_enter().
 * A negative timeout is not "none": it is already past, and expires at
 * once, as in asyncio.
 */
#define AW_NO_TIMEOUT INFINITY

enum aw_wait_mode {
    AW_FIRST_COMPLETED = 1, /* any input settled */
    AW_FIRST_ERROR,         /* any input failed, or all settled */
    AW_ALL_COMPLETED        /* all settled */
};

/*
 * aw_wait - asyncio's wait(): settles with a result when `mode` is met or
 * `timeout` seconds passed (AW_NO_TIMEOUT: none; a timeout already past,
 * <= 0: on the next pass, as asyncio; NaN: -EINVAL).
 * Inputs are never cancelled.  The result is an `aw_wait_sets *`, owned
 * by the future: done and pending inputs, each in the order given.  An
 * input given twice appears once (asyncio's sets).  n == 0 fails with
 * -EINVAL (as asyncio's ValueError).
 */
typedef struct aw_wait_sets {
    size_t ndone;
    aw_future **done;
    size_t npending;
    aw_future **pending;
} aw_wait_sets;

AW_EXTERN aw_future *aw_wait(aw_loop *loop, size_t n, aw_future **futures,
                             int mode, double timeout);

/*
 * aw_as_completed - asyncio's as_completed(): returns an iterator (NULL
 * for bad arguments or out of memory; the inputs are released either way)
 * whose aw_as_completed_next() hands out, once per input, a future whose
 * result will be an input (an `aw_future *` reference owned by the
 * result: read the input's outcome through it, or take it).  They are
 * interchangeable, as asyncio's are: each gets its input when it is
 * awaited (its first done callback, a task's await), and the first
 * awaited gets the first input to finish, whatever order they were
 * handed out in.  One cancelled by its holder gives its turn back.
 * An input given twice comes once.  Once every input was handed out,
 * _next returns a future failed with AW_EEMPTY.  Once `timeout` seconds
 * pass (AW_NO_TIMEOUT: never; <= 0: the next pass), the futures still to
 * come fail with AW_ETIMEDOUT.  Free with
 * aw_as_completed_free(), which cancels the futures it handed out that
 * are still pending.  The iterator counts as work on the loop until freed.
 */
typedef struct aw_as_completed aw_as_completed;

AW_EXTERN aw_as_completed *aw_as_completed_new(aw_loop *loop, size_t n,
                                               aw_future **futures,
                                               double timeout);
AW_EXTERN aw_future *aw_as_completed_next(aw_as_completed *it);
AW_EXTERN void aw_as_completed_free(aw_as_completed *it);

/*
 * aw_wait_for - asyncio's wait_for(): the outcome of `future`, or, after
 * `timeout` seconds, `future` is cancelled and, once it has really ended,
 * the result fails with AW_ETIMEDOUT, unless the future still produced a
 * result, which is then kept rather than lost.  A timeout already past
 * (<= 0) times out on the next pass, as asyncio's wait_for(f, 0) and
 * wait_for(f, -1) do.  AW_NO_TIMEOUT, or a future already settled:
 * returns `future` itself.  NaN: a future failed with -EINVAL.  Cancelling the returned future cancels `future`;
 * it settles cancelled once `future` has ended (like a task).
 */
AW_EXTERN aw_future *aw_wait_for(aw_future *future, double timeout);

/*
 * aw_shield - asyncio's shield(): a future that settles like `future`,
 * but whose cancellation leaves `future` running (as long as whoever
 * settles it holds it).  A settled future is returned as it is.
 */
AW_EXTERN aw_future *aw_shield(aw_future *future);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_FUTURE_H */

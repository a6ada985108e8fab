/* SPDX-License-Identifier: MIT */
/* await/task.h: tasks, stackless coroutines that await futures
 * (asyncio.Task), with cancellation, task groups, timeout scopes, sleep,
 * and a dump of what every pending task waits for. */
#ifndef AWAIT_TASK_H
#define AWAIT_TASK_H

#include <stdint.h>
#include <stdio.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A task is a future (pass it wherever a future goes: await it, gather
 * it, chain on it) that runs a coroutine: a C function re-entered where it
 * last awaited.  Its state lives in a frame, a struct the task owns and
 * frees when it ends.
 *
 *     struct fetch { aw_stream *s; char *reply; };
 *
 *     static AW_TASK(fetch, struct fetch *f)
 *     {
 *         AW_BEGIN();
 *         AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.1), NULL);
 *         AW_AWAIT(get_reply(f->s), &f->reply); // an error ends the task
 *         AW_RETURN_INT(strlen(f->reply));
 *         AW_FINALLY();                          // on every outcome
 *         stream_close(f->s);
 *         AW_END();
 *     }
 *
 *     aw_task *t = aw_task_new(loop, fetch, frame, free);
 *
 * What the macros do not allow (they are a switch over the await points,
 * as in Duff's device and protothreads):
 * - Locals do not survive an await: keep in the frame what must.
 * - No await inside a `switch` statement of your own: its case labels
 *   would capture the resumption.  (Detected at run time: the task fails
 *   with -EINVAL and a report naming the await.)
 * - One await per source line (a second one does not compile).
 * - Await only between AW_BEGIN() and AW_END(), in the task's own
 *   function, never in a function it calls.
 * - Do not `return` from the function yourself: AW_RETURN() and AW_END().
 */
typedef struct aw_future aw_task;

/* A coroutine; write it with AW_TASK().  Returns AW__TASK_SUSPENDED or
 * AW__TASK_ENDED (the macros do). */
typedef int (*aw_task_fn)(aw_task *task, void *frame);

/*
 * aw_task_new - create a task running fn(task, frame) from the next pass
 * of the loop (asyncio's create_task).  The task owns frame and calls
 * frame_free(frame) (when not NULL) once it has ended.  Returns a
 * reference; the loop holds another until the task ends, so a task runs
 * to its end even if nobody keeps it.  NULL (and frame released) for a
 * NULL loop or fn or a closed loop; out of memory, the frame is released
 * and the shared -ENOMEM future is returned.
 */
AW_EXTERN aw_task *aw_task_new(aw_loop *loop, aw_task_fn fn, void *frame,
                               aw_destroy_fn frame_free);

/*
 * aw_task_chain - the chain form: a task that runs steps[0..n-1] in turn;
 * each receives the previous step's settled future (the first: a future
 * with a NULL result) and returns the next future to await (see
 * aw_then_fn).  An error or cancellation ends the task with it; the
 * task's result is the last step's.  steps is copied.
 */
AW_EXTERN aw_task *aw_task_chain(aw_loop *loop, size_t n,
                                 const aw_then_fn *steps, void *arg);

/* aw_is_task - 1 when future is a task. */
AW_EXTERN int aw_is_task(const aw_future *future);

/* aw_task_loop - the task's loop (as aw_future_loop). */
AW_EXTERN aw_loop *aw_task_loop(const aw_task *task);

/* aw_task_frame - the frame given to aw_task_new, or NULL. */
AW_EXTERN void *aw_task_frame(const aw_task *task);

/*
 * aw_task_set_name / aw_task_name - a name for reports and dumps; the
 * default is "Task-N", N counting the tasks created on the loop from 1
 * (asyncio).  The name is copied.  set returns 0,
 * -EINVAL, -ENOMEM.
 */
AW_EXTERN int aw_task_set_name(aw_task *task, const char *name);
AW_EXTERN const char *aw_task_name(aw_task *task);

/* aw_task_set_user / aw_task_user - a pointer of the application's,
 * carried by the task.  set returns 0, -EINVAL, -ENOMEM. */
AW_EXTERN int aw_task_set_user(aw_task *task, void *user);
AW_EXTERN void *aw_task_user(const aw_task *task);

/* aw_current_task - the task running now on loop, borrowed, or NULL. */
AW_EXTERN aw_task *aw_current_task(aw_loop *loop);

/*
 * aw_all_tasks - the pending tasks of loop: stores up to max of them
 * (borrowed) in out and returns how many there are.
 */
AW_EXTERN size_t aw_all_tasks(aw_loop *loop, aw_task **out, size_t max);

/*
 * Cancelling (aw_future_cancel() on a task): the future the task awaits
 * is cancelled (a shield's outer future only, the inner one goes on), or,
 * when it awaits nothing cancellable, the task's next await is.  The task
 * resumes there with AW_ECANCELLED, runs its AW_FINALLY() block and ends
 * cancelled, unless a try-await handles the cancellation.  A task cancelled
 * before its first step ends cancelled without running.  Returns 0 while
 * the task is pending (each call counts), AW_EINVALSTATE once it ended.
 *
 * aw_task_cancelling - how many cancellations were requested and not
 * withdrawn (asyncio's cancelling()).  aw_task_uncancel - withdraw one;
 * returns the count left (asyncio's uncancel()); -EINVAL for a non-task.
 */
AW_EXTERN int aw_task_cancelling(const aw_task *task);
AW_EXTERN int aw_task_uncancel(aw_task *task);

/*
 * aw_sleep - a future done after delay seconds with a NULL result
 * (asyncio.sleep); delay 0 yields to the loop once.  aw_sleep_result - the
 * same with result (not owned: no destructor).  Cancelling it cancels its
 * timer.  A negative delay counts as 0; NaN gives a future failed with
 * -EINVAL.  NULL only for a NULL or closed loop.
 */
AW_EXTERN aw_future *aw_sleep(aw_loop *loop, double delay);
AW_EXTERN aw_future *aw_sleep_result(aw_loop *loop, double delay,
                                     void *result);

/*
 * aw_task_dump - write one line per pending task of loop: its name and
 * where it waits (the file:line of its await), whether it runs, or that
 * it has not started.  Returns the number of tasks, or -EINVAL.
 */
AW_EXTERN int aw_task_dump(aw_loop *loop, FILE *out);

/* ---- task groups (asyncio.TaskGroup) -------------------------------------- */

/*
 * A group runs children; its wait future settles once every child has
 * ended.  The first child to fail (not by cancellation) cancels the other
 * children and, when the group has a parent task that is awaiting
 * something else than the group's wait future, that await too: the
 * parent's await then returns the child's error code rather than
 * AW_ECANCELLED, and the group withdraws that cancellation once its
 * children have ended (asyncio's uncancel), so the parent's
 * aw_task_cancelling() count is what it was.  Every failed child stays
 * readable through aw_task_group_children() to collect each error.
 *
 *     g = aw_task_group_new(loop, AW_SELF());
 *     aw_task_group_spawn(g, worker, w1, free, NULL);
 *     aw_task_group_spawn(g, worker, w2, free, NULL);
 *     AW_TRY_AWAIT(rc, aw_task_group_wait(g), NULL);
 *     aw_task_group_free(g);
 */
typedef struct aw_task_group aw_task_group;

/* aw_task_group_new - a group on loop; parent (may be NULL) is the task
 * it belongs to.  NULL for bad arguments or out of memory. */
AW_EXTERN aw_task_group *aw_task_group_new(aw_loop *loop, aw_task *parent);

/*
 * aw_task_group_spawn - start a child task (as aw_task_new); *taskp, when
 * taskp is not NULL, gets a reference to it.  Returns 0; -EINVAL;
 * -ENOMEM; AW_ESHUTDOWN once a child failed or the group was cancelled
 * (asyncio refuses too).  On failure frame is released.
 */
AW_EXTERN int aw_task_group_spawn(aw_task_group *group, aw_task_fn fn,
                                  void *frame, aw_destroy_fn frame_free,
                                  aw_task **taskp);

/*
 * aw_task_group_wait - a future that settles once every child has ended
 * (at once when there are none): a NULL result when none failed; failed
 * with the first failure's code and message, the number of failed
 * children in the message; cancelled when the group was cancelled.
 * Cancelling this future cancels the children (the group is cancelled)
 * and it settles once they have all ended: a parent task cancelled while
 * it waits goes on only after its children, as with asyncio's TaskGroup.
 * Only the group settles it (aw_future_set_* refuse).  Returns a
 * reference; the same future each call.  Out of memory: the shared
 * -ENOMEM future.
 */
AW_EXTERN aw_future *aw_task_group_wait(aw_task_group *group);

/* aw_task_group_children - the children still running and those that
 * failed, in the order spawned (borrowed: valid until the next call on
 * the group).  A child that ended otherwise (done or cancelled) is
 * released by the group as it ends, so that a group running many short
 * children one after another stays small; keep the reference
 * aw_task_group_spawn() can give to read it later. */
AW_EXTERN aw_task *const *aw_task_group_children(const aw_task_group *group,
                                                 size_t *n);

/* aw_task_group_cancel - cancel every pending child.  Returns 0,
 * -EINVAL. */
AW_EXTERN int aw_task_group_cancel(aw_task_group *group, const char *msg);

/* aw_task_group_free - release the group; children still pending are
 * cancelled and end on their own.  Accepts NULL. */
AW_EXTERN void aw_task_group_free(aw_task_group *group);

/* ---- timeout scopes (asyncio.timeout) ---------------------------------------- */

/*
 * A timeout scope puts a deadline over a region of a task.  When it
 * passes, the await the task is at is cancelled and returns AW_ETIMEDOUT
 * (an outside cancellation still returns AW_ECANCELLED); with AW_AWAIT the
 * error ends the task like any other, with AW_TRY_AWAIT the code handles
 * it.  Keep the scope in the frame; close it with aw_timeout_exit() (a
 * task that ends closes the scopes it left open, and frees them).
 *
 *     f->to = aw_timeout_enter(AW_SELF(), 2.0);
 *     AW_TRY_AWAIT(rc, slow_query(f), NULL);
 *     if (aw_timeout_exit(f->to) == AW_ETIMEDOUT) ...
 */
typedef struct aw_timeout aw_timeout;

/* aw_timeout_enter - open a scope expiring after delay seconds
 * (AW_NO_TIMEOUT: none yet; a delay already past, < 0, expires at the
 * next pass, as asyncio's timeout(-1)); _at: at loop time when.  NULL for
 * a task that is not running now, a NaN, or out of memory. */
AW_EXTERN aw_timeout *aw_timeout_enter(aw_task *task, double delay);
AW_EXTERN aw_timeout *aw_timeout_enter_at(aw_task *task, double when);

/*
 * aw_timeout_reschedule - move the deadline to loop time when (asyncio's
 * Timeout.reschedule) while the scope is open and not expired: INFINITY
 * for none; a time already past expires it on the next pass.
 * aw_timeout_reschedule_in - the same, delay seconds from now
 * (AW_NO_TIMEOUT: no deadline; < 0: already past).  Both return 0; -EINVAL (NULL, NaN); -ENOMEM
 * (the deadline is unchanged); AW_EINVALSTATE once it expired.
 */
AW_EXTERN int aw_timeout_reschedule(aw_timeout *timeout, double when);
AW_EXTERN int aw_timeout_reschedule_in(aw_timeout *timeout, double delay);

/* aw_timeout_when - the deadline in loop time, INFINITY for none. */
AW_EXTERN double aw_timeout_when(const aw_timeout *timeout);

/* aw_timeout_expired - 1 when the deadline passed while open. */
AW_EXTERN int aw_timeout_expired(const aw_timeout *timeout);

/* aw_timeout_exit - close and free the scope: AW_ETIMEDOUT when it
 * expired, else 0; -EINVAL for NULL. */
AW_EXTERN int aw_timeout_exit(aw_timeout *timeout);

/* ---- the coroutine macros ------------------------------------------------------ */

#define AW__TASK_ENDED 0
#define AW__TASK_SUSPENDED 1
#define AW__RESUME_START 0
#define AW__RESUME_FINALLY (-1)

struct aw__site {
    const char *file;
    int line;
};

#if defined(__has_attribute)
#if __has_attribute(fallthrough)
#define AW__FALLTHROUGH __attribute__((fallthrough))
#endif
#endif
#ifndef AW__FALLTHROUGH
#define AW__FALLTHROUGH ((void)0)
#endif

/* The out-parameter of AW_AWAIT, AW_AWAIT_TAKE and AW_TRY_AWAIT: NULL or
 * a pointer to a pointer variable.  Anything else (the address of an int,
 * of a struct, a pointer to a non-pointer) does not compile, instead of
 * overwriting what lies next to it. */
#if defined(__cplusplus)
} /* extern "C" */
extern "C++" {
template <typename T>
inline void **aw__out_ptr(T **out) { return reinterpret_cast<void **>(out); }
inline void **aw__out_ptr(void **out) { return out; } /* NULL, nullptr */
/* The frame pointer, converted to the type the coroutine declares. */
struct aw__frame_ptr {
    void *p;
    template <typename T> operator T *() const { return static_cast<T *>(p); }
};
}
extern "C" {
#define AW__OUT(out) aw__out_ptr(out)
#define AW__FRAME(frame) (aw__frame_ptr{frame})
#elif defined(__GNUC__) || defined(__clang__)
#define AW__OUT(out)                                                          \
    ((void)sizeof(char[__builtin_classify_type(*__builtin_choose_expr(       \
                           __builtin_types_compatible_p(__typeof__(out),     \
                                                        void *),             \
                           (void **)0, (out))) == 5                          \
                           ? 1                                               \
                           : -1]),                                           \
     (void **)(out))
#define AW__FRAME(frame) (frame)
#else
#define AW__OUT(out) ((void **)(out))
#define AW__FRAME(frame) (frame)
#endif

/* AW_TASK(name, param) - define the coroutine `name` whose frame is the
 * parameter `param` (e.g. `struct fetch *f`).  May be preceded by
 * `static`. */
#define AW_TASK(name, param)                                                  \
    int name##_aw__body(aw_task *aw__t, param);                              \
    static int name(aw_task *aw__t, void *aw__frame)                         \
    {                                                                        \
        return name##_aw__body(aw__t, AW__FRAME(aw__frame));                 \
    }                                                                        \
    int name##_aw__body(aw_task *aw__t, param)

/* AW_SELF() - the running task. */
#define AW_SELF() (aw__t)

/* AW_BEGIN() - the start of the coroutine's body. */
#define AW_BEGIN()                                                            \
    aw__reenter:                                                             \
    switch (aw_task__resume_point(aw__t)) {                                  \
    case AW__RESUME_START:

/*
 * AW_AWAIT(future, out) - wait for future (the task takes over its
 * reference).  Its result goes to *out (a pointer to a pointer variable,
 * or NULL: anything else does not compile), borrowed until the next
 * await: use AW_AWAIT_TAKE to own it.  An error or cancellation ends the
 * task with it, through AW_FINALLY().  A future already settled goes on
 * at once, as in asyncio, but after 64 such awaits in a row the task
 * yields one pass of the loop, so that it cannot starve the others.
 */
#define AW_AWAIT(future, out)                                                 \
    do {                                                                     \
        static const struct aw__site aw__site = {__FILE__, __LINE__};         \
        if (aw_task__await(aw__t, (future), &aw__site))                      \
            return AW__TASK_SUSPENDED;                                       \
        AW__FALLTHROUGH;                                                     \
    case __LINE__:                                                           \
        if (aw_task__resumed(aw__t, AW__OUT(out)) != 0)                      \
            goto aw__reenter;                                                \
    } while (0)

/*
 * AW_AWAIT_TAKE(future, out) - AW_AWAIT that hands the result over with
 * its reference: *out owns it (a stream, a server, bytes, a queue item:
 * release it as the call that made the future says), and the future keeps
 * nothing, so no aw_future_take_result() is needed after the await.  out
 * must not be NULL.  A result shared with another future (a chain that
 * followed it) cannot be taken: the task ends with AW_EINVALSTATE.
 */
#define AW_AWAIT_TAKE(future, out)                                            \
    do {                                                                     \
        static const struct aw__site aw__site = {__FILE__, __LINE__};         \
        if (aw_task__await(aw__t, (future), &aw__site))                      \
            return AW__TASK_SUSPENDED;                                       \
        AW__FALLTHROUGH;                                                     \
    case __LINE__:                                                           \
        if (aw_task__taken(aw__t, AW__OUT(out)) != 0)                        \
            goto aw__reenter;                                                \
    } while (0)

/* AW_AWAIT_INT(future, out) - the same for an integer result; out is an
 * `intptr_t *` or NULL. */
#define AW_AWAIT_INT(future, out)                                             \
    do {                                                                     \
        static const struct aw__site aw__site = {__FILE__, __LINE__};         \
        if (aw_task__await(aw__t, (future), &aw__site))                      \
            return AW__TASK_SUSPENDED;                                       \
        AW__FALLTHROUGH;                                                     \
    case __LINE__: {                                                         \
        intptr_t *aw__out = (out);                                           \
        if (aw_task__resumed_int(aw__t, aw__out) != 0)                       \
            goto aw__reenter;                                                \
    }                                                                        \
    } while (0)

/*
 * AW_TRY_AWAIT(rc, future, out) - the same, but the outcome goes to the
 * code: rc (an int lvalue) gets 0 with the result in *out, or the error
 * code, AW_ECANCELLED when the task or the future was cancelled, or
 * AW_ETIMEDOUT when a timeout scope expired.  The error counts as read.
 */
#define AW_TRY_AWAIT(rc, future, out)                                         \
    do {                                                                     \
        static const struct aw__site aw__site = {__FILE__, __LINE__};         \
        if (aw_task__await(aw__t, (future), &aw__site))                      \
            return AW__TASK_SUSPENDED;                                       \
        AW__FALLTHROUGH;                                                     \
    case __LINE__:                                                           \
        (rc) = aw_task__try_resumed(aw__t, AW__OUT(out));                    \
    } while (0)

/* AW_YIELD() - let the loop run other callbacks once (asyncio.sleep(0)). */
#define AW_YIELD() AW_AWAIT(aw_sleep(aw_task_loop(aw__t), 0), NULL)

/* AW_AWAITED() - the future last awaited (borrowed), to read more of its
 * outcome or take its result. */
#define AW_AWAITED() aw_task__awaited(aw__t)

/* AW_RETURN(value, destroy) / AW_RETURN_INT(value) - end with a result:
 * the AW_FINALLY() block runs, then the task is done with it. */
#define AW_RETURN(value, destroy)                                             \
    do {                                                                     \
        aw_task__return(aw__t, (value), (destroy));                          \
        goto aw__reenter;                                                    \
    } while (0)
#define AW_RETURN_INT(value)                                                  \
    do {                                                                     \
        aw_task__return_int(aw__t, (intptr_t)(value));                       \
        goto aw__reenter;                                                    \
    } while (0)

/* AW_RAISE(code, fmt, ...) - end with an error (a negative code, a
 * printf-style message; fmt may be NULL), through AW_FINALLY(). */
#define AW_RAISE(code, ...)                                                   \
    do {                                                                     \
        aw_task__raise(aw__t, (code), __VA_ARGS__);                          \
        goto aw__reenter;                                                    \
    } while (0)

/* AW_FINALLY() - the start of the cleanup block, run on every outcome.
 * An error in it (an await failing) replaces the outcome and ends the
 * task. */
#define AW_FINALLY()                                                          \
        AW__FALLTHROUGH;                                                     \
    case AW__RESUME_FINALLY:                                                 \
        aw_task__enter_finally(aw__t)

/* AW_END() - the end of the body: the task ends with its outcome. */
#define AW_END()                                                              \
        AW__FALLTHROUGH;                                                     \
    default:                                                                 \
        break;                                                               \
    }                                                                        \
    if (0)                                                                   \
        goto aw__reenter;                                                    \
    return aw_task__end(aw__t)

/* The macros' entry points: not for direct use.  Programs call them
 * through the macros, so they are part of the ABI like every other
 * exported symbol: they keep their meaning across compatible releases. */
AW_EXTERN int aw_task__resume_point(aw_task *task);
AW_EXTERN int aw_task__await(aw_task *task, aw_future *future,
                             const struct aw__site *site);
AW_EXTERN int aw_task__resumed(aw_task *task, void **out);
AW_EXTERN int aw_task__resumed_int(aw_task *task, intptr_t *out);
AW_EXTERN int aw_task__taken(aw_task *task, void **out);
AW_EXTERN int aw_task__try_resumed(aw_task *task, void **out);
AW_EXTERN aw_future *aw_task__awaited(aw_task *task);
AW_EXTERN void aw_task__return(aw_task *task, void *value,
                               aw_destroy_fn destroy);
AW_EXTERN void aw_task__return_int(aw_task *task, intptr_t value);
AW_EXTERN void aw_task__raise(aw_task *task, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
AW_EXTERN void aw_task__enter_finally(aw_task *task);
AW_EXTERN int aw_task__end(aw_task *task);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_TASK_H */

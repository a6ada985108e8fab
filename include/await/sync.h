/* SPDX-License-Identifier: MIT */
/* await/sync.h: synchronisation primitives for tasks and callbacks:
 * asyncio's Lock, Event, Condition, Semaphore, BoundedSemaphore and
 * Barrier.  Each waits through futures: a task awaits them, callback code
 * chains on them. */
#ifndef AWAIT_SYNC_H
#define AWAIT_SYNC_H

#include <stddef.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Grants.  Lock, Semaphore and Condition hand over to their waiters in
 * FIFO order: release grants the lock (or a unit) to the first waiter by
 * settling its future, and it is that waiter's from then on.  The grant
 * counts as taken once the future's outcome is read (aw_future_result(),
 * aw_future_error(), an AW_AWAIT that resumes with it, a then step).  A
 * granted future released unread (its task was cancelled at that very
 * moment, or nobody looked) gives the grant back: the next waiter gets it.
 * No wake-up is lost that way.  A waiter cancelled before its grant simply
 * leaves the queue.
 *
 * The acquire/wait functions return a reference to a future (the shared
 * -ENOMEM future out of memory; NULL for a NULL object; failed with
 * -EINVAL for an object already freed).  Every object belongs to one loop
 * and counts as work on it until it is freed and its futures are released.
 *
 * Freeing.  An object may be freed while futures it granted or refused
 * are still held (a task frees its lock in its cleanup while another task
 * was just granted it): freeing cancels the waiters and marks the object
 * freed, so that it hands nothing on and takes no new operation (-EINVAL);
 * its memory stays until the last of its futures is released, in either
 * order.  A task granted a lock that is then freed goes on, and its
 * aw_lock_release() returns -EINVAL.  Do not use the pointer once the
 * futures are gone too.
 */

/* ---- Lock ------------------------------------------------------------------- */

typedef struct aw_lock aw_lock;

/* aw_lock_new - an unlocked lock; NULL for a NULL or closed loop or out of
 * memory.  aw_lock_free - accepts NULL (and a lock freed already);
 * waiters are cancelled, conditions' waiters re-acquiring it too. */
AW_EXTERN aw_lock *aw_lock_new(aw_loop *loop);
AW_EXTERN void aw_lock_free(aw_lock *lock);

/*
 * aw_lock_acquire - asyncio's Lock.acquire: a future done (NULL result)
 * once the lock is the caller's: at once when it is free and nobody
 * waits, else in turn.  The owner is the task running at the call (none
 * from a callback).  Differs from asyncio: a task's lock is that task's
 * (see aw_lock_release).  A task that ends still holding it is reported
 * through the loop's exception handler (AW_EINVALSTATE; the task's name
 * and the await that took the lock) and the lock goes on to the next
 * waiter (asyncio leaves it locked for good).
 */
AW_EXTERN aw_future *aw_lock_acquire(aw_lock *lock);

/* aw_lock_try_acquire - 0 when acquired now, AW_EBUSY when locked or
 * waited for (fairness), -EINVAL (NULL or freed).  The owner is as for
 * aw_lock_acquire(), and so is a task that ends holding it. */
AW_EXTERN int aw_lock_try_acquire(aw_lock *lock);

/* aw_lock_release - asyncio's Lock.release: 0; AW_EINVALSTATE when not
 * locked; -EPERM when the owner is a task and the caller is not that
 * task; -EINVAL (NULL or freed).  Differs from asyncio: only the owning
 * task may release a task's lock (asyncio: any task). */
AW_EXTERN int aw_lock_release(aw_lock *lock);

/* aw_lock_locked - asyncio's Lock.locked: 1 when locked; 0 for NULL.
 * Differs from asyncio: released to a waiter, the lock stays locked
 * until that waiter has it (asyncio: unlocked until the waiter runs). */
AW_EXTERN int aw_lock_locked(const aw_lock *lock);

/* ---- Event ------------------------------------------------------------------- */

typedef struct aw_event aw_event;

/* aw_event_new - an event, not set; NULL for a NULL or closed loop or
 * out of memory.  aw_event_free - accepts NULL; waiters are cancelled. */
AW_EXTERN aw_event *aw_event_new(aw_loop *loop);
AW_EXTERN void aw_event_free(aw_event *event);

/* aw_event_set - set the flag and wake every waiter; 0 or -EINVAL (NULL
 * or freed). */
AW_EXTERN int aw_event_set(aw_event *event);
/* aw_event_clear - clear the flag; 0 or -EINVAL (NULL or freed). */
AW_EXTERN int aw_event_clear(aw_event *event);
/* aw_event_is_set - 1 when set; 0 for NULL. */
AW_EXTERN int aw_event_is_set(const aw_event *event);
/* aw_event_wait - a future done once the flag is set (at once if it is). */
AW_EXTERN aw_future *aw_event_wait(aw_event *event);

/* ---- Semaphore and BoundedSemaphore -------------------------------------------- */

typedef struct aw_semaphore aw_semaphore;

/* aw_semaphore_new - value units (>= 0).  aw_semaphore_new_bounded - the
 * same, but releasing beyond the initial value is an error.  NULL for a
 * NULL or closed loop, a negative value or out of memory.
 * aw_semaphore_free - accepts NULL; waiters are cancelled. */
AW_EXTERN aw_semaphore *aw_semaphore_new(aw_loop *loop, int value);
AW_EXTERN aw_semaphore *aw_semaphore_new_bounded(aw_loop *loop, int value);
AW_EXTERN void aw_semaphore_free(aw_semaphore *sem);

/* aw_semaphore_acquire - a future done once a unit is the caller's. */
AW_EXTERN aw_future *aw_semaphore_acquire(aw_semaphore *sem);
/* aw_semaphore_try_acquire - 0, AW_EBUSY (none free, or waiters),
 * -EINVAL (NULL or freed). */
AW_EXTERN int aw_semaphore_try_acquire(aw_semaphore *sem);
/* aw_semaphore_release - give a unit back (to the first waiter if any):
 * 0; AW_ELIMIT for a bounded semaphore already at its initial value;
 * -EOVERFLOW (nothing changed) for one at INT_MAX; -EINVAL (NULL or
 * freed).  (A unit granted, then given back unread to a semaphore at
 * INT_MAX, is dropped: it cannot be counted.) */
AW_EXTERN int aw_semaphore_release(aw_semaphore *sem);
/* aw_semaphore_value - units free now; -EINVAL (NULL or freed). */
AW_EXTERN int aw_semaphore_value(const aw_semaphore *sem);

/* ---- Condition ------------------------------------------------------------------ */

typedef struct aw_condition aw_condition;

/* aw_condition_new - a condition over lock (not owned: the condition
 * keeps its memory, and waits fail with -EINVAL once it is freed), or over
 * a lock of its own when lock is NULL.  NULL for a NULL or closed loop, a
 * lock of another loop or freed, out of memory.  aw_condition_free -
 * accepts NULL; waiters end cancelled (re-acquiring the lock first, as a
 * cancelled wait does); the lock of its own is freed. */
AW_EXTERN aw_condition *aw_condition_new(aw_loop *loop, aw_lock *lock);
AW_EXTERN void aw_condition_free(aw_condition *cond);
/* aw_condition_lock - its lock: acquire and release it with aw_lock_*. */
AW_EXTERN aw_lock *aw_condition_lock(aw_condition *cond);

/*
 * aw_condition_wait - release the lock (which the caller must hold), wait
 * for a notify, re-acquire the lock: the future is done once it is the
 * caller's again.  Cancelled while waiting, the future still re-acquires
 * the lock before it ends cancelled (asyncio): the caller holds the lock
 * on every outcome but -EPERM (the caller did not hold the lock; nothing
 * changed) and -EINVAL (freed).  As for a lock grant, the lock counts as
 * the caller's once the outcome is read: a wait future released unread
 * (its task cancelled before it resumed, or dropped) gives the lock on.
 */
AW_EXTERN aw_future *aw_condition_wait(aw_condition *cond);

/* aw_condition_wait_for - wait until pred(arg) is true, checked with the
 * lock held: at once, then after each notify. */
typedef int (*aw_predicate_fn)(void *arg);
AW_EXTERN aw_future *aw_condition_wait_for(aw_condition *cond,
                                           aw_predicate_fn pred, void *arg);

/* aw_condition_notify - wake up to n waiters (in order); returns how
 * many.  aw_condition_notify_all - wake them all.  asyncio's notify and
 * notify_all.  The caller must hold the lock, as for aw_lock_release()
 * (asyncio raises RuntimeError): -EPERM, nobody woken, when the lock is
 * not locked, or is a task's and the caller is not that task (another
 * task or callback code).  -EINVAL for NULL, a negative n, or freed. */
AW_EXTERN int aw_condition_notify(aw_condition *cond, int n);
AW_EXTERN int aw_condition_notify_all(aw_condition *cond);

/* ---- Barrier ---------------------------------------------------------------------- */

typedef struct aw_barrier aw_barrier;

/* aw_barrier_new - a barrier for parties (>= 1) waiters; NULL for a NULL
 * or closed loop, parties < 1, out of memory.  aw_barrier_free - accepts
 * NULL; waiters are cancelled. */
AW_EXTERN aw_barrier *aw_barrier_new(aw_loop *loop, int parties);
AW_EXTERN void aw_barrier_free(aw_barrier *barrier);

/*
 * aw_barrier_wait - asyncio's Barrier.wait: a future done, with the
 * caller's arrival index (0 .. parties-1) as its integer result, once
 * parties callers are waiting.  The round then drains, as in asyncio:
 * each of its parties is in the barrier until it has left, and callers
 * arriving meanwhile wait, uncounted, to enter the next round in order
 * once the last has left.  Differs from asyncio: a party leaves when its
 * future's outcome is read (an await resuming with it,
 * aw_future_result_int(), a then step) or the future is released
 * (asyncio: when its task resumes); the barrier sees a read at its next
 * call or at the release of one of its futures.  Fails with AW_EBROKEN when the
 * barrier is broken, or is reset or aborted while the caller waits or
 * has not left (the outcome of a party released but not left becomes
 * AW_EBROKEN: nobody has seen its index).  A waiter cancelled before its
 * round fills leaves it.
 */
AW_EXTERN aw_future *aw_barrier_wait(aw_barrier *barrier);
/* aw_barrier_reset - asyncio's reset: fail with AW_EBROKEN the parties
 * in the barrier (waiting for the round, or released and not left) and
 * start over, unbroken; callers waiting for a round to drain are not
 * broken: they enter the new round.  Differs from asyncio: the parties
 * broken count as left at once (asyncio's "resetting" holds arrivals
 * until they have).  aw_barrier_abort - asyncio's abort: break it: the
 * parties in the barrier, the callers waiting to enter it and later
 * waits fail with AW_EBROKEN until a reset.  Both: 0 or -EINVAL (NULL or
 * freed).  aw_barrier_broken - 1 when broken, 0 for NULL;
 * aw_barrier_n_waiting - the parties counted for the round filling (0
 * while one drains); aw_barrier_parties; both -EINVAL for NULL or
 * freed. */
AW_EXTERN int aw_barrier_reset(aw_barrier *barrier);
AW_EXTERN int aw_barrier_abort(aw_barrier *barrier);
AW_EXTERN int aw_barrier_broken(const aw_barrier *barrier);
AW_EXTERN int aw_barrier_n_waiting(const aw_barrier *barrier);
AW_EXTERN int aw_barrier_parties(const aw_barrier *barrier);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_SYNC_H */

/* SPDX-License-Identifier: MIT */
/* await/queue.h: queues between tasks (asyncio.Queue, LifoQueue,
 * PriorityQueue), with task_done/join and shutdown. */
#ifndef AWAIT_QUEUE_H
#define AWAIT_QUEUE_H

#include <stddef.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A queue of `void *` items.  With an item destructor the queue owns its
 * items: a put hands the item over (a put that does not complete, being
 * cancelled, shut down or freed, destroys it), a get hands it over in the
 * get future's result (take it with aw_future_take_result(), or it is
 * destroyed with the future), and items left in a freed queue are
 * destroyed.  Without one, items are the caller's pointers throughout.
 *
 * Getters and putters are served in FIFO order, each by hand-over: a get
 * future settled with an item that is released unread (its task was
 * cancelled in that instant) puts the item back at the head of the queue,
 * for the next getter.  A putter waiting for room is handed a slot (its
 * future is done, the slot counts as full); its item goes in once the
 * putter has taken the slot: when the callbacks registered on the put
 * future have run (a waiting task has resumed) and the future was read,
 * or is still held by someone.  A put future nobody read and nobody holds
 * any more (a task cancelled before it resumed: asyncio's put_cancel_drop)
 * puts nothing: its slot goes to the next putter.
 *
 * Freeing a queue while futures it gave are held is safe in either order
 * (see sync.h): its memory stays until they are released; a get future
 * released unread then destroys its item, a put future its unplaced one.
 */
typedef struct aw_queue aw_queue;

enum aw_queue_kind {
    AW_QUEUE_FIFO = 0,
    AW_QUEUE_LIFO,
    AW_QUEUE_PRIORITY /* smallest first, by cmp */
};

/* Orders two items for AW_QUEUE_PRIORITY (negative: a before b). */
typedef int (*aw_compare_fn)(const void *a, const void *b);

/*
 * aw_queue_new - a queue of kind, holding at most maxsize items (0: no
 * limit).  cmp is required for AW_QUEUE_PRIORITY, ignored otherwise;
 * item_destroy may be NULL.  NULL for a NULL or closed loop, an unknown
 * kind, no cmp for a priority queue, a maxsize above PTRDIFF_MAX (a
 * negative number converted), or out of memory.
 * aw_queue_free - destroys the items left (with item_destroy) and cancels
 * the waiters; accepts NULL.  A queue counts as work on its loop until
 * freed and its futures are released.
 */
AW_EXTERN aw_queue *aw_queue_new(aw_loop *loop, int kind, size_t maxsize,
                                 aw_compare_fn cmp,
                                 aw_destroy_fn item_destroy);
AW_EXTERN void aw_queue_free(aw_queue *queue);

/*
 * aw_queue_put - asyncio's Queue.put: a future done (NULL result) once
 * item is in the queue (at once when there is room) or a slot for it is
 * (in turn; see above).  Fails with AW_ESHUTDOWN after a shutdown,
 * -EINVAL once freed.  NULL only for a NULL queue.  Differs from asyncio:
 * with getters waiting, an item put (here or with put_nowait) goes
 * straight to the first of them (asyncio: into the queue, where a
 * get_nowait() may take it before that getter runs).
 */
AW_EXTERN aw_future *aw_queue_put(aw_queue *queue, void *item);

/* aw_queue_put_nowait - asyncio's put_nowait: 0; AW_EFULL (also while
 * putters wait or slots are handed to them: asyncio lets the caller take
 * a room freed for a waiting putter); AW_ESHUTDOWN; -EINVAL (NULL or
 * freed).  On error the item stays the caller's. */
AW_EXTERN int aw_queue_put_nowait(aw_queue *queue, void *item);

/*
 * aw_queue_get - asyncio's Queue.get: a future whose result is the next
 * item: at once when there is one, else in turn.  Fails with AW_ESHUTDOWN once the queue is
 * shut down and empty, -EINVAL once freed.  NULL only for a NULL queue.
 */
AW_EXTERN aw_future *aw_queue_get(aw_queue *queue);

/* aw_queue_get_nowait - asyncio's get_nowait: 0 with the item in *item
 * (now the caller's); AW_EEMPTY (also for an item handed to a waiting
 * getter: asyncio lets the caller take it first); AW_ESHUTDOWN (shut
 * down and empty); -EINVAL (NULL queue or item, or freed). */
AW_EXTERN int aw_queue_get_nowait(aw_queue *queue, void **item);

/* aw_queue_qsize - the items in the queue (not the slots handed to
 * putters); aw_queue_maxsize - its limit (0: none); aw_queue_empty - no
 * item in it; aw_queue_full - no room, counting the slots handed to
 * putters (asyncio counts items only).  A NULL queue is empty, not full,
 * of size 0. */
AW_EXTERN size_t aw_queue_qsize(const aw_queue *queue);
AW_EXTERN size_t aw_queue_maxsize(const aw_queue *queue);
AW_EXTERN int aw_queue_empty(const aw_queue *queue);
AW_EXTERN int aw_queue_full(const aw_queue *queue);

/* aw_queue_task_done - one item fetched earlier is processed: 0;
 * AW_EINVALSTATE when called more times than items were put; -EINVAL. */
AW_EXTERN int aw_queue_task_done(aw_queue *queue);

/* aw_queue_join - a future done once every item put was marked done
 * (at once when none is outstanding). */
AW_EXTERN aw_future *aw_queue_join(aw_queue *queue);

/*
 * aw_queue_shutdown - asyncio's shutdown(): puts fail with AW_ESHUTDOWN
 * from now on, waiting putters too.  Not immediate: getters take the items
 * left, then fail with AW_ESHUTDOWN.  Immediate: the items left are
 * dropped (destroyed) and count as done for join(), and waiting getters
 * fail at once; an item on its way to a getter that releases it unread
 * (cancelled before it resumed) is dropped too, and a putter's slot taken
 * after it drops its item the same way.  Returns 0 or -EINVAL (NULL or
 * freed).
 */
AW_EXTERN int aw_queue_shutdown(aw_queue *queue, int immediate);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_QUEUE_H */

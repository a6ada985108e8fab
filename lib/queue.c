/* SPDX-License-Identifier: MIT */
/* queue.c: FIFO, LIFO and priority queues between tasks, with
 * task_done/join and shutdown (asyncio 3.13).
 *
 * Items live in one array: a ring for FIFO, a stack for LIFO, a binary
 * heap for priority.  Waiting getters and putters are grants (sync.c):
 * a put into a queue with getters waiting hands the item straight to the
 * first one, and a get grant released unread puts its item back at the
 * head of the queue.  A putter waiting for room is handed a slot, not a
 * place: its item goes in once the putter has taken the slot (read its
 * future), so that a putter cancelled before it resumed puts nothing
 * (asyncio's put, which puts only after its wait). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "await/queue.h"
#include "core-internal.h"
#include "loop-internal.h"
#include "sync-internal.h"

struct aw_queue {
    struct aw__prim p;
    int kind;
    size_t maxsize;
    aw_compare_fn cmp;
    aw_destroy_fn destroy;
    void **items;
    size_t head, len, cap; /* head: the ring's start (FIFO only) */
    struct grantq getters, putters, joiners;
    size_t reserved; /* slots handed to putters, not taken yet */
    size_t unfinished;
    int shutdown; /* SHUT_* */
};

enum { SHUT_NOT, SHUT_GRACEFUL, SHUT_IMMEDIATE };

/* A put grant's states, in base.xflags. */
enum {
    Q_HOLDS = 1 << 0,   /* the item is in data, not in the queue */
    Q_INFLIGHT = 1 << 1 /* handed a slot: in once the putter takes it */
};

/* ---- the items ------------------------------------------------------------------ */

static int
items_grow(aw_queue *q)
{
    size_t cap = q->cap ? 2 * q->cap : 16, i;

    if (cap < q->cap)
        return -ENOMEM;
    void **items = aw__reallocarray(NULL, cap, sizeof(*items));

    if (items == NULL)
        return -ENOMEM;
    for (i = 0; i < q->len; i++)
        items[i] = q->items[(q->head + i) % (q->cap ? q->cap : 1)];
    aw__free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static void
heap_up(aw_queue *q, size_t i)
{
    void *x = q->items[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;

        if (q->cmp(x, q->items[p]) >= 0)
            break;
        q->items[i] = q->items[p];
        i = p;
    }
    q->items[i] = x;
}

static void
heap_down(aw_queue *q, size_t i)
{
    void *x = q->items[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= q->len)
            break;
        if (c + 1 < q->len && q->cmp(q->items[c + 1], q->items[c]) < 0)
            c++;
        if (q->cmp(q->items[c], x) >= 0)
            break;
        q->items[i] = q->items[c];
        i = c;
    }
    q->items[i] = x;
}

/* Add an item (at the head when front, for FIFO). */
static int
items_push(aw_queue *q, void *item, int front)
{
    if (q->len == q->cap && items_grow(q) != 0)
        return -ENOMEM;
    switch (q->kind) {
    case AW_QUEUE_FIFO:
        if (front) {
            q->head = (q->head + q->cap - 1) % q->cap;
            q->items[q->head] = item;
        } else {
            q->items[(q->head + q->len) % q->cap] = item;
        }
        q->len++;
        break;
    case AW_QUEUE_LIFO:
        q->items[q->len++] = item;
        break;
    default:
        q->items[q->len++] = item;
        heap_up(q, q->len - 1);
        break;
    }
    return 0;
}

static void *
items_pop(aw_queue *q)
{
    void *item;

    switch (q->kind) {
    case AW_QUEUE_FIFO:
        item = q->items[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
        return item;
    case AW_QUEUE_LIFO:
        return q->items[--q->len];
    default:
        item = q->items[0];
        if (--q->len > 0) {
            q->items[0] = q->items[q->len];
            heap_down(q, 0);
        }
        return item;
    }
}

static void
destroy_item(aw_queue *q, void *item)
{
    if (q->destroy != NULL)
        q->destroy(item);
}

/* Full counts the slots handed to putters. */
static int
is_full(const aw_queue *q)
{
    return q->maxsize > 0 && q->len + q->reserved >= q->maxsize;
}

/* Shut down, and no item will come any more. */
static int
drained(const aw_queue *q)
{
    return q->shutdown != SHUT_NOT && q->len == 0 &&
           (q->reserved == 0 || q->shutdown == SHUT_IMMEDIATE);
}

/* ---- hand-over --------------------------------------------------------------------- */

static void get_release(struct grant *g, int unread);
static const struct grant_class get_class = {get_release, NULL};
static void put_release(struct grant *g, int unread);
static const struct grant_class put_class = {put_release, NULL};
static const struct grant_class join_class = {NULL, NULL};

/* Settle the get grant g with item, now the grant's. */
static void
give_item(aw_queue *q, struct grant *g, void *item)
{
    g->base.v.ptr = item;
    g->base.o.destroy = q->destroy;
    aw__grant_done(g);
}

static void
fail_getters(aw_queue *q)
{
    struct grant *g;

    while ((g = aw__grantq_pop(&q->getters)) != NULL)
        aw__grant_fail(g, AW_ESHUTDOWN, "queue is shut down");
}

/* Items there are go to waiting getters. */
static void refill(aw_queue *q);

static void
serve_getters(aw_queue *q)
{
    struct grant *g;

    while (q->len > 0 && (g = aw__grantq_pop(&q->getters)) != NULL) {
        give_item(q, g, items_pop(q));
        refill(q);
    }
}

/* The putter g took its slot: its item goes in (to a waiting getter if
 * any; after an immediate shutdown, dropped as the items left were). */
static void
put_commit(aw_queue *q, struct grant *g)
{
    struct grant *getter;
    void *item = g->data;

    g->base.xflags &= (uint8_t)~Q_HOLDS;
    g->data = NULL;
    if (q->shutdown == SHUT_IMMEDIATE) {
        destroy_item(q, item);
        return;
    }
    q->unfinished++;
    if ((getter = aw__grantq_pop(&q->getters)) != NULL)
        give_item(q, getter, item);
    else
        (void)items_push(q, item, 0); /* room reserved by hand_slot */
}

/* The putter g, handed a slot, has resumed (or been released): taken
 * (its outcome read, or still held by someone who may read it), the item
 * goes in; else (a task cancelled before it resumed, a future dropped)
 * the slot goes to the next putter and the item stays the put's. */
static void
put_decide(aw_queue *q, struct grant *g, int taken)
{
    g->base.xflags &= (uint8_t)~Q_INFLIGHT;
    q->reserved--;
    if (q->p.freed)
        return; /* the item is destroyed with the grant */
    if (taken)
        put_commit(q, g);
    else
        refill(q);
    if (drained(q))
        fail_getters(q);
}

/* Runs after the callbacks registered before the hand-over, a waiting
 * task's resumption among them; the batch holds one reference. */
static int
put_resumed(aw_future *f, void *arg)
{
    struct grant *g = arg;

    if (g->base.xflags & Q_INFLIGHT)
        put_decide((aw_queue *)g->owner, g,
                   (f->flags & F_RETRIEVED) || f->refs > 1);
    return 0;
}

/* Hand the first waiting putter a slot. */
static void
hand_slot(aw_queue *q, struct grant *g)
{
    if (q->len + q->reserved >= q->cap && items_grow(q) != 0) {
        aw__grant_fail(g, -ENOMEM, NULL); /* put_release destroys it */
        return;
    }
    if (aw__future_attach(&g->base, put_resumed, g) == 0) {
        q->reserved++;
        g->base.xflags |= Q_INFLIGHT;
    } else {
        put_commit(q, g); /* out of memory: in at once */
    }
    aw__grant_done(g);
}

/* Waiting putters get the room there is. */
static void
refill(aw_queue *q)
{
    struct grant *g;

    while (!is_full(q) && (g = aw__grantq_pop(&q->putters)) != NULL)
        hand_slot(q, g);
}

static void
get_release(struct grant *g, int unread)
{
    aw_queue *q = (aw_queue *)g->owner;

    if (!unread || q->p.freed)
        return;
    if (q->shutdown == SHUT_IMMEDIATE) {
        /* Dropped (destroyed with the future) as the items left were:
         * it counts as done. */
        if (q->unfinished > 0 && --q->unfinished == 0) {
            struct grant *j;

            while ((j = aw__grantq_pop(&q->joiners)) != NULL)
                aw__grant_done(j);
        }
        return;
    }
    /* Granted, never read: the item goes back to the head. */
    if (items_push(q, g->base.v.ptr, 1) == 0) {
        g->base.o.destroy = NULL;
        g->base.v.ptr = NULL;
        serve_getters(q);
    }
}

static void
put_release(struct grant *g, int unread)
{
    aw_queue *q = (aw_queue *)g->owner;

    (void)unread;
    if (g->base.xflags & Q_INFLIGHT)
        put_decide(q, g, g->base.flags & F_RETRIEVED);
    if (g->base.xflags & Q_HOLDS) { /* never placed */
        g->base.xflags &= (uint8_t)~Q_HOLDS;
        destroy_item(q, g->data);
        g->data = NULL;
    }
}

static void
wake_joiners(aw_queue *q)
{
    struct grant *g;

    while ((g = aw__grantq_pop(&q->joiners)) != NULL)
        aw__grant_done(g);
}

/* ---- the API -------------------------------------------------------------------------- */

aw_queue *
aw_queue_new(aw_loop *loop, int kind, size_t maxsize, aw_compare_fn cmp,
             aw_destroy_fn item_destroy)
{
    aw_queue *q;

    if (loop == NULL || aw_loop_is_closed(loop) ||
        (kind != AW_QUEUE_FIFO && kind != AW_QUEUE_LIFO &&
         kind != AW_QUEUE_PRIORITY) ||
        (kind == AW_QUEUE_PRIORITY && cmp == NULL) ||
        maxsize > (size_t)PTRDIFF_MAX) /* a negative number converted */
        return NULL;
    q = aw__calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    aw__prim_init(&q->p, loop, aw__prim_gone);
    q->kind = kind;
    q->maxsize = maxsize;
    q->cmp = cmp;
    q->destroy = item_destroy;
    return q;
}

void
aw_queue_free(aw_queue *q)
{
    struct grant *g;

    if (q == NULL || q->p.freed)
        return;
    while ((g = aw__grantq_pop(&q->putters)) != NULL) {
        g->base.xflags &= (uint8_t)~Q_HOLDS;
        destroy_item(q, g->data);
        g->data = NULL;
        aw__future_set_cancelled(&g->base, aw__strdup("queue freed"));
    }
    aw__grantq_cancel_all(&q->getters, "queue freed");
    aw__grantq_cancel_all(&q->joiners, "queue freed");
    while (q->len > 0)
        destroy_item(q, items_pop(q));
    aw__free(q->items);
    q->items = NULL;
    q->cap = 0;
    aw__prim_free(&q->p);
}

static aw_future *
shut_down_put(aw_queue *q, void *item)
{
    destroy_item(q, item);
    return aw__future_failed_new(q->p.loop, AW_ESHUTDOWN,
                                 aw__format("queue is shut down"));
}

/* Put now if possible: 0, AW_EFULL, -ENOMEM. */
static int
put_now(aw_queue *q, void *item)
{
    struct grant *g;

    if (q->getters.n > 0) {
        g = aw__grantq_pop(&q->getters);
        q->unfinished++;
        give_item(q, g, item);
        return 0;
    }
    if (is_full(q) || q->putters.n > 0)
        return AW_EFULL;
    if (items_push(q, item, 0) != 0)
        return -ENOMEM;
    q->unfinished++;
    return 0;
}

aw_future *
aw_queue_put(aw_queue *q, void *item)
{
    struct grant *g;
    int rc;

    if (q == NULL)
        return NULL;
    if (q->p.freed)
        return aw__future_failed_new(q->p.loop, -EINVAL,
                                     aw__format("queue used after free"));
    if (q->shutdown)
        return shut_down_put(q, item);
    rc = put_now(q, item);
    if (rc == 0)
        return aw_future_resolved(q->p.loop, NULL, NULL);
    if (rc == -ENOMEM) {
        destroy_item(q, item);
        return aw__future_nomem(q->p.loop);
    }
    g = aw__grant_new(&put_class, &q->p);
    if (g == NULL) {
        destroy_item(q, item);
        return aw__future_nomem(q->p.loop);
    }
    g->data = item;
    g->base.xflags = Q_HOLDS;
    aw__grantq_push(&q->putters, g);
    return &g->base;
}

int
aw_queue_put_nowait(aw_queue *q, void *item)
{
    if (q == NULL || q->p.freed)
        return -EINVAL;
    if (q->shutdown)
        return AW_ESHUTDOWN;
    return put_now(q, item);
}

aw_future *
aw_queue_get(aw_queue *q)
{
    struct grant *g;

    if (q == NULL)
        return NULL;
    if (q->p.freed)
        return aw__future_failed_new(q->p.loop, -EINVAL,
                                     aw__format("queue used after free"));
    if (drained(q))
        return aw__future_failed_new(q->p.loop, AW_ESHUTDOWN,
                                     aw__format("queue is shut down"));
    g = aw__grant_new(&get_class, &q->p);
    if (g == NULL)
        return aw__future_nomem(q->p.loop);
    if (q->len > 0 && q->getters.n == 0) {
        g->base.v.ptr = items_pop(q);
        g->base.o.destroy = q->destroy;
        g->base.state = AW_FUTURE_DONE;
        refill(q);
    } else {
        aw__grantq_push(&q->getters, g);
    }
    return &g->base;
}

int
aw_queue_get_nowait(aw_queue *q, void **item)
{
    if (q == NULL || item == NULL || q->p.freed)
        return -EINVAL;
    if (q->len == 0)
        return drained(q) ? AW_ESHUTDOWN : AW_EEMPTY;
    *item = items_pop(q);
    refill(q);
    return 0;
}

size_t
aw_queue_qsize(const aw_queue *q)
{
    return q != NULL ? q->len : 0;
}

size_t
aw_queue_maxsize(const aw_queue *q)
{
    return q != NULL ? q->maxsize : 0;
}

int
aw_queue_empty(const aw_queue *q)
{
    return q == NULL || q->len == 0;
}

int
aw_queue_full(const aw_queue *q)
{
    return q != NULL && is_full(q);
}

int
aw_queue_task_done(aw_queue *q)
{
    if (q == NULL || q->p.freed)
        return -EINVAL;
    if (q->unfinished == 0)
        return AW_EINVALSTATE;
    if (--q->unfinished == 0)
        wake_joiners(q);
    return 0;
}

aw_future *
aw_queue_join(aw_queue *q)
{
    struct grant *g;

    if (q == NULL)
        return NULL;
    if (q->p.freed)
        return aw__future_failed_new(q->p.loop, -EINVAL,
                                     aw__format("queue used after free"));
    if (q->unfinished == 0)
        return aw_future_resolved(q->p.loop, NULL, NULL);
    g = aw__grant_new(&join_class, &q->p);
    if (g == NULL)
        return aw__future_nomem(q->p.loop);
    aw__grantq_push(&q->joiners, g);
    return &g->base;
}

int
aw_queue_shutdown(aw_queue *q, int immediate)
{
    struct grant *g;

    if (q == NULL || q->p.freed)
        return -EINVAL;
    if (q->shutdown != SHUT_IMMEDIATE)
        q->shutdown = immediate ? SHUT_IMMEDIATE : SHUT_GRACEFUL;
    if (immediate) {
        while (q->len > 0) {
            destroy_item(q, items_pop(q));
            if (q->unfinished > 0)
                q->unfinished--;
        }
        if (q->unfinished == 0)
            wake_joiners(q);
    }
    while ((g = aw__grantq_pop(&q->putters)) != NULL)
        aw__grant_fail(g, AW_ESHUTDOWN, "queue is shut down");
    if (drained(q))
        fail_getters(q);
    return 0;
}

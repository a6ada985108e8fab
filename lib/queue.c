/* SPDX-License-Identifier: MIT */
/* queue.c: FIFO, LIFO and priority queues between tasks, with
 * task_done/join and shutdown (asyncio 3.13).
 *
 * Items live in one array: a ring for FIFO, a stack for LIFO, a binary
 * heap for priority.  Waiting getters and putters are grants (sync.c):
 * a put into a queue with getters waiting hands the item straight to the
 * first one, and a get grant released unread puts its item back at the
 * head of the queue. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "await/queue.h"
#include "core-internal.h"
#include "loop-internal.h"
#include "sync-internal.h"

struct aw_queue {
    aw_loop *loop;
    int kind;
    size_t maxsize;
    aw_compare_fn cmp;
    aw_destroy_fn destroy;
    void **items;
    size_t head, len, cap; /* head: the ring's start (FIFO only) */
    struct grantq getters, putters, joiners;
    struct grantq granted; /* get grants settled with an item, not freed */
    size_t unfinished;
    int shutdown;
};

/* ---- the items ------------------------------------------------------------------ */

static int
items_grow(aw_queue *q)
{
    size_t cap = q->cap ? 2 * q->cap : 16, i;
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

static int
is_full(const aw_queue *q)
{
    return q->maxsize > 0 && q->len >= q->maxsize;
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
    aw__grantq_push(&q->granted, g);
    aw__grant_done(g);
}

/* Waiting putters fill the room there is. */
static void
refill(aw_queue *q)
{
    struct grant *g;

    while (!is_full(q) && (g = aw__grantq_pop(&q->putters)) != NULL) {
        if (items_push(q, g->data, 0) != 0) {
            aw__grant_fail(g, -ENOMEM, NULL); /* put_release destroys it */
            continue;
        }
        g->data = NULL;
        q->unfinished++;
        aw__grant_done(g);
    }
}

/* Items there are go to waiting getters. */
static void
serve_getters(aw_queue *q)
{
    struct grant *g;

    while (q->len > 0 && (g = aw__grantq_pop(&q->getters)) != NULL) {
        give_item(q, g, items_pop(q));
        refill(q);
    }
}

static void
get_release(struct grant *g, int unread)
{
    aw_queue *q = g->owner;

    if (!unread)
        return;
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
    aw_queue *q = g->owner;

    (void)unread;
    if (g->data != NULL) { /* never placed */
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
        (kind == AW_QUEUE_PRIORITY && cmp == NULL))
        return NULL;
    q = aw__calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->loop = loop;
    q->kind = kind;
    q->maxsize = maxsize;
    q->cmp = cmp;
    q->destroy = item_destroy;
    aw__loop_track(loop, 1);
    return q;
}

void
aw_queue_free(aw_queue *q)
{
    struct grant *g;

    if (q == NULL)
        return;
    while ((g = aw__grantq_pop(&q->putters)) != NULL) {
        destroy_item(q, g->data);
        g->data = NULL;
        g->owner = NULL;
        aw__future_set_cancelled(&g->base, aw__strdup("queue freed"));
    }
    aw__grantq_cancel_all(&q->getters, "queue freed");
    aw__grantq_cancel_all(&q->joiners, "queue freed");
    while ((g = aw__grantq_pop(&q->granted)) != NULL)
        g->owner = NULL;
    while (q->len > 0)
        destroy_item(q, items_pop(q));
    aw__free(q->items);
    aw__loop_track(q->loop, -1);
    aw__free(q);
}

static aw_future *
shut_down_put(aw_queue *q, void *item)
{
    destroy_item(q, item);
    return aw__future_failed_new(q->loop, AW_ESHUTDOWN,
                                 aw__format("queue is shut down"));
}

/* Put now if possible: 0, AW_EFULL, -ENOMEM. */
static int
put_now(aw_queue *q, void *item)
{
    struct grant *g = aw__grantq_pop(&q->getters);

    if (g != NULL) {
        q->unfinished++;
        give_item(q, g, item);
        return 0;
    }
    if (is_full(q))
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
    if (q->shutdown)
        return shut_down_put(q, item);
    rc = put_now(q, item);
    if (rc == 0)
        return aw_future_resolved(q->loop, NULL, NULL);
    if (rc == -ENOMEM) {
        destroy_item(q, item);
        return aw__future_nomem(q->loop);
    }
    g = aw__grant_new(q->loop, &put_class, q);
    if (g == NULL) {
        destroy_item(q, item);
        return aw__future_nomem(q->loop);
    }
    g->data = item;
    aw__grantq_push(&q->putters, g);
    return &g->base;
}

int
aw_queue_put_nowait(aw_queue *q, void *item)
{
    if (q == NULL)
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
    if (q->len == 0 && q->shutdown)
        return aw__future_failed_new(q->loop, AW_ESHUTDOWN,
                                     aw__format("queue is shut down"));
    g = aw__grant_new(q->loop, &get_class, q);
    if (g == NULL)
        return aw__future_nomem(q->loop);
    if (q->len > 0 && q->getters.n == 0) {
        g->base.v.ptr = items_pop(q);
        g->base.o.destroy = q->destroy;
        g->base.state = AW_FUTURE_DONE;
        aw__grantq_push(&q->granted, g);
        refill(q);
    } else {
        aw__grantq_push(&q->getters, g);
    }
    return &g->base;
}

int
aw_queue_get_nowait(aw_queue *q, void **item)
{
    if (q == NULL || item == NULL)
        return -EINVAL;
    if (q->len == 0)
        return q->shutdown ? AW_ESHUTDOWN : AW_EEMPTY;
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
    if (q == NULL)
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
    if (q->unfinished == 0)
        return aw_future_resolved(q->loop, NULL, NULL);
    g = aw__grant_new(q->loop, &join_class, q);
    if (g == NULL)
        return aw__future_nomem(q->loop);
    aw__grantq_push(&q->joiners, g);
    return &g->base;
}

int
aw_queue_shutdown(aw_queue *q, int immediate)
{
    struct grant *g;

    if (q == NULL)
        return -EINVAL;
    q->shutdown = 1;
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
    if (q->len == 0)
        while ((g = aw__grantq_pop(&q->getters)) != NULL)
            aw__grant_fail(g, AW_ESHUTDOWN, "queue is shut down");
    return 0;
}

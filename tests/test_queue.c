/* SPDX-License-Identifier: MIT */
/* test_queue.c: FIFO, LIFO and priority queues, after CPython's
 * test_asyncio/test_queues.py where it applies. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define ITEM(n) ((void *)(intptr_t)(n))
#define NUM(p) ((int)(intptr_t)(p))

static int destroyed;

static void
count_destroy(void *item)
{
    (void)item;
    destroyed++;
}

static int
int_cmp(const void *a, const void *b)
{
    return NUM(a) - NUM(b);
}

static int
get_now(aw_queue *q)
{
    void *item = NULL;

    ck_assert_int_eq(aw_queue_get_nowait(q, &item), 0);
    return NUM(item);
}

static void
drain(void)
{
    int guard = 0;

    while (aw_all_tasks(loop, NULL, 0) > 0 && guard++ < 1000000)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), 0);
}

START_TEST(queue_order_for_each_kind)
{
    aw_queue *f = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, NULL);
    aw_queue *l = aw_queue_new(loop, AW_QUEUE_LIFO, 0, NULL, NULL);
    aw_queue *p = aw_queue_new(loop, AW_QUEUE_PRIORITY, 0, int_cmp, NULL);
    static const int in[] = {5, 1, 4, 2, 3};
    static const int fifo[] = {5, 1, 4, 2, 3}, lifo[] = {3, 2, 4, 1, 5};
    int i;

    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(aw_queue_put_nowait(f, ITEM(in[i])), 0);
        ck_assert_int_eq(aw_queue_put_nowait(l, ITEM(in[i])), 0);
        ck_assert_int_eq(aw_queue_put_nowait(p, ITEM(in[i])), 0);
    }
    ck_assert_int_eq(aw_queue_qsize(f), 5);
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(get_now(f), fifo[i]);
        ck_assert_int_eq(get_now(l), lifo[i]);
        ck_assert_int_eq(get_now(p), i + 1);
    }
    ck_assert(aw_queue_empty(f));
    aw_queue_free(f);
    aw_queue_free(l);
    aw_queue_free(p);
    ck_assert_ptr_null(aw_queue_new(loop, AW_QUEUE_PRIORITY, 0, NULL, NULL));
    ck_assert_ptr_null(aw_queue_new(loop, 7, 0, NULL, NULL));
}
END_TEST

START_TEST(queue_fifo_ring_wraps_and_grows)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, NULL);
    int i, next = 0, put = 0;

    for (i = 0; i < 1000; i++) {
        aw_queue_put_nowait(q, ITEM(put++));
        aw_queue_put_nowait(q, ITEM(put++));
        ck_assert_int_eq(get_now(q), next++);
    }
    while (!aw_queue_empty(q))
        ck_assert_int_eq(get_now(q), next++);
    ck_assert_int_eq(next, put);
    aw_queue_free(q);
}
END_TEST

START_TEST(queue_nowait_errors)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, NULL);
    void *item = NULL;

    ck_assert_int_eq(aw_queue_get_nowait(q, &item), AW_EEMPTY);
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(1)), 0);
    ck_assert(aw_queue_full(q));
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(2)), AW_EFULL);
    ck_assert_int_eq(aw_queue_maxsize(q), 1);
    ck_assert_int_eq(aw_queue_put_nowait(NULL, ITEM(2)), -EINVAL);
    ck_assert_int_eq(aw_queue_get_nowait(q, NULL), -EINVAL);
    aw_queue_free(q);
}
END_TEST

START_TEST(queue_maxsize_negative_refused)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, (size_t)PTRDIFF_MAX,
                               NULL, NULL);

    /* A negative maxsize (asyncio: unbounded) converts to a huge size_t:
     * refused rather than taken as a limit nobody meant. */
    ck_assert_ptr_null(aw_queue_new(loop, AW_QUEUE_FIFO, (size_t)-1, NULL,
                                    NULL));
    ck_assert_ptr_null(aw_queue_new(loop, AW_QUEUE_LIFO,
                                    (size_t)PTRDIFF_MAX + 1, NULL, NULL));
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(aw_queue_maxsize(q), (size_t)PTRDIFF_MAX);
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(1)), 0);
    ck_assert_int_eq(aw_queue_full(q), 0);
    aw_queue_free(q);
}
END_TEST

/* Every public call of queue.h with NULL, a closed loop, bad values. */
START_TEST(queue_bad_arguments)
{
    aw_loop *closed;
    aw_queue *q;
    aw_future *f, *j;
    void *item = ITEM(9);

    ck_assert_int_eq(aw_loop_new(&closed), 0);
    ck_assert_int_eq(aw_loop_close(closed), 0);
    ck_assert_ptr_null(aw_queue_new(NULL, AW_QUEUE_FIFO, 0, NULL, NULL));
    ck_assert_ptr_null(aw_queue_new(closed, AW_QUEUE_FIFO, 0, NULL, NULL));
    ck_assert_ptr_null(aw_queue_new(loop, -1, 0, NULL, NULL));
    ck_assert_int_eq(aw_loop_free(closed), 0);
    aw_queue_free(NULL);
    ck_assert_ptr_null(aw_queue_put(NULL, ITEM(1)));
    ck_assert_int_eq(aw_queue_put_nowait(NULL, ITEM(1)), -EINVAL);
    ck_assert_ptr_null(aw_queue_get(NULL));
    ck_assert_int_eq(aw_queue_get_nowait(NULL, &item), -EINVAL);
    ck_assert_ptr_eq(item, ITEM(9)); /* untouched */
    ck_assert_int_eq(aw_queue_qsize(NULL), 0);
    ck_assert_int_eq(aw_queue_maxsize(NULL), 0);
    ck_assert_int_eq(aw_queue_empty(NULL), 1);
    ck_assert_int_eq(aw_queue_full(NULL), 0);
    ck_assert_int_eq(aw_queue_task_done(NULL), -EINVAL);
    ck_assert_ptr_null(aw_queue_join(NULL));
    ck_assert_int_eq(aw_queue_shutdown(NULL, 0), -EINVAL);
    ck_assert_int_eq(aw_queue_shutdown(NULL, 1), -EINVAL);

    /* task_done beyond the puts leaves the count alone. */
    q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, NULL);
    ck_assert_int_eq(aw_queue_task_done(q), AW_EINVALSTATE);
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(1)), 0);
    ck_assert_int_eq(aw_queue_task_done(q), 0);
    ck_assert_int_eq(aw_queue_task_done(q), AW_EINVALSTATE);
    ck_assert_int_eq(aw_queue_get_nowait(q, NULL), -EINVAL);
    ck_assert_int_eq(aw_queue_qsize(q), 1); /* unchanged */
    /* Freed, kept in memory by a join still held: nothing new. */
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(2)), 0);
    j = aw_queue_join(q);
    ck_assert_int_eq(aw_future_done(j), 0);
    aw_queue_free(q);
    ck_assert_int_eq(aw_future_cancelled(j), 1);
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(2)), -EINVAL);
    ck_assert_int_eq(aw_queue_get_nowait(q, &item), -EINVAL);
    ck_assert_int_eq(aw_queue_task_done(q), -EINVAL);
    ck_assert_int_eq(aw_queue_shutdown(q, 1), -EINVAL);
    f = aw_queue_put(q, ITEM(3));
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_queue_get(q);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_queue_join(q);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(j);
}
END_TEST

struct pc {
    aw_queue *q;
    int id, n, i;
    void *itemp;
    intptr_t item;
    unsigned char *seen;
    int *count;
};

static AW_TASK(producer, struct pc *p)
{
    AW_BEGIN();
    for (p->i = 0; p->i < p->n; p->i++)
        AW_AWAIT(aw_queue_put(p->q, ITEM(p->id * p->n + p->i + 1)), NULL);
    AW_END();
}

static int pipeline_errors;

static AW_TASK(consumer, struct pc *c)
{
    AW_BEGIN();
    for (;;) {
        AW_TRY_AWAIT(c->i, aw_queue_get(c->q), &c->itemp);
        if (c->i == AW_ESHUTDOWN)
            break;
        c->item = (intptr_t)c->itemp;
        /* No ck_assert per item: Check logs each one to a file. */
        if (c->i != 0 || c->seen[c->item] != 0)
            pipeline_errors++;
        c->seen[c->item] = 1;
        (*c->count)++;
        aw_queue_task_done(c->q);
    }
    AW_END();
}

static struct pc *
pc(aw_queue *q, int id, int n, unsigned char *seen, int *count)
{
    struct pc *p = calloc(1, sizeof(*p));

    ck_assert_ptr_nonnull(p);
    p->q = q;
    p->id = id;
    p->n = n;
    p->seen = seen;
    p->count = count;
    return p;
}

START_TEST(maxsize_blocks_and_releases)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 2, NULL, NULL);
    aw_future *p1, *p2, *p3, *g;
    void *item = NULL;

    p1 = aw_queue_put(q, ITEM(1));
    p2 = aw_queue_put(q, ITEM(2));
    p3 = aw_queue_put(q, ITEM(3));
    ck_assert_int_eq(aw_future_done(p1), 1);
    ck_assert_int_eq(aw_future_done(p2), 1);
    ck_assert_int_eq(aw_future_done(p3), 0); /* full: waits */
    g = aw_queue_get(q);
    ck_assert_int_eq(aw_future_result(g, &item), 0);
    ck_assert_int_eq(NUM(item), 1);
    ck_assert_int_eq(aw_future_done(p3), 1); /* room made: its slot */
    ck_assert_int_eq(aw_queue_full(q), 1);    /* reserved for it */
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(4)), AW_EFULL);
    ck_assert_int_eq(aw_queue_qsize(q), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* p3 held: taken, in */
    ck_assert_int_eq(aw_queue_qsize(q), 2);
    aw_future_unref(g);
    ck_assert_int_eq(get_now(q), 2);
    ck_assert_int_eq(get_now(q), 3);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(p1);
    aw_future_unref(p2);
    aw_future_unref(p3);
    aw_queue_free(q);
}
END_TEST

START_TEST(join_waits_for_task_done)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, NULL);
    aw_future *j;

    j = aw_queue_join(q);
    ck_assert_int_eq(aw_future_done(j), 1); /* nothing outstanding */
    aw_future_unref(j);
    aw_queue_put_nowait(q, ITEM(1));
    aw_queue_put_nowait(q, ITEM(2));
    j = aw_queue_join(q);
    get_now(q);
    get_now(q);
    ck_assert_int_eq(aw_queue_task_done(q), 0);
    ck_assert_int_eq(aw_future_done(j), 0);
    ck_assert_int_eq(aw_queue_task_done(q), 0);
    ck_assert_int_eq(aw_future_done(j), 1);
    ck_assert_int_eq(aw_queue_task_done(q), AW_EINVALSTATE);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(j);
    aw_queue_free(q);
}
END_TEST

START_TEST(shutdown_graceful)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    aw_future *blocked, *p, *g;

    destroyed = 0;
    aw_queue_put_nowait(q, ITEM(1));
    blocked = aw_queue_put(q, ITEM(2));
    ck_assert_int_eq(aw_queue_shutdown(q, 0), 0);
    ck_assert_int_eq(aw_future_error(blocked), AW_ESHUTDOWN);
    p = aw_queue_put(q, ITEM(3));
    ck_assert_int_eq(aw_future_error(p), AW_ESHUTDOWN);
    ck_assert_int_eq(aw_queue_put_nowait(q, ITEM(4)), AW_ESHUTDOWN);
    ck_assert_int_eq(get_now(q), 1); /* what was in still comes out */
    g = aw_queue_get(q);
    ck_assert_int_eq(aw_future_error(g), AW_ESHUTDOWN);
    aw_future_unref(blocked);
    aw_future_unref(p);
    aw_future_unref(g);
    ck_assert_int_eq(destroyed, 2); /* items 2 and 3: never put */
    aw_queue_free(q);
}
END_TEST

START_TEST(shutdown_immediate)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, count_destroy);
    aw_queue *e = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, NULL);
    aw_future *j, *g;

    destroyed = 0;
    aw_queue_put_nowait(q, ITEM(1));
    aw_queue_put_nowait(q, ITEM(2));
    j = aw_queue_join(q);
    aw_queue_shutdown(q, 1);
    ck_assert_int_eq(destroyed, 2);
    ck_assert_int_eq(aw_queue_qsize(q), 0);
    ck_assert_int_eq(aw_future_done(j), 1); /* dropped items count done */
    g = aw_queue_get(e);
    aw_queue_shutdown(e, 1);
    ck_assert_int_eq(aw_future_error(g), AW_ESHUTDOWN); /* waiter woken */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(j);
    aw_future_unref(g);
    aw_queue_free(q);
    aw_queue_free(e);
}
END_TEST

START_TEST(get_cancelled_after_grant_keeps_item)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, count_destroy);
    aw_future *g1, *g2;
    void *item = NULL;

    destroyed = 0;
    g1 = aw_queue_get(q);
    g2 = aw_queue_get(q);
    aw_queue_put_nowait(q, ITEM(7)); /* handed to g1 */
    ck_assert_int_eq(aw_future_done(g1), 1);
    ck_assert_int_eq(aw_future_cancel(g2, NULL), 0); /* before its grant */
    aw_future_unref(g1); /* unread: 7 goes back */
    ck_assert_int_eq(aw_queue_qsize(q), 1);
    ck_assert_int_eq(destroyed, 0);
    g1 = aw_queue_get(q);
    ck_assert_int_eq(aw_future_take_result(g1, &item, NULL), 0);
    ck_assert_int_eq(NUM(item), 7);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(g1);
    aw_future_unref(g2);
    ck_assert_int_eq(destroyed, 0); /* taken: the caller's */
    aw_queue_free(q);
}
END_TEST

START_TEST(put_cancelled_destroys_item_and_free_destroys_rest)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_LIFO, 1, NULL, count_destroy);
    aw_future *p;

    destroyed = 0;
    aw_queue_put_nowait(q, ITEM(1));
    p = aw_queue_put(q, ITEM(2));
    aw_future_cancel(p, NULL);
    aw_future_unref(p);
    ck_assert_int_eq(destroyed, 1);
    p = aw_queue_put(q, ITEM(3)); /* left waiting */
    aw_queue_free(q);             /* destroys 1 and 3 */
    ck_assert_int_eq(destroyed, 3);
    ck_assert_int_eq(aw_future_cancelled(p), 1);
    aw_future_unref(p);
}
END_TEST

/* ---- freeing while futures are held ------------------------------------------------- */

static aw_queue *shared_q;

static AW_TASK(blocked_producer, struct pc *p)
{
    AW_BEGIN();
    AW_TRY_AWAIT(p->i, aw_queue_put(shared_q, ITEM(p->id)), NULL);
    record(p->i);
    AW_END();
}

static AW_TASK(shutdown_and_free, struct pc *p)
{
    AW_BEGIN();
    (void)p;
    aw_queue_shutdown(shared_q, 0);
    aw_queue_free(shared_q);
    AW_END();
}

START_TEST(queue_shut_down_and_freed_under_producer)
{
    static const int want[] = {AW_ESHUTDOWN};
    aw_task *p, *k;

    memset(&order, 0, sizeof(order));
    destroyed = 0;
    shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    aw_queue_put_nowait(shared_q, ITEM(1));
    p = aw_task_new(loop, blocked_producer, pc(NULL, 2, 0, NULL, NULL), free);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    k = aw_task_new(loop, shutdown_and_free, pc(NULL, 0, 0, NULL, NULL),
                    free);
    drain();
    assert_order(want, 1);
    ck_assert_int_eq(destroyed, 2); /* 1 left in it, 2 never put */
    aw_future_unref(p);
    aw_future_unref(k);
}
END_TEST

START_TEST(queue_free_then_release_futures)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    aw_queue *s = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    aw_future *slot, *waiting, *refused, *got, *unread, *join, *getter;
    void *item;

    destroyed = 0;
    /* q: a put handed a slot, a put waiting, gets read and unread. */
    aw_queue_put_nowait(q, ITEM(1));
    slot = aw_queue_put(q, ITEM(2));
    waiting = aw_queue_put(q, ITEM(3));
    got = aw_queue_get(q); /* 1; slot handed to 2 */
    ck_assert_int_eq(aw_future_result(got, &item), 0);
    ck_assert_int_eq(aw_future_done(slot), 1);
    join = aw_queue_join(q);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* 2 in */
    unread = aw_queue_get(q);
    ck_assert_int_eq(aw_future_done(unread), 1);
    getter = aw_queue_get(q); /* 3 comes after the pass */
    /* s: a put refused by the shutdown. */
    aw_queue_put_nowait(s, ITEM(4));
    refused = aw_queue_put(s, ITEM(5));
    aw_queue_shutdown(s, 0);
    ck_assert_int_eq(aw_future_error(refused), AW_ESHUTDOWN);
    aw_queue_free(q);
    aw_queue_free(s);
    ck_assert_int_eq(aw_future_cancelled(join), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(got);
    aw_future_unref(unread); /* no queue to go back to: destroyed */
    aw_future_unref(refused);
    aw_future_unref(join);
    aw_future_unref(getter);
    aw_future_unref(waiting);
    aw_future_unref(slot); /* the last: q's memory goes */
    ck_assert_int_eq(destroyed, 5); /* each once, 1 with got (not taken) */
}
END_TEST

START_TEST(queue_release_futures_then_free)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, NULL);
    aw_future *slot, *got, *join, *getter;

    aw_queue_put_nowait(q, ITEM(1));
    slot = aw_queue_put(q, ITEM(2));
    got = aw_queue_get(q);
    join = aw_queue_join(q);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_future_error(got), 0);
    aw_future_unref(got);
    aw_future_unref(slot);
    aw_future_unref(join);
    getter = aw_queue_get(q);
    aw_future_unref(getter); /* unread: 2 goes back */
    ck_assert_int_eq(aw_queue_qsize(q), 1);
    aw_queue_free(q);
}
END_TEST

/* ---- a put cancelled after its slot was handed over -------------------------------- */

static aw_task *victim;

static AW_TASK(putter, struct pc *p)
{
    AW_BEGIN();
    AW_AWAIT(aw_queue_put(shared_q, ITEM(p->id)), NULL);
    record(p->id);
    AW_END();
}

static struct pc *
frame_id(int id)
{
    return pc(NULL, id, 0, NULL, NULL);
}

/* asyncio's test_put_cancel_drop. */
START_TEST(put_cancel_drop)
{
    aw_task *writer;

    shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, NULL);
    memset(&order, 0, sizeof(order));
    aw_queue_put_nowait(shared_q, ITEM(1));
    writer = aw_task_new(loop, putter, frame_id(2), free);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* blocked: full */
    ck_assert_int_eq(get_now(shared_q), 1); /* the slot goes to writer */
    aw_future_cancel(writer, NULL);
    drain();
    ck_assert_int_eq(aw_future_cancelled(writer), 1);
    ck_assert_int_eq(aw_queue_qsize(shared_q), 0); /* 2 never went in */
    aw_future_unref(writer);
    writer = aw_task_new(loop, putter, frame_id(2), free); /* again */
    drain();
    ck_assert_int_eq(get_now(shared_q), 2);
    ck_assert_int_eq(aw_queue_qsize(shared_q), 0);
    aw_future_unref(writer);
    aw_queue_free(shared_q);
}
END_TEST

/* The slot of a putter cancelled before it resumed goes to the next. */
START_TEST(put_cancelled_after_slot_handed_slot_goes_to_next_putter)
{
    static const int want[] = {3};
    aw_task *p2, *p3;

    shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    memset(&order, 0, sizeof(order));
    destroyed = 0;
    aw_queue_put_nowait(shared_q, ITEM(1));
    p2 = aw_task_new(loop, putter, frame_id(2), free);
    p3 = aw_task_new(loop, putter, frame_id(3), free);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(get_now(shared_q), 1); /* slot to p2 */
    ck_assert_int_eq(aw_queue_full(shared_q), 1);
    aw_future_cancel(p2, NULL); /* granted, not resumed */
    drain();
    assert_order(want, 1);
    ck_assert_int_eq(aw_future_cancelled(p2), 1);
    ck_assert_int_eq(destroyed, 1); /* 2: the put's, never in */
    ck_assert_int_eq(aw_queue_qsize(shared_q), 1);
    ck_assert_int_eq(get_now(shared_q), 3);
    ck_assert_int_eq(aw_queue_task_done(shared_q), 0);
    ck_assert_int_eq(aw_queue_task_done(shared_q), 0);
    ck_assert_int_eq(aw_queue_task_done(shared_q), AW_EINVALSTATE);
    aw_future_unref(p2);
    aw_future_unref(p3);
    aw_queue_free(shared_q);
}
END_TEST

/* A consumer that makes room and cancels the putter in the same step. */
static AW_TASK(get_then_cancel, struct pc *p)
{
    void *item;

    AW_BEGIN();
    p->i = aw_queue_get_nowait(shared_q, &item);
    aw_future_cancel(victim, NULL);
    AW_END();
}

START_TEST(put_cancel_requested_in_same_pass_as_slot)
{
    static const int want[] = {3};
    aw_task *p2, *p3, *c;

    shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    memset(&order, 0, sizeof(order));
    destroyed = 0;
    aw_queue_put_nowait(shared_q, ITEM(1));
    p2 = aw_task_new(loop, putter, frame_id(2), free);
    p3 = aw_task_new(loop, putter, frame_id(3), free);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    victim = p2;
    c = aw_task_new(loop, get_then_cancel, frame_id(0), free);
    drain();
    assert_order(want, 1);
    ck_assert_int_eq(destroyed, 1); /* 2, never in (1 was taken) */
    ck_assert_int_eq(get_now(shared_q), 3);
    ck_assert_int_eq(aw_queue_qsize(shared_q), 0);
    aw_future_unref(p2);
    aw_future_unref(p3);
    aw_future_unref(c);
    aw_queue_free(shared_q);
}
END_TEST

START_TEST(put_future_freed_unread_slot_goes_to_next_putter)
{
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 1, NULL, count_destroy);
    aw_future *p2, *p3;

    destroyed = 0;
    aw_queue_put_nowait(q, ITEM(1));
    p2 = aw_queue_put(q, ITEM(2));
    p3 = aw_queue_put(q, ITEM(3));
    ck_assert_int_eq(get_now(q), 1); /* slot to p2 */
    ck_assert_int_eq(aw_future_done(p2), 1);
    ck_assert_int_eq(aw_future_done(p3), 0);
    aw_future_unref(p2); /* dropped unread: 2 never goes in */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(aw_future_done(p3), 1); /* its slot */
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* p3 held: in */
    ck_assert_int_eq(aw_queue_qsize(q), 1);
    ck_assert_int_eq(get_now(q), 3);
    aw_future_unref(p3);
    aw_queue_free(q);
}
END_TEST

/* ---- a get cancelled after its item was handed over ---------------------------------- */

static AW_TASK(getter, struct pc *p)
{
    AW_BEGIN();
    AW_AWAIT(aw_queue_get(shared_q), &p->itemp);
    record((int)(intptr_t)p->itemp);
    AW_END();
}

/* Gives an item and cancels the victim getter in the same step. */
static AW_TASK(put_and_cancel, struct pc *p)
{
    AW_BEGIN();
    if (p->id == 0) {
        aw_queue_put_nowait(shared_q, ITEM(5));
        aw_future_cancel(victim, NULL);
    } else {
        aw_future_cancel(victim, NULL);
        aw_queue_put_nowait(shared_q, ITEM(5));
    }
    AW_END();
}

/* An item handed to a getter cancelled before it resumed goes to the
 * next getter: from outside before the getter runs, in the giver's step,
 * cancelled just before the hand-over. */
START_TEST(get_cancelled_after_grant_item_goes_to_next_getter)
{
    static const int want[] = {5};
    int pt;

    for (pt = 0; pt < 3; pt++) {
        aw_task *g1, *g2, *giver = NULL;

        shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, count_destroy);
        memset(&order, 0, sizeof(order));
        destroyed = 0;
        g1 = aw_task_new(loop, getter, frame_id(0), free);
        g2 = aw_task_new(loop, getter, frame_id(0), free);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        victim = g1;
        if (pt == 0) {
            aw_queue_put_nowait(shared_q, ITEM(5));
            aw_future_cancel(g1, NULL);
        } else {
            giver = aw_task_new(loop, put_and_cancel, frame_id(pt - 1), free);
        }
        drain();
        ck_assert_msg(aw_future_cancelled(g1), "point %d", pt);
        assert_order(want, 1);
        ck_assert_int_eq(destroyed, 1); /* with g2's future: not taken */
        ck_assert_int_eq(aw_queue_qsize(shared_q), 0);
        ck_assert_int_eq(aw_queue_task_done(shared_q), 0);
        ck_assert_int_eq(aw_queue_task_done(shared_q), AW_EINVALSTATE);
        aw_future_unref(g1);
        aw_future_unref(g2);
        aw_future_unref(giver);
        aw_queue_free(shared_q);
    }
}
END_TEST

/* Immediate shutdown while an item is on its way to a getter that is
 * cancelled before it resumes: the item is dropped, not put back, and
 * counts as done for join(). */
START_TEST(get_cancelled_after_grant_then_immediate_shutdown_join_completes)
{
    int shutdown_first;

    for (shutdown_first = 0; shutdown_first < 2; shutdown_first++) {
        aw_task *g;
        aw_future *j;

        shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, count_destroy);
        memset(&order, 0, sizeof(order));
        destroyed = 0;
        g = aw_task_new(loop, getter, frame_id(0), free);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        ck_assert_int_eq(aw_queue_put_nowait(shared_q, ITEM(7)), 0);
        j = aw_queue_join(shared_q);
        if (shutdown_first)
            aw_queue_shutdown(shared_q, 1);
        aw_future_cancel(g, NULL); /* handed 7, not resumed */
        if (!shutdown_first)
            aw_queue_shutdown(shared_q, 1);
        ck_assert_int_eq(aw_future_done(j), 0); /* 7 is on its way */
        drain();
        ck_assert_int_eq(aw_future_cancelled(g), 1);
        ck_assert_int_eq(order.n, 0);
        ck_assert_int_eq(destroyed, 1); /* dropped, */
        ck_assert_int_eq(aw_queue_qsize(shared_q), 0); /* not back */
        ck_assert_int_eq(aw_future_done(j), 1);        /* and done */
        ck_assert_int_eq(aw_future_error(j), 0);
        ck_assert_int_eq(aw_queue_task_done(shared_q), AW_EINVALSTATE);
        aw_future_unref(g);
        aw_future_unref(j);
        aw_queue_free(shared_q);
    }
}
END_TEST

/* After a graceful shutdown the item comes back for the next getter. */
START_TEST(get_cancelled_after_grant_then_graceful_shutdown_item_back)
{
    aw_task *g;
    aw_future *j;

    shared_q = aw_queue_new(loop, AW_QUEUE_FIFO, 0, NULL, count_destroy);
    memset(&order, 0, sizeof(order));
    destroyed = 0;
    g = aw_task_new(loop, getter, frame_id(0), free);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_queue_put_nowait(shared_q, ITEM(7));
    aw_future_cancel(g, NULL);
    aw_queue_shutdown(shared_q, 0);
    drain();
    ck_assert_int_eq(destroyed, 0);
    ck_assert_int_eq(aw_queue_qsize(shared_q), 1);
    j = aw_queue_join(shared_q);
    ck_assert_int_eq(get_now(shared_q), 7);
    ck_assert_int_eq(aw_queue_task_done(shared_q), 0);
    ck_assert_int_eq(aw_future_done(j), 1);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(g);
    aw_future_unref(j);
    aw_queue_free(shared_q);
}
END_TEST

START_TEST(pipeline_4_producers_4_consumers_every_item_once)
{
    int per = aw_test_slow() ? 5000 : 250000, i, count = 0;
    int total = 4 * per;
    aw_queue *q = aw_queue_new(loop, AW_QUEUE_FIFO, 64, NULL, NULL);
    unsigned char *seen = calloc((size_t)total + 1, 1);
    aw_task *t[8];
    aw_future *j;

    ck_assert_ptr_nonnull(seen);
    pipeline_errors = 0;
    for (i = 0; i < 4; i++)
        t[i] = aw_task_new(loop, producer, pc(q, i, per, seen, &count), free);
    for (i = 0; i < 4; i++)
        t[4 + i] = aw_task_new(loop, consumer, pc(q, i, 0, seen, &count),
                               free);
    {
        aw_future *prod[4], *all;

        for (i = 0; i < 4; i++)
            prod[i] = aw_future_ref(t[i]);
        all = aw_gather(loop, 4, prod, 0);
        ck_assert_int_eq(aw_loop_run_until_complete(loop, all), 0);
        aw_future_unref(all);
    }
    j = aw_queue_join(q); /* every item is in: join means all arrived */
    aw_loop_run_until_complete(loop, j);
    ck_assert_int_eq(aw_future_error(j), 0);
    aw_queue_shutdown(q, 0); /* the consumers end */
    drain();
    ck_assert_int_eq(count, total);
    ck_assert_int_eq(pipeline_errors, 0);
    for (i = 1; i <= total && seen[i] == 1; i++)
        ;
    ck_assert_msg(i == total + 1, "item %d missing", i);
    for (i = 0; i < 8; i++) {
        ck_assert_int_eq(aw_future_error(t[i]), 0);
        aw_future_unref(t[i]);
    }
    aw_future_unref(j);
    free(seen);
    aw_queue_free(q);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = aw_test_tcase("queue");

    tcase_add_test(tc, queue_order_for_each_kind);
    tcase_add_test(tc, queue_fifo_ring_wraps_and_grows);
    tcase_add_test(tc, queue_nowait_errors);
    tcase_add_test(tc, queue_maxsize_negative_refused);
    tcase_add_test(tc, queue_bad_arguments);
    tcase_add_test(tc, maxsize_blocks_and_releases);
    tcase_add_test(tc, join_waits_for_task_done);
    tcase_add_test(tc, shutdown_graceful);
    tcase_add_test(tc, shutdown_immediate);
    tcase_add_test(tc, get_cancelled_after_grant_keeps_item);
    tcase_add_test(tc, put_cancelled_destroys_item_and_free_destroys_rest);
    tcase_add_test(tc, queue_shut_down_and_freed_under_producer);
    tcase_add_test(tc, queue_free_then_release_futures);
    tcase_add_test(tc, queue_release_futures_then_free);
    tcase_add_test(tc, put_cancel_drop);
    tcase_add_test(tc, put_cancelled_after_slot_handed_slot_goes_to_next_putter);
    tcase_add_test(tc, put_cancel_requested_in_same_pass_as_slot);
    tcase_add_test(tc, put_future_freed_unread_slot_goes_to_next_putter);
    tcase_add_test(tc, get_cancelled_after_grant_item_goes_to_next_getter);
    tcase_add_test(tc, get_cancelled_after_grant_then_immediate_shutdown_join_completes);
    tcase_add_test(tc, get_cancelled_after_grant_then_graceful_shutdown_item_back);
    tcase_add_test(tc, pipeline_4_producers_4_consumers_every_item_once);
    suite_add_tcase(s, tc);
    return s;
}

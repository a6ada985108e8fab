/* SPDX-License-Identifier: MIT */
/* sync.c: Lock, Event, Condition, Semaphore, BoundedSemaphore, Barrier.
 *
 * Every waiter is a "grant": a future of kind K_GRANT on a FIFO list of its
 * primitive.  Releasing hands the lock (or a unit) straight to the first
 * waiter by settling its grant.  A grant settled done but released unread
 * gives back what it was granted (aw__grant_ops.release), so that a task
 * cancelled in the instant between the grant and its resumption loses
 * nothing for the others (CPython's lost wake-up bugs). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "await/sync.h"
#include "await/task.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "sync-internal.h"

/* ---- grants ----------------------------------------------------------------------- */

void
aw__grantq_push(struct grantq *q, struct grant *g)
{
    g->q = q;
    g->next = NULL;
    g->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = g;
    else
        q->head = g;
    q->tail = g;
    q->n++;
}

void
aw__grantq_remove(struct grant *g)
{
    struct grantq *q = g->q;

    if (q == NULL)
        return;
    if (g->prev != NULL)
        g->prev->next = g->next;
    else
        q->head = g->next;
    if (g->next != NULL)
        g->next->prev = g->prev;
    else
        q->tail = g->prev;
    q->n--;
    g->q = NULL;
    g->prev = g->next = NULL;
}

struct grant *
aw__grantq_pop(struct grantq *q)
{
    struct grant *g = q->head;

    if (g != NULL)
        aw__grantq_remove(g);
    return g;
}

struct grant *
aw__grant_new(aw_loop *loop, const struct grant_class *cls, void *owner)
{
    struct grant *g = (struct grant *)aw__future_alloc(loop, &aw__grant_ops);

    if (g == NULL)
        return NULL;
    g->cls = cls;
    g->owner = owner;
    g->q = NULL;
    g->prev = g->next = NULL;
    g->data = g->data2 = NULL;
    return g;
}

void
aw__grant_done(struct grant *g)
{
    g->base.state = AW_FUTURE_DONE;
    aw__future_settle(&g->base);
}

void
aw__grant_fail(struct grant *g, int code, const char *msg)
{
    aw__future_set_failed(&g->base, code, msg ? aw__strdup(msg) : NULL);
}

static void
grant_cancel(aw_future *f, const char *msg)
{
    struct grant *g = (struct grant *)f;

    if (g->owner != NULL && g->cls->cancel != NULL && g->cls->cancel(g, msg))
        return;
    aw__grantq_remove(g);
    aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
}

static void
grant_release(aw_future *f)
{
    struct grant *g = (struct grant *)f;

    aw__grantq_remove(g);
    if (g->owner != NULL && g->cls->release != NULL)
        g->cls->release(g, f->state == AW_FUTURE_DONE &&
                               !(f->flags & F_RETRIEVED));
}

static void grant_reclaim(aw_future *f);

const struct aw__future_ops aw__grant_ops = {
    .name = "grant", .kind = K_GRANT, .flags = AW__OPS_LEAF,
    .size = sizeof(struct grant), .cancel = grant_cancel,
    .release = grant_release, .reclaim = grant_reclaim};

/* Cancel every waiter of a primitive being freed. */
void
aw__grantq_cancel_all(struct grantq *q, const char *msg)
{
    struct grant *g;

    while ((g = aw__grantq_pop(q)) != NULL) {
        g->owner = NULL;
        if (g->base.state == AW_FUTURE_PENDING)
            aw__future_set_cancelled(&g->base, aw__strdup(msg));
    }
}

static aw_future *
nomem(aw_loop *loop)
{
    return aw__future_nomem(loop);
}

/* ---- Lock ------------------------------------------------------------------------- */

struct aw_lock {
    aw_loop *loop;
    struct aw__task_slot *tasks; /* the loop's: its running task */
    struct grantq waiters;
    struct grant *holder; /* the grant the lock is held for, if any */
    aw_future *owner;     /* the task holding it, if a task does */
    int locked;
    int fast_busy; /* `fast` is handed out */
    int dying;     /* freed while `fast` was out: free when it returns */
    /* The grant of an uncontended acquire, reused: no allocation. */
    struct grant fast;
};

/* The task running now (aw_current_task without the calls). */
static inline aw_future *
lock_current(const aw_lock *l)
{
    return (aw_future *)(void *)l->tasks->current;
}

/* The lock's own grant came back. */
static void
grant_reclaim(aw_future *f)
{
    aw_lock *l = AW__CONTAINER_OF((struct grant *)f, aw_lock, fast);

    l->fast_busy = 0;
    if (l->dying)
        aw__free(l);
}

static void lock_hand(aw_lock *l);
static int cond_granted(struct grant *g);

static void lock_release_grant(struct grant *g, int unread);
static const struct grant_class lock_class = {lock_release_grant, NULL};
static void cond_release_grant(struct grant *g, int unread);
static int cond_cancel(struct grant *g, const char *msg);
static const struct grant_class cond_class = {cond_release_grant,
                                              cond_cancel};

/* The lock is now g's.  Returns 0 when g let go of it again at once (a
 * condition predicate still false). */
static int
lock_give(aw_lock *l, struct grant *g)
{
    l->locked = 1;
    l->owner = g->data;
    l->holder = g;
    if (g->cls == &cond_class)
        return cond_granted(g);
    aw__grant_done(g);
    return 1;
}

/* The lock is free: to the first waiter, or unlocked. */
static void
lock_hand(aw_lock *l)
{
    struct grant *g;

    while ((g = aw__grantq_pop(&l->waiters)) != NULL)
        if (lock_give(l, g))
            return;
    l->locked = 0;
    l->owner = NULL;
    l->holder = NULL;
}

/* The grant the lock is held for goes: unread, the lock goes on to the
 * next waiter; read, its task keeps the lock. */
static void
lock_forget(aw_lock *l, struct grant *g, int unread)
{
    if (l->holder != g)
        return;
    l->holder = NULL;
    if (unread)
        lock_hand(l);
}

static void
lock_release_grant(struct grant *g, int unread)
{
    lock_forget(g->owner, g, unread);
}

/* Queue g for the lock, or give it at once when free and nobody waits. */
static void
lock_enqueue(aw_lock *l, struct grant *g)
{
    if (!l->locked && l->waiters.n == 0)
        lock_give(l, g);
    else
        aw__grantq_push(&l->waiters, g);
}

aw_lock *
aw_lock_new(aw_loop *loop)
{
    aw_lock *l;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    l = aw__calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->loop = loop;
    l->tasks = aw__loop_task_slot(loop);
    l->fast.base.loop = loop;
    l->fast.base.state = AW_FUTURE_DONE;
    l->fast.base.kind = K_GRANT;
    l->fast.cls = &lock_class;
    l->fast.owner = l;
    aw__loop_track(loop, 1);
    return l;
}

void
aw_lock_free(aw_lock *l)
{
    struct grant *g;

    if (l == NULL)
        return;
    while ((g = aw__grantq_pop(&l->waiters)) != NULL) {
        g->owner = NULL;
        if (g->base.state == AW_FUTURE_PENDING)
            aw__future_set_cancelled(&g->base, aw__strdup("lock freed"));
    }
    if (l->holder != NULL)
        l->holder->owner = NULL;
    aw__loop_track(l->loop, -1);
    if (l->fast_busy)
        l->dying = 1; /* its grant is still out: freed when it returns */
    else
        aw__free(l);
}

aw_future *
aw_lock_acquire(aw_lock *l)
{
    struct grant *g;

    if (l == NULL)
        return NULL;
    if (!l->locked && l->waiters.n == 0 && !l->fast_busy) {
        aw_future *f = &l->fast.base;

        /* Set up once by aw_lock_new; not counted on the loop: the lock
         * is, until the grant comes back. */
        f->refs = 1;
        f->flags = F_EMBEDDED;
        l->fast_busy = 1;
        l->locked = 1;
        l->owner = l->fast.data = lock_current(l);
        l->holder = &l->fast;
        return f;
    }
    g = aw__grant_new(l->loop, &lock_class, l);
    if (g == NULL)
        return nomem(l->loop);
    g->data = lock_current(l);
    lock_enqueue(l, g);
    return &g->base;
}

int
aw_lock_try_acquire(aw_lock *l)
{
    if (l == NULL)
        return -EINVAL;
    if (l->locked || l->waiters.n > 0)
        return AW_EBUSY;
    l->locked = 1;
    l->owner = lock_current(l);
    l->holder = NULL;
    return 0;
}

static int
lock_check_owner(aw_lock *l)
{
    if (!l->locked)
        return AW_EINVALSTATE;
    if (l->owner != NULL && l->owner != lock_current(l))
        return -EPERM;
    return 0;
}

int
aw_lock_release(aw_lock *l)
{
    int rc;

    if (l == NULL)
        return -EINVAL;
    if ((rc = lock_check_owner(l)) != 0)
        return rc;
    if (l->holder != NULL)
        l->holder = NULL; /* taken: its release will not give back */
    lock_hand(l);
    return 0;
}

int
aw_lock_locked(const aw_lock *l)
{
    return l != NULL && l->locked;
}

/* ---- Condition ------------------------------------------------------------------ */

struct aw_condition {
    aw_loop *loop;
    aw_lock *lock;
    int own_lock;
    struct grantq waiters;
};

/* A condition grant got the lock back. */
static int
cond_granted(struct grant *g)
{
    aw_condition *c = g->owner;
    aw_predicate_fn pred = (aw_predicate_fn)(uintptr_t)g->data2;

    g->base.xflags &= (uint8_t)~G_ACQUIRING;
    if (c == NULL || (g->base.xflags & G_CANCEL)) {
        /* Cancelled (or its condition freed): ends cancelled, holding the
         * lock, as asyncio's wait() does. */
        aw__future_set_cancelled(&g->base, NULL);
        return 1;
    }
    if (pred != NULL && !pred(g->base.v.ptr)) {
        /* Still false: let go of the lock and wait for the next notify. */
        c->lock->holder = NULL;
        c->lock->locked = 0;
        c->lock->owner = NULL;
        g->base.xflags |= G_NOTIFY;
        aw__grantq_push(&c->waiters, g);
        return 0;
    }
    if (pred != NULL)
        g->base.v.ptr = NULL;
    aw__grant_done(g);
    return 1;
}

static void
cond_release_grant(struct grant *g, int unread)
{
    aw_condition *c = g->owner;

    lock_forget(c->lock, g, unread);
}

static int
cond_cancel(struct grant *g, const char *msg)
{
    aw_condition *c = g->owner;

    (void)msg;
    g->base.xflags |= G_CANCEL;
    if (g->base.xflags & G_NOTIFY) {
        /* Re-acquire the lock before ending cancelled. */
        aw__grantq_remove(g);
        g->base.xflags = (uint8_t)((g->base.xflags & ~G_NOTIFY) | G_ACQUIRING);
        lock_enqueue(c->lock, g);
    }
    return 1;
}

aw_condition *
aw_condition_new(aw_loop *loop, aw_lock *lock)
{
    aw_condition *c;

    if (loop == NULL || aw_loop_is_closed(loop) ||
        (lock != NULL && lock->loop != loop))
        return NULL;
    c = aw__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->lock = lock;
    if (lock == NULL) {
        c->lock = aw_lock_new(loop);
        c->own_lock = 1;
        if (c->lock == NULL) {
            aw__free(c);
            return NULL;
        }
    }
    aw__loop_track(loop, 1);
    return c;
}

void
aw_condition_free(aw_condition *c)
{
    struct grant *g, *next;

    if (c == NULL)
        return;
    /* Waiters for a notify end cancelled (re-acquiring first); those
     * re-acquiring forget the condition. */
    while ((g = c->waiters.head) != NULL)
        cond_cancel(g, NULL);
    for (g = c->lock->waiters.head; g != NULL; g = next) {
        next = g->next;
        if (g->cls == &cond_class && g->owner == c) {
            g->owner = NULL;
            g->base.xflags |= G_CANCEL;
        }
    }
    if (c->lock->holder != NULL && c->lock->holder->cls == &cond_class &&
        c->lock->holder->owner == c)
        c->lock->holder->owner = NULL;
    if (c->own_lock)
        aw_lock_free(c->lock);
    aw__loop_track(c->loop, -1);
    aw__free(c);
}

aw_lock *
aw_condition_lock(aw_condition *c)
{
    return c != NULL ? c->lock : NULL;
}

static aw_future *
cond_wait(aw_condition *c, aw_predicate_fn pred, void *arg)
{
    struct grant *g;
    int rc;

    if (c == NULL)
        return NULL;
    if ((rc = lock_check_owner(c->lock)) != 0)
        return aw__future_failed_new(
            c->loop, -EPERM,
            aw__format("condition wait without holding its lock"));
    if (pred != NULL && pred(arg))
        return aw_future_resolved(c->loop, NULL, NULL); /* lock kept */
    g = aw__grant_new(c->loop, &cond_class, c);
    if (g == NULL)
        return nomem(c->loop);
    g->data = aw_current_task(c->loop);
    g->data2 = (void *)(uintptr_t)pred;
    g->base.v.ptr = arg; /* the predicate's argument while pending */
    g->base.xflags = G_NOTIFY;
    aw__grantq_push(&c->waiters, g);
    c->lock->holder = NULL;
    lock_hand(c->lock);
    return &g->base;
}

aw_future *
aw_condition_wait(aw_condition *c)
{
    return cond_wait(c, NULL, NULL);
}

aw_future *
aw_condition_wait_for(aw_condition *c, aw_predicate_fn pred, void *arg)
{
    if (c != NULL && pred == NULL)
        return aw__future_failed_new(c->loop, -EINVAL,
                                     aw__format("NULL predicate"));
    return cond_wait(c, pred, arg);
}

int
aw_condition_notify(aw_condition *c, int n)
{
    struct grant *g;
    int woken = 0;

    if (c == NULL || n < 0)
        return -EINVAL;
    if (c->lock->locked && c->lock->owner != NULL &&
        c->lock->owner != aw_current_task(c->loop))
        return -EPERM;
    while (woken < n && (g = aw__grantq_pop(&c->waiters)) != NULL) {
        g->base.xflags = (uint8_t)((g->base.xflags & ~G_NOTIFY) | G_ACQUIRING);
        lock_enqueue(c->lock, g);
        woken++;
    }
    return woken;
}

int
aw_condition_notify_all(aw_condition *c)
{
    if (c == NULL)
        return -EINVAL;
    return aw_condition_notify(c, (int)(c->waiters.n > 0x7fffffff
                                            ? 0x7fffffff
                                            : c->waiters.n));
}

/* ---- Event ------------------------------------------------------------------------ */

struct aw_event {
    aw_loop *loop;
    struct grantq waiters;
    int set;
};

static const struct grant_class plain_class = {NULL, NULL};


aw_event *
aw_event_new(aw_loop *loop)
{
    aw_event *e;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    e = aw__calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->loop = loop;
    aw__loop_track(loop, 1);
    return e;
}

void
aw_event_free(aw_event *e)
{
    if (e == NULL)
        return;
    aw__grantq_cancel_all(&e->waiters, "event freed");
    aw__loop_track(e->loop, -1);
    aw__free(e);
}

int
aw_event_set(aw_event *e)
{
    struct grant *g;

    if (e == NULL)
        return -EINVAL;
    e->set = 1;
    while ((g = aw__grantq_pop(&e->waiters)) != NULL)
        aw__grant_done(g);
    return 0;
}

int
aw_event_clear(aw_event *e)
{
    if (e == NULL)
        return -EINVAL;
    e->set = 0;
    return 0;
}

int
aw_event_is_set(const aw_event *e)
{
    return e != NULL && e->set;
}

aw_future *
aw_event_wait(aw_event *e)
{
    struct grant *g;

    if (e == NULL)
        return NULL;
    if (e->set)
        return aw_future_resolved(e->loop, NULL, NULL);
    g = aw__grant_new(e->loop, &plain_class, e);
    if (g == NULL)
        return nomem(e->loop);
    aw__grantq_push(&e->waiters, g);
    return &g->base;
}

/* ---- Semaphore ----------------------------------------------------------------------- */

struct aw_semaphore {
    aw_loop *loop;
    struct grantq waiters, granted;
    int value;
    int bound; /* bounded: the initial value; else -1 */
};

static void sem_release_grant(struct grant *g, int unread);
static const struct grant_class sem_class = {sem_release_grant, NULL};

/* A unit is free: to the first waiter, or counted. */
static void
sem_hand(aw_semaphore *s)
{
    struct grant *g = aw__grantq_pop(&s->waiters);

    if (g == NULL) {
        s->value++;
        return;
    }
    aw__grantq_push(&s->granted, g);
    aw__grant_done(g);
}

static void
sem_release_grant(struct grant *g, int unread)
{
    if (unread)
        sem_hand(g->owner);
}

static aw_semaphore *
sem_new(aw_loop *loop, int value, int bounded)
{
    aw_semaphore *s;

    if (loop == NULL || aw_loop_is_closed(loop) || value < 0)
        return NULL;
    s = aw__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->value = value;
    s->bound = bounded ? value : -1;
    aw__loop_track(loop, 1);
    return s;
}

aw_semaphore *
aw_semaphore_new(aw_loop *loop, int value)
{
    return sem_new(loop, value, 0);
}

aw_semaphore *
aw_semaphore_new_bounded(aw_loop *loop, int value)
{
    return sem_new(loop, value, 1);
}

void
aw_semaphore_free(aw_semaphore *s)
{
    struct grant *g;

    if (s == NULL)
        return;
    aw__grantq_cancel_all(&s->waiters, "semaphore freed");
    while ((g = aw__grantq_pop(&s->granted)) != NULL)
        g->owner = NULL;
    aw__loop_track(s->loop, -1);
    aw__free(s);
}

aw_future *
aw_semaphore_acquire(aw_semaphore *s)
{
    struct grant *g;

    if (s == NULL)
        return NULL;
    g = aw__grant_new(s->loop, &sem_class, s);
    if (g == NULL)
        return nomem(s->loop);
    if (s->value > 0 && s->waiters.n == 0) {
        s->value--;
        aw__grantq_push(&s->granted, g);
        g->base.state = AW_FUTURE_DONE;
    } else {
        aw__grantq_push(&s->waiters, g);
    }
    return &g->base;
}

int
aw_semaphore_try_acquire(aw_semaphore *s)
{
    if (s == NULL)
        return -EINVAL;
    if (s->value == 0 || s->waiters.n > 0)
        return AW_EBUSY;
    s->value--;
    return 0;
}

int
aw_semaphore_release(aw_semaphore *s)
{
    if (s == NULL)
        return -EINVAL;
    if (s->bound >= 0 && s->value >= s->bound)
        return AW_ELIMIT;
    sem_hand(s);
    return 0;
}

int
aw_semaphore_value(const aw_semaphore *s)
{
    return s != NULL ? s->value : -EINVAL;
}

/* ---- Barrier ---------------------------------------------------------------------------- */

struct aw_barrier {
    aw_loop *loop;
    struct grantq waiters;
    int parties;
    int broken;
};

static int
barrier_cancel(struct grant *g, const char *msg)
{
    (void)g;
    (void)msg;
    return 0; /* leaves the list: one fewer waiting */
}

static const struct grant_class barrier_class = {NULL, barrier_cancel};

aw_barrier *
aw_barrier_new(aw_loop *loop, int parties)
{
    aw_barrier *b;

    if (loop == NULL || aw_loop_is_closed(loop) || parties < 1)
        return NULL;
    b = aw__calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->loop = loop;
    b->parties = parties;
    aw__loop_track(loop, 1);
    return b;
}

void
aw_barrier_free(aw_barrier *b)
{
    if (b == NULL)
        return;
    aw__grantq_cancel_all(&b->waiters, "barrier freed");
    aw__loop_track(b->loop, -1);
    aw__free(b);
}

static void
barrier_fail_all(aw_barrier *b, const char *why)
{
    struct grant *g;

    while ((g = aw__grantq_pop(&b->waiters)) != NULL)
        aw__grant_fail(g, AW_EBROKEN, why);
}

aw_future *
aw_barrier_wait(aw_barrier *b)
{
    struct grant *g, *w;
    intptr_t i = 0;

    if (b == NULL)
        return NULL;
    if (b->broken)
        return aw__future_failed_new(b->loop, AW_EBROKEN,
                                     aw__format("barrier is broken"));
    g = aw__grant_new(b->loop, &barrier_class, b);
    if (g == NULL)
        return nomem(b->loop);
    g->base.v.i = (intptr_t)b->waiters.n; /* the arrival index */
    if ((int)b->waiters.n + 1 < b->parties) {
        aw__grantq_push(&b->waiters, g);
        return &g->base;
    }
    /* The last party: everyone goes, in arrival order. */
    while ((w = aw__grantq_pop(&b->waiters)) != NULL) {
        w->base.v.i = i++;
        aw__grant_done(w);
    }
    g->base.v.i = i;
    g->base.state = AW_FUTURE_DONE;
    return &g->base;
}

int
aw_barrier_reset(aw_barrier *b)
{
    if (b == NULL)
        return -EINVAL;
    barrier_fail_all(b, "barrier reset");
    b->broken = 0;
    return 0;
}

int
aw_barrier_abort(aw_barrier *b)
{
    if (b == NULL)
        return -EINVAL;
    b->broken = 1;
    barrier_fail_all(b, "barrier aborted");
    return 0;
}

int
aw_barrier_broken(const aw_barrier *b)
{
    return b != NULL && b->broken;
}

int
aw_barrier_n_waiting(const aw_barrier *b)
{
    return b != NULL ? (int)b->waiters.n : -EINVAL;
}

int
aw_barrier_parties(const aw_barrier *b)
{
    return b != NULL ? b->parties : -EINVAL;
}

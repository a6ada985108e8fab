/* SPDX-License-Identifier: MIT */
/* sync.c: Lock, Event, Condition, Semaphore, BoundedSemaphore, Barrier.
 *
 * Every waiter is a "grant": a future of kind K_GRANT on a FIFO list of its
 * primitive.  Releasing hands the lock (or a unit) straight to the first
 * waiter by settling its grant.  A grant settled done but released unread
 * gives back what it was granted (aw__grant_ops.release), so that a task
 * cancelled in the instant between the grant and its resumption loses
 * nothing for the others (CPython's lost wake-up bugs).
 *
 * Each grant holds a reference to its primitive (struct aw__prim), so a
 * primitive freed while its futures are still held stays in memory, marked
 * freed, until the last of them is released. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "await/sync.h"
#include "await/task.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "sync-internal.h"
#include "task-internal.h"

/* ---- primitives -------------------------------------------------------------------- */

void
aw__prim_init(struct aw__prim *p, aw_loop *loop,
              void (*gone)(struct aw__prim *p))
{
    p->loop = loop;
    p->refs = 1;
    p->freed = 0;
    p->gone = gone;
    aw__loop_track(loop, 1);
}

void
aw__prim_unref(struct aw__prim *p)
{
    if (--p->refs == 0)
        p->gone(p);
}

void
aw__prim_free(struct aw__prim *p)
{
    p->freed = 1;
    aw__prim_unref(p);
}

void
aw__prim_gone(struct aw__prim *p)
{
    aw__loop_track(p->loop, -1);
    aw__free(p);
}

/* A future failed with -EINVAL: the primitive was freed. */
static aw_future *
freed_future(struct aw__prim *p)
{
    return aw__future_failed_new(p->loop, -EINVAL,
                                 aw__format("used after it was freed"));
}

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
aw__grant_new(const struct grant_class *cls, struct aw__prim *owner)
{
    struct grant *g =
        (struct grant *)aw__future_alloc(owner->loop, &aw__grant_ops);

    if (g == NULL)
        return NULL;
    g->cls = cls;
    g->owner = owner;
    aw__prim_ref(owner);
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

    if (g->cls->cancel != NULL && g->cls->cancel(g, msg))
        return;
    aw__grantq_remove(g);
    aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
}

static void
grant_release(aw_future *f)
{
    struct grant *g = (struct grant *)f;

    aw__grantq_remove(g);
    if (g->cls->release != NULL)
        g->cls->release(g, f->state == AW_FUTURE_DONE &&
                               !(f->flags & F_RETRIEVED));
    if (!(f->flags & F_EMBEDDED)) /* the lock's own: grant_reclaim */
        aw__prim_unref(g->owner);
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

    while ((g = aw__grantq_pop(q)) != NULL)
        if (g->base.state == AW_FUTURE_PENDING)
            aw__future_set_cancelled(&g->base, aw__strdup(msg));
}

static aw_future *
nomem(aw_loop *loop)
{
    return aw__future_nomem(loop);
}

/* ---- Lock ------------------------------------------------------------------------- */

struct aw_lock {
    struct aw__prim p;
    struct aw__task_slot *tasks; /* the loop's: its running task */
    struct grantq waiters;
    struct grant *holder; /* the grant the lock is held for, if any */
    aw_future *owner;     /* the task holding it, if a task does */
    int locked;
    int fast_busy; /* `fast` is handed out (and holds a reference) */
    int held;      /* `hold` is on the owner's list (task-internal.h) */
    int tried;     /* the owner took it with aw_lock_try_acquire */
    /* The owner ending with the lock reports it and lets go. */
    struct aw__task_hold hold;
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
    aw__prim_unref(&l->p);
}

static void lock_hand(aw_lock *l);
static int cond_granted(struct grant *g);

/* Record that the owner, a task, holds the lock, so that its end lets
 * the lock go (lock_owner_ended).  A task that has ended already (it
 * asked for the lock and ended without awaiting it) has no end to come:
 * nothing to record. */
static void
lock_hold(aw_lock *l, int tried)
{
    if (aw_future_done(l->owner))
        return;
    /* Out of memory: nothing is reported at the task's end. */
    l->held = aw__task_hold((aw_task *)l->owner, &l->hold) == 0;
    l->tried = tried;
}

/* The lock is owner's now (NULL: callback code's, or nobody's). */
static inline void
lock_own(aw_lock *l, aw_future *owner, int tried)
{
    if (AW__UNLIKELY(l->held)) {
        aw__task_unhold((aw_task *)l->owner, &l->hold);
        l->held = 0;
    }
    l->owner = owner;
    if (owner != NULL)
        lock_hold(l, tried);
}

/* The task that owns the lock ended with it: say so, and let it go as
 * aw_lock_release() would.  A grant it never read (cancelled as it was
 * granted; the callback that resumed it still holds the grant) was never
 * taken: it goes on unreported, as the grant's release would do. */
static void
lock_owner_ended(struct aw__task_hold *hold, aw_task *task)
{
    aw_lock *l = AW__CONTAINER_OF(hold, aw_lock, hold);
    const struct aw__site *site = hold->site;
    char where[256];

    l->held = 0;
    if (l->holder == NULL || (l->holder->base.flags & F_RETRIEVED)) {
        int n = snprintf(where, sizeof(where), "%s",
                         l->tried ? "with aw_lock_try_acquire" : "at");

        if (site != NULL && site->file != NULL)
            snprintf(where + n, sizeof(where) - (size_t)n, "%s %s:%d",
                     l->tried ? " before its await at" : "", site->file,
                     site->line);
        else if (!l->tried)
            snprintf(where + n, sizeof(where) - (size_t)n,
                     " an unknown await");
        aw__loop_report(l->p.loop, AW_EINVALSTATE, NULL, NULL,
                        "task %s ended holding a lock it took %s; released",
                        aw_task_name(task), where);
    }
    l->holder = NULL;
    lock_hand(l);
}

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
    lock_own(l, g->data, 0);
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
    lock_own(l, NULL, 0);
    l->holder = NULL;
}

/* The grant the lock is held for goes: unread, the lock goes on to the
 * next waiter; read, its task keeps the lock. */
static void
lock_forget(aw_lock *l, struct grant *g, int unread)
{
    if (l->holder != g || l->p.freed)
        return;
    l->holder = NULL;
    if (unread)
        lock_hand(l);
}

static void
lock_release_grant(struct grant *g, int unread)
{
    lock_forget((aw_lock *)g->owner, g, unread);
}

/* Queue g for the lock, or give it at once when free and nobody waits.
 * A freed lock (under a condition) gives nothing: g ends cancelled. */
static void
lock_enqueue(aw_lock *l, struct grant *g)
{
    if (l->p.freed) {
        g->base.xflags &= (uint8_t)~G_ACQUIRING;
        aw__future_set_cancelled(&g->base, aw__strdup("lock freed"));
    } else if (!l->locked && l->waiters.n == 0)
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
    aw__prim_init(&l->p, loop, aw__prim_gone);
    l->tasks = aw__loop_task_slot(loop);
    l->fast.base.loop = loop;
    l->fast.base.state = AW_FUTURE_DONE;
    l->fast.base.kind = K_GRANT;
    l->fast.cls = &lock_class;
    l->fast.owner = &l->p;
    l->hold.on_end = lock_owner_ended;
    return l;
}

void
aw_lock_free(aw_lock *l)
{
    struct grant *g;

    if (l == NULL || l->p.freed)
        return;
    /* Waiters (conditions' re-acquiring ones too) end cancelled; the
     * grants out keep the memory until they are released. */
    while ((g = aw__grantq_pop(&l->waiters)) != NULL) {
        g->base.xflags &= (uint8_t)~G_ACQUIRING;
        aw__future_set_cancelled(&g->base, aw__strdup("lock freed"));
    }
    l->holder = NULL;
    lock_own(l, NULL, 0); /* the memory may go before the owner ends */
    aw__prim_free(&l->p);
}

aw_future *
aw_lock_acquire(aw_lock *l)
{
    struct grant *g;

    if (l == NULL)
        return NULL;
    if (!l->locked && l->waiters.n == 0 && !l->fast_busy && !l->p.freed) {
        aw_future *f = &l->fast.base;

        /* Set up once by aw_lock_new; not counted on the loop: the lock
         * is, until the grant comes back. */
        f->refs = 1;
        f->flags = F_EMBEDDED;
        l->fast_busy = 1;
        l->p.refs++;
        l->locked = 1;
        l->fast.data = lock_current(l);
        lock_own(l, l->fast.data, 0);
        l->holder = &l->fast;
        return f;
    }
    if (l->p.freed)
        return freed_future(&l->p);
    g = aw__grant_new(&lock_class, &l->p);
    if (g == NULL)
        return nomem(l->p.loop);
    g->data = lock_current(l);
    lock_enqueue(l, g);
    return &g->base;
}

int
aw_lock_try_acquire(aw_lock *l)
{
    if (l == NULL || l->p.freed)
        return -EINVAL;
    if (l->locked || l->waiters.n > 0)
        return AW_EBUSY;
    l->locked = 1;
    lock_own(l, lock_current(l), 1);
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

    if (l == NULL || l->p.freed)
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
    struct aw__prim p;
    aw_lock *lock; /* referenced */
    int own_lock;
    struct grantq waiters;
};

/* A condition grant got the lock back. */
static int
cond_granted(struct grant *g)
{
    aw_condition *c = (aw_condition *)g->owner;
    aw_predicate_fn pred = (aw_predicate_fn)(uintptr_t)g->data2;

    g->base.xflags &= (uint8_t)~G_ACQUIRING;
    if (c->p.freed || (g->base.xflags & G_CANCEL)) {
        /* Cancelled (or its condition freed): ends cancelled, holding the
         * lock, as asyncio's wait() does. */
        aw__future_set_cancelled(&g->base, NULL);
        return 1;
    }
    if (pred != NULL && !pred(g->base.v.ptr)) {
        /* Still false: let go of the lock and wait for the next notify. */
        c->lock->holder = NULL;
        c->lock->locked = 0;
        lock_own(c->lock, NULL, 0);
        g->base.xflags |= G_NOTIFY;
        aw__grantq_push(&c->waiters, g);
        return 0;
    }
    if (pred != NULL)
        g->base.v.ptr = NULL;
    aw__grant_done(g);
    return 1;
}

/* Released holding the lock unread (done, or cancelled after it
 * re-acquired): the lock goes on, as for a lock grant. */
static void
cond_release_grant(struct grant *g, int unread)
{
    aw_condition *c = (aw_condition *)g->owner;

    (void)unread;
    lock_forget(c->lock, g, !(g->base.flags & F_RETRIEVED));
}

static int
cond_cancel(struct grant *g, const char *msg)
{
    aw_condition *c = (aw_condition *)g->owner;

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

static void
cond_gone(struct aw__prim *p)
{
    aw_lock *lock = ((aw_condition *)p)->lock;

    aw__prim_gone(p);
    aw__prim_unref(&lock->p);
}

aw_condition *
aw_condition_new(aw_loop *loop, aw_lock *lock)
{
    aw_condition *c;

    if (loop == NULL || aw_loop_is_closed(loop) ||
        (lock != NULL && (lock->p.loop != loop || lock->p.freed)))
        return NULL;
    c = aw__calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->lock = lock;
    if (lock == NULL) {
        c->lock = aw_lock_new(loop);
        c->own_lock = 1;
        if (c->lock == NULL) {
            aw__free(c);
            return NULL;
        }
    }
    aw__prim_ref(&c->lock->p); /* its grants use the lock */
    aw__prim_init(&c->p, loop, cond_gone);
    return c;
}

void
aw_condition_free(aw_condition *c)
{
    struct grant *g, *next;

    if (c == NULL || c->p.freed)
        return;
    /* Waiters for a notify end cancelled (re-acquiring first, as a
     * cancelled wait does); those re-acquiring will end so too. */
    while ((g = c->waiters.head) != NULL)
        cond_cancel(g, NULL);
    for (g = c->lock->waiters.head; g != NULL; g = next) {
        next = g->next;
        if (g->cls == &cond_class && g->owner == &c->p)
            g->base.xflags |= G_CANCEL;
    }
    c->p.freed = 1;
    if (c->own_lock)
        aw_lock_free(c->lock);
    aw__prim_free(&c->p);
}

aw_lock *
aw_condition_lock(aw_condition *c)
{
    return c != NULL && !c->p.freed ? c->lock : NULL;
}

static aw_future *
cond_wait(aw_condition *c, aw_predicate_fn pred, void *arg)
{
    struct grant *g;
    int rc;

    if (c == NULL)
        return NULL;
    if (c->p.freed || c->lock->p.freed)
        return freed_future(&c->p);
    if ((rc = lock_check_owner(c->lock)) != 0)
        return aw__future_failed_new(
            c->p.loop, -EPERM,
            aw__format("condition wait without holding its lock"));
    if (pred != NULL && pred(arg))
        return aw_future_resolved(c->p.loop, NULL, NULL); /* lock kept */
    g = aw__grant_new(&cond_class, &c->p);
    if (g == NULL)
        return nomem(c->p.loop);
    g->data = aw_current_task(c->p.loop);
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
        return aw__future_failed_new(c->p.loop, -EINVAL,
                                     aw__format("NULL predicate"));
    return cond_wait(c, pred, arg);
}

int
aw_condition_notify(aw_condition *c, int n)
{
    struct grant *g;
    int woken = 0;

    if (c == NULL || n < 0 || c->p.freed)
        return -EINVAL;
    /* asyncio raises unless the lock is held; so do we, whoever calls. */
    if (lock_check_owner(c->lock) != 0)
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
    return aw_condition_notify(c, c->waiters.n > INT_MAX ? INT_MAX
                                                        : (int)c->waiters.n);
}

/* ---- Event ------------------------------------------------------------------------ */

struct aw_event {
    struct aw__prim p;
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
    aw__prim_init(&e->p, loop, aw__prim_gone);
    return e;
}

void
aw_event_free(aw_event *e)
{
    if (e == NULL || e->p.freed)
        return;
    aw__grantq_cancel_all(&e->waiters, "event freed");
    aw__prim_free(&e->p);
}

int
aw_event_set(aw_event *e)
{
    struct grant *g;

    if (e == NULL || e->p.freed)
        return -EINVAL;
    e->set = 1;
    while ((g = aw__grantq_pop(&e->waiters)) != NULL)
        aw__grant_done(g);
    return 0;
}

int
aw_event_clear(aw_event *e)
{
    if (e == NULL || e->p.freed)
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
    if (e->p.freed)
        return freed_future(&e->p);
    if (e->set)
        return aw_future_resolved(e->p.loop, NULL, NULL);
    g = aw__grant_new(&plain_class, &e->p);
    if (g == NULL)
        return nomem(e->p.loop);
    aw__grantq_push(&e->waiters, g);
    return &g->base;
}

/* ---- Semaphore ----------------------------------------------------------------------- */

struct aw_semaphore {
    struct aw__prim p;
    struct grantq waiters;
    int value;
    int bound; /* bounded: the initial value; else -1 */
};

static void sem_release_grant(struct grant *g, int unread);
static const struct grant_class sem_class = {sem_release_grant, NULL};

/* A unit is free: to the first waiter, or counted; -EOVERFLOW (nothing
 * changed) when the count is at INT_MAX. */
static int
sem_hand(aw_semaphore *s)
{
    struct grant *g = aw__grantq_pop(&s->waiters);

    if (g == NULL) {
        if (s->value == INT_MAX)
            return -EOVERFLOW;
        s->value++;
        return 0;
    }
    aw__grant_done(g);
    return 0;
}

static void
sem_release_grant(struct grant *g, int unread)
{
    aw_semaphore *s = (aw_semaphore *)g->owner;

    /* At INT_MAX the unit given back is one too many to count: dropped. */
    if (unread && !s->p.freed)
        (void)sem_hand(s);
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
    aw__prim_init(&s->p, loop, aw__prim_gone);
    s->value = value;
    s->bound = bounded ? value : -1;
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
    if (s == NULL || s->p.freed)
        return;
    aw__grantq_cancel_all(&s->waiters, "semaphore freed");
    aw__prim_free(&s->p);
}

aw_future *
aw_semaphore_acquire(aw_semaphore *s)
{
    struct grant *g;

    if (s == NULL)
        return NULL;
    if (s->p.freed)
        return freed_future(&s->p);
    g = aw__grant_new(&sem_class, &s->p);
    if (g == NULL)
        return nomem(s->p.loop);
    if (s->value > 0 && s->waiters.n == 0) {
        s->value--;
        g->base.state = AW_FUTURE_DONE;
    } else {
        aw__grantq_push(&s->waiters, g);
    }
    return &g->base;
}

int
aw_semaphore_try_acquire(aw_semaphore *s)
{
    if (s == NULL || s->p.freed)
        return -EINVAL;
    if (s->value == 0 || s->waiters.n > 0)
        return AW_EBUSY;
    s->value--;
    return 0;
}

int
aw_semaphore_release(aw_semaphore *s)
{
    if (s == NULL || s->p.freed)
        return -EINVAL;
    if (s->bound >= 0 && s->value >= s->bound)
        return AW_ELIMIT;
    return sem_hand(s);
}

int
aw_semaphore_value(const aw_semaphore *s)
{
    return s != NULL && !s->p.freed ? s->value : -EINVAL;
}

/* ---- Barrier ---------------------------------------------------------------------------- */

/*
 * asyncio's states, kept by three lists.  Filling: the arrivals wait on
 * `waiters`.  The last party releases the round, itself included: each
 * party stays on `draining` until it has left, that is read its outcome
 * (or released its future): until then an abort or a reset still breaks
 * it, as asyncio breaks a party that has not yet woken.  Draining: new
 * arrivals wait on `blocked`, uncounted, and enter, in order, once the
 * last released party has left.  Reading calls no hook: the barrier
 * looks at each of its operations and at each release of one of its
 * futures; the parties leave in about the order they were released (a
 * task reads as it resumes), so looking stops at the first still there.
 */
struct aw_barrier {
    struct aw__prim p;
    struct grantq waiters;  /* filling: counted for this round */
    struct grantq draining; /* released, not left yet */
    struct grantq blocked;  /* arrived while draining */
    int parties;
    int broken;
};

static int
barrier_cancel(struct grant *g, const char *msg)
{
    (void)g;
    (void)msg;
    return 0; /* leaves its list: one fewer waiting */
}

static void barrier_release_grant(struct grant *g, int unread);
static const struct grant_class barrier_class = {barrier_release_grant,
                                                 barrier_cancel};

/* Drop the released parties that have left; 1 when all have. */
static int
barrier_gone(aw_barrier *b)
{
    struct grant *g;

    while ((g = b->draining.head) != NULL && (g->base.flags & F_RETRIEVED))
        aw__grantq_remove(g);
    return b->draining.head == NULL;
}

/* g is counted for the round; the last party releases it, in arrival
 * order, with the indices 0 .. parties-1.  g, when the last, is done at
 * once: settled if it waited (blocked), else just arrived. */
static void
barrier_enter(aw_barrier *b, struct grant *g, int waited)
{
    struct grant *w;
    intptr_t i = 0;

    if ((int)b->waiters.n + 1 < b->parties) {
        aw__grantq_push(&b->waiters, g);
        return;
    }
    while ((w = aw__grantq_pop(&b->waiters)) != NULL) {
        w->base.v.i = i++;
        aw__grantq_push(&b->draining, w);
        aw__grant_done(w);
    }
    g->base.v.i = i;
    aw__grantq_push(&b->draining, g);
    if (waited)
        aw__grant_done(g);
    else
        g->base.state = AW_FUTURE_DONE;
}

/* Once the released parties have left, the blocked arrivals enter, until
 * one of them fills a round again. */
static void
barrier_settle(aw_barrier *b)
{
    struct grant *g;

    if (!barrier_gone(b))
        return;
    while (b->draining.head == NULL &&
           (g = aw__grantq_pop(&b->blocked)) != NULL)
        barrier_enter(b, g, 1);
}

/* A released party that has not left gets AW_EBROKEN in place of its
 * index (its outcome was not read: nobody saw the index). */
static void
barrier_break_draining(aw_barrier *b, const char *why)
{
    struct grant *g;

    while ((g = aw__grantq_pop(&b->draining)) != NULL) {
        if (g->base.flags & F_RETRIEVED)
            continue; /* it left */
        g->base.state = AW_FUTURE_FAILED;
        g->base.code = AW_EBROKEN;
        g->base.v.msg = aw__strdup(why);
    }
}

static void
barrier_fail_all(struct grantq *q, const char *why)
{
    struct grant *g;

    while ((g = aw__grantq_pop(q)) != NULL)
        aw__grant_fail(g, AW_EBROKEN, why);
}

/* One of its futures goes (it left its list): maybe the last to leave. */
static void
barrier_release_grant(struct grant *g, int unread)
{
    aw_barrier *b = (aw_barrier *)g->owner;

    (void)unread;
    if (!b->p.freed)
        barrier_settle(b);
}

aw_barrier *
aw_barrier_new(aw_loop *loop, int parties)
{
    aw_barrier *b;

    if (loop == NULL || aw_loop_is_closed(loop) || parties < 1)
        return NULL;
    b = aw__calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    aw__prim_init(&b->p, loop, aw__prim_gone);
    b->parties = parties;
    return b;
}

void
aw_barrier_free(aw_barrier *b)
{
    if (b == NULL || b->p.freed)
        return;
    aw__grantq_cancel_all(&b->waiters, "barrier freed");
    aw__grantq_cancel_all(&b->blocked, "barrier freed");
    while (aw__grantq_pop(&b->draining) != NULL)
        ; /* their outcomes stand */
    aw__prim_free(&b->p);
}

aw_future *
aw_barrier_wait(aw_barrier *b)
{
    struct grant *g;

    if (b == NULL)
        return NULL;
    if (b->p.freed)
        return freed_future(&b->p);
    if (b->broken)
        return aw__future_failed_new(b->p.loop, AW_EBROKEN,
                                     aw__format("barrier is broken"));
    g = aw__grant_new(&barrier_class, &b->p);
    if (g == NULL)
        return nomem(b->p.loop);
    barrier_settle(b);
    if (b->draining.head != NULL)
        aw__grantq_push(&b->blocked, g);
    else
        barrier_enter(b, g, 0);
    return &g->base;
}

int
aw_barrier_reset(aw_barrier *b)
{
    if (b == NULL || b->p.freed)
        return -EINVAL;
    /* The parties counted break; the blocked ones were not counted yet:
     * they enter the new round (asyncio's reset does not break them). */
    barrier_break_draining(b, "barrier reset");
    barrier_fail_all(&b->waiters, "barrier reset");
    b->broken = 0;
    barrier_settle(b);
    return 0;
}

int
aw_barrier_abort(aw_barrier *b)
{
    if (b == NULL || b->p.freed)
        return -EINVAL;
    b->broken = 1;
    barrier_break_draining(b, "barrier aborted");
    barrier_fail_all(&b->waiters, "barrier aborted");
    barrier_fail_all(&b->blocked, "barrier aborted");
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
    return b != NULL && !b->p.freed ? (int)b->waiters.n : -EINVAL;
}

int
aw_barrier_parties(const aw_barrier *b)
{
    return b != NULL && !b->p.freed ? b->parties : -EINVAL;
}

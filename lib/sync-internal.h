/* SPDX-License-Identifier: MIT */
/* sync-internal.h: grants, the waiters of sync.c's primitives and of
 * queue.c's queues.  Never installed. */
#ifndef AWAIT_SYNC_INTERNAL_H
#define AWAIT_SYNC_INTERNAL_H

#include "future-internal.h"
#include "kinds-internal.h"

struct grant;

/*
 * What every primitive (lock, condition, event, semaphore, barrier, queue)
 * starts with.  Its memory is reference counted: the user's handle holds
 * one reference until the *_free call, every grant of the primitive holds
 * one until it is released (a condition holds one on its lock).  Freeing
 * marks it freed (no new operation is accepted, nothing is handed on) and
 * drops the handle's reference; the memory goes with the last one.  So a
 * future granted or refused by a freed primitive can be released at any
 * time after.
 */
struct aw__prim {
    aw_loop *loop;
    unsigned refs;
    int freed;
    void (*gone)(struct aw__prim *p); /* the last reference went */
};

/* One reference, counted as work on loop until it is gone. */
void aw__prim_init(struct aw__prim *p, aw_loop *loop,
                   void (*gone)(struct aw__prim *p));
static inline void
aw__prim_ref(struct aw__prim *p)
{
    p->refs++;
}
/* Drop a reference; with the last, p->gone(p) frees it. */
void aw__prim_unref(struct aw__prim *p);
/* The user's free: mark freed, drop the handle's reference. */
void aw__prim_free(struct aw__prim *p);
/* gone() for a primitive with nothing more to release than itself. */
void aw__prim_gone(struct aw__prim *p);

struct grant_class {
    /* The grant is being freed; unread: it was granted and nobody read
     * that: give back what it got.  Called whether or not the primitive
     * was freed (it checks owner->freed itself). */
    void (*release)(struct grant *g, int unread);
    /* Cancel a pending grant; returns 1 when it handled it (and settles
     * later), 0 to be cancelled at once.  Also called once freed. */
    int (*cancel)(struct grant *g, const char *msg);
};

struct grantq {
    struct grant *head, *tail;
    size_t n;
};

struct grant {
    aw_future base;
    const struct grant_class *cls;
    struct aw__prim *owner; /* the primitive; holds a reference to it */
    struct grantq *q;
    struct grant *prev, *next;
    void *data; /* the waiting task (lock, condition); a put's item */
    void *data2;
};

/* A condition grant's states, in base.xflags. */
enum {
    G_NOTIFY = 1 << 0,    /* on the condition's list, waiting for notify */
    G_ACQUIRING = 1 << 1, /* on the lock's list, re-acquiring */
    G_CANCEL = 1 << 2     /* cancelled: ends so once it has the lock */
};

/* FIFO lists of grants. */
void aw__grantq_push(struct grantq *q, struct grant *g);
void aw__grantq_remove(struct grant *g); /* from whatever list it is on */
struct grant *aw__grantq_pop(struct grantq *q);
/* Cancel every waiter of a primitive being freed. */
void aw__grantq_cancel_all(struct grantq *q, const char *msg);

/* A pending grant of cls for the primitive owner (which it references);
 * NULL out of memory. */
struct grant *aw__grant_new(const struct grant_class *cls,
                            struct aw__prim *owner);
/* Settle done (the result set beforehand in base.v / base.o). */
void aw__grant_done(struct grant *g);
void aw__grant_fail(struct grant *g, int code, const char *msg);

#endif /* AWAIT_SYNC_INTERNAL_H */

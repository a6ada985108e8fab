/* SPDX-License-Identifier: MIT */
/* sync-internal.h: grants, the waiters of sync.c's primitives and of
 * queue.c's queues.  Never installed. */
#ifndef AWAIT_SYNC_INTERNAL_H
#define AWAIT_SYNC_INTERNAL_H

#include "future-internal.h"
#include "kinds-internal.h"

struct grant;

struct grant_class {
    /* The grant is being freed (its primitive still exists); unread: it
     * was granted and nobody read that: give back what it got. */
    void (*release)(struct grant *g, int unread);
    /* Cancel a pending grant; returns 1 when it handled it (and settles
     * later), 0 to be cancelled at once. */
    int (*cancel)(struct grant *g, const char *msg);
};

struct grantq {
    struct grant *head, *tail;
    size_t n;
};

struct grant {
    aw_future base;
    const struct grant_class *cls;
    void *owner; /* the primitive; NULL once it was freed */
    struct grantq *q;
    struct grant *prev, *next;
    void *data; /* the waiting task (lock, condition) */
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
/* Cancel every waiter of a primitive being freed; they forget it. */
void aw__grantq_cancel_all(struct grantq *q, const char *msg);

/* A pending grant of cls for the primitive owner; NULL out of memory. */
struct grant *aw__grant_new(aw_loop *loop, const struct grant_class *cls,
                            void *owner);
/* Settle done (the result set beforehand in base.v / base.o). */
void aw__grant_done(struct grant *g);
void aw__grant_fail(struct grant *g, int code, const char *msg);

#endif /* AWAIT_SYNC_INTERNAL_H */

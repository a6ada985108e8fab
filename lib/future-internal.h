/* SPDX-License-Identifier: MIT */
/* future-internal.h: the future's layout and the helpers the modules
 * built on futures (tasks, sleep) share with future.c.  Never installed. */
#ifndef AWAIT_FUTURE_INTERNAL_H
#define AWAIT_FUTURE_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>

#include "await/future.h"

/* The kinds of future this layer defines.  The modules above define
 * kinds of their own, numbered from K__FUTURE_KINDS by the registry
 * (kinds-internal.h); this layer reaches them only through their
 * operations table, never by name. */
enum kind {
    K_PLAIN,
    K_THEN,
    K_CATCH,
    K_FINALLY,
    K_SHIELD,
    K_GATHER,
    K_ANY,
    K_RACE,
    K_WAIT,
    K_WAIT_FOR,
    K_AS_COMPLETED,
    K__FUTURE_KINDS
};

enum flag {
    F_RETRIEVED = 1 << 0, /* the outcome was read, or handed on */
    F_LINKED = 1 << 1,    /* the result is shared: o.link owns it */
    F_IMMORTAL = 1 << 2,  /* the shared -ENOMEM future */
    F_BATCH = 1 << 3,     /* settled; callbacks scheduled, not all run */
    F_TAKEN = 1 << 4,     /* the result was taken out */
    F_DEFERRED = 1 << 5,  /* settled, batch waits for settle_now (OOM) */
    F_EMBEDDED = 1 << 6   /* part of its container, always done with
                           * nothing to destroy: ops->reclaim takes it */
};

enum xflag {
    X_FOLLOWING = 1 << 0,     /* a chain following what its step returned */
    X_RETURN_ERRORS = 1 << 1, /* gather: collect every outcome */
    X_TIMED_OUT = 1 << 2,     /* wait_for: the timeout cancelled the inner */
    X_CANCEL_REQ = 1 << 3,    /* wait_for: cancelled, waiting for the inner */
    X_DECIDED = 1 << 4        /* wait: met; its sets are made next pass */
};

struct cb {
    struct cb *next;
    struct cb **pprev; /* while pending: the pointer to this node */
    aw_done_fn fn;     /* NULL once detached from a scheduled batch */
    void *arg;
};

struct aw_future {
    aw_loop *loop;
    struct cb *callbacks; /* pending: newest first; settled: the batch */
    union {
        void *ptr;
        intptr_t i;
        char *msg; /* failed or cancelled; pending wait_for: cancel msg */
    } v;
    union {
        aw_destroy_fn destroy; /* done: destroys v.ptr */
        aw_future *link;       /* done and F_LINKED: owns v.ptr */
        void *p;               /* pending: kind's own (a sleep's timer) */
    } o;
    int code;
    uint32_t refs;
    uint8_t state;
    uint8_t flags;
    uint8_t kind;
    uint8_t xflags;
    uint32_t aux; /* kind's own (a task's flags and cancel count) */
};

/* What a kind of future does, registered by the module that owns it in
 * the table aw__future_kinds (kinds.c), indexed by its kind. */
struct aw__future_ops {
    const char *name; /* for reports: "gather", "task", ... */
    uint8_t kind;     /* its index in aw__future_kinds */
    uint8_t flags;    /* AW__OPS_* */
    size_t size;      /* of the struct that starts with the future */
    /* Cancel the pending f (not decided). */
    void (*cancel)(aw_future *f, const char *msg);
    /* 1 when the pending f's outcome is fixed, only its delivery still
     * to come: cancelling it then does nothing.  NULL: never. */
    int (*decided)(const aw_future *f);
    /* Release what f holds, before its outcome is released.  NULL:
     * nothing. */
    void (*release)(aw_future *f);
    /* An F_EMBEDDED f is done with (neither pooled nor counted). */
    void (*reclaim)(aw_future *f);
    /* The pending f has its first callback: somebody waits for it now.
     * NULL: nothing to do. */
    void (*watched)(aw_future *f);
};

enum {
    AW__OPS_NORESERVE = 1 << 0, /* settled from a callback of its own (a
                                 * timer): no handle reserved for its
                                 * callbacks */
    AW__OPS_LEAF = 1 << 1       /* freeing it releases no other future */
};

/* Every kind, by its number (kinds.c); at most AW__KINDS_MAX. */
#define AW__KINDS_MAX 16
extern const struct aw__future_ops *const aw__future_kinds[AW__KINDS_MAX];

static inline const struct aw__future_ops *
aw__future_ops(const aw_future *f)
{
    return aw__future_kinds[f->kind];
}

/* This layer's own kinds (future.c), for the registry. */
extern const struct aw__future_ops aw__plain_ops, aw__then_ops,
    aw__catch_ops, aw__finally_ops, aw__shield_ops, aw__gather_ops,
    aw__any_ops, aw__race_ops, aw__wait_ops, aw__wait_for_ops,
    aw__as_completed_ops;

/* A pending future of the kind ops describes, one reference, counted on
 * the loop. */
aw_future *aw__future_alloc(aw_loop *loop, const struct aw__future_ops *ops);
/* The loop's shared future failed with -ENOMEM. */
aw_future *aw__future_nomem(aw_loop *loop);
/* A future failed with code (AW_ECANCELLED: cancelled) and msg (owned). */
aw_future *aw__future_failed_new(aw_loop *loop, int code, char *msg);

/* Register fn on a pending future; -ENOMEM.  Detach removes every
 * (fn, arg) not run yet, pending or in a scheduled batch; returns how
 * many. */
int aw__future_attach(aw_future *f, aw_done_fn fn, void *arg);
int aw__future_detach(aw_future *f, aw_done_fn fn, void *arg);
/* The same for one registration, in constant time: attach stores the node
 * in *nodep; the callback must set *nodep to NULL when it runs, and
 * detach_node does too (a NULL node is a no-op). */
int aw__future_attach_node(aw_future *f, aw_done_fn fn, void *arg,
                           struct cb **nodep);
void aw__future_detach_node(aw_future *f, struct cb **nodep);

/* The state and outcome are set: schedule the callbacks. */
void aw__future_settle(aw_future *f);
/* The same, running the callbacks now: only from a loop callback that
 * is itself the event settling f (a timer firing); also runs a batch
 * deferred by aw__future_settle() when it could not schedule it (an
 * AW__OPS_NORESERVE future, out of memory). */
void aw__future_settle_now(aw_future *f);
void aw__future_set_failed(aw_future *f, int code, char *msg);
void aw__future_set_cancelled(aw_future *f, char *msg);
/* Settle the pending f like the settled src; takes over src. */
void aw__future_adopt(aw_future *f, aw_future *src);

/* printf into memory from the library's allocator; NULL for a NULL fmt
 * or out of memory. */
char *aw__vformat(const char *fmt, va_list ap);
char *aw__format(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif /* AWAIT_FUTURE_INTERNAL_H */

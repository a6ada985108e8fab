/* SPDX-License-Identifier: MIT */
/* loop-internal.h: what the modules built on the loop share with it.
 * Never installed. */
#ifndef AWAIT_LOOP_INTERNAL_H
#define AWAIT_LOOP_INTERNAL_H

#include <stdarg.h>

#include "await/loop.h"

/* Report through the loop's exception handler, message printf-style. */
void aw__loop_report(aw_loop *loop, int code, aw_callback_fn fn, void *arg,
                     const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;


/* Per-loop pooled memory for small objects (size classes of 16 bytes up
 * to 256; larger sizes go to the allocator).  Free with the same size. */
void *aw__loop_alloc(aw_loop *loop, size_t size);
void aw__loop_free(aw_loop *loop, void *ptr, size_t size);

/* Promise a handle for a later aw__loop_call_soon_reserved(), which then
 * cannot fail: settling a future must always be able to schedule its
 * callbacks.  aw__loop_reserve returns 0 or -ENOMEM. */
int aw__loop_reserve(aw_loop *loop);
void aw__loop_unreserve(aw_loop *loop);
void aw__loop_call_soon_reserved(aw_loop *loop, aw_callback_fn fn, void *arg);

/* ---- each module's per-loop state ------------------------------------
 * The modules built on the loop keep their per-loop state in a typed slot
 * of their own inside the loop, zeroed when the loop is created.  A module
 * that must hear of the loop's events sets `hooks` in its slot. */

struct aw__loop_hooks {
    /* Close found work outstanding: report each of the module's live
     * objects through aw__loop_report(), so that the report names them. */
    void (*census)(aw_loop *loop);
    /* The loop closes: release the module's per-loop resources. */
    void (*release)(aw_loop *loop);
    /* Debug mode found the callback that just ran slow: describe what of
     * the module's ran in it into buf; 0 when nothing did. */
    int (*describe_slow)(aw_loop *loop, char *buf, size_t size);
};

/* future.c */
struct aw__future_slot {
    struct aw_future *reap; /* futures whose last reference went: freed */
    int reaping;      /* a free is under way: queue on reap, do not recurse */
    void *nomem[8];   /* storage of the shared -ENOMEM future */
    size_t live[16];  /* live futures by kind (future-internal.h) */
    const struct aw__loop_hooks *hooks;
};

/* task.c */
struct aw__task;
struct aw__task_slot {
    struct aw__task *tasks;   /* pending, newest first */
    struct aw__task *current; /* running now */
    size_t ntasks;
    unsigned seq;             /* tasks created: Task-1, Task-2, ... */
    int timing;          /* debug mode: time each step */
    double slowest_time; /* the longest step in the callback running */
    char slowest[192];   /* and what it was; "" for none yet */
    const struct aw__loop_hooks *hooks;
};

/* transport.c */
struct evdns_base;
struct aw_transport;
struct aw_datagram_transport;
struct aw__net_slot {
    struct evdns_base *dns;          /* the resolver, made on first use */
    int resolver;                    /* AW_RESOLVER_*: which one names use */
    struct aw_transport *transports; /* open, for the census */
    struct aw_datagram_transport *datagrams; /* udp.c's, the same */
    const struct aw__loop_hooks *hooks;
};

/* executor.c */
struct aw__exec_sink;
struct aw__exec_slot {
    /* Finished jobs coming back, the default executor, cross-loop calls:
     * made on first use, freed when the loop closes. */
    struct aw__exec_sink *sink;
    const struct aw__loop_hooks *hooks;
};

/* The start of every loop: the objects alive and the slots, reached
 * without a call on the hot paths. */
struct aw__loop_head {
    size_t live_objects; /* futures, tasks, ... of the modules above */
    struct aw__future_slot future;
    struct aw__task_slot task;
    struct aw__net_slot net;
    struct aw__exec_slot exec;
};

static inline struct aw__loop_head *
aw__loop_head(aw_loop *loop)
{
    return (struct aw__loop_head *)(void *)loop;
}

static inline struct aw__future_slot *
aw__loop_future_slot(aw_loop *loop)
{
    return &aw__loop_head(loop)->future;
}

static inline struct aw__task_slot *
aw__loop_task_slot(aw_loop *loop)
{
    return &aw__loop_head(loop)->task;
}

static inline struct aw__net_slot *
aw__loop_net_slot(aw_loop *loop)
{
    return &aw__loop_head(loop)->net;
}

static inline struct aw__exec_slot *
aw__loop_exec_slot(aw_loop *loop)
{
    return &aw__loop_head(loop)->exec;
}

/* Count objects (futures, tasks, ...) alive on the loop: a loop does not
 * close while any is alive.  delta is +1 or -1. */
static inline void
aw__loop_track(aw_loop *loop, long delta)
{
    aw__loop_head(loop)->live_objects += (size_t)delta;
}

/* 0 when the loop's backend can watch fd, else -EMFILE: libevent's select
 * backend cannot watch an fd >= FD_SETSIZE (its fd_set would overflow; with
 * glibc's fortified FD_SET the process aborts).  For every module that
 * gives libevent an fd (events, bufferevents, listeners). */
int aw__loop_fd_watchable(aw_loop *loop, int fd);

#endif /* AWAIT_LOOP_INTERNAL_H */

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

/* Count objects (futures, tasks, ...) alive on the loop: a loop does not
 * close while any is alive.  delta is +1 or -1. */
void aw__loop_track(aw_loop *loop, long delta);

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

/* What the future module keeps per loop; the loop only zeroes it. */
struct aw__future_slots {
    void *reap;  /* futures whose last reference went, to be freed */
    int reaping; /* a free is under way: queue on reap, do not recurse */
    void *nomem[8]; /* storage of the shared -ENOMEM future */
    void *tasks;    /* pending tasks (task.c) */
    void *current;  /* the task running now */
    size_t ntasks;
    void (*report_pending)(aw_loop *loop); /* close found work pending */
    void *dns;                              /* the resolver (transport.c) */
    void (*release_dns)(aw_loop *loop);     /* called when the loop closes */
};
struct aw__future_slots *aw__loop_future_slots(aw_loop *loop);

/* 0 when the loop's backend can watch fd, else -EMFILE: libevent's select
 * backend cannot watch an fd >= FD_SETSIZE (its fd_set would overflow; with
 * glibc's fortified FD_SET the process aborts).  For every module that
 * gives libevent an fd (events, bufferevents, listeners). */
int aw__loop_fd_watchable(aw_loop *loop, int fd);

#endif /* AWAIT_LOOP_INTERNAL_H */

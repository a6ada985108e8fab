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

#endif /* AWAIT_LOOP_INTERNAL_H */

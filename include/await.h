/* SPDX-License-Identifier: MIT */
/* await.h: the umbrella header; includes every libawait module. */
#ifndef AWAIT_H
#define AWAIT_H

/*
 * The ABI.  libawait.so exports the aw_ functions declared in these
 * headers, each with the symbol version of its SONAME (LIBAWAIT_0 for
 * libawait.so.0), and nothing else.  Two parts of it are easy to miss:
 * - The aw_task__* functions (<await/task.h>) exist only for the task
 *   macros (AW_BEGIN, AW_AWAIT, ...), which expand into the application's
 *   code and call them: they are not for direct use, but a program built
 *   with the macros depends on them, so they are ABI like any other
 *   function, and so are struct aw__site and the AW__* values the macros
 *   compile in.
 * - Where libevent's types cross the interface (aw_loop_new_with_base()
 *   and aw_loop_get_base() take and give a struct event_base), libevent's
 *   own ABI, named by its SONAME (libevent_core-2.1.so.7), is part of
 *   libawait's: an application that uses them must be built against the
 *   libevent libawait was built with.
 */

#include "await/core.h"
#include "await/loop.h"
#include "await/future.h"
#include "await/task.h"
#include "await/sync.h"
#include "await/queue.h"
#include "await/transport.h"
#include "await/stream.h"
#include "await/executor.h"
#include "await/process.h"
#include "await/udp.h"
#include "await/tls.h"

#endif /* AWAIT_H */

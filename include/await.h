/* SPDX-License-Identifier: MIT */
/* await.h: the umbrella header; includes every libawait module. */
#ifndef AWAIT_H
#define AWAIT_H

#include "await/core.h"
#include "await/loop.h"
#include "await/future.h"
#include "await/task.h"
#include "await/sync.h"
#include "await/queue.h"
#include "await/transport.h"
#include "await/stream.h"

#endif /* AWAIT_H */

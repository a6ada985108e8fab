/* SPDX-License-Identifier: MIT */
/* kinds-internal.h: the kinds of future the modules above the future
 * layer define, numbered after its own.  Never installed.  A module that
 * adds a kind adds its number here and its operations table to kinds.c;
 * the future layer dispatches through that table and names none of them. */
#ifndef AWAIT_KINDS_INTERNAL_H
#define AWAIT_KINDS_INTERNAL_H

#include "future-internal.h"

enum {
    K_TASK = K__FUTURE_KINDS, /* task.c: a task */
    K_SLEEP,                  /* task.c: aw_sleep */
    K_GROUP,                  /* task.c: a task group's wait */
    K_GRANT,                  /* sync.c, queue.c: a waiter's grant */
    K__KINDS
};

extern const struct aw__future_ops aw__task_ops, aw__sleep_ops,
    aw__group_ops, aw__grant_ops;

#endif /* AWAIT_KINDS_INTERNAL_H */

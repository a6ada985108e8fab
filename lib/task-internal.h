/* SPDX-License-Identifier: MIT */
/* task-internal.h: what the modules built on tasks (sync.c) share with
 * task.c.  Never installed. */
#ifndef AWAIT_TASK_INTERNAL_H
#define AWAIT_TASK_INTERNAL_H

#include "await/task.h"

/* Something a task holds (a lock) and must let go of before it ends.  A
 * task that ends still holding it has on_end called, once its frame was
 * released: report it (the task's name, the await that took it) and let
 * go. */
struct aw__task_hold {
    struct aw__task_hold *next;
    const struct aw__site *site; /* the await that took it; NULL: unknown */
    void (*on_end)(struct aw__task_hold *hold, aw_task *task);
};

/* The task holds it from now: if the task is running, the await it
 * reaches next is the one that took it.  0, or -ENOMEM (then nothing is
 * reported at the task's end).  aw__task_unhold: it was let go (accepts a
 * hold the task does not have). */
int aw__task_hold(aw_task *task, struct aw__task_hold *hold);
void aw__task_unhold(aw_task *task, struct aw__task_hold *hold);

#endif /* AWAIT_TASK_INTERNAL_H */

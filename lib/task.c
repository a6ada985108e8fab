/* SPDX-License-Identifier: MIT */
/* task.c: tasks (stackless coroutines over futures), sleep, task groups,
 * timeout scopes and the pending-task dump.
 *
 * A task is a future of kind K_TASK, 112 bytes.  Its coroutine is a switch
 * over the lines of its awaits (task.h); `site` is where it waits, or the
 * sentinels below.  While it runs, the outcome it will end with is staged
 * in the future's own fields (v, o, code), flagged in `aux`, and becomes
 * its outcome when it ends.  The loop holds every pending task (one
 * reference, dropped when it ends) on a list that all_tasks, the dump and
 * loop close walk.
 *
 * Cancellations a task's timeout scopes and task groups request are its
 * "own": counted apart from those of others, so that the await they
 * interrupt returns AW_ETIMEDOUT or the group's error, while a cancel from
 * outside still returns AW_ECANCELLED (asyncio's cancelling/uncancel). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "await/task.h"
#include "core-internal.h"
#include "future-internal.h"
#include "kinds-internal.h"
#include "loop-internal.h"
#include "task-internal.h"

enum tflag {
    T_STARTED = 1 << 0,
    T_RUNNING = 1 << 1,
    T_MUST_CANCEL = 1 << 2,   /* cancel at the next await */
    T_IN_FINALLY = 1 << 3,
    T_STAGED_RESULT = 1 << 4, /* v/o hold the result to end with */
    T_STAGED_LINK = 1 << 5,   /* ... shared: o.link owns it */
    T_STAGED_ERROR = 1 << 6,  /* code/v.msg hold the error to end with */
    T_EXPECT_RESUME = 1 << 7, /* suspended at an await, not resumed yet */
    T_WAITING = 1 << 8,       /* this step suspended */
    T_OUTSIDE = 1 << 9,       /* a cancel from outside, not delivered */
    T_OWN_REQUEST = 1 << 10   /* task_cancel called by own_cancel */
};

struct task_extra {
    char *name;
    void *user;
    char *cancel_msg;
    struct aw_timeout *scopes; /* open, newest first */
    unsigned own_pending;      /* scopes' and groups' not delivered */
    unsigned deliveries;       /* cancellations delivered at awaits */
    int group_code;            /* a group cancelled us with this error */
    struct aw__task_hold *holds;     /* held (locks), newest first */
    struct aw__task_hold *site_for;  /* gets the site of the next await */
};

struct aw__task {
    aw_future base;
    aw_task_fn fn;
    void *frame;
    aw_destroy_fn frame_free;
    aw_future *awaiting; /* awaited, or last awaited (its result is lent) */
    const struct aw__site *site;
    struct task_extra *extra;
    struct aw__task *prev, *next; /* the loop's pending tasks */
};

struct aw_timeout {
    struct aw__task *task;
    aw_handle *timer;
    double when;
    struct aw_timeout *next;
    int expired;
    unsigned delivered; /* the delivery that told the task (0: none) */
};

struct aw_task_group {
    aw_loop *loop;
    aw_future *parent;
    aw_future **children; /* running or failed; NULL: released */
    size_t n, cap;
    size_t holes; /* NULL entries in children */
    size_t spawned;
    size_t running;
    aw_future *waiter;
    int error;
    char *error_msg;
    size_t nfailed;
    char *cancel_msg; /* the wait's, for when the children have ended */
    int aborted;      /* a child failed */
    int cancelled;    /* cancelled as a whole */
    int parent_cancelled; /* we cancelled the parent: withdraw it once */
};

/* The wait future: cancelled, it cancels the children and settles once
 * they have ended (asyncio's TaskGroup waits for them too), so that the
 * task awaiting it never goes on while its children still run. */
struct group_wait {
    aw_future base;
    aw_task_group *group; /* NULL once the group is freed */
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct aw__task) <= 112, "a task grew past 112 bytes");
#endif

/* Settled awaits a task goes through at once before it yields a pass
 * (counted in base.xflags, which tasks do not otherwise use). */
#define SETTLED_AWAIT_BUDGET 64

static const struct aw__site site_finally = {NULL, AW__RESUME_FINALLY};
static const struct aw__site site_end = {NULL, -2};

#define T(fut) ((struct aw__task *)(void *)(fut))

static inline unsigned
tflags(const struct aw__task *t)
{
    return t->base.aux & 0xffffu;
}

static inline void
tset(struct aw__task *t, unsigned f)
{
    t->base.aux |= f;
}

static inline void
tclear(struct aw__task *t, unsigned f)
{
    t->base.aux &= ~(uint32_t)f;
}

static inline unsigned
cancel_count(const struct aw__task *t)
{
    return t->base.aux >> 16;
}

static inline void
cancel_count_add(struct aw__task *t, int delta)
{
    unsigned n = cancel_count(t);

    if (delta > 0 && n < 0xffffu)
        n++;
    else if (delta < 0 && n > 0)
        n--;
    t->base.aux = (t->base.aux & 0xffffu) | ((uint32_t)n << 16);
}

static int task_wakeup(aw_future *f, void *arg);

static struct task_extra *
extra(struct aw__task *t)
{
    if (t->extra == NULL)
        t->extra = aw__calloc(1, sizeof(*t->extra));
    return t->extra;
}

static struct aw__task *
as_task(const aw_future *f)
{
    return f != NULL && f->kind == K_TASK ? T(f) : NULL;
}

/* ---- the outcome staged while running ------------------------------------------ */

static void
stage_clear(struct aw__task *t)
{
    unsigned fl = tflags(t);

    if (fl & T_STAGED_LINK)
        aw_future_unref(t->base.o.link);
    else if ((fl & T_STAGED_RESULT) && t->base.o.destroy != NULL)
        t->base.o.destroy(t->base.v.ptr);
    else if (fl & T_STAGED_ERROR)
        aw__free(t->base.v.msg);
    tclear(t, T_STAGED_RESULT | T_STAGED_LINK | T_STAGED_ERROR);
    t->base.v.ptr = NULL;
    t->base.o.destroy = NULL;
}

static void
stage_error(struct aw__task *t, int code, char *msg)
{
    stage_clear(t);
    t->base.o.p = (void *)(intptr_t)code; /* code holds the number */
    t->base.v.msg = msg;
    tset(t, T_STAGED_ERROR);
}

/* Where the coroutine goes after an error or a return: the cleanup, or,
 * from the cleanup, the end. */
static void
to_cleanup(struct aw__task *t)
{
    t->site = (tflags(t) & T_IN_FINALLY) ? &site_end : &site_finally;
}

/* ---- the loop's list of pending tasks ---------------------------------------- */

static const char *
where(struct aw__task *t, char *buf, size_t size)
{
    unsigned fl = tflags(t);

    if (!(fl & T_STARTED))
        snprintf(buf, size, "not started");
    else if (fl & T_RUNNING)
        snprintf(buf, size, "running");
    else if (t->site != NULL && t->site->file != NULL)
        snprintf(buf, size, "awaiting at %s:%d", t->site->file,
                 t->site->line);
    else
        snprintf(buf, size, "scheduled");
    return buf;
}

static void
report_pending(aw_loop *loop)
{
    struct aw__task *t = aw__loop_task_slot(loop)->tasks;
    char buf[256];

    for (; t != NULL; t = t->next)
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "task %s is still pending at loop close (%s)",
                        aw_task_name(&t->base), where(t, buf, sizeof(buf)));
}

/* Debug mode: the longest task step of the callback that was slow. */
static int
describe_slow(aw_loop *loop, char *buf, size_t size)
{
    struct aw__task_slot *s = aw__loop_task_slot(loop);

    if (s->slowest[0] == '\0')
        return 0;
    snprintf(buf, size, "%s", s->slowest);
    return 1;
}

static const struct aw__loop_hooks task_hooks = {
    .census = report_pending, .describe_slow = describe_slow};

static void
list_add(struct aw__task *t)
{
    struct aw__task_slot *s = aw__loop_task_slot(t->base.loop);

    t->prev = NULL;
    t->next = s->tasks;
    if (t->next != NULL)
        t->next->prev = t;
    s->tasks = t;
    s->ntasks++;
    s->hooks = &task_hooks;
}

static void
list_remove(struct aw__task *t)
{
    struct aw__task_slot *s = aw__loop_task_slot(t->base.loop);

    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        s->tasks = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    s->ntasks--;
}

/* ---- running ---------------------------------------------------------------------- */

static void timeout_free_all(struct aw__task *t);

/* The task ends holding what it should have let go of: each holder
 * reports it and lets go. */
static void
release_holds(struct aw__task *t)
{
    struct aw__task_hold *h;

    if (t->extra == NULL)
        return;
    t->extra->site_for = NULL;
    while ((h = t->extra->holds) != NULL) {
        t->extra->holds = h->next;
        h->next = NULL;
        h->on_end(h, &t->base);
    }
}

int
aw__task_hold(aw_task *task, struct aw__task_hold *hold)
{
    struct aw__task *t = T(task);
    struct task_extra *x = extra(t);

    if (x == NULL)
        return -ENOMEM;
    hold->next = x->holds;
    x->holds = hold;
    if (tflags(t) & T_RUNNING) {
        hold->site = NULL;
        x->site_for = hold;
    } else {
        hold->site = t->site; /* granted while it waited there */
    }
    return 0;
}

void
aw__task_unhold(aw_task *task, struct aw__task_hold *hold)
{
    struct task_extra *x = T(task)->extra;
    struct aw__task_hold **pp;

    if (x == NULL)
        return;
    if (x->site_for == hold)
        x->site_for = NULL;
    for (pp = &x->holds; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == hold) {
            *pp = hold->next;
            hold->next = NULL;
            return;
        }
    }
}

static void
task_finish(struct aw__task *t)
{
    aw_future *f = &t->base;
    unsigned fl;

    if (t->awaiting != NULL) {
        if (t->awaiting->state == AW_FUTURE_PENDING)
            aw__future_detach(t->awaiting, task_wakeup, t);
        aw_future_unref(t->awaiting);
        t->awaiting = NULL;
    }
    if (t->frame_free != NULL)
        t->frame_free(t->frame);
    t->frame = NULL;
    t->frame_free = NULL;
    timeout_free_all(t);
    release_holds(t);
    fl = tflags(t);
    if ((fl & T_MUST_CANCEL) && !(fl & T_STAGED_ERROR)) {
        /* Cancelled after its last await and before it returned: it
         * ends cancelled, its result dropped (asyncio's
         * test_cancel_at_end). */
        const char *m = t->extra != NULL ? t->extra->cancel_msg : NULL;

        stage_error(t, AW_ECANCELLED, m != NULL ? aw__strdup(m) : NULL);
        fl = tflags(t);
    }
    if (fl & T_STAGED_ERROR) {
        /* The code takes the place of the task's number, which moves to
         * o, unused by a failed future. */
        int code = (int)(intptr_t)f->o.p;

        f->o.p = (void *)(uintptr_t)(unsigned)f->code;
        f->code = code;
        f->state = f->code == AW_ECANCELLED ? AW_FUTURE_CANCELLED
                                            : AW_FUTURE_FAILED;
    } else {
        if (fl & T_STAGED_LINK)
            f->flags |= F_LINKED;
        else if (!(fl & T_STAGED_RESULT))
            f->v.ptr = NULL, f->o.destroy = NULL;
        f->state = AW_FUTURE_DONE;
    }
    tclear(t, T_STAGED_RESULT | T_STAGED_LINK | T_STAGED_ERROR | T_RUNNING |
                  T_MUST_CANCEL);
    t->site = NULL;
    list_remove(t);
    aw__future_settle(f);
    aw_future_unref(f); /* the loop's reference */
}

static void
misuse(struct aw__task *t, const char *what)
{
    char buf[256];

    aw__loop_report(t->base.loop, -EINVAL, NULL, NULL,
                    "task %s: %s (%s): an await inside a switch, or a "
                    "return of its own?",
                    aw_task_name(&t->base), what,
                    where(t, buf, sizeof(buf)));
}

static double
step_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Debug mode: keep the longest step of the callback running, named, for
 * the loop's slow-callback report. */
static void
step_timed(struct aw__task_slot *s, struct aw__task *t, int rc, double dt)
{
    char buf[160];

    if (dt < s->slowest_time)
        return;
    s->slowest_time = dt;
    snprintf(s->slowest, sizeof(s->slowest), "task %s (its step %s)",
             aw_task_name(&t->base),
             rc == AW__TASK_SUSPENDED ? where(t, buf, sizeof(buf))
                                      : "ended the task");
}

static void
task_step(struct aw__task *t)
{
    struct aw__task_slot *slots = aw__loop_task_slot(t->base.loop);
    struct aw__task *saved = slots->current;
    double t0 = 0;
    int rc;

    if (t->base.state != AW_FUTURE_PENDING)
        return;
    slots->current = t;
    tset(t, T_RUNNING);
    tclear(t, T_WAITING);
    if (!(tflags(t) & T_STARTED)) {
        tset(t, T_STARTED);
        if (tflags(t) & T_MUST_CANCEL) {
            /* Cancelled before its first step: it never runs. */
            const char *m = t->extra ? t->extra->cancel_msg : NULL;

            stage_error(t, AW_ECANCELLED, m ? aw__strdup(m) : NULL);
            slots->current = saved;
            task_finish(t);
            return;
        }
    }
    if (AW__UNLIKELY(slots->timing))
        t0 = step_clock();
    rc = t->fn(&t->base, t->frame);
    tclear(t, T_RUNNING);
    if (AW__UNLIKELY(slots->timing))
        step_timed(slots, t, rc, step_clock() - t0);
    slots->current = saved;
    if (rc == AW__TASK_SUSPENDED && !(tflags(t) & T_WAITING)) {
        misuse(t, "suspended without awaiting");
        stage_error(t, -EINVAL, aw__format("suspended without awaiting"));
        rc = AW__TASK_ENDED;
    }
    if (rc != AW__TASK_SUSPENDED)
        task_finish(t);
}

static int
task_wakeup(aw_future *f, void *arg)
{
    (void)f;
    task_step(arg);
    return 0;
}

static int
task_step_cb(aw_loop *loop, void *arg)
{
    struct aw__task *t = arg;

    (void)loop;
    task_step(t);
    aw_future_unref(&t->base);
    return 0;
}

/* ---- the macros' entry points ------------------------------------------------------ */

int
aw_task__resume_point(aw_task *task)
{
    const struct aw__site *site = T(task)->site;

    return site != NULL ? site->line : AW__RESUME_START;
}

int
aw_task__await(aw_task *task, aw_future *f, const struct aw__site *site)
{
    struct aw__task *t = T(task);
    aw_loop *loop = task->loop;

    if (tflags(t) & T_EXPECT_RESUME) {
        misuse(t, "reached an await without resuming the last one");
        aw_future_unref(f); /* taken over, whatever it is */
        f = aw__future_failed_new(loop, -EINVAL,
                                  aw__format("await misused at %s:%d",
                                             site->file, site->line));
        tclear(t, T_EXPECT_RESUME);
    }
    if (t->awaiting != NULL) {
        /* Resumed from it: its callback to us ran already. */
        if (t->awaiting->state == AW_FUTURE_PENDING)
            aw__future_detach(t->awaiting, task_wakeup, t);
        aw_future_unref(t->awaiting);
    }
    if (f == NULL || f == task || f->loop != loop) {
        const char *why = f == NULL ? "a NULL future"
                          : f == task ? "the task itself"
                                      : "a future of another loop";

        /* The await took the caller's reference, even to the task
         * itself (the loop holds another while it runs). */
        aw_future_unref(f);
        f = aw__future_failed_new(loop, -EINVAL,
                                  aw__format("awaited %s at %s:%d", why,
                                             site->file, site->line));
    }
    t->awaiting = f;
    t->site = site;
    if (AW__UNLIKELY(t->extra != NULL && t->extra->site_for != NULL)) {
        t->extra->site_for->site = site;
        t->extra->site_for = NULL;
    }
    if ((tflags(t) & T_MUST_CANCEL) && f->state == AW_FUTURE_PENDING &&
        aw_future_cancel(f, t->extra ? t->extra->cancel_msg : NULL) == 0)
        tclear(t, T_MUST_CANCEL); /* it comes back through f */
    if (f->state == AW_FUTURE_PENDING) {
        t->base.xflags = 0; /* a real wait: the budget starts again */
        if (AW__UNLIKELY(aw__future_attach(f, task_wakeup, t) != 0)) {
            aw_future_unref(f);
            t->awaiting = aw__future_nomem(loop);
            return 0; /* resume at once, with the error */
        }
    } else if (t->base.xflags < SETTLED_AWAIT_BUDGET) {
        /* Settled already: go on at once, as asyncio does. */
        t->base.xflags++;
        return 0;
    } else {
        /* A budget asyncio has not: after that many settled awaits in a
         * row the task yields one pass, so that a task whose awaits are
         * always satisfied (reads served from a buffer) cannot starve
         * the loop. */
        t->base.xflags = 0;
        t->base.refs++;
        if (AW__UNLIKELY(aw_loop_call_soon(loop, task_step_cb, t, NULL) !=
                         0)) {
            t->base.refs--;
            return 0;
        }
    }
    tset(t, T_EXPECT_RESUME | T_WAITING);
    return 1;
}

/* The outcome of the await the task resumes at, with the cancellations
 * of its own scopes and groups told apart from others'. */
static int
resume_outcome(struct aw__task *t, const char **msgp)
{
    aw_future *f = t->awaiting;
    struct task_extra *x = t->extra;
    int rc;

    tclear(t, T_EXPECT_RESUME);
    if (tflags(t) & T_MUST_CANCEL) {
        /* The outcome of f is left unread: a grant in it (a lock, an
         * item) goes back when f is released. */
        tclear(t, T_MUST_CANCEL);
        rc = AW_ECANCELLED;
        *msgp = x != NULL ? x->cancel_msg : NULL;
    } else {
        rc = aw_future_error(f);
        *msgp = aw_future_message(f);
    }
    if (rc != AW_ECANCELLED)
        return rc;
    if (x == NULL) {
        tclear(t, T_OUTSIDE); /* delivered */
        return rc;
    }
    /* One delivery tells every request made so far; a cancellation from
     * outside wins over the task's own (asyncio's timeout and TaskGroup
     * see that the count is above theirs and let it through). */
    if (x->own_pending > 0) {
        struct aw_timeout *s;
        int timed_out = 0;

        x->deliveries++;
        x->own_pending = 0;
        for (s = x->scopes; s != NULL; s = s->next) {
            if (s->expired && s->delivered == 0) {
                s->delivered = x->deliveries;
                timed_out = 1;
            }
        }
        if (tflags(t) & T_OUTSIDE) {
            tclear(t, T_OUTSIDE);
        } else if (timed_out) {
            rc = AW_ETIMEDOUT;
            *msgp = NULL;
        } else if (x->group_code != 0) {
            rc = x->group_code;
            *msgp = NULL;
        }
        x->group_code = 0;
    } else {
        tclear(t, T_OUTSIDE);
    }
    return rc;
}

/* AW_AWAIT resumes: 0 with the awaited future settled done, else 1 with
 * its error staged and the coroutine sent to its cleanup. */
static int
resume_or_raise(struct aw__task *t)
{
    const char *msg;
    int rc = resume_outcome(t, &msg);

    if (rc == 0)
        return 0;
    stage_error(t, rc, msg != NULL ? aw__strdup(msg) : NULL);
    to_cleanup(t);
    return 1;
}

int
aw_task__resumed(aw_task *task, void **out)
{
    struct aw__task *t = T(task);

    if (resume_or_raise(t))
        return 1;
    if (out != NULL)
        *out = t->awaiting->v.ptr;
    return 0;
}

int
aw_task__resumed_int(aw_task *task, intptr_t *out)
{
    struct aw__task *t = T(task);

    if (resume_or_raise(t))
        return 1;
    if (out != NULL)
        *out = t->awaiting->v.i;
    return 0;
}

int
aw_task__taken(aw_task *task, void **out)
{
    struct aw__task *t = T(task);
    const struct aw__site *site = t->site;
    void *v = NULL;
    int rc;

    if (resume_or_raise(t))
        return 1;
    if (out == NULL)
        return 0; /* nowhere to put it: it stays with the future */
    rc = aw_future_take_result(t->awaiting, &v, NULL);
    if (rc != 0) {
        stage_error(t, rc,
                    aw__format("the result awaited at %s:%d is shared: it "
                               "cannot be taken",
                               site != NULL && site->file != NULL
                                   ? site->file
                                   : "?",
                               site != NULL ? site->line : 0));
        to_cleanup(t);
        return 1;
    }
    *out = v;
    return 0;
}

int
aw_task__try_resumed(aw_task *task, void **out)
{
    struct aw__task *t = T(task);
    const char *msg;
    int rc = resume_outcome(t, &msg);

    if (rc == 0 && out != NULL)
        *out = t->awaiting->v.ptr;
    return rc;
}

aw_future *
aw_task__awaited(aw_task *task)
{
    return T(task)->awaiting;
}

void
aw_task__return(aw_task *task, void *value, aw_destroy_fn destroy)
{
    struct aw__task *t = T(task);

    stage_clear(t);
    t->base.v.ptr = value;
    t->base.o.destroy = destroy;
    tset(t, T_STAGED_RESULT);
    to_cleanup(t);
}

void
aw_task__return_int(aw_task *task, intptr_t value)
{
    struct aw__task *t = T(task);

    stage_clear(t);
    t->base.v.i = value;
    tset(t, T_STAGED_RESULT);
    to_cleanup(t);
}

/* End with the result of the settled src, shared. */
static void
return_shared(struct aw__task *t, aw_future *src)
{
    aw_future *owner = (src->flags & F_LINKED) ? src->o.link : src;

    stage_clear(t);
    t->base.v = src->v;
    t->base.o.link = aw_future_ref(owner);
    tset(t, T_STAGED_RESULT | T_STAGED_LINK);
    to_cleanup(t);
}

void
aw_task__raise(aw_task *task, int code, const char *fmt, ...)
{
    struct aw__task *t = T(task);
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = aw__vformat(fmt, ap);
    va_end(ap);
    if (code >= 0) {
        aw__free(msg);
        code = -EINVAL;
        msg = aw__format("AW_RAISE with a code that is not an error");
    }
    stage_error(t, code, msg);
    to_cleanup(t);
}

void
aw_task__enter_finally(aw_task *task)
{
    tset(T(task), T_IN_FINALLY);
}

int
aw_task__end(aw_task *task)
{
    struct aw__task *t = T(task);

    if (tflags(t) & T_EXPECT_RESUME) {
        misuse(t, "ended without resuming its last await");
        tclear(t, T_EXPECT_RESUME);
        stage_error(t, -EINVAL, aw__format("await misused"));
    }
    return AW__TASK_ENDED;
}

/* ---- the task as a future ----------------------------------------------------------- */

static void
own_cancel(struct aw__task *t, int group_code, const char *msg)
{
    struct task_extra *x = extra(t);

    if (x == NULL || t->base.state != AW_FUTURE_PENDING)
        return;
    x->own_pending++;
    if (group_code != 0 && x->group_code == 0)
        x->group_code = group_code;
    tset(t, T_OWN_REQUEST);
    aw_future_cancel(&t->base, msg);
    tclear(t, T_OWN_REQUEST);
}

static void
task_cancel(aw_future *f, const char *msg)
{
    struct aw__task *t = T(f);
    struct task_extra *x;

    cancel_count_add(t, 1);
    if (!(tflags(t) & T_OWN_REQUEST))
        tset(t, T_OUTSIDE);
    if (!(tflags(t) & T_RUNNING) && (tflags(t) & T_EXPECT_RESUME) &&
        t->awaiting != NULL && t->awaiting->state == AW_FUTURE_PENDING &&
        aw_future_cancel(t->awaiting, msg) == 0)
        return; /* the cancellation comes back through the awaited */
    tset(t, T_MUST_CANCEL);
    x = extra(t);
    if (x != NULL) {
        aw__free(x->cancel_msg);
        x->cancel_msg = msg != NULL ? aw__strdup(msg) : NULL;
    }
}

static void
task_release(aw_future *f)
{
    struct aw__task *t = T(f);

    if (f->state == AW_FUTURE_PENDING) {
        /* Only when creation failed: it never ran. */
        stage_clear(t);
        if (t->frame_free != NULL)
            t->frame_free(t->frame);
    }
    if (t->extra != NULL) {
        aw__free(t->extra->name);
        aw__free(t->extra->cancel_msg);
        aw__free(t->extra);
        t->extra = NULL;
    }
}

const struct aw__future_ops aw__task_ops = {
    .name = "task", .kind = K_TASK, .size = sizeof(struct aw__task),
    .cancel = task_cancel, .release = task_release};

aw_task *
aw_task_new(aw_loop *loop, aw_task_fn fn, void *frame,
            aw_destroy_fn frame_free)
{
    struct aw__task *t;

    if (loop == NULL || fn == NULL || aw_loop_is_closed(loop)) {
        if (frame_free != NULL)
            frame_free(frame);
        return NULL;
    }
    t = (struct aw__task *)aw__future_alloc(loop, &aw__task_ops);
    if (t == NULL) {
        if (frame_free != NULL)
            frame_free(frame);
        return aw__future_nomem(loop);
    }
    t->fn = fn;
    t->frame = frame;
    t->frame_free = frame_free;
    t->awaiting = NULL;
    t->site = NULL;
    t->extra = NULL;
    t->prev = t->next = NULL;
    /* Named Task-1, Task-2, ... per loop (asyncio), formatted only when
     * asked: until then the number lives in the unused code field. */
    t->base.code = (int)(++aw__loop_task_slot(loop)->seq &
                         (unsigned)INT32_MAX);
    t->base.refs = 3; /* the caller's, the loop's, the first step's */
    if (aw_loop_call_soon(loop, task_step_cb, t, NULL) != 0) {
        t->base.refs = 1;
        aw_future_unref(&t->base); /* releases the frame */
        return aw__future_nomem(loop);
    }
    list_add(t);
    return &t->base;
}

int
aw_is_task(const aw_future *future)
{
    return as_task(future) != NULL;
}

aw_loop *
aw_task_loop(const aw_task *task)
{
    return aw_future_loop(task);
}

void *
aw_task_frame(const aw_task *task)
{
    struct aw__task *t = as_task(task);

    return t != NULL ? t->frame : NULL;
}

int
aw_task_set_name(aw_task *task, const char *name)
{
    struct aw__task *t = as_task(task);
    struct task_extra *x;
    char *copy;

    if (t == NULL || name == NULL)
        return -EINVAL;
    if ((x = extra(t)) == NULL || (copy = aw__strdup(name)) == NULL)
        return -ENOMEM;
    aw__free(x->name);
    x->name = copy;
    return 0;
}

const char *
aw_task_name(aw_task *task)
{
    struct aw__task *t = as_task(task);
    struct task_extra *x;

    if (t == NULL)
        return NULL;
    if (t->extra != NULL && t->extra->name != NULL)
        return t->extra->name;
    x = extra(t);
    if (x == NULL)
        return "Task";
    /* A task's code field holds its number until it fails; then o. */
    x->name = aw__format("Task-%u",
                         t->base.state == AW_FUTURE_PENDING ||
                                 t->base.state == AW_FUTURE_DONE
                             ? (unsigned)t->base.code
                             : (unsigned)(uintptr_t)t->base.o.p);
    return x->name != NULL ? x->name : "Task";
}

int
aw_task_set_user(aw_task *task, void *user)
{
    struct aw__task *t = as_task(task);
    struct task_extra *x;

    if (t == NULL)
        return -EINVAL;
    if (user == NULL && t->extra == NULL)
        return 0;
    if ((x = extra(t)) == NULL)
        return -ENOMEM;
    x->user = user;
    return 0;
}

void *
aw_task_user(const aw_task *task)
{
    struct aw__task *t = as_task(task);

    return t != NULL && t->extra != NULL ? t->extra->user : NULL;
}

aw_task *
aw_current_task(aw_loop *loop)
{
    struct aw__task *t;

    if (loop == NULL)
        return NULL;
    t = aw__loop_task_slot(loop)->current;
    return t != NULL ? &t->base : NULL;
}

size_t
aw_all_tasks(aw_loop *loop, aw_task **out, size_t max)
{
    struct aw__task *t;
    size_t i = 0;

    if (loop == NULL)
        return 0;
    if (out == NULL || max == 0)
        return aw__loop_task_slot(loop)->ntasks;
    for (t = aw__loop_task_slot(loop)->tasks; t != NULL; t = t->next) {
        if (i < max)
            out[i] = &t->base;
        i++;
    }
    return i;
}

int
aw_task_cancelling(const aw_task *task)
{
    struct aw__task *t = as_task(task);

    return t != NULL ? (int)cancel_count(t) : -EINVAL;
}

int
aw_task_uncancel(aw_task *task)
{
    struct aw__task *t = as_task(task);

    if (t == NULL)
        return -EINVAL;
    cancel_count_add(t, -1);
    if (cancel_count(t) == 0)
        tclear(t, T_MUST_CANCEL); /* nothing left to deliver (3.13) */
    return (int)cancel_count(t);
}

int
aw_task_dump(aw_loop *loop, FILE *out)
{
    struct aw__task *t;
    char buf[256];
    int n = 0;

    if (loop == NULL || out == NULL)
        return -EINVAL;
    for (t = aw__loop_task_slot(loop)->tasks; t != NULL; t = t->next) {
        fprintf(out, "%s: %s", aw_task_name(&t->base),
                where(t, buf, sizeof(buf)));
        if (cancel_count(t) > 0)
            fprintf(out, ", cancelling %u", cancel_count(t));
        fputc('\n', out);
        n++;
    }
    return n;
}

/* ---- the chain form ------------------------------------------------------------------ */

struct chain_frame {
    size_t n, i;
    void *arg;
    aw_then_fn steps[];
};

static AW_TASK(chain_body, struct chain_frame *c)
{
    AW_BEGIN();
    AW_AWAIT(aw_future_resolved(aw_task_loop(AW_SELF()), NULL, NULL), NULL);
    for (c->i = 0; c->i < c->n; c->i++)
        AW_AWAIT(c->steps[c->i](AW_AWAITED(), c->arg), NULL);
    return_shared(T(AW_SELF()), AW_AWAITED());
    AW_END();
}

aw_task *
aw_task_chain(aw_loop *loop, size_t n, const aw_then_fn *steps, void *arg)
{
    struct chain_frame *c;
    size_t i;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (n > 0 && steps == NULL)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_task_chain: no steps"));
    for (i = 0; i < n; i++)
        if (steps[i] == NULL)
            return aw__future_failed_new(
                loop, -EINVAL, aw__format("aw_task_chain: step %zu is NULL",
                                          i));
    c = aw__malloc(sizeof(*c) + n * sizeof(aw_then_fn));
    if (c == NULL)
        return aw__future_nomem(loop);
    c->n = n;
    c->i = 0;
    c->arg = arg;
    if (n > 0)
        memcpy(c->steps, steps, n * sizeof(aw_then_fn));
    return aw_task_new(loop, chain_body, c, aw__free);
}

/* ---- sleep ----------------------------------------------------------------------------- */

/* A sleep keeps its timer handle in o.p while pending (or while its
 * cancellation waits for the timer, out of memory). */
static int
sleep_fire(aw_loop *loop, void *arg)
{
    aw_future *f = arg;
    aw_handle *h = f->o.p;

    (void)loop;
    f->o.p = NULL;
    aw_handle_unref(h);
    if (f->state == AW_FUTURE_PENDING)
        f->state = AW_FUTURE_DONE; /* v.ptr is the result */
    aw__future_settle_now(f);
    return 0;
}

static void
sleep_stop_timer(aw_future *f)
{
    aw_handle *h = f->o.p;

    if (h != NULL) {
        aw_handle_cancel(h);
        aw_handle_unref(h);
        f->o.p = NULL;
    }
}

static void
sleep_cancel(aw_future *f, const char *msg)
{
    aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
    if (!(f->flags & F_DEFERRED))
        sleep_stop_timer(f); /* else the timer runs the callbacks */
}

static void
sleep_release(aw_future *f)
{
    sleep_stop_timer(f);
}

/* A sleep's timer runs its callbacks (no handle reserved for them), and
 * freeing it releases no other future. */
const struct aw__future_ops aw__sleep_ops = {
    .name = "sleep", .kind = K_SLEEP,
    .flags = AW__OPS_NORESERVE | AW__OPS_LEAF, .size = sizeof(aw_future),
    .cancel = sleep_cancel, .release = sleep_release};

aw_future *
aw_sleep_result(aw_loop *loop, double delay, void *result)
{
    aw_handle *h = NULL;
    aw_future *f;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (isnan(delay))
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_sleep: delay is NaN"));
    f = aw__future_alloc(loop, &aw__sleep_ops);
    if (f == NULL)
        return aw__future_nomem(loop);
    f->v.ptr = result;
    if (!(isinf(delay) && delay > 0) &&
        aw_loop_call_later(loop, delay > 0 ? delay : 0, sleep_fire, f, &h) !=
            0) {
        aw_future_unref(f);
        return aw__future_nomem(loop);
    }
    f->o.p = h; /* an infinite sleep has none: it ends when cancelled */
    return f;
}

aw_future *
aw_sleep(aw_loop *loop, double delay)
{
    return aw_sleep_result(loop, delay, NULL);
}

/* ---- timeout scopes ----------------------------------------------------------------- */

static void
timeout_stop(aw_timeout *to)
{
    if (to->timer != NULL) {
        aw_handle_cancel(to->timer);
        aw_handle_unref(to->timer);
        to->timer = NULL;
    }
}

static int
timeout_fire(aw_loop *loop, void *arg)
{
    aw_timeout *to = arg;

    (void)loop;
    aw_handle_unref(to->timer);
    to->timer = NULL;
    to->expired = 1;
    own_cancel(to->task, 0, "timeout");
    return 0;
}

static int
timeout_arm(aw_timeout *to, double when)
{
    aw_loop *loop = to->task->base.loop;

    to->when = when;
    if (isinf(when) && when > 0)
        return 0;
    return aw_loop_call_at(loop, when, timeout_fire, to, &to->timer);
}

static void
timeout_unlink(aw_timeout *to)
{
    struct aw_timeout **pp = &to->task->extra->scopes;

    while (*pp != NULL && *pp != to)
        pp = &(*pp)->next;
    if (*pp == to)
        *pp = to->next;
}

static void
timeout_free_all(struct aw__task *t)
{
    aw_timeout *to, *next;

    if (t->extra == NULL)
        return;
    for (to = t->extra->scopes; to != NULL; to = next) {
        next = to->next;
        timeout_stop(to);
        aw__free(to);
    }
    t->extra->scopes = NULL;
}

aw_timeout *
aw_timeout_enter_at(aw_task *task, double when)
{
    struct aw__task *t = as_task(task);
    struct task_extra *x;
    aw_timeout *to;

    if (t == NULL || task->state != AW_FUTURE_PENDING || isnan(when) ||
        !(tflags(t) & T_RUNNING) || aw_current_task(task->loop) != task)
        return NULL;
    if ((x = extra(t)) == NULL || (to = aw__calloc(1, sizeof(*to))) == NULL)
        return NULL;
    to->task = t;
    if (timeout_arm(to, when) != 0) {
        aw__free(to);
        return NULL;
    }
    to->next = x->scopes;
    x->scopes = to;
    return to;
}

aw_timeout *
aw_timeout_enter(aw_task *task, double delay)
{
    if (task == NULL || isnan(delay))
        return NULL;
    if (isinf(delay) && delay > 0)
        return aw_timeout_enter_at(task, INFINITY);
    /* A delay already past (< 0) expires at the next pass (asyncio). */
    return aw_timeout_enter_at(task, aw_loop_time(task->loop) + delay);
}

int
aw_timeout_reschedule(aw_timeout *to, double when)
{
    double old_when;
    aw_handle *old;

    if (to == NULL || isnan(when))
        return -EINVAL;
    if (to->expired)
        return AW_EINVALSTATE;
    if (isinf(when) && when < 0)
        when = aw_loop_time(to->task->base.loop); /* long past: now */
    old = to->timer;
    old_when = to->when;
    to->timer = NULL;
    if (timeout_arm(to, when) != 0) {
        to->timer = old;
        to->when = old_when;
        return -ENOMEM;
    }
    if (old != NULL) {
        aw_handle_cancel(old);
        aw_handle_unref(old);
    }
    return 0;
}

int
aw_timeout_reschedule_in(aw_timeout *to, double delay)
{
    if (to == NULL || isnan(delay))
        return -EINVAL;
    if (isinf(delay) && delay > 0)
        return aw_timeout_reschedule(to, INFINITY);
    return aw_timeout_reschedule(to, aw_loop_time(to->task->base.loop) +
                                         delay);
}

double
aw_timeout_when(const aw_timeout *to)
{
    return to != NULL ? to->when : NAN;
}

int
aw_timeout_expired(const aw_timeout *to)
{
    return to != NULL && to->expired;
}

int
aw_timeout_exit(aw_timeout *to)
{
    struct aw__task *t;
    int rc = 0;

    if (to == NULL)
        return -EINVAL;
    t = to->task;
    timeout_stop(to);
    timeout_unlink(to);
    if (to->expired) {
        struct task_extra *x = t->extra;
        aw_timeout *s;

        rc = AW_ETIMEDOUT;
        /* Withdraw the scope's cancellation (asyncio's uncancel). */
        cancel_count_add(t, -1);
        if (to->delivered == 0 && x->own_pending > 0)
            x->own_pending--;
        /* Scopes that expired with this one and were told by the same
         * delivery still hold: their cancellation goes on to the next
         * await (asyncio's CancelledError propagating to the outer
         * timeout, test_nested_timeouts_loop_busy). */
        for (s = x->scopes; s != NULL; s = s->next) {
            if (s->expired && to->delivered != 0 &&
                s->delivered == to->delivered) {
                s->delivered = 0;
                x->own_pending++;
                tset(t, T_MUST_CANCEL);
            }
        }
        if (x->own_pending == 0 && !(tflags(t) & T_OUTSIDE))
            tclear(t, T_MUST_CANCEL); /* this scope's, undelivered */
    }
    aw__free(to);
    return rc;
}

/* ---- task groups ---------------------------------------------------------------------- */

static int group_on_child(aw_future *child, void *arg);

/* Withdraw the cancellation the group made of its parent (asyncio's
 * TaskGroup calls uncancel() on exit), so that the parent's cancelling()
 * count is what it was. */
static void
group_withdraw(aw_task_group *g)
{
    struct aw__task *parent = as_task(g->parent);

    if (!g->parent_cancelled)
        return;
    g->parent_cancelled = 0;
    if (parent != NULL && parent->base.state == AW_FUTURE_PENDING)
        aw_task_uncancel(&parent->base);
}

static void
group_settle(aw_task_group *g)
{
    aw_future *w = g->waiter;

    if (g->running == 0)
        group_withdraw(g);
    if (w == NULL || w->state != AW_FUTURE_PENDING || g->running > 0)
        return;
    if (g->aborted)
        aw__future_set_failed(
            w, g->error,
            aw__format("%zu of %zu tasks failed; the first: %s", g->nfailed,
                       g->spawned, g->error_msg ? g->error_msg
                                          : aw_strerror(g->error)));
    else if (g->cancelled) {
        aw__future_set_cancelled(w, g->cancel_msg);
        g->cancel_msg = NULL;
    } else {
        w->v.ptr = NULL; /* not settable by users: set it here */
        w->o.destroy = NULL;
        w->state = AW_FUTURE_DONE;
        aw__future_settle(w);
    }
}

static void
group_cancel_children(aw_task_group *g, const char *msg)
{
    size_t i;

    for (i = 0; i < g->n; i++)
        if (g->children[i] != NULL &&
            g->children[i]->state == AW_FUTURE_PENDING)
            aw_future_cancel(g->children[i], msg);
}

/* Close the holes released children left, keeping the order. */
static void
group_compact(aw_task_group *g)
{
    size_t i, m;

    if (g->holes == 0)
        return;
    for (i = 0, m = 0; i < g->n; i++)
        if (g->children[i] != NULL)
            g->children[m++] = g->children[i];
    g->n = m;
    g->holes = 0;
}

/* A child that ended without failing is released at once, so that a
 * long-lived group running many short children stays small; failed
 * children stay, for their errors to be collected. */
static void
group_release_child(aw_task_group *g, aw_future *child)
{
    size_t i;

    for (i = g->n; i-- > 0;) {
        if (g->children[i] == child) {
            g->children[i] = NULL;
            g->holes++;
            if (i == g->n - 1) {
                while (g->n > 0 && g->children[g->n - 1] == NULL) {
                    g->n--;
                    g->holes--;
                }
            }
            aw_future_unref(child);
            return;
        }
    }
}

static void
group_wait_cancel(aw_future *f, const char *msg)
{
    aw_task_group *g = ((struct group_wait *)f)->group;

    if (g == NULL || g->running == 0) {
        aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
        return;
    }
    if (g->cancelled)
        return; /* already waiting for the children */
    g->cancelled = 1;
    g->cancel_msg = msg != NULL ? aw__strdup(msg) : NULL;
    group_cancel_children(g, msg);
}

/* No release operation: the group holds its wait future until the group
 * is freed, and forgets it then. */
const struct aw__future_ops aw__group_ops = {
    .name = "task group wait", .kind = K_GROUP,
    .size = sizeof(struct group_wait), .cancel = group_wait_cancel};

static int
group_on_child(aw_future *child, void *arg)
{
    aw_task_group *g = arg;

    g->running--;
    if (child->state == AW_FUTURE_FAILED && child->code != AW_ECANCELLED) {
        const char *m = aw_future_message(child);

        child->flags |= F_RETRIEVED; /* collected by the group */
        g->nfailed++;
        if (!g->aborted) {
            struct aw__task *parent = as_task(g->parent);

            g->aborted = 1;
            g->error = child->code;
            g->error_msg = m != NULL ? aw__strdup(m) : NULL;
            group_cancel_children(g, "a sibling task failed");
            if (parent != NULL && parent->base.state == AW_FUTURE_PENDING &&
                (g->waiter == NULL || parent->awaiting != g->waiter)) {
                g->parent_cancelled = 1;
                own_cancel(parent, child->code, "a child task failed");
            }
        }
    }
    if (child->state != AW_FUTURE_FAILED || child->code == AW_ECANCELLED)
        group_release_child(g, child);
    group_settle(g);
    return 0;
}

aw_task_group *
aw_task_group_new(aw_loop *loop, aw_task *parent)
{
    aw_task_group *g;

    if (loop == NULL || aw_loop_is_closed(loop) ||
        (parent != NULL && (as_task(parent) == NULL || parent->loop != loop)))
        return NULL;
    g = aw__calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->loop = loop;
    g->parent = aw_future_ref(parent);
    aw__loop_track(loop, 1);
    return g;
}

int
aw_task_group_spawn(aw_task_group *g, aw_task_fn fn, void *frame,
                    aw_destroy_fn frame_free, aw_task **taskp)
{
    aw_future *t;
    int rc = 0;

    if (g == NULL || fn == NULL)
        rc = -EINVAL;
    else if (g->aborted || g->cancelled)
        rc = AW_ESHUTDOWN;
    else if (g->n == g->cap && g->holes > g->n / 2)
        group_compact(g);
    if (rc == 0 && g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 8;
        aw_future **c = aw__reallocarray(g->children, cap, sizeof(*c));

        if (c == NULL)
            rc = -ENOMEM;
        else
            g->children = c, g->cap = cap;
    }
    if (rc != 0) {
        if (frame_free != NULL)
            frame_free(frame);
        return rc;
    }
    t = aw_task_new(g->loop, fn, frame, frame_free);
    if (!aw_is_task(t))
        return -ENOMEM; /* the frame was released */
    if (aw__future_attach(t, group_on_child, g) != 0) {
        aw_future_cancel(t, NULL);
        aw_future_unref(t);
        return -ENOMEM;
    }
    g->children[g->n++] = t;
    g->running++;
    g->spawned++;
    if (taskp != NULL)
        *taskp = aw_future_ref(t);
    return 0;
}

aw_future *
aw_task_group_wait(aw_task_group *g)
{
    if (g == NULL)
        return NULL;
    if (g->waiter == NULL) {
        aw_future *w = aw__future_alloc(g->loop, &aw__group_ops);

        if (w == NULL)
            return aw__future_nomem(g->loop);
        ((struct group_wait *)w)->group = g;
        g->waiter = w;
        group_settle(g);
    }
    return aw_future_ref(g->waiter);
}

aw_task *const *
aw_task_group_children(const aw_task_group *g, size_t *n)
{
    if (g == NULL)
        return NULL;
    group_compact((aw_task_group *)g);
    if (n != NULL)
        *n = g->n;
    return g->children;
}

int
aw_task_group_cancel(aw_task_group *g, const char *msg)
{
    if (g == NULL)
        return -EINVAL;
    if (g->running > 0)
        g->cancelled = 1;
    group_cancel_children(g, msg);
    return 0;
}

void
aw_task_group_free(aw_task_group *g)
{
    size_t i;

    if (g == NULL)
        return;
    for (i = 0; i < g->n; i++)
        if (g->children[i] != NULL)
            aw__future_detach(g->children[i], group_on_child, g);
    group_withdraw(g);
    if (g->waiter != NULL) {
        ((struct group_wait *)g->waiter)->group = NULL;
        /* Its error is the children's, which the group collected. */
        g->waiter->flags |= F_RETRIEVED;
    }
    group_cancel_children(g, "task group freed");
    for (i = 0; i < g->n; i++)
        aw_future_unref(g->children[i]);
    if (g->waiter != NULL && g->waiter->state == AW_FUTURE_PENDING)
        aw_future_cancel(g->waiter, "task group freed");
    aw_future_unref(g->waiter);
    aw_future_unref(g->parent);
    aw__free(g->children);
    aw__free(g->error_msg);
    aw__free(g->cancel_msg);
    aw__loop_track(g->loop, -1);
    aw__free(g);
}

/* SPDX-License-Identifier: MIT */
/* future.c: futures, promise chaining and the combinators.
 *
 * A future is 48 bytes from the loop's pools.  Its done callbacks are a
 * list of pooled nodes, pushed at the head while it is pending; settling
 * reverses the list into the order added and schedules the whole batch on
 * the ready queue with one handle, reserved when the first callback was
 * added, so that settling never fails.
 *
 * The modules' futures (chains, combinators, wait_for) are subtypes with
 * the future first.  They register on the futures they wait for with the
 * same callback nodes, and detach them when they are freed or cancelled:
 * a callback node never points at a freed future.
 *
 * Freeing a future may release others (a chain its source, a gather its
 * inputs); those are queued on the loop's reap list and freed by the
 * outermost unref, so that dropping a chain of a million steps does not
 * recurse a million deep. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "await/future.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"

/* A callback added to a settled future, scheduled on its own. */
struct late_cb {
    aw_future *future;
    aw_done_fn fn;
    void *arg;
};

struct chain {
    aw_future base;
    aw_future *source; /* the future waited on, one reference */
    struct cb *node;   /* our callback on source */
    union {
        aw_then_fn then;
        aw_finally_fn fin;
    } fn;
    void *arg;
};

struct inputs {
    size_t n;
    aw_future *items[];
};

struct combo {
    aw_future base;
    struct inputs *in; /* NULL once moved into the result */
    size_t remaining;  /* deliveries still to come */
    aw_handle *timer;
    int mode;
};

struct wait_for {
    aw_future base;
    aw_future *inner;
    struct cb *node; /* our callback on inner */
    aw_handle *timer;
    double timeout;
};

struct wait_block {
    aw_wait_sets sets;
    size_t n;
    aw_future *items[];
};

struct aw_as_completed {
    aw_loop *loop;
    struct inputs *in;
    aw_future **ready; /* settled inputs not given out yet: a ring */
    size_t ready_head, ready_len;
    struct as_completed_fut **out; /* handed out, not given an input */
    size_t nout;
    size_t handed;     /* results handed out or promised */
    size_t registered; /* inputs still to deliver */
    uint32_t watch_seq;
    aw_handle *timer;
    int timed_out;
};

/* What aw_as_completed_next() hands out: interchangeable, as asyncio's
 * are: an input goes to the one awaited first (its first callback,
 * counted in base.aux), whatever order they were handed out in. */
struct as_completed_fut {
    aw_future base;
    aw_as_completed *it; /* NULL once the iterator is freed */
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct aw_future) <= 48, "aw_future grew past 48");
_Static_assert(sizeof(struct aw_future) <= sizeof(((struct aw__future_slot *)0)->nomem),
               "no room for the shared -ENOMEM future");
_Static_assert(AW__KINDS_MAX <= sizeof(((struct aw__future_slot *)0)->live) /
                                    sizeof(size_t),
               "no count for every kind");
#endif

static void future_free(aw_future *f);
static void chain_run(struct chain *ch);
static int chain_on_source(aw_future *src, void *arg);
static int combo_on_input(aw_future *input, void *arg);
static int wait_for_on_inner(aw_future *inner, void *arg);
static int as_completed_on_input(aw_future *input, void *arg);

/* ---- small helpers --------------------------------------------------- */

/* A future settled by a callback of its own (a sleep's timer) runs its
 * callbacks itself: it needs no handle reserved for them. */
static inline int
reserves(const aw_future *f)
{
    return !(aw__future_ops(f)->flags & AW__OPS_NORESERVE);
}

static int
is_combo(const aw_future *f)
{
    return f->kind >= K_GATHER && f->kind <= K_WAIT;
}

static int
chain_decided(const aw_future *f)
{
    const struct chain *ch = (const struct chain *)f;

    return (f->kind == K_SHIELD || (f->xflags & X_FOLLOWING)) &&
           ch->source != NULL && ch->source->state != AW_FUTURE_PENDING;
}

static int
wait_for_decided(const aw_future *f)
{
    const struct wait_for *w = (const struct wait_for *)f;

    return w->inner != NULL && w->inner->state != AW_FUTURE_PENDING;
}

char *
aw__vformat(const char *fmt, va_list ap)
{
    va_list aq;
    char *s;
    int len;

    if (fmt == NULL)
        return NULL;
    va_copy(aq, ap);
    len = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (len < 0)
        return NULL;
    s = aw__malloc((size_t)len + 1);
    if (s != NULL)
        vsnprintf(s, (size_t)len + 1, fmt, ap);
    return s;
}

char *
aw__format(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = aw__vformat(fmt, ap);
    va_end(ap);
    return s;
}

aw_future *
aw__future_nomem(aw_loop *loop)
{
    aw_future *f = (aw_future *)(void *)aw__loop_future_slot(loop)->nomem;

    if (f->loop == NULL) {
        memset(f, 0, sizeof(*f));
        f->loop = loop;
        f->state = AW_FUTURE_FAILED;
        f->code = -ENOMEM;
        f->refs = 1;
        f->flags = F_IMMORTAL | F_RETRIEVED;
    }
    return f;
}

static void future_census(aw_loop *loop);

static const struct aw__loop_hooks future_hooks = {.census = future_census};

aw_future *
aw__future_alloc(aw_loop *loop, const struct aw__future_ops *ops)
{
    aw_future *f = aw__loop_alloc(loop, ops->size);
    struct aw__future_slot *slot;

    if (AW__UNLIKELY(f == NULL))
        return NULL;
    slot = aw__loop_future_slot(loop);
    slot->live[ops->kind]++;
    slot->hooks = &future_hooks;
    f->loop = loop;
    f->callbacks = NULL;
    f->v.ptr = NULL;
    f->o.destroy = NULL;
    f->code = 0;
    f->refs = 1;
    f->state = AW_FUTURE_PENDING;
    f->flags = 0;
    f->kind = ops->kind;
    f->xflags = 0;
    f->aux = 0;
    aw__loop_track(loop, 1);
    return f;
}

static int
loop_usable(aw_loop *loop)
{
    return loop != NULL && !aw_loop_is_closed(loop);
}

/* ---- callbacks ----------------------------------------------------------- */

static void
report_callback_error(aw_loop *loop, aw_done_fn fn, int rc)
{
    char name[128];

    aw_callback_name((aw_callback_fn)fn, name, sizeof(name));
    aw__loop_report(loop, rc, NULL, NULL, "done callback %s failed: %s (%s)",
                    name, aw_err_name(rc), aw_strerror(rc));
}

static int
run_batch(aw_loop *loop, void *arg)
{
    aw_future *f = arg;
    struct cb *c;

    while ((c = f->callbacks) != NULL) {
        aw_done_fn fn = c->fn;
        void *cbarg = c->arg;
        int rc;

        f->callbacks = c->next;
        aw__loop_free(loop, c, sizeof(*c));
        if (fn == NULL)
            continue;
        rc = fn(f, cbarg);
        if (AW__UNLIKELY(rc < 0))
            report_callback_error(loop, fn, rc);
    }
    f->flags &= (uint8_t)~F_BATCH;
    aw_future_unref(f);
    return 0;
}

/* Turn the pending callbacks (newest first) into the batch (in the order
 * added), which holds a reference to f until it has run; 0 when there is
 * nothing to run. */
static int
make_batch(aw_future *f)
{
    struct cb *c = f->callbacks, *rev = NULL;

    if (c == NULL)
        return 0;
    while (c != NULL) {
        struct cb *next = c->next;

        c->next = rev;
        rev = c;
        c = next;
    }
    f->callbacks = rev;
    f->flags |= F_BATCH;
    f->refs++;
    return 1;
}

/* Settle: the state and outcome are set; schedule the callbacks. */
void
aw__future_settle(aw_future *f)
{
    if (!make_batch(f))
        return;
    if (reserves(f)) {
        aw__loop_call_soon_reserved(f->loop, run_batch, f);
    } else if (aw_loop_call_soon(f->loop, run_batch, f, NULL) != 0) {
        /* Out of memory: the owner runs the batch later, with
         * aw__future_settle_now (a sleep: when its timer fires). */
        f->flags |= F_DEFERRED;
    }
}

void
aw__future_settle_now(aw_future *f)
{
    if (f->flags & F_DEFERRED) {
        f->flags &= (uint8_t)~F_DEFERRED;
        run_batch(f->loop, f); /* made already */
        return;
    }
    if ((f->flags & F_BATCH) || !make_batch(f))
        return;
    if (reserves(f))
        aw__loop_unreserve(f->loop);
    run_batch(f->loop, f);
}

/* Register fn on a pending future. */
int
aw__future_attach(aw_future *f, aw_done_fn fn, void *arg)
{
    const struct aw__future_ops *ops = aw__future_ops(f);
    int first = f->callbacks == NULL;
    struct cb *c;

    if (first && !(ops->flags & AW__OPS_NORESERVE) &&
        AW__UNLIKELY(aw__loop_reserve(f->loop) != 0))
        return -ENOMEM;
    c = aw__loop_alloc(f->loop, sizeof(*c));
    if (AW__UNLIKELY(c == NULL)) {
        if (first && !(ops->flags & AW__OPS_NORESERVE))
            aw__loop_unreserve(f->loop);
        return -ENOMEM;
    }
    c->fn = fn;
    c->arg = arg;
    c->next = f->callbacks;
    c->pprev = &f->callbacks;
    if (c->next != NULL)
        c->next->pprev = &c->next;
    f->callbacks = c;
    if (first && AW__UNLIKELY(ops->watched != NULL))
        ops->watched(f); /* may settle f: the callback is in the batch */
    return 0;
}

int
aw__future_attach_node(aw_future *f, aw_done_fn fn, void *arg,
                       struct cb **nodep)
{
    int rc = aw__future_attach(f, fn, arg);

    *nodep = rc == 0 ? f->callbacks : NULL;
    return rc;
}

void
aw__future_detach_node(aw_future *f, struct cb **nodep)
{
    struct cb *c = *nodep;

    if (c == NULL)
        return;
    *nodep = NULL;
    if (f->state != AW_FUTURE_PENDING) {
        c->fn = NULL; /* in the scheduled batch: skipped, freed there */
        return;
    }
    *c->pprev = c->next;
    if (c->next != NULL)
        c->next->pprev = c->pprev;
    aw__loop_free(f->loop, c, sizeof(*c));
    if (f->callbacks == NULL && reserves(f))
        aw__loop_unreserve(f->loop);
}

/* Remove every (fn, arg) not run yet: unlinked while pending, disarmed in
 * a scheduled batch.  Returns how many. */
int
aw__future_detach(aw_future *f, aw_done_fn fn, void *arg)
{
    struct cb **pp = &f->callbacks, *c;
    int n = 0;

    if (f->state == AW_FUTURE_PENDING) {
        while ((c = *pp) != NULL) {
            if (c->fn == fn && c->arg == arg) {
                *pp = c->next;
                if (c->next != NULL)
                    c->next->pprev = pp;
                aw__loop_free(f->loop, c, sizeof(*c));
                n++;
            } else {
                pp = &c->next;
            }
        }
        if (n > 0 && f->callbacks == NULL && reserves(f))
            aw__loop_unreserve(f->loop);
    } else if (f->flags & F_BATCH) {
        for (c = f->callbacks; c != NULL; c = c->next) {
            if (c->fn == fn && c->arg == arg) {
                c->fn = NULL;
                n++;
            }
        }
    }
    return n;
}

static void
free_pending_callbacks(aw_future *f)
{
    struct cb *c = f->callbacks;

    if (c == NULL)
        return;
    while (c != NULL) {
        struct cb *next = c->next;

        aw__loop_free(f->loop, c, sizeof(*c));
        c = next;
    }
    f->callbacks = NULL;
    if (reserves(f))
        aw__loop_unreserve(f->loop);
}

static int
run_late(aw_loop *loop, void *arg)
{
    struct late_cb *l = arg;
    aw_future *f = l->future;
    aw_done_fn fn = l->fn;
    void *cbarg = l->arg;
    int rc;

    aw__loop_free(loop, l, sizeof(*l));
    rc = fn(f, cbarg);
    if (AW__UNLIKELY(rc < 0))
        report_callback_error(loop, fn, rc);
    aw_future_unref(f);
    return 0;
}

/* ---- settling, internally ------------------------------------------------ */

void
aw__future_set_failed(aw_future *f, int code, char *msg)
{
    f->state = AW_FUTURE_FAILED;
    f->code = code;
    f->v.msg = msg;
    aw__future_settle(f);
}

void
aw__future_set_cancelled(aw_future *f, char *msg)
{
    f->state = AW_FUTURE_CANCELLED;
    f->code = AW_ECANCELLED;
    f->v.msg = msg;
    aw__future_settle(f);
}

/* Settle f with the result of src (done), sharing it: f holds a reference
 * to the future that owns it. */
static void
set_linked(aw_future *f, aw_future *src)
{
    aw_future *owner = (src->flags & F_LINKED) ? src->o.link : src;

    src->flags |= F_RETRIEVED;
    f->v = src->v;
    f->o.link = aw_future_ref(owner);
    f->flags |= F_LINKED;
    f->state = AW_FUTURE_DONE;
    aw__future_settle(f);
}

/* Settle the pending f like the settled src; takes over the reference to
 * src.  An error handed on counts as retrieved: f now carries it. */
void
aw__future_adopt(aw_future *f, aw_future *src)
{
    src->flags |= F_RETRIEVED; /* f carries the outcome on */
    if (src->state == AW_FUTURE_DONE) {
        if (src->refs == 1 && !(src->flags & F_LINKED)) {
            /* The only holder: move the result. */
            f->v = src->v;
            f->o.destroy = src->o.destroy;
            f->flags |= src->flags & F_TAKEN;
            src->o.destroy = NULL;
            f->state = AW_FUTURE_DONE;
            aw_future_unref(src);
            aw__future_settle(f);
        } else {
            set_linked(f, src);
            aw_future_unref(src);
        }
        return;
    }
    src->flags |= F_RETRIEVED;
    f->code = src->code;
    if (src->refs == 1 && !(src->flags & F_IMMORTAL)) {
        f->v.msg = src->v.msg;
        src->v.msg = NULL;
    } else {
        f->v.msg = src->v.msg != NULL ? aw__strdup(src->v.msg) : NULL;
    }
    f->state = src->state;
    aw_future_unref(src);
    aw__future_settle(f);
}

/* ---- creating and releasing ---------------------------------------------- */

aw_future *
aw_future_new(aw_loop *loop)
{
    if (!loop_usable(loop))
        return NULL;
    return aw__future_alloc(loop, &aw__plain_ops);
}

aw_future *
aw_future_resolved(aw_loop *loop, void *result, aw_destroy_fn destroy)
{
    aw_future *f;

    if (!loop_usable(loop)) {
        if (destroy != NULL)
            destroy(result);
        return NULL;
    }
    f = aw__future_alloc(loop, &aw__plain_ops);
    if (AW__UNLIKELY(f == NULL)) {
        if (destroy != NULL)
            destroy(result);
        return aw__future_nomem(loop);
    }
    f->v.ptr = result;
    f->o.destroy = destroy;
    f->state = AW_FUTURE_DONE;
    return f;
}

aw_future *
aw_future_resolved_int(aw_loop *loop, intptr_t result)
{
    aw_future *f;

    if (!loop_usable(loop))
        return NULL;
    f = aw__future_alloc(loop, &aw__plain_ops);
    if (AW__UNLIKELY(f == NULL))
        return aw__future_nomem(loop);
    f->v.i = result;
    f->state = AW_FUTURE_DONE;
    return f;
}

aw_future *
aw__future_failed_new(aw_loop *loop, int code, char *msg)
{
    aw_future *f = aw__future_alloc(loop, &aw__plain_ops);

    if (AW__UNLIKELY(f == NULL)) {
        aw__free(msg);
        return aw__future_nomem(loop);
    }
    f->code = code;
    f->v.msg = msg;
    f->state = code == AW_ECANCELLED ? AW_FUTURE_CANCELLED : AW_FUTURE_FAILED;
    return f;
}

aw_future *
aw_future_failed(aw_loop *loop, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    if (!loop_usable(loop))
        return NULL;
    if (code >= 0)
        return aw__future_failed_new(loop, -EINVAL,
                             aw__format("aw_future_failed: %d is not an error "
                                    "code",
                                    code));
    va_start(ap, fmt);
    msg = aw__vformat(fmt, ap);
    va_end(ap);
    return aw__future_failed_new(loop, code, msg);
}

aw_future *
aw_future_ref(aw_future *future)
{
    if (future != NULL && !(future->flags & F_IMMORTAL))
        future->refs++;
    return future;
}

void
aw_future_unref(aw_future *f)
{
    struct aw__future_slot *slots;

    if (f == NULL || (f->flags & F_IMMORTAL) || --f->refs != 0)
        return;
    if (f->state == AW_FUTURE_PENDING)
        free_pending_callbacks(f); /* nobody can settle it any more */
    if ((aw__future_ops(f)->flags & AW__OPS_LEAF) &&
        !(f->flags & F_LINKED)) {
        future_free(f); /* releases no other future */
        return;
    }
    slots = aw__loop_future_slot(f->loop);
    f->callbacks = (struct cb *)(void *)slots->reap; /* the reap link */
    slots->reap = f;
    if (slots->reaping)
        return;
    slots->reaping = 1;
    while ((f = slots->reap) != NULL) {
        slots->reap = (aw_future *)(void *)f->callbacks;
        f->callbacks = NULL;
        future_free(f);
    }
    slots->reaping = 0;
}

aw_loop *
aw_future_loop(const aw_future *future)
{
    return future != NULL ? future->loop : NULL;
}

/* ---- settling -------------------------------------------------------------- */

static int
check_settable(const aw_future *f)
{
    if (f == NULL)
        return -EINVAL;
    if (f->state != AW_FUTURE_PENDING)
        return AW_EINVALSTATE;
    if (f->kind != K_PLAIN)
        return -EINVAL; /* settled by what it waits for */
    return 0;
}

int
aw_future_set_result(aw_future *future, void *result, aw_destroy_fn destroy)
{
    int rc = check_settable(future);

    if (AW__UNLIKELY(rc != 0))
        return rc;
    future->v.ptr = result;
    future->o.destroy = destroy;
    future->state = AW_FUTURE_DONE;
    aw__future_settle(future);
    return 0;
}

int
aw_future_set_result_int(aw_future *future, intptr_t result)
{
    int rc = check_settable(future);

    if (AW__UNLIKELY(rc != 0))
        return rc;
    future->v.i = result;
    future->state = AW_FUTURE_DONE;
    aw__future_settle(future);
    return 0;
}

int
aw_future_set_error(aw_future *future, int code, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (code >= 0 || code == AW_ECANCELLED)
        return -EINVAL;
    rc = check_settable(future);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    aw__future_set_failed(future, code, aw__vformat(fmt, ap));
    va_end(ap);
    return 0;
}

static void combo_cancel(struct combo *c, const char *msg);
static void wait_for_cancel(struct wait_for *w, const char *msg);

/* Cancel the pending f; returns the future upstream of it to cancel next
 * (a chain's source that nobody else holds: its reference passes to the
 * caller), so that cancelling a long chain does not recurse. */
static aw_future *
cancel_one(aw_future *f, const char *msg)
{
    struct chain *ch;
    aw_future *src;

    switch (f->kind) {
    case K_PLAIN:
        aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
        return NULL;
    case K_THEN:
    case K_CATCH:
    case K_FINALLY:
    case K_SHIELD:
        ch = (struct chain *)f;
        src = ch->source;
        ch->source = NULL;
        if (src != NULL)
            aw__future_detach_node(src, &ch->node);
        aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
        if (src == NULL)
            return NULL;
        if (f->kind != K_SHIELD && src->state == AW_FUTURE_PENDING &&
            src->refs == 1)
            return src;
        aw_future_unref(src);
        return NULL;
    default:
        aw__future_ops(f)->cancel(f, msg);
        return NULL;
    }
}

/* The outcome of the pending f is fixed by what it waits for, which has
 * settled; only its delivery is still to come.  Cancelling it then does
 * nothing (asyncio's gather refuses once every child is done). */
static int
decided(const aw_future *f)
{
    const struct aw__future_ops *ops = aw__future_ops(f);

    return ops->decided != NULL && ops->decided(f);
}

int
aw_future_cancel(aw_future *future, const char *msg)
{
    aw_future *up, *cur;

    if (future == NULL)
        return -EINVAL;
    if (future->state != AW_FUTURE_PENDING || decided(future))
        return AW_EINVALSTATE;
    if (future->kind == K_WAIT_FOR && (future->xflags & X_CANCEL_REQ))
        return 0; /* already waiting for the inner future to end */
    up = cancel_one(future, msg);
    while (up != NULL) {
        cur = up;
        up = cancel_one(cur, msg);
        aw_future_unref(cur);
    }
    return 0;
}

/* The cancel operation of plain futures and chains: cancel_one, then up
 * the chain. */
static void
plain_cancel(aw_future *f, const char *msg)
{
    aw_future *up = cancel_one(f, msg), *cur;

    while (up != NULL) {
        cur = up;
        up = cancel_one(cur, msg);
        aw_future_unref(cur);
    }
}

/* ---- reading -------------------------------------------------------------- */

int
aw_future_state(const aw_future *future)
{
    return future != NULL ? future->state : -EINVAL;
}

int
aw_future_done(const aw_future *future)
{
    return future != NULL && future->state != AW_FUTURE_PENDING;
}

int
aw_future_cancelled(const aw_future *future)
{
    return future != NULL && future->state == AW_FUTURE_CANCELLED;
}

int
aw_future_error(aw_future *future)
{
    if (future == NULL)
        return -EINVAL;
    switch (future->state) {
    case AW_FUTURE_PENDING:
        return AW_EINVALSTATE;
    case AW_FUTURE_DONE:
        future->flags |= F_RETRIEVED; /* a grant's result is claimed */
        return 0;
    default:
        future->flags |= F_RETRIEVED;
        return future->code;
    }
}

int
aw_future_result(aw_future *future, void **result)
{
    int rc = aw_future_error(future);

    if (rc == 0 && result != NULL)
        *result = future->v.ptr;
    return rc;
}

int
aw_future_result_int(aw_future *future, intptr_t *result)
{
    int rc = aw_future_error(future);

    if (rc == 0 && result != NULL)
        *result = future->v.i;
    return rc;
}

int
aw_future_take_result(aw_future *future, void **result, aw_destroy_fn *destroy)
{
    aw_future *owner;
    int rc;

    if (result == NULL)
        return -EINVAL;
    rc = aw_future_error(future);
    if (rc != 0)
        return rc;
    owner = (future->flags & F_LINKED) ? future->o.link : future;
    if ((owner->flags & F_TAKEN) ||
        (owner != future && owner->refs > 1))
        return AW_EINVALSTATE;
    *result = owner->v.ptr;
    if (destroy != NULL)
        *destroy = owner->o.destroy;
    owner->v.ptr = NULL;
    owner->o.destroy = NULL;
    owner->flags |= F_TAKEN;
    future->v.ptr = NULL;
    future->flags |= F_TAKEN;
    return 0;
}

const char *
aw_future_message(const aw_future *future)
{
    if (future == NULL || future->state == AW_FUTURE_PENDING ||
        future->state == AW_FUTURE_DONE)
        return NULL;
    return future->v.msg;
}

/* ---- done callbacks ---------------------------------------------------------- */

int
aw_future_add_done_callback(aw_future *future, aw_done_fn fn, void *arg)
{
    struct late_cb *l;
    int rc;

    if (future == NULL || fn == NULL)
        return -EINVAL;
    if (future->state == AW_FUTURE_PENDING)
        return aw__future_attach(future, fn, arg);
    l = aw__loop_alloc(future->loop, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->future = aw_future_ref(future);
    l->fn = fn;
    l->arg = arg;
    rc = aw_loop_call_soon(future->loop, run_late, l, NULL);
    if (rc != 0) {
        aw__loop_free(future->loop, l, sizeof(*l));
        aw_future_unref(future);
    }
    return rc;
}

int
aw_future_remove_done_callback(aw_future *future, aw_done_fn fn, void *arg)
{
    if (future == NULL || fn == NULL)
        return -EINVAL;
    if (future->state != AW_FUTURE_PENDING)
        return 0;
    return aw__future_detach(future, fn, arg);
}

static int
stop_on_done(aw_future *future, void *arg)
{
    (void)future;
    return aw_loop_stop(arg);
}

static int
stop_soon(aw_loop *loop, void *arg)
{
    (void)arg;
    return aw_loop_stop(loop);
}

int
aw_loop_run_until_complete(aw_loop *loop, aw_future *future)
{
    aw_handle *h = NULL;
    int rc;

    if (loop == NULL || future == NULL || future->loop != loop)
        return -EINVAL;
    if (aw_loop_is_closed(loop))
        return AW_ECLOSED;
    if (aw_loop_is_running(loop) || aw_get_running_loop() != NULL)
        return AW_ERUNNING;
    aw_future_ref(future);
    if (future->state == AW_FUTURE_PENDING)
        rc = aw__future_attach(future, stop_on_done, loop);
    else
        rc = aw_loop_call_soon(loop, stop_soon, NULL, &h);
    if (rc == 0) {
        rc = aw_loop_run_forever(loop);
        aw__future_detach(future, stop_on_done, loop);
        if (h != NULL) {
            aw_handle_cancel(h);
            aw_handle_unref(h);
        }
        if (rc == 0 && future->state == AW_FUTURE_PENDING) {
            aw__loop_report(loop, AW_EINVALSTATE, NULL, NULL,
                            "event loop stopped before the future "
                            "completed");
            rc = AW_EINVALSTATE;
        } else if (rc == 0) {
            rc = aw_future_error(future);
        }
    }
    aw_future_unref(future);
    return rc;
}

/* ---- chaining --------------------------------------------------------------- */

/* Settle the chain by what its step returned (g, a reference). */
static void
chain_follow(struct chain *ch, aw_future *g)
{
    aw_future *f = &ch->base;

    if (g == NULL) {
        aw__future_set_failed(f, -EINVAL, aw__format("a chain step returned NULL"));
        return;
    }
    if (f->state != AW_FUTURE_PENDING) { /* cancelled by the step */
        aw_future_unref(g);
        return;
    }
    if (g == f || g->loop != f->loop) {
        aw_future_unref(g);
        aw__future_set_failed(f, -EINVAL,
                   aw__format("a chain step returned %s",
                          g == f ? "its own chain" : "a future of another "
                                                     "loop"));
        return;
    }
    if (g->state != AW_FUTURE_PENDING) {
        aw__future_adopt(f, g);
        return;
    }
    if (AW__UNLIKELY(aw__future_attach_node(g, chain_on_source, ch,
                                            &ch->node) != 0)) {
        aw_future_unref(g);
        aw__future_set_failed(f, -ENOMEM, NULL);
        return;
    }
    ch->source = g;
    f->xflags |= X_FOLLOWING;
}

static void
chain_run(struct chain *ch)
{
    aw_future *f = &ch->base, *src = ch->source, *g;
    int rc;

    if (f->state != AW_FUTURE_PENDING || src == NULL)
        return;
    ch->source = NULL;
    if ((f->xflags & X_FOLLOWING) || f->kind == K_SHIELD) {
        aw__future_adopt(f, src);
        return;
    }
    switch (f->kind) {
    case K_THEN:
        if (src->state != AW_FUTURE_DONE) {
            aw__future_adopt(f, src);
            return;
        }
        src->flags |= F_RETRIEVED; /* the step has the result */
        break;
    case K_CATCH:
        if (src->state != AW_FUTURE_FAILED || src->code == AW_ECANCELLED) {
            aw__future_adopt(f, src);
            return;
        }
        src->flags |= F_RETRIEVED;
        break;
    default:
        break;
    }
    f->refs++; /* the step may drop the caller's reference */
    if (f->kind == K_FINALLY) {
        rc = ch->fn.fin(src, ch->arg);
        if (f->state != AW_FUTURE_PENDING) {
            aw_future_unref(src);
        } else if (rc < 0) {
            src->flags |= F_RETRIEVED;
            aw_future_unref(src);
            aw__future_set_failed(f, rc, NULL);
        } else {
            aw__future_adopt(f, src);
        }
    } else {
        g = ch->fn.then(src, ch->arg);
        aw_future_unref(src); /* frees the chain as it goes */
        chain_follow(ch, g);
    }
    aw_future_unref(f);
}

static int
chain_on_source(aw_future *src, void *arg)
{
    struct chain *ch = arg;

    (void)src;
    ch->node = NULL; /* run: the batch frees it */
    chain_run(ch);
    return 0;
}

static int
chain_scheduled(aw_loop *loop, void *arg)
{
    struct chain *ch = arg;

    (void)loop;
    chain_run(ch);
    aw_future_unref(&ch->base);
    return 0;
}

static aw_future *
chain_new(aw_future *src, int kind, aw_then_fn then, aw_finally_fn fin,
          void *arg)
{
    aw_loop *loop;
    struct chain *ch;
    int rc;

    if (src == NULL)
        return NULL;
    loop = src->loop;
    if (kind != K_SHIELD && then == NULL && fin == NULL) {
        aw_future_unref(src);
        return aw__future_failed_new(loop, -EINVAL,
                             aw__format("chain step function is NULL"));
    }
    ch = (struct chain *)aw__future_alloc(loop, aw__future_kinds[kind]);
    if (AW__UNLIKELY(ch == NULL)) {
        aw_future_unref(src);
        return aw__future_nomem(loop);
    }
    ch->source = src;
    ch->node = NULL;
    if (fin != NULL)
        ch->fn.fin = fin;
    else
        ch->fn.then = then;
    ch->arg = arg;
    if (src->state == AW_FUTURE_PENDING) {
        rc = aw__future_attach_node(src, chain_on_source, ch, &ch->node);
    } else {
        /* The step never runs inside this call: schedule it. */
        rc = aw_loop_call_soon(loop, chain_scheduled, ch, NULL);
        if (rc == 0)
            ch->base.refs++;
    }
    if (AW__UNLIKELY(rc != 0)) {
        ch->source = NULL;
        aw_future_unref(src);
        aw__future_set_failed(&ch->base, rc, NULL);
    }
    return &ch->base;
}

aw_future *
aw_then(aw_future *future, aw_then_fn fn, void *arg)
{
    return chain_new(future, K_THEN, fn, NULL, arg);
}

aw_future *
aw_catch(aw_future *future, aw_then_fn fn, void *arg)
{
    return chain_new(future, K_CATCH, fn, NULL, arg);
}

aw_future *
aw_finally(aw_future *future, aw_finally_fn fn, void *arg)
{
    return chain_new(future, K_FINALLY, NULL, fn, arg);
}

aw_future *
aw_shield(aw_future *future)
{
    if (future == NULL || future->state != AW_FUTURE_PENDING)
        return future; /* asyncio: a done future is its own shield */
    return chain_new(future, K_SHIELD, NULL, NULL, NULL);
}

/* ---- combinators ------------------------------------------------------------- */

static void
inputs_destroy(void *ptr)
{
    struct inputs *in = AW__CONTAINER_OF(ptr, struct inputs, items);
    size_t i;

    for (i = 0; i < in->n; i++)
        aw_future_unref(in->items[i]);
    aw__free(in);
}

static void
unref_all(size_t n, aw_future **futures)
{
    size_t i;

    if (futures == NULL)
        return;
    for (i = 0; i < n; i++)
        aw_future_unref(futures[i]);
}

/* Check a combinator's inputs; on error release them and return a failed
 * future to hand back, else NULL. */
static aw_future *
check_inputs(aw_loop *loop, size_t n, aw_future **futures, const char *who)
{
    size_t i;

    if (n > 0 && futures == NULL)
        return aw__future_failed_new(loop, -EINVAL, aw__format("%s: no input array",
                                                   who));
    for (i = 0; i < n; i++) {
        if (futures[i] == NULL || futures[i]->loop != loop) {
            unref_all(n, futures);
            return aw__future_failed_new(loop, -EINVAL,
                                 aw__format("%s: input %zu is %s", who, i,
                                        futures[i] == NULL
                                            ? "NULL"
                                            : "of another loop"));
        }
    }
    return NULL;
}

struct slot {
    aw_future *f;
    size_t index;
};

static int
slot_order(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;

    if (x->f != y->f)
        return (uintptr_t)x->f < (uintptr_t)y->f ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The inputs, in the order given; `unique` keeps each future once, at its
 * first place (asyncio's sets), dropping the extra references.  On
 * failure releases every input. */
static struct inputs *
inputs_new(size_t n, aw_future **futures, int unique)
{
    struct inputs *in = aw__malloc(sizeof(*in) + n * sizeof(aw_future *));
    struct slot *slots;
    size_t i, m;

    if (in == NULL) {
        unref_all(n, futures);
        return NULL;
    }
    if (n > 0)
        memcpy(in->items, futures, n * sizeof(aw_future *));
    in->n = n;
    if (!unique || n < 2)
        return in;
    slots = aw__malloc(n * sizeof(*slots));
    if (slots == NULL) {
        aw__free(in);
        unref_all(n, futures);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        slots[i].f = futures[i];
        slots[i].index = i;
    }
    qsort(slots, n, sizeof(*slots), slot_order);
    for (i = 1; i < n; i++) {
        if (slots[i].f == slots[i - 1].f) {
            aw_future_unref(in->items[slots[i].index]);
            in->items[slots[i].index] = NULL;
        }
    }
    aw__free(slots);
    for (i = 0, m = 0; i < n; i++)
        if (in->items[i] != NULL)
            in->items[m++] = in->items[i];
    in->n = m;
    return in;
}

static void
combo_detach_all(struct combo *c)
{
    size_t i;

    if (c->in == NULL)
        return;
    for (i = 0; i < c->in->n; i++)
        aw__future_detach(c->in->items[i], combo_on_input, c);
}

static void
combo_stop_timer(struct combo *c)
{
    if (c->timer != NULL) {
        aw_handle_cancel(c->timer);
        aw_handle_unref(c->timer);
        c->timer = NULL;
    }
}

static void
combo_release(struct combo *c)
{
    combo_stop_timer(c);
    if (c->in != NULL) {
        combo_detach_all(c);
        inputs_destroy(c->in->items);
        c->in = NULL;
    }
}

static void
cancel_inputs(struct combo *c, aw_future *except, const char *msg)
{
    size_t i;

    if (c->in == NULL)
        return;
    for (i = 0; i < c->in->n; i++) {
        aw_future *f = c->in->items[i];

        if (f != except && f->state == AW_FUTURE_PENDING)
            aw_future_cancel(f, msg);
    }
}

static void
combo_cancel(struct combo *c, const char *msg)
{
    combo_detach_all(c);
    combo_stop_timer(c);
    aw__future_set_cancelled(&c->base, msg != NULL ? aw__strdup(msg) : NULL);
    if (c->base.kind != K_WAIT)
        cancel_inputs(c, NULL, msg);
}

static void
wait_sets_destroy(void *ptr)
{
    struct wait_block *b = ptr;
    size_t i;

    for (i = 0; i < b->n; i++)
        aw_future_unref(b->items[i]);
    aw__free(b);
}

static void
wait_settle(struct combo *c)
{
    struct inputs *in = c->in;
    struct wait_block *b;
    size_t i, d = 0, p;

    combo_stop_timer(c);
    combo_detach_all(c);
    b = aw__malloc(sizeof(*b) + in->n * sizeof(aw_future *));
    if (b == NULL) {
        aw__future_set_failed(&c->base, -ENOMEM, NULL);
        return;
    }
    for (i = 0; i < in->n; i++)
        d += in->items[i]->state != AW_FUTURE_PENDING;
    b->n = in->n;
    b->sets.ndone = d;
    b->sets.done = b->items;
    b->sets.npending = in->n - d;
    b->sets.pending = b->items + d;
    for (i = 0, p = d, d = 0; i < in->n; i++) {
        aw_future *f = aw_future_ref(in->items[i]);

        if (f->state != AW_FUTURE_PENDING)
            b->items[d++] = f;
        else
            b->items[p++] = f;
    }
    c->base.v.ptr = &b->sets;
    c->base.o.destroy = wait_sets_destroy;
    c->base.state = AW_FUTURE_DONE;
    aw__future_settle(&c->base);
}

static int
wait_met(const struct combo *c, const aw_future *f)
{
    switch (c->mode) {
    case AW_FIRST_COMPLETED:
        return 1;
    case AW_FIRST_ERROR:
        return c->remaining == 0 || f->state == AW_FUTURE_FAILED;
    default:
        return c->remaining == 0;
    }
}

static char *
any_message(struct combo *c)
{
    struct inputs *in = c->in;
    size_t cap = 1024, len, i;
    char *s = aw__malloc(cap);

    if (s == NULL)
        return NULL;
    len = (size_t)snprintf(s, cap, "all %zu inputs failed:", in->n);
    for (i = 0; i < in->n && len < cap; i++) {
        aw_future *f = in->items[i];
        const char *m = aw_future_message(f);

        len += (size_t)snprintf(s + len, cap - len, " [%zu] %s%s%s;", i,
                                aw_err_name(f->code), m ? ": " : "",
                                m ? m : "");
    }
    if (len >= cap)
        memcpy(s + cap - 4, "...", 4);
    else if (len > 0 && s[len - 1] == ';')
        s[len - 1] = '\0';
    return s;
}

/* Every input whose delivery is still to come has settled in a way that
 * fixes c's outcome. */
static int
combo_decided(const aw_future *f)
{
    const struct combo *c = (const struct combo *)f;
    size_t i, settled = 0, done = 0, failed = 0;

    if (c->base.xflags & X_DECIDED)
        return 1;
    if (c->in == NULL)
        return 0;
    for (i = 0; i < c->in->n; i++) {
        int st = c->in->items[i]->state;

        settled += st != AW_FUTURE_PENDING;
        done += st == AW_FUTURE_DONE;
        failed += st == AW_FUTURE_FAILED;
    }
    switch (c->base.kind) {
    case K_GATHER:
        return settled == c->in->n ||
               (!(c->base.xflags & X_RETURN_ERRORS) && settled > done);
    case K_ANY:
        return done > 0 || settled == c->in->n;
    case K_RACE:
        return settled > 0;
    default: /* K_WAIT */
        return settled == c->in->n ||
               (c->mode == AW_FIRST_COMPLETED && settled > 0) ||
               (c->mode == AW_FIRST_ERROR && failed > 0);
    }
}

static int
wait_finish(aw_loop *loop, void *arg)
{
    struct combo *c = arg;

    (void)loop;
    if (c->base.state == AW_FUTURE_PENDING)
        wait_settle(c);
    aw_future_unref(&c->base);
    return 0;
}

/* The wait's condition is met: make its sets a pass later, when its
 * waiters run, so that they see every input done by then as done
 * (asyncio's test_wait_really_done). */
static void
wait_decide(struct combo *c)
{
    if (c->base.xflags & X_DECIDED)
        return;
    if (c->base.callbacks == NULL) {
        wait_settle(c); /* nobody waits to be told: now is when */
        return;
    }
    c->base.xflags |= X_DECIDED;
    c->base.refs++;
    if (aw_loop_call_soon(c->base.loop, wait_finish, c, NULL) != 0) {
        c->base.refs--;
        wait_settle(c);
    }
}

/* An input of c has settled (in the call, or through its callback). */
static void
combo_deliver(struct combo *c, aw_future *f)
{
    aw_future *cf = &c->base;

    c->remaining--;
    if (c->base.kind != K_WAIT && f->state == AW_FUTURE_FAILED)
        f->flags |= F_RETRIEVED; /* the combinator looked at it */
    if (cf->state != AW_FUTURE_PENDING)
        return;
    switch (cf->kind) {
    case K_GATHER:
        if (!(cf->xflags & X_RETURN_ERRORS) && f->state != AW_FUTURE_DONE) {
            aw__future_set_failed(cf, f->code,
                       f->v.msg != NULL ? aw__strdup(f->v.msg) : NULL);
        } else if (c->remaining == 0) {
            cf->v.ptr = c->in->items;
            cf->o.destroy = inputs_destroy;
            c->in = NULL;
            cf->state = AW_FUTURE_DONE;
            aw__future_settle(cf);
        }
        break;
    case K_ANY:
        if (f->state == AW_FUTURE_DONE) {
            set_linked(cf, f);
            cancel_inputs(c, f, "aw_any: another input succeeded");
        } else if (c->remaining == 0) {
            aw__future_set_failed(cf, f->code, any_message(c));
        }
        break;
    case K_RACE:
        aw__future_adopt(cf, aw_future_ref(f));
        break;
    case K_WAIT:
        if (wait_met(c, f))
            wait_decide(c);
        break;
    default:
        break;
    }
}

static int
combo_on_input(aw_future *input, void *arg)
{
    combo_deliver(arg, input);
    return 0;
}

static int
wait_timeout(aw_loop *loop, void *arg)
{
    struct combo *c = arg;

    (void)loop;
    aw_handle_unref(c->timer);
    c->timer = NULL;
    if (c->base.state == AW_FUTURE_PENDING)
        wait_settle(c);
    return 0;
}

/* Build a combinator over checked inputs; takes them over. */
static aw_future *
combo_new(aw_loop *loop, int kind, size_t n, aw_future **futures, int unique,
          int xflags, int mode, double timeout)
{
    struct combo *c;
    struct inputs *in;
    size_t i;

    c = (struct combo *)aw__future_alloc(loop, aw__future_kinds[kind]);
    if (c == NULL) {
        unref_all(n, futures);
        return aw__future_nomem(loop);
    }
    c->in = NULL;
    c->remaining = 0;
    c->timer = NULL;
    c->mode = mode;
    c->base.xflags = (uint8_t)xflags;
    in = inputs_new(n, futures, unique);
    if (in == NULL)
        goto nomem;
    c->in = in;
    c->remaining = in->n;
    for (i = 0; i < in->n; i++) {
        if (in->items[i]->state == AW_FUTURE_PENDING &&
            aw__future_attach(in->items[i], combo_on_input, c) != 0)
            goto nomem;
    }
    if (kind == K_WAIT && !isinf(timeout) &&
        aw_loop_call_later(loop, timeout, wait_timeout, c, &c->timer) != 0)
        goto nomem;
    if (in->n == 0 && kind == K_GATHER) {
        c->base.v.ptr = in->items;
        c->base.o.destroy = inputs_destroy;
        c->in = NULL;
        c->base.state = AW_FUTURE_DONE;
        return &c->base;
    }
    /* Inputs settled already count now, in the order given.  Those still
     * pending were attached to; none of them settles in this loop but by
     * aw_any's cancelling, which happens once the combinator is settled. */
    for (i = 0; i < in->n; i++) {
        aw_future *f = in->items[i];

        if (f->state == AW_FUTURE_PENDING)
            continue;
        if (c->base.state == AW_FUTURE_PENDING)
            combo_deliver(c, f);
        else if (kind != K_WAIT && f->state == AW_FUTURE_FAILED)
            f->flags |= F_RETRIEVED;
    }
    return &c->base;

nomem:
    combo_release(c);
    c->base.state = AW_FUTURE_FAILED;
    c->base.code = -ENOMEM;
    c->base.flags |= F_RETRIEVED;
    aw_future_unref(&c->base);
    return aw__future_nomem(loop);
}

aw_future *
aw_gather(aw_loop *loop, size_t n, aw_future **futures, int flags)
{
    aw_future *bad;

    if (!loop_usable(loop)) {
        unref_all(n, futures);
        return NULL;
    }
    if ((bad = check_inputs(loop, n, futures, "aw_gather")) != NULL)
        return bad;
    if (flags & ~AW_GATHER_RETURN_ERRORS) {
        unref_all(n, futures);
        return aw__future_failed_new(loop, -EINVAL,
                             aw__format("aw_gather: unknown flags %#x", flags));
    }
    return combo_new(loop, K_GATHER, n, futures, 0,
                     (flags & AW_GATHER_RETURN_ERRORS) ? X_RETURN_ERRORS : 0,
                     0, INFINITY);
}

aw_future *
aw_all_settled(aw_loop *loop, size_t n, aw_future **futures)
{
    return aw_gather(loop, n, futures, AW_GATHER_RETURN_ERRORS);
}

aw_future *
aw_any(aw_loop *loop, size_t n, aw_future **futures)
{
    aw_future *bad;

    if (!loop_usable(loop)) {
        unref_all(n, futures);
        return NULL;
    }
    if ((bad = check_inputs(loop, n, futures, "aw_any")) != NULL)
        return bad;
    if (n == 0)
        return aw__future_failed_new(loop, -EINVAL, aw__format("aw_any: no inputs"));
    return combo_new(loop, K_ANY, n, futures, 0, 0, 0, INFINITY);
}

aw_future *
aw_race(aw_loop *loop, size_t n, aw_future **futures)
{
    aw_future *bad;

    if (!loop_usable(loop)) {
        unref_all(n, futures);
        return NULL;
    }
    if ((bad = check_inputs(loop, n, futures, "aw_race")) != NULL)
        return bad;
    return combo_new(loop, K_RACE, n, futures, 0, 0, 0, INFINITY);
}

aw_future *
aw_wait(aw_loop *loop, size_t n, aw_future **futures, int mode,
        double timeout)
{
    aw_future *bad;

    if (!loop_usable(loop)) {
        unref_all(n, futures);
        return NULL;
    }
    if ((bad = check_inputs(loop, n, futures, "aw_wait")) != NULL)
        return bad;
    if (n == 0 || isnan(timeout) ||
        (mode != AW_FIRST_COMPLETED && mode != AW_FIRST_ERROR &&
         mode != AW_ALL_COMPLETED)) {
        unref_all(n, futures);
        return aw__future_failed_new(loop, -EINVAL,
                             aw__format("aw_wait: %s",
                                    n == 0 ? "no inputs"
                                    : isnan(timeout) ? "timeout is NaN"
                                                     : "unknown mode"));
    }
    if (timeout < 0)
        timeout = 0; /* already past: the next pass */
    return combo_new(loop, K_WAIT, n, futures, 1, 0, mode, timeout);
}

aw_future *const *
aw_combinator_inputs(const aw_future *future, size_t *n)
{
    const aw_future *owner;
    struct inputs *in = NULL;

    if (future == NULL)
        return NULL;
    if (is_combo(future) && ((const struct combo *)future)->in != NULL) {
        in = ((const struct combo *)future)->in;
    } else if (future->state == AW_FUTURE_DONE) {
        owner = (future->flags & F_LINKED) ? future->o.link : future;
        if (owner->o.destroy == inputs_destroy && !(owner->flags & F_TAKEN))
            in = AW__CONTAINER_OF(owner->v.ptr, struct inputs, items);
    }
    if (in == NULL)
        return NULL;
    if (n != NULL)
        *n = in->n;
    return in->items;
}

/* ---- wait_for -------------------------------------------------------------- */

static void
wait_for_stop_timer(struct wait_for *w)
{
    if (w->timer != NULL) {
        aw_handle_cancel(w->timer);
        aw_handle_unref(w->timer);
        w->timer = NULL;
    }
}

static int
wait_for_on_inner(aw_future *inner, void *arg)
{
    struct wait_for *w = arg;
    aw_future *f = &w->base;
    char *msg;

    w->node = NULL;
    w->inner = NULL;
    wait_for_stop_timer(w);
    if (f->xflags & X_CANCEL_REQ) {
        /* Cancelled from outside: that wins, even over a late result. */
        msg = f->v.msg;
        f->v.msg = NULL;
        if (inner->state == AW_FUTURE_FAILED)
            inner->flags |= F_RETRIEVED;
        aw_future_unref(inner);
        aw__future_set_cancelled(f, msg);
    } else if ((f->xflags & X_TIMED_OUT) &&
               inner->state == AW_FUTURE_CANCELLED) {
        aw_future_unref(inner);
        aw__future_set_failed(f, AW_ETIMEDOUT,
                   aw__format("timed out after %g seconds", w->timeout));
    } else {
        aw__future_adopt(f, inner); /* a late result is kept, not lost */
    }
    return 0;
}

static int
wait_for_timeout(aw_loop *loop, void *arg)
{
    struct wait_for *w = arg;

    (void)loop;
    aw_handle_unref(w->timer);
    w->timer = NULL;
    w->base.xflags |= X_TIMED_OUT;
    aw_future_cancel(w->inner, "wait_for timed out");
    return 0;
}

static void
wait_for_cancel(struct wait_for *w, const char *msg)
{
    w->base.xflags |= X_CANCEL_REQ;
    w->base.v.msg = msg != NULL ? aw__strdup(msg) : NULL;
    wait_for_stop_timer(w);
    aw_future_cancel(w->inner, msg);
}

aw_future *
aw_wait_for(aw_future *future, double timeout)
{
    struct wait_for *w;
    aw_loop *loop;

    if (future == NULL)
        return NULL;
    loop = future->loop;
    if (isnan(timeout)) {
        aw_future_unref(future);
        return aw__future_failed_new(loop, -EINVAL,
                             aw__format("aw_wait_for: timeout is NaN"));
    }
    if (future->state != AW_FUTURE_PENDING || (isinf(timeout) && timeout > 0))
        return future; /* nothing to time: the future is its own outcome */
    if (timeout < 0)
        timeout = 0; /* already past: times out on the next pass */
    w = (struct wait_for *)aw__future_alloc(loop, &aw__wait_for_ops);
    if (w == NULL) {
        aw_future_unref(future);
        return aw__future_nomem(loop);
    }
    w->inner = future;
    w->node = NULL;
    w->timer = NULL;
    w->timeout = timeout;
    if (aw__future_attach_node(future, wait_for_on_inner, w, &w->node) != 0) {
        w->inner = NULL;
        aw_future_unref(future);
        aw__future_set_failed(&w->base, -ENOMEM, NULL);
        return &w->base;
    }
    if (aw_loop_call_later(loop, timeout, wait_for_timeout, w, &w->timer) !=
        0) {
        aw__future_detach_node(future, &w->node);
        w->inner = NULL;
        aw_future_unref(future);
        aw__future_set_failed(&w->base, -ENOMEM, NULL);
    }
    return &w->base;
}

/* ---- as_completed ------------------------------------------------------------ */

static void
unref_destroy(void *ptr)
{
    aw_future_unref(ptr);
}

static void
as_completed_give(struct as_completed_fut *a, aw_future *input)
{
    aw_future *f = &a->base;

    f->v.ptr = aw_future_ref(input);
    f->o.destroy = unref_destroy;
    f->state = AW_FUTURE_DONE;
    aw__future_settle(f);
}

/* Drop out[i] (the last takes its place) and the iterator's reference. */
static void
as_completed_drop(aw_as_completed *it, size_t i)
{
    struct as_completed_fut *a = it->out[i];

    it->out[i] = it->out[--it->nout];
    a->it = NULL;
    aw_future_unref(&a->base);
}

/* The index in out[] of the future awaited first, or SIZE_MAX; those
 * cancelled by their holders are dropped and give their turn back. */
static size_t
as_completed_first_watched(aw_as_completed *it)
{
    size_t i = 0, best = SIZE_MAX;

    while (i < it->nout) {
        const aw_future *f = &it->out[i]->base;

        if (f->state != AW_FUTURE_PENDING) {
            it->handed--;
            as_completed_drop(it, i);
            continue;
        }
        if (f->aux != 0 &&
            (best == SIZE_MAX || f->aux < it->out[best]->base.aux))
            best = i;
        i++;
    }
    return best;
}

static int
as_completed_on_input(aw_future *input, void *arg)
{
    aw_as_completed *it = arg;
    size_t i;

    it->registered--;
    i = as_completed_first_watched(it);
    if (i != SIZE_MAX) {
        as_completed_give(it->out[i], input);
        as_completed_drop(it, i);
        return 0;
    }
    it->ready[(it->ready_head + it->ready_len) % it->in->n] = input;
    it->ready_len++;
    return 0;
}

/* A future handed out is awaited: the next input to finish is its, or
 * one that finished already. */
static void
as_completed_watched(aw_future *f)
{
    struct as_completed_fut *a = (struct as_completed_fut *)f;
    aw_as_completed *it = a->it;
    size_t i;

    if (it == NULL)
        return;
    if (++it->watch_seq == 0)
        it->watch_seq = 1;
    f->aux = it->watch_seq;
    if (it->ready_len == 0 && !it->timed_out)
        return;
    for (i = 0; it->out[i] != a; i++)
        ;
    if (it->ready_len > 0) {
        aw_future *input = it->ready[it->ready_head];

        it->ready_head = (it->ready_head + 1) % it->in->n;
        it->ready_len--;
        as_completed_give(a, input);
    } else {
        aw__future_set_failed(f, AW_ETIMEDOUT,
                              aw__format("as_completed timed out"));
    }
    as_completed_drop(it, i);
}

static void
as_completed_cancel(aw_future *f, const char *msg)
{
    /* The iterator drops it when it next looks. */
    aw__future_set_cancelled(f, msg != NULL ? aw__strdup(msg) : NULL);
}

static void
as_completed_detach(aw_as_completed *it)
{
    size_t i;

    for (i = 0; i < it->in->n && it->registered > 0; i++)
        it->registered -= (size_t)aw__future_detach(it->in->items[i],
                                         as_completed_on_input, it);
    it->registered = 0;
}

static int
as_completed_timeout(aw_loop *loop, void *arg)
{
    aw_as_completed *it = arg;
    size_t i;

    (void)loop;
    aw_handle_unref(it->timer);
    it->timer = NULL;
    it->timed_out = 1;
    as_completed_detach(it);
    /* Those awaited now fail (nothing is ready, or they would have it);
     * the others fail when they are awaited. */
    while ((i = as_completed_first_watched(it)) != SIZE_MAX) {
        aw__future_set_failed(&it->out[i]->base, AW_ETIMEDOUT,
                              aw__format("as_completed timed out"));
        as_completed_drop(it, i);
    }
    return 0;
}

aw_as_completed *
aw_as_completed_new(aw_loop *loop, size_t n, aw_future **futures,
                    double timeout)
{
    aw_as_completed *it;
    aw_future *bad;
    size_t i, m;

    if (!loop_usable(loop) || isnan(timeout)) {
        unref_all(n, futures);
        return NULL;
    }
    if ((bad = check_inputs(loop, n, futures, "aw_as_completed")) != NULL) {
        aw_future_unref(bad);
        return NULL;
    }
    it = aw__calloc(1, sizeof(*it));
    if (it == NULL) {
        unref_all(n, futures);
        return NULL;
    }
    it->loop = loop;
    it->in = inputs_new(n, futures, 1);
    if (it->in == NULL) {
        aw__free(it);
        return NULL;
    }
    m = it->in->n;
    it->ready = aw__calloc(m ? m : 1, sizeof(aw_future *));
    it->out = aw__calloc(m ? m : 1, sizeof(*it->out));
    if (it->ready == NULL || it->out == NULL)
        goto fail;
    for (i = 0; i < m; i++) {
        aw_future *f = it->in->items[i];

        if (f->state != AW_FUTURE_PENDING) {
            it->ready[it->ready_len++] = f;
        } else {
            if (aw__future_attach(f, as_completed_on_input, it) != 0)
                goto fail;
            it->registered++;
        }
    }
    if (timeout < 0)
        timeout = 0; /* already past: the next pass */
    if (!isinf(timeout) && it->registered > 0 &&
        aw_loop_call_later(loop, timeout, as_completed_timeout, it,
                           &it->timer) != 0)
        goto fail;
    aw__loop_track(loop, 1);
    return it;

fail:
    as_completed_detach(it);
    inputs_destroy(it->in->items);
    aw__free(it->ready);
    aw__free(it->out);
    aw__free(it);
    return NULL;
}

aw_future *
aw_as_completed_next(aw_as_completed *it)
{
    struct as_completed_fut *a;

    if (it == NULL)
        return NULL;
    (void)as_completed_first_watched(it); /* count turns given back */
    if (it->handed == it->in->n)
        return aw_future_failed(it->loop, AW_EEMPTY,
                                "as_completed: every input was handed out");
    a = (struct as_completed_fut *)aw__future_alloc(it->loop,
                                                    &aw__as_completed_ops);
    if (a == NULL)
        return aw__future_nomem(it->loop);
    a->it = it;
    it->out[it->nout++] = (struct as_completed_fut *)(void *)aw_future_ref(
        &a->base);
    it->handed++;
    return &a->base;
}

void
aw_as_completed_free(aw_as_completed *it)
{
    aw_loop *loop;

    if (it == NULL)
        return;
    loop = it->loop;
    if (it->timer != NULL) {
        aw_handle_cancel(it->timer);
        aw_handle_unref(it->timer);
    }
    as_completed_detach(it);
    while (it->nout > 0) {
        aw_future *f = &it->out[it->nout - 1]->base;

        if (f->state == AW_FUTURE_PENDING)
            aw_future_cancel(f, "as_completed iterator freed");
        as_completed_drop(it, it->nout - 1);
    }
    inputs_destroy(it->in->items);
    aw__free(it->ready);
    aw__free(it->out);
    aw__free(it);
    aw__loop_track(loop, -1);
}

/* ---- freeing ------------------------------------------------------------------ */

static void
report_unretrieved(aw_future *f)
{
    aw__loop_report(f->loop, f->code, NULL, NULL,
                    "future error was never retrieved: %s: %s",
                    aw_err_name(f->code),
                    f->v.msg != NULL ? f->v.msg : aw_strerror(f->code));
}

static void
future_free(aw_future *f)
{
    aw_loop *loop = f->loop;
    struct chain *ch;
    struct wait_for *w;

    switch (f->kind) {
    case K_THEN:
    case K_CATCH:
    case K_FINALLY:
    case K_SHIELD:
        ch = (struct chain *)f;
        if (ch->source != NULL) {
            aw__future_detach_node(ch->source, &ch->node);
            aw_future_unref(ch->source);
        }
        break;
    case K_WAIT_FOR:
        w = (struct wait_for *)f;
        wait_for_stop_timer(w);
        if (w->inner != NULL) {
            aw__future_detach_node(w->inner, &w->node);
            aw_future_unref(w->inner);
        }
        if (f->state == AW_FUTURE_PENDING)
            aw__free(f->v.msg); /* a cancel message kept for later */
        break;
    case K_PLAIN:
        break;
    case K_GATHER:
    case K_ANY:
    case K_RACE:
    case K_WAIT:
        combo_release((struct combo *)f);
        break;
    default:
        if (aw__future_ops(f)->release != NULL)
            aw__future_ops(f)->release(f);
        break;
    }
    switch (f->state) {
    case AW_FUTURE_DONE:
        if (f->flags & F_LINKED)
            aw_future_unref(f->o.link);
        else if (f->o.destroy != NULL)
            f->o.destroy(f->v.ptr);
        break;
    case AW_FUTURE_FAILED:
        if (!(f->flags & F_RETRIEVED))
            report_unretrieved(f);
        aw__free(f->v.msg);
        break;
    case AW_FUTURE_CANCELLED:
        aw__free(f->v.msg);
        break;
    default:
        break;
    }
    if (f->flags & F_EMBEDDED) {
        aw__future_ops(f)->reclaim(f); /* neither pooled nor counted */
        return;
    }
    aw__loop_future_slot(loop)->live[f->kind]--;
    aw__loop_track(loop, -1);
    aw__loop_free(loop, f, aw__future_ops(f)->size);
}

/* Close found work outstanding: how many futures of each kind are still
 * referenced (pending tasks are named one by one by their module). */
static void
future_census(aw_loop *loop)
{
    struct aw__future_slot *slot = aw__loop_future_slot(loop);
    size_t k;

    for (k = 0; k < AW__KINDS_MAX; k++) {
        if (slot->live[k] == 0 || aw__future_kinds[k] == NULL)
            continue;
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "%zu %s future%s still referenced at loop close",
                        slot->live[k], aw__future_kinds[k]->name,
                        slot->live[k] == 1 ? "" : "s");
    }
}

/* ---- this layer's kinds ------------------------------------------------------- */

static void
combo_cancel_op(aw_future *f, const char *msg)
{
    combo_cancel((struct combo *)f, msg);
}

static void
wait_for_cancel_op(aw_future *f, const char *msg)
{
    wait_for_cancel((struct wait_for *)f, msg);
}

/* Chains cancel through cancel_one, which walks up a chain without
 * recursing; their release is future_free's own. */
#define CHAIN_OPS(id, label)                                                 \
    {.name = label, .kind = id, .size = sizeof(struct chain),                \
     .cancel = plain_cancel, .decided = chain_decided}
#define COMBO_OPS(id, label)                                                 \
    {.name = label, .kind = id, .size = sizeof(struct combo),                \
     .cancel = combo_cancel_op, .decided = combo_decided}

const struct aw__future_ops aw__plain_ops = {
    .name = "plain", .kind = K_PLAIN, .flags = AW__OPS_LEAF,
    .size = sizeof(struct aw_future), .cancel = plain_cancel};
const struct aw__future_ops aw__then_ops = CHAIN_OPS(K_THEN, "then");
const struct aw__future_ops aw__catch_ops = CHAIN_OPS(K_CATCH, "catch");
const struct aw__future_ops aw__finally_ops =
    CHAIN_OPS(K_FINALLY, "finally");
const struct aw__future_ops aw__shield_ops = CHAIN_OPS(K_SHIELD, "shield");
const struct aw__future_ops aw__gather_ops = COMBO_OPS(K_GATHER, "gather");
const struct aw__future_ops aw__any_ops = COMBO_OPS(K_ANY, "any");
const struct aw__future_ops aw__race_ops = COMBO_OPS(K_RACE, "race");
const struct aw__future_ops aw__wait_ops = COMBO_OPS(K_WAIT, "wait");
const struct aw__future_ops aw__as_completed_ops = {
    .name = "as_completed", .kind = K_AS_COMPLETED,
    .size = sizeof(struct as_completed_fut), .cancel = as_completed_cancel,
    .watched = as_completed_watched};
const struct aw__future_ops aw__wait_for_ops = {
    .name = "wait_for", .kind = K_WAIT_FOR, .size = sizeof(struct wait_for),
    .cancel = wait_for_cancel_op, .decided = wait_for_decided};

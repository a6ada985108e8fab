/* SPDX-License-Identifier: MIT */
/* loop.c: the event loop.  asyncio's scheduling (ready queue, timer heap)
 * on top of a libevent event_base: one event drives the ready queue, one
 * timer event is armed for the earliest deadline, fds and signals map onto
 * libevent events, and an eventfd wakes the loop for other threads. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <float.h>
#include <stddef.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif

#include <event2/event.h>
#include <event2/thread.h>

#include "await/loop.h"
#include "core-internal.h"
#include "loop-internal.h"

/* Passes that may run back to back without polling for I/O.  Bounds how
 * long a chain of callbacks that keep rescheduling themselves can hold off
 * I/O and timers, while sparing a system call per pass. */
#define MAX_PASSES_PER_POLL 32

/* Handles are carved from slabs of this many and recycled per loop, so
 * that call_soon and call_later do not reach the system allocator. */
#define HANDLES_PER_SLAB 256

/* Objects of the modules above come from per-loop pools, one per size
 * class of 16 bytes up to this size. */
#define POOL_MAX_SIZE 256
#define POOL_CLASSES (POOL_MAX_SIZE / 16)

/* The longest the libevent timer is armed for (asyncio's
 * MAXIMUM_SELECT_TIMEOUT): a later deadline, however far, or too far to
 * be a struct timeval, re-arms it when it fires. */
#define MAX_TIMER_WAIT (24.0 * 3600.0)

/* asyncio's rule for purging cancelled timers from the heap. */
#define MIN_SCHEDULED_TIMERS 100

enum handle_state {
    HANDLE_SCHEDULED,
    HANDLE_RUNNING,
    HANDLE_DONE,
    HANDLE_CANCELLED
};

struct aw_handle {
    aw_callback_fn fn;
    void *arg;
    aw_loop *loop;
    union {
        aw_handle *next; /* in the ready queue or the free list */
        uint64_t seq;    /* in the timer heap: orders equal deadlines */
    } u;
    uint32_t refs;
    uint8_t state;
    uint8_t is_timer;
};

struct timer_entry {
    double when;
    aw_handle *handle;
};

struct io_watch {
    struct event *ev[2]; /* read, write; created on first use */
    aw_callback_fn fn[2];
    void *arg[2];
    aw_loop *loop;
    unsigned char active[2];
};

struct signal_watch {
    struct event *ev;
    aw_callback_fn fn;
    void *arg;
    aw_loop *loop;
    int active;
};

struct ts_call {
    aw_callback_fn fn;
    void *arg;
};

struct aw_loop {
    /* First, so that the modules reach their slots without a call. */
    struct aw__loop_head head;
    struct event_base *base;
    struct event *ready_ev; /* runs the ready queue */
    struct event *timer_ev; /* armed for the earliest timer */
    struct event *wake_ev;  /* reads wake_fd[0] for threadsafe calls */
    int wake_fd[2];

    aw_handle *ready_head;
    aw_handle **ready_tail;
    size_t pending_callbacks; /* scheduled, not cancelled, not run */

    struct timer_entry *heap;
    size_t heap_len, heap_cap;
    size_t timers_cancelled; /* cancelled but still in the heap */
    uint64_t timer_seq;
    double armed_when; /* deadline timer_ev is armed for, or INFINITY */

    struct aw__pool handles;
    size_t reserved_handles; /* promised to aw__loop_call_soon_reserved */
    struct aw__pool pools[POOL_CLASSES];

    struct io_watch **io;
    int io_cap;
    size_t io_active;

    struct signal_watch *signals[NSIG];
    size_t signals_active;

    pthread_mutex_t ts_lock;
    struct ts_call *ts_calls, *ts_spare;
    size_t ts_len, ts_cap, ts_spare_cap;
    int ts_wake_pending;
    int ts_closed;


    aw_exception_handler_fn exc_fn;
    void *exc_arg;
    double slow_callback_duration;
    /* What the loop publishes for a call from outside its callbacks, which
     * may come from another thread (a misuse debug mode reports): read
     * and written atomically, copies of closed and debug, and the thread
     * that runs it (its thread_token; NULL while not running). */
    int pub_closed, pub_debug;
    const void *pub_owner;

    unsigned own_base : 1;
    unsigned running : 1;
    unsigned stopping : 1;
    unsigned stop_pending : 1; /* stop() between runs: for the next run */
    unsigned closed : 1;
    unsigned in_process : 1;
    unsigned ready_armed : 1;
    unsigned debug : 1;
    unsigned select_backend : 1; /* libevent's select: fds < FD_SETSIZE */
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(offsetof(struct aw_loop, head) == 0,
               "the slots must open the loop (loop-internal.h)");
#endif

static __thread aw_loop *running_loop;

/* A thread's identity, for pub_owner: the address of its own copy. */
static __thread char thread_token;

static inline void
publish_active(aw_loop *loop)
{
    __atomic_store_n(&loop->pub_owner,
                     loop->running || loop->in_process ? &thread_token : NULL,
                     __ATOMIC_RELAXED);
}

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void
use_pthreads(void)
{
    evthread_use_pthreads();
}

/* ---- clock -------------------------------------------------------------- */

static double
now_monotonic(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double
aw_loop_time(const aw_loop *loop)
{
    (void)loop;
    return now_monotonic();
}

/* ---- handles ------------------------------------------------------------ */

static inline aw_handle *
handle_alloc(aw_loop *loop)
{
    /* Reserved handles stay on the free list for those who reserved them. */
    if (AW__UNLIKELY(loop->handles.nfree <= loop->reserved_handles) &&
        aw__pool_grow(&loop->handles) != 0)
        return NULL;
    return aw__pool_get(&loop->handles);
}

static inline void
handle_release(aw_loop *loop, aw_handle *h)
{
    if (--h->refs == 0)
        aw__pool_put(&loop->handles, h);
}

aw_handle *
aw_handle_ref(aw_handle *handle)
{
    if (handle != NULL)
        handle->refs++;
    return handle;
}

void
aw_handle_unref(aw_handle *handle)
{
    if (handle != NULL)
        handle_release(handle->loop, handle);
}

double
aw_handle_when(const aw_handle *handle)
{
    size_t i;

    /* The deadline lives in the heap entry only (a timer costs its handle
     * and one entry); looking it up is linear, fine for a rare call. */
    if (handle == NULL || !handle->is_timer ||
        handle->state != HANDLE_SCHEDULED)
        return NAN;
    for (i = 0; i < handle->loop->heap_len; i++)
        if (handle->loop->heap[i].handle == handle)
            return handle->loop->heap[i].when;
    return NAN;
}

int
aw_handle_cancelled(const aw_handle *handle)
{
    return handle != NULL && handle->state == HANDLE_CANCELLED;
}

int
aw_handle_cancel(aw_handle *handle)
{
    aw_loop *loop;

    if (handle == NULL)
        return -EINVAL;
    if (handle->state != HANDLE_SCHEDULED)
        return AW_EINVALSTATE;
    loop = handle->loop;
    handle->state = HANDLE_CANCELLED;
    loop->pending_callbacks--;
    /* The entry stays in its queue and is dropped when reached; the heap
     * is purged when cancelled timers grow to most of it (asyncio). */
    if (handle->is_timer)
        loop->timers_cancelled++;
    return 0;
}

/* ---- reporting ---------------------------------------------------------- */

const char *
aw_callback_name(aw_callback_fn fn, char *buf, size_t size)
{
    Dl_info info;
    void *addr;

    if (buf == NULL || size == 0)
        return buf;
    memcpy(&addr, &fn, sizeof(addr) < sizeof(fn) ? sizeof(addr) : sizeof(fn));
    if (fn == NULL) {
        snprintf(buf, size, "(null)");
    } else if (dladdr(addr, &info) != 0 && info.dli_sname != NULL &&
               info.dli_saddr == addr) {
        snprintf(buf, size, "%s", info.dli_sname);
    } else if (dladdr(addr, &info) != 0 && info.dli_fname != NULL) {
        const char *base = strrchr(info.dli_fname, '/');

        snprintf(buf, size, "%p (%s+0x%lx)", addr,
                 base ? base + 1 : info.dli_fname,
                 (unsigned long)((char *)addr - (char *)info.dli_fbase));
    } else {
        snprintf(buf, size, "%p", addr);
    }
    return buf;
}

/* The first aw_exception_context ended with `duration`: smaller is a size
 * not set; larger comes from a newer header, whose extra fields we skip. */
#define CONTEXT_SIZE_V1                                                      \
    (offsetof(aw_exception_context, duration) + sizeof(double))

static int
context_size_ok(const aw_exception_context *context)
{
    return context != NULL && context->size >= CONTEXT_SIZE_V1;
}

void
aw_loop_default_exception_handler(aw_loop *loop,
                                  const aw_exception_context *context)
{
    (void)loop;
    if (!context_size_ok(context))
        return;
    if (context->code != 0)
        fprintf(stderr, "libawait: %s: %s (%s)\n",
                context->message ? context->message : "error",
                aw_err_name(context->code), aw_strerror(context->code));
    else
        fprintf(stderr, "libawait: %s\n",
                context->message ? context->message : "error");
}

int
aw_loop_call_exception_handler(aw_loop *loop,
                               const aw_exception_context *context)
{
    if (loop == NULL || !context_size_ok(context))
        return -EINVAL;
    if (loop->exc_fn != NULL)
        loop->exc_fn(loop, context, loop->exc_arg);
    else
        aw_loop_default_exception_handler(loop, context);
    return 0;
}

void
aw__loop_report(aw_loop *loop, int code, aw_callback_fn fn, void *arg,
                const char *fmt, ...)
{
    aw_exception_context ctx;
    char message[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    memset(&ctx, 0, sizeof(ctx));
    ctx.size = sizeof(ctx);
    ctx.message = message;
    ctx.code = code;
    ctx.callback = fn;
    ctx.callback_arg = arg;
    aw_loop_call_exception_handler(loop, &ctx);
}

int
aw_loop_set_exception_handler(aw_loop *loop, aw_exception_handler_fn fn,
                              void *arg)
{
    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    loop->exc_fn = fn;
    loop->exc_arg = fn ? arg : NULL;
    return 0;
}

int
aw_loop_set_debug(aw_loop *loop, int enabled)
{
    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    loop->debug = enabled != 0;
    __atomic_store_n(&loop->pub_debug, loop->debug, __ATOMIC_RELAXED);
    loop->head.task.timing = loop->debug;
    return 0;
}

int
aw_loop_get_debug(const aw_loop *loop)
{
    return loop != NULL && loop->debug;
}

int
aw_loop_set_slow_callback_duration(aw_loop *loop, double seconds)
{
    if (loop == NULL || isnan(seconds) || seconds < 0)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    loop->slow_callback_duration = seconds;
    return 0;
}

/* ---- running callbacks -------------------------------------------------- */

/* What ran in a slow callback, in the words of the module that ran it
 * (a task step: the task's name and where it awaits now). */
static int
describe_slow(aw_loop *loop, char *buf, size_t size)
{
    const struct aw__loop_hooks *h[] = {loop->head.task.hooks,
                                        loop->head.net.hooks};
    size_t i;

    for (i = 0; i < sizeof(h) / sizeof(h[0]); i++)
        if (h[i] != NULL && h[i]->describe_slow != NULL &&
            h[i]->describe_slow(loop, buf, size))
            return 1;
    return 0;
}

static void
run_callback_debug(aw_loop *loop, aw_callback_fn fn, void *arg, int rc,
                   double t0)
{
    double dt = now_monotonic() - t0;

    if (dt >= loop->slow_callback_duration) {
        aw_exception_context ctx;
        char name[256], message[320];

        if (!describe_slow(loop, name, sizeof(name))) {
            char cb[200];

            aw_callback_name(fn, cb, sizeof(cb));
            snprintf(name, sizeof(name), "callback %s", cb);
        }
        snprintf(message, sizeof(message),
                 "Executing %s took %.3f seconds", name, dt);
        memset(&ctx, 0, sizeof(ctx));
        ctx.size = sizeof(ctx);
        ctx.message = message;
        ctx.callback = fn;
        ctx.callback_arg = arg;
        ctx.duration = dt;
        aw_loop_call_exception_handler(loop, &ctx);
    }
    (void)rc;
}

static void
report_callback_error(aw_loop *loop, aw_callback_fn fn, void *arg, int rc)
{
    char name[256];

    aw_callback_name(fn, name, sizeof(name));
    aw__loop_report(loop, rc, fn, arg, "Exception in callback %s", name);
}

static inline void
run_callback(aw_loop *loop, aw_callback_fn fn, void *arg)
{
    int rc;

    if (AW__UNLIKELY(loop->debug)) {
        double t0 = now_monotonic();

        /* The task module times the steps this callback runs. */
        loop->head.task.slowest[0] = '\0';
        loop->head.task.slowest_time = 0;
        rc = fn(loop, arg);
        run_callback_debug(loop, fn, arg, rc, t0);
    } else {
        rc = fn(loop, arg);
    }
    if (AW__UNLIKELY(rc < 0))
        report_callback_error(loop, fn, arg, rc);
}

/* ---- the timer heap (4-ary min-heap on deadline, then sequence) --------- */

static inline int
entry_before(const struct timer_entry *a, const struct timer_entry *b)
{
    return a->when < b->when ||
           (a->when == b->when && a->handle->u.seq < b->handle->u.seq);
}

static void
heap_sift_up(struct timer_entry *heap, size_t i, struct timer_entry e)
{
    while (i > 0) {
        size_t parent = (i - 1) / 4;

        if (!entry_before(&e, &heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = e;
}

static void
heap_sift_down(struct timer_entry *heap, size_t len, size_t i,
               struct timer_entry e)
{
    for (;;) {
        size_t first = 4 * i + 1, best, c, end;

        if (first >= len)
            break;
        best = first;
        end = first + 4 < len ? first + 4 : len;
        for (c = first + 1; c < end; c++)
            if (entry_before(&heap[c], &heap[best]))
                best = c;
        if (!entry_before(&heap[best], &e))
            break;
        heap[i] = heap[best];
        i = best;
    }
    heap[i] = e;
}

static int
heap_push(aw_loop *loop, double when, aw_handle *h)
{
    struct timer_entry e;

    if (AW__UNLIKELY(loop->heap_len == loop->heap_cap)) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        struct timer_entry *heap =
            aw__reallocarray(loop->heap, cap, sizeof(*heap));

        if (heap == NULL)
            return -ENOMEM;
        loop->heap = heap;
        loop->heap_cap = cap;
    }
    e.when = when;
    e.handle = h;
    heap_sift_up(loop->heap, loop->heap_len++, e);
    return 0;
}

static aw_handle *
heap_pop(aw_loop *loop)
{
    aw_handle *top = loop->heap[0].handle;

    if (--loop->heap_len > 0)
        heap_sift_down(loop->heap, loop->heap_len, 0,
                       loop->heap[loop->heap_len]);
    return top;
}

static void
heap_purge_cancelled(aw_loop *loop)
{
    size_t i, n = 0;

    for (i = 0; i < loop->heap_len; i++) {
        aw_handle *h = loop->heap[i].handle;

        if (h->state == HANDLE_CANCELLED)
            handle_release(loop, h);
        else
            loop->heap[n++] = loop->heap[i];
    }
    loop->heap_len = n;
    loop->timers_cancelled = 0;
    if (n > 1)
        for (i = (n - 2) / 4 + 1; i-- > 0;)
            heap_sift_down(loop->heap, n, i, loop->heap[i]);
}

static void
arm_timer(aw_loop *loop)
{
    double when;

    if (loop->heap_len > MIN_SCHEDULED_TIMERS &&
        loop->timers_cancelled * 2 > loop->heap_len) {
        heap_purge_cancelled(loop);
    } else {
        while (loop->heap_len > 0 &&
               loop->heap[0].handle->state == HANDLE_CANCELLED) {
            loop->timers_cancelled--;
            handle_release(loop, heap_pop(loop));
        }
    }
    /* A deadline of INFINITY is never: nothing to arm for. */
    if (loop->heap_len == 0 || loop->heap[0].when == INFINITY) {
        if (loop->armed_when != INFINITY) {
            event_del(loop->timer_ev);
            loop->armed_when = INFINITY;
        }
        return;
    }
    when = loop->heap[0].when;
    if (when != loop->armed_when) {
        double delay = when - now_monotonic();
        struct timeval tv = {0, 0};

        if (delay > MAX_TIMER_WAIT)
            delay = MAX_TIMER_WAIT; /* fires early: re-armed then */
        if (delay > 0) {
            /* Round up: a timer that fires early only costs a re-arm.
             * (Integer arithmetic: no libm, whatever the optimisation.)
             * delay is at most MAX_TIMER_WAIT, so the count fits. */
            double exact = delay * 1e6;
            long long usec = (long long)exact;

            if ((double)usec < exact)
                usec++;
            tv.tv_sec = (time_t)(usec / 1000000);
            tv.tv_usec = (suseconds_t)(usec % 1000000);
        }
        event_add(loop->timer_ev, &tv);
        loop->armed_when = when;
    }
}

/* ---- the ready queue and the passes ------------------------------------- */

static inline void
ready_append(aw_loop *loop, aw_handle *h)
{
    h->u.next = NULL;
    *loop->ready_tail = h;
    loop->ready_tail = &h->u.next;
}

static void
move_due_timers(aw_loop *loop)
{
    double end;

    if (loop->heap_len == 0)
        return;
    end = now_monotonic();
    while (loop->heap_len > 0 && loop->heap[0].when <= end) {
        aw_handle *h = heap_pop(loop);

        if (h->state == HANDLE_CANCELLED) {
            loop->timers_cancelled--;
            handle_release(loop, h);
            continue;
        }
        ready_append(loop, h);
    }
}

static void
run_pass(aw_loop *loop)
{
    aw_handle *h = loop->ready_head;

    /* Detach the queue: what this pass schedules waits for the next. */
    loop->ready_head = NULL;
    loop->ready_tail = &loop->ready_head;
    while (h != NULL) {
        aw_handle *next = h->u.next;

        if (h->state == HANDLE_SCHEDULED) {
            h->state = HANDLE_RUNNING;
            loop->pending_callbacks--;
            run_callback(loop, h->fn, h->arg);
            h->state = HANDLE_DONE;
        }
        handle_release(loop, h);
        h = next;
    }
}

/* A stop requested from one of the loop's callbacks ends the dispatch
 * under way, the loop's run or libevent's own. */
static void
stop_dispatch(aw_loop *loop)
{
    event_base_loopbreak(loop->base);
    if (!loop->running)
        loop->stopping = 0; /* the base is under libevent's dispatch */
}

static void
loop_process(aw_loop *loop)
{
    aw_loop *saved = running_loop;
    int passes = 0;

    running_loop = loop;
    loop->in_process = 1;
    publish_active(loop);
    for (;;) {
        move_due_timers(loop);
        if (loop->ready_head == NULL)
            break;
        run_pass(loop);
        if (loop->stopping) {
            stop_dispatch(loop);
            break;
        }
        if (++passes == MAX_PASSES_PER_POLL)
            break;
    }
    loop->in_process = 0;
    publish_active(loop);
    running_loop = saved;
    if (loop->ready_head != NULL && !loop->ready_armed) {
        /* A zero timeout, not event_active: timeouts are processed after
         * the poll, so I/O gets its turn before the next passes. */
        static const struct timeval zero = {0, 0};

        loop->ready_armed = 1;
        event_add(loop->ready_ev, &zero);
    }
    if (!loop->closed)
        arm_timer(loop);
}

static void
ready_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_loop *loop = arg;

    (void)fd;
    (void)what;
    loop->ready_armed = 0;
    loop_process(loop);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_loop *loop = arg;

    (void)fd;
    (void)what;
    loop->armed_when = INFINITY;
    loop_process(loop);
}

static inline void
ready_wake(aw_loop *loop)
{
    if (!loop->in_process && !loop->ready_armed) {
        loop->ready_armed = 1;
        event_active(loop->ready_ev, EV_TIMEOUT, 0);
    }
}

static inline int
check_schedule(aw_loop *loop, aw_callback_fn fn)
{
    if (AW__UNLIKELY(loop == NULL || fn == NULL))
        return -EINVAL;
    if (AW__LIKELY(running_loop == loop)) /* in its callbacks: its thread */
        return AW__UNLIKELY(loop->closed) ? AW_ECLOSED : 0;
    /* Outside them, maybe on another thread: only what is published. */
    if (AW__UNLIKELY(__atomic_load_n(&loop->pub_closed, __ATOMIC_RELAXED)))
        return AW_ECLOSED;
    if (AW__UNLIKELY(__atomic_load_n(&loop->pub_debug, __ATOMIC_RELAXED))) {
        const void *owner = __atomic_load_n(&loop->pub_owner, __ATOMIC_RELAXED);

        if (owner != NULL && owner != &thread_token)
            return AW_EWRONGTHREAD; /* it runs, on another thread */
    }
    return 0;
}

/* A scheduled handle for fn(arg); the caller's reference too when
 * handlep is not NULL. */
static inline void
handle_init(aw_loop *loop, aw_handle *h, aw_callback_fn fn, void *arg,
            int is_timer, aw_handle **handlep)
{
    h->fn = fn;
    h->arg = arg;
    h->loop = loop;
    h->state = HANDLE_SCHEDULED;
    h->is_timer = is_timer;
    h->refs = 1;
    if (handlep != NULL) {
        h->refs = 2;
        *handlep = h;
    }
}

int
aw_loop_call_soon(aw_loop *loop, aw_callback_fn fn, void *arg,
                  aw_handle **handlep)
{
    aw_handle *h;
    int rc = check_schedule(loop, fn);

    if (AW__UNLIKELY(rc != 0))
        return rc;
    h = handle_alloc(loop);
    if (AW__UNLIKELY(h == NULL))
        return -ENOMEM;
    handle_init(loop, h, fn, arg, 0, handlep);
    loop->pending_callbacks++;
    ready_append(loop, h);
    ready_wake(loop);
    return 0;
}

int
aw_loop_call_at(aw_loop *loop, double when, aw_callback_fn fn, void *arg,
                 aw_handle **handlep)
{
    aw_handle *h;
    int rc = check_schedule(loop, fn);

    if (AW__UNLIKELY(rc != 0))
        return rc;
    if (AW__UNLIKELY(isnan(when)))
        return -EINVAL;
    if (AW__UNLIKELY(when == -INFINITY))
        when = -DBL_MAX; /* long past: the next pass, first */
    h = handle_alloc(loop);
    if (AW__UNLIKELY(h == NULL))
        return -ENOMEM;
    handle_init(loop, h, fn, arg, 1, NULL);
    h->u.seq = loop->timer_seq++;
    if (AW__UNLIKELY(heap_push(loop, when, h) != 0)) {
        handle_release(loop, h);
        return -ENOMEM;
    }
    if (handlep != NULL) {
        h->refs = 2;
        *handlep = h;
    }
    loop->pending_callbacks++;
    /* Inside a pass the timer is re-armed when the pass ends. */
    if (!loop->in_process && when < loop->armed_when)
        arm_timer(loop);
    return 0;
}

int
aw_loop_call_later(aw_loop *loop, double delay, aw_callback_fn fn, void *arg,
                   aw_handle **handlep)
{
    if (AW__UNLIKELY(isnan(delay)))
        return loop != NULL && loop->closed ? AW_ECLOSED : -EINVAL;
    /* A delay < 0 is a deadline already past: the next pass, in the
     * order of the deadlines (asyncio). */
    return aw_loop_call_at(loop, now_monotonic() + delay, fn, arg, handlep);
}

/* ---- thread-safe calls -------------------------------------------------- */

static void
wake_fd_write(aw_loop *loop)
{
#ifdef HAVE_SYS_EVENTFD_H
    uint64_t one = 1;
    ssize_t n;

    do
        n = write(loop->wake_fd[1], &one, sizeof(one));
    while (n < 0 && errno == EINTR);
#else
    char c = 0;
    ssize_t n;

    do
        n = write(loop->wake_fd[1], &c, 1);
    while (n < 0 && errno == EINTR);
#endif
    /* EAGAIN means a wake-up is already waiting to be read: enough. */
    (void)n;
}

static void drain_threadsafe(aw_loop *loop);

/* From the loop's own thread, inside its run or a callback: one queue with
 * call_soon, as asyncio has, so that the order of the calls is kept.  Calls
 * still queued under the lock (from this thread before the run, or from
 * others) join the ready queue first: a thread's calls run in order. */
static int
call_soon_in_loop_thread(aw_loop *loop, aw_callback_fn fn, void *arg)
{
    size_t queued;

    pthread_mutex_lock(&loop->ts_lock);
    queued = loop->ts_len;
    pthread_mutex_unlock(&loop->ts_lock);
    if (queued > 0)
        drain_threadsafe(loop);
    return aw_loop_call_soon(loop, fn, arg, NULL);
}

int
aw_loop_call_soon_threadsafe(aw_loop *loop, aw_callback_fn fn, void *arg)
{
    int wake, rc = 0;

    if (loop == NULL || fn == NULL)
        return -EINVAL;
    if (running_loop == loop)
        return call_soon_in_loop_thread(loop, fn, arg);
    pthread_mutex_lock(&loop->ts_lock);
    if (loop->ts_closed) {
        rc = AW_ECLOSED;
    } else if (loop->ts_len == loop->ts_cap) {
        size_t cap = loop->ts_cap ? loop->ts_cap * 2 : 64;
        struct ts_call *calls =
            aw__reallocarray(loop->ts_calls, cap, sizeof(*calls));

        if (calls == NULL) {
            rc = -ENOMEM;
        } else {
            loop->ts_calls = calls;
            loop->ts_cap = cap;
        }
    }
    if (rc != 0) {
        pthread_mutex_unlock(&loop->ts_lock);
        return rc;
    }
    loop->ts_calls[loop->ts_len].fn = fn;
    loop->ts_calls[loop->ts_len].arg = arg;
    loop->ts_len++;
    wake = !loop->ts_wake_pending;
    loop->ts_wake_pending = 1;
    pthread_mutex_unlock(&loop->ts_lock);
    if (wake)
        wake_fd_write(loop);
    return 0;
}

/* Move the calls other threads queued into the ready queue, in order. */
static void
drain_threadsafe(aw_loop *loop)
{
    struct ts_call *calls;
    size_t i, n, cap;

    /* Swap buffers under the lock; schedule outside it. */
    pthread_mutex_lock(&loop->ts_lock);
    calls = loop->ts_calls;
    n = loop->ts_len;
    cap = loop->ts_cap;
    loop->ts_calls = loop->ts_spare;
    loop->ts_cap = loop->ts_spare_cap;
    loop->ts_len = 0;
    loop->ts_wake_pending = 0;
    pthread_mutex_unlock(&loop->ts_lock);
    for (i = 0; i < n; i++) {
        aw_handle *h = handle_alloc(loop);

        if (AW__UNLIKELY(h == NULL)) {
            /* Out of memory: deliver the rest now, in order, rather than
             * lose them; they merely run ahead of the ready queue. */
            aw__loop_report(loop, -ENOMEM, NULL, NULL,
                            "call_soon_threadsafe: %zu calls run early",
                            n - i);
            for (; i < n; i++)
                run_callback(loop, calls[i].fn, calls[i].arg);
            break;
        }
        handle_init(loop, h, calls[i].fn, calls[i].arg, 0, NULL);
        loop->pending_callbacks++;
        ready_append(loop, h);
    }
    loop->ts_spare = calls;
    loop->ts_spare_cap = cap;
    if (loop->ready_head != NULL)
        ready_wake(loop);
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    char buf[64];

    (void)what;
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    drain_threadsafe(arg);
}

/* ---- creation, running, closing ----------------------------------------- */

static int
wake_fd_open(int fds[2])
{
#ifdef HAVE_SYS_EVENTFD_H
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    if (fd < 0)
        return -errno;
    fds[0] = fds[1] = fd;
    return 0;
#else
    if (pipe(fds) != 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    return 0;
#endif
}

static void
wake_fd_close(int fds[2])
{
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0 && fds[1] != fds[0])
        close(fds[1]);
    fds[0] = fds[1] = -1;
}

static void
loop_release_resources(aw_loop *loop)
{
    int i;

    if (loop->head.net.hooks != NULL && loop->head.net.hooks->release)
        loop->head.net.hooks->release(loop);
    if (loop->head.exec.hooks != NULL && loop->head.exec.hooks->release)
        loop->head.exec.hooks->release(loop);
    if (loop->head.task.hooks != NULL && loop->head.task.hooks->release)
        loop->head.task.hooks->release(loop);
    if (loop->head.future.hooks != NULL && loop->head.future.hooks->release)
        loop->head.future.hooks->release(loop);
    if (loop->ready_ev)
        event_free(loop->ready_ev);
    if (loop->timer_ev)
        event_free(loop->timer_ev);
    if (loop->wake_ev)
        event_free(loop->wake_ev);
    loop->ready_ev = loop->timer_ev = loop->wake_ev = NULL;
    wake_fd_close(loop->wake_fd);
    for (i = 0; i < loop->io_cap; i++) {
        struct io_watch *w = loop->io[i];

        if (w == NULL)
            continue;
        if (w->ev[0])
            event_free(w->ev[0]);
        if (w->ev[1])
            event_free(w->ev[1]);
        aw__free(w);
    }
    aw__free(loop->io);
    loop->io = NULL;
    loop->io_cap = 0;
    for (i = 0; i < NSIG; i++) {
        if (loop->signals[i] != NULL) {
            if (loop->signals[i]->ev)
                event_free(loop->signals[i]->ev);
            aw__free(loop->signals[i]);
            loop->signals[i] = NULL;
        }
    }
    aw__pool_destroy(&loop->handles);
    for (i = 0; i < POOL_CLASSES; i++)
        aw__pool_destroy(&loop->pools[i]);
    aw__free(loop->heap);
    loop->heap = NULL;
    loop->heap_len = loop->heap_cap = 0;
    aw__free(loop->ts_calls);
    aw__free(loop->ts_spare);
    loop->ts_calls = loop->ts_spare = NULL;
}

static int
loop_init(aw_loop **loopp, struct event_base *base, int own_base)
{
    aw_loop *loop;
    int rc;

    /* Not for locks (our bases have none): libevent needs thread ids to
     * tell whether a base is dispatching, and without them
     * event_base_get_running_event() crashes on an idle base.  Once per
     * process: it rewrites libevent's global callbacks, which a loop
     * running in another thread reads. */
    pthread_once(&evthread_once, use_pthreads);
    loop = aw__calloc(1, sizeof(*loop));
    if (loop == NULL)
        return -ENOMEM;
    loop->base = base;
    loop->own_base = own_base != 0;
    loop->ready_tail = &loop->ready_head;
    loop->armed_when = INFINITY;
    loop->slow_callback_duration = 0.1;
    loop->wake_fd[0] = loop->wake_fd[1] = -1;
    loop->select_backend = event_base_get_method(base) != NULL &&
                           strcmp(event_base_get_method(base), "select") == 0;
    aw__pool_init(&loop->handles, sizeof(aw_handle), HANDLES_PER_SLAB);
    for (int i = 0; i < POOL_CLASSES; i++)
        aw__pool_init(&loop->pools[i], (size_t)(i + 1) * 16,
                      i < 4 ? 256 : 64);
    if (pthread_mutex_init(&loop->ts_lock, NULL) != 0) {
        aw__free(loop);
        return -ENOMEM;
    }
    rc = wake_fd_open(loop->wake_fd);
    if (rc != 0)
        goto fail;
    rc = -ENOMEM;
    loop->ready_ev = event_new(base, -1, 0, ready_cb, loop);
    loop->timer_ev = event_new(base, -1, 0, timer_cb, loop);
    loop->wake_ev = event_new(base, loop->wake_fd[0], EV_READ | EV_PERSIST,
                              wake_cb, loop);
    if (!loop->ready_ev || !loop->timer_ev || !loop->wake_ev)
        goto fail;
    if (event_add(loop->wake_ev, NULL) != 0) {
        rc = -EIO;
        goto fail;
    }
    *loopp = loop;
    return 0;

fail:
    loop_release_resources(loop);
    pthread_mutex_destroy(&loop->ts_lock);
    aw__free(loop);
    return rc;
}

int
aw_loop_new(aw_loop **loopp)
{
    struct event_config *cfg;
    struct event_base *base;
    int rc;

    if (loopp == NULL)
        return -EINVAL;
    cfg = event_config_new();
    if (cfg == NULL)
        return -ENOMEM;
    /* No EVENT_BASE_FLAG_PRECISE_TIMER: with it libevent's epoll backend
     * re-arms a timerfd before every wait, one more system call per pass
     * of the loop.  The loop keeps its own monotonic clock for its timer
     * heap; libevent's millisecond waits, rounded up, only wake it, and a
     * wake-up a little early costs one re-arm. */
    /* One loop, one thread: the base is only touched from the loop's
     * thread (other threads go through call_soon_threadsafe, which has
     * its own lock and wakes the loop with an eventfd), so it needs no
     * lock of its own. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base == NULL)
        return -EIO;
    rc = loop_init(loopp, base, 1);
    if (rc != 0)
        event_base_free(base);
    return rc;
}

int
aw_loop_new_with_base(aw_loop **loopp, struct event_base *base)
{
    if (loopp == NULL || base == NULL)
        return -EINVAL;
    return loop_init(loopp, base, 0);
}

struct event_base *
aw_loop_get_base(aw_loop *loop)
{
    return loop ? loop->base : NULL;
}

aw_loop *
aw_get_running_loop(void)
{
    return running_loop;
}

int
aw_loop_is_running(const aw_loop *loop)
{
    return loop != NULL && loop->running;
}

int
aw_loop_is_closed(const aw_loop *loop)
{
    return loop != NULL && loop->closed;
}

static int
check_can_run(aw_loop *loop)
{
    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    if (loop->running || loop->in_process || running_loop != NULL)
        return AW_ERUNNING;
    return 0;
}

static int
run_iterations(aw_loop *loop, int once, int nowait)
{
    int rc = 0;

    loop->running = 1;
    publish_active(loop);
    loop->stopping = loop->stop_pending;
    loop->stop_pending = 0;
    running_loop = loop;
    for (;;) {
        int flags = EVLOOP_ONCE;

        if (nowait || loop->stopping)
            flags |= EVLOOP_NONBLOCK;
        if (event_base_loop(loop->base, flags) < 0) {
            rc = -EIO;
            break;
        }
        if (once || loop->stopping)
            break;
    }
    loop->stopping = 0;
    loop->running = 0;
    publish_active(loop);
    running_loop = NULL;
    return rc;
}

int
aw_loop_run_forever(aw_loop *loop)
{
    int rc = check_can_run(loop);

    if (rc != 0)
        return rc;
    return run_iterations(loop, 0, 0);
}

int
aw_loop_run_once(aw_loop *loop, int flags)
{
    int rc = check_can_run(loop);

    if (rc != 0)
        return rc;
    if (flags & ~AW_RUN_NOWAIT)
        return -EINVAL;
    /* Ready callbacks mean there is nothing to wait for. */
    return run_iterations(loop, 1,
                          (flags & AW_RUN_NOWAIT) || loop->ready_head != NULL);
}

int
aw_loop_stop(aw_loop *loop)
{
    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    if (loop->running || loop->in_process) {
        loop->stopping = 1;
        if (!loop->in_process)
            event_base_loopbreak(loop->base); /* from a libevent callback */
        return 0;
    }
    /* Not in a run nor in one of the loop's callbacks: between runs, or
     * in an application's libevent callback under libevent's own dispatch
     * of the base.  Which one cannot be asked of libevent: its
     * event_base_get_running_event() is undefined (it crashes) outside a
     * callback.  So do what each needs: the stop is kept for the next run
     * (asyncio), and a dispatch under way is broken; libevent forgets the
     * break when a dispatch starts, so it is harmless between runs. */
    loop->stop_pending = 1;
    event_base_loopbreak(loop->base);
    return 0;
}

static size_t
outstanding_threadsafe(aw_loop *loop)
{
    size_t n;

    pthread_mutex_lock(&loop->ts_lock);
    n = loop->ts_len;
    pthread_mutex_unlock(&loop->ts_lock);
    return n;
}

/* Each module names its live objects, from the top down. */
static void
census(aw_loop *loop)
{
    const struct aw__loop_hooks *h[] = {loop->head.net.hooks,
                                        loop->head.exec.hooks,
                                        loop->head.task.hooks,
                                        loop->head.future.hooks};
    size_t i;

    for (i = 0; i < sizeof(h) / sizeof(h[0]); i++)
        if (h[i] != NULL && h[i]->census != NULL)
            h[i]->census(loop);
}

int
aw_loop_close(aw_loop *loop)
{
    size_t ts, held;

    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return 0;
    if (loop->running || loop->in_process)
        return AW_ERUNNING;
    /* Drop cancelled entries so that they do not count as outstanding. */
    if (loop->ready_head != NULL && loop->pending_callbacks == 0) {
        aw_handle *h = loop->ready_head;

        loop->ready_head = NULL;
        loop->ready_tail = &loop->ready_head;
        while (h != NULL) {
            aw_handle *next = h->u.next;

            handle_release(loop, h);
            h = next;
        }
    }
    if (loop->pending_callbacks == 0)
        heap_purge_cancelled(loop);
    ts = outstanding_threadsafe(loop);
    held = loop->handles.live - loop->heap_len;
    if (loop->pending_callbacks || ts || loop->io_active ||
        loop->signals_active || held || loop->head.live_objects) {
        census(loop);
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "loop not closed: %zu callbacks and timers, %zu "
                        "thread-safe calls, %zu fd watchers, %zu signal "
                        "handlers pending; %zu handles and %zu objects "
                        "still referenced",
                        loop->pending_callbacks, ts, loop->io_active,
                        loop->signals_active, held, loop->head.live_objects);
        return AW_EBUSY;
    }
    pthread_mutex_lock(&loop->ts_lock);
    loop->ts_closed = 1;
    pthread_mutex_unlock(&loop->ts_lock);
    loop_release_resources(loop);
    loop->closed = 1;
    __atomic_store_n(&loop->pub_closed, 1, __ATOMIC_RELAXED);
    return 0;
}

int
aw_loop_free(aw_loop *loop)
{
    int rc;

    if (loop == NULL)
        return 0;
    rc = aw_loop_close(loop);
    if (rc != 0)
        return rc;
    if (loop->own_base)
        event_base_free(loop->base);
    pthread_mutex_destroy(&loop->ts_lock);
    aw__free(loop);
    return 0;
}

/* ---- file descriptors --------------------------------------------------- */

static void
io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct io_watch *w = arg;
    aw_loop *loop = w->loop, *saved = running_loop;
    int dir = (what & EV_WRITE) ? 1 : 0;

    (void)fd;
    running_loop = loop;
    loop->in_process = 1;
    publish_active(loop);
    run_callback(loop, w->fn[dir], w->arg[dir]);
    loop->in_process = 0;
    publish_active(loop);
    running_loop = saved;
    if (loop->stopping)
        stop_dispatch(loop);
    if (loop->ready_head != NULL)
        ready_wake(loop);
    arm_timer(loop);
}

static int
check_fd(int fd)
{
    struct stat st;

    if (fd < 0 || fcntl(fd, F_GETFD) == -1)
        return -EBADF;
    if (fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
        return -EPERM;
    return 0;
}

static int
add_io(aw_loop *loop, int fd, int dir, aw_callback_fn fn, void *arg)
{
    struct io_watch *w;
    int rc;

    if (loop == NULL || fn == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    rc = check_fd(fd);
    if (rc == 0)
        rc = aw__loop_fd_watchable(loop, fd);
    if (rc != 0)
        return rc;
    if (fd >= loop->io_cap) {
        int cap = loop->io_cap ? loop->io_cap : 64;
        struct io_watch **io;

        while (cap <= fd)
            cap *= 2;
        io = aw__reallocarray(loop->io, (size_t)cap, sizeof(*io));
        if (io == NULL)
            return -ENOMEM;
        memset(io + loop->io_cap, 0,
               (size_t)(cap - loop->io_cap) * sizeof(*io));
        loop->io = io;
        loop->io_cap = cap;
    }
    w = loop->io[fd];
    if (w == NULL) {
        w = aw__calloc(1, sizeof(*w));
        if (w == NULL)
            return -ENOMEM;
        w->loop = loop;
        loop->io[fd] = w;
    }
    if (w->ev[dir] == NULL) {
        w->ev[dir] = event_new(loop->base, fd,
                               (dir ? EV_WRITE : EV_READ) | EV_PERSIST, io_cb,
                               w);
        if (w->ev[dir] == NULL)
            return -ENOMEM;
    } else if (!w->active[dir] && event_get_fd(w->ev[dir]) != fd) {
        return -EINVAL; /* cannot happen: the table is indexed by fd */
    }
    w->fn[dir] = fn;
    w->arg[dir] = arg;
    if (!w->active[dir]) {
        if (event_add(w->ev[dir], NULL) != 0)
            return -EPERM;
        w->active[dir] = 1;
        loop->io_active++;
    }
    return 0;
}

static int
remove_io(aw_loop *loop, int fd, int dir)
{
    struct io_watch *w;

    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    if (fd < 0)
        return -EBADF;
    if (fd >= loop->io_cap || (w = loop->io[fd]) == NULL || !w->active[dir])
        return 0;
    /* The event is kept for the fd's next watcher: freeing it here could
     * free it under its own running callback. */
    event_del(w->ev[dir]);
    w->active[dir] = 0;
    w->fn[dir] = NULL;
    w->arg[dir] = NULL;
    loop->io_active--;
    return 1;
}

int
aw_loop_add_reader(aw_loop *loop, int fd, aw_callback_fn fn, void *arg)
{
    return add_io(loop, fd, 0, fn, arg);
}

int
aw_loop_add_writer(aw_loop *loop, int fd, aw_callback_fn fn, void *arg)
{
    return add_io(loop, fd, 1, fn, arg);
}

int
aw_loop_remove_reader(aw_loop *loop, int fd)
{
    return remove_io(loop, fd, 0);
}

int
aw_loop_remove_writer(aw_loop *loop, int fd)
{
    return remove_io(loop, fd, 1);
}

/* ---- signals ------------------------------------------------------------ */

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct signal_watch *s = arg;
    aw_loop *loop = s->loop, *saved = running_loop;

    (void)sig;
    (void)what;
    if (!s->active)
        return;
    running_loop = loop;
    loop->in_process = 1;
    publish_active(loop);
    run_callback(loop, s->fn, s->arg);
    loop->in_process = 0;
    publish_active(loop);
    running_loop = saved;
    if (loop->stopping)
        stop_dispatch(loop);
    if (loop->ready_head != NULL)
        ready_wake(loop);
    arm_timer(loop);
}

int
aw_loop_add_signal_handler(aw_loop *loop, int signum, aw_callback_fn fn,
                           void *arg)
{
    struct signal_watch *s;

    if (loop == NULL || fn == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    if (signum <= 0 || signum >= NSIG || signum == SIGKILL ||
        signum == SIGSTOP)
        return -EINVAL;
    s = loop->signals[signum];
    if (s == NULL) {
        s = aw__calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        s->loop = loop;
        s->ev = evsignal_new(loop->base, signum, signal_cb, s);
        if (s->ev == NULL) {
            aw__free(s);
            return -ENOMEM;
        }
        loop->signals[signum] = s;
    }
    s->fn = fn;
    s->arg = arg;
    if (!s->active) {
        if (evsignal_add(s->ev, NULL) != 0)
            return -EINVAL;
        s->active = 1;
        loop->signals_active++;
    }
    return 0;
}

int
aw_loop_remove_signal_handler(aw_loop *loop, int signum)
{
    struct signal_watch *s;

    if (loop == NULL)
        return -EINVAL;
    if (loop->closed)
        return AW_ECLOSED;
    if (signum <= 0 || signum >= NSIG)
        return -EINVAL;
    s = loop->signals[signum];
    if (s == NULL || !s->active)
        return 0;
    evsignal_del(s->ev);
    s->active = 0;
    loop->signals_active--;
    return 1;
}

/* ---- for the modules above --------------------------------------------- */

int
aw__loop_fd_watchable(aw_loop *loop, int fd)
{
    /* libevent's select backend would write past its fd_set (glibc's
     * fortified FD_SET aborts the process instead). */
    if (loop->select_backend && fd >= FD_SETSIZE)
        return -EMFILE;
    return 0;
}

void *
aw__loop_alloc(aw_loop *loop, size_t size)
{
    if (AW__UNLIKELY(size == 0 || size > POOL_MAX_SIZE))
        return aw__malloc(size);
    return aw__pool_get(&loop->pools[(size - 1) / 16]);
}

void
aw__loop_free(aw_loop *loop, void *ptr, size_t size)
{
    if (ptr == NULL)
        return;
    if (AW__UNLIKELY(size == 0 || size > POOL_MAX_SIZE))
        aw__free(ptr);
    else
        aw__pool_put(&loop->pools[(size - 1) / 16], ptr);
}

int
aw__loop_reserve(aw_loop *loop)
{
    if (loop->handles.nfree <= loop->reserved_handles &&
        aw__pool_grow(&loop->handles) != 0)
        return -ENOMEM;
    loop->reserved_handles++;
    return 0;
}

void
aw__loop_unreserve(aw_loop *loop)
{
    loop->reserved_handles--;
}

void
aw__loop_call_soon_reserved(aw_loop *loop, aw_callback_fn fn, void *arg)
{
    aw_handle *h;

    loop->reserved_handles--;
    h = aw__pool_get(&loop->handles); /* cannot fail: it was reserved */
    handle_init(loop, h, fn, arg, 0, NULL);
    loop->pending_callbacks++;
    ready_append(loop, h);
    ready_wake(loop);
}

/* SPDX-License-Identifier: MIT */
/* executor.c: the thread pool (ThreadPoolExecutor, run_in_executor,
 * to_thread) and aw_run (asyncio.run).
 *
 * Threads and ownership.  An executor (its queue, its workers, the state
 * of each job) is guarded by its mutex.  Everything of a loop is touched
 * only on the loop's thread, except its "sink": the list of jobs that
 * finished and wait to be handed back, guarded by the sink's own mutex.
 * A worker that finishes a job appends it to the sink of the job's loop;
 * the append that finds the list empty schedules one drain through
 * aw_loop_call_soon_threadsafe, and the drain settles every job of the
 * list on the loop: one wake-up per batch.
 *
 * Lifetimes.  A job is "attached" to its sink from submission until the
 * drain hands it back, or until it is cancelled before a worker finished
 * it.  The sink is the loop's (its typed slot, struct aw__exec_slot):
 * made on first use, freed by the loop's release hook when the loop
 * closes.  While jobs are attached the sink counts as a live object of
 * its loop, so the loop cannot close (it returns AW_EBUSY, and the
 * census hook names the jobs) while a worker may still append to the
 * sink; an idle sink does not count.  A job cancelled while it runs is
 * detached at once and marked abandoned: its worker destroys the result
 * and frees the job without touching the loop or the sink again.  So a
 * loop closes without waiting for any worker, and no worker ever touches
 * freed loop memory.
 *
 * The job's future is a grant (sync-internal.h) whose owner is the sink:
 * its cancel and release operations reach the job synchronously.  The
 * sink's grant references (p.refs) are counted but do not decide its
 * lifetime: every grant is a future of the loop, so none is left when
 * the loop closes.
 *
 * The loop's default executor lives in the sink too; the release hook
 * shuts it down without waiting (aw_executor_free), so a loop that used
 * aw_to_thread() closes once its jobs are back.
 *
 * Cross-loop calls and promises.  Another thread reaches a loop through
 * the loop's port: an inbox of messages under the port's mutex, drained
 * on the loop by one aw_loop_call_soon_threadsafe() per batch.  Unlike
 * the loop, the port is reference counted (atomically) by everything
 * that may post to it, and its loop pointer is cleared under its mutex
 * when the loop closes (the release hook): a thread posting to a closed
 * loop gets AW_ECLOSED instead of touching freed memory, and the
 * messages still in the inbox then are run with no loop (they drop
 * their outcome).  A cross-loop call (struct xcall) and a promise are
 * shared by two threads: their reference counts are atomic, their
 * outcome is written before the message is posted and read after it is
 * drained (the port's mutex orders them); everything else of them is
 * touched by one thread only, as commented. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "await/executor.h"
#include "await/task.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "sync-internal.h"

enum job_state {
    J_WAITING,   /* waiting for room in the executor's bounded queue */
    J_QUEUED,    /* on the executor's queue */
    J_RUNNING,   /* a worker runs it */
    J_ABANDONED, /* cancelled while running: its worker frees it */
    J_DONE,      /* fn returned; the drain hands it back and frees it */
    J_DROPPED,   /* cancelled by the executor's shutdown; the drain too */
    J_REFUSED    /* waiting for room at the shutdown; the drain too */
};

struct aw__exec_sink;

struct job {
    struct job *prev, *next; /* the executor's queue or waiting list */
    struct job *dnext;       /* the sink's finished list (sink->mu) */
    struct job *aprev, *anext; /* the sink's attached jobs (loop thread) */
    aw_executor *ex;
    struct aw__exec_sink *sink;
    struct grant *grant; /* loop thread: the future, NULL once it went */
    aw_blocking_fn fn;
    void *arg;
    aw_destroy_fn arg_destroy;
    aw_destroy_fn result_destroy;
    void *result;
    int err;
    int state; /* ex->mu */
};

/* A FIFO of jobs (under ex->mu). */
struct jlist {
    struct job *head, *tail;
    size_t n;
};

struct aw_executor {
    pthread_mutex_t mu;
    pthread_cond_t work;  /* a job or the shutdown for the workers */
    pthread_cond_t ended; /* a worker ended; a join finished */
    struct jlist queue;   /* jobs for the workers */
    struct jlist waiting; /* jobs waiting for room in the queue */
    size_t maxsize;       /* of queue; 0: unbounded */
    size_t submitted, completed;
    size_t wakeups; /* atomic: counted outside mu */
    int max_workers;
    int nthreads; /* started */
    int alive;    /* started and not ended */
    int idle;     /* waiting on `work` */
    int running;  /* jobs in their fn (abandoned ones too) */
    int shutdown;
    int joining;  /* a shutdown(wait) joins the threads */
    unsigned refs; /* the handle, and each thread not ended */
    pthread_t *threads;
    unsigned char *reaped; /* threads[i] joined or detached */
    char *prefix;
};

struct port;
struct xcall;

struct aw__exec_sink {
    struct aw__prim p; /* p.loop; p.refs: its grants (loop thread) */
    struct port *port;       /* cross-thread messages; made on first use */
    struct xcall *xcalls;    /* calls of other loops running here */
    size_t nxcalls;
    int closing;             /* aw_run tears the loop down: none starts */
    pthread_mutex_t mu;
    struct job *head, *tail; /* finished, in order (mu) */
    int scheduled;           /* a drain is on its way (mu) */
    struct job *attached;    /* loop thread */
    size_t nattached;        /* loop thread */
    aw_executor *default_ex; /* loop thread */
};

/* ---- the executor ---------------------------------------------------------- */

static void
executor_destroy(aw_executor *ex)
{
    pthread_mutex_destroy(&ex->mu);
    pthread_cond_destroy(&ex->work);
    pthread_cond_destroy(&ex->ended);
    aw__free(ex->threads);
    aw__free(ex->reaped);
    aw__free(ex->prefix);
    aw__free(ex);
}

int
aw_executor_new(aw_executor **exp, const aw_executor_options *options)
{
    aw_executor *ex;
    const char *prefix = "aw-worker";
    int max = 0;
    long cpus;

    if (exp == NULL)
        return -EINVAL;
    *exp = NULL;
    if (options != NULL) {
        if (options->max_workers < 0)
            return -EINVAL;
        max = options->max_workers;
        if (options->thread_name_prefix != NULL)
            prefix = options->thread_name_prefix;
    }
    if (max == 0) {
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
        max = cpus < 1 ? 5 : cpus + 4 < 32 ? (int)cpus + 4 : 32;
    }
    ex = aw__calloc(1, sizeof(*ex));
    if (ex == NULL)
        return -ENOMEM;
    ex->threads = aw__calloc((size_t)max, sizeof(*ex->threads));
    ex->reaped = aw__calloc((size_t)max, 1);
    ex->prefix = aw__strdup(prefix);
    if (ex->threads == NULL || ex->reaped == NULL || ex->prefix == NULL) {
        aw__free(ex->threads);
        aw__free(ex->reaped);
        aw__free(ex->prefix);
        aw__free(ex);
        return -ENOMEM;
    }
    pthread_mutex_init(&ex->mu, NULL);
    pthread_cond_init(&ex->work, NULL);
    pthread_cond_init(&ex->ended, NULL);
    ex->max_workers = max;
    ex->maxsize = options != NULL ? options->maxsize : 0;
    ex->refs = 1;
    *exp = ex;
    return 0;
}

static void
jlist_push(struct jlist *l, struct job *j)
{
    j->next = NULL;
    j->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->n++;
}

static void
jlist_remove(struct jlist *l, struct job *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->prev = j->next = NULL;
    l->n--;
}

static int wake_worker(aw_executor *ex);

/* Under ex->mu, room may have appeared in the queue: let the jobs
 * waiting for it in, oldest first.  The waiting jobs are the executor's
 * (ex->mu), so no loop is touched: their futures merely stay pending
 * until they have run. */
static void
admit(aw_executor *ex)
{
    struct job *j;
    int admitted = 0;

    while (!ex->shutdown && ex->waiting.n > 0 && ex->queue.n < ex->maxsize) {
        j = ex->waiting.head;
        jlist_remove(&ex->waiting, j);
        jlist_push(&ex->queue, j);
        j->state = J_QUEUED;
        ex->submitted++;
        admitted = 1;
    }
    if (admitted)
        (void)wake_worker(ex); /* workers run: the queue was full */
}

static void deliver(struct job *j);

/* Name a new worker PREFIX_N (from the thread that started it: the
 * thread itself does not know its number). */
static void
name_thread(aw_executor *ex, pthread_t t, int n)
{
#if defined(__linux__) || defined(__GLIBC__)
    char name[16];

    snprintf(name, sizeof(name), "%s_%d", ex->prefix, n);
    pthread_setname_np(t, name);
#else
    (void)ex;
    (void)t;
    (void)n;
#endif
}

static void *
worker_main(void *arg)
{
    aw_executor *ex = arg;
    struct job *j;
    int last;

    pthread_mutex_lock(&ex->mu);
    for (;;) {
        while ((j = ex->queue.head) == NULL && !ex->shutdown) {
            ex->idle++;
            pthread_cond_wait(&ex->work, &ex->mu);
            ex->idle--;
        }
        if (j == NULL)
            break;
        jlist_remove(&ex->queue, j);
        j->state = J_RUNNING;
        ex->running++;
        admit(ex);
        pthread_mutex_unlock(&ex->mu);
        j->result = j->fn(j->arg, &j->err);
        if (j->arg_destroy != NULL)
            j->arg_destroy(j->arg);
        j->arg = NULL;
        pthread_mutex_lock(&ex->mu);
        ex->completed++;
        ex->running--;
        if (j->state == J_ABANDONED) {
            /* Nobody can receive it: neither the loop nor the sink is
             * touched (the loop may be gone). */
            pthread_mutex_unlock(&ex->mu);
            if (j->result != NULL && j->result_destroy != NULL)
                j->result_destroy(j->result);
            aw__free(j);
        } else {
            j->state = J_DONE;
            pthread_mutex_unlock(&ex->mu);
            deliver(j);
        }
        pthread_mutex_lock(&ex->mu);
    }
    ex->alive--;
    last = --ex->refs == 0;
    pthread_cond_broadcast(&ex->ended);
    pthread_mutex_unlock(&ex->mu);
    if (last)
        executor_destroy(ex);
    return NULL;
}

/* Under ex->mu, a job just queued: wake an idle worker, or start one
 * while the idle ones do not cover the queue.  Returns -EAGAIN when no
 * worker runs and none could be started. */
static int
wake_worker(aw_executor *ex)
{
    int rc;

    if (ex->queue.n > (size_t)ex->idle && ex->nthreads < ex->max_workers) {
        rc = pthread_create(&ex->threads[ex->nthreads], NULL, worker_main,
                            ex);
        if (rc == 0) {
            name_thread(ex, ex->threads[ex->nthreads], ex->nthreads);
            ex->nthreads++;
            ex->alive++;
            ex->refs++;
        } else if (ex->alive == 0) {
            return -EAGAIN;
        }
    }
    if (ex->idle > 0)
        pthread_cond_signal(&ex->work);
    return 0;
}

static int
is_own_worker(aw_executor *ex)
{
    int i;

    for (i = 0; i < ex->nthreads; i++)
        if (pthread_equal(ex->threads[i], pthread_self()))
            return 1;
    return 0;
}

int
aw_executor_shutdown(aw_executor *ex, int wait, int cancel_futures)
{
    struct job *dropped = NULL, *j;
    int i, n;

    if (ex == NULL)
        return -EINVAL;
    pthread_mutex_lock(&ex->mu);
    if (wait && is_own_worker(ex)) {
        pthread_mutex_unlock(&ex->mu);
        return -EDEADLK;
    }
    ex->shutdown = 1;
    /* Not accepted yet: refused as a submission after the shutdown is. */
    while ((j = ex->waiting.tail) != NULL) {
        jlist_remove(&ex->waiting, j);
        j->state = J_REFUSED;
        j->dnext = dropped;
        dropped = j;
    }
    if (cancel_futures) {
        while ((j = ex->queue.tail) != NULL) {
            jlist_remove(&ex->queue, j);
            j->state = J_DROPPED;
            j->dnext = dropped;
            dropped = j;
        }
    }
    pthread_cond_broadcast(&ex->work);
    pthread_mutex_unlock(&ex->mu);
    /* Each dropped job is attached: its sink is alive. */
    while ((j = dropped) != NULL) {
        dropped = j->dnext;
        deliver(j);
    }
    if (!wait)
        return 0;
    pthread_mutex_lock(&ex->mu);
    while (ex->joining)
        pthread_cond_wait(&ex->ended, &ex->mu);
    ex->joining = 1;
    n = ex->nthreads; /* no thread starts after the shutdown */
    pthread_mutex_unlock(&ex->mu);
    for (i = 0; i < n; i++) {
        if (ex->reaped[i]) /* only the joiner changes it now */
            continue;
        pthread_join(ex->threads[i], NULL);
        ex->reaped[i] = 1;
    }
    pthread_mutex_lock(&ex->mu);
    ex->joining = 0;
    pthread_cond_broadcast(&ex->ended);
    pthread_mutex_unlock(&ex->mu);
    return 0;
}

void
aw_executor_free(aw_executor *ex)
{
    int i, last;

    if (ex == NULL)
        return;
    aw_executor_shutdown(ex, 0, 0);
    pthread_mutex_lock(&ex->mu);
    while (ex->joining)
        pthread_cond_wait(&ex->ended, &ex->mu);
    for (i = 0; i < ex->nthreads; i++) {
        if (!ex->reaped[i]) {
            pthread_detach(ex->threads[i]);
            ex->reaped[i] = 1;
        }
    }
    last = --ex->refs == 0;
    pthread_mutex_unlock(&ex->mu);
    if (last)
        executor_destroy(ex);
}

size_t
aw_executor_stat(aw_executor *ex, int which)
{
    size_t v = 0;

    if (ex == NULL)
        return 0;
    pthread_mutex_lock(&ex->mu);
    switch (which) {
    case AW_EXECUTOR_WORKERS:
        v = (size_t)ex->alive;
        break;
    case AW_EXECUTOR_IDLE:
        v = (size_t)ex->idle;
        break;
    case AW_EXECUTOR_QUEUED:
        v = ex->queue.n;
        break;
    case AW_EXECUTOR_WAITING:
        v = ex->waiting.n;
        break;
    case AW_EXECUTOR_SUBMITTED:
        v = ex->submitted;
        break;
    case AW_EXECUTOR_COMPLETED:
        v = ex->completed;
        break;
    case AW_EXECUTOR_WAKEUPS:
        v = __atomic_load_n(&ex->wakeups, __ATOMIC_RELAXED);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&ex->mu);
    return v;
}

/* ---- the sinks: each loop's side ------------------------------------------- */

static void
sink_grants_gone(struct aw__prim *p)
{
    (void)p; /* the sink goes with its loop (exec_release) */
}

static const struct aw__loop_hooks exec_hooks;

/* The loop's sink, NULL when it has none. */
static struct aw__exec_sink *
sink_find(aw_loop *loop)
{
    return aw__loop_exec_slot(loop)->sink;
}

/* The loop's sink, made on first use; NULL out of memory. */
static struct aw__exec_sink *
sink_get(aw_loop *loop)
{
    struct aw__exec_slot *slot = aw__loop_exec_slot(loop);
    struct aw__exec_sink *s = slot->sink;

    if (s != NULL)
        return s;
    s = aw__calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->p.loop = loop;
    s->p.gone = sink_grants_gone;
    pthread_mutex_init(&s->mu, NULL);
    slot->sink = s;
    slot->hooks = &exec_hooks;
    return s;
}

/* While jobs are attached, the sink counts as a live object of its loop:
 * the loop does not close under a worker that may append to it. */
static void
attach(struct aw__exec_sink *s, struct job *j)
{
    j->sink = s;
    j->aprev = NULL;
    j->anext = s->attached;
    if (s->attached != NULL)
        s->attached->aprev = j;
    s->attached = j;
    if (s->nattached++ == 0)
        aw__loop_track(s->p.loop, 1);
}

/* Unlink j from its sink's attached list. */
static void
detach(struct job *j)
{
    struct aw__exec_sink *s = j->sink;

    if (j->aprev != NULL)
        j->aprev->anext = j->anext;
    else
        s->attached = j->anext;
    if (j->anext != NULL)
        j->anext->aprev = j->aprev;
    if (--s->nattached == 0)
        aw__loop_track(s->p.loop, -1);
}

static int drain(aw_loop *loop, void *arg);

/* A worker (or a shutdown) hands j back to its loop.  j is attached, so
 * its sink and its loop are alive until the drain took it. */
static void
deliver(struct job *j)
{
    struct aw__exec_sink *s = j->sink;
    aw_executor *ex = j->ex;
    int wake;

    j->dnext = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->tail != NULL)
        s->tail->dnext = j;
    else
        s->head = j;
    s->tail = j;
    wake = !s->scheduled;
    s->scheduled = 1;
    pthread_mutex_unlock(&s->mu);
    if (!wake)
        return;
    if (aw_loop_call_soon_threadsafe(s->p.loop, drain, s) != 0) {
        /* Out of memory: the next job this sink gets retries. */
        pthread_mutex_lock(&s->mu);
        s->scheduled = 0;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    __atomic_fetch_add(&ex->wakeups, 1, __ATOMIC_RELAXED);
}

static void
destroy_result(struct job *j)
{
    if (j->result != NULL && j->result_destroy != NULL)
        j->result_destroy(j->result);
    j->result = NULL;
}

/* On the loop: settle j's future with its outcome, or drop it. */
static void
hand_back(struct job *j)
{
    struct grant *g = j->grant;

    if ((j->state == J_DROPPED || j->state == J_REFUSED) &&
        j->arg_destroy != NULL)
        j->arg_destroy(j->arg);
    if (g == NULL) {
        destroy_result(j);
        return;
    }
    g->data = NULL;
    j->grant = NULL;
    if (j->state == J_DROPPED) {
        aw__future_set_cancelled(&g->base,
                                 aw__strdup("the executor was shut down"));
    } else if (j->state == J_REFUSED) {
        aw__grant_fail(g, AW_ECLOSED,
                       "the executor was shut down while the job waited "
                       "for room in its queue");
    } else if (j->err < 0) {
        destroy_result(j);
        if (j->err == AW_ECANCELLED)
            aw__future_set_cancelled(&g->base, NULL);
        else
            aw__grant_fail(g, j->err, NULL);
    } else {
        g->base.v.ptr = j->result;
        g->base.o.destroy = j->result_destroy;
        aw__grant_done(g);
    }
}

static int
drain(aw_loop *loop, void *arg)
{
    struct aw__exec_sink *s = arg;
    struct job *list, *j;

    (void)loop;
    pthread_mutex_lock(&s->mu);
    list = s->head;
    s->head = s->tail = NULL;
    s->scheduled = 0;
    pthread_mutex_unlock(&s->mu);
    while ((j = list) != NULL) {
        list = j->dnext;
        hand_back(j);
        detach(j);
        aw__free(j);
    }
    return 0;
}

/* On the loop: the job's future was cancelled or released while pending. */
static void
job_cancel(struct job *j)
{
    aw_executor *ex = j->ex;
    int state;

    j->grant->data = NULL;
    j->grant = NULL;
    pthread_mutex_lock(&ex->mu);
    state = j->state;
    if (state == J_WAITING) {
        jlist_remove(&ex->waiting, j);
        detach(j);
    } else if (state == J_QUEUED) {
        jlist_remove(&ex->queue, j);
        detach(j);
        admit(ex);
    } else if (state == J_RUNNING) {
        detach(j); /* before the worker may free it */
        j->state = J_ABANDONED;
    }
    pthread_mutex_unlock(&ex->mu);
    /* J_DONE, J_DROPPED, J_REFUSED: the drain on its way frees it. */
    if (state == J_QUEUED || state == J_WAITING) {
        if (j->arg_destroy != NULL)
            j->arg_destroy(j->arg);
        aw__free(j);
    }
}

static int
job_grant_cancel(struct grant *g, const char *msg)
{
    (void)msg;
    if (g->data != NULL)
        job_cancel(g->data);
    return 0; /* cancelled at once */
}

static void
job_grant_release(struct grant *g, int unread)
{
    (void)unread;
    if (g->data != NULL)
        job_cancel(g->data);
}

static const struct grant_class job_class = {job_grant_release,
                                             job_grant_cancel};

/* ---- submitting ------------------------------------------------------------ */

static aw_future *
refuse(aw_loop *loop, void *arg, aw_destroy_fn arg_destroy, int code,
       const char *msg)
{
    if (arg_destroy != NULL)
        arg_destroy(arg);
    if (code == -ENOMEM)
        return aw__future_nomem(loop);
    return aw_future_failed(loop, code, "%s", msg);
}

static aw_executor *default_executor(aw_loop *loop, struct aw__exec_sink *s);

static aw_future *
submit(aw_loop *loop, aw_executor *ex, aw_blocking_fn fn, void *arg,
       aw_destroy_fn arg_destroy, aw_destroy_fn result_destroy)
{
    struct aw__exec_sink *s;
    struct job *j;
    struct grant *g;
    int rc;

    if (loop == NULL || aw_loop_is_closed(loop)) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return NULL;
    }
    if (fn == NULL)
        return refuse(loop, arg, arg_destroy, -EINVAL, "no function");
    s = sink_get(loop);
    if (s == NULL)
        return refuse(loop, arg, arg_destroy, -ENOMEM, NULL);
    if (ex == NULL && (ex = default_executor(loop, s)) == NULL)
        return refuse(loop, arg, arg_destroy, -ENOMEM, NULL);
    j = aw__malloc(sizeof(*j));
    g = j != NULL ? aw__grant_new(&job_class, &s->p) : NULL;
    if (g == NULL) {
        aw__free(j);
        return refuse(loop, arg, arg_destroy, -ENOMEM, NULL);
    }
    memset(j, 0, sizeof(*j));
    j->ex = ex;
    j->grant = g;
    j->fn = fn;
    j->arg = arg;
    j->arg_destroy = arg_destroy;
    j->result_destroy = result_destroy;
    j->state = J_QUEUED;
    g->data = j;
    attach(s, j);
    pthread_mutex_lock(&ex->mu);
    rc = ex->shutdown ? AW_ECLOSED : 0;
    if (rc == 0 && ex->maxsize > 0 &&
        (ex->queue.n >= ex->maxsize || ex->waiting.n > 0)) {
        /* Full: the future stays pending while the job waits for room. */
        j->state = J_WAITING;
        jlist_push(&ex->waiting, j);
    } else if (rc == 0) {
        jlist_push(&ex->queue, j);
        rc = wake_worker(ex);
        if (rc != 0)
            jlist_remove(&ex->queue, j);
        else
            ex->submitted++;
    }
    pthread_mutex_unlock(&ex->mu);
    if (rc != 0) {
        g->data = NULL;
        detach(j);
        aw__free(j);
        aw_future_unref(&g->base);
        return refuse(loop, arg, arg_destroy, rc,
                      rc == AW_ECLOSED ? "the executor was shut down"
                                       : "no worker thread could start");
    }
    return &g->base;
}

aw_future *
aw_loop_run_in_executor(aw_loop *loop, aw_executor *ex, aw_blocking_fn fn,
                        void *arg, aw_destroy_fn arg_destroy,
                        aw_destroy_fn result_destroy)
{
    return submit(loop, ex, fn, arg, arg_destroy, result_destroy);
}

aw_future *
aw_to_thread(aw_loop *loop, aw_blocking_fn fn, void *arg,
             aw_destroy_fn arg_destroy, aw_destroy_fn result_destroy)
{
    return submit(loop, NULL, fn, arg, arg_destroy, result_destroy);
}

/* ---- the default executor -------------------------------------------------- */

static aw_executor *
default_executor(aw_loop *loop, struct aw__exec_sink *s)
{
    aw_executor_options o;

    (void)loop;
    if (s->default_ex != NULL)
        return s->default_ex;
    memset(&o, 0, sizeof(o));
    o.thread_name_prefix = "aw-default";
    if (aw_executor_new(&s->default_ex, &o) != 0)
        return NULL;
    return s->default_ex;
}

int
aw_loop_shutdown_default_executor(aw_loop *loop, int wait)
{
    struct aw__exec_sink *s;
    aw_executor *ex;

    if (loop == NULL)
        return -EINVAL;
    s = sink_find(loop);
    if (s == NULL || s->default_ex == NULL)
        return 0;
    ex = s->default_ex;
    s->default_ex = NULL;
    if (wait)
        aw_executor_shutdown(ex, 1, 0);
    aw_executor_free(ex);
    return 0;
}

int
aw_loop_cancel_executor_jobs(aw_loop *loop)
{
    struct aw__exec_sink *s;
    struct job *j, *next;
    int n = 0;

    if (loop == NULL)
        return -EINVAL;
    s = sink_find(loop);
    if (s == NULL)
        return 0;
    for (j = s->attached; j != NULL; j = next) {
        next = j->anext; /* cancelling j frees at most j */
        if (j->grant != NULL &&
            aw_future_cancel(&j->grant->base, "the loop is shutting down") ==
                0)
            n++;
    }
    return n;
}

size_t
aw_loop_executor_jobs(aw_loop *loop)
{
    struct aw__exec_sink *s = loop != NULL ? sink_find(loop) : NULL;

    return s != NULL ? s->nattached : 0;
}

/* ---- ports: a loop's inbox for other threads --------------------------------- */

struct xmsg {
    struct xmsg *next;
    /* Runs on the port's loop, or with loop NULL when the loop closed
     * with it in the inbox (on the closing loop's thread). */
    void (*run)(struct xmsg *m, aw_loop *loop);
};

struct port {
    pthread_mutex_t mu;
    aw_loop *loop;            /* NULL once the loop closed (mu) */
    struct xmsg *head, *tail; /* the inbox (mu) */
    int scheduled;            /* a drain is on its way (mu) */
    unsigned refs;            /* atomic: the sink, and each poster */
};

static struct port *
port_ref(struct port *pt)
{
    __atomic_fetch_add(&pt->refs, 1, __ATOMIC_RELAXED);
    return pt;
}

static void
port_unref(struct port *pt)
{
    if (pt == NULL || __atomic_sub_fetch(&pt->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_destroy(&pt->mu);
    aw__free(pt);
}

/* The loop's port, made on first use (on the loop's thread); NULL out
 * of memory. */
static struct port *
port_get(struct aw__exec_sink *s)
{
    struct port *pt = s->port;

    if (pt != NULL)
        return pt;
    pt = aw__calloc(1, sizeof(*pt));
    if (pt == NULL)
        return NULL;
    pthread_mutex_init(&pt->mu, NULL);
    pt->loop = s->p.loop;
    pt->refs = 1;
    s->port = pt;
    return pt;
}

static int
port_drain(aw_loop *loop, void *arg)
{
    struct port *pt = arg; /* the sink's reference keeps it */
    struct xmsg *m, *next;

    pthread_mutex_lock(&pt->mu);
    m = pt->head;
    pt->head = pt->tail = NULL;
    pt->scheduled = 0;
    pthread_mutex_unlock(&pt->mu);
    for (; m != NULL; m = next) {
        next = m->next;
        m->run(m, loop);
    }
    return 0;
}

/* From any thread: queue m for the port's loop.  0, or AW_ECLOSED when
 * the loop has closed (m not queued). */
static int
port_post(struct port *pt, struct xmsg *m)
{
    pthread_mutex_lock(&pt->mu);
    if (pt->loop == NULL) {
        pthread_mutex_unlock(&pt->mu);
        return AW_ECLOSED;
    }
    m->next = NULL;
    if (pt->tail != NULL)
        pt->tail->next = m;
    else
        pt->head = m;
    pt->tail = m;
    /* The loop stays allocated while we hold the mutex: its release
     * hook takes it.  A failed wake-up leaves m queued: out of memory,
     * the next post retries; AW_ECLOSED, the release hook runs it. */
    if (!pt->scheduled &&
        aw_loop_call_soon_threadsafe(pt->loop, port_drain, pt) == 0)
        pt->scheduled = 1;
    pthread_mutex_unlock(&pt->mu);
    return 0;
}

/* The loop closes: nobody may post to it any more; what is queued runs
 * without it. */
static void
port_close(struct port *pt)
{
    struct xmsg *m, *next;

    pthread_mutex_lock(&pt->mu);
    pt->loop = NULL;
    m = pt->head;
    pt->head = pt->tail = NULL;
    pthread_mutex_unlock(&pt->mu);
    for (; m != NULL; m = next) {
        next = m->next;
        m->run(m, NULL);
    }
    port_unref(pt);
}

/* An outcome crossing threads: a result and its destructor, or a code
 * and a message. */
struct outcome {
    int code; /* 0: result */
    char *msg;
    void *result;
    aw_destroy_fn destroy;
};

static void
outcome_drop(struct outcome *o)
{
    if (o->result != NULL && o->destroy != NULL)
        o->destroy(o->result);
    o->result = NULL;
    aw__free(o->msg);
    o->msg = NULL;
}

/* On the loop: settle the pending grant g with o (taken). */
static void
outcome_settle(struct grant *g, struct outcome *o)
{
    if (o->code == 0) {
        g->base.v.ptr = o->result;
        g->base.o.destroy = o->destroy;
        aw__grant_done(g);
    } else if (o->code == AW_ECANCELLED) {
        aw__future_set_cancelled(&g->base, o->msg);
    } else {
        aw__future_set_failed(&g->base, o->code, o->msg);
    }
    o->result = NULL;
    o->msg = NULL;
}

/* ---- cross-loop calls --------------------------------------------------------- */

struct xcall {
    struct xmsg cancel_m;  /* to the target: cancel what runs there */
    struct xmsg outcome_m; /* to the caller: the outcome */
    unsigned refs;         /* atomic: the caller's future, the target's
                            * side (the start, then outcome_m), cancel_m */
    struct port *oport;    /* the caller's loop */
    pthread_mutex_t mu;
    struct port *tport;    /* mu: the target's, once it started */
    int cancel_req;        /* mu: the caller gave up */
    /* the caller's thread */
    struct grant *grant;   /* NULL once the future settled or went */
    /* the target's thread */
    aw_future *tf;         /* what fn returned, while pending */
    struct aw__exec_sink *tsink;
    struct xcall *tprev, *tnext; /* tsink->xcalls */
    aw_remote_fn fn;       /* or: */
    aw_task_fn task_fn;
    void *arg;
    aw_destroy_fn arg_destroy;
    struct outcome out;    /* written on the target, read on the caller */
};

static struct xcall *
xcall_ref(struct xcall *x)
{
    __atomic_fetch_add(&x->refs, 1, __ATOMIC_RELAXED);
    return x;
}

static void
xcall_unref(struct xcall *x)
{
    if (__atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    outcome_drop(&x->out);
    port_unref(x->oport);
    port_unref(x->tport);
    pthread_mutex_destroy(&x->mu);
    aw__free(x);
}

/* On the target: send the outcome in x->out to the caller; gives up the
 * target side's reference. */
static void
xcall_send(struct xcall *x)
{
    if (port_post(x->oport, &x->outcome_m) != 0) {
        outcome_drop(&x->out); /* the caller's loop is gone */
        xcall_unref(x);
    }
}

static void
xcall_fail(struct xcall *x, int code, const char *msg)
{
    x->out.code = code;
    x->out.msg = msg != NULL ? aw__strdup(msg) : NULL;
    xcall_send(x);
}

/* On the target: fn will never run; arg goes. */
static void
xcall_drop_arg(struct xcall *x)
{
    if (x->arg_destroy != NULL)
        x->arg_destroy(x->arg);
    x->arg = NULL;
}

static void
xcall_untrack(struct xcall *x)
{
    struct aw__exec_sink *s = x->tsink;

    if (x->tprev != NULL)
        x->tprev->tnext = x->tnext;
    else
        s->xcalls = x->tnext;
    if (x->tnext != NULL)
        x->tnext->tprev = x->tprev;
    s->nxcalls--;
}

/* On the target: what fn returned settled; its outcome crosses. */
static int
xcall_target_done(aw_future *tf, void *arg)
{
    struct xcall *x = arg;
    const char *msg = aw_future_message(tf);
    int code = aw_future_error(tf); /* retrieved: it crosses */

    xcall_untrack(x);
    x->tf = NULL;
    if (code == 0) {
        if (aw_future_take_result(tf, &x->out.result, &x->out.destroy) != 0) {
            code = AW_EINVALSTATE;
            msg = "the result is shared on the target loop and cannot cross";
        }
    } else if (code == AW_ECANCELLED && x->tsink->closing) {
        code = AW_ECLOSED;
        msg = "the target loop closed before the call ended";
    }
    x->out.code = code;
    x->out.msg = code != 0 && msg != NULL ? aw__strdup(msg) : NULL;
    aw_future_unref(tf);
    xcall_send(x);
    return 0;
}

/* On the target, through aw_loop_call_soon_threadsafe: start the call. */
static int
xcall_start(aw_loop *target, void *arg)
{
    struct xcall *x = arg;
    struct aw__exec_sink *s = sink_get(target);
    struct port *pt = s != NULL ? port_get(s) : NULL;
    aw_future *tf;
    int cancelled;

    if (pt == NULL) {
        xcall_drop_arg(x);
        xcall_fail(x, -ENOMEM, NULL);
        return 0;
    }
    pthread_mutex_lock(&x->mu);
    x->tport = port_ref(pt); /* from now on a cancel is posted to us */
    cancelled = x->cancel_req;
    pthread_mutex_unlock(&x->mu);
    if (cancelled || s->closing) {
        xcall_drop_arg(x);
        if (cancelled)
            xcall_fail(x, AW_ECANCELLED, NULL);
        else
            xcall_fail(x, AW_ECLOSED, "the target loop was closing");
        return 0;
    }
    tf = x->task_fn != NULL
             ? aw_task_new(target, x->task_fn, x->arg, x->arg_destroy)
             : x->fn(target, x->arg);
    x->arg = NULL; /* fn's, or the task's */
    if (tf == NULL) {
        xcall_fail(x, -ENOMEM, "the remote function returned no future");
        return 0;
    }
    if (aw_future_add_done_callback(tf, xcall_target_done, x) != 0) {
        aw_future_cancel(tf, NULL);
        aw_future_unref(tf);
        xcall_fail(x, -ENOMEM, NULL);
        return 0;
    }
    x->tf = tf;
    x->tsink = s;
    x->tprev = NULL;
    x->tnext = s->xcalls;
    if (s->xcalls != NULL)
        s->xcalls->tprev = x;
    s->xcalls = x;
    s->nxcalls++;
    return 0;
}

/* cancel_m, on the target. */
static void
xcall_cancel_run(struct xmsg *m, aw_loop *loop)
{
    struct xcall *x = (struct xcall *)(void *)((char *)m -
                                               offsetof(struct xcall,
                                                        cancel_m));

    if (loop != NULL && x->tf != NULL)
        aw_future_cancel(x->tf, "cancelled by the calling loop");
    xcall_unref(x);
}

/* outcome_m, on the caller. */
static void
xcall_outcome_run(struct xmsg *m, aw_loop *loop)
{
    struct xcall *x = (struct xcall *)(void *)((char *)m -
                                               offsetof(struct xcall,
                                                        outcome_m));
    struct grant *g = x->grant;

    if (loop != NULL && g != NULL) {
        g->data = NULL;
        x->grant = NULL;
        outcome_settle(g, &x->out);
        xcall_unref(x); /* the future's */
    } else {
        outcome_drop(&x->out); /* nobody waits for it any more */
    }
    xcall_unref(x);
}

/* On the caller: its future was cancelled or released while pending. */
static void
xcall_abandon(struct grant *g)
{
    struct xcall *x = g->data;
    struct port *tport;

    if (x == NULL)
        return;
    g->data = NULL;
    x->grant = NULL;
    pthread_mutex_lock(&x->mu);
    x->cancel_req = 1;
    tport = x->tport; /* NULL: not started, it will see cancel_req */
    pthread_mutex_unlock(&x->mu);
    if (tport != NULL && port_post(tport, &xcall_ref(x)->cancel_m) != 0)
        xcall_unref(x); /* the target closed: nothing runs there */
    xcall_unref(x);
}

static int
xcall_grant_cancel(struct grant *g, const char *msg)
{
    (void)msg;
    xcall_abandon(g);
    return 0; /* cancelled at once */
}

static void
xcall_grant_release(struct grant *g, int unread)
{
    (void)unread;
    xcall_abandon(g);
}

static const struct grant_class xcall_class = {xcall_grant_release,
                                               xcall_grant_cancel};

static aw_future *
xcall_submit(aw_loop *loop, aw_loop *target, aw_remote_fn fn,
             aw_task_fn task_fn, void *arg, aw_destroy_fn arg_destroy)
{
    struct aw__exec_sink *s;
    struct port *pt;
    struct xcall *x;
    struct grant *g;
    int rc;

    if (loop == NULL || aw_loop_is_closed(loop)) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return NULL;
    }
    if (target == NULL || (fn == NULL && task_fn == NULL))
        return refuse(loop, arg, arg_destroy, -EINVAL,
                      "no target loop or no function");
    s = sink_get(loop);
    pt = s != NULL ? port_get(s) : NULL;
    x = pt != NULL ? aw__calloc(1, sizeof(*x)) : NULL;
    g = x != NULL ? aw__grant_new(&xcall_class, &s->p) : NULL;
    if (g == NULL) {
        aw__free(x);
        return refuse(loop, arg, arg_destroy, -ENOMEM, NULL);
    }
    x->cancel_m.run = xcall_cancel_run;
    x->outcome_m.run = xcall_outcome_run;
    x->refs = 2; /* the future's, the target side's */
    x->oport = port_ref(pt);
    pthread_mutex_init(&x->mu, NULL);
    x->grant = g;
    x->fn = fn;
    x->task_fn = task_fn;
    x->arg = arg;
    x->arg_destroy = arg_destroy;
    g->data = x;
    rc = aw_loop_call_soon_threadsafe(target, xcall_start, x);
    if (rc != 0) {
        g->data = NULL;
        aw_future_unref(&g->base);
        x->refs = 1;
        xcall_unref(x);
        return refuse(loop, arg, arg_destroy, rc,
                      rc == AW_ECLOSED ? "the target loop is closed"
                                       : "the target loop refused the call");
    }
    return &g->base;
}

aw_future *
aw_loop_run_threadsafe(aw_loop *loop, aw_loop *target, aw_remote_fn fn,
                       void *arg, aw_destroy_fn arg_destroy)
{
    return xcall_submit(loop, target, fn, NULL, arg, arg_destroy);
}

aw_future *
aw_loop_run_task_threadsafe(aw_loop *loop, aw_loop *target, aw_task_fn main,
                            void *frame, aw_destroy_fn frame_free)
{
    return xcall_submit(loop, target, NULL, main, frame, frame_free);
}

/* On the target: cancel what runs there for other loops; how many. */
static int
cancel_remote_calls(aw_loop *loop)
{
    struct aw__exec_sink *s = sink_find(loop);
    struct xcall *x;
    int n = 0;

    if (s == NULL)
        return 0;
    for (x = s->xcalls; x != NULL; x = x->tnext)
        if (aw_future_cancel(x->tf, "the target loop is closing") == 0)
            n++;
    return n;
}

/* ---- promises: a future settled from any thread ------------------------------- */

struct aw_promise {
    struct xmsg m;       /* the settle, to the future's loop */
    unsigned refs;       /* atomic: the handle, the future */
    int abandoned;       /* atomic: the future was cancelled or went */
    struct port *port;
    struct grant *grant; /* the loop's thread; NULL once settled or gone */
    struct outcome out;  /* written by the settling thread */
};

static void
promise_unref(aw_promise *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    outcome_drop(&p->out);
    port_unref(p->port);
    aw__free(p);
}

/* On the loop: the future was cancelled or released while pending. */
static void
promise_abandon(struct grant *g)
{
    aw_promise *p = g->data;

    if (p == NULL)
        return;
    g->data = NULL;
    p->grant = NULL;
    __atomic_store_n(&p->abandoned, 1, __ATOMIC_RELEASE);
    promise_unref(p);
}

static int
promise_grant_cancel(struct grant *g, const char *msg)
{
    (void)msg;
    promise_abandon(g);
    return 0;
}

static void
promise_grant_release(struct grant *g, int unread)
{
    (void)unread;
    promise_abandon(g);
}

static const struct grant_class promise_class = {promise_grant_release,
                                                 promise_grant_cancel};

static void
promise_run(struct xmsg *m, aw_loop *loop)
{
    aw_promise *p = (aw_promise *)(void *)m; /* m comes first */
    struct grant *g = p->grant;

    if (loop != NULL && g != NULL) {
        g->data = NULL;
        p->grant = NULL;
        outcome_settle(g, &p->out);
        promise_unref(p); /* the future's */
    } else {
        outcome_drop(&p->out);
    }
    promise_unref(p); /* the handle's */
}

aw_future *
aw_loop_create_promise(aw_loop *loop, aw_promise **promisep)
{
    struct aw__exec_sink *s;
    struct port *pt;
    aw_promise *p;
    struct grant *g;

    if (promisep == NULL)
        return NULL;
    *promisep = NULL;
    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    s = sink_get(loop);
    pt = s != NULL ? port_get(s) : NULL;
    p = pt != NULL ? aw__calloc(1, sizeof(*p)) : NULL;
    g = p != NULL ? aw__grant_new(&promise_class, &s->p) : NULL;
    if (g == NULL) {
        aw__free(p);
        return NULL;
    }
    p->m.run = promise_run;
    p->refs = 2;
    p->port = port_ref(pt);
    p->grant = g;
    g->data = p;
    *promisep = p;
    return &g->base;
}

/* Any thread: send the outcome (result taken in every case but -EINVAL). */
static int
promise_settle(aw_promise *p, int code, const char *msg, void *result,
               aw_destroy_fn destroy)
{
    int rc;

    p->out.code = code;
    p->out.msg = msg != NULL ? aw__strdup(msg) : NULL;
    p->out.result = result;
    p->out.destroy = destroy;
    rc = port_post(p->port, &p->m);
    if (rc != 0) {
        outcome_drop(&p->out); /* the loop closed */
        promise_unref(p);
    }
    return rc;
}

int
aw_promise_set_result_threadsafe(aw_promise *p, void *result,
                                 aw_destroy_fn destroy)
{
    if (p == NULL)
        return -EINVAL;
    return promise_settle(p, 0, NULL, result, destroy);
}

int
aw_promise_set_result_int_threadsafe(aw_promise *p, intptr_t result)
{
    if (p == NULL)
        return -EINVAL;
    return promise_settle(p, 0, NULL, (void *)result, NULL);
}

int
aw_promise_set_error_threadsafe(aw_promise *p, int code, const char *msg)
{
    if (p == NULL || code >= 0 || code == AW_ECANCELLED)
        return -EINVAL;
    return promise_settle(p, code, msg, NULL, NULL);
}

int
aw_promise_cancel_threadsafe(aw_promise *p, const char *msg)
{
    if (p == NULL)
        return -EINVAL;
    return promise_settle(p, AW_ECANCELLED, msg, NULL, NULL);
}

void
aw_promise_free_threadsafe(aw_promise *p)
{
    if (p != NULL)
        (void)promise_settle(p, AW_ECLOSED,
                             "the promise was freed without settling its "
                             "future",
                             NULL, NULL);
}

int
aw_promise_cancelled_threadsafe(const aw_promise *p)
{
    return p != NULL && __atomic_load_n(&p->abandoned, __ATOMIC_ACQUIRE);
}

/* ---- the loop's hooks ------------------------------------------------------- */

/* No job runs or waits: the workers are waiting for work, or about to. */
static int
executor_idle(aw_executor *ex)
{
    int idle;

    pthread_mutex_lock(&ex->mu);
    idle = ex->running == 0 && ex->queue.head == NULL &&
           ex->waiting.head == NULL;
    pthread_mutex_unlock(&ex->mu);
    return idle;
}

/* Close found work outstanding: name the jobs still out. */
static void
exec_census(aw_loop *loop)
{
    struct aw__exec_sink *s = sink_find(loop);

    if (s != NULL && s->nattached > 0)
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "%zu executor jobs still running or queued (or "
                        "finished and not handed back yet)",
                        s->nattached);
    if (s != NULL && s->nxcalls > 0)
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "%zu calls of other loops still running",
                        s->nxcalls);
}

/* The loop closes: nothing is attached (the sink counted as live while
 * anything was), so no worker can reach the sink any more. */
static void
exec_release(aw_loop *loop)
{
    struct aw__exec_slot *slot = aw__loop_exec_slot(loop);
    struct aw__exec_sink *s = slot->sink;

    if (s == NULL)
        return;
    /* Workers that wait for work are joined now (at once: nothing is
     * queued), so that nothing of the executor outlives the close; one
     * still blocked in a job abandoned by a cancel is not waited for:
     * it frees what is left when it returns. */
    if (s->default_ex != NULL && executor_idle(s->default_ex))
        (void)aw_executor_shutdown(s->default_ex, 1, 0);
    aw_executor_free(s->default_ex);
    if (s->port != NULL)
        port_close(s->port);
    pthread_mutex_destroy(&s->mu);
    aw__free(s);
    slot->sink = NULL;
}

static const struct aw__loop_hooks exec_hooks = {exec_census, exec_release,
                                                  NULL};

/* ---- aw_run ------------------------------------------------------------------ */

static int
on_sigint(aw_loop *loop, void *arg)
{
    aw_loop_remove_signal_handler(loop, SIGINT);
    aw_future_cancel(arg, "interrupted by SIGINT");
    return 0;
}

static int
on_sigterm(aw_loop *loop, void *arg)
{
    aw_loop_remove_signal_handler(loop, SIGTERM);
    aw_future_cancel(arg, "terminated by SIGTERM");
    return 0;
}

/* asyncio.run's _cancel_all_tasks: cancel what is left, wait for it,
 * report what failed otherwise than by the cancellation. */
static void
cancel_all_tasks(aw_loop *loop)
{
    aw_task **tasks;
    aw_future *all;
    size_t n, i, k;

    while ((n = aw_all_tasks(loop, NULL, 0)) > 0) {
        tasks = aw__calloc(n, sizeof(*tasks));
        if (tasks == NULL) {
            aw_loop_run_once(loop, 0); /* nothing better to do */
            continue;
        }
        n = aw_all_tasks(loop, tasks, n);
        for (i = 0; i < n; i++) {
            aw_future_ref(tasks[i]);
            aw_future_cancel(tasks[i], NULL);
        }
        all = aw_gather(loop, n, tasks, AW_GATHER_RETURN_ERRORS);
        aw__free(tasks);
        aw_loop_run_until_complete(loop, all);
        {
            size_t m = 0;
            aw_future *const *in = aw_combinator_inputs(all, &m);

            for (k = 0; k < m; k++) {
                int rc = aw_future_error(in[k]);

                if (rc < 0 && rc != AW_ECANCELLED)
                    aw__loop_report(loop, rc, NULL, NULL,
                                    "unhandled error during aw_run() "
                                    "shutdown: task %s: %s",
                                    aw_task_name(in[k]), aw_strerror(rc));
            }
        }
        aw_future_unref(all);
    }
}

int
aw_run(aw_task_fn main, void *frame, aw_destroy_fn frame_free, int flags,
       intptr_t *result)
{
    aw_loop *loop;
    aw_task *t;
    int rc, close_rc;

    rc = main == NULL                    ? -EINVAL
         : aw_get_running_loop() != NULL ? AW_ERUNNING
                                         : aw_loop_new(&loop);
    if (rc != 0) {
        if (frame_free != NULL)
            frame_free(frame);
        return rc;
    }
    t = aw_task_new(loop, main, frame, frame_free);
    if (flags & AW_RUN_HANDLE_SIGNALS) {
        aw_loop_add_signal_handler(loop, SIGINT, on_sigint, t);
        aw_loop_add_signal_handler(loop, SIGTERM, on_sigterm, t);
    }
    aw_loop_run_until_complete(loop, t);
    rc = aw_future_error(t);
    if (rc == 0 && result != NULL)
        aw_future_result_int(t, result);
    if (flags & AW_RUN_HANDLE_SIGNALS) {
        aw_loop_remove_signal_handler(loop, SIGINT);
        aw_loop_remove_signal_handler(loop, SIGTERM);
    }
    aw_future_unref(t);
    /* Calls from other loops do not start any more; those running end
     * with AW_ECLOSED on their caller's side. */
    if (sink_get(loop) != NULL)
        sink_get(loop)->closing = 1;
    cancel_remote_calls(loop);
    cancel_all_tasks(loop);
    /* Jobs cancelled while running are left to their workers; those
     * that finished come back on the next passes. */
    while (aw_loop_cancel_executor_jobs(loop) > 0 ||
           aw_loop_executor_jobs(loop) > 0 ||
           (sink_find(loop) != NULL && sink_find(loop)->nxcalls > 0)) {
        aw_loop_run_once(loop, 0);
        cancel_all_tasks(loop);
    }
    aw_loop_shutdown_default_executor(loop, 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    close_rc = aw_loop_free(loop);
    return close_rc != 0 ? close_rc : rc;
}

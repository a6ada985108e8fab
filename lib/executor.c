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
 * aw_to_thread() closes once its jobs are back. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
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

struct aw__exec_sink {
    struct aw__prim p; /* p.loop; p.refs: its grants (loop thread) */
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
    cancel_all_tasks(loop);
    /* Jobs cancelled while running are left to their workers; those
     * that finished come back on the next passes. */
    while (aw_loop_cancel_executor_jobs(loop) > 0 ||
           aw_loop_executor_jobs(loop) > 0) {
        aw_loop_run_once(loop, 0);
        cancel_all_tasks(loop);
    }
    aw_loop_shutdown_default_executor(loop, 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    close_rc = aw_loop_free(loop);
    return close_rc != 0 ? close_rc : rc;
}

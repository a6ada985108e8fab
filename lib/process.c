/* SPDX-License-Identifier: MIT */
/* process.c: subprocesses (asyncio's create_subprocess_exec/_shell and
 * Process): posix_spawn with close-on-exec pipes, the child's exit seen
 * through a pidfd watched by the loop or, where there is none, a thread
 * that waits for that one child (asyncio's PidfdChildWatcher and
 * ThreadedChildWatcher: neither reaps another code's children, and both
 * work with any number of loops in any threads).
 *
 * The pipes are plain non-blocking fds on the loop's readers and writers
 * (streams on an existing fd are not available to this module yet). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "await/process.h"
#include "core-internal.h"
#include "loop-internal.h"
#include "transport-internal.h"

extern char **environ;

#define READ_AHEAD 65536 /* read ahead while no read waits */
#define READ_CHUNK 65536

struct rpipe {
    struct aw_process *proc;
    int fd;       /* -1: not a pipe, or closed at end of file */
    int watching; /* on the loop's readers */
    int eof;      /* end of file seen (or not a pipe) */
    int error;    /* a read failed: its code */
    char *buf;
    size_t off, len, cap; /* unread bytes are buf[off, len) */
    aw_future *read;      /* the read waiting */
    size_t want;          /* its n */
    int line;             /* it is a readline */
    int collect;          /* communicate: read everything */
};

struct wchunk {
    struct wchunk *next;
    aw_future *done; /* NULL for communicate's input */
    size_t off, len;
    char data[];
};

struct wpipe {
    int fd;       /* -1: not a pipe, or closed */
    int piped;    /* stdin was a pipe */
    int watching; /* on the loop's writers */
    int closing;  /* close once the queue is written */
    struct wchunk *head, *tail;
};

struct aw_process {
    aw_loop *loop;
    long refs;
    pid_t pid;
    int reaped;
    int returncode;
    int watch_fd;   /* pidfd, or the read end of the thread's pipe */
    int thread_wfd; /* the thread's write end; -1 without a thread */
    int has_thread;
    pthread_t thread;
    struct wpipe in;
    struct rpipe out, err;
    aw_future **waiters;
    size_t nwaiters, capwaiters;
    aw_future *comm;      /* communicate under way */
    aw_handle *comm_timer;
    aw_future *stream[3]; /* AW_PROCESS_STREAM: the pipes' streams */
};

/* ---- small helpers -------------------------------------------------------- */

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* A write that cannot raise SIGPIPE (transport.c's, for pipes). */
static ssize_t
write_nosigpipe(int fd, const void *data, size_t len)
{
    struct iovec v = {(void *)data, len};

    return aw__quiet_writev(fd, &v, 1);
}

/* ---- reading stdout and stderr ------------------------------------------ */

static int on_readable(aw_loop *loop, void *arg);
static int make_pipe(int fds[2], int parent_end);
static void rpipe_eof(struct rpipe *r, int error);
static void rpipe_serve(struct rpipe *r);
static void comm_check(struct aw_process *p);
static void comm_end(struct aw_process *p);

static void
rpipe_update_watch(struct rpipe *r)
{
    int want = r->fd >= 0 && !r->eof &&
               (r->collect || r->read != NULL || r->len - r->off < READ_AHEAD);

    if (want && !r->watching) {
        int rc = aw_loop_add_reader(r->proc->loop, r->fd, on_readable, r);

        if (rc == 0) {
            r->watching = 1;
        } else { /* the pipe cannot be watched (-EMFILE under select) */
            rpipe_eof(r, rc);
            rpipe_serve(r);
        }
    } else if (!want && r->watching) {
        aw_loop_remove_reader(r->proc->loop, r->fd);
        r->watching = 0;
    }
}

/* Hand len bytes from the front of the buffer to the waiting read. */
static void
rpipe_give(struct rpipe *r, size_t len)
{
    aw_bytes *b = aw_bytes_new(r->buf + r->off, len);

    if (b == NULL) {
        aw_future_set_error(r->read, -ENOMEM, NULL);
    } else if (aw_future_set_result(r->read, b,
                                    (aw_destroy_fn)aw_bytes_free) != 0) {
        aw_bytes_free(b);
    } else {
        r->off += len;
    }
    if (r->off == r->len)
        r->off = r->len = 0;
    aw_future_unref(r->read);
    r->read = NULL;
}

/* Settle the waiting read if the buffer can. */
static void
rpipe_serve(struct rpipe *r)
{
    size_t avail;

    if (r->read != NULL && aw_future_done(r->read)) { /* cancelled */
        aw_future_unref(r->read);
        r->read = NULL;
    }
    if (r->read == NULL)
        return;
    avail = r->len - r->off;
    if (r->line) {
        const char *nl = avail ? memchr(r->buf + r->off, '\n', avail) : NULL;

        if (nl != NULL)
            rpipe_give(r, (size_t)(nl - (r->buf + r->off)) + 1);
        else if (r->eof && (avail > 0 || r->error == 0))
            rpipe_give(r, avail);
    } else if (avail > 0) {
        rpipe_give(r, avail < r->want ? avail : r->want);
    } else if (r->eof && r->error == 0) {
        rpipe_give(r, 0);
    }
    if (r->read != NULL && r->eof) { /* eof with an error, nothing left */
        aw_future_set_error(r->read, r->error, "reading the child's pipe");
        aw_future_unref(r->read);
        r->read = NULL;
    }
}

static void
rpipe_eof(struct rpipe *r, int error)
{
    if (r->watching) {
        aw_loop_remove_reader(r->proc->loop, r->fd);
        r->watching = 0;
    }
    close_fd(&r->fd);
    r->eof = 1;
    r->error = error;
}

static int
on_readable(aw_loop *loop, void *arg)
{
    struct rpipe *r = arg;
    struct aw_process *p = r->proc;
    ssize_t n;

    (void)loop;
    if (r->cap - r->len < READ_CHUNK) {
        size_t cap = r->cap ? r->cap : READ_CHUNK;
        char *buf;

        if (r->off > 0) { /* slide the unread bytes to the front first */
            memmove(r->buf, r->buf + r->off, r->len - r->off);
            r->len -= r->off;
            r->off = 0;
        }
        while (cap - r->len < READ_CHUNK)
            cap *= 2;
        if (cap != r->cap) {
            buf = aw__realloc(r->buf, cap);
            if (buf == NULL)
                return -ENOMEM; /* reported; tried again when readable */
            r->buf = buf;
            r->cap = cap;
        }
    }
    n = read(r->fd, r->buf + r->len, READ_CHUNK);
    if (n > 0)
        r->len += (size_t)n;
    else if (n == 0)
        rpipe_eof(r, 0);
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        rpipe_eof(r, -errno);
    rpipe_serve(r);
    rpipe_update_watch(r);
    if (r->eof && p->comm != NULL)
        comm_check(p);
    return 0;
}

static struct rpipe *
rpipe_of(aw_process *p, int fd)
{
    if (fd == 1)
        return &p->out;
    if (fd == 2)
        return &p->err;
    return NULL;
}

static aw_future *
start_read(aw_process *p, int fd, size_t n, int line)
{
    struct rpipe *r;

    if (p == NULL)
        return NULL;
    r = rpipe_of(p, fd);
    if (r == NULL || r->eof == 2)
        return aw_future_failed(p->loop, -EINVAL, "fd %d is not a pipe", fd);
    if (p->comm != NULL && aw_future_done(p->comm))
        comm_end(p); /* a communicate cancelled: the pipes are free */
    if (r->read != NULL && aw_future_done(r->read)) {
        aw_future_unref(r->read);
        r->read = NULL;
    }
    if (r->read != NULL || r->collect)
        return aw_future_failed(p->loop, AW_EBUSY, "fd %d: a read waits", fd);
    r->read = aw_future_new(p->loop);
    if (r->read == NULL)
        return aw_future_failed(p->loop, -ENOMEM, NULL);
    r->want = n;
    r->line = line;
    if (!line && n == 0) {
        aw_future *f = r->read;

        r->read = NULL;
        aw_future_unref(f);
        return aw_future_resolved(p->loop, aw_bytes_new(NULL, 0),
                                  (aw_destroy_fn)aw_bytes_free);
    }
    aw_future_ref(r->read);
    {
        aw_future *f = r->read;

        rpipe_serve(r);
        rpipe_update_watch(r);
        return f;
    }
}

aw_future *
aw_process_read(aw_process *proc, int fd, size_t n)
{
    return start_read(proc, fd, n, 0);
}

aw_future *
aw_process_readline(aw_process *proc, int fd)
{
    return start_read(proc, fd, 0, 1);
}

/* ---- writing stdin ----------------------------------------------------- */

static int on_writable(aw_loop *loop, void *arg);

static void
wpipe_fail_all(struct wpipe *w, int code)
{
    struct wchunk *c;

    while ((c = w->head) != NULL) {
        w->head = c->next;
        if (c->done != NULL) {
            if (code == AW_ECANCELLED)
                aw_future_cancel(c->done, NULL);
            else
                aw_future_set_error(c->done, code, "writing to the child");
            aw_future_unref(c->done);
        }
        aw__free(c);
    }
    w->tail = NULL;
}

static void
wpipe_close(struct aw_process *p)
{
    struct wpipe *w = &p->in;

    if (w->watching) {
        aw_loop_remove_writer(p->loop, w->fd);
        w->watching = 0;
    }
    close_fd(&w->fd);
}

/* Write what is queued; returns 0, or the error that closed the pipe. */
static int
wpipe_flush(struct aw_process *p)
{
    struct wpipe *w = &p->in;
    struct wchunk *c;

    while ((c = w->head) != NULL) {
        ssize_t n = write_nosigpipe(w->fd, c->data + c->off, c->len - c->off);

        if (n < 0) {
            int e = errno;

            if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
                break;
            wpipe_fail_all(w, -e);
            wpipe_close(p);
            return -e;
        }
        c->off += (size_t)n;
        if (c->off < c->len)
            break;
        w->head = c->next;
        if (w->head == NULL)
            w->tail = NULL;
        if (c->done != NULL) {
            aw_future_set_result_int(c->done, 0);
            aw_future_unref(c->done);
        }
        aw__free(c);
    }
    if (w->head == NULL) {
        if (w->closing)
            wpipe_close(p);
        else if (w->watching) {
            aw_loop_remove_writer(p->loop, w->fd);
            w->watching = 0;
        }
    } else if (!w->watching) {
        int rc = aw_loop_add_writer(p->loop, w->fd, on_writable, p);

        if (rc < 0) { /* the pipe cannot be watched (-EMFILE under select) */
            wpipe_fail_all(w, rc);
            wpipe_close(p);
            return rc;
        }
        w->watching = 1;
    }
    return 0;
}

static int
on_writable(aw_loop *loop, void *arg)
{
    struct aw_process *p = arg;

    (void)loop;
    wpipe_flush(p);
    if (p->in.fd < 0 && p->comm != NULL)
        comm_check(p);
    return 0;
}

/* Queue len bytes (after writing what the pipe takes at once); *donep
 * gets the future of the chunk when one is queued and done is wanted. */
static int
wpipe_write(struct aw_process *p, const void *data, size_t len, int want_done,
            aw_future **donep)
{
    struct wpipe *w = &p->in;
    struct wchunk *c;
    size_t off = 0;

    if (w->head == NULL && len > 0) {
        ssize_t n = write_nosigpipe(w->fd, data, len);

        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
            errno != EINTR) {
            int e = -errno;

            wpipe_close(p);
            return e;
        }
        if (n > 0)
            off = (size_t)n;
    }
    if (off == len)
        return 0;
    c = aw__malloc(sizeof(*c) + (len - off));
    if (c == NULL)
        return -ENOMEM;
    c->next = NULL;
    c->done = NULL;
    if (want_done) {
        c->done = aw_future_new(p->loop);
        if (c->done == NULL) {
            aw__free(c);
            return -ENOMEM;
        }
        *donep = aw_future_ref(c->done);
    }
    c->off = 0;
    c->len = len - off;
    memcpy(c->data, (const char *)data + off, len - off);
    if (w->tail != NULL)
        w->tail->next = c;
    else
        w->head = c;
    w->tail = c;
    if (!w->watching) {
        int rc = aw_loop_add_writer(p->loop, w->fd, on_writable, p);

        if (rc < 0) { /* the chunk's future (if any) fails with rc */
            wpipe_fail_all(w, rc);
            wpipe_close(p);
            return 0;
        }
        w->watching = 1;
    }
    return 0;
}

aw_future *
aw_process_write(aw_process *proc, const void *data, size_t len)
{
    aw_future *done = NULL;
    int rc;

    if (proc == NULL)
        return NULL;
    if (!proc->in.piped || (data == NULL && len > 0))
        return aw_future_failed(proc->loop, -EINVAL,
                                "stdin is not a pipe, or no data");
    if (proc->in.fd < 0 || proc->in.closing)
        return aw_future_failed(proc->loop, AW_ECLOSED, "stdin is closed");
    rc = wpipe_write(proc, data, len, 1, &done);
    if (rc < 0)
        return aw_future_failed(proc->loop, rc, "writing to the child");
    return done != NULL ? done : aw_future_resolved_int(proc->loop, 0);
}

int
aw_process_close_stdin(aw_process *proc)
{
    if (proc == NULL || !proc->in.piped)
        return -EINVAL;
    proc->in.closing = 1;
    if (proc->in.fd >= 0 && proc->in.head == NULL)
        wpipe_close(proc);
    return 0;
}

/* ---- exit ---------------------------------------------------------------- */

static int
status_to_returncode(int status)
{
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 255;
}

static void
stop_watching(struct aw_process *p)
{
    if (p->has_thread) { /* first: it may still write to its pipe */
        pthread_join(p->thread, NULL);
        p->has_thread = 0;
    }
    if (p->watch_fd >= 0) {
        aw_loop_remove_reader(p->loop, p->watch_fd);
        close_fd(&p->watch_fd);
    }
    close_fd(&p->thread_wfd);
}

static void
set_reaped(struct aw_process *p, int status, int known)
{
    size_t i;

    p->reaped = 1;
    /* A child reaped by someone else (SIGCHLD ignored, a waitpid(-1)
     * elsewhere): asyncio reports 255 too. */
    p->returncode = known ? status_to_returncode(status) : 255;
    stop_watching(p);
    for (i = 0; i < p->nwaiters; i++) {
        aw_future_set_result_int(p->waiters[i], p->returncode);
        aw_future_unref(p->waiters[i]);
    }
    p->nwaiters = 0;
    if (p->comm != NULL)
        comm_check(p);
}

static int
on_exit_ready(aw_loop *loop, void *arg)
{
    struct aw_process *p = arg;
    int status = 0;
    pid_t r;

    (void)loop;
    do
        r = waitpid(p->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0; /* not yet (a spurious wake-up) */
    set_reaped(p, status, r == p->pid);
    return 0;
}

static void *
watch_thread(void *arg)
{
    struct aw_process *p = arg;
    siginfo_t info;
    char c = 0;

    /* WNOWAIT: the loop's thread reaps, so that a free racing with this
     * thread never finds the child reaped under it. */
    while (waitid(P_PID, (id_t)p->pid, &info, WEXITED | WNOWAIT) < 0 &&
           errno == EINTR)
        ;
    while (write(p->thread_wfd, &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

static int
start_thread(struct aw_process *p)
{
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&p->thread, NULL, watch_thread, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    p->has_thread = 1;
    return 0;
}

static int
open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0); /* close-on-exec */

    return fd < 0 ? -errno : (int)fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

/* Start noticing the child's exit: its pidfd on the loop, or a thread
 * that waits for it and then writes to a pipe on the loop. */
static int
watch_child(struct aw_process *p, int watcher)
{
    int fds[2];
    int rc;

    if (watcher != AW_PROCESS_WATCH_THREAD) {
        rc = open_pidfd(p->pid);
        if (rc >= 0) {
            p->watch_fd = rc;
            rc = aw_loop_add_reader(p->loop, p->watch_fd, on_exit_ready, p);
            if (rc < 0)
                close_fd(&p->watch_fd);
            return rc;
        }
        /* No pidfds (an old kernel, or a seccomp filter saying EPERM). */
        if (rc != -ENOSYS && rc != -EPERM)
            return rc;
        if (watcher == AW_PROCESS_WATCH_PIDFD)
            return -ENOSYS;
    }
    rc = make_pipe(fds, 0);
    if (rc < 0)
        return rc;
    p->watch_fd = fds[0];
    p->thread_wfd = fds[1];
    rc = aw_loop_add_reader(p->loop, p->watch_fd, on_exit_ready, p);
    if (rc < 0)
        return rc;
    rc = start_thread(p);
    if (rc < 0)
        aw_loop_remove_reader(p->loop, p->watch_fd);
    return rc;
}

aw_future *
aw_process_wait(aw_process *proc)
{
    aw_future *f;

    if (proc == NULL)
        return NULL;
    if (proc->reaped)
        return aw_future_resolved_int(proc->loop, proc->returncode);
    if (proc->nwaiters == proc->capwaiters) {
        size_t cap = proc->capwaiters ? proc->capwaiters * 2 : 4;
        aw_future **w = aw__reallocarray(proc->waiters, cap, sizeof(*w));

        if (w == NULL)
            return aw_future_failed(proc->loop, -ENOMEM, NULL);
        proc->waiters = w;
        proc->capwaiters = cap;
    }
    f = aw_future_new(proc->loop);
    if (f == NULL)
        return aw_future_failed(proc->loop, -ENOMEM, NULL);
    proc->waiters[proc->nwaiters++] = aw_future_ref(f);
    return f;
}

int
aw_process_returncode(const aw_process *proc, int *code)
{
    if (proc == NULL || code == NULL)
        return -EINVAL;
    if (!proc->reaped)
        return AW_EINVALSTATE;
    *code = proc->returncode;
    return 0;
}

pid_t
aw_process_pid(const aw_process *proc)
{
    return proc == NULL ? -1 : proc->pid;
}

int
aw_process_send_signal(aw_process *proc, int signum)
{
    if (proc == NULL || signum <= 0 || signum >= NSIG)
        return -EINVAL;
    if (proc->reaped)
        return -ESRCH;
    /* Not reaped: the pid is still ours, even if the child has exited. */
    return kill(proc->pid, signum) < 0 ? -errno : 0;
}

int
aw_process_terminate(aw_process *proc)
{
    return aw_process_send_signal(proc, SIGTERM);
}

int
aw_process_kill(aw_process *proc)
{
    return aw_process_send_signal(proc, SIGKILL);
}

/* ---- communicate --------------------------------------------------------- */

static void
output_free(void *ptr)
{
    aw_process_output *o = ptr;

    if (o == NULL)
        return;
    aw_bytes_free(o->out);
    aw_bytes_free(o->err);
    aw__free(o);
}

static aw_bytes *
take_all(struct rpipe *r)
{
    aw_bytes *b;

    if (r->eof == 2)
        return NULL;
    b = aw_bytes_new(r->buf ? r->buf + r->off : NULL, r->len - r->off);
    r->off = r->len = 0;
    return b;
}

static void
comm_end(struct aw_process *p)
{
    p->out.collect = p->err.collect = 0;
    if (p->comm_timer != NULL) {
        aw_handle_cancel(p->comm_timer);
        aw_handle_unref(p->comm_timer);
        p->comm_timer = NULL;
    }
    aw_future_unref(p->comm);
    p->comm = NULL;
    rpipe_update_watch(&p->out);
    rpipe_update_watch(&p->err);
}

static void
comm_check(struct aw_process *p)
{
    aw_process_output *o;
    int error;

    if (aw_future_done(p->comm)) { /* cancelled */
        comm_end(p);
        return;
    }
    if (p->in.fd >= 0 || !p->out.eof || !p->err.eof || !p->reaped)
        return;
    error = p->out.error ? p->out.error : p->err.error;
    if (error != 0) {
        aw_future_set_error(p->comm, error, "reading the child's output");
        comm_end(p);
        return;
    }
    o = aw__calloc(1, sizeof(*o));
    if (o != NULL) {
        o->returncode = p->returncode;
        o->out = take_all(&p->out);
        o->err = take_all(&p->err);
        if ((p->out.eof != 2 && o->out == NULL) ||
            (p->err.eof != 2 && o->err == NULL)) {
            output_free(o);
            o = NULL;
        }
    }
    if (o == NULL)
        aw_future_set_error(p->comm, -ENOMEM, NULL);
    else
        aw_future_set_result(p->comm, o, output_free);
    comm_end(p);
}

static int
comm_timeout(aw_loop *loop, void *arg)
{
    struct aw_process *p = arg;

    (void)loop;
    aw_handle_unref(p->comm_timer);
    p->comm_timer = NULL;
    if (p->comm != NULL) {
        aw_future_set_error(p->comm, AW_ETIMEDOUT, "communicate timed out");
        comm_end(p);
    }
    return 0;
}

aw_future *
aw_process_communicate(aw_process *proc, const void *input, size_t len,
                       double timeout)
{
    aw_future *f;
    int rc;

    if (proc == NULL)
        return NULL;
    if (proc->stream[0] != NULL || proc->stream[1] != NULL ||
        proc->stream[2] != NULL)
        return aw_future_failed(proc->loop, AW_EINVALSTATE,
                                "communicate with pipes given as streams: "
                                "use the streams");
    if ((input == NULL && len > 0) || (len > 0 && proc->in.fd < 0) ||
        isnan(timeout))
        return aw_future_failed(proc->loop, -EINVAL, "bad communicate input");
    if (proc->comm != NULL && aw_future_done(proc->comm))
        comm_end(proc);
    if (proc->comm != NULL || (proc->out.read && !aw_future_done(proc->out.read)) ||
        (proc->err.read && !aw_future_done(proc->err.read)))
        return aw_future_failed(proc->loop, AW_EBUSY, "a read waits");
    f = aw_future_new(proc->loop);
    if (f == NULL)
        return aw_future_failed(proc->loop, -ENOMEM, NULL);
    if (!(isinf(timeout) && timeout > 0)) {
        /* A timeout already past expires on the next pass (asyncio). */
        rc = aw_loop_call_later(proc->loop, timeout > 0 ? timeout : 0,
                                comm_timeout, proc,
                                &proc->comm_timer);
        if (rc < 0) {
            aw_future_unref(f);
            return aw_future_failed(proc->loop, rc, NULL);
        }
    }
    if (proc->in.fd >= 0 && !proc->in.closing) {
        rc = len > 0 ? wpipe_write(proc, input, len, 0, NULL) : 0;
        if (rc == -ENOMEM) {
            if (proc->comm_timer != NULL) {
                aw_handle_cancel(proc->comm_timer);
                aw_handle_unref(proc->comm_timer);
                proc->comm_timer = NULL;
            }
            aw_future_unref(f);
            return aw_future_failed(proc->loop, rc, NULL);
        }
        /* Other errors (EPIPE: the child does not read) are ignored, as
         * asyncio's communicate does; the pipe is closed then. */
        aw_process_close_stdin(proc);
    }
    proc->comm = aw_future_ref(f);
    proc->out.collect = proc->out.fd >= 0;
    proc->err.collect = proc->err.fd >= 0;
    rpipe_update_watch(&proc->out);
    rpipe_update_watch(&proc->err);
    comm_check(proc);
    return f;
}

/* ---- spawn --------------------------------------------------------------- */

/* A pipe, both ends close-on-exec, neither 0, 1 or 2 (a dup2 onto itself
 * would keep close-on-exec), the parent's end non-blocking. */
static int
make_pipe(int fds[2], int parent_end)
{
    int i;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    for (i = 0; i < 2; i++) {
        if (fds[i] <= 2) {
            int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);

            if (fd < 0) {
                int e = -errno;

                close(fds[0]);
                close(fds[1]);
                fds[0] = fds[1] = -1;
                return e;
            }
            close(fds[i]);
            fds[i] = fd;
        }
    }
    if (fcntl(fds[parent_end], F_SETFL,
              fcntl(fds[parent_end], F_GETFL) | O_NONBLOCK) < 0) {
        int e = -errno;

        close(fds[0]);
        close(fds[1]);
        fds[0] = fds[1] = -1;
        return e;
    }
    return 0;
}

struct spawn_fds {
    int in[2], out[2], err[2];
};

static void
close_spawn_fds(struct spawn_fds *s)
{
    close_fd(&s->in[0]);
    close_fd(&s->in[1]);
    close_fd(&s->out[0]);
    close_fd(&s->out[1]);
    close_fd(&s->err[0]);
    close_fd(&s->err[1]);
}

/* The file actions for one of the child's fds 0, 1, 2. */
static int
stdio_action(posix_spawn_file_actions_t *fa, int target, int mode,
             int fds[2], int child_end)
{
    switch (mode) {
    case AW_PROCESS_INHERIT:
        return 0;
    case AW_PROCESS_PIPE:
    case AW_PROCESS_STREAM:
        return posix_spawn_file_actions_adddup2(fa, fds[child_end], target);
    case AW_PROCESS_DEVNULL:
        return posix_spawn_file_actions_addopen(
            fa, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0);
    case AW_PROCESS_STDOUT:
        return posix_spawn_file_actions_adddup2(fa, 1, target);
    default:
        return EINVAL;
    }
}

static int
check_options(const aw_process_options *o)
{
    if (o == NULL)
        return 0;
    if (o->size < offsetof(aw_process_options, watcher) + sizeof(o->watcher))
        return -EINVAL;
    if (o->stdin_mode < AW_PROCESS_INHERIT ||
        o->stdin_mode > AW_PROCESS_STREAM ||
        o->stdin_mode == AW_PROCESS_STDOUT ||
        o->stdout_mode < AW_PROCESS_INHERIT ||
        o->stdout_mode > AW_PROCESS_STREAM ||
        o->stdout_mode == AW_PROCESS_STDOUT ||
        o->stderr_mode < AW_PROCESS_INHERIT ||
        o->stderr_mode > AW_PROCESS_STREAM ||
        o->watcher < AW_PROCESS_WATCH_AUTO ||
        o->watcher > AW_PROCESS_WATCH_THREAD)
        return -EINVAL;
#if !(defined(__GLIBC__) &&                                                  \
      (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29)))
    if (o->cwd != NULL)
        return -ENOTSUP;
#endif
    return 0;
}

static int
do_spawn(pid_t *pidp, const char *program, const char *const *argv,
         const aw_process_options *o, struct spawn_fds *s)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t mask, def;
    int in = o ? o->stdin_mode : 0, out = o ? o->stdout_mode : 0;
    int err = o ? o->stderr_mode : 0;
    int rc;

    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return -rc;
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -rc;
    }
    sigemptyset(&mask);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigaddset(&def, SIGXFSZ);
    rc = posix_spawnattr_setflags(&attr,
                                  POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&attr, &mask);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&attr, &def);
    if (rc == 0)
        rc = stdio_action(&fa, 0, in, s->in, 0);
    if (rc == 0)
        rc = stdio_action(&fa, 1, out, s->out, 1);
    if (rc == 0)
        rc = stdio_action(&fa, 2, err, s->err, 1);
#if defined(__GLIBC__) &&                                                    \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
    if (rc == 0 && o != NULL && o->cwd != NULL)
        rc = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
#endif
    if (rc == 0)
        rc = posix_spawnp(pidp, program, &fa, &attr, (char *const *)argv,
                          o && o->env ? (char *const *)o->env : environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
}

static void
rpipe_init(struct rpipe *r, struct aw_process *p, int fd)
{
    r->proc = p;
    r->fd = fd;
    r->eof = fd < 0 ? 2 : 0; /* 2: never a pipe */
}

static int
is_pipe(int mode)
{
    return mode == AW_PROCESS_PIPE || mode == AW_PROCESS_STREAM;
}

/* A pipe given as a stream: *fdp goes to the stream (-1 then). */
static void
as_stream(struct aw_process *p, int which, int mode, int *fdp)
{
    aw_future *f;

    if (mode != AW_PROCESS_STREAM || *fdp < 0)
        return;
    f = which == 0 ? aw_open_write_pipe(p->loop, *fdp)
                   : aw_open_read_pipe(p->loop, *fdp);
    if (f != NULL && aw_future_done(f) && aw_future_error(f) != 0)
        close(*fdp); /* refused at once: the fd is still ours */
    *fdp = -1;
    p->stream[which] = f;
}

aw_future *
aw_process_stream(aw_process *proc, int fd)
{
    if (proc == NULL)
        return NULL;
    if (fd < 0 || fd > 2 || proc->stream[fd] == NULL)
        return aw_future_failed(proc->loop, -EINVAL,
                                "fd %d was not given as a stream", fd);
    return aw_future_ref(proc->stream[fd]);
}

/* Kill and reap a child that will not be handed out. */
static void
kill_and_reap(pid_t pid)
{
    int status;

    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

int
aw_process_exec(aw_loop *loop, const char *program, const char *const *argv,
                const aw_process_options *options, aw_process **procp)
{
    struct spawn_fds s;
    struct aw_process *p;
    int watcher = options ? options->watcher : AW_PROCESS_WATCH_AUTO;
    int rc, i;

    if (loop == NULL || program == NULL || argv == NULL || argv[0] == NULL ||
        procp == NULL)
        return -EINVAL;
    if ((rc = check_options(options)) < 0)
        return rc;
    if (aw_loop_is_closed(loop))
        return AW_ECLOSED;
    memset(&s, -1, sizeof(s));
    p = aw__calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    if (options && is_pipe(options->stdin_mode))
        rc = make_pipe(s.in, 1);
    if (rc == 0 && options && is_pipe(options->stdout_mode))
        rc = make_pipe(s.out, 0);
    if (rc == 0 && options && is_pipe(options->stderr_mode))
        rc = make_pipe(s.err, 0);
    if (rc == 0)
        rc = do_spawn(&p->pid, program, argv, options, &s);
    if (rc < 0) {
        close_spawn_fds(&s);
        aw__free(p);
        return rc;
    }
    p->loop = loop;
    p->refs = 1;
    p->watch_fd = p->thread_wfd = -1;
    close_fd(&s.in[0]);
    close_fd(&s.out[1]);
    close_fd(&s.err[1]);
    if (options != NULL) {
        /* Pipes given as streams are the streams': the process does not
         * read or write them itself. */
        as_stream(p, 0, options->stdin_mode, &s.in[1]);
        as_stream(p, 1, options->stdout_mode, &s.out[0]);
        as_stream(p, 2, options->stderr_mode, &s.err[0]);
    }
    p->in.fd = s.in[1];
    p->in.piped = s.in[1] >= 0;
    rpipe_init(&p->out, p, s.out[0]);
    rpipe_init(&p->err, p, s.err[0]);
    s.in[1] = s.out[0] = s.err[0] = -1;
    rc = watch_child(p, watcher);
    if (rc < 0) {
        stop_watching(p);
        kill_and_reap(p->pid);
        close_fd(&p->in.fd);
        close_fd(&p->out.fd);
        close_fd(&p->err.fd);
        for (i = 0; i < 3; i++)
            aw_future_unref(p->stream[i]); /* the streams close their fds */
        aw__free(p);
        return rc;
    }
    aw__loop_track(loop, 1);
    *procp = p;
    return 0;
}

int
aw_process_shell(aw_loop *loop, const char *command,
                 const aw_process_options *options, aw_process **procp)
{
    const char *argv[] = {"/bin/sh", "-c", command, NULL};

    if (command == NULL)
        return -EINVAL;
    return aw_process_exec(loop, "/bin/sh", argv, options, procp);
}

/* ---- lifetime -------------------------------------------------------------- */

aw_process *
aw_process_ref(aw_process *proc)
{
    if (proc != NULL)
        proc->refs++;
    return proc;
}

static void
rpipe_release(struct rpipe *r)
{
    if (r->read != NULL) {
        aw_future_cancel(r->read, NULL);
        aw_future_unref(r->read);
        r->read = NULL;
    }
    if (r->watching) {
        aw_loop_remove_reader(r->proc->loop, r->fd);
        r->watching = 0;
    }
    close_fd(&r->fd);
    aw__free(r->buf);
    r->buf = NULL;
}

void
aw_process_unref(aw_process *proc)
{
    size_t i;

    if (proc == NULL || --proc->refs > 0)
        return;
    if (proc->comm != NULL) {
        aw_future_cancel(proc->comm, NULL);
        comm_end(proc);
    }
    rpipe_release(&proc->out);
    rpipe_release(&proc->err);
    for (i = 0; i < 3; i++)
        aw_future_unref(proc->stream[i]);
    wpipe_fail_all(&proc->in, AW_ECANCELLED);
    wpipe_close(proc);
    if (!proc->reaped) {
        if (proc->watch_fd >= 0)
            aw_loop_remove_reader(proc->loop, proc->watch_fd);
        kill_and_reap(proc->pid); /* then the thread, if any, returns */
        stop_watching(proc);
    }
    for (i = 0; i < proc->nwaiters; i++) {
        aw_future_cancel(proc->waiters[i], NULL);
        aw_future_unref(proc->waiters[i]);
    }
    aw__free(proc->waiters);
    aw__loop_track(proc->loop, -1);
    aw__free(proc);
}

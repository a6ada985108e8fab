/* SPDX-License-Identifier: MIT */
/* await/process.h: subprocesses, asyncio's create_subprocess_exec /
 * create_subprocess_shell and Process: spawn, pipes, wait, signals,
 * communicate. */
#ifndef AWAIT_PROCESS_H
#define AWAIT_PROCESS_H

#include <stddef.h>
#include <sys/types.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"
#include "await/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A child process started on a loop (asyncio's Process).  Opaque; used
 * from the loop's thread. */
typedef struct aw_process aw_process;

/* What a child's stdin, stdout or stderr is (asyncio's stdin=, stdout=,
 * stderr= arguments). */
enum aw_process_stdio {
    AW_PROCESS_INHERIT = 0, /* the parent's (asyncio's None) */
    AW_PROCESS_PIPE,        /* a pipe to the parent (subprocess.PIPE) */
    AW_PROCESS_DEVNULL,     /* /dev/null (subprocess.DEVNULL) */
    AW_PROCESS_STDOUT,      /* stderr only: where stdout goes (STDOUT) */
    AW_PROCESS_STREAM       /* a pipe to the parent, as a stream
                             * (asyncio's proc.stdin/stdout/stderr):
                             * aw_process_stream() */
};

/* How a child's exit is noticed. */
enum aw_process_watcher {
    AW_PROCESS_WATCH_AUTO = 0, /* a pidfd where the kernel has them (Linux
                                * 5.3), else a thread */
    AW_PROCESS_WATCH_PIDFD,    /* a pidfd watched by the loop; -ENOSYS
                                * where there is none */
    AW_PROCESS_WATCH_THREAD    /* a thread waiting for this child only
                                * (asyncio's ThreadedChildWatcher), one
                                * per child until it exits */
};

/*
 * The options of a spawn.  Zero it (all defaults: inherit stdio, the
 * parent's environment and directory), set `size` to
 * sizeof(aw_process_options), then the fields.  NULL options are the
 * defaults.
 */
typedef struct aw_process_options {
    size_t size;            /* sizeof(aw_process_options) of its maker */
    const char *const *env; /* "NAME=value" strings, NULL-terminated; NULL:
                             * the parent's environment */
    const char *cwd;        /* working directory; NULL: the parent's */
    int stdin_mode;         /* enum aw_process_stdio (not _STDOUT) */
    int stdout_mode;        /* enum aw_process_stdio (not _STDOUT) */
    int stderr_mode;        /* enum aw_process_stdio */
    int watcher;            /* enum aw_process_watcher */
} aw_process_options;

/*
 * aw_process_exec - start `program` (looked up in PATH when it has no
 * slash) with the arguments argv (NULL-terminated; argv[0] included, as
 * execvp takes them) (asyncio's create_subprocess_exec).  The child is
 * made with posix_spawn; every descriptor the library opens is
 * close-on-exec, so the child gets 0, 1 and 2 and what the application
 * left open without FD_CLOEXEC, nothing else; its signal mask is empty
 * and SIGPIPE is back to its default.  On success stores the process in
 * *procp (the caller owns it: aw_process_unref()) and returns 0.
 * Errors, with nothing started and *procp untouched: -EINVAL (NULL
 * argument, empty argv, a mode out of range, _STDOUT for stdin or stdout,
 * options of a wrong size), AW_ECLOSED, -ENOMEM, -EMFILE, -ENOSYS for
 * AW_PROCESS_WATCH_PIDFD without pidfds, -ENOTSUP for cwd where
 * posix_spawn cannot change directory, and the error of the exec
 * (-ENOENT, -EACCES, ... : asyncio raises it from
 * create_subprocess_exec).
 */
AW_EXTERN int aw_process_exec(aw_loop *loop, const char *program,
                              const char *const *argv,
                              const aw_process_options *options,
                              aw_process **procp);

/*
 * aw_process_shell - run `command` with /bin/sh -c (asyncio's
 * create_subprocess_shell).  As aw_process_exec() otherwise; a command
 * the shell cannot find is the exit status 127, not an error here.
 */
AW_EXTERN int aw_process_shell(aw_loop *loop, const char *command,
                               const aw_process_options *options,
                               aw_process **procp);

/* aw_process_ref - take another reference; returns proc. */
AW_EXTERN aw_process *aw_process_ref(aw_process *proc);

/*
 * aw_process_unref - drop a reference.  The last one closes the pipes
 * and frees the process; a child still running then is killed (SIGKILL)
 * and reaped before the call returns, as asyncio's transport close does,
 * so that no zombie is left.  Its pending futures are cancelled.
 * Accepts NULL.
 */
AW_EXTERN void aw_process_unref(aw_process *proc);

/* aw_process_pid - the child's process id (asyncio's pid); -1 for NULL. */
AW_EXTERN pid_t aw_process_pid(const aw_process *proc);

/*
 * aw_process_returncode - asyncio's returncode: once the child has been
 * reaped, stores its exit status in *code (negative -N when signal N
 * killed it) and returns 0; AW_EINVALSTATE while it runs; -EINVAL.
 */
AW_EXTERN int aw_process_returncode(const aw_process *proc, int *code);

/*
 * aw_process_wait - a future settled with the exit status (an integer
 * result, aw_future_result_int(); negative for a signal death) once the
 * child has exited and been reaped (asyncio's wait).  Any number may
 * wait.  Cancelling it does not touch the child.  It does not read the
 * pipes: a child writing more than a pipe holds to a pipe nobody reads
 * blocks, as in asyncio (use aw_process_communicate()).  The returned
 * future has a reference taken; NULL for a NULL proc; out of memory, a
 * future failed with -ENOMEM.
 */
AW_EXTERN aw_future *aw_process_wait(aw_process *proc);

/*
 * aw_process_send_signal - send `signum` to the child (asyncio's
 * send_signal); aw_process_terminate sends SIGTERM, aw_process_kill
 * SIGKILL.  Returns 0; -ESRCH once the child has been reaped (its pid may
 * be another process's by then: nothing is sent); -EINVAL for NULL or a
 * bad signal number.
 */
AW_EXTERN int aw_process_send_signal(aw_process *proc, int signum);
AW_EXTERN int aw_process_terminate(aw_process *proc);
AW_EXTERN int aw_process_kill(aw_process *proc);

/*
 * Reading the child's stdout (fd 1) or stderr (fd 2) when it is a pipe
 * (asyncio's proc.stdout.read / readline).  One read at a time on each
 * pipe (another fails with AW_EBUSY).  Results are aw_bytes owned by the
 * future.  Up to 64 KiB are read ahead while no read waits.
 *
 * aw_process_read - up to n bytes as soon as any are there; empty bytes
 *   at end of file (the child closed it or exited).
 * aw_process_readline - up to and including "\n"; at end of file the
 *   last bytes without one, or empty bytes.
 *
 * The returned future has a reference taken; NULL for a NULL proc; a
 * future failed with -EINVAL when fd is not 1 or 2 or not a pipe,
 * AW_EBUSY while another read or aw_process_communicate() uses the pipe,
 * a system error (-EIO...) when reading failed, -EMFILE when the loop
 * cannot watch the pipe (an fd of FD_SETSIZE or more under libevent's
 * select backend).  Cancelling a waiting read takes nothing.
 */
AW_EXTERN aw_future *aw_process_read(aw_process *proc, int fd, size_t n);
AW_EXTERN aw_future *aw_process_readline(aw_process *proc, int fd);

/*
 * aw_process_write - write len bytes to the child's stdin pipe (asyncio's
 * proc.stdin.write followed by drain).  What the pipe does not take at
 * once is copied and queued.  The future settles with 0 once all of it
 * went into the pipe; with -EPIPE when the child closed its end (no
 * SIGPIPE is raised); -EINVAL when stdin is not a pipe; AW_ECLOSED after
 * aw_process_close_stdin(); -EMFILE when the loop cannot watch the pipe
 * (the pipe is closed then).  The returned future has a reference taken;
 * NULL for a NULL proc.
 */
AW_EXTERN aw_future *aw_process_write(aw_process *proc, const void *data,
                                      size_t len);

/*
 * aw_process_close_stdin - close the stdin pipe once what is queued was
 * written (asyncio's stdin.close / write_eof), so that the child sees end
 * of file.  Returns 0; 0 again when already closed; -EINVAL when stdin is
 * not a pipe or for NULL.
 */
AW_EXTERN int aw_process_close_stdin(aw_process *proc);

/*
 * aw_process_stream - the stream of the child's fd 0, 1 or 2 given as
 * AW_PROCESS_STREAM (asyncio's proc.stdin, proc.stdout, proc.stderr): a
 * future whose result is the aw_stream (as aw_open_write_pipe() gives for
 * stdin, aw_open_read_pipe() for stdout and stderr; take it with
 * AW_AWAIT_TAKE or aw_future_take_result() and release it with
 * aw_stream_unref()).  The same future each call; a reference taken.  A
 * future failed with -EINVAL for another fd; NULL for a NULL proc.  The
 * process itself neither reads nor writes such a pipe: aw_process_read(),
 * _readline(), _write() refuse it, and aw_process_communicate() fails
 * with AW_EINVALSTATE when any pipe is a stream.
 */
AW_EXTERN aw_future *aw_process_stream(aw_process *proc, int fd);

/* What aw_process_communicate() gives: the bytes read from stdout and
 * stderr (NULL for one that is not a pipe), and the exit status. */
typedef struct aw_process_output {
    aw_bytes *out;
    aw_bytes *err;
    int returncode;
} aw_process_output;

/*
 * aw_process_communicate - write input (len bytes, may be 0 and NULL) to
 * stdin and close it, read stdout and stderr to their end, wait for the
 * child (asyncio's communicate): the future's result is an
 * aw_process_output owned by the future (take it with
 * aw_future_take_result() and free it with the destroy function given).
 * A child that closes its stdin early is not an error (its -EPIPE is
 * ignored, as asyncio does).  timeout: seconds (AW_NO_TIMEOUT: none; a
 * timeout already past expires on the next pass); when it expires the
 * future fails with
 * AW_ETIMEDOUT and the child keeps running (asyncio's wait_for around
 * communicate; what was read is dropped).  input without a stdin pipe is
 * -EINVAL.  The returned future has a reference taken; NULL for a NULL
 * proc; a failed future for -EINVAL, AW_EBUSY (a read or another
 * communicate under way), -ENOMEM.
 */
AW_EXTERN aw_future *aw_process_communicate(aw_process *proc,
                                            const void *input, size_t len,
                                            double timeout);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_PROCESS_H */

/* SPDX-License-Identifier: MIT */
/* test_process.c: subprocesses, after CPython's
 * test_asyncio/test_subprocess.py where it applies: exit codes, signal
 * deaths, pipes, communicate, both child watchers, no zombie, no fd
 * leaked into the child. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static aw_process_options
opts(int in, int out, int err)
{
    aw_process_options o;

    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.stdin_mode = in;
    o.stdout_mode = out;
    o.stderr_mode = err;
    return o;
}

static aw_process *
shell(const char *cmd, const aw_process_options *o)
{
    aw_process *p = NULL;

    ck_assert_int_eq(aw_process_shell(loop, cmd, o, &p), 0);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_gt(aw_process_pid(p), 0);
    return p;
}

/* Wait for the child; returns its exit status. */
static int
wait_code(aw_loop *l, aw_process *p)
{
    aw_future *f = aw_process_wait(p);
    intptr_t code = 12345;

    ck_assert_int_eq(aw_loop_run_until_complete(l, f), 0);
    ck_assert_int_eq(aw_future_result_int(f, &code), 0);
    aw_future_unref(f);
    return (int)code;
}

/* Run a read future to its end; returns its bytes as a malloc'd string. */
static char *
read_str(aw_future *f)
{
    void *res = NULL;
    char *s;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    s = strdup(aw_bytes_cstr(res));
    aw_future_unref(f);
    return s;
}

static void
assert_no_child_left(void)
{
    int status;

    errno = 0;
    ck_assert_int_eq(waitpid(-1, &status, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* ---- exit status ---------------------------------------------------------- */

static void
check_exit_codes(int watcher)
{
    aw_process_options o = opts(0, 0, 0);
    aw_process *p;
    int code = -1;

    o.watcher = watcher;
    p = shell("exit 7", &o);
    ck_assert_int_eq(aw_process_returncode(p, &code), AW_EINVALSTATE);
    ck_assert_int_eq(wait_code(loop, p), 7);
    ck_assert_int_eq(aw_process_returncode(p, &code), 0);
    ck_assert_int_eq(code, 7);
    /* A wait after the end is settled at once with the same status. */
    ck_assert_int_eq(wait_code(loop, p), 7);
    aw_process_unref(p);
    {
        const char *argv[] = {"true", NULL};

        ck_assert_int_eq(aw_process_exec(loop, "true", argv, &o, &p), 0);
        ck_assert_int_eq(wait_code(loop, p), 0);
        aw_process_unref(p);
    }
    assert_no_child_left();
}

START_TEST(exit_codes)
{
    check_exit_codes(AW_PROCESS_WATCH_AUTO);
}
END_TEST

START_TEST(exit_codes_thread_watcher)
{
    check_exit_codes(AW_PROCESS_WATCH_THREAD);
}
END_TEST

START_TEST(exit_codes_pidfd_watcher)
{
    aw_process_options o = opts(0, 0, 0);
    aw_process *p = NULL;
    int rc;

    o.watcher = AW_PROCESS_WATCH_PIDFD;
    rc = aw_process_shell(loop, "exit 0", &o, &p);
    if (rc == -ENOSYS)
        return; /* a kernel without pidfds */
    ck_assert_int_eq(rc, 0);
    aw_process_unref(p);
    check_exit_codes(AW_PROCESS_WATCH_PIDFD);
}
END_TEST

/* asyncio: test_kill, test_terminate, test_send_signal. */
START_TEST(signal_death_negative_returncode)
{
    aw_process_options o = opts(0, 0, 0);
    aw_process *p;
    int code = 0;

    p = shell("kill -9 $$", &o);
    ck_assert_int_eq(wait_code(loop, p), -SIGKILL);
    aw_process_unref(p);

    p = shell("exec sleep 30", &o);
    ck_assert_int_eq(aw_process_terminate(p), 0);
    ck_assert_int_eq(wait_code(loop, p), -SIGTERM);
    /* Reaped: no signal can reach a pid that may be another's now. */
    ck_assert_int_eq(aw_process_send_signal(p, SIGTERM), -ESRCH);
    ck_assert_int_eq(aw_process_kill(p), -ESRCH);
    ck_assert_int_eq(aw_process_returncode(p, &code), 0);
    ck_assert_int_eq(code, -SIGTERM);
    aw_process_unref(p);

    o.watcher = AW_PROCESS_WATCH_THREAD;
    p = shell("exec sleep 30", &o);
    ck_assert_int_eq(aw_process_send_signal(p, SIGUSR1), 0);
    ck_assert_int_eq(wait_code(loop, p), -SIGUSR1);
    aw_process_unref(p);
    assert_no_child_left();
}
END_TEST

/* A child that ignores SIGTERM lives on, then SIGKILL ends it. */
START_TEST(ignores_sigterm_then_killed)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, 0);
    aw_process *p;
    char *s;

    p = shell("trap '' TERM; echo ready; read x; echo alive $x; read y", &o);
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "ready\n");
    free(s);
    ck_assert_int_eq(aw_process_terminate(p), 0);
    aw_future_unref(aw_process_write(p, "1\n", 2));
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "alive 1\n");
    free(s);
    ck_assert_int_eq(aw_process_kill(p), 0);
    ck_assert_int_eq(wait_code(loop, p), -SIGKILL);
    aw_process_unref(p);
    assert_no_child_left();
}
END_TEST

/* ---- pipes ------------------------------------------------------------------ */

START_TEST(stdout_readline_read_eof)
{
    aw_process_options o = opts(0, AW_PROCESS_PIPE, AW_PROCESS_PIPE);
    aw_process *p;
    char *s;

    p = shell("echo hello; echo world; printf tail; echo oops >&2", &o);
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "hello\n");
    free(s);
    s = read_str(aw_process_read(p, 1, 3));
    ck_assert_str_eq(s, "wor");
    free(s);
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "ld\n");
    free(s);
    s = read_str(aw_process_readline(p, 1)); /* the end without newline */
    ck_assert_str_eq(s, "tail");
    free(s);
    s = read_str(aw_process_read(p, 1, 100)); /* end of file */
    ck_assert_str_eq(s, "");
    free(s);
    s = read_str(aw_process_readline(p, 2));
    ck_assert_str_eq(s, "oops\n");
    free(s);
    ck_assert_int_eq(wait_code(loop, p), 0);
    aw_process_unref(p);
}
END_TEST

START_TEST(stderr_into_stdout_and_devnull)
{
    aw_process_options o =
        opts(AW_PROCESS_DEVNULL, AW_PROCESS_PIPE, AW_PROCESS_STDOUT);
    aw_process_output *out;
    aw_process *p;
    aw_future *f;
    void *res;

    p = shell("cat; echo out; echo err >&2", &o);
    f = aw_process_communicate(p, NULL, 0, AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    out = res;
    ck_assert_ptr_null(out->err);
    ck_assert_str_eq(aw_bytes_cstr(out->out), "out\nerr\n");
    ck_assert_int_eq(out->returncode, 0);
    aw_future_unref(f);
    aw_process_unref(p);
}
END_TEST

START_TEST(env_and_cwd)
{
    const char *env[] = {"AW_TEST_VAR=bar", NULL};
    aw_process_options o = opts(0, AW_PROCESS_PIPE, 0);
    aw_process *p;
    char *s;

    o.env = env;
    o.cwd = "/";
    p = shell("echo $AW_TEST_VAR; pwd", &o);
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "bar\n");
    free(s);
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "/\n");
    free(s);
    ck_assert_int_eq(wait_code(loop, p), 0);
    aw_process_unref(p);
}
END_TEST

/* A read cancelled while it waits takes nothing: the next one gets the
 * data. */
START_TEST(read_cancelled_takes_nothing)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, 0);
    aw_process *p;
    aw_future *f;
    char *s;

    p = shell("read x; echo got $x", &o);
    f = aw_process_readline(p, 1);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    aw_future_unref(f);
    aw_future_unref(aw_process_write(p, "1\n", 2));
    s = read_str(aw_process_readline(p, 1));
    ck_assert_str_eq(s, "got 1\n");
    free(s);
    ck_assert_int_eq(wait_code(loop, p), 0);
    aw_process_unref(p);
}
END_TEST

/* A communicate cancelled stops collecting; the process goes on. */
START_TEST(communicate_cancelled)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, 0);
    aw_process *p;
    aw_future *f;

    p = shell("exec sleep 30", &o);
    f = aw_process_communicate(p, NULL, 0, AW_NO_TIMEOUT);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    aw_future_unref(f);
    /* The pipe is free again for a read, while the child runs. */
    f = aw_process_read(p, 1, 10);
    ck_assert_int_eq(aw_future_state(f), AW_FUTURE_PENDING);
    ck_assert_int_eq(aw_process_kill(p), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0); /* eof */
    aw_future_unref(f);
    ck_assert_int_eq(wait_code(loop, p), -SIGKILL);
    aw_process_unref(p);
}
END_TEST

/* The child closes its stdout long before it exits: the reader sees end
 * of file while the child still runs. */
START_TEST(child_closes_stdout_early)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, 0);
    aw_process *p;
    char *s;
    int code;

    p = shell("echo bye; exec >&-; read x; exit 5", &o);
    s = read_str(aw_process_read(p, 1, 100));
    ck_assert_str_eq(s, "bye\n");
    free(s);
    s = read_str(aw_process_read(p, 1, 100));
    ck_assert_str_eq(s, "");
    free(s);
    ck_assert_int_eq(aw_process_returncode(p, &code), AW_EINVALSTATE);
    aw_future_unref(aw_process_write(p, "x\n", 2));
    ck_assert_int_eq(aw_process_close_stdin(p), 0);
    ck_assert_int_eq(wait_code(loop, p), 5);
    aw_process_unref(p);
}
END_TEST

/* A child that does not read: writing gives -EPIPE, no SIGPIPE. */
START_TEST(write_to_exited_child_epipe)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, 0, 0);
    aw_process *p;
    aw_future *f;

    p = shell("exec <&-; exit 0", &o);
    ck_assert_int_eq(wait_code(loop, p), 0);
    f = aw_process_write(p, "x", 1);
    aw_loop_run_until_complete(loop, f);
    ck_assert_int_eq(aw_future_error(f), -EPIPE);
    aw_future_unref(f);
    aw_process_unref(p);
}
END_TEST

/* asyncio: test_communicate, with 10 MB each way (1 MB under valgrind). */
START_TEST(communicate_10mb)
{
    aw_process_options o =
        opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, AW_PROCESS_PIPE);
    size_t n = aw_test_slow() ? (1u << 20) : (10u << 20);
    aw_process_output *out;
    aw_process *p;
    aw_future *f;
    char *in;
    void *res;
    size_t i;

    in = malloc(n);
    ck_assert_ptr_nonnull(in);
    for (i = 0; i < n; i++)
        in[i] = (char)('a' + i % 26);
    p = shell("cat; echo done >&2", &o);
    f = aw_process_communicate(p, in, n, AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    out = res;
    ck_assert_uint_eq(aw_bytes_len(out->out), n);
    ck_assert(memcmp(aw_bytes_data(out->out), in, n) == 0);
    ck_assert_str_eq(aw_bytes_cstr(out->err), "done\n");
    ck_assert_int_eq(out->returncode, 0);
    aw_future_unref(f);
    free(in);
    aw_process_unref(p);
}
END_TEST

/* communicate with a child that does not read its stdin at all. */
START_TEST(communicate_child_closes_stdin)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, 0);
    static char in[1 << 20];
    aw_process_output *out;
    aw_process *p;
    aw_future *f;
    void *res;

    p = shell("exec <&-; echo ok", &o);
    f = aw_process_communicate(p, in, sizeof(in), AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    out = res;
    ck_assert_str_eq(aw_bytes_cstr(out->out), "ok\n");
    aw_future_unref(f);
    aw_process_unref(p);
}
END_TEST

START_TEST(communicate_timeout)
{
    aw_process_options o = opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, 0);
    aw_process *p;
    aw_future *f;

    p = shell("exec sleep 30", &o);
    f = aw_process_communicate(p, "x", 1, 0.01);
    aw_loop_run_until_complete(loop, f);
    ck_assert_int_eq(aw_future_error(f), AW_ETIMEDOUT);
    aw_future_unref(f);
    ck_assert_int_eq(aw_process_kill(p), 0); /* still running */
    ck_assert_int_eq(wait_code(loop, p), -SIGKILL);
    aw_process_unref(p);
}
END_TEST

/* ---- many children, no zombie -------------------------------------------- */

static void
spawn_many(aw_loop *l, int n, int watcher)
{
    aw_process_options o = opts(0, AW_PROCESS_PIPE, 0);
    aw_process **ps = calloc((size_t)n, sizeof(*ps));
    aw_future **ws = calloc((size_t)n, sizeof(*ws));
    aw_future *all;
    int i;

    o.watcher = watcher;
    for (i = 0; i < n; i++) {
        char cmd[64];

        snprintf(cmd, sizeof(cmd), "echo %d; exit %d", i, i % 7);
        ck_assert_int_eq(aw_process_shell(l, cmd, &o, &ps[i]), 0);
        ws[i] = aw_process_wait(ps[i]);
        ck_assert_ptr_nonnull(ws[i]);
        aw_future_ref(ws[i]);
    }
    all = aw_all_settled(l, (size_t)n, ws);
    ck_assert_int_eq(aw_loop_run_until_complete(l, all), 0);
    aw_future_unref(all);
    for (i = 0; i < n; i++) {
        intptr_t code = -1;

        ck_assert_int_eq(aw_future_result_int(ws[i], &code), 0);
        ck_assert_int_eq((int)code, i % 7);
        aw_future_unref(ws[i]);
        aw_process_unref(ps[i]);
    }
    free(ps);
    free(ws);
}

START_TEST(concurrent_100_children)
{
    spawn_many(loop, aw_test_slow() ? 20 : 100, AW_PROCESS_WATCH_AUTO);
    assert_no_child_left();
}
END_TEST

/* The last reference to a running child kills and reaps it. */
START_TEST(unref_running_child_no_zombie)
{
    aw_process_options o =
        opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, AW_PROCESS_PIPE);
    aw_process *p;
    aw_future *r;
    int status;
    pid_t pid;

    p = shell("exec sleep 30", &o);
    pid = aw_process_pid(p);
    r = aw_process_read(p, 1, 10); /* pending: cancelled by the unref */
    aw_process_unref(p);
    ck_assert(aw_future_cancelled(r));
    aw_future_unref(r);
    errno = 0;
    ck_assert_int_eq(waitpid(pid, &status, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
    o.watcher = AW_PROCESS_WATCH_THREAD;
    p = shell("exec sleep 30", &o);
    aw_process_unref(p);
    assert_no_child_left();
}
END_TEST

/* Another piece of code's child is never reaped by us. */
START_TEST(other_children_not_reaped)
{
    aw_process *p;
    int status;
    pid_t other = fork();

    ck_assert_int_ge(other, 0);
    if (other == 0)
        _exit(3);
    p = shell("exit 1", NULL);
    ck_assert_int_eq(wait_code(loop, p), 1);
    aw_process_unref(p);
    ck_assert_int_eq(waitpid(other, &status, 0), other);
    ck_assert_int_eq(WEXITSTATUS(status), 3);
}
END_TEST

struct thread_run {
    int watcher;
    int failed;
};

static void *
loop_thread(void *arg)
{
    struct thread_run *t = arg;
    aw_loop *l;

    if (aw_loop_new(&l) != 0) {
        t->failed = 1;
        return NULL;
    }
    spawn_many(l, 10, t->watcher);
    t->failed = aw_loop_free(l) != 0;
    return NULL;
}

/* Several loops in several threads, each with its children. */
START_TEST(children_on_loops_in_threads)
{
    struct thread_run t[4];
    pthread_t th[4];
    int i;

    for (i = 0; i < 4; i++) {
        t[i].watcher = i % 2 ? AW_PROCESS_WATCH_THREAD : AW_PROCESS_WATCH_AUTO;
        t[i].failed = 0;
        ck_assert_int_eq(pthread_create(&th[i], NULL, loop_thread, &t[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(t[i].failed, 0);
    }
    assert_no_child_left();
}
END_TEST

/* ---- no fd leaked into the child ------------------------------------------ */

/* The fds open in this process without close-on-exec before the test
 * spawned anything (inherited from whoever ran the test), with their
 * targets: the child may have those. */
#define SNAP_MAX 1024
static char *snapshot[SNAP_MAX];

static void
snapshot_fds(void)
{
    char path[64], buf[512];
    int fd;

    for (fd = 3; fd < SNAP_MAX; fd++) {
        int flags = fcntl(fd, F_GETFD);
        ssize_t n;

        if (flags < 0 || (flags & FD_CLOEXEC))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n = readlink(path, buf, sizeof(buf) - 1);
        if (n < 0)
            continue;
        buf[n] = '\0';
        snapshot[fd] = strdup(buf);
    }
}

static void
snapshot_free(void)
{
    int fd;

    for (fd = 0; fd < SNAP_MAX; fd++) {
        free(snapshot[fd]);
        snapshot[fd] = NULL;
    }
}

static int
inherited_fd(int fd, const char *target)
{
    return fd >= 0 && fd < SNAP_MAX && snapshot[fd] != NULL &&
           strcmp(snapshot[fd], target) == 0;
}

static void
check_no_fd_leak(int watcher)
{
    aw_process_options o =
        opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, AW_PROCESS_PIPE);
    aw_process *other, *p;
    char *s, *line, *save = NULL;
    char self[64];
    int lines = 0;

    o.watcher = watcher;
    /* Another child with all its pipes open meanwhile. */
    other = shell("exec cat", &o);
    p = shell("exec ls -l /proc/self/fd", &o);
    snprintf(self, sizeof(self), "/proc/%d/fd", (int)aw_process_pid(p));
    {
        aw_future *f = aw_process_communicate(p, NULL, 0, AW_NO_TIMEOUT);
        aw_process_output *out;
        void *res;

        ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
        ck_assert_int_eq(aw_future_result(f, &res), 0);
        out = res;
        s = strdup(aw_bytes_cstr(out->out));
        aw_future_unref(f);
    }
    for (line = strtok_r(s, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *arrow = strstr(line, " -> ");
        char *num;
        int fd;

        if (arrow == NULL)
            continue; /* "total 0" */
        *arrow = '\0';
        num = strrchr(line, ' ');
        ck_assert_ptr_nonnull(num);
        fd = atoi(num + 1);
        lines++;
        if (fd <= 2)
            continue;
        /* Only ls's own directory fd may be there, and what the test
         * itself inherited without close-on-exec (its runner's). */
        ck_assert_msg(strcmp(arrow + 4, self) == 0 ||
                          inherited_fd(fd, arrow + 4),
                      "fd %d leaked: %s", fd, arrow + 4);
    }
    ck_assert_int_ge(lines, 3);
    free(s);
    aw_process_unref(p);
    ck_assert_int_eq(aw_process_close_stdin(other), 0);
    ck_assert_int_eq(wait_code(loop, other), 0);
    aw_process_unref(other);
}

START_TEST(no_fd_leaked_into_child)
{
    snapshot_fds();
    check_no_fd_leak(AW_PROCESS_WATCH_AUTO);
    check_no_fd_leak(AW_PROCESS_WATCH_THREAD);
    snapshot_free();
}
END_TEST

/* ---- allocation failures ------------------------------------------------ */

/* Spawn cat with pipes, communicate, end: whatever allocation fails, no
 * crash, no leak (the fixture checks), no zombie. */
static void
oom_scenario(void)
{
    aw_process_options o =
        opts(AW_PROCESS_PIPE, AW_PROCESS_PIPE, AW_PROCESS_PIPE);
    const char *argv[] = {"cat", NULL};
    aw_process *p;
    aw_future *f;

    if (aw_process_exec(loop, "cat", argv, &o, &p) != 0)
        return;
    f = aw_process_communicate(p, "hello", 5, 5.0);
    if (f != NULL) {
        aw_loop_run_until_complete(loop, f);
        aw_future_error(f);
        aw_future_unref(f);
    }
    f = aw_process_wait(p);
    if (f != NULL) {
        aw_future_error(f);
        aw_future_unref(f);
    }
    aw_process_unref(p);
}

START_TEST(allocation_failure_sweep)
{
    long total, n;

    capture_reports();
    total = aw_test_allocations();
    oom_scenario();
    total = aw_test_allocations() - total;
    ck_assert_int_gt(total, 0);
    for (n = 1; n <= total; n++) {
        aw_test_fail_allocation(n);
        oom_scenario();
        aw_test_fail_allocation(0);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        assert_no_child_left();
    }
}
END_TEST

/* ---- bad arguments ----------------------------------------------------------- */

/* A spawn that fails in the child: the error, except under valgrind,
 * whose vfork is a fork that cannot report it (the child then exits 127,
 * as a shell's command not found). */
static void
spawn_fails(int rc, int want, aw_process *p)
{
    if (rc == 0 && aw_test_slow()) {
        ck_assert_int_eq(wait_code(loop, p), 127);
        aw_process_unref(p);
        return;
    }
    ck_assert_int_eq(rc, want);
}

START_TEST(bad_arguments)
{
    const char *argv[] = {"true", NULL};
    const char *empty[] = {NULL};
    aw_process_options o = opts(0, 0, 0);
    aw_process *p = (aw_process *)&o, *q;
    aw_future *f;

    ck_assert_int_eq(aw_process_exec(NULL, "true", argv, NULL, &p), -EINVAL);
    ck_assert_int_eq(aw_process_exec(loop, NULL, argv, NULL, &p), -EINVAL);
    ck_assert_int_eq(aw_process_exec(loop, "true", NULL, NULL, &p), -EINVAL);
    ck_assert_int_eq(aw_process_exec(loop, "true", empty, NULL, &p), -EINVAL);
    ck_assert_int_eq(aw_process_exec(loop, "true", argv, NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_process_shell(loop, NULL, NULL, &p), -EINVAL);
    o.stdout_mode = AW_PROCESS_STDOUT;
    ck_assert_int_eq(aw_process_exec(loop, "true", argv, &o, &p), -EINVAL);
    o.stdout_mode = 99;
    ck_assert_int_eq(aw_process_exec(loop, "true", argv, &o, &p), -EINVAL);
    o = opts(0, 0, 0);
    o.stdin_mode = -1;
    ck_assert_int_eq(aw_process_exec(loop, "true", argv, &o, &p), -EINVAL);
    o = opts(0, 0, 0);
    o.watcher = 7;
    ck_assert_int_eq(aw_process_exec(loop, "true", argv, &o, &p), -EINVAL);
    o = opts(0, 0, 0);
    o.size = 3;
    ck_assert_int_eq(aw_process_exec(loop, "true", argv, &o, &p), -EINVAL);
    o = opts(0, 0, 0);
    {
        const char *nope[] = {"aw-no-such-program", NULL};

        int rc = aw_process_exec(loop, "aw-no-such-program", nope, &o, &q);

        spawn_fails(rc, -ENOENT, q);
        o.cwd = "/aw/no/such/dir";
        rc = aw_process_exec(loop, "true", argv, &o, &q);
        spawn_fails(rc, -ENOENT, q);
    }
    ck_assert_ptr_eq(p, (aw_process *)&o); /* untouched */

    /* Calls on a process. */
    ck_assert_int_eq(aw_process_pid(NULL), -1);
    ck_assert_ptr_null(aw_process_wait(NULL));
    ck_assert_ptr_null(aw_process_read(NULL, 1, 1));
    ck_assert_ptr_null(aw_process_write(NULL, "x", 1));
    ck_assert_ptr_null(aw_process_communicate(NULL, NULL, 0, AW_NO_TIMEOUT));
    ck_assert_int_eq(aw_process_send_signal(NULL, SIGTERM), -EINVAL);
    ck_assert_int_eq(aw_process_close_stdin(NULL), -EINVAL);
    aw_process_unref(NULL);

    o = opts(0, AW_PROCESS_PIPE, 0);
    q = shell("echo x; exec sleep 30", &o);
    f = aw_process_read(q, 2, 1); /* not a pipe */
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_process_read(q, 0, 1);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_process_write(q, "x", 1);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_process_close_stdin(q), -EINVAL);
    ck_assert_int_eq(aw_process_send_signal(q, 0), -EINVAL);
    ck_assert_int_eq(aw_process_send_signal(q, 100000), -EINVAL);
    f = aw_process_communicate(q, "x", 1, AW_NO_TIMEOUT); /* input, no stdin pipe */
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    {
        aw_future *r1 = aw_process_read(q, 1, 1);

        f = aw_process_readline(q, 1);
        ck_assert_int_eq(aw_future_error(f), AW_EBUSY);
        aw_future_unref(f);
        f = aw_process_communicate(q, NULL, 0, AW_NO_TIMEOUT);
        ck_assert_int_eq(aw_future_error(f), AW_EBUSY);
        aw_future_unref(f);
        aw_loop_run_until_complete(loop, r1);
        aw_future_unref(r1);
    }
    ck_assert_int_eq(aw_process_kill(q), 0);
    wait_code(loop, q);
    aw_process_unref(q);
}
END_TEST

/* ---- pipes as streams ----------------------------------------------------- */

static aw_stream *
take_stream(aw_future *f)
{
    void *s = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &s, NULL), 0);
    aw_future_unref(f);
    ck_assert_ptr_nonnull(s);
    return s;
}

static char *
stream_line(aw_stream *s)
{
    return read_str(aw_stream_readline(s));
}

/* asyncio's proc.stdin / proc.stdout / proc.stderr: the child's pipes as
 * streams; the child's stdin as a stream (issue 16's test). */
START_TEST(pipes_as_streams)
{
    aw_process_options o =
        opts(AW_PROCESS_STREAM, AW_PROCESS_STREAM, AW_PROCESS_STREAM);
    aw_stream *in, *out, *err;
    aw_process *p;
    aw_future *f;
    char *line;

    p = shell("read x; echo \"out:$x\"; echo \"err:$x\" >&2; cat", &o);
    in = take_stream(aw_process_stream(p, 0));
    out = take_stream(aw_process_stream(p, 1));
    err = take_stream(aw_process_stream(p, 2));
    ck_assert_int_eq(aw_stream_write(in, "hello\nrest\n", 11), 0);
    line = stream_line(out);
    ck_assert_str_eq(line, "out:hello\n");
    free(line);
    line = stream_line(err);
    ck_assert_str_eq(line, "err:hello\n");
    free(line);
    line = stream_line(out); /* cat copies the rest */
    ck_assert_str_eq(line, "rest\n");
    free(line);
    ck_assert_int_eq(aw_stream_write_eof(in), 0); /* cat sees end of file */
    line = stream_line(out);
    ck_assert_str_eq(line, ""); /* and ends */
    free(line);
    ck_assert_int_eq(wait_code(loop, p), 0);
    /* The process neither reads nor communicates through them. */
    f = aw_process_readline(p, 1);
    ck_assert_int_ne(aw_future_error(f), 0);
    aw_future_unref(f);
    f = aw_process_communicate(p, NULL, 0, AW_NO_TIMEOUT);
    ck_assert_int_eq(aw_future_error(f), AW_EINVALSTATE);
    aw_future_unref(f);
    f = aw_process_stream(p, 3);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    aw_stream_close(in);
    aw_stream_unref(in);
    aw_stream_close(out);
    aw_stream_unref(out);
    aw_stream_close(err);
    aw_stream_unref(err);
    aw_process_unref(p);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    assert_no_child_left();
}
END_TEST

/* A process released with its streams unread: nothing leaks, no zombie. */
START_TEST(pipes_as_streams_released_unread)
{
    aw_process_options o = opts(AW_PROCESS_STREAM, AW_PROCESS_STREAM, 0);
    aw_process *p = shell("cat", &o);

    aw_process_unref(p); /* kills and reaps; the streams close their fds */
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    assert_no_child_left();
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("process");
    TCase *tc = aw_test_tcase("process");

    tcase_add_test(tc, exit_codes);
    tcase_add_test(tc, exit_codes_thread_watcher);
    tcase_add_test(tc, exit_codes_pidfd_watcher);
    tcase_add_test(tc, signal_death_negative_returncode);
    tcase_add_test(tc, ignores_sigterm_then_killed);
    tcase_add_test(tc, stdout_readline_read_eof);
    tcase_add_test(tc, stderr_into_stdout_and_devnull);
    tcase_add_test(tc, env_and_cwd);
    tcase_add_test(tc, read_cancelled_takes_nothing);
    tcase_add_test(tc, communicate_cancelled);
    tcase_add_test(tc, child_closes_stdout_early);
    tcase_add_test(tc, write_to_exited_child_epipe);
    tcase_add_test(tc, communicate_10mb);
    tcase_add_test(tc, communicate_child_closes_stdin);
    tcase_add_test(tc, communicate_timeout);
    tcase_add_test(tc, concurrent_100_children);
    tcase_add_test(tc, unref_running_child_no_zombie);
    tcase_add_test(tc, other_children_not_reaped);
    tcase_add_test(tc, children_on_loops_in_threads);
    tcase_add_test(tc, no_fd_leaked_into_child);
    tcase_add_test(tc, allocation_failure_sweep);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, pipes_as_streams);
    tcase_add_test(tc, pipes_as_streams_released_unread);
    suite_add_tcase(s, tc);
    return s;
}

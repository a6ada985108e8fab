/* SPDX-License-Identifier: MIT */
/* bench/proc.c: awbench's subprocess figure.  proc_spawn: microseconds
 * per child that prints a line (/bin/echo), its output read to the end
 * and its exit waited for: aw_process_exec with a stdout pipe on a loop,
 * next to raw posix_spawn + pipe + blocking read + waitpid. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "await.h"
#include "bench.h"

#define SPAWN_N 300

extern char **environ;

static const char *const echo_argv[] = {"/bin/echo", "awbench", NULL};

static double
bench_proc_spawn(void)
{
    aw_process_options o = {0};
    aw_loop *loop;
    double t0, t1;
    long bytes = 0;
    int i, rc;

    o.size = sizeof(o);
    o.stdout_mode = AW_PROCESS_PIPE;
    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    t0 = bench_now();
    for (i = 0; i < SPAWN_N; i++) {
        aw_process *p;
        aw_future *f;
        void *b;
        size_t len;

        if ((rc = aw_process_exec(loop, echo_argv[0], echo_argv, &o, &p)) != 0)
            bench_die("aw_process_exec", rc);
        do {
            f = aw_process_read(p, 1, 65536);
            if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
                bench_die("aw_process_read", rc);
            aw_future_result(f, &b);
            len = aw_bytes_len(b);
            bytes += (long)len;
            aw_future_unref(f);
        } while (len > 0);
        f = aw_process_wait(p);
        if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
            bench_die("aw_process_wait", rc);
        aw_future_unref(f);
        aw_process_unref(p);
    }
    t1 = bench_now();
    if (bytes != SPAWN_N * 8L)
        bench_die("proc_spawn output", -EIO);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (t1 - t0) * 1e6 / SPAWN_N;
}

static double
raw_proc_spawn(void)
{
    double t0, t1;
    long bytes = 0;
    int i;

    t0 = bench_now();
    for (i = 0; i < SPAWN_N; i++) {
        posix_spawn_file_actions_t fa;
        char buf[65536];
        int fds[2], status;
        pid_t pid;
        ssize_t n;

        if (pipe2(fds, O_CLOEXEC) < 0)
            bench_die("pipe2", -errno);
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        if (posix_spawn(&pid, echo_argv[0], &fa, NULL,
                        (char *const *)echo_argv, environ) != 0)
            bench_die("posix_spawn", -EIO);
        posix_spawn_file_actions_destroy(&fa);
        close(fds[1]);
        while ((n = read(fds[0], buf, sizeof(buf))) > 0)
            bytes += n;
        close(fds[0]);
        waitpid(pid, &status, 0);
    }
    t1 = bench_now();
    if (bytes != SPAWN_N * 8L)
        bench_die("raw proc_spawn output", -EIO);
    return (t1 - t0) * 1e6 / SPAWN_N;
}

static const struct bench proc_benches[] = {
    {"proc_spawn", "us", bench_proc_spawn, raw_proc_spawn, "ratio <= 1.3"},
};

BENCH_MODULE(bench_proc_module, proc_benches);

/* awdemo.c: a short guided run of libawait, printing what happens: the
 * loop's callbacks, timers, a reader on a pipe and a signal. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <await.h>

static double t0;

static void
say(aw_loop *loop, const char *what)
{
    printf("  [%6.1f ms] %s\n", (aw_loop_time(loop) - t0) * 1e3, what);
    fflush(stdout);
}

static int
soon_cb(aw_loop *loop, void *arg)
{
    say(loop, arg);
    return 0;
}

static int pipe_fds[2];

static int
write_pipe_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    say(loop, "timer 20 ms: writing \"hello\" into the pipe");
    if (write(pipe_fds[1], "hello", 5) != 5)
        return -1;
    return 0;
}

static int
pipe_readable_cb(aw_loop *loop, void *arg)
{
    char buf[32], line[64];
    ssize_t n = read(pipe_fds[0], buf, sizeof(buf) - 1);

    (void)arg;
    if (n < 0)
        return -1;
    buf[n] = '\0';
    snprintf(line, sizeof(line), "reader: the pipe gave \"%s\"", buf);
    say(loop, line);
    aw_loop_remove_reader(loop, pipe_fds[0]);
    return 0;
}

static int
raise_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    say(loop, "timer 40 ms: raising SIGUSR1");
    raise(SIGUSR1);
    return 0;
}

static int
signal_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    say(loop, "signal handler: SIGUSR1 arrived, run as a plain callback");
    aw_loop_remove_signal_handler(loop, SIGUSR1);
    return 0;
}

static int
stop_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    say(loop, "timer 60 ms: stopping the loop");
    return aw_loop_stop(loop);
}

static int
demo_loop(void)
{
    aw_loop *loop;
    aw_handle *cancelled;
    int rc;

    printf("== The event loop\n");
    if ((rc = aw_loop_new(&loop)) != 0 || pipe(pipe_fds) != 0) {
        fprintf(stderr, "awdemo: %s\n", aw_strerror(rc));
        return 1;
    }
    t0 = aw_loop_time(loop);
    aw_loop_call_soon(loop, soon_cb, "call_soon #1 runs first", NULL);
    aw_loop_call_soon(loop, soon_cb, "call_soon #2 runs second (FIFO)", NULL);
    aw_loop_call_later(loop, 0.010, soon_cb, "timer 10 ms", NULL);
    aw_loop_call_later(loop, 0.030, soon_cb, "never: cancelled", &cancelled);
    aw_handle_cancel(cancelled);
    aw_handle_unref(cancelled);
    aw_loop_call_later(loop, 0.020, write_pipe_cb, NULL, NULL);
    aw_loop_call_later(loop, 0.040, raise_cb, NULL, NULL);
    aw_loop_call_later(loop, 0.060, stop_cb, NULL, NULL);
    aw_loop_add_reader(loop, pipe_fds[0], pipe_readable_cb, NULL);
    aw_loop_add_signal_handler(loop, SIGUSR1, signal_cb, NULL);
    say(loop, "scheduled: 2 callbacks, 5 timers (one cancelled), a reader, "
              "a signal handler");
    rc = aw_loop_run_forever(loop);
    if (rc == 0)
        rc = aw_loop_free(loop);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    printf("  loop closed: %s\n", rc == 0 ? "cleanly" : aw_strerror(rc));
    return rc == 0 ? 0 : 1;
}

int
main(void)
{
    printf("libawait %s demo\n", aw_version());
    return demo_loop();
}

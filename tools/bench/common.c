/* SPDX-License-Identifier: MIT */
/* bench/common.c: awbench's helpers shared by every module (bench.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

double
bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void
bench_die(const char *what, int rc)
{
    fprintf(stderr, "awbench: %s: %s\n", what, aw_strerror(rc));
    exit(1);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

uint64_t
bench_rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

size_t
bench_heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

struct event_base *
bench_raw_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

/* ---- a load client in another process ---------------------------------- */

#define LOAD_WARMUP 0.3
#define LOAD_SECONDS 2.0
#define LOAD_MAX_CONNS 256

double
bench_thread_cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

int
bench_pin_to(int cpu, cpu_set_t *old)
{
    cpu_set_t set;

    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return 0;
    if (old != NULL && sched_getaffinity(0, sizeof(*old), old) != 0)
        return 0;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
}

static int
load_connect(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        _exit(3);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void
load_send(int fd, const struct bench_load *ld)
{
    /* A request of a few KiB at most, on a socket with nothing queued. */
    if (send(fd, ld->req, ld->req_len, MSG_NOSIGNAL) != (ssize_t)ld->req_len)
        _exit(4);
}

/* The client's process: the round trips, the window's two marks. */
static void
load_run(const struct bench_load *ld, int port, int ctl)
{
    static char buf[1 << 16];
    struct epoll_event ev, evs[LOAD_MAX_CONNS];
    size_t got[LOAD_MAX_CONNS] = {0};
    int fds[LOAD_MAX_CONNS];
    int ep = epoll_create1(0), i, n, phase = 0;
    long count = 0, start = 0;
    double t0 = bench_now(), now;
    char msg[1 + sizeof(long)];

    for (i = 0; i < ld->conns; i++) {
        fds[i] = load_connect(port);
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        load_send(fds[i], ld);
    }
    for (;;) {
        n = epoll_wait(ep, evs, LOAD_MAX_CONNS, 100);
        for (i = 0; i < n; i++) {
            int c = (int)evs[i].data.u32;
            ssize_t r = recv(fds[c], buf, sizeof(buf), 0);

            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                _exit(5);
            }
            got[c] += (size_t)r;
            if (got[c] >= ld->resp_len) {
                got[c] -= ld->resp_len;
                count++;
                load_send(fds[c], ld);
            }
        }
        now = bench_now();
        if (phase == 0 && now - t0 >= LOAD_WARMUP) {
            phase = 1;
            start = count;
            if (write(ctl, "S", 1) != 1)
                _exit(6);
        } else if (phase == 1 && now - t0 >= LOAD_WARMUP + LOAD_SECONDS) {
            count -= start;
            msg[0] = 'E';
            memcpy(msg + 1, &count, sizeof(count));
            if (write(ctl, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
                _exit(6);
            break;
        }
    }
    for (i = 0; i < ld->conns; i++)
        close(fds[i]);
    _exit(0);
}

void
bench_load_start(struct bench_window *w, const struct bench_load *ld,
                 int port)
{
    int p[2];

    memset(w, 0, sizeof(*w));
    if (ld->conns > LOAD_MAX_CONNS || pipe(p) != 0)
        bench_die("load client", -EINVAL);
    fflush(NULL);
    w->pid = fork();
    if (w->pid < 0)
        bench_die("fork", -errno);
    if (w->pid == 0) {
        close(p[0]);
        bench_pin_to(1, NULL);
        load_run(ld, port, p[1]);
    }
    close(p[1]);
    w->fd = p[0];
    w->pinned = bench_pin_to(0, &w->old_mask);
}

/* perf's control fifo (or /dev/null under strace): "enable"/"disable". */
static void
window_ctl(const char *cmd)
{
    static int ctl = -2, ack = -1;
    const char *path;
    char buf[16];

    if (ctl == -2) {
        path = getenv("AWBENCH_WINDOW_CTL");
        ctl = path != NULL ? open(path, O_WRONLY) : -1;
        path = getenv("AWBENCH_WINDOW_ACK");
        if (ctl >= 0 && path != NULL)
            ack = open(path, O_RDONLY);
    }
    if (ctl < 0)
        return;
    if (write(ctl, cmd, strlen(cmd)) < 0)
        return;
    /* perf answers "ack\n" once the counters follow the command. */
    if (ack >= 0 && read(ack, buf, sizeof(buf)) < 0)
        return;
}

int
bench_window_read(struct bench_window *w)
{
    char c;

    if (read(w->fd, &c, 1) != 1)
        bench_die("load client", -EPIPE);
    if (c == 'S') {
        window_ctl("enable\n");
        w->t0 = bench_now();
        w->cpu0 = bench_thread_cpu();
        return 0;
    }
    w->t1 = bench_now();
    w->cpu1 = bench_thread_cpu();
    window_ctl("disable\n");
    if (read(w->fd, &w->requests, sizeof(w->requests)) !=
        (ssize_t)sizeof(w->requests))
        bench_die("load client", -EPIPE);
    if (getenv("AWBENCH_WINDOW_CTL") != NULL)
        fprintf(stderr, "awbench: window: %ld requests\n", w->requests);
    w->done = 1;
    return 1;
}

void
bench_load_end(struct bench_window *w, double *rps, double *per_cpu)
{
    int status = 0;

    waitpid(w->pid, &status, 0);
    close(w->fd);
    if (w->pinned)
        sched_setaffinity(0, sizeof(w->old_mask), &w->old_mask);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_die("load client failed", -EIO);
    if (rps != NULL)
        *rps = (double)w->requests / (w->t1 - w->t0);
    if (per_cpu != NULL)
        *per_cpu = (double)w->requests / (w->cpu1 - w->cpu0);
}

/* ---- libawait's side ------------------------------------------------------ */

aw_server *
bench_aw_server(aw_loop *loop, aw_client_fn on_client)
{
    aw_future *f =
        aw_start_server(loop, "127.0.0.1", 0, on_client, loop, 0, 128);
    void *srv = NULL;
    int rc;

    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("start_server", rc);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    return srv;
}

static void
client_frame_free(void *p)
{
    aw_stream_unref(*(aw_stream **)p);
    free(p);
}

void
bench_spawn_client(aw_loop *loop, aw_stream *s, aw_task_fn fn, size_t size)
{
    aw_stream **frame = calloc(1, size);

    if (frame == NULL)
        bench_die("calloc", -ENOMEM);
    *frame = s;
    aw_future_unref(aw_task_new(loop, fn, frame, client_frame_free));
}

void
bench_end_tasks(aw_loop *loop)
{
    aw_task *ts[64];
    size_t i, n;

    while ((n = aw_all_tasks(loop, ts, 64)) > 0) {
        for (i = 0; i < n && i < 64; i++)
            aw_future_cancel(ts[i], NULL);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
}

static int
aw_window_cb(aw_loop *loop, void *arg)
{
    (void)loop;
    bench_window_read(arg);
    return 0;
}

void
bench_aw_serve(const struct bench_load *ld, aw_client_fn on_client,
               double *rps, double *per_cpu)
{
    struct bench_window w;
    aw_loop *loop;
    aw_server *srv;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    srv = bench_aw_server(loop, on_client);
    bench_load_start(&w, ld, aw_server_port(srv));
    if ((rc = aw_loop_add_reader(loop, w.fd, aw_window_cb, &w)) != 0)
        bench_die("add_reader", rc);
    while (!w.done)
        aw_loop_run_once(loop, 0);
    aw_loop_remove_reader(loop, w.fd);
    bench_load_end(&w, rps, per_cpu);
    aw_server_close(srv);
    bench_end_tasks(loop);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
}

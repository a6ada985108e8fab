/* SPDX-License-Identifier: MIT */
/* bench/net.c: awbench's networking figures, over loopback: echo_1k
 * (requests of 1 KiB echoed), stream_mb_s (a stream's throughput),
 * conn_bytes (the server's heap per idle connection); each next to raw
 * libevent bufferevents doing the same; and echo_1k_uv, echo_1k's server
 * next to a raw libuv one. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "await.h"
#include "bench.h"

/* ---- networking: echo_1k, stream_mb_s, conn_bytes ------------------------ */

#define ECHO_CONNS 10
#define ECHO_SIZE 1024
#define ECHO_SECONDS 2.0
#define STREAM_TOTAL ((size_t)1 << 30)
#define CONNB_N 10000

static char echo_payload[ECHO_SIZE];
static long echo_count;

/* The client, the same for both servers: raw bufferevents, each sending
 * 1 KiB and waiting for it back, over and over. */
static void
echo_client_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);

    (void)arg;
    while (evbuffer_get_length(in) >= ECHO_SIZE) {
        evbuffer_drain(in, ECHO_SIZE);
        echo_count++;
        bufferevent_write(bev, echo_payload, ECHO_SIZE);
    }
}

static void
echo_client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED)
        bufferevent_write(bev, echo_payload, ECHO_SIZE);
}

static void
break_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Run ECHO_CONNS clients against port on base for ECHO_SECONDS: requests
 * per second (and, when requests is not NULL, how many there were). */
double
bench_echo_clients(struct event_base *base, int port, long *requests)
{
    struct bufferevent *c[ECHO_CONNS];
    struct sockaddr_in sin;
    struct timeval tv = {0, 0};
    struct event *stop;
    double t0, t1;
    int i;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    for (i = 0; i < ECHO_CONNS; i++) {
        c[i] = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(c[i], echo_client_read, NULL, echo_client_event,
                          NULL);
        bufferevent_enable(c[i], EV_READ | EV_WRITE);
        bufferevent_socket_connect(c[i], (struct sockaddr *)&sin,
                                   sizeof(sin));
    }
    tv.tv_usec = (suseconds_t)(ECHO_SECONDS * 1e6) % 1000000;
    tv.tv_sec = (time_t)ECHO_SECONDS;
    stop = evtimer_new(base, break_cb, base);
    evtimer_add(stop, &tv);
    echo_count = 0;
    t0 = bench_now();
    event_base_dispatch(base);
    t1 = bench_now();
    event_free(stop);
    for (i = 0; i < ECHO_CONNS; i++)
        bufferevent_free(c[i]);
    if (requests != NULL)
        *requests = echo_count;
    return echo_count / (t1 - t0);
}

struct echo_handler {
    aw_stream *s;
    aw_bytes *req;
    int rc;
};

/* A client that leaves (end of file, a reset) ends its task quietly:
 * multiloop_echo's servers outlive their clients. */
static AW_TASK(echo_handler_task, struct echo_handler *h)
{
    AW_BEGIN();
    for (;;) {
        AW_TRY_AWAIT(h->rc, aw_stream_readexactly(h->s, ECHO_SIZE), &h->req);
        if (h->rc != 0)
            break;
        aw_stream_write(h->s, aw_bytes_data(h->req), ECHO_SIZE);
        AW_TRY_AWAIT(h->rc, aw_stream_drain(h->s), NULL);
        if (h->rc != 0)
            break;
    }
    if (h->rc == AW_ECANCELLED)
        AW_RAISE(h->rc, NULL);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

void
bench_echo_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, echo_handler_task, sizeof(struct echo_handler));
}

/* Cancel every task of the loop and run until they are gone. */
static void
end_tasks(aw_loop *loop)
{
    aw_task *ts[64];
    size_t i, n = aw_all_tasks(loop, ts, 64);

    for (i = 0; i < n && i < 64; i++)
        aw_future_cancel(ts[i], NULL);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
}

static double
bench_echo_1k(void)
{
    aw_loop *loop;
    aw_server *srv;
    double rps;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    srv = bench_aw_server(loop, bench_echo_on_client);
    /* The clients run on the loop's own base, beside the server. */
    rps = bench_echo_clients(aw_loop_get_base(loop), aw_server_port(srv),
                             NULL);
    aw_server_close(srv);
    end_tasks(loop);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return rps;
}

static void
raw_echo_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev),
                        bufferevent_get_input(bev));
}

static void
raw_echo_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void
raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
           int len, void *arg)
{
    struct bufferevent *bev =
        bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);

    (void)l;
    (void)sa;
    (void)len;
    bufferevent_setcb(bev, raw_echo_read, NULL, raw_echo_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static struct evconnlistener *
raw_listener(struct event_base *base, evconnlistener_cb cb, int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct evconnlistener *l;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l = evconnlistener_new_bind(base, cb, base,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                (struct sockaddr *)&sin, sizeof(sin));
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return l;
}

static double
raw_echo_1k(void)
{
    struct event_base *base = bench_raw_base();
    struct evconnlistener *l;
    double rps;
    int port;

    l = raw_listener(base, raw_accept, &port);
    rps = bench_echo_clients(base, port, NULL);
    evconnlistener_free(l);
    event_base_loop(base, EVLOOP_NONBLOCK); /* the servers see the EOFs */
    event_base_free(base);
    return rps;
}

/* stream_mb_s: STREAM_TOTAL bytes from a client stream (writes of 64 KiB,
 * each followed by drain) to a server task reading them. */
static size_t stream_got;

struct sink_handler {
    aw_stream *s;
    aw_bytes *chunk;
};

static AW_TASK(sink_task, struct sink_handler *h)
{
    AW_BEGIN();
    for (;;) {
        AW_AWAIT(aw_stream_read(h->s, 1 << 16), &h->chunk);
        if (aw_bytes_len(h->chunk) == 0)
            break;
        stream_got += aw_bytes_len(h->chunk);
    }
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
sink_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, sink_task, sizeof(struct sink_handler));
}

struct pump {
    aw_stream *s;
    size_t sent;
};

static AW_TASK(pump_task, struct pump *p)
{
    static char chunk[1 << 16];

    AW_BEGIN();
    while (p->sent < STREAM_TOTAL) {
        aw_stream_write(p->s, chunk, sizeof(chunk));
        p->sent += sizeof(chunk);
        AW_AWAIT(aw_stream_drain(p->s), NULL);
    }
    aw_stream_write_eof(p->s);
    AW_END();
}

static double
bench_stream_mb_s(void)
{
    struct pump p = {NULL, 0};
    aw_loop *loop;
    aw_server *srv;
    aw_future *f;
    aw_task *t;
    void *s = NULL;
    double t0, t1;
    int rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    srv = bench_aw_server(loop, sink_on_client);
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("open_connection", rc);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    p.s = s;
    stream_got = 0;
    t0 = bench_now();
    t = aw_task_new(loop, pump_task, &p, NULL);
    while (stream_got < STREAM_TOTAL)
        aw_loop_run_once(loop, 0);
    t1 = bench_now();
    aw_loop_run_until_complete(loop, t);
    aw_future_unref(t);
    aw_stream_close(p.s);
    aw_stream_unref(p.s);
    aw_server_close(srv);
    end_tasks(loop);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (double)STREAM_TOTAL / (t1 - t0) / 1e6;
}

/* Raw: a writer bufferevent refilled to 64 KiB whenever its output
 * drains below 64 KiB (the same flow control), a reader bufferevent
 * draining its input. */
static size_t raw_sent, raw_got;

static void
raw_writer_cb(struct bufferevent *bev, void *arg)
{
    static char chunk[1 << 16];

    (void)arg;
    if (raw_sent < STREAM_TOTAL) {
        bufferevent_write(bev, chunk, sizeof(chunk));
        raw_sent += sizeof(chunk);
    }
}

static void
raw_writer_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & BEV_EVENT_CONNECTED)
        raw_writer_cb(bev, arg);
}

/* The reader takes the data out, 64 KiB at a time, as the stream's
 * reader does (without the allocation of a bytes object). */
static void
raw_reader_cb(struct bufferevent *bev, void *arg)
{
    static char chunk[1 << 16];
    struct evbuffer *in = bufferevent_get_input(bev);
    int n;

    while ((n = evbuffer_remove(in, chunk, sizeof(chunk))) > 0)
        raw_got += (size_t)n;
    if (raw_got >= STREAM_TOTAL)
        event_base_loopbreak(arg);
}

static struct bufferevent *raw_reader;

static void
raw_sink_accept(struct evconnlistener *l, evutil_socket_t fd,
                struct sockaddr *sa, int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    raw_reader = bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(raw_reader, raw_reader_cb, NULL, NULL, arg);
    bufferevent_enable(raw_reader, EV_READ);
}

static double
raw_stream_mb_s(void)
{
    struct event_base *base = bench_raw_base();
    struct evconnlistener *l;
    struct bufferevent *w;
    struct sockaddr_in sin;
    double t0, t1;
    int port;

    l = raw_listener(base, raw_sink_accept, &port);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    w = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(w, NULL, raw_writer_cb, raw_writer_event, NULL);
    /* Called when the output is under 16 KiB, as the stream's drain. */
    bufferevent_setwatermark(w, EV_WRITE, 16 * 1024, 0);
    bufferevent_enable(w, EV_WRITE);
    raw_sent = raw_got = 0;
    t0 = bench_now();
    bufferevent_socket_connect(w, (struct sockaddr *)&sin, sizeof(sin));
    event_base_dispatch(base);
    t1 = bench_now();
    bufferevent_free(w);
    if (raw_reader != NULL)
        bufferevent_free(raw_reader);
    raw_reader = NULL;
    evconnlistener_free(l);
    event_base_free(base);
    return (double)STREAM_TOTAL / (t1 - t0) / 1e6;
}

/* echo_1k_uv: echo_1k's server against a raw libuv echo server (uv.c),
 * the same load (10 connections, 1 KiB echoed) from a client in another
 * process (common.c), since the libuv server cannot share a loop with
 * echo_1k's client. */
static struct bench_load echo_load = {echo_payload, ECHO_SIZE, ECHO_SIZE,
                                      ECHO_CONNS};

static double
bench_echo_1k_uv(void)
{
    double rps;

    bench_aw_serve(&echo_load, bench_echo_on_client, &rps, NULL);
    return rps;
}

static double
uv_echo_1k(void)
{
    double rps = NAN;

    bench_uv_serve(BENCH_UV_ECHO, &echo_load, &rps, NULL);
    return rps;
}

/* conn_bytes: the server's heap per idle connection (transport,
 * bufferevent, stream, buffers, and a task awaiting a line), with
 * CONNB_N clients held open by a child process. */
static long connb_clients;

static int idle_rc;

static AW_TASK(idle_task, struct echo_handler *h)
{
    AW_BEGIN();
    connb_clients++;
    AW_TRY_AWAIT(idle_rc, aw_stream_readline(h->s), &h->req);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
idle_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, idle_task, sizeof(struct echo_handler));
}

static double
bench_conn_bytes(void)
{
    struct rlimit rl;
    aw_loop *loop;
    aw_server *srv;
    size_t before, after;
    long want = CONNB_N, i;
    int rc, port, sync[2];
    pid_t child;
    char c;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < want + 64) {
        want = (long)rl.rlim_cur - 64;
        fprintf(stderr, "awbench: conn_bytes: only %ld connections (file "
                "limit)\n", want);
    }
    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    srv = bench_aw_server(loop, idle_on_client);
    port = aw_server_port(srv);
    if (pipe(sync) != 0)
        bench_die("pipe", -errno);
    child = fork();
    if (child == 0) {
        /* The clients: connect, then hold on until told. */
        struct sockaddr_in sin;

        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons((unsigned short)port);
        for (i = 0; i < want; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);

            if (fd < 0 ||
                connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
                _exit(1);
        }
        if (read(sync[0], &c, 1) < 0)
            _exit(1);
        _exit(0);
    }
    connb_clients = 0;
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    before = bench_heap_in_use();
    while (connb_clients < want)
        aw_loop_run_once(loop, 0);
    after = bench_heap_in_use();
    if (write(sync[1], "x", 1) != 1)
        bench_die("write", -errno);
    waitpid(child, NULL, 0);
    close(sync[0]);
    close(sync[1]);
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
    aw_server_close(srv);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return (double)(after - before) / (double)want;
}

static const struct bench benches[] = {
    {"echo_1k", "req/s", bench_echo_1k, raw_echo_1k, "ratio >= 0.9"},
    {"stream_mb_s", "MB/s", bench_stream_mb_s, raw_stream_mb_s,
     "ratio >= 1.2"},
    {"echo_1k_uv", "req/s", bench_echo_1k_uv, uv_echo_1k,
     "ratio >= 1.1 (vs libuv)"},
    {"conn_bytes", "bytes", bench_conn_bytes, NULL, "<= 4096"},
};

BENCH_MODULE(bench_net_module, benches);

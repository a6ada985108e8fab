/* SPDX-License-Identifier: MIT */
/* bench/http.c: a minimal HTTP/1.1 keep-alive server on libawait's
 * streams and tasks (the head read with readuntil, a fixed response
 * written), against a raw libevent bufferevent server (http_rr) and a
 * raw libuv server (http_rr_uv, uv.c), 100 connections from a load
 * client in another process (common.c); the requests per CPU-second of
 * the server (http_cpu, http_cpu_uv); and rr_syscalls, the system calls
 * per round trip of the same servers, counted by tools/rr-syscalls.sh. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "await.h"
#include "bench.h"

#define HTTP_CONNS 100

const char bench_http_req[] = "GET / HTTP/1.1\r\n"
                              "Host: 127.0.0.1\r\n"
                              "User-Agent: awbench\r\n"
                              "Accept: */*\r\n"
                              "\r\n";
const char bench_http_resp[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 13\r\n"
                               "\r\n"
                               "Hello, world!";

size_t
bench_http_req_len(void)
{
    return sizeof(bench_http_req) - 1;
}

size_t
bench_http_resp_len(void)
{
    return sizeof(bench_http_resp) - 1;
}

static const struct bench_load http_load = {
    bench_http_req, sizeof(bench_http_req) - 1, sizeof(bench_http_resp) - 1,
    HTTP_CONNS};

/* ---- libawait: a task per connection ---------------------------------- */

struct http_conn {
    aw_stream *s;
    aw_bytes *head;
    int rc;
};

static AW_TASK(http_task, struct http_conn *h)
{
    AW_BEGIN();
    for (;;) {
        AW_TRY_AWAIT(h->rc, aw_stream_readuntil(h->s, "\r\n\r\n", 4),
                     &h->head);
        if (h->rc != 0)
            break;
        aw_stream_write(h->s, bench_http_resp, sizeof(bench_http_resp) - 1);
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

static void
http_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, http_task, sizeof(struct http_conn));
}

/* ---- raw libevent: bufferevents ------------------------------------------ */

static int bev_live;

static void
bev_http_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr p;

    (void)arg;
    for (;;) {
        p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (p.pos < 0)
            break;
        evbuffer_drain(in, (size_t)p.pos + 4);
        bufferevent_write(bev, bench_http_resp, sizeof(bench_http_resp) - 1);
    }
}

static void
bev_http_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        bufferevent_free(bev);
        bev_live--;
    }
}

static void
bev_http_accept(struct evconnlistener *l, evutil_socket_t fd,
                struct sockaddr *sa, int len, void *arg)
{
    struct bufferevent *bev =
        bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);
    int one = 1;

    (void)l;
    (void)sa;
    (void)len;
    /* As the libawait server has it (and the transports' default). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bev_live++;
    bufferevent_setcb(bev, bev_http_read, NULL, bev_http_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static struct event_base *bev_base;

static void
bev_window_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (bench_window_read(arg))
        event_base_loopbreak(bev_base);
}

static void
bev_http_serve(double *rps, double *per_cpu)
{
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    struct evconnlistener *l;
    struct bench_window w;
    struct event *ev;

    bev_base = bench_raw_base();
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l = evconnlistener_new_bind(bev_base, bev_http_accept, bev_base,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                (struct sockaddr *)&sin, sizeof(sin));
    if (l == NULL)
        bench_die("listen", -errno);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &slen);
    bench_load_start(&w, &http_load, ntohs(sin.sin_port));
    ev = event_new(bev_base, w.fd, EV_READ | EV_PERSIST, bev_window_cb, &w);
    event_add(ev, NULL);
    event_base_dispatch(bev_base);
    event_free(ev);
    bench_load_end(&w, rps, per_cpu);
    evconnlistener_free(l);
    while (bev_live > 0) /* the connections see their end */
        event_base_loop(bev_base, EVLOOP_ONCE);
    event_base_free(bev_base);
}

/* ---- the figures ------------------------------------------------------------- */

/* The CPU figures come from the request figures' runs when both run
 * (the same rounds, in order); alone, they make their own. */
enum { OURS_BEV, BEV, OURS_UV, UV, RR_OURS, RR_BEV, RR_OURS_UV, RR_UV, NSIDES };
static double kept[NSIDES][100];
static int kept_put[NSIDES], kept_got[NSIDES];

static void
keep(int side, double v)
{
    if (kept_put[side] < 100)
        kept[side][kept_put[side]++] = v;
}

static int
kept_take(int side, double *v)
{
    if (kept_got[side] >= kept_put[side])
        return 0;
    *v = kept[side][kept_got[side]++];
    return 1;
}

/* One run of a server; side says which (and where its CPU figure goes). */
static double
http_run(int side, int want_cpu)
{
    double rps = NAN, per_cpu = NAN, v;

    if (want_cpu && kept_take(side, &v))
        return v;
    switch (side) {
    case OURS_BEV:
    case OURS_UV:
        bench_aw_serve(&http_load, http_on_client, &rps, &per_cpu);
        break;
    case BEV:
        bev_http_serve(&rps, &per_cpu);
        break;
    case UV:
        bench_uv_serve(BENCH_UV_HTTP, &http_load, &rps, &per_cpu);
        break;
    }
    if (!want_cpu)
        keep(side, per_cpu);
    return want_cpu ? per_cpu : rps;
}

static double
bench_http_rr(void)
{
    return http_run(OURS_BEV, 0);
}

static double
bev_http_rr(void)
{
    return http_run(BEV, 0);
}

static double
bench_http_rr2(void)
{
    return http_run(OURS_UV, 0);
}

static double
uv_http_rr(void)
{
    return http_run(UV, 0);
}

static double
bench_http_cpu(void)
{
    return http_run(OURS_BEV, 1);
}

static double
bev_http_cpu(void)
{
    return http_run(BEV, 1);
}

static double
bench_http_cpu2(void)
{
    return http_run(OURS_UV, 1);
}

static double
uv_http_cpu(void)
{
    return http_run(UV, 1);
}

/* rr_syscalls: tools/rr-syscalls.sh runs this program on one side of
 * http_rr (or http_rr_uv) with the counting on for the window, and
 * prints the system calls of the server per round trip.  The script is
 * AWBENCH_RR_SCRIPT (the environment's, else the source tree's); NAN
 * (n/a) when it cannot count (no perf or strace, or no such server). */
static double
rr_script(const char *server)
{
    const char *script = getenv("AWBENCH_RR_SCRIPT");
    char self[PATH_MAX], cmd[2 * PATH_MAX + 64], out[64];
    ssize_t n;
    double v = NAN;
    FILE *p;

#ifdef AWBENCH_RR_SCRIPT_PATH
    if (script == NULL)
        script = AWBENCH_RR_SCRIPT_PATH;
#endif
    if (script == NULL || access(script, R_OK) != 0)
        return NAN;
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return NAN;
    self[n] = '\0';
    snprintf(cmd, sizeof(cmd), "AWBENCH='%s' sh '%s' %s", self, script,
             server);
    fflush(NULL);
    if ((p = popen(cmd, "r")) == NULL)
        return NAN;
    if (fgets(out, sizeof(out), p) != NULL) {
        char *end;

        v = strtod(out, &end);
        if (end == out)
            v = NAN;
    }
    pclose(p);
    return v;
}

static double
rr_run(int side)
{
    static const char *const servers[] = {
        [RR_OURS] = "ours", [RR_BEV] = "bev", [RR_OURS_UV] = "ours",
        [RR_UV] = "uv"};
    double v;

    /* rr_syscalls_uv's libawait side is rr_syscalls's when both run. */
    if (side == RR_OURS_UV && kept_take(RR_OURS, &v))
        return v;
    v = rr_script(servers[side]);
    if (side == RR_OURS)
        keep(RR_OURS, v);
    return v;
}

static double
bench_rr_syscalls(void)
{
    return rr_run(RR_OURS);
}

static double
bev_rr_syscalls(void)
{
    return rr_run(RR_BEV);
}

static double
bench_rr_syscalls2(void)
{
    return rr_run(RR_OURS_UV);
}

static double
uv_rr_syscalls(void)
{
    return rr_run(RR_UV);
}

static const struct bench benches[] = {
    {"http_rr", "req/s", bench_http_rr, bev_http_rr,
     "ratio >= 1.3 (vs bufferevents)"},
    {"http_rr_uv", "req/s", bench_http_rr2, uv_http_rr,
     "ratio >= 1.1 (vs libuv)"},
    {"http_cpu", "req/cpu-s", bench_http_cpu, bev_http_cpu,
     "(server CPU, vs bufferevents)"},
    {"http_cpu_uv", "req/cpu-s", bench_http_cpu2, uv_http_cpu,
     "(server CPU, vs libuv)"},
    {"rr_syscalls", "calls/req", bench_rr_syscalls, bev_rr_syscalls,
     "<= 2.2 (vs bufferevents)"},
    {"rr_syscalls_uv", "calls/req", bench_rr_syscalls2, uv_rr_syscalls,
     "<= 2.2 (vs libuv)"},
};

BENCH_MODULE(bench_http_module, benches);

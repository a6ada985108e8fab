/* SPDX-License-Identifier: MIT */
/* bench/pipeline.c: pipeline_lines, a RESP-like pipeline: batches of 16
 * commands of 3 short lines each ("*1", "$4", "PING"), each answered
 * "+PONG", from 10 connections of a load client in another process
 * (common.c).  A libawait server parsing with aw_stream_readline (the
 * replies of what is buffered gathered into one write), against a
 * server on raw libevent events that reads into one buffer and parses
 * the same bytes by hand (memchr).  Commands per second. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "await.h"
#include "bench.h"

#define PL_BATCH 16
#define PL_CONNS 10
#define PL_CMD "*1\r\n$4\r\nPING\r\n"
#define PL_REPLY "+PONG\r\n"
#define PL_REPLY_LEN (sizeof(PL_REPLY) - 1)
#define PL_BUF (64 * 1024)

static char pl_req[PL_BATCH * (sizeof(PL_CMD) - 1) + 1];
static struct bench_load pl_load = {pl_req, PL_BATCH * (sizeof(PL_CMD) - 1),
                                    PL_BATCH * PL_REPLY_LEN, PL_CONNS};

static void
pl_init(void)
{
    int i;

    for (i = 0; i < PL_BATCH; i++)
        memcpy(pl_req + i * (sizeof(PL_CMD) - 1), PL_CMD,
               sizeof(PL_CMD) - 1);
}

/* The first two lines of a command say what follows ('*' the count of
 * arguments, '$' the length of one); both parsers check that much. */
static int
line_ok(int i, char c)
{
    return i == 2 || c == (i == 0 ? '*' : '$');
}

/* ---- libawait: readline on a stream ------------------------------------ */

struct pl_conn {
    aw_stream *s;
    aw_bytes *line;
    int rc, i;
    size_t out_len;
    char out[4096];
};

static AW_TASK(pl_task, struct pl_conn *h)
{
    AW_BEGIN();
    for (;;) {
        for (h->i = 0; h->i < 3; h->i++) {
            AW_TRY_AWAIT(h->rc, aw_stream_readline(h->s), &h->line);
            if (h->rc == 0 && (aw_bytes_len(h->line) == 0 ||
                               !line_ok(h->i, aw_bytes_data(h->line)[0])))
                h->rc = -EPROTO; /* end of file, or not RESP */
            if (h->rc != 0)
                break;
        }
        if (h->rc != 0)
            break;
        memcpy(h->out + h->out_len, PL_REPLY, PL_REPLY_LEN);
        h->out_len += PL_REPLY_LEN;
        /* Reply once all that came is answered (or the buffer is full). */
        if (aw_stream_buffered(h->s) == 0 ||
            h->out_len + PL_REPLY_LEN > sizeof(h->out)) {
            aw_stream_write(h->s, h->out, h->out_len);
            h->out_len = 0;
            AW_TRY_AWAIT(h->rc, aw_stream_drain(h->s), NULL);
            if (h->rc != 0)
                break;
        }
    }
    if (h->rc == AW_ECANCELLED)
        AW_RAISE(h->rc, NULL);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
pl_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, pl_task, sizeof(struct pl_conn));
}

static double
bench_pipeline_lines(void)
{
    double rps;

    pl_init();
    bench_aw_serve(&pl_load, pl_on_client, &rps, NULL);
    return rps * PL_BATCH;
}

/* ---- raw: one buffer, parsed by hand ------------------------------------- */

struct hp_conn {
    int fd;
    struct event *ev;
    size_t len;
    char buf[PL_BUF];
    char out[PL_BUF];
};

static int hp_live;
static struct event_base *hp_base;

static void
hp_close(struct hp_conn *c)
{
    event_free(c->ev);
    close(c->fd);
    free(c);
    hp_live--;
}

/* The complete commands of c->buf answered in c->out: its length. */
static size_t
hp_parse(struct hp_conn *c, int *bad)
{
    const char *p = c->buf, *end = c->buf + c->len, *q, *nl;
    size_t out = 0;
    int i;

    for (;;) {
        q = p;
        for (i = 0; i < 3; i++) {
            if ((nl = memchr(q, '\n', (size_t)(end - q))) == NULL)
                break;
            if (!line_ok(i, *q))
                *bad = 1;
            q = nl + 1;
        }
        if (i < 3 || *bad || out + PL_REPLY_LEN > sizeof(c->out))
            break;
        memcpy(c->out + out, PL_REPLY, PL_REPLY_LEN);
        out += PL_REPLY_LEN;
        p = q;
    }
    c->len = (size_t)(end - p);
    if (c->len > 0 && p != c->buf)
        memmove(c->buf, p, c->len);
    return out;
}

static void
hp_read(evutil_socket_t fd, short what, void *arg)
{
    struct hp_conn *c = arg;
    ssize_t n = recv(fd, c->buf + c->len, PL_BUF - c->len, 0);
    size_t out;
    int bad = 0;

    (void)what;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        hp_close(c);
        return;
    }
    c->len += (size_t)n;
    out = hp_parse(c, &bad);
    /* The replies are small: the socket takes them (else: give up). */
    if (bad || c->len == PL_BUF ||
        (out > 0 && send(fd, c->out, out, MSG_NOSIGNAL) != (ssize_t)out))
        hp_close(c);
}

static void
hp_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int len, void *arg)
{
    struct hp_conn *c = malloc(sizeof(*c));
    int one = 1;

    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    evutil_make_socket_nonblocking(fd);
    c->fd = fd;
    c->len = 0;
    c->ev = event_new(hp_base, fd, EV_READ | EV_PERSIST, hp_read, c);
    event_add(c->ev, NULL);
    hp_live++;
}

static void
hp_window_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (bench_window_read(arg))
        event_base_loopbreak(hp_base);
}

static double
raw_pipeline_lines(void)
{
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    struct evconnlistener *l;
    struct bench_window w;
    struct event *ev;
    double rps;

    pl_init();
    hp_base = bench_raw_base();
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l = evconnlistener_new_bind(hp_base, hp_accept, NULL,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                (struct sockaddr *)&sin, sizeof(sin));
    if (l == NULL)
        bench_die("listen", -errno);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &slen);
    bench_load_start(&w, &pl_load, ntohs(sin.sin_port));
    ev = event_new(hp_base, w.fd, EV_READ | EV_PERSIST, hp_window_cb, &w);
    event_add(ev, NULL);
    event_base_dispatch(hp_base);
    event_free(ev);
    bench_load_end(&w, &rps, NULL);
    evconnlistener_free(l);
    while (hp_live > 0) /* the connections see their end */
        event_base_loop(hp_base, EVLOOP_ONCE);
    event_base_free(hp_base);
    return rps * PL_BATCH;
}

static const struct bench benches[] = {
    {"pipeline_lines", "cmd/s", bench_pipeline_lines, raw_pipeline_lines,
     "ratio >= 0.8 (vs by hand)"},
};

BENCH_MODULE(bench_pipeline_module, benches);

/* SPDX-License-Identifier: MIT */
/* bench/uv.c: the raw libuv servers awbench measures libawait against
 * (http_rr_uv, echo_1k_uv): what a careful libuv user writes, a read
 * buffer per connection and uv_try_write first (uv_write only for what
 * the socket did not take), TCP_NODELAY on.  libuv is optional: without
 * it (configure did not find it), bench_uv_serve() says so and the
 * figures print n/a. */
#include "config.h"

#include "bench.h"

#ifndef HAVE_LIBUV

int
bench_uv_serve(enum bench_uv_kind kind, const struct bench_load *ld,
               double *rps, double *per_cpu)
{
    (void)kind;
    (void)ld;
    (void)rps;
    (void)per_cpu;
    return -1;
}

#else /* HAVE_LIBUV */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define UV_BUF (64 * 1024)

struct uv_conn {
    uv_tcp_t tcp;
    enum bench_uv_kind kind;
    size_t len; /* HTTP: bytes kept for a head not complete yet */
    char buf[UV_BUF];
};

struct uv_wreq {
    uv_write_t req;
    char data[];
};

static int uv_live;

static void
conn_closed(uv_handle_t *h)
{
    free(h->data);
    uv_live--;
}

static void
conn_close(struct uv_conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void
wreq_done(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* Write at once what the socket takes; queue the rest. */
static void
conn_write(struct uv_conn *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    struct uv_wreq *w;
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);

    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if ((size_t)n == len)
        return;
    w = malloc(sizeof(*w) + len - (size_t)n);
    memcpy(w->data, data + n, len - (size_t)n);
    b = uv_buf_init(w->data, (unsigned)(len - (size_t)n));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, wreq_done) != 0) {
        free(w);
        conn_close(c);
    }
}

static void
conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct uv_conn *c = h->data;

    (void)hint;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(UV_BUF - c->len));
}

/* Each complete head gets the fixed response; a partial one is kept. */
static void
http_input(struct uv_conn *c, size_t n)
{
    const char *p = c->buf, *end, *e;
    size_t resp_len = bench_http_resp_len();

    c->len += n;
    end = c->buf + c->len;
    while ((e = memmem(p, (size_t)(end - p), "\r\n\r\n", 4)) != NULL) {
        p = e + 4;
        conn_write(c, bench_http_resp, resp_len);
    }
    c->len = (size_t)(end - p);
    if (c->len == UV_BUF)
        conn_close(c); /* a head larger than the buffer */
    else if (c->len > 0 && p != c->buf)
        memmove(c->buf, p, c->len);
}

static void
conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct uv_conn *c = s->data;

    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0)
        return;
    if (c->kind == BENCH_UV_ECHO)
        conn_write(c, buf->base, (size_t)n);
    else
        http_input(c, (size_t)n);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct uv_conn *c;

    if (status != 0)
        return;
    c = malloc(sizeof(*c));
    c->kind = *(enum bench_uv_kind *)server->data;
    c->len = 0;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    uv_live++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

static void
window_cb(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    if (bench_window_read(p->data))
        uv_stop(p->loop);
}

static void
close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TCP && h->data != NULL ? conn_closed
                                                         : NULL);
}

int
bench_uv_serve(enum bench_uv_kind kind, const struct bench_load *ld,
               double *rps, double *per_cpu)
{
    struct sockaddr_in sin;
    int slen = sizeof(sin), rc;
    struct bench_window w;
    uv_loop_t loop;
    uv_tcp_t server;
    uv_poll_t poll;

    if ((rc = uv_loop_init(&loop)) != 0)
        bench_die("uv_loop_init", rc);
    uv_tcp_init(&loop, &server);
    server.data = &kind;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    if ((rc = uv_tcp_bind(&server, (struct sockaddr *)&sin, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&server, 128, on_connection)) != 0)
        bench_die("uv listen", rc);
    uv_tcp_getsockname(&server, (struct sockaddr *)&sin, &slen);
    bench_load_start(&w, ld, ntohs(sin.sin_port));
    uv_poll_init(&loop, &poll, w.fd);
    poll.data = &w;
    uv_poll_start(&poll, UV_READABLE, window_cb);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_poll_stop(&poll);
    bench_load_end(&w, rps, per_cpu);
    /* The client is gone: the connections end; then everything closes. */
    server.data = NULL;
    while (uv_live > 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if ((rc = uv_loop_close(&loop)) != 0)
        bench_die("uv_loop_close", rc);
    return 0;
}

#endif /* HAVE_LIBUV */

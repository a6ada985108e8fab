/* SPDX-License-Identifier: MIT */
/* test_stream.c: streams over loopback TCP and Unix sockets, servers with
 * a task per client, getaddrinfo, after CPython's
 * test_asyncio/test_streams.py where it applies. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>

#include <event2/event.h>
#include <event2/util.h>

#include "testutil.h"

/* ---- a server whose handler task runs a script ------------------------------------- */

/* What the server side does with each client. */
enum script { ECHO, SEND_PIECES, SEND_AND_CLOSE, SEND_BIG, SINK };

struct handler {
    aw_stream *s;
    int script;
    int i;
    aw_bytes *line;
    size_t sent;
    unsigned long sum;
};

static int server_script;
static const char *send_text;
static size_t big_total;
static unsigned long big_sum;
static int clients_done;

static void
handler_free(void *p)
{
    struct handler *h = p;

    aw_stream_unref(h->s);
    free(h);
}

static const char *const pieces[] = {"hel", "lo\nwor", "ld\n", "AB", "CDEF",
                                     "GH--E", "ND-", "-tail"};

static AW_TASK(handler_task, struct handler *h)
{
    static char chunk[65536];

    AW_BEGIN();
    if (h->script == ECHO) {
        for (;;) {
            AW_AWAIT(aw_stream_read(h->s, 4096), &h->line);
            if (aw_bytes_len(h->line) == 0)
                break;
            aw_stream_write(h->s, aw_bytes_data(h->line),
                            aw_bytes_len(h->line));
            AW_AWAIT(aw_stream_drain(h->s), NULL);
        }
    } else if (h->script == SEND_PIECES) {
        for (h->i = 0; h->i < 8; h->i++) {
            aw_stream_write(h->s, pieces[h->i], strlen(pieces[h->i]));
            AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.002), NULL);
        }
    } else if (h->script == SEND_AND_CLOSE) {
        aw_stream_write(h->s, send_text, strlen(send_text));
    } else if (h->script == SEND_BIG) {
        while (h->sent < big_total) {
            size_t n = big_total - h->sent < sizeof(chunk)
                           ? big_total - h->sent
                           : sizeof(chunk);

            memset(chunk, (int)((h->sent / sizeof(chunk)) & 0xff), n);
            h->sum += (unsigned long)(unsigned char)chunk[0] * n;
            aw_stream_write(h->s, chunk, n);
            h->sent += n;
            AW_AWAIT(aw_stream_drain(h->s), NULL);
        }
        big_sum = h->sum;
    } else {
        AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 3600), NULL);
    }
    AW_FINALLY();
    if (h->s != NULL)
        aw_stream_close(h->s);
    clients_done++;
    AW_END();
}

static void
on_client(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));
    aw_task *t;

    (void)arg;
    h->s = s;
    h->script = server_script;
    t = aw_task_new(aw_transport_loop(aw_stream_transport(s)), handler_task, h,
                    handler_free);
    aw_future_unref(t); /* the loop runs it to its end */
}

static aw_server *
start(int script)
{
    aw_future *f;
    void *srv = NULL;

    server_script = script;
    clients_done = 0;
    f = aw_start_server(loop, "127.0.0.1", 0, on_client, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    return srv;
}

static aw_stream *
dial(aw_server *srv)
{
    aw_future *f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    void *s = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &s, NULL), 0);
    aw_future_unref(f);
    return s;
}

static void
stop(aw_server *srv)
{
    aw_task *ts[64];
    size_t i, n;
    int guard = 0;

    aw_server_close(srv);
    /* Handlers still waiting (the sink's) are cancelled. */
    n = aw_all_tasks(loop, ts, 64);
    for (i = 0; i < n && i < 64; i++)
        aw_future_cancel(ts[i], "test over");
    while (aw_all_tasks(loop, NULL, 0) > 0 && guard++ < 100000)
        aw_loop_run_once(loop, 0);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}

static void
expect(aw_future *f, const char *want)
{
    aw_bytes *b = await_bytes(f, 0);

    ck_assert_int_eq(aw_bytes_len(b), strlen(want));
    ck_assert_int_eq(memcmp(aw_bytes_data(b), want, strlen(want)), 0);
    ck_assert_str_eq(aw_bytes_cstr(b), want);
    aw_bytes_free(b);
}

/* ---- tests --------------------------------------------------------------------------- */

START_TEST(read_forms_with_data_split_across_writes)
{
    aw_server *srv = start(SEND_PIECES);
    aw_stream *s = dial(srv);

    expect(aw_stream_readline(s), "hello\n");
    expect(aw_stream_readline(s), "world\n");
    expect(aw_stream_readexactly(s, 4), "ABCD");
    expect(aw_stream_readuntil(s, "--END--", 7), "EFGH--END--");
    ck_assert_int_eq(aw_stream_at_eof(s), 0);
    expect(aw_stream_readexactly(s, 4), "tail");
    expect(aw_stream_read(s, 100), ""); /* end of file */
    ck_assert_int_eq(aw_stream_at_eof(s), 1);
    aw_stream_close(s);
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

START_TEST(readuntil_limit_overrun_keeps_data)
{
    static char text[101];
    aw_server *srv;
    aw_stream *s;
    aw_bytes *b;

    memset(text, 'x', 100);
    send_text = text;
    srv = start(SEND_AND_CLOSE);
    s = dial(srv);
    aw_stream_set_limit(s, 16);
    await_bytes(aw_stream_readuntil(s, "\n", 1), AW_ELIMIT);
    b = await_bytes(aw_stream_readexactly(s, 100), 0); /* still there */
    ck_assert_int_eq(aw_bytes_len(b), 100);
    aw_bytes_free(b);
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

START_TEST(readexactly_incomplete_gives_partial)
{
    aw_server *srv;
    aw_stream *s;
    aw_bytes *p;

    send_text = "12345";
    srv = start(SEND_AND_CLOSE);
    s = dial(srv);
    await_bytes(aw_stream_readexactly(s, 10), AW_EINCOMPLETE);
    p = aw_stream_partial(s);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(aw_bytes_cstr(p), "12345");
    aw_bytes_free(p);
    ck_assert_ptr_null(aw_stream_partial(s));
    await_bytes(aw_stream_readuntil(s, "\n", 1), AW_EINCOMPLETE);
    aw_bytes_free(aw_stream_partial(s));
    expect(aw_stream_readline(s), ""); /* at EOF: empty, not an error */
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

START_TEST(big_transfer_intact_with_drain)
{
    aw_server *srv;
    aw_stream *s;
    unsigned long sum = 0;
    size_t got = 0;

    big_total = aw_test_slow() ? (size_t)4 << 20 : (size_t)100 << 20;
    big_sum = 0;
    srv = start(SEND_BIG);
    s = dial(srv);
    for (;;) {
        aw_bytes *b = await_bytes(aw_stream_read(s, 1 << 16), 0);
        size_t i, n = aw_bytes_len(b);

        for (i = 0; i < n; i++)
            sum += (unsigned char)aw_bytes_data(b)[i];
        got += n;
        aw_bytes_free(b);
        if (n == 0)
            break;
    }
    ck_assert_int_eq(got, big_total);
    ck_assert_int_eq(sum, big_sum);
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

struct reader {
    aw_stream *s;
    int rc;
    aw_bytes *line;
};

static AW_TASK(read_a_line, struct reader *r)
{
    AW_BEGIN();
    AW_TRY_AWAIT(r->rc, aw_stream_readline(r->s), &r->line);
    AW_END();
}

START_TEST(cancel_task_mid_read)
{
    aw_server *srv = start(SINK);
    aw_stream *s = dial(srv);
    struct reader *r = calloc(1, sizeof(*r));
    aw_task *t;

    r->s = s;
    t = aw_task_new(loop, read_a_line, r, NULL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_cancel(t, NULL);
    aw_loop_run_until_complete(loop, t);
    ck_assert_int_eq(r->rc, AW_ECANCELLED);
    aw_future_unref(t);
    /* The stream is still usable for a new read. */
    aw_stream_write(s, "x", 1); /* the sink does not answer */
    ck_assert_int_eq(aw_stream_is_closing(s), 0);
    aw_stream_close(s);
    ck_assert_int_eq(aw_stream_write(s, "y", 1), AW_ECLOSED);
    aw_stream_unref(s);
    free(r);
    stop(srv);
}
END_TEST

struct drainer {
    aw_stream *s;
    int rc;
    int n;
};

static AW_TASK(write_and_drain, struct drainer *d)
{
    static char chunk[1 << 16];

    AW_BEGIN();
    for (d->n = 0; d->n < 10000; d->n++) {
        aw_stream_write(d->s, chunk, sizeof(chunk));
        AW_TRY_AWAIT(d->rc, aw_stream_drain(d->s), NULL);
        if (d->rc != 0)
            break;
    }
    AW_END();
}

START_TEST(cancel_task_mid_drain_and_drain_after_peer_gone)
{
    aw_server *srv = start(SINK); /* never reads: the buffer fills */
    aw_stream *s = dial(srv);
    struct drainer *d = calloc(1, sizeof(*d));
    aw_task *t;
    aw_future *f;
    int i;

    d->s = s;
    t = aw_task_new(loop, write_and_drain, d, NULL);
    for (i = 0; i < 200 && d->n < 50; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_cancel(t, NULL);
    aw_loop_run_until_complete(loop, t);
    ck_assert_int_eq(d->rc, AW_ECANCELLED); /* stuck in drain, cancelled */
    ck_assert_int_lt(d->n, 10000);
    aw_future_unref(t);
    /* The peer goes away: a drain fails with the connection's error. */
    f = aw_stream_drain(s);
    stop(srv); /* the sink's task is cancelled, its stream closed */
    ck_assert_int_ne(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    aw_stream_unref(s);
    free(d);
}
END_TEST

/* A write that takes the buffer over its high-water mark makes the next
 * drain wait at once, as asyncio's does: the protocol's pause_writing
 * comes from the ready queue later, and a task whose drain were settled
 * would go on writing without bound meanwhile. */
START_TEST(drain_waits_from_the_write_that_crossed_the_limit)
{
    aw_server *srv = start(SINK); /* never reads */
    aw_stream *s = dial(srv);
    size_t big = 32u << 20; /* more than the kernel's buffers take */
    char *chunk = calloc(1, big);
    aw_future *d;

    ck_assert_ptr_nonnull(chunk);
    ck_assert_int_eq(aw_stream_write(s, chunk, big), 0);
    ck_assert_uint_gt(aw_transport_write_buffer_size(aw_stream_transport(s)),
                      64 * 1024);
    d = aw_stream_drain(s); /* no pass of the loop in between */
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(aw_future_done(d), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* the pause notice runs */
    ck_assert_int_eq(aw_future_done(d), 0);
    aw_transport_abort(aw_stream_transport(s));
    ck_assert_int_ne(aw_loop_run_until_complete(loop, d), 0);
    aw_future_unref(d);
    aw_stream_unref(s);
    free(chunk);
    stop(srv);
}
END_TEST

struct echo_client {
    aw_stream *s;
    int id;
    int rc;
    aw_bytes *line;
};

static AW_TASK(echo_client_task, struct echo_client *c)
{
    char msg[32];

    AW_BEGIN();
    snprintf(msg, sizeof(msg), "client %d\n", c->id);
    aw_stream_write(c->s, msg, strlen(msg));
    AW_AWAIT(aw_stream_readline(c->s), &c->line);
    snprintf(msg, sizeof(msg), "client %d\n", c->id);
    c->rc = strcmp(aw_bytes_cstr(c->line), msg) == 0 ? 1 : -1;
    aw_stream_close(c->s);
    AW_END();
}

START_TEST(many_concurrent_clients_echoed)
{
    enum { N = 50 };
    static struct echo_client c[N];
    aw_server *srv = start(ECHO);
    aw_future *ts[N], *all;
    int i;

    for (i = 0; i < N; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].s = dial(srv);
        c[i].id = i;
        ts[i] = aw_task_new(loop, echo_client_task, &c[i], NULL);
    }
    all = aw_gather(loop, N, ts, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, all), 0);
    aw_future_unref(all);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(c[i].rc, 1);
        aw_stream_unref(c[i].s);
    }
    stop(srv);
}
END_TEST

START_TEST(unix_stream_server_and_client)
{
    char path[64];
    aw_future *f;
    void *srv = NULL, *s = NULL;

    snprintf(path, sizeof(path), "/tmp/awstream-%d.sock", (int)getpid());
    server_script = ECHO;
    f = aw_start_unix_server(loop, path, on_client, NULL, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_open_unix_connection(loop, path);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    aw_stream_write(s, "over unix\n", 10);
    expect(aw_stream_readline(s), "over unix\n");
    aw_stream_close(s);
    aw_stream_unref(s);
    stop(srv);
    unlink(path);
}
END_TEST

START_TEST(getaddrinfo_localhost_and_ipv6_literal_and_cancel)
{
    aw_future *f = aw_getaddrinfo(loop, "localhost", 80, AF_UNSPEC);
    struct evutil_addrinfo *ai;
    void *p = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_result(f, &p);
    ai = p;
    ck_assert_ptr_nonnull(ai);
    ck_assert(ai->ai_family == AF_INET || ai->ai_family == AF_INET6);
    aw_future_unref(f);
    f = aw_getaddrinfo(loop, "::1", 0, AF_UNSPEC);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_result(f, &p);
    ck_assert_int_eq(((struct evutil_addrinfo *)p)->ai_family, AF_INET6);
    aw_future_unref(f);
    /* Cancelled at once, and once its answer is on the way. */
    f = aw_getaddrinfo(loop, "localhost", 0, AF_INET);
    aw_future_cancel(f, NULL);
    aw_future_unref(f);
    f = aw_getaddrinfo(loop, "example.invalid", 0, AF_INET);
    aw_future_cancel(f, NULL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_future_unref(f);
    f = aw_getaddrinfo(loop, NULL, 0, AF_INET);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    /* Cancelled lookups still run on their worker: let them end before
     * the fixture counts allocations. */
    ck_assert_int_eq(aw_loop_shutdown_default_executor(loop, 1), 0);
}
END_TEST

START_TEST(connection_refused_and_bad_arguments)
{
    aw_future *f;
    aw_server *srv = start(SINK);
    int port = aw_server_port(srv);

    stop(srv); /* nobody listens on port now */
    f = aw_open_connection(loop, "127.0.0.1", port);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -ECONNREFUSED);
    aw_future_unref(f);
    f = aw_open_connection(loop, NULL, 80);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_start_server(loop, "127.0.0.1", 0, NULL, NULL, 0, 0);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_ptr_null(aw_stream_read(NULL, 1));
    ck_assert_int_eq(aw_stream_write(NULL, "x", 1), -EINVAL);
    aw_stream_unref(NULL);
    ck_assert_int_eq(aw_bytes_len(NULL), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}
END_TEST


/* ---- more connections and faults --------------------------------------------- */

static int
raw_connect(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

START_TEST(thousand_concurrent_connections)
{
    int n = aw_test_slow() ? 100 : 1000, i, ok = 0;
    struct rlimit rl;
    aw_server *srv;
    aw_future **ts, *all;
    struct echo_client *c;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < 2 * n + 100)
        n = ((int)rl.rlim_cur - 100) / 2;
    /* libevent's select backend watches descriptors below FD_SETSIZE
     * only (make check-backends): two per connection, in one process. */
    if (strcmp(event_base_get_method(aw_loop_get_base(loop)), "select") == 0 &&
        n > (FD_SETSIZE - 100) / 2)
        n = (FD_SETSIZE - 100) / 2;
    srv = start(ECHO);
    ts = calloc((size_t)n, sizeof(*ts));
    c = calloc((size_t)n, sizeof(*c));
    for (i = 0; i < n; i++) {
        c[i].s = dial(srv);
        c[i].id = i;
    }
    /* Every connection open at once, then all talk concurrently. */
    for (i = 0; i < n; i++)
        ts[i] = aw_task_new(loop, echo_client_task, &c[i], NULL);
    all = aw_gather(loop, (size_t)n, ts, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, all), 0);
    aw_future_unref(all);
    for (i = 0; i < n; i++) {
        ok += c[i].rc == 1;
        aw_stream_unref(c[i].s);
    }
    ck_assert_int_eq(ok, n);
    free(ts);
    free(c);
    stop(srv);
}
END_TEST

struct slow {
    aw_stream *s;
    const char *text;
    size_t i;
    double done_at;
    aw_bytes *line;
};

static AW_TASK(slow_sender, struct slow *w)
{
    AW_BEGIN();
    for (w->i = 0; w->text[w->i] != '\0'; w->i++) {
        aw_stream_write(w->s, w->text + w->i, 1);
        AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.003), NULL);
    }
    AW_AWAIT(aw_stream_readline(w->s), &w->line);
    w->done_at = aw_loop_time(aw_task_loop(AW_SELF()));
    AW_END();
}

static AW_TASK(fast_sender, struct slow *w)
{
    AW_BEGIN();
    aw_stream_write(w->s, w->text, strlen(w->text));
    AW_AWAIT(aw_stream_readline(w->s), &w->line);
    w->done_at = aw_loop_time(aw_task_loop(AW_SELF()));
    AW_END();
}

START_TEST(slow_client_does_not_hold_others_back)
{
    aw_server *srv = start(ECHO);
    static struct slow slow, fast[5];
    aw_future *ts[6], *all;
    int i;

    memset(&slow, 0, sizeof(slow));
    slow.s = dial(srv);
    slow.text = "one byte at a time\n";
    ts[0] = aw_task_new(loop, slow_sender, &slow, NULL);
    for (i = 0; i < 5; i++) {
        memset(&fast[i], 0, sizeof(fast[i]));
        fast[i].s = dial(srv);
        fast[i].text = "quick\n";
        ts[1 + i] = aw_task_new(loop, fast_sender, &fast[i], NULL);
    }
    all = aw_gather(loop, 6, ts, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, all), 0);
    aw_future_unref(all);
    for (i = 0; i < 5; i++) {
        ck_assert(fast[i].done_at < slow.done_at); /* not behind it */
        aw_stream_close(fast[i].s);
        aw_stream_unref(fast[i].s);
    }
    aw_stream_close(slow.s);
    aw_stream_unref(slow.s);
    stop(srv);
}
END_TEST

static int reset_rc;

static AW_TASK(read_until_reset, struct handler *h)
{
    AW_BEGIN();
    AW_TRY_AWAIT(reset_rc, aw_stream_readexactly(h->s, 100), &h->line);
    AW_END();
}

static void
on_reset_client(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));

    (void)arg;
    h->s = s;
    aw_future_unref(aw_task_new(loop, read_until_reset, h, handler_free));
}

START_TEST(peer_reset_mid_read)
{
    struct linger lg = {1, 0};
    aw_future *f;
    void *srv = NULL;
    int fd;

    reset_rc = 1;
    f = aw_start_server(loop, "127.0.0.1", 0, on_reset_client, NULL, 0, 0);
    aw_loop_run_until_complete(loop, f);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    fd = raw_connect(aw_server_port(srv));
    ck_assert_int_eq(write(fd, "0123456789", 10), 10);
    while (aw_all_tasks(loop, NULL, 0) == 0)
        aw_loop_run_once(loop, 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd); /* an RST in the middle of the read */
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(reset_rc, -ECONNRESET);
    stop(srv);
}
END_TEST

static AW_TASK(half_close_server, struct handler *h)
{
    AW_BEGIN();
    for (;;) { /* read to the end of what the client sends */
        AW_AWAIT(aw_stream_read(h->s, 100), &h->line);
        if (aw_bytes_len(h->line) == 0)
            break;
        h->sent += aw_bytes_len(h->line);
    }
    /* The client can still read: answer after its EOF. */
    aw_stream_write(h->s, "got it\n", 7);
    AW_AWAIT(aw_stream_drain(h->s), NULL);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
on_half_client(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));

    (void)arg;
    h->s = s;
    aw_future_unref(aw_task_new(loop, half_close_server, h, handler_free));
}

START_TEST(half_close_with_streams)
{
    aw_future *f;
    void *srv = NULL, *s = NULL;

    f = aw_start_server(loop, "127.0.0.1", 0, on_half_client, NULL, 0, 0);
    aw_loop_run_until_complete(loop, f);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    aw_loop_run_until_complete(loop, f);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    aw_stream_write(s, "question", 8);
    ck_assert_int_eq(aw_stream_write_eof(s), 0);
    ck_assert_int_eq(aw_stream_write(s, "x", 1), AW_ECLOSED);
    expect(aw_stream_readline(s), "got it\n");
    expect(aw_stream_read(s, 10), ""); /* and then its EOF */
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

static int
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    while (d != NULL && readdir(d) != NULL)
        n++;
    if (d != NULL)
        closedir(d);
    return n - 3; /* ., .. and the directory's own fd */
}

static struct {
    volatile int calls;
    char message[256];
} accept_reports;

static void
note_report(aw_loop *l, const aw_exception_context *ctx, void *arg)
{
    (void)l;
    (void)arg;
    accept_reports.calls++;
    snprintf(accept_reports.message, sizeof(accept_reports.message), "%s",
             ctx->message);
}

START_TEST(listener_out_of_fds_keeps_serving)
{
    struct rlimit rl, low;
    aw_server *srv;
    int fds[3], i;
    char buf[8];

    memset(&accept_reports, 0, sizeof(accept_reports));
    aw_loop_set_exception_handler(loop, note_report, NULL);
    srv = start(ECHO);
    for (i = 0; i < 3; i++)
        fds[i] = raw_connect(aw_server_port(srv)); /* in the backlog */
    getrlimit(RLIMIT_NOFILE, &rl);
    low = rl;
    low.rlim_cur = (rlim_t)open_fds() + 1; /* no room for accept */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    aw_test_run_until(loop, &accept_reports.calls, 5);
    if (accept_reports.calls == 0) {
        /* Under valgrind the file limit is its own: nothing to see. */
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
        for (i = 0; i < 3; i++)
            close(fds[i]);
        stop(srv);
        return;
    }
    ck_assert_int_ge(accept_reports.calls, 1);
    ck_assert_ptr_nonnull(strstr(accept_reports.message, "accept"));
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    /* Once fds are free again it accepts the clients waiting. */
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(write(fds[i], "hi\n", 3), 3);
    for (i = 0; i < 3; i++) {
        ssize_t n = -1;

        while (n < 0) {
            aw_loop_run_once(loop, AW_RUN_NOWAIT);
            n = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT);
            if (n < 0)
                usleep(1000);
        }
        ck_assert_int_eq(n, 3);
        close(fds[i]);
    }
    stop(srv);
}
END_TEST

/* A writer pushing through drain to a reader that takes its time: the
 * memory in use stays bounded whatever the size (1 GB in check-long). */
static size_t slow_total, slow_got, slow_next_pause, heap_peak, heap_base;

static size_t
heap_now(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

struct pusher {
    aw_stream *s;
    size_t sent;
};

static AW_TASK(pusher_task, struct pusher *p)
{
    static char chunk[1 << 16];

    AW_BEGIN();
    while (p->sent < slow_total) {
        aw_stream_write(p->s, chunk, sizeof(chunk));
        p->sent += sizeof(chunk);
        AW_AWAIT(aw_stream_drain(p->s), NULL);
        if (heap_now() > heap_peak)
            heap_peak = heap_now();
    }
    aw_stream_write_eof(p->s);
    AW_END();
}

static AW_TASK(slow_reader_task, struct handler *h)
{
    AW_BEGIN();
    for (;;) {
        AW_AWAIT(aw_stream_read(h->s, 1 << 16), &h->line);
        if (aw_bytes_len(h->line) == 0)
            break;
        slow_got += aw_bytes_len(h->line);
        if (slow_got >= slow_next_pause) { /* a pause every 4 MiB */
            slow_next_pause += (size_t)4 << 20;
            AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 0.001), NULL);
        }
    }
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
on_slow_reader(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));

    (void)arg;
    h->s = s;
    aw_future_unref(aw_task_new(loop, slow_reader_task, h, handler_free));
}

START_TEST(writer_to_slow_reader_keeps_memory_bounded)
{
    struct pusher p = {NULL, 0};
    aw_future *f;
    aw_task *t;
    void *srv = NULL, *s = NULL;

    slow_total = aw_test_long()   ? (size_t)1 << 30
                 : aw_test_slow() ? (size_t)16 << 20
                                  : (size_t)256 << 20;
    slow_got = 0;
    slow_next_pause = (size_t)4 << 20;
    f = aw_start_server(loop, "127.0.0.1", 0, on_slow_reader, NULL, 0, 0);
    aw_loop_run_until_complete(loop, f);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    aw_loop_run_until_complete(loop, f);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    p.s = s;
    heap_base = heap_peak = heap_now();
    t = aw_task_new(loop, pusher_task, &p, NULL);
    while (slow_got < slow_total)
        aw_loop_run_once(loop, 0);
    aw_loop_run_until_complete(loop, t);
    aw_future_unref(t);
    ck_assert_int_eq(slow_got, slow_total);
    /* The writer's and the reader's buffers: a few limits, not the
     * transfer. */
    ck_assert_msg(heap_peak - heap_base < (size_t)8 << 20,
                  "heap grew by %zu bytes", heap_peak - heap_base);
    aw_stream_close(s);
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

/* 10,000 idle connections (clients in a child process, so that the file
 * limit is not shared); check-long only, 500 otherwise. */
static long idle_count;

static AW_TASK(idle_server_task, struct handler *h)
{
    AW_BEGIN();
    idle_count++;
    AW_AWAIT(aw_stream_readline(h->s), &h->line);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
on_idle_client(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));

    (void)arg;
    h->s = s;
    aw_future_unref(aw_task_new(loop, idle_server_task, h, handler_free));
}

START_TEST(ten_thousand_idle_connections)
{
    long n = aw_test_long() ? 10000 : 500, i;
    struct rlimit rl;
    int sync[2], port;
    aw_future *f;
    void *srv = NULL;
    pid_t child;
    char c = 0;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < n + 100)
        n = (long)rl.rlim_cur - 100;
    f = aw_start_server(loop, "127.0.0.1", 0, on_idle_client, NULL, 0, 4096);
    aw_loop_run_until_complete(loop, f);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    port = aw_server_port(srv);
    ck_assert_int_eq(pipe(sync), 0);
    child = fork();
    if (child == 0) {
        for (i = 0; i < n; i++) {
            struct sockaddr_in sin;
            int fd = socket(AF_INET, SOCK_STREAM, 0);

            memset(&sin, 0, sizeof(sin));
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sin.sin_port = htons((unsigned short)port);
            if (fd < 0 ||
                connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
                _exit(1);
        }
        if (read(sync[0], &c, 1) < 0)
            _exit(1);
        _exit(0); /* every connection closes: the server sees EOF */
    }
    idle_count = 0;
    while (idle_count < n)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_all_tasks(loop, NULL, 0), (size_t)n);
    ck_assert_int_eq(write(sync[1], "x", 1), 1);
    waitpid(child, NULL, 0);
    close(sync[0]);
    close(sync[1]);
    /* Every server task ends with the client's EOF, nothing left. */
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
    stop(srv);
}
END_TEST

struct server_task {
    aw_server *srv;
    int rc;
};

static AW_TASK(serving_task, struct server_task *st)
{
    AW_BEGIN();
    AW_TRY_AWAIT(st->rc, aw_server_serve_forever(st->srv), NULL);
    AW_END();
}

START_TEST(serve_until_cancelled)
{
    struct server_task st = {NULL, 1};
    aw_server *srv = start(ECHO);
    aw_stream *s = dial(srv);
    aw_task *t;
    aw_future *f;

    st.srv = srv;
    t = aw_task_new(loop, serving_task, &st, NULL);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_stream_write(s, "still here\n", 11);
    expect(aw_stream_readline(s), "still here\n");
    aw_future_cancel(t, NULL);
    aw_loop_run_until_complete(loop, t);
    ck_assert_int_eq(st.rc, AW_ECANCELLED);
    /* The server is closed: a new connection is refused. */
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -ECONNREFUSED);
    aw_future_unref(f);
    aw_future_unref(t);
    aw_stream_close(s);
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

/* ---- hand-over: data given to a read is never lost ------------------------ */

/* A server that keeps its side of the connection for the test to write. */
static aw_stream *peer_side;

static void
keep_client(aw_stream *s, void *arg)
{
    (void)arg;
    peer_side = s;
}

static aw_server *
start_keeping(void)
{
    aw_future *f;
    void *srv = NULL;

    peer_side = NULL;
    f = aw_start_server(loop, "127.0.0.1", 0, keep_client, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    return srv;
}

/* Close both sides of a start_keeping() connection and its server. */
static void
stop_keeping(aw_stream *s, aw_server *srv)
{
    aw_stream_close(s);
    aw_stream_unref(s);
    aw_stream_close(peer_side);
    aw_stream_unref(peer_side);
    stop(srv);
}

enum { K_READ, K_READEXACTLY, K_READUNTIL, K_READLINE, K_KINDS };

static aw_future *
read_of_kind(aw_stream *s, int kind)
{
    switch (kind) {
    case K_READ:
        return aw_stream_read(s, 100);
    case K_READEXACTLY:
        return aw_stream_readexactly(s, 6);
    case K_READUNTIL:
        return aw_stream_readuntil(s, "o\n", 2);
    default:
        return aw_stream_readline(s);
    }
}

struct hand_reader {
    aw_stream *s;
    aw_task *self;
    int kind;
    int cancel_on_data; /* cancel the task when its read settles */
    int rc;
    aw_bytes *got;
};

static int
cancel_task(aw_future *f, void *arg)
{
    (void)f;
    aw_future_cancel(arg, NULL);
    return 0;
}

static AW_TASK(hand_read, struct hand_reader *r)
{
    aw_future *f;

    AW_BEGIN();
    f = read_of_kind(r->s, r->kind);
    /* Registered before the task's own wake-up: it runs between the
     * hand-over and the task's resumption. */
    if (r->cancel_on_data)
        ck_assert_int_eq(aw_future_add_done_callback(f, cancel_task, r->self),
                         0);
    AW_TRY_AWAIT(r->rc, f, &r->got);
    if (r->rc == 0)
        ck_assert_int_eq(aw_bytes_len(r->got), 6);
    AW_END();
}

enum { DATA_WHILE_WAITING, DATA_BEFORE_READ, CANCEL_THEN_DATA, NO_CANCEL };

static void
hand_over(aw_stream *s, int kind, int when)
{
    struct hand_reader r;
    aw_task *t;

    memset(&r, 0, sizeof(r));
    r.s = s;
    r.kind = kind;
    r.cancel_on_data = when == DATA_WHILE_WAITING || when == DATA_BEFORE_READ;
    if (when == DATA_BEFORE_READ) {
        ck_assert_int_eq(aw_stream_write(peer_side, "hello\n", 6), 0);
        aw_loop_run_once(loop, AW_RUN_NOWAIT); /* in the client's buffer */
    }
    t = aw_task_new(loop, hand_read, &r, NULL);
    r.self = t;
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* the read starts */
    if (when == CANCEL_THEN_DATA) {
        aw_future_cancel(t, NULL);
        aw_loop_run_until_complete(loop, t);
    }
    if (when != DATA_BEFORE_READ)
        ck_assert_int_eq(aw_stream_write(peer_side, "hello\n", 6), 0);
    aw_loop_run_until_complete(loop, t);
    aw_future_unref(t);
    if (when == NO_CANCEL || when == DATA_BEFORE_READ) {
        /* A read served from the buffer is settled when the task awaits
         * it: the task goes on at once and has the bytes (no window in
         * which a cancellation could come between). */
        ck_assert_int_eq(r.rc, 0);
        return;
    }
    ck_assert_msg(r.rc == AW_ECANCELLED, "kind %d, case %d: %d", kind, when,
                  r.rc);
    /* Nothing lost: the bytes are still the stream's. */
    expect(aw_stream_readexactly(s, 6), "hello\n");
}

START_TEST(read_cancelled_after_hand_over_loses_nothing)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    int kind, when;

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    for (kind = 0; kind < K_KINDS; kind++)
        for (when = DATA_WHILE_WAITING; when <= NO_CANCEL; when++)
            hand_over(s, kind, when);
    stop_keeping(s, srv);
}
END_TEST

/* readexactly(n) with n above the limit: reading, paused past twice the
 * limit, goes on for it, and at end of file it is incomplete, not stuck. */
START_TEST(readexactly_above_limit)
{
    static char data[1000];
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    aw_bytes *b;
    size_t i;

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_stream_set_limit(s, 16), 0);
    for (i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    /* In pieces: the first one alone is past twice the limit. */
    for (i = 0; i < sizeof(data); i += 100) {
        ck_assert_int_eq(aw_stream_write(peer_side, data + i, 100), 0);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    b = await_bytes(aw_stream_readexactly(s, sizeof(data)), 0);
    ck_assert_int_eq(aw_bytes_len(b), sizeof(data));
    ck_assert_int_eq(memcmp(aw_bytes_data(b), data, sizeof(data)), 0);
    aw_bytes_free(b);
    /* The same with the peer gone after 500 bytes. */
    for (i = 0; i < 500; i += 100) {
        ck_assert_int_eq(aw_stream_write(peer_side, data + i, 100), 0);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    aw_stream_close(peer_side);
    await_bytes(aw_stream_readexactly(s, sizeof(data)), AW_EINCOMPLETE);
    b = aw_stream_partial(s);
    ck_assert_int_eq(aw_bytes_len(b), 500);
    ck_assert_int_eq(memcmp(aw_bytes_data(b), data, 500), 0);
    aw_bytes_free(b);
    aw_stream_unref(s);
    aw_stream_unref(peer_side);
    stop(srv);
}
END_TEST

/* The limit is on the data before the separator (asyncio): a line of
 * exactly limit bytes and its separator is read; one byte more is
 * AW_ELIMIT, the data left buffered. */
START_TEST(limit_applies_before_separator)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    aw_bytes *b;

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_stream_set_limit(s, 16), 0);
    aw_stream_write(peer_side, "0123456789abcdef\n", 17);
    expect(aw_stream_readline(s), "0123456789abcdef\n");
    aw_stream_write(peer_side, "0123456789abcdef--", 18);
    expect(aw_stream_readuntil(s, "--", 2), "0123456789abcdef--");
    aw_stream_write(peer_side, "0123456789abcdefg\n", 18);
    await_bytes(aw_stream_readuntil(s, "\n", 1), AW_ELIMIT);
    expect(aw_stream_readexactly(s, 18), "0123456789abcdefg\n");
    /* Not found yet: 17 bytes may still end in the first byte of a
     * two-byte separator; 18 may not. */
    aw_stream_write(peer_side, "0123456789abcdefg", 17);
    aw_stream_write_eof(peer_side);
    await_bytes(aw_stream_readuntil(s, "--", 2), AW_EINCOMPLETE);
    b = aw_stream_partial(s);
    ck_assert_int_eq(aw_bytes_len(b), 17);
    aw_bytes_free(b);
    stop_keeping(s, srv);
}
END_TEST

START_TEST(limit_not_found_past_limit)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_stream_set_limit(s, 16), 0);
    aw_stream_write(peer_side, "0123456789abcdefgh", 18);
    await_bytes(aw_stream_readuntil(s, "--", 2), AW_ELIMIT);
    expect(aw_stream_readexactly(s, 18), "0123456789abcdefgh");
    stop_keeping(s, srv);
}
END_TEST

/* Each resolver failure has its own code and the resolver's message, not
 * one "no route to host" for all: a family the resolver does not serve is
 * AW_EAI_FAMILY, decided before any lookup (so without a network); a
 * cancelled lookup is AW_ECANCELLED. */
START_TEST(getaddrinfo_failures_have_their_own_codes)
{
    aw_future *f;

    f = aw_getaddrinfo(loop, "localhost", 80, AF_UNIX);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_EAI_FAMILY);
    ck_assert_ptr_nonnull(aw_future_message(f));
    ck_assert_str_ne(aw_future_message(f), "");
    aw_future_unref(f);
    f = aw_getaddrinfo(loop, "example.invalid", 0, AF_INET);
    aw_future_cancel(f, NULL);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_ECANCELLED);
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* the request's last word */
    ck_assert_int_eq(aw_loop_shutdown_default_executor(loop, 1), 0);
    ck_assert_str_eq(aw_err_name(AW_EAI_FAMILY), "AW_EAI_FAMILY");
}
END_TEST

/* Both ends' addresses as text in one call. */
START_TEST(stream_addresses_as_text)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    char a[AW_ADDRSTRLEN], b[AW_ADDRSTRLEN];

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    /* One end's peer is the other end's local address. */
    ck_assert_int_gt(aw_stream_peername_text(s, a, sizeof(a)), 0);
    ck_assert_int_gt(aw_stream_sockname_text(peer_side, b, sizeof(b)), 0);
    ck_assert_str_eq(a, b);
    ck_assert_int_gt(aw_stream_sockname_text(s, a, sizeof(a)), 0);
    ck_assert_int_gt(aw_stream_peername_text(peer_side, b, sizeof(b)), 0);
    ck_assert_str_eq(a, b);
    ck_assert(strncmp(a, "127.0.0.1:", 10) == 0);
    ck_assert_int_eq(aw_stream_peername_text(NULL, a, sizeof(a)),
                     -EINVAL);
    stop_keeping(s, srv);
}
END_TEST

/* aw_bytes_new: bad input gets NULL, never a crash (NULL data with a
 * length, a length too large to allocate); an empty copy of NULL is
 * fine. */
START_TEST(bytes_new_bad_input)
{
    aw_bytes *b;

    ck_assert_ptr_null(aw_bytes_new(NULL, 5));
    ck_assert_ptr_null(aw_bytes_new("x", SIZE_MAX));
    ck_assert_ptr_null(aw_bytes_new("x", SIZE_MAX - 8));
    b = aw_bytes_new(NULL, 0);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(aw_bytes_len(b), 0);
    aw_bytes_free(b);
    b = aw_bytes_new("abc", 3);
    ck_assert_uint_eq(aw_bytes_len(b), 3);
    ck_assert_int_eq(memcmp(aw_bytes_data(b), "abc", 3), 0);
    aw_bytes_free(b);
}
END_TEST

/* A loop that will not close names each stream still alive by its peer. */
START_TEST(busy_close_names_streams_by_peer)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    char peer[AW_ADDRSTRLEN], want[AW_ADDRSTRLEN + 32];

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_int_gt(aw_stream_peername_text(s, peer, sizeof(peer)), 0);
    aw_test_reports[0] = '\0';
    aw_loop_set_exception_handler(loop, aw_test_log_reports, NULL);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    snprintf(want, sizeof(want), "transport to %s (open)", peer);
    ck_assert_msg(strstr(aw_test_reports, want) != NULL, "%s", aw_test_reports);
    aw_loop_set_exception_handler(loop, NULL, NULL);
    stop_keeping(s, srv);
}
END_TEST

/* asyncio test_readline_limit_with_existing_data: readline past the
 * limit drops the overlong line through its newline, or everything
 * buffered when no newline came; readuntil keeps it (above). */
START_TEST(readline_limit_with_existing_data)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_stream_set_limit(s, 3), 0);
    aw_stream_write(peer_side, "line1\nab\n", 9);
    await_bytes(aw_stream_readline(s), AW_ELIMIT);
    expect(aw_stream_readline(s), "ab\n"); /* what followed is kept */
    aw_stream_write(peer_side, "line1li", 7);
    await_bytes(aw_stream_readline(s), AW_ELIMIT);
    aw_stream_write(peer_side, "x\n", 2);
    expect(aw_stream_readline(s), "x\n"); /* nothing of before is left */
    stop_keeping(s, srv);
}
END_TEST

/* ---- reads served from the buffer ------------------------------------------------ */

/* Wait until the stream holds n bytes. */
static void
buffered_at_least(aw_stream *s, size_t n)
{
    int guard = 0;

    while (aw_stream_buffered(s) < n && guard++ < 10000)
        aw_loop_run_once(loop, 0);
    ck_assert_uint_ge(aw_stream_buffered(s), n);
}

/* A read served at once: its bytes are want. */
static void
take_read(aw_future *f, const char *want)
{
    void *b = NULL;

    ck_assert_int_eq(aw_future_done(f), 1);
    ck_assert_int_eq(aw_future_take_result(f, &b, NULL), 0);
    ck_assert_uint_eq(aw_bytes_len(b), strlen(want));
    ck_assert_int_eq(memcmp(aw_bytes_data(b), want, strlen(want)), 0);
    aw_bytes_free(b);
    aw_future_unref(f);
}

/* Reads served from the buffer allocate only the bytes they return (the
 * future comes from the loop's pools, the separator is not copied, long
 * or short); a drain while writing is not paused allocates nothing and
 * is one shared settled future. */
START_TEST(reads_from_the_buffer_allocate_only_their_bytes)
{
    static const char text[] = "zero\none\ntwo\r\nthree<-- a long separator -->"
                               "four\nfive";
    static const char longsep[] = "<-- a long separator -->";
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    aw_future *f, *d1, *d2;
    long before, n;

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_stream_write(peer_side, text, strlen(text)), 0);
    buffered_at_least(s, strlen(text));
    expect(aw_stream_readline(s), "zero\n"); /* the pools warmed */

    before = aw_test_allocations();
    f = aw_stream_readline(s);
    n = aw_test_allocations() - before;
    take_read(f, "one\n");
    ck_assert_int_eq(n, 1);

    before = aw_test_allocations();
    f = aw_stream_readuntil(s, "\r\n", 2);
    n = aw_test_allocations() - before;
    take_read(f, "two\r\n");
    ck_assert_int_eq(n, 1);

    before = aw_test_allocations();
    f = aw_stream_readuntil(s, longsep, strlen(longsep));
    n = aw_test_allocations() - before;
    take_read(f, "three<-- a long separator -->");
    ck_assert_int_eq(n, 1);

    before = aw_test_allocations();
    f = aw_stream_readexactly(s, 2);
    n = aw_test_allocations() - before;
    take_read(f, "fo");
    ck_assert_int_eq(n, 1);

    before = aw_test_allocations();
    f = aw_stream_read(s, 100);
    n = aw_test_allocations() - before;
    take_read(f, "ur\nfive");
    ck_assert_int_eq(n, 1);

    d1 = aw_stream_drain(s);
    before = aw_test_allocations();
    d2 = aw_stream_drain(s);
    ck_assert_int_eq(aw_test_allocations() - before, 0);
    ck_assert_ptr_eq(d1, d2);
    ck_assert_int_eq(aw_future_done(d2), 1);
    ck_assert_int_eq(aw_future_error(d2), 0);
    aw_future_unref(d1);
    aw_future_unref(d2);
    stop_keeping(s, srv);
}
END_TEST

/* A read that waits keeps its separator (the caller's may be gone by
 * the time the data comes): short and long ones, a long one again. */
START_TEST(waiting_readuntil_keeps_its_separator)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    char sep[40];
    aw_future *f;
    int i;

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    for (i = 0; i < 3; i++) {
        const char *want = i == 0 ? "a;;" : "b[[ the end of the record ]]";

        snprintf(sep, sizeof(sep), "%s",
                 i == 0 ? ";;" : "[[ the end of the record ]]");
        f = aw_stream_readuntil(s, sep, strlen(sep));
        memset(sep, '#', sizeof(sep)); /* the caller's is gone */
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        ck_assert_int_eq(aw_future_done(f), 0);
        ck_assert_int_eq(aw_stream_write(peer_side, want, strlen(want)), 0);
        expect(f, want);
    }
    stop_keeping(s, srv);
}
END_TEST

/* A waiting readuntil whose data comes a byte at a time, with false
 * starts of its separator.  Each arrival is searched from where the last
 * search left off; this checks that the result is still right (a
 * separator that began in the bytes already searched is found), not the
 * cost, which make check does not time. */
START_TEST(readuntil_fed_a_byte_at_a_time)
{
    static const char data[] = "ab<EN<E<END<END>rest";
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    aw_future *f;
    size_t i, had;
    int guard;

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    f = aw_stream_readuntil(s, "<END>", 5);
    for (i = 0; i < sizeof(data) - 1 && !aw_future_done(f); i++) {
        had = aw_stream_buffered(s);
        ck_assert_int_eq(aw_stream_write(peer_side, data + i, 1), 0);
        for (guard = 0; guard < 10000 && !aw_future_done(f) &&
                        aw_stream_buffered(s) == had;
             guard++)
            aw_loop_run_once(loop, 0);
    }
    expect(f, "ab<EN<E<END<END>");
    ck_assert_str_eq(data + i, "rest");
    /* A line in two pieces, there before the read starts. */
    ck_assert_int_eq(aw_stream_write(peer_side, data + i, 4), 0);
    while (aw_stream_buffered(s) < 4)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_stream_write(peer_side, "x\n", 2), 0);
    while (aw_stream_buffered(s) < 6)
        aw_loop_run_once(loop, 0);
    expect(aw_stream_readline(s), "restx\n");
    stop_keeping(s, srv);
}
END_TEST

/* What a stream holds can be looked at without consuming it: its length
 * and a copy of its first bytes, for parsers that decide how much to
 * read. */
START_TEST(peek_and_buffered_leave_the_data)
{
    aw_server *srv = start_keeping();
    aw_stream *s = dial(srv);
    char buf[32];

    while (peer_side == NULL)
        aw_loop_run_once(loop, 0);
    ck_assert_uint_eq(aw_stream_buffered(s), 0);
    ck_assert_int_eq(aw_stream_peek(s, buf, sizeof(buf)), 0);
    ck_assert_int_eq(aw_stream_write(peer_side, "hello world\n", 12), 0);
    buffered_at_least(s, 12);
    ck_assert_uint_eq(aw_stream_buffered(s), 12);
    ck_assert_int_eq(aw_stream_peek(s, buf, 5), 5);
    ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
    ck_assert_uint_eq(aw_stream_buffered(s), 12);
    ck_assert_int_eq(aw_stream_peek(s, buf, sizeof(buf)), 12);
    ck_assert_int_eq(memcmp(buf, "hello world\n", 12), 0);
    ck_assert_int_eq(aw_stream_peek(s, buf, 0), 0);
    expect(aw_stream_readexactly(s, 6), "hello ");
    ck_assert_uint_eq(aw_stream_buffered(s), 6);
    ck_assert_int_eq(aw_stream_peek(s, buf, sizeof(buf)), 6);
    ck_assert_int_eq(memcmp(buf, "world\n", 6), 0);
    expect(aw_stream_readline(s), "world\n");
    ck_assert_uint_eq(aw_stream_buffered(s), 0);
    ck_assert_int_eq(aw_stream_peek(NULL, buf, 1), -EINVAL);
    ck_assert_int_eq(aw_stream_peek(s, NULL, 1), -EINVAL);
    ck_assert_uint_eq(aw_stream_buffered(NULL), 0);
    stop_keeping(s, srv);
}
END_TEST

/* ---- descriptors the program has ------------------------------------------------------ */

static void *
await_obj(aw_future *f)
{
    void *p = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &p, NULL), 0);
    aw_future_unref(f);
    return p;
}

static void
await_closed(aw_stream *s)
{
    aw_future *f = aw_stream_wait_closed(s);

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
}

/* asyncio's test_read_pipe / test_write_pipe, with streams on both ends. */
START_TEST(stream_on_pipe_pair_reads_writes_and_eof)
{
    aw_stream *r, *w;
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    r = await_obj(aw_open_read_pipe(loop, p[0]));
    w = await_obj(aw_open_write_pipe(loop, p[1]));
    ck_assert_int_eq(aw_stream_write(r, "x", 1), -EOPNOTSUPP);
    ck_assert_int_eq(aw_stream_write(w, "hello\nworld", 11), 0);
    expect(aw_stream_readline(r), "hello\n");
    ck_assert_int_eq(aw_stream_write_eof(w), 0); /* closes it, once flushed */
    await_closed(w);
    ck_assert_int_eq(aw_transport_fd(aw_stream_transport(w)), -1);
    expect(aw_stream_read(r, 100), "world");
    expect(aw_stream_read(r, 100), ""); /* end of file */
    ck_assert_int_eq(aw_stream_at_eof(r), 1);
    await_closed(r); /* a read pipe closes at end of file */
    ck_assert_int_eq(aw_transport_fd(aw_stream_transport(r)), -1);
    ck_assert_int_eq(fcntl(p[0], F_GETFD), -1); /* both ends closed */
    ck_assert_int_eq(fcntl(p[1], F_GETFD), -1);
    aw_stream_unref(r);
    aw_stream_unref(w);
}
END_TEST

/* A write to a pipe whose reader closed: -EPIPE, and no SIGPIPE even
 * with its default disposition (which would kill the test). */
START_TEST(write_pipe_reader_gone_is_epipe_not_sigpipe)
{
    aw_stream *w;
    aw_future *d;
    sigset_t pending;
    int p[2];

    signal(SIGPIPE, SIG_DFL);
    ck_assert_int_eq(pipe(p), 0);
    w = await_obj(aw_open_write_pipe(loop, p[1]));
    close(p[0]);
    ck_assert_int_eq(aw_stream_write(w, "data", 4), 0); /* asyncio: later */
    await_closed(w);
    d = aw_stream_drain(w);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, d), -EPIPE);
    aw_future_unref(d);
    ck_assert_int_eq(aw_stream_write(w, "data", 4), -EPIPE);
    sigpending(&pending);
    ck_assert_int_eq(sigismember(&pending, SIGPIPE), 0);
    aw_stream_unref(w);
}
END_TEST

/* asyncio's test_open_connection_sock (sock=): a connected socket. */
START_TEST(open_connection_with_connected_socket)
{
    aw_server *srv = start(ECHO);
    struct sockaddr_in sin;
    aw_stream *s;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)aw_server_port(srv));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Not connected yet: refused, and the socket stays the caller's. */
    await_bytes(aw_open_connection_sock(loop, fd), -ENOTCONN);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    s = await_obj(aw_open_connection_sock(loop, fd));
    ck_assert_int_eq(aw_stream_write(s, "ping\n", 5), 0);
    expect(aw_stream_readline(s), "ping\n");
    aw_stream_close(s);
    await_closed(s);
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1); /* the stream closed it */
    aw_stream_unref(s);
    stop(srv);
}
END_TEST

/* asyncio's start_server(sock=): a socket bound and listening already. */
START_TEST(start_server_with_listening_socket)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    aw_server *srv;
    aw_stream *s;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, lfd = -1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 5), 0);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    await_bytes(aw_start_server_sock(loop, -1, on_client, NULL, 0), -EINVAL);
    server_script = ECHO;
    srv = await_obj(aw_start_server_sock(loop, fd, on_client, NULL, 0));
    ck_assert_int_eq(aw_server_port(srv), ntohs(sin.sin_port));
    ck_assert_int_eq(aw_server_sockets(srv, &lfd, 1), 1);
    ck_assert_int_eq(lfd, fd);
    s = dial(srv);
    ck_assert_int_eq(aw_stream_write(s, "pong\n", 5), 0);
    expect(aw_stream_readline(s), "pong\n");
    aw_stream_close(s);
    aw_stream_unref(s);
    stop(srv);
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1); /* the server closed it */
}
END_TEST

/* asyncio's loop.getnameinfo: numbers at once, names through the
 * system resolver ("127.0.0.1" is "localhost" in /etc/hosts). */
START_TEST(getnameinfo_numeric_and_name)
{
    struct sockaddr_in sin;
    aw_nameinfo *ni = NULL;
    aw_future *f;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(8080);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f = aw_getnameinfo(loop, (struct sockaddr *)&sin, sizeof(sin),
                       NI_NUMERICHOST | NI_NUMERICSERV);
    ck_assert_int_eq(aw_future_done(f), 1); /* no thread, no wait */
    ck_assert_int_eq(aw_future_result(f, (void **)&ni), 0);
    ck_assert_str_eq(ni->host, "127.0.0.1");
    ck_assert_str_eq(ni->service, "8080");
    aw_future_unref(f);
    f = aw_getnameinfo(loop, (struct sockaddr *)&sin, sizeof(sin),
                       NI_NUMERICSERV | NI_NAMEREQD);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, (void **)&ni), 0);
    ck_assert_str_eq(ni->host, "localhost");
    ck_assert_str_eq(ni->service, "8080");
    aw_future_unref(f);
    f = aw_getnameinfo(loop, NULL, sizeof(sin), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    sin.sin_family = AF_APPLETALK; /* a family getnameinfo does not know */
    f = aw_getnameinfo(loop, (struct sockaddr *)&sin, sizeof(sin),
                       NI_NUMERICHOST | NI_NUMERICSERV);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_EAI_FAMILY);
    aw_future_unref(f);
    aw_loop_shutdown_default_executor(loop, 1);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = aw_test_tcase("stream");

    tcase_add_test(tc, read_forms_with_data_split_across_writes);
    tcase_add_test(tc, readuntil_limit_overrun_keeps_data);
    tcase_add_test(tc, readexactly_incomplete_gives_partial);
    tcase_add_test(tc, big_transfer_intact_with_drain);
    tcase_add_test(tc, cancel_task_mid_read);
    tcase_add_test(tc, cancel_task_mid_drain_and_drain_after_peer_gone);
    tcase_add_test(tc, drain_waits_from_the_write_that_crossed_the_limit);
    tcase_add_test(tc, many_concurrent_clients_echoed);
    tcase_add_test(tc, unix_stream_server_and_client);
    tcase_add_test(tc, getaddrinfo_localhost_and_ipv6_literal_and_cancel);
    tcase_add_test(tc, connection_refused_and_bad_arguments);
    tcase_add_test(tc, thousand_concurrent_connections);
    tcase_add_test(tc, slow_client_does_not_hold_others_back);
    tcase_add_test(tc, peer_reset_mid_read);
    tcase_add_test(tc, half_close_with_streams);
    tcase_add_test(tc, listener_out_of_fds_keeps_serving);
    tcase_add_test(tc, writer_to_slow_reader_keeps_memory_bounded);
    tcase_add_test(tc, ten_thousand_idle_connections);
    tcase_add_test(tc, serve_until_cancelled);
    tcase_add_test(tc, read_cancelled_after_hand_over_loses_nothing);
    tcase_add_test(tc, readexactly_above_limit);
    tcase_add_test(tc, limit_applies_before_separator);
    tcase_add_test(tc, limit_not_found_past_limit);
    tcase_add_test(tc, getaddrinfo_failures_have_their_own_codes);
    tcase_add_test(tc, stream_addresses_as_text);
    tcase_add_test(tc, bytes_new_bad_input);
    tcase_add_test(tc, busy_close_names_streams_by_peer);
    tcase_add_test(tc, readline_limit_with_existing_data);
    tcase_add_test(tc, reads_from_the_buffer_allocate_only_their_bytes);
    tcase_add_test(tc, waiting_readuntil_keeps_its_separator);
    tcase_add_test(tc, readuntil_fed_a_byte_at_a_time);
    tcase_add_test(tc, peek_and_buffered_leave_the_data);
    tcase_add_test(tc, stream_on_pipe_pair_reads_writes_and_eof);
    tcase_add_test(tc, write_pipe_reader_gone_is_epipe_not_sigpipe);
    tcase_add_test(tc, open_connection_with_connected_socket);
    tcase_add_test(tc, start_server_with_listening_socket);
    tcase_add_test(tc, getnameinfo_numeric_and_name);
    suite_add_tcase(s, tc);
    return s;
}

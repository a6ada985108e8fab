/* SPDX-License-Identifier: MIT */
/* test_transport.c: transports and protocols over loopback TCP (IPv4 and
 * IPv6) and Unix sockets, after CPython's test_asyncio/test_events.py
 * and test_selector_events.py where they apply. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "testutil.h"

/* ---- a recording protocol ----------------------------------------------------- */

#define EV_MADE 1
#define EV_DATA 2
#define EV_EOF 3
#define EV_LOST 4
#define EV_PAUSE 5
#define EV_RESUME 6

struct peer {
    int events[64];
    int nevents;
    char data[1 << 16];
    size_t len;
    int ncalls; /* data_received calls */
    int lost_error;
    int lost;
    int echo;        /* write back what arrives */
    int keep_on_eof; /* half-close: keep writing after eof */
    const char *reply_on_eof;
    aw_transport *t;
};

static void
note(struct peer *p, int ev)
{
    /* Collapse runs of data events: splits are arbitrary. */
    if (ev == EV_DATA && p->nevents > 0 && p->events[p->nevents - 1] == EV_DATA)
        return;
    if (p->nevents < 64)
        p->events[p->nevents++] = ev;
}

static void
made(aw_transport *t, void *arg)
{
    struct peer *p = arg;

    p->t = aw_transport_ref(t);
    note(p, EV_MADE);
}

static void
received(aw_transport *t, const void *data, size_t len, void *arg)
{
    struct peer *p = arg;

    note(p, EV_DATA);
    p->ncalls++;
    if (p->len + len <= sizeof(p->data)) {
        memcpy(p->data + p->len, data, len);
    }
    p->len += len;
    if (p->echo)
        aw_transport_write(t, data, len);
}

static int
eof(aw_transport *t, void *arg)
{
    struct peer *p = arg;

    note(p, EV_EOF);
    if (p->reply_on_eof != NULL) {
        aw_transport_write(t, p->reply_on_eof, strlen(p->reply_on_eof));
        aw_transport_close(t);
    }
    return p->keep_on_eof;
}

static void
lost(aw_transport *t, int error, void *arg)
{
    struct peer *p = arg;

    (void)t;
    note(p, EV_LOST);
    p->lost = 1;
    p->lost_error = error;
}

static void
paused(aw_transport *t, void *arg)
{
    (void)t;
    note(arg, EV_PAUSE);
}

static void
resumed(aw_transport *t, void *arg)
{
    (void)t;
    note(arg, EV_RESUME);
}

static const aw_protocol recorder = {
    AW_PROTOCOL_SIZE, made, received, eof, lost, paused, resumed, NULL, NULL};

/* One peer per server connection, handed out in order. */
static struct peer server_peers[8];
static int nserver_peers;

static void
server_made(aw_transport *t, void *arg)
{
    struct peer *p = &server_peers[nserver_peers++];
    struct peer *tmpl = arg;

    memset(p, 0, sizeof(*p));
    p->echo = tmpl->echo;
    p->keep_on_eof = tmpl->keep_on_eof;
    p->reply_on_eof = tmpl->reply_on_eof;
    aw_transport_set_user(t, p);
    made(t, p);
}

static const aw_protocol server_proto = {
    AW_PROTOCOL_SIZE, server_made, received, eof, lost, paused, resumed,
    NULL,             NULL};

static int
run_until(volatile int *flag)
{
    return aw_test_run_until(loop, flag, 10);
}

static aw_server *
serve(const char *host, struct peer *tmpl)
{
    aw_future *f = aw_create_server(loop, host, 0, &server_proto, tmpl, 0, 0);
    aw_destroy_fn d = NULL;
    void *srv = NULL;

    nserver_peers = 0;
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &srv, &d), 0);
    aw_future_unref(f);
    ck_assert_int_gt(aw_server_port(srv), 0);
    return srv;
}

static aw_transport *
connect_to(const char *host, int port, struct peer *p)
{
    aw_future *f = aw_create_connection(loop, host, port, &recorder, p);
    void *t = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &t, NULL), 0);
    aw_future_unref(f);
    return t;
}

static void
release_peer(struct peer *p)
{
    aw_transport_unref(p->t);
    p->t = NULL;
}

static void
finish(aw_server *srv)
{
    int i;

    aw_server_free(srv);
    for (i = 0; i < nserver_peers; i++)
        release_peer(&server_peers[i]);
}

static void
assert_events(const struct peer *p, const int *want, int n)
{
    int i;

    ck_assert_int_eq(p->nevents, n);
    for (i = 0; i < n; i++)
        ck_assert_msg(p->events[i] == want[i], "event %d: got %d, want %d",
                      i, p->events[i], want[i]);
}

/* ---- tests ------------------------------------------------------------------------ */

START_TEST(echo_over_tcp_callbacks_in_order)
{
    static struct peer tmpl, client;
    static const int want[] = {EV_MADE, EV_DATA, EV_LOST};
    aw_server *srv;
    aw_transport *t;
    char big[20000];
    size_t i;

    memset(&client, 0, sizeof(client));
    tmpl.echo = 1;
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    for (i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    /* Many small writes, then a big one. */
    for (i = 0; i < 100; i++)
        ck_assert_int_eq(aw_transport_write(t, big + i, 1), 0);
    ck_assert_int_eq(aw_transport_write(t, big + 100, sizeof(big) - 100), 0);
    while (client.len < sizeof(big))
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(memcmp(client.data, big, sizeof(big)), 0);
    ck_assert_int_eq(aw_transport_close(t), 0);
    ck_assert_int_eq(aw_transport_is_closing(t), 1);
    ck_assert_int_eq(aw_transport_write(t, "x", 1), AW_ECLOSED);
    ck_assert_int_eq(client.lost, 0); /* never inside close() */
    run_until(&client.lost);
    run_until(&server_peers[0].lost);
    assert_events(&client, want, 3);
    ck_assert_int_eq(client.lost_error, 0);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

/* A read that fills what it offered is followed by a bigger one in the
 * same wake-up (up to 256 KiB), so data_received sees big chunks. */
START_TEST(waiting_data_read_in_one_wakeup)
{
    static struct peer tmpl;
    static char big[32 * 1024];
    struct sockaddr_in sin;
    aw_server *srv;
    size_t i, off;
    int fd;

    memset(&tmpl, 0, sizeof(tmpl));
    srv = serve("127.0.0.1", &tmpl);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)aw_server_port(srv));
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    for (i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 13 + 1);
    for (off = 0; off < sizeof(big);) {
        ssize_t n = send(fd, big + off, sizeof(big) - off, 0);

        ck_assert_int_gt(n, 0);
        off += (size_t)n;
    }
    while (server_peers[0].len < sizeof(big))
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(memcmp(server_peers[0].data, big, sizeof(big)), 0);
    /* 8 calls at least in 4 KiB reads; a chain boundary may split. */
    ck_assert_int_le(server_peers[0].ncalls, 3);
    close(fd);
    run_until(&server_peers[0].lost);
    ck_assert_int_eq(server_peers[0].lost_error, 0);
    finish(srv);
}
END_TEST

START_TEST(connection_refused)
{
    static struct peer client;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    aw_future *f;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    port = ntohs(sin.sin_port);
    close(fd); /* nobody listens there */
    memset(&client, 0, sizeof(client));
    f = aw_create_connection(loop, "127.0.0.1", port, &recorder, &client);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -ECONNREFUSED);
    ck_assert_int_eq(client.nevents, 0); /* never made, never lost */
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}
END_TEST

START_TEST(unix_socket_server_and_client)
{
    static struct peer tmpl, client;
    char path[64];
    aw_future *f;
    aw_server *srv;
    void *p = NULL, *t = NULL;

    snprintf(path, sizeof(path), "/tmp/awtest-%d.sock", (int)getpid());
    memset(&client, 0, sizeof(client));
    tmpl.echo = 1;
    nserver_peers = 0;
    f = aw_create_unix_server(loop, path, &server_proto, &tmpl, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &p, NULL);
    aw_future_unref(f);
    srv = p;
    f = aw_create_unix_connection(loop, path, &recorder, &client);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &t, NULL);
    aw_future_unref(f);
    aw_transport_write(t, "ping", 4);
    while (client.len < 4)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(memcmp(client.data, "ping", 4), 0);
    aw_transport_close(t);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
    unlink(path);
}
END_TEST

START_TEST(half_close_both_ways)
{
    static struct peer tmpl, client;
    static const int want[] = {EV_MADE, EV_DATA, EV_EOF, EV_LOST};
    aw_server *srv;
    aw_transport *t;

    memset(&client, 0, sizeof(client));
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.reply_on_eof = "bye"; /* answers after our EOF */
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    aw_transport_write(t, "question", 8);
    ck_assert_int_eq(aw_transport_write_eof(t), 0);
    ck_assert_int_eq(aw_transport_write(t, "more", 4), AW_ECLOSED);
    run_until(&client.lost);
    ck_assert_int_eq(client.len, 3);
    ck_assert_int_eq(memcmp(client.data, "bye", 3), 0);
    ck_assert_int_eq(server_peers[0].len, 8);
    assert_events(&client, want, 4);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

START_TEST(pause_and_resume_writing)
{
    static struct peer tmpl, client;
    aw_server *srv;
    aw_transport *t;
    static char chunk[65536];
    int i, saw_pause = 0, saw_resume = 0;

    memset(&client, 0, sizeof(client));
    memset(&tmpl, 0, sizeof(tmpl));
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    aw_transport_pause_reading(server_peers[0].t);
    ck_assert_int_eq(aw_transport_is_reading(server_peers[0].t), 0);
    aw_transport_set_write_buffer_limits(t, 100000, 1000);
    ck_assert_int_eq(aw_transport_is_writing_paused(t), 0);
    for (i = 0; i < 64 && !aw_transport_is_writing_paused(t); i++)
        aw_transport_write(t, chunk, sizeof(chunk));
    /* Paused from the write that crossed the mark, told later. */
    ck_assert_int_eq(aw_transport_is_writing_paused(t), 1);
    ck_assert_int_gt(aw_transport_write_buffer_size(t), 100000);
    ck_assert_int_le(aw_transport_write_buffer_size(t), 100000 + sizeof(chunk));
    ck_assert_int_eq(client.nevents, 1); /* pause is scheduled, not called */
    for (; i < 64; i++)
        aw_transport_write(t, chunk, sizeof(chunk));
    for (i = 0; i < 50 && !saw_pause; i++) {
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        saw_pause = client.events[client.nevents - 1] == EV_PAUSE;
    }
    ck_assert(saw_pause);
    /* New marks apply at once: under a raised low-water mark, writing
     * goes on (under the high one only, it stays paused, as in asyncio). */
    ck_assert_int_eq(aw_transport_set_write_buffer_limits(t, 64u << 20, 1000),
                     0);
    ck_assert_int_eq(aw_transport_is_writing_paused(t), 1);
    ck_assert_int_eq(
        aw_transport_set_write_buffer_limits(t, 64u << 20, 32u << 20), 0);
    ck_assert_int_eq(aw_transport_is_writing_paused(t), 0);
    ck_assert_int_eq(aw_transport_set_write_buffer_limits(t, 100000, 1000), 0);
    ck_assert_int_eq(aw_transport_is_writing_paused(t), 1);
    aw_transport_resume_reading(server_peers[0].t);
    while (server_peers[0].len < 64 * sizeof(chunk))
        aw_loop_run_once(loop, 0);
    for (i = 0; i < 50 && !saw_resume; i++) {
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        saw_resume = client.events[client.nevents - 1] == EV_RESUME;
    }
    ck_assert(saw_resume);
    ck_assert_int_eq(aw_transport_is_writing_paused(t), 0);
    ck_assert_int_eq(aw_transport_is_writing_paused(NULL), 0);
    ck_assert_int_eq(aw_transport_set_write_buffer_limits(t, 10, 20), -EINVAL);
    aw_transport_abort(t);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

START_TEST(peer_reset)
{
    static struct peer tmpl, client;
    struct linger lg = {1, 0};
    aw_server *srv;
    aw_transport *t;

    memset(&client, 0, sizeof(client));
    memset(&tmpl, 0, sizeof(tmpl));
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    setsockopt(aw_transport_fd(server_peers[0].t), SOL_SOCKET, SO_LINGER, &lg,
               sizeof(lg));
    aw_transport_abort(server_peers[0].t); /* an RST */
    run_until(&client.lost);
    ck_assert_int_eq(client.lost_error, -ECONNRESET);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

static int
have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 s;
    int ok;

    if (fd < 0)
        return 0;
    memset(&s, 0, sizeof(s));
    s.sin6_family = AF_INET6;
    s.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&s, sizeof(s)) == 0;
    close(fd);
    return ok;
}

START_TEST(resolve_localhost_and_ipv6_literal)
{
    static struct peer tmpl, client;
    aw_server *srv;
    aw_transport *t;

    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.echo = 1;
    srv = serve(NULL, &tmpl); /* every address: IPv4 and IPv6 */
    memset(&client, 0, sizeof(client));
    t = connect_to("localhost", aw_server_port(srv), &client);
    aw_transport_write(t, "hi", 2);
    while (client.len < 2)
        aw_loop_run_once(loop, 0);
    aw_transport_close(t);
    run_until(&client.lost);
    aw_transport_unref(t);
    release_peer(&client);
    if (have_ipv6()) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        memset(&client, 0, sizeof(client));
        t = connect_to("::1", aw_server_port(srv), &client);
        ck_assert_int_eq(aw_transport_peername(t, (struct sockaddr *)&ss,
                                               &len),
                         0);
        ck_assert_int_eq(ss.ss_family, AF_INET6);
        aw_transport_close(t);
        run_until(&client.lost);
        aw_transport_unref(t);
        release_peer(&client);
    }
    finish(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}
END_TEST

START_TEST(cancelled_connect_leaves_nothing)
{
    static struct peer tmpl, client;
    aw_server *srv;
    aw_future *f;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&client, 0, sizeof(client));
    srv = serve("127.0.0.1", &tmpl);
    f = aw_create_connection(loop, "127.0.0.1", aw_server_port(srv),
                             &recorder, &client);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(client.nevents, 0);
    while (nserver_peers > 0 && !server_peers[0].lost)
        aw_loop_run_once(loop, 0);
    finish(srv);
}
END_TEST

START_TEST(server_close_with_clients_connected)
{
    static struct peer tmpl, client;
    aw_server *srv;
    aw_transport *t;
    aw_future *w;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&client, 0, sizeof(client));
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_server_close(srv), 0);
    w = aw_server_wait_closed(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(aw_future_done(w), 0); /* a connection goes on */
    aw_transport_write(t, "x", 1);
    while (server_peers[0].len < 1)
        aw_loop_run_once(loop, 0);
    aw_transport_close(t);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, w), 0);
    aw_future_unref(w);
    aw_transport_unref(t);
    run_until(&client.lost);
    release_peer(&client);
    finish(srv);
}
END_TEST

/* The default SIGPIPE disposition, as a program that never heard of it
 * has: a write that raised the signal would end the test. */
static void
sigpipe_default(void)
{
    struct sigaction sa;

    ck_assert(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    ck_assert_int_eq(sigaction(SIGPIPE, NULL, &sa), 0);
    ck_assert(sa.sa_handler == SIG_DFL);
}

/* A raw client of srv (Unix socket at path, or TCP) that sends a line and
 * closes without reading; then the server side writes until the loss. */
static void
write_to_vanished_peer(aw_server *srv, const char *path)
{
    struct peer *p;
    int fd, i, rc;

    if (path != NULL) {
        struct sockaddr_un sun;

        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)),
                         0);
    } else {
        struct sockaddr_in sin;

        fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons((unsigned short)aw_server_port(srv));
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)),
                         0);
    }
    ck_assert_int_eq(write(fd, "hello\n", 6), 6);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    p = &server_peers[0];
    while (p->len < 6)
        aw_loop_run_once(loop, 0);
    close(fd); /* never read what the server sends */
    for (i = 0; i < 100000 && !p->lost; i++) {
        if (aw_transport_write(p->t, "hello\n", 6) != 0)
            break;
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    run_until(&p->lost);
    ck_assert_msg(p->lost_error == -EPIPE || p->lost_error == -ECONNRESET,
                  "lost with %d", p->lost_error);
    /* Later writes get the connection's error. */
    rc = aw_transport_write(p->t, "x", 1);
    ck_assert_int_eq(rc, p->lost_error);
}

START_TEST(write_to_vanished_peer_is_an_error_not_sigpipe)
{
    static struct peer tmpl;
    char path[64];
    aw_future *f;
    aw_server *srv;
    void *v = NULL;

    sigpipe_default();
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.keep_on_eof = 1; /* half-close: keep writing to the closed peer */
    srv = serve("127.0.0.1", &tmpl);
    write_to_vanished_peer(srv, NULL);
    finish(srv);

    snprintf(path, sizeof(path), "/tmp/awtest-pipe-%d.sock", (int)getpid());
    nserver_peers = 0;
    f = aw_create_unix_server(loop, path, &server_proto, &tmpl, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &v, NULL);
    aw_future_unref(f);
    srv = v;
    write_to_vanished_peer(srv, path);
    finish(srv);
    unlink(path);
}
END_TEST

static int
sockopt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    ck_assert_int_eq(getsockopt(fd, level, name, &v, &len), 0);
    return v != 0;
}

static aw_server *
serve_flags(int flags, int want_rc)
{
    static struct peer tmpl;
    aw_future *f = aw_create_server(loop, "127.0.0.1", 0, &server_proto,
                                    &tmpl, flags, 0);
    void *srv = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), want_rc);
    if (want_rc == 0)
        aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    return srv;
}

/* SO_REUSEADDR is on by default for TCP servers (asyncio on Unix), off on
 * request; the listening sockets can be had (asyncio's Server.sockets). */
START_TEST(server_reuse_address_by_default)
{
    aw_server *srv;
    int fds[4];

    srv = serve_flags(0, 0);
    ck_assert_int_eq(aw_server_sockets(srv, fds, 4), 1);
    ck_assert_int_eq(sockopt(fds[0], SOL_SOCKET, SO_REUSEADDR), 1);
    ck_assert_int_eq(sockopt(fds[0], SOL_SOCKET, SO_REUSEPORT), 0);
    ck_assert_int_eq(aw_server_sockets(srv, NULL, 0), 1);
    ck_assert_int_eq(aw_server_sockets(srv, NULL, 1), -EINVAL);
    ck_assert_int_eq(aw_server_sockets(NULL, fds, 4), -EINVAL);
    aw_server_close(srv);
    ck_assert_int_eq(aw_server_sockets(srv, fds, 4), 0);
    aw_server_free(srv);

    srv = serve_flags(AW_SERVER_REUSE_ADDRESS | AW_SERVER_REUSE_PORT, 0);
    ck_assert_int_eq(aw_server_sockets(srv, fds, 4), 1);
    ck_assert_int_eq(sockopt(fds[0], SOL_SOCKET, SO_REUSEADDR), 1);
    ck_assert_int_eq(sockopt(fds[0], SOL_SOCKET, SO_REUSEPORT), 1);
    aw_server_free(srv);

    srv = serve_flags(AW_SERVER_NO_REUSE_ADDRESS, 0);
    ck_assert_int_eq(aw_server_sockets(srv, fds, 4), 1);
    ck_assert_int_eq(sockopt(fds[0], SOL_SOCKET, SO_REUSEADDR), 0);
    aw_server_free(srv);

    /* Contradictory or unknown flags. */
    serve_flags(AW_SERVER_REUSE_ADDRESS | AW_SERVER_NO_REUSE_ADDRESS, -EINVAL);
    serve_flags(0x100, -EINVAL);
}
END_TEST

/* The system's blocking resolver, counted: the loop's thread must never
 * call it; the default resolver calls it on a worker (this definition
 * comes before the C library's for the library and libevent too). */
static int blocking_lookups, worker_lookups;
static pthread_t loop_thread;

int
getaddrinfo(const char *node, const char *service,
            const struct addrinfo *hints, struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);

    /* A numeric lookup (AI_NUMERICHOST, or no host) never blocks. */
    if (node == NULL || (hints != NULL && (hints->ai_flags & AI_NUMERICHOST)))
        ;
    else if (pthread_equal(pthread_self(), loop_thread))
        __atomic_add_fetch(&blocking_lookups, 1, __ATOMIC_RELAXED);
    else
        __atomic_add_fetch(&worker_lookups, 1, __ATOMIC_RELAXED);
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    return real != NULL ? real(node, service, hints, res) : EAI_FAIL;
}

/* create_server resolves its host without blocking the loop: by default
 * with getaddrinfo(3) on a worker (asyncio), or with evdns; "localhost"
 * comes from the hosts file. */
START_TEST(create_server_resolves_asynchronously)
{
    static struct peer tmpl;
    struct sockaddr_in sin;
    aw_server *srv;
    int fd;

    memset(&tmpl, 0, sizeof(tmpl));
    loop_thread = pthread_self();
    blocking_lookups = worker_lookups = 0;
    ck_assert_int_eq(aw_get_resolver(loop), AW_RESOLVER_SYSTEM);
    srv = serve("localhost", &tmpl);
    ck_assert_int_eq(blocking_lookups, 0);
    ck_assert_int_eq(__atomic_load_n(&worker_lookups, __ATOMIC_RELAXED), 1);
    finish(srv);
    ck_assert_int_eq(aw_set_resolver(loop, AW_RESOLVER_EVDNS), 0);
    ck_assert_int_eq(aw_set_resolver(loop, 7), -EINVAL);
    srv = serve("localhost", &tmpl);
    ck_assert_int_eq(blocking_lookups, 0);
    ck_assert_int_eq(__atomic_load_n(&worker_lookups, __ATOMIC_RELAXED), 1);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)aw_server_port(srv));
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    close(fd);
    run_until(&server_peers[0].lost);
    finish(srv);
    /* Every address ("" as asyncio's) and a numeric one: no lookup. */
    srv = serve("", &tmpl);
    finish(srv);
    srv = serve("127.0.0.1", &tmpl);
    finish(srv);
    ck_assert_int_eq(blocking_lookups, 0);
}
END_TEST

/* A name the hosts file does not have waits for the resolver, with the
 * loop free meanwhile; cancelled then, the server is abandoned. */
START_TEST(create_server_cancelled_while_resolving)
{
    static struct peer tmpl;
    aw_future *f;

    memset(&tmpl, 0, sizeof(tmpl));
    loop_thread = pthread_self();
    blocking_lookups = 0;
    f = aw_create_server(loop, "name-to-resolve.invalid", 0, &server_proto,
                         &tmpl, 0, 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(blocking_lookups, 0);
    /* Without a name server configured the resolver fails at once. */
    if (!aw_future_done(f)) {
        ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
        ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_ECANCELLED);
    }
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT); /* the request's last word */
    /* The lookup that was cancelled still runs on its worker: let it end
     * before the fixture counts allocations. */
    ck_assert_int_eq(aw_loop_shutdown_default_executor(loop, 1), 0);
}
END_TEST

/* Both ends' addresses as text in one call. */
START_TEST(addresses_as_text)
{
    static struct peer tmpl, client;
    char buf[AW_ADDRSTRLEN], want[64], path[64];
    aw_server *srv;
    aw_transport *t;
    aw_future *f;
    void *v = NULL;
    int port;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&client, 0, sizeof(client));
    srv = serve("127.0.0.1", &tmpl);
    port = aw_server_port(srv);
    t = connect_to("127.0.0.1", port, &client);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    ck_assert_int_eq(aw_transport_peername_text(t, buf, sizeof(buf)),
                     (int)strlen(want));
    ck_assert_str_eq(buf, want);
    ck_assert_int_gt(aw_transport_sockname_text(server_peers[0].t, buf,
                                                sizeof(buf)),
                     0);
    ck_assert_str_eq(buf, want);
    /* The client's port, seen from both ends. */
    ck_assert_int_gt(aw_transport_sockname_text(t, want, sizeof(want)), 0);
    ck_assert_int_gt(aw_transport_peername_text(server_peers[0].t, buf,
                                                sizeof(buf)),
                     0);
    ck_assert_str_eq(buf, want);
    ck_assert_int_eq(aw_transport_peername_text(t, buf, 5), -ENOSPC);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(aw_transport_peername_text(t, NULL, 5), -EINVAL);
    ck_assert_int_eq(aw_transport_peername_text(NULL, buf, 5), -EINVAL);
    aw_transport_abort(t);
    ck_assert_int_eq(aw_transport_peername_text(t, buf, sizeof(buf)),
                     AW_ECLOSED);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);

    if (have_ipv6()) {
        memset(&client, 0, sizeof(client));
        srv = serve("::1", &tmpl);
        port = aw_server_port(srv);
        t = connect_to("::1", port, &client);
        snprintf(want, sizeof(want), "[::1]:%d", port);
        ck_assert_int_gt(aw_transport_peername_text(t, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, want);
        while (nserver_peers == 0)
            aw_loop_run_once(loop, 0);
        aw_transport_close(t);
        run_until(&client.lost);
        run_until(&server_peers[0].lost);
        aw_transport_unref(t);
        release_peer(&client);
        finish(srv);
    }

    snprintf(path, sizeof(path), "/tmp/awtest-text-%d.sock", (int)getpid());
    memset(&client, 0, sizeof(client));
    nserver_peers = 0;
    f = aw_create_unix_server(loop, path, &server_proto, &tmpl, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &v, NULL);
    aw_future_unref(f);
    srv = v;
    f = aw_create_unix_connection(loop, path, &recorder, &client);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &v, NULL);
    aw_future_unref(f);
    t = v;
    ck_assert_int_eq(aw_transport_peername_text(t, buf, sizeof(buf)),
                     (int)strlen(path));
    ck_assert_str_eq(buf, path);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_transport_peername_text(server_peers[0].t, buf,
                                                sizeof(buf)),
                     0); /* an unnamed client */
    aw_transport_close(t);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
    unlink(path);
}
END_TEST

/* The protocol table starts with its size, checked: a table of another
 * size than a known version's is refused, not misread. */
START_TEST(protocol_size_checked)
{
    aw_protocol small = recorder, big = recorder, unset = recorder;
    const aw_protocol *bad[3] = {&small, &big, &unset};
    aw_future *f;
    int i;

    small.size = offsetof(aw_protocol, resume_writing); /* too old */
    big.size = sizeof(aw_protocol) + 8;                  /* from the future */
    unset.size = 0;
    for (i = 0; i < 3; i++) {
        f = aw_create_connection(loop, "127.0.0.1", 80, bad[i], NULL);
        ck_assert_int_eq(aw_future_error(f), -EINVAL);
        aw_future_unref(f);
        f = aw_create_unix_connection(loop, "/nonexistent", bad[i], NULL);
        ck_assert_int_eq(aw_future_error(f), -EINVAL);
        aw_future_unref(f);
        f = aw_create_server(loop, "127.0.0.1", 0, bad[i], NULL, 0, 0);
        ck_assert_int_eq(aw_future_error(f), -EINVAL);
        aw_future_unref(f);
        f = aw_create_unix_server(loop, "/tmp/awtest-never.sock", bad[i],
                                  NULL, 0);
        ck_assert_int_eq(aw_future_error(f), -EINVAL);
        aw_future_unref(f);
    }
    ck_assert_int_eq(recorder.size, AW_PROTOCOL_SIZE);
}
END_TEST

START_TEST(bad_arguments)
{
    aw_future *f;

    f = aw_create_connection(loop, NULL, 80, &recorder, NULL);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_create_connection(loop, "127.0.0.1", 0, &recorder, NULL);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_create_server(loop, "127.0.0.1", 70000, &recorder, NULL, 0, 0);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_ptr_null(aw_create_connection(NULL, "x", 1, &recorder, NULL));
    ck_assert_int_eq(aw_transport_write(NULL, "x", 1), -EINVAL);
    ck_assert_int_eq(aw_transport_close(NULL), -EINVAL);
    ck_assert_int_eq(aw_transport_fd(NULL), -1);
    aw_transport_unref(NULL);
    aw_server_free(NULL);
}
END_TEST

/* ---- TCP options -------------------------------------------------------------- */

/* TCP_NODELAY is on at both ends from the start (asyncio, uvloop): a
 * write-pause-write-read exchange does not wait for a delayed ACK.  It
 * can be turned off and on again; a Unix socket has no such option. */
START_TEST(tcp_nodelay_on_by_default)
{
    static struct peer tmpl, client, uclient;
    char path[64];
    aw_server *srv;
    aw_transport *t;
    aw_future *f;
    void *v = NULL;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&client, 0, sizeof(client));
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(sockopt(aw_transport_fd(t), IPPROTO_TCP, TCP_NODELAY), 1);
    ck_assert_int_eq(sockopt(aw_transport_fd(server_peers[0].t), IPPROTO_TCP,
                             TCP_NODELAY),
                     1);
    ck_assert_int_eq(aw_transport_set_nodelay(t, 0), 0);
    ck_assert_int_eq(sockopt(aw_transport_fd(t), IPPROTO_TCP, TCP_NODELAY), 0);
    ck_assert_int_eq(aw_transport_set_nodelay(t, 1), 0);
    ck_assert_int_eq(sockopt(aw_transport_fd(t), IPPROTO_TCP, TCP_NODELAY), 1);
    ck_assert_int_eq(aw_transport_set_nodelay(NULL, 1), -EINVAL);
    aw_transport_close(t);
    ck_assert_int_eq(aw_transport_set_nodelay(t, 0), AW_ECLOSED);
    run_until(&client.lost);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);

    snprintf(path, sizeof(path), "/tmp/awtest-nd-%d.sock", (int)getpid());
    nserver_peers = 0;
    f = aw_create_unix_server(loop, path, &server_proto, &tmpl, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &v, NULL);
    aw_future_unref(f);
    srv = v;
    memset(&uclient, 0, sizeof(uclient));
    f = aw_create_unix_connection(loop, path, &recorder, &uclient);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_transport_set_nodelay(uclient.t, 1), -EOPNOTSUPP);
    ck_assert_int_eq(aw_transport_set_keepalive(uclient.t, 1, 10),
                     -EOPNOTSUPP);
    aw_transport_close(uclient.t);
    run_until(&uclient.lost);
    release_peer(&uclient);
    while (nserver_peers == 0 || !server_peers[0].lost)
        aw_loop_run_once(loop, 0);
    finish(srv);
    unlink(path);
}
END_TEST

/* Keep-alive is off by default, on with its first probe's delay on
 * request, off again; a bad delay changes nothing (libuv's
 * uv_tcp_keepalive). */
START_TEST(tcp_keepalive_option)
{
    static struct peer tmpl, client;
    aw_server *srv;
    aw_transport *t;
    int fd;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&client, 0, sizeof(client));
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    fd = aw_transport_fd(t);
    ck_assert_int_eq(sockopt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    ck_assert_int_eq(aw_transport_set_keepalive(t, 1, 0), -EINVAL);
    ck_assert_int_eq(aw_transport_set_keepalive(t, 1, 40000), -EINVAL);
    ck_assert_int_eq(sockopt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    ck_assert_int_eq(aw_transport_set_keepalive(t, 1, 37), 0);
    ck_assert_int_eq(sockopt(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
#ifdef TCP_KEEPIDLE
    {
        int v = 0;
        socklen_t len = sizeof(v);

        ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len),
                         0);
        ck_assert_int_eq(v, 37);
    }
#endif
    ck_assert_int_eq(aw_transport_set_keepalive(t, 0, 0), 0);
    ck_assert_int_eq(sockopt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    ck_assert_int_eq(aw_transport_set_keepalive(NULL, 0, 0), -EINVAL);
    aw_transport_abort(t);
    run_until(&client.lost);
    while (nserver_peers == 0 || !server_peers[0].lost)
        aw_loop_run_once(loop, 0);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

/* ---- write first, persistent reads ------------------------------------------------ */

/* A write with nothing queued is on the socket when the call returns,
 * without a pass of the loop; nothing is queued. */
START_TEST(write_goes_out_at_once)
{
    static struct peer tmpl;
    struct sockaddr_in sin;
    aw_server *srv;
    char buf[16];
    int fd;

    memset(&tmpl, 0, sizeof(tmpl));
    srv = serve("127.0.0.1", &tmpl);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)aw_server_port(srv));
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    while (nserver_peers == 0)
        aw_loop_run_once(loop, 0);
    ck_assert_int_eq(aw_transport_write(server_peers[0].t, "hello", 5), 0);
    ck_assert_uint_eq(aw_transport_write_buffer_size(server_peers[0].t), 0);
    ck_assert_int_eq(recv(fd, buf, sizeof(buf), 0), 5); /* loop not run */
    ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
    close(fd);
    run_until(&server_peers[0].lost);
    finish(srv);
}
END_TEST

/* libevent's event_add and event_del, counted while counting is on: the
 * transports' calls come through here (this definition comes before
 * libevent's for the library). */
static int count_events;
static long event_changes;

int
event_add(struct event *ev, const struct timeval *tv)
{
    static int (*real)(struct event *, const struct timeval *);

    if (count_events)
        event_changes++;
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "event_add");
    return real(ev, tv);
}

int
event_del(struct event *ev)
{
    static int (*real)(struct event *);

    if (count_events)
        event_changes++;
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "event_del");
    return real(ev);
}

/* Request/response round trips neither register nor remove an event:
 * the read event stays registered while reading, and writes the kernel
 * takes at once need no write event (no epoll_ctl per request). */
START_TEST(round_trips_change_no_event)
{
    static struct peer tmpl, client;
    aw_server *srv;
    aw_transport *t;
    size_t i;

    memset(&client, 0, sizeof(client));
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.echo = 1;
    srv = serve("127.0.0.1", &tmpl);
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    ck_assert_int_eq(aw_transport_write(t, "x", 1), 0);
    while (client.len < 1)
        aw_loop_run_once(loop, 0);
    event_changes = 0;
    count_events = 1;
    for (i = 2; i <= 50; i++) {
        ck_assert_int_eq(aw_transport_write(t, "y", 1), 0);
        while (client.len < i)
            aw_loop_run_once(loop, 0);
    }
    count_events = 0;
    ck_assert_int_eq(event_changes, 0);
    aw_transport_close(t);
    run_until(&client.lost);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

/* ---- buffered protocols --------------------------------------------------------- */

/* A parser that receives into its own buffer (asyncio's
 * BufferedProtocol), lent in pieces of at most 1000 bytes. */
static struct parser {
    char buf[1 << 17];
    size_t len;
    size_t lent;        /* the size lent last */
    size_t gets, updates, hints_zero;
    int misfit;         /* buffer_updated said more than was lent */
    int data_calls;     /* data_received: must never come */
    int empty;          /* 1: lend NULL; 2: lend 0 bytes */
    int lost, lost_error, eof;
    aw_transport *t;
} parser;

static void
parser_made(aw_transport *t, void *arg)
{
    (void)arg;
    parser.t = aw_transport_ref(t);
}

static void
parser_data(aw_transport *t, const void *data, size_t len, void *arg)
{
    (void)t;
    (void)data;
    (void)len;
    (void)arg;
    parser.data_calls++;
}

static void *
parser_get_buffer(aw_transport *t, size_t sizehint, size_t *len, void *arg)
{
    (void)t;
    (void)arg;
    parser.gets++;
    if (sizehint == 0)
        parser.hints_zero++;
    if (parser.empty == 1)
        return NULL;
    parser.lent = parser.empty == 2 ? 0 : 1000;
    if (parser.lent > sizeof(parser.buf) - parser.len)
        parser.lent = sizeof(parser.buf) - parser.len;
    *len = parser.lent;
    return parser.buf + parser.len;
}

static void
parser_updated(aw_transport *t, size_t nbytes, void *arg)
{
    (void)t;
    (void)arg;
    parser.updates++;
    if (nbytes == 0 || nbytes > parser.lent)
        parser.misfit = 1;
    parser.len += nbytes;
}

static int
parser_eof(aw_transport *t, void *arg)
{
    (void)t;
    (void)arg;
    parser.eof = 1;
    return 0;
}

static void
parser_lost(aw_transport *t, int error, void *arg)
{
    (void)t;
    (void)arg;
    parser.lost = 1;
    parser.lost_error = error;
}

static const aw_protocol parser_proto = {
    AW_PROTOCOL_SIZE, parser_made,       parser_data,   parser_eof,
    parser_lost,      NULL,              NULL,          parser_get_buffer,
    parser_updated};

/* A client connected to a server running the parser protocol. */
static aw_server *
serve_parser(int *fd)
{
    struct sockaddr_in sin;
    aw_future *f;
    void *srv = NULL;

    memset(&parser, 0, sizeof(parser));
    f = aw_create_server(loop, "127.0.0.1", 0, &parser_proto, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)aw_server_port(srv));
    ck_assert_int_eq(connect(*fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    while (parser.t == NULL)
        aw_loop_run_once(loop, 0);
    return srv;
}

/* The bytes land in the protocol's own buffer, in order, each read
 * within what was lent; data_received is never called. */
START_TEST(buffered_protocol_receives_into_its_own_buffer)
{
    static char big[100000];
    aw_server *srv;
    size_t i, off;
    int fd;

    srv = serve_parser(&fd);
    for (i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 31 + 7);
    for (off = 0; off < sizeof(big);) {
        ssize_t n = send(fd, big + off, sizeof(big) - off, 0);

        ck_assert_int_gt(n, 0);
        off += (size_t)n;
        while (parser.len < off)
            aw_loop_run_once(loop, 0);
    }
    ck_assert_int_eq(memcmp(parser.buf, big, sizeof(big)), 0);
    ck_assert_int_eq(parser.data_calls, 0);
    ck_assert_int_eq(parser.misfit, 0);
    ck_assert_uint_ge(parser.updates, sizeof(big) / 1000);
    ck_assert_uint_eq(parser.hints_zero, 0);
    close(fd);
    run_until(&parser.lost);
    ck_assert_int_eq(parser.eof, 1);
    ck_assert_int_eq(parser.lost_error, 0);
    aw_transport_unref(parser.t);
    aw_server_free(srv);
}
END_TEST

/* A buffered protocol lending nothing (NULL, or 0 bytes) has failed, as
 * asyncio's get_buffer() returning an empty buffer: the loop reports it
 * and the connection is lost with an error. */
START_TEST(buffered_protocol_empty_buffer_is_an_error)
{
    aw_server *srv;
    int fd, k;

    for (k = 1; k <= 2; k++) {
        capture_reports();
        srv = serve_parser(&fd);
        parser.empty = k;
        ck_assert_int_eq(send(fd, "data", 4, 0), 4);
        run_until(&parser.lost);
        ck_assert_int_eq(parser.lost_error, -ENOBUFS);
        ck_assert_int_eq(parser.updates, 0);
        ck_assert_int_eq(cap.calls, 1);
        ck_assert_int_eq(cap.code, -ENOBUFS);
        ck_assert_ptr_nonnull(strstr(cap.message, "get_buffer"));
        close(fd);
        aw_transport_unref(parser.t);
        aw_server_free(srv);
    }
}
END_TEST

/* get_buffer without buffer_updated is refused; a table of the first
 * version (it ends with resume_writing) is a plain protocol. */
START_TEST(buffered_protocol_table_checked)
{
    static struct peer tmpl, client;
    aw_protocol half = parser_proto, v1 = server_proto;
    aw_transport *t;
    aw_server *srv;
    aw_future *f;
    void *v = NULL;

    half.buffer_updated = NULL;
    f = aw_create_server(loop, "127.0.0.1", 0, &half, NULL, 0, 0);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    f = aw_create_connection(loop, "127.0.0.1", 80, &half, NULL);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    /* An older program's table: what follows it is not looked at. */
    v1.size = offsetof(aw_protocol, get_buffer);
    v1.get_buffer = (void *(*)(aw_transport *, size_t, size_t *,
                               void *))(uintptr_t)1;
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.echo = 1;
    nserver_peers = 0;
    f = aw_create_server(loop, "127.0.0.1", 0, &v1, &tmpl, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &v, NULL);
    aw_future_unref(f);
    srv = v;
    memset(&client, 0, sizeof(client));
    t = connect_to("127.0.0.1", aw_server_port(srv), &client);
    aw_transport_write(t, "old", 3);
    while (client.len < 3)
        aw_loop_run_once(loop, 0);
    aw_transport_close(t);
    run_until(&client.lost);
    run_until(&server_peers[0].lost);
    aw_transport_unref(t);
    release_peer(&client);
    finish(srv);
}
END_TEST

/* On libevent's select backend a connection whose socket select cannot
 * watch (FD_SETSIZE and above) fails with -EMFILE instead of being
 * registered (glibc's FD_SET would abort).  Other backends connect. */
START_TEST(connect_refuses_a_socket_select_cannot_watch)
{
    static struct peer tmpl, client;
    static int fds[FD_SETSIZE];
    int select_backend =
        strcmp(event_base_get_method(aw_loop_get_base(loop)), "select") == 0;
    aw_server *srv;
    aw_future *f;
    int n = 0, fd, rc;

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&client, 0, sizeof(client));
    srv = serve("127.0.0.1", &tmpl);
    /* Every descriptor below FD_SETSIZE taken: the socket gets one above. */
    while ((fd = dup(0)) >= 0 && fd < FD_SETSIZE && n < FD_SETSIZE)
        fds[n++] = fd;
    if (fd >= FD_SETSIZE)
        close(fd);
    f = aw_create_connection(loop, "127.0.0.1", aw_server_port(srv),
                             &recorder, &client);
    rc = aw_loop_run_until_complete(loop, f);
    while (n > 0)
        close(fds[--n]);
    if (select_backend) {
        ck_assert_int_eq(rc, -EMFILE);
        ck_assert_int_eq(client.nevents, 0);
    } else {
        ck_assert_int_eq(rc, 0);
        aw_transport_abort(client.t);
        run_until(&client.lost);
        release_peer(&client);
        while (nserver_peers == 0 || !server_peers[0].lost)
            aw_loop_run_once(loop, 0);
    }
    aw_future_unref(f);
    finish(srv);
}
END_TEST

/* ---- descriptors the program has ---------------------------------------------------- */

/* The transport a future gives, its reference taken. */
static aw_transport *
adopted(aw_future *f)
{
    void *t = NULL;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &t, NULL), 0);
    aw_future_unref(f);
    return t;
}

static int
fails_with(aw_future *f)
{
    int rc = aw_loop_run_until_complete(loop, f);

    aw_future_unref(f);
    return rc;
}

static void
run_until_lost(struct peer *p)
{
    ck_assert_int_eq(run_until(&p->lost), 1);
}

/* asyncio's test_read_pipe: data, then eof_received, then the loss, even
 * when eof_received asks to stay open (a read pipe has nothing to write). */
START_TEST(read_pipe_data_eof_then_lost)
{
    static struct peer p;
    static const int want[] = {EV_MADE, EV_DATA, EV_EOF, EV_LOST};
    aw_transport *t;
    int fds[2];

    memset(&p, 0, sizeof(p));
    p.keep_on_eof = 1;
    ck_assert_int_eq(pipe(fds), 0);
    t = adopted(aw_connect_read_pipe(loop, fds[0], &recorder, &p));
    ck_assert_int_eq(p.nevents, 1); /* connection_made came first */
    ck_assert_int_eq(aw_transport_write(t, "x", 1), -EOPNOTSUPP);
    ck_assert_int_eq(aw_transport_write_eof(t), -EOPNOTSUPP);
    ck_assert_int_eq(write(fds[1], "abc", 3), 3);
    close(fds[1]);
    run_until_lost(&p);
    ck_assert_int_eq(p.len, 3);
    ck_assert_int_eq(memcmp(p.data, "abc", 3), 0);
    ck_assert_int_eq(p.nevents, 4);
    ck_assert_int_eq(memcmp(p.events, want, sizeof(want)), 0);
    ck_assert_int_eq(p.lost_error, 0);
    ck_assert_int_eq(aw_transport_fd(t), -1);
    aw_transport_unref(t);
    aw_transport_unref(p.t);
}
END_TEST

/* asyncio's _UnixWritePipeTransport._read_ready: the reader closing is
 * seen on the loop, without a write: lost with 0 (nothing queued). */
START_TEST(write_pipe_reader_closed_is_noticed)
{
    static struct peer p;
    aw_transport *t;
    char buf[8];
    int fds[2];

    memset(&p, 0, sizeof(p));
    ck_assert_int_eq(pipe(fds), 0);
    t = adopted(aw_connect_write_pipe(loop, fds[1], &recorder, &p));
    ck_assert_int_eq(aw_transport_is_reading(t), 0);
    ck_assert_int_eq(aw_transport_pause_reading(t), -EOPNOTSUPP);
    ck_assert_int_eq(aw_transport_write(t, "hi", 2), 0);
    ck_assert_int_eq(read(fds[0], buf, sizeof(buf)), 2);
    close(fds[0]);
    run_until_lost(&p);
    ck_assert_int_eq(p.lost_error, 0);
    aw_transport_unref(t);
    aw_transport_unref(p.t);
}
END_TEST

/* Bad descriptors fail at once and stay the caller's. */
START_TEST(adopting_refuses_wrong_kinds_and_leaves_the_fd)
{
    static struct peer p;
    char path[] = "/tmp/aw-adopt-XXXXXX";
    int file = mkstemp(path), fds[2], sv[2];

    ck_assert_int_ge(file, 0);
    unlink(path);
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(fails_with(aw_connect_read_pipe(loop, file, &recorder,
                                                     &p)),
                     -EINVAL); /* a regular file (asyncio refuses it) */
    ck_assert_int_eq(fails_with(aw_connect_read_pipe(loop, fds[1], &recorder,
                                                     &p)),
                     -EINVAL); /* the write end */
    ck_assert_int_eq(fails_with(aw_connect_write_pipe(loop, fds[0],
                                                      &recorder, &p)),
                     -EINVAL);
    ck_assert_int_eq(fails_with(aw_create_connection_sock(loop, fds[0],
                                                          &recorder, &p)),
                     -ENOTSOCK);
    ck_assert_int_eq(fails_with(aw_connect_read_pipe(loop, -1, &recorder,
                                                     &p)),
                     -EINVAL);
    ck_assert_int_eq(fails_with(aw_connect_read_pipe(loop, fds[0], NULL,
                                                     &p)),
                     -EINVAL);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    ck_assert_int_eq(fails_with(aw_create_connection_sock(loop, sv[0],
                                                          &recorder, &p)),
                     -EINVAL); /* not a stream socket */
    ck_assert_int_eq(fails_with(aw_create_server_sock(loop, fds[0],
                                                      &recorder, &p, 0)),
                     -ENOTSOCK);
    ck_assert_int_eq(p.nevents, 0);
    ck_assert_int_ne(fcntl(file, F_GETFD), -1);
    ck_assert_int_ne(fcntl(fds[0], F_GETFD), -1);
    ck_assert_int_ne(fcntl(fds[1], F_GETFD), -1);
    ck_assert_int_ne(fcntl(sv[0], F_GETFD), -1);
    close(file);
    close(fds[0]);
    close(fds[1]);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* asyncio's create_connection(sock=) on one end of a socket pair;
 * cancelling the future before connection_made closes the socket. */
START_TEST(create_connection_with_existing_socket)
{
    static struct peer p;
    aw_transport *t;
    aw_future *f;
    char buf[8];
    int sv[2], sv2[2];

    memset(&p, 0, sizeof(p));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    t = adopted(aw_create_connection_sock(loop, sv[0], &recorder, &p));
    ck_assert_int_eq(aw_transport_fd(t), sv[0]);
    ck_assert_int_ne(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_ne(fcntl(sv[0], F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_eq(aw_transport_write(t, "ab", 2), 0);
    ck_assert_int_eq(read(sv[1], buf, sizeof(buf)), 2);
    ck_assert_int_eq(write(sv[1], "cd", 2), 2);
    close(sv[1]);
    run_until_lost(&p);
    ck_assert_int_eq(p.len, 2);
    ck_assert_int_eq(fcntl(sv[0], F_GETFD), -1);
    aw_transport_unref(t);
    aw_transport_unref(p.t);

    memset(&p, 0, sizeof(p));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
    f = aw_create_connection_sock(loop, sv2[0], &recorder, &p);
    aw_future_cancel(f, NULL);
    ck_assert_int_eq(fails_with(f), AW_ECANCELLED);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    ck_assert_int_eq(p.nevents, 0); /* connection_made never came */
    ck_assert_int_eq(fcntl(sv2[0], F_GETFD), -1); /* it was taken over */
    close(sv2[1]);
}
END_TEST

/* asyncio's create_server(sock=): a bound socket not yet listening is
 * made to listen; the server closes it. */
START_TEST(create_server_with_existing_socket)
{
    static struct peer tmpl, c;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    aw_server *srv;
    void *r = NULL;
    aw_future *f;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&tmpl, 0, sizeof(tmpl));
    memset(&c, 0, sizeof(c));
    tmpl.echo = 1;
    nserver_peers = 0;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    f = aw_create_server_sock(loop, fd, &server_proto, &tmpl, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &r, NULL);
    aw_future_unref(f);
    srv = r;
    ck_assert_int_eq(aw_server_port(srv), ntohs(sin.sin_port));
    f = aw_create_connection(loop, "127.0.0.1", aw_server_port(srv),
                             &recorder, &c);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_transport_write(c.t, "echo", 4), 0);
    while (c.len < 4 && aw_loop_run_once(loop, 0) >= 0)
        ;
    aw_transport_close(c.t);
    run_until_lost(&c);
    aw_transport_unref(c.t);
    aw_server_free(srv);
    while (nserver_peers > 0 && !server_peers[0].lost)
        aw_loop_run_once(loop, 0);
    aw_transport_unref(server_peers[0].t);
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
}
END_TEST

/* ---- the service manager ------------------------------------------------------------ */

/* sd_listen_fds's protocol: fds from 3 for our pid, made close-on-exec;
 * a LISTEN_PID that is not ours gives none. */
/* The checks of listen_fds_from_the_environment, in a child whose fds 3
 * and 4 were replaced (Check's own descriptors may be there): the number
 * of the first check that failed, 0 when all passed. */
static int
listen_fds_checks(void)
{
    char pid[32], **names = NULL;

    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (aw_listen_fds(0, &names) != 0 || names != NULL)
        return 1; /* nothing passed */
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "2", 1);
    setenv("LISTEN_FDNAMES", "web:admin", 1);
    if (aw_listen_fds(0, &names) != 2 || strcmp(names[0], "web") != 0 ||
        strcmp(names[1], "admin") != 0 || names[2] != NULL)
        return 2;
    aw_listen_names_free(names);
    if (!(fcntl(3, F_GETFD) & FD_CLOEXEC) || !(fcntl(4, F_GETFD) & FD_CLOEXEC))
        return 3;
    setenv("LISTEN_FDNAMES", "web", 1); /* not one name each */
    if (aw_listen_fds(0, &names) != -EINVAL || names != NULL)
        return 4;
    unsetenv("LISTEN_FDNAMES");
    if (aw_listen_fds(0, &names) != 2 || strcmp(names[1], "unknown") != 0)
        return 5;
    aw_listen_names_free(names);
    setenv("LISTEN_FDS", "2x", 1);
    if (aw_listen_fds(0, NULL) != -EINVAL)
        return 6;
    setenv("LISTEN_FDS", "3", 1); /* fd 5 is not open */
    if (aw_listen_fds(0, NULL) != -EBADF)
        return 7;
    setenv("LISTEN_FDS", "2", 1);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
    setenv("LISTEN_PID", pid, 1); /* the parent's, say */
    if (aw_listen_fds(1, &names) != 0 || names != NULL)
        return 8;
    if (getenv("LISTEN_PID") != NULL || getenv("LISTEN_FDS") != NULL)
        return 9; /* unset as asked */
    return 0;
}

/* sd_listen_fds's protocol: fds from 3 for our pid, made close-on-exec;
 * a LISTEN_PID that is not ours gives none. */
START_TEST(listen_fds_from_the_environment)
{
    int status = -1;
    pid_t child = fork();

    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int a = socket(AF_INET, SOCK_STREAM, 0);
        int b = socket(AF_UNIX, SOCK_STREAM, 0);

        /* dup2 leaves them inheritable; nothing else from 5 on */
        if (a < 0 || b < 0 || dup2(a, 3) != 3 || dup2(b, 4) != 4)
            _exit(100);
        for (a = 5; a < 1024; a++)
            close(a);
        _exit(listen_fds_checks());
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status), "signal %d", WTERMSIG(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* A datagram socket standing for the service manager: bound to path
 * (abstract when it starts with '@'), non-blocking. */
static int
notify_listener(const char *name)
{
    struct sockaddr_un sun;
    size_t len = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, name, len);
    if (name[0] == '@')
        sun.sun_path[0] = '\0';
    else
        len++;
    unlink(name);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                                      len)),
                     0);
    setenv("NOTIFY_SOCKET", name, 1);
    return fd;
}

static void
expect_datagram(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);

    ck_assert_int_eq(n, (ssize_t)strlen(want));
    buf[n] = '\0';
    ck_assert_str_eq(buf, want);
}

START_TEST(notify_to_path_and_abstract_sockets)
{
    char name[64];
    int fd;

    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(aw_notify("READY=1"), 0); /* not asked for */
    snprintf(name, sizeof(name), "/tmp/aw-notify-%ld", (long)getpid());
    fd = notify_listener(name);
    ck_assert_int_eq(aw_notify("READY=1"), 1);
    expect_datagram(fd, "READY=1");
    ck_assert_int_eq(aw_notify("STATUS=serving\nSTOPPING=1"), 1);
    expect_datagram(fd, "STATUS=serving\nSTOPPING=1");
    ck_assert_int_eq(aw_notify(NULL), -EINVAL);
    close(fd);
    unlink(name);
    ck_assert_int_eq(aw_notify("READY=1"), -ENOENT); /* gone */
    snprintf(name, sizeof(name), "@aw-notify-%ld", (long)getpid());
    fd = notify_listener(name);
    ck_assert_int_eq(aw_notify("STOPPING=1"), 1);
    expect_datagram(fd, "STOPPING=1");
    close(fd);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    ck_assert_int_eq(aw_notify("READY=1"), -EINVAL);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

static int
count_pings(aw_loop *l, void *arg)
{
    int *fd = arg;
    char buf[64];
    ssize_t n;

    (void)l;
    while ((n = recv(fd[0], buf, sizeof(buf), 0)) > 0)
        if (n == 10 && memcmp(buf, "WATCHDOG=1", 10) == 0)
            fd[1]++;
    return 0;
}

/* WATCHDOG_USEC asks for pings: a loop timer sends them (every half
 * period); a WATCHDOG_PID that is not ours asks for none. */
START_TEST(watchdog_pings_on_the_loop)
{
    aw_watchdog *wd = NULL;
    char name[64], pid[32];
    int st[2];

    snprintf(name, sizeof(name), "@aw-watchdog-%ld", (long)getpid());
    st[0] = notify_listener(name);
    st[1] = 0;
    unsetenv("WATCHDOG_USEC");
    ck_assert_int_eq(aw_watchdog_start(loop, &wd), 0);
    ck_assert_ptr_null(wd);
    setenv("WATCHDOG_USEC", "20000", 1);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(aw_watchdog_start(loop, &wd), 0); /* another's */
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(aw_watchdog_start(NULL, &wd), -EINVAL);
    ck_assert_int_eq(aw_watchdog_start(loop, &wd), 1);
    ck_assert_ptr_nonnull(wd);
    ck_assert_int_eq(aw_loop_add_reader(loop, st[0], count_pings, st), 0);
    while (st[1] < 3 && aw_loop_run_once(loop, 0) >= 0)
        ;
    ck_assert_int_ge(st[1], 3);
    aw_watchdog_stop(wd);
    aw_watchdog_stop(NULL);
    aw_loop_remove_reader(loop, st[0]);
    close(st[0]);
    setenv("WATCHDOG_USEC", "0", 1);
    ck_assert_int_eq(aw_watchdog_start(loop, &wd), -EINVAL);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("transport");
    TCase *tc = aw_test_tcase("transport");

    tcase_add_test(tc, echo_over_tcp_callbacks_in_order);
    tcase_add_test(tc, waiting_data_read_in_one_wakeup);
    tcase_add_test(tc, connection_refused);
    tcase_add_test(tc, unix_socket_server_and_client);
    tcase_add_test(tc, half_close_both_ways);
    tcase_add_test(tc, pause_and_resume_writing);
    tcase_add_test(tc, peer_reset);
    tcase_add_test(tc, resolve_localhost_and_ipv6_literal);
    tcase_add_test(tc, cancelled_connect_leaves_nothing);
    tcase_add_test(tc, server_close_with_clients_connected);
    tcase_add_test(tc, write_to_vanished_peer_is_an_error_not_sigpipe);
    tcase_add_test(tc, server_reuse_address_by_default);
    tcase_add_test(tc, create_server_resolves_asynchronously);
    tcase_add_test(tc, create_server_cancelled_while_resolving);
    tcase_add_test(tc, addresses_as_text);
    tcase_add_test(tc, protocol_size_checked);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, tcp_nodelay_on_by_default);
    tcase_add_test(tc, tcp_keepalive_option);
    tcase_add_test(tc, write_goes_out_at_once);
    tcase_add_test(tc, round_trips_change_no_event);
    tcase_add_test(tc, buffered_protocol_receives_into_its_own_buffer);
    tcase_add_test(tc, buffered_protocol_empty_buffer_is_an_error);
    tcase_add_test(tc, buffered_protocol_table_checked);
    tcase_add_test(tc, connect_refuses_a_socket_select_cannot_watch);
    tcase_add_test(tc, read_pipe_data_eof_then_lost);
    tcase_add_test(tc, write_pipe_reader_closed_is_noticed);
    tcase_add_test(tc, adopting_refuses_wrong_kinds_and_leaves_the_fd);
    tcase_add_test(tc, create_connection_with_existing_socket);
    tcase_add_test(tc, create_server_with_existing_socket);
    tcase_add_test(tc, listen_fds_from_the_environment);
    tcase_add_test(tc, notify_to_path_and_abstract_sockets);
    tcase_add_test(tc, watchdog_pings_on_the_loop);
    suite_add_tcase(s, tc);
    return s;
}

/* SPDX-License-Identifier: MIT */
/* test_transport.c: transports and protocols over loopback TCP (IPv4 and
 * IPv6) and Unix sockets, after CPython's test_asyncio/test_events.py
 * and test_selector_events.py where they apply. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

static const aw_protocol recorder = {AW_PROTOCOL_SIZE, made,   received, eof,
                                     lost,             paused, resumed};

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
    AW_PROTOCOL_SIZE, server_made, received, eof, lost, paused, resumed};

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

/* libevent 2.1 reads 4 KiB per read event; what else is waiting is read
 * in the same wake-up (up to 64 KiB), so data_received sees big chunks. */
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
    /* 8 calls at least without the top-up; a chain boundary may split. */
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
    for (i = 0; i < 64; i++)
        aw_transport_write(t, chunk, sizeof(chunk));
    ck_assert_int_gt(aw_transport_write_buffer_size(t), 100000);
    ck_assert_int_eq(client.nevents, 1); /* pause is scheduled, not called */
    for (i = 0; i < 50 && !saw_pause; i++) {
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        saw_pause = client.events[client.nevents - 1] == EV_PAUSE;
    }
    ck_assert(saw_pause);
    aw_transport_resume_reading(server_peers[0].t);
    while (server_peers[0].len < 64 * sizeof(chunk))
        aw_loop_run_once(loop, 0);
    for (i = 0; i < 50 && !saw_resume; i++) {
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
        saw_resume = client.events[client.nevents - 1] == EV_RESUME;
    }
    ck_assert(saw_resume);
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

/* The system's blocking resolver, counted: the loop must not call it
 * (this definition comes before the C library's for the library and
 * libevent too). */
static int blocking_lookups;

int
getaddrinfo(const char *node, const char *service,
            const struct addrinfo *hints, struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);

    blocking_lookups++;
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    return real != NULL ? real(node, service, hints, res) : EAI_FAIL;
}

/* create_server resolves its host with the loop's resolver, not the
 * blocking one; "localhost" comes from the hosts file. */
START_TEST(create_server_resolves_asynchronously)
{
    static struct peer tmpl;
    struct sockaddr_in sin;
    aw_server *srv;
    int fd;

    memset(&tmpl, 0, sizeof(tmpl));
    blocking_lookups = 0;
    srv = serve("localhost", &tmpl);
    ck_assert_int_eq(blocking_lookups, 0);
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
    suite_add_tcase(s, tc);
    return s;
}

/* SPDX-License-Identifier: MIT */
/* test_tls.c: TLS over OpenSSL: contexts, verification, client and server
 * over TCP and Unix sockets, start_tls, flow control, faults, and interop
 * with `openssl s_server` / `openssl s_client`, after CPython's
 * test_asyncio/test_ssl.py and test_sslproto.py where they apply.  The
 * certificates are made at start-up by tools/certgen.c. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "../tools/certgen.h"
#include "testutil.h"

/* ---- certificates, made once for the whole suite ------------------------------- */

static struct certgen_pem ca;          /* the authority clients trust */
static struct certgen_pem other_ca;    /* one nobody trusts */
static struct certgen_pem leaf;        /* CN=localhost, DNS:localhost, IP:127.0.0.1 */
static struct certgen_pem other_leaf;  /* CN=other.test, for SNI */
static struct certgen_pem unknown;     /* CN=localhost by other_ca */
static struct certgen_pem expired;     /* CN=localhost, expired an hour ago */
static struct certgen_pem selfsigned;  /* CN=localhost, its own issuer */
static struct certgen_pem client_cert; /* CN=client by ca */

static void
free_certs(void)
{
    certgen_free(&ca);
    certgen_free(&other_ca);
    certgen_free(&leaf);
    certgen_free(&other_leaf);
    certgen_free(&unknown);
    certgen_free(&expired);
    certgen_free(&selfsigned);
    certgen_free(&client_cert);
}

static void
make_certs(void)
{
    const char *san = "DNS:localhost,IP:127.0.0.1";

    if (certgen_make(&ca, "Test CA", NULL, NULL, -3600, 86400, 1, 0) ||
        certgen_make(&other_ca, "Other CA", NULL, NULL, -3600, 86400, 1, 0) ||
        certgen_make(&leaf, "localhost", san, &ca, -3600, 86400, 0, 0) ||
        certgen_make(&other_leaf, "other.test", "DNS:other.test", &ca, -3600,
                     86400, 0, 0) ||
        certgen_make(&unknown, "localhost", san, &other_ca, -3600, 86400, 0,
                     0) ||
        certgen_make(&expired, "localhost", san, &ca, -7200, -3600, 0, 0) ||
        certgen_make(&selfsigned, "localhost", san, NULL, -3600, 86400, 0,
                     0) ||
        certgen_make(&client_cert, "client", "DNS:client", &ca, -3600, 86400,
                     0, 0)) {
        fprintf(stderr, "test_tls: certgen_make failed\n");
        exit(99);
    }
    atexit(free_certs);
}

/* valgrind by hand (without check-valgrind's AW_TEST_SLOW) is slow too. */
static int
slow(void)
{
    const char *pre = getenv("LD_PRELOAD");

    return aw_test_slow() || (pre != NULL && strstr(pre, "valgrind") != NULL);
}

/* ---- contexts --------------------------------------------------------------------- */

/* Short timeouts: a test that goes wrong ends quickly, not after 30 s. */
static aw_tls_context *
server_ctx(const struct certgen_pem *c)
{
    aw_tls_context *ctx = aw_tls_context_new(AW_TLS_SERVER);

    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(aw_tls_context_load_cert_chain_mem(
                         ctx, c->cert, c->cert_len, c->key, c->key_len),
                     0);
    ck_assert_int_eq(aw_tls_context_set_timeouts(ctx, 5, 2), 0);
    return ctx;
}

static aw_tls_context *
client_ctx(void)
{
    aw_tls_context *ctx = aw_tls_context_new(AW_TLS_CLIENT);

    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(aw_tls_context_load_verify_mem(ctx, ca.cert, ca.cert_len),
                     0);
    ck_assert_int_eq(aw_tls_context_set_timeouts(ctx, 5, 2), 0);
    return ctx;
}

/* ---- a stream server whose handler task runs a script ------------------------------- */

enum script {
    ECHO,           /* write back what comes, until EOF */
    ECHO_LINE,      /* one line back, then close */
    SEND_AND_CLOSE, /* send_text, then close (close_notify) */
    SEND_AND_ABORT, /* send_text, then abort: no close_notify */
    SEND_BIG,       /* big_total bytes with drain, then close */
    SLOW_READ,      /* read all, pausing now and then */
    SINK            /* wait, never read */
};

struct handler {
    aw_stream *s;
    int script;
    int rc;
    aw_bytes *line;
    size_t sent;
    unsigned long sum;
    aw_future *upgrade; /* a start_tls awaited after a drain */
};

/* What the server saw of its first client. */
static struct seen {
    int clients;
    int verified;
    int reused;
    int subject_rc;
    char subject[256];
    char alpn[32];
    char server_name[64];
} seen;

static int server_script;
static const char *send_text;
static size_t big_total;
static unsigned long big_sum;
static int handlers_done;
static size_t slow_got, slow_next_pause;

static void
handler_free(void *p)
{
    struct handler *h = p;

    aw_stream_unref(h->s);
    free(h);
}

static AW_TASK(handler_task, struct handler *h)
{
    static char chunk[1 << 16];

    AW_BEGIN();
    if (h->script == ECHO) {
        for (;;) {
            AW_AWAIT(aw_stream_read(h->s, 1 << 16), &h->line);
            if (aw_bytes_len(h->line) == 0)
                break;
            aw_stream_write(h->s, aw_bytes_data(h->line),
                            aw_bytes_len(h->line));
            AW_AWAIT(aw_stream_drain(h->s), NULL);
        }
    } else if (h->script == ECHO_LINE) {
        AW_AWAIT(aw_stream_readline(h->s), &h->line);
        aw_stream_write(h->s, aw_bytes_data(h->line), aw_bytes_len(h->line));
        AW_AWAIT(aw_stream_drain(h->s), NULL);
    } else if (h->script == SEND_AND_CLOSE) {
        aw_stream_write(h->s, send_text, strlen(send_text));
        AW_AWAIT(aw_stream_drain(h->s), NULL);
    } else if (h->script == SEND_AND_ABORT) {
        aw_stream_write(h->s, send_text, strlen(send_text));
        AW_AWAIT(aw_stream_drain(h->s), NULL);
        aw_transport_abort(aw_stream_transport(h->s));
    } else if (h->script == SEND_BIG) {
        while (h->sent < big_total) {
            size_t n = big_total - h->sent < sizeof(chunk)
                           ? big_total - h->sent
                           : sizeof(chunk), i;

            for (i = 0; i < n; i++)
                chunk[i] = (char)((h->sent + i) * 2654435761u >> 13);
            for (i = 0; i < n; i++)
                h->sum = h->sum * 31 + (unsigned char)chunk[i];
            aw_stream_write(h->s, chunk, n);
            h->sent += n;
            AW_AWAIT(aw_stream_drain(h->s), NULL);
        }
        big_sum = h->sum;
    } else if (h->script == SLOW_READ) {
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
    } else {
        AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), 3600), NULL);
    }
    AW_FINALLY();
    aw_stream_close(h->s);
    handlers_done++;
    AW_END();
}

static void
on_client(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));
    aw_transport *t = aw_stream_transport(s);
    const char *p;

    (void)arg;
    if (seen.clients++ == 0) {
        seen.verified = aw_tls_peer_verified(t);
        seen.reused = aw_tls_session_reused(t);
        seen.subject_rc =
            aw_tls_peer_subject(t, seen.subject, sizeof(seen.subject));
        if (seen.subject_rc < 0)
            seen.subject[0] = '\0';
        p = aw_tls_alpn(t);
        snprintf(seen.alpn, sizeof(seen.alpn), "%s", p ? p : "(null)");
        p = aw_tls_server_name(t);
        snprintf(seen.server_name, sizeof(seen.server_name), "%s",
                 p ? p : "(null)");
    }
    h->s = s;
    h->script = server_script;
    aw_future_unref(aw_task_new(aw_transport_loop(t), handler_task, h,
                                handler_free));
}

static void
reset_server_state(int script)
{
    memset(&seen, 0, sizeof(seen));
    server_script = script;
    handlers_done = 0;
}

/* The server's handshake ends after the client's (TLS 1.3: the client's
 * Finished comes last): wait for the server to see its client. */
static void
wait_seen(void)
{
    ck_assert_int_eq(aw_test_run_until(loop, &seen.clients, 10), 1);
}

static aw_server *
start_backlog(aw_tls_context *sctx, int script, int backlog)
{
    aw_future *f;
    void *srv = NULL;

    reset_server_state(script);
    f = aw_start_server_tls(loop, "127.0.0.1", 0, sctx, on_client, NULL, 0,
                            backlog);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &srv, NULL), 0);
    aw_future_unref(f);
    ck_assert_int_gt(aw_server_port(srv), 0);
    return srv;
}

static aw_server *
start(aw_tls_context *sctx, int script)
{
    return start_backlog(sctx, script, 0);
}

/* The failure's message, kept from the last dial that failed. */
static char dial_message[512];

/* Connect over TLS: the stream, or NULL with *rc the error. */
static aw_stream *
dial_rc(aw_server *srv, aw_tls_context *cctx, const char *hostname, int *rc)
{
    aw_future *f = aw_open_connection_tls(loop, "127.0.0.1",
                                          aw_server_port(srv), cctx, hostname);
    void *s = NULL;
    const char *m;

    ck_assert_ptr_nonnull(f);
    *rc = aw_loop_run_until_complete(loop, f);
    if (*rc == 0) {
        ck_assert_int_eq(aw_future_take_result(f, &s, NULL), 0);
    } else {
        m = aw_future_message(f);
        snprintf(dial_message, sizeof(dial_message), "%s", m ? m : "");
    }
    aw_future_unref(f);
    return s;
}

static aw_stream *
dial(aw_server *srv, aw_tls_context *cctx, const char *hostname)
{
    int rc;
    aw_stream *s = dial_rc(srv, cctx, hostname, &rc);

    ck_assert_msg(rc == 0, "connect: %s (%s)", aw_err_name(rc), dial_message);
    return s;
}

/* Close the server, cancel the handlers still waiting, and wait until
 * every connection it accepted is gone. */
static void
stop(aw_server *srv)
{
    aw_task *ts[64];
    aw_future *f;
    size_t i, n;
    int guard = 0;

    aw_server_close(srv);
    n = aw_all_tasks(loop, ts, 64);
    for (i = 0; i < n && i < 64; i++)
        aw_future_cancel(ts[i], "test over");
    while (aw_all_tasks(loop, NULL, 0) > 0 && guard++ < 100000)
        aw_loop_run_once(loop, 0);
    f = aw_server_wait_closed(srv);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}

/* Close a client stream and wait for the close to finish. */
static void
hang_up(aw_stream *s)
{
    aw_future *f;

    aw_stream_close(s);
    f = aw_stream_wait_closed(s);
    aw_loop_run_until_complete(loop, f);
    aw_future_unref(f);
    aw_stream_unref(s);
}

static void
expect(aw_future *f, const char *want)
{
    aw_bytes *b = await_bytes(f, 0);

    ck_assert_str_eq(aw_bytes_cstr(b), want);
    aw_bytes_free(b);
}

/* Write a line, read it back (through an ECHO or ECHO_LINE server). */
static void
echo_check(aw_stream *s, const char *line)
{
    ck_assert_int_eq(aw_stream_write(s, line, strlen(line)), 0);
    expect(aw_stream_readline(s), line);
}

/* ---- a recording protocol, for the transport-level tests ---------------------------- */

#define EV_MADE 1
#define EV_DATA 2
#define EV_EOF 3
#define EV_LOST 4
#define EV_PAUSE 5
#define EV_RESUME 6

struct peer {
    int events[64];
    int nevents;
    char data[4096];
    size_t len;
    int lost, lost_error, paused, resumed, made;
    int echo;
    int pause_reading; /* pause reading as soon as made */
    aw_transport *t;
};

static void
note(struct peer *p, int ev)
{
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
    p->made = 1;
    if (p->pause_reading)
        aw_transport_pause_reading(t);
    note(p, EV_MADE);
}

static void
received(aw_transport *t, const void *data, size_t len, void *arg)
{
    struct peer *p = arg;

    note(p, EV_DATA);
    if (p->len + len <= sizeof(p->data))
        memcpy(p->data + p->len, data, len);
    p->len += len;
    if (p->echo)
        aw_transport_write(t, data, len);
}

static int
eof(aw_transport *t, void *arg)
{
    (void)t;
    note(arg, EV_EOF);
    return 0;
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
    ((struct peer *)arg)->paused++;
    note(arg, EV_PAUSE);
}

static void
resumed(aw_transport *t, void *arg)
{
    (void)t;
    ((struct peer *)arg)->resumed++;
    note(arg, EV_RESUME);
}

static const aw_protocol recorder = {
    AW_PROTOCOL_SIZE, made, received, eof, lost, paused, resumed, NULL, NULL};

/* The server side's peer: one connection per test. */
static struct peer server_peer;

static aw_server *
serve_proto(aw_tls_context *sctx, struct peer *p)
{
    aw_future *f;
    void *srv = NULL;

    f = aw_create_server_tls(loop, "127.0.0.1", 0, sctx, &recorder, p, 0, 0);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &srv, NULL), 0);
    aw_future_unref(f);
    return srv;
}

static aw_transport *
connect_proto(int port, aw_tls_context *cctx, const char *hostname,
              struct peer *p)
{
    aw_future *f = aw_create_connection_tls(loop, "127.0.0.1", port, cctx,
                                            hostname, &recorder, p);
    void *t = NULL;
    int rc;

    ck_assert_ptr_nonnull(f);
    rc = aw_loop_run_until_complete(loop, f);
    ck_assert_msg(rc == 0, "connect: %s (%s)", aw_err_name(rc),
                  aw_future_message(f) ? aw_future_message(f) : "");
    ck_assert_int_eq(aw_future_take_result(f, &t, NULL), 0);
    aw_future_unref(f);
    return t;
}

static int
run_until(volatile int *flag)
{
    return aw_test_run_until(loop, flag, 10);
}

/* ---- raw sockets -------------------------------------------------------------------- */

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

/* A listening socket that never accepts nor says anything (the kernel
 * completes the connection all the same). */
static int
silent_listener(int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Run the loop until the raw socket fd sees the end of the connection
 * (EOF or a reset); what comes before (an alert) is skipped.  1 when it
 * ended, 0 after 10 s. */
static int
run_until_raw_closed(int fd)
{
    double deadline = aw_loop_time(loop) + 10;
    char buf[512];

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (aw_loop_time(loop) < deadline) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return 1;
        if (n < 0) {
            volatile int never = 0;

            aw_test_run_until(loop, &never, 0.01);
        }
    }
    return 0;
}

/* ---- round trips ----------------------------------------------------------------- */

START_TEST(round_trip_streams_over_tcp)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv = start(sctx, ECHO);
    aw_stream *s = dial(srv, cctx, "localhost");

    ck_assert_int_eq(aw_tls_is_tls(aw_stream_transport(s)), 1);
    echo_check(s, "hello over TLS\n");
    echo_check(s, "and again\n");
    hang_up(s);
    stop(srv);
    ck_assert_int_eq(handlers_done, 1);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(round_trip_transport_with_protocol)
{
    static struct peer client;
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_transport *t;
    static const int want_client[] = {EV_MADE, EV_DATA, EV_LOST};

    memset(&client, 0, sizeof(client));
    memset(&server_peer, 0, sizeof(server_peer));
    server_peer.echo = 1;
    srv = serve_proto(sctx, &server_peer);
    /* The host is an IP address: checked against the IP entries. */
    t = connect_proto(aw_server_port(srv), cctx, NULL, &client);
    ck_assert_int_eq(client.made, 1);
    ck_assert_int_eq(aw_tls_is_tls(t), 1);
    ck_assert_int_eq(aw_transport_write(t, "ping", 4), 0);
    while (client.len < 4 && !client.lost) {
        volatile int never = 0;

        aw_test_run_until(loop, &never, 0.01);
    }
    ck_assert_int_eq(client.len, 4);
    ck_assert_int_eq(memcmp(client.data, "ping", 4), 0);
    ck_assert_int_eq(server_peer.made, 1);
    aw_transport_close(t);
    run_until(&client.lost);
    run_until(&server_peer.lost);
    ck_assert_int_eq(client.lost_error, 0);
    ck_assert_int_eq(server_peer.lost_error, 0);
    ck_assert_int_eq(client.nevents, 3);
    ck_assert_int_eq(client.events[0], want_client[0]);
    ck_assert_int_eq(client.events[1], want_client[1]);
    ck_assert_int_eq(client.events[2], want_client[2]);
    aw_transport_unref(t);
    aw_transport_unref(client.t);
    aw_transport_unref(server_peer.t);
    aw_server_free(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(round_trip_over_unix_socket)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    char path[64];
    aw_future *f;
    void *srv = NULL, *s = NULL;

    snprintf(path, sizeof(path), "/tmp/awtls-%d.sock", (int)getpid());
    reset_server_state(ECHO);
    f = aw_start_unix_server_tls(loop, path, sctx, on_client, NULL, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    /* No name to check against: refused while the check is on. */
    f = aw_open_unix_connection_tls(loop, path, cctx, NULL);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    f = aw_open_unix_connection_tls(loop, path, cctx, "localhost");
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_tls_is_tls(aw_stream_transport(s)), 1);
    echo_check(s, "over unix and TLS\n");
    hang_up(s);
    stop(srv);
    unlink(path);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(big_transfer_intact)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;
    unsigned long sum = 0;
    size_t got = 0;

    big_total = slow() ? (size_t)2 << 20 : (size_t)100 << 20;
    big_sum = 0;
    srv = start(sctx, SEND_BIG);
    s = dial(srv, cctx, "localhost");
    for (;;) {
        aw_bytes *b = await_bytes(aw_stream_read(s, 1 << 16), 0);
        size_t i, n = aw_bytes_len(b);
        const unsigned char *d = (const unsigned char *)aw_bytes_data(b);

        for (i = 0; i < n; i++)
            sum = sum * 31 + d[i];
        got += n;
        aw_bytes_free(b);
        if (n == 0)
            break;
    }
    ck_assert_uint_eq(got, big_total);
    ck_assert_uint_eq(sum, big_sum);
    ck_assert_int_eq(aw_stream_at_eof(s), 1);
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* A writer pushing through drain to a reader that takes its time: the
 * memory in use stays bounded whatever the size (1 GB in check-long). */
static size_t heap_peak, heap_base;

static size_t
heap_now(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

struct pusher {
    aw_stream *s;
    size_t sent, total;
};

static AW_TASK(pusher_task, struct pusher *p)
{
    static char chunk[1 << 16];

    AW_BEGIN();
    while (p->sent < p->total) {
        aw_stream_write(p->s, chunk, sizeof(chunk));
        p->sent += sizeof(chunk);
        AW_AWAIT(aw_stream_drain(p->s), NULL);
        if (heap_now() > heap_peak)
            heap_peak = heap_now();
    }
    aw_stream_close(p->s);
    AW_END();
}

START_TEST(slow_reader_keeps_memory_bounded)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    struct pusher p = {NULL, 0, 0};
    aw_server *srv;
    aw_task *t;

    p.total = aw_test_long() ? (size_t)1 << 30
              : slow()       ? (size_t)2 << 20
                             : (size_t)32 << 20;
    slow_got = 0;
    slow_next_pause = (size_t)4 << 20;
    srv = start(sctx, SLOW_READ);
    p.s = dial(srv, cctx, "localhost");
    heap_base = heap_peak = heap_now();
    t = aw_task_new(loop, pusher_task, &p, NULL);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, t), 0);
    aw_future_unref(t);
    while (slow_got < p.total && handlers_done == 0)
        aw_loop_run_once(loop, 0);
    ck_assert_uint_eq(slow_got, p.total);
    /* Both sides' buffers and OpenSSL's: a few limits, not the transfer. */
    ck_assert_msg(heap_peak - heap_base < (size_t)8 << 20,
                  "heap grew by %zu bytes", heap_peak - heap_base);
    hang_up(p.s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- verification ------------------------------------------------------------------ */

/* A client of ctx connecting to a server with cert c fails with want; the
 * server closes quietly (no report), its handler never runs. */
static void
refused(const struct certgen_pem *c, aw_tls_context *cctx,
        const char *hostname, int want)
{
    aw_tls_context *sctx = server_ctx(c);
    aw_server *srv;
    aw_stream *s;
    int rc;

    capture_reports();
    srv = start(sctx, ECHO);
    s = dial_rc(srv, cctx, hostname, &rc);
    ck_assert_ptr_null(s);
    ck_assert_msg(rc == want, "got %s (%s), want %s", aw_err_name(rc),
                  dial_message, aw_err_name(want));
    ck_assert_msg(dial_message[0] != '\0', "no message for %s",
                  aw_err_name(rc));
    ck_assert_int_eq(aw_tls_is_verify_error(rc), 1);
    stop(srv);
    ck_assert_int_eq(seen.clients, 0);
    ck_assert_int_eq(cap.calls, 0);
    aw_tls_context_unref(sctx);
}

START_TEST(verify_unknown_ca_refused)
{
    aw_tls_context *cctx = client_ctx();

    refused(&unknown, cctx, "localhost", AW_ETLS_UNKNOWN_CA);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(verify_wrong_hostname_refused)
{
    aw_tls_context *cctx = client_ctx();

    refused(&leaf, cctx, "wrong.example", AW_ETLS_HOSTNAME);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(verify_expired_refused)
{
    aw_tls_context *cctx = client_ctx();

    refused(&expired, cctx, "localhost", AW_ETLS_EXPIRED);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(verify_self_signed_refused_by_default)
{
    aw_tls_context *cctx = client_ctx();

    refused(&selfsigned, cctx, "localhost", AW_ETLS_SELF_SIGNED);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(self_signed_accepted_when_trusted)
{
    aw_tls_context *sctx = server_ctx(&selfsigned), *cctx = client_ctx();
    aw_server *srv = start(sctx, ECHO);
    aw_stream *s;

    ck_assert_int_eq(aw_tls_context_load_verify_mem(cctx, selfsigned.cert,
                                                    selfsigned.cert_len),
                     0);
    s = dial(srv, cctx, "localhost");
    echo_check(s, "trusted\n");
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(self_signed_accepted_with_verify_none)
{
    aw_tls_context *sctx = server_ctx(&selfsigned);
    aw_tls_context *cctx = aw_tls_context_new(AW_TLS_CLIENT);
    aw_server *srv = start(sctx, ECHO);
    aw_stream *s;

    ck_assert_int_eq(aw_tls_context_get_verify(cctx), AW_TLS_VERIFY_REQUIRED);
    ck_assert_int_eq(aw_tls_context_set_verify(cctx, AW_TLS_VERIFY_NONE), 0);
    ck_assert_int_eq(aw_tls_context_get_verify(cctx), AW_TLS_VERIFY_NONE);
    /* Neither the issuer nor the name is checked. */
    s = dial(srv, cctx, "not.the.name");
    echo_check(s, "anyone\n");
    ck_assert_int_eq(aw_tls_peer_verified(aw_stream_transport(s)), 0);
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(client_certificate_required_and_missing)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_tls_context *cctx12 = client_ctx();
    aw_server *srv;
    aw_stream *s;
    aw_future *f;
    int rc;

    capture_reports();
    ck_assert_int_eq(aw_tls_context_load_verify_mem(sctx, ca.cert, ca.cert_len),
                     0);
    ck_assert_int_eq(aw_tls_context_set_verify(sctx, AW_TLS_VERIFY_REQUIRED),
                     0);
    srv = start(sctx, ECHO);
    /* TLS 1.2: the server refuses within the handshake. */
    ck_assert_int_eq(aw_tls_context_set_max_version(cctx12, AW_TLS_1_2), 0);
    s = dial_rc(srv, cctx12, "localhost", &rc);
    ck_assert_ptr_null(s);
    ck_assert_msg(rc == AW_ETLS_HANDSHAKE, "got %s (%s)", aw_err_name(rc),
                  dial_message);
    ck_assert_str_ne(dial_message, "");
    /* TLS 1.3: the client's handshake ends before the server looks at its
     * certificate; the refusal may come as an alert on the first read. */
    s = dial_rc(srv, cctx, "localhost", &rc);
    if (s == NULL) {
        ck_assert_msg(rc == AW_ETLS_HANDSHAKE, "got %s (%s)", aw_err_name(rc),
                      dial_message);
    } else {
        aw_stream_write(s, "x\n", 2);
        f = aw_stream_readline(s);
        rc = aw_loop_run_until_complete(loop, f);
        aw_future_unref(f);
        ck_assert_msg(rc == AW_ETLS_PROTOCOL || rc == AW_ETLS_HANDSHAKE,
                      "read after a refused handshake: %s", aw_err_name(rc));
        hang_up(s);
    }
    stop(srv);
    ck_assert_int_eq(seen.clients, 0);
    ck_assert_int_eq(cap.calls, 0);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
    aw_tls_context_unref(cctx12);
}
END_TEST

START_TEST(client_certificate_required_and_present)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;
    char buf[256];

    ck_assert_int_eq(aw_tls_context_load_verify_mem(sctx, ca.cert, ca.cert_len),
                     0);
    ck_assert_int_eq(aw_tls_context_set_verify(sctx, AW_TLS_VERIFY_REQUIRED),
                     0);
    ck_assert_int_eq(aw_tls_context_load_cert_chain_mem(
                         cctx, client_cert.cert, client_cert.cert_len,
                         client_cert.key, client_cert.key_len),
                     0);
    srv = start(sctx, ECHO);
    s = dial(srv, cctx, "localhost");
    echo_check(s, "with a certificate\n");
    ck_assert_int_eq(seen.clients, 1);
    ck_assert_int_eq(seen.verified, 1);
    ck_assert_str_eq(seen.subject, "CN=client");
    /* And the client verified the server. */
    ck_assert_int_eq(aw_tls_peer_verified(aw_stream_transport(s)), 1);
    ck_assert_int_gt(aw_tls_peer_issuer(aw_stream_transport(s), buf,
                                        sizeof(buf)),
                     0);
    ck_assert_str_eq(buf, "CN=Test CA");
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- ALPN and SNI ---------------------------------------------------------------- */

START_TEST(alpn_negotiated)
{
    static const char *const server_protos[] = {"h2", "http/1.1"};
    static const char *const client_protos[] = {"http/1.1", "h2"};
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;
    const char *a;

    ck_assert_int_eq(aw_tls_context_set_alpn(sctx, server_protos, 2), 0);
    ck_assert_int_eq(aw_tls_context_set_alpn(cctx, client_protos, 2), 0);
    srv = start(sctx, ECHO);
    s = dial(srv, cctx, "localhost");
    a = aw_tls_alpn(aw_stream_transport(s));
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(a, "h2"); /* the server's preference */
    wait_seen();
    ck_assert_str_eq(seen.alpn, "h2");
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(alpn_mismatch_goes_on_without)
{
    static const char *const server_protos[] = {"h2"};
    static const char *const client_protos[] = {"spdy/3"};
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;

    ck_assert_int_eq(aw_tls_context_set_alpn(sctx, server_protos, 1), 0);
    ck_assert_int_eq(aw_tls_context_set_alpn(cctx, client_protos, 1), 0);
    srv = start(sctx, ECHO);
    s = dial(srv, cctx, "localhost");
    ck_assert_ptr_null(aw_tls_alpn(aw_stream_transport(s)));
    wait_seen();
    ck_assert_str_eq(seen.alpn, "(null)");
    echo_check(s, "still works\n");
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

static char sni_asked[64];
static int sni_calls;

static aw_tls_context *
pick_by_name(const char *name, void *arg)
{
    sni_calls++;
    snprintf(sni_asked, sizeof(sni_asked), "%s", name ? name : "(null)");
    if (name != NULL && strcmp(name, "other.test") == 0)
        return arg;
    return NULL;
}

START_TEST(sni_callback_picks_certificate)
{
    aw_tls_context *sctx = server_ctx(&leaf), *other = server_ctx(&other_leaf);
    aw_tls_context *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;
    char subject[128];

    sni_calls = 0;
    ck_assert_int_eq(aw_tls_context_set_sni_callback(sctx, pick_by_name, other),
                     0);
    srv = start(sctx, ECHO);
    s = dial(srv, cctx, "other.test");
    ck_assert_int_gt(aw_tls_peer_subject(aw_stream_transport(s), subject,
                                         sizeof(subject)),
                     0);
    ck_assert_str_eq(subject, "CN=other.test");
    ck_assert_str_eq(sni_asked, "other.test");
    wait_seen();
    ck_assert_str_eq(seen.server_name, "other.test");
    ck_assert_str_eq(aw_tls_server_name(aw_stream_transport(s)), "other.test");
    echo_check(s, "other\n");
    hang_up(s);
    /* Another name: the callback keeps the default context. */
    s = dial(srv, cctx, "localhost");
    ck_assert_int_gt(aw_tls_peer_subject(aw_stream_transport(s), subject,
                                         sizeof(subject)),
                     0);
    ck_assert_str_eq(subject, "CN=localhost");
    ck_assert_str_eq(sni_asked, "localhost");
    ck_assert_int_eq(sni_calls, 2);
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(other);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- start_tls ------------------------------------------------------------------------ */

static aw_tls_context *upgrade_ctx;
static int upgrade_rc = 1;

/* A plain server: "STARTTLS\n" answered "OK\n", then TLS, then an echoed
 * line.  With starttls_big, BIG_BEFORE_TLS bytes follow "OK\n" and the
 * server drains while its upgrade runs (drain_during_start_tls_...).
 * With starttls_early, no "OK\n": the server starts TLS once the stream
 * holds what the client sent after "STARTTLS\n" (start_tls_takes_...);
 * with 2, it first reads a line of that and drops the future unread. */
#define BIG_BEFORE_TLS (8u << 20)

static int starttls_big, starttls_early;
static char *big_before_tls;
static int big_paused_at_start, big_drain_rc = 1;
static size_t early_buffered;

static AW_TASK(starttls_server_task, struct handler *h)
{
    AW_BEGIN();
    AW_AWAIT(aw_stream_readline(h->s), &h->line);
    ck_assert_str_eq(aw_bytes_cstr(h->line), "STARTTLS\n");
    if (starttls_early) {
        for (h->sent = 0; aw_stream_buffered(h->s) == 0 && h->sent < 5000;
             h->sent++)
            AW_AWAIT(aw_sleep(loop, 0.001), NULL);
        early_buffered = aw_stream_buffered(h->s);
        if (starttls_early == 2) /* a line read, dropped unread */
            aw_future_unref(aw_stream_readline(h->s));
    } else {
        aw_stream_write(h->s, "OK\n", 3);
    }
    if (starttls_big) {
        aw_stream_write(h->s, big_before_tls, BIG_BEFORE_TLS);
        big_paused_at_start =
            aw_transport_is_writing_paused(aw_stream_transport(h->s));
    }
    h->upgrade = aw_stream_start_tls(h->s, upgrade_ctx, NULL);
    if (starttls_big) {
        AW_TRY_AWAIT(big_drain_rc, aw_stream_drain(h->s), NULL);
    }
    AW_TRY_AWAIT(upgrade_rc, h->upgrade, NULL);
    h->upgrade = NULL;
    if (upgrade_rc == 0) {
        AW_AWAIT(aw_stream_readline(h->s), &h->line);
        aw_stream_write(h->s, aw_bytes_data(h->line), aw_bytes_len(h->line));
        AW_AWAIT(aw_stream_drain(h->s), NULL);
    }
    AW_FINALLY();
    aw_future_unref(h->upgrade);
    aw_stream_close(h->s);
    handlers_done++;
    AW_END();
}

static void
on_starttls_client(aw_stream *s, void *arg)
{
    struct handler *h = calloc(1, sizeof(*h));

    (void)arg;
    h->s = s;
    aw_future_unref(aw_task_new(loop, starttls_server_task, h, handler_free));
}

/* The STARTTLS server started, and a plain connection to it. */
static aw_stream *
dial_starttls_server(aw_server **srvp)
{
    aw_future *f;
    void *srv = NULL, *s = NULL;

    f = aw_start_server(loop, "127.0.0.1", 0, on_starttls_client, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    *srvp = srv;
    return s;
}

START_TEST(stream_start_tls_mid_stream)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_future *f;
    aw_server *srv = NULL;
    aw_stream *s = NULL;

    upgrade_ctx = sctx;
    upgrade_rc = 1;
    handlers_done = 0;
    s = dial_starttls_server(&srv);
    ck_assert_int_eq(aw_tls_is_tls(aw_stream_transport(s)), 0);
    ck_assert_int_eq(aw_stream_write(s, "STARTTLS\n", 9), 0);
    expect(aw_stream_readline(s), "OK\n");
    f = aw_stream_start_tls(s, cctx, "localhost");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_tls_is_tls(aw_stream_transport(s)), 1);
    echo_check(s, "secret\n"); /* the server's side of the upgrade done too */
    ck_assert_int_eq(upgrade_rc, 0);
    /* Already TLS: refused, the stream unchanged. */
    f = aw_stream_start_tls(s, cctx, "localhost");
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    hang_up(s);
    stop(srv);
    ck_assert_int_eq(handlers_done, 1);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* A client that sends its ClientHello right behind "STARTTLS\n", without
 * waiting for the go-ahead: the server's stream has it buffered when it
 * starts TLS, and the handshake takes it from there (it waited for a
 * ClientHello that never came, until its timeout). */
START_TEST(start_tls_takes_what_the_stream_buffered)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_future *f;
    aw_server *srv = NULL;
    aw_stream *s = NULL;

    ck_assert_int_eq(aw_tls_context_set_timeouts(sctx, 5.0, 0), 0);
    upgrade_ctx = sctx;
    upgrade_rc = 1;
    early_buffered = 0;
    starttls_early = 1;
    handlers_done = 0;
    s = dial_starttls_server(&srv);
    ck_assert_int_eq(aw_stream_write(s, "STARTTLS\n", 9), 0);
    f = aw_stream_start_tls(s, cctx, "localhost");
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    echo_check(s, "secret\n");
    ck_assert_int_eq(upgrade_rc, 0);
    ck_assert_uint_gt(early_buffered, 0); /* the case under test */
    hang_up(s);
    stop(srv);
    ck_assert_int_eq(handlers_done, 1);
    starttls_early = 0;
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* Plain text where the ClientHello should be fails the server's upgrade
 * at once with the reason (AW_ETLS_HANDSHAKE); its stream is lost, the
 * client sees the connection end, nothing is left over.  0: sent after
 * the go-ahead.  1: sent behind "STARTTLS\n" (the command injection of
 * CVE-2011-0411's kind), so buffered by the stream when it starts TLS:
 * never read as if it had come over TLS (the handshake waited for a
 * ClientHello until its timeout, and a client that then did TLS would
 * have had its injected line read as protected).  2: the same, the server
 * having read the injected line and dropped the read's future unread: the
 * stream takes those bytes back, and they go to the handshake too. */
START_TEST(start_tls_fails_on_plain_text)
{
    aw_tls_context *sctx = server_ctx(&leaf);
    aw_server *srv = NULL;
    aw_stream *s = NULL;
    aw_bytes *b;
    double t0;

    ck_assert_int_eq(aw_tls_context_set_timeouts(sctx, 5.0, 0), 0);
    upgrade_ctx = sctx;
    upgrade_rc = 1;
    early_buffered = 0;
    starttls_early = _i;
    handlers_done = 0;
    s = dial_starttls_server(&srv);
    t0 = aw_loop_time(loop);
    if (_i == 0) {
        ck_assert_int_eq(aw_stream_write(s, "STARTTLS\n", 9), 0);
        expect(aw_stream_readline(s), "OK\n");
        ck_assert_int_eq(aw_stream_write(s, "RCPT TO:<x@y>\n", 14), 0);
    } else {
        ck_assert_int_eq(
            aw_stream_write(s, "STARTTLS\nRCPT TO:<x@y>\n", 23), 0);
    }
    b = await_bytes(aw_stream_read(s, 100), 0); /* the server hangs up */
    ck_assert_uint_eq(aw_bytes_len(b), 0);
    aw_bytes_free(b);
    ck_assert_double_lt(aw_loop_time(loop) - t0, 4.0);
    ck_assert_int_eq(upgrade_rc, AW_ETLS_HANDSHAKE);
    ck_assert_uint_eq(early_buffered, _i == 0 ? 0 : 14);
    hang_up(s);
    stop(srv);
    ck_assert_int_eq(handlers_done, 1);
    starttls_early = 0;
    aw_tls_context_unref(sctx);
}
END_TEST

/* A stream whose peer has ended its side cannot start TLS (no handshake
 * could follow): refused at once, the stream left as it was, what it
 * had buffered still there to read. */
START_TEST(start_tls_refused_after_end_of_file)
{
    aw_tls_context *sctx = server_ctx(&leaf);
    aw_future *f;
    void *s = NULL;
    int sv[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    f = aw_open_connection_sock(loop, sv[0]);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(write(sv[1], "left\n", 5), 5);
    ck_assert_int_eq(shutdown(sv[1], SHUT_WR), 0);
    /* Both are there at once on a socketpair: a few passes read them. */
    f = aw_sleep(loop, 0.05);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    ck_assert_uint_eq(aw_stream_buffered(s), 5);
    f = aw_stream_start_tls(s, sctx, NULL);
    ck_assert_int_eq(aw_future_error(f), -EINVAL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_tls_is_tls(aw_stream_transport(s)), 0);
    expect(aw_stream_readline(s), "left\n");
    hang_up(s);
    close(sv[1]);
    aw_tls_context_unref(sctx);
}
END_TEST

/* A client whose handshake OpenSSL refuses to begin (no protocol version
 * allowed): the layer had taken the connection, so start_tls fails and
 * the stream is lost with the same error (it read and wrote nothing ever
 * after, its buffered bytes gone to the layer). */
START_TEST(start_tls_failing_at_once_loses_the_stream)
{
    aw_tls_context *cctx = client_ctx();
    aw_future *f;
    void *s = NULL;
    int sv[2], code;

    ck_assert_int_eq(SSL_CTX_set_min_proto_version(
                         aw_tls_context_native(cctx), TLS1_3_VERSION),
                     1);
    ck_assert_int_eq(SSL_CTX_set_max_proto_version(
                         aw_tls_context_native(cctx), TLS1_2_VERSION),
                     1);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    f = aw_open_connection_sock(loop, sv[0]);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(write(sv[1], "left\n", 5), 5);
    f = aw_sleep(loop, 0.05);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    ck_assert_uint_eq(aw_stream_buffered(s), 5);
    f = aw_stream_start_tls(s, cctx, "localhost");
    ck_assert(aw_future_done(f));
    code = aw_future_error(f);
    ck_assert_int_ne(code, 0);
    ck_assert_int_ne(code, -EINVAL);
    aw_future_unref(f);
    f = aw_stream_readline(s);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), code);
    aw_future_unref(f);
    ck_assert_int_ne(aw_stream_write(s, "x", 1), 0);
    hang_up(s);
    close(sv[1]);
    aw_tls_context_unref(cctx);
}
END_TEST

/* A drain asked for while the upgrade runs, on a connection whose buffer
 * was over its high-water mark when it began: it settles once the TLS
 * transport has taken over and the buffer below has drained (the pause
 * and resume of the connection below go to the TLS layer by then).  The
 * server writes 8 MiB, starts TLS and drains at once; the client reads
 * them all, then starts TLS. */
START_TEST(drain_during_start_tls_settles_after_it)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_future *f;
    aw_bytes *b;
    aw_server *srv = NULL;
    aw_stream *s = NULL;

    big_before_tls = calloc(1, BIG_BEFORE_TLS);
    ck_assert_ptr_nonnull(big_before_tls);
    upgrade_ctx = sctx;
    upgrade_rc = big_drain_rc = 1;
    big_paused_at_start = 0;
    starttls_big = 1;
    handlers_done = 0;
    s = dial_starttls_server(&srv);
    ck_assert_int_eq(aw_stream_write(s, "STARTTLS\n", 9), 0);
    expect(aw_stream_readline(s), "OK\n");
    f = aw_stream_readexactly(s, BIG_BEFORE_TLS);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, (void **)&b, NULL), 0);
    aw_future_unref(f);
    ck_assert_uint_eq(aw_bytes_len(b), BIG_BEFORE_TLS);
    aw_bytes_free(b);
    ck_assert_int_eq(big_paused_at_start, 1);
    f = aw_stream_start_tls(s, cctx, "localhost");
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_unref(f);
    echo_check(s, "after\n"); /* the server's drain settled first */
    ck_assert_int_eq(upgrade_rc, 0);
    ck_assert_int_eq(big_drain_rc, 0);
    hang_up(s);
    stop(srv);
    ck_assert_int_eq(handlers_done, 1);
    starttls_big = 0;
    free(big_before_tls);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

static aw_future *server_upgrade;
static aw_tls_context *server_upgrade_ctx;

/* A plain server whose connections go TLS as soon as they are made. */
static void
upgrade_made(aw_transport *t, void *arg)
{
    (void)arg;
    server_upgrade =
        aw_start_tls(t, server_upgrade_ctx, NULL, &recorder, &server_peer);
}

static const aw_protocol upgrade_proto = {AW_PROTOCOL_SIZE, upgrade_made,
                                          NULL, NULL, NULL, NULL, NULL,
                                          NULL, NULL};

START_TEST(start_tls_on_transport)
{
    static struct peer plain, client;
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_future *f;
    void *srv = NULL, *pt = NULL, *tt = NULL;

    memset(&plain, 0, sizeof(plain));
    memset(&client, 0, sizeof(client));
    memset(&server_peer, 0, sizeof(server_peer));
    server_peer.echo = 1;
    server_upgrade = NULL;
    server_upgrade_ctx = sctx;
    f = aw_create_server(loop, "127.0.0.1", 0, &upgrade_proto, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_create_connection(loop, "127.0.0.1", aw_server_port(srv),
                             &recorder, &plain);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &pt, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_tls_is_tls(pt), 0);
    f = aw_start_tls(pt, cctx, "localhost", &recorder, &client);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_take_result(f, &tt, NULL), 0);
    aw_future_unref(f);
    ck_assert_ptr_nonnull(server_upgrade);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, server_upgrade), 0);
    ck_assert_int_eq(aw_tls_is_tls(tt), 1);
    ck_assert_int_eq(client.made, 1);
    ck_assert_int_eq(server_peer.made, 1);
    ck_assert_int_eq(aw_transport_write(tt, "upgraded", 8), 0);
    while (client.len < 8 && !client.lost) {
        volatile int never = 0;

        aw_test_run_until(loop, &never, 0.01);
    }
    ck_assert_int_eq(client.len, 8);
    ck_assert_int_eq(memcmp(client.data, "upgraded", 8), 0);
    /* Already TLS: refused. */
    f = aw_start_tls(tt, cctx, "localhost", &recorder, &client);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    aw_transport_close(tt);
    run_until(&client.lost);
    run_until(&server_peer.lost);
    ck_assert_int_eq(client.lost_error, 0);
    /* The plain protocol heard nothing after the upgrade. */
    ck_assert_int_eq(plain.nevents, 1);
    ck_assert_int_eq(plain.lost, 0);
    aw_transport_unref(tt);
    aw_transport_unref(pt);
    aw_transport_unref(plain.t);
    aw_transport_unref(client.t);
    aw_transport_unref(server_peer.t);
    aw_future_unref(server_upgrade);
    aw_server_free(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- faults --------------------------------------------------------------------------- */

START_TEST(handshake_timeout_against_silent_server)
{
    aw_tls_context *cctx = client_ctx();
    int port, lfd = silent_listener(&port), rc;
    aw_future *f;

    ck_assert_int_eq(aw_tls_context_set_timeouts(cctx, 0.2, 0), 0);
    f = aw_open_connection_tls(loop, "127.0.0.1", port, cctx, "localhost");
    rc = aw_loop_run_until_complete(loop, f);
    ck_assert_msg(rc == AW_ETIMEDOUT, "got %s", aw_err_name(rc));
    aw_future_unref(f);
    close(lfd);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(handshake_timeout_against_silent_client)
{
    aw_tls_context *sctx = server_ctx(&leaf);
    aw_server *srv;
    int fd;

    capture_reports();
    ck_assert_int_eq(aw_tls_context_set_timeouts(sctx, 0.2, 0), 0);
    srv = start(sctx, ECHO);
    fd = raw_connect(aw_server_port(srv)); /* and says nothing */
    ck_assert_int_eq(run_until_raw_closed(fd), 1);
    close(fd);
    stop(srv);
    ck_assert_int_eq(seen.clients, 0);
    ck_assert_int_eq(cap.calls, 0); /* quietly */
    aw_tls_context_unref(sctx);
}
END_TEST

START_TEST(garbage_instead_of_client_hello_closed_quietly)
{
    static const char junk[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
    aw_tls_context *sctx = server_ctx(&leaf);
    aw_server *srv;
    int fd;

    capture_reports();
    srv = start(sctx, ECHO);
    fd = raw_connect(aw_server_port(srv));
    ck_assert_int_eq(write(fd, junk, sizeof(junk) - 1),
                     (ssize_t)sizeof(junk) - 1);
    ck_assert_int_eq(run_until_raw_closed(fd), 1);
    close(fd);
    stop(srv);
    ck_assert_int_eq(seen.clients, 0);
    ck_assert_int_eq(cap.calls, 0);
    aw_tls_context_unref(sctx);
}
END_TEST

static void
garbage_made(aw_transport *t, void *arg)
{
    static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";

    (void)arg;
    aw_transport_write(t, junk, sizeof(junk) - 1);
}

static const aw_protocol garbage_proto = {AW_PROTOCOL_SIZE, garbage_made,
                                          NULL, NULL, NULL, NULL, NULL,
                                          NULL, NULL};

START_TEST(garbage_instead_of_server_hello_fails_handshake)
{
    static struct peer client;
    aw_tls_context *cctx = client_ctx();
    aw_future *f;
    void *srv = NULL;
    int rc;

    memset(&client, 0, sizeof(client));
    f = aw_create_server(loop, "127.0.0.1", 0, &garbage_proto, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_create_connection_tls(loop, "127.0.0.1", aw_server_port(srv), cctx,
                                 "localhost", &recorder, &client);
    rc = aw_loop_run_until_complete(loop, f);
    ck_assert_msg(rc == AW_ETLS_HANDSHAKE, "got %s", aw_err_name(rc));
    ck_assert_ptr_nonnull(aw_future_message(f));
    ck_assert_str_ne(aw_future_message(f), "");
    aw_future_unref(f);
    ck_assert_int_eq(client.made, 0); /* never made */
    stop(srv); /* the plain server's side sees the client go */
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(truncation_without_close_notify_is_not_eof)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;
    int rc = 0, reads = 0;

    send_text = "cut short";
    srv = start(sctx, SEND_AND_ABORT);
    s = dial(srv, cctx, "localhost");
    while (rc == 0 && reads++ < 100) {
        aw_future *f = aw_stream_read(s, 100);
        void *b = NULL;

        rc = aw_loop_run_until_complete(loop, f);
        if (rc == 0) {
            aw_future_take_result(f, &b, NULL);
            ck_assert_msg(aw_bytes_len(b) > 0,
                          "a connection cut without close_notify read as a "
                          "clean end of file");
            aw_bytes_free(b);
        }
        aw_future_unref(f);
    }
    ck_assert_msg(rc == AW_ETLS_TRUNCATED, "got %s", aw_err_name(rc));
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(truncation_reported_to_connection_lost)
{
    static struct peer client;
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_transport *t;
    int i;

    memset(&client, 0, sizeof(client));
    memset(&server_peer, 0, sizeof(server_peer));
    srv = serve_proto(sctx, &server_peer);
    t = connect_proto(aw_server_port(srv), cctx, "localhost", &client);
    for (i = 0; i < 100 && !server_peer.made; i++)
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    run_until(&server_peer.made);
    /* The server's socket goes without a close_notify. */
    ck_assert_int_eq(aw_transport_abort(server_peer.t), 0);
    run_until(&client.lost);
    ck_assert_msg(client.lost_error == AW_ETLS_TRUNCATED, "got %s",
                  aw_err_name(client.lost_error));
    for (i = 0; i < client.nevents; i++)
        ck_assert_int_ne(client.events[i], EV_EOF);
    run_until(&server_peer.lost);
    aw_transport_unref(t);
    aw_transport_unref(client.t);
    aw_transport_unref(server_peer.t);
    aw_server_free(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(clean_close_reads_empty_at_eof)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_stream *s;

    send_text = "bye\n";
    srv = start(sctx, SEND_AND_CLOSE);
    s = dial(srv, cctx, "localhost");
    expect(aw_stream_readline(s), "bye\n");
    expect(aw_stream_read(s, 100), "");
    ck_assert_int_eq(aw_stream_at_eof(s), 1);
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- cancellation ------------------------------------------------------------------- */

struct dialer {
    int port;
    aw_tls_context *ctx;
    aw_stream *s;
    int rc;
};

static AW_TASK(dial_task, struct dialer *d)
{
    AW_BEGIN();
    AW_TRY_AWAIT(d->rc,
                 aw_open_connection_tls(aw_task_loop(AW_SELF()), "127.0.0.1",
                                        d->port, d->ctx, "localhost"),
                 NULL);
    AW_END();
}

START_TEST(cancel_task_mid_handshake)
{
    aw_tls_context *cctx = client_ctx();
    struct dialer d = {0, NULL, NULL, 1};
    int lfd = silent_listener(&d.port);
    volatile int never = 0;
    aw_future *f;
    aw_task *t;

    d.ctx = cctx;
    t = aw_task_new(loop, dial_task, &d, NULL);
    aw_test_run_until(loop, &never, 0.05); /* connected, ClientHello sent */
    ck_assert_int_eq(aw_future_done(t), 0);
    aw_future_cancel(t, NULL);
    aw_loop_run_until_complete(loop, t);
    ck_assert_int_eq(d.rc, AW_ECANCELLED);
    aw_future_unref(t);
    /* The future itself cancelled, at once and once under way. */
    f = aw_create_connection_tls(loop, "127.0.0.1", d.port, cctx, "localhost",
                                 &recorder, NULL);
    aw_future_cancel(f, NULL);
    aw_future_unref(f);
    f = aw_open_connection_tls(loop, "127.0.0.1", d.port, cctx, "localhost");
    aw_test_run_until(loop, &never, 0.05);
    aw_future_cancel(f, NULL);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_ECANCELLED);
    aw_future_unref(f);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    close(lfd);
    aw_tls_context_unref(cctx);
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
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv = start(sctx, SINK);
    struct reader r = {NULL, 1, NULL};
    volatile int never = 0;
    aw_task *t;

    r.s = dial(srv, cctx, "localhost");
    t = aw_task_new(loop, read_a_line, &r, NULL);
    aw_test_run_until(loop, &never, 0.02);
    aw_future_cancel(t, NULL);
    aw_loop_run_until_complete(loop, t);
    ck_assert_int_eq(r.rc, AW_ECANCELLED);
    aw_future_unref(t);
    /* The stream goes on. */
    ck_assert_int_eq(aw_stream_write(r.s, "x", 1), 0);
    ck_assert_int_eq(aw_stream_is_closing(r.s), 0);
    hang_up(r.s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- sessions ------------------------------------------------------------------------ */

START_TEST(session_resumed_on_reconnect)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_tls_context *nocache = client_ctx();
    aw_server *srv = start(sctx, ECHO);
    aw_stream *s;

    s = dial(srv, cctx, "localhost");
    echo_check(s, "first\n"); /* the ticket comes after the handshake */
    ck_assert_int_eq(aw_tls_session_reused(aw_stream_transport(s)), 0);
    hang_up(s);
    s = dial(srv, cctx, "localhost");
    echo_check(s, "second\n");
    ck_assert_int_eq(aw_tls_session_reused(aw_stream_transport(s)), 1);
    hang_up(s);
    /* Without the cache: a full handshake each time. */
    ck_assert_int_eq(aw_tls_context_set_session_cache(nocache, 0), 0);
    s = dial(srv, nocache, "localhost");
    echo_check(s, "third\n");
    hang_up(s);
    s = dial(srv, nocache, "localhost");
    echo_check(s, "fourth\n");
    ck_assert_int_eq(aw_tls_session_reused(aw_stream_transport(s)), 0);
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
    aw_tls_context_unref(nocache);
}
END_TEST

/* ---- many connections ---------------------------------------------------------------- */

struct echo_client {
    int port;
    aw_tls_context *ctx;
    aw_stream *s;
    int id;
    int ok;
    aw_bytes *line;
};

static AW_TASK(echo_client_task, struct echo_client *c)
{
    char msg[32];

    AW_BEGIN();
    AW_AWAIT_TAKE(aw_open_connection_tls(aw_task_loop(AW_SELF()), "127.0.0.1",
                                         c->port, c->ctx, "localhost"),
                  &c->s);
    snprintf(msg, sizeof(msg), "client %d\n", c->id);
    aw_stream_write(c->s, msg, strlen(msg));
    AW_AWAIT(aw_stream_readline(c->s), &c->line);
    snprintf(msg, sizeof(msg), "client %d\n", c->id);
    c->ok = strcmp(aw_bytes_cstr(c->line), msg) == 0;
    aw_stream_close(c->s);
    AW_AWAIT(aw_stream_wait_closed(c->s), NULL);
    AW_FINALLY();
    aw_stream_unref(c->s);
    c->s = NULL;
    AW_END();
}

START_TEST(thousand_concurrent_connections)
{
    int n = slow() ? 20 : 1000, i, ok = 0;
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    struct rlimit rl;
    aw_server *srv;
    aw_future **ts, *all;
    struct echo_client *c;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < 2 * n + 100)
        n = ((int)rl.rlim_cur - 100) / 2;
    if (strcmp(event_base_get_method(aw_loop_get_base(loop)), "select") == 0 &&
        n > (FD_SETSIZE - 100) / 2)
        n = (FD_SETSIZE - 100) / 2;
    ck_assert_int_gt(n, 0);
    /* A thousand handshakes at once on one thread: no timeout in the way. */
    ck_assert_int_eq(aw_tls_context_set_timeouts(sctx, 120, 0), 0);
    ck_assert_int_eq(aw_tls_context_set_timeouts(cctx, 120, 0), 0);
    srv = start_backlog(sctx, ECHO, 2048);
    ts = calloc((size_t)n, sizeof(*ts));
    c = calloc((size_t)n, sizeof(*c));
    for (i = 0; i < n; i++) {
        c[i].port = aw_server_port(srv);
        c[i].ctx = cctx;
        c[i].id = i;
        ts[i] = aw_task_new(loop, echo_client_task, &c[i], NULL);
    }
    all = aw_gather(loop, (size_t)n, ts, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, all), 0);
    aw_future_unref(all);
    for (i = 0; i < n; i++)
        ok += c[i].ok;
    ck_assert_int_eq(ok, n);
    ck_assert_int_eq(seen.clients, n);
    free(ts);
    free(c);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- what was negotiated ------------------------------------------------------------ */

static unsigned char *
pem_to_der(const char *pem, size_t len, int *der_len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    unsigned char *der = NULL;

    ck_assert_ptr_nonnull(x);
    *der_len = i2d_X509(x, &der);
    ck_assert_int_gt(*der_len, 0);
    X509_free(x);
    BIO_free(b);
    return der;
}

START_TEST(negotiated_version_cipher_and_peer_certificate)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv = start(sctx, ECHO);
    aw_stream *s = dial(srv, cctx, "localhost");
    aw_transport *t = aw_stream_transport(s);
    unsigned char *want, *got;
    int want_len, n;
    char small[4] = "xyz", buf[256];

    ck_assert_ptr_nonnull(aw_tls_version(t));
    ck_assert_str_eq(aw_tls_version(t), "TLSv1.3");
    ck_assert_int_eq(aw_tls_version_number(t), AW_TLS_1_3);
    ck_assert_ptr_nonnull(aw_tls_cipher(t));
    ck_assert_str_ne(aw_tls_cipher(t), "");
    ck_assert_ptr_nonnull(aw_tls_native(t));
    ck_assert_str_eq(aw_tls_server_name(t), "localhost");
    ck_assert_int_eq(aw_tls_peer_verified(t), 1);
    ck_assert_ptr_null(aw_tls_error_message(t));
    /* The certificate in DER: its size first, then a copy. */
    want = pem_to_der(leaf.cert, leaf.cert_len, &want_len);
    n = aw_tls_peer_certificate_der(t, NULL, 0);
    ck_assert_int_eq(n, want_len);
    got = malloc((size_t)n);
    ck_assert_int_eq(aw_tls_peer_certificate_der(t, got, 1), n);
    ck_assert_int_eq(aw_tls_peer_certificate_der(t, got, (size_t)n), n);
    ck_assert_int_eq(memcmp(got, want, (size_t)n), 0);
    free(got);
    OPENSSL_free(want);
    /* Names, and one that does not fit. */
    ck_assert_int_eq(aw_tls_peer_subject(t, buf, sizeof(buf)),
                     (int)strlen("CN=localhost"));
    ck_assert_str_eq(buf, "CN=localhost");
    ck_assert_int_eq(aw_tls_peer_subject(t, small, sizeof(small)), -ENOSPC);
    ck_assert_str_eq(small, "");
    ck_assert_int_eq(aw_tls_peer_subject(t, NULL, 10), -EINVAL);
    /* The server had no client certificate. */
    wait_seen();
    ck_assert_int_eq(seen.clients, 1);
    ck_assert_int_eq(seen.verified, 0);
    ck_assert_int_eq(seen.subject_rc, -ENOENT);
    echo_check(s, "info\n");
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(cctx);
    /* TLS 1.2 when the client asks for no more. */
    cctx = client_ctx();
    ck_assert_int_eq(aw_tls_context_set_max_version(cctx, AW_TLS_1_2), 0);
    srv = start(sctx, ECHO);
    s = dial(srv, cctx, "localhost");
    ck_assert_str_eq(aw_tls_version(aw_stream_transport(s)), "TLSv1.2");
    ck_assert_int_eq(aw_tls_version_number(aw_stream_transport(s)),
                     AW_TLS_1_2);
    echo_check(s, "twelve\n");
    hang_up(s);
    stop(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(plain_transport_is_not_tls)
{
    aw_future *f;
    void *srv = NULL, *s = NULL;
    aw_transport *t;
    char buf[64];
    unsigned char der[16];

    reset_server_state(ECHO);
    f = aw_start_server(loop, "127.0.0.1", 0, on_client, NULL, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    f = aw_open_connection(loop, "127.0.0.1", aw_server_port(srv));
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    t = aw_stream_transport(s);
    ck_assert_int_eq(aw_tls_is_tls(t), 0);
    ck_assert_ptr_null(aw_tls_version(t));
    ck_assert_int_eq(aw_tls_version_number(t), 0);
    ck_assert_ptr_null(aw_tls_cipher(t));
    ck_assert_ptr_null(aw_tls_alpn(t));
    ck_assert_ptr_null(aw_tls_native(t));
    ck_assert_int_eq(aw_tls_session_reused(t), 0);
    ck_assert_int_eq(aw_tls_peer_verified(t), 0);
    ck_assert_int_lt(aw_tls_peer_subject(t, buf, sizeof(buf)), 0);
    ck_assert_int_lt(aw_tls_peer_certificate_der(t, der, sizeof(der)), 0);
    ck_assert_int_eq(aw_tls_is_tls(NULL), 0);
    ck_assert_ptr_null(aw_tls_version(NULL));
    echo_check(s, "plain\n");
    hang_up(s);
    stop(srv);
}
END_TEST

/* ---- flow control ------------------------------------------------------------------- */

START_TEST(write_buffer_limits_pause_writing)
{
    static struct peer client;
    static char chunk[1 << 16];
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    aw_server *srv;
    aw_transport *t;
    size_t written = 0;

    memset(&client, 0, sizeof(client));
    memset(&server_peer, 0, sizeof(server_peer));
    server_peer.pause_reading = 1; /* the server reads nothing for now */
    srv = serve_proto(sctx, &server_peer);
    t = connect_proto(aw_server_port(srv), cctx, "localhost", &client);
    ck_assert_int_eq(aw_transport_set_write_buffer_limits(t, 8192, 2048), 0);
    ck_assert_int_eq(aw_transport_set_write_buffer_limits(t, 10, 20), -EINVAL);
    while (!client.paused && written < ((size_t)256 << 20)) {
        ck_assert_int_eq(aw_transport_write(t, chunk, sizeof(chunk)), 0);
        written += sizeof(chunk);
        aw_loop_run_once(loop, AW_RUN_NOWAIT);
    }
    ck_assert_int_eq(client.paused, 1);
    ck_assert_uint_gt(aw_transport_write_buffer_size(t), 8192);
    run_until(&server_peer.made);
    ck_assert_int_eq(aw_transport_resume_reading(server_peer.t), 0);
    run_until(&client.resumed);
    ck_assert_uint_le(aw_transport_write_buffer_size(t), 2048);
    while (server_peer.len < written && !server_peer.lost) {
        volatile int never = 0;

        aw_test_run_until(loop, &never, 0.01);
    }
    ck_assert_uint_eq(server_peer.len, written);
    aw_transport_close(t);
    run_until(&client.lost);
    run_until(&server_peer.lost);
    ck_assert_int_eq(client.lost_error, 0);
    aw_transport_unref(t);
    aw_transport_unref(client.t);
    aw_transport_unref(server_peer.t);
    aw_server_free(srv);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- contexts: bad input ------------------------------------------------------------- */

START_TEST(context_misuse_is_einval)
{
    static const char *const empty[] = {""};
    aw_tls_context *sctx = aw_tls_context_new(AW_TLS_SERVER);
    aw_tls_context *cctx = aw_tls_context_new(AW_TLS_CLIENT);
    static struct peer p;
    aw_future *f;

    errno = 0;
    ck_assert_ptr_null(aw_tls_context_new(7));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(aw_tls_context_side(sctx), AW_TLS_SERVER);
    ck_assert_int_eq(aw_tls_context_side(cctx), AW_TLS_CLIENT);
    ck_assert_int_eq(aw_tls_context_get_verify(sctx), AW_TLS_VERIFY_NONE);
    aw_tls_context_unref(NULL);
    /* NULL contexts and bad arguments. */
    ck_assert_int_eq(aw_tls_context_load_cert_chain(NULL, "x", NULL), -EINVAL);
    ck_assert_int_eq(aw_tls_context_load_cert_chain(sctx, NULL, NULL), -EINVAL);
    ck_assert_int_eq(aw_tls_context_load_cert_chain_mem(NULL, leaf.cert,
                                                        leaf.cert_len, leaf.key,
                                                        leaf.key_len),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_load_verify_mem(NULL, ca.cert, ca.cert_len),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_load_verify_locations(cctx, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_verify(NULL, AW_TLS_VERIFY_NONE),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_verify(cctx, 3), -EINVAL);
    ck_assert_int_eq(aw_tls_context_get_verify(cctx), AW_TLS_VERIFY_REQUIRED);
    ck_assert_int_eq(aw_tls_context_set_min_version(cctx, 0x0301), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_max_version(cctx, AW_TLS_1_2), 0);
    ck_assert_int_eq(aw_tls_context_set_min_version(cctx, AW_TLS_1_3),
                     -EINVAL); /* min > max */
    ck_assert_int_eq(aw_tls_context_set_ciphers(cctx, "NO-SUCH-CIPHER"),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_ciphersuites(cctx, "TLS_NOTHING"),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_alpn(cctx, empty, 1), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_alpn(cctx, NULL, 1), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_alpn(cctx, NULL, 0), 0);
    ck_assert_int_eq(aw_tls_context_set_timeouts(cctx, NAN, 0), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_timeouts(cctx, -1, 0), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_timeouts(cctx, 0, -1), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_timeouts(NULL, 1, 1), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_session_cache(NULL, 1), -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_sni_callback(NULL, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_tls_context_set_keylog_file(NULL, NULL), -EINVAL);
    ck_assert_ptr_null(aw_tls_context_native(NULL));
    ck_assert_ptr_nonnull(aw_tls_context_native(cctx));
    /* Host name checks need verification (as in Python). */
    ck_assert_int_eq(aw_tls_context_set_check_hostname(cctx, 0), 0);
    ck_assert_int_eq(aw_tls_context_set_verify(cctx, AW_TLS_VERIFY_NONE), 0);
    ck_assert_int_eq(aw_tls_context_set_check_hostname(cctx, 1), -EINVAL);
    /* Files: a missing one is -ENOENT. */
    ck_assert_int_eq(aw_tls_context_load_cert_chain(sctx, "/nonexistent/c.pem",
                                                    "/nonexistent/k.pem"),
                     -ENOENT);
    ck_assert_int_eq(aw_tls_context_load_verify_locations(
                         cctx, "/nonexistent/ca.pem", NULL),
                     -ENOENT);
    ck_assert_int_eq(aw_tls_context_set_keylog_file(cctx, "/nonexistent/kl"),
                     -ENOENT);
    /* PEM that is not, and a key that does not match: OpenSSL's reason. */
    ck_assert_int_eq(aw_tls_context_load_verify_mem(cctx, "junk", 4), -EINVAL);
    ck_assert_int_eq(aw_tls_context_load_cert_chain_mem(
                         sctx, leaf.cert, leaf.cert_len, other_leaf.key,
                         other_leaf.key_len),
                     -EINVAL);
    ck_assert_ptr_nonnull(aw_tls_context_error(sctx));
    ck_assert_str_ne(aw_tls_context_error(sctx), "");
    /* A server context without a certificate (still none after the
     * failure), and contexts of the wrong side. */
    f = aw_create_server_tls(loop, "127.0.0.1", 0, sctx, &recorder, &p, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    f = aw_create_server_tls(loop, "127.0.0.1", 0, cctx, &recorder, &p, 0, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    f = aw_create_connection_tls(loop, "127.0.0.1", 9, sctx, "localhost",
                                 &recorder, &p);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    f = aw_create_connection_tls(loop, "127.0.0.1", 9, NULL, "localhost",
                                 &recorder, &p);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    f = aw_start_tls(NULL, cctx, "localhost", &recorder, &p);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    f = aw_stream_start_tls(NULL, cctx, "localhost");
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    /* The right pair still loads. */
    ck_assert_int_eq(aw_tls_context_load_cert_chain_mem(
                         sctx, leaf.cert, leaf.cert_len, leaf.key,
                         leaf.key_len),
                     0);
    ck_assert_int_eq(p.made, 0);
    ck_assert_ptr_eq(aw_tls_context_ref(sctx), sctx);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
    ck_assert_int_eq(aw_tls_is_verify_error(AW_ETLS_HANDSHAKE), 0);
    ck_assert_int_eq(aw_tls_is_verify_error(AW_ETLS_VERIFY), 1);
    ck_assert_int_eq(aw_tls_is_verify_error(AW_ETLS_TRUNCATED), 0);
    ck_assert_str_ne(aw_strerror(AW_ETLS_TRUNCATED), "unknown error");
    ck_assert_str_eq(aw_err_name(AW_ETLS_TRUNCATED), "AW_ETLS_TRUNCATED");
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
}
END_TEST

/* ---- files: certificates from disk, the key log ---------------------------------- */

static char tmpdir[64];

static void
make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/awtls-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *
tmp_path(const char *name)
{
    static char paths[4][128];
    static int next;
    char *p = paths[next++ % 4];

    snprintf(p, 128, "%s/%s", tmpdir, name);
    return p;
}

static void
remove_tmpdir(void)
{
    static const char *const names[] = {"ca.pem",  "leaf.pem", "leaf.key",
                                        "keylog", NULL};
    int i;

    for (i = 0; names[i] != NULL; i++)
        unlink(tmp_path(names[i]));
    rmdir(tmpdir);
}

static void
write_files(void)
{
    ck_assert_int_eq(certgen_write(&ca, tmp_path("ca.pem"), NULL), 0);
    ck_assert_int_eq(certgen_write(&leaf, tmp_path("leaf.pem"),
                                   tmp_path("leaf.key")),
                     0);
}

START_TEST(files_loaded_and_keylog_written)
{
    aw_tls_context *sctx = aw_tls_context_new(AW_TLS_SERVER);
    aw_tls_context *cctx = aw_tls_context_new(AW_TLS_CLIENT);
    aw_server *srv;
    aw_stream *s;
    struct stat st;
    char text[8192];
    ssize_t n;
    int fd;

    make_tmpdir();
    write_files();
    ck_assert_int_eq(aw_tls_context_load_cert_chain(sctx, tmp_path("leaf.pem"),
                                                    tmp_path("leaf.key")),
                     0);
    ck_assert_int_eq(aw_tls_context_load_verify_locations(
                         cctx, tmp_path("ca.pem"), NULL),
                     0);
    ck_assert_int_eq(aw_tls_context_set_keylog_file(cctx, tmp_path("keylog")),
                     0);
    ck_assert_int_eq(stat(tmp_path("keylog"), &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    srv = start(sctx, ECHO);
    s = dial(srv, cctx, "localhost");
    echo_check(s, "logged\n");
    hang_up(s);
    stop(srv);
    ck_assert_int_eq(aw_tls_context_set_keylog_file(cctx, NULL), 0);
    fd = open(tmp_path("keylog"), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    n = read(fd, text, sizeof(text) - 1);
    close(fd);
    ck_assert_int_gt(n, 0);
    text[n] = '\0';
    ck_assert_msg(strstr(text, "CLIENT_HANDSHAKE_TRAFFIC_SECRET ") != NULL ||
                      strstr(text, "CLIENT_RANDOM ") != NULL,
                  "key log: %s", text);
    /* $SSLKEYLOGFILE unset: nothing. */
    unsetenv("SSLKEYLOGFILE");
    ck_assert_int_eq(aw_tls_context_keylog_from_env(cctx), 0);
    remove_tmpdir();
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
}
END_TEST

/* ---- interop with the openssl tool --------------------------------------------------- */

static int
have_openssl(void)
{
    const char *path = getenv("PATH");
    char dir[512];
    const char *p = path ? path : "/usr/bin:/bin";

    while (*p != '\0') {
        size_t len = strcspn(p, ":");

        snprintf(dir, sizeof(dir), "%.*s/openssl", (int)len, p);
        if (access(dir, X_OK) == 0)
            return 1;
        p += len;
        if (*p == ':')
            p++;
    }
    printf("# skip: no openssl binary in PATH\n");
    return 0;
}

/* fork and exec argv with its stdin and stdout on pipes, stderr to
 * /dev/null. */
static pid_t
spawn(char *const argv[], int *to_child, int *from_child)
{
    int in[2], out[2];
    pid_t pid;

    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        dup2(in[0], 0);
        dup2(out[1], 1);
        if (null >= 0)
            dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *to_child = in[1];
    *from_child = out[0];
    return pid;
}

/* One line of the child's output (blocking, 10 s at most): its length,
 * 0 at the end. */
static size_t
read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    struct pollfd pfd = {fd, POLLIN, 0};

    while (n + 1 < len && poll(&pfd, 1, 10000) == 1) {
        if (read(fd, buf + n, 1) != 1)
            break;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return n;
}

/* Run the loop until the child exits (10 s at most, then kill it). */
static int
reap(pid_t pid)
{
    double deadline = aw_loop_time(loop) + 10;
    int status = -1;

    while (waitpid(pid, &status, WNOHANG) == 0) {
        volatile int never = 0;

        if (aw_loop_time(loop) > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        aw_test_run_until(loop, &never, 0.01);
    }
    return status;
}

START_TEST(interop_client_with_openssl_s_server)
{
    char *argv[] = {"openssl", "-", "-accept", "127.0.0.1:0", "-cert", NULL,
                    "-key",    NULL, "-rev", "-naccept", "1", NULL};
    aw_tls_context *cctx;
    char line[256], *colon;
    int to, from, port = 0;
    aw_future *f;
    void *s = NULL;
    pid_t pid;

    if (!have_openssl())
        return;
    make_tmpdir();
    write_files();
    argv[1] = "s_server";
    argv[5] = (char *)tmp_path("leaf.pem");
    argv[7] = (char *)tmp_path("leaf.key");
    pid = spawn(argv, &to, &from);
    while (read_line(from, line, sizeof(line)) > 0) {
        if (strncmp(line, "ACCEPT", 6) == 0 &&
            (colon = strrchr(line, ':')) != NULL) {
            port = atoi(colon + 1);
            break;
        }
    }
    ck_assert_int_gt(port, 0);
    cctx = client_ctx();
    f = aw_open_connection_tls(loop, "127.0.0.1", port, cctx, "localhost");
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    ck_assert_int_eq(aw_tls_peer_verified(aw_stream_transport(s)), 1);
    ck_assert_int_eq(aw_stream_write(s, "hello\n", 6), 0);
    expect(aw_stream_readline(s), "olleh\n"); /* -rev: reversed */
    ck_assert_int_eq(aw_stream_write(s, "interop\n", 8), 0);
    expect(aw_stream_readline(s), "poretni\n");
    hang_up(s);
    close(to);
    reap(pid);
    close(from);
    remove_tmpdir();
    aw_tls_context_unref(cctx);
}
END_TEST

START_TEST(interop_server_with_openssl_s_client)
{
    char port_arg[32];
    char *argv[] = {"openssl", "s_client", "-connect", port_arg, "-CAfile",
                    NULL, "-verify_return_error", "-verify_hostname",
                    "localhost", "-servername", "localhost", "-quiet", NULL};
    aw_tls_context *sctx = server_ctx(&leaf);
    aw_server *srv;
    char out[4096];
    size_t n = 0;
    ssize_t r;
    int to, from, status;
    pid_t pid;

    if (!have_openssl()) {
        aw_tls_context_unref(sctx);
        return;
    }
    make_tmpdir();
    write_files();
    srv = start(sctx, ECHO_LINE);
    snprintf(port_arg, sizeof(port_arg), "127.0.0.1:%d", aw_server_port(srv));
    argv[5] = (char *)tmp_path("ca.pem");
    pid = spawn(argv, &to, &from);
    ck_assert_int_eq(write(to, "hello interop\n", 14), 14);
    close(to);
    ck_assert_int_eq(aw_test_run_until(loop, &handlers_done, 10), 1);
    status = reap(pid); /* the server closed: s_client ends */
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "s_client status %d", status);
    while (n + 1 < sizeof(out) && (r = read(from, out + n, sizeof(out) - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(from);
    ck_assert_msg(strstr(out, "hello interop\n") != NULL, "s_client said: %s",
                  out);
    ck_assert_int_eq(seen.clients, 1);
    stop(srv);
    remove_tmpdir();
    aw_tls_context_unref(sctx);
}
END_TEST

/* ---- one context, several loops in several threads ---------------------------------- */

/* A context is shared by loops in threads (its reference count, session
 * cache and key log are the shared parts): two threads, each with its
 * own loop, server and clients, on the same server and client contexts.
 * check-tsan runs this case under ThreadSanitizer. */
#define TL_THREADS 2
#define TL_CONNS 12

struct tl_arg {
    aw_tls_context *sctx, *cctx;
    int port;
    int ok, reused;
    aw_stream *s;
    aw_bytes *line;
    int rc;
};

static AW_TASK(tl_echo_task, aw_stream *s)
{
    aw_bytes *line = NULL;

    AW_BEGIN();
    AW_AWAIT_TAKE(aw_stream_readline(s), &line);
    aw_stream_write(s, aw_bytes_data(line), aw_bytes_len(line));
    aw_bytes_free(line);
    AW_AWAIT(aw_stream_drain(s), NULL);
    AW_FINALLY();
    aw_stream_close(s);
    AW_END();
}

static void
tl_unref_stream(void *p)
{
    aw_stream_unref(p);
}

static void
tl_on_client(aw_stream *s, void *arg)
{
    aw_future_unref(aw_task_new(arg, tl_echo_task, s, tl_unref_stream));
}

static AW_TASK(tl_client_task, struct tl_arg *a)
{
    AW_BEGIN();
    AW_TRY_AWAIT(a->rc,
                 aw_open_connection_tls(aw_task_loop(AW_SELF()), "127.0.0.1",
                                        a->port, a->cctx, "localhost"),
                 NULL);
    if (a->rc != 0 ||
        aw_future_take_result(AW_AWAITED(), (void **)&a->s, NULL) != 0)
        AW_RETURN_INT(0);
    aw_stream_write(a->s, "ping\n", 5);
    AW_TRY_AWAIT(a->rc, aw_stream_readline(a->s), &a->line);
    if (a->rc == 0 && aw_bytes_len(a->line) == 5 &&
        memcmp(aw_bytes_data(a->line), "ping\n", 5) == 0)
        a->ok++;
    a->reused += aw_tls_session_reused(aw_stream_transport(a->s));
    aw_stream_close(a->s);
    AW_TRY_AWAIT(a->rc, aw_stream_wait_closed(a->s), NULL);
    AW_FINALLY();
    aw_stream_unref(a->s);
    a->s = NULL;
    AW_END();
}

static void *
tl_thread(void *p)
{
    struct tl_arg *a = p;
    aw_loop *l = NULL;
    aw_future *f;
    void *srv = NULL;
    int i;

    if (aw_loop_new(&l) != 0)
        return NULL;
    f = aw_start_server_tls(l, "127.0.0.1", 0, a->sctx, tl_on_client, l, 0,
                            0);
    if (aw_loop_run_until_complete(l, f) == 0)
        aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    if (srv != NULL) {
        a->port = aw_server_port(srv);
        for (i = 0; i < TL_CONNS; i++) {
            f = aw_task_new(l, tl_client_task, a, NULL);
            aw_loop_run_until_complete(l, f);
            aw_future_unref(f);
        }
        aw_server_close(srv);
        f = aw_server_wait_closed(srv);
        aw_loop_run_until_complete(l, f);
        aw_future_unref(f);
        while (aw_all_tasks(l, NULL, 0) > 0)
            aw_loop_run_once(l, 0);
        aw_server_free(srv);
    }
    aw_loop_run_once(l, AW_RUN_NOWAIT);
    aw_loop_free(l);
    return NULL;
}

START_TEST(context_shared_by_loops_in_threads)
{
    aw_tls_context *sctx = server_ctx(&leaf), *cctx = client_ctx();
    struct tl_arg a[TL_THREADS];
    pthread_t th[TL_THREADS];
    struct stat st;
    int i;

    make_tmpdir();
    ck_assert_int_eq(aw_tls_context_set_keylog_file(cctx, tmp_path("keylog")),
                     0);
    memset(a, 0, sizeof(a));
    for (i = 0; i < TL_THREADS; i++) {
        a[i].sctx = sctx;
        a[i].cctx = cctx;
        ck_assert_int_eq(pthread_create(&th[i], NULL, tl_thread, &a[i]), 0);
    }
    for (i = 0; i < TL_THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(a[i].ok, TL_CONNS);
        /* Each thread's server is its own: after its first connection,
         * the client resumes the session the cache kept for it. */
        ck_assert_int_ge(a[i].reused, TL_CONNS - 1);
    }
    aw_tls_context_unref(cctx); /* the key log closes */
    ck_assert_int_eq(stat(tmp_path("keylog"), &st), 0);
    ck_assert_int_gt(st.st_size, 0);
    remove_tmpdir();
    aw_tls_context_unref(sctx);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = aw_test_tcase("tls");

    make_certs();
    tcase_add_test(tc, round_trip_streams_over_tcp);
    tcase_add_test(tc, round_trip_transport_with_protocol);
    tcase_add_test(tc, round_trip_over_unix_socket);
    tcase_add_test(tc, big_transfer_intact);
    tcase_add_test(tc, slow_reader_keeps_memory_bounded);
    tcase_add_test(tc, verify_unknown_ca_refused);
    tcase_add_test(tc, verify_wrong_hostname_refused);
    tcase_add_test(tc, verify_expired_refused);
    tcase_add_test(tc, verify_self_signed_refused_by_default);
    tcase_add_test(tc, self_signed_accepted_when_trusted);
    tcase_add_test(tc, self_signed_accepted_with_verify_none);
    tcase_add_test(tc, client_certificate_required_and_missing);
    tcase_add_test(tc, client_certificate_required_and_present);
    tcase_add_test(tc, alpn_negotiated);
    tcase_add_test(tc, alpn_mismatch_goes_on_without);
    tcase_add_test(tc, sni_callback_picks_certificate);
    tcase_add_test(tc, stream_start_tls_mid_stream);
    tcase_add_test(tc, drain_during_start_tls_settles_after_it);
    tcase_add_test(tc, start_tls_takes_what_the_stream_buffered);
    tcase_add_loop_test(tc, start_tls_fails_on_plain_text, 0, 3);
    tcase_add_test(tc, start_tls_refused_after_end_of_file);
    tcase_add_test(tc, start_tls_failing_at_once_loses_the_stream);
    tcase_add_test(tc, start_tls_on_transport);
    tcase_add_test(tc, handshake_timeout_against_silent_server);
    tcase_add_test(tc, handshake_timeout_against_silent_client);
    tcase_add_test(tc, garbage_instead_of_client_hello_closed_quietly);
    tcase_add_test(tc, garbage_instead_of_server_hello_fails_handshake);
    tcase_add_test(tc, truncation_without_close_notify_is_not_eof);
    tcase_add_test(tc, truncation_reported_to_connection_lost);
    tcase_add_test(tc, clean_close_reads_empty_at_eof);
    tcase_add_test(tc, cancel_task_mid_handshake);
    tcase_add_test(tc, cancel_task_mid_read);
    tcase_add_test(tc, session_resumed_on_reconnect);
    tcase_add_test(tc, thousand_concurrent_connections);
    tcase_add_test(tc, negotiated_version_cipher_and_peer_certificate);
    tcase_add_test(tc, plain_transport_is_not_tls);
    tcase_add_test(tc, write_buffer_limits_pause_writing);
    tcase_add_test(tc, context_misuse_is_einval);
    tcase_add_test(tc, files_loaded_and_keylog_written);
    tcase_add_test(tc, interop_client_with_openssl_s_server);
    tcase_add_test(tc, interop_server_with_openssl_s_client);
    suite_add_tcase(s, tc);
    tc = aw_test_tcase("threads"); /* check-tsan runs this one */
    tcase_add_test(tc, context_shared_by_loops_in_threads);
    suite_add_tcase(s, tc);
    return s;
}

/* SPDX-License-Identifier: MIT */
/* awdemo.c: a short guided run of libawait, printing what happens: the
 * loop's callbacks, timers, a reader on a pipe and a signal; futures with
 * then/catch/finally, gather and wait_for; tasks in parallel, a task group
 * with a failing child, a timeout, and the dump of pending tasks; an echo
 * server and its clients over loopback; the same over TLS, with a
 * certificate the demo makes (tools/certgen.c) and a client that
 * verifies it; blocking work (a file hashed) first on the loop, then with
 * aw_to_thread, while a timer ticks. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <await.h>

#include "certgen.h"

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

/* ---- futures ------------------------------------------------------------- */

static aw_loop *demo;

static int
resolve_cb(aw_loop *loop, void *arg)
{
    (void)loop;
    aw_future_set_result_int(arg, 7);
    aw_future_unref(arg);
    return 0;
}

/* A future resolved with 7 by a timer after `delay` seconds. */
static aw_future *
seven_after(double delay)
{
    aw_future *f = aw_future_new(demo);

    aw_loop_call_later(demo, delay, resolve_cb, aw_future_ref(f), NULL);
    return f;
}

static aw_future *
step_fail(aw_future *settled, void *arg)
{
    intptr_t v = 0;
    char line[96];

    (void)arg;
    aw_future_result_int(settled, &v);
    snprintf(line, sizeof(line), "then: got %ld, failing with EPROTO",
             (long)v);
    say(demo, line);
    return aw_future_failed(demo, -EPROTO, "bad reply");
}

static aw_future *
step_skipped(aw_future *settled, void *arg)
{
    (void)settled;
    (void)arg;
    say(demo, "then: never printed, the error skips this step");
    return aw_future_resolved_int(demo, 0);
}

static aw_future *
step_recover(aw_future *settled, void *arg)
{
    char line[96];

    (void)arg;
    snprintf(line, sizeof(line), "catch: %s (%s), recovering with 42",
             aw_err_name(aw_future_error(settled)),
             aw_future_message(settled));
    say(demo, line);
    return aw_future_resolved_int(demo, 42);
}

static int
step_finally(aw_future *settled, void *arg)
{
    intptr_t v = 0;
    char line[96];

    (void)arg;
    aw_future_result_int(settled, &v);
    snprintf(line, sizeof(line), "finally: the chain ends with %ld",
             (long)v);
    say(demo, line);
    return 0;
}

static int
demo_futures(void)
{
    aw_future *c, *in[3], *g, *slow, *w;
    aw_future *const *out;
    char line[96];
    size_t i, n = 0;
    int rc;

    printf("== Futures\n");
    if ((rc = aw_loop_new(&demo)) != 0)
        return 1;
    t0 = aw_loop_time(demo);
    c = aw_then(seven_after(0.010), step_fail, NULL);
    c = aw_then(c, step_skipped, NULL);
    c = aw_catch(c, step_recover, NULL);
    c = aw_finally(c, step_finally, NULL);
    aw_loop_run_until_complete(demo, c);
    aw_future_unref(c);

    for (i = 0; i < 3; i++)
        in[i] = seven_after(0.030 - 0.010 * (double)i);
    g = aw_gather(demo, 3, in, 0);
    say(demo, "gather: three timers of 30, 20 and 10 ms");
    aw_loop_run_until_complete(demo, g);
    aw_future_result(g, NULL);
    out = aw_combinator_inputs(g, &n);
    for (i = 0; i < n; i++) {
        intptr_t v = 0;

        aw_future_result_int(out[i], &v);
        snprintf(line, sizeof(line), "gather: result %zu = %ld (in the "
                 "order given)", i, (long)v);
        say(demo, line);
    }
    aw_future_unref(g);

    slow = seven_after(0.200);
    w = aw_wait_for(aw_future_ref(slow), 0.050);
    say(demo, "wait_for: a 200 ms future, 50 ms timeout");
    rc = aw_loop_run_until_complete(demo, w);
    snprintf(line, sizeof(line), "wait_for: %s; the inner future is %s",
             aw_err_name(rc),
             aw_future_cancelled(slow) ? "cancelled" : "not cancelled");
    say(demo, line);
    aw_future_unref(w);
    aw_future_unref(slow);
    /* Let the 200 ms timer fire: it holds the inner future until then. */
    c = aw_sleep(demo, 0.2);
    aw_loop_run_until_complete(demo, c);
    aw_future_unref(c);
    rc = aw_loop_free(demo);
    printf("  loop closed: %s\n", rc == 0 ? "cleanly" : aw_strerror(rc));
    return rc == 0 ? 0 : 1;
}

/* ---- tasks ------------------------------------------------------------------ */

struct nap {
    double seconds;
    int code; /* fail with it after the nap */
    int rc;
    aw_timeout *to;
    aw_task_group *g;
};

static AW_TASK(napper, struct nap *n)
{
    char line[96];

    AW_BEGIN();
    AW_AWAIT(aw_sleep(aw_task_loop(AW_SELF()), n->seconds), NULL);
    if (n->code != 0)
        AW_RAISE(n->code, "failed after %.0f ms", n->seconds * 1e3);
    snprintf(line, sizeof(line), "%s: woke after %.0f ms",
             aw_task_name(AW_SELF()), n->seconds * 1e3);
    say(aw_task_loop(AW_SELF()), line);
    AW_FINALLY();
    if (aw_future_cancelled(AW_AWAITED())) {
        snprintf(line, sizeof(line), "%s: cancelled, cleaning up",
                 aw_task_name(AW_SELF()));
        say(aw_task_loop(AW_SELF()), line);
    }
    AW_END();
}

static struct nap *
nap(double seconds, int code)
{
    struct nap *n = calloc(1, sizeof(*n));

    n->seconds = seconds;
    n->code = code;
    return n;
}

static AW_TASK(supervisor, struct nap *s)
{
    char line[128];

    AW_BEGIN();
    s->g = aw_task_group_new(aw_task_loop(AW_SELF()), AW_SELF());
    aw_task_group_spawn(s->g, napper, nap(0.010, 0), free, NULL);
    aw_task_group_spawn(s->g, napper, nap(0.020, -ECONNRESET), free, NULL);
    aw_task_group_spawn(s->g, napper, nap(0.500, 0), free, NULL);
    AW_TRY_AWAIT(s->rc, aw_task_group_wait(s->g), NULL);
    snprintf(line, sizeof(line), "group: ended with %s: %s",
             aw_err_name(s->rc), aw_future_message(AW_AWAITED()));
    say(aw_task_loop(AW_SELF()), line);

    s->to = aw_timeout_enter(AW_SELF(), 0.030);
    AW_TRY_AWAIT(s->rc, aw_sleep(aw_task_loop(AW_SELF()), 1.0), NULL);
    snprintf(line, sizeof(line), "timeout: a 1 s sleep under a 30 ms "
             "timeout gave %s", aw_err_name(s->rc));
    say(aw_task_loop(AW_SELF()), line);
    aw_timeout_exit(s->to);
    AW_FINALLY();
    aw_task_group_free(s->g);
    AW_END();
}

static int
demo_tasks(void)
{
    aw_task *t[3], *sup, *stuck;
    aw_future *all;
    double start;
    char line[96];
    int i, rc;

    printf("== Tasks\n");
    if ((rc = aw_loop_new(&demo)) != 0)
        return 1;
    t0 = start = aw_loop_time(demo);
    for (i = 0; i < 3; i++) {
        t[i] = aw_task_new(demo, napper, nap(0.010 * (i + 1), 0), free);
        snprintf(line, sizeof(line), "sleeper-%d", i + 1);
        aw_task_set_name(t[i], line);
    }
    all = aw_gather(demo, 3, t, 0);
    aw_loop_run_until_complete(demo, all);
    snprintf(line, sizeof(line), "three tasks sleeping 10, 20, 30 ms took "
             "%.0f ms together", (aw_loop_time(demo) - start) * 1e3);
    say(demo, line);
    aw_future_unref(all);

    sup = aw_task_new(demo, supervisor, nap(0, 0), free);
    aw_task_set_name(sup, "supervisor");
    aw_loop_run_until_complete(demo, sup);
    aw_future_unref(sup);

    stuck = aw_task_new(demo, napper, nap(3600, 0), free);
    aw_task_set_name(stuck, "hour-long-nap");
    aw_loop_run_once(demo, AW_RUN_NOWAIT);
    say(demo, "dump of the pending tasks:");
    aw_task_dump(demo, stdout);
    aw_future_cancel(stuck, NULL);
    aw_loop_run_until_complete(demo, stuck);
    aw_future_unref(stuck);
    rc = aw_loop_free(demo);
    printf("  loop closed: %s\n", rc == 0 ? "cleanly" : aw_strerror(rc));
    return rc == 0 ? 0 : 1;
}

/* ---- networking --------------------------------------------------------------- */

struct conn {
    aw_stream *s;
    aw_bytes *line;
    int id;
};

static void
conn_free(void *p)
{
    struct conn *c = p;

    aw_stream_unref(c->s);
    free(c);
}

/* The server side: one task per client, echoing lines in upper case. */
static AW_TASK(shout_back, struct conn *c)
{
    char out[128];
    size_t i, n;

    AW_BEGIN();
    for (;;) {
        AW_AWAIT(aw_stream_readline(c->s), &c->line);
        if (aw_bytes_len(c->line) == 0)
            break; /* the client is gone */
        n = aw_bytes_len(c->line) < sizeof(out) ? aw_bytes_len(c->line)
                                                : sizeof(out);
        for (i = 0; i < n; i++)
            out[i] = (char)toupper((unsigned char)aw_bytes_data(c->line)[i]);
        aw_stream_write(c->s, out, n);
        AW_AWAIT(aw_stream_drain(c->s), NULL);
    }
    AW_FINALLY();
    aw_stream_close(c->s);
    AW_END();
}

static void
on_client(aw_stream *s, void *arg)
{
    struct conn *c = calloc(1, sizeof(*c));

    c->s = s;
    aw_future_unref(aw_task_new(arg, shout_back, c, conn_free));
}

/* A client: connect, say a line, print the answer. */
struct client {
    int port, id;
    aw_stream *s;
    aw_bytes *reply;
};

static void
client_free(void *p)
{
    struct client *c = p;

    aw_stream_unref(c->s);
    free(c);
}

static AW_TASK(talk, struct client *c)
{
    char line[128];

    AW_BEGIN();
    AW_AWAIT(aw_open_connection(aw_task_loop(AW_SELF()), "127.0.0.1", c->port),
             (void **)&c->s);
    aw_stream_ref(c->s); /* keep it past the future that owned it */
    snprintf(line, sizeof(line), "hello from client %d\n", c->id);
    aw_stream_write(c->s, line, strlen(line));
    AW_AWAIT(aw_stream_readline(c->s), &c->reply);
    snprintf(line, sizeof(line), "client %d got: %.*s", c->id,
             (int)aw_bytes_len(c->reply) - 1, aw_bytes_data(c->reply));
    say(aw_task_loop(AW_SELF()), line);
    aw_stream_close(c->s);
    AW_END();
}

struct network {
    aw_server *srv;
    aw_future *clients[3];
};

/* The chapter's main task, run by aw_run(): a server, three clients
 * gathered, the server closed once every connection has ended. */
static AW_TASK(network_main, struct network *n)
{
    aw_loop *loop = aw_task_loop(AW_SELF());
    char line[96];
    int i;

    AW_BEGIN();
    t0 = aw_loop_time(loop);
    AW_AWAIT_TAKE(aw_start_server(loop, "127.0.0.1", 0, on_client, loop, 0,
                                  0),
                  &n->srv);
    snprintf(line, sizeof(line), "server: listening on 127.0.0.1:%d",
             aw_server_port(n->srv));
    say(loop, line);
    for (i = 0; i < 3; i++) {
        struct client *c = calloc(1, sizeof(*c));

        c->port = aw_server_port(n->srv);
        c->id = i + 1;
        n->clients[i] = aw_task_new(loop, talk, c, client_free);
    }
    AW_AWAIT(aw_gather(loop, 3, n->clients, 0), NULL);
    aw_server_close(n->srv);
    AW_AWAIT(aw_server_wait_closed(n->srv), NULL);
    say(loop, "server: closed, every connection ended");
    AW_FINALLY();
    aw_server_free(n->srv);
    AW_END();
}

static int
demo_network(void)
{
    struct network n;
    int rc;

    printf("== Networking\n");
    memset(&n, 0, sizeof(n));
    rc = aw_run(network_main, &n, NULL, 0, NULL);
    printf("  aw_run: %s\n", rc == 0 ? "the main task ended, loop closed "
                                       "cleanly" : aw_strerror(rc));
    return rc == 0 ? 0 : 1;
}

/* ---- TLS ------------------------------------------------------------------------ */

/* The chapter's main task: a self-signed certificate made on the spot, a
 * TLS server with it (the same upper-casing echo), a client that trusts
 * that certificate and checks the name "localhost", and one that trusts
 * only the system's store and is refused. */
struct tls_demo {
    struct certgen_pem pem;
    aw_tls_context *server_ctx, *client_ctx, *system_ctx;
    aw_server *srv;
    aw_stream *s;
    aw_bytes *reply;
    int rc;
};

/* ctx, unless a setter failed (rc): then NULL, and the reason said. */
static aw_tls_context *
tls_ctx_checked(aw_tls_context *ctx, int rc, const char *what)
{
    if (ctx != NULL && rc == 0)
        return ctx;
    fprintf(stderr, "awdemo: %s: %s%s%s\n", what,
            aw_strerror(ctx == NULL ? -errno : rc), ctx != NULL ? ": " : "",
            ctx != NULL ? aw_tls_context_error(ctx) : "");
    aw_tls_context_unref(ctx);
    return NULL;
}

static int
tls_contexts(struct tls_demo *d)
{
    aw_tls_context *ctx;

    ctx = aw_tls_context_new(AW_TLS_SERVER);
    d->server_ctx = tls_ctx_checked(
        ctx,
        ctx != NULL ? aw_tls_context_load_cert_chain_mem(
                          ctx, d->pem.cert, d->pem.cert_len, d->pem.key,
                          d->pem.key_len)
                    : 0,
        "the server's context");
    ctx = aw_tls_context_new(AW_TLS_CLIENT);
    d->client_ctx = tls_ctx_checked(
        ctx,
        ctx != NULL ? aw_tls_context_load_verify_mem(ctx, d->pem.cert,
                                                     d->pem.cert_len)
                    : 0,
        "the client's context");
    d->system_ctx = tls_ctx_checked(aw_tls_context_new(AW_TLS_CLIENT), 0,
                                    "the system store's context");
    return d->server_ctx != NULL && d->client_ctx != NULL &&
                   d->system_ctx != NULL
               ? 0
               : -EINVAL;
}

static void
say_tls(aw_loop *loop, aw_stream *s)
{
    aw_transport *t = aw_stream_transport(s);
    char line[256], subject[128];

    if (aw_tls_peer_subject(t, subject, sizeof(subject)) < 0)
        strcpy(subject, "none");
    snprintf(line, sizeof(line), "client: handshake done: %s, %s",
             aw_tls_version(t), aw_tls_cipher(t));
    say(loop, line);
    snprintf(line, sizeof(line), "client: the server's certificate (%s) %s "
             "for the name localhost", subject,
             aw_tls_peer_verified(t) ? "verified" : "did NOT verify");
    say(loop, line);
}

static AW_TASK(tls_main, struct tls_demo *d)
{
    aw_loop *loop = aw_task_loop(AW_SELF());
    char line[192];

    AW_BEGIN();
    t0 = aw_loop_time(loop);
    if (certgen_make(&d->pem, "localhost", "DNS:localhost,IP:127.0.0.1",
                     NULL, -60, 3600, 0, 0) != 0)
        AW_RAISE(-ENOMEM, "cannot make a certificate");
    say(loop, "made a self-signed certificate for localhost (ECDSA P-256, "
              "valid for an hour)");
    if ((d->rc = tls_contexts(d)) != 0)
        AW_RAISE(d->rc, "cannot set up the TLS contexts");
    AW_AWAIT_TAKE(aw_start_server_tls(loop, "127.0.0.1", 0, d->server_ctx,
                                      on_client, loop, 0, 0),
                  &d->srv);
    snprintf(line, sizeof(line), "server: listening with TLS on "
             "127.0.0.1:%d", aw_server_port(d->srv));
    say(loop, line);

    AW_AWAIT_TAKE(aw_open_connection_tls(loop, "127.0.0.1",
                                         aw_server_port(d->srv),
                                         d->client_ctx, "localhost"),
                  &d->s);
    say_tls(loop, d->s);
    aw_stream_write(d->s, "hello over TLS\n", 15);
    AW_AWAIT(aw_stream_readline(d->s), &d->reply);
    snprintf(line, sizeof(line), "client got: %.*s",
             (int)aw_bytes_len(d->reply) - 1, aw_bytes_data(d->reply));
    say(loop, line);
    aw_stream_close(d->s);
    AW_AWAIT(aw_stream_wait_closed(d->s), NULL);
    say(loop, "client: closed (close_notify sent and answered)");

    /* Verification is on by default: the system's authorities do not
     * know this certificate. */
    AW_TRY_AWAIT(d->rc, aw_open_connection_tls(loop, "127.0.0.1",
                                               aw_server_port(d->srv),
                                               d->system_ctx, "localhost"),
                 NULL);
    if (d->rc == 0) {
        say(loop, "a client trusting only the system's store: accepted?!");
        AW_RAISE(AW_ETLS_VERIFY, "a certificate nobody vouches for was "
                                 "accepted");
    }
    snprintf(line, sizeof(line), "a client trusting only the system's "
             "store: refused, %s (%s)", aw_err_name(d->rc),
             aw_future_message(AW_AWAITED()));
    say(loop, line);
    aw_server_close(d->srv);
    AW_AWAIT(aw_server_wait_closed(d->srv), NULL);
    say(loop, "server: closed, every connection ended");
    AW_FINALLY();
    aw_stream_unref(d->s);
    aw_server_free(d->srv);
    aw_tls_context_unref(d->server_ctx);
    aw_tls_context_unref(d->client_ctx);
    aw_tls_context_unref(d->system_ctx);
    certgen_free(&d->pem);
    AW_END();
}

static int
demo_tls(void)
{
    struct tls_demo d;
    int rc;

    printf("== TLS\n");
    memset(&d, 0, sizeof(d));
    rc = aw_run(tls_main, &d, NULL, 0, NULL);
    printf("  aw_run: %s\n", rc == 0 ? "the main task ended, loop closed "
                                      "cleanly" : aw_strerror(rc));
    return rc == 0 ? 0 : 1;
}

/* ---- blocking work ------------------------------------------------------------ */

#define HASH_FILE_MB 8
#define TICK 0.010

/* CRC-32 (IEEE), bit by bit: slow on purpose, as blocking work is. */
static uint32_t
crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
    int k;

    while (n-- > 0) {
        crc ^= *p++;
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return crc;
}

/* The blocking function: read(2) the file through and hash it.  Run by a
 * worker thread (aw_to_thread), or, to show the harm, on the loop. */
static void *
hash_file(void *arg, int *err)
{
    static unsigned char buf[1 << 16];
    uint32_t crc = 0xFFFFFFFFu;
    int fd = open(arg, O_RDONLY);
    ssize_t n;

    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        crc = crc32_update(crc, buf, (size_t)n);
    if (n < 0)
        *err = -errno;
    close(fd);
    return (void *)(uintptr_t)(crc ^ 0xFFFFFFFFu);
}

/* HASH_FILE_MB of generated bytes in a temporary file: path filled. */
static int
make_file(char *path, size_t size)
{
    static unsigned char buf[1 << 16];
    uint32_t x = 2463534242u;
    int fd, i, mb;

    snprintf(path, size, "%s/awdemo-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if ((fd = mkstemp(path)) < 0)
        return -errno;
    for (mb = 0; mb < HASH_FILE_MB * 16; mb++) {
        for (i = 0; i < (int)sizeof(buf); i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = (unsigned char)x;
        }
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
            close(fd);
            unlink(path);
            return -EIO;
        }
    }
    close(fd);
    return 0;
}

/* A timer that should tick every 10 ms: each tick says how late it is. */
struct ticker {
    double start, worst;
    int n;
    int quiet;
};

static AW_TASK(ticker_task, struct ticker *tk)
{
    aw_loop *loop = aw_task_loop(AW_SELF());
    char line[96];
    double due, late;

    AW_BEGIN();
    tk->start = aw_loop_time(loop);
    for (;;) {
        due = tk->start + TICK * (tk->n + 1);
        AW_AWAIT(aw_sleep(loop, due - aw_loop_time(loop)), NULL);
        late = aw_loop_time(loop) - (tk->start + TICK * ++tk->n);
        if (late > tk->worst)
            tk->worst = late;
        if (!tk->quiet) {
            snprintf(line, sizeof(line), "tick %d (%.1f ms late)", tk->n,
                     late * 1e3);
            say(loop, line);
        }
    }
    AW_END();
}

struct blocking {
    char path[64];
    struct ticker on_loop, in_thread;
    aw_task *ticker;
    intptr_t crc;
    double t;
    int rc;
};

static void
report_hash(aw_loop *loop, const char *where, struct blocking *b,
            struct ticker *tk)
{
    char line[160];

    snprintf(line, sizeof(line), "%s: crc32 %08lx in %.0f ms; %d tick%s, "
             "the latest %.1f ms late", where, (unsigned long)b->crc,
             (aw_loop_time(loop) - b->t) * 1e3, tk->n, tk->n == 1 ? "" : "s",
             tk->worst * 1e3);
    say(loop, line);
}

static AW_TASK(blocking_main, struct blocking *b)
{
    aw_loop *loop = aw_task_loop(AW_SELF());
    char line[128];

    AW_BEGIN();
    t0 = aw_loop_time(loop);
    if ((b->rc = make_file(b->path, sizeof(b->path))) != 0)
        AW_RAISE(b->rc, "cannot write a temporary file");
    snprintf(line, sizeof(line), "wrote %d MiB to %s", HASH_FILE_MB,
             b->path);
    say(loop, line);

    /* First the wrong way: the hash runs on the loop, the timer waits. */
    b->on_loop.quiet = 1;
    b->ticker = aw_task_new(loop, ticker_task, &b->on_loop, NULL);
    AW_YIELD(); /* the ticker arms its first sleep */
    b->t = aw_loop_time(loop);
    b->crc = (intptr_t)hash_file(b->path, &b->rc);
    AW_YIELD(); /* the ticks that were due run now, late */
    aw_future_cancel(b->ticker, NULL);
    AW_TRY_AWAIT(b->rc, b->ticker, NULL);
    b->ticker = NULL;
    report_hash(loop, "on the loop", b, &b->on_loop);

    /* Then with aw_to_thread: a worker hashes, the timer keeps time. */
    b->ticker = aw_task_new(loop, ticker_task, &b->in_thread, NULL);
    b->t = aw_loop_time(loop);
    AW_AWAIT_INT(aw_to_thread(loop, hash_file, b->path, NULL, NULL),
                 &b->crc);
    aw_future_cancel(b->ticker, NULL);
    AW_TRY_AWAIT(b->rc, b->ticker, NULL);
    b->ticker = NULL;
    report_hash(loop, "aw_to_thread", b, &b->in_thread);
    AW_FINALLY();
    if (b->ticker != NULL) {
        aw_future_cancel(b->ticker, NULL);
        aw_future_unref(b->ticker);
    }
    if (b->path[0] != '\0')
        unlink(b->path);
    AW_END();
}

/* The chapter's loop is aw_run()'s: asyncio.run, a program's main. */
static int
demo_blocking(void)
{
    struct blocking b;
    int rc;

    printf("== Blocking work\n");
    memset(&b, 0, sizeof(b));
    rc = aw_run(blocking_main, &b, NULL, 0, NULL);
    printf("  aw_run: %s\n", rc == 0 ? "the main task ended, loop closed "
                                       "cleanly" : aw_strerror(rc));
    return rc == 0 ? 0 : 1;
}

/* --help and --version (GNU conventions); anything else is refused. */
static int
options(int argc, char **argv)
{
    if (argc < 2)
        return -1;
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: awdemo [--help] [--version]\n"
               "A guided run of libawait: the loop, futures, tasks, an "
               "echo server over\nloopback, the same over TLS, and "
               "blocking work in a thread, printing what\nhappens.\n"
               "\n"
               "  --help     display this help and exit\n"
               "  --version  output version information and exit\n"
               "\n"
               "Report bugs to: https://github.com/libawait/libawait/issues\n");
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("awdemo (libawait) %s\n"
               "Copyright (c) 2026 The libawait authors\n"
               "License MIT: <https://opensource.org/licenses/MIT>.\n"
               "This is free software: you are free to change and "
               "redistribute it.\n",
               AW_VERSION_STRING);
        return 0;
    }
    fprintf(stderr, "Usage: awdemo [--help] [--version]\n"
                    "Try 'awdemo --help' for more information.\n");
    return 2;
}

int
main(int argc, char **argv)
{
    int rc = options(argc, argv);

    if (rc >= 0)
        return rc;
    printf("libawait %s demo\n", aw_version());
    if (demo_loop() != 0 || demo_futures() != 0 || demo_tasks() != 0 ||
        demo_network() != 0 || demo_tls() != 0 || demo_blocking() != 0)
        return 1;
    return 0;
}

/* SPDX-License-Identifier: MIT */
/* awecho.c: an echo daemon written with streams and tasks, the first
 * example of a daemon built on libawait.
 *
 *   awecho [-h HOST] [-p PORT] [-u PATH] [-t N] [-v]
 *          [--tls-cert FILE --tls-key FILE]
 *
 * Listens on HOST:PORT (default 127.0.0.1:7007), or on the Unix socket
 * PATH, and echoes every line back to its sender.  With --tls-cert and
 * --tls-key (PEM files, both or neither) it serves TLS instead: each
 * connection's handshake comes first (aw_start_server_tls).  With
 * --threads N (TCP only), N loops in N threads each listen on the port
 * with SO_REUSEPORT and the kernel spreads the connections over them:
 * one loop per core.
 * SIGINT or SIGTERM closes the servers, cancels the clients' tasks and
 * exits once they have ended.
 *
 * Run by a service manager (tools/awecho.socket and awecho.service), it
 * serves the listening sockets it is handed (LISTEN_FDS, the
 * sd_listen_fds protocol: aw_listen_fds) instead of binding its own, and
 * tells the manager how it goes through NOTIFY_SOCKET (aw_notify):
 * READY=1 once it serves, STOPPING=1 when it shuts down, and watchdog
 * pings when WatchdogSec= asks for them (aw_watchdog_start).
 *
 * Each loop's life is aw_run() (asyncio.run): its main task, serve(),
 * starts the server and serves until it is cancelled: by the signal
 * (loop 0 handles SIGINT and SIGTERM), or, for the other loops, by a call
 * that the first loop to stop sends each other loop with
 * aw_loop_call_soon_threadsafe(). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <await.h>

#define MAX_THREADS 256
#define MAX_ACTIVATED 64

static int verbose;
static const char *host = "127.0.0.1", *path;
static int port = 7007, nthreads = 1;
/* --tls-cert, --tls-key: the server's context, shared by every loop. */
static const char *tls_cert, *tls_key;
static aw_tls_context *tls_ctx;
/* Sockets from the service manager: fds AW_LISTEN_FDS_START on. */
static int nactivated;

/* One per loop.  loop, main and posts are shared between the threads
 * (under mu); the rest belongs to the loop's own thread (read by main()
 * once that thread has been joined). */
struct loop_ctx {
    int index;
    aw_loop *loop;   /* while its main task runs */
    aw_task *main;   /* while its main task runs; NULL once it stops */
    int posts;       /* thread-safe calls on their way to the loop */
    aw_server *srv;
    aw_server *activated[MAX_ACTIVATED]; /* loop 0: the handed sockets' */
    int nserving;                        /* of them */
    aw_watchdog *watchdog;
    aw_future *all_ready; /* loop 0: the other loops are listening */
    int rc, wait_rc;
    long served;
    pthread_t thread;
    int started;
    int outcome; /* aw_run()'s */
};

static struct loop_ctx *loops;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int stopping; /* under mu */
static int workers_ready; /* under mu */

struct client {
    aw_stream *s;
    aw_bytes *line;
    int rc;
};

static void
client_free(void *p)
{
    struct client *c = p;

    aw_stream_unref(c->s);
    free(c);
}

/* A client that resets the connection or leaves without reading the echo
 * ends its task like one that closed: that is what clients do.  Only a
 * cancellation (the shutdown) goes on as such. */
static int
client_gone(struct client *c)
{
    if (c->rc == AW_ECANCELLED)
        return 0;
    if (verbose)
        fprintf(stderr, "awecho: client gone: %s\n", aw_strerror(c->rc));
    return 1;
}

static AW_TASK(echo_client, struct client *c)
{
    AW_BEGIN();
    for (;;) {
        AW_TRY_AWAIT(c->rc, aw_stream_readline(c->s), &c->line);
        if (c->rc == AW_ELIMIT) /* a line too long: echo what there is */
            AW_TRY_AWAIT(c->rc, aw_stream_read(c->s, 65536), &c->line);
        if (c->rc != 0 && client_gone(c))
            break;
        if (c->rc != 0)
            AW_RAISE(c->rc, NULL);
        if (aw_bytes_len(c->line) == 0)
            break; /* end of file */
        aw_stream_write(c->s, aw_bytes_data(c->line), aw_bytes_len(c->line));
        AW_TRY_AWAIT(c->rc, aw_stream_drain(c->s), NULL);
        if (c->rc != 0 && client_gone(c))
            break;
        if (c->rc != 0)
            AW_RAISE(c->rc, NULL);
    }
    AW_FINALLY();
    if (verbose)
        fprintf(stderr, "awecho: %s done\n", aw_task_name(AW_SELF()));
    aw_stream_close(c->s);
    AW_END();
}

static void
on_client(aw_stream *s, void *arg)
{
    struct client *c = calloc(1, sizeof(*c));
    struct loop_ctx *l = arg;
    aw_task *t;

    if (c == NULL) {
        aw_stream_unref(s);
        return;
    }
    c->s = s;
    l->served++;
    t = aw_task_new(l->loop, echo_client, c, client_free);
    if (verbose) {
        char peer[AW_ADDRSTRLEN], where[32] = "";

        char tls[96] = "";
        aw_transport *tr = aw_stream_transport(s);

        if (aw_stream_peername_text(s, peer, sizeof(peer)) < 0)
            peer[0] = '\0';
        if (nthreads > 1)
            snprintf(where, sizeof(where), " on loop %d", l->index + 1);
        if (aw_tls_is_tls(tr))
            snprintf(tls, sizeof(tls), ", %s %s", aw_tls_version(tr),
                     aw_tls_cipher(tr));
        fprintf(stderr, "awecho: new client, %s, from %s%s%s\n",
                aw_task_name(t), peer[0] != '\0' ? peer : "(unnamed)", where,
                tls);
    }
    aw_future_unref(t); /* the loop runs it to its end */
}

/* ---- stopping the loops together ------------------------------------------ */

/* On loop l, sent by the first loop that stopped: cancel l's main task
 * (unless it is stopping already). */
static int
cancel_main_cb(aw_loop *loop, void *arg)
{
    struct loop_ctx *l = arg;

    (void)loop;
    pthread_mutex_lock(&mu);
    l->posts--;
    if (l->main != NULL)
        aw_future_cancel(l->main, "shutdown");
    pthread_mutex_unlock(&mu);
    return 0;
}

/* Called by each loop as it stops; the first call cancels the others. */
static void
stop_all(void)
{
    int i;

    pthread_mutex_lock(&mu);
    if (!stopping) {
        stopping = 1;
        for (i = 0; i < nthreads; i++)
            if (loops[i].main != NULL &&
                aw_loop_call_soon_threadsafe(loops[i].loop, cancel_main_cb,
                                             &loops[i]) == 0)
                loops[i].posts++;
    }
    pthread_mutex_unlock(&mu);
}

/* The main task runs on l's loop: 0 once it may take calls from the other
 * threads; AW_ECANCELLED when the loops are stopping already. */
static int
publish(struct loop_ctx *l, aw_task *self)
{
    int rc = AW_ECANCELLED;

    pthread_mutex_lock(&mu);
    if (!stopping) {
        l->loop = aw_task_loop(self);
        l->main = self;
        rc = 0;
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

/* The main task is stopping: no call is sent to its loop any more. */
static void
unpublish(struct loop_ctx *l)
{
    pthread_mutex_lock(&mu);
    l->main = NULL;
    pthread_mutex_unlock(&mu);
}

/* Calls still on their way to l's loop: it must run them before it can
 * close. */
static int
posts_pending(struct loop_ctx *l)
{
    int posts;

    pthread_mutex_lock(&mu);
    posts = l->posts;
    pthread_mutex_unlock(&mu);
    return posts;
}

/* On loop 0: another loop listens. */
static int
worker_ready_cb(aw_loop *loop, void *arg)
{
    int all;

    (void)loop;
    (void)arg;
    pthread_mutex_lock(&mu);
    loops[0].posts--;
    all = ++workers_ready == nthreads - 1;
    pthread_mutex_unlock(&mu);
    if (all && !aw_future_done(loops[0].all_ready))
        aw_future_set_result(loops[0].all_ready, NULL, NULL);
    return 0;
}

static void
report_ready(void)
{
    pthread_mutex_lock(&mu);
    if (loops[0].main != NULL &&
        aw_loop_call_soon_threadsafe(loops[0].loop, worker_ready_cb,
                                     NULL) == 0)
        loops[0].posts++;
    pthread_mutex_unlock(&mu);
}

/* ---- each loop's main task ------------------------------------------------- */

static void *loop_thread(void *arg);
static void notify(const char *state);

/* Loop 0 starts the other loops once it knows the port (port 0: the one
 * the system gave it).  Their signals stay with loop 0's thread. */
static int
start_workers(void)
{
    sigset_t set, old;
    int i, rc = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (i = 1; i < nthreads && rc == 0; i++) {
        rc = -pthread_create(&loops[i].thread, NULL, loop_thread, &loops[i]);
        loops[i].started = rc == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static aw_future *
start_listening(struct loop_ctx *l)
{
    int flags = nthreads > 1 ? AW_SERVER_REUSE_PORT : 0;

    if (path != NULL && tls_ctx != NULL)
        return aw_start_unix_server_tls(l->loop, path, tls_ctx, on_client, l,
                                        0);
    if (path != NULL)
        return aw_start_unix_server(l->loop, path, on_client, l, 0);
    if (tls_ctx != NULL)
        return aw_start_server_tls(l->loop, host, port, tls_ctx, on_client, l,
                                   flags, 0);
    return aw_start_server(l->loop, host, port, on_client, l, flags, 0);
}

/* A socket from the service manager, served as the others. */
static aw_future *
start_activated(struct loop_ctx *l, int fd)
{
    if (tls_ctx != NULL)
        return aw_start_server_sock_tls(l->loop, fd, tls_ctx, on_client, l,
                                        0);
    return aw_start_server_sock(l->loop, fd, on_client, l, 0);
}

static void
say_serving(struct loop_ctx *l)
{
    const char *tls = tls_ctx != NULL ? " (TLS)" : "";

    if (nactivated > 0)
        fprintf(stderr, "awecho: serving %d socket%s from the service "
                        "manager%s\n",
                nactivated, nactivated > 1 ? "s" : "", tls);
    else if (path != NULL)
        fprintf(stderr, "awecho: serving on %s%s\n", path, tls);
    else if (nthreads == 1)
        fprintf(stderr, "awecho: serving on %s:%d%s\n", host,
                aw_server_port(l->srv), tls);
    else
        fprintf(stderr,
                "awecho: serving on %s:%d, %d loops in %d threads%s\n", host,
                aw_server_port(l->srv), nthreads, nthreads, tls);
}

/* Serve until cancelled (a signal, or another loop that stopped), or
 * until the server fails; then stop the other loops. */
static AW_TASK(serve, struct loop_ctx *l)
{
    void *srv = NULL;

    AW_BEGIN();
    if (publish(l, AW_SELF()) != 0)
        AW_RETURN_INT(0); /* stopped before it started */
    if (nactivated > 0) {
        /* Each handed socket is a server of its own; the first one's
         * serve_forever is what a signal cancels. */
        for (l->nserving = 0; l->nserving < nactivated; l->nserving++) {
            AW_TRY_AWAIT(l->rc,
                         start_activated(l, AW_LISTEN_FDS_START +
                                                l->nserving),
                         &srv);
            if (l->rc != 0) {
                fprintf(stderr, "awecho: socket %d from the service "
                                "manager: %s\n",
                        AW_LISTEN_FDS_START + l->nserving,
                        aw_future_message(AW_AWAITED()));
                goto stop;
            }
            aw_future_take_result(AW_AWAITED(), &srv, NULL);
            l->activated[l->nserving] = srv;
        }
        l->srv = l->activated[0];
        goto serving;
    }
    AW_TRY_AWAIT(l->rc, start_listening(l), &srv);
    if (l->rc != 0) {
        if (l->rc != AW_ECANCELLED && l->index == 0)
            fprintf(stderr, "awecho: %s\n", aw_future_message(AW_AWAITED()));
        else if (l->rc != AW_ECANCELLED)
            fprintf(stderr, "awecho: loop %d: %s\n", l->index + 1,
                    aw_future_message(AW_AWAITED()));
        goto stop;
    }
    aw_future_take_result(AW_AWAITED(), &srv, NULL);
    l->srv = srv;
    if (l->index > 0) {
        report_ready();
    } else if (nthreads > 1) {
        port = aw_server_port(l->srv);
        if ((l->all_ready = aw_future_new(l->loop)) == NULL ||
            (l->rc = start_workers()) != 0) {
            fprintf(stderr, "awecho: starting the loops: %s\n",
                    aw_strerror(l->rc != 0 ? l->rc : -ENOMEM));
            if (l->rc == 0)
                l->rc = -ENOMEM;
            goto stop;
        }
        AW_TRY_AWAIT(l->rc, aw_future_ref(l->all_ready), NULL);
        if (l->rc != 0)
            goto stop;
    }
serving:
    if (l->index == 0) {
        say_serving(l);
        notify("READY=1\nSTATUS=serving");
        if (aw_watchdog_start(l->loop, &l->watchdog) < 0)
            fprintf(stderr, "awecho: WATCHDOG_USEC or WATCHDOG_PID is "
                            "malformed: no watchdog pings\n");
    }
    AW_TRY_AWAIT(l->rc, aw_server_serve_forever(l->srv), NULL);
stop:
    if (l->rc == AW_ECANCELLED) {
        aw_task_uncancel(AW_SELF());
        if (l->index == 0)
            fprintf(stderr, "awecho: shutting down\n");
    }
    if (l->index == 0)
        notify("STOPPING=1");
    unpublish(l);
    stop_all();
    while (posts_pending(l) > 0)
        AW_TRY_AWAIT(l->wait_rc, aw_sleep(aw_task_loop(AW_SELF()), 0.001),
                     NULL);
    if (l->rc != 0 && l->rc != AW_ECANCELLED)
        AW_RAISE(l->rc, NULL);
    AW_FINALLY();
    aw_watchdog_stop(l->watchdog);
    l->watchdog = NULL;
    aw_future_unref(l->all_ready);
    l->all_ready = NULL;
    while (l->nserving > 0) {
        aw_server_free(l->activated[--l->nserving]);
        l->srv = NULL;
    }
    if (l->srv != NULL) {
        aw_server_free(l->srv);
        l->srv = NULL;
        if (path != NULL)
            unlink(path);
    }
    AW_END();
}

/* Tell the service manager, if one asked (NOTIFY_SOCKET). */
static void
notify(const char *state)
{
    int rc = aw_notify(state);

    if (rc < 0)
        fprintf(stderr, "awecho: cannot notify the service manager: %s\n",
                aw_strerror(rc));
}

/* Loops 1 to N-1: aw_run(), as loop 0's in main(). */
static void *
loop_thread(void *arg)
{
    struct loop_ctx *l = arg;

    l->outcome = aw_run(serve, l, NULL, 0, NULL);
    return NULL;
}

/* --help to stdout with status 0, a bad option to stderr with status 2. */
static void
usage(int status)
{
    if (status != 0) {
        fprintf(stderr,
                "usage: awecho [-h HOST] [-p PORT] [-u PATH] [-t N] [-v]\n"
                "              [--tls-cert FILE --tls-key FILE]\n"
                "Try 'awecho --help' for more information.\n");
        exit(status);
    }
    printf("Usage: awecho [-h HOST] [-p PORT] [-u PATH] [-t N] [-v]\n"
           "              [--tls-cert FILE --tls-key FILE]\n"
           "An echo daemon: echoes every line back to its sender.\n"
           "\n"
           "  -h HOST    listen on HOST (default 127.0.0.1)\n"
           "  -p PORT    listen on PORT (default 7007)\n"
           "  -u PATH    listen on the Unix socket PATH instead\n"
           "  -t, --threads N\n"
           "             serve with N loops in N threads, each listening on "
           "PORT\n"
           "             with SO_REUSEPORT (TCP only; default 1)\n"
           "  -v         report connections on stderr\n"
           "      --tls-cert FILE\n"
           "             serve TLS with the certificate (and its chain) in "
           "FILE (PEM);\n"
           "             needs --tls-key\n"
           "      --tls-key FILE\n"
           "             the certificate's private key (PEM); needs "
           "--tls-cert\n"
           "      --help     display this help and exit\n"
           "      --version  output version information and exit\n"
           "\n"
           "SIGINT or SIGTERM shuts it down cleanly.\n"
           "Started by a service manager with listening sockets "
           "(LISTEN_FDS), it serves\n"
           "those instead, and reports readiness to NOTIFY_SOCKET.\n"
           "Report bugs to: https://github.com/libawait/libawait/issues\n");
    exit(0);
}

/* The server's TLS context from --tls-cert and --tls-key: 0, or -1 with
 * the reason said. */
static int
load_tls(void)
{
    const char *why;
    int rc;

    if ((tls_ctx = aw_tls_context_new(AW_TLS_SERVER)) == NULL) {
        fprintf(stderr, "awecho: TLS: %s\n", aw_strerror(-errno));
        return -1;
    }
    if ((rc = aw_tls_context_load_cert_chain(tls_ctx, tls_cert, tls_key)) ==
        0)
        return 0;
    why = aw_tls_context_error(tls_ctx);
    fprintf(stderr, "awecho: %s, %s: %s%s%s\n", tls_cert, tls_key,
            aw_strerror(rc), why[0] != '\0' ? ": " : "", why);
    aw_tls_context_unref(tls_ctx);
    tls_ctx = NULL;
    return -1;
}

static void
version(void)
{
    printf("awecho (libawait) %s\n"
           "Copyright (c) 2026 The libawait authors\n"
           "License MIT: <https://opensource.org/licenses/MIT>.\n"
           "This is free software: you are free to change and redistribute "
           "it.\n",
           AW_VERSION_STRING);
    exit(0);
}

int
main(int argc, char **argv)
{
    int opt, i, status = 0;

    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'H'},
        {"version", no_argument, NULL, 'V'},
        {"threads", required_argument, NULL, 't'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {NULL, 0, NULL, 0},
    };

    while ((opt = getopt_long(argc, argv, "h:p:t:u:v", longopts, NULL)) !=
           -1) {
        switch (opt) {
        case 'H':
            usage(0);
            break;
        case 'V':
            version();
            break;
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 't':
            nthreads = atoi(optarg);
            if (nthreads < 1 || nthreads > MAX_THREADS) {
                fprintf(stderr, "awecho: --threads takes 1 to %d\n",
                        MAX_THREADS);
                usage(2);
            }
            break;
        case 'u':
            path = optarg;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'C':
            tls_cert = optarg;
            break;
        case 'K':
            tls_key = optarg;
            break;
        default:
            usage(2);
        }
    }
    if ((tls_cert == NULL) != (tls_key == NULL)) {
        fprintf(stderr, "awecho: --tls-cert and --tls-key go together "
                        "(TLS needs the certificate and its key)\n");
        usage(2);
    }
    if (path != NULL && nthreads > 1) {
        fprintf(stderr, "awecho: a Unix socket is served by one loop "
                        "(--threads needs TCP)\n");
        usage(2);
    }
    /* Unset: the variables are not for the processes it may start. */
    nactivated = aw_listen_fds(1, NULL);
    if (nactivated < 0 || nactivated > MAX_ACTIVATED) {
        fprintf(stderr, "awecho: LISTEN_FDS: %s\n",
                nactivated < 0 ? aw_strerror(nactivated)
                               : "too many sockets");
        return 1;
    }
    if (nactivated > 0 && nthreads > 1) {
        fprintf(stderr, "awecho: sockets from the service manager are "
                        "served by one loop (no --threads)\n");
        usage(2);
    }
    if (tls_cert != NULL && load_tls() != 0)
        return 1;
    if ((loops = calloc((size_t)nthreads, sizeof(*loops))) == NULL) {
        fprintf(stderr, "awecho: %s\n", aw_strerror(-ENOMEM));
        return 1;
    }
    for (i = 0; i < nthreads; i++)
        loops[i].index = i;
    loops[0].outcome = aw_run(serve, &loops[0], NULL, AW_RUN_HANDLE_SIGNALS,
                              NULL);
    for (i = 0; i < nthreads; i++) {
        if (loops[i].started)
            pthread_join(loops[i].thread, NULL);
        if (loops[i].outcome != 0 && loops[i].outcome != AW_ECANCELLED)
            status = 1;
    }
    for (i = 0; i < nthreads; i++) {
        if (nthreads > 1 && (i == 0 || loops[i].started))
            fprintf(stderr, "awecho: loop %d served %ld clients\n", i + 1,
                    loops[i].served);
    }
    free(loops);
    aw_tls_context_unref(tls_ctx);
    return status;
}

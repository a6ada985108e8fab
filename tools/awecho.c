/* SPDX-License-Identifier: MIT */
/* awecho.c: an echo daemon written with streams and tasks, the first
 * example of a daemon built on libawait.
 *
 *   awecho [-h HOST] [-p PORT] [-u PATH] [-v]
 *
 * Listens on HOST:PORT (default 127.0.0.1:7007), or on the Unix socket
 * PATH, and echoes every line back to its sender.  SIGINT or SIGTERM
 * closes the server, cancels the clients' tasks and exits once they have
 * ended. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <await.h>

static int verbose;
static aw_server *server;

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
    aw_loop *loop = arg;
    aw_task *t;

    if (c == NULL) {
        aw_stream_unref(s);
        return;
    }
    c->s = s;
    t = aw_task_new(loop, echo_client, c, client_free);
    if (verbose) {
        char peer[AW_ADDRSTRLEN];

        if (aw_stream_peername_text(s, peer, sizeof(peer)) < 0)
            peer[0] = '\0';
        fprintf(stderr, "awecho: new client, %s, from %s\n",
                aw_task_name(t), peer[0] != '\0' ? peer : "(unnamed)");
    }
    aw_future_unref(t); /* the loop runs it to its end */
}

static int
on_signal(aw_loop *loop, void *arg)
{
    size_t i, n = aw_all_tasks(loop, NULL, 0);
    aw_task **tasks = calloc(n + 1, sizeof(*tasks));

    (void)arg;
    fprintf(stderr, "awecho: shutting down\n");
    aw_server_close(server);
    if (tasks != NULL) {
        n = aw_all_tasks(loop, tasks, n);
        for (i = 0; i < n; i++)
            aw_future_cancel(tasks[i], "shutdown");
        free(tasks);
    }
    aw_loop_remove_signal_handler(loop, SIGINT);
    aw_loop_remove_signal_handler(loop, SIGTERM);
    return aw_loop_stop(loop);
}

/* --help to stdout with status 0, a bad option to stderr with status 2. */
static void
usage(int status)
{
    if (status != 0) {
        fprintf(stderr, "usage: awecho [-h HOST] [-p PORT] [-u PATH] [-v]\n"
                        "Try 'awecho --help' for more information.\n");
        exit(status);
    }
    printf("Usage: awecho [-h HOST] [-p PORT] [-u PATH] [-v]\n"
           "An echo daemon: echoes every line back to its sender.\n"
           "\n"
           "  -h HOST    listen on HOST (default 127.0.0.1)\n"
           "  -p PORT    listen on PORT (default 7007)\n"
           "  -u PATH    listen on the Unix socket PATH instead\n"
           "  -v         report connections on stderr\n"
           "      --help     display this help and exit\n"
           "      --version  output version information and exit\n"
           "\n"
           "SIGINT or SIGTERM shuts it down cleanly.\n"
           "Report bugs to: https://github.com/libawait/libawait/issues\n");
    exit(0);
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
    const char *host = "127.0.0.1", *path = NULL;
    int port = 7007, opt, rc;
    aw_loop *loop;
    aw_future *f;
    void *srv = NULL;

    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'H'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };

    while ((opt = getopt_long(argc, argv, "h:p:u:v", longopts, NULL)) != -1) {
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
        case 'u':
            path = optarg;
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            usage(2);
        }
    }
    if ((rc = aw_loop_new(&loop)) != 0) {
        fprintf(stderr, "awecho: %s\n", aw_strerror(rc));
        return 1;
    }
    f = path != NULL ? aw_start_unix_server(loop, path, on_client, loop, 0)
                     : aw_start_server(loop, host, port, on_client, loop, 0,
                                       0);
    rc = aw_loop_run_until_complete(loop, f);
    if (rc != 0) {
        fprintf(stderr, "awecho: %s\n", aw_future_message(f));
        aw_future_unref(f);
        aw_loop_free(loop);
        return 1;
    }
    aw_future_take_result(f, &srv, NULL);
    aw_future_unref(f);
    server = srv;
    if (path != NULL)
        fprintf(stderr, "awecho: serving on %s\n", path);
    else
        fprintf(stderr, "awecho: serving on %s:%d\n", host,
                aw_server_port(server));
    aw_loop_add_signal_handler(loop, SIGINT, on_signal, NULL);
    aw_loop_add_signal_handler(loop, SIGTERM, on_signal, NULL);
    aw_loop_run_forever(loop);
    /* The clients end (cancelled); then everything is released. */
    while (aw_all_tasks(loop, NULL, 0) > 0)
        aw_loop_run_once(loop, 0);
    aw_server_free(server);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if (path != NULL)
        unlink(path);
    rc = aw_loop_free(loop);
    return rc == 0 ? 0 : 1;
}

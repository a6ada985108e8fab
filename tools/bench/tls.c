/* SPDX-License-Identifier: MIT */
/* bench/tls.c: awbench's TLS figures over loopback, each next to raw
 * libevent's OpenSSL bufferevents (bufferevent_openssl_socket_new) doing
 * the same work in the same run: tls_mb_s (one TLS stream's throughput,
 * writes with drain), tls_handshakes and tls_resumed (full and resumed
 * handshakes per second, the client in another process), tls_conn_bytes
 * (the server's heap per idle TLS connection, and what takes it).  Both
 * sides speak TLS 1.3 with TLS_AES_128_GCM_SHA256, ECDHE on P-256, and an
 * ECDSA P-256 certificate for "localhost" made at the start
 * (tools/certgen.c), which the clients trust and verify, host name
 * included.  Without libevent_openssl the baselines are n/a. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#ifdef HAVE_LIBEVENT_OPENSSL
#include <event2/bufferevent_ssl.h>
#endif

#include "await.h"
#include "bench.h"
#include "../certgen.h"

#define TLS_SUITE "TLS_AES_128_GCM_SHA256"
#define TLS_GROUP "P-256"
#define TLS_HOST "localhost"

#define MB_TOTAL ((size_t)256 << 20)
#define MB_CHUNK (1 << 16)
#define MB_STALL 30 /* seconds: a transfer that takes longer has stalled */

#define HS_CONNS 8
#define HS_WARMUP 0.2
#define HS_SECONDS 1.0

#define CB_N 500

/* ---- what both sides share --------------------------------------------- */

static struct certgen_pem cert;
static int cert_made;

/* OpenSSL's live heap bytes, counted through CRYPTO_set_mem_functions
 * when awbench could install them before OpenSSL's first allocation
 * (ossl_counted). */
static size_t ossl_live;
static int ossl_counted;

static void *
count_malloc(size_t n, const char *file, int line)
{
    void *p = malloc(n);

    (void)file;
    (void)line;
    if (p != NULL)
        __atomic_add_fetch(&ossl_live, malloc_usable_size(p),
                           __ATOMIC_RELAXED);
    return p;
}

static void
count_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p == NULL)
        return;
    __atomic_sub_fetch(&ossl_live, malloc_usable_size(p), __ATOMIC_RELAXED);
    free(p);
}

static void *
count_realloc(void *p, size_t n, const char *file, int line)
{
    size_t old = p != NULL ? malloc_usable_size(p) : 0;
    void *q;

    if (n == 0) {
        count_free(p, file, line);
        return NULL;
    }
    if ((q = realloc(p, n)) == NULL)
        return NULL;
    __atomic_sub_fetch(&ossl_live, old, __ATOMIC_RELAXED);
    __atomic_add_fetch(&ossl_live, malloc_usable_size(q), __ATOMIC_RELAXED);
    return q;
}

static size_t
ossl_in_use(void)
{
    return __atomic_load_n(&ossl_live, __ATOMIC_RELAXED);
}

static void
free_cert(void)
{
    certgen_free(&cert);
}

/* Once: SIGPIPE ignored, the counting (it must come before OpenSSL
 * allocates anything), then the certificate, valid from an hour ago for a
 * day. */
static void
tls_setup(void)
{
    int rc;

    if (cert_made)
        return;
    /* OpenSSL's socket BIOs (the bufferevents') write with write(2): a
     * close_notify to a peer that has gone must not kill awbench. */
    signal(SIGPIPE, SIG_IGN);
    ossl_counted =
        CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free);
    rc = certgen_make(&cert, TLS_HOST, "DNS:localhost,IP:127.0.0.1", NULL,
                      -3600, 86400, 0, 0);
    if (rc != 0)
        bench_die("certgen_make", rc < 0 ? rc : -EINVAL);
    cert_made = 1;
    atexit(free_cert);
}

/* libawait's context for side: the certificate (server) or the trust in
 * it (client), the suite, the group; cache 0: no session resumption. */
static aw_tls_context *
aw_ctx(int side, int cache)
{
    aw_tls_context *ctx = aw_tls_context_new(side);
    int rc;

    if (ctx == NULL)
        bench_die("aw_tls_context_new", -errno);
    if (side == AW_TLS_SERVER)
        rc = aw_tls_context_load_cert_chain_mem(ctx, cert.cert, cert.cert_len,
                                                cert.key, cert.key_len);
    else
        rc = aw_tls_context_load_verify_mem(ctx, cert.cert, cert.cert_len);
    if (rc == 0)
        rc = aw_tls_context_set_ciphersuites(ctx, TLS_SUITE);
    if (rc == 0 && !cache)
        rc = aw_tls_context_set_session_cache(ctx, 0);
    /* The group is what the header leaves to OpenSSL's own calls. */
    if (rc == 0 &&
        SSL_CTX_set1_groups_list(aw_tls_context_native(ctx), TLS_GROUP) != 1)
        rc = -EINVAL;
    if (rc != 0) {
        fprintf(stderr, "awbench: tls context: %s: %s\n", aw_strerror(rc),
                aw_tls_context_error(ctx));
        exit(1);
    }
    return ctx;
}

/* The client's last session (raw side), kept from the tickets as they
 * come (TLS 1.3 sends them after the handshake). */
static SSL_SESSION *raw_session;

static int
keep_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (raw_session != NULL)
        SSL_SESSION_free(raw_session);
    raw_session = sess;
    return 1; /* ours now */
}

static void
ssl_die(const char *what)
{
    char buf[256];

    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    fprintf(stderr, "awbench: %s: %s\n", what, buf);
    exit(1);
}

/* An OpenSSL context set up as aw_ctx()'s (and as libawait's defaults:
 * TLS 1.2 at least, no compression, no renegotiation). */
static SSL_CTX *
raw_ctx(int server, int cache)
{
    SSL_CTX *ctx =
        SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    BIO *bio = BIO_new_mem_buf(cert.cert, (int)cert.cert_len);
    X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = NULL;

    BIO_free(bio);
    if (ctx == NULL || x == NULL)
        ssl_die("raw context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_ciphersuites(ctx, TLS_SUITE) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUP) != 1)
        ssl_die("raw context");
    if (server) {
        bio = BIO_new_mem_buf(cert.key, (int)cert.key_len);
        key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                          : NULL;
        BIO_free(bio);
        if (key == NULL || SSL_CTX_use_certificate(ctx, x) != 1 ||
            SSL_CTX_use_PrivateKey(ctx, key) != 1)
            ssl_die("raw server context");
        EVP_PKEY_free(key);
        if (!cache) {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
            SSL_CTX_set_num_tickets(ctx, 0);
        }
    } else {
        if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), x) != 1)
            ssl_die("raw client context");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cache) {
            SSL_CTX_set_session_cache_mode(
                ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(ctx, keep_session);
        }
    }
    X509_free(x);
    return ctx;
}

/* A raw client's SSL: SNI and the host checked, the last session offered
 * when there is one. */
static SSL *
raw_client_ssl(SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL || SSL_set_tlsext_host_name(ssl, TLS_HOST) != 1 ||
        SSL_set1_host(ssl, TLS_HOST) != 1)
        ssl_die("SSL_new");
    if (raw_session != NULL)
        SSL_set_session(ssl, raw_session);
    return ssl;
}

static struct sockaddr_in
loopback(int port)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    return sin;
}

/* A non-blocking listening socket on 127.0.0.1, any port. */
static int
listen_socket(int *port)
{
    struct sockaddr_in sin = loopback(0);
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        bench_die("listen", -errno);
    *port = ntohs(sin.sin_port);
    return fd;
}

#ifdef HAVE_LIBEVENT_OPENSSL
/* A socket for a raw client: TCP_NODELAY, as libawait's transports have
 * it (without it, the handshake's last flight and the first bytes wait
 * for delayed ACKs). */
static evutil_socket_t
nodelay_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0),
        one = 1;

    if (fd < 0)
        bench_die("socket", -errno);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void
nodelay(evutil_socket_t fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
#endif

static void
run_future(aw_loop *loop, aw_future *f, const char *what)
{
    int rc = aw_loop_run_until_complete(loop, f);

    if (rc != 0)
        bench_die(what, rc);
    aw_future_unref(f);
}

/* ---- tls_mb_s: one stream's throughput --------------------------------- */

/* MB_TOTAL bytes from a client (writes of 64 KiB, each followed by
 * drain) to a server task reading 64 KiB at a time, timed from the end
 * of the handshake to the last byte read. */
static size_t mb_got;

struct mb_sink {
    aw_stream *s;
    aw_bytes *chunk;
    int rc;
};

static AW_TASK(mb_sink_task, struct mb_sink *h)
{
    AW_BEGIN();
    while (mb_got < MB_TOTAL) {
        AW_TRY_AWAIT(h->rc, aw_stream_read(h->s, MB_CHUNK), &h->chunk);
        if (h->rc != 0 || aw_bytes_len(h->chunk) == 0)
            break;
        mb_got += aw_bytes_len(h->chunk);
    }
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
mb_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, mb_sink_task, sizeof(struct mb_sink));
}

struct mb_pump {
    aw_stream *s;
    size_t sent;
};

static AW_TASK(mb_pump_task, struct mb_pump *p)
{
    static char chunk[MB_CHUNK];

    AW_BEGIN();
    while (p->sent < MB_TOTAL) {
        aw_stream_write(p->s, chunk, sizeof(chunk));
        p->sent += sizeof(chunk);
        AW_AWAIT(aw_stream_drain(p->s), NULL);
    }
    AW_END();
}

/* The suite both sides must have agreed on. */
static void
check_suite(const char *cipher)
{
    if (cipher == NULL || strcmp(cipher, TLS_SUITE) != 0) {
        fprintf(stderr, "awbench: tls: negotiated %s, not " TLS_SUITE "\n",
                cipher != NULL ? cipher : "nothing");
        exit(1);
    }
}

static double
bench_tls_mb_s(void)
{
    struct mb_pump p = {NULL, 0};
    aw_tls_context *sctx, *cctx;
    aw_loop *loop;
    aw_server *srv = NULL;
    aw_future *f;
    aw_task *t;
    void *s = NULL;
    double t0, t1;
    int rc, lfd, port;

    tls_setup();
    sctx = aw_ctx(AW_TLS_SERVER, 1);
    cctx = aw_ctx(AW_TLS_CLIENT, 1);
    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    lfd = listen_socket(&port);
    f = aw_start_server_sock_tls(loop, lfd, sctx, mb_on_client, loop, 0);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("start_server_sock_tls", rc);
    aw_future_take_result(f, (void **)&srv, NULL);
    aw_future_unref(f);
    f = aw_open_connection_tls(loop, "127.0.0.1", port, cctx, TLS_HOST);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("open_connection_tls", rc);
    aw_future_take_result(f, &s, NULL);
    aw_future_unref(f);
    p.s = s;
    check_suite(aw_tls_cipher(aw_stream_transport(p.s)));
    mb_got = 0;
    t0 = bench_now();
    t = aw_task_new(loop, mb_pump_task, &p, NULL);
    while (mb_got < MB_TOTAL && bench_now() - t0 < MB_STALL)
        aw_loop_run_once(loop, 0);
    t1 = bench_now();
    if (mb_got < MB_TOTAL)
        bench_die("tls_mb_s: the stream stalled", -ETIMEDOUT);
    run_future(loop, t, "tls_mb_s pump");
    aw_stream_close(p.s);
    run_future(loop, aw_stream_wait_closed(p.s), "tls_mb_s close");
    aw_stream_unref(p.s);
    aw_server_close(srv);
    bench_end_tasks(loop);
    run_future(loop, aw_server_wait_closed(srv), "tls_mb_s server close");
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    aw_tls_context_unref(sctx);
    aw_tls_context_unref(cctx);
    return (double)MB_TOTAL / (t1 - t0) / 1e6;
}

#ifdef HAVE_LIBEVENT_OPENSSL
/* Raw: a writer bufferevent refilled with 64 KiB whenever its output
 * drains below 16 KiB (the stream's drain), a reader bufferevent taking
 * its input out 64 KiB at a time. */
static size_t raw_mb_sent;
static double raw_mb_t0;
static struct bufferevent *raw_mb_reader;
static SSL_CTX *raw_mb_sctx;

static void
raw_mb_writer_cb(struct bufferevent *bev, void *arg)
{
    static char chunk[MB_CHUNK];

    (void)arg;
    if (raw_mb_sent < MB_TOTAL) {
        bufferevent_write(bev, chunk, sizeof(chunk));
        raw_mb_sent += sizeof(chunk);
    }
}

static void
raw_mb_writer_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & BEV_EVENT_CONNECTED) {
        check_suite(SSL_get_cipher_name(bufferevent_openssl_get_ssl(bev)));
        raw_mb_t0 = bench_now();
        raw_mb_writer_cb(bev, arg);
    } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        bench_die("tls_mb_s: the raw client failed", -EIO);
    }
}

/* The writer reads too (the session tickets), as a stream does. */
static void
raw_drain_input(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_drain(bufferevent_get_input(bev),
                   evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
raw_mb_reader_cb(struct bufferevent *bev, void *arg)
{
    static char chunk[MB_CHUNK];
    struct evbuffer *in = bufferevent_get_input(bev);
    int n;

    while ((n = evbuffer_remove(in, chunk, sizeof(chunk))) > 0)
        mb_got += (size_t)n;
    if (mb_got >= MB_TOTAL)
        event_base_loopbreak(arg);
}

static void
raw_mb_accept(struct evconnlistener *l, evutil_socket_t fd,
              struct sockaddr *sa, int len, void *arg)
{
    SSL *ssl = SSL_new(raw_mb_sctx);

    (void)l;
    (void)sa;
    (void)len;
    nodelay(fd);
    raw_mb_reader = bufferevent_openssl_socket_new(
        arg, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(raw_mb_reader, raw_mb_reader_cb, NULL, NULL, arg);
    bufferevent_enable(raw_mb_reader, EV_READ | EV_WRITE);
}

static void
break_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static double
raw_tls_mb_s(void)
{
    struct event_base *base;
    struct evconnlistener *l;
    struct bufferevent *w;
    struct sockaddr_in sin;
    struct timeval stall = {MB_STALL, 0};
    struct event *guard;
    SSL_CTX *cctx;
    double t1;
    int port;

    tls_setup();
    raw_mb_sctx = raw_ctx(1, 1);
    cctx = raw_ctx(0, 1);
    base = bench_raw_base();
    l = evconnlistener_new(base, raw_mb_accept, base, LEV_OPT_CLOSE_ON_FREE,
                           0, listen_socket(&port));
    sin = loopback(port);
    w = bufferevent_openssl_socket_new(base, nodelay_socket(),
                                       raw_client_ssl(cctx),
                                       BUFFEREVENT_SSL_CONNECTING,
                                       BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(w, raw_drain_input, raw_mb_writer_cb,
                      raw_mb_writer_event, NULL);
    bufferevent_setwatermark(w, EV_WRITE, 16 * 1024, 0);
    bufferevent_enable(w, EV_READ | EV_WRITE);
    guard = evtimer_new(base, break_cb, base);
    evtimer_add(guard, &stall);
    raw_mb_sent = mb_got = 0;
    bufferevent_socket_connect(w, (struct sockaddr *)&sin, sizeof(sin));
    event_base_dispatch(base);
    t1 = bench_now();
    event_free(guard);
    bufferevent_free(w);
    if (raw_mb_reader != NULL)
        bufferevent_free(raw_mb_reader);
    raw_mb_reader = NULL;
    evconnlistener_free(l);
    event_base_free(base);
    SSL_CTX_free(raw_mb_sctx);
    SSL_CTX_free(cctx);
    if (raw_session != NULL)
        SSL_SESSION_free(raw_session);
    raw_session = NULL;
    if (mb_got < MB_TOTAL) {
        fprintf(stderr, "awbench: tls_mb_s: the bufferevents stalled after "
                        "%zu bytes\n", mb_got);
        return NAN;
    }
    return (double)MB_TOTAL / (t1 - raw_mb_t0) / 1e6;
}
#else
static double
raw_tls_mb_s(void)
{
    return NAN;
}
#endif

/* ---- tls_handshakes, tls_resumed: handshakes per second ---------------- */

/* The client runs in a forked process pinned to the second CPU (the
 * server to the first, when there are two): HS_CONNS connections at a
 * time, each a TCP connect, a handshake, one byte each way (which also
 * reads the session tickets), a close with close_notify; then the next.
 * It speaks the load client's protocol of common.c on its pipe ('S' once
 * warmed up, 'E' and the count at the end of the window), so that
 * bench_window_read() times the window on the server's side. */
static int hs_phase, hs_ctl, hs_port, hs_cache;
static long hs_count, hs_start, hs_reused, hs_reused_start;
static double hs_t0;

/* A connection done (in the client): the window's marks. */
static void
hs_done(int reused)
{
    double now = bench_now();
    char msg[1 + sizeof(long)];
    long n;

    hs_count++;
    hs_reused += reused;
    if (hs_phase == 0 && now - hs_t0 >= HS_WARMUP) {
        hs_phase = 1;
        hs_start = hs_count;
        hs_reused_start = hs_reused;
        if (write(hs_ctl, "S", 1) != 1)
            _exit(6);
    } else if (hs_phase == 1 && now - hs_t0 >= HS_WARMUP + HS_SECONDS) {
        hs_phase = 2;
        n = hs_count - hs_start;
        msg[0] = 'E';
        memcpy(msg + 1, &n, sizeof(n));
        if (write(hs_ctl, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
            _exit(6);
    }
}

/* The client's last word: whether the handshakes were what they should
 * be (all resumed with the cache on, none without). */
static void
hs_client_exit(const char *who)
{
    long n = hs_count - hs_start, r = hs_reused - hs_reused_start;

    if (hs_cache && r < n * 9 / 10)
        fprintf(stderr, "awbench: tls_resumed (%s): only %ld of %ld "
                        "handshakes resumed\n", who, r, n);
    else if (!hs_cache && r > 0)
        fprintf(stderr, "awbench: tls_handshakes (%s): %ld of %ld "
                        "handshakes resumed\n", who, r, n);
    _exit(0);
}

/* libawait's client. */
static aw_tls_context *hs_actx;

struct hs_conn {
    aw_stream *s;
    int rc;
};

static void
hs_fail(const char *what, int rc)
{
    fprintf(stderr, "awbench: tls handshakes client: %s: %s\n", what,
            aw_strerror(rc));
    _exit(7);
}

static AW_TASK(hs_client_task, struct hs_conn *c)
{
    void *s = NULL;

    AW_BEGIN();
    while (hs_phase < 2) {
        AW_TRY_AWAIT(c->rc,
                     aw_open_connection_tls(aw_task_loop(AW_SELF()),
                                            "127.0.0.1", hs_port, hs_actx,
                                            TLS_HOST),
                     NULL);
        if (c->rc != 0)
            hs_fail("open_connection_tls", c->rc);
        aw_future_take_result(AW_AWAITED(), &s, NULL);
        c->s = s;
        aw_stream_write(c->s, "x", 1);
        AW_TRY_AWAIT(c->rc, aw_stream_readexactly(c->s, 1), NULL);
        if (c->rc != 0)
            hs_fail("readexactly", c->rc);
        hs_done(aw_tls_session_reused(aw_stream_transport(c->s)));
        aw_stream_close(c->s);
        aw_stream_unref(c->s);
        c->s = NULL;
    }
    AW_END();
}

static void
hs_client_ours(void)
{
    struct hs_conn conns[HS_CONNS];
    aw_loop *loop;
    int i, rc;

    if ((rc = aw_loop_new(&loop)) != 0)
        hs_fail("loop", rc);
    hs_actx = aw_ctx(AW_TLS_CLIENT, hs_cache);
    memset(conns, 0, sizeof(conns));
    for (i = 0; i < HS_CONNS; i++)
        aw_future_unref(aw_task_new(loop, hs_client_task, &conns[i], NULL));
    while (hs_phase < 2)
        aw_loop_run_once(loop, 0);
    hs_client_exit("libawait");
}

#ifdef HAVE_LIBEVENT_OPENSSL
/* The raw client: OpenSSL bufferevents. */
static struct event_base *hs_base;
static SSL_CTX *hs_sctx;

static void hs_raw_connect(void);

static void
hs_raw_client_read(struct bufferevent *bev, void *arg)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);

    (void)arg;
    if (evbuffer_get_length(bufferevent_get_input(bev)) < 1)
        return;
    hs_done(SSL_session_reused(ssl));
    SSL_shutdown(ssl); /* close_notify, as a libawait close sends */
    bufferevent_free(bev);
    if (hs_phase < 2)
        hs_raw_connect();
    else
        event_base_loopbreak(hs_base);
}

static void
hs_raw_client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED) {
        bufferevent_write(bev, "x", 1);
    } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        fprintf(stderr, "awbench: tls handshakes raw client: %s\n",
                ERR_reason_error_string(bufferevent_get_openssl_error(bev)));
        _exit(7);
    }
}

static SSL_CTX *hs_cctx;

static void
hs_raw_connect(void)
{
    struct sockaddr_in sin = loopback(hs_port);
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        hs_base, nodelay_socket(), raw_client_ssl(hs_cctx),
        BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);

    bufferevent_setcb(bev, hs_raw_client_read, NULL, hs_raw_client_event,
                      NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&sin,
                                   sizeof(sin)) != 0)
        _exit(3);
}

static void
hs_client_raw(void)
{
    int i;

    hs_base = bench_raw_base();
    hs_cctx = raw_ctx(0, hs_cache);
    for (i = 0; i < HS_CONNS; i++)
        hs_raw_connect();
    event_base_dispatch(hs_base);
    hs_client_exit("bufferevents");
}
#endif

/* Fork the client (ours: libawait's, else the bufferevents'), pin. */
static void
hs_client_start(struct bench_window *w, int ours, int lfd)
{
    int p[2];

    memset(w, 0, sizeof(*w));
    if (pipe(p) != 0)
        bench_die("pipe", -errno);
    fflush(NULL);
    w->pid = fork();
    if (w->pid < 0)
        bench_die("fork", -errno);
    if (w->pid == 0) {
        close(p[0]);
        close(lfd);
        alarm(60); /* never outlive a server that stopped answering */
        bench_pin_to(1, NULL);
        hs_ctl = p[1];
        hs_phase = 0;
        hs_count = hs_reused = 0;
        hs_t0 = bench_now();
#ifdef HAVE_LIBEVENT_OPENSSL
        if (!ours)
            hs_client_raw();
#endif
        hs_client_ours();
    }
    close(p[1]);
    w->fd = p[0];
    w->pinned = bench_pin_to(0, &w->old_mask);
}

/* libawait's server: a task per connection, one byte read, one written,
 * then to the end of the connection, and a close. */
struct hs_handler {
    aw_stream *s;
    aw_bytes *b;
    int rc;
};

static AW_TASK(hs_server_task, struct hs_handler *h)
{
    AW_BEGIN();
    AW_TRY_AWAIT(h->rc, aw_stream_readexactly(h->s, 1), NULL);
    if (h->rc == 0) {
        aw_stream_write(h->s, "x", 1);
        AW_TRY_AWAIT(h->rc, aw_stream_drain(h->s), NULL);
    }
    while (h->rc == 0) {
        AW_TRY_AWAIT(h->rc, aw_stream_read(h->s, 64), &h->b);
        if (h->rc == 0 && aw_bytes_len(h->b) == 0)
            break;
    }
    if (h->rc == AW_ECANCELLED)
        AW_RAISE(h->rc, NULL);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
hs_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, hs_server_task, sizeof(struct hs_handler));
}

static int
hs_window_cb(aw_loop *loop, void *arg)
{
    (void)loop;
    bench_window_read(arg);
    return 0;
}

static double
hs_serve_ours(int cache)
{
    struct bench_window w;
    aw_tls_context *ctx;
    aw_server *srv = NULL;
    aw_loop *loop;
    aw_future *f;
    double rps;
    int rc, lfd;

    hs_cache = cache;
    lfd = listen_socket(&hs_port);
    hs_client_start(&w, 1, lfd);
    ctx = aw_ctx(AW_TLS_SERVER, cache);
    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    f = aw_start_server_sock_tls(loop, lfd, ctx, hs_on_client, loop, 0);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("start_server_sock_tls", rc);
    aw_future_take_result(f, (void **)&srv, NULL);
    aw_future_unref(f);
    if ((rc = aw_loop_add_reader(loop, w.fd, hs_window_cb, &w)) != 0)
        bench_die("add_reader", rc);
    while (!w.done)
        aw_loop_run_once(loop, 0);
    aw_loop_remove_reader(loop, w.fd);
    bench_load_end(&w, &rps, NULL);
    aw_server_close(srv);
    bench_end_tasks(loop);
    run_future(loop, aw_server_wait_closed(srv), "server close");
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    aw_tls_context_unref(ctx);
    return rps;
}

#ifdef HAVE_LIBEVENT_OPENSSL
/* The raw server: a bufferevent per connection doing the same. */
static int hs_live;

static void
hs_raw_server_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);

    (void)arg;
    if (evbuffer_get_length(in) >= 1) {
        evbuffer_drain(in, evbuffer_get_length(in));
        bufferevent_write(bev, "x", 1);
    }
}

static void
hs_raw_server_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (what & BEV_EVENT_EOF)
            SSL_shutdown(bufferevent_openssl_get_ssl(bev));
        bufferevent_free(bev);
        hs_live--;
    }
}

static void
hs_raw_accept(struct evconnlistener *l, evutil_socket_t fd,
              struct sockaddr *sa, int len, void *arg)
{
    struct bufferevent *bev;

    (void)l;
    (void)sa;
    (void)len;
    nodelay(fd);
    bev = bufferevent_openssl_socket_new(arg, fd, SSL_new(hs_sctx),
                                         BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    hs_live++;
    bufferevent_setcb(bev, hs_raw_server_read, NULL, hs_raw_server_event,
                      NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
hs_raw_window_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (bench_window_read(arg))
        event_base_loopbreak(hs_base);
}

static double
hs_serve_raw(int cache)
{
    struct bench_window w;
    struct evconnlistener *l;
    struct event *ev;
    double rps;
    int lfd;

    hs_cache = cache;
    lfd = listen_socket(&hs_port);
    hs_client_start(&w, 0, lfd);
    hs_sctx = raw_ctx(1, cache);
    hs_base = bench_raw_base();
    l = evconnlistener_new(hs_base, hs_raw_accept, hs_base,
                           LEV_OPT_CLOSE_ON_FREE, 0, lfd);
    ev = event_new(hs_base, w.fd, EV_READ | EV_PERSIST, hs_raw_window_cb, &w);
    event_add(ev, NULL);
    event_base_dispatch(hs_base);
    event_free(ev);
    bench_load_end(&w, &rps, NULL);
    evconnlistener_free(l);
    while (hs_live > 0) /* the connections see their end */
        event_base_loop(hs_base, EVLOOP_ONCE);
    event_base_free(hs_base);
    hs_base = NULL;
    SSL_CTX_free(hs_sctx);
    return rps;
}
#else
static double
hs_serve_raw(int cache)
{
    (void)cache;
    return NAN;
}
#endif

static double
bench_tls_handshakes(void)
{
    tls_setup();
    return hs_serve_ours(0);
}

static double
raw_tls_handshakes(void)
{
    tls_setup();
    return hs_serve_raw(0);
}

static double
bench_tls_resumed(void)
{
    tls_setup();
    return hs_serve_ours(1);
}

static double
raw_tls_resumed(void)
{
    tls_setup();
    return hs_serve_raw(1);
}

/* ---- tls_conn_bytes: the server's heap per idle connection ------------- */

/* CB_N clients in a forked process handshake (blocking OpenSSL calls)
 * and hold their connections open until told; the server's heap grows
 * by what each connection keeps: libawait's transport, TLS layer,
 * stream and a task awaiting a line, or the raw bufferevent, and, in
 * both, OpenSSL's SSL object with its buffers.  Said once per side on
 * standard error: how much of it is OpenSSL's, and how much of that its
 * record buffers are (what SSL_free_buffers() gives back: what
 * SSL_MODE_RELEASE_BUFFERS would not keep while idle). */
struct cb_child {
    pid_t pid;
    int sync[2];  /* the parent writes a byte: the clients go */
    int gone[2];  /* closed by the child's exit */
};

static void
cb_clients(int port, int n)
{
    struct sockaddr_in sin = loopback(port);
    SSL_CTX *ctx = raw_ctx(0, 0);
    int i;

    for (i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        SSL *ssl;

        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
            _exit(1);
        ssl = raw_client_ssl(ctx);
        if (SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
            fprintf(stderr, "awbench: tls_conn_bytes client: handshake "
                            "%d failed\n", i);
            _exit(1);
        }
    }
}

static int
cb_want(void)
{
    struct rlimit rl;
    int want = CB_N;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < want + 64) {
        want = (int)rl.rlim_cur - 64;
        fprintf(stderr, "awbench: tls_conn_bytes: only %d connections (file "
                        "limit)\n", want);
    }
    return want;
}

static void
cb_start(struct cb_child *c, int port, int want, int lfd)
{
    char x;

    if (pipe(c->sync) != 0 || pipe(c->gone) != 0)
        bench_die("pipe", -errno);
    fflush(NULL);
    c->pid = fork();
    if (c->pid < 0)
        bench_die("fork", -errno);
    if (c->pid == 0) {
        close(lfd);
        close(c->gone[0]);
        close(c->sync[1]);
        alarm(60);
        cb_clients(port, want);
        if (read(c->sync[0], &x, 1) < 0)
            _exit(1);
        _exit(0);
    }
    close(c->gone[1]);
    close(c->sync[0]);
}

static void
cb_end(struct cb_child *c)
{
    int status = 0;

    if (write(c->sync[1], "x", 1) != 1)
        bench_die("write", -errno);
    waitpid(c->pid, &status, 0);
    close(c->sync[1]);
    close(c->gone[0]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_die("tls_conn_bytes: the clients failed", -EIO);
}

/* What the connections took, said once per side: OpenSSL's share (and
 * of it, the record buffers SSL_free_buffers() gave back), and the rest,
 * whose (others: the libraries outside OpenSSL). */
static void
cb_report(const char *who, const char *others, int *said, int n,
          size_t heap, size_t ossl, size_t buffers, int release_mode)
{
    size_t rest = heap > ossl ? heap - ossl : 0;

    if (*said)
        return;
    *said = 1;
    if (!ossl_counted) {
        fprintf(stderr, "awbench: tls_conn_bytes (%s): %zu bytes per "
                        "connection; OpenSSL's share not measured (it had "
                        "allocated before awbench could count)\n",
                who, heap / (size_t)n);
        return;
    }
    fprintf(stderr, "awbench: tls_conn_bytes (%s): %zu bytes per "
                    "connection: OpenSSL %zu (of which record buffers "
                    "%zu; SSL_MODE_RELEASE_BUFFERS %s), %s %zu; most of it "
                    "%s\n",
            who, heap / (size_t)n, ossl / (size_t)n, buffers / (size_t)n,
            release_mode ? "on" : "off", others, rest / (size_t)n,
            ossl >= rest ? "OpenSSL's" : others);
}

/* libawait's server: a task per connection awaiting a line. */
static aw_stream **cb_streams;
static int cb_count, cb_gone;

struct cb_handler {
    aw_stream *s;
    aw_bytes *line;
    int rc;
};

static AW_TASK(cb_idle_task, struct cb_handler *h)
{
    AW_BEGIN();
    cb_streams[cb_count++] = h->s;
    AW_TRY_AWAIT(h->rc, aw_stream_readline(h->s), &h->line);
    AW_FINALLY();
    aw_stream_close(h->s);
    AW_END();
}

static void
cb_on_client(aw_stream *s, void *arg)
{
    bench_spawn_client(arg, s, cb_idle_task, sizeof(struct cb_handler));
}

static int
cb_gone_cb(aw_loop *loop, void *arg)
{
    (void)arg;
    cb_gone = 1;
    aw_loop_remove_reader(loop, *(int *)arg);
    return 0;
}

static double
bench_tls_conn_bytes(void)
{
    static int said;
    struct cb_child c;
    aw_tls_context *ctx;
    aw_server *srv = NULL;
    aw_loop *loop;
    aw_future *f;
    size_t before, after, freed, ossl0, ossl1;
    int want = cb_want(), rc, lfd, port, i, mode;

    tls_setup();
    ctx = aw_ctx(AW_TLS_SERVER, 1);
    mode = (SSL_CTX_get_mode(aw_tls_context_native(ctx)) &
            SSL_MODE_RELEASE_BUFFERS) != 0;
    cb_streams = calloc((size_t)want, sizeof(*cb_streams));
    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    lfd = listen_socket(&port);
    f = aw_start_server_sock_tls(loop, lfd, ctx, cb_on_client, loop, 0);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0)
        bench_die("start_server_sock_tls", rc);
    aw_future_take_result(f, (void **)&srv, NULL);
    aw_future_unref(f);
    cb_count = cb_gone = 0;
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    before = bench_heap_in_use();
    ossl0 = ossl_in_use();
    cb_start(&c, port, want, lfd);
    aw_loop_add_reader(loop, c.gone[0], cb_gone_cb, &c.gone[0]);
    while (cb_count < want && !cb_gone)
        aw_loop_run_once(loop, 0);
    if (cb_count < want)
        bench_die("tls_conn_bytes: the clients failed", -EIO);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    after = bench_heap_in_use();
    ossl1 = ossl_in_use();
    for (i = 0; i < want; i++)
        SSL_free_buffers(aw_tls_native(aw_stream_transport(cb_streams[i])));
    freed = after - bench_heap_in_use();
    cb_report("libawait", "libawait and libevent", &said, want,
              after - before, ossl1 - ossl0, freed, mode);
    if (!cb_gone)
        aw_loop_remove_reader(loop, c.gone[0]);
    cb_end(&c);
    bench_end_tasks(loop);
    aw_server_close(srv);
    run_future(loop, aw_server_wait_closed(srv), "server close");
    aw_server_free(srv);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    aw_tls_context_unref(ctx);
    free(cb_streams);
    cb_streams = NULL;
    return (double)(after - before) / (double)want;
}

#ifdef HAVE_LIBEVENT_OPENSSL
/* The raw server: a bufferevent per connection, reading. */
static struct bufferevent **cb_bevs;
static SSL_CTX *cb_sctx;

static void
cb_raw_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED)
        cb_bevs[cb_count++] = bev;
}

static void
cb_raw_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_drain(bufferevent_get_input(bev),
                   evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
cb_raw_accept(struct evconnlistener *l, evutil_socket_t fd,
              struct sockaddr *sa, int len, void *arg)
{
    struct bufferevent *bev;

    (void)l;
    (void)sa;
    (void)len;
    nodelay(fd);
    bev = bufferevent_openssl_socket_new(arg, fd, SSL_new(cb_sctx),
                                         BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, cb_raw_read, NULL, cb_raw_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
cb_raw_gone(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    cb_gone = 1;
}

static double
raw_tls_conn_bytes(void)
{
    static int said;
    struct cb_child c;
    struct evconnlistener *l;
    struct event_base *base;
    struct event *gone;
    size_t before, after, freed, ossl0, ossl1;
    int want = cb_want(), lfd, port, i, mode;

    tls_setup();
    cb_sctx = raw_ctx(1, 1);
    mode = (SSL_CTX_get_mode(cb_sctx) & SSL_MODE_RELEASE_BUFFERS) != 0;
    cb_bevs = calloc((size_t)want, sizeof(*cb_bevs));
    base = bench_raw_base();
    lfd = listen_socket(&port);
    l = evconnlistener_new(base, cb_raw_accept, base, LEV_OPT_CLOSE_ON_FREE,
                           0, lfd);
    cb_count = cb_gone = 0;
    event_base_loop(base, EVLOOP_NONBLOCK);
    before = bench_heap_in_use();
    ossl0 = ossl_in_use();
    cb_start(&c, port, want, lfd);
    gone = event_new(base, c.gone[0], EV_READ, cb_raw_gone, NULL);
    event_add(gone, NULL);
    while (cb_count < want && !cb_gone)
        event_base_loop(base, EVLOOP_ONCE);
    if (cb_count < want)
        bench_die("tls_conn_bytes: the clients failed", -EIO);
    event_base_loop(base, EVLOOP_NONBLOCK);
    after = bench_heap_in_use();
    ossl1 = ossl_in_use();
    for (i = 0; i < want; i++)
        SSL_free_buffers(bufferevent_openssl_get_ssl(cb_bevs[i]));
    freed = after - bench_heap_in_use();
    cb_report("bufferevents", "libevent", &said, want, after - before,
              ossl1 - ossl0, freed, mode);
    event_free(gone);
    cb_end(&c);
    for (i = 0; i < want; i++)
        bufferevent_free(cb_bevs[i]);
    evconnlistener_free(l);
    event_base_free(base);
    SSL_CTX_free(cb_sctx);
    free(cb_bevs);
    cb_bevs = NULL;
    return (double)(after - before) / (double)want;
}
#else
static double
raw_tls_conn_bytes(void)
{
    return NAN;
}
#endif

static const struct bench benches[] = {
    {"tls_mb_s", "MB/s", bench_tls_mb_s, raw_tls_mb_s,
     "ratio >= 1.0 (vs OpenSSL bufferevents)"},
    {"tls_handshakes", "hs/s", bench_tls_handshakes, raw_tls_handshakes,
     "ratio >= 0.95 (vs OpenSSL bufferevents)"},
    {"tls_resumed", "hs/s", bench_tls_resumed, raw_tls_resumed,
     "(session cache on, vs OpenSSL bufferevents)"},
    {"tls_conn_bytes", "bytes", bench_tls_conn_bytes, raw_tls_conn_bytes,
     "<= 65536"},
};

BENCH_MODULE(bench_tls_module, benches);

/* SPDX-License-Identifier: MIT */
/* test_awecho.c: tools/awecho, the echo daemon, run as a program and
 * driven over its Unix socket and over TCP as `nc` would drive it, and
 * over TLS as `openssl s_client` would (OpenSSL's own client, trusting a
 * certificate made by tools/certgen.c). */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testutil.h"
#include "../tools/certgen.h"

#define WAIT_MS 10000

static const char *
awecho_path(void)
{
    const char *p = getenv("AWECHO");

    return p != NULL ? p : "tools/awecho";
}

/* Start awecho with args; its stderr comes out of *errfd. */
static pid_t
start(char *const argv[], int *errfd)
{
    int p[2];
    pid_t pid;

    ck_assert_int_eq(pipe(p), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        /* Never outlive a test that failed, never hold the TAP pipe. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(null, 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        execv(awecho_path(), argv);
        _exit(127);
    }
    close(p[1]);
    *errfd = p[0];
    return pid;
}

/* Read from fd until buf holds a line or WAIT_MS pass; returns the
 * length (0 at end of file). */
static size_t
read_some(int fd, char *buf, size_t size, int want_line)
{
    size_t len = 0;

    while (len < size - 1) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n;

        ck_assert_msg(poll(&pfd, 1, WAIT_MS) == 1, "awecho said nothing");
        n = read(fd, buf + len, size - 1 - len);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        len += (size_t)n;
        if (!want_line || memchr(buf, '\n', len) != NULL)
            break;
    }
    buf[len] = '\0';
    return len;
}

/* Read exactly n bytes (or fail). */
static void
read_exactly(int fd, char *buf, size_t n)
{
    size_t len = 0;

    while (len < n) {
        size_t got = read_some(fd, buf + len, n - len + 1, 0);

        ck_assert_msg(got > 0, "end of file after %zu of %zu bytes", len, n);
        len += got;
    }
}

static void
write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);

        ck_assert_int_gt(w, 0);
        s += w;
        n -= (size_t)w;
    }
}

static int
connect_unix(const char *path)
{
    struct sockaddr_un sun;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    return fd;
}

static int
connect_tcp(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* Send lines and a last one without a newline, half-close: everything
 * comes back, then the end of file. */
static void
echo_session(int fd)
{
    static const char msg[] = "hello\nworld\nno newline";
    char buf[64];

    write_all(fd, msg, sizeof(msg) - 1);
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    read_exactly(fd, buf, sizeof(msg) - 1);
    ck_assert_int_eq(memcmp(buf, msg, sizeof(msg) - 1), 0);
    ck_assert_uint_eq(read_some(fd, buf, sizeof(buf), 0), 0);
}

/* Wait for the daemon's exit: status 0 (under ASan, 0 means no leak). */
static void
assert_clean_exit(pid_t pid)
{
    int status = 0, i;

    for (i = 0; i < WAIT_MS / 10; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            break;
        usleep(10000);
    }
    ck_assert_msg(i < WAIT_MS / 10, "awecho did not exit");
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "awecho ended with status %#x", status);
}

START_TEST(unix_socket_echo_and_sigterm)
{
    char path[64], line[256];
    char *argv[] = {"awecho", "-v", "-u", path, NULL};
    int errfd, idle, fd;
    pid_t pid;

    snprintf(path, sizeof(path), "/tmp/awecho-test.%ld", (long)getpid());
    unlink(path);
    pid = start(argv, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "serving on") != NULL, "awecho: %s", line);
    fd = connect_unix(path);
    /* -v names each client by its address (unnamed here). */
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "new client") != NULL &&
                      strstr(line, "from (unnamed)") != NULL,
                  "awecho: %s", line);
    echo_session(fd);
    close(fd);
    idle = connect_unix(path); /* a client still connected at shutdown */
    write_all(idle, "x\n", 2);
    read_exactly(idle, line, 2);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    /* Its task is cancelled and its stream closed. */
    ck_assert_uint_eq(read_some(idle, line, sizeof(line), 0), 0);
    assert_clean_exit(pid);
    ck_assert_int_eq(access(path, F_OK), -1); /* the socket file is gone */
    close(idle);
    close(errfd);
}
END_TEST

START_TEST(tcp_echo_on_any_port_and_sigint)
{
    char line[256];
    char *argv[] = {"awecho", "-h", "127.0.0.1", "-p", "0", NULL};
    const char *colon;
    int errfd, fd, i, port;
    pid_t pid;

    pid = start(argv, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    colon = strrchr(line, ':');
    ck_assert_msg(colon != NULL, "awecho: %s", line);
    port = atoi(colon + 1);
    ck_assert_int_gt(port, 0);
    for (i = 0; i < 3; i++) { /* one client after another */
        fd = connect_tcp(port);
        echo_session(fd);
        close(fd);
    }
    ck_assert_int_eq(kill(pid, SIGINT), 0);
    assert_clean_exit(pid);
    close(errfd);
}
END_TEST

/* Clients that send lines and close without reading what comes back:
 * the echo finds the peer gone (EPIPE, or a reset).  awecho must go on
 * serving, report nothing for them, and exit cleanly. */
static void
send_lines_and_vanish(int fd)
{
    static char lines[64 * 1024];
    size_t i;

    for (i = 0; i < sizeof(lines); i++)
        lines[i] = i % 64 == 63 ? '\n' : 'a' + (char)(i % 26);
    write_all(fd, lines, sizeof(lines));
    close(fd);
}

START_TEST(clients_vanishing_unread_do_not_kill_awecho)
{
    char path[64], line[256];
    char *argv_unix[] = {"awecho", "-u", path, NULL};
    char *argv_tcp[] = {"awecho", "-h", "127.0.0.1", "-p", "0", NULL};
    int errfd, fd, i, port;
    pid_t pid;

    /* Over a Unix socket. */
    snprintf(path, sizeof(path), "/tmp/awecho-pipe.%ld", (long)getpid());
    unlink(path);
    pid = start(argv_unix, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "serving on") != NULL, "awecho: %s", line);
    for (i = 0; i < 5; i++)
        send_lines_and_vanish(connect_unix(path));
    fd = connect_unix(path); /* still serving */
    echo_session(fd);
    close(fd);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    assert_clean_exit(pid);
    close(errfd);

    /* Over TCP. */
    pid = start(argv_tcp, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strrchr(line, ':') != NULL, "awecho: %s", line);
    port = atoi(strrchr(line, ':') + 1);
    for (i = 0; i < 5; i++)
        send_lines_and_vanish(connect_tcp(port));
    fd = connect_tcp(port);
    echo_session(fd);
    close(fd);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    assert_clean_exit(pid);
    close(errfd);
}
END_TEST

/* Everything awecho writes to stderr until it exits. */
static void
read_to_end(int fd, char *buf, size_t size)
{
    size_t len = 0;

    for (;;) {
        size_t n = read_some(fd, buf + len, size - len, 0);

        if (n == 0 || len + n >= size - 1)
            break;
        len += n;
    }
}

/* A client that resets the connection (or vanishes) is a normal end for
 * awecho: no "never retrieved" report per connection. */
START_TEST(resetting_client_is_not_reported)
{
    static char err[1 << 16];
    char line[256];
    char *argv[] = {"awecho", "-h", "127.0.0.1", "-p", "0", NULL};
    struct linger lg = {1, 0};
    int errfd, fd, i, port;
    pid_t pid;

    pid = start(argv, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strrchr(line, ':') != NULL, "awecho: %s", line);
    port = atoi(strrchr(line, ':') + 1);
    for (i = 0; i < 3; i++) {
        fd = connect_tcp(port);
        write_all(fd, "hello\n", 6);
        read_exactly(fd, line, 6); /* the client's task is under way */
        write_all(fd, "again\n", 6);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg,
                                    sizeof(lg)), 0);
        close(fd); /* an RST */
    }
    for (i = 0; i < 3; i++)
        send_lines_and_vanish(connect_tcp(port));
    fd = connect_tcp(port);
    echo_session(fd);
    close(fd);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    assert_clean_exit(pid);
    read_to_end(errfd, err, sizeof(err));
    ck_assert_msg(strstr(err, "never retrieved") == NULL, "awecho: %s", err);
    close(errfd);
}
END_TEST

/* Parse "... served N clients" for loop k out of awecho's last words. */
static long
loop_served(const char *err, int k)
{
    char key[64];
    const char *p;

    snprintf(key, sizeof(key), "loop %d served ", k);
    p = strstr(err, key);
    ck_assert_msg(p != NULL, "no \"%s\" in: %s", key, err);
    return atol(p + strlen(key));
}

#define SPREAD_CONNS 64

/* issue 14, one loop per core: --threads 2 runs two loops in two threads,
 * each listening on the port with SO_REUSEPORT.  Many connections open at
 * once all echo correctly, the kernel gives some to each loop, and
 * SIGTERM (taken by the first loop) stops both: clients still connected
 * are closed, the exit is clean. */
START_TEST(threads_serve_on_every_loop_and_stop_together)
{
    static char err[1 << 16];
    char line[256];
    char *argv[] = {"awecho", "-h", "127.0.0.1", "-p", "0", "--threads", "2",
                    NULL};
    int errfd, fds[SPREAD_CONNS], idle, i, port;
    long a, b;
    pid_t pid;

    pid = start(argv, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "2 loops in 2 threads") != NULL,
                  "awecho: %s", line);
    port = atoi(strchr(strrchr(line, '.'), ':') + 1);
    ck_assert_int_gt(port, 0);
    for (i = 0; i < SPREAD_CONNS; i++)
        fds[i] = connect_tcp(port);
    for (i = 0; i < SPREAD_CONNS; i++) {
        char msg[32], back[32];
        int n = snprintf(msg, sizeof(msg), "client %d\n", i);

        write_all(fds[i], msg, (size_t)n);
        read_exactly(fds[i], back, (size_t)n);
        ck_assert_int_eq(memcmp(back, msg, (size_t)n), 0);
    }
    for (i = 0; i < SPREAD_CONNS; i++) {
        echo_session(fds[i]);
        close(fds[i]);
    }
    idle = connect_tcp(port); /* connected at shutdown, on either loop */
    write_all(idle, "x\n", 2);
    read_exactly(idle, line, 2);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_uint_eq(read_some(idle, line, sizeof(line), 0), 0);
    assert_clean_exit(pid);
    read_to_end(errfd, err, sizeof(err));
    a = loop_served(err, 1);
    b = loop_served(err, 2);
    ck_assert_int_eq(a + b, SPREAD_CONNS + 1);
    /* Each loop had some (all on one: a chance of 2^-64 or so). */
    ck_assert_msg(a > 0 && b > 0, "loops served %ld and %ld", a, b);
    ck_assert_msg(strstr(err, "never retrieved") == NULL, "awecho: %s", err);
    close(idle);
    close(errfd);
}
END_TEST

/* A port another socket holds: the first loop cannot listen, the others
 * are never started, awecho says why and exits with status 1. */
START_TEST(threads_port_taken_fails_cleanly)
{
    static char err[1 << 16];
    char portarg[16];
    char *argv[] = {"awecho", "-h", "127.0.0.1", "-p", portarg, "-t", "3",
                    NULL};
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int errfd, status = 0, holder;
    pid_t pid;

    holder = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(holder, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(holder, 1), 0);
    ck_assert_int_eq(getsockname(holder, (struct sockaddr *)&sin, &len), 0);
    snprintf(portarg, sizeof(portarg), "%d", ntohs(sin.sin_port));
    pid = start(argv, &errfd);
    read_to_end(errfd, err, sizeof(err));
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "awecho ended with status %#x: %s", status, err);
    ck_assert_msg(strstr(err, "in use") != NULL, "awecho: %s", err);
    close(holder);
    close(errfd);
}
END_TEST

/* --threads takes 1 to 256, and TCP only (a Unix socket cannot be
 * shared by SO_REUSEPORT): anything else is a usage error. */
START_TEST(threads_bad_values_are_usage_errors)
{
    char *bad[][6] = {
        {"awecho", "-t", "0", NULL},
        {"awecho", "--threads", "257", NULL},
        {"awecho", "-t", "2", "-u", "/tmp/awecho-never", NULL},
    };
    char line[512];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int errfd, status = 0;
        pid_t pid = start(bad[i], &errfd);

        read_to_end(errfd, line, sizeof(line));
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 2,
                      "%s %s: status %#x", bad[i][1], bad[i][2], status);
        ck_assert_msg(strstr(line, "usage: awecho") != NULL, "%s", line);
        close(errfd);
    }
    ck_assert_int_eq(access("/tmp/awecho-never", F_OK), -1);
}
END_TEST

/* A datagram socket in the abstract namespace standing for the service
 * manager's NOTIFY_SOCKET; its name ("@...") in name. */
static int
notify_socket(char *name, size_t size)
{
    struct sockaddr_un sun;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    size_t len;

    ck_assert_int_ge(fd, 0);
    snprintf(name, size, "@awecho-notify.%ld", (long)getpid());
    len = strlen(name);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path + 1, name + 1, len - 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                                      len)),
                     0);
    return fd;
}

/* The next datagram: it must hold want. */
static void
expect_notice(int fd, const char *want)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    char buf[256];
    ssize_t n;

    ck_assert_msg(poll(&pfd, 1, WAIT_MS) == 1, "no notice, waited for %s",
                  want);
    n = recv(fd, buf, sizeof(buf) - 1, 0);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_msg(strstr(buf, want) != NULL, "notice: %s", buf);
}

/* Socket activation as systemd does it: the test listens, awecho gets
 * the socket at fd 3 with LISTEN_FDS=1 and LISTEN_PID its own pid (set
 * in the child, between fork and exec), serves it without binding, and
 * says READY=1, then STOPPING=1, on NOTIFY_SOCKET. */
START_TEST(serves_sockets_from_the_service_manager)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    char name[64], line[256];
    char *argv[] = {"awecho", "-p", "1", NULL}; /* not used: handed one */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int nfd, p[2], fd;
    pid_t pid;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(lfd, 16), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
    nfd = notify_socket(name, sizeof(name));
    ck_assert_int_eq(pipe(p), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY), moved;
        char pidstr[32];

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* fd 3 may be taken by a descriptor of the test's: move ours
         * out of the way first, then put it at 3 (dup2 makes it
         * inheritable). */
        moved = fcntl(lfd, F_DUPFD_CLOEXEC, 10);
        if (null < 0 || moved < 0 || dup2(null, 1) != 1 || dup2(p[1], 2) != 2 ||
            dup2(moved, 3) != 3)
            _exit(126);
        snprintf(pidstr, sizeof(pidstr), "%ld", (long)getpid());
        setenv("LISTEN_PID", pidstr, 1);
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_FDNAMES", "echo", 1);
        setenv("NOTIFY_SOCKET", name, 1);
        execv(awecho_path(), argv);
        _exit(127);
    }
    close(p[1]);
    close(lfd);
    expect_notice(nfd, "READY=1");
    read_some(p[0], line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "serving 1 socket from the service manager") !=
                      NULL,
                  "awecho: %s", line);
    fd = connect_tcp(ntohs(sin.sin_port));
    echo_session(fd);
    close(fd);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    expect_notice(nfd, "STOPPING=1");
    assert_clean_exit(pid);
    close(nfd);
    close(p[0]);
}
END_TEST

START_TEST(bad_option_exits_with_usage)
{
    char line[256];
    char *argv[] = {"awecho", "-z", NULL};
    int errfd, status = 0;
    pid_t pid;

    pid = start(argv, &errfd);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    read_exactly(errfd, line, 1);
    read_some(errfd, line + 1, sizeof(line) - 1, 0); /* getopt's, then ours */
    ck_assert_msg(strstr(line, "usage: awecho") != NULL, "%s", line);
    close(errfd);
}
END_TEST

/* ---- TLS ---------------------------------------------------------------- */

/* A self-signed certificate for localhost written to dir/cert.pem and
 * dir/key.pem (dir made here); its PEM kept in *pem for the client. */
static void
make_cert_files(char *dir, size_t size, char *cert, char *key,
                struct certgen_pem *pem)
{
    snprintf(dir, size, "/tmp/awecho-tls.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cert, size, "%s/cert.pem", dir);
    snprintf(key, size, "%s/key.pem", dir);
    ck_assert_int_eq(certgen_make(pem, "localhost",
                                  "DNS:localhost,IP:127.0.0.1", NULL, -60,
                                  3600, 0, 0),
                     0);
    ck_assert_int_eq(certgen_write(pem, cert, key), 0);
}

static void
remove_cert_files(const char *dir, const char *cert, const char *key)
{
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

/* An OpenSSL client over fd that trusts pem's certificate and checks the
 * name localhost; the handshake must succeed and verify. */
static SSL *
tls_client(int fd, const struct certgen_pem *pem, SSL_CTX **ctxp)
{
    struct timeval tv = {WAIT_MS / 1000, 0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    BIO *bio = BIO_new_mem_buf(pem->cert, (int)pem->cert_len);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    char err[256] = "";
    SSL *ssl;
    int rc;

    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), x), 1);
    X509_free(x);
    BIO_free(bio);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* A daemon that stops answering fails the test, never hangs it. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssl = SSL_new(ctx);
    ck_assert_int_eq(SSL_set_tlsext_host_name(ssl, "localhost"), 1);
    ck_assert_int_eq(SSL_set1_host(ssl, "localhost"), 1);
    ck_assert_int_eq(SSL_set_fd(ssl, fd), 1);
    rc = SSL_connect(ssl);
    if (rc != 1)
        ERR_error_string_n(ERR_get_error(), err, sizeof(err));
    ck_assert_msg(rc == 1, "handshake: %s", err);
    ck_assert_int_eq(SSL_get_verify_result(ssl), X509_V_OK);
    *ctxp = ctx;
    return ssl;
}

static void
tls_write_all(SSL *ssl, const char *p, size_t n)
{
    ck_assert_int_eq(SSL_write(ssl, p, (int)n), (int)n);
}

static void
tls_read_exactly(SSL *ssl, char *buf, size_t n)
{
    size_t len = 0;

    while (len < n) {
        int r = SSL_read(ssl, buf + len, (int)(n - len));

        ck_assert_msg(r > 0, "end of TLS data after %zu of %zu bytes", len,
                      n);
        len += (size_t)r;
    }
}

/* awecho --tls-cert --tls-key serves TLS: a client that trusts the
 * certificate handshakes, verifies it, and gets its lines echoed; a
 * close_notify ends the connection cleanly, and SIGTERM the daemon. */
START_TEST(tls_cert_and_key_serve_tls)
{
    static const char msg[] = "hello\nover TLS\n";
    struct certgen_pem pem = {0};
    char dir[64], cert[64], key[64], line[256], buf[64];
    char *argv[] = {"awecho", "-v", "-h", "127.0.0.1", "-p", "0",
                    "--tls-cert", cert, "--tls-key", key, NULL};
    const char *colon;
    SSL_CTX *ctx;
    SSL *ssl;
    int errfd, fd, port;
    pid_t pid;

    make_cert_files(dir, sizeof(dir), cert, key, &pem);
    pid = start(argv, &errfd);
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "serving on") != NULL &&
                      strstr(line, "(TLS)") != NULL,
                  "awecho: %s", line);
    colon = strrchr(line, ':');
    ck_assert_ptr_nonnull(colon);
    port = atoi(colon + 1);
    ck_assert_int_gt(port, 0);
    fd = connect_tcp(port);
    ssl = tls_client(fd, &pem, &ctx);
    /* -v says what was negotiated. */
    read_some(errfd, line, sizeof(line), 1);
    ck_assert_msg(strstr(line, "new client") != NULL &&
                      strstr(line, SSL_get_version(ssl)) != NULL,
                  "awecho: %s", line);
    tls_write_all(ssl, msg, sizeof(msg) - 1);
    tls_read_exactly(ssl, buf, sizeof(msg) - 1);
    ck_assert_int_eq(memcmp(buf, msg, sizeof(msg) - 1), 0);
    /* close_notify: awecho answers with its own, then the connection
     * ends (SSL_read sees the clean end, not an error). */
    ck_assert_int_ge(SSL_shutdown(ssl), 0);
    ck_assert_int_eq(SSL_read(ssl, buf, sizeof(buf)), 0);
    ck_assert_int_eq(SSL_get_error(ssl, 0), SSL_ERROR_ZERO_RETURN);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    assert_clean_exit(pid);
    close(errfd);
    remove_cert_files(dir, cert, key);
    certgen_free(&pem);
}
END_TEST

/* --tls-cert without --tls-key (or the other way round) is a usage
 * error, said as such; nothing is served. */
START_TEST(tls_cert_without_key_is_usage_error)
{
    char *bad[][6] = {
        {"awecho", "-p", "0", "--tls-cert", "/tmp/awecho-no-cert.pem", NULL},
        {"awecho", "-p", "0", "--tls-key", "/tmp/awecho-no-key.pem", NULL},
    };
    char line[512];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int errfd, status = 0;
        pid_t pid = start(bad[i], &errfd);

        read_to_end(errfd, line, sizeof(line));
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 2,
                      "%s: status %#x", bad[i][3], status);
        ck_assert_msg(strstr(line, "--tls-cert and --tls-key go together") !=
                              NULL &&
                          strstr(line, "usage: awecho") != NULL,
                      "%s", line);
        close(errfd);
    }
}
END_TEST

/* A certificate file that is not there, or a key that is not the
 * certificate's: awecho says which files and why, and exits with 1. */
START_TEST(tls_bad_cert_files_fail_cleanly)
{
    struct certgen_pem pem = {0}, other = {0};
    char dir[64], cert[64], key[64], line[1024];
    char *missing[] = {"awecho", "-p", "0", "--tls-cert",
                       "/tmp/awecho-no-such-cert.pem", "--tls-key", key,
                       NULL};
    char *mismatched[] = {"awecho", "-p", "0", "--tls-cert", cert,
                          "--tls-key", key, NULL};
    int errfd, status = 0;
    pid_t pid;

    make_cert_files(dir, sizeof(dir), cert, key, &pem);
    pid = start(missing, &errfd);
    read_to_end(errfd, line, sizeof(line));
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "status %#x: %s", status, line);
    ck_assert_msg(strstr(line, "/tmp/awecho-no-such-cert.pem") != NULL,
                  "%s", line);
    close(errfd);
    /* Another key in key.pem: it does not match cert.pem. */
    ck_assert_int_eq(certgen_make(&other, "localhost", NULL, NULL, -60, 3600,
                                  0, 0),
                     0);
    ck_assert_int_eq(certgen_write(&other, NULL, key), 0);
    pid = start(mismatched, &errfd);
    read_to_end(errfd, line, sizeof(line));
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "status %#x: %s", status, line);
    ck_assert_msg(strstr(line, cert) != NULL, "%s", line);
    close(errfd);
    remove_cert_files(dir, cert, key);
    certgen_free(&pem);
    certgen_free(&other);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("awecho");
    TCase *tc = aw_test_tcase("awecho");

    tcase_add_test(tc, unix_socket_echo_and_sigterm);
    tcase_add_test(tc, tcp_echo_on_any_port_and_sigint);
    tcase_add_test(tc, clients_vanishing_unread_do_not_kill_awecho);
    tcase_add_test(tc, resetting_client_is_not_reported);
    tcase_add_test(tc, bad_option_exits_with_usage);
    tcase_add_test(tc, threads_serve_on_every_loop_and_stop_together);
    tcase_add_test(tc, threads_port_taken_fails_cleanly);
    tcase_add_test(tc, threads_bad_values_are_usage_errors);
    tcase_add_test(tc, serves_sockets_from_the_service_manager);
    tcase_add_test(tc, tls_cert_and_key_serve_tls);
    tcase_add_test(tc, tls_cert_without_key_is_usage_error);
    tcase_add_test(tc, tls_bad_cert_files_fail_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

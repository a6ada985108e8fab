/* SPDX-License-Identifier: MIT */
/* test_udp.c: datagram endpoints over loopback UDP (IPv4 and IPv6), Unix
 * datagram sockets and socketpairs, after CPython's
 * test_asyncio/test_events.py (create_datagram_endpoint) and
 * test_selector_events.py (SelectorDatagramTransportTests). */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "testutil.h"

/* ---- a recording protocol ----------------------------------------------- */

#define EV_MADE 1
#define EV_DGRAM 2
#define EV_ERROR 3
#define EV_LOST 4
#define EV_PAUSE 5
#define EV_RESUME 6

struct peer {
    int events[64];
    int nevents;
    char last[2048];
    size_t last_len;
    struct sockaddr_storage from;
    socklen_t fromlen;
    long ndgrams;
    long next_seq; /* many_datagrams: the sequence number expected */
    long out_of_order;
    int errors[8];
    int nerrors;
    int lost, lost_error;
    int echo;
    aw_datagram_transport *t;
};

static void
note(struct peer *p, int ev)
{
    /* Runs of datagrams count once: how many is in ndgrams. */
    if (ev == EV_DGRAM && p->nevents > 0 &&
        p->events[p->nevents - 1] == EV_DGRAM)
        return;
    if (p->nevents < 64)
        p->events[p->nevents++] = ev;
}

static void
made(aw_datagram_transport *t, void *arg)
{
    struct peer *p = arg;

    p->t = aw_datagram_ref(t);
    note(p, EV_MADE);
}

static void
dgram(aw_datagram_transport *t, const void *data, size_t len,
      const struct sockaddr *addr, socklen_t addrlen, void *arg)
{
    struct peer *p = arg;
    long seq;

    note(p, EV_DGRAM);
    p->ndgrams++;
    if (len <= sizeof(p->last)) {
        memcpy(p->last, data, len);
        p->last_len = len;
    }
    if (addrlen <= sizeof(p->from)) {
        memcpy(&p->from, addr, addrlen);
        p->fromlen = addrlen;
    }
    if (len == sizeof(seq)) {
        memcpy(&seq, data, sizeof(seq));
        if (seq != p->next_seq)
            p->out_of_order++;
        p->next_seq = seq + 1;
    }
    if (p->echo)
        ck_assert_int_eq(aw_datagram_sendto(t, data, len, addr, addrlen), 0);
}

static void
error(aw_datagram_transport *t, int err, void *arg)
{
    struct peer *p = arg;

    (void)t;
    note(p, EV_ERROR);
    if (p->nerrors < 8)
        p->errors[p->nerrors++] = err;
}

static void
lost(aw_datagram_transport *t, int err, void *arg)
{
    struct peer *p = arg;

    (void)t;
    note(p, EV_LOST);
    p->lost = 1;
    p->lost_error = err;
}

static void
pause_w(aw_datagram_transport *t, void *arg)
{
    (void)t;
    note(arg, EV_PAUSE);
}

static void
resume_w(aw_datagram_transport *t, void *arg)
{
    (void)t;
    note(arg, EV_RESUME);
}

static const aw_datagram_protocol recorder = {
    AW_DATAGRAM_PROTOCOL_SIZE, made, dgram, error, lost, pause_w, resume_w};

static int
run_until(volatile int *flag)
{
    return aw_test_run_until(loop, flag, 10);
}

/* Run until *n reaches want. */
static void
run_until_count(volatile long *n, long want)
{
    while (*n < want)
        ck_assert_int_eq(aw_loop_run_once(loop, 0), 0);
}

/* The endpoint a future settles with; the peer holds its reference. */
static aw_datagram_transport *
open_ok(aw_future *f, struct peer *p)
{
    void *res = NULL;

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    aw_future_unref(f);
    ck_assert_ptr_eq(res, p->t); /* connection_made came first */
    return p->t;
}

static aw_datagram_transport *
open_ip(struct peer *p, const char *lh, int lp, const char *rh, int rp,
        int flags)
{
    memset(p, 0, sizeof(*p));
    return open_ok(aw_create_datagram_endpoint(loop, lh, lp, rh, rp,
                                               &recorder, p, flags),
                   p);
}

static int
port_of(aw_datagram_transport *t)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    ck_assert_int_eq(aw_datagram_sockname(t, (struct sockaddr *)&ss, &len), 0);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Close, wait for connection_lost, drop the peer's reference. */
static void
finish(struct peer *p, int abort)
{
    if (abort)
        ck_assert_int_eq(aw_datagram_abort(p->t), 0);
    else
        ck_assert_int_eq(aw_datagram_close(p->t), 0);
    ck_assert(run_until(&p->lost));
    ck_assert_int_eq(p->lost_error, 0);
    aw_datagram_unref(p->t);
    p->t = NULL;
}

static void
assert_events(const struct peer *p, const int *want, int n)
{
    int i;

    ck_assert_int_eq(p->nevents, n);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(p->events[i], want[i]);
}

/* A server echoing, a client connected to it: one datagram there and
 * back; the server sees the client's address as the source. */
static void
round_trip(const char *host)
{
    static struct peer srv, cli;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    static const int want_cli[] = {EV_MADE, EV_DGRAM, EV_LOST};
    static const int want_srv[] = {EV_MADE, EV_DGRAM, EV_LOST};

    open_ip(&srv, host, 0, NULL, 0, 0);
    srv.echo = 1;
    open_ip(&cli, NULL, 0, host, port_of(srv.t), 0);
    ck_assert_int_eq(aw_datagram_sendto(cli.t, "ping", 4, NULL, 0), 0);
    ck_assert_int_eq(cli.nevents, 1); /* nothing inside the call */
    run_until_count(&cli.ndgrams, 1);
    ck_assert_int_eq((int)cli.last_len, 4);
    ck_assert_mem_eq(cli.last, "ping", 4);
    ck_assert_int_eq(aw_datagram_sockname(cli.t, (struct sockaddr *)&ss,
                                          &len), 0);
    ck_assert_int_eq((int)srv.fromlen, (int)len);
    ck_assert_mem_eq(&srv.from, &ss, len);
    finish(&cli, 0);
    finish(&srv, 0);
    assert_events(&cli, want_cli, 3);
    assert_events(&srv, want_srv, 3);
}

/* A loop that will not close names each endpoint still alive, by its
 * address and, when connected, its peer. */
START_TEST(busy_close_names_endpoints)
{
    static struct peer srv, cli;
    char want[128];

    open_ip(&srv, "127.0.0.1", 0, NULL, 0, 0);
    open_ip(&cli, NULL, 0, "127.0.0.1", port_of(srv.t), 0);
    aw_test_reports[0] = '\0';
    aw_loop_set_exception_handler(loop, aw_test_log_reports, NULL);
    ck_assert_int_eq(aw_loop_close(loop), AW_EBUSY);
    aw_loop_set_exception_handler(loop, NULL, NULL);
    snprintf(want, sizeof(want),
             "datagram endpoint on 127.0.0.1:%d (open) still alive",
             port_of(srv.t));
    ck_assert_msg(strstr(aw_test_reports, want) != NULL, "%s", aw_test_reports);
    snprintf(want, sizeof(want), ":%d to 127.0.0.1:%d (open) still alive",
             port_of(cli.t), port_of(srv.t));
    ck_assert_msg(strstr(aw_test_reports, want) != NULL, "%s", aw_test_reports);
    finish(&cli, 0);
    finish(&srv, 0);
}
END_TEST

START_TEST(round_trip_ipv4)
{
    round_trip("127.0.0.1");
}
END_TEST

START_TEST(round_trip_ipv6)
{
    static struct peer p;
    aw_future *f;

    /* A system without IPv6 on loopback has nothing to test. */
    memset(&p, 0, sizeof(p));
    f = aw_create_datagram_endpoint(loop, "::1", 0, NULL, 0, &recorder, &p,
                                    0);
    aw_loop_run_until_complete(loop, f);
    if (aw_future_error(f) == -EADDRNOTAVAIL ||
        aw_future_error(f) == -EAFNOSUPPORT) {
        aw_future_unref(f);
        return;
    }
    open_ok(f, &p);
    finish(&p, 0);
    round_trip("::1");
}
END_TEST

START_TEST(round_trip_unix)
{
    static struct peer srv, cli;
    char spath[64], cpath[64];
    struct sockaddr_un *sun;

    snprintf(spath, sizeof(spath), "/tmp/aw-udp-s-%ld", (long)getpid());
    snprintf(cpath, sizeof(cpath), "/tmp/aw-udp-c-%ld", (long)getpid());
    memset(&srv, 0, sizeof(srv));
    memset(&cli, 0, sizeof(cli));
    open_ok(aw_create_unix_datagram_endpoint(loop, spath, NULL, &recorder,
                                             &srv),
            &srv);
    srv.echo = 1;
    /* Bound too, so that the echo has somewhere to go. */
    open_ok(aw_create_unix_datagram_endpoint(loop, cpath, spath, &recorder,
                                             &cli),
            &cli);
    ck_assert_int_eq(aw_datagram_sendto(cli.t, "unix", 4, NULL, 0), 0);
    run_until_count(&cli.ndgrams, 1);
    ck_assert_mem_eq(cli.last, "unix", 4);
    sun = (struct sockaddr_un *)&srv.from;
    ck_assert_int_eq(sun->sun_family, AF_UNIX);
    ck_assert_str_eq(sun->sun_path, cpath);
    finish(&cli, 0);
    finish(&srv, 0);
    unlink(spath);
    unlink(cpath);
}
END_TEST

/* An endpoint on one end of a socketpair (asyncio's sock=). */
START_TEST(round_trip_socketpair)
{
    static struct peer p;
    char buf[16];
    int sv[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    memset(&p, 0, sizeof(p));
    open_ok(aw_create_datagram_endpoint_sock(loop, sv[0], &recorder, &p), &p);
    ck_assert_int_eq(aw_datagram_fd(p.t), sv[0]);
    ck_assert_int_eq(send(sv[1], "abc", 3, 0), 3);
    run_until_count(&p.ndgrams, 1);
    ck_assert_mem_eq(p.last, "abc", 3);
    ck_assert_int_eq(aw_datagram_sendto(p.t, "xyz", 3, NULL, 0), 0);
    ck_assert_int_eq(recv(sv[1], buf, sizeof(buf), 0), 3);
    ck_assert_mem_eq(buf, "xyz", 3);
    finish(&p, 0);
    ck_assert_int_eq(close(sv[1]), 0);
}
END_TEST

/* asyncio's test_create_datagram_endpoint_connect_err (the refusal): a
 * connected endpoint whose peer has no socket gets the ICMP error as
 * error_received(-ECONNREFUSED), and stays open. */
START_TEST(connected_refusal_goes_to_error_received)
{
    static struct peer nobody, cli;
    int port, tries;

    open_ip(&nobody, "127.0.0.1", 0, NULL, 0, 0);
    port = port_of(nobody.t);
    finish(&nobody, 1);
    open_ip(&cli, NULL, 0, "127.0.0.1", port, 0);
    for (tries = 0; tries < 100 && cli.nerrors == 0; tries++) {
        ck_assert_int_eq(aw_datagram_sendto(cli.t, "x", 1, NULL, 0), 0);
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
        if (cli.nerrors == 0)
            usleep(1000);
    }
    ck_assert_int_ge(cli.nerrors, 1);
    ck_assert_int_eq(cli.errors[0], -ECONNREFUSED);
    ck_assert(!aw_datagram_is_closing(cli.t));
    ck_assert_int_eq(cli.lost, 0);
    finish(&cli, 0);
    ck_assert_int_eq(cli.events[0], EV_MADE);
    ck_assert_int_eq(cli.events[1], EV_ERROR);
}
END_TEST

/* Datagrams waiting are all delivered in one wake-up (on Linux with
 * recvmmsg(), elsewhere a read each), not one a pass of the loop. */
START_TEST(waiting_datagrams_read_in_one_wakeup)
{
    static struct peer rx;
    struct sockaddr_in sin;
    struct timeval tv = {5, 0};
    fd_set rfds;
    int fd, i;
    long seq;

    open_ip(&rx, "127.0.0.1", 0, NULL, 0, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port_of(rx.t));
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(fd, 0);
    for (seq = 0; seq < 100; seq++)
        ck_assert_int_eq(sendto(fd, &seq, sizeof(seq), 0,
                                (struct sockaddr *)&sin, sizeof(sin)),
                         sizeof(seq));
    FD_ZERO(&rfds);
    FD_SET(aw_datagram_fd(rx.t), &rfds);
    ck_assert_int_eq(select(aw_datagram_fd(rx.t) + 1, &rfds, NULL, NULL, &tv),
                     1);
    for (i = 0; i < 3 && rx.ndgrams == 0; i++)
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(rx.ndgrams, 100);
    ck_assert_int_eq(rx.out_of_order, 0);
    close(fd);
    finish(&rx, 0);
}
END_TEST

/* Replies sent from datagram_received leave within the wake-up that
 * delivered the datagrams (together, with one sendmmsg() on Linux): the
 * client has them all without the loop running again. */
START_TEST(replies_leave_in_the_same_wakeup)
{
    static struct peer srv;
    struct sockaddr_in sin;
    struct timeval tv = {5, 0};
    fd_set rfds;
    int fd, i;
    long seq, back;

    open_ip(&srv, "127.0.0.1", 0, NULL, 0, 0);
    srv.echo = 1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port_of(srv.t));
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    for (seq = 0; seq < 50; seq++)
        ck_assert_int_eq(send(fd, &seq, sizeof(seq), 0), sizeof(seq));
    FD_ZERO(&rfds);
    FD_SET(aw_datagram_fd(srv.t), &rfds);
    ck_assert_int_eq(select(aw_datagram_fd(srv.t) + 1, &rfds, NULL, NULL, &tv),
                     1);
    for (i = 0; i < 3 && srv.ndgrams == 0; i++)
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(srv.ndgrams, 50);
    ck_assert_int_eq((int)aw_datagram_write_buffer_size(srv.t), 0);
    for (seq = 0; seq < 50; seq++) {
        ck_assert_int_eq(recv(fd, &back, sizeof(back), MSG_DONTWAIT),
                         sizeof(back));
        ck_assert_int_eq(back, seq);
    }
    close(fd);
    finish(&srv, 0);
}
END_TEST

/* A send the system refuses (a datagram larger than UDP allows) goes to
 * error_received from the loop, not inside the call (asyncio's
 * test_sendto_error_received), and the endpoint goes on. */
START_TEST(send_error_goes_to_error_received)
{
    static struct peer rx, tx;
    static char big[70000];

    open_ip(&rx, "127.0.0.1", 0, NULL, 0, 0);
    open_ip(&tx, NULL, 0, "127.0.0.1", port_of(rx.t), 0);
    ck_assert_int_eq(aw_datagram_sendto(tx.t, big, sizeof(big), NULL, 0), 0);
    ck_assert_int_eq(tx.nerrors, 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(tx.nerrors, 1);
    ck_assert_int_eq(tx.errors[0], -EMSGSIZE);
    ck_assert_int_eq(aw_datagram_sendto(tx.t, "ok", 2, NULL, 0), 0);
    run_until_count(&rx.ndgrams, 1);
    ck_assert_mem_eq(rx.last, "ok", 2);
    finish(&tx, 0);
    finish(&rx, 0);
}
END_TEST

/* 100,000 datagrams (10,000 under valgrind) from one endpoint to another
 * over loopback, in bursts of 64 each waiting until the last burst
 * arrived: every one arrives, in order. */
START_TEST(many_datagrams_no_loss)
{
    static struct peer rx, tx;
    long total = aw_test_slow() ? 10000 : 100000, seq = 0;
    int i;

    open_ip(&rx, "127.0.0.1", 0, NULL, 0, 0);
    open_ip(&tx, NULL, 0, "127.0.0.1", port_of(rx.t), 0);
    while (seq < total) {
        for (i = 0; i < 64 && seq < total; i++, seq++)
            ck_assert_int_eq(aw_datagram_sendto(tx.t, &seq, sizeof(seq),
                                                NULL, 0), 0);
        run_until_count(&rx.ndgrams, seq);
    }
    ck_assert_int_eq(rx.ndgrams, total);
    ck_assert_int_eq(rx.out_of_order, 0);
    ck_assert_int_eq(rx.nerrors, 0);
    ck_assert_int_eq(tx.nerrors, 0);
    finish(&tx, 0);
    finish(&rx, 0);
}
END_TEST

/* A socketpair whose other end does not read: the kernel's queue fills,
 * datagrams queue in the transport, pause_writing past the high mark;
 * reading the other end drains it, resume_writing at the low mark, and
 * every datagram arrives whole and in order. */
START_TEST(pause_and_resume_writing)
{
    static struct peer p;
    char buf[1000];
    long seq = 0, got = 0, n;
    int sv[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    memset(&p, 0, sizeof(p));
    open_ok(aw_create_datagram_endpoint_sock(loop, sv[0], &recorder, &p), &p);
    ck_assert_int_eq(aw_datagram_set_write_buffer_limits(p.t, 8000, 2000), 0);
    memset(buf, 'd', sizeof(buf));
    while (aw_datagram_write_buffer_size(p.t) <= 8000) {
        memcpy(buf, &seq, sizeof(seq));
        seq++;
        ck_assert_int_eq(aw_datagram_sendto(p.t, buf, sizeof(buf), NULL, 0),
                         0);
    }
    ck_assert_int_eq(p.nevents, 1); /* told from the loop, not inside */
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(p.events[1], EV_PAUSE);
    while (got < seq) {
        ssize_t r = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);

        if (r < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            ck_assert_int_eq(aw_loop_run_once(loop, 0), 0);
            continue;
        }
        ck_assert_int_eq((int)r, (int)sizeof(buf));
        memcpy(&n, buf, sizeof(n));
        ck_assert_int_eq(n, got);
        got++;
    }
    ck_assert_int_eq((int)aw_datagram_write_buffer_size(p.t), 0);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(p.nevents, 3);
    ck_assert_int_eq(p.events[2], EV_RESUME);
    finish(&p, 0);
    close(sv[1]);
}
END_TEST

/* close() sends what is queued first; abort() drops it. */
START_TEST(close_flushes_abort_drops)
{
    static struct peer p;
    char buf[1000];
    long got = 0, queued = 0;
    int sv[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    memset(&p, 0, sizeof(p));
    open_ok(aw_create_datagram_endpoint_sock(loop, sv[0], &recorder, &p), &p);
    memset(buf, 'c', sizeof(buf));
    while (aw_datagram_write_buffer_size(p.t) < 3 * sizeof(buf))
        ck_assert_int_eq(aw_datagram_sendto(p.t, buf, sizeof(buf), NULL, 0),
                         0);
    ck_assert_int_eq(aw_datagram_close(p.t), 0);
    ck_assert(aw_datagram_is_closing(p.t));
    ck_assert_int_eq(aw_datagram_sendto(p.t, buf, 1, NULL, 0), AW_ECLOSED);
    ck_assert_int_eq(aw_datagram_close(p.t), 0); /* a no-op */
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(p.lost, 0); /* the queue is not sent yet */
    while (!p.lost) {
        while (recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) > 0)
            got++;
        ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    }
    while (recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) > 0)
        got++;
    ck_assert_int_gt(got, 3);
    aw_datagram_unref(p.t);
    close(sv[1]);

    /* abort: connection_lost(0) with datagrams still queued. */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    memset(&p, 0, sizeof(p));
    open_ok(aw_create_datagram_endpoint_sock(loop, sv[0], &recorder, &p), &p);
    while (aw_datagram_write_buffer_size(p.t) < 3 * sizeof(buf))
        ck_assert_int_eq(aw_datagram_sendto(p.t, buf, sizeof(buf), NULL, 0),
                         0);
    finish(&p, 1);
    ck_assert_int_eq(aw_datagram_fd(p.t), -1);
    while (recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) > 0)
        queued++;
    close(sv[1]);
}
END_TEST

static int
has_sockopt(int fd, int level, int name)
{
    int v = 0;
    socklen_t len = sizeof(v);

    ck_assert_int_eq(getsockopt(fd, level, name, &v, &len), 0);
    return v != 0;
}

START_TEST(socket_options)
{
    static struct peer a, b, c;
    aw_future *f;
    int port;

    /* reuse port: a second endpoint on the port only with the flag. */
    open_ip(&a, "127.0.0.1", 0, NULL, 0, AW_DATAGRAM_REUSE_PORT);
    port = port_of(a.t);
    ck_assert(has_sockopt(aw_datagram_fd(a.t), SOL_SOCKET, SO_REUSEPORT));
    ck_assert(!has_sockopt(aw_datagram_fd(a.t), SOL_SOCKET, SO_BROADCAST));
    open_ip(&b, "127.0.0.1", port, NULL, 0, AW_DATAGRAM_REUSE_PORT);
    memset(&c, 0, sizeof(c));
    f = aw_create_datagram_endpoint(loop, "127.0.0.1", port, NULL, 0,
                                    &recorder, &c, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EADDRINUSE);
    aw_future_unref(f);
    ck_assert_int_eq(c.nevents, 0);
    finish(&b, 0);

    /* broadcast, as a flag and as a call */
    ck_assert_int_eq(aw_datagram_set_broadcast(a.t, 1), 0);
    ck_assert(has_sockopt(aw_datagram_fd(a.t), SOL_SOCKET, SO_BROADCAST));
    ck_assert_int_eq(aw_datagram_set_broadcast(a.t, 0), 0);
    ck_assert(!has_sockopt(aw_datagram_fd(a.t), SOL_SOCKET, SO_BROADCAST));
    open_ip(&b, "127.0.0.1", 0, NULL, 0, AW_DATAGRAM_BROADCAST);
    ck_assert(has_sockopt(aw_datagram_fd(b.t), SOL_SOCKET, SO_BROADCAST));
    finish(&b, 0);

    /* multicast membership on the loopback interface */
    ck_assert_int_eq(aw_datagram_join_group(a.t, "239.255.10.1", "127.0.0.1"),
                     0);
    ck_assert_int_eq(aw_datagram_join_group(a.t, "239.255.10.1", "127.0.0.1"),
                     -EADDRINUSE);
    ck_assert_int_eq(aw_datagram_leave_group(a.t, "239.255.10.1",
                                             "127.0.0.1"), 0);
    ck_assert_int_eq(aw_datagram_leave_group(a.t, "239.255.10.1",
                                             "127.0.0.1"), -EADDRNOTAVAIL);
    ck_assert_int_eq(aw_datagram_join_group(a.t, "10.0.0.1", NULL), -EINVAL);
    ck_assert_int_eq(aw_datagram_join_group(a.t, "ff02::1", NULL), -EINVAL);
    ck_assert_int_eq(aw_datagram_join_group(a.t, "239.255.10.1", "lo"),
                     -EINVAL);
    finish(&a, 0);

    /* IPV6_V6ONLY */
    memset(&b, 0, sizeof(b));
    f = aw_create_datagram_endpoint(loop, "::", 0, NULL, 0, &recorder, &b,
                                    AW_DATAGRAM_V6ONLY);
    aw_loop_run_until_complete(loop, f);
    if (aw_future_error(f) == 0) {
        open_ok(f, &b);
        ck_assert(has_sockopt(aw_datagram_fd(b.t), IPPROTO_IPV6,
                              IPV6_V6ONLY));
        /* IPv6 membership, by interface name; a system whose loopback
         * takes no IPv6 multicast refuses the join, and that is all. */
        if (aw_datagram_join_group(b.t, "ff15::1234", "lo") == 0)
            ck_assert_int_eq(aw_datagram_leave_group(b.t, "ff15::1234",
                                                     "lo"), 0);
        ck_assert_int_eq(aw_datagram_join_group(b.t, "239.255.10.1", NULL),
                         -EINVAL);
        ck_assert_int_eq(aw_datagram_join_group(b.t, "ff15::1234",
                                                "no-such-if0"),
                         -EINVAL);
        finish(&b, 0);
    } else {
        aw_future_unref(f); /* no IPv6 here */
    }
}
END_TEST


START_TEST(bad_arguments)
{
    static struct peer p, q;
    aw_datagram_protocol big = recorder;
    struct sockaddr_in sin;
    aw_future *f;
    int sv[2], port;

#define EINVAL_FUTURE(call)                                                  \
    do {                                                                     \
        f = (call);                                                          \
        ck_assert_ptr_nonnull(f);                                            \
        ck_assert_int_eq(aw_future_error(f), -EINVAL);                       \
        aw_future_unref(f);                                                  \
    } while (0)
    memset(&p, 0, sizeof(p));
    ck_assert_ptr_null(aw_create_datagram_endpoint(NULL, "127.0.0.1", 0,
                                                   NULL, 0, &recorder, &p, 0));
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, NULL, 0, NULL, 0,
                                              &recorder, &p, 0));
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, "127.0.0.1", -1, NULL, 0,
                                              &recorder, &p, 0));
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, "127.0.0.1", 65536, NULL,
                                              0, &recorder, &p, 0));
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, NULL, 0, "127.0.0.1", 0,
                                              &recorder, &p, 0));
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL, 0,
                                              &recorder, &p, 64));
    big.size = sizeof(big) + 8;
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL, 0,
                                              &big, &p, 0));
    big.size = sizeof(size_t);
    EINVAL_FUTURE(aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL, 0,
                                              &big, &p, 0));
    EINVAL_FUTURE(aw_create_unix_datagram_endpoint(loop, NULL, NULL,
                                                   &recorder, &p));
    EINVAL_FUTURE(aw_create_datagram_endpoint_sock(loop, -1, &recorder, &p));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    EINVAL_FUTURE(aw_create_datagram_endpoint_sock(loop, sv[0], &recorder,
                                                   &p));
    close(sv[0]);
    close(sv[1]);
    /* families that do not meet */
    f = aw_create_datagram_endpoint(loop, "127.0.0.1", 0, "::1", 9,
                                    &recorder, &p, 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -EINVAL);
    aw_future_unref(f);
    ck_assert_int_eq(p.nevents, 0);

    /* calls on an endpoint */
    ck_assert_int_eq(aw_datagram_sendto(NULL, "x", 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(aw_datagram_close(NULL), -EINVAL);
    ck_assert_int_eq(aw_datagram_abort(NULL), -EINVAL);
    ck_assert_int_eq(aw_datagram_set_write_buffer_limits(NULL, 0, 0), -EINVAL);
    ck_assert_int_eq(aw_datagram_set_broadcast(NULL, 1), -EINVAL);
    ck_assert_int_eq(aw_datagram_join_group(NULL, "239.1.1.1", NULL),
                     -EINVAL);
    ck_assert_int_eq(aw_datagram_fd(NULL), -1);
    ck_assert_ptr_null(aw_datagram_recv(NULL));
    aw_datagram_unref(NULL);
    aw_datagram_free(NULL);
    open_ip(&p, "127.0.0.1", 0, NULL, 0, 0);
    port = port_of(p.t);
    ck_assert_int_eq(aw_datagram_sendto(p.t, NULL, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(aw_datagram_sendto(p.t, "x", 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(aw_datagram_set_write_buffer_limits(p.t, 10, 20),
                     -EINVAL);
    ck_assert_int_eq(aw_datagram_join_group(p.t, NULL, NULL), -EINVAL);
    EINVAL_FUTURE(aw_datagram_recv(p.t)); /* it has a protocol */
    /* a connected endpoint sends only to its peer */
    open_ip(&q, NULL, 0, "127.0.0.1", port, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)(port == 9 ? 10 : 9));
    ck_assert_int_eq(aw_datagram_sendto(q.t, "x", 1, (struct sockaddr *)&sin,
                                        sizeof(sin)),
                     -EINVAL);
    sin.sin_port = htons((unsigned short)port);
    ck_assert_int_eq(aw_datagram_sendto(q.t, "y", 1, (struct sockaddr *)&sin,
                                        sizeof(sin)),
                     0);
    run_until_count(&p.ndgrams, 1);
    ck_assert_mem_eq(p.last, "y", 1);
    ck_assert_int_eq(p.nerrors, 0);
    ck_assert_int_eq(q.nerrors, 0);
    /* closing: the calls say so */
    ck_assert_int_eq(aw_datagram_close(q.t), 0);
    ck_assert_int_eq(aw_datagram_set_broadcast(q.t, 1), AW_ECLOSED);
    ck_assert_int_eq(aw_datagram_sendto(q.t, "x", 1, NULL, 0), AW_ECLOSED);
    ck_assert_int_eq(aw_datagram_join_group(q.t, "239.1.1.1", NULL),
                     AW_ECLOSED);
    finish(&q, 0);
    /* the Unix family has no broadcast nor multicast */
    finish(&p, 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    memset(&p, 0, sizeof(p));
    open_ok(aw_create_datagram_endpoint_sock(loop, sv[0], &recorder, &p), &p);
    ck_assert_int_eq(aw_datagram_set_broadcast(p.t, 1), -EOPNOTSUPP);
    ck_assert_int_eq(aw_datagram_join_group(p.t, "239.1.1.1", NULL), -EINVAL);
    finish(&p, 0);
    close(sv[1]);
#undef EINVAL_FUTURE
}
END_TEST

/* A name goes through the loop's resolver: "localhost". */
START_TEST(names_resolved_by_the_loop)
{
    static struct peer srv, cli;

    open_ip(&srv, "localhost", 0, NULL, 0, 0);
    srv.echo = 1;
    /* localhost may resolve to ::1 first: reach the server by its own
     * family's literal. */
    open_ip(&cli, NULL, 0, "localhost", port_of(srv.t), 0);
    finish(&cli, 0);
    finish(&srv, 0);
}
END_TEST

/* Cancelling the future while the endpoint opens: nothing is told, the
 * socket is gone. */
START_TEST(cancelled_open_leaves_nothing)
{
    static struct peer p;
    aw_future *f;

    memset(&p, 0, sizeof(p));
    f = aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL, 0, &recorder,
                                    &p, 0);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_ECANCELLED);
    aw_future_unref(f);
    ck_assert_int_eq(aw_loop_run_once(loop, AW_RUN_NOWAIT), 0);
    ck_assert_int_eq(p.nevents, 0);
}
END_TEST

/* ---- the awaitable form --------------------------------------------------- */

struct echo_task {
    aw_datagram_transport *t;
    aw_datagram *d;
    int n;
};

static void
echo_task_free(void *p)
{
    struct echo_task *e = p;

    aw_datagram_free(e->d);
    free(e);
}

/* A task that receives n datagrams and sends each back where it came
 * from. */
static AW_TASK(echo_n, struct echo_task *e)
{
    AW_BEGIN();
    while (e->n-- > 0) {
        socklen_t alen;
        const struct sockaddr *addr;

        AW_AWAIT_TAKE(aw_datagram_recv(e->t), &e->d);
        addr = aw_datagram_addr(e->d, &alen);
        AW_AWAIT(aw_datagram_send(e->t, aw_datagram_data(e->d),
                                  aw_datagram_len(e->d), addr, alen),
                 NULL);
        aw_datagram_free(e->d);
        e->d = NULL;
    }
    AW_FINALLY();
    AW_END();
}

static aw_datagram_transport *
open_plain(aw_future *f)
{
    aw_datagram_transport *t;
    void *res;

    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    t = aw_datagram_ref(res);
    aw_future_unref(f);
    return t;
}

START_TEST(awaitable_recv_and_send)
{
    aw_datagram_transport *srv, *cli;
    struct echo_task *e = calloc(1, sizeof(*e));
    aw_future *task, *f, *g;
    aw_destroy_fn destroy;
    aw_datagram *d;
    void *res;
    int port;

    srv = open_plain(aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL,
                                                 0, NULL, NULL, 0));
    {
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);

        ck_assert_int_eq(aw_datagram_sockname(srv, (struct sockaddr *)&sin,
                                              &len), 0);
        port = ntohs(sin.sin_port);
    }
    cli = open_plain(aw_create_datagram_endpoint(loop, NULL, 0, "127.0.0.1",
                                                 port, NULL, NULL, 0));
    e->t = srv;
    e->n = 2;
    task = aw_task_new(loop, echo_n, e, echo_task_free);
    ck_assert_ptr_nonnull(task);
    /* Two datagrams out; two waiting futures, served in order. */
    f = aw_datagram_recv(cli);
    g = aw_datagram_recv(cli);
    ck_assert_int_eq(aw_future_done(f), 0);
    aw_future_unref(aw_datagram_send(cli, "one", 3, NULL, 0));
    aw_future_unref(aw_datagram_send(cli, "two", 3, NULL, 0));
    ck_assert_int_eq(aw_loop_run_until_complete(loop, task), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, g), 0);
    ck_assert_int_eq(aw_future_take_result(f, &res, &destroy), 0);
    d = res;
    ck_assert_int_eq((int)aw_datagram_len(d), 3);
    ck_assert_mem_eq(aw_datagram_data(d), "one", 3);
    destroy(d);
    ck_assert_int_eq(aw_future_result(g, &res), 0);
    ck_assert_mem_eq(aw_datagram_data(res), "two", 3);
    aw_future_unref(f);
    aw_future_unref(g);
    aw_future_unref(task);

    /* A cancelled receive loses no datagram: the next one gets it. */
    f = aw_datagram_recv(srv);
    ck_assert_int_eq(aw_future_cancel(f, NULL), 0);
    aw_future_unref(f);
    ck_assert_int_eq(aw_datagram_sendto(cli, "three", 5, NULL, 0), 0);
    f = aw_datagram_recv(srv);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), 0);
    ck_assert_int_eq(aw_future_result(f, &res), 0);
    ck_assert_mem_eq(aw_datagram_data(res), "three", 5);
    aw_future_unref(f);

    /* Closing fails the receives waiting with AW_ECLOSED. */
    f = aw_datagram_recv(srv);
    ck_assert_int_eq(aw_datagram_close(srv), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), AW_ECLOSED);
    aw_future_unref(f);
    f = aw_datagram_recv(srv);
    ck_assert_int_eq(aw_future_error(f), AW_ECLOSED);
    aw_future_unref(f);
    ck_assert_int_eq(aw_datagram_abort(cli), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_datagram_unref(srv);
    aw_datagram_unref(cli);
}
END_TEST

/* The awaitable form: an ICMP refusal fails the next receive. */
START_TEST(awaitable_recv_gets_the_refusal)
{
    static struct peer nobody;
    aw_datagram_transport *cli;
    aw_future *f;
    int port;

    open_ip(&nobody, "127.0.0.1", 0, NULL, 0, 0);
    port = port_of(nobody.t);
    finish(&nobody, 1);
    cli = open_plain(aw_create_datagram_endpoint(loop, NULL, 0, "127.0.0.1",
                                                 port, NULL, NULL, 0));
    f = aw_datagram_recv(cli);
    ck_assert_int_eq(aw_datagram_sendto(cli, "x", 1, NULL, 0), 0);
    ck_assert_int_eq(aw_loop_run_until_complete(loop, f), -ECONNREFUSED);
    aw_future_unref(f);
    ck_assert_int_eq(aw_datagram_close(cli), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_datagram_unref(cli);
}
END_TEST

/* aw_datagram_send over the high mark waits until the queue drained to
 * the low one (asyncio's drain), with every datagram sent in order. */
START_TEST(awaitable_send_waits_for_drain)
{
    aw_datagram_transport *t;
    aw_future *f = NULL;
    char buf[1000];
    long seq = 0, got = 0, n;
    int sv[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    t = open_plain(aw_create_datagram_endpoint_sock(loop, sv[0], NULL, NULL));
    ck_assert_int_eq(aw_datagram_set_write_buffer_limits(t, 4000, 1000), 0);
    memset(buf, 's', sizeof(buf));
    for (;;) {
        memcpy(buf, &seq, sizeof(seq));
        seq++;
        f = aw_datagram_send(t, buf, sizeof(buf), NULL, 0);
        if (!aw_future_done(f))
            break;
        ck_assert_int_eq(aw_future_error(f), 0);
        aw_future_unref(f);
    }
    ck_assert_int_gt((int)aw_datagram_write_buffer_size(t), 4000);
    while (!aw_future_done(f)) {
        ssize_t r = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);

        if (r < 0) {
            ck_assert_int_eq(aw_loop_run_once(loop, 0), 0);
            continue;
        }
        memcpy(&n, buf, sizeof(n));
        ck_assert_int_eq(n, got);
        got++;
    }
    ck_assert_int_eq(aw_future_error(f), 0);
    ck_assert_int_le((int)aw_datagram_write_buffer_size(t), 1000);
    aw_future_unref(f);
    ck_assert_int_eq(aw_datagram_abort(t), 0);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    aw_datagram_unref(t);
    close(sv[1]);
}
END_TEST

/* On libevent's select backend an endpoint whose socket select cannot
 * watch (FD_SETSIZE and above) fails with -EMFILE. */
START_TEST(endpoint_refuses_a_socket_select_cannot_watch)
{
    static struct peer p;
    static int fds[FD_SETSIZE];
    int select_backend =
        strcmp(event_base_get_method(aw_loop_get_base(loop)), "select") == 0;
    aw_future *f;
    int n = 0, fd, rc;

    memset(&p, 0, sizeof(p));
    while ((fd = dup(0)) >= 0 && fd < FD_SETSIZE && n < FD_SETSIZE)
        fds[n++] = fd;
    if (fd >= FD_SETSIZE)
        close(fd);
    f = aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL, 0, &recorder,
                                    &p, 0);
    rc = aw_loop_run_until_complete(loop, f);
    while (n > 0)
        close(fds[--n]);
    if (select_backend) {
        ck_assert_int_eq(rc, -EMFILE);
        ck_assert_int_eq(p.nevents, 0);
        aw_future_unref(f);
    } else {
        ck_assert_int_eq(rc, 0);
        open_ok(f, &p);
        finish(&p, 0);
    }
}
END_TEST

/* ---- allocation failures ------------------------------------------------ */

static int oom_hung;

static void
quiet(aw_loop *l, const aw_exception_context *ctx, void *arg)
{
    (void)l;
    (void)ctx;
    (void)arg;
}

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    oom_hung = 1;
    aw_loop_stop(arg);
}

/* Run l until f settles, at most 2 seconds; f stays the caller's. */
static int
drive(aw_loop *l, aw_future *f)
{
    struct event *ev;
    struct timeval tv = {2, 0};
    int rc;

    if (f == NULL)
        return -EINVAL;
    ev = evtimer_new(aw_loop_get_base(l), watchdog_cb, l);
    ck_assert_ptr_nonnull(ev);
    evtimer_add(ev, &tv);
    rc = aw_loop_run_until_complete(l, f);
    event_free(ev);
    return rc;
}

/* An endpoint for tasks sends itself a datagram and receives it. */
static void
scenario_udp(aw_loop *l)
{
    aw_future *f = aw_create_datagram_endpoint(l, "127.0.0.1", 0, NULL, 0,
                                               NULL, NULL, 0);
    aw_datagram_transport *t = NULL;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (drive(l, f) == 0)
        aw_future_take_result(f, (void **)&t, NULL);
    aw_future_unref(f);
    if (t == NULL)
        return;
    ck_assert_int_eq(aw_datagram_sockname(t, (struct sockaddr *)&ss, &len),
                     0);
    f = aw_datagram_recv(t);
    aw_future_unref(aw_datagram_send(t, "x", 1, (struct sockaddr *)&ss, len));
    drive(l, f);
    aw_future_unref(f);
    aw_datagram_close(t);
    aw_datagram_unref(t);
}

/* The scenario with allocation fail_at failing: 1 when the loop closed
 * and nothing leaked; the allocations made in *count. */
static int
run_oom(long fail_at, long *count)
{
    long live = aw_test_live_allocations(), total = aw_test_allocations();
    aw_loop *l = NULL;
    int rc, k, ok = 1;

    oom_hung = 0;
    aw_test_fail_allocation(fail_at);
    rc = aw_loop_new(&l);
    if (rc == 0) {
        aw_loop_set_exception_handler(l, quiet, NULL);
        scenario_udp(l);
        for (k = 0; (rc = aw_loop_close(l)) == AW_EBUSY && k < 100; k++)
            ck_assert_int_eq(aw_loop_run_once(l, AW_RUN_NOWAIT), 0);
        ok = rc == 0 && aw_loop_free(l) == 0;
    }
    aw_test_fail_allocation(0);
    *count = aw_test_allocations() - total;
    return ok && !oom_hung && aw_test_live_allocations() == live;
}

/* Each allocation of the scenario fails in turn: no crash, no hang, no
 * leak, and the loop closes. */
START_TEST(allocation_failures_leave_nothing)
{
    long n, m, i;

    ck_assert(run_oom(0, &n));
    ck_assert_int_gt(n, 1);
    for (i = 1; i <= n; i++)
        ck_assert_msg(run_oom(i, &m), "allocation %ld of %ld failing", i, n);
}
END_TEST

Suite *
aw_test_suite(void)
{
    Suite *s = suite_create("udp");
    TCase *tc = aw_test_tcase("udp");

    tcase_add_test(tc, round_trip_ipv4);
    tcase_add_test(tc, busy_close_names_endpoints);
    tcase_add_test(tc, round_trip_ipv6);
    tcase_add_test(tc, round_trip_unix);
    tcase_add_test(tc, round_trip_socketpair);
    tcase_add_test(tc, connected_refusal_goes_to_error_received);
    tcase_add_test(tc, waiting_datagrams_read_in_one_wakeup);
    tcase_add_test(tc, replies_leave_in_the_same_wakeup);
    tcase_add_test(tc, send_error_goes_to_error_received);
    tcase_add_test(tc, many_datagrams_no_loss);
    tcase_add_test(tc, pause_and_resume_writing);
    tcase_add_test(tc, close_flushes_abort_drops);
    tcase_add_test(tc, socket_options);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, names_resolved_by_the_loop);
    tcase_add_test(tc, cancelled_open_leaves_nothing);
    tcase_add_test(tc, awaitable_recv_and_send);
    tcase_add_test(tc, awaitable_recv_gets_the_refusal);
    tcase_add_test(tc, awaitable_send_waits_for_drain);
    tcase_add_test(tc, endpoint_refuses_a_socket_select_cannot_watch);
    tcase_add_test(tc, allocation_failures_leave_nothing);
    suite_add_tcase(s, tc);
    return s;
}

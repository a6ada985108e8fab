/* SPDX-License-Identifier: MIT */
/* bench/udp.c: awbench's datagram figure: udp_pps, 64-byte datagrams
 * echoed per second over loopback by a datagram endpoint, next to a raw
 * libevent recvfrom/sendto loop.  The client, the same for both, is
 * another process keeping UDP_WINDOW datagrams in flight. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "await.h"
#include "bench.h"

#define UDP_SIZE 64
#define UDP_WINDOW 64
#define UDP_SECONDS 2.0

/* The client: UDP_WINDOW datagrams out, one more for each that comes
 * back; a silence of 20 ms (datagrams lost) refills the window.  Writes
 * the datagrams per second to out. */
static void
udp_client(int port, int out)
{
    struct mmsghdr mm[UDP_WINDOW];
    struct iovec iov[UDP_WINDOW];
    static char bufs[UDP_WINDOW][UDP_SIZE];
    struct sockaddr_in sin;
    struct timeval tv = {0, 20000};
    double t0, t1, pps;
    long got = 0;
    int fd, i, r;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
        _exit(1);
    for (i = 0; i < UDP_WINDOW; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = UDP_SIZE;
        memset(&mm[i], 0, sizeof(mm[i]));
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    t0 = bench_now();
    r = UDP_WINDOW;
    while ((t1 = bench_now()) - t0 < UDP_SECONDS) {
        if (r > 0 && sendmmsg(fd, mm, (unsigned)r, 0) < 0)
            _exit(1);
        r = recvmmsg(fd, mm, UDP_WINDOW, MSG_WAITFORONE, NULL);
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                _exit(1);
            r = UDP_WINDOW; /* lost: refill */
            continue;
        }
        got += r;
    }
    pps = (double)got / (t1 - t0);
    if (write(out, &pps, sizeof(pps)) != sizeof(pps))
        _exit(1);
    _exit(0);
}

/* Fork the client against port; *pid, and the pipe its figure comes on. */
static int
start_client(int port, pid_t *pid)
{
    int p[2];

    if (pipe(p) != 0)
        bench_die("pipe", -errno);
    *pid = fork();
    if (*pid < 0)
        bench_die("fork", -errno);
    if (*pid == 0) {
        close(p[0]);
        udp_client(port, p[1]);
    }
    close(p[1]);
    return p[0];
}

static double
end_client(pid_t pid, int in)
{
    double pps = 0;
    int status;

    if (read(in, &pps, sizeof(pps)) != sizeof(pps))
        bench_die("udp client", -EIO);
    close(in);
    waitpid(pid, &status, 0);
    return pps;
}

/* ---- ours: a datagram endpoint echoing from datagram_received ----------- */

static void
echo_received(aw_datagram_transport *t, const void *data, size_t len,
              const struct sockaddr *addr, socklen_t addrlen, void *arg)
{
    (void)arg;
    aw_datagram_sendto(t, data, len, addr, addrlen);
}

static const aw_datagram_protocol echo_proto = {
    AW_DATAGRAM_PROTOCOL_SIZE, NULL, echo_received, NULL, NULL, NULL, NULL};

static int
stop_loop(aw_loop *loop, void *arg)
{
    (void)arg;
    aw_loop_stop(loop);
    return 0;
}

static double
bench_udp_pps(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    aw_datagram_transport *t;
    aw_loop *loop;
    aw_future *f;
    double pps;
    pid_t pid;
    int rc, in;
    void *res;

    if ((rc = aw_loop_new(&loop)) != 0)
        bench_die("loop", rc);
    f = aw_create_datagram_endpoint(loop, "127.0.0.1", 0, NULL, 0,
                                    &echo_proto, NULL, 0);
    if ((rc = aw_loop_run_until_complete(loop, f)) != 0 ||
        (rc = aw_future_result(f, &res)) != 0)
        bench_die("endpoint", rc);
    t = aw_datagram_ref(res);
    aw_future_unref(f);
    if ((rc = aw_datagram_sockname(t, (struct sockaddr *)&sin, &len)) != 0)
        bench_die("sockname", rc);
    in = start_client(ntohs(sin.sin_port), &pid);
    aw_loop_call_later(loop, UDP_SECONDS + 0.2, stop_loop, NULL, NULL);
    aw_loop_run_forever(loop);
    pps = end_client(pid, in);
    aw_datagram_abort(t);
    aw_datagram_unref(t);
    aw_loop_run_once(loop, AW_RUN_NOWAIT);
    if ((rc = aw_loop_free(loop)) != 0)
        bench_die("free", rc);
    return pps;
}

/* ---- raw: a libevent read event, recvfrom/sendto until EAGAIN ---------- */

static void
raw_echo_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sockaddr_storage ss;
    char buf[65536];
    socklen_t sl;
    ssize_t n;

    (void)what;
    (void)arg;
    for (;;) {
        sl = sizeof(ss);
        n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT,
                     (struct sockaddr *)&ss, &sl);
        if (n < 0)
            return;
        sendto(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT,
               (struct sockaddr *)&ss, sl);
    }
}

static double
raw_udp_pps(void)
{
    struct event_base *base = bench_raw_base();
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    struct timeval tv = {(long)UDP_SECONDS, 200000};
    struct event *ev;
    double pps;
    pid_t pid;
    int fd, in;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        bench_die("raw socket", -errno);
    ev = event_new(base, fd, EV_READ | EV_PERSIST, raw_echo_cb, NULL);
    event_add(ev, NULL);
    in = start_client(ntohs(sin.sin_port), &pid);
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    pps = end_client(pid, in);
    event_free(ev);
    close(fd);
    event_base_free(base);
    return pps;
}

static const struct bench benches[] = {
    {"udp_pps", "dgram/s", bench_udp_pps, raw_udp_pps, "ratio >= 1.0"},
};

BENCH_MODULE(bench_udp_module, benches);

/* SPDX-License-Identifier: MIT */
/* transport.c: transports and protocols on plain libevent events and
 * listeners (asyncio's selector transports).
 *
 * A transport owns its socket and two events.  The read event stays
 * registered while reading is not paused (no epoll_ctl per read); a
 * wake-up reads straight into the transport's buffer, or the buffered
 * protocol's, with an offer that adapts to what arrives.  End of file and
 * errors come from read()'s result.  Writes go to the socket at once when
 * nothing is queued (send()/sendmsg() with MSG_NOSIGNAL: a peer that went
 * away is an error code, never a SIGPIPE, and the process's signal
 * dispositions are left alone); only what the kernel did not take is
 * queued, and the write event is pending only while something is.  A
 * connection under way uses the write event to learn that it completed.
 *
 * Protocol callbacks run from libevent's callbacks or from the ready
 * queue, never inside a transport call; what a call decides
 * (pause_writing, connection_lost) is scheduled on the ready queue.  A
 * transport holds a reference to itself from its creation until
 * connection_lost has been delivered. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "await/executor.h"
#include "await/transport.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "transport-internal.h"

#define DEFAULT_HIGH (64 * 1024)
#define DEFAULT_LOW (16 * 1024)
#define DEFAULT_BACKLOG 128
#define ACCEPT_RETRY_DELAY 0.1
/* The size a read offers adapts: a read that fills its offer doubles it
 * and reads again at once (the socket likely holds more), one that uses
 * less than a quarter halves it.  A fast peer's data comes in as few
 * system calls as it arrived in, a slow one's in small buffers, and no
 * probe (FIONREAD) is needed.  At most READ_MAX bytes a wake-up, so that
 * one connection cannot hold the loop. */
#define READ_MIN 4096
#define READ_START 16384
#define READ_MAX (256 * 1024)
/* A consumer that empties each chain as soon as it is read (a TLS
 * layer) has its reads offer this much less than a power of two, so
 * that the chain libevent allocates (the bytes plus its header, rounded
 * up to a power of two) is the offer's size and not twice it: the room
 * left over would never be used.  Other transports keep the power of
 * two: their next read fills that room (measured: stream_mb_s 2.4-3.3
 * against 1.2-1.3 with the slack for all). */
#define CHAIN_SLACK 128
/* iovecs given to one sendmsg() of the queue */
#define SEND_IOV 16

enum tstate { T_CONNECTING, T_OPEN, T_CLOSING, T_LOST };
/* A connection both ways, or one end of a pipe (asyncio's
 * _UnixReadPipeTransport and _UnixWritePipeTransport), or the upper face
 * of a layer (TLS: lib/tls.c) that owns no socket: its writes, closing,
 * reading and buffer size go to the layer's operations, and the layer
 * fills its input buffer. */
enum tkind { K_CONN, K_RPIPE, K_WPIPE, K_LAYER };

struct aw_transport {
    aw_loop *loop;
    struct event *rev;    /* readability: pending while reading */
    struct evbuffer *in;  /* read, not delivered yet */
    struct evbuffer *out; /* what the kernel did not take yet */
    struct event *wev;    /* the connect under way; then writability,
                             pending while out has data */
    const aw_protocol *proto;
    void *user;
    aw_server *server;
    aw_transport *srv_prev, *srv_next;
    aw_transport *live_prev, *live_next; /* the loop's, for the census */
    aw_future *connecting; /* the create_connection future, while pending */
    struct aw__gai *dnsreq; /* the name, being resolved */
    struct evutil_addrinfo *addrs;     /* connecting: the addresses */
    struct evutil_addrinfo *next_addr; /* the next one to try */
    aw__buffer_sink_fn sink;
    const struct aw__layer_ops *lops; /* K_LAYER: what carries it */
    void *layer;
    size_t high, low;
    size_t rsize; /* what the next read offers */
    unsigned refs;
    int fd;
    int lost_error;
    int connect_error; /* the last address's */
    unsigned state : 2;
    unsigned reading : 1;     /* not paused */
    unsigned rev_on : 1;      /* rev is pending */
    unsigned eof_read : 1;    /* read() said end of file */
    unsigned eof_told : 1;    /* eof_received was called */
    unsigned soon : 1;        /* a delivery is scheduled */
    unsigned resolving : 1;   /* the resolver's callback has not run */
    unsigned eof_pending : 1; /* write_eof once the buffer is flushed */
    unsigned eof_sent : 1;
    unsigned paused : 1; /* the protocol was told to pause writing */
    unsigned made : 1;   /* connection_made was called */
    unsigned exact_reads : 1; /* offers a chain's size (CHAIN_SLACK) */
    unsigned tcp : 1;    /* TCP (IPv4 or IPv6), not a Unix socket */
    unsigned kind : 2;   /* enum tkind */
    unsigned nosock : 1; /* not a socket: read()/write(), no send() */
};

struct aw_server {
    aw_loop *loop;
    struct evconnlistener **ls;
    size_t nls;
    const aw_protocol *proto;
    void *arg;
    aw_transport *conns;
    size_t nconns;
    aw_future *closed_fut;
    aw_future *serving; /* serve_forever's future */
    aw_handle *retry;
    aw_destroy_fn arg_destroy;
    int port;
    int closed;
};

/* The first aw_protocol, up to resume_writing: the smallest size a
 * program may give.  A member added later is read only when
 * PROTO_HAS(proto, member). */
#define PROTOCOL_V1_SIZE                                                     \
    (offsetof(aw_protocol, resume_writing) +                                 \
     sizeof(((aw_protocol *)0)->resume_writing))
#define PROTO_HAS(p, m)                                                      \
    ((p)->size >= offsetof(aw_protocol, m) + sizeof((p)->m))

/* The protocol lends the buffers reads go into (a buffered protocol). */
static int
buffered(const aw_protocol *p)
{
    return PROTO_HAS(p, get_buffer) && p->get_buffer != NULL;
}

/* A known size; a buffered protocol has both of its members. */
static int
protocol_ok(const aw_protocol *proto)
{
    return aw__protocol_ok(proto);
}

int
aw__protocol_ok(const aw_protocol *proto)
{
    return proto != NULL && proto->size >= PROTOCOL_V1_SIZE &&
           proto->size <= sizeof(aw_protocol) &&
           (!buffered(proto) || (PROTO_HAS(proto, buffer_updated) &&
                                 proto->buffer_updated != NULL));
}
/* ---- the loop's resolver ------------------------------------------------------- */

static void
dns_release(aw_loop *loop)
{
    struct aw__net_slot *s = aw__loop_net_slot(loop);

    if (s->dns != NULL)
        evdns_base_free(s->dns, 1);
    s->dns = NULL;
}

static void net_census(aw_loop *loop);

static const struct aw__loop_hooks net_hooks = {.census = net_census,
                                                .release = dns_release};

struct evdns_base *
aw__loop_dns(aw_loop *loop)
{
    struct aw__net_slot *s = aw__loop_net_slot(loop);

    if (s->dns == NULL) {
        s->dns = evdns_base_new(aw_loop_get_base(loop),
                                EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (s->dns == NULL) /* no resolv.conf: the hosts file still works */
            s->dns = evdns_base_new(aw_loop_get_base(loop),
                                    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (s->dns != NULL)
            s->hooks = &net_hooks;
    }
    return s->dns;
}

/* ---- transports ---------------------------------------------------------------- */

static void readable_cb(evutil_socket_t fd, short what, void *arg);

static aw_transport *
transport_new(aw_loop *loop, const aw_protocol *proto, void *user)
{
    aw_transport *t = aw__calloc(1, sizeof(*t));
    struct aw__net_slot *s;

    if (t == NULL)
        return NULL;
    t->in = evbuffer_new();
    if (t->in == NULL) {
        aw__free(t);
        return NULL;
    }
    t->loop = loop;
    t->proto = proto;
    t->user = user;
    t->high = DEFAULT_HIGH;
    t->low = DEFAULT_LOW;
    t->rsize = READ_START;
    t->refs = 1; /* its own, until connection_lost is delivered */
    t->fd = -1;
    s = aw__loop_net_slot(loop);
    t->live_next = s->transports;
    if (t->live_next != NULL)
        t->live_next->live_prev = t;
    s->transports = t;
    s->hooks = &net_hooks;
    aw__loop_track(loop, 1);
    return t;
}

static void
transport_free(aw_transport *t)
{
    struct aw__net_slot *s = aw__loop_net_slot(t->loop);

    if (t->live_prev != NULL)
        t->live_prev->live_next = t->live_next;
    else
        s->transports = t->live_next;
    if (t->live_next != NULL)
        t->live_next->live_prev = t->live_prev;
    if (t->fd >= 0) /* never opened: a connect that could not start */
        close(t->fd);
    if (t->kind == K_LAYER)
        t->lops->release(t->layer);
    evbuffer_free(t->in);
    aw__loop_track(t->loop, -1);
    aw__free(t);
}

aw_transport *
aw_transport_ref(aw_transport *t)
{
    if (t != NULL)
        t->refs++;
    return t;
}

void
aw_transport_unref(aw_transport *t)
{
    if (t != NULL && --t->refs == 0)
        transport_free(t);
}

static void
unref_destroy(void *p)
{
    aw_transport_unref(p);
}

static void
server_forget(aw_server *srv, aw_transport *t);
static int serving_done(aw_future *f, void *arg);

static int
deliver_lost(aw_loop *loop, void *arg)
{
    aw_transport *t = arg;

    (void)loop;
    if (t->made && t->proto->connection_lost != NULL)
        t->proto->connection_lost(t, t->lost_error, t->user);
    if (t->server != NULL)
        server_forget(t->server, t);
    aw_transport_unref(t); /* its own reference */
    return 0;
}

/* The connection is over: free the socket, tell the protocol soon.  What
 * was read and not delivered stays until the transport is freed: a
 * data_received under way may still be looking at it. */
static void
lose(aw_transport *t, int error)
{
    if (t->state == T_LOST)
        return;
    t->state = T_LOST;
    t->lost_error = error;
    if (t->dnsreq != NULL) { /* its callback still comes, and finds this */
        aw__getaddrinfo_cancel(t->dnsreq);
        t->dnsreq = NULL;
    }
    if (t->rev != NULL) {
        event_free(t->rev);
        t->rev = NULL;
        t->rev_on = 0;
    }
    if (t->wev != NULL) {
        event_free(t->wev);
        t->wev = NULL;
    }
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
    if (t->out != NULL) {
        evbuffer_free(t->out);
        t->out = NULL;
    }
    if (t->addrs != NULL) {
        evutil_freeaddrinfo(t->addrs);
        t->addrs = t->next_addr = NULL;
    }
    if (t->kind == K_LAYER)
        t->lops->lost(t->layer, error);
    if (aw_loop_call_soon(t->loop, deliver_lost, t, NULL) != 0)
        deliver_lost(t->loop, t); /* out of memory: now rather than never */
}

static int
notify_writing(aw_loop *loop, void *arg)
{
    aw_transport *t = arg;

    (void)loop;
    if (t->state != T_LOST) {
        if (t->paused && t->proto->pause_writing != NULL)
            t->proto->pause_writing(t, t->user);
        else if (!t->paused && t->proto->resume_writing != NULL)
            t->proto->resume_writing(t, t->user);
    }
    aw_transport_unref(t);
    return 0;
}

static void
schedule_writing_notice(aw_transport *t)
{
    aw_transport_ref(t);
    if (aw_loop_call_soon(t->loop, notify_writing, t, NULL) != 0)
        aw_transport_unref(t);
}

static size_t
out_len(const aw_transport *t)
{
    if (t->kind == K_LAYER)
        return t->state != T_LOST ? t->lops->pending(t->layer) : 0;
    return t->out != NULL ? evbuffer_get_length(t->out) : 0;
}

/* The read event is pending exactly while the transport is open, reading
 * is not paused and no end of file was read; on a write pipe, while it is
 * open or flushing (the reader's end closing makes it readable). */
static void
update_reading(aw_transport *t)
{
    int want = t->kind == K_WPIPE
                   ? t->state == T_OPEN || t->state == T_CLOSING
                   : t->state == T_OPEN && t->reading && !t->eof_read;

    if (t->kind == K_LAYER) {
        if (t->state != T_LOST)
            t->lops->reading(t->layer, want);
        return;
    }
    if (want && !t->rev_on && t->rev != NULL) {
        if (event_add(t->rev, NULL) == 0)
            t->rev_on = 1;
    } else if (!want && t->rev_on) {
        event_del(t->rev);
        t->rev_on = 0;
    }
}

/* The socket is the transport's from now: its read event (not pending
 * yet).  0 or -ENOMEM. */
static void wpipe_hup_cb(evutil_socket_t fd, short what, void *arg);

static int
attach_socket(aw_transport *t, int fd, int tcp)
{
    t->rev = event_new(aw_loop_get_base(t->loop), fd, EV_READ | EV_PERSIST,
                       t->kind == K_WPIPE ? wpipe_hup_cb : readable_cb, t);
    if (t->rev == NULL)
        return -ENOMEM;
    t->fd = fd;
    t->tcp = tcp != 0;
    return 0;
}

static void
opened(aw_transport *t)
{
    t->state = T_OPEN;
    t->reading = t->kind != K_WPIPE;
    update_reading(t);
    t->made = 1;
    if (t->proto->connection_made != NULL)
        t->proto->connection_made(t, t->user);
}

/* The peer's end of file, once what came before it was delivered. */
static void
deliver_eof(aw_transport *t)
{
    int keep = 0;

    if (!t->eof_read || t->eof_told || t->state != T_OPEN || !t->reading ||
        evbuffer_get_length(t->in) > 0)
        return;
    t->eof_told = 1;
    if (t->proto->eof_received != NULL)
        keep = t->proto->eof_received(t, t->user);
    if (t->state != T_OPEN)
        return;
    t->reading = 0;
    /* A read pipe is done; TLS has no half-close (asyncio). */
    if (!keep || t->kind == K_RPIPE || t->kind == K_LAYER)
        aw_transport_close(t);
}

/* Hand what was read to the protocol, as long as it keeps reading. */
static void
deliver(aw_transport *t)
{
    size_t n;

    if (t->sink != NULL) {
        if (t->state == T_OPEN && t->reading &&
            evbuffer_get_length(t->in) > 0)
            t->sink(t, t->in, t->user);
    } else if (buffered(t->proto)) { /* a layer's: lend, copy, tell */
        while (t->state == T_OPEN && t->reading &&
               (n = evbuffer_get_length(t->in)) > 0) {
            size_t len = 0;
            void *buf = t->proto->get_buffer(t, n, &len, t->user);

            if (t->state != T_OPEN || !t->reading)
                return;
            if (buf == NULL || len == 0) {
                aw__loop_report(t->loop, -ENOBUFS, NULL, NULL,
                                "transport: the protocol's get_buffer() "
                                "returned %s; connection lost",
                                buf == NULL ? "NULL" : "an empty buffer");
                lose(t, -ENOBUFS);
                return;
            }
            n = (size_t)evbuffer_remove(t->in, buf, len < n ? len : n);
            t->proto->buffer_updated(t, n, t->user);
        }
    } else {
        while (t->state == T_OPEN && t->reading &&
               (n = evbuffer_get_contiguous_space(t->in)) > 0) {
            unsigned char *p = evbuffer_pullup(t->in, (ev_ssize_t)n);

            if (t->proto->data_received != NULL)
                t->proto->data_received(t, p, n, t->user);
            if (t->state == T_LOST)
                return; /* p may still be in use up the stack */
            evbuffer_drain(t->in, n);
        }
    }
    deliver_eof(t);
}

static int
deliver_soon(aw_loop *loop, void *arg)
{
    aw_transport *t = arg;

    (void)loop;
    t->soon = 0;
    deliver(t);
    aw_transport_unref(t);
    return 0;
}

/* The next offer after a read of got bytes on an offer of size: is the
 * socket likely to hold more?  1 when it filled the offer. */
static int
adapt(aw_transport *t, size_t size, size_t got)
{
    if (got >= size) {
        if (t->rsize < READ_MAX)
            t->rsize *= 2;
        return 1;
    }
    if (got < t->rsize / 4 && t->rsize > READ_MIN)
        t->rsize /= 2;
    return 0;
}

/* Read once into t->in, offering t->rsize bytes.  The count, 0 at end of
 * file, -EAGAIN, or another -errno (-ENOMEM when no room could be made). */
static ssize_t
read_some(aw_transport *t, size_t *offered)
{
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    size_t left, want = t->rsize - (t->exact_reads ? CHAIN_SLACK : 0);
    ssize_t r;
    int nv, i;

    nv = evbuffer_reserve_space(t->in, (ev_ssize_t)want, v, 2);
    if (nv <= 0)
        return -ENOMEM;
    for (i = 0, left = want, *offered = 0; i < nv; i++) {
        if (v[i].iov_len > left)
            v[i].iov_len = left;
        left -= v[i].iov_len;
        *offered += v[i].iov_len;
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    do
        r = nv == 1 ? read(t->fd, iov[0].iov_base, iov[0].iov_len)
                    : readv(t->fd, iov, nv);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int error = errno == EWOULDBLOCK ? EAGAIN : errno;

        evbuffer_commit_space(t->in, v, 0);
        return -error;
    }
    for (i = 0, left = (size_t)r; i < nv; i++) {
        if (v[i].iov_len > left)
            v[i].iov_len = left;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(t->in, v, nv);
    return r;
}

/* A buffered protocol's wake-up: read into the buffers it lends.  A
 * buffer that is NULL or empty is the protocol's failure (asyncio's
 * "get_buffer() returned an empty buffer"): reported, and the connection
 * lost with -ENOBUFS. */
static void
read_lent(aw_transport *t)
{
    size_t total = 0;

    while (t->state == T_OPEN && t->reading) {
        size_t len = 0;
        void *buf = t->proto->get_buffer(t, t->rsize, &len, t->user);
        ssize_t r;

        if (t->state != T_OPEN || !t->reading)
            return;
        if (buf == NULL || len == 0) {
            aw__loop_report(t->loop, -ENOBUFS, NULL, NULL,
                            "transport: the protocol's get_buffer() "
                            "returned %s; connection lost",
                            buf == NULL ? "NULL" : "an empty buffer");
            lose(t, -ENOBUFS);
            return;
        }
        do
            r = read(t->fd, buf, len);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                lose(t, -errno);
            return;
        }
        if (r == 0) {
            t->eof_read = 1;
            update_reading(t);
            deliver_eof(t);
            return;
        }
        t->proto->buffer_updated(t, (size_t)r, t->user);
        total += (size_t)r;
        if (!adapt(t, len, (size_t)r) || total >= READ_MAX)
            return;
    }
}

static void
readable_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_transport *t = arg;
    size_t total = 0, offered;
    ssize_t r = 0;

    (void)fd;
    (void)what;
    if (t->state != T_OPEN || !t->reading)
        return;
    aw_transport_ref(t);
    if (buffered(t->proto)) {
        read_lent(t);
        aw_transport_unref(t);
        return;
    }
    for (;;) {
        r = read_some(t, &offered);
        if (r <= 0)
            break;
        total += (size_t)r;
        if (!adapt(t, offered, (size_t)r) || total >= READ_MAX)
            break;
    }
    if (r == 0) {
        t->eof_read = 1;
        update_reading(t);
    }
    deliver(t);
    if (r < 0 && r != -EAGAIN && t->state != T_LOST)
        lose(t, (int)r); /* after what came before the error */
    aw_transport_unref(t);
}

static void
flushed(aw_transport *t)
{
    if (t->eof_pending && !t->eof_sent && t->kind == K_WPIPE) {
        lose(t, 0); /* a pipe's end of file is its closing (asyncio) */
        return;
    }
    if (t->eof_pending && !t->eof_sent) {
        t->eof_sent = 1;
        shutdown(t->fd, SHUT_WR);
    }
    if (t->state == T_CLOSING)
        lose(t, 0);
}

/* writev() on what is not a socket (a pipe, a terminal), where there is
 * no MSG_NOSIGNAL: SIGPIPE is blocked in this thread for the call, and
 * one that the call raised is taken back before it is unblocked, so that
 * a reader gone is -EPIPE and the process's dispositions stay as they
 * are (what curl and OpenSSL do).  One raised before the call stays
 * pending. */
ssize_t
aw__quiet_writev(int fd, const struct iovec *iov, int n)
{
    static const struct timespec zero = {0, 0};
    sigset_t pipe_set, old, pending;
    ssize_t r;
    int was_pending, e;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    do
        r = writev(fd, iov, n);
    while (r < 0 && errno == EINTR);
    e = errno;
    if (r < 0 && e == EPIPE && !was_pending)
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return r;
}

/* Send what b holds (the queue, or a layer's output) until the kernel
 * takes no more, draining what it took.  0, or the socket's error. */
static int
send_from(aw_transport *t, struct evbuffer *b)
{
    struct evbuffer_iovec v[SEND_IOV];
    struct msghdr mh;
    size_t want;
    ssize_t r;
    int n, i;

    while (evbuffer_get_length(b) > 0) {
        n = evbuffer_peek(b, -1, NULL, v, SEND_IOV);
        if (n > SEND_IOV)
            n = SEND_IOV;
        for (i = 0, want = 0; i < n; i++)
            want += v[i].iov_len;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = v;
        mh.msg_iovlen = (size_t)n;
        r = t->nosock ? aw__quiet_writev(t->fd, (struct iovec *)v, n)
                      : sendmsg(t->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        }
        evbuffer_drain(b, (size_t)r);
        if ((size_t)r < want)
            return 0; /* the kernel is full: wait for writability */
    }
    return 0;
}

static int
send_queued(aw_transport *t)
{
    return send_from(t, t->out);
}

/* What follows a write or a flush: the limits, the end of the queue. */
static void
after_send(aw_transport *t)
{
    size_t n = out_len(t);

    if (t->paused && n <= t->low) {
        t->paused = 0;
        schedule_writing_notice(t);
    } else if (!t->paused && n > t->high) {
        t->paused = 1;
        schedule_writing_notice(t);
    }
    if (n == 0) {
        if (t->wev != NULL)
            event_del(t->wev);
        flushed(t);
    } else if (t->wev != NULL) {
        event_add(t->wev, NULL);
    }
}

static void
writable_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_transport *t = arg;
    int error;

    (void)fd;
    (void)what;
    if (t->state == T_LOST)
        return;
    error = send_queued(t);
    if (error != 0) {
        lose(t, error);
        return;
    }
    after_send(t);
}

/* A write pipe turned readable: its reader is gone (asyncio's
 * _UnixWritePipeTransport._read_ready): what is still queued cannot be
 * delivered. */
static void
wpipe_hup_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_transport *t = arg;

    (void)fd;
    (void)what;
    if (t->state != T_LOST)
        lose(t, out_len(t) > 0 ? -EPIPE : 0);
}

/* Queue data[0..len) behind what the kernel took: the queue and its
 * event are made when first needed.  0 or -ENOMEM. */
static int
queue_rest(aw_transport *t, const void *data, size_t len)
{
    if (t->out == NULL && (t->out = evbuffer_new()) == NULL)
        return -ENOMEM;
    if (t->wev == NULL &&
        (t->wev = event_new(aw_loop_get_base(t->loop), t->fd,
                            EV_WRITE | EV_PERSIST, writable_cb, t)) == NULL)
        return -ENOMEM;
    if (len == 0)
        return 0;
    return evbuffer_add(t->out, data, len) == 0 ? 0 : -ENOMEM;
}


int
aw_transport_write(aw_transport *t, const void *data, size_t len)
{
    size_t sent = 0;
    int rc;

    if (t == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (t->state == T_LOST && t->lost_error != 0)
        return t->lost_error;
    if (t->kind == K_RPIPE)
        return -EOPNOTSUPP;
    if (t->state != T_OPEN || t->eof_pending)
        return AW_ECLOSED;
    if (len == 0)
        return 0;
    if (t->kind == K_LAYER)
        return t->lops->write(t->layer, data, len);
    if (out_len(t) == 0) {
        struct iovec one = {(void *)data, len};
        ssize_t r;

        if (t->nosock)
            r = aw__quiet_writev(t->fd, &one, 1);
        else
            do
                r = send(t->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            while (r < 0 && errno == EINTR);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            /* asyncio: the write returns, connection_lost tells. */
            lose(t, -errno);
            return 0;
        }
        sent = r > 0 ? (size_t)r : 0;
        if (sent == len)
            return 0;
    }
    rc = queue_rest(t, (const char *)data + sent, len - sent);
    if (rc != 0) {
        if (sent > 0) /* part of it went: the stream cannot be mended */
            lose(t, rc);
        return rc;
    }
    after_send(t);
    return 0;
}

int
aw_transport_write_eof(aw_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->kind == K_RPIPE || t->kind == K_LAYER) /* TLS: no half-close */
        return -EOPNOTSUPP;
    if (t->state != T_OPEN)
        return AW_ECLOSED;
    if (t->eof_pending)
        return 0;
    t->eof_pending = 1;
    if (out_len(t) == 0)
        flushed(t);
    return 0;
}

int
aw_transport_close(aw_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->state == T_CONNECTING) {
        lose(t, 0);
        return 0;
    }
    if (t->state != T_OPEN)
        return 0;
    t->state = T_CLOSING;
    t->reading = 0;
    update_reading(t);
    if (t->kind == K_LAYER)
        t->lops->close(t->layer); /* the layer loses it when done */
    else if (out_len(t) == 0)
        lose(t, 0);
    return 0;
}

int
aw_transport_abort(aw_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    lose(t, 0);
    return 0;
}

int
aw_transport_is_closing(const aw_transport *t)
{
    return t != NULL && t->state >= T_CLOSING;
}

int
aw_transport_pause_reading(aw_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->kind == K_WPIPE)
        return -EOPNOTSUPP;
    if (t->state != T_OPEN)
        return AW_ECLOSED;
    t->reading = 0;
    update_reading(t);
    return 0;
}

int
aw_transport_resume_reading(aw_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->kind == K_WPIPE)
        return -EOPNOTSUPP;
    if (t->state != T_OPEN)
        return AW_ECLOSED;
    if (t->reading)
        return 0;
    t->reading = 1;
    update_reading(t);
    /* What was read while paused (an end of file too) is delivered from
     * the loop, never inside this call. */
    if ((evbuffer_get_length(t->in) > 0 || (t->eof_read && !t->eof_told)) &&
        !t->soon) {
        aw_transport_ref(t);
        if (aw_loop_call_soon(t->loop, deliver_soon, t, NULL) == 0)
            t->soon = 1;
        else
            aw_transport_unref(t);
    }
    return 0;
}

int
aw_transport_is_reading(const aw_transport *t)
{
    return t != NULL && t->state == T_OPEN && t->reading;
}

size_t
aw_transport_write_buffer_size(const aw_transport *t)
{
    return t != NULL ? out_len(t) : 0;
}

int
aw_transport_set_write_buffer_limits(aw_transport *t, size_t high,
                                     size_t low)
{
    if (t == NULL)
        return -EINVAL;
    if (high == 0)
        high = DEFAULT_HIGH;
    if (low > high)
        return -EINVAL;
    t->high = high;
    t->low = low;
    if (t->kind == K_LAYER) /* the socket's below follow */
        aw_transport_set_write_buffer_limits(t->lops->lower(t->layer), high,
                                             low);
    aw__transport_check_writing(t); /* paused or not by the new marks */
    return 0;
}

/* The transport whose socket t's addresses and options are: t, or for a
 * layer's face the connection below. */
static const aw_transport *
sock_of(const aw_transport *t)
{
    return t->kind == K_LAYER ? t->lops->lower(t->layer) : t;
}

static int
addr_of(const aw_transport *t, struct sockaddr *addr, socklen_t *len,
        int peer)
{
    int rc;

    if (t == NULL || addr == NULL || len == NULL)
        return -EINVAL;
    t = sock_of(t);
    if (t->fd < 0)
        return AW_ECLOSED;
    rc = peer ? getpeername(t->fd, addr, len) : getsockname(t->fd, addr, len);
    return rc == 0 ? 0 : -errno;
}

int
aw_transport_peername(const aw_transport *t, struct sockaddr *addr,
                      socklen_t *len)
{
    return addr_of(t, addr, len, 1);
}

int
aw_transport_sockname(const aw_transport *t, struct sockaddr *addr,
                      socklen_t *len)
{
    return addr_of(t, addr, len, 0);
}

int
aw__addr_text(const struct sockaddr *sa, socklen_t salen, char *buf,
              size_t len)
{
    char host[INET6_ADDRSTRLEN];
    int n;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        n = snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        n = snprintf(buf, len, "[%s]:%u", host,
                     (unsigned)ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t plen = (size_t)salen > off ? (size_t)salen - off : 0;

        if (plen > 0 && un->sun_path[0] == '\0') /* abstract */
            n = snprintf(buf, len, "@%.*s", (int)(plen - 1), un->sun_path + 1);
        else
            n = snprintf(buf, len, "%.*s", (int)strnlen(un->sun_path, plen),
                         un->sun_path);
    } else {
        return -EAFNOSUPPORT;
    }
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    return n;
}

static int
addr_text_of(const aw_transport *t, char *buf, size_t len, int peer)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int rc;

    if (t == NULL || buf == NULL || len == 0)
        return -EINVAL;
    memset(&ss, 0, sizeof(ss));
    rc = addr_of(t, (struct sockaddr *)&ss, &sl, peer);
    if (rc != 0) {
        buf[0] = '\0';
        return rc;
    }
    return aw__addr_text((struct sockaddr *)&ss, sl, buf, len);
}

/* Close found work outstanding: each transport still alive, by its peer
 * (a stream is named by its transport). */
static void
net_census(aw_loop *loop)
{
    static const char *const states[] = {"connecting", "open", "closing",
                                         "lost"};
    aw_transport *t;
    char peer[AW_ADDRSTRLEN];

    for (t = aw__loop_net_slot(loop)->transports; t != NULL;
         t = t->live_next) {
        int n = t->state == T_LOST ? -1
                                   : addr_text_of(t, peer, sizeof(peer), 1);

        if (n < 0)
            snprintf(peer, sizeof(peer), "an unknown peer");
        else if (n == 0)
            snprintf(peer, sizeof(peer), "an unnamed socket");
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "transport to %s (%s%s%s) still alive at loop close",
                        peer, states[t->state],
                        t->state == T_LOST && t->lost_error != 0 ? ": " : "",
                        t->state == T_LOST && t->lost_error != 0
                            ? aw_err_name(t->lost_error)
                            : "");
    }
    aw__datagram_census(loop);
}

void
aw__net_census_on(aw_loop *loop)
{
    aw__loop_net_slot(loop)->hooks = &net_hooks;
}

int
aw_transport_peername_text(const aw_transport *t, char *buf, size_t len)
{
    return addr_text_of(t, buf, len, 1);
}

int
aw_transport_sockname_text(const aw_transport *t, char *buf, size_t len)
{
    return addr_text_of(t, buf, len, 0);
}

int
aw_transport_fd(const aw_transport *t)
{
    return t != NULL ? sock_of(t)->fd : -1;
}

void
aw__transport_set_sink(aw_transport *t, aw__buffer_sink_fn sink)
{
    t->sink = sink;
}

int
aw__transport_unread(aw_transport *t, struct evbuffer *b)
{
    if (evbuffer_get_length(b) == 0)
        return 0;
    /* Scheduled first: a peer that sent all it had waits for an answer,
     * so there may be no next read to deliver them with. */
    if (!t->soon) {
        aw_transport_ref(t);
        if (aw_loop_call_soon(t->loop, deliver_soon, t, NULL) != 0) {
            aw_transport_unref(t);
            return -ENOMEM;
        }
        t->soon = 1;
    }
    if (evbuffer_prepend_buffer(t->in, b) != 0)
        return -ENOMEM; /* the delivery finds nothing new: harmless */
    return 0;
}

int
aw_transport_is_writing_paused(const aw_transport *t)
{
    return t != NULL && t->state != T_LOST && t->paused;
}

void
aw__transport_set_exact_reads(aw_transport *t, int on)
{
    t->exact_reads = on != 0;
}

/* ---- layers ------------------------------------------------------------------------ */

aw_transport *
aw__transport_layered(aw_loop *loop, const aw_protocol *proto, void *user,
                      const struct aw__layer_ops *ops, void *layer)
{
    aw_transport *t = transport_new(loop, proto, user);

    if (t == NULL)
        return NULL;
    t->kind = K_LAYER;
    t->lops = ops;
    t->layer = layer;
    return t;
}

void *
aw__transport_layer(const aw_transport *t, const struct aw__layer_ops *ops)
{
    return t != NULL && t->kind == K_LAYER && t->lops == ops ? t->layer
                                                              : NULL;
}

void
aw__transport_open(aw_transport *t)
{
    if (t->state == T_CONNECTING)
        opened(t);
}

struct evbuffer *
aw__transport_inbuf(aw_transport *t)
{
    return t->in;
}

void
aw__transport_deliver(aw_transport *t)
{
    if (t->state == T_OPEN && !t->soon)
        deliver(t);
}

void
aw__transport_eof(aw_transport *t)
{
    if (t->state != T_OPEN || t->eof_read)
        return;
    t->eof_read = 1;
    update_reading(t);
    deliver(t);
}

void
aw__transport_lose(aw_transport *t, int error)
{
    lose(t, error);
}

void
aw__transport_check_writing(aw_transport *t)
{
    size_t n;

    if (t->state == T_LOST)
        return;
    n = out_len(t);
    if (t->paused && n <= t->low) {
        t->paused = 0;
        schedule_writing_notice(t);
    } else if (!t->paused && n > t->high) {
        t->paused = 1;
        schedule_writing_notice(t);
    }
}

int
aw__transport_send_buffer(aw_transport *t, struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);
    int rc;

    if (len == 0)
        return 0;
    if (t->state != T_OPEN || t->eof_pending || t->kind != K_CONN) {
        evbuffer_drain(buf, len);
        return t->state == T_LOST && t->lost_error != 0 ? t->lost_error
                                                         : AW_ECLOSED;
    }
    if (out_len(t) == 0) {
        rc = send_from(t, buf);
        if (rc != 0) {
            evbuffer_drain(buf, evbuffer_get_length(buf));
            lose(t, rc);
            return 0; /* connection_lost tells */
        }
        if (evbuffer_get_length(buf) == 0)
            return 0;
    }
    rc = queue_rest(t, NULL, 0);
    if (rc == 0 && evbuffer_add_buffer(t->out, buf) != 0)
        rc = -ENOMEM;
    if (rc != 0) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        lose(t, rc); /* part of the stream is gone */
        return rc;
    }
    after_send(t);
    return 0;
}

int
aw__transport_is_open_conn(const aw_transport *t)
{
    return t != NULL && t->kind == K_CONN && t->state == T_OPEN &&
           !t->eof_pending && !t->eof_read;
}

const aw_protocol *
aw__transport_protocol(const aw_transport *t)
{
    return t->proto;
}

void
aw__transport_set_protocol(aw_transport *t, const aw_protocol *proto,
                           void *user)
{
    t->proto = proto;
    t->user = user;
    t->sink = NULL;
}

void
aw_transport_set_user(aw_transport *t, void *user)
{
    if (t != NULL)
        t->user = user;
}

void *
aw_transport_user(const aw_transport *t)
{
    return t != NULL ? t->user : NULL;
}

aw_loop *
aw_transport_loop(const aw_transport *t)
{
    return t != NULL ? t->loop : NULL;
}


/* An option of an open TCP socket.  0 or an error; nothing changes on
 * one. */
static int
tcp_option(const aw_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->kind == K_LAYER) /* the connection below's */
        return t->state == T_OPEN || t->state == T_CLOSING
                   ? tcp_option(sock_of(t))
                   : AW_ECLOSED;
    if (t->fd < 0 || (t->state != T_OPEN && t->state != T_CLOSING))
        return AW_ECLOSED;
    return t->tcp ? 0 : -EOPNOTSUPP;
}

int
aw_transport_set_nodelay(aw_transport *t, int enable)
{
    int on = enable != 0, rc = tcp_option(t);

    if (rc != 0)
        return rc;
    if (setsockopt(sock_of(t)->fd, IPPROTO_TCP, TCP_NODELAY, &on,
                   sizeof(on)) != 0)
        return -errno;
    return 0;
}

int
aw_transport_set_keepalive(aw_transport *t, int enable, unsigned delay)
{
    int on = enable != 0, d = (int)delay, rc = tcp_option(t);

    if (rc != 0)
        return rc;
    t = (aw_transport *)sock_of(t);
    if (on && (delay == 0 || delay > 32767)) /* Linux's TCP_KEEPIDLE cap */
        return -EINVAL;
#if defined(TCP_KEEPIDLE)
    if (on && setsockopt(t->fd, IPPROTO_TCP, TCP_KEEPIDLE, &d, sizeof(d)) != 0)
        return -errno;
#elif defined(TCP_KEEPALIVE)
    if (on &&
        setsockopt(t->fd, IPPROTO_TCP, TCP_KEEPALIVE, &d, sizeof(d)) != 0)
        return -errno;
#else
    (void)d;
#endif
    if (setsockopt(t->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0)
        return -errno;
    return 0;
}
/* ---- connecting ------------------------------------------------------------------ */

static int
connect_failed(aw_transport *t, int error, char *msg)
{
    aw_future *f = t->connecting;

    t->connecting = NULL;
    if (f != NULL && f->state == AW_FUTURE_PENDING)
        aw__future_set_failed(f, error, msg);
    else
        aw__free(msg);
    aw_future_unref(f);
    lose(t, error); /* connection_made never ran: nothing is told */
    return 0;
}

/* The connect future settled: if cancelled while connecting, give up. */
static int
connect_watch(aw_future *f, void *arg)
{
    aw_transport *t = arg;

    if (aw_future_cancelled(f) && t->state == T_CONNECTING) {
        aw_future_unref(t->connecting);
        t->connecting = NULL;
        lose(t, AW_ECANCELLED);
    }
    aw_transport_unref(t);
    return 0;
}

static void connect_next(aw_transport *t);

/* The connect under way completed, one way or the other. */
static void connected(aw_transport *t);

static void
connect_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_transport *t = arg;
    socklen_t len = sizeof(int);
    int err = 0;

    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    event_free(t->wev);
    t->wev = NULL;
    if (err != 0) { /* the next address, if there is one */
        t->connect_error = -err;
        event_free(t->rev);
        t->rev = NULL;
        close(t->fd);
        t->fd = -1;
        connect_next(t);
        return;
    }
    if (t->addrs != NULL) {
        evutil_freeaddrinfo(t->addrs);
        t->addrs = t->next_addr = NULL;
    }
    connected(t);
}

/* The transport is ready: open it and hand it to its future, unless that
 * was cancelled meanwhile. */
static void
connected(aw_transport *t)
{
    aw_future *f = t->connecting;

    t->connecting = NULL;
    if (f == NULL || f->state != AW_FUTURE_PENDING) {
        aw_future_unref(f); /* cancelled meanwhile: nobody wants it */
        lose(t, 0);
        return;
    }
    opened(t);
    aw_future_set_result(f, aw_transport_ref(t), unref_destroy);
    aw_future_unref(f);
}

/* Start connecting a new socket to sa; the write event tells when it is
 * done (also when connect() succeeded at once: connection_made is never
 * called inside aw_create_*connection).  0 or an -errno. */
static int
start_connect(aw_transport *t, const struct sockaddr *sa, socklen_t salen)
{
    int tcp = sa->sa_family == AF_INET || sa->sa_family == AF_INET6;
    int fd, rc, one = 1;

    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    rc = aw__loop_fd_watchable(t->loop, fd);
    /* TCP_NODELAY by default, as asyncio and uvloop: a write-pause-write
     * exchange does not wait for the peer's delayed ACK. */
    if (rc == 0 && tcp &&
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        rc = -errno;
    if (rc == 0 && connect(fd, sa, salen) != 0 && errno != EINPROGRESS &&
        errno != EINTR)
        rc = -errno;
    if (rc == 0 && (rc = attach_socket(t, fd, tcp)) == 0) {
        t->wev = event_new(aw_loop_get_base(t->loop), fd, EV_WRITE,
                           connect_cb, t);
        if (t->wev == NULL || event_add(t->wev, NULL) != 0) {
            event_free(t->rev);
            t->rev = NULL;
            if (t->wev != NULL)
                event_free(t->wev);
            t->wev = NULL;
            t->fd = -1;
            rc = -ENOMEM;
        }
    }
    if (rc != 0)
        close(fd);
    return rc;
}

/* Try the addresses left in turn (asyncio does, without happy eyeballs);
 * none left, the connection fails with the last one's error. */
static void
connect_next(aw_transport *t)
{
    while (t->next_addr != NULL) {
        struct evutil_addrinfo *ai = t->next_addr;
        int rc;

        t->next_addr = ai->ai_next;
        rc = start_connect(t, ai->ai_addr, (socklen_t)ai->ai_addrlen);
        if (rc == 0)
            return;
        t->connect_error = rc;
    }
    connect_failed(t, t->connect_error != 0 ? t->connect_error
                                            : -ECONNREFUSED,
                   NULL);
}

/* The loop's resolver answered (or the request was cancelled). */
static void
resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    aw_transport *t = arg;

    t->dnsreq = NULL;
    t->resolving = 0;
    if (t->state != T_CONNECTING) {
        if (res != NULL) /* abandoned meanwhile */
            evutil_freeaddrinfo(res);
    } else if (result != 0) {
        connect_failed(t, aw__gai_error(result, errno),
                       aw__format("%s", evutil_gai_strerror(result)));
    } else {
        t->addrs = t->next_addr = res;
        connect_next(t);
    }
    aw_transport_unref(t); /* the request's */
}

/* host as a literal IPv4 or IPv6 address: 1 with *ss and *len set; 0
 * for a name (or an address with a scope, left to the resolver). */
static int
numeric_addr(const char *host, int port, struct sockaddr_storage *ss,
             socklen_t *len)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((unsigned short)port);
        *len = sizeof(*in);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((unsigned short)port);
        *len = sizeof(*in6);
        return 1;
    }
    return 0;
}

/* A transport for a connection under way, and the future for it. */
static aw_future *
connect_start(aw_loop *loop, const aw_protocol *proto, void *arg,
              aw_transport **tp)
{
    aw_transport *t;
    aw_future *f;

    *tp = NULL;
    f = aw_future_new(loop);
    if (f == NULL)
        return aw__future_nomem(loop);
    t = transport_new(loop, proto, arg);
    if (t == NULL || aw__future_attach(f, connect_watch, t) != 0) {
        if (t != NULL)
            transport_free(t);
        aw_future_unref(f);
        return aw__future_nomem(loop);
    }
    aw_transport_ref(t); /* for connect_watch */
    t->connecting = aw_future_ref(f);
    *tp = t;
    return f;
}

aw_future *
aw_create_connection(aw_loop *loop, const char *host, int port,
                     const aw_protocol *proto, void *arg)
{
    struct evutil_addrinfo hints;
    struct aw__gai *req;
    struct sockaddr_storage ss;
    socklen_t sslen;
    char portstr[16];
    aw_transport *t;
    aw_future *f;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (host == NULL || !protocol_ok(proto) || port <= 0 || port > 65535)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_connection: bad "
                                                "host, port or protocol"));
    f = connect_start(loop, proto, arg, &t);
    if (t == NULL)
        return f;
    if (numeric_addr(host, port, &ss, &sslen)) { /* no resolver needed */
        int rc = start_connect(t, (struct sockaddr *)&ss, sslen);

        if (rc != 0)
            connect_failed(t, rc,
                           aw__format("cannot connect to %s:%d", host, port));
        return f;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(portstr, sizeof(portstr), "%d", port);
    /* evdns answers from the hosts file inside the call. */
    aw_transport_ref(t); /* the request's */
    t->resolving = 1;
    req = aw__getaddrinfo(loop, host, portstr, &hints, resolved, t);
    if (t->resolving)
        t->dnsreq = req;
    return f;
}

aw_future *
aw_create_unix_connection(aw_loop *loop, const char *path,
                          const aw_protocol *proto, void *arg)
{
    struct sockaddr_un sun;
    aw_transport *t;
    aw_future *f;
    int rc;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (path == NULL || !protocol_ok(proto) ||
        strlen(path) >= sizeof(sun.sun_path))
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_unix_connection: "
                                                "bad path or protocol"));
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);
    f = connect_start(loop, proto, arg, &t);
    if (t == NULL)
        return f;
    rc = start_connect(t, (struct sockaddr *)&sun, sizeof(sun));
    if (rc != 0)
        connect_failed(t, rc, aw__format("cannot connect to %s", path));
    return f;
}

/* ---- a descriptor the program has ------------------------------------------------ */

/* Is fd what kind wants (a connected stream socket; a pipe, socket or
 * character device open for reading or writing, as asyncio accepts)?
 * Then it is made non-blocking and close-on-exec.  0 or an error, fd
 * left as it was. */
static int
adopt_check(aw_loop *loop, int fd, int kind, int *is_sock, int *tcp)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss), tl = sizeof(int);
    struct stat st;
    int type, fl, acc, rc;

    if (fd < 0)
        return -EINVAL;
    if (fstat(fd, &st) != 0 || (fl = fcntl(fd, F_GETFL)) < 0)
        return -errno;
    *is_sock = S_ISSOCK(st.st_mode) != 0;
    *tcp = 0;
    acc = fl & O_ACCMODE;
    if (kind == K_CONN) {
        if (!*is_sock)
            return -ENOTSOCK;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0)
            return -errno;
        if (type != SOCK_STREAM)
            return -EINVAL;
        memset(&ss, 0, sizeof(ss));
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
            return -errno; /* -ENOTCONN */
        *tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
    } else if ((!S_ISFIFO(st.st_mode) && !*is_sock &&
                !S_ISCHR(st.st_mode)) ||
               (kind == K_RPIPE && acc == O_WRONLY) ||
               (kind == K_WPIPE && acc == O_RDONLY)) {
        return -EINVAL;
    }
    if ((rc = aw__loop_fd_watchable(loop, fd)) != 0)
        return rc;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return -errno;
    if ((fl = fcntl(fd, F_GETFD)) >= 0 && !(fl & FD_CLOEXEC))
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    return 0;
}

/* Give fd back: the transport will not close it. */
static void
unadopt(aw_transport *t)
{
    if (t->rev != NULL)
        event_free(t->rev);
    t->rev = NULL;
    t->fd = -1;
}

/* fd becomes t's, of that kind.  0 or an error (fd still the caller's). */
static int
adopt(aw_transport *t, int fd, int kind)
{
    int is_sock, tcp, rc, one = 1;

    rc = adopt_check(t->loop, fd, kind, &is_sock, &tcp);
    if (rc != 0)
        return rc;
    t->kind = kind;
    t->nosock = !is_sock;
    rc = attach_socket(t, fd, tcp);
    if (rc == 0 && tcp) /* on by default, as for the library's own */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return rc;
}

/* From the loop: connection_made, then the future's result. */
static int
adopted_soon(aw_loop *loop, void *arg)
{
    aw_transport *t = arg;

    (void)loop;
    if (t->state == T_CONNECTING)
        connected(t);
    aw_transport_unref(t);
    return 0;
}

static aw_future *
adopt_fd(aw_loop *loop, int fd, int kind, const aw_protocol *proto,
         void *arg, const char *who)
{
    aw_transport *t;
    aw_future *f;
    int rc;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (!protocol_ok(proto) || fd < 0)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("%s: bad descriptor or "
                                                "protocol", who));
    f = connect_start(loop, proto, arg, &t);
    if (t == NULL)
        return f;
    rc = adopt(t, fd, kind);
    if (rc == 0) {
        aw_transport_ref(t);
        if (aw_loop_call_soon(loop, adopted_soon, t, NULL) != 0) {
            aw_transport_unref(t);
            rc = -ENOMEM;
        }
    }
    if (rc != 0) {
        unadopt(t);
        connect_failed(t, rc, aw__format("%s: %s", who, aw_strerror(rc)));
    }
    return f;
}

aw_future *
aw_create_connection_sock(aw_loop *loop, int fd, const aw_protocol *proto,
                          void *arg)
{
    return adopt_fd(loop, fd, K_CONN, proto, arg,
                    "aw_create_connection_sock");
}

aw_future *
aw_connect_read_pipe(aw_loop *loop, int fd, const aw_protocol *proto,
                     void *arg)
{
    return adopt_fd(loop, fd, K_RPIPE, proto, arg, "aw_connect_read_pipe");
}

aw_future *
aw_connect_write_pipe(aw_loop *loop, int fd, const aw_protocol *proto,
                      void *arg)
{
    return adopt_fd(loop, fd, K_WPIPE, proto, arg, "aw_connect_write_pipe");
}

static int
pipe_made(aw_loop *loop, void *arg)
{
    aw_transport *t = arg;

    (void)loop;
    if (t->state == T_CONNECTING)
        opened(t);
    aw_transport_unref(t);
    return 0;
}

int
aw__transport_from_pipe(aw_loop *loop, int fd, int readable,
                        const aw_protocol *proto, void *arg,
                        aw_transport **tp)
{
    aw_transport *t;
    int rc;

    if (tp != NULL)
        *tp = NULL;
    if (loop == NULL || tp == NULL || !protocol_ok(proto) || fd < 0)
        return -EINVAL;
    if (aw_loop_is_closed(loop))
        return AW_ECLOSED;
    t = transport_new(loop, proto, arg);
    if (t == NULL)
        return -ENOMEM;
    rc = adopt(t, fd, readable ? K_RPIPE : K_WPIPE);
    if (rc == 0) {
        aw_transport_ref(t); /* pipe_made's */
        if (aw_loop_call_soon(loop, pipe_made, t, NULL) != 0) {
            aw_transport_unref(t);
            rc = -ENOMEM;
        }
    }
    if (rc != 0) {
        unadopt(t);
        transport_free(t);
        return rc;
    }
    *tp = aw_transport_ref(t);
    return 0;
}

/* ---- serving ------------------------------------------------------------------------ */

static void
server_forget(aw_server *srv, aw_transport *t)
{
    if (t->srv_prev != NULL)
        t->srv_prev->srv_next = t->srv_next;
    else
        srv->conns = t->srv_next;
    if (t->srv_next != NULL)
        t->srv_next->srv_prev = t->srv_prev;
    t->server = NULL;
    srv->nconns--;
    if (srv->closed && srv->nconns == 0 && srv->closed_fut != NULL &&
        srv->closed_fut->state == AW_FUTURE_PENDING)
        aw_future_set_result(srv->closed_fut, NULL, NULL);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int len, void *arg)
{
    aw_server *srv = arg;
    aw_transport *t;
    int tcp = sa->sa_family == AF_INET || sa->sa_family == AF_INET6, one = 1;

    (void)l;
    (void)len;
    if (aw__loop_fd_watchable(srv->loop, fd) != 0) {
        evutil_closesocket(fd);
        aw__loop_report(srv->loop, -EMFILE, NULL, NULL,
                        "server: connection dropped: descriptor %d is "
                        "beyond what the select backend can watch",
                        (int)fd);
        return;
    }
    t = transport_new(srv->loop, srv->proto, srv->arg);
    if (t == NULL || attach_socket(t, fd, tcp) != 0) {
        evutil_closesocket(fd);
        if (t != NULL)
            transport_free(t);
        aw__loop_report(srv->loop, -ENOMEM, NULL, NULL,
                        "server: connection dropped, out of memory");
        return;
    }
    /* TCP_NODELAY by default (asyncio, uvloop); a system that refuses it
     * leaves Nagle on, as aw_transport_set_nodelay() would tell. */
    if (tcp)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    t->server = srv;
    t->srv_next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->srv_prev = t;
    srv->conns = t;
    srv->nconns++;
    opened(t);
}

static int
accept_again(aw_loop *loop, void *arg)
{
    aw_server *srv = arg;
    size_t i;

    (void)loop;
    aw_handle_unref(srv->retry);
    srv->retry = NULL;
    for (i = 0; i < srv->nls; i++)
        evconnlistener_enable(srv->ls[i]);
    return 0;
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
    aw_server *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();
    size_t i;

    (void)l;
    aw__loop_report(srv->loop, -err, NULL, NULL,
                    "server: accept failed: %s%s", evutil_socket_error_to_string(err),
                    err == EMFILE || err == ENFILE || err == ENOBUFS ||
                            err == ENOMEM
                        ? "; pausing accepts for 100 ms"
                        : "");
    if ((err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) &&
        srv->retry == NULL) {
        for (i = 0; i < srv->nls; i++)
            evconnlistener_disable(srv->ls[i]);
        aw_loop_call_later(srv->loop, ACCEPT_RETRY_DELAY, accept_again, srv,
                           &srv->retry);
    }
}

static void
server_free_cb(void *p)
{
    aw_server_free(p);
}

static aw_server *
server_new(aw_loop *loop, const aw_protocol *proto, void *arg,
           aw_destroy_fn arg_destroy)
{
    aw_server *srv = aw__calloc(1, sizeof(*srv));

    if (srv == NULL) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return NULL;
    }
    srv->loop = loop;
    srv->proto = proto;
    srv->arg = arg;
    srv->arg_destroy = arg_destroy;
    aw__loop_track(loop, 1);
    return srv;
}

/* Listen on the bound socket fd. */
static int
server_add(aw_server *srv, evutil_socket_t fd, int backlog)
{
    struct evconnlistener **ls, *l;

    ls = aw__reallocarray(srv->ls, srv->nls + 1, sizeof(*ls));
    if (ls == NULL)
        return -ENOMEM;
    srv->ls = ls;
    l = evconnlistener_new(aw_loop_get_base(srv->loop), accept_cb, srv,
                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                           backlog, fd);
    if (l == NULL)
        return errno != 0 ? -errno : -ENOMEM;
    evconnlistener_set_error_cb(l, accept_error_cb);
    srv->ls[srv->nls++] = l;
    return 0;
}

static evutil_socket_t
bound_socket(const struct sockaddr *sa, socklen_t len, int flags, int *err)
{
    evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC |
                                                   SOCK_NONBLOCK, 0);
    int one = 1;

    if (fd < 0) {
        *err = -errno;
        return -1;
    }
    /* An option asked for is set or the call fails. */
    if ((sa->sa_family != AF_UNIX && !(flags & AW_SERVER_NO_REUSE_ADDRESS) &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) ||
#ifdef SO_REUSEPORT
        ((flags & AW_SERVER_REUSE_PORT) &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
#endif
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, sa, len) != 0) {
        *err = -errno;
        close(fd);
        return -1;
    }
    return fd;
}

static aw_future *
server_result(aw_loop *loop, aw_server *srv, int rc, const char *what)
{
    if (rc != 0) {
        aw_server_free(srv);
        return aw__future_failed_new(loop, rc,
                                     aw__format("cannot listen on %s: %s",
                                                what, aw_strerror(rc)));
    }
    return aw_future_resolved(loop, srv, server_free_cb);
}

aw_future *
aw_create_server(aw_loop *loop, const char *host, int port,
                 const aw_protocol *proto, void *arg, int flags, int backlog)
{
    return aw__create_server(loop, host, port, NULL, proto, arg, NULL, flags,
                             backlog);
}

aw_future *
aw_create_unix_server(aw_loop *loop, const char *path,
                      const aw_protocol *proto, void *arg, int backlog)
{
    if (loop != NULL && path == NULL)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_unix_server: no "
                                                "path"));
    return aw__create_server(loop, NULL, 0, path, proto, arg, NULL, 0,
                             backlog);
}

/* A listening (or bound) stream socket the program has: is it, and is it
 * listening?  Made non-blocking and close-on-exec.  0 or an error, fd
 * left as it was. */
static int
listen_check(aw_loop *loop, int fd, int *listening)
{
    socklen_t tl = sizeof(int);
    int type, acc = 0, fl, rc;

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0)
        return -errno; /* -ENOTSOCK, -EBADF */
    if (type != SOCK_STREAM)
        return -EINVAL;
    tl = sizeof(int);
#ifdef SO_ACCEPTCONN
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &tl) != 0)
        acc = 0;
#endif
    *listening = acc != 0;
    if ((rc = aw__loop_fd_watchable(loop, fd)) != 0)
        return rc;
    if ((fl = fcntl(fd, F_GETFL)) < 0 ||
        (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0))
        return -errno;
    return 0;
}

aw_future *
aw__create_server_sock(aw_loop *loop, int fd, const aw_protocol *proto,
                       void *arg, aw_destroy_fn arg_destroy, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    aw_server *srv;
    int rc, listening = 0;

    if (loop == NULL || aw_loop_is_closed(loop)) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return NULL;
    }
    rc = !protocol_ok(proto) || fd < 0 ? -EINVAL
                                       : listen_check(loop, fd, &listening);
    if (rc != 0) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return aw__future_failed_new(loop, rc,
                                     aw__format("aw_create_server_sock: %s",
                                                aw_strerror(rc)));
    }
    srv = server_new(loop, proto, arg, arg_destroy);
    if (srv == NULL)
        return aw__future_nomem(loop);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        srv->port = ss.ss_family == AF_INET6
                        ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                    : ss.ss_family == AF_INET
                        ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                        : 0;
    /* A socket already listening keeps its backlog (the service
     * manager's Backlog=) unless one is asked for; evconnlistener does
     * not call listen() for 0. */
    rc = server_add(srv, fd,
                    backlog > 0 ? backlog : listening ? 0 : DEFAULT_BACKLOG);
    return server_result(loop, srv, rc, "a socket");
}

aw_future *
aw_create_server_sock(aw_loop *loop, int fd, const aw_protocol *proto,
                      void *arg, int backlog)
{
    return aw__create_server_sock(loop, fd, proto, arg, NULL, backlog);
}

/* Known flags, and not both REUSE_ADDRESS and NO_REUSE_ADDRESS. */
static int
flags_ok(int flags)
{
    int all = AW_SERVER_REUSE_ADDRESS | AW_SERVER_REUSE_PORT |
              AW_SERVER_NO_REUSE_ADDRESS;

#ifndef SO_REUSEPORT
    all &= ~AW_SERVER_REUSE_PORT;
#endif
    return (flags & ~all) == 0 &&
           (flags & (AW_SERVER_REUSE_ADDRESS | AW_SERVER_NO_REUSE_ADDRESS)) !=
               (AW_SERVER_REUSE_ADDRESS | AW_SERVER_NO_REUSE_ADDRESS);
}

static aw_future *create_unix_server(aw_loop *loop, const char *path,
                                     const aw_protocol *proto, void *arg,
                                     aw_destroy_fn arg_destroy, int backlog);

/* Bind and listen on every address of res (port 0: every address on the
 * port the first one got).  0 or an error. */
static int
listen_all(aw_server *srv, struct evutil_addrinfo *res, int flags,
           int backlog)
{
    struct evutil_addrinfo *ai;
    int rc = 0;

    for (ai = res; ai != NULL && rc == 0; ai = ai->ai_next) {
        struct sockaddr_storage ss;
        evutil_socket_t fd;

        if (ai->ai_addrlen > sizeof(ss))
            continue;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (srv->port != 0) {
            if (ss.ss_family == AF_INET)
                ((struct sockaddr_in *)&ss)->sin_port = htons(srv->port);
            else if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons(srv->port);
        }
        fd = bound_socket((struct sockaddr *)&ss, ai->ai_addrlen, flags, &rc);
        if (fd < 0 && (rc == -EAFNOSUPPORT || rc == -EADDRNOTAVAIL) &&
            (ai->ai_next != NULL || srv->nls > 0)) {
            rc = 0; /* a family this machine lacks (asyncio skips it) */
            continue;
        }
        if (fd < 0)
            break;
        if (srv->port == 0) {
            struct sockaddr_storage b;
            socklen_t bl = sizeof(b);

            if (getsockname(fd, (struct sockaddr *)&b, &bl) == 0)
                srv->port = ntohs(b.ss_family == AF_INET6
                                      ? ((struct sockaddr_in6 *)&b)->sin6_port
                                      : ((struct sockaddr_in *)&b)->sin_port);
        }
        rc = server_add(srv, fd, backlog);
        if (rc != 0)
            close(fd);
    }
    return rc;
}

/* A server waiting for its addresses from the loop's resolver. */
struct listen_req {
    aw_future *f;
    aw_server *srv; /* owned until handed to f */
    struct aw__gai *req;
    int flags, backlog;
    int in_call; /* aw__getaddrinfo has not returned yet */
    int done;    /* the callback ran */
    char what[300];
};

static int listen_watch(aw_future *f, void *arg);

static void
listen_req_free(struct listen_req *lr)
{
    aw__future_detach(lr->f, listen_watch, lr);
    aw_future_unref(lr->f);
    aw__free(lr);
}

static void
listen_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct listen_req *lr = arg;
    aw_server *srv = lr->srv;
    int rc;

    lr->req = NULL;
    lr->srv = NULL;
    if (lr->f->state != AW_FUTURE_PENDING) {
        aw_server_free(srv); /* cancelled: nobody wants it */
    } else if (result != 0) {
        aw_server_free(srv);
        aw__future_set_failed(lr->f, aw__gai_error(result, errno),
                              aw__format("cannot resolve %s: %s", lr->what,
                                         evutil_gai_strerror(result)));
    } else if ((rc = listen_all(srv, res, lr->flags, lr->backlog)) != 0) {
        aw_server_free(srv);
        aw__future_set_failed(lr->f, rc,
                              aw__format("cannot listen on %s: %s", lr->what,
                                         aw_strerror(rc)));
    } else {
        aw_future_set_result(lr->f, srv, server_free_cb);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    lr->done = 1;
    if (!lr->in_call)
        listen_req_free(lr);
}

/* The future settled: cancelled while resolving, cancel the request (its
 * callback still comes, with EVUTIL_EAI_CANCEL, and frees the rest). */
static int
listen_watch(aw_future *f, void *arg)
{
    struct listen_req *lr = arg;

    if (aw_future_cancelled(f) && lr->req != NULL)
        aw__getaddrinfo_cancel(lr->req);
    return 0;
}

aw_future *
aw__create_server(aw_loop *loop, const char *host, int port, const char *path,
                  const aw_protocol *proto, void *arg,
                  aw_destroy_fn arg_destroy, int flags, int backlog)
{
    struct evutil_addrinfo hints;
    struct aw__gai *req;
    struct listen_req *lr;
    char portstr[16];
    aw_server *srv;
    aw_future *f;

    if (loop == NULL || aw_loop_is_closed(loop)) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return NULL;
    }
    if (path != NULL)
        return create_unix_server(loop, path, proto, arg, arg_destroy,
                                  backlog);
    if (!protocol_ok(proto) || port < 0 || port > 65535 || !flags_ok(flags)) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_server: bad port, "
                                                "protocol or flags"));
    }
    if (host != NULL && host[0] == '\0')
        host = NULL; /* every address, as asyncio's '' */
    srv = server_new(loop, proto, arg, arg_destroy);
    if (srv == NULL)
        return aw__future_nomem(loop);
    f = aw_future_new(loop);
    lr = aw__calloc(1, sizeof(*lr));
    if (f == NULL || lr == NULL ||
        aw__future_attach(f, listen_watch, lr) != 0) {
        aw_future_unref(f);
        aw__free(lr);
        aw_server_free(srv);
        return aw__future_nomem(loop);
    }
    lr->f = aw_future_ref(f);
    lr->srv = srv;
    lr->flags = flags;
    lr->backlog = backlog > 0 ? backlog : DEFAULT_BACKLOG;
    snprintf(lr->what, sizeof(lr->what), "%s:%d", host ? host : "*", port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_PASSIVE; /* asyncio's: no ADDRCONFIG */
    snprintf(portstr, sizeof(portstr), "%d", port);
    /* Numeric hosts, every address and the hosts file answer inside the
     * call: f is settled then, before it is handed out. */
    lr->in_call = 1;
    req = aw__getaddrinfo(loop, host, portstr, &hints, listen_resolved, lr);
    lr->in_call = 0;
    if (lr->done)
        listen_req_free(lr);
    else
        lr->req = req;
    return f;
}

/* ---- which resolver ---------------------------------------------------------------- */

int
aw_set_resolver(aw_loop *loop, int resolver)
{
    if (loop == NULL ||
        (resolver != AW_RESOLVER_SYSTEM && resolver != AW_RESOLVER_EVDNS))
        return -EINVAL;
    if (aw_loop_is_closed(loop))
        return AW_ECLOSED;
    aw__loop_net_slot(loop)->resolver = resolver;
    return 0;
}

int
aw_get_resolver(aw_loop *loop)
{
    return loop != NULL ? aw__loop_net_slot(loop)->resolver : -EINVAL;
}

/* An IPv4 or IPv6 literal (with a scope: left to the resolver). */
static int
is_literal(const char *node)
{
    struct sockaddr_storage ss;
    socklen_t len;

    return numeric_addr(node, 0, &ss, &len);
}

/* A request, whichever resolver answers it. */
struct aw__gai {
    aw_loop *loop;
    aw__gai_fn cb;
    void *arg;
    struct evdns_getaddrinfo_request *dns; /* evdns: its request */
    aw_future *job;                        /* system: the executor's */

    int in_call, answered;
};

/* What the system's getaddrinfo is asked, copied for the worker. */
struct sys_query {
    char *node, *service;
    struct addrinfo hints;
};

/* What it answered. */
struct sys_answer {
    int rc, sys_errno;
    struct addrinfo *res;
};

static void
sys_query_free(void *p)
{
    struct sys_query *q = p;

    aw__free(q->node);
    aw__free(q->service);
    aw__free(q);
}

static void
sys_answer_free(void *p)
{
    struct sys_answer *a = p;

    if (a->res != NULL)
        freeaddrinfo(a->res);
    aw__free(a);
}

/* On a worker thread: the blocking getaddrinfo(3), which honours
 * nsswitch, /etc/hosts and /etc/gai.conf (asyncio's default). */
static void *
sys_lookup(void *arg, int *err)
{
    struct sys_query *q = arg;
    struct sys_answer *a = aw__calloc(1, sizeof(*a));

    if (a == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    a->rc = getaddrinfo(q->node, q->service, &q->hints, &a->res);
    a->sys_errno = errno;
    if (a->rc != 0)
        a->res = NULL;
    return a;
}

static void
gai_answer(struct aw__gai *g, int result, struct evutil_addrinfo *res)
{
    aw__gai_fn cb = g->cb;
    void *arg = g->arg;

    if (g->in_call) {
        g->answered = 1; /* freed when the call returns */
    } else {
        aw_future_unref(g->job);
        aw__free(g);
    }
    cb(result, res, arg);
}

static void
gai_evdns_done(int result, struct evutil_addrinfo *res, void *arg)
{
    struct aw__gai *g = arg;

    g->dns = NULL;
    gai_answer(g, result, res);
}

static int
gai_job_done(aw_future *job, void *arg)
{
    struct aw__gai *g = arg;
    struct sys_answer *a = NULL;
    struct evutil_addrinfo *res = NULL;
    int rc = aw_future_error(job), result;

    if (rc == AW_ECANCELLED) {
        result = EVUTIL_EAI_CANCEL;
    } else if (rc != 0) {
        result = rc == -ENOMEM ? EVUTIL_EAI_MEMORY : EVUTIL_EAI_SYSTEM;
        errno = -rc;
    } else if (aw_future_take_result(job, (void **)&a, NULL) != 0 ||
               a == NULL) {
        result = EVUTIL_EAI_MEMORY;
    } else {
        result = a->rc;
        res = (struct evutil_addrinfo *)a->res;
        errno = a->sys_errno;
        aw__free(a); /* res is the callback's now */
    }
    gai_answer(g, result, res);
    return 0;
}

struct aw__gai *
aw__getaddrinfo(aw_loop *loop, const char *node, const char *service,
                const struct evutil_addrinfo *hints, aw__gai_fn cb, void *arg)
{
    struct aw__gai *g;
    struct sys_query *q = NULL;
    struct evdns_base *dns;

    /* No name to look up (every address, a literal): answered here and
     * now, whichever resolver names go to, with nothing that can block
     * (AI_NUMERICHOST) and without making the evdns base, whose sockets
     * a select loop out of low descriptors could not watch. */
    if (node == NULL || is_literal(node)) {
        struct evutil_addrinfo h, *res = NULL;
        int rc;

        memset(&h, 0, sizeof(h));
        if (hints != NULL)
            h = *hints;
        h.ai_flags |= EVUTIL_AI_NUMERICHOST;
        rc = evutil_getaddrinfo(node, service, &h, &res);
        cb(rc, rc == 0 ? res : NULL, arg);
        return NULL;
    }
    g = aw__calloc(1, sizeof(*g));
    if (g == NULL)
        goto nomem;
    g->loop = loop;
    g->cb = cb;
    g->arg = arg;
    if (aw__loop_net_slot(loop)->resolver == AW_RESOLVER_EVDNS) {
        if ((dns = aw__loop_dns(loop)) == NULL)
            goto nomem;
        g->in_call = 1;
        g->dns = evdns_getaddrinfo(dns, node, service, hints, gai_evdns_done,
                                   g);
        g->in_call = 0;
        if (g->answered) { /* inside the call */
            aw__free(g);
            return NULL;
        }
        return g;
    }
    q = aw__calloc(1, sizeof(*q));
    if (q == NULL || (node != NULL && (q->node = aw__strdup(node)) == NULL) ||
        (service != NULL && (q->service = aw__strdup(service)) == NULL))
        goto nomem;
    if (hints != NULL) {
        q->hints.ai_flags = hints->ai_flags;
        q->hints.ai_family = hints->ai_family;
        q->hints.ai_socktype = hints->ai_socktype;
        q->hints.ai_protocol = hints->ai_protocol;
    }
    g->job = aw_to_thread(loop, sys_lookup, q, sys_query_free,
                          sys_answer_free);
    q = NULL; /* the job's, whatever happened */
    if (g->job == NULL ||
        aw__future_attach(g->job, gai_job_done, g) != 0) {
        if (g->job != NULL) {
            aw_future_cancel(g->job, NULL);
            aw_future_unref(g->job);
        }
        g->job = NULL;
        goto nomem;
    }
    return g;

nomem:
    if (q != NULL)
        sys_query_free(q);
    aw__free(g);
    cb(EVUTIL_EAI_MEMORY, NULL, arg);
    return NULL;
}

void
aw__getaddrinfo_cancel(struct aw__gai *g)
{
    if (g == NULL)
        return;
    if (g->dns != NULL)
        evdns_getaddrinfo_cancel(g->dns);
    else if (g->job != NULL && g->job->state == AW_FUTURE_PENDING)
        aw_future_cancel(g->job, "name resolution cancelled");
}

/* ---- resolver errors ------------------------------------------------------------- */

int
aw__gai_error(int eai, int sys_errno)
{
    switch (eai) {
    case 0:
        return 0;
    case EVUTIL_EAI_NONAME:
        return AW_EAI_NONAME;
    case EVUTIL_EAI_AGAIN:
        return AW_EAI_AGAIN;
    case EVUTIL_EAI_FAIL:
        return AW_EAI_FAIL;
    case EVUTIL_EAI_FAMILY:
        return AW_EAI_FAMILY;
    case EVUTIL_EAI_NODATA:
    case EVUTIL_EAI_ADDRFAMILY: /* no address of that family */
        return AW_EAI_NODATA;
    case EVUTIL_EAI_SERVICE:
        return AW_EAI_SERVICE;
    case EVUTIL_EAI_BADFLAGS:
        return AW_EAI_BADFLAGS;
    case EVUTIL_EAI_SOCKTYPE:
        return AW_EAI_SOCKTYPE;
    case EVUTIL_EAI_MEMORY:
        return -ENOMEM;
    case EVUTIL_EAI_SYSTEM:
        return sys_errno > 0 ? -sys_errno : -EIO;
    case EVUTIL_EAI_CANCEL:
        return AW_ECANCELLED;
    default:
        return AW_EAI_FAIL;
    }
}

static aw_future *
create_unix_server(aw_loop *loop, const char *path, const aw_protocol *proto,
                   void *arg, aw_destroy_fn arg_destroy, int backlog)
{
    struct sockaddr_un sun;
    struct stat st;
    aw_server *srv;
    evutil_socket_t fd;
    int rc = 0;

    if (!protocol_ok(proto) || strlen(path) >= sizeof(sun.sun_path)) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_unix_server: bad "
                                                "path or protocol"));
    }
    if (backlog <= 0)
        backlog = DEFAULT_BACKLOG;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* a stale socket file (asyncio does the same) */
    srv = server_new(loop, proto, arg, arg_destroy);
    if (srv == NULL)
        return aw__future_nomem(loop);
    fd = bound_socket((struct sockaddr *)&sun, sizeof(sun), 0, &rc);
    if (fd >= 0 && (rc = server_add(srv, fd, backlog)) != 0)
        close(fd);
    return server_result(loop, srv, rc, path);
}

int
aw_server_port(const aw_server *srv)
{
    return srv != NULL ? srv->port : -EINVAL;
}

int
aw_server_sockets(const aw_server *srv, int *fds, size_t n)
{
    size_t i;

    if (srv == NULL || (fds == NULL && n > 0))
        return -EINVAL;
    for (i = 0; i < srv->nls && i < n; i++)
        fds[i] = (int)evconnlistener_get_fd(srv->ls[i]);
    return (int)srv->nls;
}

int
aw_server_close(aw_server *srv)
{
    size_t i;

    if (srv == NULL)
        return -EINVAL;
    if (srv->closed)
        return 0;
    srv->closed = 1;
    for (i = 0; i < srv->nls; i++)
        evconnlistener_free(srv->ls[i]);
    aw__free(srv->ls);
    srv->ls = NULL;
    srv->nls = 0;
    if (srv->retry != NULL) {
        aw_handle_cancel(srv->retry);
        aw_handle_unref(srv->retry);
        srv->retry = NULL;
    }
    if (srv->nconns == 0 && srv->closed_fut != NULL &&
        srv->closed_fut->state == AW_FUTURE_PENDING)
        aw_future_set_result(srv->closed_fut, NULL, NULL);
    if (srv->serving != NULL && srv->serving->state == AW_FUTURE_PENDING) {
        aw__future_detach(srv->serving, serving_done, srv);
        aw_future_set_result(srv->serving, NULL, NULL);
    }
    return 0;
}

/* serve_forever's future settled: cancelled, it closes the server. */
static int
serving_done(aw_future *f, void *arg)
{
    aw_server *srv = arg;

    if (aw_future_cancelled(f))
        aw_server_close(srv);
    return 0;
}

aw_future *
aw_server_serve_forever(aw_server *srv)
{
    if (srv == NULL)
        return NULL;
    if (srv->serving == NULL) {
        srv->serving = aw_future_new(srv->loop);
        if (srv->serving == NULL)
            return aw__future_nomem(srv->loop);
        if (srv->closed) {
            aw_future_set_result(srv->serving, NULL, NULL);
        } else if (aw__future_attach(srv->serving, serving_done, srv) != 0) {
            aw_future_unref(srv->serving);
            srv->serving = NULL;
            return aw__future_nomem(srv->loop);
        }
    }
    return aw_future_ref(srv->serving);
}

aw_future *
aw_server_wait_closed(aw_server *srv)
{
    if (srv == NULL)
        return NULL;
    if (srv->closed_fut == NULL) {
        srv->closed_fut = aw_future_new(srv->loop);
        if (srv->closed_fut == NULL)
            return aw__future_nomem(srv->loop);
        if (srv->closed && srv->nconns == 0)
            aw_future_set_result(srv->closed_fut, NULL, NULL);
    }
    return aw_future_ref(srv->closed_fut);
}

void
aw_server_free(aw_server *srv)
{
    aw_transport *t;

    if (srv == NULL)
        return;
    aw_server_close(srv);
    for (t = srv->conns; t != NULL; t = t->srv_next)
        t->server = NULL; /* they go on without it */
    if (srv->closed_fut != NULL &&
        srv->closed_fut->state == AW_FUTURE_PENDING)
        aw_future_cancel(srv->closed_fut, "server freed");
    aw_future_unref(srv->closed_fut);
    if (srv->serving != NULL)
        aw__future_detach(srv->serving, serving_done, srv);
    aw_future_unref(srv->serving);
    if (srv->arg_destroy != NULL)
        srv->arg_destroy(srv->arg);
    aw__loop_track(srv->loop, -1);
    aw__free(srv);
}

/* ---- the service manager ----------------------------------------------------------- */

/* A decimal variable of the environment: 1 with *v; 0 unset; -EINVAL. */
static int
env_number(const char *name, unsigned long long *v)
{
    const char *e = getenv(name);
    char *end;

    if (e == NULL)
        return 0;
    errno = 0;
    *v = strtoull(e, &end, 10);
    if (e[0] < '0' || e[0] > '9' || *end != '\0' || errno != 0)
        return -EINVAL;
    return 1;
}

/* Is the variable name unset, or set to this process's pid?  1 yes, 0 no,
 * -EINVAL. */
static int
env_pid_is_ours(const char *name)
{
    unsigned long long pid;
    int rc = env_number(name, &pid);

    if (rc <= 0)
        return rc == 0 ? 1 : rc;
    return pid == (unsigned long long)getpid();
}

void
aw_listen_names_free(char **names)
{
    size_t i;

    if (names == NULL)
        return;
    for (i = 0; names[i] != NULL; i++)
        aw__free(names[i]);
    aw__free(names);
}

/* LISTEN_FDNAMES split at ':' into n names ("unknown" each when unset, as
 * sd_listen_fds_with_names).  0 or -EINVAL (not n of them), -ENOMEM. */
static int
listen_names(int n, char ***namesp)
{
    const char *e = getenv("LISTEN_FDNAMES"), *p;
    char **names = aw__calloc((size_t)n + 1, sizeof(*names));
    int i;

    if (names == NULL)
        return -ENOMEM;
    for (i = 0, p = e; i < n; i++) {
        size_t len;

        if (e != NULL && p == NULL)
            break; /* fewer names than descriptors */
        len = e == NULL ? 0 : strcspn(p, ":");
        names[i] = e == NULL ? aw__strdup("unknown") : aw__malloc(len + 1);
        if (names[i] == NULL) {
            aw_listen_names_free(names);
            return -ENOMEM;
        }
        if (e != NULL) {
            memcpy(names[i], p, len);
            names[i][len] = '\0';
            p = p[len] == ':' ? p + len + 1 : NULL;
        }
    }
    if (i < n || (e != NULL && p != NULL)) {
        aw_listen_names_free(names);
        return -EINVAL;
    }
    *namesp = names;
    return 0;
}

static int
listen_fds(char ***names)
{
    unsigned long long n;
    int rc, fd;

    if ((rc = env_number("LISTEN_PID", &n)) <= 0)
        return rc;
    if (n != (unsigned long long)getpid())
        return 0; /* meant for another process (the parent) */
    if ((rc = env_number("LISTEN_FDS", &n)) <= 0)
        return rc;
    if (n > (unsigned long long)(INT_MAX - AW_LISTEN_FDS_START))
        return -EINVAL;
    for (fd = AW_LISTEN_FDS_START; fd < AW_LISTEN_FDS_START + (int)n; fd++) {
        int fl = fcntl(fd, F_GETFD);

        if (fl < 0 ||
            (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) != 0))
            return -errno;
    }
    if (n > 0 && names != NULL && (rc = listen_names((int)n, names)) != 0)
        return rc;
    return (int)n;
}

int
aw_listen_fds(int unset_environment, char ***names)
{
    int rc;

    if (names != NULL)
        *names = NULL;
    rc = listen_fds(names);
    if (unset_environment) {
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
    }
    return rc;
}

int
aw_notify(const char *state)
{
    const char *e = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    size_t len, off = offsetof(struct sockaddr_un, sun_path);
    ssize_t r;
    int fd, rc = 1;

    if (state == NULL)
        return -EINVAL;
    if (e == NULL || e[0] == '\0')
        return 0;
    len = strlen(e);
    if ((e[0] != '/' && e[0] != '@') || len >= sizeof(sun.sun_path))
        return -EINVAL;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, e, len);
    if (e[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract: its length says where it ends */
    else
        len++;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    do
        r = sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
                   (struct sockaddr *)&sun, (socklen_t)(off + len));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        rc = -errno;
    close(fd);
    return rc;
}

struct aw_watchdog {
    aw_loop *loop;
    aw_handle *timer;
    double every;
    int reported; /* a failed ping was reported (once) */
};

static int
watchdog_tick(aw_loop *loop, void *arg)
{
    aw_watchdog *wd = arg;
    int rc = aw_notify("WATCHDOG=1");

    if (rc < 0 && !wd->reported) {
        wd->reported = 1;
        aw__loop_report(loop, rc, NULL, NULL,
                        "watchdog: cannot notify the service manager: %s",
                        aw_strerror(rc));
    }
    aw_handle_unref(wd->timer);
    wd->timer = NULL;
    if (aw_loop_call_later(loop, wd->every, watchdog_tick, wd, &wd->timer) !=
        0)
        aw__loop_report(loop, -ENOMEM, NULL, NULL,
                        "watchdog: out of memory, pings stopped");
    return 0;
}

int
aw_watchdog_start(aw_loop *loop, aw_watchdog **wdp)
{
    unsigned long long usec;
    aw_watchdog *wd;
    int rc;

    if (wdp != NULL)
        *wdp = NULL;
    if (loop == NULL || wdp == NULL)
        return -EINVAL;
    if (aw_loop_is_closed(loop))
        return AW_ECLOSED;
    if ((rc = env_number("WATCHDOG_USEC", &usec)) <= 0)
        return rc;
    if ((rc = env_pid_is_ours("WATCHDOG_PID")) <= 0)
        return rc;
    if (usec == 0)
        return -EINVAL;
    wd = aw__calloc(1, sizeof(*wd));
    if (wd == NULL)
        return -ENOMEM;
    wd->loop = loop;
    wd->every = (double)usec / 2e6;
    rc = aw_loop_call_later(loop, wd->every, watchdog_tick, wd, &wd->timer);
    if (rc != 0) {
        aw__free(wd);
        return rc;
    }
    *wdp = wd;
    return 1;
}

void
aw_watchdog_stop(aw_watchdog *wd)
{
    if (wd == NULL)
        return;
    if (wd->timer != NULL) {
        aw_handle_cancel(wd->timer);
        aw_handle_unref(wd->timer);
    }
    aw__free(wd);
}

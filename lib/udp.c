/* SPDX-License-Identifier: MIT */
/* udp.c: datagram endpoints on plain libevent events (asyncio's
 * _SelectorDatagramTransport).
 *
 * A datagram transport owns its socket and two events: the read event,
 * pending while the endpoint reads, and the write event, pending only
 * while datagrams are queued.  A send with nothing queued goes to the
 * socket at once (MSG_NOSIGNAL | MSG_DONTWAIT); only a datagram the
 * kernel would not take is queued, whole.  On Linux a wake-up reads the
 * waiting datagrams with recvmmsg() into slots of one buffer (allocated
 * at the first read: its pages become resident only as datagrams land
 * in them) and a queue is flushed with sendmmsg(); elsewhere
 * recvmsg()/sendto() one at a time.  While a wake-up delivers datagrams
 * the endpoint is corked: what datagram_received sends is queued and
 * flushed at the wake-up's end, so that an echo costs one sendmmsg() a
 * batch rather than a sendto() a datagram.
 *
 * Protocol callbacks run from libevent's callbacks or from the ready
 * queue, never inside a transport call: an error of a send is scheduled
 * for error_received.  A transport holds a reference to itself until
 * connection_lost has been delivered. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "await/udp.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "transport-internal.h"

#if defined(__linux__) && defined(MSG_WAITFORONE)
#define HAVE_MMSG 1
#endif

#define DEFAULT_HIGH (64 * 1024)
#define DEFAULT_LOW (16 * 1024)
/* A receive slot holds the largest UDP datagram (65507 bytes over IPv4);
 * a Unix one asyncio's max_size (256 KiB). */
#define SLOT_IP 65536
#define SLOT_UNIX (256 * 1024)
/* Datagrams one recvmmsg() may take; datagrams (or errors) one wake-up
 * may read before the loop's other work has its turn. */
#define BATCH 32
#define READ_BUDGET 128
/* The slots of one transport: at most 2 MiB of address space (32 slots
 * for UDP, 8 for Unix), resident only where datagrams landed. */
#define RBUF_MAX (2 * 1024 * 1024)
/* The awaitable form: datagrams kept for aw_datagram_recv. */
#define RECV_QUEUE_MAX 256

enum dstate { D_OPENING, D_OPEN, D_CLOSING, D_LOST };

/* A datagram: one queued for sending, or one received for a task (err
 * set: an error that takes its place in the order). */
struct aw_datagram {
    struct aw_datagram *next;
    int err;
    socklen_t alen;
    struct sockaddr_storage addr;
    size_t len;
    unsigned char data[];
};

/* A future waiting: for a datagram (recv) or for the queue to drain. */
struct waiter {
    struct waiter *next;
    aw_future *f;
};

struct aw_datagram_transport {
    aw_loop *loop;
    aw_datagram_transport *live_prev, *live_next; /* the loop's census */
    const aw_datagram_protocol *proto; /* NULL: the awaitable form */
    void *user;
    struct event *rev, *wev;
    int fd;
    int family;
    int lost_error;
    int flags;
    unsigned refs;
    unsigned state : 2;
    unsigned connected : 1;
    unsigned reading : 1; /* rev pending */
    unsigned paused : 1;  /* the protocol was told to pause writing */
    unsigned made : 1;    /* connection_made ran */
    unsigned borrowed : 1; /* the fd is the caller's until opened */
    unsigned corked : 1;   /* in a read wake-up: sends wait for its end */
    unsigned resolving : 1;
    unsigned step_remote : 1; /* the remote name is being resolved */
    size_t high, low;
    size_t qbytes;
    aw_datagram *qhead, *qtail; /* to send */
    /* the awaitable form's */
    aw_datagram *rhead, *rtail;
    size_t rcount;
    struct waiter *rwait, *rwait_tail, *dwait, *dwait_tail;
    /* receiving */
    unsigned char *rbuf;
    size_t slot;
    unsigned nslots;
    /* opening */
    aw_future *opening;
    struct aw__gai *dnsreq;
    struct evutil_addrinfo *local, *remote;
    char *rhost;
    int rport;
    struct sockaddr_storage peer; /* a connected endpoint's */
    socklen_t peerlen;
};

#define PROTOCOL_V1_SIZE                                                     \
    (offsetof(aw_datagram_protocol, connection_lost) +                      \
     sizeof(((aw_datagram_protocol *)0)->connection_lost))
#define PROTO_HAS(p, m)                                                      \
    ((p)->size >= offsetof(aw_datagram_protocol, m) + sizeof((p)->m))
#define CALL(t, m, ...)                                                      \
    do {                                                                     \
        if ((t)->proto != NULL && PROTO_HAS((t)->proto, m) &&                \
            (t)->proto->m != NULL)                                           \
            (t)->proto->m((t), __VA_ARGS__);                                 \
    } while (0)

static int
protocol_ok(const aw_datagram_protocol *p)
{
    return p == NULL ||
           (p->size >= PROTOCOL_V1_SIZE && p->size <= sizeof(*p));
}

/* ---- datagrams ------------------------------------------------------------- */

static aw_datagram *
datagram_new(const void *data, size_t len, const struct sockaddr *addr,
             socklen_t alen)
{
    aw_datagram *d = aw__malloc(sizeof(*d) + len);

    if (d == NULL)
        return NULL;
    d->next = NULL;
    d->err = 0;
    d->len = len;
    if (len > 0)
        memcpy(d->data, data, len);
    if (addr == NULL || alen > sizeof(d->addr))
        alen = 0;
    d->alen = alen;
    if (alen > 0)
        memcpy(&d->addr, addr, alen);
    return d;
}

void
aw_datagram_free(aw_datagram *d)
{
    aw__free(d);
}

static void
datagram_destroy(void *p)
{
    aw_datagram_free(p);
}

const void *
aw_datagram_data(const aw_datagram *d)
{
    return d != NULL ? d->data : NULL;
}

size_t
aw_datagram_len(const aw_datagram *d)
{
    return d != NULL ? d->len : 0;
}

const struct sockaddr *
aw_datagram_addr(const aw_datagram *d, socklen_t *addrlen)
{
    if (addrlen != NULL)
        *addrlen = d != NULL ? d->alen : 0;
    return d != NULL ? (const struct sockaddr *)&d->addr : NULL;
}

static void
free_list(aw_datagram **head, aw_datagram **tail)
{
    while (*head != NULL) {
        aw_datagram *d = *head;

        *head = d->next;
        aw__free(d);
    }
    *tail = NULL;
}

/* Settle and drop every waiter of a list: code 0 is a result of 0. */
static void
release_waiters(struct waiter **head, struct waiter **tail, int code)
{
    while (*head != NULL) {
        struct waiter *w = *head;

        *head = w->next;
        if (!aw_future_done(w->f)) {
            if (code == 0)
                aw_future_set_result_int(w->f, 0);
            else
                aw_future_set_error(w->f, code, NULL);
        }
        aw_future_unref(w->f);
        aw__free(w);
    }
    *tail = NULL;
}

/* The first waiter still pending (cancelled ones are dropped), removed
 * from the list; NULL when none. */
static aw_future *
next_waiter(struct waiter **head, struct waiter **tail)
{
    while (*head != NULL) {
        struct waiter *w = *head;
        aw_future *f = w->f;

        *head = w->next;
        if (*head == NULL)
            *tail = NULL;
        aw__free(w);
        if (!aw_future_done(f))
            return f;
        aw_future_unref(f);
    }
    return NULL;
}

static int
add_waiter(struct waiter **head, struct waiter **tail, aw_future *f)
{
    struct waiter *w = aw__malloc(sizeof(*w));

    if (w == NULL)
        return -ENOMEM;
    w->next = NULL;
    w->f = aw_future_ref(f);
    if (*tail != NULL)
        (*tail)->next = w;
    else
        *head = w;
    *tail = w;
    return 0;
}

/* ---- the transport's life -------------------------------------------------- */

static aw_datagram_transport *
transport_new(aw_loop *loop, const aw_datagram_protocol *proto, void *user)
{
    aw_datagram_transport *t = aw__calloc(1, sizeof(*t));
    struct aw__net_slot *s;

    if (t == NULL)
        return NULL;
    t->loop = loop;
    t->proto = proto;
    t->user = user;
    t->fd = -1;
    t->high = DEFAULT_HIGH;
    t->low = DEFAULT_LOW;
    t->refs = 1; /* its own, until connection_lost is delivered */
    s = aw__loop_net_slot(loop);
    t->live_next = s->datagrams;
    if (t->live_next != NULL)
        t->live_next->live_prev = t;
    s->datagrams = t;
    aw__net_census_on(loop);
    aw__loop_track(loop, 1);
    return t;
}

static void
transport_free(aw_datagram_transport *t)
{
    struct aw__net_slot *s = aw__loop_net_slot(t->loop);

    if (t->live_prev != NULL)
        t->live_prev->live_next = t->live_next;
    else
        s->datagrams = t->live_next;
    if (t->live_next != NULL)
        t->live_next->live_prev = t->live_prev;
    if (t->fd >= 0 && !t->borrowed)
        close(t->fd);
    aw__free(t->rbuf);
    aw__free(t->rhost);
    aw__loop_track(t->loop, -1);
    aw__free(t);
}

/* Close found work outstanding: each endpoint still alive, by its local
 * address (and its peer, when connected). */
void
aw__datagram_census(aw_loop *loop)
{
    static const char *const states[] = {"opening", "open", "closing",
                                         "lost"};
    aw_datagram_transport *t;

    for (t = aw__loop_net_slot(loop)->datagrams; t != NULL;
         t = t->live_next) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char local[AW_ADDRSTRLEN], peer[AW_ADDRSTRLEN];

        int n = t->fd < 0 ||
                        getsockname(t->fd, (struct sockaddr *)&ss, &sl) != 0
                    ? -1
                    : aw__addr_text((struct sockaddr *)&ss, sl, local,
                                    sizeof(local));

        if (n <= 0)
            snprintf(local, sizeof(local),
                     n == 0 ? "an unnamed socket" : "an unknown address");
        n = t->connected ? aw__addr_text((struct sockaddr *)&t->peer,
                                         t->peerlen, peer, sizeof(peer))
                         : -1;
        if (n == 0)
            snprintf(peer, sizeof(peer), "an unnamed socket");
        else if (n < 0)
            peer[0] = '\0';
        aw__loop_report(loop, AW_EBUSY, NULL, NULL,
                        "datagram endpoint on %s%s%s (%s%s%s) still alive at "
                        "loop close",
                        local, peer[0] != '\0' ? " to " : "", peer,
                        states[t->state],
                        t->state == D_LOST && t->lost_error != 0 ? ": " : "",
                        t->state == D_LOST && t->lost_error != 0
                            ? aw_err_name(t->lost_error)
                            : "");
    }
}

aw_datagram_transport *
aw_datagram_ref(aw_datagram_transport *t)
{
    if (t != NULL)
        t->refs++;
    return t;
}

void
aw_datagram_unref(aw_datagram_transport *t)
{
    if (t != NULL && --t->refs == 0)
        transport_free(t);
}

static void
unref_destroy(void *p)
{
    aw_datagram_unref(p);
}

static int
deliver_lost(aw_loop *loop, void *arg)
{
    aw_datagram_transport *t = arg;

    (void)loop;
    if (t->made)
        CALL(t, connection_lost, t->lost_error, t->user);
    aw_datagram_unref(t); /* its own reference */
    return 0;
}

/* The endpoint is over: free the socket and the queues, tell soon. */
static void
lose(aw_datagram_transport *t, int error)
{
    if (t->state == D_LOST)
        return;
    t->state = D_LOST;
    t->lost_error = error;
    if (t->dnsreq != NULL) { /* its callback still comes, and finds this */
        aw__getaddrinfo_cancel(t->dnsreq);
        t->dnsreq = NULL;
    }
    if (t->rev != NULL)
        event_free(t->rev);
    if (t->wev != NULL)
        event_free(t->wev);
    t->rev = t->wev = NULL;
    t->reading = 0;
    if (t->fd >= 0 && !t->borrowed)
        close(t->fd);
    t->fd = -1;
    free_list(&t->qhead, &t->qtail);
    t->qbytes = 0;
    free_list(&t->rhead, &t->rtail);
    t->rcount = 0;
    release_waiters(&t->rwait, &t->rwait_tail,
                    error != 0 ? error : AW_ECLOSED);
    release_waiters(&t->dwait, &t->dwait_tail,
                    error != 0 ? error : AW_ECLOSED);
    if (t->local != NULL)
        evutil_freeaddrinfo(t->local);
    if (t->remote != NULL)
        evutil_freeaddrinfo(t->remote);
    t->local = t->remote = NULL;
    if (aw_loop_call_soon(t->loop, deliver_lost, t, NULL) != 0)
        deliver_lost(t->loop, t); /* out of memory: now rather than never */
}

/* The read event is pending while the endpoint is open and, for the
 * awaitable form, the datagrams kept are fewer than the limit. */
static void
update_reading(aw_datagram_transport *t)
{
    int want = t->state == D_OPEN &&
               (t->proto != NULL || t->rcount < RECV_QUEUE_MAX);

    if (want && !t->reading && t->rev != NULL) {
        if (event_add(t->rev, NULL) == 0)
            t->reading = 1;
    } else if (!want && t->reading) {
        event_del(t->rev);
        t->reading = 0;
    }
}

/* ---- errors and writing notices -------------------------------------------- */

struct error_note {
    aw_datagram_transport *t;
    int error;
};

/* An error for the protocol, or the awaitable form's next receive. */
static void
received_error(aw_datagram_transport *t, int error)
{
    aw_datagram *d;
    aw_future *f;

    if (t->proto != NULL) {
        CALL(t, error_received, error, t->user);
        return;
    }
    if ((f = next_waiter(&t->rwait, &t->rwait_tail)) != NULL) {
        aw_future_set_error(f, error, NULL);
        aw_future_unref(f);
        return;
    }
    d = datagram_new(NULL, 0, NULL, 0);
    if (d == NULL)
        return; /* out of memory: the error is lost, as a datagram is */
    d->err = error;
    if (t->rtail != NULL)
        t->rtail->next = d;
    else
        t->rhead = d;
    t->rtail = d;
    t->rcount++;
}

static int
deliver_error(aw_loop *loop, void *arg)
{
    struct error_note *n = arg;

    (void)loop;
    if (n->t->state == D_OPEN || n->t->state == D_CLOSING)
        received_error(n->t, n->error);
    aw_datagram_unref(n->t);
    aw__free(n);
    return 0;
}

/* An error found inside a call: told from the loop. */
static void
schedule_error(aw_datagram_transport *t, int error)
{
    struct error_note *n = aw__malloc(sizeof(*n));

    if (n == NULL)
        return;
    n->t = aw_datagram_ref(t);
    n->error = error;
    if (aw_loop_call_soon(t->loop, deliver_error, n, NULL) != 0) {
        aw_datagram_unref(t);
        aw__free(n);
    }
}

static int
notify_writing(aw_loop *loop, void *arg)
{
    aw_datagram_transport *t = arg;

    (void)loop;
    if (t->state != D_LOST && t->made) {
        if (t->paused)
            CALL(t, pause_writing, t->user);
        else
            CALL(t, resume_writing, t->user);
    }
    aw_datagram_unref(t);
    return 0;
}

static void
schedule_writing_notice(aw_datagram_transport *t)
{
    aw_datagram_ref(t);
    if (aw_loop_call_soon(t->loop, notify_writing, t, NULL) != 0)
        aw_datagram_unref(t);
}

/* ---- sending --------------------------------------------------------------- */

static int
would_block(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

static void
pop_queued(aw_datagram_transport *t)
{
    aw_datagram *d = t->qhead;

    t->qhead = d->next;
    if (t->qhead == NULL)
        t->qtail = NULL;
    t->qbytes -= d->len;
    aw__free(d);
}

#ifdef HAVE_MMSG
/* Send up to BATCH queued datagrams with one call: how many went, or
 * -errno for the first. */
static int
send_batch(aw_datagram_transport *t)
{
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    aw_datagram *d;
    unsigned n = 0;
    int r;

    for (d = t->qhead; d != NULL && n < BATCH; d = d->next, n++) {
        iov[n].iov_base = d->data;
        iov[n].iov_len = d->len;
        memset(&mm[n], 0, sizeof(mm[n]));
        mm[n].msg_hdr.msg_iov = &iov[n];
        mm[n].msg_hdr.msg_iovlen = 1;
        if (d->alen > 0) {
            mm[n].msg_hdr.msg_name = &d->addr;
            mm[n].msg_hdr.msg_namelen = d->alen;
        }
    }
    r = sendmmsg(t->fd, mm, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    return r < 0 ? -errno : r;
}
#else
static int
send_batch(aw_datagram_transport *t)
{
    aw_datagram *d = t->qhead;
    ssize_t r = sendto(t->fd, d->data, d->len, MSG_NOSIGNAL | MSG_DONTWAIT,
                       d->alen > 0 ? (struct sockaddr *)&d->addr : NULL,
                       d->alen);

    return r < 0 ? -errno : 1;
}
#endif

/* Send what is queued until the kernel takes no more; an error drops
 * the datagram it belongs to and goes to error_received (asyncio). */
static void
send_queued(aw_datagram_transport *t)
{
    while (t->qhead != NULL && t->state != D_LOST) {
        int r = send_batch(t);

        if (r < 0) {
            if (would_block(-r))
                return;
            pop_queued(t);
            received_error(t, r);
            continue;
        }
        while (r-- > 0)
            pop_queued(t);
    }
}

/* What follows a change of the queue: the limits, the write event, the
 * end of a close. */
static void
after_send(aw_datagram_transport *t)
{
    if (t->paused && t->qbytes <= t->low) {
        t->paused = 0;
        schedule_writing_notice(t);
    } else if (!t->paused && t->qbytes > t->high) {
        t->paused = 1;
        schedule_writing_notice(t);
    }
    if (!t->paused)
        release_waiters(&t->dwait, &t->dwait_tail, 0);
    if (t->qhead == NULL) {
        if (t->wev != NULL)
            event_del(t->wev);
        if (t->state == D_CLOSING)
            lose(t, 0);
    } else if (t->wev != NULL) {
        event_add(t->wev, NULL);
    }
}

static void
writable_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_datagram_transport *t = arg;

    (void)fd;
    (void)what;
    if (t->state == D_LOST)
        return;
    aw_datagram_ref(t);
    send_queued(t);
    if (t->state != D_LOST)
        after_send(t);
    aw_datagram_unref(t);
}

/* addr names the connected peer (its port and address; a Unix one its
 * path): padding and length differences do not count. */
static int
same_addr(const aw_datagram_transport *t, const struct sockaddr *addr,
          socklen_t alen)
{
    const struct sockaddr *peer = (const struct sockaddr *)&t->peer;

    if (addr->sa_family != peer->sa_family)
        return 0;
    if (addr->sa_family == AF_INET && alen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const void *)addr,
                                 *b = (const void *)peer;

        return a->sin_port == b->sin_port &&
               a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (addr->sa_family == AF_INET6 && alen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const void *)addr,
                                  *b = (const void *)peer;

        return a->sin6_port == b->sin6_port &&
               memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) ==
                   0;
    }
    if (addr->sa_family == AF_UNIX) {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t la = alen > off ? alen - off : 0;
        size_t lb = t->peerlen > off ? t->peerlen - off : 0;
        const char *pa = ((const struct sockaddr_un *)addr)->sun_path;
        const char *pb = ((const struct sockaddr_un *)peer)->sun_path;

        if (la > 0 && pa[0] != '\0') /* a path: up to its NUL */
            la = strnlen(pa, la);
        if (lb > 0 && pb[0] != '\0')
            lb = strnlen(pb, lb);
        return la == lb && memcmp(pa, pb, la) == 0;
    }
    return 0;
}

int
aw_datagram_sendto(aw_datagram_transport *t, const void *data, size_t len,
                   const struct sockaddr *addr, socklen_t addrlen)
{
    aw_datagram *d;

    if (t == NULL || (data == NULL && len > 0) ||
        (addr != NULL && (addrlen == 0 || addrlen > sizeof(d->addr))))
        return -EINVAL;
    if (t->state != D_OPEN)
        return AW_ECLOSED;
    /* asyncio: a connected endpoint sends only to its peer. */
    if (t->connected ? addr != NULL && !same_addr(t, addr, addrlen)
                     : addr == NULL)
        return -EINVAL;
    if (t->connected)
        addr = NULL, addrlen = 0;
    if (t->qhead == NULL && !t->corked) {
        ssize_t r;

        do
            r = sendto(t->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT, addr,
                       addrlen);
        while (r < 0 && errno == EINTR);
        if (r >= 0)
            return 0;
        if (!would_block(errno)) {
            schedule_error(t, -errno);
            return 0;
        }
    }
    d = datagram_new(data, len, addr, addrlen);
    if (d == NULL)
        return -ENOMEM;
    if (t->qtail != NULL)
        t->qtail->next = d;
    else
        t->qhead = d;
    t->qtail = d;
    t->qbytes += len;
    if (!t->corked)
        after_send(t);
    return 0;
}

aw_future *
aw_datagram_send(aw_datagram_transport *t, const void *data, size_t len,
                 const struct sockaddr *addr, socklen_t addrlen)
{
    aw_future *f;
    int rc;

    if (t == NULL)
        return NULL;
    rc = aw_datagram_sendto(t, data, len, addr, addrlen);
    if (rc != 0)
        return aw__future_failed_new(t->loop, rc, NULL);
    if (!t->paused)
        return aw_future_resolved_int(t->loop, 0);
    f = aw_future_new(t->loop);
    if (f == NULL)
        return aw__future_nomem(t->loop);
    if (add_waiter(&t->dwait, &t->dwait_tail, f) != 0) {
        aw_future_unref(f);
        return aw__future_nomem(t->loop);
    }
    return f;
}

/* ---- receiving ------------------------------------------------------------- */

/* A datagram for the protocol, or for the awaitable form. */
static void
received(aw_datagram_transport *t, const void *data, size_t len,
         const struct sockaddr *addr, socklen_t alen)
{
    aw_datagram *d;
    aw_future *f;

    if (t->proto != NULL) {
        CALL(t, datagram_received, data, len, addr, alen, t->user);
        return;
    }
    d = datagram_new(data, len, addr, alen);
    if (d == NULL) { /* dropped, but said */
        received_error(t, -ENOMEM);
        return;
    }
    if ((f = next_waiter(&t->rwait, &t->rwait_tail)) != NULL) {
        aw_future_set_result(f, d, datagram_destroy);
        aw_future_unref(f);
        return;
    }
    if (t->rtail != NULL)
        t->rtail->next = d;
    else
        t->rhead = d;
    t->rtail = d;
    t->rcount++;
}

/* The receive slots, made at the first read. */
static int
ensure_rbuf(aw_datagram_transport *t)
{
    if (t->rbuf == NULL) {
        t->slot = t->family == AF_UNIX ? SLOT_UNIX : SLOT_IP;
#ifdef HAVE_MMSG
        t->nslots = RBUF_MAX / t->slot < BATCH ? RBUF_MAX / t->slot : BATCH;
#else
        t->nslots = 1;
#endif
        t->rbuf = aw__malloc(t->slot * t->nslots);
    }
    return t->rbuf != NULL ? 0 : -ENOMEM;
}

static void
one_received(aw_datagram_transport *t, const struct msghdr *mh, size_t len)
{
    if (mh->msg_flags & MSG_TRUNC)
        received_error(t, -EMSGSIZE);
    else
        received(t, mh->msg_iov[0].iov_base, len,
                 (const struct sockaddr *)mh->msg_name, mh->msg_namelen);
}

#ifdef HAVE_MMSG
/* Read up to max datagrams with one call and deliver them: how many
 * came, or -errno. */
static int
read_batch(aw_datagram_transport *t, unsigned max)
{
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage names[BATCH];
    unsigned i;
    int r;

    if (max > t->nslots)
        max = t->nslots;
    for (i = 0; i < max; i++) {
        iov[i].iov_base = t->rbuf + i * t->slot;
        iov[i].iov_len = t->slot;
        memset(&mm[i], 0, sizeof(mm[i]));
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        mm[i].msg_hdr.msg_name = &names[i];
        mm[i].msg_hdr.msg_namelen = sizeof(names[i]);
    }
    do
        r = recvmmsg(t->fd, mm, max, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    for (i = 0; i < (unsigned)r && t->state == D_OPEN; i++)
        one_received(t, &mm[i].msg_hdr, mm[i].msg_len);
    return r;
}
#else
static int
read_batch(aw_datagram_transport *t, unsigned max)
{
    struct sockaddr_storage name;
    struct iovec iov = {t->rbuf, t->slot};
    struct msghdr mh;
    ssize_t r;

    (void)max;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_name = &name;
    mh.msg_namelen = sizeof(name);
    do
        r = recvmsg(t->fd, &mh, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    one_received(t, &mh, (size_t)r);
    return 1;
}
#endif

static void
readable_cb(evutil_socket_t fd, short what, void *arg)
{
    aw_datagram_transport *t = arg;
    unsigned max, got, n;
    int r;

    (void)fd;
    (void)what;
    if (t->state != D_OPEN)
        return;
    aw_datagram_ref(t);
    if (ensure_rbuf(t) != 0) {
        lose(t, -ENOMEM);
        goto out;
    }
    /* Replies sent from datagram_received go out together at the end of
     * the wake-up, with one sendmmsg() (an echo's sends cost what its
     * reads cost), still before the loop goes on. */
    t->corked = t->proto != NULL;
    for (got = 0; got < READ_BUDGET && t->state == D_OPEN; got += n) {
        max = t->nslots;
        if (t->proto == NULL) {
            if (t->rcount >= RECV_QUEUE_MAX)
                break;
            if (max > RECV_QUEUE_MAX - t->rcount)
                max = (unsigned)(RECV_QUEUE_MAX - t->rcount);
        }
        r = read_batch(t, max);
        if (r == -EAGAIN || r == -EWOULDBLOCK)
            break;
        n = r < 0 ? 1 : (unsigned)r;
        if (r < 0) /* an ICMP error, ...: the endpoint goes on */
            received_error(t, r);
        else if (t->nslots > 1 && n < max)
            break; /* nothing more waits */
    }
    t->corked = 0;
    if (t->qhead != NULL && t->state != D_LOST) {
        send_queued(t);
        if (t->state != D_LOST)
            after_send(t);
    }
    update_reading(t);
out:
    aw_datagram_unref(t);
}

aw_future *
aw_datagram_recv(aw_datagram_transport *t)
{
    aw_datagram *d;
    aw_future *f;

    if (t == NULL)
        return NULL;
    if (t->proto != NULL)
        return aw__future_failed_new(t->loop, -EINVAL,
                                     aw__format("aw_datagram_recv: the "
                                                "endpoint has a protocol"));
    if (t->state != D_OPEN && t->rhead == NULL)
        return aw__future_failed_new(t->loop, AW_ECLOSED, NULL);
    if ((d = t->rhead) != NULL) {
        t->rhead = d->next;
        if (t->rhead == NULL)
            t->rtail = NULL;
        t->rcount--;
        update_reading(t);
        if (d->err != 0) {
            int err = d->err;

            aw__free(d);
            return aw__future_failed_new(t->loop, err, NULL);
        }
        d->next = NULL;
        return aw_future_resolved(t->loop, d, datagram_destroy);
    }
    f = aw_future_new(t->loop);
    if (f == NULL)
        return aw__future_nomem(t->loop);
    if (add_waiter(&t->rwait, &t->rwait_tail, f) != 0) {
        aw_future_unref(f);
        return aw__future_nomem(t->loop);
    }
    return f;
}

/* ---- closing and the rest ---------------------------------------------------- */

int
aw_datagram_close(aw_datagram_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->state == D_OPENING) {
        lose(t, 0);
        return 0;
    }
    if (t->state != D_OPEN)
        return 0;
    t->state = D_CLOSING;
    update_reading(t);
    free_list(&t->rhead, &t->rtail);
    t->rcount = 0;
    release_waiters(&t->rwait, &t->rwait_tail, AW_ECLOSED);
    if (t->qhead == NULL)
        lose(t, 0);
    return 0;
}

int
aw_datagram_abort(aw_datagram_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    lose(t, 0);
    return 0;
}

int
aw_datagram_is_closing(const aw_datagram_transport *t)
{
    return t != NULL && t->state >= D_CLOSING;
}

size_t
aw_datagram_write_buffer_size(const aw_datagram_transport *t)
{
    return t != NULL ? t->qbytes : 0;
}

int
aw_datagram_set_write_buffer_limits(aw_datagram_transport *t, size_t high,
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
    if (t->state == D_OPEN || t->state == D_CLOSING)
        after_send(t);
    return 0;
}

static int
addr_of(const aw_datagram_transport *t, struct sockaddr *addr,
        socklen_t *len, int peer)
{
    int r;

    if (t == NULL || addr == NULL || len == NULL)
        return -EINVAL;
    if (t->fd < 0 || t->state == D_LOST)
        return AW_ECLOSED;
    r = peer ? getpeername(t->fd, addr, len) : getsockname(t->fd, addr, len);
    return r == 0 ? 0 : -errno;
}

int
aw_datagram_sockname(const aw_datagram_transport *t, struct sockaddr *addr,
                     socklen_t *len)
{
    return addr_of(t, addr, len, 0);
}

int
aw_datagram_peername(const aw_datagram_transport *t, struct sockaddr *addr,
                     socklen_t *len)
{
    return addr_of(t, addr, len, 1);
}

static int
usable(const aw_datagram_transport *t)
{
    if (t == NULL)
        return -EINVAL;
    if (t->state != D_OPEN || t->fd < 0)
        return AW_ECLOSED;
    return 0;
}

static int
membership(aw_datagram_transport *t, const char *group, const char *iface,
           int join)
{
    int rc = usable(t);

    if (rc != 0)
        return rc;
    if (group == NULL)
        return -EINVAL;
    if (t->family == AF_INET) {
        struct ip_mreq m;

        memset(&m, 0, sizeof(m));
        if (inet_pton(AF_INET, group, &m.imr_multiaddr) != 1 ||
            !IN_MULTICAST(ntohl(m.imr_multiaddr.s_addr)))
            return -EINVAL;
        if (iface == NULL)
            m.imr_interface.s_addr = htonl(INADDR_ANY);
        else if (inet_pton(AF_INET, iface, &m.imr_interface) != 1)
            return -EINVAL;
        rc = setsockopt(t->fd, IPPROTO_IP,
                        join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &m,
                        sizeof(m));
    } else if (t->family == AF_INET6) {
        struct ipv6_mreq m;

        memset(&m, 0, sizeof(m));
        if (inet_pton(AF_INET6, group, &m.ipv6mr_multiaddr) != 1 ||
            !IN6_IS_ADDR_MULTICAST(&m.ipv6mr_multiaddr))
            return -EINVAL;
        if (iface != NULL && (m.ipv6mr_interface = if_nametoindex(iface)) == 0)
            return -EINVAL;
        rc = setsockopt(t->fd, IPPROTO_IPV6,
                        join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &m,
                        sizeof(m));
    } else {
        return -EINVAL;
    }
    return rc == 0 ? 0 : -errno;
}

int
aw_datagram_join_group(aw_datagram_transport *t, const char *group,
                       const char *iface)
{
    return membership(t, group, iface, 1);
}

int
aw_datagram_leave_group(aw_datagram_transport *t, const char *group,
                        const char *iface)
{
    return membership(t, group, iface, 0);
}

int
aw_datagram_set_broadcast(aw_datagram_transport *t, int enable)
{
    int rc = usable(t), on = enable != 0;

    if (rc != 0)
        return rc;
    if (t->family == AF_UNIX)
        return -EOPNOTSUPP;
    if (setsockopt(t->fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof(on)) != 0)
        return -errno;
    return 0;
}

int
aw_datagram_fd(const aw_datagram_transport *t)
{
    return t != NULL && t->state != D_LOST ? t->fd : -1;
}

void
aw_datagram_set_user(aw_datagram_transport *t, void *user)
{
    if (t != NULL)
        t->user = user;
}

void *
aw_datagram_user(const aw_datagram_transport *t)
{
    return t != NULL ? t->user : NULL;
}

aw_loop *
aw_datagram_loop(const aw_datagram_transport *t)
{
    return t != NULL ? t->loop : NULL;
}

/* ---- opening ------------------------------------------------------------------ */

/* The opening future settled: if it was cancelled before the endpoint
 * opened, give up. */
static int
opening_watch(aw_future *f, void *arg)
{
    aw_datagram_transport *t = arg;

    if (aw_future_cancelled(f) && t->state == D_OPENING) {
        aw_future_unref(t->opening);
        t->opening = NULL;
        lose(t, AW_ECANCELLED);
    }
    aw_datagram_unref(t);
    return 0;
}

static void
open_failed(aw_datagram_transport *t, int error, char *msg)
{
    aw_future *f = t->opening;

    t->opening = NULL;
    if (f != NULL && f->state == AW_FUTURE_PENDING)
        aw__future_set_failed(f, error, msg);
    else
        aw__free(msg);
    aw_future_unref(f);
    lose(t, error); /* connection_made never ran: nothing is told */
}

/* From the loop: connection_made, then the future (asyncio's order). */
static int
start(aw_loop *loop, void *arg)
{
    aw_datagram_transport *t = arg;
    aw_future *f = t->opening;

    (void)loop;
    t->opening = NULL;
    if (t->state == D_OPENING && f != NULL &&
        f->state == AW_FUTURE_PENDING) {
        t->state = D_OPEN;
        t->borrowed = 0;
        update_reading(t);
        t->made = 1;
        CALL(t, connection_made, t->user);
        aw_future_set_result(f, aw_datagram_ref(t), unref_destroy);
    } else if (t->state == D_OPENING) {
        lose(t, AW_ECANCELLED);
    }
    aw_future_unref(f);
    aw_datagram_unref(t); /* start's */
    return 0;
}

/* The socket is the transport's: its events, then start from the loop.
 * 0 or -errno (the socket is then not the transport's). */
static int
attach(aw_datagram_transport *t, int fd)
{
    struct event_base *base = aw_loop_get_base(t->loop);
    int rc = aw__loop_fd_watchable(t->loop, fd);

    if (rc != 0)
        return rc;
    t->rev = event_new(base, fd, EV_READ | EV_PERSIST, readable_cb, t);
    t->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, writable_cb, t);
    if (t->rev == NULL || t->wev == NULL)
        goto nomem;
    aw_datagram_ref(t); /* start's */
    if (aw_loop_call_soon(t->loop, start, t, NULL) != 0) {
        aw_datagram_unref(t);
        goto nomem;
    }
    t->fd = fd;
    return 0;
nomem:
    if (t->rev != NULL)
        event_free(t->rev);
    if (t->wev != NULL)
        event_free(t->wev);
    t->rev = t->wev = NULL;
    return -ENOMEM;
}

/* A transport being opened, and the future for it. */
static aw_future *
open_start(aw_loop *loop, const aw_datagram_protocol *proto, void *arg,
           aw_datagram_transport **tp)
{
    aw_datagram_transport *t;
    aw_future *f;

    *tp = NULL;
    f = aw_future_new(loop);
    if (f == NULL)
        return aw__future_nomem(loop);
    t = transport_new(loop, proto, arg);
    if (t == NULL || aw__future_attach(f, opening_watch, t) != 0) {
        if (t != NULL)
            transport_free(t);
        aw_future_unref(f);
        return aw__future_nomem(loop);
    }
    aw_datagram_ref(t); /* for opening_watch */
    t->opening = aw_future_ref(f);
    *tp = t;
    return f;
}

static int
setopt(int fd, int level, int name)
{
    int one = 1;

    return setsockopt(fd, level, name, &one, sizeof(one)) == 0 ? 0 : -errno;
}

/* A socket for family, with the flags' options, bound to local and
 * connected to remote (either may be NULL): the fd or -errno. */
static int
open_socket(aw_datagram_transport *t, int family, const struct sockaddr *la,
            socklen_t llen, const struct sockaddr *ra, socklen_t rlen)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (t->flags & AW_DATAGRAM_REUSE_PORT)
        rc = setopt(fd, SOL_SOCKET, SO_REUSEPORT);
    if (rc == 0 && (t->flags & AW_DATAGRAM_BROADCAST))
        rc = setopt(fd, SOL_SOCKET, SO_BROADCAST);
    if (rc == 0 && (t->flags & AW_DATAGRAM_V6ONLY) && family == AF_INET6)
        rc = setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY);
    if (rc == 0 && la != NULL && bind(fd, la, llen) != 0)
        rc = -errno;
    if (rc == 0 && ra != NULL && connect(fd, ra, rlen) != 0)
        rc = -errno;
    if (rc != 0) {
        close(fd);
        return rc;
    }
    if (ra != NULL) {
        t->connected = 1;
        memcpy(&t->peer, ra, rlen);
        t->peerlen = rlen;
    }
    t->family = family;
    return fd;
}

/* A socket for a pair of addresses (either may be NULL), attached.  0
 * or -errno. */
static int
try_pair(aw_datagram_transport *t, const struct evutil_addrinfo *l,
         const struct evutil_addrinfo *r)
{
    int fd, rc;

    fd = open_socket(t, l != NULL ? l->ai_family : r->ai_family,
                     l != NULL ? l->ai_addr : NULL,
                     l != NULL ? (socklen_t)l->ai_addrlen : 0,
                     r != NULL ? r->ai_addr : NULL,
                     r != NULL ? (socklen_t)r->ai_addrlen : 0);
    if (fd < 0)
        return fd;
    rc = attach(t, fd);
    if (rc != 0) {
        close(fd);
        t->connected = 0;
    }
    return rc;
}

/* The names resolved: the first pair of addresses of one family that
 * opens (asyncio tries them in turn). */
static void
open_resolved(aw_datagram_transport *t)
{
    struct evutil_addrinfo *l, *r;
    int rc = -EINVAL;

    if (t->local == NULL) {
        for (r = t->remote; r != NULL && rc != 0; r = r->ai_next)
            rc = try_pair(t, NULL, r);
    } else if (t->remote == NULL) {
        for (l = t->local; l != NULL && rc != 0; l = l->ai_next)
            rc = try_pair(t, l, NULL);
    } else {
        for (l = t->local; l != NULL && rc != 0; l = l->ai_next)
            for (r = t->remote; r != NULL && rc != 0; r = r->ai_next)
                if (l->ai_family == r->ai_family)
                    rc = try_pair(t, l, r);
    }
    if (t->local != NULL)
        evutil_freeaddrinfo(t->local);
    if (t->remote != NULL)
        evutil_freeaddrinfo(t->remote);
    t->local = t->remote = NULL;
    if (rc != 0)
        open_failed(t, rc,
                    aw__format("cannot open the datagram endpoint%s",
                               rc == -EINVAL ? ": no address of one family"
                                             : ""));
}

static void resolve(aw_datagram_transport *t, const char *host, int port);

/* The loop's resolver answered (or the request was cancelled): the local
 * name first, then the remote one. */
static void
resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    aw_datagram_transport *t = arg;

    t->dnsreq = NULL;
    t->resolving = 0;
    if (t->state != D_OPENING) {
        if (res != NULL) /* abandoned meanwhile */
            evutil_freeaddrinfo(res);
    } else if (result != 0) {
        open_failed(t, aw__gai_error(result, errno),
                    aw__format("%s", evutil_gai_strerror(result)));
    } else if (!t->step_remote) {
        t->local = res;
        if (t->rhost != NULL) {
            t->step_remote = 1;
            resolve(t, t->rhost, t->rport);
        } else {
            open_resolved(t);
        }
    } else {
        t->remote = res;
        open_resolved(t);
    }
    aw_datagram_unref(t); /* the request's */
}

/* Look up host:port; resolved() follows, maybe inside this call (the
 * resolver answers literals at once). */
static void
resolve(aw_datagram_transport *t, const char *host, int port)
{
    struct evutil_addrinfo hints;
    struct aw__gai *req;
    char portstr[16];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    snprintf(portstr, sizeof(portstr), "%d", port);
    aw_datagram_ref(t); /* the request's */
    t->resolving = 1;
    req = aw__getaddrinfo(t->loop, host, portstr, &hints, resolved, t);
    if (t->resolving)
        t->dnsreq = req;
}

#define ALL_FLAGS                                                            \
    (AW_DATAGRAM_REUSE_PORT | AW_DATAGRAM_BROADCAST | AW_DATAGRAM_V6ONLY)

aw_future *
aw_create_datagram_endpoint(aw_loop *loop, const char *local_host,
                            int local_port, const char *remote_host,
                            int remote_port,
                            const aw_datagram_protocol *proto, void *arg,
                            int flags)
{
    aw_datagram_transport *t;
    aw_future *f;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if ((local_host == NULL && remote_host == NULL) || !protocol_ok(proto) ||
        (flags & ~ALL_FLAGS) != 0 ||
        (local_host != NULL && (local_port < 0 || local_port > 65535)) ||
        (remote_host != NULL && (remote_port <= 0 || remote_port > 65535)))
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_datagram_endpoint"
                                                ": bad address, port, "
                                                "protocol or flags"));
    f = open_start(loop, proto, arg, &t);
    if (t == NULL)
        return f;
    t->flags = flags;
    if (remote_host != NULL &&
        (t->rhost = aw__strdup(remote_host)) == NULL) {
        open_failed(t, -ENOMEM, NULL);
        return f;
    }
    t->rport = remote_port;
    if (local_host != NULL) {
        resolve(t, local_host, local_port);
    } else {
        t->step_remote = 1;
        resolve(t, t->rhost, t->rport);
    }
    return f;
}

static int
unix_addr(struct sockaddr_un *sun, const char *path)
{
    memset(sun, 0, sizeof(*sun));
    if (strlen(path) >= sizeof(sun->sun_path))
        return -EINVAL;
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, path);
    return 0;
}

aw_future *
aw_create_unix_datagram_endpoint(aw_loop *loop, const char *local_path,
                                 const char *remote_path,
                                 const aw_datagram_protocol *proto,
                                 void *arg)
{
    struct sockaddr_un lsun, rsun;
    struct stat st;
    aw_datagram_transport *t;
    aw_future *f;
    int fd, rc;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if ((local_path == NULL && remote_path == NULL) || !protocol_ok(proto) ||
        (local_path != NULL && unix_addr(&lsun, local_path) != 0) ||
        (remote_path != NULL && unix_addr(&rsun, remote_path) != 0))
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_unix_datagram_"
                                                "endpoint: bad path or "
                                                "protocol"));
    f = open_start(loop, proto, arg, &t);
    if (t == NULL)
        return f;
    /* A socket file left by an earlier run is replaced (asyncio). */
    if (local_path != NULL && stat(local_path, &st) == 0 &&
        S_ISSOCK(st.st_mode))
        unlink(local_path);
    fd = open_socket(t, AF_UNIX, local_path ? (struct sockaddr *)&lsun : NULL,
                     sizeof(lsun),
                     remote_path ? (struct sockaddr *)&rsun : NULL,
                     sizeof(rsun));
    rc = fd < 0 ? fd : attach(t, fd);
    if (fd >= 0 && rc != 0)
        close(fd);
    if (rc != 0)
        open_failed(t, rc,
                    aw__format("cannot open the datagram endpoint on %s",
                               local_path ? local_path : remote_path));
    return f;
}

aw_future *
aw_create_datagram_endpoint_sock(aw_loop *loop, int fd,
                                 const aw_datagram_protocol *proto,
                                 void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(int);
    aw_datagram_transport *t;
    aw_future *f;
    int type = 0, rc, fl;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (fd < 0 || !protocol_ok(proto))
        return aw__future_failed_new(loop, -EINVAL, NULL);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return aw__future_failed_new(loop, -errno, NULL);
    if (type != SOCK_DGRAM)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_create_datagram_endpoint"
                                                "_sock: not a datagram "
                                                "socket"));
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return aw__future_failed_new(loop, -errno, NULL);
    f = open_start(loop, proto, arg, &t);
    if (t == NULL)
        return f;
    t->family = ss.ss_family;
    t->borrowed = 1; /* the caller's until the future succeeds */
    len = sizeof(t->peer);
    if (getpeername(fd, (struct sockaddr *)&t->peer, &len) == 0) {
        t->connected = 1;
        t->peerlen = len;
    }
    fl = fcntl(fd, F_GETFL);
    rc = fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ? -errno : 0;
    if (rc == 0)
        rc = attach(t, fd);
    if (rc != 0) {
        t->fd = -1;
        open_failed(t, rc, NULL);
    }
    return f;
}

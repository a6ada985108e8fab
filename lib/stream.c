/* SPDX-License-Identifier: MIT */
/* stream.c: streams (asyncio's StreamReader/StreamWriter) on transports,
 * servers that hand each client a stream, getaddrinfo as a future.
 *
 * A stream is the user pointer of its transport.  It holds one reference
 * for the transport (the "role", given back when the connection is lost)
 * and one for each user; when the users are gone the connection is
 * aborted, and the stream freed once the loss has been delivered.  Read
 * data waits in an evbuffer; one read request at a time is served from it
 * as data arrives. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/util.h>

#include "await/executor.h"
#include "await/stream.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "tls-internal.h"
#include "transport-internal.h"

/* Bytes read from a stream that are one whole buffer chain keep it
 * (moved, not copied); others hold their data inline. */
struct aw_bytes {
    size_t len;
    const char *data;
    struct evbuffer *buf; /* NULL: inline */
    int terminated;       /* data[len] is a NUL */
    char inline_data[];
};

aw_bytes *
aw_bytes_new(const void *data, size_t len)
{
    aw_bytes *b;

    if ((data == NULL && len > 0) || len > SIZE_MAX - sizeof(*b) - 1)
        return NULL; /* nothing to copy from; or too large to hold */
    b = aw__malloc(sizeof(*b) + len + 1);
    if (b == NULL)
        return NULL;
    b->len = len;
    b->buf = NULL;
    if (len > 0)
        memcpy(b->inline_data, data, len);
    b->inline_data[len] = '\0';
    b->data = b->inline_data;
    b->terminated = 1;
    return b;
}

/* Up to this size bytes are always copied inline: a copy costs less than
 * moving a chain. */
#define BYTES_INLINE_MAX 4096

/* The first n bytes of buf, taken out into a bytes object: their chain
 * moved when they are all of it and large, else copied inline: one exact
 * allocation, where libevent would copy a part of a chain into a new one
 * or pull several up into a chain of the next power of two. */
static aw_bytes *
bytes_from(struct evbuffer *buf, size_t n)
{
    aw_bytes *b;

    if (n <= BYTES_INLINE_MAX || evbuffer_get_contiguous_space(buf) != n) {
        struct evbuffer_iovec v;

        b = aw__malloc(sizeof(*b) + n + 1);
        if (b == NULL)
            return NULL;
        if (n > 0 && evbuffer_peek(buf, -1, NULL, &v, 1) >= 1 &&
            v.iov_len >= n) { /* the usual case, without the generic walk */
            memcpy(b->inline_data, v.iov_base, n);
            evbuffer_drain(buf, n);
        } else {
            evbuffer_remove(buf, b->inline_data, n);
        }
        b->inline_data[n] = '\0';
        b->len = n;
        b->buf = NULL;
        b->data = b->inline_data;
        b->terminated = 1;
        return b;
    }
    b = aw__malloc(sizeof(*b));
    if (b == NULL)
        return NULL;
    b->len = n;
    b->terminated = 0;
    b->buf = evbuffer_new();
    b->data = "";
    if (b->buf == NULL || evbuffer_remove_buffer(buf, b->buf, n) != (int)n ||
        (n > 0 &&
         (b->data = (const char *)evbuffer_pullup(b->buf, -1)) == NULL)) {
        if (b->buf != NULL) {
            evbuffer_prepend_buffer(buf, b->buf); /* give it back */
            evbuffer_free(b->buf);
        }
        aw__free(b);
        return NULL;
    }
    return b;
}

const char *
aw_bytes_cstr(aw_bytes *b)
{
    if (b == NULL)
        return NULL;
    if (!b->terminated) {
        const char *p;

        if (evbuffer_add(b->buf, "", 1) != 0 ||
            (p = (const char *)evbuffer_pullup(b->buf, -1)) == NULL)
            return NULL;
        b->data = p;
        b->terminated = 1;
    }
    return b->data;
}

size_t
aw_bytes_len(const aw_bytes *b)
{
    return b != NULL ? b->len : 0;
}

const char *
aw_bytes_data(const aw_bytes *b)
{
    return b != NULL ? b->data : NULL;
}

void
aw_bytes_free(aw_bytes *b)
{
    if (b == NULL)
        return;
    if (b->buf != NULL)
        evbuffer_free(b->buf);
    aw__free(b);
}

static void
bytes_destroy(void *p)
{
    aw_bytes_free(p);
}

/* ---- the stream ------------------------------------------------------------------ */

enum rkind { R_READ, R_EXACT, R_UNTIL, R_LINE };

struct aw_stream {
    aw_loop *loop;
    aw_transport *t; /* NULL until connected */
    struct evbuffer *buf;
    size_t limit;
    unsigned refs;
    int role; /* the transport's reference is held */
    int eof, lost, closed, paused_writing, reading_paused;
    int error; /* the connection's, once lost */
    aw_future *reader;
    aw_future *handed; /* the last read settled with data, until the next */
    int rkind;
    size_t rn;
    const char *sep; /* the caller's while a read starts, then the stream's:
                        newline, sepbuf or sepheap */
    size_t seplen;
    size_t scanned; /* the waiting read's separator cannot start before */
    char sepbuf[16];
    char *sepheap; /* a longer separator kept, sepheap_len bytes */
    size_t sepheap_len;
    aw_future *drained; /* the settled future every drain not paused gets */
    aw_future **drains;
    size_t ndrains, cap;
    aw_future *closed_fut;
    aw_bytes *partial;
    aw_future *opening; /* the create_connection future while it runs */
    aw_future *opened;  /* the open_connection future */
    aw_future *upgrade; /* aw_stream_start_tls's future, while it runs */
    aw_future *upgrade_tf; /* the TLS layer's, while it runs */
};

static aw_stream *
stream_new(aw_loop *loop)
{
    aw_stream *s = aw__calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->buf = evbuffer_new();
    if (s->buf == NULL) {
        aw__free(s);
        return NULL;
    }
    s->loop = loop;
    s->limit = AW_STREAM_DEFAULT_LIMIT;
    s->refs = 1;
    aw__loop_track(loop, 1);
    return s;
}

static void
stream_free(aw_stream *s)
{
    aw_future_unref(s->reader);
    aw_future_unref(s->handed);
    aw__free(s->sepheap);
    aw_future_unref(s->drained);
    aw__free(s->drains);
    aw_future_unref(s->closed_fut);
    aw_bytes_free(s->partial);
    aw_transport_unref(s->t);
    evbuffer_free(s->buf);
    aw__loop_track(s->loop, -1);
    aw__free(s);
}

aw_stream *
aw_stream_ref(aw_stream *s)
{
    if (s != NULL)
        s->refs++;
    return s;
}

void
aw_stream_unref(aw_stream *s)
{
    if (s == NULL)
        return;
    if (--s->refs == 0) {
        stream_free(s);
        return;
    }
    if (s->refs == 1 && s->role && s->t != NULL && !s->closed)
        aw_transport_abort(s->t); /* nobody uses it: the loss frees it */
}

static void
unref_cb(void *p)
{
    aw_stream_unref(p);
}

/* The error a read or drain fails with once the connection is gone. */
static int
gone_error(const aw_stream *s, int otherwise)
{
    if (s->closed)
        return AW_ECLOSED;
    return s->error != 0 ? s->error : otherwise;
}

/* A read settled with data that nobody can read any more: its holder
 * released it without looking (a task cancelled after the data was handed
 * over, before it resumed). */
static int
abandoned(const aw_future *f)
{
    return f != NULL && f->refs == 1 && f->state == AW_FUTURE_DONE &&
           !(f->flags & (F_RETRIEVED | F_TAKEN));
}

/* Data is never lost in a hand-over: what the last read was given and
 * nobody read goes back to the front of the buffer (asyncio leaves it
 * there until the reader resumes).  Called before the next read. */
static void
reclaim(aw_stream *s)
{
    aw_future *f = s->handed;

    s->handed = NULL;
    if (abandoned(f)) {
        aw_bytes *b = f->v.ptr;

        if (b->buf != NULL && evbuffer_get_length(b->buf) == b->len)
            evbuffer_prepend_buffer(s->buf, b->buf);
        else if (evbuffer_prepend(s->buf, b->data, b->len) != 0)
            aw__loop_report(s->loop, -ENOMEM, NULL, NULL,
                            "stream: out of memory, %zu bytes read and "
                            "abandoned are lost", b->len);
    }
    aw_future_unref(f);
}

static void
finish_read(aw_stream *s, size_t n)
{
    aw_bytes *b = bytes_from(s->buf, n);
    aw_future *r = s->reader;

    s->reader = NULL;
    if (b == NULL) {
        aw__future_set_failed(r, -ENOMEM, NULL);
        aw_future_unref(r);
        return;
    }
    aw_future_set_result(r, b, bytes_destroy);
    if (n > 0 && s->handed == NULL)
        s->handed = r; /* kept until the next read: see reclaim() */
    else
        aw_future_unref(r);
}

static void
fail_read(aw_stream *s, int code, const char *fmt)
{
    aw_future *r = s->reader;

    s->reader = NULL;
    aw_future_set_error(r, code, "%s", fmt);
    aw_future_unref(r);
}

static void
incomplete(aw_stream *s, size_t want)
{
    size_t have = evbuffer_get_length(s->buf);
    char msg[96];

    aw_bytes_free(s->partial);
    s->partial = bytes_from(s->buf, have);
    if (want > 0)
        snprintf(msg, sizeof(msg), "%zu bytes read on %zu expected", have,
                 want);
    else
        snprintf(msg, sizeof(msg), "end of file after %zu bytes, no "
                 "separator", have);
    fail_read(s, AW_EINCOMPLETE, msg);
}

/* A fast peer cannot fill memory: reading from the socket pauses past
 * twice the limit, and resumes at the limit or as soon as a read waits
 * (a waiting read always needs more: readexactly(n) with n above the
 * limit raises the threshold for itself, asyncio's has no limit). */
static void
flow(aw_stream *s)
{
    size_t len = evbuffer_get_length(s->buf);
    int waiting = s->reader != NULL && s->reader->state == AW_FUTURE_PENDING;

    if (s->t == NULL || s->lost || s->upgrade != NULL)
        return;
    if (!s->reading_paused && !waiting && len > 2 * s->limit) {
        s->reading_paused = 1;
        aw_transport_pause_reading(s->t);
    } else if (s->reading_paused && (waiting || len <= s->limit)) {
        s->reading_paused = 0;
        aw_transport_resume_reading(s->t);
    }
}

/* Where the waiting read's separator starts in the buffer (len bytes),
 * or -1.  A line is almost always in the first chain: memchr (memmem)
 * there first.  Else the search starts where the last one left off, so
 * that a line arriving in many pieces is not scanned again from its
 * start each time. */
static ev_ssize_t
find_sep(aw_stream *s, size_t len)
{
    struct evbuffer_iovec v;
    struct evbuffer_ptr from, at;
    const char *p;

    if (len < s->seplen)
        return -1;
    if (s->scanned == 0 && evbuffer_peek(s->buf, -1, NULL, &v, 1) >= 1) {
        p = s->seplen == 1
                ? memchr(v.iov_base, *(const char *)s->sep, v.iov_len)
                : memmem(v.iov_base, v.iov_len, s->sep, s->seplen);
        if (p != NULL)
            return p - (const char *)v.iov_base;
        if (v.iov_len == len) {
            s->scanned = len - (s->seplen - 1);
            return -1;
        }
        if (v.iov_len >= s->seplen)
            s->scanned = v.iov_len - (s->seplen - 1);
    }
    if (evbuffer_ptr_set(s->buf, &from, s->scanned, EVBUFFER_PTR_SET) != 0)
        return -1;
    at = evbuffer_search(s->buf, s->sep, s->seplen, &from);
    if (at.pos < 0)
        s->scanned = len - (s->seplen - 1);
    return at.pos;
}

/* Serve the waiting read from the buffer, if it can be. */
static void
try_read(aw_stream *s)
{
    size_t len;

    if (s->reader != NULL && s->reader->state != AW_FUTURE_PENDING) {
        aw_future_unref(s->reader); /* cancelled by its holder */
        s->reader = NULL;
    }
    if (s->reader == NULL) {
        flow(s);
        return;
    }
    len = evbuffer_get_length(s->buf);
    if (s->closed) {
        fail_read(s, AW_ECLOSED, "stream closed");
    } else if (s->rkind == R_READ) {
        if (len > 0 || s->rn == 0)
            finish_read(s, len < s->rn ? len : s->rn);
        else if (s->eof && s->error != 0)
            fail_read(s, s->error, "connection lost");
        else if (s->eof)
            finish_read(s, 0);
    } else if (s->rkind == R_EXACT) {
        if (len >= s->rn)
            finish_read(s, s->rn);
        else if (s->eof && s->error != 0)
            fail_read(s, s->error, "connection lost");
        else if (s->eof)
            incomplete(s, s->rn);
    } else {
        ev_ssize_t pos = find_sep(s, len);

        /* The limit is on the data before the separator (asyncio).  A
         * readline past it drops the overlong line, through its
         * separator, or all there is when none came yet (asyncio's
         * readline); readuntil leaves the data buffered. */
        if (pos >= 0) {
            if ((size_t)pos > s->limit) {
                if (s->rkind == R_LINE)
                    evbuffer_drain(s->buf, (size_t)pos + s->seplen);
                fail_read(s, AW_ELIMIT, "separator found past the limit");
            } else {
                finish_read(s, (size_t)pos + s->seplen);
            }
        } else if (len + 1 > s->limit + s->seplen) {
            /* Even a separator starting at the last seplen - 1 bytes
             * would come after more than limit bytes. */
            if (s->rkind == R_LINE)
                evbuffer_drain(s->buf, len);
            fail_read(s, AW_ELIMIT, "separator not found within the limit");
        } else if (s->eof && s->error != 0) {
            fail_read(s, s->error, "connection lost");
        } else if (s->eof && s->rkind == R_LINE) {
            finish_read(s, len); /* the last line, maybe empty (asyncio) */
        } else if (s->eof) {
            incomplete(s, 0);
        }
    }
    flow(s);
}

static const char newline[] = "\n";

/* A read that waits keeps its separator: s->sep becomes the stream's own
 * (the caller's may be gone by the time data arrives).  No copy for a
 * readline, none for a separator the stream already holds, and no
 * allocation for one of up to 16 bytes.  0 or -ENOMEM. */
static int
keep_sep(aw_stream *s)
{
    char *p;

    if (s->sep == newline || s->sep == s->sepbuf || s->sep == s->sepheap)
        return 0;
    if (s->seplen <= sizeof(s->sepbuf)) {
        memmove(s->sepbuf, s->sep, s->seplen);
        s->sep = s->sepbuf;
        return 0;
    }
    if (s->sepheap == NULL || s->sepheap_len != s->seplen ||
        memcmp(s->sepheap, s->sep, s->seplen) != 0) {
        p = aw__malloc(s->seplen);
        if (p == NULL)
            return -ENOMEM;
        memcpy(p, s->sep, s->seplen);
        aw__free(s->sepheap);
        s->sepheap = p;
        s->sepheap_len = s->seplen;
    }
    s->sep = s->sepheap;
    return 0;
}

static aw_future *
start_read(aw_stream *s, int kind, size_t n, const void *sep, size_t seplen)
{
    aw_future *f;

    if (s == NULL)
        return NULL;
    if (s->reader != NULL && s->reader->state != AW_FUTURE_PENDING) {
        aw_future_unref(s->reader);
        s->reader = NULL;
    }
    if (s->reader != NULL)
        return aw__future_failed_new(s->loop, AW_EBUSY,
                                     aw__format("another read is waiting"));
    reclaim(s);
    f = aw_future_new(s->loop); /* from the loop's pools */
    if (f == NULL)
        return aw__future_nomem(s->loop);
    if (kind == R_UNTIL || kind == R_LINE) {
        s->sep = sep; /* searched in place while the read is served now */
        s->seplen = seplen;
    }
    s->reader = aw_future_ref(f);
    s->rkind = kind;
    s->rn = n;
    s->scanned = 0;
    try_read(s);
    if ((kind == R_UNTIL || kind == R_LINE) && s->reader == f &&
        keep_sep(s) != 0) {
        s->sep = NULL;
        fail_read(s, -ENOMEM, "out of memory");
    }
    return f;
}

aw_future *
aw_stream_read(aw_stream *s, size_t n)
{
    return start_read(s, R_READ, n, NULL, 0);
}

aw_future *
aw_stream_readexactly(aw_stream *s, size_t n)
{
    return start_read(s, R_EXACT, n, NULL, 0);
}

aw_future *
aw_stream_readuntil(aw_stream *s, const void *sep, size_t seplen)
{
    if (s != NULL && (sep == NULL || seplen == 0))
        return aw__future_failed_new(s->loop, -EINVAL,
                                     aw__format("empty separator"));
    return start_read(s, R_UNTIL, 0, sep, seplen);
}

aw_future *
aw_stream_readline(aw_stream *s)
{
    return start_read(s, R_LINE, 0, newline, 1);
}

aw_bytes *
aw_stream_partial(aw_stream *s)
{
    aw_bytes *b;

    if (s == NULL)
        return NULL;
    b = s->partial;
    s->partial = NULL;
    return b;
}

int
aw_stream_at_eof(const aw_stream *s)
{
    return s != NULL && s->eof && evbuffer_get_length(s->buf) == 0 &&
           !abandoned(s->handed);
}

size_t
aw_stream_buffered(const aw_stream *s)
{
    if (s == NULL)
        return 0;
    return evbuffer_get_length(s->buf) +
           (abandoned(s->handed) ? aw_bytes_len(s->handed->v.ptr) : 0);
}

ssize_t
aw_stream_peek(aw_stream *s, void *buf, size_t n)
{
    if (s == NULL || (buf == NULL && n > 0))
        return -EINVAL;
    if (s->reader == NULL)
        reclaim(s); /* what a read abandoned comes first */
    if (n > (size_t)SSIZE_MAX)
        n = (size_t)SSIZE_MAX;
    return n > 0 ? (ssize_t)evbuffer_copyout(s->buf, buf, n) : 0;
}

int
aw_stream_set_limit(aw_stream *s, size_t limit)
{
    if (s == NULL)
        return -EINVAL;
    s->limit = limit > 0 ? limit : AW_STREAM_DEFAULT_LIMIT;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------ */

static void
settle_drains(aw_stream *s, int code)
{
    size_t i;

    for (i = 0; i < s->ndrains; i++) {
        aw_future *d = s->drains[i];

        if (d->state == AW_FUTURE_PENDING) {
            if (code == 0)
                aw_future_set_result(d, NULL, NULL);
            else
                aw_future_set_error(d, code, "connection lost");
        }
        aw_future_unref(d);
    }
    s->ndrains = 0;
}

int
aw_stream_write(aw_stream *s, const void *data, size_t len)
{
    if (s == NULL || s->t == NULL)
        return -EINVAL;
    if (s->lost)
        return gone_error(s, AW_ECLOSED);
    if (s->upgrade != NULL)
        return AW_EBUSY; /* the TLS handshake runs */
    return aw_transport_write(s->t, data, len);
}

aw_future *
aw_stream_drain(aw_stream *s)
{
    aw_future *d, **v;

    if (s == NULL)
        return NULL;
    if (s->lost || s->closed)
        return aw__future_failed_new(s->loop, gone_error(s, -EPIPE),
                                     aw__format("connection lost"));
    /* Paused from the write that crossed the high-water mark, as asyncio's
     * drain is: the protocol hears of it only from the ready queue, and a
     * task whose drains are settled continues at once, so waiting for
     * that would let it write on, unbounded. */
    if (!s->paused_writing &&
        (s->t == NULL || !aw_transport_is_writing_paused(s->t))) {
        /* One settled future, shared by every such drain: no allocation
         * per call (it has no result to take). */
        if (s->drained == NULL) {
            d = aw_future_resolved(s->loop, NULL, NULL);
            if (d == NULL || d->state != AW_FUTURE_DONE)
                return d; /* the shared out-of-memory future */
            s->drained = d;
        }
        return aw_future_ref(s->drained);
    }
    if (s->ndrains == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;

        v = aw__reallocarray(s->drains, cap, sizeof(*v));
        if (v == NULL)
            return aw__future_nomem(s->loop);
        s->drains = v;
        s->cap = cap;
    }
    d = aw_future_new(s->loop);
    if (d == NULL)
        return aw__future_nomem(s->loop);
    s->drains[s->ndrains++] = aw_future_ref(d);
    return d;
}

int
aw_stream_write_eof(aw_stream *s)
{
    if (s == NULL || s->t == NULL)
        return -EINVAL;
    if (s->upgrade != NULL)
        return AW_EBUSY;
    return aw_transport_write_eof(s->t);
}

int
aw_stream_close(aw_stream *s)
{
    if (s == NULL || s->t == NULL)
        return -EINVAL;
    if (s->closed)
        return 0;
    s->closed = 1;
    if (s->upgrade_tf != NULL) /* the handshake is abandoned */
        aw_future_cancel(s->upgrade_tf, NULL);
    else
        aw_transport_close(s->t);
    try_read(s);
    settle_drains(s, AW_ECLOSED);
    return 0;
}

aw_future *
aw_stream_wait_closed(aw_stream *s)
{
    if (s == NULL)
        return NULL;
    if (s->closed_fut == NULL) {
        s->closed_fut = aw_future_new(s->loop);
        if (s->closed_fut == NULL)
            return aw__future_nomem(s->loop);
        if (s->lost)
            aw_future_set_result(s->closed_fut, NULL, NULL);
    }
    return aw_future_ref(s->closed_fut);
}

int
aw_stream_is_closing(const aw_stream *s)
{
    return s != NULL && (s->closed || s->lost ||
                         (s->t != NULL && aw_transport_is_closing(s->t)));
}

aw_transport *
aw_stream_transport(aw_stream *s)
{
    return s != NULL ? s->t : NULL;
}

int
aw_stream_peername_text(const aw_stream *s, char *buf, size_t len)
{
    if (s == NULL || s->t == NULL)
        return -EINVAL;
    return aw_transport_peername_text(s->t, buf, len);
}

int
aw_stream_sockname_text(const aw_stream *s, char *buf, size_t len)
{
    if (s == NULL || s->t == NULL)
        return -EINVAL;
    return aw_transport_sockname_text(s->t, buf, len);
}

/* ---- the protocol ------------------------------------------------------------------ */

static void on_buffer(aw_transport *t, struct evbuffer *in, void *arg);

static void
on_made(aw_transport *t, void *arg)
{
    aw_stream *s = arg;

    if (s->t != NULL && s->t != t) {
        /* start_tls: the TLS transport takes the place of the connection
         * below (whose loss the stream no longer hears: the TLS
         * transport's carries the same reference). */
        aw_transport_unref(s->t);
        s->t = aw_transport_ref(t);
        aw__transport_set_sink(t, on_buffer);
        s->reading_paused = 0;
        /* The pause and resume of the connection below went to the TLS
         * layer during the handshake: writing is paused now or not by
         * the TLS transport's measure (its buffer includes the one
         * below), and drains that waited settle if it is not. */
        aw__transport_check_writing(t);
        s->paused_writing = aw_transport_is_writing_paused(t);
        if (!s->paused_writing)
            settle_drains(s, 0);
        return;
    }
    s->t = aw_transport_ref(t);
    aw__transport_set_sink(t, on_buffer);
    s->role = 1;
    s->refs++; /* the transport's, until the loss */
}

static void
on_data(aw_transport *t, const void *data, size_t len, void *arg)
{
    aw_stream *s = arg;

    if (evbuffer_add(s->buf, data, len) != 0) {
        aw__loop_report(s->loop, -ENOMEM, NULL, NULL,
                        "stream: out of memory, connection aborted");
        aw_transport_abort(t);
        return;
    }
    try_read(s);
}

/* What arrived moves into the stream's buffer, without a copy. */
static void
on_buffer(aw_transport *t, struct evbuffer *in, void *arg)
{
    aw_stream *s = arg;

    if (s == NULL)
        return;
    if (evbuffer_add_buffer(s->buf, in) != 0) {
        aw__loop_report(s->loop, -ENOMEM, NULL, NULL,
                        "stream: out of memory, connection aborted");
        aw_transport_abort(t);
        return;
    }
    try_read(s);
}

static int
on_eof(aw_transport *t, void *arg)
{
    aw_stream *s = arg;

    (void)t;
    s->eof = 1;
    try_read(s);
    return 1; /* the writing side stays open (half-close) */
}

static void
on_lost(aw_transport *t, int error, void *arg)
{
    aw_stream *s = arg;

    (void)t;
    s->lost = 1;
    s->eof = 1;
    s->error = error;
    try_read(s);
    settle_drains(s, gone_error(s, -EPIPE));
    if (s->closed_fut != NULL && s->closed_fut->state == AW_FUTURE_PENDING)
        aw_future_set_result(s->closed_fut, NULL, NULL);
    if (s->role) {
        s->role = 0;
        aw_stream_unref(s);
    }
}

static void
on_pause(aw_transport *t, void *arg)
{
    (void)t;
    ((aw_stream *)arg)->paused_writing = 1;
}

static void
on_resume(aw_transport *t, void *arg)
{
    aw_stream *s = arg;

    (void)t;
    s->paused_writing = 0;
    settle_drains(s, 0);
}

static const aw_protocol stream_protocol = {
    AW_PROTOCOL_SIZE, on_made, on_data, on_eof, on_lost, on_pause, on_resume,
    NULL,             NULL};

/* ---- connecting ------------------------------------------------------------------- */

/* The transport future settled: hand the stream over, or the error. */
static int
opening_done(aw_future *tf, void *arg)
{
    aw_stream *s = arg;
    aw_future *f = s->opened;
    void *t = NULL;

    s->opening = NULL;
    s->opened = NULL;
    if (aw_future_take_result(tf, &t, NULL) == 0) {
        aw_transport_unref(t); /* the stream holds its own */
        if (f->state == AW_FUTURE_PENDING)
            aw_future_set_result(f, aw_stream_ref(s), unref_cb);
    } else if (f->state == AW_FUTURE_PENDING) {
        const char *m = aw_future_message(tf);

        aw__future_set_failed(f, aw_future_error(tf),
                              m != NULL ? aw__strdup(m) : NULL);
    }
    aw_future_unref(tf);
    aw_future_unref(f);
    aw_stream_unref(s); /* the opening's reference */
    return 0;
}

/* The open future settled: cancelled, it abandons the connection. */
static int
opened_done(aw_future *f, void *arg)
{
    aw_stream *s = arg;

    if (aw_future_cancelled(f) && s->opening != NULL)
        aw_future_cancel(s->opening, NULL);
    aw_stream_unref(s);
    return 0;
}

static aw_future *open_with(aw_loop *loop, aw_stream *s, aw_future *f,
                            aw_future *tf);

static aw_future *
open_stream(aw_loop *loop, aw_future *(*connect)(aw_loop *, const char *, int,
                                                   const aw_protocol *, void *),
            const char *where, int port)
{
    aw_stream *s;
    aw_future *f, *tf;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    s = stream_new(loop);
    f = s != NULL ? aw_future_new(loop) : NULL;
    if (f == NULL) {
        if (s != NULL)
            stream_free(s);
        return aw__future_nomem(loop);
    }
    tf = connect(loop, where, port, &stream_protocol, s);
    return open_with(loop, s, f, tf);
}

/* The stream s and its future f wait for the connection future tf. */
static aw_future *
open_with(aw_loop *loop, aw_stream *s, aw_future *f, aw_future *tf)
{
    if (!aw_future_done(tf)) {
        s->opening = tf;
        s->opened = aw_future_ref(f);
        s->refs++; /* the opening's */
        if (aw__future_attach(tf, opening_done, s) != 0) {
            s->refs--;
            aw_future_cancel(tf, NULL);
            goto failed;
        }
        s->refs++; /* opened_done's */
        if (aw__future_attach(f, opened_done, s) != 0)
            s->refs--;
        aw_stream_unref(s); /* the future results hold it from now */
        return f;
    }
failed:
    aw__future_set_failed(f, aw_future_error(tf) ? aw_future_error(tf)
                                                 : -ENOMEM,
                          aw_future_message(tf)
                              ? aw__strdup(aw_future_message(tf))
                              : NULL);
    aw_future_unref(tf);
    aw_future_unref(s->opened);
    s->opened = NULL;
    aw_stream_unref(s);
    return f;
}

static aw_future *
connect_unix(aw_loop *loop, const char *path, int port,
             const aw_protocol *proto, void *arg)
{
    (void)port;
    return aw_create_unix_connection(loop, path, proto, arg);
}

aw_future *
aw_open_connection(aw_loop *loop, const char *host, int port)
{
    return open_stream(loop, aw_create_connection, host, port);
}

aw_future *
aw_open_unix_connection(aw_loop *loop, const char *path)
{
    return open_stream(loop, connect_unix, path, 0);
}

/* A descriptor the program has: port carries it through open_stream. */
static aw_future *
connect_sock(aw_loop *loop, const char *where, int fd,
             const aw_protocol *proto, void *arg)
{
    (void)where;
    return aw_create_connection_sock(loop, fd, proto, arg);
}

static aw_future *
connect_read_pipe(aw_loop *loop, const char *where, int fd,
                  const aw_protocol *proto, void *arg)
{
    (void)where;
    return aw_connect_read_pipe(loop, fd, proto, arg);
}

static aw_future *
connect_write_pipe(aw_loop *loop, const char *where, int fd,
                   const aw_protocol *proto, void *arg)
{
    (void)where;
    return aw_connect_write_pipe(loop, fd, proto, arg);
}

aw_future *
aw_open_connection_sock(aw_loop *loop, int fd)
{
    return open_stream(loop, connect_sock, NULL, fd);
}

aw_future *
aw_open_read_pipe(aw_loop *loop, int fd)
{
    return open_stream(loop, connect_read_pipe, NULL, fd);
}

aw_future *
aw_open_write_pipe(aw_loop *loop, int fd)
{
    return open_stream(loop, connect_write_pipe, NULL, fd);
}

/* open_stream over TLS: host and port, or path (not NULL). */
static aw_future *
open_tls(aw_loop *loop, const char *host, int port, const char *path,
         aw_tls_context *ctx, const char *server_hostname)
{
    aw_stream *s;
    aw_future *f, *tf;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    s = stream_new(loop);
    f = s != NULL ? aw_future_new(loop) : NULL;
    if (f == NULL) {
        if (s != NULL)
            stream_free(s);
        return aw__future_nomem(loop);
    }
    tf = path != NULL ? aw_create_unix_connection_tls(loop, path, ctx,
                                                      server_hostname,
                                                      &stream_protocol, s)
                      : aw_create_connection_tls(loop, host, port, ctx,
                                                 server_hostname,
                                                 &stream_protocol, s);
    return open_with(loop, s, f, tf);
}

aw_future *
aw_open_connection_tls(aw_loop *loop, const char *host, int port,
                       aw_tls_context *ctx, const char *server_hostname)
{
    if (loop != NULL && host == NULL)
        return aw__future_failed_new(loop, -EINVAL, aw__format("no host"));
    return open_tls(loop, host, port, NULL, ctx, server_hostname);
}

aw_future *
aw_open_unix_connection_tls(aw_loop *loop, const char *path,
                            aw_tls_context *ctx, const char *server_hostname)
{
    if (loop != NULL && path == NULL)
        return aw__future_failed_new(loop, -EINVAL, aw__format("no path"));
    return open_tls(loop, NULL, 0, path, ctx, server_hostname);
}

/* ---- start_tls ------------------------------------------------------------------- */

/* The TLS layer's future settled: the stream reads and writes through it
 * (on_made swapped the transports), or the connection is lost. */
static int
upgraded(aw_future *tf, void *arg)
{
    aw_stream *s = arg;
    aw_future *f = s->upgrade;
    int code = aw_future_error(tf);

    s->upgrade = NULL;
    s->upgrade_tf = NULL;
    if (aw_future_state(tf) == AW_FUTURE_DONE) {
        if (f->state == AW_FUTURE_PENDING)
            aw_future_set_result(f, NULL, NULL);
        flow(s);
    } else {
        const char *m = aw_future_message(tf);

        if (aw_future_cancelled(tf))
            code = AW_ECANCELLED;
        if (f->state == AW_FUTURE_PENDING)
            aw__future_set_failed(f, code, m != NULL ? aw__strdup(m) : NULL);
        if (!s->lost) /* the connection below went with the handshake */
            on_lost(NULL, code, s);
    }
    aw_future_unref(f);
    aw_future_unref(tf);
    aw_stream_unref(s);
    return 0;
}

static int
upgrade_watch(aw_future *f, void *arg)
{
    aw_stream *s = arg;

    if (aw_future_cancelled(f) && s->upgrade_tf != NULL)
        aw_future_cancel(s->upgrade_tf, NULL);
    aw_stream_unref(s);
    return 0;
}

aw_future *
aw_stream_start_tls(aw_stream *s, aw_tls_context *ctx,
                    const char *server_hostname)
{
    aw_future *f, *tf;

    if (s == NULL || aw_loop_is_closed(s->loop))
        return NULL;
    if (s->t == NULL || s->lost || s->closed || s->upgrade != NULL ||
        !aw__transport_is_open_conn(s->t))
        return aw__future_failed_new(s->loop, -EINVAL,
                                     aw__format("the stream is not an open "
                                                "connection"));
    f = aw_future_new(s->loop);
    if (f == NULL)
        return aw__future_nomem(s->loop);
    /* What is buffered and unread came after the go-ahead: the peer's
     * first TLS bytes (a ClientHello sent without waiting), or bytes it
     * had no right to send in the clear, which fail the handshake rather
     * than read as if they had come over TLS. */
    reclaim(s);
    tf = aw__tls_start(s->t, ctx, server_hostname, &stream_protocol, s,
                       s->buf);
    s->scanned = 0; /* a waiting read searches the decrypted bytes anew */
    if (tf == NULL || aw_future_done(tf)) {
        /* Refused, nothing changed; or the layer took the connection and
         * its handshake failed at once (OpenSSL refused to start it):
         * the connection is gone with it, and so is the stream. */
        const char *m = tf != NULL ? aw_future_message(tf) : NULL;
        int code = tf != NULL ? aw_future_error(tf) : -ENOMEM;

        aw__future_set_failed(f, code, m != NULL ? aw__strdup(m) : NULL);
        if (tf != NULL && aw__transport_protocol(s->t) != &stream_protocol &&
            !s->lost)
            on_lost(NULL, code, s);
        aw_future_unref(tf);
        return f;
    }
    s->upgrade = aw_future_ref(f);
    s->upgrade_tf = tf;
    s->reading_paused = 0; /* the layer reads what it needs */
    if (aw__future_attach(tf, upgraded, aw_stream_ref(s)) != 0) {
        /* out of memory: the handshake cannot be followed; give up */
        s->refs--;
        aw_future_cancel(tf, NULL);
        s->upgrade = NULL;
        s->upgrade_tf = NULL;
        aw_future_unref(tf);
        aw__future_set_failed(f, -ENOMEM, NULL);
        aw_future_unref(f); /* the stream's */
        if (!s->lost)
            on_lost(NULL, -ENOMEM, s);
        return f;
    }
    if (aw__future_attach(f, upgrade_watch, aw_stream_ref(s)) != 0)
        s->refs--;
    return f;
}

/* ---- serving ------------------------------------------------------------------------- */

struct client_ctx {
    aw_client_fn on_client;
    void *arg;
};

static void
client_made(aw_transport *t, void *arg)
{
    struct client_ctx *c = arg;
    aw_stream *s = stream_new(aw_transport_loop(t));

    if (s == NULL) {
        aw__loop_report(aw_transport_loop(t), -ENOMEM, NULL, NULL,
                        "server: out of memory, connection dropped");
        aw_transport_set_user(t, NULL);
        aw_transport_abort(t);
        return;
    }
    aw_transport_set_user(t, s);
    on_made(t, s);
    c->on_client(s, c->arg); /* hands over the stream's first reference */
}

/* The server's callbacks: the user pointer is the stream once made, NULL
 * when it could not be made (the connection is then aborted). */
static void
client_data(aw_transport *t, const void *data, size_t len, void *arg)
{
    if (arg != NULL)
        on_data(t, data, len, arg);
}

static int
client_eof(aw_transport *t, void *arg)
{
    return arg != NULL ? on_eof(t, arg) : 0;
}

static void
client_lost(aw_transport *t, int error, void *arg)
{
    if (arg != NULL)
        on_lost(t, error, arg);
}

static void
client_pause(aw_transport *t, void *arg)
{
    if (arg != NULL)
        on_pause(t, arg);
}

static void
client_resume(aw_transport *t, void *arg)
{
    if (arg != NULL)
        on_resume(t, arg);
}

static const aw_protocol client_protocol = {
    AW_PROTOCOL_SIZE, client_made,  client_data,  client_eof,
    client_lost,      client_pause, client_resume, NULL, NULL};

/* start_server's own flag: serve TLS (the public flags are small). */
#define START_TLS 0x40000000

static aw_future *
start_server(aw_loop *loop, const char *host, int port, const char *path,
             aw_tls_context *ctx, aw_client_fn on_client, void *arg,
             int flags, int backlog)
{
    struct client_ctx *c;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (on_client == NULL)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("no on_client callback"));
    c = aw__malloc(sizeof(*c));
    if (c == NULL)
        return aw__future_nomem(loop);
    c->on_client = on_client;
    c->arg = arg;
    if (ctx != NULL || (flags & START_TLS))
        return aw__tls_create_server(loop, host, port, path, -1, ctx,
                                     &client_protocol, c, aw__free,
                                     flags & ~START_TLS, backlog);
    return aw__create_server(loop, host, port, path, &client_protocol, c,
                             aw__free, flags, backlog);
}

aw_future *
aw_start_server(aw_loop *loop, const char *host, int port,
                aw_client_fn on_client, void *arg, int flags, int backlog)
{
    return start_server(loop, host, port, NULL, NULL, on_client, arg, flags,
                        backlog);
}

aw_future *
aw_start_unix_server(aw_loop *loop, const char *path, aw_client_fn on_client,
                     void *arg, int backlog)
{
    if (loop != NULL && path == NULL)
        return aw__future_failed_new(loop, -EINVAL, aw__format("no path"));
    return start_server(loop, NULL, 0, path, NULL, on_client, arg, 0,
                        backlog);
}

aw_future *
aw_start_server_tls(aw_loop *loop, const char *host, int port,
                    aw_tls_context *ctx, aw_client_fn on_client, void *arg,
                    int flags, int backlog)
{
    if (flags & START_TLS) /* not a flag of the caller's */
        return loop != NULL ? aw__future_failed_new(loop, -EINVAL, NULL)
                            : NULL;
    return start_server(loop, host, port, NULL, ctx, on_client, arg,
                        flags | START_TLS, backlog);
}

aw_future *
aw_start_unix_server_tls(aw_loop *loop, const char *path, aw_tls_context *ctx,
                         aw_client_fn on_client, void *arg, int backlog)
{
    if (loop != NULL && path == NULL)
        return aw__future_failed_new(loop, -EINVAL, aw__format("no path"));
    return start_server(loop, NULL, 0, path, ctx, on_client, arg, START_TLS,
                        backlog);
}

static aw_future *
server_sock(aw_loop *loop, int fd, aw_tls_context *ctx, int tls,
            aw_client_fn on_client, void *arg, int backlog)
{
    struct client_ctx *c;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (on_client == NULL)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("no on_client callback"));
    c = aw__malloc(sizeof(*c));
    if (c == NULL)
        return aw__future_nomem(loop);
    c->on_client = on_client;
    c->arg = arg;
    if (ctx != NULL || tls)
        return aw__tls_create_server(loop, NULL, 0, NULL, fd, ctx,
                                     &client_protocol, c, aw__free, 0,
                                     backlog);
    return aw__create_server_sock(loop, fd, &client_protocol, c, aw__free,
                                  backlog);
}

aw_future *
aw_start_server_sock(aw_loop *loop, int fd, aw_client_fn on_client,
                     void *arg, int backlog)
{
    return server_sock(loop, fd, NULL, 0, on_client, arg, backlog);
}

aw_future *
aw_start_server_sock_tls(aw_loop *loop, int fd, aw_tls_context *ctx,
                         aw_client_fn on_client, void *arg, int backlog)
{
    if (loop != NULL && fd < 0)
        return aw__future_failed_new(loop, -EINVAL, aw__format("no socket"));
    return server_sock(loop, fd, ctx, 1, on_client, arg, backlog);
}

/* ---- getaddrinfo ---------------------------------------------------------------------- */

struct gai {
    aw_future *f;
    struct aw__gai *req;
    int in_call; /* aw__getaddrinfo has not returned yet */
    int done;    /* the callback ran */
};

static int gai_watch(aw_future *f, void *arg);

static void
gai_free(struct gai *g)
{
    aw__future_detach(g->f, gai_watch, g);
    aw_future_unref(g->f);
    aw__free(g);
}

static void
addrinfo_destroy(void *p)
{
    evutil_freeaddrinfo(p);
}

static void
gai_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct gai *g = arg;

    g->req = NULL;
    if (g->f->state == AW_FUTURE_PENDING) {
        if (result == 0)
            aw_future_set_result(g->f, res, addrinfo_destroy);
        else
            aw_future_set_error(g->f, aw__gai_error(result, errno), "%s",
                                evutil_gai_strerror(result));
        res = NULL;
    }
    if (res != NULL)
        evutil_freeaddrinfo(res); /* cancelled: nobody wants it */
    g->done = 1;
    if (!g->in_call)
        gai_free(g);
}

/* The future settled; cancelled while the request runs, cancel it (its
 * callback still comes, with EVUTIL_EAI_CANCEL, and frees g). */
static int
gai_watch(aw_future *f, void *arg)
{
    struct gai *g = arg;

    if (aw_future_cancelled(f) && g->req != NULL)
        aw__getaddrinfo_cancel(g->req);
    return 0;
}

aw_future *
aw_getaddrinfo(aw_loop *loop, const char *host, int port, int family)
{
    struct evutil_addrinfo hints;
    struct aw__gai *req;
    struct gai *g;
    char portstr[16];
    aw_future *f;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (host == NULL || port < 0 || port > 65535)
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_getaddrinfo: bad "
                                                "arguments"));
    f = aw_future_new(loop);
    g = aw__calloc(1, sizeof(*g));
    if (f == NULL || g == NULL ||
        aw__future_attach(f, gai_watch, g) != 0) {
        aw_future_unref(f);
        aw__free(g);
        return aw__future_nomem(loop);
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(portstr, sizeof(portstr), "%d", port);
    g->f = aw_future_ref(f);
    /* The callback may run inside the call (a literal, the hosts file):
     * it settles f then, which is fine, f was not handed out yet. */
    g->in_call = 1;
    req = aw__getaddrinfo(loop, host, port > 0 ? portstr : NULL, &hints,
                          gai_cb, g);
    g->in_call = 0;
    if (g->done)
        gai_free(g);
    else
        g->req = req;
    return f;
}

/* ---- getnameinfo ----------------------------------------------------------------------- */

struct ni_query {
    struct sockaddr_storage ss;
    socklen_t len;
    int flags;
};

/* getnameinfo(3) into a new aw_nameinfo: it, or NULL with *err set. */
static void *
ni_lookup(void *arg, int *err)
{
    struct ni_query *q = arg;
    aw_nameinfo *ni = aw__calloc(1, sizeof(*ni));
    int rc;

    if (ni == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    rc = getnameinfo((struct sockaddr *)&q->ss, q->len, ni->host,
                     sizeof(ni->host), ni->service, sizeof(ni->service),
                     q->flags);
    if (rc != 0) {
        *err = aw__gai_error(rc, errno);
        aw__free(ni);
        return NULL;
    }
    return ni;
}

aw_future *
aw_getnameinfo(aw_loop *loop, const struct sockaddr *addr, socklen_t len,
               int flags)
{
    struct ni_query *q;
    void *ni;
    int err = 0;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (addr == NULL || len < (socklen_t)sizeof(sa_family_t) ||
        len > (socklen_t)sizeof(struct sockaddr_storage))
        return aw__future_failed_new(loop, -EINVAL,
                                     aw__format("aw_getnameinfo: bad "
                                                "address"));
    q = aw__calloc(1, sizeof(*q));
    if (q == NULL)
        return aw__future_nomem(loop);
    memcpy(&q->ss, addr, len);
    q->len = len;
    q->flags = flags;
    if ((flags & (NI_NUMERICHOST | NI_NUMERICSERV)) ==
        (NI_NUMERICHOST | NI_NUMERICSERV)) {
        /* Numbers only: nothing to wait for, no thread. */
        ni = ni_lookup(q, &err);
        aw__free(q);
        if (err != 0)
            return aw__future_failed_new(loop, err,
                                         aw__format("aw_getnameinfo: %s",
                                                    aw_strerror(err)));
        return aw_future_resolved(loop, ni, aw__free);
    }
    return aw_to_thread(loop, ni_lookup, q, aw__free, aw__free);
}

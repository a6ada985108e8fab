/* SPDX-License-Identifier: MIT */
/* await/stream.h: streams, the awaitable level of networking (asyncio's
 * StreamReader and StreamWriter in one object), servers that start a task
 * per client, and getaddrinfo as a future. */
#ifndef AWAIT_STREAM_H
#define AWAIT_STREAM_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"
#include "await/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- bytes ------------------------------------------------------------------------ */

/* An immutable run of bytes, as reads return them: a read of a few KiB
 * is one allocation holding its bytes; a larger one keeps the buffers
 * the bytes arrived in (copying only what spans two of them). */
typedef struct aw_bytes aw_bytes;

/* aw_bytes_new - a copy of the len bytes at data (data may be NULL when
 * len is 0).  NULL for a NULL data with len > 0, a len too large to
 * allocate, or out of memory. */
AW_EXTERN aw_bytes *aw_bytes_new(const void *data, size_t len);
AW_EXTERN size_t aw_bytes_len(const aw_bytes *b);
/* aw_bytes_data - the len bytes, contiguous; not NUL-terminated. */
AW_EXTERN const char *aw_bytes_data(const aw_bytes *b);
/* aw_bytes_cstr - the same followed by a NUL (not counted in len), for
 * text; NULL out of memory. */
AW_EXTERN const char *aw_bytes_cstr(aw_bytes *b);
AW_EXTERN void aw_bytes_free(aw_bytes *b);

/* ---- streams ----------------------------------------------------------------------- */

typedef struct aw_stream aw_stream;

#define AW_STREAM_DEFAULT_LIMIT (64 * 1024)

/*
 * aw_open_connection - connect to host:port (names resolved
 * asynchronously; IPv4 and IPv6) and return a future whose result is the
 * stream (owned by the future: take it with aw_future_take_result, then
 * release it with aw_stream_unref).  Errors as aw_create_connection().
 * aw_open_unix_connection - the same over a Unix socket.
 */
AW_EXTERN aw_future *aw_open_connection(aw_loop *loop, const char *host,
                                        int port);
AW_EXTERN aw_future *aw_open_unix_connection(aw_loop *loop,
                                             const char *path);

/*
 * aw_start_server - listen on host:port (as aw_create_server, same flags
 * and backlog) and call on_client(stream, arg) for each connection, from
 * the loop; on_client owns the stream reference it is given (start a task
 * with it, typically).  The future's result is the aw_server (owned by
 * the future: take it; close and free it with aw_server_*).
 * aw_start_unix_server - the same on a Unix socket.
 */
typedef void (*aw_client_fn)(aw_stream *stream, void *arg);

AW_EXTERN aw_future *aw_start_server(aw_loop *loop, const char *host,
                                     int port, aw_client_fn on_client,
                                     void *arg, int flags, int backlog);
AW_EXTERN aw_future *aw_start_unix_server(aw_loop *loop, const char *path,
                                          aw_client_fn on_client, void *arg,
                                          int backlog);

/*
 * Streams on a descriptor the program already has; the descriptor is
 * taken over as by the transport calls (see aw_create_connection_sock:
 * non-blocking, close-on-exec, closed with the stream; a future that
 * fails at once leaves it to the caller).  The future's result is the
 * stream (owned by the future: take it, release it with
 * aw_stream_unref); errors as the transport calls'.
 * aw_open_connection_sock - a connected stream socket (asyncio's
 * open_connection(sock=)).
 * aw_open_read_pipe - the read end of a pipe (stdin, a child's stdout):
 * reads only; at end of file reads return what is left, then empty, and
 * the stream closes; writes are -EOPNOTSUPP (asyncio's connect_read_pipe
 * with a StreamReaderProtocol).
 * aw_open_write_pipe - the write end of a pipe (stdout, a child's
 * stdin): writes and drain; a reader gone is -EPIPE (never SIGPIPE);
 * aw_stream_write_eof closes it once flushed; reads wait until the pipe
 * is closed, then return empty.
 * aw_start_server_sock - aw_start_server on a listening socket the
 * program has (asyncio's start_server(sock=)); backlog as
 * aw_create_server_sock.
 */
AW_EXTERN aw_future *aw_open_connection_sock(aw_loop *loop, int fd);
AW_EXTERN aw_future *aw_open_read_pipe(aw_loop *loop, int fd);
AW_EXTERN aw_future *aw_open_write_pipe(aw_loop *loop, int fd);
AW_EXTERN aw_future *aw_start_server_sock(aw_loop *loop, int fd,
                                          aw_client_fn on_client, void *arg,
                                          int backlog);

AW_EXTERN aw_stream *aw_stream_ref(aw_stream *s);
/* aw_stream_unref - the last reference aborts the connection if it is
 * still open and was not closed (a closed stream flushes first).
 * Accepts NULL. */
AW_EXTERN void aw_stream_unref(aw_stream *s);

/*
 * Reads.  One read at a time (another one started while one waits fails
 * with AW_EBUSY).  Results are aw_bytes owned by the future (take them to
 * keep them).  Errors: the connection's error when it was lost, AW_ECLOSED
 * after aw_stream_close().  No data is lost in the hand-over: a read
 * cancelled while it waits takes nothing, and a read settled with data
 * whose future is released unread (its task cancelled after the data
 * arrived, before it resumed) gives the data back to the front of the
 * buffer for the next read (asyncio leaves it in the buffer).
 *
 * aw_stream_read - up to n bytes (n == 0: nothing), as soon as any are
 *   there; an empty result at end of file.
 * aw_stream_readexactly - exactly n bytes, whatever the limit (reading
 *   goes on past it for such a read); AW_EINCOMPLETE at end of file
 *   before that, the bytes read then given by aw_stream_partial().
 * aw_stream_readuntil - up to and including the separator.  AW_ELIMIT
 *   when more than the stream's limit of bytes come before the separator
 *   (the limit is on the data before it, as asyncio's: a line of exactly
 *   limit bytes and its separator is read); the data stays buffered;
 *   AW_EINCOMPLETE at end of file (partial as above).
 * A read served from what is buffered allocates only the bytes it
 * returns: its future comes from the loop's pools, and the separator is
 * searched where the caller keeps it (copied only when the read waits:
 * into the stream for up to 16 bytes, and not again while it is the
 * same).
 *
 * aw_stream_readline - aw_stream_readuntil with "\n", except at end of
 *   file: the last bytes without a newline, or empty bytes; and past the
 *   limit, where the overlong line is dropped with its newline (all that
 *   is buffered when no newline came yet) before AW_ELIMIT, as asyncio's
 *   readline does.
 */
AW_EXTERN aw_future *aw_stream_read(aw_stream *s, size_t n);
AW_EXTERN aw_future *aw_stream_readexactly(aw_stream *s, size_t n);
AW_EXTERN aw_future *aw_stream_readuntil(aw_stream *s, const void *sep,
                                         size_t seplen);
AW_EXTERN aw_future *aw_stream_readline(aw_stream *s);

/* aw_stream_partial - the bytes of the last read that failed with
 * AW_EINCOMPLETE (the caller's now), or NULL. */
AW_EXTERN aw_bytes *aw_stream_partial(aw_stream *s);

/*
 * aw_stream_buffered - how many bytes the stream holds, read from the
 * socket and not yet returned by a read (a read abandoned unread gave
 * its bytes back: they count).  0 for NULL.
 * aw_stream_peek - copy up to n of those bytes, from the front, into buf
 * without consuming them, for a parser that decides how much to read.
 * Returns how many were copied (0 when none are buffered; it does not
 * wait); -EINVAL for a NULL stream, or a NULL buf with n > 0.
 */
AW_EXTERN size_t aw_stream_buffered(const aw_stream *s);
AW_EXTERN ssize_t aw_stream_peek(aw_stream *s, void *buf, size_t n);

/* aw_stream_at_eof - 1 when the peer sent EOF and everything was read. */
AW_EXTERN int aw_stream_at_eof(const aw_stream *s);

/* aw_stream_set_limit - the most a read may buffer: reading from the
 * socket pauses once twice this much is buffered and no read waits (a
 * waiting readexactly may buffer what it needs); 0 picks 64 KiB. */
AW_EXTERN int aw_stream_set_limit(aw_stream *s, size_t limit);

/*
 * Writes.  aw_stream_write buffers (never blocks): 0; AW_ECLOSED after
 * close or write_eof; the connection's error once it was lost.
 * aw_stream_drain - a future done once the write buffer is down to its
 * low-water mark (at once if writing is not paused: it is from the write
 * that took the buffer over its high-water mark, as in asyncio, so that
 * writing and draining in a loop keeps the buffer bounded; see
 * aw_transport_is_writing_paused); fails with the connection's error
 * if it is lost meanwhile (-EPIPE when it closed without one).  Any
 * number of drains may wait at once.  The caller gets a reference to
 * release with aw_future_unref().  When writing is not paused the future
 * is one settled future the stream shares between such drains (nothing
 * is allocated per call): its result is NULL, and taking it fails with
 * AW_EINVALSTATE while another holder has it.
 */
AW_EXTERN int aw_stream_write(aw_stream *s, const void *data, size_t len);
AW_EXTERN aw_future *aw_stream_drain(aw_stream *s);
AW_EXTERN int aw_stream_write_eof(aw_stream *s);

/* aw_stream_close - flush and close; waiting reads and drains fail with
 * AW_ECLOSED.  aw_stream_wait_closed - a future done once the
 * connection is gone.  aw_stream_is_closing - 1 once closing. */
AW_EXTERN int aw_stream_close(aw_stream *s);
AW_EXTERN aw_future *aw_stream_wait_closed(aw_stream *s);
AW_EXTERN int aw_stream_is_closing(const aw_stream *s);

/* aw_stream_transport - the transport below (borrowed): addresses, fd,
 * write-buffer limits. */
AW_EXTERN aw_transport *aw_stream_transport(aw_stream *s);

/* aw_stream_peername_text / _sockname_text - the peer's or the local
 * address as text, as aw_transport_peername_text (AW_ADDRSTRLEN bytes
 * suffice): "127.0.0.1:8080", "[::1]:8080", a Unix path.  The length;
 * -ENOSPC; -EINVAL; AW_ECLOSED once the connection is gone. */
AW_EXTERN int aw_stream_peername_text(const aw_stream *s, char *buf,
                                      size_t len);
AW_EXTERN int aw_stream_sockname_text(const aw_stream *s, char *buf,
                                      size_t len);

/* ---- names ------------------------------------------------------------------------ */

/*
 * aw_getaddrinfo - resolve host (and port, 0 for none) as the loop is set
 * to (aw_set_resolver: by default getaddrinfo(3) in the loop's default
 * executor, as asyncio's loop.getaddrinfo; or libevent's evdns); family
 * AF_UNSPEC, AF_INET or AF_INET6.  The
 * result is a `struct evutil_addrinfo *` list owned by the future (see
 * <event2/util.h>; its layout is the system's struct addrinfo).  Fails
 * with the resolver's code and message: AW_EAI_NONAME (no such name),
 * AW_EAI_AGAIN (try again later), AW_EAI_FAIL, AW_EAI_NODATA (no address
 * of that family), AW_EAI_FAMILY (a family other than those three),
 * AW_EAI_SERVICE, AW_EAI_BADFLAGS, AW_EAI_SOCKTYPE; -ENOMEM; -errno for a
 * system error; -EINVAL for a NULL host or a port out of range.
 * Cancelling it is safe at any time, also when the answer is already on
 * its way (the future is then cancelled: AW_ECANCELLED).
 */
AW_EXTERN aw_future *aw_getaddrinfo(aw_loop *loop, const char *host,
                                    int port, int family);

/*
 * aw_getnameinfo - the name and service of a socket address (asyncio's
 * loop.getnameinfo): getnameinfo(3), with its NI_* flags (<netdb.h>:
 * NI_NUMERICHOST, NI_NUMERICSERV, NI_NAMEREQD, NI_NOFQDN, NI_DGRAM).
 * The result is an aw_nameinfo owned by the future (read it with
 * aw_future_result; a taken one is freed with the destructor
 * aw_future_take_result gives).  With both NI_NUMERICHOST and
 * NI_NUMERICSERV nothing is looked up: the future is settled at once, no
 * thread.  Otherwise the system's getnameinfo(3) (/etc/hosts, DNS, as
 * nsswitch says) runs in the loop's default executor (aw_to_thread),
 * whichever resolver aw_set_resolver chose for names (evdns has no
 * reverse lookup from the hosts file).  Fails with the resolver's code:
 * AW_EAI_NONAME (no name, with NI_NAMEREQD), AW_EAI_AGAIN, AW_EAI_FAIL,
 * AW_EAI_FAMILY, ...; -EINVAL for a NULL address or a length out of
 * range; -ENOMEM.  NULL for a NULL or closed loop.  Cancelling it is
 * safe (the lookup under way finishes on its thread, unseen).
 */
#define AW_NI_MAXHOST 1025
#define AW_NI_MAXSERV 32
typedef struct aw_nameinfo {
    char host[AW_NI_MAXHOST];   /* the name, or the address as text */
    char service[AW_NI_MAXSERV]; /* the service's name, or the port */
} aw_nameinfo;

AW_EXTERN aw_future *aw_getnameinfo(aw_loop *loop,
                                    const struct sockaddr *addr,
                                    socklen_t len, int flags);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_STREAM_H */

/* SPDX-License-Identifier: MIT */
/* await/transport.h: transports and protocols, the callback-first level
 * of networking (asyncio's Transport, Protocol and BufferedProtocol), on
 * plain libevent events and listeners: TCP over IPv4 and IPv6, Unix
 * stream sockets.  A transport owns its socket; TCP sockets have
 * TCP_NODELAY on (asyncio, uvloop: see aw_transport_set_nodelay).
 * Sockets are written with MSG_NOSIGNAL: a peer that went away is an
 * error code (-EPIPE, -ECONNRESET), never a SIGPIPE, and the library
 * leaves the process's signal dispositions alone. */
#ifndef AWAIT_TRANSPORT_H
#define AWAIT_TRANSPORT_H

#include <stddef.h>
#include <sys/socket.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aw_transport aw_transport;
typedef struct aw_server aw_server;

/*
 * A protocol: what a connection calls, always from the loop (never inside
 * a transport call), in this order: connection_made once; data_received
 * (or get_buffer and buffer_updated) and eof_received while open,
 * pause_writing/resume_writing as the write buffer crosses its limits;
 * connection_lost exactly once, last.  Any member may be NULL, but for the
 * pair of a buffered protocol.  `arg` is the transport's user pointer (see
 * aw_transport_set_user), at first the one given to create_connection or
 * create_server.
 *
 * A buffered protocol (asyncio's BufferedProtocol) lends the buffers the
 * transport reads into, so that a parser receives into its own memory
 * without a copy: when get_buffer is set, data_received is never called;
 * instead, for each read, get_buffer(t, sizehint, &len, arg) returns a
 * buffer and stores its size in *len (sizehint is what the transport
 * would like to read, a hint only), the transport reads up to len bytes
 * into it and calls buffer_updated(t, nbytes, arg) with how many came
 * (nbytes > 0: the end of file goes to eof_received).  The buffer is the
 * protocol's; the transport uses it only between the two calls.  A NULL
 * buffer or a *len of 0 is the protocol's failure (asyncio raises): it is
 * reported through the loop's exception handler and the connection is
 * lost with -ENOBUFS.  get_buffer without buffer_updated is -EINVAL.
 *
 * The table can grow without breaking programs built against an older
 * one: its first member, size, must be sizeof(aw_protocol) as the program
 * saw it (AW_PROTOCOL_SIZE); the library reads no member past it (a table
 * of the first version, up to resume_writing, is a plain protocol), and
 * refuses a size smaller than the first version's or larger than its own
 * with -EINVAL.  Members come after it in this order, for initializers:
 *
 *     static const aw_protocol p = {AW_PROTOCOL_SIZE, made, received, ...};
 */
typedef struct aw_protocol {
    size_t size; /* sizeof(aw_protocol): AW_PROTOCOL_SIZE */
    void (*connection_made)(aw_transport *t, void *arg);
    /* data is lent for the call; it may come in any split. */
    void (*data_received)(aw_transport *t, const void *data, size_t len,
                          void *arg);
    /* The peer will send no more.  Return 1 to keep the transport open
     * for writing (half-close), 0 to close it (the default when NULL). */
    int (*eof_received)(aw_transport *t, void *arg);
    /* error: 0 for a clean close or abort, else a negative code. */
    void (*connection_lost)(aw_transport *t, int error, void *arg);
    void (*pause_writing)(aw_transport *t, void *arg);
    void (*resume_writing)(aw_transport *t, void *arg);
    /* A buffered protocol (see above); a table that ends before these
     * is a plain one. */
    void *(*get_buffer)(aw_transport *t, size_t sizehint, size_t *len,
                        void *arg);
    void (*buffer_updated)(aw_transport *t, size_t nbytes, void *arg);
} aw_protocol;

#define AW_PROTOCOL_SIZE sizeof(aw_protocol)

/* ---- transports ------------------------------------------------------------------ */

/*
 * aw_transport_write - send len bytes; never blocks.  With nothing queued
 * they go to the socket at once; what the kernel does not take is queued
 * (copied).  A peer found gone is not this call's error (asyncio): the
 * connection is lost and connection_lost gets -EPIPE or -ECONNRESET.
 * 0; AW_ECLOSED once the transport is closing or closed, or after
 * write_eof; the connection's error once it was lost with one; -ENOMEM
 * (when part of the data was already sent, the connection is lost with
 * it); -EINVAL.
 */
AW_EXTERN int aw_transport_write(aw_transport *t, const void *data,
                                 size_t len);

/* aw_transport_write_eof - shut down the sending side once the buffer is
 * flushed (half-close).  0, AW_ECLOSED, -EINVAL. */
AW_EXTERN int aw_transport_write_eof(aw_transport *t);

/* aw_transport_close - stop reading, flush what is buffered, then close;
 * connection_lost(0) follows.  A second call is a no-op.  0 or -EINVAL. */
AW_EXTERN int aw_transport_close(aw_transport *t);

/* aw_transport_abort - close at once, dropping the buffer;
 * connection_lost(0) follows.  0 or -EINVAL. */
AW_EXTERN int aw_transport_abort(aw_transport *t);

/* aw_transport_is_closing - 1 once close, abort or the loss began. */
AW_EXTERN int aw_transport_is_closing(const aw_transport *t);

/* aw_transport_pause_reading / _resume_reading - stop and restart
 * data_received.  0; AW_ECLOSED; -EINVAL. */
AW_EXTERN int aw_transport_pause_reading(aw_transport *t);
AW_EXTERN int aw_transport_resume_reading(aw_transport *t);
AW_EXTERN int aw_transport_is_reading(const aw_transport *t);

/* aw_transport_write_buffer_size - bytes queued, not yet sent. */
AW_EXTERN size_t aw_transport_write_buffer_size(const aw_transport *t);

/* aw_transport_is_writing_paused - 1 from the write that took the buffer
 * over its high-water mark until it drains to the low one, else 0 (a TLS
 * transport: until the connection below has told it so, from the loop);
 * 0 for NULL or a lost transport.  Takes no reference.  asyncio has no
 * such call because its pause_writing runs inside write(); here
 * pause_writing says the same later, from the loop, so a protocol that
 * writes in a loop asks this between writes (what asyncio's protocols
 * keep in their own _paused flag). */
AW_EXTERN int aw_transport_is_writing_paused(const aw_transport *t);

/*
 * aw_transport_set_write_buffer_limits - pause_writing is called when the
 * buffer grows over high, resume_writing when it drains to low or less.
 * high == 0 picks 64 KiB; low > high is -EINVAL.  Defaults: 64 KiB and
 * 16 KiB (asyncio).
 */
AW_EXTERN int aw_transport_set_write_buffer_limits(aw_transport *t,
                                                   size_t high, size_t low);

/* aw_transport_peername / _sockname - the addresses: 0 with *len set;
 * -EINVAL; AW_ECLOSED; an -errno from the system. */
AW_EXTERN int aw_transport_peername(const aw_transport *t,
                                    struct sockaddr *addr, socklen_t *len);
AW_EXTERN int aw_transport_sockname(const aw_transport *t,
                                    struct sockaddr *addr, socklen_t *len);

/*
 * aw_transport_peername_text / _sockname_text - the address as text in
 * buf (len bytes, NUL included; asyncio's get_extra_info('peername') /
 * ('sockname'), formatted): "127.0.0.1:8080", "[::1]:8080", a Unix
 * socket's path ("" for an unnamed one, "@name" for an abstract one).
 * AW_ADDRSTRLEN bytes always suffice.  Returns the text's length;
 * -ENOSPC when it does not fit (buf is then ""); -EINVAL; AW_ECLOSED once
 * the socket is gone; an -errno from the system.
 */
#define AW_ADDRSTRLEN 112
AW_EXTERN int aw_transport_peername_text(const aw_transport *t, char *buf,
                                         size_t len);
AW_EXTERN int aw_transport_sockname_text(const aw_transport *t, char *buf,
                                         size_t len);

/*
 * aw_transport_set_nodelay - turn TCP_NODELAY on (enable != 0) or off
 * (Nagle's algorithm back, for a peer that prefers fewer, fuller
 * segments); it is on from the start for TCP transports (asyncio,
 * uvloop).  libuv's uv_tcp_nodelay.  0; -EINVAL; AW_ECLOSED when the
 * connection is not open; -EOPNOTSUPP for a Unix socket; an -errno from
 * the system.  On an error nothing changed.
 */
AW_EXTERN int aw_transport_set_nodelay(aw_transport *t, int enable);

/*
 * aw_transport_set_keepalive - turn TCP keep-alive on, with the first
 * probe after delay seconds of silence (1 to 32767), or off (delay is
 * then ignored).  Off by default.  libuv's uv_tcp_keepalive.  0; -EINVAL
 * (also for delay 0 or out of range when enabling); AW_ECLOSED;
 * -EOPNOTSUPP for a Unix socket; an -errno from the system.
 */
AW_EXTERN int aw_transport_set_keepalive(aw_transport *t, int enable,
                                         unsigned delay);

/* aw_transport_fd - the socket, or -1 once closed. */
AW_EXTERN int aw_transport_fd(const aw_transport *t);

/* aw_transport_set_user / aw_transport_user - the pointer given to the
 * protocol's callbacks. */
AW_EXTERN void aw_transport_set_user(aw_transport *t, void *user);
AW_EXTERN void *aw_transport_user(const aw_transport *t);

AW_EXTERN aw_loop *aw_transport_loop(const aw_transport *t);

/* aw_transport_ref / _unref - a transport lives until its connection was
 * lost and the last reference went.  unref accepts NULL. */
AW_EXTERN aw_transport *aw_transport_ref(aw_transport *t);
AW_EXTERN void aw_transport_unref(aw_transport *t);

/* ---- connecting ------------------------------------------------------------------- */

/*
 * Name resolution (asyncio's loop.getaddrinfo).  By default a loop
 * resolves names as asyncio does: the system's getaddrinfo(3), which
 * honours nsswitch, /etc/hosts and /etc/gai.conf, run in the loop's
 * default executor (aw_to_thread) so that the loop never blocks.
 * AW_RESOLVER_EVDNS uses libevent's evdns instead: non-blocking, no
 * thread, /etc/hosts and resolv.conf only.  IP literals and "every
 * address" need no lookup either way.  aw_set_resolver chooses for the
 * loop's later lookups (aw_create_connection, aw_create_server,
 * aw_open_connection, aw_start_server, aw_getaddrinfo): 0; -EINVAL;
 * AW_ECLOSED.  aw_get_resolver: the choice, or -EINVAL.
 */
enum aw_resolver {
    AW_RESOLVER_SYSTEM = 0, /* getaddrinfo(3) in the default executor */
    AW_RESOLVER_EVDNS = 1   /* libevent's evdns, on the loop */
};

AW_EXTERN int aw_set_resolver(aw_loop *loop, int resolver);
AW_EXTERN int aw_get_resolver(aw_loop *loop);

/*
 * aw_create_connection - connect to host:port (a name or a literal IPv4
 * or IPv6 address; names resolved by the loop's asynchronous resolver)
 * and run proto on it.  The future's result is the transport (a
 * reference owned by the future: take it to keep it past the future);
 * it fails with the connection's error (-ECONNREFUSED, -ETIMEDOUT, ...),
 * or the resolver's code (AW_EAI_NONAME, AW_EAI_AGAIN, ..., as
 * aw_getaddrinfo) with its message when the name does not resolve.  Cancelling the future abandons the attempt.
 * aw_create_unix_connection - the same over a Unix stream socket at path.
 */
AW_EXTERN aw_future *aw_create_connection(aw_loop *loop, const char *host,
                                          int port, const aw_protocol *proto,
                                          void *arg);
AW_EXTERN aw_future *aw_create_unix_connection(aw_loop *loop,
                                               const char *path,
                                               const aw_protocol *proto,
                                               void *arg);

/*
 * Transports on a descriptor the program already has.  The transport
 * takes the descriptor over: it is made non-blocking (which the other
 * holders of the same open file see too, as in asyncio) and
 * close-on-exec, and the transport closes it when the connection is
 * lost (also when the future is cancelled first).  A future that fails
 * at once (bad input, an fd of the wrong kind, out of memory) leaves the
 * descriptor to the caller, never closed.  connection_made is called
 * from the loop, then the future's result is the transport (owned by the
 * future: take it to keep it).  Errors: -EINVAL (a NULL or bad protocol,
 * fd < 0, an fd of the wrong kind or direction); -EBADF; -EMFILE when the
 * select backend cannot watch fd; -ENOMEM.
 *
 * aw_create_connection_sock - a connected stream socket (TCP or Unix),
 * asyncio's create_connection(sock=).  -ENOTSOCK for what is not a
 * socket, -EINVAL for one not of SOCK_STREAM, -ENOTCONN for one not
 * connected.  TCP_NODELAY is turned on as for other TCP transports.
 *
 * aw_connect_read_pipe - a read-only transport on a pipe's read end, a
 * FIFO, a socket or a character device (a terminal) open for reading:
 * asyncio's connect_read_pipe.  It is read with read(2); at end of file
 * eof_received is called (its return value does not matter), then the
 * transport closes and connection_lost(0) follows.
 * aw_transport_write and _write_eof on it are -EOPNOTSUPP.
 *
 * aw_connect_write_pipe - a write-only transport on a pipe's write end
 * (or a FIFO, socket or terminal open for writing): asyncio's
 * connect_write_pipe.  It is written with write(2); SIGPIPE is blocked
 * in the calling thread around each write and one it raises is
 * consumed, so a reader that went away loses the connection with
 * -EPIPE (as on sockets), never a signal.  A reader that closes its end
 * is noticed on the loop: connection_lost(0) with nothing queued,
 * -EPIPE with data still queued.  aw_transport_write_eof closes it once
 * the queue is flushed (a pipe has no half-close).  Pausing and resuming
 * reading are -EOPNOTSUPP.  Write-buffer limits and pause/resume_writing
 * work as on sockets.
 */
AW_EXTERN aw_future *aw_create_connection_sock(aw_loop *loop, int fd,
                                               const aw_protocol *proto,
                                               void *arg);
AW_EXTERN aw_future *aw_connect_read_pipe(aw_loop *loop, int fd,
                                          const aw_protocol *proto,
                                          void *arg);
AW_EXTERN aw_future *aw_connect_write_pipe(aw_loop *loop, int fd,
                                           const aw_protocol *proto,
                                           void *arg);

/* ---- serving ------------------------------------------------------------------------ */

/*
 * Flags of aw_create_server and aw_start_server (0 for the defaults).
 * SO_REUSEADDR is on for TCP servers unless AW_SERVER_NO_REUSE_ADDRESS
 * (asyncio's reuse_address, True by default on Unix); naming
 * AW_SERVER_REUSE_ADDRESS says so explicitly.  AW_SERVER_REUSE_PORT sets
 * SO_REUSEPORT (several loops, or processes, accepting on one port).  An
 * unknown flag, or both REUSE_ADDRESS and NO_REUSE_ADDRESS, is -EINVAL;
 * an option the system refuses fails the call with its error.
 */
enum aw_server_flags {
    AW_SERVER_REUSE_ADDRESS = 1,   /* SO_REUSEADDR: the default */
    AW_SERVER_REUSE_PORT = 2,      /* SO_REUSEPORT */
    AW_SERVER_NO_REUSE_ADDRESS = 4 /* no SO_REUSEADDR */
};

/*
 * aw_create_server - listen on host:port (NULL host: every address;
 * port 0: one the system picks, see aw_server_port) and run proto on each
 * connection accepted, with arg as its first user pointer.  backlog <= 0
 * means 128.  host is resolved by the loop's asynchronous resolver, never
 * a blocking one (NULL or "" for every address, numeric addresses and
 * names from the hosts file need no waiting); every address it gives is
 * listened on (one of a family the system lacks is skipped, as asyncio
 * does).  Cancelling the future while it resolves abandons the server.
 * The future's result is the server (owned by the future: take it to keep
 * it); it fails with the system's error (-EADDRINUSE, ...) or, when host
 * does not resolve, an AW_EAI_* code with the resolver's message.  A listener that runs out of file
 * descriptors reports it through the exception handler, stops accepting
 * for 100 ms and goes on.
 * aw_create_unix_server - the same on a Unix stream socket at path (an
 * existing socket file there is replaced).
 */
AW_EXTERN aw_future *aw_create_server(aw_loop *loop, const char *host,
                                      int port, const aw_protocol *proto,
                                      void *arg, int flags, int backlog);
AW_EXTERN aw_future *aw_create_unix_server(aw_loop *loop, const char *path,
                                           const aw_protocol *proto,
                                           void *arg, int backlog);

/*
 * aw_create_server_sock - serve on a stream socket the program already
 * has, bound and usually listening (one from aw_listen_fds, from the
 * service manager): asyncio's create_server(sock=).  backlog > 0 calls
 * listen(2) with it; backlog <= 0 keeps the backlog of a socket already
 * listening and listens with 128 on one that is not.  The server takes
 * the socket over (non-blocking, close-on-exec; closed with the server);
 * when the future fails at once the socket stays the caller's.  The
 * future's result is the server (owned by the future: take it).
 * -EINVAL (bad protocol, fd < 0, not SOCK_STREAM), -ENOTSOCK, -EBADF,
 * -EMFILE (beyond what the select backend watches), -ENOMEM, or
 * listen(2)'s error.
 */
AW_EXTERN aw_future *aw_create_server_sock(aw_loop *loop, int fd,
                                           const aw_protocol *proto,
                                           void *arg, int backlog);

/* aw_server_port - the port the first listening socket is bound to. */
AW_EXTERN int aw_server_port(const aw_server *server);

/* aw_server_sockets - the listening sockets (asyncio's Server.sockets):
 * stores up to n descriptors in fds and returns how many there are (0
 * once closed); -EINVAL.  The sockets stay the server's: query them
 * (getsockname, getsockopt), do not close them. */
AW_EXTERN int aw_server_sockets(const aw_server *server, int *fds, size_t n);

/* aw_server_close - stop listening; connections already made go on.
 * aw_server_wait_closed - a future done once closed and every connection
 * it accepted has been lost. */
AW_EXTERN int aw_server_close(aw_server *server);
AW_EXTERN aw_future *aw_server_wait_closed(aw_server *server);

/* aw_server_serve_forever - a future that settles once the server is
 * closed; cancelling it closes the server (asyncio's serve_forever: a
 * task awaits it and serves until cancelled). */
AW_EXTERN aw_future *aw_server_serve_forever(aw_server *server);

/* aw_server_free - close it and release it (its connections go on). */
AW_EXTERN void aw_server_free(aw_server *server);

/* ---- the service manager --------------------------------------------------------- */

/*
 * Socket activation and readiness notification, as systemd's
 * sd_listen_fds(3) and sd_notify(3) document the protocol, without
 * libsystemd.  None of them touches a loop but aw_watchdog_start; all
 * read the process's environment, so call them from the main thread
 * before other threads run (getenv/unsetenv are not thread-safe).
 *
 * aw_listen_fds - the sockets the service manager passed: when
 * LISTEN_PID is this process's pid, LISTEN_FDS descriptors starting at
 * AW_LISTEN_FDS_START (3), which are made close-on-exec.  Returns how
 * many (0 when none were passed, or they were meant for another
 * process: a LISTEN_PID that is not ours); -EINVAL for a malformed
 * variable (or LISTEN_FDNAMES not naming each one); -EBADF when one of
 * them is not open; -ENOMEM.  With names not NULL, *names is set to a
 * NULL-terminated array of that many names from LISTEN_FDNAMES ("unknown"
 * each when unset: the socket units' FileDescriptorName=), or NULL when
 * there are none; release it with aw_listen_names_free (NULL accepted).
 * With unset_environment != 0 the three variables are removed whatever
 * the outcome, so that children do not see them.  The descriptors stay
 * the caller's: hand each to aw_create_server_sock or aw_start_server_sock
 * (which take them over), or close them.
 */
#define AW_LISTEN_FDS_START 3
AW_EXTERN int aw_listen_fds(int unset_environment, char ***names);
AW_EXTERN void aw_listen_names_free(char **names);

/*
 * aw_notify - send state (newline-separated assignments: "READY=1",
 * "STOPPING=1", "STATUS=serving 3 clients", "RELOADING=1", "WATCHDOG=1")
 * to the service manager: one datagram to the AF_UNIX socket named by
 * NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).  Never
 * blocks (MSG_DONTWAIT: a full queue is -EAGAIN).  Returns 1 when sent, 0
 * when NOTIFY_SOCKET is unset (not run by a service manager that asked);
 * -EINVAL for a NULL state or a NOTIFY_SOCKET that is neither form; an
 * -errno from the system (-ECONNREFUSED when nothing listens there).
 */
AW_EXTERN int aw_notify(const char *state);

/*
 * aw_watchdog_start - when the service manager asks for watchdog pings
 * (WATCHDOG_USEC set, and WATCHDOG_PID, if set, this process's pid),
 * send "WATCHDOG=1" with aw_notify every half of WATCHDOG_USEC on a
 * timer of loop, so that a loop that stops running stops the pings (what
 * the watchdog is for).  Returns 1 with *wd set (the caller's: stop it
 * with aw_watchdog_stop before closing the loop: its timer keeps the
 * loop from closing); 0 when no pings are asked for (*wd NULL); -EINVAL
 * (NULL argument, a malformed or zero variable); AW_ECLOSED; -ENOMEM.  A
 * ping that fails is reported once through the loop's exception handler
 * and the pings go on.  aw_watchdog_stop - stop the pings and free wd
 * (NULL accepted).
 */
typedef struct aw_watchdog aw_watchdog;
AW_EXTERN int aw_watchdog_start(aw_loop *loop, aw_watchdog **wd);
AW_EXTERN void aw_watchdog_stop(aw_watchdog *wd);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_TRANSPORT_H */

/* SPDX-License-Identifier: MIT */
/* await/udp.h: datagram endpoints (asyncio's create_datagram_endpoint,
 * DatagramProtocol and DatagramTransport): UDP over IPv4 and IPv6, Unix
 * datagram sockets, bound, connected or both, on plain libevent events.
 * A datagram transport owns its socket.  Sending never blocks: with
 * nothing queued a datagram goes to the socket at once (MSG_NOSIGNAL),
 * else it is queued whole, with write-buffer limits and
 * pause/resume_writing as stream transports have.  On Linux, many
 * datagrams waiting are read with one recvmmsg(), and the replies sent
 * from datagram_received go out together with one sendmmsg() once the
 * datagrams of that wake-up were delivered (before the loop goes on);
 * elsewhere one datagram a system call. */
#ifndef AWAIT_UDP_H
#define AWAIT_UDP_H

#include <stddef.h>
#include <sys/socket.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aw_datagram_transport aw_datagram_transport;
typedef struct aw_datagram aw_datagram;

/*
 * A datagram protocol (asyncio's DatagramProtocol): what an endpoint
 * calls, always from the loop (never inside a transport call):
 * connection_made once; datagram_received for each datagram, with its
 * source address (addr and addrlen; for a datagram from an unnamed Unix
 * socket, addrlen may be 0 or name only the family); error_received for
 * an error of a send or a receive that does not end the endpoint (an
 * ICMP error such as -ECONNREFUSED on a connected socket, a datagram
 * larger than the receive slot: -EMSGSIZE); pause_writing/resume_writing
 * as the write buffer crosses its limits; connection_lost exactly once,
 * last (0 for a close or an abort, else the error that ended it).  Any
 * member may be NULL.  `arg` is the transport's user pointer.
 *
 * The table can grow: its first member, size, must be
 * sizeof(aw_datagram_protocol) as the program saw it
 * (AW_DATAGRAM_PROTOCOL_SIZE); a size smaller than the first version's
 * (up to connection_lost) or larger than the library's is -EINVAL.
 *
 *     static const aw_datagram_protocol p = {AW_DATAGRAM_PROTOCOL_SIZE,
 *                                            made, received, error, lost};
 */
typedef struct aw_datagram_protocol {
    size_t size; /* sizeof(aw_datagram_protocol) */
    void (*connection_made)(aw_datagram_transport *t, void *arg);
    /* data and addr are lent for the call. */
    void (*datagram_received)(aw_datagram_transport *t, const void *data,
                              size_t len, const struct sockaddr *addr,
                              socklen_t addrlen, void *arg);
    void (*error_received)(aw_datagram_transport *t, int error, void *arg);
    void (*connection_lost)(aw_datagram_transport *t, int error, void *arg);
    void (*pause_writing)(aw_datagram_transport *t, void *arg);
    void (*resume_writing)(aw_datagram_transport *t, void *arg);
} aw_datagram_protocol;

#define AW_DATAGRAM_PROTOCOL_SIZE sizeof(aw_datagram_protocol)

/*
 * Flags of aw_create_datagram_endpoint (0 for none).  AW_DATAGRAM_REUSE_PORT
 * sets SO_REUSEPORT before binding (asyncio's reuse_port);
 * AW_DATAGRAM_BROADCAST sets SO_BROADCAST (allow_broadcast);
 * AW_DATAGRAM_V6ONLY sets IPV6_V6ONLY on an IPv6 socket (an IPv4 one
 * ignores it: the flag is about the IPv6 family).  An unknown flag is
 * -EINVAL; an option the system refuses fails the call with its error.
 */
enum aw_datagram_flags {
    AW_DATAGRAM_REUSE_PORT = 1,
    AW_DATAGRAM_BROADCAST = 2,
    AW_DATAGRAM_V6ONLY = 4
};

/*
 * aw_create_datagram_endpoint - a UDP endpoint (asyncio's
 * create_datagram_endpoint): bound to local_host:local_port when
 * local_host is not NULL (port 0: one the system picks; "0.0.0.0" or
 * "::" for every address), connected to remote_host:remote_port when
 * remote_host is not NULL (then sendto takes no address, and only that
 * peer's datagrams arrive); at least one of the two.  Names are
 * resolved by the loop's resolver (aw_set_resolver); literals need no
 * lookup.  With both, the first local address whose family has a
 * remote address is used.  proto NULL makes an endpoint for tasks:
 * datagrams wait for aw_datagram_recv (see below).  The future's result
 * is the transport (a reference owned by the future: take it to keep
 * it); connection_made runs before the future settles.  It fails with
 * -EINVAL (bad arguments, or a family mismatch), an AW_EAI_* code with
 * the resolver's message, or the system's error (-EADDRINUSE, ...).
 * Cancelling the future abandons the endpoint.  NULL only for a NULL or
 * closed loop.
 */
AW_EXTERN aw_future *aw_create_datagram_endpoint(
    aw_loop *loop, const char *local_host, int local_port,
    const char *remote_host, int remote_port,
    const aw_datagram_protocol *proto, void *arg, int flags);

/*
 * aw_create_unix_datagram_endpoint - the same on a Unix datagram socket
 * bound to local_path and/or connected to remote_path (at least one; an
 * existing socket file at local_path is replaced, not another file).
 */
AW_EXTERN aw_future *aw_create_unix_datagram_endpoint(
    aw_loop *loop, const char *local_path, const char *remote_path,
    const aw_datagram_protocol *proto, void *arg);

/*
 * aw_create_datagram_endpoint_sock - an endpoint on a datagram socket the
 * program already has (asyncio's sock=), bound, connected or neither (a
 * socketpair(AF_UNIX, SOCK_DGRAM) end): the transport takes it over (made
 * non-blocking, closed with the transport) once the future succeeded; on
 * failure the caller keeps it.  -EINVAL for a negative fd or a socket
 * that is not SOCK_DGRAM; -ENOTSOCK.
 */
AW_EXTERN aw_future *aw_create_datagram_endpoint_sock(
    aw_loop *loop, int fd, const aw_datagram_protocol *proto, void *arg);

/*
 * aw_datagram_sendto - send one datagram of len bytes (0 allowed) to
 * addr, or to the connected peer when addr is NULL (asyncio's sendto);
 * never blocks: what the kernel does not take at once is queued whole
 * (copied), in order, and sent when the socket is writable (sendmmsg()
 * on Linux).  An error of the send itself (-ECONNREFUSED from an earlier
 * ICMP error, -EMSGSIZE, -ENETUNREACH, ...) is not this call's: it goes
 * to error_received from the loop, as asyncio does, and the datagram is
 * dropped.  0; -EINVAL (NULL data with len > 0; no addr on an endpoint
 * that is not connected; on a connected one, an addr that is not its
 * peer's, as asyncio refuses); AW_ECLOSED once closing; -ENOMEM.
 */
AW_EXTERN int aw_datagram_sendto(aw_datagram_transport *t, const void *data,
                                 size_t len, const struct sockaddr *addr,
                                 socklen_t addrlen);

/* aw_datagram_close - stop receiving, send what is queued, then close;
 * connection_lost(0) follows.  A second call is a no-op.  0 or -EINVAL. */
AW_EXTERN int aw_datagram_close(aw_datagram_transport *t);

/* aw_datagram_abort - close at once, dropping the queue;
 * connection_lost(0) follows.  0 or -EINVAL. */
AW_EXTERN int aw_datagram_abort(aw_datagram_transport *t);

/* aw_datagram_is_closing - 1 once close, abort or the loss began. */
AW_EXTERN int aw_datagram_is_closing(const aw_datagram_transport *t);

/* aw_datagram_write_buffer_size - bytes of the datagrams queued, not yet
 * sent (asyncio's get_write_buffer_size). */
AW_EXTERN size_t aw_datagram_write_buffer_size(
    const aw_datagram_transport *t);

/* aw_datagram_set_write_buffer_limits - pause_writing when the queue grows
 * over high bytes, resume_writing when it drains to low or less.  high ==
 * 0 picks 64 KiB; low > high is -EINVAL.  Defaults 64 KiB and 16 KiB. */
AW_EXTERN int aw_datagram_set_write_buffer_limits(aw_datagram_transport *t,
                                                  size_t high, size_t low);

/* aw_datagram_sockname / _peername - the addresses: 0 with *len set;
 * -EINVAL; AW_ECLOSED; an -errno from the system (-ENOTCONN for the peer
 * of an unconnected endpoint). */
AW_EXTERN int aw_datagram_sockname(const aw_datagram_transport *t,
                                   struct sockaddr *addr, socklen_t *len);
AW_EXTERN int aw_datagram_peername(const aw_datagram_transport *t,
                                   struct sockaddr *addr, socklen_t *len);

/*
 * aw_datagram_join_group / aw_datagram_leave_group - multicast membership
 * (IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP and their drops): group is a
 * literal multicast address of the socket's family; iface NULL for the
 * system's choice, else for IPv4 the literal address of the interface
 * ("127.0.0.1") and for IPv6 an interface name ("lo").  0; -EINVAL (not a
 * multicast literal of the right family, an unknown interface, a Unix
 * endpoint); AW_ECLOSED; an -errno from the system (-EADDRNOTAVAIL when
 * leaving a group not joined).
 */
AW_EXTERN int aw_datagram_join_group(aw_datagram_transport *t,
                                     const char *group, const char *iface);
AW_EXTERN int aw_datagram_leave_group(aw_datagram_transport *t,
                                      const char *group, const char *iface);

/* aw_datagram_set_broadcast - SO_BROADCAST on (enable != 0) or off.  0;
 * -EINVAL; AW_ECLOSED; -EOPNOTSUPP on a Unix endpoint; an -errno. */
AW_EXTERN int aw_datagram_set_broadcast(aw_datagram_transport *t,
                                        int enable);

/* aw_datagram_fd - the socket, or -1 once closed. */
AW_EXTERN int aw_datagram_fd(const aw_datagram_transport *t);

/* aw_datagram_set_user / aw_datagram_user - the protocol's arg. */
AW_EXTERN void aw_datagram_set_user(aw_datagram_transport *t, void *user);
AW_EXTERN void *aw_datagram_user(const aw_datagram_transport *t);

/* aw_datagram_loop - the endpoint's loop (borrowed), NULL for NULL. */
AW_EXTERN aw_loop *aw_datagram_loop(const aw_datagram_transport *t);

/* aw_datagram_ref / _unref - a transport lives until connection_lost was
 * delivered and the last reference went.  unref accepts NULL. */
AW_EXTERN aw_datagram_transport *aw_datagram_ref(aw_datagram_transport *t);
AW_EXTERN void aw_datagram_unref(aw_datagram_transport *t);

/* ---- the awaitable form ---------------------------------------------------- */

/*
 * aw_datagram_recv - a future for the next datagram of an endpoint made
 * with a NULL protocol (asyncio's sock_recvfrom, on the transport).  Its
 * result is an aw_datagram (owned by the future; take it with
 * aw_future_take_result or AW_AWAIT_TAKE and free it with
 * aw_datagram_free).  Datagrams wait in order, up to 256 of them; while
 * that many wait, the socket is not read (the kernel drops the surplus,
 * as UDP does).  Several futures may wait: first come, first served.
 * An error of a receive or a send (-ECONNREFUSED, ...) fails the next
 * waiting future, or the next one asked for, in its place among the
 * datagrams; so does -ENOMEM for a datagram that could not be kept.  Once the endpoint is
 * closing, the future fails with AW_ECLOSED.  A future cancelled loses
 * no datagram.  NULL for a NULL transport; a failed future with -EINVAL
 * for an endpoint that has a protocol.
 */
AW_EXTERN aw_future *aw_datagram_recv(aw_datagram_transport *t);

/*
 * aw_datagram_send - aw_datagram_sendto as a future: done (result 0)
 * when the datagram was handed to the kernel, or was queued and the
 * queue is at or under its high mark; else once the queue drained to its
 * low mark (asyncio's drain).  Fails with the error aw_datagram_sendto
 * returns; an error of the send itself goes to error_received (or, for
 * an endpoint without a protocol, to the next aw_datagram_recv).
 */
AW_EXTERN aw_future *aw_datagram_send(aw_datagram_transport *t,
                                      const void *data, size_t len,
                                      const struct sockaddr *addr,
                                      socklen_t addrlen);

/* aw_datagram_data / _len / _addr - a received datagram's bytes and its
 * source address (*addrlen set when not NULL), lent while d lives.
 * aw_datagram_free accepts NULL. */
AW_EXTERN const void *aw_datagram_data(const aw_datagram *d);
AW_EXTERN size_t aw_datagram_len(const aw_datagram *d);
AW_EXTERN const struct sockaddr *aw_datagram_addr(const aw_datagram *d,
                                                  socklen_t *addrlen);
AW_EXTERN void aw_datagram_free(aw_datagram *d);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_UDP_H */

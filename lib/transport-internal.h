/* SPDX-License-Identifier: MIT */
/* transport-internal.h: what stream.c shares with transport.c.  Never
 * installed. */
#ifndef AWAIT_TRANSPORT_INTERNAL_H
#define AWAIT_TRANSPORT_INTERNAL_H

#include "await/transport.h"

struct evdns_base;

/* The loop's asynchronous resolver, created on first use and freed when
 * the loop closes; NULL out of memory. */
struct evdns_base *aw__loop_dns(aw_loop *loop);

/* getaddrinfo as the loop is set to (aw_set_resolver): the system's
 * getaddrinfo(3) in the loop's default executor, or libevent's evdns.
 * Like evdns_getaddrinfo(): cb(result, res, arg) comes once, with res
 * (the callback's: evutil_freeaddrinfo) or an EVUTIL_EAI_* result (errno
 * set for EVUTIL_EAI_SYSTEM), maybe inside this call (a literal or no
 * node: answered at once, never blocking and without the evdns base;
 * evdns answers names from the hosts file at once too): then the return
 * is NULL.  aw__getaddrinfo_cancel: the callback still comes, later, with
 * EVUTIL_EAI_CANCEL. */
struct evutil_addrinfo;
struct aw__gai;
typedef void (*aw__gai_fn)(int result, struct evutil_addrinfo *res,
                           void *arg);
struct aw__gai *aw__getaddrinfo(aw_loop *loop, const char *node,
                                const char *service,
                                const struct evutil_addrinfo *hints,
                                aw__gai_fn cb, void *arg);
void aw__getaddrinfo_cancel(struct aw__gai *req);

/* writev() where there is no MSG_NOSIGNAL (a pipe): a reader gone is
 * -1 with errno EPIPE, never a SIGPIPE, and the process's dispositions
 * stay as they are (the signal is blocked in this thread for the call and
 * taken back if the call raised it). */
struct iovec;
ssize_t aw__quiet_writev(int fd, const struct iovec *iov, int n);

/* The library's code for a getaddrinfo/evdns failure (EVUTIL_EAI_*):
 * an AW_EAI_* code, -ENOMEM, -sys_errno for EAI_SYSTEM, AW_ECANCELLED for
 * a cancelled request; 0 for 0. */
int aw__gai_error(int eai, int sys_errno);

/* aw_create_server / aw_create_unix_server (path not NULL) whose server
 * calls arg_destroy(arg) when freed (on failure, at once). */
aw_future *aw__create_server(aw_loop *loop, const char *host, int port,
                             const char *path, const aw_protocol *proto,
                             void *arg, aw_destroy_fn arg_destroy, int flags,
                             int backlog);

/* Deliver what arrives as the transport's own input buffer rather than
 * through data_received: the sink moves it (evbuffer_add_buffer, no
 * copy) and must leave `in` empty, or abort the transport.  Called from
 * the loop only, while the transport is open and reading. */
struct evbuffer;
typedef void (*aw__buffer_sink_fn)(aw_transport *t, struct evbuffer *in,
                                   void *arg);
void aw__transport_set_sink(aw_transport *t, aw__buffer_sink_fn sink);
/* Give back bytes the protocol was given and did not use, to be delivered
 * again before anything read after them, from the loop (never inside this
 * call; held while reading is paused).  b is emptied: its chains move.
 * 0, -ENOMEM (b left as it was). */
int aw__transport_unread(aw_transport *t, struct evbuffer *b);
/* Reads offer a power of two less a chain header, not the power of two:
 * for a sink that frees each chain as soon as it is read, whose unused
 * room would be wasted (lib/transport.c, CHAIN_SLACK). */
void aw__transport_set_exact_reads(aw_transport *t, int on);

/* addr as text: "127.0.0.1:80", "[::1]:80", a Unix path ("" unnamed,
 * "@name" abstract).  Its length, -ENOSPC, -EAFNOSUPPORT. */
int aw__addr_text(const struct sockaddr *sa, socklen_t salen, char *buf,
                  size_t len);

/* The loop's close names what is still alive: the networking census
 * (transports, then udp.c's endpoints through aw__datagram_census) is on
 * once one such object was made. */
void aw__net_census_on(aw_loop *loop);
void aw__datagram_census(aw_loop *loop);

/* aw_create_server_sock whose server calls arg_destroy(arg) when freed
 * (on failure, at once). */
aw_future *aw__create_server_sock(aw_loop *loop, int fd,
                                  const aw_protocol *proto, void *arg,
                                  aw_destroy_fn arg_destroy, int backlog);

/* A pipe transport without a future, for modules that make their own
 * pipes (subprocesses): readable != 0 for a read end (as
 * aw_connect_read_pipe), 0 for a write end (as aw_connect_write_pipe).
 * 0 with *tp a reference for the caller (aw_transport_unref), the
 * transport holding its own until connection_lost; connection_made comes
 * from the loop.  A transport closed before that is lost without either
 * callback.  On an error (-EINVAL, -EBADF, -EMFILE, -ENOMEM, AW_ECLOSED)
 * fd is still the caller's. */
int aw__transport_from_pipe(aw_loop *loop, int fd, int readable,
                            const aw_protocol *proto, void *arg,
                            aw_transport **tp);

/* A protocol table the library accepts (its size, a buffered one's
 * pair): 1 or 0. */
int aw__protocol_ok(const aw_protocol *proto);

/* ---- layers: a transport carried by another (TLS, lib/tls.c) ---- */

/* What the face of a layer asks of the layer; each gets the layer
 * pointer given to aw__transport_layered.  write: the face is open and
 * len > 0; the result is aw_transport_write's.  close: the face began
 * closing (aw_transport_close); the layer flushes, ends its side and
 * calls aw__transport_lose(face, ...) when done.  lost: the face was
 * lost (abort, an error, cancellation), from inside lose(): drop
 * everything, end the connection below, call back nothing.  reading:
 * whether the face's protocol wants data.  pending: bytes written and
 * not yet sent.  lower: the connection below (addresses, options).
 * release: the face is being freed. */
struct aw__layer_ops {
    int (*write)(void *layer, const void *data, size_t len);
    void (*close)(void *layer);
    void (*lost)(void *layer, int error);
    void (*reading)(void *layer, int on);
    size_t (*pending)(const void *layer);
    aw_transport *(*lower)(const void *layer);
    void (*release)(void *layer);
};

/* The face: a transport in the connecting state, counted and named like
 * the others, that owns no socket.  NULL out of memory. */
aw_transport *aw__transport_layered(aw_loop *loop, const aw_protocol *proto,
                                    void *user,
                                    const struct aw__layer_ops *ops,
                                    void *layer);
/* The layer of a face made with ops, else NULL. */
void *aw__transport_layer(const aw_transport *t,
                          const struct aw__layer_ops *ops);
/* The layer is ready: the face opens (connection_made, now: call it from
 * a loop callback). */
void aw__transport_open(aw_transport *t);
/* The face's input buffer: the layer adds what it decoded, then calls
 * aw__transport_deliver (data_received, the sink or a buffered
 * protocol's buffers, as the face's reading allows). */
struct evbuffer *aw__transport_inbuf(aw_transport *t);
void aw__transport_deliver(aw_transport *t);
/* The peer ended its side cleanly: eof_received once what came before it
 * was delivered (then the face closes: no half-close). */
void aw__transport_eof(aw_transport *t);
/* The face is lost with error: connection_lost(error) if it was made. */
void aw__transport_lose(aw_transport *t, int error);
/* Compare what is pending with the face's write-buffer limits and tell
 * its protocol pause_writing/resume_writing when it crosses them. */
void aw__transport_check_writing(aw_transport *t);
/* Write what buf holds to the open connection t: to the socket at once
 * as far as the kernel takes it, the rest moved (not copied) to its
 * queue; buf is left empty.  0 (a failure of the socket loses t, and
 * connection_lost tells); AW_ECLOSED or t's error when it is not open;
 * -ENOMEM. */
int aw__transport_send_buffer(aw_transport *t, struct evbuffer *buf);
/* 1 for an open connection (not a pipe, not a face) whose both
 * directions are still open. */
int aw__transport_is_open_conn(const aw_transport *t);
/* Give t another protocol (start_tls): what it has read and not
 * delivered goes to the new one; the sink is removed. */
void aw__transport_set_protocol(aw_transport *t, const aw_protocol *proto,
                                void *user);
const aw_protocol *aw__transport_protocol(const aw_transport *t);

#endif /* AWAIT_TRANSPORT_INTERNAL_H */

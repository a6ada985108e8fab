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

#endif /* AWAIT_TRANSPORT_INTERNAL_H */

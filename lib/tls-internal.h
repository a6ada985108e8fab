/* SPDX-License-Identifier: MIT */
/* tls-internal.h: what stream.c asks of tls.c.  Never installed. */
#ifndef AWAIT_TLS_INTERNAL_H
#define AWAIT_TLS_INTERNAL_H

#include "await/tls.h"

/* aw_create_server_tls and its Unix (path not NULL) and socket (fd >= 0)
 * forms, whose server calls arg_destroy(arg) when freed (on failure, at
 * once). */
aw_future *aw__tls_create_server(aw_loop *loop, const char *host, int port,
                                 const char *path, int fd,
                                 aw_tls_context *ctx,
                                 const aw_protocol *proto, void *arg,
                                 aw_destroy_fn arg_destroy, int flags,
                                 int backlog);

/* aw_start_tls (t not NULL). */
aw_future *aw__tls_start(aw_transport *t, aw_tls_context *ctx,
                         const char *server_hostname,
                         const aw_protocol *proto, void *arg,
                         struct evbuffer *early);

#endif /* AWAIT_TLS_INTERNAL_H */

/* SPDX-License-Identifier: MIT */
/* await/tls.h: TLS over OpenSSL (asyncio's ssl= and start_tls).
 *
 * TLS is a layer between a transport and its protocol, as asyncio's
 * sslproto: OpenSSL runs over memory buffers (a BIO pair on libevent's
 * evbuffers), makes no system call of its own, and the same code serves
 * TCP and Unix sockets, clients and servers, and upgrading a connection
 * already open (aw_start_tls, aw_stream_start_tls).  The application
 * gets a transport like any other (aw_transport_write, pause/resume
 * reading, write-buffer limits and pause/resume_writing, close, abort);
 * streams get the same reads and drain.
 *
 * Verification is on by default for clients: the peer must present a
 * certificate that chains to a trusted authority (the system's store
 * unless other ones are loaded) and names the host connected to (or the
 * server_hostname given).  A server asks for no client certificate
 * unless told to. */
#ifndef AWAIT_TLS_H
#define AWAIT_TLS_H

#include <stddef.h>

#include "await/core.h"
#include "await/future.h"
#include "await/loop.h"
#include "await/stream.h"
#include "await/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Error codes of TLS connections (aw_strerror and aw_err_name name them).  A failed
 * handshake fails the connection's future with one of them and OpenSSL's
 * reason as the message ("certificate verify failed: certificate has
 * expired", "wrong version number", ...); a connection lost after the
 * handshake reports it to connection_lost (and a stream's reads fail with
 * it), its message kept for aw_tls_error_message().
 *
 * AW_ETLS_VERIFY       the peer's certificate did not verify (another
 *                      X.509 reason than the four below)
 * AW_ETLS_EXPIRED      ... it has expired (or is not valid yet)
 * AW_ETLS_HOSTNAME     ... it does not name the host
 * AW_ETLS_UNKNOWN_CA   ... it chains to no trusted authority
 * AW_ETLS_SELF_SIGNED  ... it is self-signed (or its chain's root is) and
 *                      not trusted
 * AW_ETLS_HANDSHAKE    the handshake failed otherwise: no shared protocol
 *                      or cipher, an alert from the peer, something that
 *                      is not TLS; a client certificate the server
 *                      required and did not get (under TLS 1.3 the
 *                      client's handshake ends before the server decides:
 *                      the client then sees AW_ETLS_PROTOCOL on its
 *                      first read)
 * AW_ETLS_PROTOCOL     a TLS error after the handshake (a record that
 *                      does not decrypt, an alert)
 * AW_ETLS_TRUNCATED    the peer closed the connection without
 *                      close_notify: what came may be cut short (never
 *                      reported as a clean end of file)
 */
/* (The codes are in <await/core.h>'s enum aw_errno.) */

/* aw_tls_is_verify_error - 1 for the five certificate codes above. */
AW_EXTERN int aw_tls_is_verify_error(int code);

/* ---- contexts ----------------------------------------------------------------------- */

/*
 * A context holds what connections share: the side, certificates and
 * keys, what is trusted, the verification mode, protocol versions,
 * ciphers, ALPN, the SNI callback, the session cache (Python's
 * ssl.SSLContext).  It is reference counted: each connection holds a
 * reference, so a context may be released while connections made with it
 * go on.  A context is not tied to a loop; configure it before its first
 * connection, from one thread (OpenSSL's SSL_CTX rules), then use it from
 * any number of loops.
 */
typedef struct aw_tls_context aw_tls_context;

enum aw_tls_side { AW_TLS_CLIENT = 0, AW_TLS_SERVER = 1 };

/* Verification modes (Python's CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED). */
enum aw_tls_verify {
    AW_TLS_VERIFY_NONE = 0,     /* no check (a client: anyone is accepted) */
    AW_TLS_VERIFY_OPTIONAL = 1, /* a server: ask for a client certificate,
                                   check one that comes, go on without */
    AW_TLS_VERIFY_REQUIRED = 2  /* the peer must present a valid one */
};

/* Protocol versions, for aw_tls_context_set_min_version. */
enum aw_tls_version { AW_TLS_1_2 = 0x0303, AW_TLS_1_3 = 0x0304 };

/*
 * aw_tls_context_new - a context for one side.  A client's: verification
 * AW_TLS_VERIFY_REQUIRED with the host name checked, the system's default
 * trust store (SSL_CTX_set_default_verify_paths: what the distribution's
 * ca-certificates installs), session resumption on.  A server's:
 * AW_TLS_VERIFY_NONE (no client certificate asked for), session tickets
 * on; it needs a certificate and key before it can serve
 * (aw_tls_context_load_cert_chain).  Both: TLS 1.2 at least, OpenSSL's
 * default ciphers, compression and renegotiation off, no key log.  NULL
 * with errno set: EINVAL for another side, ENOMEM.
 */
AW_EXTERN aw_tls_context *aw_tls_context_new(int side);
AW_EXTERN aw_tls_context *aw_tls_context_ref(aw_tls_context *ctx);
/* aw_tls_context_unref - accepts NULL. */
AW_EXTERN void aw_tls_context_unref(aw_tls_context *ctx);
AW_EXTERN int aw_tls_context_side(const aw_tls_context *ctx);

/*
 * Every setter below returns 0; -EINVAL for a NULL context or a bad
 * argument, also for what OpenSSL refuses (a file that does not parse, a
 * key that does not match its certificate), with OpenSSL's reason in
 * aw_tls_context_error(); a file that cannot be opened is its -errno
 * (-ENOENT, -EACCES); -ENOMEM.  On an error the context is as it was.
 *
 * aw_tls_context_load_cert_chain - the certificate (then its chain, in
 * order) and the private key, PEM files; keyfile NULL: the key is in
 * certfile.  The key must match the certificate.
 * aw_tls_context_load_cert_chain_mem - the same from PEM text in memory.
 */
AW_EXTERN int aw_tls_context_load_cert_chain(aw_tls_context *ctx,
                                             const char *certfile,
                                             const char *keyfile);
AW_EXTERN int aw_tls_context_load_cert_chain_mem(aw_tls_context *ctx,
                                                 const char *cert_pem,
                                                 size_t cert_len,
                                                 const char *key_pem,
                                                 size_t key_len);

/*
 * aw_tls_context_load_verify_locations - trust the authorities in cafile
 * (PEM, several certificates) and/or capath (a directory hashed by
 * c_rehash / openssl rehash); one may be NULL, not both.  Added to what
 * is trusted already.  Trusting a self-signed certificate this way is how
 * a client accepts it.
 * aw_tls_context_load_verify_mem - the same from PEM text.
 * aw_tls_context_set_default_verify_paths - the system's store (a
 * client context has it from the start).
 */
AW_EXTERN int aw_tls_context_load_verify_locations(aw_tls_context *ctx,
                                                   const char *cafile,
                                                   const char *capath);
AW_EXTERN int aw_tls_context_load_verify_mem(aw_tls_context *ctx,
                                             const char *pem, size_t len);
AW_EXTERN int aw_tls_context_set_default_verify_paths(aw_tls_context *ctx);

/*
 * aw_tls_context_set_verify - the verification mode (enum aw_tls_verify).
 * A server asks for a client certificate under OPTIONAL and REQUIRED
 * (REQUIRED refuses a client without one: AW_ETLS_HANDSHAKE).  A client
 * under NONE accepts any certificate and checks no host name (setting
 * NONE turns the host name check off; Python refuses CERT_NONE while
 * check_hostname is on).
 * aw_tls_context_set_check_hostname - a client checks that the
 * certificate names the host (on by default; Python's check_hostname).
 * Turning it on while the mode is NONE is -EINVAL, as in Python.
 */
AW_EXTERN int aw_tls_context_set_verify(aw_tls_context *ctx, int mode);
AW_EXTERN int aw_tls_context_get_verify(const aw_tls_context *ctx);
AW_EXTERN int aw_tls_context_set_check_hostname(aw_tls_context *ctx,
                                                int check);

/* aw_tls_context_set_min_version / _set_max_version - AW_TLS_1_2 or
 * AW_TLS_1_3 (0 for max: the newest OpenSSL has).  min > max is
 * -EINVAL. */
AW_EXTERN int aw_tls_context_set_min_version(aw_tls_context *ctx,
                                             int version);
AW_EXTERN int aw_tls_context_set_max_version(aw_tls_context *ctx,
                                             int version);

/*
 * aw_tls_context_set_ciphers - the TLS 1.2 cipher list, OpenSSL's syntax
 * ("ECDHE+AESGCM:!aNULL"); aw_tls_context_set_ciphersuites - the TLS 1.3
 * suites ("TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256").  A list
 * that selects nothing is -EINVAL.
 */
AW_EXTERN int aw_tls_context_set_ciphers(aw_tls_context *ctx,
                                         const char *list);
AW_EXTERN int aw_tls_context_set_ciphersuites(aw_tls_context *ctx,
                                              const char *suites);

/*
 * aw_tls_context_set_alpn - the application protocols, in order of
 * preference ("h2", "http/1.1"; each 1 to 255 bytes; n == 0 clears).  A
 * client offers them; a server picks the first of its own the client
 * offered, and when there is none in common goes on without one (as
 * Python does: the application decides; aw_tls_alpn() is then NULL).
 */
AW_EXTERN int aw_tls_context_set_alpn(aw_tls_context *ctx,
                                      const char *const *protocols,
                                      size_t n);

/*
 * aw_tls_context_set_sni_callback - a server's choice of context by the
 * name the client asks for (Python's sni_callback): fn(name, arg) is
 * called during the handshake (name NULL when the client sent none) and
 * returns the context to use (borrowed: it must stay alive while the
 * callback can be called; its certificate, key, verification and ALPN
 * apply), or NULL to go on with this one.  fn NULL removes it.
 */
typedef aw_tls_context *(*aw_tls_sni_fn)(const char *name, void *arg);
AW_EXTERN int aw_tls_context_set_sni_callback(aw_tls_context *ctx,
                                              aw_tls_sni_fn fn, void *arg);

/*
 * aw_tls_context_set_session_cache - session resumption (on by default).
 * A client keeps the last session of each server (by server_hostname and
 * port, or the Unix path) and offers it on the next connection to the
 * same one; a server issues session tickets (TLS 1.3 and 1.2).  enable 0
 * turns both off.  aw_tls_session_reused() says whether a connection
 * resumed.
 */
AW_EXTERN int aw_tls_context_set_session_cache(aw_tls_context *ctx,
                                               int enable);

/*
 * aw_tls_context_set_keylog_file - append each connection's secrets to
 * path in the NSS key-log format (the SSLKEYLOGFILE convention, what
 * Wireshark reads), for debugging only: whoever reads the file can
 * decrypt the traffic.  Off by default; NULL turns it off.  The file is
 * opened (created 0600) by this call: its -errno on failure.
 * aw_tls_context_keylog_from_env - the same with $SSLKEYLOGFILE when it
 * is set and not empty (1), nothing otherwise (0).
 */
AW_EXTERN int aw_tls_context_set_keylog_file(aw_tls_context *ctx,
                                             const char *path);
AW_EXTERN int aw_tls_context_keylog_from_env(aw_tls_context *ctx);

/*
 * aw_tls_context_set_timeouts - the handshake timeout (asyncio's
 * ssl_handshake_timeout, 60 s by default) and the shutdown timeout
 * (ssl_shutdown_timeout, 30 s): how long a close waits for the peer's
 * close_notify before closing anyway.  Seconds, > 0 (AW_NO_TIMEOUT for
 * none); 0 keeps the value.  NaN or a negative value is -EINVAL.
 * A handshake that times out fails with AW_ETIMEDOUT.
 */
AW_EXTERN int aw_tls_context_set_timeouts(aw_tls_context *ctx,
                                          double handshake, double shutdown);

/* aw_tls_context_error - the reason OpenSSL gave for the context's last
 * failed setter ("" when none yet; a setter that succeeds may leave it);
 * owned by the context, valid until its next setter call. */
AW_EXTERN const char *aw_tls_context_error(const aw_tls_context *ctx);

/* aw_tls_context_native - OpenSSL's SSL_CTX *, for what this header does
 * not cover (OCSP stapling, engines).  Still the context's: do not free
 * it. */
AW_EXTERN void *aw_tls_context_native(aw_tls_context *ctx);

/* ---- connections ----------------------------------------------------------------- */

/*
 * aw_create_connection_tls - aw_create_connection, then a TLS handshake
 * as a client of ctx; the future's result is the transport once the
 * handshake succeeded (connection_made is called then, not before).
 * server_hostname is the name sent (SNI) and checked against the
 * certificate; NULL means host (an IP address is checked against the
 * certificate's IP entries and not sent as SNI).  Errors: those of
 * aw_create_connection, the AW_ETLS_* codes, AW_ETIMEDOUT for the
 * handshake timeout, -EINVAL for a server context.  Cancelling the future
 * abandons the connection at any stage.
 * aw_create_unix_connection_tls - the same over a Unix socket at path;
 * server_hostname may be NULL only with verification off or the host
 * name check off.
 */
AW_EXTERN aw_future *aw_create_connection_tls(aw_loop *loop, const char *host,
                                              int port, aw_tls_context *ctx,
                                              const char *server_hostname,
                                              const aw_protocol *proto,
                                              void *arg);
AW_EXTERN aw_future *aw_create_unix_connection_tls(
    aw_loop *loop, const char *path, aw_tls_context *ctx,
    const char *server_hostname, const aw_protocol *proto, void *arg);

/*
 * aw_create_server_tls - aw_create_server whose connections are TLS, as
 * the server of ctx (it must hold a certificate and key: -EINVAL
 * otherwise, also for a client context).  Each accepted connection
 * handshakes first; connection_made comes after a handshake that
 * succeeded.  A handshake that fails or times out closes the connection
 * quietly (as asyncio's servers, which log it at debug level only): a
 * port scanner or a client that distrusts the certificate is no error of
 * the server's.
 * aw_create_unix_server_tls, aw_create_server_sock_tls - the same for
 * aw_create_unix_server and aw_create_server_sock.
 */
AW_EXTERN aw_future *aw_create_server_tls(aw_loop *loop, const char *host,
                                          int port, aw_tls_context *ctx,
                                          const aw_protocol *proto, void *arg,
                                          int flags, int backlog);
AW_EXTERN aw_future *aw_create_unix_server_tls(aw_loop *loop,
                                               const char *path,
                                               aw_tls_context *ctx,
                                               const aw_protocol *proto,
                                               void *arg, int backlog);
AW_EXTERN aw_future *aw_create_server_sock_tls(aw_loop *loop, int fd,
                                               aw_tls_context *ctx,
                                               const aw_protocol *proto,
                                               void *arg, int backlog);

/*
 * aw_start_tls - upgrade an open transport to TLS (asyncio's
 * loop.start_tls): the handshake runs over it as ctx's side says, and
 * the future's result is a new transport that carries proto (with arg)
 * over TLS.  From this call on, t belongs to the TLS layer: do not write
 * to it or close it (the new transport's close and abort close it); its
 * protocol hears nothing more, not even connection_lost.  Bytes t had
 * read and not delivered yet go to the handshake.  Errors as
 * aw_create_connection_tls; -EINVAL for a transport that is not an open
 * connection (a pipe, one closing, one already TLS); on those t is left
 * as it was.
 */
AW_EXTERN aw_future *aw_start_tls(aw_transport *t, aw_tls_context *ctx,
                                  const char *server_hostname,
                                  const aw_protocol *proto, void *arg);

/* ---- streams ------------------------------------------------------------------------ */

/*
 * aw_open_connection_tls, aw_open_unix_connection_tls - aw_open_connection
 * over TLS: the future's result is the stream after the handshake.
 * aw_start_server_tls, aw_start_unix_server_tls, aw_start_server_sock_tls
 * - aw_start_server over TLS: on_client gets each stream after its
 * handshake.  Arguments and errors as the transport calls above.
 *
 * aw_stream_start_tls - upgrade the stream's connection in place
 * (asyncio's StreamWriter.start_tls, after a STARTTLS exchange): the
 * future is done (result NULL) once the handshake succeeded, and the
 * stream then reads and writes through TLS; it fails as
 * aw_create_connection_tls, and the stream is then lost with that error.
 * What the stream had buffered and not read (a read's result dropped
 * unread included) goes to the handshake: it came after the exchange
 * that led to the upgrade, so it is the peer's first TLS bytes (a
 * ClientHello sent without waiting for the go-ahead), and plain text
 * sent there fails the handshake (AW_ETLS_HANDSHAKE) instead of being
 * read later as if it had come over TLS.  asyncio leaves it in the
 * reader's buffer.  While the handshake runs, writes are AW_EBUSY and
 * reads wait.  -EINVAL for a stream that is closing, already TLS, not a
 * socket, or whose peer has ended its side (no handshake could follow).
 */
AW_EXTERN aw_future *aw_open_connection_tls(aw_loop *loop, const char *host,
                                            int port, aw_tls_context *ctx,
                                            const char *server_hostname);
AW_EXTERN aw_future *aw_open_unix_connection_tls(aw_loop *loop,
                                                 const char *path,
                                                 aw_tls_context *ctx,
                                                 const char *server_hostname);
AW_EXTERN aw_future *aw_start_server_tls(aw_loop *loop, const char *host,
                                         int port, aw_tls_context *ctx,
                                         aw_client_fn on_client, void *arg,
                                         int flags, int backlog);
AW_EXTERN aw_future *aw_start_unix_server_tls(aw_loop *loop, const char *path,
                                              aw_tls_context *ctx,
                                              aw_client_fn on_client,
                                              void *arg, int backlog);
AW_EXTERN aw_future *aw_start_server_sock_tls(aw_loop *loop, int fd,
                                              aw_tls_context *ctx,
                                              aw_client_fn on_client,
                                              void *arg, int backlog);
AW_EXTERN aw_future *aw_stream_start_tls(aw_stream *s, aw_tls_context *ctx,
                                         const char *server_hostname);

/* ---- what was negotiated ------------------------------------------------------- */

/*
 * The extra information of a TLS transport once its handshake is done
 * (asyncio's get_extra_info('ssl_object'), 'cipher', 'peercert'); for a
 * stream, pass aw_stream_transport(s).  Strings are the transport's,
 * valid while it is.
 *
 * aw_tls_is_tls - 1 for a TLS transport, 0 otherwise.
 * aw_tls_version - "TLSv1.3", "TLSv1.2"; NULL when not TLS.
 * aw_tls_version_number - AW_TLS_1_3, AW_TLS_1_2; 0 when not TLS.
 * aw_tls_cipher - the cipher's OpenSSL name ("TLS_AES_128_GCM_SHA256").
 * aw_tls_alpn - the application protocol agreed on, or NULL.
 * aw_tls_server_name - the name the client asked for (SNI): on a server,
 *   what came; on a client, what it sent; NULL when none.
 * aw_tls_session_reused - 1 when the handshake resumed a session.
 * aw_tls_peer_verified - 1 when the peer presented a certificate and it
 *   verified (on a server without client certificates, 0).
 * aw_tls_peer_subject / aw_tls_peer_issuer - the peer's certificate's
 *   names, one line (OpenSSL's RFC 2253 form: "CN=example.com,O=Example"),
 *   into buf (len bytes, NUL included): the length; -ENOENT when the peer
 *   presented none; -ENOSPC when it does not fit (buf is then ""); -EINVAL.
 * aw_tls_peer_certificate_der - the peer's certificate in DER into buf:
 *   its length (also when buf is NULL or len too small, nothing copied:
 *   ask for the size first); -ENOENT; -EINVAL.
 * aw_tls_error_message - the reason of the error the connection was lost
 *   with, as OpenSSL gave it, or NULL.
 * aw_tls_native - OpenSSL's SSL * (the transport's: do not free it), NULL
 *   when not TLS.
 */
AW_EXTERN int aw_tls_is_tls(const aw_transport *t);
AW_EXTERN const char *aw_tls_version(const aw_transport *t);
AW_EXTERN int aw_tls_version_number(const aw_transport *t);
AW_EXTERN const char *aw_tls_cipher(const aw_transport *t);
AW_EXTERN const char *aw_tls_alpn(const aw_transport *t);
AW_EXTERN const char *aw_tls_server_name(const aw_transport *t);
AW_EXTERN int aw_tls_session_reused(const aw_transport *t);
AW_EXTERN int aw_tls_peer_verified(const aw_transport *t);
AW_EXTERN int aw_tls_peer_subject(const aw_transport *t, char *buf,
                                  size_t len);
AW_EXTERN int aw_tls_peer_issuer(const aw_transport *t, char *buf,
                                 size_t len);
AW_EXTERN int aw_tls_peer_certificate_der(const aw_transport *t,
                                          unsigned char *buf, size_t len);
AW_EXTERN const char *aw_tls_error_message(const aw_transport *t);
AW_EXTERN void *aw_tls_native(const aw_transport *t);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_TLS_H */

/* SPDX-License-Identifier: MIT */
/* tls.c: TLS as a layer between a transport and its protocol (asyncio's
 * sslproto), over OpenSSL.
 *
 * A TLS connection is two transports and the layer between them.  The
 * connection below is an ordinary one (TCP or Unix, lib/transport.c)
 * whose protocol is the layer: what it reads moves (no copy) into the
 * layer's ciphertext buffer.  OpenSSL reads and writes only memory: two
 * BIOs over libevent evbuffers (cin: ciphertext in, cout: out), so it
 * makes no system call and the same code serves clients, servers and
 * start_tls.  The application's transport is the layer's face (a K_LAYER
 * transport of transport.c): its writes are encrypted into cout and
 * handed to the connection below, which writes them at once as far as
 * the kernel takes them; what decrypts lands in the face's input buffer
 * and is delivered as on any transport (data_received, a stream's sink,
 * a buffered protocol's buffers).
 *
 * Lifetimes: the layer is counted by its face (until the face is freed)
 * and by the connection below while the layer is that connection's
 * protocol (until its connection_lost), and by each callback it
 * schedules.  The face holds itself until its connection_lost, as every
 * transport does. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "await/tls.h"
#include "core-internal.h"
#include "future-internal.h"
#include "loop-internal.h"
#include "tls-internal.h"
#include "transport-internal.h"

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#define SSL_get1_peer_certificate SSL_get_peer_certificate
#endif

#define DEFAULT_HANDSHAKE_TIMEOUT 60.0 /* asyncio's */
#define DEFAULT_SHUTDOWN_TIMEOUT 30.0
#define READ_CHUNK 16384         /* one TLS record's plaintext at most */
#define DELIVER_EVERY (64 * 1024) /* hand over decrypted data this often */
#define SESSION_CACHE_MAX 64     /* a client's sessions kept, by server */

/* ---- OpenSSL over evbuffers ------------------------------------------------ */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *evb_method;
static int ssl_index = -1; /* SSL ex data: the layer */
static int ctx_index = -1; /* SSL_CTX ex data: the aw_tls_context */

static int
evb_write(BIO *b, const char *data, int len)
{
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    return evbuffer_add(BIO_get_data(b), data, (size_t)len) == 0 ? len : -1;
}

static int
evb_read(BIO *b, char *data, int len)
{
    int n;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    n = evbuffer_remove(BIO_get_data(b), data, (size_t)len);
    if (n <= 0) {
        BIO_set_retry_read(b); /* more will come: never an end of file */
        return -1;
    }
    return n;
}

static long
evb_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)evbuffer_get_length(BIO_get_data(b));
    default:
        return 0;
    }
}

static int
evb_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void
init_openssl(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "libawait evbuffer");

    if (m != NULL && (!BIO_meth_set_write(m, evb_write) ||
                      !BIO_meth_set_read(m, evb_read) ||
                      !BIO_meth_set_ctrl(m, evb_ctrl) ||
                      !BIO_meth_set_create(m, evb_create))) {
        BIO_meth_free(m);
        m = NULL;
    }
    evb_method = m;
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int
openssl_ready(void)
{
    pthread_once(&init_once, init_openssl);
    return evb_method != NULL && ssl_index >= 0 && ctx_index >= 0;
}

/* ---- contexts ------------------------------------------------------------------ */

struct session {
    struct session *next;
    SSL_SESSION *sess;
    char key[];
};

struct aw_tls_context {
    SSL_CTX *ctx;
    pthread_mutex_t lock; /* the session cache and the key log */
    struct session *sessions;
    size_t nsessions;
    FILE *keylog;
    unsigned char *alpn; /* wire format: length-prefixed names */
    size_t alpn_len;
    aw_tls_sni_fn sni;
    void *sni_arg;
    double hs_timeout, sd_timeout;
    int side, verify, check_hostname, cache_on, has_cert;
    int refs; /* atomic: contexts are shared between loops */
    char err[256];
};

/* OpenSSL fills a certificate's cache of its extensions (key ids, flags,
 * hash) on first use, and two threads doing that at once race on it
 * (OpenSSL issue 32609; TSan sees it in two loops' first handshakes with
 * one shared context).  A context is set up in one thread and then
 * shared, so every certificate it holds gets its cache filled while it is
 * set up.  (Certificates of a CA directory are read only when a handshake
 * needs them: those stay OpenSSL's.) */
static void
warm_cert(X509 *x)
{
    (void)X509_get_extension_flags(x);
}

static void
warm_store(aw_tls_context *c)
{
    STACK_OF(X509_OBJECT) *objs =
        X509_STORE_get0_objects(SSL_CTX_get_cert_store(c->ctx));
    X509 *x;
    int i;

    for (i = 0; i < sk_X509_OBJECT_num(objs); i++)
        if ((x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i))) != NULL)
            warm_cert(x);
}

/* The context's last error: OpenSSL's reason (its queue emptied). */
static int
ctx_fail(aw_tls_context *c, int code, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(c->err, sizeof(c->err), "%s%s%s", what, r != NULL ? ": " : "",
             r != NULL ? r : "");
    ERR_clear_error();
    return code;
}

static void
keylog_cb(const SSL *ssl, const char *line)
{
    aw_tls_context *c =
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->keylog != NULL) {
        fprintf(c->keylog, "%s\n", line);
        fflush(c->keylog);
    }
    pthread_mutex_unlock(&c->lock);
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess);
static int sni_cb(SSL *ssl, int *alert, void *arg);
static int alpn_select_cb(SSL *ssl, const unsigned char **out,
                          unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg);

static void
apply_verify(aw_tls_context *c)
{
    int mode = SSL_VERIFY_NONE;

    if (c->side == AW_TLS_CLIENT) {
        if (c->verify != AW_TLS_VERIFY_NONE)
            mode = SSL_VERIFY_PEER;
    } else if (c->verify == AW_TLS_VERIFY_OPTIONAL) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
    } else if (c->verify == AW_TLS_VERIFY_REQUIRED) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT |
               SSL_VERIFY_CLIENT_ONCE;
    }
    SSL_CTX_set_verify(c->ctx, mode, NULL);
}

static void
apply_sessions(aw_tls_context *c)
{
    if (c->side == AW_TLS_CLIENT) {
        SSL_CTX_set_session_cache_mode(
            c->ctx, c->cache_on ? SSL_SESS_CACHE_CLIENT |
                                      SSL_SESS_CACHE_NO_INTERNAL_STORE
                                : SSL_SESS_CACHE_OFF);
        if (c->cache_on)
            SSL_CTX_clear_options(c->ctx, SSL_OP_NO_TICKET);
        else
            SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET);
        return;
    }
    SSL_CTX_set_session_cache_mode(c->ctx, c->cache_on ? SSL_SESS_CACHE_SERVER
                                                       : SSL_SESS_CACHE_OFF);
    if (c->cache_on) {
        SSL_CTX_clear_options(c->ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(c->ctx, 2);
    } else {
        SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(c->ctx, 0);
    }
}

aw_tls_context *
aw_tls_context_new(int side)
{
    aw_tls_context *c;

    if (side != AW_TLS_CLIENT && side != AW_TLS_SERVER) {
        errno = EINVAL;
        return NULL;
    }
    if (!openssl_ready()) {
        errno = ENOMEM;
        return NULL;
    }
    c = aw__calloc(1, sizeof(*c));
    if (c == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    c->ctx = SSL_CTX_new(side == AW_TLS_CLIENT ? TLS_client_method()
                                               : TLS_server_method());
    if (c->ctx == NULL || pthread_mutex_init(&c->lock, NULL) != 0) {
        SSL_CTX_free(c->ctx);
        aw__free(c);
        ERR_clear_error();
        errno = ENOMEM;
        return NULL;
    }
    SSL_CTX_set_ex_data(c->ctx, ctx_index, c);
    c->side = side;
    c->refs = 1;
    c->cache_on = 1;
    c->hs_timeout = DEFAULT_HANDSHAKE_TIMEOUT;
    c->sd_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_COMPRESSION |
                                    SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their record buffers back (tls_conn_bytes);
     * writes are never retried with another buffer. */
    SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_keylog_callback(c->ctx, keylog_cb);
    if (side == AW_TLS_CLIENT) {
        c->verify = AW_TLS_VERIFY_REQUIRED;
        c->check_hostname = 1;
        SSL_CTX_sess_set_new_cb(c->ctx, new_session_cb);
        if (SSL_CTX_set_default_verify_paths(c->ctx) != 1)
            ERR_clear_error(); /* no system store: nothing is trusted */
        warm_store(c);
    } else {
        c->verify = AW_TLS_VERIFY_NONE;
        SSL_CTX_set_session_id_context(c->ctx,
                                       (const unsigned char *)"libawait", 8);
        SSL_CTX_set_tlsext_servername_callback(c->ctx, sni_cb);
        SSL_CTX_set_tlsext_servername_arg(c->ctx, c);
        SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select_cb, c);
    }
    apply_verify(c);
    apply_sessions(c);
    return c;
}

aw_tls_context *
aw_tls_context_ref(aw_tls_context *c)
{
    if (c != NULL)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

static void
sessions_clear(aw_tls_context *c)
{
    struct session *s, *next;

    for (s = c->sessions; s != NULL; s = next) {
        next = s->next;
        SSL_SESSION_free(s->sess);
        aw__free(s);
    }
    c->sessions = NULL;
    c->nsessions = 0;
}

void
aw_tls_context_unref(aw_tls_context *c)
{
    if (c == NULL || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    sessions_clear(c);
    if (c->keylog != NULL)
        fclose(c->keylog);
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->lock);
    aw__free(c->alpn);
    aw__free(c);
}

int
aw_tls_context_side(const aw_tls_context *c)
{
    return c != NULL ? c->side : -EINVAL;
}

const char *
aw_tls_context_error(const aw_tls_context *c)
{
    return c != NULL ? c->err : "";
}

void *
aw_tls_context_native(aw_tls_context *c)
{
    return c != NULL ? c->ctx : NULL;
}

/* A PEM source: a file (its -errno when it cannot be opened) or memory. */
static int
pem_bio(const char *path, const char *mem, size_t len, BIO **out)
{
    if (path != NULL) {
        FILE *f = fopen(path, "r");

        if (f == NULL)
            return -errno;
        fclose(f);
        *out = BIO_new_file(path, "r");
    } else {
        if (len > INT_MAX)
            return -EINVAL;
        *out = BIO_new_mem_buf(mem, (int)len);
    }
    return *out != NULL ? 0 : -ENOMEM;
}

static int
load_chain(aw_tls_context *c, const char *certfile, const char *keyfile,
           const char *cert_pem, size_t cert_len, const char *key_pem,
           size_t key_len)
{
    BIO *b = NULL;
    X509 *leaf = NULL, *x;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *key = NULL;
    int rc, i;

    ERR_clear_error();
    rc = pem_bio(certfile, cert_pem, cert_len, &b);
    if (rc != 0)
        return ctx_fail(c, rc, "cannot open the certificate");
    leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    if (leaf == NULL) {
        rc = ctx_fail(c, -EINVAL, "no certificate");
        goto out;
    }
    chain = sk_X509_new_null();
    if (chain == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            rc = -ENOMEM;
            goto out;
        }
    ERR_clear_error(); /* the end of the file */
    if (keyfile != NULL || key_pem != NULL || certfile != NULL) {
        BIO_free(b);
        b = NULL;
        if (keyfile != NULL || key_pem != NULL)
            rc = pem_bio(keyfile, key_pem, key_len, &b);
        else
            rc = pem_bio(certfile, NULL, 0, &b);
        if (rc != 0) {
            rc = ctx_fail(c, rc, "cannot open the key");
            goto out;
        }
    } else {
        BIO_free(b);
        b = NULL;
        rc = pem_bio(NULL, cert_pem, cert_len, &b);
        if (rc != 0)
            goto out;
    }
    key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    if (key == NULL) {
        rc = ctx_fail(c, -EINVAL, "no private key");
        goto out;
    }
    if (X509_check_private_key(leaf, key) != 1) {
        rc = ctx_fail(c, -EINVAL, "the key does not match the certificate");
        goto out;
    }
    warm_cert(leaf);
    for (i = 0; i < sk_X509_num(chain); i++)
        warm_cert(sk_X509_value(chain, i));
    if (SSL_CTX_use_certificate(c->ctx, leaf) != 1 ||
        SSL_CTX_use_PrivateKey(c->ctx, key) != 1) {
        rc = ctx_fail(c, -EINVAL, "certificate or key refused");
        goto out;
    }
    SSL_CTX_clear_chain_certs(c->ctx);
    for (i = 0; i < sk_X509_num(chain); i++)
        if (SSL_CTX_add1_chain_cert(c->ctx, sk_X509_value(chain, i)) != 1) {
            rc = ctx_fail(c, -EINVAL, "chain certificate refused");
            goto out;
        }
    c->has_cert = 1;
    c->err[0] = '\0';
    rc = 0;
out:
    BIO_free(b);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

int
aw_tls_context_load_cert_chain(aw_tls_context *c, const char *certfile,
                               const char *keyfile)
{
    if (c == NULL || certfile == NULL)
        return -EINVAL;
    return load_chain(c, certfile, keyfile, NULL, 0, NULL, 0);
}

int
aw_tls_context_load_cert_chain_mem(aw_tls_context *c, const char *cert_pem,
                                   size_t cert_len, const char *key_pem,
                                   size_t key_len)
{
    if (c == NULL || cert_pem == NULL || cert_len == 0 ||
        (key_pem == NULL && key_len > 0) ||
        (key_pem != NULL && key_len == 0))
        return -EINVAL;
    return load_chain(c, NULL, NULL, cert_pem, cert_len, key_pem, key_len);
}

int
aw_tls_context_load_verify_locations(aw_tls_context *c, const char *cafile,
                                     const char *capath)
{
    struct stat st;

    if (c == NULL || (cafile == NULL && capath == NULL))
        return -EINVAL;
    if (cafile != NULL && access(cafile, R_OK) != 0)
        return -errno;
    if (capath != NULL) {
        if (stat(capath, &st) != 0)
            return -errno;
        if (!S_ISDIR(st.st_mode))
            return -ENOTDIR;
    }
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(c->ctx, cafile, capath) != 1)
        return ctx_fail(c, -EINVAL, "cannot load the authorities");
    warm_store(c);
    c->err[0] = '\0';
    return 0;
}

int
aw_tls_context_load_verify_mem(aw_tls_context *c, const char *pem,
                               size_t len)
{
    STACK_OF(X509) *certs;
    X509_STORE *store;
    BIO *b;
    X509 *x;
    int rc = 0, i;

    if (c == NULL || pem == NULL || len == 0 || len > INT_MAX)
        return -EINVAL;
    ERR_clear_error();
    b = BIO_new_mem_buf(pem, (int)len);
    certs = sk_X509_new_null();
    if (b == NULL || certs == NULL) {
        BIO_free(b);
        sk_X509_free(certs);
        return -ENOMEM;
    }
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            rc = -ENOMEM;
            break;
        }
    ERR_clear_error();
    if (rc == 0 && sk_X509_num(certs) == 0)
        rc = ctx_fail(c, -EINVAL, "no certificate in the text");
    store = SSL_CTX_get_cert_store(c->ctx);
    for (i = 0; rc == 0 && i < sk_X509_num(certs); i++) {
        warm_cert(sk_X509_value(certs, i)); /* the store shares it */
        if (X509_STORE_add_cert(store, sk_X509_value(certs, i)) != 1) {
            /* already there is no error */
            unsigned long e = ERR_peek_last_error();

            if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE)
                rc = ctx_fail(c, -EINVAL, "certificate refused");
            ERR_clear_error();
        }
    }
    BIO_free(b);
    sk_X509_pop_free(certs, X509_free);
    if (rc == 0)
        c->err[0] = '\0';
    return rc;
}

int
aw_tls_context_set_default_verify_paths(aw_tls_context *c)
{
    if (c == NULL)
        return -EINVAL;
    ERR_clear_error();
    if (SSL_CTX_set_default_verify_paths(c->ctx) != 1)
        return ctx_fail(c, -EINVAL, "no default trust store");
    warm_store(c);
    return 0;
}

int
aw_tls_context_set_verify(aw_tls_context *c, int mode)
{
    if (c == NULL || mode < AW_TLS_VERIFY_NONE ||
        mode > AW_TLS_VERIFY_REQUIRED)
        return -EINVAL;
    if (mode == AW_TLS_VERIFY_NONE)
        c->check_hostname = 0; /* nothing to check it against */
    c->verify = mode;
    apply_verify(c);
    return 0;
}

int
aw_tls_context_get_verify(const aw_tls_context *c)
{
    return c != NULL ? c->verify : -EINVAL;
}

int
aw_tls_context_set_check_hostname(aw_tls_context *c, int check)
{
    if (c == NULL)
        return -EINVAL;
    if (check && c->verify == AW_TLS_VERIFY_NONE &&
        c->side == AW_TLS_CLIENT) {
        snprintf(c->err, sizeof(c->err),
                 "the host name is checked only with verification on");
        return -EINVAL;
    }
    c->check_hostname = check != 0;
    return 0;
}

static int
version_ok(int v)
{
    return v == AW_TLS_1_2 || v == AW_TLS_1_3;
}

int
aw_tls_context_set_min_version(aw_tls_context *c, int version)
{
    int max;

    if (c == NULL || !version_ok(version))
        return -EINVAL;
    max = (int)SSL_CTX_get_max_proto_version(c->ctx);
    if (max != 0 && version > max)
        return -EINVAL;
    SSL_CTX_set_min_proto_version(c->ctx, version);
    return 0;
}

int
aw_tls_context_set_max_version(aw_tls_context *c, int version)
{
    if (c == NULL || (version != 0 && !version_ok(version)))
        return -EINVAL;
    if (version != 0 && version < (int)SSL_CTX_get_min_proto_version(c->ctx))
        return -EINVAL;
    SSL_CTX_set_max_proto_version(c->ctx, version);
    return 0;
}

int
aw_tls_context_set_ciphers(aw_tls_context *c, const char *list)
{
    if (c == NULL || list == NULL)
        return -EINVAL;
    ERR_clear_error();
    if (SSL_CTX_set_cipher_list(c->ctx, list) != 1)
        return ctx_fail(c, -EINVAL, "no cipher selected");
    return 0;
}

int
aw_tls_context_set_ciphersuites(aw_tls_context *c, const char *suites)
{
    if (c == NULL || suites == NULL)
        return -EINVAL;
    ERR_clear_error();
    if (SSL_CTX_set_ciphersuites(c->ctx, suites) != 1)
        return ctx_fail(c, -EINVAL, "no cipher suite selected");
    return 0;
}

int
aw_tls_context_set_alpn(aw_tls_context *c, const char *const *protocols,
                        size_t n)
{
    unsigned char *wire, *p;
    size_t len = 0, i;

    if (c == NULL || (protocols == NULL && n > 0))
        return -EINVAL;
    for (i = 0; i < n; i++) {
        size_t l = protocols[i] != NULL ? strlen(protocols[i]) : 0;

        if (l == 0 || l > 255)
            return -EINVAL;
        len += 1 + l;
    }
    if (len > UINT_MAX)
        return -EINVAL;
    wire = NULL;
    if (n > 0) {
        wire = aw__malloc(len);
        if (wire == NULL)
            return -ENOMEM;
        for (i = 0, p = wire; i < n; i++) {
            size_t l = strlen(protocols[i]);

            *p++ = (unsigned char)l;
            memcpy(p, protocols[i], l);
            p += l;
        }
    }
    if (c->side == AW_TLS_CLIENT &&
        SSL_CTX_set_alpn_protos(c->ctx, wire, (unsigned)len) != 0) {
        aw__free(wire);
        ERR_clear_error();
        return -ENOMEM;
    }
    aw__free(c->alpn);
    c->alpn = wire;
    c->alpn_len = len;
    return 0;
}

/* A server picks the first of its protocols the client offers; with none
 * in common it goes on without (Python's choice). */
static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
               const unsigned char *in, unsigned int inlen, void *arg)
{
    aw_tls_context *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);
    unsigned char *sel;

    (void)arg;
    if (c == NULL || c->alpn == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len,
                              in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

int
aw_tls_context_set_sni_callback(aw_tls_context *c, aw_tls_sni_fn fn,
                                void *arg)
{
    if (c == NULL || c->side != AW_TLS_SERVER)
        return -EINVAL;
    c->sni = fn;
    c->sni_arg = arg;
    return 0;
}

static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
    aw_tls_context *c = arg, *use;

    (void)alert;
    if (c == NULL || c->sni == NULL)
        return SSL_TLSEXT_ERR_OK;
    use = c->sni(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name),
                 c->sni_arg);
    if (use != NULL && use != c && use->side == AW_TLS_SERVER) {
        SSL_set_SSL_CTX(ssl, use->ctx);
        SSL_set_verify(ssl, SSL_CTX_get_verify_mode(use->ctx), NULL);
    }
    return SSL_TLSEXT_ERR_OK;
}

int
aw_tls_context_set_session_cache(aw_tls_context *c, int enable)
{
    if (c == NULL)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    c->cache_on = enable != 0;
    if (!c->cache_on)
        sessions_clear(c);
    pthread_mutex_unlock(&c->lock);
    apply_sessions(c);
    return 0;
}

int
aw_tls_context_set_keylog_file(aw_tls_context *c, const char *path)
{
    FILE *f = NULL, *old;

    if (c == NULL)
        return -EINVAL;
    if (path != NULL) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

        if (fd < 0)
            return -errno;
        f = fdopen(fd, "a");
        if (f == NULL) {
            int e = errno;

            close(fd);
            return -e;
        }
    }
    pthread_mutex_lock(&c->lock);
    old = c->keylog;
    c->keylog = f;
    pthread_mutex_unlock(&c->lock);
    if (old != NULL)
        fclose(old);
    return 0;
}

int
aw_tls_context_keylog_from_env(aw_tls_context *c)
{
    const char *path = getenv("SSLKEYLOGFILE");
    int rc;

    if (c == NULL)
        return -EINVAL;
    if (path == NULL || path[0] == '\0')
        return 0;
    rc = aw_tls_context_set_keylog_file(c, path);
    return rc == 0 ? 1 : rc;
}

int
aw_tls_context_set_timeouts(aw_tls_context *c, double handshake,
                            double shutdown)
{
    if (c == NULL || isnan(handshake) || isnan(shutdown) || handshake < 0 ||
        shutdown < 0)
        return -EINVAL;
    if (handshake > 0)
        c->hs_timeout = handshake;
    if (shutdown > 0)
        c->sd_timeout = shutdown;
    return 0;
}

int
aw_tls_is_verify_error(int code)
{
    return code <= AW_ETLS_VERIFY && code >= AW_ETLS_SELF_SIGNED;
}

/* ---- the client's session cache ------------------------------------------- */

static SSL_SESSION *
session_find(aw_tls_context *c, const char *key)
{
    struct session *s;
    SSL_SESSION *found = NULL;

    pthread_mutex_lock(&c->lock);
    for (s = c->sessions; s != NULL; s = s->next)
        if (strcmp(s->key, key) == 0) {
            if (SSL_SESSION_is_resumable(s->sess) &&
                SSL_SESSION_up_ref(s->sess) == 1)
                found = s->sess;
            break;
        }
    pthread_mutex_unlock(&c->lock);
    return found;
}

/* ---- the layer ------------------------------------------------------------------- */

enum lstate { L_CONNECTING, L_HANDSHAKE, L_OPEN, L_SHUTDOWN, L_DONE };

struct tls {
    aw_loop *loop;
    aw_tls_context *ctx;
    SSL *ssl;
    aw_transport *up;  /* the face; NULL once it is freed */
    aw_transport *low; /* the connection below (a reference) */
    struct evbuffer *cin, *cout;
    aw_future *waiter;     /* the connection's future, until settled */
    aw_future *connecting; /* the connection below's, while it runs */
    aw_handle *timer;      /* the handshake's or the shutdown's */
    char *key;             /* the session cache's, a client's */
    char *alpn;            /* the protocol agreed on, or NULL */
    char *errmsg;
    unsigned refs;
    unsigned state : 3;
    unsigned want_read : 1;   /* the face's protocol reads */
    unsigned peer_closed : 1; /* close_notify came */
    unsigned eof_low : 1;     /* the connection below read an end */
    unsigned server : 1;
    unsigned soon : 1;        /* a pump is scheduled */
    unsigned graceful : 1;    /* flush an alert before closing below */
};

static void tls_unref(struct tls *L);

static const struct aw__layer_ops tls_ops;

static struct tls *
tls_ref(struct tls *L)
{
    L->refs++;
    return L;
}

static void
tls_unref(struct tls *L)
{
    if (L == NULL || --L->refs > 0)
        return;
    if (L->ssl != NULL)
        SSL_free(L->ssl); /* and its BIOs */
    if (L->cin != NULL)
        evbuffer_free(L->cin);
    if (L->cout != NULL)
        evbuffer_free(L->cout);
    aw_transport_unref(L->low);
    aw_tls_context_unref(L->ctx);
    aw__free(L->key);
    aw__free(L->alpn);
    aw__free(L->errmsg);
    aw__loop_track(L->loop, -1);
    aw__free(L);
}

static int
is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 ||
           inet_pton(AF_INET6, host, buf) == 1;
}

/* A layer and its face for ctx; the face carries proto with arg.  host:
 * a client's name to send and check (NULL: none).  NULL out of memory. */
static struct tls *
tls_new(aw_loop *loop, aw_tls_context *ctx, const aw_protocol *proto,
        void *arg, const char *host, const char *key)
{
    struct tls *L = aw__calloc(1, sizeof(*L));
    BIO *rb = NULL, *wb = NULL;

    if (L == NULL)
        return NULL;
    aw__loop_track(loop, 1);
    L->loop = loop;
    L->refs = 1; /* the face's */
    L->ctx = aw_tls_context_ref(ctx);
    L->server = ctx->side == AW_TLS_SERVER;
    L->cin = evbuffer_new();
    L->cout = evbuffer_new();
    L->ssl = SSL_new(ctx->ctx);
    if (L->cin == NULL || L->cout == NULL || L->ssl == NULL)
        goto fail;
    rb = BIO_new(evb_method);
    wb = BIO_new(evb_method);
    if (rb == NULL || wb == NULL)
        goto fail;
    BIO_set_data(rb, L->cin);
    BIO_set_data(wb, L->cout);
    SSL_set_bio(L->ssl, rb, wb);
    rb = wb = NULL;
    SSL_set_ex_data(L->ssl, ssl_index, L);
    if (L->server) {
        SSL_set_accept_state(L->ssl);
    } else {
        SSL_set_connect_state(L->ssl);
        if (host != NULL && !is_ip_literal(host) &&
            SSL_set_tlsext_host_name(L->ssl, host) != 1)
            goto fail;
        if (host != NULL && ctx->verify != AW_TLS_VERIFY_NONE &&
            ctx->check_hostname) {
            if (is_ip_literal(host)) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(L->ssl),
                                                  host) != 1)
                    goto fail;
            } else {
                SSL_set_hostflags(L->ssl,
                                  X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (SSL_set1_host(L->ssl, host) != 1)
                    goto fail;
            }
        }
        if (key != NULL && ctx->cache_on) {
            SSL_SESSION *s;

            L->key = aw__strdup(key);
            if (L->key == NULL)
                goto fail;
            s = session_find(ctx, key);
            if (s != NULL) {
                SSL_set_session(L->ssl, s);
                SSL_SESSION_free(s);
            }
        }
    }
    L->up = aw__transport_layered(loop, proto, arg, &tls_ops, L);
    if (L->up == NULL)
        goto fail;
    return L;
fail:
    BIO_free(rb);
    BIO_free(wb);
    ERR_clear_error();
    tls_unref(L);
    return NULL;
}

/* A client's new session (a TLS 1.3 ticket comes after the handshake):
 * kept for the next connection to the same server. */
static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls *L = SSL_get_ex_data(ssl, ssl_index);
    aw_tls_context *c;
    struct session *s, **pp;
    size_t klen;

    if (L == NULL || L->key == NULL)
        return 0;
    c = L->ctx;
    klen = strlen(L->key);
    s = aw__malloc(sizeof(*s) + klen + 1);
    if (s == NULL)
        return 0;
    memcpy(s->key, L->key, klen + 1);
    s->sess = sess;
    pthread_mutex_lock(&c->lock);
    if (!c->cache_on) {
        pthread_mutex_unlock(&c->lock);
        aw__free(s);
        return 0;
    }
    for (pp = &c->sessions; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->key, s->key) == 0) {
            struct session *old = *pp;

            *pp = old->next;
            SSL_SESSION_free(old->sess);
            aw__free(old);
            c->nsessions--;
            break;
        }
    s->next = c->sessions;
    c->sessions = s;
    if (++c->nsessions > SESSION_CACHE_MAX) { /* drop the oldest */
        for (pp = &c->sessions; (*pp)->next != NULL; pp = &(*pp)->next)
            ;
        SSL_SESSION_free((*pp)->sess);
        aw__free(*pp);
        *pp = NULL;
        c->nsessions--;
    }
    pthread_mutex_unlock(&c->lock);
    return 1; /* the cache keeps the reference */
}

/* The library's code and a message for an OpenSSL failure (its queue is
 * emptied). */
static int
verify_code(long v)
{
    switch (v) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return AW_ETLS_EXPIRED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_EMAIL_MISMATCH:
        return AW_ETLS_HOSTNAME;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return AW_ETLS_SELF_SIGNED;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return AW_ETLS_UNKNOWN_CA;
    default:
        return AW_ETLS_VERIFY;
    }
}

static int
classify(struct tls *L, int handshake, char **msg)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    int code;

    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(L->ssl);

        code = verify_code(v);
        *msg = aw__format("certificate verify failed: %s",
                          X509_verify_cert_error_string(v));
    } else {
        code = handshake ? AW_ETLS_HANDSHAKE : AW_ETLS_PROTOCOL;
        if (reason != NULL)
            *msg = aw__format("%s", reason);
        else if (e != 0)
            *msg = aw__format("OpenSSL error %lx", e);
        else
            *msg = aw__format("%s", aw_strerror(code));
    }
    ERR_clear_error();
    return code;
}

static void
flush(struct tls *L)
{
    if (L->low != NULL && evbuffer_get_length(L->cout) > 0)
        aw__transport_send_buffer(L->low, L->cout);
}

static void
cancel_timer(struct tls *L)
{
    if (L->timer != NULL) {
        aw_handle_cancel(L->timer);
        aw_handle_unref(L->timer);
        L->timer = NULL;
    }
}

/* The connection failed (code, msg owned): its future fails, the face is
 * lost (told nothing: it was never made) and the connection below
 * closes, after the alert OpenSSL wrote, if graceful. */
static void
fail(struct tls *L, int code, char *msg, int graceful)
{
    aw_future *w = L->waiter;

    if (L->state == L_DONE) {
        aw__free(msg);
        return;
    }
    aw__free(L->errmsg);
    L->errmsg = msg != NULL ? aw__strdup(msg) : NULL;
    L->graceful = graceful != 0;
    L->waiter = NULL;
    if (w != NULL && w->state == AW_FUTURE_PENDING)
        aw__future_set_failed(w, code, msg);
    else
        aw__free(msg);
    aw_future_unref(w);
    aw__transport_lose(L->up, code); /* calls tls_lost */
}

static void read_app(struct tls *L);
static void read_shutdown(struct tls *L);
static void at_eof(struct tls *L);

static void
handshake(struct tls *L)
{
    aw_future *w;
    char *msg = NULL;
    int r, e, code;

    ERR_clear_error();
    r = SSL_do_handshake(L->ssl);
    if (r != 1) {
        e = SSL_get_error(L->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            flush(L);
            return;
        }
        code = classify(L, 1, &msg);
        flush(L);
        fail(L, code, msg, 1);
        return;
    }
    cancel_timer(L);
    L->state = L_OPEN;
    {
        const unsigned char *p = NULL;
        unsigned len = 0;

        SSL_get0_alpn_selected(L->ssl, &p, &len);
        if (p != NULL && len > 0 && (L->alpn = aw__malloc(len + 1)) != NULL) {
            memcpy(L->alpn, p, len);
            L->alpn[len] = '\0';
        }
    }
    flush(L);
    aw_transport_ref(L->up);
    aw__transport_open(L->up); /* connection_made */
    w = L->waiter;
    L->waiter = NULL;
    if (w != NULL && w->state == AW_FUTURE_PENDING) {
        if (L->state == L_DONE) /* lost in connection_made */
            aw__future_set_failed(w, AW_ECLOSED, NULL);
        else
            aw_future_set_result(w, aw_transport_ref(L->up),
                                 (aw_destroy_fn)aw_transport_unref);
    }
    aw_future_unref(w);
    aw_transport_unref(L->up);
}

/* Run OpenSSL on what came: the handshake, then decrypting for the face
 * (or, closing, for nobody), then what that made it send. */
static void
pump(struct tls *L)
{
    tls_ref(L);
    if (L->state == L_HANDSHAKE)
        handshake(L);
    if (L->state == L_OPEN)
        read_app(L);
    else if (L->state == L_SHUTDOWN)
        read_shutdown(L);
    if (L->state != L_DONE)
        flush(L);
    if (L->state != L_DONE && L->eof_low)
        at_eof(L);
    tls_unref(L);
}

static void
read_app(struct tls *L)
{
    struct evbuffer *in = aw__transport_inbuf(L->up);
    size_t got = 0;

    while (L->state == L_OPEN && L->want_read && !L->peer_closed) {
        struct evbuffer_iovec v;
        size_t n = 0;
        int r, e;

        /* Room is made only when a record may be there: an idle
         * connection keeps no empty buffer (tls_conn_bytes). */
        if (!SSL_has_pending(L->ssl) && evbuffer_get_length(L->cin) == 0)
            break;
        if (evbuffer_reserve_space(in, READ_CHUNK, &v, 1) < 1) {
            fail(L, -ENOMEM, NULL, 0);
            return;
        }
        if (v.iov_len > INT_MAX)
            v.iov_len = INT_MAX;
        ERR_clear_error();
        r = SSL_read_ex(L->ssl, v.iov_base, v.iov_len, &n);
        if (r == 1) {
            v.iov_len = n;
            evbuffer_commit_space(in, &v, 1);
            got += n;
            if (got >= DELIVER_EVERY) {
                got = 0;
                aw__transport_deliver(L->up);
            }
            continue;
        }
        evbuffer_commit_space(in, &v, 0);
        e = SSL_get_error(L->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            L->peer_closed = 1;
            break;
        }
        {
            char *msg = NULL;
            int code = classify(L, 0, &msg);

            aw__transport_deliver(L->up); /* what came before it */
            if (L->state == L_OPEN) {
                aw__free(L->errmsg);
                L->errmsg = msg;
                L->graceful = 1; /* the alert goes out */
                flush(L);
                aw__transport_lose(L->up, code);
            } else {
                aw__free(msg);
            }
        }
        return;
    }
    if (L->state == L_OPEN)
        aw__transport_deliver(L->up);
    if (L->state == L_OPEN && L->peer_closed)
        aw__transport_eof(L->up); /* eof_received, then the face closes */
}

/* Closing: what still comes is dropped until the peer's close_notify. */
static void
read_shutdown(struct tls *L)
{
    char scratch[READ_CHUNK];

    while (L->state == L_SHUTDOWN && !L->peer_closed) {
        size_t n;
        int r, e;

        ERR_clear_error();
        r = SSL_read_ex(L->ssl, scratch, sizeof(scratch), &n);
        if (r == 1)
            continue;
        e = SSL_get_error(L->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            L->peer_closed = 1;
            break;
        }
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            ERR_clear_error();
            L->peer_closed = 1; /* nothing sensible comes any more */
        }
        break;
    }
    if (L->state == L_SHUTDOWN && L->peer_closed) {
        cancel_timer(L);
        aw_transport_close(L->low); /* its loss ends the face: tls_low_lost */
    }
}

/* The connection below read its end and everything before it was run. */
static void
at_eof(struct tls *L)
{
    switch (L->state) {
    case L_HANDSHAKE:
        fail(L, -ECONNRESET,
             aw__format("connection closed during the TLS handshake"), 0);
        break;
    case L_OPEN:
        if (L->peer_closed)
            break; /* eof_received told it; the face closes */
        if (!L->want_read)
            break; /* told when the face reads again */
        aw__free(L->errmsg);
        L->errmsg = aw__format("%s", aw_strerror(AW_ETLS_TRUNCATED));
        aw__transport_lose(L->up, AW_ETLS_TRUNCATED);
        break;
    case L_SHUTDOWN:
        cancel_timer(L);
        aw_transport_close(L->low);
        break;
    default:
        break;
    }
}

static int
pump_soon_cb(aw_loop *loop, void *arg)
{
    struct tls *L = arg;

    (void)loop;
    L->soon = 0;
    if (L->state != L_DONE)
        pump(L);
    tls_unref(L);
    return 0;
}

static void
pump_soon(struct tls *L)
{
    if (L->soon)
        return;
    if (aw_loop_call_soon(L->loop, pump_soon_cb, tls_ref(L), NULL) == 0)
        L->soon = 1;
    else
        L->refs--;
}

static int
timeout_cb(aw_loop *loop, void *arg)
{
    struct tls *L = arg;

    (void)loop;
    aw_handle_unref(L->timer);
    L->timer = NULL;
    if (L->state == L_HANDSHAKE || L->state == L_CONNECTING)
        fail(L, AW_ETIMEDOUT,
             aw__format("TLS handshake timed out after %g s",
                        L->ctx->hs_timeout),
             0);
    else if (L->state == L_SHUTDOWN) /* the peer never answered */
        aw__transport_lose(L->up, AW_ETIMEDOUT);
    return 0;
}

static void
start_timer(struct tls *L, double delay)
{
    cancel_timer(L);
    if (!isinf(delay))
        aw_loop_call_later(L->loop, delay, timeout_cb, L, &L->timer);
}

static void
start_handshake(struct tls *L)
{
    L->state = L_HANDSHAKE;
    start_timer(L, L->ctx->hs_timeout);
    pump(L);
}

/* ---- the face's operations ----------------------------------------------------- */

static int
tls_write(void *layer, const void *data, size_t len)
{
    struct tls *L = layer;
    size_t done = 0;

    if (L->state != L_OPEN)
        return AW_ECLOSED;
    while (done < len) {
        size_t w = 0;
        int r;

        ERR_clear_error();
        r = SSL_write_ex(L->ssl, (const char *)data + done, len - done, &w);
        if (r != 1) {
            char *msg = NULL;
            int code = classify(L, 0, &msg);

            aw__free(L->errmsg);
            L->errmsg = msg;
            aw__transport_lose(L->up, code);
            return 0; /* connection_lost tells */
        }
        done += w;
    }
    flush(L);
    aw__transport_check_writing(L->up);
    return 0;
}

static void
tls_close(void *layer)
{
    struct tls *L = layer;

    if (L->state != L_OPEN) {
        aw__transport_lose(L->up, 0);
        return;
    }
    L->state = L_SHUTDOWN;
    ERR_clear_error();
    SSL_shutdown(L->ssl); /* close_notify */
    ERR_clear_error();
    flush(L);
    aw_transport_resume_reading(L->low); /* to hear the peer's */
    if (L->peer_closed || L->eof_low) {
        aw_transport_close(L->low);
        return;
    }
    start_timer(L, L->ctx->sd_timeout);
    if (evbuffer_get_length(L->cin) > 0)
        pump_soon(L);
}

static void
tls_lost(void *layer, int error)
{
    struct tls *L = layer;
    aw_future *w = L->waiter;

    if (L->state == L_DONE)
        return;
    L->state = L_DONE;
    cancel_timer(L);
    L->waiter = NULL;
    if (w != NULL && w->state == AW_FUTURE_PENDING) {
        if (error == AW_ECANCELLED)
            aw__future_set_cancelled(w, NULL);
        else
            aw__future_set_failed(w, error != 0 ? error : AW_ECLOSED, NULL);
    }
    aw_future_unref(w);
    if (L->connecting != NULL && !aw_future_done(L->connecting))
        aw_future_cancel(L->connecting, NULL);
    if (L->low != NULL) {
        if (L->graceful)
            aw_transport_close(L->low);
        else
            aw_transport_abort(L->low);
    }
}

static void
tls_reading(void *layer, int on)
{
    struct tls *L = layer;

    if (L->want_read == (on != 0))
        return;
    L->want_read = on != 0;
    if (L->state != L_OPEN || L->low == NULL)
        return;
    if (on) {
        aw_transport_resume_reading(L->low);
        if (evbuffer_get_length(L->cin) > 0 || L->eof_low ||
            SSL_pending(L->ssl) > 0)
            pump_soon(L);
    } else {
        aw_transport_pause_reading(L->low);
    }
}

static size_t
tls_pending(const void *layer)
{
    const struct tls *L = layer;

    return evbuffer_get_length(L->cout) +
           (L->low != NULL ? aw_transport_write_buffer_size(L->low) : 0);
}

static aw_transport *
tls_lower(const void *layer)
{
    return ((const struct tls *)layer)->low;
}

static void
tls_release(void *layer)
{
    struct tls *L = layer;

    L->up = NULL;
    cancel_timer(L);
    tls_unref(L);
}

static const struct aw__layer_ops tls_ops = {
    tls_write,   tls_close,   tls_lost,  tls_reading,
    tls_pending, tls_lower,   tls_release};

/* ---- the connection below's protocol ------------------------------------------ */

static void
low_sink(aw_transport *low, struct evbuffer *in, void *arg)
{
    struct tls *L = arg;

    if (L == NULL || L->state == L_DONE) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (evbuffer_add_buffer(L->cin, in) != 0) {
        evbuffer_drain(in, evbuffer_get_length(in));
        fail(L, -ENOMEM, NULL, 0);
        return;
    }
    (void)low;
    pump(L);
}

static void
low_data(aw_transport *low, const void *data, size_t len, void *arg)
{
    struct tls *L = arg;

    (void)low;
    if (L == NULL || L->state == L_DONE)
        return;
    if (evbuffer_add(L->cin, data, len) != 0) {
        fail(L, -ENOMEM, NULL, 0);
        return;
    }
    pump(L);
}

static int
low_eof(aw_transport *low, void *arg)
{
    struct tls *L = arg;

    (void)low;
    if (L == NULL || L->state == L_DONE)
        return 0;
    L->eof_low = 1;
    pump(L);
    return 1; /* the layer closes it (close_notify may still go out) */
}

static void
low_lost(aw_transport *low, int error, void *arg)
{
    struct tls *L = arg;

    (void)low;
    if (L == NULL)
        return;
    switch (L->state) {
    case L_CONNECTING:
    case L_HANDSHAKE:
        fail(L, error != 0 ? error : -ECONNRESET,
             aw__format("connection lost during the TLS handshake"), 0);
        break;
    case L_OPEN:
        if (error == 0 && !L->peer_closed) {
            error = AW_ETLS_TRUNCATED;
            aw__free(L->errmsg);
            L->errmsg = aw__format("%s", aw_strerror(error));
        }
        aw__transport_lose(L->up, error);
        break;
    case L_SHUTDOWN:
        aw__transport_lose(L->up, error);
        break;
    default:
        break;
    }
    tls_unref(L); /* the connection below's */
}

static void
low_writing(aw_transport *low, void *arg)
{
    struct tls *L = arg;

    (void)low;
    if (L != NULL && L->up != NULL &&
        (L->state == L_OPEN || L->state == L_SHUTDOWN))
        aw__transport_check_writing(L->up);
}

/* The connection below is made: the layer is its protocol from now. */
static void
attach(struct tls *L, aw_transport *low)
{
    L->low = aw_transport_ref(low);
    tls_ref(L); /* the connection below's, until low_lost */
    aw__transport_set_exact_reads(low, 1); /* OpenSSL empties each chain */
    aw_transport_set_user(low, L);
}

static void
client_low_made(aw_transport *low, void *arg)
{
    struct tls *L = arg;

    attach(L, low);
    aw__transport_set_sink(low, low_sink);
    if (L->state != L_CONNECTING) { /* abandoned meanwhile */
        aw_transport_abort(low);
        return;
    }
    start_handshake(L);
}

static const aw_protocol server_low_protocol;

static const aw_protocol client_low_protocol = {
    AW_PROTOCOL_SIZE, client_low_made, low_data,    low_eof,
    low_lost,         low_writing,     low_writing, NULL, NULL};

/* ---- connecting ----------------------------------------------------------------- */

static int
waiter_done(aw_future *f, void *arg)
{
    struct tls *L = arg;

    if (aw_future_cancelled(f) && L->state != L_DONE &&
        L->state != L_OPEN && L->state != L_SHUTDOWN)
        aw__transport_lose(L->up, AW_ECANCELLED);
    tls_unref(L);
    return 0;
}

static int
connecting_done(aw_future *tf, void *arg)
{
    struct tls *L = arg;

    L->connecting = NULL;
    if (aw_future_state(tf) != AW_FUTURE_DONE && L->state == L_CONNECTING) {
        const char *m = aw_future_message(tf);
        int code = aw_future_error(tf);

        if (aw_future_cancelled(tf))
            code = AW_ECANCELLED;
        fail(L, code, m != NULL ? aw__strdup(m) : NULL, 0);
    }
    aw_future_unref(tf);
    tls_unref(L);
    return 0;
}

/* The future of a new client connection: L's waiter, watched for
 * cancellation.  NULL out of memory (L is then freed). */
static aw_future *
watch(struct tls *L)
{
    aw_future *f = aw_future_new(L->loop);

    if (f == NULL)
        return NULL;
    L->waiter = aw_future_ref(f);
    if (aw__future_attach(f, waiter_done, tls_ref(L)) != 0) {
        L->refs--;
        aw_future_unref(L->waiter);
        L->waiter = NULL;
        aw_future_unref(f);
        return NULL;
    }
    return f;
}

static aw_future *
bad(aw_loop *loop, int code, const char *why)
{
    return aw__future_failed_new(loop, code, aw__format("%s", why));
}

static int
check_client(aw_loop *loop, aw_tls_context *ctx, const aw_protocol *proto,
             aw_future **err)
{
    if (ctx == NULL || !aw__protocol_ok(proto)) {
        *err = bad(loop, -EINVAL, "no TLS context or a bad protocol");
        return -1;
    }
    if (ctx->side != AW_TLS_CLIENT) {
        *err = bad(loop, -EINVAL, "a server context for a client");
        return -1;
    }
    if (!openssl_ready()) {
        *err = aw__future_nomem(loop);
        return -1;
    }
    return 0;
}

static aw_future *
connect_tls(aw_loop *loop, const char *host, int port, const char *path,
            aw_tls_context *ctx, const char *server_hostname,
            const aw_protocol *proto, void *arg)
{
    const char *name = server_hostname != NULL ? server_hostname : host;
    struct tls *L;
    aw_future *f, *tf, *err;
    char key[300];

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (check_client(loop, ctx, proto, &err) != 0)
        return err;
    if ((host == NULL && path == NULL) ||
        (name == NULL && ctx->verify != AW_TLS_VERIFY_NONE &&
         ctx->check_hostname))
        return bad(loop, -EINVAL, "no host name to check the certificate "
                                  "against");
    if (path != NULL)
        snprintf(key, sizeof(key), "unix:%s|%s", path,
                 name != NULL ? name : "");
    else
        snprintf(key, sizeof(key), "%s:%d|%s", host, port,
                 name != NULL ? name : "");
    L = tls_new(loop, ctx, proto, arg, name, key);
    if (L == NULL)
        return aw__future_nomem(loop);
    f = watch(L);
    if (f == NULL) {
        aw_transport_abort(L->up);
        return aw__future_nomem(loop);
    }
    tf = path != NULL
             ? aw_create_unix_connection(loop, path, &client_low_protocol, L)
             : aw_create_connection(loop, host, port, &client_low_protocol,
                                    L);
    if (aw_future_done(tf)) { /* failed at once */
        const char *m = aw_future_message(tf);

        fail(L, aw_future_error(tf) != 0 ? aw_future_error(tf) : -ENOMEM,
             m != NULL ? aw__strdup(m) : NULL, 0);
        aw_future_unref(tf);
        return f;
    }
    L->connecting = tf;
    if (aw__future_attach(tf, connecting_done, tls_ref(L)) != 0) {
        L->refs--;
        fail(L, -ENOMEM, NULL, 0); /* cancels tf */
        L->connecting = NULL;
        aw_future_unref(tf);
    }
    return f;
}

aw_future *
aw_create_connection_tls(aw_loop *loop, const char *host, int port,
                         aw_tls_context *ctx, const char *server_hostname,
                         const aw_protocol *proto, void *arg)
{
    if (loop != NULL && host == NULL)
        return bad(loop, -EINVAL, "no host");
    return connect_tls(loop, host, port, NULL, ctx, server_hostname, proto,
                       arg);
}

aw_future *
aw_create_unix_connection_tls(aw_loop *loop, const char *path,
                              aw_tls_context *ctx,
                              const char *server_hostname,
                              const aw_protocol *proto, void *arg)
{
    if (loop != NULL && path == NULL)
        return bad(loop, -EINVAL, "no path");
    return connect_tls(loop, NULL, 0, path, ctx, server_hostname, proto,
                       arg);
}

/* Start TLS over t.  early (may be NULL): bytes t delivered before the
 * upgrade and nobody read, which came after the peer's go-ahead and so
 * are its first TLS bytes: given back to t (emptied), so that the layer
 * reads them first, from the loop, as the rest. */
aw_future *
aw__tls_start(aw_transport *t, aw_tls_context *ctx,
              const char *server_hostname, const aw_protocol *proto,
              void *arg, struct evbuffer *early)
{
    aw_loop *loop = aw_transport_loop(t);
    struct tls *L;
    aw_future *f;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (ctx == NULL || !aw__protocol_ok(proto) ||
        !aw__transport_is_open_conn(t) ||
        aw__transport_protocol(t) == &client_low_protocol ||
        aw__transport_protocol(t) == &server_low_protocol)
        return bad(loop, -EINVAL, "not an open connection, no context or "
                                  "a bad protocol");
    if (!openssl_ready())
        return aw__future_nomem(loop);
    if (ctx->side == AW_TLS_CLIENT && server_hostname == NULL &&
        ctx->verify != AW_TLS_VERIFY_NONE && ctx->check_hostname)
        return bad(loop, -EINVAL, "no host name to check the certificate "
                                  "against");
    L = tls_new(loop, ctx, proto, arg, server_hostname, server_hostname);
    if (L == NULL)
        return aw__future_nomem(loop);
    f = watch(L);
    if (f == NULL) {
        aw_transport_abort(L->up);
        return aw__future_nomem(loop);
    }
    /* Moved whole or not at all: t is still untouched. */
    if (early != NULL && aw__transport_unread(t, early) != 0) {
        fail(L, -ENOMEM, NULL, 0);
        return f;
    }
    aw__transport_set_protocol(t, &client_low_protocol, L);
    attach(L, t);
    aw__transport_set_sink(t, low_sink);
    aw_transport_resume_reading(t); /* what it holds is delivered soon */
    start_handshake(L);
    return f;
}

aw_future *
aw_start_tls(aw_transport *t, aw_tls_context *ctx,
             const char *server_hostname, const aw_protocol *proto, void *arg)
{
    if (t == NULL)
        return NULL;
    return aw__tls_start(t, ctx, server_hostname, proto, arg, NULL);
}

/* ---- serving -------------------------------------------------------------------- */

struct srv {
    aw_tls_context *ctx;
    const aw_protocol *proto;
    void *arg;
    aw_destroy_fn arg_destroy;
};

static void
srv_free(void *p)
{
    struct srv *s = p;

    if (s->arg_destroy != NULL)
        s->arg_destroy(s->arg);
    aw_tls_context_unref(s->ctx);
    aw__free(s);
}

static void
server_low_made(aw_transport *low, void *arg)
{
    struct srv *s = arg;
    struct tls *L = tls_new(aw_transport_loop(low), s->ctx, s->proto, s->arg,
                            NULL, NULL);

    if (L == NULL) {
        aw__loop_report(aw_transport_loop(low), -ENOMEM, NULL, NULL,
                        "TLS server: out of memory, connection dropped");
        aw_transport_set_user(low, NULL);
        aw_transport_abort(low);
        return;
    }
    attach(L, low);
    aw__transport_set_sink(low, low_sink);
    start_handshake(L);
}

static const aw_protocol server_low_protocol = {
    AW_PROTOCOL_SIZE, server_low_made, low_data,    low_eof,
    low_lost,         low_writing,     low_writing, NULL, NULL};

aw_future *
aw__tls_create_server(aw_loop *loop, const char *host, int port,
                      const char *path, int fd, aw_tls_context *ctx,
                      const aw_protocol *proto, void *arg,
                      aw_destroy_fn arg_destroy, int flags, int backlog)
{
    struct srv *s;

    if (loop == NULL || aw_loop_is_closed(loop))
        return NULL;
    if (ctx == NULL || !aw__protocol_ok(proto) ||
        ctx->side != AW_TLS_SERVER || !ctx->has_cert) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return bad(loop, -EINVAL,
                   ctx == NULL || ctx->side != AW_TLS_SERVER
                       ? "not a server TLS context"
                       : !ctx->has_cert ? "the TLS context has no "
                                          "certificate"
                                        : "a bad protocol");
    }
    if (!openssl_ready() || (s = aw__calloc(1, sizeof(*s))) == NULL) {
        if (arg_destroy != NULL)
            arg_destroy(arg);
        return aw__future_nomem(loop);
    }
    s->ctx = aw_tls_context_ref(ctx);
    s->proto = proto;
    s->arg = arg;
    s->arg_destroy = arg_destroy;
    if (fd >= 0)
        return aw__create_server_sock(loop, fd, &server_low_protocol, s,
                                      srv_free, backlog);
    return aw__create_server(loop, host, port, path, &server_low_protocol, s,
                             srv_free, flags, backlog);
}

aw_future *
aw_create_server_tls(aw_loop *loop, const char *host, int port,
                     aw_tls_context *ctx, const aw_protocol *proto, void *arg,
                     int flags, int backlog)
{
    return aw__tls_create_server(loop, host, port, NULL, -1, ctx, proto, arg,
                                 NULL, flags, backlog);
}

aw_future *
aw_create_unix_server_tls(aw_loop *loop, const char *path,
                          aw_tls_context *ctx, const aw_protocol *proto,
                          void *arg, int backlog)
{
    if (loop != NULL && path == NULL)
        return bad(loop, -EINVAL, "no path");
    return aw__tls_create_server(loop, NULL, 0, path, -1, ctx, proto, arg,
                                 NULL, 0, backlog);
}

aw_future *
aw_create_server_sock_tls(aw_loop *loop, int fd, aw_tls_context *ctx,
                          const aw_protocol *proto, void *arg, int backlog)
{
    if (loop != NULL && fd < 0)
        return bad(loop, -EINVAL, "no socket");
    return aw__tls_create_server(loop, NULL, 0, NULL, fd, ctx, proto, arg,
                                 NULL, 0, backlog);
}

/* ---- what was negotiated ----------------------------------------------------- */

static const struct tls *
layer_of(const aw_transport *t)
{
    return aw__transport_layer(t, &tls_ops);
}

int
aw_tls_is_tls(const aw_transport *t)
{
    return layer_of(t) != NULL;
}

const char *
aw_tls_version(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? SSL_get_version(L->ssl) : NULL;
}

int
aw_tls_version_number(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? SSL_version(L->ssl) : 0;
}

const char *
aw_tls_cipher(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? SSL_get_cipher_name(L->ssl) : NULL;
}

const char *
aw_tls_alpn(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? L->alpn : NULL;
}

const char *
aw_tls_server_name(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? SSL_get_servername(L->ssl, TLSEXT_NAMETYPE_host_name)
                     : NULL;
}

int
aw_tls_session_reused(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL && SSL_session_reused(L->ssl) == 1;
}

int
aw_tls_peer_verified(const aw_transport *t)
{
    const struct tls *L = layer_of(t);
    X509 *x;
    int ok;

    if (L == NULL || SSL_get_verify_mode(L->ssl) == SSL_VERIFY_NONE)
        return 0;
    x = SSL_get1_peer_certificate(L->ssl);
    ok = x != NULL && SSL_get_verify_result(L->ssl) == X509_V_OK;
    X509_free(x);
    return ok;
}

static int
peer_name(const aw_transport *t, char *buf, size_t len, int issuer)
{
    const struct tls *L = layer_of(t);
    X509 *x;
    BIO *b;
    char *p;
    long n;
    int rc;

    if (L == NULL || buf == NULL || len == 0)
        return -EINVAL;
    x = SSL_get1_peer_certificate(L->ssl);
    if (x == NULL) {
        buf[0] = '\0';
        return -ENOENT;
    }
    b = BIO_new(BIO_s_mem());
    if (b == NULL) {
        X509_free(x);
        return -ENOMEM;
    }
    X509_NAME_print_ex(b, issuer ? X509_get_issuer_name(x)
                                 : X509_get_subject_name(x),
                       0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    n = BIO_get_mem_data(b, &p);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        rc = -ENOSPC;
    } else {
        memcpy(buf, p, (size_t)n);
        buf[n] = '\0';
        rc = (int)n;
    }
    BIO_free(b);
    X509_free(x);
    return rc;
}

int
aw_tls_peer_subject(const aw_transport *t, char *buf, size_t len)
{
    return peer_name(t, buf, len, 0);
}

int
aw_tls_peer_issuer(const aw_transport *t, char *buf, size_t len)
{
    return peer_name(t, buf, len, 1);
}

int
aw_tls_peer_certificate_der(const aw_transport *t, unsigned char *buf,
                            size_t len)
{
    const struct tls *L = layer_of(t);
    X509 *x;
    int n;

    if (L == NULL)
        return -EINVAL;
    x = SSL_get1_peer_certificate(L->ssl);
    if (x == NULL)
        return -ENOENT;
    n = i2d_X509(x, NULL);
    if (n > 0 && buf != NULL && (size_t)n <= len) {
        unsigned char *p = buf;

        i2d_X509(x, &p);
    }
    X509_free(x);
    return n > 0 ? n : -ENOMEM;
}

const char *
aw_tls_error_message(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? L->errmsg : NULL;
}

void *
aw_tls_native(const aw_transport *t)
{
    const struct tls *L = layer_of(t);

    return L != NULL ? L->ssl : NULL;
}

/* SPDX-License-Identifier: MIT */
/* tools/certgen.c: keys and X.509 certificates made in memory with OpenSSL 3's
 * API, for the tests, the demo and the benchmarks. */
#include "certgen.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* The contents of a memory BIO as a malloc'd, NUL-terminated string. */
static char *bio_text(BIO *b, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s;

    if (n < 0)
        return NULL;
    s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *len = (size_t)n;
    return s;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A random positive 64-bit serial number. */
static int set_serial(X509 *x)
{
    BIGNUM *bn = BN_new();
    int rc = -1;

    if (bn && BN_rand(bn, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY)
        && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        rc = 0;
    BN_free(bn);
    return rc;
}

/* The issuer's certificate and key from its PEM text. */
static int load_ca(const struct certgen_pem *ca, X509 **cert, EVP_PKEY **key)
{
    BIO *b = BIO_new_mem_buf(ca->cert, (int)ca->cert_len);

    *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(ca->key, (int)ca->key_len);
    *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (*cert && *key)
        return 0;
    X509_free(*cert);
    EVP_PKEY_free(*key);
    *cert = NULL;
    *key = NULL;
    return -1;
}

static int build(X509 *x, EVP_PKEY *key, const char *cn, const char *san,
                 X509 *ca_cert, EVP_PKEY *ca_key, long not_before,
                 long not_after, int is_ca, int rsa)
{
    X509_NAME *name = X509_get_subject_name(x);
    X509 *issuer = ca_cert ? ca_cert : x;

    if (!X509_set_version(x, 2) || set_serial(x) < 0
        || !X509_gmtime_adj(X509_getm_notBefore(x), not_before)
        || !X509_gmtime_adj(X509_getm_notAfter(x), not_after)
        || !X509_set_pubkey(x, key)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                       (const unsigned char *)cn, -1, -1, 0)
        || !X509_set_issuer_name(x, X509_get_subject_name(issuer)))
        return -1;
    if (add_ext(x, issuer, NID_subject_key_identifier, "hash") < 0)
        return -1;
    if (ca_cert && add_ext(x, issuer, NID_authority_key_identifier,
                           "keyid:always") < 0)
        return -1;
    if (is_ca) {
        if (add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE") < 0
            || add_ext(x, issuer, NID_key_usage,
                       "critical,keyCertSign,cRLSign") < 0)
            return -1;
    } else {
        if (add_ext(x, issuer, NID_basic_constraints, "CA:FALSE") < 0
            || add_ext(x, issuer, NID_key_usage,
                       rsa ? "critical,digitalSignature,keyEncipherment"
                           : "critical,digitalSignature") < 0
            || add_ext(x, issuer, NID_ext_key_usage,
                       "serverAuth,clientAuth") < 0)
            return -1;
    }
    if (san && *san && add_ext(x, issuer, NID_subject_alt_name, san) < 0)
        return -1;
    return X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) > 0 ? 0 : -1;
}

int certgen_make(struct certgen_pem *out, const char *cn, const char *san,
                 const struct certgen_pem *ca, long not_before,
                 long not_after, int is_ca, int rsa)
{
    X509 *x = NULL, *ca_cert = NULL;
    EVP_PKEY *key = NULL, *ca_key = NULL;
    BIO *cb = NULL, *kb = NULL;
    int rc = -1;

    if (!out)
        return -1;
    memset(out, 0, sizeof *out);
    if (!cn || (ca && (!ca->cert || !ca->key)))
        return -1;
    if (ca && load_ca(ca, &ca_cert, &ca_key) < 0)
        return -1;
    key = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    x = X509_new();
    if (!key || !x
        || build(x, key, cn, san, ca_cert, ca_key, not_before, not_after,
                 is_ca, rsa) < 0)
        goto out;
    cb = BIO_new(BIO_s_mem());
    kb = BIO_new(BIO_s_mem());
    if (!cb || !kb || !PEM_write_bio_X509(cb, x)
        || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL))
        goto out;
    out->cert = bio_text(cb, &out->cert_len);
    out->key = bio_text(kb, &out->key_len);
    if (out->cert && out->key)
        rc = 0;
    else
        certgen_free(out);
out:
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    return rc;
}

void certgen_free(struct certgen_pem *p)
{
    if (!p)
        return;
    if (p->key) /* the key is a secret: do not leave it in freed memory */
        OPENSSL_cleanse(p->key, p->key_len);
    free(p->cert);
    free(p->key);
    memset(p, 0, sizeof *p);
}

/* mode 0600 for keys: whoever reads one can impersonate its owner */
static int write_file(const char *path, const char *data, size_t len,
                      int mode)
{
    FILE *f;
    int fd, rc;

    if (!path)
        return 0;
    if (!data)
        return -1;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -1;
    }
    rc = fwrite(data, 1, len, f) == len ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

int certgen_write(const struct certgen_pem *p, const char *certpath,
                  const char *keypath)
{
    if (!p)
        return -1;
    if (write_file(certpath, p->cert, p->cert_len, 0644) < 0
        || write_file(keypath, p->key, p->key_len, 0600) < 0)
        return -1;
    return 0;
}

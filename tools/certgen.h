/* SPDX-License-Identifier: MIT */
/* tools/certgen.h: certificates made at run time with OpenSSL 3 (for the
 * tests, the demo and the benchmarks: nothing read from disk or the network). */
#ifndef AWAIT_TOOLS_CERTGEN_H
#define AWAIT_TOOLS_CERTGEN_H

#include <stddef.h>

struct certgen_pem { char *cert; size_t cert_len; char *key; size_t key_len; };  /* PEM text, NUL-terminated, malloc'd */

/* A key (EC P-256, or RSA-2048 when rsa != 0) and an X.509 v3 certificate with subject CN=cn and subjectAltName from san
   (comma-separated "DNS:name" / "IP:1.2.3.4" entries, NULL for none), valid from now+not_before to now+not_after seconds
   (negative values make expired / not-yet-valid ones), issued by ca (NULL: self-signed); is_ca != 0 makes it a CA
   (basicConstraints CA:TRUE, keyUsage keyCertSign). Returns 0, -1 on failure (out is then zeroed). */
int certgen_make(struct certgen_pem *out, const char *cn, const char *san, const struct certgen_pem *ca,
                 long not_before, long not_after, int is_ca, int rsa);
void certgen_free(struct certgen_pem *p);   /* NULL-safe; zeroes */
/* Write cert and key PEM to files (either path may be NULL to skip). 0 or -1. */
int certgen_write(const struct certgen_pem *p, const char *certpath, const char *keypath);

#endif /* AWAIT_TOOLS_CERTGEN_H */

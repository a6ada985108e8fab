/* SPDX-License-Identifier: MIT */
/* await/core.h: what every libawait module shares: error codes and their
 * names, the allocator hook, and the export macro. */
#ifndef AWAIT_CORE_H
#define AWAIT_CORE_H

#include <errno.h>
#include <stddef.h>

#include "await/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define AW_EXTERN __attribute__((visibility("default")))
#else
#define AW_EXTERN
#endif

/*
 * Errors are values.  Every function that can fail returns 0 (or a count)
 * on success and a negative code on failure: either a negative errno value
 * (-EINVAL, -ENOMEM, -EBADF, ...) for system and argument errors, or one of
 * the library codes below.  One code per condition: where errno names the
 * condition, the library's name is that errno value (AW_ECANCELLED is
 * -ECANCELED, AW_ETIMEDOUT is -ETIMEDOUT, whether a timeout scope or the
 * kernel timed out).  aw_strerror() and aw_err_name() name them all.
 */
#define AW_ERRNO_MAP(XX)                                                     \
    XX(INVALSTATE, -3002, "invalid state for this operation")                \
    XX(INCOMPLETE, -3003, "incomplete read")                                 \
    XX(LIMIT, -3004, "limit overrun")                                        \
    XX(CLOSED, -3005, "object is closed")                                    \
    XX(BUSY, -3006, "resource busy: work still outstanding")                 \
    XX(RUNNING, -3007, "a loop is already running")                          \
    XX(NOTRUNNING, -3008, "loop is not running")                             \
    XX(EMPTY, -3009, "queue is empty")                                       \
    XX(FULL, -3010, "queue is full")                                         \
    XX(SHUTDOWN, -3011, "queue is shut down")                                \
    XX(BROKEN, -3012, "barrier is broken")                                   \
    XX(WRONGTHREAD, -3013, "called from a thread that does not own the loop") \
    XX(AI_NONAME, -3020, "name or service not known")                        \
    XX(AI_AGAIN, -3021, "temporary failure in name resolution")              \
    XX(AI_FAIL, -3022, "non-recoverable failure in name resolution")         \
    XX(AI_FAMILY, -3023, "address family not supported for the name")       \
    XX(AI_NODATA, -3024, "the name has no address of the requested family")  \
    XX(AI_SERVICE, -3025, "service not available for the socket type")       \
    XX(AI_BADFLAGS, -3026, "bad flags for name resolution")                  \
    XX(AI_SOCKTYPE, -3027, "socket type not supported for the name")       \
    XX(TLS_VERIFY, -3040, "TLS: certificate verify failed")                 \
    XX(TLS_EXPIRED, -3041, "TLS: certificate has expired or is not yet valid") \
    XX(TLS_HOSTNAME, -3042, "TLS: certificate does not match the host name") \
    XX(TLS_UNKNOWN_CA, -3043, "TLS: certificate signed by an unknown authority") \
    XX(TLS_SELF_SIGNED, -3044, "TLS: self-signed certificate not trusted")  \
    XX(TLS_HANDSHAKE, -3045, "TLS: handshake failed")                       \
    XX(TLS_PROTOCOL, -3046, "TLS: protocol error")                          \
    XX(TLS_TRUNCATED, -3047, "TLS: peer closed the connection without close_notify")

enum aw_errno {
    /* The conditions errno already names (see above). */
    AW_ECANCELLED = -ECANCELED, /* operation was cancelled */
    AW_ETIMEDOUT = -ETIMEDOUT,  /* operation timed out */
#define AW__ERRNO_ENUM(name, value, text) AW_E##name = (value),
    AW_ERRNO_MAP(AW__ERRNO_ENUM)
#undef AW__ERRNO_ENUM
};

/*
 * aw_strerror - a human-readable description of an error code.
 * Works for every library code and every negative errno value; an unknown
 * code gives "unknown error".  The string is static: do not free it.
 * Thread-safe.
 */
AW_EXTERN const char *aw_strerror(int code);

/*
 * aw_err_name - the symbolic name of an error code ("AW_ECANCELLED",
 * "EINVAL", ...), or "UNKNOWN" for a code the library never returns.
 * The string is static.  Thread-safe.
 */
AW_EXTERN const char *aw_err_name(int code);

/*
 * aw_replace_allocator - route every allocation libawait makes through the
 * given functions (libuv's uv_replace_allocator).  All four are required.
 * Call it before creating any libawait object: memory allocated with one
 * allocator must not be freed by another.  The functions must be
 * thread-safe as soon as several loops run in several threads or an
 * executor is used (its workers allocate and free jobs).  Returns 0, or -EINVAL when a
 * function is NULL.  Not thread-safe: call it once, at start-up.
 */
typedef void *(*aw_malloc_fn)(size_t size);
typedef void *(*aw_realloc_fn)(void *ptr, size_t size);
typedef void *(*aw_calloc_fn)(size_t count, size_t size);
typedef void (*aw_free_fn)(void *ptr);

AW_EXTERN int aw_replace_allocator(aw_malloc_fn malloc_fn,
                                   aw_realloc_fn realloc_fn,
                                   aw_calloc_fn calloc_fn, aw_free_fn free_fn);

/*
 * aw_version - the version of the library running, "MAJOR.MINOR.PATCH"
 * (static).  <await/version.h>, included here, gives the version a
 * program is compiled against: AW_VERSION_MAJOR, AW_VERSION_MINOR,
 * AW_VERSION_PATCH, AW_VERSION_HEX (0xMMmmpp) and AW_VERSION_STRING, the
 * string aw_version() returns when library and header are one release.
 * All come from the one version configure was given.  Thread-safe.
 */
AW_EXTERN const char *aw_version(void);

#ifdef __cplusplus
}
#endif
#endif /* AWAIT_CORE_H */

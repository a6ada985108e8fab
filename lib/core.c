/* SPDX-License-Identifier: MIT */
/* core.c: error names and descriptions, and the replaceable allocator that
 * every allocation in the library goes through. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "await/core.h"
#include "core-internal.h"

static struct {
    aw_malloc_fn malloc_fn;
    aw_realloc_fn realloc_fn;
    aw_calloc_fn calloc_fn;
    aw_free_fn free_fn;
} allocator = {malloc, realloc, calloc, free};

int
aw_replace_allocator(aw_malloc_fn malloc_fn, aw_realloc_fn realloc_fn,
                     aw_calloc_fn calloc_fn, aw_free_fn free_fn)
{
    if (malloc_fn == NULL || realloc_fn == NULL || calloc_fn == NULL ||
        free_fn == NULL)
        return -EINVAL;
    allocator.malloc_fn = malloc_fn;
    allocator.realloc_fn = realloc_fn;
    allocator.calloc_fn = calloc_fn;
    allocator.free_fn = free_fn;
    return 0;
}

void *
aw__malloc(size_t size)
{
    return allocator.malloc_fn(size ? size : 1);
}

void *
aw__calloc(size_t count, size_t size)
{
    return allocator.calloc_fn(count ? count : 1, size ? size : 1);
}

void *
aw__realloc(void *ptr, size_t size)
{
    return allocator.realloc_fn(ptr, size ? size : 1);
}

void *
aw__reallocarray(void *ptr, size_t count, size_t size)
{
    if (size != 0 && count > (size_t)-1 / size)
        return NULL;
    return aw__realloc(ptr, count * size);
}

void
aw__free(void *ptr)
{
    if (ptr != NULL)
        allocator.free_fn(ptr);
}

char *
aw__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = aw__malloc(n);

    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

void
aw__pool_init(struct aw__pool *pool, size_t obj_size, size_t per_slab)
{
    memset(pool, 0, sizeof(*pool));
    if (obj_size < sizeof(void *))
        obj_size = sizeof(void *);
    pool->obj_size = (obj_size + 7) & ~(size_t)7;
    pool->per_slab = per_slab ? per_slab : 1;
}

int
aw__pool_grow(struct aw__pool *pool)
{
    /* The slab's first 16 bytes link it; objects follow, 8-aligned. */
    char *slab = aw__malloc(16 + pool->obj_size * pool->per_slab);
    size_t i;

    if (slab == NULL)
        return -ENOMEM;
    *(void **)slab = pool->slabs;
    pool->slabs = slab;
    for (i = pool->per_slab; i-- > 0;) {
        void *obj = slab + 16 + i * pool->obj_size;

        *(void **)obj = pool->free;
        pool->free = obj;
    }
    pool->nfree += pool->per_slab;
    return 0;
}

void
aw__pool_destroy(struct aw__pool *pool)
{
    while (pool->slabs != NULL) {
        void *next = *(void **)pool->slabs;

        aw__free(pool->slabs);
        pool->slabs = next;
    }
    pool->free = NULL;
    pool->nfree = 0;
}

/* The errno values a network daemon meets; names come from this table so
 * that they do not depend on the C library having strerrorname_np(). */
#define AW__SYS_ERRNO_MAP(XX)                                                \
    XX(EPERM) XX(ENOENT) XX(ESRCH) XX(EINTR) XX(EIO) XX(ENXIO) XX(E2BIG)     \
    XX(ENOEXEC) XX(EBADF) XX(ECHILD) XX(EAGAIN) XX(ENOMEM) XX(EACCES)        \
    XX(EFAULT) XX(EBUSY) XX(EEXIST) XX(EXDEV) XX(ENODEV) XX(ENOTDIR)         \
    XX(EISDIR) XX(EINVAL) XX(ENFILE) XX(EMFILE) XX(ENOTTY) XX(EFBIG)         \
    XX(ENOSPC) XX(ESPIPE) XX(EROFS) XX(EMLINK) XX(EPIPE) XX(EDOM)            \
    XX(ERANGE) XX(ENAMETOOLONG) XX(ENOSYS) XX(ENOTEMPTY) XX(ELOOP)           \
    XX(ENOTSOCK) XX(EDESTADDRREQ) XX(EMSGSIZE) XX(EPROTOTYPE)                \
    XX(ENOPROTOOPT) XX(EPROTONOSUPPORT) XX(EOPNOTSUPP) XX(EAFNOSUPPORT)      \
    XX(EADDRINUSE) XX(EADDRNOTAVAIL) XX(ENETDOWN) XX(ENETUNREACH)            \
    XX(ECONNABORTED) XX(ECONNRESET) XX(ENOBUFS) XX(EISCONN) XX(ENOTCONN)     \
    XX(ETIMEDOUT) XX(ECONNREFUSED) XX(EHOSTUNREACH) XX(EALREADY)             \
    XX(EINPROGRESS) XX(ECANCELED) XX(EOVERFLOW) XX(EILSEQ) XX(EPROTO)      \
    XX(EBADMSG) XX(ESHUTDOWN) XX(EHOSTDOWN) XX(EDEADLK) XX(ENODATA)

const char *
aw_err_name(int code)
{
    switch (code) {
#define AW__LIB_NAME(name, value, text)                                      \
    case (value):                                                            \
        return "AW_E" #name;
        AW_ERRNO_MAP(AW__LIB_NAME)
#undef AW__LIB_NAME
    case 0:
        return "OK";
    default:
        break;
    }
    switch (-code) {
#define AW__SYS_NAME(name)                                                   \
    case name:                                                               \
        return #name;
        AW__SYS_ERRNO_MAP(AW__SYS_NAME)
#undef AW__SYS_NAME
    default:
        return "UNKNOWN";
    }
}

const char *
aw_strerror(int code)
{
    switch (code) {
#define AW__LIB_TEXT(name, value, text)                                      \
    case (value):                                                            \
        return text;
        AW_ERRNO_MAP(AW__LIB_TEXT)
#undef AW__LIB_TEXT
    case 0:
        return "success";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
#ifdef HAVE_STRERRORDESC_NP
        const char *s = strerrordesc_np(-code);
        if (s != NULL)
            return s;
#else
        /* Only the names we know are static; strerror() of others is not. */
        if (strcmp(aw_err_name(code), "UNKNOWN") != 0)
            return strerror(-code);
#endif
    }
    return "unknown error";
}

const char *
aw_version(void)
{
    return PACKAGE_VERSION;
}

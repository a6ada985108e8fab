/* SPDX-License-Identifier: MIT */
/* core-internal.h: the library's allocator and small helpers shared by the
 * modules.  Never installed. */
#ifndef AWAIT_CORE_INTERNAL_H
#define AWAIT_CORE_INTERNAL_H

#include <stddef.h>

void *aw__malloc(size_t size);
void *aw__calloc(size_t count, size_t size);
void *aw__realloc(void *ptr, size_t size);
void *aw__reallocarray(void *ptr, size_t count, size_t size);
void aw__free(void *ptr);
char *aw__strdup(const char *s);

#if defined(__GNUC__)
#define AW__LIKELY(x) __builtin_expect(!!(x), 1)
#define AW__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define AW__LIKELY(x) (x)
#define AW__UNLIKELY(x) (x)
#endif

/* A pool of fixed-size objects carved from slabs: no system allocation per
 * object on the hot paths.  Memory goes back to the system only when the
 * pool is destroyed.  Single-threaded: each loop owns its pools. */
struct aw__pool {
    void *free;      /* free objects, linked through their first word */
    void *slabs;     /* slabs, linked through their first word */
    size_t obj_size; /* a multiple of 8, at least sizeof(void *) */
    size_t per_slab;
    size_t live;  /* objects handed out */
    size_t nfree; /* objects on the free list */
};

void aw__pool_init(struct aw__pool *pool, size_t obj_size, size_t per_slab);
int aw__pool_grow(struct aw__pool *pool);
void aw__pool_destroy(struct aw__pool *pool);

static inline void *
aw__pool_get(struct aw__pool *pool)
{
    void *obj;

    if (pool->free == NULL && aw__pool_grow(pool) != 0)
        return NULL;
    obj = pool->free;
    pool->free = *(void **)obj;
    pool->live++;
    pool->nfree--;
    return obj;
}

static inline void
aw__pool_put(struct aw__pool *pool, void *obj)
{
    *(void **)obj = pool->free;
    pool->free = obj;
    pool->live--;
    pool->nfree++;
}

#define AW__CONTAINER_OF(ptr, type, member)                                  \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#endif /* AWAIT_CORE_INTERNAL_H */

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

#define AW__CONTAINER_OF(ptr, type, member)                                  \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#endif /* AWAIT_CORE_INTERNAL_H */

/* xalloc.h: allocation that aborts on out-of-memory, the one place the process may die for it. */
#ifndef CQRS_XALLOC_H
#define CQRS_XALLOC_H

#include <stddef.h>

/* malloc() that never returns NULL: it logs and aborts on out-of-memory. */
void *xmalloc(size_t size);
/* calloc() that never returns NULL. */
void *xcalloc(size_t n, size_t size);
/* realloc() that never returns NULL. */
void *xrealloc(void *ptr, size_t size);
/* strdup() that never returns NULL; caller frees with free(). */
char *xstrdup(const char *s);
/* strndup() that never returns NULL; caller frees with free(). */
char *xstrndup(const char *s, size_t n);
/* asprintf() that never fails; returns the new string, caller frees with free(). */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs out-of-memory for an allocation of size bytes and aborts; for allocators of other libraries.
 */
_Noreturn void xoom(size_t size);

#endif

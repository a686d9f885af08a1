/* strmap.h: a hash map from NUL-terminated string keys to borrowed pointers. */
#ifndef CQRS_STRMAP_H
#define CQRS_STRMAP_H

#include <stddef.h>

typedef struct strmap strmap;

/* Creates an empty map; caller frees with strmap_free(). */
strmap *strmap_new(void);
/* Frees the map and its key copies; values are the caller's. */
void strmap_free(strmap *m);
/* Inserts or replaces key (copied) -> value (borrowed); returns the previous value or NULL. */
void *strmap_put(strmap *m, const char *key, void *value);
/* The value for key, or NULL. */
void *strmap_get(const strmap *m, const char *key);
/* Removes key; returns its value or NULL. */
void *strmap_remove(strmap *m, const char *key);
/* Number of entries. */
size_t strmap_size(const strmap *m);
/* Calls fn for every entry (the map must not change meanwhile). */
void strmap_each(const strmap *m, void (*fn)(const char *key, void *value, void *arg), void *arg);

#endif

/* strmap.c: separate chaining, power-of-two buckets, FNV-1a, doubling at load factor 1. */
#include "core/strmap.h"

#include "core/xalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    char key[];
} entry;

struct strmap {
    entry **buckets;
    size_t nbuckets; /* power of two */
    size_t size;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

strmap *strmap_new(void)
{
    strmap *m = xcalloc(1, sizeof(*m));
    m->nbuckets = 16;
    m->buckets = xcalloc(m->nbuckets, sizeof(entry *));
    return m;
}

void strmap_free(strmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    }
    free(m->buckets);
    free(m);
}

static entry **find(const strmap *m, const char *key, uint64_t h)
{
    entry **p = &m->buckets[h & (m->nbuckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->next;
    return p;
}

static void grow(strmap *m)
{
    size_t n = m->nbuckets * 2;
    entry **b = xcalloc(n, sizeof(entry *));
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

void *strmap_put(strmap *m, const char *key, void *value)
{
    uint64_t h = fnv1a(key);
    entry **p = find(m, key, h);
    if (*p) {
        void *old = (*p)->value;
        (*p)->value = value;
        return old;
    }
    size_t len = strlen(key);
    entry *e = xmalloc(sizeof(*e) + len + 1);
    memcpy(e->key, key, len + 1);
    e->hash = h;
    e->value = value;
    e->next = NULL;
    *p = e;
    if (++m->size > m->nbuckets)
        grow(m);
    return NULL;
}

void *strmap_get(const strmap *m, const char *key)
{
    entry **p = find(m, key, fnv1a(key));
    return *p ? (*p)->value : NULL;
}

void *strmap_remove(strmap *m, const char *key)
{
    entry **p = find(m, key, fnv1a(key));
    if (!*p)
        return NULL;
    entry *e = *p;
    void *v = e->value;
    *p = e->next;
    free(e);
    m->size--;
    return v;
}

size_t strmap_size(const strmap *m)
{
    return m->size;
}

void strmap_each(const strmap *m, void (*fn)(const char *key, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i]; e; e = e->next)
            fn(e->key, e->value, arg);
    }
}

/* ratelimit.c: token buckets in a map under one mutex (a request holds it for a lookup). */
#include "ratelimit.h"

#include "core/strmap.h"
#include "core/xalloc.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct bucket {
    double tokens;
    long long at_us; /* when tokens was last brought up to date */
} bucket;

struct ratelimit {
    pthread_mutex_t lock;
    strmap *buckets; /* key -> bucket */
    double rate, burst;
};

ratelimit *ratelimit_new(double rate, double burst)
{
    ratelimit *r = xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->buckets = strmap_new();
    r->rate = rate;
    r->burst = burst;
    return r;
}

static void free_bucket(const char *key, void *value, void *arg)
{
    (void)key, (void)arg;
    free(value);
}

void ratelimit_free(ratelimit *r)
{
    if (!r)
        return;
    strmap_each(r->buckets, free_bucket, NULL);
    strmap_free(r->buckets);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

long long ratelimit_take(ratelimit *r, const char *key, long long now_us)
{
    pthread_mutex_lock(&r->lock);
    bucket *b = strmap_get(r->buckets, key);
    if (!b) {
        b = xmalloc(sizeof(*b));
        b->tokens = r->burst;
        b->at_us = now_us;
        strmap_put(r->buckets, key, b);
    }
    if (now_us > b->at_us) {
        b->tokens = fmin(r->burst, b->tokens + (double)(now_us - b->at_us) * r->rate / 1e6);
        b->at_us = now_us;
    }
    long long wait_us = 0;
    if (b->tokens >= 1)
        b->tokens -= 1;
    else
        wait_us = (long long)ceil((1 - b->tokens) * 1e6 / r->rate);
    pthread_mutex_unlock(&r->lock);
    return wait_us;
}

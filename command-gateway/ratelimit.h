/*
 * ratelimit.h: one token bucket per key (a tenant), shared by the workers of a process. A bucket
 * holds up to burst tokens and gains rate tokens a second; each request takes one. The limit is
 * per process: with N gateway replicas a tenant gets up to N times the rate.
 */
#ifndef CQRS_RATELIMIT_H
#define CQRS_RATELIMIT_H

typedef struct ratelimit ratelimit;

/* rate > 0 tokens a second, burst >= 1. Thread-safe. */
ratelimit *ratelimit_new(double rate, double burst);
void ratelimit_free(ratelimit *r);

/*
 * Takes a token from key's bucket at now_us (a monotonic clock). Returns 0 when one was there,
 * else the microseconds until the next one (the request is refused and takes nothing).
 */
long long ratelimit_take(ratelimit *r, const char *key, long long now_us);

#endif

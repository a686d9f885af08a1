/*
 * retryafter.h: the Retry-After of a 503, from what the gateway sees when it turns a request
 * away, so that clients neither hammer a gateway that cannot serve them nor stay away from one
 * that can:
 *   - a full waiting room empties within one sync.timeout_ms (every held request is answered by
 *     its deadline): the advice grows with the share of the room in use, up to that timeout;
 *   - a dependency gone (PostgreSQL or Kafka) is likely to stay gone longer the longer it has been
 *     gone: 1 s, plus 1 s for each 2 s of the outage so far, up to RETRY_AFTER_MAX_S. The outage
 *     is the connection's own (pgconn_down_since_us, kafka_producer_down_since_us), so the count
 *     starts again with the next one whether or not anything was turned away in between;
 *   - clients turned away together should not come back together: up to half again is added at
 *     random.
 * One per gateway worker (no locks); the caller passes the clock.
 */
#ifndef CQRS_RETRYAFTER_H
#define CQRS_RETRYAFTER_H

#include <stdint.h>

#define RETRY_AFTER_MAX_S 30

typedef struct retry_after {
    uint64_t rng; /* the jitter's state */
} retry_after;

void retry_after_init(retry_after *r, uint64_t seed);

/* Seconds to advise, 1..RETRY_AFTER_MAX_S. down_since_us: when the outage that makes the gateway
   unavailable began (0: none); load: the share of the waiting room in use (0..1); drain_s: how
   long a full room takes to empty. */
int retry_after_advise(retry_after *r, long long down_since_us, double load, int drain_s,
                       long long now_us);

#endif

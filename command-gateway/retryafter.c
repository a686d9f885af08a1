/*
 * retryafter.c: the Retry-After of a 503 (retryafter.h).
 */
#include "retryafter.h"

void retry_after_init(retry_after *r, uint64_t seed)
{
    r->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

/* xorshift64: the jitter needs spread, not secrecy. */
static uint64_t next_random(retry_after *r)
{
    uint64_t x = r->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return r->rng = x;
}

int retry_after_advise(retry_after *r, long long down_since_us, double load, int drain_s,
                       long long now_us)
{
    long long s = 1;
    if (down_since_us > 0 && down_since_us < now_us)
        s += (now_us - down_since_us) / 2000000;
    if (load > 0) {
        long long room = (long long)(load >= 1 ? drain_s : load * drain_s + 0.999);
        if (room > s)
            s = room;
    }
    if (s > RETRY_AFTER_MAX_S)
        s = RETRY_AFTER_MAX_S;
    s += (long long)(next_random(r) % (uint64_t)(s / 2 + 1));
    return s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : (int)s;
}

/* ids.c: identifiers and clocks. */
#include "core/ids.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <uuid/uuid.h>

/*
 * Each thread draws from its own pool of the kernel's random bytes, refilled 256 at a time: one
 * getrandom() per sixteen ids instead of one or more per id (libuuid's uuid_generate_random()
 * makes a getrandom() call and reseeds random() for every id). The bytes are the kernel's CSPRNG
 * output, used once each and wiped as they are; a child of fork() starts with an empty pool, so
 * parent and child never draw the same bytes.
 */
#define POOL_SIZE 256 /* getrandom() does not return short for up to 256 bytes */

static _Thread_local unsigned char pool[POOL_SIZE];
static _Thread_local size_t left;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void empty_pool(void)
{
    /* Runs in the child, on the thread that forked: the only one it has. */
    memset(pool, 0, sizeof(pool));
    left = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, empty_pool);
}

void ids_random(void *buf, size_t n)
{
    pthread_once(&atfork_once, register_atfork);
    unsigned char *out = buf;
    while (n) {
        if (left == 0) {
            /* Blocks only before the kernel's pool is first seeded (early boot). No fallback:
               an id made of predictable bytes is worse than a process that stops. */
            ssize_t got;
            while ((got = getrandom(pool, sizeof(pool), 0)) != (ssize_t)sizeof(pool)) {
                if (got < 0 && errno != EINTR) {
                    fprintf(stderr, "getrandom: %s\n", strerror(errno));
                    abort();
                }
            }
            left = sizeof(pool);
        }
        size_t take = n < left ? n : left;
        memcpy(out, pool + sizeof(pool) - left, take);
        memset(pool + sizeof(pool) - left, 0, take);
        left -= take;
        out += take;
        n -= take;
    }
}

void ids_uuid(char out[IDS_UUID_LEN])
{
    /* RFC 9562 section 5.7: unix_ts_ms (48 bits, big-endian), version 7, then random bits
       (rand_a and rand_b) around the variant. */
    uuid_t u = {0}; /* written whole by ids_random() */
    ids_random(u, sizeof(u));
    unsigned long long ms = (unsigned long long)ids_now_ms();
    for (int i = 0; i < 6; i++)
        u[i] = (unsigned char)(ms >> (8 * (5 - i)));
    u[6] = (unsigned char)(0x70 | (u[6] & 0x0f));
    u[8] = (unsigned char)(0x80 | (u[8] & 0x3f));
    uuid_unparse_lower(u, out);
}

void ids_name_uuid(const char *name, size_t len, char out[IDS_UUID_LEN])
{
    /* Fixed for good: changing it changes every fingerprint a claim holds. */
    static const uuid_t ns = {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1,
                              0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};
    uuid_t u;
    uuid_generate_sha1(u, ns, name, len);
    uuid_unparse_lower(u, out);
}

bool ids_is_uuid(const char *s)
{
    uuid_t u;
    return strlen(s) == IDS_UUID_LEN - 1 && uuid_parse(s, u) == 0;
}

long long ids_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long ids_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long long ids_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long long ids_monotonic_ms(void)
{
    return ids_monotonic_us() / 1000;
}

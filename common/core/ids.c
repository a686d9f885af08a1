/* ids.c: identifiers and clocks. */
#include "core/ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

void ids_uuid(char out[IDS_UUID_LEN])
{
    /* RFC 9562 section 5.7: unix_ts_ms (48 bits, big-endian), version 7, then random bits
       (rand_a and rand_b) around the variant. */
    uuid_t u;
    uuid_generate_random(u);
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

/* ids.c: identifiers and clocks. */
#include "ids.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

void ids_uuid(char out[IDS_UUID_LEN])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool ids_is_uuid(const char *s)
{
    uuid_t u;
    return strlen(s) == IDS_UUID_LEN - 1 && uuid_parse(s, u) == 0;
}

void ids_now_rfc3339(char out[IDS_TIME_LEN])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, IDS_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, IDS_TIME_LEN - n, ".%03ldZ", ts.tv_nsec / 1000000);
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

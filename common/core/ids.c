/* ids.c: identifiers and clocks. */
#include "core/ids.h"

#include "jsonschema/jsformat.h"

#include <stdio.h>
#include <stdlib.h>
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

/* The n digits at s as a number (the caller has checked they are digits). */
static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

bool ids_parse_rfc3339(const char *s, long long *epoch_ms)
{
    /* jsformat checks the grammar and the calendar; the fields then sit at fixed places. */
    if (!jsformat_find("date-time")(s, strlen(s)))
        return false;
    struct tm tm = {.tm_year = num(s, 4) - 1900,
                    .tm_mon = num(s + 5, 2) - 1,
                    .tm_mday = num(s + 8, 2),
                    .tm_hour = num(s + 11, 2),
                    .tm_min = num(s + 14, 2),
                    .tm_sec = num(s + 17, 2)};
    long long ms = 0;
    const char *p = s + 19;
    if (*p == '.') {
        int scale = 100;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (long long)scale * (*p - '0');
    }
    if (tm.tm_sec == 60) { /* timegm() would roll it into the next minute */
        tm.tm_sec = 59;
        ms = 999;
    }
    long long offset_s = 0;
    if (*p == '+' || *p == '-')
        offset_s = (*p == '-' ? -1 : 1) * (num(p + 1, 2) * 3600LL + num(p + 4, 2) * 60LL);
    *epoch_ms = ((long long)timegm(&tm) - offset_s) * 1000 + ms;
    return true;
}

void ids_format_rfc3339(long long epoch_ms, char out[IDS_TIME_LEN])
{
    long long ms = ((epoch_ms % 1000) + 1000) % 1000;
    time_t secs = (time_t)((epoch_ms - ms) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, IDS_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, IDS_TIME_LEN - n, ".%03lldZ", ms);
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

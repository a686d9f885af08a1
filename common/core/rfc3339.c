/* rfc3339.c: RFC 3339 dates and times: their grammar, parsing and formatting. */
#include "core/rfc3339.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* ASCII only: RFC 3339 is defined over ASCII, and isdigit() depends on the locale. */
static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly n digits at *p (within end) as a number; -1 when they are not there. */
static int digits(const char **p, const char *end, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (*p >= end || !is_digit(**p))
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

/* Consumes the character c at *p; false when it is not there. */
static bool expect(const char **p, const char *end, char c)
{
    if (*p >= end || **p != c)
        return false;
    (*p)++;
    return true;
}

/* Same, ignoring ASCII case (RFC 3339 5.6: "T" and "Z" may be lower case). */
static bool expect_ci(const char **p, const char *end, char upper)
{
    if (*p >= end || (**p != upper && **p != upper + ('a' - 'A')))
        return false;
    (*p)++;
    return true;
}

/* full-date: YYYY-MM-DD with the day valid for its month (and leap year). */
static bool parse_date(const char **p, const char *end)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = digits(p, end, 4);
    if (y < 0 || !expect(p, end, '-'))
        return false;
    int m = digits(p, end, 2);
    if (m < 1 || m > 12 || !expect(p, end, '-'))
        return false;
    int d = digits(p, end, 2);
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int max = days[m - 1] + (m == 2 && leap);
    return d >= 1 && d <= max;
}

/*
 * full-time: HH:MM:SS[.frac] then Z or +HH:MM / -HH:MM. A leap second (:60) is valid only where
 * it can happen: at 23:59:60 UTC, so the offset is taken off first.
 */
static bool parse_time(const char **p, const char *end)
{
    int h = digits(p, end, 2);
    if (h < 0 || h > 23 || !expect(p, end, ':'))
        return false;
    int min = digits(p, end, 2);
    if (min < 0 || min > 59 || !expect(p, end, ':'))
        return false;
    int sec = digits(p, end, 2);
    if (sec < 0 || sec > 60)
        return false;
    if (*p < end && **p == '.') {
        (*p)++;
        if (*p >= end || !is_digit(**p))
            return false;
        while (*p < end && is_digit(**p))
            (*p)++;
    }
    int offset = 0; /* minutes east of UTC */
    if (!expect_ci(p, end, 'Z')) {
        if (*p >= end || (**p != '+' && **p != '-'))
            return false;
        int sign = **p == '-' ? -1 : 1;
        (*p)++;
        int oh = digits(p, end, 2);
        if (oh < 0 || oh > 23 || !expect(p, end, ':'))
            return false;
        int om = digits(p, end, 2);
        if (om < 0 || om > 59)
            return false;
        offset = sign * (oh * 60 + om);
    }
    if (sec == 60) {
        int utc = ((h * 60 + min - offset) % 1440 + 1440) % 1440;
        if (utc != 23 * 60 + 59)
            return false;
    }
    return true;
}

bool rfc3339_date_time_valid(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    return parse_date(&p, end) && expect_ci(&p, end, 'T') && parse_time(&p, end) && p == end;
}

bool rfc3339_date_valid(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    return parse_date(&p, end) && p == end;
}

bool rfc3339_time_valid(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    return parse_time(&p, end) && p == end;
}

void rfc3339_now(char out[RFC3339_LEN])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, RFC3339_LEN - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The n digits at s as a number (the caller has checked they are digits). */
static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

bool rfc3339_parse(const char *s, long long *epoch_ms)
{
    /* The grammar and the calendar checked, the fields sit at fixed places. */
    if (!rfc3339_date_time_valid(s, strlen(s)))
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

void rfc3339_format(long long epoch_ms, char out[RFC3339_LEN])
{
    long long ms = ((epoch_ms % 1000) + 1000) % 1000;
    time_t secs = (time_t)((epoch_ms - ms) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, RFC3339_LEN - n, ".%03lldZ", ms);
}

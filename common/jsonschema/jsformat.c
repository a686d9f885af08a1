/* jsformat.c: format checkers for JSON Schema: RFC 3339 dates and times, UUIDs, e-mail addresses.
 */
#include "jsonschema/jsformat.h"

#include <arpa/inet.h>
#include <string.h>

/* ASCII only: RFC 3339 and RFC 5321 are defined over ASCII, and isdigit() depends on the locale. */
static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
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

static bool f_date_time(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    return parse_date(&p, end) && expect_ci(&p, end, 'T') && parse_time(&p, end) && p == end;
}

static bool f_date(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    return parse_date(&p, end) && p == end;
}

static bool f_time(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    return parse_time(&p, end) && p == end;
}

/* 8-4-4-4-12 hexadecimal digits; the version and variant nibbles are not restricted. */
static bool f_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

/* atext of RFC 5322 3.2.3. */
static bool is_atext(char c)
{
    return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Local part: a dot-string (atoms joined by single dots) or a quoted string. */
static bool email_local(const char *s, size_t len)
{
    if (len == 0)
        return false;
    if (s[0] == '"') {
        if (len < 2 || s[len - 1] != '"')
            return false;
        for (size_t i = 1; i < len - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\') { /* quoted-pair: backslash and any printable ASCII */
                if (++i >= len - 1 || s[i] < 32 || s[i] > 126)
                    return false;
            } else if (c < 32 || c > 126 || c == '"') {
                return false;
            }
        }
        return true;
    }
    bool after_dot = true; /* a dot may neither lead, trail nor follow a dot */
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (after_dot)
                return false;
            after_dot = true;
        } else if (is_atext(s[i])) {
            after_dot = false;
        } else {
            return false;
        }
    }
    return !after_dot;
}

/* A host name: dot-separated labels of letters, digits and inner hyphens, 1..63 bytes each. */
static bool email_hostname(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (is_alpha(s[i]) || is_digit(s[i]) || (s[i] == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

/* "[1.2.3.4]" or "[IPv6:...]", checked by the C library's address parser. */
static bool email_literal(const char *s, size_t len)
{
    char text[64];
    unsigned char addr[16];
    if (len < 2 || s[len - 1] != ']' || len - 2 >= sizeof text)
        return false;
    memcpy(text, s + 1, len - 2);
    text[len - 2] = '\0';
    if (strncmp(text, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, text + 5, addr) == 1;
    return inet_pton(AF_INET, text, addr) == 1;
}

static bool f_email(const char *s, size_t len)
{
    if (memchr(s, '\0', len))
        return false;
    /* The local part may hold a quoted "@": the domain starts after the last one. */
    const char *at = NULL;
    for (const char *p = s; p < s + len; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return false;
    size_t local = (size_t)(at - s), domain = len - local - 1;
    if (!email_local(s, local))
        return false;
    return at[1] == '[' ? email_literal(at + 1, domain) : email_hostname(at + 1, domain);
}

static const struct {
    const char *name;
    jsformat_fn check;
} formats[] = {
    {"date-time", f_date_time}, {"date", f_date},   {"time", f_time},
    {"uuid", f_uuid},           {"email", f_email},
};

jsformat_fn jsformat_find(const char *name)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (strcmp(formats[i].name, name) == 0)
            return formats[i].check;
    return NULL;
}

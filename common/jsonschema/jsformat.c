/* jsformat.c: format checkers for JSON Schema: RFC 3339 dates and times (core/rfc3339), UUIDs,
   e-mail addresses. */
#include "jsonschema/jsformat.h"

#include "core/rfc3339.h"

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

static bool f_date_time(const char *s, size_t len)
{
    return rfc3339_date_time_valid(s, len);
}

static bool f_date(const char *s, size_t len)
{
    return rfc3339_date_valid(s, len);
}

static bool f_time(const char *s, size_t len)
{
    return rfc3339_time_valid(s, len);
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

/* jsontext.c: JSON text written into a growing buffer (jsontext.h). */
#include "core/jsontext.h"

#include "core/utf8.h"
#include "core/xalloc.h"

#include <stdlib.h>
#include <string.h>

/* Room for n more bytes and the final NUL. */
static void reserve(jsontext *t, size_t n)
{
    if (t->len + n + 1 <= t->cap)
        return;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + n + 1)
        cap *= 2;
    t->data = xrealloc(t->data, cap);
    t->cap = cap;
}

void jsontext_raw(jsontext *t, const char *s, size_t n)
{
    reserve(t, n);
    memcpy(t->data + t->len, s, n);
    t->len += n;
}

void jsontext_str(jsontext *t, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s) {
        JSONTEXT_LIT(t, "null");
        return;
    }
    size_t n = strlen(s);
    if (!utf8_valid(s, n, false)) {
        t->failed = true;
        return;
    }
    reserve(t, 6 * n + 2); /* the longest escape, \u00XX, for every byte */
    char *out = t->data + t->len;
    *out++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        } else if (c < 0x20) {
            const char *named = c == '\n' ? "n" : c == '\t' ? "t" : c == '\r' ? "r" : NULL;
            *out++ = '\\';
            if (named) {
                *out++ = *named;
            } else {
                *out++ = 'u';
                *out++ = '0';
                *out++ = '0';
                *out++ = hex[c >> 4];
                *out++ = hex[c & 15];
            }
        } else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    t->len = (size_t)(out - t->data);
}

void jsontext_int(jsontext *t, long long v)
{
    char digits[24]; /* filled from the end */
    char *at = digits + sizeof(digits);
    /* Through the magnitude as unsigned: -LLONG_MIN does not fit a long long. */
    unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--at = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    if (v < 0)
        *--at = '-';
    jsontext_raw(t, at, (size_t)(digits + sizeof(digits) - at));
}

static void dump(jsontext *t, const json_t *v, size_t flags)
{
    if (!v) {
        JSONTEXT_LIT(t, "null");
        return;
    }
    flags |= JSON_COMPACT | JSON_ENCODE_ANY;
    size_t room = t->cap > t->len + 1 ? t->cap - t->len - 1 : 0;
    size_t n = json_dumpb(v, t->data ? t->data + t->len : NULL, room, flags);
    if (n == 0) { /* nothing JSON encodes to no bytes: it failed */
        t->failed = true;
        return;
    }
    if (n > room) { /* it did not fit: the size is now known */
        reserve(t, n);
        json_dumpb(v, t->data + t->len, n, flags);
    }
    t->len += n;
}

void jsontext_json(jsontext *t, const json_t *v)
{
    dump(t, v, 0);
}

void jsontext_json_sorted(jsontext *t, const json_t *v)
{
    dump(t, v, JSON_SORT_KEYS);
}

void jsontext_text(jsontext *t, const char *v)
{
    if (v)
        jsontext_raw(t, v, strlen(v));
    else
        JSONTEXT_LIT(t, "null");
}

char *jsontext_finish(jsontext *t, size_t *len)
{
    char *s = NULL;
    if (!t->failed) {
        reserve(t, 0);
        t->data[t->len] = '\0';
        s = t->data;
        if (len)
            *len = t->len;
    } else {
        free(t->data);
    }
    *t = (jsontext){0};
    return s;
}

void jsontext_free(jsontext *t)
{
    free(t->data);
    *t = (jsontext){0};
}

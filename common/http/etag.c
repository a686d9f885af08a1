/* etag.c: entity-tag lists of conditional requests (RFC 9110 §8.8.3, §13.1.1, §13.1.2). */
#include "http/etag.h"

#include <stdio.h>
#include <string.h>

/* etagc = %x21 / %x23-7E / obs-text */
static bool etagc(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c != 0x7f);
}

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Parses one entity-tag at s into t; returns the character after it, or NULL. */
static const char *parse_one(const char *s, etag_item *t)
{
    t->weak = s[0] == 'W' && s[1] == '/';
    if (t->weak)
        s += 2;
    if (*s != '"')
        return NULL;
    t->tag = ++s;
    while (etagc((unsigned char)*s))
        s++;
    if (*s != '"')
        return NULL;
    t->len = (size_t)(s - t->tag);
    return s + 1;
}

bool etag_list_parse(const char *value, etag_list *out)
{
    memset(out, 0, sizeof(*out));
    const char *s = skip_ows(value);
    if (*s == '*') {
        out->any = true;
        return *skip_ows(s + 1) == '\0';
    }
    /* #element: empty elements are allowed ("a, , b"), but one element at least is needed. */
    for (;;) {
        s = skip_ows(s);
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s == '\0')
            return out->n > 0;
        if (out->n == ETAG_LIST_MAX)
            return false;
        s = parse_one(s, &out->tags[out->n++]);
        if (!s)
            return false;
        s = skip_ows(s);
        if (*s != ',' && *s != '\0')
            return false;
    }
}

bool etag_list_matches(const etag_list *l, const char *current, bool strong)
{
    if (l->any)
        return true;
    size_t len = strlen(current);
    for (size_t i = 0; i < l->n; i++) {
        const etag_item *t = &l->tags[i];
        if ((!strong || !t->weak) && t->len == len && memcmp(t->tag, current, len) == 0)
            return true;
    }
    return false;
}

void etag_of_version(long long version, char out[ETAG_VERSION_LEN])
{
    snprintf(out, ETAG_VERSION_LEN, "\"%lld\"", version);
}

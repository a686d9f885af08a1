/* jtext.h: JSON written with single quotes, for test tables (header-only, for Check tests). */
#ifndef CQRS_TEST_JTEXT_H
#define CQRS_TEST_JTEXT_H

#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/*
 * Parses text as JSON after turning every ' into " (tables read better without escaped
 * quotes); any JSON value is accepted. Fails the test on bad JSON. Caller releases the result.
 */
static inline json_t *J(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    free(s);
    ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, e.text);
    return j;
}

#endif

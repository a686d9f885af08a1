/* utf8.h: well-formed UTF-8, as JSON text, jsonb and CloudEvents strings require it. */
#ifndef CQRS_UTF8_H
#define CQRS_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when s[0..len) is well-formed UTF-8: no overlong forms, surrogates or code points past
 * U+10FFFF. With text, also none of the code points a CloudEvents String forbids (controls,
 * noncharacters).
 */
bool utf8_valid(const char *s, size_t len, bool text);

#endif

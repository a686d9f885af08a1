/* jsformat.h: the string formats JSON Schema's "format" keyword asserts here. */
#ifndef CQRS_JSFORMAT_H
#define CQRS_JSFORMAT_H

#include <stdbool.h>
#include <stddef.h>

/* Checks the text of a string instance (len bytes, UTF-8) against one format. */
typedef bool (*jsformat_fn)(const char *s, size_t len);

/*
 * The checker of a supported format: "date-time", "date", "time" (RFC 3339 section 5.6, with
 * leap seconds only at 23:59:60 UTC), "uuid" (RFC 9562 text form, any version), "email" (RFC 5321
 * Mailbox: dot-atom or quoted local part; a host name or an IPv4 / IPv6 address literal). NULL
 * for any other name, which the schema compiler refuses: a format is never silently ignored.
 */
jsformat_fn jsformat_find(const char *name);

#endif

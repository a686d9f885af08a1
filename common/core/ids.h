/* ids.h: identifiers: command ids and assigned idempotency keys (libuuid), RFC 3339 times. */
#ifndef CQRS_IDS_H
#define CQRS_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define IDS_UUID_LEN 37 /* 36 characters + NUL */
#define IDS_TIME_LEN 32

/* Writes a new random (version 4) UUID in lower-case text form. */
void ids_uuid(char out[IDS_UUID_LEN]);
/* True if s is a UUID in canonical text form (any case). */
bool ids_is_uuid(const char *s);
/* Writes the current UTC time as RFC 3339 with milliseconds, e.g. 2026-11-22T01:02:03.456Z. */
void ids_now_rfc3339(char out[IDS_TIME_LEN]);
/*
 * Parses an RFC 3339 date-time ("2026-11-22T01:02:03.456Z", "...+02:00"; "T" and "Z" in any case)
 * into milliseconds since the epoch (fractions beyond milliseconds dropped, a leap second counted
 * as :59.999). Returns false when s is not one.
 */
bool ids_parse_rfc3339(const char *s, long long *epoch_ms) __attribute__((warn_unused_result));
/* Writes epoch_ms (milliseconds since the epoch) as RFC 3339 UTC with milliseconds. */
void ids_format_rfc3339(long long epoch_ms, char out[IDS_TIME_LEN]);
/* The current time in milliseconds since the epoch. */
long long ids_now_ms(void);
/* The current time in microseconds since the epoch. */
long long ids_now_us(void);
/* Monotonic clock in milliseconds, for deadlines and latency. */
long long ids_monotonic_ms(void);
/* Monotonic clock in microseconds. */
long long ids_monotonic_us(void);

#endif

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
/* Monotonic clock in milliseconds, for deadlines and latency. */
long long ids_monotonic_ms(void);
/* Monotonic clock in microseconds. */
long long ids_monotonic_us(void);

#endif

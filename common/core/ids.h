/* ids.h: identifiers (command ids, assigned idempotency keys, fingerprints; libuuid) and clocks. */
#ifndef CQRS_IDS_H
#define CQRS_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define IDS_UUID_LEN 37 /* 36 characters + NUL */

/* Writes a new random (version 4) UUID in lower-case text form. */
void ids_uuid(char out[IDS_UUID_LEN]);
/*
 * Writes the name-based (version 5, SHA-1) UUID of name[0..len) in the project's namespace: the
 * same name gives the same UUID in every process and release (the gateway's request fingerprints).
 */
void ids_name_uuid(const char *name, size_t len, char out[IDS_UUID_LEN]);
/* True if s is a UUID in canonical text form (any case). */
bool ids_is_uuid(const char *s);
/* The current time in milliseconds since the epoch. */
long long ids_now_ms(void);
/* The current time in microseconds since the epoch. */
long long ids_now_us(void);
/* Monotonic clock in milliseconds, for deadlines and latency. */
long long ids_monotonic_ms(void);
/* Monotonic clock in microseconds. */
long long ids_monotonic_us(void);

#endif

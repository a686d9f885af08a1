/* ids.h: identifiers (command ids, assigned idempotency keys, fingerprints; libuuid) and clocks. */
#ifndef CQRS_IDS_H
#define CQRS_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define IDS_UUID_LEN 37 /* 36 characters + NUL */

/* Fills buf with n bytes from the kernel's CSPRNG (getrandom()), drawn from a per-thread pool. */
void ids_random(void *buf, size_t n);
/*
 * Writes a new time-ordered (version 7, RFC 9562) UUID in lower-case text form: the first 48
 * bits are the current Unix time in milliseconds, the rest (but version and variant) random.
 * Ids made later sort later (to the millisecond), so the indexes they key grow at their end
 * instead of at random places.
 */
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

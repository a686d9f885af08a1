/*
 * rfc3339.h: RFC 3339 (section 5.6) dates and times, the project's one parser of them: the JSON
 * Schema formats, ce_time, the operator tools' from_time/since/until and the projections'
 * timestamptz columns all read them here.
 */
#ifndef CQRS_RFC3339_H
#define CQRS_RFC3339_H

#include <stdbool.h>
#include <stddef.h>

#define RFC3339_LEN 32 /* what rfc3339_format() and rfc3339_now() write, NUL included */

/*
 * True when s[0..len) is a date-time, a full-date or a full-time: the grammar in ASCII, "T" and
 * "Z" in either case, the day valid for its month and year, and a leap second (:60) only where
 * one can happen, at 23:59:60 UTC.
 */
bool rfc3339_date_time_valid(const char *s, size_t len);
bool rfc3339_date_valid(const char *s, size_t len);
bool rfc3339_time_valid(const char *s, size_t len);

/*
 * Parses a date-time ("2026-11-22T01:02:03.456Z", "...+02:00") into milliseconds since the epoch
 * (fractions beyond milliseconds dropped, a leap second counted as :59.999). False when s is not
 * one.
 */
bool rfc3339_parse(const char *s, long long *epoch_ms) __attribute__((warn_unused_result));
/* Writes epoch_ms as a UTC date-time with milliseconds, e.g. 2026-11-22T01:02:03.456Z. */
void rfc3339_format(long long epoch_ms, char out[RFC3339_LEN]);
/* Writes the current time the same way. */
void rfc3339_now(char out[RFC3339_LEN]);

#endif

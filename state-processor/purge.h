/*
 * purge.h: retention of idempotency records. Finished commands older than the retention are
 * deleted on a timer, so their keys may start new requests; unfinished ones are never touched.
 */
#ifndef CQRS_PURGE_H
#define CQRS_PURGE_H

#include <stddef.h>

struct event_base;
typedef struct purge purge;

/*
 * Starts purging every interval_s seconds (the first run right away), on its own PostgreSQL
 * connection so that it never runs inside the processor's transactions. retention_s is the age of
 * finished_at after which a command record goes. NULL with err when conninfo is invalid.
 */
purge *purge_new(struct event_base *base, const char *conninfo, long long retention_s,
                 long long interval_s, char *err, size_t errlen);
/* Rows deleted since start. */
long long purge_deleted(const purge *p);
/* Stops and frees. */
void purge_free(purge *p);

#endif

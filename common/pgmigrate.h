/* pgmigrate.h: blocking SQL migration runner, used at start-up before the event loop runs. */
#ifndef CQRS_PGMIGRATE_H
#define CQRS_PGMIGRATE_H

#include <stddef.h>

/*
 * Applies every dir/ *.sql not yet applied, in byte-wise name order, each in its own transaction,
 * recording it in table schema_migrations(name text primary key, applied_at timestamptz).
 * Serialised across concurrent processes by pg_advisory_xact_lock. Applying twice is a no-op.
 * A file may hold several statements but no transaction control (BEGIN/COMMIT) of its own.
 * Returns 0, or -1 with err naming the file and PostgreSQL's message. Blocking: call before the
 * event loop starts.
 */
int pgmigrate_apply(const char *conninfo, const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif

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

/*
 * Runs script (several statements, no transaction control of its own) in one transaction under
 * the lock pgmigrate_apply() takes, unless check_sql (may be NULL) answers true in its first
 * column: the script's effect is already in place, and nothing is locked. check_sql takes the
 * nparams text parameters params. name labels the errors. For idempotent schema statements that
 * are not migrations (e.g. tables derived from the domain files). Returns 0, or -1 with err.
 * Blocking: call before the event loop starts.
 */
int pgmigrate_ensure(const char *conninfo, const char *name, const char *check_sql, int nparams,
                     const char *const *params, const char *script, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif

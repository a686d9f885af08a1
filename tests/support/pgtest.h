/* pgtest.h: blocking PostgreSQL look-ups for the tests' final checks. */
#ifndef CQRS_TEST_PGTEST_H
#define CQRS_TEST_PGTEST_H

#include <libpq-fe.h>
#include <stddef.h>

/* First column of the first row as a number; -1 when there is no row or it is NULL. The query
   must succeed (a Check assertion otherwise). */
long long pgtest_int(PGconn *db, const char *sql);

/* Runs a statement that returns no rows; it must succeed (a Check assertion otherwise). */
void pgtest_exec(PGconn *db, const char *sql);

/* Polls sql (as pgtest_int) every 20 ms until it gives want or timeout_ms pass; returns the
   last value. */
long long pgtest_wait_int(PGconn *db, const char *sql, long long want, int timeout_ms);

/* A new, empty database named name on the runner's PostgreSQL (env CQRS_TEST_PG_CONNINFO),
   dropped first if it exists; its conninfo in conninfo. Check assertions on failure. */
void pgtest_create_db(const char *name, char *conninfo, size_t len);

#endif

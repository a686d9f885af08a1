/* pgtest.c: blocking PostgreSQL look-ups for the tests' final checks. */
#include "pgtest.h"

#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/ids.h"

long long pgtest_int(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long long v = PQntuples(res) && !PQgetisnull(res, 0, 0) ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return v;
}

long long pgtest_wait_int(PGconn *db, const char *sql, long long want, int timeout_ms)
{
    long long deadline = ids_monotonic_ms() + timeout_ms;
    long long v = pgtest_int(db, sql);
    while (v != want && ids_monotonic_ms() < deadline) {
        usleep(20 * 1000);
        v = pgtest_int(db, sql);
    }
    return v;
}

/* pgtest.c: blocking PostgreSQL look-ups for the tests' final checks. */
#include "pgtest.h"

#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/ids.h"
#include "waitfor.h"

long long pgtest_int(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long long v = PQntuples(res) && !PQgetisnull(res, 0, 0) ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return v;
}

typedef struct int_wait {
    PGconn *db;
    const char *sql;
    long long want, value;
} int_wait;

static bool int_is(void *arg)
{
    int_wait *w = arg;
    w->value = pgtest_int(w->db, w->sql);
    return w->value == w->want;
}

long long pgtest_wait_int(PGconn *db, const char *sql, long long want, int timeout_ms)
{
    int_wait w = {.db = db, .sql = sql, .want = want};
    waitfor(int_is, &w, timeout_ms);
    return w.value;
}

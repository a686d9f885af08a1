/* pgtest.c: blocking PostgreSQL look-ups for the tests' final checks. */
#include "pgtest.h"

#include <check.h>
#include <stdio.h>
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

void pgtest_exec(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
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

void pgtest_create_db(const char *name, char *conninfo, size_t len)
{
    const char *base_ci = getenv("CQRS_TEST_PG_CONNINFO");
    ck_assert_msg(base_ci && *base_ci, "CQRS_TEST_PG_CONNINFO is not set (make test sets it)");
    PGconn *admin = PQconnectdb(base_ci);
    ck_assert_msg(PQstatus(admin) == CONNECTION_OK, "%s", PQerrorMessage(admin));
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
    PQclear(PQexec(admin, sql));
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    PGresult *r = PQexec(admin, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQerrorMessage(admin));
    PQclear(r);
    PQfinish(admin);
    snprintf(conninfo, len, "%s dbname=%s", base_ci, name);
}

/* test_pgconn.c: pgconn and pgmigrate against a real PostgreSQL (env CQRS_TEST_PG_CONNINFO). */
#include "checkrun.h"
#include "core/log.h"
#include "pg/pgconn.h"
#include "pg/pgmigrate.h"
#include "core/xalloc.h"

#include <check.h>
#include <dirent.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000
#define MAXV       4

static const char *conninfo;

/* ---- helpers ------------------------------------------------------------------------------- */

/* What one callback saw; values are copied because the result is only borrowed. */
typedef struct {
    int calls;
    pgconn_status status;
    int ntuples, nfields;
    char *vals[MAXV]; /* row 0; NULL for SQL NULL */
    char sqlstate[6];
    char constraint[64];
    char error[256];
    long long affected;
    int *done; /* incremented on every call */
    int *order;
    int idx;
} rec;

static void rec_cb(const pgconn_result *r, void *arg)
{
    rec *q = arg;
    if (q->order) {
        q->order[*q->done] = q->idx;
    }
    q->calls++;
    q->status = pgconn_result_status(r);
    q->ntuples = pgconn_result_ntuples(r);
    q->nfields = pgconn_result_nfields(r);
    for (int i = 0; i < MAXV && i < q->nfields; i++) {
        const char *v = pgconn_result_value(r, 0, i);
        q->vals[i] = v ? xstrdup(v) : NULL;
    }
    snprintf(q->sqlstate, sizeof(q->sqlstate), "%s", pgconn_result_sqlstate(r));
    snprintf(q->constraint, sizeof(q->constraint), "%s", pgconn_result_constraint(r));
    snprintf(q->error, sizeof(q->error), "%s", pgconn_result_error(r));
    q->affected = pgconn_result_affected(r);
    (*q->done)++;
}

static void rec_clear(rec *q)
{
    for (int i = 0; i < MAXV; i++) {
        free(q->vals[i]);
        q->vals[i] = NULL;
    }
}

typedef struct {
    int ups, downs;
} states;

static void state_cb(bool up, void *arg)
{
    states *s = arg;
    if (up) {
        s->ups++;
    } else {
        s->downs++;
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Runs the loop until *counter reaches target or ms pass; true if it got there. */
static bool run_until(struct event_base *base, const int *counter, int target, int ms)
{
    bool timed_out = false;
    struct event *t = evtimer_new(base, on_timeout, &timed_out);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (*counter < target && !timed_out) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(t);
    return *counter >= target;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static pgconn *connect_or_fail(struct event_base *base, const char *ci, states *s)
{
    char err[256] = "";
    pgconn *c = pgconn_new(base, ci, s ? state_cb : NULL, s, err, sizeof(err));
    ck_assert_msg(c != NULL, "pgconn_new: %s", err);
    return c;
}

static void queue_or_fail(pgconn *c, const char *sql, int n, const char *const *v, rec *q)
{
    ck_assert_int_eq(pgconn_query(c, sql, n, v, rec_cb, q), 0);
}

/* Blocking admin statement on a separate session. */
static void admin_exec(const char *ci, const char *sql)
{
    PGconn *pg = PQconnectdb(ci);
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "connect: %s", PQerrorMessage(pg));
    PGresult *r = PQexec(pg, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
}

/* Blocking single-value query; caller frees the string. */
static char *admin_value(const char *ci, const char *sql)
{
    PGconn *pg = PQconnectdb(ci);
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "connect: %s", PQerrorMessage(pg));
    PGresult *r = PQexec(pg, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    char *v = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return v;
}

/* conninfo with dbname replaced; works for key=value strings and URIs alike. */
static char *with_dbname(const char *ci, const char *db)
{
    PQconninfoOption *opts = PQconninfoParse(ci, NULL);
    ck_assert_ptr_nonnull(opts);
    char *out = xstrdup("");
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") == 0 ? db : o->val;
        if (!v) {
            continue;
        }
        char *esc = xmalloc(strlen(v) * 2 + 1), *e = esc;
        for (const char *p = v; *p; p++) {
            if (*p == '\'' || *p == '\\') {
                *e++ = '\\';
            }
            *e++ = *p;
        }
        *e = '\0';
        char *next = xasprintf("%s%s='%s' ", out, o->keyword, esc);
        free(esc);
        free(out);
        out = next;
    }
    PQconninfoFree(opts);
    return out;
}

/* Creates a fresh database and returns its conninfo; *name receives the name to drop. */
static char *fresh_db(char *name, size_t len)
{
    static int seq;
    snprintf(name, len, "cqrs_test_%d_%d", (int)getpid(), seq++);
    char *sql = xasprintf("CREATE DATABASE %s", name);
    admin_exec(conninfo, sql);
    free(sql);
    return with_dbname(conninfo, name);
}

static void drop_db(const char *name)
{
    char *sql = xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    admin_exec(conninfo, sql);
    free(sql);
}

/* ---- simple SELECTs with parameters and NULLs ------------------------------------------------ */

typedef struct {
    const char *sql;
    int nparams;
    const char *params[3];
    int ntuples;
    int nfields;
    const char *expect[3]; /* row 0; NULL = expect SQL NULL */
} select_case;

static const select_case select_cases[] = {
    {"SELECT $1::int + $2::int", 2, {"2", "3"}, 1, 1, {"5"}},
    {"SELECT $1::text IS NULL, $1::text", 1, {NULL}, 1, 2, {"t", NULL}},
    {"SELECT $1::text || $2::text", 2, {"a'b\\", "\"c;--"}, 1, 1, {"a'b\\\"c;--"}},
    {"SELECT NULL::int, 42, ''", 0, {NULL}, 1, 3, {NULL, "42", ""}},
    {"SELECT 1 WHERE $1::bool", 1, {"false"}, 0, 1, {NULL}},
    {"SELECT generate_series(1, $1::int)", 1, {"3"}, 3, 1, {"1"}},
    {"SELECT coalesce($1, 'dflt'), $2::int IS NULL", 2, {NULL, NULL}, 1, 2, {"dflt", "t"}},
};

START_TEST(test_select)
{
    const select_case *tc = &select_cases[_i];
    struct event_base *base = event_base_new();
    int done = 0;
    rec q = {.done = &done};
    pgconn *c = connect_or_fail(base, conninfo, NULL);
    /* Queued before the connection is up: it must wait, not fail. */
    queue_or_fail(c, tc->sql, tc->nparams, tc->params, &q);
    ck_assert_int_eq(pgconn_pending(c), 1);
    ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
    ck_assert_msg(q.status == PGCONN_OK, "%s: %s", tc->sql, q.error);
    ck_assert_str_eq(q.error, "");
    ck_assert_int_eq(q.ntuples, tc->ntuples);
    ck_assert_int_eq(q.nfields, tc->nfields);
    ck_assert_int_eq(q.affected, tc->ntuples);
    for (int i = 0; tc->ntuples > 0 && i < tc->nfields; i++) {
        if (tc->expect[i]) {
            ck_assert_pstr_eq(q.vals[i], tc->expect[i]);
        } else {
            ck_assert_ptr_null(q.vals[i]);
        }
    }
    ck_assert_int_eq(pgconn_pending(c), 0);
    ck_assert(pgconn_connected(c));
    pgconn_free(c);
    ck_assert_int_eq(q.calls, 1);
    rec_clear(&q);
    event_base_free(base);
}
END_TEST

/* ---- errors between successful queries ------------------------------------------------------- */

typedef struct {
    const char *sql;
    int nparams;
    const char *params[1];
    const char *sqlstate;
} error_case;

static const error_case error_cases[] = {
    {"SELECT 1/0", 0, {NULL}, "22012"},
    {"SELECT * FROM no_such_table_xyz", 0, {NULL}, "42P01"},
    {"SELEC 1", 0, {NULL}, "42601"},
    {"SELECT $1::int", 1, {"not-a-number"}, "22P02"},
    {"SELECT 1; SELECT 2", 0, {NULL}, "42601"}, /* one statement per query */
    {"SELECT (SELECT 1 UNION SELECT 2)", 0, {NULL}, "21000"},
};

START_TEST(test_error_isolated)
{
    const error_case *tc = &error_cases[_i];
    struct event_base *base = event_base_new();
    int done = 0, order[3];
    rec q[3];
    memset(q, 0, sizeof(q));
    for (int i = 0; i < 3; i++) {
        q[i].done = &done;
        q[i].order = order;
        q[i].idx = i;
    }
    pgconn *c = connect_or_fail(base, conninfo, NULL);
    const char *before[] = {"before"};
    queue_or_fail(c, "SELECT $1::text", 1, before, &q[0]);
    queue_or_fail(c, tc->sql, tc->nparams, tc->params, &q[1]);
    queue_or_fail(c, "SELECT 'after'", 0, NULL, &q[2]);
    ck_assert(run_until(base, &done, 3, TIMEOUT_MS));
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(order[i], i);
        ck_assert_int_eq(q[i].calls, 1);
    }
    ck_assert_int_eq(q[0].status, PGCONN_OK);
    ck_assert_pstr_eq(q[0].vals[0], "before");
    ck_assert_int_eq(q[1].status, PGCONN_ERROR);
    ck_assert_str_eq(q[1].sqlstate, tc->sqlstate);
    ck_assert_msg(q[1].error[0] != '\0', "error message is empty");
    ck_assert_int_eq(q[1].ntuples, 0);
    ck_assert_int_eq(q[2].status, PGCONN_OK);
    ck_assert_pstr_eq(q[2].vals[0], "after");
    pgconn_free(c);
    for (int i = 0; i < 3; i++) {
        rec_clear(&q[i]);
    }
    event_base_free(base);
}
END_TEST

/* ---- many queries in flight at once, answered in order -------------------------------------- */

typedef struct {
    int n;        /* queries queued in one go */
    size_t send;  /* bytes of padding sent with each query */
    size_t reply; /* bytes of padding in each reply */
} many_case;

static const many_case many_cases[] = {
    {1000, 0, 0},        /* the latency-bound case */
    {10000, 0, 0},       /* the default queue bound, all in flight */
    {100, 256 << 10, 0}, /* 25 MB out: the socket fills, output waits for EV_WRITE */
    {50, 0, 1 << 20},    /* 50 MB back: results arrive across many reads */
};

START_TEST(test_many_in_order)
{
    const many_case *tc = &many_cases[_i];
    int n = tc->n;
    struct event_base *base = event_base_new();
    states s = {0};
    pgconn *c = connect_or_fail(base, conninfo, &s);
    ck_assert(run_until(base, &s.ups, 1, TIMEOUT_MS));
    int done = 0;
    int *order = xcalloc((size_t)n, sizeof(int));
    rec *q = xcalloc((size_t)n, sizeof(rec));
    char *pad = xcalloc(1, tc->send + 1);
    memset(pad, 'x', tc->send);
    char reply[32], sent[32]; /* as text parameter / expected text */
    snprintf(reply, sizeof(reply), "%zu", tc->reply);
    snprintf(sent, sizeof(sent), "%zu", tc->send);
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *p[] = {v, pad, reply};
        q[i].done = &done;
        q[i].order = order;
        q[i].idx = i;
        queue_or_fail(c,
                      "SELECT $1::int * 2, pg_backend_pid(), length($2::text), "
                      "repeat('y', $3::int)",
                      3, p, &q[i]);
    }
    free(pad);
    ck_assert_int_eq(pgconn_pending(c), n);
    ck_assert(run_until(base, &done, n, 6 * TIMEOUT_MS));
    double ms = now_ms() - t0;
    char *pid = q[0].vals[1] ? xstrdup(q[0].vals[1]) : NULL;
    ck_assert_ptr_nonnull(pid);
    for (int i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i * 2);
        ck_assert_int_eq(order[i], i);
        ck_assert_int_eq(q[i].calls, 1);
        ck_assert_msg(q[i].status == PGCONN_OK, "query %d: %s", i, q[i].error);
        ck_assert_pstr_eq(q[i].vals[0], want);
        ck_assert_pstr_eq(q[i].vals[1], pid); /* one session served them all */
        ck_assert_pstr_eq(q[i].vals[2], sent);
        ck_assert_uint_eq(strlen(q[i].vals[3]), tc->reply);
        rec_clear(&q[i]);
    }
    ck_assert_int_eq(pgconn_pending(c), 0);
    fprintf(stderr, "pipelined %d queries (%zu B out, %zu B back each) in %.1f ms (%.0f/s)\n", n,
            tc->send, tc->reply, ms, n / (ms / 1000.0));
    pgconn_free(c);
    free(pid);
    free(q);
    free(order);
    event_base_free(base);
}
END_TEST

/* ---- explicit transactions through the queue ------------------------------------------------- */

typedef struct {
    const char *sql;
    const char *param;
    pgconn_status status;
    const char *sqlstate;
    long long affected;
} tx_step;

static const tx_step tx_steps[] = {
    {"CREATE TEMP TABLE tx_t (id int PRIMARY KEY)", NULL, PGCONN_OK, "", 0},
    {"BEGIN", NULL, PGCONN_OK, "", 0},
    {"INSERT INTO tx_t VALUES ($1::int)", "1", PGCONN_OK, "", 1},
    {"INSERT INTO tx_t VALUES ($1::int)", "2", PGCONN_OK, "", 1},
    {"COMMIT", NULL, PGCONN_OK, "", 0},
    /* A failed transaction: the error aborts it, later statements fail, COMMIT rolls back. */
    {"BEGIN", NULL, PGCONN_OK, "", 0},
    {"INSERT INTO tx_t VALUES ($1::int)", "3", PGCONN_OK, "", 1},
    {"INSERT INTO tx_t VALUES ($1::int)", "1", PGCONN_ERROR, "23505", 0},
    {"INSERT INTO tx_t VALUES ($1::int)", "4", PGCONN_ERROR, "25P02", 0},
    {"COMMIT", NULL, PGCONN_OK, "", 0},
    /* Outside the transaction again, a query works. */
    {"UPDATE tx_t SET id = id + 10 WHERE id > $1::int", "0", PGCONN_OK, "", 2},
};

START_TEST(test_transaction)
{
    enum { N = sizeof(tx_steps) / sizeof(tx_steps[0]) };
    struct event_base *base = event_base_new();
    pgconn *c = connect_or_fail(base, conninfo, NULL);
    int done = 0;
    rec q[N + 1];
    memset(q, 0, sizeof(q));
    for (int i = 0; i < N; i++) {
        const char *p[] = {tx_steps[i].param};
        q[i].done = &done;
        queue_or_fail(c, tx_steps[i].sql, tx_steps[i].param ? 1 : 0, p, &q[i]);
    }
    q[N].done = &done;
    queue_or_fail(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM tx_t", 0, NULL, &q[N]);
    ck_assert(run_until(base, &done, N + 1, TIMEOUT_MS));
    for (int i = 0; i < N; i++) {
        ck_assert_msg(q[i].status == tx_steps[i].status, "step %d (%s): status %d, %s", i,
                      tx_steps[i].sql, q[i].status, q[i].error);
        ck_assert_str_eq(q[i].sqlstate, tx_steps[i].sqlstate);
        ck_assert_int_eq(q[i].affected, tx_steps[i].affected);
    }
    ck_assert_str_eq(q[7].constraint, "tx_t_pkey");
    ck_assert_pstr_eq(q[N].vals[0], "11,12");
    pgconn_free(c);
    for (int i = 0; i <= N; i++) {
        rec_clear(&q[i]);
    }
    event_base_free(base);
}
END_TEST

/* ---- prepared statements --------------------------------------------------------------------- */

/* One step on one session: prepared (or not), its parameter, and what it must answer. */
typedef struct {
    bool prepared;
    const char *sql;
    const char *param;
    pgconn_status status;
    const char *sqlstate; /* "" when OK */
    const char *value;    /* row 0, column 0, when OK */
} prep_step;

#define DOUBLE   "SELECT $1::int * 2"
#define PLUS_ONE "SELECT $1::int + 1"
#define COUNT    "SELECT count(*)::text FROM pg_prepared_statements"

static const prep_step prep_steps[] = {
    {true, DOUBLE, "21", PGCONN_OK, "", "42"},
    {true, DOUBLE, "5", PGCONN_OK, "", "10"},
    {true, DOUBLE, NULL, PGCONN_OK, "", NULL},
    {false, COUNT, NULL, PGCONN_OK, "", "1"}, /* three runs, one statement */
    /* A Parse that fails reports its own error, every time (never "does not exist"). */
    {true, "SELEC $1", "1", PGCONN_ERROR, "42601", NULL},
    {true, "SELEC $1", "1", PGCONN_ERROR, "42601", NULL},
    {true, DOUBLE, "1", PGCONN_OK, "", "2"},
    {false, COUNT, NULL, PGCONN_OK, "", "1"},
    /* A Parse in an aborted transaction fails; after the ROLLBACK the text is parsed again. */
    {false, "BEGIN", NULL, PGCONN_OK, "", NULL},
    {false, "SELECT 1 / $1::int", "0", PGCONN_ERROR, "22012", NULL},
    {true, PLUS_ONE, "1", PGCONN_ERROR, "25P02", NULL},
    {false, "ROLLBACK", NULL, PGCONN_OK, "", NULL},
    {true, PLUS_ONE, "1", PGCONN_OK, "", "2"},
    {false, COUNT, NULL, PGCONN_OK, "", "2"},
};

START_TEST(test_prepared)
{
    enum { N = sizeof(prep_steps) / sizeof(prep_steps[0]) };
    struct event_base *base = event_base_new();
    pgconn *c = connect_or_fail(base, conninfo, NULL);
    int done = 0;
    rec q[N];
    memset(q, 0, sizeof(q));
    /* All queued at once: the later ones go out before the first Parse has been answered. */
    for (int i = 0; i < N; i++) {
        const prep_step *st = &prep_steps[i];
        const char *p[] = {st->param};
        int n = strchr(st->sql, '$') ? 1 : 0;
        q[i].done = &done;
        if (st->prepared)
            ck_assert_int_eq(pgconn_query_prepared(c, st->sql, n, p, rec_cb, &q[i]), 0);
        else
            queue_or_fail(c, st->sql, n, p, &q[i]);
    }
    ck_assert(run_until(base, &done, N, TIMEOUT_MS));
    for (int i = 0; i < N; i++) {
        const prep_step *st = &prep_steps[i];
        ck_assert_int_eq(q[i].calls, 1);
        ck_assert_msg(q[i].status == st->status, "step %d (%s): status %d, %s", i, st->sql,
                      q[i].status, q[i].error);
        ck_assert_msg(strcmp(q[i].sqlstate, st->sqlstate) == 0, "step %d (%s): sqlstate %s", i,
                      st->sql, q[i].sqlstate);
        if (st->status == PGCONN_OK && q[i].nfields > 0)
            ck_assert_pstr_eq(q[i].vals[0], st->value);
        rec_clear(&q[i]);
    }
    pgconn_free(c);
    event_base_free(base);
}
END_TEST

/* A new session has none of the old one's statements: they are prepared again. */
START_TEST(test_prepared_after_reconnect)
{
    struct event_base *base = event_base_new();
    states s = {0};
    pgconn *c = connect_or_fail(base, conninfo, &s);
    int done = 0;
    rec first = {.done = &done}, pid = {.done = &done};
    const char *v[] = {"4"};
    ck_assert_int_eq(pgconn_query_prepared(c, DOUBLE, 1, v, rec_cb, &first), 0);
    queue_or_fail(c, "SELECT pg_backend_pid()::text", 0, NULL, &pid);
    ck_assert(run_until(base, &done, 2, TIMEOUT_MS));
    ck_assert_pstr_eq(first.vals[0], "8");
    char *sql = xasprintf("SELECT pg_terminate_backend(%s)", pid.vals[0]);
    free(admin_value(conninfo, sql));
    free(sql);
    ck_assert(run_until(base, &s.ups, 2, TIMEOUT_MS));
    rec again = {.done = &done}, count = {.done = &done};
    ck_assert_int_eq(pgconn_query_prepared(c, DOUBLE, 1, v, rec_cb, &again), 0);
    queue_or_fail(c, COUNT, 0, NULL, &count);
    ck_assert(run_until(base, &done, 4, TIMEOUT_MS));
    ck_assert_msg(again.status == PGCONN_OK, "after reconnect: %s", again.error);
    ck_assert_pstr_eq(again.vals[0], "8");
    ck_assert_pstr_eq(count.vals[0], "1");
    pgconn_free(c);
    rec_clear(&first);
    rec_clear(&pid);
    rec_clear(&again);
    rec_clear(&count);
    event_base_free(base);
}
END_TEST

/* ---- connection loss and reconnect ----------------------------------------------------------- */

typedef struct {
    const char *name;
    int inflight; /* queries in flight when the backend is killed: a pg_sleep, then SELECT 1s */
} loss_case;

static const loss_case loss_cases[] = {{"busy", 3}, {"one query", 1}, {"idle", 0}};

START_TEST(test_connection_loss)
{
    const loss_case *tc = &loss_cases[_i];
    struct event_base *base = event_base_new();
    states s = {0}, s2 = {0};
    pgconn *c = connect_or_fail(base, conninfo, &s);
    pgconn *admin = connect_or_fail(base, conninfo, &s2);
    int done = 0;
    rec pid = {.done = &done};
    queue_or_fail(c, "SELECT pg_backend_pid()", 0, NULL, &pid);
    ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
    ck_assert(run_until(base, &s2.ups, 1, TIMEOUT_MS));
    ck_assert_int_eq(s.ups, 1);
    ck_assert_uint_eq(pgconn_connects(c), 1);

    int lost = 0, killed = 0;
    rec fly[3], kill = {.done = &killed};
    memset(fly, 0, sizeof(fly));
    for (int i = 0; i < tc->inflight; i++) {
        fly[i].done = &lost;
        queue_or_fail(c, i == 0 ? "SELECT pg_sleep(30)" : "SELECT 1", 0, NULL, &fly[i]);
    }
    /* Let the queries reach the server before killing its backend. */
    int never = 0;
    (void)run_until(base, &never, 1, 200);
    ck_assert_int_eq(lost, 0);
    ck_assert_int_eq(pgconn_pending(c), tc->inflight);
    const char *p[] = {pid.vals[0]};
    queue_or_fail(admin, "SELECT pg_terminate_backend($1::int)", 1, p, &kill);
    double t0 = now_ms();
    ck_assert(run_until(base, &s.downs, 1, TIMEOUT_MS));
    double lost_ms = now_ms() - t0;
    ck_assert(run_until(base, &killed, 1, TIMEOUT_MS));
    ck_assert_pstr_eq(kill.vals[0], "t");
    ck_assert_int_eq(lost, tc->inflight);
    for (int i = 0; i < tc->inflight; i++) {
        ck_assert_int_eq(fly[i].calls, 1);
        ck_assert_int_eq(fly[i].status, PGCONN_DISCONNECTED);
        ck_assert_msg(fly[i].error[0] != '\0', "DISCONNECTED without a message");
    }
    ck_assert_int_eq(pgconn_pending(c), 0);
    ck_assert(!pgconn_connected(c));

    /* Queued while down: waits, then runs on the new session. */
    int after = 0;
    rec again = {.done = &after};
    queue_or_fail(c, "SELECT pg_backend_pid()", 0, NULL, &again);
    t0 = now_ms();
    ck_assert(run_until(base, &after, 1, TIMEOUT_MS));
    double back_ms = now_ms() - t0;
    ck_assert_msg(again.status == PGCONN_OK, "after reconnect: %s", again.error);
    ck_assert_pstr_ne(again.vals[0], pid.vals[0]);
    ck_assert_int_eq(s.ups, 2);
    ck_assert_uint_eq(pgconn_connects(c), 2);
    ck_assert(pgconn_connected(c));
    fprintf(stderr,
            "loss (%s): noticed %.1f ms after the kill was queued, next query answered "
            "%.1f ms later\n",
            tc->name, lost_ms, back_ms);
    pgconn_free(c);
    pgconn_free(admin);
    ck_assert_int_eq(s.downs, 1); /* freeing is not reported as a loss */
    rec_clear(&pid);
    for (int i = 0; i < tc->inflight; i++) {
        rec_clear(&fly[i]);
    }
    rec_clear(&kill);
    rec_clear(&again);
    event_base_free(base);
}
END_TEST

/* ---- notices go to the JSON logger ----------------------------------------------------------- */

/* Runs fn with stderr sent to a temp file; returns what was written. Caller frees. */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/pgconn_log_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *buf = xcalloc(1, (size_t)len + 1);
    ck_assert_int_eq(pread(fd, buf, (size_t)len, 0), len);
    close(fd);
    unlink(path);
    return buf;
}

static void raise_notice_pgconn(void)
{
    struct event_base *base = event_base_new();
    pgconn *c = connect_or_fail(base, conninfo, NULL);
    int done = 0;
    rec q = {.done = &done};
    queue_or_fail(c, "DO $$BEGIN RAISE NOTICE 'hello from pgconn'; END$$", 0, NULL, &q);
    ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
    ck_assert_int_eq(q.status, PGCONN_OK);
    pgconn_free(c);
    event_base_free(base);
}

static void raise_notice_pgmigrate(void)
{
    char tmpl[] = "/tmp/pgmigrate_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    char *path = xasprintf("%s/001_notice.sql", tmpl);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("DO $$BEGIN RAISE WARNING 'hello from pgmigrate'; END$$;\n", f);
    fclose(f);
    char db[64], err[512] = "";
    char *ci = fresh_db(db, sizeof(db));
    ck_assert_msg(pgmigrate_apply(ci, tmpl, err, sizeof(err)) == 0, "%s", err);
    drop_db(db);
    free(ci);
    unlink(path);
    free(path);
    rmdir(tmpl);
}

typedef struct {
    void (*fn)(void);
    const char *line; /* expected part of the JSON log line */
} notice_case;

static const notice_case notice_cases[] = {
    {raise_notice_pgconn, "\"level\":\"warn\",\"service\":\"test_pgconn\","
                          "\"msg\":\"postgres NOTICE: hello from pgconn\"}"},
    {raise_notice_pgmigrate, "\"level\":\"warn\",\"service\":\"test_pgconn\","
                             "\"msg\":\"postgres WARNING: hello from pgmigrate\"}"},
};

START_TEST(test_notice_logged)
{
    char *out = capture_stderr(notice_cases[_i].fn);
    ck_assert_msg(strstr(out, notice_cases[_i].line) != NULL, "log was: %s", out);
    free(out);
}
END_TEST

/* ---- server down: bounded queue, free fails what waits ------------------------------------- */

typedef struct {
    size_t max; /* 0 = keep the default */
    size_t accepted;
} bound_case;

static const bound_case bound_cases[] = {{5, 5}, {1, 1}, {0, 10000}};

START_TEST(test_queue_bound)
{
    const bound_case *tc = &bound_cases[_i];
    struct event_base *base = event_base_new();
    states s = {0};
    /* Nothing listens on port 1: connecting fails fast, forever. */
    pgconn *c = connect_or_fail(base, "host=127.0.0.1 port=1 connect_timeout=2", &s);
    if (tc->max) {
        pgconn_set_max_pending(c, tc->max);
    }
    int done = 0;
    rec q = {.done = &done};
    for (size_t i = 0; i < tc->accepted; i++) {
        queue_or_fail(c, "SELECT 1", 0, NULL, &q);
    }
    ck_assert_int_eq(pgconn_query(c, "SELECT 1", 0, NULL, rec_cb, &q), -1);
    ck_assert_int_eq(pgconn_pending(c), tc->accepted);
    /* A few retries pass (100, 200, 400 ms backoff) without anything delivered. */
    int never = 0;
    (void)run_until(base, &never, 1, 500);
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(s.ups + s.downs, 0);
    ck_assert(!pgconn_connected(c));
    pgconn_free(c);
    ck_assert_int_eq(done, (int)tc->accepted);
    ck_assert_int_eq(q.status, PGCONN_DISCONNECTED);
    event_base_free(base);
}
END_TEST

/* A query not sent yet can be withdrawn; its callback never runs, the others' do, in order. */
START_TEST(test_cancel_unsent)
{
    struct event_base *base = event_base_new();
    /* Down: nothing is ever sent, every query can go. */
    pgconn *down = connect_or_fail(base, "host=127.0.0.1 port=1 connect_timeout=2", NULL);
    int done = 0;
    rec a = {.done = &done}, b = {.done = &done}, c = {.done = &done};
    queue_or_fail(down, "SELECT 1", 0, NULL, &a);
    queue_or_fail(down, "SELECT 2", 0, NULL, &b);
    queue_or_fail(down, "SELECT 3", 0, NULL, &c);
    int never = 0;
    (void)run_until(base, &never, 1, 300); /* a failed connection attempt or two */
    ck_assert(pgconn_cancel(down, rec_cb, &b));
    ck_assert(!pgconn_cancel(down, rec_cb, &b));
    ck_assert(pgconn_cancel(down, rec_cb, &c)); /* the tail */
    ck_assert_int_eq(pgconn_pending(down), 1);
    queue_or_fail(down, "SELECT 4", 0, NULL, &c); /* queued behind a, not behind the removed */
    pgconn_free(down);
    ck_assert_int_eq(done, 2);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(b.calls, 0);
    ck_assert_int_eq(c.calls, 1);

    /* Up: what is on the wire stays and answers; what is not yet sent can go. */
    done = 0;
    rec slow = {.done = &done}, next = {.done = &done}, last = {.done = &done};
    pgconn *up = connect_or_fail(base, conninfo, NULL);
    queue_or_fail(up, "SELECT pg_sleep(0.3), 'slow'", 0, NULL, &slow);
    queue_or_fail(up, "SELECT 'next'", 0, NULL, &next);
    queue_or_fail(up, "SELECT 'last'", 0, NULL, &last);
    ck_assert(pgconn_cancel(up, rec_cb, &next)); /* nothing left the loop yet */
    for (int i = 0; i < 200 && pgconn_connects(up) == 0; i++)
        event_base_loop(base, EVLOOP_ONCE);
    ck_assert_uint_eq(pgconn_connects(up), 1);
    ck_assert(!pgconn_cancel(up, rec_cb, &slow)); /* sent on connecting */
    ck_assert(run_until(base, &done, 2, TIMEOUT_MS));
    ck_assert_int_eq(slow.calls, 1);
    ck_assert_int_eq(slow.status, PGCONN_OK);
    ck_assert_int_eq(next.calls, 0);
    ck_assert_int_eq(last.calls, 1);
    ck_assert_str_eq(last.vals[0], "last");
    ck_assert(!pgconn_cancel(up, rec_cb, &last)); /* already answered */
    ck_assert_int_eq(pgconn_pending(up), 0);
    rec_clear(&slow);
    rec_clear(&last);
    pgconn_free(up);
    event_base_free(base);
}
END_TEST

/* What the first failed query's callback does on a connection loss: cancel, then queue. */
typedef struct {
    rec r;
    pgconn *c;
    rec *cancel; /* cancelled from the callback */
    rec *queue;  /* queued from the callback */
    bool cancelled;
} loss_hook;

static void loss_hook_cb(const pgconn_result *res, void *arg)
{
    loss_hook *h = arg;
    rec_cb(res, &h->r);
    h->cancelled = pgconn_cancel(h->c, rec_cb, h->cancel);
    ck_assert_int_eq(pgconn_query(h->c, "SELECT 3", 0, NULL, rec_cb, h->queue), 0);
}

/* The queries pending at a loss fail, all of them and only them, whatever their callbacks do. */
START_TEST(test_loss_with_callbacks_that_cancel_and_queue)
{
    struct event_base *base = event_base_new();
    states s = {0};
    pgconn *c = connect_or_fail(base, conninfo, &s);
    pgconn *admin = connect_or_fail(base, conninfo, NULL);
    int done = 0;
    rec pid = {.done = &done};
    queue_or_fail(c, "SELECT pg_backend_pid()", 0, NULL, &pid);
    ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
    int lost = 0, later = 0, killed = 0;
    rec second = {.done = &lost}, third = {.done = &later}, kill = {.done = &killed};
    loss_hook first = {.r = {.done = &lost}, .c = c, .cancel = &second, .queue = &third};
    ck_assert_int_eq(pgconn_query(c, "SELECT pg_sleep(30)", 0, NULL, loss_hook_cb, &first), 0);
    queue_or_fail(c, "SELECT 2", 0, NULL, &second);
    int never = 0;
    (void)run_until(base, &never, 1, 200); /* both on the wire */
    const char *p[] = {pid.vals[0]};
    queue_or_fail(admin, "SELECT pg_terminate_backend($1::int)", 1, p, &kill);
    ck_assert(run_until(base, &lost, 2, TIMEOUT_MS));
    ck_assert_int_eq(first.r.status, PGCONN_DISCONNECTED);
    ck_assert(!first.cancelled); /* it was failing already: its callback runs, once */
    ck_assert_int_eq(second.calls, 1);
    ck_assert_int_eq(second.status, PGCONN_DISCONNECTED);
    ck_assert_int_eq(third.calls, 0); /* queued after the loss: waits for the next session */
    ck_assert(run_until(base, &later, 1, TIMEOUT_MS));
    ck_assert_int_eq(third.status, PGCONN_OK);
    ck_assert_str_eq(third.vals[0], "3");
    ck_assert(run_until(base, &killed, 1, TIMEOUT_MS));
    pgconn_free(c);
    pgconn_free(admin);
    rec_clear(&pid);
    rec_clear(&first.r);
    rec_clear(&second);
    rec_clear(&third);
    rec_clear(&kill);
    event_base_free(base);
}
END_TEST

/* Invalid conninfo is the only pgconn_new error. */
START_TEST(test_bad_conninfo)
{
    struct event_base *base = event_base_new();
    char err[256] = "";
    ck_assert_ptr_null(pgconn_new(base, "nosuchkey=1", NULL, NULL, err, sizeof(err)));
    ck_assert_msg(strstr(err, "nosuchkey") != NULL, "err: %s", err);
    event_base_free(base);
}
END_TEST

/* ---- re-entrancy: callbacks that queue and that free ----------------------------------------- */

typedef struct {
    pgconn *c;
    int n, limit;
    char last[16];
    int done;
} chain;

static void chain_cb(const pgconn_result *r, void *arg)
{
    chain *ch = arg;
    ck_assert_int_eq(pgconn_result_status(r), PGCONN_OK);
    snprintf(ch->last, sizeof(ch->last), "%s", pgconn_result_value(r, 0, 0));
    if (++ch->n < ch->limit) {
        const char *p[] = {ch->last};
        ck_assert_int_eq(pgconn_query(ch->c, "SELECT $1::int + 1", 1, p, chain_cb, ch), 0);
    } else {
        ch->done = 1;
    }
}

START_TEST(test_reentrant_query)
{
    struct event_base *base = event_base_new();
    chain ch = {.limit = 100};
    ch.c = connect_or_fail(base, conninfo, NULL);
    ck_assert_int_eq(pgconn_query(ch.c, "SELECT 0", 0, NULL, chain_cb, &ch), 0);
    ck_assert(run_until(base, &ch.done, 1, TIMEOUT_MS));
    ck_assert_str_eq(ch.last, "99");
    pgconn_free(ch.c);
    event_base_free(base);
}
END_TEST

/* What a LISTENing connection was told. */
typedef struct {
    int count;
    char channel[64];
    char payload[128];
} heard;

static void notify_cb(const char *channel, const char *payload, void *arg)
{
    heard *h = arg;
    h->count++;
    snprintf(h->channel, sizeof(h->channel), "%s", channel);
    snprintf(h->payload, sizeof(h->payload), "%s", payload);
}

/* A NOTIFY committed on another session reaches the callback of a LISTENing pgconn. */
START_TEST(test_notify)
{
    struct event_base *base = event_base_new();
    pgconn *listener = connect_or_fail(base, conninfo, NULL);
    heard h = {0};
    pgconn_set_notify(listener, notify_cb, &h);
    int done = 0;
    rec q = {.done = &done};
    queue_or_fail(listener, "LISTEN test_channel", 0, NULL, &q);
    ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
    ck_assert_int_eq(q.status, PGCONN_OK);
    admin_exec(conninfo, "SELECT pg_notify('other_channel', 'not for us')");
    admin_exec(conninfo, "SELECT pg_notify('test_channel', '{\"version\":7}')");
    ck_assert(run_until(base, &h.count, 1, TIMEOUT_MS));
    ck_assert_str_eq(h.channel, "test_channel");
    ck_assert_str_eq(h.payload, "{\"version\":7}");
    /* Notifications interleave with query results on the same connection. */
    rec q2 = {.done = &done};
    queue_or_fail(listener, "SELECT pg_notify('test_channel', 'self'), 42", 0, NULL, &q2);
    ck_assert(run_until(base, &done, 2, TIMEOUT_MS));
    ck_assert(run_until(base, &h.count, 2, TIMEOUT_MS));
    ck_assert_str_eq(h.payload, "self");
    ck_assert_str_eq(q2.vals[1], "42");
    rec_clear(&q);
    rec_clear(&q2);
    pgconn_free(listener);
    event_base_free(base);
}
END_TEST

/* A read-only pgconn's sessions refuse writes, whatever the statement. */
START_TEST(test_read_only)
{
    struct event_base *base = event_base_new();
    pgconn *c = connect_or_fail(base, conninfo, NULL);
    pgconn_set_read_only(c);
    int done = 0;
    rec w = {.done = &done}, r = {.done = &done};
    queue_or_fail(c, "CREATE TABLE read_only_probe (x int)", 0, NULL, &w);
    queue_or_fail(c, "SELECT current_setting('default_transaction_read_only')", 0, NULL, &r);
    ck_assert(run_until(base, &done, 2, TIMEOUT_MS));
    ck_assert_int_eq(w.status, PGCONN_ERROR);
    ck_assert_str_eq(w.sqlstate, "25006"); /* read_only_sql_transaction */
    ck_assert_int_eq(r.status, PGCONN_OK);
    ck_assert_str_eq(r.vals[0], "on");
    rec_clear(&w);
    rec_clear(&r);
    pgconn_free(c);
    event_base_free(base);
}
END_TEST

/* Sessions plan each statement for the tables as they are (ADR 0028), and keep the options the
   conninfo gives. */
START_TEST(test_session_options)
{
    struct event_base *base = event_base_new();
    /* target_session_attrs=read-write: a read-only session still finds the (writable) server. */
    char *ci = xasprintf("%s options='-c search_path=probe_schema' target_session_attrs=read-write",
                         conninfo);
    for (int ro = 0; ro <= 1; ro++) {
        pgconn *c = connect_or_fail(base, ci, NULL);
        if (ro)
            pgconn_set_read_only(c);
        int done = 0;
        rec r = {.done = &done};
        queue_or_fail(c,
                      "SELECT current_setting('plan_cache_mode'), current_setting('search_path'), "
                      "current_setting('default_transaction_read_only')",
                      0, NULL, &r);
        ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
        ck_assert_int_eq(r.status, PGCONN_OK);
        ck_assert_str_eq(r.vals[0], "force_custom_plan");
        ck_assert_str_eq(r.vals[1], "probe_schema");
        ck_assert_str_eq(r.vals[2], ro ? "on" : "off");
        rec_clear(&r);
        pgconn_free(c);
    }
    free(ci);
    event_base_free(base);
}
END_TEST

/* A named session carries its name as application_name, unless the conninfo gives one. */
START_TEST(test_session_name)
{
    struct event_base *base = event_base_new();
    char *given = xasprintf("%s application_name=from-conninfo", conninfo);
    const char *cases[][2] = {{conninfo, "state-processor relay"}, {given, "from-conninfo"}};
    for (size_t i = 0; i < 2; i++) {
        pgconn *c = connect_or_fail(base, cases[i][0], NULL);
        pgconn_set_name(c, "state-processor relay");
        int done = 0;
        rec r = {.done = &done};
        queue_or_fail(c, "SELECT current_setting('application_name')", 0, NULL, &r);
        ck_assert(run_until(base, &done, 1, TIMEOUT_MS));
        ck_assert_int_eq(r.status, PGCONN_OK);
        ck_assert_str_eq(r.vals[0], cases[i][1]);
        rec_clear(&r);
        pgconn_free(c);
    }
    free(given);
    event_base_free(base);
}
END_TEST

typedef struct {
    pgconn *c;
    int calls;
    int freed;
} freer;

static void free_in_cb(const pgconn_result *r, void *arg)
{
    freer *f = arg;
    ck_assert_int_eq(pgconn_result_status(r), PGCONN_OK);
    f->calls++;
    pgconn_free(f->c);
    f->freed = 1;
}

START_TEST(test_free_in_callback)
{
    struct event_base *base = event_base_new();
    freer f = {0};
    f.c = connect_or_fail(base, conninfo, NULL);
    int done = 0;
    rec rest[3];
    memset(rest, 0, sizeof(rest));
    ck_assert_int_eq(pgconn_query(f.c, "SELECT 1", 0, NULL, free_in_cb, &f), 0);
    for (int i = 0; i < 3; i++) {
        rest[i].done = &done;
        queue_or_fail(f.c, "SELECT pg_sleep(0.2)", 0, NULL, &rest[i]);
    }
    ck_assert(run_until(base, &f.freed, 1, TIMEOUT_MS));
    /* pgconn_free() inside the first callback failed the rest before returning. */
    ck_assert_int_eq(f.calls, 1);
    ck_assert_int_eq(done, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(rest[i].calls, 1);
        ck_assert_int_eq(rest[i].status, PGCONN_DISCONNECTED);
    }
    /* Nothing of the freed connection may fire later. */
    int never = 0;
    (void)run_until(base, &never, 1, 300);
    ck_assert_int_eq(done, 3);
    event_base_free(base);
}
END_TEST

/* ---- pgmigrate ------------------------------------------------------------------------------- */

static const char *migrations_dir(void)
{
    const char *d = getenv("CQRS_MIGRATIONS_DIR");
    d = d ? d : "schemas/migrations";
    ck_assert_msg(access(d, R_OK) == 0, "%s not found: run from the repository root", d);
    return d;
}

/* The number of *.sql files in dir: every one of them is a migration. */
static int count_sql_files(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        n += len > 4 && strcmp(e->d_name + len - 4, ".sql") == 0;
    }
    closedir(d);
    return n;
}

START_TEST(test_migrate_real)
{
    char db[64], err[512] = "";
    char *ci = fresh_db(db, sizeof(db));
    const char *dir = migrations_dir();
    ck_assert_msg(pgmigrate_apply(ci, dir, err, sizeof(err)) == 0, "first: %s", err);
    char *first = admin_value(ci, "SELECT string_agg(name || '@' || applied_at, ',' ORDER BY name)"
                                  " FROM schema_migrations");
    ck_assert_msg(strstr(first, "001_init.sql@") == first, "recorded: %s", first);
    char *tables = admin_value(ci, "SELECT count(*) FROM pg_tables WHERE tablename IN "
                                   "('aggregates','commands','outbox','consumer_offsets')");
    ck_assert_str_eq(tables, "4");
    /* Second run: nothing applied, the recorded times unchanged. */
    ck_assert_msg(pgmigrate_apply(ci, dir, err, sizeof(err)) == 0, "second: %s", err);
    char *second = admin_value(ci, "SELECT string_agg(name || '@' || applied_at, ',' ORDER BY name)"
                                   " FROM schema_migrations");
    ck_assert_str_eq(first, second);
    free(first);
    free(second);
    free(tables);
    free(ci);
    drop_db(db);
}
END_TEST

static void write_file(const char *dir, const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    free(path);
}

typedef struct {
    const char *files[3][2]; /* name, content; applied in name order */
    int rc;
    const char *err_has;  /* substring of err when rc is -1 */
    const char *recorded; /* schema_migrations names afterwards, comma-separated */
} migrate_case;

static const migrate_case migrate_cases[] = {
    {{{"002_b.sql", "CREATE TABLE b (x int REFERENCES a);\nINSERT INTO b VALUES (1);"},
      {"001_a.sql", "CREATE TABLE a (x int PRIMARY KEY);\n-- two statements\nINSERT INTO a "
                    "VALUES (1);"},
      {"README", "not sql, ignored"}},
     0,
     NULL,
     "001_a.sql,002_b.sql"},
    {{{"001_ok.sql", "CREATE TABLE ok_t (x int);"},
      {"002_broken.sql", "CREATE TABLE half_t (x int);\n\nSELEC oops;"},
      {"003_never.sql", "CREATE TABLE never_t (x int);"}},
     -1,
     "002_broken.sql: syntax error at or near \"SELEC\" (line 3)",
     "001_ok.sql"},
    {{{"001_fail.sql", "INSERT INTO missing_t VALUES (1);"}, {NULL, NULL}, {NULL, NULL}},
     -1,
     "001_fail.sql: relation \"missing_t\" does not exist",
     NULL},
};

START_TEST(test_migrate_files)
{
    const migrate_case *tc = &migrate_cases[_i];
    char tmpl[] = "/tmp/pgmigrate_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    for (int i = 0; i < 3 && tc->files[i][0]; i++) {
        write_file(tmpl, tc->files[i][0], tc->files[i][1]);
    }
    char db[64], err[512] = "";
    char *ci = fresh_db(db, sizeof(db));
    int rc = pgmigrate_apply(ci, tmpl, err, sizeof(err));
    ck_assert_msg(rc == tc->rc, "rc %d: %s", rc, err);
    if (tc->err_has) {
        ck_assert_msg(strstr(err, tc->err_has) != NULL, "err: %s", err);
    }
    char *names = admin_value(ci, "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') "
                                  "FROM schema_migrations");
    ck_assert_str_eq(names, tc->recorded ? tc->recorded : "");
    /* A failed file leaves nothing behind: its transaction rolled back. */
    char *half = admin_value(ci, "SELECT to_regclass('half_t') IS NULL AND "
                                 "to_regclass('never_t') IS NULL");
    ck_assert_str_eq(half, "t");
    free(names);
    free(half);
    free(ci);
    drop_db(db);
    for (int i = 0; i < 3 && tc->files[i][0]; i++) {
        char *path = xasprintf("%s/%s", tmpl, tc->files[i][0]);
        unlink(path);
        free(path);
    }
    rmdir(tmpl);
}
END_TEST

/* Several processes migrating one database at once: each file applied exactly once. */
START_TEST(test_migrate_concurrent)
{
    enum { P = 6 };
    char db[64];
    char *ci = fresh_db(db, sizeof(db));
    const char *dir = migrations_dir();
    pid_t kids[P];
    for (int i = 0; i < P; i++) {
        kids[i] = fork();
        ck_assert_int_ge(kids[i], 0);
        if (kids[i] == 0) {
            char err[512];
            int rc = pgmigrate_apply(ci, dir, err, sizeof(err));
            if (rc != 0) {
                fprintf(stderr, "child %d: %s\n", i, err);
            }
            _exit(rc == 0 ? 0 : 1);
        }
    }
    for (int i = 0; i < P; i++) {
        int st = 0;
        ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed", i);
    }
    char *n = admin_value(ci, "SELECT count(*) FROM schema_migrations");
    ck_assert_int_eq(atoi(n), count_sql_files(dir));
    free(n);
    free(ci);
    drop_db(db);
}
END_TEST

START_TEST(test_migrate_errors)
{
    char err[512] = "";
    ck_assert_int_eq(pgmigrate_apply(conninfo, "/nonexistent/dir", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "/nonexistent/dir") != NULL, "err: %s", err);
    ck_assert_int_eq(pgmigrate_apply("host=127.0.0.1 port=1", "/tmp", err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "connect") != NULL, "err: %s", err);
}
END_TEST

static Suite *pgconn_suite(void)
{
    Suite *s = suite_create("pgconn");
    TCase *q = tcase_create("query");
    tcase_set_timeout(q, 60);
    tcase_add_loop_test(q, test_select, 0, sizeof(select_cases) / sizeof(select_cases[0]));
    tcase_add_loop_test(q, test_error_isolated, 0, sizeof(error_cases) / sizeof(error_cases[0]));
    tcase_add_loop_test(q, test_many_in_order, 0, sizeof(many_cases) / sizeof(many_cases[0]));
    tcase_add_test(q, test_transaction);
    tcase_add_test(q, test_prepared);
    tcase_add_test(q, test_reentrant_query);
    tcase_add_test(q, test_notify);
    tcase_add_test(q, test_read_only);
    tcase_add_test(q, test_session_options);
    tcase_add_test(q, test_session_name);
    tcase_add_test(q, test_free_in_callback);
    suite_add_tcase(s, q);

    TCase *l = tcase_create("lifecycle");
    tcase_set_timeout(l, 60);
    tcase_add_loop_test(l, test_connection_loss, 0, sizeof(loss_cases) / sizeof(loss_cases[0]));
    tcase_add_loop_test(l, test_notice_logged, 0, sizeof(notice_cases) / sizeof(notice_cases[0]));
    tcase_add_loop_test(l, test_queue_bound, 0, sizeof(bound_cases) / sizeof(bound_cases[0]));
    tcase_add_test(l, test_bad_conninfo);
    tcase_add_test(l, test_cancel_unsent);
    tcase_add_test(l, test_loss_with_callbacks_that_cancel_and_queue);
    tcase_add_test(l, test_prepared_after_reconnect);
    suite_add_tcase(s, l);

    TCase *m = tcase_create("migrate");
    tcase_set_timeout(m, 60);
    tcase_add_test(m, test_migrate_real);
    tcase_add_loop_test(m, test_migrate_files, 0, sizeof(migrate_cases) / sizeof(migrate_cases[0]));
    tcase_add_test(m, test_migrate_concurrent);
    tcase_add_test(m, test_migrate_errors);
    suite_add_tcase(s, m);
    return s;
}

int main(void)
{
    conninfo = getenv("CQRS_TEST_PG_CONNINFO");
    if (!conninfo || !*conninfo) {
        fprintf(stderr, "test_pgconn: FAIL: CQRS_TEST_PG_CONNINFO is not set; it must name a "
                        "PostgreSQL the test may create databases in, e.g. "
                        "'host=127.0.0.1 port=5432 user=postgres dbname=postgres'\n");
        return EXIT_FAILURE;
    }
    log_init("test_pgconn", LOG_WARN);
    return check_run(pgconn_suite(), CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

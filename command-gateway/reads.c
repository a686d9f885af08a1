/* reads.c: the read side of the gateway: command status, and one aggregate from its projection. */
#include "reads.h"

#include "gateway_int.h"
#include "http/etag.h"
#include "core/ids.h"
#include "http/problem.h"
#include "domain/projection.h"
#include "readwait.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* A read in flight; the client may leave before PostgreSQL answers. */
typedef struct read_ctx {
    gateway *g;
    http_req *req; /* NULL once the client is gone */
} read_ctx;

static void on_gone(http_req *req, void *arg)
{
    (void)req;
    read_ctx *c = arg;
    c->req = NULL;
}

/*
 * Answers 503 at once when the connection a read needs is down: a query queued now would wait for
 * the server's return, which the client cannot know to expect, so it gets 503 and a Retry-After.
 */
static bool unavailable(gateway *g, http_req *req, const pgconn *conn)
{
    if (pgconn_connected(conn))
        return false;
    gateway_problem(g, req, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is not available", NULL));
    return true;
}

/* Common start of a read; returns NULL (after answering) when the query cannot be queued. */
static read_ctx *start(gateway *g, http_req *req, const char *sql, int n, const char *const *v,
                       pgconn_cb cb)
{
    if (unavailable(g, req, g->pg))
        return NULL;
    read_ctx *c = xcalloc(1, sizeof(*c));
    c->g = g;
    c->req = req;
    if (pgconn_query(g->pg, sql, n, v, cb, c) != 0) {
        free(c);
        gateway_problem(g, req, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is busy", NULL));
        return NULL;
    }
    http_req_on_gone(req, on_gone, c);
    return c;
}

/* Answers a failed query with 503; true when it did. */
static bool failed_read(gateway *g, http_req *req, const pgconn_result *r)
{
    if (pgconn_result_status(r) == PGCONN_OK)
        return false;
    gateway_problem(g, req, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is not available", NULL));
    return true;
}

static bool failed(read_ctx *c, const pgconn_result *r)
{
    return failed_read(c->g, c->req, r);
}

static json_t *json_column(const pgconn_result *r, int col)
{
    const char *v = pgconn_result_value(r, 0, col);
    return v ? json_loads(v, JSON_DECODE_ANY, NULL) : json_null();
}

static void on_command(const pgconn_result *r, void *arg)
{
    read_ctx *c = arg;
    if (!c->req || failed(c, r)) {
        free(c);
        return;
    }
    if (pgconn_result_ntuples(r) == 0) {
        gateway_problem(c->g, c->req,
                        problem_new(PROBLEM_NOT_FOUND, "no command with this id (yet)", NULL));
        free(c);
        return;
    }
    /* id, status, type, aggregate_type, aggregate_id, idempotency_key, http_status, version,
       result, created_at, finished_at */
    json_t *body = json_object();
    static const char *const names[] = {"command_id",     "status",       "type",
                                        "aggregate_type", "aggregate_id", "idempotency_key"};
    for (int i = 0; i < 6; i++)
        json_object_set_new(body, names[i], json_string(pgconn_result_value(r, 0, i)));
    const char *hs = pgconn_result_value(r, 0, 6);
    const char *ver = pgconn_result_value(r, 0, 7);
    json_object_set_new(body, "http_status", hs ? json_integer(atoll(hs)) : json_null());
    json_object_set_new(body, "version", ver ? json_integer(atoll(ver)) : json_null());
    json_object_set_new(body, "result", json_column(r, 8));
    json_object_set_new(body, "created_at", json_string(pgconn_result_value(r, 0, 9)));
    const char *fin = pgconn_result_value(r, 0, 10);
    json_object_set_new(body, "finished_at", fin ? json_string(fin) : json_null());
    http_req_reply_json(c->req, 200, body);
    free(c);
}

void reads_command(gateway *g, http_req *req, const char *tenant, const char *id)
{
    if (!ids_is_uuid(id)) {
        gateway_problem(g, req, problem_new(PROBLEM_NOT_FOUND, "command ids are UUIDs", NULL));
        return;
    }
    static const char sql[] =
        "SELECT id, status, type, aggregate_type, aggregate_id, idempotency_key, http_status, "
        "version, result, to_char(created_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), to_char(finished_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM commands WHERE id = $1 AND tenant = $2";
    const char *v[] = {id, tenant};
    start(g, req, sql, 2, v, on_command);
}

/*
 * GET /v1/aggregates/{type}/{id}: one projection row. With min_version=N the read waits (at most
 * reads.max_wait_ms) until the projector has reached version N of the row: it registers with
 * the readwait before its first query, so a commit after that query wakes it, and reads again on
 * every notification for the row. Past the bound it answers with what the projection has and
 * says so (Read-Consistency: stale).
 *
 * Reads from a standby (pg.read_conninfo) see a commit only once the standby has replayed it,
 * after the notification, which the writer sends: a read that finds the row behind reads again,
 * READ_LAG_FIRST_MS later and then at twice the interval, up to READ_LAG_MAX_MS, until it is
 * there or the bound passes. A notification for the row reads again at once.
 */
#define READ_LAG_FIRST_MS 2
#define READ_LAG_MAX_MS   100

typedef struct agg_read {
    gateway *g;
    http_req *req; /* NULL once the client is gone */
    const projection *proj;
    char tenant[AUTH_TENANT_MAX + 1];
    char *id;
    long long min_version; /* 0: no wait */
    readwait_entry *wait;  /* while waiting */
    bool querying;         /* a query is in flight */
    bool requery;          /* woken while querying: read again when it returns */
    struct event *lag;     /* the next read of a standby that was behind; NULL until needed */
    int lag_ms;            /* its interval */
} agg_read;

static void agg_query(agg_read *a);

static void agg_free(agg_read *a)
{
    if (a->wait)
        metrics_gauge_add(a->g->m_reads_waiting, -1);
    readwait_cancel(a->wait);
    if (a->lag)
        event_free(a->lag);
    free(a->id);
    free(a);
}

static void agg_gone(http_req *req, void *arg)
{
    (void)req;
    agg_read *a = arg;
    a->req = NULL;
    if (!a->querying)
        agg_free(a);
}

/* Answers from the row (res row 0, or none) and frees a. */
static void agg_answer(agg_read *a, const pgconn_result *r, bool found, long long version)
{
    http_req *req = a->req;
    bool stale = a->min_version > 0 && version < a->min_version;
    if (a->min_version > 0)
        http_req_set_header(req, "Read-Consistency", stale ? "stale" : "fresh");
    if (!found) {
        gateway_problem(a->g, req,
                        problem_new(PROBLEM_NOT_FOUND,
                                    stale ? "the projection has not reached min_version yet"
                                          : "no such aggregate",
                                    NULL));
        agg_free(a);
        return;
    }
    char etag[ETAG_VERSION_LEN], current[ETAG_VERSION_LEN];
    etag_of_version(version, etag);
    snprintf(current, sizeof(current), "%lld", version);
    http_req_set_header(req, "ETag", etag);
    /* Weak comparison over the list, or * (RFC 9110 §13.1.2); a value that does not parse
       is no condition at all. */
    const char *inm = http_req_header(req, "If-None-Match");
    etag_list l;
    if (inm && etag_list_parse(inm, &l) && etag_list_matches(&l, current, false)) {
        http_req_reply(req, 304, NULL, NULL, 0);
        agg_free(a);
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, "aggregate_type", json_string(a->proj->aggregate));
    json_object_set_new(body, "aggregate_id", json_string(a->id));
    json_object_set_new(body, "version", json_integer(version));
    json_object_set_new(body, "state", json_column(r, 1));
    json_object_set_new(body, "updated_at", json_string(pgconn_result_value(r, 0, 3)));
    http_req_reply_json(req, 200, body);
    agg_free(a);
}

static void on_agg_row(const pgconn_result *r, void *arg)
{
    agg_read *a = arg;
    a->querying = false;
    if (!a->req) {
        agg_free(a);
        return;
    }
    if (failed_read(a->g, a->req, r)) {
        agg_free(a);
        return;
    }
    /* version, state, deleted, updated_at */
    bool found = pgconn_result_ntuples(r) == 1 && strcmp(pgconn_result_value(r, 0, 2), "f") == 0;
    long long version = pgconn_result_ntuples(r) == 1 ? atoll(pgconn_result_value(r, 0, 0)) : 0;
    if (version >= a->min_version || !a->wait) {
        agg_answer(a, r, found, version);
        return;
    }
    if (a->requery) { /* a notification came while this query ran: it may have missed it */
        a->requery = false;
        agg_query(a);
    } else if (a->g->reads_replica) { /* the standby may not have replayed it yet */
        a->lag_ms = a->lag_ms ? (a->lag_ms >= READ_LAG_MAX_MS / 2 ? READ_LAG_MAX_MS : 2 * a->lag_ms)
                              : READ_LAG_FIRST_MS;
        struct timeval tv = {0, (suseconds_t)a->lag_ms * 1000};
        evtimer_add(a->lag, &tv);
    }
}

static void on_lag(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    agg_read *a = arg;
    if (!a->req || a->querying)
        return;
    metrics_add(a->g->m_read_lag_rereads, 1);
    agg_query(a);
}

static void agg_query(agg_read *a)
{
    char *sql = xasprintf("SELECT version, state, deleted, to_char(updated_at AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM \"%s\" "
                          "WHERE tenant = $1 AND id = $2",
                          a->proj->table);
    const char *v[] = {a->tenant, a->id};
    int rc = pgconn_query_prepared(a->g->pg_read, sql, 2, v, on_agg_row, a);
    free(sql);
    if (rc != 0) {
        gateway_problem(a->g, a->req, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is busy", NULL));
        agg_free(a);
        return;
    }
    a->querying = true;
}

static void on_agg_wait(readwait_event ev, void *arg)
{
    agg_read *a = arg;
    if (ev == READWAIT_TIMEOUT) {
        a->wait = NULL; /* gone with this call: the next result is the answer */
        metrics_gauge_add(a->g->m_reads_waiting, -1);
    }
    if (!a->req)
        return; /* freed when its query returns */
    if (a->lag)
        evtimer_del(a->lag); /* read now instead */
    if (a->querying)
        a->requery = ev != READWAIT_TIMEOUT;
    else
        agg_query(a);
}

void reads_aggregate(gateway *g, http_req *req, const char *tenant, const char *type,
                     const char *id)
{
    const projection *proj = domain_registry_projection(g->domains, type);
    if (!proj) {
        gateway_problem(g, req, problem_new(PROBLEM_NOT_FOUND, "no such aggregate type", NULL));
        return;
    }
    long long min_version = 0;
    const char *mv = http_req_query(req, "min_version");
    if (mv) {
        char *end;
        min_version = strtoll(mv, &end, 10);
        if (*mv < '1' || *mv > '9' || *end || min_version < 1) {
            gateway_problem(
                g, req,
                problem_new(PROBLEM_INVALID_QUERY, "min_version must be a positive integer", NULL));
            return;
        }
    }
    if (unavailable(g, req, g->pg_read))
        return;
    agg_read *a = xcalloc(1, sizeof(*a));
    a->g = g;
    a->req = req;
    a->proj = proj;
    snprintf(a->tenant, sizeof(a->tenant), "%s", tenant);
    a->id = xstrdup(id);
    a->min_version = min_version;
    if (min_version > 0 && g->cfg->reads_max_wait_ms > 0) {
        a->wait = readwait_add(g->readwait, tenant, type, id, min_version,
                               g->cfg->reads_max_wait_ms, on_agg_wait, a);
        metrics_gauge_add(g->m_reads_waiting, 1);
        if (g->reads_replica) {
            a->lag = evtimer_new(g->base, on_lag, a);
            if (!a->lag)
                xoom(sizeof(struct event *));
        }
    }
    http_req_on_gone(req, agg_gone, a);
    agg_query(a);
}

/* reads.c: the read side of the gateway: command status and aggregate state from PostgreSQL. */
#include "gateway.h"

#include "ids.h"
#include "problem.h"
#include "xalloc.h"

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

/* Common start of a read; returns NULL (after answering) when the query cannot be queued. */
static read_ctx *start(gateway *g, http_req *req, const char *sql, int n, const char *const *v,
                       pgconn_cb cb)
{
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

/* Answers a failed query; true when it did. */
static bool failed(read_ctx *c, const pgconn_result *r)
{
    if (pgconn_result_status(r) == PGCONN_OK)
        return false;
    gateway_problem(c->g, c->req,
                    problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is not available", NULL));
    return true;
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

void reads_command(gateway *g, http_req *req, const char *id)
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
    const char *v[] = {id, g->cfg->tenant_default};
    start(g, req, sql, 2, v, on_command);
}

static void on_aggregate(const pgconn_result *r, void *arg)
{
    read_ctx *c = arg;
    if (!c->req || failed(c, r)) {
        free(c);
        return;
    }
    /* type, id, version, state, deleted, updated_at */
    if (pgconn_result_ntuples(r) == 0 || strcmp(pgconn_result_value(r, 0, 4), "t") == 0) {
        gateway_problem(c->g, c->req, problem_new(PROBLEM_NOT_FOUND, "no such aggregate", NULL));
        free(c);
        return;
    }
    const char *version = pgconn_result_value(r, 0, 2);
    char etag[32];
    snprintf(etag, sizeof(etag), "\"%s\"", version);
    http_req_set_header(c->req, "ETag", etag);
    const char *inm = http_req_header(c->req, "If-None-Match");
    if (inm && (strcmp(inm, etag) == 0 || strcmp(inm, "*") == 0)) {
        http_req_reply(c->req, 304, NULL, NULL, 0);
        free(c);
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, "aggregate_type", json_string(pgconn_result_value(r, 0, 0)));
    json_object_set_new(body, "aggregate_id", json_string(pgconn_result_value(r, 0, 1)));
    json_object_set_new(body, "version", json_integer(atoll(version)));
    json_object_set_new(body, "state", json_column(r, 3));
    json_object_set_new(body, "updated_at", json_string(pgconn_result_value(r, 0, 5)));
    http_req_reply_json(c->req, 200, body);
    free(c);
}

void reads_aggregate(gateway *g, http_req *req, const char *type, const char *id)
{
    if (!domain_registry_has_aggregate(g->domains, type)) {
        gateway_problem(g, req, problem_new(PROBLEM_NOT_FOUND, "no such aggregate type", NULL));
        return;
    }
    static const char sql[] =
        "SELECT type, id, version, state, deleted, to_char(updated_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM aggregates "
        "WHERE tenant = $1 AND type = $2 AND id = $3";
    const char *v[] = {g->cfg->tenant_default, type, id};
    start(g, req, sql, 3, v, on_aggregate);
}

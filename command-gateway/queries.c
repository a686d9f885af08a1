/* queries.c: GET /v1/aggregates/{type}: filtered, sorted, keyset-paginated projection rows. */
#include "queries.h"

#include "core/rfc3339.h"
#include "gateway_int.h"
#include "http/problem.h"
#include "domain/projection.h"
#include "core/xalloc.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Parameters: for each declared column c, "c=v" (equal), "c_gt", "c_gte", "c_lt", "c_lte";
 * "sort=c" or "sort=-c" (a declared column or id; default id), "limit=n" (default
 * reads.default_limit, at most reads.max_limit) and "cursor" (the next_cursor of the previous
 * page). Anything else is a 400 naming the parameter. Pages are keyset pages over (sort column,
 * id), so rows written meanwhile never make a page repeat or skip a row that was there before;
 * rows whose column is NULL come last.
 */

#define MAX_FILTERS 16

static const struct {
    const char *suffix;
    const char *op;
} ops[] = {{"", "="}, {"_gt", ">"}, {"_gte", ">="}, {"_lt", "<"}, {"_lte", "<="}};

typedef struct {
    const projection_column *col;
    const char *op;
    const char *value; /* borrowed from the request */
} filter;

typedef struct {
    gateway *g;
    const projection *proj;
    filter filters[MAX_FILTERS];
    size_t nfilters;
    const projection_column *sort; /* NULL: id */
    bool desc;
    long long limit;
    json_t *cursor;  /* {"sort": "...", "v": text or null, "id": "..."} */
    const char *bad; /* the parameter at fault */
    char why[160];
} list_query;

/* True when text is a valid value of a column of type t. */
static bool value_ok(projection_type t, const char *text)
{
    char *end;
    errno = 0;
    switch (t) {
    case PROJECTION_TEXT:
        return true;
    case PROJECTION_BIGINT:
        (void)strtoll(text, &end, 10);
        return *text && !*end && errno == 0;
    case PROJECTION_NUMERIC: {
        double d = strtod(text, &end);
        return *text && !*end && isfinite(d);
    }
    case PROJECTION_BOOLEAN:
        return strcmp(text, "true") == 0 || strcmp(text, "false") == 0;
    case PROJECTION_TIMESTAMPTZ:
        return rfc3339_date_time_valid(text, strlen(text));
    }
    return false;
}

static bool refuse(list_query *q, const char *name, const char *fmt, const char *arg)
{
    q->bad = name;
    snprintf(q->why, sizeof q->why, fmt, arg);
    return false;
}

/* A cursor is the hex of its JSON: opaque to clients, and no decoder to get wrong. */
static char *cursor_encode(const json_t *c)
{
    char *text = json_dumps(c, JSON_COMPACT);
    size_t n = strlen(text);
    char *hex = xmalloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)text[i]);
    free(text);
    return hex;
}

static json_t *cursor_decode(const char *hex)
{
    size_t n = strlen(hex);
    if (n == 0 || n % 2 || n > 4096 || strspn(hex, "0123456789abcdef") != n)
        return NULL;
    char *text = xmalloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        text[i] = (char)v;
    }
    text[n / 2] = '\0';
    json_t *c = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_string(json_object_get(c, "sort")) || !json_is_string(json_object_get(c, "id")) ||
        !(json_is_string(json_object_get(c, "v")) || json_is_null(json_object_get(c, "v")))) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* The sort parameter as written ("id", "balance", "-balance"). */
static const char *sort_text(const list_query *q, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", q->desc ? "-" : "", q->sort ? q->sort->name : "id");
    return buf;
}

static bool parse_param(const char *name, const char *value, void *arg)
{
    list_query *q = arg;
    if (strcmp(name, "limit") == 0) {
        char *end;
        q->limit = strtoll(value, &end, 10);
        if (*value < '1' || *value > '9' || *end || q->limit > q->g->cfg->reads_max_limit)
            return refuse(q, name, "must be an integer from 1 to %s", "reads.max_limit");
        return true;
    }
    if (strcmp(name, "sort") == 0) {
        const char *col = value[0] == '-' ? value + 1 : value;
        q->desc = value[0] == '-';
        q->sort = projection_column_find(q->proj, col);
        if (!q->sort && strcmp(col, "id") != 0)
            return refuse(q, name, "'%s' is neither id nor a declared column", col);
        return true;
    }
    if (strcmp(name, "cursor") == 0) {
        q->cursor = cursor_decode(value);
        return q->cursor ? true : refuse(q, name, "%s", "not a cursor this API handed out");
    }
    for (size_t k = sizeof ops / sizeof ops[0]; k-- > 0;) {
        size_t n = strlen(name), sl = strlen(ops[k].suffix);
        if (n <= sl || strcmp(name + n - sl, ops[k].suffix) != 0)
            continue;
        char col[64];
        snprintf(col, sizeof col, "%.*s", (int)(n - sl), name);
        const projection_column *c = projection_column_find(q->proj, col);
        if (!c)
            continue; /* "a_gt" may also be a column named a_gt: try the shorter suffixes */
        if (q->nfilters == MAX_FILTERS)
            return refuse(q, name, "%s", "too many filters");
        if (!value_ok(c->type, value))
            return refuse(q, name, "must be a value of the column's type, %s",
                          projection_type_sql(c->type));
        q->filters[q->nfilters++] = (filter){c, ops[k].op, value};
        return true;
    }
    return refuse(q, name, "%s", "unknown parameter: filters exist only for declared columns");
}

/* Appends text to the growing SQL string *sql. */
static void add(char **sql, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(char **sql, const char *fmt, ...)
{
    char piece[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(piece, sizeof piece, fmt, ap);
    va_end(ap);
    char *next = xasprintf("%s%s", *sql, piece);
    free(*sql);
    *sql = next;
}

typedef struct {
    gateway *g;
    http_req *req;    /* NULL once the client is gone */
    const char *type; /* borrowed from the registry */
    char sort[64];
    long long limit;
} list_ctx;

static void on_list_gone(http_req *req, void *arg)
{
    (void)req;
    ((list_ctx *)arg)->req = NULL;
}

static void on_rows(const pgconn_result *r, void *arg)
{
    list_ctx *c = arg;
    if (!c->req) {
        free(c);
        return;
    }
    if (pgconn_result_status(r) != PGCONN_OK) {
        gateway_problem(c->g, c->req,
                        problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is not available", NULL));
        free(c);
        return;
    }
    /* id, version, state, updated_at, sort value; one row more than the page says "more" */
    int n = pgconn_result_ntuples(r);
    int shown = n > c->limit ? (int)c->limit : n;
    json_t *items = json_array();
    for (int i = 0; i < shown; i++) {
        const char *state = pgconn_result_value(r, i, 2);
        json_array_append_new(items,
                              json_pack("{s:s, s:s, s:I, s:o, s:s}", "aggregate_type", c->type,
                                        "aggregate_id", pgconn_result_value(r, i, 0), "version",
                                        (json_int_t)atoll(pgconn_result_value(r, i, 1)), "state",
                                        state ? json_loads(state, 0, NULL) : json_null(),
                                        "updated_at", pgconn_result_value(r, i, 3)));
    }
    json_t *next = json_null();
    if (n > c->limit) {
        const char *v = pgconn_result_value(r, shown - 1, 4);
        json_t *cur =
            json_pack("{s:s, s:o, s:s}", "sort", c->sort, "v", v ? json_string(v) : json_null(),
                      "id", pgconn_result_value(r, shown - 1, 0));
        char *hex = cursor_encode(cur);
        json_decref(cur);
        json_decref(next);
        next = json_string(hex);
        free(hex);
    }
    http_req_reply_json(c->req, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
    free(c);
}

void queries_list(gateway *g, http_req *req, const char *tenant, const char *type)
{
    list_query q = {.g = g, .proj = domain_registry_projection(g->domains, type)};
    if (!q.proj) {
        gateway_problem(g, req, problem_new(PROBLEM_NOT_FOUND, "no such aggregate type", NULL));
        return;
    }
    q.limit = g->cfg->reads_default_limit;
    if (!http_req_query_each(req, parse_param, &q)) {
        json_t *errors = json_pack("[{s:s, s:s}]", "parameter", q.bad ? q.bad : "", "message",
                                   q.bad ? q.why : "the query string does not parse");
        char detail[256];
        snprintf(detail, sizeof detail, "%s: %s", q.bad ? q.bad : "query", q.bad ? q.why : "");
        gateway_problem(g, req, problem_new(PROBLEM_INVALID_QUERY, detail, errors));
        json_decref(q.cursor);
        return;
    }
    char sort[64];
    sort_text(&q, sort, sizeof sort);
    if (q.cursor && strcmp(json_string_value(json_object_get(q.cursor, "sort")), sort) != 0) {
        json_decref(q.cursor);
        gateway_problem(g, req,
                        problem_new(PROBLEM_INVALID_QUERY,
                                    "cursor: it was made for another sort order",
                                    json_pack("[{s:s, s:s}]", "parameter", "cursor", "message",
                                              "it was made for another sort order")));
        return;
    }

    /* Parameters: $1 tenant, then filter values, then the cursor's, then the limit. */
    const char *values[MAX_FILTERS + 4];
    int nv = 0;
    values[nv++] = tenant;
    const char *col = q.sort ? q.sort->name : "id";
    char *sql = xasprintf("SELECT id, version, state, to_char(updated_at AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \"%s\"::text FROM \"%s\" "
                          "WHERE tenant = $1 AND NOT deleted",
                          col, q.proj->table);
    for (size_t i = 0; i < q.nfilters; i++) {
        values[nv++] = q.filters[i].value;
        add(&sql, " AND \"%s\" %s $%d::%s", q.filters[i].col->name, q.filters[i].op, nv,
            projection_type_sql(q.filters[i].col->type));
    }
    const char *lt = q.desc ? "<" : ">", *dir = q.desc ? "DESC" : "ASC";
    if (q.cursor) {
        const json_t *v = json_object_get(q.cursor, "v");
        values[nv++] = json_string_value(json_object_get(q.cursor, "id"));
        int id_param = nv;
        if (!q.sort) {
            add(&sql, " AND id %s $%d", lt, id_param);
        } else if (json_is_null(v)) { /* the previous page ended among the NULLs, which come last */
            add(&sql, " AND \"%s\" IS NULL AND id %s $%d", col, lt, id_param);
        } else {
            values[nv++] = json_string_value(v);
            const char *t = projection_type_sql(q.sort->type);
            add(&sql,
                " AND (\"%s\" %s $%d::%s OR (\"%s\" = $%d::%s AND id %s $%d) OR \"%s\" IS NULL)",
                col, lt, nv, t, col, nv, t, lt, id_param, col);
        }
    }
    char limit[32];
    snprintf(limit, sizeof limit, "%lld", q.limit + 1);
    values[nv++] = limit;
    if (q.sort)
        add(&sql, " ORDER BY \"%s\" %s NULLS LAST, id %s LIMIT $%d", col, dir, dir, nv);
    else
        add(&sql, " ORDER BY id %s LIMIT $%d", dir, nv);

    list_ctx *c = xcalloc(1, sizeof *c);
    c->g = g;
    c->req = req;
    c->limit = q.limit;
    c->type = q.proj->aggregate;
    snprintf(c->sort, sizeof c->sort, "%s", sort);
    int rc = pgconn_query(g->pg_read, sql, nv, values, on_rows, c);
    free(sql);
    json_decref(q.cursor); /* values borrowed from it were copied by pgconn_query() */
    if (rc != 0) {
        free(c);
        gateway_problem(g, req, problem_new(PROBLEM_UNAVAILABLE, "PostgreSQL is busy", NULL));
        return;
    }
    http_req_on_gone(req, on_list_gone, c);
}

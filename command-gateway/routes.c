/* routes.c: the route table, the handlers of the gateway's own pages, and the dispatch. */
#include "routes.h"

#include "commands.h"
#include "core/ids.h"
#include "gateway_int.h"
#include "http/problem.h"
#include "queries.h"
#include "reads.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void reply_text(http_req *req, int status, const char *text)
{
    http_req_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void healthz(gateway *g, http_req *req, const gateway_call *call)
{
    (void)g, (void)call;
    reply_text(req, 200, "ok\n");
}

static void ready(gateway *g, http_req *req, const gateway_call *call)
{
    (void)call;
    /* Reads answer 503 at once while their session is down, so it counts as much as the other. */
    bool pg = pgconn_connected(g->pg) && pgconn_connected(g->pg_read);
    bool kafka = kafka_producer_healthy(g->producer);
    /* One replies consumer serves every worker (ADR 0019): one routable partition will do. */
    bool routable = replies_ready(g->shared->replies);
    bool ok = pg && kafka && routable;
    json_t *body = json_pack("{s:s, s:b, s:b, s:b}", "status", ok ? "ready" : "not ready",
                             "postgresql", pg, "kafka", kafka, "replies", routable);
    http_req_reply_json(req, ok ? 200 : 503, body);
}

static void metrics_page(gateway *g, http_req *req, const gateway_call *call)
{
    (void)call;
    char *text = metrics_render(g->metrics);
    http_req_reply(req, 200, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
}

static void openapi_page(gateway *g, http_req *req, const gateway_call *call)
{
    (void)call;
    http_req_reply(req, 200, "application/json", g->openapi, g->openapi_len);
}

static void post_command(gateway *g, http_req *req, const gateway_call *call)
{
    commands_post(g, req, call->tenant);
}

static void get_command(gateway *g, http_req *req, const gateway_call *call)
{
    reads_command(g, req, call->tenant, call->params[0]);
}

static void list_aggregates(gateway *g, http_req *req, const gateway_call *call)
{
    queries_list(g, req, call->tenant, call->params[0]);
}

static void get_aggregate(gateway *g, http_req *req, const gateway_call *call)
{
    reads_aggregate(g, req, call->tenant, call->params[0], call->params[1]);
}

/* The route table: the only place that knows which path goes where, and who may use it. */
static const gateway_route routes[] = {
    {"/healthz", GATEWAY_GET, healthz, NULL},
    {"/readyz", GATEWAY_GET, ready, NULL},
    {"/metrics", GATEWAY_GET, metrics_page, NULL},
    {"/openapi.json", GATEWAY_GET, openapi_page, NULL},
    {"/v1/commands", GATEWAY_POST, post_command, "commands:write"},
    {"/v1/commands/{id}", GATEWAY_GET, get_command, "commands:read"},
    {"/v1/aggregates/{type}", GATEWAY_GET, list_aggregates, "aggregates:read"},
    {"/v1/aggregates/{type}/{id}", GATEWAY_GET, get_aggregate, "aggregates:read"},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

const gateway_route *gateway_routes(size_t *n)
{
    *n = NROUTES;
    return routes;
}

static void free_segments(char **seg, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(seg[i]);
}

/*
 * Splits a path as sent ("/v1/aggregates/account/a%2Fb") at its slashes, then percent-decodes
 * each segment on its own: an id holding "/" is one segment, and so round-trips through its
 * Location. Every segment counts, an empty one too ("acc-1/" is not "acc-1"). Returns the
 * segments (free_segments() frees them), at most max: a longer path has max. 0 for a path whose
 * segment decodes to a NUL, which names nothing.
 */
static size_t split_path(const char *path, char **seg, size_t max)
{
    size_t n = 0;
    const char *s = path + (*path == '/');
    for (;;) {
        const char *end = strchrnul(s, '/');
        if (n == max)
            return n;
        if (!(seg[n] = http_uri_unescape(s, (size_t)(end - s)))) {
            free_segments(seg, n);
            return 0;
        }
        n++;
        if (!*end)
            return n;
        s = end + 1;
    }
}

/* A path is split into at most this many segments: one more than the longest template has, so
   that a longer path matches none. */
#define MAX_SEGMENTS 8

/* True when the n segments match the template; params then gets its {name} segments. */
static bool match(const char *tmpl, char *const *seg, size_t n, char **params)
{
    size_t i = 0, np = 0;
    for (const char *t = tmpl; *t; i++) {
        t += *t == '/';
        const char *end = strchrnul(t, '/');
        size_t len = (size_t)(end - t);
        if (i == n)
            return false;
        if (*t == '{') {
            if (np == GATEWAY_MAX_PARAMS)
                return false;
            params[np++] = seg[i];
        } else if (strlen(seg[i]) != len || strncmp(seg[i], t, len) != 0)
            return false;
        t = end;
    }
    return i == n;
}

static void not_allowed(gateway *g, http_req *req, unsigned methods)
{
    /* In http_method order, so GET routes say "GET, HEAD". */
    static const char *const names[] = {
        [HTTP_GET] = "GET", [HTTP_HEAD] = "HEAD",   [HTTP_POST] = "POST",
        [HTTP_PUT] = "PUT", [HTTP_PATCH] = "PATCH", [HTTP_DELETE] = "DELETE",
    };
    char allow[64] = "";
    for (size_t m = 0; m < sizeof(names) / sizeof(names[0]); m++) {
        if (methods & GATEWAY_METHOD(m))
            snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                     *allow ? ", " : "", names[m]);
    }
    http_req_set_header(req, "Allow", allow);
    gateway_problem(g, req, problem_new(PROBLEM_METHOD_NOT_ALLOWED, NULL, NULL));
}

/*
 * The credentials and the rate limit of a request to an API route: 401 or 403 with
 * WWW-Authenticate, or 429 with Retry-After. True when it may go on; *tenant then names its
 * tenant (in who, when authentication is on).
 */
static bool admit(gateway *g, http_req *req, const char *scope, auth_result *who,
                  const char **tenant)
{
    const auth *a = g->shared->auth;
    if (a) {
        if (!auth_check(a, http_req_header(req, "Authorization"),
                        g->cfg->auth_scopes ? scope : NULL, ids_now_us() / 1000000, who)) {
            metrics_add(g->m_auth_refused, 1);
            http_req_set_header(req, "WWW-Authenticate", who->challenge);
            gateway_problem(
                g, req,
                problem_new(who->status == 403 ? PROBLEM_FORBIDDEN : PROBLEM_UNAUTHORIZED,
                            who->detail, NULL));
            return false;
        }
        *tenant = who->tenant;
    }
    long long wait_us =
        g->shared->limit ? ratelimit_take(g->shared->limit, *tenant, ids_monotonic_us()) : 0;
    if (wait_us > 0) {
        metrics_add(g->m_rate_limited, 1);
        char retry[24];
        snprintf(retry, sizeof(retry), "%lld", (wait_us + 999999) / 1000000);
        http_req_set_header(req, "Retry-After", retry);
        gateway_problem(g, req,
                        problem_new(PROBLEM_RATE_LIMITED,
                                    "this tenant's request rate is above ratelimit.rate", NULL));
        return false;
    }
    return true;
}

/* Walks the route table: 404 when no path matches, 405 when the method does not. */
void routes_dispatch(http_req *req, void *arg)
{
    gateway *g = arg;
    char *seg[MAX_SEGMENTS], *params[GATEWAY_MAX_PARAMS];
    size_t n = split_path(http_req_path(req), seg, MAX_SEGMENTS);
    const gateway_route *r = NULL;
    for (size_t i = 0; i < NROUTES && !r; i++) {
        if (match(routes[i].path, seg, n, params))
            r = &routes[i];
    }
    gateway_call call = {.params = params, .tenant = g->cfg->tenant_default};
    auth_result who;
    if (!r)
        gateway_problem(g, req, problem_new(PROBLEM_NOT_FOUND, "no such route", NULL));
    else if (!(r->methods & GATEWAY_METHOD(http_req_method(req))))
        not_allowed(g, req, r->methods);
    else if (!r->scope || admit(g, req, r->scope, &who, &call.tenant))
        r->handler(g, req, &call);
    free_segments(seg, n);
}

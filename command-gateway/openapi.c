/* openapi.c: builds the OpenAPI 3.1 document of the gateway's routes from the domain registry. */
#include "openapi.h"

#include "routes.h"
#include "openapi_schemas.h"
#include "http/problem.h"
#include "domain/projection.h"
#include "core/xalloc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- building blocks ---- */

/* A response header; takes ownership of schema. */
static json_t *response_header(const char *description, bool required, json_t *schema)
{
    return json_pack("{s:s, s:b, s:o}", "description", description, "required", required, "schema",
                     schema);
}

/* A response; takes ownership of headers and schema, either of which may be NULL. */
static json_t *response(const char *description, json_t *headers, const char *media, json_t *schema)
{
    json_t *r = json_pack("{s:s}", "description", description);
    if (headers)
        json_object_set_new(r, "headers", headers);
    if (schema)
        json_object_set_new(r, "content", json_pack("{s:{s:o}}", media, "schema", schema));
    return r;
}

static json_t *json_response(const char *description, json_t *headers, json_t *schema)
{
    return response(description, headers, "application/json", schema);
}

/* A request parameter; takes ownership of schema. */
static json_t *param(const char *in, const char *name, bool required, const char *description,
                     json_t *schema)
{
    return json_pack("{s:s, s:s, s:b, s:s, s:o}", "name", name, "in", in, "required", required,
                     "description", description, "schema", schema);
}

/* An operation without responses yet. */
static json_t *operation(const char *tag, const char *id, const char *summary,
                         const char *description)
{
    return json_pack("{s:[s], s:s, s:s, s:s, s:{}}", "tags", tag, "operationId", id, "summary",
                     summary, "description", description, "responses");
}

static void add_response(json_t *op, int status, json_t *resp)
{
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    json_object_set_new(json_object_get(op, "responses"), code, resp);
}

/* One way a route fails: the problem kind and, for this route, when it happens. */
typedef struct {
    problem_kind kind;
    const char *when;
} problem_use;

/* Extra headers of the problem answers of one route, by status; a new object or NULL. */
typedef json_t *(*problem_headers)(int status);

/*
 * Adds one response per status among uses, in order of first appearance: application/problem+json
 * whose "type" is one of the kinds' URIs, each listed with its title and when it happens.
 */
static void add_problems(json_t *op, const problem_use *uses, size_t n, problem_headers headers)
{
    for (size_t i = 0; i < n; i++) {
        int status = problem_status(uses[i].kind);
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen |= problem_status(uses[j].kind) == status;
        if (seen)
            continue;
        json_t *types = json_array();
        char *desc = xstrdup("");
        for (size_t j = i; j < n; j++) {
            if (problem_status(uses[j].kind) != status)
                continue;
            json_t *p = problem_new(uses[j].kind, NULL, NULL);
            json_array_append(types, json_object_get(p, "type"));
            char *more = xasprintf("%s%s- `%s` (%s): %s", desc, *desc ? "\n" : "",
                                   json_string_value(json_object_get(p, "type")),
                                   json_string_value(json_object_get(p, "title")), uses[j].when);
            free(desc);
            desc = more;
            json_decref(p);
        }
        json_t *schema = json_pack("{s:[o, {s:{s:{s:o}, s:{s:i}}}]}", "allOf",
                                   openapi_schemas_ref("", "Problem"), "properties", "type", "enum",
                                   types, "status", "const", status);
        add_response(
            op, status,
            response(desc, headers ? headers(status) : NULL, "application/problem+json", schema));
        free(desc);
    }
}

static json_t *retry_after_header(void)
{
    return response_header(
        "Seconds to wait before retrying: on a 503, longer as the gateway's waiting room fills and "
        "as an outage of PostgreSQL or Kafka lasts, with jitter (docs/api.md).",
        true, json_pack("{s:s, s:i}", "type", "integer", "minimum", 0));
}

/* Reads: only 503 carries a header of its own. */
static json_t *read_problem_headers(int status)
{
    return status == 503 ? json_pack("{s:o}", "Retry-After", retry_after_header()) : NULL;
}

static json_t *idempotency_key_header(bool required)
{
    return response_header(required ? "The request's Idempotency-Key as an RFC 8941 sf-string "
                                      "(quoted; \" and \\ escaped): the client's, or the one the "
                                      "gateway assigned (the command id)."
                                    : "The request's Idempotency-Key as an RFC 8941 sf-string, "
                                      "once the request passed validation.",
                           required,
                           json_pack("{s:s, s:s}", "type", "string", "pattern",
                                     "^\"([\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]|\\\\[\"\\\\])+\"$"));
}

static json_t *replayed_header(void)
{
    return response_header(
        "true when this is the stored answer of an earlier request with the same "
        "Idempotency-Key.",
        false, json_pack("{s:s, s:[s]}", "type", "string", "enum", "true"));
}

static json_t *etag_header(const char *what)
{
    return response_header(what, true,
                           json_pack("{s:s, s:s}", "type", "string", "pattern", "^\"[0-9]+\"$"));
}

/* RFC 7240: the preferences applied; each answer to a command varies on them. */
static json_t *preference_applied_header(void)
{
    return response_header(
        "respond-async, or wait=N, when that preference was honoured (RFC "
        "7240). Every answer to a validated command also says Vary: Prefer.",
        false,
        json_pack("{s:s, s:s}", "type", "string", "pattern", "^(respond-async|wait=[0-9]+)$"));
}

/* POST /v1/commands: stored rejections may be replayed; 503 and in-flight say when to retry. */
static json_t *command_problem_headers(int status)
{
    json_t *h = json_pack("{s:o}", "Idempotency-Key", idempotency_key_header(false));
    if (status == 503)
        json_object_set_new(h, "Retry-After", retry_after_header());
    else if (status != 500)
        json_object_set_new(h, "Idempotent-Replayed", replayed_header());
    if (status == 409)
        json_object_set_new(
            h, "Retry-After",
            response_header("With in-flight: seconds to wait before retrying (1).", false,
                            json_pack("{s:s, s:i}", "type", "integer", "minimum", 0)));
    return h;
}

/* ---- paths ---- */

static const problem_use command_problems[] = {
    {PROBLEM_MALFORMED_JSON, "the body is not JSON. Nothing is sent to Kafka."},
    {PROBLEM_NUMBER_OUT_OF_RANGE,
     "the body is JSON, but holds an integer outside [-2^63, 2^63) or a number beyond a double "
     "(1e400). Nothing is sent to Kafka."},
    {PROBLEM_INVALID_REQUEST,
     "not a command: the body is not an object, a member is missing, unknown or of the wrong "
     "type, a header value is malformed (Idempotency-Key, If-Match), If-Match names several "
     "versions, or If-Match and expected_version disagree. Nothing is sent to Kafka."},
    {PROBLEM_UNKNOWN_COMMAND, "no such command type. Nothing is sent to Kafka."},
    {PROBLEM_INVALID_PAYLOAD,
     "the payload fails its command's schema; errors lists every failure. Nothing is sent to "
     "Kafka."},
    {PROBLEM_ALREADY_EXISTS, "the command creates an aggregate that exists."},
    {PROBLEM_IN_FLIGHT,
     "a request with this Idempotency-Key was taken and is not decided yet; command_id names "
     "it."},
    {PROBLEM_VERSION_MISMATCH,
     "the aggregate is at another version than expected_version or If-Match (current_version "
     "says which), does not exist under If-Match: *, or no entity-tag of If-Match can match "
     "(then without current_version)."},
    {PROBLEM_TOO_LARGE,
     "the body is larger than http.max_body, or the command would take more room in a Kafka "
     "message than kafka.message.max.bytes allows. Nothing is claimed or sent to Kafka. A body "
     "announced (Content-Length) or sent (chunked) more than 64 KiB over http.max_body is "
     "refused unread by the HTTP edge, which reads and drops what the client still sends for a "
     "few seconds and closes the connection."},
    {PROBLEM_KEY_REUSED, "the Idempotency-Key was used for a different request."},
    {PROBLEM_AGGREGATE_NOT_FOUND, "the command needs an aggregate that does not exist."},
    {PROBLEM_PRECONDITION, "a precondition of the command's rule does not hold; see errors."},
    {PROBLEM_INVARIANT,
     "the resulting state would fail the aggregate's state schema (an invariant); see errors."},
    {PROBLEM_INTERNAL, "the stored or received result of the command could not be read."},
    {PROBLEM_UNAVAILABLE,
     "Kafka did not take or confirm the command in time, PostgreSQL could not check the "
     "Idempotency-Key, too many requests are waiting, or the gateway is shutting down. "
     "Retrying with the same Idempotency-Key is safe: such a request leaves no claim on it."},
};

static const problem_use command_read_problems[] = {
    {PROBLEM_NOT_FOUND, "no command with this id (yet), or the id is not a UUID."},
    {PROBLEM_UNAVAILABLE, "PostgreSQL is busy or not available."},
};

static const problem_use aggregate_read_problems[] = {
    {PROBLEM_INVALID_QUERY, "min_version is not a positive integer."},
    {PROBLEM_NOT_FOUND,
     "an unknown aggregate type, an unknown id, or a deleted aggregate (with min_version: not "
     "projected yet when the wait ended)."},
    {PROBLEM_UNAVAILABLE, "PostgreSQL is busy or not available."},
};

static const problem_use aggregate_list_problems[] = {
    {PROBLEM_INVALID_QUERY,
     "a parameter that is not a filter on a declared column, sort, limit or cursor; a value "
     "of the wrong type; a limit out of range; a cursor made for another sort. errors names "
     "the parameter."},
    {PROBLEM_NOT_FOUND, "an unknown aggregate type."},
    {PROBLEM_UNAVAILABLE, "PostgreSQL is busy or not available."},
};

static json_t *post_command(void)
{
    json_t *op = operation(
        "commands", "postCommand", "Send a command",
        "Validates the command, writes it to Kafka keyed by aggregate id and, unless the client "
        "prefers respond-async, waits for its result (sync.timeout_ms, or Prefer: wait=N up to "
        "sync.max_wait_ms) before answering 202 instead. The body is parsed as JSON whatever its "
        "Content-Type.");
    json_object_set_new(
        op, "parameters",
        json_pack(
            "[o, o, o, o, o]",
            param("header", "Idempotency-Key", false,
                  "A token or RFC 8941 quoted string of 1 to 255 visible ASCII characters. A "
                  "retry with the same key and body gets the first answer again; without a key "
                  "the gateway assigns one (the command id).",
                  json_pack("{s:s, s:s}", "type", "string", "pattern",
                            "^([\\x21\\x23-\\x2b\\x2d-\\x3a\\x3c-\\x7e]{1,255}|"
                            "\"([\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]|\\\\[\"\\\\]){1,255}\")$")),
            param("header", "If-Match", false,
                  "RFC 9110 section 13.1.1, compared strongly with the aggregate's ETag. "
                  "\"<n>\": apply only at version n, as expected_version (both given and "
                  "different: 400); *: only if the aggregate exists (412 otherwise). A list "
                  "counts its strong entity-tags that are versions: one is as \"<n>\", several "
                  "are a 400, none is a 412 at once.",
                  openapi_schemas_string(NULL)),
            param("header", "Prefer", false,
                  "RFC 7240: respond-async answers 202 as soon as Kafka has the command; wait=N "
                  "waits at most N seconds for the result.",
                  json_pack("{s:s, s:[s, s]}", "type", "string", "examples", "respond-async",
                            "wait=10")),
            param("header", "traceparent", false,
                  "W3C Trace Context, 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>: the "
                  "command joins the trace (see docs/api.md, Tracing). A value that does not "
                  "parse is ignored, as the specification asks, and a trace is started.",
                  json_pack("{s:s}", "type", "string")),
            param("header", "tracestate", false,
                  "W3C Trace Context vendor state, passed on with a valid traceparent (at most 512 "
                  "bytes and 32 members; otherwise dropped).",
                  json_pack("{s:s}", "type", "string"))));
    json_object_set_new(op, "requestBody",
                        json_pack("{s:b, s:{s:{s:o}}}", "required", 1, "content",
                                  "application/json", "schema",
                                  openapi_schemas_ref("", "CommandRequest")));
    const char *etag = "The aggregate's version after the command.";
    add_response(op, 200,
                 json_response("Applied.",
                               json_pack("{s:o, s:o, s:o, s:o}", "Idempotency-Key",
                                         idempotency_key_header(true), "ETag", etag_header(etag),
                                         "Idempotent-Replayed", replayed_header(),
                                         "Preference-Applied", preference_applied_header()),
                               openapi_schemas_ref("", "CommandApplied")));
    add_response(
        op, 201,
        json_response("Applied; the command created the aggregate.",
                      json_pack("{s:o, s:o, s:o, s:o, s:o}", "Idempotency-Key",
                                idempotency_key_header(true), "ETag", etag_header(etag), "Location",
                                response_header("/v1/aggregates/{type}/{id} of the new aggregate.",
                                                true, openapi_schemas_string("uri-reference")),
                                "Idempotent-Replayed", replayed_header(), "Preference-Applied",
                                preference_applied_header()),
                      openapi_schemas_ref("", "CommandApplied")));
    add_response(
        op, 202,
        json_response(
            "Accepted: the command is durably in Kafka (respond-async, or its result did not "
            "come within the wait); its status is at Location.",
            json_pack("{s:o, s:o, s:o}", "Idempotency-Key", idempotency_key_header(true),
                      "Location",
                      response_header("/v1/commands/{id} of the command.", true,
                                      openapi_schemas_string("uri-reference")),
                      "Preference-Applied", preference_applied_header()),
            openapi_schemas_ref("", "CommandAccepted")));
    add_problems(op, command_problems, N(command_problems), command_problem_headers);
    return op;
}

static json_t *get_command(void)
{
    json_t *op = operation("reads", "getCommand", "A command's status",
                           "The command's record: accepted (in Kafka, not applied yet), then "
                           "applied or rejected with the answer it got.");
    add_response(
        op, 200,
        json_response("The command's record.", NULL, openapi_schemas_ref("", "CommandRecord")));
    add_problems(op, command_read_problems, N(command_read_problems), read_problem_headers);
    return op;
}

static json_t *consistency_header(void)
{
    return response_header(
        "With min_version: fresh when the projection had reached it, stale "
        "when the wait ended first (the answer is what the projection has).",
        false, json_pack("{s:s, s:[s, s]}", "type", "string", "enum", "fresh", "stale"));
}

static json_t *get_aggregate(void)
{
    json_t *op = operation(
        "reads", "getAggregate", "An aggregate's state",
        "The aggregate's state and version from its projection (the read model, which the "
        "projector keeps from the events topic). min_version=N, the version a write answered, "
        "waits at most reads.max_wait_ms until the projection has reached it: read-your-writes.");
    json_object_set_new(
        op, "parameters",
        json_pack("[o, o]",
                  param("header", "If-None-Match", false,
                        "The ETags of copies the client holds (a list; W/ is ignored: weak "
                        "comparison), or *: 304 while one of them is current.",
                        openapi_schemas_string(NULL)),
                  param("query", "min_version", false,
                        "Wait until the projection holds at least this version of the aggregate.",
                        json_pack("{s:s, s:i}", "type", "integer", "minimum", 1))));
    const char *etag = "The aggregate's version.";
    add_response(op, 200,
                 json_response("The aggregate.",
                               json_pack("{s:o, s:o}", "ETag", etag_header(etag),
                                         "Read-Consistency", consistency_header()),
                               openapi_schemas_ref("", "AggregateView")));
    add_response(op, 304,
                 response("Not modified: If-None-Match names the current version.",
                          json_pack("{s:o}", "ETag", etag_header(etag)), NULL, NULL));
    add_problems(op, aggregate_read_problems, N(aggregate_read_problems), read_problem_headers);
    return op;
}

static json_t *list_aggregates(const domain_registry *reg)
{
    /* The filters differ by aggregate type: the description lists each type's columns. */
    char *columns = xstrdup("");
    for (size_t i = 0; i < domain_registry_aggregate_count(reg); i++) {
        const projection *p =
            domain_registry_projection(reg, domain_registry_aggregate_name(reg, i));
        char *cols = xstrdup("");
        for (size_t k = 0; k < p->ncols; k++) {
            char *next = xasprintf("%s%s%s (%s)", cols, k ? ", " : "", p->cols[k].name,
                                   projection_type_sql(p->cols[k].type));
            free(cols);
            cols = next;
        }
        char *next = xasprintf("%s %s: %s.", columns, p->aggregate, p->ncols ? cols : "none");
        free(cols);
        free(columns);
        columns = next;
    }
    char *desc = xasprintf(
        "Projection rows of one type (deleted ones left out), in keyset pages. Filters: for a "
        "declared column c, c=v, c_gt=v, c_gte=v, c_lt=v, c_lte=v (v of the column's type). "
        "Declared columns by type:%s Rows whose sort column is NULL come last. Pages never "
        "repeat or skip a row while writes continue, if the filters stay the same.",
        columns);
    json_t *op = operation("reads", "listAggregates", "Query aggregates", desc);
    free(columns);
    free(desc);
    json_object_set_new(
        op, "parameters",
        json_pack(
            "[o, o, o, o]",
            param("query", "sort", false,
                  "id (the default) or a declared column; a leading - sorts descending.",
                  json_pack("{s:s, s:s}", "type", "string", "pattern", "^-?[a-z][a-z0-9_]*$")),
            param("query", "limit", false,
                  "Rows per page (reads.default_limit; at most "
                  "reads.max_limit).",
                  json_pack("{s:s, s:i}", "type", "integer", "minimum", 1)),
            param("query", "cursor", false, "next_cursor of the previous page.",
                  json_pack("{s:s, s:s}", "type", "string", "pattern", "^([0-9a-f]{2})+$")),
            json_pack("{s:s, s:s, s:b, s:s, s:s, s:b, s:{s:s, s:{s:s}}}", "in", "query", "name",
                      "filters", "required", 0, "description",
                      "Filters on declared columns, as c=v, c_gt=v, c_gte=v, c_lt=v, c_lte=v.",
                      "style", "form", "explode", 1, "schema", "type", "object",
                      "additionalProperties", "type", "string")));
    add_response(op, 200,
                 json_response("A page of rows.", NULL, openapi_schemas_ref("", "AggregatePage")));
    add_problems(op, aggregate_list_problems, N(aggregate_list_problems), read_problem_headers);
    return op;
}

static json_t *get_plain(const char *id, const char *summary, const char *description,
                         const char *media, json_t *schema)
{
    json_t *op = operation("operations", id, summary, description);
    add_response(op, 200, response(summary, NULL, media, schema));
    return op;
}

static json_t *get_readyz(void)
{
    json_t *op = operation("operations", "getReadyz", "Readiness",
                           "Ready when PostgreSQL is connected, Kafka is reachable and every "
                           "worker owns reply partitions; the body says which part is not.");
    add_response(op, 200, json_response("Ready.", NULL, openapi_schemas_ref("", "Readiness")));
    add_response(op, 503, json_response("Not ready.", NULL, openapi_schemas_ref("", "Readiness")));
    return op;
}

static const problem_use auth_problems[] = {
    {PROBLEM_UNAUTHORIZED,
     "with auth.mode=jwt: no bearer token, or one that is malformed (not three unpadded "
     "base64url parts), has a crit header, does not verify, is signed with another algorithm, has "
     "expired or is not valid yet, names another issuer or audience, "
     "or names no valid tenant. WWW-Authenticate says which (RFC 6750)."},
    {PROBLEM_FORBIDDEN, "with auth.scopes=true: the token lacks this route's scope."},
    {PROBLEM_RATE_LIMITED,
     "the tenant's requests to this gateway are above ratelimit.rate; nothing was done."},
};

static json_t *auth_problem_headers(int status)
{
    if (status == 429)
        return json_pack("{s:o}", "Retry-After", retry_after_header());
    return json_pack("{s:o}", "WWW-Authenticate",
                     response_header("The bearer challenge (RFC 6750 section 3).", true,
                                     openapi_schemas_string(NULL)));
}

/*
 * Every route that needs a token says so, with its scope, and how it refuses. With
 * authentication off (bearer false) no route needs one: only the rate limit can refuse.
 */
static void add_security(json_t *paths, bool bearer)
{
    size_t n;
    const gateway_route *routes = gateway_routes(&n);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_object_get(paths, routes[i].path);
        const char *method;
        json_t *op;
        if (!routes[i].scope || !item)
            continue;
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "parameters") == 0)
                continue;
            if (bearer) {
                json_object_set_new(op, "security",
                                    json_pack("[{s:[s]}]", "bearer", routes[i].scope));
                add_problems(op, auth_problems, N(auth_problems), auth_problem_headers);
            } else { /* the last of auth_problems: 429 */
                add_problems(op, &auth_problems[N(auth_problems) - 1], 1, auth_problem_headers);
            }
        }
    }
}

/* Every GET also answers HEAD: the same status and headers, without the body. */
static void add_heads(json_t *paths)
{
    const char *path, *code;
    json_t *item, *r;
    json_object_foreach(paths, path, item)
    {
        json_t *get = json_object_get(item, "get");
        if (!get)
            continue;
        json_t *head = json_deep_copy(get);
        const char *id = json_string_value(json_object_get(get, "operationId"));
        json_object_set_new(head, "operationId", json_sprintf("head%s", id + strlen("get")));
        json_object_set_new(head, "description", json_string("As GET, without the body."));
        json_object_foreach(json_object_get(head, "responses"), code, r)
        {
            json_object_del(r, "content");
        }
        json_object_set_new(item, "head", head);
    }
}

/*
 * What the HTTP edge (common/http/httpconn.c) answers before any route runs, on every operation;
 * each closes the connection. The last applies only to requests with a body.
 */
static const problem_use edge_problems[] = {
    {PROBLEM_BAD_REQUEST,
     "the request is not HTTP/1.1 as RFC 9112 has it: a malformed request line or header "
     "field, an HTTP/1.1 request without exactly one Host, a chunk size that is not a "
     "hexadecimal number, or both Content-Length and Transfer-Encoding. Answered by the HTTP "
     "edge, which closes the connection."},
    {PROBLEM_REQUEST_TIMEOUT,
     "the request head did not arrive within http.header_timeout_s of its first byte, or its "
     "body within http.body_timeout_s of the head. The connection is closed."},
    {PROBLEM_HEADERS_TOO_LARGE,
     "the request line and header fields take more than 16 KiB. The connection is closed."},
    {PROBLEM_NOT_IMPLEMENTED,
     "a method the gateway does not know, CONNECT (the gateway is no proxy), or a transfer "
     "coding other than chunked. The connection is closed."},
    {PROBLEM_EXPECTATION_FAILED, "an Expect other than 100-continue. The connection is closed."},
};

/*
 * Adds the edge's answers to op: a status op already answers gets the edge's type in its enum
 * and a line in its description, another status gets a response of its own.
 */
static void add_edge_problems(json_t *op, bool body)
{
    json_t *responses = json_object_get(op, "responses");
    size_t n = N(edge_problems) - (body ? 0 : 1);
    for (size_t i = 0; i < n; i++) {
        char code[8];
        snprintf(code, sizeof(code), "%d", problem_status(edge_problems[i].kind));
        json_t *have = json_object_get(responses, code);
        json_t *media =
            json_object_get(json_object_get(have, "content"), "application/problem+json");
        if (!media) {
            add_problems(op, &edge_problems[i], 1, NULL);
            continue;
        }
        json_t *p = problem_new(edge_problems[i].kind, NULL, NULL);
        json_t *types = json_object_get(
            json_object_get(
                json_object_get(
                    json_array_get(json_object_get(json_object_get(media, "schema"), "allOf"), 1),
                    "properties"),
                "type"),
            "enum");
        json_array_append(types, json_object_get(p, "type"));
        char *desc = xasprintf(
            "%s\n- `%s` (%s): %s", json_string_value(json_object_get(have, "description")),
            json_string_value(json_object_get(p, "type")),
            json_string_value(json_object_get(p, "title")), edge_problems[i].when);
        json_object_set_new(have, "description", json_string(desc));
        free(desc);
        json_decref(p);
    }
}

/* Orders an object's members by name, in place (the status codes of a responses object). */
static void sort_members(json_t *obj)
{
    size_t n = json_object_size(obj), k = 0;
    const char **keys = xcalloc(n ? n : 1, sizeof(*keys));
    const char *key;
    json_t *v, *sorted = json_object();
    json_object_foreach(obj, key, v)
    {
        keys[k++] = key;
    }
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of members */
        for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++)
        json_object_set(sorted, keys[i], json_object_get(obj, keys[i]));
    free(keys);
    json_object_clear(obj);
    json_object_update(obj, sorted);
    json_decref(sorted);
}

static json_t *paths(const domain_registry *reg, bool bearer)
{
    json_t *p = json_object();
    json_object_set_new(
        p, "/healthz",
        json_pack("{s:o}", "get",
                  get_plain("getHealthz", "Liveness", "200 while the process runs.",
                            "text/plain; charset=utf-8",
                            json_pack("{s:s, s:s}", "type", "string", "const", "ok\n"))));
    json_object_set_new(p, "/readyz", json_pack("{s:o}", "get", get_readyz()));
    json_object_set_new(
        p, "/metrics",
        json_pack("{s:o}", "get",
                  get_plain("getMetrics", "Prometheus metrics",
                            "Counters, gauges and histograms in the Prometheus text format.",
                            "text/plain; version=0.0.4", openapi_schemas_string(NULL))));
    json_object_set_new(
        p, "/openapi.json",
        json_pack("{s:o}", "get",
                  get_plain("getOpenapi", "This document",
                            "The OpenAPI document, generated at start-up from the domain files.",
                            "application/json", json_pack("{s:s}", "type", "object"))));
    json_object_set_new(p, "/v1/commands", json_pack("{s:o}", "post", post_command()));
    json_object_set_new(
        p, "/v1/commands/{id}",
        json_pack("{s:[o], s:o}", "parameters",
                  param("path", "id", true, "The command id (the Location of a 202).",
                        openapi_schemas_string("uuid")),
                  "get", get_command()));
    json_object_set_new(p, "/v1/aggregates/{type}",
                        json_pack("{s:[o], s:o}", "parameters",
                                  param("path", "type", true, "The aggregate type.",
                                        json_pack("{s:s, s:o}", "type", "string", "enum",
                                                  openapi_schemas_aggregate_names(reg))),
                                  "get", list_aggregates(reg)));
    json_object_set_new(
        p, "/v1/aggregates/{type}/{id}",
        json_pack("{s:[o, o], s:o}", "parameters",
                  param("path", "type", true, "The aggregate type.",
                        json_pack("{s:s, s:o}", "type", "string", "enum",
                                  openapi_schemas_aggregate_names(reg))),
                  param("path", "id", true, "The aggregate id.", openapi_schemas_string(NULL)),
                  "get", get_aggregate()));
    add_security(p, bearer);
    const char *path, *method;
    json_t *item, *op;
    json_object_foreach(p, path, item)
    {
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "parameters") != 0)
                add_edge_problems(op, strcmp(method, "post") == 0);
        }
    }
    add_heads(p);
    json_object_foreach(p, path, item)
    {
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "parameters") != 0)
                sort_members(json_object_get(op, "responses"));
        }
    }
    return p;
}

json_t *openapi_build(const domain_registry *reg, bool bearer)
{
    json_t *components = json_pack("{s:o}", "schemas", openapi_schemas_build(reg));
    if (bearer)
        json_object_set_new(
            components, "securitySchemes",
            json_pack("{s:{s:s, s:s, s:s, s:s}}", "bearer", "type", "http", "scheme", "bearer",
                      "bearerFormat", "JWT", "description",
                      "A JWT signed with the gateway's auth.algorithm; its auth.tenant_claim names "
                      "the tenant whose data the request sees. Its scopes (the scope or scp "
                      "claim) are checked when auth.scopes is true."));
    return json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}], s:o, s:o}", "openapi",
        "3.1.0", "info", "title", "command-gateway", "version", "1.0.0", "description",
        "Accepts commands, publishes them to Kafka and answers with their result; serves reads "
        "from PostgreSQL. Generated at start-up from the domain files: each command's payload "
        "schema and each aggregate's state schema is the one in its file. Failures are RFC 9457 "
        "application/problem+json. HEAD is answered wherever GET is. Another method on a path "
        "below answers 405 with Allow; a path not below answers 404 (/problems/not-found). A "
        "header block over 16 KiB is refused with 400 by the HTTP layer.",
        "tags", "name", "commands", "description", "The write side.", "name", "reads",
        "description", "Command status and aggregate state.", "name", "operations", "description",
        "Health, readiness, metrics and this document.", "paths", paths(reg, bearer), "components",
        components);
}

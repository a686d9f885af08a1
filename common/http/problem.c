/* problem.c: the single table from failure kind to HTTP status, title and type URI. */
#include "http/problem.h"

static const struct {
    int status;
    const char *name;
    const char *title;
} kinds[] = {
    [PROBLEM_MALFORMED_JSON] = {400, "malformed-json", "Request body is not valid JSON"},
    [PROBLEM_INVALID_REQUEST] = {400, "invalid-request", "Request is invalid"},
    [PROBLEM_UNKNOWN_COMMAND] = {400, "unknown-command", "Unknown command type"},
    [PROBLEM_INVALID_QUERY] = {400, "invalid-query", "Query parameter is invalid"},
    [PROBLEM_INVALID_PAYLOAD] = {400, "invalid-payload", "Payload fails the command's schema"},
    [PROBLEM_NOT_FOUND] = {404, "not-found", "Not found"},
    [PROBLEM_METHOD_NOT_ALLOWED] = {405, "method-not-allowed", "Method not allowed"},
    [PROBLEM_ALREADY_EXISTS] = {409, "already-exists", "Aggregate already exists"},
    [PROBLEM_IN_FLIGHT] = {409, "in-flight",
                           "A request with this Idempotency-Key is still being processed"},
    [PROBLEM_VERSION_MISMATCH] = {412, "version-mismatch", "Aggregate is at another version"},
    [PROBLEM_TOO_LARGE] = {413, "too-large", "Request body too large"},
    [PROBLEM_KEY_REUSED] = {422, "idempotency-key-reused",
                            "Idempotency-Key already used for another request"},
    [PROBLEM_AGGREGATE_NOT_FOUND] = {422, "aggregate-not-found", "Aggregate does not exist"},
    [PROBLEM_PRECONDITION] = {422, "precondition-failed", "Command precondition not met"},
    [PROBLEM_INVARIANT] = {422, "invariant-violated", "Command would break an invariant"},
    [PROBLEM_INTERNAL] = {500, "internal", "Internal error"},
    [PROBLEM_UNAVAILABLE] = {503, "unavailable", "Service temporarily unavailable"},
    [PROBLEM_UNAUTHORIZED] = {401, "unauthorized", "A valid bearer token is required"},
    [PROBLEM_FORBIDDEN] = {403, "forbidden", "The token does not allow this"},
    [PROBLEM_RATE_LIMITED] = {429, "rate-limited", "Too many requests"},
    [PROBLEM_NUMBER_OUT_OF_RANGE] = {400, "number-out-of-range",
                                     "A number in the body is out of range"},
    [PROBLEM_BAD_REQUEST] = {400, "bad-request", "Request is not valid HTTP"},
    [PROBLEM_REQUEST_TIMEOUT] = {408, "request-timeout", "Request not received in time"},
    [PROBLEM_EXPECTATION_FAILED] = {417, "expectation-failed", "Expectation not supported"},
    [PROBLEM_HEADERS_TOO_LARGE] = {431, "headers-too-large", "Request header fields too large"},
    [PROBLEM_NOT_IMPLEMENTED] = {501, "not-implemented", "Not implemented"},
};

int problem_status(problem_kind kind)
{
    return kinds[kind].status;
}

const char *problem_name(problem_kind kind)
{
    return kinds[kind].name;
}

json_t *problem_new(problem_kind kind, const char *detail, json_t *errors)
{
    json_t *p = json_object();
    json_object_set_new(p, "type", json_sprintf("/problems/%s", kinds[kind].name));
    json_object_set_new(p, "title", json_string(kinds[kind].title));
    json_object_set_new(p, "status", json_integer(kinds[kind].status));
    if (detail)
        json_object_set_new(p, "detail", json_string(detail));
    if (errors)
        json_object_set_new(p, "errors", errors);
    return p;
}

problem_kind problem_from_domain(domain_outcome o)
{
    switch (o) {
    case DOMAIN_INVALID_PAYLOAD:
        return PROBLEM_INVALID_PAYLOAD;
    case DOMAIN_NOT_FOUND:
        return PROBLEM_AGGREGATE_NOT_FOUND;
    case DOMAIN_ALREADY_EXISTS:
        return PROBLEM_ALREADY_EXISTS;
    case DOMAIN_PRECONDITION:
        return PROBLEM_PRECONDITION;
    case DOMAIN_INVARIANT:
        return PROBLEM_INVARIANT;
    case DOMAIN_OK:
        break;
    }
    return PROBLEM_INTERNAL;
}

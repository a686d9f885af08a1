/*
 * problem.h: every failure the API can report, mapped in this one place to an HTTP status and an
 * RFC 9457 problem+json body. The processor stores the same bodies for rejected commands.
 */
#ifndef CQRS_PROBLEM_H
#define CQRS_PROBLEM_H

#include "domain/domain.h"

#include <jansson.h>

typedef enum {
    PROBLEM_MALFORMED_JSON,      /* 400: the body is not JSON */
    PROBLEM_INVALID_REQUEST,     /* 400: the envelope is wrong (missing type, bad id, ...) */
    PROBLEM_UNKNOWN_COMMAND,     /* 400: no such command type */
    PROBLEM_INVALID_QUERY,       /* 400: a query parameter is unknown or its value is wrong */
    PROBLEM_INVALID_PAYLOAD,     /* 400: the payload fails the command's schema */
    PROBLEM_NOT_FOUND,           /* 404: no such resource */
    PROBLEM_METHOD_NOT_ALLOWED,  /* 405 */
    PROBLEM_ALREADY_EXISTS,      /* 409: the aggregate exists and the command creates it */
    PROBLEM_IN_FLIGHT,           /* 409: the first request with this Idempotency-Key is pending */
    PROBLEM_VERSION_MISMATCH,    /* 412: expected_version / If-Match differs */
    PROBLEM_TOO_LARGE,           /* 413 */
    PROBLEM_KEY_REUSED,          /* 422: the Idempotency-Key was used for another request */
    PROBLEM_AGGREGATE_NOT_FOUND, /* 422: the command needs an aggregate that does not exist */
    PROBLEM_PRECONDITION,        /* 422: a rule's precondition does not hold */
    PROBLEM_INVARIANT,           /* 422: the resulting state would break an invariant */
    PROBLEM_INTERNAL,            /* 500 */
    PROBLEM_UNAVAILABLE,         /* 503: Kafka or PostgreSQL cannot take it now */
    PROBLEM_UNAUTHORIZED,        /* 401: no valid bearer token */
    PROBLEM_FORBIDDEN,           /* 403: the token lacks the route's scope */
    PROBLEM_RATE_LIMITED,        /* 429: the tenant's request rate is above its limit */
    PROBLEM_NUMBER_OUT_OF_RANGE, /* 400: JSON, but a number beyond 64-bit integers or doubles */
    PROBLEM_BAD_REQUEST,         /* 400: the request does not parse as HTTP/1.1 (RFC 9112) */
    PROBLEM_REQUEST_TIMEOUT,     /* 408: the head or the body did not arrive within its deadline */
    PROBLEM_EXPECTATION_FAILED,  /* 417: an Expect other than 100-continue */
    PROBLEM_HEADERS_TOO_LARGE,   /* 431: the request head is larger than the limit */
    PROBLEM_NOT_IMPLEMENTED,     /* 501: a method or transfer coding the server does not know */
} problem_kind;

/* The HTTP status of a kind. */
int problem_status(problem_kind kind);
/* The stable short name used in the type URI, e.g. "invariant-violated". */
const char *problem_name(problem_kind kind);
/*
 * Builds {"type":"/problems/<name>","title":..,"status":..,"detail":..} and, when errors is
 * given, "errors": errors (stolen). Caller owns the result.
 */
json_t *problem_new(problem_kind kind, const char *detail, json_t *errors);
/* The kind for a domain outcome other than DOMAIN_OK. */
problem_kind problem_from_domain(domain_outcome o);

#endif

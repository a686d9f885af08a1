/*
 * intake.h: turns one POST /v1/commands request into a command ready to publish, or into a
 * problem. Pure: no I/O, so every rule of the HTTP contract is unit-tested here.
 */
#ifndef CQRS_INTAKE_H
#define CQRS_INTAKE_H

#include "domain/domain.h"
#include "domain/envelope.h"
#include "core/ids.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The wire contract's limits (envelope.h), which the processor checks again. */
#define INTAKE_MAX_KEY_LEN       ENVELOPE_MAX_KEY_LEN /* Idempotency-Key */
#define INTAKE_MAX_AGGREGATE_LEN ENVELOPE_MAX_AGGREGATE_ID_LEN

/* The request headers intake looks at; any may be NULL. */
typedef struct intake_headers {
    const char *idempotency_key;
    const char *if_match;
    const char *prefer;
    const char *traceparent;
    const char *tracestate;
} intake_headers;

/* A validated command. Strings are owned; free with intake_clear(). */
typedef struct intake {
    char command_id[IDS_UUID_LEN];
    char *idempotency_key;     /* the client's, or one assigned here */
    bool key_assigned;         /* true when the gateway made the key up */
    const domain_command *cmd; /* borrowed from the registry */
    char *aggregate_id;
    long long expected_version; /* -1 when the client set none; ENVELOPE_VERSION_EXISTS */
    json_t *payload;            /* owned reference */
    bool respond_async;         /* Prefer: respond-async */
    long long wait_ms;          /* Prefer: wait=N in ms, -1 when absent */
    char *traceparent;          /* the client's W3C traceparent, validated, or NULL */
    char *tracestate;           /* its tracestate, validated, or NULL */
} intake;

/*
 * Parses and validates body + headers against the registry. On success fills out (which must be
 * zeroed) and returns NULL; otherwise returns a problem+json body (caller owns it) and leaves out
 * cleared.
 */
json_t *intake_parse(intake *out, const domain_registry *reg, const char *body, size_t len,
                     const intake_headers *h);

/*
 * The request's fingerprint for Idempotency-Key checks: a name-based (SHA-1) UUID of the method,
 * the path and the canonical command (type, aggregate id, payload and expected version with
 * sorted keys). Equal requests give equal fingerprints however their JSON was spaced or ordered.
 */
void intake_fingerprint(const intake *in, char out[IDS_UUID_LEN]);

/* Frees what intake_parse() stored. */
void intake_clear(intake *in);

/*
 * Parses an Idempotency-Key header value: an RFC 8941 sf-string ("...") or a bare token of
 * visible ASCII, 1..INTAKE_MAX_KEY_LEN characters. Returns a new string or NULL when invalid.
 */
char *intake_parse_key(const char *value);

/*
 * The key as an RFC 8941 sf-string, for the Idempotency-Key response header: in quotes, with "
 * and \ escaped. key is 1..INTAKE_MAX_KEY_LEN of printable ASCII (intake_parse_key()'s
 * output). Caller frees.
 */
char *intake_key_sf_string(const char *key);

/* What an If-Match field value asks of the aggregate, whose ETag is its version: "<n>". */
typedef enum {
    INTAKE_IF_MATCH_INVALID, /* not "*" or a list of entity-tags */
    INTAKE_IF_MATCH_EXISTS,  /* "*": the aggregate must exist */
    INTAKE_IF_MATCH_VERSION, /* its strong entity-tags name one version */
    INTAKE_IF_MATCH_SEVERAL, /* they name several versions */
    INTAKE_IF_MATCH_NEVER,   /* none of its entity-tags can match (weak ones, or not a version) */
} intake_if_match;

/*
 * Parses If-Match (RFC 9110 §13.1.1): "*" or a list of entity-tags compared strongly with the
 * aggregate's ETag, so a weak tag or one that is not a version written as the gateway writes it
 * ("3", not "03") never matches. *version gets the version named (the smallest of several).
 */
intake_if_match intake_parse_if_match(const char *value, long long *version);

/* Parses Prefer (RFC 7240): respond-async and wait=N (seconds). */
void intake_parse_prefer(const char *value, bool *respond_async, long long *wait_ms);

#endif

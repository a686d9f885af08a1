/*
 * envelope.h: the wire contract. Commands, replies and events travel as CloudEvents 1.0 in
 * Kafka binary content mode: attributes in ce_* headers, the JSON data as the message value.
 */
#ifndef CQRS_ENVELOPE_H
#define CQRS_ENVELOPE_H

#include "core/header.h"

#include <stdbool.h>
#include <stddef.h>

#define ENVELOPE_MAX_HEADERS 16

/* CloudEvents attributes plus our extensions; every string is owned by the envelope. */
typedef struct envelope {
    char *id;                   /* ce_id: the command id for commands and replies */
    char *source;               /* ce_source: "/command-gateway", "/state-processor" */
    char *type;                 /* ce_type: "account.deposit", "account.deposited", ... */
    char *subject;              /* ce_subject: the aggregate id */
    char *time;                 /* ce_time: RFC 3339 */
    char *tenant;               /* ce_tenant */
    char *idempotency_key;      /* ce_idempotencykey */
    char *traceparent;          /* ce_traceparent (W3C trace context) */
    char *tracestate;           /* ce_tracestate */
    char *request_hash;         /* ce_requesthash: the gateway's fingerprint of the request (a
                                   UUID), stored with the command's key */
    long long expected_version; /* ce_expectedversion; -1 when absent, ENVELOPE_VERSION_EXISTS */
    int reply_partition;        /* ce_replypartition; -1 when absent */
} envelope;

/*
 * Limits on the identities a command carries, defined once: the gateway answers 400 to a request
 * beyond them, and the processor dead-letters a message beyond them (another producer may have
 * written it). Each is far below PostgreSQL's btree index-row limit (about 2,700 bytes), even
 * combined as in the unique keys (tenant, aggregate type, aggregate id) and (tenant, key).
 */
#define ENVELOPE_MAX_TENANT_LEN       64  /* 1..64 of [A-Za-z0-9._-] */
#define ENVELOPE_MAX_KEY_LEN          255 /* Idempotency-Key: printable ASCII, space included */
#define ENVELOPE_MAX_AGGREGATE_ID_LEN 255 /* aggregate id: envelope_aggregate_id_valid() */
#define ENVELOPE_MAX_TYPE_LEN         128 /* command type: visible ASCII */

/* Largest version a command may expect: exact in a JSON number (2^53). */
#define ENVELOPE_MAX_VERSION (1LL << 53)
/* expected_version of a command that expects its aggregate to exist, at any version (If-Match:
 *); ce_expectedversion "*" on the wire. */
#define ENVELOPE_VERSION_EXISTS (-2LL)

/* Header names, shared with the tests and the operator tools. */
#define ENVELOPE_CONTENT_TYPE "application/json"

/*
 * Dead letters. A command the processor cannot apply goes to the dead-letter topic as it came
 * (headers and value unchanged) with three headers added: the reason, one of the names below; a
 * detail in words; and the source, "<partition>/<offset>" where it was consumed. The operator
 * tools select and redrive dead letters by these names: they are part of the wire contract. The
 * projector's reasons for an event it skips (projection_skipped) are a set of its own that shares
 * bad-envelope, rejected-by-postgresql and unencodable with this one.
 */
#define DLQ_HEADER_PREFIX "dlq_"
#define DLQ_HEADER_REASON "dlq_reason"
#define DLQ_HEADER_DETAIL "dlq_detail"
#define DLQ_HEADER_SOURCE "dlq_source"

#define DLQ_BAD_ENVELOPE      "bad-envelope"      /* ce_* headers missing, malformed or too long */
#define DLQ_UNKNOWN_COMMAND   "unknown-command"   /* ce_type names no command of any domain */
#define DLQ_MALFORMED_PAYLOAD "malformed-payload" /* the value is not a JSON object */
#define DLQ_INVALID_PAYLOAD   "invalid-payload"   /* the payload fails its schema */
#define DLQ_REJECTED_BY_PG    "rejected-by-postgresql" /* PostgreSQL refused its rows */
#define DLQ_UNENCODABLE       "unencodable"            /* its rows could not be encoded */

/* The reasons above, NULL-terminated, and the same list in words ("a, b, ..."). */
extern const char *const dlq_reasons[];
extern const char dlq_reasons_text[];
/* True when s is one of dlq_reasons. */
bool dlq_reason_known(const char *s);

/* Frees the strings and clears the struct (safe on a zeroed envelope). */
void envelope_clear(envelope *e);

/*
 * Fills out[] with the headers for e (pointers borrow from e and from an internal numeric buffer
 * in scratch, which must outlive out). Returns the number of headers written.
 */
size_t envelope_to_headers(const envelope *e, header out[ENVELOPE_MAX_HEADERS], char scratch[64]);

/*
 * Parses headers into e (which must be zeroed). Requires ce_specversion "1.0", ce_id, ce_source
 * and ce_type; checks numbers. Returns 0, or -1 with err naming the header at fault; a
 * structured-mode CloudEvent (content-type application/cloudevents+json, no ce_* headers) is
 * named as such.
 */
int envelope_from_headers(envelope *e, const header *h, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* True for a tenant name: 1..ENVELOPE_MAX_TENANT_LEN of [A-Za-z0-9._-]. */
bool envelope_tenant_valid(const char *s, size_t len);
/* True for an idempotency key: 1..ENVELOPE_MAX_KEY_LEN bytes of printable ASCII (0x20..0x7e). */
bool envelope_key_valid(const char *s, size_t len);
/*
 * True for an aggregate id: 1..ENVELOPE_MAX_AGGREGATE_ID_LEN bytes of UTF-8 text as a CloudEvents
 * String allows it (no control character U+0000..U+001F or U+007F..U+009F, no surrogate, no
 * noncharacter), and neither "." nor "..", which URL clients remove from a path. Any other
 * character, "/" included, is allowed: in a URL it is percent-encoded.
 */
bool envelope_aggregate_id_valid(const char *s, size_t len);
/* The rule above in words, for error messages: its %d is ENVELOPE_MAX_AGGREGATE_ID_LEN. */
#define ENVELOPE_AGGREGATE_ID_RULE                                                                 \
    "1..%d bytes of UTF-8 without control characters or noncharacters, and not \".\" or \"..\""

/*
 * Checks the identities of a parsed command against the limits above: ce_subject (required),
 * ce_type, and ce_tenant, ce_idempotencykey and ce_requesthash (a UUID) when present and not
 * empty. Returns 0, or -1 with err naming the header and the rule it breaks (never the bytes
 * themselves, which may not be text).
 */
int envelope_check_command(const envelope *e, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The stable id of a domain event: "<tenant>/<aggregate type>/<aggregate id>/<version>". */
char *envelope_event_id(const char *tenant, const char *aggregate_type, const char *aggregate_id,
                        long long version);

#endif

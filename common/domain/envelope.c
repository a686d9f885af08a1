/* envelope.c: CloudEvents binary-mode headers to and from struct envelope. */
#include "domain/envelope.h"

#include "core/ids.h"
#include "core/utf8.h"
#include "core/xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* String attributes in header order; offsets into struct envelope. */
static const struct {
    const char *name;
    size_t offset;
    bool required;
} string_attrs[] = {
    {"ce_id", offsetof(envelope, id), true},
    {"ce_source", offsetof(envelope, source), true},
    {"ce_type", offsetof(envelope, type), true},
    {"ce_subject", offsetof(envelope, subject), false},
    {"ce_time", offsetof(envelope, time), false},
    {"ce_tenant", offsetof(envelope, tenant), false},
    {"ce_idempotencykey", offsetof(envelope, idempotency_key), false},
    {"ce_traceparent", offsetof(envelope, traceparent), false},
    {"ce_tracestate", offsetof(envelope, tracestate), false},
    {"ce_requesthash", offsetof(envelope, request_hash), false},
};
#define NATTRS (sizeof(string_attrs) / sizeof(string_attrs[0]))

static char **attr(envelope *e, size_t i)
{
    return (char **)(void *)((char *)e + string_attrs[i].offset);
}

static const char *cattr(const envelope *e, size_t i)
{
    return *(char *const *)(const void *)((const char *)e + string_attrs[i].offset);
}

void envelope_clear(envelope *e)
{
    for (size_t i = 0; i < NATTRS; i++)
        free(*attr(e, i));
    memset(e, 0, sizeof(*e));
    e->expected_version = -1;
    e->reply_partition = -1;
}

static void put(header *out, size_t *n, const char *name, const char *value)
{
    out[*n].name = name;
    out[*n].value = value;
    out[*n].len = strlen(value);
    (*n)++;
}

size_t envelope_to_headers(const envelope *e, header out[ENVELOPE_MAX_HEADERS], char scratch[64])
{
    size_t n = 0;
    put(out, &n, "ce_specversion", "1.0");
    put(out, &n, "content-type", ENVELOPE_CONTENT_TYPE);
    for (size_t i = 0; i < NATTRS; i++) {
        if (cattr(e, i))
            put(out, &n, string_attrs[i].name, cattr(e, i));
    }
    /* Two numbers share scratch: "<version>\0<partition>\0". */
    if (e->expected_version >= 0) {
        snprintf(scratch, 32, "%lld", e->expected_version);
        put(out, &n, "ce_expectedversion", scratch);
    } else if (e->expected_version == ENVELOPE_VERSION_EXISTS) {
        put(out, &n, "ce_expectedversion", "*");
    }
    if (e->reply_partition >= 0) {
        snprintf(scratch + 32, 32, "%d", e->reply_partition);
        put(out, &n, "ce_replypartition", scratch + 32);
    }
    return n;
}

static bool hdr_is(const header *h, const char *name)
{
    return strcmp(h->name, name) == 0;
}

static int parse_number(const header *h, long long max, long long *out, char *err, size_t errlen)
{
    char buf[32];
    if (h->len == 0 || h->len >= sizeof(buf)) {
        snprintf(err, errlen, "header %s: not a number", h->name);
        return -1;
    }
    memcpy(buf, h->value, h->len);
    buf[h->len] = '\0';
    /* Digits only: strtoll alone would accept " 5", "+5" and stop at an embedded NUL. */
    if (strspn(buf, "0123456789") != h->len) {
        snprintf(err, errlen, "header %s: '%s' is not a non-negative decimal number", h->name, buf);
        return -1;
    }
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || v < 0 || v > max) {
        snprintf(err, errlen, "header %s: '%s' is not a number in [0, %lld]", h->name, buf, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* True when the message's content-type says structured mode: the whole event in the value. */
static bool structured_mode(const header *h)
{
    static const char prefix[] = "application/cloudevents";
    return h->len >= sizeof(prefix) - 1 && strncasecmp(h->value, prefix, sizeof(prefix) - 1) == 0;
}

int envelope_from_headers(envelope *e, const header *h, size_t n, char *err, size_t errlen)
{
    envelope_clear(e);
    bool have_version = false, structured = false;
    for (size_t i = 0; i < n; i++) {
        if (!h[i].value)
            continue;
        if (hdr_is(&h[i], "content-type")) {
            structured = structured_mode(&h[i]);
        } else if (hdr_is(&h[i], "ce_specversion")) {
            if (h[i].len != 3 || memcmp(h[i].value, "1.0", 3) != 0) {
                snprintf(err, errlen, "header ce_specversion: unsupported version '%.*s'",
                         (int)(h[i].len > 16 ? 16 : h[i].len), h[i].value);
                return -1;
            }
            have_version = true;
        } else if (hdr_is(&h[i], "ce_expectedversion")) {
            if (h[i].len == 1 && h[i].value[0] == '*')
                e->expected_version = ENVELOPE_VERSION_EXISTS;
            else if (parse_number(&h[i], ENVELOPE_MAX_VERSION, &e->expected_version, err, errlen))
                return -1;
        } else if (hdr_is(&h[i], "ce_replypartition")) {
            long long p;
            if (parse_number(&h[i], 1 << 20, &p, err, errlen))
                return -1;
            e->reply_partition = (int)p;
        } else {
            for (size_t a = 0; a < NATTRS; a++) {
                if (hdr_is(&h[i], string_attrs[a].name)) {
                    if (memchr(h[i].value, '\0', h[i].len)) {
                        snprintf(err, errlen, "header %s: contains NUL", h[i].name);
                        return -1;
                    }
                    free(*attr(e, a));
                    *attr(e, a) = xstrndup(h[i].value, h[i].len);
                    break;
                }
            }
        }
    }
    if (!have_version && structured) {
        snprintf(err, errlen,
                 "structured-mode CloudEvent (content-type application/cloudevents+json): this "
                 "topic takes binary mode only, the attributes in ce_* headers and the data as "
                 "the message value");
        return -1;
    }
    if (!have_version) {
        snprintf(err, errlen, "header ce_specversion: missing");
        return -1;
    }
    for (size_t a = 0; a < NATTRS; a++) {
        if (string_attrs[a].required && (!cattr(e, a) || !*cattr(e, a))) {
            snprintf(err, errlen, "header %s: missing", string_attrs[a].name);
            return -1;
        }
    }
    return 0;
}

char *envelope_event_id(const char *tenant, const char *aggregate_type, const char *aggregate_id,
                        long long version)
{
    return xasprintf("%s/%s/%s/%lld", tenant, aggregate_type, aggregate_id, version);
}

bool envelope_tenant_valid(const char *s, size_t len)
{
    if (len == 0 || len > ENVELOPE_MAX_TENANT_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!s[i] ||
            !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]))
            return false;
    }
    return true;
}

bool envelope_key_valid(const char *s, size_t len)
{
    if (len == 0 || len > ENVELOPE_MAX_KEY_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    }
    return true;
}

bool envelope_aggregate_id_valid(const char *s, size_t len)
{
    bool dots = (len == 1 || len == 2) && s[0] == '.' && s[len - 1] == '.';
    return len > 0 && len <= ENVELOPE_MAX_AGGREGATE_ID_LEN && !dots && utf8_valid(s, len, true);
}

/* Visible ASCII, 1..ENVELOPE_MAX_TYPE_LEN: the command types of the domain files are. */
static bool type_valid(const char *s, size_t len)
{
    if (len == 0 || len > ENVELOPE_MAX_TYPE_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] <= 0x20 || s[i] > 0x7e)
            return false;
    }
    return true;
}

int envelope_check_command(const envelope *e, char *err, size_t errlen)
{
    size_t len = e->subject ? strlen(e->subject) : 0;
    if (!envelope_aggregate_id_valid(e->subject ? e->subject : "", len)) {
        const char *s = e->subject ? e->subject : "";
        snprintf(err, errlen,
                 "header ce_subject: an aggregate id is " ENVELOPE_AGGREGATE_ID_RULE " (%s)",
                 ENVELOPE_MAX_AGGREGATE_ID_LEN,
                 len > ENVELOPE_MAX_AGGREGATE_ID_LEN ? "too long"
                 : len == 0                          ? "empty"
                 : !utf8_valid(s, len, false)        ? "not valid UTF-8"
                                                     : "a control character, a noncharacter, "
                                                       "\".\" or \"..\"");
        return -1;
    }
    if (!type_valid(e->type, strlen(e->type))) {
        snprintf(err, errlen, "header ce_type: a command type is 1..%d visible ASCII characters",
                 ENVELOPE_MAX_TYPE_LEN);
        return -1;
    }
    if (e->tenant && *e->tenant && !envelope_tenant_valid(e->tenant, strlen(e->tenant))) {
        snprintf(err, errlen, "header ce_tenant: a tenant is 1..%d of A-Z a-z 0-9 . _ - (%s)",
                 ENVELOPE_MAX_TENANT_LEN,
                 strlen(e->tenant) > ENVELOPE_MAX_TENANT_LEN ? "too long" : "other characters");
        return -1;
    }
    if (e->idempotency_key && *e->idempotency_key &&
        !envelope_key_valid(e->idempotency_key, strlen(e->idempotency_key))) {
        snprintf(err, errlen,
                 "header ce_idempotencykey: an idempotency key is 1..%d printable ASCII "
                 "characters (%s)",
                 ENVELOPE_MAX_KEY_LEN,
                 strlen(e->idempotency_key) > ENVELOPE_MAX_KEY_LEN ? "too long"
                                                                   : "other characters");
        return -1;
    }
    if (e->request_hash && *e->request_hash && !ids_is_uuid(e->request_hash)) {
        snprintf(err, errlen, "header ce_requesthash: a request's fingerprint is a UUID");
        return -1;
    }
    return 0;
}

const char *const dlq_reasons[] = {DLQ_BAD_ENVELOPE,
                                   DLQ_UNKNOWN_COMMAND,
                                   DLQ_MALFORMED_PAYLOAD,
                                   DLQ_INVALID_PAYLOAD,
                                   DLQ_REJECTED_BY_PG,
                                   DLQ_UNENCODABLE,
                                   NULL};
const char dlq_reasons_text[] =
    DLQ_BAD_ENVELOPE ", " DLQ_UNKNOWN_COMMAND ", " DLQ_MALFORMED_PAYLOAD ", " DLQ_INVALID_PAYLOAD
                     ", " DLQ_REJECTED_BY_PG ", " DLQ_UNENCODABLE;

bool dlq_reason_known(const char *s)
{
    for (size_t i = 0; dlq_reasons[i]; i++) {
        if (strcmp(dlq_reasons[i], s) == 0)
            return true;
    }
    return false;
}

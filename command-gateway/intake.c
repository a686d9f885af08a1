/* intake.c: validation of write requests, before anything is sent to Kafka. */
#include "intake.h"

#include "domain/envelope.h"
#include "http/etag.h"
#include "http/problem.h"
#include "core/jsontext.h"
#include "core/trace.h"
#include "core/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * The name hashed is the request line and the canonical request: the object {type, aggregate_id,
 * payload, expected_version} as json_dumps(JSON_COMPACT | JSON_SORT_KEYS) writes it, members in
 * key order. Written here as text, without building that object (7% of the gateway's CPU under
 * load was this function): the identities have no control characters
 * (envelope_aggregate_id_valid(), visible ASCII types), so jsontext_str() escapes them as jansson
 * does. Fixed for good: a claim's fingerprint must not change between releases (test_intake
 * pins them).
 */
void intake_fingerprint(const intake *in, char out[IDS_UUID_LEN])
{
    jsontext t = {0};
    JSONTEXT_LIT(&t, "POST /v1/commands\n{\"aggregate_id\":");
    jsontext_str(&t, in->aggregate_id);
    JSONTEXT_LIT(&t, ",\"expected_version\":");
    jsontext_int(&t, in->expected_version);
    JSONTEXT_LIT(&t, ",\"payload\":");
    jsontext_json_sorted(&t, in->payload);
    JSONTEXT_LIT(&t, ",\"type\":");
    jsontext_str(&t, domain_command_type(in->cmd));
    JSONTEXT_LIT(&t, "}");
    size_t n;
    char *name = jsontext_finish(&t, &n);
    if (name)
        ids_name_uuid(name, n, out);
    else /* not reached for a parsed request */
        ids_name_uuid("POST /v1/commands\n", 18, out);
    free(name);
}

void intake_clear(intake *in)
{
    free(in->idempotency_key);
    free(in->aggregate_id);
    free(in->traceparent);
    free(in->tracestate);
    json_decref(in->payload);
    memset(in, 0, sizeof(*in));
}

char *intake_parse_key(const char *value)
{
    size_t len = strlen(value);
    const char *s = value;
    /* sf-string: "..." with \" and \\ escapes; a bare token otherwise. */
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
        char *out = xmalloc(len);
        size_t n = 0;
        for (size_t i = 1; i < len - 1; i++) {
            char c = value[i];
            if (c == '\\') {
                if (i + 1 >= len - 1 || (value[i + 1] != '"' && value[i + 1] != '\\'))
                    goto bad;
                c = value[++i];
            } else if (c == '"' || c < 0x20 || c > 0x7e) {
                goto bad;
            }
            out[n++] = c;
        }
        out[n] = '\0';
        if (n == 0 || n > INTAKE_MAX_KEY_LEN)
            goto bad;
        return out;
    bad:
        free(out);
        return NULL;
    }
    if (len == 0 || len > INTAKE_MAX_KEY_LEN)
        return NULL;
    for (; *s; s++) {
        if (*s <= 0x20 || *s > 0x7e || *s == '"' || *s == ',' || *s == ';')
            return NULL;
    }
    return xstrdup(value);
}

char *intake_key_sf_string(const char *key)
{
    char *out = xmalloc(2 * strlen(key) + 3), *o = out;
    *o++ = '"';
    for (const char *s = key; *s; s++) {
        if (*s == '"' || *s == '\\')
            *o++ = '\\';
        *o++ = *s;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

/* The version an opaque-tag names as the gateway writes it ("0", "7", never "07"), or -1. */
static long long tag_version(const etag_item *t)
{
    if (t->weak || t->len == 0 || t->len > 16 || (t->len > 1 && t->tag[0] == '0'))
        return -1;
    long long v = 0;
    for (size_t i = 0; i < t->len; i++) {
        if (!isdigit((unsigned char)t->tag[i]))
            return -1;
        v = v * 10 + (t->tag[i] - '0');
    }
    return v <= ENVELOPE_MAX_VERSION ? v : -1;
}

intake_if_match intake_parse_if_match(const char *value, long long *version)
{
    etag_list l;
    if (!etag_list_parse(value, &l))
        return INTAKE_IF_MATCH_INVALID;
    if (l.any)
        return INTAKE_IF_MATCH_EXISTS;
    size_t named = 0;
    for (size_t i = 0; i < l.n; i++) {
        long long v = tag_version(&l.tags[i]);
        if (v < 0 || (named > 0 && v == *version))
            continue;
        if (named == 0 || v < *version)
            *version = v;
        named++;
    }
    return named == 0   ? INTAKE_IF_MATCH_NEVER
           : named == 1 ? INTAKE_IF_MATCH_VERSION
                        : INTAKE_IF_MATCH_SEVERAL;
}

void intake_parse_prefer(const char *value, bool *respond_async, long long *wait_ms)
{
    *respond_async = false;
    *wait_ms = -1;
    if (!value)
        return;
    /* Preferences are comma-separated; parameters after ';' are ignored, and only the first
       instance of a preference counts (RFC 7240 §2). */
    char *copy = xstrdup(value), *save = NULL;
    bool seen_wait = false;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char *semi = strchr(tok, ';');
        if (semi)
            *semi = '\0';
        char *end = tok + strlen(tok);
        while (end > tok && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (strcasecmp(tok, "respond-async") == 0) {
            *respond_async = true;
        } else if (strncasecmp(tok, "wait=", 5) == 0 && !seen_wait) {
            seen_wait = true;
            char *e;
            errno = 0;
            long long s = strtoll(tok + 5, &e, 10);
            if (!errno && e != tok + 5 && *e == '\0' && s >= 0 && s < 86400)
                *wait_ms = s * 1000;
        }
    }
    free(copy);
}

static json_t *fail(intake *out, problem_kind kind, const char *detail, json_t *errors)
{
    intake_clear(out);
    return problem_new(kind, detail, errors);
}

/* Folds If-Match into out->expected_version; a problem when it cannot be. */
static json_t *if_match(intake *out, const char *value)
{
    long long v = -1;
    switch (intake_parse_if_match(value, &v)) {
    case INTAKE_IF_MATCH_INVALID:
        return fail(out, PROBLEM_INVALID_REQUEST,
                    "If-Match must be * or a list of entity-tags such as \"3\"", NULL);
    case INTAKE_IF_MATCH_NEVER: /* the condition is false whatever the aggregate's version */
        return fail(out, PROBLEM_VERSION_MISMATCH,
                    "no entity-tag of If-Match can match: an aggregate's ETag is a strong "
                    "version such as \"3\"",
                    NULL);
    case INTAKE_IF_MATCH_SEVERAL:
        return fail(out, PROBLEM_INVALID_REQUEST,
                    "If-Match names several versions; a command expects one (or *)", NULL);
    case INTAKE_IF_MATCH_EXISTS:
        /* expected_version 0 expects no aggregate; any other implies one. */
        if (out->expected_version == 0)
            return fail(out, PROBLEM_INVALID_REQUEST, "If-Match and expected_version disagree",
                        NULL);
        if (out->expected_version < 0)
            out->expected_version = ENVELOPE_VERSION_EXISTS;
        return NULL;
    case INTAKE_IF_MATCH_VERSION:
        break;
    }
    if (out->expected_version >= 0 && out->expected_version != v)
        return fail(out, PROBLEM_INVALID_REQUEST, "If-Match and expected_version disagree", NULL);
    out->expected_version = v;
    return NULL;
}

json_t *intake_parse(intake *out, const domain_registry *reg, const char *body, size_t len,
                     const intake_headers *h)
{
    memset(out, 0, sizeof(*out));
    out->expected_version = -1;
    /* The body is parsed as JSON whatever Content-Type says: this endpoint takes nothing else,
       and rejecting curl's default form type would only get in the way. */
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        char detail[256];
        snprintf(detail, sizeof(detail), "line %d, column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        /* Valid JSON all the same: an integer beyond 64 bits, or a real beyond a double. */
        if (json_error_code(&jerr) == json_error_numeric_overflow)
            return fail(out, PROBLEM_NUMBER_OUT_OF_RANGE, detail, NULL);
        return fail(out, PROBLEM_MALFORMED_JSON, detail, NULL);
    }
    json_t *problem = NULL;
    const char *type = json_string_value(json_object_get(doc, "type"));
    const char *agg = json_string_value(json_object_get(doc, "aggregate_id"));
    json_t *payload = json_object_get(doc, "payload");
    json_t *ev = json_object_get(doc, "expected_version");
    if (!json_is_object(doc)) {
        problem = fail(out, PROBLEM_INVALID_REQUEST, "the body must be a JSON object", NULL);
        goto done;
    }
    if (!type || !agg) {
        problem = fail(out, PROBLEM_INVALID_REQUEST,
                       "\"type\" and \"aggregate_id\" are required strings", NULL);
        goto done;
    }
    const char *unknown_key;
    json_t *unused;
    json_object_foreach(doc, unknown_key, unused)
    {
        if (strcmp(unknown_key, "type") != 0 && strcmp(unknown_key, "aggregate_id") != 0 &&
            strcmp(unknown_key, "payload") != 0 && strcmp(unknown_key, "expected_version") != 0) {
            char detail[300];
            snprintf(detail, sizeof(detail), "unknown member \"%.200s\"", unknown_key);
            problem = fail(out, PROBLEM_INVALID_REQUEST, detail, NULL);
            goto done;
        }
    }
    if (!envelope_aggregate_id_valid(agg,
                                     json_string_length(json_object_get(doc, "aggregate_id")))) {
        char detail[200];
        snprintf(detail, sizeof(detail), "\"aggregate_id\" must be " ENVELOPE_AGGREGATE_ID_RULE,
                 ENVELOPE_MAX_AGGREGATE_ID_LEN);
        problem = fail(out, PROBLEM_INVALID_REQUEST, detail, NULL);
        goto done;
    }
    out->cmd = domain_registry_find(reg, type);
    if (!out->cmd) {
        char detail[300];
        snprintf(detail, sizeof(detail), "no command type \"%.200s\"", type);
        problem = fail(out, PROBLEM_UNKNOWN_COMMAND, detail, NULL);
        goto done;
    }
    if (payload && !json_is_object(payload)) {
        problem = fail(out, PROBLEM_INVALID_REQUEST, "\"payload\" must be an object", NULL);
        goto done;
    }
    out->payload = payload ? json_incref(payload) : json_object();
    json_t *errors = json_array();
    if (!domain_command_validate(out->cmd, out->payload, errors)) {
        problem =
            fail(out, PROBLEM_INVALID_PAYLOAD, "the payload does not match the schema", errors);
        goto done;
    }
    json_decref(errors);

    if (ev) {
        if (!json_is_integer(ev) || json_integer_value(ev) < 0 ||
            json_integer_value(ev) > ENVELOPE_MAX_VERSION) {
            problem = fail(out, PROBLEM_INVALID_REQUEST,
                           "\"expected_version\" must be an integer in [0, 2^53]", NULL);
            goto done;
        }
        out->expected_version = json_integer_value(ev);
    }
    if (h->idempotency_key) {
        out->idempotency_key = intake_parse_key(h->idempotency_key);
        if (!out->idempotency_key) {
            problem = fail(out, PROBLEM_INVALID_REQUEST,
                           "Idempotency-Key must be a token or quoted string of 1..255 "
                           "visible ASCII characters",
                           NULL);
            goto done;
        }
    }
    /* Last of the checks: a precondition is evaluated only for a request that would otherwise
       succeed, so every 400 comes before If-Match's 412 (RFC 9110 section 13.2.1). */
    if (h->if_match && (problem = if_match(out, h->if_match)))
        goto done;
    /* Trace context that does not parse is dropped, tracestate with it (W3C Trace Context). */
    if (trace_parent_valid(h->traceparent)) {
        out->traceparent = xstrdup(h->traceparent);
        if (h->tracestate && trace_state_valid(h->tracestate))
            out->tracestate = xstrdup(h->tracestate);
    }
    intake_parse_prefer(h->prefer, &out->respond_async, &out->wait_ms);
    ids_uuid(out->command_id);
    if (!out->idempotency_key) {
        out->idempotency_key = xstrdup(out->command_id);
        out->key_assigned = true;
    }
    out->aggregate_id = xstrdup(agg);
done:
    json_decref(doc);
    return problem;
}

/* test_intake.c: table-driven tests of POST /v1/commands validation against the shipped domains. */

#include "intake.h"

#include "checkrun.h"
#include "core/trace.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Long strings for the length limits. */
#define X16  "xxxxxxxxxxxxxxxx"
#define X64  X16 X16 X16 X16
#define X254 X64 X64 X64 X16 X16 X16 "xxxxxxxxxxxxxx"
#define X255 X254 "x"
#define X256 X255 "x"
_Static_assert(sizeof(X254) == 255 && sizeof(X255) == 256 && sizeof(X256) == 257, "lengths");

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static domain_registry *reg;

static const char *schemas_dir(void)
{
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    return dir && *dir ? dir : "schemas/domains";
}

static void load_shipped(void)
{
    char err[512] = "";
    reg = domain_registry_load(schemas_dir(), err, sizeof err);
    if (!reg) {
        fprintf(stderr, "loading %s: %s\n", schemas_dir(), err);
        exit(EXIT_FAILURE);
    }
}

/* Test JSON is written with ' for " (tables read better without escaped quotes). */
static char *dq(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    return s;
}

/* ---- intake_parse ---- */

typedef struct {
    const char *name;
    const char *body; /* ' stands for " */
    intake_headers h;
    /* rejected: the problem */
    int status;          /* 0: the request is accepted */
    const char *problem; /* the name in "/problems/<name>" */
    const char *detail;  /* a substring of "detail", or NULL */
    const char *pointer; /* invalid-payload: the first error's pointer and keyword */
    const char *keyword;
    /* accepted: what out holds */
    const char *cmd, *agg;
    const char *payload; /* ' stands for " */
    const char *ev;      /* expected_version as text; NULL: -1 */
    const char *key;     /* NULL: assigned, equal to the command id */
    bool async;
    const char *wait_ms; /* NULL: -1 */
    const char *tp;      /* kept traceparent, or NULL */
} pcase;

#define DEPOSIT(amount)                                                                            \
    "{'type':'account.deposit','aggregate_id':'acc-1','payload':{'amount':" amount "}}"
#define DEPOSIT_EV(ev)                                                                             \
    "{'type':'account.deposit','aggregate_id':'acc-1','payload':{'amount':5},"                     \
    "'expected_version':" ev "}"
#define DEPOSIT_AGG(agg) "{'type':'account.deposit','aggregate_id':" agg ",'payload':{'amount':5}}"
#define OK_DEPOSIT       .cmd = "account.deposit", .agg = "acc-1", .payload = "{'amount':5}"
#define REJECT(st, kind) .status = (st), .problem = (kind)
#define BAD_REQUEST      REJECT(400, "invalid-request")

static const pcase pcases[] = {
    /* accepted */
    {.name = "deposit", .body = DEPOSIT("5"), OK_DEPOSIT},
    {.name = "close without payload",
     .body = "{'type':'account.close','aggregate_id':'acc-1'}",
     .cmd = "account.close",
     .agg = "acc-1",
     .payload = "{}"},
    {.name = "open with expected_version 0",
     .body = "{'expected_version':0,'payload':{'owner':'Ann'},"
             "'aggregate_id':'a','type':'account.open'}",
     .cmd = "account.open",
     .agg = "a",
     .payload = "{'owner':'Ann'}",
     .ev = "0"},
    {.name = "document with unicode id",
     .body = "{'type':'document.create','aggregate_id':'caf\\u00e9','payload':{}}",
     .cmd = "document.create",
     .agg = "caf\xc3\xa9",
     .payload = "{}"},
    {.name = "aggregate_id of 255 bytes",
     .body = DEPOSIT_AGG("'" X255 "'"),
     .cmd = "account.deposit",
     .agg = X255,
     .payload = "{'amount':5}"},
    {.name = "expected_version 5", .body = DEPOSIT_EV("5"), OK_DEPOSIT, .ev = "5"},
    {.name = "If-Match", .body = DEPOSIT("5"), .h.if_match = "\"3\"", OK_DEPOSIT, .ev = "3"},
    {.name = "If-Match *", .body = DEPOSIT("5"), .h.if_match = "*", OK_DEPOSIT, .ev = "-2"},
    {.name = "If-Match * and expected_version 3",
     .body = DEPOSIT_EV("3"),
     .h.if_match = "*",
     OK_DEPOSIT,
     .ev = "3"},
    {.name = "If-Match agrees with expected_version",
     .body = DEPOSIT_EV("3"),
     .h.if_match = "\"3\"",
     OK_DEPOSIT,
     .ev = "3"},
    {.name = "key token",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "abc-123",
     OK_DEPOSIT,
     .key = "abc-123"},
    {.name = "key sf-string",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "\"abc\"",
     OK_DEPOSIT,
     .key = "abc"},
    {.name = "key sf-string with escapes",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "\"a\\\"b\\\\c\"",
     OK_DEPOSIT,
     .key = "a\"b\\c"},
    {.name = "key of 255",
     .body = DEPOSIT("5"),
     .h.idempotency_key = X255,
     OK_DEPOSIT,
     .key = X255},
    {.name = "Prefer respond-async",
     .body = DEPOSIT("5"),
     .h.prefer = "respond-async",
     OK_DEPOSIT,
     .async = true},
    {.name = "Prefer respond-async and wait",
     .body = DEPOSIT("5"),
     .h.prefer = "respond-async, wait=3",
     OK_DEPOSIT,
     .async = true,
     .wait_ms = "3000"},
    {.name = "Prefer wait=abc ignored", .body = DEPOSIT("5"), .h.prefer = "wait=abc", OK_DEPOSIT},
    {.name = "traceparent kept", .body = DEPOSIT("5"), .h.traceparent = TP, OK_DEPOSIT, .tp = TP},
    {.name = "bad traceparent dropped",
     .body = DEPOSIT("5"),
     .h.traceparent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
     OK_DEPOSIT},
    {.name = "every header",
     .body = DEPOSIT("5"),
     .h = {.idempotency_key = "k1", .if_match = "\"0\"", .prefer = "wait=10", .traceparent = TP},
     OK_DEPOSIT,
     .ev = "0",
     .key = "k1",
     .wait_ms = "10000",
     .tp = TP},

    /* the body */
    {.name = "bad JSON", .body = "{'type':", REJECT(400, "malformed-json"), .detail = "line 1"},
    {.name = "empty body", .body = "", REJECT(400, "malformed-json")},
    {.name = "trailing garbage", .body = DEPOSIT("5") " x", REJECT(400, "malformed-json")},
    {.name = "duplicate member",
     .body = "{'type':'account.close','type':'account.close','aggregate_id':'a'}",
     REJECT(400, "malformed-json")},
    {.name = "bare scalar", .body = "5", REJECT(400, "malformed-json")},
    /* Valid JSON with numbers jansson cannot hold: not malformed. */
    {.name = "integer 2^64",
     .body = DEPOSIT("18446744073709551616"),
     REJECT(400, "number-out-of-range"),
     .detail = "line 1"},
    {.name = "integer 2^63",
     .body = DEPOSIT("9223372036854775808"),
     REJECT(400, "number-out-of-range")},
    {.name = "integer -2^63-1",
     .body = DEPOSIT("-9223372036854775809"),
     REJECT(400, "number-out-of-range")},
    {.name = "real 1e400", .body = DEPOSIT("1e400"), REJECT(400, "number-out-of-range")},
    {.name = "real -1e400 in expected_version",
     .body = DEPOSIT_EV("-1e400"),
     REJECT(400, "number-out-of-range")},
    {.name = "not an object",
     .body = "[{'type':'account.close'}]",
     BAD_REQUEST,
     .detail = "object"},
    {.name = "missing type", .body = "{'aggregate_id':'a'}", BAD_REQUEST, .detail = "\"type\""},
    {.name = "type not a string",
     .body = "{'type':5,'aggregate_id':'a'}",
     BAD_REQUEST,
     .detail = "\"type\""},
    {.name = "missing aggregate_id",
     .body = "{'type':'account.close'}",
     BAD_REQUEST,
     .detail = "\"aggregate_id\""},
    {.name = "aggregate_id not a string",
     .body = DEPOSIT_AGG("7"),
     BAD_REQUEST,
     .detail = "\"aggregate_id\""},
    {.name = "empty aggregate_id",
     .body = DEPOSIT_AGG("''"),
     BAD_REQUEST,
     .detail = "\"aggregate_id\""},
    {.name = "aggregate_id of 256 bytes",
     .body = DEPOSIT_AGG("'" X256 "'"),
     BAD_REQUEST,
     .detail = "\"aggregate_id\""},
    /* jansson refuses \u0000 (no JSON_ALLOW_NUL), so a NUL never reaches the length check. */
    {.name = "NUL in aggregate_id",
     .body = DEPOSIT_AGG("'a\\u0000b'"),
     REJECT(400, "malformed-json")},
    {.name = "unknown member",
     .body = "{'type':'account.close','aggregate_id':'a','extra':1}",
     BAD_REQUEST,
     .detail = "unknown member \"extra\""},
    {.name = "unknown command",
     .body = "{'type':'account.frobnicate','aggregate_id':'a'}",
     REJECT(400, "unknown-command"),
     .detail = "account.frobnicate"},
    {.name = "payload not an object",
     .body = "{'type':'account.close','aggregate_id':'a','payload':[1]}",
     BAD_REQUEST,
     .detail = "\"payload\""},
    {.name = "payload null",
     .body = "{'type':'account.close','aggregate_id':'a','payload':null}",
     BAD_REQUEST,
     .detail = "\"payload\""},

    /* the payload schema */
    {.name = "amount -3",
     .body = DEPOSIT("-3"),
     REJECT(400, "invalid-payload"),
     .pointer = "/amount",
     .keyword = "minimum"},
    {.name = "amount 0",
     .body = DEPOSIT("0"),
     REJECT(400, "invalid-payload"),
     .pointer = "/amount",
     .keyword = "minimum"},
    {.name = "amount \"x\"",
     .body = DEPOSIT("'x'"),
     REJECT(400, "invalid-payload"),
     .pointer = "/amount",
     .keyword = "type"},
    {.name = "amount 1.5",
     .body = DEPOSIT("1.5"),
     REJECT(400, "invalid-payload"),
     .pointer = "/amount",
     .keyword = "type"},
    {.name = "extra payload field",
     .body = DEPOSIT("1,'extra':true"),
     REJECT(400, "invalid-payload"),
     .pointer = "/extra",
     .keyword = "additionalProperties"},
    {.name = "deposit without payload",
     .body = "{'type':'account.deposit','aggregate_id':'a'}",
     REJECT(400, "invalid-payload"),
     .pointer = "/amount",
     .keyword = "required"},
    {.name = "payload checked before expected_version",
     .body = "{'type':'account.deposit','aggregate_id':'a','payload':{},'expected_version':-1}",
     REJECT(400, "invalid-payload"),
     .pointer = "/amount",
     .keyword = "required"},

    /* expected_version and If-Match */
    {.name = "expected_version -1",
     .body = DEPOSIT_EV("-1"),
     BAD_REQUEST,
     .detail = "expected_version"},
    {.name = "expected_version 1.5",
     .body = DEPOSIT_EV("1.5"),
     BAD_REQUEST,
     .detail = "expected_version"},
    {.name = "expected_version \"3\"",
     .body = DEPOSIT_EV("'3'"),
     BAD_REQUEST,
     .detail = "expected_version"},
    {.name = "expected_version null",
     .body = DEPOSIT_EV("null"),
     BAD_REQUEST,
     .detail = "expected_version"},
    {.name = "If-Match disagrees",
     .body = DEPOSIT_EV("4"),
     .h.if_match = "\"3\"",
     BAD_REQUEST,
     .detail = "disagree"},
    {.name = "If-Match weak: never matches strongly",
     .body = DEPOSIT("5"),
     .h.if_match = "W/\"3\"",
     REJECT(412, "version-mismatch"),
     .detail = "If-Match"},
    {.name = "If-Match list of one version",
     .body = DEPOSIT("5"),
     .h.if_match = "W/\"3\", \"3\", \"x\"",
     OK_DEPOSIT,
     .ev = "3"},
    {.name = "If-Match list of several versions",
     .body = DEPOSIT("5"),
     .h.if_match = "\"3\", \"4\"",
     BAD_REQUEST,
     .detail = "several versions"},
    {.name = "If-Match * with expected_version 0",
     .body = DEPOSIT_EV("0"),
     .h.if_match = "*",
     BAD_REQUEST,
     .detail = "disagree"},
    {.name = "If-Match unquoted",
     .body = DEPOSIT("5"),
     .h.if_match = "3",
     BAD_REQUEST,
     .detail = "If-Match"},
    {.name = "If-Match not a number",
     .body = DEPOSIT("5"),
     .h.if_match = "\"a\"",
     REJECT(412, "version-mismatch"),
     .detail = "If-Match"},
    /*
     * Regression (command-gateway/intake.c intake_parse), as it was before the fix: versions above
     * 2^53 are accepted, but common/domain/envelope.c parse_number() rejects ce_expectedversion >
     * 2^53, so the processor dead-letters the command as "bad-envelope" and the client never gets
     * an answer.
     */
    {.name = "expected_version above 2^53",
     .body = DEPOSIT_EV("9007199254740993"),
     BAD_REQUEST,
     .detail = "expected_version"},
    {.name = "If-Match above 2^53: no aggregate reaches it",
     .body = DEPOSIT("5"),
     .h.if_match = "\"9007199254740993\"",
     REJECT(412, "version-mismatch"),
     .detail = "If-Match"},

    /* Idempotency-Key */
    {.name = "empty key",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "",
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    {.name = "empty sf-string key",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "\"\"",
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    /* A bad request is a 400 whatever its preconditions say: If-Match is evaluated only for a
       request that would otherwise succeed (RFC 9110 section 13.2.1). */
    {.name = "bad key with an If-Match that cannot match",
     .body = DEPOSIT("5"),
     .h = {.idempotency_key = "", .if_match = "\"qFpyq\""},
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    {.name = "key of 256",
     .body = DEPOSIT("5"),
     .h.idempotency_key = X256,
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    {.name = "key with tab",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "a\tb",
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    {.name = "sf-string key with newline",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "\"a\nb\"",
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    {.name = "key with space",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "a b",
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
    {.name = "key with UTF-8",
     .body = DEPOSIT("5"),
     .h.idempotency_key = "caf\xc3\xa9",
     BAD_REQUEST,
     .detail = "Idempotency-Key"},
};

START_TEST(a_request_is_accepted_or_gets_its_problem)
{
    const pcase *tc = &pcases[_i];
    char *body = dq(tc->body);
    intake in;
    memset(&in, 0xa5, sizeof(in)); /* intake_parse() must set every field */
    json_t *p = intake_parse(&in, reg, body, strlen(body), &tc->h);

    if (tc->status) {
        char *got = p ? json_dumps(p, JSON_COMPACT) : NULL;
        ck_assert_msg(p != NULL, "%s: accepted, want %d %s", tc->name, tc->status, tc->problem);
        ck_assert_msg(json_integer_value(json_object_get(p, "status")) == tc->status, "%s: got %s",
                      tc->name, got);
        char type[64];
        snprintf(type, sizeof(type), "/problems/%s", tc->problem);
        const char *gtype = json_string_value(json_object_get(p, "type"));
        ck_assert_msg(gtype && strcmp(gtype, type) == 0, "%s: got %s", tc->name, got);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(p, "title")));
        if (tc->detail) {
            const char *detail = json_string_value(json_object_get(p, "detail"));
            ck_assert_msg(detail && strstr(detail, tc->detail), "%s: detail lacks '%s': %s",
                          tc->name, tc->detail, got);
        }
        json_t *errors = json_object_get(p, "errors");
        if (tc->pointer) {
            ck_assert_msg(json_is_array(errors) && json_array_size(errors) > 0, "%s: no errors: %s",
                          tc->name, got);
            size_t i;
            json_t *e;
            json_array_foreach(errors, i, e)
            {
                ck_assert_msg(json_is_string(json_object_get(e, "pointer")) &&
                                  json_is_string(json_object_get(e, "keyword")),
                              "%s: error %zu lacks pointer or keyword: %s", tc->name, i, got);
            }
            json_t *first = json_array_get(errors, 0);
            ck_assert_str_eq(json_string_value(json_object_get(first, "pointer")), tc->pointer);
            ck_assert_str_eq(json_string_value(json_object_get(first, "keyword")), tc->keyword);
        } else {
            ck_assert_msg(errors == NULL, "%s: unexpected errors: %s", tc->name, got);
        }
        /* out is left cleared. */
        ck_assert_ptr_null(in.idempotency_key);
        ck_assert_ptr_null(in.aggregate_id);
        ck_assert_ptr_null(in.payload);
        ck_assert_ptr_null(in.traceparent);
        ck_assert_ptr_null(in.cmd);
        free(got);
        json_decref(p);
    } else {
        char *got = p ? json_dumps(p, JSON_COMPACT) : NULL;
        ck_assert_msg(p == NULL, "%s: rejected: %s", tc->name, got);
        ck_assert_ptr_nonnull(in.cmd);
        ck_assert_str_eq(domain_command_type(in.cmd), tc->cmd);
        ck_assert_str_eq(in.aggregate_id, tc->agg);
        char *want_payload = dq(tc->payload);
        json_t *wp = json_loads(want_payload, 0, NULL);
        ck_assert_ptr_nonnull(wp);
        ck_assert_msg(json_equal(in.payload, wp), "%s: payload differs", tc->name);
        json_decref(wp);
        free(want_payload);
        ck_assert_int_eq(in.expected_version, tc->ev ? strtoll(tc->ev, NULL, 10) : -1);
        ck_assert_msg(ids_is_uuid(in.command_id), "command id '%.37s'", in.command_id);
        ck_assert_int_eq(in.command_id[14], '7'); /* a version 7 (time-ordered) UUID */
        ck_assert_ptr_nonnull(in.idempotency_key);
        if (tc->key) {
            ck_assert_str_eq(in.idempotency_key, tc->key);
            ck_assert(!in.key_assigned);
        } else {
            ck_assert_str_eq(in.idempotency_key, in.command_id);
            ck_assert(in.key_assigned);
        }
        ck_assert_int_eq(in.respond_async, tc->async);
        ck_assert_int_eq(in.wait_ms, tc->wait_ms ? strtoll(tc->wait_ms, NULL, 10) : -1);
        if (tc->tp)
            ck_assert_str_eq(in.traceparent, tc->tp);
        else
            ck_assert_ptr_null(in.traceparent);
        intake_clear(&in);
        ck_assert_ptr_null(in.payload);
        ck_assert_ptr_null(in.idempotency_key);
        free(got);
    }
    free(body);
}
END_TEST

/* Each accepted request gets its own command id (and so its own assigned key). */
START_TEST(each_accepted_request_gets_its_own_command_id)
{
    char *body = dq(DEPOSIT("5"));
    intake_headers h = {0};
    intake a, b;
    ck_assert_ptr_null(intake_parse(&a, reg, body, strlen(body), &h));
    ck_assert_ptr_null(intake_parse(&b, reg, body, strlen(body), &h));
    ck_assert_str_ne(a.command_id, b.command_id);
    ck_assert_str_ne(a.idempotency_key, b.idempotency_key);
    intake_clear(&a);
    intake_clear(&b);
    free(body);
}
END_TEST

/* ---- intake_parse_key ---- */

static const struct {
    const char *value;
    const char *want; /* NULL: invalid */
} kcases[] = {
    {"abc", "abc"},
    {"6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a", "6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a"},
    {"a:b/c*d", "a:b/c*d"},
    {"\"abc\"", "abc"},
    {"\"a b,c;d\"", "a b,c;d"},
    {"\"a\\\"b\"", "a\"b"},
    {"\"a\\\\b\"", "a\\b"},
    {"\"\\\\\"", "\\"},
    {X255, X255},
    {"\"" X255 "\"", X255},
    {"\"" X254 "\\\\\"", X254 "\\"}, /* 255 after unescaping */
    {"", NULL},
    {"\"\"", NULL},
    {"\"", NULL},
    {"\"abc", NULL},
    {"abc\"", NULL},
    {"\"a\"b\"", NULL},
    {"\"a\\nb\"", NULL}, /* only \" and \\ are escapes */
    {"\"a\\\"", NULL},   /* the escape eats the closing quote */
    {"\"\\\"", NULL},
    {X256, NULL},
    {"\"" X256 "\"", NULL},
    {"\"" X255 "\\\\\"", NULL}, /* 256 after unescaping */
    {"a b", NULL},
    {"a,b", NULL},
    {"a;b", NULL},
    {"a\tb", NULL},
    {"\"a\tb\"", NULL},
    {"a\x7f", NULL},
    {"\"a\x7f\"", NULL},
    {"caf\xc3\xa9", NULL},
    {"\"caf\xc3\xa9\"", NULL},
};

/* The echo is an sf-string that parses back to the key. */
static const struct {
    const char *key, *sf;
} sfcases[] = {
    {"abc", "\"abc\""}, {"a b", "\"a b\""},     {"a\"b\\c", "\"a\\\"b\\\\c\""},
    {"\"", "\"\\\"\""}, {X255, "\"" X255 "\""},
};

START_TEST(a_key_is_echoed_as_an_sf_string)
{
    char *sf = intake_key_sf_string(sfcases[_i].key);
    ck_assert_str_eq(sf, sfcases[_i].sf);
    char *back = intake_parse_key(sf);
    ck_assert_ptr_nonnull(back);
    ck_assert_str_eq(back, sfcases[_i].key);
    free(back);
    free(sf);
}
END_TEST

START_TEST(idempotency_keys_parse_by_the_grammar)
{
    char *got = intake_parse_key(kcases[_i].value);
    if (kcases[_i].want) {
        ck_assert_msg(got != NULL, "'%s' rejected", kcases[_i].value);
        ck_assert_str_eq(got, kcases[_i].want);
    } else {
        ck_assert_msg(got == NULL, "'%s' accepted as '%s'", kcases[_i].value, got);
    }
    free(got);
}
END_TEST

/* ---- intake_parse_if_match ---- */

#define IM_INVALID INTAKE_IF_MATCH_INVALID, -1
#define IM_NEVER   INTAKE_IF_MATCH_NEVER, -1
#define IM_EXISTS  INTAKE_IF_MATCH_EXISTS, -1
#define IM(v)      INTAKE_IF_MATCH_VERSION, (v)

static const struct {
    const char *value;
    intake_if_match want;
    long long version;
} mcases[] = {
    {"\"3\"", IM(3)},
    {"\"0\"", IM(0)},
    {"\"9007199254740992\"", IM(9007199254740992LL)}, /* 2^53, the largest version */
    {"*", IM_EXISTS},
    {" * ", IM_EXISTS},
    /* lists: the strong tags that are versions count */
    {"\"3\", \"3\"", IM(3)},
    {"\"a\", \"3\"", IM(3)},
    {"W/\"2\", \"3\"", IM(3)},
    {"\"3\",W/\"3\", ,\"x\"", IM(3)},
    {"\"3\", \"4\"", INTAKE_IF_MATCH_SEVERAL, 3},
    {"\"4\", \"3\", \"4\"", INTAKE_IF_MATCH_SEVERAL, 3},
    /* entity-tags that no aggregate's ETag matches strongly */
    {"W/\"3\"", IM_NEVER},
    {"\"007\"", IM_NEVER}, /* the ETag of version 7 is "7" */
    {"\"a\"", IM_NEVER},
    {"\"\"", IM_NEVER},
    {"\"-1\"", IM_NEVER},
    {"\"+1\"", IM_NEVER},
    {"\"9007199254740993\"", IM_NEVER},
    {"\"12345678901234567890123\"", IM_NEVER}, /* longer than any version */
    {"W/\"1\", \"b\"", IM_NEVER},
    /* not entity-tags */
    {"3", IM_INVALID},
    {"\"", IM_INVALID},
    {"\"3", IM_INVALID},
    {"3\"", IM_INVALID},
    {"\" 3\"", IM_INVALID},
    {"*, \"3\"", IM_INVALID},
    {"", IM_INVALID},
};

START_TEST(if_match_parses_to_a_version_or_is_refused)
{
    long long v = -1;
    ck_assert_msg(intake_parse_if_match(mcases[_i].value, &v) == mcases[_i].want, "[%s]",
                  mcases[_i].value);
    if (mcases[_i].version >= 0)
        ck_assert_int_eq(v, mcases[_i].version);
}
END_TEST

/* ---- intake_parse_prefer ---- */

static const struct {
    const char *value;
    bool async;
    long long wait_ms;
} prcases[] = {
    {NULL, false, -1},
    {"", false, -1},
    {"respond-async", true, -1},
    {"RESPOND-ASYNC", true, -1},
    {"respond-async, wait=3", true, 3000},
    {"wait=3,respond-async", true, 3000},
    {"  respond-async  ,  wait=10  ", true, 10000},
    {"respond-async; foo=bar", true, -1},
    {"wait=3; x", false, 3000},
    {"wait=0", false, 0},
    {"Wait=86399", false, 86399000},
    {"wait=86400", false, -1},
    {"wait=abc", false, -1},
    {"wait=", false, -1},
    {"wait=-1", false, -1},
    {"wait=3x", false, -1},
    {"wait=99999999999999999999", false, -1},
    {"respond-asyncx", false, -1},
    {"return=minimal, handling=strict", false, -1},
    {",,respond-async,,", true, -1},
    /*
     * Regression (command-gateway/intake.c intake_parse_prefer), as it was before the fix: RFC 7240
     * section 2 says only the first instance of a repeated preference is considered; the loop lets
     * the last one win.
     */
    {"wait=5, wait=7", false, 5000},
};

START_TEST(prefer_parses_to_what_the_gateway_honours)
{
    bool async = !prcases[_i].async;
    long long wait_ms = 12345;
    intake_parse_prefer(prcases[_i].value, &async, &wait_ms);
    ck_assert_msg(async == prcases[_i].async && wait_ms == prcases[_i].wait_ms,
                  "'%s': respond_async %d wait_ms %lld, want %d %lld",
                  prcases[_i].value ? prcases[_i].value : "(null)", async, wait_ms,
                  prcases[_i].async, prcases[_i].wait_ms);
}
END_TEST

/* ---- trace_parent_valid (common/core/trace.c), which intake uses ---- */

static const struct {
    const char *value;
    bool valid;
} tcases[] = {
    {TP, true},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
    {"00-00000000000000000000000000000001-0000000000000001-01", true},
    {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", false},
    {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
    {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
    {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false},
    {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01", false},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false},
    {"", false},
};

START_TEST(traceparent_is_valid_only_in_the_w3c_form)
{
    ck_assert_msg(trace_parent_valid(tcases[_i].value) == tcases[_i].valid, "'%s'",
                  tcases[_i].value);
}
END_TEST

/* Pairs of requests and whether their Idempotency-Key fingerprints must be equal. */
static const struct {
    const char *a, *b, *if_match_b;
    bool same;
} fcases[] = {
    {"{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5}}",
     "{ 'payload': {'amount': 5}, 'aggregate_id': 'a', 'type': 'account.deposit' }", NULL, true},
    {"{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5}}",
     "{'type':'account.deposit','aggregate_id':'a','payload':{'amount':6}}", NULL, false},
    {"{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5}}",
     "{'type':'account.deposit','aggregate_id':'b','payload':{'amount':5}}", NULL, false},
    {"{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5}}",
     "{'type':'account.withdraw','aggregate_id':'a','payload':{'amount':5}}", NULL, false},
    {"{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5},'expected_version':3}",
     "{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5}}", "\"3\"", true},
    {"{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5},'expected_version':3}",
     "{'type':'account.deposit','aggregate_id':'a','payload':{'amount':5}}", NULL, false},
    {"{'type':'account.close','aggregate_id':'a'}",
     "{'type':'account.close','aggregate_id':'a','payload':{}}", NULL, true},
};

START_TEST(the_fingerprint_follows_the_request)
{
    intake a, b;
    char fa[IDS_UUID_LEN], fb[IDS_UUID_LEN];
    char *ja = dq(fcases[_i].a), *jb = dq(fcases[_i].b);
    intake_headers ha = {0}, hb = {.if_match = fcases[_i].if_match_b};
    ck_assert_ptr_null(intake_parse(&a, reg, ja, strlen(ja), &ha));
    ck_assert_ptr_null(intake_parse(&b, reg, jb, strlen(jb), &hb));
    intake_fingerprint(&a, fa);
    intake_fingerprint(&b, fb);
    ck_assert(ids_is_uuid(fa));
    ck_assert_msg((strcmp(fa, fb) == 0) == fcases[_i].same, "case %d: %s vs %s", _i, fa, fb);
    intake_clear(&a);
    intake_clear(&b);
    free(ja);
    free(jb);
}
END_TEST

/*
 * A fingerprint is stored with its key's claim, and a retry after an upgrade must find it again:
 * these are the fingerprints this gateway has always given (its canonical request, hashed as a
 * name-based UUID), pinned. Identities with characters JSON escapes, text beyond ASCII, nested
 * and unordered payloads, each kind of expected version.
 */
static const struct {
    const char *body, *if_match, *fingerprint;
} pins[] = {
    {"{'type':'account.deposit','aggregate_id':'acc-1','payload':{'amount':5}}", NULL,
     "b3ec11ca-430d-5c60-a819-99299d6e2a41"},
    {"{'type':'account.open','aggregate_id':'a\\\\b\\\"c/d','payload':{'owner':'Zoë 🙂'}}", NULL,
     "c2774fc5-ea49-5b56-a293-a1fc0eb203bf"},
    {"{'type':'document.create','aggregate_id':'ünï',"
     "'payload':{'t':'x\\ny','z':[1,{'b':2,'a':1}],'a':0.1}}",
     NULL, "b742bd9a-08a2-5e25-9143-7251616060dc"},
    {"{'type':'account.deposit','aggregate_id':'acc-1','payload':{'amount':5},"
     "'expected_version':7}",
     NULL, "d7aefed0-7cfb-5cd4-abb8-89fc57844258"},
    {"{'type':'account.deposit','aggregate_id':'acc-1','payload':{'amount':5}}", "*",
     "626a5ee1-e72d-5b70-8b68-3a5b175ccdae"},
    {"{'type':'account.close','aggregate_id':'acc-1'}", NULL,
     "918e8b63-45be-5022-8bff-ffb49f727fac"},
};

START_TEST(fingerprints_stay_what_they_were)
{
    intake in;
    char f[IDS_UUID_LEN];
    char *body = dq(pins[_i].body);
    intake_headers h = {.if_match = pins[_i].if_match};
    json_t *problem = intake_parse(&in, reg, body, strlen(body), &h);
    ck_assert_msg(problem == NULL, "case %d: %s", _i,
                  json_string_value(json_object_get(problem, "detail")));
    intake_fingerprint(&in, f);
    ck_assert_msg(strcmp(f, pins[_i].fingerprint) == 0, "case %d: %s", _i, f);
    intake_clear(&in);
    free(body);
}
END_TEST

int main(void)
{
    load_shipped();
    Suite *s = suite_create("intake");
    TCase *tc = tcase_create("parse");
    tcase_add_loop_test(tc, a_request_is_accepted_or_gets_its_problem, 0, N(pcases));
    tcase_add_test(tc, each_accepted_request_gets_its_own_command_id);
    tcase_add_loop_test(tc, the_fingerprint_follows_the_request, 0, N(fcases));
    tcase_add_loop_test(tc, fingerprints_stay_what_they_were, 0, N(pins));
    suite_add_tcase(s, tc);
    tc = tcase_create("headers");
    tcase_add_loop_test(tc, idempotency_keys_parse_by_the_grammar, 0, N(kcases));
    tcase_add_loop_test(tc, if_match_parses_to_a_version_or_is_refused, 0, N(mcases));
    tcase_add_loop_test(tc, a_key_is_echoed_as_an_sf_string, 0, N(sfcases));
    tcase_add_loop_test(tc, prefer_parses_to_what_the_gateway_honours, 0, N(prcases));
    tcase_add_loop_test(tc, traceparent_is_valid_only_in_the_w3c_form, 0, N(tcases));
    suite_add_tcase(s, tc);

    int failed = check_run(s, CK_FORK_GETENV);
    domain_registry_free(reg);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

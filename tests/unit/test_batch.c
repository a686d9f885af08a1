/* test_batch.c: table-driven tests of the processor's pure core: decode, apply, rows, replies. */

#include "checkrun.h"
#include "core/xalloc.h"
#include "pg/pgconn.h"
#include "processor/batch.h"

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define GROUP          "grp"
#define DEFAULT_TENANT "t0"
#define REPLY_PART     3

#define U1 "00000000-0000-4000-8000-000000000001"
#define U2 "00000000-0000-4000-8000-000000000002"
#define U3 "00000000-0000-4000-8000-000000000003"
#define U4 "00000000-0000-4000-8000-000000000004"
#define U5 "00000000-0000-4000-8000-000000000005"
#define U9 "00000000-0000-4000-8000-000000000009"

static domain_registry *reg;

/* ---- helpers ---- */

/* Copies text with single quotes turned into double quotes (tables read better that way). */
static char *dq(const char *text)
{
    char *s = xstrdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

/* Parses JSON written with single quotes. */
static json_t *J(const char *text)
{
    char *s = dq(text);
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    free(s);
    ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, e.text);
    return j;
}

/* True if every member of want (recursively, for objects) equals the one in got. */
static bool subset(const json_t *want, const json_t *got)
{
    if (!json_is_object(want))
        return json_equal(want, got);
    if (!json_is_object(got))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)want, k, v)
    {
        if (!subset(v, json_object_get(got, k)))
            return false;
    }
    return true;
}

/*
 * Checks a row parameter (freed here): a JSON array of count rows (SIZE_MAX: no count to check),
 * each row matching one expected row (a subset of its members), in order or, when !ordered, in
 * any order.
 */
static void check_rows(const char *what, char *got_text, size_t count, const char *want_text,
                       bool ordered)
{
    ck_assert_ptr_nonnull(got_text);
    json_t *got = json_loads(got_text, JSON_REJECT_DUPLICATES, NULL); /* real JSON */
    json_t *want = J(want_text);
    ck_assert_msg(json_is_array(got), "%s: not an array: %s", what, got_text);
    ck_assert_msg(count == SIZE_MAX || json_array_size(got) == count, "%s: count %zu for %s", what,
                  count, got_text);
    bool ok = json_array_size(got) == json_array_size(want);
    bool used[16] = {false};
    ck_assert_int_le(json_array_size(got), N(used));
    for (size_t w = 0; ok && w < json_array_size(want); w++) {
        bool found = false;
        for (size_t g = 0; !found && g < json_array_size(got); g++) {
            if (used[g] || (ordered && g != w))
                continue;
            if (subset(json_array_get(want, w), json_array_get(got, g)))
                used[g] = found = true;
        }
        ok = found;
    }
    ck_assert_msg(ok, "%s:\n got  %s\n want %s", what, got_text, want_text);
    json_decref(got);
    json_decref(want);
    free(got_text);
}

/* A command message as the gateway would produce it; unset fields take the defaults noted. */
typedef struct {
    const char *id;
    const char *type;
    const char *subject;
    const char *tenant; /* NULL: "t1" */
    bool no_tenant;     /* leave ce_tenant out */
    const char *key;    /* NULL: no ce_idempotencykey */
    bool has_ev;
    long long ev;        /* ce_expectedversion when has_ev */
    const char *payload; /* single quotes become double quotes; NULL: no value */
    int partition;
    long long offset;  /* 0: the message's index in the batch */
    const char *drop;  /* a header to leave out */
    const char *hname; /* a header to set, replacing one of the same name */
    const char *hvalue;
    const char *traceparent, *tracestate; /* NULL: header left out */
} mspec;

/* One line per macro reads better than the layout clang-format would pick. */
/* clang-format off */
#define EV(n)               .has_ev = true, .ev = (n)
#define MSG(i, t, subj, pl) .id = (i), .type = (t), .subject = (subj), .payload = (pl)
#define OPEN(i, ...)        {MSG(i, "account.open", "acc-1", "{'owner':'a'}"), __VA_ARGS__}
#define DEPOSIT(i, n, ...)  {MSG(i, "account.deposit", "acc-1", "{'amount':" #n "}"), __VA_ARGS__}
#define WITHDRAW(i, n, ...) {MSG(i, "account.withdraw", "acc-1", "{'amount':" #n "}"), __VA_ARGS__}
/* clang-format on */

#define MAXM 8

/* Messages built by hand; every pointer in m[] stays valid until msgs_free(). */
typedef struct {
    kafka_message m[MAXM];
    envelope e[MAXM];
    char scratch[MAXM][64];
    char *values[MAXM];
} msgs;

static void build_one(msgs *mb, size_t i, const mspec *s)
{
    envelope *e = &mb->e[i];
    e->id = (char *)(uintptr_t)s->id;
    e->source = "/test";
    e->type = (char *)(uintptr_t)s->type;
    e->subject = (char *)(uintptr_t)s->subject;
    e->tenant = s->no_tenant ? NULL : (char *)(uintptr_t)(s->tenant ? s->tenant : "t1");
    e->idempotency_key = (char *)(uintptr_t)s->key;
    e->expected_version = s->has_ev ? s->ev : -1;
    e->reply_partition = REPLY_PART;
    e->traceparent = (char *)(uintptr_t)s->traceparent;
    e->tracestate = (char *)(uintptr_t)s->tracestate;

    kafka_message *m = &mb->m[i];
    m->topic = "commands";
    m->partition = s->partition;
    m->offset = s->offset ? s->offset : (long long)i;
    m->key = s->subject;
    m->key_len = s->subject ? strlen(s->subject) : 0;
    if (s->payload) {
        mb->values[i] = dq(s->payload);
        m->value = mb->values[i];
        m->len = strlen(mb->values[i]);
    }
    size_t nh = envelope_to_headers(e, m->headers, mb->scratch[i]);
    size_t kept = 0;
    for (size_t h = 0; h < nh; h++) {
        if (!s->drop || !m->headers[h].name || strcmp(m->headers[h].name, s->drop) != 0)
            m->headers[kept++] = m->headers[h];
    }
    nh = kept;
    if (s->hname) {
        size_t h = 0;
        while (h < nh && m->headers[h].name && strcmp(m->headers[h].name, s->hname) != 0)
            h++;
        m->headers[h] = (header){s->hname, s->hvalue, strlen(s->hvalue)};
        if (h == nh)
            nh++;
    }
    m->nheaders = nh;
}

static size_t count_msgs(const mspec *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n].type)
        n++;
    return n;
}

static void msgs_free(msgs *mb)
{
    for (size_t i = 0; i < MAXM; i++)
        free(mb->values[i]);
}

/* Builds n messages into mb (caller frees with msgs_free()) and decodes them into a fresh b. */
static void decode_into(batch *b, const mspec *specs, size_t n, msgs *mb)
{
    memset(mb, 0, sizeof(*mb));
    ck_assert_int_le(n, MAXM);
    for (size_t i = 0; i < n; i++)
        build_one(mb, i, &specs[i]);
    memset(b, 0, sizeof(*b));
    batch_decode(b, reg, mb->m, n, GROUP, DEFAULT_TENANT);
}

/* Decodes n messages into a fresh batch b. */
static void decode(batch *b, const mspec *specs, size_t n)
{
    msgs mb;
    decode_into(b, specs, n, &mb);
    msgs_free(&mb); /* batch_decode copies */
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- decode ---- */

/* Identities at and past the limits (envelope.h), filled by main(). */
static char id_255[ENVELOPE_MAX_AGGREGATE_ID_LEN + 1], id_256[ENVELOPE_MAX_AGGREGATE_ID_LEN + 2];
static char key_255[ENVELOPE_MAX_KEY_LEN + 1], key_3000[3001];
static char tenant_65[ENVELOPE_MAX_TENANT_LEN + 2];

static void fill(char *buf, size_t len, char c)
{
    memset(buf, c, len);
    buf[len] = '\0';
}

/* A dead letter only: no identity that can be recorded. */
#define HOSTILE(name, spec, detail)                                                                \
    {                                                                                              \
        name, spec, "bad-envelope", detail, false, NULL, NULL, 0, NULL                             \
    }

typedef struct {
    const char *name;
    mspec m;
    const char *reason; /* NULL: decodes cleanly */
    const char *detail; /* a substring of dead_detail */
    bool recordable;
    const char *tenant; /* recordable: the tenant used */
    const char *key;    /* recordable: the idempotency key used */
    int http;           /* after batch_apply */
    const char *problem;
} dcase;

static const dcase dcases[] = {
    {"good command", OPEN(U1, .key = "k1"), NULL, NULL, true, "t1", "k1", 201, NULL},
    {"no ce_tenant: default tenant", OPEN(U1, .no_tenant = true), NULL, NULL, true, DEFAULT_TENANT,
     U1, 201, NULL},
    {"empty ce_tenant: default tenant", OPEN(U1, .tenant = ""), NULL, NULL, true, DEFAULT_TENANT,
     U1, 201, NULL},
    {"empty idempotency key: the command id", OPEN(U1, .key = ""), NULL, NULL, true, "t1", U1, 201,
     NULL},
    {"missing ce_specversion", OPEN(U1, .drop = "ce_specversion"), "bad-envelope", "ce_specversion",
     false, NULL, NULL, 0, NULL},
    {"ce_specversion 0.3", OPEN(U1, .hname = "ce_specversion", .hvalue = "0.3"), "bad-envelope",
     "ce_specversion", false, NULL, NULL, 0, NULL},
    {"ce_id not a UUID", OPEN("cmd-1"), "bad-envelope", "UUID", false, NULL, NULL, 0, NULL},
    {"ce_id missing", OPEN(NULL), "bad-envelope", "ce_id", false, NULL, NULL, 0, NULL},
    {"ce_subject missing",
     {MSG(U1, "account.open", NULL, "{'owner':'a'}")},
     "bad-envelope",
     "ce_subject",
     false,
     NULL,
     NULL,
     0,
     NULL},
    {"ce_subject empty",
     {MSG(U1, "account.open", "", "{'owner':'a'}")},
     "bad-envelope",
     "ce_subject",
     false,
     NULL,
     NULL,
     0,
     NULL},
    {"ce_source missing", OPEN(U1, .drop = "ce_source"), "bad-envelope", "ce_source", false, NULL,
     NULL, 0, NULL},
    {"ce_expectedversion not a number", OPEN(U1, .hname = "ce_expectedversion", .hvalue = "x1"),
     "bad-envelope", "ce_expectedversion", false, NULL, NULL, 0, NULL},
    {"unknown type",
     {MSG(U1, "account.frobnicate", "acc-1", "{}"), .key = "k1"},
     "unknown-command",
     "account.frobnicate",
     true,
     "t1",
     "k1",
     400,
     "/problems/unknown-command"},
    {"value not JSON",
     {MSG(U1, "account.deposit", "acc-1", "not json")},
     "malformed-payload",
     "not a JSON object",
     true,
     "t1",
     U1,
     400,
     NULL},
    {"value a JSON array",
     {MSG(U1, "account.deposit", "acc-1", "[{'amount':1}]")},
     "malformed-payload",
     "not a JSON object",
     true,
     "t1",
     U1,
     400,
     NULL},
    {"value a JSON number",
     {MSG(U1, "account.deposit", "acc-1", "5")},
     "malformed-payload",
     "not a JSON object",
     true,
     "t1",
     U1,
     400,
     NULL},
    {"value empty",
     {MSG(U1, "account.deposit", "acc-1", "")},
     "malformed-payload",
     "not a JSON object",
     true,
     "t1",
     U1,
     400,
     NULL},
    {"no value",
     {MSG(U1, "account.deposit", "acc-1", NULL)},
     "malformed-payload",
     "not a JSON object",
     true,
     "t1",
     U1,
     400,
     NULL},
    {"duplicate member",
     {MSG(U1, "account.deposit", "acc-1", "{'amount':1,'amount':2}")},
     "malformed-payload",
     "not a JSON object",
     true,
     "t1",
     U1,
     400,
     NULL},
    {"amount -1 fails the schema", DEPOSIT(U1, -1), "invalid-payload", "/amount", true, "t1", U1,
     400, "/problems/invalid-payload"},
    /* Another producer's command: identities PostgreSQL could not store or index. */
    HOSTILE("ce_subject not UTF-8", {MSG(U1, "account.open", "acc-\xff", "{'owner':'a'}")},
            "ce_subject"),
    HOSTILE("ce_subject an overlong UTF-8 form",
            {MSG(U1, "account.open", "acc-\xc0\xaf", "{'owner':'a'}")}, "not valid UTF-8"),
    HOSTILE("ce_subject a UTF-16 surrogate",
            {MSG(U1, "account.open", "acc-\xed\xa0\x80", "{'owner':'a'}")}, "ce_subject"),
    HOSTILE("ce_subject a control character",
            {MSG(U1, "account.open", "acc-\x01", "{'owner':'a'}")}, "control character"),
    HOSTILE("ce_subject ..", {MSG(U1, "account.open", "..", "{'owner':'a'}")}, "ce_subject"),
    HOSTILE("ce_subject 256 bytes", {MSG(U1, "account.open", id_256, "{'owner':'a'}")}, "too long"),
    HOSTILE("ce_tenant not UTF-8", OPEN(U1, .tenant = "t\xff"), "ce_tenant"),
    HOSTILE("ce_tenant with a space", OPEN(U1, .tenant = "t 1"), "ce_tenant"),
    HOSTILE("ce_tenant 65 bytes", OPEN(U1, .tenant = tenant_65), "ce_tenant"),
    HOSTILE("ce_idempotencykey not UTF-8", OPEN(U1, .key = "k\xfe"), "ce_idempotencykey"),
    HOSTILE("ce_idempotencykey a control character", OPEN(U1, .key = "k\n1"), "ce_idempotencykey"),
    HOSTILE("ce_idempotencykey 3000 bytes", OPEN(U1, .key = key_3000), "too long"),
    HOSTILE("ce_type not ASCII", {MSG(U1, "account.\xc3\xa9", "acc-1", "{}")}, "ce_type"),
    HOSTILE("structured-mode CloudEvent",
            OPEN(U1, .drop = "ce_specversion", .hname = "content-type",
                 .hvalue = "application/cloudevents+json; charset=utf-8"),
            "structured-mode"),
    {"ce_subject of 255 bytes, UTF-8",
     {MSG(U1, "account.open", id_255, "{'owner':'a'}")},
     NULL,
     NULL,
     true,
     "t1",
     U1,
     201,
     NULL},
    {"ce_subject UTF-8 of 4 bytes a character",
     {MSG(U1, "account.open", "acc-\xf0\x9f\x98\x80", "{'owner':'a'}")},
     NULL,
     NULL,
     true,
     "t1",
     U1,
     201,
     NULL},
    {"ce_idempotencykey of 255 printable bytes", OPEN(U1, .key = key_255), NULL, NULL, true, "t1",
     key_255, 201, NULL},
    {"unknown member fails the schema",
     {MSG(U1, "account.deposit", "acc-1", "{'amount':1,'x':1}")},
     "invalid-payload",
     "/x",
     true,
     "t1",
     U1,
     400,
     "/problems/invalid-payload"},
};

START_TEST(messages_decode_to_commands_or_to_their_problem)
{
    const dcase *tc = &dcases[_i];
    batch b;
    msgs mb;
    decode_into(&b, &tc->m, 1, &mb);
    ck_assert_int_eq(b.n, 1);
    batch_item *it = &b.items[0];

    /* The raw message is copied whole for the dead-letter topic. */
    const kafka_message *m = &mb.m[0];
    ck_assert_uint_eq(it->len, m->len);
    ck_assert_mem_eq(it->value, m->value ? m->value : "", it->len);
    ck_assert_uint_eq(it->key_len, m->key_len);
    if (m->key)
        ck_assert_mem_eq(it->key, m->key, it->key_len);
    ck_assert_int_eq(it->partition, m->partition);
    ck_assert_int_eq(it->offset, m->offset);
    ck_assert_uint_eq(it->nheaders, m->nheaders);
    for (size_t h = 0; h < m->nheaders; h++) {
        ck_assert_str_eq(it->headers[h].name, m->headers[h].name);
        ck_assert_uint_eq(it->headers[h].len, m->headers[h].len);
        ck_assert_mem_eq(it->headers[h].value, m->headers[h].value, m->headers[h].len);
    }
    msgs_free(&mb);

    if (tc->reason) {
        ck_assert_msg(it->dead_reason && strcmp(it->dead_reason, tc->reason) == 0,
                      "%s: dead_reason %s, want %s", tc->name, it->dead_reason, tc->reason);
        ck_assert_msg(it->dead_detail && strstr(it->dead_detail, tc->detail),
                      "%s: dead_detail '%s' lacks '%s'", tc->name, it->dead_detail, tc->detail);
    } else {
        ck_assert_msg(it->dead_reason == NULL, "%s: dead %s: %s", tc->name, it->dead_reason,
                      it->dead_detail);
        ck_assert_ptr_nonnull(it->cmd);
        ck_assert(json_is_object(it->payload));
        ck_assert_int_eq(it->env.reply_partition, REPLY_PART);
        ck_assert_int_eq(it->env.expected_version, -1);
    }
    ck_assert_msg(it->recordable == tc->recordable, "%s: recordable %d", tc->name, it->recordable);
    if (tc->recordable) {
        ck_assert_str_eq(it->tenant, tc->tenant);
        ck_assert_str_eq(it->idem_key, tc->key);
    }
    if (tc->reason && strcmp(tc->reason, "invalid-payload") == 0) {
        json_t *errors = json_loads(it->dead_detail, 0, NULL);
        ck_assert_msg(json_is_array(errors) && json_array_size(errors) > 0,
                      "dead_detail is not an array of errors: %s", it->dead_detail);
        ck_assert_ptr_nonnull(jstr(json_array_get(errors, 0), "pointer"));
        json_decref(errors);
    }

    batch_apply(&b);
    ck_assert_int_eq(it->http_status, tc->http);
    if (!tc->recordable) {
        ck_assert_int_eq(it->state, ITEM_REJECTED);
        ck_assert_ptr_null(it->body);
    } else if (tc->reason) {
        ck_assert_int_eq(it->state, ITEM_REJECTED);
        ck_assert_int_eq(json_integer_value(json_object_get(it->body, "status")), tc->http);
        ck_assert_str_eq(jstr(it->body, "command_id"), U1);
        ck_assert_ptr_nonnull(jstr(it->body, "type"));
        if (tc->problem)
            ck_assert_str_eq(jstr(it->body, "type"), tc->problem);
        if (strcmp(tc->reason, "invalid-payload") == 0)
            ck_assert(json_is_array(json_object_get(it->body, "errors")));
    } else {
        ck_assert_int_eq(it->state, ITEM_APPLIED);
    }
    batch_clear(&b);
}
END_TEST

/* ---- scenarios: loads + messages -> outcomes and rows ---- */

typedef struct {
    const char *tenant, *type, *id;
    long long version;
    const char *state; /* single-quoted JSON */
    bool deleted;
} aload;

typedef struct {
    const char *tenant, *key, *id, *status;
    int http;
    const char *result; /* single-quoted JSON */
} cload;

typedef struct {
    int partition;
    long long next; /* 0: no entry */
} oload;

typedef struct {
    item_state state;
    int http;
    long long version;   /* applied: the new version; rejected: current_version, -1: none */
    const char *problem; /* rejected: the body's type; NULL for unrecordable poison */
    long long balance;   /* applied account: the body's state.balance; -1: not checked */
    int dup;             /* duplicate: 1 + index of the item it repeats; 0: a stored command */
    const char *body;    /* duplicate of a stored command: the stored result */
} outcome;

/* clang-format off */
#define APPLIED(code, v, bal)    {.state = ITEM_APPLIED, .http = (code), .version = (v), \
                                  .balance = (bal)}
#define REJECTED(code, prob, cv) {.state = ITEM_REJECTED, .http = (code), \
                                  .problem = "/problems/" prob, .version = (cv)}
#define UNRECORDABLE             {.state = ITEM_REJECTED, .http = 0, .version = -1}
#define DUP_OF(i, code)          {.state = ITEM_DUPLICATE, .http = (code), .dup = (i) + 1}
#define DUP_STORED(code, b)      {.state = ITEM_DUPLICATE, .http = (code), .body = (b)}
#define SKIPPED                  {.state = ITEM_SKIPPED, .version = -1}
/* clang-format on */

typedef struct {
    const char *name;
    aload aggs[3]; /* ends at type NULL */
    cload cmds[2]; /* ends at id NULL */
    oload offs[2]; /* ends at next 0 */
    mspec msgs[MAXM];
    outcome want[MAXM];
    const char *agg_rows; /* unordered */
    const char *command_rows;
    const char *outbox_rows;
    const char *offset_rows;
} scase;

#define ACC(bal) "{'owner':'a','balance':" #bal ",'status':'open'}"
#define AROW(t, prev, v, st)                                                                       \
    "{'tenant':'" t "','type':'account','id':'acc-1','prev_version':" #prev ",'version':" #v       \
    ",'state':" st ",'deleted':false}"
#define CROW(id, st, code, v)                                                                      \
    "{'id':'" id "','status':'" st "','http_status':" #code ",'version':" #v "}"
#define OROW(v, ev, id) "{'version':" #v ",'event_type':'" ev "','command_id':'" id "'}"
#define OFFROW(p, n)                                                                               \
    "{'group_id':'" GROUP "','topic':'commands','partition':" #p ",'next_offset':" #n "}"

/* Laid out by hand: clang-format would split the row strings at every macro call. */
/* clang-format off */
static const scase scases[] = {
    {"open, deposit 100, withdraw 30 on an empty store",
     .msgs = {OPEN(U1), DEPOSIT(U2, 100), WITHDRAW(U3, 30)},
     .want = {APPLIED(201, 1, 0), APPLIED(200, 2, 100), APPLIED(200, 3, 70)},
     .agg_rows = "[" AROW("t1", 0, 3, ACC(70)) "]",
     .command_rows =
         "[{'id':'" U1 "','tenant':'t1','idempotency_key':'" U1 "','type':'account.open',"
         "'aggregate_type':'account','aggregate_id':'acc-1','status':'applied','http_status':201,"
         "'version':1,'partition':0,'offset':0,'result':{'command_id':'" U1 "','version':1}},"
         "{'id':'" U2 "','type':'account.deposit','status':'applied','http_status':200,"
         "'version':2,'offset':1},"
         "{'id':'" U3 "','type':'account.withdraw','status':'applied','http_status':200,"
         "'version':3,'offset':2}]",
     .outbox_rows =
         "[{'tenant':'t1','aggregate_type':'account','aggregate_id':'acc-1','version':1,"
         "'event_type':'account.opened','command_id':'" U1 "','payload':{'command_id':'" U1 "',"
         "'command_type':'account.open','aggregate_type':'account','aggregate_id':'acc-1',"
         "'version':1,'payload':{'owner':'a'},'state':" ACC(0) "}},"
         "{'version':2,'event_type':'account.deposited','command_id':'" U2 "',"
         "'payload':{'payload':{'amount':100},'state':" ACC(100) "}},"
         "{'version':3,'event_type':'account.withdrawn','command_id':'" U3 "',"
         "'payload':{'payload':{'amount':30},'state':" ACC(70) "}}]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"overdraw after open and deposit is rejected, the rest is written",
     .msgs = {OPEN(U1), DEPOSIT(U2, 10), WITHDRAW(U3, 50)},
     .want = {APPLIED(201, 1, 0), APPLIED(200, 2, 10), REJECTED(422, "invariant-violated", 2)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(10)) "]",
     .command_rows = "[" CROW(U1, "applied", 201, 1) "," CROW(U2, "applied", 200, 2) ","
                     CROW(U3, "rejected", 422, 2) "]",
     .outbox_rows = "[" OROW(1, "account.opened", U1) "," OROW(2, "account.deposited", U2) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"overdraw alone writes no aggregate row and no event",
     .aggs = {{"t1", "account", "acc-1", 4, ACC(10), false}},
     .msgs = {WITHDRAW(U1, 11)},
     .want = {REJECTED(422, "invariant-violated", 4)},
     .agg_rows = "[]",
     .command_rows = "[{'id':'" U1 "','status':'rejected','http_status':422,'version':4,"
                     "'aggregate_type':'account','result':{'type':'/problems/invariant-violated',"
                     "'current_version':4}}]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"expected_version: mismatch is 412, a match applies",
     .msgs = {OPEN(U1, EV(0)), DEPOSIT(U2, 5, EV(0)), DEPOSIT(U3, 5, EV(1))},
     .want = {APPLIED(201, 1, 0), REJECTED(412, "version-mismatch", 1), APPLIED(200, 2, 5)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(5)) "]",
     .command_rows = "[" CROW(U1, "applied", 201, 1) "," CROW(U2, "rejected", 412, 1) ","
                     CROW(U3, "applied", 200, 2) "]",
     .outbox_rows = "[" OROW(1, "account.opened", U1) "," OROW(2, "account.deposited", U3) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"expected_version against a loaded aggregate",
     .aggs = {{"t1", "account", "acc-1", 4, ACC(10), false}},
     .msgs = {DEPOSIT(U1, 5, EV(4)), WITHDRAW(U2, 1, EV(4)), WITHDRAW(U3, 1, EV(3))},
     .want = {APPLIED(200, 5, 15), REJECTED(412, "version-mismatch", 5),
              REJECTED(412, "version-mismatch", 5)},
     .agg_rows = "[" AROW("t1", 4, 5, ACC(15)) "]",
     .command_rows = "[" CROW(U1, "applied", 200, 5) "," CROW(U2, "rejected", 412, 5) ","
                     CROW(U3, "rejected", 412, 5) "]",
     .outbox_rows = "[" OROW(5, "account.deposited", U1) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"expected_version * (If-Match: *): the aggregate must exist",
     .msgs = {OPEN(U1, EV(ENVELOPE_VERSION_EXISTS)), OPEN(U2), DEPOSIT(U3, 5, EV(ENVELOPE_VERSION_EXISTS))},
     .want = {REJECTED(412, "version-mismatch", 0), APPLIED(201, 1, 0), APPLIED(200, 2, 5)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(5)) "]",
     .command_rows = "[" CROW(U1, "rejected", 412, null) "," CROW(U2, "applied", 201, 1) ","
                     CROW(U3, "applied", 200, 2) "]",
     .outbox_rows = "[" OROW(1, "account.opened", U2) "," OROW(2, "account.deposited", U3) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"same key, different command ids: the second repeats the first",
     .msgs = {OPEN(U1, .key = "k1"), DEPOSIT(U2, 5, .key = "k1"), DEPOSIT(U3, 7, .key = "k3")},
     .want = {APPLIED(201, 1, 0), DUP_OF(0, 201), APPLIED(200, 2, 7)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(7)) "]",
     .command_rows = "[{'id':'" U1 "','idempotency_key':'k1','status':'applied'},"
                     "{'id':'" U3 "','idempotency_key':'k3','status':'applied','version':2}]",
     .outbox_rows = "[" OROW(1, "account.opened", U1) "," OROW(2, "account.deposited", U3) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"the same command delivered twice",
     .msgs = {OPEN(U1), DEPOSIT(U2, 5), DEPOSIT(U2, 5)},
     .want = {APPLIED(201, 1, 0), APPLIED(200, 2, 5), DUP_OF(1, 200)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(5)) "]",
     .command_rows = "[" CROW(U1, "applied", 201, 1) "," CROW(U2, "applied", 200, 2) "]",
     .outbox_rows = "[" OROW(1, "account.opened", U1) "," OROW(2, "account.deposited", U2) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"a rejection is repeated too, and leaves the aggregate alone",
     .aggs = {{"t1", "account", "acc-1", 1, ACC(0), false}},
     .msgs = {WITHDRAW(U1, 5, .key = "k1"), WITHDRAW(U2, 5, .key = "k1"), DEPOSIT(U3, 5)},
     .want = {REJECTED(422, "invariant-violated", 1), DUP_OF(0, 422), APPLIED(200, 2, 5)},
     .agg_rows = "[" AROW("t1", 1, 2, ACC(5)) "]",
     .command_rows = "[" CROW(U1, "rejected", 422, 1) "," CROW(U3, "applied", 200, 2) "]",
     .outbox_rows = "[" OROW(2, "account.deposited", U3) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"same key and aggregate id in two tenants: two aggregates",
     .msgs = {OPEN(U1, .key = "k1", .tenant = "t1"), OPEN(U2, .key = "k1", .tenant = "t2"),
              DEPOSIT(U3, 9, .tenant = "t2")},
     .want = {APPLIED(201, 1, 0), APPLIED(201, 1, 0), APPLIED(200, 2, 9)},
     .agg_rows = "[" AROW("t2", 0, 2, ACC(9)) "," AROW("t1", 0, 1, ACC(0)) "]",
     .command_rows = "[{'id':'" U1 "','tenant':'t1','idempotency_key':'k1','version':1},"
                     "{'id':'" U2 "','tenant':'t2','idempotency_key':'k1','version':1},"
                     "{'id':'" U3 "','tenant':'t2','version':2}]",
     .outbox_rows = "[{'tenant':'t1','version':1},{'tenant':'t2','version':1},"
                    "{'tenant':'t2','version':2}]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"stored applied command: answered from its stored result",
     .cmds = {{"t1", "k1", U9, "applied", 201, "{'command_id':'" U9 "','version':1}"}},
     .msgs = {OPEN(U1, .key = "k1")},
     .want = {DUP_STORED(201, "{'command_id':'" U9 "','version':1}")},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"stored rejected command, same id redelivered",
     .cmds = {{"t1", U1, U1, "rejected", 422, "{'type':'/problems/invariant-violated'}"}},
     .msgs = {WITHDRAW(U1, 5)},
     .want = {DUP_STORED(422, "{'type':'/problems/invariant-violated'}")},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"same command id under another key: a producer retry, not a second command",
     .msgs = {OPEN(U1, .key = "k1"), DEPOSIT(U2, 5, .key = "k2"), DEPOSIT(U2, 5, .key = "k9")},
     .want = {APPLIED(201, 1, 0), APPLIED(200, 2, 5), DUP_OF(1, 200)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(5)) "]",
     .command_rows = "[" CROW(U1, "applied", 201, 1) "," CROW(U2, "applied", 200, 2) "]",
     .outbox_rows = "[" OROW(1, "account.opened", U1) "," OROW(2, "account.deposited", U2) "]",
     .offset_rows = "[" OFFROW(0, 3) "]"},

    {"stored command with the same id under another key: answered from its result",
     .cmds = {{"t1", "k1", U1, "applied", 201, "{'command_id':'" U1 "','version':1}"}},
     .msgs = {OPEN(U1, .key = "other")},
     .want = {DUP_STORED(201, "{'command_id':'" U1 "','version':1}")},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"stored accepted command under the same key, another id: 409 in flight, nothing written",
     .cmds = {{"t1", "k1", U9, "accepted", 0, NULL}},
     .msgs = {OPEN(U1, .key = "k1")},
     .want = {DUP_STORED(409, "{'type':'/problems/in-flight','title':'A request with this "
                              "Idempotency-Key is still being processed','status':409,"
                              "'command_id':'" U9 "'}")},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"stored accepted command with the same id: applied normally",
     .cmds = {{"t1", "k1", U1, "accepted", 202, NULL}},
     .msgs = {OPEN(U1, .key = "k1")},
     .want = {APPLIED(201, 1, 0)},
     .agg_rows = "[" AROW("t1", 0, 1, ACC(0)) "]",
     .command_rows = "[" CROW(U1, "applied", 201, 1) "]",
     .outbox_rows = "[" OROW(1, "account.opened", U1) "]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"loaded aggregate: deposit bumps its version",
     .aggs = {{"t1", "account", "acc-1", 4, ACC(10), false}},
     .msgs = {DEPOSIT(U1, 5)},
     .want = {APPLIED(200, 5, 15)},
     .agg_rows = "[" AROW("t1", 4, 5, ACC(15)) "]",
     .command_rows = "[" CROW(U1, "applied", 200, 5) "]",
     .outbox_rows = "[{'version':5,'event_type':'account.deposited',"
                    "'payload':{'command_id':'" U1 "','command_type':'account.deposit',"
                    "'aggregate_type':'account','aggregate_id':'acc-1','version':5,"
                    "'payload':{'amount':5},'state':" ACC(15) "}}]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"loaded aggregate in another tenant is not this one",
     .aggs = {{"t2", "account", "acc-1", 4, ACC(10), false}},
     .msgs = {DEPOSIT(U1, 5)},
     .want = {REJECTED(422, "aggregate-not-found", 0)},
     .agg_rows = "[]",
     .command_rows = "[" CROW(U1, "rejected", 422, null) "]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"deleted account: deposit finds no aggregate",
     .aggs = {{"t1", "account", "acc-1", 4, NULL, true}},
     .msgs = {DEPOSIT(U1, 5)},
     .want = {REJECTED(422, "aggregate-not-found", 4)},
     .agg_rows = "[]",
     .command_rows = "[" CROW(U1, "rejected", 422, 4) "]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"document.create on a deleted document: created again at the next version",
     .aggs = {{"t1", "document", "doc-1", 3, NULL, true}},
     .msgs = {{MSG(U1, "document.create", "doc-1", "{'title':'x'}")}},
     .want = {APPLIED(201, 4, -1)},
     .agg_rows = "[{'tenant':'t1','type':'document','id':'doc-1','prev_version':3,'version':4,"
                 "'state':{'title':'x'},'deleted':false}]",
     .command_rows = "[{'id':'" U1 "','aggregate_type':'document','status':'applied',"
                     "'http_status':201,'version':4}]",
     .outbox_rows = "[{'aggregate_type':'document','aggregate_id':'doc-1','version':4,"
                    "'event_type':'document.created'}]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"document.delete writes a deleted row with no state",
     .aggs = {{"t1", "document", "doc-1", 1, "{'a':1}", false}},
     .msgs = {{MSG(U1, "document.delete", "doc-1", "{}")},
              {MSG(U2, "document.patch", "doc-1", "{'a':2}")}},
     .want = {APPLIED(200, 2, -1), REJECTED(422, "aggregate-not-found", 2)},
     .agg_rows = "[{'tenant':'t1','type':'document','id':'doc-1','prev_version':1,'version':2,"
                 "'state':null,'deleted':true}]",
     .command_rows = "[" CROW(U1, "applied", 200, 2) "," CROW(U2, "rejected", 422, 2) "]",
     .outbox_rows = "[{'version':2,'event_type':'document.deleted','payload':{'state':null}}]",
     .offset_rows = "[" OFFROW(0, 2) "]"},

    {"stored offset 5: offsets 3 and 4 are skipped, 5 and 6 processed",
     .aggs = {{"t1", "account", "acc-1", 2, ACC(100), false}},
     .offs = {{0, 5}},
     .msgs = {OPEN(U1, .offset = 3), DEPOSIT(U2, 100, .offset = 4), DEPOSIT(U3, 5, .offset = 5),
              WITHDRAW(U4, 30, .offset = 6)},
     .want = {SKIPPED, SKIPPED, APPLIED(200, 3, 105), APPLIED(200, 4, 75)},
     .agg_rows = "[" AROW("t1", 2, 4, ACC(75)) "]",
     .command_rows = "[{'id':'" U3 "','offset':5,'version':3},"
                     "{'id':'" U4 "','offset':6,'version':4}]",
     .outbox_rows = "[" OROW(3, "account.deposited", U3) "," OROW(4, "account.withdrawn", U4) "]",
     .offset_rows = "[" OFFROW(0, 7) "]"},

    {"stored offset past the batch: everything skipped, no offset row",
     .offs = {{0, 10}},
     .msgs = {OPEN(U1, .offset = 3), DEPOSIT(U2, 100, .offset = 4)},
     .want = {SKIPPED, SKIPPED},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[]"},

    {"stored offset equal to the batch end: no offset row",
     .offs = {{0, 5}},
     .msgs = {OPEN(U1, .offset = 3), DEPOSIT(U2, 100, .offset = 4)},
     .want = {SKIPPED, SKIPPED},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[]"},

    {"a stored offset on one partition leaves the other alone",
     .offs = {{2, 8}},
     .msgs = {OPEN(U1, .partition = 2, .offset = 7), OPEN(U2, .partition = 0, .offset = 7),
              DEPOSIT(U3, 5, .partition = 2, .offset = 8)},
     .want = {SKIPPED, APPLIED(201, 1, 0), APPLIED(200, 2, 5)},
     .agg_rows = "[" AROW("t1", 0, 2, ACC(5)) "]",
     .command_rows = "[{'id':'" U2 "','partition':0,'offset':7},"
                     "{'id':'" U3 "','partition':2,'offset':8}]",
     .outbox_rows = "[" OROW(1, "account.opened", U2) "," OROW(2, "account.deposited", U3) "]",
     .offset_rows = "[" OFFROW(2, 9) "," OFFROW(0, 8) "]"},

    {"poison: unknown command recorded, bad envelope not, both advance the offset",
     .msgs = {{MSG(U1, "account.frobnicate", "acc-1", "{}"), .partition = 1, .offset = 10},
              OPEN("not-a-uuid", .partition = 1, .offset = 11),
              OPEN(U3, .partition = 1, .offset = 12)},
     .want = {REJECTED(400, "unknown-command", -1), UNRECORDABLE, APPLIED(201, 1, 0)},
     .agg_rows = "[" AROW("t1", 0, 1, ACC(0)) "]",
     .command_rows = "[{'id':'" U1 "','type':'account.frobnicate','aggregate_type':'account',"
                     "'aggregate_id':'acc-1','status':'rejected','http_status':400,"
                     "'version':null,'partition':1,'offset':10},"
                     "{'id':'" U3 "','status':'applied','partition':1,'offset':12}]",
     .outbox_rows = "[" OROW(1, "account.opened", U3) "]",
     .offset_rows = "[" OFFROW(1, 13) "]"},

    {"poison: unknown type without a dot",
     .msgs = {{MSG(U1, "frobnicate", "x-1", "{}")}},
     .want = {REJECTED(400, "unknown-command", -1)},
     .agg_rows = "[]",
     .command_rows = "[{'id':'" U1 "','type':'frobnicate','aggregate_type':'frobnicate',"
                     "'aggregate_id':'x-1','status':'rejected'}]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},

    {"poison: unrecordable messages only still advance the offset",
     .msgs = {OPEN(U1, .drop = "ce_specversion", .offset = 4), OPEN("x", .offset = 5)},
     .want = {UNRECORDABLE, UNRECORDABLE},
     .agg_rows = "[]",
     .command_rows = "[]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 6) "]"},

    {"poison: a payload failing the schema is recorded with its errors",
     .msgs = {DEPOSIT(U1, -1)},
     .want = {REJECTED(400, "invalid-payload", -1)},
     .agg_rows = "[]",
     .command_rows = "[{'id':'" U1 "','aggregate_type':'account','status':'rejected',"
                     "'http_status':400,'result':{'type':'/problems/invalid-payload',"
                     "'errors':[{'pointer':'/amount','keyword':'minimum',"
                     "'message':'must be >= 1'}]}}]",
     .outbox_rows = "[]",
     .offset_rows = "[" OFFROW(0, 1) "]"},
};
/* clang-format on */

static void load_scenario(batch *b, const scase *sc)
{
    for (size_t i = 0; i < N(sc->offs) && sc->offs[i].next; i++)
        batch_load_offset(b, sc->offs[i].partition, sc->offs[i].next);
    for (size_t i = 0; i < N(sc->cmds) && sc->cmds[i].id; i++) {
        const cload *c = &sc->cmds[i];
        char *result = c->result ? dq(c->result) : NULL;
        batch_load_command(b, c->tenant, c->key, c->id, c->status, c->http, result);
        free(result);
    }
    for (size_t i = 0; i < N(sc->aggs) && sc->aggs[i].type; i++) {
        const aload *a = &sc->aggs[i];
        char *state = a->state ? dq(a->state) : NULL;
        ck_assert_int_eq(
            batch_load_aggregate(b, a->tenant, a->type, a->id, a->version, state, a->deleted), 0);
        free(state);
    }
}

/* Decodes, loads and applies a scenario into a fresh b; returns the number of messages. */
static size_t run_scenario(batch *b, const scase *sc)
{
    size_t n = count_msgs(sc->msgs, MAXM);
    decode(b, sc->msgs, n);
    load_scenario(b, sc);
    batch_apply(b);
    return n;
}

static void check_outcome(const scase *sc, const batch *b, size_t i)
{
    const batch_item *it = &b->items[i];
    const outcome *w = &sc->want[i];
    ck_assert_msg(it->state == w->state, "%s: item %zu state %d, want %d (%s)", sc->name, i,
                  it->state, w->state, it->dead_reason ? it->dead_reason : "");
    ck_assert_msg(it->http_status == w->http, "%s: item %zu http %d, want %d", sc->name, i,
                  it->http_status, w->http);
    switch (w->state) {
    case ITEM_APPLIED: {
        ck_assert_int_eq(it->version, w->version);
        ck_assert_str_eq(jstr(it->body, "status"), "applied");
        ck_assert_str_eq(jstr(it->body, "command_id"), it->env.id);
        ck_assert_int_eq(json_integer_value(json_object_get(it->body, "version")), w->version);
        if (w->balance >= 0) {
            json_t *bal = json_object_get(json_object_get(it->body, "state"), "balance");
            ck_assert_msg(json_is_integer(bal) && json_integer_value(bal) == w->balance,
                          "%s: item %zu balance %lld, want %lld", sc->name, i,
                          json_integer_value(bal), w->balance);
        }
        char want_event[128];
        snprintf(want_event, sizeof(want_event), "%s/%s/%s/%lld", it->tenant,
                 domain_command_aggregate(it->cmd), it->env.subject, w->version);
        ck_assert_str_eq(it->event_id, want_event);
        ck_assert_str_eq(jstr(json_object_get(it->body, "event"), "id"), want_event);
        break;
    }
    case ITEM_REJECTED:
        if (!w->problem) {
            ck_assert(!it->recordable);
            ck_assert_ptr_null(it->body);
            break;
        }
        ck_assert_str_eq(jstr(it->body, "type"), w->problem);
        ck_assert_int_eq(json_integer_value(json_object_get(it->body, "status")), w->http);
        ck_assert_str_eq(jstr(it->body, "command_id"), it->env.id);
        if (w->version >= 0) {
            json_t *cv = json_object_get(it->body, "current_version");
            ck_assert_msg(json_is_integer(cv) && json_integer_value(cv) == w->version,
                          "%s: item %zu current_version %lld, want %lld", sc->name, i,
                          json_integer_value(cv), w->version);
        } else {
            ck_assert_ptr_null(json_object_get(it->body, "current_version"));
        }
        break;
    case ITEM_DUPLICATE:
        if (w->dup) {
            const batch_item *first = &b->items[w->dup - 1];
            ck_assert_int_eq(it->http_status, first->http_status);
            ck_assert_msg(json_equal(it->body, first->body), "%s: item %zu body differs", sc->name,
                          i);
        } else {
            json_t *want = J(w->body);
            ck_assert_msg(json_equal(it->body, want), "%s: item %zu body differs", sc->name, i);
            json_decref(want);
        }
        break;
    case ITEM_SKIPPED:
    case ITEM_NEW:
        ck_assert_ptr_null(it->body);
        break;
    }
}

START_TEST(each_scenario_is_decided_as_written)
{
    const scase *sc = &scases[_i];
    batch b;
    size_t n = run_scenario(&b, sc);
    for (size_t i = 0; i < n; i++)
        check_outcome(sc, &b, i);
    size_t count;
    char *rows = batch_aggregate_rows(&b, &count);
    check_rows("aggregate rows", rows, count, sc->agg_rows, false);
    rows = batch_command_rows(&b, &count);
    check_rows("command rows", rows, count, sc->command_rows, true);
    rows = batch_outbox_rows(&b, &count);
    check_rows("outbox rows", rows, count, sc->outbox_rows, true);
    rows = batch_offset_rows(&b, &count);
    check_rows("offset rows", rows, count, sc->offset_rows, true);
    batch_clear(&b);
}
END_TEST

/* Everything a batch writes and answers, as one string. */
static char *snapshot(const batch *b)
{
    size_t count;
    char *parts[4] = {batch_aggregate_rows(b, &count), batch_command_rows(b, &count),
                      batch_outbox_rows(b, &count), batch_offset_rows(b, &count)};
    char *s = xasprintf("%s\n%s\n%s\n%s", parts[0], parts[1], parts[2], parts[3]);
    for (size_t i = 0; i < 4; i++)
        free(parts[i]);
    for (size_t i = 0; i < b->n; i++) {
        char *r = batch_reply(&b->items[i]);
        char *t = xasprintf("%s\n%d %s", s, b->items[i].state, r);
        free(s), free(r);
        s = t;
    }
    return s;
}

/* A retry after a rollback resets the batch, reloads the same rows and must decide the same. */
START_TEST(a_retry_after_a_rollback_decides_the_same)
{
    const scase *sc = &scases[_i];
    batch b;
    size_t n = run_scenario(&b, sc);
    char *first = snapshot(&b);

    batch_reset(&b);
    ck_assert_int_eq(b.n, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(b.items[i].state, ITEM_NEW);
        ck_assert_ptr_null(b.items[i].body);
        ck_assert_ptr_null(b.items[i].event_id);
    }
    size_t count;
    free(batch_command_rows(&b, &count));
    ck_assert_uint_eq(count, 0);
    free(batch_aggregate_rows(&b, &count));
    ck_assert_uint_eq(count, 0);

    load_scenario(&b, sc);
    batch_apply(&b);
    char *second = snapshot(&b);
    ck_assert_msg(strcmp(first, second) == 0, "%s: retry differs:\n%s\n----\n%s", sc->name, first,
                  second);
    free(first);
    free(second);
    batch_clear(&b);
}
END_TEST

/*
 * A row that cannot be encoded as JSON (here an idempotency key made invalid after decoding, as a
 * bug would) makes its parameter NULL: the processor then isolates the command. Before, the row
 * was left out and the command applied without its idempotency record.
 */
START_TEST(an_unencodable_row_makes_its_parameter_null)
{
    static const mspec m[] = {OPEN(U1, .key = "k1"), DEPOSIT(U2, 5, .key = "k2")};
    batch b;
    decode(&b, m, 2);
    batch_item *it = &b.items[1];
    free(it->env.idempotency_key);
    it->env.idempotency_key = xstrdup("k\xff");
    it->idem_key = it->env.idempotency_key;
    ck_assert_ptr_null(batch_keys_param(&b));
    batch_apply(&b);
    ck_assert_int_eq(it->state, ITEM_APPLIED);
    size_t count;
    ck_assert_ptr_null(batch_command_rows(&b, &count));
    /* The other rows are whole. */
    free(batch_aggregate_rows(&b, &count));
    ck_assert_uint_eq(count, 1);
    batch_clear(&b);
}
END_TEST

/*
 * After PostgreSQL refuses a batch's data: halve until one command is left, try it alone once
 * more, dead-letter it (recorded as rejected), then record nothing of it; then nothing is left
 * to drop. The rest of the batch follows as one range.
 */
START_TEST(a_refused_batch_is_halved_down_to_one_command)
{
    static const mspec m[] = {OPEN(U1), DEPOSIT(U2, 1), DEPOSIT(U3, 2), DEPOSIT(U4, 3)};
    batch b;
    decode(&b, m, 4);
    ck_assert_uint_eq(b.from, 0);
    ck_assert_uint_eq(b.to, 4);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false), BATCH_NARROWED);
    ck_assert_uint_eq(b.to, 2);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false), BATCH_NARROWED);
    ck_assert_uint_eq(b.to, 1);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false), BATCH_RETRY_ALONE);
    ck_assert_ptr_null(b.items[0].dead_reason);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false),
                     BATCH_DEAD_LETTERED);
    ck_assert_str_eq(b.items[0].dead_reason, "rejected-by-postgresql");
    ck_assert_str_eq(b.items[0].dead_detail, "boom");
    ck_assert(!b.items[0].dead_sent);
    ck_assert(b.items[0].recordable);

    /* Its next attempt records it as rejected, and stores the offset past it only. */
    batch_reset(&b);
    batch_apply(&b);
    ck_assert_int_eq(b.items[0].state, ITEM_REJECTED);
    ck_assert_int_eq(b.items[0].http_status, 400);
    ck_assert_int_eq(b.items[1].state, ITEM_NEW); /* outside the range */
    size_t count;
    check_rows("commands", batch_command_rows(&b, &count), 1,
               "[{'id':'" U1 "','status':'rejected','http_status':400}]", true);
    check_rows("offsets", batch_offset_rows(&b, &count), 1, "[{'partition':0,'next_offset':1}]",
               true);
    char *outbox = batch_outbox_rows(&b, &count);
    ck_assert_uint_eq(count, 0);
    free(outbox);

    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false), BATCH_UNRECORDED);
    ck_assert(!b.items[0].recordable);
    batch_reset(&b);
    batch_apply(&b);
    free(batch_command_rows(&b, &count));
    ck_assert_uint_eq(count, 0);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false), BATCH_STUCK);

    /* Committed: the rest of the batch is one range again. */
    ck_assert(batch_next_range(&b));
    ck_assert_uint_eq(b.from, 1);
    ck_assert_uint_eq(b.to, 4);
    batch_reset(&b);
    batch_apply(&b);
    check_rows("offsets", batch_offset_rows(&b, &count), 1, "[{'partition':0,'next_offset':4}]",
               true);
    ck_assert(!batch_next_range(&b));
    batch_clear(&b);
}
END_TEST

/*
 * A unique violation is first taken for a race lost: the range is written again whole, once;
 * refused again, it is halved, and each half gets its one retry too. A command alone goes the
 * way of any refused command.
 */
START_TEST(a_unique_violation_writes_the_range_again_once)
{
    static const mspec m[] = {OPEN(U1), DEPOSIT(U2, 1), DEPOSIT(U3, 2), DEPOSIT(U4, 3)};
    batch b;
    decode(&b, m, 4);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "dup", true), BATCH_RETRIED);
    ck_assert_uint_eq(b.from, 0);
    ck_assert_uint_eq(b.to, 4);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "dup", true), BATCH_NARROWED);
    ck_assert_uint_eq(b.to, 2);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "dup", true), BATCH_RETRIED);
    ck_assert_uint_eq(b.to, 2);
    /* Another kind of refusal of the same range halves it at once. */
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "boom", false), BATCH_NARROWED);
    ck_assert_uint_eq(b.to, 1);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "dup", true), BATCH_RETRY_ALONE);
    ck_assert_int_eq(batch_refused(&b, "rejected-by-postgresql", "dup", true), BATCH_DEAD_LETTERED);
    ck_assert_str_eq(b.items[0].dead_reason, "rejected-by-postgresql");
    ck_assert_str_eq(b.items[0].dead_detail, "dup");
    batch_clear(&b);
}
END_TEST

/*
 * A claim the purge marked abandoned is not a decision (ADR 0020): its own command, arriving
 * late, is applied; another command under its key is held as in flight, like under an accepted
 * claim. Before, "abandoned" was taken for a decision and answered with its empty result.
 */
START_TEST(abandoned_claims_are_undecided)
{
    static const mspec m[] = {OPEN(U1, .key = "k1"), DEPOSIT(U2, 5, .key = "k2")};
    batch b;
    decode(&b, m, 2);
    batch_load_command(&b, "t1", "k1", U1, "abandoned", 0, NULL);
    batch_load_command(&b, "t1", "k2", U9, "abandoned", 0, NULL);
    batch_apply(&b);
    ck_assert_int_eq(b.items[0].state, ITEM_APPLIED);
    ck_assert_int_eq(b.items[0].http_status, 201);
    ck_assert_int_eq(b.items[1].state, ITEM_DUPLICATE);
    ck_assert_int_eq(b.items[1].http_status, 409);
    ck_assert_str_eq(jstr(b.items[1].body, "command_id"), U9);
    size_t count;
    check_rows("commands", batch_command_rows(&b, &count), 1,
               "[{'id':'" U1 "','status':'applied','idempotency_key':'k1'}]", true);
    batch_clear(&b);
}
END_TEST

/* ---- loading aggregate rows ---- */

typedef struct {
    const char *state; /* single-quoted JSON text, or not JSON */
    bool deleted;
    int rc;
} lcase;

static const lcase lcases[] = {
    {"{'a':1}", false, 0}, {NULL, false, 0},  {"5", false, 0}, {"{'a'", false, -1},
    {"", false, -1},       {"{'a'", true, 0}, /* a deleted row's state is not read */
};

START_TEST(a_loaded_aggregate_is_read_or_refused)
{
    const lcase *tc = &lcases[_i];
    static const mspec patch[] = {{MSG(U1, "document.patch", "doc-1", "{'b':2}")}};
    batch b;
    decode(&b, patch, 1);
    char *state = tc->state ? dq(tc->state) : NULL;
    ck_assert_int_eq(batch_load_aggregate(&b, "t1", "document", "doc-1", 7, state, tc->deleted),
                     tc->rc);
    free(state);
    /* A row that does not parse is not taken. */
    ck_assert_uint_eq(strmap_size(b.aggregates), tc->rc == 0 ? 1 : 0);
    batch_clear(&b);
}
END_TEST

/* ---- replies ---- */

static const mspec reply_msgs[] = {
    OPEN(U1, .key = "k1"),        /* applied */
    WITHDRAW(U2, 500),            /* rejected: overdraw */
    DEPOSIT(U3, 5, .key = "k1"),  /* repeats 0 */
    WITHDRAW(U4, 500, .key = U2), /* repeats 1 */
    DEPOSIT(U5, 5, .key = "k9"),  /* repeats the stored command */
};

typedef struct {
    int item;
    const char *command_id;
    const char *status;
    int http;
    bool replayed;
    int body_of; /* the body is this item's; -1: the stored result */
} rcase;

static const rcase rcases[] = {
    {0, U1, "applied", 201, false, 0}, {1, U2, "rejected", 422, false, 1},
    {2, U3, "applied", 201, true, 0},  {3, U4, "rejected", 422, true, 1},
    {4, U5, "applied", 200, true, -1},
};

/* ---- trace context: kept when valid, the processor's span as the event's parent ---- */

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

typedef struct {
    const char *name;
    const char *traceparent, *tracestate;
    bool kept;               /* the command's traceparent is kept (same trace for the event) */
    const char *event_state; /* the event's tracestate, NULL: none */
} tcase_t;

static const tcase_t tcases[] = {
    {"both", TP, "congo=t61rcWkgMzE", true, "congo=t61rcWkgMzE"},
    {"traceparent only", TP, NULL, true, NULL},
    {"tracestate only: dropped", NULL, "congo=t61rcWkgMzE", false, NULL},
    {"invalid traceparent: both dropped", "00-xyz", "congo=1", false, NULL},
    {"invalid tracestate: dropped", TP, "a=1\r\nb", true, NULL},
    {"neither", NULL, NULL, false, NULL},
};

START_TEST(a_valid_trace_context_is_kept_and_an_invalid_one_dropped)
{
    const tcase_t *tc = &tcases[_i];
    mspec m[] = {OPEN(U1, .traceparent = tc->traceparent, .tracestate = tc->tracestate)};
    batch b;
    decode(&b, m, 1);
    const batch_item *it = &b.items[0];
    ck_assert_msg(!it->dead_reason, "%s: dead %s", tc->name, it->dead_reason);
    ck_assert(trace_parent_valid(it->traceparent));
    ck_assert_int_eq(strncmp(it->traceparent, TP, 36) == 0, tc->kept);
    ck_assert_int_eq(strlen(it->trace_id), 32);
    ck_assert_int_eq(strncmp(it->traceparent + 3, it->trace_id, 32), 0);
    batch_apply(&b);
    json_t *rows = batch_outbox_json(&b);
    json_t *row = json_array_get(rows, 0);
    ck_assert_str_eq(jstr(row, "traceparent"), it->traceparent);
    if (tc->event_state)
        ck_assert_str_eq(jstr(row, "tracestate"), tc->event_state);
    else
        ck_assert_ptr_null(json_object_get(row, "tracestate"));
    json_decref(rows);
    size_t n;
    char *cmd_rows = batch_command_rows(&b, &n);
    json_t *cr = json_loads(cmd_rows, 0, NULL);
    free(cmd_rows);
    const json_t *recorded = json_object_get(json_array_get(cr, 0), "traceparent");
    if (tc->kept)
        ck_assert_str_eq(json_string_value(recorded), TP);
    else
        ck_assert(json_is_null(recorded));
    json_decref(cr);
    batch_clear(&b);
}
END_TEST

START_TEST(each_outcome_makes_its_reply)
{
    const rcase *tc = &rcases[_i];
    batch b;
    decode(&b, reply_msgs, N(reply_msgs));
    batch_load_command(&b, "t1", "k9", U9, "applied", 200, "{\"x\":1}");
    batch_apply(&b);
    char *text = batch_reply(&b.items[tc->item]);
    json_t *r = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    ck_assert_msg(r != NULL, "reply is not JSON: %s", text);
    free(text);
    ck_assert_str_eq(jstr(r, "command_id"), tc->command_id);
    ck_assert_str_eq(jstr(r, "status"), tc->status);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "http_status")), tc->http);
    ck_assert(json_is_boolean(json_object_get(r, "replayed")));
    ck_assert_int_eq(json_is_true(json_object_get(r, "replayed")), tc->replayed);
    json_t *want = tc->body_of >= 0 ? json_incref(b.items[tc->body_of].body) : J("{'x':1}");
    ck_assert_ptr_nonnull(want);
    ck_assert_msg(json_equal(json_object_get(r, "body"), want), "reply body differs");
    json_decref(want);
    json_decref(r);
    batch_clear(&b);
}
END_TEST

/* ---- read parameters ---- */

typedef struct {
    const char *name;
    mspec msgs[MAXM];
    const char *partitions;
    const char *keys;       /* unordered */
    const char *aggregates; /* unordered */
} pcase;

static const pcase pcases[] = {
    {"partitions 0 and 2, poison and duplicates",
     {OPEN(U1, .key = "k1", .partition = 0, .offset = 1),
      OPEN("nope", .partition = 2, .offset = 1),
      {MSG(U3, "account.frobnicate", "acc-2", "{}"), .tenant = "t2", .offset = 2},
      {MSG(U4, "document.create", "doc-1", "{}"), .no_tenant = true, .partition = 2, .offset = 2},
      DEPOSIT(U5, -1, .key = "k5", .offset = 3),
      DEPOSIT(U2, 1, .key = "k1", .offset = 4)},
     "{0,2}",
     "[{'tenant':'t1','key':'k1'},{'tenant':'t2','key':'" U3 "'},{'tenant':'" DEFAULT_TENANT
     "','key':'" U4 "'},{'tenant':'t1','key':'k5'},{'tenant':'t1','key':'k1'}]",
     "[{'tenant':'t1','type':'account','id':'acc-1'},{'tenant':'" DEFAULT_TENANT
     "','type':'document','id':'doc-1'},{'tenant':'t1','type':'account','id':'acc-1'}]"},
    {"one partition",
     {OPEN(U1, .partition = 5), DEPOSIT(U2, 1, .partition = 5)},
     "{5}",
     "[{'tenant':'t1','key':'" U1 "'},{'tenant':'t1','key':'" U2 "'}]",
     "[{'tenant':'t1','type':'account','id':'acc-1'},"
     "{'tenant':'t1','type':'account','id':'acc-1'}]"},
    {"empty batch", {{0}}, "{}", "[]", "[]"},
};

START_TEST(the_sql_parameters_list_the_batch)
{
    const pcase *tc = &pcases[_i];
    batch b;
    decode(&b, tc->msgs, count_msgs(tc->msgs, MAXM));
    char *parts = batch_partitions_param(&b);
    ck_assert_str_eq(parts, tc->partitions);
    free(parts);
    check_rows("keys", batch_keys_param(&b), SIZE_MAX, tc->keys, false);
    check_rows("aggregates", batch_aggregates_param(&b), SIZE_MAX, tc->aggregates, false);
    batch_clear(&b);
}
END_TEST

/* The int[] literal at the edges of int: empty, one, negative, the extremes. */
static const struct {
    int v[4];
    size_t n;
    const char *want;
} icases[] = {
    {{0}, 0, "{}"},
    {{7}, 1, "{7}"},
    {{0, -1, 12}, 3, "{0,-1,12}"},
    {{INT_MIN, INT_MAX, INT_MIN, INT_MAX}, 4, "{-2147483648,2147483647,-2147483648,2147483647}"},
};

START_TEST(int_arrays_are_postgresql_array_literals)
{
    char *s = pgconn_int_array(icases[_i].v, icases[_i].n);
    ck_assert_str_eq(s, icases[_i].want);
    free(s);
}
END_TEST

int main(void)
{
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    char err[512] = "";
    reg = domain_registry_load(dir && *dir ? dir : "schemas/domains", err, sizeof(err));
    if (!reg) {
        fprintf(stderr, "loading domains: %s\n", err);
        return EXIT_FAILURE;
    }
    fill(id_255, sizeof(id_255) - 1, 'a');
    fill(id_256, sizeof(id_256) - 1, 'a');
    fill(key_255, sizeof(key_255) - 1, 'k');
    fill(key_3000, sizeof(key_3000) - 1, 'k');
    fill(tenant_65, sizeof(tenant_65) - 1, 't');
    Suite *s = suite_create("batch");
    TCase *tc = tcase_create("decode");
    tcase_add_loop_test(tc, messages_decode_to_commands_or_to_their_problem, 0, N(dcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("apply");
    tcase_add_loop_test(tc, each_scenario_is_decided_as_written, 0, N(scases));
    tcase_add_loop_test(tc, a_retry_after_a_rollback_decides_the_same, 0, N(scases));
    tcase_add_loop_test(tc, a_loaded_aggregate_is_read_or_refused, 0, N(lcases));
    tcase_add_test(tc, an_unencodable_row_makes_its_parameter_null);
    tcase_add_test(tc, a_refused_batch_is_halved_down_to_one_command);
    tcase_add_test(tc, a_unique_violation_writes_the_range_again_once);
    tcase_add_test(tc, abandoned_claims_are_undecided);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_loop_test(tc, each_outcome_makes_its_reply, 0, N(rcases));
    tcase_add_loop_test(tc, a_valid_trace_context_is_kept_and_an_invalid_one_dropped, 0, N(tcases));
    tcase_add_loop_test(tc, the_sql_parameters_list_the_batch, 0, N(pcases));
    tcase_add_loop_test(tc, int_arrays_are_postgresql_array_literals, 0, N(icases));
    suite_add_tcase(s, tc);

    int failed = check_run(s, CK_FORK_GETENV);
    domain_registry_free(reg);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

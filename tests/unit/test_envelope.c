/* test_envelope.c: table-driven tests of the CloudEvents wire contract (common/domain/envelope.h).
 */
#include "checkrun.h"
#include "domain/envelope.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define MAX_SAFE 9007199254740992LL /* 2^53, the largest ce_expectedversion */

/* ---- round trip: envelope -> headers -> envelope ---- */

typedef struct {
    const char *id, *source, *type, *subject, *time, *tenant, *key, *traceparent;
    long long expected_version;
    int reply_partition;
} rcase;

static const rcase rcases[] = {
    {"6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a", "/command-gateway", "account.deposit", NULL, NULL,
     NULL, NULL, NULL, -1, -1},
    {"6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a", "/command-gateway", "account.deposit", "acc-1",
     "2026-11-22T01:02:03.456Z", "acme", "key-1",
     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0, 0},
    {"id-2", "/state-processor", "account.deposited", "acc-2", NULL, "default", NULL, NULL,
     MAX_SAFE, 1 << 20},
    {"id-3", "/command-gateway", "document.patch", "doc/with spaces", NULL, NULL, "caf\xc3\xa9",
     NULL, 7, -1},
    {"id-4", "/command-gateway", "document.create", NULL, NULL, NULL, NULL, NULL, -1, 3},
    {"id-5", "/s", "t", "", NULL, "", "k", NULL, 123456789, 12},
    {"id-6", "/command-gateway", "account.close", "acc-1", NULL, NULL, NULL, NULL,
     ENVELOPE_VERSION_EXISTS, -1}, /* If-Match: * */
};

/* The value of a header in out[], or NULL. */
static const header *find_header(const header *h, size_t n, const char *name)
{
    const header *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(h[i].name, name) == 0) {
            ck_assert_msg(found == NULL, "header %s written twice", name);
            found = &h[i];
        }
    }
    return found;
}

static void check_header(const header *h, size_t n, const char *name, const char *want)
{
    const header *got = find_header(h, n, name);
    if (!want) {
        ck_assert_msg(got == NULL, "header %s written for an absent attribute", name);
        return;
    }
    ck_assert_msg(got != NULL, "header %s missing", name);
    ck_assert_msg(got->len == strlen(want) && memcmp(got->value, want, got->len) == 0,
                  "header %s = '%.*s', want '%s'", name, (int)got->len, got->value, want);
}

static void check_str(const char *attr, const char *got, const char *want)
{
    if (!want)
        ck_assert_msg(got == NULL, "%s = '%s', want absent", attr, got);
    else
        ck_assert_msg(got && strcmp(got, want) == 0, "%s = '%s', want '%s'", attr,
                      got ? got : "(null)", want);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

START_TEST(an_envelope_comes_back_from_its_headers)
{
    const rcase *tc = &rcases[_i];
    envelope e = {
        .id = dup_or_null(tc->id),
        .source = dup_or_null(tc->source),
        .type = dup_or_null(tc->type),
        .subject = dup_or_null(tc->subject),
        .time = dup_or_null(tc->time),
        .tenant = dup_or_null(tc->tenant),
        .idempotency_key = dup_or_null(tc->key),
        .traceparent = dup_or_null(tc->traceparent),
        .expected_version = tc->expected_version,
        .reply_partition = tc->reply_partition,
    };
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t n = envelope_to_headers(&e, h, scratch);

    /* The required headers first, then one per present attribute. */
    size_t want_n = 2;
    const char *opt[] = {tc->id,   tc->source, tc->type, tc->subject,
                         tc->time, tc->tenant, tc->key,  tc->traceparent};
    for (int i = 0; i < N(opt); i++)
        want_n += opt[i] != NULL;
    want_n += tc->expected_version >= 0 || tc->expected_version == ENVELOPE_VERSION_EXISTS;
    want_n += tc->reply_partition >= 0;
    ck_assert_uint_eq(n, want_n);
    ck_assert_str_eq(h[0].name, "ce_specversion");
    check_header(h, n, "ce_specversion", "1.0");
    check_header(h, n, "content-type", "application/json");
    check_header(h, n, "ce_id", tc->id);
    check_header(h, n, "ce_source", tc->source);
    check_header(h, n, "ce_type", tc->type);
    check_header(h, n, "ce_subject", tc->subject);
    check_header(h, n, "ce_time", tc->time);
    check_header(h, n, "ce_tenant", tc->tenant);
    check_header(h, n, "ce_idempotencykey", tc->key);
    check_header(h, n, "ce_traceparent", tc->traceparent);
    char num[32];
    snprintf(num, sizeof(num), "%lld", tc->expected_version);
    check_header(h, n, "ce_expectedversion",
                 tc->expected_version >= 0                         ? num
                 : tc->expected_version == ENVELOPE_VERSION_EXISTS ? "*"
                                                                   : NULL);
    char part[32];
    snprintf(part, sizeof(part), "%d", tc->reply_partition);
    check_header(h, n, "ce_replypartition", tc->reply_partition >= 0 ? part : NULL);

    envelope back = {0};
    char err[256] = "";
    int rc = envelope_from_headers(&back, h, n, err, sizeof(err));
    ck_assert_msg(rc == 0, "decoding failed: %s", err);
    check_str("id", back.id, tc->id);
    check_str("source", back.source, tc->source);
    check_str("type", back.type, tc->type);
    check_str("subject", back.subject, tc->subject);
    check_str("time", back.time, tc->time);
    check_str("tenant", back.tenant, tc->tenant);
    check_str("idempotency_key", back.idempotency_key, tc->key);
    check_str("traceparent", back.traceparent, tc->traceparent);
    ck_assert_int_eq(back.expected_version, tc->expected_version);
    ck_assert_int_eq(back.reply_partition, tc->reply_partition);

    envelope_clear(&back);
    envelope_clear(&e);
    ck_assert_ptr_null(e.id);
    ck_assert_int_eq(e.expected_version, -1);
    ck_assert_int_eq(e.reply_partition, -1);
}
END_TEST

/* ---- decoding ---- */

/* A header for the tables: len -1 means strlen(value). */
typedef struct {
    const char *name;
    const char *value;
    int len;
} hdr;

/* Kept on one line each: clang-format would spread every brace initializer over four. */
// clang-format off
#define SPEC   {"ce_specversion", "1.0", -1}
#define ID     {"ce_id", "id-1", -1}
#define SOURCE {"ce_source", "/command-gateway", -1}
#define TYPE   {"ce_type", "account.deposit", -1}
// clang-format on
#define BASE SPEC, ID, SOURCE, TYPE
/* The tail of a row that must fail with err naming header e (and containing e2). */
#define ERR(e, e2) e, e2, NULL, NULL, -1, -1
/* The tail of a row that must decode to these values. */
#define OK(id, subject, ev, rp) NULL, NULL, id, subject, ev, rp

typedef struct {
    const char *name;
    hdr h[8];
    const char *err;     /* NULL: must decode; else the header err must name */
    const char *err2;    /* another substring of err, or NULL */
    const char *id;      /* when decoded */
    const char *subject; /* when decoded; NULL: absent */
    long long expected_version;
    int reply_partition;
} dcase;

static const dcase dcases[] = {
    {"minimal", {BASE}, OK("id-1", NULL, -1, -1)},
    {"unknown headers ignored",
     {BASE, {"x-other", "v", -1}, {"content-type", "text/plain", -1}},
     OK("id-1", NULL, -1, -1)},
    {"value is not NUL-terminated",
     {SPEC, SOURCE, TYPE, {"ce_id", "abcdef", 3}},
     OK("abc", NULL, -1, -1)},
    {"a NULL value counts as absent", {BASE, {"ce_subject", NULL, 0}}, OK("id-1", NULL, -1, -1)},
    {"last duplicate wins", {BASE, {"ce_id", "id-2", -1}}, OK("id-2", NULL, -1, -1)},
    {"numbers",
     {BASE, {"ce_expectedversion", "0", -1}, {"ce_replypartition", "1048576", -1}},
     OK("id-1", NULL, 0, 1 << 20)},
    {"largest expected version",
     {BASE, {"ce_expectedversion", "9007199254740992", -1}, {"ce_subject", "a", -1}},
     OK("id-1", "a", MAX_SAFE, -1)},

    {"missing ce_specversion", {ID, SOURCE, TYPE}, ERR("ce_specversion", "missing")},
    {"ce_specversion 0.3",
     {{"ce_specversion", "0.3", -1}, ID, SOURCE, TYPE},
     ERR("ce_specversion", "0.3")},
    {"ce_specversion 1.00",
     {{"ce_specversion", "1.00", -1}, ID, SOURCE, TYPE},
     ERR("ce_specversion", NULL)},
    {"ce_specversion with NUL",
     {{"ce_specversion", "1.0\0", 4}, ID, SOURCE, TYPE},
     ERR("ce_specversion", NULL)},
    {"ce_specversion NULL value",
     {{"ce_specversion", NULL, 0}, ID, SOURCE, TYPE},
     ERR("ce_specversion", NULL)},
    {"missing ce_id", {SPEC, SOURCE, TYPE}, ERR("ce_id", "missing")},
    {"empty ce_id", {SPEC, {"ce_id", "", -1}, SOURCE, TYPE}, ERR("ce_id", NULL)},
    {"missing ce_source", {SPEC, ID, TYPE}, ERR("ce_source", "missing")},
    {"empty ce_source", {SPEC, ID, {"ce_source", "", 0}, TYPE}, ERR("ce_source", NULL)},
    {"missing ce_type", {SPEC, ID, SOURCE}, ERR("ce_type", "missing")},
    {"expected version *: the aggregate must exist",
     {BASE, {"ce_expectedversion", "*", -1}},
     OK("id-1", NULL, ENVELOPE_VERSION_EXISTS, -1)},
    {"ce_expectedversion **",
     {BASE, {"ce_expectedversion", "**", -1}},
     ERR("ce_expectedversion", "**")},
    {"ce_expectedversion not a number",
     {BASE, {"ce_expectedversion", "abc", -1}},
     ERR("ce_expectedversion", "abc")},
    {"ce_expectedversion trailing junk",
     {BASE, {"ce_expectedversion", "12x", -1}},
     ERR("ce_expectedversion", NULL)},
    {"ce_expectedversion negative",
     {BASE, {"ce_expectedversion", "-1", -1}},
     ERR("ce_expectedversion", "-1")},
    {"ce_expectedversion empty",
     {BASE, {"ce_expectedversion", "", -1}},
     ERR("ce_expectedversion", NULL)},
    {"ce_expectedversion above 2^53",
     {BASE, {"ce_expectedversion", "9007199254740993", -1}},
     ERR("ce_expectedversion", NULL)},
    {"ce_expectedversion overflow",
     {BASE, {"ce_expectedversion", "99999999999999999999", -1}},
     ERR("ce_expectedversion", NULL)},
    {"ce_expectedversion too long",
     {BASE, {"ce_expectedversion", "0000000000000000000000000000000000000001", -1}},
     ERR("ce_expectedversion", NULL)},
    {"ce_replypartition negative",
     {BASE, {"ce_replypartition", "-2", -1}},
     ERR("ce_replypartition", NULL)},
    {"ce_replypartition too large",
     {BASE, {"ce_replypartition", "1048577", -1}},
     ERR("ce_replypartition", NULL)},
    {"ce_replypartition not a number",
     {BASE, {"ce_replypartition", "p1", -1}},
     ERR("ce_replypartition", NULL)},
    {"NUL inside ce_id", {SPEC, {"ce_id", "ab\0cd", 5}, SOURCE, TYPE}, ERR("ce_id", "NUL")},
    {"NUL inside ce_type",
     {SPEC, ID, SOURCE, {"ce_type", "account\0.x", 10}},
     ERR("ce_type", "NUL")},
    {"NUL inside ce_subject", {BASE, {"ce_subject", "a\0", 2}}, ERR("ce_subject", "NUL")},
    {"NUL inside ce_tenant", {BASE, {"ce_tenant", "\0", 1}}, ERR("ce_tenant", "NUL")},
    /*
     * Regression (common/domain/envelope.c parse_number), as it was before the fix: the value is
     * copied and handed to strtoll(), which stops at an embedded NUL and skips leading white space
     * and
     * '+', so "12\0", " 5" and "+5" decode as numbers instead of failing like every other malformed
     * value.
     */
    {"NUL inside ce_expectedversion",
     {BASE, {"ce_expectedversion", "12\0", 3}},
     ERR("ce_expectedversion", NULL)},
    {"NUL inside ce_replypartition",
     {BASE, {"ce_replypartition", "1\0x", 3}},
     ERR("ce_replypartition", NULL)},
    {"leading space in ce_expectedversion",
     {BASE, {"ce_expectedversion", " 5", -1}},
     ERR("ce_expectedversion", NULL)},
    {"plus sign in ce_expectedversion",
     {BASE, {"ce_expectedversion", "+5", -1}},
     ERR("ce_expectedversion", NULL)},
};

START_TEST(headers_decode_or_name_the_bad_attribute)
{
    const dcase *tc = &dcases[_i];
    header h[N(tc->h)];
    size_t n = 0;
    for (int i = 0; i < N(tc->h) && tc->h[i].name; i++, n++) {
        h[n].name = tc->h[i].name;
        h[n].value = tc->h[i].value;
        h[n].len = tc->h[i].len >= 0 ? (size_t)tc->h[i].len
                   : tc->h[i].value  ? strlen(tc->h[i].value)
                                     : 0;
    }
    envelope e = {0};
    char err[256] = "";
    int rc = envelope_from_headers(&e, h, n, err, sizeof(err));
    if (tc->err) {
        ck_assert_msg(rc == -1, "%s: decoded, want an error naming %s", tc->name, tc->err);
        char want[64];
        snprintf(want, sizeof(want), "header %s", tc->err);
        ck_assert_msg(strstr(err, want) != NULL, "%s: err '%s' lacks '%s'", tc->name, err, want);
        if (tc->err2)
            ck_assert_msg(strstr(err, tc->err2) != NULL, "%s: err '%s' lacks '%s'", tc->name, err,
                          tc->err2);
    } else {
        ck_assert_msg(rc == 0, "%s: %s", tc->name, err);
        check_str("id", e.id, tc->id);
        ck_assert_str_eq(e.source, "/command-gateway");
        ck_assert_str_eq(e.type, "account.deposit");
        check_str("subject", e.subject, tc->subject);
        ck_assert_int_eq(e.expected_version, tc->expected_version);
        ck_assert_int_eq(e.reply_partition, tc->reply_partition);
    }
    envelope_clear(&e);
}
END_TEST

/* ---- envelope_event_id ---- */

static const struct {
    const char *tenant, *aggregate_type, *aggregate_id;
    long long version;
    const char *want;
} icases[] = {
    {"default", "account", "acc-1", 1, "default/account/acc-1/1"},
    {"acme", "document", "d", 0, "acme/document/d/0"},
    {"t", "account", "6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a", MAX_SAFE,
     "t/account/6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a/9007199254740992"},
    {"", "account", "x", 42, "/account/x/42"},
};

START_TEST(an_event_id_names_tenant_type_id_and_version)
{
    char *id = envelope_event_id(icases[_i].tenant, icases[_i].aggregate_type,
                                 icases[_i].aggregate_id, icases[_i].version);
    ck_assert_str_eq(id, icases[_i].want);
    free(id);
}
END_TEST

/* ---- the aggregate id grammar (docs/api.md#identifiers) ---- */

static const struct {
    const char *id;
    size_t len; /* 0: strlen */
    bool valid;
} gcases[] = {
    {"acc-1", 0, true},
    {"a/b", 0, true},
    {"a b?c#d%e", 0, true},
    {"...", 0, true},
    {".x", 0, true},
    {"\xc3\xbc\xe2\x82\xac", 0, true}, /* U+00FC U+20AC */
    {"\xf0\x9f\x98\x80", 0, true},     /* U+1F600 */
    {"\xef\xbf\xbd", 0, true},         /* U+FFFD, a character */
    {"", 0, false},
    {".", 0, false},
    {"..", 0, false},
    {"a\0b", 3, false},             /* NUL */
    {"a\x01", 0, false},            /* C0 */
    {"a\tb", 0, false},             /* C0, tab */
    {"a\x7f", 0, false},            /* DEL */
    {"a\xc2\x85", 0, false},        /* U+0085, C1 */
    {"a\xc2\x9f", 0, false},        /* U+009F, C1 */
    {"a\xc2\xa0", 0, true},         /* U+00A0, just past C1 */
    {"\xef\xb7\x90", 0, false},     /* U+FDD0, noncharacter */
    {"\xef\xbf\xbe", 0, false},     /* U+FFFE, noncharacter */
    {"\xf4\x8f\xbf\xbf", 0, false}, /* U+10FFFF, noncharacter */
    {"\xed\xa0\x80", 0, false},     /* a surrogate */
    {"\xc0\xaf", 0, false},         /* overlong */
};

START_TEST(aggregate_ids_follow_the_grammar)
{
    const char *id = gcases[_i].id;
    size_t len = gcases[_i].len ? gcases[_i].len : strlen(id);
    ck_assert_msg(envelope_aggregate_id_valid(id, len) == gcases[_i].valid, "case %d", _i);
}
END_TEST

START_TEST(aggregate_ids_are_bounded_in_length)
{
    char id[ENVELOPE_MAX_AGGREGATE_ID_LEN + 2];
    memset(id, 'a', sizeof(id));
    ck_assert(envelope_aggregate_id_valid(id, ENVELOPE_MAX_AGGREGATE_ID_LEN));
    ck_assert(!envelope_aggregate_id_valid(id, ENVELOPE_MAX_AGGREGATE_ID_LEN + 1));
}
END_TEST

/* The request's fingerprint travels as ce_requesthash, and a command's must be a UUID. */
START_TEST(a_request_hash_travels_and_is_checked)
{
    static const char hash[] = "2f1c2a4e-0d5b-5c1e-9a57-3f2b1d0c9e8a";
    envelope e = {.id = "6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a",
                  .source = "/command-gateway",
                  .type = "account.deposit",
                  .subject = "acc-1",
                  .request_hash = (char *)hash,
                  .expected_version = -1,
                  .reply_partition = -1};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64], err[256] = "";
    size_t n = envelope_to_headers(&e, h, scratch);
    check_header(h, n, "ce_requesthash", hash);
    envelope back = {0};
    ck_assert_msg(envelope_from_headers(&back, h, n, err, sizeof(err)) == 0, "%s", err);
    check_str("request_hash", back.request_hash, hash);
    ck_assert_msg(envelope_check_command(&back, err, sizeof(err)) == 0, "%s", err);

    free(back.request_hash);
    back.request_hash = strdup("not-a-uuid");
    ck_assert_int_eq(envelope_check_command(&back, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "ce_requesthash") != NULL, "error names the header: %s", err);
    free(back.request_hash);
    back.request_hash = strdup(""); /* empty: as absent */
    ck_assert_msg(envelope_check_command(&back, err, sizeof(err)) == 0, "%s", err);
    envelope_clear(&back);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("envelope");
    TCase *tc = tcase_create("round_trip");
    tcase_add_loop_test(tc, an_envelope_comes_back_from_its_headers, 0, N(rcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("decode");
    tcase_add_loop_test(tc, headers_decode_or_name_the_bad_attribute, 0, N(dcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("event_id");
    tcase_add_loop_test(tc, an_event_id_names_tenant_type_id_and_version, 0, N(icases));
    suite_add_tcase(s, tc);
    tc = tcase_create("aggregate_id");
    tcase_add_loop_test(tc, aggregate_ids_follow_the_grammar, 0, N(gcases));
    tcase_add_test(tc, aggregate_ids_are_bounded_in_length);
    suite_add_tcase(s, tc);
    tc = tcase_create("request_hash");
    tcase_add_test(tc, a_request_hash_travels_and_is_checked);
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

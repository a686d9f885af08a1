/* test_projbatch.c: table-driven tests of the projector's pure core: decode, rows, skips, offsets.
 */

#include "checkrun.h"
#include "projector/projbatch.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static domain_registry *reg;

static void load_registry(void)
{
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    char err[512];
    reg = domain_registry_load(dir ? dir : "schemas/domains", err, sizeof(err));
    ck_assert_msg(reg != NULL, "%s", err);
}

static void free_registry(void)
{
    domain_registry_free(reg);
}

/* A message with the relay's headers for (type, id, version), overridable per case. */
typedef struct msg_spec {
    const char *ce_id; /* NULL: "t1/<type>/<id>/<version>"; "-": no header */
    const char *subject;
    const char *tenant; /* NULL: "t1"; "-": no header */
    const char *time;
    const char *specversion; /* NULL: "1.0" */
    const char *value;
} msg_spec;

static char scratch_id[256];

static void make_msg(kafka_message *m, const msg_spec *s, int partition, long long offset)
{
    memset(m, 0, sizeof(*m));
    m->topic = "events";
    m->partition = partition;
    m->offset = offset;
    m->key = "k";
    m->key_len = 1;
    m->value = s->value;
    m->len = s->value ? strlen(s->value) : 0;
    size_t n = 0;
#define H(name_, v_) (m->headers[n++] = (header){name_, v_, strlen(v_)})
    H("ce_specversion", s->specversion ? s->specversion : "1.0");
    if (!s->ce_id || strcmp(s->ce_id, "-") != 0)
        H("ce_id", s->ce_id ? s->ce_id : scratch_id);
    H("ce_source", "/state-processor");
    H("ce_type", "x.happened");
    if (s->subject)
        H("ce_subject", s->subject);
    if (!s->tenant || strcmp(s->tenant, "-") != 0)
        H("ce_tenant", s->tenant ? s->tenant : "t1");
    if (s->time)
        H("ce_time", s->time);
#undef H
    m->nheaders = n;
}

#define ACC "{\"owner\":\"ada\",\"balance\":5,\"status\":\"open\"}"

static const struct {
    const char *what;
    msg_spec msg;
    const char *reason; /* NULL: projects */
    const char *time;   /* the row's updated_at, when it projects */
} decode_cases[] = {
    {"an account event",
     {.subject = "a1",
      .time = "2026-01-02T03:04:05Z",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":" ACC "}"},
     NULL,
     "2026-01-02T03:04:05Z"},
    {"a delete (state null)",
     {.value = "{\"aggregate_type\":\"document\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":null}"},
     NULL,
     NULL},
    {"without ce_tenant the default tenant",
     {.tenant = "-",
      .ce_id = "t0/account/a1/2",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":" ACC "}"},
     NULL,
     NULL},
    {"a time PostgreSQL cannot store (year 0000) becomes now()",
     {.time = "0000-01-01T00:00:00Z",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":" ACC "}"},
     NULL,
     NULL},
    {"an offset beyond 15:59 becomes now()",
     {.time = "2026-01-02T03:04:05+16:00",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":" ACC "}"},
     NULL,
     NULL},
    {"an offset of 15:59 stays",
     {.time = "2026-01-02T03:04:05-15:59",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":" ACC "}"},
     NULL,
     "2026-01-02T03:04:05-15:59"},
    {"not a time at all becomes now()",
     {.time = "yesterday",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":" ACC "}"},
     NULL,
     NULL},
    {"bad ce_specversion", {.specversion = "0.3", .value = "{}"}, "bad-envelope", NULL},
    {"no ce_id", {.ce_id = "-", .value = "{}"}, "bad-envelope", NULL},
    {"a tenant that is not UTF-8", {.tenant = "\xff\xfe", .value = "{}"}, "bad-envelope", NULL},
    {"no value", {.value = NULL}, "malformed-value", NULL},
    {"not JSON", {.value = "{\"aggregate_type\":"}, "malformed-value", NULL},
    {"a JSON array", {.value = "[1]"}, "malformed-value", NULL},
    {"duplicate members",
     {.value = "{\"aggregate_type\":\"account\",\"aggregate_type\":\"cart\"}"},
     "malformed-value",
     NULL},
    {"no aggregate id",
     {.value = "{\"aggregate_type\":\"account\",\"version\":2,\"state\":{}}"},
     "malformed-value",
     NULL},
    {"an unknown aggregate type",
     {.value = "{\"aggregate_type\":\"rocket\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":{}}"},
     "unknown-aggregate",
     NULL},
    {"no version",
     {.value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"state\":{}}"},
     "bad-version",
     NULL},
    {"version 0",
     {.value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":0,"
               "\"state\":{}}"},
     "bad-version",
     NULL},
    {"version as a string",
     {.value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":\"2\","
               "\"state\":{}}"},
     "bad-version",
     NULL},
    {"no state",
     {.value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2}"},
     "malformed-value",
     NULL},
    {"a state that is an array",
     {.value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":[]}"},
     "malformed-value",
     NULL},
    {"ce_subject names another aggregate",
     {.subject = "a2",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":{}}"},
     "inconsistent-event",
     NULL},
    {"ce_id names another version",
     {.ce_id = "t1/account/a1/3",
      .value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":2,"
               "\"state\":{}}"},
     "inconsistent-event",
     NULL},
};

START_TEST(decodes_or_skips)
{
    const msg_spec *s = &decode_cases[_i].msg;
    /* The relay's event id, from the value when it has one. */
    json_t *v = s->value ? json_loads(s->value, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(v, "aggregate_type"));
    const char *id = json_string_value(json_object_get(v, "aggregate_id"));
    snprintf(scratch_id, sizeof(scratch_id), "t1/%s/%s/%lld", type ? type : "x", id ? id : "x",
             (long long)json_integer_value(json_object_get(v, "version")));
    json_decref(v);
    kafka_message m;
    make_msg(&m, s, 0, 7);
    projbatch b = {0};
    projbatch_decode(&b, reg, &m, 1, "t0");
    const projbatch_item *it = &b.items[0];
    if (decode_cases[_i].reason) {
        ck_assert_msg(it->skip_reason && strcmp(it->skip_reason, decode_cases[_i].reason) == 0,
                      "%s: reason %s, want %s", decode_cases[_i].what,
                      it->skip_reason ? it->skip_reason : "(none)", decode_cases[_i].reason);
        ck_assert_ptr_null(it->proj);
        ck_assert_uint_eq(projbatch_count(&b, NULL), 0);
        ck_assert_uint_eq(projbatch_skipped(&b), 1);
    } else {
        ck_assert_msg(!it->skip_reason, "%s: skipped as %s (%s)", decode_cases[_i].what,
                      it->skip_reason, it->skip_detail);
        ck_assert_ptr_nonnull(it->proj);
        ck_assert_int_eq(it->version, 2);
        ck_assert_str_eq(it->id, "a1");
        ck_assert_str_eq(it->tenant, s->tenant && !strcmp(s->tenant, "-") ? "t0" : "t1");
        if (decode_cases[_i].time)
            ck_assert_str_eq(it->time, decode_cases[_i].time);
        else
            ck_assert_ptr_null(it->time);
        ck_assert_uint_eq(projbatch_count(&b, it->proj), 1);
    }
    projbatch_clear(&b);
}
END_TEST

/* Builds a batch of account events on partitions/offsets given, versions and balances. */
static void account_batch(projbatch *b, size_t n, const char *const *ids, const int *versions,
                          const int *parts, const long long *offsets)
{
    kafka_message *m = calloc(n, sizeof(*m));
    char(*values)[256] = calloc(n, sizeof(*values));
    char(*event_ids)[64] = calloc(n, sizeof(*event_ids)); /* the headers point into these */
    for (size_t i = 0; i < n; i++) {
        snprintf(values[i], sizeof(values[i]),
                 "{\"aggregate_type\":\"account\",\"aggregate_id\":\"%s\",\"version\":%d,"
                 "\"state\":{\"owner\":\"o%d\",\"balance\":%d,\"status\":\"open\"}}",
                 ids[i], versions[i], versions[i], versions[i] * 10);
        snprintf(event_ids[i], sizeof(event_ids[i]), "t1/account/%s/%d", ids[i], versions[i]);
        msg_spec s = {.value = values[i], .ce_id = event_ids[i]};
        make_msg(&m[i], &s, parts[i], offsets[i]);
    }
    projbatch_decode(b, reg, m, n, "t0"); /* copies what it keeps */
    free(event_ids);
    free(values);
    free(m);
}

START_TEST(newest_version_per_row_wins)
{
    const char *ids[] = {"a1", "a2", "a1", "a1"};
    const int versions[] = {3, 1, 5, 4};
    const int parts[] = {0, 0, 0, 0};
    const long long offs[] = {10, 11, 12, 13};
    projbatch b = {0};
    account_batch(&b, 4, ids, versions, parts, offs);
    const projection *acc = domain_registry_projection(reg, "account");
    size_t n;
    char *rows = projbatch_rows(&b, acc, &n);
    ck_assert_uint_eq(n, 2);
    json_t *j = json_loads(rows, 0, NULL);
    free(rows);
    const json_t *a1 = json_array_get(j, 0), *a2 = json_array_get(j, 1);
    ck_assert_str_eq(json_string_value(json_object_get(a1, "id")), "a1");
    ck_assert_int_eq(json_integer_value(json_object_get(a1, "version")), 5);
    ck_assert_str_eq(json_string_value(json_object_get(a1, "balance")), "50");
    ck_assert_str_eq(json_string_value(json_object_get(a1, "owner")), "o5");
    ck_assert(json_is_false(json_object_get(a1, "deleted")));
    ck_assert(json_is_null(json_object_get(a1, "updated_at")));
    ck_assert_int_eq(json_integer_value(json_object_get(a2, "version")), 1);
    json_decref(j);
    /* Other tables get nothing from this batch. */
    rows = projbatch_rows(&b, domain_registry_projection(reg, "cart"), &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_str_eq(rows, "[]");
    free(rows);
    /* A narrower range (isolation) sees only its own items. */
    b.from = 3, b.to = 4;
    rows = projbatch_rows(&b, acc, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(rows, "\"version\":4"));
    free(rows);
    projbatch_clear(&b);
}
END_TEST

START_TEST(a_deleted_row_has_no_declared_values)
{
    snprintf(scratch_id, sizeof(scratch_id), "t1/account/a1/9");
    msg_spec s = {.value = "{\"aggregate_type\":\"account\",\"aggregate_id\":\"a1\",\"version\":9,"
                           "\"state\":null}"};
    kafka_message m;
    make_msg(&m, &s, 1, 0);
    projbatch b = {0};
    projbatch_decode(&b, reg, &m, 1, "t0");
    size_t n;
    char *rows = projbatch_rows(&b, domain_registry_projection(reg, "account"), &n);
    ck_assert_uint_eq(n, 1);
    json_t *all = json_loads(rows, 0, NULL);
    const json_t *row = json_array_get(all, 0);
    ck_assert(json_is_true(json_object_get(row, "deleted")));
    ck_assert(json_is_null(json_object_get(row, "state")));
    ck_assert(json_is_null(json_object_get(row, "owner")));
    ck_assert(json_is_null(json_object_get(row, "balance")));
    ck_assert(json_is_null(json_object_get(row, "status")));
    json_decref(all);
    free(rows);
    projbatch_clear(&b);
}
END_TEST

START_TEST(skipped_rows_keep_the_bytes)
{
    header h[] = {{"ce_specversion", "\xc3\x28", 2}, {"x-nul", "a\0b", 3}, {"x-none", NULL, 0}};
    kafka_message m = {.topic = "events",
                       .partition = 2,
                       .offset = 41,
                       .key = "\x01k",
                       .key_len = 2,
                       .value = "\xff\x00{",
                       .len = 3,
                       .nheaders = 3};
    memcpy(m.headers, h, sizeof(h));
    projbatch b = {0};
    projbatch_decode(&b, reg, &m, 1, "t0");
    size_t n;
    char *rows = projbatch_skipped_rows(&b, "g", &n);
    ck_assert_uint_eq(n, 1);
    json_t *j = json_loads(rows, 0, NULL);
    free(rows);
    const json_t *r = json_array_get(j, 0);
    ck_assert_str_eq(json_string_value(json_object_get(r, "group_id")), "g");
    ck_assert_str_eq(json_string_value(json_object_get(r, "topic")), "events");
    ck_assert_int_eq(json_integer_value(json_object_get(r, "partition")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "kafka_offset")), 41);
    ck_assert_str_eq(json_string_value(json_object_get(r, "reason")), "bad-envelope");
    ck_assert_str_eq(json_string_value(json_object_get(r, "key_hex")), "016b");
    ck_assert_str_eq(json_string_value(json_object_get(r, "value_hex")), "ff007b");
    /* The detail quotes the bad header: still storable text. */
    const char *detail = json_string_value(json_object_get(r, "detail"));
    ck_assert_ptr_nonnull(detail);
    ck_assert_ptr_nonnull(strstr(detail, "ce_specversion"));
    const json_t *hs = json_object_get(r, "headers");
    ck_assert_uint_eq(json_array_size(hs), 3);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(hs, 0), "name")),
                     "ce_specversion");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(hs, 0), "value_hex")),
                     "c328");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(hs, 1), "value_hex")),
                     "610062");
    ck_assert(json_is_null(json_object_get(json_array_get(hs, 2), "value")));
    json_decref(j);

    /* Isolation marks a decoded event as skipped; it leaves the rows. */
    projbatch_clear(&b);
    const char *ids[] = {"a1"};
    const int versions[] = {1}, parts[] = {0};
    const long long offs[] = {5};
    account_batch(&b, 1, ids, versions, parts, offs);
    projbatch_skip(&b, 0, "rejected-by-postgresql", "value too long \xff");
    rows = projbatch_rows(&b, domain_registry_projection(reg, "account"), &n);
    ck_assert_uint_eq(n, 0);
    free(rows);
    rows = projbatch_skipped_rows(&b, "g", &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(rows, "\"detail\":\"value too long ?\""));
    free(rows);
    projbatch_clear(&b);
}
END_TEST

START_TEST(offsets_per_partition_of_the_range)
{
    const char *ids[] = {"a1", "a2", "a3", "a4", "a5"};
    const int versions[] = {1, 1, 1, 1, 1};
    const int parts[] = {0, 3, 0, 3, 1};
    const long long offs[] = {7, 100, 8, 101, 0};
    projbatch b = {0};
    account_batch(&b, 5, ids, versions, parts, offs);
    size_t n;
    char *rows = projbatch_offset_rows(&b, "g", &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(
        rows, "[{\"group_id\":\"g\",\"topic\":\"events\",\"partition\":0,\"next_offset\":9},"
              "{\"group_id\":\"g\",\"topic\":\"events\",\"partition\":3,\"next_offset\":102},"
              "{\"group_id\":\"g\",\"topic\":\"events\",\"partition\":1,\"next_offset\":1}]");
    free(rows);
    /* One event at a time: only its own partition moves. */
    b.from = 1, b.to = 2;
    int p[5];
    long long next[5];
    ck_assert_uint_eq(projbatch_positions(&b, p, next), 1);
    ck_assert_int_eq(p[0], 3);
    ck_assert_int_eq(next[0], 101);
    projbatch_clear(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("projbatch");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, load_registry, free_registry);
    tcase_add_loop_test(tc, decodes_or_skips, 0, N(decode_cases));
    tcase_add_test(tc, newest_version_per_row_wins);
    tcase_add_test(tc, a_deleted_row_has_no_declared_values);
    tcase_add_test(tc, skipped_rows_keep_the_bytes);
    tcase_add_test(tc, offsets_per_partition_of_the_range);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

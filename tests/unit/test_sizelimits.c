/* test_sizelimits.c: http.max_body and message.max.bytes settled from one another (sizelimits.c).
 */

#include "core/rfc3339.h"
#include "sizelimits.h"
#include "auth.h"
#include "checkrun.h"
#include "core/ids.h"
#include "core/trace.h"
#include "domain/envelope.h"
#include "intake.h"
#include "kafka/kafka.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static size_t shipped_envelope; /* of the shipped domains */

/* A fixed envelope for the table, so that its figures read plainly. */
#define E 2000

static const struct {
    const char *name;
    long long max_body;       /* http.max_body; 0: derived */
    const char *max_message;  /* kafka.message.max.bytes; NULL: not set */
    long long want_body;      /* -1: an error */
    long long want_message;   /* the producer's message.max.bytes */
    const char *err_mentions; /* the key the error names */
} cases[] = {
    {"neither set", 0, NULL, KAFKA_DEFAULT_MAX_MESSAGE - E, KAFKA_DEFAULT_MAX_MESSAGE, NULL},
    {"only the body", 500000, NULL, 500000, 500000 + E, NULL},
    {"only the message", 0, "2000000", 2000000 - E, 2000000, NULL},
    {"both, agreeing", 500000, "2000000", 500000, 2000000, NULL},
    {"both, exactly", 998000, "1000000", 998000, 1000000, NULL},
    {"the old 1 MiB default beside librdkafka's", 1048576, "1000000", -1, 0, "http.max_body"},
    {"both, one byte over", 998001, "1000000", -1, 0, "http.max_body"},
    {"no room beside the envelope", 0, "1500", -1, 0, "kafka.message.max.bytes"},
    {"not a number", 0, "1e6", -1, 0, "kafka.message.max.bytes"},
};

START_TEST(body_and_message_bounds_settle_from_one_another)
{
    config_props kafka = {0}, producer = {0};
    if (cases[_i].max_message)
        config_props_set(&kafka, "message.max.bytes", cases[_i].max_message);
    sizelimits l = {0};
    char err[256] = "";
    int rc = sizelimits_settle(cases[_i].max_body, &kafka, E, &producer, &l, err, sizeof(err));
    if (cases[_i].want_body < 0) {
        ck_assert_msg(rc == -1, "%s: accepted", cases[_i].name);
        ck_assert_msg(strstr(err, cases[_i].err_mentions) != NULL, "%s: %s", cases[_i].name, err);
    } else {
        ck_assert_msg(rc == 0, "%s: %s", cases[_i].name, err);
        ck_assert_uint_eq(l.max_body, (size_t)cases[_i].want_body);
        ck_assert_uint_eq(l.max_message, (size_t)cases[_i].want_message);
        ck_assert_uint_eq(l.envelope, E);
        char want[24];
        snprintf(want, sizeof(want), "%lld", cases[_i].want_message);
        ck_assert_str_eq(config_props_get(&producer, "message.max.bytes"), want);
        /* A body at the bound, its envelope at its largest, fits in a message. */
        ck_assert_uint_le(l.max_body + l.envelope, l.max_message);
    }
    config_props_free(&kafka);
    config_props_free(&producer);
}
END_TEST

START_TEST(without_kafka_props_the_defaults_hold)
{
    config_props producer = {0};
    sizelimits l;
    char err[256];
    ck_assert_int_eq(sizelimits_settle(0, NULL, E, &producer, &l, err, sizeof(err)), 0);
    ck_assert_uint_eq(l.max_message, KAFKA_DEFAULT_MAX_MESSAGE);
    config_props_free(&producer);
}
END_TEST

/* The envelope bound holds a real command with every attribute at its longest. */
START_TEST(the_envelope_bound_holds_a_real_command)
{
    char id[IDS_UUID_LEN], now[RFC3339_LEN], tp[TRACE_PARENT_LEN];
    ids_uuid(id);
    rfc3339_now(now);
    trace_child(NULL, tp);
    char agg[INTAKE_MAX_AGGREGATE_LEN + 1], key[INTAKE_MAX_KEY_LEN + 1],
        tenant[AUTH_TENANT_MAX + 1], state[TRACE_STATE_MAX + 1];
    memset(agg, 'a', sizeof(agg) - 1);
    agg[sizeof(agg) - 1] = '\0';
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    memset(tenant, 't', sizeof(tenant) - 1);
    tenant[sizeof(tenant) - 1] = '\0';
    memset(state, 's', sizeof(state) - 1);
    state[sizeof(state) - 1] = '\0';
    envelope e = {.id = id,
                  .source = SIZELIMITS_COMMAND_SOURCE,
                  .type = "account.withdraw",
                  .subject = agg,
                  .time = now,
                  .tenant = tenant,
                  .idempotency_key = key,
                  .traceparent = tp,
                  .tracestate = state,
                  .request_hash = id,
                  .expected_version = ENVELOPE_MAX_VERSION,
                  .reply_partition = 9999};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    size_t real = kafka_message_size(strlen(agg), 0, h, nh);
    ck_assert_uint_le(real, shipped_envelope);
    ck_assert_uint_lt(shipped_envelope, real + 64); /* and not wildly above it */
}
END_TEST

int main(void)
{
    char err[512] = "";
    const char *dir = getenv("CQRS_SCHEMAS_DIR");
    domain_registry *reg =
        domain_registry_load(dir && *dir ? dir : "schemas/domains", err, sizeof(err));
    if (!reg) {
        fprintf(stderr, "loading the domains: %s\n", err);
        return EXIT_FAILURE;
    }
    shipped_envelope = sizelimits_envelope_max(reg);
    fprintf(stderr, "envelope of the shipped domains: %zu bytes; derived http.max_body: %zu\n",
            shipped_envelope, (size_t)KAFKA_DEFAULT_MAX_MESSAGE - shipped_envelope);
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("limits");
    tcase_add_loop_test(tc, body_and_message_bounds_settle_from_one_another, 0, N(cases));
    tcase_add_test(tc, without_kafka_props_the_defaults_hold);
    tcase_add_test(tc, the_envelope_bound_holds_a_real_command);
    suite_add_tcase(s, tc);
    int failed = check_run(s, CK_FORK_GETENV);
    domain_registry_free(reg);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* test_kafka.c: the parts of the Kafka wrapper that need no cluster. */
#include "kafka.h"

#include <check.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    int owned[6];
    size_t n;
    int revoked[4];
    size_t nrevoked;
    int want[6];
    size_t nwant;
} rcases[] = {
    {{1, 2, 3}, 3, {0}, 0, {1, 2, 3}, 3}, /* nothing revoked */
    {{1, 2, 3}, 3, {2}, 1, {1, 3}, 2},    /* one from the middle, order kept */
    {{1, 2, 3}, 3, {3, 1, 2}, 3, {0}, 0}, /* all, in another order */
    {{4, 5}, 2, {6, 7}, 2, {4, 5}, 2},    /* revoked ones not owned */
    {{0}, 0, {1}, 1, {0}, 0},             /* empty set */
    {{9, 8, 9, 7}, 4, {9}, 1, {8, 7}, 2}, /* every copy goes */
};

START_TEST(test_partitions_remove)
{
    int v[6];
    for (size_t i = 0; i < rcases[_i].n; i++)
        v[i] = rcases[_i].owned[i];
    size_t n = kafka_partitions_remove(v, rcases[_i].n, rcases[_i].revoked, rcases[_i].nrevoked);
    ck_assert_uint_eq(n, rcases[_i].nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(v[i], rcases[_i].want[i]);
}
END_TEST

static void no_report(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)d, (void)arg;
}

/* Header sets of every size class: none, short values, values whose length takes two bytes. */
static const struct {
    size_t nh;
    size_t value_len;
    size_t key_len;
} size_cases[] = {{0, 0, 0}, {3, 10, 8}, {12, 200, 255}, {2, 20000, 1}};

/* kafka_message_size() is exactly what librdkafka holds against message.max.bytes. */
START_TEST(test_message_size_matches_librdkafka)
{
    enum { MAX = 60000 };
    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "message.max.bytes", "60000");
    char err[256];
    kafka_producer *p = kafka_producer_new(base, &props, no_report, NULL, err, sizeof(err));
    ck_assert_msg(p != NULL, "%s", err);
    static char values[12][20001];
    header h[12];
    static const char *const names[] = {"a", "ce_id", "ce_idempotencykey", "content-type"};
    for (size_t i = 0; i < size_cases[_i].nh; i++) {
        memset(values[i], 'v', size_cases[_i].value_len);
        h[i] = (header){names[i % 4], values[i], size_cases[_i].value_len};
    }
    static char key[256], value[MAX];
    memset(key, 'k', sizeof(key));
    size_t framing = kafka_message_size(size_cases[_i].key_len, 0, h, size_cases[_i].nh);
    ck_assert_uint_lt(framing, MAX);
    size_t fits = MAX - framing;
    ck_assert_uint_eq(kafka_message_size(size_cases[_i].key_len, fits, h, size_cases[_i].nh), MAX);
    /* No broker: what is not refused at once just waits in the queue. */
    ck_assert_int_eq(kafka_produce(p, "t", 0, key, size_cases[_i].key_len, value, fits, h,
                                   size_cases[_i].nh, NULL),
                     KAFKA_OK);
    ck_assert_int_eq(kafka_produce(p, "t", 0, key, size_cases[_i].key_len, value, fits + 1, h,
                                   size_cases[_i].nh, NULL),
                     KAFKA_ERROR);
    kafka_producer_purge(p);
    kafka_producer_free(p);
    config_props_free(&props);
    event_base_free(base);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka");
    TCase *tc = tcase_create("partitions");
    tcase_add_loop_test(tc, test_partitions_remove, 0, N(rcases));
    tcase_add_loop_test(tc, test_message_size_matches_librdkafka, 0, N(size_cases));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* test_kafka.c: the parts of the Kafka wrapper that need no cluster. */
#include "kafka.h"

#include <check.h>
#include <stdlib.h>

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

int main(void)
{
    Suite *s = suite_create("kafka");
    TCase *tc = tcase_create("partitions");
    tcase_add_loop_test(tc, test_partitions_remove, 0, N(rcases));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

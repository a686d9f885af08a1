/* test_ratelimit.c: the per-tenant token buckets, on a clock the test moves by hand. */

#include "checkrun.h"
#include "ratelimit.h"

#include <check.h>
#include <stdlib.h>

START_TEST(a_burst_then_the_rate)
{
    ratelimit *r = ratelimit_new(10, 5); /* 10 a second, 5 at once */
    long long t = 1000000;
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(ratelimit_take(r, "a", t), 0);
    /* Empty: the next token comes in 100 ms. */
    ck_assert_int_eq(ratelimit_take(r, "a", t), 100000);
    ck_assert_int_eq(ratelimit_take(r, "a", t + 40000), 60000);
    ck_assert_int_eq(ratelimit_take(r, "a", t + 100000), 0);
    ck_assert_int_gt(ratelimit_take(r, "a", t + 100000), 0);
    /* A refused request takes nothing: after a quiet second the bucket is full, not more. */
    t += 10000000;
    int allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += ratelimit_take(r, "a", t) == 0;
    ck_assert_int_eq(allowed, 5);
    ratelimit_free(r);
}
END_TEST

START_TEST(tenants_have_buckets_of_their_own)
{
    ratelimit *r = ratelimit_new(1, 1);
    ck_assert_int_eq(ratelimit_take(r, "a", 0), 0);
    ck_assert_int_eq(ratelimit_take(r, "a", 0), 1000000);
    ck_assert_int_eq(ratelimit_take(r, "b", 0), 0);
    ck_assert_int_eq(ratelimit_take(r, "b", 500000), 500000);
    ratelimit_free(r);
}
END_TEST

/* Over 10 s at 100 a second, a client asking 1000 times a second gets 10 s x 100 + the burst. */
START_TEST(the_long_run_rate_is_the_rate)
{
    ratelimit *r = ratelimit_new(100, 20);
    int allowed = 0;
    for (long long t = 0; t < 10000000; t += 1000)
        allowed += ratelimit_take(r, "t", t) == 0;
    ck_assert_int_ge(allowed, 1000 + 20 - 1);
    ck_assert_int_le(allowed, 1000 + 20);
    ratelimit_free(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("buckets");
    tcase_add_test(tc, a_burst_then_the_rate);
    tcase_add_test(tc, tenants_have_buckets_of_their_own);
    tcase_add_test(tc, the_long_run_rate_is_the_rate);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

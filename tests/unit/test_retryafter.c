/* test_retryafter.c: the Retry-After of a 503, on a clock the test moves by hand. */

#include "checkrun.h"
#include "retryafter.h"

#include <check.h>
#include <stdlib.h>

#define S 1000000LL /* a second, in microseconds */

/* The lowest and highest advice over many draws of the jitter. */
static void advise_range(retry_after *r, long long down_since_us, double load, int drain_s,
                         long long now_us, int *lo, int *hi)
{
    *lo = RETRY_AFTER_MAX_S + 1;
    *hi = 0;
    for (int i = 0; i < 200; i++) {
        int s = retry_after_advise(r, down_since_us, load, drain_s, now_us);
        *lo = s < *lo ? s : *lo;
        *hi = s > *hi ? s : *hi;
    }
}

START_TEST(an_idle_available_gateway_advises_one_second)
{
    retry_after r;
    retry_after_init(&r, 42);
    int lo, hi;
    advise_range(&r, 0, 0, 5, 100 * S, &lo, &hi);
    ck_assert_int_eq(lo, 1);
    ck_assert_int_eq(hi, 1);
}
END_TEST

START_TEST(the_advice_grows_with_the_waiting_room_up_to_its_drain_time)
{
    retry_after r;
    retry_after_init(&r, 42);
    int lo, hi;
    advise_range(&r, 0, 0.5, 10, S, &lo, &hi); /* half full: 5 s, plus up to half again */
    ck_assert_int_eq(lo, 5);
    ck_assert_int_eq(hi, 7);
    advise_range(&r, 0, 1.0, 10, S, &lo, &hi); /* full: the drain time */
    ck_assert_int_eq(lo, 10);
    ck_assert_int_eq(hi, 15);
    advise_range(&r, 0, 3.0, 100, S, &lo, &hi); /* never beyond the cap */
    ck_assert_int_eq(hi, RETRY_AFTER_MAX_S);
}
END_TEST

START_TEST(the_advice_grows_with_an_outage_and_starts_again_with_the_next)
{
    retry_after r;
    retry_after_init(&r, 7);
    int lo, hi;
    advise_range(&r, 10 * S, 0, 5, 10 * S + 1, &lo, &hi); /* just gone: 1 s */
    ck_assert_int_eq(lo, 1);
    ck_assert_int_eq(hi, 1);
    advise_range(&r, 10 * S, 0, 5, 18 * S, &lo, &hi); /* gone 8 s: 1 + 4 s */
    ck_assert_int_eq(lo, 5);
    ck_assert_int_eq(hi, 7);
    advise_range(&r, 10 * S, 0, 5, 1000 * S, &lo, &hi); /* gone long: the cap */
    ck_assert_int_eq(lo, RETRY_AFTER_MAX_S);
    ck_assert_int_eq(hi, RETRY_AFTER_MAX_S);
    /* Back: nothing of the outage remains, and the next one counts from its own start. */
    advise_range(&r, 0, 0, 5, 1001 * S, &lo, &hi);
    ck_assert_int_eq(hi, 1);
    advise_range(&r, 1002 * S, 0, 5, 1006 * S, &lo, &hi); /* gone 4 s: 1 + 2 s */
    ck_assert_int_eq(lo, 3);
    ck_assert_int_eq(hi, 4);
    advise_range(&r, 2000 * S, 0, 5, 1999 * S, &lo, &hi); /* a start ahead of the clock */
    ck_assert_int_eq(hi, 1);
}
END_TEST

START_TEST(the_jitter_spreads_the_clients_turned_away_together)
{
    retry_after r;
    retry_after_init(&r, 1);
    int seen[RETRY_AFTER_MAX_S + 1] = {0};
    for (int i = 0; i < 300; i++)
        seen[retry_after_advise(&r, 0, 1.0, 10, S)]++;
    for (int s = 10; s <= 15; s++)
        ck_assert_msg(seen[s] > 0, "%d s never advised", s);
    for (int s = 0; s <= RETRY_AFTER_MAX_S; s++)
        ck_assert_msg(seen[s] == 0 || (s >= 10 && s <= 15), "%d s advised", s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("retryafter");
    TCase *tc = tcase_create("retryafter");
    tcase_add_test(tc, an_idle_available_gateway_advises_one_second);
    tcase_add_test(tc, the_advice_grows_with_the_waiting_room_up_to_its_drain_time);
    tcase_add_test(tc, the_advice_grows_with_an_outage_and_starts_again_with_the_next);
    tcase_add_test(tc, the_jitter_spreads_the_clients_turned_away_together);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

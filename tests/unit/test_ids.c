/* test_ids.c: table-driven tests of RFC 3339 times in and out (common/core/ids.h). */
#include "core/ids.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define T_2026 1795309323456LL /* 2026-11-22T01:02:03.456Z */

static const struct {
    const char *text;
    bool ok;
    long long ms;
} pcases[] = {
    {"1970-01-01T00:00:00Z", true, 0},
    {"1970-01-01T00:00:01.5Z", true, 1500},
    {"2026-11-22T01:02:03.456Z", true, T_2026},
    {"2026-11-22T02:02:03.456+01:00", true, T_2026},
    {"2026-11-21T20:02:03.4569-05:00", true, T_2026}, /* beyond milliseconds: dropped */
    {"2026-11-22t01:02:03.456z", true, T_2026},
    {"2000-02-29T12:00:00Z", true, 951825600000LL},
    {"2016-12-31T23:59:60Z", true, 1483228799999LL}, /* the leap second, as :59.999 */
    {"1969-12-31T23:59:59.999Z", true, -1},
    {"", false, 0},
    {"yesterday", false, 0},
    {"2026-02-30T00:00:00Z", false, 0},
    {"2026-11-22 01:02:03Z", false, 0},
    {"2026-11-22T01:02:03", false, 0},
    {"2026-11-22T01:02:03Z ", false, 0},
    {"2026-11-22T24:00:00Z", false, 0},
    {"2026-11-22T01:02:03+1:00", false, 0},
};

START_TEST(rfc3339_times_parse_or_are_refused_untouched)
{
    long long ms = 42;
    bool ok = ids_parse_rfc3339(pcases[_i].text, &ms);
    ck_assert_msg(ok == pcases[_i].ok, "'%s': %s", pcases[_i].text, ok ? "parsed" : "refused");
    if (ok)
        ck_assert_int_eq(ms, pcases[_i].ms);
    else
        ck_assert_int_eq(ms, 42); /* untouched */
}
END_TEST

static const struct {
    long long ms;
    const char *text;
} fcases[] = {
    {0, "1970-01-01T00:00:00.000Z"},
    {1500, "1970-01-01T00:00:01.500Z"},
    {T_2026, "2026-11-22T01:02:03.456Z"},
    {-1, "1969-12-31T23:59:59.999Z"},
};

START_TEST(times_format_as_rfc3339_and_parse_back)
{
    char out[IDS_TIME_LEN];
    ids_format_rfc3339(fcases[_i].ms, out);
    ck_assert_str_eq(out, fcases[_i].text);
    long long back;
    ck_assert(ids_parse_rfc3339(out, &back));
    ck_assert_int_eq(back, fcases[_i].ms);
}
END_TEST

START_TEST(now_is_the_current_time_to_the_millisecond)
{
    char text[IDS_TIME_LEN];
    long long before = ids_now_ms();
    ids_now_rfc3339(text);
    long long after = ids_now_ms(), parsed;
    ck_assert(ids_parse_rfc3339(text, &parsed));
    ck_assert_int_ge(parsed, before - 1); /* the text is truncated to the millisecond */
    ck_assert_int_le(parsed, after);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ids");
    TCase *tc = tcase_create("rfc3339");
    tcase_add_loop_test(tc, rfc3339_times_parse_or_are_refused_untouched, 0, N(pcases));
    tcase_add_loop_test(tc, times_format_as_rfc3339_and_parse_back, 0, N(fcases));
    tcase_add_test(tc, now_is_the_current_time_to_the_millisecond);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

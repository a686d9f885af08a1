/* test_ids.c: table-driven tests of RFC 3339 times in and out (common/core/ids.h). */
#include "checkrun.h"
#include "core/ids.h"
#include "core/rfc3339.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
    bool ok = rfc3339_parse(pcases[_i].text, &ms);
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
    char out[RFC3339_LEN];
    rfc3339_format(fcases[_i].ms, out);
    ck_assert_str_eq(out, fcases[_i].text);
    long long back;
    ck_assert(rfc3339_parse(out, &back));
    ck_assert_int_eq(back, fcases[_i].ms);
}
END_TEST

START_TEST(now_is_the_current_time_to_the_millisecond)
{
    char text[RFC3339_LEN];
    long long before = ids_now_ms();
    rfc3339_now(text);
    long long after = ids_now_ms(), parsed;
    ck_assert(rfc3339_parse(text, &parsed));
    ck_assert_int_ge(parsed, before - 1); /* the text is truncated to the millisecond */
    ck_assert_int_le(parsed, after);
}
END_TEST

/* Expected values from Python's uuid.uuid5(uuid.NAMESPACE_DNS, name): the namespace is RFC 9562's
   DNS one, and a fingerprint stored in a claim must not change between releases. */
static const struct {
    const char *name, *uuid;
} ncases[] = {
    {"python.org", "886313e1-3b8a-5372-9b90-0c9aee199e5d"},
    {"POST /v1/commands\n{}", "4cf76fe8-fc35-508a-93c2-a4de6b029c83"},
    {"", "4ebd0208-8328-5d69-8c44-ec50939c0967"},
};

START_TEST(name_uuids_are_version_5_in_a_fixed_namespace)
{
    char out[IDS_UUID_LEN];
    ids_name_uuid(ncases[_i].name, strlen(ncases[_i].name), out);
    ck_assert_str_eq(out, ncases[_i].uuid);
}
END_TEST

START_TEST(new_ids_are_version_7_and_carry_the_time)
{
    char a[IDS_UUID_LEN], b[IDS_UUID_LEN];
    long long before = ids_now_ms();
    ids_uuid(a);
    long long after = ids_now_ms();
    ck_assert(ids_is_uuid(a));
    ck_assert_msg(a[14] == '7', "version nibble of %s", a);
    ck_assert_msg(strchr("89ab", a[19]) != NULL, "variant of %s", a);
    char hex[13];
    memcpy(hex, a, 8);
    memcpy(hex + 8, a + 9, 4);
    hex[12] = '\0';
    long long ms = strtoll(hex, NULL, 16);
    ck_assert_int_ge(ms, before);
    ck_assert_int_le(ms, after);
    /* A later millisecond sorts later; the random rest differs within one. */
    while (ids_now_ms() == after)
        ;
    ids_uuid(b);
    ck_assert_msg(strcmp(a, b) < 0, "%s made before %s", a, b);
}
END_TEST

/* Draws of every size, across the pool's refills, are filled and never repeat. */
START_TEST(random_draws_fill_and_do_not_repeat)
{
    static const size_t sizes[] = {1, 16, 255, 256, 257, 1000, 7};
    unsigned char prev[1000] = {0}, cur[1000];
    size_t prev_n = 0;
    for (int round = 0; round < 40; round++) {
        size_t n = sizes[round % N(sizes)];
        memset(cur, 0, sizeof(cur));
        ids_random(cur, n);
        size_t zero = 0;
        for (size_t i = 0; i < n; i++)
            zero += cur[i] == 0;
        /* A byte is zero with probability 1/256: far fewer than half of them are. */
        ck_assert_msg(n < 16 || zero < n / 2, "%zu zero bytes in a draw of %zu", zero, n);
        if (n >= 16 && prev_n >= 16)
            ck_assert_msg(memcmp(cur, prev, 16) != 0, "a draw repeated the one before");
        memcpy(prev, cur, n);
        prev_n = n;
    }
}
END_TEST

/* A child of fork() does not draw the bytes left in its parent's pool. */
START_TEST(a_forked_child_draws_other_bytes)
{
    unsigned char first, parent[16], child[16];
    ids_random(&first, 1); /* the pool now holds 255 bytes */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        ids_random(child, sizeof(child));
        _exit(write(fds[1], child, sizeof(child)) == (ssize_t)sizeof(child) ? 0 : 1);
    }
    ids_random(parent, sizeof(parent));
    ck_assert_int_eq(read(fds[0], child, sizeof(child)), (ssize_t)sizeof(child));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    ck_assert_msg(memcmp(parent, child, sizeof(parent)) != 0,
                  "parent and child drew the same bytes");
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
    tc = tcase_create("uuid");
    tcase_add_loop_test(tc, name_uuids_are_version_5_in_a_fixed_namespace, 0, N(ncases));
    tcase_add_test(tc, new_ids_are_version_7_and_carry_the_time);
    suite_add_tcase(s, tc);
    tc = tcase_create("random");
    tcase_add_test(tc, random_draws_fill_and_do_not_repeat);
    tcase_add_test(tc, a_forked_child_draws_other_bytes);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* test_log.c: what a log line holds: the fixed members, typed fields, levels below the minimum. */
#include "checkrun.h"
#include "core/log.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Runs fn with stderr sent to a temporary file; returns the lines written, as a JSON array. */
static json_t *capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(tmp), STDERR_FILENO), 0);
    fn();
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    rewind(tmp);
    json_t *lines = json_array();
    char buf[4096];
    while (fgets(buf, sizeof buf, tmp)) {
        json_error_t e;
        json_t *j = json_loads(buf, 0, &e);
        ck_assert_msg(j != NULL, "not a JSON line: %s (%s)", buf, e.text);
        json_array_append_new(lines, j);
    }
    fclose(tmp);
    return lines;
}

static void typed(void)
{
    LOG_KV(LOG_WARN, "typed", LOG_STR("name", "a\"b"), LOG_NUM("count", 3),
           LOG_NUM("offset", 9007199254740993LL), LOG_STR("absent", NULL), LOG_NUM("zero", 0));
}

START_TEST(numbers_are_numbers_strings_are_escaped_and_null_is_left_out)
{
    log_init("svc", LOG_INFO);
    json_t *lines = capture(typed);
    ck_assert_uint_eq(json_array_size(lines), 1);
    json_t *l = json_array_get(lines, 0);
    ck_assert_str_eq(json_string_value(json_object_get(l, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(l, "service")), "svc");
    ck_assert_str_eq(json_string_value(json_object_get(l, "msg")), "typed");
    ck_assert_str_eq(json_string_value(json_object_get(l, "name")), "a\"b");
    ck_assert(json_is_integer(json_object_get(l, "count")));
    ck_assert_int_eq(json_integer_value(json_object_get(l, "count")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(l, "offset")), 9007199254740993LL);
    ck_assert(json_is_integer(json_object_get(l, "zero")));
    ck_assert_ptr_null(json_object_get(l, "absent"));
    json_decref(lines);
}
END_TEST

static void below_and_at(void)
{
    LOG_KV(LOG_DEBUG, "below", LOG_NUM("n", 1));
    log_kv(LOG_DEBUG, "below too", LOG_FIELDS("k", "v"));
    log_kv(LOG_ERROR, "at", LOG_FIELDS("k", "v", "gone", NULL));
}

START_TEST(lines_below_the_minimum_level_are_not_written)
{
    log_init("svc", LOG_INFO);
    json_t *lines = capture(below_and_at);
    ck_assert_uint_eq(json_array_size(lines), 1);
    json_t *l = json_array_get(lines, 0);
    ck_assert_str_eq(json_string_value(json_object_get(l, "msg")), "at");
    ck_assert_str_eq(json_string_value(json_object_get(l, "k")), "v");
    json_decref(lines);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_test(tc, numbers_are_numbers_strings_are_escaped_and_null_is_left_out);
    tcase_add_test(tc, lines_below_the_minimum_level_are_not_written);
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

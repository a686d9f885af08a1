/* test_trace.c: W3C trace context: tracestate checks, child spans, trace ids for log lines. */
#include "checkrun.h"
#include "core/trace.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

START_TEST(a_child_keeps_the_trace_and_flags_with_a_new_span)
{
    char a[TRACE_PARENT_LEN], b[TRACE_PARENT_LEN];
    trace_child(PARENT, a);
    trace_child(PARENT, b);
    ck_assert(trace_parent_valid(a));
    ck_assert_int_eq(strncmp(a, PARENT, 36), 0); /* version and trace id */
    ck_assert_str_eq(a + 52, "-01");             /* flags */
    ck_assert_int_ne(strncmp(a + 36, PARENT + 36, 16), 0);
    ck_assert_int_ne(strncmp(a + 36, b + 36, 16), 0); /* a span id each time */
}
END_TEST

START_TEST(without_a_valid_parent_a_trace_starts)
{
    const char *parents[] = {NULL, "", "garbage",
                             "00-00000000000000000000000000000000-00f067aa0ba902b7-01"};
    char seen[4][TRACE_PARENT_LEN];
    for (size_t i = 0; i < 4; i++) {
        trace_child(parents[i], seen[i]);
        ck_assert_msg(trace_parent_valid(seen[i]), "%s", seen[i]);
        ck_assert_str_eq(seen[i] + 52, "-00");
        for (size_t j = 0; j < i; j++)
            ck_assert_int_ne(strncmp(seen[i] + 3, seen[j] + 3, 32), 0); /* new trace ids */
    }
}
END_TEST

START_TEST(trace_ids_for_log_lines)
{
    char id[TRACE_ID_LEN];
    trace_id_of(PARENT, id);
    ck_assert_str_eq(id, "4bf92f3577b34da6a3ce929d0e0e4736");
    trace_id_of(NULL, id);
    ck_assert_str_eq(id, "");
    trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", id);
    ck_assert_str_eq(id, "");
}
END_TEST

START_TEST(tracestate_is_bounded_printable_text)
{
    ck_assert(trace_state_valid("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
    ck_assert(trace_state_valid(""));
    ck_assert(!trace_state_valid(NULL));
    ck_assert(!trace_state_valid("a=1\r\nInjected: header"));
    ck_assert(!trace_state_valid("a=\x7f"));
    char big[TRACE_STATE_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    ck_assert(!trace_state_valid(big));
    big[TRACE_STATE_MAX] = 0;
    ck_assert(trace_state_valid(big));
    char many[200];
    size_t len = 0;
    for (int i = 0; i < 33; i++)
        len += (size_t)snprintf(many + len, sizeof(many) - len, "%sk=v", i ? "," : "");
    ck_assert(!trace_state_valid(many)); /* 33 list members */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("context");
    tcase_add_test(tc, a_child_keeps_the_trace_and_flags_with_a_new_span);
    tcase_add_test(tc, without_a_valid_parent_a_trace_starts);
    tcase_add_test(tc, trace_ids_for_log_lines);
    tcase_add_test(tc, tracestate_is_bounded_printable_text);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

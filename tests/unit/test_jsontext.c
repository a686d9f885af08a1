/* test_jsontext.c: JSON text written into a buffer reads back as the values written. */
#include "checkrun.h"
#include "core/jsontext.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Strings that need each kind of escape, and UTF-8 that must pass through unchanged. */
static const char *const strings[] = {
    "",
    "plain",
    "quote \" and backslash \\",
    "\n\t\r\b\f and \x01\x1f\x7f",
    "slash / stays",
    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",     /* 2, 3 and 4 byte sequences */
    "\xef\xbf\xbf noncharacter is still UTF-8 text", /* U+FFFF: valid JSON */
};

START_TEST(a_string_reads_back_as_written)
{
    const char *s = strings[_i];
    jsontext t = {0};
    JSONTEXT_LIT(&t, "{\"s\":");
    jsontext_str(&t, s);
    JSONTEXT_LIT(&t, ",\"n\":");
    jsontext_int(&t, -9223372036854775807LL - 1);
    JSONTEXT_LIT(&t, "}");
    size_t len = 0;
    char *text = jsontext_finish(&t, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(len, strlen(text));
    json_error_t err;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    ck_assert_msg(v != NULL, "%s: %s", text, err.text);
    ck_assert_str_eq(json_string_value(json_object_get(v, "s")), s);
    ck_assert(json_integer_value(json_object_get(v, "n")) == -9223372036854775807LL - 1);
    /* No raw control character may remain: JSON forbids them in strings. */
    for (const char *p = text; *p; p++)
        ck_assert_msg((unsigned char)*p >= 0x20, "raw control character in %s", text);
    json_decref(v);
    free(text);
    ck_assert_ptr_null(t.data); /* the buffer is empty again */
}
END_TEST

/* Integers at every width, both signs and both ends of the range, as their decimal text. */
static const long long integers[] = {
    0, 7, -7, 10, -10, 1234567890123LL, 9223372036854775807LL, -9223372036854775807LL - 1};

START_TEST(an_integer_is_written_in_decimal)
{
    char want[32];
    snprintf(want, sizeof(want), "%lld", integers[_i]);
    jsontext t = {0};
    jsontext_int(&t, integers[_i]);
    char *text = jsontext_finish(&t, NULL);
    ck_assert_str_eq(text, want);
    free(text);
}
END_TEST

/* Bytes that are not UTF-8: the whole text fails, never a value left out. */
static const char *const not_utf8[] = {
    "\xff",
    "\xc0\xaf",         /* overlong '/' */
    "\xed\xa0\x80",     /* a surrogate */
    "\xf4\x90\x80\x80", /* past U+10FFFF */
    "cut \xe2\x82",     /* a sequence cut short */
};

START_TEST(a_string_that_is_not_utf8_fails_the_text)
{
    jsontext t = {0};
    JSONTEXT_LIT(&t, "[");
    jsontext_str(&t, not_utf8[_i]);
    JSONTEXT_LIT(&t, ",1]"); /* what follows does not clear it */
    ck_assert_ptr_null(jsontext_finish(&t, NULL));
    ck_assert_ptr_null(t.data);
}
END_TEST

/* A tree is encoded in place, at any fill of the buffer (it fits, or the buffer grows first). */
START_TEST(a_tree_is_spliced_at_any_fill)
{
    json_t *tree = json_pack("{s:s, s:[i, f, b, n], s:{s:s}}", "a", "x\"y", "list", 1, 2.5, 1,
                             "nested", "k", "caf\xc3\xa9");
    char *want = json_dumps(tree, JSON_COMPACT);
    for (size_t fill = 0; fill < 600; fill += 7) {
        jsontext t = {0};
        for (size_t i = 0; i < fill; i++)
            JSONTEXT_LIT(&t, " ");
        jsontext_json(&t, tree);
        jsontext_json(&t, NULL);
        char *text = jsontext_finish(&t, NULL);
        ck_assert_ptr_nonnull(text);
        ck_assert_uint_eq(strlen(text), fill + strlen(want) + 4);
        ck_assert_int_eq(strncmp(text + fill, want, strlen(want)), 0);
        ck_assert_str_eq(text + fill + strlen(want), "null");
        free(text);
    }
    free(want);
    json_decref(tree);
}
END_TEST

/* Sorted, every object's members are in key order, nested ones too; unsorted, as inserted. */
START_TEST(a_tree_is_written_sorted_on_request)
{
    json_t *v =
        json_pack("{s:i, s:{s:i, s:[i, {s:i, s:i}]}}", "b", 1, "a", "d", 2, "c", 3, "z", 1, "y", 2);
    jsontext t = {0};
    jsontext_json_sorted(&t, v);
    JSONTEXT_LIT(&t, " ");
    jsontext_json(&t, v);
    char *text = jsontext_finish(&t, NULL);
    ck_assert_str_eq(text, "{\"a\":{\"c\":[3,{\"y\":2,\"z\":1}],\"d\":2},\"b\":1} "
                           "{\"b\":1,\"a\":{\"d\":2,\"c\":[3,{\"z\":1,\"y\":2}]}}");
    free(text);
    json_decref(v);
}
END_TEST

/* Text encoded before is spliced as it is; NULL is null. */
START_TEST(encoded_text_is_spliced_as_it_is)
{
    jsontext t = {0};
    JSONTEXT_LIT(&t, "[");
    jsontext_text(&t, "{\"state\":{\"balance\":5}}");
    JSONTEXT_LIT(&t, ",");
    jsontext_text(&t, NULL);
    JSONTEXT_LIT(&t, ",");
    jsontext_str(&t, NULL);
    JSONTEXT_LIT(&t, "]");
    char *text = jsontext_finish(&t, NULL);
    ck_assert_str_eq(text, "[{\"state\":{\"balance\":5}},null,null]");
    free(text);

    jsontext_raw(&t, "abc", 3); /* a buffer given up on frees what it held */
    jsontext_free(&t);
    ck_assert_ptr_null(t.data);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsontext");
    TCase *tc = tcase_create("jsontext");
    tcase_add_loop_test(tc, a_string_reads_back_as_written, 0, N(strings));
    tcase_add_loop_test(tc, an_integer_is_written_in_decimal, 0, N(integers));
    tcase_add_loop_test(tc, a_string_that_is_not_utf8_fails_the_text, 0, N(not_utf8));
    tcase_add_test(tc, a_tree_is_spliced_at_any_fill);
    tcase_add_test(tc, encoded_text_is_spliced_as_it_is);
    tcase_add_test(tc, a_tree_is_written_sorted_on_request);
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

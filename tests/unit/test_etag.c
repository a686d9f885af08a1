/* test_etag.c: table-driven tests of entity-tag lists: their grammar and both comparisons. */
#include "checkrun.h"
#include "http/etag.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- grammar: what parses, into which tags ---- */

static const struct {
    const char *value;
    bool valid;
    bool any;
    const char *tags; /* the parsed tags as "w:7 s:abc" (w weak, s strong), space-separated */
} grammar[] = {
    {"\"7\"", true, false, "s:7"},
    {"W/\"7\"", true, false, "w:7"},
    {"\"1\", \"7\"", true, false, "s:1 s:7"},
    {"\"1\",W/\"7\"", true, false, "s:1 w:7"},
    {"  \"1\" ,\t\"2\"  ", true, false, "s:1 s:2"},
    {", \"1\",, ,\"2\",", true, false, "s:1 s:2"}, /* empty elements are allowed */
    {"\"\"", true, false, "s:"},                   /* an empty opaque-tag is an entity-tag */
    {"\"a!#~\x80\xff\"", true, false, "s:a!#~\x80\xff"},
    {"*", true, true, ""},
    {" * ", true, true, ""},
    {"", false, false, ""},
    {" , ,", false, false, ""},     /* no element at all */
    {"7", false, false, ""},        /* unquoted */
    {"w/\"7\"", false, false, ""},  /* W/ is case-sensitive */
    {"W/ \"7\"", false, false, ""}, /* nothing between W/ and the quote */
    {"\"7", false, false, ""},      /* unterminated */
    {"\"a b\"", false, false, ""},  /* SP is not an etagc */
    {"\"a\"\"b\"", false, false, ""},
    {"\"1\" \"2\"", false, false, ""}, /* no comma between them */
    {"*, \"1\"", false, false, ""},    /* * stands alone */
    {"\"1\", *", false, false, ""},
    {"\"a\\\"b\"", false, false, ""}, /* no escapes: the backslash ends nothing, the quote does */
    {"\"a\x7f\"", false, false, ""},
};

static void render(const etag_list *l, char *out, size_t len)
{
    *out = '\0';
    for (size_t i = 0; i < l->n; i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%c:%.*s", i ? " " : "",
                 l->tags[i].weak ? 'w' : 's', (int)l->tags[i].len, l->tags[i].tag);
}

START_TEST(etag_lists_parse_by_the_grammar)
{
    etag_list l;
    bool ok = etag_list_parse(grammar[_i].value, &l);
    ck_assert_msg(ok == grammar[_i].valid, "[%s]: parse gave %d", grammar[_i].value, ok);
    if (!ok)
        return;
    ck_assert_int_eq(l.any, grammar[_i].any);
    char got[256];
    render(&l, got, sizeof(got));
    ck_assert_str_eq(got, grammar[_i].tags);
}
END_TEST

START_TEST(etag_lists_are_bounded)
{
    char value[ETAG_LIST_MAX * 6 + 16] = "";
    for (int i = 0; i < ETAG_LIST_MAX; i++)
        snprintf(value + strlen(value), sizeof(value) - strlen(value), "%s\"%d\"", i ? "," : "", i);
    etag_list l;
    ck_assert(etag_list_parse(value, &l));
    ck_assert_uint_eq(l.n, ETAG_LIST_MAX);
    snprintf(value + strlen(value), sizeof(value) - strlen(value), ",\"x\"");
    ck_assert(!etag_list_parse(value, &l));
}
END_TEST

/* ---- comparison against a current strong entity-tag ---- */

static const struct {
    const char *value;
    const char *current;
    bool strong_match; /* If-Match */
    bool weak_match;   /* If-None-Match */
} compare[] = {
    {"\"7\"", "7", true, true},
    {"W/\"7\"", "7", false, true}, /* a weak tag never matches strongly */
    {"\"1\", \"7\"", "7", true, true},
    {"\"1\", W/\"7\"", "7", false, true},
    {"W/\"1\", \"7\"", "7", true, true},
    {"\"1\", \"2\"", "7", false, false},
    {"\"17\"", "7", false, false},
    {"\"7\"", "17", false, false},
    {"\"\"", "7", false, false},
    {"*", "7", true, true},
};

START_TEST(strong_and_weak_comparison_follow_rfc_9110)
{
    etag_list l;
    ck_assert(etag_list_parse(compare[_i].value, &l));
    ck_assert_msg(etag_list_matches(&l, compare[_i].current, true) == compare[_i].strong_match,
                  "[%s] strong vs %s", compare[_i].value, compare[_i].current);
    ck_assert_msg(etag_list_matches(&l, compare[_i].current, false) == compare[_i].weak_match,
                  "[%s] weak vs %s", compare[_i].value, compare[_i].current);
}
END_TEST

START_TEST(a_version_makes_its_etag)
{
    char buf[ETAG_VERSION_LEN];
    etag_of_version(7, buf);
    ck_assert_str_eq(buf, "\"7\"");
    etag_of_version(-9223372036854775807LL - 1, buf);
    ck_assert_str_eq(buf, "\"-9223372036854775808\"");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("etag");
    TCase *tc = tcase_create("etag");
    tcase_add_loop_test(tc, etag_lists_parse_by_the_grammar, 0, N(grammar));
    tcase_add_test(tc, etag_lists_are_bounded);
    tcase_add_loop_test(tc, strong_and_weak_comparison_follow_rfc_9110, 0, N(compare));
    tcase_add_test(tc, a_version_makes_its_etag);
    suite_add_tcase(s, tc);
    int failed = check_run(s, CK_FORK_GETENV);
    return failed ? 1 : 0;
}

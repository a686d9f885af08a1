/* test_projection.c: projection declarations from domain files: parsing, DDL, column values. */
#include "checkrun.h"
#include "domain/projection.h"
#include "jtext.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A declaration that must be refused, and what the error must say. */
static const struct {
    const char *decl;
    const char *err;
} bad[] = {
    {"[]", "projection: must be an object"},
    {"{'columns':{},'extra':1}", "projection: must be an object"},
    {"{'columns':{'Owner':{'type':'text'}}}", "'Owner' is not a usable column name"},
    {"{'columns':{'version':{'type':'bigint'}}}", "'version' is not a usable column name"},
    {"{'columns':{'a':{'type':'varchar'}}}", "projection.columns.a.type: must be text, bigint"},
    {"{'columns':{'a':{}}}", "projection.columns.a.type"},
    {"{'columns':{'a':{'type':'text','pointer':'a'}}}", "projection.columns.a.pointer"},
    {"{'columns':{'a':{'type':'text','index':true}}}", "projection.columns.a: unknown key 'index'"},
    {"{'columns':{'a':1}}", "projection.columns.a: must be an object"},
};

START_TEST(refuses_bad_declarations)
{
    json_t *decl = J(bad[_i].decl);
    char err[256] = "";
    projection *p = projection_parse("x", decl, err, sizeof err);
    ck_assert_msg(p == NULL, "case %d parsed", _i);
    ck_assert_msg(strstr(err, bad[_i].err), "case %d: '%s' lacks '%s'", _i, err, bad[_i].err);
    json_decref(decl);
}
END_TEST

START_TEST(parses_and_writes_ddl)
{
    json_t *decl = J("{'columns':{'owner':{'type':'text'},'balance':{'type':'bigint'},"
                     "'city':{'type':'text','pointer':'/address/city'}}}");
    char err[256] = "";
    projection *p = projection_parse("account", decl, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    ck_assert_str_eq(p->table, "projection_account");
    ck_assert_uint_eq(p->ncols, 3);
    /* in name order */
    ck_assert_str_eq(p->cols[0].name, "balance");
    ck_assert_str_eq(p->cols[1].name, "city");
    ck_assert_str_eq(p->cols[1].pointer, "/address/city");
    ck_assert_str_eq(p->cols[2].pointer, "/owner");
    ck_assert_ptr_nonnull(projection_column_find(p, "owner"));
    ck_assert_ptr_null(projection_column_find(p, "id"));
    char *ddl = projection_ddl(p);
    ck_assert_ptr_nonnull(strstr(ddl, "CREATE TABLE IF NOT EXISTS \"projection_account\""));
    ck_assert_ptr_nonnull(strstr(ddl, "PRIMARY KEY (tenant, id)"));
    ck_assert_ptr_nonnull(
        strstr(ddl, "ALTER TABLE \"projection_account\" ADD COLUMN IF NOT EXISTS \"balance\" "
                    "bigint;"));
    ck_assert_ptr_nonnull(strstr(ddl, "CREATE INDEX IF NOT EXISTS \"projection_account_city\" ON "
                                      "\"projection_account\" (tenant, \"city\", id);"));
    free(ddl);
    projection_free(p);
    json_decref(decl);

    p = projection_parse("document", NULL, err, sizeof err); /* no declaration: fixed columns */
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p->ncols, 0);
    projection_free(p);
}
END_TEST

/* A column value from a state: the SQL parameter text, or NULL for SQL NULL. */
static const struct {
    projection_type type;
    const char *pointer;
    const char *state;
    const char *want; /* NULL: SQL NULL */
} values[] = {
    {PROJECTION_TEXT, "/owner", "{'owner':'ada'}", "ada"},
    {PROJECTION_TEXT, "/owner", "{'owner':7}", NULL},
    {PROJECTION_TEXT, "/owner", "{}", NULL},
    {PROJECTION_TEXT, "/a/b~1c", "{'a':{'b/c':'x'}}", "x"},
    {PROJECTION_TEXT, "/a/1", "{'a':['x','y']}", "y"},
    {PROJECTION_BIGINT, "/n", "{'n':42}", "42"},
    {PROJECTION_BIGINT, "/n", "{'n':42.0}", "42"},
    {PROJECTION_BIGINT, "/n", "{'n':4.5}", NULL},
    {PROJECTION_BIGINT, "/n", "{'n':'42'}", NULL},
    {PROJECTION_NUMERIC, "/n", "{'n':4.5}", "4.5"},
    {PROJECTION_NUMERIC, "/n", "{'n':-3}", "-3"},
    {PROJECTION_BOOLEAN, "/b", "{'b':false}", "false"},
    {PROJECTION_BOOLEAN, "/b", "{'b':null}", NULL},
    {PROJECTION_TIMESTAMPTZ, "/t", "{'t':'2026-12-01T10:00:00Z'}", "2026-12-01T10:00:00Z"},
    {PROJECTION_TIMESTAMPTZ, "/t", "{'t':'yesterday'}", NULL},
    {PROJECTION_TEXT, "/owner", "null", NULL},
};

START_TEST(column_values)
{
    projection_column c = {
        .name = "c", .pointer = (char *)values[_i].pointer, .type = values[_i].type};
    json_t *state = J(values[_i].state);
    char *got = projection_value(&c, state);
    if (values[_i].want)
        ck_assert_msg(got && strcmp(got, values[_i].want) == 0, "case %d: got %s", _i,
                      got ? got : "NULL");
    else
        ck_assert_msg(got == NULL, "case %d: got %s, want NULL", _i, got);
    free(got);
    json_decref(state);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("projection");
    TCase *tc = tcase_create("projection");
    tcase_add_loop_test(tc, refuses_bad_declarations, 0, N(bad));
    tcase_add_test(tc, parses_and_writes_ddl);
    tcase_add_loop_test(tc, column_values, 0, N(values));
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_jsonschema_suite.c: the official JSON-Schema-Test-Suite (draft 2020-12) run through the
 * validator: every case of every file of a supported keyword must give the suite's verdict.
 * tests/run.sh fetches the suite (tests/support/json-schema-suite.sh) and names its folder in
 * CQRS_TEST_JSON_SCHEMA_SUITE; without it the test fails, it is never skipped.
 */
#include "checkrun.h"
#include "jsonschema/jsonschema.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a)         ((int)(sizeof(a) / sizeof((a)[0])))
#define MAX_EXCLUDED 16

/*
 * A suite file and the groups in it that must NOT compile because they use what the validator
 * refuses by design (docs/domains.md lists it): references outside the document, embedded
 * resources ($id below the root), $anchor, unevaluated*. Each of these is checked to be refused
 * at compile time, never silently half-evaluated; a listed group that compiles fails the test.
 */
typedef struct {
    const char *file;
    const char *excluded[MAX_EXCLUDED];
} suite_file;

static const suite_file files[] = {
    {"additionalProperties.json", {0}},
    {"allOf.json", {0}},
    {"anyOf.json", {0}},
    {"boolean_schema.json", {0}},
    {"const.json", {0}},
    {"contains.json", {0}},
    {"defs.json", {"validate definition against metaschema"}},
    {"dependentRequired.json", {0}},
    {"dependentSchemas.json", {0}},
    {"enum.json", {0}},
    {"exclusiveMaximum.json", {0}},
    {"exclusiveMinimum.json", {0}},
    {"if-then-else.json", {0}},
    {"infinite-loop-detection.json", {0}},
    {"items.json", {0}},
    {"maxContains.json", {0}},
    {"maxItems.json", {0}},
    {"maxLength.json", {0}},
    {"maxProperties.json", {0}},
    {"maximum.json", {0}},
    {"minContains.json", {0}},
    {"minItems.json", {0}},
    {"minLength.json", {0}},
    {"minProperties.json", {0}},
    {"minimum.json", {0}},
    {"multipleOf.json", {0}},
    {"not.json", {"collect annotations inside a 'not', even if collection is disabled"}},
    {"oneOf.json", {0}},
    {"pattern.json", {0}},
    {"patternProperties.json", {0}},
    {"prefixItems.json", {0}},
    {"properties.json", {0}},
    {"propertyNames.json", {0}},
    {"ref.json",
     {"remote ref, containing refs itself", "Recursive references between schemas",
      "ref creates new scope when adjacent to keywords", "refs with relative uris and defs",
      "relative refs with absolute uris and defs",
      "$id must be resolved against nearest parent, not just immediate parent",
      "order of evaluation: $id and $ref", "order of evaluation: $id and $anchor and $ref",
      "simple URN base URI with $ref via the URN", "URN base URI with URN and JSON pointer ref",
      "URN base URI with URN and anchor ref", "URN ref with nested pointer ref", "ref to if",
      "ref to then", "ref to else", "ref with absolute-path-reference"}},
    {"required.json", {0}},
    {"type.json", {0}},
    {"uniqueItems.json", {0}},
    {"optional/format/date-time.json", {0}},
    {"optional/format/date.json", {0}},
    {"optional/format/time.json", {0}},
    {"optional/format/uuid.json", {0}},
    {"optional/format/email.json", {0}},
    {"optional/non-bmp-regex.json", {0}},
    {"optional/float-overflow.json", {0}},
};

static bool is_excluded(const suite_file *f, const char *group)
{
    for (int i = 0; i < MAX_EXCLUDED && f->excluded[i]; i++)
        if (strcmp(f->excluded[i], group) == 0)
            return true;
    return false;
}

START_TEST(suite_file_passes)
{
    const suite_file *f = &files[_i];
    const char *dir = getenv("CQRS_TEST_JSON_SCHEMA_SUITE");
    ck_assert_msg(dir && *dir, "CQRS_TEST_JSON_SCHEMA_SUITE is not set: run this test through "
                               "tests/run.sh, which fetches the suite");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/draft2020-12/%s", dir, f->file);
    json_error_t jerr;
    json_t *groups = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(json_is_array(groups), "%s: %s", path, jerr.text);

    int cases = 0, excluded = 0, listed = 0;
    for (int i = 0; i < MAX_EXCLUDED && f->excluded[i]; i++)
        listed++;
    size_t gi;
    json_t *group;
    json_array_foreach(groups, gi, group)
    {
        const char *desc = json_string_value(json_object_get(group, "description"));
        char err[512] = "";
        jschema *s = jschema_compile(json_object_get(group, "schema"), err, sizeof err);
        if (is_excluded(f, desc)) {
            ck_assert_msg(s == NULL, "%s: '%s' is listed as refused but compiles", f->file, desc);
            excluded++;
            continue;
        }
        ck_assert_msg(s != NULL, "%s: '%s' does not compile: %s", f->file, desc, err);
        size_t ti;
        json_t *t;
        json_array_foreach(json_object_get(group, "tests"), ti, t)
        {
            const json_t *data = json_object_get(t, "data");
            bool want = json_is_true(json_object_get(t, "valid"));
            const char *tdesc = json_string_value(json_object_get(t, "description"));
            /* Both modes: the first failure decides, and every failure is listed. */
            bool quick = jschema_validate(s, data, NULL);
            json_t *errors = json_array();
            bool full = jschema_validate(s, data, errors);
            char *why = json_dumps(errors, JSON_COMPACT);
            ck_assert_msg(quick == want, "%s: '%s' / '%s': valid is %d, the suite says %d (%s)",
                          f->file, desc, tdesc, quick, want, why);
            ck_assert_msg(full == want, "%s: '%s' / '%s': collecting mode disagrees", f->file, desc,
                          tdesc);
            ck_assert_msg(full == (json_array_size(errors) == 0),
                          "%s: '%s' / '%s': verdict %d with errors %s", f->file, desc, tdesc, full,
                          why);
            free(why);
            json_decref(errors);
            cases++;
        }
        jschema_free(s);
    }
    ck_assert_msg(excluded == listed, "%s: %d of the %d listed groups were found", f->file,
                  excluded, listed);
    printf("json-schema-test-suite draft2020-12/%s: %d cases passed in %zu groups, %d groups "
           "refused as unsupported\n",
           f->file, cases, json_array_size(groups) - (size_t)excluded, excluded);
    fflush(stdout);
    json_decref(groups);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonschema_suite");
    TCase *tc = tcase_create("draft2020-12");
    tcase_add_loop_test(tc, suite_file_passes, 0, N(files));
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* test_opsout.c: an operator subcommand's report, as a table and as JSON lines. */

#include "checkrun.h"
#include "ops/opsout.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const columns[] = {"partition", "messages", "end_offset", NULL};

/* Prints two rows and a note in the given mode; returns what was written (caller frees). */
static char *render(bool text)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    opsout *o = opsout_new(f, "replay", columns, text);
    json_t *row = json_pack("{s:i, s:i, s:n, s:b}", "partition", 0, "messages", 12, "end_offset",
                            "dry_run", 1);
    opsout_row(o, row);
    json_decref(row);
    row = json_pack("{s:s, s:i}", "partition", "total", "messages", 1234);
    opsout_row(o, row);
    json_decref(row);
    opsout_note(o, "%d of %d replayed", 3, 4);
    opsout_free(o);
    fclose(f);
    return buf;
}

START_TEST(json_reports_are_one_object_per_line)
{
    char *out = render(false);
    ck_assert_str_eq(out, "{\"command\":\"replay\",\"partition\":0,\"messages\":12,"
                          "\"end_offset\":null,\"dry_run\":true}\n"
                          "{\"command\":\"replay\",\"partition\":\"total\",\"messages\":1234}\n"
                          "{\"command\":\"replay\",\"note\":\"3 of 4 replayed\"}\n");
    free(out);
}
END_TEST

START_TEST(a_table_aligns_its_rows_under_the_headings)
{
    char *out = render(true);
    /* Headings, then the rows aligned under them (numbers to the right), then the notes. */
    ck_assert_str_eq(out, "partition  messages  end_offset\n"
                          "0                12           -\n"
                          "total          1234           -\n"
                          "3 of 4 replayed\n");
    free(out);
}
END_TEST

static const struct {
    const char *name;
    bool ok, text;
} mcases[] = {
    {"text", true, true},  {"json", true, false},
    {"auto", true, false}, /* text when stdout is a terminal: checked against isatty() */
    {"xml", false, false}, {"", false, false},
};

START_TEST(output_modes_parse_by_name)
{
    bool text = !mcases[_i].text;
    ck_assert(opsout_mode(mcases[_i].name, &text) == mcases[_i].ok);
    bool want = strcmp(mcases[_i].name, "auto") == 0 ? isatty(STDOUT_FILENO) : mcases[_i].text;
    if (mcases[_i].ok)
        ck_assert(text == want);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("opsout");
    TCase *tc = tcase_create("opsout");
    tcase_add_test(tc, json_reports_are_one_object_per_line);
    tcase_add_test(tc, a_table_aligns_its_rows_under_the_headings);
    tcase_add_loop_test(tc, output_modes_parse_by_name, 0, N(mcases));
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

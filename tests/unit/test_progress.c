/* test_progress.c: table-driven tests of the progress figures and their two renderings. */

#include "checkrun.h"
#include "ops/progress.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define S    1000000LL /* microseconds per second */

/* Partitions as {start, position, end}, and the moment looked at, after 10 s of reading. */
static const struct {
    const char *name;
    long long parts[3][3];
    size_t nparts;
    long long started_us, ended_us, now_us;
    long long done, total, eta_s;
    double rate;
} fcases[] = {
    {"nothing read yet", {{0, 0, 100}, {0, 0, 50}}, 2, 0, 0, 10 * S, 0, 150, -1, 0},
    {"half way", {{0, 50, 100}, {0, 25, 50}}, 2, 1, 0, 1 + 10 * S, 75, 150, 10, 7.5},
    {"from an offset", {{40, 60, 100}}, 1, 1, 0, 1 + 10 * S, 20, 60, 20, 2},
    {"past the end counts as the end", {{0, 130, 100}}, 1, 1, 0, 1 + 10 * S, 100, 100, 0, 10},
    {"an empty partition", {{7, 7, 7}, {0, 10, 20}}, 2, 1, 0, 1 + 10 * S, 10, 20, 10, 1},
    {"ended: the rate stops", {{0, 100, 100}}, 1, 1, 1 + 4 * S, 1 + 100 * S, 100, 100, 0, 25},
    {"nothing to read", {{5, 5, 5}}, 1, 1, 0, 1 + 10 * S, 0, 0, 0, 0},
};

static progress *make(int i)
{
    progress *p = progress_new("rebuild", "account", fcases[i].nparts);
    for (size_t k = 0; k < fcases[i].nparts; k++) {
        p->parts[k].partition = (int)k;
        p->parts[k].start = fcases[i].parts[k][0];
        p->parts[k].position = fcases[i].parts[k][1];
        p->parts[k].end = fcases[i].parts[k][2];
    }
    p->started_us = fcases[i].started_us;
    p->ended_us = fcases[i].ended_us;
    p->phase = "reading";
    return p;
}

START_TEST(the_figures_add_up_over_partitions)
{
    progress *p = make(_i);
    long long now = fcases[_i].now_us;
    ck_assert_int_eq(progress_done(p), fcases[_i].done);
    ck_assert_int_eq(progress_total(p), fcases[_i].total);
    ck_assert_int_eq(progress_eta_s(p, now), fcases[_i].eta_s);
    ck_assert_double_eq_tol(progress_rate(p, now), fcases[_i].rate, 1e-6);
    progress_free(p);
}
END_TEST

START_TEST(the_json_has_the_same_figures)
{
    progress *p = make(_i);
    long long now = fcases[_i].now_us;
    json_t *j = progress_json(p, now);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "progress");
    ck_assert_str_eq(json_string_value(json_object_get(j, "subject")), "account");
    ck_assert_str_eq(json_string_value(json_object_get(j, "phase")), "reading");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "events_done")), fcases[_i].done);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "events_total")), fcases[_i].total);
    ck_assert_double_eq_tol(json_number_value(json_object_get(j, "events_per_s")), fcases[_i].rate,
                            0.05);
    const json_t *eta = json_object_get(j, "eta_s");
    if (fcases[_i].eta_s < 0)
        ck_assert(json_is_null(eta));
    else
        ck_assert_int_eq(json_integer_value(eta), fcases[_i].eta_s);
    const json_t *parts = json_object_get(j, "partitions");
    ck_assert_uint_eq(json_array_size(parts), fcases[_i].nparts);
    for (size_t k = 0; k < fcases[_i].nparts; k++) {
        const json_t *q = json_array_get(parts, k);
        ck_assert_int_eq(json_integer_value(json_object_get(q, "partition")), (int)k);
        ck_assert_int_eq(json_integer_value(json_object_get(q, "position")),
                         fcases[_i].parts[k][1]);
        ck_assert_int_eq(json_integer_value(json_object_get(q, "end")), fcases[_i].parts[k][2]);
    }
    json_decref(j);
    progress_free(p);
}
END_TEST

static const struct {
    long long s;
    const char *want;
} dcases[] = {
    {-1, "?"},      {0, "0s"},          {59, "59s"},        {60, "1m00s"},
    {125, "2m05s"}, {3600, "1h00m00s"}, {3723, "1h02m03s"}, {90061, "25h01m01s"},
};

START_TEST(durations_read_as_people_write_them)
{
    char buf[32];
    ck_assert_str_eq(progress_duration(dcases[_i].s, buf, sizeof(buf)), dcases[_i].want);
}
END_TEST

START_TEST(the_text_line_shows_the_figures)
{
    progress *p = make(1); /* half way */
    char *line = progress_text(p, fcases[1].now_us);
    ck_assert_str_eq(line, "rebuild account: reading  75/150 events (50.0%)  8 events/s  ETA 10s");
    free(line);
    progress_free(p);
}
END_TEST

/* A reader at the end of a partition completes it; only all of them complete the read. */
START_TEST(a_read_completes_when_every_partition_ends)
{
    progress *p = make(1); /* half way: {0, 50, 100}, {0, 25, 50} */
    ck_assert(!progress_complete(p));
    progress_end_reached(p, 1);
    ck_assert_int_eq(p->parts[1].position, 50);
    ck_assert_int_eq(p->parts[0].position, 50); /* the other one is left alone */
    ck_assert(!progress_complete(p));
    progress_end_reached(p, 7); /* not one of ours: nothing */
    ck_assert(!progress_complete(p));
    progress_end_reached(p, 0);
    ck_assert(progress_complete(p));
    ck_assert_int_eq(progress_done(p), progress_total(p));
    p->parts[0].position = 130; /* past the end (a later message) stays where it is */
    progress_end_reached(p, 0);
    ck_assert_int_eq(p->parts[0].position, 130);
    progress_free(p);
    p = make(6); /* nothing to read is complete from the start */
    ck_assert(progress_complete(p));
    progress_free(p);
}
END_TEST

/* A terminal gets a line rewritten in place; anything else gets one JSON object per line. */
START_TEST(a_terminal_gets_one_line_anything_else_json_lines)
{
    progress *p = make(1);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    progress_emit(p, f, true, false, fcases[1].now_us);
    progress_emit(p, f, true, true, fcases[1].now_us);
    fclose(f);
    ck_assert_msg(strncmp(buf, "\r\033[Krebuild account: reading", 27) == 0, "%s", buf);
    ck_assert_int_eq(buf[len - 1], '\n');
    ck_assert(strchr(buf, '\n') == buf + len - 1); /* one newline, at the end */
    free(buf);
    buf = NULL;
    f = open_memstream(&buf, &len);
    progress_emit(p, f, false, false, fcases[1].now_us);
    progress_emit(p, f, false, true, fcases[1].now_us);
    fclose(f);
    char *second = strchr(buf, '\n') + 1;
    ck_assert_int_eq(second[strlen(second) - 1], '\n');
    json_error_t e;
    json_t *j = json_loadb(buf, (size_t)(second - buf), 0, &e);
    ck_assert_msg(json_is_object(j), "%s: %s", buf, e.text);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "events_done")), 75);
    json_decref(j);
    free(buf);
    progress_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("progress");
    tcase_add_loop_test(tc, the_figures_add_up_over_partitions, 0, N(fcases));
    tcase_add_loop_test(tc, the_json_has_the_same_figures, 0, N(fcases));
    tcase_add_loop_test(tc, durations_read_as_people_write_them, 0, N(dcases));
    tcase_add_test(tc, the_text_line_shows_the_figures);
    tcase_add_test(tc, a_read_completes_when_every_partition_ends);
    tcase_add_test(tc, a_terminal_gets_one_line_anything_else_json_lines);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

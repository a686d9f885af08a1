/* test_deadletter.c: table-driven tests of reading dead letters and the redrive's selection. */

#include "checkrun.h"
#include "ops/cmdcopy.h"
#include "ops/deadletter.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define U1 "00000000-0000-4000-8000-000000000001"
#define U2 "00000000-0000-4000-8000-000000000002"

/* A dead letter's headers: an envelope with id (NULL: none), then the dlq_ headers given. */
static void letter(kafka_message *m, const char *id, const char *reason, const char *source,
                   long long ts)
{
    memset(m, 0, sizeof(*m));
    size_t n = 0;
    m->headers[n++] = (header){"ce_specversion", "1.0", 3};
    m->headers[n++] = (header){"ce_source", "/g", 2};
    m->headers[n++] = (header){"ce_type", "cart.create", 11};
    if (id)
        m->headers[n++] = (header){"ce_id", id, strlen(id)};
    if (reason)
        m->headers[n++] = (header){"dlq_reason", reason, strlen(reason)};
    if (source)
        m->headers[n++] = (header){"dlq_source", source, strlen(source)};
    m->nheaders = n;
    m->timestamp_ms = ts;
}

static const struct {
    const char *name;
    const char *id, *reason, *source;
    bool ok, has_id;
    int partition;
    long long offset;
} lcases[] = {
    {"a dead letter", U1, "unknown-command", "2/17", true, true, 2, 17},
    {"one without command id", NULL, "bad-envelope", "0/3", true, false, 0, 3},
    {"one with an id that is no UUID", "x", "bad-envelope", "1/1", true, false, 1, 1},
    {"no reason: not a dead letter", U1, NULL, "2/17", false, false, 0, 0},
    {"no source: not a dead letter", U1, "unknown-command", NULL, false, false, 0, 0},
    {"a source that is no position", U1, "unknown-command", "2-17", false, false, 0, 0},
};

START_TEST(a_dead_letter_parses_or_is_no_dead_letter)
{
    kafka_message m;
    letter(&m, lcases[_i].id, lcases[_i].reason, lcases[_i].source, 1234);
    deadletter d;
    ck_assert_msg(deadletter_parse(&m, &d) == lcases[_i].ok, "%s", lcases[_i].name);
    if (!lcases[_i].ok)
        return;
    ck_assert_str_eq(d.reason, lcases[_i].reason);
    ck_assert(d.has_id == lcases[_i].has_id);
    if (d.has_id)
        ck_assert_str_eq(d.id, lcases[_i].id);
    ck_assert_int_eq(d.source_partition, lcases[_i].partition);
    ck_assert_int_eq(d.source_offset, lcases[_i].offset);
    ck_assert_int_eq(d.time_ms, 1234);
}
END_TEST

static const struct {
    const char *reason, *since, *until, *ids;
    const char *err; /* NULL: accepted */
} fcases[] = {
    {"", "", "", "", NULL},
    {"invalid-payload", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00+02:00", U1 "," U2, NULL},
    {"typo", "", "", "", "reason: 'typo'"},
    {"", "monday", "", "", "since: 'monday'"},
    {"", "", "2026-13-01T00:00:00Z", "", "until: '2026-13-01T00:00:00Z'"},
    {"", "", "", U1 ",42", "id: '42' is not a command id"},
};

START_TEST(a_bad_filter_names_its_criterion)
{
    deadletter_filter f;
    char err[256] = "";
    int rc = deadletter_filter_init(&f, fcases[_i].reason, fcases[_i].since, fcases[_i].until,
                                    fcases[_i].ids, err, sizeof(err));
    if (!fcases[_i].err) {
        ck_assert_msg(rc == 0, "%s", err);
    } else {
        ck_assert_int_eq(rc, -1);
        ck_assert_msg(strstr(err, fcases[_i].err), "'%s' does not say '%s'", err, fcases[_i].err);
        ck_assert_ptr_null(f.reason); /* cleared */
        ck_assert_int_eq(f.nids, 0);
    }
    deadletter_filter_clear(&f);
}
END_TEST

#define T0 1767225600000LL /* 2026-01-01T00:00:00Z */

static const struct {
    const char *name;
    const char *reason, *since, *until, *ids; /* the filter */
    const char *l_reason, *l_id;              /* the letter (l_id NULL: none) */
    long long l_time;
    bool selected;
} scases[] = {
    {"no criterion", "", "", "", "", "unknown-command", NULL, T0, true},
    {"the reason", "unknown-command", "", "", "", "unknown-command", U1, T0, true},
    {"another reason", "invalid-payload", "", "", "", "unknown-command", U1, T0, false},
    {"since is inclusive", "", "2026-01-01T00:00:00Z", "", "", "unknown-command", U1, T0, true},
    {"before since", "", "2026-01-01T00:00:00.001Z", "", "", "unknown-command", U1, T0, false},
    {"until is exclusive", "", "", "2026-01-01T00:00:00Z", "", "unknown-command", U1, T0, false},
    {"before until", "", "", "2026-01-01T00:00:00.001Z", "", "unknown-command", U1, T0, true},
    {"no timestamp, since given", "", "2026-01-01T00:00:00Z", "", "", "unknown-command", U1, -1,
     false},
    {"one of the ids", "", "", "", U2 "," U1, "unknown-command", U1, T0, true},
    {"an id in capitals", "", "", "", "00000000-0000-4000-8000-00000000000A", "unknown-command",
     "00000000-0000-4000-8000-00000000000a", T0, true},
    {"not one of the ids", "", "", "", U2, "unknown-command", U1, T0, false},
    {"ids given, the letter has none", "", "", "", U1, "bad-envelope", NULL, T0, false},
    {"every criterion", "unknown-command", "2025-12-31T00:00:00Z", "2026-01-02T00:00:00Z", U1,
     "unknown-command", U1, T0, true},
    {"every criterion but one", "unknown-command", "2025-12-31T00:00:00Z", "2026-01-02T00:00:00Z",
     U2, "unknown-command", U1, T0, false},
};

START_TEST(a_letter_is_selected_by_every_criterion_or_none)
{
    deadletter_filter f;
    char err[256];
    ck_assert_int_eq(deadletter_filter_init(&f, scases[_i].reason, scases[_i].since,
                                            scases[_i].until, scases[_i].ids, err, sizeof(err)),
                     0);
    kafka_message m;
    letter(&m, scases[_i].l_id, scases[_i].l_reason, "0/1", scases[_i].l_time);
    deadletter d;
    ck_assert(deadletter_parse(&m, &d));
    ck_assert_msg(deadletter_selected(&f, &d) == scases[_i].selected, "%s", scases[_i].name);
    deadletter_filter_clear(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deadletter");
    TCase *tc = tcase_create("deadletter");
    tcase_add_loop_test(tc, a_dead_letter_parses_or_is_no_dead_letter, 0, N(lcases));
    tcase_add_loop_test(tc, a_bad_filter_names_its_criterion, 0, N(fcases));
    tcase_add_loop_test(tc, a_letter_is_selected_by_every_criterion_or_none, 0, N(scases));
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

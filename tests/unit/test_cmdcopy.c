/* test_cmdcopy.c: table-driven tests of the copies operators put back into the commands topic. */

#include "checkrun.h"
#include "ops/cmdcopy.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define UUID      "6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a"
#define ID_HEADER "ce_id=6f1c2a4e-0d5b-4c1e-9a57-3f2b1d0c9e8a" /* one literal, for clang-tidy */

/* Headers from "name=value" strings (values borrowed from the strings, up to 8). */
static size_t make(const char *const *spec, header *h)
{
    size_t n = 0;
    for (; spec[n]; n++) {
        const char *eq = strchr(spec[n], '=');
        static char names[8][64];
        snprintf(names[n], sizeof(names[n]), "%.*s", (int)(eq - spec[n]), spec[n]);
        h[n] = (header){names[n], eq + 1, strlen(eq + 1)};
    }
    return n;
}

static const struct {
    const char *name;
    const char *headers[8];
    bool ok;
} icases[] = {
    {"a valid envelope", {"ce_specversion=1.0", ID_HEADER, "ce_source=/g", "ce_type=a.b"}, true},
    {"an id in capitals",
     {"ce_specversion=1.0", "ce_id=6F1C2A4E-0D5B-4C1E-9A57-3F2B1D0C9E8A", "ce_source=/g",
      "ce_type=a.b"},
     true},
    {"an id that is no UUID",
     {"ce_specversion=1.0", "ce_id=x", "ce_source=/g", "ce_type=a.b"},
     false},
    {"no spec version", {ID_HEADER, "ce_source=/g", "ce_type=a.b"}, false},
    {"no type", {"ce_specversion=1.0", ID_HEADER, "ce_source=/g"}, false},
    {"a bad number",
     {"ce_specversion=1.0", ID_HEADER, "ce_source=/g", "ce_type=a.b", "ce_expectedversion=-1"},
     false},
};

START_TEST(a_copy_names_its_command_id_or_is_refused)
{
    header h[8];
    size_t n = make(icases[_i].headers, h);
    char id[IDS_UUID_LEN] = "";
    ck_assert_msg(cmdcopy_id(h, n, id) == icases[_i].ok, "%s", icases[_i].name);
    if (icases[_i].ok)
        ck_assert_int_eq(strcasecmp(id, UUID), 0);
}
END_TEST

static const struct {
    const char *headers[3];
    long long want;
} tcases[] = {
    {{"ce_time=1970-01-01T00:00:01.250Z", NULL}, 1250},
    {{"ce_type=x", "ce_time=1970-01-01T01:00:00+01:00", NULL}, 0},
    {{"ce_type=x", NULL}, 777},            /* none: the message's timestamp */
    {{"ce_time=last tuesday", NULL}, 777}, /* not a time: the same */
};

START_TEST(a_copy_takes_its_time_from_ce_time_or_the_message)
{
    header h[8];
    size_t n = make(tcases[_i].headers, h);
    ck_assert_int_eq(cmdcopy_time_ms(h, n, 777), tcases[_i].want);
}
END_TEST

static const struct {
    const char *name;
    const char *in[8];
    const char *out[8]; /* names, then the mark */
} hcases[] = {
    {"a gateway's command keeps all but the reply partition",
     {"ce_specversion=1.0", ID_HEADER, "ce_replypartition=3", "ce_idempotencykey=k", "ce_time=t",
      NULL},
     {"ce_specversion", "ce_id", "ce_idempotencykey", "ce_time", "mark", NULL}},
    {"a dead letter loses its dlq_ headers",
     {ID_HEADER, "dlq_reason=unknown-command", "dlq_detail=x", "dlq_source=0/5", "ce_type=a.b",
      NULL},
     {"ce_id", "ce_type", "mark", NULL}},
    {"a copy of a copy has one mark",
     {ID_HEADER, "cqrs_replay_of=1/2", "cqrs_redrive_of=3/4", NULL},
     {"ce_id", "mark", NULL}},
    {"no headers", {NULL}, {"mark", NULL}},
};

START_TEST(a_copy_keeps_its_headers_and_carries_the_mark)
{
    header in[8], out[CMDCOPY_MAX_HEADERS];
    size_t n = make(hcases[_i].in, in);
    size_t got = cmdcopy_headers(in, n, "mark", "7/8", out);
    size_t want = 0;
    while (hcases[_i].out[want])
        want++;
    ck_assert_msg(got == want, "%s: %zu headers, want %zu", hcases[_i].name, got, want);
    for (size_t i = 0; i < got; i++)
        ck_assert_str_eq(out[i].name, hcases[_i].out[i]);
    ck_assert_int_eq(out[got - 1].len, 3);
    ck_assert_int_eq(memcmp(out[got - 1].value, "7/8", 3), 0);
}
END_TEST

static const struct {
    const char *text;
    bool ok;
    int partition;
    long long offset;
} pcases[] = {
    {"0/5", true, 0, 5},
    {"12/345", true, 12, 345},
    {"3/9223372036854775807", true, 3, 9223372036854775807LL},
    {"", false, 0, 0},
    {"/5", false, 0, 0},
    {"5/", false, 0, 0},
    {"a/5", false, 0, 0},
    {"1/2/3", false, 0, 0},
    {"-1/5", false, 0, 0},
    {"1/ 5", false, 0, 0},
    {"2000000/1", false, 0, 0},
    {"1/9223372036854775808", false, 0, 0},
};

START_TEST(positions_parse_as_partition_and_offset)
{
    int p = -7;
    long long o = -7;
    bool ok = cmdcopy_parse_position(pcases[_i].text, strlen(pcases[_i].text), &p, &o);
    ck_assert_msg(ok == pcases[_i].ok, "'%s'", pcases[_i].text);
    if (ok) {
        ck_assert_int_eq(p, pcases[_i].partition);
        ck_assert_int_eq(o, pcases[_i].offset);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cmdcopy");
    TCase *tc = tcase_create("cmdcopy");
    tcase_add_loop_test(tc, a_copy_names_its_command_id_or_is_refused, 0, N(icases));
    tcase_add_loop_test(tc, a_copy_takes_its_time_from_ce_time_or_the_message, 0, N(tcases));
    tcase_add_loop_test(tc, a_copy_keeps_its_headers_and_carries_the_mark, 0, N(hcases));
    tcase_add_loop_test(tc, positions_parse_as_partition_and_offset, 0, N(pcases));
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

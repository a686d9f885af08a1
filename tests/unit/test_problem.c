/* test_problem.c: table-driven tests of the failure kind -> HTTP status and problem+json map. */
#include "checkrun.h"
#include "http/problem.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Every kind, in enum order; the last row must be the last kind. */
static const struct {
    problem_kind kind;
    int status;
    const char *name;
} kcases[] = {
    {PROBLEM_MALFORMED_JSON, 400, "malformed-json"},
    {PROBLEM_INVALID_REQUEST, 400, "invalid-request"},
    {PROBLEM_UNKNOWN_COMMAND, 400, "unknown-command"},
    {PROBLEM_INVALID_QUERY, 400, "invalid-query"},
    {PROBLEM_INVALID_PAYLOAD, 400, "invalid-payload"},
    {PROBLEM_NOT_FOUND, 404, "not-found"},
    {PROBLEM_METHOD_NOT_ALLOWED, 405, "method-not-allowed"},
    {PROBLEM_ALREADY_EXISTS, 409, "already-exists"},
    {PROBLEM_IN_FLIGHT, 409, "in-flight"},
    {PROBLEM_VERSION_MISMATCH, 412, "version-mismatch"},
    {PROBLEM_TOO_LARGE, 413, "too-large"},
    {PROBLEM_KEY_REUSED, 422, "idempotency-key-reused"},
    {PROBLEM_AGGREGATE_NOT_FOUND, 422, "aggregate-not-found"},
    {PROBLEM_PRECONDITION, 422, "precondition-failed"},
    {PROBLEM_INVARIANT, 422, "invariant-violated"},
    {PROBLEM_INTERNAL, 500, "internal"},
    {PROBLEM_UNAVAILABLE, 503, "unavailable"},
    {PROBLEM_UNAUTHORIZED, 401, "unauthorized"},
    {PROBLEM_FORBIDDEN, 403, "forbidden"},
    {PROBLEM_RATE_LIMITED, 429, "rate-limited"},
    {PROBLEM_NUMBER_OUT_OF_RANGE, 400, "number-out-of-range"},
    {PROBLEM_BAD_REQUEST, 400, "bad-request"},
    {PROBLEM_REQUEST_TIMEOUT, 408, "request-timeout"},
    {PROBLEM_EXPECTATION_FAILED, 417, "expectation-failed"},
    {PROBLEM_HEADERS_TOO_LARGE, 431, "headers-too-large"},
    {PROBLEM_NOT_IMPLEMENTED, 501, "not-implemented"},
};

START_TEST(every_problem_kind_is_in_the_table)
{
    ck_assert_int_eq(N(kcases), PROBLEM_NOT_IMPLEMENTED + 1);
    for (int i = 0; i < N(kcases); i++)
        ck_assert_int_eq(kcases[i].kind, i);
}
END_TEST

START_TEST(each_kind_has_its_status_and_type)
{
    problem_kind k = kcases[_i].kind;
    ck_assert_int_eq(problem_status(k), kcases[_i].status);
    ck_assert_str_eq(problem_name(k), kcases[_i].name);
    /* Names are unique: a client tells kinds apart by the type URI alone. */
    for (int j = 0; j < N(kcases); j++) {
        if (j != _i)
            ck_assert_str_ne(problem_name(kcases[j].kind), problem_name(k));
    }
}
END_TEST

/* problem_new with a detail and an errors array. */
START_TEST(a_problem_carries_its_detail_and_errors)
{
    problem_kind k = kcases[_i].kind;
    json_t *errors = json_pack("[{s:s, s:s}]", "pointer", "/amount", "keyword", "minimum");
    json_incref(errors); /* keep one reference to see that problem_new() stole the other */
    json_t *p = problem_new(k, "something went wrong", errors);
    ck_assert_ptr_nonnull(p);
    char type[64];
    snprintf(type, sizeof(type), "/problems/%s", kcases[_i].name);
    ck_assert_str_eq(json_string_value(json_object_get(p, "type")), type);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), kcases[_i].status);
    ck_assert(json_is_integer(json_object_get(p, "status")));
    const char *title = json_string_value(json_object_get(p, "title"));
    ck_assert_ptr_nonnull(title);
    ck_assert_int_gt(strlen(title), 0);
    ck_assert_str_eq(json_string_value(json_object_get(p, "detail")), "something went wrong");
    ck_assert_ptr_eq(json_object_get(p, "errors"), errors);
    ck_assert_int_eq(json_object_size(p), 5);
    json_decref(p);
    ck_assert_int_eq(errors->refcount, 1);
    json_decref(errors);
}
END_TEST

/* problem_new without detail or errors leaves both members out. */
START_TEST(a_bare_problem_leaves_detail_and_errors_out)
{
    problem_kind k = kcases[_i].kind;
    json_t *p = problem_new(k, NULL, NULL);
    ck_assert_int_eq(json_object_size(p), 3);
    ck_assert_ptr_null(json_object_get(p, "detail"));
    ck_assert_ptr_null(json_object_get(p, "errors"));
    ck_assert_int_eq(json_integer_value(json_object_get(p, "status")), kcases[_i].status);
    char type[64];
    snprintf(type, sizeof(type), "/problems/%s", kcases[_i].name);
    json_t *want = json_pack("{s:s, s:i, s:O}", "type", type, "status", kcases[_i].status, "title",
                             json_object_get(p, "title"));
    ck_assert(json_is_string(json_object_get(p, "title")));
    ck_assert(json_equal(p, want));
    json_decref(want);
    json_decref(p);
}
END_TEST

/* Every domain outcome maps to one kind; DOMAIN_OK and unknown values are internal errors. */
static const struct {
    domain_outcome o;
    problem_kind kind;
    int status;
} dcases[] = {
    {DOMAIN_INVALID_PAYLOAD, PROBLEM_INVALID_PAYLOAD, 400},
    {DOMAIN_NOT_FOUND, PROBLEM_AGGREGATE_NOT_FOUND, 422},
    {DOMAIN_ALREADY_EXISTS, PROBLEM_ALREADY_EXISTS, 409},
    {DOMAIN_PRECONDITION, PROBLEM_PRECONDITION, 422},
    {DOMAIN_INVARIANT, PROBLEM_INVARIANT, 422},
    {DOMAIN_OK, PROBLEM_INTERNAL, 500},
    {(domain_outcome)99, PROBLEM_INTERNAL, 500},
};

START_TEST(domain_outcomes_map_to_problem_kinds)
{
    problem_kind k = problem_from_domain(dcases[_i].o);
    ck_assert_int_eq(k, dcases[_i].kind);
    ck_assert_int_eq(problem_status(k), dcases[_i].status);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("problem");
    TCase *tc = tcase_create("kinds");
    tcase_add_test(tc, every_problem_kind_is_in_the_table);
    tcase_add_loop_test(tc, each_kind_has_its_status_and_type, 0, N(kcases));
    tcase_add_loop_test(tc, a_problem_carries_its_detail_and_errors, 0, N(kcases));
    tcase_add_loop_test(tc, a_bare_problem_leaves_detail_and_errors_out, 0, N(kcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("from_domain");
    tcase_add_loop_test(tc, domain_outcomes_map_to_problem_kinds, 0, N(dcases));
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

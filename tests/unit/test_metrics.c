/* test_metrics.c: table-driven tests of counters, histograms and the Prometheus text output. */
#include "checkrun.h"
#include "core/metrics.h"

#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- reading metrics_render() output back ---- */

/*
 * The value text of the sample whose series (name plus optional {labels}) is exactly series, or
 * NULL. Fails the test when the series occurs twice. Caller frees.
 */
static char *sample(const char *text, const char *series)
{
    char *found = NULL;
    size_t slen = strlen(series);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        ck_assert_msg(nl != NULL, "output does not end with a newline: '%s'", line);
        if (*line != '#' && (size_t)(nl - line) > slen && strncmp(line, series, slen) == 0 &&
            line[slen] == ' ') {
            ck_assert_msg(found == NULL, "series %s appears twice", series);
            found = strndup(line + slen + 1, (size_t)(nl - line - (long)slen - 1));
        }
        line = nl + 1;
    }
    return found;
}

/* Number of lines equal to want. */
static int count_lines(const char *text, const char *want)
{
    int n = 0;
    size_t wlen = strlen(want);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        if (!nl)
            break;
        if ((size_t)(nl - line) == wlen && strncmp(line, want, wlen) == 0)
            n++;
        line = nl + 1;
    }
    return n;
}

/* ---- counters ---- */

typedef struct {
    const char *name, *labels;
    unsigned long long adds[3];
    int nadds;
    unsigned long long want;
    const char *line; /* the sample line in the output */
} ccase;

static const ccase ccases[] = {
    {"c_total", NULL, {0}, 0, 0, "c_total 0"},
    {"c_total", NULL, {0}, 1, 0, "c_total 0"},
    {"c_total", NULL, {1, 2, 3}, 3, 6, "c_total 6"},
    {"c_total", "", {5}, 1, 5, "c_total 5"},
    {"c_total", NULL, {ULLONG_MAX}, 1, ULLONG_MAX, "c_total 18446744073709551615"},
    {"req_total", "status=\"200\"", {7}, 1, 7, "req_total{status=\"200\"} 7"},
    {"req_total",
     "method=\"POST\",status=\"503\"",
     {1, 1},
     2,
     2,
     "req_total{method=\"POST\",status=\"503\"} 2"},
};

START_TEST(counters_add_up)
{
    const ccase *tc = &ccases[_i];
    metrics *m = metrics_new();
    /* Another series first, so the case's own series is not alone in the output. */
    metrics_add(metrics_counter_get(m, "other_total", "other", NULL), 42);
    metrics_counter *c = metrics_counter_get(m, tc->name, "help text", tc->labels);
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < tc->nadds; i++)
        metrics_add(c, tc->adds[i]);
    ck_assert_uint_eq(metrics_value(c), tc->want);
    /* Registering again finds the same series. */
    ck_assert_ptr_eq(metrics_counter_get(m, tc->name, "other help", tc->labels), c);

    char *text = metrics_render(m);
    ck_assert_int_eq(count_lines(text, tc->line), 1);
    char help[128], type[128];
    snprintf(help, sizeof(help), "# HELP %s help text", tc->name);
    snprintf(type, sizeof(type), "# TYPE %s counter", tc->name);
    ck_assert_int_eq(count_lines(text, help), 1);
    ck_assert_int_eq(count_lines(text, type), 1);
    ck_assert_int_eq(count_lines(text, "other_total 42"), 1);
    free(text);
    metrics_free(m);
}
END_TEST

START_TEST(a_name_and_its_labels_make_one_counter)
{
    metrics *m = metrics_new();
    metrics_counter *a = metrics_counter_get(m, "x_total", "x", NULL);
    ck_assert_ptr_eq(metrics_counter_get(m, "x_total", "x", ""), a);
    metrics_counter *b = metrics_counter_get(m, "x_total", "x", "k=\"1\"");
    metrics_counter *c = metrics_counter_get(m, "x_total", "x", "k=\"2\"");
    metrics_counter *d = metrics_counter_get(m, "y_total", "y", NULL);
    ck_assert_ptr_ne(a, b);
    ck_assert_ptr_ne(b, c);
    ck_assert_ptr_ne(a, d);
    metrics_add(b, 3);
    ck_assert_uint_eq(metrics_value(a), 0);
    ck_assert_uint_eq(metrics_value(b), 3);
    ck_assert_uint_eq(metrics_value(c), 0);
    metrics_free(m);
    metrics_free(NULL);
}
END_TEST

/*
 * Regression (common/core/metrics.c metrics_counter_get/metrics_render), as it was before the fix:
 * counters are kept in registration order and HELP/TYPE is written whenever the name differs from
 * the previous one, so a series registered after another metric (e.g.
 * gateway_http_requests_total{status=...} created lazily per status) splits its family and repeats
 * "# TYPE", which Prometheus rejects. The comment at the append ("so series of one name stay
 * together") only holds for consecutive registration.
 */
START_TEST(series_of_one_name_stay_together)
{
    metrics *m = metrics_new();
    metrics_add(metrics_counter_get(m, "x_total", "x", "k=\"1\""), 1);
    metrics_add(metrics_counter_get(m, "y_total", "y", NULL), 1);
    metrics_add(metrics_counter_get(m, "x_total", "x", "k=\"2\""), 1);
    char *text = metrics_render(m);
    ck_assert_msg(count_lines(text, "# TYPE x_total counter") == 1, "x_total family split:\n%s",
                  text);
    /* The two x_total samples are adjacent. */
    const char *s1 = strstr(text, "x_total{k=\"1\"} 1\n");
    ck_assert_ptr_nonnull(s1);
    ck_assert_msg(strncmp(strchr(s1, '\n') + 1, "x_total{k=\"2\"} 1\n", 17) == 0,
                  "x_total samples not adjacent:\n%s", text);
    free(text);
    metrics_free(m);
}
END_TEST

/* ---- histograms ---- */

static const double bounds[] = {0.001, 0.01, 0.1, 1};
static const char *const les[] = {"0.001", "0.01", "0.1", "1", "+Inf"};

typedef struct {
    long long obs[10];
    int nobs;
    unsigned long long cum[5]; /* cumulative bucket counts, the last is +Inf */
    const char *sum;
} hcase;

static const hcase hcases[] = {
    {{0}, 0, {0, 0, 0, 0, 0}, "0.000000"},
    {{1000}, 1, {1, 1, 1, 1, 1}, "0.001000"}, /* upper bounds are inclusive */
    {{1001}, 1, {0, 1, 1, 1, 1}, "0.001001"},
    {{0, 999, 1000, 10000, 10001, 100000, 1000000, 1000001, 5000000},
     9,
     {3, 4, 6, 7, 9},
     "7.122001"},
    {{-5}, 1, {1, 1, 1, 1, 1}, "0.000000"}, /* a negative time lands low and adds nothing */
    {{3600000000LL}, 1, {0, 0, 0, 0, 1}, "3600.000000"},
    {{500, 500, 500}, 3, {3, 3, 3, 3, 3}, "0.001500"},
};

START_TEST(histograms_count_into_their_buckets)
{
    const hcase *tc = &hcases[_i];
    metrics *m = metrics_new();
    metrics_histogram *h = metrics_histogram_get(m, "lat_seconds", "latency", bounds, N(bounds));
    ck_assert_ptr_eq(metrics_histogram_get(m, "lat_seconds", "latency", bounds, 1), h);
    for (int i = 0; i < tc->nobs; i++)
        metrics_observe_us(h, tc->obs[i]);

    char *text = metrics_render(m);
    ck_assert_int_eq(count_lines(text, "# TYPE lat_seconds histogram"), 1);
    ck_assert_int_eq(count_lines(text, "# HELP lat_seconds latency"), 1);
    unsigned long long prev = 0;
    for (int i = 0; i < N(les); i++) {
        char series[64];
        snprintf(series, sizeof(series), "lat_seconds_bucket{le=\"%s\"}", les[i]);
        char *v = sample(text, series);
        ck_assert_msg(v != NULL, "no %s in\n%s", series, text);
        char *end;
        unsigned long long got = strtoull(v, &end, 10);
        ck_assert_msg(*end == '\0', "%s value '%s'", series, v);
        ck_assert_msg(got == tc->cum[i], "%s = %llu, want %llu", series, got, tc->cum[i]);
        ck_assert_uint_ge(got, prev);
        prev = got;
        free(v);
    }
    char *sum = sample(text, "lat_seconds_sum");
    char *count = sample(text, "lat_seconds_count");
    ck_assert_ptr_nonnull(sum);
    ck_assert_ptr_nonnull(count);
    ck_assert_str_eq(sum, tc->sum);
    char want_count[32];
    snprintf(want_count, sizeof(want_count), "%d", tc->nobs);
    ck_assert_str_eq(count, want_count);
    /* _count equals the +Inf bucket. */
    ck_assert_uint_eq(strtoull(count, NULL, 10), tc->cum[N(les) - 1]);
    free(sum);
    free(count);
    free(text);
    metrics_free(m);
}
END_TEST

/* Bucket labels as %g writes them, for the bounds the services use. */
static const struct {
    double bound;
    const char *le;
} lcases[] = {
    {0.0005, "0.0005"}, {0.0025, "0.0025"}, {0.25, "0.25"}, {2.5, "2.5"}, {10, "10"}, {60, "60"},
};

START_TEST(le_labels_render_as_prometheus_reads_them)
{
    metrics *m = metrics_new();
    metrics_histogram *h = metrics_histogram_get(m, "h_seconds", "h", &lcases[_i].bound, 1);
    metrics_observe_us(h, 1);
    char *text = metrics_render(m);
    char series[64];
    snprintf(series, sizeof(series), "h_seconds_bucket{le=\"%s\"}", lcases[_i].le);
    char *v = sample(text, series);
    ck_assert_msg(v != NULL, "no %s in\n%s", series, text);
    ck_assert_str_eq(v, "1");
    free(v);
    free(text);
    metrics_free(m);
}
END_TEST

/* ---- the whole output for a small registry ---- */

START_TEST(a_small_registry_renders_exactly)
{
    metrics *m = metrics_new();
    char *text = metrics_render(m);
    ck_assert_str_eq(text, "");
    free(text);

    metrics_add(metrics_counter_get(m, "a_total", "A things", NULL), 3);
    metrics_add(metrics_counter_get(m, "b_total", "B things", "status=\"200\""), 1);
    metrics_add(metrics_counter_get(m, "b_total", "B things", "status=\"500\""), 2);
    static const double b[] = {0.001, 0.01, 0.1};
    metrics_histogram *h = metrics_histogram_get(m, "lat_seconds", "Latency", b, 3);
    metrics_observe_us(h, 500);
    metrics_observe_us(h, 1000);
    metrics_observe_us(h, 5000);
    metrics_observe_us(h, 200000);
    text = metrics_render(m);
    ck_assert_str_eq(text, "# HELP a_total A things\n"
                           "# TYPE a_total counter\n"
                           "a_total 3\n"
                           "# HELP b_total B things\n"
                           "# TYPE b_total counter\n"
                           "b_total{status=\"200\"} 1\n"
                           "b_total{status=\"500\"} 2\n"
                           "# HELP lat_seconds Latency\n"
                           "# TYPE lat_seconds histogram\n"
                           "lat_seconds_bucket{le=\"0.001\"} 2\n"
                           "lat_seconds_bucket{le=\"0.01\"} 3\n"
                           "lat_seconds_bucket{le=\"0.1\"} 3\n"
                           "lat_seconds_bucket{le=\"+Inf\"} 4\n"
                           "lat_seconds_sum 0.206500\n"
                           "lat_seconds_count 4\n");
    free(text);
    metrics_free(m);
}
END_TEST

/* ---- increments from several threads ---- */

#define THREADS 8
#define ROUNDS  20000

typedef struct {
    metrics_counter *c;
    metrics_histogram *h;
} targ;

static void *hammer(void *arg)
{
    targ *t = arg;
    for (int i = 0; i < ROUNDS; i++) {
        metrics_add(t->c, 1);
        metrics_observe_us(t->h, i % 2 ? 500 : 50000);
    }
    return NULL;
}

START_TEST(counts_are_exact_across_threads)
{
    metrics *m = metrics_new();
    static const double b[] = {0.001};
    targ t = {metrics_counter_get(m, "t_total", "t", NULL),
              metrics_histogram_get(m, "t_seconds", "t", b, 1)};
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer, &t), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_uint_eq(metrics_value(t.c), (unsigned long long)THREADS * ROUNDS);
    char *text = metrics_render(m);
    char want[64];
    snprintf(want, sizeof(want), "t_seconds_count %d", THREADS * ROUNDS);
    ck_assert_int_eq(count_lines(text, want), 1);
    snprintf(want, sizeof(want), "t_seconds_bucket{le=\"0.001\"} %d", THREADS * ROUNDS / 2);
    ck_assert_int_eq(count_lines(text, want), 1);
    free(text);
    metrics_free(m);
}
END_TEST

START_TEST(gauges_go_up_and_down)
{
    metrics *m = metrics_new();
    metrics_gauge *g = metrics_gauge_get(m, "parked", "requests waiting", "worker=\"0\"");
    ck_assert_ptr_eq(metrics_gauge_get(m, "parked", "requests waiting", "worker=\"0\""), g);
    metrics_gauge_add(g, 3);
    metrics_gauge_add(g, -5);
    ck_assert_int_eq(metrics_gauge_value(g), -2);
    char *text = metrics_render(m);
    ck_assert_int_eq(count_lines(text, "# TYPE parked gauge"), 1);
    ck_assert_int_eq(count_lines(text, "parked{worker=\"0\"} -2"), 1);
    free(text);
    metrics_gauge_add(g, 2);
    text = metrics_render(m);
    ck_assert_int_eq(count_lines(text, "parked{worker=\"0\"} 0"), 1);
    free(text);
    metrics_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("counters");
    tcase_add_loop_test(tc, counters_add_up, 0, N(ccases));
    tcase_add_test(tc, a_name_and_its_labels_make_one_counter);
    tcase_add_test(tc, series_of_one_name_stay_together);
    tcase_add_test(tc, gauges_go_up_and_down);
    suite_add_tcase(s, tc);
    tc = tcase_create("histograms");
    tcase_add_loop_test(tc, histograms_count_into_their_buckets, 0, N(hcases));
    tcase_add_loop_test(tc, le_labels_render_as_prometheus_reads_them, 0, N(lcases));
    suite_add_tcase(s, tc);
    tc = tcase_create("render");
    tcase_add_test(tc, a_small_registry_renders_exactly);
    tcase_add_test(tc, counts_are_exact_across_threads);
    suite_add_tcase(s, tc);

    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

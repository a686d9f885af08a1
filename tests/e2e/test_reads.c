/*
 * test_reads.c: the read side over HTTP on the whole system (deploy/local/run.sh: processor,
 * projector, gateway): projection reads with ETag/304, read-your-writes with min_version,
 * filters on declared columns, and keyset pages that neither repeat nor skip while writes go on.
 */
#include "checkrun.h"
#include "httpc.h"
#include "stack.h"

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static stack st;

#define TIMEOUT_MS 15000
#define ACCOUNTS   60
/* The gateway's reads.max_wait_ms, set here so that the test knows its bound. */
#define READS_MAX_WAIT_MS 6000

static httpc_response post(const char *body)
{
    return httpc_request(st.http_port, "POST", "/v1/commands", NULL, body, TIMEOUT_MS);
}

static httpc_response get(const char *path, const char *headers)
{
    return httpc_request(st.http_port, "GET", path, headers, NULL, TIMEOUT_MS);
}

static long long jint(const json_t *j, const char *key)
{
    return json_integer_value(json_object_get(j, key));
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Opens account id for owner with a deposit of amount (if > 0); returns the last version. */
static long long open_account(const char *id, const char *owner, int amount)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"%s\"}}",
             id, owner);
    httpc_response r = post(body);
    ck_assert_msg(r.status == 201, "open %s: %d %s", id, r.status, r.body);
    long long v = jint(r.json, "version");
    httpc_free(&r);
    if (amount > 0) {
        snprintf(
            body, sizeof body,
            "{\"type\":\"account.deposit\",\"aggregate_id\":\"%s\",\"payload\":{\"amount\":%d}}",
            id, amount);
        r = post(body);
        ck_assert_msg(r.status == 200, "deposit %s: %d %s", id, r.status, r.body);
        v = jint(r.json, "version");
        httpc_free(&r);
    }
    return v;
}

/* A write answer gives the version; a read with min_version at once sees it. */
START_TEST(read_your_writes)
{
    long long v = open_account("ryw-1", "ryw", 40);
    char path[128];
    snprintf(path, sizeof path, "/v1/aggregates/account/ryw-1?min_version=%lld", v);
    httpc_response r = get(path, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), v);
    ck_assert_int_eq(jint(json_object_get(r.json, "state"), "balance"), 40);
    char consistency[16];
    ck_assert_ptr_nonnull(httpc_header(&r, "Read-Consistency", consistency, sizeof consistency));
    ck_assert_str_eq(consistency, "fresh");
    char etag[32];
    ck_assert_ptr_nonnull(httpc_header(&r, "ETag", etag, sizeof etag));
    httpc_free(&r);
    /* If-None-Match with the current ETag: 304 from the projection. */
    char inm[64];
    snprintf(inm, sizeof inm, "If-None-Match: %s\r\n", etag);
    r = get(path, inm);
    ck_assert_int_eq(r.status, 304);
    httpc_free(&r);
    r = get("/v1/aggregates/account/ryw-1", "If-None-Match: \"1\"\r\n");
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    /* A version that will never come: answered at the bound (reads.max_wait_ms), as stale. */
    snprintf(path, sizeof path, "/v1/aggregates/account/ryw-1?min_version=%lld", v + 100);
    r = get(path, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), v);
    ck_assert_ptr_nonnull(httpc_header(&r, "Read-Consistency", consistency, sizeof consistency));
    ck_assert_str_eq(consistency, "stale");
    httpc_free(&r);
    r = get("/v1/aggregates/account/ryw-1?min_version=0", NULL);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(jstr(r.json, "type"), "/problems/invalid-query");
    httpc_free(&r);
}
END_TEST

/* The pid of this stack's projector (found by its command line), or -1. */
static pid_t projector_pid(void)
{
    char needle[160], who[4096];
    snprintf(needle, sizeof needle, "state-processor project --pg.conninfo=host=127.0.0.1 port=%d ",
             st.pg_port);
    if (!stack_process_mentions(needle, who, sizeof who))
        return -1;
    return (pid_t)atoi(who + strlen("pid "));
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

typedef struct {
    char path[128];
    httpc_response r;
    double answered_ms; /* now_ms() when the answer came */
} timed_get;

static void *get_in_thread(void *arg)
{
    timed_get *g = arg;
    g->r = get(g->path, NULL);
    g->answered_ms = now_ms();
    return NULL;
}

/*
 * The wait is woken by the projector's NOTIFY, not by luck, polling or the bound: with the
 * projector stopped, a read for the new version waits; it is answered fresh once the projector
 * goes on, well before reads.max_wait_ms (where a read whose wake-up was lost is answered).
 */
START_TEST(min_version_waits_for_the_projector)
{
    long long v = open_account("ryw-2", "ryw", 0);
    pid_t proj = projector_pid();
    ck_assert_msg(proj > 0, "the stack's projector was not found");
    char path[96];
    snprintf(path, sizeof path, "/v1/aggregates/account/ryw-2?min_version=%lld", v);
    httpc_response r = get(path, NULL);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    /* Connections open besides the waiting read's (the /metrics request itself), once the
       earlier requests' connections, which their clients closed, are closed on the gateway too. */
    long long idle = httpc_metric_becomes(st.http_port, "gateway_http_connections", 1, TIMEOUT_MS);
    ck_assert_int_ge(idle, 1);

    /* No assertion while the projector is stopped: a failure must not leave it stopped. */
    ck_assert_int_eq(kill(proj, SIGSTOP), 0);
    httpc_response w = post("{\"type\":\"account.deposit\",\"aggregate_id\":\"ryw-2\","
                            "\"payload\":{\"amount\":5}}");
    long long v2 = jint(w.json, "version");
    timed_get g = {0};
    snprintf(g.path, sizeof g.path, "/v1/aggregates/account/ryw-2?min_version=%lld", v2);
    pthread_t th;
    int started = pthread_create(&th, NULL, get_in_thread, &g);
    /* The read is waiting once the gateway holds its connection. */
    long long open =
        httpc_metric_becomes(st.http_port, "gateway_http_connections", idle + 1, TIMEOUT_MS);
    /* Meanwhile a read without min_version answers at once with the older version. */
    r = get("/v1/aggregates/account/ryw-2", NULL);
    double resumed_ms = now_ms();
    kill(proj, SIGCONT);
    ck_assert_int_eq(w.status, 200); /* the processor applied it; nobody projected it */
    httpc_free(&w);
    ck_assert_int_eq(started, 0);
    ck_assert_int_eq(open, idle + 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), v);
    httpc_free(&r);
    pthread_join(th, NULL);
    ck_assert_int_eq(g.r.status, 200);
    ck_assert_int_eq(jint(g.r.json, "version"), v2);
    char consistency[16];
    ck_assert_ptr_nonnull(httpc_header(&g.r, "Read-Consistency", consistency, sizeof consistency));
    ck_assert_str_eq(consistency, "fresh");
    /* It did wait: the version it asked for did not exist while the projector was stopped. */
    ck_assert_msg(g.answered_ms >= resumed_ms, "answered %.0f ms before the projector went on",
                  resumed_ms - g.answered_ms);
    /* Woken by the NOTIFY: a lost wake-up is answered at the bound, fresh all the same. */
    ck_assert_msg(g.answered_ms - resumed_ms < READS_MAX_WAIT_MS / 2.0,
                  "answered %.0f ms after the projector went on; reads.max_wait_ms is %d",
                  g.answered_ms - resumed_ms, READS_MAX_WAIT_MS);
    httpc_free(&g.r);
}
END_TEST

/* Filters on declared columns; everything else is a 400 that names the parameter. */
static const struct {
    const char *query;
    int status;
    int count;             /* rows expected (status 200), of the filter-* accounts */
    const char *parameter; /* named in the 400 */
} filters[] = {
    {"owner=filter-a", 200, 2, NULL},
    {"owner=filter-a&balance_gte=20", 200, 1, NULL},
    {"owner=filter-b&balance_lt=5", 200, 1, NULL},
    {"owner=filter-b&balance_gt=5&balance_lte=30", 200, 1, NULL},
    {"owner=filter-c", 200, 0, NULL},
    {"owner=filter-a&status=open", 200, 2, NULL},
    {"nickname=x", 400, 0, "nickname"},
    {"balance_gte=ten", 400, 0, "balance_gte"},
    {"sort=nickname", 400, 0, "sort"},
    {"limit=0", 400, 0, "limit"},
    {"limit=100000", 400, 0, "limit"},
    {"cursor=zz", 400, 0, "cursor"},
    {"state=x", 400, 0, "state"},
};

START_TEST(filters_on_declared_columns)
{
    char id[32];
    /* Idempotent set-up: the first case creates the accounts, the others find them. */
    httpc_response probe = get("/v1/aggregates/account/filter-1", NULL);
    int have = probe.status;
    httpc_free(&probe);
    if (have == 404) {
        const struct {
            const char *owner;
            int amount;
        } rows[] = {{"filter-a", 10}, {"filter-a", 25}, {"filter-b", 3}, {"filter-b", 30}};
        long long last = 0;
        for (int i = 0; i < 4; i++) {
            snprintf(id, sizeof id, "filter-%d", i + 1);
            last = open_account(id, rows[i].owner, rows[i].amount);
        }
        char path[96];
        snprintf(path, sizeof path, "/v1/aggregates/account/filter-4?min_version=%lld", last);
        httpc_response r = get(path, NULL); /* the projection has caught up with all four */
        ck_assert_int_eq(r.status, 200);
        httpc_free(&r);
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/aggregates/account?%s", filters[_i].query);
    httpc_response r = get(path, NULL);
    ck_assert_msg(r.status == filters[_i].status, "%s: %d %s", filters[_i].query, r.status, r.body);
    if (r.status == 200) {
        json_t *items = json_object_get(r.json, "items");
        ck_assert_int_eq(json_array_size(items), filters[_i].count);
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            ck_assert_str_eq(jstr(it, "aggregate_type"), "account");
            ck_assert_int_eq(strncmp(jstr(it, "aggregate_id"), "filter-", 7), 0);
        }
    } else {
        ck_assert_str_eq(jstr(r.json, "type"), "/problems/invalid-query");
        const json_t *e = json_array_get(json_object_get(r.json, "errors"), 0);
        ck_assert_str_eq(jstr(e, "parameter"), filters[_i].parameter);
    }
    httpc_free(&r);
}
END_TEST

/* Writers that keep changing balances and opening accounts while the pages are read. */
static atomic_bool writing;

static void *writer(void *arg)
{
    int n = 0;
    while (atomic_load(&writing) && n < 2000) {
        char body[200];
        if (n % 3 == 0)
            snprintf(body, sizeof body,
                     "{\"type\":\"account.open\",\"aggregate_id\":\"page-new-%d-%d\","
                     "\"payload\":{\"owner\":\"pager\"}}",
                     (int)(intptr_t)arg, n);
        else
            snprintf(body, sizeof body,
                     "{\"type\":\"account.deposit\",\"aggregate_id\":\"page-%02d\","
                     "\"payload\":{\"amount\":1}}",
                     n % ACCOUNTS);
        httpc_response r = httpc_request(st.http_port, "POST", "/v1/commands",
                                         "Prefer: respond-async\r\n", body, TIMEOUT_MS);
        httpc_free(&r);
        n++;
    }
    return NULL;
}

/* Walks every page of query; counts how often each page-NN account was seen. */
static int walk(const char *query, int limit, int seen[ACCOUNTS])
{
    char cursor[1024] = "";
    int pages = 0;
    for (;;) {
        char path[1400];
        snprintf(path, sizeof path, "/v1/aggregates/account?%s&limit=%d%s%s", query, limit,
                 *cursor ? "&cursor=" : "", cursor);
        httpc_response r = get(path, NULL);
        ck_assert_msg(r.status == 200, "%s: %d %s", path, r.status, r.body);
        size_t i;
        json_t *it;
        ck_assert_int_le(json_array_size(json_object_get(r.json, "items")), limit);
        json_array_foreach(json_object_get(r.json, "items"), i, it)
        {
            int k;
            if (sscanf(jstr(it, "aggregate_id"), "page-%d", &k) == 1 && k >= 0 && k < ACCOUNTS &&
                strncmp(jstr(it, "aggregate_id"), "page-new", 8) != 0)
                seen[k]++;
        }
        pages++;
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        snprintf(cursor, sizeof cursor, "%s", next ? next : "");
        httpc_free(&r);
        if (!*cursor)
            return pages;
    }
}

START_TEST(pages_neither_repeat_nor_skip_under_writes)
{
    long long last = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        char id[32], owner[32];
        snprintf(id, sizeof id, "page-%02d", i);
        snprintf(owner, sizeof owner, "pager-%02d", (i * 37) % ACCOUNTS);
        last = open_account(id, owner, 0);
    }
    char path[96];
    snprintf(path, sizeof path, "/v1/aggregates/account/page-%02d?min_version=%lld", ACCOUNTS - 1,
             last);
    httpc_response r = get(path, NULL);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);

    atomic_store(&writing, true);
    pthread_t w[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&w[i], NULL, writer, (void *)(intptr_t)i);
    /* Sorted by id, and by owner (descending): keys that do not change while the pages go by. */
    static const char *const queries[] = {"sort=id", "sort=-owner&owner_gte=pager-", "status=open"};
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        int seen[ACCOUNTS] = {0};
        int pages = walk(queries[q], 7, seen);
        ck_assert_int_ge(pages, ACCOUNTS / 7);
        for (int i = 0; i < ACCOUNTS; i++)
            ck_assert_msg(seen[i] == 1, "%s: page-%02d seen %d times", queries[q], i, seen[i]);
    }
    atomic_store(&writing, false);
    for (int i = 0; i < 2; i++)
        pthread_join(w[i], NULL);
    /* A cursor belongs to its sort order. */
    r = get("/v1/aggregates/account?sort=id&limit=2", NULL);
    ck_assert_int_eq(r.status, 200);
    char other[1200];
    snprintf(other, sizeof other, "/v1/aggregates/account?sort=owner&cursor=%s",
             jstr(r.json, "next_cursor"));
    httpc_free(&r);
    r = get(other, NULL);
    ck_assert_int_eq(r.status, 400);
    httpc_free(&r);
}
END_TEST

/* Ids that URL clients treat specially, each accepted: its Location must name it. */
static const char *const odd_ids[] = {"a/b",
                                      "a%2Fb",
                                      "50%",
                                      "a b",
                                      "a?b=c",
                                      "a#b",
                                      "...",
                                      ".x",
                                      "x.",
                                      "a+b",
                                      "\xc3\xbc-\xc3\x9f",
                                      "\xe2\x82\xac/..",
                                      "a\\\\b"};

/* Every accepted id round-trips: its Location (percent-encoded) reads back that very id. */
START_TEST(every_accepted_id_round_trips)
{
    const char *id = odd_ids[_i];
    json_t *body = json_pack("{s:s, s:s, s:{s:s}}", "type", "account.open", "aggregate_id", id,
                             "payload", "owner", "o");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    httpc_response r = post(text);
    free(text);
    ck_assert_msg(r.status == 201, "%s: %d %s", id, r.status, r.body);
    char location[1024], path[1100];
    ck_assert_msg(httpc_header(&r, "Location", location, sizeof location), "%s: no Location", id);
    httpc_free(&r);
    snprintf(path, sizeof path, "%s?min_version=1", location);
    r = get(path, NULL);
    ck_assert_msg(r.status == 200, "%s: GET %s: %d %s", id, path, r.status, r.body);
    ck_assert_str_eq(jstr(r.json, "aggregate_id"), id);
    httpc_free(&r);
}
END_TEST

/* Ids outside the grammar (docs/api.md#identifiers) are refused with 400, before any claim. */
static const char *const bad_ids[] = {".",        "..",        "a\\u0001b",      "tab\\tin",
                                      "a\\u007f", "c1\\u0085", "nonchar\\ufffe", "nonchar\\ufdd0"};

START_TEST(ids_outside_the_grammar_are_400)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             bad_ids[_i]);
    httpc_response r = post(body);
    ck_assert_msg(r.status == 400, "%s: %d %s", bad_ids[_i], r.status, r.body);
    ck_assert_msg(strstr(jstr(r.json, "detail"), "aggregate_id"), "%s: %s", bad_ids[_i], r.body);
    httpc_free(&r);
}
END_TEST

/* A path names one aggregate or none: no segment is lost, cut at a %00 or merged. */
START_TEST(paths_that_are_not_the_id_are_404)
{
    open_account("acc-path", "o", 0);
    httpc_response r = get("/v1/aggregates/account/acc-path?min_version=1", NULL);
    ck_assert_int_eq(r.status, 200);
    httpc_free(&r);
    static const char *const paths[] = {
        "/v1/aggregates/account/acc-path/",   "/v1/aggregates/account/acc-path%00junk",
        "/v1/aggregates/account//acc-path",   "/v1/aggregates//account/acc-path",
        "/v1/aggregates/account/acc-path%2F", "/v1/aggregates/account/acc%2Dpath/x",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        r = get(paths[i], NULL);
        ck_assert_msg(r.status == 404, "%s: %d %s", paths[i], r.status, r.body);
        httpc_free(&r);
    }
    /* Percent-encoding an unreserved character changes nothing (RFC 3986 section 6.2.2.2). */
    r = get("/v1/aggregates/account/acc%2Dpath", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "aggregate_id"), "acc-path");
    httpc_free(&r);
}
END_TEST

int main(void)
{
    char gateway_args[64];
    snprintf(gateway_args, sizeof gateway_args, "--reads.max_wait_ms=%d", READS_MAX_WAIT_MS);
    setenv("GATEWAY_ARGS", gateway_args, 1);
    if (stack_start(&st, false) != 0) {
        stack_stop(&st);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("reads");
    TCase *tc = tcase_create("reads");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, read_your_writes);
    tcase_add_test(tc, min_version_waits_for_the_projector);
    tcase_add_loop_test(tc, filters_on_declared_columns, 0,
                        (int)(sizeof filters / sizeof filters[0]));
    tcase_add_test(tc, pages_neither_repeat_nor_skip_under_writes);
    tcase_add_loop_test(tc, every_accepted_id_round_trips, 0,
                        (int)(sizeof odd_ids / sizeof odd_ids[0]));
    tcase_add_loop_test(tc, ids_outside_the_grammar_are_400, 0,
                        (int)(sizeof bad_ids / sizeof bad_ids[0]));
    tcase_add_test(tc, paths_that_are_not_the_id_are_404);
    suite_add_tcase(s, tc);
    int failed = check_run(s, CK_FORK_GETENV);
    if (failed || !stack_logs_clean(&st)) {
        stack_show_logs(&st);
        failed++;
    }
    int rc = stack_stop(&st);
    if (rc == 0 && !failed)
        stack_remove(&st);
    return failed == 0 && rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

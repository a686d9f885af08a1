/*
 * test_chaos.c: two processors and a gateway under a load of deposits and withdrawals to many
 * accounts (some retried with the same Idempotency-Key, some with If-Match), while processors
 * are killed with SIGKILL and restarted five times and PostgreSQL is restarted once. Afterwards,
 * from PostgreSQL and the events topic: every command answered 2xx was decided exactly once,
 * each balance is the sum of its applied deposits minus its applied withdrawals and never
 * negative, versions run 1..n without gap, and every version has its event.
 * CQRS_TEST_CHAOS_COMMANDS (default 3000) sets the size of the run; the kills are spread over it.
 */
#include "checkrun.h"
#include "cluster.h"
#include "httpc.h"
#include "core/ids.h"
#include "pgtest.h"
#include "stack.h"

#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ACCOUNTS          200
#define THREADS           8
#define CLIENT_TIMEOUT_MS 20000

/* What an answer said: its status, and the command and version it named. */
typedef struct answer {
    int status;
    char command_id[40];
    long long version; /* 0 when it names none */
} answer;

typedef struct request {
    char key[24];
    int account;
    int amount; /* > 0 deposit, < 0 withdrawal */
    int status;
    answer first;
    answer retry; /* the answer to the client's retry, when it retried; status 0 otherwise */
} request;

static request *reqs;
static int target; /* commands to send */
static atomic_int nreqs;
static int http_port;
static cluster cl;
static pid_t procs[2], gateway_pid, projector_pid;

static pid_t start_processor(int idx)
{
    char instance[80];
    /* A killed member must leave the group in seconds, not after the default 45 s. Static
       membership: a restarted processor takes its partitions back at once (the mock cluster
       holds a returning static member back for longer than a new one, so not there). */
    snprintf(instance, sizeof(instance), "--kafka.group.instance.id=%sprocessor-%d", cl.prefix,
             idx);
    const char *extra[] = {"--retry.max_ms=1000", "--kafka.session.timeout.ms=6000",
                           cl.mock ? NULL : instance, NULL};
    return cluster_start(&cl, "state-processor", idx, extra);
}

static int post(const char *headers, const char *body, httpc_response *out)
{
    *out = httpc_request(http_port, "POST", "/v1/commands", headers, body, CLIENT_TIMEOUT_MS);
    return out->status;
}

/* Sends the command and notes what the answer said. */
static void post_noted(const char *headers, const char *body, answer *a)
{
    httpc_response res;
    a->status = post(headers, body, &res);
    const char *id = json_string_value(json_object_get(res.json, "command_id"));
    snprintf(a->command_id, sizeof(a->command_id), "%s", id ? id : "");
    a->version = json_integer_value(json_object_get(res.json, "version"));
    httpc_free(&res);
}

/*
 * A retry with the same key and body answers for the same command: once the first answer
 * decided it (200, 412, 422), the retry is that answer again, same command id and version;
 * while it is undecided (202), the same command id. A 409 (still in flight) or a 503
 * (PostgreSQL restarting) says nothing yet; a 503 first says nothing about the command.
 */
static void check_retry(const request *r)
{
    const answer *a = &r->first, *b = &r->retry;
    ck_assert_msg(b->status > 0, "retry of %s unanswered", r->key);
    if (b->status == 409 || b->status == 503 || a->status == 503 || a->status == 409)
        return;
    bool decided = a->status == 200 || a->status == 412 || a->status == 422;
    if (decided)
        ck_assert_msg(b->status == a->status, "%s: first %d, retry %d", r->key, a->status,
                      b->status);
    if (*a->command_id && *b->command_id)
        ck_assert_msg(strcmp(a->command_id, b->command_id) == 0,
                      "%s: first answered command %s, retry %s", r->key, a->command_id,
                      b->command_id);
    if (decided && a->status == 200)
        ck_assert_msg(*b->command_id && b->version == a->version,
                      "%s: first answered version %lld, retry %lld (command %s)", r->key,
                      a->version, b->version, b->command_id);
}

static void *load(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    for (int seq = 0;; seq++) {
        int i = atomic_fetch_add(&nreqs, 1);
        if (i >= target)
            break;
        request *r = &reqs[i];
        snprintf(r->key, sizeof(r->key), "c%d-%d", (int)(uintptr_t)arg, seq);
        r->account = (int)(rand_r(&seed) % ACCOUNTS);
        int amount = 1 + (int)(rand_r(&seed) % 50);
        r->amount = rand_r(&seed) % 10 < 6 ? amount : -amount;
        char headers[200], body[200];
        int extra = (int)(rand_r(&seed) % 10);
        char if_match[64] = "";
        if (extra == 0) { /* If-Match with the version just read */
            char path[64];
            snprintf(path, sizeof(path), "/v1/aggregates/account/acc-%d", r->account);
            httpc_response g = httpc_request(http_port, "GET", path, NULL, NULL, 5000);
            char etag[32];
            if (g.status == 200 && httpc_header(&g, "ETag", etag, sizeof(etag)))
                snprintf(if_match, sizeof(if_match), "If-Match: %s\r\n", etag);
            httpc_free(&g);
        }
        snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n%s%s", r->key, if_match,
                 extra >= 5 ? "Prefer: respond-async\r\n" : "");
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.%s\",\"aggregate_id\":\"acc-%d\",\"payload\":"
                 "{\"amount\":%d}}",
                 r->amount > 0 ? "deposit" : "withdraw", r->account, abs(r->amount));
        post_noted(headers, body, &r->first);
        r->status = r->first.status;
        if (extra == 2) { /* the client retries: same key, same body (checked in main) */
            post_noted(headers, body, &r->retry);
            if (r->retry.status == 0)
                r->retry.status = -1;
        }
    }
    return NULL;
}

START_TEST(chaos_keeps_every_guarantee)
{
    PGconn *db = PQconnectdb(cl.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    for (int a = 0; a < ACCOUNTS; a++) {
        char body[200];
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.open\",\"aggregate_id\":\"acc-%d\",\"payload\":{\"owner\":"
                 "\"o\"}}",
                 a);
        httpc_response r;
        int st = post(NULL, body, &r);
        /* 202 while the two processors are still sharing out the partitions */
        ck_assert_msg(st == 201 || st == 202, "open acc-%d: %d", a, st);
        httpc_free(&r);
    }
    long long opened = -1;
    for (int i = 0; i < 600 && opened != ACCOUNTS; i++) {
        opened = pgtest_int(db, "SELECT count(*) FROM aggregates WHERE type = 'account'");
        if (opened != ACCOUNTS)
            usleep(100000);
    }
    ck_assert_int_eq(opened, ACCOUNTS);
    long long start_us = ids_monotonic_us();
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, load, (void *)(uintptr_t)t);
    /* Five SIGKILLs, alternating processors, spread over the run, and one PostgreSQL restart in
       the middle. */
    for (int k = 0; k < 5; k++) {
        while (atomic_load(&nreqs) < (k + 1) * target / 6)
            usleep(20000);
        int victim = k % 2;
        kill(procs[victim], SIGKILL);
        waitpid(procs[victim], NULL, 0);
        if (k == 2) {
            PQfinish(db);
            ck_assert_int_eq(cluster_pg(&cl, "stop"), 0);
            usleep(500000);
            ck_assert_int_eq(cluster_pg(&cl, "start"), 0);
            db = PQconnectdb(cl.conninfo);
        }
        usleep(300000);
        procs[victim] = start_processor(victim);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    int n = target;
    double load_s = (double)(ids_monotonic_us() - start_us) / 1e6;

    /* Every request was answered with a status the contract has. */
    int count[600] = {0};
    for (int i = 0; i < n; i++) {
        int s = reqs[i].status;
        ck_assert_msg(s == 200 || s == 202 || s == 409 || s == 412 || s == 422 || s == 503,
                      "%s: status %d", reqs[i].key, s);
        count[s]++;
        if (reqs[i].retry.status != 0)
            check_retry(&reqs[i]);
    }
    fprintf(stderr,
            "chaos: %d commands in %.1f s: %d x 200, %d x 202, %d x 409, %d x 412, %d x 422, "
            "%d x 503\n",
            n, load_s, count[200], count[202], count[409], count[412], count[422], count[503]);

    /* Wait until every 2xx'd command is decided. */
    ck_assert(PQstatus(db) == CONNECTION_OK);
    PQclear(PQexec(db, "CREATE TEMP TABLE sent (key text PRIMARY KEY, account int, amount int, "
                       "status int)"));
    PGresult *res = PQexec(db, "COPY sent FROM STDIN");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COPY_IN);
    PQclear(res);
    for (int i = 0; i < n; i++) {
        char row[200];
        int len = snprintf(row, sizeof(row), "%s\t%d\t%d\t%d\n", reqs[i].key, reqs[i].account,
                           reqs[i].amount, reqs[i].status);
        ck_assert_int_eq(PQputCopyData(db, row, len), 1);
    }
    ck_assert_int_eq(PQputCopyEnd(db, NULL), 1);
    res = PQgetResult(db);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(res);
    PQclear(PQgetResult(db));
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM sent"), n);
    long long undecided = -1;
    for (int i = 0; i < 900 + n / 20 && undecided != 0; i++) {
        undecided =
            pgtest_int(db, "SELECT count(*) FROM sent s WHERE s.status IN (200, 202) AND NOT "
                           "EXISTS (SELECT 1 FROM commands c WHERE c.idempotency_key = s.key "
                           "AND c.status IN ('applied', 'rejected'))");
        if (undecided != 0)
            usleep(100000);
    }
    if (undecided != 0) {
        /* What there is of each: its answer, and the records under its key. */
        PGresult *u = PQexec(
            db, "SELECT s.key, s.status, c.id, c.status, c.created_at FROM sent s "
                "LEFT JOIN commands c ON c.idempotency_key = s.key WHERE s.status IN (200, 202) "
                "AND NOT EXISTS (SELECT 1 FROM commands d WHERE d.idempotency_key = s.key AND "
                "d.status IN ('applied', 'rejected')) LIMIT 20");
        for (int i = 0; PQresultStatus(u) == PGRES_TUPLES_OK && i < PQntuples(u); i++)
            fprintf(stderr, "undecided: key %s answered %s; record id %s status %s created %s\n",
                    PQgetvalue(u, i, 0), PQgetvalue(u, i, 1), PQgetvalue(u, i, 2),
                    PQgetvalue(u, i, 3), PQgetvalue(u, i, 4));
        PQclear(u);
    }
    ck_assert_msg(undecided == 0, "%lld commands answered 2xx were never decided", undecided);
    /* 200 means applied; nothing applied twice (one record per key, unique by construction). */
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM sent s JOIN commands c ON "
                                    "c.idempotency_key = s.key WHERE s.status = 200 AND "
                                    "c.status <> 'applied'"),
                     0);
    /* Balances: the applied deposits minus the applied withdrawals, never below zero. */
    ck_assert_int_eq(
        pgtest_int(db, "SELECT count(*) FROM aggregates a WHERE a.type = 'account' AND "
                       "(a.state->>'balance')::bigint <> (SELECT coalesce(sum(s.amount), 0)"
                       " FROM sent s JOIN commands c ON c.idempotency_key = s.key AND "
                       "c.status = 'applied' WHERE a.id = 'acc-' || s.account)"),
        0);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM aggregates WHERE "
                                    "(state->>'balance')::bigint < 0"),
                     0);
    /* Versions 1..n, one event per version, and the version counts the applied commands. */
    ck_assert_int_eq(pgtest_int(db,
                                "SELECT count(*) FROM (SELECT aggregate_id FROM outbox GROUP BY "
                                "aggregate_id HAVING count(*) <> max(version) OR min(version) <> 1)"
                                " g"),
                     0);
    ck_assert_int_eq(pgtest_int(db,
                                "SELECT count(*) FROM aggregates a WHERE version <> 1 + (SELECT "
                                "count(*) FROM sent s JOIN commands c ON c.idempotency_key = s.key "
                                "AND c.status = 'applied' WHERE a.id = 'acc-' || s.account)"),
                     0);
    /* The read side: once the projector has caught up, each projection row is its aggregate. */
    static const char stale_rows[] =
        "SELECT count(*) FROM aggregates a LEFT JOIN projection_account p ON p.tenant = a.tenant "
        "AND p.id = a.id WHERE a.type = 'account' AND (p.id IS NULL OR p.version <> a.version OR "
        "p.state IS DISTINCT FROM a.state OR p.balance IS DISTINCT FROM (a.state->>'balance')::"
        "bigint OR p.owner IS DISTINCT FROM a.state->>'owner')";
    long long stale = -1;
    for (int waited = 0; waited < 600 && stale != 0; waited++) { /* up to 60 s */
        stale = pgtest_int(db, stale_rows);
        if (stale != 0)
            usleep(100 * 1000);
    }
    ck_assert_msg(stale == 0, "%lld accounts differ from their projection rows", stale);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM projection_account"),
                     pgtest_int(db, "SELECT count(*) FROM aggregates WHERE type = 'account'"));
    long long events = pgtest_int(db, "SELECT count(*) FROM outbox");
    size_t published = cluster_read_events(&cl, NULL, (size_t)events, 60000, NULL);
    ck_assert_msg((long long)published == events,
                  "%zu distinct events on the topic, %lld in the "
                  "outbox",
                  published, events);
    PQfinish(db);
}
END_TEST

int main(void)
{
    if (cluster_init(&cl, "chaos") != 0)
        return EXIT_FAILURE;
    http_port = stack_free_port();
    const char *size = getenv("CQRS_TEST_CHAOS_COMMANDS");
    target = size && atoi(size) > 0 ? atoi(size) : 3000;
    reqs = calloc((size_t)target, sizeof(*reqs));

    procs[0] = start_processor(0);
    procs[1] = start_processor(1);
    char port[32];
    snprintf(port, sizeof(port), "--http.port=%d", http_port);
    const char *gw[] = {port, NULL};
    gateway_pid = cluster_start(&cl, "command-gateway", 0, gw);
    projector_pid = cluster_start(&cl, "projector", 0, NULL);
    int failed = 1;
    if (cluster_wait_ready(http_port, 60000)) {
        Suite *s = suite_create("chaos");
        TCase *tc = tcase_create("chaos");
        tcase_set_timeout(tc, 600.0 + target / 20.0);
        tcase_add_test(tc, chaos_keeps_every_guarantee);
        suite_add_tcase(s, tc);
        failed = check_run(s, CK_NOFORK); /* the services are this process's children */
    } else {
        fprintf(stderr, "the services were not ready within 60 s\n");
    }
    pid_t all[] = {procs[0], procs[1], gateway_pid, projector_pid};
    failed = cluster_finish(&cl, all, 4, failed);
    free(reqs);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

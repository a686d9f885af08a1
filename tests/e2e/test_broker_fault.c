/*
 * test_broker_fault.c: Kafka goes away under a load of sync and async commands and comes back.
 * While it is away the gateway must answer every request in bounded time (503 with Retry-After
 * when Kafka cannot confirm a command), and afterwards every command answered 2xx must be
 * applied exactly once. Runs on the mock cluster (brokers taken down by signal) and on the real
 * Apache Kafka broker (stopped and started through deploy/kafka/kafka.sh); on a 3-node cluster
 * the same test stops one node, which the cluster must ride out. And readiness comes back by itself
 * once Kafka is back, without a single request to clear it; and services started while Kafka is
 * away make their topics once it is back; and the stack stops in time while Kafka is away.
 */
#include "checkrun.h"
#include "cluster.h"
#include "core/ids.h"
#include "core/strmap.h"
#include "domain/envelope.h"
#include "httpc.h"
#include "pgtest.h"
#include "stack.h"
#include "waitfor.h"

#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS           8
#define MAX_REQUESTS      4000
#define CLIENT_TIMEOUT_MS 20000 /* far above the gateway's 5 s deadline: a hang shows as 0 */

typedef struct request {
    char key[32];
    char account[16];
    int amount;
    int status;       /* first answer */
    bool retry_after; /* a 503 carried Retry-After */
    int final_status; /* after retrying 503s with the same key */
} request;

static stack st;
static request reqs[MAX_REQUESTS];
static atomic_int nreqs;
static atomic_bool stop_load;
static atomic_int answered_2xx, answered_503; /* first answers so far */

/* Sends r as a deposit; its status, -503 for a 503 with Retry-After, 0 without an answer. */
static int deposit(const request *r, bool async, int timeout_ms)
{
    char body[200], headers[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.deposit\",\"aggregate_id\":\"%s\",\"payload\":{\"amount\":%d}}",
             r->account, r->amount);
    snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n%s", r->key,
             async ? "Prefer: respond-async\r\n" : "");
    httpc_response res =
        httpc_request(st.http_port, "POST", "/v1/commands", headers, body, timeout_ms);
    char ra[32];
    int status = res.status;
    if (status == 503 && httpc_header(&res, "Retry-After", ra, sizeof(ra)))
        status = -503; /* marks "503 with Retry-After" for the caller */
    httpc_free(&res);
    return status;
}

static void *load(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int seq = 0; !atomic_load(&stop_load); seq++) {
        int i = atomic_fetch_add(&nreqs, 1);
        if (i >= MAX_REQUESTS)
            break;
        request *r = &reqs[i];
        snprintf(r->key, sizeof(r->key), "t%d-%d", t, seq);
        snprintf(r->account, sizeof(r->account), "acc-%d", t);
        r->amount = 1 + (seq * 7 + t) % 50;
        int status = deposit(r, seq % 2 == 1, CLIENT_TIMEOUT_MS);
        r->retry_after = status == -503;
        r->status = status < 0 ? 503 : status;
        if (r->status == 200 || r->status == 202)
            atomic_fetch_add(&answered_2xx, 1);
        else if (r->status == 503)
            atomic_fetch_add(&answered_503, 1);
    }
    return NULL;
}

typedef struct count_wait {
    atomic_int *counter;
    int want;
} count_wait;

static bool count_reached(void *arg)
{
    const count_wait *w = arg;
    return atomic_load(w->counter) >= w->want;
}

/* Waits (up to timeout_ms) until *counter reaches want; its value then, 0 if it did not. */
static int answers_reach(atomic_int *counter, int want, int timeout_ms)
{
    count_wait w = {counter, want};
    return waitfor(count_reached, &w, timeout_ms) ? atomic_load(counter) : 0;
}

/*
 * Every outbox row is published (up to 60 s) and its event is on the events topic: the outbox
 * alone would not show events the relay lost on the way.
 */
static void events_all_published(PGconn *db)
{
    long long unpublished =
        pgtest_wait_int(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL", 0, 60000);
    ck_assert_msg(unpublished == 0, "%lld outbox rows unpublished 60 s after", unpublished);
    PGresult *res = PQexec(db, "SELECT tenant, aggregate_type, aggregate_id, version FROM outbox");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    int rows = PQntuples(res);
    cluster topic = {0}; /* the stack's Kafka, read as cluster_read_events() reads a cluster's */
    snprintf(topic.bootstrap, sizeof(topic.bootstrap), "%s", st.bootstrap);
    snprintf(topic.prefix, sizeof(topic.prefix), "%s", st.topic_prefix);
    strmap *ids = strmap_new();
    size_t distinct = cluster_read_events(&topic, ids, (size_t)rows, 30000, NULL);
    int missing = 0;
    char first_missing[300] = "";
    for (int i = 0; i < rows; i++) {
        char *id = envelope_event_id(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                     PQgetvalue(res, i, 2), atoll(PQgetvalue(res, i, 3)));
        if (!strmap_get(ids, id) && missing++ == 0)
            snprintf(first_missing, sizeof(first_missing), "%s", id);
        free(id);
    }
    strmap_free(ids);
    PQclear(res);
    ck_assert_msg(missing == 0,
                  "%d of %d outbox rows have no event on the topic (%zu events read), first %s",
                  missing, rows, distinct, first_missing);
}

/* Polls GET /readyz (up to timeout_ms) until 200; the last status, *kafka as readyz() gives. */
static int readyz_becomes_200(int timeout_ms, bool *kafka);

START_TEST(outage_answers_in_time_and_loses_nothing)
{
    for (int t = 0; t < THREADS; t++) {
        char body[160];
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.open\",\"aggregate_id\":\"acc-%d\",\"payload\":"
                 "{\"owner\":\"o%d\"}}",
                 t, t);
        httpc_response r =
            httpc_request(st.http_port, "POST", "/v1/commands", NULL, body, CLIENT_TIMEOUT_MS);
        ck_assert_int_eq(r.status, 201);
        httpc_free(&r);
    }

    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, load, (void *)(intptr_t)t);
    /* The load is flowing before Kafka goes away. */
    int flowing = 2 * THREADS;
    ck_assert_int_ge(answers_reach(&answered_2xx, flowing, 60000), flowing);
    ck_assert_int_eq(stack_kafka_set(&st, false), 0);
    /* Away until a request sent while Kafka is away has found its deadline (one node: a 503),
       or, on three nodes, until the cluster has carried on for a while without the node. */
    const char *nodes = getenv("CQRS_TEST_KAFKA_NODES");
    bool one_node = !nodes || atoi(nodes) <= 1;
    int during =
        one_node ? answers_reach(&answered_503, 1, 60000)
                 : answers_reach(&answered_2xx, atomic_load(&answered_2xx) + 4 * THREADS, 60000);
    ck_assert_int_eq(stack_kafka_set(&st, true), 0);
    /* Back: commands go through again. */
    int after = answers_reach(&answered_2xx, atomic_load(&answered_2xx) + 2 * THREADS, 60000);
    atomic_store(&stop_load, true);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    ck_assert_msg(during > 0, "the outage showed in no answer within 60 s");
    ck_assert_msg(after > 0, "no command went through within 60 s of Kafka's return");
    int n = atomic_load(&nreqs) < MAX_REQUESTS ? atomic_load(&nreqs) : MAX_REQUESTS;

    /* Every request was answered, with a status the contract allows. */
    int count[600] = {0};
    for (int i = 0; i < n; i++) {
        ck_assert_msg(reqs[i].status != 0, "request %s got no answer in %d ms", reqs[i].key,
                      CLIENT_TIMEOUT_MS);
        ck_assert_msg(reqs[i].status == 200 || reqs[i].status == 202 || reqs[i].status == 503,
                      "request %s: status %d", reqs[i].key, reqs[i].status);
        if (reqs[i].status == 503)
            ck_assert_msg(reqs[i].retry_after, "503 without Retry-After for %s", reqs[i].key);
        count[reqs[i].status]++;
    }
    fprintf(stderr, "broker fault: %d requests: %d x 200, %d x 202, %d x 503\n", n, count[200],
            count[202], count[503]);
    /* With one Kafka node there is an outage to see; with three, the cluster should carry on
       (its 503s, if any, are counted above but not required). */
    if (one_node)
        ck_assert_msg(count[503] > 0, "no request saw the outage");
    ck_assert_int_gt(count[200] + count[202], THREADS);

    /* A 503 is "not known to be taken": retrying with the same key is safe and must succeed.
       409 means the first attempt is still on its way (in the producer's queue): wait. When
       Kafka lost that attempt, the claim is taken over once it is older than
       idempotency.inflight_timeout_s (60 s, ADR 0006): the retries cover that too. */
    for (int i = 0; i < n; i++) {
        reqs[i].final_status = reqs[i].status;
        for (int attempt = 0;
             attempt < 75 && (reqs[i].final_status == 503 || reqs[i].final_status == 409);
             attempt++) {
            if (attempt > 0)
                sleep(1);
            int s = deposit(&reqs[i], false, CLIENT_TIMEOUT_MS);
            reqs[i].final_status = s < 0 ? 503 : s;
        }
        ck_assert_msg(reqs[i].final_status == 200 || reqs[i].final_status == 202, "retry of %s: %d",
                      reqs[i].key, reqs[i].final_status);
    }

    /* Every key was answered 2xx by now: each must be applied, exactly once. */
    PGconn *db = PQconnectdb(st.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    long long applied = -1;
    for (int i = 0; i < 600 && applied != n; i++) {
        applied = pgtest_int(db, "SELECT count(*) FROM commands WHERE status = 'applied' "
                                 "AND idempotency_key LIKE 't%'");
        if (applied != n)
            usleep(100000);
    }
    ck_assert_int_eq(applied, n);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM (SELECT idempotency_key FROM commands "
                                    "GROUP BY tenant, idempotency_key HAVING count(*) > 1) d"),
                     0);
    /* Versions 1..n per account, one event per version. */
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM (SELECT aggregate_id FROM outbox "
                                    "GROUP BY aggregate_id HAVING count(*) <> max(version) "
                                    "OR min(version) <> 1) g"),
                     0);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM aggregates a WHERE version <> "
                                    "(SELECT count(*) FROM outbox o WHERE o.aggregate_id = a.id)"),
                     0);
    /* Balances: the sum of the deposits this client made, each counted once. */
    for (int t = 0; t < THREADS; t++) {
        long long want = 0;
        char acc[16], sql[200];
        snprintf(acc, sizeof(acc), "acc-%d", t);
        for (int i = 0; i < n; i++)
            want += strcmp(reqs[i].account, acc) == 0 ? reqs[i].amount : 0;
        snprintf(sql, sizeof(sql),
                 "SELECT (state->>'balance')::bigint FROM aggregates WHERE id = '%s'", acc);
        ck_assert_int_eq(pgtest_int(db, sql), want);
    }
    events_all_published(db);
    PQfinish(db);
    /* And the gateway says it is ready again. */
    bool kafka = false;
    ck_assert_msg(readyz_becomes_200(60000, &kafka) == 200,
                  "not ready 60 s after the outage (kafka: %s)", kafka ? "true" : "false");
}
END_TEST

/* GET /readyz on the gateway: its status, and the body's "kafka" in *kafka. */
static int readyz(bool *kafka)
{
    httpc_response r = httpc_request(st.http_port, "GET", "/readyz", NULL, NULL, 2000);
    int status = r.status;
    *kafka = json_is_true(json_object_get(r.json, "kafka"));
    httpc_free(&r);
    return status;
}

typedef struct readyz_wait {
    int status;
    bool kafka;
} readyz_wait;

static bool readyz_is_200(void *arg)
{
    readyz_wait *w = arg;
    w->status = readyz(&w->kafka);
    return w->status == 200;
}

static int readyz_becomes_200(int timeout_ms, bool *kafka)
{
    readyz_wait w = {0};
    waitfor(readyz_is_200, &w, timeout_ms);
    *kafka = w.kafka;
    return w.status;
}

/*
 * Kafka goes away and comes back while nobody sends a command: the gateway says it is not ready
 * while Kafka is away (one node), and ready again within a bounded time after, by itself. An
 * orchestrator that routes by readiness would otherwise never send the traffic that cleared it.
 */
START_TEST(readiness_returns_without_traffic)
{
    bool kafka = false;
    ck_assert_int_eq(readyz(&kafka), 200);
    ck_assert_int_eq(stack_kafka_set(&st, false), 0);
    const char *nodes = getenv("CQRS_TEST_KAFKA_NODES");
    if (!nodes || atoi(nodes) <= 1) { /* one of three nodes down is no outage */
        int status = 200;
        for (int i = 0; i < 600 && (status == 200 || kafka); i++) {
            status = readyz(&kafka);
            if (status == 200 || kafka)
                usleep(100000);
        }
        ck_assert_msg(status == 503 && !kafka, "still ready 60 s into the outage");
    }
    ck_assert_int_eq(stack_kafka_set(&st, true), 0);
    long long back_us = ids_monotonic_us();
    int status = readyz_becomes_200(60000, &kafka);
    ck_assert_msg(status == 200, "not ready 60 s after Kafka came back (kafka: %s)",
                  kafka ? "true" : "false");
    fprintf(stderr, "broker fault: ready again %lld ms after Kafka came back, no traffic\n",
            (ids_monotonic_us() - back_us) / 1000);
    /* Ready means it: a sync command goes all the way (the processor may take some seconds
       more to fetch again: the wait covers that), and the next test starts on a whole pipeline. */
    httpc_response r = httpc_request(
        st.http_port, "POST", "/v1/commands", "Prefer: wait=30\r\n",
        "{\"type\":\"account.open\",\"aggregate_id\":\"idle-1\",\"payload\":{\"owner\":\"o\"}}",
        CLIENT_TIMEOUT_MS * 2);
    int opened = r.status;
    httpc_free(&r);
    ck_assert_int_eq(opened, 201);
}
END_TEST

/* Whether each of the cluster's three service logs says it could not create its topics. */
static bool every_service_gave_up_at_start(void *arg)
{
    const cluster *cl = arg;
    const char *logs[] = {"state-processor-0", "projector-0", "command-gateway-0"};
    for (size_t i = 0; i < 3; i++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s.log", cl->dir, logs[i]);
        if (!file_mentions(path, "could not create the"))
            return false;
    }
    return true;
}

typedef struct read_wait {
    int port;
    int status;
} read_wait;

static bool projection_at_version_2(void *arg)
{
    read_wait *w = arg;
    httpc_response r = httpc_request(w->port, "GET", "/v1/aggregates/account/early-1?min_version=2",
                                     NULL, NULL, CLIENT_TIMEOUT_MS);
    w->status = r.status;
    httpc_free(&r);
    return w->status == 200;
}

/*
 * A processor, a projector and a gateway started while Kafka (every node of it) is away, on topics
 * that do not exist yet (as pods that start before their Kafka): once Kafka is back they create
 * their topics by themselves, and commands go all the way, the projection included. Before, each
 * logged that it could not create the topics and never asked again: nothing created them, and a
 * consumer subscribed to a missing topic looked for it again only every 5 minutes.
 */
START_TEST(services_started_before_kafka_make_their_topics)
{
    cluster cl;
    ck_assert_int_eq(cluster_init(&cl, "early"), 0);
    snprintf(cl.bootstrap, sizeof(cl.bootstrap), "%s", st.bootstrap);
    ck_assert_int_eq(stack_kafka_set_all(&st, false), 0);
    int port = stack_free_port();
    char port_arg[40];
    snprintf(port_arg, sizeof(port_arg), "--http.port=%d", port);
    const char *gateway_extra[] = {port_arg, NULL};
    pid_t pids[3] = {cluster_start(&cl, "state-processor", 0, NULL),
                     cluster_start(&cl, "projector", 0, NULL),
                     cluster_start(&cl, "command-gateway", 0, gateway_extra)};
    bool gave_up = waitfor(every_service_gave_up_at_start, &cl, 90000);
    ck_assert_int_eq(stack_kafka_set_all(&st, true), 0);
    long long back_us = ids_monotonic_us();
    bool ready = gave_up && cluster_wait_ready(port, 120000);
    int opened = 0, deposited = 0;
    read_wait w = {.port = port};
    if (ready) {
        httpc_response r = httpc_request(port, "POST", "/v1/commands", "Prefer: wait=30\r\n",
                                         "{\"type\":\"account.open\",\"aggregate_id\":\"early-1\","
                                         "\"payload\":{\"owner\":\"o\"}}",
                                         CLIENT_TIMEOUT_MS * 2);
        opened = r.status;
        httpc_free(&r);
        r = httpc_request(port, "POST", "/v1/commands", "Prefer: wait=30\r\n",
                          "{\"type\":\"account.deposit\",\"aggregate_id\":\"early-1\",\"payload\":{"
                          "\"amount\":5}}",
                          CLIENT_TIMEOUT_MS * 2);
        deposited = r.status;
        httpc_free(&r);
        waitfor(projection_at_version_2, &w, 60000);
    }
    fprintf(stderr,
            "broker fault: services started before Kafka: the projection read %d %lld ms after "
            "Kafka came back\n",
            w.status, (ids_monotonic_us() - back_us) / 1000);
    bool failed = !gave_up || !ready || opened != 201 || deposited != 200 || w.status != 200;
    cluster_finish(&cl, pids, 3, failed);
    ck_assert_msg(gave_up, "the services did not report missing topics while Kafka was away");
    ck_assert_msg(ready, "the gateway was not ready 120 s after Kafka came back");
    ck_assert_int_eq(opened, 201);
    ck_assert_int_eq(deposited, 200);
    ck_assert_msg(w.status == 200, "the projection read answered %d 60 s after the commands",
                  w.status);
}
END_TEST

static int stop_status = -1; /* run.sh's exit status, from the test that stops the stack */

/*
 * The stack stops in time while Kafka is away and the gateway's producers hold commands it
 * cannot confirm: each worker waits for Kafka within the drain's deadline, the workers at the
 * same time, and run.sh (which kills what has not exited 10 s after its SIGTERM) never has to
 * kill a service. Before, the workers waited 5 s each, one after the other, and then a second
 * more each: 12 s.
 */
START_TEST(the_stack_stops_in_time_while_kafka_is_away)
{
    ck_assert_int_eq(stack_kafka_set(&st, false), 0);
    /* Enough connections that both workers hold some; each client leaves after 500 ms. */
    for (int i = 0; i < 4 * THREADS; i++) {
        request r = {.amount = 1};
        snprintf(r.key, sizeof(r.key), "away-%d", i);
        snprintf(r.account, sizeof(r.account), "acc-%d", i % THREADS);
        deposit(&r, true, 500); /* answered or not: the client leaves */
    }
    long long t0 = ids_monotonic_us();
    stop_status = stack_stop(&st);
    long long took_ms = (ids_monotonic_us() - t0) / 1000;
    /* The real broker is shared with the tests that run after this one: back before any check. */
    if (st.real_kafka)
        ck_assert_int_eq(stack_kafka_set(&st, true), 0);
    char log[400];
    snprintf(log, sizeof(log), "%s/run.sh.log", st.run_dir);
    fprintf(stderr, "broker fault: the stack stopped in %lld ms with Kafka away\n", took_ms);
    ck_assert_msg(!file_mentions(log, "did not exit"),
                  "run.sh had to kill a service that did not stop (the stop took %lld ms)",
                  took_ms);
    ck_assert_int_eq(stop_status, 0);
}
END_TEST

int main(void)
{
    if (stack_start(&st, true) != 0) {
        stack_stop(&st);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("broker-fault");
    TCase *idle = tcase_create("readiness");
    tcase_set_timeout(idle, 240);
    tcase_add_test(idle, readiness_returns_without_traffic);
    suite_add_tcase(s, idle);
    TCase *tc = tcase_create("outage");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, outage_answers_in_time_and_loses_nothing);
    suite_add_tcase(s, tc);
    TCase *early = tcase_create("start");
    tcase_set_timeout(early, 400);
    tcase_add_test(early, services_started_before_kafka_make_their_topics);
    suite_add_tcase(s, early);
    TCase *last = tcase_create("stop"); /* stops the stack: the last test */
    tcase_set_timeout(last, 120);
    tcase_add_test(last, the_stack_stops_in_time_while_kafka_is_away);
    suite_add_tcase(s, last);
    int failed = check_run(s, CK_NOFORK); /* the stack is this process's child */
    if (failed)
        stack_show_logs(&st);
    int status = st.pid > 0 ? stack_stop(&st) : stop_status;
    if (!stack_logs_clean(&st)) {
        fprintf(stderr, "a sanitizer reported an error in a service log\n");
        failed++;
    }
    if (!failed && status == 0)
        stack_remove(&st);
    return failed || status != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

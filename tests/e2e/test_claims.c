/*
 * test_claims.c: the Idempotency-Key claims a gateway makes in PostgreSQL. A keyed request that
 * is answered 503 (PostgreSQL down, its claim still queued or still running; Kafka's producer
 * refusing at once) or abandoned by its client must leave no claim behind: the same key succeeds
 * as soon as PostgreSQL is back, not after idempotency.inflight_timeout_s (60 s here), and each
 * command is applied exactly once. Runs the services as processes on the runner's PostgreSQL,
 * which it stops and starts again.
 */
#include "checkrun.h"
#include "cluster.h"
#include "httpc.h"
#include "core/ids.h"
#include "pgtest.h"
#include "stack.h"
#include "waitfor.h"

#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLIENT_TIMEOUT_MS 10000
/* The gateway's sync.timeout_ms: a request whose key cannot be claimed gets 503 after it. */
#define SYNC_TIMEOUT_MS 2000
/* How soon after PostgreSQL is back every key must have succeeded (inflight_timeout_s is 60). */
#define PROMPT_MS 15000

static cluster cl;
static int port, refusing_port; /* the refusing gateway's producer takes no message over 1 KiB */
static pid_t pids[3];

/* POSTs body with Idempotency-Key: key, or, when key is "", with none and asking for a 202. */
static int post(int to, const char *key, const char *body, int timeout_ms, httpc_response *out)
{
    char headers[128];
    if (*key)
        snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n", key);
    else
        snprintf(headers, sizeof(headers), "Prefer: respond-async\r\n");
    *out = httpc_request(to, "POST", "/v1/commands", headers, body, timeout_ms);
    return out->status;
}

static void deposit_body(char *buf, size_t len, const char *account, int amount)
{
    snprintf(buf, len,
             "{\"type\":\"account.deposit\",\"aggregate_id\":\"%s\",\"payload\":{\"amount\":%d}}",
             account, amount);
}

static void open_account(const char *id)
{
    char body[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             id);
    httpc_response r = httpc_request(port, "POST", "/v1/commands", NULL, body, CLIENT_TIMEOUT_MS);
    ck_assert_msg(r.status == 201, "open %s: %d", id, r.status);
    httpc_free(&r);
}

/* Stops (pg_ctl -m fast: connections are cut) or starts the runner's PostgreSQL. */
static void pg(bool start)
{
    char cmd[800];
    if (start)
        snprintf(cmd, sizeof(cmd), "deploy/local/pg.sh start '%s' %d >/dev/null 2>&1", cl.pg_dir,
                 cl.pg_port);
    else
        snprintf(cmd, sizeof(cmd), "deploy/local/pg.sh stop '%s' >/dev/null 2>&1", cl.pg_dir);
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

static PGconn *db_connect(void)
{
    PGconn *db = PQconnectdb(cl.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    return db;
}

/* Rows of the commands table for key k. */
static long long rows_of(PGconn *db, const char *k)
{
    char q[256];
    snprintf(q, sizeof(q), "SELECT count(*) FROM commands WHERE idempotency_key = '%.40s'", k);
    return pgtest_int(db, q);
}

/*
 * Sends the keyed request again until it gets a 2xx or until deadline_us (monotonic), waiting
 * 200 ms after a 409 or a 503. Returns the last status.
 */
static int retry_until_2xx(const char *key, const char *body, long long deadline_us)
{
    int status = 0;
    while (ids_monotonic_us() < deadline_us) {
        httpc_response r;
        status = post(port, key, body, CLIENT_TIMEOUT_MS, &r);
        httpc_free(&r);
        if (status >= 200 && status < 300)
            break;
        usleep(200000);
    }
    return status;
}

/* Waits (up to 30 s) until no command of the cluster is still accepted. */
static long long wait_decided(PGconn *db)
{
    long long accepted = -1;
    for (int i = 0; i < 300 && accepted != 0; i++) {
        accepted = pgtest_int(db, "SELECT count(*) FROM commands WHERE status = 'accepted'");
        if (accepted != 0)
            usleep(100000);
    }
    return accepted;
}

typedef struct shot {
    char key[32];
    char body[160];
    int timeout_ms;
    int status;
    char retry_after[16];
    char command_id[48]; /* the answer's, if it names one */
} shot;

static void *fire(void *arg)
{
    shot *s = arg;
    httpc_response r;
    s->status = post(port, s->key, s->body, s->timeout_ms, &r);
    if (!httpc_header(&r, "Retry-After", s->retry_after, sizeof(s->retry_after)))
        s->retry_after[0] = '\0';
    const char *id = json_string_value(json_object_get(r.json, "command_id"));
    snprintf(s->command_id, sizeof(s->command_id), "%s", id ? id : "");
    httpc_free(&r);
    return NULL;
}

#define ANSWERED 8 /* requests that wait for their answer: 503 */
#define GONE     4 /* requests whose client gives up while the claim is queued */

START_TEST(keys_caught_in_a_postgresql_outage_are_free_once_it_is_back)
{
    open_account("acc-out");
    pg(false);
    shot shots[ANSWERED + GONE];
    pthread_t th[ANSWERED + GONE];
    int expected = 0;
    for (int i = 0; i < ANSWERED + GONE; i++) {
        shot *s = &shots[i];
        memset(s, 0, sizeof(*s));
        snprintf(s->key, sizeof(s->key), "%s-%d", i < ANSWERED ? "out" : "gone", i);
        deposit_body(s->body, sizeof(s->body), "acc-out", i + 1);
        s->timeout_ms = i < ANSWERED ? CLIENT_TIMEOUT_MS : SYNC_TIMEOUT_MS / 4;
        expected += i + 1;
        pthread_create(&th[i], NULL, fire, s);
    }
    shot unkeyed = {.key = "", .timeout_ms = CLIENT_TIMEOUT_MS};
    deposit_body(unkeyed.body, sizeof(unkeyed.body), "acc-out", 10000);
    expected += 10000;
    pthread_t unkeyed_th;
    pthread_create(&unkeyed_th, NULL, fire, &unkeyed);
    for (int i = 0; i < ANSWERED + GONE; i++)
        pthread_join(th[i], NULL);
    pthread_join(unkeyed_th, NULL);
    /* Every request answered at its deadline, or its client gone. */
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_commands_unanswered", 0, PROMPT_MS), 0);
    pg(true);
    long long back_us = ids_monotonic_us();
    for (int i = 0; i < ANSWERED; i++) {
        ck_assert_msg(shots[i].status == 503, "%s: %d", shots[i].key, shots[i].status);
        ck_assert_msg(shots[i].retry_after[0], "%s: 503 without Retry-After", shots[i].key);
        /* Nothing was published: an id would name a command that does not exist. */
        ck_assert_msg(!shots[i].command_id[0], "%s: 503 names command %s", shots[i].key,
                      shots[i].command_id);
    }
    for (int i = ANSWERED; i < ANSWERED + GONE; i++)
        ck_assert_msg(shots[i].status == 0, "%s: answered %d before its client left", shots[i].key,
                      shots[i].status);
    /* A write without a key needs no PostgreSQL: it is in Kafka, and the answer says so. */
    ck_assert_msg(unkeyed.status == 202, "without a key: %d", unkeyed.status);

    /* One gateway worker, one connection, queries in order: once a later claim is answered,
       whatever the outage left queued has run. */
    char probe[160];
    deposit_body(probe, sizeof(probe), "acc-out", 1000);
    expected += 1000;
    int st = retry_until_2xx("probe-1", probe, back_us + PROMPT_MS * 1000LL);
    ck_assert_msg(st >= 200 && st < 300, "probe after the outage: %d", st);
    PGconn *db = db_connect();
    for (int i = 0; i < ANSWERED + GONE; i++)
        ck_assert_msg(rows_of(db, shots[i].key) == 0,
                      "%s: a claim was left behind by a request answered 503 or abandoned",
                      shots[i].key);

    /* The clients retry with the same keys: each succeeds promptly. */
    for (int i = 0; i < ANSWERED + GONE; i++) {
        st = retry_until_2xx(shots[i].key, shots[i].body, back_us + PROMPT_MS * 1000LL);
        ck_assert_msg(st >= 200 && st < 300, "%s: %d %.1f s after PostgreSQL was back",
                      shots[i].key, st, (double)(ids_monotonic_us() - back_us) / 1e6);
    }
    fprintf(stderr, "claims: every key succeeded %.1f s after PostgreSQL was back\n",
            (double)(ids_monotonic_us() - back_us) / 1e6);

    /* Each applied exactly once, and nothing left accepted. */
    ck_assert_int_eq(wait_decided(db), 0);
    for (int i = 0; i < ANSWERED + GONE; i++) {
        char q[256];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM commands WHERE idempotency_key = '%.40s' AND status = "
                 "'applied'",
                 shots[i].key);
        ck_assert_msg(pgtest_int(db, q) == 1, "%s not applied once", shots[i].key);
    }
    ck_assert_int_eq(pgtest_int(db, "SELECT (state->>'balance')::bigint FROM aggregates WHERE "
                                    "type = 'account' AND id = 'acc-out'"),
                     expected);
    PQfinish(db);
}
END_TEST

/* A read's 503 and its Retry-After, in seconds; status 0 when the read answered something else. */
static int read_retry_after(int *status)
{
    httpc_response r =
        httpc_request(port, "GET", "/v1/aggregates/account/acc-ra", NULL, NULL, CLIENT_TIMEOUT_MS);
    char buf[32];
    const char *ra = httpc_header(&r, "Retry-After", buf, sizeof(buf));
    *status = r.status;
    int s = r.status == 503 && ra ? atoi(ra) : 0;
    httpc_free(&r);
    return s;
}

typedef struct advice_wait {
    int min, best;
} advice_wait;

static bool advice_reaches(void *arg)
{
    advice_wait *w = arg;
    int status, s = read_retry_after(&status);
    w->best = s > w->best ? s : w->best;
    return w->best >= w->min;
}

/* Polls (for up to timeout_ms) until a read's 503 advises at least min seconds; the most seen. */
static int retry_after_reaches(int min, int timeout_ms)
{
    advice_wait w = {.min = min};
    waitfor(advice_reaches, &w, timeout_ms);
    return w.best;
}

/* True once PostgreSQL answers a read again (no projector runs: 404 is an answer). */
static bool reads_answered(void *arg)
{
    read_retry_after(arg);
    return *(int *)arg == 200 || *(int *)arg == 404;
}

/* Retry-After grows as a PostgreSQL outage lasts, and starts again at 1 s with the next one. */
START_TEST(retry_after_grows_with_an_outage_and_not_beyond_it)
{
    open_account("acc-ra");
    pg(false);
    int status = 0;
    ck_assert_int_eq(retry_after_reaches(1, PROMPT_MS), 1); /* the outage seen: 1 s at first */
    ck_assert_int_ge(retry_after_reaches(3, PROMPT_MS), 3); /* 1 s more for each 2 s of it */
    pg(true);
    ck_assert_msg(waitfor(reads_answered, &status, PROMPT_MS), "reads never recovered: %d", status);
    pg(false);
    int first = retry_after_reaches(1, PROMPT_MS);
    pg(true);
    ck_assert_msg(first >= 1 && first <= 2, "the next outage starts at %d s", first);
}
END_TEST

/* The claim of each case blocks behind a row the test holds uncommitted, past the deadline. */
static const struct {
    const char *key;
    int client_timeout_ms; /* shorter than the deadline: the client leaves first */
} held_cases[] = {
    {"held-answered", CLIENT_TIMEOUT_MS},
    {"held-gone", SYNC_TIMEOUT_MS / 4},
};

START_TEST(a_claim_made_for_a_request_already_gone_is_released)
{
    const char *key = held_cases[_i].key;
    char account[32];
    snprintf(account, sizeof(account), "acc-held-%d", _i);
    open_account(account);
    PGconn *holder = db_connect();
    char q[512];
    PQclear(PQexec(holder, "BEGIN"));
    snprintf(q, sizeof(q),
             "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
             "aggregate_id, status) VALUES ('6f1c1a4e-0000-4000-8000-00000000010%d', 'default', "
             "'%s', 'account.deposit', 'account', '%s', 'accepted')",
             _i, key, account);
    PGresult *res = PQexec(holder, q);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(holder));
    PQclear(res);
    char body[160];
    deposit_body(body, sizeof(body), account, 5);
    httpc_response r;
    int st = post(port, key, body, held_cases[_i].client_timeout_ms, &r);
    httpc_free(&r);
    ck_assert_msg(held_cases[_i].client_timeout_ms < SYNC_TIMEOUT_MS ? st == 0 : st == 503,
                  "status %d", st);
    /* The request answered at its deadline, or its client gone: the claim comes after. */
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_commands_unanswered", 0, PROMPT_MS), 0);
    PQclear(PQexec(holder, "ROLLBACK")); /* now the gateway's INSERT goes through */
    PQfinish(holder);

    long long start_us = ids_monotonic_us();
    st = retry_until_2xx(key, body, start_us + 5000000LL);
    ck_assert_msg(st >= 200 && st < 300, "%s: %d after 5 s", key, st);
    PGconn *db = db_connect();
    ck_assert_int_eq(wait_decided(db), 0);
    snprintf(q, sizeof(q),
             "SELECT (state->>'balance')::bigint FROM aggregates WHERE type = 'account' AND "
             "id = '%s'",
             account);
    ck_assert_int_eq(pgtest_int(db, q), 5);
    PQfinish(db);
}
END_TEST

START_TEST(a_produce_refused_at_once_releases_its_claim)
{
    /* Over the refusing producer's 1 KiB buffer: librdkafka refuses it in the produce call. */
    char owner[3000];
    memset(owner, 'x', sizeof(owner) - 1);
    owner[sizeof(owner) - 1] = '\0';
    char big[3200];
    snprintf(big, sizeof(big),
             "{\"type\":\"account.open\",\"aggregate_id\":\"acc-refused\",\"payload\":{\"owner\":"
             "\"%s\"}}",
             owner);
    httpc_response r;
    int st = post(refusing_port, "refused-1", big, CLIENT_TIMEOUT_MS, &r);
    ck_assert_msg(st == 503, "status %d: %s", st, r.body ? r.body : "");
    httpc_free(&r);
    /* The client sends it again, smaller: the key is free at once, not 409 until it goes stale. */
    const char *small = "{\"type\":\"account.open\",\"aggregate_id\":\"acc-refused\",\"payload\":"
                        "{\"owner\":\"o\"}}";
    st = post(refusing_port, "refused-1", small, CLIENT_TIMEOUT_MS, &r);
    ck_assert_msg(st == 201, "status %d: %s", st, r.body ? r.body : "");
    httpc_free(&r);
}
END_TEST

/* Ends the two gateways' sessions with the writer (named "command-gateway"), once both are
   connected (after an outage of an earlier test, they may not be yet): they connect again. */
static void end_writer_sessions(PGconn *db)
{
    ck_assert_int_eq(pgtest_wait_int(db,
                                     "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                     "current_database() AND application_name = 'command-gateway'",
                                     2, 15000),
                     2);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND "
                                    "application_name = 'command-gateway'"),
                     2);
}

/*
 * A gateway's session with the writer keeps generic plans while the statistics of commands
 * describe it (ADR 0039): once the table is analyzed; not once it has outgrown them (here to over
 * 1 MiB from a few pages), until it is analyzed again. Each step ends the sessions: a new one
 * starts planning each execution and asks at once. Autovacuum is kept off the table meanwhile, so
 * that only the test analyzes it; the requests go through in either mode.
 */
START_TEST(the_writer_session_keeps_generic_plans_while_commands_statistics_are_current)
{
    PGconn *db = db_connect();
    pgtest_exec(db, "ALTER TABLE commands SET (autovacuum_enabled = false)");
    pgtest_exec(db, "ANALYZE commands");
    end_writer_sessions(db);
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_generic_plan_sessions", 1, 15000), 1);
    open_account("acc-plans-1");

    pgtest_exec(db, "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, "
                    "aggregate_id, status, result) SELECT gen_random_uuid(), 'default', 'f-' || g, "
                    "'filler', 'filler', 'f-' || g, 'applied', jsonb_build_object('pad', "
                    "repeat('x', 1000)) FROM generate_series(1, 2000) g");
    end_writer_sessions(db);
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_generic_plan_sessions", 0, 15000), 0);
    open_account("acc-plans-2");

    pgtest_exec(db, "ANALYZE commands");
    end_writer_sessions(db);
    ck_assert_int_eq(httpc_metric_becomes(port, "gateway_generic_plan_sessions", 1, 15000), 1);
    open_account("acc-plans-3");

    pgtest_exec(db, "DELETE FROM commands WHERE type = 'filler'");
    pgtest_exec(db, "ALTER TABLE commands RESET (autovacuum_enabled)");
    PQfinish(db);
}
END_TEST

int main(void)
{
    if (cluster_init(&cl, "claims") != 0)
        return EXIT_FAILURE;
    port = stack_free_port();
    refusing_port = stack_free_port();
    pids[0] = cluster_start(&cl, "state-processor", 0, NULL);
    char p0[32], p1[32], sync[40];
    snprintf(p0, sizeof(p0), "--http.port=%d", port);
    snprintf(p1, sizeof(p1), "--http.port=%d", refusing_port);
    snprintf(sync, sizeof(sync), "--sync.timeout_ms=%d", SYNC_TIMEOUT_MS);
    const char *gw[] = {p0, "--workers=1", sync, "--idempotency.inflight_timeout_s=60", NULL};
    const char *refusing[] = {p1, "--workers=1", sync, "--kafka.queue.buffering.max.kbytes=1",
                              NULL};
    pids[1] = cluster_start(&cl, "command-gateway", 0, gw);
    pids[2] = cluster_start(&cl, "command-gateway", 1, refusing);
    int failed = 1;
    if (cluster_wait_ready(port, 60000) && cluster_wait_ready(refusing_port, 60000)) {
        Suite *s = suite_create("claims");
        TCase *tc = tcase_create("claims");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, keys_caught_in_a_postgresql_outage_are_free_once_it_is_back);
        tcase_add_loop_test(tc, a_claim_made_for_a_request_already_gone_is_released, 0,
                            (int)(sizeof(held_cases) / sizeof(held_cases[0])));
        tcase_add_test(tc, a_produce_refused_at_once_releases_its_claim);
        tcase_add_test(tc, retry_after_grows_with_an_outage_and_not_beyond_it);
        tcase_add_test(
            tc, the_writer_session_keeps_generic_plans_while_commands_statistics_are_current);
        suite_add_tcase(s, tc);
        failed = check_run(s, CK_NOFORK); /* the services are this process's children */
    } else {
        fprintf(stderr, "the services were not ready within 60 s\n");
    }
    failed = cluster_finish(&cl, pids, 3, failed);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

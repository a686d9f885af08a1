/*
 * test_standby.c: the services on a PostgreSQL primary with a synchronous streaming standby
 * (tests/run.sh makes it). Reads: the gateway's projection reads go to the standby
 * (pg.read_conninfo, target_session_attrs=prefer-standby), and a read with min_version waits
 * through the standby's replay lag. Failover: under a load of keyed deposits the primary is
 * killed (kill -9) and the standby promoted; the services find the new primary by themselves,
 * answer 503 with Retry-After meanwhile, and every deposit answered 2xx is applied exactly once.
 * The test prints what the failover cost (docs/operations.md quotes it).
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLIENT_TIMEOUT_MS 10000
#define SYNC_TIMEOUT_MS   2000 /* a request that cannot reach PostgreSQL gets 503 after it */
#define ACCOUNTS          8
#define CLIENTS           4
#define KEY_DEADLINE_MS   60000 /* a key not answered 2xx by then fails the test */

static cluster cl;
static int port;
static pid_t pids[3];
static char read_conninfo[600];

static long long now_ms(void)
{
    return ids_monotonic_us() / 1000;
}

static httpc_response post(const char *headers, const char *body)
{
    return httpc_request(port, "POST", "/v1/commands", headers, body, CLIENT_TIMEOUT_MS);
}

static httpc_response get(const char *path)
{
    return httpc_request(port, "GET", path, NULL, NULL, CLIENT_TIMEOUT_MS);
}

static long long jint(const json_t *j, const char *key)
{
    return json_integer_value(json_object_get(j, key));
}

static void open_account(const char *id)
{
    char body[160];
    snprintf(body, sizeof(body),
             "{\"type\":\"account.open\",\"aggregate_id\":\"%s\",\"payload\":{\"owner\":\"o\"}}",
             id);
    httpc_response r = post(NULL, body);
    char loc[128] = "", status[32] = "";
    if (r.status == 202) /* the processor had not taken its partitions yet: follow it */
        httpc_header(&r, "Location", loc, sizeof(loc));
    ck_assert_msg(r.status == 201 || loc[0], "open %s: %d %s", id, r.status, r.body);
    httpc_free(&r);
    long long until = now_ms() + 30000;
    while (loc[0] && strcmp(status, "applied") != 0 && now_ms() < until) {
        r = get(loc);
        snprintf(status, sizeof(status), "%s",
                 r.status == 200 ? json_string_value(json_object_get(r.json, "status")) : "");
        httpc_free(&r);
        if (strcmp(status, "applied") != 0)
            usleep(50000);
    }
    ck_assert_msg(!loc[0] || strcmp(status, "applied") == 0, "open %s: %s", id, status);
}

/* Runs one statement on the server on port (the primary or the standby). */
static void sql_at(int pg_port, const char *text)
{
    char ci[700];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d user=postgres dbname=postgres", pg_port);
    PGconn *db = PQconnectdb(ci);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    PGresult *r = PQexec(db, text);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", text, PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);
}

typedef struct waiting_read {
    const char *path;
    httpc_response r;
    long long answered_ms;
} waiting_read;

static void *read_in_thread(void *arg)
{
    waiting_read *w = arg;
    w->r = get(w->path);
    w->answered_ms = now_ms();
    return NULL;
}

START_TEST(reads_come_from_the_standby_and_min_version_waits_for_its_replay)
{
    open_account("acc-standby");
    httpc_response r = get("/v1/aggregates/account/acc-standby?min_version=1");
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(jint(r.json, "version"), 1);
    httpc_free(&r);

    /* The standby stops applying what it receives (a synchronous commit still returns: the
       standby has the WAL, flushed, and replays it later). */
    sql_at(cl.standby_port, "SELECT pg_wal_replay_pause()");
    r = post(NULL, "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-standby\","
                   "\"payload\":{\"amount\":5}}");
    int deposited = r.status;
    httpc_free(&r);
    PGconn *db = PQconnectdb(cl.conninfo); /* the primary */
    long long on_primary = pgtest_wait_int(
        db, "SELECT version FROM projection_account WHERE id = 'acc-standby'", 2, 15000);
    PQfinish(db);
    /* The read is the standby's: version 1, though the primary's projection has 2. */
    r = get("/v1/aggregates/account/acc-standby");
    int plain_status = r.status;
    long long plain_version = jint(r.json, "version");
    httpc_free(&r);

    long long rereads = httpc_metric(port, "gateway_read_lag_rereads_total");
    waiting_read w = {.path = "/v1/aggregates/account/acc-standby?min_version=2"};
    pthread_t th;
    pthread_create(&th, NULL, read_in_thread, &w);
    long long waiting = httpc_metric_becomes(port, "gateway_reads_waiting", 1, 10000);
    long long reread =
        httpc_metric_reaches(port, "gateway_read_lag_rereads_total", rereads + 2, 10000);
    long long resumed_ms = now_ms();
    sql_at(cl.standby_port, "SELECT pg_wal_replay_resume()");
    pthread_join(th, NULL);

    ck_assert_int_eq(deposited, 200);
    ck_assert_int_eq(on_primary, 2);
    ck_assert_int_eq(plain_status, 200);
    ck_assert_msg(plain_version == 1,
                  "a read while the standby's replay is paused saw version "
                  "%lld: not the standby's",
                  plain_version);
    ck_assert_int_eq(waiting, 1);
    ck_assert_int_ge(reread, rereads + 2);
    /* The read waited, reading the standby again, until it had replayed version 2. */
    ck_assert_msg(w.r.status == 200, "%d %s", w.r.status, w.r.body);
    char consistency[16] = "";
    httpc_header(&w.r, "Read-Consistency", consistency, sizeof(consistency));
    ck_assert_str_eq(consistency, "fresh");
    ck_assert_int_eq(jint(w.r.json, "version"), 2);
    ck_assert_int_ge(w.answered_ms, resumed_ms);
    httpc_free(&w.r);
    ck_assert_int_eq(httpc_metric(port, "gateway_reads_waiting"), 0);
}
END_TEST

/* ---- failover ---------------------------------------------------------------------------- */

typedef struct client {
    int idx;
    int keys;                  /* keys answered 2xx */
    int per_account[ACCOUNTS]; /* of those, deposits (1 each) by account */
    int after_promotion;       /* keys answered 2xx after the promotion */
    int n202;                  /* of the keys, those answered 202 (sync.timeout_ms passed) */
    int n503, no_retry_after;  /* 503 answers, and those without Retry-After */
    long long longest_gap_ms;  /* the longest time without a 200, ending at one of its own */
    int other;                 /* answers neither 2xx nor 503 (nor a client timeout) */
    long long first_503_ms, last_503_ms;
    long long slowest_ms; /* the longest a key took from its first request to its 2xx */
    char failed[160];     /* a key not answered 2xx in time */
} client;

static client clients[CLIENTS];
static atomic_bool stop_load;
static atomic_llong promoted_ms; /* 0 until the standby is promoted */
static atomic_llong last_2xx_ms; /* the last 2xx any client got */

/* Sends each key until it is answered 2xx, as a client that honours Retry-After would. */
static void *load(void *arg)
{
    client *c = arg;
    for (int n = 0; !atomic_load(&stop_load) && !c->failed[0]; n++) {
        char key[40], headers[80], body[160];
        int account = (c->idx + n) % ACCOUNTS;
        snprintf(key, sizeof(key), "fo-%d-%d", c->idx, n);
        snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n", key);
        snprintf(body, sizeof(body),
                 "{\"type\":\"account.deposit\",\"aggregate_id\":\"fo-%d\","
                 "\"payload\":{\"amount\":1}}",
                 account);
        long long sent_ms = now_ms(), deadline = sent_ms + KEY_DEADLINE_MS;
        for (;;) {
            httpc_response r = post(headers, body);
            int status = r.status;
            char retry_after[16] = "";
            httpc_header(&r, "Retry-After", retry_after, sizeof(retry_after));
            httpc_free(&r);
            if (status >= 200 && status < 300) {
                if (status != 202) { /* applied, not only accepted */
                    long long t = now_ms(), gap = t - atomic_exchange(&last_2xx_ms, t);
                    if (gap > c->longest_gap_ms)
                        c->longest_gap_ms = gap;
                }
                c->n202 += status == 202;
                c->keys++;
                c->per_account[account]++;
                if (atomic_load(&promoted_ms))
                    c->after_promotion++;
                if (now_ms() - sent_ms > c->slowest_ms)
                    c->slowest_ms = now_ms() - sent_ms;
                break;
            }
            if (status == 503) {
                c->n503++;
                c->no_retry_after += retry_after[0] == '\0';
                c->last_503_ms = now_ms();
                if (!c->first_503_ms)
                    c->first_503_ms = c->last_503_ms;
            } else if (status != 0 && status != 409) { /* 0: cut by the fault; 409: in flight */
                c->other++;
            }
            if (now_ms() > deadline) {
                snprintf(c->failed, sizeof(c->failed), "key %s: no 2xx in %d s (last %d)", key,
                         KEY_DEADLINE_MS / 1000, status);
                break;
            }
            usleep(retry_after[0] ? 200000 : 50000); /* Retry-After: 1 (s), shortened */
        }
    }
    return NULL;
}

static int total(int (*of)(const client *))
{
    int sum = 0;
    for (int i = 0; i < CLIENTS; i++)
        sum += of(&clients[i]);
    return sum;
}

static int keys_of(const client *c)
{
    return c->keys;
}

static int after_of(const client *c)
{
    return c->after_promotion;
}

static bool every_client_wrote_after_promotion(void)
{
    for (int i = 0; i < CLIENTS; i++) {
        if (clients[i].after_promotion < 5 && !clients[i].failed[0])
            return false;
    }
    return true;
}

START_TEST(a_failover_loses_nothing_and_costs_seconds_of_503)
{
    char id[16];
    for (int a = 0; a < ACCOUNTS; a++) {
        snprintf(id, sizeof(id), "fo-%d", a);
        open_account(id);
    }
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        clients[i].idx = i;
        pthread_create(&th[i], NULL, load, &clients[i]);
    }
    /* Under load: some deposits answered before the fault. */
    atomic_store(&last_2xx_ms, now_ms());
    long long until = now_ms() + 30000;
    while (total(keys_of) < 100 && now_ms() < until)
        usleep(20000);
    int before = total(keys_of);
    int old_primary = cl.pg_port;
    long long killed_us = 0, promoted_us = 0;
    int rc = cluster_pg_failover(&cl, &killed_us, &promoted_us);
    long long killed_ms = killed_us / 1000;
    atomic_store(&promoted_ms, promoted_us / 1000);
    until = now_ms() + 90000;
    while (!every_client_wrote_after_promotion() && now_ms() < until)
        usleep(20000);
    atomic_store(&stop_load, true);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);

    ck_assert_int_eq(rc, 0);
    ck_assert_int_ne(cl.pg_port, old_primary);
    ck_assert_int_ge(before, 100);
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_msg(!clients[i].failed[0], "%s", clients[i].failed);
    ck_assert_msg(every_client_wrote_after_promotion(), "%d keys answered after the promotion",
                  total(after_of));

    /* What was answered 2xx is there exactly once. */
    PGconn *db = PQconnectdb(cl.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    long long accepted =
        pgtest_wait_int(db, "SELECT count(*) FROM commands WHERE status = 'accepted'", 0, 60000);
    if (accepted != 0) {
        PGresult *r = PQexec(db, "SELECT idempotency_key, id, aggregate_id, created_at FROM "
                                 "commands WHERE status = 'accepted'");
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "left accepted: key %s, command %s, %s, since %s\n",
                    PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                    PQgetvalue(r, i, 3));
        PQclear(r);
    }
    ck_assert_int_eq(accepted, 0);
    char q[300];
    int keys = total(keys_of);
    long long applied = pgtest_int(db, "SELECT count(*) FROM commands WHERE status = 'applied' "
                                       "AND idempotency_key LIKE 'fo-%'");
    long long events = pgtest_int(db, "SELECT count(*) FROM outbox o JOIN commands c ON c.id = "
                                      "o.command_id WHERE c.idempotency_key LIKE 'fo-%' AND "
                                      "o.event_type = 'account.deposited'");
    ck_assert_int_eq(applied, keys);
    ck_assert_int_eq(events, keys);
    for (int a = 0; a < ACCOUNTS; a++) {
        int want = 0;
        for (int i = 0; i < CLIENTS; i++)
            want += clients[i].per_account[a];
        snprintf(q, sizeof(q),
                 "SELECT (state->>'balance')::bigint FROM aggregates WHERE type = 'account' AND "
                 "id = 'fo-%d'",
                 a);
        ck_assert_int_eq(pgtest_int(db, q), want);
    }
    PQfinish(db);

    int n503 = 0, bare = 0, other = 0, n202 = 0;
    long long first = 0, last = 0, slowest = 0, gap = 0;
    for (int i = 0; i < CLIENTS; i++) {
        n202 += clients[i].n202;
        if (clients[i].longest_gap_ms > gap)
            gap = clients[i].longest_gap_ms;
        if (clients[i].slowest_ms > slowest)
            slowest = clients[i].slowest_ms;
        n503 += clients[i].n503;
        bare += clients[i].no_retry_after;
        other += clients[i].other;
        if (clients[i].first_503_ms && (!first || clients[i].first_503_ms < first))
            first = clients[i].first_503_ms;
        if (clients[i].last_503_ms > last)
            last = clients[i].last_503_ms;
    }
    fprintf(stderr,
            "failover: %d deposits answered 2xx (%d of them 202, %d before the kill), each "
            "applied once; primary killed at 0 s, standby promoted at %.1f s; no deposit answered "
            "200 for %.1f s at the longest; 503s from %.1f to %.1f s (%d, all with Retry-After: "
            "%s); the slowest deposit took %.1f s from its first request to its 2xx\n",
            keys, n202, before, (double)(promoted_us - killed_ms * 1000) / 1e6, (double)gap / 1000,
            first ? (double)(first - killed_ms) / 1000 : 0.0,
            last ? (double)(last - killed_ms) / 1000 : 0.0, n503, bare ? "no" : "yes",
            (double)slowest / 1000);
    ck_assert_int_eq(bare, 0);
    ck_assert_int_eq(other, 0);
}
END_TEST

/* ---- commits in doubt ------------------------------------------------------------------- */

/* Sends SIGSTOP or SIGCONT to every process of the standby (its postmaster and children). */
static void standby_signal(const char *sig)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd),
             "pid=$(head -1 '%s/pgdata/postmaster.pid') && kill -%s $pid $(pgrep -P $pid)",
             cl.standby_dir, sig);
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

typedef struct doubt {
    char key[32];
    char body[160];
    int first; /* the status of the first attempt, sent while commits could not complete */
    int final; /* of the retries */
} doubt;

static void *send_once(void *arg)
{
    doubt *d = arg;
    char headers[128];
    snprintf(headers, sizeof(headers), "Idempotency-Key: %.40s\r\n", d->key);
    httpc_response r = post(headers, d->body);
    d->first = r.status;
    httpc_free(&r);
    return NULL;
}

#define DOUBTS 6

/*
 * A synchronous commit whose server dies while it waits for the standby is committed all the
 * same (the primary wrote it; crash recovery keeps it) though its client saw the connection
 * drop: a commit in doubt. With the standby stopped, every commit waits; the primary is then
 * stopped -m immediate and started again. Whatever the gateway's claims and the processor's
 * batches made of it, each key retried by its client is decided once.
 */
START_TEST(commits_in_doubt_are_decided_once)
{
    open_account("acc-doubt");
    doubt d[DOUBTS] = {0};
    pthread_t th[DOUBTS];
    standby_signal("STOP");
    for (int i = 0; i < DOUBTS; i++) {
        snprintf(d[i].key, sizeof(d[i].key), "doubt-%d", i);
        snprintf(d[i].body, sizeof(d[i].body),
                 "{\"type\":\"account.deposit\",\"aggregate_id\":\"acc-doubt\","
                 "\"payload\":{\"amount\":%d}}",
                 1 << i);
        pthread_create(&th[i], NULL, send_once, &d[i]);
    }
    for (int i = 0; i < DOUBTS; i++)
        pthread_join(th[i], NULL); /* 503 after sync.timeout_ms: no commit can complete */
    int rc_stop = cluster_pg(&cl, "kill");
    standby_signal("CONT");
    int rc_start = cluster_pg(&cl, "start");
    ck_assert_int_eq(rc_stop, 0);
    ck_assert_int_eq(rc_start, 0);
    long long until = now_ms() + 60000;
    for (int i = 0; i < DOUBTS; i++) {
        char headers[128];
        snprintf(headers, sizeof(headers), "Idempotency-Key: %.40s\r\n", d[i].key);
        do {
            httpc_response r = post(headers, d[i].body);
            d[i].final = r.status;
            httpc_free(&r);
            if (d[i].final < 200 || d[i].final >= 300)
                usleep(200000);
        } while ((d[i].final < 200 || d[i].final >= 300) && now_ms() < until);
    }
    PGconn *db = PQconnectdb(cl.conninfo);
    ck_assert_msg(PQstatus(db) == CONNECTION_OK, "%s", PQerrorMessage(db));
    long long accepted =
        pgtest_wait_int(db, "SELECT count(*) FROM commands WHERE status = 'accepted'", 0, 30000);
    long long balance = pgtest_wait_int(
        db,
        "SELECT (state->>'balance')::bigint FROM aggregates WHERE type = 'account' AND "
        "id = 'acc-doubt'",
        (1 << DOUBTS) - 1, 30000);
    long long events = pgtest_int(db, "SELECT count(*) FROM outbox WHERE aggregate_id = "
                                      "'acc-doubt' AND event_type = 'account.deposited'");
    PQfinish(db);
    for (int i = 0; i < DOUBTS; i++)
        ck_assert_msg(d[i].final == 200 || d[i].final == 202, "key %s: first %d, last %d", d[i].key,
                      d[i].first, d[i].final);
    ck_assert_int_eq(accepted, 0);
    ck_assert_int_eq(events, DOUBTS);
    ck_assert_int_eq(balance, (1 << DOUBTS) - 1);
}
END_TEST

/* The conninfo of the cluster's database on either server, preferring the standby. */
static void make_read_conninfo(void)
{
    const char *db = strstr(cl.conninfo, "dbname=");
    char name[64] = "";
    if (db)
        sscanf(db + strlen("dbname="), "%63s", name);
    snprintf(read_conninfo, sizeof(read_conninfo),
             "--pg.read_conninfo=host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=%s "
             "target_session_attrs=prefer-standby",
             cl.standby_port, cl.pg_port, name);
}

int main(void)
{
    if (cluster_init(&cl, "standby") != 0)
        return EXIT_FAILURE;
    if (cl.standby_port == 0) {
        fprintf(stderr, "no standby: tests/run.sh makes one for the tests of STANDBY_PG_TESTS\n");
        return EXIT_FAILURE;
    }
    make_read_conninfo();
    port = stack_free_port();
    char http[32], sync[40];
    snprintf(http, sizeof(http), "--http.port=%d", port);
    snprintf(sync, sizeof(sync), "--sync.timeout_ms=%d", SYNC_TIMEOUT_MS);
    const char *gw[] = {http, "--workers=1", sync, read_conninfo, "--reads.max_wait_ms=20000",
                        NULL};
    const char *proc[] = {"--retry.max_ms=1000", NULL};
    pids[0] = cluster_start(&cl, "state-processor", 0, proc);
    pids[1] = cluster_start(&cl, "projector", 0, NULL);
    pids[2] = cluster_start(&cl, "command-gateway", 0, gw);
    int failed = 1;
    if (cluster_wait_ready(port, 60000)) {
        Suite *s = suite_create("standby");
        TCase *tc = tcase_create("standby");
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, reads_come_from_the_standby_and_min_version_waits_for_its_replay);
        tcase_add_test(tc, commits_in_doubt_are_decided_once);
        tcase_add_test(tc, a_failover_loses_nothing_and_costs_seconds_of_503);
        suite_add_tcase(s, tc);
        failed = check_run(s, CK_NOFORK); /* the services are this process's children */
    } else {
        fprintf(stderr, "the gateway was not ready within 60 s\n");
    }
    failed = cluster_finish(&cl, pids, 3, failed);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

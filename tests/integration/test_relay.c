/*
 * test_relay.c: the outbox relay's count of the events it holds, and the waiter the processor
 * uses to take no more batches while Kafka has not confirmed them (ADR 0034); rows left
 * unpublished while it runs (a refused marking, a lost session). A mock Kafka
 * cluster of its own, whose broker the test takes down and brings back; the runner's PostgreSQL
 * (env CQRS_TEST_PG_CONNINFO).
 */
#include "checkrun.h"
#include "core/log.h"
#include "core/metrics.h"
#include "pg/pgmigrate.h"
#include "core/config.h"
#include "core/ids.h"
#include "domain/envelope.h"
#include "kafka/kafka.h"
#include "pgtest.h"
#include "waitfor.h"
#include "processor/processor.h"
#include "processor/relay.h"

#include <check.h>
#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char conninfo[512];

static void setup(void)
{
    log_init("test_relay", LOG_ERROR);
    char dbname[64];
    snprintf(dbname, sizeof(dbname), "relay_test_%d", (int)getpid());
    pgtest_create_db(dbname, conninfo, sizeof(conninfo));
    const char *mig = getenv("CQRS_MIGRATIONS_DIR");
    char err[512];
    ck_assert_msg(pgmigrate_apply(conninfo, mig ? mig : "schemas/migrations", err, sizeof(err)) ==
                      0,
                  "%s", err);
}

/* Conditions for waitfor_loop(). */
typedef struct {
    const int *flag;
    int want;
} flag_watch;

static bool flag_reaches(void *arg)
{
    const flag_watch *w = arg;
    return *w->flag >= w->want;
}

static bool nothing_unconfirmed(void *arg)
{
    return relay_unconfirmed(arg) == 0;
}

typedef struct {
    PGconn *db;
    const char *sql;
    long long want;
} count_watch;

static bool count_reaches(void *arg)
{
    const count_watch *w = arg;
    return pgtest_int(w->db, w->sql) >= w->want;
}

/* A mock cluster of its own, made by (and destroyed with) the handle in *owner. */
static rd_kafka_mock_cluster_t *mock_cluster(int brokers, rd_kafka_t **owner)
{
    char errstr[256];
    *owner = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), errstr, sizeof(errstr));
    ck_assert_msg(*owner != NULL, "%s", errstr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(*owner, brokers);
    ck_assert_ptr_nonnull(mc);
    return mc;
}

static int told;
static int delivered;

static void on_delivered(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)arg;
    if (!d->err)
        delivered++;
}

static relay *the_relay;
static size_t held_when_told;

static void on_below(void *arg)
{
    (void)arg;
    told++;
    held_when_told = relay_unconfirmed(the_relay);
}

START_TEST(the_waiter_is_told_once_kafka_has_confirmed_enough)
{
    enum { EVENTS = 10, LIMIT = 4 };
    rd_kafka_t *owner;
    rd_kafka_mock_cluster_t *mc = mock_cluster(1, &owner);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, "events", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);

    struct event_base *base = event_base_new();
    metrics *m = metrics_new();
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc));
    char err[512];
    relay *r = the_relay = relay_new(base, conninfo, &props, "events", m, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);

    ck_assert_int_eq(rd_kafka_mock_broker_set_down(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    json_t *rows = json_array();
    for (int i = 0; i < EVENTS; i++) {
        char id[24];
        snprintf(id, sizeof(id), "acc-%d", i);
        json_array_append_new(
            rows, json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:{s:i}}", "tenant", "default",
                            "aggregate_type", "account", "aggregate_id", id, "version", 1,
                            "event_type", "account.deposited", "command_id",
                            "0190c6a8-0000-7000-8000-000000000000", "payload", "amount", i));
    }
    relay_publish(r, rows);
    json_decref(rows);
    ck_assert_uint_eq(relay_unconfirmed(r), EVENTS);

    /* Nothing is confirmed while the broker is down: the waiter is not told. What is under test
       is that nothing happens, so the loop runs for a fixed half second (several of librdkafka's
       reconnection attempts) and the call must not have come. */
    told = 0;
    relay_notify_below(r, LIMIT, on_below, NULL);
    flag_watch told_once = {&told, 1};
    ck_assert(!waitfor_loop(base, flag_reaches, &told_once, 500));
    ck_assert_uint_eq(relay_unconfirmed(r), EVENTS);

    /* Back up: Kafka confirms, and the waiter is told once, when LIMIT or fewer are held. */
    ck_assert_int_eq(rd_kafka_mock_broker_set_up(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert(waitfor_loop(base, flag_reaches, &told_once, 15000));
    ck_assert_int_eq(told, 1);
    ck_assert_uint_le(held_when_told, LIMIT);
    /* the rest confirmed, with no second call */
    ck_assert(waitfor_loop(base, nothing_unconfirmed, r, 15000));
    ck_assert_int_eq(told, 1);

    /* Below the limit already: told at once. */
    relay_notify_below(r, LIMIT, on_below, NULL);
    ck_assert_int_eq(told, 2);

    relay_free(r);
    config_props_free(&props);
    metrics_free(m);
    event_base_free(base);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
}
END_TEST

/*
 * The processor's side: while Kafka cannot confirm its events (the events topic's leader down,
 * the commands topic's up), it takes the batches that fit under the relay's limit, then one a
 * second, not all of them and not none; once the leader is back, everything is applied and
 * published.
 */
START_TEST(the_processor_slows_to_a_batch_a_second_while_events_wait)
{
    /* PAST_THE_LIMIT: more than the relay may hold (4 batches, and the one that reaches the
       limit) and the batch in hand */
    enum { COMMANDS = 60, BATCH = 5, PAST_THE_LIMIT = 8 * BATCH };
    rd_kafka_t *owner;
    rd_kafka_mock_cluster_t *mc = mock_cluster(2, &owner);
    const char *names[] = {"h-commands", "h-replies", "h-commands.dlq", "h-events"};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(rd_kafka_mock_topic_create(mc, names[i], 1, 1),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_int_eq(rd_kafka_mock_partition_set_leader(mc, names[i], 0, i == 3 ? 2 : 1),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc));
    config_props_set(&props, "fetch.wait.max.ms", "5");
    char err[512];
    delivered = 0;
    kafka_producer *prod = kafka_producer_new(base, &props, on_delivered, NULL, err, sizeof(err));
    ck_assert_msg(prod != NULL, "%s", err);
    for (int i = 0; i < COMMANDS; i++) {
        char id[IDS_UUID_LEN], agg[24];
        ids_uuid(id);
        snprintf(agg, sizeof(agg), "held-%d", i);
        envelope e = {.id = id,
                      .source = "/test",
                      .type = "account.open",
                      .subject = agg,
                      .tenant = "default",
                      .expected_version = -1,
                      .reply_partition = -1};
        header h[ENVELOPE_MAX_HEADERS];
        char scratch[64];
        size_t nh = envelope_to_headers(&e, h, scratch);
        const char *v = "{\"owner\":\"ada\"}";
        ck_assert_int_eq(
            kafka_produce(prod, "h-commands", 0, agg, strlen(agg), v, strlen(v), h, nh, NULL),
            KAFKA_OK);
    }
    flag_watch all_delivered = {&delivered, COMMANDS};
    ck_assert(waitfor_loop(base, flag_reaches, &all_delivered, 15000));
    ck_assert_int_eq(rd_kafka_mock_broker_set_down(mc, 2), RD_KAFKA_RESP_ERR_NO_ERROR);

    processor_config cfg = {0};
    config_props none = {0};
    char *argv[] = {"test_relay", NULL};
    ck_assert_int_eq(config_load(processor_config_table, &cfg, &none, 1, argv, err, sizeof(err)),
                     CONFIG_LOADED);
    config_props_free(&none);
    free(cfg.pg_conninfo);
    cfg.pg_conninfo = strdup(conninfo);
    free(cfg.topic_prefix);
    cfg.topic_prefix = strdup("h-");
    free(cfg.group_id);
    cfg.group_id = strdup("h-processors");
    const char *schemas = getenv("CQRS_SCHEMAS_DIR");
    free(cfg.schemas_dir);
    cfg.schemas_dir = strdup(schemas ? schemas : "schemas/domains");
    cfg.batch_max = BATCH;
    processor *p = processor_new(base, &cfg, &props, err, sizeof(err));
    ck_assert_msg(p != NULL, "%s", err);

    PGconn *db = PQconnectdb(conninfo);
    ck_assert(PQstatus(db) == CONNECTION_OK);
    const char *applied = "SELECT count(*) FROM aggregates";
    /* More than the relay may hold is applied only through the one-second cap on each wait... */
    count_watch past = {db, applied, PAST_THE_LIMIT};
    ck_assert(waitfor_loop(base, count_reaches, &past, 30000));
    long long now = pgtest_int(db, applied);
    /* ...so the rest is still waiting, and no event is published. */
    ck_assert_int_lt(now, COMMANDS);
    ck_assert_int_eq(pgtest_int(db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"),
                     0);
    char *text = metrics_render(processor_metrics(p));
    const char *held = strstr(text, "\nprocessor_batches_held_total ");
    ck_assert_ptr_nonnull(held);
    ck_assert_int_ge(atoi(held + strlen("\nprocessor_batches_held_total ")), 2);
    free(text);

    /* The leader back: everything applied and published. */
    ck_assert_int_eq(rd_kafka_mock_broker_set_up(mc, 2), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *published = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL";
    count_watch all_published = {db, published, COMMANDS};
    ck_assert(waitfor_loop(base, count_reaches, &all_published, 30000));
    ck_assert_int_eq(pgtest_int(db, applied), COMMANDS);
    ck_assert_int_eq(pgtest_int(db, published), COMMANDS);

    PQfinish(db);
    processor_free(p);
    config_free(processor_config_table, &cfg);
    kafka_producer_free(prod);
    config_props_free(&props);
    event_base_free(base);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
}
END_TEST

/* A relay on a mock cluster of its own and the runner's PostgreSQL, and a connection to look. */
typedef struct {
    rd_kafka_t *owner;
    rd_kafka_mock_cluster_t *mc;
    struct event_base *base;
    metrics *m;
    config_props props;
    relay *r;
    PGconn *db;
} rig;

static void rig_up(rig *g)
{
    *g = (rig){0};
    g->mc = mock_cluster(1, &g->owner);
    ck_assert_int_eq(rd_kafka_mock_topic_create(g->mc, "events", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    g->base = event_base_new();
    g->m = metrics_new();
    config_props_set(&g->props, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(g->mc));
    char err[512];
    g->r = relay_new(g->base, conninfo, &g->props, "events", g->m, err, sizeof(err));
    ck_assert_msg(g->r != NULL, "%s", err);
    g->db = PQconnectdb(conninfo);
    ck_assert(PQstatus(g->db) == CONNECTION_OK);
}

static void rig_down(rig *g)
{
    PQfinish(g->db);
    relay_free(g->r);
    config_props_free(&g->props);
    metrics_free(g->m);
    event_base_free(g->base);
    rd_kafka_mock_cluster_destroy(g->mc);
    rd_kafka_destroy(g->owner);
}

static void exec_ok(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
}

/* Outbox row "acc-<i>" version 1, committed now (after the relay started), unpublished. */
static void insert_row(PGconn *db, int i)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, "
             "command_id, payload) VALUES ('default', 'account', 'acc-%d', 1, "
             "'account.deposited', '0190c6a8-0000-7000-8000-000000000000', '{\"amount\": %d}')",
             i, i);
    exec_ok(db, sql);
}

/* The same row as the processor hands it to the relay after its COMMIT. */
static json_t *row_json(int i)
{
    char id[24];
    snprintf(id, sizeof(id), "acc-%d", i);
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:{s:i}}", "tenant", "default",
                     "aggregate_type", "account", "aggregate_id", id, "version", 1, "event_type",
                     "account.deposited", "command_id", "0190c6a8-0000-7000-8000-000000000000",
                     "payload", "amount", i);
}

static const char published_sql[] = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL";

/*
 * Kafka confirmed the events, and PostgreSQL refuses the UPDATE that marks them published: the
 * UPDATE is tried again, a second apart, until it is taken; the rows do not stay unpublished for
 * the rest of the run.
 */
START_TEST(a_marking_postgresql_refused_is_tried_again)
{
    enum { EVENTS = 3 };
    rig g;
    rig_up(&g);
    exec_ok(g.db, "CREATE SEQUENCE mark_attempts");
    exec_ok(g.db, "CREATE TABLE refuse_marks AS SELECT 1 AS refuse");
    exec_ok(g.db, "CREATE FUNCTION refuse_mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "IF EXISTS (SELECT FROM refuse_marks) THEN PERFORM nextval('mark_attempts'); "
                  "RAISE EXCEPTION 'marking refused by the test'; END IF; RETURN NEW; END $$");
    exec_ok(g.db, "CREATE TRIGGER refuse_mark BEFORE UPDATE ON outbox FOR EACH ROW "
                  "EXECUTE FUNCTION refuse_mark()");
    json_t *rows = json_array();
    for (int i = 0; i < EVENTS; i++) {
        insert_row(g.db, i);
        json_array_append_new(rows, row_json(i));
    }
    relay_publish(g.r, rows);
    json_decref(rows);

    /* nextval() is not rolled back with the refused UPDATE: it counts the attempts */
    const char *attempts =
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM mark_attempts";
    count_watch again = {g.db, attempts, 3};
    ck_assert(waitfor_loop(g.base, count_reaches, &again, 15000));
    ck_assert_int_lt(pgtest_int(g.db, attempts), 10); /* a second apart, not in a loop */
    ck_assert_int_eq(pgtest_int(g.db, published_sql), 0);

    exec_ok(g.db, "DELETE FROM refuse_marks");
    count_watch all = {g.db, published_sql, EVENTS};
    ck_assert(waitfor_loop(g.base, count_reaches, &all, 15000));
    ck_assert_uint_eq(relay_unconfirmed(g.r), 0);
    rig_down(&g);
}
END_TEST

/*
 * Rows committed while the relay runs but never handed to it (the COMMIT's answer was lost with
 * the session, so the processor found the batch decided when it applied it again) are found by
 * the scan the relay makes after a lost session, its own or the processor's (relay_rescan()).
 */
START_TEST(rows_a_lost_session_hid_are_published)
{
    rig g;
    rig_up(&g);
    const char *relay_sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND pid <> pg_backend_pid()";
    count_watch connected = {g.db, relay_sessions, 1};
    ck_assert(waitfor_loop(g.base, count_reaches, &connected, 15000));

    /* its own session lost */
    insert_row(g.db, 1);
    exec_ok(g.db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                  "current_database() AND pid <> pg_backend_pid()");
    count_watch first = {g.db, published_sql, 1};
    ck_assert(waitfor_loop(g.base, count_reaches, &first, 15000));

    /* the processor's session lost */
    insert_row(g.db, 2);
    relay_rescan(g.r);
    count_watch second = {g.db, published_sql, 2};
    ck_assert(waitfor_loop(g.base, count_reaches, &second, 15000));
    ck_assert(waitfor_loop(g.base, nothing_unconfirmed, g.r, 15000));
    ck_assert_int_eq(pgtest_int(g.db, "SELECT count(*) FROM outbox"), 2);
    rig_down(&g);
}
END_TEST

/*
 * Confirmations that come one at a time are marked together: no UPDATE until enough keys have
 * gathered (or the first has waited its while, here longer than the test), then one for all.
 */
START_TEST(confirmations_are_marked_together)
{
    enum { EVENTS = 4 };
    rig g;
    rig_up(&g);
    relay_set_marking(g.r, EVENTS, 600000);
    exec_ok(g.db, "CREATE SEQUENCE mark_updates");
    exec_ok(g.db, "CREATE FUNCTION count_mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "PERFORM nextval('mark_updates'); RETURN NULL; END $$");
    exec_ok(g.db, "CREATE TRIGGER count_mark AFTER UPDATE ON outbox FOR EACH STATEMENT "
                  "EXECUTE FUNCTION count_mark()");
    for (int i = 0; i < EVENTS; i++) {
        /* each event is confirmed before the next is produced */
        insert_row(g.db, i);
        json_t *rows = json_pack("[o]", row_json(i));
        relay_publish(g.r, rows);
        json_decref(rows);
        ck_assert(waitfor_loop(g.base, nothing_unconfirmed, g.r, 15000));
        if (i < EVENTS - 1)
            ck_assert_int_eq(pgtest_int(g.db, published_sql), 0);
    }
    count_watch all = {g.db, published_sql, EVENTS};
    ck_assert(waitfor_loop(g.base, count_reaches, &all, 15000));
    ck_assert_int_eq(pgtest_int(g.db, "SELECT last_value FROM mark_updates"), 1);
    rig_down(&g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("backlog");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, the_waiter_is_told_once_kafka_has_confirmed_enough);
    tcase_add_test(tc, the_processor_slows_to_a_batch_a_second_while_events_wait);
    suite_add_tcase(s, tc);
    tc = tcase_create("unpublished");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_marking_postgresql_refused_is_tried_again);
    tcase_add_test(tc, rows_a_lost_session_hid_are_published);
    tcase_add_test(tc, confirmations_are_marked_together);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_relay.c: the outbox relay's count of the events it holds, and the waiter the processor
 * uses to take no more batches while Kafka has not confirmed them (ADR 0034). A mock Kafka
 * cluster of its own, whose broker the test takes down and brings back; the runner's PostgreSQL
 * (env CQRS_TEST_PG_CONNINFO).
 */
#include "checkrun.h"
#include "core/log.h"
#include "core/metrics.h"
#include "pg/pgmigrate.h"
#include "pgtest.h"
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

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

/* Runs the loop until *flag is at least want or timeout_ms pass; returns *flag. */
static int run_until(struct event_base *base, const int *flag, int want, int timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    for (int waited = 0; *flag < want && waited < timeout_ms; waited += 10)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *flag;
}

static int told;
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
    char errstr[256];
    rd_kafka_t *owner =
        rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), errstr, sizeof(errstr));
    ck_assert_msg(owner != NULL, "%s", errstr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(owner, 1);
    ck_assert_ptr_nonnull(mc);
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
        char id[16];
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

    /* Nothing is confirmed while the broker is down: the waiter is not told. */
    told = 0;
    relay_notify_below(r, LIMIT, on_below, NULL);
    ck_assert_int_eq(run_until(base, &told, 1, 500), 0);
    ck_assert_uint_eq(relay_unconfirmed(r), EVENTS);

    /* Back up: Kafka confirms, and the waiter is told once, when LIMIT or fewer are held. */
    ck_assert_int_eq(rd_kafka_mock_broker_set_up(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(run_until(base, &told, 1, 15000), 1);
    ck_assert_uint_le(held_when_told, LIMIT);
    int none = 0; /* the rest confirmed, with no second call */
    for (int i = 0; i < 1500 && relay_unconfirmed(r) > 0; i++)
        run_until(base, &none, 1, 10);
    ck_assert_uint_eq(relay_unconfirmed(r), 0);
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

int main(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("backlog");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, the_waiter_is_told_once_kafka_has_confirmed_enough);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}

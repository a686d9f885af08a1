/*
 * floor.c: the floor of the sync path on this machine, for comparison 3 of tests/bench/bench.sh.
 * The sync path takes two Kafka hops (the command to the processor, the reply back) and one
 * PostgreSQL commit. This measures them bare, one at a time, with the services' client settings
 * (the project's kafka module: idempotent producer, acks all, linger.ms 0, Nagle off):
 *
 *   - ROUNDS ping-pongs: produce to topic A, consume it, produce to topic B, consume it;
 *   - ROUNDS commits of one INSERT of a row the size of a command's record.
 *
 * Prints one JSON line: the percentiles of each, in microseconds.
 *
 * usage: floor BOOTSTRAP TOPIC_PREFIX CONNINFO ROUNDS
 */
#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/xalloc.h"
#include "kafka/kafka.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    struct event_base *base;
    kafka_producer *producer;
    kafka_consumer *a, *b;
    char topic_a[128], topic_b[128];
    long long sent_us; /* when the current ping was produced; 0 while none is out */
    long long *rtt_us;
    int rounds, done, warmup;
    char value[256];
} pingpong;

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)arg;
    if (d->err) {
        fprintf(stderr, "floor: delivery failed: %s\n", d->errstr);
        exit(1);
    }
}

static void send_to(pingpong *pp, const char *topic)
{
    if (kafka_produce(pp->producer, topic, 0, "k", 1, pp->value, strlen(pp->value), NULL, 0,
                      NULL) != KAFKA_OK) {
        fprintf(stderr, "floor: produce to %s failed\n", topic);
        exit(1);
    }
}

static void ping(pingpong *pp)
{
    pp->sent_us = ids_monotonic_us();
    send_to(pp, pp->topic_a);
}

/* A: the "processor" side answers at once. */
static void on_wake_a(void *arg)
{
    pingpong *pp = arg;
    kafka_message m[16];
    size_t n;
    while ((n = kafka_consumer_poll(pp->a, m, 16)) > 0) {
        for (size_t i = 0; i < n; i++)
            send_to(pp, pp->topic_b);
    }
}

/* B: the "gateway" side takes the time and sends the next ping. */
static void on_wake_b(void *arg)
{
    pingpong *pp = arg;
    kafka_message m[16];
    size_t n;
    while ((n = kafka_consumer_poll(pp->b, m, 16)) > 0) {
        for (size_t i = 0; i < n; i++) {
            long long rtt = ids_monotonic_us() - pp->sent_us;
            if (pp->warmup > 0)
                pp->warmup--;
            else
                pp->rtt_us[pp->done++] = rtt;
            if (pp->done == pp->rounds) {
                event_base_loopbreak(pp->base);
                return;
            }
            ping(pp);
        }
    }
}

static int cmp(const void *x, const void *y)
{
    long long a = *(const long long *)x, b = *(const long long *)y;
    return (a > b) - (a < b);
}

static long long pct(const long long *v, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    fprintf(stderr, "floor: the ping-pong did not finish within 120 s\n");
    exit(1);
}

static void kafka_floor(pingpong *pp, const char *bootstrap, const char *prefix)
{
    char err[512];
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", bootstrap);
    pp->producer = kafka_producer_new(pp->base, &props, on_delivery, pp, err, sizeof(err));
    if (!pp->producer) {
        fprintf(stderr, "floor: %s\n", err);
        exit(1);
    }
    snprintf(pp->topic_a, sizeof(pp->topic_a), "%sfloor-a", prefix);
    snprintf(pp->topic_b, sizeof(pp->topic_b), "%sfloor-b", prefix);
    const char *topics[] = {pp->topic_a, pp->topic_b};
    if (kafka_ensure_topics(pp->producer, topics, 2, 1, -1, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "floor: %s\n", err);
        exit(1);
    }
    char group[160];
    snprintf(group, sizeof(group), "%sfloor-a", prefix);
    pp->a = kafka_consumer_new(pp->base, &props, group, pp->topic_a, on_wake_a, NULL, pp, err,
                               sizeof(err));
    snprintf(group, sizeof(group), "%sfloor-b", prefix);
    pp->b = pp->a ? kafka_consumer_new(pp->base, &props, group, pp->topic_b, on_wake_b, NULL, pp,
                                       err, sizeof(err))
                  : NULL;
    config_props_free(&props);
    if (!pp->a || !pp->b) {
        fprintf(stderr, "floor: %s\n", err);
        exit(1);
    }
    /* The first pings (a tenth, at most 20) wait for both groups to be joined: not counted. */
    pp->warmup = pp->rounds / 10 < 20 ? pp->rounds / 10 : 20;
    ping(pp);
    struct event *t = evtimer_new(pp->base, on_timeout, pp);
    struct timeval tv = {.tv_sec = 120};
    evtimer_add(t, &tv);
    event_base_dispatch(pp->base);
    event_free(t);
    kafka_consumer_free(pp->a);
    kafka_consumer_free(pp->b);
    kafka_producer_flush(pp->producer, 10000);
    kafka_producer_free(pp->producer);
}

/* ROUNDS commits of one INSERT each, blocking: nothing else runs in this process meanwhile. */
static void pg_floor(const char *conninfo, const char *value, long long *us, int rounds)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "floor: %s", PQerrorMessage(c));
        exit(1);
    }
    /* A logged table: a temporary one writes no WAL, and its commit would flush nothing. */
    PGresult *r = PQexec(c, "DROP TABLE IF EXISTS floor_rows; "
                            "CREATE TABLE floor_rows (id uuid PRIMARY KEY, body jsonb)");
    PQclear(r);
    for (int i = 0; i < rounds; i++) {
        char id[IDS_UUID_LEN];
        ids_uuid(id);
        const char *params[] = {id, value};
        long long t0 = ids_monotonic_us();
        r = PQexecParams(c, "INSERT INTO floor_rows VALUES ($1, $2)", 2, NULL, params, NULL, NULL,
                         0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "floor: %s", PQerrorMessage(c));
            exit(1);
        }
        PQclear(r);
        us[i] = ids_monotonic_us() - t0;
    }
    PQclear(PQexec(c, "DROP TABLE floor_rows"));
    PQfinish(c);
}

int main(int argc, char **argv)
{
    if (argc != 5 || atoi(argv[4]) < 10) {
        fprintf(stderr, "usage: floor BOOTSTRAP TOPIC_PREFIX CONNINFO ROUNDS (at least 10)\n");
        return 2;
    }
    log_init("floor", LOG_WARN);
    pingpong pp = {.rounds = atoi(argv[4])};
    pp.base = event_base_new();
    if (!pp.base)
        return 1;
    pp.rtt_us = xcalloc((size_t)pp.rounds, sizeof(long long));
    long long *commit_us = xcalloc((size_t)pp.rounds, sizeof(long long));
    /* About the size of a deposit command's record: its result and ids. */
    snprintf(pp.value, sizeof(pp.value),
             "{\"command_id\":\"00000000-0000-7000-8000-000000000000\",\"status\":\"applied\","
             "\"aggregate_type\":\"account\",\"aggregate_id\":\"bench-0\",\"version\":2,"
             "\"state\":{\"owner\":\"owner 0\",\"balance\":1}}");
    kafka_floor(&pp, argv[1], argv[2]);
    pg_floor(argv[3], pp.value, commit_us, pp.rounds);
    qsort(pp.rtt_us, (size_t)pp.rounds, sizeof(long long), cmp);
    qsort(commit_us, (size_t)pp.rounds, sizeof(long long), cmp);
    printf("{\"bench\": \"floor\", \"rounds\": %d, \"kafka_p50_us\": %lld, \"kafka_p99_us\": %lld, "
           "\"commit_p50_us\": %lld, \"commit_p99_us\": %lld}\n",
           pp.rounds, pct(pp.rtt_us, pp.rounds, 0.5), pct(pp.rtt_us, pp.rounds, 0.99),
           pct(commit_us, pp.rounds, 0.5), pct(commit_us, pp.rounds, 0.99));
    free(pp.rtt_us);
    free(commit_us);
    event_base_free(pp.base);
    return 0;
}

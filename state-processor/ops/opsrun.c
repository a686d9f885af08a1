/* opsrun.c: an operator subcommand's event base, connection and producer, in blocking steps. */
#include "ops/opsrun.h"

#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

struct opsrun {
    struct event_base *base;
    struct event *tick; /* bounds each opsrun_wait() */
    char *conninfo;
    pgconn *pg; /* connected on the first query */
    kafka_producer *producer;
    long long timeout_ms;
    opsrun_delivered_cb delivered;
    void *arg;

    /* The query being waited for (one at a time). */
    bool q_waiting;
    bool q_done;
    bool q_ok;
    pgconn_cb q_cb;
    void *q_arg;
    char q_err[512];

    size_t outstanding; /* produced, not yet confirmed or refused */
    bool refused;
    char refusal[512];

    kafka_consumer *reader;
    opsrun_range *ranges; /* being read by opsrun_read() */
    bool *at_end;         /* per range: the partition's end was reported by the last poll */
    size_t nranges;
};

/* Messages polled at once by opsrun_read(). */
#define READ_BATCH 500

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg; /* only ends event_base_loop(EVLOOP_ONCE) */
}

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque;
    opsrun *r = arg;
    r->outstanding--;
    if (d->err && !r->refused) {
        r->refused = true;
        snprintf(r->refusal, sizeof(r->refusal), "Kafka refused a message: %s", d->errstr);
    }
    if (!d->err && r->delivered)
        r->delivered(d->partition, d->offset, r->arg);
}

opsrun *opsrun_new(const char *conninfo, const config_props *kafka, long long timeout_ms,
                   opsrun_delivered_cb delivered, void *arg, char *err, size_t errlen)
{
    opsrun *r = xcalloc(1, sizeof(*r));
    r->base = event_base_new();
    r->tick = evtimer_new(r->base, on_tick, r);
    r->conninfo = xstrdup(conninfo);
    r->timeout_ms = timeout_ms;
    r->delivered = delivered;
    r->arg = arg;
    r->producer = kafka_producer_new(r->base, kafka, on_delivery, r, err, errlen);
    if (!r->producer) {
        opsrun_free(r);
        return NULL;
    }
    return r;
}

static opsrun_range *find_range(opsrun *r, int partition)
{
    for (size_t i = 0; i < r->nranges; i++) {
        if (r->ranges[i].partition == partition)
            return &r->ranges[i];
    }
    return NULL;
}

/*
 * The partition's current end, at or past the range's. Reported while the poll sorts its batch,
 * so the messages of that same batch are still to be passed on: the range is done after them.
 */
static void on_eof(int partition, void *arg)
{
    opsrun *r = arg;
    opsrun_range *g = find_range(r, partition);
    if (g)
        r->at_end[g - r->ranges] = true;
}

kafka_consumer *opsrun_reader(opsrun *r, const config_props *kafka, const char *topic, char *err,
                              size_t errlen)
{
    config_props props = {0};
    for (size_t i = 0; i < kafka->n; i++)
        config_props_set(&props, kafka->keys[i], kafka->values[i]);
    config_props_set(&props, "enable.partition.eof", "true");
    r->reader = kafka_consumer_new_reader(r->base, &props, topic, NULL, r, err, errlen);
    config_props_free(&props);
    if (r->reader)
        kafka_consumer_set_eof_cb(r->reader, on_eof);
    return r->reader;
}

/* Keeps the messages of a range not done yet, marking the ranges they complete. */
static size_t in_ranges(opsrun *r, const kafka_message *msgs, size_t n, const kafka_message **out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        opsrun_range *g = find_range(r, msgs[i].partition);
        if (!g || g->done || msgs[i].offset < g->from)
            continue;
        if (msgs[i].offset >= g->to) { /* past the range: it was read to its end */
            g->done = true;
            continue;
        }
        g->done = msgs[i].offset + 1 >= g->to;
        out[k++] = &msgs[i];
    }
    return k;
}

static bool all_done(const opsrun *r)
{
    for (size_t i = 0; i < r->nranges; i++) {
        if (!r->ranges[i].done)
            return false;
    }
    return true;
}

static int assign(opsrun *r, char *err, size_t errlen)
{
    int *parts = xcalloc(r->nranges + 1, sizeof(int));
    long long *from = xcalloc(r->nranges + 1, sizeof(long long));
    size_t n = 0;
    for (size_t i = 0; i < r->nranges; i++) {
        if (!r->ranges[i].done) {
            parts[n] = r->ranges[i].partition;
            from[n++] = r->ranges[i].from;
        }
    }
    int rc = n > 0 ? kafka_consumer_assign(r->reader, parts, from, n) : 0;
    free(parts);
    free(from);
    if (rc != 0)
        snprintf(err, errlen, "Kafka: the partitions to read could not be assigned");
    return rc;
}

int opsrun_read(opsrun *r, opsrun_range *ranges, size_t n, opsrun_batch_cb cb, void *arg, char *err,
                size_t errlen)
{
    r->ranges = ranges;
    r->nranges = n;
    r->at_end = xcalloc(n + 1, sizeof(bool));
    kafka_message *msgs = xcalloc(READ_BATCH, sizeof(kafka_message));
    const kafka_message **kept = xcalloc(READ_BATCH, sizeof(kafka_message *));
    int rc = assign(r, err, errlen);
    long long quiet_since = ids_monotonic_ms();
    while (rc == 0 && !all_done(r)) {
        size_t got = kafka_consumer_poll(r->reader, msgs, READ_BATCH);
        if (got == 0) {
            if (ids_monotonic_ms() - quiet_since > r->timeout_ms) {
                snprintf(err, errlen, "Kafka: nothing more to read within %lld ms (timeout_ms)",
                         r->timeout_ms);
                rc = -1;
            } else {
                opsrun_wait(r, 100);
            }
            continue;
        }
        quiet_since = ids_monotonic_ms();
        size_t k = in_ranges(r, msgs, got, kept);
        rc = k > 0 ? cb(kept, k, arg, err, errlen) : 0;
        kafka_consumer_release(r->reader);
        for (size_t i = 0; i < n; i++)
            ranges[i].done = ranges[i].done || r->at_end[i];
    }
    r->ranges = NULL;
    r->nranges = 0;
    free(r->at_end);
    r->at_end = NULL;
    free(msgs);
    free(kept);
    return rc;
}

void opsrun_wait(opsrun *r, int ms)
{
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    evtimer_add(r->tick, &tv);
    event_base_loop(r->base, EVLOOP_ONCE);
    evtimer_del(r->tick);
}

static void on_answer(const pgconn_result *res, void *arg)
{
    opsrun *r = arg;
    if (!r->q_waiting)
        return; /* the answer to a query given up on: nobody wants it */
    r->q_done = true;
    r->q_ok = pgconn_result_status(res) == PGCONN_OK;
    if (!r->q_ok)
        snprintf(r->q_err, sizeof(r->q_err), "PostgreSQL: %s",
                 pgconn_result_status(res) == PGCONN_DISCONNECTED ? "connection lost"
                                                                  : pgconn_result_error(res));
    else if (r->q_cb)
        r->q_cb(res, r->q_arg);
}

int opsrun_query(opsrun *r, const char *sql, int nparams, const char *const *params, pgconn_cb cb,
                 void *arg, char *err, size_t errlen)
{
    if (!r->pg) {
        r->pg = pgconn_new(r->base, r->conninfo, NULL, NULL, err, errlen);
        if (!r->pg)
            return -1;
        pgconn_set_name(r->pg, "state-processor ops");
    }
    r->q_waiting = true;
    r->q_done = false;
    r->q_cb = cb;
    r->q_arg = arg;
    if (pgconn_query(r->pg, sql, nparams, params, on_answer, r) != 0) {
        r->q_waiting = false;
        snprintf(err, errlen, "PostgreSQL: the query could not be queued");
        return -1;
    }
    long long deadline = ids_monotonic_ms() + r->timeout_ms;
    while (!r->q_done && ids_monotonic_ms() < deadline)
        opsrun_wait(r, 100);
    r->q_waiting = false;
    if (!r->q_done) {
        snprintf(err, errlen, "PostgreSQL did not answer within %lld ms (timeout_ms)",
                 r->timeout_ms);
        return -1;
    }
    if (!r->q_ok) {
        snprintf(err, errlen, "%s", r->q_err);
        return -1;
    }
    return 0;
}

int opsrun_produce(opsrun *r, const char *topic, int partition, const char *key, size_t key_len,
                   const void *value, size_t len, const header *h, size_t nh, char *err,
                   size_t errlen)
{
    long long deadline = ids_monotonic_ms() + r->timeout_ms;
    for (;;) {
        kafka_send_result s =
            kafka_produce(r->producer, topic, partition, key, key_len, value, len, h, nh, NULL);
        if (s == KAFKA_OK) {
            r->outstanding++;
            return 0;
        }
        if (s == KAFKA_ERROR || ids_monotonic_ms() >= deadline) {
            snprintf(err, errlen, "Kafka: %s",
                     s == KAFKA_ERROR ? "the message was refused (see the log)"
                                      : "the producer queue stayed full (timeout_ms)");
            return -1;
        }
        opsrun_wait(r, 100); /* deliveries make room */
    }
}

int opsrun_flush(opsrun *r, char *err, size_t errlen)
{
    long long deadline = ids_monotonic_ms() + r->timeout_ms;
    while (r->outstanding > 0 && ids_monotonic_ms() < deadline)
        opsrun_wait(r, 100);
    if (r->refused) {
        snprintf(err, errlen, "%s", r->refusal);
        return -1;
    }
    if (r->outstanding > 0) {
        snprintf(err, errlen, "Kafka confirmed %zu messages not within %lld ms (timeout_ms)",
                 r->outstanding, r->timeout_ms);
        return -1;
    }
    return 0;
}

void opsrun_free(opsrun *r)
{
    if (!r)
        return;
    r->q_waiting = false;
    kafka_consumer_free(r->reader);
    pgconn_free(r->pg);
    kafka_producer_free(r->producer);
    event_free(r->tick);
    event_base_free(r->base);
    free(r->conninfo);
    free(r);
}

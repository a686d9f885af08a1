/*
 * projector.c: the projector's state machine. For each batch of consumed events, one
 * transaction: BEGIN, one upsert per projection table under the version guard (each changed row
 * NOTIFYs cqrs_projection), the events that cannot be projected into projection_skipped, the
 * consumed offsets into consumer_offsets; COMMIT once all of them succeeded. A failure rolls back
 * and retries the same batch after a backoff. When PostgreSQL refuses the data itself (an error
 * of class 22, 23 or 54), the batch is written again one event at a time, and the event it
 * refuses alone is recorded as skipped: one bad event never stops its partition.
 */
#include "projector/projector.h"

#include "domain/domain.h"
#include "loop/health.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "core/metrics.h"
#include "loop/offsetlog.h"
#include "pg/pgconn.h"
#include "projector/projbatch.h"
#include "domain/projection.h"
#include "projector/projsql.h"
#include "loop/txloop.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One projection table and the statement that upserts a batch of its rows. */
typedef struct table {
    const projection *proj; /* borrowed from the registry */
    char *upsert_sql;
} table;

struct projector {
    const processor_config *cfg;
    struct event_base *base;
    domain_registry *domains;
    table *tables; /* in registry order: every transaction locks them in the same order */
    size_t ntables;
    pgconn *pg;
    txloop *loop; /* the events consumed, and the steps around each batch */
    health *health;
    metrics *metrics;
    char *topic;
    char *group;
    kafka_producer *admin;       /* for the keeper: */
    kafka_topics_keeper *topics; /* when the events topic could not be created at start */

    projbatch b;
    txphase ph;        /* the queries of the transaction */
    long long changed; /* rows the transaction changed */
    long long batch_start_us;

    metrics_counter *m_projected, *m_skipped, *m_changed, *m_batches, *m_retries, *m_isolated;
    metrics_histogram *m_batch_time;
    metrics_gauge **m_lag; /* by partition */
    size_t nlag;
};

static void write_tx(projector *p);

static void retry_tx(void *arg)
{
    write_tx(arg);
}

/*
 * Rolls back. Then: a data error in a range of several events is narrowed to its first event; a
 * data error of one event records that event as skipped; anything else is retried as it was.
 */
static void fail_tx(projector *p)
{
    txphase_rollback(&p->ph, p->pg);
    metrics_add(p->m_retries, 1);
    projbatch *b = &p->b;
    if (p->ph.refusal && b->to - b->from > 1) {
        log_kv(LOG_WARN, "PostgreSQL refused the batch; projecting its events one at a time",
               LOG_FIELDS("error", p->ph.error));
        metrics_add(p->m_isolated, 1);
        b->to = b->from + 1;
        write_tx(p);
    } else if (p->ph.refusal && !b->items[b->from].skip_reason) {
        projbatch_skip(b, b->from, p->ph.refusal, p->ph.error);
        write_tx(p);
    } else {
        txloop_backoff(p->loop, retry_tx, "batch failed, will retry", p->ph.error);
    }
}

static int query(projector *p, const char *sql, int n, const char *const *v, pgconn_cb cb)
{
    return txphase_query(&p->ph, p->pg, sql, n, v, cb, p);
}

/* ---- after COMMIT ---- */

static metrics_gauge *lag_gauge(projector *p, int partition)
{
    if (partition < 0)
        return NULL;
    if ((size_t)partition >= p->nlag) {
        size_t n = (size_t)partition + 1;
        p->m_lag = xrealloc(p->m_lag, n * sizeof(*p->m_lag));
        memset(p->m_lag + p->nlag, 0, (n - p->nlag) * sizeof(*p->m_lag));
        p->nlag = n;
    }
    if (!p->m_lag[partition]) {
        char labels[32];
        snprintf(labels, sizeof(labels), "partition=\"%d\"", partition);
        p->m_lag[partition] = metrics_gauge_get(
            p->metrics, "projector_lag_events",
            "events on the partition not yet projected, as of the last batch", labels);
    }
    return p->m_lag[partition];
}

static void set_gauge(metrics_gauge *g, long long v)
{
    if (g)
        metrics_gauge_add(g, v - metrics_gauge_value(g));
}

static void log_skipped(const projbatch *b)
{
    for (size_t i = b->from; i < b->to; i++) {
        const projbatch_item *it = &b->items[i];
        if (!it->skip_reason)
            continue;
        char where[64];
        snprintf(where, sizeof(where), "%s/%d/%lld", b->topic, it->partition, it->offset);
        log_kv(LOG_ERROR, "event cannot be projected; recorded in projection_skipped",
               LOG_FIELDS("reason", it->skip_reason, "detail", it->skip_detail, "source", where));
    }
}

static void committed(projector *p)
{
    projbatch *b = &p->b;
    size_t projected = projbatch_count(b, NULL), skipped = projbatch_skipped(b);
    metrics_add(p->m_projected, projected);
    metrics_add(p->m_skipped, skipped);
    metrics_add(p->m_changed, (unsigned long long)p->changed);
    metrics_add(p->m_batches, 1);
    log_skipped(b);
    int *parts = xcalloc(b->n + 1, sizeof(int));
    long long *next = xcalloc(b->n + 1, sizeof(long long));
    size_t np = projbatch_positions(b, parts, next);
    kafka_consumer *consumer = txloop_consumer(p->loop);
    kafka_consumer_commit(consumer, parts, next, np); /* informational: lag tooling */
    for (size_t i = 0; i < np; i++) {
        offsetlog_committed(txloop_offsets(p->loop), parts[i]);
        long long high = kafka_consumer_high_watermark(consumer, parts[i]);
        if (high >= 0)
            set_gauge(lag_gauge(p, parts[i]), high > next[i] ? high - next[i] : 0);
    }
    free(parts);
    free(next);
    if (b->to < b->n) { /* isolating: the next event on its own */
        b->from = b->to;
        b->to = b->from + 1;
        write_tx(p);
        return;
    }
    metrics_observe_us(p->m_batch_time, ids_monotonic_us() - p->batch_start_us);
    projbatch_clear(b);
    txloop_done(p->loop);
}

static void on_commit(const pgconn_result *r, void *arg)
{
    projector *p = arg;
    p->ph.outstanding--;
    if (pgconn_result_status(r) != PGCONN_OK)
        txphase_error(&p->ph, r, "commit");
    if (p->ph.failed)
        fail_tx(p);
    else
        committed(p);
}

/* ---- the transaction ---- */

static void on_write(const pgconn_result *r, void *arg)
{
    projector *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK)
        txphase_error(&p->ph, r, "write");
    if (--p->ph.outstanding > 0)
        return;
    if (p->ph.failed) {
        fail_tx(p);
        return;
    }
    /* COMMIT only once every write is known good: a COMMIT of an aborted transaction would
       report success while rolling back. */
    if (query(p, "COMMIT", 0, NULL, on_commit) != 0)
        fail_tx(p);
}

/* The upserts answer one row per row changed (each one NOTIFYed). */
static void on_upserted(const pgconn_result *r, void *arg)
{
    projector *p = arg;
    if (pgconn_result_status(r) == PGCONN_OK)
        p->changed += pgconn_result_ntuples(r);
    on_write(r, arg);
}

/* Queues one statement of rows ($1, freed here) and p2 ($2, unless NULL); none for no rows. */
static void write_rows(projector *p, const char *sql, char *rows, size_t count, const char *p2,
                       pgconn_cb cb)
{
    const char *v[] = {rows, p2};
    if (count > 0 && !p->ph.failed)
        query(p, sql, p2 ? 2 : 1, v, cb);
    free(rows);
}

/* One transaction for the range of the batch; the statements are pipelined (one round trip). */
static void write_tx(projector *p)
{
    txphase_begin(&p->ph, p->pg);
    p->changed = 0;
    size_t n;
    query(p, "BEGIN", 0, NULL, on_write);
    for (size_t i = 0; i < p->ntables; i++) {
        const table *t = &p->tables[i];
        char *rows = projbatch_rows(&p->b, t->proj, &n);
        write_rows(p, t->upsert_sql, rows, n, t->proj->aggregate, on_upserted);
    }
    char *rows = projbatch_skipped_rows(&p->b, p->group, &n);
    write_rows(p, projsql_skipped, rows, n, NULL, on_write);
    rows = projbatch_offset_rows(&p->b, p->group, &n);
    write_rows(p, txloop_offsets_sql, rows, n, offsetlog_cluster(txloop_offsets(p->loop)),
               on_write);
    if (p->ph.failed && p->ph.outstanding == 0)
        fail_tx(p);
    /* otherwise the last outstanding callback goes on (or fails the batch) */
}

/* ---- a batch ---- */

static void on_batch(void *arg, const kafka_message *msgs, size_t n)
{
    projector *p = arg;
    p->batch_start_us = ids_monotonic_us();
    memset(&p->b, 0, sizeof(p->b));
    projbatch_decode(&p->b, p->domains, msgs, n, p->cfg->tenant_default);
    write_tx(p);
}

/* Partitions revoked: their lag is now another member's. */
static void on_revoked(void *arg, const int *partitions, size_t n)
{
    projector *p = arg;
    for (size_t i = 0; i < n; i++)
        if (partitions[i] >= 0 && (size_t)partitions[i] < p->nlag)
            set_gauge(p->m_lag[partitions[i]], 0);
}

static bool ready(void *arg)
{
    const projector *p = arg;
    return p->pg && pgconn_connected(p->pg) && !txloop_backing_off(p->loop);
}

static void init_metrics(projector *p)
{
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5,   5};
    metrics *m = p->metrics = metrics_new();
    const char *name = "projector_events_total";
    const char *help = "events consumed, by outcome";
    p->m_projected = metrics_counter_get(m, name, help, "outcome=\"projected\"");
    p->m_skipped = metrics_counter_get(m, name, help, "outcome=\"skipped\"");
    p->m_changed =
        metrics_counter_get(m, "projector_rows_changed_total",
                            "projection rows written (older versions change none)", NULL);
    p->m_batches =
        metrics_counter_get(m, "projector_batches_total", "transactions committed", NULL);
    p->m_retries = metrics_counter_get(m, "projector_batch_retries_total",
                                       "transactions rolled back and written again", NULL);
    p->m_isolated =
        metrics_counter_get(m, "projector_batches_isolated_total",
                            "batches PostgreSQL refused, written again one event at a time", NULL);
    p->m_batch_time =
        metrics_histogram_get(m, "projector_batch_duration_seconds", "from poll to commit", bounds,
                              sizeof(bounds) / sizeof(bounds[0]));
}

static void on_admin_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)d, (void)arg;
}

/*
 * Creates the events topic when missing, so that subscribing to it finds it. Failing is worth a
 * warning: an operator may have created it (or denied the rights), or Kafka is not up yet, so it
 * is asked for again in the background until Kafka has it (the subscription finds it at its next
 * metadata refresh).
 */
static void ensure_topic(projector *p, const config_props *kafka_props)
{
    char terr[512] = "";
    const char *topics[] = {p->topic};
    kafka_producer *admin =
        kafka_producer_new(p->base, kafka_props, on_admin_delivery, p, terr, sizeof(terr));
    if (admin &&
        kafka_ensure_topics(admin, topics, 1, (int)p->cfg->topics_partitions,
                            (int)p->cfg->topics_replication, 10000, terr, sizeof(terr)) == 0) {
        kafka_producer_free(admin);
        return;
    }
    log_kv(LOG_WARN, "could not create the events topic", LOG_FIELDS("error", terr));
    if (admin) {
        p->admin = admin;
        p->topics =
            kafka_topics_keeper_new(p->base, admin, topics, 1, (int)p->cfg->topics_partitions,
                                    (int)p->cfg->topics_replication);
    }
}

projector *projector_new(struct event_base *base, const processor_config *cfg,
                         const config_props *kafka_props, char *err, size_t errlen)
{
    projector *p = xcalloc(1, sizeof(*p));
    p->cfg = cfg;
    p->base = base;
    p->topic = xasprintf("%sevents", cfg->topic_prefix);
    p->group = cfg->projector_group && *cfg->projector_group
                   ? xstrdup(cfg->projector_group)
                   : xasprintf("%sprojector", cfg->topic_prefix);
    init_metrics(p);
    txloop_config lc = {.service = "projector",
                        .noun = "events",
                        .group = p->group,
                        .topic = p->topic,
                        .on_mismatch = cfg->offsets_on_mismatch,
                        .batch_max = cfg->batch_max,
                        .retry_max_ms = cfg->retry_max_ms};
    txloop_owner owner = {.batch = on_batch, .revoked = on_revoked, .arg = p};
    p->loop = txloop_new(base, &lc, p->metrics, &owner, err, errlen);
    if (!p->loop)
        goto fail;

    p->domains = domain_registry_load(cfg->schemas_dir, err, errlen);
    if (!p->domains)
        goto fail;
    p->ntables = domain_registry_aggregate_count(p->domains);
    p->tables = xcalloc(p->ntables + 1, sizeof(*p->tables));
    for (size_t i = 0; i < p->ntables; i++) {
        p->tables[i].proj =
            domain_registry_projection(p->domains, domain_registry_aggregate_name(p->domains, i));
        p->tables[i].upsert_sql = projsql_upsert(p->tables[i].proj);
    }
    p->pg = pgconn_new(base, cfg->pg_conninfo, NULL, NULL, err, errlen);
    if (!p->pg)
        goto fail;
    pgconn_set_name(p->pg, "state-processor projector");
    ensure_topic(p, kafka_props);
    if (txloop_start(p->loop, p->pg, kafka_props, err, errlen) != 0)
        goto fail;
    if (cfg->http_port >= 0) {
        p->health = health_new(base, cfg->http_host, (int)cfg->http_port, p->metrics, ready, p, err,
                               errlen);
        if (!p->health)
            goto fail;
        LOG_KV(LOG_INFO, "health and metrics", LOG_STR("host", cfg->http_host),
               LOG_NUM("port", health_port(p->health)));
    }
    log_kv(LOG_INFO, "projector started", LOG_FIELDS("group", p->group, "topic", p->topic));
    return p;
fail:
    projector_free(p);
    return NULL;
}

txloop *projector_loop(projector *p)
{
    return p->loop;
}

void projector_free(projector *p)
{
    if (!p)
        return;
    txloop_leave(p->loop); /* see processor_free() */
    pgconn_free(p->pg);
    txloop_free(p->loop);
    health_free(p->health);
    kafka_topics_keeper_free(p->topics);
    kafka_producer_free(p->admin);
    if (p->b.items)
        projbatch_clear(&p->b);
    for (size_t i = 0; i < p->ntables; i++)
        free(p->tables[i].upsert_sql);
    free(p->tables);
    domain_registry_free(p->domains);
    metrics_free(p->metrics);
    free(p->m_lag);
    free(p->topic);
    free(p->group);
    free(p);
}

/*
 * projector.c: the projector's state machine. For each batch of consumed events, one
 * transaction: BEGIN, one upsert per projection table under the version guard (each changed row
 * NOTIFYs cqrs_projection), the events that cannot be projected into projection_skipped, the
 * consumed offsets into consumer_offsets; COMMIT once all of them succeeded. A failure rolls back
 * and retries the same batch after a backoff. When PostgreSQL refuses the data itself (an error
 * of class 22, 23 or 54), the batch is written again one event at a time, and the event it
 * refuses alone is recorded as skipped: one bad event never stops its partition.
 */
#include "projector.h"

#include "batch.h"
#include "domain.h"
#include "health.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "offsetlog.h"
#include "pgconn.h"
#include "projbatch.h"
#include "projection.h"
#include "projsql.h"
#include "xalloc.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    J_IDLE,
    J_STARTING, /* reading the stored offsets of newly assigned partitions */
    J_WRITING,
    J_COMMITTING,
    J_BACKOFF
} jstate;

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
    kafka_consumer *consumer;
    health *health;
    metrics *metrics;
    char *topic;
    char *group;
    offsetlog *olog; /* which stored offsets count the log being read */
    bool failed;     /* stopped for an operator (offsets.on_mismatch=fail) */

    jstate state;
    projbatch b;
    kafka_message *msgs;
    size_t outstanding; /* queries of the transaction still to answer */
    bool phase_failed;
    char phase_error[512];
    char phase_sqlstate[6]; /* of the first failure */
    long long changed;      /* rows the transaction changed */
    long long backoff_ms;
    jstate resume; /* what J_BACKOFF retries */
    int *starting; /* assigned partitions waiting for their stored offsets */
    size_t nstarting;
    struct event *kick; /* runs next_batch() from the loop, not from a callback */
    struct event *retry;
    bool stopping;
    long long batch_start_us;

    metrics_counter *m_projected, *m_skipped, *m_changed, *m_batches, *m_retries, *m_isolated;
    metrics_histogram *m_batch_time;
    metrics_gauge **m_lag; /* by partition */
    size_t nlag;
};

static void next_batch(projector *p);
static void write_tx(projector *p);
static void read_start_offsets(projector *p);

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    next_batch(arg);
}

/* A step succeeded: back to idle, then the next batch (or the end of the loop, when stopping). */
static void step_done(projector *p)
{
    p->backoff_ms = 0;
    p->state = J_IDLE;
    if (p->stopping)
        event_base_loopexit(p->base, NULL);
    else
        event_active(p->kick, 0, 0);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    projector *p = arg;
    if (p->resume == J_STARTING)
        read_start_offsets(p);
    else
        write_tx(p);
}

/* Stops the projector for an operator: the loop ends and projector_failed() says so. */
static void stop_failed(projector *p, const char *why)
{
    log_kv(LOG_FATAL, "stopping: an operator must decide", LOG_FIELDS("error", why));
    p->failed = true;
    p->stopping = true;
    p->state = J_IDLE;
    event_base_loopexit(p->base, NULL);
}

/* Retries the step resume after a capped exponential backoff. */
static void backoff(projector *p, jstate resume, const char *what)
{
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : 100;
    if (p->backoff_ms > p->cfg->retry_max_ms)
        p->backoff_ms = p->cfg->retry_max_ms;
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", p->backoff_ms);
    log_kv(LOG_WARN, what, LOG_FIELDS("error", p->phase_error, "retry_ms", ms));
    p->state = J_BACKOFF;
    p->resume = resume;
    struct timeval tv = {.tv_sec = p->backoff_ms / 1000, .tv_usec = (p->backoff_ms % 1000) * 1000};
    evtimer_add(p->retry, &tv);
}

/* A query of the transaction failed: remember the first reason and its SQLSTATE. */
static void phase_error(projector *p, const pgconn_result *r, const char *what)
{
    if (!p->phase_failed) {
        const char *state = pgconn_result_sqlstate(r);
        snprintf(p->phase_error, sizeof(p->phase_error), "%s: %s%s%s", what,
                 pgconn_result_status(r) == PGCONN_DISCONNECTED ? "connection lost"
                                                                : pgconn_result_error(r),
                 *state ? " sqlstate " : "", state);
        snprintf(p->phase_sqlstate, sizeof(p->phase_sqlstate), "%s", state);
    }
    p->phase_failed = true;
}

/* Errors about the data rather than the server: retrying the same rows cannot succeed. */
static bool data_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
           strncmp(sqlstate, "54", 2) == 0;
}

static void on_rollback(const pgconn_result *r, void *arg)
{
    (void)r, (void)arg;
}

/*
 * Rolls back. Then: a data error in a range of several events is narrowed to its first event; a
 * data error of one event records that event as skipped; anything else is retried as it was.
 */
static void fail_tx(projector *p)
{
    if (pgconn_query(p->pg, "ROLLBACK", 0, NULL, on_rollback, p) != 0)
        log_warn("rollback could not be queued");
    metrics_add(p->m_retries, 1);
    projbatch *b = &p->b;
    if (data_error(p->phase_sqlstate) && b->to - b->from > 1) {
        log_kv(LOG_WARN, "PostgreSQL refused the batch; projecting its events one at a time",
               LOG_FIELDS("error", p->phase_error));
        metrics_add(p->m_isolated, 1);
        b->to = b->from + 1;
        write_tx(p);
    } else if (data_error(p->phase_sqlstate) && !b->items[b->from].skip_reason) {
        projbatch_skip(b, b->from, "rejected-by-postgresql", p->phase_error);
        write_tx(p);
    } else {
        backoff(p, J_WRITING, "batch failed, will retry");
    }
}

static int query(projector *p, const char *sql, int n, const char *const *v, pgconn_cb cb)
{
    if (pgconn_query_prepared(p->pg, sql, n, v, cb, p) != 0) {
        p->phase_failed = true;
        snprintf(p->phase_error, sizeof(p->phase_error), "PostgreSQL queue full");
        p->phase_sqlstate[0] = '\0';
        return -1;
    }
    p->outstanding++;
    return 0;
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
    for (size_t i = 0; i < np; i++) {
        kafka_consumer_commit(p->consumer, parts[i], next[i]); /* informational: lag tooling */
        offsetlog_committed(p->olog, parts[i]);
        long long high = kafka_consumer_high_watermark(p->consumer, parts[i]);
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
    step_done(p);
}

static void on_commit(const pgconn_result *r, void *arg)
{
    projector *p = arg;
    p->outstanding--;
    if (pgconn_result_status(r) != PGCONN_OK)
        phase_error(p, r, "commit");
    if (p->phase_failed)
        fail_tx(p);
    else
        committed(p);
}

/* ---- the transaction ---- */

static void on_write(const pgconn_result *r, void *arg)
{
    projector *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK)
        phase_error(p, r, "write");
    if (--p->outstanding > 0)
        return;
    if (p->phase_failed) {
        fail_tx(p);
        return;
    }
    /* COMMIT only once every write is known good: a COMMIT of an aborted transaction would
       report success while rolling back. */
    p->state = J_COMMITTING;
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
    if (count > 0 && !p->phase_failed)
        query(p, sql, p2 ? 2 : 1, v, cb);
    free(rows);
}

/* One transaction for the range of the batch; the statements are pipelined (one round trip). */
static void write_tx(projector *p)
{
    p->state = J_WRITING;
    p->phase_failed = false;
    p->phase_sqlstate[0] = '\0';
    p->outstanding = 0;
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
    write_rows(p, projsql_offsets, rows, n, offsetlog_cluster(p->olog), on_write);
    if (p->phase_failed && p->outstanding == 0)
        fail_tx(p);
    /* otherwise the last outstanding callback goes on (or fails the batch) */
}

/* ---- partition assignment ---- */

static void on_start_offsets(const pgconn_result *r, void *arg)
{
    projector *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK) {
        p->phase_failed = false;
        phase_error(p, r, "read stored offsets");
        backoff(p, J_STARTING, "stored offsets unavailable, will retry");
        return;
    }
    long long *offsets = xcalloc(p->nstarting + 1, sizeof(*offsets));
    char why[512];
    if (offsetlog_choose(p->olog, p->starting, p->nstarting, r, offsets, why, sizeof(why)) != 0) {
        free(offsets);
        stop_failed(p, why);
        return;
    }
    for (size_t i = 0; i < p->nstarting; i++) {
        char part[16], off[24];
        snprintf(part, sizeof(part), "%d", p->starting[i]);
        snprintf(off, sizeof(off), "%lld", offsets[i]);
        log_kv(LOG_INFO, "events partition starts at its stored offset",
               LOG_FIELDS("partition", part, "offset",
                          offsets[i] == KAFKA_OFFSET_BEGINNING ? "beginning" : off));
    }
    if (kafka_consumer_start(p->consumer, p->starting, offsets, p->nstarting) != 0)
        log_error("assigned partitions could not be started");
    free(offsets);
    p->nstarting = 0;
    step_done(p);
}

/* PostgreSQL, not Kafka, knows how far each partition was projected (ADR 0007). */
static void read_start_offsets(projector *p)
{
    p->state = J_STARTING;
    /* The stored offsets are trusted only for the log they count: that cluster's. */
    if (offsetlog_learn_cluster(p->olog, p->consumer) != 0) {
        snprintf(p->phase_error, sizeof(p->phase_error), "no metadata from Kafka yet");
        backoff(p, J_STARTING, "Kafka cluster id unknown, will retry");
        return;
    }
    char *parts = batch_int_array(p->starting, p->nstarting);
    const char *v[] = {p->group, p->topic, parts};
    int rc = pgconn_query(p->pg, projsql_start_offsets, 3, v, on_start_offsets, p);
    free(parts);
    if (rc != 0) {
        snprintf(p->phase_error, sizeof(p->phase_error), "PostgreSQL queue full");
        backoff(p, J_STARTING, "stored offsets unavailable, will retry");
    }
}

static void next_batch(projector *p)
{
    if (p->state != J_IDLE || p->stopping)
        return;
    if (p->nstarting > 0) {
        read_start_offsets(p);
        return;
    }
    size_t n = kafka_consumer_poll(p->consumer, p->msgs, (size_t)p->cfg->batch_max);
    if (n == 0) {
        if (p->nstarting > 0) /* the poll served an assignment */
            read_start_offsets(p);
        return; /* otherwise the consumer's wake-up brings us back */
    }
    char why[512];
    for (size_t i = 0; i < n; i++) {
        /* A re-read is harmless here (version-guarded upserts); what is counted and logged is
           that the stored offset did not belong to this log. */
        if (!offsetlog_check(p->olog, p->msgs[i].partition, p->msgs[i].offset, why, sizeof(why))) {
            kafka_consumer_release(p->consumer);
            stop_failed(p, why);
            return;
        }
    }
    p->batch_start_us = ids_monotonic_us();
    memset(&p->b, 0, sizeof(p->b));
    projbatch_decode(&p->b, p->domains, p->msgs, n, p->cfg->tenant_default);
    kafka_consumer_release(p->consumer); /* the batch holds copies */
    write_tx(p);
}

static void on_wake(void *arg)
{
    next_batch(arg);
}

static bool on_assign(const int *partitions, size_t n, bool assigned, void *arg)
{
    projector *p = arg;
    if (assigned) {
        p->starting = xrealloc(p->starting, (p->nstarting + n) * sizeof(int));
        memcpy(p->starting + p->nstarting, partitions, n * sizeof(int));
        p->nstarting += n;
    } else {
        /* Revoked before they started: forget them. Their lag is now another member's. */
        p->nstarting = kafka_partitions_remove(p->starting, p->nstarting, partitions, n);
        offsetlog_revoked(p->olog, partitions, n);
        for (size_t i = 0; i < n; i++)
            if (partitions[i] >= 0 && (size_t)partitions[i] < p->nlag)
                set_gauge(p->m_lag[partitions[i]], 0);
    }
    char count[24];
    snprintf(count, sizeof(count), "%zu", n);
    log_kv(LOG_INFO, assigned ? "events partitions assigned" : "events partitions revoked",
           LOG_FIELDS("count", count));
    return true; /* started by read_start_offsets() */
}

static bool ready(void *arg)
{
    const projector *p = arg;
    return pgconn_connected(p->pg) && p->state != J_BACKOFF;
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

/* Creates the events topic when missing, so that subscribing to it finds it. */
static void ensure_topic(projector *p, const config_props *kafka_props)
{
    char terr[512] = "";
    const char *topics[] = {p->topic};
    kafka_producer *admin =
        kafka_producer_new(p->base, kafka_props, on_admin_delivery, p, terr, sizeof(terr));
    /* Failing (no rights, say) is worth a warning only: an operator may have created it. */
    if (!admin ||
        kafka_ensure_topics(admin, topics, 1, (int)p->cfg->topics_partitions,
                            (int)p->cfg->topics_replication, 10000, terr, sizeof(terr)) != 0)
        log_kv(LOG_WARN, "could not create the events topic", LOG_FIELDS("error", terr));
    kafka_producer_free(admin);
}

projector *projector_new(struct event_base *base, const processor_config *cfg,
                         const config_props *kafka_props, char *err, size_t errlen)
{
    projector *p = xcalloc(1, sizeof(*p));
    p->cfg = cfg;
    p->base = base;
    p->state = J_IDLE;
    p->msgs = xcalloc((size_t)cfg->batch_max, sizeof(kafka_message));
    p->topic = xasprintf("%sevents", cfg->topic_prefix);
    p->group = cfg->projector_group && *cfg->projector_group
                   ? xstrdup(cfg->projector_group)
                   : xasprintf("%sprojector", cfg->topic_prefix);
    p->kick = event_new(base, -1, 0, on_kick, p);
    p->retry = evtimer_new(base, on_retry, p);
    init_metrics(p);
    offsetlog_policy policy = OFFSETLOG_RESET;
    if (cfg->offsets_on_mismatch &&
        offsetlog_policy_parse(cfg->offsets_on_mismatch, &policy) != 0) {
        snprintf(err, errlen, "offsets.on_mismatch: '%s' is neither reset nor fail",
                 cfg->offsets_on_mismatch);
        goto fail;
    }
    p->olog = offsetlog_new("projector", p->group, p->topic, policy, p->metrics);

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
    ensure_topic(p, kafka_props);
    p->consumer = kafka_consumer_new(base, kafka_props, p->group, p->topic, on_wake, on_assign, p,
                                     err, errlen);
    if (!p->consumer)
        goto fail;
    if (cfg->http_port >= 0) {
        p->health = health_new(base, cfg->http_host, (int)cfg->http_port, p->metrics, ready, p, err,
                               errlen);
        if (!p->health)
            goto fail;
        char port[16];
        snprintf(port, sizeof(port), "%d", health_port(p->health));
        log_kv(LOG_INFO, "health and metrics", LOG_FIELDS("host", cfg->http_host, "port", port));
    }
    log_kv(LOG_INFO, "projector started", LOG_FIELDS("group", p->group, "topic", p->topic));
    return p;
fail:
    projector_free(p);
    return NULL;
}

void projector_stop(projector *p)
{
    p->stopping = true;
    /* Mid-batch the loop ends after COMMIT (committed()); a batch in backoff is dropped
       uncommitted and will be consumed again by whoever owns the partition next. */
    if (p->state == J_IDLE || p->state == J_BACKOFF)
        event_base_loopexit(p->base, NULL);
}

void projector_free(projector *p)
{
    if (!p)
        return;
    kafka_consumer_free(p->consumer);
    health_free(p->health);
    pgconn_free(p->pg);
    if (p->b.items)
        projbatch_clear(&p->b);
    for (size_t i = 0; i < p->ntables; i++)
        free(p->tables[i].upsert_sql);
    free(p->tables);
    domain_registry_free(p->domains);
    metrics_free(p->metrics);
    if (p->kick)
        event_free(p->kick);
    if (p->retry)
        event_free(p->retry);
    free(p->m_lag);
    free(p->msgs);
    free(p->starting);
    free(p->topic);
    free(p->group);
    offsetlog_free(p->olog);
    free(p);
}

bool projector_failed(const projector *p)
{
    return p->failed;
}

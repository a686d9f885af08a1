/* relay.c: outbox rows -> events topic -> published_at. */
#include "processor/relay.h"

#include "core/rfc3339.h"
#include "domain/envelope.h"
#include "core/ids.h"
#include "core/jsontext.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "pg/pgconn.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct relay {
    struct event_base *base;
    pgconn *pg;
    kafka_producer *producer;
    char *topic;
    jsontext confirmed; /* outbox keys confirmed by Kafka, not yet marked: a JSON array's rows */
    size_t nconfirmed;
    char *marking_rows; /* the keys of the UPDATE running, kept until it succeeds */
    size_t marking_n;
    json_t *failed;   /* outbox rows Kafka refused or lost, produced again by the retry timer */
    size_t in_flight; /* events produced, no delivery report yet */
    bool marking;     /* an UPDATE is running */
    size_t mark_rows; /* keys that make an UPDATE at once (relay_set_marking()) */
    unsigned mark_delay_ms; /* the longest a confirmed key waits for others */
    /* The scan for rows left unpublished (recover_sql) created before scan_before: at the start,
       after a lost session, and when relay_rescan() asks. */
    bool scan_due;
    bool scanning;
    char scan_before[RFC3339_LEN];
    struct event *flush;  /* runs the UPDATE of the keys gathered (mark_soon()) */
    struct event *remark; /* runs the UPDATE again a while after PostgreSQL refused it */
    struct event *rescan; /* queues the scan again a while after PostgreSQL refused it */
    struct event *retry;  /* produces the failed rows again */
    metrics_counter *m_malformed;
    /* Events published to a log that is gone (ADR 0022), produced again a page at a time. */
    char *cluster;        /* this run's Kafka cluster, once its metadata named it */
    struct event *learn;  /* asks for the cluster id each second until it is known */
    bool refill_done;     /* no page left */
    bool refill_querying; /* a page is being read */
    size_t refill_left;   /* rows of the page not yet confirmed */
    bool refill_next;     /* the page is confirmed: read the next once its marks are stored */
    /* relay_notify_below()'s waiter */
    void (*below_cb)(void *arg);
    void *below_arg;
    size_t below_limit;
};

#define RELAY_RETRY_S     1
#define RELAY_REFILL_PAGE 500
#define RELAY_REFILL_TAG  "refill" /* a row's key while it is produced again */

/* $2: the cluster that confirmed them, so that a later run on another cluster can tell. */
static const char mark_sql[] =
    "UPDATE outbox o SET published_at = now(), published_cluster = $2 FROM "
    "jsonb_to_recordset($1::jsonb) AS "
    "x(tenant text, aggregate_type text, aggregate_id text, version bigint) "
    "WHERE o.tenant = x.tenant AND o.aggregate_type = x.aggregate_type AND "
    "o.aggregate_id = x.aggregate_id AND o.version = x.version AND "
    "(o.published_at IS NULL OR o.published_cluster IS DISTINCT FROM $2)";

/* A page of events published to another cluster than $1; the oldest first. Two ranges rather
   than <>, so that the index of migration 007 answers the usual case (none) without a scan. */
static const char refill_sql[] =
    "SELECT json_build_object('tenant', tenant, 'aggregate_type', aggregate_type, "
    "'aggregate_id', aggregate_id, 'version', version, 'event_type', event_type, "
    "'command_id', command_id, 'payload', payload, 'traceparent', traceparent, "
    "'tracestate', tracestate, '" RELAY_REFILL_TAG "', true) FROM outbox "
    "WHERE published_at IS NOT NULL AND published_cluster IS NOT NULL AND "
    "(published_cluster < $1 OR published_cluster > $1) "
    "ORDER BY created_at, tenant, aggregate_type, aggregate_id, version LIMIT $2";

/* The row as JSON, then its key as text, to name a row that does not parse. */
static const char recover_sql[] =
    "SELECT json_build_object('tenant', tenant, 'aggregate_type', aggregate_type, "
    "'aggregate_id', aggregate_id, 'version', version, 'event_type', event_type, "
    "'command_id', command_id, 'payload', payload, 'traceparent', traceparent, "
    "'tracestate', tracestate), concat_ws('/', tenant, aggregate_type, aggregate_id, version) "
    "FROM outbox "
    "WHERE published_at IS NULL AND created_at < $1::timestamptz ORDER BY created_at";

static void mark(relay *r);
static void refill(relay *r);

/* The keys confirmed are marked once enough have gathered or the first has waited its while;
   an UPDATE running or waiting on remark takes them up when it ends. */
static void mark_soon(relay *r)
{
    if (r->marking || r->nconfirmed == 0 || evtimer_pending(r->remark, NULL))
        return;
    if (r->nconfirmed >= r->mark_rows) {
        evtimer_del(r->flush);
        event_active(r->flush, 0, 0);
    } else if (!evtimer_pending(r->flush, NULL)) {
        struct timeval tv = {(time_t)(r->mark_delay_ms / 1000),
                             (suseconds_t)(r->mark_delay_ms % 1000) * 1000};
        evtimer_add(r->flush, &tv);
    }
}

/* Runs ev's callback again after RELAY_RETRY_S. */
static void in_a_while(struct event *ev)
{
    struct timeval tv = {RELAY_RETRY_S, 0};
    evtimer_add(ev, &tv);
}

/* Tells relay_notify_below()'s waiter, once, when the events held have fallen to its limit. */
static void notify_below(relay *r)
{
    if (!r->below_cb || relay_unconfirmed(r) > r->below_limit)
        return;
    void (*cb)(void *) = r->below_cb;
    r->below_cb = NULL;
    cb(r->below_arg);
}

/* The keys of an UPDATE that failed join the ones confirmed since, for the next UPDATE. */
static void keep_unmarked(relay *r, const char *rows, size_t n)
{
    size_t len = strlen(rows); /* "[{...},...]" */
    jsontext *t = &r->confirmed;
    if (r->nconfirmed)
        JSONTEXT_LIT(t, ",");
    else
        JSONTEXT_LIT(t, "[");
    jsontext_raw(t, rows + 1, len - 2);
    r->nconfirmed += n;
}

static void on_marked(const pgconn_result *res, void *arg)
{
    relay *r = arg;
    r->marking = false;
    pgconn_status st = pgconn_result_status(res);
    if (st != PGCONN_OK) {
        /* Kafka has these events: the rows must not stay unpublished while we run. A lost
           session's UPDATE is queued again at once (it waits for the next session); one the
           server refused, a while later. */
        LOG_KV(LOG_WARN, "outbox: marking published failed, will retry",
               LOG_STR("error", pgconn_result_error(res)), LOG_NUM("rows", r->marking_n));
        keep_unmarked(r, r->marking_rows, r->marking_n);
        if (st == PGCONN_ERROR)
            in_a_while(r->remark);
    }
    free(r->marking_rows);
    r->marking_rows = NULL;
    r->marking_n = 0;
    if (st == PGCONN_DISCONNECTED) /* the UPDATE waits for the next session: queued at once */
        event_active(r->flush, 0, 0);
    else if (r->nconfirmed)
        mark_soon(r);
    else if (r->refill_next) /* the page's marks are stored: the next page is new rows */
        refill(r);
}

static void mark(relay *r)
{
    if (r->marking || r->nconfirmed == 0)
        return;
    JSONTEXT_LIT(&r->confirmed, "]");
    size_t n = r->nconfirmed;
    char *rows = jsontext_finish(&r->confirmed, NULL);
    r->nconfirmed = 0;
    if (!rows) { /* the keys were read from rows that made events: they are text */
        log_warn("outbox: confirmed keys could not be encoded; those rows will be republished");
        return;
    }
    char *cluster = kafka_producer_cluster_id(r->producer); /* known: Kafka just confirmed */
    const char *v[] = {rows, cluster};
    if (pgconn_query_prepared(r->pg, mark_sql, 2, v, on_marked, r) == 0) {
        r->marking = true;
        r->marking_rows = rows;
        r->marking_n = n;
    } else { /* too many queries pending: the keys wait for the next try */
        keep_unmarked(r, rows, n);
        free(rows);
        in_a_while(r->remark);
    }
    free(cluster);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    mark(arg);
}

/* The row is kept and produced again shortly: an event is never left behind while we run. */
static void retry_later(relay *r, json_t *row)
{
    json_array_append_new(r->failed, row);
    if (!evtimer_pending(r->retry, NULL))
        in_a_while(r->retry);
}

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    relay *r = arg;
    json_t *row = opaque;
    r->in_flight--;
    if (d->err) {
        log_kv(LOG_WARN, "event not delivered, will retry", LOG_FIELDS("error", d->errstr));
        retry_later(r, row);
        return;
    }
    if (json_object_get(row, RELAY_REFILL_TAG) && r->refill_left > 0 && --r->refill_left == 0)
        r->refill_next = true;
    /* The outbox key is what marking needs. */
    jsontext *t = &r->confirmed;
    if (r->nconfirmed++)
        JSONTEXT_LIT(t, ",");
    else
        JSONTEXT_LIT(t, "[");
    JSONTEXT_LIT(t, "{\"tenant\":");
    jsontext_str(t, json_string_value(json_object_get(row, "tenant")));
    JSONTEXT_LIT(t, ",\"aggregate_type\":");
    jsontext_str(t, json_string_value(json_object_get(row, "aggregate_type")));
    JSONTEXT_LIT(t, ",\"aggregate_id\":");
    jsontext_str(t, json_string_value(json_object_get(row, "aggregate_id")));
    JSONTEXT_LIT(t, ",\"version\":");
    jsontext_int(t, json_integer_value(json_object_get(row, "version")));
    JSONTEXT_LIT(t, "}");
    json_decref(row);
    mark_soon(r);
    notify_below(r);
}

/*
 * A row that cannot make an event would fail the same way every time: it is not produced and not
 * retried, but said loudly and left unpublished in the outbox, where an operator finds it
 * (published_at IS NULL) and the next start's recovery scan tries it again.
 */
static void malformed(relay *r, const char *row_key, const char *why)
{
    metrics_add(r->m_malformed, 1);
    log_kv(LOG_ERROR, "outbox row cannot be published; it stays in the outbox unpublished",
           LOG_FIELDS("row", row_key, "error", why));
}

/* "<tenant>/<aggregate type>/<aggregate id>/<version>" of a row, as far as it has them. */
static void row_key(const json_t *row, char *out, size_t len)
{
    const char *tenant = json_string_value(json_object_get(row, "tenant"));
    const char *type = json_string_value(json_object_get(row, "aggregate_type"));
    const char *id = json_string_value(json_object_get(row, "aggregate_id"));
    snprintf(out, len, "%s/%s/%s/%lld", tenant ? tenant : "?", type ? type : "?", id ? id : "?",
             (long long)json_integer_value(json_object_get(row, "version")));
}

/* Produces one outbox row; false when it is malformed (reported, not produced). */
static bool publish_one(relay *r, json_t *row)
{
    const char *tenant = json_string_value(json_object_get(row, "tenant"));
    const char *type = json_string_value(json_object_get(row, "aggregate_type"));
    const char *id = json_string_value(json_object_get(row, "aggregate_id"));
    long long version = json_integer_value(json_object_get(row, "version"));
    const char *event_type = json_string_value(json_object_get(row, "event_type"));
    json_t *payload = json_object_get(row, "payload");
    const char *text = json_string_value(json_object_get(row, RELAY_PAYLOAD_TEXT));
    if (!tenant || !type || !id || version <= 0 || !event_type ||
        !(text || json_is_object(payload))) {
        char key[512];
        row_key(row, key, sizeof(key));
        malformed(r, key,
                  "tenant, aggregate_type, aggregate_id and event_type must be strings, version "
                  "a positive integer and payload an object");
        return false;
    }
    char *value = NULL; /* the payload encoded here, when the row has no text of it */
    if (!text && !(text = value = json_dumps(payload, JSON_COMPACT))) {
        char key[512];
        row_key(row, key, sizeof(key));
        malformed(r, key, "the payload cannot be encoded as JSON");
        return false;
    }
    char *event_id = envelope_event_id(tenant, type, id, version);
    char now[RFC3339_LEN];
    rfc3339_now(now);
    envelope e = {
        .id = event_id,
        .source = "/state-processor",
        .type = (char *)event_type,
        .subject = (char *)id,
        .time = now,
        .tenant = (char *)tenant,
        .traceparent = (char *)json_string_value(json_object_get(row, "traceparent")),
        .tracestate = (char *)json_string_value(json_object_get(row, "tracestate")),
        .expected_version = -1,
        .reply_partition = -1,
    };
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    json_t *held = json_incref(row); /* the delivery report's opaque; rows are never changed */
    if (kafka_produce(r->producer, r->topic, -1, id, strlen(id), text, strlen(text), h, nh, held) ==
        KAFKA_OK) {
        r->in_flight++;
    } else {
        log_kv(LOG_WARN, "event not enqueued, will retry", LOG_FIELDS("event_id", event_id));
        retry_later(r, held);
    }
    free(value);
    free(event_id);
    return true;
}

void relay_publish(relay *r, json_t *rows)
{
    for (size_t i = 0; i < json_array_size(rows); i++)
        publish_one(r, json_array_get(rows, i));
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    relay *r = arg;
    json_t *rows = r->failed;
    r->failed = json_array();
    relay_publish(r, rows);
    json_decref(rows);
    notify_below(r); /* a row that could not make an event is not held again */
}

static void scan(relay *r);

static void on_recovered(const pgconn_result *res, void *arg)
{
    relay *r = arg;
    r->scanning = false;
    pgconn_status st = pgconn_result_status(res);
    if (st != PGCONN_OK) {
        log_kv(LOG_WARN, "outbox: scan for unpublished rows failed, will retry",
               LOG_FIELDS("error", pgconn_result_error(res)));
        r->scan_due = true; /* after a lost session, when the next one is up */
        if (st == PGCONN_ERROR)
            in_a_while(r->rescan);
        return;
    }
    int n = pgconn_result_ntuples(res);
    for (int i = 0; i < n; i++) {
        json_t *row = json_loads(pgconn_result_value(res, i, 0), 0, NULL);
        if (json_is_object(row))
            publish_one(r, row);
        else
            malformed(r, pgconn_result_value(res, i, 1), "the row does not read back as JSON");
        json_decref(row);
    }
    if (n > 0) {
        LOG_KV(LOG_INFO, "outbox: produced again events left unpublished", LOG_NUM("count", n),
               LOG_STR("created_before", r->scan_before));
    }
    scan(r); /* asked for again meanwhile */
}

static void on_refill(const pgconn_result *res, void *arg)
{
    relay *r = arg;
    r->refill_querying = false;
    if (pgconn_result_status(res) != PGCONN_OK) {
        log_kv(LOG_WARN, "outbox: reading events of another cluster failed, will retry",
               LOG_FIELDS("error", pgconn_result_error(res)));
        in_a_while(r->learn);
        return;
    }
    int n = pgconn_result_ntuples(res);
    if (n < RELAY_REFILL_PAGE)
        r->refill_done = true;
    r->refill_left = (size_t)n;
    for (int i = 0; i < n; i++) {
        json_t *row = json_loads(pgconn_result_value(res, i, 0), 0, NULL);
        if (!row || !publish_one(r, row))
            r->refill_left--; /* reported; it stays as it is, for an operator */
        json_decref(row);
    }
    if (r->refill_left == 0) /* nothing of the page could be produced: no page will do better */
        r->refill_done = true;
    if (n > 0) {
        LOG_KV(LOG_WARN, "outbox: events published to another Kafka cluster produced again",
               LOG_NUM("count", n), LOG_STR("cluster", r->cluster));
    }
}

/*
 * The events topic is the durable domain log: when this run's cluster is not the one the outbox
 * rows were published to (a replaced cluster, a new mock cluster under kept data), the rows are
 * produced again into this cluster's log, a page at a time, oldest first.
 */
static void refill(relay *r)
{
    r->refill_next = false;
    if (r->refill_done || r->refill_querying || !r->cluster || !pgconn_connected(r->pg))
        return;
    char page[16];
    snprintf(page, sizeof(page), "%d", RELAY_REFILL_PAGE);
    const char *v[] = {r->cluster, page};
    if (pgconn_query(r->pg, refill_sql, 2, v, on_refill, r) == 0)
        r->refill_querying = true;
}

/* Waits, without blocking, for the producer's first metadata to name the cluster. */
static void on_learn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    relay *r = arg;
    if (!r->cluster)
        r->cluster = kafka_producer_cluster_id(r->producer);
    if (r->cluster && pgconn_connected(r->pg) && !r->scan_due) {
        refill(r);
        return;
    }
    in_a_while(r->learn);
}

/* Queues the scan when one is due and none is running. */
static void scan(relay *r)
{
    if (!r->scan_due || r->scanning || !pgconn_connected(r->pg))
        return;
    const char *v[] = {r->scan_before};
    if (pgconn_query(r->pg, recover_sql, 1, v, on_recovered, r) == 0) {
        r->scan_due = false;
        r->scanning = true;
    } else {
        in_a_while(r->rescan);
    }
}

static void on_rescan(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    scan(arg);
}

/* From now on, rows created up to now are due for a scan (the text has milliseconds: the next
   one, so that none created in this one is left out). */
static void scan_from_now(relay *r)
{
    r->scan_due = true;
    rfc3339_format(ids_now_ms() + 1, r->scan_before);
}

void relay_rescan(relay *r)
{
    scan_from_now(r);
    scan(r);
}

/*
 * Each session scans for the rows left unpublished before it: at the start, those of earlier
 * runs; after a lost session, also this run's rows whose fate the loss hid. Rows this run still
 * holds are produced twice then; consumers dedupe by event id.
 */
static void on_pg_state(bool connected, void *arg)
{
    relay *r = arg;
    if (connected)
        scan(r);
    else
        relay_rescan(r);
}

relay *relay_new(struct event_base *base, const char *conninfo, const config_props *kafka_props,
                 const char *events_topic, metrics *m, char *err, size_t errlen)
{
    relay *r = xcalloc(1, sizeof(*r));
    r->m_malformed = metrics_counter_get(
        m, "relay_outbox_rows_malformed_total",
        "outbox rows that cannot make an event: logged, left unpublished for an operator", NULL);
    r->base = base;
    r->topic = xstrdup(events_topic);
    r->failed = json_array();
    r->mark_rows = RELAY_MARK_ROWS;
    r->mark_delay_ms = RELAY_MARK_DELAY_MS;
    scan_from_now(r);
    r->flush = evtimer_new(base, on_flush, r);
    r->retry = evtimer_new(base, on_retry, r);
    r->remark = evtimer_new(base, on_flush, r);
    r->rescan = evtimer_new(base, on_rescan, r);
    r->learn = evtimer_new(base, on_learn, r);
    struct timeval soon = {0, 100000};
    evtimer_add(r->learn, &soon);
    r->producer = kafka_producer_new(base, kafka_props, on_delivery, r, err, errlen);
    if (r->producer)
        r->pg = pgconn_new(base, conninfo, on_pg_state, r, err, errlen);
    if (!r->pg) {
        relay_free(r);
        return NULL;
    }
    pgconn_set_name(r->pg, "state-processor relay");
    return r;
}

void relay_set_marking(relay *r, size_t rows, unsigned delay_ms)
{
    r->mark_rows = rows ? rows : 1;
    r->mark_delay_ms = delay_ms;
}

size_t relay_unconfirmed(const relay *r)
{
    return r->in_flight + json_array_size(r->failed);
}

void relay_notify_below(relay *r, size_t limit, void (*cb)(void *arg), void *arg)
{
    r->below_cb = cb;
    r->below_arg = arg;
    r->below_limit = limit;
    notify_below(r);
}

void relay_free(relay *r)
{
    if (!r)
        return;
    if (r->producer && kafka_producer_flush(r->producer, 5000) != 0)
        log_warn("shutdown: %zu events unconfirmed; they stay in the outbox", r->in_flight);
    if (json_array_size(r->failed))
        log_warn("shutdown: %zu events undelivered; they stay in the outbox",
                 json_array_size(r->failed));
    /* Mark what Kafka confirmed; one bounded run of the loop lets the UPDATE finish. */
    if (r->pg && pgconn_connected(r->pg)) {
        mark(r);
        struct timeval limit = {2, 0};
        while (r->marking && event_base_loopexit(r->base, &limit) == 0 &&
               event_base_dispatch(r->base) == 0 && r->marking)
            break;
    }
    pgconn_free(r->pg);
    kafka_producer_free(r->producer);
    if (r->flush)
        event_free(r->flush);
    if (r->retry)
        event_free(r->retry);
    if (r->remark)
        event_free(r->remark);
    if (r->rescan)
        event_free(r->rescan);
    if (r->learn)
        event_free(r->learn);
    free(r->cluster);
    jsontext_free(&r->confirmed);
    free(r->marking_rows);
    json_decref(r->failed);
    free(r->topic);
    free(r);
}

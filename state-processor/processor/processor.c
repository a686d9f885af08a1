/*
 * processor.c: the processor's state machine. For each batch of consumed commands:
 *   dead letters first (produced and confirmed before anything commits), then one transaction:
 *   BEGIN + reads (stored offsets, idempotency records, aggregate rows, all locked) pipelined;
 *   the rules applied in C; the writes (aggregates, commands, outbox, offsets) pipelined; COMMIT.
 *   Only after COMMIT: replies to the gateways and events through the outbox relay.
 * Once its writes are sent, the next batch is polled and decoded while PostgreSQL runs them
 * (txloop_take_ahead()); its transaction begins when this one has committed.
 * Any failure rolls the transaction back and retries the same batch after a backoff: nothing is
 * skipped, nothing is applied twice. When PostgreSQL refuses the data itself (SQLSTATE class 22,
 * 23 or 54) or a row cannot be encoded, the batch is split until the command at fault is alone,
 * and that command is dead-lettered: the partition keeps flowing (batch_refused()).
 */
#include "processor/processor.h"

#include "processor/batch.h"
#include "domain/domain.h"
#include "loop/health.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "core/metrics.h"
#include "loop/offsetlog.h"
#include "pg/pgconn.h"
#include "pg/pgplans.h"
#include "processor/purge.h"
#include "processor/relay.h"
#include "loop/txloop.h"
#include "core/xalloc.h"

#include <assert.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct processor {
    const processor_config *cfg;
    struct event_base *base;
    domain_registry *domains;
    pgconn *pg;
    txloop *loop;                /* the commands consumed, and the steps around each batch */
    kafka_producer *producer;    /* replies and dead letters */
    kafka_topics_keeper *topics; /* when the topics could not be created at start */
    relay *relay;                /* events */
    purge *purge;                /* expired idempotency records */
    pgplans *plans;              /* the session's plan mode */
    health *health;
    metrics *metrics;
    char *topic_commands, *topic_replies, *topic_dlq;

    batch b;
    txphase ph; /* the queries of the transaction's current phase */
    size_t expected_aggregates;
    long long written_aggregates;
    size_t dlq_outstanding;
    bool dlq_failed;
    char dlq_error[256];

    metrics_counter *m_applied, *m_rejected, *m_duplicates, *m_skipped, *m_dead, *m_batches,
        *m_retries, *m_unique_retries, *m_isolated, *m_held, *m_ahead;
    metrics_histogram *m_batch_time;
    metrics_histogram *m_commit_time;
    metrics_histogram *m_reads_time;  /* BEGIN and the reads, until their last answer */
    metrics_histogram *m_apply_time;  /* the rules applied, the first write serialized */
    metrics_histogram *m_writes_time; /* the writes, until their last answer */
    metrics_histogram *m_transit;
    json_t *outbox;           /* the batch's outbox rows, for the relay once committed */
    bool keyed;               /* the transaction looks its aggregates up by key (keyed_sql) */
    int write_step;           /* the next write queue_write() queues */
    bool writes_queued;       /* all of them are */
    struct event *write_next; /* queues the next write from the loop */
    batch done;               /* committed, its events and replies not yet sent (on_finish) */
    batch ahead;              /* the next batch, decoded while this one's writes run */
    long long ahead_start_us;
    struct event *take_ahead; /* polls it from the loop, once the writes are sent */
    json_t *done_outbox;      /* its outbox rows */
    struct event *finish;     /* runs on_finish() from the loop */
    long long batch_start_us;
    long long reads_start_us;
    long long writes_start_us;
    long long commit_start_us;
    struct event *hold; /* ends a wait for the relay (can_take()) after HOLD_MAX_S */
    bool hold_expired;  /* it did: one batch is taken whatever the relay holds */
};

/* A batch is taken while the relay holds the unconfirmed events of at most HOLD_BATCHES
   batches, or once HOLD_MAX_S seconds have passed since it began to wait (ADR 0034). */
#define HOLD_BATCHES 4
#define HOLD_MAX_S   1

/*
 * The transaction of a batch of up to KEYED_MAX_COMMANDS commands finds its aggregates by their
 * primary key, one index lookup each (ADR 0038). The planner cannot know how many rows a jsonb
 * parameter holds (it assumes 100), so on a table of a few thousand rows it reads the whole table
 * into a hash join, some 0.3 ms per statement on a batch of one. keyed_sql turns the other joins
 * and scans off for the rest of the transaction; the two statements that join the aggregates have
 * texts of their own there (KEYED_TEXT), since a prepared statement's plans are cached by its
 * text and made with the settings in force when they are made. The other statements share their
 * texts with the larger batches: their plans look rows up by key or join nothing either way.
 * Larger batches are left to the planner: from some 128 commands on, one pass over such a table
 * costs less than a lookup each.
 */
#define KEYED_MAX_COMMANDS 64
#define KEYED_TEXT         "/* keyed */ "
static const char keyed_sql[] =
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true), "
    "set_config('enable_mergejoin', 'off', true)";

static void begin_tx(processor *p);
static void dead_letters_phase(processor *p);

static void retry_tx(void *arg)
{
    begin_tx(arg);
}

static void retry_dead_letters(void *arg)
{
    dead_letters_phase(arg);
}

/*
 * Rolls back. Then the same batch is retried after a backoff, unless its data was refused: then
 * the range is split or its one command retried alone, dead-lettered, or left unrecorded
 * (batch_refused()), and written again at once.
 */
static void fail_tx(processor *p)
{
    txphase_rollback(&p->ph, p->pg);
    metrics_add(p->m_retries, 1);
    batch_refusal next = p->ph.refusal
                             ? batch_refused(&p->b, p->ph.refusal, p->ph.error, p->ph.unique)
                             : BATCH_STUCK;
    batch_reset(&p->b);
    switch (next) {
    case BATCH_RETRIED:
        metrics_add(p->m_unique_retries, 1);
        log_kv(LOG_INFO, "a unique violation, most likely a race lost; writing the batch again",
               LOG_FIELDS("error", p->ph.error));
        begin_tx(p);
        break;
    case BATCH_NARROWED:
        metrics_add(p->m_isolated, 1);
        log_kv(LOG_WARN, "a command's data was refused; splitting the batch to find it",
               LOG_FIELDS("error", p->ph.error));
        begin_tx(p);
        break;
    case BATCH_RETRY_ALONE:
        begin_tx(p);
        break;
    case BATCH_DEAD_LETTERED: /* its dead letter first, confirmed before anything commits */
        dead_letters_phase(p);
        break;
    case BATCH_UNRECORDED:
        log_kv(LOG_ERROR,
               "the rejection of a dead-lettered command was refused too; only its "
               "offset is stored",
               LOG_FIELDS("error", p->ph.error));
        begin_tx(p);
        break;
    case BATCH_STUCK:
        txloop_backoff(p->loop, retry_tx, "batch failed, will retry", p->ph.error);
        break;
    }
}

static int query(processor *p, const char *sql, int n, const char *const *v, pgconn_cb cb)
{
    return txphase_query(&p->ph, p->pg, sql, n, v, cb, p);
}

/* ---- after COMMIT ---- */

static void send_replies(processor *p, const batch *b)
{
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (it->env.reply_partition < 0 || !it->recordable || it->state == ITEM_SKIPPED)
            continue;
        char *value = batch_reply(it);
        /* Best effort: a lost reply only turns the gateway's answer into a 202. */
        if (!value ||
            kafka_produce(p->producer, p->topic_replies, it->env.reply_partition, it->env.id,
                          strlen(it->env.id), value, strlen(value), NULL, 0, NULL) != KAFKA_OK)
            log_kv(LOG_WARN, "reply not sent",
                   LOG_FIELDS("command_id", it->env.id, "trace_id", it->trace_id));
        free(value);
    }
}

static const char *const outcome_names[] = {[ITEM_NEW] = "skipped",
                                            [ITEM_APPLIED] = "applied",
                                            [ITEM_REJECTED] = "rejected",
                                            [ITEM_DUPLICATE] = "duplicate",
                                            [ITEM_SKIPPED] = "skipped"};

static void count_outcomes(processor *p, const batch *b)
{
    for (size_t i = b->from; i < b->to; i++) {
        const batch_item *it = &b->items[i];
        if (log_enabled(LOG_DEBUG) && it->recordable)
            log_kv(LOG_DEBUG, "command decided",
                   LOG_FIELDS("command_id", it->env.id, "outcome", outcome_names[it->state],
                              "tenant", it->tenant, "trace_id", it->trace_id));
        switch (it->state) {
        case ITEM_APPLIED:
            metrics_add(p->m_applied, 1);
            break;
        case ITEM_REJECTED:
            metrics_add(p->m_rejected, 1);
            break;
        case ITEM_DUPLICATE:
            metrics_add(p->m_duplicates, 1);
            break;
        case ITEM_SKIPPED:
        case ITEM_NEW:
            metrics_add(p->m_skipped, 1);
            break;
        }
    }
}

/* What a committed batch still owes: its events and its replies. */
static void finish_committed(processor *p)
{
    if (!p->done.items)
        return;
    relay_publish(p->relay, p->done_outbox);
    json_decref(p->done_outbox);
    p->done_outbox = NULL;
    send_replies(p, &p->done);
    count_outcomes(p, &p->done);
    batch_clear(&p->done);
    memset(&p->done, 0, sizeof(p->done));
}

static void on_finish(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    processor *p = arg;
    finish_committed(p);
    txloop_quiet(p->loop);
}

/*
 * A part of a batch split to isolate a refused command committed: its events and replies go at
 * once, and the rest of the batch is written next. False when the batch is all committed.
 */
static bool committed_part(processor *p)
{
    if (p->b.to >= p->b.n)
        return false;
    relay_publish(p->relay, p->outbox);
    json_decref(p->outbox);
    p->outbox = NULL;
    send_replies(p, &p->b);
    count_outcomes(p, &p->b);
    if (!batch_next_range(&p->b))
        return false;
    batch_reset(&p->b);
    begin_tx(p);
    return true;
}

/*
 * The next batch's reads are queued first, and what this one still owes is done on the next
 * pass of the loop, after pgconn has sent them: PostgreSQL reads while we publish.
 */
static void committed(processor *p)
{
    metrics_add(p->m_batches, 1);
    long long now_us = ids_monotonic_us();
    metrics_observe_us(p->m_batch_time, now_us - p->batch_start_us);
    metrics_observe_us(p->m_commit_time, now_us - p->commit_start_us);
    /* A batch commits at least one loop pass after the previous one's on_finish(). */
    assert(!p->done.items);
    /* Before the next poll, which may serve a rebalance that takes these partitions away. */
    kafka_consumer_commit(txloop_consumer(p->loop), p->b.partitions, p->b.batch_next,
                          p->b.npartitions);
    for (size_t i = 0; i < p->b.npartitions; i++)
        if (p->b.batch_next[i] >= 0)
            offsetlog_committed(txloop_offsets(p->loop), p->b.partitions[i]);
    if (committed_part(p))
        return;
    p->done = p->b;
    p->done_outbox = p->outbox;
    p->outbox = NULL;
    memset(&p->b, 0, sizeof(p->b));
    if (p->ahead.items && txloop_continue(p->loop)) {
        p->b = p->ahead;
        memset(&p->ahead, 0, sizeof(p->ahead));
        p->batch_start_us = p->ahead_start_us;
        dead_letters_phase(p);
    } else {
        if (p->ahead.items) { /* stopping: consumed again by whoever owns its partitions next */
            batch_clear(&p->ahead);
            memset(&p->ahead, 0, sizeof(p->ahead));
        }
        txloop_next(p->loop); /* not when stopping: on_finish then ends the loop */
    }
    /* Activated after pgconn's send of the reads just queued: the loop runs active events in
       the order they were activated, and PostgreSQL must not wait while the batch finishes. */
    event_active(p->finish, 0, 0);
}

static void on_commit(const pgconn_result *r, void *arg)
{
    processor *p = arg;
    p->ph.outstanding--;
    if (pgconn_result_status(r) != PGCONN_OK)
        txphase_error(&p->ph, r, "commit");
    if (p->ph.failed)
        fail_tx(p);
    else
        committed(p);
}

/* ---- writes ---- */

/* Every write is queued and answered: COMMIT, or roll back. */
static void writes_done(processor *p)
{
    if (p->written_aggregates != (long long)p->expected_aggregates)
        txphase_fail(&p->ph, "version conflict: wrote %lld of %zu aggregate rows",
                     p->written_aggregates, p->expected_aggregates);
    if (p->ph.failed) {
        fail_tx(p);
        return;
    }
    /* COMMIT only once every write is known good: a COMMIT of an aborted transaction would
       report success while rolling back. */
    p->commit_start_us = ids_monotonic_us();
    metrics_observe_us(p->m_writes_time, p->commit_start_us - p->writes_start_us);
    if (query(p, "COMMIT", 0, NULL, on_commit) != 0)
        fail_tx(p);
}

static void on_write(const pgconn_result *r, void *arg)
{
    processor *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK)
        txphase_error(&p->ph, r, "write");
    if (--p->ph.outstanding == 0 && p->writes_queued)
        writes_done(p);
}

static void on_aggregates_written(const pgconn_result *r, void *arg)
{
    processor *p = arg;
    if (pgconn_result_status(r) == PGCONN_OK && pgconn_result_ntuples(r) == 1)
        p->written_aggregates = atoll(pgconn_result_value(r, 0, 0));
    on_write(r, arg);
}

#define WRITE_AGGREGATES_SQL                                                                       \
    "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(tenant text, type text, "         \
    "id text, prev_version bigint, version bigint, state jsonb, deleted boolean)), "               \
    "upd AS (UPDATE aggregates a SET version = x.version, "                                        \
    "state = CASE WHEN x.deleted THEN NULL ELSE x.state END, deleted = x.deleted, "                \
    "updated_at = now() FROM x WHERE x.prev_version > 0 AND a.tenant = x.tenant AND "              \
    "a.type = x.type AND a.id = x.id AND a.version = x.prev_version RETURNING 1), "                \
    "ins AS (INSERT INTO aggregates (tenant, type, id, version, state, deleted) "                  \
    "SELECT tenant, type, id, version, CASE WHEN deleted THEN NULL ELSE state END, deleted "       \
    "FROM x WHERE prev_version = 0 RETURNING 1) "                                                  \
    "SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins)"
static const char write_aggregates_sql[] = WRITE_AGGREGATES_SQL;
static const char write_aggregates_keyed_sql[] = KEYED_TEXT WRITE_AGGREGATES_SQL;

/* The request's fingerprint (ce_requesthash) goes with the record, as the gateway's claim or
   accepted record would have stored it; one stored already is kept. */
static const char write_commands_sql[] =
    "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, "
    "request_hash, status, http_status, result, version, kafka_partition, kafka_offset, "
    "finished_at, traceparent) "
    "SELECT id, tenant, idempotency_key, type, aggregate_type, aggregate_id, request_hash, "
    "status, http_status, result, version, partition, \"offset\", now(), traceparent "
    "FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, tenant text, idempotency_key text, "
    "type text, aggregate_type text, aggregate_id text, request_hash text, status text, "
    "http_status int, result jsonb, version bigint, partition int, \"offset\" bigint, "
    "traceparent text) "
    "ORDER BY id " /* rows locked in id order, as the gateway's batched records lock them */
    "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, "
    "http_status = EXCLUDED.http_status, result = EXCLUDED.result, version = EXCLUDED.version, "
    "kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset, "
    "finished_at = EXCLUDED.finished_at, traceparent = EXCLUDED.traceparent, "
    "request_hash = COALESCE(commands.request_hash, EXCLUDED.request_hash)";

static const char write_outbox_sql[] =
    "INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, command_id, "
    "payload, traceparent, tracestate) SELECT tenant, aggregate_type, aggregate_id, version, "
    "event_type, command_id, payload, traceparent, tracestate FROM jsonb_to_recordset($1::jsonb) "
    "AS x(tenant text, aggregate_type text, aggregate_id text, version bigint, event_type text, "
    "command_id uuid, payload jsonb, traceparent text, tracestate text)";

/*
 * Queues one write of rows (freed here) with p2, unless NULL, as $2; none for no rows; NULL rows
 * could not be encoded.
 */
static void write_rows(processor *p, const char *sql, char *rows, size_t count, const char *p2,
                       pgconn_cb cb)
{
    const char *v[] = {rows, p2};
    if (!rows)
        txphase_unencodable(&p->ph, "write");
    else if (count > 0)
        query(p, sql, p2 ? 2 : 1, v, cb);
    free(rows);
}

/*
 * Queues write number p->write_step. The writes go one per loop pass: pgconn sends each on the
 * pass after it is queued, so PostgreSQL runs one while the next is serialized.
 */
static void queue_write(processor *p)
{
    size_t n = 0;
    char *rows;
    switch (p->write_step++) {
    case 0:
        rows = batch_aggregate_rows(&p->b, &n);
        p->expected_aggregates = n;
        write_rows(p, p->keyed ? write_aggregates_keyed_sql : write_aggregates_sql, rows, n, NULL,
                   on_aggregates_written);
        break;
    case 1:
        rows = batch_command_rows(&p->b, &n);
        write_rows(p, write_commands_sql, rows, n, NULL, on_write);
        break;
    case 2:
        json_decref(p->outbox); /* of a batch that failed before its COMMIT */
        p->outbox = batch_outbox_json(&p->b);
        rows = p->outbox ? batch_outbox_rows(&p->b, &n) : NULL;
        write_rows(p, write_outbox_sql, rows, n, NULL, on_write);
        break;
    default:
        rows = batch_offset_rows(&p->b, &n);
        write_rows(p, txloop_offsets_sql, rows, n, offsetlog_cluster(txloop_offsets(p->loop)),
                   on_write);
        p->writes_queued = true;
        if (!p->ph.failed && !p->ahead.items)
            event_active(p->take_ahead, 0, 0);
        break;
    }
    if (p->ph.failed) /* a write failed or could not be queued: queue no more */
        p->writes_queued = true;
    if (!p->writes_queued)
        event_active(p->write_next, 0, 0);
    else if (p->ph.outstanding == 0) /* all answered already, or nothing to write (replays) */
        writes_done(p);
}

/* The writes are sent: the next batch is decoded while PostgreSQL runs them. */
static void on_take_ahead(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    processor *p = arg;
    if (p->b.items && p->writes_queued && !p->ph.failed && !p->ahead.items)
        txloop_take_ahead(p->loop);
}

static void on_write_next(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    queue_write(arg);
}

static void apply_and_write(processor *p)
{
    long long start_us = ids_monotonic_us();
    metrics_observe_us(p->m_reads_time, start_us - p->reads_start_us);
    batch_apply(&p->b);
    p->written_aggregates = 0;
    p->write_step = 0;
    p->writes_queued = false;
    queue_write(p);
    p->writes_start_us = ids_monotonic_us();
    metrics_observe_us(p->m_apply_time, p->writes_start_us - start_us);
}

/* ---- reads ---- */

static void read_done(processor *p)
{
    if (--p->ph.outstanding > 0)
        return;
    if (p->ph.failed)
        fail_tx(p);
    else
        apply_and_write(p);
}

/* The answer of a statement of the read phase that returns nothing the batch needs. */
static void read_step_done(processor *p, const pgconn_result *r, const char *what)
{
    if (pgconn_result_status(r) != PGCONN_OK)
        txphase_error(&p->ph, r, what);
    read_done(p);
}

static void on_begin(const pgconn_result *r, void *arg)
{
    read_step_done(arg, r, "begin");
}

static void on_keyed(const pgconn_result *r, void *arg)
{
    read_step_done(arg, r, "plan by key");
}

static void on_offsets(const pgconn_result *r, void *arg)
{
    processor *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK) {
        txphase_error(&p->ph, r, "read offsets");
    } else {
        for (int i = 0; i < pgconn_result_ntuples(r); i++) {
            int partition = atoi(pgconn_result_value(r, i, 0));
            /* An offset of another log must not make this one's messages look processed. */
            if (!offsetlog_distrusted(txloop_offsets(p->loop), partition,
                                      pgconn_result_value(r, i, 2)))
                batch_load_offset(&p->b, partition, atoll(pgconn_result_value(r, i, 1)));
        }
    }
    read_done(p);
}

static void on_known(const pgconn_result *r, void *arg)
{
    processor *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK) {
        txphase_error(&p->ph, r, "read idempotency records");
    } else {
        for (int i = 0; i < pgconn_result_ntuples(r); i++) {
            const char *hs = pgconn_result_value(r, i, 4);
            batch_load_command(&p->b, pgconn_result_value(r, i, 0), pgconn_result_value(r, i, 1),
                               pgconn_result_value(r, i, 2), pgconn_result_value(r, i, 3),
                               hs ? atoi(hs) : 0, pgconn_result_value(r, i, 5));
        }
    }
    read_done(p);
}

static void on_aggregates(const pgconn_result *r, void *arg)
{
    processor *p = arg;
    if (pgconn_result_status(r) != PGCONN_OK) {
        txphase_error(&p->ph, r, "read aggregates");
    } else {
        for (int i = 0; i < pgconn_result_ntuples(r); i++) {
            if (batch_load_aggregate(&p->b, pgconn_result_value(r, i, 0),
                                     pgconn_result_value(r, i, 1), pgconn_result_value(r, i, 2),
                                     atoll(pgconn_result_value(r, i, 3)),
                                     pgconn_result_value(r, i, 4),
                                     strcmp(pgconn_result_value(r, i, 5), "t") == 0) != 0)
                txphase_fail(&p->ph, "aggregate state is not JSON");
        }
    }
    read_done(p);
}

static const char read_offsets_sql[] =
    "SELECT partition, next_offset, cluster_id FROM consumer_offsets WHERE group_id = $1 AND "
    "topic = $2 AND partition = ANY($3::int[]) ORDER BY partition FOR UPDATE";

static const char read_known_sql[] =
    "SELECT c.tenant, c.idempotency_key, c.id, c.status, c.http_status, c.result "
    "FROM commands c JOIN jsonb_to_recordset($1::jsonb) AS k(tenant text, key text, id uuid) "
    "ON (c.tenant = k.tenant AND c.idempotency_key = k.key) OR c.id = k.id";

/* Locks in a fixed order so two processors overlapping in a rebalance cannot deadlock. */
#define READ_AGGREGATES_SQL                                                                        \
    "SELECT a.tenant, a.type, a.id, a.version, a.state, a.deleted FROM aggregates a "              \
    "JOIN (SELECT DISTINCT tenant, type, id FROM jsonb_to_recordset($1::jsonb) AS "                \
    "k(tenant text, type text, id text)) k ON a.tenant = k.tenant AND a.type = k.type AND "        \
    "a.id = k.id ORDER BY a.tenant, a.type, a.id FOR UPDATE OF a"
static const char read_aggregates_sql[] = READ_AGGREGATES_SQL;
static const char read_aggregates_keyed_sql[] = KEYED_TEXT READ_AGGREGATES_SQL;

static void begin_tx(processor *p)
{
    p->reads_start_us = ids_monotonic_us();
    p->keyed = p->b.to - p->b.from <= KEYED_MAX_COMMANDS;
    txphase_begin(&p->ph, p->pg);
    char *parts = batch_partitions_param(&p->b);
    char *keys = batch_keys_param(&p->b);
    char *aggs = batch_aggregates_param(&p->b);
    const char *ov[] = {p->cfg->group_id, p->b.topic, parts};
    const char *kv[] = {keys};
    const char *av[] = {aggs};
    if (!keys || !aggs)
        txphase_unencodable(&p->ph, "read");
    /* Pipelined: one round trip for them all. */
    else if (query(p, "BEGIN", 0, NULL, on_begin) == 0 &&
             (!p->keyed || query(p, keyed_sql, 0, NULL, on_keyed) == 0) &&
             query(p, read_offsets_sql, 3, ov, on_offsets) == 0 &&
             query(p, read_known_sql, 1, kv, on_known) == 0)
        query(p, p->keyed ? read_aggregates_keyed_sql : read_aggregates_sql, 1, av, on_aggregates);
    free(parts);
    free(keys);
    free(aggs);
    if (p->ph.failed && p->ph.outstanding == 0)
        fail_tx(p);
}

/* ---- dead letters ---- */

/* Every dead letter produced is confirmed: none is produced again for this batch. */
static void dead_letters_sent(processor *p)
{
    for (size_t i = 0; i < p->b.n; i++)
        p->b.items[i].dead_sent = p->b.items[i].dead_reason != NULL;
}

/* Delivery reports of replies (opaque NULL, best effort) and dead letters. */
static void on_produced(void *opaque, const kafka_delivery *d, void *arg)
{
    processor *p = arg;
    if (opaque != &p->dlq_outstanding)
        return;
    if (d->err) {
        p->dlq_failed = true;
        snprintf(p->dlq_error, sizeof(p->dlq_error), "dead letter not delivered: %s", d->errstr);
    }
    if (--p->dlq_outstanding > 0)
        return;
    if (!p->dlq_failed) {
        dead_letters_sent(p);
        begin_tx(p);
        return;
    }
    /* Nothing is committed yet, so producing them all again is safe (at-least-once). */
    txloop_backoff(p->loop, retry_dead_letters, "dead letters failed, will retry", p->dlq_error);
}

/*
 * Poison messages go to the dead-letter topic, and Kafka must confirm them before the
 * transaction that moves the offset past them may commit: a dead letter is never lost.
 */
static void dead_letters_phase(processor *p)
{
    p->dlq_failed = false;
    for (size_t i = 0; i < p->b.n; i++) {
        batch_item *it = &p->b.items[i];
        if (!it->dead_reason || it->dead_sent)
            continue;
        header h[KAFKA_MAX_HEADERS + 3];
        size_t nh = 0;
        for (size_t k = 0; k < it->nheaders && nh < KAFKA_MAX_HEADERS; k++)
            h[nh++] = it->headers[k];
        char where[64];
        snprintf(where, sizeof(where), "%d/%lld", it->partition, it->offset);
        h[nh++] = (header){DLQ_HEADER_REASON, it->dead_reason, strlen(it->dead_reason)};
        h[nh++] = (header){DLQ_HEADER_DETAIL, it->dead_detail, strlen(it->dead_detail)};
        h[nh++] = (header){DLQ_HEADER_SOURCE, where, strlen(where)};
        log_kv(LOG_WARN, "dead letter",
               LOG_FIELDS("reason", it->dead_reason, "detail", it->dead_detail, "source", where,
                          "trace_id", it->trace_id));
        if (kafka_produce(p->producer, p->topic_dlq, -1, it->key, it->key_len, it->value, it->len,
                          h, nh, &p->dlq_outstanding) == KAFKA_OK) {
            p->dlq_outstanding++;
            metrics_add(p->m_dead, 1);
        } else {
            p->dlq_failed = true;
            snprintf(p->dlq_error, sizeof(p->dlq_error), "dead letter not enqueued");
        }
    }
    if (p->dlq_outstanding > 0)
        return; /* on_produced() continues */
    if (p->dlq_failed) {
        p->dlq_outstanding = 1; /* reuse the failure path */
        kafka_delivery failed = {.err = 1, .errstr = "enqueue failed", .partition = -1};
        on_produced(&p->dlq_outstanding, &failed, p);
        return;
    }
    dead_letters_sent(p);
    begin_tx(p);
}

/* ---- a batch ---- */

/* A batch polled: the next step's, or one taken ahead while the step's writes run. */
static void on_batch(void *arg, const kafka_message *msgs, size_t n)
{
    processor *p = arg;
    bool ahead = p->b.items != NULL;
    batch *b = ahead ? &p->ahead : &p->b;
    if (ahead) {
        metrics_add(p->m_ahead, 1);
        p->ahead_start_us = ids_monotonic_us();
    } else {
        p->batch_start_us = ids_monotonic_us();
    }
    long long now_us = ids_now_us();
    for (size_t i = 0; i < n; i++)
        if (msgs[i].timestamp_ms >= 0)
            metrics_observe_us(p->m_transit, now_us - msgs[i].timestamp_ms * 1000);
    memset(b, 0, sizeof(*b));
    batch_decode(b, p->domains, msgs, n, p->cfg->group_id, p->cfg->tenant_default);
    if (!ahead)
        dead_letters_phase(p);
}

/* No committed batch still owes its events and replies. */
static bool quiet(void *arg)
{
    const processor *p = arg;
    return !p->done.items;
}

static void take_again(void *arg)
{
    processor *p = arg;
    evtimer_del(p->hold);
    txloop_resume(p->loop);
}

static void on_hold_expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    processor *p = arg;
    p->hold_expired = true;
    relay_notify_below(p->relay, 0, NULL, NULL);
    txloop_resume(p->loop);
}

/*
 * Kafka confirms events more slowly than batches commit: the relay's unconfirmed events, each
 * held in memory with its data, would grow with every batch. The next batch waits until Kafka
 * has caught up, or for HOLD_MAX_S at most, so that a group rebalance, served by the poll, is
 * never held up longer, and a relay that cannot publish slows the processor without stopping it.
 */
static bool can_take(void *arg)
{
    processor *p = arg;
    size_t limit = (size_t)p->cfg->batch_max * HOLD_BATCHES;
    if (p->hold_expired || relay_unconfirmed(p->relay) <= limit) {
        p->hold_expired = false;
        return true;
    }
    if (!evtimer_pending(p->hold, NULL)) {
        metrics_add(p->m_held, 1);
        struct timeval tv = {HOLD_MAX_S, 0};
        evtimer_add(p->hold, &tv);
    }
    relay_notify_below(p->relay, limit, take_again, p);
    return false;
}

/* A lost session may have taken a COMMIT's answer with it: the batch is applied again and finds
   its commands decided, with no outbox rows to hand over, so the relay looks for them itself. */
static void on_pg_state(bool connected, void *arg)
{
    processor *p = arg;
    if (!connected && p->relay)
        relay_rescan(p->relay);
    if (connected)
        pgplans_session_started(p->plans);
}

static bool ready(void *arg)
{
    processor *p = arg;
    return p->pg && pgconn_connected(p->pg) && kafka_producer_healthy(p->producer);
}

/* A histogram of durations in seconds, with the bounds every histogram of the processor has. */
static metrics_histogram *seconds(metrics *m, const char *name, const char *help)
{
    static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    return metrics_histogram_get(m, name, help, bounds, sizeof(bounds) / sizeof(bounds[0]));
}

static void init_metrics(processor *p)
{
    metrics *m = p->metrics = metrics_new();
    const char *name = "processor_commands_total";
    const char *help = "commands consumed, by outcome";
    p->m_applied = metrics_counter_get(m, name, help, "outcome=\"applied\"");
    p->m_rejected = metrics_counter_get(m, name, help, "outcome=\"rejected\"");
    p->m_duplicates = metrics_counter_get(m, name, help, "outcome=\"duplicate\"");
    p->m_skipped = metrics_counter_get(m, name, help, "outcome=\"already_processed\"");
    p->m_dead = metrics_counter_get(m, "processor_dead_letters_total",
                                    "messages sent to the dead-letter topic", NULL);
    p->m_batches =
        metrics_counter_get(m, "processor_batches_total", "transactions committed", NULL);
    p->m_retries = metrics_counter_get(m, "processor_batch_retries_total",
                                       "batches rolled back and retried", NULL);
    p->m_unique_retries = metrics_counter_get(
        m, "processor_batch_unique_retries_total",
        "batches refused for a unique violation (a race lost) and written again whole", NULL);
    p->m_isolated =
        metrics_counter_get(m, "processor_batches_isolated_total",
                            "batches split to isolate a command PostgreSQL refused", NULL);
    p->m_held = metrics_counter_get(m, "processor_batches_held_total",
                                    "times the next batch waited for Kafka to confirm the events "
                                    "of the batches before",
                                    NULL);
    p->m_ahead =
        metrics_counter_get(m, "processor_batches_taken_ahead_total",
                            "batches polled and decoded while the one before committed", NULL);
    p->m_batch_time = seconds(m, "processor_batch_duration_seconds", "from poll to commit");
    p->m_commit_time = seconds(m, "processor_commit_duration_seconds", "the COMMIT of a batch");
    /* With the commit, the turns of a batch's transaction (docs/benchmarks.md, 2) */
    p->m_reads_time = seconds(m, "processor_reads_duration_seconds",
                              "BEGIN and the reads of a batch, sent to their last answer");
    p->m_apply_time =
        seconds(m, "processor_apply_duration_seconds",
                "the rules applied to a batch and its first write serialized, in the processor");
    p->m_writes_time = seconds(m, "processor_writes_duration_seconds",
                               "the writes of a batch, the first sent to the last answered");
    p->m_transit = seconds(m, "processor_command_transit_seconds",
                           "time from a command's timestamp (its produce by the gateway) to its "
                           "poll here; the timestamp has millisecond resolution");
}

processor *processor_new(struct event_base *base, const processor_config *cfg,
                         const config_props *kafka_props, char *err, size_t errlen)
{
    if (!envelope_tenant_valid(cfg->tenant_default, strlen(cfg->tenant_default))) {
        snprintf(err, errlen, "tenant.default: '%s' is not a tenant (1..%d of A-Z a-z 0-9 . _ -)",
                 cfg->tenant_default, ENVELOPE_MAX_TENANT_LEN);
        return NULL;
    }
    processor *p = xcalloc(1, sizeof(*p));
    p->cfg = cfg;
    p->base = base;
    p->topic_commands = xasprintf("%scommands", cfg->topic_prefix);
    p->topic_replies = xasprintf("%sreplies", cfg->topic_prefix);
    p->topic_dlq = xasprintf("%scommands.dlq", cfg->topic_prefix);
    char *topic_events = xasprintf("%sevents", cfg->topic_prefix);
    p->write_next = event_new(base, -1, 0, on_write_next, p);
    p->take_ahead = event_new(base, -1, 0, on_take_ahead, p);
    p->finish = event_new(base, -1, 0, on_finish, p);
    p->hold = evtimer_new(base, on_hold_expired, p);
    init_metrics(p);
    txloop_config lc = {.service = "processor",
                        .noun = "command",
                        .group = cfg->group_id,
                        .topic = p->topic_commands,
                        .on_mismatch = cfg->offsets_on_mismatch,
                        .batch_max = cfg->batch_max,
                        .retry_max_ms = cfg->retry_max_ms};
    txloop_owner owner = {.batch = on_batch, .quiet = quiet, .can_take = can_take, .arg = p};
    p->loop = txloop_new(base, &lc, p->metrics, &owner, err, errlen);
    if (!p->loop) {
        free(topic_events);
        goto fail;
    }

    p->domains = domain_registry_load(cfg->schemas_dir, err, errlen);
    if (p->domains)
        p->pg = pgconn_new(base, cfg->pg_conninfo, on_pg_state, p, err, errlen);
    if (p->pg) {
        pgconn_set_name(p->pg, "state-processor");
        const char *tables[] = {"aggregates", "commands", "outbox"};
        p->plans = pgplans_new(
            base, p->pg, tables, 3,
            metrics_gauge_get(p->metrics, "processor_generic_plans",
                              "1 while the batch session keeps generic plans (its tables' "
                              "statistics current), 0 while it plans each execution",
                              NULL));
        p->producer = kafka_producer_new(base, kafka_props, on_produced, p, err, errlen);
    }
    if (p->producer) {
        /* Missing topics are created; failing that is worth a warning: an operator may have
           created them (or denied the rights), or Kafka is not up yet, so they are asked for
           again in the background until Kafka has them. */
        const char *topics[] = {p->topic_commands, p->topic_replies, p->topic_dlq, topic_events};
        char terr[512];
        if (kafka_ensure_topics(p->producer, topics, 4, (int)cfg->topics_partitions,
                                (int)cfg->topics_replication, 10000, terr, sizeof(terr)) != 0) {
            log_kv(LOG_WARN, "could not create the topics", LOG_FIELDS("error", terr));
            p->topics =
                kafka_topics_keeper_new(base, p->producer, topics, 4, (int)cfg->topics_partitions,
                                        (int)cfg->topics_replication);
        }
        p->relay =
            relay_new(base, cfg->pg_conninfo, kafka_props, topic_events, p->metrics, err, errlen);
    }
    if (p->relay) {
        purge_config pc = {.retention_s = cfg->retention_s,
                           .outbox_retention_s = cfg->outbox_retention_s,
                           .abandon_after_s = cfg->abandon_after_s,
                           .interval_s = cfg->purge_interval_s};
        p->purge = purge_new(base, cfg->pg_conninfo, &pc, p->metrics, err, errlen);
    }
    free(topic_events);
    if (!p->purge || txloop_start(p->loop, p->pg, kafka_props, err, errlen) != 0)
        goto fail;
    if (cfg->http_port >= 0) {
        p->health = health_new(base, cfg->http_host, (int)cfg->http_port, p->metrics, ready, p, err,
                               errlen);
        if (!p->health)
            goto fail;
        LOG_KV(LOG_INFO, "health and metrics", LOG_STR("host", cfg->http_host),
               LOG_NUM("port", health_port(p->health)));
    }
    log_kv(LOG_INFO, "state-processor started",
           LOG_FIELDS("group", cfg->group_id, "topic", p->topic_commands));
    return p;
fail:
    processor_free(p);
    return NULL;
}

metrics *processor_metrics(processor *p)
{
    return p->metrics;
}

txloop *processor_loop(processor *p)
{
    return p->loop;
}

void processor_free(processor *p)
{
    if (!p)
        return;
    if (p->relay) {
        relay_notify_below(p->relay, 0, NULL, NULL); /* the loop goes before the relay */
        finish_committed(p);                         /* a loop ended before on_finish() ran */
    }
    if (p->producer && kafka_producer_flush(p->producer, 5000) != 0)
        log_warn("shutdown: replies or dead letters unconfirmed");
    /* The group first; then the connection, whose queued queries are answered to a loop and a
       processor still whole; then the loop. */
    txloop_leave(p->loop);
    pgconn_free(p->pg);
    p->pg = NULL; /* relay_free() runs the loop: ready() may be asked meanwhile */
    pgplans_free(p->plans);
    p->plans = NULL;
    txloop_free(p->loop);
    relay_free(p->relay);
    json_decref(p->outbox);
    json_decref(p->done_outbox);
    purge_free(p->purge);
    health_free(p->health);
    kafka_topics_keeper_free(p->topics);
    kafka_producer_free(p->producer);
    if (p->b.items)
        batch_clear(&p->b);
    if (p->done.items)
        batch_clear(&p->done);
    if (p->ahead.items)
        batch_clear(&p->ahead);
    domain_registry_free(p->domains);
    metrics_free(p->metrics);
    if (p->write_next)
        event_free(p->write_next);
    if (p->take_ahead)
        event_free(p->take_ahead);
    if (p->finish)
        event_free(p->finish);
    if (p->hold)
        event_free(p->hold);
    free(p->topic_commands);
    free(p->topic_replies);
    free(p->topic_dlq);
    free(p);
}

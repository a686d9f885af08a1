/*
 * txloop.c: the consume-and-commit loop of the processor and the projector (txloop.h).
 *
 * States: idle (between steps), starting (reading the stored offsets of partitions just
 * assigned), busy (the owner's step: a batch in its transaction) and backoff (a failed step
 * waiting to run again). Idle polls, and busy when the owner takes the next batch ahead; a step
 * ends in idle or backoff, or goes on as busy with the batch taken ahead.
 */
#include "loop/txloop.h"

#include "core/log.h"
#include "domain/envelope.h"
#include "core/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { TX_IDLE, TX_STARTING, TX_BUSY, TX_BACKOFF } txstate;

struct txloop {
    struct event_base *base;
    pgconn *pg;
    txloop_owner owner;
    char *noun, *group, *topic;
    kafka_consumer *consumer;
    offsetlog *olog; /* which stored offsets count the log being read */
    kafka_message *msgs;
    size_t batch_max;
    long long retry_max_ms;

    txstate state;
    bool ahead_wanted; /* txloop_take_ahead() found no message: the wake-up takes the first */
    bool stopping;
    bool left;     /* txloop_leave(): no consumer, the loop only waits to be freed */
    bool failed;   /* stopped for an operator */
    int *starting; /* assigned partitions waiting for their stored offsets */
    size_t nstarting;
    long long backoff_ms;
    void (*retry)(void *arg); /* what the backoff runs again */
    char error[512];          /* why the start failed, for the backoff's log */
    struct event *kick;       /* runs next_batch() from the loop, not from a callback */
    struct event *retry_ev;
};

static void next_batch(txloop *l);
static void read_start_offsets(txloop *l);

static bool owner_quiet(const txloop *l)
{
    return !l->owner.quiet || l->owner.quiet(l->owner.arg);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    next_batch(arg);
}

void txloop_done(txloop *l)
{
    l->ahead_wanted = false;
    l->backoff_ms = 0;
    l->state = TX_IDLE;
    if (l->stopping)
        txloop_quiet(l);
    else
        event_active(l->kick, 0, 0);
}

void txloop_next(txloop *l)
{
    l->ahead_wanted = false;
    l->backoff_ms = 0;
    l->state = TX_IDLE;
    next_batch(l); /* nothing when stopping: txloop_quiet() then ends the loop */
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    txloop *l = arg;
    l->state = l->retry == NULL ? TX_STARTING : TX_BUSY;
    if (l->retry)
        l->retry(l->owner.arg);
    else
        read_start_offsets(l);
}

/* Retries after a capped exponential backoff: retry(), or the start when NULL. */
static void backoff(txloop *l, void (*retry)(void *arg), const char *what, const char *error)
{
    l->ahead_wanted = false;
    if (l->left)
        return; /* a query answered by the connection's free: nothing is retried */
    /* Asked to stop during the step: it ends here, uncommitted. */
    if (l->stopping) {
        log_kv(LOG_WARN, "stopping: the failed step is not retried", LOG_FIELDS("error", error));
        l->state = TX_BACKOFF;
        txloop_quiet(l);
        return;
    }
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : 100;
    if (l->backoff_ms > l->retry_max_ms)
        l->backoff_ms = l->retry_max_ms;
    LOG_KV(LOG_WARN, what, LOG_STR("error", error), LOG_NUM("retry_ms", l->backoff_ms));
    l->state = TX_BACKOFF;
    l->retry = retry;
    struct timeval tv = {.tv_sec = l->backoff_ms / 1000, .tv_usec = (l->backoff_ms % 1000) * 1000};
    evtimer_add(l->retry_ev, &tv);
}

void txloop_backoff(txloop *l, void (*retry)(void *arg), const char *what, const char *error)
{
    backoff(l, retry, what, error);
}

bool txloop_backing_off(const txloop *l)
{
    return l->state == TX_BACKOFF;
}

/* Stops the loop for an operator once the step in hand ends; txloop_failed() says so. */
static void fail_for_operator(txloop *l, const char *why)
{
    log_kv(LOG_FATAL, "stopping: an operator must decide", LOG_FIELDS("error", why));
    l->failed = true;
    l->stopping = true;
}

/* The same, between steps: the loop ends now. */
static void stop_failed(txloop *l, const char *why)
{
    fail_for_operator(l, why);
    l->state = TX_IDLE;
    event_base_loopexit(l->base, NULL);
}

/* ---- partition assignment ---- */

static const char start_offsets_sql[] =
    "SELECT partition, next_offset, cluster_id FROM consumer_offsets WHERE group_id = $1 AND "
    "topic = $2 AND partition = ANY($3::int[])";

const char txloop_offsets_sql[] =
    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, cluster_id) "
    "SELECT group_id, topic, partition, next_offset, $2 FROM jsonb_to_recordset($1::jsonb) AS "
    "x(group_id text, topic text, partition int, next_offset bigint) "
    "ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
    "next_offset = EXCLUDED.next_offset, cluster_id = EXCLUDED.cluster_id, updated_at = now()";

static void on_start_offsets(const pgconn_result *r, void *arg)
{
    txloop *l = arg;
    if (pgconn_result_status(r) != PGCONN_OK) {
        snprintf(l->error, sizeof(l->error), "read stored offsets: %s",
                 pgconn_result_status(r) == PGCONN_DISCONNECTED ? "connection lost"
                                                                : pgconn_result_error(r));
        backoff(l, NULL, "stored offsets unavailable, will retry", l->error);
        return;
    }
    long long *offsets = xcalloc(l->nstarting + 1, sizeof(*offsets));
    char why[512];
    if (offsetlog_choose(l->olog, l->starting, l->nstarting, r, offsets, why, sizeof(why)) != 0) {
        free(offsets);
        stop_failed(l, why);
        return;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "%s partition starts at its stored offset", l->noun);
    for (size_t i = 0; i < l->nstarting; i++) {
        if (offsets[i] == KAFKA_OFFSET_BEGINNING)
            LOG_KV(LOG_INFO, msg, LOG_NUM("partition", l->starting[i]),
                   LOG_STR("offset", "beginning"));
        else
            LOG_KV(LOG_INFO, msg, LOG_NUM("partition", l->starting[i]),
                   LOG_NUM("offset", offsets[i]));
    }
    if (kafka_consumer_start(l->consumer, l->starting, offsets, l->nstarting) != 0)
        log_error("assigned partitions could not be started");
    free(offsets);
    l->nstarting = 0;
    txloop_done(l);
}

/* PostgreSQL, not Kafka, knows how far each partition was applied: the offsets commit with the
   state (ADR 0007). Newly assigned partitions start there. */
static void read_start_offsets(txloop *l)
{
    l->state = TX_STARTING;
    /* The stored offsets are trusted only for the log they count: that cluster's. */
    if (offsetlog_learn_cluster(l->olog, l->consumer) != 0) {
        backoff(l, NULL, "Kafka cluster id unknown, will retry", "no metadata from Kafka yet");
        return;
    }
    char *parts = pgconn_int_array(l->starting, l->nstarting);
    const char *v[] = {l->group, l->topic, parts};
    int rc = pgconn_query(l->pg, start_offsets_sql, 3, v, on_start_offsets, l);
    free(parts);
    if (rc != 0)
        backoff(l, NULL, "stored offsets unavailable, will retry", "PostgreSQL queue full");
}

static bool on_assign(const int *partitions, size_t n, bool assigned, void *arg)
{
    txloop *l = arg;
    if (assigned) {
        l->starting = xrealloc(l->starting, (l->nstarting + n) * sizeof(int));
        memcpy(l->starting + l->nstarting, partitions, n * sizeof(int));
        l->nstarting += n;
    } else { /* revoked before they started: forget them */
        l->nstarting = kafka_partitions_remove(l->starting, l->nstarting, partitions, n);
        offsetlog_revoked(l->olog, partitions, n);
        if (l->owner.revoked)
            l->owner.revoked(l->owner.arg, partitions, n);
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "%s partitions %s", l->noun, assigned ? "assigned" : "revoked");
    LOG_KV(LOG_INFO, msg, LOG_NUM("count", n));
    return true; /* started by read_start_offsets() */
}

/* ---- batches ---- */

/* The n messages polled pass offsetlog's check; false, with why, and the messages released, when
   one shows the log replaced under offsets.on_mismatch=fail. */
static bool trusted(txloop *l, size_t n, char *why, size_t whylen)
{
    for (size_t i = 0; i < n; i++) {
        if (!offsetlog_check(l->olog, l->msgs[i].partition, l->msgs[i].offset, why, whylen)) {
            kafka_consumer_release(l->consumer);
            return false;
        }
    }
    return true;
}

static void next_batch(txloop *l)
{
    if (l->state != TX_IDLE || l->stopping)
        return;
    if (l->nstarting > 0) {
        read_start_offsets(l);
        return;
    }
    if (l->owner.can_take && !l->owner.can_take(l->owner.arg))
        return; /* txloop_resume() brings us back */
    size_t n = kafka_consumer_poll(l->consumer, l->msgs, l->batch_max);
    if (n == 0) {
        if (l->nstarting > 0) /* the poll served an assignment */
            read_start_offsets(l);
        return; /* otherwise the consumer's wake-up brings us back */
    }
    char why[512];
    if (!trusted(l, n, why, sizeof(why))) {
        stop_failed(l, why);
        return;
    }
    l->state = TX_BUSY;
    l->owner.batch(l->owner.arg, l->msgs, n);
    kafka_consumer_release(l->consumer); /* the owner holds copies */
}

bool txloop_take_ahead(txloop *l)
{
    l->ahead_wanted = false;
    if (l->state != TX_BUSY || l->stopping || l->nstarting > 0 || l->left)
        return false;
    if (l->owner.can_take && !l->owner.can_take(l->owner.arg))
        return false;
    size_t n = kafka_consumer_poll(l->consumer, l->msgs, l->batch_max);
    if (n == 0) {
        /* none waiting: on_wake() tries again when one comes, unless the poll served an
           assignment (read once the step ends) */
        l->ahead_wanted = l->nstarting == 0;
        return false;
    }
    char why[512];
    if (!trusted(l, n, why, sizeof(why))) {
        fail_for_operator(l, why); /* the loop ends once the step does (txloop_quiet()) */
        return false;
    }
    l->owner.batch(l->owner.arg, l->msgs, n);
    kafka_consumer_release(l->consumer);
    return true;
}

bool txloop_continue(txloop *l)
{
    l->ahead_wanted = false;
    if (l->stopping)
        return false;
    l->backoff_ms = 0;
    return true;
}

static void on_wake(void *arg)
{
    txloop *l = arg;
    if (l->ahead_wanted)
        txloop_take_ahead(l);
    else
        next_batch(l);
}

/* ---- life ---- */

txloop *txloop_new(struct event_base *base, const txloop_config *cfg, metrics *m,
                   const txloop_owner *owner, char *err, size_t errlen)
{
    offsetlog_policy policy = OFFSETLOG_RESET;
    if (cfg->on_mismatch && offsetlog_policy_parse(cfg->on_mismatch, &policy) != 0) {
        snprintf(err, errlen, "offsets.on_mismatch: '%s' is neither reset nor fail",
                 cfg->on_mismatch);
        return NULL;
    }
    txloop *l = xcalloc(1, sizeof(*l));
    l->base = base;
    l->owner = *owner;
    l->noun = xstrdup(cfg->noun);
    l->group = xstrdup(cfg->group);
    l->topic = xstrdup(cfg->topic);
    l->batch_max = (size_t)cfg->batch_max;
    l->retry_max_ms = cfg->retry_max_ms;
    l->msgs = xcalloc(l->batch_max, sizeof(kafka_message));
    l->kick = event_new(base, -1, 0, on_kick, l);
    l->retry_ev = evtimer_new(base, on_retry, l);
    l->olog = offsetlog_new(cfg->service, cfg->group, cfg->topic, policy, m);
    return l;
}

int txloop_start(txloop *l, pgconn *pg, const config_props *kafka_props, char *err, size_t errlen)
{
    l->pg = pg;
    l->consumer = kafka_consumer_new(l->base, kafka_props, l->group, l->topic, on_wake, on_assign,
                                     l, err, errlen);
    return l->consumer ? 0 : -1;
}

void txloop_leave(txloop *l)
{
    if (!l || l->left)
        return;
    l->stopping = true; /* next_batch() polls no more */
    kafka_consumer_free(l->consumer);
    l->consumer = NULL;
    l->left = true; /* after the close: its revocations are the owner's to see */
    if (l->kick)
        event_del(l->kick);
}

void txloop_free(txloop *l)
{
    if (!l)
        return;
    txloop_leave(l); /* an owner that never started */
    if (l->kick)
        event_free(l->kick);
    if (l->retry_ev)
        event_free(l->retry_ev);
    offsetlog_free(l->olog);
    free(l->msgs);
    free(l->starting);
    free(l->noun);
    free(l->group);
    free(l->topic);
    free(l);
}

kafka_consumer *txloop_consumer(txloop *l)
{
    return l->consumer;
}

offsetlog *txloop_offsets(txloop *l)
{
    return l->olog;
}

void txloop_resume(txloop *l)
{
    if (!l->left)
        event_active(l->kick, 0, 0);
}

void txloop_stop(txloop *l)
{
    l->stopping = true;
    /* Idle or in backoff, at once; otherwise txloop_done(), txloop_next() or the owner's
       txloop_quiet() ends it. */
    txloop_quiet(l);
}

void txloop_quiet(txloop *l)
{
    if (!l->left && l->stopping && (l->state == TX_IDLE || l->state == TX_BACKOFF) &&
        owner_quiet(l))
        event_base_loopexit(l->base, NULL);
}

bool txloop_stopping(const txloop *l)
{
    return l->stopping;
}

bool txloop_failed(const txloop *l)
{
    return l->failed;
}

/* ---- the queries of one step ---- */

void txphase_begin(txphase *ph, const pgconn *pg)
{
    ph->outstanding = 0;
    ph->failed = false;
    ph->refusal = NULL;
    ph->unique = false;
    ph->error[0] = '\0';
    ph->session = pgconn_connected(pg) ? pgconn_connects(pg) : 0;
}

/* Whether the session the transaction began in is the one up. */
static bool in_session(const txphase *ph, const pgconn *pg)
{
    return ph->session != 0 && pgconn_connected(pg) && pgconn_connects(pg) == ph->session;
}

int txphase_query(txphase *ph, pgconn *pg, const char *sql, int n, const char *const *v,
                  pgconn_cb cb, void *arg)
{
    if (!in_session(ph, pg)) {
        txphase_fail(ph, "connection lost");
        return -1;
    }
    if (pgconn_query_prepared(pg, sql, n, v, cb, arg) != 0) {
        txphase_fail(ph, "PostgreSQL queue full");
        return -1;
    }
    ph->outstanding++;
    return 0;
}

/* Errors about the data rather than the server: retrying the same rows cannot succeed. Not
   serialization failures or deadlocks (class 40), nor a lost connection (no SQLSTATE). */
static bool data_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
           strncmp(sqlstate, "54", 2) == 0;
}

void txphase_error(txphase *ph, const pgconn_result *r, const char *what)
{
    if (!ph->failed) {
        bool lost = pgconn_result_status(r) == PGCONN_DISCONNECTED;
        const char *state = pgconn_result_sqlstate(r);
        snprintf(ph->error, sizeof(ph->error), "%s: %s%s%s", what,
                 lost ? "connection lost" : pgconn_result_error(r), *state ? " sqlstate " : "",
                 state);
        ph->refusal = !lost && data_error(state) ? DLQ_REJECTED_BY_PG : NULL;
        ph->unique = !lost && strcmp(state, "23505") == 0;
    }
    ph->failed = true;
}

void txphase_unencodable(txphase *ph, const char *what)
{
    if (!ph->failed) {
        snprintf(ph->error, sizeof(ph->error),
                 "%s: a row cannot be encoded as JSON (an attribute is not UTF-8 text)", what);
        ph->refusal = DLQ_UNENCODABLE;
    }
    ph->failed = true;
}

void txphase_fail(txphase *ph, const char *fmt, ...)
{
    if (!ph->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ph->error, sizeof(ph->error), fmt, ap);
        va_end(ap);
        ph->refusal = NULL;
    }
    ph->failed = true;
}

static void on_rollback(const pgconn_result *r, void *arg)
{
    (void)r, (void)arg;
}

void txphase_rollback(const txphase *ph, pgconn *pg)
{
    if (!in_session(ph, pg))
        return;
    if (pgconn_query(pg, "ROLLBACK", 0, NULL, on_rollback, NULL) != 0)
        log_warn("rollback could not be queued");
}

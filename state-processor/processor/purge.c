/*
 * purge.c: retention in bounded batches, one statement at a time on its own connection: expired
 * command records, published outbox rows past their retention, claims to mark abandoned; then
 * the gauges of the accepted and abandoned commands.
 */
#include "processor/purge.h"

#include "core/log.h"
#include "pg/pgconn.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* At most this many rows per statement, so a backlog never holds locks for long. */
#define PURGE_BATCH "5000"

/* One step of a run: a statement, its age parameter, and what its rows are called in the log. */
typedef struct step {
    const char *sql;
    const char *done; /* log line when it changed rows */
} step;

static const step steps[] = {
    {"DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE status <> 'accepted' "
     "AND finished_at < now() - make_interval(secs => $1::float8) LIMIT " PURGE_BATCH ")",
     "purged expired idempotency records"},
    /* Published rows only: an unpublished row is an event still owed to the topic. */
    {"DELETE FROM outbox o USING (SELECT tenant, aggregate_type, aggregate_id, version "
     "FROM outbox WHERE published_at < now() - make_interval(secs => $1::float8) LIMIT " PURGE_BATCH
     ") d WHERE o.tenant = d.tenant AND o.aggregate_type = d.aggregate_type AND "
     "o.aggregate_id = d.aggregate_id AND o.version = d.version",
     "purged published outbox rows past outbox.retention_s"},
    /*
     * Not a decision (ADR 0020): the processor still applies the command if it arrives. The outer
     * status test is checked again against a row the processor decided meanwhile, and rows it
     * holds locked are left for the next run. finished_at starts the record's retention.
     */
    {"UPDATE commands SET status = 'abandoned', finished_at = now() WHERE status = 'accepted' AND "
     "id IN (SELECT id FROM commands WHERE status = 'accepted' AND created_at < now() - "
     "make_interval(secs => $1::float8) LIMIT " PURGE_BATCH " FOR UPDATE SKIP LOCKED)",
     "marked claims abandoned: accepted longer than idempotency.abandon_after_s"},
};
#define NSTEPS (sizeof(steps) / sizeof(steps[0]))

static const char gauges_sql[] =
    "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint, count(*), "
    "(SELECT count(*) FROM commands WHERE status = 'abandoned') FROM commands "
    "WHERE status = 'accepted'";

struct purge {
    pgconn *pg;
    struct event *timer;
    struct timeval interval;
    char ages[NSTEPS][32]; /* each step's age parameter */
    size_t step;           /* the step running; NSTEPS: the gauges */
    long long deleted;
    bool running;
    metrics_gauge *m_oldest, *m_accepted, *m_abandoned;
    metrics_counter *m_marked;
};

static void run_step(purge *p);

static void set_gauge(metrics_gauge *g, long long v)
{
    metrics_gauge_add(g, v - metrics_gauge_value(g));
}

static void on_gauges(const pgconn_result *r, void *arg)
{
    purge *p = arg;
    p->running = false;
    if (pgconn_result_status(r) != PGCONN_OK || pgconn_result_ntuples(r) != 1) {
        log_kv(LOG_WARN, "the oldest accepted command could not be measured; retrying later",
               LOG_FIELDS("error", pgconn_result_error(r)));
        return;
    }
    set_gauge(p->m_oldest, atoll(pgconn_result_value(r, 0, 0)));
    set_gauge(p->m_accepted, atoll(pgconn_result_value(r, 0, 1)));
    set_gauge(p->m_abandoned, atoll(pgconn_result_value(r, 0, 2)));
}

static void on_step(const pgconn_result *r, void *arg)
{
    purge *p = arg;
    p->running = false;
    if (pgconn_result_status(r) != PGCONN_OK) {
        log_kv(LOG_WARN, "retention step failed; retrying later",
               LOG_FIELDS("step", steps[p->step].done, "error", pgconn_result_error(r)));
        return;
    }
    long long n = pgconn_result_affected(r);
    if (n > 0) {
        LOG_KV(p->step == 2 ? LOG_WARN : LOG_INFO, steps[p->step].done, LOG_NUM("count", n));
        if (p->step == 2)
            metrics_add(p->m_marked, (unsigned long long)n);
        else
            p->deleted += n;
    }
    if (n < atoll(PURGE_BATCH)) /* else more to go in this step */
        p->step++;
    run_step(p);
}

static void run_step(purge *p)
{
    if (p->running)
        return;
    int rc;
    if (p->step < NSTEPS) {
        const char *v[] = {p->ages[p->step]};
        rc = pgconn_query(p->pg, steps[p->step].sql, 1, v, on_step, p);
    } else if (p->step == NSTEPS) {
        rc = pgconn_query(p->pg, gauges_sql, 0, NULL, on_gauges, p);
    } else {
        return; /* this run is over */
    }
    if (rc == 0)
        p->running = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    purge *p = arg;
    if (!p->running) { /* a run still going (a long backlog) is left to finish */
        p->step = 0;
        run_step(p);
    }
    evtimer_add(p->timer, &p->interval);
}

purge *purge_new(struct event_base *base, const char *conninfo, const purge_config *cfg, metrics *m,
                 char *err, size_t errlen)
{
    purge *p = xcalloc(1, sizeof(*p));
    p->pg = pgconn_new(base, conninfo, NULL, NULL, err, errlen);
    if (!p->pg) {
        free(p);
        return NULL;
    }
    pgconn_set_name(p->pg, "state-processor purge");
    snprintf(p->ages[0], sizeof(p->ages[0]), "%lld", cfg->retention_s);
    snprintf(p->ages[1], sizeof(p->ages[1]), "%lld", cfg->outbox_retention_s);
    snprintf(p->ages[2], sizeof(p->ages[2]), "%lld", cfg->abandon_after_s);
    p->m_oldest = metrics_gauge_get(m, "processor_oldest_accepted_seconds",
                                    "age of the oldest command accepted and not yet decided, as of "
                                    "the last purge run (0: none)",
                                    NULL);
    p->m_accepted = metrics_gauge_get(m, "processor_accepted_commands",
                                      "commands accepted and not yet decided (last run)", NULL);
    p->m_abandoned =
        metrics_gauge_get(m, "processor_abandoned_commands",
                          "claims marked abandoned and not yet purged (last run)", NULL);
    p->m_marked = metrics_counter_get(m, "processor_claims_abandoned_total",
                                      "claims this processor marked abandoned", NULL);
    p->interval.tv_sec = cfg->interval_s;
    p->timer = evtimer_new(base, on_timer, p);
    struct timeval now = {0, 0};
    evtimer_add(p->timer, &now);
    return p;
}

long long purge_deleted(const purge *p)
{
    return p->deleted;
}

void purge_free(purge *p)
{
    if (!p)
        return;
    event_free(p->timer);
    pgconn_free(p->pg);
    free(p);
}

/* purge.c: deletes command records past their retention, in bounded batches. */
#include "purge.h"

#include "log.h"
#include "pgconn.h"
#include "xalloc.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* At most this many rows per statement, so a backlog never holds locks for long. */
#define PURGE_BATCH "5000"

struct purge {
    pgconn *pg;
    struct event *timer;
    struct timeval interval;
    char retention[32];
    long long deleted;
    bool running;
};

static const char purge_sql[] =
    "DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE status <> 'accepted' "
    "AND finished_at < now() - make_interval(secs => $1::float8) LIMIT " PURGE_BATCH ")";

static void run(purge *p);

static void on_deleted(const pgconn_result *r, void *arg)
{
    purge *p = arg;
    p->running = false;
    if (pgconn_result_status(r) != PGCONN_OK) {
        log_kv(LOG_WARN, "purge of old idempotency records failed; retrying later",
               LOG_FIELDS("error", pgconn_result_error(r)));
        return;
    }
    long long n = pgconn_result_affected(r);
    p->deleted += n;
    if (n > 0) {
        char count[24];
        snprintf(count, sizeof(count), "%lld", n);
        log_kv(LOG_INFO, "purged expired idempotency records", LOG_FIELDS("count", count));
    }
    if (n == atoll(PURGE_BATCH))
        run(p); /* more to go */
}

static void run(purge *p)
{
    if (p->running)
        return;
    const char *v[] = {p->retention};
    if (pgconn_query(p->pg, purge_sql, 1, v, on_deleted, p) == 0)
        p->running = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    purge *p = arg;
    run(p);
    evtimer_add(p->timer, &p->interval);
}

purge *purge_new(struct event_base *base, const char *conninfo, long long retention_s,
                 long long interval_s, char *err, size_t errlen)
{
    purge *p = xcalloc(1, sizeof(*p));
    p->pg = pgconn_new(base, conninfo, NULL, NULL, err, errlen);
    if (!p->pg) {
        free(p);
        return NULL;
    }
    snprintf(p->retention, sizeof(p->retention), "%lld", retention_s);
    p->interval.tv_sec = interval_s;
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

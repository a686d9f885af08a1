/* plans.c: generic plans while the processor's tables' statistics are current (ADR 0037). */
#include "processor/plans.h"

#include "core/log.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct plans {
    pgconn *pg;
    struct event *timer;
    metrics_gauge *m_generic;
    bool asking; /* a check is queued or running */
};

/*
 * Generic plans while each table has statistics (reltuples is -1 until its first ANALYZE or
 * VACUUM, and after a TRUNCATE), and either had PLANS_LARGE_PAGES at that time (its plans probe
 * its index, and growth only makes that better) or has not outgrown them: no more than twice the
 * pages they were taken at, or PLANS_SMALL_PAGES (a stale scan of so small a table costs what
 * planning would). Custom plans otherwise. One statement, which cannot fail, so that it does no
 * harm where the pipeline puts it inside a batch's transaction; if that transaction rolls back,
 * the setting goes back with it until the next check.
 */
#define PLANS_LARGE_PAGES "1024" /* 8 MiB */
#define PLANS_SMALL_PAGES "128"  /* 1 MiB */
static const char check_sql[] =
    "SELECT set_config('plan_cache_mode', CASE WHEN count(*) = 3 AND bool_and(c.reltuples >= 0 "
    "AND (c.relpages >= " PLANS_LARGE_PAGES " OR pg_relation_size(c.oid) <= "
    "greatest(2 * c.relpages, " PLANS_SMALL_PAGES ")::bigint * "
    "current_setting('block_size')::bigint)) THEN 'auto' ELSE 'force_custom_plan' END, false) "
    "FROM pg_class c WHERE c.oid IN (to_regclass('aggregates'), to_regclass('commands'), "
    "to_regclass('outbox'))";

static void on_checked(const pgconn_result *res, void *arg)
{
    plans *pl = arg;
    pl->asking = false;
    if (pgconn_result_status(res) != PGCONN_OK || pgconn_result_ntuples(res) != 1) {
        if (pgconn_result_status(res) == PGCONN_ERROR)
            LOG_KV(LOG_DEBUG, "plan mode not checked; checked again later",
                   LOG_STR("error", pgconn_result_error(res)));
        return;
    }
    long long generic = strcmp(pgconn_result_value(res, 0, 0), "auto") == 0;
    long long was = metrics_gauge_value(pl->m_generic);
    if (generic != was)
        log_info("%s", generic ? "table statistics current: the statements keep generic plans"
                               : "table statistics missing or outgrown: every statement planned "
                                 "at each execution");
    metrics_gauge_add(pl->m_generic, generic - was);
}

static void check(plans *pl)
{
    if (pl->asking || !pgconn_connected(pl->pg))
        return;
    if (pgconn_query_prepared(pl->pg, check_sql, 0, NULL, on_checked, pl) == 0)
        pl->asking = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    check(arg);
}

plans *plans_new(struct event_base *base, pgconn *pg, metrics *m)
{
    plans *pl = xcalloc(1, sizeof(*pl));
    pl->pg = pg;
    pl->m_generic = metrics_gauge_get(
        m, "processor_generic_plans",
        "1 while the batch session keeps generic plans (its tables' statistics current), 0 while "
        "it plans each execution",
        NULL);
    pl->timer = event_new(base, -1, EV_PERSIST, on_timer, pl);
    struct timeval tv = {PLANS_CHECK_S, 0};
    evtimer_add(pl->timer, &tv);
    return pl;
}

void plans_session_started(plans *pl)
{
    check(pl); /* the session starts with custom plans (its options): the gauge says so shortly */
}

void plans_free(plans *pl)
{
    if (!pl)
        return;
    event_free(pl->timer);
    free(pl);
}

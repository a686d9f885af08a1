/* pgplans.c: generic plans while a session's tables' statistics are current (ADR 0037). */
#include "pg/pgplans.h"

#include "core/log.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct pgplans {
    pgconn *pg;
    char *check_sql;
    struct event *timer;
    metrics_gauge *m_generic;
    long long generic; /* what this session adds to m_generic: 1 while it keeps generic plans */
    bool asking;       /* a check is queued or running */
};

/*
 * Generic plans while each table has statistics (reltuples is -1 until its first ANALYZE or
 * VACUUM, and after a TRUNCATE), and either had PGPLANS_LARGE_PAGES at that time (its plans probe
 * its index, and growth only makes that better) or has not outgrown them: no more than twice the
 * pages they were taken at, or PGPLANS_SMALL_PAGES (a stale scan of so small a table costs what
 * planning would). Custom plans otherwise. One statement, which cannot fail, so that it does no
 * harm where a pipeline puts it inside a transaction; if that transaction rolls back, the setting
 * goes back with it until the next check.
 */
#define PGPLANS_LARGE_PAGES "1024" /* 8 MiB */
#define PGPLANS_SMALL_PAGES "128"  /* 1 MiB */
static char *check_sql(const char *const *tables, size_t n)
{
    char *regclasses = xstrdup("");
    for (size_t i = 0; i < n; i++) {
        char *more = xasprintf("%s%sto_regclass('%s')", regclasses, i ? ", " : "", tables[i]);
        free(regclasses);
        regclasses = more;
    }
    char *sql = xasprintf(
        "SELECT set_config('plan_cache_mode', CASE WHEN count(*) = %zu AND "
        "bool_and(c.reltuples >= 0 AND (c.relpages >= " PGPLANS_LARGE_PAGES " OR "
        "pg_relation_size(c.oid) <= greatest(2 * c.relpages, " PGPLANS_SMALL_PAGES ")::bigint * "
        "current_setting('block_size')::bigint)) THEN 'auto' ELSE 'force_custom_plan' END, "
        "false) FROM pg_class c WHERE c.oid IN (%s)",
        n, regclasses);
    free(regclasses);
    return sql;
}

static void set_generic(pgplans *pl, long long generic)
{
    metrics_gauge_add(pl->m_generic, generic - pl->generic);
    pl->generic = generic;
}

static void on_checked(const pgconn_result *res, void *arg)
{
    pgplans *pl = arg;
    pl->asking = false;
    if (pgconn_result_status(res) != PGCONN_OK || pgconn_result_ntuples(res) != 1) {
        if (pgconn_result_status(res) == PGCONN_ERROR)
            LOG_KV(LOG_DEBUG, "plan mode not checked; checked again later",
                   LOG_STR("error", pgconn_result_error(res)));
        return;
    }
    long long generic = strcmp(pgconn_result_value(res, 0, 0), "auto") == 0;
    if (generic != pl->generic)
        log_info("%s", generic ? "table statistics current: the statements keep generic plans"
                               : "table statistics missing or outgrown: every statement planned "
                                 "at each execution");
    set_generic(pl, generic);
}

static void check(pgplans *pl)
{
    if (pl->asking || !pgconn_connected(pl->pg))
        return;
    if (pgconn_query_prepared(pl->pg, pl->check_sql, 0, NULL, on_checked, pl) == 0)
        pl->asking = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    check(arg);
}

pgplans *pgplans_new(struct event_base *base, pgconn *pg, const char *const *tables, size_t n,
                     metrics_gauge *generic)
{
    pgplans *pl = xcalloc(1, sizeof(*pl));
    pl->pg = pg;
    pl->check_sql = check_sql(tables, n);
    pl->m_generic = generic;
    pl->timer = event_new(base, -1, EV_PERSIST, on_timer, pl);
    struct timeval tv = {PGPLANS_CHECK_S, 0};
    evtimer_add(pl->timer, &tv);
    return pl;
}

void pgplans_session_started(pgplans *pl)
{
    if (pl)
        check(pl); /* it starts planning each execution (its options): the gauge says so shortly */
}

void pgplans_free(pgplans *pl)
{
    if (!pl)
        return;
    set_generic(pl, 0);
    event_free(pl->timer);
    free(pl->check_sql);
    free(pl);
}

/*
 * rebuild.c: the rebuild as an ordered list of steps on an event loop of its own. Each SQL step
 * is queued on one pgconn and waited for (the loop meanwhile serves signals and the progress
 * timer); the reading step is rebuildread's. The session holds an advisory lock for the type, so
 * a second rebuild of it refuses to start.
 */
#include "ops/rebuild/rebuild.h"

#include "core/rfc3339.h"
#include "domain/domain.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "pg/pgconn.h"
#include "pg/pgmigrate.h"
#include "ops/pgwait.h"
#include "ops/progress.h"
#include "domain/projection.h"
#include "projector/projsql.h"
#include "ops/rebuild/rebuildread.h"
#include "ops/rebuild/rebuildsql.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define KAFKA_TIMEOUT_MS 10000

struct rebuild {
    const rebuild_config *cfg;
    const config_props *kafka_props;
    long long from_time_ms;
    FILE *out;
    bool tty;
    struct event_base *base;
    struct event *sigint, *sigterm, *tick;
    domain_registry *domains;
    const projection *live; /* borrowed from the registry */
    projection shadow;      /* the live projection under the shadow's name (columns shared) */
    char *old_name;
    char *upsert_sql;
    char *topic;
    pgconn *pg;
    kafka_consumer *reader;
    rebuildread *read;
    progress *prog;

    pgwait call; /* the statement waited for */
    bool interrupted;
    bool timed_out;  /* the wait for the first connection passed pg.startup_timeout_s */
    bool stop;       /* interrupted or timed out: waits give up */
    int backend_pid; /* of the session, to end it if a wait was given up */
    bool shadow_made;
    rebuild_result *res;
    char err[512];
};

/* ---- the loop: signals, progress, waiting ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    rebuild *r = arg;
    if (!r->interrupted)
        log_kv(LOG_WARN, "interrupted: dropping the shadow table",
               LOG_FIELDS("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    r->interrupted = r->stop = true;
    event_base_loopbreak(r->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    rebuild *r = arg;
    r->timed_out = r->stop = true;
    event_base_loopbreak(r->base);
}

static void emit(rebuild *r, bool final)
{
    if (r->prog)
        progress_emit(r->prog, r->out, r->tty, final, ids_monotonic_us());
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    emit(arg, false);
}

/* Enters a phase; JSON lines get one line per phase, so a reader sees every step begin. */
static void phase(rebuild *r, const char *name)
{
    if (!r->prog)
        return;
    r->prog->phase = name;
    if (!r->tty)
        emit(r, false);
}

/* The text at row i, column k of the last statement; NULL for SQL NULL or no such cell. */
static const char *cell(const rebuild *r, size_t i, size_t k)
{
    return pgwait_cell(&r->call, i, k);
}

static long long cell_int(const rebuild *r, size_t i, size_t k)
{
    const char *v = cell(r, i, k);
    return v ? atoll(v) : 0;
}

/*
 * Runs one statement and waits for it. interruptible false waits even through SIGINT (for a
 * COMMIT, whose outcome must be known). Returns 0, or -1 with r->err (unless interrupted).
 */
static int run(rebuild *r, const char *what, const char *sql, int n, const char *const *v,
               bool interruptible)
{
    int rc = pgwait_run(&r->call, r->base, r->pg, sql, n, v, interruptible ? &r->stop : NULL);
    /* pgconn reconnects on its own; a second session would lack the type's advisory lock. */
    if (pgconn_connects(r->pg) > 1) {
        snprintf(r->err, sizeof(r->err), "%s: the connection to PostgreSQL was lost", what);
        return -1;
    }
    if (rc == 0)
        return 0;
    if (r->call.done)
        snprintf(r->err, sizeof(r->err), "%s: %s%s%s", what, r->call.error,
                 *r->call.sqlstate ? " sqlstate " : "", r->call.sqlstate);
    return -1;
}

/* ---- set-up ---- */

rebuild *rebuild_new(const rebuild_config *cfg, const config_props *kafka_props, FILE *progress_out,
                     bool tty, char *err, size_t errlen)
{
    if (!cfg->type || !*cfg->type) {
        snprintf(err, errlen, "type: the aggregate type to rebuild is required (--type=...)");
        return NULL;
    }
    const char *t = cfg->from_time ? cfg->from_time : "";
    if (*t && !rfc3339_date_time_valid(t, strlen(t))) {
        snprintf(err, errlen,
                 "from_time: '%s' is not an RFC 3339 date-time (e.g. 2026-01-31T12:00:00Z)", t);
        return NULL;
    }
    rebuild *r = xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    r->kafka_props = kafka_props;
    r->from_time_ms = -1;
    r->out = progress_out;
    r->tty = tty;
    r->domains = domain_registry_load(cfg->proc.schemas_dir, err, errlen);
    if (!r->domains)
        goto fail;
    r->live = domain_registry_projection(r->domains, cfg->type);
    if (!r->live) {
        char *known = xstrdup("");
        for (size_t i = 0; i < domain_registry_aggregate_count(r->domains); i++) {
            char *next = xasprintf("%s%s%s", known, i ? ", " : "",
                                   domain_registry_aggregate_name(r->domains, i));
            free(known);
            known = next;
        }
        snprintf(err, errlen, "type: no aggregate type '%s' in %s (known: %s)", cfg->type,
                 cfg->proc.schemas_dir, known);
        free(known);
        goto fail;
    }
    r->shadow = *r->live;
    r->shadow.table = xasprintf("%s" REBUILDSQL_SHADOW_SUFFIX, r->live->table);
    r->old_name = xasprintf("%s" REBUILDSQL_OLD_SUFFIX, r->live->table);
    r->upsert_sql = projsql_upsert_silent(&r->shadow);
    r->topic = xasprintf("%sevents", cfg->proc.topic_prefix);
    return r;
fail:
    rebuild_free(r);
    return NULL;
}

/* Connects, takes the type's advisory lock, checks that the live table exists. */
static int connect_and_lock(rebuild *r)
{
    r->pg = pgconn_new(r->base, r->cfg->proc.pg_conninfo, NULL, NULL, r->err, sizeof(r->err));
    if (!r->pg)
        return -1;
    pgconn_set_name(r->pg, "state-processor rebuild");
    char *quoted = xasprintf("\"%s\"", r->live->table);
    const char *v[] = {r->live->aggregate, quoted};
    /* The first statement waits for the connection, which retries on its own: bound it. */
    struct timeval tv = {.tv_sec = r->cfg->proc.startup_timeout_s};
    struct event *deadline = evtimer_new(r->base, on_deadline, r);
    evtimer_add(deadline, &tv);
    int rc = run(r, "connect", rebuildsql_lock, 2, v, true);
    event_free(deadline);
    free(quoted);
    if (rc != 0 && r->timed_out)
        snprintf(r->err, sizeof(r->err),
                 "PostgreSQL unreachable for %llds (pg.conninfo, pg.startup_timeout_s)",
                 r->cfg->proc.startup_timeout_s);
    if (rc != 0)
        return -1;
    const char *locked = cell(r, 0, 0), *exists = cell(r, 0, 1);
    if (!locked || strcmp(locked, "t") != 0) {
        snprintf(r->err, sizeof(r->err), "another rebuild of %s is running", r->live->aggregate);
        return -1;
    }
    r->backend_pid = (int)cell_int(r, 0, 2);
    if (!exists || strcmp(exists, "t") != 0) {
        snprintf(r->err, sizeof(r->err),
                 "no table %s: run state-processor once to create the projection tables",
                 r->live->table);
        return -1;
    }
    if (!r->cfg->from_time || !*r->cfg->from_time)
        return 0;
    /* PostgreSQL reads the time for the copy; the Kafka lookup takes the same reading. */
    const char *t[] = {r->cfg->from_time};
    if (run(r, "from_time", "SELECT (extract(epoch FROM $1::timestamptz) * 1000)::bigint", 1, t,
            true) != 0)
        return -1;
    r->from_time_ms = cell_int(r, 0, 0);
    return 0;
}

static void on_eof(int partition, void *arg)
{
    rebuild *r = arg;
    progress_end_reached(r->prog, partition);
}

/* The partitions, their watermarks now, and where reading starts. */
static int plan_reading(rebuild *r)
{
    config_props props = {0};
    for (size_t i = 0; i < r->kafka_props->n; i++)
        config_props_set(&props, r->kafka_props->keys[i], r->kafka_props->values[i]);
    config_props_set(&props, "enable.partition.eof", "true"); /* how a read knows it is done */
    r->reader =
        kafka_consumer_new_reader(r->base, &props, r->topic, NULL, r, r->err, sizeof(r->err));
    config_props_free(&props);
    if (!r->reader)
        return -1;
    int n = kafka_consumer_partition_count(r->reader, KAFKA_TIMEOUT_MS);
    if (n <= 0) {
        snprintf(r->err, sizeof(r->err), "topic %s: no partitions found (is Kafka reachable?)",
                 r->topic);
        return -1;
    }
    r->prog = progress_new("rebuild", r->live->aggregate, (size_t)n);
    int *parts = xcalloc((size_t)n, sizeof(int));
    long long *from = xcalloc((size_t)n, sizeof(long long));
    int rc = -1;
    for (int i = 0; i < n; i++) {
        progress_part *q = &r->prog->parts[i];
        parts[i] = q->partition = i;
        long long low;
        if (kafka_consumer_query_watermarks(r->reader, i, &low, &q->end, KAFKA_TIMEOUT_MS, r->err,
                                            sizeof(r->err)) != 0)
            goto out;
        q->start = q->position = low;
    }
    if (r->from_time_ms >= 0) {
        long long at = r->from_time_ms - r->cfg->from_time_slack_ms;
        if (kafka_consumer_offsets_for_time(r->reader, parts, (size_t)n, at, from, KAFKA_TIMEOUT_MS,
                                            r->err, sizeof(r->err)) != 0)
            goto out;
        for (int i = 0; i < n; i++) {
            progress_part *q = &r->prog->parts[i];
            if (from[i] > q->start) /* BEGINNING, or an offset the retention already removed */
                q->start = q->position = from[i] < q->end ? from[i] : q->end;
        }
    }
    rc = 0;
out:
    free(parts);
    free(from);
    return rc;
}

/* ---- reading ---- */

static int read_events(rebuild *r)
{
    rebuildread_spec spec = {.base = r->base,
                             .pg = r->pg,
                             .reader = r->reader,
                             .prog = r->prog,
                             .domains = r->domains,
                             .proj = r->live,
                             .upsert_sql = r->upsert_sql,
                             .tenant_default = r->cfg->proc.tenant_default,
                             .batch_max = (size_t)r->cfg->proc.batch_max,
                             .stop = &r->stop};
    r->read = rebuildread_new(&spec);
    kafka_consumer_set_eof_cb(r->reader, on_eof);
    r->prog->started_us = ids_monotonic_us();
    phase(r, "reading");
    int rc = rebuildread_run(r->read, r->err, sizeof(r->err));
    r->prog->ended_us = ids_monotonic_us();
    const rebuildread_counts *n = rebuildread_figures(r->read);
    r->res->events_read = n->events_read;
    r->res->events_projected = n->events_projected;
    r->res->events_skipped = n->events_skipped;
    r->res->rows_changed = n->rows_changed;
    r->res->rows_refused = n->rows_refused;
    return rc;
}

/* ---- the end: compare, or swap ---- */

static int catch_up(rebuild *r)
{
    char *sql = rebuildsql_catch_up(r->live, r->shadow.table);
    int rc = run(r, "catch up", sql, 0, NULL, true);
    free(sql);
    if (rc == 0)
        r->res->rows_caught_up += r->call.affected;
    return rc;
}

static int compare(rebuild *r)
{
    phase(r, "comparing");
    char *sql = rebuildsql_diff(r->live, r->shadow.table);
    int rc = run(r, "compare", sql, 0, NULL, true);
    free(sql);
    if (rc != 0)
        return -1;
    rebuild_result *res = r->res;
    res->differing = cell_int(r, 0, 0);
    res->only_live = cell_int(r, 0, 1);
    res->only_rebuilt = cell_int(r, 0, 2);
    res->live_rows = cell_int(r, 0, 3);
    res->rows = cell_int(r, 0, 4);
    snprintf(res->checksum_live, sizeof(res->checksum_live), "%s", cell(r, 0, 5));
    snprintf(res->checksum_rebuilt, sizeof(res->checksum_rebuilt), "%s", cell(r, 0, 6));
    res->examples = json_loads(cell(r, 0, 7), 0, NULL);
    return 0;
}

/* The name of a table's primary key, copied into buf; false when it has none. */
static bool pkey_name(rebuild *r, const char *table, char *buf, size_t len)
{
    char *quoted = xasprintf("\"%s\"", table);
    const char *v[] = {quoted};
    int rc = run(r, "primary key", rebuildsql_pkey_name, 1, v, true);
    free(quoted);
    if (rc != 0 || !cell(r, 0, 0))
        return false;
    snprintf(buf, len, "%s", cell(r, 0, 0));
    return true;
}

/* The statements of one swap attempt after BEGIN; -1 leaves the transaction to be rolled back. */
static int swap_once(rebuild *r, const char *shadow_pkey, const char *live_pkey, bool *lock_timeout)
{
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", r->cfg->lock_timeout_ms);
    const char *v[] = {ms};
    if (run(r, "lock_timeout", "SELECT set_config('lock_timeout', $1, true)", 1, v, true) != 0)
        return -1;
    char *lock = xasprintf("LOCK TABLE \"%s\" IN ACCESS EXCLUSIVE MODE", r->live->table);
    int rc = run(r, "lock", lock, 0, NULL, true);
    free(lock);
    *lock_timeout = rc != 0 && r->call.done && strcmp(r->call.sqlstate, "55P03") == 0;
    if (rc != 0)
        return -1;
    long long locked_us = ids_monotonic_us();
    /* Reads of the live table wait from here to COMMIT: what is left is what the live
       projector wrote since the catch-up before. */
    if (catch_up(r) != 0)
        return -1;
    char *quoted = xasprintf("\"%s\"", r->live->table);
    const char *g[] = {quoted, r->shadow.table};
    rc = run(r, "privileges", rebuildsql_grants, 2, g, true);
    free(quoted);
    json_t *grants = rc == 0 ? json_incref(r->call.rows) : NULL;
    size_t i;
    json_t *row;
    json_array_foreach(grants, i, row)
    {
        if (rc == 0)
            rc = run(r, "grant", json_string_value(json_array_get(row, 0)), 0, NULL, true);
    }
    json_decref(grants);
    size_t n;
    char **stmts =
        rebuildsql_swap(r->live, r->shadow.table, r->old_name, shadow_pkey, live_pkey, &n);
    for (i = 0; i < n; i++) {
        if (rc == 0)
            rc = run(r, "swap", stmts[i], 0, NULL, true);
        free(stmts[i]);
    }
    free(stmts);
    if (rc != 0 || r->interrupted)
        return -1;
    /* From here on the outcome must be known: no interruption. */
    rc = run(r, "commit", "COMMIT", 0, NULL, false);
    r->res->lock_held_ms = (ids_monotonic_us() - locked_us) / 1000;
    return rc;
}

static void on_rollback(const pgconn_result *res, void *arg)
{
    (void)res, (void)arg;
}

static int swap(rebuild *r)
{
    phase(r, "swapping");
    char shadow_pkey[128], live_pkey[128];
    bool have_pkeys = pkey_name(r, r->shadow.table, shadow_pkey, sizeof(shadow_pkey)) &&
                      pkey_name(r, r->live->table, live_pkey, sizeof(live_pkey));
    if (r->interrupted)
        return -1;
    for (long long attempt = 1; attempt <= r->cfg->swap_attempts; attempt++) {
        r->res->swap_attempts = attempt;
        bool lock_timeout = false;
        if (run(r, "begin", "BEGIN", 0, NULL, true) != 0)
            return -1;
        if (swap_once(r, have_pkeys ? shadow_pkey : NULL, have_pkeys ? live_pkey : NULL,
                      &lock_timeout) == 0) {
            r->res->swapped = true;
            return 0;
        }
        if (r->call.done && strcmp(r->call.error, "connection lost") != 0 &&
            pgconn_query(r->pg, "ROLLBACK", 0, NULL, on_rollback, r) != 0)
            log_warn("rollback could not be queued");
        if (!lock_timeout || r->interrupted)
            return -1;
        LOG_KV(LOG_WARN,
               "the live table stayed locked past swap.lock_timeout_ms; catching up "
               "and trying again",
               LOG_STR("table", r->live->table), LOG_NUM("attempt", attempt));
        if (catch_up(r) != 0)
            return -1;
    }
    snprintf(r->err, sizeof(r->err),
             "could not lock %s within swap.lock_timeout_ms=%lld in %lld attempts", r->live->table,
             r->cfg->lock_timeout_ms, r->cfg->swap_attempts);
    return -1;
}

static int count_rows(rebuild *r)
{
    char *sql = xasprintf("SELECT count(*) FROM \"%s\"", r->live->table);
    int rc = run(r, "count", sql, 0, NULL, true);
    free(sql);
    if (rc == 0)
        r->res->rows = cell_int(r, 0, 0);
    return rc;
}

/* Blocking, on a connection of its own: the rebuild's may be gone or busy. */
static void drop_shadow(rebuild *r, int terminate_pid)
{
    char err[512];
    char *sql = rebuildsql_drop(r->shadow.table, terminate_pid);
    char *what = xasprintf("drop %s", r->shadow.table); /* names the log line and the error */
    if (pgmigrate_ensure(r->cfg->proc.pg_conninfo, what, NULL, 0, NULL, sql, err, sizeof(err)) != 0)
        log_kv(LOG_ERROR, "could not drop the shadow table; drop it by hand",
               LOG_FIELDS("table", r->shadow.table, "error", err));
    free(what);
    free(sql);
}

static int steps(rebuild *r)
{
    if (connect_and_lock(r) != 0 || plan_reading(r) != 0)
        return -1;
    char *create = rebuildsql_create(&r->shadow);
    char *what = xasprintf("create %s", r->shadow.table);
    r->shadow_made = true; /* from here on, the shadow is dropped unless swapped */
    int rc = pgmigrate_ensure(r->cfg->proc.pg_conninfo, what, NULL, 0, NULL, create, r->err,
                              sizeof(r->err));
    free(what);
    free(create);
    if (rc != 0 || r->interrupted)
        return -1;
    if (r->from_time_ms >= 0) {
        phase(r, "copying");
        char *sql = rebuildsql_copy_before(r->live, r->shadow.table);
        const char *v[] = {r->cfg->from_time};
        rc = run(r, "copy before from_time", sql, 1, v, true);
        free(sql);
        if (rc != 0)
            return -1;
        r->res->rows_before_time = r->call.affected;
    }
    if (read_events(r) != 0)
        return -1;
    phase(r, "catching-up");
    if (catch_up(r) != 0)
        return -1;
    if (r->cfg->dry_run)
        return compare(r);
    if (swap(r) != 0)
        return -1;
    return count_rows(r);
}

rebuild_status rebuild_run(rebuild *r, rebuild_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    r->res = out;
    long long t0 = ids_monotonic_us();
    r->base = event_base_new();
    r->sigint = evsignal_new(r->base, SIGINT, on_signal, r);
    r->sigterm = evsignal_new(r->base, SIGTERM, on_signal, r);
    event_add(r->sigint, NULL);
    event_add(r->sigterm, NULL);
    /* A terminal line is cheap to rewrite; JSON lines come once a second. */
    r->tick = event_new(r->base, -1, EV_PERSIST, on_tick, r);
    struct timeval every = {.tv_sec = r->tty ? 0 : 1, .tv_usec = r->tty ? 250000 : 0};
    evtimer_add(r->tick, &every);
    int rc = steps(r);
    if (r->prog) {
        r->prog->phase = rc == 0 ? "done" : r->interrupted ? "interrupted" : "failed";
        emit(r, true);
    }
    /* Closing the session ends any open transaction and releases the advisory lock, unless a
       statement still runs there: that session is ended from another one. */
    bool abandoned = r->pg && pgconn_pending(r->pg) > 0;
    pgconn_free(r->pg);
    r->pg = NULL;
    if (r->shadow_made && !out->swapped)
        drop_shadow(r, abandoned ? r->backend_pid : 0);
    else if (abandoned && r->backend_pid > 0)
        drop_shadow(r, r->backend_pid); /* nothing to drop; ends the session */
    out->elapsed_s = (double)(ids_monotonic_us() - t0) / 1e6;
    snprintf(err, errlen, "%s", r->interrupted ? "interrupted" : r->err);
    return rc == 0 ? REBUILD_DONE : r->interrupted ? REBUILD_INTERRUPTED : REBUILD_FAILED;
}

void rebuild_free(rebuild *r)
{
    if (!r)
        return;
    pgconn_free(r->pg); /* answers what is in flight first: the reading's upserts, r->call */
    rebuildread_free(r->read);
    kafka_consumer_free(r->reader);
    pgwait_clear(&r->call);
    if (r->tick)
        event_free(r->tick);
    if (r->sigint)
        event_free(r->sigint);
    if (r->sigterm)
        event_free(r->sigterm);
    if (r->base)
        event_base_free(r->base);
    progress_free(r->prog);
    free(r->topic);
    free(r->upsert_sql);
    free(r->old_name);
    free(r->shadow.table);
    domain_registry_free(r->domains);
    free(r);
}

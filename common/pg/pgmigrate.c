/* pgmigrate.c: applies schemas/migrations/ *.sql once each, in order, under an advisory lock. */
#include "pg/pgmigrate.h"

#include "core/log.h"
#include "core/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One lock id for every process that migrates this database. */
#define LOCK_SQL "SELECT pg_advisory_xact_lock(hashtext('cqrs.schema_migrations'))"

static void notice_to_log(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    log_warn("postgres %s: %s", sev ? sev : "NOTICE", msg ? msg : PQresultErrorMessage(res));
}

/* Writes "<what>: <message>[ (line N)]" into err; sql, when given, locates the error's line. */
static void set_pg_err(char *err, size_t errlen, const char *what, PGconn *pg, const PGresult *r,
                       const char *sql)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg) {
        msg = PQerrorMessage(pg);
    }
    int line = 0;
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    if (sql && pos) {
        /* The position counts characters; counting bytes is close enough to find the line. */
        long at = strtol(pos, NULL, 10);
        line = 1;
        for (long i = 0; i < at - 1 && sql[i]; i++) {
            line += sql[i] == '\n';
        }
    }
    int n = snprintf(err, errlen, "%s: %s", what, msg);
    if (n >= 0 && (size_t)n < errlen) {
        err[strcspn(err, "\n")] = '\0';
        n = (int)strlen(err);
        if (line > 0) {
            snprintf(err + n, errlen - (size_t)n, " (line %d)", line);
        }
    }
}

static bool result_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY;
}

/* Runs one statement (or a script when nparams is 0); false with err set on failure. */
static bool run(PGconn *pg, const char *sql, int nparams, const char *const *params, PGresult **out,
                const char *what, char *err, size_t errlen)
{
    PGresult *r =
        nparams > 0 ? PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0) : PQexec(pg, sql);
    if (!r || !result_ok(r)) {
        set_pg_err(err, errlen, what, pg, r, nparams > 0 ? NULL : sql);
        PQclear(r);
        return false;
    }
    if (out) {
        *out = r;
    } else {
        PQclear(r);
    }
    return true;
}

/* Reads a whole file; NULL with errno set on failure. Caller frees with free(). */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static int is_sql_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 4 && strcmp(d->d_name + n - 4, ".sql") == 0;
}

/* Byte-wise order, so the result does not depend on the locale. */
static int name_order(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Creates schema_migrations if missing; under the lock, so concurrent creators do not race. */
static bool ensure_table(PGconn *pg, char *err, size_t errlen)
{
    PGresult *r = NULL;
    bool ok = run(pg, "BEGIN", 0, NULL, NULL, "schema_migrations", err, errlen) &&
              run(pg, LOCK_SQL, 0, NULL, NULL, "schema_migrations", err, errlen) &&
              run(pg, "SELECT to_regclass('schema_migrations') IS NULL", 0, NULL, &r,
                  "schema_migrations", err, errlen);
    if (ok && strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
        ok = run(pg,
                 "CREATE TABLE schema_migrations (name text PRIMARY KEY, "
                 "applied_at timestamptz NOT NULL DEFAULT now())",
                 0, NULL, NULL, "schema_migrations", err, errlen);
    }
    PQclear(r);
    if (ok) {
        ok = run(pg, "COMMIT", 0, NULL, NULL, "schema_migrations", err, errlen);
    }
    return ok;
}

/* Applies one file unless already recorded; *applied tells which. */
static bool apply_one(PGconn *pg, const char *name, const char *sql, bool *applied, char *err,
                      size_t errlen)
{
    const char *params[] = {name};
    PGresult *r = NULL;
    *applied = false;
    if (!run(pg, "BEGIN", 0, NULL, NULL, name, err, errlen) ||
        !run(pg, LOCK_SQL, 0, NULL, NULL, name, err, errlen) ||
        !run(pg, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, params, &r, name, err,
             errlen)) {
        return false;
    }
    bool done = PQntuples(r) > 0;
    PQclear(r);
    if (done) {
        return run(pg, "ROLLBACK", 0, NULL, NULL, name, err, errlen);
    }
    if (!run(pg, sql, 0, NULL, NULL, name, err, errlen) ||
        !run(pg, "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, now())", 1, params,
             NULL, name, err, errlen) ||
        !run(pg, "COMMIT", 0, NULL, NULL, name, err, errlen)) {
        return false;
    }
    *applied = true;
    return true;
}

/* A blocking session of the schema's setup, named for pg_stat_activity (the conninfo's own
   application_name first). */
static PGconn *migrate_connect(const char *conninfo)
{
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *values[] = {conninfo, "state-processor migrate", NULL};
    return PQconnectdbParams(keys, values, 1);
}

int pgmigrate_apply(const char *conninfo, const char *dir, char *err, size_t errlen)
{
    int rc = -1;
    struct dirent **files = NULL;
    int nfiles = 0, napplied = 0;
    PGconn *pg = migrate_connect(conninfo);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        set_pg_err(err, errlen, "migrations: connect", pg, NULL, NULL);
        goto out;
    }
    PQsetNoticeReceiver(pg, notice_to_log, NULL);
    nfiles = scandir(dir, &files, is_sql_file, name_order);
    if (nfiles < 0) {
        snprintf(err, errlen, "migrations: %s: %s", dir, strerror(errno));
        goto out;
    }
    if (!ensure_table(pg, err, errlen)) {
        goto out;
    }
    for (int i = 0; i < nfiles; i++) {
        const char *name = files[i]->d_name;
        char *path = xasprintf("%s/%s", dir, name);
        char *sql = read_file(path);
        if (!sql) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            free(path);
            goto out;
        }
        bool applied = false;
        bool ok = apply_one(pg, name, sql, &applied, err, errlen);
        free(sql);
        free(path);
        if (!ok) {
            /* A failed transaction is already aborted; the ROLLBACK only ends it. */
            PQclear(PQexec(pg, "ROLLBACK"));
            goto out;
        }
        if (applied) {
            log_kv(LOG_INFO, "migration applied", LOG_FIELDS("migration", name));
            napplied++;
        }
    }
    log_info("migrations up to date (%d files, %d applied now)", nfiles, napplied);
    rc = 0;
out:
    for (int i = 0; i < nfiles; i++) {
        free(files[i]);
    }
    free(files);
    PQfinish(pg);
    return rc;
}

/* Runs the check; *present tells whether it answered true. */
static bool check(PGconn *pg, const char *name, const char *check_sql, int nparams,
                  const char *const *params, bool *present, char *err, size_t errlen)
{
    *present = false;
    if (!check_sql)
        return true;
    /* Even without parameters, PQexecParams: one statement, never a script. */
    PGresult *r = PQexecParams(pg, check_sql, nparams, NULL, params, NULL, NULL, 0);
    bool ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        set_pg_err(err, errlen, name, pg, r, NULL);
    *present = ok && PQntuples(r) > 0 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return ok;
}

int pgmigrate_ensure(const char *conninfo, const char *name, const char *check_sql, int nparams,
                     const char *const *params, const char *script, char *err, size_t errlen)
{
    PGconn *pg = migrate_connect(conninfo);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        set_pg_err(err, errlen, name, pg, NULL, NULL);
        PQfinish(pg);
        return -1;
    }
    PQsetNoticeReceiver(pg, notice_to_log, NULL);
    bool present = false;
    bool ok = check(pg, name, check_sql, nparams, params, &present, err, errlen);
    if (ok && !present) {
        /* Checked again under the lock: a concurrent starter may have just done it. */
        ok = run(pg, "BEGIN", 0, NULL, NULL, name, err, errlen) &&
             run(pg, LOCK_SQL, 0, NULL, NULL, name, err, errlen) &&
             check(pg, name, check_sql, nparams, params, &present, err, errlen) &&
             (present || run(pg, script, 0, NULL, NULL, name, err, errlen)) &&
             run(pg, "COMMIT", 0, NULL, NULL, name, err, errlen);
        if (ok && !present)
            log_kv(LOG_INFO, "schema updated", LOG_FIELDS("what", name));
    }
    /* On failure the open transaction, if any, ends with the connection. */
    PQfinish(pg);
    return ok ? 0 : -1;
}

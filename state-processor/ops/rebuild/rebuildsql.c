/* rebuildsql.c: the rebuild's statements, built from a projection's declared columns. */
#include "ops/rebuild/rebuildsql.h"

#include "core/xalloc.h"

#include <stdlib.h>

const char rebuildsql_lock[] =
    "SELECT pg_try_advisory_lock(hashtext('cqrs.rebuild.' || $1::text)), "
    "to_regclass($2::text) IS NOT NULL, pg_backend_pid()";

const char rebuildsql_pkey_name[] =
    "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1::text) AND contype = 'p'";

/* aclexplode() lists what GRANTs put in relacl (NULL, the default privileges, lists nothing). */
const char rebuildsql_grants[] =
    "SELECT format('GRANT %s ON TABLE %I TO %s%s', a.privilege_type, $2::text, "
    "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, "
    "CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) "
    "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = to_regclass($1::text) AND "
    "a.grantee <> (SELECT oid FROM pg_roles WHERE rolname = current_user) "
    "ORDER BY a.grantee, a.privilege_type";

/* "tenant, id, ..., "col"" with each name prefixed by alias (e.g. "l.") or nothing. */
static char *columns(const projection *p, const char *alias)
{
    char *s = xasprintf("%stenant, %sid, %sversion, %sstate, %sdeleted, %supdated_at", alias, alias,
                        alias, alias, alias, alias);
    for (size_t i = 0; i < p->ncols; i++) {
        char *next = xasprintf("%s, %s\"%s\"", s, alias, p->cols[i].name);
        free(s);
        s = next;
    }
    return s;
}

char *rebuildsql_create(const projection *shadow)
{
    char *ddl = projection_ddl(shadow);
    /* A missing table is the usual case, not worth the NOTICE DROP ... IF EXISTS sends. */
    char *sql =
        xasprintf("SET LOCAL client_min_messages = warning; DROP TABLE IF EXISTS \"%s\"; %s",
                  shadow->table, ddl);
    free(ddl);
    return sql;
}

char *rebuildsql_drop(const char *table, int backend_pid)
{
    if (backend_pid > 0)
        return xasprintf("SET LOCAL client_min_messages = warning; SELECT "
                         "pg_terminate_backend(%d); DROP TABLE IF EXISTS \"%s\"",
                         backend_pid, table);
    return xasprintf("SET LOCAL client_min_messages = warning; DROP TABLE IF EXISTS \"%s\"", table);
}

char *rebuildsql_copy_before(const projection *live, const char *shadow)
{
    char *cols = columns(live, "");
    char *sql = xasprintf("INSERT INTO \"%s\" (%s) SELECT %s FROM \"%s\" WHERE updated_at < "
                          "$1::timestamptz ORDER BY tenant, id",
                          shadow, cols, cols, live->table);
    free(cols);
    return sql;
}

char *rebuildsql_catch_up(const projection *live, const char *shadow)
{
    char *cols = columns(live, ""), *lcols = columns(live, "l.");
    char *sets = xstrdup("version = EXCLUDED.version, state = EXCLUDED.state, deleted = "
                         "EXCLUDED.deleted, updated_at = EXCLUDED.updated_at");
    for (size_t i = 0; i < live->ncols; i++) {
        char *next =
            xasprintf("%s, \"%s\" = EXCLUDED.\"%s\"", sets, live->cols[i].name, live->cols[i].name);
        free(sets);
        sets = next;
    }
    /* The join keeps the writes to the rows that differ: under the swap's lock, reads wait for
       this statement, and most rows are already equal. */
    char *sql = xasprintf("INSERT INTO \"%s\" AS s (%s) SELECT %s FROM \"%s\" l LEFT JOIN \"%s\" x "
                          "ON x.tenant = l.tenant AND x.id = l.id WHERE x.id IS NULL OR "
                          "x.version < l.version ORDER BY l.tenant, l.id ON CONFLICT (tenant, id) "
                          "DO UPDATE SET %s WHERE s.version < EXCLUDED.version",
                          shadow, cols, lcols, live->table, shadow, sets);
    free(cols), free(lcols), free(sets);
    return sql;
}

/* "SELECT tenant, id, version, md5(ROW(...)::text) AS h FROM table" */
static char *hashed(const projection *p, const char *table)
{
    char *cols = columns(p, "");
    char *sql =
        xasprintf("SELECT tenant, id, version, md5(ROW(%s)::text) AS h FROM \"%s\"", cols, table);
    free(cols);
    return sql;
}

char *rebuildsql_diff(const projection *live, const char *shadow)
{
    char *l = hashed(live, live->table), *s = hashed(live, shadow);
    char *sql = xasprintf(
        "WITH l AS (%s), s AS (%s), d AS (SELECT COALESCE(l.tenant, s.tenant) AS tenant, "
        "COALESCE(l.id, s.id) AS id, l.version AS lv, s.version AS sv, l.h AS lh, s.h AS sh "
        "FROM l FULL JOIN s ON l.tenant = s.tenant AND l.id = s.id WHERE l.h IS DISTINCT FROM s.h) "
        "SELECT (SELECT count(*) FROM d WHERE lh IS NOT NULL AND sh IS NOT NULL), "
        "(SELECT count(*) FROM d WHERE sh IS NULL), (SELECT count(*) FROM d WHERE lh IS NULL), "
        "(SELECT count(*) FROM l), (SELECT count(*) FROM s), "
        "(SELECT md5(COALESCE(string_agg(h, '' ORDER BY tenant, id), '')) FROM l), "
        "(SELECT md5(COALESCE(string_agg(h, '' ORDER BY tenant, id), '')) FROM s), "
        "(SELECT COALESCE(json_agg(json_build_object('tenant', tenant, 'id', id, 'live_version', "
        "lv, 'rebuilt_version', sv)), '[]') FROM (SELECT * FROM d ORDER BY tenant, id LIMIT 10) e)",
        l, s);
    free(l), free(s);
    return sql;
}

char *rebuildsql_checksum(const projection *p, const char *table)
{
    char *h = hashed(p, table);
    char *sql =
        xasprintf("SELECT md5(COALESCE(string_agg(h, '' ORDER BY tenant, id), '')) FROM (%s) t", h);
    free(h);
    return sql;
}

char **rebuildsql_swap(const projection *live, const char *shadow, const char *old,
                       const char *shadow_pkey, const char *live_pkey, size_t *n)
{
    char **v = xcalloc(live->ncols + 5, sizeof(char *));
    size_t k = 0;
    v[k++] = xasprintf("ALTER TABLE \"%s\" RENAME TO \"%s\"", live->table, old);
    v[k++] = xasprintf("ALTER TABLE \"%s\" RENAME TO \"%s\"", shadow, live->table);
    v[k++] = xasprintf("DROP TABLE \"%s\"", old);
    if (shadow_pkey && live_pkey)
        v[k++] = xasprintf("ALTER INDEX \"%s\" RENAME TO \"%s\"", shadow_pkey, live_pkey);
    /* projection_ddl() names each column's index "<table>_<column>". */
    for (size_t i = 0; i < live->ncols; i++)
        v[k++] = xasprintf("ALTER INDEX \"%s_%s\" RENAME TO \"%s_%s\"", shadow, live->cols[i].name,
                           live->table, live->cols[i].name);
    *n = k;
    return v;
}

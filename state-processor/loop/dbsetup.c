/* dbsetup.c: migrations, then the projection tables derived from the domain files. */
#include "loop/dbsetup.h"

#include "domain/domain.h"
#include "core/log.h"
#include "pg/pgmigrate.h"
#include "domain/projection.h"
#include "core/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * True when the table, each declared column and each index projection_ddl() makes exist: then
 * nothing needs to run, and no ALTER TABLE queues the gateway's reads behind its lock.
 */
static const char complete_sql[] =
    "SELECT to_regclass($1) IS NOT NULL AND "
    "(SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND "
    "NOT attisdropped AND attname = ANY($2::text[])) = cardinality($2::text[]) AND "
    "(SELECT count(*) FROM pg_class i JOIN pg_class t ON t.relnamespace = i.relnamespace "
    "WHERE t.oid = to_regclass($1) AND i.relkind = 'i' AND i.relname = ANY($3::text[])) = "
    "cardinality($3::text[])";

/* "{a,b}" from the names (checked identifiers, [a-z0-9_]: nothing to quote). */
static char *name_array(const projection *p, bool index)
{
    char *s = xstrdup("{");
    for (size_t i = 0; i < p->ncols; i++) {
        char *next = index ? xasprintf("%s%s%s_%s", s, i ? "," : "", p->table, p->cols[i].name)
                           : xasprintf("%s%s%s", s, i ? "," : "", p->cols[i].name);
        free(s);
        s = next;
    }
    char *out = xasprintf("%s}", s);
    free(s);
    return out;
}

static int ensure_projection(const char *conninfo, const projection *p, char *err, size_t errlen)
{
    char *quoted = xasprintf("\"%s\"", p->table); /* to_regclass() parses an identifier */
    char *cols = name_array(p, false), *indexes = name_array(p, true);
    char *ddl = projection_ddl(p);
    const char *params[] = {quoted, cols, indexes};
    int rc = pgmigrate_ensure(conninfo, p->table, complete_sql, 3, params, ddl, err, errlen);
    free(quoted), free(cols), free(indexes), free(ddl);
    return rc;
}

static int apply_once(const processor_config *cfg, const domain_registry *reg, char *err,
                      size_t errlen)
{
    if (pgmigrate_apply(cfg->pg_conninfo, cfg->migrations_dir, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < domain_registry_aggregate_count(reg); i++) {
        const projection *p =
            domain_registry_projection(reg, domain_registry_aggregate_name(reg, i));
        if (ensure_projection(cfg->pg_conninfo, p, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int dbsetup_apply(const processor_config *cfg, char *err, size_t errlen)
{
    domain_registry *reg = domain_registry_load(cfg->schemas_dir, err, errlen);
    if (!reg)
        return -1;
    int rc = 0;
    for (long long waited = 0; apply_once(cfg, reg, err, errlen) != 0; waited++) {
        if (waited >= cfg->startup_timeout_s) {
            rc = -1;
            break;
        }
        if (waited == 0)
            log_kv(LOG_WARN, "database set-up failed, retrying each second",
                   LOG_FIELDS("error", err));
        sleep(1); /* before the event loop exists: nothing else to serve */
    }
    domain_registry_free(reg);
    return rc;
}

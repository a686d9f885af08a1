/* projsql.c: the projector's statements, built once at start from the projection declarations. */
#include "projector/projsql.h"

#include "core/xalloc.h"

#include <stdbool.h>
#include <stdlib.h>

const char projsql_skipped[] =
    "INSERT INTO projection_skipped (group_id, topic, partition, kafka_offset, reason, detail, "
    "key, headers, value) SELECT group_id, topic, partition, kafka_offset, reason, detail, "
    "decode(key_hex, 'hex'), headers, decode(value_hex, 'hex') FROM jsonb_to_recordset($1::jsonb) "
    "AS x(group_id text, topic text, partition int, kafka_offset bigint, reason text, detail "
    "text, key_hex text, headers jsonb, value_hex text) "
    "ON CONFLICT (group_id, topic, partition, kafka_offset) DO NOTHING";

/* The upsert of projsql_upsert(); notify false answers a row per change without a NOTIFY. */
static char *upsert(const projection *p, bool notify)
{
    /* The declared columns three times: in the record type, in the insert, in the update. */
    char *defs = xstrdup(""), *cols = xstrdup(""), *sets = xstrdup("");
    for (size_t i = 0; i < p->ncols; i++) {
        const projection_column *c = &p->cols[i];
        char *d = xasprintf("%s, \"%s\" %s", defs, c->name, projection_type_sql(c->type));
        char *l = xasprintf("%s, \"%s\"", cols, c->name);
        char *s = xasprintf("%s, \"%s\" = EXCLUDED.\"%s\"", sets, c->name, c->name);
        free(defs), free(cols), free(sets);
        defs = d, cols = l, sets = s;
    }
    /* Rows go in (tenant, id) order, so two projectors overlapping in a rebalance lock them in
       the same order and cannot deadlock. A row the guard leaves alone is not RETURNed, so it
       is neither notified nor counted. */
    char *sql = xasprintf(
        "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(tenant text, id text, "
        "version bigint, state jsonb, deleted boolean, updated_at timestamptz%s)), "
        "up AS (INSERT INTO \"%s\" AS t (tenant, id, version, state, deleted, updated_at%s) "
        "SELECT tenant, id, version, state, deleted, COALESCE(updated_at, now())%s FROM x "
        "ORDER BY tenant, id ON CONFLICT (tenant, id) DO UPDATE SET version = EXCLUDED.version, "
        "state = EXCLUDED.state, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at%s "
        "WHERE t.version < EXCLUDED.version RETURNING t.tenant, t.id, t.version) %s",
        defs, p->table, cols, cols, sets,
        notify ? "SELECT pg_notify('" PROJECTOR_CHANNEL "', json_build_object('tenant', tenant, "
                 "'aggregate_type', $2::text, 'aggregate_id', id, 'version', version)::text) "
                 "FROM up"
               : "SELECT $2::text FROM up"); /* $2 named, so that its type is known */
    free(defs), free(cols), free(sets);
    return sql;
}

char *projsql_upsert(const projection *p)
{
    return upsert(p, true);
}

char *projsql_upsert_silent(const projection *p)
{
    return upsert(p, false);
}

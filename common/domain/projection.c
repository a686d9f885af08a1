/* projection.c: projection table layout from domain files: parsing, DDL, column values. */
#include "domain/projection.h"

#include "core/rfc3339.h"
#include "core/xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {
    [PROJECTION_TEXT] = "text",
    [PROJECTION_BIGINT] = "bigint",
    [PROJECTION_NUMERIC] = "numeric",
    [PROJECTION_BOOLEAN] = "boolean",
    [PROJECTION_TIMESTAMPTZ] = "timestamptz",
};
#define NTYPES (sizeof type_names / sizeof type_names[0])

/* Columns every projection table has; a declared column may not take these names. */
static const char *const fixed_columns[] = {"tenant", "id",      "version",
                                            "state",  "deleted", "updated_at"};

const char *projection_type_sql(projection_type t)
{
    return (size_t)t < NTYPES ? type_names[t] : "text";
}

static bool column_name_ok(const char *s)
{
    if (!(*s >= 'a' && *s <= 'z') || strlen(s) > 48)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(s);
}

static int cmp_columns(const void *a, const void *b)
{
    return strcmp(((const projection_column *)a)->name, ((const projection_column *)b)->name);
}

void projection_free(projection *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->ncols; i++) {
        free(p->cols[i].name);
        free(p->cols[i].pointer);
    }
    free(p->cols);
    free(p->aggregate);
    free(p->table);
    free(p);
}

/* Parses one column declaration into c (whose name is set); false with err. */
static bool parse_column(projection_column *c, const json_t *decl, char *err, size_t errlen)
{
    if (!json_is_object(decl)) {
        snprintf(err, errlen, "projection.columns.%s: must be an object", c->name);
        return false;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)decl, key, v)
    {
        if (strcmp(key, "type") && strcmp(key, "pointer") && strcmp(key, "description")) {
            snprintf(err, errlen, "projection.columns.%s: unknown key '%s'", c->name, key);
            return false;
        }
    }
    const char *type = json_string_value(json_object_get(decl, "type"));
    size_t t = 0;
    while (type && t < NTYPES && strcmp(type_names[t], type) != 0)
        t++;
    if (!type || t == NTYPES) {
        snprintf(err, errlen,
                 "projection.columns.%s.type: must be text, bigint, numeric, boolean or "
                 "timestamptz",
                 c->name);
        return false;
    }
    c->type = (projection_type)t;
    const json_t *ptr = json_object_get(decl, "pointer");
    if (ptr && (!json_is_string(ptr) || json_string_value(ptr)[0] != '/')) {
        snprintf(err, errlen,
                 "projection.columns.%s.pointer: must be a JSON pointer such as "
                 "\"/owner\"",
                 c->name);
        return false;
    }
    c->pointer = ptr ? xstrdup(json_string_value(ptr)) : xasprintf("/%s", c->name);
    return true;
}

projection *projection_parse(const char *aggregate, const json_t *decl, char *err, size_t errlen)
{
    projection *p = xcalloc(1, sizeof *p);
    p->aggregate = xstrdup(aggregate);
    p->table = xasprintf("projection_%s", aggregate);
    if (!decl)
        return p;
    const json_t *cols = json_object_get(decl, "columns");
    if (!json_is_object(decl) || json_object_size(decl) != (cols ? 1u : 0u) ||
        !json_is_object(cols)) {
        snprintf(err, errlen, "projection: must be an object {\"columns\": {...}}");
        goto fail;
    }
    p->cols = xcalloc(json_object_size(cols), sizeof *p->cols);
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)cols, name, v)
    {
        bool fixed = false;
        for (size_t i = 0; i < sizeof fixed_columns / sizeof fixed_columns[0]; i++)
            fixed |= strcmp(fixed_columns[i], name) == 0;
        if (!column_name_ok(name) || fixed) {
            snprintf(err, errlen,
                     "projection.columns: '%s' is not a usable column name ([a-z][a-z0-9_]*, at "
                     "most 48 characters, none of tenant, id, version, state, deleted, "
                     "updated_at)",
                     name);
            goto fail;
        }
        projection_column *c = &p->cols[p->ncols++];
        c->name = xstrdup(name);
        if (!parse_column(c, v, err, errlen))
            goto fail;
    }
    qsort(p->cols, p->ncols, sizeof *p->cols, cmp_columns);
    return p;
fail:
    projection_free(p);
    return NULL;
}

const projection_column *projection_column_find(const projection *p, const char *name)
{
    for (size_t i = 0; i < p->ncols; i++)
        if (strcmp(p->cols[i].name, name) == 0)
            return &p->cols[i];
    return NULL;
}

char *projection_ddl(const projection *p)
{
    /* Names are checked identifiers ([a-z0-9_]): quoting keeps reserved words usable. */
    char *sql = xasprintf("CREATE TABLE IF NOT EXISTS \"%s\" (tenant text NOT NULL, id text NOT "
                          "NULL, version bigint NOT NULL, state jsonb, deleted boolean NOT NULL "
                          "DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now(), "
                          "PRIMARY KEY (tenant, id));",
                          p->table);
    for (size_t i = 0; i < p->ncols; i++) {
        const projection_column *c = &p->cols[i];
        char *next = xasprintf("%s ALTER TABLE \"%s\" ADD COLUMN IF NOT EXISTS \"%s\" %s; "
                               "CREATE INDEX IF NOT EXISTS \"%s_%s\" ON \"%s\" (tenant, \"%s\", "
                               "id);",
                               sql, p->table, c->name, projection_type_sql(c->type), p->table,
                               c->name, p->table, c->name);
        free(sql);
        sql = next;
    }
    return sql;
}

/* Follows an RFC 6901 pointer through objects and arrays; NULL where it leads nowhere. */
static const json_t *at_pointer(const json_t *j, const char *pointer)
{
    for (const char *p = pointer; j && *p == '/';) {
        p++;
        size_t len = strcspn(p, "/");
        char *tok = xmalloc(len + 1), *out = tok;
        for (size_t i = 0; i < len; i++) {
            if (p[i] == '~' && i + 1 < len && (p[i + 1] == '0' || p[i + 1] == '1')) {
                i++;
                *out++ = p[i] == '0' ? '~' : '/';
            } else {
                *out++ = p[i];
            }
        }
        *out = '\0';
        if (json_is_object(j)) {
            j = json_object_get(j, tok);
        } else if (json_is_array(j) && len > 0 && strspn(tok, "0123456789") == len) {
            j = json_array_get(j, strtoul(tok, NULL, 10));
        } else {
            j = NULL;
        }
        free(tok);
        p += len;
    }
    return j;
}

char *projection_value(const projection_column *c, const json_t *state)
{
    const json_t *v = state ? at_pointer(state, c->pointer) : NULL;
    switch (c->type) {
    case PROJECTION_TEXT:
        return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
    case PROJECTION_TIMESTAMPTZ:
        return json_is_string(v) &&
                       rfc3339_date_time_valid(json_string_value(v), json_string_length(v))
                   ? xstrdup(json_string_value(v))
                   : NULL;
    case PROJECTION_BIGINT:
        if (json_is_integer(v))
            return xasprintf("%lld", (long long)json_integer_value(v));
        if (json_is_real(v)) {
            double d = json_real_value(v);
            if (d >= -9.2e18 && d <= 9.2e18 && d == trunc(d))
                return xasprintf("%lld", (long long)d);
        }
        return NULL;
    case PROJECTION_NUMERIC:
        if (json_is_integer(v))
            return xasprintf("%lld", (long long)json_integer_value(v));
        return json_is_real(v) && isfinite(json_real_value(v))
                   ? xasprintf("%.17g", json_real_value(v))
                   : NULL;
    case PROJECTION_BOOLEAN:
        return json_is_boolean(v) ? xstrdup(json_is_true(v) ? "true" : "false") : NULL;
    }
    return NULL;
}

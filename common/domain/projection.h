/* projection.h: an aggregate type's read model: a table of declared columns beside the state. */
#ifndef CQRS_PROJECTION_H
#define CQRS_PROJECTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Every aggregate type has a projection table "projection_<aggregate>" with the fixed columns
 * tenant, id, version, state (jsonb, NULL once deleted), deleted and updated_at, primary key
 * (tenant, id), plus the columns its domain file declares (docs/domains.md):
 *
 *     "projection": {"columns": {"owner": {"type": "text"}, "balance": {"type": "bigint"}}}
 *
 * A column takes its value from the state at "pointer" (default "/<name>"); a value that is
 * absent, null or of another JSON type is stored as NULL. Each declared column is indexed as
 * (tenant, column, id), so filters and keyset pages on it are index scans.
 */
typedef enum {
    PROJECTION_TEXT,        /* JSON string */
    PROJECTION_BIGINT,      /* JSON integer (1.0 counts) */
    PROJECTION_NUMERIC,     /* any JSON number */
    PROJECTION_BOOLEAN,     /* JSON true / false */
    PROJECTION_TIMESTAMPTZ, /* JSON string holding an RFC 3339 date-time */
} projection_type;

typedef struct projection_column {
    char *name;    /* [a-z][a-z0-9_]*, not one of the fixed columns */
    char *pointer; /* RFC 6901 pointer into the state */
    projection_type type;
} projection_column;

typedef struct projection {
    char *aggregate;
    char *table; /* "projection_<aggregate>" */
    size_t ncols;
    projection_column *cols; /* in name order */
} projection;

/*
 * Reads the "projection" member of a domain file (decl; NULL when the file has none: only the
 * fixed columns). NULL with err naming the member at fault. Caller frees with projection_free().
 */
projection *projection_parse(const char *aggregate, const json_t *decl, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees p; NULL is a no-op. */
void projection_free(projection *p);

/* The column named name, or NULL (the fixed columns are not listed). Borrowed from p. */
const projection_column *projection_column_find(const projection *p, const char *name);

/* The SQL type of a column type, e.g. "bigint". */
const char *projection_type_sql(projection_type t);

/*
 * The statements that create the table, add any declared column it lacks and index each column;
 * idempotent, for one simple-query round trip. Caller frees.
 */
char *projection_ddl(const projection *p);

/*
 * The column's value in state as the text of a SQL parameter of its type, or NULL for SQL NULL
 * (absent, JSON null, another JSON type). Caller frees.
 */
char *projection_value(const projection_column *c, const json_t *state);

#endif

/*
 * projsql.h: the projector's SQL. Every statement is parameterised; the only identifiers written
 * into one are the table and column names of the domain files, checked at load ([a-z0-9_]).
 */
#ifndef CQRS_PROJSQL_H
#define CQRS_PROJSQL_H

#include "domain/projection.h"

/* The channel of the NOTIFY sent for every projection row changed. */
#define PROJECTOR_CHANNEL "cqrs_projection"

/*
 * The upsert of one table: $1 the rows of projbatch_rows(), $2 the aggregate type. Only a newer
 * version changes a row (the version guard); each row changed is NOTIFYed on PROJECTOR_CHANNEL
 * with {"tenant", "aggregate_type", "aggregate_id", "version"} and answered as one result row.
 * Caller frees.
 */
char *projsql_upsert(const projection *p);
/*
 * The same upsert without the NOTIFY, for a table nobody reads yet (a rebuild's shadow table,
 * whose changes no reader waits for): one result row per row changed. Caller frees.
 */
char *projsql_upsert_silent(const projection *p);

/* Records $1, the rows of projbatch_skipped_rows(), in projection_skipped (once per offset). */
extern const char projsql_skipped[];

#endif

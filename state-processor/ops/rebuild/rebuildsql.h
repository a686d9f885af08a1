/*
 * rebuildsql.h: the statements of `state-processor rebuild` around the projector's own upsert
 * (projsql): the shadow table, the copies from the live table, the comparison and the swap.
 * The only identifiers written into them are table and column names from the domain files
 * (checked at load, [a-z0-9_]) and the fixed suffixes below, quoted.
 */
#ifndef CQRS_REBUILDSQL_H
#define CQRS_REBUILDSQL_H

#include "domain/projection.h"

#include <stddef.h>

/* The shadow and the old table of a rebuild: "<table>-rebuild", "<table>-old". A '-' is not
   allowed in an aggregate name, so neither can be another type's projection table. */
#define REBUILDSQL_SHADOW_SUFFIX "-rebuild"
#define REBUILDSQL_OLD_SUFFIX    "-old"

/*
 * Takes the session's advisory lock of the rebuild of table $1 (so two rebuilds of one type
 * cannot drop each other's shadow) and checks the live table: answers (locked, live exists,
 * the session's backend pid), the booleans as "t" or "f". $2 is the table's name quoted for
 * to_regclass().
 */
extern const char rebuildsql_lock[];

/* The name of table $1's primary key (quoted for to_regclass()); no row when it has none. */
extern const char rebuildsql_pkey_name[];

/*
 * The privileges granted on the live table $1 (quoted for to_regclass()), as GRANT statements
 * on table $2 (its name unquoted), one per row; none for the current user, who owns $2.
 */
extern const char rebuildsql_grants[];

/* A script: drops what an interrupted rebuild left of the shadow, then creates it with the
   DDL of the live table (projection_ddl() of shadow, which names the shadow table). */
char *rebuildsql_create(const projection *shadow);

/*
 * A script that drops the table if it exists, quietly; first, when backend_pid > 0, it ends that
 * session (a rebuild's own, given up mid-statement: PostgreSQL does not notice a closed client
 * while the statement waits for a lock, and reads would queue behind its lock request).
 */
char *rebuildsql_drop(const char *table, int backend_pid);

/*
 * Copies the rows of live last changed before $1 (a timestamptz) into the empty shadow table: a
 * rebuild from a time takes what happened before it from the live table. Answers nothing;
 * the affected count is the number of rows.
 */
char *rebuildsql_copy_before(const projection *live, const char *shadow);

/*
 * Copies into the shadow every row of live that the shadow lacks or holds at a lower version:
 * what the live projector wrote while the rebuild read. The version guard keeps the shadow's row
 * when it is as new. The affected count is the number of rows copied.
 */
char *rebuildsql_catch_up(const projection *live, const char *shadow);

/*
 * Compares live and shadow row by row, by an md5 checksum of every column: answers one row of
 * (differing, only_live, only_shadow, live_rows, shadow_rows, live_checksum, shadow_checksum,
 * examples), examples a JSON array of up to 10 {tenant, id, live_version, rebuilt_version}.
 */
char *rebuildsql_diff(const projection *live, const char *shadow);

/* The checksum of a table as rebuildsql_diff() computes it, alone: one row, one md5 text. */
char *rebuildsql_checksum(const projection *p, const char *table);

/*
 * The statements of the swap after the live table is locked and caught up: live renamed to old,
 * the shadow renamed to live, old dropped, then the shadow's primary key and indexes renamed to
 * the live table's names (so that the schema check at start finds them). shadow_pkey and
 * live_pkey are the primary keys' names (rebuildsql_pkey_name); live_pkey may be NULL. *n
 * receives the count. Caller frees each statement and the array.
 */
char **rebuildsql_swap(const projection *live, const char *shadow, const char *old,
                       const char *shadow_pkey, const char *live_pkey, size_t *n);

#endif

/*
 * pgplans.h: how a session plans its statements (ADR 0037). A session starts with every execution
 * planned for the tables as they are (ADR 0028). While the tables its statements use all have
 * statistics that still describe them (taken on a large table, or one that has not grown much
 * since; see pgplans.c), the session lets PostgreSQL keep generic plans (plan_cache_mode=auto),
 * so that a batch of one row does not pay for planning its statements; otherwise, until
 * autovacuum analyzes the table again, each execution is planned. Checked at each new session and
 * every PGPLANS_CHECK_S seconds.
 */
#ifndef CQRS_PGPLANS_H
#define CQRS_PGPLANS_H

#include "core/metrics.h"
#include "pg/pgconn.h"

#include <stddef.h>

struct event_base;
typedef struct pgplans pgplans;

#define PGPLANS_CHECK_S 5

/*
 * Watches pg's sessions (borrowed, must outlive it) for the n tables named (plain names, copied
 * into the check). generic (borrowed) counts the sessions keeping generic plans: this one adds 1
 * to it while its own does, so that several connections can share one gauge.
 */
pgplans *pgplans_new(struct event_base *base, pgconn *pg, const char *const *tables, size_t n,
                     metrics_gauge *generic);
/*
 * A new session of pg (call it from pg's state callback): checked at once. Until it is answered,
 * the gauge still says what the session before was told.
 */
void pgplans_session_started(pgplans *pl);
void pgplans_free(pgplans *pl);

#endif

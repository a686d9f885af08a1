/*
 * plans.h: how the processor's batch session plans its statements (ADR 0037). A session starts
 * with every execution planned for the tables as they are (ADR 0028). While aggregates, commands
 * and outbox all have statistics that still describe them (taken on a large table, or one that
 * has not grown much since; see plans.c), the session lets PostgreSQL keep generic plans
 * (plan_cache_mode=auto), so that a batch of one command does not pay for planning its
 * statements; otherwise, until autovacuum analyzes the table again, each execution is planned.
 * Checked at each new session and every PLANS_CHECK_S seconds.
 */
#ifndef CQRS_PLANS_H
#define CQRS_PLANS_H

#include "core/metrics.h"
#include "pg/pgconn.h"

struct event_base;
typedef struct plans plans;

#define PLANS_CHECK_S 5

/* Watches pg's session (borrowed, must outlive it); the gauge processor_generic_plans goes to m. */
plans *plans_new(struct event_base *base, pgconn *pg, metrics *m);
/* A new session, which starts with custom plans: checked at once. */
void plans_session_started(plans *pl);
void plans_free(plans *pl);

#endif
